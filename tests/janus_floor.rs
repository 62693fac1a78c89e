//! Floor across a fleet on Janus, enforced in Janus: real `janus` and `mosquitto` and a
//! `roipd run` floor host (`[uplink] kind = "janus"` without `floor_hub`) in a private network
//! namespace (tests/common/fleet_ns.rs). The edges run in this process: each is a Janus client
//! (a publisher in the channel's room and a subscription to the others) plus the floor client
//! over MQTT, wired the way an edge daemon wires them (granted → send, released → stop).
//!
//! Shown: floor contention is decided by the roipd host (grant, busy deny); a third edge that
//! publishes without the floor (its media not gated, as a radio keying without a grant) is
//! muted by the host with VideoRoom `moderate` and its audio does not reach the others, while
//! the holder's does; the holder keeps the floor past the arbiter's 5 s no-media timeout
//! because the host sees its audio in Janus; the mute follows the floor when it changes hands.
//!
//! Needs root and the Debian packages `janus`, `mosquitto`, `iproute2`; a missing one fails the
//! test with its name.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use roipd::codec::{Decoder, Encoder, EncoderConfig, MAX_FRAME_SAMPLES};
use roipd::core::floor::{DenyCause, ParticipantId, Priority, ToArbiter, ToParticipant};
use roipd::net::floor_mqtt::{start_edge, FloorEdgeHandle, FloorEdgeOptions};
use roipd::net::janus::{self, ChannelSpec, JanusEvent, JanusHandle, JanusOptions, RoomSettings};
use roipd::net::{MemberRequest, UplinkEvent};
use roipd::pipeline::MediaPacket;

use common::config::{Audio, Config, Mqtt, Radio, Uplink};
use common::fleet_ns::{
    in_namespace, inside, janus_url, mqtt_url, roipd, Janus, Mosquitto, ADMIN_KEY, JANUS_IP, ROOM_SECRET,
};
use common::Daemon;

const OUTER_LIMIT: Duration = Duration::from_secs(240);
const MOSQUITTO: (&str, &str) = ("mosquitto", "mosquitto");
const HUB: &str = "hub-1";
const CHANNEL: &str = "ops";
const ROOM: u64 = 5151;
const WAIT: Duration = Duration::from_secs(20);

#[test]
fn janus_floor_roipd_edges_simultaneous_key_up_one_talks_dispatch_preempts() {
    in_namespace("inner_roipd_edges_simultaneous_key_up_one_talks_dispatch_preempts", &[MOSQUITTO], OUTER_LIMIT);
}

#[test]
fn janus_floor_restarted_janus_a_publisher_without_the_floor_is_muted_again() {
    in_namespace("inner_restarted_janus_a_publisher_without_the_floor_is_muted_again", &[MOSQUITTO], OUTER_LIMIT);
}

#[test]
fn janus_floor_decided_by_the_hub_and_a_publisher_without_the_floor_is_muted() {
    in_namespace(
        "inner_floor_decided_by_the_hub_and_a_publisher_without_the_floor_is_muted",
        &[MOSQUITTO],
        OUTER_LIMIT,
    );
}

/// A box on `ops`, whose Janus room is ROOM (its secret in `{dir}/room.secret`), with the Janus
/// uplink and the broker.
fn janus_box(device: &str) -> Config {
    let room = format!("{{ room = {ROOM}, secret_file = \"{{dir}}/room.secret\" }}");
    Config::new(device).channel_with(CHANNEL, &[("janus", &room)]).add(Mqtt::url(&mqtt_url()))
}

/// The floor host: no radios, its Janus uplink only moderates.
fn host_config() -> String {
    janus_box(HUB).add(Uplink::janus(&janus_url(), "admin.key")).toml()
}

// ---------------------------------------------------------------------------------------------
// An edge: Janus client + floor client

#[derive(Debug)]
enum Ev {
    Janus(JanusEvent),
    Floor(UplinkEvent),
}

