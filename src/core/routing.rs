//! Channel routing for one box: who talks on which channel, who hears it, and which radios
//! must transmit. Sans-IO, like every core.
//!
//! A channel is either **hosted here** (its floor [`Arbiter`] runs in this router: a standalone
//! box, or a hub) or **hosted on the uplink** (an edge box: the arbiter runs in the hub, and
//! floor messages travel over the uplink). Members of a channel are this box's ports (each
//! with a floor [`Participant`] running here) and, on hosted channels, members of remote peers
//! (browsers, edge boxes), whose participant side runs at the peer.
//!
//! A radio transmits while someone *else* holds the floor of its channel (and the channel is
//! not muted on this box). Media is forwarded only from the floor holder, to every other member
//! of the channel.
//!
//! **Air state.** Holding the floor does not put a talker on air: a simplex radio that is
//! still receiving cannot key (it keys when its squelch closes), nor can an inhibited or
//! locked-out one. Each radio port reports what its PTT line is driven to ([`RadioTx`]); for
//! every radio that should transmit the talker, the router says whether it is on air or
//! waiting and why ([`RouterOutput::Air`]), so the talker is never told it is on air when it
//! is not. A radio whose COR is still open when the floor goes idle (it was preempted, or
//! denied while someone talked) asks for it again at once, so the rest of its call is heard.
//!
//! Dispatch operations are floor operations too. **All-call**: a desk presses on several of its
//! channels at once; each channel's arbiter grants or denies on its own. **Patch**: two hosted
//! channels cross-connected by a patch member on each; when someone talks on one side, the
//! patch asks for the other side's floor on the talker's behalf (with the talker's priority),
//! and the talker's media is heard there only while that floor is granted. Busy means denied
//! (until the talker releases and talks again), preemption takes the far side back, and the
//! patch releases when the talker does. A floor held by the patch itself never feeds back.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use super::emergency::Caller;
use super::floor::{
    Arbiter, ArbiterConfig, DenyCause, Participant, ParticipantConfig, ParticipantEvent, ParticipantId, Priority,
    Recipient, RevokeCause, ToArbiter, ToParticipant,
};
use super::record::EndCause;

/// Index of a port in the box's port list.
pub type PortId = usize;
/// Index of a channel in the router's channel list.
pub type ChannelId = usize;
/// A remote peer (browser console, edge box) connected to this hub.
pub type PeerId = u64;
/// A cross-connect of two channels, numbered in the order they were made (never reused).
pub type PatchId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// Keyed by the channel; its COR asks for the floor.
    Radio,
    /// A desk or console: asks for the floor with its PTT, never keyed by the channel.
    Desk,
}

#[derive(Debug, Clone)]
pub struct PortSpec {
    pub name: String,
    pub kind: PortKind,
    pub channels: Vec<ChannelId>,
    pub priority: Priority,
}

/// Where a channel's floor is decided.
#[derive(Debug, Clone)]
pub enum ChannelHost {
    /// Here: this box (standalone or hub) runs the arbiter.
    Local(ArbiterConfig),
    /// On the uplink hub.
    Uplink,
}

/// Who holds a channel's floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Talker {
    Port(PortId),
    /// A member of a remote peer (hub side), or anyone the uplink hub named (edge side).
    Remote(ParticipantId),
    /// A patch carrying the talker of the channel it joins.
    Patch(PatchId),
}

/// Where a packet should go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaTarget {
    /// A local port's transmit path.
    Port(PortId),
    /// A remote peer's track for the channel.
    Peer(PeerId),
    /// The uplink hub.
    Uplink,
}

/// Who sent a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaSource {
    Port(PortId),
    Peer(PeerId),
    Uplink,
}

/// Why a radio that should transmit the channel's talker is not keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// Asked to key and nothing blocks it: PTT is about to go on.
    Keying,
    /// Simplex and receiving: it keys when its squelch closes.
    Receiving,
    /// TX inhibit (switch or fleet command).
    Inhibited,
    /// Locked out after its time-out timer fired, until the channel goes idle.
    LockedOut,
    /// Its no-audio guard unkeyed it (the talker sent nothing): it keys again when channel
    /// audio reaches it.
    NoAudio,
}

/// Whether a radio that should transmit the channel's talker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AirState {
    /// Its PTT line is keyed: the talker is on air there (audio after the TX delay).
    OnAir,
    Waiting(WaitReason),
}

/// What a radio port reports of its transmitter: the level its PTT line is driven to, and what
/// keeps it from keying now, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RadioTx {
    pub keyed: bool,
    pub blocked: Option<WaitReason>,
}

/// What the drivers must do or report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterOutput {
    /// Key (on) or unkey a radio port's transmitter for its channel's talker.
    TxRequest { port: PortId, on: bool },
    /// The port may (on) or may no longer send its audio into the channel.
    Talk { port: PortId, channel: ChannelId, on: bool },
    /// The port asked for the floor and was refused (busy tone/LED).
    Busy { port: PortId, channel: ChannelId, holder: Option<Talker> },
    /// The port's floor request got no answer in time (`asking_again`: a radio still pressed
    /// sent it again; otherwise it was cancelled).
    Unanswered { port: PortId, channel: ChannelId, asking_again: bool },
    /// The port lost the floor it held.
    Revoked { port: PortId, channel: ChannelId, cause: RevokeCause },
    /// `talker`'s transmission on `channel` ended, and why; the [`RouterOutput::Floor`] that
    /// names the next holder (or idle) follows.
    Ended { channel: ChannelId, talker: Talker, cause: EndCause },
    /// The channel's talker changed (None: idle).
    Floor { channel: ChannelId, holder: Option<Talker> },
    /// The radios that should transmit the channel's talker, and whether each is on air
    /// (empty: none). Sent when it changes.
    Air { channel: ChannelId, radios: Vec<(PortId, AirState)> },
    /// A floor message for a remote peer: to one of its members, or a broadcast (`member: None`).
    ToPeer { peer: PeerId, channel: ChannelId, member: Option<ParticipantId>, msg: ToParticipant },
    /// A floor message from one of this box's members to the uplink hub's arbiter.
    ToUplink { member: ParticipantId, msg: ToArbiter },
    /// The members of a hosted channel changed.
    Roster { channel: ChannelId },
    /// A patch started (on) or stopped carrying a talker onto `channel`.
    PatchCarry { patch: PatchId, channel: ChannelId, on: bool },
    /// A patch asked for `channel`'s floor on a talker's behalf and was refused.
    PatchBusy { patch: PatchId, channel: ChannelId, holder: Option<Talker> },
}

