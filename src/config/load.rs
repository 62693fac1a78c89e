//! Parsing and validation with `file:line:column: key: message` errors, all of them in one run.
//!
//! Three passes over one `DeTable` tree (every key and value carries its byte span):
//! 1. TOML syntax, with the parser's recovery so several syntax errors show at once. A file with
//!    syntax errors stops here: the recovered tree is too unreliable to judge further.
//! 2. Schema: each section, each `[channel.X]` and each `[port.X]` is deserialized on its own.
//!    When serde fails, the error is reported at the key holding its span, that key is dropped
//!    from a copy of the table and the table is tried again, so one bad port yields all its bad
//!    keys and the other ports are still checked.
//! 3. Semantics (ranges, cross references, GPIO lines) in [`super::validate`].
use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::spans::{Index, Report};
use super::{Config, PortConfig};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `port.radio1.keying.tx_delay_ms`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}: {}", self.file, self.line, self.column, self.key, self.message)
    }
}

/// Every error found in one file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.0 {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Key used for errors that belong to no key (syntax errors between keys).
const SYNTAX_KEY: &str = "syntax";

const TOP_LEVEL_KEYS: [&str; 9] = ["device_id", "log", "gpio", "channel", "port", "hub", "uplink", "mqtt", "record"];

/// Parses and validates the text of a config file. `file` is only used in the error messages.
/// The files the config names (secrets, keys) are not read: [`load_file`] does that too, and
/// is what `roipd check` and `roipd run` use.
pub fn parse_str(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    parse(text, file, false)
}

fn parse(text: &str, file: &str, read_files: bool) -> Result<Config, ConfigErrors> {
    let (doc, syntax_errors) = DeTable::parse_recoverable(text);
    let mut report = Report::new(file, text, Index::build(doc.get_ref(), text));
    if !syntax_errors.is_empty() {
        for e in syntax_errors {
            if report.skip_when_full() {
                continue;
            }
            let span = e.span().unwrap_or(0..0);
            let key = syntax_error_key(&report.index, text, span.clone(), e.message());
            report.at(span.start, &key, e.message());
        }
        return Err(ConfigErrors(report.into_errors()));
    }
    let config = schema(doc.get_ref(), &mut report);
    super::validate::validate(&config, &mut report);
    if read_files {
        super::validate::files(&config, &mut report);
    }
    let errors = report.into_errors();
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The key a syntax error is about: the key it duplicates, or the last key written on its line
/// before it, or else the `[table]` it is in. Best effort: the recovered tree may be partial.
fn syntax_error_key(index: &Index, text: &str, span: std::ops::Range<usize>, message: &str) -> String {
    let section = index.section_at(span.start).map(|e| e.path.as_str());
    if message == "duplicate key" {
        let key = text.get(span).unwrap_or_default().trim();
        return section.map_or(key.to_string(), |s| format!("{s}.{key}"));
    }
    let line_start = text.get(..span.start).and_then(|t| t.rfind('\n')).map_or(0, |i| i + 1);
    match index.last_key_in(line_start..span.start + 1) {
        // A key the parser recovered as empty (`= 3`) leaves a trailing dot.
        Some(e) => e.path.trim_end_matches('.').to_string(),
        None => section.unwrap_or(SYNTAX_KEY).to_string(),
    }
}

/// Largest config file read: a config is a few KB; this only stops a wrong path from eating
/// the box's memory (`/dev/zero`) or blocking (a FIFO).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Reads, parses and validates a config file, and reads every file it names (secrets, keys,
/// certificates) as the daemon will: what passes here starts. `roipd check` and `roipd run`
/// (and a fleet `reload_config`) all come through here.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    load(path).map(|(config, _)| config)
}

/// [`load_file`], also returning the file's text (the daemon reports its hash).
pub fn load(path: &Path) -> Result<(Config, String), ConfigErrors> {
    let name = path.display().to_string();
    let file_error = |line, column, message: String| {
        ConfigErrors(vec![ConfigError { file: name.clone(), line, column, key: "(file)".into(), message }])
    };
    let bytes = super::secret::read_limited(path, MAX_CONFIG_BYTES)
        .map_err(|e| file_error(0, 0, format!("cannot read {e}")))?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            // The valid prefix is UTF-8: count lines and characters in it.
            let before = std::str::from_utf8(valid).unwrap_or_default();
            let (line, column) = super::spans::position(before, before.len());
            let byte = e.as_bytes()[valid.len()];
            return Err(file_error(line, column, format!("invalid UTF-8 (byte 0x{byte:02X}): save the file as UTF-8")));
        }
    };
    let config = parse(&text, &name, true)?;
    Ok((config, text))
}

