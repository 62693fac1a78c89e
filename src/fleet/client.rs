//! The MQTT driver: a thin adapter around rumqttc's MQTT 5 `AsyncClient`/`EventLoop`.
//!
//! Two tasks:
//! - the **poller** only polls the `EventLoop` (network, keepalive, reconnects) and forwards
//!   what matters; on errors it sleeps an exponential backoff with jitter, forever;
//! - the **driver** owns the logic: on every connect it subscribes to the command topics and
//!   republishes status and every port state (retained); it parses commands, hands valid ones
//!   to the daemon and answers the rest itself; it moves the bounded [`Outbox`] into rumqttc
//!   only while connected, and publishes metrics on a timer.
//!
//! The daemon talks to it through [`FleetHandle`] (non-blocking: it only touches the outbox
//! under a short lock) and receives `(Command, Replier)` pairs on a tokio channel.
//!
//! Sessions are clean (`clean_start`, no session expiry) on purpose: a command sent while the
//! box was offline must not run minutes later when it comes back (think `remote_ptt`). Senders
//! get no reply and time out instead; state is republished on every connect anyway.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::v5::mqttbytes::v5::{LastWill, Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ClientError, Event as MqttEvent, EventLoop, MqttOptions};
use rumqttc::{NetworkOptions, Outgoing, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::auth::{self, CommandGuard, FleetKey, RejectCounter};
use super::backoff::Backoff;
use super::hass::Hass;
use super::outbox::{Class, Limits, Message, Outbox, Qos};
use super::protocol::{
    self, rfc3339_millis, to_json, valid_name, Command, CommandError, DaemonMetrics, ErrorCode, Event, Metrics,
    PortState, Reply, Status, Topics, UplinkState, UplinkStatus, MAX_CORRELATION_BYTES,
};
use super::sysinfo::{self, SystemReader};
use crate::config::MqttConfig;

/// A connection that stayed up this long resets the reconnect backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);
/// Packets the broker may send us (MQTT 5 Maximum Packet Size): bigger command payloads are
/// dropped by the broker; between 16 KiB and this they get a `payload_too_large` reply.
const MAX_INCOMING_PACKET: u32 = 64 * 1024;
/// rumqttc's own request queue. Small: our outbox is the real, bounded queue.
const REQUEST_CHANNEL: usize = 64;
/// Commands waiting for the daemon. More get a `busy` reply.
const COMMAND_QUEUE: usize = 16;
/// At most one `auth_failed` event per this long (the count since rides along).
pub(crate) const AUTH_REPORT_EVERY: Duration = Duration::from_secs(10);
/// How often stale events are dropped from the outbox while offline.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Debian's CA bundle, used for `mqtts://` when no `ca_file` is configured.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Gives the daemon's numbers for a metrics publication. Called on the driver task at every
/// metrics tick: it must be quick (read counters, do not wait on locks held by audio code).
pub type MetricsProvider = Arc<dyn Fn() -> DaemonMetrics + Send + Sync>;

/// Commands for the daemon, each with the [`Replier`] that answers it.
pub type CommandReceiver = mpsc::Receiver<(Command, Replier)>;

/// What [`Fleet::start`] needs.
#[derive(Clone)]
pub struct FleetOptions {
    /// The config's `device_id` (already validated: `[a-z0-9][a-z0-9_-]*`).
    pub device_id: String,
    pub mqtt: MqttConfig,
    /// Reported in the status; defaults to this crate's version.
    pub version: String,
    pub metrics: Option<MetricsProvider>,
    pub limits: Limits,
    /// Home Assistant discovery prefix (usually `homeassistant`); `None` publishes no discovery.
    pub home_assistant: Option<String>,
    /// The loaded config's hash, in the status from the first `online` on (set later with
    /// [`FleetHandle::set_config_hash`], a fast broker could see an `online` without it).
    pub config_hash: Option<String>,
}

impl FleetOptions {
    /// Home Assistant discovery as the config says (`home_assistant`, `home_assistant_prefix`).
    pub fn new(device_id: impl Into<String>, mqtt: MqttConfig) -> Self {
        Self {
            device_id: device_id.into(),
            home_assistant: mqtt.discovery_prefix().map(str::to_owned),
            mqtt,
            version: env!("CARGO_PKG_VERSION").into(),
            metrics: None,
            limits: Limits::default(),
            config_hash: None,
        }
    }

    /// Report this config hash ([`protocol::config_hash`]) in every status, the first included.
    pub fn with_config_hash(mut self, hash: impl Into<String>) -> Self {
        self.config_hash = Some(hash.into());
        self
    }

    /// Publish Home Assistant discovery (retained) under `prefix` on every connect.
    pub fn with_home_assistant(mut self, prefix: impl Into<String>) -> Self {
        self.home_assistant = Some(prefix.into());
        self
    }

    pub fn with_metrics(mut self, provider: impl Fn() -> DaemonMetrics + Send + Sync + 'static) -> Self {
        self.metrics = Some(Arc::new(provider));
        self
    }
}

/// Why the fleet client could not start. Only setup problems: a broker that is down is not an
/// error, the client keeps trying. Messages name files, never their contents.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("mqtt.url: {0}")]
    Url(String),
    #[error("device id `{0}` cannot be used in MQTT topics")]
    DeviceId(String),
    /// `message` names the file (see [`crate::config::secret::read_limited`]).
    #[error("mqtt.{key}: cannot read {message}")]
    ReadFile { key: &'static str, message: String },
    #[error("mqtt.{key}: {path}: {message}")]
    BadFile { key: &'static str, path: String, message: String },
    #[error("mqtt: {0}")]
    Settings(String),
}

/// A started fleet client.
pub struct Fleet {
    pub handle: FleetHandle,
    pub commands: CommandReceiver,
    pub driver: FleetDriver,
}

impl Fleet {
    /// Read the credential files, build the TLS config and spawn the tasks. Must be called
    /// inside a tokio runtime. Returns at once: connecting happens in the background, forever.
    pub fn start(options: FleetOptions) -> Result<Fleet, FleetError> {
        if !valid_name(&options.device_id) {
            return Err(FleetError::DeviceId(options.device_id));
        }
        let broker = check_settings(&options.mqtt)?;
        let topics = Topics::new(&options.device_id);
        let started_unix_ms = unix_ms(SystemTime::now());
        let mut status = Status::online(&options.device_id, &options.version);
        status.started_at = Some(rfc3339_millis(started_unix_ms));
        status.addresses = sysinfo::local_addresses();
        status.config_hash = options.config_hash.clone();

        let mut mqtt = MqttOptions::new(format!("roipd-{}", options.device_id), broker.host.clone(), broker.port);
        // The broker sends the last will after 1.5x this without a packet (rumqttc's minimum: 5 s).
        mqtt.set_keep_alive(Duration::from_secs(options.mqtt.keepalive_s.max(5)))
            .set_clean_start(true)
            .set_max_packet_size(Some(MAX_INCOMING_PACKET))
            .set_request_channel_capacity(REQUEST_CHANNEL)
            .set_last_will(LastWill::new(
                topics.status(),
                to_json(&status.offline("connection_lost")),
                QoS::AtLeastOnce,
                true,
                None,
            ));
        // Commands and replies are small and latency matters (remote PTT): no Nagle delay.
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        mqtt.set_network_options(network);
        if let Some((user, password)) = credentials(&options.mqtt)? {
            mqtt.set_credentials(user, password);
        }
        if broker.tls {
            mqtt.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(tls_config(
                &options.mqtt,
            )?))));
        }
        info!(host = %broker.host, port = broker.port, tls = broker.tls, device = %options.device_id, "MQTT fleet client starting");
        match (&options.mqtt.fleet_key_file, options.mqtt.insecure_unsigned) {
            (None, true) => warn!(
                "INSECURE: `insecure_unsigned = true` and no fleet key: any client that can publish to the broker \
                 can run every command, remote_ptt included (labs only; docs/mqtt.md, \"Authentication\")"
            ),
            (None, false) => info!(
                refused = "remote_ptt, tx_inhibit, set_channel, desk, restart",
                "no fleet key: commands that could key a radio or lock others out are refused"
            ),
            _ => {}
        }

        let (client, eventloop) = AsyncClient::new(mqtt, REQUEST_CHANNEL);
        let shared = Arc::new(Shared {
            device: options.device_id.clone(),
            version: options.version.clone(),
            home_assistant: options.home_assistant.clone(),
            topics,
            started: Instant::now(),
            state: Mutex::new(State {
                status,
                ports: BTreeMap::new(),
                emergencies: BTreeMap::new(),
                outbox: Outbox::new(options.limits),
                connected: false,
                daemon_metrics: None,
                metrics_now: false,
            }),
            wake: Notify::new(),
            unacked: AtomicUsize::new(0),
            goodbye_ms: AtomicU64::new(2000),
        });
        let (cmd_tx, commands) = mpsc::channel(COMMAND_QUEUE);
        let (net_tx, net_rx) = mpsc::channel(64);
        let stop_poller = CancellationToken::new();
        let poller = tokio::spawn(poll_loop(eventloop, net_tx, shared.clone(), stop_poller.clone()));
        let cancel = CancellationToken::new();
        let driver = Driver {
            shared: shared.clone(),
            client,
            cmd_tx,
            metrics: options.metrics,
            metrics_interval: Duration::from_secs(options.mqtt.metrics_interval_s.max(1)),
            system: SystemReader::default(),
            need_subscribe: false,
            key: fleet_key(&options.mqtt)?,
            insecure_unsigned: options.mqtt.insecure_unsigned && options.mqtt.fleet_key_file.is_none(),
            guard: CommandGuard::default(),
            rejected: RejectCounter::default(),
        };
        let task = tokio::spawn(driver.run(net_rx, cancel.clone(), poller, stop_poller));
        let driver = FleetDriver { shared: shared.clone(), cancel, task };
        Ok(Fleet { handle: FleetHandle { shared }, commands, driver })
    }
}

