//! What a port's keying task, its audio threads and the channel router share: a few atomics,
//! read and written without waiting (see [`super::audio_port`]).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::OnceLock;

use crate::audio::PlaybackWaker;
use crate::pipeline::TxGate;

/// State shared between a port's keying task, its audio tasks and the channel router.
#[derive(Default)]
pub struct AudioFlags {
    talking: AtomicBool,
    gate: AtomicU8,
    /// The keying core asked for the station ID; the playback thread starts it.
    id_start: AtomicBool,
    /// The keying core started a reply; the playback thread starts its audio.
    reply_start: AtomicBool,
    /// Starts the playback device when it stopped for having nothing to play.
    pub(super) playback: OnceLock<PlaybackWaker>,
}

impl AudioFlags {
    pub fn start_id(&self) {
        self.id_start.store(true, Ordering::Relaxed);
        self.wake_playback();
    }

    pub fn start_reply(&self) {
        self.reply_start.store(true, Ordering::Relaxed);
        self.wake_playback();
    }

    /// For the playback thread: whether to start the reply now (once per request).
    pub fn take_reply_start(&self) -> bool {
        self.reply_start.swap(false, Ordering::Relaxed)
    }

    pub fn reply_pending(&self) -> bool {
        self.reply_start.load(Ordering::Relaxed)
    }

    /// The transmit path got something to play (the router pushed channel audio).
    pub fn wake_playback(&self) {
        if let Some(w) = self.playback.get() {
            w.wake();
        }
    }

    /// A station ID was asked for and the playback thread has not started it yet.
    pub fn id_pending(&self) -> bool {
        self.id_start.load(Ordering::Relaxed)
    }

    /// For the playback thread: whether to start the station ID now (once per request).
    pub fn take_id_start(&self) -> bool {
        self.id_start.swap(false, Ordering::Relaxed)
    }

    pub fn set_talking(&self, on: bool) {
        self.talking.store(on, Ordering::Relaxed);
    }

    pub fn talking(&self) -> bool {
        self.talking.load(Ordering::Relaxed)
    }

    pub fn set_gate(&self, gate: TxGate) {
        let v = match gate {
            TxGate::Closed => 0,
            TxGate::Hold => 1,
            TxGate::Open => 2,
            TxGate::Tail => 3,
        };
        self.gate.store(v, Ordering::Relaxed);
        // A keyed radio gets a running device (silence at least), whatever the channel has.
        if gate != TxGate::Closed {
            self.wake_playback();
        }
    }

    pub fn gate(&self) -> TxGate {
        match self.gate.load(Ordering::Relaxed) {
            1 => TxGate::Hold,
            2 => TxGate::Open,
            3 => TxGate::Tail,
            _ => TxGate::Closed,
        }
    }
}
