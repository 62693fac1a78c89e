//! `roipd safe-off`: the last line of defence, run by systemd after every stop (ExecStopPost).
//!
//! It runs after crashes, when the config on disk may be broken, half-written, edited or gone,
//! so it takes the PTT lines from two independent places and releases each line once:
//! 1. the daemon's PTT state file ([`super::ptt_state`]): the lines the daemon actually drove;
//! 2. the config file: a full parse when it is valid; the TOML tree when only the schema or the
//!    values are wrong; else a tolerant scan of its text (any encoding, any line ends, broken
//!    lines skipped) that finds `[port.NAME]` tables and their `ptt` lines.
//!
//! Where both name a line, the state file's active level wins: it is how the line was driven.
//! A desk's `ptt` is a button (an input) and is never driven. Secret files are not read and
//! nothing touches the network.
//!
//! Exit codes: 0 when every line found was released; 1 when a release failed or a line's
//! unkeyed level could not be told; 2 when nothing was found at all (no state file, and no PTT
//! line or valid TOML in the config).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::ExitCode;

use tracing::{error, info, warn};

use super::ptt_state::{self, PttState};
use super::{logging, EXIT_CONFIG, EXIT_FATAL};
use crate::config::{self, Bias, GpioConfig, LineConfig, PortConfig, SimGpioConfig};
use crate::gpio::Gpio;

/// `roipd safe-off CONFIG`: unkey every PTT the daemon run with `CONFIG` drove or the file names.
pub fn safe_off(path: &Path) -> ExitCode {
    logging::init("info");
    let mut released = Released::default();
    let mut found_a_source = false;

    let state_path = ptt_state::path_for(path);
    let from_state = format!("state file {}", state_path.display());
    match PttState::read(&state_path) {
        Ok(Some(state)) => {
            found_a_source = true;
            info!(pid = state.pid, lines = state.lines.len(), "releasing the PTT lines recorded in the {from_state}");
            let lines = state.line_configs().into_iter().map(|(port, line)| (port, Some(line))).collect();
            released.release(state.sim_dir.as_deref(), lines, &from_state);
        }
        Ok(None) => info!("no {from_state}"),
        Err(e) => error!("cannot read the PTT state file: {e}; relying on the config file"),
    }

    match config_ptt_lines(path) {
        Ok(found) => {
            found_a_source |= found.trusted || !found.lines.is_empty();
            let from = format!("config {} ({})", path.display(), found.how);
            if found.lines.is_empty() {
                info!("no radio PTT line in the {from}");
            }
            released.release(found.sim_dir.as_deref(), found.lines, &from);
        }
        Err(e) => warn!("cannot read the config: {e}"),
    }

    info!(released = released.done.len(), failed = released.failed, "safe-off done");
    if released.failed > 0 {
        ExitCode::from(EXIT_FATAL)
    } else if !found_a_source {
        error!("found no PTT line to release: no state file and nothing usable in {}", path.display());
        ExitCode::from(EXIT_CONFIG)
    } else {
        ExitCode::SUCCESS
    }
}

/// Lines released so far, by identity, with the active level they were released at, and the
/// ports they belong to.
#[derive(Default)]
struct Released {
    done: HashMap<String, bool>,
    ports: HashSet<String>,
    failed: usize,
}

