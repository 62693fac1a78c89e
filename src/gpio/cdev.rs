//! Linux GPIO character device backend: `cdev:gpiochip0:17`, `cdev:/dev/gpiochip0:17` or
//! `cdev:gpiochip0:GPIO17` (a line name). Works on any board with a gpiochip (CM4, Pi 5, others).
//!
//! Outputs are requested with their inactive level as the initial value, so the kernel never
//! drives them to the other level, not even for an instant. Inputs are requested with edge
//! detection on both edges; a reader thread forwards each edge to the [`EdgeSink`]. Dropping a
//! pin releases its line request (an output is first driven to its inactive level).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};

use embedded_hal::digital::{ErrorType, InputPin, OutputPin};
use gpiocdev::line::{EdgeDetection, EdgeKind, Offset, Value};
use gpiocdev::Request;

use super::{AnyInput, AnyOutput, EdgeSink, GpioError};
use crate::config::Bias;

/// Shown as the line's consumer by `gpioinfo` and `roipd devices`.
const CONSUMER: &str = "roipd";
/// How often the edge reader wakes up to notice that its input was dropped.
const READER_WAKE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, PartialEq, Eq)]
enum LineRef {
    Offset(Offset),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Address {
    chip: PathBuf,
    line: LineRef,
}

fn parse_address(address: &str) -> Result<Address, GpioError> {
    let bad = |why: &str| GpioError::BadName(format!("cdev:{address}"), why.to_string());
    let usage = "expected `chip:line`, e.g. `gpiochip0:17` or `/dev/gpiochip0:GPIO17`";
    let (chip, line) = address.rsplit_once(':').ok_or_else(|| bad(usage))?;
    if chip.is_empty() || line.is_empty() {
        return Err(bad(usage));
    }
    let chip = if chip.starts_with('/') {
        PathBuf::from(chip)
    } else if chip.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        Path::new("/dev").join(chip)
    } else {
        return Err(bad("chip must be a name such as `gpiochip0` or an absolute path"));
    };
    let line = if line.bytes().all(|b| b.is_ascii_digit()) {
        LineRef::Offset(line.parse().map_err(|_| bad("line offset out of range"))?)
    } else {
        LineRef::Name(line.to_string())
    };
    Ok(Address { chip, line })
}

/// Finds the chip and the line offset; errors name the configured line.
fn resolve(address: &str) -> Result<(String, PathBuf, Offset), GpioError> {
    let name = format!("cdev:{address}");
    let addr = parse_address(address)?;
    let chip = gpiocdev::Chip::from_path(&addr.chip)
        .map_err(|e| GpioError::io(&name, format!("cannot open GPIO chip {}: {e}", addr.chip.display())))?;
    let offset = match &addr.line {
        LineRef::Offset(n) => *n,
        LineRef::Name(line) => chip
            .find_line_info(line)
            .map(|info| info.offset)
            .ok_or_else(|| GpioError::io(&name, format!("no line named `{line}` on {}", chip.path().display())))?,
    };
    Ok((name, chip.path().to_path_buf(), offset))
}

fn cdev_bias(bias: Bias) -> Option<gpiocdev::line::Bias> {
    match bias {
        Bias::AsIs => None,
        Bias::Disabled => Some(gpiocdev::line::Bias::Disabled),
        Bias::PullUp => Some(gpiocdev::line::Bias::PullUp),
        Bias::PullDown => Some(gpiocdev::line::Bias::PullDown),
    }
}

/// Lines are requested active-high, so `Active` is the physical high level.
fn value(high: bool) -> Value {
    if high {
        Value::Active
    } else {
        Value::Inactive
    }
}

pub fn open_output(address: &str, inactive_high: bool, bias: Bias) -> Result<AnyOutput, GpioError> {
    let (name, chip, offset) = resolve(address)?;
    let req = Request::builder()
        .on_chip(chip)
        .with_consumer(CONSUMER)
        .with_line(offset)
        .as_output(value(inactive_high))
        .with_bias(cdev_bias(bias))
        .request()
        .map_err(|e| GpioError::io(&name, format!("cannot request line {offset}: {e}")))?;
    Ok(AnyOutput(Box::new(CdevOutput { req, offset, inactive_high, name })))
}

pub fn open_input(address: &str, bias: Bias, sink: EdgeSink) -> Result<AnyInput, GpioError> {
    let (name, chip, offset) = resolve(address)?;
    let req = Request::builder()
        .on_chip(chip)
        .with_consumer(CONSUMER)
        .with_line(offset)
        .as_input()
        .with_bias(cdev_bias(bias))
        .with_edge_detection(EdgeDetection::BothEdges)
        .request()
        .map_err(|e| GpioError::io(&name, format!("cannot request line {offset}: {e}")))?;
    let req = Arc::new(req);
    spawn_edge_reader(Arc::downgrade(&req), name.clone(), sink)?;
    Ok(AnyInput(Box::new(CdevInput { req, offset, name })))
}

