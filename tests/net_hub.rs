//! The hub and the uplink client end to end on 127.0.0.1: real WebSockets, real str0m on both
//! sides (ICE, DTLS, SRTP), Opus encoded and decoded. A small fake channel router stands in for
//! the daemon's: it answers `Joined`, grants free floors, and forwards the holder's media to the
//! other peers on the channel.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use roipd::codec::{Decoder, Encoder, EncoderConfig, MAX_FRAME_SAMPLES};
use roipd::core::floor::{DenyCause, ParticipantId, Priority, ToArbiter, ToParticipant};
use roipd::net::peer_queue::{PeerTx, INBOX};
use roipd::net::{
    self, HubChannel, HubEvent, HubHandle, HubOptions, HubToken, MemberRequest, PeerId, ToPeer, UplinkEvent,
    UplinkHandle, UplinkOptions,
};
use roipd::pipeline::MediaPacket;

const T: Duration = Duration::from_secs(10);
const ALL: &str = "s3cret";
const OPS_ONLY: &str = "opsonly";

// ---------------------------------------------------------------------------------------------
// Fixtures

fn options(listen: SocketAddr, media_port: Option<u16>) -> HubOptions {
    let mut o = HubOptions::new(listen);
    o.media_port = media_port;
    o.tokens = vec![
        HubToken { name: "all".into(), secret: format!("{ALL}\n"), channels: vec!["*".into()], max_priority: None },
        HubToken { name: "ops".into(), secret: OPS_ONLY.into(), channels: vec!["ops".into()], max_priority: Some(0) },
    ];
    o.channels = vec![
        HubChannel { name: "ops".into(), label: "Operations".into() },
        HubChannel { name: "fire".into(), label: "Fire".into() },
    ];
    o
}

#[derive(Default)]
struct Log {
    joined: Vec<(PeerId, String)>,
    left: Vec<PeerId>,
    media_in: usize,
    /// Emergencies the hub passed on: (peer, name, channel, member, raise).
    emergencies: Vec<(PeerId, String, String, Option<ParticipantId>, bool)>,
}

struct Hub {
    handle: HubHandle,
    cancel: CancellationToken,
    log: Arc<Mutex<Log>>,
}

impl Hub {
    async fn start(o: HubOptions) -> Hub {
        let (tx, rx) = mpsc::channel(INBOX);
        let cancel = CancellationToken::new();
        let handle = net::serve(o, tx, cancel.clone()).await.expect("hub starts");
        let log = Arc::new(Mutex::new(Log::default()));
        tokio::spawn(fake_router(rx, log.clone()));
        Hub { handle, cancel, log }
    }

    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(T, self.handle.stopped()).await.expect("hub stops");
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.handle.http_addr())
    }

    fn lefts(&self, peer: PeerId) -> usize {
        self.log.lock().unwrap().left.iter().filter(|&&p| p == peer).count()
    }
}

struct RouterPeer {
    name: String,
    to: PeerTx<ToPeer>,
    members: Vec<(ParticipantId, String, String)>, // id, key, channel
}

/// Grants a free floor, denies a busy one, forwards the holder's media to everyone else on the
/// channel, frees the floor of a peer that leaves.
async fn fake_router(mut rx: mpsc::Receiver<HubEvent>, log: Arc<Mutex<Log>>) {
    let mut peers: HashMap<PeerId, RouterPeer> = HashMap::new();
    let mut holders: HashMap<String, (PeerId, ParticipantId)> = HashMap::new();
    let mut next_id = 100u64;
    let broadcast =
        |peers: &HashMap<PeerId, RouterPeer>, channel: &str, msg: ToParticipant, holder_name: Option<String>| {
            for p in peers.values().filter(|p| p.members.iter().any(|m| m.2 == channel)) {
                let _ = p.to.send(ToPeer::Floor {
                    channel: channel.into(),
                    member: None,
                    msg,
                    holder_name: holder_name.clone(),
                });
            }
        };
    while let Some(event) = rx.recv().await {
        match event {
            HubEvent::Joined { peer, name, members, to_peer, reply } => {
                let ids: Vec<ParticipantId> = members
                    .iter()
                    .map(|_| {
                        next_id += 1;
                        ParticipantId(next_id)
                    })
                    .collect();
                // A busy channel: the new peer hears who talks (the hub folds it into welcome).
                for m in &members {
                    if let Some((hp, hid)) = holders.get(&m.channel) {
                        let name = peers[hp]
                            .members
                            .iter()
                            .find(|x| x.0 == *hid)
                            .map(|x| format!("{}@{}", x.1, peers[hp].name));
                        let _ = to_peer.send(ToPeer::Floor {
                            channel: m.channel.clone(),
                            member: None,
                            msg: ToParticipant::Taken { holder: *hid, priority: Priority(0) },
                            holder_name: name,
                        });
                    }
                }
                let list = members.iter().zip(&ids).map(|(m, id)| (*id, m.key.clone(), m.channel.clone())).collect();
                peers.insert(peer, RouterPeer { name: name.clone(), to: to_peer, members: list });
                log.lock().unwrap().joined.push((peer, name));
                let _ = reply.send(Ok(ids));
            }
            HubEvent::Floor { peer, member, msg } => {
                let Some(p) = peers.get(&peer) else { continue };
                let Some((_, key, channel)) = p.members.iter().find(|m| m.0 == member).cloned() else {
                    continue;
                };
                let name = format!("{key}@{}", p.name);
                match msg {
                    ToArbiter::Request { priority } => match holders.get(&channel) {
                        Some((_, h)) if *h != member => {
                            let _ = p.to.send(ToPeer::Floor {
                                channel,
                                member: Some(member),
                                msg: ToParticipant::Deny { cause: DenyCause::Busy { holder: *h } },
                                holder_name: None,
                            });
                        }
                        _ => {
                            holders.insert(channel.clone(), (peer, member));
                            let _ = p.to.send(ToPeer::Floor {
                                channel: channel.clone(),
                                member: Some(member),
                                msg: ToParticipant::Granted,
                                holder_name: None,
                            });
                            broadcast(&peers, &channel, ToParticipant::Taken { holder: member, priority }, Some(name));
                        }
                    },
                    ToArbiter::Release => {
                        if holders.get(&channel).is_some_and(|(_, h)| *h == member) {
                            holders.remove(&channel);
                            broadcast(&peers, &channel, ToParticipant::Idle, None);
                        }
                    }
                }
            }
            HubEvent::Media { peer, channel, packet } => {
                log.lock().unwrap().media_in += 1;
                if holders.get(&channel).is_some_and(|(p, _)| *p == peer) {
                    for (id, p) in &peers {
                        if *id != peer && p.members.iter().any(|m| m.2 == channel) {
                            let _ = p.to.send(ToPeer::Media { channel: channel.clone(), packet: packet.clone() });
                        }
                    }
                }
            }
            HubEvent::MediaSeen { .. } => {}
            HubEvent::Emergency { peer, name, channel, member, raise } => {
                log.lock().unwrap().emergencies.push((peer, name.clone(), channel.clone(), member, raise));
                // Told to every peer: each session passes it on only where its token allows.
                let notice = roipd::net::protocol::EmergencyNotice {
                    channel,
                    active: raise,
                    source: name,
                    kind: "console".into(),
                    by: None,
                };
                for p in peers.values() {
                    let _ = p.to.send(ToPeer::Emergency(notice.clone()));
                }
            }
            HubEvent::Left { peer } => {
                log.lock().unwrap().left.push(peer);
                peers.remove(&peer);
                let freed: Vec<String> =
                    holders.iter().filter(|(_, (p, _))| *p == peer).map(|(c, _)| c.clone()).collect();
                for c in freed {
                    holders.remove(&c);
                    broadcast(&peers, &c, ToParticipant::Idle, None);
                }
            }
        }
    }
}

