//! The Janus uplink's driver: a WebSocket to Janus feeding a [`Session`], one UDP socket
//! shared by a str0m `Rtc` per publisher (send-only, our offer) and per subscription
//! (receive-only, Janus's offers, renegotiated as publishers come and go), and the loop that
//! rebuilds all of it with backoff and jitter whenever the session is lost.
//!
//! Thin on purpose: what to say to Janus and what its replies mean is [`Session`]'s; this file
//! only moves text, datagrams, SDP and RTP between Janus, str0m and the router.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::{Candidate, Event, IceConnectionState, Input, Rtc};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, trace, warn};

use super::protocol::{SubStream, MAX_MESSAGE_BYTES, SUBPROTOCOL};
use super::session::{ChannelSpec, Output, RoomFault, Session, SessionConfig};
use super::JanusEvent;
use crate::core::restamp::Restamper;
use crate::net::addrs::route_source;
use crate::net::peer_queue;
use crate::net::protocol::add_end_of_candidates;
use crate::net::reconnect::Reconnect;
use crate::net::rtc::{self, Polled};
use crate::pipeline::MediaPacket;

const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// A transient ICE `Disconnected` is normal; only a lasting one is a loss.
const ICE_GRACE: Duration = Duration::from_secs(5);
const COMMAND_QUEUE: usize = 512;
/// While Janus does not accept connections at all (it is restarting), retry at least this
/// often (drawn in its upper half): a refused connection costs Janus nothing, and a fleet is
/// back within about a second of Janus listening again. Failures after connecting back off
/// as configured.
const UNREACHABLE_RETRY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct JanusOptions {
    /// Janus's WebSocket API: `ws://host:8188` (a path, if any, is kept).
    pub url: String,
    /// Janus's `api_secret`, if it is configured with one.
    pub api_secret: Option<String>,
    /// One room per channel.
    pub channels: Vec<ChannelSpec>,
    /// Local address for media (all connections share one UDP socket). `None`: any port on
    /// the address the kernel would use to reach Janus.
    pub bind: Option<SocketAddr>,
    /// Reconnect delays: exponential from `backoff_min` to `backoff_max`, each drawn in the
    /// upper half (equal jitter) so a fleet does not reconnect in lockstep. The default cap
    /// is 5 s; while Janus refuses connections (restarting) a box retries at least every
    /// second, so it is back within ~1 s of Janus listening again after an outage of any
    /// length (a refused TCP connection costs Janus nothing).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Keepalive interval, well inside Janus's 60 s `session_timeout`.
    pub keepalive: Duration,
    /// A request without its reply for this long loses the session.
    pub request_timeout: Duration,
    /// Limit for connecting the WebSocket, and for everything from there to `Up`; also for a
    /// subscription's media to connect after its answer.
    pub step_timeout: Duration,
    /// Media from the router goes out only while `set_sending(channel, true)`. Janus holds
    /// back a publisher configured with `send: false` anyway; tests turn this off to show it.
    pub gate_media: bool,
}

impl std::fmt::Debug for JanusOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JanusOptions")
            .field("url", &self.url)
            .field("api_secret", &self.api_secret.as_ref().map(|_| "<redacted>"))
            .field("channels", &self.channels)
            .field("bind", &self.bind)
            .finish_non_exhaustive()
    }
}

impl JanusOptions {
    pub fn new(url: impl Into<String>, channels: Vec<ChannelSpec>) -> Self {
        Self {
            url: url.into(),
            api_secret: None,
            channels,
            bind: None,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(5),
            keepalive: Duration::from_secs(25),
            request_timeout: Duration::from_secs(10),
            step_timeout: Duration::from_secs(10),
            gate_media: true,
        }
    }
}

#[derive(Debug)]
enum Cmd {
    Sending(usize, bool),
    Listen(usize, bool),
    Moderate(usize, u64, bool),
    Media(usize, MediaPacket),
}