struct Edge {
    name: &'static str,
    janus: JanusHandle,
    floor: FloorEdgeHandle,
    events: mpsc::UnboundedReceiver<(Instant, Ev)>,
    cancel: CancellationToken,
    feed: u64,
    member: ParticipantId,
    floor_up: bool,
    /// Janus may go down (a restart test); otherwise that fails the test.
    janus_may_go: bool,
    /// Every floor message seen, and every moderation of our stream (muted?).
    floor_msgs: Vec<ToParticipant>,
    moderated: Vec<bool>,
}

fn spec(display: &str) -> ChannelSpec {
    ChannelSpec {
        channel: CHANNEL.into(),
        room: RoomSettings {
            room: ROOM,
            description: "roipd floor test".into(),
            secret: Some(ROOM_SECRET.into()),
            pin: None,
            admin_key: Some(ADMIN_KEY.into()),
            publishers: 10,
        },
        create: true,
        display: display.into(),
    }
}

impl Edge {
    async fn start(name: &'static str, gate_media: bool) -> Edge {
        let cancel = CancellationToken::new();
        let (tx, events) = mpsc::unbounded_channel();
        let mut o = JanusOptions::new(janus_url(), vec![spec(&format!("{name}/radio1"))]);
        o.bind = Some(SocketAddr::from((JANUS_IP, 0)));
        o.gate_media = gate_media;
        let (jtx, mut jrx) = mpsc::channel(1024);
        let janus = janus::start(o, jtx, cancel.clone());
        let (ftx, mut frx) = mpsc::channel(1024);
        // The fleet key the floor host (a roipd daemon, `Mqtt` default) has.
        let mqtt = roipd::config::MqttConfig {
            fleet_key_file: Some(common::config::fleet_key_file()),
            ..toml::from_str(&format!("url = \"{}\"", mqtt_url())).unwrap()
        };
        let members = vec![MemberRequest { key: "radio1".into(), channel: CHANNEL.into(), priority: Priority::NORMAL }];
        let floor = start_edge(
            FloorEdgeOptions { mqtt, device_id: name.into(), floor_hub: HUB.into(), members, report: None },
            ftx,
            cancel.clone(),
        )
        .unwrap();
        // Stamped as they leave the clients, merged in order.
        let t = tx.clone();
        tokio::spawn(async move {
            while let Some(e) = jrx.recv().await {
                if t.send((Instant::now(), Ev::Janus(e))).is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            while let Some(e) = frx.recv().await {
                if tx.send((Instant::now(), Ev::Floor(e))).is_err() {
                    return;
                }
            }
        });
        let mut edge = Edge {
            name,
            janus,
            floor,
            events,
            cancel,
            feed: 0,
            member: ParticipantId(0),
            floor_up: false,
            janus_may_go: false,
            floor_msgs: Vec::new(),
            moderated: Vec::new(),
        };
        // Janus up: our feed, told to the floor host; floor joined: our member id.
        let (feed, _) = edge
            .wait("Janus up", |e| match e {
                Ev::Janus(JanusEvent::Up { channels }) => Some(channels[0].1),
                _ => None,
            })
            .await;
        edge.feed = feed;
        edge.floor.set_feed(CHANNEL, Some(feed));
        if !edge.floor_up {
            edge.wait("floor joined", |e| matches!(e, Ev::Floor(UplinkEvent::Up { .. })).then_some(())).await;
        }
        edge
    }

    fn note(&mut self, e: &Ev) {
        match e {
            Ev::Floor(UplinkEvent::Up { members }) => {
                self.member = members[0].1;
                self.floor_up = true;
            }
            Ev::Floor(UplinkEvent::Floor { msg, .. }) => self.floor_msgs.push(*msg),
            Ev::Floor(UplinkEvent::Down { reason }) => panic!("{}: floor down: {reason}", self.name),
            Ev::Janus(JanusEvent::Down { reason }) if !self.janus_may_go => {
                panic!("{}: Janus down: {reason}", self.name)
            }
            Ev::Janus(JanusEvent::Down { .. }) => self.moderated.clear(),
            // Back after a Janus restart: a new feed, told to the host as an edge daemon does.
            Ev::Janus(JanusEvent::Up { channels }) if self.feed != 0 => {
                self.feed = channels[0].1;
                self.floor.set_feed(CHANNEL, Some(self.feed));
            }
            Ev::Janus(JanusEvent::Moderated { muted, .. }) => self.moderated.push(*muted),
            _ => {}
        }
    }

    async fn wait<R>(&mut self, what: &str, mut pick: impl FnMut(&Ev) -> Option<R>) -> (R, Instant) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (at, e) = tokio::time::timeout(left, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("{}: timed out waiting for {what}", self.name))
                .expect("clients alive");
            self.note(&e);
            if let Some(r) = pick(&e) {
                return (r, at);
            }
        }
    }

    /// Our stream muted (true) or unmuted by the moderator, now or already.
    async fn moderated_to(&mut self, muted: bool) -> Instant {
        if self.moderated.last() == Some(&muted) {
            return Instant::now();
        }
        let what = if muted { "muted by the host" } else { "unmuted by the host" };
        self.wait(what, |e| matches!(e, Ev::Janus(JanusEvent::Moderated { muted: m, .. }) if *m == muted).then_some(()))
            .await
            .1
    }

    async fn floor_msg(&mut self, what: &str, pick: impl Fn(&ToParticipant) -> bool) -> Instant {
        self.wait(what, |e| match e {
            Ev::Floor(UplinkEvent::Floor { msg, member: Some(_), .. }) if pick(msg) => Some(()),
            _ => None,
        })
        .await
        .1
    }

    /// Packets per publisher heard on our subscription during `window`.
    async fn heard(&mut self, window: Duration) -> HashMap<u64, Vec<MediaPacket>> {
        let deadline = Instant::now() + window;
        let mut got: HashMap<u64, Vec<MediaPacket>> = HashMap::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Err(_) => return got,
                Ok(None) => panic!("{}: clients gone", self.name),
                Ok(Some((_, Ev::Janus(JanusEvent::Media { feed, packet, .. })))) => {
                    got.entry(feed).or_default().push(packet)
                }
                Ok(Some((_, e))) => self.note(&e),
            }
        }
    }

    /// Drop what queued up (media mostly) so the next window starts now.
    fn drain(&mut self) {
        while let Ok((_, e)) = self.events.try_recv() {
            self.note(&e);
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.janus.stopped()).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.floor.stopped()).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Opus tones