impl Released {
    /// Drive each line unkeyed, unless already done. `None`: a PTT line whose unkeyed level
    /// cannot be told (driving a guess could key the radio).
    fn release(&mut self, sim_dir: Option<&str>, lines: Vec<(String, Option<LineConfig>)>, from: &str) {
        let gpio_config =
            GpioConfig { sim: SimGpioConfig { dir: sim_dir.map(str::to_string) }, ..GpioConfig::default() };
        let mut gpio = Gpio::new(&gpio_config);
        for (port, line) in lines {
            let Some(line) = line else {
                if self.ports.contains(&port) {
                    warn!(port = %port, from, "PTT unreadable here, already released from the daemon's record");
                } else {
                    error!(port = %port, from, "PTT line or its active level unreadable (broken or conflicting `ptt`): not driven");
                    self.failed += 1;
                }
                continue;
            };
            let id = identity(&line.line, sim_dir);
            if let Some(&active_low) = self.done.get(&id) {
                if active_low != line.active_low {
                    warn!(port = %port, line = %line.line, from, "another active level than the daemon drove: left as released");
                }
                continue;
            }
            // Opening drives the line unkeyed; that is the whole job.
            match gpio.open_output(&line) {
                Ok(_) => {
                    info!(port = %port, line = %line.line, active_low = line.active_low, from, "PTT unkeyed");
                    self.done.insert(id, line.active_low);
                    self.ports.insert(port);
                }
                Err(e) => {
                    error!(port = %port, line = %line.line, from, error = %e, "could not unkey PTT");
                    self.failed += 1;
                }
            }
        }
    }
}

/// The same physical line whichever source names it (a sim line is a file in its directory).
fn identity(line: &str, sim_dir: Option<&str>) -> String {
    match line.strip_prefix("sim:") {
        Some(name) => format!("sim:{}/{name}", sim_dir.unwrap_or_default()),
        None => line.to_string(),
    }
}

/// The radio PTT lines a config file names, as well as it can be read.
struct ConfigLines {
    /// How the file was read, for the report.
    how: &'static str,
    /// The file parsed as TOML: no line found means there is none.
    trusted: bool,
    sim_dir: Option<String>,
    lines: Vec<(String, Option<LineConfig>)>,
}

fn config_ptt_lines(path: &Path) -> Result<ConfigLines, String> {
    // Only the config itself: never the secret files it names.
    let bytes = config::secret::read_limited(path, config::load::MAX_CONFIG_BYTES)?;
    let text = String::from_utf8_lossy(&bytes);
    if let Ok(c) = config::parse_str(&text, &path.display().to_string()) {
        let lines = c
            .port
            .iter()
            .filter_map(|(n, p)| match p {
                PortConfig::Radio(r) => Some((n.clone(), Some(r.ptt.clone()))),
                PortConfig::Desk(_) => None,
            })
            .collect();
        let how = if matches!(text, std::borrow::Cow::Borrowed(_)) {
            "valid"
        } else {
            "valid once non-UTF-8 bytes were replaced"
        };
        return Ok(ConfigLines { how, trusted: true, sim_dir: c.gpio.sim.dir, lines });
    }
    let (how, trusted, entries) = match toml::from_str::<toml::Table>(&text) {
        Ok(doc) => {
            let mut entries = Vec::new();
            flatten(&mut Vec::new(), &toml::Value::Table(doc), &mut entries);
            ("TOML with schema errors", true, entries)
        }
        Err(_) => ("not valid TOML: text scan", false, scan(&text)),
    };
    warn!("the config has errors; releasing the PTT lines that can still be read ({how})");
    let (sim_dir, lines) = ptt_lines(&entries);
    Ok(ConfigLines { how, trusted, sim_dir, lines })
}

/// A value as far as safe-off cares.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Str(String),
    Bool(bool),
    /// Present, but neither (a number, an array, a table, a value it cannot read).
    Other,
    /// Text scan only: a line (at its section's path) or an inline table (at its key's path)
    /// that could not be read. What it said is unknown, so nothing under that path is defaulted.
    Broken,
}

/// `(dotted key path, value)` pairs: the common ground of the TOML tree and the text scan.
type Entries = Vec<(Vec<String>, Scalar)>;

fn flatten(path: &mut Vec<String>, value: &toml::Value, out: &mut Entries) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                path.push(k.clone());
                flatten(path, v, out);
                path.pop();
            }
        }
        toml::Value::String(s) => out.push((path.clone(), Scalar::Str(s.clone()))),
        toml::Value::Boolean(b) => out.push((path.clone(), Scalar::Bool(*b))),
        _ => out.push((path.clone(), Scalar::Other)),
    }
}