/// The router's side of the Janus uplink. Cheap to clone; never blocks.
#[derive(Debug, Clone)]
pub struct JanusHandle {
    cmds: mpsc::Sender<Cmd>,
    channels: Arc<[String]>,
    up: Arc<AtomicBool>,
    /// What the router asked for, per channel; cleared on every `Down`.
    sending: Arc<[AtomicBool]>,
    gate: bool,
    tasks: TaskTracker,
}

impl JanusHandle {
    fn index(&self, channel: &str) -> Option<usize> {
        self.channels.iter().position(|c| c == channel)
    }

    /// Let Janus relay this box's stream in `channel` (true only while a port here holds the
    /// floor). False while down or for an unknown channel; `Down` turns every channel off.
    pub fn set_sending(&self, channel: &str, on: bool) -> bool {
        let Some(i) = self.index(channel) else { return false };
        if !self.is_up() {
            return false;
        }
        self.sending[i].store(on, Ordering::Relaxed);
        self.cmds.try_send(Cmd::Sending(i, on)).is_ok()
    }

    /// Listen to a channel's audio (default) or mute it; kept across reconnects.
    pub fn listen(&self, channel: &str, on: bool) -> bool {
        let Some(i) = self.index(channel) else { return false };
        self.cmds.try_send(Cmd::Listen(i, on)).is_ok()
    }

    /// Mute or unmute publisher `feed` in `channel`'s room for everyone (needs the room
    /// secret); the answer comes as [`JanusEvent::ModerateDone`].
    pub fn moderate(&self, channel: &str, feed: u64, mute: bool) -> bool {
        let Some(i) = self.index(channel) else { return false };
        self.is_up() && self.cmds.try_send(Cmd::Moderate(i, feed, mute)).is_ok()
    }

