//! Signal helpers shared by the dsp tests.

use super::SAMPLE_RATE;

pub const FS: f32 = SAMPLE_RATE as f32;

/// `n` samples of a sine at `freq` Hz and peak `amp`, starting at phase 0 (computed in f64).
pub fn sine(freq: f64, amp: f64, n: usize) -> Vec<f32> {
    sine_from(freq, amp, 0, n)
}

/// Samples `start..start + n` of the sine above.
pub fn sine_from(freq: f64, amp: f64, start: usize, n: usize) -> Vec<f32> {
    let w = 2.0 * std::f64::consts::PI * freq / FS as f64;
    (start..start + n).map(|i| (amp * (w * i as f64).sin()) as f32).collect()
}

pub fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / x.len() as f64).sqrt()
}

pub fn rms_db(x: &[f32]) -> f64 {
    20.0 * rms(x).log10()
}

/// Steady-state gain in dB of `process` for a sine at `freq` Hz and peak `amp`: two seconds
/// are processed in 20 ms frames and the last second (a whole number of cycles for integer
/// frequencies) is compared with the input.
pub fn gain_db_at(freq: f64, amp: f64, mut process: impl FnMut(&mut [f32])) -> f64 {
    let n = 2 * SAMPLE_RATE as usize;
    let input = sine(freq, amp, n);
    let mut output = input.clone();
    for frame in output.chunks_mut(960) {
        process(frame);
    }
    let half = n / 2;
    20.0 * (rms(&output[half..]) / rms(&input[half..])).log10()
}

/// A deterministic white-noise source (xorshift32), uniform in [-amp, amp].
pub struct Noise(u32);

impl Noise {
    pub fn new(seed: u32) -> Noise {
        Noise(seed.max(1))
    }

    pub fn next(&mut self, amp: f32) -> f32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        amp * ((x as f32 / u32::MAX as f32) * 2.0 - 1.0)
    }

    pub fn fill(&mut self, frame: &mut [f32], amp: f32) {
        for x in frame {
            *x = self.next(amp);
        }
    }
}

/// A speech-like test signal: a 150 Hz voiced buzz (harmonics up to 3 kHz with a falling
/// spectrum) chopped into syllables (4 per second, raised-sine shaped, with short gaps) and a
/// 0.6 s pause every 2.5 s. Scaled so the syllables (the active part) have an RMS of
/// `active_rms_dbfs`.
pub fn speech_like(active_rms_dbfs: f64, seconds: f64) -> Vec<f32> {
    let fs = FS as f64;
    let n = (seconds * fs) as usize;
    let mut out = Vec::with_capacity(n);
    let mut active = Vec::with_capacity(n);
    for i in 0..n {
        let t = i as f64 / fs;
        let mut buzz = 0.0;
        for h in 1..=20 {
            let f = 150.0 * h as f64;
            buzz += (2.0 * std::f64::consts::PI * f * t + h as f64).sin() / h as f64;
        }
        let in_pause = (t % 2.5) > 1.9;
        let syl = (t * 4.0) % 1.0; // position within a 250 ms syllable
        let env = if in_pause || syl > 0.8 { 0.0 } else { (std::f64::consts::PI * syl / 0.8).sin() };
        out.push(buzz * env);
        active.push(env > 0.0);
    }
    let act: Vec<f64> = out.iter().zip(&active).filter(|(_, a)| **a).map(|(v, _)| *v).collect();
    let act_rms = (act.iter().map(|v| v * v).sum::<f64>() / act.len() as f64).sqrt();
    let scale = 10f64.powf(active_rms_dbfs / 20.0) / act_rms;
    out.iter().map(|v| (v * scale) as f32).collect()
}

pub use crate::bench::signal::radio_speech;
