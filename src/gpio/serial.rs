//! Serial-port control lines: `serial:/dev/ttyUSB0:rts` or `:dtr` as outputs (PTT), and
//! `:cts`, `:dsr`, `:dcd`, `:ri` as inputs (COS), polled every 5 ms. A `/dev/serial/by-id/…`
//! path works too and shares the port with the name it points to.
//!
//! "High" means the modem-control bit is set (RTS/DTR asserted, TIOCM bit 1). Note that on a
//! TTL-level adapter an asserted RTS# is electrically *low*; configure `active_low` for what
//! the radio sees, not for the bit.
//!
//! ## Safety: DTR and RTS at open
//! Linux raises DTR and RTS whenever a tty is opened. Right after `open()` (before anything
//! else) the port drives the configured output to its inactive level and turns the other
//! control line off, unless that line is configured too; a line configured later on the same
//! port is set to its own inactive level when it is opened. There is still a window of a few
//! microseconds between `open()` and that first ioctl in which both lines are asserted; a radio
//! will not key in that time, but a logic analyser will see it. The port is opened exclusive
//! (TIOCEXCL) so that e.g. ModemManager cannot open it and toggle the lines behind our back.
//!
//! On close the kernel drops DTR and RTS (HUPCL), which unkeys an active-high PTT even if the
//! daemon is killed. For an output that rests *high* (active-low PTT) that drop would key the
//! radio, so HUPCL is turned off on such a port and the line keeps its last level on close.
//!
//! A pseudo-terminal has no modem-control lines (TIOCMGET fails with ENOTTY); opening one is
//! an error, so the adapter logic is unit-tested against a stand-in for the ioctls.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread;
use std::time::{Duration, Instant};

use embedded_hal::digital::{ErrorType, InputPin, OutputPin};
use libc::c_int;

use super::{AnyInput, AnyOutput, EdgeSink, GpioError};

const POLL_EVERY: Duration = Duration::from_millis(5);

/// A modem-control line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    Rts,
    Dtr,
    Cts,
    Dsr,
    Dcd,
    Ri,
}

/// The two lines a host can drive.
const OUTPUT_BITS: c_int = libc::TIOCM_RTS | libc::TIOCM_DTR;

impl Line {
    pub fn parse(name: &str) -> Option<Line> {
        Some(match name {
            "rts" => Line::Rts,
            "dtr" => Line::Dtr,
            "cts" => Line::Cts,
            "dsr" => Line::Dsr,
            "dcd" | "cd" => Line::Dcd,
            "ri" => Line::Ri,
            _ => return None,
        })
    }

    /// Its TIOCM_* bit.
    pub fn bit(self) -> c_int {
        match self {
            Line::Rts => libc::TIOCM_RTS,
            Line::Dtr => libc::TIOCM_DTR,
            Line::Cts => libc::TIOCM_CTS,
            Line::Dsr => libc::TIOCM_DSR,
            Line::Dcd => libc::TIOCM_CAR,
            Line::Ri => libc::TIOCM_RNG,
        }
    }

    pub fn is_output(self) -> bool {
        self.bit() & OUTPUT_BITS != 0
    }
}

/// What to do right after `open()` (which raised DTR and RTS): `(lower, raise)` bit sets that
/// leave the first configured output at its inactive level and every other output line off.
fn after_open(first_output: Option<(Line, bool)>) -> (c_int, c_int) {
    match first_output {
        Some((line, true)) => (OUTPUT_BITS & !line.bit(), line.bit()),
        _ => (OUTPUT_BITS, 0),
    }
}

fn split_address(address: &str) -> Result<(&Path, Line), GpioError> {
    match address.rsplit_once(':') {
        Some((path, line)) if path.starts_with('/') => match Line::parse(line) {
            Some(line) => Ok((Path::new(path), line)),
            None => Err(GpioError::BadName(
                format!("serial:{address}"),
                format!("unknown control line `{line}` (rts, dtr, cts, dsr, dcd, ri)"),
            )),
        },
        _ => Err(GpioError::BadName(
            format!("serial:{address}"),
            "expected `/dev/ttyXXX:line`, e.g. `/dev/ttyUSB0:rts`".into(),
        )),
    }
}

