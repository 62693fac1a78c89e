//! A real browser against the hub: headless Debian Chromium (driven by npm `playwright-core`
//! from `tests/browser/node_modules`) joins "ops" the way the web console does (hello, one
//! sendrecv transceiver, non-trickle offer), talks a 1 kHz tone from its fake microphone, and
//! a Rust uplink edge on the same channel decodes it; then the edge talks and the browser's
//! `getStats()` must show the packets and audio energy arriving. Proves ICE-lite, DTLS-SRTP and
//! RTP-mode forwarding with Chrome, on 127.0.0.1 only.
//!
//! Missing prerequisites fail the test with the package to install; nothing is skipped.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use roipd::codec::{Decoder, Encoder, EncoderConfig, MAX_FRAME_SAMPLES};
use roipd::core::floor::{ParticipantId, Priority, ToArbiter, ToParticipant};
use roipd::net::peer_queue::{PeerTx, INBOX};
use roipd::net::{
    self, HubChannel, HubEvent, HubOptions, HubToken, MemberRequest, PeerId, ToPeer, UplinkEvent, UplinkOptions,
};
use roipd::pipeline::MediaPacket;

const TOKEN: &str = "browser-secret";

/// The page script: the console's signaling and media steps, then a talk and a listen.
const DRIVER: &str = r#"
const { chromium } = require('playwright-core');
const [base, wav] = process.argv.slice(2);
(async () => {
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream', `--use-file-for-fake-audio-capture=${wav}`,
    '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required'] });
  try {
    const page = await browser.newPage();
    await page.goto(base + '/healthz');
    const result = await page.evaluate(async ({ wsUrl, token }) => {
      const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
      const inbox = []; const waiters = [];
      const ws = new WebSocket(wsUrl);
      ws.onmessage = (e) => { inbox.push(JSON.parse(e.data)); waiters.forEach((w) => w()); };
      const next = (pred, ms = 8000) => new Promise((resolve, reject) => {
        const take = () => { const i = inbox.findIndex(pred); if (i < 0) return false; resolve(inbox.splice(i, 1)[0]); return true; };
        if (take()) return;
        const t = setTimeout(() => reject(new Error('timeout; inbox: ' + JSON.stringify(inbox))), ms);
        waiters.push(() => { if (take()) clearTimeout(t); });
      });
      const send = (m) => ws.send(JSON.stringify(m));
      await new Promise((r) => { ws.onopen = r; });
      send({ type: 'hello', token, name: 'chromium', members: [{ key: 'console', channel: 'ops' }] });
      const welcome = await next((m) => m.type === 'welcome' || m.type === 'error');
      if (welcome.type === 'error') return { error: welcome };
      const id = welcome.members[0].id;
      const mic = (await navigator.mediaDevices.getUserMedia({ audio:
        { echoCancellation: false, noiseSuppression: false, autoGainControl: false } })).getAudioTracks()[0];
      const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
      const tr = pc.addTransceiver('audio', { direction: 'sendrecv' });
      // Chrome measures received audio at playout: play it, as the console does.
      pc.ontrack = (e) => { const a = new Audio(); a.srcObject = new MediaStream([e.track]); a.play().catch(() => {}); };
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise((r) => { if (pc.iceGatheringState === 'complete') r();
        pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r(); setTimeout(r, 3000); });
      const t0 = performance.now();
      send({ type: 'offer', sdp: pc.localDescription.sdp, mids: { [tr.mid]: 'ops' } });
      const answer = await next((m) => m.type === 'answer' || m.type === 'error');
      if (answer.type === 'error') return { error: answer };
      await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
      const answerMs = performance.now() - t0;
      await new Promise((resolve, reject) => {
        if (pc.connectionState === 'connected') return resolve();
        pc.onconnectionstatechange = () => { if (pc.connectionState === 'connected') resolve();
          if (pc.connectionState === 'failed') reject(new Error('ICE/DTLS failed')); };
        setTimeout(() => reject(new Error('not connected: ' + pc.connectionState)), 10000);
      });
      const connectMs = performance.now() - t0;
      // Talk for 2 s.
      send({ type: 'floor', id, action: 'request' });
      await next((m) => m.type === 'floor' && m.event === 'granted');
      await tr.sender.replaceTrack(mic);
      await sleep(2000);
      await tr.sender.replaceTrack(null);
      send({ type: 'floor', id, action: 'release' });
      // Listen while the edge talks.
      const taken = await next((m) => m.type === 'floor' && m.event === 'taken' && m.holder.id !== id, 10000);
      await sleep(2500);
      let inbound = null; let outbound = null;
      (await pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp') inbound = r; if (r.type === 'outbound-rtp') outbound = r; });
      ws.close();
      pc.close();
      return { answerMs, connectMs, taken: taken.holder.name,
        sent: outbound && outbound.packetsSent, received: inbound && inbound.packetsReceived,
        energy: inbound && inbound.totalAudioEnergy, lost: inbound && inbound.packetsLost,
        samples: inbound && inbound.totalSamplesReceived, concealed: inbound && inbound.concealedSamples };
    }, { wsUrl: base.replace('http', 'ws') + '/ws', token: process.env.ROIPD_TOKEN });
    console.log(JSON.stringify(result));
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(e); process.exit(1); });
"#;

