//! Simulated devices for tests and the demo: tone, silence and WAV sources; null and WAV sinks.
//! They have no clock of their own; the harness paces them (see [`super::Pacing`]).

use std::f64::consts::TAU;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use hound::{SampleFormat, WavReader, WavSpec, WavWriter};

use super::backend::{Shared, Sink, Source};
use super::resample::{dbfs_to_amplitude, f32_to_i16, Inbound};
use super::{DeviceSpec, SAMPLE_RATE};

/// How often `sim:wav-out` rewrites its header, in frames' worth of seconds.
const WAV_OUT_FLUSH_SECS: u32 = 1;

pub(crate) struct SimSource {
    spec: DeviceSpec,
    gen: Gen,
    frame: Vec<f32>,
}

enum Gen {
    Closed,
    Tone { phase: f64, step: f64, amp: f64 },
    Silence,
    Wav(Box<WavSource>),
}

impl SimSource {
    pub(crate) fn new(spec: DeviceSpec) -> Self {
        SimSource { spec, gen: Gen::Closed, frame: vec![] }
    }
}

impl Source for SimSource {
    fn open(&mut self, ctx: &Shared) -> Result<String, String> {
        self.frame = vec![0.0; ctx.frame_len()];
        let (gen, config) = match &self.spec {
            DeviceSpec::Tone { hz, dbfs } => (
                Gen::Tone { phase: 0.0, step: TAU * hz / f64::from(SAMPLE_RATE), amp: dbfs_to_amplitude(*dbfs) },
                format!("sim tone {hz} Hz at {dbfs} dBFS"),
            ),
            DeviceSpec::Silence => (Gen::Silence, "sim silence".to_string()),
            DeviceSpec::Wav(path) => {
                let wav = WavSource::open(path, ctx.frame_len())?;
                let config = wav.describe();
                (Gen::Wav(Box::new(wav)), config)
            }
            other => return Err(format!("{other:?} is not a capture device")),
        };
        self.gen = gen;
        Ok(config)
    }

    fn clocked(&self) -> bool {
        false
    }

    fn read(&mut self, _ctx: &Shared, emit: &mut dyn FnMut(&[f32])) -> Result<(), String> {
        let out = &mut self.frame;
        match &mut self.gen {
            Gen::Closed => return Err("not open".into()),
            Gen::Silence => out.fill(0.0),
            Gen::Tone { phase, step, amp } => {
                for s in out.iter_mut() {
                    *s = (*amp * phase.sin()) as f32;
                    // Kept in [0, 2π) so precision does not decay over hours.
                    *phase = (*phase + *step) % TAU;
                }
            }
            Gen::Wav(wav) => wav.fill(out)?,
        }
        emit(out);
        Ok(())
    }

    fn close(&mut self) {
        self.gen = Gen::Closed;
    }
}

/// A looping WAV file, converted to 48 kHz mono on the fly.
struct WavSource {
    path: PathBuf,
    reader: WavReader<BufReader<File>>,
    spec: WavSpec,
    inbound: Inbound,
}

impl WavSource {
    fn open(path: &Path, frame_len: usize) -> Result<Self, String> {
        let reader = WavReader::open(path).map_err(|e| format!("cannot read WAV {}: {e}", path.display()))?;
        let spec = reader.spec();
        if spec.channels == 0 {
            return Err(format!("WAV {} has no channels", path.display()));
        }
        let inbound = Inbound::new(spec.sample_rate, frame_len, frame_len)?;
        Ok(WavSource { path: path.to_path_buf(), reader, spec, inbound })
    }

    fn describe(&self) -> String {
        let s = &self.spec;
        let fmt = match s.sample_format {
            SampleFormat::Float => "float",
            SampleFormat::Int => "int",
        };
        format!(
            "sim wav {} ({} Hz, {} ch, {}-bit {fmt}, {} frames, looping{})",
            self.path.display(),
            s.sample_rate,
            s.channels,
            s.bits_per_sample,
            self.reader.duration(),
            if s.sample_rate == SAMPLE_RATE { "" } else { ", resampled" }
        )
    }

    fn fill(&mut self, out: &mut [f32]) -> Result<(), String> {
        if self.reader.duration() == 0 {
            out.fill(0.0);
            return Ok(());
        }
        while !self.inbound.pop_frame(out) {
            let need = self.inbound.needed();
            let got = self.read_frames(need).map_err(|e| format!("reading {}: {e}", self.path.display()))?;
            if got < need {
                // End of file: start over.
                self.reader.seek(0).map_err(|e| format!("rewinding {}: {e}", self.path.display()))?;
            }
        }
        Ok(())
    }

