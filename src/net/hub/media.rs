//! The hub's media task: owns the one UDP socket and every peer's str0m `Rtc` (the pattern of
//! str0m's `chat.rs`): each datagram goes to the `Rtc` that `accepts()` it, every change is
//! followed by draining `poll_output` until `Timeout`, and due deadlines get `Input::Timeout`.
//! Sessions talk to it through [`MediaCmd`]; it tells them about their media with [`MediaNote`]
//! and hands incoming Opus straight to the channel router.
//!
//! It is also the only sender of `HubEvent::Media` and of `HubEvent::Left` (when a session
//! says `Leave`), so the router never sees media from a peer after that peer's `Left`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::media::{Mid, Pt};
use str0m::net::{Protocol, TcpType, Transmit};
use str0m::{Candidate, Event, IceConnectionState, Input, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use crate::core::restamp::Restamper;
use crate::net::addrs::pick_destination;
use crate::net::peer_queue::{self, PeerTx, Policy, Queued};
use crate::net::protocol::{add_end_of_candidates, sdp_fingerprint};
use crate::net::rtc::{self, Polled, RtcStats, StreamStats};

use crate::net::ice_tcp::{self, TcpEvent};
use crate::net::{HubEvent, PeerId};
use crate::pipeline::MediaPacket;

#[derive(Debug)]
pub(crate) enum MediaCmd {
    /// Answer `sdp` for `peer` (a new media session, or a renegotiation of the current one).
    Offer {
        peer: PeerId,
        /// The name from hello: the peer's streams are `<name>/<channel>` in the metrics.
        name: String,
        sdp: String,
        /// (mid, channel), already validated against the SDP and the peer's channels.
        mids: Vec<(String, String)>,
        notes: PeerTx<MediaNote>,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Send the channel's talker's packet to `peer`.
    Write { peer: PeerId, channel: String, packet: MediaPacket },
    /// The session ended: drop the peer's media and report `Left`.
    Leave { peer: PeerId },
}

/// The media task's inbox: packets to peers are lossy, the rest must arrive (a session has at
/// most one offer and one leave in flight).
impl Queued for MediaCmd {
    fn policy(&self) -> Policy {
        match self {
            MediaCmd::Write { .. } => Policy::DropOldest,
            MediaCmd::Offer { .. } | MediaCmd::Leave { .. } => Policy::Keep,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MediaNote {
    /// ICE and DTLS are up (media flows from now on).
    Connected,
    /// ICE or DTLS failed, or the remote closed: the media session is gone.
    Failed(String),
}

/// A session's notes are bounded like every queue to a peer: a repeated `Connected` says
/// nothing new.
impl Queued for MediaNote {
    fn policy(&self) -> Policy {
        match self {
            MediaNote::Connected => Policy::Coalesce,
            MediaNote::Failed(_) => Policy::Keep,
        }
    }

    fn supersedes(&self, older: &Self) -> bool {
        *self == MediaNote::Connected && *older == MediaNote::Connected
    }
}

struct Track {
    mid: Mid,
    channel: String,
    pt: Pt,
    out: Restamper,
}

struct Peer {
    rtc: Rtc,
    fingerprint: String,
    tracks: Vec<Track>,
    notes: PeerTx<MediaNote>,
    connected: bool,
    deadline: Instant,
    /// `name`, or `name#peer` when another peer has that name: unique keys in the metrics.
    label: String,
    stats: RtcStats,
}

impl Peer {
    fn stream_key(&self, channel: &str) -> String {
        format!("{}/{channel}", self.label)
    }
}

/// Where the hub's media can be reached: what every answer announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Announce {
    /// Host addresses (the listen address, every interface's, or the configured ones).
    pub hosts: Vec<IpAddr>,
    pub udp_port: u16,
    /// ICE-TCP's port, if it is on.
    pub tcp_port: Option<u16>,
    /// Port-forwarded public addresses (`[hub] public_addresses`); a given port is UDP only.
    pub public: Vec<(IpAddr, Option<u16>)>,
}

impl Announce {
    /// The local candidates: UDP, then passive TCP, on every host address, then each public
    /// address. An ICE-lite agent has host candidates only (RFC 8445 §5.1.1; str0m drops any
    /// other kind), so a public address is announced as a host candidate, as Janus's
    /// `nat_1_1_mapping` does: the NAT delivers checks sent to it at a private host address,
    /// whose candidate answers them, and the answer goes back out through the same mapping.
    pub fn candidates(&self) -> Result<Vec<Candidate>, String> {
        let mut out = Vec::new();
        let tcp = |addr: SocketAddr| Candidate::builder().tcp().host(addr).tcptype(TcpType::Passive).build();
        for ip in &self.hosts {
            let udp = SocketAddr::new(*ip, self.udp_port);
            out.push(Candidate::host(udp, "udp").map_err(|e| format!("candidate {udp}: {e}"))?);
        }
        if let Some(port) = self.tcp_port {
            for ip in &self.hosts {
                let addr = SocketAddr::new(*ip, port);
                out.push(tcp(addr).map_err(|e| format!("TCP candidate {addr}: {e}"))?);
            }
        }
        for &(ip, port) in &self.public {
            if !self.hosts.iter().any(|h| h.is_ipv4() == ip.is_ipv4()) {
                return Err(format!("public address {ip}: no host address of its IP version to forward to"));
            }
            let addr = SocketAddr::new(ip, port.unwrap_or(self.udp_port));
            out.push(Candidate::host(addr, "udp").map_err(|e| format!("public address {addr}: {e}"))?);
            if let (None, Some(tcp_port)) = (port, self.tcp_port) {
                let addr = SocketAddr::new(ip, tcp_port);
                out.push(tcp(addr).map_err(|e| format!("public address {addr} (TCP): {e}"))?);
            }
        }
        Ok(out)
    }
}

pub(crate) struct MediaLoop {
    socket: UdpSocket,
    local: SocketAddr,
    candidates: Vec<IpAddr>,
    /// Every answer's candidates (from [`Announce`]), built once.
    local_candidates: Vec<Candidate>,
    /// ICE-TCP: frames from the connection tasks, and each connection's writer by remote.
    tcp_events: Option<mpsc::Receiver<TcpEvent>>,
    tcp_conns: HashMap<SocketAddr, (u64, mpsc::Sender<Vec<u8>>)>,
    cert: DtlsCert,
    /// Boxed: a `Peer` is ~10 KB inline, and a table of them grew by copying megabytes.
    peers: HashMap<PeerId, Box<Peer>>,
    events: mpsc::Sender<HubEvent>,
    stream_stats: StreamStats,
}

enum Step {
    Stop,
    Cmd(MediaCmd),
    Datagram(usize, SocketAddr),
    Tcp(TcpEvent),
    Timeout,
    RecvError(std::io::Error),
}

impl MediaLoop {
    pub fn new(
        socket: UdpSocket,
        announce: &Announce,
        tcp_events: Option<mpsc::Receiver<TcpEvent>>,
        cert: DtlsCert,
        events: mpsc::Sender<HubEvent>,
        stream_stats: StreamStats,
    ) -> Result<Self, String> {
        let local = socket.local_addr().expect("a bound socket has an address");
        Ok(Self {
            socket,
            local,
            candidates: announce.hosts.clone(),
            local_candidates: announce.candidates()?,
            tcp_events,
            tcp_conns: HashMap::new(),
            cert,
            peers: HashMap::new(),
            events,
            stream_stats,
        })
    }

    pub async fn run(mut self, mut cmds: mpsc::Receiver<MediaCmd>, cancel: CancellationToken) {
        let mut buf = vec![0u8; rtc::DATAGRAM_BUF];
        loop {
            let deadline = self.peers.values().map(|p| p.deadline).min();
            let step = tokio::select! {
                _ = cancel.cancelled() => Step::Stop,
                cmd = cmds.recv() => cmd.map_or(Step::Stop, Step::Cmd),
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, source)) => Step::Datagram(n, source),
                    Err(e) => Step::RecvError(e),
                },
                Some(e) = next_tcp(&mut self.tcp_events) => Step::Tcp(e),
                _ = crate::wait::until(deadline) => Step::Timeout,
            };
            match step {
                Step::Stop => break,
                Step::Cmd(cmd) => self.command(cmd).await,
                Step::Datagram(n, source) => {
                    let destination = self.destination(source);
                    self.receive(Protocol::Udp, source, destination, &buf[..n]);
                }
                Step::Tcp(e) => self.tcp(e),
                Step::Timeout => self.timeouts(Instant::now()),
                // ICMP errors from an earlier send (port unreachable) surface here; not fatal.
                Step::RecvError(e) => debug!(error = %e, "UDP receive"),
            }
        }
        for p in self.peers.values() {
            forget_streams(&self.stream_stats, p);
        }
        // Sessions that asked to leave before we stopped still get their one `Left`; later
        // ones see the channel closed and send it themselves. Without waiting: the router may
        // be stopping too.
        cmds.close();
        while let Ok(cmd) = cmds.try_recv() {
            if let MediaCmd::Leave { peer } = cmd {
                let _ = peer_queue::try_deliver(&self.events, HubEvent::Left { peer });
            }
        }
        debug!("media task stopped");
    }

    async fn command(&mut self, cmd: MediaCmd) {
        match cmd {
            MediaCmd::Offer { peer, name, sdp, mids, notes, reply } => {
                let result = self.offer(peer, &name, &sdp, &mids, notes);
                if let Err(e) = &result {
                    debug!(peer, error = %e, "offer refused");
                }
                let _ = reply.send(result);
            }
            MediaCmd::Write { peer, channel, packet } => self.write(peer, &channel, &packet),
            MediaCmd::Leave { peer } => {
                self.remove_peer(peer);
                // After the peer's last media; waits only while the router's inbox is full.
                let _ = peer_queue::deliver(&self.events, HubEvent::Left { peer }).await;
            }
        }
    }

    fn offer(
        &mut self,
        peer: PeerId,
        name: &str,
        sdp: &str,
        mids: &[(String, String)],
        notes: PeerTx<MediaNote>,
    ) -> Result<String, String> {
        let now = Instant::now();
        // str0m's parse errors name internals (a pointer, the parser's state): logged, not sent.
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| {
            debug!(peer, error = %e, "SDP parse");
            "the SDP could not be parsed".to_owned()
        })?;
        let fingerprint = sdp_fingerprint(sdp).unwrap_or_default().to_owned();
        // Same certificate: the same peer connection renegotiating (ICE restart, new m-lines).
        // A new certificate is a new peer connection, which needs a fresh DTLS session.
        let renegotiation = self
            .peers
            .get(&peer)
            .is_some_and(|p| p.rtc.is_alive() && !fingerprint.is_empty() && p.fingerprint == fingerprint);
        let answer;
        if renegotiation {
            let p = self.peers.get_mut(&peer).expect("checked above");
            answer = p.rtc.sdp_api().accept_offer(offer).map_err(|e| refused(peer, e))?;
            let new = tracks(&p.rtc, mids, std::mem::take(&mut p.tracks))?;
            forget_streams(&self.stream_stats, p);
            p.tracks = new;
            p.notes = notes;
        } else {
            let mut rtc = rtc::config(true)
                .set_dtls_cert(self.cert.clone())
                .set_stats_interval(Some(rtc::STATS_INTERVAL))
                .build(now);
            for c in &self.local_candidates {
                rtc.add_local_candidate(c.clone());
            }
            answer = rtc.sdp_api().accept_offer(offer).map_err(|e| refused(peer, e))?;
            let tracks = tracks(&rtc, mids, Vec::new())?;
            if self.remove_peer(peer).is_some() {
                info!(peer, "new peer connection replaces the media session");
            }
            let taken = self.peers.values().any(|p| p.label == name);
            let label = if taken { format!("{name}#{peer}") } else { name.to_owned() };
            let stats = RtcStats::default();
            let new = Peer { rtc, fingerprint, tracks, notes, connected: false, deadline: now, label, stats };
            self.peers.insert(peer, Box::new(new));
        }
        self.drive(peer);
        Ok(add_end_of_candidates(&answer.to_sdp_string()))
    }

    fn write(&mut self, peer: PeerId, channel: &str, packet: &MediaPacket) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        if !p.connected {
            return; // str0m would drop it too; nothing to send to yet
        }
        let Some(t) = p.tracks.iter_mut().find(|t| t.channel == channel) else { return };
        let now = Instant::now();
        let Some(stamp) = t.out.stamp(now, packet) else { return };
        if rtc::write(&mut p.rtc, t.mid, t.pt, stamp, now, &packet.payload) {
            self.drive(peer);
        }
    }

    /// The local address a datagram was sent to, as one of our candidates: str0m pairs by it.
    fn destination(&self, source: SocketAddr) -> SocketAddr {
        let bound = self.local.ip();
        if !bound.is_unspecified() && self.candidates.contains(&bound) {
            return self.local;
        }
        let ip = pick_destination(&self.candidates, source.ip()).unwrap_or(bound);
        SocketAddr::new(ip, self.local.port())
    }

    /// An ICE-TCP connection opened, carried a frame or closed.
    fn tcp(&mut self, event: TcpEvent) {
        match event {
            TcpEvent::Open { id, remote, tx, .. } => {
                self.tcp_conns.insert(remote, (id, tx));
            }
            TcpEvent::Closed { id, remote } => {
                if self.tcp_conns.get(&remote).is_some_and(|(i, _)| *i == id) {
                    self.tcp_conns.remove(&remote);
                }
            }
            TcpEvent::Frame { remote, local, data } => {
                // The accepted socket's own address, as one of our TCP candidates.
                let ip = if self.candidates.contains(&local.ip()) {
                    local.ip()
                } else {
                    pick_destination(&self.candidates, remote.ip()).unwrap_or(local.ip())
                };
                self.receive(Protocol::Tcp, remote, SocketAddr::new(ip, local.port()), &data);
            }
        }
    }

    fn receive(&mut self, proto: Protocol, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        let now = Instant::now();
        let Some(input) = rtc::receive_on(proto, now, source, destination, data) else { return };
        let Some((&peer, p)) = self.peers.iter_mut().find(|(_, p)| p.rtc.accepts(&input)) else {
            // Common for a moment: STUN from a browser whose answer is still on its way.
            trace!(%source, "datagram for no peer");
            return;
        };
        match p.rtc.handle_input(input) {
            Ok(()) => self.drive(peer),
            Err(e) => self.fail(peer, format!("media input: {e}")),
        }
    }

    fn timeouts(&mut self, now: Instant) {
        let due: Vec<PeerId> = self.peers.iter().filter(|(_, p)| p.deadline <= now).map(|(&id, _)| id).collect();
        for peer in due {
            let Some(p) = self.peers.get_mut(&peer) else { continue };
            match p.rtc.handle_input(Input::Timeout(now)) {
                Ok(()) => self.drive(peer),
                Err(e) => self.fail(peer, format!("media timeout: {e}")),
            }
        }
    }

    /// Drain one peer's output until its next deadline.
    fn drive(&mut self, peer: PeerId) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        let failure = loop {
            if !p.rtc.is_alive() {
                break "media session closed".to_owned();
            }
            let (socket, tcp) = (&self.socket, &self.tcp_conns);
            let event = match rtc::poll_with(&mut p.rtc, |t| transmit(socket, tcp, &t)) {
                Ok(Polled::Timeout(t)) => {
                    p.deadline = t;
                    return;
                }
                Ok(Polled::Event(e)) => e,
                Err(e) => break format!("media: {e}"),
            };
            match event {
                Event::Connected => {
                    p.connected = true;
                    let _ = p.notes.send(MediaNote::Connected);
                }
                Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                    break "ICE disconnected".to_owned();
                }
                Event::Closed => break "peer closed its media".to_owned(),
                Event::RtpPacket(packet) => {
                    let Some((mid, pt, packet)) = rtc::incoming(&mut p.rtc, packet) else { continue };
                    let Some(t) = p.tracks.iter().find(|t| t.mid == mid && t.pt == pt) else { continue };
                    let media = HubEvent::Media { peer, channel: t.channel.clone(), packet };
                    let _ = peer_queue::try_deliver(&self.events, media);
                }
                other => {
                    let Some(changed) = p.stats.take(&other) else { continue };
                    for t in p.tracks.iter().filter(|t| changed.contains(&t.mid)) {
                        self.stream_stats.set(&p.stream_key(&t.channel), p.stats.metrics(t.mid));
                    }
                }
            }
        };
        self.fail(peer, failure);
    }

    /// Drop a peer's media session and its stream metrics. The map gives back what a burst
    /// made it grow once it is mostly empty.
    fn remove_peer(&mut self, peer: PeerId) -> Option<Box<Peer>> {
        let p = self.peers.remove(&peer)?;
        forget_streams(&self.stream_stats, &p);
        if self.peers.len() < self.peers.capacity() / 4 {
            self.peers.shrink_to_fit();
        }
        Some(p)
    }

    fn fail(&mut self, peer: PeerId, reason: String) {
        if let Some(p) = self.remove_peer(peer) {
            warn!(peer, %reason, "peer media failed");
            let _ = p.notes.send(MediaNote::Failed(reason));
        }
    }
}

