//! Two roipd processes, an edge uplinked to a hub, with simulated radios: audio and keying
//! across the hub, floor contention, preemption, a hub killed mid-talk, and a bad token; the
//! same over `wss://` with a pinned self-signed certificate, and a wrong pin refused.

mod common;
#[allow(dead_code)]
mod fleet;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::config::{Audio, Config, Hub, Mqtt, Radio, Uplink};
use common::{free_port, wav_blocks_dbfs, Daemon};
use fleet::broker::Broker;
use fleet::probe::Probe;

/// Radio B talks a 700 Hz tone and records what it transmits; radio C is a dispatch link:
/// priority 100 preempts field radios, and full duplex keeps its COR counting while the channel
/// keys it.
fn hub_config(port: u16) -> String {
    hub_config_with(port, |h| h)
}

fn hub_config_with(port: u16, hub: impl FnOnce(Hub) -> Hub) -> String {
    let b = Radio::sim("radio-b", "ops", "b")
        .capture("sim:tone:700:-12")
        .playback("sim:wav-out:{dir}/b-tx.wav")
        .keying("tx_delay_ms", 100)
        .keying("tx_hang_ms", 500);
    let c = Radio::sim("radio-c", "ops", "c").priority(100).duplex();
    Config::new("hub").channel("ops").add(b).add(c).add(hub(Hub::new(port).token("edges", "token", &["ops"]))).toml()
}

fn edge_config(port: u16) -> String {
    edge_config_with(Uplink::hub(port), None)
}

fn edge_config_with(uplink: Uplink, mqtt: Option<u16>) -> String {
    let a = Radio::sim("radio-a", "ops", "a")
        .capture("sim:tone:1000:-12")
        .playback("sim:wav-out:{dir}/a-tx.wav")
        .keying("tx_delay_ms", 100)
        .keying("tx_hang_ms", 500);
    let config = Config::new("edge").channel("ops").add(a).add(uplink);
    match mqtt {
        Some(port) => config.add(Mqtt::new(port)).toml(),
        None => config.toml(),
    }
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

/// A hub with `tls = true` and no certificate files: it makes a self-signed certificate in its
/// directory and logs the fingerprint edges pin.
fn start_tls_hub() -> (Daemon, u16, String) {
    let port = free_port();
    let config = hub_config_with(port, |h| h.set("tls", "true").set("state_dir", "\"{dir}\""));
    let mut hub = Daemon::start_with(&config, &[], &[("token", "edge-secret\n")]);
    hub.wait_for("hub listening over TLS", WAIT, |d| d.stderr().contains("roipd running"));
    let log = hub.stderr();
    let fingerprint = log
        .lines()
        .find(|l| l.contains("hub listening (TLS)"))
        .and_then(|l| l.split("fingerprint=").nth(1))
        .and_then(|f| f.split_whitespace().next())
        .unwrap_or_else(|| panic!("no fingerprint logged:\n{log}"))
        .to_owned();
    let key = std::fs::metadata(hub.dir.path().join("hub-key.pem")).expect("key kept in state_dir");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777, 0o600);
    (hub, port, fingerprint)
}

