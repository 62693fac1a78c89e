//! The floor host: edges join this box's channel arbiters over MQTT, and their decisions are
//! enforced in Janus.
//!
//! Every edge is a hub peer of the channel router ([`HubEvent::Joined`] / `Floor` / `Left`),
//! so the same arbiters as for browser consoles and roipd-hub edges decide; the router's
//! [`ToPeer::Floor`] messages go back to the edge on its `to_edge` topic (directed messages and
//! broadcasts on one topic, so they keep their order). The edge's last will (or a clean
//! offline) is its `Left`: its floor is freed. The current holder of each channel is published
//! retained. Media never passes here.
//!
//! With Janus options, the host keeps its own Janus session (its publishers stay idle) to see
//! each room's publishers and their audio:
//! - every publisher that does not hold the floor is muted with VideoRoom `moderate`, the
//!   holder is unmuted on grant (a box keying without the floor is not heard);
//! - audio from the holder's feed keeps the arbiter's no-media timer alive, as media through
//!   an embedded hub does; a holder whose audio stops reaching Janus loses the floor.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::protocol::{
    open, parse_edge_presence, parse_to_host, to_json, valid_device, Accepted, AcceptedMember, AuthError, EdgeFloor,
    HolderInfo, HolderState, HostPresence, JoinMember, Refused, ReplayGuard, Sealer, ToEdge, ToHost, Topic, Topics,
};
use super::{mqtt_options, random_token, report_rejected, will, Link, Net, BACKOFF_MAX, BACKOFF_MIN};
use crate::config::MqttConfig;
use crate::core::floor::{ParticipantId, Priority, ToArbiter, ToParticipant};
use crate::fleet::auth::RejectCounter;
use crate::fleet::backoff::Backoff;
use crate::fleet::protocol::UplinkStatus;
use crate::fleet::{Event, EventKind, FleetHandle, FloorHostStatus, UplinkState};
use crate::net::janus::{JanusEvent, JanusHandle, JanusOptions};
use crate::net::peer_queue::{self, Limits, PeerRx};
use crate::net::protocol::Action;
use crate::net::{HubEvent, MemberRequest, PeerId, ToPeer};

/// Peer ids of MQTT edges start here, far from the embedded hub's (which count from 1), since
/// both feed the same router.
pub const FIRST_PEER: PeerId = 1 << 40;
/// Sessions remembered per edge within one host run (their replays are refused); an edge that
/// reconnected more often than this within one run could have its oldest join replayed.
const SESSIONS_PER_EDGE: usize = 16;
/// How often the moderation of every room is checked against the floor.
const MODERATION_RECHECK: Duration = Duration::from_secs(1);
/// How long a moderation we asked for waits for Janus's notification of it (its echo).
const ECHO_WAIT: Duration = Duration::from_secs(2);
/// At most one `moderation_overridden` event per channel and kind (holder muted, another
/// publisher unmuted) per this; the rest are counted into the next.
const OVERRIDE_REPORT_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct FloorHostOptions {
    pub mqtt: MqttConfig,
    /// This box: the `floor_hub` its edges name.
    pub device_id: String,
    /// The channels hosted here; a join naming another is refused.
    pub channels: Vec<String>,
    /// Janus, to moderate publishers and see the holder's audio. None: floor only.
    pub janus: Option<JanusOptions>,
    /// Where `auth_failed` events go (forged, unsigned or replayed floor messages); None: logged only.
    pub report: Option<FleetHandle>,
}

/// Start the floor host; runs until `cancel`. Must be called inside a tokio runtime. Errors are
/// setup problems only (bad ids, unreadable credential files). `hub_events`: the router's hub
/// inbox ([`peer_queue::deliver`]: an edge's media dropped when full, the rest waits for room).
pub fn start_host(
    o: FloorHostOptions,
    hub_events: mpsc::Sender<HubEvent>,
    cancel: CancellationToken,
) -> Result<(), String> {
    let topics = Topics::new(&o.device_id)
        .ok_or_else(|| format!("device id `{}` cannot be used in the floor topics", o.device_id))?;
    let epoch = random_token();
    mqtt_options(&o.mqtt, &o.device_id, will(topics.host(), String::new()))?;
    let key = crate::fleet::client::floor_key(&o.mqtt)?;
    let (janus, janus_rx) = match &o.janus {
        Some(options) => {
            let (tx, rx) = mpsc::channel(peer_queue::INBOX);
            (Some(crate::net::janus::start(options.clone(), tx, cancel.clone())), Some(rx))
        }
        None => (None, None),
    };
    // The peers' forwarders wait for room (each drains its own bounded peer queue meanwhile,
    // so a host that falls behind disconnects the peer rather than grow).
    let (peer_tx, peer_rx) = mpsc::channel(peer_queue::INBOX);
    info!(device = %o.device_id, %epoch, channels = o.channels.len(), janus = janus.is_some(), "floor host starting (MQTT)");
    let mut host = Host {
        holders: o.channels.iter().map(|c| (c.clone(), None)).collect(),
        o,
        topics,
        epoch,
        hub: hub_events,
        out: Vec::new(),
        edges: HashMap::new(),
        peers: HashMap::new(),
        next_peer: FIRST_PEER,
        peer_tx,
        janus,
        rooms: HashMap::new(),
        moderated: HashMap::new(),
        moderate_failed: HashSet::new(),
        link: None,
        sealer: Sealer::new(key),
        guards: HashMap::new(),
        rejected: RejectCounter::default(),
        echoes: Echoes::default(),
        overrides: HashMap::new(),
        janus_state: None,
        serving: UplinkState::Connecting,
        reported: None,
    };
    if host.janus.is_some() {
        // Until our own Janus session is up we cannot see anyone's audio.
        host.janus_state = Some((UplinkState::Connecting, None));
        host.set_media_seen(false);
    }
    tokio::spawn(host.run(peer_rx, janus_rx, cancel));
    Ok(())
}

