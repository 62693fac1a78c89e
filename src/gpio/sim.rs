//! Simulated GPIO lines for tests and the demo.
//!
//! A [`SimBank`] holds named lines in memory. Tests in the same process drive inputs with
//! [`SimBank::drive_input`] and read outputs with [`SimBank::output_level`]. With a directory
//! configured, the bank also mirrors every line to a file so that a test or a person outside
//! the process can take part: `<dir>/<name>` holds `0` or `1` (outputs are written by the bank,
//! inputs are written by you and picked up by [`SimBank::poll_dir`]), and each output change is
//! appended to `<dir>/<name>.log`. Writing `panic` or `hang` to `<dir>/fault` makes
//! [`SimBank::fault`] report it, so tests can crash or wedge a driver task on purpose.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use embedded_hal::digital::{ErrorType, InputPin, OutputPin};

use super::{AnyInput, AnyOutput, EdgeSink, GpioError};

/// Faults a test can inject into the simulated line driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimFault {
    /// The driver task panics.
    Panic,
    /// The driver task blocks forever (a wedged loop).
    Hang,
}

#[derive(Clone, Default)]
pub struct SimBank {
    inner: Arc<Mutex<Inner>>,
    dir: Option<Arc<PathBuf>>,
}

#[derive(Default)]
struct Inner {
    outputs: HashMap<String, OutputState>,
    inputs: HashMap<String, InputState>,
}

struct OutputState {
    level: bool,
    history: Vec<bool>,
}

struct InputState {
    level: bool,
    sinks: Vec<EdgeSink>,
}

pub(crate) fn check_name(name: &str) -> Result<(), GpioError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(GpioError::BadName(format!("sim:{name}"), "sim line names use [A-Za-z0-9_.-]".into()))
    }
}

impl SimBank {
    pub fn new(dir: Option<&Path>) -> Self {
        Self { inner: Default::default(), dir: dir.map(|d| Arc::new(d.to_path_buf())) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mirror(&self, name: &str, level: bool, log: bool) {
        let Some(dir) = &self.dir else { return };
        // Write-then-rename so a reader never sees a half-written file.
        let tmp = dir.join(format!(".{name}.tmp"));
        let value = if level { "1\n" } else { "0\n" };
        if fs::write(&tmp, value).and_then(|_| fs::rename(&tmp, dir.join(name))).is_err() {
            return;
        }
        if log {
            if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{name}.log"))) {
                let _ = f.write_all(value.as_bytes());
            }
        }
    }

    /// Create (or reopen) an output line at the given physical level.
    pub fn output(&self, name: &str, initial_high: bool) -> Result<AnyOutput, GpioError> {
        check_name(name)?;
        if let Some(dir) = &self.dir {
            fs::create_dir_all(dir.as_path()).map_err(|e| GpioError::io(name, e))?;
        }
        {
            let mut inner = self.lock();
            let st =
                inner.outputs.entry(name.to_string()).or_insert(OutputState { level: initial_high, history: vec![] });
            st.level = initial_high;
            st.history.push(initial_high);
        }
        self.mirror(name, initial_high, true);
        Ok(AnyOutput(Box::new(SimOutput { bank: self.clone(), name: name.to_string() })))
    }

    /// Create (or join) an input line resting at the given physical level.
    pub fn input(&self, name: &str, initial_high: bool, sink: EdgeSink) -> Result<AnyInput, GpioError> {
        check_name(name)?;
        if let Some(dir) = &self.dir {
            fs::create_dir_all(dir.as_path()).map_err(|e| GpioError::io(name, e))?;
        }
        let fresh = {
            let mut inner = self.lock();
            let fresh = !inner.inputs.contains_key(name);
            let st = inner.inputs.entry(name.to_string()).or_insert(InputState { level: initial_high, sinks: vec![] });
            st.sinks.push(sink);
            fresh
        };
        if fresh {
            self.mirror(name, initial_high, false);
        }
        Ok(AnyInput(Box::new(SimInput { bank: self.clone(), name: name.to_string() })))
    }

    /// Set an input's physical level; edge sinks are called when it changes. With a mirror
    /// directory the input's file follows, so [`SimBank::poll_dir`] agrees with the level.
    pub fn drive_input(&self, name: &str, high: bool, at: Instant) {
        self.set_input(name, high, at, true);
    }

    /// `mirror`: write the level to the input's file (not when it was just read from there,
    /// which could overwrite a newer value written by someone else).
    fn set_input(&self, name: &str, high: bool, at: Instant, mirror: bool) {
        let sinks = {
            let mut inner = self.lock();
            let Some(st) = inner.inputs.get_mut(name) else { return };
            if st.level == high {
                return;
            }
            st.level = high;
            st.sinks.clone()
        };
        if mirror {
            self.mirror(name, high, false);
        }
        for sink in sinks {
            sink(at, high);
        }
    }

    /// Physical level of an output, if it exists.
    pub fn output_level(&self, name: &str) -> Option<bool> {
        self.lock().outputs.get(name).map(|o| o.level)
    }

    /// Every physical level the output has been set to, in order (repeats included).
    pub fn output_history(&self, name: &str) -> Vec<bool> {
        self.lock().outputs.get(name).map(|o| o.history.clone()).unwrap_or_default()
    }

    /// Pick up input levels written to the mirror directory; call it every few milliseconds.
    pub fn poll_dir(&self, now: Instant) {
        let Some(dir) = &self.dir else { return };
        let names: Vec<String> = self.lock().inputs.keys().cloned().collect();
        for name in names {
            if let Ok(text) = fs::read_to_string(dir.join(&name)) {
                match text.trim() {
                    "1" => self.set_input(&name, true, now, false),
                    "0" => self.set_input(&name, false, now, false),
                    _ => {}
                }
            }
        }
    }

    /// A fault written to `<dir>/fault` (test fault injection).
    pub fn fault(&self) -> Option<SimFault> {
        let dir = self.dir.as_ref()?;
        match fs::read_to_string(dir.join("fault")).ok()?.trim() {
            "panic" => Some(SimFault::Panic),
            "hang" => Some(SimFault::Hang),
            _ => None,
        }
    }

    pub fn has_dir(&self) -> bool {
        self.dir.is_some()
    }

    /// Watch the mirror directory for written files (see [`DirWatch`]).
    pub fn watch_dir(&self) -> std::io::Result<DirWatch> {
        let dir = self.dir.as_ref().ok_or_else(|| std::io::Error::other("no mirror directory"))?;
        fs::create_dir_all(dir.as_path())?;
        DirWatch::new(dir)
    }
}

/// inotify on the mirror directory: readable when a file there was written (closed after
/// writing, or renamed in). Lets the driver sleep until someone drives a line instead of
/// re-reading every file every few milliseconds (~500 wakeups a second for nothing).
pub struct DirWatch {
    fd: std::os::fd::OwnedFd,
}

impl DirWatch {
    fn new(dir: &Path) -> std::io::Result<DirWatch> {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: plain syscall; a non-negative result is a new fd that we own.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd nobody else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
        // SAFETY: valid fd and NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(raw, path.as_ptr(), libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO) };
        if wd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(DirWatch { fd })
    }