/// Send one transmit: a datagram, or a frame on the ICE-TCP connection from its destination
/// (dropped when that connection is gone or its queue is full, as UDP would drop it).
fn transmit(socket: &UdpSocket, tcp: &HashMap<SocketAddr, (u64, mpsc::Sender<Vec<u8>>)>, t: &Transmit) {
    match t.proto {
        Protocol::Udp => rtc::send_udp(socket, t),
        _ => {
            let Some((_, tx)) = tcp.get(&t.destination) else {
                trace!(to = %t.destination, "ICE-TCP send: no connection");
                return;
            };
            if let Some(frame) = ice_tcp::frame(&t.contents) {
                if tx.try_send(frame).is_err() {
                    debug!(to = %t.destination, "ICE-TCP send dropped");
                }
            }
        }
    }
}

/// The next ICE-TCP event; never, without ICE-TCP.
async fn next_tcp(rx: &mut Option<mpsc::Receiver<TcpEvent>>) -> Option<TcpEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// What a client hears when str0m refuses its offer; the details go to the log.
fn refused(peer: PeerId, e: str0m::RtcError) -> String {
    debug!(peer, error = %e, "offer refused by str0m");
    "the offer could not be accepted".to_owned()
}

/// A peer's streams leave the metrics with it.
fn forget_streams(stats: &StreamStats, p: &Peer) {
    for t in &p.tracks {
        stats.remove(&p.stream_key(&t.channel));
    }
}

