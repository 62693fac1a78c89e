//! The daemon: reads the config, opens lines, runs one task per port plus the channel router,
//! and owns shutdown. Order matters for safety:
//! 1. the panic hook is installed before any line is opened;
//! 2. the PTT lines are recorded for `roipd safe-off` ([`ptt_state`]), then every PTT output is
//!    opened (driven unkeyed) and registered before anything else;
//! 3. on SIGTERM/SIGINT, a panicking task or a fatal error, every port is told to shut down,
//!    and [`safety::release_all`] unkeys every PTT again before the process exits.

mod audio_flags;
mod audio_port;
mod channels;
mod clock;
mod control;
mod desk_port;
mod dtmf;
mod logging;
mod ptt_state;
mod radio_port;
pub(crate) mod report;
mod safe_off;
pub mod safety;
mod watchdog;

pub use safe_off::safe_off;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{self, Config, LineConfig, PortConfig};
use crate::fleet::{Fleet, FleetOptions};
use crate::gpio::sim::{SimBank, SimFault};
use crate::gpio::{Gpio, LogicalInput};
use crate::net::{self, peer_queue::PeerTx};
use crate::pipeline::MediaPacket;
use radio_port::{PortInput, RadioPort};
use report::Reporter;
use safety::PttLine;
use sd_notify::NotifyState;
use watchdog::{Heartbeat, Watchdog, BEAT_PERIOD};

/// Index of a port in the config's port order (the same index the routing core uses).
pub use crate::core::routing::PortId;