    /// An Opus packet for `channel`. Dropped (false) while down, while not sending (unless
    /// `gate_media` is off) or when the queue is full; never waits.
    pub fn media(&self, channel: &str, packet: MediaPacket) -> bool {
        let Some(i) = self.index(channel) else { return false };
        if !self.is_up() || (self.gate && !self.sending[i].load(Ordering::Relaxed)) {
            return false;
        }
        self.cmds.try_send(Cmd::Media(i, packet)).is_ok()
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// After cancelling: wait until the task has ended (it destroys its Janus session).
    pub async fn stopped(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Start the Janus uplink; runs until `cancel`. Must be called inside a tokio runtime.
/// `events`: bounded ([`peer_queue::deliver`]: media dropped when full, the rest waits for room).
pub fn start(options: JanusOptions, events: mpsc::Sender<JanusEvent>, cancel: CancellationToken) -> JanusHandle {
    let (cmds_tx, cmds) = mpsc::channel(COMMAND_QUEUE);
    let channels: Arc<[String]> = options.channels.iter().map(|c| c.channel.clone()).collect();
    let sending: Arc<[AtomicBool]> = options.channels.iter().map(|_| AtomicBool::new(false)).collect();
    let up = Arc::new(AtomicBool::new(false));
    let tasks = TaskTracker::new();
    let shared = Shared { up: up.clone(), sending: sending.clone() };
    let gate = options.gate_media;
    tasks.spawn(run(options, events, cmds, shared, cancel));
    JanusHandle { cmds: cmds_tx, channels, up, sending, gate, tasks }
}

struct Shared {
    up: Arc<AtomicBool>,
    sending: Arc<[AtomicBool]>,
}

impl Shared {
    fn down(&self) {
        self.up.store(false, Ordering::Relaxed);
        for s in self.sending.iter() {
            s.store(false, Ordering::Relaxed);
        }
    }
}

async fn run(
    options: JanusOptions,
    events: mpsc::Sender<JanusEvent>,
    mut cmds: mpsc::Receiver<Cmd>,
    shared: Shared,
    cancel: CancellationToken,
) {
    let mut reconnect = Reconnect::new("Janus uplink", options.backoff_min, options.backoff_max);
    let mut listen = vec![true; options.channels.len()];
    // The refusal last reported: a room refused again on every retry is reported once.
    let mut reported_refusal: Option<(String, RoomFault)> = None;
    loop {
        let mut link = Link {
            options: &options,
            events: &events,
            out: Vec::new(),
            shared: &shared,
            listen: &mut listen,
            was_up: false,
            refused: None,
            reached: false,
        };
        let result = link.run(&mut cmds, &cancel).await;
        link.flush().await;
        let (was_up, refused, reached) = (link.was_up, link.refused.take(), link.reached);
        shared.down();
        if was_up {
            reported_refusal = None;
        }
        let reason = match result {
            Ok(()) => {
                if was_up {
                    let _ = peer_queue::deliver(&events, JanusEvent::Down { reason: "uplink stopped".into() }).await;
                }
                return;
            }
            Err(reason) => reason,
        };
        let (report, delay) = reconnect.lost(was_up, &reason, rand::random::<f64>());
        let delay =
            if reached { delay } else { delay.min(UNREACHABLE_RETRY.mul_f64(0.5 + 0.5 * rand::random::<f64>())) };
        if report {
            let _ = peer_queue::deliver(&events, JanusEvent::Down { reason }).await;
        }
        // After the `Down`: the refusal is the last word on why the link is not up.
        if let Some(JanusEvent::RoomRefused { channel, fault, reason }) = refused {
            let key = Some((channel.clone(), fault));
            if reported_refusal != key {
                warn!(%channel, fault = fault.code(), %reason, "Janus room refused; nothing is published into it");
                reported_refusal = key;
                let _ = peer_queue::deliver(&events, JanusEvent::RoomRefused { channel, fault, reason }).await;
            }
        }
        let wake = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(wake) => break,
                // Listen settings keep; everything else queued while down is stale.
                c = cmds.recv() => match c {
                    None => return,
                    Some(Cmd::Listen(i, on)) => listen[i] = on,
                    Some(_) => {}
                },
            }
        }
    }
}

/// `ws://host:port[/path]` from the config (only plain `ws`: this build has no TLS for it).
pub fn ws_url(url: &str) -> Result<String, String> {
    let url = url.trim();
    let uri: Uri = url.parse().map_err(|e| format!("Janus url {url:?}: {e}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("ws"), Some(_)) => Ok(url.to_owned()),
        (Some("wss"), _) => Err(format!("Janus url {url:?}: TLS (wss) is not supported by this build")),
        _ => Err(format!("Janus url {url:?}: expected ws://host:port")),
    }
}

async fn janus_addr(url: &str) -> Result<SocketAddr, String> {
    let uri: Uri = url.parse().map_err(|e| format!("{e}"))?;
    let host = uri.host().ok_or("no host")?.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let mut addrs =
        tokio::net::lookup_host((host.as_str(), port)).await.map_err(|e| format!("resolving {host}: {e}"))?;
    addrs.next().ok_or_else(|| format!("{host} has no address"))
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(url: &str, limit: Duration) -> Result<Socket, String> {
    let mut request = url.into_client_request().map_err(|e| format!("Janus url {url}: {e}"))?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(SUBPROTOCOL));
    let config = crate::net::ws_client_config(MAX_MESSAGE_BYTES);
    let (ws, _) = timeout(limit, tokio_tungstenite::connect_async_with_config(request, Some(config), true))
        .await
        .map_err(|_| format!("connecting to {url} timed out"))?
        .map_err(|e| format!("connecting to {url}: {e}"))?;
    Ok(ws)
}

async fn send(ws: &mut Socket, text: String) -> Result<(), String> {
    match timeout(SEND_TIMEOUT, ws.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("Janus socket: {e}")),
        Err(_) => Err("Janus socket: send timed out".into()),
    }
}

/// One str0m connection: a channel's publisher or subscription.
struct Peer {
    rtc: Rtc,
    connected: bool,
    deadline: Instant,
    ice_lost: Option<Instant>,
    /// Publisher: our offer, until Janus answers.
    pending: Option<SdpPendingOffer>,
    /// Publisher: our m-line and Opus payload type, and the numbering of what we send.
    mid: Option<Mid>,
    pt: Option<Pt>,
    out: Option<Restamper>,
    /// Subscription: mid → publisher id.
    feeds: HashMap<Mid, u64>,
    /// Subscription: when our first answer went out (its media must connect in time).
    answered: Option<Instant>,
}

impl Peer {
    fn new(rtc: Rtc, now: Instant) -> Self {
        Self {
            rtc,
            connected: false,
            deadline: now,
            ice_lost: None,
            pending: None,
            mid: None,
            pt: None,
            out: None,
            feeds: HashMap::new(),
            answered: None,
        }
    }
}

enum Happened {
    Connected,
    Media(u64, MediaPacket),
}

/// Drain one peer's output until its next deadline.
fn drive(peer: &mut Peer, socket: &UdpSocket) -> Result<Vec<Happened>, String> {
    let mut out = Vec::new();
    loop {
        if !peer.rtc.is_alive() {
            return Err("media connection closed".into());
        }
        let event = match rtc::poll(&mut peer.rtc, socket).map_err(|e| format!("media: {e}"))? {
            Polled::Timeout(t) => {
                peer.deadline = t;
                return Ok(out);
            }
            Polled::Event(e) => e,
        };
        match event {
            Event::Connected => {
                peer.connected = true;
                out.push(Happened::Connected);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                peer.ice_lost.get_or_insert_with(Instant::now);
            }
            Event::IceConnectionStateChange(IceConnectionState::Connected | IceConnectionState::Completed) => {
                peer.ice_lost = None;
            }
            Event::RtpPacket(p) => {
                let Some((mid, _pt, packet)) = rtc::incoming(&mut peer.rtc, p) else { continue };
                if let Some(&feed) = peer.feeds.get(&mid) {
                    out.push(Happened::Media(feed, packet));
                }
            }
            _ => {}
        }
    }
}

/// Every connection of one session, on one socket.
struct Media {
    socket: UdpSocket,
    local: SocketAddr,
    publishers: Vec<Option<Peer>>,
    subscribers: Vec<Option<Peer>>,
}

impl Media {
    fn new_rtc(&self, now: Instant) -> Result<Rtc, String> {
        let mut rtc = rtc::config(false).build(now);
        let c = Candidate::host(self.local, "udp").map_err(|e| format!("candidate {}: {e}", self.local))?;
        rtc.add_local_candidate(c);
        Ok(rtc)
    }

