//! [`Decimator`]: a windowed-sinc FIR low-pass that keeps one output in `factor` inputs, the
//! front end of the signalling detectors ([`super::ctcss`], [`super::dtmf`]), which look at
//! narrow low bands and so run at a fraction of the 48 kHz rate.
//!
//! The delay line is stored twice end to end, so each output is one contiguous dot product
//! (eight accumulators, which the compiler turns into vector code); per input sample the
//! cost is two stores, per output `taps` multiply-adds.

/// Polyphase-free FIR decimator (the filter runs only on the samples it outputs).
#[derive(Debug, Clone)]
pub struct Decimator {
    /// Taps, reversed (oldest sample first), padded to a multiple of 8 with zeros.
    taps: Vec<f32>,
    /// Delay line, twice `taps.len()` long: sample `i` is at `pos + i` and `pos + i + len`.
    line: Vec<f32>,
    pos: usize,
    factor: usize,
    phase: usize,
    /// [`Decimator::process`]'s state: the last `taps - 1` inputs (room for `CHUNK` more),
    /// and how many inputs to take before the next output.
    hist: Vec<f32>,
    skip: usize,
}

/// Inputs [`Decimator::process`] takes at a time (a 60 ms frame).
const CHUNK: usize = 2880;

/// Dot product of equal-length slices whose length is a multiple of 8, in eight lanes.
#[inline]
fn dot(w: &[f32], t: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (w, t) in w.chunks_exact(8).zip(t.chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += w[k] * t[k];
        }
    }
    acc.iter().sum()
}

impl Decimator {
    /// Hamming-windowed sinc with `taps` taps (rounded up to a multiple of 8) and -6 dB point
    /// `cutoff_hz` at input rate `fs`; one output per `factor` inputs.
    pub fn new(fs: f32, factor: usize, taps: usize, cutoff_hz: f32) -> Decimator {
        let factor = factor.max(1);
        let n = taps.max(8).div_ceil(8) * 8;
        let fc = (cutoff_hz / fs).clamp(0.0, 0.5) as f64;
        let mid = (n - 1) as f64 / 2.0;
        let mut h: Vec<f64> = (0..n)
            .map(|i| {
                let t = i as f64 - mid;
                let sinc = if t == 0.0 {
                    2.0 * fc
                } else {
                    (2.0 * std::f64::consts::PI * fc * t).sin() / (std::f64::consts::PI * t)
                };
                let w = 0.54 - 0.46 * (2.0 * std::f64::consts::PI * i as f64 / (n - 1) as f64).cos();
                sinc * w
            })
            .collect();
        let sum: f64 = h.iter().sum();
        if sum != 0.0 {
            for v in &mut h {
                *v /= sum;
            }
        }
        // Symmetric, so reversing changes nothing; kept oldest-first for clarity.
        let taps = h.iter().rev().map(|&v| v as f32).collect();
        let mut hist = Vec::with_capacity(n - 1 + CHUNK);
        hist.resize(n - 1, 0.0);
        Decimator { taps, line: vec![0.0; 2 * n], pos: 0, factor, phase: 0, hist, skip: factor - 1 }
    }

    /// Output rate for input rate `fs`.
    pub fn output_rate(&self, fs: f32) -> f32 {
        fs / self.factor as f32
    }

    /// Feed one input sample; returns an output sample every `factor` inputs.
    #[inline]
    pub fn push(&mut self, x: f32) -> Option<f32> {
        let n = self.taps.len();
        self.line[self.pos] = x;
        self.line[self.pos + n] = x;
        self.pos += 1;
        if self.pos == n {
            self.pos = 0;
        }
        self.phase += 1;
        if self.phase < self.factor {
            return None;
        }
        self.phase = 0;
        // The oldest sample is at `pos` now.
        let window = &self.line[self.pos..self.pos + n];
        Some(dot(window, &self.taps))
    }

