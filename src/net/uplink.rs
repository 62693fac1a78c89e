//! The edge's client to another roipd hub (`[uplink] kind = "hub"`): the hub's signaling over a
//! WebSocket (tokio-tungstenite) and one str0m `Rtc` (full ICE, controlling; one sendrecv audio
//! m-line per channel, non-trickle offer) on its own UDP socket.
//!
//! [`start`] runs it forever: connect, hello → welcome, offer → answer, and once ICE and DTLS
//! are up, [`UplinkEvent::Up`]. Any loss (socket, hub error, ICE, silence) is one
//! [`UplinkEvent::Down`]; then it reconnects with exponential backoff and jitter (0.5 s to 30 s
//! by default), and the next `Up` carries the hub's new participant ids.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, TcpType, Transmit};
use str0m::{Candidate, Event, IceConnectionState, Input, Rtc};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::addrs::route_source;
use super::ice_tcp;
use super::peer_queue;
use super::protocol::{
    parse_server, Action, ClientMessage, FloorAction, Hello, MemberSpec, Offer, ServerMessage, MAX_MESSAGE_BYTES,
};
use super::reconnect::Reconnect;
use super::rtc::{self, Polled, RtcStats, StreamStats};
use super::{MemberRequest, UplinkEvent};
use crate::core::floor::{ParticipantId, ToArbiter};
use crate::core::restamp::Restamper;
use crate::pipeline::MediaPacket;

const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// A full-ICE client may see a transient `Disconnected`; only a lasting one is a loss.
const ICE_GRACE: Duration = Duration::from_secs(5);
/// Floor messages that arrive before media is up wait for `Up` (bounded).
const MAX_EARLY_FLOOR: usize = 64;
const COMMAND_QUEUE: usize = 512;

#[derive(Clone)]
pub struct UplinkOptions {
    /// The hub: `ws://host:port/ws`, or an `http://host:port` base (`/ws` is appended).
    pub url: String,
    /// Already read from its file; surrounding whitespace is ignored.
    pub token: String,
    /// How this box appears in the hub's rosters.
    pub name: String,
    /// One hub participant per entry; `Up` answers in this order.
    pub members: Vec<MemberRequest>,
    /// Local UDP address for media. `None`: any port on the wildcard of the hub's family.
    pub bind: Option<SocketAddr>,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Keepalive pings (the hub closes sessions silent for 30 s).
    pub ping_interval: Duration,
    /// Limit for each step: TCP+WebSocket connect, welcome, answer, ICE+DTLS.
    pub step_timeout: Duration,
    /// No message from the hub for this long (pongs included) is a loss.
    pub idle_timeout: Duration,
    /// Where each channel's RTT, jitter, loss and bitrate go while up (`uplink/<channel>`).
    pub stream_stats: StreamStats,
    /// For a `wss://`/`https://` hub: how it is verified ([`super::tls::client`]). Such a URL
    /// without it is refused.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for UplinkOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkOptions")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("name", &self.name)
            .field("members", &self.members)
            .field("bind", &self.bind)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl UplinkOptions {
    pub fn new(
        url: impl Into<String>,
        token: impl Into<String>,
        name: impl Into<String>,
        members: Vec<MemberRequest>,
    ) -> Self {
        Self {
            url: url.into(),
            token: token.into(),
            name: name.into(),
            members,
            bind: None,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            ping_interval: Duration::from_secs(10),
            step_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            stream_stats: StreamStats::default(),
            tls: None,
        }
    }
}

#[derive(Debug)]
enum Cmd {
    Floor(ParticipantId, ToArbiter),
    Media(String, MediaPacket),
    Emergency(crate::net::protocol::EmergencyCommand),
}

/// The router's side of the uplink. Cheap to clone; never blocks.
#[derive(Debug, Clone)]
pub struct UplinkHandle {
    cmds: mpsc::Sender<Cmd>,
    up: Arc<AtomicBool>,
    tasks: TaskTracker,
}

impl UplinkHandle {
    /// A floor request or release for one of our members (the hub's id from `Up`). Dropped
    /// while the uplink is down: the router treats every remote floor as lost on `Down`.
    /// `Request`'s priority is the one given in hello (the hub keeps it per member).
    pub fn floor(&self, member: ParticipantId, msg: ToArbiter) -> bool {
        self.up.load(Ordering::Relaxed) && self.cmds.try_send(Cmd::Floor(member, msg)).is_ok()
    }

