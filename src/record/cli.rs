//! `roipd recordings list|export`: the recording directory read as the daemon's index is
//! ([`read_index`](super::read_index): nothing changed, so it may run beside the daemon).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::core::record::RecordingMeta;

#[derive(Args, Debug)]
pub struct RecordingsArgs {
    /// The configuration file whose `[record] dir` to read.
    #[arg(short = 'c', long, global = true, conflicts_with = "dir")]
    pub config: Option<PathBuf>,
    /// The recording directory itself (instead of --config).
    #[arg(long, global = true)]
    pub dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: RecordingsCommand,
}

#[derive(Subcommand, Debug)]
pub enum RecordingsCommand {
    /// List recordings, newest first (as the hub's API): id, start, length, channel, talker, end.
    List {
        #[arg(long)]
        channel: Option<String>,
        #[arg(long)]
        talker: Option<String>,
        /// Started at or after this time (RFC 3339, e.g. 2026-12-06T21:00:00Z or +01:00).
        #[arg(long)]
        since: Option<String>,
        /// Started at or before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// `{"recordings": [<metadata>, ...]}` as the hub's API answers.
        #[arg(long)]
        json: bool,
    },
    /// Copy a recording's Ogg Opus file to FILE (never over an existing file).
    Export {
        id: String,
        #[arg(long)]
        out: PathBuf,
    },
}

/// What `list` keeps.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filter {
    pub channel: Option<String>,
    pub talker: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
}

impl Filter {
    pub fn keeps(&self, m: &RecordingMeta) -> bool {
        self.channel.as_ref().is_none_or(|c| *c == m.channel)
            && self.talker.as_ref().is_none_or(|t| *t == m.talker)
            && self.since_ms.is_none_or(|s| m.start_unix_ms >= s)
            && self.until_ms.is_none_or(|u| m.start_unix_ms <= u)
    }
}

pub fn main(args: RecordingsArgs) -> Result<(), String> {
    let dir = directory(args.config.as_deref(), args.dir.as_deref())?;
    let index = super::read_index(&dir);
    match args.command {
        RecordingsCommand::List { channel, talker, since, until, json } => {
            let filter = Filter {
                channel,
                talker,
                since_ms: since
                    .as_deref()
                    .map(|s| parse_rfc3339(s).map_err(|e| format!("--since {s:?}: {e}")))
                    .transpose()?,
                until_ms: until
                    .as_deref()
                    .map(|s| parse_rfc3339(s).map_err(|e| format!("--until {s:?}: {e}")))
                    .transpose()?,
            };
            let found: Vec<&RecordingMeta> = index.entries.values().rev().filter(|m| filter.keeps(m)).collect();
            let text = if json { format!("{}\n", serde_json::json!({ "recordings": found })) } else { table(&found) };
            std::io::stdout().write_all(text.as_bytes()).map_err(|e| format!("stdout: {e}"))
        }
        RecordingsCommand::Export { id, out } => {
            let meta = index.entries.get(&id).ok_or_else(|| format!("no recording {id:?} in {}", dir.display()))?;
            export(&dir.join(&meta.file), &out)?;
            eprintln!("{} -> {} ({} bytes, {} ms)", meta.id, out.display(), meta.bytes, meta.duration_ms);
            Ok(())
        }
    }
}

/// The recording directory from `--dir` or the config's `[record] dir`; it must exist.
fn directory(config: Option<&Path>, dir: Option<&Path>) -> Result<PathBuf, String> {
    let dir = match (config, dir) {
        (_, Some(d)) => d.to_path_buf(),
        (Some(path), None) => {
            // The text alone, as `mosquitto-acl`: the secret files need not be readable here.
            let raw = crate::config::secret::read_limited(path, crate::config::load::MAX_CONFIG_BYTES)?;
            let text = String::from_utf8(raw).map_err(|_| format!("{}: not UTF-8", path.display()))?;
            let cfg = crate::config::parse_str(&text, &path.display().to_string()).map_err(|e| e.to_string())?;
            let record =
                cfg.record.ok_or_else(|| format!("{}: no [record] table: this box records nothing", path.display()))?;
            PathBuf::from(record.dir)
        }
        (None, None) => return Err("say where the recordings are: -c CONFIG or --dir DIR".into()),
    };
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => Ok(dir),
        Ok(_) => Err(format!("{}: not a directory", dir.display())),
        Err(e) => Err(format!("recording directory {}: {e}", dir.display())),
    }
}

