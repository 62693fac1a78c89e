//! A field box on a Janus fleet (`[uplink] kind = "janus"` with `floor_hub`): media through
//! Janus ([`JanusHandle`]), floor through the floor host over MQTT ([`FloorEdgeHandle`]), seen
//! by the channel router as one uplink.
//!
//! [`EdgeJoin`] (sans-IO) merges the two event streams into the router's [`UplinkEvent`]s:
//! - `Up` only while both are up (the floor host's member ids, once Janus has published every
//!   channel), one `Down` when either goes, so radios stay unkeyed while half the link is gone;
//! - the floor host's channel-wide messages (`Taken`/`Idle`) that arrive while Janus is down
//!   are kept (the latest per channel) and replayed after `Up`, so a box whose Janus session
//!   came back still knows who talks;
//! - Janus delivers each publisher (feed) of a room with its own RTP numbering. The radio has
//!   one jitter buffer per port, so a channel's feeds become one stream: one feed at a time is
//!   passed (the one talking; another feed takes over once it has been silent for
//!   [`FEED_HOLD`]) and re-stamped with [`Restamper`] so the numbering continues across talkers.
//!   Only the floor holder is unmuted by the host's `moderate`, so normally one feed talks; the
//!   hold covers the moment before moderation lands. A jitter buffer per feed would only pay
//!   off if several feeds had to be mixed, which floor control rules out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{JanusEvent, JanusHandle, JanusOptions};
use crate::core::floor::{ParticipantId, ToArbiter, ToParticipant};
use crate::core::restamp::Restamper;
use crate::net::floor_mqtt::{FloorEdgeHandle, FloorEdgeOptions};
use crate::net::peer_queue;
use crate::net::{MemberRequest, UplinkEvent};
use crate::pipeline::MediaPacket;

/// A channel's current feed keeps the channel this long after its last packet; another feed's
/// packets are dropped meanwhile.
pub const FEED_HOLD: Duration = Duration::from_millis(300);

/// What [`EdgeJoin`] asks of its driver.
#[derive(Debug, Clone)]
pub enum EdgeOutput {
    /// To the channel router.
    Event(UplinkEvent),
    /// Tell the floor host our publisher id in a channel's room (None: not published).
    SetFeed { channel: String, feed: Option<u64> },
    /// Janus is up again: ask it to send on every channel the router still talks on.
    ReassertSending,
}

struct ChannelMedia {
    /// The feed being passed and when its last packet came.
    current: Option<(u64, Instant)>,
    out: Restamper<u64>,
}

/// Merges the Janus session's and the floor client's events (pure: `now` comes in).
pub struct EdgeJoin {
    janus: Option<Vec<(String, u64)>>,
    floor: Option<Vec<(MemberRequest, ParticipantId)>>,
    reported_up: bool,
    /// Latest channel-wide floor message per channel, for replay after `Up`.
    broadcasts: BTreeMap<String, UplinkEvent>,
    media: HashMap<String, ChannelMedia>,
    first_stamp: (u16, u32),
    outputs: Vec<EdgeOutput>,
}

impl EdgeJoin {
    /// `first_stamp`: where each channel's outgoing numbering starts (random in production).
    pub fn new(first_stamp: (u16, u32)) -> Self {
        Self {
            janus: None,
            floor: None,
            reported_up: false,
            broadcasts: BTreeMap::new(),
            media: HashMap::new(),
            first_stamp,
            outputs: Vec::new(),
        }
    }

    pub fn is_up(&self) -> bool {
        self.reported_up
    }

    pub fn poll_output(&mut self) -> Option<EdgeOutput> {
        (!self.outputs.is_empty()).then(|| self.outputs.remove(0))
    }

