//! Driver for one radio port: feeds COR edges, channel TX requests, inhibit and remote PTT into
//! the keying core, sleeps until its next deadline, drives the PTT line to whatever the core
//! says, and reports the port's state and events. Levels and the TOT countdown in the state
//! are refreshed at most once a second, and only while the port receives or transmits, so the
//! retained state does not churn.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::audio_flags::AudioFlags;
use super::dtmf::{DtmfPort, LocalCommand, Pending, PendingCommand, Reply};
use super::report::Reporter;
use super::safety::PttLine;
use super::watchdog::{Heartbeat, BEAT_PERIOD};
use super::{clock, ChannelMsg, PortId};
use crate::core::dtmf_command::{DtmfCommand, Outcome};
use crate::core::jitter::JitterStats;
use crate::core::keying::{Event, Input, Keying, PttOffReason, TxBlockReason};
use crate::core::routing::{RadioTx, WaitReason};
use crate::fleet::{Event as FleetEvent, EventKind, PortState};
use crate::net::peer_queue::{self, Limits, PeerRx, PeerTx, Policy, Queued};
use crate::pipeline::TxGate;

/// Inputs to a radio port from its lines, the channel and the fleet. They are levels (see
/// [`Queued`] below), so the port's queue keeps only the newest of each and never grows.
#[derive(Debug, Clone)]
pub enum PortInput {
    /// Stamped where the edge was seen (GPIO thread), not where it is handled.
    Cor { at: Instant, asserted: bool },
    /// The hardware TX-inhibit switch.
    Inhibit { at: Instant, on: bool },
    /// The channel has a talker for this radio (true) or went idle (false).
    TxRequest(bool),
    /// Receive audio level of one capture frame, when VOX is the COR source.
    Vox { at: Instant, dbfs: f32 },
    /// The CTCSS decoder (a COR source): whether the port's tone is heard, and which tone is
    /// heard (any, for the port state) with its SNR. Sent when `open` or the tone changes.
    Ctcss { at: Instant, open: bool, heard_hz: Option<f32>, snr_db: f32 },
    /// TX inhibit from the fleet; either inhibit source keeps the radio unkeyed.
    RemoteInhibit(bool),
    /// Key from the fleet for at most `max`, TX hang included (the keying rules and the TOT
    /// still apply; the no-audio guard does not), or release. TX inhibit and the TOT cancel it.
    RemotePtt { on: bool, max: Duration },
    /// Channel audio for this radio arrived (the no-audio guard), at most a few per second.
    ChannelAudio,
    /// The port now belongs to this channel (for its reported state).
    Channel(String),
    /// The playback device failed (true) or works again (false).
    AudioFault(bool),
    /// Receive level (as it comes from the radio) over the last second, dBFS.
    RxLevel(f32),
    /// Transmit level (as it goes to the radio) over the last second while keyed, dBFS.
    TxLevel(f32),
    /// A talk-spurt of channel audio ended; what the transmit path's jitter buffer did with it.
    TxSpurt(SpurtStats),
    /// A DTMF digit started in the receive audio (stamped on the capture thread).
    Dtmf { at: Instant, digit: char },
}

/// Every input but the spurt statistics is a level: a newer one replaces the older one still
/// queued (in the queue's order, so a release is at most a dozen messages behind, whatever
/// flooded the port). A line edge (COR, inhibit) replaces only an older edge to the same level:
/// a pulse shorter than the port's lag still arrives as a pulse, at most two edges per line.
impl Queued for PortInput {
    fn policy(&self) -> Policy {
        match self {
            // Digits are events, not levels; at most ~13 a second, and a lost one only makes
            // its command fail (a full `Keep` queue would end the port).
            PortInput::TxSpurt(_) | PortInput::Dtmf { .. } => Policy::DropOldest,
            _ => Policy::Coalesce,
        }
    }

    fn supersedes(&self, older: &Self) -> bool {
        use PortInput::{Cor, Ctcss, Inhibit};
        match (self, older) {
            (Cor { asserted: a, .. }, Cor { asserted: b, .. })
            | (Inhibit { on: a, .. }, Inhibit { on: b, .. })
            | (Ctcss { open: a, .. }, Ctcss { open: b, .. }) => a == b,
            _ => std::mem::discriminant(self) == std::mem::discriminant(older),
        }
    }
}