/// What a peer's forwarder passes on: the router's answer to the join first, then its messages.
enum PeerOut {
    Joined(Result<Vec<ParticipantId>, String>),
    Msg(ToPeer),
}

struct EdgeEntry {
    peer: PeerId,
    session: String,
    join: u64,
    members: Vec<JoinMember>,
    /// The router's ids, in `members` order, once it accepted.
    ids: Option<Vec<ParticipantId>>,
    feeds: BTreeMap<String, Option<u64>>,
}

impl EdgeEntry {
    fn member(&self, id: ParticipantId) -> Option<&JoinMember> {
        let i = self.ids.as_ref()?.iter().position(|x| *x == id)?;
        self.members.get(i)
    }
}

struct Host {
    o: FloorHostOptions,
    topics: Topics,
    /// New at every start: edges join again when they see another one.
    epoch: String,
    hub: mpsc::Sender<HubEvent>,
    /// Events for `hub`, in order, until the loop's next [`Host::flush`].
    out: Vec<HubEvent>,
    /// By device id.
    edges: HashMap<String, EdgeEntry>,
    peers: HashMap<PeerId, String>,
    next_peer: PeerId,
    peer_tx: mpsc::Sender<(PeerId, PeerOut)>,
    /// Current holder per hosted channel, as last published.
    holders: BTreeMap<String, Option<HolderInfo>>,
    janus: Option<JanusHandle>,
    /// The other publishers of each channel's room: (feed, display).
    rooms: HashMap<String, Vec<(u64, String)>>,
    /// The last mute (true) or unmute asked per (channel, feed).
    moderated: HashMap<(String, u64), bool>,
    /// Feeds whose moderation failed (warned once, then retried quietly).
    moderate_failed: HashSet<(String, u64)>,
    link: Option<Link>,
    /// Signs what we send (with a fleet key).
    sealer: Sealer,
    /// Per edge: its sessions' sequence numbers in this host run (replays are dropped).
    guards: HashMap<String, ReplayGuard>,
    rejected: RejectCounter,
    /// Moderations we asked for, to tell their notifications from someone else's.
    echoes: Echoes,
    /// Moderations by someone else that we undid, for the rate-limited event: per channel and
    /// what was done (muted: the holder muted; else another publisher unmuted).
    overrides: HashMap<(String, bool), RejectCounter>,
    /// Our own Janus link (None: not configured), with why it is down.
    janus_state: Option<(UplinkState, Option<String>)>,
    /// The floor service on the broker.
    serving: UplinkState,
    /// What the status last said (the status is only updated on change).
    reported: Option<(Option<UplinkStatus>, FloorHostStatus)>,
}