    /// Read up to `frames` source frames, downmixed, into the resampler. Returns frames read.
    fn read_frames(&mut self, frames: usize) -> hound::Result<usize> {
        let channels = usize::from(self.spec.channels);
        let per_channel = 1.0 / channels as f32;
        let mut read = 0;
        match self.spec.sample_format {
            SampleFormat::Int => {
                let scale = 1.0 / (1u64 << (self.spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
                let mut samples = self.reader.samples::<i32>();
                'frames: while read < frames {
                    let mut sum = 0.0;
                    for _ in 0..channels {
                        match samples.next() {
                            Some(s) => sum += s? as f32 * scale,
                            None => break 'frames,
                        }
                    }
                    self.inbound.extend([sum * per_channel]);
                    read += 1;
                }
            }
            SampleFormat::Float => {
                let mut samples = self.reader.samples::<f32>();
                'frames: while read < frames {
                    let mut sum = 0.0;
                    for _ in 0..channels {
                        match samples.next() {
                            Some(s) => sum += s?,
                            None => break 'frames,
                        }
                    }
                    self.inbound.extend([sum * per_channel]);
                    read += 1;
                }
            }
        }
        Ok(read)
    }
}

pub(crate) struct SimSink {
    spec: DeviceSpec,
    writer: Option<WavWriter<BufWriter<File>>>,
    opened_before: bool,
    frames_since_flush: u32,
    frames_per_flush: u32,
}

impl SimSink {
    pub(crate) fn new(spec: DeviceSpec) -> Self {
        SimSink { spec, writer: None, opened_before: false, frames_since_flush: 0, frames_per_flush: 100 }
    }
}

/// The `sim:wav-out` format.
pub(crate) fn wav_out_spec() -> WavSpec {
    WavSpec { channels: 1, sample_rate: SAMPLE_RATE, bits_per_sample: 16, sample_format: SampleFormat::Int }
}

impl Sink for SimSink {
    fn open(&mut self, ctx: &Shared) -> Result<String, String> {
        self.frames_per_flush = WAV_OUT_FLUSH_SECS * 1000 / ctx.period_ms.max(1);
        match &self.spec {
            DeviceSpec::Null => Ok("sim null sink".into()),
            DeviceSpec::WavOut(path) | DeviceSpec::WavRec(path) => {
                // A reopen after an error continues the recording instead of truncating it.
                let writer = match self.opened_before {
                    true => WavWriter::append(path).or_else(|_| WavWriter::create(path, wav_out_spec())),
                    false => WavWriter::create(path, wav_out_spec()),
                }
                .map_err(|e| format!("cannot write WAV {}: {e}", path.display()))?;
                if writer.spec() != wav_out_spec() {
                    return Err(format!("{} exists with another WAV format", path.display()));
                }
                self.writer = Some(writer);
                self.opened_before = true;
                Ok(format!("sim wav-out {} (48000 Hz mono 16-bit)", path.display()))
            }
            other => Err(format!("{other:?} is not a playback device")),
        }
    }

    fn clocked(&self) -> bool {
        false
    }

    fn write(&mut self, frame: &[f32], _ctx: &Shared) -> Result<(), String> {
        let Some(writer) = &mut self.writer else { return Ok(()) };
        let result = (|| {
            for &s in frame {
                writer.write_sample(f32_to_i16(s))?;
            }
            self.frames_since_flush += 1;
            if self.frames_since_flush >= self.frames_per_flush {
                self.frames_since_flush = 0;
                // Rewrites the header too: the file stays valid even if we are killed.
                writer.flush()?;
            }
            Ok::<_, hound::Error>(())
        })();
        result.map_err(|e| format!("writing WAV: {e}"))
    }

    fn pause(&mut self) -> bool {
        if !matches!(self.spec, DeviceSpec::WavRec(_)) {
            return false;
        }
        // What was recorded is on disk while nothing is written.
        if let Some(writer) = &mut self.writer {
            self.frames_since_flush = 0;
            if let Err(e) = writer.flush() {
                tracing::warn!(error = %e, "sim:wav-rec: cannot flush WAV file");
            }
        }
        true
    }

    fn close(&mut self, _drain: bool) {
        if let Some(writer) = self.writer.take() {
            if let Err(e) = writer.finalize() {
                tracing::warn!(error = %e, "sim:wav-out: cannot finalize WAV file");
            }
        }
    }
}
