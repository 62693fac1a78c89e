//! `roipd demo`: a standalone box with no config file and no hardware. One simulated radio on
//! channel "ops" receives "traffic" on a schedule (its squelch opens and speech-like audio
//! plays into the channel), writes whatever it is asked to transmit to a WAV file, and the
//! box hosts the channel: hub, signaling and the web console on http://127.0.0.1:8080
//! (`--tls`: https, with a self-signed certificate).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::bench::signal::speechlike;
use crate::{config, daemon};

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Address of the hub, its signaling and the web console.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// File holding the access token (default: the token is `demo`).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Folder for the demo's files (simulated GPIO lines, recordings).
    #[arg(long, default_value = "/tmp/roipd-demo")]
    pub dir: PathBuf,
    /// Folder where the simulated GPIO lines are mirrored (default: DIR/lines).
    #[arg(long)]
    pub lines: Option<PathBuf>,
    /// WAV file receiving what the simulated radio transmits (default: DIR/radio1-tx.wav).
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Seconds between the simulated radio's incoming calls (0: none; drive its COR file yourself).
    #[arg(long, default_value_t = 20)]
    pub traffic_every: u64,
    /// Folder of the channel's recordings, one Ogg Opus file per transmission (default:
    /// DIR/recordings).
    #[arg(long)]
    pub recordings: Option<PathBuf>,
    /// Record nothing.
    #[arg(long)]
    pub no_recordings: bool,
    /// Report to an MQTT broker, e.g. mqtt://127.0.0.1:1883.
    #[arg(long)]
    pub mqtt: Option<String>,
    /// Serve HTTPS/WSS with a self-signed certificate kept in DIR (its fingerprint is printed):
    /// a browser on another machine may then use its microphone. Default: plain HTTP.
    #[arg(long)]
    pub tls: bool,
    /// ICE-TCP on this address (`[hub] ice_tcp_listen`): consoles whose UDP is blocked connect.
    #[arg(long, value_name = "ADDR")]
    pub ice_tcp_listen: Option<String>,
    /// A STUN/TURN URL given to consoles (`[hub] ice_servers`); repeat for more.
    #[arg(long, value_name = "URL")]
    pub ice_server: Vec<String>,
    /// The TURN server's shared secret (coturn `static-auth-secret`) for `--ice-server` URLs.
    #[arg(long, value_name = "FILE")]
    pub turn_secret_file: Option<PathBuf>,
    /// Print the configuration the demo runs with, and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// How long each simulated incoming call lasts.
const CALL: Duration = Duration::from_secs(4);