impl Host {
    async fn run(
        mut self,
        mut peer_rx: mpsc::Receiver<(PeerId, PeerOut)>,
        mut janus_rx: Option<mpsc::Receiver<JanusEvent>>,
        cancel: CancellationToken,
    ) {
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut reconnect_at = Some(Instant::now());
        let mut connected_at: Option<Instant> = None;
        // Enforcement heals itself: a moderation Janus refused or could not do yet is asked
        // again (only differences from what was asked are sent).
        let mut recheck = tokio::time::interval(MODERATION_RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.flush().await;
            tokio::select! {
                _ = cancel.cancelled() => break,
                net = next_net(&mut self.link) => match net {
                    Net::Connected => {
                        connected_at = Some(Instant::now());
                        if let Err(e) = self.connected() {
                            self.lost(&e);
                            reconnect_at = Some(Instant::now() + backoff.next_delay(rand::random::<f64>()));
                        }
                    }
                    Net::Message { topic, payload } => {
                        if let Err(e) = self.message(&topic, &payload) {
                            self.lost(&e);
                            reconnect_at = Some(Instant::now() + backoff.next_delay(rand::random::<f64>()));
                        }
                    }
                    Net::Lost(reason) => {
                        if connected_at.take().is_some_and(|t| t.elapsed() >= Duration::from_secs(10)) {
                            backoff.reset();
                        }
                        self.lost(&reason);
                        let delay = backoff.next_delay(rand::random::<f64>());
                        debug!(%reason, retry_in_ms = delay.as_millis() as u64, "floor host: reconnecting to the broker");
                        reconnect_at = Some(Instant::now() + delay);
                    }
                },
                _ = crate::wait::until(reconnect_at), if reconnect_at.is_some() => {
                    reconnect_at = None;
                    // Every broker connection is a new host run: the edges join it anew (we
                    // forgot them on the loss), and nothing signed in an earlier run applies.
                    self.epoch = random_token();
                    self.guards.clear();
                    let offline = self.presence(false);
                    match mqtt_options(&self.o.mqtt, &self.o.device_id, will(self.topics.host(), offline)) {
                        Ok(options) => self.link = Some(Link::connect(options)),
                        Err(e) => {
                            warn!(error = %e, "floor host: MQTT options");
                            reconnect_at = Some(Instant::now() + BACKOFF_MAX);
                        }
                    }
                }
                Some((peer, out)) = peer_rx.recv() => {
                    if let Err(e) = self.peer_out(peer, out) {
                        self.lost(&e);
                        reconnect_at = Some(Instant::now() + backoff.next_delay(rand::random::<f64>()));
                    }
                }
                Some(event) = crate::wait::recv(&mut janus_rx) => self.janus_event(event),
                _ = recheck.tick(), if self.janus.is_some() => self.moderate_all(),
            }
        }
        // Clean stop: the floor is free, the host offline; then disconnect (no will).
        let devices: Vec<String> = self.edges.keys().cloned().collect();
        for d in devices {
            self.remove_edge(&d, "floor host stopping");
        }
        let channels: Vec<String> = self.holders.keys().cloned().collect();
        for c in channels {
            self.set_holder(&c, None);
        }
        self.flush().await;
        if let Some(link) = self.link.take() {
            let offline = self.presence(false);
            link.close(Some((self.topics.host(), offline))).await;
        }
        info!("floor host stopped");
    }

    /// Hand the events over; an edge flooding the router waits here, its MQTT messages with it.
    async fn flush(&mut self) {
        self.report_status();
        for e in self.out.drain(..) {
            let _ = peer_queue::deliver(&self.hub, e).await;
        }
    }

    /// Whether the router can judge no-media on our channels: only while we see their media.
    fn set_media_seen(&mut self, seen: bool) {
        for channel in &self.o.channels {
            self.out.push(HubEvent::MediaSeen { channel: channel.clone(), seen });
        }
    }

    /// Our Janus link and floor service in the retained status, when they changed.
    fn report_status(&mut self) {
        let Some(fleet) = self.o.report.as_ref() else { return };
        let uplink =
            self.janus_state.as_ref().map(|(state, detail)| UplinkStatus { state: *state, detail: detail.clone() });
        let floor = FloorHostStatus {
            state: self.serving,
            edges: self.edges.len(),
            media_watch: self.janus_state.as_ref().is_none_or(|(s, _)| *s == UplinkState::Up),
        };
        let now = (uplink, floor);
        if self.reported.as_ref() == Some(&now) {
            return;
        }
        let (uplink, floor) = now.clone();
        fleet.update_status(|s| {
            if uplink.is_some() {
                s.uplink = uplink;
            }
            s.floor_host = Some(floor);
        });
        self.reported = Some(now);
    }

    fn event(&self, event: Event) {
        if let Some(fleet) = self.o.report.as_ref() {
            fleet.publish_event(event);
        }
    }

    /// Sign (with a fleet key) and queue.
    fn publish(&self, topic: &str, msg: String, retain: bool) -> Result<(), String> {
        match &self.link {
            Some(link) => link.publish(topic, self.sealer.seal(topic, &self.epoch, msg), retain),
            None => Ok(()),
        }
    }

    /// Our presence, signed.
    fn presence(&self, online: bool) -> String {
        let msg = to_json(&HostPresence { online, epoch: self.epoch.clone() });
        self.sealer.seal(&self.topics.host(), &self.epoch, msg)
    }

    fn reject(&mut self, topic: &str, e: &AuthError) {
        report_rejected(&mut self.rejected, self.o.report.as_ref(), topic, e);
    }

    /// Subscribe, say online (edges join on it), and publish every channel's holder.
    fn connected(&mut self) -> Result<(), String> {
        let link = self.link.as_ref().ok_or("not connected")?;
        for filter in self.topics.host_filters() {
            link.subscribe(&filter)?;
        }
        link.publish(&self.topics.host(), self.presence(true), true)?;
        for (channel, holder) in &self.holders {
            let state = HolderState { channel: channel.clone(), epoch: self.epoch.clone(), holder: holder.clone() };
            self.publish(&self.topics.holder(channel), to_json(&state), true)?;
        }
        self.serving = UplinkState::Up;
        info!(device = %self.o.device_id, "floor host: connected to the broker, online");
        Ok(())
    }