/// Copy `from` to `to`, which must not exist (`create_new`: no race with another writer
/// either); a failed copy leaves no partial file.
fn export(from: &Path, to: &Path) -> Result<(), String> {
    let mut src = std::fs::File::open(from).map_err(|e| format!("{}: {e}", from.display()))?;
    let mut dst = std::fs::OpenOptions::new().write(true).create_new(true).open(to).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!("{}: already exists (not overwritten)", to.display())
        } else {
            format!("{}: {e}", to.display())
        }
    })?;
    if let Err(e) = std::io::copy(&mut src, &mut dst).and_then(|_| dst.sync_all()) {
        drop(dst);
        let _ = std::fs::remove_file(to);
        return Err(format!("{}: {e}", to.display()));
    }
    Ok(())
}

fn table(found: &[&RecordingMeta]) -> String {
    let mut out =
        format!("{:<32} {:<24} {:>8}  {:<12} {:<20} {}\n", "ID", "START", "LENGTH", "CHANNEL", "TALKER", "END");
    for m in found {
        let end = serde_json::to_value(m.end).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        let length = format!("{}.{} s", m.duration_ms / 1000, m.duration_ms % 1000 / 100);
        out.push_str(&format!(
            "{:<32} {:<24} {:>8}  {:<12} {:<20} {}{}\n",
            m.id,
            m.start,
            length,
            m.channel,
            m.talker,
            end,
            if m.truncated { " (truncated)" } else { "" }
        ));
    }
    out.push_str(&format!("{} recording{}\n", found.len(), if found.len() == 1 { "" } else { "s" }));
    out
}

/// RFC 3339 date-time to Unix milliseconds: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` (`t`, `z`
/// and a space for `T` accepted, as RFC 3339 allows). Fractions beyond milliseconds are cut.
pub fn parse_rfc3339(s: &str) -> Result<u64, String> {
    let b = s.as_bytes();
    let bad = || "not an RFC 3339 time (e.g. 2026-12-06T21:00:00Z)".to_string();
    if b.len() < 20 || !b.is_ascii() {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let t = &s[r];
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let (y, mo, d, h, mi, sec) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&mo) || d < 1 || d > days_in[(mo - 1) as usize] || h > 23 || mi > 59 || sec > 60 {
        return Err("a date or time field is out of range".into());
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        let frac = &s[start..i.min(start + 3)];
        ms = frac.parse::<i64>().map_err(|_| bad())? * 10i64.pow(3 - frac.len() as u32);
    }
    let offset_min = match &s[i..] {
        "Z" | "z" => 0,
        o if o.len() == 6 && matches!(&o[..1], "+" | "-") && &o[3..4] == ":" => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return Err("the UTC offset is out of range".into());
            }
            let v = oh * 60 + om;
            if o.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return Err(bad()),
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec.min(59) - offset_min * 60;
    u64::try_from(secs * 1000 + ms).map_err(|_| "before 1970".to_string())
}

/// Howard Hinnant's civil-to-days algorithm (proleptic Gregorian calendar).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::protocol::rfc3339_millis;

    #[test]
    fn rfc3339_round_trips_and_takes_offsets() {
        for ms in [0u64, 1_796_593_423_140, 951_782_400_000 /* 2000-02-29 */, 4_102_444_799_999] {
            assert_eq!(parse_rfc3339(&rfc3339_millis(ms)), Ok(ms), "{}", rfc3339_millis(ms));
        }
        let z = parse_rfc3339("2026-12-06T21:43:43Z").unwrap();
        assert_eq!(parse_rfc3339("2026-12-06T22:43:43+01:00"), Ok(z));
        assert_eq!(parse_rfc3339("2026-12-06t16:13:43-05:30"), Ok(z));
        assert_eq!(parse_rfc3339("2026-12-06 21:43:43.5z"), Ok(z + 500));
        assert_eq!(parse_rfc3339("2026-12-06T21:43:43.123456Z"), Ok(z + 123));
        for bad in [
            "",
            "2026-12-06",
            "2026-12-06T21:43:43",
            "2026-13-06T21:43:43Z",
            "2026-02-29T00:00:00Z",
            "2026-12-06T24:00:00Z",
            "2026-12-06T21:43:43.Z",
            "2026-12-06T21:43:43+0100",
            "2026-12-06T21:43:43+01:60",
            "1969-12-31T23:59:59Z",
            "2026-12-06T21:43:4éZ",
            "+026-12-06T21:43:43Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn export_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("a.opus");
        std::fs::write(&from, b"OggS").unwrap();
        let to = dir.path().join("out.opus");
        export(&from, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"OggS");
        std::fs::write(&to, b"mine").unwrap();
        assert!(export(&from, &to).unwrap_err().contains("already exists"));
        assert_eq!(std::fs::read(&to).unwrap(), b"mine");
        assert!(export(&dir.path().join("gone.opus"), &dir.path().join("x")).is_err());
        assert!(!dir.path().join("x").exists());
    }
}
