//! The PTT state file: the PTT lines a running daemon drives, recorded where `roipd safe-off`
//! finds them without the config file (which may be broken, edited or gone after a crash).
//!
//! Where: `<runtime dir>/ptt-lines-<hash>.json`, the runtime dir being `$RUNTIME_DIRECTORY`
//! (systemd's `RuntimeDirectory=roipd`: `/run/roipd`), else `$XDG_RUNTIME_DIR/roipd`, else
//! `/run/roipd`; `<hash>` is the FNV-1a hash of the config file's canonical path (symlinks and
//! `..` resolved; the absolute path if the file is gone), so daemons run with different configs
//! (and tests) never share a file, safe-off finds it whichever way the same file is named
//! (`./roipd.toml`, a symlink, `/etc/roipd/roipd.toml`), and given the same path as `roipd run`
//! even when the config file is gone.
//!
//! When: written before the first PTT line is opened, again on every (re)start of the ports,
//! a config reload included (lines added or removed), atomically (temp file, fsync, rename,
//! fsync of the directory). It is never deleted by the daemon: after a clean stop it names lines
//! that are already unkeyed, and releasing them again is harmless; systemd empties the runtime
//! directory after ExecStopPost.
//!
//! Format (JSON, `version` 1):
//! `{"version":1,"config":"/etc/roipd/roipd.toml","pid":812,"sim_dir":null,"lines":[
//! {"port":"radio1","backend":"cdev","address":"gpiochip0:17","active_low":false,"bias":"as-is"}]}`
//! `backend:address` is the line as written in the config (`cdev:gpiochip0:17`); `active_low`
//! says which level is unkeyed (high when true); `sim_dir` is `[gpio.sim] dir` for `sim` lines.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{debug, error};

use crate::config::{Bias, Config, LineConfig, PortConfig};

/// The format version written; a file with another version is refused, not guessed at.
pub const VERSION: u32 = 1;

/// A state file is a few hundred bytes; this only stops a wrong file from eating memory.
const MAX_STATE_BYTES: u64 = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PttState {
    pub version: u32,
    /// The config file the daemon ran, absolute.
    pub config: String,
    /// The daemon's process id (for people reading the file).
    pub pid: u32,
    /// `[gpio.sim] dir`: where `sim` lines are mirrored.
    #[serde(default)]
    pub sim_dir: Option<String>,
    pub lines: Vec<PttRecord>,
}

/// One PTT output the daemon drives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PttRecord {
    pub port: String,
    /// `sim`, `rppal`, `cdev`, `cm108` or `serial`.
    pub backend: String,
    /// The rest of the line name: chip and offset, device and pin, or sim line name.
    pub address: String,
    /// Unkeyed is the high level when true.
    pub active_low: bool,
    #[serde(default)]
    pub bias: Bias,
}

/// The runtime directory: `$RUNTIME_DIRECTORY` (its first entry), else `$XDG_RUNTIME_DIR/roipd`,
/// else `/run/roipd`.
pub fn runtime_dir() -> PathBuf {
    let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dirs) = non_empty("RUNTIME_DIRECTORY") {
        // systemd joins several RuntimeDirectory= entries with ':'.
        let first = dirs.as_bytes().split(|&b| b == b':').next().unwrap_or_default();
        return PathBuf::from(std::ffi::OsStr::from_bytes(first));
    }
    match non_empty("XDG_RUNTIME_DIR") {
        Some(dir) => PathBuf::from(dir).join("roipd"),
        None => PathBuf::from("/run/roipd"),
    }
}

/// The state file of the daemon run with `config_path`.
pub fn path_for(config_path: &Path) -> PathBuf {
    let canonical = canonical(config_path);
    let hash = crate::fleet::config_hash(canonical.as_os_str().as_bytes());
    runtime_dir().join(format!("ptt-lines-{hash}.json"))
}

/// The config file's canonical path, or its absolute path when it is gone.
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).or_else(|_| std::path::absolute(path)).unwrap_or_else(|_| path.to_path_buf())
}

impl PttState {
    /// The PTT lines `config` drives (radio ports; a desk's `ptt` is a button, an input).
    pub fn of(config: &Config, config_path: &Path) -> Self {
        let lines = config
            .port
            .iter()
            .filter_map(|(port, p)| match p {
                PortConfig::Radio(radio) => Some((port, &radio.ptt)),
                PortConfig::Desk(_) => None,
            })
            .map(|(port, line)| {
                let (backend, address) = line.line.split_once(':').unwrap_or(("", &line.line));
                PttRecord {
                    port: port.clone(),
                    backend: backend.to_string(),
                    address: address.to_string(),
                    active_low: line.active_low,
                    bias: line.bias,
                }
            })
            .collect();
        PttState {
            version: VERSION,
            config: canonical(config_path).display().to_string(),
            pid: std::process::id(),
            sim_dir: config.gpio.sim.dir.clone(),
            lines,
        }
    }

    /// `(port, line)` for every recorded line, as the GPIO layer opens them.
    pub fn line_configs(&self) -> Vec<(String, LineConfig)> {
        self.lines
            .iter()
            .map(|r| {
                let line =
                    LineConfig { line: format!("{}:{}", r.backend, r.address), active_low: r.active_low, bias: r.bias };
                (r.port.clone(), line)
            })
            .collect()
    }

