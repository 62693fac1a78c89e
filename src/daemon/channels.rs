//! Driver for the channel routing core: takes RX open/close and packets from local ports,
//! floor messages and packets from hub peers and from the uplink, and hands the core's
//! decisions out: TX requests to radio ports, packets to transmit paths, peers and the uplink,
//! floor messages to peers and the uplink.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::audio_port::PortAudio;
use super::desk_port::{DeskInput, DeskLink, DeskToRouter, DESK_REQUESTS};
use super::radio_port::PortInput;
use super::report::Reporter;
use super::watchdog::{Heartbeat, BEAT_PERIOD};
use super::{clock, ChannelCommand, ChannelMsg, PortId};
use crate::config::{Config, PortConfig};
use crate::core::desk::DeskAction;
use crate::core::emergency::{self, Board, Caller, Source, SourceKind};
use crate::core::floor::{DenyCause, ParticipantId, RevokeCause, ToArbiter, ToParticipant};
use crate::core::restamp::Restamper;
use crate::core::routing::{
    AirState, ChannelHost, ChannelId, MediaSource, MediaTarget, PeerId, PortKind, PortSpec, Router, RouterOutput,
    Talker,
};
use crate::fleet::{Event, EventKind};
use crate::net::peer_queue::PeerTx;
use crate::net::protocol::{Roster, RosterDelta};
use crate::net::{HubEvent, MemberRequest, PortStatus, RosterEntry, ToPeer, UplinkEvent};
use crate::pipeline::MediaPacket;

/// Until the audio path reports frames, an open COR (carrier present) is what tells the
/// floor that the talker is alive; refresh it well inside the no-media timeout.
const CARRIER_AS_MEDIA: Duration = Duration::from_millis(500);
/// How often a radio is told that channel audio reaches it (its no-audio guard, 1 s or more,
/// wants a word at least every quarter of it).
const CHANNEL_AUDIO_NOTE: Duration = Duration::from_millis(200);

/// What the router needs of the uplink client (the net layer's handle implements it).
pub trait UplinkSink: Send {
    fn floor(&self, member: ParticipantId, msg: ToArbiter);
    fn media(&self, channel: &str, packet: MediaPacket);
    /// Some port here talks on `channel` (on), or none does any more (off). An SFU uplink
    /// relays this box's stream only meanwhile.
    fn talking(&self, _channel: &str, _on: bool) {}
    /// The channel's `listen` setting: an SFU uplink can stop relaying a muted channel.
    fn listen(&self, _channel: &str, _on: bool) {}
    /// Raise or acknowledge an emergency at the hub; false: not sent (down, or an uplink that
    /// does not carry emergencies).
    fn emergency(&self, _cmd: crate::net::protocol::EmergencyCommand) -> bool {
        false
    }
    /// Whether this uplink carries emergencies at all (a Janus fleet's does not yet).
    fn carries_emergencies(&self) -> bool {
        false
    }
}

impl UplinkSink for crate::net::janus::JanusEdge {
    fn floor(&self, member: ParticipantId, msg: ToArbiter) {
        crate::net::janus::JanusEdge::floor(self, member, msg);
    }
    fn media(&self, channel: &str, packet: MediaPacket) {
        crate::net::janus::JanusEdge::media(self, channel, packet);
    }
    fn talking(&self, channel: &str, on: bool) {
        crate::net::janus::JanusEdge::talking(self, channel, on);
    }
    fn listen(&self, channel: &str, on: bool) {
        crate::net::janus::JanusEdge::listen(self, channel, on);
    }
}

impl UplinkSink for crate::net::UplinkHandle {
    fn floor(&self, member: ParticipantId, msg: ToArbiter) {
        // Dropped while the uplink is down; the router already treats it as down then.
        let _ = crate::net::UplinkHandle::floor(self, member, msg);
    }
    fn media(&self, channel: &str, packet: MediaPacket) {
        let _ = crate::net::UplinkHandle::media(self, channel, packet);
    }
    fn emergency(&self, cmd: crate::net::protocol::EmergencyCommand) -> bool {
        crate::net::UplinkHandle::emergency(self, cmd)
    }
    fn carries_emergencies(&self) -> bool {
        true
    }
}

struct Peer {
    to_peer: PeerTx<ToPeer>,
}

/// Where the router's inputs come from besides the local ports.
pub struct NetLinks {
    /// The hub's and the floor host's events: bounded ([`crate::net::peer_queue::deliver`]).
    pub hub: Option<mpsc::Receiver<HubEvent>>,
    /// The uplink's events: bounded, media dropped when full ([`crate::net::peer_queue::deliver`]).
    pub uplink: Option<(Box<dyn UplinkSink>, mpsc::Receiver<UplinkEvent>)>,
    /// Consoles' `desk` commands.
    pub desk: Option<mpsc::Receiver<crate::net::hub::DeskRequest>>,
}

pub struct ChannelRouter {
    router: Router,
    channel_names: Vec<String>,
    port_names: Vec<String>,
    /// The channel each port talks on when its COR opens (radios: their only channel).
    talk_channel: Vec<Option<ChannelId>>,
    rx_active: Vec<bool>,
    /// What the router wants of each radio's transmitter.
    tx_wanted: Vec<bool>,
    /// When each radio was last told that channel audio reaches it.
    audio_noted: Vec<Option<std::time::Instant>>,
    ports: Vec<PeerTx<PortInput>>,
    audio: Vec<Option<PortAudio>>,
    peers: HashMap<PeerId, Peer>,
    /// Each channel's roster as last told to every peer: a joining peer gets it whole, the
    /// others only what changed (one roster per join to everyone is O(n²) with n consoles).
    rosters: Vec<Arc<Roster>>,
    uplink: Option<Box<dyn UplinkSink>>,
    /// What we ask the uplink hub for, in order: its `Up` answers in the same order.
    uplink_members: Vec<(PortId, ChannelId)>,
    /// Per channel, the ports that may send into it now (the uplink hears when it changes).
    talkers: Vec<std::collections::BTreeSet<PortId>>,
    priorities: Vec<crate::core::floor::Priority>,
    /// Desk ports: their task, mixer and channel numbering.
    desks: Vec<Option<DeskLink>>,
    /// Per channel: successive talkers (a port, as heard on its own channel) as one stream,
    /// each talk-spurt stamped with the wall-clock pause before it (see [`Restamper`]).
    stitch: Vec<Restamper<(MediaSource, ChannelId)>>,
    /// The last state of each desk port, for consoles that join.
    desk_states: Vec<Option<crate::net::protocol::DeskState>>,
    reporter: Reporter,
    heartbeat: Heartbeat,
    /// `[record]`: each recorded channel's recorder and the writer's queue.
    recording: Option<crate::record::Recording>,
    /// Emergency state of every channel: decided here for hosted channels, mirrored from the
    /// hub for uplink ones.
    emergencies: Board,
    /// Raises and acks for the uplink hub made while it was down: sent once it is up.
    uplink_emergencies: Vec<(ChannelId, Option<PortId>, bool)>,
}