/// Owns the background tasks.
pub struct FleetDriver {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl FleetDriver {
    /// Publish `online: false` (reason `shutdown`, retained), flush what is queued for up to
    /// `timeout`, disconnect cleanly (so the broker does not send the last will) and stop.
    pub async fn shutdown(self, timeout: Duration) {
        self.shared.goodbye_ms.store(timeout.as_millis() as u64, Ordering::SeqCst);
        self.cancel.cancel();
        let _ = tokio::time::timeout(timeout + Duration::from_secs(1), self.task).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon-facing handle

struct Shared {
    device: String,
    version: String,
    home_assistant: Option<String>,
    topics: Topics,
    started: Instant,
    state: Mutex<State>,
    /// Wakes the driver: something was queued, or rumqttc made progress.
    wake: Notify,
    /// QoS 1 publishes handed to rumqttc but not yet acknowledged (counted when queued, not when
    /// written, so none is missed while it waits in rumqttc's queue). The goodbye waits for
    /// them: Mosquitto (before 2.0.22) drops a client whose PUBACK it cannot send, and then
    /// sends the last will even though a clean DISCONNECT follows.
    unacked: AtomicUsize,
    /// How long the goodbye may take, set by [`FleetDriver::shutdown`].
    goodbye_ms: AtomicU64,
}

struct State {
    status: Status,
    ports: BTreeMap<String, PortState>,
    /// Retained emergency state per hosted channel, once one was raised there.
    emergencies: BTreeMap<String, super::EmergencyState>,
    outbox: Outbox,
    connected: bool,
    daemon_metrics: Option<DaemonMetrics>,
    metrics_now: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves plain data behind: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn status_message(&self, status: &Status, now: Instant) -> Message {
        let mut status = status.clone();
        if status.online {
            status.uptime_s = Some(now.saturating_duration_since(self.started).as_secs());
        }
        Message::new(Class::State, self.topics.status(), to_json(&status), now)
    }

    fn port_message(&self, port: &str, state: &PortState, now: Instant) -> Message {
        Message::new(Class::State, self.topics.state(port), to_json(state), now)
    }

    fn hass(&self) -> Option<Hass<'_>> {
        let prefix = self.home_assistant.as_deref()?;
        Some(Hass { prefix, device: &self.device, version: &self.version, topics: &self.topics })
    }

    /// Discovery for one port, as retained state messages (empty without Home Assistant).
    fn port_discovery(&self, port: &str, now: Instant) -> Vec<Message> {
        let Some(hass) = self.hass() else { return Vec::new() };
        hass.port_entities(port)
            .into_iter()
            .map(|d| Message::new(Class::State, d.topic, to_json(&d.payload), now))
            .collect()
    }

    fn device_discovery(&self, now: Instant) -> Vec<Message> {
        let Some(hass) = self.hass() else { return Vec::new() };
        let has_temperature = sysinfo::has_temperature();
        hass.device_entities(has_temperature)
            .into_iter()
            .map(|d| Message::new(Class::State, d.topic, to_json(&d.payload), now))
            .collect()
    }

    fn push(&self, msg: Message) {
        self.lock().outbox.push(msg);
        self.wake.notify_one();
    }

    fn push_status(&self) {
        let now = Instant::now();
        let mut st = self.lock();
        let msg = self.status_message(&st.status, now);
        st.outbox.push(msg);
        drop(st);
        self.wake.notify_one();
    }
}

/// The daemon's side. Cheap to clone; every method returns at once whatever the broker does
/// (it only updates memory under a short lock): call it from tasks or plain threads.
#[derive(Clone)]
pub struct FleetHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FleetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetHandle").field("device", &self.shared.device).finish_non_exhaustive()
    }
}

