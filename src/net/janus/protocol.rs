//! The Janus API (1.x) as JSON text, and the VideoRoom plugin's requests and replies: builders
//! for everything roipd sends, a parser for everything Janus sends. Pure: no I/O, no clock.
//!
//! Janus wraps plugin traffic in its own envelope. A request carries `"janus"` (what to do)
//! and a `"transaction"` string; the reply repeats the transaction:
//! - `create`/`attach` → `success` with `data.id` (the session or handle id);
//! - `keepalive` → `ack`;
//! - `message` → for VideoRoom's synchronous requests (`exists`, `create`, `moderate`) a
//!   `success` with the plugin's reply in `plugindata`; for asynchronous ones (`join`,
//!   `publish`, `configure`, `start`, `update`) an `ack` first and then an `event` with the
//!   same transaction, `plugindata` and possibly a `jsep` (SDP);
//! - a failure of Janus itself is `error` with `{code, reason}` (458: no such session);
//!   a failure of the plugin is a `success`/`event` whose plugin data has `error_code`.
//!
//! Janus also sends events nobody asked for: plugin events (a publisher joined or left, a
//! renegotiation offer for a subscription), `webrtcup`, `hangup`, `media`, `slowlink`,
//! `detached` and `timeout`; they name the handle in `sender`.
//!
//! Parsing is lenient about what roipd does not use (unknown fields and event kinds are kept
//! as `Other`) and strict about what it does (an id that is not a number is an error).

use serde_json::{json, Map, Value};

/// WebSocket subprotocol of the Janus API.
pub const SUBPROTOCOL: &str = "janus-protocol";
/// The plugin every handle attaches to.
pub const VIDEOROOM: &str = "janus.plugin.videoroom";
/// Janus messages are small (an SDP, a roster); anything larger is refused by the socket.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Janus core error codes roipd acts on.
pub mod codes {
    /// The session is gone (Janus restarted, or it timed out): rebuild everything.
    pub const SESSION_NOT_FOUND: u32 = 458;
    pub const HANDLE_NOT_FOUND: u32 = 459;
    /// VideoRoom: no such room.
    pub const NO_SUCH_ROOM: u32 = 426;
    /// VideoRoom: `create` for a room that exists (another box was first): fine.
    pub const ROOM_EXISTS: u32 = 427;
    /// VideoRoom: no such feed (a publisher left before we subscribed).
    pub const NO_SUCH_FEED: u32 = 428;
    /// VideoRoom: a mandatory element is missing (e.g. the `pin` of a room that has one).
    pub const MISSING_ELEMENT: u32 = 429;
    /// VideoRoom: wrong `secret` or `pin`.
    pub const UNAUTHORIZED: u32 = 433;
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// An SDP offer or answer. roipd always sends its candidates in the SDP (`"trickle": false`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jsep {
    pub kind: JsepKind,
    pub sdp: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsepKind {
    Offer,
    Answer,
}

impl JsepKind {
    fn as_str(self) -> &'static str {
        match self {
            JsepKind::Offer => "offer",
            JsepKind::Answer => "answer",
        }
    }
}

/// What every request shares: the transaction and, if Janus is configured with one, the API
/// secret (`apisecret`).
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub transaction: &'a str,
    pub api_secret: Option<&'a str>,
}

impl Envelope<'_> {
    fn request(&self, janus: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("janus".into(), janus.into());
        m.insert("transaction".into(), self.transaction.into());
        if let Some(s) = self.api_secret {
            m.insert("apisecret".into(), s.into());
        }
        m
    }
}

fn text(m: Map<String, Value>) -> String {
    Value::Object(m).to_string()
}

/// `create`: a new Janus session.
pub fn create_session(e: Envelope) -> String {
    text(e.request("create"))
}

/// `attach` a new handle to the VideoRoom plugin.
pub fn attach(e: Envelope, session: u64) -> String {
    let mut m = e.request("attach");
    m.insert("session_id".into(), session.into());
    m.insert("plugin".into(), VIDEOROOM.into());
    text(m)
}

/// `keepalive`: Janus drops sessions silent for `session_timeout` (60 s by default).
pub fn keepalive(e: Envelope, session: u64) -> String {
    let mut m = e.request("keepalive");
    m.insert("session_id".into(), session.into());
    text(m)
}

/// `destroy`: the session and every handle in it, on a clean shutdown.
pub fn destroy_session(e: Envelope, session: u64) -> String {
    let mut m = e.request("destroy");
    m.insert("session_id".into(), session.into());
    text(m)
}

/// A plugin request (`body`, from the builders below) on one handle, with an SDP if any.
pub fn message(e: Envelope, session: u64, handle: u64, body: Value, jsep: Option<&Jsep>) -> String {
    let mut m = e.request("message");
    m.insert("session_id".into(), session.into());
    m.insert("handle_id".into(), handle.into());
    m.insert("body".into(), body);
    if let Some(j) = jsep {
        m.insert("jsep".into(), json!({ "type": j.kind.as_str(), "sdp": j.sdp, "trickle": false }));
    }
    text(m)
}

/// How a missing room is created (VideoRoom `create`).
#[derive(Clone, PartialEq, Eq)]
pub struct RoomSettings {
    pub room: u64,
    pub description: String,
    /// Needed to edit, destroy and `moderate` the room.
    pub secret: Option<String>,
    /// Needed to join the room.
    pub pin: Option<String>,
    /// Janus's `admin_key`, if its VideoRoom config limits who may create rooms.
    pub admin_key: Option<String>,
    /// How many may publish at once (every box on the channel is a publisher).
    pub publishers: u32,
}

