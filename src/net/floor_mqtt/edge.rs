//! An edge's floor client: this box's members join the floor host's arbiters over MQTT.
//!
//! [`start_edge`] runs forever: connect (client id `<device>-floor`, last will = offline on the
//! presence topic, so the host frees our floor if we vanish), publish online, wait for the
//! host's presence, join, and once the host accepted, [`UplinkEvent::Up`] with its ids. Losing
//! the broker, the host going offline or the host (re)connecting (it forgets every edge then)
//! is one [`UplinkEvent::Down`]; the router unkeys every radio on it and the client joins again.
//! Floor messages reach the router only while up.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::protocol::{
    open, parse_host_presence, parse_to_edge, to_json, valid_device, AuthError, EdgePresence, Feeds, FloorRequest,
    Join, JoinMember, ReplayGuard, Sealer, ToEdge, ToHost, Topic, Topics,
};
use super::{mqtt_options, random_token, report_rejected, will, Link, Net, BACKOFF_MAX, BACKOFF_MIN};
use crate::config::MqttConfig;
use crate::core::floor::{ParticipantId, ToArbiter};
use crate::fleet::auth::RejectCounter;
use crate::fleet::FleetHandle;
use crate::net::peer_queue;
use crate::net::protocol::{is_valid_name, MAX_MEMBERS};
use crate::net::reconnect::Reconnect;
use crate::net::{MemberRequest, UplinkEvent};

/// A join without an answer is sent again after this long (the host may have been busy
/// restarting, or the message lost with a connection).
const JOIN_RETRY: Duration = Duration::from_secs(3);
/// After a refusal (a channel the host does not have): ask again this much later.
const REFUSED_RETRY: Duration = Duration::from_secs(10);
/// Floor messages from the router waiting for the client (as the hub uplink's); more are
/// dropped: the client is stuck, and the host's own timers end a floor it does not hear of.
const COMMAND_QUEUE: usize = 512;

#[derive(Debug, Clone)]
pub struct FloorEdgeOptions {
    pub mqtt: MqttConfig,
    /// This box (topic level and client id).
    pub device_id: String,
    /// The floor host's device id.
    pub floor_hub: String,
    /// One host participant per entry; `Up` answers in this order.
    pub members: Vec<MemberRequest>,
    /// Where `auth_failed` events go (forged, unsigned or replayed floor messages); None: logged only.
    pub report: Option<FleetHandle>,
}

#[derive(Debug)]
enum Cmd {
    Floor(ParticipantId, ToArbiter),
}

/// The router's side of the floor client. Cheap to clone; never blocks.
#[derive(Debug, Clone)]
pub struct FloorEdgeHandle {
    cmds: mpsc::Sender<Cmd>,
    up: Arc<AtomicBool>,
    feeds: Arc<Mutex<BTreeMap<String, Option<u64>>>>,
    /// The feeds changed (the value is in the shared map): a newest-state slot, never full.
    feeds_changed: Arc<Notify>,
    tasks: TaskTracker,
}

impl FloorEdgeHandle {
    /// A floor request or release of one of our members (the host's id from `Up`). Dropped
    /// while down: the router treats every remote floor as lost on `Down`.
    pub fn floor(&self, member: ParticipantId, msg: ToArbiter) {
        if self.is_up() && self.cmds.try_send(Cmd::Floor(member, msg)).is_err() {
            warn!(?member, "floor: client not keeping up, floor message dropped");
        }
    }

    /// This box's Janus publisher id in a channel's room (None while down), so the host can
    /// tell our stream from others when it moderates. Kept across reconnects.
    pub fn set_feed(&self, channel: &str, feed: Option<u64>) {
        let changed = {
            let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
            feeds.insert(channel.to_owned(), feed) != Some(feed)
        };
        if changed {
            self.feeds_changed.notify_one();
        }
    }

