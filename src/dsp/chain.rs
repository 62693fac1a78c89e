//! The per-port audio chains.
//!
//! Receive, radio → network ([`RxChain`]):
//! `input meter → high-pass (CTCSS strip) → de-emphasis? → input gain → VOX level → phase
//! equaliser (of the high-pass) → AGC? → limiter → output meter`.
//!
//! Transmit, network → radio ([`TxChain`]):
//! `input meter → gain → pre-emphasis? → limiter → output meter`.
//!
//! Emphasis is the land-mobile FM curve, 6 dB/octave between 300 Hz and 3 kHz (TIA-603 style):
//! a first-order shelf with its corners at [`EMPHASIS_LOW_HZ`] and [`EMPHASIS_HIGH_HZ`], 20 dB
//! from end to end, scaled to 0 dB at 1 kHz (as app_rpt does) so switching it on does not
//! change the level of the speech band's middle. De-emphasis (pole at 300 Hz, zero at 3 kHz)
//! is for receivers that deliver flat discriminator audio; pre-emphasis is its exact inverse
//! (zero at 300 Hz, pole at 3 kHz) for transmitters driven on a flat (data/9600) input. A
//! first-order shelf only one decade wide is not a full 6 dB/octave anywhere: between 1 and
//! 2 kHz it falls by about 4.6 dB, and by 17 dB from 300 Hz to 3 kHz.

use super::biquad::{Biquad, BiquadCoeffs};
use super::dynamics::{Agc, AgcConfig, Limiter};
use super::level::{db_to_gain, gain_to_db, peak_and_sum_sq, power_to_db, scale_and_sum_sq, Meter, SILENCE_DBFS};
use super::{clean, SAMPLE_RATE};

/// Lower corner of the emphasis shelf (the de-emphasis pole), Hz.
pub const EMPHASIS_LOW_HZ: f64 = 300.0;
/// Upper corner of the emphasis shelf (the de-emphasis zero), Hz.
pub const EMPHASIS_HIGH_HZ: f64 = 3000.0;
/// Frequency at which both emphasis filters have 0 dB gain, Hz.
pub const EMPHASIS_UNITY_HZ: f64 = 1000.0;

/// De-emphasis: -6 dB/octave shelf from 300 Hz to 3 kHz, 0 dB at 1 kHz.
pub fn de_emphasis(sample_rate: u32) -> BiquadCoeffs {
    BiquadCoeffs::first_order_shelf(sample_rate as f64, EMPHASIS_HIGH_HZ, EMPHASIS_LOW_HZ, EMPHASIS_UNITY_HZ)
}

/// Pre-emphasis: the exact inverse of [`de_emphasis`].
pub fn pre_emphasis(sample_rate: u32) -> BiquadCoeffs {
    BiquadCoeffs::first_order_shelf(sample_rate as f64, EMPHASIS_LOW_HZ, EMPHASIS_HIGH_HZ, EMPHASIS_UNITY_HZ)
}

/// The two sections of a 4th-order Butterworth high-pass at `corner_hz`: 2nd-order sections
/// with Q = 1/(2 cos(pi/8)) = 0.541 and 1/(2 cos(3 pi/8)) = 1.307 (cascading two Q = 0.707
/// sections would be a Linkwitz-Riley filter, 6 dB down at the corner instead of 3 dB).
/// 24 dB/octave below the corner: at 300 Hz, 100 Hz is 38 dB down and 67 Hz 52 dB.
pub fn butterworth_high_pass_4(sample_rate: u32, corner_hz: f64) -> [BiquadCoeffs; 2] {
    use std::f64::consts::PI;
    let fs = sample_rate as f64;
    let q1 = 1.0 / (2.0 * (PI / 8.0).cos());
    let q2 = 1.0 / (2.0 * (3.0 * PI / 8.0).cos());
    [BiquadCoeffs::high_pass(fs, corner_hz, q1), BiquadCoeffs::high_pass(fs, corner_hz, q2)]
}

/// The phase equaliser of [`butterworth_high_pass_4`]: two all-pass sections (at 3.3 and
/// 7.3 times the corner, Q 0.1 and 1.6) whose phase lag cancels most of the high-pass's
/// phase lead from the corner to ten times it. Without it the high-pass turns a 300-3000 Hz
/// chirp into one that correlates with its input at 0.75 (its phase runs from +360 degrees
/// towards 0 across the band: speech keeps its spectrum but loses its waveform); with it,
/// 0.98, for 0.45 ms of group delay. The sections were fitted numerically (least phase
/// error over a linear sweep, corner..10 x corner), so they scale with the corner.
pub fn high_pass_phase_equaliser(sample_rate: u32, corner_hz: f64) -> [BiquadCoeffs; 2] {
    let fs = sample_rate as f64;
    [BiquadCoeffs::all_pass(fs, 3.3 * corner_hz, 0.1), BiquadCoeffs::all_pass(fs, 7.3 * corner_hz, 1.6)]
}

