//! Audio devices: ALSA PCMs and simulated sources/sinks, each on its own thread behind a bounded
//! frame queue.
//!
//! Everything outside this module sees one format: **48 kHz mono `f32` in [-1, 1]**, in frames of
//! [`AudioOptions::period_ms`] (10 ms = 480 samples by default; 20 ms = 960 also works). Drivers
//! convert sample format, channel count and rate at the edge.
//!
//! ```no_run
//! use std::time::Duration;
//! use roipd::audio::{self, AudioOptions};
//!
//! let opts = AudioOptions::default();
//! let rx = audio::open_capture("plughw:CARD=Device,DEV=0", &opts)?;
//! let tx = audio::open_playback("sim:wav-out:/tmp/tx.wav", &opts)?;
//! let mut frame = vec![0.0f32; rx.frame_len()];
//! while rx.recv_timeout(&mut frame, Duration::from_millis(100)).is_ok() {
//!     tx.push(&frame)?; // never blocks with the default (real-time) pacing
//! }
//! println!("{:?}", rx.stats());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Device names (see [`DeviceSpec`]): any ALSA PCM name (`plughw:CARD=Device,DEV=0`, `default`,
//! a name from asound.conf), or `sim:tone:<hz>[:<dbfs>]`, `sim:silence`, `sim:wav:<path>`
//! (capture), `sim:null`, `sim:wav-out:<path>`, `sim:wav-rec:<path>` (playback).
//!
//! Queues and latency ([`Pacing::Realtime`], the default): a capture thread drops the *oldest*
//! frame when the reader falls behind, a playback thread plays silence when the queue is empty and
//! drops the oldest frame when the writer runs ahead, so latency is bounded by the queue depth and
//! never grows. Everything is counted in [`AudioStats`]. [`Pacing::Fast`] trades that for
//! losslessness (for tests and offline runs): see its doc.
//!
//! Failures never panic and never block the caller: a device that cannot be opened or goes away
//! (USB unplug) is retried with backoff on its own thread, visible as [`DeviceState::Retrying`]
//! in the stats, logged, and reported through [`AudioOptions::events`].

#[cfg(target_os = "linux")]
mod alsa;
mod backend;
mod device;
pub(crate) mod queue;
mod resample;
pub mod rt;
mod sim;
#[cfg(test)]
pub(crate) mod test_util;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use backend::{Mode, Shared, Sink, Source};
use queue::{Overflow, Popped, Pushed, Wait};

/// The internal sample rate, Hz.
pub const SAMPLE_RATE: u32 = 48_000;

/// How device threads keep time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pacing {
    /// Live audio. Sim devices produce/consume a frame every period on a drift-free clock
    /// (absolute deadlines); ALSA devices run on their own clock. Capture drops the oldest frame
    /// when the reader is slow; playback plays silence when starved and drops the oldest frame
    /// when the writer is fast.
    #[default]
    Realtime,
    /// No clock and no loss: sim devices run as fast as the other side allows; capture waits for
    /// the reader when its queue is full, playback waits for frames instead of playing silence,
    /// and [`PlaybackHandle::push`] waits for room. For tests, offline conversion and unclocked
    /// ALSA plugins (`file`, `null`); on a real sound card it turns into xruns.
    Fast,
}

/// Capture or playback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Capture,
    Playback,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Capture => "capture",
            Direction::Playback => "playback",
        })
    }
}

/// Called on the device thread for every [`DeviceEvent`]. Keep it short and never block
/// (e.g. `try_send` into a channel).
pub type EventCallback = Arc<dyn Fn(&DeviceEvent) + Send + Sync>;

