//! The one TOML configuration file: schema types here, parsing and validation in [`load`].
//!
//! Every table denies unknown keys so a typo is an error, not a silently ignored setting.
//! Times are integers in milliseconds with the unit in the key name (`tx_delay_ms`), the way
//! radio people write them. Ports and channels are tables keyed by name (`[port.radio1]`),
//! so names are unique by construction and error messages can say `port.radio1.ptt`.

mod audio;
pub mod check;
mod desk;
mod fleet;
pub mod load;
mod net;
mod record;
pub mod secret;
mod spans;
mod validate;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

pub use audio::AudioConfig;
pub use check::check_command;
pub use desk::{DeskButton, DeskLed, DeskLedKind, DeskPortConfig, MonitorConfig};
pub use fleet::{MqttConfig, MAKE_FLEET_KEY};
pub use load::{load, load_file, parse_str, ConfigError, ConfigErrors};
pub use net::{
    parse_public_address, ChannelJanusConfig, HubConfig, IceServerConfig, TokenConfig, UplinkConfig, UplinkKind,
};
pub use record::RecordConfig;

use crate::core::floor::{ArbiterConfig, Priority};
use crate::core::keying::{CtcssCor, KeyingConfig, VoxConfig as CoreVoxConfig};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Stable id of this box: `[a-z0-9][a-z0-9_-]*`, at most 64 chars. Used in MQTT topics.
    pub device_id: String,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub gpio: GpioConfig,
    #[serde(default)]
    pub channel: BTreeMap<String, ChannelConfig>,
    #[serde(default)]
    pub port: BTreeMap<String, PortConfig>,
    #[serde(default)]
    pub hub: Option<HubConfig>,
    #[serde(default)]
    pub uplink: Option<UplinkConfig>,
    #[serde(default)]
    pub mqtt: Option<MqttConfig>,
    /// Recording of transmissions (`[record]`); none: nothing is recorded.
    #[serde(default)]
    pub record: Option<RecordConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// tracing filter, e.g. "info" or "roipd=debug". `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: default_log_level() }
    }
}

fn default_log_level() -> String {
    "info".into()
}

/// Parse a log filter as the config and `RUST_LOG` write it: comma-separated `level` or
/// `target=level`. A bare word that is not a level is refused (Targets alone would read it as a
/// target name and log everything from it: a typo in `level` must not pass silently).
pub fn parse_log_filter(text: &str) -> Result<tracing_subscriber::filter::Targets, String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    for directive in text.split(',').map(str::trim) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, level)| level);
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level.trim())) {
            return Err(format!(
                "`{directive}`: expected a level (trace, debug, info, warn, error, off) or target=level"
            ));
        }
    }
    text.trim().parse::<tracing_subscriber::filter::Targets>().map_err(|e| e.to_string())
}

/// Backend-wide GPIO settings.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GpioConfig {
    #[serde(default)]
    pub sim: SimGpioConfig,
    /// An LED on the box that the fleet's `identify` command blinks.
    #[serde(default)]
    pub status_led: Option<LineConfig>,
}

/// The simulated backend can mirror its lines to files in a directory so that tests and the
/// demo outside the process can drive inputs and watch outputs (`<dir>/<line>` holds 0 or 1).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SimGpioConfig {
    pub dir: Option<String>,
}

/// A talkgroup hosted or joined by this box.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Human-readable label for consoles; defaults to the table key.
    pub label: Option<String>,
    /// Floor requests while someone talks wait in a queue (true) or are denied busy (false).
    #[serde(default)]
    pub queue: bool,
    /// A talker loses the floor after this long (1000-3600000).
    #[serde(default = "default_max_talk_ms")]
    pub max_talk_ms: u64,
    /// A talker that sends no audio for this long loses the floor (500-60000).
    #[serde(default = "default_no_media_ms")]
    pub no_media_ms: u64,
    /// The channel's VideoRoom when `[uplink] kind = "janus"`.
    #[serde(default)]
    pub janus: Option<ChannelJanusConfig>,
}

fn default_max_talk_ms() -> u64 {
    ms(ArbiterConfig::default().max_talk)
}

fn default_no_media_ms() -> u64 {
    ms(ArbiterConfig::default().no_media_timeout)
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            label: None,
            queue: false,
            max_talk_ms: default_max_talk_ms(),
            no_media_ms: default_no_media_ms(),
            janus: None,
        }
    }
}

