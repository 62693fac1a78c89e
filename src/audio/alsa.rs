//! ALSA capture and playback through alsa-lib (any PCM name it accepts).
//!
//! The PCM is opened non-blocking: a busy `hw:` device then fails at once (EBUSY, retried with
//! backoff) instead of hanging the thread inside `snd_pcm_open`, and every wait is a
//! `snd_pcm_wait` with a timeout, so a stop is seen within [`POLL`] whatever the device does.
//! Xruns (EPIPE) and suspends (ESTRPIPE) are recovered in place and counted; any other error, or
//! no progress for [`STALL`], means the device is lost: it is closed and reopened with backoff.

use std::time::{Duration, Instant};

use alsa::pcm::{Access, Format, HwParams, State, PCM};
use alsa::{Direction as AlsaDirection, ValueOr};

use super::backend::{Mode, Shared, Sink, Source, POLL};
use super::resample::{f32_to_i16, i16_to_f32, Inbound, Outbound};
use super::SAMPLE_RATE;

/// A running device that moves no audio for this long is treated as gone. Generous, because a
/// pulse stream can take a couple of seconds to start flowing.
const STALL: std::time::Duration = std::time::Duration::from_secs(5);

/// Device periods per buffer: enough to ride out scheduling hiccups, short enough for radio.
const PERIODS: usize = 4;

/// Periods a fed playback device (see `Sink::keep_lead`) is kept ahead of what it plays (the
/// playback lead); the rest of its buffer stays empty. Every frame waits out the lead before it
/// is heard, so a full 4-period buffer cost 40 ms. A queued device (a desk's mix, produced on
/// another clock) keeps its whole buffer to absorb the producer's jitter. Two 10 ms periods are what a real-time thread on a Pi 4 needs: it is woken
/// when one period is left and has a whole period to write the next (its fill takes well under
/// 1 ms), and the pulse plugin asks for data a period at a time. Raised by a period (up to
/// `PERIODS - 1`) after each underrun while playing, for as long as the device stays open.
const LEAD_PERIODS: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SampleFmt {
    S16,
    F32,
}

impl SampleFmt {
    fn bytes(self) -> usize {
        match self {
            SampleFmt::S16 => 2,
            SampleFmt::F32 => 4,
        }
    }
}

/// What the device agreed to.
#[derive(Debug, Clone, Copy)]
struct Setup {
    format: SampleFmt,
    channels: usize,
    rate: u32,
    period: usize,
    buffer: usize,
}

impl Setup {
    fn describe(&self) -> String {
        format!(
            "{} {}ch {} Hz, period {}, buffer {}{}",
            match self.format {
                SampleFmt::S16 => "S16_LE",
                SampleFmt::F32 => "FLOAT_LE",
            },
            self.channels,
            self.rate,
            self.period,
            self.buffer,
            if self.rate == SAMPLE_RATE { "" } else { " (resampled to 48000 Hz)" }
        )
    }

    fn frame_bytes(&self) -> usize {
        self.format.bytes() * self.channels
    }
}

fn err(context: &str, e: alsa::Error) -> String {
    format!("{context}: {e}")
}

