//! CTCSS (sub-audible tone squelch) decoder and encoder.
//!
//! [`CtcssDecoder`] is a sans-IO detector: 48 kHz receive samples in (before the receive
//! high-pass, which removes the tone from the channel), open/close of the configured tone
//! and the measured tone and SNR out. It decimates to 1 kHz in two [`Decimator`] stages (the
//! second one sharp: flat to 262 Hz, > 50 dB down from 328 Hz, so speech above the CTCSS band
//! does not reach the detector), runs a
//! [`ToneBank`] over the 50 standard tones in 25 ms blocks and judges a 200 ms window every
//! block:
//!
//! - the candidate is the tone with the most power in the window; its exact frequency is
//!   measured from the phase advance between blocks, and the window counts as that tone only
//!   when the measured frequency is within the tone's tolerance (40% of the gap to its nearest
//!   neighbour, at most 1 Hz: ±0.92 Hz for 67.0/69.3), so an adjacent tone (103.5 against
//!   100.0) never opens a decoder set for its neighbour;
//! - the measured frequency may move by at most 0.3 Hz from one window to the next (a speech
//!   harmonic glides, a tone does not);
//! - SNR is the tone's power at the measured frequency against the median power of the 50
//!   tone bins, i.e. against the noise in one 5 Hz detector bin;
//! - the decoder opens after [`CtcssConfig::open_blocks`] consecutive windows of the
//!   configured tone at ≥ `open_snr_db`, and closes after `close_blocks` consecutive windows
//!   that fail `close_snr_db` (hysteresis) or show the tone's end (its newest block 10 dB
//!   down, or turned by more than 90°: a reverse burst);
//! - a window opens only when the tone is steady over its newest 100 ms (block powers within
//!   3 dB, no block-to-block phase turn over 45°), so a speech harmonic passing a tone's
//!   frequency does not count.

use super::decimate::Decimator;
use super::tone_bank::ToneBank;
use super::{clean, SAMPLE_RATE};

/// The 50 standard CTCSS tones (EIA/TIA-603), Hz.
pub const CTCSS_TONES: [f32; 50] = [
    67.0, 69.3, 71.9, 74.4, 77.0, 79.7, 82.5, 85.4, 88.5, 91.5, 94.8, 97.4, 100.0, 103.5, 107.2, 110.9, 114.8, 118.8,
    123.0, 127.3, 131.8, 136.5, 141.3, 146.2, 151.4, 156.7, 159.8, 162.2, 165.5, 167.9, 171.3, 173.8, 177.3, 179.9,
    183.5, 186.2, 189.9, 192.8, 196.6, 199.5, 203.5, 206.5, 210.7, 218.1, 225.7, 229.1, 233.6, 241.8, 250.3, 254.1,
];

/// The standard tone nearest `hz`, if it is within 0.05 Hz of one (config validation).
pub fn standard_tone(hz: f32) -> Option<f32> {
    CTCSS_TONES.iter().copied().find(|t| (t - hz).abs() < 0.05)
}

/// 48 kHz -> 4 kHz: passes 0-350 Hz, stops what would fold onto it (from 3.65 kHz).
const STAGE1: (usize, usize, f32) = (12, 48, 2000.0);
/// 4 kHz -> 1 kHz: the CTCSS band (to 262 Hz) flat, speech from 328 Hz on down by > 50 dB,
/// so the 25 ms blocks do not see speech through their sidelobes.
const STAGE2: (usize, usize, f32) = (4, 200, 295.0);
/// 25 ms blocks at 1 kHz, 8 of them in the 200 ms window.
const BLOCK: usize = 25;
const WINDOW: usize = 8;
/// Blocks at the end of the window that must hold a steady tone (100 ms).
const STEADY: usize = 4;
/// Largest change of the measured frequency from one window to the next, Hz.
const MAX_DRIFT_HZ: f64 = 0.3;