    /// The broker connection is gone: edges saw our last will and will join again, so every
    /// edge leaves now (their floors are freed).
    fn lost(&mut self, reason: &str) {
        if self.serving == UplinkState::Up {
            self.serving = UplinkState::Down;
        }
        if self.link.take().is_some() && !self.edges.is_empty() {
            warn!(%reason, edges = self.edges.len(), "floor host: broker connection lost; every edge leaves");
        }
        let devices: Vec<String> = self.edges.keys().cloned().collect();
        for d in devices {
            self.remove_edge(&d, "broker connection lost");
        }
    }

    fn message(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
        // With a fleet key nothing unsigned, forged or replayed gets past here (docs/mqtt.md).
        let opened = match open(self.sealer.key(), topic, payload) {
            Ok(opened) => opened,
            Err(e) => {
                self.reject(topic, &e);
                return Ok(());
            }
        };
        let payload = opened.msg.as_slice();
        match self.topics.parse(topic) {
            Some(Topic::ToHost(device)) => match parse_to_host(payload) {
                Ok(msg) if opened.auth.as_ref().is_some_and(|(run, _)| run != msg.session()) => {
                    self.reject(topic, &AuthError::BadEnvelope("signed by another session".into()))
                }
                Ok(ToHost::Join(j))
                    if j.epoch.as_deref() != Some(&self.epoch) && (j.epoch.is_some() || opened.auth.is_some()) =>
                {
                    // A join for another host run (a stale presence, or a replay): say which
                    // run is current; nothing else changes.
                    debug!(%device, epoch = ?j.epoch, "floor host: join for another host run; refused with ours");
                    let reason = "not this floor host's current run; join again with its epoch".to_owned();
                    let refused = ToEdge::Refused(Refused {
                        session: j.session,
                        join: j.join,
                        epoch: self.epoch.clone(),
                        reason,
                    });
                    self.publish(&self.topics.to_edge(&device), refused.to_json(), false)?;
                }
                Ok(msg) if !self.fresh(&device, &msg, opened.auth.as_ref()) => {}
                Ok(ToHost::Join(j)) => self.join(&device, j)?,
                Ok(msg) => {
                    let current = self.edges.get(&device).is_some_and(|e| e.session == msg.session());
                    if !current {
                        debug!(%device, "floor host: message from an earlier or unknown session dropped");
                        return Ok(());
                    }
                    match msg {
                        ToHost::Floor(r) => self.floor_request(&device, ParticipantId(r.id), r.action),
                        ToHost::Feeds(f) => {
                            if let Some(e) = self.edges.get_mut(&device) {
                                e.feeds = f.feeds;
                            }
                            debug!(%device, "floor host: edge feeds updated");
                            self.moderate_all();
                        }
                        ToHost::Join(_) => {}
                    }
                }
                Err(e) => warn!(%topic, error = %e, "floor host: malformed message dropped"),
            },
            Some(Topic::Presence(device)) => match parse_edge_presence(payload) {
                // No sequence check: an offline presence names its session, and is only ever
                // published when that session ends (its last will, or a clean stop).
                Ok(p) if opened.auth.as_ref().is_some_and(|(run, _)| *run != p.session) => {
                    self.reject(topic, &AuthError::BadEnvelope("signed by another session".into()))
                }
                Ok(p) if !p.online => {
                    if self.edges.get(&device).is_some_and(|e| e.session == p.session) {
                        info!(%device, "floor host: edge offline (last will or clean stop); its floor is freed");
                        self.remove_edge(&device, "offline");
                    }
                }
                Ok(_) => debug!(%device, "floor host: edge online"),
                Err(e) => warn!(%topic, error = %e, "floor host: malformed presence dropped"),
            },
            _ => debug!(%topic, "floor host: message on an unexpected topic"),
        }
        Ok(())
    }

    /// With a fleet key: is this signed message new for its session? Only a join (for this host
    /// run) starts a session. False: dropped and reported.
    fn fresh(&mut self, device: &str, msg: &ToHost, auth: Option<&(String, u64)>) -> bool {
        let Some((run, seq)) = auth else { return true };
        let start = matches!(msg, ToHost::Join(_));
        let guard = self.guards.entry(device.to_owned()).or_insert_with(|| ReplayGuard::new(SESSIONS_PER_EDGE));
        match guard.check(run, *seq, start) {
            Ok(()) => true,
            Err(e) => {
                self.reject(&self.topics.to_host(device), &e);
                false
            }
        }
    }