/// Open `name` non-blocking and negotiate: S16_LE or FLOAT_LE, mono if possible, 48 kHz or the
/// nearest rate, a period of about one frame and a buffer of [`PERIODS`] periods.
fn open_pcm(name: &str, dir: AlsaDirection, period_ms: u32) -> Result<(PCM, Setup), String> {
    let pcm = PCM::new(name, dir, true).map_err(|e| err("open", e))?;
    {
        let hw = HwParams::any(&pcm).map_err(|e| err("hw params", e))?;
        hw.set_access(Access::RWInterleaved).map_err(|e| err("interleaved access", e))?;
        let format = if hw.test_format(Format::S16LE).is_ok() {
            Format::S16LE
        } else if hw.test_format(Format::FloatLE).is_ok() {
            Format::FloatLE
        } else {
            return Err("supports neither S16_LE nor FLOAT_LE (use a plughw: name)".into());
        };
        hw.set_format(format).map_err(|e| err("format", e))?;
        hw.set_channels_near(1).map_err(|e| err("channels", e))?;
        let rate = hw.set_rate_near(SAMPLE_RATE, ValueOr::Nearest).map_err(|e| err("rate", e))?;
        let period = (u64::from(rate) * u64::from(period_ms) / 1000).max(1) as alsa::pcm::Frames;
        let period = hw.set_period_size_near(period, ValueOr::Nearest).map_err(|e| err("period size", e))?;
        hw.set_buffer_size_near(period * PERIODS as alsa::pcm::Frames).map_err(|e| err("buffer size", e))?;
        pcm.hw_params(&hw).map_err(|e| err("apply hw params", e))?;
    }
    let setup = {
        let hw = pcm.hw_params_current().map_err(|e| err("read hw params", e))?;
        let format = match hw.get_format().map_err(|e| err("format", e))? {
            Format::S16LE => SampleFmt::S16,
            Format::FloatLE => SampleFmt::F32,
            other => return Err(format!("device chose format {other}")),
        };
        Setup {
            format,
            channels: hw.get_channels().map_err(|e| err("channels", e))?.max(1) as usize,
            rate: hw.get_rate().map_err(|e| err("rate", e))?,
            period: hw.get_period_size().map_err(|e| err("period", e))?.max(1) as usize,
            buffer: hw.get_buffer_size().map_err(|e| err("buffer", e))?.max(1) as usize,
        }
    };
    {
        let sw = pcm.sw_params_current().map_err(|e| err("sw params", e))?;
        sw.set_avail_min(setup.period as alsa::pcm::Frames).map_err(|e| err("avail min", e))?;
        if dir == AlsaDirection::Playback {
            // Start once two periods are queued, so the first write cannot underrun at once.
            let start = (2 * setup.period).min(setup.buffer);
            sw.set_start_threshold(start as alsa::pcm::Frames).map_err(|e| err("start threshold", e))?;
        }
        pcm.sw_params(&sw).map_err(|e| err("apply sw params", e))?;
    }
    Ok((pcm, setup))
}

/// Free room at which a playback device with `lead` frames to keep queued wakes its thread:
/// one period under the lead is left.
fn playback_avail_min(setup: &Setup, lead: usize) -> usize {
    (setup.buffer + setup.period).saturating_sub(lead).clamp(setup.period, setup.buffer)
}

/// Keep `lead` frames queued: wake at [`playback_avail_min`], start once the lead is there.
fn apply_lead(pcm: &PCM, setup: &Setup, lead: usize) -> Result<usize, alsa::Error> {
    let avail_min = playback_avail_min(setup, lead);
    let sw = pcm.sw_params_current()?;
    sw.set_avail_min(avail_min as alsa::pcm::Frames)?;
    sw.set_start_threshold(lead.min(setup.buffer) as alsa::pcm::Frames)?;
    pcm.sw_params(&sw)?;
    Ok(avail_min)
}

/// Recover from what can be recovered in place (xrun, suspend); anything else loses the device.
fn recover(pcm: &PCM, e: alsa::Error, ctx: &Shared) -> Result<(), String> {
    let errno = e.errno();
    match errno {
        libc::EAGAIN | libc::EINTR => Ok(()),
        libc::EPIPE | libc::ESTRPIPE => match pcm.try_recover(e, true) {
            Ok(()) => {
                ctx.xrun(errno == libc::ESTRPIPE);
                Ok(())
            }
            Err(e2) => Err(format!("cannot recover from {e}: {e2}")),
        },
        _ => Err(e.to_string()),
    }
}

/// Wait up to [`POLL`] for the device. Ok(true): ready. Ok(false): not yet (or an xrun was
/// recovered). Err: lost, including a running device that made no progress for [`STALL`].
fn wait(pcm: &PCM, last_progress: Instant, ctx: &Shared) -> Result<bool, String> {
    match pcm.state() {
        State::Disconnected => return Err("device disconnected".into()),
        State::Suspended | State::XRun => {
            // snd_pcm_wait reports these as errors; go through the same recovery.
            let errno = if pcm.state() == State::Suspended { libc::ESTRPIPE } else { libc::EPIPE };
            recover(pcm, alsa::Error::new("snd_pcm_wait", errno), ctx)?;
            return Ok(false);
        }
        _ => {}
    }
    match pcm.wait(Some(POLL.as_millis() as u32)) {
        Ok(true) => Ok(true),
        Ok(false) => {
            if last_progress.elapsed() > STALL {
                Err(format!("no audio moved for {} s", STALL.as_secs()))
            } else {
                Ok(false)
            }
        }
        Err(e) => recover(pcm, e, ctx).map(|()| false),
    }
}