/// The tracks of a negotiated session; a channel's numbering carries over a renegotiation.
fn tracks(rtc: &Rtc, mids: &[(String, String)], mut old: Vec<Track>) -> Result<Vec<Track>, String> {
    mids.iter()
        .map(|(mid, channel)| {
            let mid = Mid::from(mid.as_str());
            let pt = rtc::opus_pt(rtc, mid).ok_or_else(|| format!("mid {mid}: no Opus 48 kHz in the offer"))?;
            let out = match old.iter().position(|t| &t.channel == channel) {
                Some(i) => old.swap_remove(i).out,
                None => {
                    let (seq, ts) = rtc::random_start();
                    Restamper::new(seq, ts)
                }
            };
            Ok(Track { mid, channel: channel.clone(), pt, out })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::media::{Direction, MediaKind};

    /// A client's offer (str0m, full ICE) answered by an `Rtc` with `announce`'s candidates,
    /// as the media task answers.
    fn answer(announce: &Announce) -> String {
        let now = Instant::now();
        let mut client = rtc::config(false).build(now);
        client.add_local_candidate(Candidate::host("198.18.0.2:5000".parse().unwrap(), "udp").unwrap());
        let mut change = client.sdp_api();
        change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, _) = change.apply().unwrap();
        let offer = SdpOffer::from_sdp_string(&offer.to_sdp_string()).unwrap();
        let mut hub = rtc::config(true).build(now);
        for c in announce.candidates().unwrap() {
            hub.add_local_candidate(c);
        }
        hub.sdp_api().accept_offer(offer).unwrap().to_sdp_string()
    }

    fn candidate_lines(sdp: &str) -> Vec<String> {
        // `a=candidate:<foundation> 1 <proto> <prio> <addr> <port> typ <kind> [raddr ..] [tcptype ..]`
        sdp.lines()
            .filter_map(|l| l.strip_prefix("a=candidate:"))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let mut s = format!("{} {}:{} {}", f[2].to_lowercase(), f[4], f[5], f[7]);
                if let Some(i) = f.iter().position(|&w| w == "tcptype") {
                    s.push_str(&format!(" {}", f[i + 1]));
                }
                s
            })
            .collect()
    }

    #[test]
    fn answer_announces_host_passive_tcp_and_public_addresses() {
        let announce = Announce {
            hosts: vec!["198.18.0.1".parse().unwrap()],
            udp_port: 8443,
            tcp_port: Some(8444),
            public: vec![("203.0.113.7".parse().unwrap(), None), ("203.0.113.8".parse().unwrap(), Some(40000))],
        };
        let mut lines = candidate_lines(&answer(&announce));
        lines.sort();
        assert_eq!(
            lines,
            [
                "tcp 198.18.0.1:8444 host passive",
                "tcp 203.0.113.7:8444 host passive",
                "udp 198.18.0.1:8443 host",
                "udp 203.0.113.7:8443 host",
                "udp 203.0.113.8:40000 host",
            ]
        );
    }

    #[test]
    fn without_extras_the_answer_has_udp_host_candidates_only() {
        let announce = Announce {
            hosts: vec!["127.0.0.1".parse().unwrap(), "198.18.0.1".parse().unwrap()],
            udp_port: 9000,
            tcp_port: None,
            public: vec![],
        };
        let mut lines = candidate_lines(&answer(&announce));
        lines.sort();
        assert_eq!(lines, ["udp 127.0.0.1:9000 host", "udp 198.18.0.1:9000 host"]);
    }

    #[test]
    fn a_public_address_needs_a_host_of_its_ip_version() {
        let announce = Announce {
            hosts: vec!["198.18.0.1".parse().unwrap()],
            udp_port: 9000,
            tcp_port: None,
            public: vec![("2001:db8::7".parse().unwrap(), None)],
        };
        assert!(announce.candidates().unwrap_err().contains("2001:db8::7"));
    }
}
