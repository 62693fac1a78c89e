//! `[port.NAME.audio]`: the devices a port's audio uses, and how its audio is processed:
//! `[port.NAME.audio.rx]` (radio → network), `.tx` (network → radio, courtesy tone),
//! `.codec` (Opus), `.jitter` (jitter buffer bounds) and `.cw_id` (CW station ID).
//!
//! Every table and key is optional; the defaults are the pipeline's own defaults (FM voice:
//! 300 Hz high-pass, AGC to -18 dBFS, limiter at -6 dBFS, Opus narrowband 20 ms at 48 kb/s
//! with FEC).
//! Ports (radio and desk) turn these into pipeline configs with the `*_config()` methods, so
//! the conversion lives in one place.

use std::time::Duration;

use serde::Deserialize;

use super::spans::Report;
use crate::codec::{Bandwidth, EncoderConfig, FrameDuration};
use crate::core::jitter::JitterConfig;
use crate::dsp::{AgcConfig, CourtesyToneConfig, CwIdConfig, RxConfig, ToneStep, TxConfig};

/// ALSA PCM names (`plughw:CARD=Device,DEV=0`) or simulated devices (`sim:tone:1000`,
/// `sim:wav:/path/in.wav`, `sim:null`, `sim:wav-out:/path/out.wav`), plus processing settings.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AudioConfig {
    pub capture: Option<String>,
    pub playback: Option<String>,
    #[serde(default)]
    pub rx: RxSettings,
    #[serde(default)]
    pub tx: TxSettings,
    #[serde(default)]
    pub codec: CodecSettings,
    #[serde(default)]
    pub jitter: JitterSettings,
    /// CW station ID: sent when `callsign` is set.
    #[serde(default)]
    pub cw_id: Option<CwIdSettings>,
}

/// `[port.NAME.audio.rx]`: receive audio, radio → network.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RxSettings {
    /// Input gain, dB (-40..40).
    pub gain_db: f32,
    /// 300 Hz high-pass that strips CTCSS tones.
    pub highpass: bool,
    /// De-emphasis, for receivers that deliver flat (discriminator) audio.
    pub de_emphasis: bool,
    /// Automatic gain control towards `agc_target_dbfs` (-40..-3, speech RMS).
    pub agc: bool,
    pub agc_target_dbfs: f32,
    /// Peak limiter ceiling, dBFS (-40..0; 0 leaves only full scale as the limit).
    pub limiter_dbfs: f32,
}

impl Default for RxSettings {
    fn default() -> Self {
        let d = RxConfig::default();
        RxSettings {
            gain_db: d.gain_db,
            highpass: d.highpass_hz.is_some(),
            de_emphasis: d.de_emphasis,
            agc: d.agc.is_some(),
            agc_target_dbfs: d.agc.unwrap_or_default().target_dbfs,
            limiter_dbfs: d.limiter_dbfs,
        }
    }
}

/// `[port.NAME.audio.tx]`: transmit audio, network → radio.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TxSettings {
    /// Gain, dB (-40..40).
    pub gain_db: f32,
    /// Pre-emphasis, for transmitters driven on a flat (data) input.
    pub pre_emphasis: bool,
    /// Peak limiter ceiling, dBFS (-40..0): keeps the deviation in bounds.
    pub limiter_dbfs: f32,
    /// Courtesy tone (roger beep) when channel audio ends.
    pub courtesy_tone: bool,
    /// Its tones in order, Hz (1-8 tones of 100-5000 Hz, 20 ms apart).
    pub courtesy_tone_hz: Vec<f32>,
    /// Length of each tone, ms (10-1000).
    pub courtesy_tone_ms: u32,
    /// Peak level, dBFS (-60..0).
    pub courtesy_tone_dbfs: f32,
}

/// Pause between the tones of the courtesy tone.
const COURTESY_GAP_MS: u32 = 20;