    pub fn janus(&mut self, now: Instant, event: JanusEvent) {
        match event {
            JanusEvent::Up { channels } => {
                for (channel, feed) in &channels {
                    self.outputs.push(EdgeOutput::SetFeed { channel: channel.clone(), feed: Some(*feed) });
                }
                self.janus = Some(channels);
                self.outputs.push(EdgeOutput::ReassertSending);
                self.maybe_up();
            }
            JanusEvent::Down { reason } => {
                if let Some(channels) = self.janus.take() {
                    for (channel, _) in channels {
                        self.outputs.push(EdgeOutput::SetFeed { channel, feed: None });
                    }
                }
                self.down(format!("Janus: {reason}"));
            }
            JanusEvent::RoomMissing { channel, room } => {
                let reason = format!(
                    "Janus room {room} of channel {channel} does not exist yet: waiting for the floor host to create it"
                );
                self.outputs.push(EdgeOutput::Event(UplinkEvent::Waiting { reason }));
            }
            JanusEvent::RoomRefused { channel, fault, reason } => {
                // The session's `Down` came first; should it not have, the link is down now.
                self.down(format!("Janus: room refused: {reason}"));
                self.outputs.push(EdgeOutput::Event(UplinkEvent::Refused { channel, fault, reason }));
            }
            JanusEvent::Media { channel, feed, packet } if self.reported_up => {
                if let Some(packet) = self.restamp(now, &channel, feed, packet) {
                    self.outputs.push(EdgeOutput::Event(UplinkEvent::Media { channel, packet }));
                }
            }
            _ => {}
        }
    }

    pub fn floor(&mut self, event: UplinkEvent) {
        match event {
            UplinkEvent::Up { members } => {
                self.floor = Some(members);
                self.maybe_up();
            }
            UplinkEvent::Down { reason } => {
                self.floor = None;
                self.broadcasts.clear();
                self.down(format!("floor host: {reason}"));
            }
            UplinkEvent::Floor { ref channel, member: None, ref msg, .. }
                if matches!(msg, ToParticipant::Taken { .. } | ToParticipant::Idle) =>
            {
                self.broadcasts.insert(channel.clone(), event.clone());
                if self.reported_up {
                    self.outputs.push(EdgeOutput::Event(event));
                }
            }
            // Answers to our members: while down the router has none (it asks again after Up).
            UplinkEvent::Floor { .. } if self.reported_up => self.outputs.push(EdgeOutput::Event(event)),
            UplinkEvent::Floor { .. } => debug!("floor message while the Janus side is down: dropped"),
            UplinkEvent::Media { .. }
            | UplinkEvent::Waiting { .. }
            | UplinkEvent::Refused { .. }
            | UplinkEvent::Untrusted { .. }
            // Emergencies are not carried over the floor-over-MQTT link (docs/signaling.md).
            | UplinkEvent::Emergency(_) => {}
        }
    }

    fn maybe_up(&mut self) {
        let (Some(_), Some(members)) = (&self.janus, &self.floor) else { return };
        if self.reported_up {
            return;
        }
        self.reported_up = true;
        self.outputs.push(EdgeOutput::Event(UplinkEvent::Up { members: members.clone() }));
        for event in self.broadcasts.values() {
            self.outputs.push(EdgeOutput::Event(event.clone()));
        }
    }

    fn down(&mut self, reason: String) {
        // Every talker's stream restarts after the link is back.
        for m in self.media.values_mut() {
            m.current = None;
        }
        if std::mem::take(&mut self.reported_up) {
            self.outputs.push(EdgeOutput::Event(UplinkEvent::Down { reason }));
        }
    }

    fn restamp(&mut self, now: Instant, channel: &str, feed: u64, packet: MediaPacket) -> Option<MediaPacket> {
        let (seq, ts) = self.first_stamp;
        let m = self
            .media
            .entry(channel.to_owned())
            .or_insert_with(|| ChannelMedia { current: None, out: Restamper::new(seq, ts) });
        if let Some((current, last)) = m.current {
            if current != feed && now.saturating_duration_since(last) < FEED_HOLD {
                return None;
            }
        }
        m.current = Some((feed, now));
        // A new feed starts a talk-spurt whatever its own numbering says.
        let stamp = m.out.stamp_from(now, feed, &packet)?;
        Some(MediaPacket {
            seq: stamp.seq as u16,
            timestamp: stamp.timestamp,
            marker: stamp.marker,
            payload: packet.payload,
        })
    }
}