    /// Joined: the host accepted our members and floor messages flow.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// After cancelling: wait until the client has said offline and disconnected.
    pub async fn stopped(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Start the floor client; runs until `cancel`. Must be called inside a tokio runtime. Errors
/// are setup problems only (bad ids, unreadable credential files); a missing broker or host is
/// retried forever.
/// `events`: the router's bounded inbox; floor events wait for room there ([`peer_queue::deliver`]).
pub fn start_edge(
    o: FloorEdgeOptions,
    events: mpsc::Sender<UplinkEvent>,
    cancel: CancellationToken,
) -> Result<FloorEdgeHandle, String> {
    let topics = Topics::new(&o.floor_hub)
        .ok_or_else(|| format!("floor hub `{}` cannot be used in MQTT topics", o.floor_hub))?;
    if !valid_device(&o.device_id) {
        return Err(format!("device id `{}` cannot be used in the floor topics", o.device_id));
    }
    if o.members.len() > MAX_MEMBERS {
        return Err(format!("{} floor members; at most {MAX_MEMBERS}", o.members.len()));
    }
    if let Some(m) = o.members.iter().find(|m| !is_valid_name(&m.key) || !is_valid_name(&m.channel)) {
        return Err(format!("floor member {}/{}: names must match [a-z0-9][a-z0-9_-]*", m.key, m.channel));
    }
    // Credential, key and TLS files are read now, so a bad one is a start-up error.
    mqtt_options(&o.mqtt, &o.device_id, will(topics.presence(&o.device_id), String::new()))?;
    let key = crate::fleet::client::floor_key(&o.mqtt)?;
    let (cmds_tx, cmds) = mpsc::channel(COMMAND_QUEUE);
    let up = Arc::new(AtomicBool::new(false));
    let feeds = Arc::new(Mutex::new(BTreeMap::new()));
    let feeds_changed = Arc::new(Notify::new());
    let tasks = TaskTracker::new();
    info!(device = %o.device_id, hub = %o.floor_hub, members = o.members.len(), "floor client starting (MQTT)");
    let edge = Edge {
        topics,
        o,
        events,
        out: Vec::new(),
        up: up.clone(),
        feeds: feeds.clone(),
        feeds_changed: feeds_changed.clone(),
        joined: false,
        reconnect: Reconnect::new("floor client", BACKOFF_MIN, BACKOFF_MAX),
        join_seq: 0,
        retry_at: None,
        sealer: Sealer::new(key),
        host_epoch: None,
        joined_epoch: None,
        host_guard: ReplayGuard::new(4),
        rejected: RejectCounter::default(),
    };
    tasks.spawn(edge.run(cmds, cancel));
    Ok(FloorEdgeHandle { cmds: cmds_tx, up, feeds, feeds_changed, tasks })
}

struct Edge {
    o: FloorEdgeOptions,
    topics: Topics,
    events: mpsc::Sender<UplinkEvent>,
    /// Events for `events`, in order, until the next [`Edge::flush`].
    out: Vec<UplinkEvent>,
    up: Arc<AtomicBool>,
    feeds: Arc<Mutex<BTreeMap<String, Option<u64>>>>,
    feeds_changed: Arc<Notify>,
    /// Accepted by the host on the current connection.
    joined: bool,
    /// Backoff between connections, and one `Down` per loss (not one per failed retry).
    reconnect: Reconnect,
    join_seq: u64,
    /// When to send the join (again).
    retry_at: Option<Instant>,
    /// Signs what we send (with a fleet key).
    sealer: Sealer,
    /// The host run (epoch) our joins are for: from its presence, or corrected by a refusal.
    host_epoch: Option<String>,
    /// The host run we are joined with: only its floor messages and its offline count.
    joined_epoch: Option<String>,
    /// The host's sequence numbers per run, on this connection (replays are dropped).
    host_guard: ReplayGuard,
    rejected: RejectCounter,
}

impl Edge {
    async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>, cancel: CancellationToken) {
        loop {
            // A new session per connection: its last will frees only its own floor.
            let session = random_token();
            let presence = self.topics.presence(&self.o.device_id);
            let offline = to_json(&EdgePresence { online: false, session: session.clone() });
            let offline = self.sealer.seal(&presence, &session, offline);
            (self.host_epoch, self.joined_epoch) = (None, None);
            self.host_guard.clear();
            let result = match mqtt_options(&self.o.mqtt, &self.o.device_id, will(presence, offline)) {
                Ok(options) => self.connection(Link::connect(options), &session, &mut cmds, &cancel).await,
                Err(e) => Err(e),
            };
            let was_joined = self.joined;
            let reason = match result {
                Ok(()) => {
                    self.down("floor client stopped");
                    self.flush().await;
                    return;
                }
                Err(reason) => reason,
            };
            let (report, delay) = self.reconnect.lost(was_joined, &reason, rand::random::<f64>());
            self.set_down(&reason, report);
            self.flush().await;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            // Requests queued while down are stale: the router reset its floor on `Down`.
            while let Ok(cmd) = cmds.try_recv() {
                debug!(?cmd, "floor: dropped while down");
            }
        }
    }

    /// One connection. Ok on cancel (offline said, disconnected); Err(reason) on a loss.
    async fn connection(
        &mut self,
        mut link: Link,
        session: &str,
        cmds: &mut mpsc::Receiver<Cmd>,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        self.retry_at = None;
        let feeds_changed = self.feeds_changed.clone();
        loop {
            self.flush().await;
            let retry = self.retry_at;
            tokio::select! {
                _ = cancel.cancelled() => break,
                net = link.next() => match net {
                    Net::Connected => {
                        info!(device = %self.o.device_id, "floor: connected to the broker; waiting for the floor hub");
                        link.subscribe(&self.topics.host())?;
                        link.subscribe(&self.topics.to_edge(&self.o.device_id))?;
                        let online = to_json(&EdgePresence { online: true, session: session.to_owned() });
                        self.publish(&link, &self.topics.presence(&self.o.device_id), session, online, true)?;
                    }
                    Net::Message { topic, payload } => self.message(&link, session, &topic, &payload)?,
                    Net::Lost(reason) => return Err(reason),
                },
                cmd = cmds.recv() => match cmd {
                    None => break,
                    Some(Cmd::Floor(member, msg)) if self.joined => {
                        let request = ToHost::Floor(FloorRequest::new(session, member, msg));
                        self.publish(&link, &self.topics.to_host(&self.o.device_id), session, request.to_json(), false)?;
                    }
                    Some(cmd) => debug!(?cmd, "floor: not joined, dropped"),
                },
                // Not joined: the join carries the feeds.
                _ = feeds_changed.notified() => if self.joined {
                    let feeds = ToHost::Feeds(Feeds { session: session.to_owned(), feeds: self.feeds() });
                    self.publish(&link, &self.topics.to_host(&self.o.device_id), session, feeds.to_json(), false)?;
                },
                _ = crate::wait::until(retry), if retry.is_some() => {
                    if self.joined && self.host_epoch != self.joined_epoch {
                        // A new host run announced itself and did not take us in time: the run
                        // we are joined with is not coming back, so nothing may stay keyed for it.
                        self.down("the floor hub's new run did not answer our join");
                    }
                    self.join(&link, session)?
                }
            }
        }
        let presence = self.topics.presence(&self.o.device_id);
        let offline =
            self.sealer.seal(&presence, session, to_json(&EdgePresence { online: false, session: session.to_owned() }));
        link.close(Some((presence, offline))).await;
        Ok(())
    }

    fn message(&mut self, link: &Link, session: &str, topic: &str, payload: &[u8]) -> Result<(), String> {
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
            Some(Topic::Host) => match parse_host_presence(payload) {
                Ok(p) if opened.auth.as_ref().is_some_and(|(run, _)| *run != p.epoch) => {
                    self.reject(topic, &AuthError::BadEnvelope("signed by another host run".into()))
                }
                // A host run starts with a new epoch (every broker connection of the host): a
                // presence of the run we are joined with changes nothing (a duplicate or replay).
                Ok(p) if p.online && self.joined && self.joined_epoch.as_deref() == Some(&p.epoch) => {
                    debug!(epoch = %p.epoch, "floor: hub presence of the run we are joined with")
                }
                Ok(p) if p.online => {
                    // A new host run, or a stale presence replayed: join it, and stay up with
                    // the current one until it answers (a stale one is refused with the
                    // current epoch).
                    info!(epoch = %p.epoch, "floor: hub online, joining");
                    self.host_epoch = Some(p.epoch);
                    self.join(link, session)?;
                }
                Ok(p) if self.joined && self.joined_epoch.as_deref() == Some(&p.epoch) => {
                    warn!(epoch = %p.epoch, "floor: hub offline");
                    self.down("the floor hub is offline");
                    (self.retry_at, self.host_epoch) = (None, None);
                }
                Ok(p) if !self.joined && self.host_epoch.as_deref() == Some(&p.epoch) => {
                    info!(epoch = %p.epoch, "floor: hub offline; waiting for it");
                    (self.retry_at, self.host_epoch) = (None, None);
                }
                Ok(p) => debug!(epoch = %p.epoch, "floor: offline presence of another hub run ignored"),
                Err(e) => warn!(%topic, error = %e, "floor: malformed hub presence dropped"),
            },
            Some(Topic::ToEdge(device)) if device == self.o.device_id => match parse_to_edge(payload) {
                Ok(m) if m.session() != session => debug!(%topic, "floor: message for an earlier connection dropped"),
                Ok(m) if !self.fresh(&m, opened.auth.as_ref()) => {}
                Ok(ToEdge::Accepted(a)) if a.join == self.join_seq => {
                    let mut members = Vec::with_capacity(self.o.members.len());
                    for m in &self.o.members {
                        match a.members.iter().find(|x| x.key == m.key && x.channel == m.channel) {
                            Some(x) => members.push((m.clone(), ParticipantId(x.id))),
                            None => {
                                warn!(member = %format!("{}/{}", m.key, m.channel), "floor: the hub's answer lacks a member; joining again");
                                self.retry_at = Some(Instant::now() + JOIN_RETRY);
                                return Ok(());
                            }
                        }
                    }
                    if self.joined {
                        // The host started a new run (it forgot us): floors start over.
                        self.down("the floor hub reconnected; joined again");
                    }
                    self.retry_at = None;
                    self.joined = true;
                    self.joined_epoch = Some(a.epoch.clone());
                    self.host_epoch = Some(a.epoch.clone());
                    self.reconnect.up();
                    self.up.store(true, Ordering::Relaxed);
                    info!(epoch = %a.epoch, members = members.len(), "floor: joined the floor hub");
                    self.out.push(UplinkEvent::Up { members });
                }
                Ok(ToEdge::Refused(r)) if r.join == self.join_seq && self.host_epoch.as_deref() != Some(&r.epoch) => {
                    // Our join named another host run than the current one (a stale presence).
                    self.host_epoch = Some(r.epoch.clone());
                    if self.joined && self.joined_epoch.as_deref() == Some(&r.epoch) {
                        info!(epoch = %r.epoch, "floor: a stale hub presence; staying joined");
                        self.retry_at = None;
                    } else {
                        info!(epoch = %r.epoch, "floor: joining the hub's current run");
                        self.join(link, session)?;
                    }
                }
                Ok(ToEdge::Refused(r)) if r.join == self.join_seq => {
                    warn!(reason = %r.reason, "floor: the hub refused our members");
                    self.down(&format!("the floor hub refused: {}", r.reason));
                    self.retry_at = Some(Instant::now() + REFUSED_RETRY);
                }
                Ok(ToEdge::Floor(f)) if self.joined => match f.floor.to_router() {
                    Ok((msg, holder_name)) => {
                        let member = f.floor.id.map(ParticipantId);
                        self.out.push(UplinkEvent::Floor { channel: f.floor.channel, member, msg, holder_name });
                    }
                    Err(e) => warn!(%topic, error = %e, "floor: malformed floor message dropped"),
                },
                Ok(other) => debug!(?other, "floor: out-of-date answer dropped"),
                Err(e) => warn!(%topic, error = %e, "floor: malformed message dropped"),
            },
            _ => debug!(%topic, "floor: message on an unexpected topic"),
        }
        Ok(())
    }

