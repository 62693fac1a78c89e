//! GPIO lines for radios and desks: COR/COS and buttons in, PTT and LEDs out.
//!
//! Every backend implements embedded-hal 1.x [`OutputPin`]/[`InputPin`] in *physical* levels and
//! reports input edges with the [`Instant`] they were seen. Active-low inversion happens in one
//! place only, [`LogicalOutput`] and [`LogicalInput`], so the rest of the daemon thinks in
//! "asserted" (COR open, PTT keyed, button pressed, LED lit).
//!
//! Backends are chosen per line by the prefix of its name (`sim:`, `rppal:`, `cdev:`, `cm108:`,
//! `serial:`); see [`LineSpec`].

#[cfg(target_os = "linux")]
pub mod cdev;
#[cfg(target_os = "linux")]
pub mod cm108;
#[cfg(target_os = "linux")]
pub mod rpi;
#[cfg(target_os = "linux")]
pub mod serial;
pub mod sim;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use embedded_hal::digital::{ErrorKind, ErrorType, InputPin, OutputPin};

use crate::config::{Bias, GpioConfig, LineConfig};

/// A GPIO failure, with the line it concerns.
#[derive(Debug, thiserror::Error)]
pub enum GpioError {
    #[error("bad line name `{0}`: {1}")]
    BadName(String, String),
    #[error("line `{line}`: {message}")]
    Io { line: String, message: String },
    #[error("line `{0}` is an input on this backend and cannot be driven")]
    NotAnOutput(String),
}

impl GpioError {
    pub fn io(line: &str, err: impl fmt::Display) -> Self {
        GpioError::Io { line: line.to_string(), message: err.to_string() }
    }
}

impl embedded_hal::digital::Error for GpioError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

/// A parsed `backend:rest` line name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LineSpec {
    pub backend: Backend,
    /// Everything after the first `:`; its meaning is the backend's.
    pub address: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Sim,
    Rppal,
    Cdev,
    Cm108,
    Serial,
}

impl Backend {
    pub const ALL: [(&'static str, Backend); 5] = [
        ("sim", Backend::Sim),
        ("rppal", Backend::Rppal),
        ("cdev", Backend::Cdev),
        ("cm108", Backend::Cm108),
        ("serial", Backend::Serial),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, b)| *b == self).map(|(n, _)| *n).unwrap_or("?")
    }
}

impl LineSpec {
    pub fn parse(name: &str) -> Result<Self, GpioError> {
        let (backend, address) = name.split_once(':').ok_or_else(|| {
            GpioError::BadName(name.into(), "expected `backend:line`, e.g. `cdev:gpiochip0:17`".into())
        })?;
        let backend = Backend::ALL.iter().find(|(n, _)| *n == backend).map(|(_, b)| *b).ok_or_else(|| {
            GpioError::BadName(name.into(), format!("unknown backend `{backend}` (sim, rppal, cdev, cm108, serial)"))
        })?;
        if address.is_empty() {
            return Err(GpioError::BadName(name.into(), "empty line address".into()));
        }
        // The sim backend's rule here too, so config validation refuses what opening would.
        if backend == Backend::Sim {
            sim::check_name(address)?;
        }
        Ok(LineSpec { backend, address: address.to_string() })
    }
}

/// Called from a backend (possibly on its own thread) for every input edge:
/// the instant it was seen and the *physical* level after the edge (true = high).
pub type EdgeSink = Arc<dyn Fn(Instant, bool) + Send + Sync>;

/// Any backend's output pin, boxed so lines of different backends live side by side.
pub struct AnyOutput(pub Box<dyn OutputPin<Error = GpioError> + Send>);

impl ErrorType for AnyOutput {
    type Error = GpioError;
}

impl OutputPin for AnyOutput {
    fn set_low(&mut self) -> Result<(), GpioError> {
        self.0.set_low()
    }
    fn set_high(&mut self) -> Result<(), GpioError> {
        self.0.set_high()
    }
}

