//! CM108/CM119-family USB sound fobs (URI, RA-35, RIM-Lite, homebrew fobs) and the AIOC, whose
//! GPIO and buttons are reached through their HID interface: `cm108:/dev/hidraw0:3` is GPIO 3
//! (the usual PTT pin), `cm108:/dev/hidraw0:cos` is the COS input. A udev symlink such as
//! `/dev/hidraw-uri0` works as the path; it is resolved so both names share one device.
//!
//! ## Report layout
//! Output (host to fob), as written to hidraw: report id `0x00`, then the 4-byte CM108 output
//! report: byte 0 = `0x00` (bits 7:6 = 00 select "GPIO command"), byte 1 = GPIO levels
//! (bit n-1 = GPIOn, 1 = high), byte 2 = GPIO direction mask (1 = output, power-up default
//! input), byte 3 = `0x00`. Sources: the C-Media datasheet layout as summarised by Direwolf
//! `cm108.c` (`io[2] = iodata; io[3] = iomask`, 5 bytes written to hidraw) and app_rpt
//! `chan_simpleusb` (`hid_gpio_loc = 1`, `hid_gpio_ctl_loc = 2`); the AIOC firmware
//! (`usb_hid.c`) decodes the same report (`buffer[0] & 0xC0 == 0`, GPIO state in `buffer[1]`).
//!
//! Input (fob to host, no report id): byte 0 bits 0..3 = volume up, volume down, playback mute,
//! record mute; bits 7:6 = 00 mark a GPIO/button report; byte 1 = GPIO input levels. COS is the
//! **volume-down** bit (`0x02` of byte 0): app_rpt uses it (`hid_io_cor = 2`, `hid_io_cor_loc = 0`)
//! and the AIOC routes its virtual COS there by default (CM108_IOMUX1 BTN2SRC = VCOS).
//!
//! Levels are reported physically (bit set = high). Polarity differs by device: a C-Media chip
//! reads a button as 0 while its input is pulled low, so on URI-style fobs COS asserted reads 0
//! (app_rpt: `keyed = !(buf[0] & 2)`) and the line needs `active_low = true`; the AIOC sets the
//! bit while COS is active (`active_low = false`).
//!
//! One [`Device`] per hidraw node serves every line on it: outputs share the current level and
//! direction bytes (so setting GPIO3 keeps GPIO4), and one reader thread feeds every input.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread;
use std::time::{Duration, Instant};

use embedded_hal::digital::{ErrorType, InputPin, OutputPin};

use super::{AnyInput, AnyOutput, EdgeSink, GpioError};

/// Bytes written per output report: report id 0 plus the 4-byte report. (Writing only the
/// 4 report bytes fails with EPIPE, as Direwolf notes.)
pub const OUTPUT_REPORT_LEN: usize = 5;

/// Encode the hidraw write that sets GPIO directions and levels. Bit n-1 stands for GPIOn.
/// Levels of pins that are not outputs are left 0.
pub fn encode_gpio_report(direction_mask: u8, levels: u8) -> [u8; OUTPUT_REPORT_LEN] {
    [0x00, 0x00, levels & direction_mask, direction_mask, 0x00]
}

/// What one input report says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputBits {
    /// Byte 0, bits 0..3: volume up, volume down, playback mute, record mute.
    pub buttons: u8,
    /// Byte 1: GPIO input levels, bit n-1 = GPIOn.
    pub gpio: u8,
}

/// Decode an input report as read from hidraw (no report id byte; CM108s use none).
/// Returns `None` for short reports and for register/EEPROM reports (bits 7:6 of byte 0 set).
pub fn decode_input_report(report: &[u8]) -> Option<InputBits> {
    match report {
        [b0, b1, ..] if b0 & 0xC0 == 0 => Some(InputBits { buttons: b0 & 0x0F, gpio: *b1 }),
        _ => None,
    }
}

