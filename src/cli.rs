//! Command line: `roipd run|check|devices|safe-off`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::{config, daemon, devices};

#[derive(Parser, Debug)]
#[command(name = "roipd", version, about = "Radio-over-IP gateway daemon", propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon with a configuration file.
    Run { config: PathBuf },
    /// Validate a configuration file: every error with file:line:key (exit 2), or a summary.
    Check { config: PathBuf },
    /// List audio devices, GPIO chips, USB radio interfaces and serial ports on this machine.
    Devices,
    /// Drive every configured PTT output to unkeyed and exit (for ExecStopPost and field use).
    SafeOff { config: PathBuf },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => daemon::run_from_file(&config),
        Command::Check { config } => config::check_command(&config),
        Command::Devices => {
            devices::print();
            ExitCode::SUCCESS
        }
        Command::SafeOff { config } => daemon::safe_off(&config),
    }
}