/// Decoder thresholds. Defaults open at 10 dB SNR for 3 consecutive windows (25 ms apart)
/// and close below 6 dB for 3.
#[derive(Debug, Clone, PartialEq)]
pub struct CtcssConfig {
    /// The tone that opens the decoder (one of [`CTCSS_TONES`]); any tone is still measured
    /// and reported.
    pub tone_hz: f32,
    pub open_snr_db: f32,
    pub close_snr_db: f32,
    /// Tone power below this (peak dBFS) never opens (or holds) the decoder.
    pub min_level_dbfs: f32,
    pub open_blocks: u32,
    pub close_blocks: u32,
}

impl Default for CtcssConfig {
    fn default() -> CtcssConfig {
        CtcssConfig {
            tone_hz: 100.0,
            open_snr_db: 10.0,
            close_snr_db: 6.0,
            min_level_dbfs: -50.0,
            open_blocks: 3,
            close_blocks: 3,
        }
    }
}

/// What the decoder hears now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CtcssState {
    /// The configured tone is present (the squelch is open).
    pub open: bool,
    /// The standard tone heard, by the same open/close rules, whichever it is (the
    /// configured one or another: port state shows what a radio sends).
    pub heard_hz: Option<f32>,
    /// SNR of the strongest tone in the last window, dB (detector bandwidth 5 Hz).
    pub snr_db: f32,
    /// Its peak level, dBFS.
    pub level_dbfs: f32,
}

#[derive(Debug, Clone)]
pub struct CtcssDecoder {
    cfg: CtcssConfig,
    target: Option<usize>,
    tol: Vec<f64>,
    dec1: Decimator,
    dec2: Decimator,
    /// Scratch: a frame at 4 kHz and at 1 kHz (sized for a 60 ms frame; a longer one grows
    /// them once).
    mid: Vec<f32>,
    low: Vec<f32>,
    bank: ToneBank,
    state: CtcssState,
    heard: Option<usize>,
    /// Frequency measured in the last window.
    last_freq: f64,
    run_tone: Option<usize>,
    good: u32,
    bad: u32,
    powers: Vec<f64>,
    sorted: Vec<f64>,
}

impl CtcssDecoder {
    pub fn new(cfg: &CtcssConfig) -> CtcssDecoder {
        let mut cfg = cfg.clone();
        let d = CtcssConfig::default();
        cfg.open_snr_db = clean(cfg.open_snr_db, 0.0, 60.0, d.open_snr_db);
        cfg.close_snr_db = clean(cfg.close_snr_db, 0.0, cfg.open_snr_db, d.close_snr_db.min(cfg.open_snr_db));
        cfg.min_level_dbfs = clean(cfg.min_level_dbfs, -100.0, 0.0, d.min_level_dbfs);
        cfg.open_blocks = cfg.open_blocks.clamp(1, 40);
        cfg.close_blocks = cfg.close_blocks.clamp(1, 40);
        let freqs: Vec<f64> = CTCSS_TONES.iter().map(|&f| f as f64).collect();
        let tol = (0..freqs.len())
            .map(|k| {
                let below = if k > 0 { freqs[k] - freqs[k - 1] } else { f64::MAX };
                let above = if k + 1 < freqs.len() { freqs[k + 1] - freqs[k] } else { f64::MAX };
                (0.4 * below.min(above)).min(1.0)
            })
            .collect();
        let target = CTCSS_TONES.iter().position(|&t| (t - cfg.tone_hz).abs() < 0.05);
        let fs_low = SAMPLE_RATE as f64 / (STAGE1.0 * STAGE2.0) as f64;
        CtcssDecoder {
            target,
            tol,
            dec1: Decimator::new(SAMPLE_RATE as f32, STAGE1.0, STAGE1.1, STAGE1.2),
            dec2: Decimator::new(SAMPLE_RATE as f32 / STAGE1.0 as f32, STAGE2.0, STAGE2.1, STAGE2.2),
            mid: Vec::with_capacity(2880 / STAGE1.0 + 2),
            low: Vec::with_capacity(2880 / STAGE1.0 / STAGE2.0 + 2),
            bank: ToneBank::new(fs_low, &freqs, BLOCK, WINDOW),
            state: CtcssState { open: false, heard_hz: None, snr_db: 0.0, level_dbfs: -120.0 },
            heard: None,
            last_freq: 0.0,
            run_tone: None,
            good: 0,
            bad: 0,
            powers: vec![0.0; freqs.len()],
            sorted: vec![0.0; freqs.len()],
            cfg,
        }
    }

