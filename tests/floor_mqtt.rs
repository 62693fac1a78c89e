//! Floor over MQTT against a real Mosquitto on 127.0.0.1 (started and killed by each test):
//! the floor host (`start_host`) in front of a core channel router, and edges (`start_edge`)
//! each driving an edge-side core router with one radio or desk port, as the daemon does.
//! No Janus here (tests/janus_floor.rs has it): floor messages only.
//!
//! A missing `mosquitto` fails these tests with the packages to install; they never skip.

#[allow(dead_code)]
mod fleet;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet::broker::Broker;
use fleet::probe::Probe;
use roipd::config::MqttConfig;
use roipd::core::floor::{ArbiterConfig, ParticipantId, Priority, RevokeCause, ToParticipant};
use roipd::core::routing::{ChannelHost, PortKind, PortSpec, Router, RouterOutput, Talker};
use roipd::net::floor_mqtt::{start_edge, start_host, FloorEdgeHandle, FloorEdgeOptions, FloorHostOptions};
use roipd::net::peer_queue::PeerTx;
use roipd::net::{HubEvent, MemberRequest, PeerId, ToPeer, UplinkEvent};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const HUB: &str = "hub-1";
const CHANNELS: [&str; 2] = ["ops", "aux"];
const T: Duration = Duration::from_secs(15);

/// A broker on 127.0.0.1:`port`, signed with this process's test fleet key (every floor host
/// and edge needs one, or the lab opt-out, to start).
fn mqtt(port: u16) -> MqttConfig {
    MqttConfig { fleet_key_file: Some(test_key_file()), ..unsigned_mqtt(port) }
}

/// The lab opt-out (`insecure_unsigned`): floor messages travel unsigned, as the tests that
/// read or forge the raw floor protocol need.
fn lab(port: u16) -> MqttConfig {
    MqttConfig { insecure_unsigned: true, ..unsigned_mqtt(port) }
}

/// `[mqtt]` with neither a fleet key nor `insecure_unsigned`.
fn unsigned_mqtt(port: u16) -> MqttConfig {
    toml::from_str(&format!("url = \"mqtt://127.0.0.1:{port}\"")).unwrap()
}

