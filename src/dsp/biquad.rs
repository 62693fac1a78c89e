//! Second-order IIR sections after Robert Bristow-Johnson's "Audio EQ Cookbook", run in
//! transposed direct form II. Coefficients are designed in f64 and stored as f32; the state is
//! f32 (ample for 300 Hz at 48 kHz: the sections' poles stay well inside the unit circle).
//!
//! Frequencies are clamped into 10 Hz ..= 0.49 fs and Q/slope into sane ranges, so no argument
//! can make a section unstable (below ~10 Hz at 48 kHz, f32 coefficients can no longer hold
//! the poles inside the unit circle).

use std::f64::consts::PI;

/// Normalized coefficients (`a0` = 1) of
/// `H(z) = (b0 + b1 z^-1 + b2 z^-2) / (1 + a1 z^-1 + a2 z^-2)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BiquadCoeffs {
    pub b0: f32,
    pub b1: f32,
    pub b2: f32,
    pub a1: f32,
    pub a2: f32,
}

/// Filter state below this magnitude is flushed to zero at the end of a frame, so a section fed
/// digital silence does not decay into (slow, on some CPUs) subnormal numbers.
const FLUSH: f32 = 1e-20;

/// The RBJ intermediate values: `(cos w0, alpha)` for a cutoff `f0` and quality `q`.
fn rbj(fs: f64, f0: f64, q: f64) -> (f64, f64) {
    let f0 = clamp_freq(fs, f0);
    let q = if q.is_nan() { std::f64::consts::FRAC_1_SQRT_2 } else { q.clamp(0.05, 50.0) };
    let w0 = 2.0 * PI * f0 / fs;
    (w0.cos(), w0.sin() / (2.0 * q))
}

fn clamp_freq(fs: f64, f: f64) -> f64 {
    if f.is_nan() {
        fs / 4.0
    } else {
        f.clamp(10.0, 0.49 * fs)
    }
}

impl BiquadCoeffs {
    /// Pass everything unchanged.
    pub const IDENTITY: BiquadCoeffs = BiquadCoeffs { b0: 1.0, b1: 0.0, b2: 0.0, a1: 0.0, a2: 0.0 };

    /// Normalize by `a0` and round to f32.
    fn from_f64(b: [f64; 3], a: [f64; 3]) -> BiquadCoeffs {
        let inv = 1.0 / a[0];
        BiquadCoeffs {
            b0: (b[0] * inv) as f32,
            b1: (b[1] * inv) as f32,
            b2: (b[2] * inv) as f32,
            a1: (a[1] * inv) as f32,
            a2: (a[2] * inv) as f32,
        }
    }

    /// Second-order high-pass (RBJ HPF). `q` = 1/√2 is Butterworth.
    pub fn high_pass(fs: f64, f0: f64, q: f64) -> BiquadCoeffs {
        let (c, alpha) = rbj(fs, f0, q);
        let b = [(1.0 + c) / 2.0, -(1.0 + c), (1.0 + c) / 2.0];
        BiquadCoeffs::from_f64(b, [1.0 + alpha, -2.0 * c, 1.0 - alpha])
    }

    /// Second-order low-pass (RBJ LPF). `q` = 1/√2 is Butterworth.
    pub fn low_pass(fs: f64, f0: f64, q: f64) -> BiquadCoeffs {
        let (c, alpha) = rbj(fs, f0, q);
        let b = [(1.0 - c) / 2.0, 1.0 - c, (1.0 - c) / 2.0];
        BiquadCoeffs::from_f64(b, [1.0 + alpha, -2.0 * c, 1.0 - alpha])
    }

    /// Second-order all-pass (RBJ APF): unit gain at every frequency, phase falling through
    /// -180 degrees at `f0`, the more steeply the higher `q`.
    pub fn all_pass(fs: f64, f0: f64, q: f64) -> BiquadCoeffs {
        let (c, alpha) = rbj(fs, f0, q);
        BiquadCoeffs::from_f64([1.0 - alpha, -2.0 * c, 1.0 + alpha], [1.0 + alpha, -2.0 * c, 1.0 - alpha])
    }

