//! How faithfully a tone and a chirp cross the radio → radio voice path, measured sans-IO:
//! the real [`RxPath`] (DSP chain, Opus encode) feeds the real [`TxPath`] (jitter buffer,
//! decode with FEC/PLC, delay line, DSP) in virtual time, 10 ms device frames, packets
//! arriving the moment they are encoded. `roipd bench` reports these figures and the pipeline
//! tests hold them to the targets.
//!
//! Each signal is sent as two talk-spurts (overs) with the port talking from the frame that
//! holds the onset: the first after start, the second on a path whose state (AGC, filters,
//! codec, jitter buffer) carries what the first left behind. Figures are the worse of the two.
//! - **Tone**: a 1 kHz sine; per 5 ms block from 10 ms after the output onset, the worst
//!   deviation in dB from the steady level, and the steady-state SNR: a least-squares fit of a
//!   1 kHz sine (and DC) over a steady stretch is the signal, the residual is noise plus
//!   distortion. The stretch starts 1 s after the onset: SILK takes ~0.8 s to settle on a
//!   steady tone, coding it at 29-37 dB SNR around 0.4-0.8 s and ~48 dB (per 100 ms) after
//!   (Opus encoder and decoder alone, narrowband 48 kb/s, show the same dip; speech never
//!   stays that steady). That transient is reported, not hidden: the settling SNR is the
//!   worst 100 ms block from 10 ms after the onset to the steady stretch.
//! - **Chirp**: a linear sweep over the voice band (300–3000 Hz, 5 ms raised-cosine ends);
//!   the peak of the normalised cross-correlation of output with input over lags around the
//!   path's delay.

use std::time::{Duration, Instant};

use super::{RxPath, TxGate, TxPath};
use crate::codec::EncoderConfig;
use crate::core::jitter::JitterConfig;
use crate::dsp::{CourtesyToneConfig, RxConfig, TxConfig};

const FS: f64 = 48_000.0;
/// Device frame, samples (10 ms).
const PERIOD: usize = 480;
/// Onset-error blocks, samples (5 ms).
const BLOCK: usize = 240;
/// Silence before the first over and between overs.
const LEAD: usize = 30 * PERIOD;
const GAP: usize = 70 * PERIOD;
/// Length of each over.
const TONE_LEN: usize = 200 * PERIOD;
const CHIRP_LEN: usize = 100 * PERIOD;
/// Blocks from the onset that are not judged (the first 10 ms).
const SETTLE: usize = 480;
/// The steady stretch of a tone over, from its onset.
const STEADY: std::ops::Range<usize> = 100 * PERIOD..190 * PERIOD;
/// Settling SNR blocks, samples (100 ms).
const SNR_BLOCK: usize = 10 * PERIOD;
/// Onset blocks judged: 10 ms..STEADY.start.
/// Longest path delay searched for.
const MAX_DELAY: usize = 300 * 48;

/// The settings of one port's path, as the daemon builds them from `[port.NAME.audio]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PathConfig {
    pub rx: RxConfig,
    pub tx: TxConfig,
    pub encoder: EncoderConfig,
    pub jitter: JitterConfig,
    /// VOX is the COR source: the receive chain runs while the port does not talk.
    pub vox: bool,
}

/// What the path does to a tone and a chirp.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fidelity {
    /// Steady-state SNR of a 1 kHz tone, dB (worse over).
    pub tone_snr_db: f64,
    /// Worst SNR of a 100 ms block of the tone before it is steady, dB (worse over).
    pub tone_settling_snr_db: f64,
    /// Worst deviation of a 5 ms block from the steady level, from 10 ms after the onset on, dB.
    pub onset_error_db: f64,
    /// Peak normalised cross-correlation of the chirp with its input (worse over).
    pub chirp_correlation: f64,
    /// Path delay of the second over, ms.
    pub delay_ms: f64,
}

/// One over of a test signal.
#[derive(Debug, Clone, Copy)]
pub struct Over {
    pub onset: usize,
    pub len: usize,
}

