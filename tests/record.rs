//! Recording on the embedded hub, end to end with real parts: `roipd run` hosting channel
//! `ops` with simulated radios sending tones, a real Mosquitto for the `recorded` events, and
//! Debian's `opusdec` decoding every file.
//!
//! - Three transmissions (released, preempted by a higher priority radio, cut by the channel's
//!   maximum talk time): three files, each decoding to its length (± one frame) and carrying
//!   its talker's tone; the metadata, the index rebuilt from the directory and the MQTT events
//!   agree.
//! - kill -9 during a transmission: the earlier recording and the index are intact after a
//!   restart, and the next transmission is recorded.
//! - Disk full (a 192 KiB tmpfs in a mount namespace the test makes): the voice keeps flowing
//!   to the other radio, `record_failed` and the status flag say so, and recording resumes
//!   by itself once space is freed.

mod common;
#[allow(dead_code)]
mod fleet;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::config::{Audio, Config, Mqtt, Radio, Record};
use common::fleet_ns::{require, tone_map, tone_quality, wav_samples};
use common::Daemon;
use fleet::broker::Broker;
use fleet::probe::{Msg, Probe};
use roipd::core::record::RecordingMeta;

const WAIT: Duration = Duration::from_secs(10);

/// A radio on `ops` whose receiver hears `capture`, keyed and unkeyed without delays.
fn radio(name: &str, x: &str, capture: &str) -> Radio {
    radio_on("ops", name, x, capture)
}

fn radio_on(channel: &str, name: &str, x: &str, capture: &str) -> Radio {
    Radio::sim(name, channel, x)
        .capture(capture)
        .playback(&format!("sim:wav-out:{{dir}}/{x}-tx.wav"))
        .keying("cor_debounce_ms", 0)
        .keying("min_keyup_ms", 0)
        .keying("squelch_hang_ms", 0)
        .keying("tx_delay_ms", 0)
}

/// Radio A (1 kHz), radio B (1.5 kHz, dispatch priority, full duplex: its receiver opening
/// while it transmits A preempts A), radio C listening;
/// `ops` cuts a talker after `max_talk_ms`; recordings in `dir`.
fn hub(broker: u16, dir: &Path, max_talk_ms: u64) -> String {
    Config::new("rec")
        .channel_with("ops", &[("max_talk_ms", &max_talk_ms.to_string())])
        .add(radio("radio-a", "a", "sim:tone:1000:-12"))
        .add(radio("radio-b", "b", "sim:tone:1500:-12").priority(100).duplex())
        .add(radio("radio-c", "c", "sim:silence"))
        .add(Record::new(dir.to_str().unwrap()).set("min_length_ms", 300))
        .add(Mqtt::new(broker))
        .toml()
}

fn recorded(m: &Msg) -> bool {
    m.topic == "roipd/rec/event" && m.json()["kind"] == "recorded"
}

/// Decode with opusdec; the samples (48 kHz mono).
fn opusdec(file: &Path) -> Vec<f32> {
    let out = tempfile::Builder::new().suffix(".wav").tempfile().unwrap();
    let run = Command::new(require("opusdec", "opus-tools"))
        .args(["--quiet", "--rate", "48000"])
        .arg(file)
        .arg(out.path())
        .output()
        .expect("run opusdec");
    assert!(run.status.success(), "opusdec {}: {}", file.display(), String::from_utf8_lossy(&run.stderr));
    wav_samples(out.path())
}