/// One fleet key file (mode 0600) for the whole test process.
fn test_key_file() -> String {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.key");
        std::fs::write(&path, "1b7e49c0d2a35f8617e0c4b9a2d3f5061728394a5b6c7d8e9f0a1b2c3d4e5f60\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        dir
    });
    dir.path().join("fleet.key").display().to_string()
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Host side: start_host in front of a core router hosting both channels (what ChannelRouter
// does with hub peers, reduced to floor).

#[derive(Default)]
struct HostView {
    holder: HashMap<String, Option<(ParticipantId, String)>>,
    peers: usize,
    joins: usize,
    lefts: usize,
}

struct Host {
    view: Arc<Mutex<HostView>>,
    cancel: CancellationToken,
}

impl Host {
    fn start(port: u16) -> Host {
        // No media passes without Janus: a long no-media timeout keeps holders for the test.
        Self::with(port, ArbiterConfig { no_media_timeout: Duration::from_secs(600), ..Default::default() })
    }

    fn with(port: u16, arbiter: ArbiterConfig) -> Host {
        Self::with_mqtt(mqtt(port), arbiter)
    }

    fn with_mqtt(mqtt: MqttConfig, arbiter: ArbiterConfig) -> Host {
        let (tx, rx) = mpsc::channel(1024);
        let cancel = CancellationToken::new();
        let options = FloorHostOptions {
            mqtt,
            device_id: HUB.into(),
            channels: CHANNELS.iter().map(|c| c.to_string()).collect(),
            janus: None,
            report: None,
        };
        start_host(options, tx, cancel.clone()).unwrap();
        let view = Arc::new(Mutex::new(HostView::default()));
        tokio::spawn(host_router(rx, arbiter, view.clone(), cancel.clone()));
        Host { view, cancel }
    }

    fn holder(&self, channel: &str) -> Option<String> {
        self.view.lock().unwrap().holder.get(channel).cloned().flatten().map(|(_, name)| name)
    }

    fn peers(&self) -> usize {
        self.view.lock().unwrap().peers
    }
}

async fn host_router(
    mut rx: mpsc::Receiver<HubEvent>,
    config: ArbiterConfig,
    view: Arc<Mutex<HostView>>,
    cancel: CancellationToken,
) {
    let mut router = Router::new(CHANNELS.iter().map(|_| ChannelHost::Local(config.clone())).collect(), vec![]);
    let mut peers: HashMap<PeerId, PeerTx<ToPeer>> = HashMap::new();
    let name_of = |router: &Router, channel: usize, id: ParticipantId| {
        router.roster(channel).into_iter().find(|(i, _, _)| *i == id).map(|(_, n, _)| n)
    };
    loop {
        let timer = router.poll_timeout();
        let sleep = async move {
            match timer {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            e = rx.recv() => match e { Some(e) => Some(e), None => return },
            _ = sleep => None,
        };
        let now = Instant::now();
        match event {
            None => router.handle_timeout(now),
            Some(event) => match event {
                HubEvent::Joined { peer, name, members, to_peer, reply } => {
                    let mut ids = Vec::new();
                    for m in &members {
                        let c = CHANNELS.iter().position(|c| *c == m.channel).unwrap();
                        ids.push(router.add_remote(now, peer, &format!("{}@{name}", m.key), c, m.priority).unwrap());
                    }
                    let _ = reply.send(Ok(ids));
                    for (c, channel) in CHANNELS.iter().enumerate() {
                        if let Some((holder, priority)) = router.holder_participant(c) {
                            let _ = to_peer.send(ToPeer::Floor {
                                channel: channel.to_string(),
                                member: None,
                                msg: ToParticipant::Taken { holder, priority },
                                holder_name: name_of(&router, c, holder),
                            });
                        }
                    }
                    peers.insert(peer, to_peer);
                    let mut v = view.lock().unwrap();
                    v.joins += 1;
                    v.peers = peers.len();
                }
                HubEvent::Floor { peer, member, msg } => router.from_peer(now, peer, member, msg),
                HubEvent::Media { .. } => {}
                HubEvent::MediaSeen { .. } | HubEvent::Emergency { .. } => {}
                HubEvent::Left { peer } => {
                    peers.remove(&peer);
                    router.remove_peer(now, peer);
                    let mut v = view.lock().unwrap();
                    v.lefts += 1;
                    v.peers = peers.len();
                }
            },
        }
        while let Some(out) = router.poll_output() {
            match out {
                RouterOutput::ToPeer { peer, channel, member, msg } => {
                    let holder = match msg {
                        ToParticipant::Taken { holder, .. } => Some(holder),
                        ToParticipant::Deny { cause: roipd::core::floor::DenyCause::Busy { holder } } => Some(holder),
                        _ => None,
                    };
                    let holder_name = holder.and_then(|h| name_of(&router, channel, h));
                    if let Some(p) = peers.get(&peer) {
                        let channel = CHANNELS[channel].to_string();
                        let _ = p.send(ToPeer::Floor { channel, member, msg, holder_name });
                    }
                }
                RouterOutput::Floor { channel, .. } => {
                    let holder = router
                        .holder_participant(channel)
                        .map(|(id, _)| (id, name_of(&router, channel, id).unwrap_or_default()));
                    view.lock().unwrap().holder.insert(CHANNELS[channel].to_string(), holder);
                }
                _ => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Edge side: start_edge feeding an edge-side core router with one port on `ops`.

#[derive(Default, Debug)]
struct EdgeView {
    up: bool,
    ups: usize,
    downs: Vec<String>,
    /// The radio's transmitter (keyed for someone else's talk).
    tx: bool,
    /// This port may send into the channel (holds the floor).
    talking: bool,
    busy: usize,
    revoked: Vec<RevokeCause>,
    holder: Option<Talker>,
    /// Every floor message the edge's client handed to the router.
    floor_msgs: Vec<ToParticipant>,
    /// TX went on while the client was down (must never happen).
    keyed_while_down: bool,
    /// A floor message arrived while the client was down (must never happen).
    floor_while_down: bool,
}

enum EdgeCmd {
    Press,
    Unpress,
}

struct Edge {
    view: Arc<Mutex<EdgeView>>,
    cmds: mpsc::UnboundedSender<EdgeCmd>,
    handle: FloorEdgeHandle,
    cancel: CancellationToken,
}

impl Edge {
    fn start(port: u16, device: &str, kind: PortKind, priority: Priority) -> Edge {
        Self::with_mqtt(mqtt(port), device, kind, priority)
    }

    fn with_mqtt(mqtt: MqttConfig, device: &str, kind: PortKind, priority: Priority) -> Edge {
        let (events_tx, events) = mpsc::channel(1024);
        let cancel = CancellationToken::new();
        let options = FloorEdgeOptions {
            mqtt,
            device_id: device.into(),
            floor_hub: HUB.into(),
            members: vec![MemberRequest { key: "port1".into(), channel: "ops".into(), priority }],
            report: None,
        };
        let handle = start_edge(options, events_tx, cancel.clone()).unwrap();
        let (cmds, cmds_rx) = mpsc::unbounded_channel();
        let view = Arc::new(Mutex::new(EdgeView::default()));
        let spec = PortSpec { name: "port1".into(), kind, channels: vec![0], priority };
        let router = Router::new(vec![ChannelHost::Uplink], vec![spec]);
        // The router runs until the client's events end, so it sees the client's last `Down`.
        tokio::spawn(edge_router(router, events, cmds_rx, handle.clone(), view.clone()));
        Edge { view, cmds, handle, cancel }
    }

    fn press(&self) {
        self.cmds.send(EdgeCmd::Press).unwrap();
    }
    fn unpress(&self) {
        self.cmds.send(EdgeCmd::Unpress).unwrap();
    }
    fn view<R>(&self, f: impl FnOnce(&EdgeView) -> R) -> R {
        f(&self.view.lock().unwrap())
    }
    async fn wait(&self, what: &str, check: impl Fn(&EdgeView) -> bool) {
        wait_for(what, T, || check(&self.view.lock().unwrap())).await;
    }
}

async fn edge_router(
    mut router: Router,
    mut events: mpsc::Receiver<UplinkEvent>,
    mut cmds: mpsc::UnboundedReceiver<EdgeCmd>,
    handle: FloorEdgeHandle,
    view: Arc<Mutex<EdgeView>>,
) {
    loop {
        let timer = router.poll_timeout();
        let sleep = async move {
            match timer {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            e = events.recv() => {
                let Some(e) = e else { return };
                let now = Instant::now();
                let mut v = view.lock().unwrap();
                match e {
                    UplinkEvent::Up { members } => {
                        assert_eq!(members.len(), 1);
                        v.up = true;
                        v.ups += 1;
                        router.uplink_up(now, &[(0, 0, members[0].1)]);
                    }
                    UplinkEvent::Down { reason } => {
                        v.up = false;
                        v.downs.push(reason);
                        router.uplink_down(now);
                    }
                    UplinkEvent::Floor { channel, member, msg, .. } => {
                        if !v.up {
                            v.floor_while_down = true;
                        }
                        v.floor_msgs.push(msg);
                        if channel == "ops" {
                            router.from_uplink(now, 0, member, msg);
                        }
                    }
                    UplinkEvent::Media { .. } | UplinkEvent::Waiting { .. } | UplinkEvent::Refused { .. } => {
                        panic!("only the Janus side sends {e:?}")
                    }
                    UplinkEvent::Untrusted { .. } => panic!("only a roipd hub uplink over wss sends {e:?}"),
                    UplinkEvent::Emergency(_) => panic!("emergencies are not carried over MQTT: {e:?}"),
                }
            }
            Some(c) = cmds.recv() => match c {
                EdgeCmd::Press => router.press(Instant::now(), 0, 0),
                EdgeCmd::Unpress => router.unpress(Instant::now(), 0, 0),
            },
            _ = sleep => router.handle_timeout(Instant::now()),
        }
        let mut v = view.lock().unwrap();
        while let Some(out) = router.poll_output() {
            match out {
                RouterOutput::TxRequest { on, .. } => {
                    v.tx = on;
                    if on && !v.up {
                        v.keyed_while_down = true;
                    }
                }
                RouterOutput::Talk { on, .. } => v.talking = on,
                RouterOutput::Busy { .. } => v.busy += 1,
                RouterOutput::Revoked { cause, .. } => v.revoked.push(cause),
                RouterOutput::ToUplink { member, msg } => handle.floor(member, msg),
                _ => {}
            }
        }
        v.holder = router.holder(0);
    }
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy in front of the broker whose connections can be cut, as a lost link would.

struct Proxy {
    port: u16,
    cut: Arc<tokio::sync::watch::Sender<u64>>,
    open: Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    async fn start(broker_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let cut = Arc::new(cut);
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut2, open2) = (cut.clone(), open.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                if !open2.load(std::sync::atomic::Ordering::SeqCst) {
                    let _ = client.shutdown().await;
                    continue;
                }
                let mut cut_rx = cut2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", broker_port)).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_rx.changed() => {}
                    }
                    // Dropping both sockets closes them: the broker sees a connection lost
                    // without DISCONNECT and sends the client's last will.
                });
            }
        });
        Proxy { port, cut, open }
    }

    /// Close every connection through the proxy and refuse new ones.
    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn reopen(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn holder_topic(channel: &str) -> String {
    format!("roipd/floor/{HUB}/channel/{channel}/holder")
}

fn holder_device(m: &fleet::probe::Msg) -> Option<String> {
    m.json()["holder"]["device"].as_str().map(str::to_owned)
}

// ---------------------------------------------------------------------------------------------

/// Request and grant, a busy denial, dispatch-priority preemption with revoke, the retained
/// holder for a late MQTT subscriber, and a late-joining edge that learns who talks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contention_is_decided_by_the_host() {
    // Unsigned on purpose (lab opt-out): this test reads or forges the raw floor messages.
    let broker = Broker::start();
    let host = Host::with_mqtt(
        lab(broker.anon),
        ArbiterConfig { no_media_timeout: Duration::from_secs(600), ..Default::default() },
    );
    let a = Edge::with_mqtt(lab(broker.anon), "edge-a", PortKind::Radio, Priority::NORMAL);
    let b = Edge::with_mqtt(lab(broker.anon), "edge-b", PortKind::Radio, Priority::NORMAL);
    let d = Edge::with_mqtt(lab(broker.anon), "desk-d", PortKind::Desk, Priority::DISPATCH);
    for e in [&a, &b, &d] {
        e.wait("edge joined", |v| v.up).await;
    }
    assert_eq!(host.peers(), 3);

    // A asks: granted; B's radio keys for A's talk.
    let pressed = Instant::now();
    a.press();
    a.wait("A granted", |v| v.talking).await;
    let grant_ms = pressed.elapsed().as_secs_f64() * 1000.0;
    b.wait("B keyed for A", |v| v.tx && matches!(v.holder, Some(Talker::Remote(_)))).await;
    d.wait("D sees A talk", |v| v.holder.is_some()).await;
    assert_eq!(host.holder("ops").as_deref(), Some("port1@edge-a"));
    assert!(!a.view(|v| v.tx), "the talker's own radio is not keyed");
    println!("request -> granted over MQTT: {grant_ms:.1} ms");

    // The holder is retained: a subscriber that comes later sees it at once.
    let late = Probe::connect(broker.anon, &[&holder_topic("ops")]).await;
    let m = late.wait("retained holder", T, |m| m.retain && m.topic == holder_topic("ops")).await;
    assert_eq!(holder_device(&m).as_deref(), Some("edge-a"), "{}", m.json());
    assert_eq!(m.json()["holder"]["name"], "port1@edge-a");

    // B asks while A talks (same priority, no queue): busy.
    b.press();
    b.wait("B denied busy", |v| v.busy == 1).await;
    assert!(!b.view(|v| v.talking));
    assert!(a.view(|v| v.talking), "A keeps the floor");

    // D (dispatch) preempts A: A is revoked, D talks, A's radio keys for D.
    d.press();
    d.wait("D granted", |v| v.talking).await;
    a.wait("A revoked", |v| !v.talking && !v.revoked.is_empty()).await;
    assert!(matches!(a.view(|v| v.revoked[0]), RevokeCause::Preempted { .. }));
    a.wait("A keyed for D", |v| v.tx).await;
    assert_eq!(host.holder("ops").as_deref(), Some("port1@desk-d"));
    late.wait("holder retained: D", T, |m| {
        m.topic == holder_topic("ops") && holder_device(m).as_deref() == Some("desk-d")
    })
    .await;

    // A late-joining edge learns who talks right after joining: its radio keys for D.
    let e = Edge::with_mqtt(lab(broker.anon), "edge-e", PortKind::Radio, Priority::NORMAL);
    e.wait("late edge keyed for D", |v| v.up && v.tx).await;
    assert!(e.view(|v| v.floor_msgs.iter().any(|m| matches!(m, ToParticipant::Taken { .. }))));

    // D lets go while A's squelch is still open: A's call goes on (it retakes the floor at
    // once) and B's radio keys for it again.
    b.unpress();
    d.unpress();
    a.wait("A retakes the floor", |v| v.talking).await;
    b.wait("B keyed for A again", |v| v.tx && matches!(v.holder, Some(Talker::Remote(_)))).await;
    late.wait("holder retained: A again", T, |m| {
        m.topic == holder_topic("ops") && holder_device(m).as_deref() == Some("edge-a")
    })
    .await;
    // A's squelch closes: idle everywhere, every radio unkeys.
    a.unpress();
    for x in [&a, &b, &e] {
        x.wait("radio unkeyed on idle", |v| !v.tx && v.holder.is_none()).await;
    }
    late.wait("holder retained: idle", T, |m| m.topic == holder_topic("ops") && m.json()["holder"].is_null()).await;
    // A second request on warm connections.
    let pressed = Instant::now();
    b.press();
    b.wait("B granted", |v| v.talking).await;
    println!("request -> granted over MQTT, warm: {:.1} ms", pressed.elapsed().as_secs_f64() * 1000.0);
    b.unpress();
    a.wait("A unkeyed", |v| !v.tx).await;
    for x in [&a, &b, &d, &e] {
        assert!(!x.view(|v| v.keyed_while_down || v.floor_while_down));
        assert_eq!(x.view(|v| v.ups), 1, "no spurious rejoin: {:?}", x.view(|v| v.downs.clone()));
    }
    for x in [a, b, d, e] {
        x.cancel.cancel();
        x.handle.stopped().await;
    }
    host.cancel.cancel();
}

/// Two radios key up at the same instant, again and again: every time exactly one talks and
/// the other is told busy (its request and the winner's `taken` cross on the way), and nobody
/// is left waiting without an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_key_ups_always_end_with_one_talker_and_one_busy() {
    let broker = Broker::start();
    let host = Host::with_mqtt(
        mqtt(broker.anon),
        ArbiterConfig { no_media_timeout: Duration::from_secs(600), ..Default::default() },
    );
    let a = Edge::with_mqtt(mqtt(broker.anon), "edge-a", PortKind::Radio, Priority::NORMAL);
    let b = Edge::with_mqtt(mqtt(broker.anon), "edge-b", PortKind::Radio, Priority::NORMAL);
    for e in [&a, &b] {
        e.wait("edge joined", |v| v.up).await;
    }
    assert_eq!(host.peers(), 2);
    let rounds = 30;
    let mut a_won = 0;
    for round in 0..rounds {
        let busy_before = a.view(|v| v.busy) + b.view(|v| v.busy);
        // Alternate who presses first, so either request may reach the host first.
        let (first, second) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        first.press();
        second.press();
        let deadline = Instant::now() + T;
        loop {
            let talking = [a.view(|v| v.talking), b.view(|v| v.talking)];
            let busy = a.view(|v| v.busy) + b.view(|v| v.busy) - busy_before;
            if talking.iter().filter(|t| **t).count() == 1 && busy == 1 {
                a_won += usize::from(talking[0]);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: talking {talking:?}, told busy {busy} times; want one talker, one busy\n\
                 A got {:?}\nB got {:?}",
                a.view(|v| v.floor_msgs.clone()),
                b.view(|v| v.floor_msgs.clone())
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        a.unpress();
        b.unpress();
        for x in [&a, &b] {
            x.wait("idle again", |v| !v.talking && !v.tx && v.holder.is_none()).await;
        }
    }
    println!("{rounds} simultaneous key-ups: A won {a_won}, B won {}", rounds - a_won);
    for x in [a, b] {
        x.cancel.cancel();
        x.handle.stopped().await;
    }
    host.cancel.cancel();
}

/// An edge whose connection dies (its last will) frees its floor at the host: the other
/// edges hear idle and may talk, and the dead edge's own router is down, its radio unkeyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_will_frees_the_floor() {
    // Unsigned on purpose (lab opt-out): this test reads or forges the raw floor messages.
    let broker = Broker::start();
    let host = Host::with_mqtt(
        lab(broker.anon),
        ArbiterConfig { no_media_timeout: Duration::from_secs(600), ..Default::default() },
    );
    let proxy = Proxy::start(broker.anon).await;
    let a = Edge::with_mqtt(lab(proxy.port), "edge-a", PortKind::Radio, Priority::NORMAL);
    let b = Edge::with_mqtt(lab(broker.anon), "edge-b", PortKind::Radio, Priority::NORMAL);
    a.wait("A up", |v| v.up).await;
    b.wait("B up", |v| v.up).await;
    let watch =
        Probe::connect(broker.anon, &[&holder_topic("ops"), &format!("roipd/floor/{HUB}/edge/+/presence")]).await;

    a.press();
    a.wait("A granted", |v| v.talking).await;
    b.wait("B keyed for A", |v| v.tx).await;

    // The link of A dies (no DISCONNECT): the broker sends A's last will.
    let mark = watch.mark();
    let cut = Instant::now();
    proxy.cut();
    let will = watch
        .wait_after(mark, "A's last will", T, |m| {
            m.topic.ends_with("/edge/edge-a/presence") && m.json()["online"] == false
        })
        .await;
    assert!(will.json()["session"].is_string());
    b.wait("B unkeyed: A's floor freed", |v| !v.tx && v.holder.is_none()).await;
    let freed_ms = cut.elapsed().as_secs_f64() * 1000.0;
    watch.wait_after(mark, "holder idle", T, |m| m.topic == holder_topic("ops") && m.json()["holder"].is_null()).await;
    assert_eq!(host.holder("ops"), None);
    a.wait("A down, radio unkeyed, not talking", |v| !v.up && !v.tx && !v.talking).await;
    println!("link cut -> floor freed at the host and the other edge unkeyed: {freed_ms:.1} ms");

    // B may talk now.
    b.press();
    b.wait("B granted after A's will", |v| v.talking).await;

    // A's link comes back: it joins again (new session) and hears B.
    proxy.reopen();
    a.wait("A up again and keyed for B", |v| v.up && v.ups == 2 && v.tx).await;
    assert!(!a.view(|v| v.keyed_while_down || v.floor_while_down));
    host.cancel.cancel();
}

/// The host going away (clean stop, then a restart with a new epoch) and the broker
/// restarting: edges go down at once (radios unkey), then join again by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_go_down_and_rejoin_when_the_host_or_broker_restarts() {
    let broker = Broker::start();
    let mqtt = mqtt(broker.anon);
    host_and_broker_restarts(broker, mqtt).await;
}

/// The same with a fleet key: every host run is a new epoch the edges join, signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_go_down_and_rejoin_when_the_host_or_broker_restarts_with_a_fleet_key() {
    let broker = Broker::start();
    let mqtt = MqttConfig { fleet_key_file: Some(key_file(&broker)), ..mqtt(broker.anon) };
    host_and_broker_restarts(broker, mqtt).await;
}

async fn host_and_broker_restarts(mut broker: Broker, mqtt: MqttConfig) {
    let long = || ArbiterConfig { no_media_timeout: Duration::from_secs(600), ..Default::default() };
    let probe = Probe::connect(broker.anon, &[&format!("roipd/floor/{HUB}/host")]).await;
    let host = Host::with_mqtt(mqtt.clone(), long());
    let a = Edge::with_mqtt(mqtt.clone(), "edge-a", PortKind::Radio, Priority::NORMAL);
    let b = Edge::with_mqtt(mqtt.clone(), "edge-b", PortKind::Radio, Priority::NORMAL);
    a.wait("A up", |v| v.up).await;
    b.wait("B up", |v| v.up).await;
    a.press();
    a.wait("A granted", |v| v.talking).await;
    b.wait("B keyed for A", |v| v.tx).await;

    // Host stops: B's radio unkeys, A stops talking.
    let stop = Instant::now();
    host.cancel.cancel();
    b.wait("B down and unkeyed", |v| !v.up && !v.tx).await;
    a.wait("A down, not talking", |v| !v.up && !v.talking).await;
    println!("host stop -> edge radio unkeyed: {:.1} ms", stop.elapsed().as_secs_f64() * 1000.0);

    // A new host (new epoch): both join again; A's COR is still open, so it asks again.
    let started = Instant::now();
    let host = Host::with_mqtt(mqtt.clone(), long());
    a.wait("A rejoined and granted again", |v| v.up && v.talking).await;
    b.wait("B rejoined, keyed for A", |v| v.up && v.tx).await;
    println!("host restart -> edges joined, floor regained: {:.1} ms", started.elapsed().as_secs_f64() * 1000.0);

    // The first run's online presence, replayed: the edges ask the host, which names its
    // current run, and they stay joined (no down, the radio stays keyed).
    let first_online = probe.all().into_iter().find(|m| floor_msg(m)["online"] == true).expect("first presence");
    let downs = [a.view(|v| v.downs.len()), b.view(|v| v.downs.len())];
    probe.publish(&first_online.topic, first_online.payload.clone()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        [a.view(|v| v.downs.len()), b.view(|v| v.downs.len())],
        downs,
        "a stale host presence took an edge down"
    );
    assert!(a.view(|v| v.up && v.talking) && b.view(|v| v.up && v.tx));

    // The broker restarts: everyone is down for a while, then back by itself.
    let restarted = Instant::now();
    broker.restart();
    b.wait("B down after broker restart", |v| v.downs.len() >= 2).await;
    a.wait("A back and talking", |v| v.up && v.talking).await;
    b.wait("B back, keyed for A", |v| v.up && v.tx).await;
    println!("broker restart -> floor back: {:.1} ms", restarted.elapsed().as_secs_f64() * 1000.0);
    for x in [&a, &b] {
        assert!(!x.view(|v| v.keyed_while_down || v.floor_while_down), "a radio keyed while its floor link was down");
    }
    assert_eq!(host.peers(), 2);
    host.cancel.cancel();
}

/// Garbage, wrong sessions and out-of-place messages on every floor topic: dropped, the floor
/// stays exactly as it was, no edge goes down; afterwards everything still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_change_nothing() {
    // Unsigned on purpose (lab opt-out): this test reads or forges the raw floor messages.
    let broker = Broker::start();
    let host = Host::with_mqtt(
        lab(broker.anon),
        ArbiterConfig { no_media_timeout: Duration::from_secs(600), ..Default::default() },
    );
    let a = Edge::with_mqtt(lab(broker.anon), "edge-a", PortKind::Radio, Priority::NORMAL);
    let b = Edge::with_mqtt(lab(broker.anon), "edge-b", PortKind::Radio, Priority::NORMAL);
    a.wait("A up", |v| v.up).await;
    b.wait("B up", |v| v.up).await;
    a.press();
    a.wait("A granted", |v| v.talking).await;
    b.wait("B keyed for A", |v| v.tx).await;
    let before_joins = host.view.lock().unwrap().joins;
    let b_msgs = b.view(|v| v.floor_msgs.len());
    let downs_before = [a.view(|v| v.downs.len()), b.view(|v| v.downs.len())];

    let probe = Probe::connect(broker.anon, &[&format!("roipd/floor/{HUB}/#")]).await;
    let base = format!("roipd/floor/{HUB}");
    let garbage: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\xff\xfe\x00".to_vec(),
        b"null".to_vec(),
        b"[1,2]".to_vec(),
        b"{\"type\":\"nope\"}".to_vec(),
        "[".repeat(5000).into_bytes(),
        vec![b'x'; 20_000],
        b"{\"online\":false}".to_vec(),
        b"{\"online\":false,\"session\":\"not-a-session\"}".to_vec(),
        b"{\"online\":false,\"epoch\":\"x y\"}".to_vec(),
        b"{\"type\":\"floor\",\"session\":\"stale\",\"id\":0,\"action\":\"release\"}".to_vec(),
        b"{\"type\":\"floor\",\"session\":\"s\",\"id\":1,\"action\":\"grab\"}".to_vec(),
        b"{\"type\":\"join\",\"session\":\"s\",\"join\":1,\"members\":[{\"key\":\"K/1\",\"channel\":\"ops\"}]}"
            .to_vec(),
        b"{\"type\":\"feeds\",\"session\":\"s\",\"feeds\":{\"#\":1}}".to_vec(),
        b"{\"type\":\"accepted\",\"session\":\"s\",\"join\":1,\"epoch\":\"e\",\"members\":[]}".to_vec(),
        b"{\"type\":\"floor\",\"session\":\"s\",\"channel\":\"ops\",\"event\":\"idle\"}".to_vec(),
        b"{\"type\":\"floor\",\"session\":\"s\",\"channel\":\"ops\",\"event\":\"taken\"}".to_vec(),
        b"{\"type\":\"refused\",\"session\":\"s\",\"join\":99,\"epoch\":\"e\",\"reason\":\"x\"}".to_vec(),
        b"{\"channel\":\"ops\",\"epoch\":\"e\",\"holder\":null}".to_vec(),
    ];
    let mut topics = vec![format!("{base}/host"), format!("{base}/channel/ops/holder")];
    for dev in ["edge-a", "edge-b"] {
        for kind in ["presence", "to_host", "to_edge"] {
            topics.push(format!("{base}/edge/{dev}/{kind}"));
        }
    }
    for topic in &topics {
        for payload in &garbage {
            probe.publish(topic, payload.clone()).await;
        }
    }
    // A floor message for A's member that names another edge's member id, and B releasing
    // A's floor with B's real session: neither may touch A's floor.
    let b_session = probe
        .wait("B's presence", T, |m| m.topic == format!("{base}/edge/edge-b/presence") && m.json()["online"] == true)
        .await
        .json()["session"]
        .as_str()
        .unwrap()
        .to_owned();
    for id in 0..8 {
        let release = format!("{{\"type\":\"floor\",\"session\":\"{b_session}\",\"id\":{id},\"action\":\"release\"}}");
        probe.publish(&format!("{base}/edge/edge-b/to_host"), release).await;
    }
    // Everything published above has been handled once a marker sent after it came back.
    let mark = probe.mark();
    probe.publish(&format!("{base}/marker"), "{}").await;
    probe.wait_after(mark, "marker", T, |m| m.topic.ends_with("/marker")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert!(a.view(|v| v.up && v.talking), "A still holds the floor: {:?}", a.view(|v| format!("{v:?}")));
    assert!(b.view(|v| v.up && v.tx), "B still keyed for A");
    assert_eq!(host.holder("ops").as_deref(), Some("port1@edge-a"));
    assert_eq!(host.view.lock().unwrap().joins, before_joins, "no join happened");
    assert_eq!(host.peers(), 2);
    for (x, downs) in [(&a, downs_before[0]), (&b, downs_before[1])] {
        assert_eq!(x.view(|v| v.downs.len()), downs, "no edge went down: {:?}", x.view(|v| v.downs.clone()));
        assert_eq!(x.view(|v| v.ups), 1);
        assert!(!x.view(|v| v.floor_while_down));
    }
    assert_eq!(b.view(|v| v.floor_msgs.len()), b_msgs, "B's router got no floor message from the garbage");
    let retained: Vec<Value> = probe
        .all()
        .iter()
        .filter(|m| m.topic == format!("{base}/channel/ops/holder") && m.retain)
        .map(|m| m.json())
        .collect();
    assert!(!retained.is_empty());

    // Still alive: A lets go, B gets the floor.
    a.unpress();
    b.wait("B unkeyed", |v| !v.tx).await;
    b.unpress();
    b.press();
    b.wait("B granted", |v| v.talking).await;
    host.cancel.cancel();
}