impl FleetHandle {
    /// Publish an event (QoS 1, not retained). `time` is filled in when empty. Queued while
    /// offline for up to 5 minutes, then dropped.
    pub fn publish_event(&self, mut event: Event) {
        if event.time.is_empty() {
            event.time = rfc3339_millis(unix_ms(SystemTime::now()));
        }
        let msg = Message::new(Class::Event, self.shared.topics.event(), to_json(&event), Instant::now());
        self.shared.push(msg);
    }

    /// Set a port's retained state. Unchanged states publish nothing; while offline only the
    /// latest value per port is kept. Port names must be topic-safe (see [`valid_name`]).
    pub fn set_port_state(&self, port: &str, state: PortState) {
        if !valid_name(port) {
            warn!(port, "port name cannot be used in an MQTT topic; state not published");
            return;
        }
        let now = Instant::now();
        let mut st = self.shared.lock();
        if st.ports.get(port) == Some(&state) {
            return;
        }
        let msg = self.shared.port_message(port, &state, now);
        if !st.ports.contains_key(port) {
            for d in self.shared.port_discovery(port, now) {
                st.outbox.push(d);
            }
        }
        st.ports.insert(port.to_string(), state);
        st.outbox.push(msg);
        drop(st);
        self.shared.wake.notify_one();
    }

    /// Set a channel's retained emergency state (`roipd/<device>/emergency/<channel>`), kept and
    /// republished on every connect like the port states.
    pub fn set_emergency(&self, state: super::EmergencyState) {
        if !valid_name(&state.channel) {
            return;
        }
        let now = Instant::now();
        let mut st = self.shared.lock();
        let msg = Message::new(Class::State, self.shared.topics.emergency(&state.channel), to_json(&state), now);
        st.emergencies.insert(state.channel.clone(), state);
        st.outbox.push(msg);
        drop(st);
        self.shared.wake.notify_one();
    }

    /// Report the uplink (hub or SFU) state in the retained status.
    pub fn set_uplink_state(&self, state: UplinkState, detail: Option<String>) {
        self.update_status(|s| s.uplink = Some(UplinkStatus { state, detail }));
    }

    /// Report the loaded config's hash ([`protocol::config_hash`]) in the retained status.
    pub fn set_config_hash(&self, hash: impl Into<String>) {
        let hash = hash.into();
        self.update_status(|s| s.config_hash = Some(hash));
    }

    /// Change any status field and republish the status if it changed. `online`, `device`,
    /// `version` and `reason` are owned by the fleet client and kept as they are.
    pub fn update_status(&self, change: impl FnOnce(&mut Status)) {
        let mut st = self.shared.lock();
        let mut status = st.status.clone();
        change(&mut status);
        status.online = st.status.online;
        status.device = st.status.device.clone();
        status.version = st.status.version.clone();
        status.reason = st.status.reason.clone();
        if status == st.status {
            return;
        }
        st.status = status;
        drop(st);
        self.shared.push_status();
    }

    /// Publish metrics now with these daemon numbers (the system part is added). They are also
    /// what the periodic metrics use when no [`MetricsProvider`] was given.
    pub fn publish_metrics(&self, metrics: DaemonMetrics) {
        let mut st = self.shared.lock();
        st.daemon_metrics = Some(metrics);
        st.metrics_now = true;
        drop(st);
        self.shared.wake.notify_one();
    }

    /// Whether the broker connection is up right now (for the daemon's own status page).
    pub fn is_connected(&self) -> bool {
        self.shared.lock().connected
    }

