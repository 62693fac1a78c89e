//! Signal checks shared by the audio tests.

pub(crate) fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|s| s * s).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

pub(crate) fn peak(x: &[f32]) -> f32 {
    x.iter().fold(0.0, |m, s| m.max(s.abs()))
}

/// Power of `x` at `hz` (Goertzel), normalised by length.
pub(crate) fn goertzel_power(x: &[f32], rate: f32, hz: f32) -> f32 {
    let w = 2.0 * std::f32::consts::PI * hz / rate;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for &v in x {
        let s0 = v + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (x.len() as f32).powi(2)
}

/// Frequency estimate from rising zero crossings (good to a fraction of a Hz over a second).
pub(crate) fn zero_crossing_hz(x: &[f32], rate: f32) -> f32 {
    let rising: Vec<f32> = x
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] < 0.0 && w[1] >= 0.0)
        .map(|(i, w)| i as f32 + w[0] / (w[0] - w[1]))
        .collect();
    if rising.len() < 2 {
        return 0.0;
    }
    (rising.len() - 1) as f32 * rate / (rising[rising.len() - 1] - rising[0])
}