/// The floor's own time-out (the arbiter's max talk time, the channel's TOT) reaches the edges
/// over MQTT: the talker is revoked and every radio keyed for it unkeys. An edge whose floor
/// client stops (shutdown) unkeys its radio too, and its floor is freed at the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radios_unkey_on_max_talk_and_on_edge_shutdown() {
    let broker = Broker::start();
    let arbiter = ArbiterConfig {
        max_talk: Duration::from_millis(1500),
        no_media_timeout: Duration::from_secs(600),
        ..Default::default()
    };
    let host = Host::with(broker.anon, arbiter);
    let a = Edge::start(broker.anon, "edge-a", PortKind::Radio, Priority::NORMAL);
    let b = Edge::start(broker.anon, "edge-b", PortKind::Radio, Priority::NORMAL);
    a.wait("A up", |v| v.up).await;
    b.wait("B up", |v| v.up).await;

    // A talks past max talk: revoked, B unkeys.
    a.press();
    a.wait("A granted", |v| v.talking).await;
    b.wait("B keyed for A", |v| v.tx).await;
    let keyed = Instant::now();
    a.wait("A revoked at max talk", |v| v.revoked.contains(&RevokeCause::MaxTalkTime)).await;
    b.wait("B unkeyed after A's max talk", |v| !v.tx).await;
    let held = keyed.elapsed();
    println!("max talk 1.5 s: B unkeyed {} ms after it keyed", held.as_millis());
    assert!(held >= Duration::from_millis(1300), "revoked early: {held:?}");
    assert!(!a.view(|v| v.talking));
    a.unpress();

    // B talks, A keys for it; then A's floor client shuts down: A is down and unkeyed.
    b.press();
    b.wait("B granted", |v| v.talking).await;
    a.wait("A keyed for B", |v| v.tx).await;
    a.cancel.cancel();
    a.handle.stopped().await;
    a.wait("A down (client stopped), radio unkeyed", |v| {
        !v.up && !v.tx && v.downs.iter().any(|d| d.contains("stopped"))
    })
    .await;

    // B's floor client stops while B holds: the host frees B's floor (clean offline).
    wait_for("A left the host", T, || host.peers() == 1).await;
    b.cancel.cancel();
    b.handle.stopped().await;
    wait_for("B's floor freed at the host", T, || host.holder("ops").is_none() && host.peers() == 0).await;
    b.wait("B stopped talking on shutdown", |v| !v.up && !v.talking && !v.tx).await;
    host.cancel.cancel();
}

