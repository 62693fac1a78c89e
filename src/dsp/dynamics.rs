//! Level control: a slow speech AGC and a lookahead-free peak limiter.

use super::level::{db_to_gain, gain_to_db};
use super::{clean, time_coef};

/// Automatic gain control for speech.
///
/// The AGC keeps an estimate of the speech level (frame RMS in dBFS, smoothed: it rises with
/// `attack_ms` and falls with `release_ms`; being quicker to rise, it leans towards the louder
/// syllables, so the active speech RMS settles 1–2 dB under the target), and applies
/// `target_dbfs - level`, clamped to
/// `min_gain_db ..= max_gain_db`. Frames quieter than `gate_dbfs` (pauses, background noise)
/// leave the estimate, and so the gain, where they are: the AGC never winds noise up between
/// overs. Within a frame the gain moves linearly from the old to the new value (no zipper
/// noise). Peaks above the target are the limiter's job, which follows the AGC.
#[derive(Debug, Clone, PartialEq)]
pub struct AgcConfig {
    /// Speech level the AGC aims for, frame RMS in dBFS.
    pub target_dbfs: f32,
    /// Most gain the AGC adds (quiet talkers are raised by at most this).
    pub max_gain_db: f32,
    /// Least gain (most cut) the AGC applies to loud talkers; at most 0.
    pub min_gain_db: f32,
    /// Frames below this RMS hold the gain.
    pub gate_dbfs: f32,
    /// Time constant of the level estimate rising (the gain falling), in ms.
    pub attack_ms: f32,
    /// Time constant of the level estimate falling (the gain rising), in ms.
    pub release_ms: f32,
}