/// Why a patch cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("a patch joins two different channels")]
    SameChannel,
    #[error("channel {0} is not hosted here: patches need both floors on this box")]
    NotHosted(ChannelId),
    #[error("these channels are already patched")]
    Exists,
}

#[derive(Debug)]
enum Member {
    Local {
        port: PortId,
        channel: ChannelId,
        participant: Participant,
    },
    Remote {
        peer: PeerId,
        channel: ChannelId,
        name: String,
        priority: Priority,
    },
    /// One side of a patch: asks for this channel's floor for the talker on the other side.
    Patch {
        patch: PatchId,
        channel: ChannelId,
        participant: Participant,
    },
}

impl Member {
    fn channel(&self) -> ChannelId {
        match self {
            Member::Local { channel, .. } | Member::Remote { channel, .. } | Member::Patch { channel, .. } => *channel,
        }
    }

    /// The floor participant run here (local ports and patches).
    fn participant(&mut self) -> Option<&mut Participant> {
        match self {
            Member::Local { participant, .. } | Member::Patch { participant, .. } => Some(participant),
            Member::Remote { .. } => None,
        }
    }
}

/// Members by participant id. Ids are never reused (a message for a member that left may still
/// be in flight), but a member that leaves takes its memory with it: a hub whose consoles come
/// and go keeps only the members it has, not a slot for every one it ever had.
#[derive(Debug, Default)]
struct Members {
    by_id: BTreeMap<usize, Member>,
    next: usize,
}

impl Members {
    /// The id the next [`push`](Self::push) gets.
    fn next_id(&self) -> usize {
        self.next
    }

    fn push(&mut self, m: Member) -> usize {
        let id = self.next;
        self.next += 1;
        self.by_id.insert(id, m);
        id
    }

    fn remove(&mut self, id: usize) {
        self.by_id.remove(&id);
    }

    fn get(&self, id: usize) -> Option<&Member> {
        self.by_id.get(&id)
    }

    fn get_mut(&mut self, id: usize) -> Option<&mut Member> {
        self.by_id.get_mut(&id)
    }

    /// Every id, in order, for loops that change the router as they go.
    fn ids(&self) -> Vec<usize> {
        self.by_id.keys().copied().collect()
    }

    fn iter(&self) -> impl Iterator<Item = (usize, &Member)> + '_ {
        self.by_id.iter().map(|(&id, m)| (id, m))
    }

    fn values(&self) -> impl Iterator<Item = &Member> + '_ {
        self.by_id.values()
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut Member> + '_ {
        self.by_id.values_mut()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_id.len()
    }
}

/// Two channels and the member index of the patch on each.
#[derive(Debug, Clone, Copy)]
struct Patch {
    channels: [ChannelId; 2],
    members: [usize; 2],
}

/// A port's floor client: a radio's COR asks again when the floor frees while it still
/// receives (its call goes on being heard); a desk's PTT must be pressed again.
fn participant_config(spec: &PortSpec) -> ParticipantConfig {
    ParticipantConfig { priority: spec.priority, retake_when_idle: spec.kind == PortKind::Radio, ..Default::default() }
}

pub struct Router {
    hosts: Vec<ChannelHost>,
    /// Arbiters of hosted channels (None for uplink channels).
    arbiters: Vec<Option<Arbiter>>,
    /// By participant id on hosted channels.
    members: Members,
    ports: Vec<PortSpec>,
    /// Uplink channels: the hub's ids of our local members (index into `members` by id there).
    uplink_ids: Vec<(ParticipantId, usize)>,
    /// Uplink channels: the talker the hub last announced.
    uplink_holders: Vec<Option<ParticipantId>>,
    /// Last TX request sent to each port (radios only), so outputs are edges.
    tx_on: Vec<bool>,
    /// What each radio port last reported of its transmitter.
    radio_tx: Vec<RadioTx>,
    /// Channels not carried on this box's radios (`listen` off).
    muted: Vec<bool>,
    /// Last announced air state per channel.
    air: Vec<Vec<(PortId, AirState)>>,
    /// Last announced holder per channel.
    holders: Vec<Option<Talker>>,
    /// Why the holder of each channel is about to lose it, once known (a revoke, a lost link);
    /// none: released.
    ending: Vec<Option<EndCause>>,
    /// Patches by id; None once removed.
    patches: Vec<Option<Patch>>,
    /// Per channel, the caller of an active emergency: its requests carry
    /// [`Priority::EMERGENCY`] until the emergency is acknowledged.
    emergency: Vec<Option<Caller>>,
    outputs: VecDeque<RouterOutput>,
}