/// How to run a device.
#[derive(Clone)]
pub struct AudioOptions {
    /// Frame period in milliseconds (1-100; 10 and 20 are the useful ones).
    pub period_ms: u32,
    /// ALSA period in milliseconds, a multiple of `period_ms` (0: the same). The thread wakes
    /// once per device period: a capture whose frames are only used in pairs (20 ms Opus
    /// frames) halves its wakeups at 20 without adding latency.
    pub device_period_ms: u32,
    /// Queue depth in frames: the most audio that can wait between the device and the daemon.
    pub queue_frames: usize,
    pub pacing: Pacing,
    /// First retry delay after a device fails or disappears; doubles up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub events: Option<EventCallback>,
}

impl Default for AudioOptions {
    fn default() -> Self {
        AudioOptions {
            period_ms: 10,
            device_period_ms: 0,
            queue_frames: 8,
            pacing: Pacing::Realtime,
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(10),
            events: None,
        }
    }
}

impl fmt::Debug for AudioOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AudioOptions")
            .field("period_ms", &self.period_ms)
            .field("device_period_ms", &self.device_period_ms)
            .field("queue_frames", &self.queue_frames)
            .field("pacing", &self.pacing)
            .field("retry_initial", &self.retry_initial)
            .field("retry_max", &self.retry_max)
            .field("events", &self.events.is_some())
            .finish()
    }
}

impl AudioOptions {
    /// Samples per frame at 48 kHz.
    pub fn frame_len(&self) -> usize {
        (SAMPLE_RATE / 1000 * self.period_ms) as usize
    }

    pub fn period(&self) -> Duration {
        Duration::from_millis(u64::from(self.period_ms))
    }

    /// The ALSA period, ms.
    pub fn device_period_ms(&self) -> u32 {
        if self.device_period_ms == 0 {
            self.period_ms
        } else {
            self.device_period_ms
        }
    }

    fn validate(&self) -> Result<(), AudioError> {
        if !(1..=100).contains(&self.period_ms) {
            return Err(AudioError::Options(format!("period_ms {} is not within 1-100", self.period_ms)));
        }
        let device = self.device_period_ms;
        if device != 0 && (device % self.period_ms != 0 || device > 100) {
            return Err(AudioError::Options(format!(
                "device_period_ms {device} is not a multiple of period_ms {} within 100",
                self.period_ms
            )));
        }
        if !(1..=1000).contains(&self.queue_frames) {
            return Err(AudioError::Options(format!("queue_frames {} is not within 1-1000", self.queue_frames)));
        }
        Ok(())
    }
}

/// A parsed device name.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceSpec {
    /// Any PCM name alsa-lib accepts.
    Alsa(String),
    /// `sim:tone:<hz>[:<dbfs>]`: a sine at `hz`, peak level `dbfs` (default -10 dBFS).
    Tone { hz: f64, dbfs: f64 },
    /// `sim:silence`.
    Silence,
    /// `sim:wav:<path>`: any rate, channel count and PCM/float format, converted to 48 kHz mono.
    /// It **loops** (a source never runs dry, like a radio that keeps talking); an empty file
    /// gives silence.
    Wav(PathBuf),
    /// `sim:null`: discards everything.
    Null,
    /// `sim:wav-out:<path>`: 48 kHz mono 16-bit WAV. The header is rewritten about once a second
    /// and when the device closes, so the file is valid at any time.
    WavOut(PathBuf),
    /// `sim:wav-rec:<path>`: like `sim:wav-out`, but it holds only what was played: a fed
    /// device pauses while its feed is idle, and nothing is written meanwhile (a demo left
    /// running does not fill its disk with silence).
    WavRec(PathBuf),
}

/// Default level of `sim:tone`, dBFS.
pub const DEFAULT_TONE_DBFS: f64 = -10.0;