pub fn main(args: DemoArgs) -> ExitCode {
    let lines = args.lines.clone().unwrap_or_else(|| args.dir.join("lines"));
    let record = args.record.clone().unwrap_or_else(|| args.dir.join("radio1-tx.wav"));
    let traffic = args.dir.join("traffic.wav");
    let token_file = args.token_file.clone().unwrap_or_else(|| args.dir.join("token"));
    let text = config_text(&args, &lines, &record, &traffic, &token_file);
    if args.print_config {
        print!("{text}");
        return ExitCode::SUCCESS;
    }
    if let Err(e) = prepare(&args, &lines, &traffic, &token_file) {
        eprintln!("roipd demo: {e}");
        return ExitCode::FAILURE;
    }
    let config = match config::parse_str(&text, "(demo)") {
        Ok(c) => c,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(2);
        }
    };
    // Said before the console URL, which would otherwise point at whatever holds the port.
    if let Err(e) = std::net::TcpListener::bind(&args.listen) {
        eprintln!("roipd demo: cannot listen on {}: {e}", args.listen);
        if e.kind() == std::io::ErrorKind::AddrInUse {
            eprintln!("roipd demo: another program (another roipd demo?) has it; try --listen 127.0.0.1:8081");
        }
        return ExitCode::FAILURE;
    }
    let token = std::fs::read_to_string(&token_file).unwrap_or_default();
    let scheme = if args.tls { "https" } else { "http" };
    // The token after `#`: a browser never sends the fragment, so it is in no request line.
    eprintln!("roipd demo: console at {scheme}://{}/#token={}", args.listen, token.trim());
    if let Some(source) = config.hub.as_ref().and_then(|h| h.cert_source()) {
        match crate::net::tls::server(&source) {
            Ok(t) => eprintln!(
                "roipd demo: self-signed certificate {}, SHA-256 fingerprint {}",
                t.cert_file.display(),
                t.fingerprint
            ),
            Err(e) => {
                eprintln!("roipd demo: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    eprintln!("roipd demo: radio1's lines in {}, its transmissions in {}", lines.display(), record.display());
    if let Some(dir) = recordings_dir(&args) {
        eprintln!("roipd demo: channel ops recorded in {}", dir.display());
    }
    if args.traffic_every > 0 {
        let cor = lines.join("radio1-cor");
        let every = Duration::from_secs(args.traffic_every).max(CALL + Duration::from_secs(1));
        std::thread::spawn(move || incoming_calls(&cor, every));
    }
    daemon::run_config(config, text)
}

/// Where the demo records (an absolute path, as `[record] dir` must be), unless told not to.
fn recordings_dir(args: &DemoArgs) -> Option<PathBuf> {
    if args.no_recordings {
        return None;
    }
    let dir = args.recordings.clone().unwrap_or_else(|| args.dir.join("recordings"));
    Some(std::path::absolute(&dir).unwrap_or(dir))
}

fn prepare(args: &DemoArgs, lines: &Path, traffic: &Path, token_file: &Path) -> Result<(), String> {
    std::fs::create_dir_all(lines).map_err(|e| format!("{}: {e}", lines.display()))?;
    crate::bench::write_wav(traffic, &speechlike(48_000 * 4))?;
    if args.token_file.is_none() {
        std::fs::write(token_file, "demo\n").map_err(|e| format!("{}: {e}", token_file.display()))?;
    }
    Ok(())
}

/// The simulated radio's squelch opens for a call now and then, like a busy channel.
fn incoming_calls(cor: &Path, every: Duration) {
    std::thread::sleep(Duration::from_secs(3));
    loop {
        let _ = std::fs::write(cor, "1\n");
        std::thread::sleep(CALL);
        let _ = std::fs::write(cor, "0\n");
        std::thread::sleep(every - CALL);
    }
}

fn config_text(args: &DemoArgs, lines: &Path, record: &Path, traffic: &Path, token_file: &Path) -> String {
    let mqtt = args
        .mqtt
        .as_ref()
        .map(|url| format!("\n[mqtt]\nurl = \"{url}\"\nmetrics_interval_s = 10\n"))
        .unwrap_or_default();
    let recordings = recordings_dir(args)
        .map(|dir| format!("\n# Every transmission on the channel, one Ogg Opus file each.\n[record]\ndir = \"{}\"\nmax_total_mb = 200\n", dir.display()))
        .unwrap_or_default();
    format!(
        r#"# roipd demo: one simulated radio on channel "ops", hosted by this box.
device_id = "demo"

[log]
level = "info"

[gpio.sim]
dir = "{lines}"

[channel.ops]
label = "Operations"

[port.radio1]
kind = "radio"
channel = "ops"
cor = {{ line = "sim:radio1-cor" }}
ptt = {{ line = "sim:radio1-ptt" }}
emergency = {{ line = "sim:radio1-emergency" }}
audio = {{ capture = "sim:wav:{traffic}", playback = "sim:wav-rec:{record}" }}
keying = {{ tx_delay_ms = 100, tx_hang_ms = 800 }}

[hub]
listen = "{listen}"
{tls}{ice}
[hub.token.demo]
secret_file = "{token}"
channels = ["*"]
max_priority = 100
{recordings}{mqtt}"#,
        lines = lines.display(),
        traffic = traffic.display(),
        record = record.display(),
        listen = args.listen,
        token = token_file.display(),
        tls = if args.tls { format!("tls = true\nstate_dir = \"{}\"\n", args.dir.display()) } else { String::new() },
        ice = ice_keys(args),
    )
}

/// `[hub]` keys for `--ice-tcp-listen`, `--ice-server` and `--turn-secret-file`.
fn ice_keys(args: &DemoArgs) -> String {
    let mut s = String::new();
    if let Some(a) = &args.ice_tcp_listen {
        s.push_str(&format!("ice_tcp_listen = {a:?}\n"));
    }
    if !args.ice_server.is_empty() {
        let secret = args
            .turn_secret_file
            .as_ref()
            .map(|f| format!(", secret_file = {:?}", f.display().to_string()))
            .unwrap_or_default();
        s.push_str(&format!("ice_servers = [{{ urls = {:?}{secret} }}]\n", args.ice_server));
    }
    s
}
