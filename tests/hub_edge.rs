//! Two roipd processes, an edge uplinked to a hub, with simulated radios: audio and keying
//! across the hub, floor contention, preemption, a hub killed mid-talk, and a bad token.

mod common;

use std::time::{Duration, Instant};

use common::config::{Audio, Config, Hub, Radio, Uplink};
use common::{free_port, wav_blocks_dbfs, Daemon};

/// Radio B talks a 700 Hz tone and records what it transmits; radio C is a dispatch link:
/// priority 100 preempts field radios, and full duplex keeps its COR counting while the channel
/// keys it.
fn hub_config(port: u16) -> String {
    let b = Radio::sim("radio-b", "ops", "b")
        .capture("sim:tone:700:-12")
        .playback("sim:wav-out:{dir}/b-tx.wav")
        .keying("tx_delay_ms", 100)
        .keying("tx_hang_ms", 500);
    let c = Radio::sim("radio-c", "ops", "c").priority(100).duplex();
    Config::new("hub").channel("ops").add(b).add(c).add(Hub::new(port).token("edges", "token", &["ops"])).toml()
}

fn edge_config(port: u16) -> String {
    let a = Radio::sim("radio-a", "ops", "a")
        .capture("sim:tone:1000:-12")
        .playback("sim:wav-out:{dir}/a-tx.wav")
        .keying("tx_delay_ms", 100)
        .keying("tx_hang_ms", 500);
    Config::new("edge").channel("ops").add(a).add(Uplink::hub(port)).toml()
}

const WAIT: Duration = Duration::from_secs(10);

fn start_pair() -> (Daemon, Daemon, u16) {
    let port = free_port();
    let hub = Daemon::start_with(&hub_config(port), &[], &[("token", "edge-secret\n")]);
    let mut hub = hub;
    hub.wait_for("hub listening", WAIT, |d| d.stderr().contains("roipd running"));
    let mut edge = Daemon::start_with(&edge_config(port), &[], &[("token", "edge-secret\n")]);
    edge.wait_for("uplink up", WAIT, |d| d.stderr().contains("uplink up"));
    hub.wait_for("edge joined", WAIT, |d| d.stderr().contains("peer joined"));
    (hub, edge, port)
}

fn count(log: &str, what: &str) -> usize {
    log.matches(what).count()
}

#[test]
fn cor_on_the_edge_keys_the_hub_radio_with_its_audio_then_releases() {
    let (mut hub, edge, _) = start_pair();
    edge.drive("a-cor", true);
    hub.wait_for("radio B keyed by the edge's talker", WAIT, |d| d.line("b-ptt") == Some(true));
    std::thread::sleep(Duration::from_millis(1500));
    edge.drive("a-cor", false);
    let released = Instant::now();
    hub.wait_for("radio B released after the hang time", WAIT, |d| d.line("b-ptt") == Some(false));
    assert!(released.elapsed() >= Duration::from_millis(400), "released before the 500 ms hang");
    assert!(hub.line_log("c-ptt").contains(&true), "C, on the channel too, was keyed");
    hub.signal(libc::SIGTERM);
    assert!(hub.wait_exit(WAIT).success());
    let blocks = wav_blocks_dbfs(&hub.dir.path().join("b-tx.wav"));
    let loud = blocks.iter().filter(|&&db| db > -30.0).count();
    // About 1.5 s of tone at ~-18 dBFS after the AGC: at least a second of it arrived.
    assert!(loud >= 100, "B transmitted {loud} loud 10 ms blocks of the edge's tone\n{}", hub.stderr());
    assert_eq!(edge.line("a-ptt"), Some(false), "the edge's own radio was never keyed by itself");
}

#[test]
fn simultaneous_key_up_lets_exactly_one_talk() {
    let (mut hub, edge, _) = start_pair();
    edge.drive("a-cor", true);
    hub.drive("b-cor", true);
    std::thread::sleep(Duration::from_millis(1000));
    let (h, e) = (hub.stderr(), edge.stderr());
    let busy = count(&h, "floor busy") + count(&e, "floor busy");
    assert_eq!(busy, 1, "exactly one is told busy\n--- hub ---\n{h}\n--- edge ---\n{e}");
    // The winner's radio is heard by the third radio on the channel.
    hub.wait_for("radio C keyed by the winner", WAIT, |d| d.line("c-ptt") == Some(true));
    edge.drive("a-cor", false);
    hub.drive("b-cor", false);
    hub.wait_for("everything unkeyed", WAIT, |d| d.line("c-ptt") == Some(false));
}

#[test]
fn higher_priority_radio_preempts_the_edge_talker() {
    let (mut hub, mut edge, _) = start_pair();
    edge.drive("a-cor", true);
    hub.wait_for("B keyed by A", WAIT, |d| d.line("b-ptt") == Some(true));
    hub.drive("c-cor", true);
    edge.wait_for("A's floor revoked", WAIT, |d| d.stderr().contains("floor revoked"));
    hub.wait_for("C talks", WAIT, |d| d.stderr().contains("talker=radio-c"));
    // A's squelch closes: now its radio carries C (dispatch).
    edge.drive("a-cor", false);
    edge.wait_for("A keyed for C", WAIT, |d| d.line("a-ptt") == Some(true));
    hub.drive("c-cor", false);
    edge.wait_for("A released", WAIT, |d| d.line("a-ptt") == Some(false));
}

#[test]
fn killing_the_hub_mid_talk_unkeys_the_edge() {
    let (mut hub, mut edge, _) = start_pair();
    hub.drive("b-cor", true);
    edge.wait_for("A keyed by B across the hub", WAIT, |d| d.line("a-ptt") == Some(true));
    hub.signal(libc::SIGKILL);
    let killed = Instant::now();
    edge.wait_for("A unkeyed after the hub died", WAIT, |d| d.line("a-ptt") == Some(false));
    eprintln!("edge radio unkeyed {:?} after the hub was killed", killed.elapsed());
    assert!(edge.stderr().contains("uplink down"), "{}", edge.stderr());
    let _ = hub.wait_exit(WAIT);
}

#[test]
fn an_edge_with_a_wrong_token_is_refused_and_keeps_its_radio_unkeyed() {
    let port = free_port();
    let mut hub = Daemon::start_with(&hub_config(port), &[], &[("token", "edge-secret\n")]);
    hub.wait_for("hub listening", WAIT, |d| d.stderr().contains("roipd running"));
    let mut edge = Daemon::start_with(&edge_config(port), &[], &[("token", "wrong\n")]);
    edge.wait_for("refused", WAIT, |d| d.stderr().contains("unauthorized"));
    edge.drive("a-cor", true);
    hub.drive("b-cor", true);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(edge.line("a-ptt"), Some(false));
    assert_eq!(hub.line("c-ptt"), Some(true), "the hub's own radios still work");
    assert!(!hub.stderr().contains("peer joined"));
}
