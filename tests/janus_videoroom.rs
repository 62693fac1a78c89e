//! The Janus uplink against Debian's real `janus` (1.1): two clients on one channel/room,
//! audio from one arrives at the other's subscription, `send: false` relays nothing, and a
//! Janus killed and restarted mid-call is recovered from.
//!
//! Janus never gathers ICE candidates on `lo`, so each test makes a private network namespace
//! (`unshare -n`) with `lo` and a veth pair whose end `v0` carries 127.0.0.2/32; Janus and the
//! clients use 127.0.0.2 (see ../shared/design/TESTING.md). Every byte stays in that
//! namespace. Each `#[test]` below re-executes this test binary inside such a namespace to run
//! its `inner_*` twin (marked ignored, so it only runs there); the inner test starts Janus
//! itself with the configuration in `tests/janus/` (namespace and Janus: tests/common/fleet_ns.rs).
//!
//! Needs root (for the namespace) and the Debian packages `janus` and `iproute2`; a missing
//! one fails the test with its name (`scripts/setup-debian --test` installs them).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use roipd::codec::{Decoder, Encoder, EncoderConfig, MAX_FRAME_SAMPLES};
use roipd::net::janus::{self, ChannelSpec, JanusEvent, JanusHandle, JanusOptions, RoomSettings};
use roipd::pipeline::MediaPacket;

use common::fleet_ns::{in_namespace, inside, Janus, JANUS_IP, JANUS_WS_PORT};

const OUTER_LIMIT: Duration = Duration::from_secs(180);

fn run_inner(inner: &str) {
    in_namespace(inner, &[], OUTER_LIMIT);
}

#[test]
fn janus_two_clients_audio_through_a_room() {
    run_inner("inner_two_clients_audio_through_a_room");
}

#[test]
fn janus_send_false_publishes_nothing() {
    run_inner("inner_send_false_publishes_nothing");
}

#[test]
fn janus_subscription_follows_publishers_leaving_and_joining() {
    run_inner("inner_subscription_follows_publishers_leaving_and_joining");
}

#[test]
fn janus_desk_on_20_channels_hears_each_and_mutes_one() {
    run_inner("inner_desk_on_20_channels_hears_each_and_mutes_one");
}

#[test]
fn janus_restart_mid_call_both_rejoin_and_audio_flows_again() {
    run_inner("inner_restart_mid_call_both_rejoin_and_audio_flows_again");
}

// ---------------------------------------------------------------------------------------------
// Clients

const CHANNEL: &str = "ops";
const ROOM: u64 = 4242;
const WAIT: Duration = Duration::from_secs(15);

fn spec(channel: &str, room: u64, display: &str) -> ChannelSpec {
    ChannelSpec {
        channel: channel.into(),
        room: RoomSettings {
            room,
            description: format!("roipd test channel {channel}"),
            secret: Some("room-secret".into()),
            pin: Some("room-pin".into()),
            admin_key: Some("roipd-test-admin-key".into()),
            publishers: 10,
        },
        create: true,
        display: display.into(),
    }
}

struct Client {
    name: &'static str,
    handle: JanusHandle,
    /// Stamped when they left the uplink (a forwarding task reads them at once), so figures
    /// hold even while the test thread is busy restarting Janus.
    events: mpsc::UnboundedReceiver<(Instant, JanusEvent)>,
    cancel: CancellationToken,
    started: Instant,
    /// The latest roster of each channel seen by any wait (a roster may come before `Up`).
    roster: HashMap<String, Vec<u64>>,
}

/// One received packet: when, on which channel, from which publisher.
type Heard = (Instant, String, u64, MediaPacket);

impl Client {
    /// A client on channel `ops` (room 4242).
    fn start(name: &'static str, gate_media: bool) -> Client {
        Self::on(name, &[(CHANNEL.to_owned(), ROOM)], gate_media)
    }

    fn on(name: &'static str, channels: &[(String, u64)], gate_media: bool) -> Client {
        let mut o = Self::options(name, channels);
        o.bind = Some(SocketAddr::from((JANUS_IP, 0)));
        o.gate_media = gate_media;
        Self::with(name, o)
    }

    fn options(name: &str, channels: &[(String, u64)]) -> JanusOptions {
        let specs = channels.iter().map(|(c, room)| spec(c, *room, &format!("{name}/radio1"))).collect();
        JanusOptions::new(format!("ws://{JANUS_IP}:{JANUS_WS_PORT}"), specs)
    }

