//! A soak of the sans-IO cores in simulated time (issue 14 item 10): keying (one per radio),
//! the router with its floor arbiters, remote peers' floor participants and one jitter buffer
//! per channel, wired as the daemon wires them (`src/daemon/radio_port.rs`, `channels.rs`),
//! driven by seeded random traffic and faults, stepping from one deadline or event to the next.
//! After every step the invariants below are checked; a violation names the seed, the
//! simulated time and the radio or channel, and the same seed replays it exactly.
//!
//! Used by `tests/soak.rs` (10 simulated minutes per seed, in `cargo test`) and
//! `examples/soak.rs` (24 simulated hours, `scripts/soak-sim`).
//!
//! Invariants (per radio, per channel):
//! - TOT: PTT is never keyed longer than the radio's TOT (measured here from the step at which
//!   PTT was seen going on, independently of the core's own `ptt_since`);
//! - inhibit: PTT is never keyed while the radio's inhibit input is on;
//! - hang: PTT is never keyed without the channel asking for it (a talker), except within the
//!   TX hang after the request ended;
//! - no-audio guard: [`Invariants::no_audio_guard`] — see there;
//! - floor: at most one member of a channel believes it holds the floor (ports told `Talk`,
//!   peers' participants `Granted`), and it is the router's holder;
//! - jitter: a channel's jitter buffer is never deeper than its `max_depth`.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use roipd::core::floor::{
    ArbiterConfig, Participant, ParticipantConfig, ParticipantId, ParticipantState, Priority, ToArbiter, ToParticipant,
};
use roipd::core::jitter::{JitterBuffer, JitterConfig, Packet};
use roipd::core::keying::{Event, Input, Keying, KeyingConfig};
use roipd::core::routing::{
    ChannelHost, ChannelId, MediaSource, MediaTarget, PeerId, PortKind, PortSpec, RadioTx, Router, RouterOutput,
    WaitReason,
};

const CHANNELS: usize = 3;
const RADIOS: usize = 4;
/// The desk port (after the radios): dispatch priority, talks on channel 0.
const DESK: usize = RADIOS;
const MAX_PEERS: usize = 6;
const TICK: Duration = Duration::from_millis(20);

/// SplitMix64: the whole run follows from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// Which invariants to check (all of them unless a run turns one off to see what it catches).
#[derive(Debug, Clone)]
pub struct Invariants {
    /// A radio keyed for the channel must unkey when no channel audio reached it for its
    /// keying config's `no_audio` (plus `tx_hang`, `tx_delay` and one tick of slack).
    pub no_audio_guard: bool,
}