fn member(key: &str, channel: &str) -> MemberRequest {
    MemberRequest { key: key.into(), channel: channel.into(), priority: Priority(0) }
}

struct Edge {
    handle: UplinkHandle,
    events: mpsc::Receiver<UplinkEvent>,
    cancel: CancellationToken,
}

impl Edge {
    fn start(url: &str, token: &str, name: &str, members: Vec<MemberRequest>) -> Edge {
        let mut o = UplinkOptions::new(url, token, name, members);
        o.backoff_min = Duration::from_millis(100);
        o.backoff_max = Duration::from_millis(400);
        let (tx, events) = mpsc::channel(1024);
        let cancel = CancellationToken::new();
        let handle = net::start_uplink(o, tx, cancel.clone());
        Edge { handle, events, cancel }
    }

    /// The next event that `pick` accepts, skipping others (media, unrelated floor messages).
    async fn wait<R>(&mut self, what: &str, mut pick: impl FnMut(&UplinkEvent) -> Option<R>) -> R {
        let deadline = Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = tokio::time::timeout(left, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .expect("uplink alive");
            if let Some(r) = pick(&e) {
                return r;
            }
        }
    }

    async fn up(&mut self) -> Vec<(MemberRequest, ParticipantId)> {
        self.wait("Up", |e| match e {
            UplinkEvent::Up { members } => Some(members.clone()),
            UplinkEvent::Down { reason } => panic!("down instead of up: {reason}"),
            _ => None,
        })
        .await
    }

    async fn floor(
        &mut self,
        want: impl Fn(&ToParticipant) -> bool,
    ) -> (Option<ParticipantId>, ToParticipant, Option<String>) {
        self.wait("a floor message", |e| match e {
            UplinkEvent::Floor { member, msg, holder_name, .. } if want(msg) => {
                Some((*member, *msg, holder_name.clone()))
            }
            _ => None,
        })
        .await
    }

    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(T, self.handle.stopped()).await.expect("uplink stops");
    }
}

fn localhost() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

async fn hub() -> Hub {
    Hub::start(options(localhost(), Some(0))).await
}

// ---------------------------------------------------------------------------------------------
// Raw WebSocket peer (what a browser console does on the signaling side)

type Raw = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn raw(hub: &Hub) -> Raw {
    tokio_tungstenite::connect_async(hub.ws_url()).await.expect("WebSocket connects").0
}

