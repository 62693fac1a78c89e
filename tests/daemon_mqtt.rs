//! `roipd run` reporting to a real Mosquitto and obeying fleet commands: retained status and
//! port states, events for COR/PTT, TX inhibit, remote PTT with its maximum duration,
//! get_config and clear errors for unknown ports; the last will after kill -9 and after a
//! freeze; Home Assistant discovery from the config; malformed payloads on every command topic;
//! TLS with a client certificate and a password; a broker that is away at start or mid-talk.

mod common;
#[allow(dead_code)]
mod fleet;

use std::time::Duration;

use common::config::{sign, Audio, Config, Desk, Mqtt, Radio};
use common::Daemon;
use fleet::broker::Broker;
use fleet::probe::{Msg, Probe};
use serde_json::Value;

/// `json` published on the command `topic`, signed with the test fleet key every test box has.
async fn publish_signed(probe: &Probe, topic: &str, json: &str) {
    probe.publish(topic, sign(topic, json)).await;
}

/// The box most tests here run: radios A and B on "ops", B's TX hang `b_hang_ms`; `a`: the
/// first radio (radio-a on A's lines, unless a test swaps it).
fn mqtt_box(port: u16, a: Radio, b_hang_ms: u64) -> String {
    let b = Radio::sim("radio-b", "ops", "b").keying("tx_delay_ms", 0).keying("tx_hang_ms", b_hang_ms);
    Config::new("mqtt-box")
        .status_led("sim:led")
        .channel("ops")
        .channel("fire")
        .add(a)
        .add(b)
        .add(Mqtt::new(port).metrics_interval_s(1))
        .toml()
}

fn radio_a() -> Radio {
    Radio::sim("radio-a", "ops", "a")
}

const WAIT: Duration = Duration::from_secs(10);

fn on(topic: &'static str) -> impl Fn(&Msg) -> bool {
    move |m| m.topic == topic
}

