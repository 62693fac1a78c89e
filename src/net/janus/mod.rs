//! Uplink to a Janus VideoRoom SFU (`[uplink] kind = "janus"`): each channel is a VideoRoom
//! room; this box is one publisher there (Opus, audio only, held back with `send: false`
//! unless it holds the floor) and one multistream subscriber to everyone else's audio.
//!
//! - [`protocol`]: the Janus API and VideoRoom messages (pure builders and parser);
//! - [`session`]: one Janus session as a sans-IO state machine (handles, rooms, publishing,
//!   subscriptions, keepalive, transaction timeouts, what counts as losing the session);
//! - [`client`]: the driver: WebSocket (subprotocol `janus-protocol`), one UDP socket, a str0m
//!   `Rtc` per publisher and per subscription, rebuilding everything with backoff and jitter
//!   when the session is lost.
//!
//! Floor control does not go through Janus: the arbiter runs in a roipd hub (over MQTT); the
//! router tells this uplink when to send ([`JanusHandle::set_sending`]).

pub mod client;
mod config;
pub mod edge;
pub mod protocol;
pub mod session;

pub use client::{start, JanusHandle, JanusOptions};
pub use config::{display_name, janus_options};
pub use edge::{start_edge, JanusEdge};
pub use protocol::RoomSettings;
pub use session::{ChannelSpec, RoomFault};

use crate::pipeline::MediaPacket;

impl crate::net::peer_queue::Queued for JanusEvent {
    fn policy(&self) -> crate::net::peer_queue::Policy {
        match self {
            JanusEvent::Media { .. } => crate::net::peer_queue::Policy::DropOldest,
            _ => crate::net::peer_queue::Policy::Keep,
        }
    }
}

/// Janus uplink → the edge's channel router. Like [`crate::net::UplinkEvent`]: one `Up` when
/// every channel is published and its media connected, one `Down` per loss.
#[derive(Debug, Clone, PartialEq)]
pub enum JanusEvent {
    /// Every channel's publisher is connected; our publisher id in each channel's room.
    Up { channels: Vec<(String, u64)> },
    /// The session is lost (socket, Janus restart, ICE, a refused request); rebuilding.
    /// Sending is off for every channel until the router asks again.
    Down { reason: String },
    /// An Opus packet from publisher `feed` in `channel`'s room. Each feed has its own RTP
    /// numbering (Janus rewrites it per subscription stream).
    Media { channel: String, feed: u64, packet: MediaPacket },
    /// The other publishers in a channel's room, as (id, display name).
    Roster { channel: String, publishers: Vec<(u64, String)> },
    /// Janus relays (true) or holds back (false) our stream in `channel`.
    Sending { channel: String, on: bool },
    /// A moderator muted or unmuted our stream in `channel`.
    Moderated { channel: String, muted: bool },
    /// A moderator (anyone with the room's secret, this box included) muted or unmuted
    /// publisher `feed`'s stream in `channel`'s room.
    FeedModerated { channel: String, feed: u64, muted: bool },
    /// The answer to [`JanusHandle::moderate`].
    ModerateDone { channel: String, feed: u64, mute: bool, result: Result<(), String> },
    /// A channel's room does not exist and this box does not create rooms (an edge: the floor
    /// host does); asked again every half second within the session. Once per session.
    RoomMissing { channel: String, room: u64 },
    /// A channel's room lacks protection the config asks for (no PIN, a secret that is not
    /// ours, …): nothing was published into it. Comes after the session's `Down`; the session
    /// is rebuilt and checks again, and the same refusal is not reported again until `Up`.
    RoomRefused { channel: String, fault: RoomFault, reason: String },
}

/// The fleet event for a refused room: `room_refused` with the channel, the fault's code as
/// `reason` and the explanation as `detail`.
pub fn refused_event(channel: &str, fault: RoomFault, reason: &str) -> crate::fleet::Event {
    crate::fleet::Event::new(crate::fleet::EventKind::RoomRefused).channel(channel).reason(fault.code()).detail(reason)
}

#[cfg(test)]
mod tests {
    /// Protocol and session stay pure: no runtime, sockets, WebRTC stack or clock reads.
    #[test]
    fn pure_modules_do_no_io() {
        const FORBIDDEN: &[&str] =
            &["tokio", "tungstenite", "str0m", "Instant::now", "SystemTime", "std::fs", "std::net", "std::thread"];
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/net/janus");
        for file in ["protocol.rs", "session.rs", "session/request.rs", "session/rooms.rs"] {
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
