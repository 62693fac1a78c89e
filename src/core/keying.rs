//! Radio keying, one instance per radio port.
//!
//! Two independent halves share one timer table:
//! - RX: the COR line (or VOX level) is debounced, checked against anti-kerchunk, held open
//!   through squelch hang, cut off when it flaps or sticks, and turned into `RxOpen`/`RxClose`
//!   ("send this radio's received audio into the channel").
//! - TX: the channel's talker state (`TxRequest`) keys PTT, opens audio after the TX delay,
//!   holds PTT through the hang time, and the time-out timer (TOT) caps every key-up.
//!
//! - No-audio guard: PTT is never on longer than `no_audio` after the last channel audio
//!   ([`Input::ChannelAudio`]) or the start of the key-up, whatever keyed it for the channel
//!   (a local COR, a hub or floor message, a stuck peer, a bug). It ends with
//!   `PttOff(NoAudio)`; a request that is still there then waits, unkeyed, until audio comes (a
//!   fresh key-up) or the request ends. The TX hang is guarded too: it counts from the last
//!   audio, so a hang shorter than `no_audio` (the config requires it) is never cut after a
//!   talker that spoke. The box's own audio is not dead air: the station ID on air suspends
//!   the guard and its end restarts it, and a key-up made only for the ID ends with the ID.
//!   A remote PTT is not guarded (it carries no channel audio by design and has its own
//!   maximum); the guard counts again from the moment it ends.
//!
//! - Remote PTT ([`Input::RemotePtt`]): keys for at most its maximum, TX hang included: when
//!   it ends (released, or at its maximum) PTT goes off at once unless a channel talker still
//!   holds it. TX inhibit and the TOT cancel it for good; a new command is needed to key again.
//!
//! - Station ID (optional, [`Keying::with_station_id`]): when the CW ID is due the core says
//!   so (`IdStart`) while channel audio is on air, or keys the radio just for the ID through
//!   the same TX path (TX delay, TOT, inhibit, lockout and simplex busy all apply) and unkeys
//!   when the ID is over.
//!
//! - Reply (a DTMF command's acknowledgement, [`Input::Reply`]): the box's own short audio,
//!   keyed the way the station ID is: never while a channel talker holds the radio (it waits
//!   for the TX hang, or keys on its own once the channel is idle), never while the radio
//!   receives (simplex), is inhibited or locked out, through the TX delay and under the TOT;
//!   a key-up made only for it ends with it (`PttOff(ReplyDone)`), or at once on an audio
//!   fault. One that cannot go out within [`REPLY_MAX_WAIT`] is dropped (`ReplyDropped`); a
//!   TOT, inhibit, fault or shutdown drops it too.
//!
//! - CTCSS tail (`ctcss_tail`, for a port that encodes CTCSS): an ordinary end of a key-up
//!   (hang over, ID or reply done, remote PTT released) keeps PTT on this much longer for the
//!   reverse burst (`TailStart`; the transmit path turns the tone by 180°, receivers close
//!   their squelch before the carrier drops), then `PttOff` with the same reason. A TOT,
//!   inhibit, audio fault, the no-audio guard or shutdown unkeys at once, tail or not, and the
//!   TOT keeps running through the tail. A request that comes during the tail keys afresh
//!   after it.
//!
//! Sans-IO: time only comes in with `handle_input`/`handle_timeout`; the driver drains
//! `poll_event` after each call and sleeps until `poll_timeout`. Timer handlers work at the
//! timer's own deadline, not the (possibly late) call time, so a late driver sees exactly the
//! same behaviour as a punctual one, and PTT never outlives the TOT.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::timers::{TimerId, Timers};
use crate::dsp::cw::{IdDue, IdTimer};

/// How long a reply may wait for the radio (a busy channel, a receiving simplex radio) before
/// it is dropped: an acknowledgement heard much later means nothing.
pub const REPLY_MAX_WAIT: Duration = Duration::from_secs(20);

/// Keying timers and behaviour for one radio port.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyingConfig {
    /// A new COR level counts only after it has been stable this long.
    pub cor_debounce: Duration,
    /// Anti-kerchunk: COR must stay open this long before RX opens (0 = at once).
    pub min_keyup: Duration,
    /// RX stays open this long after COR drops, so pauses between words do not close it.
    pub squelch_hang: Duration,
    /// More than `flap_max_changes` debounced COR changes within `flap_window` is flapping.
    pub flap_window: Duration,
    pub flap_max_changes: u32,
    /// Stuck-COR guard: RX closes after being open this long, until COR is seen closed.
    pub rx_timeout: Duration,
    /// PTT is up this long before audio is sent, so the transmitter is on air.
    pub tx_delay: Duration,
    /// PTT is held this long after the channel goes idle.
    pub tx_hang: Duration,
    /// Time-out timer: PTT is never on longer than this continuously.
    pub tot: Duration,
    /// No-audio guard: PTT goes off this long after the last channel audio (see module docs).
    pub no_audio: Duration,
    /// Full duplex: COR is honoured while transmitting. Simplex ignores it (own carrier).
    pub duplex: bool,
    /// When set, COR comes from audio level ([`Input::VoxLevel`]) instead of a line.
    pub vox: Option<VoxConfig>,
    /// When set, the CTCSS decoder ([`Input::Ctcss`]) is a COR source, alone or combined with
    /// the line or VOX.
    pub ctcss: Option<CtcssCor>,
    /// CTCSS reverse burst: PTT held this long after an ordinary end of a key-up (zero: none).
    pub ctcss_tail: Duration,
}