/// A radio port's input queue. Sending never waits (GPIO edge callbacks, capture threads, the
/// router, the fleet) and the queue holds at most one message per kind (two per line), so
/// `reliable` is never reached (13 at most); a few spurt reports may wait.
pub fn inputs() -> (PeerTx<PortInput>, PeerRx<PortInput>) {
    peer_queue::channel(Limits { reliable: 32, lossy: 8 })
}

/// One talk-spurt of channel audio towards the radio, as its jitter buffer played it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpurtStats {
    pub played: u64,
    /// Frames concealed inside the spurt (loss, late packets, insertions), each heard as a fade.
    pub gaps: u64,
    pub fec_recovered: u64,
    /// Packets that came after their frame was played.
    pub late: u64,
    pub target_ms: f64,
}

impl SpurtStats {
    /// The spurt between the jitter buffer's counters at its start and at its end.
    pub fn between(start: &JitterStats, end: &JitterStats) -> SpurtStats {
        SpurtStats {
            played: end.played.saturating_sub(start.played),
            gaps: end.gaps_concealed.saturating_sub(start.gaps_concealed),
            fec_recovered: end.fec_recovered.saturating_sub(start.fec_recovered),
            late: end.late.saturating_sub(start.late),
            target_ms: end.target_ms,
        }
    }
}

/// How often a receiving or transmitting port's state is refreshed (levels, TOT countdown).
const STATE_PERIOD: Duration = Duration::from_secs(1);

pub struct RadioPort {
    pub id: PortId,
    pub name: String,
    pub channel: String,
    pub keying: Keying,
    pub ptt: PttLine,
    pub inputs: PeerRx<PortInput>,
    /// The router's control inbox: never waited on (the keying must not depend on the
    /// router), see [`Requests::rx_reported`].
    pub to_channel: mpsc::Sender<ChannelMsg>,
    pub heartbeat: Heartbeat,
    /// Tells the playback task where the transmitter is (None: no audio configured).
    pub audio: Option<Arc<AudioFlags>>,
    pub reporter: Reporter,
    /// DTMF commands from the radio's keypad (None: not configured).
    pub dtmf: Option<DtmfPort>,
}

/// The levels the port combines before the keying core sees them, and what it reports.
#[derive(Default)]
struct Requests {
    /// The level the PTT line was last driven to successfully: what the port reports as
    /// keyed (never the core's wish alone; a failed write or a tripped safety registry leaves
    /// the line unkeyed).
    line_keyed: bool,
    /// Last transmitter report sent to the channel router.
    reported: Option<RadioTx>,
    /// The receiver as the keying core last said (RxOpen / RxClose), and as the router last
    /// got it. Both reports are state: one that finds the router's inbox full goes on the
    /// next pass (at the latest the next heartbeat), the newest state only.
    rx_active: bool,
    rx_reported: bool,
    line_inhibit: bool,
    remote_inhibit: bool,
    rx_level: Option<f32>,
    /// The CTCSS tone heard and its SNR, for the port state.
    ctcss: Option<(f32, f32)>,
    tx_level: Option<f32>,
}

