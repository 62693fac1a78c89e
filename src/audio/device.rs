//! The device thread harness shared by every backend: open with retry and backoff, the run loop
//! (pacing, queue policy, silence on underrun), state, counters, events and prompt stop.
//!
//! Backends only know how to open, move one chunk of audio and close; see [`Source`] and [`Sink`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::backend::{Mode, Shared, Sink, Source, POLL};
use super::queue::{Popped, Wait};
use super::rt::{self, RtPolicy};
use super::{AudioError, AudioOptions, DeviceState, Direction, Feed, Pacing, Tap};

/// A paced sim device that falls this many periods behind its clock skips ahead instead of
/// bursting to catch up (counted as an xrun).
const MAX_BEHIND_PERIODS: u32 = 10;

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
    source: Box<dyn Source>,
    opts: &AudioOptions,
    tap: Option<Box<dyn Tap>>,
) -> Result<(Arc<Shared>, JoinHandle<()>), AudioError> {
    spawn(name, Direction::Capture, opts, move |shared| run_capture(&shared, source, tap))
}

pub(crate) fn spawn_playback(
    name: &str,
    mut sink: Box<dyn Sink>,
    opts: &AudioOptions,
    feed: Option<Box<dyn Feed>>,
) -> Result<(Arc<Shared>, JoinHandle<()>), AudioError> {
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