    fn peers(&mut self) -> impl Iterator<Item = (usize, bool, &mut Peer)> {
        let p = self.publishers.iter_mut().enumerate().filter_map(|(i, p)| p.as_mut().map(|p| (i, true, p)));
        let s = self.subscribers.iter_mut().enumerate().filter_map(|(i, p)| p.as_mut().map(|p| (i, false, p)));
        p.chain(s)
    }

    /// Drain every connection until its next deadline.
    fn drive_all(&mut self) -> Result<Vec<(usize, bool, Happened)>, String> {
        let mut happened = Vec::new();
        let publishers = self.publishers.iter_mut().enumerate().map(|(i, p)| (i, true, p));
        let subscribers = self.subscribers.iter_mut().enumerate().map(|(i, p)| (i, false, p));
        for (ch, is_pub, peer) in publishers.chain(subscribers) {
            if let Some(peer) = peer {
                happened.extend(drive(peer, &self.socket)?.into_iter().map(|h| (ch, is_pub, h)));
            }
        }
        Ok(happened)
    }

    fn deadline(&self) -> Option<Instant> {
        self.publishers.iter().chain(&self.subscribers).flatten().map(|p| p.deadline).min()
    }
}

/// One session's life: connect, build, run until lost or cancelled.
struct Link<'a> {
    options: &'a JanusOptions,
    events: &'a mpsc::Sender<JanusEvent>,
    /// Events for `events`, in order, until the loop's next [`Link::flush`].
    out: Vec<JanusEvent>,
    shared: &'a Shared,
    listen: &'a mut Vec<bool>,
    was_up: bool,
    /// A room refused in this session (`JanusEvent::RoomRefused`), reported after its end.
    refused: Option<JanusEvent>,
    /// The WebSocket to Janus connected (else Janus is not listening, or not reachable).
    reached: bool,
}