fn tone_wav(path: &Path) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..48_000 * 4 {
        let s = 0.5 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 48_000.0).sin();
        w.write_sample((s * 32767.0) as i16).unwrap();
    }
    w.finalize().unwrap();
}

/// Grants free floors and forwards the holder's media to everyone else on the channel.
async fn router(mut rx: mpsc::Receiver<HubEvent>) {
    let mut peers: HashMap<PeerId, (String, PeerTx<ToPeer>, Vec<ParticipantId>)> = HashMap::new();
    let mut holder: Option<(PeerId, ParticipantId)> = None;
    let mut next = 0u64;
    while let Some(e) = rx.recv().await {
        match e {
            HubEvent::Joined { peer, name, members, to_peer, reply } => {
                let ids: Vec<_> = members
                    .iter()
                    .map(|_| {
                        next += 1;
                        ParticipantId(next)
                    })
                    .collect();
                peers.insert(peer, (name, to_peer, ids.clone()));
                let _ = reply.send(Ok(ids));
            }
            HubEvent::Floor { peer, member, msg } => {
                let all = |msg, name: Option<String>| {
                    for (_, to, _) in peers.values() {
                        let _ = to.send(ToPeer::Floor {
                            channel: "ops".into(),
                            member: None,
                            msg,
                            holder_name: name.clone(),
                        });
                    }
                };
                match msg {
                    ToArbiter::Request { priority } if holder.is_none() => {
                        holder = Some((peer, member));
                        let _ = peers[&peer].1.send(ToPeer::Floor {
                            channel: "ops".into(),
                            member: Some(member),
                            msg: ToParticipant::Granted,
                            holder_name: None,
                        });
                        all(ToParticipant::Taken { holder: member, priority }, Some(peers[&peer].0.clone()));
                    }
                    ToArbiter::Release if holder == Some((peer, member)) => {
                        holder = None;
                        all(ToParticipant::Idle, None);
                    }
                    _ => {}
                }
            }
            HubEvent::Media { peer, channel, packet } => {
                if holder.is_some_and(|(p, _)| p == peer) {
                    for (id, (_, to, _)) in &peers {
                        if *id != peer {
                            let _ = to.send(ToPeer::Media { channel: channel.clone(), packet: packet.clone() });
                        }
                    }
                }
            }
            HubEvent::MediaSeen { .. } | HubEvent::Emergency { .. } => {}
            HubEvent::Left { peer } => {
                peers.remove(&peer);
                if holder.is_some_and(|(p, _)| p == peer) {
                    holder = None;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_talks_and_listens_through_the_hub() {
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules");
    assert!(Path::new("/usr/bin/chromium").exists(), "needs /usr/bin/chromium: install Debian package chromium");
    assert!(
        modules.join("playwright-core").exists(),
        "needs npm playwright-core: run `npm ci` in tests/browser (Debian packages nodejs npm)"
    );
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("tone.wav");
    tone_wav(&wav);
    let script = dir.path().join("driver.cjs");
    std::fs::write(&script, DRIVER).unwrap();

    let mut o = HubOptions::new((Ipv4Addr::LOCALHOST, 0).into());
    o.media_port = Some(0);
    o.tokens =
        vec![HubToken { name: "t".into(), secret: TOKEN.into(), channels: vec!["*".into()], max_priority: None }];
    o.channels = vec![HubChannel { name: "ops".into(), label: "Operations".into() }];
    let (tx, rx) = mpsc::channel(INBOX);
    let cancel = CancellationToken::new();
    let hub = net::serve(o, tx, cancel.clone()).await.unwrap();
    tokio::spawn(router(rx));
    let base = format!("http://{}", hub.http_addr());

    let (etx, mut edge_events) = mpsc::channel(1024);
    let edge = net::start_uplink(
        UplinkOptions::new(
            &base,
            TOKEN,
            "edge",
            vec![MemberRequest { key: "radio1".into(), channel: "ops".into(), priority: Priority(0) }],
        ),
        etx,
        cancel.clone(),
    );
    let my_id = loop {
        if let Some(UplinkEvent::Up { members }) = edge_events.recv().await {
            break members[0].1;
        }
    };

    let browser = tokio::task::spawn_blocking({
        let (script, wav, base, modules) = (script.clone(), wav.clone(), base.clone(), modules.clone());
        move || {
            Command::new("node")
                .arg(&script)
                .arg(&base)
                .arg(&wav)
                .env("NODE_PATH", modules)
                .env("ROIPD_TOKEN", TOKEN)
                .output()
                .expect("node runs (install Debian package nodejs)")
        }
    });

    // The browser talks: collect until its floor goes idle.
    let mut heard: Vec<MediaPacket> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let e = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), edge_events.recv())
            .await
            .expect("the browser talks and releases within 30 s")
            .unwrap();
        match e {
            UplinkEvent::Media { packet, .. } => heard.push(packet),
            UplinkEvent::Floor { msg: ToParticipant::Idle, .. } if !heard.is_empty() => break,
            _ => {}
        }
    }
    let mut dec = Decoder::new().unwrap();
    let mut pcm = Vec::new();
    let mut buf = vec![0.0f32; MAX_FRAME_SAMPLES];
    for p in &heard {
        let n = dec.decode(&p.payload, &mut buf).unwrap();
        pcm.extend_from_slice(&buf[..n]);
    }
    let tail = &pcm[pcm.len().min(24_000)..];
    let crossings = tail.windows(2).filter(|w| w[0] <= 0.0 && w[1] > 0.0).count();
    let hz = crossings as f32 * 48_000.0 / tail.len().max(1) as f32;
    let rms = (tail.iter().map(|s| s * s).sum::<f32>() / tail.len().max(1) as f32).sqrt();
    println!("edge heard {} packets from Chromium: {hz:.0} Hz, RMS {rms:.2}", heard.len());
    assert!(heard.len() >= 80, "about 2 s of 20 ms packets, got {}", heard.len());
    assert!((hz - 1000.0).abs() < 30.0 && rms > 0.05, "{hz} Hz, RMS {rms}");

    // The edge talks to the browser.
    edge.floor(my_id, ToArbiter::Request { priority: Priority(0) });
    loop {
        if let Some(UplinkEvent::Floor { msg: ToParticipant::Granted, .. }) = edge_events.recv().await {
            break;
        }
    }
    let mut enc = Encoder::new(EncoderConfig::default()).unwrap();
    let mut out = vec![0u8; 4000];
    let mut phase = 0.0f32;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for i in 0..150u32 {
        tick.tick().await;
        let pcm: Vec<f32> = (0..960)
            .map(|_| {
                phase += 440.0 / 48_000.0;
                0.5 * (2.0 * std::f32::consts::PI * phase).sin()
            })
            .collect();
        let n = enc.encode(&pcm, &mut out).unwrap();
        edge.media(
            "ops",
            MediaPacket { seq: i as u16, timestamp: i * 960, marker: i == 0, payload: out[..n].to_vec() },
        );
    }
    edge.floor(my_id, ToArbiter::Release);

    let output = tokio::time::timeout(Duration::from_secs(30), browser).await.expect("browser finishes").unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "driver failed:\n{stdout}\n{stderr}");
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect(&stdout);
    println!("Chromium: {result}");
    assert!(result["error"].is_null(), "{result}");
    assert!(result["sent"].as_u64().unwrap_or(0) >= 80, "{result}");
    assert!(result["received"].as_u64().unwrap_or(0) >= 100, "{result}");
    assert!(result["energy"].as_f64().unwrap_or(0.0) > 0.0, "{result}");
    assert_eq!(result["taken"], "edge");

    cancel.cancel();
    edge.stopped().await;
    hub.stopped().await;
}
