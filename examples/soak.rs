//! The long soak of the sans-IO cores: `scripts/soak-sim` (or
//! `cargo run --profile checked --example soak -- [--hours H] [--seed S] [--seeds N] [--no-audio-guard on|off]`).
//! Prints, per seed, wall time, simulated time, steps, events, invariant checks and what the
//! run exercised; exits 1 on the first invariant violation (with the seed that replays it).

#[path = "../tests/soak_sim/mod.rs"]
mod sim;

use std::time::{Duration, Instant};

fn main() {
    let (mut hours, mut seed, mut seeds) = (24.0f64, 1u64, 1u64);
    let mut inv = sim::Invariants::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--hours" => hours = v.parse().expect("--hours takes a number"),
            "--seed" => seed = v.parse().expect("--seed takes a number"),
            "--seeds" => seeds = v.parse().expect("--seeds takes a number"),
            // The no-audio guard invariant (issue 14 item 2) is checked unless turned off.
            "--no-audio-guard" => inv.no_audio_guard = v != "off",
            other => {
                eprintln!("unknown option {other}");
                std::process::exit(2)
            }
        }
    }
    let duration = Duration::from_secs_f64(hours * 3600.0);
    for s in seed..seed + seeds {
        let wall = Instant::now();
        match sim::soak(s, duration, inv.clone()) {
            Ok(r) => println!(
                "seed {s}: {:.1} h simulated in {:.1} s wall; {} steps, {} events, {} invariant checks; \
                 {} key-ups (longest {:.1?}), {} TOT fired, {} grants, {} revokes, {} peers joined, \
                 {} media packets, {} into jitter buffers (max depth {:.0} ms)",
                r.sim.as_secs_f64() / 3600.0,
                wall.elapsed().as_secs_f64(),
                r.steps,
                r.events,
                r.checks,
                r.key_ups,
                r.longest_key_up,
                r.tot_fired,
                r.grants,
                r.revokes,
                r.peers_joined,
                r.media_packets,
                r.jitter_pushed,
                r.jitter_max_depth_ms
            ),
            Err(v) => {
                println!("VIOLATION: {v}");
                std::process::exit(1);
            }
        }
    }
}