impl Default for Invariants {
    fn default() -> Self {
        Self { no_audio_guard: true }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub sim: Duration,
    /// Steps (distinct instants the cores were driven at) and events (random inputs and
    /// faults, media ticks, core outputs handled).
    pub steps: u64,
    pub events: u64,
    pub checks: u64,
    pub key_ups: u64,
    pub tot_fired: u64,
    pub longest_key_up: Duration,
    pub grants: u64,
    pub revokes: u64,
    pub media_packets: u64,
    pub jitter_pushed: u64,
    pub jitter_max_depth_ms: f64,
    pub peers_joined: u64,
}

#[derive(Debug)]
pub struct Violation {
    pub seed: u64,
    pub at: Duration,
    pub what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seed {} at {:.3?} simulated: {}", self.seed, self.at, self.what)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scheduled {
    /// The next random input or fault.
    Random,
    Cor {
        radio: usize,
        on: bool,
    },
    Inhibit {
        radio: usize,
        on: bool,
    },
    AudioFault {
        radio: usize,
        on: bool,
    },
    Desk {
        on: bool,
    },
    PeerPress {
        slot: usize,
        on: bool,
        gen: u64,
    },
    PeerLeave {
        slot: usize,
        gen: u64,
    },
    Mute {
        channel: usize,
        on: bool,
    },
    /// A packet reaches a channel's jitter buffer (network delay applied).
    Arrive {
        channel: usize,
        seq: u16,
        ts: u32,
        marker: bool,
    },
}

struct Radio {
    keying: Keying,
    channel: ChannelId,
    cor: bool,
    inhibit: bool,
    audio_fault: bool,
    /// The channel asks for TX (router's `TxRequest`), and when it stopped asking.
    tx_wanted: bool,
    tx_unwanted_since: Option<Instant>,
    /// When PTT was seen going on (by this harness, not the core).
    keyed_since: Option<Instant>,
    /// Last channel audio sent to this radio's transmit path.
    last_audio: Option<Instant>,
    /// The no-audio guard the radio's config asks for ([`keying_config`]), which the
    /// invariant holds the core to whatever config the core was given.
    no_audio_guard: Duration,
    reported: Option<RadioTx>,
}

struct Peer {
    id: PeerId,
    gen: u64,
    channel: ChannelId,
    member: ParticipantId,
    participant: Participant,
    /// Forged: sends a raw floor request, then nothing (no media, ignores every message).
    forged: bool,
}

struct Stream {
    jitter: JitterBuffer,
    /// Outgoing numbering of the channel's media as its talker sends it.
    seq: u16,
    ts: u32,
    source: Option<MediaSource>,
}

pub struct Sim {
    seed: u64,
    rng: Rng,
    t0: Instant,
    now: Instant,
    router: Router,
    radios: Vec<Radio>,
    /// Ports (radios and the desk) told they may talk on their channel.
    talking: Vec<bool>,
    desk_pressed: bool,
    peers: Vec<Option<Peer>>,
    next_peer: PeerId,
    streams: Vec<Stream>,
    queue: BinaryHeap<Reverse<(Instant, u64, Scheduled)>>,
    order: u64,
    /// A stalled driver: nothing runs before this instant.
    stall_until: Instant,
    next_tick: Instant,
    inv: Invariants,
    report: Report,
}

/// Each radio's keying config, as the soak uses it.
pub fn keying_config(radio: usize) -> KeyingConfig {
    let ms = Duration::from_millis;
    let d = KeyingConfig::default();
    match radio {
        0 => KeyingConfig { tot: ms(60_000), ..d },
        1 => KeyingConfig { duplex: true, tot: ms(30_000), tx_hang: ms(500), ..d },
        2 => KeyingConfig { tot: ms(20_000), tx_delay: ms(0), min_keyup: ms(200), rx_timeout: ms(120_000), ..d },
        // A guard well inside the arbiter's no-media timeout (5 s): a silent floor holder (a
        // forged peer) must not keep this radio keyed until the arbiter revokes it.
        _ => KeyingConfig { tx_hang: ms(0), tx_delay: ms(100), no_audio: ms(1500), ..d },
    }
}

impl Sim {
    pub fn new(seed: u64, inv: Invariants) -> Self {
        Self::with_keying(seed, inv, keying_config)
    }

    /// With other keying configs (e.g. to see that an invariant catches a core without a guard).
    pub fn with_keying(seed: u64, inv: Invariants, core_config: impl Fn(usize) -> KeyingConfig) -> Self {
        let t0 = Instant::now();
        let hosts = (0..CHANNELS)
            .map(|c| {
                ChannelHost::Local(ArbiterConfig {
                    max_talk: Duration::from_secs(90),
                    no_media_timeout: Duration::from_secs(5),
                    queue: c == 1,
                    max_queue: 4,
                })
            })
            .collect();
        let mut ports: Vec<PortSpec> = (0..RADIOS)
            .map(|r| PortSpec {
                name: format!("radio{r}"),
                kind: PortKind::Radio,
                channels: vec![r % CHANNELS],
                priority: Priority::NORMAL,
            })
            .collect();
        ports.push(PortSpec {
            name: "desk".into(),
            kind: PortKind::Desk,
            channels: vec![0],
            priority: Priority::DISPATCH,
        });
        let radios = (0..RADIOS)
            .map(|r| Radio {
                keying: Keying::new(core_config(r)),
                channel: r % CHANNELS,
                cor: false,
                inhibit: false,
                audio_fault: false,
                tx_wanted: false,
                tx_unwanted_since: None,
                keyed_since: None,
                last_audio: None,
                no_audio_guard: keying_config(r).no_audio,
                reported: None,
            })
            .collect();
        let streams = (0..CHANNELS)
            .map(|c| Stream {
                jitter: JitterBuffer::new(JitterConfig {
                    max_depth: Duration::from_millis([200, 120, 400][c]),
                    ..JitterConfig::default()
                }),
                seq: 0,
                ts: 0,
                source: None,
            })
            .collect();
        let mut sim = Sim {
            seed,
            rng: Rng(seed),
            t0,
            now: t0,
            router: Router::new(hosts, ports),
            radios,
            talking: vec![false; RADIOS + 1],
            desk_pressed: false,
            peers: (0..MAX_PEERS).map(|_| None).collect(),
            next_peer: 1,
            streams,
            queue: BinaryHeap::new(),
            order: 0,
            stall_until: t0,
            next_tick: t0 + TICK,
            inv,
            report: Report::default(),
        };
        sim.schedule(Duration::ZERO, Scheduled::Random);
        sim
    }