    /// With a fleet key: is this signed answer from the host run it claims, and new? Accepted
    /// and refused carry the run they come from (their join number makes them current); floor
    /// messages must come from the run we joined. False: dropped and reported.
    fn fresh(&mut self, m: &ToEdge, auth: Option<&(String, u64)>) -> bool {
        let Some((run, seq)) = auth else { return true };
        let (from, start) = match m {
            ToEdge::Accepted(a) => (Some(a.epoch.as_str()), true),
            ToEdge::Refused(r) => (Some(r.epoch.as_str()), true),
            ToEdge::Floor(_) => (self.joined_epoch.as_deref(), false),
        };
        let result = match from {
            Some(from) if from == run => self.host_guard.check(run, *seq, start),
            _ => Err(AuthError::UnknownRun(run.clone())),
        };
        match result {
            Ok(()) => true,
            Err(e) => {
                let topic = self.topics.to_edge(&self.o.device_id);
                self.reject(&topic, &e);
                false
            }
        }
    }

    fn reject(&mut self, topic: &str, e: &AuthError) {
        report_rejected(&mut self.rejected, self.o.report.as_ref(), topic, e);
    }

    /// Sign (with a fleet key) and queue.
    fn publish(&self, link: &Link, topic: &str, session: &str, msg: String, retain: bool) -> Result<(), String> {
        link.publish(topic, self.sealer.seal(topic, session, msg), retain)
    }

