//! The client side runs in a child process (this test binary re-executed with
//! `ROIPD_FLEET_AGENT` set), so a test can SIGKILL it and watch the last will.
//!
//! The child is a tiny stand-in daemon: two radio ports, three channels, and an answer for
//! every command. It prints `CMD <name>` for each command it receives (so tests can prove a
//! malformed one never reached it) and, when asked to hammer, `HAMMER ...` lines with the
//! slowest `FleetHandle` call it saw.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roipd::config::MqttConfig;
use roipd::fleet::protocol::StreamMetrics;
use roipd::fleet::{
    config_hash, redact, CommandError, DaemonMetrics, Event, EventKind, Fleet, FleetHandle, FleetOptions, PortState,
    PttAction, UplinkState,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const AGENT_ENV: &str = "ROIPD_FLEET_AGENT";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AgentConfig {
    pub device: String,
    pub url: String,
    pub username: Option<String>,
    pub password_file: Option<String>,
    pub ca_file: Option<String>,
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
    pub metrics_interval_s: u64,
    /// Publish events and port state every 5 ms and report the slowest call.
    pub hammer: bool,
    /// Publish Home Assistant discovery under `homeassistant/`.
    pub home_assistant: bool,
    /// `[mqtt] fleet_key_file`: commands that act must be signed.
    #[serde(default)]
    pub fleet_key_file: Option<String>,
    /// `[mqtt] insecure_unsigned`: without a key, run every command unsigned (the lab opt-out).
    #[serde(default)]
    pub insecure_unsigned: bool,
}

impl AgentConfig {
    pub fn new(device: &str, url: String) -> Self {
        // These tests exercise the command protocol itself (parsing, replies, limits), so the
        // agent runs unsigned on purpose; `with_a_fleet_key_...` sets a key, and daemon_mqtt
        // shows a box with neither refusing the commands that key.
        Self { device: device.into(), url, metrics_interval_s: 30, insecure_unsigned: true, ..Default::default() }
    }
}

// ---------------------------------------------------------------------------------------------
// Parent side

pub struct Agent {
    child: Child,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    pub fn spawn(cfg: &AgentConfig) -> Agent {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["child_agent", "--exact", "--nocapture", "--test-threads", "1"])
            .env(AGENT_ENV, serde_json::to_string(cfg).unwrap())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("re-exec the test binary as the fleet agent");
        let out = collect(child.stdout.take().unwrap());
        let err = collect(child.stderr.take().unwrap());
        Agent { child, out, err }
    }

    pub fn stdout(&self) -> Vec<String> {
        self.out.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().join("\n")
    }

    /// SIGKILL: no chance to say goodbye, so only the last will can tell the broker.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "agent did not exit; stderr:\n{}", self.stderr());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last stdout line starting with `prefix`.
    pub fn last_line(&self, prefix: &str) -> Option<String> {
        self.stdout().into_iter().rev().find(|l| l.starts_with(prefix))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

// ---------------------------------------------------------------------------------------------
// Child side

pub fn run(cfg_json: &str) -> ! {
    let cfg: AgentConfig = serde_json::from_str(cfg_json).expect("agent config");
    tracing_subscriber::fmt().with_env_filter("info,roipd=debug").with_writer(std::io::stderr).with_ansi(false).init();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let code = rt.block_on(agent(cfg));
    std::process::exit(code)
}

fn say(line: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

async fn agent(cfg: AgentConfig) -> i32 {
    let mqtt = MqttConfig {
        username: cfg.username.clone(),
        password_file: cfg.password_file.clone(),
        ca_file: cfg.ca_file.clone(),
        client_cert_file: cfg.client_cert_file.clone(),
        client_key_file: cfg.client_key_file.clone(),
        metrics_interval_s: cfg.metrics_interval_s,
        fleet_key_file: cfg.fleet_key_file.clone(),
        insecure_unsigned: cfg.insecure_unsigned && cfg.fleet_key_file.is_none(),
        ..MqttConfig::new(cfg.url.clone())
    };
    let options = FleetOptions::new(&cfg.device, mqtt).with_metrics(|| DaemonMetrics {
        streams: [(
            "ops".to_string(),
            StreamMetrics { rtt_ms: Some(12.5), jitter_ms: Some(3.0), loss_pct: Some(0.5), bitrate_bps: Some(24_000) },
        )]
        .into(),
        xruns: 1,
    });
    let options = if cfg.home_assistant { options.with_home_assistant("homeassistant") } else { options };
    let Fleet { handle, mut commands, driver } = match Fleet::start(options) {
        Ok(f) => f,
        Err(e) => {
            say(format!("START_ERROR {e}"));
            return 3;
        }
    };
    let mut daemon = Daemon::new(handle.clone(), &cfg);
    handle.set_uplink_state(UplinkState::Up, None);
    handle.set_config_hash(config_hash(cfg.device.as_bytes()));
    if cfg.hammer {
        hammer(handle.clone());
    }
    say("READY");
    while let Some((command, replier)) = commands.recv().await {
        say(format!("CMD {}", command.name()));
        let restart = matches!(command, roipd::fleet::Command::Restart);
        replier.reply(daemon.handle(command));
        if restart {
            break;
        }
    }
    driver.shutdown(Duration::from_secs(3)).await;
    say("EXIT");
    0
}

fn hammer(handle: FleetHandle) {
    std::thread::spawn(move || {
        let mut max = Duration::ZERO;
        for seq in 1u64.. {
            let t = Instant::now();
            handle.publish_event(Event::new(EventKind::CorOpen).port("radio2").detail(seq.to_string()));
            let level = -((seq % 60) as f32);
            handle.set_port_state(
                "radio2",
                PortState { channel: "fire".into(), rx_level_dbfs: Some(level), ..Default::default() },
            );
            max = max.max(t.elapsed());
            if seq % 40 == 0 {
                say(format!("HAMMER seq={seq} max_us={} connected={}", max.as_micros(), handle.is_connected()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
}

struct Daemon {
    fleet: FleetHandle,
    ports: BTreeMap<String, PortState>,
    channels: BTreeSet<String>,
    config: Value,
}

impl Daemon {
    fn new(fleet: FleetHandle, cfg: &AgentConfig) -> Self {
        let ports: BTreeMap<String, PortState> = [
            ("radio1".to_string(), PortState { channel: "ops".into(), ..Default::default() }),
            ("radio2".to_string(), PortState { channel: "fire".into(), ..Default::default() }),
        ]
        .into();
        for (name, state) in &ports {
            fleet.set_port_state(name, state.clone());
        }
        // What the real daemon would return: the config as JSON, with a secret or two in it.
        let password = cfg.password_file.as_ref().and_then(|p| std::fs::read_to_string(p).ok());
        let config = json!({
            "device_id": cfg.device,
            "mqtt": {"url": cfg.url, "username": cfg.username, "password_file": cfg.password_file,
                     "password": password, "ca_file": cfg.ca_file},
            "hub": {"listen": "127.0.0.1:8080", "token": {"ops": {"secret_file": "/etc/roipd/ops.token", "channels": ["ops"]}}},
            "port": {"radio1": {"kind": "radio", "channel": "ops", "keying": {"tot_ms": 180000}}},
        });
        let channels = ["ops", "fire", "tac"].map(String::from).into();
        Self { fleet, ports, channels, config }
    }

    fn port(&mut self, name: &str) -> Result<&mut PortState, CommandError> {
        self.ports.get_mut(name).ok_or_else(|| CommandError::not_found(format!("no port `{name}`")))
    }

    fn channel(&self, name: &str) -> Result<(), CommandError> {
        self.channels
            .contains(name)
            .then_some(())
            .ok_or_else(|| CommandError::not_found(format!("no channel `{name}`")))
    }

    fn publish(&self, port: &str) {
        self.fleet.set_port_state(port, self.ports[port].clone());
    }

    fn handle(&mut self, command: roipd::fleet::Command) -> Result<Value, CommandError> {
        use roipd::fleet::Command as C;
        match command {
            C::SetChannel { port, channel } => {
                self.channel(&channel)?;
                self.port(&port)?.channel = channel.clone();
                self.publish(&port);
                Ok(json!({"port": port, "channel": channel}))
            }
            C::Listen { channel, on } => {
                self.channel(&channel)?;
                Ok(json!({"channel": channel, "on": on}))
            }
            C::Volume { channel, db } => {
                self.channel(&channel)?;
                Ok(json!({"channel": channel, "db": db}))
            }
            C::Emergency { .. } | C::AckEmergency { .. } => {
                Err(CommandError::unavailable("this test agent has no emergencies"))
            }
            C::TxInhibit { port, on } => {
                let p = self.port(&port)?;
                p.inhibited = on;
                if on {
                    p.tx_keyed = false;
                }
                self.publish(&port);
                Ok(json!({"port": port, "inhibited": on}))
            }
            C::RemotePtt { port, action } => {
                let p = self.port(&port)?;
                match action {
                    PttAction::Key { max_duration } => {
                        if p.inhibited {
                            return Err(CommandError::rejected(format!("port `{port}` is TX-inhibited")));
                        }
                        p.tx_keyed = true;
                        p.tot_remaining_s = Some(max_duration.as_secs_f32());
                        self.publish(&port);
                        self.fleet.publish_event(Event::new(EventKind::PttOn).port(&port).reason("remote"));
                        Ok(json!({"port": port, "keyed": true, "max_duration_s": max_duration.as_secs()}))
                    }
                    PttAction::Release => {
                        p.tx_keyed = false;
                        p.tot_remaining_s = None;
                        self.publish(&port);
                        self.fleet.publish_event(Event::new(EventKind::PttOff).port(&port).reason("remote"));
                        Ok(json!({"port": port, "keyed": false}))
                    }
                }
            }
            C::Identify { duration } => Ok(json!({"seconds": duration.as_secs()})),
            C::ReloadConfig => Ok(json!({"reloaded": true})),
            C::GetConfig => {
                let mut config = self.config.clone();
                redact(&mut config);
                Ok(config)
            }
            C::Restart => Ok(json!({"restarting": true})),
            // The stand-in box has radio ports only.
            C::Desk { port, .. } | C::ReplayLast { port, .. } => {
                Err(CommandError::not_found(format!("no desk port `{port}`")))
            }
        }
    }
}