    /// Replace the file at `path` atomically: a reader sees the old record or the new one.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(".{name}.tmp"));
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(&tmp)?;
        file.write_all(&json)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself must survive a power cut on a persistent runtime dir.
        File::open(dir)?.sync_all()
    }

    /// The record at `path`: `Ok(None)` when there is none.
    pub fn read(path: &Path) -> Result<Option<Self>, String> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            _ => {}
        }
        let bytes = crate::config::secret::read_limited(path, MAX_STATE_BYTES)?;
        let state: PttState = serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        if state.version != VERSION {
            return Err(format!("{}: version {} (this roipd reads {VERSION})", path.display(), state.version));
        }
        Ok(Some(state))
    }
}

/// Record the PTT lines of `config` before any of them is opened. A failure is logged, not
/// fatal: safe-off still reads the config file, and a box must not go off the air over it.
pub fn record(config: &Config, config_path: &Path) {
    let path = path_for(config_path);
    let state = PttState::of(config, config_path);
    match state.write(&path) {
        Ok(()) => debug!(file = %path.display(), lines = state.lines.len(), "PTT lines recorded for safe-off"),
        Err(e) => error!(
            file = %path.display(),
            error = %e,
            "cannot record the PTT lines for safe-off; it will rely on the config file alone"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_RADIOS_AND_A_DESK: &str = r#"
device_id = "state-test"
[gpio.sim]
dir = "/tmp/lines"
[channel.ops]
[port.radio-a]
kind = "radio"
channel = "ops"
cor = { line = "sim:a-cor" }
ptt = { line = "cdev:gpiochip0:17", bias = "pull-down" }
[port.radio-b]
kind = "radio"
channel = "ops"
cor = { line = "sim:b-cor" }
ptt = { line = "sim:b-ptt", active_low = true }
[port.desk]
kind = "desk"
channels = ["ops"]
ptt = { line = "sim:desk-ptt", active_low = true }
"#;

    fn config(text: &str) -> Config {
        crate::config::parse_str(text, "test.toml").unwrap()
    }

    #[test]
    fn round_trip_keeps_every_radio_ptt_and_no_desk_button() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run").join("ptt-lines-x.json");
        let state = PttState::of(&config(TWO_RADIOS_AND_A_DESK), Path::new("/etc/roipd/roipd.toml"));
        state.write(&path).unwrap();
        let read = PttState::read(&path).unwrap().expect("written");
        assert_eq!(read, state);
        assert_eq!(read.sim_dir.as_deref(), Some("/tmp/lines"));
        assert_eq!(read.config, "/etc/roipd/roipd.toml");
        let lines = read.line_configs();
        assert_eq!(
            lines,
            [
                (
                    "radio-a".to_string(),
                    LineConfig { line: "cdev:gpiochip0:17".into(), active_low: false, bias: Bias::PullDown }
                ),
                ("radio-b".to_string(), LineConfig { line: "sim:b-ptt".into(), active_low: true, bias: Bias::AsIs }),
            ]
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"backend\": \"cdev\"") && text.contains("\"address\": \"gpiochip0:17\""), "{text}");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
    }

    #[test]
    fn reload_replaces_the_record_with_the_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ptt-lines-x.json");
        let cfg = Path::new("/etc/roipd/roipd.toml");
        PttState::of(&config(TWO_RADIOS_AND_A_DESK), cfg).write(&path).unwrap();
        // Reload: radio-a removed, radio-c added, radio-b's polarity changed.
        let reloaded = TWO_RADIOS_AND_A_DESK
            .replace("[port.radio-a]", "[port.radio-c]")
            .replace("cdev:gpiochip0:17", "rppal:27")
            .replace("line = \"sim:b-ptt\", active_low = true", "line = \"sim:b-ptt\"");
        PttState::of(&config(&reloaded), cfg).write(&path).unwrap();
        let lines: Vec<_> = PttState::read(&path)
            .unwrap()
            .unwrap()
            .line_configs()
            .into_iter()
            .map(|(p, l)| (p, l.line, l.active_low))
            .collect();
        assert_eq!(
            lines,
            [("radio-b".into(), "sim:b-ptt".into(), false), ("radio-c".into(), "rppal:27".into(), false)]
        );
    }

    #[test]
    fn missing_file_is_none_and_a_bad_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ptt-lines-x.json");
        assert_eq!(PttState::read(&path), Ok(None));
        std::fs::write(&path, "{\"version\":1,\"config\":").unwrap();
        assert!(PttState::read(&path).is_err());
        let future = serde_json::json!({"version": 2, "config": "/x", "pid": 1, "lines": []});
        std::fs::write(&path, future.to_string()).unwrap();
        assert!(PttState::read(&path).unwrap_err().contains("version 2"));
    }

    #[test]
    fn the_file_name_depends_on_the_config_path_only() {
        let a = path_for(Path::new("/etc/roipd/roipd.toml"));
        assert_eq!(a, path_for(Path::new("/etc/roipd/roipd.toml")));
        assert_ne!(a, path_for(Path::new("/etc/roipd/other.toml")));
        assert!(a.file_name().unwrap().to_string_lossy().starts_with("ptt-lines-"));
    }

    #[test]
    fn every_name_of_the_same_config_file_finds_the_same_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("etc").join("roipd.toml");
        std::fs::create_dir_all(real.parent().unwrap()).unwrap();
        std::fs::write(&real, "").unwrap();
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let dotted = dir.path().join("etc").join(".").join("..").join("etc").join("roipd.toml");
        let state = path_for(&real);
        assert_eq!(path_for(&link), state);
        assert_eq!(path_for(&dotted), state);
        assert_ne!(path_for(&dir.path().join("other.toml")), state);
    }
}
