//! The fuzz harness's short run (issue 14 item 9): every target, a few thousand inputs from
//! its corpus in `fuzz/corpus/`, with the same checks as the long run (`scripts/fuzz-long`):
//! no panic, no broken invariant, no input slower than the hang budget, no input allocating
//! more than the cap. Seeded: a failure reproduces with the printed seed.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::Path;
use std::time::Duration;

#[global_allocator]
static ALLOC: harness::Counting = harness::Counting;

/// Inputs per target: enough to reach past the seeds' first errors, a few seconds each in a
/// debug build on a loaded box.
const EXECS: u64 = 3_000;

fn short_run(name: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = harness::TARGETS.iter().find(|t| t.name == name).expect("a fuzz target");
    let corpus = harness::load_corpus(&harness::corpus_dir(root, name));
    // Generous: a debug build on a loaded 2-core box; a real hang never returns at all.
    let limits = harness::Limits { hang: Duration::from_secs(20), max_alloc: 64 << 20 };
    let seed = 14;
    match harness::fuzz(target, &corpus, seed, EXECS, &limits, None) {
        Ok(r) => eprintln!(
            "fuzz {name}: {} inputs in {:.1?}, slowest {:.1?} ({} bytes), peak {} KiB",
            r.execs,
            r.elapsed,
            r.slowest,
            r.slowest_len,
            r.peak_alloc / 1024
        ),
        Err(f) => panic!(
            "fuzz {name} (seed {seed}): {}\ninput ({} bytes): {:?}",
            f.what,
            f.input.len(),
            String::from_utf8_lossy(&f.input)
        ),
    }
}

#[test]
fn every_target_is_tested() {
    let names: Vec<_> = harness::TARGETS.iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        [
            "config",
            "signaling_client",
            "signaling_server",
            "sdp",
            "mqtt_command",
            "floor_mqtt",
            "janus",
            "jitter",
            "restamper"
        ]
    );
}

#[test]
fn config() {
    short_run("config");
}
#[test]
fn signaling_client() {
    short_run("signaling_client");
}
#[test]
fn signaling_server() {
    short_run("signaling_server");
}
#[test]
fn sdp() {
    short_run("sdp");
}
#[test]
fn mqtt_command() {
    short_run("mqtt_command");
}
#[test]
fn floor_mqtt() {
    short_run("floor_mqtt");
}
#[test]
fn janus() {
    short_run("janus");
}
#[test]
fn jitter() {
    short_run("jitter");
}
#[test]
fn restamper() {
    short_run("restamper");
}

/// Found by the long run: one garbled line of ~1,700 quotes (10.5 KB) allocated 76 MB, because
/// every syntax error on it named the whole line as its key (quadratic). Keys are cut now.
#[test]
fn a_garbled_config_line_does_not_allocate_quadratically() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read(root.join("fuzz/corpus/config/regression-garbled-line-quadratic-keys.toml")).unwrap();
    let target = harness::TARGETS.iter().find(|t| t.name == "config").unwrap();
    let (outcome, peak) = harness::metered(|| (target.run)(&text));
    assert!(outcome.is_ok(), "{outcome:?}");
    assert!(peak < 8 << 20, "a {}-byte config allocated {peak} bytes", text.len());
}