    /// The configured tone, when it is a standard one (else the decoder never opens).
    pub fn tone_hz(&self) -> Option<f32> {
        self.target.map(|k| CTCSS_TONES[k])
    }

    pub fn state(&self) -> CtcssState {
        self.state
    }

    pub fn is_open(&self) -> bool {
        self.state.open
    }

    /// Feed 48 kHz receive audio (before any filtering). Returns the open state after it.
    pub fn process(&mut self, frame: &[f32]) -> bool {
        let mut mid = std::mem::take(&mut self.mid);
        let mut low = std::mem::take(&mut self.low);
        mid.clear();
        low.clear();
        if frame.iter().all(|x| x.is_finite()) {
            self.dec1.process(frame, |y| mid.push(y));
        } else {
            for &x in frame {
                self.dec1.process(&[if x.is_finite() { x } else { 0.0 }], |y| mid.push(y));
            }
        }
        self.dec2.process(&mid, |z| low.push(z));
        for &z in &low {
            if self.bank.push(z) {
                self.judge();
            }
        }
        (self.mid, self.low) = (mid, low);
        self.state.open
    }

    pub fn reset(&mut self) {
        self.dec1.reset();
        self.dec2.reset();
        self.bank.reset();
        self.state = CtcssState { open: false, heard_hz: None, snr_db: 0.0, level_dbfs: -120.0 };
        self.heard = None;
        self.last_freq = 0.0;
        self.run_tone = None;
        self.good = 0;
        self.bad = 0;
    }

