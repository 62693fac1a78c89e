use super::*;
use proptest::prelude::*;
use std::sync::OnceLock;
use Event::*;
use Input::*;
use PttOffReason as Off;
use TxBlockReason as Block;

/// The origin of virtual time; the only clock read in this file.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A no-audio guard longer than any test: for tests of the other timers, whose talker is
/// taken to send audio all along.
const LONG: Duration = Duration::from_secs(10_000);

fn unguarded() -> KeyingConfig {
    KeyingConfig { no_audio: LONG, ..KeyingConfig::default() }
}

/// A core whose clock starts at `base()`, as a driver's would at its first call.
fn started(config: KeyingConfig) -> Keying {
    let mut k = Keying::new(config);
    k.handle_timeout(base());
    k
}

/// Drives one `Keying` through virtual time like str0m's tests/common.rs `progress()`:
/// every deadline is handled at its own instant. Events are logged in ms since `base()`,
/// and after every call the getters are checked against a model built from events alone.
struct Sim {
    k: Keying,
    now: Instant,
    log: Vec<(u64, Event)>,
    timeouts: usize,
    // The model: what the events said.
    ptt_on_at: Option<Instant>,
    /// Between `TxAudioOpen` and `PttOff`.
    tx_audio: bool,
    rx_open: bool,
    inhibited: bool,
    shut: bool,
    /// Since when the no-audio guard counts: the last key-up, channel audio or end of a
    /// remote PTT.
    guard_from: Instant,
    /// The latest a remote PTT may last (from its command and maximum).
    remote_until: Option<Instant>,
    remote_was: bool,
}

impl Sim {
    fn new(config: KeyingConfig) -> Self {
        Sim {
            k: started(config),
            now: base(),
            log: Vec::new(),
            timeouts: 0,
            ptt_on_at: None,
            tx_audio: false,
            rx_open: false,
            inhibited: false,
            shut: false,
            guard_from: base(),
            remote_until: None,
            remote_was: false,
        }
    }

    fn with(f: impl FnOnce(&mut KeyingConfig)) -> Self {
        let mut config = KeyingConfig::default();
        f(&mut config);
        Self::new(config)
    }

    fn at(t: u64) -> Instant {
        base() + ms(t)
    }

    /// Handle every deadline up to `t` ms (inclusive), then stand at `t`.
    fn run_to(&mut self, t: u64) {
        self.run_to_instant(Self::at(t));
    }

    fn run_to_instant(&mut self, target: Instant) {
        while let Some(next) = self.k.poll_timeout() {
            if next > target {
                break;
            }
            self.now = self.now.max(next);
            self.k.handle_timeout(next);
            self.timeouts += 1;
            self.after_call();
        }
        if target > self.now {
            // A driver wakes for the input at `target`; keeps the core's clock in step.
            self.now = target;
            self.k.handle_timeout(target);
            self.after_call();
        }
    }

    fn input(&mut self, t: u64, input: Input) {
        self.input_at(Self::at(t), input);
    }

    /// `at` may be before `now`: the core must clamp it.
    fn input_at(&mut self, at: Instant, input: Input) {
        self.run_to_instant(at);
        self.k.handle_input(at, input);
        match input {
            Shutdown => self.shut = true,
            ChannelAudio => self.guard_from = self.now,
            RemotePtt(Some(max)) if self.k.remote_ptt() => self.remote_until = Some(self.now + max),
            _ => {}
        }
        self.after_call();
    }

    fn take(&mut self) -> Vec<(u64, Event)> {
        std::mem::take(&mut self.log)
    }

    fn after_call(&mut self) {
        if self.remote_was && !self.k.remote_ptt() {
            // The guard counts again from the end of a remote PTT.
            self.guard_from = self.now;
        }
        self.remote_was = self.k.remote_ptt();
        while let Some(e) = self.k.poll_event() {
            self.observe(e);
            let t = self.now.duration_since(base()).as_millis() as u64;
            self.log.push((t, e));
        }
        self.check();
    }

    fn observe(&mut self, e: Event) {
        let tot = self.k.config().tot;
        match e {
            PttOn => {
                assert!(self.ptt_on_at.is_none(), "PttOn while keyed");
                assert!(!self.inhibited, "PttOn while inhibited");
                assert!(!self.shut, "PttOn after shutdown");
                self.ptt_on_at = Some(self.now);
                self.guard_from = self.now;
            }
            PttOff(_) => {
                self.tx_audio = false;
                let on = self.ptt_on_at.take().expect("PttOff while not keyed");
                assert!(self.now - on <= tot, "key-up of {:?} > TOT", self.now - on);
            }
            TxAudioOpen => {
                assert!(self.ptt_on_at.is_some(), "audio without PTT");
                self.tx_audio = true;
            }
            // Judged by the events before it, not by the state after the whole call: a guard
            // may end the key-up at the same instant, after the ID started.
            IdStart => assert!(self.ptt_on_at.is_some() && self.tx_audio, "ID without PTT and TX audio"),
            ReplyStart => assert!(self.ptt_on_at.is_some() && self.tx_audio, "reply without PTT and TX audio"),
            RxOpen => {
                assert!(!self.rx_open, "RxOpen while open");
                assert!(!self.shut, "RxOpen after shutdown");
                self.rx_open = true;
            }
            RxClose => {
                assert!(self.rx_open, "RxClose while closed");
                self.rx_open = false;
            }
            InhibitChanged(on) => {
                assert_ne!(self.inhibited, on, "InhibitChanged without a change");
                self.inhibited = on;
            }
            _ => {}
        }
    }

    fn check(&self) {
        let k = &self.k;
        let cfg = k.config();
        assert_eq!(k.ptt(), self.ptt_on_at.is_some(), "ptt() disagrees with events");
        assert_eq!(k.rx_active(), self.rx_open, "rx_active() disagrees with events");
        assert_eq!(k.inhibited(), self.inhibited);
        assert_eq!(k.ptt_since(), self.ptt_on_at);
        match self.ptt_on_at {
            Some(on) => {
                let keyed = self.now - on;
                assert!(keyed <= cfg.tot, "PTT on for {keyed:?} > TOT");
                assert_eq!(k.tot_remaining(self.now), Some(cfg.tot - keyed));
            }
            None => assert_eq!(k.tot_remaining(self.now), None),
        }
        assert!(!(k.ptt() && k.inhibited()), "keyed while inhibited");
        assert!(!(k.ptt() && k.locked_out()), "keyed while locked out");
        assert!(!k.tx_audio() || k.ptt(), "audio without PTT");
        if !cfg.duplex {
            assert!(!(k.ptt() && k.rx_active()), "simplex keyed while receiving");
        }
        assert!(!k.id_sending() || k.tx_audio(), "ID on air without TX audio");
        // Never keyed without channel audio past the guard, hang included, unless a remote
        // PTT holds it (an ID on air legitimately defers it: only without a station ID).
        if k.ptt() && !k.remote_ptt() && k.id.is_none() {
            let silent = self.now - self.guard_from;
            assert!(silent <= cfg.no_audio, "keyed {silent:?} without channel audio > guard");
        }
        // A remote PTT never outlives its maximum, and inhibit cancels it.
        if k.remote_ptt() {
            assert!(self.remote_until.is_some_and(|t| self.now < t), "remote PTT past its maximum");
            assert!(!k.inhibited(), "remote PTT while inhibited");
        }
        if self.shut {
            assert!(!k.ptt() && !k.rx_active() && !k.tx_audio());
            assert_eq!(k.poll_timeout(), None, "timer running after shutdown");
        }
        if let Some(next) = k.poll_timeout() {
            assert!(next > self.now, "deadline not after the handled time");
        }
    }
}

// ---- RX ----

#[test]
fn debounce_rejects_bounce_and_accepts_steady() {
    let mut s = Sim::new(KeyingConfig::default());
    s.input(0, Cor(true));
    s.input(10, Cor(false)); // back before 20 ms: never counted
    s.input(100, Cor(true));
    s.input(115, Cor(false));
    s.input(118, Cor(true)); // the 20 ms start again here
    s.run_to(137);
    assert_eq!(s.take(), vec![]);
    s.run_to(1000);
    assert_eq!(s.take(), vec![(138, RxOpen)]);
    // A dropout shorter than the debounce is not a close either.
    s.input(2000, Cor(false));
    s.input(2019, Cor(true));
    s.run_to(5000);
    assert_eq!(s.take(), vec![]);
    assert!(s.k.rx_active() && s.k.cor());
}

#[test]
fn kerchunk_is_ignored_and_a_long_keyup_opens() {
    let mut s = Sim::with(|c| c.min_keyup = ms(500));
    s.input(0, Cor(true));
    s.input(300, Cor(false));
    s.run_to(1000);
    assert_eq!(s.take(), vec![(320, KerchunkIgnored)]);
    s.input(2000, Cor(true));
    s.run_to(2519);
    assert!(!s.k.rx_active());
    s.run_to(3000);
    assert_eq!(s.take(), vec![(2520, RxOpen)]);
}