    fn join(&mut self, device: &str, j: super::protocol::Join) -> Result<(), String> {
        // A join replaces whatever this edge had: it went down and forgot its floor.
        self.remove_edge(device, "joined again");
        if let Some(m) = j.members.iter().find(|m| !self.o.channels.contains(&m.channel)) {
            let reason = format!("channel `{}` is not hosted by {}", m.channel, self.o.device_id);
            warn!(%device, %reason, "floor host: join refused");
            let refused =
                ToEdge::Refused(Refused { session: j.session, join: j.join, epoch: self.epoch.clone(), reason });
            return self.publish(&self.topics.to_edge(device), refused.to_json(), false);
        }
        let peer = self.next_peer;
        self.next_peer += 1;
        let (to_peer, to_peer_rx) = peer_queue::channel(Limits::PEER);
        let (reply, reply_rx) = oneshot::channel();
        let members = j
            .members
            .iter()
            .map(|m| MemberRequest { key: m.key.clone(), channel: m.channel.clone(), priority: Priority(m.priority) })
            .collect();
        if self.hub.is_closed() {
            warn!(%device, "floor host: the channel router is gone; join refused");
            let reason = "the floor host is stopping".to_owned();
            let refused =
                ToEdge::Refused(Refused { session: j.session, join: j.join, epoch: self.epoch.clone(), reason });
            return self.publish(&self.topics.to_edge(device), refused.to_json(), false);
        }
        self.out.push(HubEvent::Joined { peer, name: device.to_owned(), members, to_peer, reply });
        tokio::spawn(forward_peer(peer, reply_rx, to_peer_rx, self.peer_tx.clone()));
        info!(%device, peer, members = j.members.len(), "floor host: edge joining");
        self.peers.insert(peer, device.to_owned());
        self.edges.insert(
            device.to_owned(),
            EdgeEntry { peer, session: j.session, join: j.join, members: j.members, ids: None, feeds: j.feeds },
        );
        Ok(())
    }

    fn floor_request(&mut self, device: &str, member: ParticipantId, action: Action) {
        let Some(e) = self.edges.get(device) else { return };
        let Some(m) = e.member(member) else {
            warn!(%device, id = member.0, "floor host: request for a member that is not this edge's; dropped");
            return;
        };
        let msg = match action {
            // The router uses the priority the member joined with.
            Action::Request => ToArbiter::Request { priority: Priority(m.priority) },
            Action::Release => ToArbiter::Release,
        };
        info!(%device, key = %m.key, channel = %m.channel, ?action, "floor host: edge asks");
        self.out.push(HubEvent::Floor { peer: e.peer, member, msg });
    }

    /// The edge leaves the router (its floor is freed) and no longer holds any channel.
    fn remove_edge(&mut self, device: &str, why: &str) {
        let Some(e) = self.edges.remove(device) else { return };
        self.peers.remove(&e.peer);
        debug!(%device, peer = e.peer, %why, "floor host: edge leaves");
        self.out.push(HubEvent::Left { peer: e.peer });
        let held: Vec<String> = self
            .holders
            .iter()
            .filter(|(_, h)| h.as_ref().is_some_and(|h| h.device.as_deref() == Some(device)))
            .map(|(c, _)| c.clone())
            .collect();
        for c in held {
            self.set_holder(&c, None);
        }
    }

    fn peer_out(&mut self, peer: PeerId, out: PeerOut) -> Result<(), String> {
        let Some(device) = self.peers.get(&peer).cloned() else { return Ok(()) };
        let Some(e) = self.edges.get_mut(&device) else { return Ok(()) };
        let topic = self.topics.to_edge(&device);
        match out {
            PeerOut::Joined(Ok(ids)) => {
                let members = e
                    .members
                    .iter()
                    .zip(&ids)
                    .map(|(m, id)| AcceptedMember { key: m.key.clone(), channel: m.channel.clone(), id: id.0 })
                    .collect();
                let accepted = ToEdge::Accepted(Accepted {
                    session: e.session.clone(),
                    join: e.join,
                    epoch: self.epoch.clone(),
                    members,
                });
                e.ids = Some(ids);
                info!(%device, peer, "floor host: edge joined");
                self.publish(&topic, accepted.to_json(), false)?;
                self.moderate_all();
            }
            PeerOut::Joined(Err(reason)) => {
                warn!(%device, %reason, "floor host: the router refused the edge");
                let refused = ToEdge::Refused(Refused {
                    session: e.session.clone(),
                    join: e.join,
                    epoch: self.epoch.clone(),
                    reason,
                });
                self.publish(&topic, refused.to_json(), false)?;
                self.remove_edge(&device, "refused");
            }
            PeerOut::Msg(ToPeer::Floor { channel, member, msg, holder_name }) => {
                let floor = ToEdge::Floor(EdgeFloor::new(&e.session, &channel, member, &msg, holder_name.as_deref()));
                if let Some(m) = member.and_then(|id| e.member(id)) {
                    info!(%device, key = %m.key, %channel, ?msg, "floor host: decision");
                }
                self.publish(&topic, floor.to_json(), false)?;
                if member.is_none() {
                    let holder = match msg {
                        ToParticipant::Taken { holder, priority } => Some(HolderInfo {
                            id: holder.0,
                            priority: priority.0,
                            name: holder_name.unwrap_or_default(),
                            device: self.device_of(&channel, holder),
                        }),
                        _ => None,
                    };
                    self.set_holder(&channel, holder);
                }
            }
            PeerOut::Msg(_) => {}
        }
        Ok(())
    }

