//! Per-stream metrics from real WebRTC sessions: an edge `roipd run` uplinked to a hub `roipd
//! run`, both reporting to a real Mosquitto. While the edge's radio talks, the hub's metrics
//! carry the edge's stream (`edge/ops`) and the edge's carry its uplink stream (`uplink/ops`),
//! with plausible RTT, jitter, loss and bitrate for Opus on loopback; a second peer with the same
//! name gets its own key; when the edges leave, their streams leave the hub's metrics.

mod common;
#[allow(dead_code)]
mod fleet;

use std::time::Duration;

use common::config::{Audio, Config, Hub, Mqtt, Radio, Uplink};
use common::{free_port, Daemon};
use fleet::broker::Broker;
use fleet::probe::{Msg, Probe};
use serde_json::Value;

fn hub_config(hub_port: u16, mqtt_port: u16) -> String {
    let b = Radio::sim("radio-b", "ops", "b")
        .capture("sim:tone:700:-12")
        .playback("sim:wav-out:{dir}/b-tx.wav")
        .keying("tx_delay_ms", 0)
        .keying("tx_hang_ms", 200);
    let hub = Hub::new(hub_port).token("edges", "token", &["ops"]);
    Config::new("m-hub").channel("ops").add(b).add(hub).add(Mqtt::new(mqtt_port).metrics_interval_s(1)).toml()
}

/// `mqtt_port`: None for a box that does not report.
fn edge_config(hub_port: u16, mqtt_port: Option<u16>) -> String {
    let a = Radio::sim("radio-a", "ops", "a")
        .capture("sim:tone:1000:-12")
        .playback("sim:wav-out:{dir}/a-tx.wav")
        .keying("tx_delay_ms", 0)
        .keying("tx_hang_ms", 200);
    let config = Config::new("edge").channel("ops").add(a).add(Uplink::hub(hub_port));
    match mqtt_port {
        Some(port) => config.add(Mqtt::new(port).metrics_interval_s(1)),
        None => config,
    }
    .toml()
}

const WAIT: Duration = Duration::from_secs(15);

fn metrics_of(device: &'static str) -> impl Fn(&Msg) -> bool {
    move |m| m.topic == format!("roipd/{device}/metrics")
}

/// A metrics message whose `stream` has a bitrate above `min_bps` and figures from RTCP
/// receiver reports (str0m sends one every 5 s for audio).
fn stream_flowing(device: &'static str, stream: &'static str, min_bps: u64) -> impl Fn(&Msg) -> bool {
    move |m| {
        let s = &m.json()["streams"][stream];
        metrics_of(device)(m) && s["bitrate_bps"].as_u64().is_some_and(|b| b > min_bps) && s["loss_pct"].is_f64()
    }
}

/// Opus at roipd's settings on loopback: some tens of kb/s, no loss, jitter and RTT of a few ms.
fn assert_plausible(what: &str, s: &Value) {
    let bitrate = s["bitrate_bps"].as_u64().unwrap_or(0);
    assert!((6_000..=200_000).contains(&bitrate), "{what}: bitrate {s}");
    let jitter = s["jitter_ms"].as_f64().unwrap_or(-1.0);
    assert!((0.0..=40.0).contains(&jitter), "{what}: jitter {s}");
    let loss = s["loss_pct"].as_f64().unwrap_or(-1.0);
    assert!((0.0..=5.0).contains(&loss), "{what}: loss {s}");
    if let Some(rtt) = s.get("rtt_ms") {
        let rtt = rtt.as_f64().unwrap_or(-1.0);
        assert!((0.0..=200.0).contains(&rtt), "{what}: rtt {s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_and_uplink_streams_show_up_in_the_metrics() {
    let broker = Broker::start();
    let probe = Probe::connect(broker.anon, &["roipd/+/metrics"]).await;
    let port = free_port();
    let mut hub = Daemon::start_with(&hub_config(port, broker.anon), &[], &[("token", "edge-secret\n")]);
    hub.wait_for("hub listening", WAIT, |d| d.stderr().contains("roipd running"));
    let mut edge = Daemon::start_with(&edge_config(port, Some(broker.anon)), &[], &[("token", "edge-secret\n")]);
    edge.wait_for("uplink up", WAIT, |d| d.stderr().contains("uplink up"));

    // The edge's radio talks: Opus flows edge -> hub and keys the hub's radio.
    edge.drive("a-cor", true);
    hub.wait_for("hub radio keyed by the edge", WAIT, |d| d.line("b-ptt") == Some(true));
    let mark = probe.mark();
    probe.wait_after(mark, "the edge's stream at the hub", WAIT, stream_flowing("m-hub", "edge/ops", 6_000)).await;
    probe.wait_after(mark, "the uplink stream at the edge", WAIT, stream_flowing("edge", "uplink/ops", 6_000)).await;
    // One more round of each, so the figures come from a steady stream.
    let mark = probe.mark();
    let at_hub =
        probe.wait_after(mark, "hub metrics again", WAIT, stream_flowing("m-hub", "edge/ops", 6_000)).await.json();
    let at_edge =
        probe.wait_after(mark, "edge metrics again", WAIT, stream_flowing("edge", "uplink/ops", 6_000)).await.json();
    println!("hub: {}\nedge: {}", at_hub["streams"], at_edge["streams"]);
    assert_plausible("hub edge/ops", &at_hub["streams"]["edge/ops"]);
    assert_plausible("edge uplink/ops", &at_edge["streams"]["uplink/ops"]);
    // The full-ICE side measures the round trip on every consent check.
    assert!(at_edge["streams"]["uplink/ops"]["rtt_ms"].is_f64(), "{}", at_edge["streams"]);
    assert_eq!(at_hub["xruns"], 0, "{at_hub}");

    edge.drive("a-cor", false);
    hub.wait_for("hub radio released", WAIT, |d| d.line("b-ptt") == Some(false));

    // A second box joins under the same name (no [mqtt]: one broker client id per device):
    // its stream gets a key of its own instead of overwriting the first one's.
    let mut twin = Daemon::start_with(&edge_config(port, None), &[], &[("token", "edge-secret\n")]);
    twin.wait_for("twin uplink up", WAIT, |d| d.stderr().contains("uplink up"));
    twin.drive("a-cor", true);
    let mark = probe.mark();
    let both = probe
        .wait_after(mark, "two streams at the hub", WAIT, |m| {
            metrics_of("m-hub")(m) && m.json()["streams"].as_object().is_some_and(|s| s.len() == 2)
        })
        .await
        .json();
    let keys: Vec<&String> = both["streams"].as_object().unwrap().keys().collect();
    assert!(keys.iter().any(|k| *k == "edge/ops"), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("edge#") && k.ends_with("/ops")), "{keys:?}");
    twin.drive("a-cor", false);
    drop(twin);

    // The edges leave: their streams leave the hub's metrics.
    edge.signal(libc::SIGTERM);
    assert!(edge.wait_exit(WAIT).success(), "{}", edge.stderr());
    let mark = probe.mark();
    probe
        .wait_after(mark, "hub metrics without the edge", WAIT, |m| {
            metrics_of("m-hub")(m) && m.json()["streams"].as_object().is_some_and(|s| s.is_empty())
        })
        .await;
    hub.signal(libc::SIGTERM);
    assert!(hub.wait_exit(WAIT).success(), "{}", hub.stderr());
}