#[test]
fn squelch_hang_bridges_pauses_then_closes() {
    let mut s = Sim::new(KeyingConfig::default());
    s.input(0, Cor(true));
    s.input(1000, Cor(false)); // counts at 1020, hang until 1320
    s.input(1200, Cor(true)); // back at 1220: same RX, no events
    s.run_to(1900);
    assert_eq!(s.take(), vec![(20, RxOpen)]);
    s.input(2000, Cor(false));
    s.run_to(2319);
    assert!(s.k.rx_active());
    s.run_to(5000);
    assert_eq!(s.take(), vec![(2320, RxClose)]);
}

#[test]
fn squelch_hang_reopen_skips_the_kerchunk_check() {
    let mut s = Sim::with(|c| c.min_keyup = ms(500));
    s.input(0, Cor(true));
    s.input(1000, Cor(false));
    s.input(1100, Cor(true)); // back at 1120, well under min_keyup: still the same RX
    s.input(1200, Cor(false));
    s.run_to(5000);
    assert_eq!(s.take(), vec![(520, RxOpen), (1520, RxClose)]);
}

/// Toggle COR every 100 ms for `n` inputs starting at 0 (true first).
fn chatter(s: &mut Sim, n: u64) {
    for i in 0..n {
        s.input(i * 100, Cor(i % 2 == 0));
    }
}

#[test]
fn flap_at_the_limit_is_not_suppressed() {
    let mut s = Sim::new(KeyingConfig::default());
    chatter(&mut s, 10); // 10 changes within the window: the limit, not over it
    s.run_to(5000);
    assert_eq!(s.take(), vec![(20, RxOpen), (1220, RxClose)]);
}

#[test]
fn flap_is_suppressed_then_cleared_after_a_quiet_window() {
    let mut s = Sim::new(KeyingConfig::default());
    chatter(&mut s, 15); // changes at 20, 120, ..., 1420; the 11th (1020) is too many
    s.run_to(3419);
    assert_eq!(s.take(), vec![(20, RxOpen), (1020, FlapSuppressed), (1020, RxClose)]);
    // Quiet from 1420 for a whole window; COR is open then, so it is a fresh open.
    s.run_to(6000);
    assert_eq!(s.take(), vec![(3420, FlapCleared), (3420, RxOpen)]);
}

#[test]
fn flap_cleared_with_cor_closed_does_not_open() {
    let mut s = Sim::new(KeyingConfig::default());
    chatter(&mut s, 14); // last change at 1320 is a close
    s.run_to(6000);
    let events = s.take();
    assert_eq!(events.last(), Some(&(3320, FlapCleared)));
    assert!(!s.k.rx_active());
}

#[test]
fn rx_timeout_cuts_a_stuck_cor_until_it_drops() {
    let mut s = Sim::new(KeyingConfig::default());
    s.input(0, Cor(true));
    s.run_to(250_000);
    assert_eq!(s.take(), vec![(20, RxOpen), (180_020, RxTimeout), (180_020, RxClose)]);
    s.input(250_000, Cor(false)); // seen closed at 250 020: normal again, silently
    s.input(250_100, Cor(true));
    s.run_to(260_000);
    assert_eq!(s.take(), vec![(250_120, RxOpen)]);
}

#[test]
fn rx_timeout_counts_through_squelch_hang() {
    let mut s = Sim::with(|c| c.rx_timeout = ms(10_000));
    s.input(0, Cor(true));
    s.input(5_000, Cor(false));
    s.input(5_100, Cor(true)); // same RX: its 10 s still count from 20
    s.run_to(20_000);
    assert_eq!(s.take(), vec![(20, RxOpen), (10_020, RxTimeout), (10_020, RxClose)]);
}

/// Send VOX frames every 20 ms in [from, to).
fn vox(s: &mut Sim, from: u64, to: u64, dbfs: f32) {
    for t in (from..to).step_by(20) {
        s.input(t, VoxLevel(dbfs));
    }
}

#[test]
fn vox_hysteresis_opens_holds_and_closes() {
    let mut s = Sim::with(|c| c.vox = Some(VoxConfig::default())); // -30 open, -36 close
    vox(&mut s, 0, 200, -50.0);
    vox(&mut s, 200, 400, -33.0); // between: stays closed
    s.input(390, Cor(true)); // a line COR is ignored with VOX
    assert_eq!(s.take(), vec![]);
    vox(&mut s, 400, 420, -25.0); // opens (raw at 400, debounced at 420)
    vox(&mut s, 420, 2000, -33.0); // between: stays open
    vox(&mut s, 2000, 2040, f32::NAN); // garbage holds the level
    vox(&mut s, 2040, 3000, -40.0); // below close: closes at 2040, counts at 2060
    s.run_to(4000);
    assert_eq!(s.take(), vec![(420, RxOpen), (2360, RxClose)]);
}

/// A driver sends VOX levels only when `VoxConfig::level` changes (the capture thread would
/// otherwise wake the port task for every frame): the keying core must decide exactly as if it
/// had seen every frame.
#[test]
fn vox_levels_sent_only_on_change_decide_as_every_frame_does() {
    let cfg = VoxConfig::default();
    let (mut every, mut changes) = (Sim::with(|c| c.vox = Some(cfg.clone())), Sim::with(|c| c.vox = Some(cfg.clone())));
    let mut seed = 0x2545_f491_u32;
    let mut next = || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        seed >> 16
    };
    let (mut sent, mut base, mut until) = (None, -40.0, 0);
    for t in (0..120_000u64).step_by(20) {
        // Stretches of 0.1-2.5 s around a level near one threshold or the other, each frame a
        // few dB off it, and NaN now and then.
        if t >= until {
            until = t + 100 + u64::from(next() % 2400);
            base = [-38.0, -33.0, -29.0, -20.0][next() as usize % 4];
        }
        let noise = (next() % 400) as f32 / 100.0 - 2.0;
        let dbfs = if next() % 50 == 0 { f32::NAN } else { base + noise };
        every.input(t, VoxLevel(dbfs));
        let level = cfg.level(dbfs);
        if level.is_some() && level != sent {
            sent = level;
            changes.input(t, VoxLevel(dbfs));
        }
    }
    every.run_to(125_000);
    changes.run_to(125_000);
    let events = every.take();
    assert!(events.iter().filter(|(_, e)| *e == RxOpen).count() > 10, "the levels open the VOX often: {events:?}");
    assert_eq!(changes.take(), events);
}

#[test]
fn vox_level_is_ignored_without_vox() {
    let mut s = Sim::new(KeyingConfig::default());
    vox(&mut s, 0, 1000, 0.0);
    s.run_to(2000);
    assert_eq!(s.take(), vec![]);
}

// ---- TX ----

#[test]
fn tx_delay_then_audio() {
    let mut s = Sim::new(KeyingConfig::default());
    s.input(0, TxRequest(true));
    s.run_to(499);
    assert!(s.k.ptt() && !s.k.tx_audio());
    s.run_to(1000);
    assert!(s.k.tx_audio());
    assert_eq!(s.take(), vec![(0, PttOn), (500, TxAudioOpen)]);
}

#[test]
fn hang_expires_after_the_channel_goes_idle() {
    let mut s = Sim::new(KeyingConfig::default());
    s.input(0, TxRequest(true));
    s.input(3000, TxRequest(false));
    s.run_to(4999);
    assert!(s.k.ptt());
    s.run_to(10_000);
    assert_eq!(s.take(), vec![(0, PttOn), (500, TxAudioOpen), (5000, PttOff(Off::HangExpired))]);
    assert_eq!(s.k.poll_timeout(), None);
}

#[test]
fn rekey_during_hang_continues_and_keeps_tot_origin() {
    let mut s = Sim::new(unguarded());
    s.input(0, TxRequest(true));
    s.input(5000, TxRequest(false));
    s.input(6000, TxRequest(true)); // within the hang: same key-up, no events
    assert_eq!(s.k.tot_remaining(Sim::at(6000)), Some(ms(174_000)));
    s.run_to(200_000);
    assert_eq!(s.take(), vec![(0, PttOn), (500, TxAudioOpen), (180_000, PttOff(Off::TimeOut)), (180_000, TotFired)]);
    assert!(s.k.locked_out());
}