/// Messages from ports and fleet commands to the channel router, through one of its two
/// bounded inboxes ([`ToChannel`]).
#[derive(Debug)]
pub enum ChannelMsg {
    /// A radio's receiver opened or closed (debounced, kerchunk-filtered).
    RxActive { port: PortId, active: bool },
    /// A radio's transmitter: the level its PTT line is driven to and what blocks keying.
    RadioTx { port: PortId, report: crate::core::routing::RadioTx },
    /// An encoded frame from a port that talks (through [`ToChannel::media`] only).
    Media { port: PortId, packet: MediaPacket },
    /// A fleet command that changes channels; answered with a reason when refused.
    Control { command: ChannelCommand, reply: tokio::sync::oneshot::Sender<Result<(), String>> },
    /// A desk's floor presses and patches.
    Desk(desk_port::DeskToRouter),
    /// A fleet `desk` command: the same request and answer as a console's.
    DeskRequest(net::hub::DeskRequest),
    /// Raise or acknowledge an emergency: the one action path of every source (a radio's
    /// emergency line, DTMF, a desk, the fleet; consoles come through the hub's inbox as
    /// [`net::HubEvent::Emergency`] and end in the same place). `reply`, if any, gets what
    /// happened (`raised`, `already_active`, `acknowledged`, `sent_to_hub`) or why nothing did.
    Emergency { action: EmergencyAction, reply: Option<tokio::sync::oneshot::Sender<Result<&'static str, String>>> },
}

/// An emergency, from any source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmergencyAction {
    /// Raise on a channel: an alert only (`Channel`), or on a port's channel with the port as
    /// its caller (`Port`: the emergency floor priority until acknowledged).
    Raise { target: EmergencyTarget, source: crate::core::emergency::SourceKind, by: String },
    /// Acknowledge the emergency on a channel; `by` names who, for people.
    Ack { channel: String, by: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmergencyTarget {
    Channel(String),
    /// A port on its (first) channel: a radio's.
    Port(String),
    /// A port on one of its channels (a desk's selected channel).
    PortOn {
        port: String,
        channel: String,
    },
}

impl net::peer_queue::Queued for ChannelMsg {
    fn policy(&self) -> net::peer_queue::Policy {
        match self {
            ChannelMsg::Media { .. } => net::peer_queue::Policy::DropOldest,
            _ => net::peer_queue::Policy::Keep,
        }
    }
}

/// The channel router's two inboxes. Media (50 frames a second from each talking port, sent
/// by audio threads that never wait) has its own, dropped when full; state changes and
/// commands have theirs, which the router reads first, so they never queue behind media.
#[derive(Clone)]
pub struct ToChannel {
    /// [`ChannelMsg`]s other than media; each comes from a state change, a press or a fleet
    /// command, so a full one means a stalled router. A task waits for room
    /// ([`net::peer_queue::deliver`]); the radio port, which must not, keeps its newest state
    /// and sends it again on its next pass.
    pub control: mpsc::Sender<ChannelMsg>,
    /// [`ChannelMsg::Media`] only ([`net::peer_queue::try_deliver`]: dropped, and counted, when full).
    pub media: mpsc::Sender<ChannelMsg>,
}

/// Control messages the router's inbox holds.
const CONTROL_INBOX: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub enum ChannelCommand {
    /// Move a radio port to another channel.
    SetChannel { port: String, channel: String },
    /// Carry (on) or mute a channel on this box's radios.
    Listen { channel: String, on: bool },
    /// Gain of a channel's audio towards this box's radios, dB.
    Volume { channel: String, db: f32 },
}

/// Exit codes: 0 clean stop, 1 fatal runtime error, 2 bad config, 70 internal error (panic).
const EXIT_FATAL: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_INTERNAL: u8 = 70;

/// How long ports get to unkey and stop after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

pub fn run_from_file(path: &Path) -> ExitCode {
    run_file_or_config(Some(path), None)
}

fn run_file_or_config(path: Option<&Path>, built_in: Option<(Config, String)>) -> ExitCode {
    let Some(path) = path else {
        let Some((config, source)) = built_in else { return ExitCode::from(EXIT_CONFIG) };
        return run_config_at(config, source, None);
    };
    // The same validation as `roipd check`, secret files included: what fails here would fail
    // at start-up anyway, after the PTT lines were opened.
    match config::load(path) {
        Ok((config, source)) => {
            // As loud as `roipd check`: a stranger on the broker could key this box.
            let file = path.display().to_string();
            for w in config::check::security_warnings(&config, &source, &file) {
                eprintln!("{w}");
            }
            for w in config::check::notes(&config, &source, &file) {
                eprintln!("{w}");
            }
            run_config_at(config, source, Some(path.to_path_buf()))
        }
        Err(errors) => {
            eprint!("{errors}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Run a built-in configuration (`source`: its text) in its own runtime, then release every
/// PTT. Fleet commands can restart it, but there is no file to reload.
pub fn run_config(config: Config, source: String) -> ExitCode {
    run_file_or_config(None, Some((config, source)))
}

fn run_config_at(config: Config, source: String, path: Option<std::path::PathBuf>) -> ExitCode {
    logging::init(&config.log.level);
    safety::install_panic_hook();
    crate::heap::fix_mmap_threshold();
    // Before the runtime exists: its worker threads inherit the main thread's nice level.
    match crate::audio::rt::favour_current_thread(crate::audio::rt::DAEMON_NICE) {
        level @ crate::audio::rt::NiceLevel::Denied(..) => {
            warn!(%level, "daemon threads not favoured: under CPU load their packets may come late to the radio")
        }
        level => info!(%level, "daemon thread scheduling"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(EXIT_FATAL);
        }
    };
    let mut current = (config, source);
    let code = loop {
        match runtime.block_on(run(current.0.clone(), current.1.clone(), path.clone())) {
            Stop::Exit(code) => break code,
            Stop::Restart(next) => {
                // Every PTT was released on the way out; the next run opens them again.
                safety::release_all("restart");
                safety::rearm();
                let reloaded = next.is_some();
                if let Some(next) = next {
                    current = next;
                }
                info!("restarting with {}", if reloaded { "the configuration file" } else { "the same configuration" });
            }
        }
    };
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    safety::release_all("exit");
    code
}

/// How a run ended.
#[allow(clippy::large_enum_variant)] // returned once per run
pub enum Stop {
    /// The process ends with this code.
    Exit(ExitCode),
    /// Start again: with a new configuration (and its text), or the same one.
    Restart(Option<(Config, String)>),
}

/// Run until a signal, a fatal error, a panicking task or a restart command.
/// `config_path`: where `reload_config` reads from (None for the demo's built-in config).
pub async fn run(config: Config, source: String, config_path: Option<std::path::PathBuf>) -> Stop {
    info!(device = %config.device_id, version = env!("CARGO_PKG_VERSION"), "roipd starting");
    // Before any line is opened, so a kill -9 from here on finds the lines recorded; on a
    // reload this replaces the previous run's record (whose lines are already released).
    if let Some(path) = &config_path {
        ptt_state::record(&config, path);
    }
    let mut gpio = Gpio::new(&config.gpio);

    // Every PTT first, unkeyed, before any input can ask for a transmission.
    let ports: Vec<(&String, &PortConfig)> = config.port.iter().collect();
    let mut ptts = Vec::new();
    for (name, port) in &ports {
        if let PortConfig::Radio(radio) = port {
            match gpio.open_output(&radio.ptt) {
                Ok(out) => ptts.push(Some(PttLine::register(out))),
                Err(e) => return Stop::Exit(fatal(&format!("port {name}: cannot open PTT: {e}"))),
            }
        } else {
            ptts.push(None);
        }
    }

    let cancel = CancellationToken::new();
    let watchdog = Watchdog::default();
    // Per-stream WebRTC numbers (hub and uplink) and the reporter's xrun count for the metrics;
    // the reporter needs the fleet handle, so the metrics get it once it exists.
    let stream_stats = net::StreamStats::new();
    let metrics_reporter = std::sync::Arc::new(std::sync::OnceLock::<Reporter>::new());
    let metrics = {
        let (streams, reporter) = (stream_stats.clone(), metrics_reporter.clone());
        move || crate::fleet::DaemonMetrics {
            streams: streams.snapshot(),
            xruns: reporter.get().map_or(0, Reporter::xruns),
        }
    };
    let (fleet_handle, fleet_commands, fleet_driver) = match &config.mqtt {
        Some(mqtt) => match Fleet::start(
            FleetOptions::new(&config.device_id, mqtt.clone())
                .with_metrics(metrics)
                .with_config_hash(crate::fleet::config_hash(source.as_bytes())),
        ) {
            Ok(Fleet { handle, commands, driver }) => (Some(handle), Some(commands), Some(driver)),
            Err(e) => return Stop::Exit(fatal(&format!("MQTT: {e}"))),
        },
        None => (None, None, None),
    };
    if let Some(f) = &fleet_handle {
        let uplink = if config.uplink.is_some() {
            crate::fleet::UplinkState::Connecting
        } else {
            crate::fleet::UplinkState::Disabled
        };
        f.set_uplink_state(uplink, None);
    }
    let reporter = Reporter::new(fleet_handle);
    let _ = metrics_reporter.set(reporter.clone());
    let mut tasks = JoinSet::new();
    let (control_tx, control_rx) = mpsc::channel(CONTROL_INBOX);
    let (media_tx, media_rx) = mpsc::channel(net::peer_queue::INBOX);
    let to_channel = ToChannel { control: control_tx, media: media_tx };
    let mut port_inputs = Vec::new();
    let mut radios = std::collections::HashMap::new();
    let mut port_audio = Vec::new();
    // Inputs stay open for the life of the daemon: dropping one stops its edge events.
    let mut held_inputs: Vec<LogicalInput> = Vec::new();

    // The recordings' index, filled by the writer (started below) and read by desks replaying.
    let record_index = std::sync::Arc::new(std::sync::Mutex::new(crate::record::Index::default()));
    let desk_recordings = config
        .record
        .as_ref()
        .map(|r| crate::record::RecordingsApi { dir: r.dir.clone().into(), index: record_index.clone() });
    // Commands from the ports themselves (DTMF), carried out by the same control task as the
    // fleet's.
    let (local_tx, local_rx) = mpsc::channel(dtmf::LOCAL_INBOX);
    let mut desks = Vec::new();
    // Desk ports by name with their channels' names, for fleet `desk` commands.
    let mut desk_channels = std::collections::HashMap::new();
    for (id, ((name, port), ptt)) in ports.iter().zip(ptts).enumerate() {
        let (tx, rx) = radio_port::inputs();
        port_inputs.push(tx.clone());
        if let PortConfig::Desk(desk) = port {
            desk_channels.insert(name.to_string(), desk.channels.clone());
            let channel_ids = desk.channels.iter().filter_map(|c| config.channel.keys().position(|k| k == c)).collect();
            match desk_port::start(
                id,
                name,
                desk,
                channel_ids,
                desk_recordings.clone(),
                &mut gpio,
                &to_channel,
                &reporter,
                &watchdog,
                &cancel,
                &mut tasks,
            ) {
                Ok((link, inputs)) => {
                    desks.push((id, link));
                    held_inputs.extend(inputs);
                }
                Err(e) => return Stop::Exit(fatal(&format!("port {name}: {e}"))),
            }
            continue;
        }
        let PortConfig::Radio(radio) = port else { continue };
        let Some(ptt) = ptt else { continue };
        radios.insert((*name).clone(), tx.clone());
        if let Some(cor) = radio.cor.as_ref().and_then(|c| c.line.as_ref()) {
            match open_edge_input(&mut gpio, cor, tx.clone(), |at, asserted| PortInput::Cor { at, asserted }) {
                Ok(input) => held_inputs.push(input),
                Err(e) => return Stop::Exit(fatal(&format!("port {name}: cannot open COR: {e}"))),
            }
        }
        if let Some(inhibit) = &radio.inhibit {
            match open_edge_input(&mut gpio, inhibit, tx.clone(), |at, on| PortInput::Inhibit { at, on }) {
                Ok(input) => held_inputs.push(input),
                Err(e) => return Stop::Exit(fatal(&format!("port {name}: cannot open TX inhibit: {e}"))),
            }
        }
        if let Some(line) = &radio.emergency {
            match open_emergency_input(&mut gpio, line, name, &to_channel.control, &cancel, &mut tasks) {
                Ok(input) => held_inputs.push(input),
                Err(e) => return Stop::Exit(fatal(&format!("port {name}: cannot open the emergency input: {e}"))),
            }
        }
        let audio =
            match audio_port::start(id, name, radio, &tx, &to_channel, &reporter, &watchdog, &cancel, &mut tasks) {
                Ok(audio) => audio,
                Err(e) => return Stop::Exit(fatal(&format!("port {name}: {e}"))),
            };
        let port = RadioPort {
            id,
            name: (*name).clone(),
            channel: radio.channel.clone(),
            reporter: reporter.clone(),
            keying: audio_port::keying(radio, audio.as_ref()),
            ptt,
            inputs: rx,
            to_channel: to_channel.control.clone(),
            heartbeat: watchdog.register(&format!("port {name}")),
            audio: audio.as_ref().map(|a| a.flags.clone()),
            dtmf: radio.dtmf.as_ref().map(|d| {
                let reply = audio.as_ref().and_then(|a| a.tx.clone()).filter(|_| d.reply).map(|tx| (tx, d.reply_dbfs));
                dtmf::DtmfPort::new(d.matcher_config(), local_tx.clone(), reply)
            }),
        };
        port_audio.push((id, audio));
        tasks.spawn(port.run(cancel.clone()));
    }
    let to_channel_control = to_channel.control.clone();
    drop(to_channel);

    let mut router = channels::ChannelRouter::new(
        &config,
        port_inputs,
        port_audio,
        reporter.clone(),
        watchdog.register("channel router"),
    );
    for (id, link) in desks {
        router.set_desk(id, link);
    }
    // The writer runs on a thread of its own; the router only queues to it (never waits).
    let record_writer = config.record.as_ref().map(|rec| {
        let (tx, writer) = crate::record::start(rec, reporter.clone(), record_index.clone());
        router.set_recording(crate::record::Recording::new(rec, router.channel_names(), tx, writer.stats.clone()));
        writer
    });
    let recordings =
        record_writer.as_ref().map(|w| crate::record::RecordingsApi { dir: w.dir.clone(), index: w.index.clone() });
    let links = match start_net(&config, &router, &stream_stats, reporter.fleet(), recordings, &cancel).await {
        Ok(links) => links,
        Err(e) => return Stop::Exit(fatal(&e)),
    };
    tasks.spawn(router.run(control_rx, media_rx, links, cancel.clone()));

    // One restart at a time: the supervisor stops everything on the first.
    let (restart_tx, mut restart_rx) = mpsc::channel(1);
    drop(local_tx);
    {
        let status_led = match config
            .gpio
            .status_led
            .as_ref()
            .filter(|_| fleet_commands.is_some())
            .map(|l| gpio.open_output(l))
            .transpose()
        {
            Ok(led) => led,
            Err(e) => return Stop::Exit(fatal(&format!("gpio.status_led: {e}"))),
        };
        let control = control::Control {
            radios,
            source,
            config_path,
            to_channel: to_channel_control,
            restart: restart_tx,
            status_led,
            reporter: reporter.clone(),
            desks: desk_channels,
        };
        tasks.spawn(control.run(fleet_commands, local_rx, cancel.clone()));
    }

    if gpio.sim.has_dir() {
        tasks.spawn(sim_lines(gpio.sim.clone(), watchdog.register("sim lines"), cancel.clone()));
    }
    let _pinger = watchdog.spawn(cancel.clone());

    info!(ports = ports.len(), channels = config.channel.len(), "roipd running");
    watchdog::notify(&[NotifyState::Ready, NotifyState::Status("running")]);
    let code = supervise(&mut tasks, &cancel, &mut restart_rx).await;
    watchdog::notify(&[NotifyState::Stopping]);

    cancel.cancel();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!("some tasks did not stop in time");
    }
    safety::release_all("shutdown");
    drop(held_inputs);
    if let Some(writer) = record_writer {
        // The router is gone, and its queue with it: what is queued is written, then it stops.
        writer.join(Duration::from_secs(3)).await;
    }
    if let Some(driver) = fleet_driver {
        // Say goodbye (retained offline status), so the broker need not send the last will.
        driver.shutdown(Duration::from_secs(2)).await;
    }
    info!("roipd stopped");
    code
}

/// Start the hub (signaling, console, media) or the uplink client, as configured. The hub is
/// listening when this returns, so READY to systemd means reachable.
async fn start_net(
    config: &Config,
    router: &channels::ChannelRouter,
    stream_stats: &net::StreamStats,
    fleet: Option<crate::fleet::FleetHandle>,
    recordings: Option<crate::record::RecordingsApi>,
    cancel: &CancellationToken,
) -> Result<channels::NetLinks, String> {
    let mut links = channels::NetLinks { hub: None, uplink: None, desk: None };
    let mut hub_inbox: Option<mpsc::Sender<net::HubEvent>> = None;
    if let Some(hub) = &config.hub {
        let channels = config
            .channel
            .iter()
            .map(|(name, c)| net::HubChannel {
                name: name.clone(),
                label: c.label.clone().unwrap_or_else(|| name.clone()),
            })
            .collect();
        let mut options = net::HubOptions::from_config(hub, channels).map_err(|e| format!("hub: {e}"))?;
        options.stream_stats = stream_stats.clone();
        options.recordings = recordings;
        if config.port.values().any(|p| matches!(p, PortConfig::Desk(_))) {
            // Consoles served by a desk box control its desk ports.
            let (tx, rx) = mpsc::channel(net::peer_queue::INBOX);
            options.desk = Some(tx);
            links.desk = Some(rx);
        }
        let (tx, rx) = mpsc::channel(net::peer_queue::INBOX);
        hub_inbox = Some(tx.clone());
        net::serve(options, tx, cancel.clone()).await.map_err(|e| format!("hub: {e}"))?;
        links.hub = Some(rx);
    }
    if let Some(uplink) = config.uplink.as_ref().filter(|u| u.kind == config::UplinkKind::Hub) {
        let token_file = uplink.token_file.as_deref().unwrap_or_default();
        let token =
            config::secret::read_secret(Path::new(token_file)).map_err(|e| format!("uplink.token_file: {e}"))?;
        let mut options = net::UplinkOptions::new(&uplink.url, token, &config.device_id, router.uplink_requests());
        options.stream_stats = stream_stats.clone();
        if let Some(trust) = uplink.hub_trust() {
            options.tls = Some(net::tls::client(&trust).map_err(|e| format!("{}: {e}", e.key))?);
        }
        let (tx, rx) = mpsc::channel(net::peer_queue::INBOX);
        let handle = net::start_uplink(options, tx, cancel.clone());
        info!(url = %uplink.url, "uplink to hub starting");
        links.uplink = Some((Box::new(handle), rx));
    }
    if let Some((uplink, floor_hub)) = config
        .uplink
        .as_ref()
        .filter(|u| u.kind == config::UplinkKind::Janus)
        .and_then(|u| Some((u, u.floor_hub.clone()?)))
    {
        // A field box on Janus: media through Janus, floor from `floor_hub` over MQTT.
        let mqtt = config.mqtt.clone().ok_or("a Janus uplink needs [mqtt]: floor control travels over MQTT")?;
        let janus = net::janus::janus_options(config).map_err(|e| format!("uplink: {e}"))?;
        let floor = net::floor_mqtt::FloorEdgeOptions {
            mqtt,
            device_id: config.device_id.clone(),
            floor_hub,
            members: router.uplink_requests(),
            report: fleet.clone(),
        };
        let (tx, rx) = mpsc::channel(net::peer_queue::INBOX);
        let edge = net::janus::start_edge(janus, floor, tx, cancel.clone()).map_err(|e| format!("uplink: {e}"))?;
        info!(url = %uplink.url, "uplink to Janus starting");
        links.uplink = Some((Box::new(edge), rx));
    }
    if let Some(uplink) =
        config.uplink.as_ref().filter(|u| u.kind == config::UplinkKind::Janus && u.floor_hub.is_none())
    {
        // This box hosts its channels' floor: Janus edges join its arbiters over MQTT as hub peers.
        let mqtt = config.mqtt.clone().ok_or("a Janus uplink needs [mqtt]: floor control travels over MQTT")?;
        let janus = net::janus::janus_options(config).map_err(|e| format!("uplink: {e}"))?;
        // The MQTT edges reach the same router as the embedded hub's peers, through its inbox.
        let inbox = hub_inbox.take().unwrap_or_else(|| {
            let (inbox, rx) = mpsc::channel(net::peer_queue::INBOX);
            links.hub = Some(rx);
            inbox
        });
        let options = net::floor_mqtt::FloorHostOptions {
            mqtt,
            device_id: config.device_id.clone(),
            channels: config.channel.keys().cloned().collect(),
            janus: Some(janus),
            report: fleet.clone(),
        };
        net::floor_mqtt::start_host(options, inbox, cancel.clone()).map_err(|e| format!("floor host: {e}"))?;
        info!(url = %uplink.url, "floor host over MQTT starting, moderating in Janus");
    }
    Ok(links)
}

/// Wait for a stop signal or for any task to end (which is never expected while running).
async fn supervise(
    tasks: &mut JoinSet<()>,
    cancel: &CancellationToken,
    restart: &mut mpsc::Receiver<Option<(Config, String)>>,
) -> Stop {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        _ => return Stop::Exit(fatal("cannot install signal handlers")),
    };
    tokio::select! {
        _ = term.recv() => { info!("SIGTERM: shutting down"); Stop::Exit(ExitCode::SUCCESS) }
        _ = int.recv() => { info!("SIGINT: shutting down"); Stop::Exit(ExitCode::SUCCESS) }
        _ = cancel.cancelled() => Stop::Exit(ExitCode::SUCCESS),
        Some(next) = restart.recv() => { info!("restart requested: stopping every port first"); Stop::Restart(next) }
        done = tasks.join_next() => match done {
            Some(Err(e)) if e.is_panic() => {
                // The panic hook has already unkeyed every PTT; now stop everything else.
                error!("a driver task panicked; releasing PTT and exiting");
                Stop::Exit(ExitCode::from(EXIT_INTERNAL))
            }
            _ => {
                error!("a driver task ended unexpectedly; releasing PTT and exiting");
                Stop::Exit(ExitCode::from(EXIT_FATAL))
            }
        },
    }
}

fn fatal(message: &str) -> ExitCode {
    error!("{message}");
    safety::release_all("fatal error");
    ExitCode::from(EXIT_FATAL)
}

/// Open an input line whose edges become port inputs; its current level is sent first, so a
/// COR already open at start-up is seen. The edge callback never waits: the port's queue keeps
/// the newest edges only.
fn open_edge_input(
    gpio: &mut Gpio,
    line: &LineConfig,
    tx: PeerTx<PortInput>,
    make: fn(std::time::Instant, bool) -> PortInput,
) -> Result<LogicalInput, crate::gpio::GpioError> {
    let edge_tx = tx.clone();
    let mut input = gpio.open_input(line, move |at, asserted| {
        let _ = edge_tx.send(make(at, asserted));
    })?;
    let _ = tx.send(make(clock::now(), input.is_asserted()?));
    Ok(input)
}

/// A radio's emergency input: each assertion raises an emergency on the port's channel with the
/// radio as its caller, through the one action path ([`ChannelMsg::Emergency`]). The edge
/// callback never waits (it may run on a GPIO thread or the sim task): it hands the press to a
/// task that waits for room in the router's inbox, so no press is lost.
fn open_emergency_input(
    gpio: &mut Gpio,
    line: &LineConfig,
    port: &str,
    to_channel: &mpsc::Sender<ChannelMsg>,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<LogicalInput, crate::gpio::GpioError> {
    let (press_tx, mut presses) = mpsc::unbounded_channel::<()>();
    let edge_tx = press_tx.clone();
    let mut input = gpio.open_input(line, move |_at, asserted| {
        if asserted {
            let _ = edge_tx.send(());
        }
    })?;
    if input.is_asserted()? {
        let _ = press_tx.send(()); // held at start: raise it now
    }
    let (to_channel, port, cancel) = (to_channel.clone(), port.to_string(), cancel.clone());
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                press = presses.recv() => {
                    if press.is_none() {
                        break;
                    }
                    warn!(port = %port, "emergency input asserted");
                    let action = EmergencyAction::Raise {
                        target: EmergencyTarget::Port(port.clone()),
                        source: crate::core::emergency::SourceKind::Radio,
                        by: port.clone(),
                    };
                    if net::peer_queue::deliver(&to_channel, ChannelMsg::Emergency { action, reply: None }).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    Ok(input)
}

/// Drives simulated lines mirrored to a directory (tests, demo). Fault injection through
/// `<dir>/fault`: `panic` panics this driver task, `hang` wedges it, to prove that PTT is
/// released and that the watchdog notices. The task sleeps until a file in the directory is
/// written (inotify); only where inotify is unavailable does it re-read the files every 2 ms.
async fn sim_lines(bank: SimBank, heartbeat: Heartbeat, cancel: CancellationToken) {
    let register = |w| {
        // SAFETY: a DirWatch owns its inotify fd and returns the same one until dropped.
        unsafe { tokio::io::unix::AsyncFd::register_with_interest(w, tokio::io::Interest::READABLE) }
            .map_err(|e| std::io::Error::other(e.to_string()))
    };
    let watch = match bank.watch_dir().and_then(register) {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(error = %e, "sim lines: no inotify on the line directory, polling it every 2 ms");
            None
        }
    };
    let mut beat = tokio::time::interval(if watch.is_some() { BEAT_PERIOD } else { Duration::from_millis(2) });
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Files written before the watch started count too.
    let mut changed = true;
    loop {
        if changed || watch.is_none() {
            match bank.fault() {
                Some(SimFault::Panic) => panic!("simulated driver fault injected through the sim fault file"),
                Some(SimFault::Hang) => {
                    error!("simulated driver hang injected through the sim fault file");
                    loop {
                        std::thread::sleep(Duration::from_secs(3600));
                    }
                }
                None => {}
            }
            bank.poll_dir(clock::now());
        }
        heartbeat.beat();
        changed = false;
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = beat.tick() => {}
            ready = async { watch.as_ref()?.readable().await.ok() }, if watch.is_some() => {
                if let Some(mut guard) = ready {
                    // drain() reads until the queue is empty, so the readiness can go; one
                    // that arrived meanwhile is kept by tokio.
                    changed = !matches!(guard.get_inner().drain(), Ok(false));
                    guard.clear_ready();
                }
            }
        }
    }
}
