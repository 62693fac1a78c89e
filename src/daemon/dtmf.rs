//! DTMF commands of one radio port, as its keying task runs them: digits from the capture
//! thread go through the sans-IO matcher ([`crate::core::dtmf_command`]); a channel change goes
//! to the same [`super::control::Control`] that carries out the fleet's MQTT commands (one
//! action path), and its answer comes back to the port without the port ever waiting for it;
//! every ended command is an MQTT `dtmf` event; the radio hears a reply keyed through the
//! keying core's reply (the station ID's rules: never over a channel talker or a receiving
//! simplex radio, TX delay, TOT).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::core::dtmf_command::{DtmfCommandConfig, DtmfCommands};
use crate::dsp::{ToneSequence, ToneStep};
use crate::fleet::CommandError;
use crate::pipeline::TxPath;

/// A command from inside the box (a radio's DTMF keypad) for [`super::control::Control`],
/// answered as a fleet command is.
#[derive(Debug)]
pub struct LocalCommand {
    pub command: crate::fleet::Command,
    pub reply: oneshot::Sender<Result<Value, CommandError>>,
}

/// Local commands waiting for the control task (a few per second at most come from keypads).
pub const LOCAL_INBOX: usize = 16;

/// Added to a reply's length for its key-up: it starts with the next device frame and passes
/// the device buffer before it is on air (as the station ID).
const REPLY_TAIL: Duration = Duration::from_millis(200);

/// What the radio hears back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Done: a rising pair, 1000 then 1500 Hz.
    Ack,
    /// Refused or failed: three low beeps (400 Hz).
    Error,
    /// Text in CW (the channel's name for `status`).
    Cw(String),
}

impl Reply {
    pub fn sequence(&self, level_dbfs: f32) -> ToneSequence {
        let step = |freq_hz, ms| ToneStep { freq_hz, ms };
        match self {
            Reply::Ack => ToneSequence::new(
                crate::audio::SAMPLE_RATE,
                &[step(1000.0, 100), step(0.0, 40), step(1500.0, 150)],
                level_dbfs,
            ),
            Reply::Error => ToneSequence::new(
                crate::audio::SAMPLE_RATE,
                &[step(400.0, 120), step(0.0, 80), step(400.0, 120), step(0.0, 80), step(400.0, 120)],
                level_dbfs,
            ),
            Reply::Cw(text) => ToneSequence::cw_text(crate::audio::SAMPLE_RATE, text, 20.0, 800.0, level_dbfs),
        }
    }

    /// How long the key-up for `sequence` lasts from the start of its audio.
    pub fn key_length(sequence: &ToneSequence) -> Duration {
        Duration::from_secs_f64(sequence.len_samples() as f64 / f64::from(crate::audio::SAMPLE_RATE)) + REPLY_TAIL
    }
}

/// A command sent on (a channel change to the control task, an emergency to the channel
/// router), not answered yet.
pub struct Pending {
    pub answer: oneshot::Receiver<Result<Value, CommandError>>,
    pub digits: String,
    pub what: PendingCommand,
}

/// What a [`Pending`] answer is for.
pub enum PendingCommand {
    SetChannel(String),
    Emergency,
}

/// A radio port's DTMF commands.
pub struct DtmfPort {
    pub matcher: DtmfCommands,
    pub control: mpsc::Sender<LocalCommand>,
    /// The transmit path the replies play on, and their level (None: replies off or no
    /// playback device).
    pub reply: Option<(Arc<Mutex<TxPath>>, f32)>,
    pub pending: Option<Pending>,
}

impl DtmfPort {
    pub fn new(
        config: DtmfCommandConfig,
        control: mpsc::Sender<LocalCommand>,
        reply: Option<(Arc<Mutex<TxPath>>, f32)>,
    ) -> DtmfPort {
        DtmfPort { matcher: DtmfCommands::new(config), control, reply, pending: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_short_and_audible() {
        for (r, max_ms) in [(Reply::Ack, 300), (Reply::Error, 600), (Reply::Cw("ops".into()), 3000)] {
            let seq = r.sequence(-15.0);
            let len = Reply::key_length(&seq);
            assert!(len > REPLY_TAIL && len <= Duration::from_millis(max_ms) + REPLY_TAIL, "{r:?}: {len:?}");
        }
    }
}
