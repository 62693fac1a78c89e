//! Tone generation: a phase-continuous sine, and [`ToneSequence`], a player for shaped tone
//! bursts used by the courtesy tone (roger beep) and the CW station ID.
//!
//! Levels of tones are peak levels: a 0 dBFS tone is a full-scale sine (-3.01 dBFS RMS).

use super::level::db_to_gain;
use super::{clean, SAMPLE_RATE};

/// Length of the raised-cosine rise and fall of every tone burst, ms.
pub const RAMP_MS: f32 = 5.0;

/// Phase-continuous sine oscillator.
///
/// A unit phasor is rotated by a fixed angle per sample (f64, two multiply-adds per output),
/// so there is no per-sample `sin` call and no phase accumulator to wrap; the phasor is
/// renormalized to unit length once per frame, so its amplitude cannot drift. Frequency
/// changes keep the phase, and frames of any size continue the same waveform.
#[derive(Debug, Clone)]
pub struct Sine {
    fs: f64,
    amplitude: f32,
    /// Phasor: `sin` is the output, `cos` its quadrature.
    cos: f64,
    sin: f64,
    /// Rotation per sample.
    rot_cos: f64,
    rot_sin: f64,
}

impl Sine {
    /// A sine at `freq_hz` (clamped to 0..=0.49 fs) and peak level `level_dbfs` (clamped to
    /// -120..=0 dBFS), starting at phase 0.
    pub fn new(sample_rate: u32, freq_hz: f32, level_dbfs: f32) -> Sine {
        let mut s = Sine { fs: sample_rate as f64, amplitude: 0.0, cos: 1.0, sin: 0.0, rot_cos: 1.0, rot_sin: 0.0 };
        s.set_frequency(freq_hz);
        s.set_level_dbfs(level_dbfs);
        s
    }

    /// Change the frequency, continuing from the current phase.
    pub fn set_frequency(&mut self, freq_hz: f32) {
        let f = clean(freq_hz, 0.0, 0.49 * self.fs as f32, 0.0) as f64;
        let w = 2.0 * std::f64::consts::PI * f / self.fs;
        self.rot_cos = w.cos();
        self.rot_sin = w.sin();
    }

    /// Change the peak level.
    pub fn set_level_dbfs(&mut self, level_dbfs: f32) {
        self.amplitude = db_to_gain(clean(level_dbfs, -120.0, 0.0, -120.0));
    }

    /// Restart at phase 0 (the next sample is 0).
    /// Turn the phase by 180° (a CTCSS reverse burst).
    pub fn invert(&mut self) {
        self.cos = -self.cos;
        self.sin = -self.sin;
    }

    pub fn reset_phase(&mut self) {
        self.cos = 1.0;
        self.sin = 0.0;
    }

    /// The next sample of a unit sine.
    #[inline]
    fn next_unit(&mut self) -> f32 {
        let out = self.sin;
        let (c, s) = (self.cos, self.sin);
        self.cos = c * self.rot_cos - s * self.rot_sin;
        self.sin = s * self.rot_cos + c * self.rot_sin;
        out as f32
    }

    fn renormalize(&mut self) {
        let norm = (self.cos * self.cos + self.sin * self.sin).sqrt();
        if norm > 0.0 && norm.is_finite() {
            self.cos /= norm;
            self.sin /= norm;
        } else {
            self.reset_phase();
        }
    }

    /// Write the next `frame.len()` samples into `frame`.
    pub fn render(&mut self, frame: &mut [f32]) {
        let a = self.amplitude;
        for x in frame.iter_mut() {
            *x = a * self.next_unit();
        }
        self.renormalize();
    }

    /// Add the next `frame.len()` samples to `frame`.
    pub fn mix(&mut self, frame: &mut [f32]) {
        let a = self.amplitude;
        for x in frame.iter_mut() {
            *x += a * self.next_unit();
        }
        self.renormalize();
    }
}

/// One step of a tone sequence: a tone, or a pause when `freq_hz` is 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToneStep {
    pub freq_hz: f32,
    /// Duration in ms (clamped to 10 s).
    pub ms: u32,
}

