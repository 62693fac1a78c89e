//! DTMF decoder: a sans-IO detector for the 16 keypad digits in 48 kHz receive audio.
//!
//! Decimated to 8 kHz ([`Decimator`], 48 taps), a [`ToneBank`] over the 8 DTMF frequencies runs
//! in 5 ms blocks and a 20 ms window is judged every block. A window holds digit `d` when:
//!
//! - in each group the strongest tone is the digit's, its frequency (measured from the phase
//!   advance between blocks) is within `freq_tolerance` (2.5%: ITU-T Q.24 has receivers accept
//!   ±1.5% and reject ±3.5%), and the other tones of its group are ≥ 10 dB weaker;
//! - the twist is within limits: high group at most `max_forward_twist_db` (5 dB) above the
//!   low group and at most `max_reverse_twist_db` (9 dB) below it (Q.24 receivers accept 4 dB
//!   and 8 dB; the extra dB is measurement margin);
//! - each tone is above `min_level_dbfs`, and the two tones carry ≥ 80% of the window's power
//!   (speech, with its many harmonics, does not);
//! - both tones are present in every 10 ms of the window (so a window overlapping the tone's
//!   start or end does not count, and durations are measured on whole windows).
//!
//! A digit is reported ([`DtmfEvent::Digit`]) once `min_windows` consecutive windows hold it
//! (4 windows: 35 ms of tone; Q.24 has 40 ms accepted and 23 ms rejected), and ends after
//! `gap_windows` consecutive windows without it (8: a break of 10 ms or less is bridged, a
//! pause of 40 ms ends the digit). [`DtmfDecoder::sounding`] is true while a digit (or the
//! start of one) is heard, so the receive path can mute it.

use super::decimate::Decimator;
use super::tone_bank::{ToneBank, C};
use super::{clean, SAMPLE_RATE};

pub const DTMF_LOW: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
pub const DTMF_HIGH: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYS: [[char; 4]; 4] = [['1', '2', '3', 'A'], ['4', '5', '6', 'B'], ['7', '8', '9', 'C'], ['*', '0', '#', 'D']];

/// The (low, high) frequencies of a keypad digit.
pub fn dtmf_freqs(digit: char) -> Option<(f64, f64)> {
    let d = digit.to_ascii_uppercase();
    for (r, row) in KEYS.iter().enumerate() {
        for (c, &k) in row.iter().enumerate() {
            if k == d {
                return Some((DTMF_LOW[r], DTMF_HIGH[c]));
            }
        }
    }
    None
}

const DECIMATION: usize = 6;
const DECIMATOR_TAPS: usize = 48;
const DECIMATOR_CUTOFF_HZ: f32 = 3400.0;
/// 5 ms blocks at 8 kHz, 4 in the 20 ms window.
const BLOCK: usize = 40;
const WINDOW: usize = 4;

#[derive(Debug, Clone, PartialEq)]
pub struct DtmfConfig {
    pub freq_tolerance: f32,
    pub max_forward_twist_db: f32,
    pub max_reverse_twist_db: f32,
    /// Each tone's peak level must be at least this, dBFS.
    pub min_level_dbfs: f32,
    pub min_windows: u32,
    pub gap_windows: u32,
}