impl std::fmt::Debug for RoomSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("RoomSettings")
            .field("room", &self.room)
            .field("description", &self.description)
            .field("secret", &redact(&self.secret))
            .field("pin", &redact(&self.pin))
            .field("admin_key", &redact(&self.admin_key))
            .field("publishers", &self.publishers)
            .finish()
    }
}

/// VideoRoom `exists` (synchronous).
pub fn exists(room: u64) -> Value {
    json!({ "request": "exists", "room": room })
}

/// VideoRoom `edit` that changes nothing (synchronous): Janus answers `edited` only for the
/// room's own secret, or for any secret if the room has none; `433` otherwise. roipd asks it
/// with its secret (can this box moderate?) and with a wrong one (does the room have a secret?).
pub fn edit_probe(room: u64, secret: &str) -> Value {
    json!({ "request": "edit", "room": room, "secret": secret })
}

/// VideoRoom `create` (synchronous): an audio-only Opus room with in-band FEC, not saved to
/// Janus's config file (roipd recreates it after a Janus restart).
pub fn create_room(r: &RoomSettings) -> Value {
    let mut body = json!({
        "request": "create",
        "room": r.room,
        "permanent": false,
        "description": r.description,
        "is_private": true,
        "publishers": r.publishers.max(1),
        "audiocodec": "opus",
        "opus_fec": true,
    });
    let m = body.as_object_mut().expect("object literal");
    for (key, value) in [("secret", &r.secret), ("pin", &r.pin), ("admin_key", &r.admin_key)] {
        if let Some(v) = value {
            m.insert(key.into(), v.as_str().into());
        }
    }
    body
}

/// VideoRoom `join` as a publisher (asynchronous; `joined` tells our id and who publishes).
pub fn join_publisher(room: u64, display: &str, pin: Option<&str>) -> Value {
    let mut body = json!({ "request": "join", "ptype": "publisher", "room": room, "display": display });
    if let Some(p) = pin {
        body["pin"] = p.into();
    }
    body
}

/// VideoRoom `publish` (asynchronous; goes with our offer, `configured` brings the answer).
pub fn publish(display: &str) -> Value {
    json!({ "request": "publish", "audiocodec": "opus", "display": display })
}

/// VideoRoom `configure` of a publisher: relay our stream `mid` to subscribers or not. Idle
/// ports say `false`; only the floor holder says `true`.
pub fn configure_send(mid: &str, send: bool) -> Value {
    json!({ "request": "configure", "streams": [{ "mid": mid, "send": send }] })
}

/// One publisher stream: `feed` is the publisher's id, `mid` its stream.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamRef {
    pub feed: u64,
    pub mid: String,
}

fn stream_refs(streams: &[StreamRef]) -> Vec<Value> {
    streams.iter().map(|s| json!({ "feed": s.feed, "mid": s.mid })).collect()
}

/// VideoRoom `join` as a multistream subscriber (asynchronous; `attached` brings Janus's
/// offer). `streams` must not be empty: Janus refuses a subscription to nothing.
/// `autoupdate`: Janus renegotiates by itself when a subscribed publisher leaves.
pub fn join_subscriber(room: u64, private_id: Option<u64>, pin: Option<&str>, streams: &[StreamRef]) -> Value {
    let mut body = json!({
        "request": "join",
        "ptype": "subscriber",
        "room": room,
        "use_msid": false,
        "autoupdate": true,
        "streams": stream_refs(streams),
    });
    if let Some(id) = private_id {
        body["private_id"] = id.into();
    }
    if let Some(p) = pin {
        body["pin"] = p.into();
    }
    body
}

/// VideoRoom `update` of a subscription (asynchronous; `updated` brings a new offer, or
/// `updating` says one will follow). At least one list must be non-empty.
pub fn update_subscription(subscribe: &[StreamRef], unsubscribe: &[StreamRef]) -> Value {
    let mut body = json!({ "request": "update" });
    if !subscribe.is_empty() {
        body["subscribe"] = stream_refs(subscribe).into();
    }
    if !unsubscribe.is_empty() {
        body["unsubscribe"] = stream_refs(unsubscribe).into();
    }
    body
}

/// VideoRoom `start` of a subscription: goes with our answer to Janus's offer.
pub fn start() -> Value {
    json!({ "request": "start" })
}

/// VideoRoom `configure` of a subscription: relay each listed subscription `mid` or not
/// (listen/mute a channel without renegotiating).
pub fn configure_receive(mids: &[(String, bool)]) -> Value {
    let streams: Vec<Value> = mids.iter().map(|(mid, send)| json!({ "mid": mid, "send": send })).collect();
    json!({ "request": "configure", "streams": streams })
}

/// VideoRoom `moderate` (synchronous): mute or unmute publisher `id`'s stream `mid` for
/// everyone (the hub enforces its floor decisions with it).
pub fn moderate(room: u64, secret: Option<&str>, id: u64, mid: &str, mute: bool) -> Value {
    let mut body = json!({ "request": "moderate", "room": room, "id": id, "mid": mid, "mute": mute });
    if let Some(s) = secret {
        body["secret"] = s.into();
    }
    body
}

/// VideoRoom `leave`.
pub fn leave() -> Value {
    json!({ "request": "leave" })
}

// ---------------------------------------------------------------------------------------------
// Replies and events
// ---------------------------------------------------------------------------------------------