#[test]
fn tot_locks_out_until_the_channel_goes_idle() {
    let mut s = Sim::new(unguarded());
    s.input(0, TxRequest(true));
    s.run_to(179_999);
    assert_eq!(s.k.tot_remaining(Sim::at(179_999)), Some(ms(1)));
    s.run_to(180_000);
    assert!(!s.k.ptt() && s.k.locked_out());
    s.input(185_000, TxRequest(true)); // another talker: told, not keyed
    s.input(190_000, Inhibit(true));
    s.input(190_100, Inhibit(false)); // releasing inhibit does not end the lockout
    s.run_to(199_000);
    assert_eq!(
        s.take(),
        vec![
            (0, PttOn),
            (500, TxAudioOpen),
            (180_000, PttOff(Off::TimeOut)),
            (180_000, TotFired),
            (185_000, TxBlocked(Block::LockedOut)),
            (190_000, InhibitChanged(true)),
            (190_100, InhibitChanged(false)),
        ]
    );
    s.input(200_000, TxRequest(false));
    assert!(!s.k.locked_out());
    s.input(201_000, TxRequest(true));
    assert_eq!(s.take(), vec![(200_000, LockoutCleared), (201_000, PttOn)]);
}

#[test]
fn tot_during_hang_does_not_lock_out() {
    let mut s = Sim::with(|c| c.tot = ms(3000));
    s.input(0, TxRequest(true));
    s.input(2000, TxRequest(false)); // hang would end at 4000
    s.run_to(3400);
    assert!(!s.k.locked_out());
    s.input(3500, TxRequest(true));
    assert_eq!(
        s.take(),
        vec![(0, PttOn), (500, TxAudioOpen), (3000, PttOff(Off::TimeOut)), (3000, TotFired), (3500, PttOn),]
    );
}

#[test]
fn inhibit_while_keyed_unkeys_at_once_and_blocks() {
    let mut s = Sim::new(KeyingConfig::default());
    s.input(0, TxRequest(true));
    s.input(1000, Inhibit(true));
    assert!(!s.k.ptt() && !s.k.tx_audio());
    s.input(1500, TxRequest(false));
    s.input(1600, TxRequest(true));
    s.run_to(300_000);
    assert_eq!(
        s.take(),
        vec![
            (0, PttOn),
            (500, TxAudioOpen),
            (1000, InhibitChanged(true)),
            (1000, PttOff(Off::Inhibited)),
            (1600, TxBlocked(Block::Inhibited)),
        ]
    );
}

#[test]
fn inhibit_during_hang_unkeys_at_once() {
    let mut s = Sim::new(KeyingConfig::default());
    s.input(0, TxRequest(true));
    s.input(1000, TxRequest(false));
    s.input(1500, Inhibit(true));
    s.run_to(10_000);
    let tail = s.take().split_off(2);
    assert_eq!(tail, vec![(1500, InhibitChanged(true)), (1500, PttOff(Off::Inhibited))]);
}

#[test]
fn inhibit_release_with_active_request_rekeys_fresh() {
    let mut s = Sim::new(KeyingConfig::default());
    s.input(0, TxRequest(true));
    s.input(1000, Inhibit(true));
    s.input(2000, Inhibit(false));
    assert_eq!(s.k.tot_remaining(Sim::at(2000)), Some(ms(180_000))); // new TOT
    s.run_to(2600);
    assert_eq!(
        s.take(),
        vec![
            (0, PttOn),
            (500, TxAudioOpen),
            (1000, InhibitChanged(true)),
            (1000, PttOff(Off::Inhibited)),
            (2000, InhibitChanged(false)),
            (2000, PttOn),
            (2500, TxAudioOpen), // new TX delay
        ]
    );
}

#[test]
fn request_while_inhibited_keys_on_release() {
    let mut s = Sim::new(KeyingConfig::default());
    s.input(0, Inhibit(true));
    s.input(100, TxRequest(true));
    s.input(200, Inhibit(false));
    assert_eq!(
        s.take(),
        vec![(0, InhibitChanged(true)), (100, TxBlocked(Block::Inhibited)), (200, InhibitChanged(false)), (200, PttOn),]
    );
}

// ---- RX and TX together ----

#[test]
fn inhibit_release_while_receiving_in_simplex_waits_for_rx() {
    let mut s = Sim::new(KeyingConfig::default());
    s.input(0, Cor(true));
    s.input(100, Inhibit(true));
    s.input(200, TxRequest(true));
    s.input(300, Inhibit(false));
    s.input(1000, Cor(false));
    s.run_to(1400);
    assert_eq!(
        s.take(),
        vec![
            (20, RxOpen),
            (100, InhibitChanged(true)),
            (200, TxBlocked(Block::Inhibited)),
            (300, InhibitChanged(false)),
            (300, TxBlocked(Block::Busy)),
            (1320, RxClose),
            (1320, PttOn),
        ]
    );
}

#[test]
fn simplex_ignores_cor_while_keyed_then_takes_it() {
    let mut s = Sim::new(KeyingConfig::default());
    s.input(0, TxRequest(true));
    s.input(1000, Cor(true)); // our own carrier, as far as we know
    s.run_to(1900);
    assert!(!s.k.rx_active() && s.k.cor());
    s.input(2000, TxRequest(false));
    s.run_to(5000);
    assert_eq!(s.take(), vec![(0, PttOn), (500, TxAudioOpen), (4000, PttOff(Off::HangExpired)), (4000, RxOpen)]);
}

#[test]
fn simplex_cor_that_came_and_went_during_tx_is_forgotten() {
    let mut s = Sim::new(KeyingConfig::default());
    s.input(0, TxRequest(true));
    s.input(1000, Cor(true));
    s.input(1500, Cor(false));
    s.input(2000, TxRequest(false));
    s.run_to(10_000);
    assert_eq!(s.take(), vec![(0, PttOn), (500, TxAudioOpen), (4000, PttOff(Off::HangExpired))]);
}

#[test]
fn simplex_request_during_kerchunk_check_keys() {
    let mut s = Sim::with(|c| c.min_keyup = ms(500));
    s.input(0, Cor(true)); // qualifying from 20 to 520
    s.input(100, TxRequest(true)); // RX is not open yet, so not busy
    s.run_to(1000);
    assert_eq!(s.take(), vec![(100, PttOn), (600, TxAudioOpen)]);
    assert!(!s.k.rx_active());
}

#[test]
fn duplex_cor_and_tx_are_independent() {
    let mut s = Sim::with(|c| {
        c.duplex = true;
        c.no_audio = LONG;
    });
    s.input(0, TxRequest(true));
    s.input(1000, Cor(true));
    s.input(2000, Cor(false));
    s.input(3000, Cor(true)); // receiving while keyed
    s.input(4000, TxRequest(false));
    s.input(4100, TxRequest(true));
    s.run_to(7000);
    assert_eq!(s.take(), vec![(0, PttOn), (500, TxAudioOpen), (1020, RxOpen), (2320, RxClose), (3020, RxOpen)]);
    assert!(s.k.ptt() && s.k.rx_active());
}

#[test]
fn simplex_request_while_receiving_is_busy_then_keys_after_rx_closes() {
    let mut s = Sim::new(KeyingConfig::default());
    s.input(0, Cor(true));
    s.input(1000, TxRequest(true));
    s.input(3000, Cor(false));
    s.run_to(4000);
    assert_eq!(
        s.take(),
        vec![(20, RxOpen), (1000, TxBlocked(Block::Busy)), (3320, RxClose), (3320, PttOn), (3820, TxAudioOpen),]
    );
}

#[test]
fn simplex_busy_request_withdrawn_never_keys() {
    let mut s = Sim::new(KeyingConfig::default());
    s.input(0, Cor(true));
    s.input(1000, TxRequest(true));
    s.input(2000, TxRequest(false));
    s.input(3000, Cor(false));
    s.run_to(10_000);
    assert_eq!(s.take(), vec![(20, RxOpen), (1000, TxBlocked(Block::Busy)), (3320, RxClose)]);
}

#[test]
fn simplex_stuck_cor_frees_the_radio_for_a_waiting_request() {
    let mut s = Sim::new(unguarded());
    s.input(0, Cor(true));
    s.input(1000, TxRequest(true));
    s.run_to(400_000);
    assert_eq!(
        s.take(),
        vec![
            (20, RxOpen),
            (1000, TxBlocked(Block::Busy)),
            (180_020, RxTimeout),
            (180_020, RxClose),
            (180_020, PttOn),
            (180_520, TxAudioOpen),
            (360_020, PttOff(Off::TimeOut)),
            (360_020, TotFired),
            // COR is still stuck: no RxOpen after PTT drops.
        ]
    );
    assert!(s.k.locked_out());
}

#[test]
fn zero_length_timers_fire_in_the_same_call() {
    let mut s = Sim::with(|c| {
        c.cor_debounce = Duration::ZERO;
        c.tx_delay = Duration::ZERO;
        c.tx_hang = Duration::ZERO;
        c.squelch_hang = Duration::ZERO;
        c.duplex = true;
    });
    s.input(0, Cor(true));
    s.input(0, TxRequest(true));
    s.input(10, TxRequest(false));
    s.input(20, Cor(false));
    assert_eq!(
        s.take(),
        vec![(0, RxOpen), (0, PttOn), (0, TxAudioOpen), (10, PttOff(Off::HangExpired)), (20, RxClose),]
    );
    assert_eq!(s.k.poll_timeout(), None);
}

