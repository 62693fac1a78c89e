//! Levels in dBFS: conversions and the per-frame peak/RMS meter.
//!
//! 0 dBFS is a sample magnitude of 1.0 (peak) or a full-scale square wave (RMS), so a
//! full-scale sine meters 0 dBFS peak and -3.01 dBFS RMS. Silence, and anything quieter than
//! [`SILENCE_DBFS`], reads as [`SILENCE_DBFS`] instead of minus infinity.

/// The floor of every level: digital silence reads as -120 dBFS.
pub const SILENCE_DBFS: f32 = -120.0;

/// Linear amplitude at [`SILENCE_DBFS`] (1e-6).
const SILENCE_GAIN: f32 = 1e-6;
/// Mean square at [`SILENCE_DBFS`] (1e-12).
const SILENCE_POWER: f32 = 1e-12;

/// Linear amplitude gain for a level change in dB: `10^(db/20)`.
pub fn db_to_gain(db: f32) -> f32 {
    10f32.powf(db / 20.0)
}

/// Level in dB of a linear amplitude (`20 log10 |gain|`), floored at [`SILENCE_DBFS`]
/// (also for 0 and NaN).
pub fn gain_to_db(gain: f32) -> f32 {
    let g = gain.abs();
    if g > SILENCE_GAIN {
        20.0 * g.log10()
    } else {
        SILENCE_DBFS
    }
}

/// Level in dB of a mean square (`10 log10 power`), floored at [`SILENCE_DBFS`].
pub fn power_to_db(power: f32) -> f32 {
    if power > SILENCE_POWER {
        10.0 * power.log10()
    } else {
        SILENCE_DBFS
    }
}

/// Peak and RMS level of one frame, in dBFS.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Meter {
    pub peak_dbfs: f32,
    pub rms_dbfs: f32,
}

impl Meter {
    /// The meter of an empty or silent frame.
    pub const SILENCE: Meter = Meter { peak_dbfs: SILENCE_DBFS, rms_dbfs: SILENCE_DBFS };

    /// Meter one frame. A frame holding NaN or infinity (or samples so large their squares
    /// overflow) meters as silence: every reading is finite.
    pub fn measure(frame: &[f32]) -> Meter {
        let (peak, sum) = peak_and_sum_sq(frame);
        Meter::from_sums(peak, sum, frame.len())
    }

    /// A meter from a frame's peak magnitude and sum of squares over `len` samples. Frames with
    /// non-finite samples (or squares) meter as silence, so a meter is always finite.
    pub(crate) fn from_sums(peak: f32, sum_sq: f32, len: usize) -> Meter {
        if len == 0 || !sum_sq.is_finite() {
            return Meter::SILENCE;
        }
        Meter { peak_dbfs: gain_to_db(peak), rms_dbfs: power_to_db(sum_sq / len as f32) }
    }
}

/// Peak magnitude and sum of squares of a frame. Eight independent lanes let the compiler
/// vectorize the loop. The sum is infinite or NaN if any sample is (callers check that).
pub(crate) fn peak_and_sum_sq(frame: &[f32]) -> (f32, f32) {
    let mut peak = [0f32; 8];
    let mut sum = [0f32; 8];
    let chunks = frame.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for i in 0..8 {
            let x = chunk[i];
            peak[i] = peak[i].max(x.abs());
            sum[i] += x * x;
        }
    }
    for (i, &x) in tail.iter().enumerate() {
        peak[i] = peak[i].max(x.abs());
        sum[i] += x * x;
    }
    (peak.iter().fold(0f32, |a, &b| a.max(b)), sum.iter().sum())
}

/// Multiply a frame by `gain` in place and return its sum of squares afterwards.
pub(crate) fn scale_and_sum_sq(frame: &mut [f32], gain: f32) -> f32 {
    let mut sum = [0f32; 8];
    let mut chunks = frame.chunks_exact_mut(8);
    for chunk in &mut chunks {
        for i in 0..8 {
            let x = chunk[i] * gain;
            chunk[i] = x;
            sum[i] += x * x;
        }
    }
    for (i, x) in chunks.into_remainder().iter_mut().enumerate() {
        *x *= gain;
        sum[i] += *x * *x;
    }
    sum.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::test_util::sine;

    #[test]
    fn conversions() {
        assert!((db_to_gain(-6.0) - 0.501_187).abs() < 1e-5);
        assert!((db_to_gain(20.0) - 10.0).abs() < 1e-4);
        assert_eq!(db_to_gain(0.0), 1.0);
        assert!((gain_to_db(0.5) + 6.0206).abs() < 1e-3);
        assert!((gain_to_db(-0.5) + 6.0206).abs() < 1e-3);
        assert_eq!(gain_to_db(0.0), SILENCE_DBFS);
        assert_eq!(gain_to_db(f32::NAN), SILENCE_DBFS);
        assert_eq!(gain_to_db(1e-9), SILENCE_DBFS);
        assert_eq!(power_to_db(0.0), SILENCE_DBFS);
        assert!((power_to_db(0.5) + 3.0103).abs() < 1e-3);
        for db in [-100.0, -40.0, -6.0, 0.0, 12.0] {
            assert!((gain_to_db(db_to_gain(db)) - db).abs() < 1e-3, "{db}");
        }
    }

    #[test]
    fn full_scale_sine_meters_0_dbfs_peak_and_minus_3_01_rms() {
        // 1 kHz at 48 kHz: 48 samples a cycle, so the crest (sample 12) is sampled exactly.
        let frame = sine(1000.0, 1.0, 960);
        let m = Meter::measure(&frame);
        assert!(m.peak_dbfs.abs() < 0.001, "{m:?}");
        assert!((m.rms_dbfs + 3.0103).abs() < 0.001, "{m:?}");
        // Odd lengths use the tail loop.
        let m = Meter::measure(&frame[..485]);
        assert!(m.peak_dbfs.abs() < 0.001, "{m:?}");
    }

    #[test]
    fn silence_and_empty_frames() {
        assert_eq!(Meter::measure(&[]), Meter::SILENCE);
        assert_eq!(Meter::measure(&[0.0; 480]), Meter::SILENCE);
        let (_, sum) = peak_and_sum_sq(&[0.0, f32::NAN, 0.0]);
        assert!(!sum.is_finite());
    }

    #[test]
    fn scale_and_sum() {
        let mut frame = vec![0.5f32; 13];
        let sum = scale_and_sum_sq(&mut frame, 2.0);
        assert!(frame.iter().all(|&x| x == 1.0));
        assert_eq!(sum, 13.0);
    }
}