/// The modem-control operations the port needs; a tty does them with ioctls.
trait ModemControl: Send + Sync {
    /// Current TIOCM_* bits (TIOCMGET).
    fn get(&self) -> io::Result<c_int>;
    /// Assert these bits (TIOCMBIS).
    fn raise(&self, bits: c_int) -> io::Result<()>;
    /// Deassert these bits (TIOCMBIC).
    fn lower(&self, bits: c_int) -> io::Result<()>;
    /// Turn off HUPCL so closing the port leaves DTR/RTS as they are.
    fn keep_lines_on_close(&self) -> io::Result<()>;
}

struct Tty(OwnedFd);

impl Tty {
    fn open(path: &Path) -> io::Result<Tty> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)?;
        Ok(Tty(file.into()))
    }

    fn ioctl_bits(&self, request: libc::c_ulong, bits: c_int) -> io::Result<()> {
        // SAFETY: TIOCMBIS/TIOCMBIC read one c_int through the pointer.
        if unsafe { libc::ioctl(self.0.as_raw_fd(), request as _, &bits as *const c_int) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn exclusive(&self) -> io::Result<()> {
        // SAFETY: TIOCEXCL takes no argument.
        if unsafe { libc::ioctl(self.0.as_raw_fd(), libc::TIOCEXCL as _) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl ModemControl for Tty {
    fn get(&self) -> io::Result<c_int> {
        let mut bits: c_int = 0;
        // SAFETY: TIOCMGET writes one c_int.
        if unsafe { libc::ioctl(self.0.as_raw_fd(), libc::TIOCMGET as _, &mut bits as *mut c_int) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(bits)
    }
    fn raise(&self, bits: c_int) -> io::Result<()> {
        self.ioctl_bits(libc::TIOCMBIS as _, bits)
    }
    fn lower(&self, bits: c_int) -> io::Result<()> {
        self.ioctl_bits(libc::TIOCMBIC as _, bits)
    }
    fn keep_lines_on_close(&self) -> io::Result<()> {
        // SAFETY: termios is plain data, filled by tcgetattr before use.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(self.0.as_raw_fd(), &mut t) < 0 {
                return Err(io::Error::last_os_error());
            }
            t.c_cflag &= !libc::HUPCL;
            if libc::tcsetattr(self.0.as_raw_fd(), libc::TCSANOW, &t) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// One open tty shared by all its configured lines.
struct Port {
    path: PathBuf,
    lines: Box<dyn ModemControl>,
    state: Mutex<PortState>,
}

#[derive(Default)]
struct PortState {
    /// Output lines owned by an open pin.
    claimed: c_int,
    /// Last polled modem bits, for edge detection.
    last: c_int,
    sinks: Vec<(u64, Line, EdgeSink)>,
    next_id: u64,
    poller_started: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Port {
    /// Takes a just-opened tty and immediately applies [`after_open`].
    fn new(path: &Path, lines: Box<dyn ModemControl>, first_output: Option<(Line, bool)>) -> io::Result<Arc<Port>> {
        let (lower, raise) = after_open(first_output);
        let no_lines = |e: io::Error| match e.raw_os_error() {
            Some(libc::ENOTTY) | Some(libc::EINVAL) => io::Error::new(
                e.kind(),
                format!("{} has no modem control lines (a pseudo-terminal or not a serial port?): {e}", path.display()),
            ),
            _ => e,
        };
        lines.lower(lower).map_err(no_lines)?;
        if raise != 0 {
            lines.raise(raise)?;
        }
        let last = lines.get()?;
        let state = Mutex::new(PortState { last, ..Default::default() });
        Ok(Arc::new(Port { path: path.to_path_buf(), lines, state }))
    }

    fn drive(&self, line: Line, high: bool) -> io::Result<()> {
        if high {
            self.lines.raise(line.bit())
        } else {
            self.lines.lower(line.bit())
        }
    }

    fn update_inputs(&self, bits: c_int, at: Instant) {
        let fire: Vec<(EdgeSink, bool)> = {
            let mut st = lock(&self.state);
            let prev = std::mem::replace(&mut st.last, bits);
            st.sinks
                .iter()
                .filter(|(_, line, _)| (prev ^ bits) & line.bit() != 0)
                .map(|(_, line, sink)| (Arc::clone(sink), bits & line.bit() != 0))
                .collect()
        };
        for (sink, high) in fire {
            sink(at, high);
        }
    }

    fn start_poller(self: &Arc<Self>) -> io::Result<()> {
        let weak = Arc::downgrade(self);
        thread::Builder::new().name("gpio-serial".into()).spawn(move || poll_loop(weak))?;
        Ok(())
    }
}

/// Polls the modem status until every pin of the port is dropped.
fn poll_loop(port: Weak<Port>) {
    let mut failing = false;
    while let Some(port) = port.upgrade() {
        match port.lines.get() {
            Ok(bits) => {
                failing = false;
                port.update_inputs(bits, Instant::now());
                drop(port);
                thread::sleep(POLL_EVERY);
            }
            Err(e) => {
                // Typically the adapter was unplugged: say so once, then retry slowly.
                if !failing {
                    tracing::error!(port = %port.path.display(), "reading modem status failed: {e}");
                }
                failing = true;
                drop(port);
                thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// The serial ports opened so far, one [`Port`] per resolved tty path.
#[derive(Default)]
pub struct SerialPorts {
    open: HashMap<PathBuf, Weak<Port>>,
}

impl SerialPorts {
    fn port(&mut self, path: &Path, name: &str, first_output: Option<(Line, bool)>) -> Result<Arc<Port>, GpioError> {
        let key =
            fs::canonicalize(path).map_err(|e| GpioError::io(name, format!("cannot open {}: {e}", path.display())))?;
        if let Some(port) = self.open.get(&key).and_then(Weak::upgrade) {
            return Ok(port);
        }
        let tty = Tty::open(&key).map_err(|e| GpioError::io(name, format!("cannot open {}: {e}", key.display())))?;
        let exclusive = tty.exclusive();
        let port = Port::new(&key, Box::new(tty), first_output).map_err(|e| GpioError::io(name, e))?;
        if let Err(e) = exclusive {
            tracing::warn!(port = %key.display(), "cannot open exclusively (TIOCEXCL): {e}");
        }
        self.open.retain(|_, p| p.strong_count() > 0);
        self.open.insert(key, Arc::downgrade(&port));
        Ok(port)
    }

    pub fn output(&mut self, address: &str, inactive_high: bool) -> Result<AnyOutput, GpioError> {
        let name = format!("serial:{address}");
        let (path, line) = split_address(address)?;
        if !line.is_output() {
            return Err(GpioError::NotAnOutput(name));
        }
        let port = self.port(path, &name, Some((line, inactive_high)))?;
        {
            let mut st = lock(&port.state);
            if st.claimed & line.bit() != 0 {
                return Err(GpioError::io(&name, "line already used by another output"));
            }
            // On a port that was already open this is the line's first drive to inactive.
            port.drive(line, inactive_high).map_err(|e| GpioError::io(&name, e))?;
            if inactive_high {
                port.lines.keep_lines_on_close().map_err(|e| {
                    GpioError::io(&name, format!("cannot turn off HUPCL, closing would key this line: {e}"))
                })?;
            }
            st.claimed |= line.bit();
        }
        Ok(AnyOutput(Box::new(SerialOutput { port, line, inactive_high, name })))
    }

    pub fn input(&mut self, address: &str, sink: EdgeSink) -> Result<AnyInput, GpioError> {
        let name = format!("serial:{address}");
        let (path, line) = split_address(address)?;
        if line.is_output() {
            return Err(GpioError::BadName(name, "rts and dtr are outputs; inputs are cts, dsr, dcd, ri".into()));
        }
        let port = self.port(path, &name, None)?;
        let id = {
            let mut st = lock(&port.state);
            if !st.poller_started {
                port.start_poller().map_err(|e| GpioError::io(&name, format!("cannot start poller: {e}")))?;
                st.poller_started = true;
            }
            st.next_id += 1;
            let id = st.next_id;
            st.sinks.push((id, line, sink));
            id
        };
        Ok(AnyInput(Box::new(SerialInput { port, line, id, name })))
    }
}

struct SerialOutput {
    port: Arc<Port>,
    line: Line,
    inactive_high: bool,
    name: String,
}

impl Drop for SerialOutput {
    fn drop(&mut self) {
        let _ = self.port.drive(self.line, self.inactive_high);
        lock(&self.port.state).claimed &= !self.line.bit();
    }
}

impl ErrorType for SerialOutput {
    type Error = GpioError;
}

impl OutputPin for SerialOutput {
    fn set_low(&mut self) -> Result<(), GpioError> {
        self.port.drive(self.line, false).map_err(|e| GpioError::io(&self.name, e))
    }
    fn set_high(&mut self) -> Result<(), GpioError> {
        self.port.drive(self.line, true).map_err(|e| GpioError::io(&self.name, e))
    }
}

struct SerialInput {
    port: Arc<Port>,
    line: Line,
    id: u64,
    name: String,
}

impl Drop for SerialInput {
    fn drop(&mut self) {
        lock(&self.port.state).sinks.retain(|(id, _, _)| *id != self.id);
    }
}

impl ErrorType for SerialInput {
    type Error = GpioError;
}

impl InputPin for SerialInput {
    fn is_high(&mut self) -> Result<bool, GpioError> {
        let bits = self.port.lines.get().map_err(|e| GpioError::io(&self.name, e))?;
        Ok(bits & self.line.bit() != 0)
    }
    fn is_low(&mut self) -> Result<bool, GpioError> {
        self.is_high().map(|h| !h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_name_a_tty_and_a_line() {
        assert_eq!(split_address("/dev/ttyUSB0:rts").unwrap(), (Path::new("/dev/ttyUSB0"), Line::Rts));
        assert_eq!(split_address("/dev/serial/by-id/usb-FTDI_x-if00-port0:dcd").unwrap().1, Line::Dcd);
        assert!(split_address("ttyUSB0:rts").is_err());
        assert!(split_address("/dev/ttyUSB0:ptt").is_err());
        assert!(split_address("/dev/ttyUSB0").is_err());
        assert!(Line::Dtr.is_output() && !Line::Cts.is_output());
        assert_eq!(Line::Ri.bit(), libc::TIOCM_RNG);
    }

    #[test]
    fn after_open_everything_but_a_high_resting_output_goes_off() {
        let (rts, dtr) = (libc::TIOCM_RTS, libc::TIOCM_DTR);
        assert_eq!(after_open(None), (rts | dtr, 0));
        assert_eq!(after_open(Some((Line::Rts, false))), (rts | dtr, 0));
        // An active-low PTT on DTR is never lowered (that would key it): only RTS goes off.
        assert_eq!(after_open(Some((Line::Dtr, true))), (rts, dtr));
    }

    /// A pty is the only tty here, and it has no modem-control lines: opening must say so.
    #[test]
    fn a_pseudo_terminal_is_refused_with_a_clear_error() {
        let (mut master, mut slave) = (0, 0);
        let mut name = [0 as libc::c_char; 64];
        // SAFETY: openpty fills the two fds and the NUL-terminated name buffer.
        let rc =
            unsafe { libc::openpty(&mut master, &mut slave, name.as_mut_ptr(), std::ptr::null(), std::ptr::null()) };
        assert_eq!(rc, 0);
        // SAFETY: `name` is NUL-terminated by openpty.
        let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }.to_str().unwrap().to_string();
        let err = SerialPorts::default().output(&format!("{path}:rts"), false).err().expect("pty").to_string();
        assert!(err.contains(&format!("serial:{path}:rts")) && err.contains("no modem control lines"), "{err}");
        // SAFETY: both fds came from openpty and are closed once.
        unsafe {
            libc::close(master);
            libc::close(slave);
        }
    }

    #[test]
    fn missing_port_and_wrong_direction_are_clear_errors() {
        let mut ports = SerialPorts::default();
        let err = ports.output("/dev/ttyUSB-roipd-none:rts", false).err().expect("missing").to_string();
        assert!(err.contains("serial:/dev/ttyUSB-roipd-none:rts") && err.contains("cannot open"), "{err}");
        assert!(matches!(ports.output("/dev/null:cts", false), Err(GpioError::NotAnOutput(_))));
        assert!(matches!(ports.input("/dev/null:rts", Arc::new(|_, _| {})), Err(GpioError::BadName(..))));
    }

    /// Stand-in for a tty's modem-control ioctls; starts as the kernel leaves a port after
    /// open(): DTR and RTS raised. It proves the adapter logic, not any hardware.
    #[derive(Clone)]
    struct FakeLines(Arc<Mutex<(c_int, Vec<String>, bool)>>);

    impl FakeLines {
        fn new() -> Self {
            FakeLines(Arc::new(Mutex::new((OUTPUT_BITS, vec![], true))))
        }
        fn bits(&self) -> c_int {
            self.0.lock().unwrap().0
        }
        fn set_input(&self, bit: c_int, on: bool) {
            let mut s = self.0.lock().unwrap();
            s.0 = if on { s.0 | bit } else { s.0 & !bit };
        }
        fn ops(&self) -> Vec<String> {
            std::mem::take(&mut self.0.lock().unwrap().1)
        }
    }

    impl ModemControl for FakeLines {
        fn get(&self) -> io::Result<c_int> {
            Ok(self.bits())
        }
        fn raise(&self, bits: c_int) -> io::Result<()> {
            let mut s = self.0.lock().unwrap();
            s.0 |= bits;
            s.1.push(format!("raise {bits:#x}"));
            Ok(())
        }
        fn lower(&self, bits: c_int) -> io::Result<()> {
            let mut s = self.0.lock().unwrap();
            s.0 &= !bits;
            s.1.push(format!("lower {bits:#x}"));
            Ok(())
        }
        fn keep_lines_on_close(&self) -> io::Result<()> {
            self.0.lock().unwrap().2 = false;
            Ok(())
        }
    }

    fn fake_port(
        ports: &mut SerialPorts,
        dir: &Path,
        lines: &FakeLines,
        first: Option<(Line, bool)>,
    ) -> (String, Arc<Port>) {
        let path = dir.join("ttyFAKE");
        fs::write(&path, "").unwrap();
        let key = fs::canonicalize(&path).unwrap();
        let port = Port::new(&key, Box::new(lines.clone()), first).unwrap();
        ports.open.insert(key, Arc::downgrade(&port));
        (path.display().to_string(), port)
    }

    #[test]
    fn lines_of_one_port_are_driven_independently_and_released_on_drop() {
        let (rts, dtr) = (libc::TIOCM_RTS, libc::TIOCM_DTR);
        let dir = tempfile::tempdir().unwrap();
        let mut ports = SerialPorts::default();
        let lines = FakeLines::new();
        // The port opened for an RTS PTT: both lines dropped in one ioctl right after open.
        let (p, _port) = fake_port(&mut ports, dir.path(), &lines, Some((Line::Rts, false)));
        assert_eq!(lines.ops(), [format!("lower {:#x}", rts | dtr)]);

        let mut ptt = ports.output(&format!("{p}:rts"), false).unwrap();
        assert_eq!(lines.bits() & OUTPUT_BITS, 0);
        ptt.set_high().unwrap();
        assert_eq!(lines.bits() & OUTPUT_BITS, rts);
        // An active-low line on DTR, configured later: raised to rest high, RTS untouched,
        // and HUPCL turned off so closing the port cannot key it.
        let _aux = ports.output(&format!("{p}:dtr"), true).unwrap();
        assert_eq!(lines.bits() & OUTPUT_BITS, rts | dtr);
        assert!(!lines.0.lock().unwrap().2);
        assert!(ports.output(&format!("{p}:rts"), false).is_err(), "RTS is taken");

        drop(ptt);
        assert_eq!(lines.bits() & OUTPUT_BITS, dtr, "dropping a keyed PTT unkeys it");
    }

    #[test]
    fn polled_inputs_report_edges_of_their_own_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut ports = SerialPorts::default();
        let lines = FakeLines::new();
        let (p, _port) = fake_port(&mut ports, dir.path(), &lines, None);
        assert_eq!(lines.bits() & OUTPUT_BITS, 0, "an input-only port drops DTR and RTS");

        let (tx, rx) = std::sync::mpsc::channel();
        let mut cos = ports.input(&format!("{p}:dcd"), Arc::new(move |_, high| tx.send(high).unwrap())).unwrap();
        lines.set_input(libc::TIOCM_CTS, true); // another line: no edge
        lines.set_input(libc::TIOCM_CAR, true);
        assert!(rx.recv_timeout(Duration::from_secs(2)).unwrap());
        assert!(cos.is_high().unwrap());
        lines.set_input(libc::TIOCM_CAR, false);
        assert!(!rx.recv_timeout(Duration::from_secs(2)).unwrap());
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    }
}
