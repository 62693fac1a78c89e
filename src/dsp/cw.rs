//! Station identification: the CW (Morse) ID and the pure timer that says when an ID is due.
//!
//! Morse timing is PARIS: a dit is `1.2 / wpm` seconds, a dah three dits, the gap between the
//! elements of a character one dit, between characters three, between words seven. Each
//! element is a tone burst with [`RAMP_MS`] raised-cosine edges centred on the keying
//! instants, so element and gap lengths measured at half amplitude are exact (to the sample)
//! and the keying weight is unchanged by the shaping.

use std::time::{Duration, Instant};

use super::tones::{Segment, ToneSequence, RAMP_MS};
use super::{clean, SAMPLE_RATE};

/// CW station ID settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CwIdConfig {
    pub enabled: bool,
    /// What to send, e.g. `"DE N0CALL/R"`. Letters, digits and `/ ? . , = - +` are sent; other
    /// characters are skipped, runs of whitespace are one word gap.
    pub text: String,
    /// Speed in words per minute (PARIS), clamped to 5..=60.
    pub wpm: f32,
    /// Tone frequency, Hz.
    pub tone_hz: f32,
    /// Peak level, dBFS.
    pub level_dbfs: f32,
    /// The longest time between IDs while the radio is transmitting (see [`IdTimer`]).
    pub interval: Duration,
    /// How long before `interval` is up an ID may already ride on a transmission.
    pub early: Duration,
}

impl Default for CwIdConfig {
    /// Off; when switched on: 20 WPM, 800 Hz at -18 dBFS (SvxLink's defaults), every 600 s
    /// (10 min, repeater practice), sent up to 2 min early when the transmitter is keyed.
    fn default() -> Self {
        CwIdConfig {
            enabled: false,
            text: String::new(),
            wpm: 20.0,
            tone_hz: 800.0,
            level_dbfs: -18.0,
            interval: Duration::from_secs(600),
            early: Duration::from_secs(120),
        }
    }
}

/// The Morse code of a character (`.` dit, `-` dah), if it has one.
pub fn morse(c: char) -> Option<&'static str> {
    Some(match c.to_ascii_uppercase() {
        'A' => ".-",
        'B' => "-...",
        'C' => "-.-.",
        'D' => "-..",
        'E' => ".",
        'F' => "..-.",
        'G' => "--.",
        'H' => "....",
        'I' => "..",
        'J' => ".---",
        'K' => "-.-",
        'L' => ".-..",
        'M' => "--",
        'N' => "-.",
        'O' => "---",
        'P' => ".--.",
        'Q' => "--.-",
        'R' => ".-.",
        'S' => "...",
        'T' => "-",
        'U' => "..-",
        'V' => "...-",
        'W' => ".--",
        'X' => "-..-",
        'Y' => "-.--",
        'Z' => "--..",
        '0' => "-----",
        '1' => ".----",
        '2' => "..---",
        '3' => "...--",
        '4' => "....-",
        '5' => ".....",
        '6' => "-....",
        '7' => "--...",
        '8' => "---..",
        '9' => "----.",
        '/' => "-..-.",
        '?' => "..--..",
        '.' => ".-.-.-",
        ',' => "--..--",
        '=' => "-...-",
        '-' => "-....-",
        '+' => ".-.-.",
        _ => return None,
    })
}

/// Keying of `text` in dit units: `(key_down, units)` pairs, alternating, starting and ending
/// with key-down (empty when nothing in `text` can be sent).
fn keying_units(text: &str) -> Vec<(bool, u32)> {
    let mut out: Vec<(bool, u32)> = Vec::new();
    let mut pending_gap = 0;
    for word in text.split_whitespace() {
        for code in word.chars().filter_map(morse) {
            for element in code.chars() {
                if !out.is_empty() {
                    out.push((false, pending_gap.max(1)));
                }
                out.push((true, if element == '-' { 3 } else { 1 }));
                pending_gap = 1;
            }
            pending_gap = 3;
        }
        pending_gap = 7;
    }
    out
}

impl ToneSequence {
    /// The CW ID, or `None` when it is disabled or its text has nothing to send.
    pub fn cw(config: &CwIdConfig) -> Option<ToneSequence> {
        if !config.enabled {
            return None;
        }
        let seq = ToneSequence::cw_text(SAMPLE_RATE, &config.text, config.wpm, config.tone_hz, config.level_dbfs);
        (seq.len_samples() > 0).then_some(seq)
    }