    /// The edge whose member `id` is on `channel`.
    fn device_of(&self, channel: &str, id: ParticipantId) -> Option<String> {
        self.edges.iter().find(|(_, e)| e.member(id).is_some_and(|m| m.channel == channel)).map(|(d, _)| d.clone())
    }

    /// Publish (retained) and enforce a channel's holder when it changed.
    fn set_holder(&mut self, channel: &str, holder: Option<HolderInfo>) {
        let Some(current) = self.holders.get_mut(channel) else { return };
        if *current == holder {
            return;
        }
        *current = holder.clone();
        match &holder {
            Some(h) => info!(%channel, holder = %h.name, device = ?h.device, "floor host: channel taken"),
            None => info!(%channel, "floor host: channel idle"),
        }
        let state = HolderState { channel: channel.to_owned(), epoch: self.epoch.clone(), holder };
        if let Err(e) = self.publish(&self.topics.holder(channel), to_json(&state), true) {
            warn!(error = %e, "floor host: holder not published");
        }
        self.moderate(channel);
    }

    // ---- Janus: moderation and the holder's audio ----

    fn janus_event(&mut self, event: JanusEvent) {
        match event {
            JanusEvent::Up { channels } => {
                info!(rooms = channels.len(), "floor host: Janus session up; no-media judged again after a grace");
                // Rosters may have come before `Up`, when nothing could be moderated yet.
                self.moderated.clear();
                self.moderate_all();
                self.set_media_seen(true);
                self.janus_state = Some((UplinkState::Up, None));
                self.event(
                    Event::new(EventKind::LinkUp).reason("janus").detail("the floor host's Janus session is up"),
                );
            }
            JanusEvent::Down { reason } => {
                warn!(%reason, "floor host: Janus session down; moderation resumes and no-media is judged again when it is back");
                self.rooms.clear();
                self.moderated.clear();
                self.echoes.clear();
                self.set_media_seen(false);
                self.event(Event::new(EventKind::LinkDown).reason("janus").detail(reason.clone()));
                self.janus_state = Some((UplinkState::Down, Some(reason)));
            }
            JanusEvent::Roster { channel, publishers } => {
                debug!(%channel, ?publishers, "floor host: room publishers");
                self.moderated.retain(|(c, feed), _| *c != channel || publishers.iter().any(|(f, _)| f == feed));
                self.moderate_failed.retain(|(c, feed)| *c != channel || publishers.iter().any(|(f, _)| f == feed));
                self.rooms.insert(channel.clone(), publishers);
                self.moderate(&channel);
            }
            JanusEvent::Media { channel, feed, packet } => {
                // The router uses it only from the holder: it keeps the no-media timer alive.
                if let Some(peer) = self.edge_of_feed(&channel, feed).and_then(|d| self.edges.get(&d)).map(|e| e.peer) {
                    self.out.push(HubEvent::Media { peer, channel, packet });
                }
            }
            JanusEvent::ModerateDone { channel, feed, mute, result } => match result {
                Ok(()) => {
                    debug!(%channel, feed, mute, "floor host: moderate done");
                    self.moderate_failed.remove(&(channel, feed));
                }
                Err(error) => {
                    let key = (channel, feed);
                    if self.moderate_failed.insert(key.clone()) {
                        warn!(channel = %key.0, feed, mute, %error, "floor host: moderate failed; retried every second");
                        let what = if mute { "mute" } else { "unmute" };
                        let publisher = self.display_of(&key.0, feed).unwrap_or_default();
                        self.event(
                            Event::new(EventKind::ModerationFailed)
                                .channel(key.0.clone())
                                .detail(format!("{what} feed {feed} {publisher:?}: {error}; retried every second")),
                        );
                    } else {
                        debug!(channel = %key.0, feed, mute, %error, "floor host: moderate failed again");
                    }
                    self.moderated.remove(&key);
                }
            },
            JanusEvent::RoomMissing { channel, room } => {
                // Only with `create = false`: the floor host creates its rooms otherwise.
                let detail = format!("Janus room {room} of channel {channel} does not exist (create = false): waiting");
                warn!(%channel, room, "floor host: {detail}");
                self.janus_state = Some((UplinkState::Connecting, Some(detail)));
            }
            JanusEvent::RoomRefused { channel, fault, reason } => {
                // Not joined, so nothing to moderate there: said in the status and as an event.
                self.event(crate::net::janus::refused_event(&channel, fault, &reason));
                self.janus_state = Some((UplinkState::Refused, Some(reason)));
            }
            JanusEvent::FeedModerated { channel, feed, muted } => self.feed_moderated(channel, feed, muted),
            JanusEvent::Sending { .. } | JanusEvent::Moderated { .. } => {}
        }
    }