    /// Raise or acknowledge an emergency at the hub (its channels are the hub's). Refused
    /// (false) while down: the router keeps it until the uplink is up.
    pub fn emergency(&self, cmd: crate::net::protocol::EmergencyCommand) -> bool {
        self.up.load(Ordering::Relaxed) && self.cmds.try_send(Cmd::Emergency(cmd)).is_ok()
    }

    /// An Opus packet for a channel's track. Dropped (false) while down or when the queue is
    /// full; never waits.
    pub fn media(&self, channel: &str, packet: MediaPacket) -> bool {
        self.up.load(Ordering::Relaxed) && self.cmds.try_send(Cmd::Media(channel.to_owned(), packet)).is_ok()
    }

    /// Signaling and media are up.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// After cancelling: wait until the uplink task has ended (it closes its WebSocket).
    pub async fn stopped(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Start the uplink; runs until `cancel`. Must be called inside a tokio runtime.
/// `events`: the router's bounded inbox ([`peer_queue::deliver`]: media that finds it full is
/// dropped, the rest waits for room).
pub fn start(options: UplinkOptions, events: mpsc::Sender<UplinkEvent>, cancel: CancellationToken) -> UplinkHandle {
    let (cmds_tx, cmds) = mpsc::channel(COMMAND_QUEUE);
    let up = Arc::new(AtomicBool::new(false));
    let tasks = TaskTracker::new();
    tasks.spawn(run(options, events, cmds, up.clone(), cancel));
    UplinkHandle { cmds: cmds_tx, up, tasks }
}

async fn run(
    options: UplinkOptions,
    events: mpsc::Sender<UplinkEvent>,
    mut cmds: mpsc::Receiver<Cmd>,
    up: Arc<AtomicBool>,
    cancel: CancellationToken,
) {
    let mut reconnect = Reconnect::new("uplink", options.backoff_min, options.backoff_max);
    // The last refusal reported, so a hub that keeps presenting the wrong certificate is one
    // event, not one per retry.
    let mut untrusted: Option<String> = None;
    loop {
        let mut link = Link { options: &options, events: &events, out: Vec::new(), up: &up, was_up: false };
        let result = link.run(&mut cmds, &cancel).await;
        link.flush().await;
        let was_up = link.was_up;
        up.store(false, Ordering::Relaxed);
        let reason = match result {
            Ok(()) => {
                if was_up {
                    let _ = peer_queue::deliver(&events, UplinkEvent::Down { reason: "uplink stopped".into() }).await;
                }
                return;
            }
            Err(reason) => reason,
        };
        let (report, delay) = reconnect.lost(was_up, &reason, rand::random::<f64>());
        if reason.starts_with(UNTRUSTED) {
            // Refused, not merely down: the state says so until something else happens. (A TLS
            // failure is never after an `Up`: the handshake comes first.)
            if untrusted.as_deref() != Some(reason.as_str()) {
                untrusted = Some(reason.clone());
                let _ = peer_queue::deliver(&events, UplinkEvent::Untrusted { reason }).await;
            }
        } else if report || untrusted.take().is_some() {
            let _ = peer_queue::deliver(&events, UplinkEvent::Down { reason }).await;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        // What the router queued before it saw `Down` is stale.
        while cmds.try_recv().is_ok() {}
    }
}

/// How a loss begins when the hub's certificate failed verification (a wrong pin, an unknown
/// CA, a wrong name): reported as [`UplinkEvent::Untrusted`] besides the usual `Down`.
pub const UNTRUSTED: &str = "hub not trusted: ";

/// `ws://…/ws` or `wss://…/ws` from what the config says (`http`/`https` bases get `/ws`).
pub fn ws_url(url: &str) -> Result<String, String> {
    let uri: Uri = url.trim().parse().map_err(|e| format!("uplink url {url:?}: {e}"))?;
    let scheme = uri.scheme_str().unwrap_or("");
    let (Some(authority), true) = (uri.authority(), matches!(scheme, "ws" | "http" | "wss" | "https")) else {
        return Err(format!("uplink url {url:?}: expected ws(s)://host:port[/ws] or http(s)://host:port"));
    };
    let path = uri.path().trim_end_matches('/');
    let ws_scheme = if matches!(scheme, "wss" | "https") { "wss" } else { "ws" };
    // A ws:// URL with a path names the socket itself; a base gets `/ws`.
    let path = if (scheme == ws_scheme && !path.is_empty()) || path.ends_with("/ws") {
        path.to_owned()
    } else {
        format!("{path}/ws")
    };
    Ok(format!("{ws_scheme}://{authority}{path}"))
}

/// The hub's address (for choosing our candidate and for the TCP connection), and its host
/// name (for TLS): host and port of a `ws(s)://` URL.
async fn hub_addr(url: &str) -> Result<(SocketAddr, String), String> {
    let uri: Uri = url.parse().map_err(|e| format!("{e}"))?;
    let host = uri.host().ok_or("no host")?.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("wss") { 443 } else { 80 });
    let mut addrs =
        tokio::net::lookup_host((host.as_str(), port)).await.map_err(|e| format!("resolving {host}: {e}"))?;
    let addr = addrs.next().ok_or_else(|| format!("{host} has no address"))?;
    drop(addrs);
    Ok((addr, host))
}

/// TCP, then TLS when the URL is `wss://`, then the WebSocket handshake.
async fn connect(o: &UplinkOptions, url: &str, hub: SocketAddr, host: &str) -> Result<Socket, String> {
    let tcp = TcpStream::connect(hub).await.map_err(|e| format!("connecting to {url}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = if url.starts_with("wss://") {
        let config = o.tls.clone().ok_or_else(|| format!("{url}: wss needs a TLS setting (ca_file or fingerprint)"))?;
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{url}: host {host:?} is no TLS server name: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| {
            let verify = e
                .get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
                .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_) | rustls::Error::General(_)));
            if verify {
                format!("{UNTRUSTED}{url}: {e}")
            } else {
                format!("TLS with {url}: {e}")
            }
        })?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let config = super::ws_client_config(MAX_MESSAGE_BYTES);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .map_err(|e| format!("connecting to {url}: {e}"))?;
    Ok(ws)
}

/// The uplink's byte stream: a TCP socket, or TLS over one.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

type Socket = WebSocketStream<Box<dyn Io>>;

struct Track {
    mid: Mid,
    channel: String,
    pt: Option<Pt>,
    out: Restamper,
}

/// One connection attempt and, if it comes up, its life.
struct Link<'a> {
    options: &'a UplinkOptions,
    events: &'a mpsc::Sender<UplinkEvent>,
    /// Events for `events`, in order, until the loop's next [`Link::flush`].
    out: Vec<UplinkEvent>,
    up: &'a AtomicBool,
    was_up: bool,
}

