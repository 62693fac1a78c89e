//! The hub: hosts this box's channels for browsers and other roipd boxes.
//!
//! - HTTP on `listen` (axum): `/ws` signaling (`docs/signaling.md`), `/healthz`, and the web
//!   console (`/`, `/app.js`, `/style.css`, also under `/console/`), embedded in the binary.
//! - Media: one UDP socket for every peer, owned by one task ([`media`]) with all the str0m
//!   `Rtc`s. The hub is ICE-lite: it has a known address, answers checks and never sends its own,
//!   so it needs no candidates from peers (NATed browsers reach it through their
//!   peer-reflexive address), and each answer carries the hub's host candidates.
//! - One task per WebSocket ([`session`]).
//!
//! The hub decides nothing about floors or forwarding: it reports [`HubEvent`]s to the channel
//! router and carries out the [`ToPeer`](super::ToPeer) messages the router sends back.

mod auth;
mod limits;
mod media;
mod recordings;
mod session;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use self::auth::Auth;
use self::limits::{AuthFailures, Budget, Limiter};
use self::media::{MediaCmd, MediaLoop};
use super::addrs::interface_addrs;
use super::peer_queue;
use super::protocol::MAX_MESSAGE_BYTES;
use super::rtc::StreamStats;
use super::{HubEvent, NetError};
use crate::config::HubConfig;

/// `[hub] max_sessions` when not set.
pub const DEFAULT_MAX_SESSIONS: usize = 256;

/// One access token: its secret (already read from its file) and what it may do.
#[derive(Clone)]
pub struct HubToken {
    pub name: String,
    /// Compared in constant time; surrounding whitespace (a file's newline) is ignored.
    pub secret: String,
    /// Channel names, or `"*"` for every channel.
    pub channels: Vec<String>,
    /// Priorities asked for in hello are capped at this.
    pub max_priority: Option<u8>,
}

impl fmt::Debug for HubToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubToken")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .field("channels", &self.channels)
            .field("max_priority", &self.max_priority)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubChannel {
    pub name: String,
    pub label: String,
}

#[derive(Debug, Clone)]
pub struct HubOptions {
    /// HTTP/WebSocket address. Port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// UDP media port on the listen address. `None`: the same number as the bound HTTP port;
    /// `Some(0)`: any free port.
    pub media_port: Option<u16>,
    pub tokens: Vec<HubToken>,
    pub channels: Vec<HubChannel>,
    /// Addresses advertised as ICE host candidates (e.g. a public or NATed address). Empty:
    /// the listen address, or every interface address when listening on a wildcard.
    pub candidates: Vec<IpAddr>,
    /// A session that sends nothing for this long is closed (clients ping every 10 s).
    pub idle_timeout: Duration,
    /// Time to send hello after connecting.
    pub hello_timeout: Duration,
    /// Time the channel router has to answer `Joined`.
    pub join_timeout: Duration,
    /// Time a client has to send a request's headers (slowloris, half-open connections).
    pub header_timeout: Duration,
    /// Authenticated sessions at once; a hello beyond them gets `unavailable`.
    pub max_sessions: usize,
    /// HTTP connections not yet upgraded, in total and from one address (an IPv6 /64); more
    /// are closed at once.
    pub max_connections: usize,
    pub max_connections_per_addr: usize,
    /// WebSockets whose hello has not passed yet, in total and from one address; more get
    /// HTTP 503. They hold no session slot, so they cannot lock real clients out.
    pub max_pending: usize,
    pub max_pending_per_addr: usize,
    /// Where each peer's per-channel RTT, jitter, loss and bitrate go (`<peer>/<channel>`).
    pub stream_stats: StreamStats,
    /// Where consoles' `desk` commands go (the box's desk ports); None: refused. Bounded: a
    /// session waits for room ([`peer_queue::deliver`]).
    pub desk: Option<mpsc::Sender<DeskRequest>>,
    /// `[record]`: the recordings API (`/api/recordings`); None: not served.
    pub recordings: Option<crate::record::RecordingsApi>,
    /// HTTPS/WSS with this certificate; None: plain HTTP/WS.
    pub tls: Option<super::tls::ServerTls>,
    /// With `tls`: a plain-HTTP listener that redirects every request to HTTPS.
    pub redirect_listen: Option<SocketAddr>,
    /// Port-forwarded public addresses, announced as (host) candidates too; a port given
    /// here is UDP only (else the media and ICE-TCP ports).
    pub public_addresses: Vec<(IpAddr, Option<u16>)>,
    /// ICE-TCP (passive TCP candidates) on this address; port 0 picks a free port (tests).
    pub ice_tcp_listen: Option<SocketAddr>,
    /// STUN/TURN servers given to consoles in `welcome`.
    pub ice_servers: Vec<IceServer>,
}

