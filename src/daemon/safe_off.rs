//! `roipd safe-off`: the last line of defence, run by systemd after every stop (ExecStopPost).

use std::path::Path;
use std::process::ExitCode;

use serde::Deserialize;
use tracing::{error, info, warn};

use super::{logging, EXIT_CONFIG, EXIT_FATAL};
use crate::config::{self, GpioConfig, LineConfig, PortConfig};
use crate::gpio::Gpio;

/// `roipd safe-off CONFIG`: unkey every configured PTT. Works from a config that fails full
/// validation too, as long as the PTT lines can be read from it: this runs after crashes.
pub fn safe_off(path: &Path) -> ExitCode {
    logging::init("info");
    let (gpio_config, lines) = match config::load_file(path) {
        Ok(c) => {
            let lines = c
                .port
                .iter()
                .filter_map(|(n, p)| match p {
                    PortConfig::Radio(r) => Some((n.clone(), r.ptt.clone())),
                    PortConfig::Desk(_) => None,
                })
                .collect();
            (c.gpio, lines)
        }
        Err(errors) => {
            warn!("config has errors; releasing the PTT lines that can still be read:\n{errors}");
            match ptt_lines_lenient(path) {
                Ok(found) => found,
                Err(e) => {
                    error!("cannot read PTT lines from {}: {e}", path.display());
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
        }
    };
    let mut gpio = Gpio::new(&gpio_config);
    let mut failed = 0;
    for (port, line) in &lines {
        // Opening drives the line unkeyed; that is the whole job.
        match gpio.open_output(line) {
            Ok(_) => info!(port = %port, line = %line.line, "PTT unkeyed"),
            Err(e) => {
                error!(port = %port, line = %line.line, error = %e, "could not unkey PTT");
                failed += 1;
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FATAL)
    }
}

/// Read just `[gpio]` and every `port.*.ptt` from a file that may fail full validation.
fn ptt_lines_lenient(path: &Path) -> Result<(GpioConfig, Vec<(String, LineConfig)>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let doc: toml::Table = toml::from_str(&text).map_err(|e| e.to_string())?;
    let gpio = doc
        .get("gpio")
        .and_then(|g| GpioConfig::deserialize(g.clone()).ok())
        .unwrap_or_default();
    let mut lines = Vec::new();
    if let Some(ports) = doc.get("port").and_then(|p| p.as_table()) {
        for (name, port) in ports {
            if let Some(Ok(line)) = port.get("ptt").map(|p| LineConfig::deserialize(p.clone())) {
                lines.push((name.clone(), line));
            }
        }
    }
    Ok((gpio, lines))
}
