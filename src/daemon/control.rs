//! Fleet commands, each validated against this box's ports and channels and answered exactly
//! once. The fleet module has already checked their shape; here they meet the daemon's state.
//! Commands from inside the box (a radio's DTMF keypad, [`LocalCommand`]) take the same path:
//! one place carries out `set_channel` and the rest, whoever asked.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::dtmf::LocalCommand;
use super::radio_port::PortInput;
use super::{ChannelCommand, ChannelMsg};
use crate::config::{self, Config};
use crate::core::desk::DeskAction;
use crate::fleet::{redact, Command, CommandError, CommandReceiver, ErrorCode, PttAction};
use crate::gpio::LogicalOutput;
use crate::net::peer_queue::{deliver, PeerTx};

pub struct Control {
    /// Radio ports by name.
    pub radios: HashMap<String, PeerTx<PortInput>>,
    /// The configuration as written.
    pub source: String,
    /// Where `reload_config` reads from; None when running a built-in configuration.
    pub config_path: Option<PathBuf>,
    pub to_channel: mpsc::Sender<ChannelMsg>,
    /// Ask the supervisor to restart the daemon (with a new configuration, or the same).
    pub restart: mpsc::Sender<Option<(Config, String)>>,
    /// Blinked by `identify`.
    pub status_led: Option<LogicalOutput>,
    /// The ports' latest states: a remote key-up of an inhibited or locked-out radio is refused.
    pub reporter: super::report::Reporter,
    /// Desk ports by name, with the names of their channels in desk order.
    pub desks: HashMap<String, Vec<String>>,
}