/// Something Janus sent that roipd cannot use as it stands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Janus message: {0}")]
pub struct ParseError(pub String);

fn bad(what: impl Into<String>) -> ParseError {
    ParseError(what.into())
}

/// One message from Janus.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    /// Present on replies; absent on events nobody asked for.
    pub transaction: Option<String>,
    pub session: Option<u64>,
    /// The handle an event or plugin reply comes from.
    pub sender: Option<u64>,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `success`: `id` is `data.id` (a new session or handle); `plugin` a synchronous plugin
    /// reply.
    Success { id: Option<u64>, plugin: Option<VideoRoom> },
    /// `ack`: a keepalive answered, or an asynchronous request accepted.
    Ack,
    /// `error` of Janus itself.
    Error { code: u32, reason: String },
    /// `event`: from the plugin (asynchronous replies, room events), maybe with an SDP.
    Event { plugin: Option<VideoRoom>, jsep: Option<Jsep> },
    /// The PeerConnection of `sender` is up (ICE and DTLS).
    WebrtcUp,
    /// The PeerConnection of `sender` is gone.
    Hangup { reason: String },
    /// Janus starts or stops receiving media of `kind` on `sender`.
    Media { kind: String, receiving: bool },
    /// The handle `sender` is gone.
    Detached,
    /// The session timed out (no keepalive).
    Timeout,
    /// Anything else (`slowlink`, `trickle`, newer kinds): nothing to act on.
    Other(String),
}

/// A VideoRoom plugin reply or event.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoRoom {
    /// `exists`.
    Exists { room: u64, exists: bool },
    /// `create`.
    Created { room: u64 },
    /// `edit`.
    Edited { room: u64 },
    /// A plain `success` (e.g. `moderate`).
    Success,
    /// Our `join` as a publisher: our id, our private id, who publishes now.
    Joined { room: u64, id: u64, private_id: Option<u64>, publishers: Vec<Publisher> },
    /// A subscription's first offer: its streams.
    Attached { room: u64, streams: Vec<SubStream> },
    /// A subscription changed; `streams` is absent when nothing needs renegotiating.
    Updated { streams: Option<Vec<SubStream>> },
    /// An update was postponed; an `updated` with an offer follows.
    Updating,
    /// The room was destroyed.
    Destroyed { room: u64 },
    /// A plugin error (`error_code`, `error`).
    Error { code: u32, error: String },
    /// `event` carrying one of the room facts below.
    Event(RoomEvent),
    /// Any other `videoroom` value (`talking`, …): nothing to act on.
    Other(String),
}

/// The fact a VideoRoom `event` carries.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomEvent {
    /// Publishers that started publishing.
    Publishers(Vec<Publisher>),
    /// A publisher stopped publishing (`Me`: we did).
    Unpublished(Who),
    /// A participant left the room (`Me`: we did).
    Leaving(Who),
    /// A participant was kicked.
    Kicked(Who),
    /// `publish`/`configure` done.
    Configured,
    /// `start` done.
    Started,
    Paused,
    /// A subscription was closed.
    Left,
    /// A moderator muted or unmuted publisher `id`'s stream `mid`.
    Moderation {
        id: u64,
        mid: String,
        muted: bool,
    },
    /// Anything else (`joining`, `switched`, …).
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Me,
    Feed(u64),
}

/// An active publisher in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publisher {
    pub id: u64,
    pub display: Option<String>,
    pub streams: Vec<PubStream>,
}

impl Publisher {
    /// The publisher's audio streams one can subscribe to, as references.
    pub fn audio(&self) -> impl Iterator<Item = StreamRef> + '_ {
        self.streams
            .iter()
            .filter(|s| s.kind == "audio" && !s.disabled)
            .map(|s| StreamRef { feed: self.id, mid: s.mid.clone() })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubStream {
    /// `audio`, `video` or `data`.
    pub kind: String,
    pub mid: String,
    pub disabled: bool,
    pub codec: Option<String>,
    pub moderated: bool,
}

/// One m-line of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubStream {
    /// The m-line's mid in our subscription's SDP.
    pub mid: String,
    pub kind: String,
    /// False once its publisher is gone (the m-line stays, inactive).
    pub active: bool,
    pub feed: Option<u64>,
    pub feed_mid: Option<String>,
    pub feed_display: Option<String>,
    /// Whether Janus relays it to us (subscriber `configure`).
    pub send: bool,
}

impl SubStream {
    /// The publisher stream this m-line carries, if any.
    pub fn source(&self) -> Option<StreamRef> {
        match (self.active, self.feed, &self.feed_mid) {
            (true, Some(feed), Some(mid)) => Some(StreamRef { feed, mid: mid.clone() }),
            _ => None,
        }
    }
}

