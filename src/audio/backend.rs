//! What a backend (ALSA, sim) sees of its device thread: the [`Source`] and [`Sink`] traits it
//! implements and the [`Shared`] state it is handed (mode, pacing, counters, the stop it must
//! notice within [`POLL`]). The harness that runs them is in `device.rs`; which backend a
//! device name picks is decided in `mod.rs`. Backends depend on this file only.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::queue::{FrameQueue, Overflow, Pushed};
use super::{AudioOptions, AudioStats, DeviceEvent, DeviceEventKind, DeviceState, Direction, EventCallback, Pacing};

/// Blocking calls inside backends return at least this often, so a stop is seen promptly.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// What the owner wants from the thread; only ever moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Mode {
    Run = 0,
    /// Playback: play out the queue, then stop.
    Drain = 1,
    Stop = 2,
}

/// A capture backend.
pub(crate) trait Source: Send {
    /// Open (or reopen) the device. Ok: what was negotiated, for logs and events.
    fn open(&mut self, ctx: &Shared) -> Result<String, String>;
    /// True when the device keeps time itself (ALSA); false for sim devices, which the harness
    /// paces in [`Pacing::Realtime`].
    fn clocked(&self) -> bool;
    /// Hand zero or more 48 kHz frames to `emit`, blocking at most about [`POLL`].
    /// Err: the device is lost (it will be closed and reopened).
    fn read(&mut self, ctx: &Shared, emit: &mut dyn FnMut(&[f32])) -> Result<(), String>;
    fn close(&mut self);
}

/// A playback backend.
pub(crate) trait Sink: Send {
    fn open(&mut self, ctx: &Shared) -> Result<String, String>;
    fn clocked(&self) -> bool;
    /// Wait until the device can take a frame, at most about [`POLL`]; Ok(false) if not yet.
    fn ready(&mut self, _ctx: &Shared) -> Result<bool, String> {
        Ok(true)
    }
    /// Play one 48 kHz frame.
    fn write(&mut self, frame: &[f32], ctx: &Shared) -> Result<(), String>;
    /// Stop the device clock while there is nothing to play (what it buffers is dropped), so
    /// the thread can sleep. False: this backend cannot, and keeps playing silence.
    fn pause(&mut self) -> bool {
        false
    }
    /// Start again after a [`pause`](Self::pause); the next writes play at once.
    fn resume(&mut self, _ctx: &Shared) -> Result<(), String> {
        Ok(())
    }
    /// Frames come from a [`Feed`] on this thread as the device takes them, not from a queue
    /// filled on another clock: a backend may keep just a short lead queued (called before open).
    fn keep_lead(&mut self) {}
    /// `drain`: let what the device buffers play out first (bounded).
    fn close(&mut self, drain: bool);
}