/// One readable bit of the input report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputSource {
    /// A bit of byte 0 (buttons; COS is volume down).
    Button(u8),
    /// A bit of byte 1 (GPIO levels).
    Gpio(u8),
}

pub const VOL_UP: u8 = 0x01;
pub const VOL_DOWN: u8 = 0x02;
pub const PLAY_MUTE: u8 = 0x04;
pub const REC_MUTE: u8 = 0x08;

impl InputSource {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "cos" | "vol-down" => InputSource::Button(VOL_DOWN),
            "vol-up" => InputSource::Button(VOL_UP),
            "mute" | "play-mute" => InputSource::Button(PLAY_MUTE),
            "rec-mute" => InputSource::Button(REC_MUTE),
            _ => InputSource::Gpio(parse_gpio(name)?),
        })
    }

    pub fn level(self, bits: InputBits) -> bool {
        match self {
            InputSource::Button(mask) => bits.buttons & mask != 0,
            InputSource::Gpio(mask) => bits.gpio & mask != 0,
        }
    }
}

/// `3` or `gpio3` (GPIO 1..=8) as a bit mask.
fn parse_gpio(name: &str) -> Option<u8> {
    let n: u8 = name.strip_prefix("gpio").unwrap_or(name).parse().ok()?;
    (1..=8).contains(&n).then(|| 1 << (n - 1))
}

fn split_address(address: &str) -> Result<(&Path, &str), GpioError> {
    match address.rsplit_once(':') {
        Some((path, pin)) if path.starts_with('/') && !pin.is_empty() => Ok((Path::new(path), pin)),
        _ => Err(GpioError::BadName(
            format!("cm108:{address}"),
            "expected `/dev/hidrawN:<gpio 1-8>` or `/dev/hidrawN:cos|vol-up|vol-down|mute`".into(),
        )),
    }
}

// hidraw ioctls (linux/hidraw.h), encoded as _IOC(dir, 'H', nr, size) on the common
// (x86, arm, aarch64, riscv) layout.
const fn ioc(dir: u64, nr: u64, size: u64) -> u64 {
    (dir << 30) | (size << 16) | ((b'H' as u64) << 8) | nr
}
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;
/// HIDIOCGRAWINFO: bus type, vendor and product of the device.
const HIDIOCGRAWINFO: u64 = ioc(IOC_READ, 0x03, 8);
/// HIDIOCGINPUT(len): GET_REPORT(Input), Linux 5.11+. Byte 0 in = report id, data from byte 1.
const HIDIOCGINPUT_5: u64 = ioc(IOC_READ | IOC_WRITE, 0x0A, 5);

#[repr(C)]
#[derive(Default)]
struct HidrawDevinfo {
    bustype: u32,
    vendor: i16,
    product: i16,
}

/// How long the reader waits for an interrupt report before asking with GET_REPORT instead:
/// some chips only push reports for button changes, not for GPIO inputs.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// One open fob: its hidraw file, the output bytes, and the inputs listening to it.
struct Device {
    path: PathBuf,
    file: File,
    out: Mutex<OutputState>,
    inputs: Mutex<InputState>,
}

#[derive(Default)]
struct OutputState {
    /// Direction mask sent to the chip (1 = output). Pins stay outputs once configured.
    direction: u8,
    /// GPIOs currently owned by an open output pin.
    claimed: u8,
    levels: u8,
}