fn tone_packets(handle: JanusHandle, hz: f32, stop: CancellationToken) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut enc = Encoder::new(EncoderConfig::default()).unwrap();
        let frame = enc.frame_samples();
        let (mut phase, mut n, mut taken) = (0.0f32, 0u32, 0usize);
        let mut every = tokio::time::interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return taken,
                _ = every.tick() => {
                    let pcm: Vec<f32> = (0..frame)
                        .map(|_| {
                            phase = (phase + hz / 48_000.0).fract();
                            0.5 * (2.0 * std::f32::consts::PI * phase).sin()
                        })
                        .collect();
                    let mut out = vec![0u8; 4000];
                    let len = enc.encode(&pcm, &mut out).unwrap();
                    let packet = MediaPacket {
                        seq: 1000u16.wrapping_add(n as u16),
                        timestamp: 90_000u32.wrapping_add(n * frame as u32),
                        marker: n == 0,
                        payload: out[..len].to_vec(),
                    };
                    n += 1;
                    if handle.media(CHANNEL, packet) {
                        taken += 1;
                    }
                }
            }
        }
    })
}

/// Frequency (positive zero crossings) of the decoded packets past the decoder's first 200 ms.
fn decoded_hz(packets: &[MediaPacket]) -> f32 {
    let mut dec = Decoder::new().unwrap();
    let mut pcm = Vec::new();
    let mut buf = vec![0.0f32; MAX_FRAME_SAMPLES];
    for p in packets {
        let n = dec.decode(&p.payload, &mut buf).unwrap();
        pcm.extend_from_slice(&buf[..n]);
    }
    let tail = &pcm[pcm.len().min(9_600)..];
    let crossings = tail.windows(2).filter(|w| w[0] <= 0.0 && w[1] > 0.0).count();
    crossings as f32 * 48_000.0 / tail.len().max(1) as f32
}