pub(crate) struct AlsaCapture {
    name: String,
    open: Option<CaptureOpen>,
}

struct CaptureOpen {
    pcm: PCM,
    setup: Setup,
    /// One period of interleaved device samples, as bytes.
    raw: Vec<u8>,
    inbound: Inbound,
    frame: Vec<f32>,
    last_progress: Instant,
}

impl AlsaCapture {
    pub(crate) fn new(name: String) -> Self {
        AlsaCapture { name, open: None }
    }
}

impl Source for AlsaCapture {
    fn open(&mut self, ctx: &Shared) -> Result<String, String> {
        self.open = None;
        let (pcm, setup) = open_pcm(&self.name, AlsaDirection::Capture, ctx.device_period_ms)?;
        let inbound = Inbound::new(setup.rate, ctx.frame_len(), setup.period)?;
        let raw = vec![0u8; setup.period * setup.frame_bytes()];
        let config = setup.describe();
        self.open = Some(CaptureOpen {
            pcm,
            setup,
            raw,
            inbound,
            frame: vec![0.0; ctx.frame_len()],
            last_progress: Instant::now(),
        });
        Ok(config)
    }

    fn clocked(&self) -> bool {
        true
    }

    fn read(&mut self, ctx: &Shared, emit: &mut dyn FnMut(&[f32])) -> Result<(), String> {
        let o = self.open.as_mut().ok_or("not open")?;
        // A prepared capture stream never becomes readable by itself: start it (again, after
        // an xrun recovery).
        if o.pcm.state() == State::Prepared {
            if let Err(e) = o.pcm.start() {
                return recover(&o.pcm, e, ctx);
            }
        }
        // Plugins such as pulse only update their position in avail_update, and wake poll once
        // per server tick: ask first, wait only when less than a period is there.
        let avail = match o.pcm.avail_update() {
            Ok(n) => n.max(0) as usize,
            Err(e) => return recover(&o.pcm, e, ctx),
        };
        if avail < o.setup.period && !wait(&o.pcm, o.last_progress, ctx)? {
            return Ok(());
        }
        // Take everything that is there, a period at a time (bounded by the buffer).
        for _ in 0..=PERIODS {
            let result = {
                let io = o.pcm.io_bytes();
                io.readi(&mut o.raw)
            };
            let frames = match result {
                Ok(n) => n,
                Err(e) if e.errno() == libc::EAGAIN => break,
                Err(e) => return recover(&o.pcm, e, ctx),
            };
            if frames > 0 {
                o.last_progress = Instant::now();
            }
            o.take(frames, emit);
            if frames < o.setup.period {
                break;
            }
        }
        Ok(())
    }

    fn close(&mut self) {
        if let Some(o) = self.open.take() {
            let _ = o.pcm.drop();
        }
    }
}

impl CaptureOpen {
    /// Downmix `frames` device frames from `raw`, resample, and emit whole 48 kHz frames.
    /// One tight loop per format and channel layout: on an idle VOX port this runs for every
    /// sample the device delivers.
    fn take(&mut self, frames: usize, emit: &mut dyn FnMut(&[f32])) {
        let (ch, fb) = (self.setup.channels, self.setup.frame_bytes());
        let raw = &self.raw[..frames * fb];
        let s16 = |b: &[u8]| i16_to_f32(i16::from_le_bytes([b[0], b[1]]));
        let f32le = |b: &[u8]| f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        // Downmix: the mean of all channels.
        let per_channel = 1.0 / ch as f32;
        match (self.setup.format, ch) {
            (SampleFmt::S16, 1) => self.inbound.extend(raw.chunks_exact(2).map(s16)),
            (SampleFmt::F32, 1) => self.inbound.extend(raw.chunks_exact(4).map(f32le)),
            (SampleFmt::S16, _) => {
                self.inbound.extend(raw.chunks_exact(fb).map(|f| f.chunks_exact(2).map(s16).sum::<f32>() * per_channel))
            }
            (SampleFmt::F32, _) => self
                .inbound
                .extend(raw.chunks_exact(fb).map(|f| f.chunks_exact(4).map(f32le).sum::<f32>() * per_channel)),
        }
        while self.inbound.pop_frame(&mut self.frame) {
            emit(&self.frame);
        }
    }
}