    /// Outbound messages dropped so far (queue full or too old).
    pub fn dropped(&self) -> u64 {
        self.shared.lock().outbox.dropped()
    }
}

/// Answers one command. Publishes to the request's MQTT 5 response topic (with its correlation
/// data) or to `roipd/<device>/reply`, echoing the `request_id`. Dropping it unanswered sends
/// an `internal` error, so every command gets exactly one reply.
pub struct Replier {
    shared: Arc<Shared>,
    topic: String,
    correlation: Option<Vec<u8>>,
    request_id: Option<Value>,
    command: String,
    answered: bool,
}

impl Replier {
    /// Send the answer: `Ok(result)` → `{"ok": true, "result": ...}`, `Err(e)` →
    /// `{"ok": false, "error": {"code", "message"}}`. Never blocks.
    pub fn reply(mut self, result: Result<Value, CommandError>) {
        self.send(result);
    }

    /// The caller's `request_id`, if any (for the daemon's logs).
    pub fn request_id(&self) -> Option<&Value> {
        self.request_id.as_ref()
    }

    fn send(&mut self, result: Result<Value, CommandError>) {
        if std::mem::replace(&mut self.answered, true) {
            return;
        }
        let reply = Reply::new(Some(&self.command), self.request_id.take(), result);
        let mut msg = Message::new(Class::Reply, std::mem::take(&mut self.topic), reply.to_json(), Instant::now());
        msg.correlation = self.correlation.take();
        self.shared.push(msg);
    }
}

impl Drop for Replier {
    fn drop(&mut self) {
        if !self.answered {
            self.send(Err(CommandError::internal("the daemon dropped the command without answering")));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The poller task

enum Net {
    Up,
    /// A connection ended (`was_up`) or an attempt failed; `attempt` counts failures in a row.
    Down {
        error: String,
        was_up: bool,
        attempt: u32,
    },
    Publish(rumqttc::v5::mqttbytes::v5::Publish),
    SubscribeRefused(String),
    /// Our DISCONNECT was written: everything queued before it went out.
    Closed,
}

async fn poll_loop(mut eventloop: EventLoop, tx: mpsc::Sender<Net>, shared: Arc<Shared>, stop: CancellationToken) {
    let mut backoff = Backoff::default();
    let mut up_since: Option<Instant> = None;
    let mut attempt = 0u32;
    loop {
        let polled = tokio::select! {
            _ = stop.cancelled() => return,
            polled = eventloop.poll() => polled,
        };
        let net = match polled {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                up_since = Some(Instant::now());
                attempt = 0;
                shared.unacked.store(0, Ordering::SeqCst);
                Net::Up
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => Net::Publish(p),
            Ok(MqttEvent::Incoming(Packet::SubAck(ack))) => {
                let refused: Vec<_> = ack.return_codes.iter().filter(|c| !is_granted(c)).collect();
                if refused.is_empty() {
                    continue;
                }
                Net::SubscribeRefused(format!("{refused:?}"))
            }
            Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => Net::Closed,
            Ok(event) => {
                if let MqttEvent::Incoming(Packet::PubAck(_)) = event {
                    let _ = shared.unacked.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
                }
                // Acks and writes free room in rumqttc's queue: let the driver move more.
                shared.wake.notify_one();
                continue;
            }
            Err(e) => {
                let was_up = up_since.take();
                if was_up.is_some_and(|t| t.elapsed() >= STABLE_CONNECTION) {
                    backoff.reset();
                }
                attempt = attempt.saturating_add(1);
                if tx.send(Net::Down { error: e.to_string(), was_up: was_up.is_some(), attempt }).await.is_err() {
                    return; // the driver is gone: nobody to reconnect for
                }
                let delay = backoff.next_delay(rand::random::<f64>());
                debug!(delay_ms = delay.as_millis() as u64, "MQTT reconnect backoff");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                continue;
            }
        };
        if tx.send(net).await.is_err() {
            return;
        }
    }
}

fn is_granted(code: &rumqttc::v5::mqttbytes::v5::SubscribeReasonCode) -> bool {
    matches!(code, rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_))
}

// ---------------------------------------------------------------------------------------------
// The driver task

struct Driver {
    shared: Arc<Shared>,
    client: AsyncClient,
    cmd_tx: mpsc::Sender<(Command, Replier)>,
    metrics: Option<MetricsProvider>,
    metrics_interval: Duration,
    system: SystemReader,
    need_subscribe: bool,
    /// With a fleet key, commands that act must be signed ([`super::auth`]); without one they
    /// are refused, unless `insecure_unsigned` (labs) lets them run unsigned.
    key: Option<FleetKey>,
    insecure_unsigned: bool,
    guard: CommandGuard,
    rejected: RejectCounter,
}

impl Driver {
    async fn run(
        mut self,
        mut net_rx: mpsc::Receiver<Net>,
        cancel: CancellationToken,
        poller: JoinHandle<()>,
        stop_poller: CancellationToken,
    ) {
        let start = tokio::time::Instant::now();
        let mut metrics_tick = tokio::time::interval_at(start + self.metrics_interval, self.metrics_interval);
        metrics_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                net = net_rx.recv() => match net {
                    Some(net) => self.on_net(net),
                    None => break,
                },
                _ = self.shared.wake.notified() => {}
                _ = metrics_tick.tick() => self.publish_metrics(),
                _ = housekeeping.tick() => self.shared.lock().outbox.expire(Instant::now()),
            }
            if std::mem::take(&mut self.shared.lock().metrics_now) {
                self.publish_metrics();
            }
            self.drain();
        }
        self.goodbye(&mut net_rx).await;
        stop_poller.cancel();
        let _ = poller.await;
        info!("MQTT fleet client stopped");
    }