    fn with(name: &'static str, o: JanusOptions) -> Client {
        let (tx, mut raw) = mpsc::channel(1024);
        let (stamped, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(e) = raw.recv().await {
                if stamped.send((Instant::now(), e)).is_err() {
                    return;
                }
            }
        });
        let cancel = CancellationToken::new();
        let started = Instant::now();
        let handle = janus::start(o, tx, cancel.clone());
        Client { name, handle, events, cancel, started, roster: HashMap::new() }
    }

    /// The next event `pick` accepts (others are skipped), and when it came.
    async fn wait<R>(&mut self, what: &str, mut pick: impl FnMut(&JanusEvent) -> Option<R>) -> (R, Instant) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (at, e) = tokio::time::timeout(left, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("{}: timed out waiting for {what}", self.name))
                .expect("uplink alive");
            self.note(&e);
            if let Some(r) = pick(&e) {
                return (r, at);
            }
        }
    }

    fn note(&mut self, e: &JanusEvent) {
        if let JanusEvent::Roster { channel, publishers } = e {
            self.roster.insert(channel.clone(), publishers.iter().map(|p| p.0).collect());
        }
    }

    /// Up: our publisher id in each channel's room, and how long it took since `start`.
    async fn up_all(&mut self) -> (Vec<(String, u64)>, Duration) {
        let name = self.name;
        let (ids, at) = self
            .wait("Up", |e| match e {
                JanusEvent::Up { channels } => Some(channels.clone()),
                JanusEvent::Down { reason } => panic!("{name}: down instead of up: {reason}"),
                _ => None,
            })
            .await;
        (ids, at - self.started)
    }

    /// Up, on a one-channel client.
    async fn up(&mut self) -> (u64, Duration) {
        let (ids, took) = self.up_all().await;
        (ids[0].1, took)
    }

    async fn sees(&mut self, feed: u64) {
        if self.roster.values().any(|r| r.contains(&feed)) {
            return;
        }
        self.wait("the other publisher in the roster", |e| match e {
            JanusEvent::Roster { publishers, .. } if publishers.iter().any(|p| p.0 == feed) => Some(()),
            _ => None,
        })
        .await;
    }

    async fn sending(&mut self, on: bool) {
        self.sending_on(CHANNEL, on).await
    }

    async fn sending_on(&mut self, channel: &str, on: bool) {
        self.wait("Janus to confirm sending", |e| {
            matches!(e, JanusEvent::Sending { on: o, channel: c } if *o == on && c == channel).then_some(())
        })
        .await;
    }

    /// Media (any channel, any publisher) until `limit` passes or `enough` packets came.
    async fn media(&mut self, limit: Duration, enough: usize) -> Vec<Heard> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        while got.len() < enough {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Err(_) => break,
                Ok(None) => panic!("{}: uplink gone", self.name),
                Ok(Some((at, JanusEvent::Media { channel, feed, packet }))) => got.push((at, channel, feed, packet)),
                Ok(Some((_, JanusEvent::Down { reason }))) => panic!("{}: down while receiving: {reason}", self.name),
                Ok(Some((_, e))) => self.note(&e),
            }
        }
        got
    }

    /// Media from `feed` on `ops` until `limit` passes or `enough` packets came (others are
    /// dropped); with arrival times.
    async fn media_from(&mut self, feed: u64, limit: Duration, enough: usize) -> Vec<(Instant, MediaPacket)> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        while got.len() < enough {
            let left = deadline.saturating_duration_since(Instant::now());
            for (at, channel, f, packet) in self.media(left, 1).await {
                if f == feed {
                    assert_eq!(channel, CHANNEL);
                    got.push((at, packet));
                }
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        got
    }

    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle.stopped()).await.expect("uplink stops");
    }
}

// ---------------------------------------------------------------------------------------------
// Opus tone

const TONE_HZ: f32 = 1000.0;

/// An endless 1 kHz tone as 20 ms Opus packets, numbered like a radio port's encoder would.
struct Tone {
    enc: Encoder,
    phase: f32,
    n: u32,
}

impl Tone {
    fn new() -> Tone {
        Tone { enc: Encoder::new(EncoderConfig::default()).unwrap(), phase: 0.0, n: 0 }
    }

