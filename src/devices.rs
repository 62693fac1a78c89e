//! `roipd devices`: what audio, GPIO and radio-interface hardware this machine has.
//!
//! Every section is probed on its own: a probe that fails says why in its section and the
//! others still print. Names are printed the way the config wants them (`plughw:CARD=<id>`,
//! `cdev:gpiochip0:17`, `cm108:/dev/hidraw0:3`, `serial:/dev/ttyUSB0:rts`).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

/// One section's lines, or why it could not be probed.
type Probe = Result<Vec<String>, String>;

/// The whole listing, ready to print.
pub fn report() -> String {
    let mut out = String::new();
    for (title, probe) in [
        ("Audio cards (ALSA)", audio_cards()),
        ("Audio PCMs (ALSA)", audio_pcms()),
        ("GPIO chips", gpio_chips()),
        ("USB radio interfaces (CM108-style HID GPIO)", hid_radios()),
        ("Serial ports", serial_ports()),
        ("Real-time priority for audio threads", Ok(vec![crate::audio::rt::availability()])),
    ] {
        let _ = writeln!(out, "{title}:");
        match probe {
            Ok(lines) if lines.is_empty() => out.push_str("  none found\n"),
            Ok(lines) => lines.iter().for_each(|l| {
                let _ = writeln!(out, "  {l}");
            }),
            Err(why) => {
                let _ = writeln!(out, "  could not probe: {why}");
            }
        }
        out.push('\n');
    }
    out
}

pub fn print() {
    print!("{}", report());
}

#[cfg(target_os = "linux")]
fn audio_cards() -> Probe {
    let mut lines = vec![];
    for card in alsa::card::Iter::new() {
        let card = card.map_err(|e| e.to_string())?;
        let index = card.get_index();
        let name = card.get_longname().or_else(|_| card.get_name()).unwrap_or_default();
        // The card id gives a name that survives reboots and USB re-enumeration.
        let ctl = match alsa::Ctl::from_card(&card, false) {
            Ok(ctl) => ctl,
            Err(e) => {
                lines.push(format!("card {index}: {name} (cannot open its control: {e})"));
                continue;
            }
        };
        let id = ctl.card_info().ok().and_then(|i| i.get_id().ok().map(str::to_string)).unwrap_or_default();
        lines.push(format!("card {index}: {name}"));
        let devices: Vec<_> = alsa::ctl::DeviceIter::new(&ctl).collect();
        if devices.is_empty() {
            lines.push(format!("  plughw:CARD={id}"));
        }
        for dev in devices {
            lines.push(format!("  plughw:CARD={id},DEV={dev}"));
        }
    }
    Ok(lines)
}

#[cfg(target_os = "linux")]
fn audio_pcms() -> Probe {
    let hints = alsa::device_name::HintIter::new_str(None, "pcm").map_err(|e| e.to_string())?;
    Ok(hints
        .filter_map(|hint| {
            let name = hint.name?;
            let desc = hint.desc.unwrap_or_default().replace('\n', " / ");
            let dir = match hint.direction {
                Some(alsa::Direction::Capture) => " [capture only]",
                Some(alsa::Direction::Playback) => " [playback only]",
                None => "",
            };
            Some(format!("{name}{dir}  {desc}").trim_end().to_string())
        })
        .collect())
}

#[cfg(target_os = "linux")]
fn gpio_chips() -> Probe {
    let chips = match gpiocdev::chip::chips() {
        Ok(chips) => chips,
        // No GPIO chip at all is a normal answer on a PC, not a failure.
        Err(gpiocdev::Error::NoGpioChips()) => return Ok(vec![]),
        Err(e) => return Err(e.to_string()),
    };
    let mut lines = vec![];
    for path in chips {
        let chip = match gpiocdev::Chip::from_path(&path) {
            Ok(chip) => chip,
            Err(e) => {
                lines.push(format!("{}: cannot open: {e}", path.display()));
                continue;
            }
        };
        let info = match chip.info() {
            Ok(info) => info,
            Err(e) => {
                lines.push(format!("{}: cannot read info: {e}", path.display()));
                continue;
            }
        };
        lines.push(format!(
            "{} [{}] {} lines (cdev:{}:<offset or name>)",
            info.name, info.label, info.num_lines, info.name
        ));
        let Ok(iter) = chip.line_info_iter() else { continue };
        for li in iter.flatten() {
            // Unnamed idle lines carry no information; list the rest.
            if li.name.is_empty() && !li.used {
                continue;
            }
            let dir = format!("{:?}", li.direction).to_lowercase();
            let user = if li.used { format!(", used by `{}`", li.consumer) } else { String::new() };
            lines.push(format!("  {:>3} {:<16} {dir}{user}", li.offset, li.name));
        }
    }
    Ok(lines)
}

/// The interesting fields of a HID device's `uevent` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HidUevent {
    pub bus: u16,
    pub vendor: u16,
    pub product: u16,
    pub name: String,
}

/// Parses `HID_ID=0003:00000D8C:0000013A` and `HID_NAME=...` out of a uevent file.
pub fn parse_hid_uevent(text: &str) -> Option<HidUevent> {
    let mut id = None;
    let mut name = String::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("HID_ID=") {
            let mut parts = v.trim().split(':').map(|p| u32::from_str_radix(p, 16).ok());
            let (Some(Some(bus)), Some(Some(vendor)), Some(Some(product))) = (parts.next(), parts.next(), parts.next())
            else {
                return None;
            };
            id = Some((bus as u16, vendor as u16, product as u16));
        } else if let Some(v) = line.strip_prefix("HID_NAME=") {
            name = v.trim().to_string();
        }
    }
    let (bus, vendor, product) = id?;
    Some(HidUevent { bus, vendor, product, name })
}

