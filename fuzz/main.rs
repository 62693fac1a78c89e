//! The fuzz driver's long run: `scripts/fuzz-long` (or
//! `cargo run --profile checked --example fuzz -- [--execs N] [--seed S] [--hang-ms MS]
//! [--max-alloc-mib M (default 64)] [TARGET...]`).
//! Prints one line per target: inputs, execs/s, slowest input, peak allocation of one input
//! (those two inputs are written to fuzz/crashes/<target>-slowest and -peak-alloc).
//! Exit 1 when any target finds a panic, a broken invariant, a hang or an allocation over the cap.
//! See `fuzz/harness.rs` for what is checked and how.

#[path = "harness.rs"]
mod harness;

use std::path::Path;
use std::time::Duration;

#[global_allocator]
static ALLOC: harness::Counting = harness::Counting;

fn main() {
    let mut execs: u64 = 1_000_000;
    let mut seed: u64 = 1;
    let mut hang = Duration::from_secs(10);
    let mut max_alloc = 64 << 20;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |what: &str| -> u64 {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("{what} takes a number");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--execs" => execs = value("--execs"),
            "--seed" => seed = value("--seed"),
            "--hang-ms" => hang = Duration::from_millis(value("--hang-ms")),
            "--max-alloc-mib" => max_alloc = value("--max-alloc-mib") as usize * 1024 * 1024,
            "--list" => {
                harness::TARGETS.iter().for_each(|t| println!("{}", t.name));
                return;
            }
            name if !name.starts_with('-') => names.push(name.to_owned()),
            other => {
                eprintln!("unknown option {other}");
                std::process::exit(2)
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let crash_dir = root.join("fuzz/crashes");
    let limits = harness::Limits { hang, max_alloc };
    harness::quiet_panics();
    let mut failed = false;
    println!(
        "{:<18} {:>10} {:>9} {:>11} {:>10} {:>12} {:>10} {:>6} {:>8}",
        "target", "inputs", "secs", "execs/s", "slowest", "(its bytes)", "peak KiB", "pool", "outcomes"
    );
    for t in harness::TARGETS.iter().filter(|t| names.is_empty() || names.iter().any(|n| n == t.name)) {
        let corpus = harness::load_corpus(&harness::corpus_dir(root, t.name));
        match harness::fuzz(t, &corpus, seed, execs, &limits, Some(&crash_dir)) {
            Ok(r) => {
                // The slowest and the most allocating input, to look at (fuzz/crashes/ is not committed).
                let _ = std::fs::create_dir_all(&crash_dir);
                let _ = std::fs::write(crash_dir.join(format!("{}-slowest", t.name)), &r.slowest_input);
                let _ = std::fs::write(crash_dir.join(format!("{}-peak-alloc", t.name)), &r.peak_alloc_input);
                println!(
                    "{:<18} {:>10} {:>9.1} {:>11.0} {:>10.3?} {:>12} {:>10.1} {:>6} {:>8}",
                    t.name,
                    r.execs,
                    r.elapsed.as_secs_f64(),
                    r.execs as f64 / r.elapsed.as_secs_f64(),
                    r.slowest,
                    r.slowest_len,
                    r.peak_alloc as f64 / 1024.0,
                    r.pool,
                    r.outcomes
                )
            }
            Err(f) => {
                failed = true;
                println!("{:<18} FAILED: {} (input saved as {:?})", t.name, f.what, f.saved);
            }
        }
    }
    std::process::exit(i32::from(failed));
}