/// The router's side of a Janus edge: floor to the floor host, media and sending to Janus.
#[derive(Debug, Clone)]
pub struct JanusEdge {
    janus: JanusHandle,
    floor: FloorEdgeHandle,
    /// Channels the router talks on (sending wanted), re-asserted after every Janus `Up`.
    talking: Arc<Mutex<BTreeSet<String>>>,
}

impl JanusEdge {
    pub fn floor(&self, member: ParticipantId, msg: ToArbiter) {
        self.floor.floor(member, msg);
    }

    pub fn media(&self, channel: &str, packet: MediaPacket) {
        let _ = self.janus.media(channel, packet);
    }

    /// A port here talks on `channel` (on), or none does any more (off).
    pub fn talking(&self, channel: &str, on: bool) {
        let mut talking = self.talking.lock().unwrap_or_else(|e| e.into_inner());
        let changed = if on { talking.insert(channel.to_owned()) } else { talking.remove(channel) };
        if changed {
            info!(%channel, on, "Janus sending");
        }
        // While down nothing is sent; the next `Up` re-asserts it.
        let _ = self.janus.set_sending(channel, on);
    }

    /// Hear (on) or mute a channel's room: Janus stops relaying it, no renegotiation.
    pub fn listen(&self, channel: &str, on: bool) {
        if self.janus.listen(channel, on) {
            info!(%channel, on, "Janus relays the channel's room to us");
        } else {
            warn!(%channel, on, "Janus listen not queued");
        }
    }
}

/// Start the Janus session and the floor client and merge their events into `events`; runs
/// until `cancel`. Errors are setup problems (see [`crate::net::floor_mqtt::start_edge`]).
pub fn start_edge(
    janus: JanusOptions,
    floor: FloorEdgeOptions,
    events: mpsc::Sender<UplinkEvent>,
    cancel: CancellationToken,
) -> Result<JanusEdge, String> {
    let (floor_tx, floor_rx) = mpsc::channel(peer_queue::INBOX);
    let floor = crate::net::floor_mqtt::start_edge(floor, floor_tx, cancel.clone())?;
    let (janus_tx, janus_rx) = mpsc::channel(peer_queue::INBOX);
    info!(url = %janus.url, channels = janus.channels.len(), "Janus uplink starting");
    let janus = super::start(janus, janus_tx, cancel.clone());
    let edge = JanusEdge { janus, floor, talking: Arc::default() };
    tokio::spawn(merge(edge.clone(), janus_rx, floor_rx, events, cancel));
    Ok(edge)
}

async fn merge(
    edge: JanusEdge,
    mut janus: mpsc::Receiver<JanusEvent>,
    mut floor: mpsc::Receiver<UplinkEvent>,
    events: mpsc::Sender<UplinkEvent>,
    cancel: CancellationToken,
) {
    let mut join = EdgeJoin::new(crate::net::rtc::random_start());
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            Some(event) = janus.recv() => {
                log_janus(&event);
                join.janus(Instant::now(), event);
            }
            Some(event) = floor.recv() => {
                match &event {
                    UplinkEvent::Up { members } => info!(members = members.len(), "floor host joined"),
                    UplinkEvent::Down { reason } => warn!(%reason, "floor host lost"),
                    _ => {}
                }
                join.floor(event);
            }
            else => return,
        }
        while let Some(out) = join.poll_output() {
            match out {
                EdgeOutput::Event(event) => {
                    if peer_queue::deliver(&events, event).await.is_err() {
                        return;
                    }
                }
                EdgeOutput::SetFeed { channel, feed } => edge.floor.set_feed(&channel, feed),
                EdgeOutput::ReassertSending => {
                    let talking = edge.talking.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    for channel in talking {
                        info!(%channel, "Janus back: sending again");
                        let _ = edge.janus.set_sending(&channel, true);
                    }
                }
            }
        }
    }
}