fn metas(dir: &Path) -> Vec<RecordingMeta> {
    let mut v: Vec<RecordingMeta> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
        .collect();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

/// A recording's file decodes to its stated length (± one 20 ms frame) and carries `hz`.
fn check_file(dir: &Path, meta: &RecordingMeta, hz: f32) {
    let pcm = opusdec(&dir.join(&meta.file));
    let decoded_ms = pcm.len() as i64 * 1000 / 48_000;
    assert!(
        (decoded_ms - meta.duration_ms as i64).abs() <= 20,
        "{}: decoded {decoded_ms} ms, metadata says {} ms",
        meta.id,
        meta.duration_ms
    );
    let q = tone_quality(&pcm, hz);
    assert!(
        q.tone_share() >= 0.9,
        "{}: {hz} Hz in {:.0} % of its frames:\n{}",
        meta.id,
        100.0 * q.tone_share(),
        tone_map(&pcm, hz)
    );
}

#[tokio::test]
async fn three_transmissions_make_three_files_of_their_length_with_their_talkers_tone() {
    require("opusdec", "opus-tools");
    let broker = Broker::start();
    let probe = Probe::connect(broker.anon, &["roipd/rec/#"]).await;
    let rec = tempfile::tempdir().unwrap();
    let d = Daemon::start(&hub(broker.anon, rec.path(), 2000));
    probe.wait("status online", WAIT, |m| m.topic == "roipd/rec/status" && m.json()["online"] == true).await;
    let status = probe
        .wait("recording status", WAIT, |m| m.topic == "roipd/rec/status" && !m.json()["recording"].is_null())
        .await;
    assert_eq!(status.json()["recording"]["state"], "ok");

    // 1: A talks 1.2 s and lets go.
    let mark = probe.mark();
    d.drive("a-cor", true);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    d.drive("a-cor", false);
    let e1 = probe.wait_after(mark, "recorded 1", WAIT, recorded).await.json();
    // 2: A talks, and B (dispatch priority) takes the floor from it after 1.5 s.
    let mark = probe.mark();
    d.drive("a-cor", true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    d.drive("b-cor", true);
    let e2 = probe.wait_after(mark, "recorded 2", WAIT, recorded).await.json();
    d.drive("a-cor", false);
    // 3: B holds on until the channel's 2 s maximum talk time cuts it.
    let mark = probe.mark();
    let e3 = probe.wait_after(mark, "recorded 3", WAIT, recorded).await.json();
    d.drive("b-cor", false);

    let expect = [
        ("radio-a", "released", 1200, 1000.0),
        ("radio-a", "preempted", 1500, 1000.0),
        ("radio-b", "tot", 2000, 1500.0),
    ];
    let metas = metas(rec.path());
    assert_eq!(metas.len(), 3, "{metas:#?}\n{}", d.stderr());
    for ((meta, event), (talker, end, ms, hz)) in metas.iter().zip([&e1, &e2, &e3]).zip(expect) {
        assert_eq!((meta.talker.as_str(), meta.end.as_str(), meta.channel.as_str()), (talker, end, "ops"), "{meta:#?}");
        // Each lasts about as long as its talker held the floor: within 150 ms, as this test's
        // sleeps wake late on a loaded box, and a packet that reaches the router late starts a
        // new talk-spurt whose timestamps advance by the wall-clock gap (the recording follows
        // the stream the listeners got: seen 120 ms filled in a 2 s talk beside a build).
        assert!(
            (ms - 150..=ms + 150).contains(&(meta.duration_ms as i64)),
            "{} ms, expected about {ms}: {meta:#?}",
            meta.duration_ms
        );
        assert_eq!(event["id"], meta.id.as_str());
        assert_eq!(event["talker"], talker);
        assert_eq!(event["channel"], "ops");
        assert_eq!(event["start"], meta.start.as_str());
        assert_eq!(event["duration_ms"], meta.duration_ms);
        assert_eq!(event["reason"], end);
        check_file(rec.path(), meta, hz);
    }
    assert_eq!(metas[0].priority, 0);
    assert_eq!(metas[2].priority, 100);
    // The index the daemon rebuilds from the directory is the metadata.
    let index = roipd::record::scan(rec.path());
    assert_eq!(index.entries.values().cloned().collect::<Vec<_>>(), metas);
    let written: u64 = metas.iter().map(|m| std::fs::metadata(rec.path().join(&m.file)).unwrap().len()).sum();
    assert_eq!(index.total_bytes, written);
    let seconds: f64 = metas.iter().map(|m| m.duration_ms as f64 / 1000.0).sum();
    // The Opus packets as forwarded, against the files: Ogg and header overhead.
    let mut payload = 0usize;
    for m in &metas {
        let mut r = ogg::PacketReader::new(std::io::Cursor::new(std::fs::read(rec.path().join(&m.file)).unwrap()));
        let (mut n, mut fills) = (0, 0);
        while let Some(p) = r.read_packet().unwrap() {
            // Headers first; the filled gaps are packets of zero-length frames (TOC, count).
            if n < 2 {
            } else if p.data.len() == 2 && p.data[0] & 3 == 3 {
                fills += 1;
            } else {
                payload += p.data.len();
            }
            n += 1;
        }
        assert_eq!(n - 2 - fills, m.packets as usize, "every forwarded packet is in the file");
        assert_eq!(fills > 0, m.filled_ms > 0);
    }
    println!(
        "disk: {written} bytes for {seconds:.2} s of recording = {:.0} B/s; forwarded Opus {:.0} B/s ({:.1} kb/s); \
         overhead {:.1} %",
        written as f64 / seconds,
        payload as f64 / seconds,
        payload as f64 * 8.0 / seconds / 1000.0,
        100.0 * (written as f64 / payload as f64 - 1.0)
    );
}

#[tokio::test]
async fn kill_9_during_a_transmission_leaves_earlier_recordings_and_the_index_whole() {
    require("opusdec", "opus-tools");
    let broker = Broker::start();
    let probe = Probe::connect(broker.anon, &["roipd/rec/#"]).await;
    let rec = tempfile::tempdir().unwrap();
    let config = hub(broker.anon, rec.path(), 2000);
    let mut d = Daemon::start(&config);
    probe.wait("status online", WAIT, |m| m.topic == "roipd/rec/status" && m.json()["online"] == true).await;
    let mark = probe.mark();
    d.drive("a-cor", true);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    d.drive("a-cor", false);
    probe.wait_after(mark, "recorded 1", WAIT, recorded).await;
    let before = metas(rec.path());
    assert_eq!(before.len(), 1);

    // The next transmission is being written when the daemon dies.
    d.drive("a-cor", true);
    let part = || {
        std::fs::read_dir(rec.path())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".opus.part"))
    };
    d.wait_for("a part file", WAIT, |_| part());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    d.signal(libc::SIGKILL);
    d.wait_exit(WAIT);

    let mut d = Daemon::start(&config);
    d.wait_for("the index rebuilt", WAIT, |d| d.stderr().contains("recordings=1"));
    assert!(!part(), "the interrupted transmission is removed");
    assert_eq!(metas(rec.path()), before);
    check_file(rec.path(), &before[0], 1000.0);
    // And recording goes on.
    let mark = probe.mark();
    d.drive("a-cor", true);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    d.drive("a-cor", false);
    probe.wait_after(mark, "recorded after the restart", WAIT, recorded).await;
    let after = metas(rec.path());
    assert_eq!(after.len(), 2);
    assert_eq!(roipd::record::scan(rec.path()).entries.len(), 2);
}