/// Receive chain settings for one radio port.
#[derive(Debug, Clone, PartialEq)]
pub struct RxConfig {
    /// Corner of the 4th-order high-pass that strips CTCSS tones (67–254 Hz); `None` = off.
    /// Clamped to 20..=2000 Hz.
    pub highpass_hz: Option<f32>,
    /// De-emphasis for flat (discriminator) receive audio.
    pub de_emphasis: bool,
    /// Input gain, dB (clamped to ±40), applied before the VOX level is measured.
    pub gain_db: f32,
    /// Automatic gain control; `None` = off.
    pub agc: Option<AgcConfig>,
    /// Peak limiter ceiling, dBFS (clamped to -40..=0).
    pub limiter_dbfs: f32,
}

impl Default for RxConfig {
    fn default() -> Self {
        RxConfig {
            highpass_hz: Some(300.0),
            de_emphasis: false,
            gain_db: 0.0,
            agc: Some(AgcConfig::default()),
            limiter_dbfs: -6.0,
        }
    }
}

/// Transmit chain settings for one radio port.
#[derive(Debug, Clone, PartialEq)]
pub struct TxConfig {
    /// Gain, dB (clamped to ±40).
    pub gain_db: f32,
    /// Pre-emphasis for transmitters driven on a flat input.
    pub pre_emphasis: bool,
    /// Peak limiter ceiling, dBFS (clamped to -40..=0): keeps the deviation in bounds.
    pub limiter_dbfs: f32,
}

impl Default for TxConfig {
    fn default() -> Self {
        TxConfig { gain_db: 0.0, pre_emphasis: false, limiter_dbfs: -6.0 }
    }
}

/// What the receive chain measured on one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RxLevels {
    /// The frame as it came from the radio (shows ADC clipping).
    pub input: Meter,
    /// The frame as it goes to the network.
    pub output: Meter,
    /// RMS level in dBFS after high-pass, de-emphasis and input gain, before the AGC: feed it
    /// to the keying core as `Input::VoxLevel`.
    pub vox_dbfs: f32,
    /// The AGC's gain after this frame (0 with the AGC off).
    pub agc_gain_db: f32,
}

/// What the transmit chain measured on one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TxLevels {
    /// The frame as it came from the channel (mixer).
    pub input: Meter,
    /// The frame as it goes to the radio.
    pub output: Meter,
}

fn clean_gain_db(db: f32) -> f32 {
    clean(db, -40.0, 40.0, 0.0)
}

/// Radio → network processing for one port. Allocation-free, also in [`RxChain::new`].
#[derive(Debug, Clone)]
pub struct RxChain {
    /// The CTCSS high-pass's two sections, then its phase equaliser's two.
    highpass: Option<[Biquad; 4]>,
    /// The phase equaliser did not follow the audio (frames only measured): it starts afresh
    /// with the next processed frame. It changes phase only, so the VOX level does not need it.
    equaliser_stale: bool,
    de_emphasis: Option<Biquad>,
    gain: f32,
    agc: Option<Agc>,
    limiter: Limiter,
    /// [`levels_only`](Self::levels_only) skips the filters of a frame whose level after them
    /// cannot reach this, dBFS (see [`set_quiet_floor`](Self::set_quiet_floor)); -inf: never.
    quiet_below_dbfs: f32,
    /// The high-pass and de-emphasis hold no state (reset, or only quiet frames since).
    filters_at_rest: bool,
}

/// How far under the VOX close threshold (or the AGC gate, the lower) a frame must be for an
/// idle VOX port to skip its filters, dB.
pub const QUIET_MARGIN_DB: f32 = 20.0;

/// The most the de-emphasis shelf raises any frequency, dB: +10.4 at DC (0 dB at 1 kHz, pole
/// at 300 Hz, zero at 3 kHz), rounded up. The Butterworth high-pass never raises any.
const DE_EMPHASIS_MAX_GAIN_DB: f32 = 11.0;