impl DeviceSpec {
    pub fn parse(name: &str) -> Result<DeviceSpec, AudioError> {
        let bad = |why: &str| AudioError::BadName(name.to_string(), why.to_string());
        let Some(rest) = name.strip_prefix("sim:") else {
            if name.trim().is_empty() {
                return Err(bad("empty device name"));
            }
            if name.contains('\0') {
                return Err(bad("NUL in device name"));
            }
            return Ok(DeviceSpec::Alsa(name.to_string()));
        };
        let (kind, arg) = rest.split_once(':').unwrap_or((rest, ""));
        match kind {
            "tone" => {
                let (hz, dbfs) = arg.split_once(':').unwrap_or((arg, ""));
                let hz: f64 = hz.parse().map_err(|_| bad("expected sim:tone:<hz>[:<dbfs>]"))?;
                if !(hz > 0.0 && hz < f64::from(SAMPLE_RATE) / 2.0) {
                    return Err(bad("tone frequency must be above 0 and below 24000 Hz"));
                }
                let dbfs = if dbfs.is_empty() {
                    DEFAULT_TONE_DBFS
                } else {
                    dbfs.parse().map_err(|_| bad("tone level must be a number of dBFS, e.g. -10"))?
                };
                if !(-200.0..=0.0).contains(&dbfs) {
                    return Err(bad("tone level must be within -200..0 dBFS"));
                }
                Ok(DeviceSpec::Tone { hz, dbfs })
            }
            "silence" if arg.is_empty() => Ok(DeviceSpec::Silence),
            "null" if arg.is_empty() => Ok(DeviceSpec::Null),
            "wav" if !arg.is_empty() => Ok(DeviceSpec::Wav(arg.into())),
            "wav-out" if !arg.is_empty() => Ok(DeviceSpec::WavOut(arg.into())),
            "wav-rec" if !arg.is_empty() => Ok(DeviceSpec::WavRec(arg.into())),
            "wav" | "wav-out" | "wav-rec" => Err(bad("missing file path")),
            _ => Err(bad("unknown sim device; expected sim:tone:<hz>[:<dbfs>], sim:silence, sim:wav:<path>, \
                 sim:null, sim:wav-out:<path> or sim:wav-rec:<path>")),
        }
    }

    /// Whether this device can be opened in `dir`.
    pub fn supports(&self, dir: Direction) -> bool {
        match self {
            DeviceSpec::Alsa(_) => true,
            DeviceSpec::Tone { .. } | DeviceSpec::Silence | DeviceSpec::Wav(_) => dir == Direction::Capture,
            DeviceSpec::Null | DeviceSpec::WavOut(_) | DeviceSpec::WavRec(_) => dir == Direction::Playback,
        }
    }
}

/// Why a device could not even be started. (Failures after that are retried, not returned.)
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("bad audio device name `{0}`: {1}")]
    BadName(String, String),
    #[error("audio device `{0}` cannot be used for {1}")]
    WrongDirection(String, Direction),
    #[error("bad audio options: {0}")]
    Options(String),
    #[error("audio device `{0}`: ALSA is only available on Linux")]
    Unsupported(String),
    #[error("audio device `{0}`: cannot start its thread: {1}")]
    Thread(String, String),
}

/// Where a device is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceState {
    /// Opening (first time or after a loss).
    Opening,
    /// Open and moving audio.
    Running,
    /// Just failed or disappeared; a retry follows.
    Lost,
    /// Waiting out the backoff before the next open attempt.
    Retrying,
    /// The thread has ended.
    Stopped,
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceState::Opening => "opening",
            DeviceState::Running => "running",
            DeviceState::Lost => "lost",
            DeviceState::Retrying => "retrying",
            DeviceState::Stopped => "stopped",
        })
    }
}

/// Counters of one device, read lock-free (except `last_error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioStats {
    pub state: DeviceState,
    /// Capture: frames delivered into the queue. Playback: frames played, silence included.
    pub frames: u64,
    /// Device overruns/underruns (ALSA EPIPE) and suspends (ESTRPIPE), each recovered; for sim
    /// devices, times the thread fell so far behind its clock that it skipped ahead.
    pub xruns: u64,
    /// Oldest frames dropped from a full queue (reader too slow, or playback writer too fast).
    pub dropped: u64,
    /// Playback only: times the queue ran dry right after audio, i.e. the device was starved.
    /// (The end of every burst of pushed audio counts once; a steady rise while audio flows
    /// means the producer is late.)
    pub underruns: u64,
    /// Playback only: frames of silence played because the queue was empty.
    pub silence_frames: u64,
    /// Successful opens after the first one (recoveries from a loss).
    pub reopens: u64,
    pub last_error: Option<String>,
}