    /// The display name of publisher `feed` in `channel`'s room.
    fn display_of(&self, channel: &str, feed: u64) -> Option<String> {
        self.rooms.get(channel)?.iter().find(|(f, _)| *f == feed).map(|(_, d)| d.clone())
    }

    /// The edge publishing `feed` in `channel`'s room: by the feed it reported, else by the
    /// display name (`device/port` or `device`).
    fn edge_of_feed(&self, channel: &str, feed: u64) -> Option<String> {
        if let Some((d, _)) = self.edges.iter().find(|(_, e)| e.feeds.get(channel) == Some(&Some(feed))) {
            return Some(d.clone());
        }
        let (_, display) = self.rooms.get(channel)?.iter().find(|(f, _)| *f == feed)?;
        let device = display_device(display);
        (valid_device(device) && self.edges.contains_key(device)).then(|| device.to_owned())
    }

    fn moderate_all(&mut self) {
        let channels: Vec<String> = self.rooms.keys().cloned().collect();
        for c in channels {
            self.moderate(&c);
        }
    }

    /// Janus says publisher `feed` was muted or unmuted, by us or by anyone else with the room's
    /// secret. Someone else's moderation that goes against the floor (the holder muted, another
    /// publisher unmuted) is undone at once, and reported.
    fn feed_moderated(&mut self, channel: String, feed: u64, muted: bool) {
        let now = Instant::now().into_std();
        let key = (channel, feed);
        if self.echoes.ours(&key, muted, now) {
            debug!(channel = %key.0, feed, muted, "floor host: our moderation landed");
            return;
        }
        let Some(publishers) = self.rooms.get(&key.0) else { return };
        let Some((_, publisher)) = publishers.iter().find(|(f, _)| *f == feed) else { return };
        let want = Some(feed) != self.holder_feed_in(&key.0, publishers);
        if want == muted {
            debug!(channel = %key.0, feed, muted, "floor host: moderated by someone else, as the floor wants");
            return;
        }
        let publisher = publisher.clone();
        let what = if muted { "muted the floor holder" } else { "unmuted a publisher without the floor" };
        warn!(channel = %key.0, feed, %publisher, "floor host: someone else {what} in Janus; undone");
        let counter = self.overrides.entry((key.0.clone(), muted)).or_default();
        if let Some(n) = counter.reject(now, OVERRIDE_REPORT_EVERY) {
            let detail = format!(
                "someone else {what} (feed {feed} {publisher:?}); undone ({n} since the last report, {} in all)",
                counter.total
            );
            self.event(Event::new(EventKind::ModerationOverridden).channel(key.0.clone()).detail(detail));
        }
        self.moderated.remove(&key);
        let channel = key.0;
        self.moderate(&channel);
    }

    /// The floor holder's feed among `channel`'s room `publishers`; None: nobody may talk.
    fn holder_feed_in(&self, channel: &str, publishers: &[(u64, String)]) -> Option<u64> {
        let holder = self.holders.get(channel).cloned().flatten();
        let holder_device = holder.as_ref().and_then(|h| h.device.clone());
        let reported = holder_device.as_deref().and_then(|d| self.edges.get(d)?.feeds.get(channel).copied().flatten());
        holder_feed(publishers, holder_device.as_deref(), reported)
    }

    /// Mute every publisher of the channel's room but the holder's; unmute the holder's.
    fn moderate(&mut self, channel: &str) {
        let Some(janus) = self.janus.as_ref().filter(|j| j.is_up()) else { return };
        let Some(publishers) = self.rooms.get(channel) else { return };
        let holder = self.holders.get(channel).cloned().flatten();
        let holder_feed = self.holder_feed_in(channel, publishers);
        let now = Instant::now().into_std();
        for (feed, publisher) in publishers {
            let mute = Some(*feed) != holder_feed;
            let key = (channel.to_owned(), *feed);
            if self.moderated.get(&key) == Some(&mute) {
                continue;
            }
            if !janus.moderate(channel, *feed, mute) {
                debug!(%channel, feed, mute, "floor host: Janus cannot moderate this feed yet; retried");
            } else {
                info!(
                    %channel, feed, %publisher, mute, holder = ?holder.as_ref().map(|h| &h.name),
                    "floor host: moderate ({})", if mute { "not the floor holder" } else { "holds the floor" }
                );
                self.echoes.asked(key.clone(), mute, now);
                self.moderated.insert(key, mute);
            }
        }
    }
}

/// Moderations we asked for whose notification from Janus has not come yet. Janus tells every
/// publisher in a room about every moderation, ours included, without saying who asked: a
/// notification that matches one of ours (in order) is ours; anything else is someone else's.
#[derive(Debug, Default)]
struct Echoes {
    pending: HashMap<(String, u64), VecDeque<(bool, std::time::Instant)>>,
}