/// `[gpio.sim] dir` and the `ptt` of every radio port in `entries`. A port counts as a radio
/// when `kind = "radio"`, or, with its kind unreadable, when it has a `channel` (radios) and no
/// `channels` (desks, whose `ptt` is a button that must not be driven).
fn ptt_lines(entries: &Entries) -> (Option<String>, Vec<(String, Option<LineConfig>)>) {
    let sim_dir = values(entries, &["gpio", "sim", "dir"]).into_iter().find_map(|v| match v {
        Scalar::Str(s) => Some(s.clone()),
        _ => None,
    });
    let mut ports: Vec<&str> =
        entries.iter().filter(|(p, _)| p.len() >= 3 && p[0] == "port").map(|(p, _)| p[1].as_str()).collect();
    ports.sort_unstable();
    ports.dedup();
    let mut lines = Vec::new();
    for port in ports {
        let has = |key: &str| !values(entries, &["port", port, key]).is_empty();
        let kind = values(entries, &["port", port, "kind"]);
        let radio = if kind.contains(&&Scalar::Str("radio".into())) {
            true
        } else if kind.contains(&&Scalar::Str("desk".into())) {
            false
        } else {
            has("channel") && !has("channels")
        };
        let ptt = |key: &str| values(entries, &["port", port, "ptt", key]);
        let has_ptt = entries.iter().any(|(p, _)| p.len() >= 3 && p[0] == "port" && p[1] == port && p[2] == "ptt");
        if !radio || !has_ptt {
            continue;
        }
        // Every `ptt = { … }` without `active_low` says false (the default) too.
        let mut levels: Vec<&Scalar> = ptt("active_low");
        if levels.len() < values(entries, &["port", port, "ptt"]).len().max(1) {
            levels.push(&Scalar::Bool(false));
        }
        // The default is only believed where nothing could have hidden an `active_low`: no
        // unreadable line in the port's tables, no broken `ptt = {`, no misspelt key in `ptt`.
        let broken = |path: &[&str]| values(entries, path).contains(&&Scalar::Broken);
        let misspelt = entries.iter().any(|(p, _)| {
            p.len() >= 4
                && p[0] == "port"
                && p[1] == port
                && p[2] == "ptt"
                && !["line", "active_low", "bias"].contains(&p[3].as_str())
        });
        let readable = !broken(&["port"]) && !broken(&["port", port]) && !broken(&["port", port, "ptt"]) && !misspelt;
        let active_low = match levels.as_slice() {
            [Scalar::Bool(b), rest @ ..] if readable && rest.iter().all(|v| **v == Scalar::Bool(*b)) => Some(*b),
            _ => None,
        };
        let mut names: Vec<String> = ptt("line")
            .into_iter()
            .filter_map(|v| match v {
                Scalar::Str(s) => Some(s.trim().to_string()),
                _ => None,
            })
            .collect();
        names.sort();
        names.dedup();
        let bias = ptt("bias")
            .into_iter()
            .find_map(|v| match v {
                Scalar::Str(s) => [Bias::AsIs, Bias::Disabled, Bias::PullUp, Bias::PullDown]
                    .into_iter()
                    .find(|b| crate::gpio::bias_name(*b) == s),
                _ => None,
            })
            .unwrap_or_default();
        if names.is_empty() {
            // A `ptt` whose line is unreadable: reported by port.
            lines.push((port.to_string(), None));
        }
        for line in names {
            if active_low.is_none() {
                warn!(port = %port, line = %line, "found this PTT line, but not which level is unkeyed");
            }
            lines.push((port.to_string(), active_low.map(|active_low| LineConfig { line, active_low, bias })));
        }
    }
    (sim_dir, lines)
}

/// Every value at exactly `path` (several when a key is duplicated).
fn values<'e>(entries: &'e Entries, path: &[&str]) -> Vec<&'e Scalar> {
    entries.iter().filter(|(p, _)| p.iter().map(String::as_str).eq(path.iter().copied())).map(|(_, v)| v).collect()
}

