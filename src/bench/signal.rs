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