impl RxChain {
    pub fn new(config: &RxConfig) -> RxChain {
        let highpass = config.highpass_hz.map(|f| {
            let f = clean(f, 20.0, 2000.0, 300.0) as f64;
            let ([a, b], [c, d]) = (butterworth_high_pass_4(SAMPLE_RATE, f), high_pass_phase_equaliser(SAMPLE_RATE, f));
            [a, b, c, d].map(Biquad::new)
        });
        RxChain {
            highpass,
            equaliser_stale: false,
            de_emphasis: config.de_emphasis.then(|| Biquad::new(de_emphasis(SAMPLE_RATE))),
            gain: db_to_gain(clean_gain_db(config.gain_db)),
            agc: config.agc.as_ref().map(|a| Agc::new(SAMPLE_RATE, a)),
            limiter: Limiter::new(SAMPLE_RATE, config.limiter_dbfs, Limiter::RELEASE_MS),
            quiet_below_dbfs: f32::NEG_INFINITY,
            filters_at_rest: true,
        }
    }

    /// Change the input gain (takes effect with the next frame).
    pub fn set_gain_db(&mut self, gain_db: f32) {
        self.gain = db_to_gain(clean_gain_db(gain_db));
    }

    /// Let [`levels_only`](Self::levels_only) skip the filters of quiet frames: those [`QUIET_MARGIN_DB`]
    /// under the lower of the VOX close threshold `vox_close_dbfs` and the AGC gate, whatever
    /// the filters could make of them. Such a frame reads below both, as it would filtered: the
    /// VOX stays closed and the AGC holds, and the filters stay at rest. A closed squelch's
    /// noise floor is such a frame (-70 dBFS and under with the defaults), so an idle VOX port
    /// runs no per-sample recurrence, only the input meter.
    pub fn set_quiet_floor(&mut self, vox_close_dbfs: f32) {
        let gate = self.agc.as_ref().map_or(f32::INFINITY, Agc::gate_dbfs);
        let floor = vox_close_dbfs.min(gate) - QUIET_MARGIN_DB;
        self.quiet_below_dbfs = if floor.is_nan() { f32::NEG_INFINITY } else { floor };
    }

    /// Clear all filter, AGC and limiter state (e.g. after an audio device restart).
    pub fn reset(&mut self) {
        self.reset_filters();
        if let Some(agc) = &mut self.agc {
            agc.reset();
        }
    }

    /// Clear the filter and limiter state, keeping the AGC's gain (a new over on a port whose
    /// chain did not run in between).
    pub fn reset_filters(&mut self) {
        for bq in self.highpass.iter_mut().flatten().chain(self.de_emphasis.as_mut()) {
            bq.reset();
        }
        self.filters_at_rest = true;
        self.limiter.reset();
    }

    /// Process one captured frame in place and report its levels. A frame holding NaN or
    /// infinite samples comes out as silence and resets the filters.
    pub fn process(&mut self, frame: &mut [f32]) -> RxLevels {
        let (input, vox_dbfs) = self.measure(frame);
        let Some(vox_dbfs) = vox_dbfs else {
            frame.fill(0.0);
            return RxLevels { input, output: Meter::SILENCE, vox_dbfs: SILENCE_DBFS, agc_gain_db: self.agc_gain_db() };
        };
        // All-pass after the level: it changes phase only (every section here is linear, so
        // the order does not change the sound).
        if let Some([_, _, eq @ ..]) = &mut self.highpass {
            if std::mem::take(&mut self.equaliser_stale) {
                eq.iter_mut().for_each(Biquad::reset);
            }
            eq.iter_mut().for_each(|bq| bq.process(frame));
        }
        if let Some(agc) = &mut self.agc {
            agc.process(frame, vox_dbfs);
        }
        self.limiter.process(frame);
        RxLevels { input, output: Meter::measure(frame), vox_dbfs, agc_gain_db: self.agc_gain_db() }
    }

