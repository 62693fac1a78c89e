//! The fleet protocol, sans-IO: topic names, JSON payloads, command parsing and validation,
//! replies and config redaction. No MQTT client, no clock, no files: the driver in
//! [`super::client`] feeds bytes and timestamps in and publishes what comes out.
//!
//! Everything a remote operator can send is parsed here into a typed [`Command`] or a
//! [`CommandError`]; the daemon only ever sees commands that passed every check.
//! `docs/mqtt.md` documents every topic and payload with examples.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest command payload accepted. Larger payloads get a `payload_too_large` reply.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;
/// Port, channel and stream names in commands and topics.
pub const MAX_NAME_BYTES: usize = 64;
/// `request_id` strings are echoed back, so they are bounded too.
pub const MAX_REQUEST_ID_BYTES: usize = 128;
/// MQTT 5 response topics and correlation data longer than this are not honoured.
pub const MAX_RESPONSE_TOPIC_BYTES: usize = 256;
pub const MAX_CORRELATION_BYTES: usize = 1024;

pub const VOLUME_DB: (f64, f64) = (-60.0, 12.0);
pub const REMOTE_PTT_MAX_S: (i64, i64) = (1, 300);
pub const IDENTIFY_S: (i64, i64) = (1, 600);

/// Every command name, as it appears in `roipd/<device>/cmd/<name>`.
pub const COMMAND_NAMES: [&str; 13] = [
    "set_channel",
    "listen",
    "volume",
    "tx_inhibit",
    "remote_ptt",
    "identify",
    "reload_config",
    "get_config",
    "restart",
    "desk",
    "emergency",
    "ack_emergency",
    "replay_last",
];

// ---------------------------------------------------------------------------------------------
// Topics

/// The topic tree of one device: everything lives under `roipd/<device>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    base: String,
}

impl Topics {
    /// `device` must already be a valid device id (the config checks it: `[a-z0-9][a-z0-9_-]*`).
    pub fn new(device: &str) -> Self {
        Self { base: format!("roipd/{device}") }
    }
    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }
    pub fn state(&self, port: &str) -> String {
        format!("{}/state/{port}", self.base)
    }
    pub fn event(&self) -> String {
        format!("{}/event", self.base)
    }
    /// Retained: the emergency state of a channel this box hosts.
    pub fn emergency(&self, channel: &str) -> String {
        format!("{}/emergency/{channel}", self.base)
    }
    pub fn metrics(&self) -> String {
        format!("{}/metrics", self.base)
    }
    pub fn reply(&self) -> String {
        format!("{}/reply", self.base)
    }
    /// The subscription for every command: `roipd/<device>/cmd/+`.
    pub fn command_filter(&self) -> String {
        format!("{}/cmd/+", self.base)
    }
    /// The command name if `topic` is one of this device's command topics. An empty name
    /// (`cmd/`, which `cmd/+` matches) is returned too, so that it gets its error reply.
    pub fn command_name<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let name = topic.strip_prefix(self.base.as_str())?.strip_prefix("/cmd/")?;
        (!name.contains('/')).then_some(name)
    }

    /// Where a reply goes: the MQTT 5 response topic when the request gave a usable one, else
    /// the device's reply topic. Not usable: empty, oversized, with wildcards or NUL, starting
    /// with `$`, or any box's command topic (`roipd/<device>/cmd/...`): a reply published there
    /// would be read as a command, by this box or another.
    pub fn reply_topic(&self, response_topic: Option<&str>) -> String {
        match response_topic {
            Some(t)
                if !t.is_empty()
                    && t.len() <= MAX_RESPONSE_TOPIC_BYTES
                    && !t.contains(['+', '#', '\0'])
                    && !t.starts_with('$')
                    && !is_command_topic(t) =>
            {
                t.to_string()
            }
            _ => self.reply(),
        }
    }
}

/// `roipd/<anything>/cmd/<anything>`: a command topic of some box.
fn is_command_topic(topic: &str) -> bool {
    let mut levels = topic.split('/');
    levels.next() == Some("roipd") && levels.next().is_some() && levels.next() == Some("cmd")
}

/// Names that end up in topics or are echoed in replies: 1-64 bytes, no whitespace, no control
/// characters and none of MQTT's `/ + #` (a `/` would change the topic level).
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_BYTES).contains(&name.len())
        && name.chars().all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, '/' | '+' | '#'))
}

// ---------------------------------------------------------------------------------------------
// Published documents

/// Retained on `roipd/<device>/status`. The last will is the same document with
/// `online: false` (see [`Status::offline`]), so the topic only ever carries this schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub online: bool,
    pub device: String,
    pub version: String,
    /// Seconds since the daemon started, as of this publication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_s: Option<u64>,
    /// RFC 3339 UTC time the daemon started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Non-loopback IP addresses of the box.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Hash of the loaded config file ([`config_hash`]), to spot boxes running stale configs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// A Janus fleet's floor host: its own Janus link (moderation, the talkers' audio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<UplinkStatus>,
    /// A Janus fleet's floor host: the floor service it offers its edges over MQTT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor_host: Option<FloorHostStatus>,
    /// Why the box is offline: `connection_lost` (the last will) or `shutdown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Boxes with `[record]`: whether recording works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingStatus>,
}

/// The recorder's state in the retained status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingStatus {
    /// `ok`, `disk_full` or `io_error`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Chunks of recordings dropped since start because the writer fell behind or failed.
    #[serde(default)]
    pub dropped: u64,
}

impl Status {
    pub fn online(device: &str, version: &str) -> Self {
        Self {
            online: true,
            device: device.into(),
            version: version.into(),
            uptime_s: None,
            started_at: None,
            addresses: Vec::new(),
            config_hash: None,
            uplink: None,
            floor_host: None,
            reason: None,
            recording: None,
        }
    }