impl Router {
    pub fn new(channels: Vec<ChannelHost>, ports: Vec<PortSpec>) -> Self {
        let mut members = Members::default();
        for (port, spec) in ports.iter().enumerate() {
            for &channel in &spec.channels {
                let id = ParticipantId(members.next_id() as u64);
                let config = participant_config(spec);
                members.push(Member::Local { port, channel, participant: Participant::new(id, config) });
            }
        }
        Self {
            muted: vec![false; channels.len()],
            air: vec![Vec::new(); channels.len()],
            holders: vec![None; channels.len()],
            ending: vec![None; channels.len()],
            emergency: vec![None; channels.len()],
            uplink_holders: vec![None; channels.len()],
            arbiters: channels
                .iter()
                .map(|h| match h {
                    ChannelHost::Local(cfg) => Some(Arbiter::new(cfg.clone())),
                    ChannelHost::Uplink => None,
                })
                .collect(),
            hosts: channels,
            tx_on: vec![false; ports.len()],
            radio_tx: vec![RadioTx::default(); ports.len()],
            ports,
            members,
            uplink_ids: Vec::new(),
            patches: Vec::new(),
            outputs: VecDeque::new(),
        }
    }

    fn local_index(&self, port: PortId, channel: ChannelId) -> Option<usize> {
        self.members
            .iter()
            .find(|(_, m)| matches!(m, Member::Local { port: p, channel: c, .. } if *p == port && *c == channel))
            .map(|(i, _)| i)
    }

    fn is_uplink(&self, channel: ChannelId) -> bool {
        matches!(self.hosts.get(channel), Some(ChannelHost::Uplink))
    }

    /// COR opened or PTT pressed on `port` for `channel`. Unknown pairs are ignored.
    pub fn press(&mut self, now: Instant, port: PortId, channel: ChannelId) {
        if let Some(m) = self.local_index(port, channel) {
            if let Some(Member::Local { participant, .. }) = self.members.get_mut(m) {
                participant.press(now);
            }
            self.settle(now);
        }
    }

    /// COR closed or PTT released.
    pub fn unpress(&mut self, now: Instant, port: PortId, channel: ChannelId) {
        if let Some(m) = self.local_index(port, channel) {
            if let Some(Member::Local { participant, .. }) = self.members.get_mut(m) {
                participant.unpress(now);
            }
            self.settle(now);
        }
    }

    /// All-call: press (on) or release `port` on each of `channels` at once. Each floor is
    /// decided on its own (a busy channel denies, the others grant); unknown pairs are ignored.
    pub fn all_call(&mut self, now: Instant, port: PortId, channels: &[ChannelId], on: bool) {
        for &channel in channels {
            let Some(m) = self.local_index(port, channel) else { continue };
            if let Some(Member::Local { participant, .. }) = self.members.get_mut(m) {
                if on {
                    participant.press(now);
                } else {
                    participant.unpress(now);
                }
            }
        }
        self.settle(now);
    }

    /// A radio port's transmitter report (PTT line level, what blocks it).
    pub fn radio_tx(&mut self, now: Instant, port: PortId, report: RadioTx) {
        if let Some(slot) = self.radio_tx.get_mut(port) {
            *slot = report;
            self.settle(now);
        }
    }

    /// Carry (false) or mute (true) `channel` on this box's radios: a muted channel keys none.
    pub fn set_muted(&mut self, now: Instant, channel: ChannelId, muted: bool) {
        if let Some(slot) = self.muted.get_mut(channel) {
            *slot = muted;
            self.settle(now);
        }
    }

    /// Whether `channel` is muted on this box's radios.
    pub fn muted(&self, channel: ChannelId) -> bool {
        self.muted.get(channel).copied().unwrap_or(false)
    }

    /// The radios that should transmit `channel`'s talker now, and whether each is on air.
    pub fn air(&self, channel: ChannelId) -> &[(PortId, AirState)] {
        self.air.get(channel).map_or(&[], Vec::as_slice)
    }