enum Step {
    Stop,
    Ws(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Datagram(std::io::Result<(usize, SocketAddr)>),
    /// An ICE-TCP frame from the hub.
    Frame(SocketAddr, Vec<u8>),
    Timer,
    Cmd(Option<Cmd>),
    Ping,
    Watchdog,
}

impl Link<'_> {
    /// Ok on cancel; Err(reason) on any loss.
    async fn run(&mut self, cmds: &mut mpsc::Receiver<Cmd>, cancel: &CancellationToken) -> Result<(), String> {
        let o = self.options;
        let url = ws_url(&o.url)?;
        let (hub, host) = hub_addr(&url).await?;
        let started = Instant::now();
        let mut ws = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = timeout(o.step_timeout, connect(o, &url, hub, &host)) => r
                .map_err(|_| format!("connecting to {url} timed out"))??,
        };
        debug!(elapsed_ms = started.elapsed().as_secs_f64() * 1e3, %url, "hub connected");

        // hello → welcome
        let hello = ClientMessage::Hello(Hello {
            token: o.token.trim().to_owned(),
            name: o.name.clone(),
            members: o
                .members
                .iter()
                .map(|m| MemberSpec { key: m.key.clone(), channel: m.channel.clone(), priority: m.priority.0 })
                .collect(),
        });
        send(&mut ws, &hello).await?;
        let mut early_floor = Vec::new();
        let welcome = loop {
            match expect(&mut ws, o.step_timeout, cancel, "welcome").await? {
                None => return Ok(()),
                Some(ServerMessage::Welcome(w)) => break w,
                Some(other) => self.early(other, &mut early_floor),
            }
        };
        let mut members = Vec::with_capacity(o.members.len());
        for m in &o.members {
            let id = welcome
                .members
                .iter()
                .find(|w| w.key == m.key && w.channel == m.channel)
                .ok_or_else(|| format!("welcome lacks member {}/{}", m.key, m.channel))?
                .id;
            members.push((m.clone(), ParticipantId(id)));
        }
        debug!(peer = welcome.peer, "welcome");