async fn send(ws: &mut Raw, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next text message as JSON; panics on close or timeout.
async fn recv(ws: &mut Raw) -> Value {
    loop {
        match tokio::time::timeout(T, ws.next()).await.expect("a message in time") {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(Message::Close(f))) => panic!("closed: {f:?}"),
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

/// The close code, skipping other messages.
async fn closed(ws: &mut Raw) -> u16 {
    loop {
        match tokio::time::timeout(T, ws.next()).await.expect("closed in time") {
            Some(Ok(Message::Close(Some(f)))) => return f.code.into(),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return 1005,
            Some(Ok(_)) => continue,
        }
    }
}

async fn hello(ws: &mut Raw, token: &str, members: Value) -> Value {
    send(ws, json!({"type":"hello","token":token,"name":"console-test","members":members})).await;
    recv(ws).await
}

// ---------------------------------------------------------------------------------------------
// Opus tone

const TONE_HZ: f32 = 1000.0;

fn tone_packets(n: usize) -> Vec<MediaPacket> {
    let mut enc = Encoder::new(EncoderConfig::default()).unwrap();
    let frame = enc.frame_samples();
    let mut phase = 0.0f32;
    let mut out = vec![0u8; 4000];
    (0..n)
        .map(|i| {
            let pcm: Vec<f32> = (0..frame)
                .map(|_| {
                    phase += TONE_HZ / 48_000.0;
                    0.5 * (2.0 * std::f32::consts::PI * phase).sin()
                })
                .collect();
            let len = enc.encode(&pcm, &mut out).unwrap();
            MediaPacket {
                seq: 40_000u16.wrapping_add(i as u16),
                timestamp: 7_000_000u32.wrapping_add((i * frame) as u32),
                marker: i == 0,
                payload: out[..len].to_vec(),
            }
        })
        .collect()
}

/// Frequency of the decoded signal, from its positive-going zero crossings.
fn decoded_frequency(packets: &[MediaPacket]) -> (f32, f32) {
    let mut dec = Decoder::new().unwrap();
    let mut pcm = Vec::new();
    let mut buf = vec![0.0f32; MAX_FRAME_SAMPLES];
    for p in packets {
        let n = dec.decode(&p.payload, &mut buf).unwrap();
        pcm.extend_from_slice(&buf[..n]);
    }
    let tail = &pcm[pcm.len().min(9_600)..]; // past the codec's warm-up
    let crossings = tail.windows(2).filter(|w| w[0] <= 0.0 && w[1] > 0.0).count();
    let rms = (tail.iter().map(|s| s * s).sum::<f32>() / tail.len().max(1) as f32).sqrt();
    (crossings as f32 * 48_000.0 / tail.len().max(1) as f32, rms)
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edges_talk_through_the_hub() {
    let hub = hub().await;
    let t0 = Instant::now();
    let mut a = Edge::start(&hub.ws_url(), ALL, "edge-a", vec![member("radio1", "ops"), member("radio1", "fire")]);
    let mut b =
        Edge::start(&format!("http://{}", hub.handle.http_addr()), ALL, "edge-b", vec![member("radio2", "ops")]);
    let a_members = a.up().await;
    let a_up = t0.elapsed();
    let b_members = b.up().await;
    let b_up = t0.elapsed();
    println!("start → Up (hello, offer/answer, ICE, DTLS on loopback): A {a_up:?}, B {b_up:?}");
    assert_eq!(a_members.len(), 2);
    assert_eq!((a_members[0].0.channel.as_str(), a_members[1].0.channel.as_str()), ("ops", "fire"), "request order");
    let a_ops = a_members[0].1;
    let b_ops = b_members[0].1;
    assert!(a.handle.is_up() && b.handle.is_up());

    // Floor JSON both ways: A's request → granted to A, taken (with A's name) to B.
    assert!(a.handle.floor(a_ops, ToArbiter::Request { priority: Priority(0) }));
    let (m, _, _) = a.floor(|m| *m == ToParticipant::Granted).await;
    assert_eq!(m, Some(a_ops));
    let (m, msg, name) = b.floor(|m| matches!(m, ToParticipant::Taken { .. })).await;
    assert_eq!((m, msg), (None, ToParticipant::Taken { holder: a_ops, priority: Priority(0) }));
    assert_eq!(name.as_deref(), Some("radio1@edge-a"));
    // B asks too: busy, naming A.
    b.handle.floor(b_ops, ToArbiter::Request { priority: Priority(0) });
    let (_, msg, _) = b.floor(|m| matches!(m, ToParticipant::Deny { .. })).await;
    assert_eq!(msg, ToParticipant::Deny { cause: DenyCause::Busy { holder: a_ops } });

    // 50 Opus packets of a tone, paced like a radio, from A to B.
    let sent = tone_packets(50);
    let sender = {
        let (handle, sent) = (a.handle.clone(), sent.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let mut times = Vec::new();
            for p in sent {
                tick.tick().await;
                times.push(Instant::now());
                assert!(handle.media("ops", p));
            }
            times
        })
    };
    let mut got: Vec<MediaPacket> = Vec::new();
    let mut arrived = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while got.len() < sent.len() && Instant::now() < deadline {
        if let Ok(Some(UplinkEvent::Media { channel, packet })) =
            tokio::time::timeout(Duration::from_millis(200), b.events.recv()).await
        {
            assert_eq!(channel, "ops");
            arrived.push(Instant::now());
            got.push(packet);
        }
    }
    let sent_at = sender.await.unwrap();
    let mut delays: Vec<Duration> =
        arrived.iter().zip(&sent_at).map(|(r, s)| r.saturating_duration_since(*s)).collect();
    delays.sort();
    println!(
        "B received {}/{} packets; A→hub→B per packet: median {:?}, max {:?}",
        got.len(),
        sent.len(),
        delays.get(delays.len() / 2),
        delays.last()
    );
    assert_eq!(got.len(), sent.len(), "no loss on loopback");
    assert!(got[0].marker, "talk-spurt start marked");
    for w in got.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "one continuous stream");
        assert_eq!(w[1].timestamp, w[0].timestamp.wrapping_add(960));
    }
    assert!(got.iter().zip(&sent).all(|(g, s)| g.payload == s.payload), "payloads untouched");
    let (hz, rms) = decoded_frequency(&got);
    println!("decoded tone {hz:.0} Hz, RMS {rms:.2}");
    assert!((hz - TONE_HZ).abs() < 30.0 && rms > 0.1, "{hz} Hz, RMS {rms}");
    assert!(hub.log.lock().unwrap().media_in >= 50);

    // Release → idle for B.
    a.handle.floor(a_ops, ToArbiter::Release);
    let (m, msg, _) = b.floor(|m| *m == ToParticipant::Idle).await;
    assert_eq!((m, msg), (None, ToParticipant::Idle));

    // An edge that goes away leaves exactly once.
    let peers: Vec<PeerId> = hub.log.lock().unwrap().joined.iter().map(|(p, _)| *p).collect();
    a.stop().await;
    b.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for p in peers {
        assert_eq!(hub.lefts(p), 1, "peer {p}");
    }
    hub.stop().await;
}

#[tokio::test]
async fn wrong_token_is_refused_and_closed_4001() {
    let hub = hub().await;
    let mut ws = raw(&hub).await;
    let reply = hello(&mut ws, "guess", json!([{"key":"console","channel":"ops"}])).await;
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["code"], "unauthorized");
    assert_eq!(closed(&mut ws).await, 4001);
    // A missing token is a malformed hello: 4000.
    let mut ws = raw(&hub).await;
    send(&mut ws, json!({"type":"hello","name":"x","members":[]})).await;
    assert_eq!(recv(&mut ws).await["code"], "bad_request");
    assert_eq!(closed(&mut ws).await, 4000);
    // The uplink reports it as its reason for being down.
    let mut e = Edge::start(&hub.ws_url(), "guess", "edge", vec![member("radio1", "ops")]);
    let reason =
        e.wait("Down", |ev| if let UplinkEvent::Down { reason } = ev { Some(reason.clone()) } else { None }).await;
    assert!(reason.contains("unauthorized"), "{reason}");
    assert!(hub.log.lock().unwrap().joined.is_empty(), "the router never heard of them");
    e.stop().await;
    hub.stop().await;
}

#[tokio::test]
async fn a_token_limited_to_ops_cannot_join_fire() {
    let hub = hub().await;
    let mut ws = raw(&hub).await;
    let reply =
        hello(&mut ws, OPS_ONLY, json!([{"key":"console","channel":"ops"},{"key":"console","channel":"fire"}])).await;
    assert_eq!(reply["code"], "forbidden");
    assert!(reply["message"].as_str().unwrap().contains("fire"));
    assert_eq!(closed(&mut ws).await, 4003);

    // On ops alone it is welcome, sees only ops, and its priority is capped.
    let mut ws = raw(&hub).await;
    let w = hello(&mut ws, OPS_ONLY, json!([{"key":"console","channel":"ops","priority":200}])).await;
    assert_eq!(w["type"], "welcome", "{w}");
    assert_eq!(w["channels"], json!([{"name":"ops","label":"Operations","holder":null}]));
    assert_eq!(w["members"][0]["channel"], "ops");
    // A console's first hello with no members learns the channels.
    let mut ws2 = raw(&hub).await;
    let w = hello(&mut ws2, ALL, json!([])).await;
    assert_eq!(w["members"], json!([]));
    assert_eq!(w["channels"].as_array().unwrap().len(), 2);
    hub.stop().await;
}