const INNER: &str = "ROIPD_RECORD_INNER";

/// The disk-full test runs inside a mount namespace of its own (`unshare -m`), where a
/// 192 KiB tmpfs is the recording directory; its inner half is this binary run again there.
#[test]
fn a_full_disk_stops_recording_not_the_voice_and_recording_resumes_when_space_returns() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root: it mounts a tmpfs in a mount namespace");
    require("unshare", "util-linux");
    require("opusdec", "opus-tools");
    let root = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "--", "bash", "-c"])
        .arg("set -e; mount -t tmpfs -o size=192k tmpfs \"$1\"; exec \"$0\" disk_full_inner --exact --ignored --nocapture --test-threads=1")
        .arg(&exe)
        .arg(root.path())
        .env(INNER, root.path())
        .output()
        .expect("run unshare");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{stdout}");
    assert!(out.status.success() && stdout.contains("1 passed"), "inner test failed:\n{stdout}\n{stderr}");
    assert!(std::fs::read_dir(root.path()).unwrap().next().is_none(), "the tmpfs stayed inside its namespace");
}

#[tokio::test]
#[ignore = "runs inside the mount namespace its outer test makes"]
async fn disk_full_inner() {
    let Some(rec) = std::env::var_os(INNER).map(PathBuf::from) else { return };
    let broker = Broker::start();
    let probe = Probe::connect(broker.anon, &["roipd/rec/#"]).await;
    let d = Daemon::start(&hub(broker.anon, &rec, 10_000));
    probe.wait("status online", WAIT, |m| m.topic == "roipd/rec/status" && m.json()["online"] == true).await;
    // Leave 4 KiB free: under a second of audio at the default bitrate.
    let filler = rec.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    let full = std::fs::metadata(&filler).unwrap().len();
    std::fs::write(&filler, vec![0u8; full as usize - 4096]).unwrap();

    // A talks 3 s: recording fails, C transmits A's tone all along.
    let mark = probe.mark();
    let c_before = wav_samples(&d.dir.path().join("c-tx.wav")).len();
    d.drive("a-cor", true);
    let failed = probe
        .wait_after(mark, "record_failed", WAIT, |m| {
            m.topic == "roipd/rec/event" && m.json()["kind"] == "record_failed"
        })
        .await;
    assert_eq!(failed.json()["reason"], "disk_full", "{}", failed.json());
    let flag = probe
        .wait_after(mark, "status flag", WAIT, |m| {
            m.topic == "roipd/rec/status" && m.json()["recording"]["state"] == "disk_full"
        })
        .await;
    assert!(flag.json()["recording"]["detail"].as_str().is_some_and(|d| d.contains("space")), "{}", flag.json());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    d.drive("a-cor", false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let heard = wav_samples(&d.dir.path().join("c-tx.wav"));
    let q = tone_quality(&heard[c_before.min(heard.len())..], 1000.0);
    assert!(
        q.span_frames >= 140 && q.tone_share() >= 0.95,
        "radio C transmitted A's tone: {q:?}\n{}",
        tone_map(&heard[c_before.min(heard.len())..], 1000.0)
    );
    assert!(probe.since(mark).iter().all(|m| !recorded(m)));
    // Retained: whoever looks later sees it.
    let late = Probe::connect(broker.anon, &["roipd/rec/status"]).await;
    late.wait("retained flag", WAIT, |m| m.retain && m.json()["recording"]["state"] == "disk_full").await;
    assert!(metas(&rec).is_empty());
    assert_eq!(std::fs::read_dir(&rec).unwrap().count(), 1, "only the filler: the failed part is removed");

    // Space returns: the next transmission is recorded, and the flag clears.
    std::fs::remove_file(&filler).unwrap();
    let mark = probe.mark();
    let started = Instant::now();
    d.drive("a-cor", true);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    d.drive("a-cor", false);
    probe.wait_after(mark, "recorded", WAIT, recorded).await;
    probe
        .wait_after(mark, "record_resumed", WAIT, |m| {
            m.topic == "roipd/rec/event" && m.json()["kind"] == "record_resumed"
        })
        .await;
    probe
        .wait_after(mark, "status ok", WAIT, |m| {
            m.topic == "roipd/rec/status" && m.json()["recording"]["state"] == "ok"
        })
        .await;
    let metas = metas(&rec);
    assert_eq!(metas.len(), 1);
    check_file(&rec, &metas[0], 1000.0);
    println!("resumed within {:?}", started.elapsed());
}

/// `method path` on the hub with `token` (Bearer; none: no header): status, headers, body.
async fn http(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await.unwrap().unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(buf.len());
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).unwrap_or("0").parse().unwrap();
    (status, head, buf[(split + 4).min(buf.len())..].to_vec())
}