    /// RBJ shelf intermediates: `(A, cos w0, 2 sqrt(A) alpha)` for a shelf slope `s`
    /// (1 = the steepest slope without overshoot).
    fn shelf(fs: f64, f0: f64, gain_db: f64, s: f64) -> (f64, f64, f64) {
        let gain_db = if gain_db.is_nan() { 0.0 } else { gain_db.clamp(-60.0, 60.0) };
        let s = if s.is_nan() { 1.0 } else { s.clamp(0.05, 1.0) };
        let a = 10f64.powf(gain_db / 40.0);
        let w0 = 2.0 * PI * clamp_freq(fs, f0) / fs;
        let alpha = w0.sin() / 2.0 * ((a + 1.0 / a) * (1.0 / s - 1.0) + 2.0).sqrt();
        (a, w0.cos(), 2.0 * a.sqrt() * alpha)
    }

    /// Second-order low shelf: `gain_db` below `f0`, 0 dB above (RBJ lowShelf).
    pub fn low_shelf(fs: f64, f0: f64, gain_db: f64, slope: f64) -> BiquadCoeffs {
        let (a, c, k) = BiquadCoeffs::shelf(fs, f0, gain_db, slope);
        let b = [
            a * ((a + 1.0) - (a - 1.0) * c + k),
            2.0 * a * ((a - 1.0) - (a + 1.0) * c),
            a * ((a + 1.0) - (a - 1.0) * c - k),
        ];
        let den = [(a + 1.0) + (a - 1.0) * c + k, -2.0 * ((a - 1.0) + (a + 1.0) * c), (a + 1.0) + (a - 1.0) * c - k];
        BiquadCoeffs::from_f64(b, den)
    }

    /// Second-order high shelf: 0 dB below `f0`, `gain_db` above (RBJ highShelf).
    pub fn high_shelf(fs: f64, f0: f64, gain_db: f64, slope: f64) -> BiquadCoeffs {
        let (a, c, k) = BiquadCoeffs::shelf(fs, f0, gain_db, slope);
        let b = [
            a * ((a + 1.0) + (a - 1.0) * c + k),
            -2.0 * a * ((a - 1.0) + (a + 1.0) * c),
            a * ((a + 1.0) + (a - 1.0) * c - k),
        ];
        let den = [(a + 1.0) - (a - 1.0) * c + k, 2.0 * ((a - 1.0) - (a + 1.0) * c), (a + 1.0) - (a - 1.0) * c - k];
        BiquadCoeffs::from_f64(b, den)
    }

    /// First-order shelf `H(s) = (1 + s/wz) / (1 + s/wp)` (a zero at `zero_hz`, a pole at
    /// `pole_hz`), by the bilinear transform with both corners prewarped, scaled to 0 dB at
    /// `unity_hz`. Pole below zero: a falling 6 dB/octave shelf between them (de-emphasis);
    /// zero below pole: the rising mirror image (pre-emphasis). Swapping the corners gives the
    /// exact inverse filter. Uses only `b0, b1, a1`.
    pub fn first_order_shelf(fs: f64, zero_hz: f64, pole_hz: f64, unity_hz: f64) -> BiquadCoeffs {
        // With s = 2 fs (1 - z^-1)/(1 + z^-1) and w = 2 fs tan(pi f / fs): 1 + s/w becomes
        // ((1 + k) + (1 - k) z^-1) / (1 + z^-1), k = 1 / tan(pi f / fs).
        let kz = 1.0 / (PI * clamp_freq(fs, zero_hz) / fs).tan();
        let kp = 1.0 / (PI * clamp_freq(fs, pole_hz) / fs).tan();
        let raw = BiquadCoeffs::from_f64([1.0 + kz, 1.0 - kz, 0.0], [1.0 + kp, 1.0 - kp, 0.0]);
        let scale = 1.0 / raw.magnitude(fs, clamp_freq(fs, unity_hz));
        BiquadCoeffs::from_f64([(1.0 + kz) * scale, (1.0 - kz) * scale, 0.0], [1.0 + kp, 1.0 - kp, 0.0])
    }

