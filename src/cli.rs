//! Command line: `roipd run|check|devices|safe-off`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::{bench, config, daemon, demo, devices};

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
    /// A standalone box with a simulated radio, the hub and the web console; no config needed.
    Demo(demo::DemoArgs),
    /// Validate a configuration file: every error as `file:line:column: key: message` (exit 2), or a summary.
    Check { config: PathBuf },
    /// List audio devices, GPIO chips, USB radio interfaces and serial ports on this machine.
    Devices,
    /// Drive every configured PTT output to unkeyed and exit (for ExecStopPost and field use).
    SafeOff { config: PathBuf },
    /// Measure the audio pipeline: per-frame cost, added latency, jitter buffer, memory, and
    /// instructions under callgrind when valgrind is installed. Build with --release first.
    Bench {
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Seconds of audio for the per-frame cost runs.
        #[arg(long, default_value_t = 20)]
        seconds: u32,
    },
    /// Run one benchmark kernel (used by `roipd bench` under callgrind).
    #[command(hide = true)]
    BenchKernel {
        kernel: bench::Kernel,
        #[arg(long, default_value_t = 5)]
        seconds: u32,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => daemon::run_from_file(&config),
        Command::Check { config } => config::check_command(&config),
        Command::Demo(args) => demo::main(args),
        Command::Devices => {
            devices::print();
            ExitCode::SUCCESS
        }
        Command::SafeOff { config } => daemon::safe_off(&config),
        Command::Bench { json, seconds } => bench::main(json, seconds),
        Command::BenchKernel { kernel, seconds } => match bench::run_kernel(kernel, seconds) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench kernel: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
