//! The device thread harness shared by every backend: open with retry and backoff, the run loop
//! (pacing, queue policy, silence on underrun), state, counters, events and prompt stop.
//!
//! Backends only know how to open, move one chunk of audio and close; see [`Source`] and [`Sink`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::queue::{FrameQueue, Overflow, Popped, Pushed, Wait};
use super::rt::{self, RtPolicy};
use super::{
    sim, AudioError, AudioOptions, AudioStats, DeviceEvent, DeviceEventKind, DeviceSpec, DeviceState, Direction,
    EventCallback, Feed, Pacing, Tap,
};

/// Blocking calls inside backends return at least this often, so a stop is seen promptly.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// A paced sim device that falls this many periods behind its clock skips ahead instead of
/// bursting to catch up (counted as an xrun).
const MAX_BEHIND_PERIODS: u32 = 10;

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
    retry_initial: Duration,
    retry_max: Duration,
    events: Option<EventCallback>,
    mode: AtomicU8,
    /// Wakes sleeps (pacing, backoff, pause) when the mode changes or a paused feed is poked.
    wake: (Mutex<()>, Condvar),
    /// A fed playback device is paused (its feed idle): pokes must wake it.
    paused: AtomicBool,
    /// A [`super::PlaybackWaker`] asked the paused device to start.
    poked: AtomicBool,
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
    fn new(name: &str, direction: Direction, opts: &AudioOptions) -> Shared {
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
    fn sleep_paused(&self, deadline: Instant) -> bool {
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

    fn set_state(&self, state: DeviceState) {
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

    fn opened(&self, config: String, recovered: bool) {
        self.set_state(DeviceState::Running);
        if recovered {
            self.reopens.fetch_add(1, Ordering::Relaxed);
            tracing::info!(device = %self.name, dir = %self.direction, %config, "audio device recovered");
        } else {
            tracing::info!(device = %self.name, dir = %self.direction, %config, "audio device open");
        }
        self.emit(DeviceEventKind::Opened { config, recovered });
    }

    fn lost(&self, error: String) {
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

    fn retrying(&self, attempt: u32, delay: Duration) {
        self.set_state(DeviceState::Retrying);
        if attempt == 1 {
            tracing::info!(device = %self.name, dir = %self.direction, ?delay, "audio device retrying");
        } else {
            tracing::debug!(device = %self.name, dir = %self.direction, attempt, ?delay, "audio device retrying");
        }
        self.emit(DeviceEventKind::Retrying { attempt, delay });
    }

    fn finished(&self) {
        self.queue.close();
        self.set_state(DeviceState::Stopped);
        tracing::debug!(device = %self.name, dir = %self.direction, "audio device stopped");
        self.emit(DeviceEventKind::Stopped);
    }

    /// Queue a captured frame according to the pacing policy.
    fn deliver(&self, frame: &[f32]) {
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

/// Backoff between open attempts: `initial`, doubling up to `max`, reset after a good open.
struct Backoff {
    next: Duration,
    attempt: u32,
}

impl Backoff {
    fn new(shared: &Shared) -> Self {
        Backoff { next: shared.retry_initial, attempt: 0 }
    }

    fn reset(&mut self, shared: &Shared) {
        *self = Backoff::new(shared);
    }

    /// Wait before the next attempt, calling `tick` at least every [`POLL`]; false if the owner
    /// asked to stop (or drain) meanwhile.
    fn wait(&mut self, shared: &Shared, tick: &mut dyn FnMut()) -> bool {
        self.attempt += 1;
        let delay = self.next;
        self.next = (self.next * 2).min(shared.retry_max);
        shared.retrying(self.attempt, delay);
        let deadline = Instant::now() + delay;
        loop {
            tick();
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            if shared.sleep_until(deadline.min(now + POLL), Mode::Drain) {
                return false;
            }
        }
    }
}

/// Absolute deadlines every period: sleeping never accumulates drift.
struct Clock {
    due: Instant,
    period: Duration,
}

impl Clock {
    fn new(first_due: Instant, period: Duration) -> Self {
        Clock { due: first_due, period }
    }

    /// Sleep until the next deadline. True if stopped meanwhile.
    fn tick(&mut self, shared: &Shared) -> bool {
        let now = Instant::now();
        if now > self.due + self.period * MAX_BEHIND_PERIODS {
            // Starved of CPU (or suspended): skip ahead rather than burst out the backlog.
            shared.xrun(false);
            self.due = now;
        }
        let stopped = shared.sleep_until(self.due, Mode::Stop);
        self.due += self.period;
        stopped
    }
}

fn backend_source(spec: DeviceSpec) -> Box<dyn Source> {
    match spec {
        #[cfg(target_os = "linux")]
        DeviceSpec::Alsa(name) => Box::new(super::alsa::AlsaCapture::new(name)),
        spec => Box::new(sim::SimSource::new(spec)),
    }
}

fn backend_sink(spec: DeviceSpec) -> Box<dyn Sink> {
    match spec {
        #[cfg(target_os = "linux")]
        DeviceSpec::Alsa(name) => Box::new(super::alsa::AlsaPlayback::new(name)),
        spec => Box::new(sim::SimSink::new(spec)),
    }
}

fn spawn(
    name: &str,
    dir: Direction,
    opts: &AudioOptions,
    body: impl FnOnce(Arc<Shared>) + Send + 'static,
) -> Result<(Arc<Shared>, JoinHandle<()>), AudioError> {
    let shared = Arc::new(Shared::new(name, dir, opts));
    let tag = if dir == Direction::Capture { "cap" } else { "play" };
    let thread = std::thread::Builder::new()
        .name(format!("audio-{tag}"))
        .spawn({
            let shared = shared.clone();
            move || {
                // A device thread late by more than the device buffers is a gap on air: ask for
                // real-time priority, and say what we got.
                match rt::promote_current_thread(rt::AUDIO_PRIORITY) {
                    RtPolicy::Fifo(_) => {
                        let policy = format!("SCHED_FIFO {}", rt::AUDIO_PRIORITY);
                        tracing::info!(device = %shared.name, dir = %shared.direction, %policy, "audio thread scheduling")
                    }
                    RtPolicy::Normal(why) => tracing::warn!(
                        device = %shared.name, dir = %shared.direction, policy = "SCHED_OTHER", %why,
                        "audio thread not real-time: dropouts likely under CPU load"
                    ),
                }
                body(shared)
            }
        })
        .map_err(|e| AudioError::Thread(name.to_string(), e.to_string()))?;
    Ok((shared, thread))
}

pub(crate) fn spawn_capture(
    name: &str,
    spec: DeviceSpec,
    opts: &AudioOptions,
    tap: Option<Box<dyn Tap>>,
) -> Result<(Arc<Shared>, JoinHandle<()>), AudioError> {
    let source = backend_source(spec);
    spawn(name, Direction::Capture, opts, move |shared| run_capture(&shared, source, tap))
}

pub(crate) fn spawn_playback(
    name: &str,
    spec: DeviceSpec,
    opts: &AudioOptions,
    feed: Option<Box<dyn Feed>>,
) -> Result<(Arc<Shared>, JoinHandle<()>), AudioError> {
    let mut sink = backend_sink(spec);
    if feed.is_some() {
        sink.keep_lead();
    }
    spawn(name, Direction::Playback, opts, move |shared| run_playback(&shared, sink, feed))
}

/// The steady clock handed to a [`Feed`]: one period per frame, pulled slowly towards the wall
/// clock (so device clock drift is followed), restarted after a jump of several periods (xrun,
/// skip-ahead, reopen). A catch-up burst after a late wake-up keeps its even spacing.
pub(crate) struct FeedClock {
    grid: Option<Instant>,
    period: Duration,
}

impl FeedClock {
    pub(crate) fn new(period: Duration) -> Self {
        FeedClock { grid: None, period }
    }

    /// Share of the distance to the wall clock corrected per frame.
    const GAIN: u32 = 8;
    /// Beyond this many periods from the wall clock, restart on it.
    const SNAP: u32 = 4;

    pub(crate) fn next(&mut self, now: Instant) -> Instant {
        let limit = self.period * Self::SNAP;
        let at = match self.grid {
            Some(g) if now >= g && now - g <= limit => g + (now - g) / Self::GAIN,
            Some(g) if now < g && g - now <= limit => g - (g - now) / Self::GAIN,
            _ => now,
        };
        self.grid = Some(at + self.period);
        at
    }
}

fn run_capture(shared: &Shared, mut source: Box<dyn Source>, mut tap: Option<Box<dyn Tap>>) {
    let mut backoff = Backoff::new(shared);
    let mut opened_before = false;
    while !shared.stopping() {
        shared.set_state(DeviceState::Opening);
        match source.open(shared) {
            Err(error) => shared.lost(error),
            Ok(config) => {
                shared.opened(config, opened_before);
                opened_before = true;
                backoff.reset(shared);
                let paced = !source.clocked() && shared.pacing == Pacing::Realtime;
                // A frame is due once its whole period has passed.
                let mut clock = Clock::new(Instant::now() + shared.period(), shared.period());
                let failure = loop {
                    if shared.stopping() || (paced && clock.tick(shared)) {
                        break None;
                    }
                    let read = match &mut tap {
                        Some(t) => {
                            t.tick();
                            source.read(shared, &mut |frame: &[f32]| {
                                shared.frames.fetch_add(1, Ordering::Relaxed);
                                t.frame(Instant::now(), frame)
                            })
                        }
                        None => source.read(shared, &mut |frame: &[f32]| shared.deliver(frame)),
                    };
                    if let Err(error) = read {
                        break Some(error);
                    }
                };
                source.close();
                match failure {
                    None => break,
                    Some(error) => shared.lost(error),
                }
            }
        }
        let mut tick = || {
            if let Some(t) = &mut tap {
                t.tick();
            }
        };
        if !backoff.wait(shared, &mut tick) {
            break;
        }
    }
    shared.finished();
}

/// Idle frames fed after the last sound before a fed device pauses: what the device buffers
/// (and a frame of slack) plays out first.
const PAUSE_AFTER_IDLE_FRAMES: u32 = 8;

/// Sleep while the feed is idle, ticking it every [`POLL`]. None: start again (poked, or the
/// feed has something after all); Some: the owner asked to stop or drain meanwhile.
fn wait_while_idle(shared: &Shared, feed: &mut dyn Feed) -> Option<Outcome> {
    // Set before looking at the feed: a producer that poked before this saw no pause, but its
    // sound is in the feed by then.
    shared.paused.store(true, Ordering::SeqCst);
    let outcome = loop {
        feed.tick();
        // Nothing is buffered to drain: a drain is a stop.
        if shared.mode() != Mode::Run {
            break Some(Outcome::Stop);
        }
        if !feed.idle() || shared.sleep_paused(Instant::now() + POLL) {
            break None;
        }
    };
    shared.paused.store(false, Ordering::SeqCst);
    shared.poked.store(false, Ordering::SeqCst);
    outcome
}

enum Outcome {
    Stop,
    Drained,
    Lost(String),
}

fn run_playback(shared: &Shared, mut sink: Box<dyn Sink>, mut feed: Option<Box<dyn Feed>>) {
    let mut backoff = Backoff::new(shared);
    let mut feed_clock = FeedClock::new(shared.period());
    let mut opened_before = false;
    let mut frame = vec![0.0f32; shared.frame_len()];
    // Whether the last frame played was audio (to count starvation once per gap).
    let mut playing = false;
    // A drain asked for before the first open still opens and plays the queue out; one asked
    // for while retrying ends the backoff wait (there is no device to play on).
    while !shared.stopping() {
        shared.set_state(DeviceState::Opening);
        match sink.open(shared) {
            Err(error) => shared.lost(error),
            Ok(config) => {
                shared.opened(config, opened_before);
                opened_before = true;
                backoff.reset(shared);
                let paced = !sink.clocked() && shared.pacing == Pacing::Realtime;
                let mut clock = Clock::new(Instant::now(), shared.period());
                // Frames the feed has been idle for (it pauses the device after a few).
                let mut idle_frames = 0u32;
                let outcome = loop {
                    if shared.stopping() {
                        break Outcome::Stop;
                    }
                    if let Some(f) = &mut feed {
                        f.tick();
                    }
                    if paced {
                        if clock.tick(shared) {
                            break Outcome::Stop;
                        }
                    } else {
                        match sink.ready(shared) {
                            Ok(true) => {}
                            Ok(false) => continue,
                            Err(error) => break Outcome::Lost(error),
                        }
                    }
                    // Pull only when the device can take the frame, so it is as fresh as can be.
                    if let Some(f) = &mut feed {
                        if shared.mode() == Mode::Drain {
                            break Outcome::Drained;
                        }
                        f.fill(feed_clock.next(Instant::now()), &mut frame);
                        if let Err(error) = sink.write(&frame, shared) {
                            break Outcome::Lost(error);
                        }
                        shared.frames.fetch_add(1, Ordering::Relaxed);
                        idle_frames = if f.idle() { idle_frames + 1 } else { 0 };
                        if idle_frames >= PAUSE_AFTER_IDLE_FRAMES && sink.pause() {
                            idle_frames = 0;
                            tracing::debug!(device = %shared.name, "playback paused: nothing to play");
                            if let Some(outcome) = wait_while_idle(shared, f.as_mut()) {
                                break outcome;
                            }
                            tracing::debug!(device = %shared.name, "playback resumed");
                            if let Err(error) = sink.resume(shared) {
                                break Outcome::Lost(error);
                            }
                            // A paced sink's clock starts again now, not where it stopped.
                            clock = Clock::new(Instant::now(), shared.period());
                        }
                        continue;
                    }
                    let wait = match shared.pacing {
                        Pacing::Realtime => Wait::No,
                        Pacing::Fast => Wait::Until(Instant::now() + POLL),
                    };
                    match shared.queue.pop_into(&mut frame, wait) {
                        Popped::Frame => playing = true,
                        Popped::Empty if shared.pacing == Pacing::Fast => continue,
                        Popped::Empty => {
                            frame.fill(0.0);
                            shared.silence_frames.fetch_add(1, Ordering::Relaxed);
                            if std::mem::take(&mut playing) {
                                shared.underruns.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Popped::Closed if shared.mode() == Mode::Drain => break Outcome::Drained,
                        Popped::Closed => break Outcome::Stop,
                    }
                    if let Err(error) = sink.write(&frame, shared) {
                        break Outcome::Lost(error);
                    }
                    shared.frames.fetch_add(1, Ordering::Relaxed);
                };
                match outcome {
                    Outcome::Stop => {
                        sink.close(false);
                        break;
                    }
                    Outcome::Drained => {
                        sink.close(true);
                        break;
                    }
                    Outcome::Lost(error) => {
                        sink.close(false);
                        shared.lost(error);
                    }
                }
            }
        }
        feed_clock.grid = None;
        let mut tick = || {
            if let Some(f) = &mut feed {
                f.tick();
            }
        };
        if !backoff.wait(shared, &mut tick) {
            break;
        }
    }
    shared.finished();
}