    /// The filter's magnitude response at `f` Hz (linear), evaluated analytically.
    pub fn magnitude(&self, fs: f64, f: f64) -> f64 {
        let w = 2.0 * PI * f / fs;
        // z^-1 = e^{-jw}; evaluate numerator and denominator as complex numbers.
        let (c1, s1) = (w.cos(), -w.sin());
        let (c2, s2) = ((2.0 * w).cos(), -(2.0 * w).sin());
        let (b0, b1, b2) = (self.b0 as f64, self.b1 as f64, self.b2 as f64);
        let (a1, a2) = (self.a1 as f64, self.a2 as f64);
        let num = (b0 + b1 * c1 + b2 * c2, b1 * s1 + b2 * s2);
        let den = (1.0 + a1 * c1 + a2 * c2, a1 * s1 + a2 * s2);
        (num.0.hypot(num.1)) / (den.0.hypot(den.1))
    }
}

/// One biquad section with its state.
#[derive(Debug, Clone)]
pub struct Biquad {
    c: BiquadCoeffs,
    z1: f32,
    z2: f32,
}

impl Biquad {
    pub fn new(c: BiquadCoeffs) -> Biquad {
        Biquad { c, z1: 0.0, z2: 0.0 }
    }

    pub fn coeffs(&self) -> BiquadCoeffs {
        self.c
    }

    /// Change the coefficients, keeping the state (no click for small changes).
    pub fn set_coeffs(&mut self, c: BiquadCoeffs) {
        self.c = c;
    }

    /// Clear the state.
    pub fn reset(&mut self) {
        self.z1 = 0.0;
        self.z2 = 0.0;
    }

    /// Filter one sample.
    #[inline]
    pub fn tick(&mut self, x: f32) -> f32 {
        let c = &self.c;
        let y = c.b0 * x + self.z1;
        self.z1 = c.b1 * x - c.a1 * y + self.z2;
        self.z2 = c.b2 * x - c.a2 * y;
        y
    }