pub(crate) struct AlsaPlayback {
    name: String,
    open: Option<PlaybackOpen>,
    /// Fed on the device thread (see [`Sink::keep_lead`]): keep only the lead queued.
    lead_only: bool,
}

struct PlaybackOpen {
    pcm: PCM,
    setup: Setup,
    outbound: Outbound,
    /// One converted frame of interleaved device samples, as bytes.
    raw: Vec<u8>,
    last_progress: Instant,
    /// Device frames kept queued (see [`LEAD_PERIODS`]).
    lead: usize,
    /// Free room at which the next frame is written (the queue is a period under the lead).
    avail_min: usize,
    /// The device's xrun count last seen: each new one raises the lead.
    xruns: u64,
}

impl PlaybackOpen {
    /// An underrun while playing: the lead was too short for this machine. One period more,
    /// up to a period under the buffer.
    fn follow_xruns(&mut self, ctx: &Shared) {
        let xruns = ctx.xruns.load(std::sync::atomic::Ordering::Relaxed);
        if xruns == self.xruns {
            return;
        }
        self.xruns = xruns;
        let max = (PERIODS - 1) * self.setup.period;
        if self.lead >= max {
            return;
        }
        let lead = self.lead + self.setup.period;
        match apply_lead(&self.pcm, &self.setup, lead) {
            Ok(avail_min) => {
                (self.lead, self.avail_min) = (lead, avail_min);
                let lead_ms = lead as f64 * 1e3 / f64::from(self.setup.rate);
                tracing::info!(device = %ctx.name, lead_ms, "playback underrun: lead raised");
            }
            Err(e) => tracing::debug!(device = %ctx.name, error = %e, "cannot raise the playback lead"),
        }
    }
}

impl AlsaPlayback {
    pub(crate) fn new(name: String) -> Self {
        AlsaPlayback { name, open: None, lead_only: false }
    }
}

impl Sink for AlsaPlayback {
    fn keep_lead(&mut self) {
        self.lead_only = true;
    }

    fn open(&mut self, ctx: &Shared) -> Result<String, String> {
        self.open = None;
        let (pcm, setup) = open_pcm(&self.name, AlsaDirection::Playback, ctx.device_period_ms)?;
        let outbound = Outbound::new(setup.rate, ctx.frame_len())?;
        let raw = vec![0u8; outbound.max_out() * setup.frame_bytes()];
        // A queue's producer runs on its own clock: the whole buffer absorbs its jitter.
        let (lead, avail_min) = if self.lead_only {
            let lead = LEAD_PERIODS * setup.period;
            (lead, apply_lead(&pcm, &setup, lead).map_err(|e| err("playback lead", e))?)
        } else {
            (setup.buffer, setup.period)
        };
        let config = format!("{}, lead {lead}", setup.describe());
        let xruns = ctx.xruns.load(std::sync::atomic::Ordering::Relaxed);
        self.open =
            Some(PlaybackOpen { pcm, setup, outbound, raw, last_progress: Instant::now(), lead, avail_min, xruns });
        Ok(config)
    }

    fn clocked(&self) -> bool {
        true
    }

