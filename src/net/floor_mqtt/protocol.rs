//! Floor over MQTT as plain data (`docs/mqtt.md`, "Floor over MQTT"): the topics under
//! `roipd/floor/<hub>/`, every payload both ways, and strict parsing of what comes off the
//! wire. Pure: no sockets, no clock, no panics on any input.
//!
//! Floor messages themselves reuse the hub signaling's JSON ([`FloorEvent`], [`Action`]), so a
//! console or a log reader sees the same `granted`/`deny`/`taken`/... everywhere.
//!
//! Every message an edge and its host exchange carries the edge's `session` (new for every MQTT
//! connection of the edge): the host drops what belongs to an older connection, and an offline
//! presence (the edge's last will) only frees the floor of the session it names.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::floor::{ParticipantId, ToArbiter, ToParticipant};
use crate::fleet::auth::FleetKey;
use crate::net::protocol::{is_valid_name, Action, FloorEvent, MAX_MEMBERS, MAX_NAME_LEN};

/// Topic root; `roipd/<device>/…` is the fleet tree, a device called `floor` is refused.
pub const ROOT: &str = "roipd/floor";
/// Largest payload either side parses; bigger ones are dropped unread.
pub const MAX_PAYLOAD: usize = 16 * 1024;
/// Sessions and epochs: random tokens, `[A-Za-z0-9_-]`, at most this long.
pub const MAX_TOKEN_LEN: usize = 64;

/// The topics of one floor hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

/// What a topic under a hub's prefix is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    /// `…/host`: the host's presence (retained, its last will says offline).
    Host,
    /// `…/edge/<device>/presence`: an edge's presence (retained, its last will says offline).
    Presence(String),
    /// `…/edge/<device>/to_host`: join, feeds and floor requests of an edge.
    ToHost(String),
    /// `…/edge/<device>/to_edge`: the host's answers and floor messages for one edge.
    ToEdge(String),
    /// `…/channel/<channel>/holder`: who holds a channel's floor (retained).
    Holder(String),
}

impl Topics {
    /// None when `hub` cannot be one topic level (see [`valid_device`]).
    pub fn new(hub: &str) -> Option<Self> {
        valid_device(hub).then(|| Self { prefix: format!("{ROOT}/{hub}") })
    }

    pub fn host(&self) -> String {
        format!("{}/host", self.prefix)
    }
    pub fn presence(&self, device: &str) -> String {
        format!("{}/edge/{device}/presence", self.prefix)
    }
    pub fn to_host(&self, device: &str) -> String {
        format!("{}/edge/{device}/to_host", self.prefix)
    }
    pub fn to_edge(&self, device: &str) -> String {
        format!("{}/edge/{device}/to_edge", self.prefix)
    }
    pub fn holder(&self, channel: &str) -> String {
        format!("{}/channel/{channel}/holder", self.prefix)
    }
    /// What the host subscribes to: every edge's presence and requests.
    pub fn host_filters(&self) -> [String; 2] {
        [format!("{}/edge/+/presence", self.prefix), format!("{}/edge/+/to_host", self.prefix)]
    }

    /// Which topic this is; None for anything else (other hubs, bad device or channel names).
    pub fn parse(&self, topic: &str) -> Option<Topic> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["host"] => Some(Topic::Host),
            ["edge", device, kind] if valid_device(device) => match *kind {
                "presence" => Some(Topic::Presence(device.to_string())),
                "to_host" => Some(Topic::ToHost(device.to_string())),
                "to_edge" => Some(Topic::ToEdge(device.to_string())),
                _ => None,
            },
            ["channel", channel, "holder"] if is_valid_name(channel) => Some(Topic::Holder(channel.to_string())),
            _ => None,
        }
    }
}

/// A device id usable as one topic level: the config's `[a-z0-9][a-z0-9_-]*`, at most 64
/// bytes; `floor` itself would put the box's fleet topics into this tree.
pub fn valid_device(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && s != "floor"
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// Sessions and epochs: 1-64 of `[A-Za-z0-9_-]`.
pub fn valid_token(s: &str) -> bool {
    (1..=MAX_TOKEN_LEN).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

// ---------------------------------------------------------------------------------------------
// Presence
// ---------------------------------------------------------------------------------------------

/// `…/host`, retained. `epoch` is new at every start of the host: an edge that sees a new one
/// joins again (the host forgot everything).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPresence {
    pub online: bool,
    pub epoch: String,
}

/// `…/edge/<device>/presence`, retained; the offline one is also the connection's last will.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgePresence {
    pub online: bool,
    pub session: String,
}

