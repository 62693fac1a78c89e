//! Soak of the sans-IO cores in simulated time (issue 14 item 10): 10 simulated minutes per
//! seed with random traffic and faults, every invariant checked after every step (see
//! `tests/soak_sim/mod.rs`). The 24 h run is `scripts/soak-sim`.

#[path = "soak_sim/mod.rs"]
mod sim;

use std::time::Duration;

#[test]
fn ten_simulated_minutes_keep_every_invariant() {
    for seed in 1..=3 {
        match sim::soak(seed, Duration::from_secs(600), sim::Invariants::default()) {
            Ok(r) => {
                eprintln!("seed {seed}: {r:?}");
                // The run must have exercised what it checks.
                assert!(r.key_ups > 0 && r.grants > 0 && r.media_packets > 0 && r.jitter_pushed > 0, "{r:?}");
            }
            Err(v) => panic!("{v}"),
        }
    }
}

/// The no-audio invariant can fail: with the keying core's guard stretched past the arbiter's
/// no-media timeout, a silent floor holder (a forged peer) keeps a radio keyed on dead air.
#[test]
fn a_core_without_the_no_audio_guard_is_caught() {
    let no_guard =
        |r| roipd::core::keying::KeyingConfig { no_audio: Duration::from_secs(3600), ..sim::keying_config(r) };
    let caught = (1..=10).find_map(|seed| {
        sim::Sim::with_keying(seed, sim::Invariants::default(), no_guard).run(Duration::from_secs(600)).err()
    });
    let v = caught.expect("ten seeds without one radio keyed on dead air beyond the guard");
    assert!(v.what.contains("without channel audio"), "{v}");
    eprintln!("caught: {v}");
}

#[test]
fn a_seed_replays_exactly() {
    let a = sim::soak(7, Duration::from_secs(120), sim::Invariants::default()).expect("no violation");
    let b = sim::soak(7, Duration::from_secs(120), sim::Invariants::default()).expect("no violation");
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}