/// The courtesy tone (roger beep) sent when TX audio ends.
#[derive(Debug, Clone, PartialEq)]
pub struct CourtesyToneConfig {
    pub enabled: bool,
    /// The tones and pauses, in order. Each tone rises and falls over [`RAMP_MS`] within its
    /// own duration. A leading pause delays the beep after the end of the audio.
    pub steps: Vec<ToneStep>,
    /// Peak level, dBFS.
    pub level_dbfs: f32,
}

impl Default for CourtesyToneConfig {
    /// Off; when switched on, a high-low pair: 1500 Hz then 1000 Hz, 80 ms each, 20 ms apart,
    /// at -15 dBFS peak.
    fn default() -> Self {
        CourtesyToneConfig {
            enabled: false,
            steps: vec![
                ToneStep { freq_hz: 1500.0, ms: 80 },
                ToneStep { freq_hz: 0.0, ms: 20 },
                ToneStep { freq_hz: 1000.0, ms: 80 },
            ],
            level_dbfs: -15.0,
        }
    }
}

/// One segment of a sequence, in samples; `freq_hz` 0 is silence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Segment {
    pub freq_hz: f32,
    pub len: usize,
}

/// A player for a fixed sequence of shaped tone bursts and pauses, rendered frame by frame.
///
/// Each tone segment starts and ends at zero amplitude, with a raised-cosine rise and fall of
/// [`RAMP_MS`] (from a table built at construction), and starts at phase 0, so bursts have no
/// clicks. The sequence is built (and allocated) once; [`start`](Self::start) replays it.
#[derive(Debug, Clone)]
pub struct ToneSequence {
    segments: Vec<Segment>,
    /// Raised-cosine ramp, `ramp[0] = 0 ..= ramp[R] = 1`.
    ramp: Vec<f32>,
    osc: Sine,
    amplitude: f32,
    seg: usize,
    pos: usize,
    active: bool,
}

impl ToneSequence {
    /// A sequence of `steps` at peak level `level_dbfs`. Steps of 0 ms are dropped.
    pub fn new(sample_rate: u32, steps: &[ToneStep], level_dbfs: f32) -> ToneSequence {
        let per_ms = sample_rate as usize / 1000;
        let segments = steps
            .iter()
            .map(|s| Segment {
                freq_hz: clean(s.freq_hz, 0.0, 0.49 * sample_rate as f32, 0.0),
                len: s.ms.min(10_000) as usize * per_ms,
            })
            .collect();
        ToneSequence::from_segments(sample_rate, segments, level_dbfs)
    }

    /// The courtesy tone, or `None` when it is disabled or has no tone in it.
    pub fn courtesy(config: &CourtesyToneConfig) -> Option<ToneSequence> {
        let seq = ToneSequence::new(SAMPLE_RATE, &config.steps, config.level_dbfs);
        let audible = seq.segments.iter().any(|s| s.freq_hz > 0.0);
        (config.enabled && audible).then_some(seq)
    }

    pub(crate) fn from_segments(sample_rate: u32, mut segments: Vec<Segment>, level_dbfs: f32) -> ToneSequence {
        segments.retain(|s| s.len > 0);
        let r = ((RAMP_MS * 1e-3 * sample_rate as f32).round() as usize).max(1);
        let ramp = (0..=r).map(|i| (0.5 - 0.5 * (std::f64::consts::PI * i as f64 / r as f64).cos()) as f32).collect();
        ToneSequence {
            segments,
            ramp,
            osc: Sine::new(sample_rate, 0.0, 0.0),
            amplitude: db_to_gain(clean(level_dbfs, -120.0, 0.0, -120.0)),
            seg: 0,
            pos: 0,
            active: false,
        }
    }

    /// (Re)start from the beginning.
    pub fn start(&mut self) {
        self.seg = 0;
        self.pos = 0;
        self.active = !self.segments.is_empty();
    }

    /// Stop at once (the next frames render silence). For a clean cut, let it finish instead.
    pub fn stop(&mut self) {
        self.active = false;
    }

