//! CTCSS tone squelch end to end: two radios on sim devices hear the same 100.0 Hz tone at
//! -20 dBFS; the one whose `cor = { ctcss = 100.0 }` opens (its port state says rx_active, with
//! the tone and its SNR), the one set for the adjacent 103.5 Hz reports the 100.0 Hz tone it
//! hears and never opens. A third radio on the channel is keyed by the first one only.

mod common;
#[allow(dead_code)]
mod fleet;

use std::time::{Duration, Instant};

use common::config::{Audio, Config, Mqtt, Radio};
use common::Daemon;
use fleet::broker::Broker;
use fleet::probe::{Msg, Probe};

const WAIT: Duration = Duration::from_secs(10);

fn config(port: u16) -> String {
    let tone = |name: &str, x: &str, ctcss: &str| {
        Radio::new(name, "ops")
            .ptt(&format!("sim:{x}-ptt"))
            .set("cor", format!("{{ ctcss = {ctcss} }}"))
            .capture("sim:tone:100:-20")
    };
    let b = Radio::sim("radio-b", "ops", "b").playback("sim:null").keying("tx_delay_ms", 0);
    Config::new("ctcss-box")
        .channel("ops")
        .add(tone("radio-a", "a", "100.0"))
        .add(tone("radio-c", "c", "103.5"))
        .add(b)
        .add(Mqtt::new(port))
        .toml()
}

fn state_of(port: &'static str) -> impl Fn(&Msg) -> bool {
    move |m| m.topic == format!("roipd/ctcss-box/state/{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tone_squelched_radio_opens_only_with_its_tone() {
    let broker = Broker::start();
    let probe = Probe::connect(broker.anon, &["roipd/ctcss-box/#"]).await;
    let started = Instant::now();
    let d = Daemon::start(&config(broker.anon));
    let a = probe
        .wait("radio-a open on its tone", WAIT, |m| state_of("radio-a")(m) && m.json()["rx_active"] == true)
        .await
        .json();
    println!("radio-a open {} ms after the daemon started: {a}", started.elapsed().as_millis());
    let b =
        probe.wait("radio-b keyed by radio-a", WAIT, |m| state_of("radio-b")(m) && m.json()["tx_keyed"] == true).await;
    println!("radio-b: {}", b.json());
    let heard = probe
        .wait("radio-a reports the tone", WAIT, |m| state_of("radio-a")(m) && m.json().get("ctcss_hz").is_some())
        .await
        .json();
    assert_eq!(heard["ctcss_hz"].as_f64(), Some(100.0), "{heard}");
    assert!(heard["ctcss_snr_db"].as_f64().is_some_and(|s| s >= 10.0), "{heard}");
    let c = probe
        .wait("radio-c reports the 100.0 Hz tone", WAIT, |m| {
            state_of("radio-c")(m) && m.json().get("ctcss_hz").is_some()
        })
        .await
        .json();
    assert_eq!(c["ctcss_hz"].as_f64(), Some(100.0), "{c}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let opened: Vec<_> =
        probe.all().into_iter().filter(|m| state_of("radio-c")(m) && m.json()["rx_active"] == true).collect();
    assert!(
        opened.is_empty(),
        "radio-c (103.5 Hz) opened on 100.0 Hz: {:?}",
        opened.iter().map(Msg::json).collect::<Vec<_>>()
    );
    drop(d);
}