/// How a CTCSS decoder counts as COR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtcssCor {
    /// The tone alone is COR (no line, no VOX).
    Only,
    /// Open while both the tone and the line (or VOX) are open: a shared channel where the
    /// radio's squelch opens on every carrier but only one group's tone counts.
    Both,
    /// Open while either is.
    Either,
}

impl Default for KeyingConfig {
    fn default() -> Self {
        let ms = Duration::from_millis;
        Self {
            cor_debounce: ms(20),
            min_keyup: ms(0),
            squelch_hang: ms(300),
            flap_window: ms(2000),
            flap_max_changes: 10,
            rx_timeout: ms(180_000),
            tx_delay: ms(500),
            tx_hang: ms(2000),
            tot: ms(180_000),
            no_audio: ms(5000),
            duplex: false,
            vox: None,
            ctcss: None,
            ctcss_tail: Duration::ZERO,
        }
    }
}

/// Station identification: how often, and how long one ID keeps the transmitter busy.
#[derive(Debug, Clone, PartialEq)]
pub struct StationIdConfig {
    /// Longest time between IDs while the radio is in use (see [`IdTimer`]).
    pub interval: Duration,
    /// How long before `interval` is up an ID may already ride on a transmission.
    pub early: Duration,
    /// How long the ID's audio takes (the Morse at its speed, plus a short tail): an ID-only
    /// key-up ends this long after its audio starts.
    pub length: Duration,
}

/// VOX thresholds with hysteresis: opens at `>= open_dbfs`, closes below `close_dbfs`,
/// and holds its level in between.
#[derive(Debug, Clone, PartialEq)]
pub struct VoxConfig {
    pub open_dbfs: f32,
    pub close_dbfs: f32,
}

impl Default for VoxConfig {
    fn default() -> Self {
        Self { open_dbfs: -30.0, close_dbfs: -36.0 }
    }
}