impl Default for DtmfConfig {
    fn default() -> DtmfConfig {
        DtmfConfig {
            freq_tolerance: 0.025,
            max_forward_twist_db: 5.0,
            max_reverse_twist_db: 9.0,
            min_level_dbfs: -40.0,
            min_windows: 4,
            gap_windows: 8,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfEvent {
    /// A digit started (reported once per key press).
    Digit(char),
    /// The digit ended.
    End(char),
}

#[derive(Debug, Clone)]
pub struct DtmfDecoder {
    cfg: DtmfConfig,
    dec: Decimator,
    /// Scratch: a frame at 8 kHz (sized for a 60 ms frame).
    low: Vec<f32>,
    bank: ToneBank,
    candidate: Option<char>,
    run: u32,
    current: Option<char>,
    missing: u32,
    /// Events not yet taken by [`DtmfDecoder::poll_event`]; at most a few per frame.
    events: std::collections::VecDeque<DtmfEvent>,
}

impl DtmfDecoder {
    pub fn new(cfg: &DtmfConfig) -> DtmfDecoder {
        let d = DtmfConfig::default();
        let cfg = DtmfConfig {
            freq_tolerance: clean(cfg.freq_tolerance, 0.005, 0.06, d.freq_tolerance),
            max_forward_twist_db: clean(cfg.max_forward_twist_db, 0.0, 20.0, d.max_forward_twist_db),
            max_reverse_twist_db: clean(cfg.max_reverse_twist_db, 0.0, 20.0, d.max_reverse_twist_db),
            min_level_dbfs: clean(cfg.min_level_dbfs, -80.0, 0.0, d.min_level_dbfs),
            min_windows: cfg.min_windows.clamp(1, 50),
            gap_windows: cfg.gap_windows.clamp(1, 100),
        };
        let freqs: Vec<f64> = DTMF_LOW.iter().chain(DTMF_HIGH.iter()).copied().collect();
        DtmfDecoder {
            cfg,
            dec: Decimator::new(SAMPLE_RATE as f32, DECIMATION, DECIMATOR_TAPS, DECIMATOR_CUTOFF_HZ),
            low: Vec::with_capacity(2880 / DECIMATION + 2),
            bank: ToneBank::new(SAMPLE_RATE as f64 / DECIMATION as f64, &freqs, BLOCK, WINDOW),
            candidate: None,
            run: 0,
            current: None,
            missing: 0,
            events: std::collections::VecDeque::with_capacity(16),
        }
    }

    /// Feed 48 kHz receive audio; then drain [`DtmfDecoder::poll_event`].
    pub fn process(&mut self, frame: &[f32]) {
        let mut low = std::mem::take(&mut self.low);
        low.clear();
        if frame.iter().all(|x| x.is_finite()) {
            self.dec.process(frame, |y| low.push(y));
        } else {
            for &x in frame {
                self.dec.process(&[if x.is_finite() { x } else { 0.0 }], |y| low.push(y));
            }
        }
        for &y in &low {
            if self.bank.push(y) {
                self.judge();
            }
        }
        self.low = low;
    }

    pub fn poll_event(&mut self) -> Option<DtmfEvent> {
        self.events.pop_front()
    }

    /// A digit is being heard (reported, or a candidate on its way to being reported).
    pub fn sounding(&self) -> bool {
        self.current.is_some() || self.candidate.is_some()
    }

    /// The digit being held down, once reported.
    pub fn current(&self) -> Option<char> {
        self.current
    }

    pub fn reset(&mut self) {
        self.dec.reset();
        self.bank.reset();
        self.candidate = None;
        self.run = 0;
        self.current = None;
        self.missing = 0;
        self.events.clear();
    }

    fn push_event(&mut self, e: DtmfEvent) {
        // Bounded: a caller that never polls loses the oldest, never grows memory.
        if self.events.len() >= 16 {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// The digit the current window holds, if any.
    fn window_digit(&self) -> Option<char> {
        if self.bank.blocks_seen() < WINDOW {
            return None;
        }
        let total = self.bank.mean_square();
        // First the checks that need no trigonometry, for both groups (speech fails them in
        // almost every window): the strongest tone of each group 10 dB over the others, and
        // the two able to carry 80 % of the window's power at all (their incoherent sums bound
        // what any frequency correction can give).
        let mut best = [0usize; 2];
        let mut bound = 0.0;
        for (g, best) in best.iter_mut().enumerate() {
            let base = g * 4;
            let p: [f64; 4] = std::array::from_fn(|i| self.bank.window(base + i).plain_power());
            let b = (0..4).max_by(|&a, &b| p[a].total_cmp(&p[b]))?;
            if (0..4).any(|i| i != b && p[i] * 10.0 > p[b]) {
                return None;
            }
            *best = base + b;
            bound += self.bank.window(base + b).incoherent_power();
        }
        if bound / 2.0 < 0.8 * total {
            return None;
        }
        let mut picks = [(0usize, 0.0f64); 2];
        for (g, pick) in picks.iter_mut().enumerate() {
            let k = best[g];
            let w = self.bank.window(k);
            let step = w.phase_step();
            let f = w.measured_freq(step);
            let nominal = self.bank.freq(k);
            if ((f - nominal) / nominal).abs() > self.cfg.freq_tolerance as f64 {
                return None;
            }
            let power = w.refined_power(step);
            let level_db = 10.0 * power.max(1e-12).log10();
            if level_db < self.cfg.min_level_dbfs as f64 {
                return None;
            }
            // Present in every block of the window, checked on 10 ms pairs of blocks: a single
            // 5 ms block still sees a strong tone of the other group through its sidelobes.
            let turn = C::expj(-step);
            if (1..WINDOW).any(|i| w.pair_power_turned(i, turn) < 0.5 * power) {
                return None;
            }
            *pick = (k - g * 4, power);
        }
        let (lo, plo) = picks[0];
        let (hi, phi) = picks[1];
        let twist = 10.0 * (phi / plo).log10();
        if twist > self.cfg.max_forward_twist_db as f64 || twist < -(self.cfg.max_reverse_twist_db as f64) {
            return None;
        }
        // A sine of peak amplitude A has mean square A²/2.
        if (plo + phi) / 2.0 < 0.8 * total {
            return None;
        }
        Some(KEYS[lo][hi])
    }

    fn judge(&mut self) {
        let d = self.window_digit();
        match d {
            Some(d) if Some(d) == self.candidate => self.run += 1,
            Some(_) => self.run = 1,
            None => self.run = 0,
        }
        self.candidate = d;
        match self.current {
            None => {
                if let Some(d) = d {
                    if self.run >= self.cfg.min_windows {
                        self.current = Some(d);
                        self.missing = 0;
                        self.push_event(DtmfEvent::Digit(d));
                    }
                }
            }
            Some(cur) => {
                if d == Some(cur) {
                    self.missing = 0;
                } else {
                    self.missing += 1;
                    if self.missing >= self.cfg.gap_windows {
                        self.current = None;
                        self.push_event(DtmfEvent::End(cur));
                        // A different digit already running counts from its own start.
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::test_util::{radio_speech, Noise};

    const MS: usize = 48;

    /// A two-tone burst: low at `lo_dbfs` peak, high `twist_db` above it, both scaled in
    /// frequency by `1 + dev_lo` / `1 + dev_hi`, lasting `ms`.
    fn burst(digit: char, lo_dbfs: f64, twist_db: f64, dev_lo: f64, dev_hi: f64, ms: usize, out: &mut Vec<f32>) {
        let (fl, fh) = dtmf_freqs(digit).unwrap();
        let (fl, fh) = (fl * (1.0 + dev_lo), fh * (1.0 + dev_hi));
        let al = 10f64.powf(lo_dbfs / 20.0);
        let ah = al * 10f64.powf(twist_db / 20.0);
        let w = 2.0 * std::f64::consts::PI / 48_000.0;
        out.extend(
            (0..ms * MS).map(|i| (al * (w * fl * i as f64).sin() + ah * (w * fh * i as f64 + 1.0).sin()) as f32),
        );
    }

    fn silence(ms: usize, out: &mut Vec<f32>) {
        out.extend(std::iter::repeat_n(0.0, ms * MS));
    }

    /// Digits reported for `x` (with white noise `noise_amp` added), in 10 ms frames.
    fn decode(x: &[f32], noise_amp: f32) -> String {
        let mut dec = DtmfDecoder::new(&DtmfConfig::default());
        let mut noise = Noise::new(9);
        let mut got = String::new();
        for f in x.chunks(480) {
            let f: Vec<f32> = f.iter().map(|&v| v + noise.next(noise_amp)).collect();
            dec.process(&f);
            while let Some(e) = dec.poll_event() {
                if let DtmfEvent::Digit(d) = e {
                    got.push(d);
                }
            }
        }
        got
    }

    const ALL: &str = "123A456B789C*0#D";

    #[test]
    fn all_sixteen_digits_at_nominal_frequencies_in_noise() {
        let mut x = Vec::new();
        silence(100, &mut x);
        for d in ALL.chars() {
            burst(d, -20.0, 0.0, 0.0, 0.0, 50, &mut x);
            silence(50, &mut x);
        }
        assert_eq!(decode(&x, 0.0), ALL);
        // White noise 15 dB under each tone (Q.24's SNR), over the whole 0-24 kHz band.
        let tone_power = 0.01f64 / 2.0;
        let a = (3.0 * tone_power / 10f64.powf(1.5)).sqrt() as f32;
        assert_eq!(decode(&x, a), ALL);
    }

    #[test]
    fn frequency_tolerance_accepts_1_5_percent_and_rejects_3_5_percent() {
        for dev in [0.015, -0.015] {
            for (dl, dh) in [(dev, dev), (dev, -dev), (0.0, dev), (dev, 0.0)] {
                let mut x = Vec::new();
                for d in ALL.chars() {
                    burst(d, -20.0, 0.0, dl, dh, 50, &mut x);
                    silence(50, &mut x);
                }
                assert_eq!(decode(&x, 0.0), ALL, "deviation low {dl} high {dh}");
            }
        }
        for dev in [0.035, -0.035] {
            for (dl, dh) in [(dev, 0.0), (0.0, dev), (dev, dev)] {
                let mut x = Vec::new();
                for d in ALL.chars() {
                    burst(d, -20.0, 0.0, dl, dh, 50, &mut x);
                    silence(50, &mut x);
                }
                assert_eq!(decode(&x, 0.0), "", "deviation low {dl} high {dh}");
            }
        }
    }

    #[test]
    fn twist_within_4_db_forward_and_8_db_reverse_only() {
        for (twist, want) in [(4.0, ALL), (-8.0, ALL), (6.0, ""), (-10.0, "")] {
            let mut x = Vec::new();
            for d in ALL.chars() {
                burst(d, -16.0, twist, 0.0, 0.0, 50, &mut x);
                silence(50, &mut x);
            }
            assert_eq!(decode(&x, 0.0), want, "twist {twist} dB");
        }
    }

    #[test]
    fn durations_and_gaps_follow_q24() {
        for offset_ms in 0..5 {
            let mut x = Vec::new();
            silence(20, &mut x);
            x.extend(std::iter::repeat_n(0.0, offset_ms * MS + 17));
            // 40 ms tones with 40 ms pauses: every one counts.
            for d in "159D".chars() {
                burst(d, -20.0, 0.0, 0.0, 0.0, 40, &mut x);
                silence(40, &mut x);
            }
            // 23 ms tones: none counts.
            for d in "2468".chars() {
                burst(d, -20.0, 0.0, 0.0, 0.0, 23, &mut x);
                silence(60, &mut x);
            }
            // A 10 ms break inside a digit does not make two; a 40 ms pause does.
            burst('7', -20.0, 0.0, 0.0, 0.0, 60, &mut x);
            silence(10, &mut x);
            burst('7', -20.0, 0.0, 0.0, 0.0, 60, &mut x);
            silence(40, &mut x);
            burst('7', -20.0, 0.0, 0.0, 0.0, 60, &mut x);
            silence(100, &mut x);
            assert_eq!(decode(&x, 0.0), "159D77", "offset {offset_ms} ms");
        }
    }

    #[test]
    fn weak_tones_are_ignored_and_bad_samples_do_not_panic() {
        let mut x = Vec::new();
        burst('5', -45.0, 0.0, 0.0, 0.0, 100, &mut x);
        x[100] = f32::NAN;
        x[200] = f32::NEG_INFINITY;
        assert_eq!(decode(&x, 0.0), "");
    }

    #[test]
    fn digit_is_sounding_while_it_plays_for_muting() {
        let mut x = Vec::new();
        burst('3', -20.0, 0.0, 0.0, 0.0, 200, &mut x);
        let mut dec = DtmfDecoder::new(&DtmfConfig::default());
        let mut sounding = 0;
        for f in x.chunks(480) {
            dec.process(f);
            sounding += dec.sounding() as usize;
        }
        // All but the first 30 ms of 200 ms.
        assert!(sounding >= 17, "sounding in {sounding} of 20 frames");
        assert_eq!(dec.current(), Some('3'));
    }

    /// Talk-off: speech-like audio (without and with the transmitter's high-pass) makes no
    /// digit. `roipd bench` runs the same check over 10 minutes.
    #[test]
    fn talk_off_no_digit_in_speech() {
        let mut dec = DtmfDecoder::new(&DtmfConfig::default());
        for seed in 0..6u32 {
            let x = radio_speech(500 + seed, 10.0, -10.0);
            for f in x.chunks(480) {
                dec.process(f);
                assert_eq!(dec.poll_event(), None, "seed {seed}: a digit in speech");
            }
        }
    }
}
