//! The cores in src/core are sans-IO: no async runtime, no hardware or network crates, no
//! threads, files or sockets, and no clock reads. Time and events come in from the drivers.
//! This test keeps it that way (test modules inside a core may use the clock for a base Instant).

use std::fs;
use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "tokio", "alsa::", "rppal", "rumqttc", "gpiocdev", "serialport", "str0m", "audiopus",
    "Instant::now", "SystemTime", "std::thread", "std::net", "std::fs", "std::io",
    "std::process", "std::env",
];

#[test]
fn cores_do_no_io_and_read_no_clock() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let mut checked = 0;
    let mut violations = Vec::new();
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        // Everything from the first `#[cfg(test)]` on is test code.
        let production = text.split("#[cfg(test)]").next().unwrap();
        for (n, line) in production.lines().enumerate() {
            let code = line.split("//").next().unwrap();
            for word in FORBIDDEN {
                if code.contains(word) {
                    violations.push(format!("{}:{}: `{word}`: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
        checked += 1;
    }
    assert!(checked >= 2, "expected core modules in {}", dir.display());
    assert!(violations.is_empty(), "I/O or clock in a sans-IO core:\n{}", violations.join("\n"));
}