impl VoxConfig {
    /// The COR level an audio level means: open, closed, or `None` between the thresholds
    /// (hold the last). NaN compares false both ways, so it holds too. Only a change of this
    /// can change the keying core's VOX, so a driver needs to send nothing else.
    pub fn level(&self, dbfs: f32) -> Option<bool> {
        if dbfs >= self.open_dbfs {
            Some(true)
        } else if dbfs < self.close_dbfs {
            Some(false)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Input {
    /// Logical COR level from a line (true = carrier present). Ignored when VOX is configured.
    Cor(bool),
    /// Audio level of one capture frame in dBFS. Only used when VOX is configured.
    VoxLevel(f32),
    /// The CTCSS decoder heard (true) or lost (false) the configured tone. Only used when
    /// `ctcss` is configured.
    Ctcss(bool),
    /// The channel has (true) or no longer has (false) a talker for this radio.
    /// Repeating `true` while blocked reports the block again; otherwise repeats do nothing.
    TxRequest(bool),
    /// Remote PTT (fleet command): `Some(max)` keys for at most `max` from now, TX hang
    /// included (`PttOff(RemoteEnd)` then, unless a channel talker still holds PTT); `None`
    /// releases it the same way. Refused with `TxBlocked` (and forgotten) while inhibited,
    /// locked out or shut down; while receiving on simplex it waits, its maximum running.
    RemotePtt(Option<Duration>),
    /// Channel audio for this radio arrived (a frame, or an open carrier standing in for one):
    /// feeds the no-audio guard. Send it at least every `no_audio / 4` while audio flows.
    ChannelAudio,
    /// TX inhibit (hardware switch or remote command). Repeating the current value does nothing.
    Inhibit(bool),
    /// The transmit audio path cannot (true) or can again (false) play audio, e.g. its
    /// playback device is lost. A key-up made only for the station ID ends at once and no new
    /// one starts meanwhile: an ID nobody hears is only dead carrier.
    AudioFault(bool),
    /// Send a reply of this length (audio the driver plays when `ReplyStart` comes): see the
    /// module docs. A reply asked for while one waits or sounds replaces the waiting one and
    /// is dropped while one sounds.
    Reply(Duration),
    /// Release everything for good; every later input is ignored.
    Shutdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Received audio starts going into the channel.
    RxOpen,
    /// Received audio stops going into the channel.
    RxClose,
    /// COR dropped before `min_keyup`; that key-up never opened RX.
    KerchunkIgnored,
    /// COR is chattering; RX is closed and COR ignored until it is quiet for a flap window.
    FlapSuppressed,
    /// COR was quiet for a whole flap window; it is honoured again.
    FlapCleared,
    /// RX was open for `rx_timeout` (stuck COR); closed until COR is seen closed.
    RxTimeout,
    /// PTT output on (start of a key-up; the TOT starts counting).
    PttOn,
    /// TX delay over: send channel audio to the radio.
    TxAudioOpen,
    /// PTT output off (also ends TX audio).
    PttOff(PttOffReason),
    /// The time-out timer cut the key-up (follows `PttOff(TimeOut)`). If the channel still had
    /// a talker, the port is now locked out until the channel goes idle.
    TotFired,
    /// The channel went idle, so the TOT lockout is over.
    LockoutCleared,
    /// A TX request was not keyed. `Busy` requests key later, when RX closes.
    TxBlocked(TxBlockReason),
    /// TX inhibit switched on or off.
    InhibitChanged(bool),
    /// Send the station ID now, mixed into the transmit audio (PTT is on and TX audio open).
    IdStart,
    /// Play the reply now (PTT is on and TX audio open); it lasts the length it was asked with.
    ReplyStart,
    /// The key-up is ending: PTT stays on for the CTCSS tail (reverse burst), then `PttOff`.
    TailStart,
    /// A reply was given up (it waited [`REPLY_MAX_WAIT`], or a TOT, inhibit, fault or
    /// shutdown ended its key-up).
    ReplyDropped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PttOffReason {
    /// The channel stayed idle for the whole hang time.
    HangExpired,
    /// The time-out timer fired.
    TimeOut,
    /// TX inhibit switched on.
    Inhibited,
    /// The port is shutting down.
    Shutdown,
    /// A key-up made only for the station ID is over.
    IdDone,
    /// A key-up made only for the station ID ended because the audio path failed.
    AudioFault,
    /// No channel audio for the no-audio guard's time.
    NoAudio,
    /// A remote PTT was released or reached its maximum, and no channel talker holds PTT.
    RemoteEnd,
    /// A key-up made only for a reply is over.
    ReplyDone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxBlockReason {
    Inhibited,
    /// Locked out after a TOT, until the channel goes idle.
    LockedOut,
    /// Simplex and this radio is receiving; keys when RX closes if still requested.
    Busy,
    ShutDown,
    /// The no-audio guard unkeyed this channel request; it keys again when channel audio
    /// comes.
    NoAudio,
}

/// Keying deadlines. The order of `ALL` breaks ties between deadlines at the same instant:
/// the TOT and the TX hang go first, so nothing is ever opened on a key-up that ends now,
/// and a debounced COR change goes before the squelch hang, so COR coming back exactly at
/// the end of the hang continues the same RX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Tot,
    TxHang,
    TxDelay,
    IdEnd,
    Id,
    Debounce,
    Keyup,
    SquelchHang,
    RxTimeout,
    FlapClear,
    NoAudio,
    RemoteEnd,
    ReplyEnd,
    ReplyExpire,
    TailEnd,
}

const TIMER_COUNT: usize = 15;

impl TimerId for Timer {
    const ALL: &'static [Self] = &[
        Timer::Tot,
        Timer::TxHang,
        Timer::TxDelay,
        Timer::IdEnd,
        Timer::Id,
        Timer::Debounce,
        Timer::Keyup,
        Timer::SquelchHang,
        Timer::RxTimeout,
        Timer::FlapClear,
        Timer::NoAudio,
        Timer::RemoteEnd,
        Timer::ReplyEnd,
        Timer::ReplyExpire,
        Timer::TailEnd,
    ];
    fn index(self) -> usize {
        self as usize
    }
}

/// Receive path state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rx {
    Closed,
    /// COR is open but not yet for `min_keyup` (anti-kerchunk).
    Qualifying,
    Open,
    /// COR closed, RX still open for the squelch hang.
    Hang,
}

/// Transmit path state. PTT is on in `Keyed` and `Hang`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tx {
    Off,
    Keyed,
    /// The channel went idle; PTT held for the hang time.
    Hang,
    /// The key-up ends: PTT held for the CTCSS tail (reverse burst), no channel audio.
    Tail,
}

/// Where the station ID is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdPhase {
    /// Nothing to do until the [`IdTimer`] says so.
    Idle,
    /// Due and not on air yet: waiting for TX audio (TX delay) or for a block to clear.
    Wanted,
    /// Its audio is on air until `Timer::IdEnd`.
    Sending,
}

/// Where a reply is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyPhase {
    Idle,
    /// Asked for, not on air yet: waiting for the TX delay, the channel or a block to clear.
    Wanted(Duration),
    /// Its audio is on air until `Timer::ReplyEnd`.
    Sending,
}

#[derive(Debug, Clone)]
struct StationId {
    config: StationIdConfig,
    timer: IdTimer,
    phase: IdPhase,
}

/// The keying state machine of one radio port. See the module docs.
#[derive(Debug, Clone)]
pub struct Keying {
    config: KeyingConfig,
    timers: Timers<Timer, TIMER_COUNT>,
    events: VecDeque<Event>,
    /// Latest time seen; earlier times are clamped to it.
    last_now: Option<Instant>,
    shut_down: bool,

    /// COR level before debounce (after VOX hysteresis and the CTCSS combination).
    raw_cor: bool,
    /// The line's (or VOX's) level, and the CTCSS decoder's, before they are combined.
    line_cor: bool,
    ctcss_cor: bool,
    /// Debounced COR level.
    cor: bool,
    rx: Rx,
    /// Times of recent debounced COR changes, for flap detection.
    flap_changes: VecDeque<Instant>,
    flapping: bool,
    /// RX timed out with COR open; RX stays closed until COR is seen closed.
    stuck: bool,

    tx_request: bool,
    tx: Tx,
    tx_audio: bool,
    /// Start of the current key-up: the TOT origin.
    ptt_since: Option<Instant>,
    locked_out: bool,
    inhibited: bool,
    /// The no-audio guard ended the key-up of the current channel request; it waits for audio.
    silent: bool,
    /// Where the no-audio guard counts from: the last channel audio, key-up, end of the ID or
    /// end of a remote PTT.
    audio_at: Option<Instant>,
    /// A remote PTT is active (until `Timer::RemoteEnd`).
    remote: bool,