    /// `text` in Morse at `wpm`, `tone_hz` and peak `level_dbfs`.
    pub fn cw_text(sample_rate: u32, text: &str, wpm: f32, tone_hz: f32, level_dbfs: f32) -> ToneSequence {
        let fs = sample_rate as f32;
        let wpm = clean(wpm, 5.0, 60.0, 20.0);
        let tone_hz = clean(tone_hz, 100.0, 0.45 * fs, 800.0);
        let dit = (fs * 1.2 / wpm).round() as usize;
        // Bursts are `ramp + 1` samples longer than their element and gaps as much shorter,
        // centring the rise and fall on the keying instants (a dit is >= 20 ms > the ramp).
        let ramp = ((RAMP_MS * 1e-3 * fs).round() as usize).max(1);
        let segments = keying_units(text)
            .into_iter()
            .map(|(down, units)| {
                let nominal = units as usize * dit;
                if down {
                    Segment { freq_hz: tone_hz, len: nominal + ramp + 1 }
                } else {
                    Segment { freq_hz: 0.0, len: nominal - ramp - 1 }
                }
            })
            .collect();
        ToneSequence::from_segments(sample_rate, segments, level_dbfs)
    }
}

/// What [`IdTimer::due`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdDue {
    /// The transmitter is keyed for traffic: send the ID now, over (mixed into) the traffic.
    OnAir,
    /// The interval is up and the transmitter is not keyed: key it just to send the ID.
    KeyUp,
}

/// When the station must identify. Pure: every `Instant` comes in from the caller.
///
/// Rules:
/// - An ID is owed once the transmitter has been keyed for traffic since the last ID
///   (traffic still on the air when an ID is sent owes the next one). An idle station never
///   identifies.
/// - An owed ID is due `interval` after the last ID at the latest; when that moment has
///   already passed (the first transmission after a quiet spell, or after start-up), it is
///   due at once, on that transmission.
/// - To avoid key-ups just for the ID, it is sent while the transmitter is keyed anyway
///   from `early` before that deadline on; only at the deadline itself does it ask for a
///   key-up ([`IdDue::KeyUp`]).
///
/// Report keying for traffic (PTT on, including TX hang) with [`set_keyed`](Self::set_keyed),
/// not the key-ups made only for the ID, and each ID with [`id_sent`](Self::id_sent). Check
/// [`due`](Self::due) after each input and at [`poll_timeout`](Self::poll_timeout).
#[derive(Debug, Clone)]
pub struct IdTimer {
    interval: Duration,
    early: Duration,
    last_id: Option<Instant>,
    /// Start of the first traffic since the last ID (the ID is owed from then on).
    owed_since: Option<Instant>,
    keyed: bool,
}

impl IdTimer {
    /// `interval` is clamped to 10 s..=24 h and `early` to at most `interval`.
    pub fn new(interval: Duration, early: Duration) -> IdTimer {
        let interval = interval.clamp(Duration::from_secs(10), Duration::from_secs(24 * 3600));
        IdTimer { interval, early: early.min(interval), last_id: None, owed_since: None, keyed: false }
    }

    pub fn from_config(config: &CwIdConfig) -> IdTimer {
        IdTimer::new(config.interval, config.early)
    }

    /// The transmitter is (`true`) or is no longer (`false`) keyed for traffic.
    pub fn set_keyed(&mut self, now: Instant, keyed: bool) {
        if keyed && self.owed_since.is_none() {
            self.owed_since = Some(now);
        }
        self.keyed = keyed;
    }

    /// An ID was sent at `now`.
    pub fn id_sent(&mut self, now: Instant) {
        self.last_id = Some(now);
        self.owed_since = self.keyed.then_some(now);
    }

    /// `base + d`, saturating instead of panicking on overflow.
    fn after(base: Instant, d: Duration) -> Instant {
        base.checked_add(d).unwrap_or(base)
    }

    /// From this instant on an owed ID rides on any transmission (`None`: nothing owed).
    pub fn window_start(&self) -> Option<Instant> {
        let owed = self.owed_since?;
        Some(match self.last_id {
            Some(last) => owed.max(Self::after(last, self.interval.saturating_sub(self.early))),
            None => owed,
        })
    }

    /// The latest instant for the owed ID (`None`: nothing owed).
    pub fn deadline(&self) -> Option<Instant> {
        let owed = self.owed_since?;
        Some(match self.last_id {
            Some(last) => owed.max(Self::after(last, self.interval)),
            None => owed,
        })
    }

    /// Whether an ID should be sent at `now`, and how.
    pub fn due(&self, now: Instant) -> Option<IdDue> {
        if self.keyed && self.window_start()? <= now {
            Some(IdDue::OnAir)
        } else if self.deadline()? <= now {
            Some(IdDue::KeyUp)
        } else {
            None
        }
    }