/// A STUN/TURN server for consoles; with `secret`, each console gets TURN REST credentials.
#[derive(Clone)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub secret: Option<String>,
    pub ttl: Duration,
}

/// TURN REST credentials (draft-uberti-behave-turn-rest, coturn `use-auth-secret`): username
/// `<expiry unix time>:<name>`, password base64(HMAC-SHA1(secret, username)); the TURN server
/// checks the HMAC with the same shared secret and refuses the username once it has expired.
pub fn turn_credentials(secret: &str, name: &str, now: std::time::SystemTime, ttl: Duration) -> (String, String) {
    use base64::Engine as _;
    let expiry = now.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().saturating_add(ttl).as_secs();
    let username = format!("{expiry}:{name}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = ring::hmac::sign(&key, username.as_bytes());
    (username, base64::engine::general_purpose::STANDARD.encode(tag.as_ref()))
}

impl fmt::Debug for IceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// A console's `desk` command for the hub box's own desk port.
#[derive(Debug)]
pub struct DeskRequest {
    pub port: String,
    /// The action object, checked by the desk.
    pub action: serde_json::Value,
    /// Channels the console's token may join: a console controls only a desk whose channels
    /// it could join itself.
    pub allowed: Vec<String>,
    pub reply: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// A console's command: each must arrive (its session waits for the answer anyway).
impl peer_queue::Queued for DeskRequest {
    fn policy(&self) -> peer_queue::Policy {
        peer_queue::Policy::Keep
    }
}

impl HubOptions {
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            media_port: None,
            tokens: Vec::new(),
            channels: Vec::new(),
            candidates: Vec::new(),
            idle_timeout: Duration::from_secs(30),
            hello_timeout: Duration::from_secs(5),
            join_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(5),
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_connections: 256,
            max_connections_per_addr: 32,
            max_pending: 64,
            max_pending_per_addr: 8,
            stream_stats: StreamStats::default(),
            desk: None,
            recordings: None,
            tls: None,
            redirect_listen: None,
            public_addresses: Vec::new(),
            ice_tcp_listen: None,
            ice_servers: Vec::new(),
        }
    }

    /// From the `[hub]` config section: reads every token's `secret_file`.
    pub fn from_config(config: &HubConfig, channels: Vec<HubChannel>) -> Result<Self, NetError> {
        let listen =
            config.listen.parse().map_err(|e| NetError::Config(format!("hub.listen {:?}: {e}", config.listen)))?;
        let mut options = Self::new(listen);
        options.media_port = config.media_port;
        options.max_sessions = config.max_sessions;
        options.channels = channels;
        if let Some(source) = config.cert_source() {
            let tls = super::tls::server(&source).map_err(|e| NetError::Config(format!("{}: {e}", e.key)))?;
            options.tls = Some(tls);
        }
        if let Some(r) = &config.redirect_listen {
            options.redirect_listen =
                Some(r.parse().map_err(|e| NetError::Config(format!("hub.redirect_listen {r:?}: {e}")))?);
        }
        for (i, a) in config.public_addresses.iter().enumerate() {
            let parsed = crate::config::parse_public_address(a)
                .ok_or_else(|| NetError::Config(format!("hub.public_addresses[{i}] {a:?}: not an address")))?;
            options.public_addresses.push(parsed);
        }
        if let Some(t) = &config.ice_tcp_listen {
            options.ice_tcp_listen =
                Some(t.parse().map_err(|e| NetError::Config(format!("hub.ice_tcp_listen {t:?}: {e}")))?);
        }
        for (i, s) in config.ice_servers.iter().enumerate() {
            let secret = match &s.secret_file {
                Some(f) => Some(
                    crate::config::secret::read_secret(std::path::Path::new(f))
                        .map_err(|e| NetError::Config(format!("hub.ice_servers[{i}].secret_file: {e}")))?
                        .trim()
                        .to_owned(),
                ),
                None => None,
            };
            options.ice_servers.push(IceServer { urls: s.urls.clone(), secret, ttl: Duration::from_secs(s.ttl_s) });
        }
        for (name, t) in &config.token {
            let secret = crate::config::secret::read_secret(std::path::Path::new(&t.secret_file))
                .map_err(|e| NetError::Config(format!("hub.token.{name}.secret_file: {e}")))?;
            options.tokens.push(HubToken {
                name: name.clone(),
                secret,
                channels: t.channels.clone(),
                max_priority: t.max_priority,
            });
        }
        Ok(options)
    }

    /// The checks [`serve`] makes before binding (channel names, token secrets), so config
    /// validation refuses what the hub would.
    pub fn check(&self) -> Result<(), NetError> {
        Auth::new(&self.tokens, &self.channels).map(|_| ()).map_err(NetError::Config)
    }
}