impl Control {
    /// Runs until cancelled. `commands`: the fleet's (None without MQTT); `local`: the box's own.
    pub async fn run(
        self,
        mut commands: Option<CommandReceiver>,
        mut local: mpsc::Receiver<LocalCommand>,
        cancel: CancellationToken,
    ) {
        loop {
            let fleet = async {
                match commands.as_mut() {
                    Some(c) => c.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(LocalCommand { command, reply }) = local.recv() => {
                    info!(?command, "local command (DTMF)");
                    let result = match command {
                        // Never from a keypad: they would restart the box.
                        Command::ReloadConfig | Command::Restart => {
                            Err(CommandError::rejected("not a local command"))
                        }
                        other => self.handle(other).await,
                    };
                    if let Err(e) = &result {
                        warn!(error = %e, "local command refused");
                    }
                    let _ = reply.send(result);
                }
                next = fleet => match next {
                    Some((command, replier)) => {
                        info!(?command, "fleet command");
                        let (result, restart) = match command {
                            Command::ReloadConfig => match self.reload() {
                                Ok((reply, next)) => (Ok(reply), Some(Some(next))),
                                Err(e) => (Err(e), None),
                            },
                            Command::Restart => (Ok(json!({ "restarting": true })), Some(None)),
                            other => (self.handle(other).await, None),
                        };
                        if let Err(e) = &result {
                            warn!(error = %e, "fleet command refused");
                        }
                        replier.reply(result);
                        // Reply first, then restart: the answer is queued before the fleet
                        // client says goodbye. Full: a restart is under way already.
                        if let Some(next) = restart {
                            let _ = self.restart.try_send(next);
                        }
                    }
                    None => break,
                },
            }
        }
    }

    /// Read and validate the configuration file before anything stops: a bad file leaves the
    /// running box untouched. On success, the reply and the configuration to restart with.
    fn reload(&self) -> Result<(Value, (Config, String)), CommandError> {
        let Some(path) = &self.config_path else {
            return Err(CommandError::unavailable("running a built-in configuration: there is no file to reload"));
        };
        let name = path.display().to_string();
        let rejected = |why: String| CommandError::rejected(format!("{name} has errors, nothing changed:\n{why}"));
        let (config, text) = config::load(path).map_err(|errors| rejected(errors.to_string()))?;
        Ok((json!({ "reloading": name }), (config, text)))
    }

    fn radio(&self, port: &str) -> Result<&PeerTx<PortInput>, CommandError> {
        self.radios.get(port).ok_or_else(|| CommandError::not_found(format!("no radio port `{port}`")))
    }

    async fn channel(&self, command: ChannelCommand) -> Result<(), CommandError> {
        let (reply, answer) = oneshot::channel();
        deliver(&self.to_channel, ChannelMsg::Control { command, reply }).await.map_err(|_| stopping())?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) if reason.starts_with("no ") => Err(CommandError::not_found(reason)),
            Ok(Err(reason)) => Err(CommandError::rejected(reason)),
            Err(_) => Err(stopping()),
        }
    }

    async fn emergency(&self, action: super::EmergencyAction) -> Result<&'static str, CommandError> {
        let (reply, answer) = oneshot::channel();
        deliver(&self.to_channel, ChannelMsg::Emergency { action, reply: Some(reply) })
            .await
            .map_err(|_| stopping())?;
        match answer.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(reason)) if reason.starts_with("no ") => Err(CommandError::not_found(reason)),
            Ok(Err(reason)) if reason.starts_with("unavailable: ") => {
                Err(CommandError::unavailable(reason.trim_start_matches("unavailable: ")))
            }
            Ok(Err(reason)) => Err(CommandError::rejected(reason)),
            Err(_) => Err(stopping()),
        }
    }

    async fn handle(&self, command: Command) -> Result<Value, CommandError> {
        match command {
            Command::TxInhibit { port, on } => {
                self.radio(&port)?.send(PortInput::RemoteInhibit(on)).map_err(|_| stopping())?;
                Ok(json!({ "port": port, "inhibited": on }))
            }
            Command::RemotePtt { port, action } => {
                self.radio(&port)?;
                if matches!(action, PttAction::Key { .. }) {
                    // The keying core would not key it anyway: say so rather than "keyed".
                    self.refuses_keying(&port)?;
                }
                let (on, max) = match action {
                    PttAction::Key { max_duration } => (true, max_duration),
                    PttAction::Release => (false, Default::default()),
                };
                self.radio(&port)?.send(PortInput::RemotePtt { on, max }).map_err(|_| stopping())?;
                Ok(json!({ "port": port, "keyed": on, "max_duration_s": max.as_secs_f64() }))
            }
            Command::SetChannel { port, channel } => {
                self.radio(&port)?;
                self.channel(ChannelCommand::SetChannel { port: port.clone(), channel: channel.clone() }).await?;
                Ok(json!({ "port": port, "channel": channel }))
            }
            Command::Listen { channel, on } => {
                self.channel(ChannelCommand::Listen { channel: channel.clone(), on }).await?;
                Ok(json!({ "channel": channel, "listen": on }))
            }
            Command::Volume { channel, db } => {
                self.channel(ChannelCommand::Volume { channel: channel.clone(), db: db as f32 }).await?;
                Ok(json!({ "channel": channel, "volume_db": db }))
            }
            Command::ReplayLast { port, channel } => {
                let mut action = serde_json::Map::new();
                action.insert("action".into(), json!("replay_last"));
                if let Some(c) = channel {
                    action.insert("channel".into(), json!(c));
                }
                Box::pin(self.handle(Command::Desk { port, action: Value::Object(action) })).await
            }
            Command::Desk { port, action } => {
                let channels =
                    self.desks.get(&port).ok_or_else(|| CommandError::not_found(format!("no desk port `{port}`")))?;
                // The desk's own parser, run here too so a malformed action is `invalid_args`
                // rather than a refusal; the router checks it again as for a console.
                DeskAction::from_json(&action, channels).map_err(|e| CommandError::new(ErrorCode::InvalidArgs, e))?;
                let (reply, answer) = oneshot::channel();
                // The fleet may use every channel: `allowed` is the desk's own list.
                let request = crate::net::hub::DeskRequest {
                    port: port.clone(),
                    action: action.clone(),
                    allowed: channels.clone(),
                    reply,
                };
                deliver(&self.to_channel, ChannelMsg::DeskRequest(request)).await.map_err(|_| stopping())?;
                match answer.await {
                    Ok(Ok(())) => Ok(json!({ "port": port, "action": action })),
                    Ok(Err(reason)) => Err(CommandError::rejected(reason)),
                    Err(_) => Err(stopping()),
                }
            }
            Command::Emergency { target } => {
                let (target, shown) = match target {
                    crate::fleet::EmergencyTarget::Channel(c) => {
                        (super::EmergencyTarget::Channel(c.clone()), json!({ "channel": c }))
                    }
                    crate::fleet::EmergencyTarget::Port(p) => {
                        (super::EmergencyTarget::Port(p.clone()), json!({ "port": p }))
                    }
                };
                let source = crate::core::emergency::SourceKind::Fleet;
                let outcome =
                    self.emergency(super::EmergencyAction::Raise { target, source, by: "fleet".into() }).await?;
                let mut v = shown;
                v["emergency"] = json!(outcome);
                Ok(v)
            }
            Command::AckEmergency { channel } => {
                let action = super::EmergencyAction::Ack { channel: channel.clone(), by: "fleet".into() };
                let outcome = self.emergency(action).await?;
                Ok(json!({ "channel": channel, "emergency": outcome }))
            }
            Command::GetConfig => {
                let table: toml::Table =
                    toml::from_str(&self.source).map_err(|e| CommandError::internal(format!("config: {e}")))?;
                let mut value = serde_json::to_value(table).map_err(|e| CommandError::internal(e.to_string()))?;
                redact(&mut value);
                Ok(value)
            }
            // Answered in `run`: they restart the daemon after the reply.
            Command::ReloadConfig | Command::Restart => {
                Err(CommandError::internal("restart commands are handled by run"))
            }
            Command::Identify { duration } => {
                let led = self.status_led.clone().ok_or_else(|| {
                    CommandError::unavailable("this box has no identify LED (`gpio.status_led` in its config)")
                })?;
                tokio::spawn(async move {
                    let until = tokio::time::Instant::now() + duration;
                    let mut lit = false;
                    while tokio::time::Instant::now() < until {
                        lit = !lit;
                        let _ = led.set(lit);
                        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                    }
                    let _ = led.set(false);
                });
                Ok(json!({ "identify_s": duration.as_secs_f64(), "led": self.status_led.as_ref().map(|l| l.name()) }))
            }
        }
    }
}

impl Control {
    fn refuses_keying(&self, port: &str) -> Result<(), CommandError> {
        let states = self.reporter.port_states();
        let Some((_, state)) = states.iter().find(|(name, _)| name == port) else { return Ok(()) };
        if state.inhibited {
            return Err(CommandError::rejected(format!("{port} is TX-inhibited; lift it with tx_inhibit first")));
        }
        if state.locked_out {
            return Err(CommandError::rejected(format!("{port} is locked out by its time-out timer until it is idle")));
        }
        Ok(())
    }
}

fn stopping() -> CommandError {
    CommandError::unavailable("the daemon is stopping")
}