/// Tolerant line-by-line reading of a config that is not valid TOML: `[section]` headers and
/// `key = value` lines (dotted and quoted keys, strings, booleans, inline tables). Any line it
/// cannot read is skipped; lines end at `\n`, `\r\n` or a lone `\r`.
fn scan(text: &str) -> Entries {
    let mut out = Vec::new();
    let mut section: Vec<String> = Vec::new();
    let mut in_multiline = false;
    for raw in text.split(['\n', '\r']) {
        // Multi-line strings: skip their body, whatever it looks like.
        let fences = raw.matches("\"\"\"").count() + raw.matches("'''").count();
        if in_multiline {
            in_multiline = fences % 2 == 0;
            continue;
        }
        if fences % 2 == 1 {
            in_multiline = true;
            continue;
        }
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_start_matches('[');
            // An unreadable header: what follows belongs to no known table, not to the last one.
            section = find_unquoted(header, ']')
                .and_then(|end| parse_key(&header[..end]))
                .unwrap_or_else(|| vec!["\u{0}unreadable".into()]);
            continue;
        }
        let mut cursor = Cursor { s: line, at: 0 };
        if key_value(&mut cursor, &section, &mut out).is_none() {
            out.push((section.clone(), Scalar::Broken));
        }
    }
    out
}

/// The byte offset of `c` in `s` outside quoted strings.
fn find_unquoted(s: &str, c: char) -> Option<usize> {
    let mut quote = None;
    let mut escaped = false;
    for (i, ch) in s.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if ch == '\\' && q == '"' {
                    escaped = true;
                } else if ch == q {
                    quote = None;
                }
            }
            None if ch == '"' || ch == '\'' => quote = Some(ch),
            None if ch == c => return Some(i),
            None => {}
        }
    }
    None
}

/// `a.b."c.d"` → `["a", "b", "c.d"]`.
fn parse_key(text: &str) -> Option<Vec<String>> {
    let mut cursor = Cursor { s: text, at: 0 };
    let keys = cursor.key()?;
    cursor.skip_space();
    cursor.rest().is_empty().then_some(keys)
}

struct Cursor<'a> {
    s: &'a str,
    at: usize,
}

impl Cursor<'_> {
    fn rest(&self) -> &str {
        &self.s[self.at..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += c.len_utf8();
        Some(c)
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.bump();
        }
    }

    fn eat(&mut self, c: char) -> Option<()> {
        self.skip_space();
        (self.peek()? == c).then(|| self.at += c.len_utf8())
    }

    /// A dotted key: bare or quoted parts.
    fn key(&mut self) -> Option<Vec<String>> {
        let mut keys = Vec::new();
        loop {
            self.skip_space();
            let part = match self.peek()? {
                '"' | '\'' => self.string()?,
                _ => {
                    let start = self.at;
                    while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                        self.bump();
                    }
                    if self.at == start {
                        return None;
                    }
                    self.s[start..self.at].to_string()
                }
            };
            keys.push(part);
            self.skip_space();
            if self.peek() != Some('.') {
                return Some(keys);
            }
            self.bump();
        }
    }

    /// A basic (`"…"`, with escapes) or literal (`'…'`) string on one line.
    fn string(&mut self) -> Option<String> {
        let quote = self.bump()?;
        let mut out = String::new();
        loop {
            match self.bump()? {
                c if c == quote => return Some(out),
                '\\' if quote == '"' => match self.bump()? {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    c => out.push(c),
                },
                c => out.push(c),
            }
        }
    }
}

/// The pairs of an inline table after its `{`, through its `}`.
fn inline_table(cursor: &mut Cursor, path: &[String], out: &mut Entries) -> Option<()> {
    loop {
        cursor.skip_space();
        if cursor.peek()? == '}' {
            cursor.bump();
            return Some(());
        }
        key_value(cursor, path, out)?;
        cursor.skip_space();
        match cursor.bump()? {
            ',' => {}
            '}' => return Some(()),
            _ => return None,
        }
    }
}

