//! str0m glue shared by the hub and the uplink: one media configuration, the poll loop, and
//! RTP packets to and from [`MediaPacket`]s.
//!
//! Both sides run str0m in RTP mode: the channel model carries Opus packets with their RTP
//! sequence number, timestamp and marker (the jitter buffer needs all three), and frame mode
//! would hide the marker, hold packets back in its own reorder buffer and renumber them.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use str0m::config::CryptoProvider;
use str0m::format::Codec;
use str0m::media::{Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpPacket, RtpWrite};
use str0m::{Event, Input, Output, Rtc, RtcConfig, RtcError};
use tokio::net::UdpSocket;

use super::rtp::Stamp;
use crate::pipeline::MediaPacket;

/// Largest datagram read; WebRTC stays under ~1200 bytes, anything bigger is not ours.
pub(crate) const DATAGRAM_BUF: usize = 2048;

/// The crypto provider from str0m's feature flags (aws-lc-rs here), built once.
pub(crate) fn crypto() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(str0m::crypto::from_feature_flags())).clone()
}

/// RTP mode, Opus only (no RED, no other codecs to negotiate), no video.
pub(crate) fn config(ice_lite: bool) -> RtcConfig {
    Rtc::builder()
        .set_ice_lite(ice_lite)
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .set_crypto_provider(crypto())
}

/// One datagram as str0m input; `None` if it is not something str0m could parse.
pub(crate) fn receive(now: Instant, source: SocketAddr, destination: SocketAddr, data: &[u8]) -> Option<Input<'_>> {
    Receive::new(Protocol::Udp, source, destination, data).ok().map(|r| Input::Receive(now, r))
}

#[allow(clippy::large_enum_variant)] // str0m's Event, moved once per poll
pub(crate) enum Polled {
    Event(Event),
    Timeout(Instant),
}

/// The next event or deadline; transmits on the way go straight out. UDP is lossy anyway, so a
/// full socket buffer drops the datagram rather than stalling every peer.
pub(crate) fn poll(rtc: &mut Rtc, socket: &UdpSocket) -> Result<Polled, RtcError> {
    loop {
        match rtc.poll_output()? {
            Output::Transmit(t) => {
                if let Err(e) = socket.try_send_to(&t.contents, t.destination) {
                    tracing::debug!(error = %e, to = %t.destination, "UDP send dropped");
                }
            }
            Output::Event(e) => return Ok(Polled::Event(e)),
            Output::Timeout(t) => return Ok(Polled::Timeout(t)),
        }
    }
}

/// The negotiated Opus payload type on `mid`, if the remote accepted Opus there.
pub(crate) fn opus_pt(rtc: &Rtc, mid: Mid) -> Option<Pt> {
    let pt = rtc.codec_config().find(|p| p.spec().codec == Codec::Opus)?.pt();
    rtc.media(mid).filter(|m| m.remote_pts().contains(&pt)).map(|_| pt)
}

/// An incoming RTP packet as (mid, payload type, packet).
pub(crate) fn incoming(rtc: &mut Rtc, p: RtpPacket) -> Option<(Mid, Pt, MediaPacket)> {
    let mid = rtc.direct_api().stream_rx(&p.header.ssrc)?.mid();
    let packet = MediaPacket {
        seq: p.header.sequence_number,
        timestamp: p.header.timestamp,
        marker: p.header.marker,
        payload: p.payload.to_vec(),
    };
    Some((mid, p.header.payload_type, packet))
}

/// Queue one packet on `mid`'s send stream; false if there is none (not negotiated to send).
pub(crate) fn write(rtc: &mut Rtc, mid: Mid, pt: Pt, stamp: Stamp, now: Instant, payload: &[u8]) -> bool {
    let mut api = rtc.direct_api();
    let Some(tx) = api.stream_tx_by_mid(mid, None) else { return false };
    tx.write_rtp(RtpWrite::new(pt, stamp.seq.into(), stamp.timestamp, now, payload.to_vec()).marker(stamp.marker));
    true
}

/// A random start for an outgoing stream's numbering (RFC 3550 §5.1).
pub(crate) fn random_start() -> (u16, u32) {
    (rand::random::<u16>(), rand::random::<u32>())
}