#[test]
fn shutdown_while_keyed_releases_everything_and_ignores_the_rest() {
    let mut s = Sim::with(|c| c.duplex = true);
    s.input(0, Cor(true));
    s.input(100, TxRequest(true));
    s.input(1000, Shutdown);
    assert!(!s.k.ptt() && !s.k.rx_active() && s.k.is_shut_down());
    assert_eq!(s.k.poll_timeout(), None);
    s.input(1100, Inhibit(true));
    s.input(1200, Cor(false));
    s.input(1300, TxRequest(false));
    s.input(1400, TxRequest(true));
    s.input(1500, Shutdown);
    s.run_to(1_000_000);
    assert!(!s.k.ptt());
    assert_eq!(
        s.take(),
        vec![
            (20, RxOpen),
            (100, PttOn),
            (600, TxAudioOpen),
            (1000, PttOff(Off::Shutdown)),
            (1000, RxClose),
            (1400, TxBlocked(Block::ShutDown)),
        ]
    );
}

#[test]
fn late_driver_unkeys_at_tot_before_the_input() {
    let t0 = base();
    let mut k = Keying::new(unguarded());
    k.handle_input(t0, TxRequest(true));
    // The driver slept through everything, then an input arrives.
    k.handle_input(t0 + ms(500_000), Inhibit(true));
    let events: Vec<_> = std::iter::from_fn(|| k.poll_event()).collect();
    assert_eq!(events, vec![PttOn, TxAudioOpen, PttOff(Off::TimeOut), TotFired, InhibitChanged(true)]);
    assert!(!k.ptt() && k.locked_out());

    // Same with a late handle_timeout: the whole backlog, in deadline order.
    let mut k = Keying::new(unguarded());
    k.handle_input(t0, Cor(true));
    k.handle_input(t0, TxRequest(true));
    k.handle_timeout(t0 + ms(1_000_000));
    let events: Vec<_> = std::iter::from_fn(|| k.poll_event()).collect();
    assert_eq!(events, vec![PttOn, TxAudioOpen, PttOff(Off::TimeOut), TotFired, RxOpen, RxTimeout, RxClose]);

    // The no-audio guard too: a late driver still sees it fire at its own deadline, long
    // before the TOT, and the request then waits for audio.
    let mut k = Keying::new(KeyingConfig::default());
    k.handle_input(t0, TxRequest(true));
    k.handle_input(t0 + ms(500_000), Inhibit(true));
    let events: Vec<_> = std::iter::from_fn(|| k.poll_event()).collect();
    assert_eq!(events, vec![PttOn, TxAudioOpen, PttOff(Off::NoAudio), InhibitChanged(true)]);
    assert!(!k.ptt() && !k.locked_out() && k.silent());
}

#[test]
fn time_going_backwards_is_clamped() {
    let mut s = Sim::new(unguarded());
    s.input(10_000, TxRequest(true));
    s.input(5_000, Cor(true)); // earlier than already seen: taken as 10 000
    s.k.handle_timeout(base());
    s.after_call();
    assert_eq!(s.k.tot_remaining(base()), Some(ms(180_000)));
    s.run_to(200_000);
    assert_eq!(
        s.take(),
        vec![
            (10_000, PttOn),
            (10_500, TxAudioOpen),
            (190_000, PttOff(Off::TimeOut)),
            (190_000, TotFired),
            (190_000, RxOpen), // COR counted at 10 020, taken when PTT dropped
        ]
    );
    // A fresh instance whose first time is its latest one also copes.
    let mut k = Keying::new(KeyingConfig::default());
    k.handle_timeout(base() + ms(1000));
    k.handle_input(base(), TxRequest(true));
    assert_eq!(k.ptt_since(), Some(base() + ms(1000)));
    assert_eq!(k.tot_remaining(base()), Some(ms(180_000)));
}

/// A duplex link keys this port while its COR is stuck open for ten minutes.
#[test]
fn ten_minutes_of_stuck_cor_on_a_duplex_link() {
    let mut s = Sim::with(|c| {
        c.duplex = true;
        c.no_audio = LONG;
    });
    s.input(0, Cor(true));
    s.input(1000, TxRequest(true));
    s.run_to(600_000);
    assert_eq!(
        s.take(),
        vec![
            (20, RxOpen),
            (1000, PttOn),
            (1500, TxAudioOpen),
            (180_020, RxTimeout),
            (180_020, RxClose),
            (181_000, PttOff(Off::TimeOut)),
            (181_000, TotFired),
        ]
    );
    assert!(!s.k.ptt() && !s.k.rx_active() && s.k.locked_out());
    // Virtual time: ten minutes in a handful of steps, not a busy loop.
    assert!(s.timeouts < 10, "{} steps", s.timeouts);
    s.input(600_000, Cor(false));
    s.input(600_000, TxRequest(false));
    s.input(601_000, Cor(true));
    s.run_to(602_000);
    assert_eq!(s.take(), vec![(600_000, LockoutCleared), (601_020, RxOpen)]);
}

// ---- station ID ----

/// Interval 60 s, ID 3 s long, sent up to 10 s early; default timers (TX delay 500 ms,
/// hang 2 s, TOT 180 s).
fn id_sim(f: impl FnOnce(&mut KeyingConfig)) -> Sim {
    let mut config = KeyingConfig::default();
    f(&mut config);
    let mut s = Sim::new(config);
    s.k = started(s.k.config().clone()).with_station_id(StationIdConfig {
        interval: ms(60_000),
        early: ms(10_000),
        length: ms(3000),
    });
    s
}

/// One over from 1 s to 3 s: the first ID rides on it once TX audio is open; traffic
/// keeps the ID owed, so it is sent again after the interval by an ID-only key-up.
fn over(s: &mut Sim) {
    s.input(1000, TxRequest(true));
    s.input(3000, TxRequest(false));
}

#[test]
fn id_rides_on_traffic_then_keys_the_idle_radio_after_the_interval() {
    let mut s = id_sim(|_| {});
    over(&mut s);
    s.run_to(100_000);
    assert_eq!(
        s.take(),
        vec![
            (1000, PttOn),
            (1500, TxAudioOpen),
            (1500, IdStart),
            (5000, PttOff(Off::HangExpired)),
            // Last ID ended at 4.5 s while keyed for traffic: the next is due 60 s later.
            (64_500, PttOn),
            (65_000, TxAudioOpen),
            (65_000, IdStart),
            (68_000, PttOff(Off::IdDone)),
        ]
    );
    // Nothing owed without traffic since: no more key-ups.
    s.run_to(1_000_000);
    assert_eq!(s.take(), vec![]);
    assert!(!s.k.ptt() && !s.k.id_wanted());
}

#[test]
fn a_short_over_is_held_until_its_id_ends_and_nothing_more_is_owed() {
    let mut s = id_sim(|c| c.tx_hang = ms(500));
    over(&mut s);
    s.run_to(1_000_000);
    assert_eq!(s.take(), vec![(1000, PttOn), (1500, TxAudioOpen), (1500, IdStart), (4500, PttOff(Off::IdDone))]);
}

#[test]
fn id_due_while_keyed_is_mixed_in_without_a_key_up_of_its_own() {
    let mut s = id_sim(|c| c.no_audio = LONG);
    over(&mut s);
    s.run_to(10_000);
    s.take();
    // Traffic from 55 s, inside the early window (50-64.5 s): the ID rides on it.
    s.input(55_000, TxRequest(true));
    s.input(70_000, TxRequest(false));
    s.run_to(200_000);
    assert_eq!(
        s.take(),
        vec![
            (55_000, PttOn),
            (55_500, TxAudioOpen),
            (55_500, IdStart),
            (72_000, PttOff(Off::HangExpired)),
            (118_500, PttOn),
            (119_000, TxAudioOpen),
            (119_000, IdStart),
            (122_000, PttOff(Off::IdDone)),
        ]
    );
}

#[test]
fn id_waits_for_inhibit_and_a_busy_simplex_receiver() {
    let mut s = id_sim(|_| {});
    over(&mut s);
    s.input(60_000, Inhibit(true));
    s.run_to(70_000);
    assert!(!s.k.ptt() && s.k.id_wanted(), "inhibited: no key-up for the ID");
    // Simplex and receiving when the inhibit goes: the ID waits for RX to close.
    s.input(70_000, Cor(true));
    s.input(71_000, Inhibit(false));
    s.run_to(75_000);
    assert!(!s.k.ptt(), "never keys over a station it is receiving");
    s.take();
    s.input(75_000, Cor(false));
    s.run_to(90_000);
    assert_eq!(
        s.take(),
        vec![
            (75_320, RxClose),
            (75_320, PttOn),
            (75_820, TxAudioOpen),
            (75_820, IdStart),
            (78_820, PttOff(Off::IdDone)),
        ]
    );
}