    fn on_net(&mut self, net: Net) {
        match net {
            Net::Up => {
                info!("connected to the MQTT broker");
                self.need_subscribe = true;
                let now = Instant::now();
                let addresses = sysinfo::local_addresses();
                let device_discovery = self.shared.device_discovery(now);
                let mut st = self.shared.lock();
                st.connected = true;
                st.status.addresses = addresses;
                let mut snapshot = vec![self.shared.status_message(&st.status, now)];
                snapshot.extend(st.ports.iter().map(|(port, s)| self.shared.port_message(port, s, now)));
                snapshot.extend(st.emergencies.iter().map(|(channel, e)| {
                    Message::new(Class::State, self.shared.topics.emergency(channel), to_json(e), now)
                }));
                snapshot.extend(device_discovery);
                for port in st.ports.keys() {
                    snapshot.extend(self.shared.port_discovery(port, now));
                }
                st.outbox.reconnected(snapshot);
            }
            Net::Down { error, was_up, attempt } => {
                self.shared.lock().connected = false;
                if was_up {
                    warn!(%error, "lost the MQTT broker connection; reconnecting");
                } else if attempt == 1 || attempt % 10 == 0 {
                    warn!(%error, attempt, "cannot connect to the MQTT broker; retrying with backoff");
                } else {
                    debug!(%error, attempt, "cannot connect to the MQTT broker");
                }
            }
            Net::Publish(p) => self.on_publish(p),
            Net::SubscribeRefused(codes) => {
                warn!(codes, "the broker refused the command subscription (ACL?); commands will not arrive")
            }
            Net::Closed => {}
        }
    }

