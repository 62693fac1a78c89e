//! Floor and air tell the truth, end to end: `roipd run` hosting channel `ops` (embedded hub)
//! with one simplex radio on simulated COR/PTT lines and simulated audio, a dispatch console
//! (priority 100) on a raw signaling WebSocket, and a listener that is a real WebRTC peer (the
//! roipd uplink client) hearing the channel.
//!
//! - A console that preempts a receiving radio is told the radio waits (`receiving`) and the
//!   PTT line stays unkeyed; the radio keys when its squelch closes and the console is told it
//!   is on air; the `ports` state's `tx` follows the PTT line.
//! - A console that preempts and releases while the squelch is still open gives the floor
//!   straight back to the radio: its call goes on for every listener.

mod common;
#[allow(dead_code)]
mod fleet;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use common::config::{Audio, Config, Hub, Mqtt, Radio};
use common::{free_port, Daemon};
use roipd::core::floor::Priority;
use roipd::net::{self, MemberRequest, UplinkEvent, UplinkOptions};

/// The hub: radio1 receives a field unit (1 kHz) and records what it transmits; consoles log in
/// with the `dispatch` token. `max_talk_ms`: the channel's maximum talk time.
fn hub_config(port: u16, max_talk_ms: Option<u64>) -> Config {
    let max_talk = max_talk_ms.map(|ms| ms.to_string());
    // The console sends no audio (signaling only): keep it holding the floor.
    let mut ops = vec![("no_media_ms", "60000")];
    ops.extend(max_talk.iter().map(|ms| ("max_talk_ms", ms.as_str())));
    let radio1 = Radio::sim("radio1", "ops", "r1")
        .capture("sim:tone:1000:-12")
        .playback("sim:wav-out:{dir}/r1-tx.wav")
        .keying("tx_delay_ms", 100)
        .keying("tx_hang_ms", 300)
        .keying("squelch_hang_ms", 0);
    Config::new("hub").channel_with("ops", &ops).add(radio1).add(Hub::new(port).token("dispatch", "token", &["ops"]))
}

const T: Duration = Duration::from_secs(10);

/// Every JSON message the hub sent the console, oldest first.
type Inbox = Arc<Mutex<Vec<Value>>>;

struct Console {
    write: futures_util::stream::SplitSink<
        tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
        Message,
    >,
    inbox: Inbox,
    id: u64,
}

