//! Network side of channels on the embedded default: the hub (signaling over HTTP/WebSocket,
//! media over WebRTC with str0m on one UDP port) and the uplink client an edge box uses to
//! join another roipd hub. Protocol: `docs/signaling.md`.
//!
//! The net layer authenticates peers and moves floor messages and Opus packets; it decides
//! nothing. Floor decisions are the channel router's (`crate::core::routing`), which talks to
//! the net layer only through the message types below.

pub mod addrs;
pub mod floor_mqtt;
pub mod hub;
mod ice_tcp;
pub mod janus;
pub mod peer_queue;
pub mod protocol;
mod reconnect;
mod rtc;
pub mod tls;
pub mod uplink;

pub use hub::{serve, turn_credentials, HubChannel, HubHandle, HubOptions, HubToken, IceServer, DEFAULT_MAX_SESSIONS};
pub use rtc::StreamStats;
pub use uplink::{start as start_uplink, UplinkHandle, UplinkOptions};

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use self::peer_queue::{PeerTx, Policy, Queued};

use crate::core::floor::{ParticipantId, Priority, ToArbiter, ToParticipant};
use crate::pipeline::MediaPacket;

/// Read buffer of every WebSocket (hub, uplink, Janus). tungstenite zero-fills the whole free
/// part of it (128 KiB by default) each time the socket is polled, even when nothing arrived:
/// with the uplink loop polling on every media packet and timer that was ~31 % of a talking
/// edge's instructions (issue 13). Signaling messages are small; a larger one still arrives
/// whole, in reads of this size.
pub(crate) const WS_READ_BUFFER_BYTES: usize = 4 * 1024;

/// Client WebSocket settings: a small read buffer and `max_message` for messages and frames.
pub(crate) fn ws_client_config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// A connected peer (browser console or edge box), unique for the life of the hub process.
pub type PeerId = u64;

/// One floor participant a peer asks for: `key` names it within the peer (an edge's port
/// name, "console" for a browser), on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRequest {
    pub key: String,
    pub channel: String,
    pub priority: Priority,
}

/// Hub sessions → channel router.
#[derive(Debug)]
pub enum HubEvent {
    /// An authenticated peer joins with these members (their channels already checked
    /// against its token). The router answers with one participant id per member, in order,
    /// or a reason to refuse. Messages for the peer go to `to_peer` from then on.
    Joined {
        peer: PeerId,
        name: String,
        members: Vec<MemberRequest>,
        to_peer: PeerTx<ToPeer>,
        reply: oneshot::Sender<Result<Vec<ParticipantId>, String>>,
    },
    /// A floor request or release from one of the peer's members.
    Floor { peer: PeerId, member: ParticipantId, msg: ToArbiter },
    /// An Opus packet the peer sent on a channel's track.
    Media { peer: PeerId, channel: String, packet: MediaPacket },
    /// The peer is gone (socket closed, ICE failed, timed out): its floor is freed.
    Left { peer: PeerId },
    /// Whether the sender can see the media of a hosted channel at all: a floor host whose
    /// own Janus link is down (false) cannot tell a silent talker from its own blindness, so
    /// the channel's no-media timer waits until it sees again (then a whole timeout of grace).
    MediaSeen { channel: String, seen: bool },
    /// An authenticated peer raises or acknowledges an emergency on a channel its token allows
    /// (checked by the session); `member`, if given, is one of its members (the router checks
    /// it is on that channel) and becomes the caller.
    Emergency { peer: PeerId, name: String, channel: String, member: Option<ParticipantId>, raise: bool },
}

/// The router's hub inbox ([`peer_queue::deliver`]): a peer's media is lossy; joins, floor
/// messages and leaves must arrive, so their senders wait for room.
impl Queued for HubEvent {
    fn policy(&self) -> Policy {
        match self {
            HubEvent::Media { .. } => Policy::DropOldest,
            HubEvent::Joined { .. }
            | HubEvent::Floor { .. }
            | HubEvent::Left { .. }
            | HubEvent::MediaSeen { .. }
            | HubEvent::Emergency { .. } => Policy::Keep,
        }
    }
}

/// Channel router → one peer's session.
#[derive(Debug, Clone)]
pub enum ToPeer {
    /// A floor message for one member of the peer (`member`), or a broadcast to everyone on
    /// the channel (`member: None`: `Taken`/`Idle`). `holder_name` names the talker in
    /// `Taken` and in busy denials.
    Floor { channel: String, member: Option<ParticipantId>, msg: ToParticipant, holder_name: Option<String> },
    /// The channel's talker's packet, to send on the peer's track for that channel.
    Media { channel: String, packet: MediaPacket },
    /// Who is on a channel: the whole roster, once per channel when the peer joins; shared by
    /// every peer's queue, not copied into each.
    Roster(Arc<protocol::Roster>),
    /// What changed on a channel's roster since the last `Roster`/`RosterDelta`.
    RosterDelta(Arc<protocol::RosterDelta>),
    /// The hub box's own radio ports, for consoles.
    Ports { ports: Vec<PortStatus> },
    /// The hub box's desk port, for consoles.
    Desk(protocol::DeskState),
    /// Which of the hub box's radios carry a channel's talker, and whether each is on air.
    Air(protocol::Air),
    /// An emergency raised or acknowledged on a channel (the session passes it on only if the
    /// peer's token allows the channel).
    Emergency(protocol::EmergencyNotice),
}