async fn wait_log(d: &Daemon, what: &str, cond: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond(&d.stderr()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}\n--- floor host stderr ---\n{}", d.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Host log lines that moderated `publisher` to `mute`.
fn moderations(log: &str, publisher: &str, mute: bool) -> usize {
    log.lines()
        .filter(|l| l.contains("floor host: moderate") && l.contains(&format!("publisher={publisher} mute={mute}")))
        .count()
}

// ---------------------------------------------------------------------------------------------

#[test]
#[ignore = "runs inside the namespace its outer test makes"]
fn inner_floor_decided_by_the_hub_and_a_publisher_without_the_floor_is_muted() {
    if !inside() {
        return;
    }
    let _janus = Janus::start();
    let broker = Mosquitto::start();
    let mut host = roipd(&host_config());
    host.wait_for("floor host online", WAIT, |d| d.stderr().contains("floor host: connected to the broker"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let mut a = Edge::start("edge-a", true).await;
        let mut b = Edge::start("edge-b", true).await;
        // C's radio keys without the floor: its media is not gated here, as if it ignored the
        // floor; it joined the floor like everyone else but never got it.
        let mut c = Edge::start("edge-c", false).await;
        wait_log(&host, "three edges joined", |l| l.matches("floor host: edge joined").count() >= 3).await;
        println!("feeds: a={} b={} c={}", a.feed, b.feed, c.feed);

        // Nobody holds the floor: the host mutes every publisher.
        for e in [&mut a, &mut b, &mut c] {
            e.moderated_to(true).await;
        }

        // A asks and is granted by the host; it sends; the host unmutes it.
        let asked = Instant::now();
        a.floor.floor(a.member, ToArbiter::Request { priority: Priority::NORMAL });
        let granted = a.floor_msg("A granted", |m| *m == ToParticipant::Granted).await;
        assert!(a.janus.set_sending(CHANNEL, true));
        let stop_a = CancellationToken::new();
        let talk_a = tone_packets(a.janus.clone(), 1000.0, stop_a.clone());
        let unmuted = a.moderated_to(false).await;
        println!(
            "A: request -> granted {} ms, granted -> unmuted in Janus {} ms",
            (granted - asked).as_millis(),
            unmuted.saturating_duration_since(granted).as_millis()
        );

        // B asks while A talks: busy, decided by the host.
        b.floor.floor(b.member, ToArbiter::Request { priority: Priority::NORMAL });
        b.floor_msg("B denied busy", |m| matches!(m, ToParticipant::Deny { cause: DenyCause::Busy { .. } })).await;

        // C keys without the floor: it asks Janus to relay (send: true) and sends a 700 Hz tone.
        assert!(c.janus.set_sending(CHANNEL, true));
        let stop_c = CancellationToken::new();
        let talk_c = tone_packets(c.janus.clone(), 700.0, stop_c.clone());
        assert_eq!(c.moderated.last(), Some(&true), "C stays muted: it does not hold the floor");

        // What B hears for 6 s (A holds the floor well past the 5 s no-media timeout): A's tone,
        // nothing of C's.
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.drain();
        let heard = b.heard(Duration::from_secs(6)).await;
        let from_a = heard.get(&a.feed).map_or(0, Vec::len);
        let from_c = heard.get(&c.feed).map_or(0, Vec::len);
        println!("B heard in 6 s: {from_a} packets from A (holder), {from_c} from C (muted, no floor)");
        assert!(from_a >= 250, "B heard {from_a} of ~300 packets from the holder A");
        assert_eq!(from_c, 0, "C's audio reached B although C was muted");
        let hz = decoded_hz(&heard[&a.feed]);
        println!("B decodes A's tone at {hz:.0} Hz");
        assert!((970.0..=1030.0).contains(&hz), "decoded {hz} Hz from A");
        a.drain();
        assert!(
            !a.floor_msgs.iter().any(|m| matches!(m, ToParticipant::Revoke { .. })),
            "A lost the floor while talking: {:?}",
            a.floor_msgs
        );

        // A lets go; C now asks properly and gets the floor: the host unmutes C, mutes A, and
        // B hears C's tone.
        stop_a.cancel();
        let sent_a = talk_a.await.unwrap();
        a.janus.set_sending(CHANNEL, false);
        a.floor.floor(a.member, ToArbiter::Release);
        a.moderated_to(true).await;
        c.floor.floor(c.member, ToArbiter::Request { priority: Priority::NORMAL });
        c.floor_msg("C granted", |m| *m == ToParticipant::Granted).await;
        c.moderated_to(false).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.drain();
        let heard = b.heard(Duration::from_secs(2)).await;
        let from_c = heard.get(&c.feed).map(Vec::as_slice).unwrap_or_default();
        println!("after the floor moved: B heard {} packets from C in 2 s", from_c.len());
        assert!(from_c.len() >= 80, "B heard {} packets from C, the new holder", from_c.len());
        let hz = decoded_hz(from_c);
        assert!((670.0..=730.0).contains(&hz), "decoded {hz} Hz from C");
        stop_c.cancel();
        let sent_c = talk_c.await.unwrap();
        println!("A sent {sent_a} packets, C {sent_c}");

        let log = host.stderr();
        assert!(moderations(&log, "edge-c/radio1", true) >= 1, "the host's log names C's mute\n{log}");
        assert!(moderations(&log, "edge-a/radio1", false) >= 1, "the host's log names A's unmute");
        for e in [a, b, c] {
            e.stop().await;
        }
    });
    drop(broker);
}

// ---------------------------------------------------------------------------------------------
// roipd edges (processes with sim radios) against the roipd floor host

/// A field box with one sim radio on `ops` (COR `cor`, PTT `ptt`, a tone while the COR is
/// open: the host sees the talker's audio in Janus, which keeps its floor), its floor on hub-1.
/// A dispatch link is full duplex, so its COR counts while the channel keys it.
fn radio_edge(device: &str, priority: u8, hz: u32) -> Daemon {
    let radio = Radio::new("radio1", CHANNEL)
        .priority(priority.into())
        .set("duplex", priority > 0)
        .cor("sim:cor")
        .ptt("sim:ptt")
        .capture(&format!("sim:tone:{hz}:-12"))
        .playback("sim:wav-out:{dir}/tx.wav");
    let uplink = Uplink::janus(&janus_url(), "admin.key").set("floor_hub", format!("\"{HUB}\""));
    roipd(&janus_box(device).add(radio).add(uplink).toml())
}

/// A box's floor story (requests, decisions, COR, keying) without the media chatter.
fn floor_lines(d: &Daemon) -> String {
    let log = d.stderr();
    let keep = ["floor", "COR", "keying", "PTT", "on air", "WARN", "ERROR"];
    log.lines().filter(|l| keep.iter().any(|k| l.contains(k))).collect::<Vec<_>>().join("\n")
}

fn busy_count(d: &Daemon) -> usize {
    d.stderr().matches("floor busy").count()
}

#[test]
#[ignore = "runs inside the namespace its outer test makes"]
fn inner_roipd_edges_simultaneous_key_up_one_talks_dispatch_preempts() {
    if !inside() {
        return;
    }
    let _janus = Janus::start();
    let _broker = Mosquitto::start();
    let mut host = roipd(&host_config());
    host.wait_for("floor host online", WAIT, |d| d.stderr().contains("floor host: connected to the broker"));
    let mut a = radio_edge("edge-a", 0, 1000);
    let mut b = radio_edge("edge-b", 0, 1500);
    let mut d = radio_edge("edge-d", 100, 700);
    for e in [&mut a, &mut b, &mut d] {
        e.wait_for("uplink up", WAIT, |d| d.stderr().contains("uplink up"));
    }
    host.wait_for("three edges joined", WAIT, |h| h.stderr().matches("floor host: edge joined").count() >= 3);

    // A and B key up at once: the host lets exactly one talk; the other is told busy.
    a.drive("cor", true);
    b.drive("cor", true);
    let deadline = Instant::now() + WAIT;
    while busy_count(&a) + busy_count(&b) == 0 {
        assert!(
            Instant::now() < deadline,
            "nobody told busy\n--- a ---\n{}\n--- b ---\n{}\n--- host ---\n{}",
            floor_lines(&a),
            floor_lines(&b),
            floor_lines(&host)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(busy_count(&a) + busy_count(&b), 1, "exactly one is told busy");
    let (winner, loser) = if busy_count(&b) == 1 { (&mut a, &mut b) } else { (&mut b, &mut a) };
    // D (idle, listening) carries the winner: its radio keys.
    d.wait_for("D keyed for the winner", WAIT, |d| d.line("ptt") == Some(true));
    // The loser's squelch closes: its radio now carries the winner too.
    loser.drive("cor", false);
    loser.wait_for("loser keyed for the winner", WAIT, |d| d.line("ptt") == Some(true));
    assert_eq!(winner.line("ptt"), Some(false), "the talker's own radio is not keyed");

    // D (priority 100) keys up: the host preempts the winner, whose floor is revoked.
    d.drive("cor", true);
    winner.wait_for("winner revoked", WAIT, |w| w.stderr().contains("floor revoked"));
    assert!(winner.stderr().contains("Preempted"), "revoked by D's preemption, not a timeout\n{}", winner.stderr());
    winner.drive("cor", false);
    winner.wait_for("winner keyed for D", WAIT, |w| w.line("ptt") == Some(true));
    assert!(loser.line("ptt") == Some(true), "the loser carries D now");
    let log = host.stderr();
    assert!(log.contains("floor host: channel taken") && log.contains("radio1@edge-d"), "the host names D as holder");

    // D lets go: every radio unkeys.
    d.drive("cor", false);
    for e in [&mut a, &mut b, &mut d] {
        e.wait_for("radio unkeyed on idle", WAIT, |d| d.line("ptt") == Some(false));
    }
    host.wait_for("channel idle", WAIT, |h| h.stderr().contains("floor host: channel idle"));
}

/// Janus restarts: every publisher comes back unmuted in a new room, with a new feed. The host
/// rebuilds its own session, sees the publishers again and mutes the one without the floor.
#[test]
#[ignore = "runs inside the namespace its outer test makes"]
fn inner_restarted_janus_a_publisher_without_the_floor_is_muted_again() {
    if !inside() {
        return;
    }
    let mut janus = Janus::start();
    let _broker = Mosquitto::start();
    let mut host = roipd(&host_config());
    host.wait_for("floor host online", WAIT, |d| d.stderr().contains("floor host: connected to the broker"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let mut b = Edge::start("edge-b", true).await;
        let mut c = Edge::start("edge-c", false).await;
        c.moderated_to(true).await;
        assert!(c.janus.set_sending(CHANNEL, true));
        let stop_c = CancellationToken::new();
        let talk_c = tone_packets(c.janus.clone(), 700.0, stop_c.clone());
        b.drain();
        let before = b.heard(Duration::from_secs(1)).await;
        assert_eq!(before.get(&c.feed).map_or(0, Vec::len), 0, "C muted before the restart");

        b.janus_may_go = true;
        c.janus_may_go = true;
        let old_feed = c.feed;
        janus.kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let restarted = Instant::now();
        tokio::task::block_in_place(|| janus.spawn());
        // C back with a new feed, then muted again by the host.
        c.wait("C back in Janus", |e| matches!(e, Ev::Janus(JanusEvent::Up { .. })).then_some(())).await;
        assert_ne!(c.feed, old_feed);
        let muted = c.moderated_to(true).await;
        println!("Janus restarted: C muted again {} ms after Janus was back", (muted - restarted).as_millis());
        // C asks Janus to relay it again (a restart resets sending) and keeps talking.
        assert!(c.janus.set_sending(CHANNEL, true));
        b.wait("B back in Janus", |e| matches!(e, Ev::Janus(JanusEvent::Up { .. })).then_some(())).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        b.drain();
        let heard = b.heard(Duration::from_secs(2)).await;
        let from_c = heard.get(&c.feed).map_or(0, Vec::len);
        println!("after the restart B heard {from_c} packets from C in 2 s");
        assert_eq!(from_c, 0, "C heard after the restart although it holds no floor");
        stop_c.cancel();
        let _ = talk_c.await;
        let log = host.stderr();
        assert!(log.contains("floor host: Janus session down"), "the host saw Janus go");
        assert!(moderations(&log, "edge-c/radio1", true) >= 2, "C muted before and after the restart\n{log}");
        for e in [b, c] {
            e.stop().await;
        }
    });
}