        // Media socket and offer. Our candidate is the address our kernel uses towards the hub.
        let bind = o.bind.unwrap_or_else(|| match hub {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        });
        let socket = UdpSocket::bind(bind).await.map_err(|e| format!("binding media socket {bind}: {e}"))?;
        let bound = socket.local_addr().map_err(|e| e.to_string())?;
        let ip: IpAddr = if bound.ip().is_unspecified() {
            route_source(hub).ok_or_else(|| format!("no route to the hub at {hub}"))?
        } else {
            bound.ip()
        };
        let local = SocketAddr::new(ip, bound.port());
        let mut rtc = rtc::config(false).set_stats_interval(Some(rtc::STATS_INTERVAL)).build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| format!("candidate {local}: {e}"))?);
        // ICE-TCP, active (RFC 6544: port 9): pairs with a hub's passive TCP candidates, so an
        // edge whose UDP is blocked still connects; the connection opens on the first check.
        let tcp_local = SocketAddr::new(ip, 9);
        let tcp = Candidate::builder().tcp().host(tcp_local).tcptype(TcpType::Active).build();
        rtc.add_local_candidate(tcp.map_err(|e| format!("TCP candidate {tcp_local}: {e}"))?);
        let mut change = rtc.sdp_api();
        let mut tracks = Vec::new();
        for (m, _) in &members {
            if tracks.iter().any(|t: &Track| t.channel == m.channel) {
                continue;
            }
            let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
            let (seq, ts) = rtc::random_start();
            tracks.push(Track { mid, channel: m.channel.clone(), pt: None, out: Restamper::new(seq, ts) });
        }
        if let Some((offer, pending)) = change.apply() {
            let mids = tracks.iter().map(|t| (t.mid.to_string(), t.channel.clone())).collect();
            let offered_at = Instant::now();
            send(&mut ws, &ClientMessage::Offer(Offer { sdp: offer.to_sdp_string(), mids })).await?;
            let answer = loop {
                match expect(&mut ws, o.step_timeout, cancel, "answer").await? {
                    None => return Ok(()),
                    Some(ServerMessage::Answer(a)) => break a,
                    Some(other) => self.early(other, &mut early_floor),
                }
            };
            let answer = SdpAnswer::from_sdp_string(&answer.sdp).map_err(|e| format!("hub's answer: {e}"))?;
            rtc.sdp_api().accept_answer(pending, answer).map_err(|e| format!("hub's answer: {e}"))?;
            for t in &mut tracks {
                t.pt = rtc::opus_pt(&rtc, t.mid);
            }
            debug!(answer_ms = offered_at.elapsed().as_millis() as u64, "answer applied");
        } else {
            // No members, no media: signaling alone is "up".
            self.go_up(&members, &mut early_floor);
        }

        let mut media = Media {
            rtc,
            socket,
            local,
            tcp: ice_tcp::Active::new(),
            tcp_local,
            tracks,
            connected: false,
            deadline: Instant::now(),
            stats: RtcStats::default(),
            stream_stats: o.stream_stats.clone(),
        };
        let started = Instant::now();
        let mut last_rx = Instant::now();
        let mut ice_lost: Option<Instant> = None;
        let mut ping = tokio::time::interval_at((Instant::now() + o.ping_interval).into(), o.ping_interval);
        let mut buf = vec![0u8; rtc::DATAGRAM_BUF];
        loop {
            // Drain str0m after every input (and before the first wait).
            for e in media.drive()? {
                match e {
                    Happened::Connected => {
                        info!(connect_ms = started.elapsed().as_millis() as u64, "uplink media connected");
                        self.go_up(&members, &mut early_floor);
                    }
                    Happened::IceLost => {
                        ice_lost.get_or_insert_with(Instant::now);
                    }
                    Happened::IceBack => ice_lost = None,
                    Happened::Media(channel, packet) => self.out.push(UplinkEvent::Media { channel, packet }),
                }
            }
            self.flush().await;
            let mut watchdog = last_rx + o.idle_timeout;
            if !self.was_up {
                watchdog = watchdog.min(started + o.step_timeout);
            }
            if let Some(t) = ice_lost {
                watchdog = watchdog.min(t + ICE_GRACE);
            }
            let step = tokio::select! {
                _ = cancel.cancelled() => Step::Stop,
                m = ws.next() => Step::Ws(m),
                r = media.socket.recv_from(&mut buf) => Step::Datagram(r),
                Some((source, frame)) = media.tcp.recv() => Step::Frame(source, frame),
                _ = tokio::time::sleep_until(media.deadline.into()) => Step::Timer,
                c = cmds.recv() => Step::Cmd(c),
                _ = ping.tick() => Step::Ping,
                _ = tokio::time::sleep_until(watchdog.into()) => Step::Watchdog,
            };
            match step {
                Step::Stop | Step::Cmd(None) => {
                    let _ = timeout(SEND_TIMEOUT, ws.close(None)).await;
                    return Ok(());
                }
                Step::Ws(None) => return Err("the hub closed the connection".into()),
                Step::Ws(Some(Err(e))) => return Err(format!("signaling: {e}")),
                Step::Ws(Some(Ok(m))) => {
                    last_rx = Instant::now();
                    match m {
                        Message::Text(t) => self.hub_message(t.as_str(), &mut early_floor),
                        Message::Close(frame) => {
                            let why =
                                frame.map(|f| format!(" ({} {})", u16::from(f.code), f.reason)).unwrap_or_default();
                            return Err(format!("the hub closed the connection{why}"));
                        }
                        _ => {}
                    }
                }
                Step::Datagram(Ok((n, source))) => {
                    let now = Instant::now();
                    if let Some(input) = rtc::receive(now, source, media.local, &buf[..n]) {
                        if media.rtc.accepts(&input) {
                            media.rtc.handle_input(input).map_err(|e| format!("media: {e}"))?;
                        }
                    }
                }
                Step::Datagram(Err(e)) => debug!(error = %e, "UDP receive"),
                Step::Frame(source, frame) => {
                    let now = Instant::now();
                    if let Some(input) = rtc::receive_on(Protocol::Tcp, now, source, media.tcp_local, &frame) {
                        if media.rtc.accepts(&input) {
                            media.rtc.handle_input(input).map_err(|e| format!("media: {e}"))?;
                        }
                    }
                }
                Step::Timer => {
                    media.rtc.handle_input(Input::Timeout(Instant::now())).map_err(|e| format!("media: {e}"))?
                }
                Step::Cmd(Some(Cmd::Emergency(cmd))) => {
                    if self.was_up {
                        send(&mut ws, &ClientMessage::Emergency(cmd)).await?;
                    }
                }
                Step::Cmd(Some(Cmd::Floor(member, msg))) => {
                    if self.was_up {
                        let action = match msg {
                            ToArbiter::Request { .. } => Action::Request,
                            ToArbiter::Release => Action::Release,
                        };
                        send(&mut ws, &ClientMessage::Floor(FloorAction { id: member.0, action })).await?;
                    }
                }
                Step::Cmd(Some(Cmd::Media(channel, packet))) => media.write(&channel, &packet),
                Step::Ping => send(&mut ws, &ClientMessage::Ping).await?,
                Step::Watchdog => {
                    let now = Instant::now();
                    return Err(if ice_lost.is_some_and(|t| now >= t + ICE_GRACE) {
                        "ICE disconnected".to_owned()
                    } else if now >= last_rx + o.idle_timeout {
                        format!("nothing from the hub for {} s", o.idle_timeout.as_secs())
                    } else {
                        format!("media did not connect within {} s", o.step_timeout.as_secs())
                    });
                }
            }
        }
    }

    /// Hand the events over: media that finds the router's inbox full is dropped, the rest
    /// waits for room (the hub's messages wait in the socket meanwhile).
    async fn flush(&mut self) {
        for e in self.out.drain(..) {
            let _ = peer_queue::deliver(self.events, e).await;
        }
    }

    fn go_up(&mut self, members: &[(MemberRequest, ParticipantId)], early_floor: &mut Vec<UplinkEvent>) {
        if self.was_up {
            return;
        }
        self.was_up = true;
        self.up.store(true, Ordering::Relaxed);
        self.out.push(UplinkEvent::Up { members: members.to_vec() });
        self.out.append(early_floor);
    }

    /// Hub messages while waiting for welcome/answer: floor ones wait for `Up`.
    fn early(&mut self, m: ServerMessage, early_floor: &mut Vec<UplinkEvent>) {
        if let Some(e) = floor_event(m) {
            if early_floor.len() < MAX_EARLY_FLOOR {
                early_floor.push(e);
            }
        }
    }

    fn hub_message(&mut self, text: &str, early_floor: &mut Vec<UplinkEvent>) {
        match parse_server(text) {
            Ok(ServerMessage::Error(e)) => warn!(code = e.code.as_str(), message = %e.message, "hub reports an error"),
            Ok(m) => {
                if self.was_up {
                    if let Some(e) = floor_event(m) {
                        self.out.push(e);
                    }
                } else {
                    self.early(m, early_floor);
                }
            }
            // A newer hub may send what we do not know; nothing to act on.
            Err(e) => debug!(error = %e, "ignoring hub message"),
        }
    }
}