/// `key = value` at the cursor, under `prefix`; inline tables add one entry per key inside.
fn key_value(cursor: &mut Cursor, prefix: &[String], out: &mut Entries) -> Option<()> {
    let mut path = prefix.to_vec();
    path.extend(cursor.key()?);
    cursor.eat('=')?;
    cursor.skip_space();
    match cursor.peek()? {
        '"' | '\'' => {
            let s = cursor.string()?;
            out.push((path, Scalar::Str(s)));
        }
        '{' => {
            cursor.bump();
            let mut inner = Vec::new();
            let closed = inline_table(cursor, &path, &mut inner).is_some();
            // The table itself, so that it is seen even when empty or broken; a broken one
            // (unclosed, truncated, a bad pair) keeps the pairs read before the break.
            out.push((path, if closed { Scalar::Other } else { Scalar::Broken }));
            out.append(&mut inner);
        }
        _ => {
            let start = cursor.at;
            while matches!(cursor.peek(), Some(c) if !matches!(c, ',' | '}' | '#' | ' ' | '\t')) {
                cursor.bump();
            }
            let value = match &cursor.s[start..cursor.at] {
                "true" => Scalar::Bool(true),
                "false" => Scalar::Bool(false),
                _ => Scalar::Other,
            };
            out.push((path, value));
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(text: &str) -> (Option<String>, Vec<(String, Option<LineConfig>)>) {
        ptt_lines(&scan(text))
    }

    fn line(name: &str, active_low: bool) -> Option<LineConfig> {
        Some(LineConfig { line: name.into(), active_low, bias: Bias::AsIs })
    }

    const CONFIG: &str = r#"
device_id = "scan-test"   # a comment
[gpio.sim]
dir = "/run/lines"

[channel.ops]
label = "Opérations"

[port.radio-a]
kind = "radio"
channel = "ops"
cor = { line = "sim:a-cor", active_low = true }
ptt = { line = "sim:a-ptt" }

[port."radio-b"]
kind = 'radio'
channel = "ops"
ptt = { line = "sim:b-ptt", active_low = true, bias = "pull-up" }

[port.radio-c]
kind = "radio"
channel = "ops"
ptt.line = "rppal:27"
ptt.active_low = false

[port.radio-d]
kind = "radio"
channel = "ops"
[port.radio-d.ptt]
line = "cdev:gpiochip0:GPIO24"

[port.console]
kind = "desk"
channels = ["ops"]
ptt = { line = "sim:desk-ptt", active_low = true }
"#;

    fn expected() -> Vec<(String, Option<LineConfig>)> {
        vec![
            ("radio-a".into(), line("sim:a-ptt", false)),
            ("radio-b".into(), Some(LineConfig { line: "sim:b-ptt".into(), active_low: true, bias: Bias::PullUp })),
            ("radio-c".into(), line("rppal:27", false)),
            ("radio-d".into(), line("cdev:gpiochip0:GPIO24", false)),
        ]
    }

    #[test]
    fn scan_reads_every_way_of_writing_a_ptt_and_skips_desk_buttons() {
        let (sim_dir, lines) = lines_of(CONFIG);
        assert_eq!(sim_dir.as_deref(), Some("/run/lines"));
        assert_eq!(lines, expected());
        // The TOML tree of the same (valid) text gives the same answer.
        let mut entries = Vec::new();
        flatten(&mut Vec::new(), &toml::Value::Table(toml::from_str(CONFIG).unwrap()), &mut entries);
        assert_eq!(ptt_lines(&entries), (Some("/run/lines".into()), expected()));
    }

    #[test]
    fn scan_survives_what_breaks_toml() {
        let broken = [
            CONFIG.replace("label = \"Opérations\"", "label = \"Op\u{FFFD}rations\"\nlabel = \"dup\""),
            CONFIG.replace('\n', "\r"),
            CONFIG.replace('\n', "\r\n"),
            CONFIG.replace("ptt = { line = \"sim:a-ptt\" }", "x = 1e999\nptt = { line = \"sim:a-ptt\" }"),
            CONFIG.replace("[channel.ops]", "[channel.ops\nthis is = = not toml {{\n\"unterminated = \"x"),
            CONFIG.replace("label = \"Opérations\"", "label = \"\"\"\n[port.fake]\nkind = \"radio\"\nchannel = \"ops\"\nptt = { line = \"sim:fake\" }\n\"\"\""),
        ];
        for (i, text) in broken.iter().enumerate() {
            // CRLF is valid TOML, and so is the multi-line label holding a fake port.
            if ![2, 5].contains(&i) {
                assert!(toml::from_str::<toml::Table>(text).is_err(), "{text}");
            }
            assert_eq!(lines_of(text), (Some("/run/lines".into()), expected()), "{text}");
        }
    }

    #[test]
    fn scan_never_guesses_an_unkeyed_level() {
        // Contradicting duplicates and a broken value: the line is found, its level is not.
        let dup = CONFIG.replace(
            "ptt = { line = \"sim:a-ptt\" }",
            "ptt = { line = \"sim:a-ptt\" }\nptt = { line = \"sim:a-ptt\", active_low = true }",
        );
        assert_eq!(lines_of(&dup).1[0], ("radio-a".into(), None));
        let broken = CONFIG.replace("active_low = true, bias", "active_low = yes, bias");
        assert_eq!(lines_of(&broken).1[1], ("radio-b".into(), None));
        // A ptt table whose line is unreadable is still reported, by port.
        let no_line = CONFIG.replace("line = \"rppal:27\"", "line = rppal:27");
        assert_eq!(lines_of(&no_line).1[2], ("radio-c".into(), None));
    }

    #[test]
    fn scan_does_not_default_a_level_that_may_have_been_lost() {
        // Truncated right after the line name: `active_low = true` may have followed.
        let cut = &CONFIG[..CONFIG.find("sim:b-ptt").unwrap() + "sim:b-ptt\",".len()];
        assert_eq!(lines_of(cut).1, [("radio-a".into(), line("sim:a-ptt", false)), ("radio-b".into(), None)]);
        // An unreadable line in the ptt table, or a misspelt key: either may have been it.
        let mangled = CONFIG
            .replace("line = \"cdev:gpiochip0:GPIO24\"", "line = \"cdev:gpiochip0:GPIO24\"\nact\u{FFFD}ive_low = true");
        assert_eq!(lines_of(&mangled).1[3], ("radio-d".into(), None));
        let misspelt = CONFIG.replace("ptt.active_low = false", "ptt.activ_low = true");
        assert_eq!(lines_of(&misspelt).1[2], ("radio-c".into(), None));
        let garbage_in_port = CONFIG.replace("kind = 'radio'", "kind = 'radio'\n\u{FFFD}\u{FFFD} = true");
        assert_eq!(lines_of(&garbage_in_port).1[1], ("radio-b".into(), None));
        // Other tables' damage does not matter.
        let elsewhere = CONFIG.replace("cor = { line = \"sim:a-cor\", active_low = true }", "cor = { line = \"sim:a-c");
        assert_eq!(lines_of(&elsewhere).1, expected());
        // An unreadable header: its keys belong to no port, not to the table before it.
        let header = CONFIG.replace("[port.radio-d.ptt]", "[port.radio-d.ptt");
        let lines = lines_of(&header).1;
        assert_eq!(lines, expected()[..3]);
    }

    #[test]
    fn scan_tells_radios_from_desks_without_kind() {
        let text = CONFIG
            .replace("kind = \"radio\"\nchannel = \"ops\"\ncor", "kind = radio\nchannel = \"ops\"\ncor")
            .replace("kind = \"desk\"", "kind = ");
        assert_eq!(lines_of(&text).1, expected());
    }

    #[test]
    fn scan_of_garbage_finds_nothing_and_does_not_panic() {
        for text in [
            "",
            "\u{0}\u{1}[[[",
            "[port.x\nptt = {",
            "= = =",
            "[port.a]\nptt = { line = \"sim:x\", active_low = tr",
            "'\"\\",
        ] {
            let (_, lines) = lines_of(text);
            assert!(lines.iter().all(|(_, l)| l.is_none()), "{text:?}: {lines:?}");
        }
    }
}