/// Whether this box's channels are decided here or on the uplink hub: a roipd hub uplink, or a
/// Janus uplink whose floor is hosted by another box (`floor_hub`).
pub fn channel_hosts(config: &Config) -> Vec<ChannelHost> {
    let on_uplink = config.uplink.as_ref().is_some_and(|u| match u.kind {
        crate::config::UplinkKind::Hub => true,
        crate::config::UplinkKind::Janus => u.floor_hub.is_some(),
    });
    config
        .channel
        .values()
        .map(|c| if on_uplink { ChannelHost::Uplink } else { ChannelHost::Local(c.arbiter_config()) })
        .collect()
}

impl ChannelRouter {
    pub fn new(
        config: &Config,
        ports: Vec<PeerTx<PortInput>>,
        port_audio: Vec<(PortId, Option<PortAudio>)>,
        reporter: Reporter,
        heartbeat: Heartbeat,
    ) -> Self {
        let channel_names: Vec<String> = config.channel.keys().cloned().collect();
        let index = |name: &str| channel_names.iter().position(|c| c == name);
        let specs: Vec<PortSpec> = config
            .port
            .iter()
            .map(|(name, p)| PortSpec {
                name: name.clone(),
                kind: match p {
                    PortConfig::Radio(_) => PortKind::Radio,
                    PortConfig::Desk(_) => PortKind::Desk,
                },
                channels: p.channels().into_iter().filter_map(index).collect(),
                priority: p.priority(),
            })
            .collect();
        let uplink_members =
            specs.iter().enumerate().flat_map(|(port, s)| s.channels.iter().map(move |&c| (port, c))).collect();
        let talk_channel = specs.iter().map(|s| s.channels.first().copied()).collect();
        let priorities = specs.iter().map(|s| s.priority).collect();
        let mut audio: Vec<Option<PortAudio>> = (0..ports.len()).map(|_| None).collect();
        for (id, a) in port_audio {
            audio[id] = a;
        }
        let mut me = Self {
            router: Router::new(channel_hosts(config), specs),
            port_names: config.port.keys().cloned().collect(),
            rx_active: vec![false; ports.len()],
            tx_wanted: vec![false; ports.len()],
            audio_noted: vec![None; ports.len()],
            rosters: Vec::new(),
            channel_names,
            talk_channel,
            ports,
            audio,
            peers: HashMap::new(),
            uplink: None,
            uplink_members,
            talkers: vec![Default::default(); config.channel.len()],
            priorities,
            desks: (0..config.port.len()).map(|_| None).collect(),
            stitch: (0..config.channel.len()).map(|_| Restamper::new(rand::random(), rand::random())).collect(),
            desk_states: vec![None; config.port.len()],
            reporter,
            heartbeat,
            recording: None,
            emergencies: Board::new(config.channel.len()),
            uplink_emergencies: Vec::new(),
        };
        // The local radios are on their channels from the start.
        me.rosters = (0..me.channel_names.len())
            .map(|c| Arc::new(Roster { channel: me.channel_names[c].clone(), members: me.roster_now(c) }))
            .collect();
        me
    }

    fn roster_now(&self, channel: ChannelId) -> Vec<RosterEntry> {
        self.router
            .roster(channel)
            .into_iter()
            .map(|(id, name, priority)| RosterEntry { id: id.0, name, priority: priority.0 })
            .collect()
    }

    /// Record this box's channels (`[record]`).
    pub fn set_recording(&mut self, recording: crate::record::Recording) {
        self.recording = Some(recording);
    }

    /// The channel names, in the router's order.
    pub fn channel_names(&self) -> &[String] {
        &self.channel_names
    }

    /// Who a new holder of `channel` is, for its recording.
    fn talker_info(&self, channel: ChannelId, talker: Talker) -> crate::core::record::TalkerInfo {
        use crate::core::record::{SourceKind, TalkerInfo};
        let name = self.router.talker_name(talker);
        let held = self.router.holder_participant(channel).map(|(_, p)| p.0);
        let (source, priority) = match talker {
            Talker::Port(p) if self.desks.get(p).is_some_and(Option::is_some) => {
                (SourceKind::Desk, self.priorities[p].0)
            }
            Talker::Port(p) => (SourceKind::Radio, self.priorities[p].0),
            Talker::Patch(_) => (SourceKind::Patch, held.unwrap_or(0)),
            Talker::Remote(_) if held.is_some() => (SourceKind::Peer, held.unwrap_or(0)),
            Talker::Remote(_) => (SourceKind::Uplink, 0),
        };
        let name = name.unwrap_or_else(|| match talker {
            Talker::Remote(id) => format!("member {}", id.0),
            _ => "unknown".into(),
        });
        TalkerInfo { name, source, priority }
    }

    /// Make `port` a desk: its presses come as [`ChannelMsg::Desk`], its channels' packets go
    /// to its mixer, its floor states to its task.
    pub fn set_desk(&mut self, port: PortId, link: DeskLink) {
        if let Some(slot) = self.desks.get_mut(port) {
            *slot = Some(link);
        }
    }

    /// An action for every desk that monitors `channel` (`make` gets the desk's own index).
    fn to_desks(&self, channel: ChannelId, make: impl Fn(usize) -> DeskAction) {
        for desk in self.desks.iter().flatten() {
            if let Some(i) = desk.index(channel) {
                let _ = desk.to_desk.send(DeskInput::Action { action: make(i), reply: None });
            }
        }
    }

