//! Command line: `roipd run|check|devices|safe-off|mosquitto-acl|sign-command|recordings`.

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
    /// From the fleet's configs, print a Mosquitto acl_file in which each box (its own
    /// `[mqtt] username`) may publish only its own topics; with --passwd, also write the
    /// `user:password` lines for `mosquitto_passwd -U` (docs/mqtt.md, "Authentication").
    MosquittoAcl {
        /// An operator user that reads everything under roipd/ and sends commands.
        #[arg(long)]
        operator: Option<String>,
        /// Write `user:password` lines (from each config's password_file) here, mode 0600.
        #[arg(long)]
        passwd: Option<PathBuf>,
        #[arg(required = true)]
        configs: Vec<PathBuf>,
    },
    /// Print a command signed with the fleet key, to publish on roipd/DEVICE/cmd/NAME, e.g.
    /// `mosquitto_pub -t roipd/gw/cmd/remote_ptt -m "$(roipd sign-command --key-file K --device gw remote_ptt '{...}')"`.
    /// It is valid for 30 s and runs once.
    SignCommand {
        #[arg(long)]
        key_file: PathBuf,
        #[arg(long)]
        device: String,
        name: String,
        #[arg(default_value = "{}")]
        json: String,
    },
    /// Recordings (`[record]`, docs/recording.md): list them, or export one's Ogg Opus file.
    /// Reads the directory only (safe beside the running daemon).
    Recordings(crate::record::cli::RecordingsArgs),
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
        Command::MosquittoAcl { operator, passwd, configs } => {
            report(mosquitto_acl(operator.as_deref(), passwd, &configs))
        }
        Command::SignCommand { key_file, device, name, json } => report(sign_command(&key_file, &device, &name, &json)),
        Command::Recordings(args) => report(crate::record::cli::main(args)),
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

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roipd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn mosquitto_acl(operator: Option<&str>, passwd: Option<PathBuf>, configs: &[PathBuf]) -> Result<(), String> {
    use crate::fleet::acl::{acl_file, check_unique, BoxAcl};
    let mut boxes = Vec::new();
    let mut passwords = String::new();
    for path in configs {
        // The text alone: the broker's machine need not have the boxes' secret files.
        let raw = config::secret::read_limited(path, config::load::MAX_CONFIG_BYTES)?;
        let text = String::from_utf8(raw).map_err(|_| format!("{}: not UTF-8", path.display()))?;
        let cfg = config::parse_str(&text, &path.display().to_string()).map_err(|e| e.to_string())?;
        let b = BoxAcl::from_config(&cfg).map_err(|e| format!("{}: {e}", path.display()))?;
        if passwd.is_some() {
            let file = cfg.mqtt.as_ref().and_then(|m| m.password_file.clone()).ok_or_else(|| {
                format!(
                    "{}: --passwd needs [mqtt] password_file (client certificates: leave --passwd out)",
                    path.display()
                )
            })?;
            let password = config::secret::read_secret(std::path::Path::new(&file))?;
            if password.contains(['\n', ':']) {
                return Err(format!("{file}: a Mosquitto password cannot contain a newline"));
            }
            passwords.push_str(&format!("{}:{password}\n", b.user));
        }
        boxes.push(b);
    }
    check_unique(&boxes)?;
    if let Some(path) = passwd {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all(passwords.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("{}: {} users; hash it with `mosquitto_passwd -U {}`", path.display(), boxes.len(), path.display());
    }
    print!("{}", acl_file(&boxes, operator));
    Ok(())
}

fn sign_command(key_file: &std::path::Path, device: &str, name: &str, json: &str) -> Result<(), String> {
    let key = crate::fleet::auth::FleetKey::new(&config::secret::read_private(key_file)?)
        .map_err(|e| format!("{}: {e}", key_file.display()))?;
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json)
        .map_err(|e| format!("the command must be a JSON object: {e}"))?;
    if !crate::net::floor_mqtt::protocol::valid_device(device) {
        return Err(format!("`{device}` is not a device id"));
    }
    if !crate::fleet::protocol::COMMAND_NAMES.contains(&name) {
        return Err(format!("`{name}` is not a command"));
    }
    let topic = format!("roipd/{device}/cmd/{name}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?;
    let nonce = format!("{:016x}", rand::random::<u64>());
    println!("{}", crate::fleet::auth::sign_command(&key, &topic, now.as_millis() as u64, &nonce, json));
    Ok(())
}