    /// Read and discard pending events: whether there were any.
    pub fn drain(&self) -> std::io::Result<bool> {
        use std::os::fd::AsRawFd;
        let mut buf = [0u8; 4096];
        let mut any = false;
        loop {
            // SAFETY: valid fd, buffer of the given length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                any = true;
                continue;
            }
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                std::io::ErrorKind::Interrupted if n < 0 => continue,
                std::io::ErrorKind::WouldBlock => Ok(any),
                _ if n == 0 => Ok(any),
                _ => Err(e),
            };
        }
    }
}

impl std::os::fd::AsRawFd for DirWatch {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

struct SimOutput {
    bank: SimBank,
    name: String,
}

impl SimOutput {
    fn set(&mut self, high: bool) {
        {
            let mut inner = self.bank.lock();
            if let Some(st) = inner.outputs.get_mut(&self.name) {
                st.level = high;
                st.history.push(high);
            }
        }
        self.bank.mirror(&self.name, high, true);
    }
}

impl ErrorType for SimOutput {
    type Error = GpioError;
}

impl OutputPin for SimOutput {
    fn set_low(&mut self) -> Result<(), GpioError> {
        self.set(false);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), GpioError> {
        self.set(true);
        Ok(())
    }
}

struct SimInput {
    bank: SimBank,
    name: String,
}

impl ErrorType for SimInput {
    type Error = GpioError;
}

impl InputPin for SimInput {
    fn is_high(&mut self) -> Result<bool, GpioError> {
        Ok(self.bank.lock().inputs.get(&self.name).map(|s| s.level).unwrap_or(false))
    }
    fn is_low(&mut self) -> Result<bool, GpioError> {
        self.is_high().map(|h| !h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The watch wakes for a written or renamed-in file and stays quiet otherwise.
    #[test]
    fn dir_watch_sees_writes_and_renames_only() {
        let dir = tempfile::tempdir().unwrap();
        let bank = SimBank::new(Some(dir.path()));
        let watch = bank.watch_dir().unwrap();
        assert!(!watch.drain().unwrap());
        fs::write(dir.path().join("cor"), "1\n").unwrap();
        assert!(watch.drain().unwrap());
        assert!(!watch.drain().unwrap());
        fs::write(dir.path().join(".tmp"), "0\n").unwrap();
        watch.drain().unwrap();
        fs::rename(dir.path().join(".tmp"), dir.path().join("cor")).unwrap();
        assert!(watch.drain().unwrap());
        let _ = fs::read_to_string(dir.path().join("cor")).unwrap();
        assert!(!watch.drain().unwrap(), "a read is no event");
        assert!(SimBank::new(None).watch_dir().is_err());
    }

    #[test]
    fn mirror_dir_carries_outputs_and_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let bank = SimBank::new(Some(dir.path()));
        let mut out = bank.output("ptt", false).unwrap();
        out.set_high().unwrap();
        out.set_low().unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("ptt")).unwrap(), "0\n");
        assert_eq!(fs::read_to_string(dir.path().join("ptt.log")).unwrap(), "0\n1\n0\n");

        let seen = Arc::new(Mutex::new(vec![]));
        let s2 = seen.clone();
        let _cor = bank.input("cor", false, Arc::new(move |_, h| s2.lock().unwrap().push(h))).unwrap();
        fs::write(dir.path().join("cor"), "1\n").unwrap();
        bank.poll_dir(Instant::now());
        bank.poll_dir(Instant::now());
        assert_eq!(*seen.lock().unwrap(), vec![true]);
        assert_eq!(bank.fault(), None);
        fs::write(dir.path().join("fault"), "panic").unwrap();
        assert_eq!(bank.fault(), Some(SimFault::Panic));
        fs::write(dir.path().join("fault"), "hang\n").unwrap();
        assert_eq!(bank.fault(), Some(SimFault::Hang));
    }

    #[test]
    fn bad_names_are_refused() {
        let bank = SimBank::new(None);
        assert!(bank.output("../etc/passwd", false).is_err());
        assert!(bank.output("", false).is_err());
    }
}