    /// The offline document: the last will (`connection_lost`) and the graceful goodbye
    /// (`shutdown`). It keeps `started_at` so a restart is visible as a new value.
    pub fn offline(&self, reason: &str) -> Self {
        Self {
            online: false,
            uptime_s: None,
            addresses: Vec::new(),
            uplink: None,
            floor_host: None,
            reason: Some(reason.into()),
            ..self.clone()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UplinkStatus {
    pub state: UplinkState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The floor service of a Janus fleet's floor host, in its status (docs/mqtt.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloorHostStatus {
    /// `up`: online on the broker, edges can join; `down`: the broker connection is lost (every
    /// edge has left; they join again when it is back); `connecting`: not yet online.
    pub state: UplinkState,
    /// Edges joined.
    pub edges: usize,
    /// Whether no-media is judged: false while the host's own Janus link is down (its edges'
    /// audio cannot be seen); once it is back, the talker has a whole no-media timeout of grace.
    pub media_watch: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UplinkState {
    /// No uplink configured (standalone box).
    Disabled,
    Connecting,
    Up,
    Down,
    /// The far end is not what the config asks for (a Janus room without its PIN or secret):
    /// nothing is sent there; retried.
    Refused,
}

/// Retained on `roipd/<device>/state/<port>`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PortState {
    pub channel: String,
    pub rx_active: bool,
    pub tx_keyed: bool,
    /// Time-out timer fired: no TX until the channel goes idle.
    pub locked_out: bool,
    /// TX inhibited (hardware switch or the `tx_inhibit` command).
    pub inhibited: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_level_dbfs: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_level_dbfs: Option<f32>,
    /// Seconds left before the time-out timer fires, while keyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tot_remaining_s: Option<f32>,
    /// The CTCSS tone the port's decoder hears (any of the 50, not only its own), Hz, and its
    /// SNR in whole dB; only on ports with `cor = { ctcss = ... }`, while a tone is heard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctcss_hz: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctcss_snr_db: Option<f32>,
}

/// Published (not retained) on `roipd/<device>/event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// RFC 3339 UTC with milliseconds; filled in by the fleet client when left empty.
    #[serde(default)]
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Why it happened, e.g. for `ptt_off`: `hang_end`, `tot`, `inhibit`, `remote`, `shutdown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Free-form human text (device names, error messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `recorded`: the recording's id (its file is `<id>.opus` in `[record] dir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `recorded`: who talked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub talker: Option<String>,
    /// `recorded`: RFC 3339 UTC of the transmission's first audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// `recorded`: length of the recording.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// `dtmf`: the digits entered, the access PIN shown as `x`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digits: Option<String>,
}

impl Event {
    pub fn new(kind: EventKind) -> Self {
        Self {
            kind,
            time: String::new(),
            port: None,
            channel: None,
            reason: None,
            detail: None,
            id: None,
            talker: None,
            start: None,
            duration_ms: None,
            digits: None,
        }
    }
    pub fn digits(mut self, digits: impl Into<String>) -> Self {
        self.digits = Some(digits.into());
        self
    }
    pub fn port(mut self, port: impl Into<String>) -> Self {
        self.port = Some(port.into());
        self
    }
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = Some(channel.into());
        self
    }
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    CorOpen,
    CorClose,
    PttOn,
    /// Carries a `reason`.
    PttOff,
    TotFired,
    FloorDenied,
    FloorRevoked,
    LinkUp,
    LinkDown,
    Xrun,
    DeviceLost,
    DeviceFound,
    /// A floor message or command was dropped: unsigned, forged or replayed (rate-limited).
    AuthFailed,
    /// A Janus room lacks the protection the config asks for (`reason`: `no_pin`,
    /// `pin_refused`, `no_secret`, `secret_refused`); nothing is published into it.
    RoomRefused,
    /// The uplink hub's TLS certificate failed verification (a wrong pinned fingerprint, an
    /// unknown CA); `detail` says which certificate it presented. Nothing is sent to it.
    HubUntrusted,
    /// The floor host could not mute or unmute a publisher in Janus (wrong secret, ...).
    ModerationFailed,
    /// Someone else muted the floor holder (or unmuted another publisher) in Janus; the floor
    /// host undid it (rate-limited).
    ModerationOverridden,
    /// A transmission was recorded: `id`, `channel`, `talker`, `start`, `duration_ms`, and
    /// `reason` (how it ended: `released`, `preempted`, `tot`, `no_media`, `link_lost`, `shutdown`).
    Recorded,
    /// Recording stopped: `reason` `disk_full` or `io_error`, `detail` the error. The voice
    /// path is not affected; recording resumes by itself (`record_resumed`).
    RecordFailed,
    /// Recording works again after `record_failed`.
    RecordResumed,
    /// A DTMF command from a radio's keypad ended: `port`, `channel` (the port's, after the
    /// command), `digits` (PIN masked), `reason` (`accepted`, `status`, `cancelled`,
    /// `wrong_pin`, `unknown`, `no_such_channel`, `timeout`, `refused`, `busy`), `detail` (what was done or why not).
    Dtmf,
    /// An emergency was raised on `channel` (`reason`: the source kind, `radio`, `dtmf`,
    /// `console`, `desk`, `fleet`; `detail`: who; `port` when a port raised it).
    Emergency,
    /// The emergency on `channel` was acknowledged (`detail`: by whom).
    EmergencyCleared,
}

/// Retained on `roipd/<device>/emergency/<channel>`: published when an emergency is raised on a
/// channel this box hosts and when it is acknowledged (`active: false`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EmergencyState {
    pub channel: String,
    pub active: bool,
    /// Who raised it (`radio1`, `radio1@edge-hilltop`, `console@dispatch`, `fleet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `radio`, `dtmf`, `console`, `desk`, `fleet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_kind: Option<String>,
    /// RFC 3339 UTC: when it was raised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Cleared: who acknowledged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_by: Option<String>,
    /// Cleared: when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_at: Option<String>,
}

/// What the daemon knows for a metrics publication; the fleet client adds the system part.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DaemonMetrics {
    /// Per media stream, keyed by a stable name (e.g. the channel).
    #[serde(default)]
    pub streams: BTreeMap<String, StreamMetrics>,
    /// ALSA xruns since start.
    #[serde(default)]
    pub xruns: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StreamMetrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_pct: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate_bps: Option<u64>,
}