impl Default for TxSettings {
    fn default() -> Self {
        let d = TxConfig::default();
        let beep = CourtesyToneConfig::default();
        TxSettings {
            gain_db: d.gain_db,
            pre_emphasis: d.pre_emphasis,
            limiter_dbfs: d.limiter_dbfs,
            courtesy_tone: beep.enabled,
            courtesy_tone_hz: beep.steps.iter().filter(|s| s.freq_hz > 0.0).map(|s| s.freq_hz).collect(),
            courtesy_tone_ms: beep.steps.first().map_or(80, |s| s.ms),
            courtesy_tone_dbfs: beep.level_dbfs,
        }
    }
}

/// `[port.NAME.audio.codec]`: Opus as sent to the channel.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CodecSettings {
    /// 10, 20, 40 or 60: longer frames cost less CPU and bandwidth, shorter ones less delay.
    pub frame_ms: u32,
    /// 6000-128000.
    pub bitrate_bps: u32,
    /// Audio bandwidth coded: `narrowband` (4 kHz, the FM voice channel), `mediumband`,
    /// `wideband` (8 kHz, for a desk microphone talking to other desks), `superwideband`,
    /// `fullband`. libopus narrows it when the bitrate leaves no room for the FEC copy.
    pub bandwidth: Bandwidth,
    /// 0-10; 1 keeps a busy port within 5% of a Raspberry Pi 4 core.
    pub complexity: u32,
    /// In-band forward error correction.
    pub fec: bool,
    /// Discontinuous transmission (off: it fades steady tones).
    pub dtx: bool,
    /// Loss the FEC is sized for, % (0-100).
    pub expected_loss_pct: u32,
}

impl Default for CodecSettings {
    fn default() -> Self {
        let d = EncoderConfig::default();
        CodecSettings {
            frame_ms: d.frame.millis(),
            bitrate_bps: d.bitrate_bps,
            bandwidth: d.bandwidth,
            complexity: d.complexity.into(),
            fec: d.fec,
            dtx: d.dtx,
            expected_loss_pct: d.packet_loss_pct.into(),
        }
    }
}

/// `[port.NAME.audio.jitter]`: the adaptive jitter buffer's bounds for the channel's audio.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JitterSettings {
    /// Least audio held, ms (0-1000).
    pub min_depth_ms: u64,
    /// Most audio held, ms (40-2000): bounds the added latency.
    pub max_depth_ms: u64,
}

impl Default for JitterSettings {
    fn default() -> Self {
        let d = JitterConfig::default();
        JitterSettings { min_depth_ms: d.min_depth.as_millis() as u64, max_depth_ms: d.max_depth.as_millis() as u64 }
    }
}

/// `[port.NAME.audio.cw_id]`: Morse station identification. Needs a playback device.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CwIdSettings {
    /// What to send, e.g. "N0CALL/R" (letters, digits, spaces and `/ ? . , = - +`).
    pub callsign: String,
    /// Longest time between IDs while the radio is in use, s (10-86400; 600 = 10 min).
    #[serde(default = "default_id_interval")]
    pub interval_s: u64,
    /// Speed, words per minute (5-60).
    #[serde(default = "default_id_wpm")]
    pub wpm: f32,
    /// Tone, Hz (300-3000).
    #[serde(default = "default_id_tone")]
    pub tone_hz: f32,
    /// Peak level, dBFS (-60..0).
    #[serde(default = "default_id_level")]
    pub level_dbfs: f32,
}

fn default_id_interval() -> u64 {
    CwIdConfig::default().interval.as_secs()
}

fn default_id_wpm() -> f32 {
    CwIdConfig::default().wpm
}

fn default_id_tone() -> f32 {
    CwIdConfig::default().tone_hz
}

fn default_id_level() -> f32 {
    CwIdConfig::default().level_dbfs
}