impl RadioPort {
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut req = Requests::default();
        let mut beat = tokio::time::interval(BEAT_PERIOD);
        let mut state_tick = tokio::time::interval(STATE_PERIOD);
        self.report_state(&req);
        loop {
            let dtmf_deadline = self.dtmf.as_ref().and_then(|d| d.matcher.poll_timeout());
            let next = match (self.keying.poll_timeout(), dtmf_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sleep = crate::wait::until(next);
            let pending = self.dtmf.as_mut().and_then(|d| d.pending.as_mut()).map(|p| &mut p.answer);
            let answer = async move {
                match pending {
                    Some(rx) => rx.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                input = self.inputs.recv() => match input {
                    Ok(input) => self.input(input, &mut req),
                    Err(_) => break,
                },
                _ = sleep => {
                    let now = clock::now();
                    self.keying.handle_timeout(now);
                    if let Some(d) = &mut self.dtmf {
                        d.matcher.handle_timeout(now);
                    }
                    self.dtmf_outcomes();
                }
                result = answer => self.dtmf_answer(result.unwrap_or_else(|_| {
                    Err(crate::fleet::CommandError::unavailable("the daemon is stopping"))
                })),
                _ = beat.tick() => self.heartbeat.beat(),
                _ = state_tick.tick() => {
                    if self.keying.rx_active() || self.keying.ptt() || req.line_keyed {
                        self.report_state(&req);
                    }
                }
            }
            self.apply(&mut req);
        }
        self.keying.handle_input(clock::now(), Input::Shutdown);
        self.apply(&mut req);
        info!(port = %self.name, "radio port stopped, PTT released");
    }

    fn input(&mut self, input: PortInput, req: &mut Requests) {
        match input {
            PortInput::Cor { at, asserted } => self.keying.handle_input(at, Input::Cor(asserted)),
            PortInput::Vox { at, dbfs } => self.keying.handle_input(at, Input::VoxLevel(dbfs)),
            PortInput::Ctcss { at, open, heard_hz, snr_db } => {
                req.ctcss = heard_hz.map(|hz| (hz, snr_db));
                self.keying.handle_input(at, Input::Ctcss(open));
            }
            PortInput::Inhibit { at, on } => {
                req.line_inhibit = on;
                self.keying.handle_input(at, Input::Inhibit(req.line_inhibit || req.remote_inhibit));
            }
            PortInput::RemoteInhibit(on) => {
                req.remote_inhibit = on;
                self.keying.handle_input(clock::now(), Input::Inhibit(req.line_inhibit || req.remote_inhibit));
            }
            PortInput::ChannelAudio => self.keying.handle_input(clock::now(), Input::ChannelAudio),
            PortInput::TxRequest(on) => self.keying.handle_input(clock::now(), Input::TxRequest(on)),
            PortInput::Channel(name) => {
                self.channel = name;
                self.report_state(req);
            }
            PortInput::AudioFault(on) => {
                if on {
                    warn!(port = %self.name, "playback device lost: no key-up for the station ID until it is back");
                }
                self.keying.handle_input(clock::now(), Input::AudioFault(on));
            }
            PortInput::RxLevel(dbfs) => req.rx_level = Some(dbfs),
            PortInput::TxLevel(dbfs) => req.tx_level = Some(dbfs),
            PortInput::TxSpurt(s) if s.gaps > 0 => warn!(
                port = %self.name, played = s.played, gaps = s.gaps, late = s.late, fec = s.fec_recovered,
                target_ms = s.target_ms, "channel audio to the radio had gaps (concealed frames)"
            ),
            PortInput::TxSpurt(s) => debug!(
                port = %self.name, played = s.played, fec = s.fec_recovered, target_ms = s.target_ms,
                "channel audio to the radio complete"
            ),
            PortInput::RemotePtt { on, max } => {
                self.keying.handle_input(clock::now(), Input::RemotePtt(on.then_some(max)))
            }
            PortInput::Dtmf { at, digit } => {
                debug!(port = %self.name, %digit, "DTMF digit");
                if let Some(d) = &mut self.dtmf {
                    d.matcher.handle_digit(at, digit);
                }
                self.dtmf_outcomes();
            }
        }
    }

    /// Carry out what the DTMF matcher concluded.
    fn dtmf_outcomes(&mut self) {
        let Some(d) = &mut self.dtmf else { return };
        let outcomes: Vec<Outcome> = std::iter::from_fn(|| d.matcher.poll_outcome()).collect();
        for outcome in outcomes {
            match outcome {
                Outcome::Command { command: DtmfCommand::SetChannel(channel), digits } => {
                    self.dtmf_set_channel(channel, digits)
                }
                Outcome::Command { command: DtmfCommand::Status, digits } => {
                    let channel = self.channel.clone();
                    self.dtmf_event(&digits, "status", format!("on channel {channel}"));
                    self.reply(Reply::Cw(channel));
                }
                Outcome::Command { command: DtmfCommand::Emergency, digits } => self.dtmf_emergency(digits),
                Outcome::Rejected { reason, digits } => {
                    info!(port = %self.name, %digits, reason = reason.as_str(), "DTMF command refused");
                    self.dtmf_event(&digits, reason.as_str(), String::new());
                    self.reply(Reply::Error);
                }
                Outcome::Cancelled { digits } => {
                    self.dtmf_event(&digits, "cancelled", String::new());
                    self.reply(Reply::Ack);
                }
            }
        }
    }

    /// A channel change goes to the control task (the MQTT commands' path); its answer comes
    /// back through [`RadioPort::dtmf_answer`].
    fn dtmf_set_channel(&mut self, channel: String, digits: String) {
        let Some(d) = &mut self.dtmf else { return };
        if d.pending.is_some() {
            self.dtmf_event(&digits, "busy", "the last command is still being carried out".into());
            self.reply(Reply::Error);
            return;
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let command = crate::fleet::Command::SetChannel { port: self.name.clone(), channel: channel.clone() };
        match d.control.try_send(LocalCommand { command, reply }) {
            Ok(()) => d.pending = Some(Pending { answer, digits, what: PendingCommand::SetChannel(channel) }),
            Err(_) => {
                self.dtmf_event(&digits, "refused", "the control task is busy".into());
                self.reply(Reply::Error);
            }
        }
    }

    /// An emergency on the port's channel, the port its caller: the same action as its
    /// emergency line (the channel router decides); the answer comes back through
    /// [`RadioPort::dtmf_answer`].
    fn dtmf_emergency(&mut self, digits: String) {
        let Some(d) = &mut self.dtmf else { return };
        if d.pending.is_some() {
            self.dtmf_event(&digits, "busy", "the last command is still being carried out".into());
            self.reply(Reply::Error);
            return;
        }
        warn!(port = %self.name, "DTMF emergency");
        let (tell, told) = tokio::sync::oneshot::channel();
        let action = super::EmergencyAction::Raise {
            target: super::EmergencyTarget::Port(self.name.clone()),
            source: crate::core::emergency::SourceKind::Dtmf,
            by: self.name.clone(),
        };
        match peer_queue::try_deliver(&self.to_channel, ChannelMsg::Emergency { action, reply: Some(tell) }) {
            Ok(_) => {
                let (reply, answer) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    let _ = reply.send(match told.await {
                        Ok(Ok(outcome)) => Ok(serde_json::json!({ "emergency": outcome })),
                        Ok(Err(reason)) => Err(crate::fleet::CommandError::rejected(reason)),
                        Err(_) => Err(crate::fleet::CommandError::internal("the channel router stopped")),
                    });
                });
                d.pending = Some(Pending { answer, digits, what: PendingCommand::Emergency });
            }
            Err(_) => {
                self.dtmf_event(&digits, "refused", "the channel router is busy".into());
                self.reply(Reply::Error);
            }
        }
    }