/// A running hub. Stop it with the `CancellationToken` given to [`serve`], then
/// [`HubHandle::stopped`] waits until every task has finished.
#[derive(Debug)]
pub struct HubHandle {
    http_addr: SocketAddr,
    media_addr: SocketAddr,
    ice_tcp_addr: Option<SocketAddr>,
    candidates: Vec<IpAddr>,
    tasks: TaskTracker,
}

impl HubHandle {
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn media_addr(&self) -> SocketAddr {
        self.media_addr
    }

    /// Where ICE-TCP listens, when it is on.
    pub fn ice_tcp_addr(&self) -> Option<SocketAddr> {
        self.ice_tcp_addr
    }

    /// The addresses put into answers as host candidates.
    pub fn candidates(&self) -> &[IpAddr] {
        &self.candidates
    }

    pub async fn stopped(self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// What every session shares.
struct Shared {
    auth: Auth,
    /// The channel router's inbox and the media task's: bounded, filled by
    /// [`peer_queue::deliver`].
    events: mpsc::Sender<HubEvent>,
    media: mpsc::Sender<MediaCmd>,
    cancel: CancellationToken,
    next_peer: AtomicU64,
    idle_timeout: Duration,
    hello_timeout: Duration,
    join_timeout: Duration,
    sessions: Arc<Semaphore>,
    /// WebSockets before their hello passed.
    pending: Arc<Limiter>,
    tasks: TaskTracker,
    desk: Option<mpsc::Sender<DeskRequest>>,
    /// Told when a session ends: the heap is trimmed once a burst is over.
    ended: Arc<Notify>,
    recordings: Option<crate::record::RecordingsApi>,
    /// Unknown tokens per address (recordings API and hello): too many and the address waits.
    auth_failures: AuthFailures,
    ice_servers: Vec<IceServer>,
}

/// Bind the HTTP listener and the media socket and start serving. Returns once both are bound,
/// so the caller can report "signaling ready". `events` is the router's bounded inbox
/// ([`peer_queue::INBOX`]): peers' media that finds it full is dropped, the rest waits.
pub async fn serve(
    options: HubOptions,
    events: mpsc::Sender<HubEvent>,
    cancel: CancellationToken,
) -> Result<HubHandle, NetError> {
    let auth = Auth::new(&options.tokens, &options.channels).map_err(NetError::Config)?;
    if options.tokens.is_empty() {
        warn!("hub has no tokens: nobody can join");
    }
    let listener = TcpListener::bind(options.listen).await.map_err(|source| NetError::Bind {
        what: "hub HTTP listener",
        addr: options.listen,
        source,
    })?;
    let http_addr = listener.local_addr().map_err(|source| NetError::Bind {
        what: "hub HTTP listener",
        addr: options.listen,
        source,
    })?;
    let media_want = SocketAddr::new(options.listen.ip(), options.media_port.unwrap_or(http_addr.port()));
    let udp = UdpSocket::bind(media_want).await.map_err(|source| NetError::Bind {
        what: "hub media socket",
        addr: media_want,
        source,
    })?;
    let media_addr =
        udp.local_addr().map_err(|source| NetError::Bind { what: "hub media socket", addr: media_want, source })?;

    let candidates = if !options.candidates.is_empty() {
        options.candidates.clone()
    } else if !media_addr.ip().is_unspecified() {
        vec![media_addr.ip()]
    } else {
        interface_addrs(media_addr.is_ipv6())
    };
    if candidates.is_empty() {
        return Err(NetError::Config("no address to advertise for media: set the hub's candidates".into()));
    }
    let (ice_tcp, ice_tcp_addr) = match options.ice_tcp_listen {
        None => (None, None),
        Some(want) => {
            let bind = |source| NetError::Bind { what: "hub ICE-TCP listener", addr: want, source };
            let l = TcpListener::bind(want).await.map_err(bind)?;
            let addr = l.local_addr().map_err(bind)?;
            (Some(l), Some(addr))
        }
    };
    let announce = media::Announce {
        hosts: candidates.clone(),
        udp_port: media_addr.port(),
        tcp_port: ice_tcp_addr.map(|a| a.port()),
        public: options.public_addresses.clone(),
    };
    // One certificate for every peer connection: generated once, not per offer.
    let cert = super::rtc::crypto()
        .dtls_provider
        .generate_certificate()
        .ok_or_else(|| NetError::Crypto("cannot generate a DTLS certificate".into()))?;

    let nofile = limits::raise_nofile();
    let want =
        Budget { connections: options.max_connections, pending: options.max_pending, sessions: options.max_sessions };
    let budget = want.fit(nofile);
    if budget != want {
        warn!(nofile, ?want, ?budget, reserve = limits::FD_RESERVE, "hub limits lowered to fit the open-file limit");
    }

    let tasks = TaskTracker::new();
    let (media_tx, media_rx) = mpsc::channel(peer_queue::INBOX);
    let (tcp_tx, tcp_rx) = mpsc::channel(peer_queue::INBOX);
    let tcp_rx = ice_tcp.is_some().then_some(tcp_rx);
    let media = MediaLoop::new(udp, &announce, tcp_rx, cert, events.clone(), options.stream_stats.clone())
        .map_err(NetError::Config)?;
    tasks.spawn(media.run(media_rx, cancel.clone()));
    if let Some(listener) = ice_tcp {
        let per_addr = Limiter::new(super::ice_tcp::MAX_CONNECTIONS, super::ice_tcp::MAX_PER_ADDR);
        let slot = move |ip| per_addr.try_take(ip);
        let first = super::ice_tcp::FIRST_FRAME;
        tasks.spawn(super::ice_tcp::accept(listener, tcp_tx, tasks.clone(), cancel.clone(), slot, first));
    }

    let shared = Arc::new(Shared {
        auth,
        events,
        media: media_tx,
        cancel: cancel.clone(),
        next_peer: AtomicU64::new(1),
        idle_timeout: options.idle_timeout,
        hello_timeout: options.hello_timeout,
        join_timeout: options.join_timeout,
        sessions: Arc::new(Semaphore::new(budget.sessions)),
        pending: Limiter::new(budget.pending, options.max_pending_per_addr),
        tasks: tasks.clone(),
        desk: options.desk.clone(),
        ended: Arc::new(Notify::new()),
        recordings: options.recordings.clone(),
        auth_failures: AuthFailures::new(limits::AUTH_BURST, limits::AUTH_DRAIN),
        ice_servers: options.ice_servers.clone(),
    });
    tasks.spawn(trim_after_sessions(shared.ended.clone(), cancel.clone()));
    let tls = options.tls.clone();
    let mut app = Router::new()
        .route("/ws", get(ws))
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/recordings", get(recordings::list))
        .route("/api/recordings/{id}", get(recordings::fetch).delete(recordings::delete))
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/index.html", get(index))
        .route("/app.js", get(app_js))
        .route("/console/app.js", get(app_js))
        .route("/style.css", get(style_css))
        .route("/console/style.css", get(style_css))
        .with_state(shared);
    if tls.is_some() {
        app = app.layer(axum::middleware::map_response(hsts));
    }
    let connections = Limiter::new(budget.connections, options.max_connections_per_addr);
    let acceptor = tls.as_ref().map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone()));
    if let Some(redirect) = options.redirect_listen {
        let listener = TcpListener::bind(redirect).await.map_err(|source| NetError::Bind {
            what: "hub HTTP redirect listener",
            addr: redirect,
            source,
        })?;
        let to = Router::new().fallback(move |h: axum::http::HeaderMap, u: axum::http::Uri| async move {
            redirect_to_https(&h, &u, http_addr.port())
        });
        // Redirects are one short answer each: a small share of slots is plenty.
        let limiter = Limiter::new(budget.connections.min(64), options.max_connections_per_addr.min(8));
        tasks.spawn(accept_loop(listener, to, None, limiter, options.header_timeout, cancel.clone(), tasks.clone()));
        info!(%redirect, "hub redirecting HTTP to HTTPS");
    }
    tasks.spawn(accept_loop(
        listener,
        app,
        acceptor,
        connections,
        options.header_timeout,
        cancel.clone(),
        tasks.clone(),
    ));
    match &tls {
        Some(t) => info!(
            https = %http_addr, media = %media_addr, ?candidates, fingerprint = %t.fingerprint,
            cert = %t.cert_file.display(), "hub listening (TLS)"
        ),
        None => info!(http = %http_addr, media = %media_addr, ?candidates, "hub listening"),
    }
    if let Some(a) = ice_tcp_addr {
        info!(ice_tcp = %a, "hub ICE-TCP listening");
    }
    if !options.public_addresses.is_empty() {
        info!(public = ?options.public_addresses, "hub announces public addresses");
    }
    Ok(HubHandle { http_addr, media_addr, ice_tcp_addr, candidates, tasks })
}