    /// Started and not finished yet.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Total length in samples.
    pub fn len_samples(&self) -> usize {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Write the next part of the sequence into `frame` (silence after its end, and when not
    /// started). Returns how many samples of the sequence this frame holds; less than the frame
    /// length means the sequence has ended within this frame.
    pub fn render(&mut self, frame: &mut [f32]) -> usize {
        let n = self.run::<false>(frame);
        frame[n..].fill(0.0);
        n
    }

    /// Like [`render`](Self::render), but adds to `frame` (an ID over speech).
    pub fn mix(&mut self, frame: &mut [f32]) -> usize {
        self.run::<true>(frame)
    }

    /// The envelope (0..=1) at position `p` of a tone segment of `len` samples: the rise for
    /// the first R samples, the fall over the last R, and 1 between (the smaller of the two
    /// when they overlap). Zero at `p = 0` and `p = len - 1`.
    #[inline]
    fn envelope(ramp: &[f32], p: usize, len: usize) -> f32 {
        let r = ramp.len() - 1;
        ramp[p.min(r)].min(ramp[(len - 1 - p).min(r)])
    }

    fn run<const ADD: bool>(&mut self, frame: &mut [f32]) -> usize {
        let mut i = 0;
        while self.active && i < frame.len() {
            let seg = self.segments[self.seg];
            let take = (seg.len - self.pos).min(frame.len() - i);
            let out = &mut frame[i..i + take];
            if seg.freq_hz > 0.0 {
                if self.pos == 0 {
                    self.osc.set_frequency(seg.freq_hz);
                    self.osc.reset_phase();
                }
                let a = self.amplitude;
                for (k, x) in out.iter_mut().enumerate() {
                    let v = a * Self::envelope(&self.ramp, self.pos + k, seg.len) * self.osc.next_unit();
                    if ADD {
                        *x += v;
                    } else {
                        *x = v;
                    }
                }
            } else if !ADD {
                out.fill(0.0);
            }
            self.pos += take;
            i += take;
            if self.pos == seg.len {
                self.pos = 0;
                self.seg += 1;
                self.active = self.seg < self.segments.len();
            }
        }
        self.osc.renormalize();
        i
    }

    #[cfg(test)]
    pub(crate) fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The envelope of the whole sequence, sample by sample (tests measure timing on it).
    #[cfg(test)]
    pub(crate) fn envelope_track(&self) -> Vec<f32> {
        let mut out = Vec::new();
        for s in &self.segments {
            for p in 0..s.len {
                out.push(if s.freq_hz > 0.0 { Self::envelope(&self.ramp, p, s.len) } else { 0.0 });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::level::Meter;

    fn zero_crossings(x: &[f32]) -> usize {
        x.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count()
    }

    #[test]
    fn sine_has_its_frequency_and_level() {
        for (f, level) in [(440.0, -6.0), (1000.0, 0.0), (1750.0, -20.0), (2875.5, -12.0)] {
            let mut osc = Sine::new(SAMPLE_RATE, f, level);
            let mut x = vec![0f32; 10 * 48_000];
            // Frames of varying size, as a driver would use.
            let mut start = 0;
            for (k, size) in [480usize, 960, 2880, 1440, 7].iter().cycle().enumerate() {
                let end = (start + size).min(x.len());
                osc.render(&mut x[start..end]);
                start = end;
                if start == x.len() || k > 100_000 {
                    break;
                }
            }
            // Two zero crossings per cycle over 10 s.
            let measured = zero_crossings(&x) as f64 / 20.0;
            assert!((measured - f as f64).abs() <= 0.1, "{f}: {measured}");
            let m = Meter::measure(&x);
            assert!((m.peak_dbfs - level).abs() < 0.01, "{f}: {m:?}");
            assert!((m.rms_dbfs - (level - 3.0103)).abs() < 0.01, "{f}: {m:?}");
        }
    }

    #[test]
    fn sine_is_phase_continuous_across_frames_and_frequency_changes() {
        let mut a = Sine::new(SAMPLE_RATE, 1000.0, 0.0);
        let mut whole = vec![0f32; 4800];
        a.render(&mut whole);
        let mut b = Sine::new(SAMPLE_RATE, 1000.0, 0.0);
        let mut parts = vec![0f32; 4800];
        for chunk in parts.chunks_mut(333) {
            b.render(chunk);
        }
        let worst = whole.iter().zip(&parts).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        assert!(worst < 1e-6, "{worst}");
        // Against the exact sine after a minute: no drift in phase or amplitude.
        let mut osc = Sine::new(SAMPLE_RATE, 1000.0, 0.0);
        let mut frame = [0f32; 960];
        for _ in 0..3000 {
            osc.render(&mut frame);
        }
        let exact = crate::dsp::test_util::sine_from(1000.0, 1.0, 3000 * 960, 960);
        let worst = frame.iter().zip(&exact).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        assert!(worst < 1e-4, "{worst}");
        // A frequency change keeps the waveform continuous (no jump beyond one step's slope).
        let mut osc = Sine::new(SAMPLE_RATE, 500.0, 0.0);
        let mut x = vec![0f32; 960];
        osc.render(&mut x[..480]);
        osc.set_frequency(1500.0);
        osc.render(&mut x[480..]);
        let max_step = 2.0 * std::f32::consts::PI * 1500.0 / 48_000.0;
        assert!(x.windows(2).all(|w| (w[1] - w[0]).abs() <= max_step * 1.001));
    }

    #[test]
    fn courtesy_tone_is_off_by_default_and_shaped_when_on() {
        assert!(ToneSequence::courtesy(&CourtesyToneConfig::default()).is_none());
        let cfg = CourtesyToneConfig { enabled: true, ..CourtesyToneConfig::default() };
        let mut beep = ToneSequence::courtesy(&cfg).unwrap();
        assert!(!beep.is_active());
        assert_eq!(beep.len_samples(), 180 * 48);
        beep.start();
        let mut out = Vec::new();
        let mut frame = [1f32; 960];
        loop {
            let n = beep.render(&mut frame);
            out.extend_from_slice(&frame[..n]);
            assert!(frame[n..].iter().all(|&x| x == 0.0));
            if n < frame.len() {
                break;
            }
        }
        assert!(!beep.is_active());
        assert_eq!(out.len(), 180 * 48);
        // Two bursts, each starting and ending at zero, separated by silence.
        let first = &out[..80 * 48];
        let second = &out[100 * 48..];
        assert!(out[80 * 48..100 * 48].iter().all(|&x| x == 0.0));
        for burst in [first, second] {
            assert_eq!(burst[0], 0.0);
            assert!(burst.last().unwrap().abs() < 1e-6);
            assert!(burst[1].abs() < 1e-3 && burst[burst.len() - 2].abs() < 1e-3);
            let m = Meter::measure(burst);
            assert!((m.peak_dbfs + 15.0).abs() < 0.05, "{m:?}");
        }
        // 1500 Hz for 80 ms: 120 cycles; 1000 Hz: 80.
        assert!((zero_crossings(first) as i64 - 240).abs() <= 1);
        assert!((zero_crossings(second) as i64 - 160).abs() <= 1);
        // Not started again: silence.
        let n = beep.render(&mut frame);
        assert_eq!(n, 0);
        assert!(frame.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn mix_adds_and_render_overwrites() {
        let steps = [ToneStep { freq_hz: 1000.0, ms: 30 }];
        let mut a = ToneSequence::new(SAMPLE_RATE, &steps, -6.0);
        let mut b = a.clone();
        a.start();
        b.start();
        let mut rendered = [0f32; 2000];
        let mut mixed = [0.25f32; 2000];
        assert_eq!(a.render(&mut rendered), 1440);
        assert_eq!(b.mix(&mut mixed), 1440);
        for (r, m) in rendered.iter().zip(&mixed) {
            assert!((r + 0.25 - m).abs() < 1e-6);
        }
    }

    #[test]
    fn odd_sequences_do_not_panic() {
        let steps = [
            ToneStep { freq_hz: f32::NAN, ms: 10 },
            ToneStep { freq_hz: 1e9, ms: 0 },
            ToneStep { freq_hz: 700.0, ms: 1 }, // shorter than the ramps
            ToneStep { freq_hz: -5.0, ms: u32::MAX },
        ];
        let mut seq = ToneSequence::new(SAMPLE_RATE, &steps, f32::NAN);
        seq.start();
        let mut frame = [0f32; 480];
        for _ in 0..3 {
            seq.render(&mut frame);
            seq.mix(&mut []);
        }
        let mut empty = ToneSequence::new(SAMPLE_RATE, &[], -10.0);
        empty.start();
        assert!(!empty.is_active());
        assert_eq!(empty.render(&mut frame), 0);
    }
}