fn log_janus(event: &JanusEvent) {
    match event {
        JanusEvent::Up { channels } => info!(channels = channels.len(), "Janus up: every channel published"),
        JanusEvent::Down { reason } => warn!(%reason, "Janus down; rebuilding"),
        JanusEvent::Sending { channel, on } => info!(%channel, on, "Janus relays our stream"),
        JanusEvent::Roster { channel, publishers } => debug!(%channel, ?publishers, "Janus room roster"),
        // The client logs moderation itself.
        JanusEvent::Moderated { .. }
        | JanusEvent::FeedModerated { .. }
        | JanusEvent::ModerateDone { .. }
        | JanusEvent::Media { .. }
        | JanusEvent::RoomMissing { .. }
        | JanusEvent::RoomRefused { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::floor::Priority;

    fn member(key: &str) -> (MemberRequest, ParticipantId) {
        (MemberRequest { key: key.into(), channel: "ops".into(), priority: Priority(0) }, ParticipantId(7))
    }

    fn drain(j: &mut EdgeJoin) -> Vec<EdgeOutput> {
        std::iter::from_fn(|| j.poll_output()).collect()
    }

    fn events(j: &mut EdgeJoin) -> Vec<String> {
        drain(j)
            .into_iter()
            .filter_map(|o| match o {
                EdgeOutput::Event(UplinkEvent::Up { .. }) => Some("up".to_string()),
                EdgeOutput::Event(UplinkEvent::Down { reason }) => Some(format!("down {reason}")),
                EdgeOutput::Event(UplinkEvent::Floor { msg, member, .. }) => Some(format!("floor {msg:?} {member:?}")),
                EdgeOutput::Event(UplinkEvent::Media { packet, .. }) => Some(format!("media {}", packet.seq)),
                _ => None,
            })
            .collect()
    }

    fn taken() -> UplinkEvent {
        UplinkEvent::Floor {
            channel: "ops".into(),
            member: None,
            msg: ToParticipant::Taken { holder: ParticipantId(3), priority: Priority(0) },
            holder_name: Some("radio1@edge-a".into()),
        }
    }

    fn janus_up() -> JanusEvent {
        JanusEvent::Up { channels: vec![("ops".into(), 42)] }
    }

    #[test]
    fn up_needs_both_and_down_needs_either() {
        let now = Instant::now();
        let mut j = EdgeJoin::new((1000, 0));
        j.floor(UplinkEvent::Up { members: vec![member("radio1")] });
        assert_eq!(events(&mut j), Vec::<String>::new());
        j.janus(now, janus_up());
        let out = drain(&mut j);
        assert!(matches!(&out[0], EdgeOutput::SetFeed { channel, feed: Some(42) } if channel == "ops"));
        assert!(matches!(out[1], EdgeOutput::ReassertSending));
        assert!(matches!(&out[2], EdgeOutput::Event(UplinkEvent::Up { members }) if members[0].1 == ParticipantId(7)));
        assert!(j.is_up());

        j.janus(now, JanusEvent::Down { reason: "socket closed".into() });
        let out = drain(&mut j);
        assert!(matches!(&out[0], EdgeOutput::SetFeed { channel, feed: None } if channel == "ops"));
        assert!(matches!(&out[1], EdgeOutput::Event(UplinkEvent::Down { reason }) if reason == "Janus: socket closed"));
        // The floor host going too while already down says nothing more.
        j.floor(UplinkEvent::Down { reason: "broker".into() });
        assert_eq!(events(&mut j), Vec::<String>::new());
        j.janus(now, janus_up());
        assert_eq!(events(&mut j), Vec::<String>::new(), "no Up without the floor host");
        j.floor(UplinkEvent::Up { members: vec![member("radio1")] });
        assert_eq!(events(&mut j), ["up"]);
        j.floor(UplinkEvent::Down { reason: "host offline".into() });
        assert_eq!(events(&mut j), ["down floor host: host offline"]);
    }

    #[test]
    fn who_talks_is_replayed_after_janus_comes_back() {
        let now = Instant::now();
        let mut j = EdgeJoin::new((1000, 0));
        j.floor(UplinkEvent::Up { members: vec![member("radio1")] });
        j.janus(now, janus_up());
        drain(&mut j);
        j.janus(now, JanusEvent::Down { reason: "killed".into() });
        drain(&mut j);
        j.floor(taken());
        // A grant for our member while down is dropped: the router asks again after Up.
        j.floor(UplinkEvent::Floor {
            channel: "ops".into(),
            member: Some(ParticipantId(7)),
            msg: ToParticipant::Granted,
            holder_name: None,
        });
        assert_eq!(events(&mut j), Vec::<String>::new());
        j.janus(now, janus_up());
        assert_eq!(events(&mut j), ["up", "floor Taken { holder: ParticipantId(3), priority: Priority(0) } None"]);
        // Idle replaces Taken; a lost floor host forgets both.
        j.floor(UplinkEvent::Floor {
            channel: "ops".into(),
            member: None,
            msg: ToParticipant::Idle,
            holder_name: None,
        });
        assert_eq!(events(&mut j), ["floor Idle None"]);
        j.floor(UplinkEvent::Down { reason: "x".into() });
        j.floor(UplinkEvent::Up { members: vec![member("radio1")] });
        assert_eq!(events(&mut j), ["down floor host: x", "up"]);
    }

    fn packet(seq: u16, timestamp: u32) -> MediaPacket {
        // One 20 ms Opus CELT frame TOC (config 31, mono, one frame) and a byte.
        MediaPacket { seq, timestamp, marker: false, payload: vec![0xf8, 0] }
    }

    fn media(j: &mut EdgeJoin, now: Instant, feed: u64, p: MediaPacket) -> Option<MediaPacket> {
        j.janus(now, JanusEvent::Media { channel: "ops".into(), feed, packet: p });
        drain(j).into_iter().find_map(|o| match o {
            EdgeOutput::Event(UplinkEvent::Media { packet, .. }) => Some(packet),
            _ => None,
        })
    }

    #[test]
    fn feeds_become_one_stream_one_talker_at_a_time() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut j = EdgeJoin::new((1000, 5000));
        assert_eq!(media(&mut j, t0, 1, packet(10, 0)), None, "no media before Up");
        j.floor(UplinkEvent::Up { members: vec![member("radio1")] });
        j.janus(t0, janus_up());
        drain(&mut j);

        let a = media(&mut j, ms(0), 1, packet(10, 100)).unwrap();
        assert_eq!((a.seq, a.timestamp, a.marker), (1000, 5000, true));
        let a = media(&mut j, ms(20), 1, packet(11, 1060)).unwrap();
        assert_eq!((a.seq, a.timestamp, a.marker), (1001, 5960, false));
        // Feed 2 talks over feed 1 (before moderation landed): held back.
        assert_eq!(media(&mut j, ms(30), 2, packet(500, 77_000)), None);
        let a = media(&mut j, ms(40), 1, packet(12, 2020)).unwrap();
        assert_eq!(a.seq, 1002);
        // Feed 1 silent for longer than the hold: feed 2 takes over, numbering continues.
        let b = media(&mut j, ms(40) + FEED_HOLD, 2, packet(600, 90_000)).unwrap();
        assert_eq!(b.seq, 1003);
        assert!(b.marker);
        assert!(b.timestamp.wrapping_sub(a.timestamp) >= 960 * 15, "timestamp follows the pause: {b:?}");
        let b2 = media(&mut j, ms(60) + FEED_HOLD, 2, packet(601, 90_960)).unwrap();
        assert_eq!((b2.seq, b2.timestamp.wrapping_sub(b.timestamp), b2.marker), (1004, 960, false));
    }
}