/// Parse one text frame from Janus.
pub fn parse(text: &str) -> Result<Incoming, ParseError> {
    let v: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let o = v.as_object().ok_or_else(|| bad("not an object"))?;
    let janus = o.get("janus").and_then(Value::as_str).ok_or_else(|| bad("no \"janus\" field"))?;
    let transaction = match o.get("transaction") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad("transaction is not a string")),
    };
    let session = opt_id(o, "session_id")?;
    let sender = opt_id(o, "sender")?;
    let kind = match janus {
        "success" => {
            let id = match o.get("data") {
                Some(d) => opt_id(d.as_object().ok_or_else(|| bad("data is not an object"))?, "id")?,
                None => None,
            };
            Kind::Success { id, plugin: plugin_data(o)? }
        }
        "ack" => Kind::Ack,
        "error" => {
            let e = o.get("error").and_then(Value::as_object).ok_or_else(|| bad("error without \"error\""))?;
            let code = e.get("code").and_then(Value::as_u64).ok_or_else(|| bad("error without a code"))?;
            let reason = e.get("reason").and_then(Value::as_str).unwrap_or("").to_owned();
            Kind::Error { code: code.min(u64::from(u32::MAX)) as u32, reason }
        }
        "event" => Kind::Event { plugin: plugin_data(o)?, jsep: jsep(o)? },
        "webrtcup" => Kind::WebrtcUp,
        "hangup" => Kind::Hangup { reason: o.get("reason").and_then(Value::as_str).unwrap_or("").to_owned() },
        "media" => Kind::Media {
            kind: o.get("type").and_then(Value::as_str).unwrap_or("").to_owned(),
            receiving: o.get("receiving").and_then(Value::as_bool).unwrap_or(false),
        },
        "detached" => Kind::Detached,
        "timeout" => Kind::Timeout,
        other => Kind::Other(other.to_owned()),
    };
    Ok(Incoming { transaction, session, sender, kind })
}

/// A positive integer id; Janus ids are below 2^53. (`string_ids` rooms are not supported.)
fn id_of(v: &Value, what: &str) -> Result<u64, ParseError> {
    match v.as_u64() {
        Some(n) if n > 0 => Ok(n),
        _ => Err(bad(format!("{what} is not a positive integer: {v}"))),
    }
}

fn opt_id(o: &Map<String, Value>, key: &str) -> Result<Option<u64>, ParseError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => id_of(v, key).map(Some),
    }
}

fn req_id(o: &Map<String, Value>, key: &str) -> Result<u64, ParseError> {
    opt_id(o, key)?.ok_or_else(|| bad(format!("no {key}")))
}

fn opt_str(o: &Map<String, Value>, key: &str) -> Option<String> {
    o.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn jsep(o: &Map<String, Value>) -> Result<Option<Jsep>, ParseError> {
    let Some(j) = o.get("jsep") else { return Ok(None) };
    let j = j.as_object().ok_or_else(|| bad("jsep is not an object"))?;
    let kind = match j.get("type").and_then(Value::as_str) {
        Some("offer") => JsepKind::Offer,
        Some("answer") => JsepKind::Answer,
        other => return Err(bad(format!("jsep type {other:?}"))),
    };
    let sdp = j.get("sdp").and_then(Value::as_str).ok_or_else(|| bad("jsep without sdp"))?.to_owned();
    Ok(Some(Jsep { kind, sdp }))
}

fn plugin_data(o: &Map<String, Value>) -> Result<Option<VideoRoom>, ParseError> {
    let Some(pd) = o.get("plugindata") else { return Ok(None) };
    let pd = pd.as_object().ok_or_else(|| bad("plugindata is not an object"))?;
    if pd.get("plugin").and_then(Value::as_str) != Some(VIDEOROOM) {
        return Ok(Some(VideoRoom::Other("another plugin".into())));
    }
    let data = pd.get("data").and_then(Value::as_object).ok_or_else(|| bad("plugindata without data"))?;
    videoroom(data).map(Some)
}

fn videoroom(d: &Map<String, Value>) -> Result<VideoRoom, ParseError> {
    if let Some(code) = d.get("error_code") {
        let code = code.as_u64().ok_or_else(|| bad("error_code is not a number"))?;
        return Ok(VideoRoom::Error {
            code: code.min(u64::from(u32::MAX)) as u32,
            error: opt_str(d, "error").unwrap_or_default(),
        });
    }
    let what = d.get("videoroom").and_then(Value::as_str).ok_or_else(|| bad("plugin data without \"videoroom\""))?;
    Ok(match what {
        "success" if d.contains_key("exists") => VideoRoom::Exists {
            room: req_id(d, "room")?,
            exists: d.get("exists").and_then(Value::as_bool).ok_or_else(|| bad("exists is not a bool"))?,
        },
        "success" => VideoRoom::Success,
        "created" => VideoRoom::Created { room: req_id(d, "room")? },
        "edited" => VideoRoom::Edited { room: req_id(d, "room")? },
        "joined" => VideoRoom::Joined {
            room: req_id(d, "room")?,
            id: req_id(d, "id")?,
            private_id: opt_id(d, "private_id")?,
            publishers: publishers(d.get("publishers"))?,
        },
        "attached" => VideoRoom::Attached { room: req_id(d, "room")?, streams: sub_streams(d.get("streams"))? },
        "updated" => VideoRoom::Updated {
            streams: match d.get("streams") {
                None | Some(Value::Null) => None,
                s => Some(sub_streams(s)?),
            },
        },
        "updating" => VideoRoom::Updating,
        "destroyed" => VideoRoom::Destroyed { room: opt_id(d, "room")?.unwrap_or(0) },
        "event" => VideoRoom::Event(room_event(d)?),
        other => VideoRoom::Other(other.to_owned()),
    })
}

fn who(v: &Value, what: &str) -> Result<Who, ParseError> {
    if v.as_str() == Some("ok") {
        Ok(Who::Me)
    } else {
        id_of(v, what).map(Who::Feed)
    }
}

fn room_event(d: &Map<String, Value>) -> Result<RoomEvent, ParseError> {
    if let Some(p) = d.get("publishers") {
        return Ok(RoomEvent::Publishers(publishers(Some(p))?));
    }
    if let Some(v) = d.get("unpublished") {
        return who(v, "unpublished").map(RoomEvent::Unpublished);
    }
    if let Some(v) = d.get("leaving") {
        return who(v, "leaving").map(RoomEvent::Leaving);
    }
    if let Some(v) = d.get("kicked") {
        return who(v, "kicked").map(RoomEvent::Kicked);
    }
    if let Some(m) = d.get("moderation") {
        let muted = match m.as_str() {
            Some("muted") => true,
            Some("unmuted") => false,
            _ => return Err(bad(format!("moderation {m}"))),
        };
        return Ok(RoomEvent::Moderation {
            id: req_id(d, "id")?,
            mid: opt_str(d, "mid").ok_or_else(|| bad("moderation without mid"))?,
            muted,
        });
    }
    for (key, event) in [
        ("configured", RoomEvent::Configured),
        ("started", RoomEvent::Started),
        ("paused", RoomEvent::Paused),
        ("left", RoomEvent::Left),
    ] {
        if d.contains_key(key) {
            return Ok(event);
        }
    }
    Ok(RoomEvent::Other)
}

fn array<'a>(v: Option<&'a Value>, what: &str) -> Result<&'a [Value], ParseError> {
    match v {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(bad(format!("{what} is not an array"))),
    }
}

