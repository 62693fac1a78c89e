//! The fleet client against a real Mosquitto on 127.0.0.1 (started and killed by each test).
//!
//! The client runs in a child process (this binary re-executed, see `tests/fleet/agent.rs`)
//! with a tiny stand-in daemon, so the last will can be tested with SIGKILL. The test side
//! watches with its own MQTT 5 client and sends odd payloads with `mosquitto_pub`.
//! A missing `mosquitto` fails these tests with the packages to install; they never skip.

mod fleet;

use std::process::Command;
use std::time::{Duration, Instant};

use fleet::agent::{self, Agent, AgentConfig};
use fleet::broker::{self, Broker, PASSWORD, USER, WRONG_PASSWORD};
use fleet::probe::{Msg, Probe};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(15);

/// Not a test of its own: the entry point of the agent child process.
#[test]
fn child_agent() {
    if let Ok(cfg) = std::env::var(agent::AGENT_ENV) {
        agent::run(&cfg);
    }
}

fn anon_url(b: &Broker) -> String {
    format!("mqtt://127.0.0.1:{}", b.anon)
}

fn is_status(dev: &str, online: bool) -> impl Fn(&Msg) -> bool + '_ {
    move |m| m.topic == format!("roipd/{dev}/status") && m.json()["online"] == online
}

fn is_reply(m: &Msg, dev: &str) -> bool {
    m.topic == format!("roipd/{dev}/reply")
}

/// Send a command and return its reply (matched by `request_id`).
async fn call(probe: &Probe, dev: &str, name: &str, mut args: Value, id: &str) -> Value {
    args["request_id"] = json!(id);
    let mark = probe.mark();
    probe.publish(&format!("roipd/{dev}/cmd/{name}"), args.to_string()).await;
    let reply = probe
        .wait_after(mark, &format!("reply to {name} {id}"), T, |m| is_reply(m, dev) && m.json()["request_id"] == id)
        .await
        .json();
    assert_eq!(reply["command"], name, "{reply}");
    reply
}

fn assert_ok(reply: &Value) -> &Value {
    assert_eq!(reply["ok"], true, "{reply}");
    assert!(reply.get("error").is_none(), "{reply}");
    &reply["result"]
}

fn assert_err(reply: &Value, code: &str) {
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["error"]["code"], code, "{reply}");
    assert!(reply["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{reply}");
}