fn ids(body: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["recordings"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn the_hub_api_lists_fetches_and_deletes_within_the_tokens_channels() {
    let port = common::free_port();
    let rec = tempfile::tempdir().unwrap();
    let config = Config::new("rec")
        .channel("ops")
        .channel("fire")
        .add(radio("radio-a", "a", "sim:tone:1000:-12"))
        .add(radio_on("fire", "radio-f", "f", "sim:tone:700:-12"))
        .add(Record::new(rec.path().to_str().unwrap()))
        .add(common::config::Hub::new(port).token("ops", "ops-token", &["ops"]).token("fire", "fire-token", &["fire"]))
        .toml();
    let mut d = Daemon::start_with(&config, &[], &[("ops-token", "ops-secret\n"), ("fire-token", "fire-secret\n")]);
    d.wait_for("the hub", WAIT, |d| d.stderr().contains("hub listening"));
    for x in ["a", "f"] {
        d.drive(&format!("{x}-cor"), true);
        tokio::time::sleep(Duration::from_millis(800)).await;
        d.drive(&format!("{x}-cor"), false);
    }
    d.wait_for("two recordings", WAIT, |_| metas(rec.path()).len() == 2);
    let all = metas(rec.path());
    let ops = all.iter().find(|m| m.channel == "ops").unwrap().clone();
    let fire = all.iter().find(|m| m.channel == "fire").unwrap().clone();
    assert_eq!(fire.talker, "radio-f");

    // Each token sees its channels' recordings only; no token or a wrong one is refused.
    let (status, head, body) = http(port, "GET", "/api/recordings", Some("ops-secret")).await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_eq!(ids(&body), [ops.id.as_str()]);
    let listed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(serde_json::from_value::<RecordingMeta>(listed["recordings"][0].clone()).unwrap(), ops);
    assert_eq!(ids(&http(port, "GET", "/api/recordings", Some("fire-secret")).await.2), [fire.id.as_str()]);
    assert_eq!(http(port, "GET", "/api/recordings", None).await.0, 401);
    assert_eq!(http(port, "GET", "/api/recordings", Some("nope")).await.0, 401);
    let q = |query: &str| format!("/api/recordings?{query}");
    assert_eq!(ids(&http(port, "GET", &q("talker=radio-a"), Some("ops-secret")).await.2), [ops.id.as_str()]);
    assert!(ids(&http(port, "GET", &q("talker=radio-f"), Some("ops-secret")).await.2).is_empty());
    assert!(ids(&http(port, "GET", &q("channel=fire"), Some("ops-secret")).await.2).is_empty());
    let after = format!("from_ms={}", ops.start_unix_ms + 1);
    assert!(ids(&http(port, "GET", &q(&after), Some("ops-secret")).await.2).is_empty());
    assert_eq!(http(port, "GET", &q("limit=x"), Some("ops-secret")).await.0, 400);
    // Never in the URL (it would be logged), not even a good one, with or without a header.
    let (status, _, body) = http(port, "GET", &q("token=ops-secret"), None).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("Authorization"));
    assert_eq!(http(port, "GET", &q("token=ops-secret"), Some("ops-secret")).await.0, 400);
    assert_eq!(http(port, "GET", &format!("/api/recordings/{}?token=ops-secret", ops.id), None).await.0, 400);

    // Fetch: the file as written, to its channel's tokens only.
    let path = format!("/api/recordings/{}", ops.id);
    let (status, head, body) = http(port, "GET", &path, Some("ops-secret")).await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: audio/ogg"), "{head}");
    assert_eq!(body, std::fs::read(rec.path().join(&ops.file)).unwrap());
    assert_eq!(http(port, "GET", &path, Some("fire-secret")).await.0, 404);
    assert_eq!(http(port, "GET", "/api/recordings/..%2Froipd.toml", Some("ops-secret")).await.0, 404);

    // Delete: not with another channel's token; with its own, file, metadata and entry go.
    assert_eq!(http(port, "DELETE", &path, Some("fire-secret")).await.0, 404);
    assert!(rec.path().join(&ops.file).exists());
    assert_eq!(http(port, "DELETE", &path, Some("ops-secret")).await.0, 204);
    assert!(!rec.path().join(&ops.file).exists() && !rec.path().join(format!("{}.json", ops.id)).exists());
    assert!(ids(&http(port, "GET", "/api/recordings", Some("ops-secret")).await.2).is_empty());
    assert_eq!(http(port, "GET", &path, Some("ops-secret")).await.0, 404);
    assert_eq!(ids(&http(port, "GET", "/api/recordings", Some("fire-secret")).await.2), [fire.id.as_str()]);

    // Unknown tokens: an address that keeps guessing is refused before its token is looked at
    // (429 with Retry-After), a good token from there included, until it has waited. One of
    // the two failures above (the wrong token) already counts; `None` does not.
    let mut unknown = 1;
    let throttled = loop {
        let (status, head, _) = http(port, "GET", "/api/recordings", Some(&format!("guess-{unknown}"))).await;
        if status == 429 {
            break head;
        }
        assert_eq!(status, 401);
        unknown += 1;
        assert!(unknown <= 10, "still answering after {unknown} unknown tokens");
    };
    assert_eq!(unknown, 10, "refused after the 10th unknown token");
    let retry: u64 = throttled
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .unwrap_or_else(|| panic!("no Retry-After: {throttled}"))
        .trim()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "retry after {retry} s");
    assert_eq!(http(port, "GET", "/api/recordings", Some("fire-secret")).await.0, 429, "good token, same address");
    assert_eq!(http(port, "DELETE", &format!("/api/recordings/{}", fire.id), Some("nope")).await.0, 429);
    // The WebSocket hello shares the count: the upgrade itself is refused.
    let ws_status = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap();
        String::from_utf8_lossy(&buf[..n]).split(' ').nth(1).unwrap_or("").to_string()
    };
    assert_eq!(ws_status, "429");
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(ids(&http(port, "GET", "/api/recordings", Some("fire-secret")).await.2), [fire.id.as_str()]);
    // One step drained: one more guess, and the address waits again.
    assert_eq!(http(port, "GET", "/api/recordings", Some("guess")).await.0, 401);
    assert_eq!(http(port, "GET", "/api/recordings", Some("fire-secret")).await.0, 429);
}