/// Published (not retained, QoS 1, so it doubles as a heartbeat) on `roipd/<device>/metrics`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Metrics {
    pub time: String,
    pub uptime_s: u64,
    #[serde(flatten)]
    pub daemon: DaemonMetrics,
    /// Process CPU use since the previous sample, in % of one core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_pct: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_rss_mb: Option<f64>,
    /// Absent where the board has no thermal zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soc_temp_c: Option<f64>,
    /// Outbound MQTT messages dropped (queue full or too old) since start.
    pub mqtt_dropped: u64,
}

// ---------------------------------------------------------------------------------------------
// Commands

/// A validated command. Names are checked for shape only; the daemon says whether they exist.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Rebind a radio port to another channel.
    SetChannel { port: String, channel: String },
    /// Start or stop monitoring a channel on this box's speaker.
    Listen { channel: String, on: bool },
    /// Monitor volume of a channel, in dB (-60..=+12).
    Volume { channel: String, db: f64 },
    /// Inhibit TX on a port: while on, the radio is never keyed (unkeys it now if keyed).
    TxInhibit { port: String, on: bool },
    /// Key or release a radio from the fleet console.
    RemotePtt { port: String, action: PttAction },
    /// Blink/beep the box so a technician can find it.
    Identify { duration: Duration },
    /// Re-read the config file; the daemon validates it before applying anything.
    ReloadConfig,
    /// Return the running config with secrets redacted ([`redact`]).
    GetConfig,
    /// Restart the daemon (reply first, then restart).
    Restart,
    /// An action on a desk port, the same object a console's `desk` command carries. Only its
    /// shape (an object) is checked here: the desk validates it against its channels.
    Desk { port: String, action: Value },
    /// Play the last recorded transmission of a desk's selected channel (or `channel`) on its
    /// speaker: the desk action `replay_last`. Keys nothing.
    ReplayLast { port: String, channel: Option<String> },
    /// Raise an emergency on a channel, or on a port's channel with the port as its caller
    /// (exactly one of them).
    Emergency { target: EmergencyTarget },
    /// Acknowledge the emergency on a channel.
    AckEmergency { channel: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmergencyTarget {
    Channel(String),
    Port(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PttAction {
    /// Key for at most this long (the keying core's TOT still applies if shorter).
    Key { max_duration: Duration },
    /// Unkey. Never needs a duration: releasing must always be possible.
    Release,
}

impl Command {
    /// The topic name it came in on.
    pub fn name(&self) -> &'static str {
        match self {
            Command::SetChannel { .. } => "set_channel",
            Command::Listen { .. } => "listen",
            Command::Volume { .. } => "volume",
            Command::TxInhibit { .. } => "tx_inhibit",
            Command::RemotePtt { .. } => "remote_ptt",
            Command::Identify { .. } => "identify",
            Command::ReloadConfig => "reload_config",
            Command::GetConfig => "get_config",
            Command::Restart => "restart",
            Command::Desk { .. } => "desk",
            Command::Emergency { .. } => "emergency",
            Command::AckEmergency { .. } => "ack_emergency",
            Command::ReplayLast { .. } => "replay_last",
        }
    }
}

/// Stable, machine-readable error codes in replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    // Rejected by the protocol layer; never reaches the daemon.
    PayloadTooLarge,
    BadJson,
    UnknownCommand,
    UnknownField,
    InvalidArgs,
    OutOfRange,
    /// Commands must not be retained: a retained `remote_ptt` would fire again on every reconnect.
    RetainedCommand,
    /// The box has a fleet key and the command is unsigned, forged, stale or replayed.
    Unauthorized,
    /// The daemon's command queue is full.
    Busy,
    // Returned by the daemon.
    NotFound,
    Rejected,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::UnknownField => "unknown_field",
            ErrorCode::InvalidArgs => "invalid_args",
            ErrorCode::OutOfRange => "out_of_range",
            ErrorCode::RetainedCommand => "retained_command",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Busy => "busy",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Rejected => "rejected",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// A failed command: `{"code": "...", "message": "..."}` in the reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandError {
    pub code: ErrorCode,
    pub message: String,
}

impl CommandError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
    /// No such port or channel.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    /// Valid but refused in the current state (e.g. keying a locked-out port, config invalid).
    pub fn rejected(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Rejected, message)
    }
    /// The feature is not available on this box (no speaker, no uplink).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for CommandError {}

/// A parsed request: the command plus the caller's `request_id`, echoed in the reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub command: Command,
    pub request_id: Option<Value>,
}