    fn schedule(&mut self, after: Duration, what: Scheduled) {
        self.order += 1;
        self.queue.push(Reverse((self.now + after, self.order, what)));
    }

    /// Runs until `duration` of simulated time has passed or an invariant breaks.
    pub fn run(mut self, duration: Duration) -> Result<Report, Violation> {
        let end = self.t0 + duration;
        let mut same_instant = 0u32;
        while self.now < end {
            let mut next = self.next_tick;
            if let Some(Reverse((at, _, _))) = self.queue.peek() {
                next = next.min(*at);
            }
            for d in self.core_deadlines() {
                next = next.min(d);
            }
            // A stalled driver runs late, never early; the cores handle timers at their deadlines.
            let next = next.max(self.stall_until).max(self.now);
            same_instant = if next == self.now { same_instant + 1 } else { 0 };
            if same_instant > 10_000 {
                return Err(self.violation("a core's deadline does not move on: time stands still".into()));
            }
            self.now = next;
            self.report.steps += 1;
            self.step()?;
        }
        self.report.sim = self.now - self.t0;
        Ok(self.report)
    }

    fn core_deadlines(&self) -> Vec<Instant> {
        let mut v: Vec<Instant> = self.radios.iter().filter_map(|r| r.keying.poll_timeout()).collect();
        v.extend(self.router.poll_timeout());
        v.extend(self.peers.iter().flatten().filter_map(|p| p.participant.poll_timeout()));
        v
    }

    fn step(&mut self) -> Result<(), Violation> {
        let now = self.now;
        // Timers first, at their own deadlines (the cores clamp a late call to them).
        for r in 0..RADIOS {
            if self.radios[r].keying.poll_timeout().is_some_and(|d| d <= now) {
                self.radios[r].keying.handle_timeout(now);
            }
        }
        if self.router.poll_timeout().is_some_and(|d| d <= now) {
            self.router.handle_timeout(now);
        }
        for p in self.peers.iter_mut().flatten() {
            if p.participant.poll_timeout().is_some_and(|d| d <= now) {
                p.participant.handle_timeout(now);
            }
        }
        self.settle()?;
        while let Some(Reverse((at, _, what))) = self.queue.peek().copied() {
            if at > now {
                break;
            }
            self.queue.pop();
            self.report.events += 1;
            self.scheduled(what);
            self.settle()?;
        }
        if self.next_tick <= now {
            while self.next_tick <= now {
                self.next_tick += TICK;
            }
            self.report.events += 1;
            self.media_tick()?;
            self.settle()?;
        }
        self.check()
    }

    // ---- random traffic and faults ----

