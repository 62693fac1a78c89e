//! str0m glue shared by the hub and the uplink: one media configuration, the poll loop, and
//! RTP packets to and from [`MediaPacket`]s.
//!
//! Both sides run str0m in RTP mode: the channel model carries Opus packets with their RTP
//! sequence number, timestamp and marker (the jitter buffer needs all three), and frame mode
//! would hide the marker, hold packets back in its own reorder buffer and renumber them.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use str0m::config::CryptoProvider;
use str0m::format::Codec;
use str0m::media::{Mid, Pt};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::{RtpPacket, RtpWrite};
use str0m::{Event, Input, Output, Rtc, RtcConfig, RtcError};
use tokio::net::UdpSocket;

use crate::core::restamp::Stamp;
use crate::fleet::StreamMetrics;
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
    receive_on(Protocol::Udp, now, source, destination, data)
}

/// One datagram (UDP) or RFC 4571 frame (ICE-TCP) as str0m input.
pub(crate) fn receive_on(
    proto: Protocol,
    now: Instant,
    source: SocketAddr,
    destination: SocketAddr,
    data: &[u8],
) -> Option<Input<'_>> {
    Receive::new(proto, source, destination, data).ok().map(|r| Input::Receive(now, r))
}

#[allow(clippy::large_enum_variant)] // str0m's Event, moved once per poll
pub(crate) enum Polled {
    Event(Event),
    Timeout(Instant),
}

/// The next event or deadline; transmits on the way go straight out. UDP is lossy anyway, so a
/// full socket buffer drops the datagram rather than stalling every peer.
pub(crate) fn poll(rtc: &mut Rtc, socket: &UdpSocket) -> Result<Polled, RtcError> {
    poll_with(rtc, |t| send_udp(socket, &t))
}

/// [`poll`] with each transmit given to `send` (which routes UDP and ICE-TCP).
pub(crate) fn poll_with(rtc: &mut Rtc, mut send: impl FnMut(Transmit)) -> Result<Polled, RtcError> {
    loop {
        match rtc.poll_output()? {
            Output::Transmit(t) => send(t),
            Output::Event(e) => return Ok(Polled::Event(e)),
            Output::Timeout(t) => return Ok(Polled::Timeout(t)),
        }
    }
}