    id: Option<StationId>,
    audio_fault: bool,
    reply: ReplyPhase,
    /// Why the key-up in its CTCSS tail ends (reported when the tail is over).
    tail_reason: Option<PttOffReason>,
}

impl Keying {
    pub fn new(config: KeyingConfig) -> Self {
        Self {
            config,
            timers: Timers::default(),
            events: VecDeque::new(),
            last_now: None,
            shut_down: false,
            raw_cor: false,
            line_cor: false,
            ctcss_cor: false,
            cor: false,
            rx: Rx::Closed,
            flap_changes: VecDeque::new(),
            flapping: false,
            stuck: false,
            tx_request: false,
            tx: Tx::Off,
            tx_audio: false,
            ptt_since: None,
            locked_out: false,
            inhibited: false,
            silent: false,
            audio_at: None,
            remote: false,
            id: None,
            audio_fault: false,
            reply: ReplyPhase::Idle,
            tail_reason: None,
        }
    }

    /// Send a station ID at `config.interval` while the radio is in use. `early` is capped at
    /// half the interval, so a long over carries an ID at most twice an interval, not back to
    /// back.
    pub fn with_station_id(mut self, config: StationIdConfig) -> Self {
        let timer = IdTimer::new(config.interval, config.early.min(config.interval / 2));
        self.id = Some(StationId { config, timer, phase: IdPhase::Idle });
        self
    }

    pub fn config(&self) -> &KeyingConfig {
        &self.config
    }