/// `roipd recordings ARGS` (the real binary); status, stdout, stderr.
fn recordings_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(common::BIN).arg("recordings").args(args).output().expect("run roipd recordings");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_recordings_cli_lists_with_filters_and_exports_without_touching_the_running_daemons_files() {
    let rec = tempfile::tempdir().unwrap();
    let config = Config::new("rec")
        .channel("ops")
        .channel("fire")
        .add(radio("radio-a", "a", "sim:tone:1000:-12"))
        .add(radio_on("fire", "radio-f", "f", "sim:tone:700:-12"))
        .add(Record::new(rec.path().to_str().unwrap()).set("min_length_ms", 200))
        .toml();
    let mut d = Daemon::start(&config);
    d.wait_for("running", WAIT, |d| d.stderr().contains("roipd running"));
    for x in ["a", "f"] {
        d.drive(&format!("{x}-cor"), true);
        std::thread::sleep(Duration::from_millis(700));
        d.drive(&format!("{x}-cor"), false);
        std::thread::sleep(Duration::from_millis(300));
    }
    d.wait_for("two recordings", WAIT, |_| metas(rec.path()).len() == 2);
    let all = metas(rec.path());
    let ops = all.iter().find(|m| m.channel == "ops").unwrap().clone();
    let fire = all.iter().find(|m| m.channel == "fire").unwrap().clone();
    let cfg = d.config_path();
    let cfg = cfg.to_str().unwrap();

    // A transmission in progress: its part is the writer's, and listing leaves it alone.
    d.drive("a-cor", true);
    d.wait_for("a part on disk", WAIT, |_| {
        std::fs::read_dir(rec.path())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".opus.part"))
    });

    let (code, out, err) = recordings_cli(&["list", "-c", cfg]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 4, "header, two rows, count:\n{out}");
    assert!(rows[1].starts_with(&fire.id) && rows[2].starts_with(&ops.id), "newest first:\n{out}");
    assert!(rows[2].contains("radio-a") && rows[2].contains("released") && rows[2].contains(&ops.start), "{out}");
    assert_eq!(rows[3], "2 recordings");
    assert!(
        std::fs::read_dir(rec.path())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".opus.part")),
        "the part in progress is still there"
    );

    let json = |args: &[&str]| -> Vec<String> {
        let (code, out, err) = recordings_cli(&[&["list", "--json", "-c", cfg][..], args].concat());
        assert_eq!(code, 0, "{args:?}: {err}");
        ids(out.as_bytes())
    };
    assert_eq!(json(&[]), [fire.id.as_str(), ops.id.as_str()]);
    assert_eq!(json(&["--channel", "ops"]), [ops.id.as_str()]);
    assert_eq!(json(&["--talker", "radio-f"]), [fire.id.as_str()]);
    assert!(json(&["--talker", "nobody"]).is_empty());
    // Time filters in RFC 3339, with any offset: fire started after ops.
    let at = |ms: u64| roipd::fleet::protocol::rfc3339_millis(ms);
    assert_eq!(json(&["--since", &at(ops.start_unix_ms + 1)]), [fire.id.as_str()]);
    assert_eq!(json(&["--until", &at(fire.start_unix_ms - 1)]), [ops.id.as_str()]);
    assert_eq!(json(&["--since", &ops.start, "--until", &ops.start]), [ops.id.as_str()]);
    let plus_one = at(ops.start_unix_ms).replace('Z', "+00:00");
    assert_eq!(json(&["--since", &plus_one, "--channel", "ops"]), [ops.id.as_str()]);
    let listed: serde_json::Value =
        serde_json::from_str(&recordings_cli(&["list", "--json", "--dir", rec.path().to_str().unwrap()]).1).unwrap();
    assert_eq!(serde_json::from_value::<RecordingMeta>(listed["recordings"][1].clone()).unwrap(), ops);

    // Export: the file as written; never over an existing file.
    let out_dir = tempfile::tempdir().unwrap();
    let target = out_dir.path().join("ops.opus");
    let (code, _, err) = recordings_cli(&["export", &ops.id, "--out", target.to_str().unwrap(), "-c", cfg]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), std::fs::read(rec.path().join(&ops.file)).unwrap());
    let (code, _, err) = recordings_cli(&["export", &fire.id, "--out", target.to_str().unwrap(), "-c", cfg]);
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), std::fs::read(rec.path().join(&ops.file)).unwrap(), "kept");

    // Clear errors, non-zero exits.
    let (code, _, err) = recordings_cli(&["export", "20991231T000000000Z-ops", "--out", "/tmp/x.opus", "-c", cfg]);
    assert_eq!(code, 1);
    assert!(err.contains("no recording \"20991231T000000000Z-ops\""), "{err}");
    let (code, _, err) = recordings_cli(&["list", "--dir", "/nonexistent/recordings"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/recordings") && err.contains("No such file"), "{err}");
    let (code, _, err) = recordings_cli(&["list", "-c", cfg, "--since", "yesterday"]);
    assert_eq!(code, 1);
    assert!(err.contains("--since \"yesterday\": not an RFC 3339 time"), "{err}");
    let (code, _, err) = recordings_cli(&["list"]);
    assert_eq!(code, 1);
    assert!(err.contains("-c CONFIG or --dir DIR"), "{err}");
    let bare = out_dir.path().join("bare.toml");
    std::fs::write(&bare, Config::new("bare").channel("ops").add(radio("radio-a", "a", "sim:silence")).toml()).unwrap();
    let (code, _, err) = recordings_cli(&["list", "-c", bare.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("no [record] table"), "{err}");

    d.drive("a-cor", false);
    d.wait_for("the third recording", WAIT, |_| metas(rec.path()).len() == 3);
}
