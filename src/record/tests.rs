use std::time::Duration;

use super::*;
use crate::core::record::{SourceKind, META_VERSION};

fn config(dir: &Path) -> RecordConfig {
    crate::config::parse_str(
        &format!("device_id = \"t\"\n[channel.ops]\n[record]\ndir = \"{}\"\n", dir.display()),
        "t.toml",
    )
    .unwrap()
    .record
    .unwrap()
}

fn meta(id: &str, start_unix_ms: u64) -> RecordingMeta {
    RecordingMeta {
        version: META_VERSION,
        id: id.into(),
        channel: "ops".into(),
        talker: "radio1".into(),
        source: SourceKind::Radio,
        priority: 0,
        start: crate::fleet::protocol::rfc3339_millis(start_unix_ms),
        start_unix_ms,
        duration_ms: 1000,
        end: EndCause::Released,
        file: format!("{id}.opus"),
        packets: 50,
        filled_ms: 0,
        dropped_packets: 0,
        bytes: 0,
        truncated: false,
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// One whole file through the queue: Begin, Data, End.
fn send(tx: &SyncSender<RecordOutput>, id: &str, start: u64, size: usize) {
    let channel = "ops".to_string();
    tx.send(RecordOutput::Begin { id: id.into(), channel, bytes: vec![1; size / 2] }).unwrap();
    tx.send(RecordOutput::Data { id: id.into(), seq: 1, bytes: vec![2; size - size / 2] }).unwrap();
    tx.send(RecordOutput::End { meta: meta(id, start), seq: 2, bytes: Vec::new() }).unwrap();
}

async fn stop(tx: SyncSender<RecordOutput>, writer: Writer) -> Arc<Mutex<Index>> {
    drop(tx);
    let index = writer.index.clone();
    writer.join(Duration::from_secs(5)).await;
    index
}

#[tokio::test]
async fn finished_recordings_are_indexed_and_found_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, writer) = start(&config(dir.path()), Reporter::new(None), Default::default());
    let t = now_ms();
    send(&tx, "a", t, 1000);
    send(&tx, "b", t + 1, 3000);
    // A file that lost a chunk is abandoned, not written with a hole.
    tx.send(RecordOutput::Begin { id: "c".into(), channel: "ops".into(), bytes: vec![1; 10] }).unwrap();
    tx.send(RecordOutput::Data { id: "c".into(), seq: 2, bytes: vec![1; 10] }).unwrap();
    tx.send(RecordOutput::End { meta: meta("c", t + 2), seq: 3, bytes: Vec::new() }).unwrap();
    // The transmission in progress when the daemon stops.
    tx.send(RecordOutput::Begin { id: "d".into(), channel: "ops".into(), bytes: vec![1; 10] }).unwrap();
    let index = stop(tx, writer).await;
    let index = index.lock().unwrap();
    assert_eq!(index.entries.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(index.total_bytes, 4000);
    assert_eq!(fs::read(dir.path().join("b.opus")).unwrap().len(), 3000);
    let mut names: Vec<String> =
        fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["a.json", "a.opus", "b.json", "b.opus"]);
    let again = scan(dir.path());
    assert_eq!(again.entries, index.entries);
}

#[test]
fn a_crash_at_any_step_leaves_whole_recordings_and_no_half_index() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write_meta =
        |id: &str| fs::write(d.join(format!("{id}.json")), serde_json::to_vec(&meta(id, 1)).unwrap()).unwrap();
    // Whole.
    write_meta("a");
    fs::write(d.join("a.opus"), [0; 100]).unwrap();
    // Stopped after the metadata, before the rename: finished now.
    write_meta("b");
    fs::write(d.join("b.opus.part"), [0; 50]).unwrap();
    // Stopped while writing: the transmission in progress goes.
    fs::write(d.join("c.opus.part"), [0; 70]).unwrap();
    fs::write(d.join("c.json.tmp"), b"{\"trunc").unwrap();
    // Metadata whose audio retention already removed.
    write_meta("d");
    // Unreadable metadata is left alone and not indexed; audio nobody describes too.
    fs::write(d.join("e.json"), b"garbage").unwrap();
    fs::write(d.join("f.opus"), [0; 10]).unwrap();
    let index = scan(d);
    assert_eq!(index.entries.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(index.total_bytes, 150);
    let mut names: Vec<String> =
        fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["a.json", "a.opus", "b.json", "b.opus", "e.json", "f.opus"]);
}

#[tokio::test]
async fn retention_deletes_the_oldest_beyond_size_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_total_mb = 1;
    cfg.max_age_days = 1;
    // One too old already there.
    fs::write(dir.path().join("old.json"), serde_json::to_vec(&meta("old", now_ms() - 2 * 86_400_000)).unwrap())
        .unwrap();
    fs::write(dir.path().join("old.opus"), [0; 10]).unwrap();
    let (tx, writer) = start(&cfg, Reporter::new(None), Default::default());
    assert!(writer.index.lock().unwrap().entries.is_empty(), "too old: gone at start");
    let t = now_ms();
    for i in 0..5 {
        send(&tx, &format!("r{i}"), t + i, 300 * 1024);
    }
    let index = stop(tx, writer).await;
    let index = index.lock().unwrap();
    assert_eq!(index.entries.keys().collect::<Vec<_>>(), ["r2", "r3", "r4"]);
    assert!(!dir.path().join("r0.opus").exists() && !dir.path().join("r1.json").exists());
}

#[test]
fn a_full_queue_drops_and_counts_and_never_blocks() {
    let (tx, rx) = mpsc::sync_channel(2);
    let stats = Arc::new(Stats::default());
    let cfg = config(Path::new("/nonexistent"));
    let mut rec = Recording::new(&cfg, &["ops".to_string()], tx, stats.clone());
    let t = Instant::now();
    rec.floor_taken(t, 0, TalkerInfo { name: "r".into(), source: SourceKind::Radio, priority: 0 });
    let mut enc = crate::codec::Encoder::new(Default::default()).unwrap();
    for i in 0..300u32 {
        let mut out = vec![0; 1500];
        let n = enc.encode(&[0.1; 960], &mut out).unwrap();
        rec.packet(t + Duration::from_millis(20 * u64::from(i)), 0, 960 * i, &out[..n]);
    }
    rec.shutdown(t + Duration::from_secs(7));
    assert_eq!(rx.try_iter().count(), 2);
    assert!(stats.dropped.load(Ordering::Relaxed) >= 4, "{:?}", stats);
}