    /// The next instant at which [`due`](Self::due) can change without an input (it may be in
    /// the past when an ID is due already); `None` when nothing is owed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.keyed {
            self.window_start()
        } else {
            self.deadline()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIT: usize = 2880; // 60 ms at 20 WPM, 48 kHz

    /// Lengths of the runs at or above half amplitude (keyed) and below (gaps), in order.
    fn runs_at_half(env: &[f32]) -> Vec<(bool, usize)> {
        let mut runs: Vec<(bool, usize)> = Vec::new();
        for &e in env {
            let on = e >= 0.5;
            match runs.last_mut() {
                Some((state, n)) if *state == on => *n += 1,
                _ => runs.push((on, 1)),
            }
        }
        runs
    }

    #[test]
    fn keying_follows_paris() {
        assert_eq!(keying_units("K"), vec![(true, 3), (false, 1), (true, 1), (false, 1), (true, 3)]);
        assert_eq!(
            keying_units(" e  t "),
            vec![(true, 1), (false, 7), (true, 3)],
            "case-insensitive, one word gap for any whitespace, none at the ends"
        );
        assert_eq!(keying_units("ET"), vec![(true, 1), (false, 3), (true, 3)]);
        assert_eq!(keying_units("E#T"), keying_units("ET"), "unknown characters are skipped");
        assert!(keying_units("  ~ ").is_empty());
        // PARIS is 50 units with its trailing word gap: 43 without.
        let paris: u32 = keying_units("PARIS").iter().map(|(_, u)| u).sum();
        assert_eq!(paris, 43);
    }

    #[test]
    fn k_is_dah_dit_dah_with_paris_durations_at_20_wpm() {
        let cfg = CwIdConfig { enabled: true, text: "K".into(), ..CwIdConfig::default() };
        let mut k = ToneSequence::cw(&cfg).unwrap();

        // Timing on the envelope at half amplitude: dah 180 ms, gap 60, dit 60, gap 60, dah 180.
        let env = k.envelope_track();
        let runs = runs_at_half(&env);
        let expected =
            [(false, 0), (true, 3 * DIT), (false, DIT), (true, DIT), (false, DIT), (true, 3 * DIT), (false, 0)];
        assert_eq!(runs.len(), expected.len(), "{runs:?}");
        for (got, want) in runs.iter().zip(&expected).skip(1).take(5) {
            assert_eq!(got.0, want.0);
            assert!(got.1.abs_diff(want.1) <= 1, "{runs:?}");
        }
        // The ramps are centred on the keying instants: half a ramp before and after.
        assert!(runs[0].1.abs_diff(120) <= 1 && runs[6].1.abs_diff(120) <= 1, "{runs:?}");
        assert_eq!(k.len_samples(), 9 * DIT + 241);

        // The audio: three bursts that start and end at zero amplitude, 800 Hz, -18 dBFS.
        k.start();
        let mut audio = Vec::new();
        let mut frame = [0f32; 960];
        while k.is_active() {
            let n = k.render(&mut frame);
            audio.extend_from_slice(&frame[..n]);
        }
        assert_eq!(audio.len(), k.len_samples());
        assert_eq!(audio[0], 0.0);
        assert!(audio.last().unwrap().abs() < 1e-9);
        let amp = crate::dsp::level::db_to_gain(-18.0);
        for (x, e) in audio.iter().zip(&env) {
            assert!(x.abs() <= amp * e + 1e-6);
        }
        let mut bursts = Vec::new();
        let mut pos = 0;
        for s in k.segments() {
            if s.freq_hz > 0.0 {
                let burst = &audio[pos..pos + s.len];
                assert_eq!(burst[0], 0.0);
                assert!(burst[s.len - 1].abs() < 1e-9);
                // Soft edges: the first and last quarter millisecond stay below 1%.
                assert!(burst[..12].iter().chain(&burst[s.len - 12..]).all(|x| x.abs() < 0.01 * amp));
                bursts.push(s.len);
            } else {
                assert!(audio[pos..pos + s.len].iter().all(|&x| x == 0.0));
            }
            pos += s.len;
        }
        assert_eq!(bursts, vec![3 * DIT + 241, DIT + 241, 3 * DIT + 241]);
        // No clicks anywhere: no step between samples steeper than the tone itself allows.
        let max_step = amp * 2.0 * std::f32::consts::PI * 800.0 / 48_000.0;
        let worst = audio.windows(2).map(|w| (w[1] - w[0]).abs()).fold(0.0, f32::max);
        assert!(worst <= max_step * 1.01, "{worst} > {max_step}");
        let peak = audio.iter().fold(0f32, |a, &b| a.max(b.abs()));
        assert!((crate::dsp::level::gain_to_db(peak) + 18.0).abs() < 0.01);
        let first = &audio[..3 * DIT + 241];
        let crossings = first.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
        let cycles = crossings as f64 / 2.0;
        assert!((cycles - 800.0 * first.len() as f64 / 48_000.0).abs() <= 1.0, "{cycles}");
    }

    #[test]
    fn cw_id_is_off_by_default_and_skips_empty_text() {
        assert!(ToneSequence::cw(&CwIdConfig { text: "N0CALL".into(), ..CwIdConfig::default() }).is_none());
        assert!(ToneSequence::cw(&CwIdConfig { enabled: true, ..CwIdConfig::default() }).is_none());
        let cfg = CwIdConfig { enabled: true, text: "  ".into(), ..CwIdConfig::default() };
        assert!(ToneSequence::cw(&cfg).is_none());
        let odd = CwIdConfig {
            enabled: true,
            text: "de n0call/r".into(),
            wpm: f32::NAN,
            tone_hz: 1e9,
            level_dbfs: 40.0,
            ..CwIdConfig::default()
        };
        let mut id = ToneSequence::cw(&odd).unwrap();
        id.start();
        let mut frame = [0f32; 2880];
        while id.is_active() {
            id.render(&mut frame);
            assert!(frame.iter().all(|x| x.abs() <= 1.0));
        }
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn id_timer_waits_for_traffic_and_prefers_riding_on_it() {
        let t0 = Instant::now();
        let at = |s| secs(t0, s);
        let mut id = IdTimer::new(Duration::from_secs(600), Duration::from_secs(120));
        // Idle: nothing owed, ever.
        assert_eq!(id.due(at(100_000)), None);
        assert_eq!(id.poll_timeout(), None);

        // First traffic: never identified, so right away, on the air.
        id.set_keyed(at(10), true);
        assert_eq!(id.due(at(10)), Some(IdDue::OnAir));
        id.id_sent(at(10));
        // The rest of that transmission owes the next ID, 600 s later at the latest.
        assert_eq!(id.due(at(11)), None);
        assert_eq!(id.poll_timeout(), Some(at(490)));
        id.set_keyed(at(40), false);
        assert_eq!(id.poll_timeout(), Some(at(610)));
        assert_eq!(id.due(at(609)), None);
        // Nobody keyed in the window: the deadline asks for a key-up of its own.
        assert_eq!(id.due(at(610)), Some(IdDue::KeyUp));
        id.id_sent(at(612));
        // That ID covered everything: idle again.
        assert_eq!(id.due(at(5000)), None);
        assert_eq!(id.deadline(), None);

        // Traffic soon after an ID: owed, but only due in the window before the deadline.
        id.set_keyed(at(700), true);
        assert_eq!(id.window_start(), Some(at(1092)));
        assert_eq!(id.deadline(), Some(at(1212)));
        assert_eq!(id.due(at(800)), None);
        id.set_keyed(at(800), false);
        assert_eq!(id.due(at(1100)), None, "window open, but not keyed: wait for traffic");
        id.set_keyed(at(1100), true);
        assert_eq!(id.due(at(1100)), Some(IdDue::OnAir));
        id.id_sent(at(1101));
        id.set_keyed(at(1105), false);
        // Those last seconds of traffic after the ID owe one more, at the interval.
        assert_eq!(id.due(at(1700)), None);
        assert_eq!(id.due(at(1701)), Some(IdDue::KeyUp));
        id.id_sent(at(1701));

        // Traffic after a long quiet spell: due at once, on that transmission.
        id.set_keyed(at(9000), true);
        assert_eq!(id.deadline(), Some(at(9000)));
        assert_eq!(id.due(at(9000)), Some(IdDue::OnAir));
    }

    #[test]
    fn id_timer_keeps_identifying_through_long_keyed_activity() {
        // A repeater held up by its hang time for an hour: an ID at least every interval.
        let t0 = Instant::now();
        let mut id = IdTimer::new(Duration::from_secs(600), Duration::from_secs(120));
        id.set_keyed(t0, true);
        let mut sent = Vec::new();
        for s in 0..3600 {
            let now = secs(t0, s);
            if id.due(now).is_some() {
                assert_eq!(id.due(now), Some(IdDue::OnAir));
                id.id_sent(now);
                sent.push(s);
            }
        }
        assert_eq!(sent, vec![0, 480, 960, 1440, 1920, 2400, 2880, 3360]);
    }

    #[test]
    fn id_timer_clamps_its_durations() {
        let t0 = Instant::now();
        let mut id = IdTimer::new(Duration::MAX, Duration::MAX);
        id.set_keyed(t0, true);
        id.id_sent(t0);
        assert_eq!(id.deadline(), Some(t0 + Duration::from_secs(24 * 3600)));
        assert_eq!(id.window_start(), Some(t0));
        let id = IdTimer::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(id.interval, Duration::from_secs(10));
        // Time going backwards does not panic.
        let mut id = IdTimer::from_config(&CwIdConfig::default());
        id.set_keyed(secs(t0, 100), true);
        id.id_sent(t0);
        id.set_keyed(t0, false);
        let _ = (id.due(t0), id.poll_timeout());
    }
}