#[derive(Default)]
struct InputState {
    last: InputBits,
    sinks: Vec<(u64, InputSource, EdgeSink)>,
    next_id: u64,
    reader_started: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in a sink must not stop PTT release on the same device.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Device {
    fn open_hidraw(path: &Path) -> io::Result<Arc<Device>> {
        let file =
            OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(path)?;
        let mut info = HidrawDevinfo::default();
        // SAFETY: HIDIOCGRAWINFO writes one hidraw_devinfo (8 bytes) into `info`.
        if unsafe { libc::ioctl(file.as_raw_fd(), HIDIOCGRAWINFO as _, &mut info) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("{} is not a hidraw device: {e}", path.display())));
        }
        let (vid, pid) = (info.vendor as u16, info.product as u16);
        if !known_radio_interface(vid, pid) {
            tracing::warn!(device = %path.display(), "{vid:04x}:{pid:04x} is not a known CM108-compatible radio interface; trying anyway");
        }
        Ok(Self::with_file(path, file))
    }

    fn with_file(path: &Path, file: File) -> Arc<Device> {
        let dev = Device { path: path.to_path_buf(), file, out: Default::default(), inputs: Default::default() };
        // Learn the current input state so `is_high` is right before the first edge.
        if let Some(bits) = dev.get_input_report() {
            lock(&dev.inputs).last = bits;
        }
        Arc::new(dev)
    }

    fn write_outputs(&self, st: &OutputState) -> io::Result<()> {
        let report = encode_gpio_report(st.direction, st.levels);
        match (&self.file).write(&report)? {
            OUTPUT_REPORT_LEN => Ok(()),
            n => Err(io::Error::other(format!("short HID write ({n} of {OUTPUT_REPORT_LEN} bytes)"))),
        }
    }

    /// GET_REPORT(Input); `None` where the kernel or device cannot answer it.
    fn get_input_report(&self) -> Option<InputBits> {
        let mut buf = [0u8; OUTPUT_REPORT_LEN];
        // SAFETY: HIDIOCGINPUT(5) reads and writes at most 5 bytes of `buf`.
        let n = unsafe { libc::ioctl(self.file.as_raw_fd(), HIDIOCGINPUT_5 as _, buf.as_mut_ptr()) };
        if n < 2 {
            return None;
        }
        decode_input_report(&buf[1..(n as usize).min(buf.len())])
    }

    /// Compares with the last known state and calls the sinks whose bit changed.
    fn update_inputs(&self, bits: InputBits, at: Instant) {
        let fire: Vec<(EdgeSink, bool)> = {
            let mut st = lock(&self.inputs);
            let prev = std::mem::replace(&mut st.last, bits);
            st.sinks
                .iter()
                .filter(|(_, src, _)| src.level(prev) != src.level(bits))
                .map(|(_, src, sink)| (Arc::clone(sink), src.level(bits)))
                .collect()
        };
        for (sink, high) in fire {
            sink(at, high);
        }
    }

    /// One reader per device; it exits once every pin of the device is dropped.
    fn start_reader(self: &Arc<Self>) -> io::Result<()> {
        let weak = Arc::downgrade(self);
        thread::Builder::new().name("gpio-cm108".into()).spawn(move || reader_loop(weak))?;
        Ok(())
    }
}