    fn on_publish(&mut self, p: rumqttc::v5::mqttbytes::v5::Publish) {
        let topic = String::from_utf8_lossy(&p.topic);
        let Some(name) = self.shared.topics.command_name(&topic) else {
            debug!(topic = ?topic, "ignoring a message outside the command topics");
            return;
        };
        let name: String = name.chars().take(protocol::MAX_NAME_BYTES).collect();
        let props = p.properties.as_ref();
        let target = self.shared.topics.reply_topic(props.and_then(|p| p.response_topic.as_deref()));
        let correlation = props
            .and_then(|p| p.correlation_data.as_ref())
            .filter(|c| c.len() <= MAX_CORRELATION_BYTES)
            .map(|c| c.to_vec());
        let (command, request_id, rejected) = match self.authenticate(&topic, &name, &p.payload) {
            Ok(payload) => match protocol::parse_request(&name, payload.as_ref(), p.retain) {
                Ok(req) => (Some(req.command), req.request_id, None),
                Err(rej) => (None, rej.request_id, Some(rej.error)),
            },
            Err(e) => (None, protocol::peek_request_id(&p.payload), Some(e)),
        };
        let replier = Replier {
            shared: self.shared.clone(),
            topic: target,
            correlation,
            request_id,
            command: name.clone(),
            answered: false,
        };
        if let Some(error) = rejected {
            // The payload is not logged: it may be large or hostile.
            // Debug formatting escapes control characters an attacker may put in a topic.
            info!(command = ?name, code = error.code.as_str(), "command rejected");
            replier.reply(Err(error));
            return;
        }
        let Some(command) = command else { return };
        info!(command = %name, request_id = ?replier.request_id(), "command received");
        match self.cmd_tx.try_send((command, replier)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full((_, replier))) => {
                replier.reply(Err(CommandError::new(ErrorCode::Busy, "too many commands pending; try again")))
            }
            Err(mpsc::error::TrySendError::Closed((_, replier))) => {
                replier.reply(Err(CommandError::unavailable("the daemon is not taking commands")))
            }
        }
    }

    /// The command's own JSON: the payload itself when it needs no signature, else what a
    /// good, fresh signature covers. Failures are reported as `auth_failed` events (rate-limited).
    fn authenticate<'a>(
        &mut self,
        topic: &str,
        name: &str,
        payload: &'a [u8],
    ) -> Result<std::borrow::Cow<'a, [u8]>, CommandError> {
        use std::borrow::Cow;
        let signed = auth::looks_signed(payload);
        let result = match &self.key {
            None if signed => Err(auth::CommandAuthError::NoKey),
            // The lab opt-out: as before fleet keys, anyone who can publish may run anything.
            None if self.insecure_unsigned => return Ok(Cow::Borrowed(payload)),
            None if auth::KEYLESS_COMMANDS.contains(&name) => return Ok(Cow::Borrowed(payload)),
            None => Err(auth::CommandAuthError::NoKeyRefused(name.to_owned())),
            Some(_) if !signed && auth::UNSIGNED_COMMANDS.contains(&name) => return Ok(Cow::Borrowed(payload)),
            Some(_) if !signed => Err(auth::CommandAuthError::Unsigned(name.to_owned())),
            Some(key) => self.guard.open(key, topic, payload, unix_ms(SystemTime::now())),
        };
        result.map(|cmd| Cow::Owned(cmd.into_bytes())).map_err(|e| {
            warn!(command = ?name, error = %e, "command refused: authentication");
            if let Some(n) = self.rejected.reject(Instant::now(), AUTH_REPORT_EVERY) {
                let detail = format!("command `{name}`: {e} ({n} refused since the last report)");
                let event = Event::new(protocol::EventKind::AuthFailed).reason("command").detail(detail);
                FleetHandle { shared: self.shared.clone() }.publish_event(event);
            }
            CommandError::new(ErrorCode::Unauthorized, e.to_string())
        })
    }

    fn publish_metrics(&mut self) {
        let now = Instant::now();
        let daemon = match &self.metrics {
            Some(provider) => provider(),
            None => self.shared.lock().daemon_metrics.clone().unwrap_or_default(),
        };
        let sys = self.system.read(now);
        let addresses = sysinfo::local_addresses();
        let mut st = self.shared.lock();
        let metrics = Metrics {
            time: rfc3339_millis(unix_ms(SystemTime::now())),
            uptime_s: now.saturating_duration_since(self.shared.started).as_secs(),
            daemon,
            cpu_pct: sys.cpu_pct,
            mem_rss_mb: sys.mem_rss_mb,
            soc_temp_c: sys.soc_temp_c,
            mqtt_dropped: st.outbox.dropped(),
        };
        st.outbox.push(Message::new(Class::Metrics, self.shared.topics.metrics(), to_json(&metrics), now));
        // DHCP may move the box: keep the status's addresses current.
        if st.status.addresses != addresses {
            st.status.addresses = addresses;
            let msg = self.shared.status_message(&st.status, now);
            st.outbox.push(msg);
        }
    }

    /// Move queued messages into rumqttc while connected, as far as its queue has room.
    fn drain(&mut self) {
        let mut st = self.shared.lock();
        if !st.connected {
            return;
        }
        if self.need_subscribe {
            // Retain as published: without it the broker clears the retain flag on messages
            // it forwards live, and a retained command published while the box is connected
            // would run (and run again on every reconnect, when it arrives flagged).
            let filter = rumqttc::v5::mqttbytes::v5::Filter {
                preserve_retain: true,
                ..rumqttc::v5::mqttbytes::v5::Filter::new(self.shared.topics.command_filter(), QoS::AtLeastOnce)
            };
            match self.client.try_subscribe_many([filter]) {
                Ok(()) => self.need_subscribe = false,
                Err(e) => debug!(error = %e, "subscribe deferred"),
            }
        }
        let now = Instant::now();
        while let Some(m) = st.outbox.front(now) {
            let qos = match m.qos {
                Qos::AtMostOnce => QoS::AtMostOnce,
                Qos::AtLeastOnce => QoS::AtLeastOnce,
            };
            let payload = m.payload.clone();
            let sent = match &m.correlation {
                Some(c) => {
                    let props = PublishProperties { correlation_data: Some(c.clone().into()), ..Default::default() };
                    self.client.try_publish_with_properties(m.topic.clone(), qos, m.retain, payload, props)
                }
                None => self.client.try_publish(m.topic.clone(), qos, m.retain, payload),
            };
            match sent {
                Ok(()) => {
                    if qos == QoS::AtLeastOnce {
                        self.shared.unacked.fetch_add(1, Ordering::SeqCst);
                    }
                    st.outbox.pop_front();
                }
                // rumqttc's queue is full: the poller wakes us when it has room.
                Err(ClientError::TryRequest(_)) | Err(ClientError::Request(_)) => break,
            }
        }
    }

    /// Graceful end: retained `online: false`, flush and wait for the acks, then a clean
    /// DISCONNECT (so the broker discards the last will).
    async fn goodbye(&mut self, net_rx: &mut mpsc::Receiver<Net>) {
        let budget = Duration::from_millis(self.shared.goodbye_ms.load(Ordering::SeqCst));
        let deadline = tokio::time::Instant::now() + budget;
        {
            let now = Instant::now();
            let mut st = self.shared.lock();
            st.status = st.status.offline("shutdown");
            let msg = self.shared.status_message(&st.status, now);
            st.outbox.push(msg);
        }
        if !self.shared.lock().connected {
            return;
        }
        loop {
            self.drain();
            if self.shared.lock().outbox.is_empty() && self.shared.unacked.load(Ordering::SeqCst) == 0 {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = self.shared.wake.notified() => {}
                net = net_rx.recv() => match net {
                    Some(Net::Down { .. }) | None => return,
                    Some(_) => {}
                },
            }
        }
        if self.client.try_disconnect().is_err() {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                net = net_rx.recv() => match net {
                    Some(Net::Closed) | Some(Net::Down { .. }) | None => return,
                    Some(_) => {}
                },
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Settings: URL, credentials and TLS from the config

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

/// `mqtt://host[:port]` (1883) or `mqtts://host[:port]` (8883); IPv6 as `[::1]`. Credentials
/// in the URL are refused: they would end up in logs and `ps`; use `username`/`password_file`.
pub fn parse_broker_url(url: &str) -> Result<BrokerUrl, String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("`{url}` is not mqtt://host or mqtts://host"))?;
    let (tls, default_port) = match scheme {
        "mqtt" => (false, 1883),
        "mqtts" => (true, 8883),
        _ => return Err(format!("scheme `{scheme}` is not mqtt or mqtts")),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        return Err("credentials do not belong in the URL: set `username` and `password_file`".into());
    }
    if rest.contains(['/', '?', '#']) {
        return Err(format!("`{url}` has a path or query; only host and port are used"));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unclosed `[` in an IPv6 address")?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("expected `:port` after `]`")?),
        };
        (host, port)
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() || host.contains(':') && !rest.starts_with('[') {
        return Err(format!("`{url}` has no usable host (IPv6 addresses go in brackets)"));
    }
    let port = match port {
        None => default_port,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("bad port `{p}`"))?,
    };
    Ok(BrokerUrl { tls, host: host.to_string(), port })
}

/// What `[mqtt]` says without reading a file: the URL, and TLS files only with `mqtts://`.
/// Config validation and [`Fleet::start`] both call it, so `roipd check` refuses what the
/// daemon would.
pub(crate) fn check_settings(cfg: &MqttConfig) -> Result<BrokerUrl, FleetError> {
    let broker = parse_broker_url(&cfg.url).map_err(FleetError::Url)?;
    if !broker.tls && (cfg.ca_file.is_some() || cfg.client_cert_file.is_some() || cfg.client_key_file.is_some()) {
        return Err(FleetError::Settings(
            "ca_file/client_cert_file/client_key_file are set but the url is mqtt:// (no TLS); use mqtts://".into(),
        ));
    }
    Ok(broker)
}

