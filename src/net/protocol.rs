//! The hub signaling protocol (`docs/signaling.md`) as plain data: every message both ways,
//! strict parsing and validation of what peers send, and the mapping between floor JSON and the
//! floor core's messages. Pure: no sockets, no clock, no panics on any input.
//!
//! Parsing goes text → `serde_json::Value` → the variant named by `type`, so every failure has a
//! class ([`ParseError`]) the hub can answer with an `error` message.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{PortStatus, RosterEntry};
use crate::core::floor::{DenyCause, ParticipantId, Priority, RevokeCause, ToParticipant};

/// Largest text frame either side accepts (the WebSocket layer enforces it too).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Largest SDP in an offer or answer. A browser's audio m-line is ~1.5 KB, so this fits ~30
/// channels; consoles with more should narrow their codecs.
pub const MAX_SDP_BYTES: usize = 48 * 1024;
/// Channel names and member keys.
pub const MAX_NAME_LEN: usize = 32;
/// A peer's display name.
pub const MAX_PEER_NAME_LEN: usize = 64;
/// Tokens (and the hub's secrets) are compared over this many bytes, whatever their length.
pub const MAX_TOKEN_LEN: usize = 256;
/// Members in one hello, and m-lines in one offer.
pub const MAX_MEMBERS: usize = 64;
pub const MAX_MID_LEN: usize = 32;

// ---------------------------------------------------------------------------------------------
// Client → hub
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Hello(Hello),
    Offer(Offer),
    Floor(FloorAction),
    Desk(DeskCommand),
    Emergency(EmergencyCommand),
    Ping,
}

/// Raise or acknowledge an emergency on a channel the peer's token allows:
/// `{"type": "emergency", "channel": "ops", "action": "raise", "id": 42}`. `id`, optional, names
/// the peer's member on that channel that becomes the caller (the emergency floor priority
/// until it is acknowledged); without it the raise is an alert only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmergencyCommand {
    pub channel: String,
    pub action: EmergencyVerb,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmergencyVerb {
    Raise,
    Ack,
}

/// A control of the hub box's own desk port (`{"type": "desk", "port": "console", "action":
/// {"action": "select", "channel": "ops"}}`). The action object is checked by the desk, which
/// answers with `desk` (done) or an `error` (refused: nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeskCommand {
    pub port: String,
    pub action: Value,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub token: String,
    pub name: String,
    /// Empty is allowed: a console's first hello only learns which channels exist.
    #[serde(default)]
    pub members: Vec<MemberSpec>,
}

/// The token never reaches a log line.
impl fmt::Debug for Hello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hello")
            .field("token", &"<redacted>")
            .field("name", &self.name)
            .field("members", &self.members)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSpec {
    pub key: String,
    pub channel: String,
    #[serde(default)]
    pub priority: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub sdp: String,
    /// m-line `mid` → channel name.
    #[serde(default)]
    pub mids: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloorAction {
    pub id: u64,
    pub action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Request,
    Release,
}

// ---------------------------------------------------------------------------------------------
// Hub → client
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Welcome(Welcome),
    Answer(Answer),
    Floor(FloorEvent),
    Roster(Roster),
    RosterDelta(RosterDelta),
    Ports(Ports),
    /// A `desk` command was applied.
    Desk(DeskDone),
    DeskState(DeskState),
    Air(Air),
    Emergency(EmergencyNotice),
    Pong,
    Error(ErrorMessage),
}

/// An emergency's state on a channel, to every peer whose token allows the channel: when it is
/// raised or acknowledged, and on join for every emergency still active.
/// `{"type": "emergency", "channel": "ops", "active": true, "source": "radio1", "kind": "radio"}`,
/// `{"type": "emergency", "channel": "ops", "active": false, "source": "radio1", "kind": "radio", "by": "console@desk"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmergencyNotice {
    pub channel: String,
    pub active: bool,
    /// Who raised it.
    pub source: String,
    /// `radio`, `dtmf`, `console`, `desk`, `fleet`.
    pub kind: String,
    /// Cleared: who acknowledged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// Which of the hub box's radios should transmit a channel's talker, and whether each is on
