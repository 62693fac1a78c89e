//! One Janus session as a sans-IO state machine: everything roipd says to Janus and does
//! with its replies, without sockets, WebRTC or a clock (`now` comes in with every input).
//!
//! Per channel it keeps two VideoRoom handles:
//! - a **publisher**: `exists` → `create` if missing → `join` → (the driver makes an offer)
//!   → `publish` → (the driver applies the answer) → `configure send:false`; afterwards
//!   `configure send:true/false` follows [`Session::set_sending`];
//! - a **multistream subscriber** to the other publishers' audio: created with `join` once
//!   someone else publishes (Janus refuses an empty subscription), grown with `update` as
//!   publishers arrive; Janus renegotiates by itself when one leaves (`autoupdate`). Janus
//!   makes the offers, the driver answers them ([`Output::Offer`], [`Session::subscriber_answer`]).
//!
//! Replies are matched to requests by transaction; a request unanswered for
//! `request_timeout`, a `keepalive` every `keepalive` interval, and anything that means the
//! session is lost (error 458, `timeout`, `hangup`/`detached` of one of our handles, our
//! publisher kicked, the room destroyed, a refused request, a malformed message) end in one
//! [`Output::Failed`]: the driver drops this session and builds a new one. Nothing here
//! panics on Janus's input.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::{debug, warn};

use super::protocol::{
    self as p, codes, Envelope, Incoming, Jsep, JsepKind, Kind, Publisher, RoomEvent, RoomSettings, StreamRef,
    SubStream, VideoRoom, Who,
};

/// Index of a channel in the list the session was made with.
pub type Ch = usize;

/// One channel: its room and how this box appears there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSpec {
    /// The channel's name in roipd.
    pub channel: String,
    pub room: RoomSettings,
    /// Create the room if it does not exist.
    pub create: bool,
    /// Our publisher's display name (e.g. `device/port`); the hub maps it to floor members.
    pub display: String,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Janus's `api_secret`, if it has one.
    pub api_secret: Option<String>,
    /// Well inside Janus's `session_timeout` (60 s by default).
    pub keepalive: Duration,
    /// A request without its final reply for this long loses the session.
    pub request_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self { api_secret: None, keepalive: Duration::from_secs(25), request_timeout: Duration::from_secs(10) }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A text frame for the WebSocket.
    Send(String),
    /// Make the channel's publisher offer (send-only Opus audio, candidates included) and
    /// pass it to [`Session::publisher_offer`].
    NeedOffer { ch: Ch },
    /// Janus's answer to the publisher offer.
    Answer { ch: Ch, sdp: String },
    /// Janus's offer for the channel's subscription: answer it with
    /// [`Session::subscriber_answer`]. The first one creates the subscriber connection.
    Offer { ch: Ch, sdp: String },
    /// The subscription's m-lines: which publisher each mid carries.
    Streams { ch: Ch, streams: Vec<SubStream> },
    /// The other publishers in the channel's room.
    Roster { ch: Ch, publishers: Vec<Publisher> },
    /// Our publisher joined the channel's room with this id.
    Joined { ch: Ch, id: u64 },
    /// Janus now relays our stream to the room (true) or holds it back (false).
    Sending { ch: Ch, on: bool },
    /// A moderator muted or unmuted our stream.
    Moderated { ch: Ch, muted: bool },
    /// The answer to [`Session::moderate`].
    ModerateDone { ch: Ch, feed: u64, mute: bool, result: Result<(), String> },
    /// The session is lost: close the socket, drop the media connections, start over.
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Publisher,
    Subscriber,
}

#[derive(Debug, Clone, PartialEq)]
enum Req {
    CreateSession,
    Attach(Ch, Role),
    Keepalive,
    Exists(Ch),
    CreateRoom(Ch),
    Join(Ch),
    Publish(Ch),
    ConfigureSend(Ch, bool),
    Subscribe(Ch, Vec<StreamRef>),
    Update(Ch, Vec<StreamRef>),
    Start(Ch),
    ConfigureReceive(Ch, Vec<(String, bool)>),
    Moderate { ch: Ch, feed: u64, mute: bool },
    Destroy,
}

impl Req {
    fn name(&self) -> &'static str {
        match self {
            Req::CreateSession => "create",
            Req::Attach(..) => "attach",
            Req::Keepalive => "keepalive",
            Req::Exists(_) => "exists",
            Req::CreateRoom(_) => "create room",
            Req::Join(_) => "join",
            Req::Publish(_) => "publish",
            Req::ConfigureSend(..) => "configure",
            Req::Subscribe(..) => "subscribe",
            Req::Update(..) => "update",
            Req::Start(_) => "start",
            Req::ConfigureReceive(..) => "configure subscription",
            Req::Moderate { .. } => "moderate",
            Req::Destroy => "destroy",
        }
    }
}

#[derive(Debug)]
struct Pending {
    req: Req,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PubPhase {
    Attaching,
    CheckingRoom,
    CreatingRoom,
    Joining,
    /// Waiting for the driver's offer.
    Offering,
    Publishing,
    Published,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubPhase {
    /// No subscription yet (nobody else publishes, or not attached yet).
    Idle,
    Joining,
    Joined,
}

#[derive(Debug)]
struct Chan {
    spec: ChannelSpec,
    publisher: Option<u64>,
    subscriber: Option<u64>,
    phase: PubPhase,
    me: Option<u64>,
    private_id: Option<u64>,
    /// Our published stream's mid.
    mid: Option<String>,
    remote: BTreeMap<u64, Publisher>,
    send_wanted: bool,
    send_state: Option<bool>,
    send_busy: bool,
    sub: SubPhase,
    /// Publisher streams we asked Janus to subscribe us to (and it did not refuse).
    asked: BTreeSet<StreamRef>,
    sub_busy: bool,
    streams: Vec<SubStream>,
    listen: bool,
    listen_busy: bool,
}

impl Chan {
    fn new(spec: ChannelSpec, listen: bool) -> Self {
        Self {
            spec,
            publisher: None,
            subscriber: None,
            phase: PubPhase::Attaching,
            me: None,
            private_id: None,
            mid: None,
            remote: BTreeMap::new(),
            send_wanted: false,
            send_state: None,
            send_busy: false,
            sub: SubPhase::Idle,
            asked: BTreeSet::new(),
            sub_busy: false,
            streams: Vec::new(),
            listen,
            listen_busy: false,
        }
    }

    /// Every audio stream of the other publishers.
    fn desired(&self) -> BTreeSet<StreamRef> {
        self.remote.values().filter(|p| Some(p.id) != self.me).flat_map(Publisher::audio).collect()
    }
}

pub struct Session {
    config: SessionConfig,
    id: Option<u64>,
    chans: Vec<Chan>,
    pending: HashMap<String, Pending>,
    next_tx: u64,
    out: VecDeque<Output>,
    failed: bool,
    next_keepalive: Option<Instant>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("id", &self.id).field("failed", &self.failed).finish_non_exhaustive()
    }
}

impl Session {
    /// A new session for `channels` (`listen[i]`: relay channel i's audio to us; missing
    /// entries listen). Starts with `create`.
    pub fn new(config: SessionConfig, channels: Vec<ChannelSpec>, listen: &[bool], now: Instant) -> Self {
        let chans = channels
            .into_iter()
            .enumerate()
            .map(|(i, spec)| Chan::new(spec, listen.get(i).copied().unwrap_or(true)))
            .collect();
        let mut s = Self {
            config,
            id: None,
            chans,
            pending: HashMap::new(),
            next_tx: 1,
            out: VecDeque::new(),
            failed: false,
            next_keepalive: None,
        };
        let (tx, secret) = s.begin(Req::CreateSession, now);
        s.send(p::create_session(Envelope { transaction: &tx, api_secret: secret.as_deref() }));
        s
    }

