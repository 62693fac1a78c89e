//! Fleet commands, each validated against this box's ports and answered exactly once.
//! The fleet module has already checked their shape; here they meet the daemon's state.

use std::collections::HashMap;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::radio_port::PortInput;
use crate::fleet::{redact, Command, CommandError, CommandReceiver, PttAction};

pub struct Control {
    /// Radio ports by name.
    pub radios: HashMap<String, mpsc::UnboundedSender<PortInput>>,
    /// The configuration as written (None for the demo's built-in one... which is shown too).
    pub source: String,
}

impl Control {
    pub async fn run(self, mut commands: CommandReceiver, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                next = commands.recv() => match next {
                    Some((command, replier)) => {
                        info!(?command, "fleet command");
                        let result = self.handle(command);
                        if let Err(e) = &result {
                            warn!(error = %e, "fleet command refused");
                        }
                        replier.reply(result);
                    }
                    None => break,
                },
            }
        }
    }

    fn radio(&self, port: &str) -> Result<&mpsc::UnboundedSender<PortInput>, CommandError> {
        self.radios.get(port).ok_or_else(|| CommandError::not_found(format!("no radio port `{port}`")))
    }

    fn handle(&self, command: Command) -> Result<Value, CommandError> {
        match command {
            Command::TxInhibit { port, on } => {
                self.radio(&port)?.send(PortInput::RemoteInhibit(on)).map_err(|_| stopping())?;
                Ok(json!({ "port": port, "inhibited": on }))
            }
            Command::RemotePtt { port, action } => {
                let (on, max) = match action {
                    PttAction::Key { max_duration } => (true, max_duration),
                    PttAction::Release => (false, Default::default()),
                };
                self.radio(&port)?.send(PortInput::RemotePtt { on, max }).map_err(|_| stopping())?;
                Ok(json!({ "port": port, "keyed": on, "max_duration_s": max.as_secs_f64() }))
            }
            Command::GetConfig => {
                let table: toml::Table =
                    toml::from_str(&self.source).map_err(|e| CommandError::internal(format!("config: {e}")))?;
                let mut value = serde_json::to_value(table).map_err(|e| CommandError::internal(e.to_string()))?;
                redact(&mut value);
                Ok(value)
            }
            Command::SetChannel { .. }
            | Command::Listen { .. }
            | Command::Volume { .. }
            | Command::Identify { .. }
            | Command::ReloadConfig
            | Command::Restart => Err(CommandError::unavailable(format!(
                "`{}` is not supported by roipd {} yet",
                command.name(),
                env!("CARGO_PKG_VERSION")
            ))),
        }
    }
}

fn stopping() -> CommandError {
    CommandError::unavailable("the daemon is stopping")
}