/// `overs` of `len` samples each from `make(i)` (sample index within the over), with silence
/// before, between and after; returns the signal and where the overs are.
pub fn schedule(len: usize, overs: usize, offset: usize, make: impl Fn(usize) -> f32) -> (Vec<f32>, Vec<Over>) {
    let mut signal = vec![0.0f32; LEAD + offset];
    let mut at = Vec::new();
    for _ in 0..overs {
        at.push(Over { onset: signal.len(), len });
        signal.extend((0..len).map(&make));
        signal.resize(signal.len() + GAP, 0.0);
    }
    let whole = signal.len().div_ceil(PERIOD) * PERIOD;
    signal.resize(whole, 0.0);
    (signal, at)
}

/// A 1 kHz sine at `peak` amplitude.
pub fn tone(peak: f64) -> impl Fn(usize) -> f32 {
    move |i| (peak * (std::f64::consts::TAU * 1000.0 * i as f64 / FS).sin()) as f32
}

/// A linear chirp from `f0` to `f1` Hz over `len` samples, 5 ms raised-cosine ends.
pub fn chirp(peak: f64, f0: f64, f1: f64, len: usize) -> impl Fn(usize) -> f32 {
    let ramp = 240usize;
    move |i| {
        let t = i as f64 / FS;
        let dur = len as f64 / FS;
        let phase = std::f64::consts::TAU * (f0 * t + 0.5 * (f1 - f0) / dur * t * t);
        let edge = i.min(len.saturating_sub(i + 1));
        let env = if edge < ramp { 0.5 - 0.5 * (std::f64::consts::PI * edge as f64 / ramp as f64).cos() } else { 1.0 };
        (peak * env * phase.sin()) as f32
    }
}

/// Run `input` through RX → TX in 10 ms device frames; the port talks from the frame holding
/// an over's onset to the frame holding its end. The TX gate stays open.
pub fn through_path(config: &PathConfig, input: &[f32], overs: &[Over]) -> Result<Vec<f32>, String> {
    let mut rx = RxPath::new(&config.rx, &config.encoder, config.vox).map_err(|e| e.to_string())?;
    let courtesy = CourtesyToneConfig { enabled: false, ..CourtesyToneConfig::default() };
    let mut tx =
        TxPath::new(&config.tx, config.jitter.clone(), &courtesy, Duration::ZERO).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let mut out = vec![0.0f32; input.len()];
    let mut frame = [0.0f32; PERIOD];
    for (i, chunk) in input.chunks_exact(PERIOD).enumerate() {
        let start = i * PERIOD;
        let talking = overs.iter().any(|o| start + PERIOD > o.onset && start < o.onset + o.len);
        let now = t0 + Duration::from_millis(10 * i as u64);
        frame.copy_from_slice(chunk);
        if let Some(p) = rx.process(&mut frame, talking).packet {
            tx.push(now, &p);
        }
        tx.fill(now, TxGate::Open, &mut out[start..start + PERIOD]);
    }
    Ok(out)
}

fn energy(x: &[f32]) -> f64 {
    x.iter().map(|&v| f64::from(v) * f64::from(v)).sum()
}

fn rms_db(x: &[f32]) -> f64 {
    10.0 * (energy(x) / x.len().max(1) as f64).max(1e-30).log10()
}