enum Step {
    Stop,
    Ws(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Datagram(std::io::Result<(usize, SocketAddr)>),
    Timer,
    Cmd(Option<Cmd>),
    Watchdog,
}

impl Link<'_> {
    /// Ok on cancel; Err(reason) when the session is lost.
    /// Hand the events over: media that finds the inbox full is dropped, the rest waits.
    async fn flush(&mut self) {
        for e in self.out.drain(..) {
            let _ = peer_queue::deliver(self.events, e).await;
        }
    }

    async fn run(&mut self, cmds: &mut mpsc::Receiver<Cmd>, cancel: &CancellationToken) -> Result<(), String> {
        let o = self.options;
        let started = Instant::now();
        let mut steps_from = started;
        let url = ws_url(&o.url)?;
        let janus = janus_addr(&url).await?;
        let mut ws = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = connect(&url, o.step_timeout) => r?,
        };
        self.reached = true;
        let bind = match o.bind {
            Some(b) => b,
            None => SocketAddr::new(route_source(janus).ok_or_else(|| format!("no route to Janus at {janus}"))?, 0),
        };
        let socket = UdpSocket::bind(bind).await.map_err(|e| format!("binding media socket {bind}: {e}"))?;
        let bound = socket.local_addr().map_err(|e| e.to_string())?;
        let ip: IpAddr = if bound.ip().is_unspecified() {
            route_source(janus).ok_or_else(|| format!("no route to Janus at {janus}"))?
        } else {
            bound.ip()
        };
        let n = o.channels.len();
        let mut media = Media {
            socket,
            local: SocketAddr::new(ip, bound.port()),
            publishers: (0..n).map(|_| None).collect(),
            subscribers: (0..n).map(|_| None).collect(),
        };
        let config = SessionConfig {
            api_secret: o.api_secret.clone(),
            keepalive: o.keepalive,
            request_timeout: o.request_timeout,
        };
        let mut session = Session::new(config, o.channels.clone(), self.listen, Instant::now());
        debug!(url, media = %media.local, "Janus socket open");