/// The interfaces the `cm108` backend drives (C-Media fobs, the AIOC).
#[cfg(target_os = "linux")]
fn is_radio_interface(hid: &HidUevent) -> bool {
    crate::gpio::cm108::known_radio_interface(hid.vendor, hid.product)
}

#[cfg(target_os = "linux")]
fn hid_radios() -> Probe {
    let dir = Path::new("/sys/class/hidraw");
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut found: Vec<(String, String)> = vec![];
    for entry in entries.flatten() {
        let node = entry.file_name().to_string_lossy().into_owned();
        let Ok(text) = fs::read_to_string(entry.path().join("device/uevent")) else { continue };
        let Some(hid) = parse_hid_uevent(&text) else { continue };
        if !is_radio_interface(&hid) {
            continue;
        }
        let mut line = format!("/dev/{node}  {:04x}:{:04x} {}", hid.vendor, hid.product, hid.name);
        if let Some(card) = sound_card_of(&entry.path().join("device")) {
            let _ = write!(line, "  (audio: plughw:CARD={card})");
        }
        let _ = write!(line, "\n    cm108:/dev/{node}:3 for PTT, cm108:/dev/{node}:cos for COS");
        found.push((node, line));
    }
    found.sort();
    Ok(found.into_iter().map(|(_, l)| l).collect())
}

/// The ALSA card id of the sound interface on the same USB device as a HID interface.
#[cfg(target_os = "linux")]
fn sound_card_of(hid_device: &Path) -> Option<String> {
    // .../<usb device>/<usb interface>/<hid device>: the card hangs off a sibling interface.
    let usb_device = fs::canonicalize(hid_device).ok()?.parent()?.parent()?.to_path_buf();
    for iface in fs::read_dir(&usb_device).ok()?.flatten() {
        let Ok(cards) = fs::read_dir(iface.path().join("sound")) else { continue };
        for card in cards.flatten() {
            if card.file_name().to_string_lossy().starts_with("card") {
                let id = fs::read_to_string(card.path().join("id")).ok()?;
                return Some(id.trim().to_string());
            }
        }
    }
    None
}

fn serial_ports() -> Probe {
    let mut lines = vec![];
    let dev = fs::read_dir("/dev").map_err(|e| format!("/dev: {e}"))?;
    let mut ttys: Vec<String> = dev
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ttyUSB") || n.starts_with("ttyACM"))
        .collect();
    ttys.sort();
    lines.extend(ttys.iter().map(|n| format!("/dev/{n}")));
    // Stable names: prefer these in the config (serial:/dev/serial/by-id/...:rts).
    if let Ok(by_id) = fs::read_dir("/dev/serial/by-id") {
        let mut links: Vec<String> = by_id
            .flatten()
            .map(|e| {
                let target = fs::canonicalize(e.path()).map(|t| t.display().to_string()).unwrap_or_else(|_| "?".into());
                format!("{} -> {target}", e.path().display())
            })
            .collect();
        links.sort();
        lines.extend(links);
    }
    Ok(lines)
}

#[cfg(not(target_os = "linux"))]
fn audio_cards() -> Probe {
    Err("ALSA needs Linux".into())
}
#[cfg(not(target_os = "linux"))]
fn audio_pcms() -> Probe {
    Err("ALSA needs Linux".into())
}
#[cfg(not(target_os = "linux"))]
fn gpio_chips() -> Probe {
    Err("GPIO character devices need Linux".into())
}
#[cfg(not(target_os = "linux"))]
fn hid_radios() -> Probe {
    Err("hidraw needs Linux".into())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn uevent_of_a_cm119_fob_parses() {
        let text = "DRIVER=hid-generic\nHID_ID=0003:00000D8C:0000013A\n\
                    HID_NAME=C-Media Electronics Inc. USB PnP Sound Device\n\
                    HID_PHYS=usb-0000:01:00.0-1.3/input3\nHID_UNIQ=\nMODALIAS=hid:b0003g0001v00000D8Cp0000013A\n";
        let hid = parse_hid_uevent(text).unwrap();
        assert_eq!(
            hid,
            HidUevent {
                bus: 3,
                vendor: 0x0d8c,
                product: 0x013a,
                name: "C-Media Electronics Inc. USB PnP Sound Device".into()
            }
        );
        assert!(is_radio_interface(&hid));
    }

    #[test]
    fn aioc_is_recognised_and_a_keyboard_is_not() {
        let aioc = parse_hid_uevent("HID_ID=0003:00001209:00007388\nHID_NAME=AIOC All-In-One-Cable\n").unwrap();
        assert!(is_radio_interface(&aioc));
        let kbd = parse_hid_uevent("HID_ID=0003:0000413C:00002010\nHID_NAME=Dell USB Keyboard\n").unwrap();
        assert!(!is_radio_interface(&kbd));
    }

    #[test]
    fn broken_uevents_are_skipped_not_fatal() {
        assert_eq!(parse_hid_uevent(""), None);
        assert_eq!(parse_hid_uevent("HID_NAME=x\n"), None);
        assert_eq!(parse_hid_uevent("HID_ID=0003:zz:0001\n"), None);
        assert_eq!(parse_hid_uevent("HID_ID=0003:0D8C\n"), None);
    }

    #[test]
    fn report_has_every_section_even_without_hardware() {
        let r = report();
        for title in
            ["Audio cards", "Audio PCMs", "GPIO chips", "USB radio interfaces", "Serial ports", "Real-time priority"]
        {
            assert!(r.contains(title), "{r}");
        }
    }
}