impl AudioConfig {
    /// The receive DSP chain's settings.
    pub fn rx_config(&self) -> RxConfig {
        let rx = &self.rx;
        RxConfig {
            highpass_hz: rx.highpass.then_some(RxConfig::default().highpass_hz.unwrap_or(300.0)),
            de_emphasis: rx.de_emphasis,
            gain_db: rx.gain_db,
            agc: rx.agc.then(|| AgcConfig { target_dbfs: rx.agc_target_dbfs, ..AgcConfig::default() }),
            limiter_dbfs: rx.limiter_dbfs,
        }
    }

    /// The transmit DSP chain's settings.
    pub fn tx_config(&self) -> TxConfig {
        TxConfig { gain_db: self.tx.gain_db, pre_emphasis: self.tx.pre_emphasis, limiter_dbfs: self.tx.limiter_dbfs }
    }

    /// The courtesy tone: the configured tones, each `courtesy_tone_ms` long, 20 ms apart.
    pub fn courtesy_tone_config(&self) -> CourtesyToneConfig {
        let tx = &self.tx;
        let mut steps = Vec::new();
        for (i, &hz) in tx.courtesy_tone_hz.iter().enumerate() {
            if i > 0 {
                steps.push(ToneStep { freq_hz: 0.0, ms: COURTESY_GAP_MS });
            }
            steps.push(ToneStep { freq_hz: hz, ms: tx.courtesy_tone_ms });
        }
        CourtesyToneConfig { enabled: tx.courtesy_tone, steps, level_dbfs: tx.courtesy_tone_dbfs }
    }

    /// The Opus encoder's settings. Out-of-range values (rejected by validation) fall back to
    /// the defaults rather than panic.
    pub fn encoder_config(&self) -> EncoderConfig {
        let c = &self.codec;
        let d = EncoderConfig::default();
        EncoderConfig {
            frame: FrameDuration::from_millis(c.frame_ms).unwrap_or(d.frame),
            bitrate_bps: c.bitrate_bps,
            bandwidth: c.bandwidth,
            complexity: u8::try_from(c.complexity).unwrap_or(d.complexity).min(10),
            fec: c.fec,
            dtx: c.dtx,
            packet_loss_pct: u8::try_from(c.expected_loss_pct).unwrap_or(d.packet_loss_pct).min(100),
        }
    }

    /// The jitter buffer's settings for the channel's audio (packets of this port's frame
    /// length until the stream shows another).
    pub fn jitter_config(&self) -> JitterConfig {
        let d = JitterConfig::default();
        let (min, max) =
            (Duration::from_millis(self.jitter.min_depth_ms), Duration::from_millis(self.jitter.max_depth_ms));
        JitterConfig { frame: self.encoder_config().frame.duration(), min_depth: min, max_depth: max, ..d }
    }

    /// The CW ID, when one is configured (`None`: no ID).
    pub fn cw_id_config(&self) -> Option<CwIdConfig> {
        let id = self.cw_id.as_ref()?;
        Some(CwIdConfig {
            enabled: true,
            text: id.callsign.clone(),
            wpm: id.wpm,
            tone_hz: id.tone_hz,
            level_dbfs: id.level_dbfs,
            interval: Duration::from_secs(id.interval_s),
            ..CwIdConfig::default()
        })
    }
}