/// Pass 2. Returns the config with every part that deserialized; the parts that failed are
/// left at their defaults (their errors are in `report`), so pass 3 can still check the rest.
fn schema(root: &DeTable<'_>, report: &mut Report) -> Config {
    let mut config = Config {
        device_id: String::new(),
        log: Default::default(),
        gpio: Default::default(),
        channel: Default::default(),
        port: Default::default(),
        hub: None,
        uplink: None,
        mqtt: None,
        record: None,
    };
    for (key, value) in root.iter() {
        let name = key.get_ref().as_ref();
        match name {
            "device_id" => config.device_id = deserialize(value, name, report).unwrap_or_default(),
            "log" => config.log = deserialize(value, name, report).unwrap_or_default(),
            "gpio" => config.gpio = deserialize(value, name, report).unwrap_or_default(),
            "channel" => {
                for (chan, v) in named_tables(value, name, report) {
                    if let Some(c) = deserialize(v, &format!("channel.{chan}"), report) {
                        config.channel.insert(chan.to_string(), c);
                    }
                }
            }
            "port" => {
                for (port_name, v) in named_tables(value, name, report) {
                    if let Some(p) = port(port_name, v, report) {
                        config.port.insert(port_name.to_string(), p);
                    }
                }
            }
            "hub" => config.hub = deserialize(value, name, report),
            "uplink" => config.uplink = deserialize(value, name, report),
            "mqtt" => config.mqtt = deserialize(value, name, report),
            "record" => config.record = deserialize(value, name, report),
            _ => report.at(
                key.span().start,
                name,
                format!(
                    "unknown key `{name}`, expected one of {}",
                    TOP_LEVEL_KEYS.map(|k| format!("`{k}`")).join(", ")
                ),
            ),
        }
    }
    if root.get("device_id").is_none() {
        report.at(0, "device_id", "missing required key `device_id`");
    }
    config
}