async fn ws(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    upgrade: WebSocketUpgrade,
) -> Response {
    // The session slot is taken only once hello passes: until then a socket holds one of the
    // few cheap pending slots, for at most `hello_timeout`.
    if let Err(wait) = shared.auth_failures.check(remote.ip(), std::time::Instant::now()) {
        debug!(%remote, ?wait, "WebSocket refused: too many unknown tokens from this address");
        let secs = (wait.as_millis().div_ceil(1000) as u64).max(1);
        return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, secs)], "too many unknown tokens")
            .into_response();
    }
    let Some(pending) = shared.pending.try_take(remote.ip()) else {
        debug!(%remote, "too many unauthenticated WebSockets");
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response();
    };
    let tasks = shared.tasks.clone();
    upgrade
        .read_buffer_size(super::WS_READ_BUFFER_BYTES)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| {
            tasks.track_future(async move {
                let ended = shared.ended.clone();
                session::run(socket, shared, remote, pending).await;
                ended.notify_one();
            })
        })
}

/// glibc keeps freed memory in its arenas (one per thread that allocated): after 256 consoles
/// left, RSS stayed ~100 MB above its baseline. A second after the last of a burst of
/// sessions ended, give the free pages back to the kernel.
async fn trim_after_sessions(ended: Arc<Notify>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ended.notified() => {}
        }
        // Wait for the burst to end: each further session end restarts the second.
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ended.notified() => continue,
                _ = tokio::time::sleep(Duration::from_secs(1)) => break,
            }
        }
        let _ = tokio::task::spawn_blocking(crate::heap::release_free_memory).await;
    }
}