/// Audio device names parse, each is used in a direction it supports, and every setting is
/// in its range.
pub(super) fn validate(path: &str, audio: &AudioConfig, r: &mut Report) {
    use crate::audio::{DeviceSpec, Direction};
    for (field, name, dir) in
        [("capture", &audio.capture, Direction::Capture), ("playback", &audio.playback, Direction::Playback)]
    {
        let Some(name) = name else { continue };
        let key = format!("{path}.audio.{field}");
        match DeviceSpec::parse(name) {
            Ok(spec) if !spec.supports(dir) => r.key(&key, format!("`{name}` cannot be used for {dir}")),
            Ok(_) => {}
            Err(e) => r.key(&key, e.to_string()),
        }
    }
    let at = |table: &str, key: &str| format!("{path}.audio.{table}.{key}");

    let rx = &audio.rx;
    range(r, &at("rx", "gain_db"), rx.gain_db, -40.0, 40.0, "dB");
    range(r, &at("rx", "agc_target_dbfs"), rx.agc_target_dbfs, -40.0, -3.0, "dBFS");
    range(r, &at("rx", "limiter_dbfs"), rx.limiter_dbfs, -40.0, 0.0, "dBFS");

    let tx = &audio.tx;
    range(r, &at("tx", "gain_db"), tx.gain_db, -40.0, 40.0, "dB");
    range(r, &at("tx", "limiter_dbfs"), tx.limiter_dbfs, -40.0, 0.0, "dBFS");
    let tones = at("tx", "courtesy_tone_hz");
    if !(1..=8).contains(&tx.courtesy_tone_hz.len()) {
        r.key(&tones, format!("{} tones: give 1 to 8", tx.courtesy_tone_hz.len()));
    }
    for (i, hz) in tx.courtesy_tone_hz.iter().enumerate() {
        if !(100.0..=5000.0).contains(hz) {
            r.element(&tones, i, format!("{hz} Hz is out of range 100-5000 Hz"));
        }
    }
    range(r, &at("tx", "courtesy_tone_ms"), tx.courtesy_tone_ms as f32, 10.0, 1000.0, "ms");
    range(r, &at("tx", "courtesy_tone_dbfs"), tx.courtesy_tone_dbfs, -60.0, 0.0, "dBFS");

    let c = &audio.codec;
    if FrameDuration::from_millis(c.frame_ms).is_none() {
        r.key(&at("codec", "frame_ms"), format!("{} ms is not an Opus frame length: use 10, 20, 40 or 60", c.frame_ms));
    }
    range(r, &at("codec", "bitrate_bps"), c.bitrate_bps as f32, 6000.0, 128_000.0, "b/s");
    range(r, &at("codec", "complexity"), c.complexity as f32, 0.0, 10.0, "");
    range(r, &at("codec", "expected_loss_pct"), c.expected_loss_pct as f32, 0.0, 100.0, "%");

    let j = &audio.jitter;
    range(r, &at("jitter", "min_depth_ms"), j.min_depth_ms as f32, 0.0, 1000.0, "ms");
    range(r, &at("jitter", "max_depth_ms"), j.max_depth_ms as f32, 40.0, 2000.0, "ms");
    if j.min_depth_ms >= j.max_depth_ms {
        r.key(&at("jitter", "min_depth_ms"), format!("must be below max_depth_ms ({} ms)", j.max_depth_ms));
    }

    if let Some(id) = &audio.cw_id {
        let callsign = at("cw_id", "callsign");
        if id.callsign.trim().is_empty() {
            r.key(&callsign, "empty: give the station's callsign, e.g. \"N0CALL/R\"");
        } else if let Some(c) = id.callsign.chars().find(|c| !c.is_whitespace() && crate::dsp::cw::morse(*c).is_none())
        {
            r.key(&callsign, format!("`{c}` has no Morse code: use letters, digits, spaces and / ? . , = - +"));
        }
        range(r, &at("cw_id", "interval_s"), id.interval_s as f32, 10.0, 86_400.0, "s");
        range(r, &at("cw_id", "wpm"), id.wpm, 5.0, 60.0, "WPM");
        range(r, &at("cw_id", "tone_hz"), id.tone_hz, 300.0, 3000.0, "Hz");
        range(r, &at("cw_id", "level_dbfs"), id.level_dbfs, -60.0, 0.0, "dBFS");
        if audio.playback.is_none() {
            r.key(
                &format!("{path}.audio.cw_id"),
                "a CW ID needs a playback device (`audio.playback`) to be sent on air",
            );
        }
    }
}