fn floor_event(m: ServerMessage) -> Option<UplinkEvent> {
    let f = match m {
        ServerMessage::Floor(f) => f,
        ServerMessage::Emergency(e) => return Some(UplinkEvent::Emergency(e)),
        _ => return None,
    };
    match f.to_router() {
        Ok((msg, holder_name)) => {
            Some(UplinkEvent::Floor { channel: f.channel, member: f.id.map(ParticipantId), msg, holder_name })
        }
        Err(e) => {
            debug!(error = %e, "ignoring floor message");
            None
        }
    }
}

async fn send(ws: &mut Socket, msg: &ClientMessage) -> Result<(), String> {
    match timeout(SEND_TIMEOUT, ws.send(Message::Text(msg.to_json().into()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("signaling: {e}")),
        Err(_) => Err("signaling: send timed out".into()),
    }
}

/// The next protocol message while waiting for `what`; an `error` from the hub is the end.
/// Ok(None): cancelled.
async fn expect(
    ws: &mut Socket,
    limit: Duration,
    cancel: &CancellationToken,
    what: &str,
) -> Result<Option<ServerMessage>, String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let m = tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            m = tokio::time::timeout_at(deadline, ws.next()) => m.map_err(|_| format!("no {what} from the hub"))?,
        };
        match m {
            None => return Err(format!("the hub closed the connection before {what}")),
            Some(Err(e)) => return Err(format!("signaling: {e}")),
            Some(Ok(Message::Text(t))) => match parse_server(t.as_str()) {
                Ok(ServerMessage::Error(e)) => return Err(format!("hub refused: {}: {}", e.code.as_str(), e.message)),
                Ok(m) => return Ok(Some(m)),
                Err(e) => debug!(error = %e, "ignoring hub message"),
            },
            Some(Ok(Message::Close(frame))) => {
                let why = frame.map(|f| format!(" ({} {})", u16::from(f.code), f.reason)).unwrap_or_default();
                return Err(format!("the hub closed the connection before {what}{why}"));
            }
            Some(Ok(_)) => {}
        }
    }
}