/// A state change or incident of one device, for logs and MQTT.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceEvent {
    pub device: Arc<str>,
    pub direction: Direction,
    pub kind: DeviceEventKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DeviceEventKind {
    /// Open and running; `recovered` after an earlier loss. `config` says what was negotiated,
    /// e.g. `S16_LE 2ch 44100 Hz, period 441, buffer 1764 (resampled)`.
    Opened { config: String, recovered: bool },
    /// Failed to open, or failed while running.
    Lost { error: String },
    /// The next open attempt comes after `delay`.
    Retrying { attempt: u32, delay: Duration },
    /// An xrun or suspend was recovered; `total` so far.
    Xrun { total: u64, suspend: bool },
    /// The thread ended.
    Stopped,
}

/// Why a frame could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    #[error("no frame within the timeout")]
    Empty,
    #[error("the capture device is stopped")]
    Stopped,
    #[error("buffer of {got} samples, frames are {expected}")]
    WrongLength { expected: usize, got: usize },
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("the playback device is stopped")]
    Stopped,
    #[error("frame of {got} samples, expected {expected}")]
    WrongLength { expected: usize, got: usize },
}

/// Open a capture device by name. Returns at once; opening happens on the device thread.
pub fn open_capture(name: &str, opts: &AudioOptions) -> Result<CaptureHandle, AudioError> {
    CaptureHandle::open(name, opts)
}

/// Open a playback device by name. Returns at once; opening happens on the device thread.
pub fn open_playback(name: &str, opts: &AudioOptions) -> Result<PlaybackHandle, AudioError> {
    PlaybackHandle::open(name, opts)
}

fn check_spec(name: &str, opts: &AudioOptions, dir: Direction) -> Result<DeviceSpec, AudioError> {
    opts.validate()?;
    let spec = DeviceSpec::parse(name)?;
    if !spec.supports(dir) {
        return Err(AudioError::WrongDirection(name.to_string(), dir));
    }
    if matches!(spec, DeviceSpec::Alsa(_)) && cfg!(not(target_os = "linux")) {
        return Err(AudioError::Unsupported(name.to_string()));
    }
    Ok(spec)
}

/// The backend a capture device's name picks.
fn source(spec: DeviceSpec) -> Box<dyn Source> {
    match spec {
        #[cfg(target_os = "linux")]
        DeviceSpec::Alsa(name) => Box::new(alsa::AlsaCapture::new(name)),
        spec => Box::new(sim::SimSource::new(spec)),
    }
}

/// The backend a playback device's name picks.
fn sink(spec: DeviceSpec) -> Box<dyn Sink> {
    match spec {
        #[cfg(target_os = "linux")]
        DeviceSpec::Alsa(name) => Box::new(alsa::AlsaPlayback::new(name)),
        spec => Box::new(sim::SimSink::new(spec)),
    }
}

/// A running capture device. Dropping it stops the thread and joins it.
pub struct CaptureHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl CaptureHandle {
    pub fn open(name: &str, opts: &AudioOptions) -> Result<CaptureHandle, AudioError> {
        let spec = check_spec(name, opts, Direction::Capture)?;
        let (shared, thread) = device::spawn_capture(name, source(spec), opts, None)?;
        Ok(CaptureHandle { shared, thread: Some(thread) })
    }