#[test]
fn inhibit_during_an_id_unkeys_at_once_and_the_id_is_still_owed() {
    let mut s = id_sim(|_| {});
    over(&mut s);
    s.run_to(66_000);
    assert!(s.k.id_sending());
    s.take();
    s.input(66_000, Inhibit(true));
    assert!(!s.k.ptt());
    s.input(80_000, Inhibit(false));
    s.run_to(90_000);
    assert_eq!(
        s.take(),
        vec![
            (66_000, InhibitChanged(true)),
            (66_000, PttOff(Off::Inhibited)),
            (80_000, InhibitChanged(false)),
            (80_000, PttOn),
            (80_500, TxAudioOpen),
            (80_500, IdStart),
            (83_500, PttOff(Off::IdDone)),
        ]
    );
}

#[test]
fn tot_cuts_an_id_key_up_and_gives_the_id_up_until_the_next_interval() {
    let mut s = id_sim(|c| c.tot = ms(2500));
    // A short over: its ID outlasts it and the hang, so the key-up goes on for the ID alone
    // until the TOT cuts it.
    s.input(1000, TxRequest(true));
    s.input(1400, TxRequest(false));
    s.run_to(70_000);
    assert_eq!(
        s.take(),
        vec![(1000, PttOn), (1500, TxAudioOpen), (1500, IdStart), (3500, PttOff(Off::TimeOut)), (3500, TotFired)]
    );
    assert!(!s.k.locked_out(), "no talker: no lockout");
    // No key-up loop: nothing owed until new traffic.
    s.run_to(1_000_000);
    assert_eq!(s.take(), vec![]);
}

#[test]
fn audio_fault_ends_an_id_key_up_and_holds_the_next_until_audio_is_back() {
    let mut s = id_sim(|_| {});
    over(&mut s);
    s.run_to(66_000);
    s.take();
    s.input(66_000, AudioFault(true));
    assert!(!s.k.ptt(), "unkeyed at once");
    s.run_to(200_000);
    assert!(!s.k.ptt() && s.k.id_wanted(), "no ID key-up while the audio path is down");
    s.input(200_000, AudioFault(false));
    s.run_to(210_000);
    assert_eq!(
        s.take(),
        vec![
            (66_000, PttOff(Off::AudioFault)),
            (200_000, PttOn),
            (200_500, TxAudioOpen),
            (200_500, IdStart),
            (203_500, PttOff(Off::IdDone)),
        ]
    );
}

#[test]
fn traffic_during_an_id_key_up_continues_it_and_shutdown_ends_it() {
    let mut s = id_sim(|_| {});
    over(&mut s);
    s.run_to(66_000);
    s.take();
    s.input(66_000, TxRequest(true));
    s.run_to(70_000);
    assert!(s.k.ptt(), "the talker keeps the key-up after the ID");
    s.input(70_000, Shutdown);
    s.run_to(1_000_000);
    assert_eq!(s.take(), vec![(70_000, PttOff(Off::Shutdown))]);
}

// ---- no-audio guard ----

#[test]
fn a_talker_without_channel_audio_is_unkeyed_by_the_guard_and_rekeys_when_audio_comes() {
    let mut s = Sim::new(KeyingConfig::default());
    s.input(0, TxRequest(true));
    s.input(1000, ChannelAudio);
    s.input(2000, ChannelAudio);
    s.run_to(6999);
    assert!(s.k.ptt(), "5 s guard counts from the last audio");
    s.run_to(7000);
    assert!(!s.k.ptt() && s.k.silent());
    // What the port reports to the floor (air: waiting, no_audio).
    assert_eq!(s.k.block_reason(), Some(Block::NoAudio));
    // The request stays: repeats are told why they do not key.
    s.input(8000, TxRequest(true));
    // Audio after all: a fresh key-up (TX delay, full TOT).
    s.input(9000, ChannelAudio);
    assert_eq!(s.k.tot_remaining(Sim::at(9000)), Some(ms(180_000)));
    // A talker who spoke gets the whole hang (shorter than the guard).
    s.input(9500, TxRequest(false));
    s.run_to(100_000);
    assert_eq!(
        s.take(),
        vec![
            (0, PttOn),
            (500, TxAudioOpen),
            (7000, PttOff(Off::NoAudio)),
            (8000, TxBlocked(Block::NoAudio)),
            (9000, PttOn),
            (9500, TxAudioOpen),
            (11_500, PttOff(Off::HangExpired)),
        ]
    );
    assert!(!s.k.silent() && s.k.block_reason().is_none());
}

#[test]
fn the_guard_counts_through_the_hang_and_a_returning_talker_does_not_restart_it() {
    let mut s = Sim::new(KeyingConfig::default());
    s.input(0, TxRequest(true));
    s.input(1000, ChannelAudio);
    // Silent from 1 s, the talker goes at 4.5 s: the hang would last to 6.5 s.
    s.input(4500, TxRequest(false));
    s.run_to(6500);
    assert!(!s.k.silent(), "no request left to wait for audio");
    // A new request keys at once; audio, then the talker goes and comes back in the hang.
    s.input(7000, TxRequest(true));
    s.input(7100, ChannelAudio);
    s.input(7200, TxRequest(false));
    s.input(8000, TxRequest(true));
    s.run_to(12_099);
    assert!(s.k.ptt());
    s.run_to(12_100);
    assert!(s.k.silent());
    // The talker goes: nothing waits any more, and the next one keys at once.
    s.input(13_000, TxRequest(false));
    s.input(14_000, TxRequest(true));
    assert_eq!(
        s.take(),
        vec![
            (0, PttOn),
            (500, TxAudioOpen),
            (6000, PttOff(Off::NoAudio)),
            (7000, PttOn),
            (7500, TxAudioOpen),
            (12_100, PttOff(Off::NoAudio)),
            (14_000, PttOn),
        ]
    );
}

#[test]
fn a_rekey_after_the_guard_still_obeys_inhibit_shutdown_and_the_tot() {
    let mut s = Sim::new(KeyingConfig::default());
    s.input(0, TxRequest(true));
    s.run_to(5000);
    s.input(6000, Inhibit(true));
    s.input(7000, ChannelAudio); // audio, but inhibited: no key-up
    s.input(8000, Inhibit(false)); // the talker has spoken: keys now
    s.input(9000, Shutdown);
    s.input(10_000, ChannelAudio);
    s.input(10_000, TxRequest(true));
    assert_eq!(
        s.take(),
        vec![
            (0, PttOn),
            (500, TxAudioOpen),
            (5000, PttOff(Off::NoAudio)),
            (6000, InhibitChanged(true)),
            (8000, InhibitChanged(false)),
            (8000, PttOn),
            (8500, TxAudioOpen),
            (9000, PttOff(Off::Shutdown)),
            (10_000, TxBlocked(Block::ShutDown)),
        ]
    );
    // Keyed again by audio: the TOT still cuts it and locks it out; audio does not re-key.
    let mut s = Sim::with(|c| c.tot = ms(3000));
    s.input(0, TxRequest(true));
    s.run_to(5000);
    for t in (6000..12_000).step_by(1000) {
        s.input(t, ChannelAudio);
    }
    assert_eq!(s.take(), vec![(0, PttOn), (500, TxAudioOpen), (3000, PttOff(Off::TimeOut)), (3000, TotFired)]);
    let mut s = Sim::with(|c| c.tot = ms(3000));
    s.input(0, TxRequest(true));
    s.run_to(5000);
    s.input(6000, ChannelAudio);
    s.input(7000, ChannelAudio);
    s.run_to(20_000);
    assert_eq!(s.take(), vec![(0, PttOn), (500, TxAudioOpen), (3000, PttOff(Off::TimeOut)), (3000, TotFired)]);
    assert!(s.k.locked_out() && !s.k.ptt());
}