#[test]
fn over_wss_with_a_pinned_self_signed_certificate_cor_on_the_edge_keys_the_hub_radio() {
    let (mut hub, port, fingerprint) = start_tls_hub();
    let started = Instant::now();
    let mut edge = Daemon::start_with(
        &edge_config_with(Uplink::hub_tls(port, &fingerprint), None),
        &[("RUST_LOG", "info,roipd::net::uplink=debug")],
        &[("token", "edge-secret\n")],
    );
    edge.wait_for("uplink up over wss", WAIT, |d| d.stderr().contains("uplink up"));
    eprintln!("edge start to uplink up over wss: {:?}", started.elapsed());
    if let Some(l) = edge.stderr().lines().find(|l| l.contains("hub connected")) {
        eprintln!("{l}");
    }
    hub.wait_for("edge joined", WAIT, |d| d.stderr().contains("peer joined"));
    edge.drive("a-cor", true);
    hub.wait_for("radio B keyed by the edge's talker", WAIT, |d| d.line("b-ptt") == Some(true));
    std::thread::sleep(Duration::from_millis(1000));
    edge.drive("a-cor", false);
    hub.wait_for("radio B released", WAIT, |d| d.line("b-ptt") == Some(false));
    // Radio safety over TLS too: the hub dies while the edge's radio carries B.
    hub.drive("b-cor", true);
    edge.wait_for("A keyed by B across the wss hub", WAIT, |d| d.line("a-ptt") == Some(true));
    hub.signal(libc::SIGKILL);
    edge.wait_for("A unkeyed after the hub died", WAIT, |d| d.line("a-ptt") == Some(false));
    let _ = hub.wait_exit(WAIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_with_a_wrong_pin_refuses_the_hub_with_a_status_and_one_event() {
    let broker = Broker::start();
    let probe = Probe::connect(broker.anon, &["roipd/edge/#"]).await;
    let (hub, port, fingerprint) = start_tls_hub();
    // The right fingerprint with its last byte changed.
    let wrong =
        format!("{}{}", &fingerprint[..fingerprint.len() - 2], if fingerprint.ends_with("00") { "01" } else { "00" });
    let edge = Daemon::start_with(
        &edge_config_with(Uplink::hub_tls(port, &wrong), Some(broker.anon)),
        &[("RUST_LOG", "info,roipd::net::reconnect=debug")],
        &[("token", "edge-secret\n")],
    );
    let event = probe
        .wait("hub_untrusted event", WAIT, |m| m.topic == "roipd/edge/event" && m.json()["kind"] == "hub_untrusted")
        .await
        .json();
    let detail = event["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains("does not match the pinned fingerprint") && detail.contains(&fingerprint), "{event}");
    let status = probe
        .wait("uplink state refused", WAIT, |m| {
            m.topic == "roipd/edge/status" && m.json()["uplink"]["state"] == "refused"
        })
        .await
        .json();
    assert!(status["uplink"]["detail"].as_str().unwrap_or_default().contains(&fingerprint), "{status}");
    // It keeps retrying (backoff from 0.5 s): still refused, still one event, radio never keyed.
    edge.drive("a-cor", true);
    hub.drive("b-cor", true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events =
        probe.all().into_iter().filter(|m| m.topic == "roipd/edge/event" && m.json()["kind"] == "hub_untrusted");
    assert_eq!(events.count(), 1, "one event, not one per retry");
    assert!(edge.stderr().matches("uplink still down").count() >= 2, "retried:\n{}", edge.stderr());
    let statuses: Vec<_> = probe.all().into_iter().filter(|m| m.topic == "roipd/edge/status").collect();
    let last = statuses.last().map(|m| m.json()).unwrap_or_default();
    assert_eq!(last["uplink"]["state"], "refused", "still refused, not down: {last}");
    assert!(
        probe.all().iter().all(|m| m.topic != "roipd/edge/event" || m.json()["kind"] != "link_down"),
        "refused, not a link_down"
    );
    assert_eq!(edge.line("a-ptt"), Some(false));
    assert_eq!(hub.line("c-ptt"), Some(true), "the hub's own radios still work");
    assert!(!hub.stderr().contains("peer joined"), "{}", hub.stderr());
    drop(edge);
    drop(broker);
}

/// Issue 18: an emergency raised by the edge's radio (its emergency GPIO line) reaches a console
/// on the hub (the hub hosts the channel and decides); the radio, denied while the hub's dispatch
/// radio talked, takes the floor at the emergency priority; the console's acknowledgement clears
/// it on the edge too; the edge dying mid-call unkeys the hub radio carrying it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_on_an_edge_radio_reaches_a_hub_console_and_preempts_dispatch() {
    use futures_util::{SinkExt, StreamExt};
    use serde_json::{json, Value};
    use tokio_tungstenite::tungstenite::Message;

    async fn next_emergency(
        ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    ) -> Value {
        loop {
            let m = tokio::time::timeout(WAIT, ws.next()).await.expect("a message in time").unwrap().unwrap();
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "emergency" {
                    return v;
                }
            }
        }
    }

    let port = free_port();
    let mut hub = Daemon::start_with(&hub_config(port), &[], &[("token", "edge-secret\n")]);
    hub.wait_for("hub listening", WAIT, |d| d.stderr().contains("roipd running"));
    let a = Radio::sim("radio-a", "ops", "a").set("emergency", "{ line = \"sim:a-emg\" }");
    let edge_toml = Config::new("edge").channel("ops").add(a).add(Uplink::hub(port)).toml();
    let mut edge = Daemon::start_with(&edge_toml, &[], &[("token", "edge-secret\n")]);
    edge.wait_for("uplink up", WAIT, |d| d.stderr().contains("uplink up"));

    let (mut console, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await.unwrap();
    let hello = json!({"type":"hello","token":"edge-secret","name":"dispatch",
        "members":[{"key":"console","channel":"ops"}]});
    console.send(Message::Text(hello.to_string().into())).await.unwrap();

    // The hub's dispatch radio (priority 100) talks; A keys up and is denied.
    hub.drive("c-cor", true);
    edge.wait_for("A keyed for C", WAIT, |d| d.line("a-ptt") == Some(true));
    edge.drive("a-cor", true);
    edge.wait_for("A told busy", WAIT, |d| d.stderr().contains("floor busy"));
    let t0 = Instant::now();
    edge.drive("a-emg", true);
    let raised = next_emergency(&mut console).await;
    eprintln!("edge emergency line -> hub console notice: {:?}", t0.elapsed());
    assert_eq!(raised["channel"], "ops");
    assert_eq!(raised["active"], true);
    assert_eq!(raised["source"], "radio-a@edge", "{raised}");
    hub.wait_for("A takes the floor at the emergency priority", WAIT, |d| d.stderr().contains("talker=radio-a@edge"));
    eprintln!("edge emergency line -> A holds the hub's floor: {:?}", t0.elapsed());
    hub.wait_for("B carries A", WAIT, |d| d.line("b-ptt") == Some(true));
    edge.wait_for("the edge mirrors it", WAIT, |d| d.stderr().contains("EMERGENCY raised"));

    // The console acknowledges: cleared at the hub, and on the edge.
    console
        .send(Message::Text(json!({"type":"emergency","channel":"ops","action":"ack"}).to_string().into()))
        .await
        .unwrap();
    let cleared = next_emergency(&mut console).await;
    assert_eq!(cleared["active"], false, "{cleared}");
    assert_eq!(cleared["by"], "dispatch");
    edge.wait_for("the edge clears it", WAIT, |d| d.stderr().contains("emergency acknowledged"));

    // Radio safety: the edge dies while its emergency call keys B: the hub unkeys B. (C's
    // squelch closes first, or C, still receiving, would take the freed floor and key B.)
    hub.drive("c-cor", false);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(hub.line("b-ptt"), Some(true), "B still carries A after the ack");
    edge.signal(libc::SIGKILL);
    let killed = Instant::now();
    hub.wait_for("B released when the edge died", WAIT, |d| d.line("b-ptt") == Some(false));
    eprintln!("edge killed -> hub radio B unkeyed: {:?}", killed.elapsed());
    let _ = edge.wait_exit(WAIT);
    hub.signal(libc::SIGTERM);
    assert!(hub.wait_exit(WAIT).success());
}

/// Issue 16, item 2: an edge whose UDP is blocked reaches its hub over ICE-TCP. The test's own
/// thread moves into a private network namespace (`unshare(CLONE_NEWNET)`: the daemons it
/// starts inherit it; nothing leaves it), where nft drops every UDP packet; the hub offers a
/// passive TCP candidate (`ice_tcp_listen`), the edge's active one connects, and the edge's
/// COR keys the hub's radio with its tone, then releases it.
#[test]
fn an_edge_whose_udp_is_dropped_reaches_its_hub_over_ice_tcp() {
    for (tool, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().any(|d| Path::new(d).join(tool).exists());
        assert!(found, "{tool} not found: install Debian package {package} (scripts/setup-debian --test)");
    }
    // SAFETY: unshare affects only this thread (and what it spawns); it is this test's own.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "unshare(CLONE_NEWNET) (needs root): {}", std::io::Error::last_os_error());
    let sh = |args: &[&str]| {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    sh(&["ip", "link", "set", "lo", "up"]);
    let rules = "table inet roipd {\n  chain out {\n    type filter hook output priority 0; policy accept;\n    \
                 meta l4proto udp counter drop\n  }\n}\n";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drop-udp.nft");
    std::fs::write(&file, rules).unwrap();
    sh(&["nft", "-f", file.to_str().unwrap()]);

    let port = free_port();
    let tcp_port = free_port();
    let config = hub_config_with(port, |h| h.set("ice_tcp_listen", format!("\"127.0.0.1:{tcp_port}\"")));
    let mut hub = Daemon::start_with(&config, &[], &[("token", "edge-secret\n")]);
    hub.wait_for("hub listening", WAIT, |d| d.stderr().contains("roipd running"));
    let started = Instant::now();
    let mut edge = Daemon::start_with(&edge_config(port), &[], &[("token", "edge-secret\n")]);
    edge.wait_for("uplink up over ICE-TCP", WAIT, |d| d.stderr().contains("uplink media connected"));
    eprintln!("edge start to uplink media connected over ICE-TCP: {:?}", started.elapsed());
    edge.drive("a-cor", true);
    hub.wait_for("radio B keyed by the edge's talker", WAIT, |d| d.line("b-ptt") == Some(true));
    std::thread::sleep(Duration::from_millis(1500));
    edge.drive("a-cor", false);
    hub.wait_for("radio B released", WAIT, |d| d.line("b-ptt") == Some(false));
    hub.signal(libc::SIGTERM);
    assert!(hub.wait_exit(WAIT).success());
    let blocks = wav_blocks_dbfs(&hub.dir.path().join("b-tx.wav"));
    let loud = blocks.iter().filter(|&&db| db > -30.0).count();
    assert!(loud >= 100, "B transmitted {loud} loud 10 ms blocks of the edge's tone\n{}", hub.stderr());
    // Every UDP packet was dropped: the media went over TCP.
    let out = Command::new("nft").args(["list", "table", "inet", "roipd"]).output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(!listing.contains("packets 0 "), "the drop rule saw the UDP tried first:\n{listing}");
}