impl ChannelConfig {
    /// The floor arbiter's configuration for this channel.
    pub fn arbiter_config(&self) -> ArbiterConfig {
        ArbiterConfig {
            max_talk: Duration::from_millis(self.max_talk_ms),
            no_media_timeout: Duration::from_millis(self.no_media_ms),
            queue: self.queue,
            ..ArbiterConfig::default()
        }
    }
}

/// One GPIO line: `backend:line` plus electrical settings.
///
/// Backends: `sim:<name>`, `rppal:<bcm>`, `cdev:<chip>:<offset-or-name>`,
/// `cm108:<hidraw path>:<gpio 1-8 | cos | vol-up | vol-down | mute>`, `serial:<tty path>:<rts|dtr|cts|dsr|dcd|ri>`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    /// Stored trimmed: stray spaces must neither hide a duplicate nor break opening the line.
    #[serde(deserialize_with = "trimmed")]
    pub line: String,
    /// The line is asserted (COR open, PTT keyed, button pressed, LED lit) when it is low.
    #[serde(default)]
    pub active_low: bool,
    #[serde(default)]
    pub bias: Bias,
}

fn trimmed<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    String::deserialize(d).map(|s| s.trim().to_string())
}

#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Bias {
    /// Leave the bias as the board or kernel set it.
    #[default]
    AsIs,
    Disabled,
    PullUp,
    PullDown,
}

/// A port binds hardware to channels. `kind = "radio"` or `kind = "desk"` selects the variant.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PortConfig {
    Radio(RadioPortConfig),
    Desk(DeskPortConfig),
}

impl PortConfig {
    /// Floor priority of this port's requests.
    pub fn priority(&self) -> Priority {
        match self {
            PortConfig::Radio(r) => Priority::configured(r.priority),
            PortConfig::Desk(d) => Priority::configured(d.priority),
        }
    }

    /// Channels this port is bound to.
    pub fn channels(&self) -> Vec<&str> {
        match self {
            PortConfig::Radio(r) => vec![r.channel.as_str()],
            PortConfig::Desk(d) => d.channels.iter().map(String::as_str).collect(),
        }
    }
}

/// A two-way radio: COR/COS (GPIO, CTCSS and/or VOX) in, PTT out, audio both ways.
/// In the file: `[port.NAME]` with `kind = "radio"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RadioPortConfig {
    pub channel: String,
    /// Carrier/squelch detect: a GPIO line, a CTCSS tone decoded from the receive audio, or
    /// both. Absent means VOX (then `[port.NAME.vox]` applies).
    pub cor: Option<CorConfig>,
    pub ptt: LineConfig,
    /// Optional hardware TX-inhibit switch: while asserted the radio is never keyed.
    pub inhibit: Option<LineConfig>,
    /// Optional emergency input (the radio's or a foot/panic button): asserting it raises an
    /// emergency on the port's channel with this radio as the caller.
    pub emergency: Option<LineConfig>,
    #[serde(default)]
    pub audio: AudioConfig,
    #[serde(default)]
    pub keying: KeyingTimers,
    pub vox: Option<VoxSettings>,
    /// Full duplex (repeater-style): COR is honoured while transmitting.
    #[serde(default)]
    pub duplex: bool,
    /// Floor priority of this radio's talkers (0-254, 255 counts as 254: 255 is an emergency caller's; a higher one preempts). Default 0.
    #[serde(default)]
    pub priority: u8,
    /// DTMF commands from the radio's keypad (`[port.NAME.dtmf]`).
    pub dtmf: Option<DtmfSettings>,
    /// CTCSS tone sent under the transmit audio (one of the 50 standard tones), for radios
    /// that do not make their own.
    pub tx_ctcss: Option<f32>,
    /// Its peak level in dB relative to the transmit limiter's ceiling (`audio.tx.limiter_dbfs`),
    /// -30..-6, default -18 (about 15 % of the peak deviation, common practice).
    #[serde(default = "default_tx_ctcss_db")]
    pub tx_ctcss_db: f32,
    /// How the tone ends: `reverse_burst` (default: PTT held 150 ms after the key-up ends, the
    /// tone turned by 180°, so receivers close before the carrier drops) or `none`.
    #[serde(default)]
    pub tx_ctcss_tail: CtcssTail,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CtcssTail {
    #[default]
    ReverseBurst,
    None,
}