/// The lag (0..MAX_DELAY) at which `output` best matches `input[over]`, and the normalised
/// correlation there. A coarse search on 4× decimated signals, then every lag near it.
pub fn align(input: &[f32], output: &[f32], over: Over) -> (usize, f64) {
    let x = &input[over.onset..over.onset + over.len];
    let corr = |lag: usize, step: usize| -> f64 {
        let start = over.onset + lag;
        if start + over.len > output.len() {
            return 0.0;
        }
        let y = &output[start..start + over.len];
        let (mut xy, mut yy, mut xx) = (0.0f64, 0.0f64, 0.0f64);
        for i in (0..over.len).step_by(step) {
            let (a, b) = (f64::from(x[i]), f64::from(y[i]));
            xy += a * b;
            yy += b * b;
            xx += a * a;
        }
        if yy <= 0.0 || xx <= 0.0 {
            0.0
        } else {
            xy / (xx * yy).sqrt()
        }
    };
    // Coarse: the envelope of the correlation changes slowly enough at a lag step of 4 when
    // every 4th sample counts (3 kHz at 48 kHz is 16 samples a cycle).
    let mut best = (0usize, f64::MIN);
    for lag in (0..MAX_DELAY).step_by(4) {
        let c = corr(lag, 4).abs();
        if c > best.1 {
            best = (lag, c);
        }
    }
    let mut fine = (best.0, f64::MIN);
    for lag in best.0.saturating_sub(48)..(best.0 + 48).min(MAX_DELAY) {
        let c = corr(lag, 1);
        if c > fine.1 {
            fine = (lag, c);
        }
    }
    fine
}

/// Steady-state SNR of a 1 kHz tone in `y`, dB: a least-squares fit of `a sin + b cos + c`
/// is the signal, the residual is noise and distortion.
pub fn tone_snr_db(y: &[f32]) -> f64 {
    let w = std::f64::consts::TAU * 1000.0 / FS;
    // Normal equations for the basis (sin, cos, 1).
    let mut m = [[0.0f64; 3]; 3];
    let mut v = [0.0f64; 3];
    for (i, &s) in y.iter().enumerate() {
        let b = [(w * i as f64).sin(), (w * i as f64).cos(), 1.0];
        for r in 0..3 {
            for c in 0..3 {
                m[r][c] += b[r] * b[c];
            }
            v[r] += b[r] * f64::from(s);
        }
    }
    let Some(k) = solve3(m, v) else { return 0.0 };
    let (mut sig, mut res) = (0.0f64, 0.0f64);
    for (i, &s) in y.iter().enumerate() {
        let t = k[0] * (w * i as f64).sin() + k[1] * (w * i as f64).cos();
        sig += t * t;
        let e = f64::from(s) - t - k[2];
        res += e * e;
    }
    10.0 * (sig / res.max(1e-30)).log10()
}

fn solve3(mut m: [[f64; 3]; 3], mut v: [f64; 3]) -> Option<[f64; 3]> {
    for col in 0..3 {
        let pivot = (col..3).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[pivot][col].abs() < 1e-12 {
            return None;
        }
        m.swap(col, pivot);
        v.swap(col, pivot);
        for r in 0..3 {
            if r != col {
                let f = m[r][col] / m[col][col];
                let pivot_row = m[col];
                for (x, p) in m[r].iter_mut().zip(pivot_row) {
                    *x -= f * p;
                }
                v[r] -= f * v[col];
            }
        }
    }
    Some([v[0] / m[0][0], v[1] / m[1][1], v[2] / m[2][2]])
}

/// SNR of each 100 ms block of a tone over's output from 10 ms after its onset up to the
/// steady stretch (`y` starts at the output onset).
pub fn settling_snr_db(y: &[f32]) -> Vec<f64> {
    y[SETTLE..STEADY.start].chunks_exact(SNR_BLOCK).map(tone_snr_db).collect()
}

/// Level of each 5 ms block of a tone over's output relative to its steady level, dB, from
/// the output onset (`y` starts there).
pub fn onset_profile(y: &[f32]) -> Vec<f64> {
    let steady = rms_db(&y[STEADY]);
    y[..STEADY.start].chunks_exact(BLOCK).map(|b| rms_db(b) - steady).collect()
}

/// Worst deviation from the steady level from 10 ms after the onset on.
pub fn onset_error_db(profile: &[f64]) -> f64 {
    profile[SETTLE / BLOCK..].iter().fold(0.0f64, |a, &d| a.max(d.abs()))
}