    /// A capture device whose thread hands every frame to `tap` as it arrives, instead of
    /// queueing it for [`recv`](Self::recv) (nothing is queued). Processing on the device
    /// thread spares a second thread's wakeup per frame.
    pub fn open_tapped(name: &str, opts: &AudioOptions, tap: Box<dyn Tap>) -> Result<CaptureHandle, AudioError> {
        let spec = check_spec(name, opts, Direction::Capture)?;
        let (shared, thread) = device::spawn_capture(name, source(spec), opts, Some(tap))?;
        Ok(CaptureHandle { shared, thread: Some(thread) })
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Samples per frame.
    pub fn frame_len(&self) -> usize {
        self.shared.queue.frame_len()
    }

    /// Copy the oldest queued frame into `out`, waiting up to `timeout` for one.
    /// After a stop, queued frames can still be read; then it returns [`RecvError::Stopped`].
    pub fn recv_timeout(&self, out: &mut [f32], timeout: Duration) -> Result<(), RecvError> {
        self.recv_inner(out, Wait::Until(Instant::now() + timeout))
    }

    /// Like [`recv_timeout`](Self::recv_timeout) without waiting.
    pub fn try_recv(&self, out: &mut [f32]) -> Result<(), RecvError> {
        self.recv_inner(out, Wait::No)
    }

    /// Wait for a frame without blocking the async runtime (works with any executor: the device
    /// thread wakes a `tokio::sync::Notify`). Cancel-safe: a frame is only taken when it returns.
    pub async fn recv(&self, out: &mut [f32]) -> Result<(), RecvError> {
        loop {
            match self.recv_inner(out, Wait::No) {
                Err(RecvError::Empty) => self.shared.queue.readable().await,
                other => return other,
            }
        }
    }

    fn recv_inner(&self, out: &mut [f32], wait: Wait) -> Result<(), RecvError> {
        let expected = self.frame_len();
        if out.len() != expected {
            return Err(RecvError::WrongLength { expected, got: out.len() });
        }
        match self.shared.queue.pop_into(out, wait) {
            Popped::Frame => Ok(()),
            Popped::Empty => Err(RecvError::Empty),
            Popped::Closed => Err(RecvError::Stopped),
        }
    }

    /// Frames waiting to be read.
    pub fn queued(&self) -> usize {
        self.shared.queue.len()
    }

    pub fn stats(&self) -> AudioStats {
        self.shared.stats()
    }

    /// Stop the device thread and wait for it (at most about 100 ms, even while retrying).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.set_mode(Mode::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for CaptureHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl fmt::Debug for CaptureHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaptureHandle").field("name", &self.name()).field("stats", &self.stats()).finish()
    }
}

/// Takes capture audio on the device thread itself, as frames arrive (see
/// [`CaptureHandle::open_tapped`]). Must not block: the device keeps running meanwhile.
pub trait Tap: Send + 'static {
    /// One 48 kHz frame; `at` is when the thread got it.
    fn frame(&mut self, at: Instant, frame: &[f32]);
    /// Called on every turn of the device thread and at least every ~100 ms while it waits
    /// (device missing, backoff), e.g. for a watchdog heartbeat. Must not block.
    fn tick(&mut self) {}
}

/// Produces playback audio on the device thread itself, when the device wants a frame (see
/// [`PlaybackHandle::open_fed`]): no second thread, no queue between them, no polling.
pub trait Feed: Send + 'static {
    /// Write the next frame. `at` is when it is due at the device on a steady clock (one period
    /// per frame, following the wall clock slowly), so a thread that wakes late and catches up
    /// with several frames in a row hands out evenly spaced times, as the device plays them.
    fn fill(&mut self, at: Instant, frame: &mut [f32]);
    /// Called on every turn of the device thread and at least every ~100 ms while it waits
    /// (device missing, backoff, paused), e.g. for a watchdog heartbeat. Must not block.
    fn tick(&mut self) {}
    /// Nothing to play now, nor until [`PlaybackWaker::wake`] is called. Once the device has
    /// played out what it holds, a device that can (ALSA) is stopped, so an idle port costs
    /// no wakeups; it starts again on a wake-up, or when this turns false (checked every
    /// ~100 ms). Default: never idle.
    fn idle(&mut self) -> bool {
        false
    }
}