#[test]
fn guard_never_cuts_an_id_key_up_and_an_id_on_air_counts_as_audio() {
    // An over with audio to 3 s; its ID (3 s long) is on air from 1.5 s, so the 1 s guard
    // counts from 4.5 s and the 2 s hang ends first. The ID-only key-up after the interval
    // lasts 3.5 s, longer than the guard: it ends with the ID.
    let mut s = id_sim(|c| c.no_audio = ms(1000));
    s.input(1000, TxRequest(true));
    for t in (1500..=3000).step_by(500) {
        s.input(t, ChannelAudio);
    }
    s.input(3000, TxRequest(false));
    s.run_to(100_000);
    assert_eq!(
        s.take(),
        vec![
            (1000, PttOn),
            (1500, TxAudioOpen),
            (1500, IdStart),
            (5000, PttOff(Off::HangExpired)),
            (64_500, PttOn),
            (65_000, TxAudioOpen),
            (65_000, IdStart),
            (68_000, PttOff(Off::IdDone)),
        ]
    );
    // A silent talker while the ID is on air: the guard counts from the end of the ID.
    let mut s = id_sim(|c| c.no_audio = ms(1000));
    s.input(1000, TxRequest(true));
    s.run_to(5499);
    assert!(s.k.ptt(), "the guard counts from the end of the ID");
    s.run_to(6000);
    assert_eq!(s.take(), vec![(1000, PttOn), (1500, TxAudioOpen), (1500, IdStart), (5500, PttOff(Off::NoAudio))]);
    // While the guard holds the request, no key-up for the ID either; it goes once the
    // talker has gone.
    s.run_to(70_000);
    assert_eq!(s.take(), vec![]);
    s.input(70_000, TxRequest(false));
    assert_eq!(s.take(), vec![(70_000, PttOn)]);
}

// ---- remote PTT ----

#[test]
fn remote_ptt_keys_for_at_most_its_maximum_hang_included_and_is_not_guarded() {
    let mut s = Sim::with(|c| c.tx_hang = ms(30_000));
    s.input(0, RemotePtt(Some(ms(1000))));
    s.run_to(1000);
    assert!(!s.k.ptt() && !s.k.remote_ptt());
    s.input(2000, RemotePtt(Some(ms(60_000))));
    s.run_to(50_000);
    assert!(s.k.ptt(), "48 s without channel audio: a remote PTT is not guarded");
    s.input(50_000, RemotePtt(None)); // released: no hang either
    s.input(51_000, RemotePtt(None)); // nothing to release
    s.run_to(100_000);
    assert_eq!(
        s.take(),
        vec![
            (0, PttOn),
            (500, TxAudioOpen),
            (1000, PttOff(Off::RemoteEnd)),
            (2000, PttOn),
            (2500, TxAudioOpen),
            (50_000, PttOff(Off::RemoteEnd)),
        ]
    );
}

#[test]
fn a_channel_talker_outlasts_a_remote_ptt_and_the_guard_counts_from_its_end() {
    let mut s = Sim::new(KeyingConfig::default());
    s.input(0, TxRequest(true));
    s.input(1000, RemotePtt(Some(ms(10_000))));
    s.input(2000, TxRequest(false)); // the remote PTT holds it: no hang
    s.run_to(10_999);
    assert!(s.k.ptt());
    s.run_to(11_000);
    s.input(12_000, RemotePtt(Some(ms(5000))));
    s.input(13_000, TxRequest(true));
    s.input(14_000, ChannelAudio);
    s.run_to(30_000);
    assert_eq!(
        s.take(),
        vec![
            (0, PttOn),
            (500, TxAudioOpen),
            (11_000, PttOff(Off::RemoteEnd)),
            (12_000, PttOn),
            (12_500, TxAudioOpen),
            // The remote PTT ends at 17 s; the talker keeps PTT until the guard, 5 s later.
            (22_000, PttOff(Off::NoAudio)),
        ]
    );
}

#[test]
fn tx_inhibit_cancels_a_remote_ptt_for_good() {
    let mut s = Sim::new(KeyingConfig::default());
    s.input(0, RemotePtt(Some(ms(60_000))));
    s.input(1000, Inhibit(true));
    s.input(2000, Inhibit(false));
    assert!(!s.k.ptt() && !s.k.remote_ptt(), "lifting the inhibit does not key again");
    // Refused while inhibited, and not remembered.
    s.input(3000, Inhibit(true));
    s.input(3100, RemotePtt(Some(ms(5000))));
    s.input(4000, Inhibit(false));
    s.run_to(100_000);
    assert_eq!(
        s.take(),
        vec![
            (0, PttOn),
            (500, TxAudioOpen),
            (1000, InhibitChanged(true)),
            (1000, PttOff(Off::Inhibited)),
            (2000, InhibitChanged(false)),
            (3000, InhibitChanged(true)),
            (3100, TxBlocked(Block::Inhibited)),
            (4000, InhibitChanged(false)),
        ]
    );
}

#[test]
fn a_remote_ptt_waits_for_rx_on_simplex_within_its_maximum_and_inhibit_cancels_the_wait() {
    let mut s = Sim::new(KeyingConfig::default());
    s.input(0, Cor(true));
    s.input(1000, RemotePtt(Some(ms(5000))));
    s.input(2000, Cor(false));
    s.run_to(6500);
    s.input(7000, Cor(true));
    s.input(8000, RemotePtt(Some(ms(5000))));
    s.input(8500, Inhibit(true));
    s.input(9000, Inhibit(false));
    s.input(10_000, Cor(false));
    s.run_to(20_000);
    assert_eq!(
        s.take(),
        vec![
            (20, RxOpen),
            (1000, TxBlocked(Block::Busy)),
            (2320, RxClose),
            (2320, PttOn),
            (2820, TxAudioOpen),
            (6000, PttOff(Off::RemoteEnd)),
            (7020, RxOpen),
            (8000, TxBlocked(Block::Busy)),
            (8500, InhibitChanged(true)),
            (9000, InhibitChanged(false)),
            (10_320, RxClose),
        ]
    );
}

#[test]
fn a_remote_ptt_ends_at_the_tot_and_on_shutdown_and_is_refused_when_locked_out() {
    let mut s = Sim::with(|c| c.tot = ms(3000));
    s.input(0, RemotePtt(Some(ms(10_000))));
    s.run_to(20_000);
    assert!(!s.k.locked_out(), "no channel talker: nothing to lock out");
    // A channel talker's TOT locks out: a remote PTT is refused then.
    s.input(21_000, TxRequest(true));
    s.run_to(24_000);
    s.input(25_000, RemotePtt(Some(ms(5000))));
    s.input(26_000, TxRequest(false));
    s.run_to(40_000);
    assert_eq!(
        s.take(),
        vec![
            (0, PttOn),
            (500, TxAudioOpen),
            (3000, PttOff(Off::TimeOut)),
            (3000, TotFired),
            (21_000, PttOn),
            (21_500, TxAudioOpen),
            (24_000, PttOff(Off::TimeOut)),
            (24_000, TotFired),
            (25_000, TxBlocked(Block::LockedOut)),
            (26_000, LockoutCleared),
        ]
    );
    let mut s = Sim::new(KeyingConfig::default());
    s.input(0, RemotePtt(Some(ms(60_000))));
    s.input(1000, Shutdown);
    s.input(2000, RemotePtt(Some(ms(60_000))));
    assert_eq!(
        s.take(),
        vec![(0, PttOn), (500, TxAudioOpen), (1000, PttOff(Off::Shutdown)), (2000, TxBlocked(Block::ShutDown))]
    );
}

// ---- properties ----

fn arb_config() -> impl Strategy<Value = KeyingConfig> {
    (
        (0u64..100, 0u64..1000, 0u64..1000, 0u64..3000, 0u32..12),
        (0u64..20_000, 0u64..1000, 0u64..5000, 0u64..20_000),
        (any::<bool>(), 0u64..10_000),
        proptest::option::of((-60f32..-20.0, 0f32..10.0)),
    )
        .prop_map(|((deb, keyup, hang, win, flaps), (rxt, delay, txh, tot), (duplex, silence), vox)| {
            KeyingConfig {
                cor_debounce: ms(deb),
                min_keyup: ms(keyup),
                squelch_hang: ms(hang),
                flap_window: ms(win),
                flap_max_changes: flaps,
                rx_timeout: ms(rxt),
                tx_delay: ms(delay),
                tx_hang: ms(txh),
                tot: ms(tot),
                no_audio: ms(silence),
                duplex,
                vox: vox.map(|(open, gap)| VoxConfig { open_dbfs: open, close_dbfs: open - gap }),
                ctcss: None,
                ctcss_tail: Duration::ZERO,
            }
        })
}

fn arb_input() -> impl Strategy<Value = Input> {
    prop_oneof![
        20 => any::<bool>().prop_map(Cor),
        20 => (-70f32..0.0).prop_map(VoxLevel),
        20 => any::<bool>().prop_map(TxRequest),
        20 => Just(ChannelAudio),
        5 => proptest::option::of(0u64..5000).prop_map(|m| RemotePtt(m.map(ms))),
        8 => any::<bool>().prop_map(Inhibit),
        1 => Just(Shutdown),
    ]
}

fn arb_input_with_faults() -> impl Strategy<Value = Input> {
    prop_oneof![10 => arb_input(), 1 => any::<bool>().prop_map(AudioFault)]
}

fn arb_station_id() -> impl Strategy<Value = StationIdConfig> {
    (10_000u64..40_000, 0u64..20_000, 0u64..8000).prop_map(|(interval, early, length)| StationIdConfig {
        interval: ms(interval),
        early: ms(early),
        length: ms(length),
    })
}