    /// Hand the events over, waiting for room in the router's inbox.
    async fn flush(&mut self) {
        for e in self.out.drain(..) {
            let _ = peer_queue::deliver(&self.events, e).await;
        }
    }

    fn join(&mut self, link: &Link, session: &str) -> Result<(), String> {
        self.join_seq += 1;
        let members = self
            .o
            .members
            .iter()
            .map(|m| JoinMember { key: m.key.clone(), channel: m.channel.clone(), priority: m.priority.0 })
            .collect();
        let join = ToHost::Join(Join {
            session: session.to_owned(),
            join: self.join_seq,
            epoch: self.host_epoch.clone(),
            members,
            feeds: self.feeds(),
        });
        self.retry_at = Some(Instant::now() + JOIN_RETRY);
        self.publish(link, &self.topics.to_host(&self.o.device_id), session, join.to_json(), false)
    }

    fn feeds(&self) -> BTreeMap<String, Option<u64>> {
        self.feeds.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Not joined any more while the connection goes on (or on stop): one `Down` per loss for
    /// the router (radios unkey, floors void).
    fn down(&mut self, reason: &str) {
        if self.joined {
            warn!(%reason, "floor: down; radios stay unkeyed until joined again");
        }
        let report = self.reconnect.down();
        self.set_down(reason, report);
    }

    /// Not joined any more; `report`: tell the router.
    fn set_down(&mut self, reason: &str, report: bool) {
        self.joined = false;
        self.up.store(false, Ordering::Relaxed);
        if report {
            self.out.push(UplinkEvent::Down { reason: reason.to_owned() });
        }
    }
}