/// Figures for one over each of a tone and a chirp, per over.
#[derive(Debug, Clone, PartialEq)]
pub struct OverFigures {
    pub delay: usize,
    pub chirp_correlation: f64,
    pub tone_snr_db: f64,
    pub settling_snr_db: Vec<f64>,
    pub onset_profile: Vec<f64>,
}

/// Measure the path with a tone at `tone_peak` and a chirp at `chirp_peak` (linear peak
/// amplitudes), the overs starting `offset` samples into a device frame.
pub fn measure_overs(
    config: &PathConfig,
    tone_peak: f64,
    chirp_peak: f64,
    offset: usize,
) -> Result<Vec<OverFigures>, String> {
    let (sweep, overs) = schedule(CHIRP_LEN, 2, offset, chirp(chirp_peak, 300.0, 3000.0, CHIRP_LEN));
    let out = through_path(config, &sweep, &overs)?;
    let aligned: Vec<(usize, f64)> = overs.iter().map(|&o| align(&sweep, &out, o)).collect();

    // The same timing with a tone: the path's delay is a matter of timing only.
    let (sine, tone_overs) = schedule(TONE_LEN, 2, offset, tone(tone_peak));
    let tone_out = through_path(config, &sine, &tone_overs)?;
    Ok(tone_overs
        .iter()
        .zip(&aligned)
        .map(|(o, &(delay, corr))| {
            let y = &tone_out[o.onset + delay..o.onset + delay + o.len];
            OverFigures {
                delay,
                chirp_correlation: corr,
                tone_snr_db: tone_snr_db(&y[STEADY]),
                settling_snr_db: settling_snr_db(y),
                onset_profile: onset_profile(y),
            }
        })
        .collect())
}