fn state_of(probe: &Probe, dev: &str, port: &str) -> Option<Value> {
    let topic = format!("roipd/{dev}/state/{port}");
    probe.all().iter().rev().find(|m| m.topic == topic).map(Msg::json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_status_state_metrics_and_last_will_after_sigkill() {
    let broker = Broker::start();
    let dev = "lw-gw";
    let mut cfg = AgentConfig::new(dev, anon_url(&broker));
    cfg.metrics_interval_s = 1;
    cfg.home_assistant = true;
    let mut agent = Agent::spawn(&cfg);
    let probe = Probe::connect(broker.anon, &[&format!("roipd/{dev}/#")]).await;

    // The agent sets uplink and config hash right after starting: the status may be published
    // once without them, then again with them.
    let status = probe
        .wait("status online with uplink and config hash", T, |m| {
            is_status(dev, true)(m) && m.json()["uplink"]["state"] == "up" && m.json()["config_hash"].is_string()
        })
        .await
        .json();
    assert_eq!(status["device"], dev);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["started_at"].as_str().is_some_and(|s| s.ends_with('Z')), "{status}");
    assert!(status["uptime_s"].is_u64(), "{status}");
    assert!(status["config_hash"].as_str().is_some_and(|h| h.len() == 16), "{status}");

    // Retained: a subscriber that comes later gets status and every port state at once.
    let late = Probe::connect(broker.anon, &[&format!("roipd/{dev}/status"), &format!("roipd/{dev}/state/+")]).await;
    late.wait("retained status", T, |m| m.retain && is_status(dev, true)(m)).await;
    let r1 = late.wait("retained radio1", T, |m| m.retain && m.topic.ends_with("/state/radio1")).await.json();
    assert_eq!(
        r1,
        json!({"channel": "ops", "rx_active": false, "tx_keyed": false, "locked_out": false, "inhibited": false})
    );
    let r2 = late.wait("retained radio2", T, |m| m.retain && m.topic.ends_with("/state/radio2")).await.json();
    assert_eq!(r2["channel"], "fire");

    // Home Assistant discovery: retained configs pointing at our topics; the TX-inhibit switch
    // sends a valid command.
    let ha = Probe::connect(broker.anon, &["homeassistant/#"]).await;
    let rx =
        ha.wait("HA rx sensor", T, |m| m.retain && m.topic.ends_with("/roipd_lw-gw/radio1_rx/config")).await.json();
    assert_eq!(rx["state_topic"], format!("roipd/{dev}/state/radio1"));
    assert_eq!(rx["availability"][0]["topic"], format!("roipd/{dev}/status"));
    ha.wait("HA cpu sensor", T, |m| m.topic == "homeassistant/sensor/roipd_lw-gw/cpu/config").await;
    let switch =
        ha.wait("HA inhibit switch", T, |m| m.topic.ends_with("/roipd_lw-gw/radio2_tx_inhibit/config")).await.json();
    let mark = probe.mark();
    probe.publish(switch["command_topic"].as_str().unwrap(), switch["payload_on"].as_str().unwrap()).await;
    probe
        .wait_after(mark, "inhibited by the HA switch", T, |m| {
            m.topic.ends_with("/state/radio2") && m.json()["inhibited"] == true
        })
        .await;

    // Periodic metrics: the daemon's numbers plus the process's own.
    let metrics = probe.wait("metrics", T, |m| m.topic == format!("roipd/{dev}/metrics")).await.json();
    assert_eq!(
        metrics["streams"]["ops"],
        json!({"rtt_ms": 12.5, "jitter_ms": 3.0, "loss_pct": 0.5, "bitrate_bps": 24000})
    );
    assert_eq!(metrics["xruns"], 1);
    assert_eq!(metrics["mqtt_dropped"], 0);
    assert!(metrics["mem_rss_mb"].as_f64().is_some_and(|m| m > 0.0), "{metrics}");
    assert!(metrics["uptime_s"].is_u64() && metrics["time"].is_string(), "{metrics}");
    // The second sample has a CPU figure (the first only starts the measurement).
    let mark = probe.mark();
    let metrics = probe.wait_after(mark, "second metrics", T, |m| m.topic.ends_with("/metrics")).await.json();
    assert!(metrics["cpu_pct"].as_f64().is_some(), "{metrics}");

    // SIGKILL: the broker publishes the last will, retained.
    let mark = probe.mark();
    agent.kill();
    let will = probe.wait_after(mark, "last will", T, is_status(dev, false)).await.json();
    assert_eq!(will["reason"], "connection_lost", "{will}");
    assert_eq!(will["device"], dev);
    assert_eq!(will["started_at"], status["started_at"], "the will names the run that died");
    let later = Probe::connect(broker.anon, &[&format!("roipd/{dev}/status")]).await;
    later.wait("retained offline", T, |m| m.retain && is_status(dev, false)(m)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_is_answered_by_request_id_and_by_mqtt5_response_topic() {
    let broker = Broker::start();
    let dev = "cmd-gw";
    let mut cfg = AgentConfig::new(dev, anon_url(&broker));
    // The anonymous listener ignores credentials; they are here so get_config has secrets.
    cfg.username = Some(USER.into());
    cfg.password_file = Some(broker.path("pw-good"));
    let mut agent = Agent::spawn(&cfg);
    let probe = Probe::connect(broker.anon, &[&format!("roipd/{dev}/#"), "probe-resp/#"]).await;
    probe.wait("online", T, is_status(dev, true)).await;
    probe.wait("radio1 state", T, |m| m.topic.ends_with("/state/radio1")).await;

    // set_channel: success changes the retained port state; unknown names are the daemon's errors.
    let mark = probe.mark();
    let r = call(&probe, dev, "set_channel", json!({"port": "radio1", "channel": "tac"}), "c1").await;
    assert_eq!(assert_ok(&r), &json!({"port": "radio1", "channel": "tac"}));
    probe
        .wait_after(mark, "radio1 on tac", T, |m| m.topic.ends_with("/state/radio1") && m.json()["channel"] == "tac")
        .await;
    assert_err(&call(&probe, dev, "set_channel", json!({"port": "radio9", "channel": "tac"}), "c2").await, "not_found");
    assert_err(
        &call(&probe, dev, "set_channel", json!({"port": "radio1", "channel": "nope"}), "c3").await,
        "not_found",
    );

    let r = call(&probe, dev, "listen", json!({"channel": "ops", "on": true}), "l1").await;
    assert_eq!(assert_ok(&r), &json!({"channel": "ops", "on": true}));
    let r = call(&probe, dev, "volume", json!({"channel": "ops", "db": -12.5}), "v1").await;
    assert_eq!(assert_ok(&r)["db"], -12.5);

    // TX inhibit blocks remote PTT; lifting it allows keying, which publishes state and events.
    let r = call(&probe, dev, "tx_inhibit", json!({"port": "radio2", "on": true}), "i1").await;
    assert_eq!(assert_ok(&r)["inhibited"], true);
    let ptt = json!({"port": "radio2", "on": true, "max_duration_s": 30});
    assert_err(&call(&probe, dev, "remote_ptt", ptt.clone(), "p1").await, "rejected");
    assert_ok(&call(&probe, dev, "tx_inhibit", json!({"port": "radio2", "on": false}), "i2").await);
    let mark = probe.mark();
    let r = call(&probe, dev, "remote_ptt", ptt, "p2").await;
    assert_eq!(assert_ok(&r), &json!({"port": "radio2", "keyed": true, "max_duration_s": 30}));
    let state = probe
        .wait_after(mark, "radio2 keyed", T, |m| m.topic.ends_with("/state/radio2") && m.json()["tx_keyed"] == true)
        .await;
    assert_eq!(state.json()["tot_remaining_s"], 30.0);
    let ev = probe
        .wait_after(mark, "ptt_on event", T, |m| m.topic.ends_with("/event") && m.json()["kind"] == "ptt_on")
        .await;
    assert_eq!((ev.json()["port"].clone(), ev.json()["reason"].clone()), (json!("radio2"), json!("remote")));
    assert!(!ev.retain);
    // Releasing needs no duration.
    let mark = probe.mark();
    assert_ok(&call(&probe, dev, "remote_ptt", json!({"port": "radio2", "on": false}), "p3").await);
    probe.wait_after(mark, "ptt_off event", T, |m| m.topic.ends_with("/event") && m.json()["kind"] == "ptt_off").await;

    let r = call(&probe, dev, "identify", json!({"seconds": 5}), "id1").await;
    assert_eq!(assert_ok(&r), &json!({"seconds": 5}));
    assert_ok(&call(&probe, dev, "reload_config", json!({}), "rc1").await);

    // get_config comes back redacted: no password, no token file, but the harmless parts.
    let r = call(&probe, dev, "get_config", json!({}), "gc1").await;
    let config = assert_ok(&r);
    assert_eq!(config["mqtt"]["password_file"], "***");
    assert_eq!(config["mqtt"]["password"], "***");
    assert_eq!(config["hub"]["token"]["ops"]["secret_file"], "***");
    assert_eq!(config["hub"]["token"]["ops"]["channels"], json!(["ops"]));
    assert_eq!(config["port"]["radio1"]["keying"]["tot_ms"], 180000);
    assert!(!r.to_string().contains(PASSWORD));

    // An integer request_id is echoed as an integer.
    let mark = probe.mark();
    probe.publish(&format!("roipd/{dev}/cmd/identify"), r#"{"seconds":1,"request_id":77}"#).await;
    let r = probe.wait_after(mark, "reply 77", T, |m| is_reply(m, dev)).await.json();
    assert_eq!((r["ok"].clone(), r["request_id"].clone()), (json!(true), json!(77)));

    // MQTT 5 request/response: the reply goes to the response topic with the correlation data,
    // and still echoes request_id when there is one; errors go the same way.
    let mark = probe.mark();
    let corr = b"\x00\x01binary-corr";
    probe
        .request(&format!("roipd/{dev}/cmd/identify"), r#"{"seconds":3,"request_id":"m5"}"#, "probe-resp/a", corr)
        .await;
    let m = probe.wait_after(mark, "response topic reply", T, |m| m.topic == "probe-resp/a").await;
    assert_eq!(m.correlation.as_deref(), Some(&corr[..]));
    assert_eq!(m.json()["request_id"], "m5");
    assert_eq!(m.json()["result"], json!({"seconds": 3}));
    probe.request(&format!("roipd/{dev}/cmd/volume"), r#"{"channel":"ops","db":0}"#, "probe-resp/b", b"c2").await;
    let m = probe.wait_after(mark, "reply without request_id", T, |m| m.topic == "probe-resp/b").await;
    assert_eq!(m.correlation.as_deref(), Some(&b"c2"[..]));
    assert_eq!(m.json()["ok"], true);
    assert!(m.json().get("request_id").is_none());
    probe.request(&format!("roipd/{dev}/cmd/identify"), r#"{"seconds":0}"#, "probe-resp/c", b"c3").await;
    let m = probe.wait_after(mark, "error on response topic", T, |m| m.topic == "probe-resp/c").await;
    assert_err(&m.json(), "out_of_range");
    assert_eq!(m.correlation.as_deref(), Some(&b"c3"[..]));
    // Nothing of this went to the default reply topic.
    assert!(probe.since(mark).iter().filter(|m| is_reply(m, dev)).count() == 0);

    // restart: answered first, then a graceful goodbye (retained offline, reason shutdown).
    let mark = probe.mark();
    assert_ok(&call(&probe, dev, "restart", json!({}), "rs1").await);
    let bye = probe.wait_after(mark, "graceful offline", T, is_status(dev, false)).await;
    assert_eq!(bye.json()["reason"], "shutdown");
    assert!(agent.wait_exit(T).await.success());
    assert_eq!(agent.last_line("EXIT").as_deref(), Some("EXIT"));
    // A clean DISCONNECT: the broker did not also publish the last will.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let will = probe.since(mark).into_iter().find(|m| m.json()["reason"] == "connection_lost");
    assert!(
        will.is_none(),
        "last will after a clean shutdown; agent log:\n{}\nbroker log:\n{}",
        agent.stderr(),
        broker.log()
    );

    // Every valid command reached the daemon exactly once; invalid ones never did.
    let cmds = agent.stdout().iter().filter(|l| l.starts_with("CMD ")).count();
    assert_eq!(cmds, 17, "{:?}", agent.stdout());
}

/// One malformed payload for every command topic and every error class.
fn barrage() -> Vec<(String, Vec<u8>, &'static str)> {
    let long = "x".repeat(100);
    let mut items: Vec<(&str, Value, &str)> = vec![
        ("set_channel", json!({"port": 1, "channel": "ops"}), "invalid_args"),
        ("set_channel", json!({"port": long, "channel": "ops"}), "invalid_args"),
        ("set_channel", json!({"port": "radio1"}), "invalid_args"),
        ("listen", json!({"channel": "ops", "on": "yes"}), "invalid_args"),
        ("listen", json!({"channel": "a/b", "on": true}), "invalid_args"),
        ("volume", json!({"channel": "ops", "db": "loud"}), "invalid_args"),
        ("volume", json!({"channel": "ops", "db": 1e300}), "out_of_range"),
        ("volume", json!({"channel": "ops", "db": -61}), "out_of_range"),
        ("tx_inhibit", json!({"port": "radio1", "on": 1}), "invalid_args"),
        ("tx_inhibit", json!({"port": "radio1", "on": null}), "invalid_args"),
        ("remote_ptt", json!({"port": "radio1", "on": true}), "invalid_args"),
        ("remote_ptt", json!({"port": "radio1", "on": true, "max_duration_s": "30"}), "invalid_args"),
        ("remote_ptt", json!({"port": "radio1", "on": true, "max_duration_s": 99_999_999_999u64}), "out_of_range"),
        ("remote_ptt", json!({"port": "radio1", "on": true, "max_duration_s": 0}), "out_of_range"),
        ("identify", json!({"seconds": "5"}), "invalid_args"),
        ("identify", json!({"seconds": 1.5}), "invalid_args"),
        ("identify", json!({"seconds": 4_294_967_296_000u64}), "out_of_range"),
        ("reload_config", json!({"force": true}), "unknown_field"),
        ("get_config", json!({"all": 1}), "unknown_field"),
        ("restart", json!({"now": true}), "unknown_field"),
        ("reboot", json!({}), "unknown_command"),
        ("SET_CHANNEL", json!({"port": "radio1", "channel": "ops"}), "unknown_command"),
    ];
    for name in ["set_channel", "listen", "volume", "tx_inhibit", "remote_ptt", "identify"] {
        items.push((
            name,
            json!({"port": "radio1", "channel": "ops", "on": true, "db": 0, "max_duration_s": 5,
                                  "seconds": 5, "bogus": 1}),
            "unknown_field",
        ));
    }
    let mut out: Vec<(String, Vec<u8>, &str)> = items
        .into_iter()
        .enumerate()
        .map(|(i, (name, mut v, code))| {
            v["request_id"] = json!(format!("bad-{i}"));
            (name.to_string(), v.to_string().into_bytes(), code)
        })
        .collect();
    let oversize = format!(r#"{{"seconds":5,"pad":"{}"}}"#, "x".repeat(20 * 1024)).into_bytes();
    for name in [
        "set_channel",
        "listen",
        "volume",
        "tx_inhibit",
        "remote_ptt",
        "identify",
        "reload_config",
        "get_config",
        "restart",
    ] {
        for (payload, code) in [
            (&b"{"[..], "bad_json"),
            (b"{\"port\": \"radio1\",}", "bad_json"),
            (b"[1, 2]", "bad_json"),
            (b"\xff\xfe", "bad_json"),
            (&oversize, "payload_too_large"),
        ] {
            out.push((name.to_string(), payload.to_vec(), code));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_barrage_gets_one_error_reply_each_and_changes_nothing() {
    let broker = Broker::start();
    let dev = "bad-gw";
    let mut agent = Agent::spawn(&AgentConfig::new(dev, anon_url(&broker)));
    let probe = Probe::connect(broker.anon, &[&format!("roipd/{dev}/#")]).await;
    probe.wait("online", T, is_status(dev, true)).await;
    probe.wait("radio2 state", T, |m| m.topic.ends_with("/state/radio2")).await;
    let (r1, r2) = (state_of(&probe, dev, "radio1"), state_of(&probe, dev, "radio2"));

    // Sent by mosquitto_pub, a client that is not ours; one at a time so each reply is matched.
    let mosquitto_pub = broker::require("mosquitto_pub");
    let start = probe.mark();
    let items = barrage();
    for (i, (name, payload, code)) in items.iter().enumerate() {
        let file = broker.dir.path().join("payload");
        std::fs::write(&file, payload).unwrap();
        let mark = probe.mark();
        let out = Command::new(&mosquitto_pub)
            .args(["-h", "127.0.0.1", "-p", &broker.anon.to_string(), "-q", "1"])
            .args(["-t", &format!("roipd/{dev}/cmd/{name}"), "-f"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "mosquitto_pub: {}", String::from_utf8_lossy(&out.stderr));
        let what = format!("error reply #{i} ({name}: {})", String::from_utf8_lossy(&payload[..payload.len().min(80)]));
        let reply = probe.wait_after(mark, &what, T, |m| is_reply(m, dev)).await.json();
        assert_err(&reply, code);
        if !matches!(*code, "bad_json" | "payload_too_large") {
            assert_eq!(reply["request_id"], format!("bad-{i}"), "{reply}");
        }
    }
    // Exactly one reply each, nothing reached the daemon, no state changed, the agent lives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let replies = probe.since(start).iter().filter(|m| is_reply(m, dev)).count();
    assert_eq!(replies, items.len());
    assert!(!agent.stdout().iter().any(|l| l.starts_with("CMD ")), "{:?}", agent.stdout());
    assert!(!probe.since(start).iter().any(|m| m.topic.contains("/state/")), "state changed");
    assert_eq!((state_of(&probe, dev, "radio1"), state_of(&probe, dev, "radio2")), (r1, r2));
    assert!(agent.is_running(), "agent died:\n{}", agent.stderr());
    assert!(!agent.stderr().contains("panicked"), "{}", agent.stderr());

    // Over 64 KiB the broker never delivers it (our MQTT 5 maximum packet size): no reply, and
    // the connection survives.
    let mark = probe.mark();
    probe.publish(&format!("roipd/{dev}/cmd/identify"), vec![b' '; 100 * 1024]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!probe.since(mark).iter().any(|m| is_reply(m, dev)));
    assert_ok(&call(&probe, dev, "identify", json!({"seconds": 2}), "after-barrage").await);

    // A retained command is refused live (retain as published) and again when it is replayed
    // on the next subscribe (a stale remote_ptt must never fire).
    let topic = format!("roipd/{dev}/cmd/identify");
    let mark = probe.mark();
    probe.publish_retained(&topic, r#"{"seconds":4,"request_id":"ret"}"#).await;
    let live = probe.wait_after(mark, "live reply", T, |m| is_reply(m, dev) && m.json()["request_id"] == "ret").await;
    assert_err(&live.json(), "retained_command");
    agent.kill();
    let mark = probe.mark();
    let mut agent = Agent::spawn(&AgentConfig::new(dev, anon_url(&broker)));
    let replay =
        probe.wait_after(mark, "replayed reply", T, |m| is_reply(m, dev) && m.json()["request_id"] == "ret").await;
    assert_err(&replay.json(), "retained_command");
    probe.publish_retained(&topic, Vec::new()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!agent.stdout().iter().any(|l| l.starts_with("CMD ")), "{:?}", agent.stdout());
    assert!(agent.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_auth_good_and_bad_and_secrets_stay_out_of_logs() {
    let broker = Broker::start();
    let url = format!("mqtt://127.0.0.1:{}", broker.auth);
    let with = |dev: &str, pw: Option<&str>| {
        let mut cfg = AgentConfig::new(dev, url.clone());
        if let Some(pw) = pw {
            cfg.username = Some(USER.into());
            cfg.password_file = Some(broker.path(pw));
        }
        cfg
    };
    let good = Agent::spawn(&with("pw-good", Some("pw-good")));
    let mut bad = Agent::spawn(&with("pw-bad", Some("pw-bad")));
    let mut anonymous = Agent::spawn(&with("pw-none", None));
    let probe = Probe::connect(broker.anon, &["roipd/+/status"]).await;
    let started = Instant::now();
    probe.wait("good password online", T, is_status("pw-good", true)).await;

    tokio::time::sleep(Duration::from_secs(3).saturating_sub(started.elapsed())).await;
    for (agent, dev) in [(&mut bad, "pw-bad"), (&mut anonymous, "pw-none")] {
        assert!(!probe.all().iter().any(|m| m.topic.contains(dev)), "{dev} got in");
        assert!(agent.is_running(), "{dev} must keep retrying, not exit:\n{}", agent.stderr());
        let log = agent.stderr();
        assert!(log.contains("cannot connect to the MQTT broker") && log.contains("refused"), "{dev}:\n{log}");
    }
    for agent in [&good, &bad, &anonymous] {
        let all = format!("{}\n{}", agent.stderr(), agent.stdout().join("\n"));
        assert!(!all.contains(PASSWORD) && !all.contains(WRONG_PASSWORD), "a password reached the log:\n{all}");
    }
    // The file is named, so an operator can find what is wrong.
    assert!(bad.stderr().contains(&broker.path("pw-bad")), "{}", bad.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verifies_the_broker_and_presents_client_certificates() {
    let broker = Broker::start();
    let tls = |dev: &str, host: &str, port: u16, ca: &str, client_cert: bool| {
        let mut cfg = AgentConfig::new(dev, format!("mqtts://{host}:{port}"));
        cfg.ca_file = Some(broker.path(ca));
        if client_cert {
            cfg.client_cert_file = Some(broker.path("client.pem"));
            cfg.client_key_file = Some(broker.path("client.key"));
        }
        cfg
    };
    let _ip = Agent::spawn(&tls("tls-ip", "127.0.0.1", broker.tls, "ca.pem", false));
    let _dns = Agent::spawn(&tls("tls-dns", "localhost", broker.tls, "ca.pem", false));
    let _mtls = Agent::spawn(&tls("tls-mtls", "127.0.0.1", broker.mtls, "ca.pem", true));
    let mut wrong_ca = Agent::spawn(&tls("tls-wrong-ca", "127.0.0.1", broker.tls, "wrong-ca.pem", false));
    let mut no_cert = Agent::spawn(&tls("tls-no-cert", "127.0.0.1", broker.mtls, "ca.pem", false));
    let probe = Probe::connect(broker.anon, &["roipd/+/status"]).await;
    let started = Instant::now();
    for dev in ["tls-ip", "tls-dns", "tls-mtls"] {
        probe.wait(&format!("{dev} online"), T, is_status(dev, true)).await;
    }
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(started.elapsed())).await;
    for (agent, dev) in [(&mut wrong_ca, "tls-wrong-ca"), (&mut no_cert, "tls-no-cert")] {
        assert!(!probe.all().iter().any(|m| m.topic.contains(dev)), "{dev} got in");
        assert!(agent.is_running(), "{dev} must keep retrying:\n{}", agent.stderr());
        assert!(agent.stderr().contains("cannot connect to the MQTT broker"), "{dev}:\n{}", agent.stderr());
    }
    let log = wrong_ca.stderr();
    assert!(log.contains("UnknownIssuer") || log.contains("certificate"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_reconnects_republishes_and_never_blocks_the_caller() {
    let mut broker = Broker::start();
    let dev = "restart-gw";
    let mut cfg = AgentConfig::new(dev, anon_url(&broker));
    cfg.hammer = true;
    let agent = Agent::spawn(&cfg);
    let probe = Probe::connect(broker.anon, &[&format!("roipd/{dev}/#")]).await;
    probe.wait("online", T, is_status(dev, true)).await;
    let hammer = |agent: &Agent| -> (u64, u64, bool) {
        let line = agent.last_line("HAMMER ").unwrap_or_default();
        let field = |k: &str| line.split(' ').find_map(|f| f.strip_prefix(k)).unwrap_or("0").to_string();
        (field("seq=").parse().unwrap(), field("max_us=").parse().unwrap(), field("connected=") == "true")
    };
    wait_until("hammering while connected", || hammer(&agent).2).await;
    drop(probe);

    broker.stop();
    wait_until("agent notices the outage", || !hammer(&agent).2).await;
    let seq_down = hammer(&agent).0;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seq_before_restart = hammer(&agent).0;
    assert!(seq_before_restart > seq_down + 100, "the daemon kept publishing during the outage");

    broker.restart();
    // Persistence is off: any status after the restart was republished by the client itself.
    let probe = Probe::connect(broker.anon, &[&format!("roipd/{dev}/#")]).await;
    probe.wait("online again", Duration::from_secs(40), is_status(dev, true)).await;
    let retained =
        Probe::connect(broker.anon, &[&format!("roipd/{dev}/status"), &format!("roipd/{dev}/state/+")]).await;
    retained.wait("retained status again", T, |m| m.retain && is_status(dev, true)(m)).await;
    retained.wait("retained radio1 again", T, |m| m.retain && m.topic.ends_with("/state/radio1")).await;
    // Events queued during the outage (bounded, within 5 min) are delivered after it.
    let queued = probe
        .wait("an event from the outage", T, |m| {
            m.topic.ends_with("/event")
                && m.json()["detail"]
                    .as_str()
                    .and_then(|d| d.parse::<u64>().ok())
                    .is_some_and(|s| s > seq_down && s < seq_before_restart)
        })
        .await;
    assert_eq!(queued.json()["kind"], "cor_open");
    wait_until("hammer sees the connection again", || hammer(&agent).2).await;

    let (_, max_us, _) = hammer(&agent);
    println!("slowest FleetHandle call across the outage: {max_us} us");
    assert!(max_us < 250_000, "a FleetHandle call blocked for {max_us} us");
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Set to run the command attack on a box without a fleet key (as before it), to see it succeed.
const COMMANDS_WITHOUT_KEY: &str = "ROIPD_TEST_FLEET_UNKEYED";

/// Issue 15, item 2: with a fleet key, a client that can merely publish to the broker cannot
/// run `remote_ptt`: unsigned, signed with another key, tampered with, or replayed, it gets an
/// `unauthorized` reply, never reaches the daemon, and an `auth_failed` event is published.
/// Harmless commands (`identify`) still run unsigned; a good, fresh signature keys the radio.
/// With `ROIPD_TEST_FLEET_UNKEYED=1` the box has no key (as before it) and this test fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_fleet_key_only_signed_fresh_commands_run() {
    use roipd::fleet::auth::{sign_command, FleetKey};
    use std::os::unix::fs::PermissionsExt;
    let broker = Broker::start();
    let dev = "key-gw";
    let key_text = "4e1f0c9b8a7d6e5f40312a1b0c9d8e7f6a5b4c3d2e1f00112233445566778899";
    let key_file = broker.path("fleet.key");
    std::fs::write(&key_file, format!("{key_text}\n")).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cfg = AgentConfig::new(dev, anon_url(&broker));
    if std::env::var_os(COMMANDS_WITHOUT_KEY).is_none() {
        cfg.fleet_key_file = Some(key_file);
    }
    let agent = Agent::spawn(&cfg);
    let probe = Probe::connect(broker.anon, &[&format!("roipd/{dev}/#")]).await;
    probe.wait("online", T, is_status(dev, true)).await;
    let key = FleetKey::new(key_text.as_bytes()).unwrap();
    let other = FleetKey::new(b"a stranger's key, 32 bytes or more").unwrap();
    let topic = format!("roipd/{dev}/cmd/remote_ptt");
    let now_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let ptt = |id: &str| json!({"port": "radio2", "on": true, "max_duration_s": 30, "request_id": id}).to_string();
    let reply_to = |id: &'static str| move |m: &Msg| is_reply(m, dev) && m.json()["request_id"] == id;

    // Unsigned, another key, tampered with: refused, never run.
    assert_err(
        &call(&probe, dev, "remote_ptt", json!({"port": "radio2", "on": true, "max_duration_s": 30}), "u1").await,
        "unauthorized",
    );
    let mark = probe.mark();
    probe.publish(&topic, sign_command(&other, &topic, now_ms(), "nonce-other", &ptt("f1"))).await;
    assert_err(&probe.wait_after(mark, "forged reply", T, reply_to("f1")).await.json(), "unauthorized");
    let good = sign_command(&key, &topic, now_ms(), "nonce-tamper", &ptt("f2"));
    let tampered = good.replace("radio2", "radio1");
    assert_ne!(good, tampered);
    probe.publish(&topic, tampered).await;
    assert_err(&probe.wait_after(mark, "tampered reply", T, reply_to("f2")).await.json(), "unauthorized");
    let stale = sign_command(&key, &topic, now_ms() - 120_000, "nonce-stale", &ptt("f3"));
    probe.publish(&topic, stale).await;
    assert_err(&probe.wait_after(mark, "stale reply", T, reply_to("f3")).await.json(), "unauthorized");
    let event = probe
        .wait("auth_failed event", T, |m| m.topic.ends_with("/event") && m.json()["kind"] == "auth_failed")
        .await
        .json();
    assert_eq!(event["reason"], "command", "{event}");
    assert!(agent.stdout().iter().all(|l| l != "CMD remote_ptt"), "no remote_ptt reached the daemon");
    assert!(state_of(&probe, dev, "radio2").is_none_or(|s| s["tx_keyed"] == false));
    // Harmless commands need no signature.
    assert_ok(&call(&probe, dev, "identify", json!({"seconds": 1}), "id1").await);

    // Signed and fresh: it runs, once. The same payload again is a replay.
    let mark = probe.mark();
    let signed = sign_command(&key, &topic, now_ms(), "nonce-good-1", &ptt("g1"));
    probe.publish(&topic, signed.clone()).await;
    assert_ok(&probe.wait_after(mark, "signed reply", T, reply_to("g1")).await.json());
    probe
        .wait_after(mark, "radio2 keyed", T, |m| m.topic.ends_with("/state/radio2") && m.json()["tx_keyed"] == true)
        .await;
    let release = json!({"port": "radio2", "on": false, "request_id": "g2"}).to_string();
    probe.publish(&topic, sign_command(&key, &topic, now_ms(), "nonce-good-2", &release)).await;
    assert_ok(&probe.wait_after(mark, "release reply", T, reply_to("g2")).await.json());
    let mark = probe.mark();
    probe.publish(&topic, signed).await;
    let replay = probe.wait_after(mark, "replay reply", T, reply_to("g1")).await.json();
    assert_err(&replay, "unauthorized");
    assert!(replay["error"]["message"].as_str().unwrap().contains("replayed"), "{replay}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(agent.stdout().iter().filter(|l| *l == "CMD remote_ptt").count(), 2, "exactly the two signed ones ran");
}