/// How long the reverse burst lasts (Motorola practice: 150-200 ms; the decoder here closes on
/// it within ~120 ms).
pub const REVERSE_BURST: Duration = Duration::from_millis(150);

fn default_tx_ctcss_db() -> f32 {
    -18.0
}

/// `[port.NAME.dtmf]`: DTMF decoded from the receive audio, muted from the channel, and taken
/// as commands (see [`crate::core::dtmf_command`]).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DtmfSettings {
    /// Access PIN (1-8 digits 0-9) every command but `cancel` starts with.
    pub pin: Option<String>,
    /// An incomplete command is dropped this long after its last digit (500-30000).
    pub timeout_ms: u64,
    /// `select_channel`'s list: `*101` is the first.
    pub channels: Vec<String>,
    /// Prefix -> action (`select_channel`, `set_channel NAME`, `status`, `cancel`,
    /// `emergency`). Default: `*1` select_channel, `*2` status, `##` cancel.
    pub commands: Option<BTreeMap<String, String>>,
    /// Silence digits from the channel (default true; costs 40 ms of receive delay).
    pub mute: bool,
    /// Acknowledge on the radio (default true): a rising two-tone beep for a command carried
    /// out, three low beeps for one refused, the channel's name in CW for `status`.
    pub reply: bool,
    /// Peak level of the replies, dBFS (-40..0).
    pub reply_dbfs: f32,
}

impl Default for DtmfSettings {
    fn default() -> Self {
        DtmfSettings {
            pin: None,
            timeout_ms: 3000,
            channels: Vec::new(),
            commands: None,
            mute: true,
            reply: true,
            reply_dbfs: -15.0,
        }
    }
}

impl DtmfSettings {
    /// The command table, as the matcher takes it; an action that does not parse is an error
    /// (the checker reports it).
    pub fn command_table(&self) -> Result<Vec<(String, crate::core::dtmf_command::DtmfAction)>, String> {
        use crate::core::dtmf_command::{default_commands, DtmfAction};
        match &self.commands {
            None => Ok(default_commands()),
            Some(map) => map
                .iter()
                .map(|(p, a)| {
                    DtmfAction::parse(a).map(|a| (p.to_ascii_uppercase(), a)).map_err(|e| format!("`{p}`: {e}"))
                })
                .collect(),
        }
    }

    pub fn matcher_config(&self) -> crate::core::dtmf_command::DtmfCommandConfig {
        crate::core::dtmf_command::DtmfCommandConfig {
            pin: self.pin.clone().filter(|p| !p.is_empty()),
            timeout: Duration::from_millis(self.timeout_ms),
            channels: self.channels.clone(),
            commands: self.command_table().unwrap_or_default(),
        }
    }
}

/// `cor = { line = "...", active_low, bias, ctcss = 100.0, combine = "both" | "either" }`:
/// `line` and its settings as in [`LineConfig`]; `ctcss`, one of the 50 standard tones, makes
/// the CTCSS decoder a COR source, alone or with the line (or with `[port.NAME.vox]`) as
/// `combine` says (default "both": the tone and the carrier).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(from = "RawCor")]
pub struct CorConfig {
    pub line: Option<LineConfig>,
    pub ctcss: Option<f32>,
    pub combine: CorCombine,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CorCombine {
    #[default]
    Both,
    Either,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCor {
    #[serde(default, deserialize_with = "trimmed_opt")]
    line: Option<String>,
    #[serde(default)]
    active_low: bool,
    #[serde(default)]
    bias: Bias,
    ctcss: Option<f32>,
    #[serde(default)]
    combine: CorCombine,
}

impl From<RawCor> for CorConfig {
    fn from(r: RawCor) -> CorConfig {
        CorConfig {
            line: r.line.map(|line| LineConfig { line, active_low: r.active_low, bias: r.bias }),
            ctcss: r.ctcss,
            combine: r.combine,
        }
    }
}

fn trimmed_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d).map(|s| s.map(|s| s.trim().to_string()))
}

