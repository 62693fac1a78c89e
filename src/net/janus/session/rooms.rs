//! Per channel: our publisher and our subscription in its room, and what each reply or event
//! from Janus means for them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use tracing::{debug, warn};

use super::request::Req;
use super::{Ch, ChannelSpec, Output, Role, RoomFault, Session, ROOM_RECHECK};
use crate::net::janus::protocol::{
    self as p, codes, Envelope, Jsep, JsepKind, Publisher, RoomEvent, StreamRef, SubStream, VideoRoom, Who,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PubPhase {
    Attaching,
    CheckingRoom,
    /// The room does not exist and this box does not create rooms: `exists` again at
    /// `recheck_at`.
    WaitingRoom,
    CreatingRoom,
    /// `edit` with our secret, then with a wrong one.
    CheckingSecret,
    /// `join` without the PIN.
    ProbingPin,
    Joining,
    /// Waiting for the driver's offer.
    Offering,
    Publishing,
    Published,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SubPhase {
    /// No subscription yet (nobody else publishes, or not attached yet).
    Idle,
    Joining,
    Joined,
}

#[derive(Debug)]
pub(super) struct Chan {
    pub(super) spec: ChannelSpec,
    pub(super) publisher: Option<u64>,
    pub(super) subscriber: Option<u64>,
    pub(super) phase: PubPhase,
    pub(super) me: Option<u64>,
    pub(super) private_id: Option<u64>,
    /// Our published stream's mid.
    pub(super) mid: Option<String>,
    pub(super) remote: BTreeMap<u64, Publisher>,
    pub(super) send_wanted: bool,
    pub(super) send_state: Option<bool>,
    pub(super) send_busy: bool,
    pub(super) sub: SubPhase,
    /// Publisher streams we asked Janus to subscribe us to (and it did not refuse).
    pub(super) asked: BTreeSet<StreamRef>,
    pub(super) sub_busy: bool,
    pub(super) streams: Vec<SubStream>,
    pub(super) listen: bool,
    pub(super) listen_busy: bool,
    /// When to ask `exists` again (waiting for a room someone else creates).
    pub(super) recheck_at: Option<Instant>,
    /// `RoomMissing` said in this session.
    pub(super) missing_said: bool,
}

impl Chan {
    pub(super) fn new(spec: ChannelSpec, listen: bool) -> Self {
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
            recheck_at: None,
            missing_said: false,
        }
    }

    /// Every audio stream of the other publishers.
    pub(super) fn desired(&self) -> BTreeSet<StreamRef> {
        self.remote.values().filter(|p| Some(p.id) != self.me).flat_map(Publisher::audio).collect()
    }
}

impl Session {
    /// A final reply to one of our requests.
    pub(super) fn reply(
        &mut self,
        now: Instant,
        req: Req,
        id: Option<u64>,
        plugin: Option<VideoRoom>,
        jsep: Option<Jsep>,
    ) {
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
                        self.check_room(now, ch);
                    }
                    Role::Subscriber => {
                        c.subscriber = Some(handle);
                        self.sync_subscription(now, ch);
                    }
                }
            }
            Req::Keepalive | Req::Destroy => {}
            Req::Exists(ch) => match plugin {
                Some(VideoRoom::Exists { exists: true, .. }) => self.verify(now, ch),
                Some(VideoRoom::Exists { exists: false, .. }) if self.chans[ch].spec.create => {
                    let c = &mut self.chans[ch];
                    c.phase = PubPhase::CreatingRoom;
                    let body = p::create_room(&c.spec.room);
                    self.message(now, ch, Role::Publisher, Req::CreateRoom(ch), body, None);
                }
                Some(VideoRoom::Exists { exists: false, .. }) => {
                    let c = &mut self.chans[ch];
                    c.phase = PubPhase::WaitingRoom;
                    c.recheck_at = Some(now + ROOM_RECHECK);
                    if !std::mem::replace(&mut c.missing_said, true) {
                        self.emit(Output::RoomMissing { ch });
                    }
                }
                other => self.fail(format!("exists: unexpected reply {other:?}")),
            },
            Req::CreateRoom(ch) => match plugin {
                Some(VideoRoom::Created { .. }) => {
                    debug!(room = self.chans[ch].spec.room.room, "room created");
                    self.verify(now, ch)
                }
                other => self.fail(format!("create room: unexpected reply {other:?}")),
            },
            Req::CheckSecret(ch, ours) => match plugin {
                Some(VideoRoom::Edited { .. }) if ours => self.check_secret(now, ch, false),
                Some(VideoRoom::Edited { .. }) => self.refuse(ch, RoomFault::NoSecret, ""),
                other => self.fail(format!("edit: unexpected reply {other:?}")),
            },
            Req::ProbePin(ch) => match plugin {
                Some(VideoRoom::Joined { .. }) => self.refuse(ch, RoomFault::NoPin, ""),
                other => self.fail(format!("join without PIN: unexpected reply {other:?}")),
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
            Req::CreateRoom(ch) if code == codes::ROOM_EXISTS => self.verify(now, ch),
            Req::CheckSecret(ch, true) if code == codes::UNAUTHORIZED => {
                self.refuse(ch, RoomFault::SecretRefused, &format!("{code} {error}"))
            }
            // A wrong secret refused (or missing, for `ProbePin`'s PIN): as it should be.
            Req::CheckSecret(ch, false) if code == codes::UNAUTHORIZED => self.probe_pin(now, ch),
            Req::ProbePin(ch) if code == codes::UNAUTHORIZED || code == codes::MISSING_ELEMENT => self.join(now, ch),
            Req::Join(ch) if code == codes::UNAUTHORIZED || code == codes::MISSING_ELEMENT => {
                self.refuse(ch, RoomFault::PinRefused, &format!("{code} {error}"))
            }
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
                let channel = req.channel().map(|ch| self.chans[ch].spec.channel.clone()).unwrap_or_default();
                self.fail(format!("VideoRoom refused {} for channel {channel}: {code} {error}", req.name()));
            }
        }
    }

    /// Ask whether the channel's room exists.
    pub(super) fn check_room(&mut self, now: Instant, ch: Ch) {
        let c = &mut self.chans[ch];
        c.recheck_at = None;
        c.phase = PubPhase::CheckingRoom;
        let body = p::exists(c.spec.room.room);
        self.message(now, ch, Role::Publisher, Req::Exists(ch), body, None);
    }

    /// The room exists: check the protection the config asks for, then join.
    fn verify(&mut self, now: Instant, ch: Ch) {
        if self.chans[ch].spec.room.secret.is_some() {
            self.check_secret(now, ch, true);
        } else {
            self.probe_pin(now, ch);
        }
    }

    /// `edit` changing nothing, with our secret (`ours`) or with one that is not ours.
    fn check_secret(&mut self, now: Instant, ch: Ch, ours: bool) {
        const WRONG: [&str; 2] = ["roipd-not-the-room-secret", "roipd-not-the-room-secret-either"];
        let c = &mut self.chans[ch];
        let Some(secret) = c.spec.room.secret.as_deref() else { return self.probe_pin(now, ch) };
        let sent = if ours { secret } else { WRONG.into_iter().find(|w| *w != secret).unwrap_or(WRONG[0]) };
        c.phase = PubPhase::CheckingSecret;
        let body = p::edit_probe(c.spec.room.room, sent);
        self.message(now, ch, Role::Publisher, Req::CheckSecret(ch, ours), body, None);
    }

    /// With a PIN: a `join` without it, which the room must refuse; without one, join.
    fn probe_pin(&mut self, now: Instant, ch: Ch) {
        let c = &mut self.chans[ch];
        if c.spec.room.pin.is_none() {
            return self.join(now, ch);
        }
        c.phase = PubPhase::ProbingPin;
        let body = p::join_publisher(c.spec.room.room, &c.spec.display, None);
        self.message(now, ch, Role::Publisher, Req::ProbePin(ch), body, None);
    }

    /// The room lacks protection the config asks for: say why and drop the session (nothing
    /// was published; a probe join that got in leaves with the session).
    fn refuse(&mut self, ch: Ch, fault: RoomFault, janus_said: &str) {
        let c = &self.chans[ch];
        let (room, channel) = (c.spec.room.room, &c.spec.channel);
        let said = if janus_said.is_empty() { String::new() } else { format!(" (Janus: {janus_said})") };
        let reason = match fault {
            RoomFault::NoPin => format!(
                "room {room} of channel {channel} has no PIN (a join without it was accepted): anyone who reaches \
                 Janus could listen and talk there"
            ),
            RoomFault::PinRefused if c.spec.room.pin.is_none() => {
                format!("room {room} of channel {channel} needs a PIN and this box has none (pin_file){said}")
            }
            RoomFault::PinRefused => format!(
                "room {room} of channel {channel} refuses this box's PIN{said}: someone else made it with another PIN"
            ),
            RoomFault::NoSecret => format!(
                "room {room} of channel {channel} has no secret (a wrong one was accepted): anyone could mute, kick \
                 or destroy there"
            ),
            RoomFault::SecretRefused => format!(
                "room {room} of channel {channel} refuses this box's secret{said}: someone else made it, and the \
                 floor host could not moderate it"
            ),
        };
        self.emit(Output::RoomRefused { ch, fault, reason: reason.clone() });
        self.fail(format!("room refused: {reason}"));
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
    pub(super) fn room_event(&mut self, now: Instant, ch: Ch, e: VideoRoom) {
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
            VideoRoom::Event(RoomEvent::Moderation { id, muted, .. }) => {
                self.emit(Output::FeedModerated { ch, feed: id, muted });
            }
            VideoRoom::Destroyed { room } => self.fail(format!("room {room} of channel {name} was destroyed")),
            VideoRoom::Error { code, error } => warn!(channel = %name, code, %error, "VideoRoom error"),
            other => debug!(channel = %name, event = ?other, "room event"),
        }
    }

    /// An event (or reply) on a channel's subscriber handle.
    pub(super) fn subscription_event(&mut self, now: Instant, ch: Ch, plugin: Option<VideoRoom>, jsep: Option<Jsep>) {
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

    pub(super) fn sync_send(&mut self, now: Instant, ch: Ch) {
        let c = &mut self.chans[ch];
        if self.failed || c.phase != PubPhase::Published || c.send_busy || c.send_state == Some(c.send_wanted) {
            return;
        }
        let Some(mid) = c.mid.clone() else { return };
        c.send_busy = true;
        let on = c.send_wanted;
        self.message(now, ch, Role::Publisher, Req::ConfigureSend(ch, on), p::configure_send(&mid, on), None);
    }

    pub(super) fn sync_listen(&mut self, now: Instant, ch: Ch) {
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