    fn judge(&mut self) {
        if self.bank.blocks_seen() < 2 {
            return;
        }
        let n = self.bank.len();
        let mut best = 0;
        for k in 0..n {
            self.powers[k] = self.bank.window(k).plain_power();
            if self.powers[k] > self.powers[best] {
                best = k;
            }
        }
        // The median of the 50 powers: the two middle ones, without sorting all of them.
        self.sorted.copy_from_slice(&self.powers);
        let (lower, upper, _) = self.sorted.select_nth_unstable_by(n / 2, |a, b| a.total_cmp(b));
        let below = lower.iter().copied().fold(f64::MIN, f64::max);
        let noise = 0.5 * (below + *upper);
        let w = self.bank.window(best);
        let step = w.fine_phase_step(w.recent_phase_step(STEADY), STEADY);
        let f = w.measured_freq(step);
        let power = w.refined_power(step);
        let snr_db = (10.0 * (power / noise.max(1e-20)).log10()).clamp(-20.0, 80.0) as f32;
        let level_dbfs = (10.0 * power.max(1e-12).log10()) as f32;
        // The standard tone the measured frequency belongs to.
        let tone =
            (0..n).min_by(|&a, &b| (CTCSS_TONES[a] as f64 - f).abs().total_cmp(&(CTCSS_TONES[b] as f64 - f).abs()));
        let tone = tone.filter(|&k| (CTCSS_TONES[k] as f64 - f).abs() <= self.tol[k]);
        // The tone is steady over the newest blocks: its power within 3 dB and no phase turn
        // over 45° from block to block. A tone that stopped, a reverse burst (a 180° turn) or
        // a speech harmonic (which glides and swells) fails this within a block or two.
        let (held, lost) = tone.map_or((false, true), |k| {
            let tw = self.bank.window(k);
            let step_t = tw.recent_phase_step(STEADY);
            let recent = WINDOW - STEADY..WINDOW;
            let (lo, hi) = recent
                .clone()
                .map(|i| tw.block_power(i))
                .fold((f64::MAX, 0.0f64), |(lo, hi), p| (lo.min(p), hi.max(p)));
            let jump = |i: usize| tw.phase_jump(i, step_t).abs();
            let held = lo * 2.0 >= hi && recent.skip(1).all(|i| jump(i) < std::f64::consts::FRAC_PI_4);
            // Once open, only a clear end counts against it: the newest block 10 dB under
            // the strongest, or a turn of more than 90° (a reverse burst).
            let lost = tw.block_power(WINDOW - 1) * 10.0 < hi || jump(WINDOW - 1) > std::f64::consts::FRAC_PI_2;
            (held, lost)
        });
        let loud = level_dbfs >= self.cfg.min_level_dbfs;
        self.state.snr_db = snr_db;
        self.state.level_dbfs = level_dbfs;
        // A tone holds its frequency; a speech harmonic glides. Windows 25 ms apart may
        // differ by 0.3 Hz (12 Hz/s).
        let steady_freq = (f - self.last_freq).abs() <= MAX_DRIFT_HZ;
        self.last_freq = f;
        let cand = tone.filter(|_| held && loud && steady_freq);
        match self.heard {
            None => {
                if cand.is_some() && snr_db >= self.cfg.open_snr_db {
                    if cand == self.run_tone {
                        self.good += 1;
                    } else {
                        self.run_tone = cand;
                        self.good = 1;
                    }
                    if self.good >= self.cfg.open_blocks {
                        self.heard = cand;
                        self.bad = 0;
                    }
                } else {
                    self.good = 0;
                    self.run_tone = None;
                }
            }
            Some(h) => {
                if tone == Some(h) && !lost && loud && snr_db >= self.cfg.close_snr_db {
                    self.bad = 0;
                } else {
                    self.bad += 1;
                    if self.bad >= self.cfg.close_blocks {
                        self.heard = None;
                        self.good = 0;
                        self.run_tone = None;
                    }
                }
            }
        }
        self.state.heard_hz = self.heard.map(|k| CTCSS_TONES[k]);
        self.state.open = self.heard.is_some() && self.heard == self.target;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::test_util::{radio_speech, sine_from, Noise};

    const FRAME: usize = 480;

    /// Tone at `tone_dbfs` peak from sample `start`, under speech at -10 dBFS and white noise
    /// 10 dB under the tone.
    fn scene(tone_hz: f32, tone_dbfs: f64, speech: &[f32], start: usize, seed: u32) -> Vec<f32> {
        let amp = 10f64.powf(tone_dbfs / 20.0);
        // White noise, uniform in [-a, a] (power a²/3), at tone power (amp²/2) - 10 dB.
        let a = (3.0 * amp * amp / 2.0 / 10.0).sqrt() as f32;
        let tone = sine_from(tone_hz as f64, amp, 0, speech.len());
        let mut noise = Noise::new(seed);
        speech
            .iter()
            .enumerate()
            .map(|(i, &s)| s + noise.next(a) + if i >= start { tone[i - start] } else { 0.0 })
            .collect()
    }

    /// Milliseconds from `start` to the frame that opened `dec`, or None.
    fn open_time(dec: &mut CtcssDecoder, x: &[f32], start: usize) -> Option<f64> {
        for (i, f) in x.chunks(FRAME).enumerate() {
            let end = (i + 1) * FRAME;
            if dec.process(f) {
                assert!(end > start, "opened before the tone");
                return Some((end - start) as f64 / 48.0);
            }
        }
        None
    }

    fn pct(sorted: &[f64], p: f64) -> f64 {
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    }

    #[test]
    fn every_standard_tone_opens_within_250_ms_under_speech_and_noise() {
        let speech = radio_speech(11, 2.5, -10.0);
        let start = 48_000;
        let mut times = Vec::new();
        for (k, &t) in CTCSS_TONES.iter().enumerate() {
            let x = scene(t, -20.0, &speech, start, 100 + k as u32);
            let mut dec = CtcssDecoder::new(&CtcssConfig { tone_hz: t, ..CtcssConfig::default() });
            let ms = open_time(&mut dec, &x, start).unwrap_or_else(|| panic!("{t} Hz never opened"));
            assert!(ms <= 250.0, "{t} Hz opened after {ms} ms");
            dec.process(&x[x.len() - 24_000..]);
            let st = dec.state();
            assert!(st.open, "{t} Hz closed again");
            assert_eq!(st.heard_hz, Some(t));
            assert!(st.snr_db > 10.0, "{t} Hz: SNR {:.1}", st.snr_db);
            assert!((st.level_dbfs + 20.0).abs() < 1.5, "{t} Hz: level {:.1}", st.level_dbfs);
            times.push(ms);
        }
        times.sort_by(f64::total_cmp);
        eprintln!(
            "CTCSS open time over 50 tones: median {} ms, p95 {} ms, max {} ms",
            pct(&times, 0.5),
            pct(&times, 0.95),
            pct(&times, 1.0)
        );
    }

    #[test]
    fn adjacent_tones_never_open_and_are_reported_as_themselves() {
        let speech = radio_speech(12, 3.0, -10.0);
        for (k, &tone) in CTCSS_TONES.iter().enumerate() {
            for j in [k.wrapping_sub(1), k + 1] {
                let Some(&other) = CTCSS_TONES.get(j) else { continue };
                let x = scene(other, -20.0, &speech, 0, 200 + k as u32);
                let mut dec = CtcssDecoder::new(&CtcssConfig { tone_hz: tone, ..CtcssConfig::default() });
                let mut heard = false;
                for f in x.chunks(FRAME) {
                    assert!(!dec.process(f), "{tone} Hz opened on {other} Hz");
                    heard |= dec.state().heard_hz == Some(other);
                }
                assert!(heard, "{other} Hz never reported");
            }
        }
    }

    #[test]
    fn closes_when_the_tone_stops_and_on_a_reverse_burst() {
        let amp = 0.1;
        for (label, tail) in [("stop", None), ("reverse burst", Some(std::f64::consts::PI))] {
            let on = 48_000;
            let mut x = sine_from(100.0, amp, 0, on);
            match tail {
                None => x.extend(std::iter::repeat_n(0.0, 24_000)),
                Some(ph) => {
                    let w = 2.0 * std::f64::consts::PI * 100.0 / 48_000.0;
                    x.extend((on..on + 24_000).map(|i| (amp * (w * i as f64 + ph).sin()) as f32));
                }
            }
            let mut dec = CtcssDecoder::new(&CtcssConfig::default());
            let mut closed_at = None;
            for (i, f) in x.chunks(FRAME).enumerate() {
                let open = dec.process(f);
                if (i + 1) * FRAME == on {
                    assert!(open, "{label}: not open before the end");
                }
                if (i + 1) * FRAME > on && !open && closed_at.is_none() {
                    closed_at = Some(((i + 1) * FRAME - on) as f64 / 48.0);
                }
            }
            let ms = closed_at.unwrap_or_else(|| panic!("{label}: never closed"));
            assert!(ms <= 120.0, "{label}: closed {ms} ms after the tone");
        }
    }

    /// Speech alone (varied pitch and formants, as a radio sends it) never makes the decoder
    /// hear any of the 50 tones. `roipd bench` runs the same check over 10 minutes.
    #[test]
    fn speech_alone_never_opens() {
        let minutes = 1.0;
        let mut dec = CtcssDecoder::new(&CtcssConfig::default());
        for (seed, chunk) in (0..(minutes * 6.0) as u32).map(|s| (s + 300, 10.0)) {
            let x = radio_speech(seed, chunk, -10.0);
            let mut noise = Noise::new(seed);
            let x: Vec<f32> = x.iter().map(|&s| s + noise.next(0.003)).collect();
            for f in x.chunks(FRAME) {
                dec.process(f);
                assert_eq!(dec.state().heard_hz, None, "seed {seed}: heard a tone in speech");
            }
        }
    }

    #[test]
    fn silence_noise_and_bad_samples_do_not_open_or_panic() {
        let mut dec = CtcssDecoder::new(&CtcssConfig::default());
        let mut noise = Noise::new(5);
        let mut f = [0.0f32; FRAME];
        for i in 0..300 {
            noise.fill(&mut f, if i % 2 == 0 { 0.5 } else { 0.0 });
            if i == 7 {
                f[3] = f32::NAN;
                f[4] = f32::INFINITY;
            }
            assert!(!dec.process(&f));
            assert_eq!(dec.state().heard_hz, None);
        }
    }
}