/// The bench's figures: a -18 dBFS RMS tone (the AGC's target), a -15 dBFS peak chirp, overs
/// starting 3 ms into a device frame; the worse of the two overs.
pub fn measure(config: &PathConfig) -> Result<Fidelity, String> {
    let peak = 10f64.powf(-15.0 / 20.0);
    let overs = measure_overs(config, peak, peak, 144)?;
    let worst = |f: fn(&OverFigures) -> f64, max: bool| {
        overs.iter().map(f).fold(if max { f64::MIN } else { f64::MAX }, |a, b| if max { a.max(b) } else { a.min(b) })
    };
    Ok(Fidelity {
        tone_snr_db: worst(|o| o.tone_snr_db, false),
        tone_settling_snr_db: worst(|o| o.settling_snr_db.iter().fold(f64::MAX, |a, &b| a.min(b)), false),
        onset_error_db: worst(|o| onset_error_db(&o.onset_profile), true),
        chirp_correlation: worst(|o| o.chirp_correlation, false),
        delay_ms: overs.last().map_or(0.0, |o| o.delay as f64 / 48.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(label: &str, overs: &[OverFigures]) {
        for (i, o) in overs.iter().enumerate() {
            let profile: Vec<String> = o.onset_profile.iter().take(30).map(|d| format!("{d:+.1}")).collect();
            println!(
                "{label} over {i}: delay {:.2} ms, chirp corr {:.4}, tone SNR {:.2} dB, onset err {:.2} dB\n  5 ms blocks: {}\n  100 ms SNR before steady: {}",
                o.delay as f64 / 48.0,
                o.chirp_correlation,
                o.tone_snr_db,
                onset_error_db(&o.onset_profile),
                profile.join(" "),
                o.settling_snr_db.iter().map(|d| format!("{d:.1}")).collect::<Vec<_>>().join(" ")
            );
        }
    }

    fn overs(config: &PathConfig) -> Vec<OverFigures> {
        let peak = 10f64.powf(-15.0 / 20.0);
        let overs = measure_overs(config, peak, peak, 144).unwrap();
        show("", &overs);
        overs
    }

    /// A second over starts on fresh codec and filter state: before, the encoder, decoder
    /// and high-pass carried the end of the first over into it (level +5..-8 dB over the
    /// first 100 ms, chirp correlation 0.33 against 0.67 on the first over).
    #[test]
    fn a_second_over_starts_as_cleanly_as_the_first() {
        for fec in [true, false] {
            let d = PathConfig::default();
            let c = PathConfig { encoder: EncoderConfig { fec, ..d.encoder.clone() }, ..d };
            let o = overs(&c);
            let err = onset_error_db(&o[1].onset_profile);
            assert!(err <= 1.0, "fec {fec}: second over's onset {err:.2} dB off");
            assert!(o[1].chirp_correlation >= o[0].chirp_correlation - 0.05, "fec {fec}: {o:?}");
        }
        // Without FEC's bits the whole tone is within 1 dB from 10 ms on, both overs.
        let d = PathConfig::default();
        let o = overs(&PathConfig { encoder: EncoderConfig { fec: false, ..d.encoder.clone() }, ..d });
        assert!(o.iter().all(|o| onset_error_db(&o.onset_profile) <= 0.5), "{o:?}");
    }

    /// Radio A to radio B with default settings. Measured (worse of two overs): tone SNR
    /// 43.7 dB (34.7 while SILK settles), onset 0.30 dB off, chirp correlation 0.954; with the
    /// old codec default (wideband 24 kb/s, which coded mediumband with a starved primary)
    /// 23.7 dB (14.1 settling), 3.5 dB, and 0.67 without the high-pass's phase equaliser.
    /// libopus's output differs by platform: on aarch64 (under qemu) the settling dip reads
    /// 31.7 dB and the steady SNR 43.9, so the settling floor sits below both.
    #[test]
    fn default_path_is_faithful() {
        let f = measure(&PathConfig::default()).unwrap();
        println!("{f:?}");
        assert!(f.tone_snr_db >= 42.0, "{f:?}");
        assert!(f.tone_settling_snr_db >= 28.0, "{f:?}");
        assert!(f.onset_error_db <= 1.0, "{f:?}");
        assert!(f.chirp_correlation >= 0.9, "{f:?}");
    }

    /// The CTCSS high-pass alone, phase-equalised, keeps a voice-band chirp's waveform (0.75
    /// without the equaliser) while still removing the tones.
    #[test]
    fn receive_high_pass_keeps_the_waveform() {
        use crate::dsp::{RxChain, RxConfig};
        let (x, at) = schedule(CHIRP_LEN, 1, 0, chirp(0.2, 300.0, 3000.0, CHIRP_LEN));
        let mut rx = RxChain::new(&RxConfig { agc: None, ..RxConfig::default() });
        let mut y = x.clone();
        for frame in y.chunks_mut(PERIOD) {
            rx.process(frame);
        }
        let (lag, corr) = align(&x, &y, at[0]);
        println!("high-pass: chirp correlation {corr:.4} at {:.2} ms", lag as f64 / 48.0);
        assert!(corr >= 0.97 && lag <= 48, "{lag} {corr}");
    }

    #[test]
    fn analysis_reads_a_clean_delayed_tone_and_chirp_as_perfect() {
        let (x, at) = schedule(TONE_LEN, 1, 0, tone(0.2));
        let mut y = vec![0.0f32; 1000];
        y.extend_from_slice(&x);
        let (lag, corr) = align(&x, &y, at[0]);
        assert!(lag % 48 == 1000 % 48 && corr > 0.999, "{lag} {corr}");
        let t = &y[at[0].onset + 1000..][..TONE_LEN];
        assert!(tone_snr_db(&t[STEADY]) > 100.0);
        assert!(onset_error_db(&onset_profile(t)) < 0.01);
        let (c, at) = schedule(CHIRP_LEN, 1, 0, chirp(0.2, 300.0, 3000.0, CHIRP_LEN));
        let mut y = vec![0.0f32; 1234];
        y.extend(c.iter().map(|v| 0.5 * v));
        let (lag, corr) = align(&c, &y, at[0]);
        assert!(lag == 1234 && corr > 0.999, "{lag} {corr}");
    }
}