    /// Filter a frame in place.
    pub fn process(&mut self, frame: &mut [f32]) {
        let BiquadCoeffs { b0, b1, b2, a1, a2 } = self.c;
        let (mut z1, mut z2) = (self.z1, self.z2);
        for x in frame.iter_mut() {
            let xi = *x;
            let y = b0 * xi + z1;
            z1 = b1 * xi - a1 * y + z2;
            z2 = b2 * xi - a2 * y;
            *x = y;
        }
        self.z1 = if z1.abs() < FLUSH { 0.0 } else { z1 };
        self.z2 = if z2.abs() < FLUSH { 0.0 } else { z2 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::test_util::{gain_db_at, sine};

    const FS: f64 = 48_000.0;

    fn db(x: f64) -> f64 {
        20.0 * x.log10()
    }

    #[test]
    fn butterworth_high_and_low_pass_are_3_db_down_at_the_corner() {
        let hp = BiquadCoeffs::high_pass(FS, 1000.0, std::f64::consts::FRAC_1_SQRT_2);
        let lp = BiquadCoeffs::low_pass(FS, 1000.0, std::f64::consts::FRAC_1_SQRT_2);
        assert!((db(hp.magnitude(FS, 1000.0)) + 3.01).abs() < 0.02);
        assert!((db(lp.magnitude(FS, 1000.0)) + 3.01).abs() < 0.02);
        assert!(db(hp.magnitude(FS, 100.0)) < -39.0);
        assert!(db(lp.magnitude(FS, 10_000.0)) < -39.0);
        assert!(db(hp.magnitude(FS, 10_000.0)).abs() < 0.01);
        assert!(db(lp.magnitude(FS, 100.0)).abs() < 0.01);
    }

    #[test]
    fn shelves_reach_their_gain() {
        let ls = BiquadCoeffs::low_shelf(FS, 500.0, 6.0, 1.0);
        let hs = BiquadCoeffs::high_shelf(FS, 2000.0, -10.0, 1.0);
        assert!((db(ls.magnitude(FS, 20.0)) - 6.0).abs() < 0.05);
        assert!(db(ls.magnitude(FS, 10_000.0)).abs() < 0.05);
        assert!((db(hs.magnitude(FS, 20_000.0)) + 10.0).abs() < 0.1);
        assert!(db(hs.magnitude(FS, 50.0)).abs() < 0.05);
    }

    #[test]
    fn first_order_shelves_are_inverse_and_unity_at_1_khz() {
        let de = BiquadCoeffs::first_order_shelf(FS, 3000.0, 300.0, 1000.0);
        let pre = BiquadCoeffs::first_order_shelf(FS, 300.0, 3000.0, 1000.0);
        assert!(db(de.magnitude(FS, 1000.0)).abs() < 1e-4);
        assert!(db(pre.magnitude(FS, 1000.0)).abs() < 1e-4);
        for f in [50.0, 300.0, 1000.0, 3000.0, 10_000.0, 20_000.0] {
            let both = de.magnitude(FS, f) * pre.magnitude(FS, f);
            assert!(db(both).abs() < 1e-3, "{f} Hz: {}", db(both));
        }
        // 20 dB from one end of the shelf to the other.
        assert!((db(de.magnitude(FS, 20.0) / de.magnitude(FS, 23_000.0)) - 20.0).abs() < 0.5);
    }

    #[test]
    fn processing_matches_the_analytic_response() {
        let c = BiquadCoeffs::high_pass(FS, 300.0, 0.541);
        for f in [100.0, 300.0, 1000.0] {
            let mut bq = Biquad::new(c);
            let measured = gain_db_at(f, 0.5, |frame| bq.process(frame));
            let expected = db(c.magnitude(FS, f));
            assert!((measured - expected).abs() < 0.05, "{f}: {measured} vs {expected}");
        }
        // tick and process agree.
        let mut a = Biquad::new(c);
        let mut b = Biquad::new(c);
        let mut x = sine(440.0, 0.5, 500);
        let y: Vec<f32> = x.iter().map(|&s| a.tick(s)).collect();
        b.process(&mut x);
        assert_eq!(x, y);
    }

    #[test]
    fn insane_arguments_stay_stable() {
        for c in [
            BiquadCoeffs::high_pass(FS, f64::NAN, f64::NAN),
            BiquadCoeffs::high_pass(FS, 1e9, -3.0),
            BiquadCoeffs::low_pass(FS, -5.0, 1e9),
            BiquadCoeffs::high_shelf(FS, 0.0, 1e9, f64::NAN),
            BiquadCoeffs::first_order_shelf(FS, f64::NAN, 0.0, 1e9),
        ] {
            // Stable second-order section: |a2| < 1 and |a1| < 1 + a2.
            assert!(c.a2.abs() < 1.0 && c.a1.abs() < 1.0 + c.a2, "{c:?}");
            assert!([c.b0, c.b1, c.b2].iter().all(|b| b.is_finite()), "{c:?}");
        }
    }

    #[test]
    fn silence_flushes_the_state_to_zero() {
        let mut bq = Biquad::new(BiquadCoeffs::high_pass(FS, 300.0, 0.7));
        bq.process(&mut sine(100.0, 1.0, 480));
        for _ in 0..200 {
            bq.process(&mut [0.0; 480]);
        }
        assert_eq!((bq.z1, bq.z2), (0.0, 0.0));
    }
}