/// Any backend's input pin.
pub struct AnyInput(pub Box<dyn InputPin<Error = GpioError> + Send>);

impl ErrorType for AnyInput {
    type Error = GpioError;
}

impl InputPin for AnyInput {
    fn is_high(&mut self) -> Result<bool, GpioError> {
        self.0.is_high()
    }
    fn is_low(&mut self) -> Result<bool, GpioError> {
        self.0.is_low()
    }
}

/// An output in logical terms (asserted = keyed/lit). Cheap to clone: the safety registry
/// keeps a clone of every PTT so it can force it off from a panic hook or signal path.
#[derive(Clone)]
pub struct LogicalOutput {
    name: Arc<str>,
    active_low: bool,
    pin: Arc<Mutex<AnyOutput>>,
}

impl LogicalOutput {
    pub fn new(name: &str, active_low: bool, pin: AnyOutput) -> Self {
        Self { name: name.into(), active_low, pin: Arc::new(Mutex::new(pin)) }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drive the line to its asserted (true) or unasserted (false) level.
    pub fn set(&self, asserted: bool) -> Result<(), GpioError> {
        // A poisoned lock only means a panic elsewhere while holding it; the pin is still
        // usable, and releasing PTT matters more than the poison flag.
        let mut pin = self.pin.lock().unwrap_or_else(|p| p.into_inner());
        drive(&mut *pin, asserted != self.active_low)
    }

    /// Best effort from a panic hook: never blocks for long, never panics.
    pub fn force_off(&self) -> Result<(), GpioError> {
        for _ in 0..50 {
            match self.pin.try_lock() {
                Ok(mut pin) => return drive(&mut *pin, self.active_low),
                Err(std::sync::TryLockError::Poisoned(p)) => return drive(&mut *p.into_inner(), self.active_low),
                Err(std::sync::TryLockError::WouldBlock) => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
        Err(GpioError::io(&self.name, "line busy, could not force off"))
    }
}

fn drive<P: OutputPin>(pin: &mut P, high: bool) -> Result<(), P::Error> {
    if high {
        pin.set_high()
    } else {
        pin.set_low()
    }
}

/// An input in logical terms (asserted = COR open / button pressed).
pub struct LogicalInput {
    name: Arc<str>,
    active_low: bool,
    pin: AnyInput,
}

impl LogicalInput {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_asserted(&mut self) -> Result<bool, GpioError> {
        Ok(self.pin.is_high()? != self.active_low)
    }
}

/// Turns a logical edge callback (asserted or not) into the physical one backends call.
pub fn logical_sink(active_low: bool, on_edge: impl Fn(Instant, bool) + Send + Sync + 'static) -> EdgeSink {
    Arc::new(move |at, high| on_edge(at, high != active_low))
}

/// Opens lines on whichever backend their names select.
pub struct Gpio {
    pub sim: sim::SimBank,
    #[cfg(target_os = "linux")]
    cm108: cm108::Cm108Devices,
    #[cfg(target_os = "linux")]
    serial: serial::SerialPorts,
}

impl Gpio {
    pub fn new(config: &GpioConfig) -> Self {
        Self {
            sim: sim::SimBank::new(config.sim.dir.as_deref().map(std::path::Path::new)),
            #[cfg(target_os = "linux")]
            cm108: Default::default(),
            #[cfg(target_os = "linux")]
            serial: Default::default(),
        }
    }

    /// Open an output and drive it unasserted before returning: a freshly opened PTT is
    /// never keyed, whatever level the line had.
    pub fn open_output(&mut self, line: &LineConfig) -> Result<LogicalOutput, GpioError> {
        let spec = LineSpec::parse(&line.line)?;
        let inactive_high = line.active_low;
        let pin = match spec.backend {
            Backend::Sim => self.sim.output(&spec.address, inactive_high)?,
            #[cfg(target_os = "linux")]
            Backend::Cdev => cdev::open_output(&spec.address, inactive_high, line.bias)?,
            #[cfg(target_os = "linux")]
            Backend::Rppal => rpi::open_output(&spec.address, inactive_high, line.bias)?,
            #[cfg(target_os = "linux")]
            Backend::Cm108 => self.cm108.output(&spec.address, inactive_high)?,
            #[cfg(target_os = "linux")]
            Backend::Serial => self.serial.output(&spec.address, inactive_high)?,
            #[cfg(not(target_os = "linux"))]
            _ => return Err(GpioError::BadName(line.line.clone(), "backend needs Linux".into())),
        };
        let out = LogicalOutput::new(&line.line, line.active_low, pin);
        out.set(false)?;
        Ok(out)
    }

    /// Open an input; `on_edge` is called with (instant, asserted) for every change.
    pub fn open_input(
        &mut self,
        line: &LineConfig,
        on_edge: impl Fn(Instant, bool) + Send + Sync + 'static,
    ) -> Result<LogicalInput, GpioError> {
        let spec = LineSpec::parse(&line.line)?;
        let sink = logical_sink(line.active_low, on_edge);
        let pin = match spec.backend {
            Backend::Sim => self.sim.input(&spec.address, line.active_low, sink)?,
            #[cfg(target_os = "linux")]
            Backend::Cdev => cdev::open_input(&spec.address, line.bias, sink)?,
            #[cfg(target_os = "linux")]
            Backend::Rppal => rpi::open_input(&spec.address, line.bias, sink)?,
            #[cfg(target_os = "linux")]
            Backend::Cm108 => self.cm108.input(&spec.address, sink)?,
            #[cfg(target_os = "linux")]
            Backend::Serial => self.serial.input(&spec.address, sink)?,
            #[cfg(not(target_os = "linux"))]
            _ => return Err(GpioError::BadName(line.line.clone(), "backend needs Linux".into())),
        };
        Ok(LogicalInput { name: line.line.as_str().into(), active_low: line.active_low, pin })
    }
}

/// Bias is advisory on backends that cannot set it (CM108, serial); they ignore it.
pub fn bias_name(bias: Bias) -> &'static str {
    match bias {
        Bias::AsIs => "as-is",
        Bias::Disabled => "disabled",
        Bias::PullUp => "pull-up",
        Bias::PullDown => "pull-down",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_spec_parses_backend_and_address() {
        let s = LineSpec::parse("cdev:gpiochip0:17").unwrap();
        assert_eq!(s.backend, Backend::Cdev);
        assert_eq!(s.address, "gpiochip0:17");
        assert!(LineSpec::parse("gpio17").is_err());
        assert!(LineSpec::parse("bogus:1").is_err());
        assert!(LineSpec::parse("sim:").is_err());
    }

    #[test]
    fn active_low_output_inverts_in_one_place() {
        let mut gpio = Gpio::new(&GpioConfig::default());
        let cfg = LineConfig { line: "sim:ptt".into(), active_low: true, bias: Bias::AsIs };
        let out = gpio.open_output(&cfg).unwrap();
        // Opened unkeyed: an active-low PTT rests high.
        assert_eq!(gpio.sim.output_level("ptt"), Some(true));
        out.set(true).unwrap();
        assert_eq!(gpio.sim.output_level("ptt"), Some(false));
        out.force_off().unwrap();
        assert_eq!(gpio.sim.output_level("ptt"), Some(true));
    }

    #[test]
    fn active_low_input_reports_asserted_when_low() {
        let mut gpio = Gpio::new(&GpioConfig::default());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let cfg = LineConfig { line: "sim:cor".into(), active_low: true, bias: Bias::PullUp };
        let mut input = gpio.open_input(&cfg, move |_, asserted| seen2.lock().unwrap().push(asserted)).unwrap();
        let t = Instant::now();
        gpio.sim.drive_input("cor", false, t);
        gpio.sim.drive_input("cor", true, t);
        assert_eq!(*seen.lock().unwrap(), vec![true, false]);
        assert!(!input.is_asserted().unwrap());
    }
}
