//! Driver for one radio port: feeds COR edges, channel TX requests and inhibit into the
//! keying core, sleeps until its next deadline, and drives the PTT line to whatever the core
//! says. The PTT level is re-applied after every step (level-driven, not edge-driven), so a
//! missed event can never leave the radio keyed.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::safety::PttLine;
use super::audio_port::AudioFlags;
use super::watchdog::{Heartbeat, BEAT_PERIOD};
use crate::pipeline::TxGate;
use super::{clock, ChannelMsg, PortId};
use crate::core::keying::{Event, Input, Keying};

/// Inputs to a radio port from its lines and from the channel.
#[derive(Debug, Clone, Copy)]
pub enum PortInput {
    /// Stamped where the edge was seen (GPIO thread), not where it is handled.
    Cor { at: Instant, asserted: bool },
    Inhibit { at: Instant, on: bool },
    /// The channel has a talker for this radio (true) or went idle (false).
    TxRequest(bool),
    /// Receive audio level of one capture frame, when VOX is the COR source.
    Vox { at: Instant, dbfs: f32 },
}

pub struct RadioPort {
    pub id: PortId,
    pub name: String,
    pub keying: Keying,
    pub ptt: PttLine,
    pub inputs: mpsc::UnboundedReceiver<PortInput>,
    pub to_channel: mpsc::UnboundedSender<ChannelMsg>,
    pub heartbeat: Heartbeat,
    /// Tells the playback task where the transmitter is (None: no audio configured).
    pub audio: Option<Arc<AudioFlags>>,
}

impl RadioPort {
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut keyed = false;
        let mut beat = tokio::time::interval(BEAT_PERIOD);
        loop {
            let deadline = self.keying.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    self.keying.handle_input(clock::now(), Input::Shutdown);
                    self.apply(&mut keyed);
                    break;
                }
                input = self.inputs.recv() => match input {
                    Some(input) => {
                        let (at, input) = match input {
                            PortInput::Cor { at, asserted } => (at, Input::Cor(asserted)),
                            PortInput::Inhibit { at, on } => (at, Input::Inhibit(on)),
                            PortInput::TxRequest(on) => (clock::now(), Input::TxRequest(on)),
                            PortInput::Vox { at, dbfs } => (at, Input::VoxLevel(dbfs)),
                        };
                        self.keying.handle_input(at, input);
                    }
                    None => {
                        self.keying.handle_input(clock::now(), Input::Shutdown);
                        self.apply(&mut keyed);
                        break;
                    }
                },
                _ = sleep => self.keying.handle_timeout(clock::now()),
                _ = beat.tick() => self.heartbeat.beat(),
            }
            self.apply(&mut keyed);
        }
        info!(port = %self.name, "radio port stopped, PTT released");
    }

    /// Drive PTT to the core's level and pass its events on.
    fn apply(&mut self, keyed: &mut bool) {
        let want = self.keying.ptt();
        if want != *keyed {
            if let Err(e) = self.ptt.set(want) {
                error!(port = %self.name, line = self.ptt.name(), error = %e, "PTT line write failed");
            }
            *keyed = want;
        }
        if let Some(audio) = &self.audio {
            audio.set_gate(match (self.keying.ptt(), self.keying.tx_audio()) {
                (true, true) => TxGate::Open,
                (true, false) => TxGate::Hold,
                _ => TxGate::Closed,
            });
        }
        while let Some(event) = self.keying.poll_event() {
            match event {
                Event::RxOpen => {
                    info!(port = %self.name, "COR open");
                    let _ = self.to_channel.send(ChannelMsg::RxActive { port: self.id, active: true });
                }
                Event::RxClose => {
                    info!(port = %self.name, "COR closed");
                    let _ = self.to_channel.send(ChannelMsg::RxActive { port: self.id, active: false });
                }
                Event::PttOn => info!(port = %self.name, line = self.ptt.name(), "PTT on"),
                Event::PttOff(reason) => info!(port = %self.name, ?reason, "PTT off"),
                Event::TotFired => warn!(port = %self.name, "time-out timer fired, transmitter unkeyed"),
                Event::RxTimeout => warn!(port = %self.name, "COR stuck open, receive timed out"),
                Event::FlapSuppressed => warn!(port = %self.name, "COR flapping, ignored for now"),
                other => debug!(port = %self.name, event = ?other, "keying"),
            }
        }
    }
}