fn reader_loop(dev: Weak<Device>) {
    let mut can_poll = true;
    let mut failing = false;
    let mut buf = [0u8; 64];
    while let Some(dev) = dev.upgrade() {
        let mut pfd = libc::pollfd { fd: dev.file.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, POLL_EVERY.as_millis() as i32) };
        let now = Instant::now();
        let result = if ready > 0 {
            (&dev.file).read(&mut buf).map(|n| decode_input_report(&buf[..n]))
        } else if ready == 0 && can_poll {
            let bits = dev.get_input_report();
            can_poll = bits.is_some();
            Ok(bits)
        } else if ready == 0 {
            Ok(None)
        } else {
            Err(io::Error::last_os_error())
        };
        match result {
            Ok(Some(bits)) => {
                failing = false;
                dev.update_inputs(bits, now);
            }
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Typically the fob was unplugged: say so once, then retry slowly.
                if !failing {
                    tracing::error!(device = %dev.path.display(), "reading HID input reports failed: {e}");
                }
                failing = true;
                drop(dev);
                thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// C-Media CM108/CM119 family (vendor 0d8c) and the AIOC (1209:7388).
pub fn known_radio_interface(vendor: u16, product: u16) -> bool {
    vendor == 0x0d8c || (vendor, product) == (0x1209, 0x7388)
}

/// The fobs opened so far, one [`Device`] per resolved hidraw path.
#[derive(Default)]
pub struct Cm108Devices {
    open: HashMap<PathBuf, Weak<Device>>,
}

impl Cm108Devices {
    fn device(&mut self, path: &Path, name: &str) -> Result<Arc<Device>, GpioError> {
        let key =
            fs::canonicalize(path).map_err(|e| GpioError::io(name, format!("cannot open {}: {e}", path.display())))?;
        if let Some(dev) = self.open.get(&key).and_then(Weak::upgrade) {
            return Ok(dev);
        }
        let dev = Device::open_hidraw(&key).map_err(|e| GpioError::io(name, e))?;
        self.open.retain(|_, d| d.strong_count() > 0);
        self.open.insert(key, Arc::downgrade(&dev));
        Ok(dev)
    }

    pub fn output(&mut self, address: &str, inactive_high: bool) -> Result<AnyOutput, GpioError> {
        let name = format!("cm108:{address}");
        let (path, pin) = split_address(address)?;
        let bit =
            parse_gpio(pin).ok_or_else(|| GpioError::BadName(name.clone(), "CM108 outputs are GPIO 1 to 8".into()))?;
        let dev = self.device(path, &name)?;
        {
            let mut st = lock(&dev.out);
            if st.claimed & bit != 0 {
                return Err(GpioError::io(&name, "GPIO already used by another output"));
            }
            let before = (st.direction, st.levels);
            st.direction |= bit;
            st.levels = if inactive_high { st.levels | bit } else { st.levels & !bit };
            // Direction and inactive level reach the chip in the same report: no glitch.
            if let Err(e) = dev.write_outputs(&st) {
                (st.direction, st.levels) = before;
                return Err(GpioError::io(&name, format!("cannot set GPIO: {e}")));
            }
            st.claimed |= bit;
        }
        Ok(AnyOutput(Box::new(Cm108Output { dev, bit, inactive_high, name })))
    }

    pub fn input(&mut self, address: &str, sink: EdgeSink) -> Result<AnyInput, GpioError> {
        let name = format!("cm108:{address}");
        let (path, pin) = split_address(address)?;
        let source = InputSource::parse(pin).ok_or_else(|| {
            GpioError::BadName(
                name.clone(),
                "CM108 inputs are cos, vol-up, vol-down, mute, rec-mute or GPIO 1-8".into(),
            )
        })?;
        let dev = self.device(path, &name)?;
        let id = {
            let mut st = lock(&dev.inputs);
            if !st.reader_started {
                dev.start_reader().map_err(|e| GpioError::io(&name, format!("cannot start HID reader: {e}")))?;
                st.reader_started = true;
            }
            st.next_id += 1;
            let id = st.next_id;
            st.sinks.push((id, source, sink));
            id
        };
        Ok(AnyInput(Box::new(Cm108Input { dev, source, id })))
    }
}

struct Cm108Output {
    dev: Arc<Device>,
    bit: u8,
    inactive_high: bool,
    name: String,
}

impl Cm108Output {
    fn set(&self, high: bool) -> Result<(), GpioError> {
        let mut st = lock(&self.dev.out);
        st.levels = if high { st.levels | self.bit } else { st.levels & !self.bit };
        self.dev.write_outputs(&st).map_err(|e| GpioError::io(&self.name, e))
    }
}

impl Drop for Cm108Output {
    fn drop(&mut self) {
        // Leave the pin at its inactive level, still driven, and free it for reuse.
        let _ = self.set(self.inactive_high);
        lock(&self.dev.out).claimed &= !self.bit;
    }
}

impl ErrorType for Cm108Output {
    type Error = GpioError;
}

impl OutputPin for Cm108Output {
    fn set_low(&mut self) -> Result<(), GpioError> {
        self.set(false)
    }
    fn set_high(&mut self) -> Result<(), GpioError> {
        self.set(true)
    }
}

struct Cm108Input {
    dev: Arc<Device>,
    source: InputSource,
    id: u64,
}

impl Drop for Cm108Input {
    fn drop(&mut self) {
        lock(&self.dev.inputs).sinks.retain(|(id, _, _)| *id != self.id);
    }
}

impl ErrorType for Cm108Input {
    type Error = GpioError;
}

impl InputPin for Cm108Input {
    fn is_high(&mut self) -> Result<bool, GpioError> {
        Ok(self.source.level(lock(&self.dev.inputs).last))
    }
    fn is_low(&mut self) -> Result<bool, GpioError> {
        self.is_high().map(|h| !h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn output_report_carries_levels_then_direction() {
        // GPIO3 output, high: report id, mode 0, data 0x04, direction 0x04, 0.
        assert_eq!(encode_gpio_report(0x04, 0x04), [0, 0, 0x04, 0x04, 0]);
        // GPIO3 and GPIO4 outputs, only GPIO4 high; levels of input pins are masked off.
        assert_eq!(encode_gpio_report(0x0C, 0xF8), [0, 0, 0x08, 0x0C, 0]);
        assert_eq!(encode_gpio_report(0, 0xFF), [0; 5]);
    }

    #[test]
    fn input_report_decodes_buttons_and_gpio() {
        let bits = decode_input_report(&[0x02, 0x81, 0, 0]).unwrap();
        assert_eq!(bits, InputBits { buttons: 0x02, gpio: 0x81 });
        let cos = InputSource::parse("cos").unwrap();
        assert!(cos.level(bits));
        assert!(!cos.level(decode_input_report(&[0x01, 0, 0, 0]).unwrap()));
        assert!(InputSource::parse("gpio8").unwrap().level(bits));
        assert!(!InputSource::parse("2").unwrap().level(bits));
        // Register/EEPROM reports and runts are not GPIO state.
        assert_eq!(decode_input_report(&[0x42, 0, 0, 0]), None);
        assert_eq!(decode_input_report(&[0x02]), None);
    }

    #[test]
    fn addresses_and_pin_names() {
        assert_eq!(split_address("/dev/hidraw0:3").unwrap(), (Path::new("/dev/hidraw0"), "3"));
        assert_eq!(
            split_address("/dev/serial/../hidraw-uri:cos").unwrap(),
            (Path::new("/dev/serial/../hidraw-uri"), "cos")
        );
        assert!(split_address("hidraw0:3").is_err());
        assert!(split_address("/dev/hidraw0").is_err());
        assert_eq!(parse_gpio("3"), Some(0x04));
        assert_eq!(parse_gpio("gpio8"), Some(0x80));
        assert_eq!(parse_gpio("0"), None);
        assert_eq!(parse_gpio("9"), None);
        assert_eq!(InputSource::parse("vol-up"), Some(InputSource::Button(VOL_UP)));
        assert_eq!(InputSource::parse("mute"), Some(InputSource::Button(PLAY_MUTE)));
        assert_eq!(InputSource::parse("squelch"), None);
    }

    #[test]
    fn missing_or_wrong_device_is_a_clear_error() {
        let mut devs = Cm108Devices::default();
        let err = devs.output("/dev/hidraw-roipd-none:3", false).err().expect("missing").to_string();
        assert!(err.contains("cm108:/dev/hidraw-roipd-none:3") && err.contains("cannot open"), "{err}");
        let err = devs.output("/dev/null:3", false).err().expect("not hidraw").to_string();
        assert!(err.contains("cm108:/dev/null:3") && err.contains("not a hidraw device"), "{err}");
        assert!(matches!(devs.output("/dev/null:9", false), Err(GpioError::BadName(..))));
        assert!(matches!(devs.input("/dev/null:squelch", Arc::new(|_, _| {})), Err(GpioError::BadName(..))));
    }

    /// The adapter logic over a datagram socket pair standing in for a hidraw node (one
    /// message = one report, like hidraw). This is not a CM108: it proves the shared output
    /// state and input dispatch, not the chip.
    fn fake_fob(devs: &mut Cm108Devices, dir: &Path) -> (PathBuf, UnixDatagram, Arc<Device>) {
        let (ours, fob) = UnixDatagram::pair().unwrap();
        let path = dir.join("fob");
        fs::write(&path, "").unwrap();
        let key = fs::canonicalize(&path).unwrap();
        let file = File::from(std::os::fd::OwnedFd::from(ours));
        let dev = Device::with_file(&key, file);
        devs.open.insert(key, Arc::downgrade(&dev));
        (path, fob, dev)
    }

    fn recv(fob: &UnixDatagram) -> Vec<u8> {
        let mut buf = [0u8; 16];
        let n = fob.recv(&mut buf).unwrap();
        buf[..n].to_vec()
    }

    #[test]
    fn outputs_share_one_device_and_keep_each_others_bits() {
        let dir = tempfile::tempdir().unwrap();
        let mut devs = Cm108Devices::default();
        let (path, fob, _dev) = fake_fob(&mut devs, dir.path());
        let p = path.display();

        // PTT on GPIO3 opens unkeyed: direction and low level in one report.
        let mut ptt = devs.output(&format!("{p}:3"), false).unwrap();
        assert_eq!(recv(&fob), [0, 0, 0x00, 0x04, 0]);
        // An active-low LED on GPIO4 opens high, without touching GPIO3.
        let mut led = devs.output(&format!("{p}:gpio4"), true).unwrap();
        assert_eq!(recv(&fob), [0, 0, 0x08, 0x0C, 0]);
        ptt.set_high().unwrap();
        assert_eq!(recv(&fob), [0, 0, 0x0C, 0x0C, 0]);
        led.set_low().unwrap();
        assert_eq!(recv(&fob), [0, 0, 0x04, 0x0C, 0]);
        assert!(devs.output(&format!("{p}:3"), false).is_err(), "GPIO3 is taken");

        // Dropping the keyed PTT releases it (GPIO3 low) and frees the pin.
        drop(ptt);
        assert_eq!(recv(&fob), [0, 0, 0x00, 0x0C, 0]);
        let _again = devs.output(&format!("{p}:3"), false).unwrap();
        assert_eq!(recv(&fob), [0, 0, 0x00, 0x0C, 0]);
    }

    #[test]
    fn one_reader_feeds_every_input_of_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let mut devs = Cm108Devices::default();
        let (path, fob, _dev) = fake_fob(&mut devs, dir.path());
        let p = path.display();
        let (tx, rx) = std::sync::mpsc::channel();
        let tx2 = tx.clone();
        let mut cos =
            devs.input(&format!("{p}:cos"), Arc::new(move |_, high| tx.send(("cos", high)).unwrap())).unwrap();
        let _gpio1 =
            devs.input(&format!("{p}:1"), Arc::new(move |_, high| tx2.send(("gpio1", high)).unwrap())).unwrap();
        let wait = || rx.recv_timeout(Duration::from_secs(2)).expect("edge");

        fob.send(&[VOL_DOWN, 0, 0, 0]).unwrap();
        assert_eq!(wait(), ("cos", true));
        assert!(cos.is_high().unwrap());
        fob.send(&[VOL_DOWN, 0x01, 0, 0]).unwrap();
        assert_eq!(wait(), ("gpio1", true));
        fob.send(&[0x40, 0, 0, 0]).unwrap(); // register report: ignored
        fob.send(&[0, 0x01, 0, 0]).unwrap();
        assert_eq!(wait(), ("cos", false));
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err(), "no other edges");
    }
}