    fn dtmf_answer(&mut self, result: Result<serde_json::Value, crate::fleet::CommandError>) {
        let Some(Pending { digits, what, .. }) = self.dtmf.as_mut().and_then(|d| d.pending.take()) else { return };
        let channel = match what {
            PendingCommand::SetChannel(channel) => channel,
            PendingCommand::Emergency => {
                match result {
                    Ok(v) => {
                        let outcome = v["emergency"].as_str().unwrap_or_default().to_string();
                        self.dtmf_event(&digits, "accepted", format!("emergency {outcome}"));
                        self.reply(Reply::Ack);
                    }
                    Err(e) => {
                        warn!(port = %self.name, error = %e, "DTMF: emergency refused");
                        self.dtmf_event(&digits, "refused", e.message);
                        self.reply(Reply::Error);
                    }
                }
                return;
            }
        };
        match result {
            Ok(_) => {
                info!(port = %self.name, %channel, "DTMF: channel set");
                // The router told the port its new channel before it answered.
                self.dtmf_event(&digits, "accepted", format!("set_channel {channel}"));
                self.reply(Reply::Ack);
            }
            Err(e) => {
                warn!(port = %self.name, %channel, error = %e, "DTMF: set_channel refused");
                self.dtmf_event(&digits, "refused", e.message);
                self.reply(Reply::Error);
            }
        }
    }

    fn dtmf_event(&self, digits: &str, reason: &str, detail: String) {
        let mut event =
            FleetEvent::new(EventKind::Dtmf).port(&self.name).channel(&self.channel).digits(digits).reason(reason);
        if !detail.is_empty() {
            event = event.detail(detail);
        }
        self.reporter.event(event);
    }

    /// Ask the keying core for a reply (played when it says `ReplyStart`). Nothing while one
    /// is on air: its audio must not be swapped under it.
    fn reply(&mut self, reply: Reply) {
        let Some((path, dbfs)) = self.dtmf.as_ref().and_then(|d| d.reply.clone()) else { return };
        if self.keying.reply_sending() {
            debug!(port = %self.name, ?reply, "a reply is on air: this one is not sent");
            return;
        }
        let sequence = reply.sequence(dbfs);
        let length = Reply::key_length(&sequence);
        path.lock().unwrap_or_else(|p| p.into_inner()).set_reply(sequence);
        self.keying.handle_input(clock::now(), Input::Reply(length));
    }