/// axum's `serve` without its gaps: each connection holds a [`Limiter`] slot until it is
/// upgraded or closed (over the limit it is closed at once, before reading a byte), and must
/// send each request's headers within `header_timeout`, including between keep-alive requests.
async fn accept_loop(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    connections: Arc<Limiter>,
    header_timeout: Duration,
    cancel: CancellationToken,
    tasks: TaskTracker,
) {
    let mut refused: u64 = 0;
    let mut refused_logged = tokio::time::Instant::now();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and the like: the limits should prevent it; do not spin meanwhile.
                warn!(error = %e, "hub accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = connections.try_take(remote.ip()) else {
            drop(stream);
            refused += 1;
            if refused_logged.elapsed() >= Duration::from_secs(10) {
                warn!(%remote, refused, "hub connection limit reached: connections closed");
                refused = 0;
                refused_logged = tokio::time::Instant::now();
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone().layer(Extension(ConnectInfo(remote))));
        let cancel = cancel.clone();
        let tls = tls.clone();
        tasks.spawn(async move {
            // The TLS handshake counts against the header timeout: a client that opens a
            // socket and says nothing holds its slot no longer over TLS than without.
            let result = match tls {
                None => serve_connection(TokioIo::new(stream), service, header_timeout, cancel).await,
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        _ = cancel.cancelled() => return,
                        r = tokio::time::timeout(header_timeout, acceptor.accept(stream)) => r,
                    };
                    match handshake {
                        Ok(Ok(stream)) => serve_connection(TokioIo::new(stream), service, header_timeout, cancel).await,
                        Ok(Err(e)) => {
                            debug!(%remote, error = %e, "hub TLS handshake");
                            return;
                        }
                        Err(_) => {
                            debug!(%remote, "hub TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result {
                debug!(%remote, error = %e, "hub HTTP connection");
            }
            // An upgraded connection ends here too: its socket now belongs to the session.
            drop(slot);
        });
    }
}

/// One HTTP/1 connection (plain or TLS), with upgrades, until it ends or the hub stops.
async fn serve_connection<I>(
    io: TokioIo<I>,
    service: TowerToHyperService<Router>,
    header_timeout: Duration,
    cancel: CancellationToken,
) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    }
}