/// Forwards edge events until the input (the only strong owner of the request) is dropped.
fn spawn_edge_reader(req: Weak<Request>, name: String, sink: EdgeSink) -> Result<(), GpioError> {
    let line = name.clone();
    thread::Builder::new()
        .name("gpio-cdev-edges".into())
        .spawn(move || {
            let mut failing = false;
            while let Some(req) = req.upgrade() {
                let event = req.wait_edge_event(READER_WAKE).and_then(|ready| {
                    if ready {
                        req.read_edge_event().map(Some)
                    } else {
                        Ok(None)
                    }
                });
                match event {
                    Ok(Some(ev)) => {
                        failing = false;
                        sink(Instant::now(), ev.kind == EdgeKind::Rising);
                    }
                    Ok(None) => failing = false,
                    Err(e) => {
                        // Log once per streak, and back off so a dead chip cannot spin a core.
                        if !failing {
                            tracing::error!(line = %line, "reading GPIO edge events failed: {e}");
                        }
                        failing = true;
                        drop(req);
                        thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        })
        .map(|_| ())
        .map_err(|e| GpioError::io(&name, format!("cannot start edge reader thread: {e}")))
}

struct CdevOutput {
    req: Request,
    offset: Offset,
    inactive_high: bool,
    name: String,
}

impl CdevOutput {
    fn set(&mut self, high: bool) -> Result<(), GpioError> {
        self.req.set_value(self.offset, value(high)).map_err(|e| GpioError::io(&self.name, e))
    }
}

impl Drop for CdevOutput {
    fn drop(&mut self) {
        // Leave the line unkeyed when it is released, whatever it was last set to.
        let _ = self.set(self.inactive_high);
    }
}

impl ErrorType for CdevOutput {
    type Error = GpioError;
}

impl OutputPin for CdevOutput {
    fn set_low(&mut self) -> Result<(), GpioError> {
        self.set(false)
    }
    fn set_high(&mut self) -> Result<(), GpioError> {
        self.set(true)
    }
}

struct CdevInput {
    req: Arc<Request>,
    offset: Offset,
    name: String,
}

impl ErrorType for CdevInput {
    type Error = GpioError;
}

impl InputPin for CdevInput {
    fn is_high(&mut self) -> Result<bool, GpioError> {
        let v = self.req.value(self.offset).map_err(|e| GpioError::io(&self.name, e))?;
        Ok(v == Value::Active)
    }
    fn is_low(&mut self) -> Result<bool, GpioError> {
        self.is_high().map(|h| !h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_take_chip_names_paths_offsets_and_line_names() {
        assert_eq!(
            parse_address("gpiochip0:17").unwrap(),
            Address { chip: "/dev/gpiochip0".into(), line: LineRef::Offset(17) }
        );
        assert_eq!(
            parse_address("/dev/gpiochip4:GPIO27").unwrap(),
            Address { chip: "/dev/gpiochip4".into(), line: LineRef::Name("GPIO27".into()) }
        );
        for bad in ["17", "gpiochip0:", ":17", "../etc:3", "gpiochip0:99999999999"] {
            assert!(matches!(parse_address(bad), Err(GpioError::BadName(..))), "{bad}");
        }
    }

    #[test]
    fn missing_chip_is_a_clear_error_naming_the_line() {
        let err = match open_output("gpiochip-roipd-none:17", false, Bias::AsIs) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a missing chip must not open"),
        };
        assert!(err.contains("cdev:gpiochip-roipd-none:17"), "{err}");
        assert!(err.contains("/dev/gpiochip-roipd-none"), "{err}");

        let sink: EdgeSink = Arc::new(|_, _| {});
        let err = open_input("/dev/null:3", Bias::PullUp, sink).err().expect("not a chip").to_string();
        assert!(err.contains("cdev:/dev/null:3") && err.contains("cannot open GPIO chip"), "{err}");
    }

    #[test]
    fn bias_maps_one_to_one() {
        assert_eq!(cdev_bias(Bias::AsIs), None);
        assert_eq!(cdev_bias(Bias::PullUp), Some(gpiocdev::line::Bias::PullUp));
        assert_eq!(cdev_bias(Bias::PullDown), Some(gpiocdev::line::Bias::PullDown));
        assert_eq!(cdev_bias(Bias::Disabled), Some(gpiocdev::line::Bias::Disabled));
        assert_eq!(value(true), Value::Active);
    }
}