/// `value` within `lo..=hi` (NaN is not).
fn range(r: &mut Report, key: &str, value: f32, lo: f32, hi: f32, unit: &str) {
    if !(lo..=hi).contains(&value) {
        let unit = if unit.is_empty() { String::new() } else { format!(" {unit}") };
        r.key(key, format!("{value}{unit} is out of range {lo}..{hi}{unit}"));
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{parse_str, PortConfig};

    const BASE: &str = r#"
device_id = "box-1"
[channel.ops]
[port.r1]
kind = "radio"
channel = "ops"
cor = { line = "sim:cor1" }
ptt = { line = "sim:ptt1" }
[port.r1.audio]
capture = "sim:silence"
playback = "sim:null"
"#;

    fn audio(extra: &str) -> super::AudioConfig {
        let config = parse_str(&format!("{BASE}{extra}"), "t.toml").unwrap_or_else(|e| panic!("{e}"));
        match &config.port["r1"] {
            PortConfig::Radio(r) => r.audio.clone(),
            PortConfig::Desk(_) => unreachable!(),
        }
    }

    /// `line:key` of every error.
    fn errors(extra: &str) -> Vec<String> {
        match parse_str(&format!("{BASE}{extra}"), "t.toml") {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| format!("{}:{}", e.line, e.key)).collect(),
        }
    }

    #[test]
    fn defaults_are_the_pipeline_defaults() {
        use crate::codec::EncoderConfig;
        use crate::core::jitter::JitterConfig;
        use crate::dsp::{CourtesyToneConfig, RxConfig, TxConfig};
        let a = audio("");
        assert_eq!(a.rx_config(), RxConfig::default());
        assert_eq!(a.tx_config(), TxConfig::default());
        assert_eq!(a.encoder_config(), EncoderConfig::default());
        assert_eq!(a.jitter_config(), JitterConfig::default());
        assert_eq!(a.courtesy_tone_config(), CourtesyToneConfig::default());
        assert_eq!(a.cw_id_config(), None);
    }

    #[test]
    fn every_setting_reaches_its_pipeline_config() {
        let a = audio(
            "[port.r1.audio.rx]\ngain_db = 6\nhighpass = false\nde_emphasis = true\nagc = true\nagc_target_dbfs = -20\nlimiter_dbfs = -3\n\
             [port.r1.audio.tx]\ngain_db = -2.5\npre_emphasis = true\nlimiter_dbfs = -9\ncourtesy_tone = true\n\
             courtesy_tone_hz = [1200]\ncourtesy_tone_ms = 150\ncourtesy_tone_dbfs = -20\n\
             [port.r1.audio.codec]\nframe_ms = 40\nbitrate_bps = 16000\nbandwidth = \"wideband\"\ncomplexity = 0\nfec = false\ndtx = true\nexpected_loss_pct = 25\n\
             [port.r1.audio.jitter]\nmin_depth_ms = 40\nmax_depth_ms = 120\n\
             [port.r1.audio.cw_id]\ncallsign = \"N0CALL/R\"\ninterval_s = 900\nwpm = 18\ntone_hz = 700\nlevel_dbfs = -20\n",
        );
        let rx = a.rx_config();
        assert_eq!((rx.gain_db, rx.highpass_hz, rx.de_emphasis, rx.limiter_dbfs), (6.0, None, true, -3.0));
        assert_eq!(rx.agc.unwrap().target_dbfs, -20.0);
        let tx = a.tx_config();
        assert_eq!((tx.gain_db, tx.pre_emphasis, tx.limiter_dbfs), (-2.5, true, -9.0));
        let beep = a.courtesy_tone_config();
        assert!(beep.enabled);
        assert_eq!(beep.steps, vec![crate::dsp::ToneStep { freq_hz: 1200.0, ms: 150 }]);
        assert_eq!(beep.level_dbfs, -20.0);
        let enc = a.encoder_config();
        assert_eq!((enc.frame, enc.bandwidth), (crate::codec::FrameDuration::Ms40, crate::codec::Bandwidth::Wideband));
        assert_eq!(
            (enc.bitrate_bps, enc.complexity, enc.fec, enc.dtx, enc.packet_loss_pct),
            (16000, 0, false, true, 25)
        );
        let j = a.jitter_config();
        let ms = std::time::Duration::from_millis;
        assert_eq!((j.frame, j.min_depth, j.max_depth), (ms(40), ms(40), ms(120)));
        let id = a.cw_id_config().unwrap();
        assert!(id.enabled);
        assert_eq!((id.text.as_str(), id.wpm, id.tone_hz, id.level_dbfs), ("N0CALL/R", 18.0, 700.0, -20.0));
        assert_eq!(id.interval, std::time::Duration::from_secs(900));
        assert!(audio("rx.agc = false\n").rx_config().agc.is_none());
    }

    #[test]
    fn out_of_range_settings_name_their_line_and_key() {
        let bad = "rx = { gain_db = 41, agc_target_dbfs = -2, limiter_dbfs = 1 }\n\
                   tx = { gain_db = -41, courtesy_tone_hz = [50, 1000, 6000], courtesy_tone_ms = 5, courtesy_tone_dbfs = -61 }\n\
                   codec = { frame_ms = 30, bitrate_bps = 5000, complexity = 11, expected_loss_pct = 101 }\n\
                   jitter = { min_depth_ms = 200, max_depth_ms = 100 }\n\
                   cw_id = { callsign = \"N0CALL!\", interval_s = 5, wpm = 61, tone_hz = 100, level_dbfs = 1 }\n";
        assert_eq!(
            errors(bad),
            [
                "12:port.r1.audio.rx.gain_db",
                "12:port.r1.audio.rx.agc_target_dbfs",
                "12:port.r1.audio.rx.limiter_dbfs",
                "13:port.r1.audio.tx.gain_db",
                "13:port.r1.audio.tx.courtesy_tone_hz",
                "13:port.r1.audio.tx.courtesy_tone_hz",
                "13:port.r1.audio.tx.courtesy_tone_ms",
                "13:port.r1.audio.tx.courtesy_tone_dbfs",
                "14:port.r1.audio.codec.frame_ms",
                "14:port.r1.audio.codec.bitrate_bps",
                "14:port.r1.audio.codec.complexity",
                "14:port.r1.audio.codec.expected_loss_pct",
                "15:port.r1.audio.jitter.min_depth_ms",
                "16:port.r1.audio.cw_id.callsign",
                "16:port.r1.audio.cw_id.interval_s",
                "16:port.r1.audio.cw_id.wpm",
                "16:port.r1.audio.cw_id.tone_hz",
                "16:port.r1.audio.cw_id.level_dbfs",
            ]
        );
        let e = parse_str(&format!("{BASE}codec.frame_ms = 30\n"), "t.toml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.toml:12:18: port.r1.audio.codec.frame_ms: 30 ms is not an Opus frame length: use 10, 20, 40 or 60\n"
        );
    }

    #[test]
    fn wrong_types_unknown_keys_and_an_id_without_playback() {
        assert_eq!(errors("rx.agc = \"yes\"\ntx.gain = 3\n"), ["12:port.r1.audio.rx.agc", "13:port.r1.audio.tx.gain"]);
        let e = parse_str(&format!("{BASE}codec.bandwidth = \"ultra\"\n"), "t.toml").unwrap_err();
        assert_eq!(e.0[0].key, "port.r1.audio.codec.bandwidth", "{e}");
        assert!(e.to_string().contains("narrowband"), "{e}");
        let no_playback = BASE.replace("playback = \"sim:null\"\n", "");
        let e = parse_str(&format!("{no_playback}cw_id.callsign = \"N0CALL\"\n"), "t.toml").unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].key, "port.r1.audio.cw_id");
        assert_eq!(errors("cw_id.callsign = \"  \"\n"), ["12:port.r1.audio.cw_id.callsign"]);
    }
}