/// HSTS on every HTTPS response: a browser that saw the hub over TLS never falls back to HTTP
/// for it (a year; no `includeSubDomains`: the box does not own its domain's other hosts).
async fn hsts(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::STRICT_TRANSPORT_SECURITY, header::HeaderValue::from_static("max-age=31536000"));
    response
}

/// The redirect listener's one answer: 308 to the same host and path on the HTTPS port. A
/// request without a usable Host gets 400 (nothing to redirect to).
fn redirect_to_https(headers: &axum::http::HeaderMap, uri: &axum::http::Uri, https_port: u16) -> Response {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let Ok(authority) = host.parse::<axum::http::uri::Authority>() else {
        return (StatusCode::BAD_REQUEST, "no Host").into_response();
    };
    let name = authority.host();
    let target = if https_port == 443 { name.to_string() } else { format!("{name}:{https_port}") };
    // The path only: a query may carry what a user pasted (a token), and goes nowhere in clear
    // a second time.
    let location = format!("https://{target}{}", uri.path());
    (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, location)]).into_response()
}

// The console is the web engineer's (web/console/); the binary carries it.
const INDEX_HTML: &str = include_str!("../../../web/console/index.html");
const APP_JS: &str = include_str!("../../../web/console/app.js");
const STYLE_CSS: &str = include_str!("../../../web/console/style.css");

/// The console loads only its own script and style (no inline code, no eval), talks only to
/// its own origin (`'self'` covers ws:/wss: to the same host in CSP 3), plays a MediaStream, and
/// may not be framed (clickjacking a PTT button).
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     media-src 'self' blob: mediastream:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Small, and must follow the binary on upgrade.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CONSOLE_CSP),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_credentials_are_coturns_rest_scheme() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let (user, pass) = turn_credentials("north", "desk", now, Duration::from_secs(86_400));
        assert_eq!(user, "1700086400:desk", "expiry:name");
        // python3: base64(hmac.new(b'north', b'1700086400:desk', hashlib.sha1).digest())
        assert_eq!(pass, "o/D01fPX5vJY6tMjqQIxsVb31fA=");
    }
}