    /// A console's `desk` command: to the named desk, if the console may use all its channels.
    fn desk_request(&mut self, request: crate::net::hub::DeskRequest) {
        let crate::net::hub::DeskRequest { port, action, allowed, reply } = request;
        let desk = self.port_names.iter().position(|n| *n == port).and_then(|p| self.desks[p].as_ref());
        let Some(desk) = desk else {
            let _ = reply.send(Err(format!("no desk port `{port}`")));
            return;
        };
        let names: Vec<String> = desk.channels.iter().map(|&c| self.channel_names[c].clone()).collect();
        if let Some(c) = names.iter().find(|c| !allowed.contains(c)) {
            let _ =
                reply.send(Err(format!("this console's token does not allow channel `{c}`, which desk `{port}` uses")));
            return;
        }
        let action = match DeskAction::from_json(&action, &names) {
            Ok(a) => a,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        // Held until the desk has answered: at most DESK_REQUESTS wait in its queue.
        let Ok(permit) = desk.requests.clone().try_acquire_owned() else {
            let _ = reply.send(Err(format!("desk `{port}` is busy: {DESK_REQUESTS} requests are waiting")));
            return;
        };
        let (done, answer) = tokio::sync::oneshot::channel();
        if desk.to_desk.send(DeskInput::Action { action, reply: Some(done) }).is_err() {
            let _ = reply.send(Err("the desk is stopped".into()));
            return;
        }
        // The desk answers once applied; the router does not wait for it.
        tokio::spawn(async move {
            let _ = reply.send(answer.await.unwrap_or_else(|_| Err("the desk is stopped".into())));
            drop(permit);
        });
    }

    fn desk_msg(&mut self, msg: DeskToRouter) {
        let now = clock::now();
        match msg {
            DeskToRouter::Floor { port, channel, on } if on => self.router.press(now, port, channel),
            DeskToRouter::Floor { port, channel, .. } => self.router.unpress(now, port, channel),
            DeskToRouter::State { port, state } => {
                for p in self.peers.values() {
                    let _ = p.to_peer.send(ToPeer::Desk(state.clone()));
                }
                if let Some(slot) = self.desk_states.get_mut(port) {
                    *slot = Some(state);
                }
            }
            DeskToRouter::Patch { a, b, on, reply } => {
                let (na, nb) = (&self.channel_names[a], &self.channel_names[b]);
                let result = if on {
                    self.router
                        .patch(now, a, b)
                        .map(|p| info!(patch = p, a = %na, b = %nb, "channels patched"))
                        .map_err(|e| e.to_string())
                } else {
                    match self.router.patch_between(a, b) {
                        Some(p) => {
                            self.router.unpatch(now, p);
                            info!(patch = p, a = %na, b = %nb, "patch removed");
                            Ok(())
                        }
                        None => Err(format!("`{na}` and `{nb}` are not patched")),
                    }
                };
                let _ = reply.send(result);
            }
        }
    }

    /// The members an edge asks its uplink hub for: each port on each of its channels, in
    /// the order the hub's `Up` answer follows.
    pub fn uplink_requests(&self) -> Vec<MemberRequest> {
        self.uplink_members
            .iter()
            .map(|&(port, channel)| MemberRequest {
                key: self.port_names[port].clone(),
                channel: self.channel_names[channel].clone(),
                priority: self.priorities[port],
            })
            .collect()
    }

    /// `control` and `media`: the two inboxes of [`super::ToChannel`]; a flood of media never
    /// queues ahead of a state change.
    pub async fn run(
        mut self,
        mut control: mpsc::Receiver<ChannelMsg>,
        mut media: mpsc::Receiver<ChannelMsg>,
        links: NetLinks,
        cancel: CancellationToken,
    ) {
        let mut carrier = tokio::time::interval(CARRIER_AS_MEDIA);
        let mut beat = tokio::time::interval(BEAT_PERIOD);
        let mut hub_rx = links.hub;
        let mut desk_rx = links.desk;
        let mut port_states = self.reporter.subscribe();
        let mut uplink_rx = match links.uplink {
            Some((sink, rx)) => {
                self.uplink = Some(sink);
                Some(rx)
            }
            None => None,
        };
        loop {
            let sleep = crate::wait::until(self.router.poll_timeout());
            tokio::select! {
                _ = cancel.cancelled() => break,
                msg = control.recv() => match msg {
                    Some(msg) => self.local(msg),
                    None => break,
                },
                Some(event) = crate::wait::recv(&mut hub_rx) => self.hub(event),
                Some(request) = crate::wait::recv(&mut desk_rx) => self.desk_request(request),
                Some(event) = crate::wait::recv(&mut uplink_rx) => self.uplink_event(event),
                _ = carrier.tick() => {
                    let now = clock::now();
                    let without_audio = |p: &usize| !self.audio[*p].as_ref().is_some_and(|a| a.has_capture);
                    let carriers: Vec<usize> =
                        (0..self.rx_active.len()).filter(|&p| self.rx_active[p]).filter(without_audio).collect();
                    for port in carriers {
                        if let Some(channel) = self.talk_channel[port] {
                            // The radios it keys hear its carrier: that is channel audio too.
                            for target in self.router.media(now, MediaSource::Port(port), channel).unwrap_or_default() {
                                if let MediaTarget::Port(p) = target {
                                    self.note_channel_audio(now, p);
                                }
                            }
                        }
                    }
                }
                _ = sleep => self.router.handle_timeout(clock::now()),
                _ = beat.tick() => self.heartbeat.beat(),
                Ok(()) = port_states.changed() => {
                    for peer in self.peers.keys().copied().collect::<Vec<_>>() {
                        self.send_ports(peer);
                    }
                }
                Some(msg) = media.recv() => self.local(msg),
            }
            self.dispatch();
        }
        if let Some(r) = self.recording.as_mut() {
            r.shutdown(clock::now());
        }
    }

    fn local(&mut self, msg: ChannelMsg) {
        match msg {
            ChannelMsg::RxActive { port, active } => {
                let Some(channel) = self.talk_channel.get(port).copied().flatten() else { return };
                self.rx_active[port] = active;
                let now = clock::now();
                if active {
                    self.router.press(now, port, channel);
                } else {
                    self.router.unpress(now, port, channel);
                }
            }
            ChannelMsg::Media { port, packet } if self.desks.get(port).is_some_and(Option::is_some) => {
                // A desk talks on every channel whose floor it holds (all-call: several).
                for channel in self.router.talking_on(port).collect::<Vec<_>>() {
                    self.forward(MediaSource::Port(port), channel, &packet);
                }
            }
            ChannelMsg::RadioTx { port, report } => self.router.radio_tx(clock::now(), port, report),
            ChannelMsg::Desk(msg) => self.desk_msg(msg),
            ChannelMsg::DeskRequest(request) => self.desk_request(request),
            ChannelMsg::Emergency { action, reply } => {
                let result = self.emergency_action(action);
                if let Err(e) = &result {
                    warn!(error = %e, "emergency refused");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            ChannelMsg::Media { port, packet } => {
                let Some(channel) = self.talk_channel.get(port).copied().flatten() else { return };
                self.forward(MediaSource::Port(port), channel, &packet);
            }
            ChannelMsg::Control { command, reply } => {
                let _ = reply.send(self.control(command));
            }
        }
    }

    fn control(&mut self, command: ChannelCommand) -> Result<(), String> {
        let channel_of =
            |this: &Self, name: &str| this.channel_index(name).ok_or_else(|| format!("no channel `{name}`"));
        match command {
            ChannelCommand::SetChannel { port, channel } => {
                let c = channel_of(self, &channel)?;
                let p = self.port_names.iter().position(|n| *n == port).ok_or_else(|| format!("no port `{port}`"))?;
                if !self.router.set_port_channel(clock::now(), p, c) {
                    return Err(format!("port `{port}` cannot move: its channels are set by the uplink hub"));
                }
                self.talk_channel[p] = Some(c);
                let _ = self.ports[p].send(PortInput::Channel(channel));
                self.apply_tx(p);
                Ok(())
            }
            ChannelCommand::Listen { channel, on } => {
                let c = channel_of(self, &channel)?;
                // On a desk box, "this box's speaker" is the desk's: the same action as its buttons.
                self.to_desks(c, |channel| DeskAction::Listen { channel, on });
                if let Some(u) = &self.uplink {
                    u.listen(&channel, on);
                }
                // The router unkeys (or keys) the channel's radios and updates its air state.
                self.router.set_muted(clock::now(), c, !on);
                Ok(())
            }
            ChannelCommand::Volume { channel, db } => {
                let c = channel_of(self, &channel)?;
                self.to_desks(c, |channel| DeskAction::Volume { channel, db });
                for p in (0..self.ports.len()).filter(|&p| self.talk_channel[p] == Some(c)) {
                    if let Some(tx) = self.audio[p].as_ref().and_then(|a| a.tx.as_ref()) {
                        tx.lock().unwrap_or_else(|e| e.into_inner()).set_gain_db(db);
                    }
                }
                Ok(())
            }
        }
    }

    /// Key a radio when the router wants it (the router leaves muted channels out).
    fn apply_tx(&self, port: PortId) {
        let _ = self.ports[port].send(PortInput::TxRequest(self.tx_wanted[port]));
    }

    fn hub(&mut self, event: HubEvent) {
        let now = clock::now();
        match event {
            HubEvent::Joined { peer, name, members, to_peer, reply } => {
                let mut ids = Vec::new();
                for m in &members {
                    let joined = self
                        .channel_index(&m.channel)
                        .and_then(|c| self.router.add_remote(now, peer, &format!("{}@{name}", m.key), c, m.priority));
                    match joined {
                        Some(id) => ids.push(id),
                        None => {
                            self.router.remove_peer(now, peer);
                            let _ = reply.send(Err(format!("channel `{}` is not hosted here", m.channel)));
                            return;
                        }
                    }
                }
                info!(peer, name = %name, members = ids.len(), "peer joined");
                // The rosters as everyone knows them; the deltas that follow add this peer.
                for roster in self.rosters.iter().filter(|r| !r.members.is_empty()) {
                    let _ = to_peer.send(ToPeer::Roster(roster.clone()));
                }
                self.peers.insert(peer, Peer { to_peer });
                let _ = reply.send(Ok(ids));
                self.send_ports(peer);
                self.send_holders(peer);
                if let Some(p) = self.peers.get(&peer) {
                    for (channel, source) in self.emergencies.all_active() {
                        let _ = p.to_peer.send(ToPeer::Emergency(crate::net::protocol::EmergencyNotice {
                            channel: self.channel_names[channel].clone(),
                            active: true,
                            source: source.name.clone(),
                            kind: source.kind.as_str().into(),
                            by: None,
                        }));
                    }
                }
                if let Some(p) = self.peers.get(&peer) {
                    for channel in (0..self.channel_names.len()).filter(|&c| !self.router.air(c).is_empty()) {
                        let _ = p.to_peer.send(ToPeer::Air(self.air_message(channel)));
                    }
                }
                if let Some(p) = self.peers.get(&peer) {
                    for state in self.desk_states.iter().flatten() {
                        let _ = p.to_peer.send(ToPeer::Desk(state.clone()));
                    }
                }
            }
            HubEvent::Floor { peer, member, msg } => self.router.from_peer(now, peer, member, msg),
            HubEvent::Media { peer, channel, packet } => {
                if let Some(c) = self.channel_index(&channel) {
                    self.forward(MediaSource::Peer(peer), c, &packet);
                }
            }
            HubEvent::Left { peer } => {
                info!(peer, "peer left");
                self.peers.remove(&peer);
                // A caller that left keeps no emergency priority (the alert stays).
                for channel in 0..self.channel_names.len() {
                    if let Some(Caller::Member(id)) = self.router.emergency_caller(channel) {
                        if self.router.is_peer_member(peer, channel, id) {
                            self.emergencies.forget_caller(Caller::Member(id));
                        }
                    }
                }
                self.router.remove_peer(now, peer);
                self.emergency_outputs();
            }
            HubEvent::Emergency { peer, name, channel, member, raise } => {
                let Some(c) = self.channel_index(&channel) else { return };
                if self.router.is_uplink_channel(c) {
                    return; // only the channel's host decides (a peer of an edge's own hub)
                }
                let member = member.filter(|&id| self.router.is_peer_member(peer, c, id));
                let result = if raise {
                    let source = Source { kind: SourceKind::Console, name, caller: member.map(Caller::Member) };
                    self.emergencies.raise(now, c, source).map(|_| ())
                } else {
                    self.emergencies.ack(now, c, &name)
                };
                if let Err(e) = result {
                    info!(%channel, error = %e, "emergency from a peer changed nothing");
                }
                self.emergency_outputs();
            }
            HubEvent::MediaSeen { channel, seen } => {
                if let Some(c) = self.channel_index(&channel) {
                    info!(%channel, seen, "floor: the channel's media can{} be seen", if seen { "" } else { "not" });
                    self.router.set_media_seen(now, c, seen);
                }
            }
        }
    }

    fn uplink_event(&mut self, event: UplinkEvent) {
        let now = clock::now();
        match event {
            UplinkEvent::Up { members } => {
                self.reporter.link(true, None);
                // The hub answers per requested member, in the order of `uplink_members`.
                let ids: Vec<_> = self
                    .uplink_members
                    .iter()
                    .zip(members.iter())
                    .map(|(&(port, channel), (_, id))| (port, channel, *id))
                    .collect();
                info!(members = ids.len(), "uplink up");
                self.router.uplink_up(now, &ids);
                for (channel, port, raise) in std::mem::take(&mut self.uplink_emergencies) {
                    if self.send_uplink_emergency(channel, port, raise) && raise && port.is_some() {
                        self.router.set_emergency_caller(now, channel, port.map(Caller::Port));
                    }
                }
            }
            UplinkEvent::Down { reason } => {
                warn!(%reason, "uplink down; radios stay unkeyed until it is back");
                self.reporter.link(false, Some(reason));
                self.router.uplink_down(now);
                // The hub tells the state again once the link is back.
                self.emergencies.clear_all_mirrored(now);
                self.emergency_outputs();
            }
            UplinkEvent::Waiting { reason } => {
                info!(%reason, "uplink waiting");
                self.reporter.link_waiting(reason);
            }
            UplinkEvent::Refused { channel, fault, reason } => {
                warn!(%channel, fault = fault.code(), %reason, "uplink refused: nothing is published there");
                self.reporter.link_refused(&channel, fault, &reason);
            }
            UplinkEvent::Untrusted { reason } => {
                warn!(%reason, "uplink refused: the hub's certificate is not the one configured");
                self.reporter.link_untrusted(&reason);
            }
            UplinkEvent::Floor { channel, member, msg, .. } => {
                if let Some(c) = self.channel_index(&channel) {
                    self.router.from_uplink(now, c, member, msg);
                }
            }
            UplinkEvent::Media { channel, packet } => {
                if let Some(c) = self.channel_index(&channel) {
                    self.forward(MediaSource::Uplink, c, &packet);
                }
            }
            UplinkEvent::Emergency(e) => {
                let Some(c) = self.channel_index(&e.channel).filter(|&c| self.router.is_uplink_channel(c)) else {
                    return;
                };
                let state =
                    e.active.then(|| Source { kind: kind_from_str(&e.kind), name: e.source.clone(), caller: None });
                if !e.active && self.router.emergency_caller(c).is_some() {
                    self.router.set_emergency_caller(now, c, None);
                }
                self.emergencies.mirror(now, c, state);
                self.emergency_outputs();
            }
        }
    }

    /// The one action path of every emergency source on this box (see [`super::EmergencyAction`]).
    fn emergency_action(&mut self, action: super::EmergencyAction) -> Result<&'static str, String> {
        let now = clock::now();
        let (channel, port, raise, source) = match action {
            super::EmergencyAction::Raise { target, source, by } => {
                let (channel, port) = match target {
                    super::EmergencyTarget::Channel(name) => {
                        (self.channel_index(&name).ok_or_else(|| format!("no channel `{name}`"))?, None)
                    }
                    super::EmergencyTarget::Port(name) => {
                        let port = self
                            .port_names
                            .iter()
                            .position(|n| *n == name)
                            .ok_or_else(|| format!("no port `{name}`"))?;
                        let channel = self.talk_channel[port].ok_or_else(|| format!("port `{name}` has no channel"))?;
                        (channel, Some(port))
                    }
                    super::EmergencyTarget::PortOn { port: name, channel } => {
                        let port = self
                            .port_names
                            .iter()
                            .position(|n| *n == name)
                            .ok_or_else(|| format!("no port `{name}`"))?;
                        let c = self.channel_index(&channel).ok_or_else(|| format!("no channel `{channel}`"))?;
                        if !self.router.members(c).any(|p| p == port) {
                            return Err(format!("port `{name}` is not on channel `{channel}`"));
                        }
                        (c, Some(port))
                    }
                };
                let source = Source { kind: source, name: by, caller: port.map(Caller::Port) };
                (channel, port, true, source)
            }
            super::EmergencyAction::Ack { channel, by } => {
                let c = self.channel_index(&channel).ok_or_else(|| format!("no channel `{channel}`"))?;
                (c, None, false, Source { kind: SourceKind::Fleet, name: by, caller: None })
            }
        };
        if self.router.is_uplink_channel(channel) {
            if !self.uplink.as_ref().is_some_and(|u| u.carries_emergencies()) {
                return Err(
                    "unavailable: emergencies are not carried over this box's uplink (Janus fleets: not yet)".into()
                );
            }
            // The hub makes a raising port its caller; here its floor requests go on at the
            // emergency priority (a press it was denied asks again, after the raise reached the hub).
            let sent = self.send_uplink_emergency(channel, port, raise);
            if raise && sent && port.is_some() {
                self.router.set_emergency_caller(now, channel, port.map(Caller::Port));
            }
            if !sent {
                // Kept (at most a few) until the uplink is up: an emergency is never dropped.
                if self.uplink_emergencies.len() < 64 {
                    self.uplink_emergencies.push((channel, port, raise));
                }
                warn!(channel = %self.channel_names[channel], raise, "emergency: the uplink is down; sent once it is back");
                return Ok("queued_for_hub");
            }
            return Ok("sent_to_hub");
        }
        let outcome = if raise {
            match self.emergencies.raise(now, channel, source).map_err(|e| e.to_string())? {
                emergency::Raise::Raised => "raised",
                emergency::Raise::AlreadyActive => "already_active",
            }
        } else {
            self.emergencies.ack(now, channel, &source.name).map_err(|e| e.to_string())?;
            "acknowledged"
        };
        self.emergency_outputs();
        Ok(outcome)
    }

    /// A raise (with the port as its caller, under the hub's id for it) or an ack to the hub.
    fn send_uplink_emergency(&mut self, channel: ChannelId, port: Option<PortId>, raise: bool) -> bool {
        let Some(uplink) = self.uplink.as_ref() else { return false };
        let id = port.and_then(|p| self.router.port_participant(p, channel)).map(|id| id.0);
        if port.is_some() && id.is_none() {
            return false; // the hub has not given this port an id yet: not up
        }
        let action =
            if raise { crate::net::protocol::EmergencyVerb::Raise } else { crate::net::protocol::EmergencyVerb::Ack };
        uplink.emergency(crate::net::protocol::EmergencyCommand {
            channel: self.channel_names[channel].clone(),
            action,
            id,
        })
    }

    /// Carry out the emergency board's decisions: floor priority, consoles, desks, MQTT.
    fn emergency_outputs(&mut self) {
        let now = clock::now();
        while let Some(out) = self.emergencies.poll_output() {
            match out {
                emergency::Output::Caller { channel, caller } => self.router.set_emergency_caller(now, channel, caller),
                emergency::Output::Raised { channel, source } => {
                    let name = self.channel_names[channel].clone();
                    let hosted = !self.router.is_uplink_channel(channel);
                    warn!(channel = %name, source = %source.name, kind = source.kind.as_str(), "EMERGENCY raised");
                    self.tell_emergency(channel, &source, true, None);
                    if hosted {
                        let port = match source.caller {
                            Some(Caller::Port(p)) => Some(self.port_names[p].clone()),
                            _ => None,
                        };
                        self.reporter.event(Event {
                            channel: Some(name.clone()),
                            port,
                            reason: Some(source.kind.as_str().into()),
                            detail: Some(source.name.clone()),
                            ..Event::new(EventKind::Emergency)
                        });
                        if let Some(f) = self.reporter.fleet() {
                            f.set_emergency(crate::fleet::EmergencyState {
                                channel: name,
                                active: true,
                                source: Some(source.name.clone()),
                                source_kind: Some(source.kind.as_str().into()),
                                since: Some(now_rfc3339()),
                                acked_by: None,
                                acked_at: None,
                            });
                        }
                    }
                }
                emergency::Output::Cleared { channel, source, by, lasted } => {
                    let name = self.channel_names[channel].clone();
                    let hosted = !self.router.is_uplink_channel(channel);
                    info!(channel = %name, %by, lasted_ms = lasted.as_millis() as u64, "emergency acknowledged");
                    self.tell_emergency(channel, &source, false, Some(by.clone()));
                    if hosted {
                        self.reporter.event(Event {
                            channel: Some(name.clone()),
                            reason: Some(source.kind.as_str().into()),
                            detail: Some(format!("raised by {}, acknowledged by {by}", source.name)),
                            ..Event::new(EventKind::EmergencyCleared)
                        });
                        if let Some(f) = self.reporter.fleet() {
                            f.set_emergency(crate::fleet::EmergencyState {
                                channel: name,
                                active: false,
                                source: Some(source.name.clone()),
                                source_kind: Some(source.kind.as_str().into()),
                                since: None,
                                acked_by: Some(by),
                                acked_at: Some(now_rfc3339()),
                            });
                        }
                    }
                }
            }
        }
        self.dispatch();
    }

    /// An emergency's state to every peer (its session passes it on where the token allows the
    /// channel) and to every desk of the channel.
    fn tell_emergency(&self, channel: ChannelId, source: &Source, active: bool, by: Option<String>) {
        let notice = crate::net::protocol::EmergencyNotice {
            channel: self.channel_names[channel].clone(),
            active,
            source: source.name.clone(),
            kind: source.kind.as_str().into(),
            by,
        };
        for p in self.peers.values() {
            let _ = p.to_peer.send(ToPeer::Emergency(notice.clone()));
        }
        for desk in self.desks.iter().flatten() {
            if let Some(i) = desk.index(channel) {
                let _ = desk.to_desk.send(DeskInput::Emergency { channel: i, active });
            }
        }
    }

    fn channel_index(&self, name: &str) -> Option<ChannelId> {
        self.channel_names.iter().position(|c| c == name)
    }

    /// Send a packet where the router says, if it says anything (only the holder is heard).
    fn forward(&mut self, source: MediaSource, channel: ChannelId, packet: &MediaPacket) {
        let now = clock::now();
        let Some(targets) = self.router.media(now, source, channel) else {
            debug!(?source, channel = %self.channel_names[channel], "media from a non-holder dropped");
            return;
        };
        if packet.marker {
            if let MediaSource::Port(p) = source {
                info!(port = %self.port_names[p], channel = %self.channel_names[channel], "talk-spurt: first packet sent");
            }
        }
        if let Some(out) = self.stitched(now, channel, source, channel, packet) {
            self.deliver(now, channel, targets, &out);
            if let Some(r) = self.recording.as_mut() {
                r.packet(now, channel, out.timestamp, &out.payload);
            }
        }
        // Patched channels whose floor is held for this talker hear it too.
        for (patched, targets) in self.router.patched(now, channel, source) {
            if let Some(out) = self.stitched(now, patched, source, channel, packet) {
                self.deliver(now, patched, targets, &out);
                if let Some(r) = self.recording.as_mut() {
                    r.packet(now, patched, out.timestamp, &out.payload);
                }
            }
        }
    }

    /// `packet` as part of `channel`'s stream (its talker may have changed since the last one),
    /// or None for a duplicate.
    fn stitched(
        &mut self,
        now: std::time::Instant,
        channel: ChannelId,
        source: MediaSource,
        origin: ChannelId,
        packet: &MediaPacket,
    ) -> Option<MediaPacket> {
        let stamp = self.stitch[channel].stamp_from(now, (source, origin), packet)?;
        // The extended sequence number starts below 30 000 and grows by one a packet: u16 wraps.
        Some(MediaPacket { seq: stamp.seq as u16, timestamp: stamp.timestamp, marker: stamp.marker, ..packet.clone() })
    }

    fn deliver(
        &mut self,
        now: std::time::Instant,
        channel: ChannelId,
        targets: Vec<MediaTarget>,
        packet: &MediaPacket,
    ) {
        for target in targets {
            match target {
                MediaTarget::Port(p) if self.desks.get(p).is_some_and(Option::is_some) => {
                    let Some(desk) = &self.desks[p] else { continue };
                    if let (Some(mixer), Some(i)) = (&desk.mixer, desk.index(channel)) {
                        if let Err(e) = mixer.lock().unwrap_or_else(|e| e.into_inner()).push(now, i, packet) {
                            debug!(error = %e, "desk mixer refused a packet");
                        }
                        desk.flags.wake_playback();
                    }
                }
                MediaTarget::Port(_) if self.router.muted(channel) => {}
                MediaTarget::Port(p) => {
                    self.note_channel_audio(now, p);
                    if let Some(a) = &self.audio[p] {
                        if let Some(tx) = &a.tx {
                            tx.lock().unwrap_or_else(|e| e.into_inner()).push(now, packet);
                            a.flags.wake_playback();
                        }
                    }
                }
                MediaTarget::Peer(peer) => {
                    if let Some(p) = self.peers.get(&peer) {
                        let channel = self.channel_names[channel].clone();
                        let _ = p.to_peer.send(ToPeer::Media { channel, packet: packet.clone() });
                    }
                }
                MediaTarget::Uplink => {
                    if let Some(u) = &self.uplink {
                        u.media(&self.channel_names[channel], packet.clone());
                    }
                }
            }
        }
    }

    /// Tell radio `port` that channel audio reaches it (its no-audio guard), at most every
    /// [`CHANNEL_AUDIO_NOTE`].
    fn note_channel_audio(&mut self, now: std::time::Instant, port: PortId) {
        let due = self.audio_noted[port].is_none_or(|t| now.saturating_duration_since(t) >= CHANNEL_AUDIO_NOTE);
        if due && self.desks.get(port).is_none_or(Option::is_none) {
            self.audio_noted[port] = Some(now);
            let _ = self.ports[port].send(PortInput::ChannelAudio);
        }
    }

    fn talker_name(&self, talker: Option<Talker>) -> Option<String> {
        talker.and_then(|t| self.router.talker_name(t))
    }

    fn dispatch(&mut self) {
        while let Some(out) = self.router.poll_output() {
            if let RouterOutput::Talk { port, channel, on } = out {
                self.uplink_talk(port, channel, on);
            }
            match out {
                RouterOutput::TxRequest { port, on } => {
                    self.tx_wanted[port] = on;
                    self.apply_tx(port);
                }
                RouterOutput::Ended { channel, cause, .. } => {
                    if let Some(r) = self.recording.as_mut() {
                        r.floor_ended(clock::now(), channel, cause);
                    }
                }
                RouterOutput::Floor { channel, holder } => {
                    self.tell_desks(channel, holder);
                    self.log_floor(channel, holder);
                    if let Some(talker) = holder.filter(|_| self.recording.is_some()) {
                        let info = self.talker_info(channel, talker);
                        if let Some(r) = self.recording.as_mut() {
                            r.floor_taken(clock::now(), channel, info);
                        }
                    }
                }
                RouterOutput::Air { channel, radios } => {
                    for &(port, state) in &radios {
                        if let AirState::Waiting(why) = state {
                            info!(channel = %self.channel_names[channel], port = %self.port_names[port], ?why, "radio not on air yet");
                        }
                    }
                    let air = self.air_message(channel);
                    for p in self.peers.values() {
                        let _ = p.to_peer.send(ToPeer::Air(air.clone()));
                    }
                }
                RouterOutput::Busy { port, channel, holder } => {
                    if let Some(desk) = &self.desks[port] {
                        if let Some(i) = desk.index(channel) {
                            let _ = desk.to_desk.send(DeskInput::Denied { channel: i });
                        }
                    }
                    let holder = self.talker_name(holder);
                    let (port, channel) = (&self.port_names[port], &self.channel_names[channel]);
                    warn!(%port, %channel, ?holder, "floor busy, request denied");
                    let mut event = Event::new(EventKind::FloorDenied).port(port).channel(channel).reason("busy");
                    event.detail = holder;
                    self.reporter.event(event);
                }
                RouterOutput::Unanswered { port, channel, asking_again } => {
                    let (port, channel) = (&self.port_names[port], &self.channel_names[channel]);
                    warn!(%port, %channel, asking_again, "floor request unanswered");
                }
                RouterOutput::Revoked { port, channel, cause } => {
                    let (port, channel) = (&self.port_names[port], &self.channel_names[channel]);
                    warn!(%port, %channel, ?cause, "floor revoked");
                    let reason = match cause {
                        RevokeCause::Preempted { .. } => "preempted",
                        RevokeCause::MaxTalkTime => "max_talk",
                        RevokeCause::NoMedia => "no_media",
                    };
                    self.reporter.event(Event::new(EventKind::FloorRevoked).port(port).channel(channel).reason(reason));
                }
                RouterOutput::Talk { port, on, .. } if self.desks[port].is_none() => {
                    if let Some(a) = &self.audio[port] {
                        a.flags.set_talking(on);
                    }
                }
                RouterOutput::Talk { port, channel, on } => {
                    let talking = self.router.talking_on(port).next().is_some();
                    if let Some(desk) = &self.desks[port] {
                        desk.flags.set_talking(talking);
                        if let Some(i) = desk.index(channel) {
                            let _ = desk.to_desk.send(DeskInput::Talk { channel: i, on });
                        }
                    }
                }
                RouterOutput::ToPeer { peer, channel, member, msg } => {
                    let holder = match msg {
                        ToParticipant::Taken { holder, .. }
                        | ToParticipant::Deny { cause: DenyCause::Busy { holder } } => Some(holder),
                        _ => None,
                    };
                    let holder_name = holder.and_then(|h| self.participant_name(channel, h));
                    if let Some(p) = self.peers.get(&peer) {
                        let channel = self.channel_names[channel].clone();
                        let _ = p.to_peer.send(ToPeer::Floor { channel, member, msg, holder_name });
                    }
                }
                RouterOutput::ToUplink { member, msg } => {
                    if let Some(u) = &self.uplink {
                        u.floor(member, msg);
                    }
                }
                RouterOutput::PatchCarry { patch, channel, on } => {
                    info!(patch, channel = %self.channel_names[channel], on, "patch carries a talker");
                }
                RouterOutput::PatchBusy { patch, channel, holder } => {
                    let holder = self.talker_name(holder);
                    let channel = &self.channel_names[channel];
                    warn!(patch, %channel, ?holder, "patch could not take the floor: busy");
                    let mut event = Event::new(EventKind::FloorDenied).channel(channel).reason("busy");
                    event.detail = holder;
                    self.reporter.event(event);
                }
                RouterOutput::Roster { channel } => {
                    let members = self.roster_now(channel);
                    let name = &self.channel_names[channel];
                    let Some(delta) = RosterDelta::between(name, &self.rosters[channel].members, &members) else {
                        continue;
                    };
                    self.rosters[channel] = Arc::new(Roster { channel: name.clone(), members });
                    let delta = Arc::new(delta);
                    for p in self.peers.values() {
                        let _ = p.to_peer.send(ToPeer::RosterDelta(delta.clone()));
                    }
                }
            }
        }
    }

    fn log_floor(&self, channel: ChannelId, holder: Option<Talker>) {
        match self.talker_name(holder) {
            Some(name) => info!(channel = %self.channel_names[channel], talker = %name, "floor taken"),
            None if holder.is_some() => info!(channel = %self.channel_names[channel], "floor taken remotely"),
            None => info!(channel = %self.channel_names[channel], "floor idle"),
        }
    }

    /// Desks on `channel` learn whether someone else holds it (their busy LEDs).
    fn tell_desks(&self, channel: ChannelId, holder: Option<Talker>) {
        for (port, desk) in self.desks.iter().enumerate() {
            let Some(desk) = desk else { continue };
            if let Some(i) = desk.index(channel) {
                let busy = holder.is_some_and(|h| h != Talker::Port(port));
                let _ = desk.to_desk.send(DeskInput::Busy { channel: i, busy });
            }
        }
    }

    /// Tell the uplink when the first port here starts and the last one stops talking on a
    /// channel.
    fn uplink_talk(&mut self, port: PortId, channel: ChannelId, on: bool) {
        let talkers = &mut self.talkers[channel];
        let was = !talkers.is_empty();
        if on {
            talkers.insert(port);
        } else {
            talkers.remove(&port);
        }
        let is = !talkers.is_empty();
        if was != is {
            if let Some(u) = &self.uplink {
                u.talking(&self.channel_names[channel], is);
            }
        }
    }

    /// Who talks on each busy channel, for a peer that just joined.
    fn send_holders(&self, peer: PeerId) {
        let Some(p) = self.peers.get(&peer) else { return };
        for channel in 0..self.channel_names.len() {
            if let Some((holder, priority)) = self.router.holder_participant(channel) {
                let _ = p.to_peer.send(ToPeer::Floor {
                    channel: self.channel_names[channel].clone(),
                    member: None,
                    msg: ToParticipant::Taken { holder, priority },
                    holder_name: self.participant_name(channel, holder),
                });
            }
        }
    }

    /// The box's radio ports, for a console.
    fn send_ports(&self, peer: PeerId) {
        let Some(p) = self.peers.get(&peer) else { return };
        let ports = self
            .reporter
            .port_states()
            .into_iter()
            .map(|(name, s)| PortStatus {
                name,
                channel: s.channel,
                rx: s.rx_active,
                tx: s.tx_keyed,
                locked_out: s.locked_out,
                inhibited: s.inhibited,
            })
            .collect();
        let _ = p.to_peer.send(ToPeer::Ports { ports });
    }

    /// A channel's air state as the protocol says it.
    fn air_message(&self, channel: ChannelId) -> crate::net::protocol::Air {
        let radios = self
            .router
            .air(channel)
            .iter()
            .map(|&(port, state)| crate::net::protocol::AirEntry::new(&self.port_names[port], state))
            .collect();
        crate::net::protocol::Air { channel: self.channel_names[channel].clone(), radios }
    }

    fn participant_name(&self, channel: ChannelId, id: ParticipantId) -> Option<String> {
        self.router.roster(channel).into_iter().find(|(i, _, _)| *i == id).map(|(_, name, _)| name)
    }
}

fn kind_from_str(kind: &str) -> SourceKind {
    match kind {
        "radio" => SourceKind::Radio,
        "dtmf" => SourceKind::Dtmf,
        "console" => SourceKind::Console,
        "desk" => SourceKind::Desk,
        "fleet" => SourceKind::Fleet,
        _ => SourceKind::Hub,
    }
}

fn now_rfc3339() -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    crate::fleet::protocol::rfc3339_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::peer_queue::{self, Delivered, PeerRx};

    const CONFIG: &str = r#"
device_id = "t"
[channel.ops]
[port.a]
kind = "radio"
channel = "ops"
cor = { line = "sim:a-cor" }
ptt = { line = "sim:a-ptt" }
[port.b]
kind = "radio"
channel = "ops"
cor = { line = "sim:b-cor" }
ptt = { line = "sim:b-ptt" }
"#;

    async fn next_tx_request(rx: &mut PeerRx<PortInput>) -> bool {
        loop {
            if let PortInput::TxRequest(on) = rx.recv().await.expect("router gone") {
                return on;
            }
        }
    }

    /// Radio a receives while its media floods the router: radio b's unkey (a's COR closing)
    /// overtakes every packet still queued, and the packets that find the inbox full are dropped.
    #[tokio::test]
    async fn a_flood_of_media_does_not_delay_an_unkey() {
        let config = crate::config::parse_str(CONFIG, "t.toml").unwrap();
        let (a_tx, _a_rx) = super::super::radio_port::inputs();
        let (b_tx, mut b_rx) = super::super::radio_port::inputs();
        let watchdog = super::super::watchdog::Watchdog::default();
        let router = ChannelRouter::new(
            &config,
            vec![a_tx, b_tx],
            vec![(0, None), (1, None)],
            Reporter::new(None),
            watchdog.register("router"),
        );
        let (control, control_rx) = mpsc::channel(super::super::CONTROL_INBOX);
        let (media, media_rx) = mpsc::channel(peer_queue::INBOX);
        let cancel = CancellationToken::new();
        let links = NetLinks { hub: None, uplink: None, desk: None };
        let task = tokio::spawn(router.run(control_rx, media_rx, links, cancel.clone()));

        control.send(ChannelMsg::RxActive { port: 0, active: true }).await.unwrap();
        assert!(next_tx_request(&mut b_rx).await, "b keys for a");
        // This test's thread runs the router only while the test waits: the inbox fills up.
        let packet = |seq| MediaPacket { seq, timestamp: 960 * seq as u32, marker: seq == 0, payload: vec![0; 60] };
        let mut dropped = 0;
        for seq in 0..2 * peer_queue::INBOX as u16 {
            let msg = ChannelMsg::Media { port: 0, packet: packet(seq) };
            if peer_queue::try_deliver(&media, msg).unwrap() == Delivered::Dropped {
                dropped += 1;
            }
        }
        assert_eq!(dropped, peer_queue::INBOX, "media beyond the inbox is dropped, not queued");
        control.send(ChannelMsg::RxActive { port: 0, active: false }).await.unwrap();
        assert!(!next_tx_request(&mut b_rx).await, "b unkeys");
        let queued = peer_queue::INBOX - media.capacity();
        assert!(queued > peer_queue::INBOX / 2, "the unkey waited for {} packets", peer_queue::INBOX - queued);
        cancel.cancel();
        task.await.unwrap();
    }

    /// A flood of console or fleet requests to a desk that does not get round to them: 16 wait
    /// in its queue, the rest are refused at once (its queue never overflows, which would stop
    /// the desk), and an answer makes room for one more.
    #[tokio::test]
    async fn desk_requests_beyond_the_limit_are_refused_not_queued() {
        use super::super::desk_port;
        let config = crate::config::parse_str(
            "device_id = \"t\"\n[channel.ops]\n[port.desk]\nkind = \"desk\"\nchannels = [\"ops\"]\n",
            "t.toml",
        )
        .unwrap();
        let PortConfig::Desk(desk) = &config.port["desk"] else { panic!("not a desk") };
        let watchdog = super::super::watchdog::Watchdog::default();
        let (port_tx, _port_rx) = super::super::radio_port::inputs();
        let heartbeat = watchdog.register("router");
        let mut router = ChannelRouter::new(&config, vec![port_tx], vec![(0, None)], Reporter::new(None), heartbeat);
        let (to_desk, mut desk_rx) = desk_port::inputs(desk);
        let requests = Arc::new(tokio::sync::Semaphore::new(DESK_REQUESTS));
        let flags = Arc::default();
        router.set_desk(0, DeskLink { to_desk: to_desk.clone(), requests, channels: vec![0], mixer: None, flags });
        let mut request = || {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let action = serde_json::json!({ "action": "select", "channel": "ops" });
            let allowed = vec!["ops".to_string()];
            router.desk_request(crate::net::hub::DeskRequest { port: "desk".into(), action, allowed, reply });
            answer
        };
        let mut answers: Vec<_> = (0..1000).map(|_| request()).collect();
        assert_eq!(to_desk.len(), DESK_REQUESTS);
        assert_eq!(to_desk.end(), None);
        let busy = |a: &mut tokio::sync::oneshot::Receiver<Result<(), String>>| matches!(a.try_recv(), Ok(Err(e)) if e.contains("busy"));
        assert_eq!(answers[DESK_REQUESTS..].iter_mut().map(busy).filter(|b| *b).count(), 1000 - DESK_REQUESTS);

        let Some(Ok(DeskInput::Action { reply: Some(done), .. })) = desk_rx.try_recv() else { panic!("no request") };
        done.send(Ok(())).unwrap();
        assert_eq!(answers.swap_remove(0).await.unwrap(), Ok(()));
        assert!(!busy(&mut request()), "an answered request makes room");
        assert_eq!(to_desk.len(), DESK_REQUESTS);
        assert!(busy(&mut request()));
    }
}