    fn ready(&mut self, ctx: &Shared) -> Result<bool, String> {
        let o = self.open.as_mut().ok_or("not open")?;
        o.follow_xruns(ctx);
        if o.pcm.state() != State::Running {
            // Not started yet (filling up to the start threshold): no clock to stall on.
            o.last_progress = Instant::now();
        }
        // Under the lead already? Then go on without waiting: devices that wake poll once per
        // period or less (pulse) would otherwise get one frame per wakeup.
        match o.pcm.avail_update() {
            Ok(n) if n.max(0) as usize >= o.avail_min => return Ok(true),
            Ok(_) => {}
            Err(e) => return recover(&o.pcm, e, ctx).map(|()| false),
        }
        if !wait(&o.pcm, o.last_progress, ctx)? {
            return Ok(false);
        }
        match o.pcm.avail_update() {
            Ok(n) if n.max(0) as usize >= o.avail_min => Ok(true),
            Ok(n) => {
                // Woken with the lead still queued: a plugin whose poll ignores avail_min (pulse
                // wakes on each server request). Sleep until the excess has played, not spin.
                let excess = o.avail_min - n.max(0) as usize;
                let secs = excess as f64 / f64::from(o.setup.rate);
                let nap = Duration::from_secs_f64(secs).clamp(Duration::from_millis(1), ctx.period());
                ctx.sleep_until(Instant::now() + nap, Mode::Stop);
                Ok(false)
            }
            Err(e) => recover(&o.pcm, e, ctx).map(|()| false),
        }
    }

    fn write(&mut self, frame: &[f32], ctx: &Shared) -> Result<(), String> {
        let o = self.open.as_mut().ok_or("not open")?;
        let samples = o.outbound.process(frame);
        let fb = o.setup.frame_bytes();
        let total = samples.len();
        // Upmix: the same sample on every channel.
        for (s, out) in samples.iter().zip(o.raw.chunks_exact_mut(fb)) {
            match o.setup.format {
                SampleFmt::S16 => {
                    let b = f32_to_i16(*s).to_le_bytes();
                    out.chunks_exact_mut(2).for_each(|c| c.copy_from_slice(&b));
                }
                SampleFmt::F32 => {
                    let b = s.clamp(-1.0, 1.0).to_le_bytes();
                    out.chunks_exact_mut(4).for_each(|c| c.copy_from_slice(&b));
                }
            }
        }
        let mut done = 0;
        while done < total {
            let result = {
                let io = o.pcm.io_bytes();
                io.writei(&o.raw[done * fb..total * fb])
            };
            match result {
                Ok(n) => {
                    done += n;
                    o.last_progress = Instant::now();
                }
                Err(e) if e.errno() == libc::EAGAIN => {
                    if ctx.stopping() {
                        return Ok(());
                    }
                    if o.pcm.state() != State::Running {
                        o.last_progress = Instant::now();
                    }
                    wait(&o.pcm, o.last_progress, ctx)?;
                }
                // After an xrun the rest of the frame still goes out.
                Err(e) => recover(&o.pcm, e, ctx)?,
            }
        }
        Ok(())
    }

    fn pause(&mut self) -> bool {
        let Some(o) = &self.open else { return false };
        // Dropping the stream stops its clock: no period wakeups, no server round trips (a
        // pulse stream is corked). Prepared again on resume.
        match o.pcm.drop() {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(device = %self.name, error = %e, "cannot stop playback for idle; it keeps running");
                false
            }
        }
    }

    fn resume(&mut self, ctx: &Shared) -> Result<(), String> {
        let o = self.open.as_mut().ok_or("not open")?;
        o.pcm.prepare().map_err(|e| err("prepare after idle", e))?;
        o.last_progress = Instant::now();
        // One period of silence first: with the first frame it reaches the start threshold at
        // once, and the device has a period in hand when the feed's next frame is due.
        let silence = vec![0.0f32; ctx.frame_len()];
        let periods = o.setup.period.div_ceil(o.outbound.max_out().max(1)).max(1);
        for _ in 0..periods {
            self.write(&silence, ctx)?;
        }
        Ok(())
    }

    fn close(&mut self, drain: bool) {
        let Some(o) = self.open.take() else { return };
        if drain {
            // Non-blocking drain returns EAGAIN and keeps draining: wait for it, bounded by the
            // buffer length plus margin.
            let limit = Instant::now()
                + std::time::Duration::from_secs_f64(o.setup.buffer as f64 / f64::from(o.setup.rate))
                + std::time::Duration::from_millis(500);
            match o.pcm.drain() {
                Ok(()) => {}
                Err(e) if e.errno() == libc::EAGAIN => {
                    while o.pcm.state() == State::Draining && Instant::now() < limit {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                }
                Err(e) => tracing::debug!(device = %self.name, error = %e, "drain failed"),
            }
        }
        let _ = o.pcm.drop();
    }
}