    fn next(&mut self) -> MediaPacket {
        let frame = self.enc.frame_samples();
        let pcm: Vec<f32> = (0..frame)
            .map(|_| {
                self.phase = (self.phase + TONE_HZ / 48_000.0).fract();
                0.5 * (2.0 * std::f32::consts::PI * self.phase).sin()
            })
            .collect();
        let mut out = vec![0u8; 4000];
        let len = self.enc.encode(&pcm, &mut out).unwrap();
        let p = MediaPacket {
            seq: 30_000u16.wrapping_add(self.n as u16),
            timestamp: 5_000_000u32.wrapping_add(self.n * frame as u32),
            marker: self.n == 0,
            payload: out[..len].to_vec(),
        };
        self.n += 1;
        p
    }
}

/// Send the tone on `handle` every 20 ms until cancelled; counts what the handle took.
fn talk(handle: JanusHandle, stop: CancellationToken) -> tokio::task::JoinHandle<usize> {
    talk_on(handle, CHANNEL, stop)
}

fn talk_on(handle: JanusHandle, channel: &str, stop: CancellationToken) -> tokio::task::JoinHandle<usize> {
    let channel = channel.to_owned();
    tokio::spawn(async move {
        let mut tone = Tone::new();
        let mut every = tokio::time::interval(Duration::from_millis(20));
        let mut taken = 0;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return taken,
                _ = every.tick() => {
                    if handle.media(&channel, tone.next()) {
                        taken += 1;
                    }
                }
            }
        }
    })
}

/// Frequency (from positive-going zero crossings) and RMS of the decoded packets, past the
/// decoder's first 200 ms.
fn decoded_tone(packets: &[(Instant, MediaPacket)]) -> (f32, f32) {
    let mut dec = Decoder::new().unwrap();
    let mut pcm = Vec::new();
    let mut buf = vec![0.0f32; MAX_FRAME_SAMPLES];
    for (_, p) in packets {
        let n = dec.decode(&p.payload, &mut buf).unwrap();
        pcm.extend_from_slice(&buf[..n]);
    }
    let tail = &pcm[pcm.len().min(9_600)..];
    let crossings = tail.windows(2).filter(|w| w[0] <= 0.0 && w[1] > 0.0).count();
    let rms = (tail.iter().map(|s| s * s).sum::<f32>() / tail.len().max(1) as f32).sqrt();
    (crossings as f32 * 48_000.0 / tail.len().max(1) as f32, rms)
}

