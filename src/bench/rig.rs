//! Real ALSA devices without a sound card: a private PulseAudio with null sinks, reached through
//! ALSA's pulse plugin (docs TESTING.md, "Real-time pacing"), and what a process costs on them.
//! Shared by `roipd bench` ([`super::alsa_port`]), `tests/audio_alsa.rs` and
//! `examples/rig_latency.rs`.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What the rig needs that is not installed, with the Debian package to install; None if
/// everything is there.
pub fn missing_pulse_tools() -> Option<String> {
    for (bin, package) in [("pulseaudio", "pulseaudio"), ("pacat", "pulseaudio-utils")] {
        let found = Command::new(bin).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
        if !found {
            return Some(format!(
                "`{bin}` is missing: install the Debian package `{package}` (scripts/setup-debian --test)"
            ));
        }
    }
    let plugin =
        ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib/arm-linux-gnueabihf", "/usr/lib"]
            .iter()
            .any(|d| Path::new(d).join("alsa-lib/libasound_module_pcm_pulse.so").exists());
    if !plugin {
        return Some(
            "ALSA's pulse plugin is missing: install the Debian package `libasound2-plugins` (scripts/setup-debian --test)"
                .into(),
        );
    }
    None
}

/// `load-module` line of a 48 kHz mono S16 null sink.
pub fn null_sink(name: &str) -> String {
    format!("load-module module-null-sink sink_name={name} rate=48000 channels=1 format=s16le")
}

/// A private PulseAudio on `<dir>/native` with the modules given, away from any user session
/// (own home and runtime dir, no D-Bus). Killed on drop, and by the kernel if this process dies
/// first.
pub struct PulseServer {
    child: Child,
    socket: PathBuf,
}

impl PulseServer {
    /// Start it and wait for its socket. Err says why (missing tools included).
    pub fn start(dir: &Path, modules: &[String]) -> Result<PulseServer, String> {
        if let Some(why) = missing_pulse_tools() {
            return Err(why);
        }
        let socket = dir.join("native");
        let _ = fs::remove_file(&socket);
        let script = dir.join("pulse.pa");
        let mut text =
            format!("load-module module-native-protocol-unix socket={} auth-anonymous=1\n", socket.display());
        for m in modules {
            text.push_str(m);
            text.push('\n');
        }
        fs::write(&script, text).map_err(|e| format!("{}: {e}", script.display()))?;
        let home = dir.join("pulse-home");
        fs::create_dir_all(home.join("run")).map_err(|e| e.to_string())?;
        let log_path = dir.join("pulse.log");
        let log = fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("pulseaudio");
        // Real-time scheduling keeps its clock honest on a busy machine (it gets it as root);
        // no shm, which in containers fails and floods the log (pulseaudio issue 824).
        cmd.args(["--daemonize=no", "--exit-idle-time=-1", "--disallow-exit", "--realtime=yes", "--high-priority=yes"])
            .args(["--disable-shm=yes", "-n", "-F"])
            .arg(&script)
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", home.join("run"))
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .stdout(Stdio::null())
            .stderr(log);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|e| format!("cannot start pulseaudio: {e}"))?;
        let pulse = PulseServer { child, socket };
        let until = Instant::now() + Duration::from_secs(10);
        while !pulse.socket.exists() {
            if Instant::now() > until {
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("pulseaudio did not create its socket in 10 s; log:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(pulse)
    }

    /// For `PULSE_SERVER`.
    pub fn server(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An asound.conf line: PCM `pcm` is this server's sink or source `device`.
    pub fn pcm(&self, pcm: &str, device: &str) -> String {
        format!("pcm.{pcm} {{ type pulse server \"{}\" device \"{device}\" }}\n", self.server())
    }

    /// Play raw 48 kHz mono S16LE `raw` into `sink` with `pacat`, from a thread, paced by the
    /// pipe (pacat only takes what its buffer of `latency_ms` holds). Join the thread, then
    /// wait for the child.
    pub fn play_raw(
        &self,
        sink: &str,
        raw: Vec<u8>,
        latency_ms: u32,
    ) -> Result<(Child, std::thread::JoinHandle<()>), String> {
        let mut pacat = Command::new("pacat")
            .args(["-p", "-d", sink, "--raw", "--format=s16le", "--rate=48000", "--channels=1"])
            .arg(format!("--latency-msec={latency_ms}"))
            .env("PULSE_SERVER", self.server())
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start pacat: {e}"))?;
        let Some(mut stdin) = pacat.stdin.take() else {
            let _ = pacat.kill();
            return Err("pacat has no stdin".into());
        };
        let writer = std::thread::spawn(move || {
            for chunk in raw.chunks(960) {
                if stdin.write_all(chunk).is_err() {
                    break;
                }
            }
        });
        Ok((pacat, writer))
    }
}

impl Drop for PulseServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child gets SIGKILL when this process dies, so no server outlives a crashed test.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: only async-signal-safe prctl between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// `s` seconds of a 1 kHz tone at 0.3 of full scale, raw 48 kHz mono S16LE.
pub fn tone_raw(secs: f64) -> Vec<u8> {
    (0..(secs * 48_000.0) as usize)
        .map(|i| ((0.3 * (std::f32::consts::TAU * 1000.0 * i as f32 / 48_000.0).sin()) * 32767.0) as i16)
        .flat_map(i16::to_le_bytes)
        .collect()
}

/// Run time and wakeups of all threads of a process, and its RSS, at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Time on a CPU, ns (schedstat).
    pub run_ns: u64,
    /// Voluntary plus involuntary context switches.
    pub switches: u64,
    pub rss_kib: u64,
    /// The anonymous part of it (heap, stacks, relocated data): what no page cache backs.
    pub anon_kib: u64,
}

impl Usage {
    /// Summed over `/proc/<pid>/task/*`. Threads that ended meanwhile drop out of the sum.
    pub fn of(pid: u32) -> Usage {
        let mut u = Usage::default();
        for task in fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
            let base = task.path();
            if let Ok(s) = fs::read_to_string(base.join("schedstat")) {
                u.run_ns += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
            u.switches += switches(&base.join("status"));
        }
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        u.rss_kib = kib("VmRSS:");
        u.anon_kib = kib("RssAnon:");
        u
    }
}

/// Voluntary plus involuntary context switches in a `/proc/.../status` file.
pub fn switches(status: &Path) -> u64 {
    fs::read_to_string(status)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt_switches"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// What a process cost over an interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// % of one core.
    pub cpu_pct: f64,
    pub wakeups_per_s: f64,
    pub rss_mb: f64,
    /// Anonymous RSS, MB (the part of `rss_mb` that is not file pages).
    pub anon_rss_mb: f64,
}

/// Each process's [`Rates`] over `span` (sampled before and after one sleep).
pub fn measure(pids: &[u32], span: Duration) -> Vec<Rates> {
    let before: Vec<Usage> = pids.iter().map(|&p| Usage::of(p)).collect();
    let t0 = Instant::now();
    std::thread::sleep(span);
    let dt = t0.elapsed().as_secs_f64();
    pids.iter()
        .zip(before)
        .map(|(&p, b)| {
            let a = Usage::of(p);
            Rates {
                cpu_pct: a.run_ns.saturating_sub(b.run_ns) as f64 / dt / 1e7,
                wakeups_per_s: a.switches.saturating_sub(b.switches) as f64 / dt,
                rss_mb: a.rss_kib as f64 / 1024.0,
                anon_rss_mb: a.anon_kib as f64 / 1024.0,
            }
        })
        .collect()
}
