//! Pass 3: rules serde cannot express. Runs on whatever pass 2 could build, and looks at the
//! file itself (through the span index) where the parsed value would hide what was written,
//! e.g. whether `cor` was given at all.
use std::collections::{BTreeSet, HashMap};
use std::ops::RangeInclusive;

use super::spans::Report;
use super::{Config, KeyingTimers, LineConfig, PortConfig, RadioPortConfig};
use crate::gpio::LineSpec;

/// Each keying timer with its value and allowed range (the ranges documented on [`KeyingTimers`]).
pub(crate) fn timers(t: &KeyingTimers) -> [(&'static str, u64, RangeInclusive<u64>); 10] {
    [
        ("cor_debounce_ms", t.cor_debounce_ms, 0..=500),
        ("min_keyup_ms", t.min_keyup_ms, 0..=1000),
        ("squelch_hang_ms", t.squelch_hang_ms, 0..=3000),
        ("flap_window_ms", t.flap_window_ms, 500..=10_000),
        ("flap_max_changes", u64::from(t.flap_max_changes), 2..=100),
        ("rx_timeout_ms", t.rx_timeout_ms, 10_000..=3_600_000),
        ("tx_delay_ms", t.tx_delay_ms, 0..=1000),
        ("tx_hang_ms", t.tx_hang_ms, 0..=30_000),
        ("tot_ms", t.tot_ms, 1000..=3_600_000),
        ("no_audio_ms", t.no_audio_ms, 1000..=60_000),
    ]
}

pub(super) fn validate(config: &Config, r: &mut Report) {
    if r.index.get("device_id").is_some() && !r.has_error("device_id") && !valid_device_id(&config.device_id) {
        r.key(
            "device_id",
            format!("`{}` is not a valid device id: lowercase letters, digits, `_` and `-`, starting with a letter or digit, at most 64 characters", config.device_id),
        );
    }

    if let Err(e) = super::parse_log_filter(&config.log.level) {
        r.key("log.level", e);
    }

    // Names as written in the file: a channel whose body has an error still exists. When
    // `channel` itself is broken (already reported) references cannot be judged.
    let channels: Option<BTreeSet<String>> =
        (!r.has_error("channel")).then(|| r.index.children("channel").map(str::to_string).collect());
    if channels.as_ref().is_some_and(BTreeSet::is_empty) {
        r.key("channel", "no channels defined: add at least one `[channel.NAME]`");
    }

    for (name, channel) in &config.channel {
        // Channel names travel in hub signaling, MQTT topics and Janus displays: one rule for all.
        if !crate::net::protocol::is_valid_name(name) {
            r.key(
                &format!("channel.{name}"),
                format!(
                    "`{name}` is not a valid channel name: lowercase letters, digits, `_` and `-`, starting with a letter or digit, at most {} characters",
                    crate::net::protocol::MAX_NAME_LEN
                ),
            );
        }
        for (field, value, range) in
            [("max_talk_ms", channel.max_talk_ms, 1000..=3_600_000), ("no_media_ms", channel.no_media_ms, 500..=60_000)]
        {
            if !range.contains(&value) {
                let (lo, hi) = range.into_inner();
                r.key(&format!("channel.{name}.{field}"), format!("{value} ms is out of range {lo}-{hi} ms"));
            }
        }
    }

    let mut lines = Vec::new();
    for (name, port) in &config.port {
        let path = format!("port.{name}");
        match port {
            PortConfig::Radio(radio) => radio_port(&path, radio, &channels, &mut lines, r),
            PortConfig::Desk(desk) => super::desk::validate(&path, desk, &channels, &mut lines, r),
        }
    }
    lines.extend(config.gpio.status_led.iter().map(|l| ("gpio.status_led".to_string(), l)));
    gpio_lines(lines, r);

    super::net::validate(config, &channels, r);
    super::fleet::validate(config, r);
    if let Some(record) = &config.record {
        super::record::validate(record, &channels, r);
    }
}

/// `[a-z0-9][a-z0-9_-]{0,63}`: it ends up in MQTT topics, so no `/`, `+`, `#` or spaces.
pub(super) fn valid_device_id(id: &str) -> bool {
    let ok = |c: char, first: bool| c.is_ascii_lowercase() || c.is_ascii_digit() || (!first && (c == '_' || c == '-'));
    (1..=64).contains(&id.len()) && id.chars().enumerate().all(|(i, c)| ok(c, i == 0))
}

fn radio_port<'c>(
    path: &str,
    radio: &'c RadioPortConfig,
    channels: &Option<BTreeSet<String>>,
    lines: &mut Vec<(String, &'c LineConfig)>,
    r: &mut Report,
) {
    check_channel(&format!("{path}.channel"), None, &radio.channel, channels, r);
    super::audio::validate(path, &radio.audio, r);

    // Presence in the file, not the parsed value: a `cor` with a type error was still meant as COR.
    let (cor, vox) = (format!("{path}.cor"), format!("{path}.vox"));
    match (r.index.get(&cor).is_some(), r.index.get(&vox).is_some()) {
        (false, false) => {
            r.key(&cor, format!("a radio port needs a COR source: a `cor` line or a `[{path}.vox]` table"))
        }
        // VOX may join a CTCSS tone (`cor = { ctcss = ... }` without a line), not a line.
        (true, true) if radio.cor.as_ref().is_none_or(|c| c.line.is_some() || c.ctcss.is_none()) => r.key(
            &vox,
            "set either a `cor` line or `vox` as the COR source, not both (VOX may join `cor = { ctcss = ... }`)",
        ),
        _ => {}
    }
    if let Some(c) = &radio.cor {
        if c.line.is_none() && c.ctcss.is_none() {
            r.key(&cor, "`cor` needs a `line`, a `ctcss` tone or both");
        }
        if let Some(t) = c.ctcss {
            if radio.audio.capture.is_none() {
                r.key(
                    &format!("{cor}.ctcss"),
                    format!("CTCSS is decoded from the receive audio: set `[{path}.audio] capture`"),
                );
            }
            if crate::dsp::ctcss::standard_tone(t).is_none() {
                r.key(
                    &format!("{cor}.ctcss"),
                    format!("{t} Hz is not one of the 50 standard CTCSS tones (67.0-254.1 Hz)"),
                );
            }
        }
    }

    if let Some(t) = radio.tx_ctcss {
        if radio.audio.playback.is_none() {
            r.key(
                &format!("{path}.tx_ctcss"),
                format!("the tone is sent in the transmit audio: set `[{path}.audio] playback`"),
            );
        }
        if crate::dsp::ctcss::standard_tone(t).is_none() {
            r.key(
                &format!("{path}.tx_ctcss"),
                format!("{t} Hz is not one of the 50 standard CTCSS tones (67.0-254.1 Hz)"),
            );
        }
    }
    if !(-30.0..=-6.0).contains(&radio.tx_ctcss_db) {
        r.key(&format!("{path}.tx_ctcss_db"), format!("{} dB is out of range -30..-6 dB", radio.tx_ctcss_db));
    }
    if let Some(d) = &radio.dtmf {
        let dtmf = format!("{path}.dtmf");
        if radio.audio.capture.is_none() {
            r.key(&dtmf, format!("DTMF is decoded from the receive audio: set `[{path}.audio] capture`"));
        }
        if let Some(pin) = &d.pin {
            if !(1..=8).contains(&pin.len()) || !pin.chars().all(|c| c.is_ascii_digit()) {
                r.key(&format!("{dtmf}.pin"), "the PIN is 1-8 digits 0-9");
            }
        }
        if !(500..=30_000).contains(&d.timeout_ms) {
            r.key(&format!("{dtmf}.timeout_ms"), format!("{} ms is out of range 500-30000 ms", d.timeout_ms));
        }
        if !(-40.0..=0.0).contains(&d.reply_dbfs) {
            r.key(&format!("{dtmf}.reply_dbfs"), format!("{} dBFS is out of range -40-0 dBFS", d.reply_dbfs));
        }
        if d.channels.len() > 99 {
            r.key(&format!("{dtmf}.channels"), "at most 99 channels (two digits pick one)");
        }
        for (i, c) in d.channels.iter().enumerate() {
            check_channel(&format!("{dtmf}.channels"), Some(i), c, channels, r);
        }
        match d.command_table() {
            Err(e) => r.key(&format!("{dtmf}.commands"), e),
            Ok(table) => {
                if let Err(e) = crate::core::dtmf_command::check_commands(&table) {
                    r.key(&format!("{dtmf}.commands"), e);
                }
                for (_, action) in &table {
                    if let crate::core::dtmf_command::DtmfAction::SetChannel(c) = action {
                        check_channel(&format!("{dtmf}.commands"), None, c, channels, r);
                    }
                }
            }
        }
    }

    for (field, value, range) in timers(&radio.keying) {
        if !range.contains(&value) {
            let unit = if field.ends_with("_ms") { " ms" } else { "" };
            let (lo, hi) = range.into_inner();
            r.key(&format!("{path}.keying.{field}"), format!("{value}{unit} is out of range {lo}-{hi}{unit}"));
        }
    }
    // The no-audio guard counts from the last channel audio through the TX hang: a hang as long
    // as the guard would be cut after every over. Only a guard written in the file can be too
    // short; the default one grows with the hang (`RadioPortConfig::keying_config`), so a config
    // from before the guard existed still starts.
    let (hang, guard) = (radio.keying.tx_hang_ms, radio.keying.no_audio_ms);
    let (hang_key, guard_key) = (format!("{path}.keying.tx_hang_ms"), format!("{path}.keying.no_audio_ms"));
    if hang >= guard && r.index.get(&guard_key).is_some() && !r.has_error(&hang_key) && !r.has_error(&guard_key) {
        r.key(&guard_key, format!("tx_hang_ms ({hang} ms) must be shorter than no_audio_ms ({guard} ms): the no-audio guard counts through the hang"));
    }

    if let Some(v) = &radio.vox {
        if !(-80.0..=0.0).contains(&v.open_dbfs) {
            r.key(&format!("{vox}.open_dbfs"), format!("{} dBFS is out of range -80-0 dBFS", v.open_dbfs));
        }
        // Written as a comparison that must be Less so NaN fails it too.
        if v.close_dbfs.partial_cmp(&v.open_dbfs) != Some(std::cmp::Ordering::Less) {
            r.key(
                &format!("{vox}.close_dbfs"),
                format!("must be below open_dbfs ({} dBFS), or VOX never closes", v.open_dbfs),
            );
        }
    }

    lines.extend(radio.cor.iter().filter_map(|c| c.line.as_ref()).map(|l| (cor.clone(), l)));
    lines.push((format!("{path}.ptt"), &radio.ptt));
    lines.extend(radio.inhibit.iter().map(|l| (format!("{path}.inhibit"), l)));
    lines.extend(radio.emergency.iter().map(|l| (format!("{path}.emergency"), l)));
}

/// `element` is the index when `path` is an array of channel names.
pub(super) fn check_channel(
    path: &str,
    element: Option<usize>,
    chan: &str,
    channels: &Option<BTreeSet<String>>,
    r: &mut Report,
) {
    let Some(channels) = channels.as_ref().filter(|c| !c.contains(chan)) else { return };
    let defined = channels.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
    let message = format!("unknown channel `{chan}` (defined: {})", if defined.is_empty() { "none" } else { &defined });
    match element {
        Some(i) => r.element(path, i, message),
        None => r.key(path, message),
    }
}

/// Every line name must parse, and no line may be used twice: two ports driving one PTT pin
/// would key a radio outside the rules. `lines` holds (key of the line table, line).
fn gpio_lines(mut lines: Vec<(String, &LineConfig)>, r: &mut Report) {
    let key = |path: &str| format!("{path}.line");
    // File order, so the "second use" is the later one in the file.
    lines.sort_by_cached_key(|(path, _)| r.offset_of(&key(path)));
    let mut first_use: HashMap<&str, String> = HashMap::new();
    for (path, line) in lines {
        let key = key(&path);
        if let Err(e) = LineSpec::parse(&line.line) {
            r.key(&key, e.to_string());
        } else if let Some(first) = first_use.get(line.line.as_str()) {
            r.key(&key, format!("line `{}` is already used by {first}", line.line));
        } else {
            first_use.insert(&line.line, key);
        }
    }
}

/// The files the config names (secrets, keys, certificates), read exactly as the daemon reads
/// them at start-up: `roipd check` and `roipd run` give the same verdict. Only for a file on
/// disk ([`super::load_file`]); [`super::parse_str`] judges the text alone.
pub(super) fn files(config: &Config, r: &mut Report) {
    use super::secret::read_secret;
    use crate::net::protocol::MAX_TOKEN_LEN;
    use std::path::Path;

    let token_len = |secret: &str| {
        let n = secret.trim().len();
        (!(1..=MAX_TOKEN_LEN).contains(&n))
            .then(|| format!("the token is {n} bytes: tokens are 1-{MAX_TOKEN_LEN} bytes (the hub compares no more)"))
    };
    if let Some(hub) = &config.hub {
        for (i, s) in hub.ice_servers.iter().enumerate() {
            if let Some(f) = &s.secret_file {
                if let Err(e) = read_secret(Path::new(f)) {
                    r.element_key(
                        "hub.ice_servers",
                        i,
                        &format!("hub.ice_servers[{i}].secret_file"),
                        format!("{f}: {e}"),
                    );
                }
            }
        }
        let mut tokens = Vec::new();
        let mut failed = false;
        let mut seen: HashMap<String, &str> = HashMap::new();
        for (name, t) in &hub.token {
            let key = format!("hub.token.{name}.secret_file");
            match read_secret(Path::new(&t.secret_file)) {
                Ok(secret) => {
                    if let Some(e) = token_len(&secret) {
                        r.key(&key, format!("{}: {e}", t.secret_file));
                        failed = true;
                    } else if let Some(first) = seen.insert(secret.trim().to_string(), name) {
                        r.key(&key, format!("{}: the same secret as hub.token.{first}", t.secret_file));
                        failed = true;
                    }
                    tokens.push(crate::net::HubToken {
                        name: name.clone(),
                        secret,
                        channels: t.channels.clone(),
                        max_priority: t.max_priority,
                    });
                }
                Err(e) => {
                    r.key(&key, e);
                    failed = true;
                }
            }
        }
        // Whatever else the hub refuses before it binds, said at `[hub]`: nothing may pass
        // here that stops the daemon later.
        if !failed && r.errors.is_empty() {
            if let Ok(listen) = hub.listen.parse() {
                let mut options = crate::net::HubOptions::new(listen);
                options.tokens = tokens;
                options.channels = config
                    .channel
                    .iter()
                    .map(|(name, c)| crate::net::HubChannel {
                        name: name.clone(),
                        label: c.label.clone().unwrap_or_else(|| name.clone()),
                    })
                    .collect();
                if let Err(e) = options.check() {
                    r.key("hub", e.to_string());
                }
            }
        }
    }
    // A self-signed certificate is made by the daemon on its first start, not by a check.
    if let Some(source) = config.hub.as_ref().and_then(|h| h.cert_source()) {
        if let Err(e) = crate::net::tls::check(&source) {
            // Without `state_dir` in the file, the error is said at `[hub] tls`.
            let key = if e.key == "hub.state_dir" && config.hub.as_ref().is_some_and(|h| h.state_dir.is_none()) {
                "hub.tls".to_string()
            } else {
                e.key.clone()
            };
            r.key(&key, e.to_string());
        }
    }
    if let Some(uplink) = &config.uplink {
        if let Some(trust @ crate::net::tls::HubTrust::Ca(_)) = uplink.hub_trust() {
            if let Err(e) = crate::net::tls::client(&trust) {
                r.key(&e.key, e.to_string());
            }
        }
        if let (super::UplinkKind::Hub, Some(file)) = (uplink.kind, &uplink.token_file) {
            match read_secret(Path::new(file)) {
                Ok(token) => {
                    if let Some(e) = token_len(&token) {
                        r.key("uplink.token_file", format!("{file}: {e}"));
                    }
                }
                Err(e) => r.key("uplink.token_file", e),
            }
        }
        if uplink.kind == super::UplinkKind::Janus && r.errors.is_empty() {
            // The Janus options read every secret and PIN file; their errors start with the key.
            if let Err(e) = crate::net::janus::janus_options(config) {
                let (key, message) = e.split_once(": ").unwrap_or(("uplink", &e));
                r.key(key, message.to_string());
            }
        }
    }
    if let Some(mqtt) = &config.mqtt {
        if let Err(e) = crate::fleet::client::check_files(mqtt) {
            let (key, message) = e.config_key();
            r.key(&key, message);
        }
    }
}

pub(super) fn check_url(path: &str, url: &str, schemes: &[&str], r: &mut Report) {
    let has_scheme =
        |s: &&str| url.strip_prefix(s).and_then(|u| u.strip_prefix("://")).is_some_and(|host| !host.is_empty());
    if !schemes.iter().any(has_scheme) {
        let allowed = schemes.iter().map(|s| format!("{s}://")).collect::<Vec<_>>().join(", ");
        r.key(path, format!("`{url}` must start with one of {allowed} followed by a host"));
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse_str;

    const BASE: &str = r#"
device_id = "box-1"
[channel.ops]
[channel.fire]
[port.r1]
kind = "radio"
channel = "ops"
cor = { line = "sim:cor1" }
ptt = { line = "sim:ptt1" }
"#;

    /// `line:key message` of every error.
    fn errors(extra: &str) -> Vec<String> {
        match parse_str(&format!("{BASE}{extra}"), "t.toml") {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| format!("{}:{} {}", e.line, e.key, e.message)).collect(),
        }
    }

    #[test]
    fn base_is_valid() {
        assert_eq!(errors(""), Vec::<String>::new());
    }

    #[test]
    fn log_level_typo_is_an_error() {
        let base_lines = BASE.lines().count();
        assert_eq!(errors("[log]\nlevel = \"roipd=debug,warn\"\n"), Vec::<String>::new());
        let e = errors("[log]\nlevel = \"loud\"\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with(&format!("{}:log.level ", base_lines + 2)), "{e:?}");
    }

    #[test]
    fn device_id_pattern() {
        for good in ["a", "pi4-gw_01", &"x".repeat(64)] {
            assert!(super::valid_device_id(good), "{good}");
        }
        for bad in ["", "-a", "_a", "Pi", "a/b", "a b", &"x".repeat(65)] {
            assert!(!super::valid_device_id(bad), "{bad}");
        }
        let e = parse_str(&BASE.replace("box-1", "Box 1"), "t.toml").unwrap_err();
        assert_eq!((e.0[0].line, e.0[0].key.as_str()), (2, "device_id"));
        // A wrong type is reported once, not again as a bad pattern.
        let e = parse_str(&BASE.replace("\"box-1\"", "7"), "t.toml").unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
    }

    #[test]
    fn timer_ranges_at_both_ends() {
        let ok = "keying = { cor_debounce_ms = 500, flap_window_ms = 500, flap_max_changes = 100, rx_timeout_ms = 3600000, tot_ms = 1000, no_audio_ms = 60000 }\n";
        assert_eq!(errors(ok), Vec::<String>::new());
        let ok = "keying = { no_audio_ms = 1000, tx_hang_ms = 999 }\n";
        assert_eq!(errors(ok), Vec::<String>::new());
        let bad =
            "[port.r1.keying]\ncor_debounce_ms = 501\nflap_max_changes = 1\nrx_timeout_ms = 9999\ntot_ms = 3600001\nno_audio_ms = 999\n";
        assert_eq!(
            errors(bad),
            [
                "11:port.r1.keying.cor_debounce_ms 501 ms is out of range 0-500 ms",
                "12:port.r1.keying.flap_max_changes 1 is out of range 2-100",
                "13:port.r1.keying.rx_timeout_ms 9999 ms is out of range 10000-3600000 ms",
                "14:port.r1.keying.tot_ms 3600001 ms is out of range 1000-3600000 ms",
                "15:port.r1.keying.no_audio_ms 999 ms is out of range 1000-60000 ms",
            ]
        );
    }

    #[test]
    fn the_tx_hang_must_be_shorter_than_the_no_audio_guard() {
        // The default guard grows with the hang; a guard written in the file must be longer.
        assert_eq!(errors("[port.r1.keying]\ntx_hang_ms = 30000\n"), Vec::<String>::new());
        let e = errors("[port.r1.keying]\ntx_hang_ms = 20000\nno_audio_ms = 20000\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("12:port.r1.keying.no_audio_ms tx_hang_ms (20000 ms)"), "{e:?}");
        assert_eq!(errors("[port.r1.keying]\ntx_hang_ms = 30000\nno_audio_ms = 30001\n"), Vec::<String>::new());
    }

    #[test]
    fn cor_source_and_vox_levels() {
        let both = "[port.r1.vox]\nopen_dbfs = 3\nclose_dbfs = 3\n";
        let e = errors(both);
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].starts_with("10:port.r1.vox set either a `cor` line or `vox`"), "{e:?}");
        assert!(e[1].starts_with("11:port.r1.vox.open_dbfs 3 dBFS is out of range"), "{e:?}");
        assert!(e[2].starts_with("12:port.r1.vox.close_dbfs must be below"), "{e:?}");
        let neither = "[port.r2]\nkind = \"radio\"\nchannel = \"ops\"\nptt = { line = \"sim:ptt2\" }\n";
        let e = errors(neither);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("10:port.r2.cor a radio port needs a COR source"), "{e:?}");
    }

    fn radio(cor: &str, extra: &str) -> String {
        format!("[port.r2]\nkind = \"radio\"\nchannel = \"ops\"\ncor = {cor}\nptt = {{ line = \"sim:ptt2\" }}\naudio = {{ capture = \"sim:silence\" }}\n{extra}")
    }

    #[test]
    fn dtmf_commands_and_ctcss_encode_are_checked() {
        let ok = "[port.r2.dtmf]\npin = \"0815\"\nchannels = [\"ops\", \"fire\"]\ncommands = { \"*1\" = \"select_channel\", \"*31\" = \"set_channel fire\", \"##\" = \"cancel\" }\n";
        assert_eq!(errors(&radio("{ line = \"sim:c2\" }", ok)), Vec::<String>::new());
        let bad = "[port.r2.dtmf]\npin = \"12a\"\nchannels = [\"ops\", \"nowhere\"]\ntimeout_ms = 10\ncommands = { \"*1\" = \"select_channel\", \"*12\" = \"status\" }\n";
        let e = errors(&radio("{ line = \"sim:c2\" }", bad));
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e.iter().any(|m| m.contains("dtmf.pin the PIN is 1-8 digits")), "{e:?}");
        assert!(e.iter().any(|m| m.contains("unknown channel `nowhere`")), "{e:?}");
        assert!(e.iter().any(|m| m.contains("timeout_ms 10 ms is out of range")), "{e:?}");
        assert!(e.iter().any(|m| m.contains("one prefix starts the other")), "{e:?}");
        let e = errors(&radio("{ line = \"sim:c2\" }", "[port.r2.dtmf]\ncommands = { \"*1\" = \"reboot\" }\n"));
        assert!(e.len() == 1 && e[0].contains("is not a DTMF action"), "{e:?}");
        // CTCSS encode: a standard tone, a playback device, a level in range.
        let e = errors(
            &radio("{ line = \"sim:c2\" }", "")
                .replace("channel = \"ops\"\n", "channel = \"ops\"\ntx_ctcss = 101.0\ntx_ctcss_db = -3.0\n"),
        );
        assert_eq!(e.len(), 3, "{e:?}");
    }

    #[test]
    fn ctcss_cor_alone_with_a_line_or_with_vox() {
        use crate::config::PortConfig;
        use crate::core::keying::CtcssCor;
        let ctcss = |cor: &str, extra: &str| {
            let c = parse_str(&format!("{BASE}{}", radio(cor, extra)), "t.toml").unwrap();
            let PortConfig::Radio(r) = &c.port["r2"] else { panic!("not a radio") };
            r.keying_config().ctcss
        };
        assert_eq!(ctcss("{ ctcss = 100.0 }", ""), Some(CtcssCor::Only));
        assert_eq!(ctcss("{ line = \"sim:c2\", ctcss = 100.0 }", ""), Some(CtcssCor::Both));
        assert_eq!(ctcss("{ line = \"sim:c2\", ctcss = 67, combine = \"either\" }", ""), Some(CtcssCor::Either));
        assert_eq!(ctcss("{ ctcss = 254.1 }", "[port.r2.vox]\n"), Some(CtcssCor::Both));
        assert_eq!(ctcss("{ line = \"sim:c2\" }", ""), None);

        let e = errors(&radio("{ ctcss = 101.0 }", ""));
        assert_eq!(e, ["13:port.r2.cor.ctcss 101 Hz is not one of the 50 standard CTCSS tones (67.0-254.1 Hz)"]);
        let e = errors(&radio("{ combine = \"both\" }", ""));
        assert_eq!(e, ["13:port.r2.cor `cor` needs a `line`, a `ctcss` tone or both"]);
        let e = errors(&radio("{ line = \"sim:c2\", ctcss = 100.0 }", "[port.r2.vox]\n"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("16:port.r2.vox set either a `cor` line or `vox`"), "{e:?}");
        let no_capture = format!("{BASE}[port.r2]\nkind = \"radio\"\nchannel = \"ops\"\ncor = {{ ctcss = 100.0 }}\nptt = {{ line = \"sim:ptt2\" }}\n");
        let e: Vec<String> = match parse_str(&no_capture, "t.toml") {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| format!("{}:{} {}", e.line, e.key, e.message)).collect(),
        };
        assert_eq!(e, ["13:port.r2.cor.ctcss CTCSS is decoded from the receive audio: set `[port.r2.audio] capture`"]);
        let e = errors(&radio("{ ctcss = 100.0, combine = \"any\" }", ""));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("port.r2.cor") && e[0].contains("any"), "{e:?}");
    }

    #[test]
    fn gpio_lines_parse_and_are_used_once() {
        let extra = "[port.d1]\nkind = \"desk\"\nchannels = [\"ops\"]\nptt = { line = \" sim:cor1 \" }\n\
                     leds.busy = { line = \"gpio17\" }\nbuttons.foot = { line = \"sim:ptt1\" }\n";
        assert_eq!(
            errors(extra),
            [
                "13:port.d1.ptt.line line `sim:cor1` is already used by port.r1.cor.line",
                "14:port.d1.leds.busy.line bad line name `gpio17`: expected `backend:line`, e.g. `cdev:gpiochip0:17`",
                "15:port.d1.buttons.foot.line line `sim:ptt1` is already used by port.r1.ptt.line",
            ]
        );
    }

    #[test]
    fn channel_references() {
        let extra = "[port.d1]\nkind = \"desk\"\nchannels = [\"ops\", \"opz\"]\n[port.d2]\nkind = \"desk\"\nchannels = []\n\
                     [hub]\nlisten = \"127.0.0.1:8080\"\ntoken.t1 = { secret_file = \"/x\", channels = [\"*\", \"fyre\"] }\n";
        assert_eq!(
            errors(extra),
            [
                "12:port.d1.channels unknown channel `opz` (defined: `fire`, `ops`)",
                "15:port.d2.channels a desk port needs at least one channel",
                "18:hub.token.t1.channels unknown channel `fyre` (defined: `fire`, `ops`)",
            ]
        );
        let e = parse_str("device_id = \"a\"\n", "t.toml").unwrap_err();
        assert_eq!(e.to_string(), "t.toml:1:1: channel: no channels defined: add at least one `[channel.NAME]`\n");
    }

    #[test]
    fn network_settings() {
        let extra = "[hub]\nlisten = \"localhost:8080\"\n[uplink]\nkind = \"janus\"\nurl = \"https://sfu/janus\"\n\
                     [mqtt]\nurl = \"tcp://broker\"\nmetrics_interval_s = 0\n";
        let keys: Vec<_> = errors(extra).iter().map(|e| e.split(' ').next().unwrap().to_string()).collect();
        // A Janus uplink also needs a room per channel, and its floor a fleet key.
        assert_eq!(
            keys,
            [
                "3:channel.ops",
                "4:channel.fire",
                "11:hub.listen",
                "14:uplink.url",
                "15:mqtt",
                "16:mqtt.url",
                "17:mqtt.metrics_interval_s"
            ]
        );
        let ok = "[hub]\nlisten = \"[::]:8080\"\n[mqtt]\nurl = \"mqtts://b:8883\"\n";
        assert_eq!(errors(ok), Vec::<String>::new());
        let edge = "[uplink]\nkind = \"hub\"\nurl = \"https://hub.example\"\ntoken_file = \"/etc/roipd/token\"\n";
        assert_eq!(errors(edge), Vec::<String>::new());
        // A hub that is also an edge, without a token.
        let both = "[hub]\nlisten = \"[::]:8080\"\n[uplink]\nkind = \"hub\"\nurl = \"https://hub.example\"\n";
        let keys: Vec<_> = errors(both).iter().map(|e| e.split(' ').next().unwrap().to_string()).collect();
        assert_eq!(keys, ["12:uplink.token_file", "13:uplink.kind"]);
    }
}