struct Media {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    /// ICE-TCP connections to the hub's passive candidates, and our active candidate's address.
    tcp: ice_tcp::Active,
    tcp_local: SocketAddr,
    tracks: Vec<Track>,
    connected: bool,
    deadline: Instant,
    stats: RtcStats,
    stream_stats: StreamStats,
}

/// The uplink's streams in the metrics: one per channel.
fn stream_key(channel: &str) -> String {
    format!("uplink/{channel}")
}

/// A link that ends takes its streams out of the metrics.
impl Drop for Media {
    fn drop(&mut self) {
        for t in &self.tracks {
            self.stream_stats.remove(&stream_key(&t.channel));
        }
    }
}

enum Happened {
    Connected,
    IceLost,
    IceBack,
    Media(String, MediaPacket),
}

impl Media {
    /// Drain str0m until its next deadline.
    fn drive(&mut self) -> Result<Vec<Happened>, String> {
        let mut out = Vec::new();
        loop {
            if !self.rtc.is_alive() {
                return Err("media session closed".into());
            }
            let (socket, tcp) = (&self.socket, &mut self.tcp);
            let send = |t: Transmit| match t.proto {
                Protocol::Udp => rtc::send_udp(socket, &t),
                _ => tcp.send(t.destination, &t.contents),
            };
            let event = match rtc::poll_with(&mut self.rtc, send).map_err(|e| format!("media: {e}"))? {
                Polled::Timeout(t) => {
                    self.deadline = t;
                    return Ok(out);
                }
                Polled::Event(e) => e,
            };
            match event {
                Event::Connected => {
                    self.connected = true;
                    out.push(Happened::Connected);
                }
                Event::IceConnectionStateChange(IceConnectionState::Disconnected) => out.push(Happened::IceLost),
                Event::IceConnectionStateChange(IceConnectionState::Connected | IceConnectionState::Completed) => {
                    out.push(Happened::IceBack)
                }
                Event::Closed => return Err("the hub closed the media session".into()),
                Event::RtpPacket(p) => {
                    let Some((mid, pt, packet)) = rtc::incoming(&mut self.rtc, p) else { continue };
                    if let Some(t) = self.tracks.iter().find(|t| t.mid == mid && t.pt == Some(pt)) {
                        out.push(Happened::Media(t.channel.clone(), packet));
                    }
                }
                other => {
                    let Some(changed) = self.stats.take(&other) else { continue };
                    for t in self.tracks.iter().filter(|t| changed.contains(&t.mid)) {
                        self.stream_stats.set(&stream_key(&t.channel), self.stats.metrics(t.mid));
                    }
                }
            }
        }
    }

