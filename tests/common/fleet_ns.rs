//! A fleet on Janus inside a private network namespace: Debian's `janus` on 127.0.0.2 (it never
//! gathers ICE candidates on `lo`, see ../shared/design/TESTING.md), Mosquitto on 127.0.0.1,
//! and `roipd run` processes started with configs. Every byte stays in the namespace.
//!
//! A `#[test]` calls [`in_namespace`] with the name of its `inner_*` twin (marked `#[ignore]`
//! so it only runs there); the twin checks [`inside`] first, then starts what it needs.
//! Needs root and the Debian packages `janus`, `mosquitto`, `iproute2` (and `nftables` for
//! loss); a missing one fails the test with its name, never a silent skip.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Daemon;

/// Set (to anything) in the inner test's environment: it runs inside the namespace.
pub const INSIDE: &str = "ROIPD_JANUS_NETNS";
pub const JANUS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
pub const JANUS_WS_PORT: u16 = 8188;
/// Janus's media ports (tests/janus/janus.jcfg `rtp_port_range`), where loss is injected.
pub const JANUS_RTP_PORTS: &str = "20000-20999";
pub const MQTT_PORT: u16 = 1883;
/// The test's configs find Janus's `admin_key` (tests/janus/janus.plugin.videoroom.jcfg) here.
pub const ADMIN_KEY: &str = "roipd-test-admin-key";

pub fn janus_url() -> String {
    format!("ws://{JANUS_IP}:{JANUS_WS_PORT}")
}

pub fn mqtt_url() -> String {
    format!("mqtt://127.0.0.1:{MQTT_PORT}")
}

pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A tool the test cannot do without: its path, or a failure naming the Debian package.
pub fn require(tool: &str, package: &str) -> PathBuf {
    on_path(tool).unwrap_or_else(|| {
        panic!("`{tool}` is missing: install the Debian package `{package}` (scripts/setup-debian --test)")
    })
}

/// Debian's multiarch folder holding Janus's plugins and transports.
pub fn janus_lib() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .flatten()
        .map(|e| e.path().join("janus"))
        .chain([PathBuf::from("/usr/lib/janus")])
        .find(|p| p.join("plugins/libjanus_videoroom.so").is_file())
}

/// Root, Janus, `ip`, `unshare`, and whatever else the test names (tool, package).
pub fn preflight(extra: &[(&str, &str)]) {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the Janus tests need root: they make a network namespace (unshare -n)");
    require("janus", "janus");
    assert!(janus_lib().is_some(), "Janus's VideoRoom plugin is missing: install the Debian package `janus`");
    require("ip", "iproute2");
    require("unshare", "util-linux");
    for (tool, package) in extra {
        require(tool, package);
    }
}

/// Run `inner` (an ignored test of this test binary) in a fresh network namespace with `lo`
/// and a veth end carrying 127.0.0.2; its output is printed, and its failure is ours.
/// `extra`: tools the inner test needs besides Janus (tool, Debian package).
pub fn in_namespace(inner: &str, extra: &[(&str, &str)], limit: Duration) {
    preflight(extra);
    const SETUP: &str = r#"set -e
ip link set lo up
ip link add v0 type veth peer name v1
ip addr add 127.0.0.2/32 dev v0
ip link set v0 up
ip link set v1 up
exec "$0" "$1" --exact --ignored --nocapture --test-threads=1"#;
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new("unshare")
        .args(["-n", "--", "bash", "-c", SETUP])
        .arg(&exe)
        .arg(inner)
        .env(INSIDE, "1")
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "roipd=debug".into()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run unshare");
    // Read both pipes on threads so a chatty child cannot block on a full pipe.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    println!("{out}");
    let ok = status.is_some_and(|s| s.success()) && out.contains("1 passed");
    if !ok {
        let tail: Vec<&str> = err.lines().rev().take(400).collect();
        eprintln!("--- inner stderr (last 400 lines) ---");
        for l in tail.into_iter().rev() {
            eprintln!("{l}");
        }
        // The panic's own lines last, so a log cut in the middle still says what failed.
        let lines: Vec<&str> = err.lines().chain(out.lines()).collect();
        for (i, _) in lines.iter().enumerate().filter(|(_, l)| l.contains("panicked at")) {
            eprintln!("--- inner failure ---\n{}", lines[i..(i + 3).min(lines.len())].join("\n"));
        }
        panic!("{inner} failed ({status:?}, limit {} s)", limit.as_secs());
    }
}

