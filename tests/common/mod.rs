//! Helpers for tests that run the real `roipd` binary against simulated lines.
#![allow(dead_code)]

pub mod config;
pub mod fleet_ns;
pub mod outsider;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_roipd");

/// A `roipd run` process with its own temp dir, sim line dir and captured stderr.
pub struct Daemon {
    pub child: Child,
    pub dir: tempfile::TempDir,
}

impl Daemon {
    /// Write `config` (with `{lines}` replaced by the sim line dir) and start `roipd run`.
    pub fn start(config: &str) -> Daemon {
        Self::start_with_env(config, &[])
    }

    /// Like [`Daemon::start`], with extra environment variables for the daemon.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_with(config, env, &[])
    }

    /// Like [`Daemon::start`], with environment variables and files written into the daemon's
    /// directory first (`{dir}` in the config is that directory).
    pub fn start_with(config: &str, env: &[(&str, &str)], files: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        // The fleet key the config builder's `[mqtt]` names by default (private, as roipd demands).
        let key = dir.path().join(config::FLEET_KEY_FILE);
        fs::write(&key, format!("{}\n", config::FLEET_KEY)).unwrap();
        fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        for (name, content) in files {
            fs::write(dir.path().join(name), content).unwrap();
        }
        let cfg_path = dir.path().join("roipd.toml");
        fs::write(&cfg_path, fill(config, dir.path())).unwrap();
        let stderr = fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new(BIN)
            .args(["run", cfg_path.to_str().unwrap()])
            .env("RUST_LOG", "debug")
            // As systemd's RuntimeDirectory= would: the PTT state file lands in the test's dir.
            .env("RUNTIME_DIRECTORY", dir.path().join("run"))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start roipd");
        Daemon { child, dir }
    }

    /// Replace the daemon's config file (`{lines}` and `{dir}` filled in as at the start), as
    /// an operator would before a reload.
    pub fn write_config(&self, config: &str) {
        fs::write(self.config_path(), fill(config, self.dir.path())).unwrap();
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("roipd.toml")
    }

    /// The daemon's runtime directory (`RUNTIME_DIRECTORY`), where it records its PTT lines.
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// Run `roipd safe-off` on this daemon's config path with its runtime directory, as
    /// systemd's ExecStopPost would.
    pub fn safe_off(&self) -> std::process::Output {
        Command::new(BIN)
            .args(["safe-off", self.config_path().to_str().unwrap()])
            .env("RUNTIME_DIRECTORY", self.runtime_dir())
            .output()
            .expect("run roipd safe-off")
    }

    pub fn line_path(&self, name: &str) -> PathBuf {
        self.dir.path().join("lines").join(name)
    }

    /// Current level of a sim line as written in its mirror file (None if absent).
    pub fn line(&self, name: &str) -> Option<bool> {
        read_level(&self.line_path(name))
    }

    /// Every level an output was set to, oldest first.
    pub fn line_log(&self, name: &str) -> Vec<bool> {
        fs::read_to_string(self.line_path(&format!("{name}.log")))
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim() == "1")
            .collect()
    }

    pub fn drive(&self, name: &str, high: bool) {
        let tmp = self.line_path(&format!(".{name}.drive"));
        fs::write(&tmp, if high { "1\n" } else { "0\n" }).unwrap();
        fs::rename(&tmp, self.line_path(name)).unwrap();
    }

    /// `panic` or `hang` the daemon's simulated line driver.
    pub fn inject_fault(&self, fault: &str) {
        fs::write(self.dir.path().join("lines").join("fault"), format!("{fault}\n")).unwrap();
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Wait until `cond` holds, failing the test with the daemon's log after `timeout`.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, mut cond: impl FnMut(&Daemon) -> bool) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if cond(self) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("roipd exited ({status}) while waiting for {what}\n--- stderr ---\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("timed out waiting for {what}\n--- stderr ---\n{}", self.stderr());
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("roipd did not exit within {timeout:?}\n--- stderr ---\n{}", self.stderr());
    }
}

/// `config` with `{lines}` (the sim line dir) and `{dir}` (the daemon's dir) filled in.
fn fill(config: &str, dir: &Path) -> String {
    let lines = dir.join("lines");
    config.replace("{lines}", lines.to_str().unwrap()).replace("{dir}", dir.to_str().unwrap())
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port that was free a moment ago (for a daemon to listen on).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// RMS level (dBFS) of each 10 ms block of a 48 kHz mono 16-bit WAV, empty if unreadable.
pub fn wav_blocks_dbfs(path: &Path) -> Vec<f32> {
    let Ok(mut reader) = hound::WavReader::open(path) else { return Vec::new() };
    let samples: Vec<f32> = reader.samples::<i16>().filter_map(Result::ok).map(|s| s as f32 / 32768.0).collect();
    samples
        .chunks(480)
        .map(|b| 10.0 * (b.iter().map(|s| s * s).sum::<f32>() / b.len() as f32).max(1e-12).log10())
        .collect()
}

/// Checks that every 10 ms block of `blocks[from..to]` (dBFS, from [`wav_blocks_dbfs`]) lies in
/// `range`; the error names the first block outside it (its time in the file), its level, how
/// many blocks are outside, and the span's quietest and loudest block.
pub fn blocks_within(blocks: &[f32], from: usize, to: usize, range: std::ops::Range<f32>) -> Result<(), String> {
    let span =
        blocks.get(from..to).ok_or_else(|| format!("blocks {from}..{to} beyond the {} recorded", blocks.len()))?;
    let outside: Vec<usize> = (0..span.len()).filter(|&i| !range.contains(&span[i])).collect();
    let Some(&first) = outside.first() else { return Ok(()) };
    let (lo, hi) = span.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &d| (lo.min(d), hi.max(d)));
    Err(format!(
        "expected every 10 ms block at {:.1}..{:.1} dBFS from {} ms to {} ms; {} of {} outside, the first at {} ms: \
         {:.1} dBFS (span min {lo:.1}, max {hi:.1} dBFS)",
        range.start,
        range.end,
        from * 10,
        to * 10,
        outside.len(),
        span.len(),
        (from + first) * 10,
        span[first]
    ))
}

pub fn read_level(path: &Path) -> Option<bool> {
    match fs::read_to_string(path).ok()?.trim() {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}
