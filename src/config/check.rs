//! `roipd check CONFIG`: validate a config file without touching any hardware.
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use super::validate::timers;
use super::{Bias, Config, KeyingTimers, LineConfig, PortConfig, UplinkKind};

/// Exit code for an invalid config, the same the daemon uses when it refuses to start.
const EXIT_CONFIG: u8 = 2;

/// Prints every error (`file:line:column: key: message`) and a count to stderr and returns 2,
/// or prints a summary of what the config sets up to stdout and returns 0.
pub fn check_command(path: &Path) -> ExitCode {
    match super::load(path) {
        Ok((config, text)) => {
            let warnings = security_warnings(&config, &text, &path.display().to_string());
            for w in &warnings {
                eprintln!("{w}");
            }
            if !warnings.is_empty() {
                eprintln!(
                    "{}: WARNING: {} security warning{} above: a stranger on the network, the broker or Janus could \
                     key this box's radios or take over its rooms (docs/mqtt.md, \"Authentication\"; docs/janus.md, \"Security\")",
                    path.display(),
                    warnings.len(),
                    if warnings.len() == 1 { "" } else { "s" }
                );
            }
            for note in notes(&config, &text, &path.display().to_string()) {
                eprintln!("{note}");
            }
            print!("{}: OK\n{}", path.display(), summary(&config));
            // Same notice as `roipd devices`: audio that drops out under load starts here.
            println!("real-time priority for audio threads: {}", crate::audio::rt::availability());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprint!("{errors}");
            let n = errors.0.len();
            eprintln!("{}: {n} error{}", path.display(), if n == 1 { "" } else { "s" });
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// What makes a box open to a stranger, as `file:line:column: key: WARNING: …` lines (the
/// config is still valid). With `[mqtt]`: a broker without TLS (`mqtt://`), without
/// credentials, and the lab opt-out `insecure_unsigned` (no fleet key: floor messages and
/// commands are then accepted unsigned; without the opt-out such a box refuses them instead,
/// and a Janus fleet without a key is a config error). With a
/// Janus uplink, per room: Debian's stock demo room 1234, no PIN, and on the floor host no
/// secret (it could not moderate, and anyone could destroy the room). A hub serving plain HTTP
/// on a network address, and an edge reaching its hub over plain `ws://` off the box.
pub fn security_warnings(config: &Config, text: &str, file: &str) -> Vec<String> {
    let fleet = config.uplink.as_ref().filter(|u| u.kind == UplinkKind::Janus);
    let what = if fleet.is_some() { "floor messages and commands" } else { "commands" };
    let mut warnings = Vec::new();
    let mut warn = |key: &str, message: String| {
        let (line, column) = position_of(text, file, key);
        warnings.push(format!("{file}:{line}:{column}: {key}: WARNING: {message}"));
    };
    if let Some(mqtt) = &config.mqtt {
        if mqtt.url.starts_with("mqtt://") {
            warn(
                "mqtt.url",
                format!("unencrypted broker (mqtt://): anyone on the path reads and injects {what}; use mqtts://"),
            );
        }
        if mqtt.username.is_none() && mqtt.client_cert_file.is_none() {
            warn(
                "mqtt",
                format!("no broker credentials (username + password_file, or a client certificate): any client may publish {what}; give each box its own (`roipd mosquitto-acl`)"),
            );
        }
        if mqtt.insecure_unsigned && mqtt.fleet_key_file.is_none() {
            warn(
                "mqtt.insecure_unsigned",
                format!(
                    "INSECURE (labs only): {what} are accepted unsigned, so whoever can publish to the broker can key \
                     radios{}; {}, and remove `insecure_unsigned`",
                    if fleet.is_some() { " and take the floor" } else { "" },
                    super::MAKE_FLEET_KEY
                ),
            );
        }
    }
    if let Some(hub) = config.hub.as_ref().filter(|h| !h.tls_on() && !host_is_loopback(&h.listen)) {
        warn(
            "hub.listen",
            format!(
                "plain HTTP on a network address ({}): tokens cross the network in clear, and browsers on other \
                 machines refuse the console's microphone (no secure context); set `tls = true` (a self-signed \
                 certificate is made on first start) or listen on 127.0.0.1",
                hub.listen
            ),
        );
    }
    if let Some(up) = config.uplink.as_ref().filter(|u| u.kind == UplinkKind::Hub) {
        if let Some(host) = up.url.strip_prefix("ws://").or_else(|| up.url.strip_prefix("http://")) {
            let host = host.split('/').next().unwrap_or_default();
            if !host_is_loopback(host) {
                warn(
                    "uplink.url",
                    "unencrypted hub link (ws://): the token and every floor message cross the network in clear, \
                     and anyone on the path can talk as this box; use wss:// (with `fingerprint` or `ca_file`)"
                        .into(),
                );
            }
        }
    }
    let floor_host = fleet.is_some_and(|u| u.floor_hub.is_none());
    let rooms = config.channel.iter().filter_map(|(n, c)| Some((n, c.janus.as_ref().filter(|_| fleet.is_some())?)));
    for (name, janus) in rooms {
        if janus.room == 1234 {
            warn(
                &format!("channel.{name}.janus.room"),
                "room 1234 is Debian's stock VideoRoom demo room (secret `adminpwd`, no PIN), which the fleet \
                 refuses: use a room id of your own"
                    .into(),
            );
        }
        if janus.pin_file.is_none() {
            warn(
                &format!("channel.{name}.janus"),
                "no pin_file: anyone who reaches Janus can join the room, hear the channel and talk into it; give \
                 every box on the channel the same PIN"
                    .into(),
            );
        }
        if floor_host && janus.secret_file.is_none() {
            warn(
                &format!("channel.{name}.janus"),
                "no secret_file on the floor host: it cannot mute whoever talks without the floor, and anyone may \
                 mute, kick or destroy in the room"
                    .into(),
            );
        }
    }
    warnings
}

/// `localhost`, 127.0.0.0/8 or ::1, with or without a port.
fn host_is_loopback(host: &str) -> bool {
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    if let Ok(addr) = host.parse::<std::net::SocketAddr>() {
        return addr.ip().is_loopback();
    }
    host.split(':').next() == Some("localhost")
}

/// What the config leaves off on purpose, as `file:line:column: key: note: …` lines: a box with
/// `[mqtt]` and neither a fleet key nor `insecure_unsigned` refuses every command that could key
/// a radio or lock others out (safe, but the operator may expect `remote_ptt` to work).
pub fn notes(config: &Config, text: &str, file: &str) -> Vec<String> {
    let mut notes = Vec::new();
    if config.mqtt.as_ref().is_some_and(|m| m.fleet_key_file.is_none() && !m.insecure_unsigned) {
        let (line, column) = position_of(text, file, "mqtt");
        let allowed = crate::fleet::auth::KEYLESS_COMMANDS.join(", ");
        notes.push(format!(
            "{file}:{line}:{column}: mqtt: note: no fleet_key_file: MQTT commands that could key a radio or lock \
             others out (remote_ptt, tx_inhibit, set_channel, desk, restart) are refused as `unauthorized`; only \
             {allowed} run. To use them, {}",
            super::MAKE_FLEET_KEY
        ));
    }
    notes
}

fn position_of(text: &str, file: &str, key: &str) -> (usize, usize) {
    let (doc, _) = toml::de::DeTable::parse_recoverable(text);
    let index = super::spans::Index::build(doc.get_ref(), text);
    let report = super::spans::Report::new(file, text, index);
    super::spans::position(text, report.offset_of(key))
}

/// What a radio tech wants to confirm at a glance: which radio is on which channel, where COR
/// comes from, which pin keys the radio, and which timers were changed from the defaults.
pub fn summary(config: &Config) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "device:   {}", config.device_id);
    let channels: Vec<String> = config
        .channel
        .iter()
        .map(|(name, c)| match &c.label {
            Some(label) => format!("{name} (\"{label}\")"),
            None => name.clone(),
        })
        .collect();
    let _ = writeln!(s, "channels: {}", channels.join(", "));
    for (name, port) in &config.port {
        match port {
            PortConfig::Radio(r) => {
                let _ = writeln!(
                    s,
                    "port {name}: radio on channel {}{}",
                    r.channel,
                    if r.duplex { ", full duplex" } else { "" }
                );
                let vox_text = |v: &Option<super::VoxSettings>| match v {
                    Some(v) => format!("VOX, opens at {} dBFS, closes at {} dBFS", v.open_dbfs, v.close_dbfs),
                    None => "VOX, default levels".into(),
                };
                let cor = match (&r.cor, &r.vox) {
                    (Some(c), vox) => {
                        let base = c.line.as_ref().map(line_text).or_else(|| vox.is_some().then(|| vox_text(vox)));
                        match (base, c.ctcss) {
                            (Some(b), None) => b,
                            (Some(b), Some(t)) => {
                                let how = if c.combine == super::CorCombine::Either { "or" } else { "and" };
                                format!("{b} {how} CTCSS {t:.1} Hz")
                            }
                            (None, Some(t)) => format!("CTCSS {t:.1} Hz"),
                            (None, None) => "none".into(),
                        }
                    }
                    (None, vox) => vox_text(vox),
                };
                let _ = writeln!(s, "  COR:     {cor}");
                let _ = writeln!(s, "  PTT:     {}", line_text(&r.ptt));
                if let Some(emergency) = &r.emergency {
                    let _ = writeln!(s, "  emergency: {}", line_text(emergency));
                }
                if let Some(inhibit) = &r.inhibit {
                    let _ = writeln!(s, "  inhibit: {}", line_text(inhibit));
                }
                let _ = writeln!(s, "  timers:  {}", changed_timers(&r.keying));
            }
            PortConfig::Desk(d) => {
                let _ = writeln!(s, "port {name}: desk on channels {}", d.channels.join(", "));
                if let Some(ptt) = &d.ptt {
                    let _ = writeln!(s, "  PTT:     {}", line_text(ptt));
                }
                for (what, lines) in [("buttons", &d.buttons), ("LEDs", &d.leds)] {
                    if !lines.is_empty() {
                        let list: Vec<String> = lines.iter().map(|(n, l)| format!("{n} {}", line_text(l))).collect();
                        let _ = writeln!(s, "  {:<9}{}", format!("{what}:"), list.join(", "));
                    }
                }
            }
        }
    }
    let hub = config.hub.as_ref().map_or("none".into(), |h| {
        let scheme = if h.tls_on() { "https" } else { "http" };
        let mut line = format!("{scheme}://{}, {} token(s)", h.listen, h.token.len());
        if let Some(source) = h.cert_source() {
            use crate::net::tls::{current_fingerprint, CertSource};
            let what = match &source {
                CertSource::Files { cert, .. } => cert.display().to_string(),
                CertSource::SelfSigned { dir, .. } => format!("self-signed, in {}", dir.display()),
            };
            match current_fingerprint(&source) {
                Ok(Some(fp)) => {
                    let _ = write!(line, "\n  TLS certificate: {what}\n  SHA-256 fingerprint: {fp}");
                }
                Ok(None) => {
                    let _ = write!(line, "\n  TLS certificate: {what} (made on the first start; run check again then)");
                }
                Err(e) => {
                    let _ = write!(line, "\n  TLS certificate: {what}: {e}");
                }
            }
        }
        if let Some(r) = &h.redirect_listen {
            let _ = write!(line, "\n  HTTP on {r} redirects to HTTPS");
        }
        if !h.public_addresses.is_empty() {
            let _ = write!(line, "\n  public addresses: {}", h.public_addresses.join(", "));
        }
        if let Some(t) = &h.ice_tcp_listen {
            let _ = write!(line, "\n  ICE-TCP on {t}");
        }
        for s in &h.ice_servers {
            let creds = if s.secret_file.is_some() { " (TURN credentials for consoles)" } else { "" };
            let _ = write!(line, "\n  ICE server: {}{creds}", s.urls.join(", "));
        }
        line
    });
    let uplink = config.uplink.as_ref().map_or("none".into(), |u| {
        let kind = match u.kind {
            UplinkKind::Hub => "roipd hub",
            UplinkKind::Janus => "Janus",
        };
        format!("{kind} at {}", u.url)
    });
    let mqtt =
        config.mqtt.as_ref().map_or("none".into(), |m| format!("{}, metrics every {} s", m.url, m.metrics_interval_s));
    let _ = writeln!(s, "hub:      {hub}\nuplink:   {uplink}\nmqtt:     {mqtt}");
    s
}

fn line_text(l: &LineConfig) -> String {
    let mut notes = Vec::new();
    if l.active_low {
        notes.push("active low".to_string());
    }
    match l.bias {
        Bias::AsIs => {}
        Bias::Disabled => notes.push("bias disabled".into()),
        Bias::PullUp => notes.push("pull-up".into()),
        Bias::PullDown => notes.push("pull-down".into()),
    }
    if notes.is_empty() {
        l.line.clone()
    } else {
        format!("{} ({})", l.line, notes.join(", "))
    }
}

fn changed_timers(t: &KeyingTimers) -> String {
    let defaults = timers(&KeyingTimers::default());
    let changed: Vec<String> = timers(t)
        .into_iter()
        .zip(defaults)
        .filter(|((_, value, _), (_, default, _))| value != default)
        .map(|((name, value, _), (_, default, _))| format!("{name} = {value} (default {default})"))
        .collect();
    if changed.is_empty() {
        "defaults".into()
    } else {
        changed.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    #[test]
    fn summary_names_ports_lines_and_changed_timers() {
        let text = r#"
device_id = "box"
[channel.ops]
label = "Operations"
[port.r1]
kind = "radio"
channel = "ops"
cor = { line = "rppal:17", active_low = true, bias = "pull-up" }
ptt = { line = "rppal:27" }
keying = { tx_delay_ms = 300, tot_ms = 120000 }
[port.d1]
kind = "desk"
channels = ["ops"]
buttons."ptt.ops" = { line = "sim:b1" }
"#;
        let s = summary(&parse_str(text, "t.toml").unwrap());
        for want in [
            "device:   box",
            "channels: ops (\"Operations\")",
            "port r1: radio on channel ops",
            "COR:     rppal:17 (active low, pull-up)",
            "PTT:     rppal:27",
            "timers:  tx_delay_ms = 300 (default 500), tot_ms = 120000 (default 180000)",
            "port d1: desk on channels ops",
            "  buttons: ptt.ops sim:b1",
            "hub:      none",
        ] {
            assert!(s.contains(want), "missing {want:?} in\n{s}");
        }
    }
}