/// Inner tests run only inside their namespace; run directly (e.g. `--include-ignored`) they
/// say so and return: the outer twin is the real test. In-process clients log to stderr,
/// which the outer test shows when this one fails.
pub fn inside() -> bool {
    if std::env::var_os(INSIDE).is_none() {
        println!("runs only inside the network namespace its outer test makes");
        return false;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    true
}

/// Kill a child and give it its end, ignoring one already gone.
fn stop_child(child: &mut Option<Child>, signal: i32, grace: Duration) -> Duration {
    let started = Instant::now();
    if let Some(mut c) = child.take() {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(c.id() as i32, signal) };
        while c.try_wait().ok().flatten().is_none() && started.elapsed() < grace {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
    started.elapsed()
}

/// Spawn `cmd` so that it dies with the test process, whatever happens to the test.
fn spawn_tied(cmd: &mut Command) -> Child {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().unwrap_or_else(|e| panic!("start {cmd:?}: {e}"))
}

fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str, log: impl Fn() -> String) -> Duration {
    let started = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "{what} not listening on {addr}:\n{}", log());
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited ({status}):\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

fn tail(path: &Path, lines: usize) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Janus inside the namespace, with the configuration in `tests/janus/`.
pub struct Janus {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Janus {
    pub fn start() -> Janus {
        let dir = tempfile::tempdir().unwrap();
        let lib = janus_lib().expect("preflight found it");
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/janus");
        for entry in std::fs::read_dir(&fixtures).unwrap().flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().ends_with(".jcfg") {
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).unwrap();
            let text = text.replace("@DIR@", dir.path().to_str().unwrap()).replace("@LIB@", lib.to_str().unwrap());
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let mut j = Janus { dir, child: None };
        j.spawn();
        j
    }

    /// Start Janus and wait until its WebSocket port accepts connections.
    pub fn spawn(&mut self) {
        let d = self.dir.path();
        let mut cmd = Command::new("janus");
        cmd.arg("-F").arg(d).arg("-C").arg(d.join("janus.jcfg")).args(["-o", "-N", "-L"]).arg(d.join("janus.log"));
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = spawn_tied(&mut cmd);
        let log = d.join("janus.log");
        let took = wait_listening(SocketAddr::from((JANUS_IP, JANUS_WS_PORT)), &mut child, "Janus", || tail(&log, 60));
        self.child = Some(child);
        println!("janus listening after {} ms", took.as_millis());
    }

    /// SIGKILL: the crash case (no goodbye to anyone).
    pub fn kill(&mut self) {
        stop_child(&mut self.child, libc::SIGKILL, Duration::ZERO);
    }

    /// SIGTERM and wait for the exit (Janus takes 1.5–5 s); how long it took.
    pub fn terminate(&mut self) -> Duration {
        stop_child(&mut self.child, libc::SIGTERM, Duration::from_secs(15))
    }

    pub fn log_tail(&self) -> String {
        tail(&self.dir.path().join("janus.log"), 60)
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- janus.log (tail) ---\n{}", self.log_tail());
        }
        stop_child(&mut self.child, libc::SIGTERM, Duration::from_secs(6));
    }
}

/// Mosquitto on 127.0.0.1:1883 inside the namespace (anonymous, nothing persisted).
pub struct Mosquitto {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        require("mosquitto", "mosquitto");
        let dir = tempfile::tempdir().unwrap();
        // Running as root, Mosquitto would drop to user `mosquitto`; nothing here needs that.
        let conf = format!(
            "user root\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n\
             log_type information\nlistener {MQTT_PORT} 127.0.0.1\nallow_anonymous true\n"
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf).unwrap();
        let mut m = Mosquitto { dir, child: None };
        m.spawn();
        m
    }

    pub fn spawn(&mut self) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(d.join("broker.log")).unwrap();
        let mut cmd = Command::new(require("mosquitto", "mosquitto"));
        cmd.arg("-c").arg(d.join("mosquitto.conf"));
        cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        let mut child = spawn_tied(&mut cmd);
        let path = d.join("broker.log");
        wait_listening(SocketAddr::from(([127, 0, 0, 1], MQTT_PORT)), &mut child, "mosquitto", || tail(&path, 40));
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        stop_child(&mut self.child, libc::SIGTERM, Duration::from_secs(2));
    }
}

/// The rooms' secret (the floor host moderates with it).
pub const ROOM_SECRET: &str = "roipd-test-room-secret";
/// The rooms' PIN every box of a test fleet shares.
pub const ROOM_PIN: &str = "roipd-test-room-pin";