        let mut buf = vec![0u8; rtc::DATAGRAM_BUF];
        loop {
            // Session first (it may ask for SDP work), then every str0m connection.
            self.outputs(&mut session, &mut media, &mut ws).await?;
            let happened = media.drive_all()?;
            for (ch, is_pub, h) in happened {
                self.happened(&session, &media, ch, is_pub, h, started);
            }
            self.flush().await;

            let now = Instant::now();
            // Waiting for a room someone else creates is no step: the limit counts from its end.
            if session.waiting_for_room() {
                steps_from = now;
            }
            let mut watchdog = None::<Instant>;
            let mut soonest = |t: Instant| watchdog = Some(watchdog.map_or(t, |w| w.min(t)));
            if !self.was_up {
                soonest(steps_from + o.step_timeout);
            }
            for p in media.publishers.iter().chain(&media.subscribers).flatten() {
                if let Some(t) = p.ice_lost {
                    soonest(t + ICE_GRACE);
                }
                if let (Some(t), false) = (p.answered, p.connected) {
                    soonest(t + o.step_timeout);
                }
            }
            let timer =
                [media.deadline(), session.poll_timeout()].into_iter().flatten().min().unwrap_or(now + o.keepalive);
            let watchdog = watchdog.unwrap_or(now + Duration::from_secs(3600));
            let step = tokio::select! {
                _ = cancel.cancelled() => Step::Stop,
                m = ws.next() => Step::Ws(m),
                r = media.socket.recv_from(&mut buf) => Step::Datagram(r),
                _ = tokio::time::sleep_until(timer.into()) => Step::Timer,
                c = cmds.recv() => Step::Cmd(c),
                _ = tokio::time::sleep_until(watchdog.into()) => Step::Watchdog,
            };
            let now = Instant::now();
            match step {
                Step::Stop | Step::Cmd(None) => {
                    session.close(now);
                    while let Some(out) = session.poll_output() {
                        if let Output::Send(t) = out {
                            let _ = send(&mut ws, t).await;
                        }
                    }
                    let _ = timeout(SEND_TIMEOUT, ws.close(None)).await;
                    return Ok(());
                }
                Step::Ws(None) => return Err("Janus closed the WebSocket".into()),
                Step::Ws(Some(Err(e))) => return Err(format!("Janus socket: {e}")),
                Step::Ws(Some(Ok(Message::Text(t)))) => {
                    // What Janus sends holds no secret of ours (what we send does: never logged).
                    trace!(text = t.as_str(), "from Janus");
                    session.handle_text(now, t.as_str())
                }
                Step::Ws(Some(Ok(Message::Close(frame)))) => {
                    let why = frame.map(|f| format!(" ({} {})", u16::from(f.code), f.reason)).unwrap_or_default();
                    return Err(format!("Janus closed the WebSocket{why}"));
                }
                Step::Ws(Some(Ok(_))) => {}
                Step::Datagram(Ok((len, source))) => {
                    if let Some(input) = rtc::receive(now, source, media.local, &buf[..len]) {
                        if let Some((_, _, peer)) = media.peers().find(|(_, _, p)| p.rtc.accepts(&input)) {
                            peer.rtc.handle_input(input).map_err(|e| format!("media: {e}"))?;
                        }
                    }
                }
                Step::Datagram(Err(e)) => debug!(error = %e, "UDP receive"),
                Step::Timer => {
                    session.handle_timeout(now);
                    for (_, _, peer) in media.peers() {
                        if peer.deadline <= now {
                            peer.rtc.handle_input(Input::Timeout(now)).map_err(|e| format!("media: {e}"))?;
                        }
                    }
                }
                Step::Cmd(Some(cmd)) => self.command(&mut session, &mut media, cmd, now),
                Step::Watchdog => {
                    for p in media.publishers.iter().chain(&media.subscribers).flatten() {
                        if p.ice_lost.is_some_and(|t| now >= t + ICE_GRACE) {
                            return Err("ICE disconnected".into());
                        }
                        if p.answered.is_some_and(|t| !p.connected && now >= t + o.step_timeout) {
                            return Err(format!(
                                "a subscription did not connect within {} s",
                                o.step_timeout.as_secs()
                            ));
                        }
                    }
                    if !self.was_up && now >= steps_from + o.step_timeout {
                        return Err(format!("Janus uplink not up within {} s", o.step_timeout.as_secs()));
                    }
                }
            }
        }
    }

    fn command(&mut self, session: &mut Session, media: &mut Media, cmd: Cmd, now: Instant) {
        match cmd {
            Cmd::Sending(ch, on) => session.set_sending(now, ch, on),
            Cmd::Listen(ch, on) => {
                self.listen[ch] = on;
                session.set_listening(now, ch, on);
            }
            Cmd::Moderate(ch, feed, mute) => {
                if !session.moderate(now, ch, feed, mute) {
                    let channel = self.options.channels[ch].channel.clone();
                    let result = Err("no such publisher in the room".into());
                    self.out.push(JanusEvent::ModerateDone { channel, feed, mute, result });
                }
            }
            Cmd::Media(ch, packet) => {
                let Some(peer) = media.publishers[ch].as_mut() else { return };
                let (Some(mid), Some(pt), Some(out), true) = (peer.mid, peer.pt, peer.out.as_mut(), peer.connected)
                else {
                    return;
                };
                if let Some(stamp) = out.stamp(now, &packet) {
                    rtc::write(&mut peer.rtc, mid, pt, stamp, now, &packet.payload);
                }
            }
        }
    }

    /// Carry out what the session asks for.
    async fn outputs(&mut self, session: &mut Session, media: &mut Media, ws: &mut Socket) -> Result<(), String> {
        while let Some(out) = session.poll_output() {
            let now = Instant::now();
            let name = |ch: usize| self.options.channels[ch].channel.clone();
            match out {
                Output::Send(text) => send(ws, text).await?,
                Output::Failed(reason) => return Err(reason),
                Output::NeedOffer { ch } => match publisher_offer(media, now) {
                    Ok((peer, sdp, mid)) => {
                        media.publishers[ch] = Some(peer);
                        session.publisher_offer(now, ch, sdp, mid);
                    }
                    Err(e) => session.media_failed(format!("channel {}: publisher offer: {e}", name(ch))),
                },
                Output::Answer { ch, sdp } => {
                    if let Err(e) = publisher_answer(media.publishers[ch].as_mut(), &sdp) {
                        session.media_failed(format!("channel {}: Janus's answer: {e}", name(ch)));
                    }
                }
                Output::Offer { ch, sdp } => match subscriber_answer(media, ch, &sdp, now) {
                    Ok(answer) if media.subscribers[ch].as_ref().is_some_and(|p| p.connected) => {
                        debug!(channel = %name(ch), "subscription renegotiated");
                        session.subscriber_answer(now, ch, answer)
                    }
                    Ok(answer) => session.subscriber_answer(now, ch, answer),
                    Err(e) => session.media_failed(format!("channel {}: Janus's offer: {e}", name(ch))),
                },
                Output::Streams { ch, streams } => {
                    if let Some(peer) = media.subscribers[ch].as_mut() {
                        peer.feeds = feeds(&streams);
                    } else {
                        // The offer that creates the connection comes right after.
                        media.subscribers[ch] = Some(Peer::new(media.new_rtc(now)?, now));
                        media.subscribers[ch].as_mut().expect("just set").feeds = feeds(&streams);
                    }
                }
                Output::Roster { ch, publishers } => {
                    let publishers =
                        publishers.into_iter().map(|p| (p.id, p.display.unwrap_or_default())).collect::<Vec<_>>();
                    debug!(channel = %name(ch), ?publishers, "Janus room roster");
                    self.out.push(JanusEvent::Roster { channel: name(ch), publishers });
                }
                Output::Joined { ch, id } => debug!(channel = %name(ch), id, "joined the Janus room"),
                Output::Sending { ch, on } => {
                    debug!(channel = %name(ch), on, "Janus relays our stream");
                    self.out.push(JanusEvent::Sending { channel: name(ch), on });
                }
                Output::Moderated { ch, muted } => {
                    warn!(channel = %name(ch), muted, "our stream was moderated in Janus");
                    self.out.push(JanusEvent::Moderated { channel: name(ch), muted });
                }
                Output::FeedModerated { ch, feed, muted } => {
                    debug!(channel = %name(ch), feed, muted, "a publisher was moderated in Janus");
                    self.out.push(JanusEvent::FeedModerated { channel: name(ch), feed, muted });
                }
                Output::ModerateDone { ch, feed, mute, result } => {
                    self.out.push(JanusEvent::ModerateDone { channel: name(ch), feed, mute, result });
                }
                Output::RoomMissing { ch } => {
                    let room = self.options.channels[ch].room.room;
                    info!(channel = %name(ch), room, "Janus room does not exist yet; waiting for the floor host to create it");
                    self.out.push(JanusEvent::RoomMissing { channel: name(ch), room });
                }
                Output::RoomRefused { ch, fault, reason } => {
                    self.refused = Some(JanusEvent::RoomRefused { channel: name(ch), fault, reason });
                }
            }
        }
        Ok(())
    }

    fn happened(&mut self, session: &Session, media: &Media, ch: usize, is_pub: bool, h: Happened, started: Instant) {
        let channel = &self.options.channels[ch].channel;
        match h {
            Happened::Connected if is_pub => {
                debug!(%channel, connect_ms = started.elapsed().as_millis() as u64, "publisher media connected");
                let all =
                    session.all_published() && media.publishers.iter().all(|p| p.as_ref().is_some_and(|p| p.connected));
                if all && !self.was_up {
                    self.was_up = true;
                    self.shared.up.store(true, Ordering::Relaxed);
                    let channels = (0..self.options.channels.len())
                        .map(|i| (self.options.channels[i].channel.clone(), session.publisher_id(i).unwrap_or(0)))
                        .collect();
                    info!(up_ms = started.elapsed().as_millis() as u64, session = session.id(), "Janus uplink up");
                    self.out.push(JanusEvent::Up { channels });
                }
            }
            Happened::Connected => debug!(%channel, "subscription media connected"),
            Happened::Media(feed, packet) => {
                if self.listen[ch] {
                    self.out.push(JanusEvent::Media { channel: channel.clone(), feed, packet });
                }
            }
        }
    }
}