    fn scheduled(&mut self, what: Scheduled) {
        let now = self.now;
        match what {
            Scheduled::Random => {
                self.random_event();
                let gap = if self.rng.chance(20) { self.rng.ms(1, 200) } else { self.rng.ms(200, 8000) };
                self.schedule(gap, Scheduled::Random);
            }
            Scheduled::Cor { radio, on } => {
                self.radios[radio].cor = on;
                self.radios[radio].keying.handle_input(now, Input::Cor(on));
            }
            Scheduled::Inhibit { radio, on } => {
                self.radios[radio].inhibit = on;
                self.radios[radio].keying.handle_input(now, Input::Inhibit(on));
            }
            Scheduled::AudioFault { radio, on } => {
                self.radios[radio].audio_fault = on;
                self.radios[radio].keying.handle_input(now, Input::AudioFault(on));
            }
            Scheduled::Desk { on } => {
                self.desk_pressed = on;
                if on {
                    self.router.press(now, DESK, 0);
                } else {
                    self.router.unpress(now, DESK, 0);
                }
            }
            Scheduled::PeerPress { slot, on, gen } => {
                if let Some(p) = self.peers[slot].as_ref().filter(|p| p.gen == gen && p.forged && on) {
                    // A hostile client asks again: a bare request, then silence.
                    let (id, member) = (p.id, p.member);
                    let priority = Priority::NORMAL;
                    self.router.from_peer(now, id, member, ToArbiter::Request { priority });
                } else if let Some(p) = self.peers[slot].as_mut().filter(|p| p.gen == gen && !p.forged) {
                    if on {
                        p.participant.press(now);
                    } else {
                        p.participant.unpress(now);
                    }
                }
            }
            Scheduled::PeerLeave { slot, gen } => {
                if self.peers[slot].as_ref().is_some_and(|p| p.gen == gen) {
                    let p = self.peers[slot].take().expect("checked");
                    self.router.remove_peer(now, p.id);
                }
            }
            Scheduled::Mute { channel, on } => self.router.set_muted(now, channel, on),
            Scheduled::Arrive { channel, seq, ts, marker } => {
                let s = &mut self.streams[channel];
                s.jitter.push(now, Packet { seq, timestamp: ts, marker, payload: &[0x78, 1, 2, 3] });
                self.report.jitter_pushed += 1;
            }
        }
    }

    fn random_event(&mut self) {
        let now = self.now;
        let radio = self.rng.below(RADIOS as u64) as usize;
        match self.rng.below(100) {
            // A call received on a radio: short kerchunks to long overs, some stuck open.
            0..=29 if !self.radios[radio].cor => {
                let hold = match self.rng.below(10) {
                    0 => self.rng.ms(10, 300),
                    1 => self.rng.ms(100_000, 300_000),
                    _ => self.rng.ms(1_000, 40_000),
                };
                self.schedule(Duration::ZERO, Scheduled::Cor { radio, on: true });
                self.schedule(hold, Scheduled::Cor { radio, on: false });
            }
            // COR flapping: a burst of edges.
            30..=32 => {
                let mut at = Duration::ZERO;
                let mut on = !self.radios[radio].cor;
                for _ in 0..self.rng.below(30) {
                    let gap = self.rng.ms(5, 120);
                    at += gap;
                    self.schedule(at, Scheduled::Cor { radio, on });
                    on = !on;
                }
                let end = at + self.rng.ms(5, 120);
                self.schedule(end, Scheduled::Cor { radio, on: false });
            }
            33..=38 => {
                let hold = self.rng.ms(100, 60_000);
                self.schedule(Duration::ZERO, Scheduled::Inhibit { radio, on: true });
                self.schedule(hold, Scheduled::Inhibit { radio, on: false });
            }
            39..=41 => {
                let hold = self.rng.ms(100, 20_000);
                self.schedule(Duration::ZERO, Scheduled::AudioFault { radio, on: true });
                self.schedule(hold, Scheduled::AudioFault { radio, on: false });
            }
            42..=51 if !self.desk_pressed => {
                let hold = self.rng.ms(200, 30_000);
                self.schedule(Duration::ZERO, Scheduled::Desk { on: true });
                self.schedule(hold, Scheduled::Desk { on: false });
            }
            // A peer joins (some forged: a request, then silence), or presses.
            52..=61 => {
                if let Some(slot) = self.peers.iter().position(Option::is_none) {
                    self.join_peer(slot);
                }
            }
            62..=81 => {
                let slot = self.rng.below(MAX_PEERS as u64) as usize;
                if let Some(gen) = self.peers[slot].as_ref().map(|p| p.gen) {
                    let hold =
                        if self.rng.chance(10) { self.rng.ms(60_000, 200_000) } else { self.rng.ms(100, 20_000) };
                    self.schedule(Duration::ZERO, Scheduled::PeerPress { slot, on: true, gen });
                    self.schedule(hold, Scheduled::PeerPress { slot, on: false, gen });
                }
            }
            // A peer vanishes without releasing anything.
            82..=86 => {
                let slot = self.rng.below(MAX_PEERS as u64) as usize;
                if let Some(gen) = self.peers[slot].as_ref().map(|p| p.gen) {
                    self.schedule(Duration::ZERO, Scheduled::PeerLeave { slot, gen });
                }
            }
            87..=88 => {
                let channel = self.rng.below(CHANNELS as u64) as usize;
                let hold = self.rng.ms(1_000, 30_000);
                self.schedule(Duration::ZERO, Scheduled::Mute { channel, on: true });
                self.schedule(hold, Scheduled::Mute { channel, on: false });
            }
            // A stalled driver (a loaded box, a blocking call): everything runs late.
            89..=91 => {
                let stall = self.rng.ms(1, 400);
                self.stall_until = now + stall;
            }
            _ => {} // quiet (also a call on a radio already receiving, a press while the desk holds)
        }
    }

