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

pub(crate) struct MediaLoop {
    socket: UdpSocket,
    local: SocketAddr,
    candidates: Vec<IpAddr>,
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
    Timeout,
    RecvError(std::io::Error),
}

impl MediaLoop {
    pub fn new(
        socket: UdpSocket,
        candidates: Vec<IpAddr>,
        cert: DtlsCert,
        events: mpsc::Sender<HubEvent>,
        stream_stats: StreamStats,
    ) -> Self {
        let local = socket.local_addr().expect("a bound socket has an address");
        Self { socket, local, candidates, cert, peers: HashMap::new(), events, stream_stats }
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
                _ = crate::wait::until(deadline) => Step::Timeout,
            };
            match step {
                Step::Stop => break,
                Step::Cmd(cmd) => self.command(cmd).await,
                Step::Datagram(n, source) => self.datagram(source, &buf[..n]),
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
            for ip in &self.candidates {
                let c = Candidate::host(SocketAddr::new(*ip, self.local.port()), "udp")
                    .map_err(|e| format!("candidate {ip}: {e}"))?;
                rtc.add_local_candidate(c);
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

    fn datagram(&mut self, source: SocketAddr, data: &[u8]) {
        let now = Instant::now();
        let destination = self.destination(source);
        let Some(input) = rtc::receive(now, source, destination, data) else { return };
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
            let event = match rtc::poll(&mut p.rtc, &self.socket) {
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