fn publishers(v: Option<&Value>) -> Result<Vec<Publisher>, ParseError> {
    array(v, "publishers")?
        .iter()
        .map(|p| {
            let p = p.as_object().ok_or_else(|| bad("publisher is not an object"))?;
            let streams = array(p.get("streams"), "streams")?
                .iter()
                .map(|s| {
                    let s = s.as_object().ok_or_else(|| bad("stream is not an object"))?;
                    Ok(PubStream {
                        kind: opt_str(s, "type").ok_or_else(|| bad("stream without type"))?,
                        mid: opt_str(s, "mid").ok_or_else(|| bad("stream without mid"))?,
                        disabled: s.get("disabled").and_then(Value::as_bool).unwrap_or(false),
                        codec: opt_str(s, "codec"),
                        moderated: s.get("moderated").and_then(Value::as_bool).unwrap_or(false),
                    })
                })
                .collect::<Result<_, ParseError>>()?;
            Ok(Publisher { id: req_id(p, "id")?, display: opt_str(p, "display"), streams })
        })
        .collect()
}

fn sub_streams(v: Option<&Value>) -> Result<Vec<SubStream>, ParseError> {
    array(v, "streams")?
        .iter()
        .map(|s| {
            let s = s.as_object().ok_or_else(|| bad("stream is not an object"))?;
            Ok(SubStream {
                mid: opt_str(s, "mid").ok_or_else(|| bad("stream without mid"))?,
                kind: opt_str(s, "type").ok_or_else(|| bad("stream without type"))?,
                active: s.get("active").and_then(Value::as_bool).unwrap_or(true),
                feed: opt_id(s, "feed_id")?,
                feed_mid: opt_str(s, "feed_mid"),
                feed_display: opt_str(s, "feed_display"),
                send: s.get("send").and_then(Value::as_bool).unwrap_or(true),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// SDP
// ---------------------------------------------------------------------------------------------

/// Whether an SDP carries at least one ICE candidate. A Janus answer without one means Janus
/// found no usable interface (it never gathers on `lo`).
pub fn sdp_has_candidate(sdp: &str) -> bool {
    sdp.lines().any(|l| l.trim_end().starts_with("a=candidate:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(tx: &str) -> Envelope<'_> {
        Envelope { transaction: tx, api_secret: None }
    }

    fn v(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn session_and_handle_requests() {
        assert_eq!(v(&create_session(env("t1"))), json!({"janus": "create", "transaction": "t1"}));
        let secret = Envelope { transaction: "t2", api_secret: Some("s3cr3t") };
        assert_eq!(v(&create_session(secret)), json!({"janus": "create", "transaction": "t2", "apisecret": "s3cr3t"}));
        assert_eq!(
            v(&attach(env("t3"), 42)),
            json!({"janus": "attach", "transaction": "t3", "session_id": 42, "plugin": "janus.plugin.videoroom"})
        );
        assert_eq!(v(&keepalive(env("t4"), 42)), json!({"janus": "keepalive", "transaction": "t4", "session_id": 42}));
        assert_eq!(
            v(&destroy_session(env("t5"), 42)),
            json!({"janus": "destroy", "transaction": "t5", "session_id": 42})
        );
    }

    #[test]
    fn messages_carry_body_and_a_non_trickle_jsep() {
        let m = message(env("t6"), 1, 2, leave(), None);
        assert_eq!(
            v(&m),
            json!({"janus": "message", "transaction": "t6", "session_id": 1, "handle_id": 2, "body": {"request": "leave"}})
        );
        let offer = Jsep { kind: JsepKind::Offer, sdp: "v=0\r\n".into() };
        let m = v(&message(env("t7"), 1, 2, publish("edge/radio1"), Some(&offer)));
        assert_eq!(m["jsep"], json!({"type": "offer", "sdp": "v=0\r\n", "trickle": false}));
        assert_eq!(m["body"], json!({"request": "publish", "audiocodec": "opus", "display": "edge/radio1"}));
        let answer = Jsep { kind: JsepKind::Answer, sdp: "v=0\r\n".into() };
        assert_eq!(v(&message(env("t8"), 1, 3, start(), Some(&answer)))["jsep"]["type"], "answer");
    }

    #[test]
    fn videoroom_request_bodies() {
        assert_eq!(exists(7), json!({"request": "exists", "room": 7}));
        assert_eq!(edit_probe(7, "sec"), json!({"request": "edit", "room": 7, "secret": "sec"}));
        let mut r = RoomSettings {
            room: 7,
            description: "ops".into(),
            secret: Some("sec".into()),
            pin: Some("1234".into()),
            admin_key: Some("adm".into()),
            publishers: 20,
        };
        let c = create_room(&r);
        assert_eq!(c["request"], "create");
        assert_eq!(c["room"], 7);
        assert_eq!(c["permanent"], false);
        assert_eq!(c["publishers"], 20);
        assert_eq!(c["audiocodec"], "opus");
        assert_eq!(c["opus_fec"], true);
        assert_eq!(
            (c["secret"].as_str(), c["pin"].as_str(), c["admin_key"].as_str()),
            (Some("sec"), Some("1234"), Some("adm"))
        );
        r.secret = None;
        r.pin = None;
        r.admin_key = None;
        r.publishers = 0;
        let c = create_room(&r);
        assert!(c.get("secret").is_none() && c.get("pin").is_none() && c.get("admin_key").is_none());
        assert_eq!(c["publishers"], 1, "a room needs room for at least one publisher");
        assert!(
            !format!("{:?}", RoomSettings { secret: Some("sec".into()), ..r }).contains("sec\""),
            "secrets stay out of logs"
        );

        assert_eq!(
            join_publisher(7, "edge/radio1", Some("1234")),
            json!({"request": "join", "ptype": "publisher", "room": 7, "display": "edge/radio1", "pin": "1234"})
        );
        assert!(join_publisher(7, "x", None).get("pin").is_none());
        assert_eq!(
            configure_send("0", false),
            json!({"request": "configure", "streams": [{"mid": "0", "send": false}]})
        );
        assert_eq!(configure_send("a1", true)["streams"][0]["send"], true);

        let refs = [StreamRef { feed: 11, mid: "0".into() }, StreamRef { feed: 12, mid: "a".into() }];
        assert_eq!(
            join_subscriber(7, Some(99), Some("1234"), &refs),
            json!({"request": "join", "ptype": "subscriber", "room": 7, "use_msid": false, "autoupdate": true,
                   "private_id": 99, "pin": "1234",
                   "streams": [{"feed": 11, "mid": "0"}, {"feed": 12, "mid": "a"}]})
        );
        let j = join_subscriber(7, None, None, &refs[..1]);
        assert!(j.get("private_id").is_none() && j.get("pin").is_none());
        assert_eq!(
            update_subscription(&refs[..1], &refs[1..]),
            json!({"request": "update", "subscribe": [{"feed": 11, "mid": "0"}], "unsubscribe": [{"feed": 12, "mid": "a"}]})
        );
        assert_eq!(update_subscription(&refs, &[]).get("unsubscribe"), None);
        assert_eq!(start(), json!({"request": "start"}));
        assert_eq!(
            configure_receive(&[("0".into(), false), ("1".into(), true)]),
            json!({"request": "configure", "streams": [{"mid": "0", "send": false}, {"mid": "1", "send": true}]})
        );
        assert_eq!(
            moderate(7, Some("sec"), 11, "0", true),
            json!({"request": "moderate", "room": 7, "secret": "sec", "id": 11, "mid": "0", "mute": true})
        );
        assert!(moderate(7, None, 11, "0", false).get("secret").is_none());
    }

    #[test]
    fn core_replies() {
        let m = parse(r#"{"janus":"success","transaction":"t1","data":{"id":8123456789012}}"#).unwrap();
        assert_eq!(m.transaction.as_deref(), Some("t1"));
        assert_eq!(m.kind, Kind::Success { id: Some(8_123_456_789_012), plugin: None });
        let m = parse(r#"{"janus":"ack","session_id":5,"transaction":"t2"}"#).unwrap();
        assert_eq!((m.kind, m.session), (Kind::Ack, Some(5)));
        let m = parse(
            r#"{"janus":"error","session_id":5,"transaction":"t3","error":{"code":458,"reason":"No such session 5"}}"#,
        )
        .unwrap();
        assert_eq!(m.kind, Kind::Error { code: codes::SESSION_NOT_FOUND, reason: "No such session 5".into() });
        // Replies to unparseable requests have no session and a null transaction at worst.
        let m = parse(r#"{"janus":"error","transaction":null,"error":{"code":454}}"#).unwrap();
        assert_eq!((m.transaction, m.kind), (None, Kind::Error { code: 454, reason: String::new() }));
    }

    #[test]
    fn core_events() {
        let cases = [
            (r#"{"janus":"webrtcup","session_id":1,"sender":2}"#, Kind::WebrtcUp),
            (
                r#"{"janus":"hangup","session_id":1,"sender":2,"reason":"DTLS alert"}"#,
                Kind::Hangup { reason: "DTLS alert".into() },
            ),
            (
                r#"{"janus":"media","session_id":1,"sender":2,"mid":"0","type":"audio","receiving":true}"#,
                Kind::Media { kind: "audio".into(), receiving: true },
            ),
            (r#"{"janus":"detached","session_id":1,"sender":2}"#, Kind::Detached),
            (r#"{"janus":"timeout","session_id":1}"#, Kind::Timeout),
            (
                r#"{"janus":"slowlink","session_id":1,"sender":2,"uplink":true,"lost":5}"#,
                Kind::Other("slowlink".into()),
            ),
        ];
        for (text, kind) in cases {
            let m = parse(text).unwrap();
            assert_eq!(m.kind, kind, "{text}");
            assert_eq!(m.session, Some(1));
            assert_eq!(m.transaction, None);
        }
        assert_eq!(parse(r#"{"janus":"webrtcup","session_id":1,"sender":2}"#).unwrap().sender, Some(2));
    }

    fn plugin(data: &str) -> VideoRoom {
        let text = format!(
            r#"{{"janus":"success","session_id":1,"transaction":"t","sender":2,"plugindata":{{"plugin":"janus.plugin.videoroom","data":{data}}}}}"#
        );
        match parse(&text).unwrap().kind {
            Kind::Success { plugin: Some(p), .. } => p,
            other => panic!("{other:?}"),
        }
    }

    fn event(data: &str, jsep: &str) -> (VideoRoom, Option<Jsep>) {
        let text = format!(
            r#"{{"janus":"event","session_id":1,"sender":2,"plugindata":{{"plugin":"janus.plugin.videoroom","data":{data}}}{jsep}}}"#
        );
        match parse(&text).unwrap().kind {
            Kind::Event { plugin: Some(p), jsep } => (p, jsep),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn synchronous_plugin_replies() {
        assert_eq!(
            plugin(r#"{"videoroom":"success","room":7,"exists":false}"#),
            VideoRoom::Exists { room: 7, exists: false }
        );
        assert_eq!(plugin(r#"{"videoroom":"created","room":7,"permanent":false}"#), VideoRoom::Created { room: 7 });
        assert_eq!(plugin(r#"{"videoroom":"edited","room":7,"permanent":false}"#), VideoRoom::Edited { room: 7 });
        assert_eq!(plugin(r#"{"videoroom":"success"}"#), VideoRoom::Success);
        assert_eq!(
            plugin(r#"{"videoroom":"event","error_code":427,"error":"Room 7 already exists"}"#),
            VideoRoom::Error { code: codes::ROOM_EXISTS, error: "Room 7 already exists".into() }
        );
    }

    const PUBLISHER_11: &str = r#"{"id":11,"display":"edge-a/radio1","streams":[
        {"type":"audio","mindex":0,"mid":"0","codec":"opus","fec":true},
        {"type":"video","mindex":1,"mid":"1","disabled":true}]}"#;

    #[test]
    fn joined_lists_publishers_and_their_audio() {
        let (p, jsep) = event(
            &format!(
                r#"{{"videoroom":"joined","room":7,"description":"ops","id":12,"private_id":345,"publishers":[{PUBLISHER_11}]}}"#
            ),
            "",
        );
        assert_eq!(jsep, None);
        let VideoRoom::Joined { room, id, private_id, publishers } = p else { panic!("{p:?}") };
        assert_eq!((room, id, private_id), (7, 12, Some(345)));
        assert_eq!(publishers.len(), 1);
        assert_eq!(publishers[0].display.as_deref(), Some("edge-a/radio1"));
        assert_eq!(publishers[0].streams[0].codec.as_deref(), Some("opus"));
        let audio: Vec<_> = publishers[0].audio().collect();
        assert_eq!(audio, [StreamRef { feed: 11, mid: "0".into() }], "disabled and video streams are skipped");
        let (p, _) = event(r#"{"videoroom":"joined","room":7,"id":12}"#, "");
        assert_eq!(p, VideoRoom::Joined { room: 7, id: 12, private_id: None, publishers: vec![] });
    }

    #[test]
    fn room_events() {
        let (p, _) = event(&format!(r#"{{"videoroom":"event","room":7,"publishers":[{PUBLISHER_11}]}}"#), "");
        assert!(matches!(p, VideoRoom::Event(RoomEvent::Publishers(ref v)) if v[0].id == 11));
        let cases = [
            (r#"{"videoroom":"event","room":7,"unpublished":11}"#, RoomEvent::Unpublished(Who::Feed(11))),
            (r#"{"videoroom":"event","room":7,"unpublished":"ok"}"#, RoomEvent::Unpublished(Who::Me)),
            (r#"{"videoroom":"event","room":7,"leaving":11}"#, RoomEvent::Leaving(Who::Feed(11))),
            (r#"{"videoroom":"event","leaving":"ok","reason":"kicked"}"#, RoomEvent::Leaving(Who::Me)),
            (r#"{"videoroom":"event","room":7,"kicked":11}"#, RoomEvent::Kicked(Who::Feed(11))),
            (r#"{"videoroom":"event","room":7,"configured":"ok"}"#, RoomEvent::Configured),
            (r#"{"videoroom":"event","started":"ok"}"#, RoomEvent::Started),
            (r#"{"videoroom":"event","paused":"ok"}"#, RoomEvent::Paused),
            (r#"{"videoroom":"event","left":"ok"}"#, RoomEvent::Left),
            (
                r#"{"videoroom":"event","room":7,"id":11,"mid":"0","moderation":"muted"}"#,
                RoomEvent::Moderation { id: 11, mid: "0".into(), muted: true },
            ),
            (r#"{"videoroom":"event","room":7,"joining":{"id":13}}"#, RoomEvent::Other),
        ];
        for (data, expected) in cases {
            assert_eq!(event(data, "").0, VideoRoom::Event(expected), "{data}");
        }
        assert_eq!(event(r#"{"videoroom":"destroyed","room":7}"#, "").0, VideoRoom::Destroyed { room: 7 });
        assert_eq!(event(r#"{"videoroom":"talking","room":7,"id":11}"#, "").0, VideoRoom::Other("talking".into()));
        assert_eq!(
            event(r#"{"videoroom":"event","error_code":428,"error":"No such feed (11)"}"#, "").0,
            VideoRoom::Error { code: codes::NO_SUCH_FEED, error: "No such feed (11)".into() }
        );
    }

    #[test]
    fn subscription_events_carry_streams_and_offers() {
        let streams_json = r#"[
            {"type":"audio","active":true,"mindex":0,"mid":"0","ready":false,"send":true,"feed_id":11,"feed_display":"edge-a/radio1","feed_mid":"0","codec":"opus"},
            {"type":"audio","active":false,"mindex":1,"mid":"1","ready":false,"send":true}]"#;
        let (p, jsep) = event(
            &format!(r#"{{"videoroom":"attached","room":7,"streams":{streams_json}}}"#),
            r#","jsep":{"type":"offer","sdp":"v=0\r\n"}"#,
        );
        assert_eq!(jsep, Some(Jsep { kind: JsepKind::Offer, sdp: "v=0\r\n".into() }));
        let VideoRoom::Attached { room: 7, streams } = p else { panic!("{p:?}") };
        assert_eq!(streams[0].source(), Some(StreamRef { feed: 11, mid: "0".into() }));
        assert_eq!(streams[0].feed_display.as_deref(), Some("edge-a/radio1"));
        assert_eq!((streams[1].active, streams[1].source()), (false, None));
        let (p, _) = event(&format!(r#"{{"videoroom":"updated","room":7,"streams":{streams_json}}}"#), "");
        assert!(matches!(p, VideoRoom::Updated { streams: Some(ref s) } if s.len() == 2));
        assert_eq!(event(r#"{"videoroom":"updated","room":7}"#, "").0, VideoRoom::Updated { streams: None });
        assert_eq!(event(r#"{"videoroom":"updating","room":7}"#, "").0, VideoRoom::Updating);
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let bad = [
            "",
            "nonsense",
            "[]",
            "{}",
            r#"{"janus":5}"#,
            r#"{"janus":"success","transaction":7}"#,
            r#"{"janus":"success","data":{"id":"12"}}"#,
            r#"{"janus":"success","data":{"id":-3}}"#,
            r#"{"janus":"success","data":{"id":0}}"#,
            r#"{"janus":"success","data":[]}"#,
            r#"{"janus":"error"}"#,
            r#"{"janus":"error","error":{"reason":"x"}}"#,
            r#"{"janus":"event","session_id":"abc"}"#,
            r#"{"janus":"event","jsep":{"type":"pranswer","sdp":""}}"#,
            r#"{"janus":"event","jsep":{"type":"offer"}}"#,
            r#"{"janus":"event","plugindata":[]}"#,
            r#"{"janus":"event","plugindata":{"plugin":"janus.plugin.videoroom"}}"#,
            r#"{"janus":"event","plugindata":{"plugin":"janus.plugin.videoroom","data":{}}}"#,
            r#"{"janus":"event","plugindata":{"plugin":"janus.plugin.videoroom","data":{"videoroom":"joined","room":7}}}"#,
            r#"{"janus":"event","plugindata":{"plugin":"janus.plugin.videoroom","data":{"videoroom":"joined","room":"7","id":1}}}"#,
            r#"{"janus":"event","plugindata":{"plugin":"janus.plugin.videoroom","data":{"videoroom":"event","publishers":{}}}}"#,
            r#"{"janus":"event","plugindata":{"plugin":"janus.plugin.videoroom","data":{"videoroom":"event","publishers":[{"id":1,"streams":[{"mid":"0"}]}]}}}"#,
            r#"{"janus":"event","plugindata":{"plugin":"janus.plugin.videoroom","data":{"videoroom":"event","unpublished":"no"}}}"#,
            r#"{"janus":"event","plugindata":{"plugin":"janus.plugin.videoroom","data":{"videoroom":"event","moderation":"maybe","id":1,"mid":"0"}}}"#,
            r#"{"janus":"event","plugindata":{"plugin":"janus.plugin.videoroom","data":{"videoroom":"attached","room":7,"streams":[{"mid":"0"}]}}}"#,
            r#"{"janus":"event","plugindata":{"plugin":"janus.plugin.videoroom","data":{"videoroom":"event","error_code":"x"}}}"#,
        ];
        for text in bad {
            assert!(parse(text).is_err(), "{text:?} parsed");
        }
        // Unknown kinds and other plugins are not errors: there is just nothing to act on.
        assert_eq!(parse(r#"{"janus":"claimed"}"#).unwrap().kind, Kind::Other("claimed".into()));
        let other = r#"{"janus":"event","plugindata":{"plugin":"janus.plugin.echotest","data":{"result":"ok"}}}"#;
        assert_eq!(
            parse(other).unwrap().kind,
            Kind::Event { plugin: Some(VideoRoom::Other("another plugin".into())), jsep: None }
        );
    }

    #[test]
    fn candidates_in_sdp() {
        assert!(sdp_has_candidate(
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=candidate:1 1 udp 2013266431 127.0.0.2 20004 typ host\r\n"
        ));
        assert!(!sdp_has_candidate("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=end-of-candidates\r\n"));
    }
}