impl Default for AgcConfig {
    fn default() -> Self {
        AgcConfig {
            target_dbfs: -18.0,
            max_gain_db: 20.0,
            min_gain_db: -20.0,
            gate_dbfs: -50.0,
            attack_ms: 100.0,
            release_ms: 1500.0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Agc {
    target_dbfs: f32,
    max_gain_db: f32,
    min_gain_db: f32,
    gate_dbfs: f32,
    /// Time constants in samples.
    attack: f32,
    release: f32,
    /// Smoothed speech level, dBFS.
    level_dbfs: f32,
    /// The gain the AGC is heading for (reached at the end of the current frame), dB.
    gain_db: f32,
    /// Linear gain at the end of the last frame.
    gain: f32,
}

impl Agc {
    /// An AGC at unity gain. Config values are clamped to sane ranges (see [`AgcConfig`]).
    pub fn new(sample_rate: u32, config: &AgcConfig) -> Agc {
        let d = AgcConfig::default();
        let fs = sample_rate as f32;
        let target_dbfs = clean(config.target_dbfs, -60.0, 0.0, d.target_dbfs);
        let mut agc = Agc {
            target_dbfs,
            max_gain_db: clean(config.max_gain_db, 0.0, 60.0, d.max_gain_db),
            min_gain_db: clean(config.min_gain_db, -60.0, 0.0, d.min_gain_db),
            gate_dbfs: clean(config.gate_dbfs, -120.0, 0.0, d.gate_dbfs),
            attack: clean(config.attack_ms, 1.0, 60_000.0, d.attack_ms) * 1e-3 * fs,
            release: clean(config.release_ms, 1.0, 600_000.0, d.release_ms) * 1e-3 * fs,
            level_dbfs: target_dbfs,
            gain_db: 0.0,
            gain: 1.0,
        };
        agc.reset();
        agc
    }

    /// Back to unity gain, forgetting the level estimate.
    pub fn reset(&mut self) {
        self.level_dbfs = self.target_dbfs;
        self.gain_db = 0.0;
        self.gain = 1.0;
    }

    /// Update the level estimate with the RMS level of `n` samples, as [`process`](Self::process)
    /// does, without touching audio.
    fn track(&mut self, n: usize, level_dbfs: f32) {
        // NaN compares false: a NaN level holds like a gated frame.
        if level_dbfs >= self.gate_dbfs {
            let tau = if level_dbfs > self.level_dbfs { self.attack } else { self.release };
            let a = 1.0 - (-(n as f32) / tau).exp();
            self.level_dbfs += a * (level_dbfs.min(0.0) - self.level_dbfs);
            self.gain_db = (self.target_dbfs - self.level_dbfs).clamp(self.min_gain_db, self.max_gain_db);
        }
    }

    /// Follow a frame that is not sent: the level estimate moves as in
    /// [`process`](Self::process), and the next processed frame starts at the gain reached.
    pub fn follow(&mut self, n: usize, level_dbfs: f32) {
        if n > 0 {
            self.track(n, level_dbfs);
            self.gain = db_to_gain(self.gain_db);
        }
    }

    /// Frames whose level is under this do not move the AGC, dBFS.
    pub fn gate_dbfs(&self) -> f32 {
        self.gate_dbfs
    }

    /// The AGC's current gain in dB.
    pub fn gain_db(&self) -> f32 {
        self.gain_db
    }

    /// Update the level estimate with this frame's RMS level (`level_dbfs`, measured by the
    /// caller before the AGC) and apply the gain to the frame in place.
    pub fn process(&mut self, frame: &mut [f32], level_dbfs: f32) {
        let n = frame.len();
        if n == 0 {
            return;
        }
        self.track(n, level_dbfs);
        let to = db_to_gain(self.gain_db);
        let from = self.gain;
        let step = (to - from) / n as f32;
        for (i, x) in frame.iter_mut().enumerate() {
            *x *= from + step * (i + 1) as f32;
        }
        self.gain = to;
    }
}

/// Lookahead-free peak limiter with a hard ceiling.
///
/// Attack is instantaneous: a sample that would exceed the ceiling sets the gain to exactly
/// `ceiling / |x|`, so the output never exceeds the ceiling (a final clamp removes rounding
/// excess). The gain then recovers towards unity with a one-pole release (`release_ms` time
/// constant, ~100 ms). Signals below the ceiling pass untouched once the gain has recovered.
#[derive(Debug, Clone)]
pub struct Limiter {
    ceiling: f32,
    /// Per-sample release factor applied to the gain reduction `1 - gain`.
    release: f32,
    gain: f32,
}

impl Limiter {
    /// Default release time constant, ms.
    pub const RELEASE_MS: f32 = 100.0;

    /// A limiter at `ceiling_dbfs` (clamped to -40..=0 dBFS; NaN gives -6).
    pub fn new(sample_rate: u32, ceiling_dbfs: f32, release_ms: f32) -> Limiter {
        let ceiling_dbfs = clean(ceiling_dbfs, -40.0, 0.0, -6.0);
        let release_ms = clean(release_ms, 1.0, 10_000.0, Limiter::RELEASE_MS);
        Limiter { ceiling: db_to_gain(ceiling_dbfs), release: time_coef(sample_rate as f32, release_ms), gain: 1.0 }
    }

    /// The ceiling as a linear amplitude.
    pub fn ceiling(&self) -> f32 {
        self.ceiling
    }

    /// Current gain in dB (0 when not limiting, negative while limiting).
    pub fn gain_db(&self) -> f32 {
        gain_to_db(self.gain)
    }

    pub fn reset(&mut self) {
        self.gain = 1.0;
    }

    /// Limit a frame in place. Every output sample is within `±ceiling`.
    pub fn process(&mut self, frame: &mut [f32]) {
        let (c, r) = (self.ceiling, self.release);
        let mut g = self.gain;
        for x in frame.iter_mut() {
            // c / 0 is +inf, which `min` ignores.
            let needed = c / x.abs();
            g = (1.0 - (1.0 - g) * r).min(needed);
            *x = (*x * g).clamp(-c, c);
        }
        self.gain = g;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::level::{power_to_db, Meter};
    use crate::dsp::test_util::{rms_db, sine, speech_like, Noise};
    use crate::dsp::SAMPLE_RATE;

    const SIX: f32 = 0.501_187_2; // -6 dBFS

    fn limiter() -> Limiter {
        Limiter::new(SAMPLE_RATE, -6.0, Limiter::RELEASE_MS)
    }

    fn peak(x: &[f32]) -> f32 {
        x.iter().fold(0.0, |a, &b| a.max(b.abs()))
    }

    #[test]
    fn limiter_holds_the_ceiling_for_loud_sines() {
        for f in [50.0, 100.0, 1000.0, 3000.0, 10_000.0] {
            let mut lim = limiter();
            let mut x = sine(f, 2.0, 48_000);
            for frame in x.chunks_mut(480) {
                lim.process(frame);
            }
            let p = peak(&x);
            assert!(p <= lim.ceiling() && lim.ceiling() <= SIX, "{f} Hz: peak {p}");
            // And it is limiting, not muting: the crest sits at the ceiling.
            assert!(p > 0.99 * SIX, "{f} Hz: peak {p}");
        }
    }

    #[test]
    fn limiter_holds_the_ceiling_for_impulses_and_noise() {
        let mut lim = limiter();
        let mut noise = Noise::new(7);
        let mut frame = [0f32; 960];
        for round in 0..200 {
            noise.fill(&mut frame, 0.05);
            // Isolated spikes of growing size, both signs, at varying positions.
            let amp = 0.6 + round as f32 * 0.5;
            frame[round % 960] = amp;
            frame[(round * 7 + 3) % 960] = -amp * 2.0;
            if round % 10 == 0 {
                noise.fill(&mut frame[100..400], 50.0); // a burst
            }
            lim.process(&mut frame);
            let p = peak(&frame);
            assert!(p <= SIX, "round {round}: {p}");
        }
        assert!(lim.gain_db() < 0.0);
    }

    #[test]
    fn limiter_passes_minus_20_dbfs_unchanged_once_settled() {
        let mut lim = limiter();
        // A loud burst first, then the quiet signal.
        lim.process(&mut sine(1000.0, 2.0, 4800));
        let input = sine(1000.0, 0.1, 48_000);
        let mut x = input.clone();
        for frame in x.chunks_mut(960) {
            lim.process(frame);
        }
        let settled = 24_000..48_000;
        let change = rms_db(&x[settled.clone()]) - rms_db(&input[settled]);
        assert!(change.abs() < 0.5, "{change} dB");
        assert!(change.abs() < 0.01, "{change} dB");
    }

    #[test]
    fn limiter_releases_in_about_100_ms() {
        let mut lim = limiter();
        // One spike of 2.0 takes 12 dB off; after one time constant 63% of the gain
        // reduction (in linear terms) is gone.
        let mut spike = [2.0f32];
        lim.process(&mut spike);
        assert!((lim.gain_db() + 12.02).abs() < 0.01, "{}", lim.gain_db());
        assert!((spike[0] - SIX).abs() < 1e-6);
        lim.process(&mut [0.0; 4800]);
        let g = db_to_gain(lim.gain_db());
        let expected = 1.0 - (1.0 - SIX / 2.0) * (-1.0f32).exp();
        assert!((g - expected).abs() < 0.01, "{g} vs {expected}");
    }

    /// Run the AGC over a signal in 20 ms frames, measuring each frame as the RX chain does.
    fn run_agc(agc: &mut Agc, x: &mut [f32]) {
        for frame in x.chunks_mut(960) {
            let level = Meter::measure(frame).rms_dbfs;
            agc.process(frame, level);
        }
    }

    /// RMS over the frames that are above `gate`, i.e. the talking part, in dBFS.
    fn active_rms(x: &[f32], gate: f32) -> f64 {
        let mut sum = 0.0;
        let mut n = 0;
        for frame in x.chunks(960) {
            let ms: f32 = frame.iter().map(|v| v * v).sum::<f32>() / frame.len() as f32;
            if power_to_db(ms) > gate {
                sum += frame.iter().map(|&v| (v as f64).powi(2)).sum::<f64>();
                n += frame.len();
            }
        }
        10.0 * (sum / n as f64).log10()
    }

    #[test]
    fn agc_raises_quiet_speech_up_to_max_gain_only() {
        let mut agc = Agc::new(SAMPLE_RATE, &AgcConfig::default());
        let mut x = speech_like(-40.0, 10.0);
        run_agc(&mut agc, &mut x);
        // Target -18 wants +22 dB; max gain is +20.
        let g = agc.gain_db();
        assert!((19.5..=20.0).contains(&g), "gain {g}");
        let last = &x[7 * 48_000..];
        let out = active_rms(last, -60.0);
        println!("AGC: -40 dBFS speech -> {out:.1} dBFS, gain {g:.2} dB");
        assert!((-21.5..=-19.0).contains(&out), "{out}");
    }

    #[test]
    fn agc_brings_moderate_and_loud_speech_to_the_target() {
        for level in [-30.0, -8.0] {
            let mut agc = Agc::new(SAMPLE_RATE, &AgcConfig::default());
            let mut x = speech_like(level, 10.0);
            run_agc(&mut agc, &mut x);
            let out = active_rms(&x[7 * 48_000..], -60.0);
            println!("AGC: {level} dBFS speech -> {out:.1} dBFS, gain {:.2} dB", agc.gain_db());
            // The estimate leans towards the louder syllables, so speech lands a little under
            // the target (about 1.7 dB for this signal).
            assert!((-20.5..=-17.0).contains(&out), "{level}: {out}");
        }
    }

    #[test]
    fn agc_does_not_raise_silence_or_noise_below_the_gate() {
        let mut agc = Agc::new(SAMPLE_RATE, &AgcConfig::default());
        let mut noise = Noise::new(3);
        let mut x = vec![0f32; 10 * 48_000];
        noise.fill(&mut x, 0.001); // about -65 dBFS RMS, below the -50 dBFS gate
        let before = rms_db(&x);
        run_agc(&mut agc, &mut x);
        assert_eq!(agc.gain_db(), 0.0);
        assert!((rms_db(&x) - before).abs() < 1e-3);

        // After speech has set a gain, a long silence holds that gain: no pumping up.
        let mut speech = speech_like(-30.0, 5.0);
        run_agc(&mut agc, &mut speech);
        let g = agc.gain_db();
        noise.fill(&mut x, 0.001);
        run_agc(&mut agc, &mut x);
        assert_eq!(agc.gain_db(), g);
    }

    #[test]
    fn agc_gain_ramps_within_a_frame() {
        let mut agc = Agc::new(SAMPLE_RATE, &AgcConfig { attack_ms: 1.0, ..AgcConfig::default() });
        let mut frame = [0.5f32; 960]; // -6 dBFS: wants -12 dB
        agc.process(&mut frame, -6.0);
        assert!(frame[0] < 0.5 && frame[0] > 0.49);
        assert!((frame[959] - 0.5 * db_to_gain(agc.gain_db())).abs() < 1e-4);
        assert!(frame.windows(2).all(|w| w[1] <= w[0]));
        assert!(agc.gain_db() < -11.0);
    }

    #[test]
    fn agc_survives_insane_config_and_levels() {
        let cfg = AgcConfig {
            target_dbfs: f32::NAN,
            max_gain_db: f32::INFINITY,
            min_gain_db: 5.0,
            gate_dbfs: f32::NAN,
            attack_ms: 0.0,
            release_ms: -1.0,
        };
        let mut agc = Agc::new(SAMPLE_RATE, &cfg);
        let mut frame = [0.1f32; 480];
        for level in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -20.0, 0.0] {
            agc.process(&mut frame, level);
            assert!(agc.gain_db().is_finite() && agc.gain_db() <= 60.0);
            assert!(frame.iter().all(|x| x.is_finite()));
        }
        agc.process(&mut [], -20.0);
    }
}