/// A request that failed parsing, with whatever `request_id` could still be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub error: CommandError,
    pub request_id: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetChannelArgs {
    port: String,
    channel: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenArgs {
    channel: String,
    on: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeArgs {
    channel: String,
    db: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmergencyArgs {
    channel: Option<String>,
    port: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckEmergencyArgs {
    channel: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TxInhibitArgs {
    port: String,
    on: bool,
}

// Integers are read as i64 so that -5 or 100000 is `out_of_range`, not a type error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemotePttArgs {
    port: String,
    on: bool,
    #[serde(default)]
    max_duration_s: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentifyArgs {
    seconds: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeskArgs {
    port: String,
    action: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayLastArgs {
    port: String,
    channel: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// Parse the payload that arrived on `roipd/<device>/cmd/<name>`.
///
/// An empty (or all-whitespace) payload counts as `{}` only for `get_config`, the one command
/// that changes nothing: elsewhere it is `bad_json`, because clearing a retained message
/// (`mosquitto_pub -r -n`) publishes exactly that and must not restart the box. A retained
/// payload of any kind is `retained_command`. Duplicate keys, at any depth, are `bad_json`
/// (`"on":false,...,"on":true` must not key). The optional `request_id` (a string of at most
/// 128 bytes, or an integer) may be present in every command.
pub fn parse_request(name: &str, payload: &[u8], retained: bool) -> Result<Request, Rejection> {
    let reject = |code, message: String, request_id| Rejection { error: CommandError::new(code, message), request_id };
    if payload.len() > MAX_COMMAND_BYTES {
        let msg = format!("payload is {} bytes, the limit is {MAX_COMMAND_BYTES}", payload.len());
        return Err(reject(ErrorCode::PayloadTooLarge, msg, None));
    }
    const RETAINED: &str =
        "commands must not be published with the retain flag; clear it with an empty retained message";
    let mut args = if payload.iter().all(u8::is_ascii_whitespace) {
        if retained {
            return Err(reject(ErrorCode::RetainedCommand, RETAINED.into(), None));
        }
        if name != "get_config" && COMMAND_NAMES.contains(&name) {
            let msg = format!("an empty payload does not run `{name}`: send a JSON object (at least `{{}}`)");
            return Err(reject(ErrorCode::BadJson, msg, None));
        }
        Map::new()
    } else {
        match parse_strict(payload) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(reject(ErrorCode::BadJson, "the payload must be a JSON object".into(), None)),
            Err(e) => return Err(reject(ErrorCode::BadJson, format!("not valid JSON: {e}"), None)),
        }
    };
    let request_id = match args.remove("request_id") {
        None => None,
        Some(id) if valid_request_id(&id) => Some(id),
        Some(_) => {
            let msg = format!("request_id must be a string of 1-{MAX_REQUEST_ID_BYTES} bytes or an integer");
            return Err(reject(ErrorCode::InvalidArgs, msg, None));
        }
    };
    if retained {
        return Err(reject(ErrorCode::RetainedCommand, RETAINED.into(), request_id));
    }
    match parse_command(name, args) {
        Ok(command) => Ok(Request { command, request_id }),
        Err(error) => Err(Rejection { error, request_id }),
    }
}

/// JSON like `serde_json::from_slice::<Value>`, but an object with the same key twice is an
/// error instead of "the last one wins". serde_json's recursion limit still applies.
fn parse_strict(payload: &[u8]) -> Result<Value, serde_json::Error> {
    use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, SeqAccess, Visitor};

    struct Strict;

    impl<'de> DeserializeSeed<'de> for Strict {
        type Value = Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Strict {
        type Value = Value;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_string()))
        }
        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut items = Vec::new();
            while let Some(v) = seq.next_element_seed(Strict)? {
                items.push(v);
            }
            Ok(Value::Array(items))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut out = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.contains_key(&key) {
                    let shown: String = key.chars().take(MAX_NAME_BYTES).collect();
                    return Err(A::Error::custom(format!("duplicate key `{shown}`")));
                }
                let value = map.next_value_seed(Strict)?;
                out.insert(key, value);
            }
            Ok(Value::Object(out))
        }
    }

    let mut de = serde_json::Deserializer::from_slice(payload);
    let value = Strict.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// The `request_id` of a command that was refused before parsing (an authentication failure),
/// so its reply can still be matched: read from the command, or from a signed envelope's `cmd`.
pub fn peek_request_id(payload: &[u8]) -> Option<Value> {
    let value: Value = serde_json::from_slice(payload).ok()?;
    let value = match value.get("cmd").and_then(Value::as_str) {
        Some(inner) => serde_json::from_str(inner).ok()?,
        None => value,
    };
    value.get("request_id").filter(|id| valid_request_id(id)).cloned()
}

fn valid_request_id(id: &Value) -> bool {
    match id {
        Value::String(s) => (1..=MAX_REQUEST_ID_BYTES).contains(&s.len()),
        Value::Number(n) => n.is_i64() || n.is_u64(),
        _ => false,
    }
}

fn parse_command(name: &str, args: Map<String, Value>) -> Result<Command, CommandError> {
    let args = Value::Object(args);
    match name {
        "set_channel" => {
            let a: SetChannelArgs = from_args(args)?;
            Ok(Command::SetChannel { port: name_arg("port", a.port)?, channel: name_arg("channel", a.channel)? })
        }
        "listen" => {
            let a: ListenArgs = from_args(args)?;
            Ok(Command::Listen { channel: name_arg("channel", a.channel)?, on: a.on })
        }
        "volume" => {
            let a: VolumeArgs = from_args(args)?;
            let (lo, hi) = VOLUME_DB;
            if !(lo..=hi).contains(&a.db) {
                return Err(out_of_range("db", a.db, lo, hi, " dB"));
            }
            Ok(Command::Volume { channel: name_arg("channel", a.channel)?, db: a.db })
        }
        "tx_inhibit" => {
            let a: TxInhibitArgs = from_args(args)?;
            Ok(Command::TxInhibit { port: name_arg("port", a.port)?, on: a.on })
        }
        "remote_ptt" => {
            let a: RemotePttArgs = from_args(args)?;
            let port = name_arg("port", a.port)?;
            let (lo, hi) = REMOTE_PTT_MAX_S;
            if let Some(s) = a.max_duration_s.filter(|s| !(lo..=hi).contains(s)) {
                return Err(out_of_range("max_duration_s", s, lo, hi, " s"));
            }
            let action = match (a.on, a.max_duration_s) {
                (true, Some(s)) => PttAction::Key { max_duration: Duration::from_secs(s as u64) },
                (true, None) => {
                    let msg = format!("missing field `max_duration_s`: keying needs a limit ({lo}-{hi} s)");
                    return Err(CommandError::new(ErrorCode::InvalidArgs, msg));
                }
                (false, _) => PttAction::Release,
            };
            Ok(Command::RemotePtt { port, action })
        }
        "identify" => {
            let a: IdentifyArgs = from_args(args)?;
            let (lo, hi) = IDENTIFY_S;
            if !(lo..=hi).contains(&a.seconds) {
                return Err(out_of_range("seconds", a.seconds, lo, hi, " s"));
            }
            Ok(Command::Identify { duration: Duration::from_secs(a.seconds as u64) })
        }
        "desk" => {
            let a: DeskArgs = from_args(args)?;
            Ok(Command::Desk { port: name_arg("port", a.port)?, action: Value::Object(a.action) })
        }
        "emergency" => {
            let a: EmergencyArgs = from_args(args)?;
            let target = match (a.channel, a.port) {
                (Some(c), None) => EmergencyTarget::Channel(name_arg("channel", c)?),
                (None, Some(p)) => EmergencyTarget::Port(name_arg("port", p)?),
                _ => return Err(CommandError::new(
                    ErrorCode::InvalidArgs,
                    "give exactly one of `channel` (an alert) or `port` (an alert on its channel, the port its caller)",
                )),
            };
            Ok(Command::Emergency { target })
        }
        "ack_emergency" => {
            let a: AckEmergencyArgs = from_args(args)?;
            Ok(Command::AckEmergency { channel: name_arg("channel", a.channel)? })
        }
        "replay_last" => {
            let a: ReplayLastArgs = from_args(args)?;
            let channel = a.channel.map(|c| name_arg("channel", c)).transpose()?;
            Ok(Command::ReplayLast { port: name_arg("port", a.port)?, channel })
        }
        "reload_config" => from_args::<NoArgs>(args).map(|_| Command::ReloadConfig),
        "get_config" => from_args::<NoArgs>(args).map(|_| Command::GetConfig),
        "restart" => from_args::<NoArgs>(args).map(|_| Command::Restart),
        _ => {
            let shown: String = name.chars().take(MAX_NAME_BYTES).collect();
            let msg = format!("unknown command `{shown}`; known: {}", COMMAND_NAMES.join(", "));
            Err(CommandError::new(ErrorCode::UnknownCommand, msg))
        }
    }
}

fn from_args<T: serde::de::DeserializeOwned>(args: Value) -> Result<T, CommandError> {
    serde_json::from_value(args).map_err(|e| {
        let message = e.to_string();
        let code = if message.starts_with("unknown field") { ErrorCode::UnknownField } else { ErrorCode::InvalidArgs };
        CommandError::new(code, message)
    })
}

fn name_arg(field: &str, value: String) -> Result<String, CommandError> {
    if valid_name(&value) {
        Ok(value)
    } else {
        let msg =
            format!("`{field}` must be 1-{MAX_NAME_BYTES} bytes without spaces, control characters, `/`, `+` or `#`");
        Err(CommandError::new(ErrorCode::InvalidArgs, msg))
    }
}

fn out_of_range<T: fmt::Display>(field: &str, value: T, lo: T, hi: T, unit: &str) -> CommandError {
    CommandError::new(ErrorCode::OutOfRange, format!("`{field}` is {value}{unit}, allowed {lo}..{hi}{unit}"))
}

// ---------------------------------------------------------------------------------------------
// Replies

/// Published on the reply topic (or the request's MQTT 5 response topic).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Value>,
    /// The command name from the topic, when it was a known one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CommandError>,
}

impl Reply {
    pub fn new(command: Option<&str>, request_id: Option<Value>, result: Result<Value, CommandError>) -> Self {
        let command = command.filter(|c| COMMAND_NAMES.contains(c)).map(str::to_string);
        match result {
            Ok(result) => Self { ok: true, request_id, command, result: Some(result), error: None },
            Err(error) => Self { ok: false, request_id, command, result: None, error: Some(error) },
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// Serialize a document we built ourselves. Our types always serialize; the fallback keeps
/// that a non-panicking claim.
pub fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|e| format!(r#"{{"error":"serialize: {e}"}}"#).into_bytes())
}

// ---------------------------------------------------------------------------------------------
// Redaction, hashing, time

/// Key-name words that mark a secret (`password_file`, `client_key_file`, `token`, `secret`).
const SECRET_WORDS: [&str; 8] = ["password", "passwd", "secret", "token", "key", "credential", "credentials", "pin"];

/// Redact a config rendered as JSON for `get_config`: scalar values under keys with a secret
/// word (split on `_`, `-`, `.`) become `"***"`; tables and lists under such keys are walked
/// so that their non-secret parts stay visible. `user:pass@` in URLs is redacted too.
/// `keying` or `min_keyup_ms` are not secrets: whole words are matched, not substrings.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if is_secret_key(key) && !matches!(v, Value::Object(_) | Value::Array(_) | Value::Null) {
                    *v = Value::String("***".into());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(s) => {
            if let Some(clean) = redact_url_userinfo(s) {
                *s = clean;
            }
        }
        _ => {}
    }
}

fn is_secret_key(key: &str) -> bool {
    key.split(['_', '-', '.']).any(|word| SECRET_WORDS.iter().any(|s| word.eq_ignore_ascii_case(s)))
}

/// `mqtts://user:pw@host` → `mqtts://***@host`; None when there is nothing to hide.
fn redact_url_userinfo(s: &str) -> Option<String> {
    let (scheme, rest) = s.split_once("://")?;
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some(format!("{scheme}://***{}", &rest[at..]))
}

/// FNV-1a 64 of the config file's bytes, as 16 hex digits: enough to tell configs apart, not
/// a security measure.
pub fn config_hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// RFC 3339 UTC with milliseconds from Unix milliseconds: `2026-11-21T02:27:35.123Z`.
pub fn rfc3339_millis(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, unix_ms % 1000)
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(name: &str, payload: &str) -> Result<Request, Rejection> {
        parse_request(name, payload.as_bytes(), false)
    }

    fn ok(name: &str, payload: &str) -> Command {
        parse(name, payload).unwrap_or_else(|e| panic!("{name} {payload}: {e:?}")).command
    }

    fn code(name: &str, payload: &str) -> ErrorCode {
        parse(name, payload).expect_err(payload).error.code
    }

    #[test]
    fn topics() {
        let t = Topics::new("gw-1");
        assert_eq!(t.status(), "roipd/gw-1/status");
        assert_eq!(t.state("radio1"), "roipd/gw-1/state/radio1");
        assert_eq!(t.event(), "roipd/gw-1/event");
        assert_eq!(t.metrics(), "roipd/gw-1/metrics");
        assert_eq!(t.reply(), "roipd/gw-1/reply");
        assert_eq!(t.command_filter(), "roipd/gw-1/cmd/+");
        assert_eq!(t.command_name("roipd/gw-1/cmd/identify"), Some("identify"));
        // `cmd/+` matches an empty level: it gets its (unknown_command) reply.
        assert_eq!(t.command_name("roipd/gw-1/cmd/"), Some(""));
        assert_eq!(t.command_name("roipd/gw-1/cmd/a/b"), None);
        assert_eq!(t.command_name("roipd/gw-2/cmd/identify"), None);
        assert_eq!(t.command_name("roipd/gw-1x/cmd/identify"), None);
    }

    #[test]
    fn every_command_parses() {
        assert_eq!(
            ok("set_channel", r#"{"port":"radio1","channel":"ops"}"#),
            Command::SetChannel { port: "radio1".into(), channel: "ops".into() }
        );
        assert_eq!(ok("listen", r#"{"channel":"ops","on":true}"#), Command::Listen { channel: "ops".into(), on: true });
        assert_eq!(ok("volume", r#"{"channel":"ops","db":-6.5}"#), Command::Volume { channel: "ops".into(), db: -6.5 });
        assert_eq!(ok("volume", r#"{"channel":"ops","db":12}"#), Command::Volume { channel: "ops".into(), db: 12.0 });
        assert_eq!(ok("volume", r#"{"channel":"ops","db":-60}"#), Command::Volume { channel: "ops".into(), db: -60.0 });
        assert_eq!(
            ok("tx_inhibit", r#"{"port":"r1","on":false}"#),
            Command::TxInhibit { port: "r1".into(), on: false }
        );
        assert_eq!(
            ok("remote_ptt", r#"{"port":"r1","on":true,"max_duration_s":30}"#),
            Command::RemotePtt { port: "r1".into(), action: PttAction::Key { max_duration: Duration::from_secs(30) } }
        );
        assert_eq!(
            ok("remote_ptt", r#"{"port":"r1","on":false}"#),
            Command::RemotePtt { port: "r1".into(), action: PttAction::Release }
        );
        assert_eq!(
            ok("remote_ptt", r#"{"port":"r1","on":false,"max_duration_s":5}"#),
            Command::RemotePtt { port: "r1".into(), action: PttAction::Release }
        );
        assert_eq!(ok("identify", r#"{"seconds":600}"#), Command::Identify { duration: Duration::from_secs(600) });
        assert_eq!(ok("reload_config", "{}"), Command::ReloadConfig);
        assert_eq!(ok("get_config", ""), Command::GetConfig);
        assert_eq!(ok("restart", "{}"), Command::Restart);
        assert_eq!(
            ok("desk", r#"{"port":"console","action":{"action":"ptt","channel":"ops","on":true}}"#),
            Command::Desk { port: "console".into(), action: json!({"action": "ptt", "channel": "ops", "on": true}) }
        );
        assert_eq!(ok("replay_last", r#"{"port":"desk"}"#), Command::ReplayLast { port: "desk".into(), channel: None });
        assert_eq!(
            ok("replay_last", r#"{"port":"desk","channel":"ops"}"#),
            Command::ReplayLast { port: "desk".into(), channel: Some("ops".into()) }
        );
        assert!(parse("replay_last", r#"{"port":"desk","on":true}"#).is_err(), "unknown field");
        assert!(parse("replay_last", r#"{}"#).is_err(), "no port");
        for name in COMMAND_NAMES {
            let cmd = parse(name, "").or_else(|_| parse(name, &valid_args(name))).unwrap();
            assert_eq!(cmd.command.name(), name);
        }
        assert_eq!(
            ok("emergency", r#"{"port":"radio1"}"#),
            Command::Emergency { target: EmergencyTarget::Port("radio1".into()) }
        );
        assert_eq!(
            ok("emergency", r#"{"channel":"ops"}"#),
            Command::Emergency { target: EmergencyTarget::Channel("ops".into()) }
        );
        assert_eq!(ok("ack_emergency", r#"{"channel":"ops"}"#), Command::AckEmergency { channel: "ops".into() });
        for bad in [r#"{}"#, r#"{"port":"a","channel":"b"}"#, r#"{"channel":"a/b"}"#, r#"{"channel":1}"#] {
            assert_eq!(code("emergency", bad), ErrorCode::InvalidArgs, "{bad}");
        }
        assert_eq!(code("ack_emergency", "{}"), ErrorCode::InvalidArgs);
    }

    fn valid_args(name: &str) -> String {
        match name {
            "set_channel" => r#"{"port":"p","channel":"c"}"#,
            "listen" => r#"{"channel":"c","on":true}"#,
            "volume" => r#"{"channel":"c","db":0}"#,
            "tx_inhibit" => r#"{"port":"p","on":true}"#,
            "remote_ptt" => r#"{"port":"p","on":true,"max_duration_s":10}"#,
            "identify" => r#"{"seconds":5}"#,
            "desk" => r#"{"port":"p","action":{"action":"select","channel":"c"}}"#,
            "emergency" => r#"{"channel":"c"}"#,
            "ack_emergency" => r#"{"channel":"c"}"#,
            "replay_last" => r#"{"port":"p"}"#,
            _ => "{}",
        }
        .into()
    }

    #[test]
    fn request_id_is_echoed_as_given() {
        let r = parse("identify", r#"{"seconds":5,"request_id":"abc-1"}"#).unwrap();
        assert_eq!(r.request_id, Some(json!("abc-1")));
        let r = parse("restart", r#"{"request_id":42}"#).unwrap();
        assert_eq!(r.request_id, Some(json!(42)));
        // Errors keep the id when it could be read.
        let e = parse("identify", r#"{"seconds":0,"request_id":"x"}"#).unwrap_err();
        assert_eq!((e.error.code, e.request_id), (ErrorCode::OutOfRange, Some(json!("x"))));
        let e = parse("nope", r#"{"request_id":"y"}"#).unwrap_err();
        assert_eq!((e.error.code, e.request_id), (ErrorCode::UnknownCommand, Some(json!("y"))));
    }

    #[test]
    fn bad_request_ids() {
        for id in [r#""""#, "1.5", "true", "null", "[1]", "{}", &format!("\"{}\"", "x".repeat(129))] {
            let e = parse("restart", &format!(r#"{{"request_id":{id}}}"#)).unwrap_err();
            assert_eq!((e.error.code, e.request_id), (ErrorCode::InvalidArgs, None), "{id}");
        }
    }

    #[test]
    fn every_error_class() {
        // Size: checked before parsing.
        let big = format!(r#"{{"seconds":5,"pad":"{}"}}"#, "x".repeat(MAX_COMMAND_BYTES));
        assert_eq!(code("identify", &big), ErrorCode::PayloadTooLarge);
        // Not JSON, or not an object.
        for bad in ["{", "seconds=5", "\u{0}", "[1,2]", "5", "\"str\"", "null", r#"{"seconds":5}}"#] {
            assert_eq!(code("identify", bad), ErrorCode::BadJson, "{bad}");
        }
        assert_eq!(parse_request("identify", &[0xff, 0xfe], false).unwrap_err().error.code, ErrorCode::BadJson);
        // Unknown command names, including odd ones.
        for name in ["reboot", "SET_CHANNEL", "set_channel ", "", "💥"] {
            assert_eq!(code(name, "{}"), ErrorCode::UnknownCommand, "{name}");
        }
        // Unknown fields, in every command.
        for name in COMMAND_NAMES {
            let mut args: Map<String, Value> = serde_json::from_str(&valid_args(name)).unwrap();
            args.insert("extra".into(), json!(1));
            assert_eq!(code(name, &Value::Object(args).to_string()), ErrorCode::UnknownField, "{name}");
        }
        // Missing fields and wrong types.
        for (name, payload) in [
            ("set_channel", r#"{"port":"p"}"#),
            ("set_channel", r#"{"port":1,"channel":"c"}"#),
            ("listen", r#"{"channel":"c","on":"yes"}"#),
            ("listen", r#"{"channel":"c","on":1}"#),
            ("volume", r#"{"channel":"c","db":"loud"}"#),
            ("volume", r#"{"channel":"c"}"#),
            ("tx_inhibit", r#"{"port":null,"on":true}"#),
            ("remote_ptt", r#"{"port":"p","on":true}"#),
            ("remote_ptt", r#"{"port":"p","on":true,"max_duration_s":1.5}"#),
            ("remote_ptt", r#"{"port":"p","on":true,"max_duration_s":"10"}"#),
            ("identify", r#"{"seconds":1e3}"#),
            ("identify", r#"{"seconds":99999999999999999999}"#),
            ("identify", r#"{"seconds":[5]}"#),
            ("identify", "{}"),
            ("desk", r#"{"port":"p"}"#),
            ("desk", r#"{"action":{"action":"select","channel":"c"}}"#),
            ("desk", r#"{"port":7,"action":{"action":"select","channel":"c"}}"#),
            ("desk", r#"{"port":"a/b","action":{"action":"select","channel":"c"}}"#),
            ("desk", r#"{"port":"p","action":"select"}"#),
            ("desk", r#"{"port":"p","action":[{"action":"select"}]}"#),
            ("desk", r#"{"port":"p","action":null}"#),
        ] {
            assert_eq!(code(name, payload), ErrorCode::InvalidArgs, "{name} {payload}");
        }
        // Bad names: empty, too long, topic characters, whitespace.
        let long = "p".repeat(MAX_NAME_BYTES + 1);
        for port in ["", long.as_str(), "a/b", "a+", "#", "a b", "a\nb"] {
            let payload = json!({"port": port, "channel": "c"}).to_string();
            assert_eq!(code("set_channel", &payload), ErrorCode::InvalidArgs, "{port:?}");
        }
        // Out of range, including huge values.
        for (name, payload) in [
            ("volume", r#"{"channel":"c","db":12.01}"#),
            ("volume", r#"{"channel":"c","db":-61}"#),
            ("volume", r#"{"channel":"c","db":1e300}"#),
            ("remote_ptt", r#"{"port":"p","on":true,"max_duration_s":0}"#),
            ("remote_ptt", r#"{"port":"p","on":true,"max_duration_s":301}"#),
            ("remote_ptt", r#"{"port":"p","on":true,"max_duration_s":-1}"#),
            ("remote_ptt", r#"{"port":"p","on":false,"max_duration_s":9223372036854775807}"#),
            ("identify", r#"{"seconds":0}"#),
            ("identify", r#"{"seconds":601}"#),
            ("identify", r#"{"seconds":-9223372036854775808}"#),
        ] {
            assert_eq!(code(name, payload), ErrorCode::OutOfRange, "{name} {payload}");
        }
        // 1e400 does not fit an f64: not valid JSON for serde_json.
        assert_eq!(code("volume", r#"{"channel":"c","db":1e400}"#), ErrorCode::BadJson);
        // Retained commands never run.
        let e = parse_request("restart", b"{}", true).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::RetainedCommand);
    }

    #[test]
    fn deep_nesting_is_rejected_not_a_stack_overflow() {
        // Just under the size limit; serde_json's recursion limit (128) turns it into bad_json.
        let deep = format!(r#"{{"seconds":{}1{}}}"#, "[".repeat(8000), "]".repeat(8000));
        assert!(deep.len() <= MAX_COMMAND_BYTES);
        assert_eq!(code("identify", &deep), ErrorCode::BadJson);
    }

    #[test]
    fn replies() {
        let r = Reply::new(Some("identify"), Some(json!("r1")), Ok(json!({"seconds": 5})));
        let v: Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(v, json!({"ok": true, "request_id": "r1", "command": "identify", "result": {"seconds": 5}}));
        let r = Reply::new(Some("bogus/../x"), None, Err(CommandError::new(ErrorCode::UnknownCommand, "nope")));
        let v: Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(v, json!({"ok": false, "error": {"code": "unknown_command", "message": "nope"}}));
        for code in [ErrorCode::PayloadTooLarge, ErrorCode::RetainedCommand, ErrorCode::NotFound, ErrorCode::Busy] {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
        }
    }

    #[test]
    fn reply_topic_choice() {
        let t = Topics::new("gw");
        let d = "roipd/gw/reply";
        assert_eq!(t.reply_topic(None), d);
        assert_eq!(t.reply_topic(Some("console/42/resp")), "console/42/resp");
        assert_eq!(t.reply_topic(Some("roipd/gw/replies/7")), "roipd/gw/replies/7");
        let long = "t".repeat(MAX_RESPONSE_TOPIC_BYTES + 1);
        for bad in ["", "a/+/b", "a/#", "$SYS/x", "a\0b", &long] {
            assert_eq!(t.reply_topic(Some(bad)), d, "{bad}");
        }
        // A reply on a command topic would be read as a command (a restart loop).
        for own in ["roipd/gw/cmd/restart", "roipd/gw/cmd/", "roipd/gw/cmd/x/y", "roipd/other/cmd/restart"] {
            assert_eq!(t.reply_topic(Some(own)), d, "{own}");
        }
    }

    #[test]
    fn empty_payloads_run_nothing_that_acts() {
        for blank in ["", " ", "\n", " \r\n\t "] {
            for name in COMMAND_NAMES.iter().filter(|&&n| n != "get_config") {
                assert_eq!(code(name, blank), ErrorCode::BadJson, "{name} {blank:?}");
            }
            assert_eq!(ok("get_config", blank), Command::GetConfig);
            // Clearing a retained command delivers an empty retained message.
            let e = parse_request("restart", blank.as_bytes(), true).unwrap_err();
            assert_eq!(e.error.code, ErrorCode::RetainedCommand, "{blank:?}");
            assert_eq!(code("", blank), ErrorCode::UnknownCommand);
        }
        assert_eq!(ok("restart", "{}"), Command::Restart);
    }

    #[test]
    fn duplicate_keys_are_rejected_at_any_depth() {
        for (name, payload) in [
            ("remote_ptt", r#"{"port":"p","on":false,"max_duration_s":5,"on":true}"#),
            ("tx_inhibit", r#"{"port":"p","on":true,"on":false}"#),
            ("set_channel", r#"{"port":"a","channel":"c","port":"b"}"#),
            ("identify", r#"{"seconds":5,"request_id":1,"request_id":2}"#),
            ("desk", r#"{"port":"p","action":{"action":"select","channel":"a","channel":"b"}}"#),
            ("desk", r#"{"port":"p","action":{"x":[{"k":1,"k":2}]}}"#),
        ] {
            let e = parse(name, payload).unwrap_err();
            assert_eq!(e.error.code, ErrorCode::BadJson, "{name} {payload}");
            assert!(e.error.message.contains("duplicate key"), "{}", e.error.message);
        }
        // The strict parser reads everything else exactly as serde_json does.
        for text in [r#"{"a":[1,-2,3.5,1e300,"s",null,true,{"b":{}}],"c":18446744073709551615}"#, "{}", "[]"] {
            assert_eq!(parse_strict(text.as_bytes()).unwrap(), serde_json::from_str::<Value>(text).unwrap(), "{text}");
        }
        assert!(parse_strict(b"{} x").is_err());
    }

    #[test]
    fn redaction() {
        let mut v = json!({
            "device_id": "gw",
            "mqtt": {"url": "mqtts://fleet:hunter2@broker:8883/x", "username": "fleet",
                     "password_file": "/etc/roipd/mqtt.pass", "client_key_file": "/k.pem"},
            "hub": {"token": {"ops": {"secret_file": "/s", "channels": ["ops"]}}},
            "uplink": {"token_file": "/t", "url": "wss://hub"},
            "port": {"r1": {"keying": {"min_keyup_ms": 100}, "api-key": 7, "Token": "x"}},
            "list": [{"secret": "s"}],
            "nothing": null
        });
        redact(&mut v);
        assert_eq!(v["mqtt"]["url"], "mqtts://***@broker:8883/x");
        assert_eq!(v["mqtt"]["username"], "fleet");
        assert_eq!(v["mqtt"]["password_file"], "***");
        assert_eq!(v["mqtt"]["client_key_file"], "***");
        assert_eq!(v["hub"]["token"]["ops"]["secret_file"], "***");
        assert_eq!(v["hub"]["token"]["ops"]["channels"], json!(["ops"]));
        assert_eq!(v["uplink"]["token_file"], "***");
        assert_eq!(v["uplink"]["url"], "wss://hub");
        assert_eq!(v["port"]["r1"]["keying"]["min_keyup_ms"], 100);
        assert_eq!(v["port"]["r1"]["api-key"], "***");
        assert_eq!(v["port"]["r1"]["Token"], "***");
        assert_eq!(v["list"][0]["secret"], "***");
        assert_eq!(v["nothing"], Value::Null);
        assert!(!v.to_string().contains("hunter2"));
    }

    #[test]
    fn documents_serialize_as_documented() {
        let mut s = Status::online("gw", "0.1.0");
        s.uptime_s = Some(5);
        s.uplink = Some(UplinkStatus { state: UplinkState::Up, detail: None });
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({"online": true, "device": "gw", "version": "0.1.0", "uptime_s": 5, "uplink": {"state": "up"}})
        );
        s.started_at = Some("2026-01-01T00:00:00.000Z".into());
        assert_eq!(
            serde_json::to_value(s.offline("connection_lost")).unwrap(),
            json!({"online": false, "device": "gw", "version": "0.1.0",
                   "started_at": "2026-01-01T00:00:00.000Z", "reason": "connection_lost"})
        );
        let e = Event::new(EventKind::PttOff).port("r1").channel("ops").reason("tot");
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"kind": "ptt_off", "time": "", "port": "r1", "channel": "ops", "reason": "tot"})
        );
        let m = Metrics {
            time: "t".into(),
            uptime_s: 1,
            daemon: DaemonMetrics {
                streams: [("ops".to_string(), StreamMetrics { rtt_ms: Some(12.5), ..Default::default() })].into(),
                xruns: 2,
            },
            cpu_pct: Some(1.5),
            mem_rss_mb: None,
            soc_temp_c: None,
            mqtt_dropped: 0,
        };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"time": "t", "uptime_s": 1, "streams": {"ops": {"rtt_ms": 12.5}}, "xruns": 2,
                   "cpu_pct": 1.5, "mqtt_dropped": 0})
        );
    }

    #[test]
    fn time_and_hash() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_millis(1_795_228_055_001), "2026-11-21T02:27:35.001Z");
        assert_eq!(config_hash(b""), "cbf29ce484222325");
        assert_ne!(config_hash(b"a = 1"), config_hash(b"a = 2"));
    }
}