/// An edge asking for a channel the host does not have is refused and stays down (its radio
/// never keyed); the edges that joined properly are not disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_for_a_channel_not_hosted_is_refused() {
    let broker = Broker::start();
    let host = Host::start(broker.anon);
    let a = Edge::start(broker.anon, "edge-a", PortKind::Radio, Priority::NORMAL);
    a.wait("A up", |v| v.up).await;
    let (events_tx, mut events) = mpsc::channel(1024);
    let cancel = CancellationToken::new();
    let options = FloorEdgeOptions {
        mqtt: mqtt(broker.anon),
        device_id: "edge-x".into(),
        floor_hub: HUB.into(),
        members: vec![MemberRequest { key: "port1".into(), channel: "elsewhere".into(), priority: Priority::NORMAL }],
        report: None,
    };
    let x = start_edge(options, events_tx, cancel.clone()).unwrap();
    let event = tokio::time::timeout(T, events.recv()).await.expect("an answer").unwrap();
    match event {
        UplinkEvent::Down { reason } => assert!(reason.contains("`elsewhere` is not hosted by hub-1"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!x.is_up());
    // Nothing more (no Up, no floor) for a while; A is untouched and the host has one peer.
    assert!(tokio::time::timeout(Duration::from_millis(500), events.recv()).await.is_err());
    assert_eq!(host.peers(), 1);
    assert_eq!(a.view(|v| v.ups), 1);
    cancel.cancel();
    x.stopped().await;
    host.cancel.cancel();
}

/// The inner message of a floor payload (signed or not).
fn floor_msg(m: &fleet::probe::Msg) -> Value {
    let outer = m.json();
    match outer.get("msg").and_then(Value::as_str) {
        Some(inner) => serde_json::from_str(inner).unwrap_or(Value::Null),
        None => outer,
    }
}

/// A fleet key file (mode 0600) in the broker's directory.
fn key_file(broker: &Broker) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = broker.path("fleet.key");
    std::fs::write(&path, "9f2c7e1a5b3d4f60718293a4b5c6d7e8f9a0b1c2d3e4f5061728394a5b6c7d8e\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Set to run the attack without the fleet key, as the old protocol did (to see it succeed).
const ATTACK_WITHOUT_KEY: &str = "ROIPD_TEST_FLOOR_UNKEYED";

/// Issue 15, item 2: with a fleet key, a client that can merely publish to the broker (the
/// anonymous listener here) cannot key a radio, take or free a floor, or take the host offline:
/// a forged `taken` on an edge's `to_edge` with its real session, a forged retained host
/// offline, a forged edge offline, a forged floor request, and replays of every real floor
/// message captured earlier are all dropped. With `ROIPD_TEST_FLOOR_UNKEYED=1` the same attack
/// runs on an unkeyed fleet (the protocol before the key) and this test fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_replayed_floor_messages_change_nothing_with_a_fleet_key() {
    let broker = Broker::start();
    let key_file = key_file(&broker);
    let unkeyed = std::env::var_os(ATTACK_WITHOUT_KEY).is_some();
    // Unkeyed: the lab opt-out, which runs the floor as the old protocol did.
    let keyed =
        MqttConfig { fleet_key_file: (!unkeyed).then_some(key_file), insecure_unsigned: unkeyed, ..mqtt(broker.anon) };
    let arbiter = ArbiterConfig { no_media_timeout: Duration::from_secs(600), ..Default::default() };
    let host = Host::with_mqtt(keyed.clone(), arbiter);
    let probe = Probe::connect(broker.anon, &[&format!("roipd/floor/{HUB}/#")]).await;
    let a = Edge::with_mqtt(keyed.clone(), "edge-a", PortKind::Radio, Priority::NORMAL);
    let b = Edge::with_mqtt(keyed, "edge-b", PortKind::Radio, Priority::NORMAL);
    a.wait("A up", |v| v.up).await;
    b.wait("B up", |v| v.up).await;
    let base = format!("roipd/floor/{HUB}");

    // A real talk spurt, recorded by the stranger: A's request, the host's taken/idle to B.
    a.press();
    a.wait("A granted", |v| v.talking).await;
    b.wait("B keyed for A", |v| v.tx).await;
    a.unpress();
    b.wait("B unkeyed", |v| !v.tx).await;
    wait_for("ops idle at the host", T, || host.holder("ops").is_none()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let captured: Vec<fleet::probe::Msg> = probe.all();
    assert!(captured.iter().any(|m| m.topic.ends_with("/edge/edge-b/to_edge") && floor_msg(m)["event"] == "taken"));
    if !unkeyed {
        assert!(captured.iter().all(|m| m.json().get("mac").is_some()), "every floor message is signed");
    }
    let joins = host.view.lock().unwrap().joins;
    let (a_msgs, b_msgs) = (a.view(|v| v.floor_msgs.len()), b.view(|v| v.floor_msgs.len()));
    let session = |dev: &str| {
        let m = captured.iter().rev().find(|m| m.topic == format!("{base}/edge/{dev}/presence")).expect("presence");
        floor_msg(m)["session"].as_str().unwrap().to_owned()
    };
    let (a_session, b_session) = (session("edge-a"), session("edge-b"));
    let host_presence = captured.iter().rev().find(|m| m.topic == format!("{base}/host")).unwrap();
    let epoch = floor_msg(host_presence)["epoch"].as_str().unwrap().to_owned();

    // Forgeries, with the real session and epoch (both are public in the retained presences).
    let taken = format!(
        r#"{{"type":"floor","session":"{b_session}","channel":"ops","event":"taken","holder":{{"id":1,"name":"x"}},"priority":0}}"#
    );
    probe.publish(&format!("{base}/edge/edge-b/to_edge"), taken.clone()).await;
    let fake_mac = "0".repeat(64);
    let sealed_forgery = serde_json::json!({"run": epoch, "seq": 999_999, "msg": taken, "mac": fake_mac}).to_string();
    probe.publish(&format!("{base}/edge/edge-b/to_edge"), sealed_forgery).await;
    probe.publish_retained(&format!("{base}/host"), format!(r#"{{"online":false,"epoch":"{epoch}"}}"#)).await;
    let a_offline = format!(r#"{{"online":false,"session":"{a_session}"}}"#);
    probe.publish(&format!("{base}/edge/edge-a/presence"), a_offline).await;
    let request = format!(r#"{{"type":"floor","session":"{a_session}","id":0,"action":"request"}}"#);
    probe.publish(&format!("{base}/edge/edge-a/to_host"), request).await;
    // Replays of everything real: joins, A's request, the host's taken and idle, presences.
    for m in &captured {
        if m.retain {
            probe.publish_retained(&m.topic, m.payload.clone()).await;
        } else {
            probe.publish(&m.topic, m.payload.clone()).await;
        }
    }
    let mark = probe.mark();
    probe.publish(&format!("{base}/marker"), "{}").await;
    probe.wait_after(mark, "marker", T, |m| m.topic.ends_with("/marker")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    for (name, x, msgs) in [("A", &a, a_msgs), ("B", &b, b_msgs)] {
        let v = x.view(|v| format!("{v:?}"));
        assert!(x.view(|v| v.up && v.ups == 1 && v.downs.is_empty()), "{name} stayed up: {v}");
        assert!(x.view(|v| !v.tx && !v.talking && !v.keyed_while_down), "{name}'s radio is not keyed: {v}");
        assert_eq!(x.view(|v| v.floor_msgs.len()), msgs, "{name}'s router got no floor message: {v}");
    }
    assert_eq!(host.holder("ops"), None, "nobody holds the floor");
    assert_eq!(host.view.lock().unwrap().joins, joins, "no replayed join got in");
    assert_eq!(host.peers(), 2);

    // Still a working floor: B talks, A keys for it.
    b.press();
    b.wait("B granted", |v| v.talking).await;
    a.wait("A keyed for B", |v| v.tx).await;
    host.cancel.cancel();
}

/// `mosquitto_pub` on `port` as `user`; true when the broker took the connection.
fn publish_as(port: u16, user: &str, password: &str, topic: &str, payload: &str, retain: bool) -> bool {
    let mut cmd = std::process::Command::new(fleet::broker::require("mosquitto_pub"));
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-u", user, "-P", password, "-t", topic]);
    cmd.args(["-m", payload]);
    if retain {
        cmd.arg("-r");
    }
    cmd.output().unwrap().status.success()
}

/// Issue 15, item 2, the broker side: `roipd mosquitto-acl` turns the fleet's configs into an
/// ACL and password lines; a broker with them runs the floor (the generated ACL is complete)
/// while a box's own credentials cannot publish on another box's floor topics (a forged `taken`
/// for edge-a, a retained host offline: never delivered), and strangers cannot connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_acl_keeps_each_box_to_its_own_topics() {
    let mut broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let janus = "[channel.ops]\n[channel.ops.janus]\nroom = 48213\n[channel.aux]\n[channel.aux.janus]\nroom = 48214\n\
                 [uplink]\nkind = \"janus\"\nurl = \"ws://127.0.0.2:8188\"\n";
    let mut configs = Vec::new();
    for (device, hub) in [(HUB, None), ("edge-a", Some(HUB)), ("edge-b", Some(HUB))] {
        std::fs::write(d.join(format!("{device}.pw")), format!("pw-of-{device}\n")).unwrap();
        let floor = hub.map(|h| format!("floor_hub = \"{h}\"\n")).unwrap_or_default();
        let text = format!(
            "device_id = \"{device}\"\n{janus}{floor}[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\nusername = \"u-{device}\"\n\
             password_file = \"{}/{device}.pw\"\nfleet_key_file = \"{}\"\n",
            d.display(),
            test_key_file()
        );
        let path = d.join(format!("{device}.toml"));
        std::fs::write(&path, text).unwrap();
        configs.push(path);
    }
    let passwd = d.join("passwd");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roipd"))
        .arg("mosquitto-acl")
        .arg("--passwd")
        .arg(&passwd)
        .args(&configs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let acl = d.join("acl");
    std::fs::write(&acl, &out.stdout).unwrap();
    let hashed =
        std::process::Command::new(fleet::broker::require("mosquitto_passwd")).arg("-U").arg(&passwd).status().unwrap();
    assert!(hashed.success());
    let port = broker.add_acl_listener(&passwd, &acl);
    let creds = |device: &str| MqttConfig {
        username: Some(format!("u-{device}")),
        password_file: Some(format!("{}/{device}.pw", d.display())),
        // Unsigned (lab opt-out): this shows what the ACL alone stops, reading raw presence.
        ..lab(port)
    };
    let host =
        Host::with_mqtt(creds(HUB), ArbiterConfig { no_media_timeout: Duration::from_secs(600), ..Default::default() });
    // The stranger reads on the open listener (the topics are the same broker's).
    let probe = Probe::connect(broker.anon, &[&format!("roipd/floor/{HUB}/#")]).await;
    let a = Edge::with_mqtt(creds("edge-a"), "edge-a", PortKind::Radio, Priority::NORMAL);
    let b = Edge::with_mqtt(creds("edge-b"), "edge-b", PortKind::Radio, Priority::NORMAL);
    a.wait("A up through the ACL", |v| v.up).await;
    b.wait("B up through the ACL", |v| v.up).await;
    b.press();
    b.wait("B granted", |v| v.talking).await;
    a.wait("A keyed for B", |v| v.tx).await;
    b.unpress();
    a.wait("A unkeyed", |v| !v.tx).await;

    let base = format!("roipd/floor/{HUB}");
    let a_presence = probe.wait("A's presence", T, |m| m.topic == format!("{base}/edge/edge-a/presence")).await;
    let a_session = a_presence.json()["session"].as_str().unwrap().to_owned();
    let taken = format!(
        r#"{{"type":"floor","session":"{a_session}","channel":"ops","event":"taken","holder":{{"id":1,"name":"x"}},"priority":0}}"#
    );
    let mark = probe.mark();
    // edge-b's own credentials, on topics that are not edge-b's: accepted by the broker, never delivered.
    assert!(publish_as(port, "u-edge-b", "pw-of-edge-b", &format!("{base}/edge/edge-a/to_edge"), &taken, false));
    assert!(publish_as(
        port,
        "u-edge-b",
        "pw-of-edge-b",
        &format!("{base}/host"),
        r#"{"online":false,"epoch":"x"}"#,
        true
    ));
    assert!(publish_as(port, "u-edge-b", "pw-of-edge-b", &format!("{base}/edge/edge-a/presence"), "{}", true));
    // Its own topic does get through (so the check above is the ACL, not a broken publisher).
    assert!(publish_as(port, "u-edge-b", "pw-of-edge-b", &format!("{base}/edge/edge-b/to_host"), "{}", false));
    // No credentials, or wrong ones: not even connected.
    assert!(!publish_as(port, "u-edge-b", "wrong", &format!("{base}/edge/edge-b/to_host"), "{}", false));
    assert!(!publish_as(port, "", "", &format!("{base}/edge/edge-b/to_host"), "{}", false));
    probe.wait_after(mark, "edge-b's own message", T, |m| m.topic.ends_with("/edge/edge-b/to_host")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let leaked: Vec<String> = probe
        .since(mark)
        .iter()
        .filter(|m| !m.topic.ends_with("/edge/edge-b/to_host"))
        .map(|m| format!("{} {}", m.topic, String::from_utf8_lossy(&m.payload)))
        .collect();
    assert!(leaked.is_empty(), "the ACL let through: {leaked:?}");
    assert!(a.view(|v| v.up && v.downs.is_empty() && !v.tx), "A untouched: {:?}", a.view(|v| format!("{v:?}")));
    host.cancel.cancel();
}

/// Issue 15, secure by default: a floor host or edge with neither a fleet key nor the lab
/// opt-out does not start (a clear error naming `fleet_key_file`, how to make one and the
/// opt-out); with `insecure_unsigned` it starts and runs the floor unsigned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_floor_host_or_edge_without_a_fleet_key_refuses_to_start() {
    let broker = Broker::start();
    let cancel = CancellationToken::new();
    let edge = |mqtt: MqttConfig| FloorEdgeOptions {
        mqtt,
        device_id: "edge-a".into(),
        floor_hub: HUB.into(),
        members: vec![MemberRequest { key: "port1".into(), channel: "ops".into(), priority: Priority::NORMAL }],
        report: None,
    };
    let host = |mqtt: MqttConfig| FloorHostOptions {
        mqtt,
        device_id: HUB.into(),
        channels: CHANNELS.iter().map(|c| c.to_string()).collect(),
        janus: None,
        report: None,
    };
    let (tx, _rx) = mpsc::channel(16);
    let Err(e) = start_edge(edge(unsigned_mqtt(broker.anon)), tx, cancel.clone()) else {
        panic!("an edge without a fleet key started")
    };
    assert!(
        e.contains("fleet_key_file") && e.contains("openssl rand -hex 32") && e.contains("insecure_unsigned"),
        "{e}"
    );
    let (tx, _rx) = mpsc::channel(16);
    let Err(e) = start_host(host(unsigned_mqtt(broker.anon)), tx, cancel.clone()) else {
        panic!("a floor host without a fleet key started")
    };
    assert!(e.contains("fleet_key_file"), "{e}");
    // The lab opt-out starts both, unsigned; so does a key.
    let lab = MqttConfig { insecure_unsigned: true, ..unsigned_mqtt(broker.anon) };
    let h = Host::with_mqtt(lab.clone(), ArbiterConfig::default());
    let a = Edge::with_mqtt(lab, "edge-a", PortKind::Radio, Priority::NORMAL);
    a.wait("A up without a key (lab opt-out)", |v| v.up).await;
    drop((a, h));
    cancel.cancel();
}