    /// The next thing to do, until `None`.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Session::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.failed {
            return None;
        }
        let requests = self.pending.values().map(|p| p.deadline);
        requests.chain(self.next_keepalive).min()
    }

    /// Keepalives and request timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.failed {
            return;
        }
        if let Some(late) = self.pending.values().find(|p| p.deadline <= now) {
            let name = late.req.name();
            return self
                .fail(format!("Janus did not answer {name} within {} s", self.config.request_timeout.as_secs()));
        }
        if let (Some(id), Some(at)) = (self.id, self.next_keepalive) {
            if at <= now {
                let (tx, secret) = self.begin(Req::Keepalive, now);
                self.send(p::keepalive(Envelope { transaction: &tx, api_secret: secret.as_deref() }, id));
                self.next_keepalive = Some(now + self.config.keepalive);
            }
        }
    }

    pub fn is_failed(&self) -> bool {
        self.failed
    }

    pub fn id(&self) -> Option<u64> {
        self.id
    }

    pub fn channels(&self) -> impl Iterator<Item = &ChannelSpec> {
        self.chans.iter().map(|c| &c.spec)
    }

    /// Our publisher id in channel `ch`'s room, once joined.
    pub fn publisher_id(&self, ch: Ch) -> Option<u64> {
        self.chans.get(ch).and_then(|c| c.me)
    }

    /// Every channel published (offer answered).
    pub fn all_published(&self) -> bool {
        self.chans.iter().all(|c| c.phase == PubPhase::Published)
    }

    /// One text frame from Janus.
    pub fn handle_text(&mut self, now: Instant, text: &str) {
        if self.failed {
            return;
        }
        match p::parse(text) {
            Ok(m) => self.handle(now, m),
            Err(e) => self.fail(e.to_string()),
        }
    }

    /// The driver's offer for channel `ch`'s publisher; `mid` is its audio m-line.
    pub fn publisher_offer(&mut self, now: Instant, ch: Ch, sdp: String, mid: String) {
        let Some(c) = self.chans.get_mut(ch) else { return };
        if self.failed || c.phase != PubPhase::Offering {
            return;
        }
        c.phase = PubPhase::Publishing;
        c.mid = Some(mid);
        let body = p::publish(&c.spec.display);
        self.message(now, ch, Role::Publisher, Req::Publish(ch), body, Some(Jsep { kind: JsepKind::Offer, sdp }));
    }

    /// The driver's answer to the latest [`Output::Offer`] for channel `ch`.
    pub fn subscriber_answer(&mut self, now: Instant, ch: Ch, sdp: String) {
        if self.failed || ch >= self.chans.len() {
            return;
        }
        self.message(now, ch, Role::Subscriber, Req::Start(ch), p::start(), Some(Jsep { kind: JsepKind::Answer, sdp }));
    }

    /// The driver could not make or apply an SDP: the session is no good.
    pub fn media_failed(&mut self, reason: String) {
        if !self.failed {
            self.fail(reason);
        }
    }

    /// Ask Janus to relay our stream in channel `ch` (only while this box holds the floor).
    pub fn set_sending(&mut self, now: Instant, ch: Ch, on: bool) {
        if let Some(c) = self.chans.get_mut(ch) {
            c.send_wanted = on;
            self.sync_send(now, ch);
        }
    }

    /// Listen to channel `ch` (Janus relays its audio to us) or mute it, without renegotiating.
    pub fn set_listening(&mut self, now: Instant, ch: Ch, on: bool) {
        if let Some(c) = self.chans.get_mut(ch) {
            c.listen = on;
            self.sync_listen(now, ch);
        }
    }

    /// Mute (or unmute) publisher `feed`'s audio in channel `ch`'s room for everyone (needs
    /// the room secret). False if the feed is unknown or the publisher is not in the room.
    pub fn moderate(&mut self, now: Instant, ch: Ch, feed: u64, mute: bool) -> bool {
        let Some(c) = self.chans.get(ch) else { return false };
        if self.failed || c.me.is_none() {
            return false;
        }
        let mid = if Some(feed) == c.me {
            c.mid.clone()
        } else {
            c.remote.get(&feed).and_then(|p| p.audio().next()).map(|r| r.mid)
        };
        let Some(mid) = mid else { return false };
        let body = p::moderate(c.spec.room.room, c.spec.room.secret.as_deref(), feed, &mid, mute);
        self.message(now, ch, Role::Publisher, Req::Moderate { ch, feed, mute }, body, None);
        true
    }

    /// Destroy the session on Janus (a clean shutdown); no reply is awaited.
    pub fn close(&mut self, now: Instant) {
        if let (Some(id), false) = (self.id, self.failed) {
            let (tx, secret) = self.begin(Req::Destroy, now);
            self.pending.remove(&tx);
            self.send(p::destroy_session(Envelope { transaction: &tx, api_secret: secret.as_deref() }, id));
        }
    }

    // -----------------------------------------------------------------------------------------

    fn begin(&mut self, req: Req, now: Instant) -> (String, Option<String>) {
        let tx = format!("roipd-{}", self.next_tx);
        self.next_tx += 1;
        self.pending.insert(tx.clone(), Pending { req, deadline: now + self.config.request_timeout });
        (tx, self.config.api_secret.clone())
    }

    fn send(&mut self, text: String) {
        self.out.push_back(Output::Send(text));
    }

    fn emit(&mut self, o: Output) {
        self.out.push_back(o);
    }

    fn fail(&mut self, reason: String) {
        if !self.failed {
            self.failed = true;
            self.pending.clear();
            self.out.push_back(Output::Failed(reason));
        }
    }

    fn handle_of(&self, ch: Ch, role: Role) -> Option<u64> {
        let c = self.chans.get(ch)?;
        match role {
            Role::Publisher => c.publisher,
            Role::Subscriber => c.subscriber,
        }
    }

    fn message(&mut self, now: Instant, ch: Ch, role: Role, req: Req, body: Value, jsep: Option<Jsep>) {
        let (Some(session), Some(handle)) = (self.id, self.handle_of(ch, role)) else {
            return self.fail(format!("{} before the handle exists", req.name()));
        };
        let (tx, secret) = self.begin(req, now);
        let env = Envelope { transaction: &tx, api_secret: secret.as_deref() };
        self.send(p::message(env, session, handle, body, jsep.as_ref()));
    }

    fn whose(&self, handle: u64) -> Option<(Ch, Role)> {
        self.chans.iter().enumerate().find_map(|(i, c)| {
            if c.publisher == Some(handle) {
                Some((i, Role::Publisher))
            } else if c.subscriber == Some(handle) {
                Some((i, Role::Subscriber))
            } else {
                None
            }
        })
    }

    fn handle(&mut self, now: Instant, m: Incoming) {
        if let (Some(ours), Some(theirs)) = (self.id, m.session) {
            if ours != theirs {
                debug!(session = theirs, "ignoring a message for another session");
                return;
            }
        }
        let pending = m.transaction.as_ref().and_then(|t| self.pending.get(t).map(|p| p.req.clone()));
        match (pending, m.kind) {
            (Some(_), Kind::Ack) => {
                // A keepalive is done; an asynchronous request goes on to its event.
                if let Some(t) = &m.transaction {
                    if self.pending.get(t).is_some_and(|p| p.req == Req::Keepalive) {
                        self.pending.remove(t);
                    }
                }
            }
            (Some(req), Kind::Error { code, reason }) => {
                let what = if code == codes::SESSION_NOT_FOUND { "session not found" } else { "error" };
                self.fail(format!("Janus refused {}: {what} {code} {reason}", req.name()));
            }
            (Some(req), Kind::Success { id, plugin }) => {
                self.pending.remove(m.transaction.as_deref().unwrap_or_default());
                self.reply(now, req, id, plugin, None);
            }
            (Some(req), Kind::Event { plugin, jsep }) => {
                self.pending.remove(m.transaction.as_deref().unwrap_or_default());
                self.reply(now, req, None, plugin, jsep);
            }
            (Some(req), other) => {
                debug!(request = req.name(), reply = ?other, "unexpected reply kind");
            }
            (None, kind) => self.unsolicited(now, m.sender, kind),
        }
    }

    fn unsolicited(&mut self, now: Instant, sender: Option<u64>, kind: Kind) {
        let whose = sender.and_then(|h| self.whose(h));
        match kind {
            Kind::Timeout => self.fail("the Janus session timed out".into()),
            Kind::Error { code, reason } => {
                if code == codes::SESSION_NOT_FOUND {
                    self.fail(format!("Janus: session not found ({reason})"));
                } else {
                    warn!(code, %reason, "Janus error outside any request");
                }
            }
            Kind::Hangup { reason } => {
                if let Some((ch, role)) = whose {
                    let name = self.chans[ch].spec.channel.clone();
                    self.fail(format!("Janus hung up the {role:?} connection of channel {name}: {reason}"));
                }
            }
            Kind::Detached => {
                if let Some((ch, role)) = whose {
                    let name = self.chans[ch].spec.channel.clone();
                    self.fail(format!("Janus detached the {role:?} handle of channel {name}"));
                }
            }
            Kind::Event { plugin, jsep } => match whose {
                Some((ch, Role::Publisher)) => {
                    if let Some(p) = plugin {
                        self.room_event(now, ch, p);
                    }
                }
                Some((ch, Role::Subscriber)) => self.subscription_event(now, ch, plugin, jsep),
                None => debug!(?sender, "event for no handle of ours"),
            },
            Kind::WebrtcUp => debug!(?whose, "Janus: PeerConnection up"),
            Kind::Media { kind, receiving } => debug!(?whose, kind, receiving, "Janus: media"),
            Kind::Success { .. } | Kind::Ack | Kind::Other(_) => {}
        }
    }

    /// A final reply to one of our requests.
    fn reply(&mut self, now: Instant, req: Req, id: Option<u64>, plugin: Option<VideoRoom>, jsep: Option<Jsep>) {
        if let Some(VideoRoom::Error { code, error }) = &plugin {
            return self.plugin_error(now, req, *code, error.clone());
        }
        match req {
            Req::CreateSession => {
                let Some(id) = id else { return self.fail("create: no session id".into()) };
                self.id = Some(id);
                self.next_keepalive = Some(now + self.config.keepalive);
                for ch in 0..self.chans.len() {
                    for role in [Role::Publisher, Role::Subscriber] {
                        let (tx, secret) = self.begin(Req::Attach(ch, role), now);
                        self.send(p::attach(Envelope { transaction: &tx, api_secret: secret.as_deref() }, id));
                    }
                }
            }
            Req::Attach(ch, role) => {
                let Some(handle) = id else { return self.fail("attach: no handle id".into()) };
                let c = &mut self.chans[ch];
                match role {
                    Role::Publisher => {
                        c.publisher = Some(handle);
                        if c.spec.create {
                            c.phase = PubPhase::CheckingRoom;
                            let body = p::exists(c.spec.room.room);
                            self.message(now, ch, role, Req::Exists(ch), body, None);
                        } else {
                            self.join(now, ch);
                        }
                    }
                    Role::Subscriber => {
                        c.subscriber = Some(handle);
                        self.sync_subscription(now, ch);
                    }
                }
            }
            Req::Keepalive | Req::Destroy => {}
            Req::Exists(ch) => match plugin {
                Some(VideoRoom::Exists { exists: true, .. }) => self.join(now, ch),
                Some(VideoRoom::Exists { exists: false, .. }) => {
                    let c = &mut self.chans[ch];
                    c.phase = PubPhase::CreatingRoom;
                    let body = p::create_room(&c.spec.room);
                    self.message(now, ch, Role::Publisher, Req::CreateRoom(ch), body, None);
                }
                other => self.fail(format!("exists: unexpected reply {other:?}")),
            },
            Req::CreateRoom(ch) => match plugin {
                Some(VideoRoom::Created { .. }) => {
                    debug!(room = self.chans[ch].spec.room.room, "room created");
                    self.join(now, ch)
                }
                other => self.fail(format!("create room: unexpected reply {other:?}")),
            },
            Req::Join(ch) => match plugin {
                Some(VideoRoom::Joined { id, private_id, publishers, .. }) => {
                    let c = &mut self.chans[ch];
                    c.me = Some(id);
                    c.private_id = private_id;
                    c.remote = publishers.into_iter().filter(|p| p.id != id).map(|p| (p.id, p)).collect();
                    c.phase = PubPhase::Offering;
                    self.emit(Output::Joined { ch, id });
                    self.roster(ch);
                    self.emit(Output::NeedOffer { ch });
                    self.sync_subscription(now, ch);
                }
                other => self.fail(format!("join: unexpected reply {other:?}")),
            },
            Req::Publish(ch) => match (plugin, jsep) {
                (Some(VideoRoom::Event(RoomEvent::Configured)), Some(Jsep { kind: JsepKind::Answer, sdp })) => {
                    if !p::sdp_has_candidate(&sdp) {
                        return self.fail(format!(
                            "Janus's answer for channel {} has no ICE candidate (Janus gathers none on lo; check its `interface`)",
                            self.chans[ch].spec.channel
                        ));
                    }
                    let c = &mut self.chans[ch];
                    c.phase = PubPhase::Published;
                    // Janus relays a new publisher at once; idle is `send: false`.
                    c.send_state = Some(true);
                    self.emit(Output::Answer { ch, sdp });
                    self.sync_send(now, ch);
                }
                (plugin, jsep) => self.fail(format!("publish: unexpected reply {plugin:?} (jsep {})", jsep.is_some())),
            },
            Req::ConfigureSend(ch, on) => {
                let c = &mut self.chans[ch];
                c.send_busy = false;
                if c.send_state != Some(on) {
                    c.send_state = Some(on);
                    self.emit(Output::Sending { ch, on });
                }
                self.sync_send(now, ch);
            }
            Req::Subscribe(ch, _) | Req::Update(ch, _) => {
                self.chans[ch].sub_busy = false;
                self.subscription_event(now, ch, plugin, jsep);
                self.sync_subscription(now, ch);
            }
            Req::Start(ch) => {
                self.subscription_event(now, ch, plugin, jsep);
            }
            Req::ConfigureReceive(ch, mids) => {
                let c = &mut self.chans[ch];
                c.listen_busy = false;
                for (mid, send) in mids {
                    if let Some(s) = c.streams.iter_mut().find(|s| s.mid == mid) {
                        s.send = send;
                    }
                }
                self.sync_listen(now, ch);
            }
            Req::Moderate { ch, feed, mute } => {
                self.emit(Output::ModerateDone { ch, feed, mute, result: Ok(()) });
            }
        }
    }

    fn plugin_error(&mut self, now: Instant, req: Req, code: u32, error: String) {
        match req {
            Req::CreateRoom(ch) if code == codes::ROOM_EXISTS => self.join(now, ch),
            Req::Subscribe(ch, refs) | Req::Update(ch, refs) if code == codes::NO_SUCH_FEED => {
                // A publisher left before Janus saw our request: forget it until it is back.
                let c = &mut self.chans[ch];
                c.sub_busy = false;
                if c.sub == SubPhase::Joining {
                    c.sub = SubPhase::Idle;
                    c.asked.clear();
                }
                for r in &refs {
                    c.remote.remove(&r.feed);
                    c.asked.retain(|a| a.feed != r.feed);
                }
                debug!(code, %error, "subscription refused; publishers left");
                self.roster(ch);
                self.sync_subscription(now, ch);
            }
            Req::ConfigureReceive(ch, _) => {
                debug!(code, %error, "configure subscription refused");
                self.chans[ch].listen_busy = false;
            }
            Req::Moderate { ch, feed, mute } => {
                self.emit(Output::ModerateDone { ch, feed, mute, result: Err(format!("{code} {error}")) });
            }
            req => {
                let channel = self.channel_of(&req).map(|ch| self.chans[ch].spec.channel.clone()).unwrap_or_default();
                self.fail(format!("VideoRoom refused {} for channel {channel}: {code} {error}", req.name()));
            }
        }
    }

    fn channel_of(&self, req: &Req) -> Option<Ch> {
        match req {
            Req::Attach(ch, _)
            | Req::Exists(ch)
            | Req::CreateRoom(ch)
            | Req::Join(ch)
            | Req::Publish(ch)
            | Req::ConfigureSend(ch, _)
            | Req::Subscribe(ch, _)
            | Req::Update(ch, _)
            | Req::Start(ch)
            | Req::ConfigureReceive(ch, _)
            | Req::Moderate { ch, .. } => Some(*ch),
            Req::CreateSession | Req::Keepalive | Req::Destroy => None,
        }
    }

    fn join(&mut self, now: Instant, ch: Ch) {
        let c = &mut self.chans[ch];
        c.phase = PubPhase::Joining;
        let body = p::join_publisher(c.spec.room.room, &c.spec.display, c.spec.room.pin.as_deref());
        self.message(now, ch, Role::Publisher, Req::Join(ch), body, None);
    }

    fn roster(&mut self, ch: Ch) {
        let publishers = self.chans[ch].remote.values().cloned().collect();
        self.emit(Output::Roster { ch, publishers });
    }

    /// An event on a channel's publisher handle: the room's comings and goings.
    fn room_event(&mut self, now: Instant, ch: Ch, e: VideoRoom) {
        let me = self.chans[ch].me;
        let name = self.chans[ch].spec.channel.clone();
        match e {
            VideoRoom::Event(RoomEvent::Publishers(list)) => {
                let c = &mut self.chans[ch];
                for p in list.into_iter().filter(|p| Some(p.id) != me) {
                    c.remote.insert(p.id, p);
                }
                self.roster(ch);
                self.sync_subscription(now, ch);
            }
            VideoRoom::Event(RoomEvent::Unpublished(who) | RoomEvent::Leaving(who) | RoomEvent::Kicked(who)) => {
                match who {
                    Who::Feed(f) if Some(f) != me => {
                        let c = &mut self.chans[ch];
                        if c.remote.remove(&f).is_some() {
                            // Janus renegotiates the subscription itself (autoupdate).
                            c.asked.retain(|a| a.feed != f);
                            self.roster(ch);
                        }
                    }
                    _ => self.fail(format!("our publisher left the room of channel {name}")),
                }
            }
            VideoRoom::Event(RoomEvent::Moderation { id, muted, .. }) if Some(id) == me => {
                self.emit(Output::Moderated { ch, muted });
            }
            VideoRoom::Destroyed { room } => self.fail(format!("room {room} of channel {name} was destroyed")),
            VideoRoom::Error { code, error } => warn!(channel = %name, code, %error, "VideoRoom error"),
            other => debug!(channel = %name, event = ?other, "room event"),
        }
    }

    /// An event (or reply) on a channel's subscriber handle.
    fn subscription_event(&mut self, now: Instant, ch: Ch, plugin: Option<VideoRoom>, jsep: Option<Jsep>) {
        let streams = match plugin {
            Some(VideoRoom::Attached { streams, .. }) => {
                self.chans[ch].sub = SubPhase::Joined;
                Some(streams)
            }
            Some(VideoRoom::Updated { streams }) => streams,
            Some(VideoRoom::Event(RoomEvent::Left)) => {
                let name = self.chans[ch].spec.channel.clone();
                return self.fail(format!("the subscription of channel {name} was closed"));
            }
            _ => None,
        };
        if let Some(streams) = streams {
            self.chans[ch].streams = streams.clone();
            self.emit(Output::Streams { ch, streams });
        }
        match jsep {
            Some(Jsep { kind: JsepKind::Offer, sdp }) => self.emit(Output::Offer { ch, sdp }),
            Some(Jsep { kind: JsepKind::Answer, .. }) => {
                return self.fail("Janus sent an answer on a subscription".into());
            }
            None => {}
        }
        self.sync_listen(now, ch);
    }

    /// Subscribe to every other publisher's audio we are not subscribed to yet.
    fn sync_subscription(&mut self, now: Instant, ch: Ch) {
        let c = &mut self.chans[ch];
        if self.failed || c.subscriber.is_none() || c.me.is_none() || c.sub_busy {
            return;
        }
        let missing: Vec<StreamRef> = c.desired().difference(&c.asked).cloned().collect();
        if missing.is_empty() {
            return;
        }
        c.asked.extend(missing.iter().cloned());
        c.sub_busy = true;
        match c.sub {
            SubPhase::Idle => {
                c.sub = SubPhase::Joining;
                let body = p::join_subscriber(c.spec.room.room, c.private_id, c.spec.room.pin.as_deref(), &missing);
                self.message(now, ch, Role::Subscriber, Req::Subscribe(ch, missing), body, None);
            }
            SubPhase::Joining | SubPhase::Joined => {
                let body = p::update_subscription(&missing, &[]);
                self.message(now, ch, Role::Subscriber, Req::Update(ch, missing), body, None);
            }
        }
    }

    fn sync_send(&mut self, now: Instant, ch: Ch) {
        let c = &mut self.chans[ch];
        if self.failed || c.phase != PubPhase::Published || c.send_busy || c.send_state == Some(c.send_wanted) {
            return;
        }
        let Some(mid) = c.mid.clone() else { return };
        c.send_busy = true;
        let on = c.send_wanted;
        self.message(now, ch, Role::Publisher, Req::ConfigureSend(ch, on), p::configure_send(&mid, on), None);
    }

    fn sync_listen(&mut self, now: Instant, ch: Ch) {
        let c = &mut self.chans[ch];
        if self.failed || c.sub != SubPhase::Joined || c.listen_busy {
            return;
        }
        let listen = c.listen;
        let changes: Vec<(String, bool)> =
            c.streams.iter().filter(|s| s.active && s.send != listen).map(|s| (s.mid.clone(), listen)).collect();
        if changes.is_empty() {
            return;
        }
        c.listen_busy = true;
        let body = p::configure_receive(&changes);
        self.message(now, ch, Role::Subscriber, Req::ConfigureReceive(ch, changes), body, None);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Plays Janus: reads what the session sends, answers like Janus 1.1 does.
    struct Harness {
        s: Session,
        now: Instant,
        sent: Vec<Value>,
        other: Vec<Output>,
    }

    const SESSION: u64 = 1000;

    fn spec(channel: &str, room: u64) -> ChannelSpec {
        ChannelSpec {
            channel: channel.into(),
            room: RoomSettings {
                room,
                description: channel.into(),
                secret: Some("sec".into()),
                pin: Some("1234".into()),
                admin_key: None,
                publishers: 10,
            },
            create: true,
            display: format!("edge/{channel}"),
        }
    }

    impl Harness {
        fn new(channels: Vec<ChannelSpec>) -> Self {
            let now = Instant::now();
            let s = Session::new(SessionConfig::default(), channels, &[], now);
            let mut h = Self { s, now, sent: Vec::new(), other: Vec::new() };
            h.drain();
            h
        }

        fn drain(&mut self) {
            while let Some(o) = self.s.poll_output() {
                match o {
                    Output::Send(t) => self.sent.push(serde_json::from_str(&t).unwrap()),
                    o => self.other.push(o),
                }
            }
        }

        /// The oldest unanswered request whose `janus` (and body `request`) match.
        fn take(&mut self, janus: &str, request: Option<&str>) -> Value {
            let i = self
                .sent
                .iter()
                .position(|m| m["janus"] == janus && request.is_none_or(|r| m["body"]["request"] == r))
                .unwrap_or_else(|| panic!("no {janus} {request:?} sent; sent: {:#?}", self.sent));
            self.sent.remove(i)
        }

        fn feed(&mut self, v: Value) {
            self.s.handle_text(self.now, &v.to_string());
            self.drain();
        }

        fn outputs(&mut self) -> Vec<Output> {
            std::mem::take(&mut self.other)
        }

        fn failed(&mut self) -> String {
            match self.outputs().into_iter().find(|o| matches!(o, Output::Failed(_))) {
                Some(Output::Failed(r)) => r,
                _ => panic!("no failure"),
            }
        }

        fn success(&mut self, req: &Value, data: Value) {
            self.feed(
                json!({"janus": "success", "transaction": req["transaction"], "session_id": SESSION, "data": data}),
            );
        }

        fn plugin_success(&mut self, req: &Value, data: Value) {
            self.feed(json!({"janus": "success", "transaction": req["transaction"], "session_id": SESSION,
                "sender": req["handle_id"], "plugindata": {"plugin": p::VIDEOROOM, "data": data}}));
        }

        fn ack(&mut self, req: &Value) {
            self.feed(json!({"janus": "ack", "transaction": req["transaction"], "session_id": SESSION}));
        }

        fn plugin_event(&mut self, req: &Value, data: Value, jsep: Option<Value>) {
            self.ack(req);
            let mut m = json!({"janus": "event", "transaction": req["transaction"], "session_id": SESSION,
                "sender": req["handle_id"], "plugindata": {"plugin": p::VIDEOROOM, "data": data}});
            if let Some(j) = jsep {
                m["jsep"] = j;
            }
            self.feed(m);
        }

        fn push(&mut self, handle: u64, data: Value, jsep: Option<Value>) {
            let mut m = json!({"janus": "event", "session_id": SESSION, "sender": handle,
                "plugindata": {"plugin": p::VIDEOROOM, "data": data}});
            if let Some(j) = jsep {
                m["jsep"] = j;
            }
            self.feed(m);
        }

        /// create → attach ×2 per channel, with handle ids 100+2i (publisher), 101+2i.
        fn attach_all(&mut self) {
            let create = self.take("create", None);
            assert!(create.get("session_id").is_none());
            self.success(&create, json!({"id": SESSION}));
            let n = self.s.chans.len();
            for i in 0..2 * n {
                let a = self.take("attach", None);
                assert_eq!((a["session_id"].as_u64(), a["plugin"].as_str()), (Some(SESSION), Some(p::VIDEOROOM)));
                self.success(&a, json!({"id": 100 + i as u64}));
            }
        }

        /// Room exists → join → offer → publish → answer → configure send:false, for channel `ch`
        /// (publisher handle 100+2ch), with `others` already publishing.
        fn publish(&mut self, ch: Ch, me: u64, others: Value) {
            let exists = self.take("message", Some("exists"));
            assert_eq!(exists["handle_id"], 100 + 2 * ch as u64);
            let room = exists["body"]["room"].clone();
            self.plugin_success(&exists, json!({"videoroom": "success", "room": room, "exists": true}));
            let join = self.take("message", Some("join"));
            assert_eq!(join["body"]["ptype"], "publisher");
            self.plugin_event(
                &join,
                json!({"videoroom": "joined", "room": room, "id": me, "private_id": me + 5000, "publishers": others}),
                None,
            );
            let outs = self.outputs();
            assert!(outs.contains(&Output::Joined { ch, id: me }), "{outs:?}");
            assert!(outs.contains(&Output::NeedOffer { ch }), "{outs:?}");
            self.s.publisher_offer(self.now, ch, "v=0\r\noffer".into(), "0".into());
            self.drain();
            let publish = self.take("message", Some("publish"));
            assert_eq!(publish["jsep"], json!({"type": "offer", "sdp": "v=0\r\noffer", "trickle": false}));
            self.plugin_event(
                &publish,
                json!({"videoroom": "event", "room": room, "configured": "ok"}),
                Some(json!({"type": "answer", "sdp": ANSWER})),
            );
            assert!(self.outputs().contains(&Output::Answer { ch, sdp: ANSWER.into() }));
            let configure = self.take("message", Some("configure"));
            assert_eq!(configure["body"]["streams"], json!([{"mid": "0", "send": false}]));
            self.plugin_event(&configure, json!({"videoroom": "event", "configured": "ok"}), None);
            assert!(self.outputs().contains(&Output::Sending { ch, on: false }));
        }
    }

    const ANSWER: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=candidate:1 1 udp 1 127.0.0.2 20000 typ host\r\n";

    fn publisher(id: u64) -> Value {
        json!({"id": id, "display": format!("box{id}"), "streams": [{"type": "audio", "mindex": 0, "mid": "0", "codec": "opus"}]})
    }

    fn sub_stream(mid: &str, feed: Option<u64>) -> Value {
        match feed {
            Some(f) => {
                json!({"type": "audio", "active": true, "mindex": 0, "mid": mid, "send": true, "feed_id": f, "feed_mid": "0"})
            }
            None => json!({"type": "audio", "active": false, "mindex": 0, "mid": mid, "send": true}),
        }
    }

    #[test]
    fn publishes_idle_and_subscribes_to_the_others_as_they_come_and_go() {
        let mut h = Harness::new(vec![spec("ops", 7)]);
        h.attach_all();
        h.publish(0, 12, json!([publisher(11)]));
        assert!(h.s.all_published());
        assert_eq!(h.s.publisher_id(0), Some(12));

        // Publisher 11 was there: one subscription join (handle 101) with its audio.
        let join = h.take("message", Some("join"));
        assert_eq!(join["handle_id"], 101);
        assert_eq!(join["body"]["ptype"], "subscriber");
        assert_eq!(join["body"]["private_id"], 5012);
        assert_eq!(join["body"]["pin"], "1234");
        assert_eq!(join["body"]["streams"], json!([{"feed": 11, "mid": "0"}]));
        h.plugin_event(
            &join,
            json!({"videoroom": "attached", "room": 7, "streams": [sub_stream("0", Some(11))]}),
            Some(json!({"type": "offer", "sdp": "v=0\r\nsub1"})),
        );
        let outs = h.outputs();
        assert!(matches!(&outs[0], Output::Streams { ch: 0, streams } if streams[0].feed == Some(11)), "{outs:?}");
        assert_eq!(outs[1], Output::Offer { ch: 0, sdp: "v=0\r\nsub1".into() });
        h.s.subscriber_answer(h.now, 0, "v=0\r\nanswer1".into());
        h.drain();
        let start = h.take("message", Some("start"));
        assert_eq!(start["jsep"]["type"], "answer");
        h.plugin_event(&start, json!({"videoroom": "event", "started": "ok"}), None);

        // Publisher 13 arrives: an update; Janus postpones it, then pushes the offer.
        h.push(100, json!({"videoroom": "event", "room": 7, "publishers": [publisher(13)]}), None);
        let outs = h.outputs();
        assert!(matches!(&outs[0], Output::Roster { ch: 0, publishers } if publishers.len() == 2), "{outs:?}");
        let update = h.take("message", Some("update"));
        assert_eq!(update["body"]["subscribe"], json!([{"feed": 13, "mid": "0"}]));
        // Our own appearance in the room is no reason to subscribe.
        h.push(100, json!({"videoroom": "event", "room": 7, "publishers": [publisher(12)]}), None);
        h.plugin_event(&update, json!({"videoroom": "updating", "room": 7}), None);
        assert!(h.sent.is_empty(), "{:?}", h.sent);
        h.push(101, json!({"videoroom": "updated", "room": 7, "streams": [sub_stream("0", Some(11)), sub_stream("1", Some(13))]}),
            Some(json!({"type": "offer", "sdp": "v=0\r\nsub2"})));
        assert!(h.outputs().contains(&Output::Offer { ch: 0, sdp: "v=0\r\nsub2".into() }));

        // 11 leaves: Janus renegotiates by itself; no request from us.
        h.push(100, json!({"videoroom": "event", "room": 7, "unpublished": 11}), None);
        assert!(h.sent.is_empty());
        h.push(
            101,
            json!({"videoroom": "updated", "room": 7, "streams": [sub_stream("0", None), sub_stream("1", Some(13))]}),
            Some(json!({"type": "offer", "sdp": "v=0\r\nsub3"})),
        );
        let outs = h.outputs();
        assert!(outs.iter().any(|o| matches!(o, Output::Streams { streams, .. } if !streams[0].active)));
        // 11 comes back (new publisher): subscribed again.
        h.push(100, json!({"videoroom": "event", "room": 7, "publishers": [publisher(11)]}), None);
        let update = h.take("message", Some("update"));
        assert_eq!(update["body"]["subscribe"], json!([{"feed": 11, "mid": "0"}]));
        assert!(!h.s.is_failed());
    }

    #[test]
    fn creates_a_missing_room_and_tolerates_losing_the_race() {
        let mut h = Harness::new(vec![spec("ops", 7)]);
        h.attach_all();
        let exists = h.take("message", Some("exists"));
        h.plugin_success(&exists, json!({"videoroom": "success", "room": 7, "exists": false}));
        let create = h.take("message", Some("create"));
        assert_eq!(create["body"]["room"], 7);
        assert_eq!(create["body"]["secret"], "sec");
        assert_eq!(create["body"]["audiocodec"], "opus");
        // Another box created it in between: fine, join.
        h.plugin_success(&create, json!({"videoroom": "event", "error_code": 427, "error": "Room 7 already exists"}));
        let join = h.take("message", Some("join"));
        assert_eq!(join["body"]["room"], 7);
        assert!(!h.s.is_failed());
    }

    #[test]
    fn without_create_it_joins_directly_and_a_missing_room_fails() {
        let mut s = spec("ops", 7);
        s.create = false;
        let mut h = Harness::new(vec![s]);
        h.attach_all();
        let join = h.take("message", Some("join"));
        h.plugin_event(&join, json!({"videoroom": "event", "error_code": 426, "error": "No such room (7)"}), None);
        let reason = h.failed();
        assert!(reason.contains("426") && reason.contains("ops"), "{reason}");
    }

    #[test]
    fn sending_follows_the_floor_one_configure_at_a_time() {
        let mut h = Harness::new(vec![spec("ops", 7)]);
        h.attach_all();
        // Wanted before publishing: applied once published.
        h.s.set_sending(h.now, 0, true);
        h.drain();
        assert!(h.sent.iter().all(|m| m["body"]["request"] != "configure"));
        let exists = h.take("message", Some("exists"));
        h.plugin_success(&exists, json!({"videoroom": "success", "room": 7, "exists": true}));
        let join = h.take("message", Some("join"));
        h.plugin_event(&join, json!({"videoroom": "joined", "room": 7, "id": 12}), None);
        h.s.publisher_offer(h.now, 0, "v=0\r\n".into(), "a0".into());
        h.drain();
        let publish = h.take("message", Some("publish"));
        h.plugin_event(
            &publish,
            json!({"videoroom": "event", "configured": "ok"}),
            Some(json!({"type": "answer", "sdp": ANSWER})),
        );
        // Janus relays new publishers already: nothing to configure.
        assert!(h.sent.iter().all(|m| m["body"]["request"] != "configure"), "{:?}", h.sent);
        h.outputs();

        h.s.set_sending(h.now, 0, false);
        h.s.set_sending(h.now, 0, true);
        h.s.set_sending(h.now, 0, false);
        h.drain();
        let c1 = h.take("message", Some("configure"));
        assert_eq!(c1["body"]["streams"], json!([{"mid": "a0", "send": false}]));
        assert!(h.sent.is_empty(), "one configure in flight");
        h.plugin_event(&c1, json!({"videoroom": "event", "configured": "ok"}), None);
        assert_eq!(h.outputs(), [Output::Sending { ch: 0, on: false }]);
        assert!(h.sent.is_empty(), "already where wanted");
        h.s.set_sending(h.now, 0, true);
        h.drain();
        let c2 = h.take("message", Some("configure"));
        assert_eq!(c2["body"]["streams"][0]["send"], true);
        h.plugin_event(&c2, json!({"videoroom": "event", "configured": "ok"}), None);
        assert_eq!(h.outputs(), [Output::Sending { ch: 0, on: true }]);
    }

    #[test]
    fn listen_mutes_every_stream_of_the_channel_without_renegotiating() {
        let mut h = Harness::new(vec![spec("ops", 7)]);
        h.attach_all();
        h.publish(0, 12, json!([publisher(11)]));
        h.s.set_listening(h.now, 0, false);
        h.drain();
        assert!(h.sent.iter().all(|m| m["body"]["request"] != "configure"), "nothing to mute yet");
        let join = h.take("message", Some("join"));
        h.plugin_event(
            &join,
            json!({"videoroom": "attached", "room": 7, "streams": [sub_stream("0", Some(11)), sub_stream("1", None)]}),
            Some(json!({"type": "offer", "sdp": "v=0\r\n"})),
        );
        let mute = h.take("message", Some("configure"));
        assert_eq!(mute["handle_id"], 101);
        assert_eq!(mute["body"]["streams"], json!([{"mid": "0", "send": false}]), "inactive m-lines are left alone");
        assert!(mute.get("jsep").is_none());
        h.plugin_event(&mute, json!({"videoroom": "event", "configured": "ok"}), None);
        assert!(h.sent.iter().all(|m| m["body"]["request"] != "configure"));
        h.s.set_listening(h.now, 0, true);
        h.drain();
        let unmute = h.take("message", Some("configure"));
        assert_eq!(unmute["body"]["streams"], json!([{"mid": "0", "send": true}]));
    }

    #[test]
    fn moderate_needs_a_known_feed_and_reports_the_result() {
        let mut h = Harness::new(vec![spec("ops", 7)]);
        h.attach_all();
        assert!(!h.s.moderate(h.now, 0, 11, true), "not in the room yet");
        h.publish(0, 12, json!([publisher(11)]));
        assert!(!h.s.moderate(h.now, 0, 99, true), "unknown feed");
        assert!(h.s.moderate(h.now, 0, 11, true));
        h.drain();
        let m = h.take("message", Some("moderate"));
        assert_eq!(
            m["body"],
            json!({"request": "moderate", "room": 7, "secret": "sec", "id": 11, "mid": "0", "mute": true})
        );
        h.plugin_success(&m, json!({"videoroom": "success"}));
        assert!(h.outputs().contains(&Output::ModerateDone { ch: 0, feed: 11, mute: true, result: Ok(()) }));
        assert!(h.s.moderate(h.now, 0, 11, false));
        h.drain();
        let m = h.take("message", Some("moderate"));
        h.plugin_success(&m, json!({"videoroom": "event", "error_code": 433, "error": "Unauthorized (wrong secret)"}));
        let outs = h.outputs();
        assert!(
            matches!(&outs[0], Output::ModerateDone { feed: 11, mute: false, result: Err(e), .. } if e.contains("433")),
            "{outs:?}"
        );
        // Being moderated ourselves is reported.
        h.push(100, json!({"videoroom": "event", "room": 7, "id": 12, "mid": "0", "moderation": "muted"}), None);
        assert_eq!(h.outputs(), [Output::Moderated { ch: 0, muted: true }]);
        assert!(!h.s.is_failed());
    }

    #[test]
    fn a_feed_gone_before_the_subscription_is_forgotten_not_fatal() {
        let mut h = Harness::new(vec![spec("ops", 7)]);
        h.attach_all();
        h.publish(0, 12, json!([publisher(11), publisher(13)]));
        let join = h.take("message", Some("join"));
        h.plugin_event(&join, json!({"videoroom": "event", "error_code": 428, "error": "No such feed (11)"}), None);
        assert!(!h.s.is_failed());
        // The join is retried without them; they come back with a new `publishers` event.
        assert!(h.sent.is_empty());
        h.push(100, json!({"videoroom": "event", "room": 7, "publishers": [publisher(13)]}), None);
        let join = h.take("message", Some("join"));
        assert_eq!(join["body"]["streams"], json!([{"feed": 13, "mid": "0"}]));
    }

    #[test]
    fn keepalives_and_request_timeouts() {
        let mut h = Harness::new(vec![spec("ops", 7)]);
        let t0 = h.now;
        // The create itself has a deadline.
        assert_eq!(h.s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        h.attach_all();
        h.publish(0, 12, json!([]));
        assert_eq!(h.s.poll_timeout(), Some(t0 + Duration::from_secs(25)));
        h.now = t0 + Duration::from_secs(25);
        h.s.handle_timeout(h.now);
        h.drain();
        let k = h.take("keepalive", None);
        assert_eq!(k["session_id"], SESSION);
        assert_eq!(h.s.poll_timeout(), Some(h.now + Duration::from_secs(10)), "waiting for the ack");
        h.ack(&k);
        assert_eq!(h.s.poll_timeout(), Some(t0 + Duration::from_secs(50)));
        // A keepalive nobody acknowledges ends the session.
        h.now = t0 + Duration::from_secs(50);
        h.s.handle_timeout(h.now);
        h.drain();
        h.take("keepalive", None);
        h.now += Duration::from_secs(10);
        h.s.handle_timeout(h.now);
        h.drain();
        let reason = h.failed();
        assert!(reason.contains("keepalive"), "{reason}");
        assert_eq!(h.s.poll_timeout(), None);
    }

    #[test]
    fn losing_the_session_fails_once() {
        let lost = [
            json!({"janus": "timeout", "session_id": SESSION}),
            json!({"janus": "hangup", "session_id": SESSION, "sender": 101, "reason": "ICE failed"}),
            json!({"janus": "detached", "session_id": SESSION, "sender": 100}),
            json!({"janus": "event", "session_id": SESSION, "sender": 100,
                   "plugindata": {"plugin": p::VIDEOROOM, "data": {"videoroom": "destroyed", "room": 7}}}),
            json!({"janus": "event", "session_id": SESSION, "sender": 100,
                   "plugindata": {"plugin": p::VIDEOROOM, "data": {"videoroom": "event", "leaving": "ok", "reason": "kicked"}}}),
            json!({"janus": "error", "session_id": SESSION, "error": {"code": 458, "reason": "No such session"}}),
        ];
        for msg in lost {
            let mut h = Harness::new(vec![spec("ops", 7)]);
            h.attach_all();
            h.publish(0, 12, json!([]));
            h.feed(msg.clone());
            let outs = h.outputs();
            assert_eq!(outs.iter().filter(|o| matches!(o, Output::Failed(_))).count(), 1, "{msg}: {outs:?}");
            // Nothing more after a failure.
            h.feed(msg.clone());
            h.s.set_sending(h.now, 0, true);
            h.s.handle_timeout(h.now + Duration::from_secs(100));
            h.drain();
            assert!(h.outputs().is_empty() && h.sent.is_empty(), "{msg}");
        }
        // A 458 in reply to a request.
        let mut h = Harness::new(vec![spec("ops", 7)]);
        h.attach_all();
        let exists = h.take("message", Some("exists"));
        h.feed(json!({"janus": "error", "transaction": exists["transaction"], "error": {"code": 458, "reason": "No such session"}}));
        assert!(h.failed().contains("session not found"));
    }

    #[test]
    fn malformed_input_fails_the_session_and_unknown_input_is_ignored() {
        let mut h = Harness::new(vec![spec("ops", 7)]);
        h.attach_all();
        h.feed(json!({"janus": "slowlink", "session_id": SESSION, "sender": 100}));
        h.feed(json!({"janus": "webrtcup", "session_id": SESSION, "sender": 100}));
        h.feed(json!({"janus": "event", "session_id": SESSION, "sender": 999, "plugindata": {"plugin": p::VIDEOROOM, "data": {"videoroom": "event"}}}));
        h.feed(json!({"janus": "ack", "transaction": "not-ours"}));
        h.feed(json!({"janus": "event", "session_id": 5, "sender": 100}));
        assert!(!h.s.is_failed(), "{:?}", h.outputs());
        h.s.handle_text(h.now, "{\"janus\": ");
        h.drain();
        assert!(h.failed().contains("malformed"));
    }

    #[test]
    fn unexpected_replies_fail_instead_of_panicking() {
        let mut h = Harness::new(vec![spec("ops", 7)]);
        let create = h.take("create", None);
        h.success(&create, json!({}));
        assert!(h.failed().contains("no session id"));

        let mut h = Harness::new(vec![spec("ops", 7)]);
        h.attach_all();
        let exists = h.take("message", Some("exists"));
        h.plugin_success(&exists, json!({"videoroom": "created", "room": 7}));
        assert!(h.failed().contains("exists"));

        // A publish answer without candidates names the likely cause.
        let mut h = Harness::new(vec![spec("ops", 7)]);
        h.attach_all();
        let exists = h.take("message", Some("exists"));
        h.plugin_success(&exists, json!({"videoroom": "success", "room": 7, "exists": true}));
        let join = h.take("message", Some("join"));
        h.plugin_event(&join, json!({"videoroom": "joined", "room": 7, "id": 12}), None);
        h.s.publisher_offer(h.now, 0, "v=0\r\n".into(), "0".into());
        h.drain();
        let publish = h.take("message", Some("publish"));
        h.plugin_event(
            &publish,
            json!({"videoroom": "event", "configured": "ok"}),
            Some(json!({"type": "answer", "sdp": "v=0\r\n"})),
        );
        assert!(h.failed().contains("no ICE candidate"));
    }

    #[test]
    fn channels_are_independent_and_pipelined() {
        let mut h = Harness::new(vec![spec("ops", 7), spec("fire", 8)]);
        h.attach_all();
        // Both rooms checked at once.
        let e1 = h.take("message", Some("exists"));
        let e2 = h.take("message", Some("exists"));
        assert_eq!((e1["body"]["room"].as_u64(), e2["body"]["room"].as_u64()), (Some(7), Some(8)));
        assert_eq!((e1["handle_id"].as_u64(), e2["handle_id"].as_u64()), (Some(100), Some(102)));
        h.plugin_success(&e2, json!({"videoroom": "success", "room": 8, "exists": true}));
        let j2 = h.take("message", Some("join"));
        assert_eq!(j2["body"]["room"], 8);
        assert_eq!(j2["body"]["display"], "edge/fire");
        assert!(!h.s.all_published());
    }

    #[test]
    fn api_secret_goes_into_every_request() {
        let config = SessionConfig { api_secret: Some("apis".into()), ..SessionConfig::default() };
        let mut s = Session::new(config, vec![spec("ops", 7)], &[], Instant::now());
        let Some(Output::Send(t)) = s.poll_output() else { panic!() };
        assert_eq!(serde_json::from_str::<Value>(&t).unwrap()["apisecret"], "apis");
        assert!(!format!("{s:?}").contains("apis"));
    }
}