/// How a peer's queue ([`peer_queue`]) treats each message when the peer is slow: media is
/// lossy, state replaces older state, floor messages and roster deltas must all arrive.
impl Queued for ToPeer {
    fn policy(&self) -> Policy {
        match self {
            ToPeer::Media { .. } => Policy::DropOldest,
            ToPeer::Roster(_) | ToPeer::Ports { .. } | ToPeer::Desk(_) | ToPeer::Air(_) => Policy::Coalesce,
            ToPeer::Floor { .. } | ToPeer::RosterDelta(_) | ToPeer::Emergency(_) => Policy::Keep,
        }
    }

    fn supersedes(&self, older: &Self) -> bool {
        match (self, older) {
            (ToPeer::Ports { .. }, ToPeer::Ports { .. }) => true,
            (ToPeer::Desk(a), ToPeer::Desk(b)) => a.port == b.port,
            (ToPeer::Air(a), ToPeer::Air(b)) => a.channel == b.channel,
            // A whole roster makes every earlier roster message of its channel pointless.
            (ToPeer::Roster(a), ToPeer::Roster(b)) => a.channel == b.channel,
            (ToPeer::Roster(a), ToPeer::RosterDelta(b)) => a.channel == b.channel,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RosterEntry {
    pub id: u64,
    pub name: String,
    pub priority: u8,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PortStatus {
    pub name: String,
    pub channel: String,
    pub rx: bool,
    pub tx: bool,
    pub locked_out: bool,
    pub inhibited: bool,
}

/// Uplink client → the edge's channel router.
#[derive(Debug, Clone)]
pub enum UplinkEvent {
    /// Signaling and media are up; the hub's participant id for each requested member.
    Up {
        members: Vec<(MemberRequest, ParticipantId)>,
    },
    /// Lost (socket, ICE or hub gone): every remote floor state is void; reconnecting.
    Down {
        reason: String,
    },
    /// Not up yet, and why, while the uplink keeps trying (e.g. an edge waiting for the floor
    /// host to create its Janus room).
    Waiting {
        reason: String,
    },
    /// The far end lacks the protection the config asks for (a Janus room without its PIN,
    /// or that the floor host cannot moderate): nothing is sent there; retried. Comes after
    /// the `Down` if the uplink was up.
    Refused {
        channel: String,
        fault: crate::net::janus::RoomFault,
        reason: String,
    },
    /// The hub's certificate failed verification (a wrong pinned fingerprint, an unknown CA, a
    /// wrong name): nothing is sent to it; retried. Comes before the loss's `Down`, once per
    /// distinct reason until the uplink is up again.
    Untrusted {
        reason: String,
    },
    Floor {
        channel: String,
        member: Option<ParticipantId>,
        msg: ToParticipant,
        holder_name: Option<String>,
    },
    Media {
        channel: String,
        packet: MediaPacket,
    },
    /// The hub's emergency state of a channel.
    Emergency(protocol::EmergencyNotice),
}

impl peer_queue::Queued for UplinkEvent {
    fn policy(&self) -> Policy {
        match self {
            UplinkEvent::Media { .. } => Policy::DropOldest,
            _ => Policy::Keep,
        }
    }
}

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    #[error("binding the {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: std::net::SocketAddr, source: std::io::Error },
    #[error("hub configuration: {0}")]
    Config(String),
    #[error("crypto: {0}")]
    Crypto(String),
}

#[cfg(test)]
mod tests {
    /// tungstenite zero-fills its free read buffer on every poll: the client sockets must not
    /// get its 128 KiB default back (the hub's upgrade sets the same constant).
    #[test]
    fn websockets_read_in_small_buffers() {
        let c = super::ws_client_config(64 * 1024);
        assert!(c.read_buffer_size <= 4 * 1024, "read buffer {} bytes", c.read_buffer_size);
        assert_eq!((c.max_message_size, c.max_frame_size), (Some(64 * 1024), Some(64 * 1024)));
    }

    /// The protocol and the admission check stay pure: no runtime, sockets,
    /// WebRTC stack or clock reads outside their tests.
    #[test]
    fn pure_modules_do_no_io() {
        const FORBIDDEN: &[&str] = &[
            "tokio",
            "axum",
            "tungstenite",
            "str0m",
            "Instant::now",
            "SystemTime",
            "std::fs",
            "std::net",
            "std::thread",
        ];
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/net");
        for file in ["protocol.rs", "hub/auth.rs", "floor_mqtt/protocol.rs"] {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            let production = text.split("#[cfg(test)]").next().unwrap();
            for (n, line) in production.lines().enumerate() {
                let code = line.split("//").next().unwrap();
                for word in FORBIDDEN {
                    assert!(!code.contains(word), "{file}:{}: `{word}` in a pure module: {}", n + 1, line.trim());
                }
            }
        }
    }
}
