//! Test signals for the benchmark: deterministic, speech-like where the codec cost matters,
//! tone bursts where an onset must be found.

use std::f32::consts::TAU;

/// A voiced, syllable-modulated signal with noise: close enough to speech for Opus's cost.
pub fn speechlike(samples: usize) -> Vec<f32> {
    let mut seed = 0x2545_f491_u32;
    let mut noise = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        (seed as f32 / u32::MAX as f32) * 2.0 - 1.0
    };
    let mut phase = 0.0f32;
    (0..samples)
        .map(|i| {
            let t = i as f32 / 48_000.0;
            let f0 = 140.0 + 25.0 * (TAU * 0.7 * t).sin();
            phase = (phase + TAU * f0 / 48_000.0) % TAU;
            let voiced: f32 = (1..=12).map(|h| (phase * h as f32).sin() / h as f32).sum();
            let syllable = (0.5 + 0.5 * (TAU * 4.0 * t).sin()).powi(2);
            0.25 * syllable * (0.8 * voiced + 0.2 * noise())
        })
        .collect()
}

/// Varied speech-like audio as a radio receives it: a source-filter model (a glottal pulse
/// train whose pitch glides between 85 and 255 Hz, or noise for unvoiced sounds, through three
/// formant resonators that move every syllable), syllables of 80-400 ms within ±3 dB of each
/// other's loudness, with random pauses,
/// with 1% pitch jitter, then the transmitter's 300 Hz high-pass (6th-order Butterworth:
/// FM radios filter their microphone audio below the CTCSS band). Scaled so the active part has RMS
/// `active_rms_dbfs`. Deterministic for a seed.
pub fn radio_speech(seed: u32, seconds: f64, active_rms_dbfs: f64) -> Vec<f32> {
    use crate::dsp::biquad::{Biquad, BiquadCoeffs};
    let fs = 48_000.0f64;
    let n = (seconds * fs) as usize;
    let mut rng = XorShift(seed.max(1));
    let mut uni = move || rng.unit(); // 0..1
    let mut noise = XorShift(seed.wrapping_mul(2_654_435_761).max(7));
    let mut out = vec![0.0f32; n];
    let mut envs = vec![false; n];
    // Resonator state per formant.
    let mut res = [(0.0f64, 0.0f64); 3];
    let mut coefs = [(0.0f64, 0.0f64, 1.0f64); 3];
    let mut i = 0;
    let mut pitch = 140.0;
    let mut phase = 0.0f64;
    let mut jitter = 1.0f64;
    while i < n {
        // A syllable, then sometimes a pause.
        let len = ((0.08 + 0.32 * uni()) * fs) as usize;
        let voiced = uni() < 0.8;
        let target_pitch = 85.0 + 170.0 * uni();
        let formants = [300.0 + 600.0 * uni(), 900.0 + 1400.0 * uni(), 2300.0 + 900.0 * uni()];
        for (c, f) in coefs.iter_mut().zip(formants) {
            let bw = 80.0 + f * 0.05;
            let r = (-std::f64::consts::PI * bw / fs).exp();
            let th = 2.0 * std::f64::consts::PI * f / fs;
            *c = (2.0 * r * th.cos(), -r * r, (1.0 - r) * 4.0);
        }
        let start_pitch = pitch;
        let loudness = 0.7 + 0.7 * uni(); // ±3 dB from syllable to syllable
        let len = len.min(n - i);
        for j in 0..len {
            let pos = j as f64 / len as f64;
            pitch = start_pitch + (target_pitch - start_pitch) * pos;
            let env = (std::f64::consts::PI * pos).sin();
            let src = if voiced {
                phase += pitch * jitter / fs;
                if phase >= 1.0 {
                    phase -= 1.0;
                    jitter = 1.0 + 0.01 * (2.0 * uni() - 1.0);
                    1.0
                } else {
                    0.0
                }
            } else {
                0.3 * (2.0 * noise.unit() - 1.0)
            };
            let mut y = 0.0;
            for (s, c) in res.iter_mut().zip(coefs.iter()) {
                let v = c.2 * src + c.0 * s.0 + c.1 * s.1;
                s.1 = s.0;
                s.0 = v;
                y += v;
            }
            out[i + j] = (y * env) as f32;
            envs[i + j] = env > 0.05;
        }
        // Each syllable at its own loudness, whatever its formants' gain.
        let syl = &mut out[i..i + len];
        let rms = (syl.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / len.max(1) as f64).sqrt();
        if rms > 0.0 {
            for v in syl {
                *v = (*v as f64 * loudness / rms) as f32;
            }
        }
        i += len;
        if uni() < 0.3 {
            i += ((0.05 + 0.5 * uni()) * fs) as usize;
        }
    }
    for q in [0.5176, std::f64::consts::FRAC_1_SQRT_2, 1.9319] {
        Biquad::new(BiquadCoeffs::high_pass(fs, 300.0, q)).process(&mut out);
    }
    let (mut sum, mut cnt) = (0.0f64, 0usize);
    for (v, a) in out.iter().zip(&envs) {
        if *a {
            sum += (*v as f64) * (*v as f64);
            cnt += 1;
        }
    }
    let scale = 10f64.powf(active_rms_dbfs / 20.0) / (sum / cnt.max(1) as f64).sqrt().max(1e-12);
    for v in &mut out {
        *v = (*v as f64 * scale) as f32;
    }
    out
}

struct XorShift(u32);

impl XorShift {
    fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x as f64 / u32::MAX as f64
    }
}

/// `period` samples: silence for the first half, a 1 kHz tone at -12 dBFS for the second.
pub fn tone_bursts(samples: usize, period: usize) -> Vec<f32> {
    (0..samples)
        .map(|i| if i % period >= period / 2 { 0.25 * (TAU * 1000.0 * i as f32 / 48_000.0).sin() } else { 0.0 })
        .collect()
}

/// Indices where the signal turns loud after at least `quiet` quiet samples.
pub fn onsets(samples: &[f32], threshold: f32, quiet: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut last_loud: Option<usize> = None;
    for (i, s) in samples.iter().enumerate() {
        if s.abs() > threshold {
            if last_loud.is_none_or(|l| i - l > quiet) {
                out.push(i);
            }
            last_loud = Some(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_have_one_onset_per_period() {
        let s = tone_bursts(48_000 * 3, 48_000);
        let found = onsets(&s, 0.05, 4800);
        assert_eq!(found.len(), 3);
        for (f, want) in found.iter().zip([24_000, 72_000, 120_000]) {
            assert!((want..want + 3).contains(f), "{found:?}");
        }
        let v = speechlike(4800);
        assert!(v.iter().all(|x| x.abs() <= 1.0) && v.iter().any(|x| x.abs() > 0.05));
    }
}