/// Milliseconds to move before the input: mostly short, some long enough for TOT and
/// RX timeouts, a few backwards.
fn arb_delay() -> impl Strategy<Value = i64> {
    prop_oneof![6 => 0i64..300, 3 => 0i64..5_000, 1 => 0i64..40_000, 1 => -2_000i64..0]
}

fn arb_steps() -> impl Strategy<Value = Vec<(i64, Input)>> {
    proptest::collection::vec((arb_delay(), arb_input()), 0..150)
}

fn step_time(now: Instant, delay: i64) -> Instant {
    if delay >= 0 {
        now + ms(delay as u64)
    } else {
        now.checked_sub(ms(delay.unsigned_abs())).unwrap_or(now)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..Default::default() })]

    /// The Sim checks after every call: PTT never on longer than the TOT (from events and
    /// from `ptt()`), never while inhibited or locked out, getters agree with the events,
    /// nothing runs after shutdown, and the next deadline is after the handled time.
    #[test]
    fn invariants_hold_for_random_inputs(config in arb_config(), steps in arb_steps()) {
        let mut s = Sim::new(config);
        for (delay, input) in steps {
            let at = step_time(s.now, delay);
            s.input_at(at, input);
        }
        // Left alone, every key-up ends: by hang or by TOT.
        let end = s.now + ms(400_000);
        s.run_to_instant(end);
        prop_assert!(!s.k.ptt());
    }

    /// A driver that never calls handle_timeout sees exactly what a punctual one sees.
    #[test]
    fn late_driver_matches_punctual(config in arb_config(), steps in arb_steps()) {
        let mut punctual = Sim::new(config.clone());
        let mut late = started(config);
        for (delay, input) in steps {
            let at = step_time(punctual.now, delay);
            punctual.input_at(at, input);
            late.handle_input(at, input);
            let expected: Vec<Event> = punctual.take().into_iter().map(|(_, e)| e).collect();
            let got: Vec<Event> = std::iter::from_fn(|| late.poll_event()).collect();
            prop_assert_eq!(got, expected);
            let k = &punctual.k;
            prop_assert_eq!(late.ptt(), k.ptt());
            prop_assert_eq!(late.ptt_since(), k.ptt_since());
            prop_assert_eq!(late.tx_audio(), k.tx_audio());
            prop_assert_eq!(late.rx_active(), k.rx_active());
            prop_assert_eq!(late.locked_out(), k.locked_out());
            prop_assert_eq!(late.poll_timeout(), k.poll_timeout());
        }
    }

    /// With a station ID: the same invariants (never keyed past the TOT, while inhibited or
    /// locked out, ID only on air with TX audio), every key-up ends when left alone, and
    /// a late driver sees what a punctual one sees.
    #[test]
    fn station_id_keeps_the_keying_rules(
        config in arb_config(),
        id in arb_station_id(),
        steps in proptest::collection::vec((arb_delay(), arb_input_with_faults()), 0..150),
    ) {
        let mut s = Sim::new(config.clone());
        s.k = started(config.clone()).with_station_id(id.clone());
        let mut late = started(config).with_station_id(id);
        for (delay, input) in steps {
            let at = step_time(s.now, delay);
            s.input_at(at, input);
            late.handle_input(at, input);
            let expected: Vec<Event> = s.take().into_iter().map(|(_, e)| e).collect();
            let got: Vec<Event> = std::iter::from_fn(|| late.poll_event()).collect();
            prop_assert_eq!(got, expected);
            prop_assert_eq!(late.ptt(), s.k.ptt());
        }
        // Traffic gone: an owed ID may key once more, then every key-up ends.
        let at = s.now;
        s.input_at(at, TxRequest(false));
        let end = s.now + ms(400_000);
        s.run_to_instant(end);
        prop_assert!(!s.k.ptt());
    }

    /// Found by this property (4,055 cases in): a zero no-audio guard (the config refuses one,
    /// the core must still be sound) unkeys at the instant the ID starts.
    #[test]
    fn an_id_cut_at_once_by_the_guard_keeps_the_keying_rules(tot in 4000u64..4200) {
        let config = KeyingConfig {
            cor_debounce: ms(0), min_keyup: ms(0), squelch_hang: ms(0), flap_window: ms(0),
            flap_max_changes: 0, rx_timeout: ms(0), tx_delay: ms(0), tx_hang: ms(0), tot: ms(tot),
            no_audio: ms(0), duplex: false, vox: None, ctcss: None, ctcss_tail: Duration::ZERO,
        };
        let id = StationIdConfig { interval: ms(10_000), early: ms(0), length: ms(0) };
        let mut s = Sim::new(config);
        s.k = started(s.k.config().clone()).with_station_id(id);
        let at = s.now;
        s.input_at(at, TxRequest(true));
        let events: Vec<Event> = s.take().into_iter().map(|(_, e)| e).collect();
        prop_assert_eq!(events, vec![PttOn, TxAudioOpen, IdStart, PttOff(PttOffReason::NoAudio)]);
        let end = s.now + ms(400_000);
        s.run_to_instant(end);
        prop_assert!(!s.k.ptt());
    }

    /// After Shutdown nothing keys again, whatever comes.
    #[test]
    fn shutdown_is_final(
        config in arb_config(),
        before in arb_steps(),
        after in arb_steps(),
    ) {
        let mut s = Sim::new(config);
        for (delay, input) in before {
            let at = step_time(s.now, delay);
            s.input_at(at, input);
        }
        let at = s.now + ms(1);
        s.input_at(at, Shutdown);
        s.take();
        for (delay, input) in after {
            let at = step_time(s.now, delay);
            s.input_at(at, input);
            prop_assert!(!s.k.ptt());
        }
        prop_assert!(s.take().iter().all(|(_, e)| *e == TxBlocked(Block::ShutDown)));
    }
}

/// CTCSS as COR: alone, with a line as "both" (a shared channel: the radio's squelch opens on
/// every carrier, only the group's tone counts) and as "either"; with VOX as "both".
#[test]
fn ctcss_is_a_cor_source_alone_or_combined() {
    // Alone: the line means nothing, the tone opens and closes RX.
    let mut s = Sim::with(|c| c.ctcss = Some(CtcssCor::Only));
    s.input(0, Cor(true));
    s.run_to(500);
    assert_eq!(s.take(), vec![]);
    s.input(500, Ctcss(true));
    s.input(1500, Ctcss(false));
    s.run_to(3000);
    assert_eq!(s.take(), vec![(520, RxOpen), (1820, RxClose)]);

    // Both: a carrier without the tone, or the tone without a carrier, does not open.
    let mut s = Sim::with(|c| c.ctcss = Some(CtcssCor::Both));
    s.input(0, Cor(true));
    s.run_to(500);
    s.input(500, Cor(false));
    s.input(600, Ctcss(true));
    s.run_to(1000);
    assert_eq!(s.take(), vec![]);
    s.input(1000, Cor(true));
    s.input(2000, Ctcss(false)); // tone gone (reverse burst) before the carrier drops
    s.input(2100, Cor(false));
    s.run_to(4000);
    assert_eq!(s.take(), vec![(1020, RxOpen), (2320, RxClose)]);

    // Either: each opens alone; RX stays open while one of them is.
    let mut s = Sim::with(|c| c.ctcss = Some(CtcssCor::Either));
    s.input(0, Ctcss(true));
    s.input(1000, Cor(true));
    s.input(1100, Ctcss(false));
    s.input(2000, Cor(false));
    s.run_to(4000);
    assert_eq!(s.take(), vec![(20, RxOpen), (2320, RxClose)]);

    // VOX and tone, both: loud audio without the tone stays closed.
    let mut s = Sim::with(|c| {
        c.vox = Some(VoxConfig::default());
        c.ctcss = Some(CtcssCor::Both);
    });
    vox(&mut s, 0, 1000, -20.0);
    assert_eq!(s.take(), vec![]);
    s.input(1000, Ctcss(true));
    vox(&mut s, 1000, 2000, -20.0);
    vox(&mut s, 2000, 2100, -50.0);
    s.run_to(4000);
    assert_eq!(s.take(), vec![(1020, RxOpen), (2320, RxClose)]);
}

#[test]
fn ctcss_is_ignored_unless_configured() {
    let mut s = Sim::new(unguarded());
    s.input(0, Ctcss(true));
    s.run_to(1000);
    assert_eq!(s.take(), vec![]);
}

// ---- reply (DTMF acknowledgement) ----

/// TX delay 100 ms, hang 1 s, TOT 60 s.
fn reply_config(c: &mut KeyingConfig) {
    c.tx_delay = ms(100);
    c.tx_hang = ms(1000);
    c.tot = ms(60_000);
}