    /// Feed one input at `now`. Timers that expired by `now` are handled first, at their own
    /// deadlines, so a late call can never extend a key-up past the TOT.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        let now = self.clamp(now);
        if self.shut_down {
            if matches!(input, Input::TxRequest(true) | Input::RemotePtt(Some(_)) | Input::Reply(_)) {
                self.emit(Event::TxBlocked(TxBlockReason::ShutDown));
            }
            return;
        }
        self.run_timers(now);
        match input {
            Input::Cor(level) => {
                if self.config.vox.is_none() {
                    self.line_cor = level;
                    self.combine_cor(now);
                }
            }
            Input::VoxLevel(dbfs) => {
                if let Some(vox) = &self.config.vox {
                    self.line_cor = vox.level(dbfs).unwrap_or(self.line_cor);
                    self.combine_cor(now);
                }
            }
            Input::Ctcss(open) => {
                if self.config.ctcss.is_some() {
                    self.ctcss_cor = open;
                    self.combine_cor(now);
                }
            }
            Input::TxRequest(on) => self.on_tx_request(now, on),
            Input::RemotePtt(max) => self.on_remote_ptt(now, max),
            Input::ChannelAudio => self.on_channel_audio(now),
            Input::Inhibit(on) => self.on_inhibit(now, on),
            Input::AudioFault(on) => self.on_audio_fault(now, on),
            Input::Reply(length) => self.on_reply(now, length),
            Input::Shutdown => self.shutdown(now),
        }
        self.update_id(now);
        self.update_reply(now);
        self.update_guard(now);
        // Zero-length timers started by this input are due now, not on the next call.
        self.run_timers(now);
    }

    /// Handle every timer that has expired by `now`, in deadline order.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clamp(now);
        if !self.shut_down {
            self.run_timers(now);
        }
    }

    /// The earliest running deadline; call `handle_timeout` then. `None` when nothing runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Next queued event, oldest first. Drain after every `handle_*` call.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// PTT output level.
    pub fn ptt(&self) -> bool {
        self.tx != Tx::Off
    }

    /// Channel audio goes to the radio (PTT on and TX delay over).
    pub fn tx_audio(&self) -> bool {
        self.tx_audio
    }

    /// Received audio goes into the channel (RX open, including squelch hang).
    pub fn rx_active(&self) -> bool {
        matches!(self.rx, Rx::Open | Rx::Hang)
    }

    /// Locked out after a TOT until the channel goes idle.
    pub fn locked_out(&self) -> bool {
        self.locked_out
    }

    pub fn inhibited(&self) -> bool {
        self.inhibited
    }

    /// The no-audio guard unkeyed the current channel request (it keys again when audio comes).
    pub fn silent(&self) -> bool {
        self.silent
    }

    /// A remote PTT is active (it may still wait for RX to close on simplex).
    pub fn remote_ptt(&self) -> bool {
        self.remote
    }

    /// Time left before the TOT cuts the current key-up; `None` when PTT is off.
    pub fn tot_remaining(&self, now: Instant) -> Option<Duration> {
        let now = self.last_now.map_or(now, |last| now.max(last));
        self.timers.get(Timer::Tot).map(|at| at.saturating_duration_since(now))
    }

    /// When the current key-up started (the TOT origin); `None` when PTT is off.
    pub fn ptt_since(&self) -> Option<Instant> {
        self.ptt_since
    }

    /// Debounced COR level (after VOX), whether or not it is honoured right now.
    pub fn cor(&self) -> bool {
        self.cor
    }

    pub fn is_shut_down(&self) -> bool {
        self.shut_down
    }

    /// A station ID is due and not yet on air (waiting for TX audio or for a block to clear).
    pub fn id_wanted(&self) -> bool {
        self.id.as_ref().is_some_and(|id| id.phase == IdPhase::Wanted)
    }

    /// The station ID's audio is on air.
    pub fn id_sending(&self) -> bool {
        self.id.as_ref().is_some_and(|id| id.phase == IdPhase::Sending)
    }

    /// PTT is on for the CTCSS tail only (reverse burst).
    pub fn in_tail(&self) -> bool {
        self.tx == Tx::Tail
    }

    /// A reply's audio is on air.
    pub fn reply_sending(&self) -> bool {
        self.reply == ReplyPhase::Sending
    }

    /// A reply waits to go on air.
    pub fn reply_wanted(&self) -> bool {
        matches!(self.reply, ReplyPhase::Wanted(_))
    }

    fn emit(&mut self, event: Event) {
        self.events.push_back(event);
    }

    fn clamp(&mut self, now: Instant) -> Instant {
        let now = self.last_now.map_or(now, |last| now.max(last));
        self.last_now = Some(now);
        now
    }

    /// Start `timer` to expire `d` after `t`. A duration too large to represent fires at
    /// once: the safe side for the TOT, and harmless for the others.
    fn start(&mut self, timer: Timer, t: Instant, d: Duration) {
        self.timers.set(timer, t.checked_add(d).unwrap_or(t));
    }

    fn run_timers(&mut self, now: Instant) {
        while let Some((timer, at)) = self.timers.pop_expired(now) {
            self.on_timer(timer, at);
        }
    }

    fn on_timer(&mut self, timer: Timer, at: Instant) {
        match timer {
            Timer::Debounce => {
                self.cor = self.raw_cor;
                self.on_cor_change(at);
            }
            // COR held long enough: not a kerchunk.
            Timer::Keyup => self.open_rx(at),
            Timer::SquelchHang => self.close_rx(at),
            Timer::RxTimeout => {
                self.emit(Event::RxTimeout);
                // In squelch hang COR is already closed, so nothing is stuck.
                self.stuck = self.cor;
                self.close_rx(at);
            }
            Timer::FlapClear => {
                self.flapping = false;
                self.flap_changes.clear();
                self.emit(Event::FlapCleared);
                if self.cor {
                    self.cor_opened(at);
                }
            }
            Timer::TxDelay => {
                if self.ptt() {
                    self.tx_audio = true;
                    self.emit(Event::TxAudioOpen);
                }
            }
            Timer::TxHang if self.id_sending() || self.reply_sending() => {
                // The over is done but the ID is not: PTT stays up for the rest of it, and
                // the ID covers the traffic it was mixed into.
                self.tx = Tx::Keyed;
                self.id_traffic(at, false);
            }
            Timer::TxHang => self.end_keyup(at, PttOffReason::HangExpired),
            Timer::Tot => {
                // Still a talker: lock out until the channel goes idle. Set before unkeying
                // so nothing triggered by the unkey can key again.
                self.locked_out = self.tx_request;
                self.unkey(at, PttOffReason::TimeOut);
            }
            Timer::IdEnd => {
                if let Some(id) = &mut self.id {
                    id.phase = IdPhase::Idle;
                    id.timer.id_sent(at);
                }
                // The ID was the last audio on air: the guard counts from its end.
                self.audio_at = Some(at);
                // A key-up made only for the ID (no talker, not in hang) ends with it, unless a
                // reply follows on it.
                if self.tx == Tx::Keyed && !self.wants_tx() && self.reply == ReplyPhase::Idle {
                    self.end_keyup(at, PttOffReason::IdDone);
                }
            }
            // Only a wake-up: `update_id` below decides.
            Timer::Id => {}
            // `update_guard` keeps this timer running only while the key-up is guarded.
            Timer::NoAudio => {
                self.silent = self.tx_request;
                self.unkey(at, PttOffReason::NoAudio);
            }
            Timer::RemoteEnd => self.end_remote(at),
            Timer::ReplyEnd => {
                self.reply = ReplyPhase::Idle;
                self.audio_at = Some(at);
                if self.tx == Tx::Keyed && !self.wants_tx() && !self.id_sending() && !self.id_wanted() {
                    self.end_keyup(at, PttOffReason::ReplyDone);
                }
            }
            Timer::TailEnd => {
                let reason = self.tail_reason.take().unwrap_or(PttOffReason::HangExpired);
                // A remote PTT that came during the tail keys afresh after it.
                let remote = self.timers.get(Timer::RemoteEnd).filter(|_| self.remote);
                self.unkey(at, reason);
                if let Some(end) = remote {
                    self.remote = true;
                    self.timers.set(Timer::RemoteEnd, end);
                }
                self.maybe_key(at);
            }
            Timer::ReplyExpire => {
                if self.reply_wanted() {
                    self.drop_reply();
                }
            }
        }
        self.update_id(at);
        self.update_reply(at);
        self.update_guard(at);
    }

    // ---- RX ----

    /// The COR level the configured sources make together.
    fn combine_cor(&mut self, now: Instant) {
        let level = match self.config.ctcss {
            None => self.line_cor,
            Some(CtcssCor::Only) => self.ctcss_cor,
            Some(CtcssCor::Both) => self.line_cor && self.ctcss_cor,
            Some(CtcssCor::Either) => self.line_cor || self.ctcss_cor,
        };
        self.set_raw_cor(now, level);
    }

    fn set_raw_cor(&mut self, now: Instant, level: bool) {
        if level == self.raw_cor {
            return;
        }
        self.raw_cor = level;
        if level == self.cor {
            // Bounced back before it counted.
            self.timers.stop(Timer::Debounce);
        } else {
            self.start(Timer::Debounce, now, self.config.cor_debounce);
        }
    }

    /// Simplex hears its own transmitter: COR means nothing while PTT is on.
    fn cor_ignored(&self) -> bool {
        !self.config.duplex && self.ptt()
    }

    /// The debounced COR level changed at `t`.
    fn on_cor_change(&mut self, t: Instant) {
        if !self.cor {
            // A stuck COR recovers once it is seen closed, whatever else is going on.
            self.stuck = false;
        }
        if self.cor_ignored() {
            return;
        }
        if self.flapping {
            // Still chattering: the quiet window starts again.
            self.start(Timer::FlapClear, t, self.config.flap_window);
            return;
        }
        let window = self.config.flap_window;
        while let Some(&first) = self.flap_changes.front() {
            if t.saturating_duration_since(first) >= window {
                self.flap_changes.pop_front();
            } else {
                break;
            }
        }
        self.flap_changes.push_back(t);
        if self.flap_changes.len() > self.config.flap_max_changes as usize {
            self.flapping = true;
            self.flap_changes.clear();
            self.emit(Event::FlapSuppressed);
            self.close_rx(t);
            self.start(Timer::FlapClear, t, window);
            return;
        }
        if self.cor {
            self.cor_opened(t);
        } else {
            self.cor_closed(t);
        }
    }

    /// Debounced COR is open (a change, or re-evaluated after PTT or flapping ends).
    fn cor_opened(&mut self, t: Instant) {
        if self.cor_ignored() || self.flapping || self.stuck {
            return;
        }
        match self.rx {
            Rx::Hang => {
                // Back within the squelch hang: the same RX goes on.
                self.timers.stop(Timer::SquelchHang);
                self.rx = Rx::Open;
            }
            Rx::Closed if self.config.min_keyup.is_zero() => self.open_rx(t),
            Rx::Closed => {
                self.rx = Rx::Qualifying;
                self.start(Timer::Keyup, t, self.config.min_keyup);
            }
            Rx::Qualifying | Rx::Open => {}
        }
    }

    fn cor_closed(&mut self, t: Instant) {
        match self.rx {
            Rx::Qualifying => {
                self.timers.stop(Timer::Keyup);
                self.rx = Rx::Closed;
                self.emit(Event::KerchunkIgnored);
            }
            Rx::Open => {
                self.rx = Rx::Hang;
                self.start(Timer::SquelchHang, t, self.config.squelch_hang);
            }
            Rx::Closed | Rx::Hang => {}
        }
    }

    fn open_rx(&mut self, t: Instant) {
        self.rx = Rx::Open;
        self.emit(Event::RxOpen);
        self.start(Timer::RxTimeout, t, self.config.rx_timeout);
    }

    /// Close RX from any state. A simplex TX request that waited for it keys now.
    fn close_rx(&mut self, t: Instant) {
        self.timers.stop(Timer::Keyup);
        self.timers.stop(Timer::SquelchHang);
        self.timers.stop(Timer::RxTimeout);
        let was_open = self.rx_active();
        self.rx = Rx::Closed;
        if was_open {
            self.emit(Event::RxClose);
            self.maybe_key(t);
        }
    }

    // ---- TX ----

    /// Simplex cannot transmit over a station it is receiving.
    fn busy(&self) -> bool {
        !self.config.duplex && self.rx_active()
    }

    /// A channel talker or a remote PTT wants the transmitter.
    fn wants_tx(&self) -> bool {
        self.tx_request || self.remote
    }

    fn on_tx_request(&mut self, now: Instant, on: bool) {
        self.tx_request = on;
        if on {
            match self.tx {
                Tx::Hang => {
                    // Same key-up goes on: no new TX delay, TOT keeps its origin, and the
                    // no-audio guard keeps counting from the last audio.
                    self.timers.stop(Timer::TxHang);
                    self.tx = Tx::Keyed;
                }
                // Traffic joins a key-up made for the station ID or a remote PTT.
                Tx::Keyed => self.id_traffic(now, true),
                // Keys afresh when the tail is over.
                Tx::Tail => {}
                // Also for a repeated request (e.g. a new talker while locked out): it is told.
                Tx::Off => {
                    if let Some(reason) = self.block_reason() {
                        self.emit(Event::TxBlocked(reason));
                    } else {
                        self.key(now);
                    }
                }
            }
        } else {
            self.silent = false;
            if self.locked_out {
                self.locked_out = false;
                self.emit(Event::LockoutCleared);
            }
            // A remote PTT holds the key-up on its own; it ends without a hang.
            if self.tx == Tx::Keyed && !self.remote {
                self.tx = Tx::Hang;
                self.start(Timer::TxHang, now, self.config.tx_hang);
            }
        }
    }

    fn on_remote_ptt(&mut self, now: Instant, max: Option<Duration>) {
        let Some(max) = max else {
            if self.remote {
                self.end_remote(now);
            }
            return;
        };
        if let Some(reason @ (TxBlockReason::ShutDown | TxBlockReason::Inhibited | TxBlockReason::LockedOut)) =
            self.block_reason()
        {
            // Refused, not remembered: lifting the block does not key without a new command.
            self.emit(Event::TxBlocked(reason));
            return;
        }
        self.remote = true;
        self.start(Timer::RemoteEnd, now, max);
        match self.tx {
            Tx::Hang => {
                self.timers.stop(Timer::TxHang);
                self.tx = Tx::Keyed;
            }
            Tx::Keyed | Tx::Tail => {}
            Tx::Off if self.busy() => self.emit(Event::TxBlocked(TxBlockReason::Busy)),
            Tx::Off => self.key(now),
        }
    }

    /// The remote PTT is over (released or at its maximum): PTT goes off now, without a hang,
    /// unless a channel talker (not silenced by the guard) still holds it.
    fn end_remote(&mut self, t: Instant) {
        self.remote = false;
        self.timers.stop(Timer::RemoteEnd);
        // The guard counts from here for a talker that takes over.
        self.audio_at = Some(t);
        let talker_holds = self.tx_request && !self.silent;
        if self.tx == Tx::Keyed && !talker_holds {
            self.end_keyup(t, PttOffReason::RemoteEnd);
        }
    }

    fn on_channel_audio(&mut self, now: Instant) {
        // A silenced talker has something to say after all.
        self.silent = false;
        if self.ptt() {
            self.audio_at = Some(now);
        } else {
            // A fresh key-up (TX delay, TOT) for a request the guard had unkeyed, unless blocked.
            self.maybe_key(now);
        }
    }

    /// Run the no-audio guard's timer while the key-up is guarded: PTT on, no remote PTT, no
    /// station ID on air, and not a key-up made only for the ID.
    fn update_guard(&mut self, t: Instant) {
        let guarded = self.ptt()
            && !self.remote
            && !self.id_sending()
            && !self.reply_sending()
            && (self.tx_request || self.tx == Tx::Hang)
            && self.tx != Tx::Tail
            && !self.shut_down;
        match self.audio_at {
            Some(from) if guarded => {
                let at = from.checked_add(self.config.no_audio).unwrap_or(t).max(t);
                self.timers.set(Timer::NoAudio, at);
            }
            _ => self.timers.stop(Timer::NoAudio),
        }
    }

    /// What keeps the transmitter from keying for a request now, if anything.
    pub fn block_reason(&self) -> Option<TxBlockReason> {
        if self.shut_down {
            Some(TxBlockReason::ShutDown)
        } else if self.inhibited {
            Some(TxBlockReason::Inhibited)
        } else if self.locked_out {
            Some(TxBlockReason::LockedOut)
        } else if self.silent && !self.remote {
            Some(TxBlockReason::NoAudio)
        } else if self.busy() {
            Some(TxBlockReason::Busy)
        } else {
            None
        }
    }

    /// Key for a request that was blocked, now that the reason may be gone.
    fn maybe_key(&mut self, t: Instant) {
        if self.wants_tx() && !self.ptt() && self.block_reason().is_none() {
            self.key(t);
        }
    }

    fn key(&mut self, t: Instant) {
        self.tx = Tx::Keyed;
        self.ptt_since = Some(t);
        self.audio_at = Some(t);
        if self.wants_tx() {
            self.id_traffic(t, true);
        }
        self.emit(Event::PttOn);
        self.start(Timer::TxDelay, t, self.config.tx_delay);
        self.start(Timer::Tot, t, self.config.tot);
        if !self.config.duplex && self.rx == Rx::Qualifying {
            // Our own carrier now; a key-up still qualifying never happened.
            self.timers.stop(Timer::Keyup);
            self.rx = Rx::Closed;
        }
    }

    /// An ordinary end of a key-up: through the CTCSS tail when there is one.
    fn end_keyup(&mut self, t: Instant, reason: PttOffReason) {
        if self.config.ctcss_tail.is_zero() || self.tx == Tx::Tail {
            self.unkey(t, reason);
            return;
        }
        self.tx = Tx::Tail;
        self.tx_audio = false;
        self.tail_reason = Some(reason);
        self.timers.stop(Timer::TxDelay);
        self.timers.stop(Timer::TxHang);
        self.timers.stop(Timer::IdEnd);
        self.timers.stop(Timer::NoAudio);
        self.timers.stop(Timer::ReplyEnd);
        self.remote = false;
        self.timers.stop(Timer::RemoteEnd);
        if self.reply_sending() {
            self.drop_reply();
        }
        if let Some(id) = &mut self.id {
            id.timer.set_keyed(t, false);
            if id.phase == IdPhase::Sending {
                id.phase = IdPhase::Idle;
            }
        }
        // The TOT keeps running: the tail never outlasts it.
        self.start(Timer::TailEnd, t, self.config.ctcss_tail);
        self.emit(Event::TailStart);
    }

    fn unkey(&mut self, t: Instant, reason: PttOffReason) {
        self.tx = Tx::Off;
        self.timers.stop(Timer::TailEnd);
        self.tail_reason = None;
        self.tx_audio = false;
        self.ptt_since = None;
        self.timers.stop(Timer::TxDelay);
        self.timers.stop(Timer::TxHang);
        self.timers.stop(Timer::Tot);
        self.timers.stop(Timer::IdEnd);
        self.timers.stop(Timer::NoAudio);
        // Whatever ends a key-up ends a remote PTT with it (TOT, inhibit, shutdown): keying
        // again takes a new command.
        self.remote = false;
        self.timers.stop(Timer::RemoteEnd);
        self.timers.stop(Timer::ReplyEnd);
        let ordinary = matches!(
            reason,
            PttOffReason::HangExpired | PttOffReason::NoAudio | PttOffReason::RemoteEnd | PttOffReason::IdDone
        );
        if self.reply_sending() || (self.reply_wanted() && !ordinary) {
            // Cut short, or its key-up ended by a TOT, inhibit, fault or shutdown: given up.
            self.drop_reply();
        }
        if let Some(id) = &mut self.id {
            id.timer.set_keyed(t, false);
            if reason == PttOffReason::TimeOut && id.phase != IdPhase::Idle {
                // An ID that does not fit in the TOT would key again and again: give it up
                // until the next interval.
                id.timer.id_sent(t);
            }
            if id.phase == IdPhase::Sending {
                // Cut short (inhibit, fault, shutdown): still owed unless given up above.
                id.phase = IdPhase::Idle;
            }
        }
        self.emit(Event::PttOff(reason));
        if reason == PttOffReason::TimeOut {
            self.emit(Event::TotFired);
        }
        // Simplex: COR was ignored while keyed; take it from its current level.
        if !self.config.duplex && !self.shut_down && self.cor {
            self.cor_opened(t);
        }
    }

    fn on_inhibit(&mut self, now: Instant, on: bool) {
        if on == self.inhibited {
            return;
        }
        self.inhibited = on;
        self.emit(Event::InhibitChanged(on));
        if on {
            // A remote PTT waiting for RX to close is cancelled too.
            self.remote = false;
            self.timers.stop(Timer::RemoteEnd);
            if self.ptt() {
                self.unkey(now, PttOffReason::Inhibited);
            }
        } else if self.tx_request && !self.ptt() {
            // A fresh key-up (new TX delay, new TOT), unless something else still blocks it;
            // a request now waiting on RX is told so.
            match self.block_reason() {
                None => self.key(now),
                Some(TxBlockReason::Busy) => self.emit(Event::TxBlocked(TxBlockReason::Busy)),
                Some(_) => {}
            }
        }
    }

    fn on_audio_fault(&mut self, now: Instant, on: bool) {
        self.audio_fault = on;
        let own_only =
            self.tx == Tx::Keyed && !self.wants_tx() && (self.id.is_some() || self.reply != ReplyPhase::Idle);
        if on && (own_only || self.tx == Tx::Tail) {
            self.unkey(now, PttOffReason::AudioFault);
        }
    }

    // ---- station ID ----

    /// The transmitter is (or no longer is) keyed for traffic, as the ID timer counts it.
    fn id_traffic(&mut self, t: Instant, keyed: bool) {
        if let Some(id) = &mut self.id {
            id.timer.set_keyed(t, keyed);
        }
    }

    /// Start, key for, or schedule the station ID, after anything that may change whether
    /// it is due or can go on air.
    fn update_id(&mut self, t: Instant) {
        if self.shut_down {
            return;
        }
        let Some(id) = &mut self.id else { return };
        if id.phase == IdPhase::Sending {
            return;
        }
        self.timers.stop(Timer::Id);
        match id.timer.due(t) {
            None => {
                id.phase = IdPhase::Idle;
                if let Some(at) = id.timer.poll_timeout() {
                    self.timers.set(Timer::Id, at);
                }
            }
            Some(due) => {
                id.phase = IdPhase::Wanted;
                if self.tx_audio && !self.audio_fault {
                    id.phase = IdPhase::Sending;
                    let end = t.checked_add(id.config.length).unwrap_or(t);
                    self.timers.set(Timer::IdEnd, end);
                    self.emit(Event::IdStart);
                } else if due == IdDue::KeyUp && !self.ptt() && !self.audio_fault && self.block_reason().is_none() {
                    self.key(t);
                }
                // Else it waits: for the TX delay (TxDelay re-runs this), or for the block
                // to clear (every input and timer re-runs this).
            }
        }
    }

    // ---- reply ----

    fn on_reply(&mut self, t: Instant, length: Duration) {
        if let Some(reason @ (TxBlockReason::Inhibited | TxBlockReason::LockedOut)) = self.block_reason() {
            self.emit(Event::TxBlocked(reason));
            self.emit(Event::ReplyDropped);
            return;
        }
        if self.reply_sending() {
            self.emit(Event::ReplyDropped);
            return;
        }
        self.reply = ReplyPhase::Wanted(length);
        self.start(Timer::ReplyExpire, t, REPLY_MAX_WAIT);
    }

    fn drop_reply(&mut self) {
        self.reply = ReplyPhase::Idle;
        self.timers.stop(Timer::ReplyEnd);
        self.timers.stop(Timer::ReplyExpire);
        self.emit(Event::ReplyDropped);
    }

    /// Start or key for a wanted reply when the radio is free for it: no channel talker holds
    /// it (a reply never cuts into a talker's over: it waits for the hang, or for the channel
    /// to go idle), the station ID is not sounding, and nothing blocks keying.
    fn update_reply(&mut self, t: Instant) {
        let ReplyPhase::Wanted(length) = self.reply else { return };
        if self.shut_down || self.audio_fault {
            return;
        }
        if self.tx_request || self.id_sending() {
            return;
        }
        if self.tx_audio {
            self.reply = ReplyPhase::Sending;
            self.timers.stop(Timer::ReplyExpire);
            self.start(Timer::ReplyEnd, t, length);
            self.emit(Event::ReplyStart);
        } else if !self.ptt() && self.block_reason().is_none() {
            self.key(t);
        }
    }

    fn shutdown(&mut self, now: Instant) {
        self.shut_down = true;
        if self.reply_wanted() {
            self.drop_reply();
        }
        if self.ptt() {
            self.unkey(now, PttOffReason::Shutdown);
        }
        self.remote = false;
        self.close_rx(now);
        self.timers.stop_all();
    }
}

#[cfg(test)]
mod tests;