    /// Drive PTT to the core's level and pass its events on.
    fn apply(&mut self, req: &mut Requests) {
        let want = self.keying.ptt();
        let mut changed = false;
        if want != req.line_keyed {
            match self.ptt.set(want) {
                // Keying is refused (the line written low) once the safety registry tripped.
                Ok(()) => req.line_keyed = want && !super::safety::tripped(),
                // Unknown level: keep the last known one and write again on the next pass.
                Err(e) => error!(port = %self.name, line = self.ptt.name(), error = %e, "PTT line write failed"),
            }
            changed = true;
        }
        if let Some(audio) = &self.audio {
            audio.set_gate(match (self.keying.ptt(), self.keying.tx_audio()) {
                _ if self.keying.in_tail() => TxGate::Tail,
                (true, true) => TxGate::Open,
                (true, false) => TxGate::Hold,
                _ => TxGate::Closed,
            });
        }
        while let Some(event) = self.keying.poll_event() {
            changed = true;
            let report = |kind| FleetEvent::new(kind).port(&self.name).channel(&self.channel);
            match event {
                Event::RxOpen => {
                    info!(port = %self.name, "COR open");
                    req.rx_active = true;
                    self.reporter.event(report(EventKind::CorOpen));
                }
                Event::RxClose => {
                    info!(port = %self.name, "COR closed");
                    req.rx_active = false;
                    self.reporter.event(report(EventKind::CorClose));
                }
                Event::PttOn => {
                    info!(port = %self.name, line = self.ptt.name(), "PTT on");
                    self.reporter.event(report(EventKind::PttOn));
                }
                Event::PttOff(reason) => {
                    info!(port = %self.name, ?reason, "PTT off");
                    if reason == PttOffReason::NoAudio {
                        let guard = self.keying.config().no_audio;
                        warn!(port = %self.name, ?guard, "no channel audio: PTT released by the no-audio guard");
                    }
                    let reason = match reason {
                        PttOffReason::HangExpired => "hang_end",
                        PttOffReason::TimeOut => "tot",
                        PttOffReason::Inhibited => "inhibit",
                        PttOffReason::Shutdown => "shutdown",
                        PttOffReason::IdDone => "id_end",
                        PttOffReason::AudioFault => "audio_fault",
                        PttOffReason::NoAudio => "no_audio",
                        PttOffReason::RemoteEnd => "remote",
                        PttOffReason::ReplyDone => "reply_end",
                    };
                    self.reporter.event(report(EventKind::PttOff).reason(reason));
                }
                Event::TotFired => {
                    warn!(port = %self.name, "time-out timer fired, transmitter unkeyed");
                    self.reporter.event(report(EventKind::TotFired));
                }
                Event::IdStart => {
                    info!(port = %self.name, "station ID on air");
                    if let Some(audio) = &self.audio {
                        audio.start_id();
                    }
                }
                Event::ReplyStart => {
                    info!(port = %self.name, "DTMF reply on air");
                    if let Some(audio) = &self.audio {
                        audio.start_reply();
                    }
                }
                Event::ReplyDropped => info!(port = %self.name, "DTMF reply given up (radio busy, blocked or unkeyed)"),
                Event::RxTimeout => warn!(port = %self.name, "COR stuck open, receive timed out"),
                Event::FlapSuppressed => warn!(port = %self.name, "COR flapping, ignored for now"),
                other => debug!(port = %self.name, event = ?other, "keying"),
            }
        }
        if changed {
            self.report_state(req);
        }
        if req.rx_active != req.rx_reported {
            let msg = ChannelMsg::RxActive { port: self.id, active: req.rx_active };
            if !matches!(peer_queue::try_deliver(&self.to_channel, msg), Err(TrySendError::Full(_))) {
                req.rx_reported = req.rx_active;
            }
        }
        let report = RadioTx { keyed: req.line_keyed, blocked: self.blocked() };
        if req.reported != Some(report) {
            let msg = ChannelMsg::RadioTx { port: self.id, report };
            if !matches!(peer_queue::try_deliver(&self.to_channel, msg), Err(TrySendError::Full(_))) {
                req.reported = Some(report);
            }
        }
    }

