//! A port's audio as the fleet sees it, through a real Mosquitto: receive and transmit levels
//! and the TOT countdown in the retained port state (whole numbers, refreshed at most about
//! once a second and only while active), and `device_lost` / `device_found` events for an
//! ALSA device that is missing at start and appears later, with the daemon running on.

mod common;
#[allow(dead_code)]
mod fleet;

use std::time::Duration;

use common::config::{Audio, Config, Mqtt, Radio};
use common::Daemon;
use fleet::broker::Broker;
use fleet::probe::{Msg, Probe};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

/// Radio A hears a -20 dBFS (peak) 1 kHz tone; its COR keys radio B, which plays to a null sink.
fn levels(port: u16) -> String {
    let b = Radio::sim("radio-b", "ops", "b")
        .playback("sim:null")
        .keying("tx_delay_ms", 0)
        .keying("tx_hang_ms", 200)
        .keying("tot_ms", 60000);
    let a = Radio::sim("radio-a", "ops", "a").capture("sim:tone:1000:-20");
    Config::new("audio-box").channel("ops").add(a).add(b).add(Mqtt::new(port)).toml()
}

fn state_of(port: &'static str) -> impl Fn(&Msg) -> bool {
    move |m| m.topic == format!("roipd/audio-box/state/{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_state_carries_levels_and_tot_while_active_without_churn() {
    let broker = Broker::start();
    let probe = Probe::connect(broker.anon, &["roipd/audio-box/#"]).await;
    let d = Daemon::start(&levels(broker.anon));
    probe.wait("status online", WAIT, |m| m.topic == "roipd/audio-box/status" && m.json()["online"] == true).await;
    let idle = probe.wait("radio-a state", WAIT, state_of("radio-a")).await.json();
    assert!(idle.get("rx_level_dbfs").is_none(), "no level while idle: {idle}");

    let mark = probe.mark();
    d.drive("a-cor", true);
    let has = |key: &'static str| move |m: &Msg| m.json().get(key).is_some_and(Value::is_number);
    let a = probe
        .wait_after(mark, "radio-a's receive level", WAIT, |m| state_of("radio-a")(m) && has("rx_level_dbfs")(m))
        .await;
    let rx = a.json()["rx_level_dbfs"].as_f64().unwrap();
    // A sine's RMS is 3 dB under its peak.
    assert!((rx - -23.0).abs() <= 1.0, "receive level {rx} dBFS, expected about -23: {}", a.json());
    assert_eq!(rx, rx.round(), "whole dB");
    let b = probe
        .wait_after(mark, "radio-b's transmit level", WAIT, |m| state_of("radio-b")(m) && has("tx_level_dbfs")(m))
        .await;
    let (tx, tot) = (b.json()["tx_level_dbfs"].as_f64().unwrap(), b.json()["tot_remaining_s"].as_f64().unwrap());
    // After the receive AGC (-18 dBFS target) and the limiters.
    assert!((-30.0..=-6.0).contains(&tx) && tx == tx.round(), "transmit level {tx} dBFS: {}", b.json());
    assert!((50.0..=60.0).contains(&tot) && tot == tot.round(), "TOT countdown in whole seconds: {}", b.json());
    println!("measured: rx_level_dbfs {rx}, tx_level_dbfs {tx}, tot_remaining_s {tot}");

    // A steady signal for 4 s: at most about one state a second per port.
    let window = probe.mark();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let states = probe.since(window);
    let count = |p| states.iter().filter(|m| state_of(p)(m)).count();
    let (na, nb) = (count("radio-a"), count("radio-b"));
    println!("measured: {na} radio-a and {nb} radio-b states in 4 s of steady receive/transmit");
    assert!(na <= 5 && nb <= 5, "retained state churns: {na} / {nb} publications in 4 s");
    assert!(nb >= 3, "TOT countdown refreshed about once a second: {nb} in 4 s");

    let mark = probe.mark();
    d.drive("a-cor", false);
    let a = probe
        .wait_after(mark, "radio-a idle", WAIT, |m| state_of("radio-a")(m) && m.json()["rx_active"] == false)
        .await
        .json();
    assert!(a.get("rx_level_dbfs").is_none(), "no level once idle: {a}");
    let b = probe
        .wait_after(mark, "radio-b unkeyed", WAIT, |m| state_of("radio-b")(m) && m.json()["tx_keyed"] == false)
        .await
        .json();
    assert!(b.get("tx_level_dbfs").is_none() && b.get("tot_remaining_s").is_none(), "{b}");
}

/// An alsa-lib configuration (`ALSA_CONFIG_PATH` replaces the global one) with a capture PCM
/// reading a file that does not exist yet: opening it fails like an unplugged USB device.
fn asound_conf(dir: &std::path::Path) -> std::path::PathBuf {
    let d = dir.display();
    let conf = format!(
        "pcm.nullpcm {{ type null }}\n\
         pcm.radio_in {{ type file slave.pcm \"nullpcm\" file \"/dev/null\" infile \"{d}/later/in.raw\" format \"raw\" }}\n"
    );
    let path = dir.join("asound.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

/// Radio A captures from an ALSA PCM that has no input file yet; radio B plays to a card that
/// does not exist.
fn devices(port: u16) -> String {
    let a = Radio::sim("radio-a", "ops", "a").capture("radio_in");
    let b = Radio::sim("radio-b", "ops", "b").playback("plughw:CARD=Nope");
    Config::new("audio-box").channel("ops").add(a).add(b).add(Mqtt::new(port)).toml()
}

fn event(kind: &'static str, port: &'static str) -> impl Fn(&Msg) -> bool {
    move |m| m.topic == "roipd/audio-box/event" && m.json()["kind"] == kind && m.json()["port"] == port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_devices_are_reported_lost_then_found_and_the_daemon_runs_on() {
    require_alsa_lib();
    let alsa = tempfile::tempdir().unwrap();
    let conf = asound_conf(alsa.path());
    let broker = Broker::start();
    let probe = Probe::connect(broker.anon, &["roipd/audio-box/#"]).await;
    let mut d = Daemon::start_with_env(&devices(broker.anon), &[("ALSA_CONFIG_PATH", conf.to_str().unwrap())]);

    let lost = probe.wait("device_lost for radio-a", WAIT, event("device_lost", "radio-a")).await.json();
    let detail = lost["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("capture radio_in") && detail.contains("No such file"), "{lost}");
    let lost_b = probe.wait("device_lost for radio-b", WAIT, event("device_lost", "radio-b")).await.json();
    assert!(lost_b["detail"].as_str().unwrap_or_default().contains("playback plughw:CARD=Nope"), "{lost_b}");

    // Retries (500 ms, 1 s, 2 s...) fail the same way: reported once, not per retry.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let losses = probe.all().iter().filter(|m| event("device_lost", "radio-a")(m)).count();
    assert_eq!(losses, 1, "one device_lost per loss");

    // The device appears (a USB interface plugged back in).
    std::fs::create_dir(alsa.path().join("later")).unwrap();
    std::fs::write(alsa.path().join("later/in.raw"), vec![0u8; 96_000]).unwrap();
    let plugged = std::time::Instant::now();
    let found =
        probe.wait("device_found for radio-a", Duration::from_secs(20), event("device_found", "radio-a")).await.json();
    println!(
        "measured: device_found {:?} after the device appeared (retry backoff 0.5 s doubling to 10 s)",
        plugged.elapsed()
    );
    assert!(found["detail"].as_str().unwrap_or_default().contains("capture radio_in"), "{found}");

    // Still running, still reporting: COR on radio-a is an event as ever.
    assert!(d.child.try_wait().unwrap().is_none(), "roipd exited\n{}", d.stderr());
    let mark = probe.mark();
    d.drive("a-cor", true);
    probe.wait_after(mark, "cor_open after the device came back", WAIT, event("cor_open", "radio-a")).await;
    assert!(probe.all().iter().all(|m| !event("device_found", "radio-b")(m)), "radio-b's card never appeared");
}

/// The alsa-lib file plugin comes with libasound2 itself; fail clearly if alsa-lib is absent.
fn require_alsa_lib() {
    let found = [
        "/usr/lib/x86_64-linux-gnu/libasound.so.2",
        "/usr/lib/aarch64-linux-gnu/libasound.so.2",
        "/usr/lib/libasound.so.2",
    ]
    .iter()
    .any(|p| std::path::Path::new(p).exists());
    assert!(found, "alsa-lib (libasound2) is required for this test: apt-get install libasound2");
}