/// Keying timers in milliseconds. Defaults follow what radio users expect (FIELD.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KeyingTimers {
    /// COR must hold a level this long before it counts (0-500).
    pub cor_debounce_ms: u64,
    /// Anti-kerchunk: key-ups shorter than this are ignored (0-1000).
    pub min_keyup_ms: u64,
    /// Squelch hang: COR may drop this long between words without closing RX (0-3000).
    pub squelch_hang_ms: u64,
    /// Flap suppression window (500-10000) and how many COR changes in it mean flapping (2-100).
    pub flap_window_ms: u64,
    pub flap_max_changes: u32,
    /// Stuck-COR guard: RX closes after this long open, until COR drops (10000-3600000).
    pub rx_timeout_ms: u64,
    /// PTT up this long before audio is sent, so the transmitter is on air (0-1000).
    pub tx_delay_ms: u64,
    /// PTT held this long after channel audio ends (0-30000).
    pub tx_hang_ms: u64,
    /// Time-out timer: PTT is never on longer than this (1000-3600000).
    pub tot_ms: u64,
    /// No-audio guard: a key-up for a talker whose channel audio stops this long ends
    /// (1000-60000, default 5000; when not set and `tx_hang_ms` is as long or longer, the hang
    /// plus 5000).
    pub no_audio_ms: u64,
}

impl Default for KeyingTimers {
    fn default() -> Self {
        let d = KeyingConfig::default();
        Self {
            cor_debounce_ms: ms(d.cor_debounce),
            min_keyup_ms: ms(d.min_keyup),
            squelch_hang_ms: ms(d.squelch_hang),
            flap_window_ms: ms(d.flap_window),
            flap_max_changes: d.flap_max_changes,
            rx_timeout_ms: ms(d.rx_timeout),
            tx_delay_ms: ms(d.tx_delay),
            tx_hang_ms: ms(d.tx_hang),
            tot_ms: ms(d.tot),
            no_audio_ms: ms(d.no_audio),
        }
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// VOX as the COR source: audio level thresholds in dBFS.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VoxSettings {
    /// Level that opens VOX (-80..0 dBFS).
    pub open_dbfs: f32,
    /// Level below which VOX closes; must be below `open_dbfs`.
    pub close_dbfs: f32,
}

impl Default for VoxSettings {
    fn default() -> Self {
        let d = CoreVoxConfig::default();
        Self { open_dbfs: d.open_dbfs, close_dbfs: d.close_dbfs }
    }
}

impl RadioPortConfig {
    /// The keying core's configuration for this port.
    pub fn keying_config(&self) -> KeyingConfig {
        let t = &self.keying;
        let d = Duration::from_millis;
        KeyingConfig {
            cor_debounce: d(t.cor_debounce_ms),
            min_keyup: d(t.min_keyup_ms),
            squelch_hang: d(t.squelch_hang_ms),
            flap_window: d(t.flap_window_ms),
            flap_max_changes: t.flap_max_changes,
            rx_timeout: d(t.rx_timeout_ms),
            tx_delay: d(t.tx_delay_ms),
            tx_hang: d(t.tx_hang_ms),
            tot: d(t.tot_ms),
            // Validation refuses a guard set no longer than the hang, so this only lengthens
            // the default guard for a long hang.
            no_audio: d(if t.no_audio_ms <= t.tx_hang_ms {
                t.tx_hang_ms + ms(KeyingConfig::default().no_audio)
            } else {
                t.no_audio_ms
            }),
            duplex: self.duplex,
            ctcss_tail: match (self.tx_ctcss, self.tx_ctcss_tail) {
                (Some(_), CtcssTail::ReverseBurst) => REVERSE_BURST,
                _ => Duration::ZERO,
            },
            vox: self.vox.as_ref().map(|v| CoreVoxConfig { open_dbfs: v.open_dbfs, close_dbfs: v.close_dbfs }),
            ctcss: self.cor.as_ref().and_then(|c| {
                c.ctcss?;
                Some(match (c.line.is_some() || self.vox.is_some(), c.combine) {
                    (false, _) => CtcssCor::Only,
                    (true, CorCombine::Both) => CtcssCor::Both,
                    (true, CorCombine::Either) => CtcssCor::Either,
                })
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_log_filter;

    #[test]
    fn filters_as_written_in_configs_and_rust_log() {
        for ok in ["info", "debug", "roipd=debug", "warn,roipd=trace", "roipd::net=debug,info"] {
            assert!(parse_log_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["loud", "roipd=shouty", "", "info,"] {
            assert!(parse_log_filter(bad).is_err(), "{bad}");
        }
    }
}