    /// What keeps the transmitter from keying now, if anything, as the keying core decides
    /// (a port that is shutting down reports nothing: it is leaving the channel).
    fn blocked(&self) -> Option<WaitReason> {
        match self.keying.block_reason()? {
            TxBlockReason::Inhibited => Some(WaitReason::Inhibited),
            TxBlockReason::LockedOut => Some(WaitReason::LockedOut),
            TxBlockReason::Busy => Some(WaitReason::Receiving),
            TxBlockReason::NoAudio => Some(WaitReason::NoAudio),
            TxBlockReason::ShutDown => None,
        }
    }

    /// Levels in whole dB and the TOT in whole seconds (rounded up), so a steady signal
    /// publishes nothing new.
    fn report_state(&self, req: &Requests) {
        let now = clock::now();
        let (rx, tx) = (self.keying.rx_active(), req.line_keyed);
        let state = PortState {
            channel: self.channel.clone(),
            rx_active: rx,
            tx_keyed: tx,
            locked_out: self.keying.locked_out(),
            inhibited: self.keying.inhibited(),
            rx_level_dbfs: req.rx_level.filter(|_| rx).map(f32::round),
            tx_level_dbfs: req.tx_level.filter(|_| tx).map(f32::round),
            tot_remaining_s: self.keying.tot_remaining(now).map(|d| d.as_secs_f32().ceil()),
            ctcss_hz: req.ctcss.map(|(hz, _)| hz),
            ctcss_snr_db: req.ctcss.map(|(_, snr)| snr.round()),
        };
        self.reporter.port_state(&self.name, state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(rx: &mut PeerRx<PortInput>) -> Vec<PortInput> {
        std::iter::from_fn(|| rx.try_recv()?.ok()).collect()
    }

    fn short(input: &PortInput) -> String {
        match input {
            PortInput::Cor { asserted, .. } => format!("cor {asserted}"),
            PortInput::Inhibit { on, .. } => format!("inhibit {on}"),
            PortInput::RemotePtt { on, .. } => format!("remote {on}"),
            other => format!("{other:?}"),
        }
    }

    /// A bouncing COR contact and a hostile remote PTT stream, 100,000 edges each: the queue
    /// holds the newest edge of each level and nothing else, in order, and never ends.
    #[test]
    fn a_flood_of_edges_keeps_the_newest_state_in_bounded_memory() {
        let (tx, mut rx) = inputs();
        let (at, max) = (Instant::now(), Duration::from_secs(60));
        for i in 0..100_000 {
            tx.send(PortInput::Cor { at, asserted: i % 2 == 0 }).unwrap();
            tx.send(PortInput::RemotePtt { on: i % 2 == 0, max }).unwrap();
            assert!(tx.len() <= 3, "{} queued after {i} edges", tx.len());
        }
        let got: Vec<_> = drain(&mut rx).iter().map(short).collect();
        assert_eq!(got, ["cor true", "cor false", "remote false"]);
        assert_eq!(tx.end(), None);
    }

    /// A pulse shorter than the port's lag is still a pulse: an inhibit that came and went
    /// around a remote key still refuses it (the keying core sees them in order).
    #[test]
    fn a_line_pulse_survives_and_kinds_keep_their_order() {
        let (tx, mut rx) = inputs();
        let (at, max) = (Instant::now(), Duration::from_secs(60));
        tx.send(PortInput::Inhibit { at, on: true }).unwrap();
        tx.send(PortInput::RemotePtt { on: true, max }).unwrap();
        tx.send(PortInput::Inhibit { at, on: false }).unwrap();
        let got: Vec<_> = drain(&mut rx).iter().map(short).collect();
        assert_eq!(got, ["inhibit true", "remote true", "inhibit false"]);
    }

    /// Every kind of input flooded at once: at most one of each (two per line) waits, the
    /// spurt reports drop their oldest, and the queue never overflows.
    #[test]
    fn every_kind_flooded_stays_within_the_queue() {
        let (tx, mut rx) = inputs();
        let (at, max) = (Instant::now(), Duration::from_secs(1));
        let spurt = SpurtStats { played: 1, gaps: 0, fec_recovered: 0, late: 0, target_ms: 40.0 };
        for i in 0..10_000u32 {
            let on = i % 2 == 0;
            for input in [
                PortInput::Cor { at, asserted: on },
                PortInput::Inhibit { at, on },
                PortInput::TxRequest(on),
                PortInput::Vox { at, dbfs: -(i as f32) },
                PortInput::RemoteInhibit(on),
                PortInput::RemotePtt { on, max },
                PortInput::ChannelAudio,
                PortInput::Channel(format!("c{i}")),
                PortInput::AudioFault(on),
                PortInput::RxLevel(-(i as f32)),
                PortInput::TxLevel(-(i as f32)),
                PortInput::TxSpurt(SpurtStats { played: i.into(), ..spurt }),
            ] {
                tx.send(input).unwrap();
            }
            assert!(tx.len() <= 13 + 8, "{} queued", tx.len());
        }
        let got = drain(&mut rx);
        assert_eq!(got.len(), 13 + 8, "{got:?}");
        assert!(matches!(got.last(), Some(PortInput::TxSpurt(s)) if s.played == 9_999), "{got:?}");
        assert!(got.iter().any(|i| matches!(i, PortInput::Channel(c) if c == "c9999")), "{got:?}");
        assert_eq!(rx.dropped(), 10_000 - 8);
    }

    const CONFIG: &str = r#"
device_id = "t"
[channel.ops]
[port.r1]
kind = "radio"
channel = "ops"
cor = { line = "sim:r1-cor" }
ptt = { line = "sim:r1-ptt" }
"#;

    async fn until(what: impl Fn() -> bool) -> bool {
        for _ in 0..400 {
            if what() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    /// The same flood through the real paths (the COR line's edge callback, the fleet's remote
    /// PTT) into a running port whose task cannot run meanwhile (one thread, busy flooding):
    /// the release that follows reaches the keying core at once, the PTT line is written once
    /// (not keyed and unkeyed 50,000 times), the router hears the COR's last level, and the
    /// port goes on.
    #[tokio::test]
    async fn a_release_after_a_flood_unkeys_the_radio() {
        let config = crate::config::parse_str(CONFIG, "t.toml").unwrap();
        let crate::config::PortConfig::Radio(radio) = &config.port["r1"] else { panic!("not a radio") };
        let mut gpio = crate::gpio::Gpio::new(&config.gpio);
        let ptt = PttLine::register(gpio.open_output(&radio.ptt).unwrap());
        let (tx, rx) = inputs();
        let cor_line = radio.cor.as_ref().and_then(|c| c.line.as_ref()).unwrap();
        let cor = super::super::open_edge_input(&mut gpio, cor_line, tx.clone(), |at, asserted| PortInput::Cor {
            at,
            asserted,
        })
        .unwrap();
        let (to_channel, mut router) = mpsc::channel(64);
        let watchdog = super::super::watchdog::Watchdog::default();
        let port = RadioPort {
            id: 0,
            name: "r1".into(),
            channel: "ops".into(),
            keying: super::super::audio_port::keying(radio, None),
            ptt,
            inputs: rx,
            to_channel,
            heartbeat: watchdog.register("r1"),
            audio: None,
            reporter: Reporter::new(None),
            dtmf: None,
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(port.run(cancel.clone()));
        let sim = gpio.sim.clone();
        let keyed = || sim.output_level("r1-ptt") == Some(true);
        let max = Duration::from_secs(60);
        let mut rx_active = async |want: bool| {
            let wait = async {
                while let Some(msg) = router.recv().await {
                    if matches!(msg, ChannelMsg::RxActive { active, .. } if active == want) {
                        return;
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(2), wait).await.is_ok()
        };

        tx.send(PortInput::RemotePtt { on: true, max }).unwrap();
        assert!(until(keyed).await, "the remote PTT keys");
        let writes = sim.output_history("r1-ptt").len();
        for i in 0..100_000 {
            sim.drive_input("r1-cor", i % 2 == 1, clock::now());
            tx.send(PortInput::RemotePtt { on: i % 2 == 0, max }).unwrap();
        }
        tx.send(PortInput::RemotePtt { on: false, max }).unwrap();
        assert!(tx.len() <= 3, "{} inputs queued", tx.len());
        assert!(keyed(), "the port has not run yet");
        assert!(until(|| !keyed()).await, "the release unkeys");
        assert_eq!(sim.output_history("r1-ptt").len(), writes + 1, "one write: the unkey");
        assert!(rx_active(true).await, "the COR's last level (open) reaches the router");

        sim.drive_input("r1-cor", false, clock::now());
        assert!(rx_active(false).await, "the COR closes");
        tx.send(PortInput::RemotePtt { on: true, max }).unwrap();
        assert!(until(keyed).await, "the port still keys");
        cancel.cancel();
        task.await.unwrap();
        assert!(!keyed(), "shutdown unkeys");
        drop(cor);
    }
}