/// Reads every file `[mqtt]` names exactly as [`Fleet::start`] does (credentials, and the TLS
/// files with `mqtts://`), for config validation.
pub(crate) fn check_files(cfg: &MqttConfig) -> Result<(), FleetError> {
    credentials(cfg)?;
    fleet_key(cfg)?;
    if check_settings(cfg)?.tls {
        tls_config(cfg)?;
    }
    Ok(())
}

impl FleetError {
    /// The `[mqtt]` key (or `device_id`) an error is about, and the message without it.
    pub(crate) fn config_key(&self) -> (String, String) {
        match self {
            FleetError::Url(m) => ("mqtt.url".into(), m.clone()),
            FleetError::DeviceId(_) => ("device_id".into(), self.to_string()),
            FleetError::ReadFile { key, message } => (format!("mqtt.{key}"), format!("cannot read {message}")),
            FleetError::BadFile { key, path, message } => (format!("mqtt.{key}"), format!("{path}: {message}")),
            FleetError::Settings(m) => ("mqtt".into(), m.clone()),
        }
    }
}

fn read_file(key: &'static str, path: &str) -> Result<Vec<u8>, FleetError> {
    debug!(key, path, "reading MQTT credential file");
    let max =
        if key == "ca_file" { crate::config::secret::MAX_CA_BYTES } else { crate::config::secret::MAX_SECRET_BYTES };
    crate::config::secret::read_limited(Path::new(path), max).map_err(|message| FleetError::ReadFile { key, message })
}

/// The fleet key for the floor over MQTT (floor host and edges): `fleet_key` when set; with
/// none, Err unless the lab opt-out `insecure_unsigned` allows unsigned floor messages (then
/// None, and a loud warning). `roipd check` refuses the same configs (`config::fleet`).
pub fn floor_key(cfg: &MqttConfig) -> Result<Option<FleetKey>, String> {
    match fleet_key(cfg).map_err(|e| e.to_string())? {
        Some(key) => Ok(Some(key)),
        None if cfg.insecure_unsigned => {
            warn!(
                "INSECURE: the floor runs unsigned (`insecure_unsigned = true`): any client that can publish to the \
                 broker can key this fleet's radios and take the floor (labs only)"
            );
            Ok(None)
        }
        None => Err(format!(
            "the floor over MQTT needs `[mqtt] fleet_key_file`: without it whoever can publish to the broker can \
             key radios and take the floor; {} (or, in a lab only, `insecure_unsigned = true`)",
            crate::config::MAKE_FLEET_KEY
        )),
    }
}

/// The fleet key from `fleet_key_file` (None when not set): a private file of at least 32 bytes.
pub fn fleet_key(cfg: &MqttConfig) -> Result<Option<FleetKey>, FleetError> {
    let Some(path) = &cfg.fleet_key_file else { return Ok(None) };
    debug!(path, "reading the fleet key");
    let raw = crate::config::secret::read_private(Path::new(path))
        .map_err(|message| FleetError::ReadFile { key: "fleet_key_file", message })?;
    FleetKey::new(&raw).map(Some).map_err(|message| FleetError::BadFile {
        key: "fleet_key_file",
        path: path.clone(),
        message,
    })
}

pub(crate) fn credentials(cfg: &MqttConfig) -> Result<Option<(String, String)>, FleetError> {
    let password = match &cfg.password_file {
        None => None,
        Some(path) => {
            let raw = read_file("password_file", path)?;
            let text = String::from_utf8(raw).map_err(|_| FleetError::BadFile {
                key: "password_file",
                path: path.clone(),
                message: "the password is not UTF-8".into(),
            })?;
            // Files written by `echo` end in a newline that is not part of the password.
            let password = text.trim_end_matches(['\n', '\r']).to_string();
            if password.is_empty() {
                let message = "the file is empty".into();
                return Err(FleetError::BadFile { key: "password_file", path: path.clone(), message });
            }
            Some(password)
        }
    };
    match (&cfg.username, password) {
        (Some(user), password) => Ok(Some((user.clone(), password.unwrap_or_default()))),
        (None, Some(_)) => Err(FleetError::Settings("password_file is set without a username".into())),
        (None, None) => Ok(None),
    }
}

