//! The cores in src/core are sans-IO: no async runtime, no hardware or network crates, no
//! threads, files or sockets, and no clock reads. Time and events come in from the drivers.
//! This test keeps it that way (test modules inside a core may use the clock for a base Instant).

use std::fs;
use std::path::{Path, PathBuf};

const FORBIDDEN: &[&str] = &[
    "tokio",
    "alsa::",
    "rppal",
    "rumqttc",
    "gpiocdev",
    "serialport",
    "str0m",
    "audiopus",
    "Instant::now",
    "SystemTime",
    "std::thread",
    "std::net",
    "std::fs",
    "std::io",
    "std::process",
    "std::env",
];

/// Every core, so that none can leave the folder (or its checked part) unnoticed.
const CORES: &[&str] = &[
    "desk.rs",
    "dtmf_command.rs",
    "emergency.rs",
    "floor.rs",
    "jitter.rs",
    "keying.rs",
    "record.rs",
    "restamp.rs",
    "routing.rs",
    "timers.rs",
];

/// The .rs files below `dir`, subfolders (a core's submodules) included.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A core's production code: a `tests.rs` submodule is all test code, and elsewhere the test
/// module starts at the `#[cfg(test)]` that opens a `mod` (a `#[cfg(test)]` accessor in the
/// middle of a file does not end the checked part).
fn production(path: &Path, text: &str) -> Vec<(usize, String)> {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return Vec::new();
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let next = lines[n + 1..].iter().map(|l| l.trim()).find(|l| !l.is_empty() && !l.starts_with("//"));
        if line.trim() == "#[cfg(test)]" && next.is_some_and(|l| l.starts_with("mod ") || l.starts_with("pub mod ")) {
            break;
        }
        out.push((n + 1, line.to_string()));
    }
    out
}

#[test]
fn cores_do_no_io_and_read_no_clock() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let mut files = Vec::new();
    sources(&dir, &mut files);
    let mut violations = Vec::new();
    for path in &files {
        let text = fs::read_to_string(path).unwrap();
        for (n, line) in production(path, &text) {
            let code = line.split("//").next().unwrap();
            for word in FORBIDDEN {
                if code.contains(word) {
                    violations.push(format!("{}:{n}: `{word}`: {}", path.display(), line.trim()));
                }
            }
        }
    }
    for core in CORES {
        assert!(files.contains(&dir.join(core)), "core {core} is missing from {}", dir.display());
    }
    assert!(violations.is_empty(), "I/O or clock in a sans-IO core:\n{}", violations.join("\n"));
}

#[test]
fn a_test_only_accessor_does_not_end_the_checked_part() {
    let text =
        "#[cfg(test)]\npub fn level() {}\nfn f() { Instant::now(); }\n#[cfg(test)]\nmod tests {\n Instant::now();\n}\n";
    let checked: Vec<usize> = production(Path::new("core.rs"), text).into_iter().map(|(n, _)| n).collect();
    assert_eq!(checked, [1, 2, 3]);
    assert!(production(Path::new("keying/tests.rs"), text).is_empty());
}