/// air: sent to every peer after the floor changes and whenever a radio keys or is blocked
/// (`radios` empty: none should transmit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Air {
    pub channel: String,
    pub radios: Vec<AirEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AirEntry {
    /// The radio port's name.
    pub port: String,
    pub state: AirStateKind,
    /// Why it waits (`waiting` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<AirWaitReason>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AirStateKind {
    /// Its PTT line is keyed.
    OnAir,
    /// Not keyed yet.
    Waiting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AirWaitReason {
    /// About to key.
    Keying,
    /// Simplex and receiving: keys when its squelch closes.
    Receiving,
    Inhibited,
    /// Time-out timer lockout, until the channel goes idle.
    LockedOut,
    /// The no-audio guard unkeyed it; keys again when the talker's audio reaches it.
    NoAudio,
}

impl AirEntry {
    pub fn new(port: &str, state: crate::core::routing::AirState) -> Self {
        use crate::core::routing::{AirState, WaitReason};
        let (state, reason) = match state {
            AirState::OnAir => (AirStateKind::OnAir, None),
            AirState::Waiting(why) => (
                AirStateKind::Waiting,
                Some(match why {
                    WaitReason::Keying => AirWaitReason::Keying,
                    WaitReason::Receiving => AirWaitReason::Receiving,
                    WaitReason::Inhibited => AirWaitReason::Inhibited,
                    WaitReason::LockedOut => AirWaitReason::LockedOut,
                    WaitReason::NoAudio => AirWaitReason::NoAudio,
                }),
            ),
        };
        Self { port: port.to_owned(), state, reason }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeskDone {
    pub port: String,
}

/// The hub box's desk port as its consoles show it; sent on join and on every change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeskState {
    pub port: String,
    /// The channel the desk's main PTT talks on.
    pub selected: String,
    pub channels: Vec<DeskChannelState>,
    /// Cross-connected channel pairs.
    pub patches: Vec<[String; 2]>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeskChannelState {
    pub name: String,
    pub listen: bool,
    pub volume_db: f32,
    /// Audio is playing from the channel.
    pub rx: bool,
    /// The desk holds the channel's floor.
    pub tx: bool,
    /// Someone else holds it.
    pub busy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub peer: u64,
    /// One per hello member, in hello order.
    pub members: Vec<WelcomeMember>,
    /// Every channel the token may join (not only the joined ones), so a console can offer them.
    pub channels: Vec<ChannelInfo>,
    /// STUN/TURN servers for the client's `RTCPeerConnection` (`[hub] ice_servers`), TURN ones
    /// with time-limited credentials; absent when none are configured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ice_servers: Vec<IceServerInfo>,
}

/// One `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServerInfo {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WelcomeMember {
    pub key: String,
    pub channel: String,
    pub id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelInfo {
    pub name: String,
    pub label: String,
    /// Serialized as `null` when idle or unknown (a `taken` follows if it is busy).
    #[serde(default)]
    pub holder: Option<Holder>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub id: u64,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub sdp: String,
}

/// A channel's whole roster: sent once per channel when a peer joins (the initial state).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Roster {
    pub channel: String,
    pub members: Vec<RosterEntry>,
}

/// What changed in a channel's roster since the last `roster` or `roster_delta` the peer got:
/// members in `add` joined or changed (replace any entry with the same id), ids in `remove`
/// left. Applying it twice changes nothing more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RosterDelta {
    pub channel: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<RosterEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<u64>,
}

impl RosterDelta {
    /// From `old` to `new`; `None` when nothing changed. Entries keep `new`'s order.
    pub fn between(channel: &str, old: &[RosterEntry], new: &[RosterEntry]) -> Option<RosterDelta> {
        let before: HashMap<u64, &RosterEntry> = old.iter().map(|e| (e.id, e)).collect();
        let after: HashSet<u64> = new.iter().map(|e| e.id).collect();
        let add: Vec<RosterEntry> = new.iter().filter(|e| before.get(&e.id) != Some(e)).cloned().collect();
        let remove: Vec<u64> = old.iter().map(|e| e.id).filter(|id| !after.contains(id)).collect();
        (!add.is_empty() || !remove.is_empty()).then(|| RosterDelta { channel: channel.to_owned(), add, remove })
    }

    /// What a client does with it: the roster it held, updated (new members at the end).
    pub fn apply(&self, roster: &mut Vec<RosterEntry>) {
        roster.retain(|e| !self.remove.contains(&e.id));
        for a in &self.add {
            match roster.iter_mut().find(|e| e.id == a.id) {
                Some(e) => *e = a.clone(),
                None => roster.push(a.clone()),
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ports {
    pub ports: Vec<PortStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed or out-of-place message; the session stays up (except for a bad hello).
    BadRequest,
    /// Unknown token.
    Unauthorized,
    /// The token does not allow a channel (named in the message).
    Forbidden,
    /// The hub cannot take the peer now (router refused or is gone, hub shutting down).
    Unavailable,
    /// Nothing received for the idle timeout.
    Timeout,
    /// ICE or DTLS failed, or the peer closed its media: the peer has left.
    MediaFailed,
    /// The peer did not read what the hub sent fast enough: its queue overflowed. Only the
    /// close code reaches it (the hub does not queue more for a peer that does not read).
    TooSlow,
}

impl ErrorCode {
    /// WebSocket close code when this error ends the session.
    pub fn close_code(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 4000,
            ErrorCode::Unauthorized => 4001,
            ErrorCode::Forbidden => 4003,
            ErrorCode::Timeout => 4008,
            ErrorCode::MediaFailed => 4010,
            ErrorCode::TooSlow => 4029,
            ErrorCode::Unavailable => 4503,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::MediaFailed => "media_failed",
            ErrorCode::TooSlow => "too_slow",
        }
    }
}

impl ServerMessage {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error(ErrorMessage { code, message: message.into() })
    }

    /// JSON text; these types always serialize.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| String::from(r#"{"type":"error","code":"bad_request","message":"unserializable"}"#))
    }
}

impl ClientMessage {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// Floor events (hub → client) and their mapping to the floor core
// ---------------------------------------------------------------------------------------------

/// One `floor` message from the hub. Optional fields appear only where the event uses them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloorEvent {
    pub channel: String,
    /// The member it is for; absent for broadcasts (`taken`, `idle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    pub event: FloorEventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// The talker (`taken`, busy `deny`) or the preempting member (`revoke` / `preempted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<Holder>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FloorEventKind {
    Granted,
    Deny,
    Queued,
    Revoke,
    Taken,
    Idle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    Busy,
    QueueFull,
    Preempted,
    MaxTalk,
    NoMedia,
}

impl FloorEvent {
    /// The JSON form of a router message for one member (`member`) or the whole channel.
    pub fn from_router(
        channel: &str,
        member: Option<ParticipantId>,
        msg: &ToParticipant,
        holder_name: Option<&str>,
    ) -> Self {
        let mut e = FloorEvent {
            channel: channel.to_owned(),
            id: member.map(|m| m.0),
            event: FloorEventKind::Idle,
            cause: None,
            holder: None,
            position: None,
            priority: None,
        };
        let holder = |id: ParticipantId| Some(Holder { id: id.0, name: holder_name.unwrap_or_default().to_owned() });
        match *msg {
            ToParticipant::Granted => e.event = FloorEventKind::Granted,
            ToParticipant::Deny { cause } => {
                e.event = FloorEventKind::Deny;
                match cause {
                    DenyCause::Busy { holder: h } => {
                        e.cause = Some(Cause::Busy);
                        e.holder = holder(h);
                    }
                    DenyCause::QueueFull => e.cause = Some(Cause::QueueFull),
                }
            }
            ToParticipant::Queued { position } => {
                e.event = FloorEventKind::Queued;
                e.position = Some(u32::try_from(position).unwrap_or(u32::MAX));
            }
            ToParticipant::Revoke { cause } => {
                e.event = FloorEventKind::Revoke;
                e.cause = Some(match cause {
                    RevokeCause::Preempted { by } => {
                        e.holder = holder(by);
                        Cause::Preempted
                    }
                    RevokeCause::MaxTalkTime => Cause::MaxTalk,
                    RevokeCause::NoMedia => Cause::NoMedia,
                });
            }
            ToParticipant::Taken { holder: h, priority } => {
                e.event = FloorEventKind::Taken;
                e.holder = holder(h);
                e.priority = Some(priority.0);
            }
            ToParticipant::Idle => e.event = FloorEventKind::Idle,
        }
        e
    }

    /// Back to the floor core's message (the uplink side), with the holder's name if any.
    pub fn to_router(&self) -> Result<(ToParticipant, Option<String>), ParseError> {
        let bad = |what: &str| ParseError::Invalid(format!("floor {:?}: {what}", self.event));
        let holder_id = self.holder.as_ref().map(|h| ParticipantId(h.id));
        let msg = match self.event {
            FloorEventKind::Granted => ToParticipant::Granted,
            FloorEventKind::Deny => match self.cause {
                Some(Cause::Busy) => ToParticipant::Deny {
                    cause: DenyCause::Busy { holder: holder_id.ok_or_else(|| bad("busy without holder"))? },
                },
                Some(Cause::QueueFull) => ToParticipant::Deny { cause: DenyCause::QueueFull },
                _ => return Err(bad("missing or unknown cause")),
            },
            FloorEventKind::Queued => {
                ToParticipant::Queued { position: self.position.ok_or_else(|| bad("missing position"))? as usize }
            }
            FloorEventKind::Revoke => ToParticipant::Revoke {
                cause: match self.cause {
                    // An older hub may not name the preemptor; 0 is no participant.
                    Some(Cause::Preempted) => RevokeCause::Preempted { by: holder_id.unwrap_or(ParticipantId(0)) },
                    Some(Cause::MaxTalk) => RevokeCause::MaxTalkTime,
                    Some(Cause::NoMedia) => RevokeCause::NoMedia,
                    _ => return Err(bad("missing or unknown cause")),
                },
            },
            FloorEventKind::Taken => ToParticipant::Taken {
                holder: holder_id.ok_or_else(|| bad("missing holder"))?,
                priority: Priority(self.priority.unwrap_or(0)),
            },
            FloorEventKind::Idle => ToParticipant::Idle,
        };
        let name = self.holder.as_ref().map(|h| h.name.clone()).filter(|n| !n.is_empty());
        Ok((msg, name))
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing and validation
// ---------------------------------------------------------------------------------------------

/// Why a message was refused. Every class maps to a `bad_request` error for the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message of {0} bytes exceeds {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a JSON object")]
    NotAnObject,
    #[error("missing \"type\"")]
    MissingType,
    #[error("unknown type {0:?}")]
    UnknownType(String),
    #[error("bad {ty}: {detail}")]
    BadField { ty: &'static str, detail: String },
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ParseError {
    ParseError::Invalid(msg.into())
}

/// Parse and validate one client message. Checks that need session state (token, joined
/// channels, member ids) are the session's, with [`validate_offer`].
pub fn parse_client(text: &str) -> Result<ClientMessage, ParseError> {
    let (ty, value) = split_type(text)?;
    let field = |ty: &'static str| move |e: serde_json::Error| ParseError::BadField { ty, detail: e.to_string() };
    let msg = match ty.as_str() {
        "hello" => ClientMessage::Hello(serde_json::from_value(value).map_err(field("hello"))?),
        "offer" => ClientMessage::Offer(serde_json::from_value(value).map_err(field("offer"))?),
        "floor" => ClientMessage::Floor(serde_json::from_value(value).map_err(field("floor"))?),
        "desk" => {
            let mut map = value;
            if let Value::Object(m) = &mut map {
                m.remove("type");
            }
            ClientMessage::Desk(serde_json::from_value(map).map_err(field("desk"))?)
        }
        "emergency" => {
            let mut map = value;
            if let Value::Object(m) = &mut map {
                m.remove("type");
            }
            ClientMessage::Emergency(serde_json::from_value(map).map_err(field("emergency"))?)
        }
        "ping" => ClientMessage::Ping,
        _ => return Err(ParseError::UnknownType(truncate(&ty, 40))),
    };
    match &msg {
        ClientMessage::Hello(h) => validate_hello(h)?,
        ClientMessage::Offer(o) => validate_offer_shape(o)?,
        ClientMessage::Desk(d) => {
            if !is_valid_name(&d.port) {
                return Err(invalid("desk port: a port name"));
            }
            if !d.action.is_object() {
                return Err(invalid("desk action: a JSON object"));
            }
        }
        ClientMessage::Emergency(e) => {
            if !is_valid_name(&e.channel) {
                return Err(invalid("emergency channel: a channel name"));
            }
        }
        ClientMessage::Floor(_) | ClientMessage::Ping => {}
    }
    Ok(msg)
}

/// Parse one hub message (the uplink side). Unknown types are an error the caller may ignore.
pub fn parse_server(text: &str) -> Result<ServerMessage, ParseError> {
    let (ty, value) = split_type(text)?;
    if !matches!(
        ty.as_str(),
        "welcome"
            | "answer"
            | "floor"
            | "roster"
            | "roster_delta"
            | "ports"
            | "desk"
            | "desk_state"
            | "air"
            | "emergency"
            | "pong"
            | "error"
    ) {
        return Err(ParseError::UnknownType(truncate(&ty, 40)));
    }
    let msg: ServerMessage =
        serde_json::from_value(value).map_err(|e| ParseError::BadField { ty: "hub message", detail: e.to_string() })?;
    if let ServerMessage::Answer(a) = &msg {
        check_sdp(&a.sdp)?;
    }
    Ok(msg)
}

fn split_type(text: &str) -> Result<(String, Value), ParseError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(ParseError::TooLarge(text.len()));
    }
    // serde_json bounds nesting depth (128), so hostile input cannot overflow the stack.
    let value: Value = serde_json::from_str(text).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let Value::Object(map) = &value else {
        return Err(ParseError::NotAnObject);
    };
    let ty = match map.get("type") {
        Some(Value::String(t)) => t.clone(),
        _ => return Err(ParseError::MissingType),
    };
    Ok((ty, value))
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// `[a-z0-9][a-z0-9_-]*`, at most [`MAX_NAME_LEN`]: channel names and member keys.
pub fn is_valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// A display name: 1-64 characters, no control characters, not blank.
pub fn is_valid_peer_name(s: &str) -> bool {
    let n = s.chars().count();
    (1..=MAX_PEER_NAME_LEN).contains(&n) && !s.trim().is_empty() && !s.chars().any(char::is_control)
}

/// RFC 5888 `mid` is a token; browsers use "0", "1", str0m short alphanumerics.
fn is_valid_mid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_MID_LEN
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'+' | b'~'))
}

pub fn validate_hello(h: &Hello) -> Result<(), ParseError> {
    if h.token.is_empty() || h.token.len() > MAX_TOKEN_LEN {
        return Err(invalid(format!("token must be 1-{MAX_TOKEN_LEN} bytes")));
    }
    if !is_valid_peer_name(&h.name) {
        return Err(invalid(format!("name must be 1-{MAX_PEER_NAME_LEN} characters without control characters")));
    }
    if h.members.len() > MAX_MEMBERS {
        return Err(invalid(format!("at most {MAX_MEMBERS} members")));
    }
    let mut seen = HashSet::new();
    for m in &h.members {
        if !is_valid_name(&m.key) {
            return Err(invalid(format!(
                "member key {:?} must match [a-z0-9][a-z0-9_-]* (max {MAX_NAME_LEN})",
                truncate(&m.key, 40)
            )));
        }
        if !is_valid_name(&m.channel) {
            return Err(invalid(format!(
                "channel {:?} must match [a-z0-9][a-z0-9_-]* (max {MAX_NAME_LEN})",
                truncate(&m.channel, 40)
            )));
        }
        if !seen.insert((m.key.as_str(), m.channel.as_str())) {
            return Err(invalid(format!("member {}/{} listed twice", m.key, m.channel)));
        }
    }
    Ok(())
}

fn check_sdp(sdp: &str) -> Result<(), ParseError> {
    if sdp.len() > MAX_SDP_BYTES {
        return Err(invalid(format!("SDP of {} bytes exceeds {MAX_SDP_BYTES}", sdp.len())));
    }
    if !sdp.starts_with("v=0") {
        return Err(invalid("SDP must start with v=0"));
    }
    Ok(())
}

fn validate_offer_shape(o: &Offer) -> Result<(), ParseError> {
    check_sdp(&o.sdp)?;
    if o.mids.len() > MAX_MEMBERS {
        return Err(invalid(format!("at most {MAX_MEMBERS} mids")));
    }
    for (mid, channel) in &o.mids {
        if !is_valid_mid(mid) {
            return Err(invalid(format!("mid {:?} is not a valid token", truncate(mid, 40))));
        }
        if !is_valid_name(channel) {
            return Err(invalid(format!("channel {:?} is not a valid name", truncate(channel, 40))));
        }
    }
    Ok(())
}

/// The session's check of an offer: each mid is an audio m-line of the SDP and maps to a
/// channel the peer joined, each channel at most once. Returns (mid, channel) pairs.
pub fn validate_offer(o: &Offer, joined: &[&str]) -> Result<Vec<(String, String)>, ParseError> {
    check_fingerprints(&o.sdp)?;
    let audio = sdp_audio_mids(&o.sdp);
    let mut channels = HashSet::new();
    let mut out = Vec::with_capacity(o.mids.len());
    for (mid, channel) in &o.mids {
        if !joined.contains(&channel.as_str()) {
            return Err(invalid(format!("mid {mid}: channel {channel} was not joined in hello")));
        }
        if !channels.insert(channel.as_str()) {
            return Err(invalid(format!("channel {channel} has more than one mid")));
        }
        if !audio.iter().any(|a| a == mid) {
            return Err(invalid(format!("mid {mid} is not an audio m-line of the SDP")));
        }
        out.push((mid.clone(), channel.clone()));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// SDP text helpers (what str0m does not expose or write)
// ---------------------------------------------------------------------------------------------

fn sdp_lines(sdp: &str) -> impl Iterator<Item = &str> {
    sdp.split('\n').map(|l| l.trim_end_matches('\r'))
}

/// The `a=mid` of every `m=audio` section, in order.
pub fn sdp_audio_mids(sdp: &str) -> Vec<String> {
    let mut mids = Vec::new();
    let mut in_audio = false;
    for line in sdp_lines(sdp) {
        if let Some(m) = line.strip_prefix("m=") {
            in_audio = m.split(' ').next() == Some("audio");
        } else if let Some(mid) = line.strip_prefix("a=mid:") {
            if in_audio {
                mids.push(mid.trim().to_owned());
            }
        }
    }
    mids
}

/// The first `a=fingerprint` value: tells a renegotiation of the same peer connection from a
/// brand new one (new certificate).
pub fn sdp_fingerprint(sdp: &str) -> Option<&str> {
    sdp_lines(sdp).find_map(|l| l.strip_prefix("a=fingerprint:")).map(str::trim)
}

/// Hash functions a DTLS fingerprint may use, with their digest length in bytes. MD5 and SHA-1
/// are refused: WebRTC peers use SHA-256 (RFC 8827), and a weak hash would let a certificate be
/// forged to match.
const FINGERPRINT_HASHES: [(&str, usize); 3] = [("sha-256", 32), ("sha-384", 48), ("sha-512", 64)];

/// Every `a=fingerprint` of the SDP is `<sha-256|sha-384|sha-512> XX:XX:...` with the digest's
/// length in hex pairs, and there is at least one: DTLS cannot be authenticated otherwise.
pub fn check_fingerprints(sdp: &str) -> Result<(), ParseError> {
    let mut found = false;
    for fp in sdp_lines(sdp).filter_map(|l| l.strip_prefix("a=fingerprint:")) {
        let (hash, value) = fp.trim().split_once(' ').unwrap_or((fp.trim(), ""));
        let Some(&(_, bytes)) = FINGERPRINT_HASHES.iter().find(|(h, _)| h.eq_ignore_ascii_case(hash)) else {
            return Err(invalid("a=fingerprint: only sha-256, sha-384 or sha-512"));
        };
        let pairs: Vec<&str> = value.trim().split(':').collect();
        let hex = |p: &&str| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit());
        if pairs.len() != bytes || !pairs.iter().all(hex) {
            return Err(invalid(format!("a=fingerprint: {hash} takes {bytes} hex pairs separated by ':'")));
        }
        found = true;
    }
    if found {
        Ok(())
    } else {
        Err(invalid("the offer has no a=fingerprint"))
    }
}

/// Add `a=end-of-candidates` to every media section that lacks it: the hub's answer carries
/// all its candidates (half-trickle), and saying so lets a browser stop waiting for more.
pub fn add_end_of_candidates(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len() + 64);
    let mut in_media = false;
    let mut has_eoc = false;
    let close = |out: &mut String, in_media: bool, has_eoc: bool| {
        if in_media && !has_eoc {
            out.push_str("a=end-of-candidates\r\n");
        }
    };
    for line in sdp_lines(sdp) {
        if line.is_empty() {
            continue;
        }
        if line.starts_with("m=") {
            close(&mut out, in_media, has_eoc);
            in_media = true;
            has_eoc = false;
        } else if line == "a=end-of-candidates" {
            has_eoc = true;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    close(&mut out, in_media, has_eoc);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn air_message_says_which_radios_wait_and_why() {
        use crate::core::routing::{AirState, WaitReason};
        let air = ServerMessage::Air(Air {
            channel: "ops".into(),
            radios: vec![
                AirEntry::new("radio1", AirState::Waiting(WaitReason::Receiving)),
                AirEntry::new("radio2", AirState::OnAir),
            ],
        });
        let json = air.to_json();
        assert_eq!(
            json,
            r#"{"type":"air","channel":"ops","radios":[{"port":"radio1","state":"waiting","reason":"receiving"},{"port":"radio2","state":"on_air"}]}"#
        );
        assert_eq!(parse_server(&json).unwrap(), air);
    }

    fn hello_json(token: &str, members: &str) -> String {
        format!(r#"{{"type":"hello","token":"{token}","name":"edge-hilltop","members":{members}}}"#)
    }

    #[test]
    fn hello_from_the_doc_parses() {
        let m = parse_client(&hello_json("s3cret", r#"[{"key":"radio1","channel":"ops","priority":0}]"#)).unwrap();
        let ClientMessage::Hello(h) = m else { panic!("{m:?}") };
        assert_eq!(h.token, "s3cret");
        assert_eq!(h.members, vec![MemberSpec { key: "radio1".into(), channel: "ops".into(), priority: 0 }]);
        assert!(!format!("{h:?}").contains("s3cret"), "Debug must not show the token");
    }

    #[test]
    fn desk_commands_parse_and_malformed_ones_are_refused() {
        let m =
            parse_client(r#"{"type":"desk","port":"console","action":{"action":"select","channel":"ops"}}"#).unwrap();
        let ClientMessage::Desk(d) = m else { panic!("{m:?}") };
        assert_eq!(d.port, "console");
        assert_eq!(d.action["channel"], "ops");
        for bad in [
            r#"{"type":"desk","port":"console"}"#,
            r#"{"type":"desk","action":{}}"#,
            r#"{"type":"desk","port":"Not A Name","action":{}}"#,
            r#"{"type":"desk","port":"console","action":[1]}"#,
            r#"{"type":"desk","port":"console","action":{},"extra":1}"#,
        ] {
            assert!(parse_client(bad).is_err(), "{bad} accepted");
        }
        let done = serde_json::to_string(&ServerMessage::Desk(DeskDone { port: "console".into() })).unwrap();
        assert_eq!(done, r#"{"type":"desk","port":"console"}"#);
        assert_eq!(parse_server(&done).unwrap(), ServerMessage::Desk(DeskDone { port: "console".into() }));
    }

    #[test]
    fn emergency_messages_parse_both_ways_and_malformed_ones_are_refused() {
        let m = parse_client(r#"{"type":"emergency","channel":"ops","action":"raise","id":42}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::Emergency(EmergencyCommand {
                channel: "ops".into(),
                action: EmergencyVerb::Raise,
                id: Some(42)
            })
        );
        let m = parse_client(r#"{"type":"emergency","channel":"ops","action":"ack"}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::Emergency(EmergencyCommand { channel: "ops".into(), action: EmergencyVerb::Ack, id: None })
        );
        for bad in [
            r#"{"type":"emergency","channel":"ops"}"#,
            r#"{"type":"emergency","action":"raise"}"#,
            r#"{"type":"emergency","channel":"ops","action":"panic"}"#,
            r#"{"type":"emergency","channel":"Not A Name","action":"raise"}"#,
            r#"{"type":"emergency","channel":"ops","action":"raise","id":-1}"#,
            r#"{"type":"emergency","channel":"ops","action":"raise","extra":1}"#,
        ] {
            assert!(parse_client(bad).is_err(), "{bad} accepted");
        }
        let notice = EmergencyNotice {
            channel: "ops".into(),
            active: false,
            source: "radio1@edge".into(),
            kind: "radio".into(),
            by: Some("console-1".into()),
        };
        let text = serde_json::to_string(&ServerMessage::Emergency(notice.clone())).unwrap();
        assert_eq!(
            text,
            r#"{"type":"emergency","channel":"ops","active":false,"source":"radio1@edge","kind":"radio","by":"console-1"}"#
        );
        assert_eq!(parse_server(&text).unwrap(), ServerMessage::Emergency(notice));
        let round = serde_json::to_string(&ClientMessage::Emergency(EmergencyCommand {
            channel: "ops".into(),
            action: EmergencyVerb::Ack,
            id: None,
        }))
        .unwrap();
        assert_eq!(round, r#"{"type":"emergency","channel":"ops","action":"ack"}"#);
    }

    #[test]
    fn client_messages_round_trip() {
        let mut mids = BTreeMap::new();
        mids.insert("0".to_owned(), "ops".to_owned());
        let msgs = [
            ClientMessage::Hello(Hello {
                token: "t".into(),
                name: "Dispatch Anna".into(),
                members: vec![MemberSpec { key: "console".into(), channel: "fire-2".into(), priority: 100 }],
            }),
            ClientMessage::Hello(Hello { token: "t".into(), name: "x".into(), members: vec![] }),
            ClientMessage::Offer(Offer { sdp: "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n".into(), mids }),
            ClientMessage::Floor(FloorAction { id: 42, action: Action::Request }),
            ClientMessage::Floor(FloorAction { id: 42, action: Action::Release }),
            ClientMessage::Ping,
        ];
        for m in msgs {
            assert_eq!(parse_client(&m.to_json()).unwrap(), m);
        }
        assert_eq!(ClientMessage::Ping.to_json(), r#"{"type":"ping"}"#);
        assert_eq!(
            ClientMessage::Floor(FloorAction { id: 42, action: Action::Request }).to_json(),
            r#"{"type":"floor","id":42,"action":"request"}"#
        );
    }

    #[test]
    fn server_messages_round_trip() {
        let msgs = [
            ServerMessage::Welcome(Welcome {
                peer: 7,
                members: vec![WelcomeMember { key: "radio1".into(), channel: "ops".into(), id: 42 }],
                channels: vec![ChannelInfo { name: "ops".into(), label: "Operations".into(), holder: None }],
                ice_servers: vec![],
            }),
            ServerMessage::Welcome(Welcome {
                peer: 8,
                members: vec![],
                channels: vec![],
                ice_servers: vec![
                    IceServerInfo { urls: vec!["stun:198.18.0.1:3478".into()], username: None, credential: None },
                    IceServerInfo {
                        urls: vec!["turn:198.18.0.1:3478?transport=udp".into()],
                        username: Some("1700000000:desk".into()),
                        credential: Some("c2VjcmV0".into()),
                    },
                ],
            }),
            ServerMessage::Answer(Answer { sdp: "v=0\r\n".into() }),
            ServerMessage::Roster(Roster {
                channel: "ops".into(),
                members: vec![RosterEntry { id: 3, name: "radio1@hub".into(), priority: 0 }],
            }),
            ServerMessage::RosterDelta(RosterDelta {
                channel: "ops".into(),
                add: vec![RosterEntry { id: 4, name: "console@desk".into(), priority: 2 }],
                remove: vec![3],
            }),
            ServerMessage::RosterDelta(RosterDelta { channel: "ops".into(), add: vec![], remove: vec![3] }),
            ServerMessage::Ports(Ports {
                ports: vec![PortStatus {
                    name: "radio1".into(),
                    channel: "ops".into(),
                    rx: true,
                    tx: false,
                    locked_out: false,
                    inhibited: false,
                }],
            }),
            ServerMessage::Pong,
            ServerMessage::error(ErrorCode::Forbidden, "channel fire"),
        ];
        for m in msgs {
            assert_eq!(parse_server(&m.to_json()).unwrap(), m);
        }
        // The doc's welcome, byte for byte in meaning: `holder` is an explicit null.
        let w = ServerMessage::Welcome(Welcome {
            peer: 7,
            members: vec![],
            channels: vec![ChannelInfo { name: "ops".into(), label: "Operations".into(), holder: None }],
            ice_servers: vec![],
        });
        assert!(w.to_json().contains(r#""holder":null"#));
        assert!(!w.to_json().contains("ice_servers"), "absent when none are configured");
        assert_eq!(
            ServerMessage::error(ErrorCode::Unauthorized, "x").to_json(),
            r#"{"type":"error","code":"unauthorized","message":"x"}"#
        );
    }

    #[test]
    fn every_floor_message_maps_both_ways() {
        let a = ParticipantId(42);
        let h = ParticipantId(3);
        let cases: Vec<(Option<ParticipantId>, ToParticipant, &str)> = vec![
            (Some(a), ToParticipant::Granted, r#"{"channel":"ops","id":42,"event":"granted"}"#),
            (
                Some(a),
                ToParticipant::Deny { cause: DenyCause::Busy { holder: h } },
                r#"{"channel":"ops","id":42,"event":"deny","cause":"busy","holder":{"id":3,"name":"radio1@hub"}}"#,
            ),
            (
                Some(a),
                ToParticipant::Deny { cause: DenyCause::QueueFull },
                r#"{"channel":"ops","id":42,"event":"deny","cause":"queue_full"}"#,
            ),
            (
                Some(a),
                ToParticipant::Queued { position: 1 },
                r#"{"channel":"ops","id":42,"event":"queued","position":1}"#,
            ),
            (
                Some(a),
                ToParticipant::Revoke { cause: RevokeCause::Preempted { by: h } },
                r#"{"channel":"ops","id":42,"event":"revoke","cause":"preempted","holder":{"id":3,"name":"radio1@hub"}}"#,
            ),
            (
                Some(a),
                ToParticipant::Revoke { cause: RevokeCause::MaxTalkTime },
                r#"{"channel":"ops","id":42,"event":"revoke","cause":"max_talk"}"#,
            ),
            (
                Some(a),
                ToParticipant::Revoke { cause: RevokeCause::NoMedia },
                r#"{"channel":"ops","id":42,"event":"revoke","cause":"no_media"}"#,
            ),
            (
                None,
                ToParticipant::Taken { holder: h, priority: Priority(0) },
                r#"{"channel":"ops","event":"taken","holder":{"id":3,"name":"radio1@hub"},"priority":0}"#,
            ),
            (None, ToParticipant::Idle, r#"{"channel":"ops","event":"idle"}"#),
        ];
        for (member, msg, json) in cases {
            let e = FloorEvent::from_router("ops", member, &msg, Some("radio1@hub"));
            let text = serde_json::to_string(&e).unwrap();
            assert_eq!(text, json);
            let back = parse_server(&format!(r#"{{"type":"floor",{}"#, &text[1..])).unwrap();
            let ServerMessage::Floor(back) = back else { panic!() };
            assert_eq!(back.id, member.map(|m| m.0));
            let (msg2, _) = back.to_router().unwrap();
            assert_eq!(msg2, msg);
        }
    }

    #[test]
    fn incomplete_floor_events_are_errors_not_panics() {
        for json in [
            r#"{"type":"floor","channel":"ops","id":1,"event":"deny"}"#,
            r#"{"type":"floor","channel":"ops","id":1,"event":"deny","cause":"busy"}"#,
            r#"{"type":"floor","channel":"ops","id":1,"event":"queued"}"#,
            r#"{"type":"floor","channel":"ops","event":"taken"}"#,
            r#"{"type":"floor","channel":"ops","id":1,"event":"revoke","cause":"busy"}"#,
        ] {
            let ServerMessage::Floor(e) = parse_server(json).unwrap() else { panic!() };
            assert!(matches!(e.to_router(), Err(ParseError::Invalid(_))), "{json}");
        }
        assert!(matches!(
            parse_server(r#"{"type":"floor","channel":"ops","event":"exploded"}"#),
            Err(ParseError::BadField { .. })
        ));
    }

    #[test]
    fn every_error_class() {
        let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(MAX_MESSAGE_BYTES));
        assert!(matches!(parse_client(&big), Err(ParseError::TooLarge(_))));
        assert!(matches!(parse_client("{nope"), Err(ParseError::NotJson(_))));
        assert!(matches!(parse_client(""), Err(ParseError::NotJson(_))));
        assert!(matches!(parse_client("[1,2]"), Err(ParseError::NotAnObject)));
        assert!(matches!(parse_client("\"hello\""), Err(ParseError::NotAnObject)));
        assert!(matches!(parse_client(r#"{"token":"x"}"#), Err(ParseError::MissingType)));
        assert!(matches!(parse_client(r#"{"type":7}"#), Err(ParseError::MissingType)));
        assert!(matches!(parse_client(r#"{"type":"welcome"}"#), Err(ParseError::UnknownType(t)) if t == "welcome"));
        assert!(matches!(parse_client(r#"{"type":"hello"}"#), Err(ParseError::BadField { ty: "hello", .. })));
        assert!(matches!(
            parse_client(&hello_json("t", r#"[{"key":"a","channel":"ops","priority":256}]"#)),
            Err(ParseError::BadField { .. })
        ));
        assert!(matches!(
            parse_client(&hello_json("t", r#"[{"key":"a","channel":"ops","priority":-1}]"#)),
            Err(ParseError::BadField { .. })
        ));
        assert!(matches!(
            parse_client(r#"{"type":"floor","id":-1,"action":"request"}"#),
            Err(ParseError::BadField { .. })
        ));
        assert!(matches!(parse_client(r#"{"type":"floor","id":1,"action":"grab"}"#), Err(ParseError::BadField { .. })));
        assert!(matches!(parse_client(r#"{"type":"offer","mids":{}}"#), Err(ParseError::BadField { .. })));
        // Deep nesting is refused by serde_json's recursion limit, not by a stack overflow.
        let deep = format!(r#"{{"type":"ping","x":{}{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(parse_client(&deep), Err(ParseError::NotJson(_))));
        // Unknown fields are ignored.
        assert_eq!(parse_client(r#"{"type":"ping","extra":{"a":1}}"#).unwrap(), ClientMessage::Ping);
    }

    #[test]
    fn hello_validation() {
        let ok = |members: &str| parse_client(&hello_json("t", members));
        assert!(ok(r#"[{"key":"radio1","channel":"ops"}]"#).is_ok(), "priority defaults to 0");
        for bad in [
            r#"[{"key":"Radio1","channel":"ops"}]"#,
            r#"[{"key":"radio1","channel":"-ops"}]"#,
            r#"[{"key":"radio1","channel":"_ops"}]"#,
            r#"[{"key":"radio 1","channel":"ops"}]"#,
            r#"[{"key":"","channel":"ops"}]"#,
            r#"[{"key":"r","channel":"ops"},{"key":"r","channel":"ops"}]"#,
        ] {
            assert!(matches!(ok(bad), Err(ParseError::Invalid(_))), "{bad}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(ok(&format!(r#"[{{"key":"{long}","channel":"ops"}}]"#)), Err(ParseError::Invalid(_))));
        let many: Vec<String> = (0..=MAX_MEMBERS).map(|i| format!(r#"{{"key":"k{i}","channel":"ops"}}"#)).collect();
        assert!(matches!(ok(&format!("[{}]", many.join(","))), Err(ParseError::Invalid(_))));
        assert!(matches!(parse_client(&hello_json("", "[]")), Err(ParseError::Invalid(_))));
        let long_token = "x".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(parse_client(&hello_json(&long_token, "[]")), Err(ParseError::Invalid(_))));
        for name in ["", "   ", "a\u{7}b", &"n".repeat(MAX_PEER_NAME_LEN + 1)] {
            let h = Hello { token: "t".into(), name: name.into(), members: vec![] };
            assert!(validate_hello(&h).is_err(), "{name:?}");
        }
    }

    const OFFER_SDP: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1 2\r\n\
        a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendrecv\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:2\r\na=end-of-candidates\r\n";

    fn offer(mids: &[(&str, &str)]) -> Offer {
        Offer { sdp: OFFER_SDP.into(), mids: mids.iter().map(|(m, c)| (m.to_string(), c.to_string())).collect() }
    }

    #[test]
    fn offer_validation() {
        assert_eq!(sdp_audio_mids(OFFER_SDP), ["0", "2"]);
        assert!(sdp_fingerprint(OFFER_SDP).unwrap().starts_with("sha-256 7B:8B:"));
        let joined = ["ops", "fire"];
        let pairs = validate_offer(&offer(&[("0", "ops"), ("2", "fire")]), &joined).unwrap();
        assert_eq!(pairs.len(), 2);
        assert!(validate_offer(&offer(&[]), &joined).unwrap().is_empty());
        for bad in [
            offer(&[("0", "admin")]),             // not joined
            offer(&[("0", "ops"), ("2", "ops")]), // channel twice
            offer(&[("1", "ops")]),               // a video m-line
            offer(&[("9", "ops")]),               // not in the SDP
        ] {
            assert!(matches!(validate_offer(&bad, &joined), Err(ParseError::Invalid(_))), "{bad:?}");
        }
        let too_big = format!(r#"{{"type":"offer","sdp":"v=0{}","mids":{{}}}}"#, "x".repeat(MAX_SDP_BYTES));
        assert!(matches!(parse_client(&too_big), Err(ParseError::Invalid(_))));
        assert!(matches!(parse_client(r#"{"type":"offer","sdp":"hello","mids":{}}"#), Err(ParseError::Invalid(_))));
        assert!(matches!(
            parse_client(r#"{"type":"offer","sdp":"v=0","mids":{"a b":"ops"}}"#),
            Err(ParseError::Invalid(_))
        ));
        assert!(matches!(
            parse_client(r#"{"type":"offer","sdp":"v=0","mids":{"0":"OPS"}}"#),
            Err(ParseError::Invalid(_))
        ));
    }

    #[test]
    fn fingerprints_must_be_strong_and_well_formed() {
        let good =
            "sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08";
        let with = |fp: &str| OFFER_SDP.replace(good, fp);
        assert!(check_fingerprints(OFFER_SDP).is_ok());
        assert!(
            check_fingerprints(&with(&good.replace("sha-256", "SHA-256"))).is_ok(),
            "hash names are case-insensitive"
        );
        let sha512 = format!("sha-512 {}", ["ab"; 64].join(":"));
        assert!(check_fingerprints(&with(&sha512)).is_ok());
        for bad in [
            "md5 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35".to_owned(),
            format!("sha-1 {}", ["ab"; 20].join(":")),
            "sha-256 AA:BB".to_owned(),
            "sha-256".to_owned(),
            good.replace("7B", "7G"),
            good.replace("7B:", "7B::"),
            good.replace("7B", "7B8"),
            format!("sha-384 {}", ["ab"; 32].join(":")),
        ] {
            assert!(check_fingerprints(&with(&bad)).is_err(), "{bad}");
        }
        let none = OFFER_SDP.replace(&format!("a=fingerprint:{good}\r\n"), "");
        assert!(check_fingerprints(&none).is_err());
        // A media-level fingerprint is checked too.
        let media_md5 = format!("{OFFER_SDP}a=fingerprint:md5 {}\r\n", ["ab"; 16].join(":"));
        assert!(check_fingerprints(&media_md5).is_err());
    }

    #[test]
    fn end_of_candidates_once_per_media_section() {
        let out = add_end_of_candidates(OFFER_SDP);
        assert_eq!(out.matches("a=end-of-candidates").count(), 3);
        let sections: Vec<&str> = out.split("m=").skip(1).collect();
        assert!(sections.iter().all(|s| s.contains("a=end-of-candidates\r\n")));
        assert!(!out.split("m=").next().unwrap().contains("end-of-candidates"), "not at session level");
        assert_eq!(add_end_of_candidates(&out), out, "idempotent");
        assert_eq!(add_end_of_candidates("v=0\n"), "v=0\r\n");
    }

    #[test]
    fn roster_deltas_carry_only_changes_and_rebuild_the_roster() {
        let e = |id: u64, name: &str, priority: u8| RosterEntry { id, name: name.into(), priority };
        let old = vec![e(1, "radio1@hub", 0), e(2, "console@a", 1), e(3, "console@b", 1)];
        let new = vec![e(1, "radio1@hub", 0), e(3, "console@b", 5), e(4, "console@c", 1)];
        let d = RosterDelta::between("ops", &old, &new).unwrap();
        assert_eq!(d.add, [e(3, "console@b", 5), e(4, "console@c", 1)]);
        assert_eq!(d.remove, [2]);
        assert_eq!(
            ServerMessage::RosterDelta(d.clone()).to_json(),
            r#"{"type":"roster_delta","channel":"ops","add":[{"id":3,"name":"console@b","priority":5},{"id":4,"name":"console@c","priority":1}],"remove":[2]}"#
        );
        let mut roster = old.clone();
        d.apply(&mut roster);
        assert_eq!(roster, [e(1, "radio1@hub", 0), e(3, "console@b", 5), e(4, "console@c", 1)]);
        d.apply(&mut roster);
        assert_eq!(roster.len(), 3, "applying twice changes nothing more");
        assert_eq!(RosterDelta::between("ops", &new, &new), None);

        // One join among 256: the delta is one entry, whatever the roster's size.
        let big: Vec<RosterEntry> = (0..256).map(|i| e(i, &format!("console {i}@x"), 0)).collect();
        let mut bigger = big.clone();
        bigger.push(e(999, "late@x", 0));
        let d = RosterDelta::between("ops", &big, &bigger).unwrap();
        assert_eq!((d.add.len(), d.remove.len()), (1, 0));
        let full = ServerMessage::Roster(Roster { channel: "ops".into(), members: bigger.clone() }).to_json();
        assert!(ServerMessage::RosterDelta(d).to_json().len() * 100 < full.len());

        // Both fields may be absent; unknown ones are ignored.
        let m = parse_server(r#"{"type":"roster_delta","channel":"ops","extra":1}"#).unwrap();
        assert_eq!(m, ServerMessage::RosterDelta(RosterDelta { channel: "ops".into(), add: vec![], remove: vec![] }));
    }
}