    /// Channels on which `port` holds the floor (may send its media).
    pub fn talking_on(&self, port: PortId) -> impl Iterator<Item = ChannelId> + '_ {
        self.members.values().filter_map(move |m| match m {
            Member::Local { port: p, channel, participant } if *p == port && participant.may_send_media() => {
                Some(*channel)
            }
            _ => None,
        })
    }

    /// A packet from `source` on `channel`: where to forward it, or None when the source does
    /// not hold the floor (its media is dropped, whatever it believes). Refreshes the holder's
    /// no-media timer on hosted channels.
    pub fn media(&mut self, now: Instant, source: MediaSource, channel: ChannelId) -> Option<Vec<MediaTarget>> {
        let holder = self.holder(channel)?;
        let holder_index = match holder {
            Talker::Port(p) => self.local_index(p, channel),
            Talker::Remote(id) if !self.is_uplink(channel) => Some(id.0 as usize),
            Talker::Remote(_) => None,
            // A patch's media comes through `patched`, never from a source of its own.
            Talker::Patch(_) => return None,
        };
        let from_holder = match (source, holder) {
            (MediaSource::Port(p), Talker::Port(h)) => p == h,
            (MediaSource::Peer(peer), Talker::Remote(id)) if !self.is_uplink(channel) => {
                matches!(self.members.get(id.0 as usize), Some(Member::Remote { peer: p, .. }) if *p == peer)
            }
            (MediaSource::Uplink, Talker::Remote(_)) => self.is_uplink(channel),
            _ => false,
        };
        if !from_holder {
            return None;
        }
        if let (Some(arbiter), Some(i)) = (self.arbiters[channel].as_mut(), holder_index) {
            arbiter.media(now, ParticipantId(i as u64));
        }
        let mut targets = self.targets(channel, holder_index, source);
        if self.is_uplink(channel) && matches!(source, MediaSource::Port(_)) {
            targets.push(MediaTarget::Uplink);
        }
        Some(targets)
    }

    /// Where a packet just forwarded on `channel` (its [`Router::media`] said where) goes
    /// further through patches: every channel whose floor a patch holds for this talker, with
    /// its targets, following chains of patches. Refreshes those floors' no-media timers.
    pub fn patched(
        &mut self,
        now: Instant,
        channel: ChannelId,
        source: MediaSource,
    ) -> Vec<(ChannelId, Vec<MediaTarget>)> {
        let mut out = Vec::new();
        let mut reached = vec![channel];
        let mut i = 0;
        while i < reached.len() {
            let from = reached[i];
            i += 1;
            for patch in self.patches.iter().flatten().copied().collect::<Vec<_>>() {
                let Some(side) = patch.channels.iter().position(|&c| c == from) else { continue };
                let (to, member) = (patch.channels[1 - side], patch.members[1 - side]);
                let carrying = matches!(self.members.get(member), Some(Member::Patch { participant, .. }) if participant.may_send_media());
                if !carrying || reached.contains(&to) {
                    continue;
                }
                reached.push(to);
                if let Some(a) = self.arbiters[to].as_mut() {
                    a.media(now, ParticipantId(member as u64));
                }
                out.push((to, self.targets(to, Some(member), source)));
            }
        }
        out
    }

    /// Every member of `channel` but the holder (and not back to the peer the packet came from).
    fn targets(&self, channel: ChannelId, holder_index: Option<usize>, source: MediaSource) -> Vec<MediaTarget> {
        let mut targets = Vec::new();
        for (i, m) in self.members.iter() {
            match m {
                Member::Local { port, channel: c, .. } if *c == channel && Some(i) != holder_index => {
                    targets.push(MediaTarget::Port(*port))
                }
                Member::Remote { peer, channel: c, .. }
                    if *c == channel
                        && Some(i) != holder_index
                        && !targets.contains(&MediaTarget::Peer(*peer))
                        && source != MediaSource::Peer(*peer) =>
                {
                    targets.push(MediaTarget::Peer(*peer));
                }
                _ => {}
            }
        }
        targets
    }

    /// Move a port to another channel hosted here. Its floor on the old channel is released
    /// (a radio holding it stops talking) and, if it was pressed (COR open), it asks anew on
    /// the new one. Refused (false) for channels on the uplink or unknown ones.
    pub fn set_port_channel(&mut self, now: Instant, port: PortId, channel: ChannelId) -> bool {
        if port >= self.ports.len() || !matches!(self.hosts.get(channel), Some(ChannelHost::Local(_))) {
            return false;
        }
        if self.ports[port].channels.iter().any(|&c| self.is_uplink(c)) {
            return false;
        }
        let mut pressed = false;
        for m in self.members.ids() {
            if let Some(Member::Local { port: p, channel: old, participant }) = self.members.get_mut(m) {
                if *p == port {
                    let old = *old;
                    pressed |= participant.is_pressed();
                    participant.unpress(now);
                    self.settle(now);
                    if let Some(a) = self.arbiters[old].as_mut() {
                        a.leave(now, ParticipantId(m as u64));
                    }
                    self.members.remove(m);
                    self.outputs.push_back(RouterOutput::Roster { channel: old });
                }
            }
        }
        let id = ParticipantId(self.members.next_id() as u64);
        let mut participant = Participant::new(id, participant_config(&self.ports[port]));
        if pressed {
            participant.press(now);
        }
        self.members.push(Member::Local { port, channel, participant });
        self.ports[port].channels = vec![channel];
        self.outputs.push_back(RouterOutput::Roster { channel });
        self.settle(now);
        true
    }

    // ---- patches ----

    /// Cross-connect two hosted channels. If someone already talks on one side, the patch asks
    /// for the other side's floor at once.
    pub fn patch(&mut self, now: Instant, a: ChannelId, b: ChannelId) -> Result<PatchId, PatchError> {
        if a == b {
            return Err(PatchError::SameChannel);
        }
        for c in [a, b] {
            if !matches!(self.hosts.get(c), Some(ChannelHost::Local(_))) {
                return Err(PatchError::NotHosted(c));
            }
        }
        if self.patches.iter().flatten().any(|p| p.channels == [a, b] || p.channels == [b, a]) {
            return Err(PatchError::Exists);
        }
        let patch = self.patches.len();
        let mut members = [0; 2];
        for (side, channel) in [a, b].into_iter().enumerate() {
            members[side] = self.members.next_id();
            let id = ParticipantId(members[side] as u64);
            let participant = Participant::new(id, ParticipantConfig::default());
            self.members.push(Member::Patch { patch, channel, participant });
        }
        self.patches.push(Some(Patch { channels: [a, b], members }));
        self.settle(now);
        Ok(patch)
    }

    /// Undo a patch: any floor it holds is released. False if there is no such patch.
    pub fn unpatch(&mut self, now: Instant, patch: PatchId) -> bool {
        let Some(p) = self.patches.get_mut(patch).and_then(Option::take) else { return false };
        for (side, m) in p.members.into_iter().enumerate() {
            if let Some(Member::Patch { participant, .. }) = self.members.get_mut(m) {
                participant.unpress(now);
            }
            // Deliver the release (and its StopMedia) before the member goes.
            self.settle(now);
            if let Some(a) = self.arbiters[p.channels[side]].as_mut() {
                a.leave(now, ParticipantId(m as u64));
            }
            self.members.remove(m);
        }
        self.settle(now);
        true
    }

    /// The patch joining `a` and `b` (either order), if any.
    pub fn patch_between(&self, a: ChannelId, b: ChannelId) -> Option<PatchId> {
        self.patches.iter().position(|p| p.is_some_and(|p| p.channels == [a, b] || p.channels == [b, a]))
    }

    /// Each patch side asks for its channel's floor while someone other than the patch itself
    /// holds the far side's, with that talker's priority, and releases when they stop. True if
    /// anything changed.
    fn sync_patches(&mut self, now: Instant) -> bool {
        let mut moved = false;
        for patch in self.patches.iter().flatten().copied().collect::<Vec<_>>() {
            for side in 0..2 {
                let (far, far_member) = (patch.channels[1 - side], patch.members[1 - side]);
                let talker =
                    self.arbiters[far].as_ref().and_then(Arbiter::holder).filter(|(id, _)| id.0 as usize != far_member);
                let Some(Member::Patch { participant, .. }) = self.members.get_mut(patch.members[side]) else {
                    continue;
                };
                match talker {
                    Some((_, priority)) if !participant.is_pressed() => {
                        // The request carries the talker's priority: a field radio's words do
                        // not preempt anyone on the far side just because they go through a patch.
                        let id = participant.id();
                        *participant = Participant::new(id, ParticipantConfig { priority, ..Default::default() });
                        participant.press(now);
                        moved = true;
                    }
                    None if participant.is_pressed() => {
                        participant.unpress(now);
                        moved = true;
                    }
                    _ => {}
                }
            }
        }
        moved
    }

    // ---- hub side: remote peers on hosted channels ----

    /// A remote peer's member joins a hosted channel. None when the channel is not hosted here.
    pub fn add_remote(
        &mut self,
        now: Instant,
        peer: PeerId,
        name: &str,
        channel: ChannelId,
        priority: Priority,
    ) -> Option<ParticipantId> {
        if !matches!(self.hosts.get(channel), Some(ChannelHost::Local(_))) {
            return None;
        }
        let id =
            ParticipantId(self.members.push(Member::Remote { peer, channel, name: name.to_string(), priority }) as u64);
        self.outputs.push_back(RouterOutput::Roster { channel });
        self.settle(now);
        Some(id)
    }

    /// A peer is gone: its members leave, and any floor they held is freed.
    pub fn remove_peer(&mut self, now: Instant, peer: PeerId) {
        for i in self.members.ids() {
            if let Some(Member::Remote { peer: p, channel, .. }) = self.members.get(i) {
                if *p == peer {
                    let channel = *channel;
                    if let Some(a) = self.arbiters[channel].as_mut() {
                        if a.holder().is_some_and(|(h, _)| h.0 as usize == i) {
                            self.ending[channel] = Some(EndCause::LinkLost);
                        }
                        a.leave(now, ParticipantId(i as u64));
                    }
                    self.members.remove(i);
                    self.outputs.push_back(RouterOutput::Roster { channel });
                }
            }
        }
        self.settle(now);
    }

    /// A floor message from a remote member. Ignored unless `member` belongs to `peer`.
    pub fn from_peer(&mut self, now: Instant, peer: PeerId, member: ParticipantId, msg: ToArbiter) {
        let Some(Member::Remote { peer: p, channel, priority, .. }) = self.members.get(member.0 as usize) else {
            return;
        };
        if *p != peer {
            return;
        }
        // The member's priority was fixed (and capped) when it joined; an emergency's caller
        // asks with the emergency priority.
        let priority =
            if self.emergency[*channel] == Some(Caller::Member(member)) { Priority::EMERGENCY } else { *priority };
        let msg = match msg {
            ToArbiter::Request { .. } => ToArbiter::Request { priority },
            other => other,
        };
        if let Some(a) = self.arbiters[*channel].as_mut() {
            a.handle_message(now, member, msg);
        }
        self.settle(now);
    }

    /// Give the caller of an emergency on `channel` the emergency floor priority (Some), or
    /// take it back (None: the emergency was acknowledged). The caller keeps a floor it holds,
    /// now unpreemptable by any configured priority; a queued request moves up; a radio whose
    /// squelch is still open after it was denied or preempted (or a desk still pressing) asks
    /// again at once and preempts. Unknown channels and callers are ignored.
    pub fn set_emergency_caller(&mut self, now: Instant, channel: ChannelId, caller: Option<Caller>) {
        let Some(slot) = self.emergency.get_mut(channel) else { return };
        let old = std::mem::replace(slot, caller);
        if let Some(Caller::Port(port)) = old {
            let normal = self.ports.get(port).map_or(Priority::NORMAL, |p| p.priority);
            if let Some(Member::Local { participant, .. }) =
                self.local_index(port, channel).and_then(|m| self.members.get_mut(m))
            {
                participant.set_priority(now, normal);
            }
        }
        match caller {
            Some(Caller::Port(port)) => {
                let Some(m) = self.local_index(port, channel) else { return };
                if let Some(a) = self.arbiters[channel].as_mut() {
                    a.promote(ParticipantId(m as u64), Priority::EMERGENCY);
                }
                if let Some(Member::Local { participant, .. }) = self.members.get_mut(m) {
                    participant.set_priority(now, Priority::EMERGENCY);
                }
            }
            Some(Caller::Member(id)) => {
                if let Some(a) = self.arbiters[channel].as_mut() {
                    a.promote(id, Priority::EMERGENCY);
                }
            }
            None => {}
        }
        self.settle(now);
    }

    /// Whether `channel`'s floor is decided on the uplink hub.
    pub fn is_uplink_channel(&self, channel: ChannelId) -> bool {
        self.is_uplink(channel)
    }

    /// The caller of `channel`'s emergency, if one is active here.
    pub fn emergency_caller(&self, channel: ChannelId) -> Option<Caller> {
        self.emergency.get(channel).copied().flatten()
    }

    /// The floor participant id of `port` on `channel` (a hosted channel's, or the uplink hub's
    /// id once it gave one).
    pub fn port_participant(&self, port: PortId, channel: ChannelId) -> Option<ParticipantId> {
        let m = self.local_index(port, channel)?;
        if self.is_uplink(channel) {
            return self.uplink_ids.iter().find(|(_, i)| *i == m).map(|(id, _)| *id);
        }
        Some(ParticipantId(m as u64))
    }

    /// Whether `member` is one of `peer`'s members on `channel` (hosted channels).
    pub fn is_peer_member(&self, peer: PeerId, channel: ChannelId, member: ParticipantId) -> bool {
        matches!(self.members.get(member.0 as usize), Some(Member::Remote { peer: p, channel: c, .. }) if *p == peer && *c == channel)
    }

    /// Whether the media of a hosted channel can be seen where its arbiter is fed (see
    /// [`Arbiter::set_media_seen`]); ignored for other channels.
    pub fn set_media_seen(&mut self, now: Instant, channel: ChannelId, seen: bool) {
        if let Some(Some(a)) = self.arbiters.get_mut(channel) {
            a.set_media_seen(now, seen);
        }
        self.settle(now);
    }

    /// Members of a hosted channel: (id, name, priority), ports named by their port name.
    pub fn roster(&self, channel: ChannelId) -> Vec<(ParticipantId, String, Priority)> {
        self.members
            .iter()
            .filter_map(|(i, m)| match m {
                Member::Local { port, channel: c, .. } if *c == channel => {
                    Some((ParticipantId(i as u64), self.ports[*port].name.clone(), self.ports[*port].priority))
                }
                Member::Remote { channel: c, name, priority, .. } if *c == channel => {
                    Some((ParticipantId(i as u64), name.clone(), *priority))
                }
                _ => None,
            })
            .collect()
    }

    /// The display name of a talker.
    pub fn talker_name(&self, talker: Talker) -> Option<String> {
        match talker {
            Talker::Port(p) => self.ports.get(p).map(|s| s.name.clone()),
            Talker::Remote(id) => match self.members.get(id.0 as usize) {
                Some(Member::Remote { name, .. }) => Some(name.clone()),
                _ => None,
            },
            Talker::Patch(p) => self.patches.get(p)?.map(|_| format!("patch {p}")),
        }
    }

    // ---- edge side: channels hosted on the uplink ----

    /// The uplink is up: the hub's participant id for each of our (port, channel) members on
    /// uplink channels. Participants restart with those ids; a COR still open asks again.
    pub fn uplink_up(&mut self, now: Instant, ids: &[(PortId, ChannelId, ParticipantId)]) {
        self.reset_uplink_state(now);
        for &(port, channel, id) in ids {
            let Some(m) = self.local_index(port, channel) else { continue };
            let Some(Member::Local { participant, .. }) = self.members.get_mut(m) else { continue };
            let pressed = participant.is_pressed();
            *participant = Participant::new(id, participant_config(&self.ports[port]));
            if pressed {
                participant.press(now);
            }
            self.uplink_ids.push((id, m));
        }
        self.settle(now);
    }

    /// The uplink is down: nobody holds its channels as far as we know, so radios unkey; our
    /// participants stop talking and forget their requests.
    pub fn uplink_down(&mut self, now: Instant) {
        self.reset_uplink_state(now);
        self.settle(now);
    }

    fn reset_uplink_state(&mut self, now: Instant) {
        self.uplink_ids.clear();
        for channel in 0..self.hosts.len() {
            if self.is_uplink(channel) {
                if self.uplink_holders[channel].is_some() {
                    self.ending[channel] = Some(EndCause::LinkLost);
                }
                self.uplink_holders[channel] = None;
            }
        }
        for m in self.members.ids() {
            if let Some(Member::Local { port, channel, participant }) = self.members.get_mut(m) {
                if matches!(self.hosts[*channel], ChannelHost::Uplink) {
                    if participant.may_send_media() {
                        self.outputs.push_back(RouterOutput::Talk { port: *port, channel: *channel, on: false });
                    }
                    let pressed = participant.is_pressed();
                    // Ids are the hub's; until it gives new ones, park them out of its range.
                    *participant =
                        Participant::new(ParticipantId(u64::MAX - m as u64), participant_config(&self.ports[*port]));
                    if pressed {
                        // Remember the press without sending anything: the uplink is down.
                        participant.press(now);
                        while participant.poll_transmit().is_some() {}
                    }
                }
            }
        }
    }

    /// A floor message from the uplink hub for one of our members (`member`) or for everyone
    /// on the channel (`None`).
    pub fn from_uplink(&mut self, now: Instant, channel: ChannelId, member: Option<ParticipantId>, msg: ToParticipant) {
        if !self.is_uplink(channel) {
            return;
        }
        match msg {
            ToParticipant::Taken { holder, .. } => self.uplink_holders[channel] = Some(holder),
            ToParticipant::Idle => self.uplink_holders[channel] = None,
            ToParticipant::Revoke { cause } => {
                self.ending[channel] = Some(match cause {
                    RevokeCause::Preempted { .. } => EndCause::Preempted,
                    RevokeCause::MaxTalkTime => EndCause::Tot,
                    RevokeCause::NoMedia => EndCause::NoMedia,
                })
            }
            _ => {}
        }
        for m in self.members.ids() {
            let Some(Member::Local { channel: c, participant, .. }) = self.members.get_mut(m) else { continue };
            let addressed = match member {
                Some(id) => participant.id() == id,
                None => *c == channel,
            };
            if addressed {
                participant.handle_message(now, msg);
            }
        }
        self.settle(now);
    }

    // ---- timers and outputs ----

    pub fn handle_timeout(&mut self, now: Instant) {
        for a in self.arbiters.iter_mut().flatten() {
            if a.poll_timeout().is_some_and(|t| t <= now) {
                a.handle_timeout(now);
            }
        }
        for m in self.members.values_mut() {
            if let Some(participant) = m.participant() {
                if participant.poll_timeout().is_some_and(|t| t <= now) {
                    participant.handle_timeout(now);
                }
            }
        }
        self.settle(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let arbiters = self.arbiters.iter().flatten().filter_map(Arbiter::poll_timeout);
        let members = self.members.values().filter_map(|m| match m {
            Member::Local { participant, .. } | Member::Patch { participant, .. } => participant.poll_timeout(),
            Member::Remote { .. } => None,
        });
        arbiters.chain(members).min()
    }

    pub fn poll_output(&mut self) -> Option<RouterOutput> {
        self.outputs.pop_front()
    }

    /// Ports that are members of a channel.
    pub fn members(&self, channel: ChannelId) -> impl Iterator<Item = PortId> + '_ {
        self.members.values().filter_map(move |m| match m {
            Member::Local { port, channel: c, .. } if *c == channel => Some(*port),
            _ => None,
        })
    }

    /// The floor holder of a hosted channel as its arbiter knows it.
    pub fn holder_participant(&self, channel: ChannelId) -> Option<(ParticipantId, Priority)> {
        self.arbiters.get(channel)?.as_ref()?.holder()
    }

    /// Current talker of a channel.
    pub fn holder(&self, channel: ChannelId) -> Option<Talker> {
        match self.hosts.get(channel)? {
            ChannelHost::Local(_) => {
                let (id, _) = self.arbiters[channel].as_ref()?.holder()?;
                match self.members.get(id.0 as usize)? {
                    Member::Local { port, .. } => Some(Talker::Port(*port)),
                    Member::Remote { .. } => Some(Talker::Remote(id)),
                    Member::Patch { patch, .. } => Some(Talker::Patch(*patch)),
                }
            }
            ChannelHost::Uplink => {
                let id = self.uplink_holders[channel]?;
                match self.uplink_ids.iter().find(|(hub_id, _)| *hub_id == id) {
                    Some((_, m)) => match self.members.get(*m) {
                        Some(Member::Local { port, .. }) => Some(Talker::Port(*port)),
                        _ => Some(Talker::Remote(id)),
                    },
                    None => Some(Talker::Remote(id)),
                }
            }
        }
    }

    /// Deliver messages both ways until quiet, then derive TX requests and floor changes.
    fn settle(&mut self, now: Instant) {
        let batch = self.outputs.len();
        loop {
            let mut moved = self.sync_patches(now);
            for m in self.members.ids() {
                let Some(member) = self.members.get_mut(m) else { continue };
                let channel = member.channel();
                let Some(participant) = member.participant() else { continue };
                while let Some(msg) = participant.poll_transmit() {
                    moved = true;
                    match self.arbiters[channel].as_mut() {
                        Some(a) => a.handle_message(now, ParticipantId(m as u64), msg),
                        None => {
                            // Uplink channel: to the hub, under the id it gave us (if it did).
                            if let Some((id, _)) = self.uplink_ids.iter().find(|(_, i)| *i == m) {
                                self.outputs.push_back(RouterOutput::ToUplink { member: *id, msg });
                            }
                        }
                    }
                }
            }
            for channel in 0..self.arbiters.len() {
                let Some(arbiter) = self.arbiters[channel].as_mut() else { continue };
                let mut outs = Vec::new();
                while let Some(out) = arbiter.poll_output() {
                    outs.push(out);
                }
                for out in outs {
                    moved = true;
                    if let ToParticipant::Revoke { cause } = out.msg {
                        self.ending[channel] = Some(match cause {
                            RevokeCause::Preempted { .. } => EndCause::Preempted,
                            RevokeCause::MaxTalkTime => EndCause::Tot,
                            RevokeCause::NoMedia => EndCause::NoMedia,
                        });
                    }
                    self.deliver_hosted(now, channel, out.to, out.msg);
                }
            }
            if !moved {
                break;
            }
        }
        self.collect_events();
        self.derive_levels(batch);
    }

    /// An arbiter's message on a hosted channel: to local participants in-process, to remote
    /// peers as outputs (a broadcast once per peer).
    fn deliver_hosted(&mut self, now: Instant, channel: ChannelId, to: Recipient, msg: ToParticipant) {
        let mut peers_told: Vec<PeerId> = Vec::new();
        for m in self.members.ids() {
            let addressed = match to {
                Recipient::One(id) => id.0 as usize == m,
                Recipient::All => self.members.get(m).is_some_and(|x| x.channel() == channel),
            };
            if !addressed {
                continue;
            }
            match self.members.get_mut(m) {
                Some(Member::Local { participant, .. } | Member::Patch { participant, .. }) => {
                    participant.handle_message(now, msg)
                }
                Some(Member::Remote { peer, .. }) => {
                    let peer = *peer;
                    match to {
                        Recipient::One(id) => {
                            self.outputs.push_back(RouterOutput::ToPeer { peer, channel, member: Some(id), msg })
                        }
                        Recipient::All if !peers_told.contains(&peer) => {
                            peers_told.push(peer);
                            self.outputs.push_back(RouterOutput::ToPeer { peer, channel, member: None, msg });
                        }
                        Recipient::All => {}
                    }
                }
                None => {}
            }
        }
    }

    fn collect_events(&mut self) {
        for m in self.members.ids() {
            if let Some(Member::Patch { patch, channel, participant }) = self.members.get_mut(m) {
                let (patch, channel) = (*patch, *channel);
                let mut events = Vec::new();
                while let Some(event) = participant.poll_event() {
                    events.push(event);
                }
                for event in events {
                    let out = match event {
                        ParticipantEvent::StartMedia => RouterOutput::PatchCarry { patch, channel, on: true },
                        ParticipantEvent::StopMedia => RouterOutput::PatchCarry { patch, channel, on: false },
                        ParticipantEvent::BusyIndication(_) => {
                            RouterOutput::PatchBusy { patch, channel, holder: self.holder(channel) }
                        }
                        _ => continue,
                    };
                    self.outputs.push_back(out);
                }
                continue;
            }
            let Some(Member::Local { port, channel, participant }) = self.members.get_mut(m) else { continue };
            let (port, channel) = (*port, *channel);
            let mut events = Vec::new();
            while let Some(event) = participant.poll_event() {
                events.push(event);
            }
            for event in events {
                let out = match event {
                    ParticipantEvent::StartMedia => RouterOutput::Talk { port, channel, on: true },
                    ParticipantEvent::StopMedia => RouterOutput::Talk { port, channel, on: false },
                    ParticipantEvent::BusyIndication(cause) => {
                        let holder = match cause {
                            DenyCause::Busy { .. } => self.holder(channel),
                            DenyCause::QueueFull => None,
                        };
                        RouterOutput::Busy { port, channel, holder }
                    }
                    ParticipantEvent::Revoked(cause) => RouterOutput::Revoked { port, channel, cause },
                    // While the uplink is down nothing was sent (the press is kept for when it
                    // is back): no answer is expected, so there is nothing to report.
                    ParticipantEvent::RequestTimedOut { .. }
                        if matches!(self.hosts[channel], ChannelHost::Uplink)
                            && !self.uplink_ids.iter().any(|&(_, i)| i == m) =>
                    {
                        continue
                    }
                    ParticipantEvent::RequestTimedOut { asking_again } => {
                        RouterOutput::Unanswered { port, channel, asking_again }
                    }
                    ParticipantEvent::Queued { .. }
                    | ParticipantEvent::FloorTaken { .. }
                    | ParticipantEvent::FloorIdle => continue,
                };
                self.outputs.push_back(out);
            }
        }
    }

    /// `batch`: where this settle's outputs start in the queue.
    fn derive_levels(&mut self, batch: usize) {
        for channel in 0..self.hosts.len() {
            let holder = self.holder(channel);
            // A holder revoked and granted again at once (a radio still receiving retakes an
            // idle floor) ends one transmission and starts another.
            let retaken = holder.is_some() && holder == self.holders[channel] && self.ending[channel].is_some();
            if holder != self.holders[channel] || retaken {
                let cause = self.ending[channel].take().unwrap_or(EndCause::Released);
                if let Some(talker) = self.holders[channel] {
                    self.outputs.push_back(RouterOutput::Ended { channel, talker, cause });
                }
                self.holders[channel] = holder;
                self.outputs.push_back(RouterOutput::Floor { channel, holder });
            }
        }
        let mut air = vec![Vec::new(); self.hosts.len()];
        for port in 0..self.ports.len() {
            if self.ports[port].kind != PortKind::Radio {
                continue;
            }
            let carries = |c: &ChannelId| !self.muted[*c] && self.holders[*c].is_some_and(|h| h != Talker::Port(port));
            let carried: Vec<ChannelId> = self.ports[port].channels.iter().copied().filter(carries).collect();
            let on = !carried.is_empty();
            if on != self.tx_on[port] {
                self.tx_on[port] = on;
                self.outputs.push_back(RouterOutput::TxRequest { port, on });
            }
            let report = self.radio_tx[port];
            let state = if report.keyed {
                AirState::OnAir
            } else {
                // Until the port says why, an open COR is the reason (simplex cannot key then).
                let receiving = self.members.values().any(|m| {
                    matches!(m, Member::Local { port: p, participant, .. } if *p == port && participant.is_pressed())
                });
                AirState::Waiting(report.blocked.unwrap_or(if receiving {
                    WaitReason::Receiving
                } else {
                    WaitReason::Keying
                }))
            };
            for c in carried {
                air[c].push((port, state));
            }
        }
        for (channel, radios) in air.into_iter().enumerate() {
            if radios != self.air[channel] {
                self.air[channel] = radios.clone();
                // Peers hear which radios wait before the floor messages that make them wait,
                // and an emptied list after them: a client never shows its talker on air for
                // an instant between `granted` and `air` (nor between `air` and `idle`).
                let first_floor_msg = || {
                    let mut this_batch = self.outputs.iter().enumerate().skip(batch);
                    this_batch.find(|(_, o)| matches!(o, RouterOutput::ToPeer { channel: c, .. } if *c == channel))
                };
                match first_floor_msg().map(|(i, _)| i).filter(|_| !radios.is_empty()) {
                    Some(i) => self.outputs.insert(i, RouterOutput::Air { channel, radios }),
                    None => self.outputs.push_back(RouterOutput::Air { channel, radios }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