    fn join_peer(&mut self, slot: usize) {
        let now = self.now;
        let channel = self.rng.below(CHANNELS as u64) as usize;
        let id = self.next_peer;
        self.next_peer += 1;
        let priority = if self.rng.chance(10) { Priority::EMERGENCY } else { Priority::NORMAL };
        let Some(member) = self.router.add_remote(now, id, &format!("peer{id}"), channel, priority) else { return };
        let forged = self.rng.chance(15);
        let config = ParticipantConfig { priority, ..ParticipantConfig::default() };
        self.report.peers_joined += 1;
        self.peers[slot] =
            Some(Peer { id, gen: id, channel, member, participant: Participant::new(member, config), forged });
        if forged {
            self.router.from_peer(now, id, member, ToArbiter::Request { priority });
        }
        if self.rng.chance(30) {
            let stay = self.rng.ms(1_000, 600_000);
            self.schedule(stay, Scheduled::PeerLeave { slot, gen: id });
        }
    }

    // ---- media ----

    /// Every 20 ms: the floor holder of each channel sends a packet (if it has audio), the
    /// router forwards it, and it travels to the channel's jitter buffer with random delay,
    /// loss, duplication and reordering; each jitter buffer plays one frame.
    fn media_tick(&mut self) -> Result<(), Violation> {
        let now = self.now;
        for c in 0..CHANNELS {
            let source = self.sender(c);
            if let Some(source) = source {
                let Some(targets) = self.router.media(now, source, c) else { continue };
                self.report.media_packets += 1;
                for t in targets {
                    if let MediaTarget::Port(p) = t {
                        if p < RADIOS {
                            // As the channel task does (at most every 200 ms there; every
                            // frame here), feeding the keying core's no-audio guard.
                            self.radios[p].last_audio = Some(now);
                            self.radios[p].keying.handle_input(now, Input::ChannelAudio);
                        }
                    }
                }
                let s = &mut self.streams[c];
                let marker = s.source != Some(source);
                if marker {
                    // A new talker: a new stream, as the restamper numbers it.
                    s.seq = s.seq.wrapping_add(1 + (self.rng.next() as u16 % 1000));
                    s.ts = s.ts.wrapping_add(self.rng.next() as u32);
                    s.source = Some(source);
                }
                s.seq = s.seq.wrapping_add(1);
                s.ts = s.ts.wrapping_add(960);
                let (seq, ts) = (s.seq, s.ts);
                if !self.rng.chance(3) {
                    let copies = if self.rng.chance(1) { 2 } else { 1 };
                    for _ in 0..copies {
                        let delay = if self.rng.chance(1) { self.rng.ms(200, 1500) } else { self.rng.ms(5, 80) };
                        self.schedule(delay, Scheduled::Arrive { channel: c, seq, ts, marker });
                    }
                }
            } else {
                self.streams[c].source = None;
            }
            let _ = self.streams[c].jitter.pop(now);
        }
        Ok(())
    }

