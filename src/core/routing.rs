//! Channel routing for the ports of one box: which port talks on which channel, and which
//! radios must transmit. Sans-IO, like every core.
//!
//! Each channel has a floor [`Arbiter`]; each (port, channel) membership has a floor
//! [`Participant`]. Messages between them are delivered in-process, in order, until nothing
//! moves. The router then derives, per radio port, whether its transmitter is wanted: a radio
//! transmits while someone *else* holds the floor of its channel.

use std::collections::VecDeque;
use std::time::Instant;

use super::floor::{
    Arbiter, ArbiterConfig, DenyCause, Participant, ParticipantConfig, ParticipantEvent, ParticipantId,
    Priority, Recipient, RevokeCause,
};

/// Index of a port in the box's port list.
pub type PortId = usize;
/// Index of a channel in the router's channel list.
pub type ChannelId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// Keyed by the channel; its COR asks for the floor.
    Radio,
    /// A desk or console: asks for the floor with its PTT, never keyed by the channel.
    Desk,
}

#[derive(Debug, Clone)]
pub struct PortSpec {
    pub kind: PortKind,
    pub channels: Vec<ChannelId>,
    pub priority: Priority,
}

/// What the drivers must do or report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterOutput {
    /// Key (on) or unkey a radio port's transmitter for its channel's talker.
    TxRequest { port: PortId, on: bool },
    /// The port may (on) or may no longer send its audio into the channel.
    Talk { port: PortId, channel: ChannelId, on: bool },
    /// The port asked for the floor and was refused (busy tone/LED).
    Busy { port: PortId, channel: ChannelId, holder: Option<PortId> },
    /// The port lost the floor it held.
    Revoked { port: PortId, channel: ChannelId, cause: RevokeCause },
    /// The channel's talker changed (None: idle).
    Floor { channel: ChannelId, holder: Option<PortId> },
}

struct Member {
    port: PortId,
    channel: ChannelId,
    participant: Participant,
}

pub struct Router {
    arbiters: Vec<Arbiter>,
    members: Vec<Member>,
    ports: Vec<PortSpec>,
    /// Last TX request sent to each port (radios only), so outputs are edges.
    tx_on: Vec<bool>,
    /// Last announced holder per channel.
    holders: Vec<Option<PortId>>,
    outputs: VecDeque<RouterOutput>,
}

impl Router {
    pub fn new(channels: Vec<ArbiterConfig>, ports: Vec<PortSpec>) -> Self {
        let mut members = Vec::new();
        for (port, spec) in ports.iter().enumerate() {
            for &channel in &spec.channels {
                let id = ParticipantId(members.len() as u64);
                let config = ParticipantConfig { priority: spec.priority, ..Default::default() };
                members.push(Member { port, channel, participant: Participant::new(id, config) });
            }
        }
        Self {
            holders: vec![None; channels.len()],
            arbiters: channels.into_iter().map(Arbiter::new).collect(),
            tx_on: vec![false; ports.len()],
            ports,
            members,
            outputs: VecDeque::new(),
        }
    }

    fn member_index(&self, port: PortId, channel: ChannelId) -> Option<usize> {
        self.members.iter().position(|m| m.port == port && m.channel == channel)
    }

    /// COR opened or PTT pressed on `port` for `channel`. Unknown pairs are ignored.
    pub fn press(&mut self, now: Instant, port: PortId, channel: ChannelId) {
        if let Some(m) = self.member_index(port, channel) {
            self.members[m].participant.press(now);
            self.settle(now);
        }
    }

    /// COR closed or PTT released.
    pub fn unpress(&mut self, now: Instant, port: PortId, channel: ChannelId) {
        if let Some(m) = self.member_index(port, channel) {
            self.members[m].participant.unpress(now);
            self.settle(now);
        }
    }

    /// Audio from `port` reached `channel`: keeps its floor from the no-media timeout.
    pub fn media(&mut self, now: Instant, port: PortId, channel: ChannelId) {
        if let Some(m) = self.member_index(port, channel) {
            self.arbiters[channel].media(now, ParticipantId(m as u64));
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for a in &mut self.arbiters {
            if a.poll_timeout().is_some_and(|t| t <= now) {
                a.handle_timeout(now);
            }
        }
        for m in &mut self.members {
            if m.participant.poll_timeout().is_some_and(|t| t <= now) {
                m.participant.handle_timeout(now);
            }
        }
        self.settle(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let arbiters = self.arbiters.iter().filter_map(Arbiter::poll_timeout);
        let members = self.members.iter().filter_map(|m| m.participant.poll_timeout());
        arbiters.chain(members).min()
    }

    pub fn poll_output(&mut self) -> Option<RouterOutput> {
        self.outputs.pop_front()
    }

    /// Ports that are members of a channel.
    pub fn members(&self, channel: ChannelId) -> impl Iterator<Item = PortId> + '_ {
        self.members.iter().filter(move |m| m.channel == channel).map(|m| m.port)
    }

    /// Current talker of a channel.
    pub fn holder(&self, channel: ChannelId) -> Option<PortId> {
        self.arbiters.get(channel)?.holder().map(|(id, _)| self.members[id.0 as usize].port)
    }

    /// Deliver messages both ways until quiet, then derive TX requests and floor changes.
    fn settle(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            for m in 0..self.members.len() {
                while let Some(msg) = self.members[m].participant.poll_transmit() {
                    let channel = self.members[m].channel;
                    self.arbiters[channel].handle_message(now, ParticipantId(m as u64), msg);
                    moved = true;
                }
            }
            for channel in 0..self.arbiters.len() {
                while let Some(out) = self.arbiters[channel].poll_output() {
                    moved = true;
                    for m in 0..self.members.len() {
                        let addressed = match out.to {
                            Recipient::One(id) => id.0 as usize == m,
                            Recipient::All => self.members[m].channel == channel,
                        };
                        if addressed {
                            self.members[m].participant.handle_message(now, out.msg);
                        }
                    }
                }
            }
            if !moved {
                break;
            }
        }
        self.collect_events();
        self.derive_levels();
    }