fn state(m: &Msg) -> Value {
    m.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_reports_and_obeys_fleet_commands() {
    let broker = Broker::start();
    let probe = Probe::connect(broker.anon, &["roipd/mqtt-box/#", "test/replies"]).await;
    let mut d = Daemon::start(&mqtt_box(broker.anon, radio_a(), 200));

    probe.wait("status online", WAIT, |m| m.topic == "roipd/mqtt-box/status" && m.json()["online"] == true).await;
    probe.wait("port state of radio-b", WAIT, on("roipd/mqtt-box/state/radio-b")).await;
    // A late subscriber gets both as retained messages.
    let late = Probe::connect(broker.anon, &["roipd/mqtt-box/status", "roipd/mqtt-box/state/+"]).await;
    let status = late.wait("retained status", WAIT, on("roipd/mqtt-box/status")).await;
    assert!(status.retain && status.json()["online"] == true, "{}", status.json());
    let hash = status.json()["config_hash"].as_str().unwrap_or_default().to_string();
    assert!(hash.len() >= 8, "status carries the config's hash: {}", status.json());
    assert_eq!(status.json()["uplink"]["state"], "disabled", "{}", status.json());
    assert!(late.wait("retained port state", WAIT, on("roipd/mqtt-box/state/radio-a")).await.retain);
    drop(late);

    // COR on A keys B: events and retained states follow.
    let mark = probe.mark();
    d.drive("a-cor", true);
    probe
        .wait_after(mark, "cor_open event", WAIT, |m| {
            m.topic == "roipd/mqtt-box/event" && m.json()["kind"] == "cor_open"
        })
        .await;
    probe
        .wait_after(mark, "ptt_on event for B", WAIT, |m| {
            m.topic == "roipd/mqtt-box/event" && m.json()["kind"] == "ptt_on" && m.json()["port"] == "radio-b"
        })
        .await;
    let keyed = probe
        .wait_after(mark, "B keyed state", WAIT, |m| {
            on("roipd/mqtt-box/state/radio-b")(m) && state(m)["tx_keyed"] == true
        })
        .await;
    assert_eq!(state(&keyed)["channel"], "ops");
    d.drive("a-cor", false);
    probe
        .wait_after(mark, "ptt_off after hang", WAIT, |m| {
            m.topic == "roipd/mqtt-box/event" && m.json()["kind"] == "ptt_off" && m.json()["reason"] == "hang_end"
        })
        .await;

    // TX inhibit on B: A's COR no longer keys it.
    let mark = probe.mark();
    publish_signed(&probe, "roipd/mqtt-box/cmd/tx_inhibit", r#"{"request_id":"i1","port":"radio-b","on":true}"#).await;
    let reply = probe
        .wait_after(mark, "inhibit reply", WAIT, |m| {
            m.topic == "roipd/mqtt-box/reply" && m.json()["request_id"] == "i1"
        })
        .await;
    assert_eq!(reply.json()["ok"], true, "{}", reply.json());
    probe
        .wait_after(mark, "B inhibited state", WAIT, |m| {
            on("roipd/mqtt-box/state/radio-b")(m) && state(m)["inhibited"] == true
        })
        .await;
    d.drive("a-cor", true);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.line("b-ptt"), Some(false), "inhibited radio stays unkeyed");
    d.drive("a-cor", false);
    publish_signed(&probe, "roipd/mqtt-box/cmd/tx_inhibit", r#"{"request_id":"i2","port":"radio-b","on":false}"#).await;
    probe
        .wait_after(mark, "inhibit off reply", WAIT, |m| {
            m.topic == "roipd/mqtt-box/reply" && m.json()["request_id"] == "i2"
        })
        .await;

    // Remote PTT on A with a 1 s maximum: keyed, then released by itself.
    let mark = probe.mark();
    probe
        .request(
            "roipd/mqtt-box/cmd/remote_ptt",
            &sign("roipd/mqtt-box/cmd/remote_ptt", r#"{"port":"radio-a","on":true,"max_duration_s":1}"#),
            "test/replies",
            b"ptt-1",
        )
        .await;
    let reply = probe.wait_after(mark, "remote_ptt reply", WAIT, |m| m.topic == "test/replies").await;
    assert_eq!(reply.correlation.as_deref(), Some(&b"ptt-1"[..]));
    assert_eq!(reply.json()["ok"], true, "{}", reply.json());
    d.wait_for("A keyed by remote PTT", WAIT, |d| d.line("a-ptt") == Some(true));
    let keyed_at = std::time::Instant::now();
    d.wait_for("A released at the maximum duration", WAIT, |d| d.line("a-ptt") == Some(false));
    let held = keyed_at.elapsed();
    assert!(held < Duration::from_millis(3500), "remote PTT held {held:?} for a 1 s maximum (+ hang)");

    // Remote PTT released explicitly.
    probe
        .publish(
            "roipd/mqtt-box/cmd/remote_ptt",
            sign(
                "roipd/mqtt-box/cmd/remote_ptt",
                r#"{"request_id":"p2","port":"radio-a","on":true,"max_duration_s":60}"#,
            ),
        )
        .await;
    d.wait_for("A keyed again", WAIT, |d| d.line("a-ptt") == Some(true));
    publish_signed(&probe, "roipd/mqtt-box/cmd/remote_ptt", r#"{"request_id":"p3","port":"radio-a","on":false}"#).await;
    d.wait_for("A released on request", WAIT, |d| d.line("a-ptt") == Some(false));

    // Errors: unknown port, unsupported command; nothing changes.
    let mark = probe.mark();
    publish_signed(&probe, "roipd/mqtt-box/cmd/tx_inhibit", r#"{"request_id":"e1","port":"radio-z","on":true}"#).await;
    let e1 = probe
        .wait_after(mark, "unknown port reply", WAIT, |m| {
            m.topic == "roipd/mqtt-box/reply" && m.json()["request_id"] == "e1"
        })
        .await;
    assert_eq!(e1.json()["ok"], false);
    assert_eq!(e1.json()["error"]["code"], "not_found", "{}", e1.json());

    // get_config: the running config as JSON.
    probe.publish("roipd/mqtt-box/cmd/get_config", r#"{"request_id":"c1"}"#).await;
    let c1 = probe
        .wait_after(mark, "get_config reply", WAIT, |m| {
            m.topic == "roipd/mqtt-box/reply" && m.json()["request_id"] == "c1"
        })
        .await;
    assert_eq!(c1.json()["ok"], true, "{}", c1.json());
    assert_eq!(c1.json()["result"]["device_id"], "mqtt-box", "{}", c1.json());

    // listen off on "ops": A's COR no longer keys B; back on, it does.
    let mark = probe.mark();
    publish_signed(&probe, "roipd/mqtt-box/cmd/listen", r#"{"request_id":"l1","channel":"ops","on":false}"#).await;
    let l1 = probe
        .wait_after(mark, "listen reply", WAIT, |m| m.topic == "roipd/mqtt-box/reply" && m.json()["request_id"] == "l1")
        .await;
    assert_eq!(l1.json()["ok"], true, "{}", l1.json());
    d.drive("a-cor", true);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.line("b-ptt"), Some(false), "a muted channel keys nothing");
    publish_signed(&probe, "roipd/mqtt-box/cmd/listen", r#"{"request_id":"l2","channel":"ops","on":true}"#).await;
    d.wait_for("B keyed once the channel is heard again", WAIT, |d| d.line("b-ptt") == Some(true));
    d.drive("a-cor", false);
    d.wait_for("B released", WAIT, |d| d.line("b-ptt") == Some(false));

    // set_channel: B moves to "fire", where A's COR does not reach it; then back.
    let mark = probe.mark();
    publish_signed(
        &probe,
        "roipd/mqtt-box/cmd/set_channel",
        r#"{"request_id":"s1","port":"radio-b","channel":"fire"}"#,
    )
    .await;
    let s1 = probe
        .wait_after(mark, "set_channel reply", WAIT, |m| {
            m.topic == "roipd/mqtt-box/reply" && m.json()["request_id"] == "s1"
        })
        .await;
    assert_eq!(s1.json()["ok"], true, "{}", s1.json());
    probe
        .wait_after(mark, "B on fire", WAIT, |m| on("roipd/mqtt-box/state/radio-b")(m) && state(m)["channel"] == "fire")
        .await;
    d.drive("a-cor", true);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.line("b-ptt"), Some(false), "B is on another channel");
    d.drive("a-cor", false);
    publish_signed(
        &probe,
        "roipd/mqtt-box/cmd/set_channel",
        r#"{"request_id":"s2","port":"radio-b","channel":"nowhere"}"#,
    )
    .await;
    let s2 = probe
        .wait_after(mark, "bad channel reply", WAIT, |m| {
            m.topic == "roipd/mqtt-box/reply" && m.json()["request_id"] == "s2"
        })
        .await;
    assert_eq!(s2.json()["error"]["code"], "not_found", "{}", s2.json());
    publish_signed(&probe, "roipd/mqtt-box/cmd/set_channel", r#"{"request_id":"s3","port":"radio-b","channel":"ops"}"#)
        .await;
    probe
        .wait_after(mark, "B back on ops", WAIT, |m| {
            on("roipd/mqtt-box/state/radio-b")(m) && state(m)["channel"] == "ops"
        })
        .await;

    // volume and identify.
    publish_signed(&probe, "roipd/mqtt-box/cmd/volume", r#"{"request_id":"v1","channel":"ops","db":-6}"#).await;
    let v1 = probe
        .wait_after(mark, "volume reply", WAIT, |m| m.topic == "roipd/mqtt-box/reply" && m.json()["request_id"] == "v1")
        .await;
    assert_eq!(v1.json()["ok"], true, "{}", v1.json());
    probe.publish("roipd/mqtt-box/cmd/identify", r#"{"request_id":"id1","seconds":1}"#).await;
    let id1 = probe
        .wait_after(mark, "identify reply", WAIT, |m| {
            m.topic == "roipd/mqtt-box/reply" && m.json()["request_id"] == "id1"
        })
        .await;
    assert_eq!(id1.json()["ok"], true, "{}", id1.json());
    std::thread::sleep(Duration::from_millis(1500));
    let led = d.line_log("led");
    assert!(led.iter().filter(|&&l| l).count() >= 2, "the LED blinked: {led:?}");
    assert_eq!(led.last(), Some(&false), "and ends off");

    // reload_config: a broken file is refused and changes nothing; a good one is applied.
    let cfg_path = d.dir.path().join("roipd.toml");
    let good = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(
        &cfg_path,
        good.replace(
            "[channel.fire]",
            "[channel.fire]
labl = \"typo\"",
        ),
    )
    .unwrap();
    let mark = probe.mark();
    publish_signed(&probe, "roipd/mqtt-box/cmd/reload_config", r#"{"request_id":"r1"}"#).await;
    let r1 = probe
        .wait_after(mark, "refused reload", WAIT, |m| {
            m.topic == "roipd/mqtt-box/reply" && m.json()["request_id"] == "r1"
        })
        .await;
    assert_eq!(r1.json()["ok"], false, "{}", r1.json());
    assert!(r1.json()["error"]["message"].as_str().unwrap_or("").contains("labl"), "{}", r1.json());
    d.drive("a-cor", true);
    d.wait_for("still running the old config: B keyed", WAIT, |d| d.line("b-ptt") == Some(true));
    d.drive("a-cor", false);
    d.wait_for("B released", WAIT, |d| d.line("b-ptt") == Some(false));
    // Keyed by a remote PTT when the reload comes: the reload releases it.
    probe
        .publish(
            "roipd/mqtt-box/cmd/remote_ptt",
            sign(
                "roipd/mqtt-box/cmd/remote_ptt",
                r#"{"request_id":"p5","port":"radio-b","on":true,"max_duration_s":60}"#,
            ),
        )
        .await;
    d.wait_for("B keyed before the reload", WAIT, |d| d.line("b-ptt") == Some(true));
    d.write_config(&mqtt_box(broker.anon, radio_a(), 300));
    let mark = probe.mark();
    publish_signed(&probe, "roipd/mqtt-box/cmd/reload_config", r#"{"request_id":"r2"}"#).await;
    let r2 = probe
        .wait_after(mark, "reload reply", WAIT, |m| m.topic == "roipd/mqtt-box/reply" && m.json()["request_id"] == "r2")
        .await;
    assert_eq!(r2.json()["ok"], true, "{}", r2.json());
    d.wait_for("restarted with the new file", WAIT, |d| d.stderr().contains("restarting with the configuration file"));
    assert_eq!(d.line("b-ptt"), Some(false), "the reload released B");
    probe
        .wait_after(mark, "online again", WAIT, |m| m.topic == "roipd/mqtt-box/status" && m.json()["online"] == true)
        .await;
    d.wait_for("sim inputs ready again", WAIT, |d| d.line("a-cor") == Some(false));
    std::thread::sleep(Duration::from_millis(300));
    d.drive("a-cor", true);
    d.wait_for("B keyed after the reload", WAIT, |d| d.line("b-ptt") == Some(true));
    d.drive("a-cor", false);
    d.wait_for("B released", WAIT, |d| d.line("b-ptt") == Some(false));

    // A clean stop, with A keyed by a remote PTT: PTT released, and a retained offline
    // status (no last will needed).
    probe
        .publish(
            "roipd/mqtt-box/cmd/remote_ptt",
            sign(
                "roipd/mqtt-box/cmd/remote_ptt",
                r#"{"request_id":"p4","port":"radio-a","on":true,"max_duration_s":60}"#,
            ),
        )
        .await;
    d.wait_for("A keyed before the stop", WAIT, |d| d.line("a-ptt") == Some(true));
    let mark = probe.mark();
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(WAIT).success(), "{}", d.stderr());
    assert_eq!(d.line("a-ptt"), Some(false), "remote PTT released by the shutdown");
    probe
        .wait_after(mark, "offline status", WAIT, |m| m.topic == "roipd/mqtt-box/status" && m.json()["online"] == false)
        .await;
    drop(broker);
}

fn bridge(port: u16) -> String {
    let a = Radio::sim("radio-a", "ops", "a").capture("sim:tone:1000:-12");
    let b = Radio::sim("radio-b", "ops", "b").playback("sim:wav-out:{dir}/b-tx.wav").keying("tx_delay_ms", 0);
    Config::new("bridge-box").channel("ops").add(a).add(b).add(Mqtt::new(port).metrics_interval_s(1)).toml()
}

/// The broker goes away and comes back while audio is bridged: the audio does not notice,
/// and the status is back (retained, online) after the broker returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_does_not_interrupt_audio_and_status_recovers() {
    let mut broker = Broker::start();
    let probe = Probe::connect(broker.anon, &["roipd/bridge-box/status"]).await;
    let mut d = Daemon::start(&bridge(broker.anon));
    probe.wait("online", WAIT, |m| m.json()["online"] == true).await;
    d.drive("a-cor", true);
    d.wait_for("B keyed", WAIT, |d| d.line("b-ptt") == Some(true));
    std::thread::sleep(Duration::from_millis(500));
    broker.stop();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(d.line("b-ptt"), Some(true), "still bridging with the broker down");
    broker.restart();
    let late = Probe::connect(broker.anon, &["roipd/bridge-box/status"]).await;
    late.wait("status republished after the outage", Duration::from_secs(40), |m| m.json()["online"] == true).await;
    // The restarted broker kept nothing (no persistence): what a newcomer sees is retained
    // because the daemon republished it.
    let newcomer = Probe::connect(broker.anon, &["roipd/bridge-box/status"]).await;
    let status = newcomer.wait("retained status", WAIT, |m| m.json()["online"] == true).await;
    assert!(status.retain);
    d.drive("a-cor", false);
    d.wait_for("B released", WAIT, |d| d.line("b-ptt") == Some(false));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(WAIT).success());
    // Continuous tone on B from start to end of the over: no gap of silence.
    let blocks = common::wav_blocks_dbfs(&d.dir.path().join("b-tx.wav"));
    let loud: Vec<usize> = (0..blocks.len()).filter(|&i| blocks[i] > -30.0).collect();
    assert!(loud.len() > 250, "about 3 s of tone expected, got {} blocks", loud.len());
    let (first, last) = (loud[0], *loud.last().unwrap());
    let gap_at: Vec<usize> = (first..=last).filter(|i| blocks[*i] <= -30.0).map(|i| i - first).collect();
    eprintln!("over of {} blocks, silent ones at {gap_at:?}", last - first + 1);
    // An outage that held up audio would silence B for its whole 2 s (200 blocks). What is
    // allowed is the odd scheduling hiccup of a loaded 2-core test machine.
    let longest = longest_run(&gap_at);
    assert!(longest <= 10, "B went silent for {} ms in a row while the broker was away", longest * 10);
    assert!(gap_at.len() * 100 <= 3 * (last - first + 1), "{} silent blocks in the over", gap_at.len());
    drop(probe);
}

/// Length of the longest run of consecutive numbers.
fn longest_run(sorted: &[usize]) -> usize {
    let (mut best, mut run) = (0, 0);
    for (i, v) in sorted.iter().enumerate() {
        run = if i > 0 && *v == sorted[i - 1] + 1 { run + 1 } else { 1 };
        best = best.max(run);
    }
    best
}

fn will(port: u16) -> String {
    Config::new("will-box").channel("ops").add(radio_a()).add(Mqtt::new(port).keepalive_s(5)).toml()
}

/// How long the retained status takes to turn `offline` with the last will after `kill`.
async fn will_after(probe: &Probe, d: &mut Daemon, kill: i32, within: Duration) -> Duration {
    let topic = "roipd/will-box/status";
    let mark = probe.mark();
    probe.wait_after(mark, "online", WAIT, |m| m.topic == topic && m.json()["online"] == true).await;
    let started =
        probe.all().iter().rev().find(|m| m.topic == topic).map(Msg::json).unwrap_or_default()["started_at"].clone();
    let at = std::time::Instant::now();
    d.signal(kill);
    let will = probe.wait_after(mark, "last will", within, |m| m.topic == topic && m.json()["online"] == false).await;
    let took = at.elapsed();
    assert_eq!(will.json()["reason"], "connection_lost", "{}", will.json());
    assert_eq!(will.json()["started_at"], started, "the will names the run that died");
    took
}

/// `roipd run` killed with SIGKILL: the broker publishes the last will (retained `offline`) at
/// once, because the kernel closes the socket. A box that freezes (SIGSTOP here; a power cut
/// or a cable pulled in the field) closes nothing: the broker notices within 1.5 keepalives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_will_after_kill_9_and_after_a_freeze_within_the_keepalive() {
    let broker = Broker::start();
    let probe = Probe::connect(broker.anon, &["roipd/will-box/status"]).await;
    let config = will(broker.anon);
    let keepalive = Duration::from_secs(5);

    let mut d = Daemon::start(&config);
    let killed = will_after(&probe, &mut d, libc::SIGKILL, keepalive).await;
    let late = Probe::connect(broker.anon, &["roipd/will-box/status"]).await;
    let retained = late.wait("retained offline", WAIT, |m| m.retain).await;
    assert_eq!(retained.json()["online"], false, "{}", retained.json());
    drop(d);

    // Frozen: no FIN, no pings. MQTT has the broker wait 1.5 keepalives after the last packet;
    // Mosquitto 2.0.11 measured here takes 11-12 s for a 5 s keepalive, so allow 3 keepalives.
    // The default keepalive (30 s) would make this test take a minute.
    let mut d = Daemon::start(&config);
    let frozen = will_after(&probe, &mut d, libc::SIGSTOP, keepalive * 3).await;
    println!("last will after SIGKILL: {killed:?}, after SIGSTOP with a 5 s keepalive: {frozen:?}");
    assert!(frozen >= keepalive, "the broker gave up on a silent client after {frozen:?}, before one keepalive");
    d.signal(libc::SIGKILL);
}

fn hass(port: u16) -> String {
    let b = Radio::sim("radio-b", "ops", "b").keying("tx_delay_ms", 0).keying("tx_hang_ms", 0);
    // Home Assistant cannot sign: its TX-inhibit switch acts only with the lab opt-out.
    let mqtt =
        Mqtt::new(port).insecure_unsigned().set("home_assistant", true).set("home_assistant_prefix", "\"ha/site1\"");
    Config::new("ha-box").status_led("sim:led").channel("ops").add(radio_a()).add(b).add(mqtt).toml()
}

/// `[mqtt] home_assistant`: retained discovery configs under the configured prefix, for the box
/// and each port, pointing at the daemon's topics; the TX-inhibit switch and the identify button
/// they describe really inhibit the radio and blink the LED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_discovery_from_the_config_and_its_switches_work() {
    let broker = Broker::start();
    let probe = Probe::connect(broker.anon, &["roipd/ha-box/#"]).await;
    let mut d = Daemon::start(&hass(broker.anon));
    probe.wait("online", WAIT, |m| m.topic == "roipd/ha-box/status" && m.json()["online"] == true).await;
    probe.wait("radio-b state", WAIT, on("roipd/ha-box/state/radio-b")).await;

    // A subscriber that comes later (Home Assistant starting) gets every config, retained.
    let ha = Probe::connect(broker.anon, &["ha/site1/#"]).await;
    let config = |topic: &'static str| {
        let ha = &ha;
        async move { ha.wait(topic, WAIT, move |m| m.topic == topic && m.retain).await.json() }
    };
    let inhibit = config("ha/site1/switch/roipd_ha-box/radio-b_tx_inhibit/config").await;
    let rx = config("ha/site1/binary_sensor/roipd_ha-box/radio-a_rx/config").await;
    let cpu = config("ha/site1/sensor/roipd_ha-box/cpu/config").await;
    let identify = config("ha/site1/button/roipd_ha-box/identify/config").await;
    config("ha/site1/sensor/roipd_ha-box/radio-a_channel/config").await;
    assert_eq!(rx["state_topic"], "roipd/ha-box/state/radio-a", "{rx}");
    assert_eq!(rx["availability"][0]["topic"], "roipd/ha-box/status", "{rx}");
    assert_eq!(cpu["state_topic"], "roipd/ha-box/metrics", "{cpu}");
    assert_eq!(inhibit["device"]["identifiers"][0], "roipd_ha-box", "{inhibit}");
    assert!(!ha.all().iter().any(|m| m.topic.starts_with("homeassistant/")));

    // The switch: ON inhibits radio-b (A's COR no longer keys it), OFF lifts it.
    let (command, payload_on) = (inhibit["command_topic"].as_str().unwrap(), inhibit["payload_on"].as_str().unwrap());
    let mark = probe.mark();
    probe.publish(command, payload_on).await;
    let inhibited = probe
        .wait_after(mark, "radio-b inhibited by the switch", WAIT, |m| {
            on("roipd/ha-box/state/radio-b")(m) && state(m)["inhibited"] == true
        })
        .await;
    // What the switch shows: its value template reads the state's `inhibited`.
    assert_eq!(inhibit["state_topic"], inhibited.topic);
    assert!(inhibit["value_template"].as_str().unwrap().contains("value_json.inhibited"), "{inhibit}");
    d.drive("a-cor", true);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.line("b-ptt"), Some(false), "inhibited by Home Assistant: not keyed");
    d.drive("a-cor", false);
    let mark = probe.mark();
    probe.publish(command, inhibit["payload_off"].as_str().unwrap()).await;
    probe
        .wait_after(mark, "radio-b released by the switch", WAIT, |m| {
            on("roipd/ha-box/state/radio-b")(m) && state(m)["inhibited"] == false
        })
        .await;
    d.drive("a-cor", true);
    d.wait_for("B keyed once the switch is off", WAIT, |d| d.line("b-ptt") == Some(true));
    d.drive("a-cor", false);
    d.wait_for("B released", WAIT, |d| d.line("b-ptt") == Some(false));

    // The button: identify blinks the LED.
    probe.publish(identify["command_topic"].as_str().unwrap(), identify["payload_press"].as_str().unwrap()).await;
    d.wait_for("LED blinking", WAIT, |d| d.line_log("led").iter().filter(|&&l| l).count() >= 2);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(WAIT).success(), "{}", d.stderr());
}

fn strict(port: u16) -> String {
    let b = Radio::sim("radio-b", "ops", "b").keying("tx_delay_ms", 0).keying("tx_hang_ms", 0);
    // Unsigned on purpose (the lab opt-out): this box tests how payloads are parsed, which a
    // fleet key would hide behind `unauthorized` (signed commands are parsed the same way).
    Config::new("strict-box")
        .channel("ops")
        .channel("fire")
        .add(radio_a())
        .add(b)
        .add(Mqtt::new(port).insecure_unsigned())
        .toml()
}

const COMMANDS: [&str; 10] = [
    "set_channel",
    "listen",
    "volume",
    "tx_inhibit",
    "remote_ptt",
    "identify",
    "reload_config",
    "get_config",
    "restart",
    "desk",
];

/// Malformed payloads for every command topic: bad JSON, wrong types, huge values, unknown
/// fields, and what a valid shape with unknown names gets from the daemon.
fn malformed() -> Vec<(String, Vec<u8>, &'static str)> {
    let mut out: Vec<(String, Vec<u8>, &str)> = Vec::new();
    let huge = format!(r#"{{"pad":"{}"}}"#, "x".repeat(20 * 1024)).into_bytes();
    for name in COMMANDS {
        for (payload, code) in [
            (&b"{"[..], "bad_json"),
            (b"{\"port\":", "bad_json"),
            (b"\"radio-a\"", "bad_json"),
            (b"[true]", "bad_json"),
            (b"\xc3\x28", "bad_json"),
            (&huge[..], "payload_too_large"),
            (br#"{"request_id":{"nested":1}}"#, "invalid_args"),
            (
                br#"{"port":"radio-a","channel":"fire","on":true,"db":0,"max_duration_s":5,"seconds":5,"extra":1}"#,
                "unknown_field",
            ),
        ] {
            out.push((name.into(), payload.to_vec(), code));
        }
    }
    let typed: [(&str, Value, &str); 20] = [
        ("set_channel", serde_json::json!({"port": 7, "channel": "fire"}), "invalid_args"),
        ("set_channel", serde_json::json!({"port": "radio-a", "channel": ["fire"]}), "invalid_args"),
        ("set_channel", serde_json::json!({"port": "radio-a", "channel": "#"}), "invalid_args"),
        ("listen", serde_json::json!({"channel": "ops", "on": "false"}), "invalid_args"),
        ("listen", serde_json::json!({"channel": "ops"}), "invalid_args"),
        ("volume", serde_json::json!({"channel": "ops", "db": 1e308}), "out_of_range"),
        ("volume", serde_json::json!({"channel": "ops", "db": -1000}), "out_of_range"),
        ("volume", serde_json::json!({"channel": "ops", "db": null}), "invalid_args"),
        ("tx_inhibit", serde_json::json!({"port": "radio-b", "on": 1}), "invalid_args"),
        ("tx_inhibit", serde_json::json!({"port": "x".repeat(300), "on": true}), "invalid_args"),
        ("remote_ptt", serde_json::json!({"port": "radio-b", "on": true}), "invalid_args"),
        ("remote_ptt", serde_json::json!({"port": "radio-b", "on": true, "max_duration_s": u64::MAX}), "invalid_args"),
        ("remote_ptt", serde_json::json!({"port": "radio-b", "on": true, "max_duration_s": -1}), "out_of_range"),
        ("remote_ptt", serde_json::json!({"port": "radio-b", "on": true, "max_duration_s": 1e9}), "invalid_args"),
        ("identify", serde_json::json!({"seconds": 1_000_000_000_000i64}), "out_of_range"),
        ("self_destruct", serde_json::json!({}), "unknown_command"),
        ("desk", serde_json::json!({"port": "radio-a"}), "invalid_args"),
        ("desk", serde_json::json!({"port": 3, "action": {"action": "ptt", "on": true}}), "invalid_args"),
        ("desk", serde_json::json!({"port": "radio-a", "action": "ptt"}), "invalid_args"),
        ("desk", serde_json::json!({"port": "radio-a", "action": [{"action": "ptt", "on": true}]}), "invalid_args"),
    ];
    for (name, args, code) in typed {
        out.push((name.into(), args.to_string().into_bytes(), code));
    }
    out
}

/// The daemon itself (not a stand-in) under malformed commands on every command topic: one
/// error reply each, no panic, and nothing changes: port states, PTT lines, the running config
/// and the status stay as they were. Then each command's daemon-side error path (unknown port,
/// unknown channel, no identify LED) changes nothing either, and `restart` restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_topic_refuses_malformed_payloads_and_nothing_changes() {
    let broker = Broker::start();
    let probe = Probe::connect(broker.anon, &["roipd/strict-box/#"]).await;
    let mut d = Daemon::start(&strict(broker.anon));
    probe.wait("online", WAIT, |m| m.topic == "roipd/strict-box/status" && m.json()["online"] == true).await;
    for port in ["radio-a", "radio-b"] {
        probe.wait(port, WAIT, move |m| m.topic == format!("roipd/strict-box/state/{port}")).await;
    }
    std::thread::sleep(Duration::from_millis(300));
    let reply_to =
        |id: &'static str| move |m: &Msg| m.topic == "roipd/strict-box/reply" && m.json()["request_id"] == id;
    let mark = probe.mark();
    probe.publish("roipd/strict-box/cmd/get_config", r#"{"request_id":"before"}"#).await;
    let config_before =
        probe.wait_after(mark, "config before", WAIT, reply_to("before")).await.json()["result"].clone();
    assert_eq!(config_before["device_id"], "strict-box");
    let status_count = || probe.all().iter().filter(|m| m.topic == "roipd/strict-box/status").count();
    let statuses_before = status_count();

    let start = probe.mark();
    let items = malformed();
    for (i, (name, payload, code)) in items.iter().enumerate() {
        let mark = probe.mark();
        probe.publish(&format!("roipd/strict-box/cmd/{name}"), payload.clone()).await;
        let shown = String::from_utf8_lossy(&payload[..payload.len().min(60)]).into_owned();
        let reply = probe
            .wait_after(mark, &format!("reply #{i} to {name} {shown}"), WAIT, |m| m.topic == "roipd/strict-box/reply")
            .await;
        let reply = reply.json();
        assert_eq!(reply["ok"], false, "#{i} {name} {shown}: {reply}");
        assert_eq!(reply["error"]["code"], *code, "#{i} {name} {shown}: {reply}");
    }

    // The daemon's own checks: well-formed, but naming what this box does not have.
    let refused: [(&str, &str, &str); 8] = [
        ("set_channel", r#"{"request_id":"d1","port":"radio-z","channel":"fire"}"#, "not_found"),
        ("set_channel", r#"{"request_id":"d2","port":"radio-a","channel":"nowhere"}"#, "not_found"),
        ("listen", r#"{"request_id":"d3","channel":"nowhere","on":false}"#, "not_found"),
        ("volume", r#"{"request_id":"d4","channel":"nowhere","db":-6}"#, "not_found"),
        ("tx_inhibit", r#"{"request_id":"d5","port":"radio-z","on":true}"#, "not_found"),
        ("remote_ptt", r#"{"request_id":"d6","port":"radio-z","on":true,"max_duration_s":5}"#, "not_found"),
        ("identify", r#"{"request_id":"d7","seconds":5}"#, "unavailable"),
        // A radio port is not a desk: nothing keys it through the desk path.
        ("desk", r#"{"request_id":"d8","port":"radio-b","action":{"action":"ptt","on":true}}"#, "not_found"),
    ];
    for (name, payload, code) in refused {
        let mark = probe.mark();
        probe.publish(&format!("roipd/strict-box/cmd/{name}"), payload).await;
        let reply = probe
            .wait_after(mark, &format!("{name} {payload}"), WAIT, |m| m.topic == "roipd/strict-box/reply")
            .await
            .json();
        assert_eq!(
            (reply["ok"].clone(), reply["error"]["code"].clone()),
            (Value::Bool(false), Value::from(code)),
            "{payload}: {reply}"
        );
    }

    // Exactly one reply each, and nothing changed.
    std::thread::sleep(Duration::from_millis(500));
    let since = probe.since(start);
    let replies = since.iter().filter(|m| m.topic == "roipd/strict-box/reply").count();
    assert_eq!(replies, items.len() + refused.len(), "one reply per command");
    assert!(!since.iter().any(|m| m.topic.contains("/state/")), "a port state changed");
    assert!(!since.iter().any(|m| m.topic.ends_with("/event")), "an event happened");
    assert_eq!(status_count(), statuses_before, "the status changed");
    for line in ["a-ptt", "b-ptt"] {
        assert!(d.line_log(line).iter().all(|&keyed| !keyed), "{line} was keyed: {:?}", d.line_log(line));
    }
    let mark = probe.mark();
    probe.publish("roipd/strict-box/cmd/get_config", r#"{"request_id":"after"}"#).await;
    let config_after = probe.wait_after(mark, "config after", WAIT, reply_to("after")).await.json()["result"].clone();
    assert_eq!(config_after, config_before, "the running config changed");
    assert!(!d.stderr().contains("panicked"), "{}", d.stderr());
    assert_eq!(d.child.try_wait().unwrap(), None, "the daemon died:\n{}", d.stderr());

    // Still obeying: A's COR keys B as before.
    d.drive("a-cor", true);
    d.wait_for("B keyed", WAIT, |d| d.line("b-ptt") == Some(true));
    d.drive("a-cor", false);
    d.wait_for("B released", WAIT, |d| d.line("b-ptt") == Some(false));

    // remote_ptt on a TX-inhibited radio: refused, not keyed; allowed again once lifted.
    let mark = probe.mark();
    probe.publish("roipd/strict-box/cmd/tx_inhibit", r#"{"request_id":"i1","port":"radio-b","on":true}"#).await;
    probe
        .wait_after(mark, "inhibited", WAIT, |m| {
            on("roipd/strict-box/state/radio-b")(m) && state(m)["inhibited"] == true
        })
        .await;
    probe
        .publish(
            "roipd/strict-box/cmd/remote_ptt",
            r#"{"request_id":"p1","port":"radio-b","on":true,"max_duration_s":5}"#,
        )
        .await;
    let reply = probe.wait_after(mark, "remote_ptt while inhibited", WAIT, reply_to("p1")).await.json();
    assert_eq!(reply["error"]["code"], "rejected", "{reply}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.line("b-ptt"), Some(false), "keyed while inhibited");
    // A fresh mark: the state before the inhibit also said `inhibited: false`.
    let mark = probe.mark();
    probe.publish("roipd/strict-box/cmd/tx_inhibit", r#"{"request_id":"i2","port":"radio-b","on":false}"#).await;
    probe
        .wait_after(mark, "inhibit lifted", WAIT, |m| {
            on("roipd/strict-box/state/radio-b")(m) && state(m)["inhibited"] == false
        })
        .await;
    probe
        .publish(
            "roipd/strict-box/cmd/remote_ptt",
            r#"{"request_id":"p2","port":"radio-b","on":true,"max_duration_s":5}"#,
        )
        .await;
    let reply = probe.wait_after(mark, "remote_ptt", WAIT, reply_to("p2")).await.json();
    assert_eq!(reply["ok"], true, "{reply}");
    d.wait_for("B keyed remotely", WAIT, |d| d.line("b-ptt") == Some(true));
    probe.publish("roipd/strict-box/cmd/remote_ptt", r#"{"request_id":"p3","port":"radio-b","on":false}"#).await;
    d.wait_for("B released remotely", WAIT, |d| d.line("b-ptt") == Some(false));

    // restart: answered, then the same configuration again (online, same config hash).
    let status = probe.all().into_iter().rev().find(|m| m.topic == "roipd/strict-box/status").unwrap().json();
    let mark = probe.mark();
    probe.publish("roipd/strict-box/cmd/restart", r#"{"request_id":"rs"}"#).await;
    let reply = probe.wait_after(mark, "restart reply", WAIT, reply_to("rs")).await.json();
    assert_eq!(reply["ok"], true, "{reply}");
    probe
        .wait_after(mark, "goodbye", WAIT, |m| m.topic == "roipd/strict-box/status" && m.json()["reason"] == "shutdown")
        .await;
    let again = probe
        .wait_after(mark, "online after the restart", WAIT, |m| {
            m.topic == "roipd/strict-box/status" && m.json()["online"] == true
        })
        .await
        .json();
    assert_eq!(again["config_hash"], status["config_hash"], "{again}");
    assert_ne!(again["started_at"], status["started_at"], "a new run: {again}");
    d.wait_for("restarted", WAIT, |d| d.stderr().contains("restarting with the same configuration"));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(WAIT).success(), "{}", d.stderr());
}

/// `pki`: the broker's certificates; `password`: the file in it holding the password.
fn secure(device: &str, port: u16, pki: &str, user: &str, password: &str) -> String {
    let mqtt = Mqtt::url(&format!("mqtts://localhost:{port}"))
        .set("ca_file", format!("\"{pki}/ca.pem\""))
        .set("client_cert_file", format!("\"{pki}/client.pem\""))
        .set("client_key_file", format!("\"{pki}/client.key\""))
        .set("username", format!("\"{user}\""))
        .set("password_file", format!("\"{pki}/{password}\""));
    Config::new(device).channel("ops").add(radio_a()).add(mqtt).toml()
}

/// `roipd run` over `mqtts://` to a listener that wants a client certificate and a password,
/// everything read from the files the config names: online with the right password, refused
/// (and retrying, never exiting) with the wrong one; no password in the logs or in get_config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_over_tls_with_client_certificate_and_password() {
    use fleet::broker::{PASSWORD, USER, WRONG_PASSWORD};
    let broker = Broker::start();
    let probe = Probe::connect(broker.anon, &["roipd/+/status", "roipd/+/reply"]).await;
    let pki = broker.dir.path().display().to_string();
    let config = |device: &str, password: &str| secure(device, broker.mtls_auth, &pki, USER, password);
    let mut good = Daemon::start(&config("tls-good", "pw-good"));
    let mut bad = Daemon::start(&config("tls-bad", "pw-bad"));
    let started = std::time::Instant::now();
    probe.wait("online over TLS", WAIT, |m| m.topic == "roipd/tls-good/status" && m.json()["online"] == true).await;
    let mark = probe.mark();
    probe.publish("roipd/tls-good/cmd/get_config", r#"{"request_id":"g"}"#).await;
    let reply = probe.wait_after(mark, "get_config", WAIT, |m| m.topic == "roipd/tls-good/reply").await.json();
    assert_eq!(reply["result"]["mqtt"]["password_file"], "***", "{reply}");
    assert_eq!(reply["result"]["mqtt"]["client_key_file"], "***", "{reply}");

    std::thread::sleep(Duration::from_secs(3).saturating_sub(started.elapsed()));
    assert!(!probe.all().iter().any(|m| m.topic.contains("tls-bad")), "a wrong password got in");
    assert_eq!(bad.child.try_wait().unwrap(), None, "a refused broker login is no reason to exit:\n{}", bad.stderr());
    assert!(bad.stderr().contains("cannot connect to the MQTT broker"), "{}", bad.stderr());
    for d in [&mut good, &mut bad] {
        d.signal(libc::SIGTERM);
        assert!(d.wait_exit(WAIT).success(), "{}", d.stderr());
        let log = d.stderr();
        assert!(!log.contains(PASSWORD) && !log.contains(WRONG_PASSWORD), "a password reached the log:\n{log}");
        assert!(!log.contains("PRIVATE KEY"), "key material reached the log");
    }
}

/// Booting before the broker (a power cut that takes the site down): `roipd run` starts, keys
/// radios and keeps retrying; once the broker is up, the status arrives, retained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_starts_without_a_broker_and_reports_once_it_appears() {
    let mut broker = Broker::start();
    broker.stop();
    let mut d = Daemon::start(&strict(broker.anon));
    d.wait_for("running", WAIT, |d| d.stderr().contains("roipd running"));
    d.wait_for("retrying", WAIT, |d| d.stderr().contains("cannot connect to the MQTT broker"));
    d.drive("a-cor", true);
    d.wait_for("B keyed with no broker", WAIT, |d| d.line("b-ptt") == Some(true));
    d.drive("a-cor", false);
    d.wait_for("B released", WAIT, |d| d.line("b-ptt") == Some(false));
    assert_eq!(d.child.try_wait().unwrap(), None, "no broker is no reason to exit:\n{}", d.stderr());

    broker.restart();
    let appeared = std::time::Instant::now();
    let probe = Probe::connect(broker.anon, &["roipd/strict-box/status", "roipd/strict-box/state/+"]).await;
    // The reconnect backoff is at most 30 s (with jitter); after ~2 s of failures it is a few s.
    let status = probe.wait("online", Duration::from_secs(35), |m| m.topic.ends_with("/status")).await;
    println!("online {:?} after the broker appeared", appeared.elapsed());
    assert_eq!(status.json()["online"], true, "{}", status.json());
    probe.wait("radio-b state", WAIT, |m| m.topic.ends_with("/state/radio-b")).await;
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(WAIT).success(), "{}", d.stderr());
}

/// Issue 14: a retained command published while the box is connected, a blank payload (what
/// `mosquitto_pub -r -n` sends to clear one), duplicate keys, an empty command name and a
/// response topic that is the box's own command topic: each gets an error reply and changes
/// nothing (no key-up, no restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_that_must_not_act_get_errors_and_change_nothing() {
    let broker = Broker::start();
    let probe = Probe::connect(broker.anon, &["roipd/mqtt-box/#", "test/replies"]).await;
    let mut d = Daemon::start(&mqtt_box(broker.anon, radio_a(), 200));
    probe.wait("status online", WAIT, |m| m.topic == "roipd/mqtt-box/status" && m.json()["online"] == true).await;
    d.wait_for("A unkeyed", WAIT, |d| d.line("a-ptt") == Some(false));
    let reply = |m: &Msg, id: &str| m.topic == "roipd/mqtt-box/reply" && m.json()["request_id"] == id;

    let mark = probe.mark();
    let keying = r#"{"request_id":"r1","port":"radio-a","on":true,"max_duration_s":5}"#;
    probe.publish_retained("roipd/mqtt-box/cmd/remote_ptt", sign("roipd/mqtt-box/cmd/remote_ptt", keying)).await;
    let r1 = probe.wait_after(mark, "retained reply", WAIT, |m| reply(m, "r1")).await;
    assert_eq!(r1.json()["error"]["code"], "retained_command", "{}", r1.json());
    // Clearing it: an empty retained message, refused too.
    probe.publish_retained("roipd/mqtt-box/cmd/remote_ptt", "").await;
    let dup = r#"{"request_id":"d1","port":"radio-a","on":false,"max_duration_s":5,"on":true}"#;
    publish_signed(&probe, "roipd/mqtt-box/cmd/remote_ptt", dup).await;
    // Unreadable JSON: its request_id cannot be trusted, so the reply has none.
    probe
        .wait_after(mark, "duplicate key reply", WAIT, |m| {
            m.topic == "roipd/mqtt-box/reply"
                && m.json()["command"] == "remote_ptt"
                && m.json()["error"]["code"] == "bad_json"
        })
        .await;
    publish_signed(&probe, "roipd/mqtt-box/cmd/restart", "").await;
    publish_signed(&probe, "roipd/mqtt-box/cmd/", r#"{"request_id":"n1"}"#).await;
    let n1 = probe.wait_after(mark, "empty command name reply", WAIT, |m| reply(m, "n1")).await;
    assert_eq!(n1.json()["error"]["code"], "unknown_command", "{}", n1.json());
    // A reply aimed at the box's own restart topic goes to the reply topic instead.
    probe.request("roipd/mqtt-box/cmd/get_config", r#"{"request_id":"g1"}"#, "roipd/mqtt-box/cmd/restart", b"g").await;
    let g1 = probe.wait_after(mark, "get_config reply", WAIT, |m| reply(m, "g1")).await;
    assert_eq!(g1.json()["ok"], true, "{}", g1.json());
    // A marker after all of them: everything above was handled once its reply is back.
    probe.publish("roipd/mqtt-box/cmd/get_config", r#"{"request_id":"m1"}"#).await;
    probe.wait_after(mark, "marker reply", WAIT, |m| reply(m, "m1")).await;
    let blank_replies = probe
        .since(mark)
        .iter()
        .filter(|m| m.topic == "roipd/mqtt-box/reply" && m.json()["error"]["code"] == "bad_json")
        .count();
    assert!(blank_replies >= 2, "the blank restart and the duplicate keys are bad_json");
    assert!(
        probe.since(mark).iter().all(|m| !m.topic.starts_with("roipd/mqtt-box/cmd/restart")
            || m.payload.is_empty()
            || m.json().get("ok").is_none()),
        "no reply on a command topic"
    );
    assert!(d.line_log("a-ptt").iter().all(|l| !l), "radio A never keyed");
    assert!(!d.stderr().contains("restarting"), "the box did not restart\n{}", d.stderr());
    assert!(d.child.try_wait().unwrap().is_none(), "still running");
}

/// The daemon's PTT record (for `roipd safe-off`) follows a config reload: the lines of the
/// new file are in it before they are opened, the removed ones are gone, and a kill -9 while a
/// line added by the reload is keyed is still released with the config file deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_updates_the_ptt_record_that_safe_off_uses_after_kill9() {
    let broker = Broker::start();
    let probe = Probe::connect(broker.anon, &["roipd/mqtt-box/#"]).await;
    let mut d = Daemon::start(&mqtt_box(broker.anon, radio_a(), 200));
    probe.wait("status online", WAIT, |m| m.topic == "roipd/mqtt-box/status" && m.json()["online"] == true).await;
    let runtime_dir = d.runtime_dir();
    let record = || {
        let files: Vec<_> = std::fs::read_dir(&runtime_dir).unwrap().filter_map(Result::ok).map(|e| e.path()).collect();
        assert_eq!(files.len(), 1, "one PTT record: {files:?}");
        std::fs::read_to_string(&files[0]).unwrap()
    };
    let before = record();
    assert!(before.contains("\"a-ptt\"") && before.contains("\"b-ptt\""), "{before}");

    // radio-a replaced by radio-c, whose PTT is active-low.
    let cfg_path = d.config_path();
    let radio_c = Radio::sim("radio-c", "ops", "c").ptt_active_low();
    d.write_config(&mqtt_box(broker.anon, radio_c, 200));
    let mark = probe.mark();
    publish_signed(&probe, "roipd/mqtt-box/cmd/reload_config", r#"{"request_id":"r1"}"#).await;
    let r1 = probe
        .wait_after(mark, "reload reply", WAIT, |m| m.topic == "roipd/mqtt-box/reply" && m.json()["request_id"] == "r1")
        .await;
    assert_eq!(r1.json()["ok"], true, "{}", r1.json());
    probe
        .wait_after(mark, "online again", WAIT, |m| m.topic == "roipd/mqtt-box/status" && m.json()["online"] == true)
        .await;
    d.wait_for("radio-c's PTT opened unkeyed", WAIT, |d| d.line("c-ptt") == Some(true));
    let after = record();
    assert!(after.contains("\"c-ptt\"") && after.contains("\"b-ptt\"") && !after.contains("\"a-ptt\""), "{after}");

    probe
        .publish(
            "roipd/mqtt-box/cmd/remote_ptt",
            sign(
                "roipd/mqtt-box/cmd/remote_ptt",
                r#"{"request_id":"p1","port":"radio-c","on":true,"max_duration_s":60}"#,
            ),
        )
        .await;
    d.wait_for("radio-c keyed (low)", WAIT, |d| d.line("c-ptt") == Some(false));
    d.signal(libc::SIGKILL);
    d.wait_exit(WAIT);
    std::fs::remove_file(&cfg_path).unwrap();
    let out = d.safe_off();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "safe-off: {}\n{stderr}", out.status);
    assert_eq!(d.line("c-ptt"), Some(true), "radio-c unkeyed from the record alone\n{stderr}");
}

/// Radio A has a long TX hang (its no-audio guard longer still) and an inhibit switch; radio
/// B has a 1 s no-audio guard. The desk talks on "ops" without a microphone: a talker that
/// holds the floor and sends no audio, as a forged or stuck floor message would. The channel's
/// own no-media timeout is at its maximum, so only the radios' guard can end that.
/// `a_hang_ms`: radio A's TX hang.
fn guards(port: u16, a_hang_ms: u64) -> String {
    let a = radio_a()
        .inhibit("sim:a-inhibit")
        .keying("tx_delay_ms", 0)
        .keying("tx_hang_ms", a_hang_ms)
        .keying("no_audio_ms", 60000);
    let b = Radio::sim("radio-b", "ops", "b")
        .keying("tx_delay_ms", 0)
        .keying("tx_hang_ms", 200)
        .keying("no_audio_ms", 1000);
    let desk = Desk::new("desk", &["ops"]).ptt("sim:desk-ptt").playback("sim:wav-out:{dir}/desk.wav");
    Config::new("guard-box")
        .channel_with("ops", &[("no_media_ms", "60000")])
        .add(a)
        .add(b)
        .add(desk)
        .add(Mqtt::new(port))
        .toml()
}

fn event(kind: &'static str, port: &'static str) -> impl Fn(&Msg) -> bool {
    move |m| m.topic == "roipd/guard-box/event" && m.json()["kind"] == kind && m.json()["port"] == port
}

/// remote_ptt means what docs/mqtt.md says: at most max_duration_s with the TX hang included
/// (a 30 s hang used to add 30 s), and TX inhibit cancels it for good (lifting the inhibit used
/// to key again without a new command), whichever inhibit it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_ptt_ends_at_its_maximum_hang_included_and_inhibit_cancels_it() {
    let broker = Broker::start();
    let probe = Probe::connect(broker.anon, &["roipd/guard-box/#"]).await;
    let mut d = Daemon::start(&guards(broker.anon, 30000));
    probe.wait("status online", WAIT, |m| m.topic == "roipd/guard-box/status" && m.json()["online"] == true).await;
    d.wait_for("inputs ready", WAIT, |d| d.line("a-inhibit") == Some(false));

    let mark = probe.mark();
    publish_signed(&probe, "roipd/guard-box/cmd/remote_ptt", r#"{"port":"radio-a","on":true,"max_duration_s":1}"#)
        .await;
    d.wait_for("A keyed by remote PTT", WAIT, |d| d.line("a-ptt") == Some(true));
    let keyed_at = std::time::Instant::now();
    d.wait_for("A released at its maximum, not after the 30 s hang", WAIT, |d| d.line("a-ptt") == Some(false));
    let held = keyed_at.elapsed();
    assert!(held < Duration::from_millis(2500), "remote PTT with a 1 s maximum held {held:?}");
    let off = probe.wait_after(mark, "ptt_off event", WAIT, event("ptt_off", "radio-a")).await.json();
    assert_eq!(off["reason"], "remote", "{off}");
    println!("remote_ptt max_duration_s 1, tx_hang_ms 30000: keyed {held:?}");

    // The fleet's inhibit during a remote PTT: unkeyed now, and still unkeyed once lifted.
    publish_signed(&probe, "roipd/guard-box/cmd/remote_ptt", r#"{"port":"radio-a","on":true,"max_duration_s":60}"#)
        .await;
    d.wait_for("A keyed again", WAIT, |d| d.line("a-ptt") == Some(true));
    let mark = probe.mark();
    publish_signed(&probe, "roipd/guard-box/cmd/tx_inhibit", r#"{"request_id":"i1","port":"radio-a","on":true}"#).await;
    d.wait_for("A unkeyed by the inhibit", WAIT, |d| d.line("a-ptt") == Some(false));
    publish_signed(&probe, "roipd/guard-box/cmd/tx_inhibit", r#"{"request_id":"i2","port":"radio-a","on":false}"#)
        .await;
    probe
        .wait_after(mark, "inhibit lifted", WAIT, |m| {
            on("roipd/guard-box/state/radio-a")(m) && state(m)["inhibited"] == false
        })
        .await;
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(d.line("a-ptt"), Some(false), "lifting the inhibit keyed the cancelled remote PTT again");

    // The same with the inhibit switch.
    publish_signed(&probe, "roipd/guard-box/cmd/remote_ptt", r#"{"port":"radio-a","on":true,"max_duration_s":60}"#)
        .await;
    d.wait_for("A keyed again", WAIT, |d| d.line("a-ptt") == Some(true));
    let mark = probe.mark();
    d.drive("a-inhibit", true);
    d.wait_for("A unkeyed by the switch", WAIT, |d| d.line("a-ptt") == Some(false));
    probe
        .wait_after(mark, "switch on", WAIT, |m| {
            on("roipd/guard-box/state/radio-a")(m) && state(m)["inhibited"] == true
        })
        .await;
    // Marked before the switch is let go, so its state cannot slip in ahead of the mark.
    let mark = probe.mark();
    d.drive("a-inhibit", false);
    probe
        .wait_after(mark, "switch lifted", WAIT, |m| {
            on("roipd/guard-box/state/radio-a")(m) && state(m)["inhibited"] == false
        })
        .await;
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(d.line("a-ptt"), Some(false), "lifting the switch keyed the cancelled remote PTT again");

    // And a clean stop during a remote PTT releases it (as does the TOT: core tests).
    publish_signed(&probe, "roipd/guard-box/cmd/remote_ptt", r#"{"port":"radio-a","on":true,"max_duration_s":60}"#)
        .await;
    d.wait_for("A keyed before the stop", WAIT, |d| d.line("a-ptt") == Some(true));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(WAIT).success(), "{}", d.stderr());
    assert_eq!(d.line("a-ptt"), Some(false), "remote PTT released by the shutdown");
}

/// A talker that holds the floor and sends no audio keys the channel's radios only until
/// their no-audio guard: B (1 s) unkeys and says why; A, whose guard is 60 s, stays keyed.
/// B keys again when channel audio comes (A's carrier), and the talker's release ends it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_talker_without_audio_is_cut_by_the_radios_no_audio_guard() {
    let broker = Broker::start();
    let probe = Probe::connect(broker.anon, &["roipd/guard-box/#"]).await;
    // A's hang short here, so the desk's release ends it soon.
    let mut d = Daemon::start(&guards(broker.anon, 200));
    probe.wait("status online", WAIT, |m| m.topic == "roipd/guard-box/status" && m.json()["online"] == true).await;
    d.wait_for("inputs ready", WAIT, |d| d.line("desk-ptt") == Some(false) && d.line("a-cor") == Some(false));

    let mark = probe.mark();
    d.drive("desk-ptt", true);
    d.wait_for("B keyed for the desk", WAIT, |d| d.line("b-ptt") == Some(true));
    let keyed_at = std::time::Instant::now();
    d.wait_for("B unkeyed by its no-audio guard", WAIT, |d| d.line("b-ptt") == Some(false));
    let held = keyed_at.elapsed();
    let off = probe.wait_after(mark, "ptt_off event", WAIT, event("ptt_off", "radio-b")).await.json();
    assert_eq!(off["reason"], "no_audio", "{off}");
    assert!(
        held >= Duration::from_millis(300) && held < Duration::from_millis(3000),
        "B keyed {held:?} for a 1 s guard"
    );
    println!("desk holding the floor without audio: B (no_audio_ms 1000) keyed {held:?}");
    assert!(d.stderr().contains("no-audio guard"), "{}", d.stderr());
    // The talker still holds the floor: B stays unkeyed; A (60 s guard) is still on air.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(d.line("b-ptt"), Some(false), "B keyed again without audio");
    assert_eq!(d.line("a-ptt"), Some(true), "A's longer guard has not run out");
    let st = probe.all().into_iter().rev().find(|m| m.topic == "roipd/guard-box/state/radio-b").unwrap().json();
    assert_eq!(st["tx_keyed"], false, "{st}");

    // The desk lets go: everything ends, and the next talker keys B at once.
    d.drive("desk-ptt", false);
    d.wait_for("A released after the desk", WAIT, |d| d.line("a-ptt") == Some(false));
    d.drive("a-cor", true);
    d.wait_for("B keyed for A's carrier", WAIT, |d| d.line("b-ptt") == Some(true));
    // A's carrier is channel audio: B stays keyed well past its 1 s guard.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(d.line("b-ptt"), Some(true), "B cut while A's carrier was on the channel");
    d.drive("a-cor", false);
    d.wait_for("B released after A", WAIT, |d| d.line("b-ptt") == Some(false));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(WAIT).success(), "{}", d.stderr());
    assert!(d.line_log("b-ptt").last() == Some(&false) && d.line("a-ptt") == Some(false));
}

/// Issue 15, secure by default: a box with `[mqtt]` but neither a fleet key nor the lab opt-out
/// refuses, from an anonymous client, every command that could key a radio or lock others out
/// (`unauthorized`, saying the box has no fleet key): radio A's PTT line never keys and B is not
/// inhibited; read-only commands still answer. With `insecure_unsigned = true` the same unsigned
/// remote_ptt keys A and its max_duration unkeys it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_fleet_key_commands_that_key_are_refused_unless_the_lab_opt_out_is_set() {
    let broker = Broker::start();
    let probe = Probe::connect(broker.anon, &["roipd/nokey-box/#"]).await;
    let config = |mqtt: Mqtt| {
        let b = Radio::sim("radio-b", "ops", "b").keying("tx_delay_ms", 0);
        Config::new("nokey-box")
            .channel("ops")
            .channel("fire")
            .add(radio_a().keying("tx_delay_ms", 0))
            .add(b)
            .add(mqtt)
            .toml()
    };
    let reply = |id: &'static str| move |m: &Msg| m.topic == "roipd/nokey-box/reply" && m.json()["request_id"] == id;
    let mut d = Daemon::start(&config(Mqtt::new(broker.anon).without_key()));
    probe.wait("online", WAIT, |m| m.topic == "roipd/nokey-box/status" && m.json()["online"] == true).await;
    d.wait_for("A unkeyed", WAIT, |d| d.line("a-ptt") == Some(false));
    assert!(d.stderr().contains("mqtt: note: no fleet_key_file"), "run says so at start:\n{}", d.stderr());

    let mark = probe.mark();
    for (id, name, args) in [
        ("p1", "remote_ptt", r#""port":"radio-a","on":true,"max_duration_s":5"#),
        ("i1", "tx_inhibit", r#""port":"radio-b","on":true"#),
        ("s1", "set_channel", r#""port":"radio-b","channel":"fire""#),
        ("r1", "restart", ""),
    ] {
        let sep = if args.is_empty() { "" } else { "," };
        probe.publish(&format!("roipd/nokey-box/cmd/{name}"), format!(r#"{{"request_id":"{id}"{sep}{args}}}"#)).await;
        let r = probe.wait_after(mark, id, WAIT, reply(id)).await.json();
        assert_eq!(r["error"]["code"], "unauthorized", "{name}: {r}");
        assert!(r["error"]["message"].as_str().unwrap_or("").contains("no fleet key"), "{name}: {r}");
    }
    // Read-only commands still run.
    probe.publish("roipd/nokey-box/cmd/get_config", r#"{"request_id":"g1"}"#).await;
    assert_eq!(probe.wait_after(mark, "g1", WAIT, reply("g1")).await.json()["ok"], true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(d.line_log("a-ptt").iter().all(|l| !l), "radio A never keyed: {:?}", d.line_log("a-ptt"));
    // B is neither inhibited nor moved: A's COR still keys it.
    d.drive("a-cor", true);
    d.wait_for("B keyed by A's COR", WAIT, |d| d.line("b-ptt") == Some(true));
    d.drive("a-cor", false);
    assert!(!d.stderr().contains("restarting"), "the box did not restart");
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(WAIT).success(), "{}", d.stderr());

    // The lab opt-out: the old behaviour, loudly.
    let mut d = Daemon::start(&config(Mqtt::new(broker.anon).insecure_unsigned()));
    probe
        .wait_after(probe.mark(), "online again", WAIT, |m| {
            m.topic == "roipd/nokey-box/status" && m.json()["online"] == true
        })
        .await;
    d.wait_for("A unkeyed", WAIT, |d| d.line("a-ptt") == Some(false));
    assert!(d.stderr().contains("mqtt.insecure_unsigned: WARNING: INSECURE"), "{}", d.stderr());
    let mark = probe.mark();
    probe
        .publish(
            "roipd/nokey-box/cmd/remote_ptt",
            r#"{"request_id":"p2","port":"radio-a","on":true,"max_duration_s":1}"#,
        )
        .await;
    assert_eq!(probe.wait_after(mark, "p2", WAIT, reply("p2")).await.json()["ok"], true);
    d.wait_for("A keyed by an unsigned remote_ptt", WAIT, |d| d.line("a-ptt") == Some(true));
    d.wait_for("A unkeyed after max_duration", WAIT, |d| d.line("a-ptt") == Some(false));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(WAIT).success(), "{}", d.stderr());
}

/// Issue 18: `emergency {port}` over MQTT (signed) raises an emergency on the port's channel with
/// the port as caller: radio A, denied while B talks, takes the floor and B carries it; the
/// `emergency` event and the retained state; a second raise changes nothing; `ack_emergency`
/// clears it (event, retained `active: false`); unsigned ones are refused. Stopping the daemon
/// while the emergency keys B unkeys it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_emergency_and_ack_emergency_commands() {
    let broker = Broker::start();
    let probe = Probe::connect(broker.anon, &["roipd/mqtt-box/#"]).await;
    let mut d = Daemon::start(&mqtt_box(broker.anon, radio_a().keying("tx_delay_ms", 0).duplex(), 200));
    probe.wait("status online", WAIT, |m| m.topic == "roipd/mqtt-box/status" && m.json()["online"] == true).await;
    let reply = |id: &'static str| move |m: &Msg| m.topic == "roipd/mqtt-box/reply" && m.json()["request_id"] == id;
    let retained =
        |active: bool| move |m: &Msg| m.topic == "roipd/mqtt-box/emergency/ops" && m.json()["active"] == active;

    // B talks; A (full duplex: its COR counts while it transmits) keys up and is denied.
    d.drive("b-cor", true);
    d.wait_for("A keyed for B", WAIT, |d| d.line("a-ptt") == Some(true));
    d.drive("a-cor", true);
    d.wait_for("A denied", WAIT, |d| d.stderr().contains("floor busy"));

    let mark = probe.mark();
    probe.publish("roipd/mqtt-box/cmd/emergency", r#"{"request_id":"u1","port":"radio-a"}"#).await;
    assert_eq!(probe.wait_after(mark, "u1", WAIT, reply("u1")).await.json()["error"]["code"], "unauthorized");

    publish_signed(&probe, "roipd/mqtt-box/cmd/emergency", r#"{"request_id":"e1","port":"radio-a"}"#).await;
    let r = probe.wait_after(mark, "e1", WAIT, reply("e1")).await.json();
    assert_eq!(r["result"]["emergency"], "raised", "{r}");
    let event = probe
        .wait_after(mark, "emergency event", WAIT, |m| {
            m.topic == "roipd/mqtt-box/event" && m.json()["kind"] == "emergency"
        })
        .await
        .json();
    assert_eq!((event["channel"].as_str(), event["port"].as_str()), (Some("ops"), Some("radio-a")), "{event}");
    assert_eq!(event["reason"], "fleet");
    probe.wait_after(mark, "emergency state", WAIT, retained(true)).await;
    let late = Probe::connect(broker.anon, &["roipd/mqtt-box/emergency/#"]).await;
    late.wait("the retained state for a late subscriber", WAIT, retained(true)).await;
    d.wait_for("A takes the floor", WAIT, |d| d.stderr().contains("talker=radio-a"));
    // B, simplex, keys for A once its own squelch closes.
    d.drive("b-cor", false);
    d.wait_for("B keyed for A", WAIT, |d| d.line("b-ptt") == Some(true));

    publish_signed(&probe, "roipd/mqtt-box/cmd/emergency", r#"{"request_id":"e2","channel":"ops"}"#).await;
    assert_eq!(probe.wait_after(mark, "e2", WAIT, reply("e2")).await.json()["result"]["emergency"], "already_active");
    publish_signed(&probe, "roipd/mqtt-box/cmd/ack_emergency", r#"{"request_id":"k0","channel":"fire"}"#).await;
    assert_eq!(probe.wait_after(mark, "k0", WAIT, reply("k0")).await.json()["error"]["code"], "rejected");

    publish_signed(&probe, "roipd/mqtt-box/cmd/ack_emergency", r#"{"request_id":"k1","channel":"ops"}"#).await;
    assert_eq!(probe.wait_after(mark, "k1", WAIT, reply("k1")).await.json()["result"]["emergency"], "acknowledged");
    probe
        .wait_after(mark, "cleared event", WAIT, |m| {
            m.topic == "roipd/mqtt-box/event" && m.json()["kind"] == "emergency_cleared"
        })
        .await;
    let s = probe.wait_after(mark, "state cleared", WAIT, retained(false)).await.json();
    assert_eq!(s["acked_by"], "fleet", "{s}");
    let late = Probe::connect(broker.anon, &["roipd/mqtt-box/emergency/#"]).await;
    late.wait("the retained cleared state", WAIT, retained(false)).await;

    // A still talks (the ack takes no floor away); stopping the box unkeys B.
    assert_eq!(d.line("b-ptt"), Some(true));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(WAIT).success(), "{}", d.stderr());
    assert_eq!(d.line("b-ptt"), Some(false), "B unkeyed on shutdown");
}