fn assert_tone(packets: &[(Instant, MediaPacket)]) {
    let (hz, rms) = decoded_tone(packets);
    println!("decoded tone {hz:.0} Hz, RMS {rms:.2} from {} packets", packets.len());
    assert!((TONE_HZ - 30.0..=TONE_HZ + 30.0).contains(&hz), "decoded {hz} Hz");
    assert!(rms > 0.1, "decoded RMS {rms}");
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

// ---------------------------------------------------------------------------------------------
// Inner tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the namespace made by janus_two_clients_audio_through_a_room"]
async fn inner_two_clients_audio_through_a_room() {
    if !inside() {
        return;
    }
    let _janus = Janus::start();
    let mut a = Client::start("edge-a", true);
    let mut b = Client::start("edge-b", true);
    let (id_a, join_a) = a.up().await;
    let (id_b, join_b) = b.up().await;
    println!("join: A up in {} ms (publisher {id_a}), B up in {} ms (publisher {id_b})", ms(join_a), ms(join_b));
    assert_ne!(id_a, id_b);
    b.sees(id_a).await;
    a.sees(id_b).await;

    // Idle: nothing goes out (the handle refuses media while not sending).
    assert!(!a.handle.media(CHANNEL, Tone::new().next()), "media refused while not holding the floor");

    assert!(a.handle.set_sending(CHANNEL, true));
    a.sending(true).await;
    let stop = CancellationToken::new();
    let keyed = Instant::now();
    let talker = talk(a.handle.clone(), stop.clone());
    let got = b.media_from(id_a, Duration::from_secs(5), 150).await;
    stop.cancel();
    let taken = talker.await.unwrap();
    assert!(!got.is_empty(), "B received nothing from A");
    println!(
        "audio: A sent {taken} packets, B received {} from A's feed; first after {} ms",
        got.len(),
        ms(got[0].0 - keyed)
    );
    assert!(got.len() >= 120, "only {} of {taken} packets arrived", got.len());
    assert_tone(&got);

    // And the other way round, on the same room.
    assert!(b.handle.set_sending(CHANNEL, true));
    b.sending(true).await;
    let stop = CancellationToken::new();
    let talker = talk(b.handle.clone(), stop.clone());
    let got = a.media_from(id_b, Duration::from_secs(4), 100).await;
    stop.cancel();
    talker.await.unwrap();
    println!("audio back: A received {} packets from B", got.len());
    assert!(got.len() >= 80);
    assert_tone(&got);
    assert!(b.handle.set_sending(CHANNEL, false));
    b.sending(false).await;

    // B mutes the channel (subscriber `configure`, no renegotiation), then listens again.
    let stop = CancellationToken::new();
    let talker = talk(a.handle.clone(), stop.clone());
    assert_eq!(b.media_from(id_a, Duration::from_secs(3), 10).await.len(), 10);
    assert!(b.handle.listen(CHANNEL, false));
    b.media_from(id_a, Duration::from_millis(300), usize::MAX).await;
    let muted = b.media_from(id_a, Duration::from_millis(1500), usize::MAX).await;
    assert!(muted.is_empty(), "{} packets while muted", muted.len());
    assert!(b.handle.listen(CHANNEL, true));
    let again = b.media_from(id_a, Duration::from_secs(3), 25).await;
    stop.cancel();
    talker.await.unwrap();
    assert_eq!(again.len(), 25, "B listens again");
    assert!(a.handle.is_up() && b.handle.is_up());

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the namespace made by janus_subscription_follows_publishers_leaving_and_joining"]
async fn inner_subscription_follows_publishers_leaving_and_joining() {
    if !inside() {
        return;
    }
    let _janus = Janus::start();
    let mut b = Client::start("edge-b", true);
    b.up().await;
    // Talkers come and go while B stays: Janus renegotiates B's one subscription each time
    // (a new m-line for a new publisher, an inactive one for a publisher gone, reused later).
    for (round, name) in ["edge-a", "edge-c", "edge-d"].into_iter().enumerate() {
        let mut t = Client::start(name, true);
        let (id, _) = t.up().await;
        b.sees(id).await;
        assert!(t.handle.set_sending(CHANNEL, true));
        t.sending(true).await;
        let stop = CancellationToken::new();
        let talker = talk(t.handle.clone(), stop.clone());
        let got = b.media_from(id, Duration::from_secs(5), 50).await;
        stop.cancel();
        talker.await.unwrap();
        println!("round {round}: B heard {name} ({} packets)", got.len());
        assert_eq!(got.len(), 50, "B hears {name}");
        assert_tone(&got);
        t.stop().await;
        let name_b = b.name;
        b.wait("the talker gone from the roster", |e| match e {
            JanusEvent::Roster { publishers, .. } if !publishers.iter().any(|p| p.0 == id) => Some(()),
            JanusEvent::Down { reason } => panic!("{name_b}: down: {reason}"),
            _ => None,
        })
        .await;
    }
    assert!(b.handle.is_up(), "B's session survived every renegotiation");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the namespace made by janus_send_false_publishes_nothing"]
async fn inner_send_false_publishes_nothing() {
    if !inside() {
        return;
    }
    let _janus = Janus::start();
    // A writes whatever it is given (no local gate): Janus's `send: false` alone holds it back.
    let mut a = Client::start("edge-a", false);
    let mut b = Client::start("edge-b", true);
    let (id_a, _) = a.up().await;
    b.up().await;
    b.sees(id_a).await;

    // First prove the path: sending on, B hears A.
    assert!(a.handle.set_sending(CHANNEL, true));
    a.sending(true).await;
    let stop = CancellationToken::new();
    let talker = talk(a.handle.clone(), stop.clone());
    let before = b.media_from(id_a, Duration::from_secs(5), 25).await;
    assert_eq!(before.len(), 25, "B hears A while A sends");

    // `send: false` while A keeps writing: nothing reaches B.
    assert!(a.handle.set_sending(CHANNEL, false));
    a.sending(false).await;
    // Packets already relayed may still be on their way.
    b.media_from(id_a, Duration::from_millis(300), usize::MAX).await;
    let during = b.media_from(id_a, Duration::from_secs(2), usize::MAX).await;
    println!("send:false: B received {} packets in 2 s while A wrote 100", during.len());
    assert!(during.is_empty(), "Janus relayed {} packets of a publisher with send:false", during.len());

    // And on again.
    assert!(a.handle.set_sending(CHANNEL, true));
    a.sending(true).await;
    let after = b.media_from(id_a, Duration::from_secs(5), 25).await;
    stop.cancel();
    let taken = talker.await.unwrap();
    assert_eq!(after.len(), 25, "B hears A again");
    println!("A's handle took {taken} packets over the whole test");

    // With the local gate (the default), B's handle refuses media while B does not send.
    assert!(!b.handle.media(CHANNEL, Tone::new().next()));
    a.stop().await;
    b.stop().await;
}

/// After Janus went away: both see `Down` (and stop sending), come `Up` again; A (as its
/// router would, holding the floor) sends again, and B hears A's new publisher.
struct Rejoin {
    down_reason: String,
    a_down: Instant,
    b_down: Instant,
    a_up: Instant,
    b_up: Instant,
    heard: Instant,
    new_a: u64,
}

async fn rejoin(a: &mut Client, b: &mut Client, old_a: u64) -> Rejoin {
    let a_side = async {
        let (_, a_down) = a.wait("Down", |e| matches!(e, JanusEvent::Down { .. }).then_some(())).await;
        assert!(!a.handle.is_up());
        assert!(!a.handle.media(CHANNEL, Tone::new().next()), "no media while down");
        assert!(!a.handle.set_sending(CHANNEL, true), "no sending while down");
        let (new_a, a_up) = a
            .wait("Up again", |e| match e {
                JanusEvent::Up { channels } => Some(channels[0].1),
                _ => None,
            })
            .await;
        assert!(!a.handle.media(CHANNEL, Tone::new().next()), "sending is off after a reconnect until asked");
        assert!(a.handle.set_sending(CHANNEL, true));
        (new_a, a_down, a_up)
    };
    let b_side = async {
        let (down_reason, b_down) = b
            .wait("Down", |e| match e {
                JanusEvent::Down { reason } => Some(reason.clone()),
                _ => None,
            })
            .await;
        let (_, b_up) = b.wait("Up again", |e| matches!(e, JanusEvent::Up { .. }).then_some(())).await;
        let (feed, heard) = b
            .wait("A's audio again", |e| match e {
                JanusEvent::Media { feed, .. } if *feed != old_a => Some(*feed),
                _ => None,
            })
            .await;
        (down_reason, b_down, b_up, feed, heard)
    };
    let ((new_a, a_down, a_up), (down_reason, b_down, b_up, feed, heard)) = tokio::join!(a_side, b_side);
    assert_eq!(feed, new_a, "the audio B hears is A's new publisher");
    Rejoin { down_reason, a_down, b_down, a_up, b_up, heard, new_a }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the namespace made by janus_restart_mid_call_both_rejoin_and_audio_flows_again"]
async fn inner_restart_mid_call_both_rejoin_and_audio_flows_again() {
    if !inside() {
        return;
    }
    let mut janus = Janus::start();
    let mut a = Client::start("edge-a", true);
    let mut b = Client::start("edge-b", true);
    let (id_a, _) = a.up().await;
    b.up().await;
    b.sees(id_a).await;
    assert!(a.handle.set_sending(CHANNEL, true));
    a.sending(true).await;
    let stop = CancellationToken::new();
    let talker = talk(a.handle.clone(), stop.clone());
    let got = b.media_from(id_a, Duration::from_secs(5), 25).await;
    assert_eq!(got.len(), 25, "audio flows before the restart");

    // 1. Mid-call, Janus crashes (SIGKILL) and is started again at once.
    let killed = Instant::now();
    janus.kill();
    janus.spawn();
    let listening = Instant::now();
    let r = rejoin(&mut a, &mut b, id_a).await;
    let got = b.media_from(r.new_a, Duration::from_secs(5), 50).await;
    println!(
        "restart (kill): Down seen by A after {} ms, B after {} ms ({}); Janus listening again after {} ms; \
         A up after {} ms, B up after {} ms; A's audio at B {} ms after the kill",
        ms(r.a_down - killed),
        ms(r.b_down - killed),
        r.down_reason,
        ms(listening - killed),
        ms(r.a_up - killed),
        ms(r.b_up - killed),
        ms(r.heard - killed)
    );
    assert!(got.len() >= 45, "only {} packets after recovery", got.len());
    assert_tone(&got);
    assert!(r.heard - killed <= Duration::from_secs(5), "recovery took {} ms (target <= 5 s)", ms(r.heard - killed));

    // 2. A longer outage: Janus stopped (SIGTERM, as systemd does), down for 3 s, started
    // again. The boxes keep retrying, at most 5 s apart.
    let stopping = Instant::now();
    let exited = janus.terminate();
    std::thread::sleep(Duration::from_secs(3).saturating_sub(exited));
    janus.spawn();
    let listening = Instant::now();
    let r2 = rejoin(&mut a, &mut b, r.new_a).await;
    let got = b.media_from(r2.new_a, Duration::from_secs(5), 50).await;
    stop.cancel();
    talker.await.unwrap();
    println!(
        "restart (SIGTERM): Janus exited after {} ms, listening again after {} ms; Down seen by B after {} ms ({}); \
         A's audio at B {} ms after the stop, {} ms after Janus listened again",
        ms(exited),
        ms(listening - stopping),
        ms(r2.b_down - stopping),
        r2.down_reason,
        ms(r2.heard - stopping),
        ms(r2.heard - listening)
    );
    assert!(got.len() >= 45, "only {} packets after recovery", got.len());
    assert_tone(&got);
    assert!(
        r2.heard - listening <= Duration::from_secs(7),
        "{} ms from Janus back to audio (retries are at most 5 s apart)",
        ms(r2.heard - listening)
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the namespace made by janus_desk_on_20_channels_hears_each_and_mutes_one"]
async fn inner_desk_on_20_channels_hears_each_and_mutes_one() {
    if !inside() {
        return;
    }
    let _janus = Janus::start();
    // A dispatch desk on 20 channels (20 rooms, 40 handles, one WebSocket, one UDP socket),
    // and a field box on two of them.
    let desk_channels: Vec<(String, u64)> = (0..20).map(|i| (format!("ch{i:02}"), 5000 + i)).collect();
    // Media bound by default: to the address the kernel uses towards Janus (127.0.0.2 here).
    let mut desk = Client::with("desk", Client::options("desk", &desk_channels));
    let (desk_ids, took) = desk.up_all().await;
    assert_eq!(desk_ids.len(), 20);
    println!("desk: 20 channels published and connected in {} ms", ms(took));
    let field_channels = vec![desk_channels[3].clone(), desk_channels[17].clone()];
    let mut field = Client::on("edge-e", &field_channels, true);
    let (field_ids, took) = field.up_all().await;
    println!("field box: 2 channels up in {} ms", ms(took));
    for (_, id) in &field_ids {
        desk.sees(*id).await;
    }

    // The field box talks on each of its channels in turn: the desk hears it there only.
    for (channel, id) in &field_ids {
        assert!(field.handle.set_sending(channel, true));
        field.sending_on(channel, true).await;
        let stop = CancellationToken::new();
        let talker = talk_on(field.handle.clone(), channel, stop.clone());
        let got = desk.media(Duration::from_secs(5), 50).await;
        stop.cancel();
        talker.await.unwrap();
        assert_eq!(got.len(), 50, "the desk hears {channel}");
        assert!(got.iter().all(|(_, c, f, _)| c == channel && f == id), "only {channel}, only the field box");
        let tone: Vec<(Instant, MediaPacket)> = got.into_iter().map(|(at, _, _, p)| (at, p)).collect();
        assert_tone(&tone);
        assert!(field.handle.set_sending(channel, false));
        field.sending_on(channel, false).await;
        desk.media(Duration::from_millis(300), usize::MAX).await;
    }

    // The desk mutes ch17 (no renegotiation): nothing from there, while ch03 still comes.
    let (ch17, ch03) = (&field_ids[1].0, &field_ids[0].0);
    assert!(desk.handle.listen(ch17, false));
    for (channel, _) in &field_ids {
        assert!(field.handle.set_sending(channel, true));
        field.sending_on(channel, true).await;
    }
    let stop = CancellationToken::new();
    let t1 = talk_on(field.handle.clone(), ch03, stop.clone());
    let t2 = talk_on(field.handle.clone(), ch17, stop.clone());
    desk.media(Duration::from_millis(300), usize::MAX).await;
    let got = desk.media(Duration::from_millis(1500), usize::MAX).await;
    let from_17 = got.iter().filter(|(_, c, _, _)| c == ch17).count();
    let from_03 = got.iter().filter(|(_, c, _, _)| c == ch03).count();
    println!("desk with ch17 muted: {from_03} packets from ch03, {from_17} from ch17 in 1.5 s");
    assert_eq!(from_17, 0);
    assert!(from_03 >= 60);
    assert!(desk.handle.listen(ch17, true));
    desk.media(Duration::from_millis(300), usize::MAX).await;
    let got = desk.media(Duration::from_millis(1000), usize::MAX).await;
    stop.cancel();
    t1.await.unwrap();
    t2.await.unwrap();
    let from_17 = got.iter().filter(|(_, c, _, _)| c == ch17).count();
    assert!(from_17 >= 40, "ch17 heard again ({from_17})");
    assert!(desk.handle.is_up() && field.handle.is_up());
    desk.stop().await;
    field.stop().await;
}