fn feeds(streams: &[SubStream]) -> HashMap<Mid, u64> {
    streams.iter().filter_map(|s| Some((Mid::from(s.mid.as_str()), s.source()?.feed))).collect()
}

/// A send-only Opus offer with our candidate.
fn publisher_offer(media: &Media, now: Instant) -> Result<(Peer, String, String), String> {
    let mut rtc = media.new_rtc(now)?;
    let mut change = rtc.sdp_api();
    let mid = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, pending) = change.apply().ok_or("no offer")?;
    let mut peer = Peer::new(rtc, now);
    peer.pending = Some(pending);
    peer.mid = Some(mid);
    let (seq, ts) = rtc::random_start();
    peer.out = Some(Restamper::new(seq, ts));
    Ok((peer, offer.to_sdp_string(), mid.to_string()))
}

fn publisher_answer(peer: Option<&mut Peer>, sdp: &str) -> Result<(), String> {
    let peer = peer.ok_or("no offer of ours")?;
    let pending = peer.pending.take().ok_or("no offer of ours")?;
    let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| e.to_string())?;
    peer.rtc.sdp_api().accept_answer(pending, answer).map_err(|e| e.to_string())?;
    let mid = peer.mid.ok_or("no mid")?;
    peer.pt = Some(rtc::opus_pt(&peer.rtc, mid).ok_or("Janus did not accept Opus")?);
    Ok(())
}