    /// The levels of a frame that is not sent (a VOX port that does not talk): the high-pass,
    /// de-emphasis and the AGC's level estimate follow it as [`process`](Self::process) would,
    /// so a spurt starts on current state and VOX sees the same levels, but the phase
    /// equaliser, the AGC's gain, the limiter and the output level, which only concern sent
    /// audio, are skipped (most of the chain's cost; an idle VOX port runs this 100 times a
    /// second). The limiter starts the next spurt released, as quiet audio leaves it; the
    /// equaliser from rest (it settles within a frame).
    ///
    /// With a quiet floor set ([`set_quiet_floor`](Self::set_quiet_floor)), a frame under it
    /// is only metered: its VOX level is the most the filters could make of it (input level,
    /// input gain and the filters' largest gain), and the filters stay at rest; a frame that
    /// comes out of them under the floor leaves them at rest for the next.
    pub fn levels_only(&mut self, frame: &mut [f32]) -> RxLevels {
        let n = frame.len();
        let (peak, sum) = peak_and_sum_sq(frame);
        let input = Meter::from_sums(peak, sum, n);
        // The most the filters can make of this frame (NaN for one holding NaN or infinity).
        let headroom = if self.de_emphasis.is_some() { DE_EMPHASIS_MAX_GAIN_DB } else { 0.0 };
        let most = if sum.is_finite() && n > 0 {
            (power_to_db(sum / n as f32) + gain_to_db(self.gain) + headroom).max(SILENCE_DBFS)
        } else {
            f32::NAN
        };
        let quiet = most < self.quiet_below_dbfs;
        if quiet && self.filters_at_rest {
            self.limiter.reset();
            self.equaliser_stale = true;
            return RxLevels { input, output: Meter::SILENCE, vox_dbfs: most, agc_gain_db: self.agc_gain_db() };
        }
        let vox_dbfs = self.filter_and_measure(frame).unwrap_or(SILENCE_DBFS);
        if quiet && vox_dbfs < self.quiet_below_dbfs {
            // The first quiet frame after a louder one: what the filters still hold of that
            // has died away under the floor; they rest from the next frame on.
            self.reset_filters();
        }
        if let Some(agc) = &mut self.agc {
            agc.follow(frame.len(), vox_dbfs);
        }
        self.limiter.reset();
        self.equaliser_stale = true;
        RxLevels { input, output: Meter::SILENCE, vox_dbfs, agc_gain_db: self.agc_gain_db() }
    }

    /// The input meter, then high-pass, de-emphasis and input gain in place, and the VOX level
    /// after them; `None` (filters reset) for a frame holding NaN or infinite samples.
    fn measure(&mut self, frame: &mut [f32]) -> (Meter, Option<f32>) {
        let (peak, sum) = peak_and_sum_sq(frame);
        let input = Meter::from_sums(peak, sum, frame.len());
        (input, self.filter_and_measure(frame))
    }

    /// High-pass, de-emphasis and input gain in place; the VOX level after them, `None`
    /// (filters reset) for a frame holding NaN or infinite samples.
    fn filter_and_measure(&mut self, frame: &mut [f32]) -> Option<f32> {
        let n = frame.len();
        self.filters_at_rest = false;
        if let Some([a, b, ..]) = &mut self.highpass {
            a.process(frame);
            b.process(frame);
        }
        if let Some(de) = &mut self.de_emphasis {
            de.process(frame);
        }
        let sum = scale_and_sum_sq(frame, self.gain);
        if !sum.is_finite() {
            self.reset_filters();
            return None;
        }
        Some(if n == 0 { SILENCE_DBFS } else { power_to_db(sum / n as f32) })
    }

    fn agc_gain_db(&self) -> f32 {
        self.agc.as_ref().map_or(0.0, Agc::gain_db)
    }
}

/// Network → radio processing for one port. Allocation-free, also in [`TxChain::new`].
#[derive(Debug, Clone)]
pub struct TxChain {
    gain: f32,
    pre_emphasis: Option<Biquad>,
    limiter: Limiter,
}

impl TxChain {
    pub fn new(config: &TxConfig) -> TxChain {
        TxChain {
            gain: db_to_gain(clean_gain_db(config.gain_db)),
            pre_emphasis: config.pre_emphasis.then(|| Biquad::new(pre_emphasis(SAMPLE_RATE))),
            limiter: Limiter::new(SAMPLE_RATE, config.limiter_dbfs, Limiter::RELEASE_MS),
        }
    }

    /// Change the gain (takes effect with the next frame).
    pub fn set_gain_db(&mut self, gain_db: f32) {
        self.gain = db_to_gain(clean_gain_db(gain_db));
    }

    /// Clear the filter and limiter state.
    pub fn reset(&mut self) {
        if let Some(pre) = &mut self.pre_emphasis {
            pre.reset();
        }
        self.limiter.reset();
    }