/// State shared between a handle and its device thread.
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) direction: Direction,
    pub(crate) pacing: Pacing,
    pub(crate) period_ms: u32,
    /// ALSA period, ms (a multiple of `period_ms`).
    pub(crate) device_period_ms: u32,
    pub(crate) queue: FrameQueue,
    pub(super) retry_initial: Duration,
    pub(super) retry_max: Duration,
    events: Option<EventCallback>,
    mode: AtomicU8,
    /// Wakes sleeps (pacing, backoff, pause) when the mode changes or a paused feed is poked.
    wake: (Mutex<()>, Condvar),
    /// A fed playback device is paused (its feed idle): pokes must wake it.
    pub(super) paused: AtomicBool,
    /// A [`super::PlaybackWaker`] asked the paused device to start.
    pub(super) poked: AtomicBool,
    state: AtomicU8,
    pub(crate) frames: AtomicU64,
    pub(crate) xruns: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) underruns: AtomicU64,
    pub(crate) silence_frames: AtomicU64,
    pub(crate) reopens: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    pub(super) fn new(name: &str, direction: Direction, opts: &AudioOptions) -> Shared {
        Shared {
            name: name.into(),
            direction,
            pacing: opts.pacing,
            period_ms: opts.period_ms,
            device_period_ms: opts.device_period_ms(),
            queue: FrameQueue::new(opts.frame_len(), opts.queue_frames),
            retry_initial: opts.retry_initial,
            retry_max: opts.retry_max.max(opts.retry_initial),
            events: opts.events.clone(),
            mode: AtomicU8::new(Mode::Run as u8),
            wake: (Mutex::new(()), Condvar::new()),
            paused: AtomicBool::new(false),
            poked: AtomicBool::new(false),
            state: AtomicU8::new(DeviceState::Opening as u8),
            frames: AtomicU64::new(0),
            xruns: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            underruns: AtomicU64::new(0),
            silence_frames: AtomicU64::new(0),
            reopens: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    pub(crate) fn frame_len(&self) -> usize {
        self.queue.frame_len()
    }

    pub(crate) fn period(&self) -> Duration {
        Duration::from_millis(u64::from(self.period_ms))
    }

    pub(crate) fn mode(&self) -> Mode {
        match self.mode.load(Ordering::Acquire) {
            0 => Mode::Run,
            1 => Mode::Drain,
            _ => Mode::Stop,
        }
    }

    pub(crate) fn stopping(&self) -> bool {
        self.mode() == Mode::Stop
    }

    pub(crate) fn set_mode(&self, mode: Mode) {
        self.mode.fetch_max(mode as u8, Ordering::AcqRel);
        // No more pushes; waiting readers and writers wake up.
        self.queue.close();
        let _guard = self.wake.0.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.1.notify_all();
    }

    /// Sleep until `deadline` or until the mode reaches `wake_on`. True if it did.
    pub(crate) fn sleep_until(&self, deadline: Instant, wake_on: Mode) -> bool {
        let mut guard = self.wake.0.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.mode() >= wake_on {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = self.wake.1.wait_timeout(guard, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Wake a paused fed device (see [`super::PlaybackWaker`]). Only an atomic load while it
    /// runs. SeqCst pairs with the thread's store of `paused` before it looks at its feed: a
    /// poke either sees the pause or happened before that look.
    pub(crate) fn poke(&self) {
        if self.paused.load(Ordering::SeqCst) {
            self.poked.store(true, Ordering::SeqCst);
            let _guard = self.wake.0.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.1.notify_all();
        }
    }

    /// Sleep while paused until `deadline`, a poke, or a stop or drain. True if poked.
    pub(super) fn sleep_paused(&self, deadline: Instant) -> bool {
        let mut guard = self.wake.0.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.poked.swap(false, Ordering::SeqCst) {
                return true;
            }
            let now = Instant::now();
            if self.mode() >= Mode::Drain || now >= deadline {
                return false;
            }
            guard = self.wake.1.wait_timeout(guard, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    fn state(&self) -> DeviceState {
        match self.state.load(Ordering::Acquire) {
            0 => DeviceState::Opening,
            1 => DeviceState::Running,
            2 => DeviceState::Lost,
            3 => DeviceState::Retrying,
            _ => DeviceState::Stopped,
        }
    }

    pub(super) fn set_state(&self, state: DeviceState) {
        self.state.store(state as u8, Ordering::Release);
    }

    pub(crate) fn stats(&self) -> AudioStats {
        AudioStats {
            state: self.state(),
            frames: self.frames.load(Ordering::Relaxed),
            xruns: self.xruns.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            underruns: self.underruns.load(Ordering::Relaxed),
            silence_frames: self.silence_frames.load(Ordering::Relaxed),
            reopens: self.reopens.load(Ordering::Relaxed),
            last_error: self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    fn emit(&self, kind: DeviceEventKind) {
        if let Some(cb) = &self.events {
            cb(&DeviceEvent { device: self.name.clone(), direction: self.direction, kind });
        }
    }

    /// An xrun or suspend was recovered (backends call this).
    pub(crate) fn xrun(&self, suspend: bool) {
        let total = self.xruns.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(device = %self.name, dir = %self.direction, total, suspend, "audio xrun recovered");
        self.emit(DeviceEventKind::Xrun { total, suspend });
    }

    pub(super) fn opened(&self, config: String, recovered: bool) {
        self.set_state(DeviceState::Running);
        if recovered {
            self.reopens.fetch_add(1, Ordering::Relaxed);
            tracing::info!(device = %self.name, dir = %self.direction, %config, "audio device recovered");
        } else {
            tracing::info!(device = %self.name, dir = %self.direction, %config, "audio device open");
        }
        self.emit(DeviceEventKind::Opened { config, recovered });
    }

    pub(super) fn lost(&self, error: String) {
        self.set_state(DeviceState::Lost);
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        // A device that stays missing fails the same way every retry: say it loudly once.
        if last.as_deref() != Some(error.as_str()) {
            tracing::warn!(device = %self.name, dir = %self.direction, %error, "audio device lost");
        } else {
            tracing::debug!(device = %self.name, dir = %self.direction, %error, "audio device still failing");
        }
        *last = Some(error.clone());
        drop(last);
        self.emit(DeviceEventKind::Lost { error });
    }

    pub(super) fn retrying(&self, attempt: u32, delay: Duration) {
        self.set_state(DeviceState::Retrying);
        if attempt == 1 {
            tracing::info!(device = %self.name, dir = %self.direction, ?delay, "audio device retrying");
        } else {
            tracing::debug!(device = %self.name, dir = %self.direction, attempt, ?delay, "audio device retrying");
        }
        self.emit(DeviceEventKind::Retrying { attempt, delay });
    }

    pub(super) fn finished(&self) {
        self.queue.close();
        self.set_state(DeviceState::Stopped);
        tracing::debug!(device = %self.name, dir = %self.direction, "audio device stopped");
        self.emit(DeviceEventKind::Stopped);
    }

    /// Queue a captured frame according to the pacing policy.
    pub(super) fn deliver(&self, frame: &[f32]) {
        let overflow = match self.pacing {
            Pacing::Realtime => Overflow::DropOldest,
            Pacing::Fast => Overflow::Wait,
        };
        match self.queue.push(frame, overflow) {
            Pushed::Queued => {
                self.frames.fetch_add(1, Ordering::Relaxed);
            }
            Pushed::DroppedOldest => {
                self.frames.fetch_add(1, Ordering::Relaxed);
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Pushed::Closed => {}
        }
    }
}