    fn write(&mut self, channel: &str, packet: &MediaPacket) {
        if !self.connected {
            return;
        }
        let Some(t) = self.tracks.iter_mut().find(|t| t.channel == channel) else { return };
        let Some(pt) = t.pt else { return };
        let now = Instant::now();
        if let Some(stamp) = t.out.stamp(now, packet) {
            rtc::write(&mut self.rtc, t.mid, pt, stamp, now, &packet.payload);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_url_from_config() {
        assert_eq!(ws_url("ws://hub:8080").unwrap(), "ws://hub:8080/ws");
        assert_eq!(ws_url("ws://hub:8080/").unwrap(), "ws://hub:8080/ws");
        assert_eq!(ws_url("ws://hub:8080/ws").unwrap(), "ws://hub:8080/ws");
        assert_eq!(ws_url("ws://hub:8080/roipd/socket").unwrap(), "ws://hub:8080/roipd/socket");
        assert_eq!(ws_url("http://10.0.0.1:8080").unwrap(), "ws://10.0.0.1:8080/ws");
        assert_eq!(ws_url(" http://hub/roipd/ ").unwrap(), "ws://hub/roipd/ws");
        assert_eq!(ws_url("http://[::1]:8080/ws").unwrap(), "ws://[::1]:8080/ws");
        assert_eq!(ws_url("wss://hub/ws").unwrap(), "wss://hub/ws");
        assert_eq!(ws_url("wss://hub:8443").unwrap(), "wss://hub:8443/ws");
        assert_eq!(ws_url("https://hub").unwrap(), "wss://hub/ws");
        assert_eq!(ws_url("https://hub/roipd").unwrap(), "wss://hub/roipd/ws");
        assert!(ws_url("hub:8080").is_err());
        assert!(ws_url("ftp://hub").is_err());
        assert!(ws_url("").is_err());
    }
}