/// One transmit as a UDP datagram; a full socket buffer drops it.
pub(crate) fn send_udp(socket: &UdpSocket, t: &Transmit) {
    if let Err(e) = socket.try_send_to(&t.contents, t.destination) {
        tracing::debug!(error = %e, to = %t.destination, "UDP send dropped");
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

// ---------------------------------------------------------------------------------------------
// Per-stream statistics for the fleet metrics

/// How often str0m reports a session's statistics (a walk over its few streams: cheap).
pub(crate) const STATS_INTERVAL: Duration = Duration::from_secs(2);

/// Opus's RTP clock: RTCP jitter is in these units.
const OPUS_CLOCK_PER_MS: f64 = 48.0;

/// The latest per-stream numbers (RTT, jitter, loss, bitrate) of every WebRTC session, keyed
/// by a stable name: `<peer name>/<channel>` at the hub, `uplink/<channel>` on an edge. The
/// hub and the uplink write; the fleet metrics read [`StreamStats::snapshot`]. A session's
/// streams disappear when it ends. Cheap to clone; never held across an await.
#[derive(Clone, Default, Debug)]
pub struct StreamStats(Arc<Mutex<BTreeMap<String, StreamMetrics>>>);

impl StreamStats {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every live stream's latest numbers.
    pub fn snapshot(&self) -> BTreeMap<String, StreamMetrics> {
        self.lock().clone()
    }

    pub(crate) fn set(&self, key: &str, metrics: StreamMetrics) {
        self.lock().insert(key.to_owned(), metrics);
    }

    pub(crate) fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, StreamMetrics>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One direction's byte counter: str0m reports totals, the rate is the difference between two
/// reports.
#[derive(Debug, Default, Clone, Copy)]
struct Rate {
    last: Option<(u64, Instant)>,
    bps: Option<u64>,
}

impl Rate {
    fn update(&mut self, bytes: u64, at: Instant) {
        if let Some((before, then)) = self.last {
            let secs = at.saturating_duration_since(then).as_secs_f64();
            if secs > 0.0 {
                self.bps = Some((bytes.saturating_sub(before) as f64 * 8.0 / secs).round() as u64);
            }
        }
        self.last = Some((bytes, at));
    }
}

#[derive(Debug, Default, Clone)]
struct MidStats {
    rx: Rate,
    tx: Rate,
    /// From the RTCP reports of the stream (sender report round trips).
    rtt: Option<Duration>,
    /// Interarrival jitter of what we receive, or else what the remote reports for what we send.
    rx_jitter_ms: Option<f64>,
    tx_jitter_ms: Option<f64>,
    /// Loss fractions (0-1): of what we receive (our receiver reports), of what we send (theirs).
    rx_loss: Option<f32>,
    tx_loss: Option<f32>,
}

/// Collects one `Rtc`'s stats events (enabled with [`STATS_INTERVAL`]) into per-mid metrics.
#[derive(Debug, Default)]
pub(crate) struct RtcStats {
    mids: HashMap<Mid, MidStats>,
    /// Session-wide RTT: ICE consent checks on the selected pair (full-ICE side) or TWCC.
    peer_rtt: Option<Duration>,
}

impl RtcStats {
    /// Take `event` if it is a stats event: `Some(mids)` names the streams whose numbers
    /// changed (every stream for a session-wide update), `None` means it was not a stats event.
    pub(crate) fn take(&mut self, event: &Event) -> Option<Vec<Mid>> {
        match event {
            Event::MediaIngressStats(s) => {
                let m = self.mids.entry(s.mid).or_default();
                m.rx.update(s.bytes, s.timestamp);
                m.rx_loss = s.loss.or(m.rx_loss);
                // Jitter and loss are taken when str0m writes a receiver report (every 5 s for
                // audio): before the first one, the jitter it shows is a placeholder 0.
                if m.rx_loss.is_some() {
                    m.rx_jitter_ms = Some(s.jitter as f64 / OPUS_CLOCK_PER_MS);
                }
                m.rtt = s.rtt.or(m.rtt);
                Some(vec![s.mid])
            }
            Event::MediaEgressStats(s) => {
                let m = self.mids.entry(s.mid).or_default();
                m.tx.update(s.bytes, s.timestamp);
                m.tx_loss = s.loss.or(m.tx_loss);
                m.rtt = s.rtt.or(m.rtt);
                if let Some(r) = &s.remote {
                    m.tx_jitter_ms = Some(r.jitter as f64 / OPUS_CLOCK_PER_MS);
                }
                Some(vec![s.mid])
            }
            Event::PeerStats(s) => {
                let ice = s.selected_candidate_pair.as_ref().and_then(|p| p.current_round_trip_time);
                self.peer_rtt = s.rtt.or(ice).or(self.peer_rtt);
                Some(self.mids.keys().copied().collect())
            }
            _ => None,
        }
    }

    /// The fleet's view of one stream. Receive-side figures come first (they are measured
    /// here); a stream that only sends shows what the remote reports about it.
    pub(crate) fn metrics(&self, mid: Mid) -> StreamMetrics {
        let Some(m) = self.mids.get(&mid) else { return StreamMetrics::default() };
        let bitrate = match (m.rx.bps, m.tx.bps) {
            (None, None) => None,
            (rx, tx) => Some(rx.unwrap_or(0) + tx.unwrap_or(0)),
        };
        let round = |v: f64| (v * 100.0).round() / 100.0;
        StreamMetrics {
            rtt_ms: m.rtt.or(self.peer_rtt).map(|d| round(d.as_secs_f64() * 1000.0)),
            jitter_ms: m.rx_jitter_ms.or(m.tx_jitter_ms).map(round),
            loss_pct: m.rx_loss.or(m.tx_loss).map(|f| round(f as f64 * 100.0)),
            bitrate_bps: bitrate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_from_two_totals() {
        let t = Instant::now();
        let mut r = Rate::default();
        r.update(1000, t);
        assert_eq!(r.bps, None, "one total is no rate yet");
        r.update(7000, t + Duration::from_secs(2));
        assert_eq!(r.bps, Some(24_000));
        r.update(7000, t + Duration::from_secs(4));
        assert_eq!(r.bps, Some(0), "a silent stream is 0 b/s, not the last rate");
    }

    fn ingress(t: Instant, bytes: u64, jitter: u32, loss: Option<f32>) -> Event {
        Event::MediaIngressStats(str0m::stats::MediaIngressStats {
            mid: Mid::from("0"),
            rid: None,
            bytes,
            packets: bytes / 40,
            firs: 0,
            plis: 0,
            nacks: 0,
            jitter,
            rtt: None,
            loss,
            timestamp: t,
            remote: None,
        })
    }

    fn egress(t: Instant, bytes: u64, rtt_ms: Option<u64>, loss: Option<f32>, jitter: Option<u32>) -> Event {
        Event::MediaEgressStats(str0m::stats::MediaEgressStats {
            mid: Mid::from("1"),
            rid: None,
            bytes,
            packets: bytes / 40,
            firs: 0,
            plis: 0,
            nacks: 0,
            rtt: rtt_ms.map(Duration::from_millis),
            loss,
            timestamp: t,
            remote: jitter.map(|jitter| str0m::stats::RemoteIngressStats {
                jitter,
                maximum_sequence_number: 0.into(),
                packets_lost: 0,
            }),
        })
    }

    #[test]
    fn receiving_stream_reports_what_it_measures_once_a_receiver_report_exists() {
        let t = Instant::now();
        let mut stats = RtcStats::default();
        assert_eq!(stats.take(&Event::Connected), None, "not a stats event");
        assert_eq!(stats.take(&ingress(t, 4000, 0, None)), Some(vec![Mid::from("0")]));
        let m = stats.metrics(Mid::from("0"));
        assert_eq!((m.jitter_ms, m.loss_pct, m.bitrate_bps), (None, None, None), "no placeholder figures: {m:?}");
        stats.take(&ingress(t + Duration::from_secs(2), 10_000, 96, Some(0.02)));
        let m = stats.metrics(Mid::from("0"));
        assert_eq!(m.bitrate_bps, Some(24_000));
        assert_eq!(m.jitter_ms, Some(2.0), "96 units of 48 kHz");
        assert_eq!(m.loss_pct, Some(2.0));
        assert_eq!(m.rtt_ms, None);
        // A report without a new loss figure keeps the last one.
        stats.take(&ingress(t + Duration::from_secs(4), 16_000, 48, None));
        assert_eq!(stats.metrics(Mid::from("0")).loss_pct, Some(2.0));
    }

    #[test]
    fn sending_stream_reports_what_the_remote_says_and_the_session_rtt_fills_in() {
        let t = Instant::now();
        let mut stats = RtcStats::default();
        stats.take(&egress(t, 0, None, None, None));
        stats.take(&egress(t + Duration::from_secs(2), 3000, None, Some(0.1), Some(240)));
        let m = stats.metrics(Mid::from("1"));
        assert_eq!((m.bitrate_bps, m.loss_pct, m.jitter_ms, m.rtt_ms), (Some(12_000), Some(10.0), Some(5.0), None));
        let peer = Event::PeerStats(str0m::stats::PeerStats {
            peer_bytes_rx: 0,
            peer_bytes_tx: 0,
            bytes_rx: 0,
            bytes_tx: 0,
            timestamp: t,
            bwe_tx: None,
            egress_loss_fraction: None,
            ingress_loss_fraction: None,
            rtt: Some(Duration::from_micros(750)),
            selected_candidate_pair: None,
        });
        assert_eq!(stats.take(&peer), Some(vec![Mid::from("1")]), "every stream gets the session's RTT");
        assert_eq!(stats.metrics(Mid::from("1")).rtt_ms, Some(0.75));
        // The stream's own RTCP round trip wins over the session's.
        stats.take(&egress(t + Duration::from_secs(4), 6000, Some(20), None, None));
        assert_eq!(stats.metrics(Mid::from("1")).rtt_ms, Some(20.0));
        assert_eq!(stats.metrics(Mid::from("9")), StreamMetrics::default(), "unknown stream");
    }

    #[test]
    fn stream_stats_snapshot_follows_set_and_remove() {
        let stats = StreamStats::new();
        stats.set("edge/ops", StreamMetrics { bitrate_bps: Some(1), ..Default::default() });
        assert_eq!(stats.snapshot()["edge/ops"].bitrate_bps, Some(1));
        stats.remove("edge/ops");
        assert!(stats.snapshot().is_empty());
    }
}