/// `roipd run` with `config`, the Janus admin key in `{dir}/admin.key`, the rooms' secret in
/// `{dir}/room.secret` and their PIN in `{dir}/room.pin`.
pub fn roipd(config: &str) -> Daemon {
    let files = [
        ("admin.key", format!("{ADMIN_KEY}\n")),
        ("room.secret", format!("{ROOM_SECRET}\n")),
        ("room.pin", format!("{ROOM_PIN}\n")),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    Daemon::start_with(config, &[], &files)
}

/// Publish a fleet command (`roipd/<device>/cmd/<name>`, QoS 1) with `mosquitto_pub`, signed
/// with the test fleet key ([`super::config::sign`]).
pub fn mqtt_command(device: &str, name: &str, json: &str) {
    let topic = format!("roipd/{device}/cmd/{name}");
    let out = Command::new(require("mosquitto_pub", "mosquitto-clients"))
        .args(["-h", "127.0.0.1", "-p", &MQTT_PORT.to_string(), "-q", "1"])
        .args(["-t", &topic, "-m", &super::config::sign(&topic, json)])
        .output()
        .expect("run mosquitto_pub");
    assert!(out.status.success(), "mosquitto_pub failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Samples in a `sim:wav-out` recording so far (its header is rewritten every second).
pub fn wav_len(path: &Path) -> usize {
    hound::WavReader::open(path).map(|r| r.len() as usize).unwrap_or(0)
}

/// Drop `percent` % of the UDP packets Janus sends (its media, to every client), at random.
pub fn drop_janus_media(percent: u32) {
    let nft = require("nft", "nftables");
    let rules = format!(
        "table inet roipd_loss {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  \
         udp sport {JANUS_RTP_PORTS} numgen random mod 100 < {percent} drop\n }}\n}}\n"
    );
    let mut child = Command::new(nft).args(["-f", "-"]).stdin(Stdio::piped()).spawn().expect("run nft");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), rules.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "nft refused the loss rule:\n{rules}");
}

/// What a received recording carries of a test tone, per 20 ms frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToneQuality {
    /// Frames loud enough to be audio at all (above -50 dBFS).
    pub audible_frames: usize,
    /// Frames from the first audible one to the last: a lost frame in between counts against
    /// the tone share.
    pub span_frames: usize,
    /// Of those, frames where the tone holds at least 90 % of the power.
    pub tone_frames: usize,
    /// Tone power over everything else, over all audible frames, dB.
    pub snr_db: f32,
}

impl ToneQuality {
    /// Share of the talk-spurt's 20 ms frames that carry the tone.
    pub fn tone_share(&self) -> f32 {
        self.tone_frames as f32 / self.span_frames.max(1) as f32
    }
}

/// Samples of a 48 kHz mono 16-bit WAV as -1..1 (empty if unreadable, e.g. not written yet).
pub fn wav_samples(path: &Path) -> Vec<f32> {
    let Ok(mut reader) = hound::WavReader::open(path) else { return Vec::new() };
    reader.samples::<i16>().filter_map(Result::ok).map(|s| s as f32 / 32768.0).collect()
}

/// Power of the `hz` component of `x` (48 kHz), as a share of `x`'s power when `x` is that
/// tone alone (Goertzel, scaled so a pure tone on a bin gives its mean square).
pub fn tone_power(x: &[f32], hz: f32) -> f32 {
    let w = 2.0 * std::f32::consts::PI * hz / 48_000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for &v in x {
        let s = v + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power / (x.len() as f32 * x.len() as f32)
}

/// One character per 20 ms frame, for failure messages: `#` the tone, `x` other audio, `.` silence.
pub fn tone_map(samples: &[f32], hz: f32) -> String {
    samples
        .chunks_exact(960)
        .map(|frame| {
            let total = frame.iter().map(|s| s * s).sum::<f32>() / frame.len() as f32;
            if 10.0 * total.max(1e-12).log10() < -50.0 {
                '.'
            } else if tone_power(frame, hz).min(total) >= 0.9 * total {
                '#'
            } else {
                'x'
            }
        })
        .collect()
}

/// How well `samples` carry a tone of `hz`, per 20 ms frame.
pub fn tone_quality(samples: &[f32], hz: f32) -> ToneQuality {
    let (mut audible, mut tone, mut tone_sum, mut rest_sum) = (0, 0, 0.0f64, 0.0f64);
    let (mut first, mut last) = (None, 0);
    for (i, frame) in samples.chunks_exact(960).enumerate() {
        let total = frame.iter().map(|s| s * s).sum::<f32>() / frame.len() as f32;
        if 10.0 * total.max(1e-12).log10() < -50.0 {
            continue;
        }
        audible += 1;
        first.get_or_insert(i);
        last = i;
        let t = tone_power(frame, hz).min(total);
        if t >= 0.9 * total {
            tone += 1;
        }
        tone_sum += f64::from(t);
        rest_sum += f64::from(total - t);
    }
    let snr_db = (10.0 * (tone_sum / rest_sum.max(1e-12)).log10()) as f32;
    let span_frames = first.map_or(0, |f| last - f + 1);
    ToneQuality { audible_frames: audible, span_frames, tone_frames: tone, snr_db }
}