    /// Who sends audio on channel `c` now: a radio granted the floor while receiving, the desk
    /// while granted, or a (not forged) peer's participant while granted.
    fn sender(&self, c: ChannelId) -> Option<MediaSource> {
        for r in 0..RADIOS {
            if self.radios[r].channel == c && self.talking[r] && self.radios[r].keying.rx_active() {
                return Some(MediaSource::Port(r));
            }
        }
        if c == 0 && self.talking[DESK] {
            return Some(MediaSource::Port(DESK));
        }
        self.peers
            .iter()
            .flatten()
            .find(|p| p.channel == c && !p.forged && p.participant.may_send_media())
            .map(|p| MediaSource::Peer(p.id))
    }

    // ---- wiring (as the daemon's drivers do) ----

    fn settle(&mut self) -> Result<(), Violation> {
        let now = self.now;
        for _round in 0..1000 {
            let mut moved = false;
            while let Some(out) = self.router.poll_output() {
                moved = true;
                self.report.events += 1;
                self.router_output(out);
            }
            for r in 0..RADIOS {
                while let Some(e) = self.radios[r].keying.poll_event() {
                    moved = true;
                    self.report.events += 1;
                    match e {
                        Event::RxOpen => self.router.press(now, r, self.radios[r].channel),
                        Event::RxClose => self.router.unpress(now, r, self.radios[r].channel),
                        Event::PttOn => self.report.key_ups += 1,
                        Event::TotFired => self.report.tot_fired += 1,
                        _ => {}
                    }
                }
                let k = &self.radios[r].keying;
                let blocked = if k.inhibited() {
                    Some(WaitReason::Inhibited)
                } else if k.locked_out() {
                    Some(WaitReason::LockedOut)
                } else if !k.config().duplex && k.rx_active() {
                    Some(WaitReason::Receiving)
                } else {
                    None
                };
                let report = RadioTx { keyed: k.ptt(), blocked };
                if self.radios[r].reported != Some(report) {
                    self.radios[r].reported = Some(report);
                    moved = true;
                    self.router.radio_tx(now, r, report);
                }
            }
            for p in self.peers.iter_mut().flatten() {
                while let Some(msg) = p.participant.poll_transmit() {
                    moved = true;
                    self.router.from_peer(now, p.id, p.member, msg);
                }
                while p.participant.poll_event().is_some() {}
            }
            if !moved {
                return Ok(());
            }
        }
        Err(self.violation("the cores did not settle after 1000 rounds of messages".into()))
    }

    fn router_output(&mut self, out: RouterOutput) {
        let now = self.now;
        match out {
            RouterOutput::TxRequest { port, on } if port < RADIOS => {
                let r = &mut self.radios[port];
                if r.tx_wanted && !on {
                    r.tx_unwanted_since = Some(now);
                }
                r.tx_wanted = on;
                r.keying.handle_input(now, Input::TxRequest(on));
            }
            RouterOutput::Talk { port, on, .. } => {
                self.talking[port] = on;
                if on {
                    self.report.grants += 1;
                }
            }
            RouterOutput::Revoked { .. } => self.report.revokes += 1,
            RouterOutput::ToPeer { peer, member, msg, channel } => {
                for p in self.peers.iter_mut().flatten() {
                    if p.id == peer && p.channel == channel && member.is_none_or(|m| m == p.member) && !p.forged {
                        if matches!(msg, ToParticipant::Revoke { .. }) {
                            self.report.revokes += 1;
                        }
                        p.participant.handle_message(now, msg);
                    }
                }
            }
            _ => {}
        }
    }

    // ---- invariants ----

    fn violation(&self, what: String) -> Violation {
        Violation { seed: self.seed, at: self.now - self.t0, what }
    }