/// rustls with the ring provider, chosen explicitly (no process-wide default provider needed,
/// nothing from aws-lc). Verification is always on: the server must chain to `ca_file` (or to
/// the system bundle when no `ca_file` is given) and match the URL's host name or IP.
pub(crate) fn tls_config(cfg: &MqttConfig) -> Result<rustls::ClientConfig, FleetError> {
    let (ca_key, ca_path) = match &cfg.ca_file {
        Some(p) => ("ca_file", p.as_str()),
        None => ("ca_file", SYSTEM_CA_BUNDLE),
    };
    let ca_pem = read_file(ca_key, ca_path)?;
    let bad = |key: &'static str, path: &str, message: String| FleetError::BadFile { key, path: path.into(), message };
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&ca_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(ca_key, ca_path, format!("not PEM certificates: {e}")))?;
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(bad(ca_key, ca_path, "no usable CA certificate in the file".into()));
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FleetError::Settings(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    match (&cfg.client_cert_file, &cfg.client_key_file) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert_path), Some(key_path)) => {
            let cert_pem = read_file("client_cert_file", cert_path)?;
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<_, _>>()
                .map_err(|e| bad("client_cert_file", cert_path, format!("not PEM certificates: {e}")))?;
            if chain.is_empty() {
                return Err(bad("client_cert_file", cert_path, "no certificate in the file".into()));
            }
            let key_pem = read_file("client_key_file", key_path)?;
            // The error names the file only: key material never reaches a log.
            let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
                bad("client_key_file", key_path, "no PEM private key (PKCS#8, PKCS#1 or SEC1) found".into())
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| FleetError::Settings(format!("client certificate/key: {e}")))
        }
        _ => Err(FleetError::Settings("client_cert_file and client_key_file go together".into())),
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Result<(bool, String, u16), String> {
        parse_broker_url(s).map(|b| (b.tls, b.host, b.port))
    }

    #[test]
    fn broker_urls() {
        assert_eq!(url("mqtt://broker"), Ok((false, "broker".into(), 1883)));
        assert_eq!(url("mqtts://broker.example:8884/"), Ok((true, "broker.example".into(), 8884)));
        assert_eq!(url("mqtts://127.0.0.1"), Ok((true, "127.0.0.1".into(), 8883)));
        assert_eq!(url("mqtt://[::1]:1884"), Ok((false, "::1".into(), 1884)));
        assert_eq!(url("mqtts://[fe80::1]"), Ok((true, "fe80::1".into(), 8883)));
        for bad in [
            "broker:1883",
            "tcp://broker",
            "mqtt://",
            "mqtt://:1883",
            "mqtt://b:0",
            "mqtt://b:99999",
            "mqtt://b:x",
            "mqtt://u:p@b",
            "mqtt://b/topic",
            "mqtt://b?x=1",
            "mqtt://::1",
            "mqtt://[::1",
            "mqtt://[::1]x",
        ] {
            assert!(url(bad).is_err(), "{bad}");
        }
        assert!(url("mqtt://user:hunter2@b").unwrap_err().contains("password_file"));
    }

    fn mqtt(url: &str) -> MqttConfig {
        MqttConfig::new(url)
    }

    #[test]
    fn credentials_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret pass\n").unwrap();
        let mut cfg = mqtt("mqtt://b");
        assert_eq!(credentials(&cfg).unwrap(), None);
        cfg.username = Some("gw".into());
        assert_eq!(credentials(&cfg).unwrap(), Some(("gw".into(), String::new())));
        cfg.password_file = Some(path.display().to_string());
        assert_eq!(credentials(&cfg).unwrap(), Some(("gw".into(), "s3cret pass".into())));
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(credentials(&cfg), Err(FleetError::BadFile { .. })));
        cfg.password_file = Some(dir.path().join("missing").display().to_string());
        let err = credentials(&cfg).unwrap_err().to_string();
        assert!(err.contains("password_file") && err.contains("missing"), "{err}");
        cfg.username = None;
        std::fs::write(&path, "pw").unwrap();
        cfg.password_file = Some(path.display().to_string());
        assert!(matches!(credentials(&cfg), Err(FleetError::Settings(_))));
    }

    #[test]
    fn tls_config_errors_name_the_file_not_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "SECRET-MATERIAL not a certificate").unwrap();
        let mut cfg = mqtt("mqtts://b");
        cfg.ca_file = Some(junk.display().to_string());
        let err = tls_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("junk.pem") && !err.contains("SECRET-MATERIAL"), "{err}");
        cfg.ca_file = Some(dir.path().join("nope.pem").display().to_string());
        assert!(matches!(tls_config(&cfg), Err(FleetError::ReadFile { key: "ca_file", .. })));
    }

    #[tokio::test]
    async fn start_refuses_tls_files_on_plain_mqtt_and_bad_ids() {
        let mut cfg = mqtt("mqtt://127.0.0.1:1");
        cfg.ca_file = Some("/dev/null".into());
        assert!(matches!(Fleet::start(FleetOptions::new("gw", cfg)), Err(FleetError::Settings(_))));
        assert!(matches!(Fleet::start(FleetOptions::new("a/b", mqtt("mqtt://b"))), Err(FleetError::DeviceId(_))));
    }

    #[tokio::test]
    async fn handle_never_blocks_without_a_broker_and_replier_always_answers() {
        // Port 1 on loopback: connection refused, the client keeps retrying in the background.
        let limits = Limits { capacity: 50, ..Limits::default() };
        let fleet =
            Fleet::start(FleetOptions { limits, ..FleetOptions::new("gw", mqtt("mqtt://127.0.0.1:1")) }).unwrap();
        let h = fleet.handle.clone();
        let t = Instant::now();
        for i in 0..10_000 {
            h.publish_event(Event::new(protocol::EventKind::Xrun).detail(i.to_string()));
            h.set_port_state("r1", PortState { channel: format!("c{}", i % 3), ..Default::default() });
        }
        h.set_uplink_state(UplinkState::Down, Some("no route".into()));
        h.publish_metrics(DaemonMetrics::default());
        assert!(t.elapsed() < Duration::from_secs(2), "20 000 calls took {:?}", t.elapsed());
        assert!(!h.is_connected());
        {
            let st = h.shared.lock();
            assert!(st.outbox.len() <= 50);
            assert_eq!(st.ports["r1"].channel, "c0");
        }
        assert!(h.dropped() > 9000);

        // A replier dropped unanswered still answers.
        let r = Replier {
            shared: h.shared.clone(),
            topic: "t".into(),
            correlation: None,
            request_id: Some(Value::from("q")),
            command: "restart".into(),
            answered: false,
        };
        drop(r);
        let reply: Reply = {
            let st = h.shared.lock();
            let queued = st.outbox.iter().find(|m| m.class == Class::Reply).expect("a reply was queued");
            serde_json::from_slice(&queued.payload).unwrap()
        };
        assert_eq!((reply.ok, reply.request_id), (false, Some(Value::from("q"))));
        assert_eq!(reply.error.map(|e| e.code), Some(ErrorCode::Internal));
        fleet.driver.shutdown(Duration::from_millis(100)).await;
    }
}