    /// Process one frame for the radio in place and report its levels. Mix courtesy tones and
    /// IDs in before this, so they are emphasized and limited like speech. A frame holding NaN
    /// or infinite samples comes out as silence and resets the filters.
    pub fn process(&mut self, frame: &mut [f32]) -> TxLevels {
        let n = frame.len();
        let (peak, sum) = peak_and_sum_sq(frame);
        let input = Meter::from_sums(peak, sum, n);
        scale_and_sum_sq(frame, self.gain);
        if let Some(pre) = &mut self.pre_emphasis {
            pre.process(frame);
        }
        self.limiter.process(frame);
        let (peak, sum) = peak_and_sum_sq(frame);
        if !sum.is_finite() {
            frame.fill(0.0);
            self.reset();
            return TxLevels { input, output: Meter::SILENCE };
        }
        TxLevels { input, output: Meter::from_sums(peak, sum, n) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::test_util::{gain_db_at, rms_db, sine, speech_like, Noise};

    const SIX: f32 = 0.501_187_2; // -6 dBFS

    fn rx_filters_only(highpass: bool, de_emphasis: bool) -> RxChain {
        RxChain::new(&RxConfig {
            highpass_hz: highpass.then_some(300.0),
            de_emphasis,
            agc: None,
            ..RxConfig::default()
        })
    }

    fn rx_gain(chain: &mut RxChain, f: f64) -> f64 {
        gain_db_at(f, 0.1, |frame| {
            chain.process(frame);
        })
    }

    fn tx_gain(chain: &mut TxChain, f: f64) -> f64 {
        gain_db_at(f, 0.1, |frame| {
            chain.process(frame);
        })
    }

    /// An idle VOX port on a closed squelch's noise floor (and on digital silence) skips the
    /// filters but decides as if it had run them, frame for frame: the same side of the VOX
    /// thresholds, the same AGC gain. Hum and a DC offset that the high-pass removes are not
    /// quiet (they are loud at the input) and go through it; a spurt after quiet frames sounds
    /// as it would after filtered ones.
    #[test]
    fn quiet_frames_skip_the_filters_and_decide_as_filtered() {
        use crate::core::keying::VoxConfig;
        let vox = VoxConfig::default();
        for de_emphasis in [false, true] {
            let config = RxConfig { de_emphasis, ..RxConfig::default() };
            let (mut exact, mut quiet) = (RxChain::new(&config), RxChain::new(&config));
            quiet.set_quiet_floor(vox.close_dbfs);
            let mut noise = Noise::new(7);
            // (what, frames, expected to skip the filters after its first frame)
            let parts: [(&str, usize, bool); 8] = [
                ("silence", 50, true),
                ("noise -90", 50, true),
                ("tone -30", 20, false),
                ("noise -85", 50, true),
                ("hum 60 Hz -20", 30, false),
                ("dc -40", 30, false),
                ("silence", 20, true),
                ("tone -40", 20, false),
            ];
            let mut t = 0;
            for (what, frames, skips) in parts {
                let mut skipped = 0;
                for i in 0..frames {
                    let mut a = vec![0.0f32; 480];
                    match what {
                        "noise -90" => noise.fill(&mut a, 5.5e-5),
                        "noise -85" => noise.fill(&mut a, 1.0e-4),
                        "tone -30" => a = crate::dsp::test_util::sine_from(1000.0, 0.045, t, 480),
                        "tone -40" => a = crate::dsp::test_util::sine_from(700.0, 0.014, t, 480),
                        "hum 60 Hz -20" => a = crate::dsp::test_util::sine_from(60.0, 0.14, t, 480),
                        "dc -40" => a.fill(0.01),
                        _ => {}
                    }
                    t += 480;
                    let mut b = a.clone();
                    let (la, lb) = (exact.levels_only(&mut a), quiet.levels_only(&mut b));
                    let at = format!("de-emphasis {de_emphasis}, {what}, frame {i}: {la:?} {lb:?}");
                    assert_eq!(vox.level(la.vox_dbfs), vox.level(lb.vox_dbfs), "{at}");
                    assert!((la.agc_gain_db - lb.agc_gain_db).abs() < 0.01, "{at}");
                    assert_eq!(la.input, lb.input, "{at}");
                    if lb.vox_dbfs < quiet.quiet_below_dbfs {
                        assert!(lb.vox_dbfs >= la.vox_dbfs - 1.0, "a quiet frame reads no lower than filtered: {at}");
                    }
                    skipped += usize::from(quiet.filters_at_rest && i > 0);
                }
                // After a loud part the filters ring out for a frame or two first.
                let ok = if skips { skipped + 3 >= frames } else { skipped == 0 };
                assert!(ok, "de-emphasis {de_emphasis}, {what}: {skipped} of {frames} frames skipped");
            }
            // A spurt after quiet frames: as after filtered ones (their state differs by a
            // noise floor 20 dB under the VOX threshold, so by next to nothing).
            for i in 0..50 {
                let mut a = vec![0.0f32; 480];
                noise.fill(&mut a, 1.0e-4);
                let mut b = a.clone();
                exact.levels_only(&mut a);
                quiet.levels_only(&mut b);
                assert!(i == 0 || quiet.filters_at_rest);
            }
            for i in 0..20 {
                let mut a = crate::dsp::test_util::sine_from(1000.0, 0.1, 480 * i, 480);
                let mut b = a.clone();
                exact.process(&mut a);
                quiet.process(&mut b);
                let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
                assert!(worst < 1e-3, "de-emphasis {de_emphasis}: spurt frame {i} differs by {worst}");
            }
        }
    }

    /// Without a quiet floor nothing is skipped: digital silence runs through the filters.
    #[test]
    fn without_a_quiet_floor_every_frame_is_filtered() {
        let mut chain = RxChain::new(&RxConfig::default());
        for _ in 0..10 {
            chain.levels_only(&mut [0.0f32; 480]);
            assert!(!chain.filters_at_rest);
        }
    }

    /// A VOX port that does not talk only measures levels: same VOX levels and AGC gain as
    /// the full chain, and a spurt after it sounds exactly as if every frame had been processed.
    #[test]
    fn levels_only_keeps_the_state_a_spurt_starts_on() {
        let config = RxConfig { de_emphasis: true, ..RxConfig::default() };
        let (mut full, mut idle) = (RxChain::new(&config), RxChain::new(&config));
        let signal = sine(700.0, 0.03, 48_000 * 2);
        for (i, chunk) in signal.chunks(480).enumerate() {
            let (mut a, mut b) = (chunk.to_vec(), chunk.to_vec());
            let la = full.process(&mut a);
            if i < 100 {
                let lb = idle.levels_only(&mut b);
                assert_eq!(
                    (lb.vox_dbfs, lb.agc_gain_db, lb.input),
                    (la.vox_dbfs, la.agc_gain_db, la.input),
                    "frame {i}"
                );
                assert_eq!(lb.output, Meter::SILENCE, "no output level: nothing is sent");
            } else {
                idle.process(&mut b);
                // The phase equaliser starts from rest: it settles within the first frame.
                let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
                let allowed = if i == 100 { 0.05 } else { 1e-4 };
                assert!(worst < allowed, "frame {i} differs by {worst}");
            }
        }
        assert!(full.agc_gain_db() > 5.0, "the AGC moved during the idle part: {}", full.agc_gain_db());
    }

    #[test]
    fn defaults_are_what_radio_people_expect() {
        let rx = RxConfig::default();
        assert_eq!(rx.highpass_hz, Some(300.0));
        assert!(!rx.de_emphasis);
        assert_eq!(rx.gain_db, 0.0);
        assert_eq!(rx.agc, Some(AgcConfig::default()));
        assert_eq!(rx.limiter_dbfs, -6.0);
        let tx = TxConfig::default();
        assert_eq!((tx.gain_db, tx.pre_emphasis, tx.limiter_dbfs), (0.0, false, -6.0));
    }

    #[test]
    fn rx_high_pass_strips_ctcss_and_passes_speech() {
        let figures: Vec<(f64, f64)> = [50.0, 67.0, 100.0, 150.0, 254.0, 300.0, 400.0, 1000.0, 3000.0]
            .iter()
            .map(|&f| (f, rx_gain(&mut rx_filters_only(true, false), f)))
            .collect();
        for (f, g) in &figures {
            println!("RX high-pass: {f:>6} Hz {g:>7.2} dB");
        }
        let at = |f: f64| figures.iter().find(|(ff, _)| *ff == f).unwrap().1;
        assert!(at(100.0) <= -20.0, "100 Hz: {}", at(100.0));
        assert!(at(67.0) <= -30.0, "67 Hz: {}", at(67.0));
        assert!(at(1000.0).abs() <= 1.0, "1 kHz: {}", at(1000.0));
        // The Butterworth shape: -3 dB at the corner, 24 dB/octave below.
        assert!((at(300.0) + 3.01).abs() < 0.1, "300 Hz: {}", at(300.0));
        assert!((at(100.0) + 38.2).abs() < 0.5);
        assert!(at(254.0) < -6.0);
        assert!(at(3000.0).abs() < 0.01);
    }

    #[test]
    fn de_emphasis_falls_and_pre_emphasis_rises_and_they_cancel() {
        let de = |f| rx_gain(&mut rx_filters_only(false, true), f);
        let pre = |f| tx_gain(&mut TxChain::new(&TxConfig { pre_emphasis: true, ..TxConfig::default() }), f);
        let (de1, de2, pre1, pre2) = (de(1000.0), de(2000.0), pre(1000.0), pre(2000.0));
        let (de_slope, pre_slope) = (de2 - de1, pre2 - pre1);
        let (de300, de3k) = (de(300.0), de(3000.0));
        println!("de-emphasis: 300 Hz {de300:+.2}, 1 kHz {de1:+.2}, 2 kHz {de2:+.2} dB");
        println!("de-emphasis: 3 kHz {de3k:+.2} dB");
        println!("pre-emphasis: 1 kHz {pre1:+.2}, 2 kHz {pre2:+.2} dB");
        println!("1->2 kHz: de-emphasis {de_slope:+.2} dB, pre-emphasis {pre_slope:+.2} dB");
        assert!(de1.abs() < 0.05 && pre1.abs() < 0.05);
        assert!((-6.5..=-4.0).contains(&de_slope), "{de_slope}");
        assert!((4.0..=6.5).contains(&pre_slope), "{pre_slope}");
        assert!((de_slope + pre_slope).abs() < 0.05);

        // RX de-emphasis into TX pre-emphasis is flat.
        let mut worst: f64 = 0.0;
        for f in [100.0, 200.0, 300.0, 500.0, 1000.0, 2000.0, 3000.0, 5000.0, 8000.0] {
            let mut rx = rx_filters_only(false, true);
            let mut tx = TxChain::new(&TxConfig { pre_emphasis: true, ..TxConfig::default() });
            let g = gain_db_at(f, 0.1, |frame| {
                rx.process(frame);
                tx.process(frame);
            });
            worst = worst.max(g.abs());
            assert!(g.abs() <= 1.0, "{f} Hz: {g}");
        }
        println!("de-emphasis -> pre-emphasis cascade, 100 Hz..8 kHz: flat within {worst:.4} dB");
    }

    #[test]
    fn limiters_hold_minus_6_dbfs_on_a_plus_6_dbfs_sine_and_impulses() {
        let mut chains_rx = [
            RxChain::new(&RxConfig::default()),
            RxChain::new(&RxConfig { gain_db: 20.0, de_emphasis: true, ..RxConfig::default() }),
        ];
        let mut chains_tx = [
            TxChain::new(&TxConfig::default()),
            TxChain::new(&TxConfig { gain_db: 20.0, pre_emphasis: true, ..TxConfig::default() }),
        ];
        let mut worst = 0f32;
        let mut check = |frame: &[f32]| {
            let p = frame.iter().fold(0f32, |a, &b| a.max(b.abs()));
            worst = worst.max(p);
            assert!(p <= SIX, "{p}");
        };
        let mut noise = Noise::new(11);
        for f in [100.0, 1000.0, 2500.0] {
            let loud = sine(f, 2.0, 48_000);
            for rx in &mut chains_rx {
                let mut x = loud.clone();
                for frame in x.chunks_mut(960) {
                    let levels = rx.process(frame);
                    check(frame);
                    assert!(levels.output.peak_dbfs <= -6.0 + 1e-4);
                }
            }
            for tx in &mut chains_tx {
                let mut x = loud.clone();
                for frame in x.chunks_mut(480) {
                    tx.process(frame);
                    check(frame);
                }
            }
        }
        for round in 0..100 {
            let mut frame = [0f32; 960];
            noise.fill(&mut frame, 0.01);
            frame[(round * 37) % 960] = 1.0;
            frame[(round * 91 + 5) % 960] = -4.0;
            noise.fill(&mut frame[300..310], 8.0);
            for rx in &mut chains_rx {
                let mut x = frame;
                rx.process(&mut x);
                check(&x);
            }
            for tx in &mut chains_tx {
                let mut x = frame;
                tx.process(&mut x);
                check(&x);
            }
        }
        println!("limiters: worst output peak {worst} (ceiling {SIX})");
    }

    #[test]
    fn minus_20_dbfs_passes_the_tx_chain_unchanged() {
        let input = sine(1000.0, 0.1, 48_000);
        let mut tx = TxChain::new(&TxConfig::default());
        tx.process(&mut sine(1000.0, 2.0, 960)); // make the limiter work first
        let mut x = input.clone();
        for frame in x.chunks_mut(960) {
            tx.process(frame);
        }
        let change = rms_db(&x[24_000..]) - rms_db(&input[24_000..]);
        println!("TX chain at -20 dBFS: {change:+.4} dB");
        assert!(change.abs() <= 0.5);
    }

    #[test]
    fn meters_read_a_full_scale_sine_as_0_peak_and_minus_3_01_rms() {
        let mut rx = RxChain::new(&RxConfig::default());
        let mut tx = TxChain::new(&TxConfig::default());
        let input = sine(1000.0, 1.0, 960);
        for levels in [rx.process(&mut input.clone()).input, tx.process(&mut input.clone()).input] {
            assert!(levels.peak_dbfs.abs() < 0.001, "{levels:?}");
            assert!((levels.rms_dbfs + 3.01).abs() < 0.005, "{levels:?}");
        }
        let out = tx.process(&mut input.clone()).output;
        assert!(out.peak_dbfs <= -6.0 + 1e-4 && out.peak_dbfs > -6.1, "{out:?}");
    }

    #[test]
    fn vox_level_is_after_high_pass_and_gain_before_agc() {
        let mut rx = RxChain::new(&RxConfig { gain_db: 6.0, ..RxConfig::default() });
        // -20 dBFS peak 1 kHz sine: -23.01 dBFS RMS, +6 dB input gain.
        let mut last = None;
        for _ in 0..50 {
            last = Some(rx.process(&mut sine(1000.0, 0.1, 960)));
        }
        let l = last.unwrap();
        assert!((l.vox_dbfs + 17.0).abs() < 0.1, "{l:?}");
        // A strong CTCSS tone alone barely registers.
        let mut rx = RxChain::new(&RxConfig::default());
        let tone = sine(100.0, 0.5, 48_000);
        let mut vox = 0.0;
        for frame in tone.chunks(960) {
            vox = rx.process(&mut frame.to_vec()).vox_dbfs;
        }
        assert!(vox < -40.0, "{vox}");
    }

    #[test]
    fn rx_agc_raises_quiet_speech_and_leaves_silence_alone() {
        let mut rx = RxChain::new(&RxConfig::default());
        let mut x = speech_like(-40.0, 10.0);
        let mut last = None;
        for frame in x.chunks_mut(960) {
            last = Some(rx.process(frame));
        }
        let g = last.unwrap().agc_gain_db;
        assert!((19.0..=20.0).contains(&g), "{g}");

        let mut rx = RxChain::new(&RxConfig::default());
        let mut noise = Noise::new(5);
        let mut frame = [0f32; 960];
        for _ in 0..500 {
            noise.fill(&mut frame, 0.001);
            let l = rx.process(&mut frame);
            assert_eq!(l.agc_gain_db, 0.0);
            assert!(l.output.rms_dbfs < -60.0);
        }
    }

    #[test]
    fn bad_samples_become_silence_and_the_chain_recovers() {
        let mut rx = RxChain::new(&RxConfig { de_emphasis: true, ..RxConfig::default() });
        let mut tx = TxChain::new(&TxConfig { pre_emphasis: true, ..TxConfig::default() });
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30] {
            let mut frame = sine(1000.0, 0.1, 960);
            frame[100] = bad;
            let mut f2 = frame.clone();
            let l = rx.process(&mut frame);
            assert!(frame.iter().all(|&x| x == 0.0));
            assert_eq!(l.vox_dbfs, SILENCE_DBFS);
            let l = tx.process(&mut f2);
            if bad.is_finite() {
                // Huge but finite: the limiter deals with it.
                assert!(f2.iter().all(|&x| x.abs() <= SIX), "{bad}");
            } else {
                assert!(f2.iter().all(|&x| x == 0.0), "{bad}");
                assert_eq!(l.output, Meter::SILENCE);
            }
            assert_eq!(l.input.rms_dbfs, SILENCE_DBFS, "non-finite sums meter as silence");
            let mut good = sine(1000.0, 0.1, 960);
            rx.process(&mut good);
            assert!(good.iter().all(|x| x.is_finite()) && rms_db(&good) > -40.0);
            let mut good = sine(1000.0, 0.1, 960);
            tx.process(&mut good);
            assert!(good.iter().all(|x| x.is_finite()) && rms_db(&good) > -40.0);
        }
        // Empty frames are fine.
        assert_eq!(rx.process(&mut []).output, Meter::SILENCE);
        assert_eq!(tx.process(&mut []).output, Meter::SILENCE);
    }

    #[test]
    fn insane_config_does_not_panic() {
        let mut rx = RxChain::new(&RxConfig {
            highpass_hz: Some(f32::NAN),
            de_emphasis: true,
            gain_db: f32::INFINITY,
            agc: Some(AgcConfig { max_gain_db: -5.0, ..AgcConfig::default() }),
            limiter_dbfs: 12.0,
        });
        let mut tx = TxChain::new(&TxConfig { gain_db: f32::NAN, pre_emphasis: true, limiter_dbfs: -1e9 });
        let mut frame = sine(440.0, 0.5, 960);
        let l = rx.process(&mut frame);
        assert!(frame.iter().all(|x| x.abs() <= 1.0) && l.output.peak_dbfs <= 0.0);
        let mut frame = sine(440.0, 0.5, 960);
        tx.process(&mut frame);
        assert!(frame.iter().all(|x| x.abs() <= db_to_gain(-40.0) * 1.0001));
        rx.set_gain_db(f32::NAN);
        tx.set_gain_db(-1e9);
    }
}