/// The entries of `[channel]` / `[port]`: each must itself be a table.
fn named_tables<'v, 'i>(
    value: &'v Spanned<DeValue<'i>>,
    path: &str,
    report: &mut Report,
) -> Vec<(&'v str, &'v Spanned<DeValue<'i>>)> {
    let DeValue::Table(table) = value.get_ref() else {
        report.at(
            value.span().start,
            path,
            format!("expected tables `[{path}.NAME]`, found a {}", value.get_ref().type_str()),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, v) in table.iter() {
        if v.get_ref().is_table() {
            out.push((key.get_ref().as_ref(), v));
        } else {
            let p = format!("{path}.{}", key.get_ref());
            report.at(v.span().start, &p, format!("expected a table `[{p}]`, found a {}", v.get_ref().type_str()));
        }
    }
    out
}

/// `kind` selects the port type. Dispatching here instead of through a serde internally tagged
/// enum keeps the spans, so errors inside a port still point at their line.
fn port(name: &str, value: &Spanned<DeValue<'_>>, report: &mut Report) -> Option<PortConfig> {
    let path = format!("port.{name}");
    let kind_path = format!("{path}.kind");
    let mut body = value.clone();
    let DeValue::Table(table) = body.get_mut() else { return None };
    let Some(kind) = table.remove("kind") else {
        report.at(value.span().start, &kind_path, "missing required key `kind` (\"radio\" or \"desk\")");
        return None;
    };
    match kind.get_ref().as_str() {
        Some("radio") => deserialize(&body, &path, report).map(PortConfig::Radio),
        Some("desk") => deserialize(&body, &path, report).map(PortConfig::Desk),
        _ => {
            let found = match kind.get_ref().as_str() {
                Some(s) => format!("`{s}`"),
                None => format!("a {}", kind.get_ref().type_str()),
            };
            report.at(
                kind.span().start,
                &kind_path,
                format!("unknown port kind {found}, expected \"radio\" or \"desk\""),
            );
            None
        }
    }
}

/// Deserializes the value at `path`, reporting every bad key under it (see the module doc).
/// `None` when the value could not be built; `Some` may lack keys that were reported and dropped.
fn deserialize<T: DeserializeOwned>(value: &Spanned<DeValue<'_>>, path: &str, report: &mut Report) -> Option<T> {
    let mut value = value.clone();
    let depth = path.split('.').count();
    let mut dropped: Vec<String> = Vec::new();
    loop {
        let err = match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let offset = err.span().map_or(value.span().start, |s| s.start);
        // Keys outside this value cannot hold the error; fall back to the value itself.
        let inside = |p: &str| p.strip_prefix(path).is_some_and(|rest| rest.is_empty() || rest.starts_with('.'));
        let at =
            report.index.innermost(offset).filter(|e| inside(&e.path)).map_or(path.to_string(), |e| e.path.clone());
        if let Some(field) = missing_field(err.message()) {
            let key = format!("{at}.{field}");
            // A key we dropped for being wrong is "missing" now; it was reported already.
            if !dropped.contains(&key) {
                report.at(offset, &key, format!("missing required key `{field}`"));
            }
            return None;
        }
        report.at(offset, &at, friendly(err.message()));
        let relative: Vec<&str> = at.split('.').skip(depth).collect();
        if relative.is_empty() || !remove(&mut value, &relative) {
            return None;
        }
        dropped.push(at);
    }
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.strip_suffix('`')
}

/// Removes the key at `path` (relative to `value`); false if it was not there.
fn remove(value: &mut Spanned<DeValue<'_>>, path: &[&str]) -> bool {
    let DeValue::Table(table) = value.get_mut() else { return false };
    match path {
        [] => false,
        [key] => table.remove(*key).is_some(),
        [key, rest @ ..] => table.get_mut(*key).is_some_and(|v| remove(v, rest)),
    }
}

/// serde speaks Rust; a radio tech reading the error speaks TOML.
fn friendly(message: &str) -> String {
    const WORDS: [(&str, &str); 8] = [
        ("unknown field", "unknown key"),
        ("unknown variant", "unknown value"),
        ("expected u64", "expected a whole number >= 0"),
        ("expected u32", "expected a whole number >= 0"),
        ("expected u16", "expected a whole number 0-65535"),
        ("expected f32", "expected a number"),
        ("expected a map", "expected a table"),
        ("expected a sequence", "expected an array"),
    ];
    let mut m = WORDS.iter().fold(message.to_string(), |m, (from, to)| m.replace(from, to));
    // "expected struct LineConfig": the Rust type name means nothing in the file.
    if let Some(i) = m.find("expected struct ") {
        m.replace_range(i.., "expected a table");
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Bias;

    const GOOD: &str = r#"
device_id = "box1"
[channel.ops]
[port.radio1]
kind = "radio"
channel = "ops"
cor = { line = "sim:cor1", active_low = true, bias = "pull-up" }
ptt = { line = "sim:ptt1" }
keying.tx_delay_ms = 300
"#;

    /// `line:key` of every error, in order.
    fn errors(text: &str) -> Vec<String> {
        match parse_str(text, "t.toml") {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| format!("{}:{}", e.line, e.key)).collect(),
        }
    }

    /// A file of garbage is reported in time linear in its size: the first errors, then how
    /// many more there are (40,000 broken lines took 66 s before the cap, 0.1 s after).
    #[test]
    fn a_flood_of_errors_is_cut_to_the_first_ones_and_a_count() {
        let text = format!("device_id = \"x\"\n{}", "b = = =\n".repeat(5_000));
        let errors = parse_str(&text, "t.toml").unwrap_err().0;
        assert_eq!(errors.len(), super::super::spans::MAX_ERRORS + 1);
        let last = errors.last().unwrap();
        assert!(last.key == "errors" && last.message.contains("more errors not shown"), "{last}");
        assert!(errors[..super::super::spans::MAX_ERRORS].iter().all(|e| e.key != "errors"));
    }

    #[test]
    fn good_config_parses() {
        let c = parse_str(GOOD, "t.toml").unwrap();
        let PortConfig::Radio(r) = &c.port["radio1"] else { panic!("not a radio") };
        assert_eq!(r.keying.tx_delay_ms, 300);
        assert_eq!(r.cor.as_ref().unwrap().line.as_ref().unwrap().bias, Bias::PullUp);
        assert_eq!(r.keying_config().tx_delay.as_millis(), 300);
    }

    /// A config from before the no-audio guard, with a long TX hang, still starts: the default
    /// guard grows with the hang. A guard set in the file is taken as written.
    #[test]
    fn the_default_no_audio_guard_outlasts_a_long_hang() {
        let guard = |keying: &str| {
            let c = parse_str(&GOOD.replace("keying.tx_delay_ms = 300", keying), "t.toml").unwrap();
            let PortConfig::Radio(r) = &c.port["radio1"] else { panic!("not a radio") };
            r.keying_config().no_audio.as_millis()
        };
        assert_eq!(guard("keying.tx_hang_ms = 30000"), 35_000);
        assert_eq!(guard("keying.tx_hang_ms = 1500"), 5_000);
        assert_eq!(guard("keying = { tx_hang_ms = 30000, no_audio_ms = 30001 }"), 30_001);
    }

    #[test]
    fn error_display_format() {
        let text = GOOD.replace("keying.tx_delay_ms = 300", "keying.tx_delay_ms = \"300\"");
        let e = parse_str(&text, "t.toml").unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert!(
            e.to_string().starts_with("t.toml:9:22: port.radio1.keying.tx_delay_ms: invalid type: string \"300\""),
            "{e}"
        );
    }

    #[test]
    fn one_bad_port_reports_all_its_bad_keys_and_other_ports_still_checked() {
        let text = format!(
            "{GOOD}duplex = 1\nmystery = true\n[port.radio1.audio]\ncapture = 5\n\
             [port.radio2]\nkind = \"radio\"\nchannel = \"ops\"\ncor = {{ line = \"sim:c2\", bias = \"up\" }}\nptt = {{ line = \"sim:p2\" }}\n"
        );
        assert_eq!(
            errors(&text),
            [
                "10:port.radio1.duplex",
                "11:port.radio1.mystery",
                "13:port.radio1.audio.capture",
                "17:port.radio2.cor.bias"
            ]
        );
    }

    #[test]
    fn dropped_required_key_is_not_reported_again_as_missing() {
        let text = GOOD.replace("ptt = { line = \"sim:ptt1\" }", "ptt = \"sim:ptt1\"");
        let e = parse_str(&text, "t.toml").unwrap_err();
        assert_eq!(e.to_string(), "t.toml:8:7: port.radio1.ptt: invalid type: string \"sim:ptt1\", expected a table\n");
    }

    #[test]
    fn messages_speak_toml() {
        let text = format!("{GOOD}leds = 3\n[port.d]\nkind = \"desk\"\nchannels = [\"ops\"]\nleds = [1]\n");
        let e = parse_str(&text, "t.toml").unwrap_err();
        let messages: Vec<_> = e.0.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "unknown key `leds`, expected one of `channel`, `cor`, `ptt`, `inhibit`, `emergency`, `audio`, `keying`, `vox`, `duplex`, `priority`, `dtmf`, `tx_ctcss`, `tx_ctcss_db`, `tx_ctcss_tail`",
                "invalid type: sequence, expected a table",
            ]
        );
    }

    #[test]
    fn missing_keys_point_at_their_table() {
        let text = GOOD
            .replace("ptt = { line = \"sim:ptt1\" }", "ptt = { active_low = true }")
            .replace("kind = \"radio\"\n", "");
        assert_eq!(errors(&text), ["4:port.radio1.kind"]);
        let text = GOOD.replace("ptt = { line = \"sim:ptt1\" }", "ptt = { active_low = true }");
        assert_eq!(errors(&text), ["8:port.radio1.ptt.line"]);
        let text = GOOD.replace("ptt = { line = \"sim:ptt1\" }\n", "");
        assert_eq!(errors(&text), ["4:port.radio1.ptt"]);
        assert_eq!(errors("[channel.ops]\n"), ["1:device_id"]);
    }

    #[test]
    fn unknown_kind_and_sections() {
        let text =
            GOOD.replace("kind = \"radio\"", "kind = \"repeater\"") + "[mqqt]\nurl = \"x\"\n[channel.x]\nlable = 1\n";
        assert_eq!(errors(&text), ["5:port.radio1.kind", "10:mqqt", "13:channel.x.lable"]);
        assert_eq!(errors(&GOOD.replace("[channel.ops]", "channel = 5")), ["3:channel"]);
    }

    #[test]
    fn syntax_errors_are_all_reported_and_stop_there() {
        let text = GOOD.replace("tx_delay_ms = 300", "tx_delay_ms = 3 00")
            + "broken = \"unterminated\nport.radio1.tot = 99999999\n";
        let e = errors(&text);
        assert_eq!(e, ["9:port.radio1.keying.tx_delay_ms", "10:port.radio1.broken"]);
        let e = parse_str("a = 1\na = 2\n", "t.toml").unwrap_err();
        assert_eq!((e.0[0].line, e.0[0].key.as_str()), (2, "a"), "{e}");
        assert_eq!(errors(&format!("{GOOD}channel = \"x\"\n= 3\n")), ["10:port.radio1.channel", "11:port.radio1"]);
    }
}