impl Console {
    async fn join(port: u16) -> Console {
        let url = format!("ws://127.0.0.1:{port}/ws");
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("console WebSocket connects");
        let (mut write, mut read) = ws.split();
        let hello = json!({"type":"hello","token":"dispatch-secret","name":"dispatch",
            "members":[{"key":"console","channel":"ops","priority":100}]});
        write.send(Message::Text(hello.to_string().into())).await.unwrap();
        let inbox: Inbox = Arc::default();
        let sink = inbox.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = read.next().await {
                if let Message::Text(t) = m {
                    sink.lock().unwrap().push(serde_json::from_str(t.as_str()).unwrap());
                }
            }
        });
        let mut console = Console { write, inbox, id: 0 };
        let welcome = console.wait_msg("welcome", |m| m["type"] == "welcome").await;
        console.id = welcome["members"][0]["id"].as_u64().expect("a member id");
        console
    }

    async fn floor(&mut self, action: &str) {
        let msg = json!({"type":"floor","id":self.id,"action":action});
        self.write.send(Message::Text(msg.to_string().into())).await.unwrap();
    }

    /// The first message since `from` (an inbox index) that `want` accepts.
    async fn wait_msg(&self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        self.wait_msg_from(0, what, want).await.1
    }

    async fn wait_msg_from(&self, from: usize, what: &str, want: impl Fn(&Value) -> bool) -> (usize, Value) {
        let deadline = Instant::now() + T;
        loop {
            {
                let inbox = self.inbox.lock().unwrap();
                if let Some((i, m)) = inbox.iter().enumerate().skip(from).find(|(_, m)| want(m)) {
                    return (i, m.clone());
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; messages: {:#?}",
                self.inbox.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn len(&self) -> usize {
        self.inbox.lock().unwrap().len()
    }

    /// The last `air` message for ops, and the last `ports` entry for radio1's `tx`.
    fn last_air(&self) -> Option<Value> {
        self.inbox.lock().unwrap().iter().rev().find(|m| m["type"] == "air" && m["channel"] == "ops").cloned()
    }

    fn last_ports_tx(&self) -> Option<bool> {
        self.inbox
            .lock()
            .unwrap()
            .iter()
            .rev()
            .filter(|m| m["type"] == "ports")
            .find_map(|m| m["ports"].as_array()?.iter().find(|p| p["name"] == "radio1").and_then(|p| p["tx"].as_bool()))
    }
}

fn air_is(m: &Value, state: &str, reason: Option<&str>) -> bool {
    m["type"] == "air"
        && m["channel"] == "ops"
        && m["radios"].as_array().is_some_and(|r| {
            r.len() == 1
                && r[0]["port"] == "radio1"
                && r[0]["state"] == state
                && reason.is_none_or(|why| r[0]["reason"] == why)
        })
}

fn air_empty(m: &Value) -> bool {
    m["type"] == "air" && m["channel"] == "ops" && m["radios"].as_array().is_some_and(|r| r.is_empty())
}

fn taken_by(m: &Value, name: &str) -> bool {
    m["type"] == "floor" && m["event"] == "taken" && m["holder"]["name"] == name
}

async fn wait_line(d: &Daemon, what: &str, name: &str, level: bool) {
    let deadline = Instant::now() + T;
    while d.line(name) != Some(level) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}\n--- stderr ---\n{}", d.stderr());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn start() -> (Daemon, u16) {
    start_with_lines(|port| hub_config(port, None).toml(), &["r1-cor"]).await
}

/// Radio1's squelch opens and it holds the floor; the console sees it taken.
async fn radio_talks(d: &Daemon, console: &Console) {
    d.drive("r1-cor", true);
    console.wait_msg("radio1 takes the floor", |m| taken_by(m, "radio1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preempting_a_receiving_radio_waits_for_its_squelch_then_goes_on_air() {
    let (d, port) = start().await;
    let mut console = Console::join(port).await;
    radio_talks(&d, &console).await;

    console.floor("request").await;
    console.wait_msg("granted", |m| m["type"] == "floor" && m["event"] == "granted").await;
    console.wait_msg("told radio1 waits: receiving", |m| air_is(m, "waiting", Some("receiving"))).await;
    // Well past tx_delay: a receiving simplex radio must not key.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(d.line_log("r1-ptt").iter().all(|l| !l), "radio1 keyed while receiving: {:?}", d.line_log("r1-ptt"));
    assert!(air_is(&console.last_air().unwrap(), "waiting", Some("receiving")));
    assert_ne!(console.last_ports_tx(), Some(true), "ports claims radio1 transmits while its PTT is unkeyed");

    // Squelch closes: the radio keys for the console, and says so.
    let mark = console.len();
    d.drive("r1-cor", false);
    wait_line(&d, "radio1 keyed for the console", "r1-ptt", true).await;
    console.wait_msg_from(mark, "told radio1 is on air", |m| air_is(m, "on_air", None)).await;
    console
        .wait_msg_from(mark, "ports: radio1 tx", |m| {
            m["type"] == "ports"
                && m["ports"].as_array().is_some_and(|p| p.iter().any(|p| p["name"] == "radio1" && p["tx"] == true))
        })
        .await;

    // Release: the radio unkeys after its hang time, the air state empties, ports say unkeyed.
    let mark = console.len();
    console.floor("release").await;
    wait_line(&d, "radio1 unkeyed after release", "r1-ptt", false).await;
    console.wait_msg_from(mark, "air empty after release", air_empty).await;
    console
        .wait_msg_from(mark, "ports: radio1 not tx", |m| {
            m["type"] == "ports"
                && m["ports"].as_array().is_some_and(|p| p.iter().any(|p| p["name"] == "radio1" && p["tx"] == false))
        })
        .await;
    assert_eq!(console.last_ports_tx(), Some(false));
    let log = d.line_log("r1-ptt");
    assert_eq!(log.iter().filter(|&&l| l).count(), 1, "keyed exactly once: {log:?}");
}

/// Every "on air" claim for radio1 came while its PTT line was keyed (checked at the moment
/// the console saw it), and every `ports` tx=true too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn air_and_ports_never_claim_an_unkeyed_radio_transmits() {
    let (d, port) = start().await;
    let mut console = Console::join(port).await;
    radio_talks(&d, &console).await;
    console.floor("request").await;
    console.wait_msg("told radio1 waits", |m| air_is(m, "waiting", Some("receiving"))).await;
    let seen = Arc::new(Mutex::new(Vec::<(bool, Option<bool>)>::new()));
    let cancel = CancellationToken::new();
    // Sample the console's view against the line while the squelch closes and the radio keys.
    let watcher = {
        let inbox = console.inbox.clone();
        let line = d.line_path("r1-ptt");
        let seen = seen.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut checked = 0;
            while !cancel.is_cancelled() {
                let msgs: Vec<Value> = inbox.lock().unwrap()[checked..].to_vec();
                checked += msgs.len();
                let level = common::read_level(&line);
                for m in msgs {
                    let on_air = air_is(&m, "on_air", None);
                    let ports_tx = m["type"] == "ports"
                        && m["ports"]
                            .as_array()
                            .is_some_and(|p| p.iter().any(|p| p["name"] == "radio1" && p["tx"] == true));
                    if on_air || ports_tx {
                        seen.lock().unwrap().push((true, level));
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    d.drive("r1-cor", false);
    wait_line(&d, "radio1 keyed", "r1-ptt", true).await;
    console.wait_msg("on air", |m| air_is(m, "on_air", None)).await;
    console.floor("release").await;
    wait_line(&d, "radio1 unkeyed", "r1-ptt", false).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    cancel.cancel();
    watcher.await.unwrap();
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty(), "no on-air claim seen");
    // A claim may be read just after the line dropped again (release), never before it rose:
    // the line log shows one keying, so any claim seen with the line low must come after it.
    let log = d.line_log("r1-ptt");
    assert_eq!(log.iter().filter(|&&l| l).count(), 1, "{log:?}");
    assert_eq!(seen.first().unwrap().1, Some(true), "first on-air claim seen while the line was unkeyed: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiving_radio_gets_the_floor_back_when_the_console_lets_go() {
    let (d, port) = start().await;

    // A listener on the channel: a real WebRTC peer (the roipd uplink client), counting the
    // channel's audio packets.
    let heard = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let cancel = CancellationToken::new();
    let members = vec![MemberRequest { key: "listener".into(), channel: "ops".into(), priority: Priority(0) }];
    let options = UplinkOptions::new(format!("ws://127.0.0.1:{port}/ws"), "dispatch-secret", "listener", members);
    let (tx, mut events) = mpsc::channel(1024);
    let uplink = net::start_uplink(options, tx, cancel.clone());
    let up = tokio::time::timeout(T, async {
        while let Some(e) = events.recv().await {
            match e {
                UplinkEvent::Up { .. } => return true,
                UplinkEvent::Down { reason } => panic!("listener down: {reason}"),
                _ => {}
            }
        }
        false
    })
    .await
    .expect("listener up in time");
    assert!(up);
    {
        let heard = heard.clone();
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                if let UplinkEvent::Media { .. } = e {
                    heard.lock().unwrap().push(Instant::now());
                }
            }
        });
    }
    let packets_since = |t: Instant| heard.lock().unwrap().iter().filter(|&&at| at >= t).count();

    let mut console = Console::join(port).await;
    radio_talks(&d, &console).await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(packets_since(t0) >= 10, "the listener hears radio1's call: {} packets", packets_since(t0));

    // The console preempts and lets go while radio1 still receives.
    console.floor("request").await;
    console.wait_msg("granted", |m| m["type"] == "floor" && m["event"] == "granted").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mark = console.len();
    console.floor("release").await;
    let released = Instant::now();
    let (i, _) = console.wait_msg_from(mark, "radio1 takes the floor back", |m| taken_by(m, "radio1")).await;
    let back = released.elapsed();
    // Nobody else held it in between: the floor went idle and straight back to radio1.
    let between: Vec<Value> = console.inbox.lock().unwrap()[mark..i]
        .iter()
        .filter(|m| m["type"] == "floor" && m["event"] == "taken")
        .cloned()
        .collect();
    assert!(between.is_empty(), "someone else took the floor first: {between:?}");
    eprintln!("radio1 retook the floor {back:?} after the console's release");

    let t1 = Instant::now();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let after = packets_since(t1);
    assert!(
        after >= 15,
        "the listener keeps hearing radio1's call after the console let go: {after} packets in 700 ms"
    );
    assert!(d.line_log("r1-ptt").iter().all(|l| !l), "radio1 never keyed: it was receiving throughout");
    assert!(console.last_air().is_none_or(|m| air_empty(&m)), "radio1 talks: nothing to put on air");

    // The squelch closes: the floor goes idle and stays so.
    let mark = console.len();
    d.drive("r1-cor", false);
    console.wait_msg_from(mark, "idle", |m| m["type"] == "floor" && m["event"] == "idle").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !console.inbox.lock().unwrap()[mark..].iter().any(|m| taken_by(m, "radio1")),
        "no retake once the squelch closed"
    );
    assert!(d.line_log("r1-ptt").iter().all(|l| !l));
    cancel.cancel();
    let _ = tokio::time::timeout(T, uplink.stopped()).await;
}

/// Two radios: radio2 carries whoever talks, radio1 receives a field unit.
fn two_radios(max_talk_ms: u64) -> impl Fn(u16) -> String {
    move |port| {
        let radio2 = Radio::sim("radio2", "ops", "r2").keying("tx_delay_ms", 100).keying("tx_hang_ms", 300);
        hub_config(port, Some(max_talk_ms)).add(radio2).toml()
    }
}

async fn start_with(config: impl Fn(u16) -> String) -> (Daemon, u16) {
    start_with_lines(config, &["r1-cor", "r2-cor"]).await
}

/// `config`: the config for a hub on this port.
async fn start_with_lines(config: impl Fn(u16) -> String, cors: &[&str]) -> (Daemon, u16) {
    let port = free_port();
    let d = Daemon::start_with(&config(port), &[], &[("token", "dispatch-secret\n")]);
    let deadline = Instant::now() + T;
    while !(d.stderr().contains("roipd running") && cors.iter().all(|c| d.line(c) == Some(false))) {
        assert!(Instant::now() < deadline, "roipd did not start\n{}", d.stderr());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (d, port)
}

/// Radio1 receives, the console preempts and lets go: radio1 has the floor back and radio2
/// carries it. Returns the console.
async fn retaken(d: &Daemon, port: u16) -> Console {
    let mut console = Console::join(port).await;
    radio_talks(d, &console).await;
    wait_line(d, "radio2 keyed for radio1", "r2-ptt", true).await;
    console.floor("request").await;
    console.wait_msg("granted", |m| m["type"] == "floor" && m["event"] == "granted").await;
    let mark = console.len();
    console.floor("release").await;
    console.wait_msg_from(mark, "radio1 takes the floor back", |m| taken_by(m, "radio1")).await;
    assert_eq!(d.line("r2-ptt"), Some(true), "radio2 carries radio1 again");
    console
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_talk_cuts_a_retaken_floor_unkeys_every_radio_and_a_stuck_squelch_does_not_retake() {
    let (d, port) = start_with(two_radios(3000)).await;
    let console = retaken(&d, port).await;
    let retook = Instant::now();
    let mark = console.len();
    // Radio1's squelch stays open (stuck): max talk (3 s, counted from the retake) cuts it.
    console
        .wait_msg_from(mark, "the floor goes idle after max talk", |m| m["type"] == "floor" && m["event"] == "idle")
        .await;
    eprintln!("max talk cut the retaken floor {:?} after the retake", retook.elapsed());
    wait_line(&d, "radio2 unkeyed after max talk", "r2-ptt", false).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let since: Vec<Value> = console.inbox.lock().unwrap()[mark..].to_vec();
    assert!(
        !since.iter().any(|m| m["type"] == "floor" && m["event"] == "taken"),
        "the stuck squelch took the floor back: {since:#?}"
    );
    assert_eq!(d.line("r2-ptt"), Some(false), "radio2 stays unkeyed");
    assert!(
        d.line_log("r1-ptt").iter().all(|l| !l),
        "radio1 (receiving throughout) never keyed: {:?}",
        d.line_log("r1-ptt")
    );
    assert!(d.stderr().contains("MaxTalkTime"), "{}", d.stderr());
    // A new key-up talks again.
    d.drive("r1-cor", false);
    console.wait_msg_from(mark, "idle", |m| m["type"] == "floor" && m["event"] == "idle").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mark = console.len();
    d.drive("r1-cor", true);
    console.wait_msg_from(mark, "radio1 talks after a new key-up", |m| taken_by(m, "radio1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_after_a_retake_releases_every_ptt_line() {
    let (mut d, port) = start_with(two_radios(180_000)).await;
    let _console = retaken(&d, port).await;
    d.signal(libc::SIGTERM);
    let status = tokio::task::block_in_place(|| d.wait_exit(T));
    assert!(status.success(), "clean exit: {status}\n{}", d.stderr());
    assert_eq!(d.line("r2-ptt"), Some(false), "radio2 released before exit\n{}", d.stderr());
    assert_eq!(d.line_log("r2-ptt").last(), Some(&false));
    assert!(d.line_log("r1-ptt").iter().all(|l| !l), "radio1 never keyed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_fault_after_a_retake_releases_every_ptt_line() {
    let (mut d, port) = start_with(two_radios(180_000)).await;
    let _console = retaken(&d, port).await;
    d.inject_fault("panic");
    let status = tokio::task::block_in_place(|| d.wait_exit(T));
    assert!(!status.success(), "a panic is not a clean stop: {status}");
    assert_eq!(d.line("r2-ptt"), Some(false), "radio2 released\n{}", d.stderr());
    assert!(d.line_log("r1-ptt").iter().all(|l| !l), "radio1 never keyed");
    assert!(d.stderr().contains("PTT outputs released"), "{}", d.stderr());
}

/// MQTT port state against a real Mosquitto: `tx_keyed` is never true while radio1's PTT line
/// is unkeyed (waiting for its squelch to close), and is true once the line is keyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_tx_keyed_follows_the_ptt_line_not_the_wish() {
    let broker = fleet::broker::Broker::start();
    let probe = fleet::probe::Probe::connect(broker.anon, &["roipd/hub/state/radio1"]).await;
    let config = |port| hub_config(port, None).add(Mqtt::new(broker.anon)).toml();
    let (d, port) = start_with_lines(config, &["r1-cor"]).await;
    let keyed = |m: &fleet::probe::Msg| m.json()["tx_keyed"] == true;
    let mut console = Console::join(port).await;
    radio_talks(&d, &console).await;
    console.floor("request").await;
    console.wait_msg("told radio1 waits", |m| air_is(m, "waiting", Some("receiving"))).await;
    probe.wait("radio1 state with RX active", T, |m| m.json()["rx_active"] == true).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!probe.all().iter().any(keyed), "MQTT claims radio1 transmits while its PTT line is unkeyed");
    d.drive("r1-cor", false);
    wait_line(&d, "radio1 keyed", "r1-ptt", true).await;
    probe.wait("MQTT tx_keyed once the line is keyed", T, keyed).await;
    let mark = probe.mark();
    console.floor("release").await;
    wait_line(&d, "radio1 unkeyed", "r1-ptt", false).await;
    probe.wait_after(mark, "MQTT tx_keyed false after release", T, |m| m.json()["tx_keyed"] == false).await;
}