#[test]
fn a_reply_keys_an_idle_radio_through_the_tx_delay_and_unkeys_when_it_ends() {
    let mut s = Sim::with(reply_config);
    s.input(1000, Reply(ms(300)));
    s.run_to(5000);
    assert_eq!(s.take(), vec![(1000, PttOn), (1100, TxAudioOpen), (1100, ReplyStart), (1400, PttOff(Off::ReplyDone))]);
    assert!(!s.k.ptt() && s.k.poll_timeout().is_none());
}

#[test]
fn a_reply_waits_for_a_simplex_receiver_and_never_cuts_into_a_talker() {
    let mut s = Sim::with(reply_config);
    // The radio is still receiving (its user just sent the digits): the reply waits.
    s.input(0, Cor(true));
    s.input(500, Reply(ms(200)));
    s.run_to(900);
    assert_eq!(s.take(), vec![(20, RxOpen)]);
    // A channel talker takes the radio before RX closes: the reply waits for the hang.
    s.input(1000, TxRequest(true));
    s.input(1100, Cor(false));
    s.run_to(3000);
    assert_eq!(s.take(), vec![(1000, TxBlocked(Block::Busy)), (1420, RxClose), (1420, PttOn), (1520, TxAudioOpen)]);
    s.input(4000, TxRequest(false));
    s.run_to(8000);
    // In the hang, then PTT held for the rest of it, and the key-up ends with the hang.
    assert_eq!(s.take(), vec![(4000, ReplyStart), (5000, PttOff(Off::HangExpired))]);
}

#[test]
fn a_reply_that_outlasts_the_hang_holds_ptt_to_its_end() {
    let mut s = Sim::with(reply_config);
    s.input(0, TxRequest(true));
    s.input(500, TxRequest(false));
    s.input(1200, Reply(ms(800)));
    s.run_to(5000);
    assert_eq!(s.take(), vec![(0, PttOn), (100, TxAudioOpen), (1200, ReplyStart), (2000, PttOff(Off::ReplyDone))]);
}

/// Radio safety: a key-up made for a reply ends at the TOT, on an audio fault (the error
/// path: nobody would hear it), on inhibit and on shutdown, and the reply is not retried.
#[test]
fn a_reply_key_up_is_released_at_the_tot_on_a_fault_on_inhibit_and_on_shutdown() {
    let tot = |c: &mut KeyingConfig| {
        reply_config(c);
        c.tot = ms(1000);
    };
    let mut s = Sim::with(tot);
    s.input(0, Reply(ms(5000)));
    s.run_to(30_000);
    assert_eq!(
        s.take(),
        vec![
            (0, PttOn),
            (100, TxAudioOpen),
            (100, ReplyStart),
            (1000, ReplyDropped),
            (1000, PttOff(Off::TimeOut)),
            (1000, TotFired)
        ]
    );

    let mut s = Sim::with(reply_config);
    s.input(0, Reply(ms(5000)));
    s.input(300, AudioFault(true));
    s.run_to(30_000);
    assert_eq!(
        s.take(),
        vec![(0, PttOn), (100, TxAudioOpen), (100, ReplyStart), (300, ReplyDropped), (300, PttOff(Off::AudioFault))]
    );
    // While the fault lasts a reply does not key.
    s.input(31_000, Reply(ms(100)));
    s.run_to(60_000);
    assert!(s.take().iter().all(|(_, e)| *e != PttOn));

    let mut s = Sim::with(reply_config);
    s.input(0, Reply(ms(5000)));
    s.input(50, Inhibit(true));
    s.input(200, Inhibit(false));
    s.run_to(30_000);
    assert_eq!(
        s.take(),
        vec![
            (0, PttOn),
            (50, InhibitChanged(true)),
            (50, ReplyDropped),
            (50, PttOff(Off::Inhibited)),
            (200, InhibitChanged(false))
        ]
    );

    let mut s = Sim::with(reply_config);
    s.input(0, Reply(ms(5000)));
    s.input(400, Shutdown);
    s.run_to(30_000);
    assert_eq!(
        s.take(),
        vec![(0, PttOn), (100, TxAudioOpen), (100, ReplyStart), (400, ReplyDropped), (400, PttOff(Off::Shutdown))]
    );
    s.input(31_000, Reply(ms(100)));
    assert_eq!(s.take(), vec![(31_000, TxBlocked(Block::ShutDown))]);
    assert!(!s.k.ptt());
}

#[test]
fn a_reply_is_refused_while_inhibited_or_locked_out_and_dropped_after_waiting_too_long() {
    let mut s = Sim::with(reply_config);
    s.input(0, Inhibit(true));
    s.input(10, Reply(ms(100)));
    s.run_to(100);
    assert_eq!(s.take(), vec![(0, InhibitChanged(true)), (10, TxBlocked(Block::Inhibited)), (10, ReplyDropped)]);

    let mut s = Sim::with(reply_config);
    s.input(0, Cor(true));
    s.input(100, Reply(ms(100)));
    s.run_to(100 + REPLY_MAX_WAIT.as_millis() as u64 + 1000);
    let t = 100 + REPLY_MAX_WAIT.as_millis() as u64;
    assert_eq!(s.take(), vec![(20, RxOpen), (t, ReplyDropped)]);
    s.input(t + 2000, Cor(false));
    s.run_to(t + 10_000);
    assert!(s.take().iter().all(|(_, e)| *e != PttOn), "a dropped reply does not key later");
}

// ---- CTCSS tail (reverse burst) ----

fn tail_config(c: &mut KeyingConfig) {
    c.tx_delay = ms(100);
    c.tx_hang = ms(1000);
    c.ctcss_tail = ms(150);
}

#[test]
fn an_ordinary_end_holds_ptt_for_the_tail_then_unkeys_with_its_reason() {
    let mut s = Sim::with(tail_config);
    s.input(0, TxRequest(true));
    s.input(2000, TxRequest(false));
    s.run_to(5000);
    assert_eq!(s.take(), vec![(0, PttOn), (100, TxAudioOpen), (3000, TailStart), (3150, PttOff(Off::HangExpired))]);
    assert!(!s.k.ptt() && s.k.poll_timeout().is_none());
    // A reply-only key-up too.
    s.input(6000, Reply(ms(300)));
    s.run_to(9000);
    assert_eq!(
        s.take(),
        vec![(6000, PttOn), (6100, TxAudioOpen), (6100, ReplyStart), (6400, TailStart), (6550, PttOff(Off::ReplyDone))]
    );
}

/// Radio safety: the tail extends keying, so shutdown, the TOT, an audio fault (the error
/// path), inhibit and the no-audio guard all unkey at once, tail or not.
#[test]
fn the_tail_never_delays_a_safety_unkey() {
    // Shutdown in the tail.
    let mut s = Sim::with(tail_config);
    s.input(0, TxRequest(true));
    s.input(500, TxRequest(false));
    s.input(1550, Shutdown);
    assert_eq!(s.take(), vec![(0, PttOn), (100, TxAudioOpen), (1500, TailStart), (1550, PttOff(Off::Shutdown))]);
    // The TOT runs through the tail: it ends there, at the TOT.
    let mut s = Sim::with(|c| {
        tail_config(c);
        c.tot = ms(1550);
    });
    s.input(0, TxRequest(true));
    s.input(500, TxRequest(false));
    s.run_to(5000);
    assert_eq!(
        s.take(),
        vec![(0, PttOn), (100, TxAudioOpen), (1500, TailStart), (1550, PttOff(Off::TimeOut)), (1550, TotFired)]
    );
    // An audio fault and inhibit in the tail.
    for (input, reason) in [(AudioFault(true), Off::AudioFault), (Inhibit(true), Off::Inhibited)] {
        let mut s = Sim::with(tail_config);
        s.input(0, TxRequest(true));
        s.input(500, TxRequest(false));
        s.input(1520, input);
        let got = s.take();
        assert!(got.contains(&(1520, PttOff(reason))), "{got:?}");
        assert!(!s.k.ptt());
    }
    // The no-audio guard unkeys without a tail.
    let mut s = Sim::with(|c| {
        tail_config(c);
        c.no_audio = ms(3000);
    });
    s.input(0, TxRequest(true));
    s.run_to(5000);
    assert_eq!(s.take(), vec![(0, PttOn), (100, TxAudioOpen), (3000, PttOff(Off::NoAudio))]);
}

#[test]
fn a_talker_during_the_tail_keys_afresh_after_it() {
    let mut s = Sim::with(tail_config);
    s.input(0, TxRequest(true));
    s.input(500, TxRequest(false));
    s.input(1600, TxRequest(true));
    s.run_to(3000);
    assert_eq!(
        s.take(),
        vec![
            (0, PttOn),
            (100, TxAudioOpen),
            (1500, TailStart),
            (1650, PttOff(Off::HangExpired)),
            (1650, PttOn),
            (1750, TxAudioOpen)
        ]
    );
}