/// Issue 18: only an authenticated peer may raise or acknowledge an emergency, only on a channel
/// its token allows, naming only its own member; a notice reaches only peers whose token allows
/// the channel.
#[tokio::test]
async fn emergencies_need_a_session_and_the_channel_in_the_token_scope() {
    let hub = hub().await;
    // Before hello: an error, the socket closes, nothing reaches the router.
    let mut ws = raw(&hub).await;
    send(&mut ws, json!({"type":"emergency","channel":"ops","action":"raise"})).await;
    assert_eq!(recv(&mut ws).await["code"], "bad_request");
    assert_eq!(closed(&mut ws).await, 4000);
    // A wrong token: refused, closed, nothing either.
    let mut ws = raw(&hub).await;
    assert_eq!(hello(&mut ws, "wrong", json!([])).await["code"], "unauthorized");
    assert_eq!(closed(&mut ws).await, 4001);
    assert!(hub.log.lock().unwrap().emergencies.is_empty());

    let mut ops = raw(&hub).await;
    let w = hello(&mut ops, OPS_ONLY, json!([{"key":"console","channel":"ops"}])).await;
    let ops_id = w["members"][0]["id"].as_u64().unwrap();
    let mut all = raw(&hub).await;
    hello(&mut all, ALL, json!([{"key":"console","channel":"fire"}])).await;
    // Out of scope: forbidden, the session stays up, nothing passed on.
    send(&mut ops, json!({"type":"emergency","channel":"fire","action":"raise"})).await;
    let e = recv(&mut ops).await;
    assert_eq!(e["code"], "forbidden", "{e}");
    // Someone else's member: refused.
    send(&mut ops, json!({"type":"emergency","channel":"ops","action":"raise","id": ops_id + 1000})).await;
    assert_eq!(recv(&mut ops).await["code"], "bad_request");
    assert!(hub.log.lock().unwrap().emergencies.is_empty());
    // In scope, with its own member as the caller.
    send(&mut ops, json!({"type":"emergency","channel":"ops","action":"raise","id": ops_id})).await;
    let n = recv(&mut ops).await;
    assert_eq!(
        (n["type"].as_str(), n["channel"].as_str(), n["active"].as_bool()),
        (Some("emergency"), Some("ops"), Some(true)),
        "{n}"
    );
    {
        let log = hub.log.lock().unwrap();
        let (_, name, channel, member, raise) = &log.emergencies[0];
        assert_eq!((channel.as_str(), *member, *raise), ("ops", Some(ParticipantId(ops_id)), true));
        assert!(name.starts_with("console@"), "{name}");
    }
    // The fire notice reaches the peer allowed on fire, never the ops-only one.
    send(&mut all, json!({"type":"emergency","channel":"fire","action":"ack"})).await;
    loop {
        let n = recv(&mut all).await;
        if n["type"] == "emergency" && n["channel"] == "fire" {
            assert_eq!(n["active"], false);
            break;
        }
    }
    send(&mut ops, json!({"type":"ping"})).await;
    loop {
        let n = recv(&mut ops).await;
        assert_ne!(n["channel"], "fire", "an ops-only console was told about fire: {n}");
        if n["type"] == "pong" {
            break;
        }
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_get_errors_and_spare_everyone_else() {
    let hub = hub().await;
    let mut b = Edge::start(&hub.ws_url(), ALL, "edge-b", vec![member("radio2", "ops")]);
    let b_ops = b.up().await[0].1;

    let mut ws = raw(&hub).await;
    let w = hello(&mut ws, ALL, json!([{"key":"console","channel":"ops"}])).await;
    let my_id = w["members"][0]["id"].as_u64().unwrap();
    for bad in [
        "{nope".to_owned(),
        "[]".to_owned(),
        json!({"type":"explode"}).to_string(),
        json!({"type":"floor","id":999_999,"action":"request"}).to_string(),
        json!({"type":"floor","id":my_id,"action":"shout"}).to_string(),
        json!({"type":"hello","token":ALL,"name":"again","members":[]}).to_string(),
        json!({"type":"offer","sdp":"v=0\r\n","mids":{"0":"fire"}}).to_string(),
        json!({"type":"offer","sdp":"v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n","mids":{"0":"ops"}})
            .to_string(),
    ] {
        ws.send(Message::Text(bad.clone().into())).await.unwrap();
        let e = recv(&mut ws).await;
        assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some("bad_request")), "{bad} → {e}");
    }
    ws.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(recv(&mut ws).await["code"], "bad_request");
    // Still joined and answering.
    send(&mut ws, json!({"type":"ping"})).await;
    assert_eq!(recv(&mut ws).await, json!({"type":"pong"}));
    send(&mut ws, json!({"type":"floor","id":my_id,"action":"request"})).await;
    let granted = recv(&mut ws).await;
    assert_eq!(granted, json!({"type":"floor","channel":"ops","id":my_id,"event":"granted"}));
    // The other session saw none of it, only the floor taken by the console.
    let (_, msg, name) = b.floor(|m| matches!(m, ToParticipant::Taken { .. })).await;
    assert_eq!(msg, ToParticipant::Taken { holder: ParticipantId(my_id), priority: Priority(0) });
    assert_eq!(name.as_deref(), Some("console@console-test"));
    assert!(b.handle.is_up());
    send(&mut ws, json!({"type":"floor","id":my_id,"action":"release"})).await;
    b.floor(|m| *m == ToParticipant::Idle).await;
    b.handle.floor(b_ops, ToArbiter::Request { priority: Priority(0) });
    b.floor(|m| *m == ToParticipant::Granted).await;
    b.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_reconnect_after_the_hub_restarts() {
    let first = hub().await;
    let (http, media) = (first.handle.http_addr(), first.handle.media_addr());
    let url = first.ws_url();
    let mut a = Edge::start(&url, ALL, "edge-a", vec![member("radio1", "ops")]);
    let mut b = Edge::start(&url, ALL, "edge-b", vec![member("radio2", "ops")]);
    let old_a = a.up().await[0].1;
    b.up().await;

    let killed = Instant::now();
    first.stop().await;
    for e in [&mut a, &mut b] {
        let reason =
            e.wait("Down", |ev| if let UplinkEvent::Down { reason } = ev { Some(reason.clone()) } else { None }).await;
        println!("down after {:?}: {reason}", killed.elapsed());
        assert!(!e.handle.is_up());
        assert!(!e.handle.media("ops", tone_packets(1).remove(0)), "media is dropped while down");
    }

    let second = Hub::start(options(http, Some(media.port()))).await;
    let restarted = Instant::now();
    let new_a = a.up().await[0].1;
    let b_ops = b.up().await[0].1;
    println!("both up again {:?} after the restart", restarted.elapsed());
    let _ = old_a; // ids come from the (new) router: any id is fine

    // And media flows again.
    a.handle.floor(new_a, ToArbiter::Request { priority: Priority(0) });
    a.floor(|m| *m == ToParticipant::Granted).await;
    b.floor(|m| matches!(m, ToParticipant::Taken { .. })).await;
    for p in tone_packets(10) {
        a.handle.media("ops", p);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let n = b.wait("media", |e| matches!(e, UplinkEvent::Media { .. }).then_some(())).await;
    let _ = (n, b_ops);
    a.stop().await;
    b.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn silent_sessions_time_out_and_leave_once() {
    let mut o = options(localhost(), Some(0));
    o.idle_timeout = Duration::from_millis(300);
    let hub = Hub::start(o).await;
    let mut ws = raw(&hub).await;
    let w = hello(&mut ws, ALL, json!([{"key":"console","channel":"ops"}])).await;
    let peer = w["peer"].as_u64().unwrap();
    let t = Instant::now();
    let e = recv(&mut ws).await;
    assert_eq!(e["code"], "timeout");
    assert_eq!(closed(&mut ws).await, 4008);
    assert!(t.elapsed() < Duration::from_secs(2));

    // Pings keep another one alive past the timeout; closing it leaves once.
    let mut ws = raw(&hub).await;
    let peer2 = hello(&mut ws, ALL, json!([{"key":"console","channel":"ops"}])).await["peer"].as_u64().unwrap();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        send(&mut ws, json!({"type":"ping"})).await;
        assert_eq!(recv(&mut ws).await["type"], "pong");
    }
    ws.close(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hub.lefts(peer), 1);
    assert_eq!(hub.lefts(peer2), 1);
    // No hello at all: closed without troubling the router.
    let mut o = options(localhost(), Some(0));
    o.hello_timeout = Duration::from_millis(200);
    let hub2 = Hub::start(o).await;
    let mut ws = raw(&hub2).await;
    assert_eq!(recv(&mut ws).await["code"], "timeout");
    assert_eq!(closed(&mut ws).await, 4008);
    assert!(hub2.log.lock().unwrap().joined.is_empty());
    hub.stop().await;
    hub2.stop().await;
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).unwrap_or("0").parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test]
async fn health_and_console_assets() {
    let t = Instant::now();
    let hub = hub().await;
    println!("serve() returned (listener and media socket bound, DTLS certificate made) in {:?}", t.elapsed());
    let addr = hub.handle.http_addr();
    let (status, _, body) = http_get(addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    for (path, ty) in [
        ("/", "text/html"),
        ("/console/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/console/app.js", "text/javascript"),
        ("/style.css", "text/css"),
    ] {
        let (status, head, body) = http_get(addr, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(head.contains(&format!("content-type: {ty}")), "{path}: {head}");
        assert!(!body.is_empty());
    }
    assert_eq!(http_get(addr, "/nope").await.0, 404);
    // Plain GET on /ws is not an upgrade.
    assert_ne!(http_get(addr, "/ws").await.0, 200);
    hub.stop().await;
}

/// An offer shaped like Chrome's (many codecs, RED, extmaps, BUNDLE, msid, one host candidate):
/// the hub answers Opus only, ICE-lite, with its candidate and end-of-candidates.
#[tokio::test]
async fn browser_style_offer_is_answered() {
    let hub = hub().await;
    let mut ws = raw(&hub).await;
    let w = hello(&mut ws, ALL, json!([{"key":"console","channel":"ops"},{"key":"console","channel":"fire"}])).await;
    assert_eq!(w["type"], "welcome");
    send(&mut ws, json!({"type":"offer","sdp":CHROME_OFFER,"mids":{"0":"ops","1":"fire"}})).await;
    let answer = recv(&mut ws).await;
    assert_eq!(answer["type"], "answer", "{answer}");
    let sdp = answer["sdp"].as_str().unwrap();
    println!("{sdp}");
    let media = hub.handle.media_addr();
    assert!(sdp.contains("a=ice-lite"));
    assert!(sdp.contains(&format!("127.0.0.1 {} typ host", media.port())), "host candidate on the media port");
    assert_eq!(sdp.matches("a=end-of-candidates").count(), 2);
    assert!(sdp.contains("a=rtpmap:111 opus/48000/2"));
    assert!(!sdp.contains("red/48000") && !sdp.contains("PCMU") && !sdp.contains("G722"), "Opus only");
    assert!(sdp.contains("a=mid:0") && sdp.contains("a=mid:1"));
    assert_eq!(sdp.matches("a=sendrecv").count(), 2);
    assert!(sdp.contains("a=setup:active") || sdp.contains("a=setup:passive"));
    // Renegotiation from the same peer connection is answered too.
    send(&mut ws, json!({"type":"offer","sdp":CHROME_OFFER,"mids":{"0":"ops","1":"fire"}})).await;
    assert_eq!(recv(&mut ws).await["type"], "answer");
    // Garbage SDP: an error, the session stays.
    send(&mut ws, json!({"type":"offer","sdp":"v=0\r\nm=audio\r\na=mid:0\r\n","mids":{"0":"ops"}})).await;
    assert_eq!(recv(&mut ws).await["code"], "bad_request");
    send(&mut ws, json!({"type":"ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
    hub.stop().await;
}

const CHROME_OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
a=extmap-allow-mixed\r\n\
a=msid-semantic: WMS\r\n\
m=audio 50000 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n\
c=IN IP4 127.0.0.1\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=candidate:1467250027 1 udp 2122260223 127.0.0.1 50000 typ host generation 0 network-id 1\r\n\
a=ice-ufrag:Kq3v\r\n\
a=ice-pwd:d1OeSZfkbqdMg7WMaIG2Gbkj\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
a=sendrecv\r\n\
a=msid:- 6a4c9c1f-3b8e-4d8e-9d1e-2a9b1c0d0e01\r\n\
a=rtcp-mux\r\n\
a=rtcp-rsize\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=rtcp-fb:111 transport-cc\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:63 red/48000/2\r\n\
a=fmtp:63 111/111\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:13 CN/8000\r\n\
a=rtpmap:110 telephone-event/48000\r\n\
a=rtpmap:126 telephone-event/8000\r\n\
a=ssrc:3170586210 cname:8b1Kq3vFoo\r\n\
a=ssrc:3170586210 msid:- 6a4c9c1f-3b8e-4d8e-9d1e-2a9b1c0d0e01\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Kq3v\r\n\
a=ice-pwd:d1OeSZfkbqdMg7WMaIG2Gbkj\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=setup:actpass\r\n\
a=mid:1\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
a=sendrecv\r\n\
a=msid:- 0b7e4d2a-1c3f-4e5a-8b6c-7d8e9f0a1b02\r\n\
a=rtcp-mux\r\n\
a=rtcp-rsize\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:63 red/48000/2\r\n\
a=fmtp:63 111/111\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:13 CN/8000\r\n\
a=rtpmap:110 telephone-event/48000\r\n\
a=rtpmap:126 telephone-event/8000\r\n\
a=ssrc:1299346111 cname:8b1Kq3vFoo\r\n\
a=ssrc:1299346111 msid:- 0b7e4d2a-1c3f-4e5a-8b6c-7d8e9f0a1b02\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_hub_closes_every_session_at_once() {
    // Every session's own timeout a minute away: a stop that waited for any of them (rather
    // than closing them) would take that long, however loaded the machine.
    let own_timeout = Duration::from_secs(60);
    let mut o = options(localhost(), Some(0));
    (o.hello_timeout, o.join_timeout, o.idle_timeout) = (own_timeout, own_timeout, own_timeout);
    let hub = Hub::start(o).await;
    let mut quiet = raw(&hub).await; // connected, no hello yet
    let mut joined = raw(&hub).await;
    let peer = hello(&mut joined, ALL, json!([{"key":"console","channel":"ops"}])).await["peer"].as_u64().unwrap();
    let mut edge = Edge::start(&hub.ws_url(), ALL, "edge", vec![member("radio1", "fire")]);
    edge.up().await;
    let log = hub.log.clone();
    let t = Instant::now();
    hub.stop().await;
    println!("hub stopped in {:?}", t.elapsed());
    assert!(t.elapsed() < own_timeout / 3, "the stop waited for the sessions' own timeouts: {:?}", t.elapsed());
    assert_eq!(closed(&mut quiet).await, 1001);
    assert_eq!(closed(&mut joined).await, 1001);
    edge.wait("Down", |e| matches!(e, UplinkEvent::Down { .. }).then_some(())).await;
    assert_eq!(log.lock().unwrap().left.iter().filter(|&&p| p == peer).count(), 1);
    edge.stop().await;
}

/// A peer whose media goes silent after connecting (its str0m client is gone, its WebSocket is
/// not): the ICE-lite hub notices when connectivity checks stop (15 s), says `media_failed`,
/// closes the socket with 4010 and reports `Left` once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_ice_dies_leaves_once() {
    use str0m::change::SdpAnswer;
    use str0m::media::{Direction, MediaKind};
    use str0m::net::{Protocol, Receive};
    use str0m::{Candidate, Event, Input, Output, Rtc};

    let hub = hub().await;
    let mut ws = raw(&hub).await;
    let peer = hello(&mut ws, ALL, json!([{"key":"console","channel":"ops"}])).await["peer"].as_u64().unwrap();

    let sock = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let local = sock.local_addr().unwrap();
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    let mut change = rtc.sdp_api();
    let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, pending) = change.apply().unwrap();
    send(&mut ws, json!({"type":"offer","sdp":offer.to_sdp_string(),"mids":{mid.to_string():"ops"}})).await;
    let answer = recv(&mut ws).await;
    let answer = SdpAnswer::from_sdp_string(answer["sdp"].as_str().expect("an answer")).unwrap();
    rtc.sdp_api().accept_answer(pending, answer).unwrap();
    let mut buf = vec![0u8; 2000];
    let connected_by = Instant::now() + T;
    'connect: loop {
        assert!(Instant::now() < connected_by, "client never connected");
        let deadline = loop {
            match rtc.poll_output().unwrap() {
                Output::Transmit(t) => {
                    sock.send_to(&t.contents, t.destination).await.unwrap();
                }
                Output::Event(Event::Connected) => break 'connect,
                Output::Event(_) => {}
                Output::Timeout(t) => break t,
            }
        };
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let (n, source) = r.unwrap();
                let input = Receive::new(Protocol::Udp, source, local, &buf[..n]).unwrap();
                rtc.handle_input(Input::Receive(Instant::now(), input)).unwrap();
            }
            _ = tokio::time::sleep_until(deadline.into()) => rtc.handle_input(Input::Timeout(Instant::now())).unwrap(),
        }
    }
    drop(rtc); // media goes silent; the signaling socket stays open (and keeps pinging)
    let silent = Instant::now();
    let error = loop {
        send(&mut ws, json!({"type":"ping"})).await;
        let m = recv(&mut ws).await;
        if m["type"] == "error" {
            break m;
        }
        assert!(silent.elapsed() < Duration::from_secs(25), "the hub never noticed");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    println!("media_failed after {:?}: {error}", silent.elapsed());
    assert_eq!(error["code"], "media_failed");
    assert_eq!(closed(&mut ws).await, 4010);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hub.lefts(peer), 1);
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Hostile and careless clients. Loopback is a whole /8: attackers and real clients get their
// own 127.x source addresses, as they would have their own addresses on a network.

/// The test process holds both ends of every connection: give it the hard file limit.
fn raise_test_nofile() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain struct in and out.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

async fn tcp_from(source: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind((Ipv4Addr::from(source), 0).into())?;
    s.connect(to).await
}

async fn raw_from(addr: SocketAddr, source: [u8; 4]) -> Result<Raw, String> {
    let tcp = tcp_from(source, addr).await.map_err(|e| format!("connect: {e}"))?;
    let url = format!("ws://{addr}/ws");
    let r = tokio::time::timeout(T, tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp))).await;
    r.map_err(|_| "upgrade timed out".to_owned())?.map(|r| r.0).map_err(|e| e.to_string())
}

