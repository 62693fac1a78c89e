//! `[record]`: every transmission on the channels this box sees, kept as Ogg Opus files
//! (`crate::record`).

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;

use super::spans::Report;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    /// Folder of the recordings (created if missing): `<id>.opus` and `<id>.json` per
    /// transmission. An absolute path.
    pub dir: String,
    /// Channels to record; absent or empty: every channel.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Oldest recordings are deleted once all of them take more than this (1-1000000 MB).
    #[serde(default = "default_max_total_mb")]
    pub max_total_mb: u64,
    /// Recordings older than this are deleted (0: kept whatever their age; at most 3650).
    #[serde(default = "default_max_age_days")]
    pub max_age_days: u64,
    /// Transmissions shorter than this are not kept (0-60000 ms).
    #[serde(default = "default_min_length_ms")]
    pub min_length_ms: u64,
}

fn default_max_total_mb() -> u64 {
    1024
}

fn default_max_age_days() -> u64 {
    30
}

fn default_min_length_ms() -> u64 {
    500
}

impl RecordConfig {
    /// Whether `channel` is recorded.
    pub fn records(&self, channel: &str) -> bool {
        self.channels.is_empty() || self.channels.iter().any(|c| c == channel)
    }

    pub fn max_total_bytes(&self) -> u64 {
        self.max_total_mb.saturating_mul(1024 * 1024)
    }

    /// None: no age limit.
    pub fn max_age(&self) -> Option<Duration> {
        (self.max_age_days > 0).then(|| Duration::from_secs(self.max_age_days * 86_400))
    }

    pub fn min_length(&self) -> Duration {
        Duration::from_millis(self.min_length_ms)
    }
}

pub(super) fn validate(record: &RecordConfig, channels: &Option<BTreeSet<String>>, r: &mut Report) {
    if !std::path::Path::new(&record.dir).is_absolute() {
        r.key("record.dir", format!("`{}` is not an absolute path", record.dir));
    }
    for (i, c) in record.channels.iter().enumerate() {
        super::validate::check_channel("record.channels", Some(i), c, channels, r);
    }
    for (field, value, lo, hi, unit) in [
        ("max_total_mb", record.max_total_mb, 1, 1_000_000, "MB"),
        ("max_age_days", record.max_age_days, 0, 3650, "days"),
        ("min_length_ms", record.min_length_ms, 0, 60_000, "ms"),
    ] {
        if !(lo..=hi).contains(&value) {
            r.key(&format!("record.{field}"), format!("{value} {unit} is out of range {lo}-{hi} {unit}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse_str;

    const BASE: &str = "device_id = \"a\"\n[channel.ops]\n[channel.fire]\n";

    fn errors(extra: &str) -> Vec<String> {
        match parse_str(&format!("{BASE}{extra}"), "t.toml") {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| format!("{}:{} {}", e.line, e.key, e.message)).collect(),
        }
    }

    #[test]
    fn record_settings_are_checked_with_their_line_and_key() {
        let ok = parse_str(&format!("{BASE}[record]\ndir = \"/var/lib/roipd/rec\"\n"), "t.toml").unwrap();
        let rec = ok.record.unwrap();
        assert!(rec.records("ops") && rec.records("fire"));
        assert_eq!((rec.max_total_mb, rec.max_age_days, rec.min_length_ms), (1024, 30, 500));
        assert_eq!(
            errors(
                "[record]\ndir = \"rec\"\nchannels = [\"ops\", \"opz\"]\nmax_total_mb = 0\nmax_age_days = 9999\n\
                 min_length_ms = 70000\n"
            ),
            [
                "5:record.dir `rec` is not an absolute path",
                "6:record.channels unknown channel `opz` (defined: `fire`, `ops`)",
                "7:record.max_total_mb 0 MB is out of range 1-1000000 MB",
                "8:record.max_age_days 9999 days is out of range 0-3650 days",
                "9:record.min_length_ms 70000 ms is out of range 0-60000 ms",
            ]
        );
        assert_eq!(errors("[record]\ndir = \"/r\"\nkeep = 3\n").len(), 1, "unknown keys are errors");
        let only = parse_str(&format!("{BASE}[record]\ndir = \"/r\"\nchannels = [\"fire\"]\n"), "t.toml").unwrap();
        assert!(!only.record.as_ref().unwrap().records("ops"));
    }
}