/// Our answer to Janus's (re)offer for a subscription, with our candidate.
fn subscriber_answer(media: &mut Media, ch: usize, sdp: &str, now: Instant) -> Result<String, String> {
    let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| e.to_string())?;
    if media.subscribers[ch].is_none() {
        media.subscribers[ch] = Some(Peer::new(media.new_rtc(now)?, now));
    }
    let peer = media.subscribers[ch].as_mut().expect("just set");
    let answer = peer.rtc.sdp_api().accept_offer(offer).map_err(|e| e.to_string())?;
    peer.answered.get_or_insert(now);
    Ok(add_end_of_candidates(&answer.to_sdp_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_url_from_config() {
        assert_eq!(ws_url("ws://127.0.0.2:8188").unwrap(), "ws://127.0.0.2:8188");
        assert_eq!(ws_url(" ws://janus:8188/janus ").unwrap(), "ws://janus:8188/janus");
        assert!(ws_url("wss://janus:8989").unwrap_err().contains("TLS"));
        assert!(ws_url("http://janus:8088/janus").is_err());
        assert!(ws_url("janus:8188").is_err());
        assert!(ws_url("").is_err());
    }

    #[test]
    fn subscription_mids_map_to_their_feeds() {
        let s = |mid: &str, feed: Option<u64>| SubStream {
            mid: mid.into(),
            kind: "audio".into(),
            active: feed.is_some(),
            feed,
            feed_mid: Some("0".into()),
            feed_display: None,
            send: true,
        };
        let map = feeds(&[s("0", Some(11)), s("1", None), s("2", Some(13))]);
        assert_eq!(map.len(), 2);
        assert_eq!(map.get(&Mid::from("2")), Some(&13));
    }
}