    /// Feed a run of input samples (any length); `emit` gets every output. The samples are
    /// copied behind the filter's history in bulk, so the per-input cost is a copy and the
    /// work is one dot product per output.
    pub fn process(&mut self, input: &[f32], mut emit: impl FnMut(f32)) {
        let n = self.taps.len();
        for chunk in input.chunks(CHUNK) {
            // `hist` holds the last n - 1 inputs; the chunk goes behind them.
            self.hist.extend_from_slice(chunk);
            let mut j = n - 1 + self.skip;
            while j < self.hist.len() {
                emit(dot(&self.hist[j + 1 - n..=j], &self.taps));
                j += self.factor;
            }
            self.skip = j - self.hist.len();
            let keep = self.hist.len() - (n - 1);
            self.hist.copy_within(keep.., 0);
            self.hist.truncate(n - 1);
        }
    }

    /// Clear the delay line (after a bad frame).
    pub fn reset(&mut self) {
        self.hist.clear();
        self.hist.resize(self.taps.len() - 1, 0.0);
        self.skip = self.factor - 1;
        self.line.fill(0.0);
        self.pos = 0;
        self.phase = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::test_util::{rms, sine};

    fn gain_db(d: &mut Decimator, freq: f64) -> f64 {
        let x = sine(freq, 0.5, 48_000);
        let y: Vec<f32> = x.iter().filter_map(|&v| d.push(v)).collect();
        let half = y.len() / 2;
        20.0 * (rms(&y[half..]) / rms(&x[half..])).log10()
    }

    /// The CTCSS decoder's two stages (48 kHz -> 4 kHz -> 1 kHz).
    fn ctcss_gain_db(freq: f64) -> f64 {
        let mut a = Decimator::new(48_000.0, 12, 48, 2000.0);
        let mut b = Decimator::new(4_000.0, 4, 200, 295.0);
        let x = sine(freq, 0.5, 96_000);
        let y: Vec<f32> = x.iter().filter_map(|&v| a.push(v)).filter_map(|v| b.push(v)).collect();
        let half = y.len() / 2;
        20.0 * (rms(&y[half..]) / rms(&x[half..])).log10()
    }

    #[test]
    fn ctcss_front_end_passes_the_band_and_stops_speech_and_what_would_alias_onto_it() {
        for f in [67.0, 150.0, 254.1] {
            let g = ctcss_gain_db(f);
            assert!(g.abs() < 0.3, "{f} Hz: {g:.2} dB");
        }
        for f in [330.0, 400.0, 745.0, 1500.0, 3000.0, 3750.0, 5000.0] {
            let g = ctcss_gain_db(f);
            assert!(g < -45.0, "{f} Hz: {g:.1} dB");
        }
    }

    #[test]
    fn bulk_process_gives_what_push_gives_for_any_frame_sizes() {
        let x = sine(321.0, 0.5, 20_000);
        let mut a = Decimator::new(48_000.0, 12, 48, 2000.0);
        let mut b = a.clone();
        let pushed: Vec<f32> = x.iter().filter_map(|&v| a.push(v)).collect();
        let mut bulk = Vec::new();
        let mut at = 0;
        for (i, len) in [1, 7, 480, 5000, 13, 960].iter().cycle().enumerate() {
            if at >= x.len() || i > 1000 {
                break;
            }
            let end = (at + len).min(x.len());
            b.process(&x[at..end], |y| bulk.push(y));
            at = end;
        }
        assert_eq!(pushed.len(), bulk.len());
        for (p, q) in pushed.iter().zip(&bulk) {
            assert!((p - q).abs() < 1e-6, "{p} {q}");
        }
    }

    #[test]
    fn dtmf_front_end_passes_the_band_and_stops_what_would_alias_onto_it() {
        for f in [697.0, 1209.0, 1690.0] {
            let g = gain_db(&mut Decimator::new(48_000.0, 6, 36, 4000.0), f);
            assert!(g.abs() < 0.3, "{f} Hz: {g:.2} dB");
        }
        for f in [6350.0, 7303.0, 9000.0] {
            let g = gain_db(&mut Decimator::new(48_000.0, 6, 36, 4000.0), f);
            assert!(g < -40.0, "{f} Hz: {g:.1} dB");
        }
    }
}
