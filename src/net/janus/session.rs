//! One Janus session as a sans-IO state machine: everything roipd says to Janus and does
//! with its replies, without sockets, WebRTC or a clock (`now` comes in with every input).
//!
//! Per channel it keeps two VideoRoom handles:
//! - a **publisher**: `exists` → `create` if missing (only a box that creates rooms: the floor
//!   host; any other waits, asking `exists` again every [`ROOM_RECHECK`]) → the room's
//!   protection checked (below) → `join` → (the driver makes an offer) → `publish` → (the
//!   driver applies the answer) → `configure send:false`; afterwards `configure send:true/false`
//!   follows [`Session::set_sending`];
//! - a **multistream subscriber** to the other publishers' audio: created with `join` once
//!   someone else publishes (Janus refuses an empty subscription), grown with `update` as
//!   publishers arrive; Janus renegotiates by itself when one leaves (`autoupdate`). Janus
//!   makes the offers, the driver answers them ([`Output::Offer`], [`Session::subscriber_answer`]).
//!
//! **Room check.** Before it joins, a box checks that the room has the protection its config
//! asks for, whoever created it: with a secret, `edit` (changing nothing) must accept ours
//! (this box can moderate) and refuse a wrong one (the room has a secret at all); with a PIN,
//! a `join` without it must be refused, and then ours accepted. A room that fails is refused
//! ([`Output::RoomRefused`], then `Failed`): nothing is published into it.
//!
//! Replies are matched to requests by transaction; a request unanswered for
//! `request_timeout`, a `keepalive` every `keepalive` interval, and anything that means the
//! session is lost (error 458, `timeout`, `hangup`/`detached` of one of our handles, our
//! publisher kicked, the room destroyed, a refused request, a malformed message) end in one
//! [`Output::Failed`]: the driver drops this session and builds a new one. Nothing here
//! panics on Janus's input.
//!
//! This file holds the session itself: its API, transactions, keepalive and failure, and the
//! routing of what Janus sends; `request.rs` the requests, `rooms.rs` each channel's publisher
//! and subscription and what replies and events mean for them.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::{debug, warn};

mod request;
mod rooms;

use request::{Pending, Req};
use rooms::{Chan, PubPhase};

use super::protocol::{self as p, codes, Envelope, Incoming, Jsep, JsepKind, Kind, Publisher, RoomSettings, SubStream};

/// Index of a channel in the list the session was made with.
pub type Ch = usize;

/// A box that does not create rooms asks again this often whether a missing room exists yet.
pub const ROOM_RECHECK: Duration = Duration::from_millis(500);

/// Why a room is refused: it lacks protection the box's config asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomFault {
    /// A join without the PIN is accepted: the room has no PIN.
    NoPin,
    /// Our PIN does not open the room (it has another one, or this box has none).
    PinRefused,
    /// A wrong secret is accepted: the room has no secret, so anyone may moderate, kick and
    /// destroy.
    NoSecret,
    /// Our secret is refused: this box (the floor host) cannot moderate the room.
    SecretRefused,
}

impl RoomFault {
    /// Short name for events (`reason`) and logs.
    pub fn code(self) -> &'static str {
        match self {
            RoomFault::NoPin => "no_pin",
            RoomFault::PinRefused => "pin_refused",
            RoomFault::NoSecret => "no_secret",
            RoomFault::SecretRefused => "secret_refused",
        }
    }
}

/// One channel: its room and how this box appears there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSpec {
    /// The channel's name in roipd.
    pub channel: String,
    pub room: RoomSettings,
    /// Create the room if it does not exist (the floor host); otherwise wait for it.
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
    /// A moderator (anyone with the room's secret, us included) muted or unmuted another
    /// publisher's stream.
    FeedModerated { ch: Ch, feed: u64, muted: bool },
    /// The answer to [`Session::moderate`].
    ModerateDone { ch: Ch, feed: u64, mute: bool, result: Result<(), String> },
    /// The channel's room does not exist and this box does not create rooms: `exists` is
    /// asked again every [`ROOM_RECHECK`]. Once per session and channel.
    RoomMissing { ch: Ch },
    /// The channel's room lacks protection the config asks for; nothing was published into
    /// it. `Failed` follows.
    RoomRefused { ch: Ch, fault: RoomFault, reason: String },
    /// The session is lost: close the socket, drop the media connections, start over.
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Publisher,
    Subscriber,
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
        let rechecks = self.chans.iter().filter_map(|c| c.recheck_at);
        requests.chain(rechecks).chain(self.next_keepalive).min()
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
        for ch in 0..self.chans.len() {
            if self.chans[ch].recheck_at.is_some_and(|at| at <= now) {
                self.check_room(now, ch);
            }
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

    /// Some channel's room does not exist yet and this box waits for it (the driver's step
    /// timeout does not run meanwhile).
    pub fn waiting_for_room(&self) -> bool {
        self.chans.iter().any(|c| c.phase == PubPhase::WaitingRoom)
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
}

#[cfg(test)]
mod tests;