async fn http_get_from(source: [u8; 4], addr: SocketAddr, path: &str) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tcp_from(source, addr).await.map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut buf))
        .await
        .map_err(|_| "no answer".to_owned())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("not HTTP: {text:?}"))
}

/// 300 sockets from one address that upgrade and never say hello, reconnecting as soon as
/// they are dropped (what locked every console out: each took a session slot for 10 s), and
/// meanwhile nine real clients from other addresses join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_websockets_do_not_lock_real_clients_out() {
    raise_test_nofile();
    let hub = hub().await;
    let addr = hub.handle.http_addr();
    let stop = CancellationToken::new();
    let upgraded = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut junk = Vec::new();
    for _ in 0..300 {
        let (stop, upgraded) = (stop.clone(), upgraded.clone());
        junk.push(tokio::spawn(async move {
            // Bounded: at most 200 rounds each, or until the test says stop.
            for _ in 0..200 {
                if stop.is_cancelled() {
                    return;
                }
                match raw_from(addr, [127, 0, 0, 1]).await {
                    Ok(mut ws) => {
                        upgraded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::select! {
                            _ = async { while let Some(Ok(_)) = ws.next().await {} } => {}
                            _ = stop.cancelled() => return,
                        }
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut joined = Vec::new();
    for i in 0..9u8 {
        let mut ws = raw_from(addr, [127, 0, 1, 10 + i]).await.unwrap_or_else(|e| panic!("client {i} refused: {e}"));
        let w = hello(&mut ws, ALL, json!([{"key":"console","channel":"ops"}])).await;
        assert_eq!(w["type"], "welcome", "client {i}: {w}");
        joined.push(ws);
    }
    // And /healthz still answers.
    assert_eq!(http_get_from([127, 0, 1, 99], addr, "/healthz").await, Ok(200));
    stop.cancel();
    for j in junk {
        j.await.unwrap();
    }
    println!("junk upgrades that got through: {}", upgraded.load(std::sync::atomic::Ordering::Relaxed));
    hub.stop().await;
}

/// Slowloris (headers a line at a time) and half-open connections (connect, send nothing)
/// are closed after the header timeout, or at once beyond the per-address limit, and the
/// hub keeps answering everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_half_open_http_connections_are_cut() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raise_test_nofile();
    let mut o = options(localhost(), Some(0));
    o.header_timeout = Duration::from_millis(500);
    let hub = Hub::start(o).await;
    let addr = hub.handle.http_addr();
    let t = Instant::now();
    let mut attackers = Vec::new();
    for i in 0..500u32 {
        let slow = i % 2 == 0;
        let source = if slow { [127, 0, 2, 1] } else { [127, 0, 2, 2] };
        // Connected one by one: a burst of SYNs can overflow the kernel's accept queue, and a
        // connection the kernel dropped that way looks open forever to a client that sends nothing.
        let Ok(s) = tcp_from(source, addr).await else {
            continue;
        };
        attackers.push(tokio::spawn(async move {
            let (mut r, mut w) = s.into_split();
            let writer = tokio::spawn(async move {
                if !slow {
                    return std::future::pending().await;
                }
                let _ = w.write_all(b"GET /healthz HTTP/1.1\r\n").await;
                for n in 0.. {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if w.write_all(format!("X-{n}: y\r\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
            let mut buf = [0u8; 512];
            let start = Instant::now();
            let cut = tokio::time::timeout(Duration::from_secs(15), async {
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            writer.abort();
            cut.map(|()| start.elapsed()).map_err(|_| format!("still open after 15 s (slow: {slow})"))
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..5u8 {
        assert_eq!(http_get_from([127, 0, 3, 1 + i], addr, "/healthz").await, Ok(200), "during the attack");
    }
    let mut longest = Duration::ZERO;
    for a in attackers {
        longest = longest.max(a.await.unwrap().expect("the hub cuts every slow or silent connection"));
    }
    println!("500 slow/half-open connections all cut within {longest:?} (test ran {:?})", t.elapsed());
    assert_eq!(http_get_from([127, 0, 2, 1], addr, "/healthz").await, Ok(200), "the attacker's address is not banned");
    hub.stop().await;
}

/// No internals in errors, weak or malformed DTLS fingerprints refused.
#[tokio::test]
async fn offers_get_generic_errors_and_need_a_strong_fingerprint() {
    let hub = hub().await;
    let mut ws = raw(&hub).await;
    hello(&mut ws, ALL, json!([{"key":"console","channel":"ops"},{"key":"console","channel":"fire"}])).await;
    let strong = "a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08";
    // Passes the hub's own checks (audio m-lines with the mids, a fingerprint), fails str0m's
    // parser (which used to answer with a pointer: `Parse error at PointerOffset(0x7f..)`).
    let garbage =
        format!("v=0\r\n{strong}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=audio x\r\na=mid:1\r\n\u{1}");
    let md5 = "a=fingerprint:md5 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35";
    let short = "a=fingerprint:sha-256 7B:8B:F0:65";
    let nonhex = "a=fingerprint:sha-256 ZZ:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08";
    let offers = [
        garbage,
        CHROME_OFFER.replace(strong, md5),
        CHROME_OFFER.replace(strong, short),
        CHROME_OFFER.replace(strong, nonhex),
        CHROME_OFFER.replace(strong, "a=fingerprint:sha-256"),
        CHROME_OFFER.replace(&format!("{strong}\r\n"), ""),
    ];
    for (i, sdp) in offers.iter().enumerate() {
        send(&mut ws, json!({"type":"offer","sdp":sdp,"mids":{"0":"ops","1":"fire"}})).await;
        let e = recv(&mut ws).await;
        println!("offer {i}: {e}");
        assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some("bad_request")), "offer {i}: {e}");
        let m = e["message"].as_str().unwrap();
        assert!(!m.contains("0x") && !m.contains("Pointer") && !m.contains("Offset"), "offer {i} leaks: {m}");
    }
    // The strong one is still answered.
    send(&mut ws, json!({"type":"offer","sdp":CHROME_OFFER,"mids":{"0":"ops","1":"fire"}})).await;
    assert_eq!(recv(&mut ws).await["type"], "answer");
    hub.stop().await;
}

/// A client's close frame is answered (a clean close, not 1006), before and after hello.
#[tokio::test]
async fn the_hub_answers_a_close_frame() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let hub = hub().await;
    for joined in [false, true] {
        let mut ws = raw(&hub).await;
        if joined {
            hello(&mut ws, ALL, json!([{"key":"console","channel":"ops"}])).await;
        }
        ws.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() }))).await.unwrap();
        let reply = tokio::time::timeout(T, ws.next()).await.expect("an answer in time");
        match reply {
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(f.code, CloseCode::Normal, "joined {joined}")
            }
            other => panic!("joined {joined}: no close frame back: {other:?}"),
        }
    }
    hub.stop().await;
}

/// A frame over the limit: close code 1009 (message too big), before and after hello.
#[tokio::test]
async fn oversize_frames_are_closed_with_1009() {
    let hub = hub().await;
    for joined in [false, true] {
        let mut ws = raw(&hub).await;
        if joined {
            hello(&mut ws, ALL, json!([{"key":"console","channel":"ops"}])).await;
        }
        let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(70 * 1024));
        let _ = ws.send(Message::Text(big.into())).await;
        assert_eq!(closed(&mut ws).await, 1009, "joined {joined}");
    }
    hub.stop().await;
}

/// A console that stops reading while the roster churns: the hub queues at most
/// `Limits::PEER.reliable` messages for it, then drops the queue and the peer (its members
/// leave), instead of growing with everything the peer does not read (issue 14 item 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_that_stops_reading_is_dropped_and_its_queue_stays_bounded() {
    use roipd::net::peer_queue::{End, Limits};
    use roipd::net::protocol::RosterDelta;
    use roipd::net::RosterEntry;

    let (events_tx, mut events) = mpsc::channel(INBOX);
    let cancel = CancellationToken::new();
    let handle = net::serve(options(localhost(), Some(0)), events_tx, cancel.clone()).await.expect("hub starts");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", handle.http_addr())).await.unwrap();
    send(&mut ws, json!({"type":"hello","token":ALL,"name":"stalled","members":[{"key":"c","channel":"ops"}]})).await;
    let (peer, to_peer) = match tokio::time::timeout(T, events.recv()).await.unwrap().unwrap() {
        HubEvent::Joined { peer, to_peer, reply, .. } => {
            reply.send(Ok(vec![ParticipantId(1)])).unwrap();
            (peer, to_peer)
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(recv(&mut ws).await["type"], "welcome");
    // From here on the console reads nothing. Joins and leaves of 60 consoles each, over and
    // over, as the router would send them (~4 KB each once serialized).
    let entries: Vec<RosterEntry> =
        (0..60).map(|i| RosterEntry { id: i, name: format!("console number {i} on the desk"), priority: 0 }).collect();
    let delta = Arc::new(RosterDelta { channel: "ops".into(), add: entries, remove: vec![] });
    let mut sent = 0u64;
    let end = loop {
        match to_peer.send(ToPeer::RosterDelta(delta.clone())) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(to_peer.len() <= Limits::PEER.reliable, "queue grew to {}", to_peer.len());
        assert!(sent < 1_000_000, "the hub never gave up on a console that does not read");
        if sent % 256 == 0 {
            // Let the session write what the socket takes.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    assert_eq!(end, End::Overflow);
    assert_eq!(to_peer.len(), 0, "the stalled console's queue is freed at once");
    assert!(to_peer.send(ToPeer::RosterDelta(delta.clone())).is_err(), "nothing more is queued for it");
    // And it leaves, whatever it still has unread.
    let left = tokio::time::timeout(T, async {
        loop {
            match events.recv().await {
                Some(HubEvent::Left { peer: p }) if p == peer => return,
                Some(_) => {}
                None => panic!("hub events ended"),
            }
        }
    })
    .await;
    assert!(left.is_ok(), "the stalled console was not dropped");
    drop(ws);
    cancel.cancel();
    tokio::time::timeout(T, handle.stopped()).await.expect("hub stops");
}

/// A console that floods floor messages while the router is busy: the router's inbox holds at
/// most `INBOX` events and the console's session waits (reading nothing more from it) instead
/// of queueing the rest; once the router reads again every message arrives, in order, and the
/// console is still served (issue 19 item 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_that_floods_floor_messages_waits_for_the_router_and_loses_none() {
    let (events_tx, mut events) = mpsc::channel(INBOX);
    let cancel = CancellationToken::new();
    let handle = net::serve(options(localhost(), Some(0)), events_tx, cancel.clone()).await.expect("hub starts");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", handle.http_addr())).await.unwrap();
    send(&mut ws, json!({"type":"hello","token":ALL,"name":"flood","members":[{"key":"c","channel":"ops"}]})).await;
    let (peer, _to_peer) = match tokio::time::timeout(T, events.recv()).await.unwrap().unwrap() {
        HubEvent::Joined { peer, to_peer, reply, .. } => {
            reply.send(Ok(vec![ParticipantId(1)])).unwrap();
            (peer, to_peer)
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(recv(&mut ws).await["type"], "welcome");

    // The router reads nothing while the console sends three inboxes' worth.
    let n = 3 * INBOX;
    let flood = tokio::spawn(async move {
        for i in 0..n {
            let action = if i % 2 == 0 { "request" } else { "release" };
            send(&mut ws, json!({"type":"floor","id":1,"action":action})).await;
        }
        ws
    });
    let full = tokio::time::timeout(T, async {
        while events.len() < INBOX {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(full.is_ok(), "the flood did not reach the router: {} events", events.len());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(events.len(), INBOX, "the inbox holds no more than its bound");

    // The router reads again: every floor message, in order.
    for i in 0..n {
        match tokio::time::timeout(T, events.recv()).await.expect("the rest of the flood").unwrap() {
            HubEvent::Floor { peer: p, member: ParticipantId(1), msg } if p == peer => {
                let request = matches!(msg, ToArbiter::Request { .. });
                assert_eq!(request, i % 2 == 0, "floor message {i} out of order: {msg:?}");
            }
            other => panic!("floor message {i}: {other:?}"),
        }
    }
    let mut ws = tokio::time::timeout(T, flood).await.expect("the console's sends complete").unwrap();
    send(&mut ws, json!({"type":"ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong", "the console is still served");
    drop(ws);
    cancel.cancel();
    tokio::time::timeout(T, handle.stopped()).await.expect("hub stops");
}

/// Over TLS the accept loop keeps its guards: a client that connects and says nothing, or
/// starts a ClientHello and stalls, is cut after the header timeout, like a silent HTTP client;
/// a client pinning the hub's certificate gets HTTPS with HSTS, a wrong pin fails the
/// handshake; the redirect listener sends plain HTTP to HTTPS without the query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_hub_cuts_stalled_handshakes_serves_pinned_clients_and_redirects_http() {
    use roipd::net::tls::{self, CertSource, HubTrust};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let cert =
        tls::server(&CertSource::SelfSigned { dir: dir.path().into(), names: vec!["localhost".into()] }).unwrap();
    let pin = tls::parse_fingerprint(&cert.fingerprint).unwrap();
    let redirect = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut o = options(localhost(), Some(0));
    o.header_timeout = Duration::from_millis(500);
    o.tls = Some(cert);
    o.redirect_listen = Some(redirect);
    let hub = Hub::start(o).await;
    let addr = hub.handle.http_addr();

    let t = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    // A TLS handshake record header announcing 512 bytes, then nothing.
    stalled.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
    for (what, s) in [("silent", &mut silent), ("stalled", &mut stalled)] {
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{what}: not cut within 5 s: {r:?}");
    }
    let cut = t.elapsed();
    println!("silent and stalled TLS connections cut after {cut:?}");
    assert!(cut >= Duration::from_millis(400) && cut < Duration::from_secs(3), "{cut:?}");

    let get = |trust: HubTrust| async move {
        let config = tls::client(&trust).unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let started = Instant::now();
        let mut s = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| e.to_string())?;
        let handshake = started.elapsed();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text).await;
        Ok::<_, String>((text, handshake))
    };
    let (text, handshake) = get(HubTrust::Pin(pin)).await.expect("a pinned client connects");
    println!("TLS handshake with the hub (pinned, debug build): {handshake:?}");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.to_lowercase().contains("strict-transport-security: max-age=31536000"), "{text}");
    let mut wrong = pin;
    wrong[0] ^= 1;
    let e = get(HubTrust::Pin(wrong)).await.expect_err("a wrong pin is refused");
    assert!(e.contains(tls::PIN_MISMATCH), "{e}");

    let mut plain = TcpStream::connect(redirect).await.unwrap();
    let host = format!("127.0.0.1:{}", redirect.port());
    let req = format!("GET /console/?token=secret HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    plain.write_all(req.as_bytes()).await.unwrap();
    let mut text = String::new();
    let _ = plain.read_to_string(&mut text).await;
    assert!(text.starts_with("HTTP/1.1 308"), "{text}");
    let location = format!("location: https://127.0.0.1:{}/console/\r\n", addr.port());
    assert!(text.to_lowercase().contains(&location), "{text}");
    assert!(!text.contains("secret"), "the query is not carried over: {text}");
    hub.stop().await;
}