    fn collect_events(&mut self) {
        for m in 0..self.members.len() {
            let (port, channel) = (self.members[m].port, self.members[m].channel);
            while let Some(event) = self.members[m].participant.poll_event() {
                let out = match event {
                    ParticipantEvent::StartMedia => RouterOutput::Talk { port, channel, on: true },
                    ParticipantEvent::StopMedia => RouterOutput::Talk { port, channel, on: false },
                    ParticipantEvent::BusyIndication(cause) => {
                        let holder = match cause {
                            DenyCause::Busy { holder } => self.members.get(holder.0 as usize).map(|h| h.port),
                            DenyCause::QueueFull => None,
                        };
                        RouterOutput::Busy { port, channel, holder }
                    }
                    ParticipantEvent::Revoked(cause) => RouterOutput::Revoked { port, channel, cause },
                    ParticipantEvent::Queued { .. }
                    | ParticipantEvent::RequestTimedOut
                    | ParticipantEvent::FloorTaken { .. }
                    | ParticipantEvent::FloorIdle => continue,
                };
                self.outputs.push_back(out);
            }
        }
    }

    fn derive_levels(&mut self) {
        for channel in 0..self.arbiters.len() {
            let holder = self.holder(channel);
            if holder != self.holders[channel] {
                self.holders[channel] = holder;
                self.outputs.push_back(RouterOutput::Floor { channel, holder });
            }
        }
        for port in 0..self.ports.len() {
            if self.ports[port].kind != PortKind::Radio {
                continue;
            }
            let on = self.ports[port].channels.iter().any(|&c| self.holders[c].is_some_and(|h| h != port));
            if on != self.tx_on[port] {
                self.tx_on[port] = on;
                self.outputs.push_back(RouterOutput::TxRequest { port, on });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn radio(channel: ChannelId) -> PortSpec {
        PortSpec { kind: PortKind::Radio, channels: vec![channel], priority: Priority::NORMAL }
    }

    fn drain(r: &mut Router) -> Vec<RouterOutput> {
        std::iter::from_fn(|| r.poll_output()).collect()
    }

    #[test]
    fn cor_on_one_radio_keys_the_others_on_its_channel_only() {
        let t = Instant::now();
        let mut r = Router::new(vec![ArbiterConfig::default(); 2], vec![radio(0), radio(0), radio(1)]);
        r.press(t, 0, 0);
        let out = drain(&mut r);
        assert!(out.contains(&RouterOutput::Talk { port: 0, channel: 0, on: true }));
        assert!(out.contains(&RouterOutput::Floor { channel: 0, holder: Some(0) }));
        assert!(out.contains(&RouterOutput::TxRequest { port: 1, on: true }));
        assert!(!out.iter().any(|o| matches!(o, RouterOutput::TxRequest { port: 0 | 2, .. })));
        r.unpress(t, 0, 0);
        let out = drain(&mut r);
        assert!(out.contains(&RouterOutput::TxRequest { port: 1, on: false }));
        assert!(out.contains(&RouterOutput::Floor { channel: 0, holder: None }));
    }

    #[test]
    fn second_talker_is_told_busy_and_keys_nothing_new() {
        let t = Instant::now();
        let mut r = Router::new(vec![ArbiterConfig::default()], vec![radio(0), radio(0)]);
        r.press(t, 0, 0);
        drain(&mut r);
        r.press(t, 1, 0);
        let out = drain(&mut r);
        assert_eq!(out, vec![RouterOutput::Busy { port: 1, channel: 0, holder: Some(0) }]);
        assert_eq!(r.holder(0), Some(0));
    }

    #[test]
    fn desk_with_dispatch_priority_preempts_a_radio_and_keys_it() {
        let t = Instant::now();
        let desk = PortSpec { kind: PortKind::Desk, channels: vec![0], priority: Priority::DISPATCH };
        let mut r = Router::new(vec![ArbiterConfig::default()], vec![radio(0), desk]);
        r.press(t, 0, 0);
        drain(&mut r);
        r.press(t, 1, 0);
        let out = drain(&mut r);
        assert!(out.contains(&RouterOutput::Talk { port: 0, channel: 0, on: false }));
        assert!(out.iter().any(|o| matches!(o, RouterOutput::Revoked { port: 0, channel: 0, .. })));
        assert!(out.contains(&RouterOutput::Talk { port: 1, channel: 0, on: true }));
        assert!(out.contains(&RouterOutput::TxRequest { port: 0, on: true }), "the radio now carries the desk");
    }

    #[test]
    fn max_talk_time_frees_the_floor_and_unkeys() {
        let t = Instant::now();
        let cfg = ArbiterConfig { max_talk: Duration::from_secs(30), no_media_timeout: Duration::from_secs(3600), ..Default::default() };
        let mut r = Router::new(vec![cfg], vec![radio(0), radio(0)]);
        r.press(t, 0, 0);
        drain(&mut r);
        let deadline = r.poll_timeout().unwrap();
        assert!(deadline <= t + Duration::from_secs(30));
        r.handle_timeout(t + Duration::from_secs(30));
        let out = drain(&mut r);
        assert!(out.contains(&RouterOutput::TxRequest { port: 1, on: false }), "{out:?}");
        assert_eq!(r.holder(0), None);
    }
}