impl Echoes {
    fn asked(&mut self, key: (String, u64), mute: bool, now: std::time::Instant) {
        self.pending.entry(key).or_default().push_back((mute, now));
    }

    /// A notification that `key` was muted (or not): true when it answers one we asked (that
    /// one, and any older one left unanswered, is done with).
    fn ours(&mut self, key: &(String, u64), muted: bool, now: std::time::Instant) -> bool {
        let Some(q) = self.pending.get_mut(key) else { return false };
        q.retain(|(_, at)| now.saturating_duration_since(*at) < ECHO_WAIT);
        let found = q.iter().position(|(m, _)| *m == muted);
        if let Some(i) = found {
            q.drain(..=i);
        }
        if q.is_empty() {
            self.pending.remove(key);
        }
        found.is_some()
    }

    fn clear(&mut self) {
        self.pending.clear();
    }
}

/// The device a publisher's display name (`device/port` or `device`) names.
fn display_device(display: &str) -> &str {
    display.split('/').next().unwrap_or_default()
}

/// The holder's publisher among a room's `publishers` (feed, display): the feed its edge
/// reported if it is there (a reported feed can be stale after a Janus restart), else the one
/// whose display names the holder's device. None: nobody in the room may talk.
fn holder_feed(publishers: &[(u64, String)], holder_device: Option<&str>, reported: Option<u64>) -> Option<u64> {
    let device = holder_device?;
    reported
        .filter(|f| publishers.iter().any(|(p, _)| p == f))
        .or_else(|| publishers.iter().find(|(_, display)| display_device(display) == device).map(|(f, _)| *f))
}

/// The router's answer to a join, then the peer's messages (media dropped: it never passes
/// here), in order, into the host's loop.
async fn forward_peer(
    peer: PeerId,
    reply: oneshot::Receiver<Result<Vec<ParticipantId>, String>>,
    mut to_peer: PeerRx<ToPeer>,
    out: mpsc::Sender<(PeerId, PeerOut)>,
) {
    let answer = reply.await.unwrap_or_else(|_| Err("the channel router is gone".into()));
    let accepted = answer.is_ok();
    if out.send((peer, PeerOut::Joined(answer))).await.is_err() || !accepted {
        return;
    }
    while let Ok(m) = to_peer.recv().await {
        if matches!(m, ToPeer::Media { .. }) {
            continue;
        }
        if out.send((peer, PeerOut::Msg(m))).await.is_err() {
            return;
        }
    }
}

async fn next_net(link: &mut Option<Link>) -> Net {
    match link {
        Some(link) => link.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_moderations_are_told_from_someone_elses() {
        let t0 = std::time::Instant::now();
        let a = ("ops".to_owned(), 11);
        let mut e = Echoes::default();
        assert!(!e.ours(&a, true, t0), "nothing asked: someone else's");
        e.asked(a.clone(), true, t0);
        e.asked(a.clone(), false, t0);
        assert!(e.ours(&a, true, t0), "our mute");
        assert!(!e.ours(&("ops".to_owned(), 12), false, t0), "another feed");
        assert!(!e.ours(&a, true, t0), "a second mute: not ours");
        assert!(e.ours(&a, false, t0), "our unmute");
        assert!(!e.ours(&a, false, t0), "answered already");
        // An echo that never came does not excuse someone else's moderation for ever.
        e.asked(a.clone(), true, t0);
        assert!(!e.ours(&a, true, t0 + ECHO_WAIT), "too late to be ours");
        e.asked(a.clone(), false, t0);
        e.clear();
        assert!(!e.ours(&a, false, t0));
    }

    #[test]
    fn the_holders_publisher_by_reported_feed_else_by_display_name() {
        let room = vec![(11, "edge-a/radio1".to_owned()), (12, "edge-ab/radio1".to_owned()), (13, "edge-c".to_owned())];
        assert_eq!(holder_feed(&room, None, Some(11)), None, "nobody holds: everyone muted");
        assert_eq!(holder_feed(&room, Some("edge-a"), Some(11)), Some(11));
        assert_eq!(holder_feed(&room, Some("edge-a"), None), Some(11), "by display name");
        assert_eq!(holder_feed(&room, Some("edge-a"), Some(99)), Some(11), "a stale feed falls back to the name");
        assert_eq!(holder_feed(&room, Some("edge-c"), None), Some(13), "a display without a port");
        assert_eq!(holder_feed(&room, Some("edge-b"), None), None, "edge-ab is not edge-b");
        assert_eq!(holder_feed(&room, Some("edge-d"), None), None, "the holder does not publish here");
        assert_eq!(holder_feed(&[], Some("edge-a"), Some(11)), None);
        assert_eq!(display_device("edge-a/radio1"), "edge-a");
        assert_eq!(display_device("edge-a"), "edge-a");
        assert_eq!(display_device(""), "");
    }
}