/// Starts a fed playback device that stopped because its [`Feed`] was idle. Cheap while the
/// device runs (one atomic load); call it whenever the feed gets something to play.
#[derive(Clone)]
pub struct PlaybackWaker(Arc<Shared>);

impl PlaybackWaker {
    pub fn wake(&self) {
        self.0.poke();
    }
}

impl fmt::Debug for PlaybackWaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PlaybackWaker").field(&self.0.name).finish()
    }
}

/// A running playback device. Dropping it stops the thread (queued audio is discarded) and
/// joins it; [`close`](Self::close) plays out the queue first.
pub struct PlaybackHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl PlaybackHandle {
    pub fn open(name: &str, opts: &AudioOptions) -> Result<PlaybackHandle, AudioError> {
        let spec = check_spec(name, opts, Direction::Playback)?;
        let (shared, thread) = device::spawn_playback(name, sink(spec), opts, None)?;
        Ok(PlaybackHandle { shared, thread: Some(thread) })
    }

    /// A playback device whose thread asks `feed` for every frame when the device can take it,
    /// instead of playing what is [`push`](Self::push)ed (pushes are not played). The device's
    /// buffer is then the only lead, and a late wake-up of one thread, not of two in turn, is
    /// what it must absorb. Stats count every fed frame as audio.
    pub fn open_fed(name: &str, opts: &AudioOptions, feed: Box<dyn Feed>) -> Result<PlaybackHandle, AudioError> {
        let spec = check_spec(name, opts, Direction::Playback)?;
        let (shared, thread) = device::spawn_playback(name, sink(spec), opts, Some(feed))?;
        Ok(PlaybackHandle { shared, thread: Some(thread) })
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Wakes this device when its [`Feed`] stopped it for being idle.
    pub fn waker(&self) -> PlaybackWaker {
        PlaybackWaker(self.shared.clone())
    }

    pub fn frame_len(&self) -> usize {
        self.shared.queue.frame_len()
    }

    /// Queue one frame. With [`Pacing::Realtime`] this never blocks: when the queue is full the
    /// oldest frame is dropped (counted in `dropped`). With [`Pacing::Fast`] it waits for room.
    pub fn push(&self, frame: &[f32]) -> Result<(), PushError> {
        let expected = self.frame_len();
        if frame.len() != expected {
            return Err(PushError::WrongLength { expected, got: frame.len() });
        }
        let overflow = match self.shared.pacing {
            Pacing::Realtime => Overflow::DropOldest,
            Pacing::Fast => Overflow::Wait,
        };
        match self.shared.queue.push(frame, overflow) {
            Pushed::Queued => Ok(()),
            Pushed::DroppedOldest => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Pushed::Closed => Err(PushError::Stopped),
        }
    }

    /// Frames waiting to be played. A producer with its own clock can use this to trim latency.
    pub fn queued(&self) -> usize {
        self.shared.queue.len()
    }

    /// Queue depth in frames.
    pub fn capacity(&self) -> usize {
        self.shared.queue.capacity()
    }

    pub fn stats(&self) -> AudioStats {
        self.shared.stats()
    }

    /// Stop now, discarding queued audio, and wait for the thread.
    pub fn stop(mut self) {
        self.shutdown(Mode::Stop);
    }

    /// Play what is queued (and what the device buffers), then stop and wait for the thread.
    /// Bounded: at most the queue depth plus the device buffer in real time. If the device is
    /// not running (lost, retrying) it stops at once.
    pub fn close(mut self) {
        self.shutdown(Mode::Drain);
    }

    fn shutdown(&mut self, mode: Mode) {
        self.shared.set_mode(mode);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PlaybackHandle {
    fn drop(&mut self) {
        self.shutdown(Mode::Stop);
    }
}

impl fmt::Debug for PlaybackHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlaybackHandle").field("name", &self.name()).field("stats", &self.stats()).finish()
    }
}