    fn check(&mut self) -> Result<(), Violation> {
        for r in 0..RADIOS {
            self.check_radio(r)?;
        }
        for c in 0..CHANNELS {
            self.check_floor(c)?;
            let depth = self.streams[c].jitter.stats().depth_ms;
            let max = self.streams[c].jitter.config().max_depth.as_secs_f64() * 1000.0;
            self.report.checks += 1;
            self.report.jitter_max_depth_ms = self.report.jitter_max_depth_ms.max(depth);
            if depth > max + 1e-6 {
                return Err(self.violation(format!("channel {c}: jitter depth {depth} ms above max_depth {max} ms")));
            }
        }
        Ok(())
    }

    fn check_radio(&mut self, r: usize) -> Result<(), Violation> {
        let now = self.now;
        let radio = &mut self.radios[r];
        let keyed = radio.keying.ptt();
        match (keyed, radio.keyed_since) {
            (true, None) => radio.keyed_since = Some(now),
            (false, Some(_)) => radio.keyed_since = None,
            _ => {}
        }
        let cfg = radio.keying.config().clone();
        let (tx_wanted, unwanted_since, inhibit, since, last_audio, guard) = (
            radio.tx_wanted,
            radio.tx_unwanted_since,
            radio.inhibit,
            radio.keyed_since,
            radio.last_audio,
            radio.no_audio_guard,
        );
        self.report.checks += 4;
        let Some(since) = since else { return Ok(()) };
        let keyed_for = now - since;
        self.report.longest_key_up = self.report.longest_key_up.max(keyed_for);
        if keyed_for > cfg.tot {
            return Err(self.violation(format!("radio {r}: PTT keyed {keyed_for:?}, beyond its TOT {:?}", cfg.tot)));
        }
        if inhibit {
            return Err(self.violation(format!("radio {r}: PTT keyed while inhibited")));
        }
        if !tx_wanted {
            let hang_over = unwanted_since.is_none_or(|t| now - t > cfg.tx_hang);
            if hang_over {
                return Err(self.violation(format!(
                    "radio {r}: PTT keyed without a talker beyond the TX hang ({:?} since the channel went idle)",
                    unwanted_since.map(|t| now - t)
                )));
            }
        }
        // The no-audio guard (issue 14 item 2): a radio keyed for the channel that hears no
        // channel audio for `guard` unkeys. Keyed time without audio is counted from the
        // later of the key-up and the last packet; tx_delay + tx_hang + a tick of slack cover
        // the TX delay before audio and the hang after the last packet.
        if self.inv.no_audio_guard {
            let quiet_since = last_audio.map_or(since, |a| a.max(since));
            let limit = guard + cfg.tx_delay + cfg.tx_hang + TICK;
            if now - quiet_since > limit {
                return Err(self.violation(format!(
                    "radio {r}: keyed {:?} without channel audio, beyond the no-audio guard {guard:?}",
                    now - quiet_since
                )));
            }
        }
        Ok(())
    }

    fn check_floor(&mut self, c: ChannelId) -> Result<(), Violation> {
        self.report.checks += 1;
        let mut believers: Vec<String> = Vec::new();
        for r in 0..RADIOS {
            if self.radios[r].channel == c && self.talking[r] {
                believers.push(format!("radio{r}"));
            }
        }
        if c == 0 && self.talking[DESK] {
            believers.push("desk".into());
        }
        for p in self.peers.iter().flatten() {
            if p.channel == c && !p.forged && p.participant.state() == ParticipantState::Granted {
                believers.push(format!("peer{}", p.id));
            }
        }
        if believers.len() > 1 {
            return Err(self.violation(format!("channel {c}: more than one holder: {believers:?}")));
        }
        if !believers.is_empty() && self.router.holder(c).is_none() {
            return Err(self.violation(format!("channel {c}: {believers:?} think they hold an idle floor")));
        }
        Ok(())
    }
}

/// Runs one seed for `duration` of simulated time.
pub fn soak(seed: u64, duration: Duration, inv: Invariants) -> Result<Report, Violation> {
    Sim::new(seed, inv).run(duration)
}