// ---------------------------------------------------------------------------------------------
// Edge → host
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToHost {
    /// The edge's members; answered by `accepted` or `refused` with the same `join`.
    Join(Join),
    /// The edge's Janus publisher per channel changed (null: not publishing there now).
    Feeds(Feeds),
    /// A floor request or release of one member (the id from `accepted`).
    Floor(FloorRequest),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    pub session: String,
    /// Counts the edge's joins, so an old answer is told from the current one.
    pub join: u64,
    /// The host epoch this join is for (from the host's presence or a refusal): a host with
    /// another epoch refuses it, so a join replayed from an earlier host run changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    pub members: Vec<JoinMember>,
    #[serde(default)]
    pub feeds: BTreeMap<String, Option<u64>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinMember {
    pub key: String,
    pub channel: String,
    #[serde(default)]
    pub priority: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feeds {
    pub session: String,
    pub feeds: BTreeMap<String, Option<u64>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloorRequest {
    pub session: String,
    pub id: u64,
    pub action: Action,
}

impl FloorRequest {
    pub fn new(session: &str, member: ParticipantId, msg: ToArbiter) -> Self {
        let action = match msg {
            // The host uses the priority the member joined with, never one sent later.
            ToArbiter::Request { .. } => Action::Request,
            ToArbiter::Release => Action::Release,
        };
        Self { session: session.to_owned(), id: member.0, action }
    }
}

impl ToHost {
    pub fn session(&self) -> &str {
        match self {
            ToHost::Join(j) => &j.session,
            ToHost::Feeds(f) => &f.session,
            ToHost::Floor(f) => &f.session,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// Host → edge
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToEdge {
    /// The edge's members are in: their participant ids, in join order.
    Accepted(Accepted),
    /// The join was refused (a channel not hosted there, a bad member list).
    Refused(Refused),
    /// A floor message for one member (`id`) or everyone on the channel (no `id`).
    Floor(EdgeFloor),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub session: String,
    pub join: u64,
    /// The host's epoch (as in its presence).
    pub epoch: String,
    pub members: Vec<AcceptedMember>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedMember {
    pub key: String,
    pub channel: String,
    pub id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    pub session: String,
    pub join: u64,
    pub epoch: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeFloor {
    pub session: String,
    #[serde(flatten)]
    pub floor: FloorEvent,
}

impl EdgeFloor {
    pub fn new(
        session: &str,
        channel: &str,
        member: Option<ParticipantId>,
        msg: &ToParticipant,
        holder_name: Option<&str>,
    ) -> Self {
        Self { session: session.to_owned(), floor: FloorEvent::from_router(channel, member, msg, holder_name) }
    }
}

impl ToEdge {
    pub fn session(&self) -> &str {
        match self {
            ToEdge::Accepted(a) => &a.session,
            ToEdge::Refused(r) => &r.session,
            ToEdge::Floor(f) => &f.session,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// Retained holder per channel
// ---------------------------------------------------------------------------------------------

/// `…/channel/<channel>/holder`, retained: who talks, for late joiners and dashboards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderState {
    pub channel: String,
    /// The host's epoch: a holder published by an earlier run is stale.
    pub epoch: String,
    /// None: idle.
    pub holder: Option<HolderInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderInfo {
    pub id: u64,
    pub priority: u8,
    /// As in the router's roster: `port@device` for an edge member.
    #[serde(default)]
    pub name: String,
    /// The edge that holds it (absent when a port of the host itself talks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Why a payload was dropped (logged as a warning; nothing changes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadMessage {
    #[error("payload of {0} bytes exceeds {MAX_PAYLOAD}")]
    TooLarge(usize),
    #[error("not UTF-8 JSON: {0}")]
    NotJson(String),
    #[error("unknown or missing \"type\"")]
    UnknownType,
    #[error("{0}")]
    Invalid(String),
}

fn json(payload: &[u8]) -> Result<Value, BadMessage> {
    if payload.len() > MAX_PAYLOAD {
        return Err(BadMessage::TooLarge(payload.len()));
    }
    // serde_json bounds nesting depth, so hostile input cannot overflow the stack.
    let value: Value = serde_json::from_slice(payload).map_err(|e| BadMessage::NotJson(cut(&e.to_string())))?;
    if !value.is_object() {
        return Err(BadMessage::Invalid("not a JSON object".into()));
    }
    Ok(value)
}

fn typed<T: serde::de::DeserializeOwned>(value: Value, types: &[&str]) -> Result<T, BadMessage> {
    match value.get("type").and_then(Value::as_str) {
        Some(t) if types.contains(&t) => {}
        _ => return Err(BadMessage::UnknownType),
    }
    serde_json::from_value(value).map_err(|e| BadMessage::Invalid(cut(&e.to_string())))
}

fn cut(s: &str) -> String {
    s.chars().take(120).collect()
}

fn invalid(msg: impl Into<String>) -> BadMessage {
    BadMessage::Invalid(msg.into())
}

fn check_session(s: &str) -> Result<(), BadMessage> {
    if valid_token(s) {
        Ok(())
    } else {
        Err(invalid(format!("session/epoch must be 1-{MAX_TOKEN_LEN} of [A-Za-z0-9_-]")))
    }
}

fn check_name(what: &str, s: &str) -> Result<(), BadMessage> {
    if is_valid_name(s) {
        Ok(())
    } else {
        Err(invalid(format!("{what} {:?} must match [a-z0-9][a-z0-9_-]* (max {MAX_NAME_LEN})", cut(s))))
    }
}

fn check_feeds(feeds: &BTreeMap<String, Option<u64>>) -> Result<(), BadMessage> {
    if feeds.len() > MAX_MEMBERS {
        return Err(invalid(format!("at most {MAX_MEMBERS} feeds")));
    }
    feeds.keys().try_for_each(|c| check_name("channel", c))
}

pub fn parse_host_presence(payload: &[u8]) -> Result<HostPresence, BadMessage> {
    let p: HostPresence = serde_json::from_value(json(payload)?).map_err(|e| invalid(cut(&e.to_string())))?;
    check_session(&p.epoch)?;
    Ok(p)
}

pub fn parse_edge_presence(payload: &[u8]) -> Result<EdgePresence, BadMessage> {
    let p: EdgePresence = serde_json::from_value(json(payload)?).map_err(|e| invalid(cut(&e.to_string())))?;
    check_session(&p.session)?;
    Ok(p)
}

/// One message from an edge, fully checked: a session, at most [`MAX_MEMBERS`] members with
/// valid and unique (key, channel), valid channel names in feeds.
pub fn parse_to_host(payload: &[u8]) -> Result<ToHost, BadMessage> {
    let msg: ToHost = typed(json(payload)?, &["join", "feeds", "floor"])?;
    check_session(msg.session())?;
    match &msg {
        ToHost::Join(j) => {
            if let Some(e) = &j.epoch {
                check_session(e)?;
            }
            if j.members.len() > MAX_MEMBERS {
                return Err(invalid(format!("at most {MAX_MEMBERS} members")));
            }
            let mut seen = HashSet::new();
            for m in &j.members {
                check_name("member key", &m.key)?;
                check_name("channel", &m.channel)?;
                if !seen.insert((m.key.as_str(), m.channel.as_str())) {
                    return Err(invalid(format!("member {}/{} listed twice", m.key, m.channel)));
                }
            }
            check_feeds(&j.feeds)?;
        }
        ToHost::Feeds(f) => check_feeds(&f.feeds)?,
        ToHost::Floor(_) => {}
    }
    Ok(msg)
}

/// One message from the host, fully checked; a floor message must map to the floor core.
pub fn parse_to_edge(payload: &[u8]) -> Result<ToEdge, BadMessage> {
    let msg: ToEdge = typed(json(payload)?, &["accepted", "refused", "floor"])?;
    check_session(msg.session())?;
    match &msg {
        ToEdge::Accepted(a) => {
            check_session(&a.epoch)?;
            if a.members.len() > MAX_MEMBERS {
                return Err(invalid(format!("at most {MAX_MEMBERS} members")));
            }
            for m in &a.members {
                check_name("member key", &m.key)?;
                check_name("channel", &m.channel)?;
            }
        }
        ToEdge::Refused(r) => check_session(&r.epoch)?,
        ToEdge::Floor(f) => {
            check_name("channel", &f.floor.channel)?;
            f.floor.to_router().map_err(|e| invalid(e.to_string()))?;
        }
    }
    Ok(msg)
}

pub fn parse_holder(payload: &[u8]) -> Result<HolderState, BadMessage> {
    let h: HolderState = serde_json::from_value(json(payload)?).map_err(|e| invalid(cut(&e.to_string())))?;
    check_name("channel", &h.channel)?;
    check_session(&h.epoch)?;
    Ok(h)
}

pub fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Authentication (`[mqtt] fleet_key_file`; docs/mqtt.md, "Authentication")
// ---------------------------------------------------------------------------------------------

/// A floor message as it travels when the fleet has a key: the message's JSON as a string
/// (`msg`, so the MAC covers the exact bytes), the sender's `run` (the host's epoch, an edge's
/// session) and its `seq`, counting up within the run. The MAC also covers the topic, so a
/// message is only valid where it was published (one edge's `to_edge` is not another's, a
/// host presence is not an edge presence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    pub run: String,
    pub seq: u64,
    pub msg: String,
    pub mac: String,
}

/// A floor payload whose signature (if the fleet has a key) was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The sender's run and sequence number; None without a fleet key.
    pub auth: Option<(String, u64)>,
    pub msg: Vec<u8>,
}

/// Why a floor payload was not accepted: dropped, counted and reported, never acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("unsigned, but this fleet has a key")]
    Unsigned,
    #[error("signed, but this box has no fleet key (`[mqtt] fleet_key_file`)")]
    NoKey,
    #[error("bad envelope: {0}")]
    BadEnvelope(String),
    #[error("bad signature")]
    BadMac,
    #[error("replayed or out of date (run {run}, seq {seq}, last accepted {last})")]
    Replayed { run: String, seq: u64, last: u64 },
    #[error("from a run ({0}) that no accepted message started")]
    UnknownRun(String),
}

fn floor_parts<'a>(topic: &'a str, run: &'a str, seq: &'a str, msg: &'a str) -> [&'a [u8]; 5] {
    [b"roipd-floor-v1", topic.as_bytes(), run.as_bytes(), seq.as_bytes(), msg.as_bytes()]
}

/// Signs what one side sends (or passes it through unchanged without a key). Its counter only
/// goes up, for every run of this sender.
#[derive(Debug, Clone)]
pub struct Sealer {
    key: Option<FleetKey>,
    /// A `Cell`, so sealing fits wherever publishing takes `&self`.
    seq: std::cell::Cell<u64>,
}

impl Sealer {
    pub fn new(key: Option<FleetKey>) -> Self {
        Self { key, seq: std::cell::Cell::new(0) }
    }

    pub fn key(&self) -> Option<&FleetKey> {
        self.key.as_ref()
    }

    /// The payload to publish on `topic` for `msg`, sent by run `run`.
    pub fn seal(&self, topic: &str, run: &str, msg: String) -> String {
        let Some(key) = &self.key else { return msg };
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        let mac = key.mac(&floor_parts(topic, run, &seq.to_string(), &msg));
        to_json(&Sealed { run: run.to_owned(), seq, msg, mac })
    }
}

/// Check a payload that arrived on `topic`: with a key it must be a [`Sealed`] envelope with a
/// good MAC; without one, a plain message (an envelope is refused: it cannot be checked).
/// Replays are the caller's to judge ([`ReplayGuard`]), by what the run means to it.
pub fn open(key: Option<&FleetKey>, topic: &str, payload: &[u8]) -> Result<Opened, AuthError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(AuthError::BadEnvelope(BadMessage::TooLarge(payload.len()).to_string()));
    }
    let value = json(payload).map_err(|e| AuthError::BadEnvelope(e.to_string()))?;
    let signed = value.get("mac").is_some();
    let Some(key) = key else {
        return if signed { Err(AuthError::NoKey) } else { Ok(Opened { auth: None, msg: payload.to_vec() }) };
    };
    if !signed {
        return Err(AuthError::Unsigned);
    }
    let env: Sealed = serde_json::from_value(value).map_err(|e| AuthError::BadEnvelope(cut(&e.to_string())))?;
    if !valid_token(&env.run) {
        return Err(AuthError::BadEnvelope(format!("run must be 1-{MAX_TOKEN_LEN} of [A-Za-z0-9_-]")));
    }
    if !key.verify(&floor_parts(topic, &env.run, &env.seq.to_string(), &env.msg), &env.mac) {
        return Err(AuthError::BadMac);
    }
    Ok(Opened { auth: Some((env.run, env.seq)), msg: env.msg.into_bytes() })
}

/// The last sequence number accepted per run of one sender, for its few latest runs: a message
/// whose number is not above it is a replay (or a QoS 1 duplicate). A run not seen yet is only
/// let in by a message that starts one (`start`: a join on the host, an answer to our join on
/// an edge), which the receiver checks for freshness itself (an epoch, a join number); the
/// oldest run is forgotten beyond `cap`.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    runs: std::collections::VecDeque<(String, u64)>,
    cap: usize,
}

impl ReplayGuard {
    pub fn new(cap: usize) -> Self {
        Self { runs: Default::default(), cap: cap.max(1) }
    }

    /// Accept `seq` of `run` (and remember it), or say why not.
    pub fn check(&mut self, run: &str, seq: u64, start: bool) -> Result<(), AuthError> {
        match self.runs.iter_mut().find(|(r, _)| r == run) {
            Some((_, last)) if seq <= *last => Err(AuthError::Replayed { run: run.to_owned(), seq, last: *last }),
            Some((_, last)) => {
                *last = seq;
                Ok(())
            }
            None if !start => Err(AuthError::UnknownRun(run.to_owned())),
            None => {
                if self.runs.len() >= self.cap {
                    self.runs.pop_front();
                }
                self.runs.push_back((run.to_owned(), seq));
                Ok(())
            }
        }
    }

    pub fn clear(&mut self) {
        self.runs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::floor::{DenyCause, Priority, RevokeCause};

    fn topics() -> Topics {
        Topics::new("hub-1").unwrap()
    }

    #[test]
    fn topics_round_trip_and_refuse_foreign_or_bad_levels() {
        let t = topics();
        assert_eq!(t.host(), "roipd/floor/hub-1/host");
        assert_eq!(t.presence("edge-a"), "roipd/floor/hub-1/edge/edge-a/presence");
        assert_eq!(t.parse(&t.host()), Some(Topic::Host));
        assert_eq!(t.parse(&t.presence("edge-a")), Some(Topic::Presence("edge-a".into())));
        assert_eq!(t.parse(&t.to_host("edge-a")), Some(Topic::ToHost("edge-a".into())));
        assert_eq!(t.parse(&t.to_edge("edge-a")), Some(Topic::ToEdge("edge-a".into())));
        assert_eq!(t.parse(&t.holder("ops")), Some(Topic::Holder("ops".into())));
        assert_eq!(t.host_filters()[0], "roipd/floor/hub-1/edge/+/presence");
        for bad in [
            "roipd/floor/hub-2/host",
            "roipd/floor/hub-1",
            "roipd/floor/hub-1/",
            "roipd/floor/hub-1x/host",
            "roipd/floor/hub-1/edge/EDGE/to_host",
            "roipd/floor/hub-1/edge/a/b/to_host",
            "roipd/floor/hub-1/edge/a/other",
            "roipd/floor/hub-1/channel/Ops/holder",
            "roipd/floor/hub-1/channel/ops",
            "roipd/hub-1/status",
        ] {
            assert_eq!(t.parse(bad), None, "{bad}");
        }
        assert!(Topics::new("floor").is_none(), "`floor` would mix with the fleet tree");
        assert!(Topics::new("a/b").is_none());
        assert!(Topics::new("+").is_none());
        assert!(Topics::new("").is_none());
    }

    #[test]
    fn edge_messages_round_trip() {
        let join = ToHost::Join(Join {
            session: "s1".into(),
            join: 3,
            epoch: Some("e1".into()),
            members: vec![JoinMember { key: "radio1".into(), channel: "ops".into(), priority: 100 }],
            feeds: BTreeMap::from([("ops".into(), Some(42))]),
        });
        assert_eq!(parse_to_host(join.to_json().as_bytes()).unwrap(), join);
        let floor =
            ToHost::Floor(FloorRequest::new("s1", ParticipantId(7), ToArbiter::Request { priority: Priority(9) }));
        let text = floor.to_json();
        assert_eq!(text, r#"{"type":"floor","session":"s1","id":7,"action":"request"}"#);
        assert_eq!(parse_to_host(text.as_bytes()).unwrap(), floor);
        let feeds = ToHost::Feeds(Feeds { session: "s1".into(), feeds: BTreeMap::from([("ops".into(), None)]) });
        assert_eq!(parse_to_host(feeds.to_json().as_bytes()).unwrap(), feeds);
    }

    #[test]
    fn host_messages_round_trip_every_floor_message() {
        let msgs = [
            ToParticipant::Granted,
            ToParticipant::Deny { cause: DenyCause::Busy { holder: ParticipantId(2) } },
            ToParticipant::Deny { cause: DenyCause::QueueFull },
            ToParticipant::Queued { position: 2 },
            ToParticipant::Revoke { cause: RevokeCause::Preempted { by: ParticipantId(5) } },
            ToParticipant::Revoke { cause: RevokeCause::MaxTalkTime },
            ToParticipant::Revoke { cause: RevokeCause::NoMedia },
            ToParticipant::Taken { holder: ParticipantId(2), priority: Priority::DISPATCH },
            ToParticipant::Idle,
        ];
        for msg in msgs {
            let member =
                (!matches!(msg, ToParticipant::Taken { .. } | ToParticipant::Idle)).then_some(ParticipantId(1));
            let m = ToEdge::Floor(EdgeFloor::new("s1", "ops", member, &msg, Some("radio1@edge-a")));
            let ToEdge::Floor(back) = parse_to_edge(m.to_json().as_bytes()).unwrap() else { panic!() };
            assert_eq!(back.floor.to_router().unwrap().0, msg);
            assert_eq!(back.floor.id, member.map(|m| m.0));
        }
        let accepted = ToEdge::Accepted(Accepted {
            session: "s1".into(),
            join: 1,
            epoch: "e1".into(),
            members: vec![AcceptedMember { key: "radio1".into(), channel: "ops".into(), id: 4 }],
        });
        assert_eq!(parse_to_edge(accepted.to_json().as_bytes()).unwrap(), accepted);
        let refused =
            ToEdge::Refused(Refused { session: "s1".into(), join: 1, epoch: "e1".into(), reason: "no".into() });
        assert_eq!(parse_to_edge(refused.to_json().as_bytes()).unwrap(), refused);
    }

    #[test]
    fn presence_and_holder_round_trip() {
        let h = HostPresence { online: true, epoch: "e-1".into() };
        assert_eq!(parse_host_presence(to_json(&h).as_bytes()).unwrap(), h);
        let e = EdgePresence { online: false, session: "abc".into() };
        assert_eq!(parse_edge_presence(to_json(&e).as_bytes()).unwrap(), e);
        let s = HolderState {
            channel: "ops".into(),
            epoch: "e1".into(),
            holder: Some(HolderInfo {
                id: 3,
                priority: 0,
                name: "radio1@edge-a".into(),
                device: Some("edge-a".into()),
            }),
        };
        assert_eq!(parse_holder(to_json(&s).as_bytes()).unwrap(), s);
        let idle = HolderState { channel: "ops".into(), epoch: "e1".into(), holder: None };
        assert_eq!(parse_holder(to_json(&idle).as_bytes()).unwrap(), idle);
    }

    /// Whatever arrives on a floor topic, parsing returns an error, never panics.
    #[test]
    fn malformed_payloads_are_errors() {
        let long = "x".repeat(MAX_PAYLOAD + 1);
        let deep = "[".repeat(10_000);
        let bad: Vec<&[u8]> = vec![
            b"",
            b"\xff\xfe",
            b"null",
            b"[]",
            b"42",
            b"{}",
            b"{\"type\":7}",
            b"{\"type\":\"nope\",\"session\":\"s\"}",
            b"{\"type\":\"join\"}",
            b"{\"type\":\"join\",\"session\":\"\",\"join\":1,\"members\":[]}",
            b"{\"type\":\"join\",\"session\":\"s p\",\"join\":1,\"members\":[]}",
            b"{\"type\":\"join\",\"session\":\"s\",\"join\":-1,\"members\":[]}",
            b"{\"type\":\"join\",\"session\":\"s\",\"join\":1,\"members\":[{\"key\":\"R/1\",\"channel\":\"ops\"}]}",
            b"{\"type\":\"join\",\"session\":\"s\",\"join\":1,\"members\":[{\"key\":\"r\",\"channel\":\"#\"}]}",
            b"{\"type\":\"join\",\"session\":\"s\",\"join\":1,\"members\":[{\"key\":\"r\",\"channel\":\"ops\",\"priority\":300}]}",
            b"{\"type\":\"join\",\"session\":\"s\",\"join\":1,\"members\":[{\"key\":\"r\",\"channel\":\"a\"},{\"key\":\"r\",\"channel\":\"a\"}]}",
            b"{\"type\":\"join\",\"session\":\"s\",\"join\":1,\"members\":[],\"feeds\":{\"+\":1}}",
            b"{\"type\":\"feeds\",\"session\":\"s\",\"feeds\":{\"ops\":\"x\"}}",
            b"{\"type\":\"floor\",\"session\":\"s\",\"id\":1,\"action\":\"grab\"}",
            b"{\"type\":\"floor\",\"session\":\"s\",\"id\":\"1\",\"action\":\"request\"}",
            b"{\"type\":\"floor\",\"id\":1,\"action\":\"request\"}",
            long.as_bytes(),
            deep.as_bytes(),
        ];
        for p in &bad {
            assert!(parse_to_host(p).is_err(), "to_host accepted {:?}", String::from_utf8_lossy(&p[..p.len().min(80)]));
        }
        let many: Vec<String> = (0..=MAX_MEMBERS).map(|i| format!("{{\"key\":\"k{i}\",\"channel\":\"c\"}}")).collect();
        let too_many = format!("{{\"type\":\"join\",\"session\":\"s\",\"join\":1,\"members\":[{}]}}", many.join(","));
        assert!(parse_to_host(too_many.as_bytes()).is_err());

        let bad_edge: Vec<&[u8]> = vec![
            b"{}",
            b"{\"type\":\"accepted\",\"session\":\"s\",\"join\":1,\"members\":[]}",
            b"{\"type\":\"accepted\",\"session\":\"s\",\"join\":1,\"epoch\":\"e\",\"members\":[{\"key\":\"r\",\"channel\":\"ops\"}]}",
            b"{\"type\":\"floor\",\"session\":\"s\",\"channel\":\"ops\",\"event\":\"taken\"}",
            b"{\"type\":\"floor\",\"session\":\"s\",\"channel\":\"ops\",\"event\":\"deny\",\"id\":1}",
            b"{\"type\":\"floor\",\"session\":\"s\",\"channel\":\"ops\",\"event\":\"queued\",\"id\":1}",
            b"{\"type\":\"floor\",\"session\":\"s\",\"channel\":\"ops\",\"event\":\"explode\"}",
            b"{\"type\":\"floor\",\"session\":\"s\",\"channel\":\"o/p\",\"event\":\"idle\"}",
            b"{\"type\":\"floor\",\"channel\":\"ops\",\"event\":\"idle\"}",
            b"{\"type\":\"join\",\"session\":\"s\",\"join\":1,\"members\":[]}",
            long.as_bytes(),
            deep.as_bytes(),
        ];
        for p in &bad_edge {
            assert!(parse_to_edge(p).is_err(), "to_edge accepted {:?}", String::from_utf8_lossy(&p[..p.len().min(80)]));
        }
        for p in [&b"{}"[..], b"{\"online\":\"yes\",\"epoch\":\"e\"}", b"{\"online\":true,\"epoch\":\"\"}", b"[]"] {
            assert!(parse_host_presence(p).is_err());
            assert!(parse_edge_presence(p).is_err());
        }
        for p in [&b"{}"[..], b"{\"channel\":\"ops\",\"epoch\":\"e\",\"holder\":{\"id\":-3,\"priority\":0}}"] {
            assert!(parse_holder(p).is_err());
        }
    }

    fn key() -> FleetKey {
        FleetKey::new(b"0123456789abcdef0123456789abcdef").unwrap()
    }

    #[test]
    fn sealed_messages_open_only_with_the_key_on_their_own_topic() {
        let t = topics();
        let msg = ToEdge::Floor(EdgeFloor::new(
            "s1",
            "ops",
            None,
            &ToParticipant::Taken { holder: ParticipantId(2), priority: Priority(0) },
            Some("radio1@edge-a"),
        ))
        .to_json();
        let sealer = Sealer::new(Some(key()));
        let topic = t.to_edge("edge-b");
        let payload = sealer.seal(&topic, "e1", msg.clone());
        let opened = open(Some(&key()), &topic, payload.as_bytes()).unwrap();
        assert_eq!(opened, Opened { auth: Some(("e1".into(), 1)), msg: msg.clone().into_bytes() });
        assert!(parse_to_edge(&opened.msg).is_ok());
        assert!(sealer.seal(&topic, "e1", msg.clone()).contains("\"seq\":2"), "the counter goes up");

        // The same bytes on another edge's topic, under another key, or changed: refused.
        assert_eq!(open(Some(&key()), &t.to_edge("edge-c"), payload.as_bytes()), Err(AuthError::BadMac));
        let other = FleetKey::new(b"0123456789abcdef0123456789abcdeX").unwrap();
        assert_eq!(open(Some(&other), &topic, payload.as_bytes()), Err(AuthError::BadMac));
        for (from, to) in [("\"seq\":1", "\"seq\":9"), ("\"run\":\"e1\"", "\"run\":\"e2\""), ("taken", "idle")] {
            let forged = payload.replace(from, to);
            assert_ne!(forged, payload);
            assert!(open(Some(&key()), &topic, forged.as_bytes()).is_err(), "{forged}");
        }
        // Unsigned where a key is set (the forged `taken` of issue 15), signed where none is.
        assert_eq!(open(Some(&key()), &topic, msg.as_bytes()), Err(AuthError::Unsigned));
        assert_eq!(open(None, &topic, payload.as_bytes()), Err(AuthError::NoKey));
        assert_eq!(open(None, &topic, msg.as_bytes()).unwrap().auth, None);
        // Without a key the sealer passes messages through.
        assert_eq!(Sealer::new(None).seal(&topic, "e1", msg.clone()), msg);
    }

    #[test]
    fn a_forged_retained_host_offline_does_not_open() {
        let t = topics();
        let offline = to_json(&HostPresence { online: false, epoch: "e1".into() });
        assert_eq!(open(Some(&key()), &t.host(), offline.as_bytes()), Err(AuthError::Unsigned));
        // A host presence signed for an edge's presence topic is not a host presence.
        let sealed = Sealer::new(Some(key())).seal(&t.presence("edge-a"), "e1", offline.clone());
        assert_eq!(open(Some(&key()), &t.host(), sealed.as_bytes()), Err(AuthError::BadMac));
        let good = Sealer::new(Some(key())).seal(&t.host(), "e1", offline);
        assert!(parse_host_presence(&open(Some(&key()), &t.host(), good.as_bytes()).unwrap().msg).is_ok());
    }

    #[test]
    fn replays_and_unknown_runs_are_refused() {
        let mut g = ReplayGuard::new(2);
        assert_eq!(g.check("s1", 5, false), Err(AuthError::UnknownRun("s1".into())), "only a start opens a run");
        g.check("s1", 5, true).unwrap();
        g.check("s1", 6, false).unwrap();
        for replay in [6, 5, 1, 0] {
            assert!(matches!(g.check("s1", replay, false), Err(AuthError::Replayed { .. })), "{replay}");
            assert!(matches!(g.check("s1", replay, true), Err(AuthError::Replayed { .. })), "a start replayed");
        }
        g.check("s1", 100, false).unwrap();
        g.check("s2", 1, true).unwrap();
        g.check("s3", 1, true).unwrap();
        // s1 is forgotten past the cap (2 runs): only a start can bring it back.
        assert_eq!(g.check("s1", 101, false), Err(AuthError::UnknownRun("s1".into())));
        g.check("s2", 2, false).unwrap();
        g.clear();
        assert!(g.check("s2", 3, false).is_err());
    }

    /// Whatever arrives, opening returns an error or a message, never panics.
    #[test]
    fn malformed_envelopes_are_errors() {
        let t = topics().host();
        let mac = "0".repeat(64);
        let long = "x".repeat(MAX_PAYLOAD + 1);
        let deep = "[".repeat(10_000);
        for p in [
            "".to_string(),
            "{".into(),
            "[]".into(),
            long,
            deep,
            format!(r#"{{"mac":"{mac}"}}"#),
            format!(r#"{{"run":"e 1","seq":1,"msg":"{{}}","mac":"{mac}"}}"#),
            format!(r#"{{"run":"e1","seq":-1,"msg":"{{}}","mac":"{mac}"}}"#),
            format!(r#"{{"run":"e1","seq":1,"msg":7,"mac":"{mac}"}}"#),
            format!(r#"{{"run":"e1","seq":1,"msg":"{{}}","mac":"{mac}","extra":1}}"#),
            format!(r#"{{"run":"e1","seq":1,"msg":"{{}}","mac":"{mac}"}}"#),
        ] {
            assert!(open(Some(&key()), &t, p.as_bytes()).is_err(), "{}", &p[..p.len().min(80)]);
        }
    }
}
