//! Recording driver: feeds each recorded channel's [`ChannelRecorder`] (the sans-IO core in
//! `core::record`) from the channel router, and writes what comes out on a thread of its own.
//!
//! **Off the media path.** The router hands the core's output to the writer through a bounded
//! queue with `try_send`: when the writer falls behind (a slow or stalled disk), recording data
//! is dropped and counted, and voice never waits. A file that lost a chunk is abandoned (its
//! chunks are numbered), never written with a hole.
//!
//! **The index is the directory.** Each finished transmission is `<id>.opus` plus its metadata
//! `<id>.json`, and the index is rebuilt from those files when the writer starts. A file is
//! written as `<id>.opus.part`; when it ends, the part is fsynced, the metadata is written to
//! a temporary file, fsynced and renamed into place, and then the part is renamed to `.opus`
//! (and the directory fsynced). A crash at any point leaves whole recordings and at most the
//! transmission in progress: on start, metadata whose part is complete finishes the rename,
//! a part without metadata (the transmission in progress) is removed, and metadata without
//! audio is dropped. No database to corrupt, no C library to cross-compile (see
//! docs/recording.md for the choice).
//!
//! **Bad disks.** A write that fails (disk full, read-only, gone) abandons the file in
//! progress, reports `record_failed` (event and the retained status), and every later
//! transmission tries again: the first one that is written whole reports `record_resumed`.
//!
//! **Retention.** After each recording and every minute, the oldest recordings go while the
//! total is above `max_total_mb` or they are older than `max_age_days`. Files being written
//! are parts, never in the index, so never deleted; a file being read (fetched) stays
//! readable by whoever has it open (unlinking removes only the name).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use crate::config::RecordConfig;
use crate::core::record::{
    ChannelRecorder, EndCause, RecordConfig as CoreConfig, RecordOutput, RecordingMeta, TalkerInfo,
};
use crate::daemon::report::Reporter;
use crate::fleet::protocol::RecordingStatus;
use crate::fleet::{Event, EventKind};

/// Chunks waiting for the writer: a page a second per busy channel, so minutes of a stalled
/// disk before anything is dropped.
pub const QUEUE: usize = 512;
/// How often the writer applies retention by age.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// Counters shared by the router side and the writer.
#[derive(Debug, Default)]
pub struct Stats {
    /// Chunks dropped because the writer's queue was full.
    pub dropped: AtomicU64,
    /// Recordings written whole since start.
    pub written: AtomicU64,
}

/// The index of finished recordings, by id (ids sort by start time).
#[derive(Debug, Default)]
pub struct Index {
    pub entries: BTreeMap<String, RecordingMeta>,
    pub total_bytes: u64,
}

impl Index {
    fn insert(&mut self, meta: RecordingMeta) {
        self.total_bytes += meta.bytes;
        if let Some(old) = self.entries.insert(meta.id.clone(), meta) {
            self.total_bytes -= old.bytes;
        }
    }

    fn remove(&mut self, id: &str) -> Option<RecordingMeta> {
        let meta = self.entries.remove(id)?;
        self.total_bytes -= meta.bytes;
        Some(meta)
    }
}

/// What the hub's recordings API needs: the directory and the writer's index.
#[derive(Debug, Clone)]
pub struct RecordingsApi {
    pub dir: PathBuf,
    pub index: Arc<Mutex<Index>>,
}

impl RecordingsApi {
    /// Delete a recording: audio first, then metadata (as retention does), then the entry.
    pub fn delete(&self, id: &str) -> std::io::Result<()> {
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        let Some(meta) = index.entries.get(id).cloned() else { return Ok(()) };
        for path in [self.dir.join(&meta.file), self.dir.join(format!("{id}.json"))] {
            match fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        index.remove(id);
        Ok(())
    }
}

/// The router's side: one recorder per recorded channel and the writer's queue.
pub struct Recording {
    recorders: Vec<Option<ChannelRecorder>>,
    tx: Option<SyncSender<RecordOutput>>,
    stats: Arc<Stats>,
}

impl Recording {
    /// `channels`: the router's channel names, in its order.
    pub fn new(config: &RecordConfig, channels: &[String], tx: SyncSender<RecordOutput>, stats: Arc<Stats>) -> Self {
        let core = CoreConfig { min_length: config.min_length() };
        let recorders =
            channels.iter().map(|c| config.records(c).then(|| ChannelRecorder::new(c, core.clone()))).collect();
        Self { recorders, tx: Some(tx), stats }
    }

    pub fn floor_taken(&mut self, now: Instant, channel: usize, talker: TalkerInfo) {
        let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        if let Some(Some(r)) = self.recorders.get_mut(channel) {
            r.floor_taken(now, unix_ms, talker);
        }
        self.drain(channel);
    }

    pub fn floor_ended(&mut self, now: Instant, channel: usize, cause: EndCause) {
        if let Some(Some(r)) = self.recorders.get_mut(channel) {
            r.floor_ended(now, cause);
        }
        self.drain(channel);
    }

    /// A packet of `channel`'s stream as forwarded.
    pub fn packet(&mut self, now: Instant, channel: usize, timestamp: u32, payload: &[u8]) {
        if let Some(Some(r)) = self.recorders.get_mut(channel) {
            r.packet(now, timestamp, payload);
            self.drain(channel);
        }
    }

    /// The daemon stops: every open transmission ends (`shutdown`) and the writer is told
    /// there is nothing more.
    pub fn shutdown(&mut self, now: Instant) {
        for channel in 0..self.recorders.len() {
            self.floor_ended(now, channel, EndCause::Shutdown);
        }
        self.tx = None;
    }

    fn drain(&mut self, channel: usize) {
        let Some(Some(r)) = self.recorders.get_mut(channel) else { return };
        while let Some(out) = r.poll_output() {
            let Some(tx) = &self.tx else { continue };
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(out) {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The writer thread and what it shares.
pub struct Writer {
    pub index: Arc<Mutex<Index>>,
    pub stats: Arc<Stats>,
    pub dir: PathBuf,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    /// Wait (at most `grace`) for the writer to finish what is queued; its queue's senders
    /// must be gone (the router's [`Recording::shutdown`]).
    pub async fn join(self, grace: Duration) {
        let thread = self.thread;
        let done = tokio::task::spawn_blocking(move || thread.join());
        if tokio::time::timeout(grace, done).await.is_err() {
            warn!("recording: the writer did not finish in time");
        }
    }
}

/// Start the writer: the index (shared with its readers: the hub's API, desks replaying) is
/// rebuilt from `config.dir` (created if missing) before this returns. A directory that cannot
/// be made is reported (`record_failed`) and retried at the next transmission; it never stops
/// the daemon.
pub fn start(
    config: &RecordConfig,
    reporter: Reporter,
    index: Arc<Mutex<Index>>,
) -> (SyncSender<RecordOutput>, Writer) {
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let stats = Arc::new(Stats::default());
    let mut state = WriterState {
        dir: PathBuf::from(&config.dir),
        max_total: config.max_total_bytes(),
        max_age: config.max_age(),
        index: index.clone(),
        stats: stats.clone(),
        reporter,
        open: HashMap::new(),
        failed: None,
    };
    match fs::create_dir_all(&state.dir) {
        Ok(()) => {
            let scanned = scan(&state.dir);
            info!(dir = %state.dir.display(), recordings = scanned.entries.len(), bytes = scanned.total_bytes, "recording");
            *state.index.lock().unwrap_or_else(|e| e.into_inner()) = scanned;
            state.set_status();
            state.retention();
        }
        Err(e) => state.fail(None, &e),
    }
    let thread = std::thread::Builder::new()
        .name("record".into())
        .spawn(move || state.run(rx))
        .expect("spawning the recording thread");
    (tx, Writer { index, stats, dir: PathBuf::from(&config.dir), thread })
}

struct OpenFile {
    file: fs::File,
    channel: String,
    seq: u32,
    bytes: u64,
}

struct WriterState {
    dir: PathBuf,
    max_total: u64,
    max_age: Option<Duration>,
    index: Arc<Mutex<Index>>,
    stats: Arc<Stats>,
    reporter: Reporter,
    open: HashMap<String, OpenFile>,
    /// Why recording does not work now (`disk_full`, `io_error`), if it does not.
    failed: Option<(&'static str, String)>,
}

impl WriterState {
    fn run(mut self, rx: Receiver<RecordOutput>) {
        let mut last_retention = Instant::now();
        loop {
            match rx.recv_timeout(RETENTION_EVERY) {
                Ok(out) => self.handle(out),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if last_retention.elapsed() >= RETENTION_EVERY {
                last_retention = Instant::now();
                self.retention();
            }
        }
        for (id, _) in std::mem::take(&mut self.open) {
            let _ = fs::remove_file(self.part(&id));
        }
        debug!("recording writer stopped");
    }

    fn part(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.opus.part"))
    }

    fn handle(&mut self, out: RecordOutput) {
        match out {
            RecordOutput::Begin { id, channel, bytes } => {
                // A file of this channel still open lost its end in a full queue: abandon it.
                let stale: Vec<String> =
                    self.open.iter().filter(|(_, f)| f.channel == channel).map(|(i, _)| i.clone()).collect();
                for old in stale {
                    warn!(id = %old, "recording: abandoned (its end was lost)");
                    self.abandon(&old);
                }
                if let Err(e) = fs::create_dir_all(&self.dir) {
                    self.fail(None, &e);
                    return;
                }
                let created = fs::File::create(self.part(&id)).and_then(|mut f| f.write_all(&bytes).map(|()| f));
                match created {
                    Ok(file) => {
                        let open = OpenFile { file, channel, seq: 0, bytes: bytes.len() as u64 };
                        self.open.insert(id, open);
                    }
                    Err(e) => {
                        let _ = fs::remove_file(self.part(&id));
                        self.fail(None, &e);
                    }
                }
            }
            RecordOutput::Data { id, seq, bytes } => {
                self.append(&id, seq, &bytes);
            }
            RecordOutput::End { mut meta, seq, bytes } => {
                let id = meta.id.clone();
                if !self.append(&id, seq, &bytes) {
                    return;
                }
                let Some(open) = self.open.remove(&id) else { return };
                meta.bytes = open.bytes;
                match self.finish(&open.file, &meta) {
                    Ok(()) => {
                        info!(id = %meta.id, channel = %meta.channel, talker = %meta.talker, duration_ms = meta.duration_ms, end = meta.end.as_str(), bytes = meta.bytes, "recorded");
                        self.stats.written.fetch_add(1, Ordering::Relaxed);
                        self.index.lock().unwrap_or_else(|e| e.into_inner()).insert(meta.clone());
                        let mut event =
                            Event::new(EventKind::Recorded).channel(&meta.channel).reason(meta.end.as_str());
                        event.id = Some(meta.id.clone());
                        event.talker = Some(meta.talker.clone());
                        event.start = Some(meta.start.clone());
                        event.duration_ms = Some(meta.duration_ms);
                        self.reporter.event(event);
                        if let Some((reason, _)) = self.failed.take() {
                            info!(was = reason, "recording works again");
                            self.reporter.event(Event::new(EventKind::RecordResumed));
                        }
                        self.set_status();
                        self.retention();
                    }
                    Err(e) => {
                        let _ = fs::remove_file(self.dir.join(format!("{id}.json")));
                        let _ = fs::remove_file(self.part(&id));
                        self.fail(Some(&id), &e);
                    }
                }
            }
        }
    }

    /// Append chunk `seq` to an open file. False when the file is not open (any more): its
    /// start was lost, a chunk was lost (abandoned now), or writing failed.
    fn append(&mut self, id: &str, seq: u32, bytes: &[u8]) -> bool {
        let Some(open) = self.open.get_mut(id) else { return false };
        if seq != open.seq + 1 {
            warn!(%id, expected = open.seq + 1, got = seq, "recording: a chunk was lost (queue full); file abandoned");
            self.abandon(id);
            return false;
        }
        open.seq = seq;
        if bytes.is_empty() {
            return true;
        }
        match open.file.write_all(bytes) {
            Ok(()) => {
                open.bytes += bytes.len() as u64;
                true
            }
            Err(e) => {
                self.abandon(id);
                self.fail(Some(id), &e);
                false
            }
        }
    }

    fn abandon(&mut self, id: &str) {
        self.open.remove(id);
        let _ = fs::remove_file(self.part(id));
    }

    /// Make a whole recording durable: part fsynced, metadata in place, part renamed.
    fn finish(&self, file: &fs::File, meta: &RecordingMeta) -> std::io::Result<()> {
        file.sync_all()?;
        let json = serde_json::to_vec_pretty(meta).map_err(std::io::Error::other)?;
        let tmp = self.dir.join(format!("{}.json.tmp", meta.id));
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.dir.join(format!("{}.json", meta.id)))?;
        fs::rename(self.part(&meta.id), self.dir.join(&meta.file))?;
        fs::File::open(&self.dir)?.sync_all()
    }

    fn fail(&mut self, id: Option<&str>, e: &std::io::Error) {
        let reason = if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
            "disk_full"
        } else {
            "io_error"
        };
        let detail = format!("{}: {e}", self.dir.display());
        if self.failed.as_ref().is_some_and(|(r, _)| *r == reason) {
            debug!(?id, %detail, "recording still failing");
            return;
        }
        warn!(?id, reason, %detail, "recording stopped; the voice path is not affected, retrying at the next transmission");
        self.failed = Some((reason, detail.clone()));
        self.reporter.event(Event::new(EventKind::RecordFailed).reason(reason).detail(detail));
        self.set_status();
    }

    fn set_status(&self) {
        let Some(fleet) = self.reporter.fleet() else { return };
        let status = RecordingStatus {
            state: self.failed.as_ref().map_or("ok", |(r, _)| r).to_string(),
            detail: self.failed.as_ref().map(|(_, d)| d.clone()),
            dropped: self.stats.dropped.load(Ordering::Relaxed),
        };
        fleet.update_status(|s| s.recording = Some(status));
    }

    /// Delete the oldest recordings beyond the size and age limits.
    fn retention(&mut self) {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let max_age_ms = self.max_age.map(|a| a.as_millis() as u64);
        loop {
            let oldest = {
                let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
                let Some(meta) = index.entries.values().next() else { return };
                let too_old = max_age_ms.is_some_and(|a| now_ms.saturating_sub(meta.start_unix_ms) > a);
                if index.total_bytes <= self.max_total && !too_old {
                    return;
                }
                meta.clone()
            };
            // Audio first: a crash between the two leaves metadata without audio, dropped at
            // the next start, never audio nobody knows about.
            let audio = fs::remove_file(self.dir.join(&oldest.file));
            let json = fs::remove_file(self.dir.join(format!("{}.json", oldest.id)));
            if let Err(e) = audio.and(json) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!(id = %oldest.id, error = %e, "recording: cannot delete");
                }
            }
            info!(id = %oldest.id, "recording deleted (retention)");
            self.index.lock().unwrap_or_else(|e| e.into_inner()).remove(&oldest.id);
        }
    }
}

/// Rebuild the index from a recording directory, finishing or cleaning up what a crash left.
pub fn scan(dir: &Path) -> Index {
    scan_with(dir, true)
}

/// The index as the directory holds it, changing nothing (`roipd recordings`, which may run
/// beside the daemon: a part is the transmission in progress, and it is the writer's to
/// finish). A recording stopped between its two renames is listed once its part is renamed.
pub fn read_index(dir: &Path) -> Index {
    scan_with(dir, false)
}

fn scan_with(dir: &Path, repair: bool) -> Index {
    let mut index = Index::default();
    let Ok(entries) = fs::read_dir(dir) else { return index };
    let names: Vec<String> = entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect();
    let has = |n: &str| names.iter().any(|x| x == n);
    for name in &names {
        let path = dir.join(name);
        if name.ends_with(".json.tmp") {
            if repair {
                let _ = fs::remove_file(&path);
            }
        } else if let Some(id) = name.strip_suffix(".opus.part") {
            if repair && !has(&format!("{id}.json")) {
                info!(%id, "recording: the transmission in progress at the last stop is removed");
                let _ = fs::remove_file(&path);
            }
        } else if let Some(id) = name.strip_suffix(".json") {
            let meta = fs::read(&path).ok().and_then(|b| serde_json::from_slice::<RecordingMeta>(&b).ok());
            let Some(mut meta) = meta.filter(|m| m.id == id && m.file == format!("{id}.opus")) else {
                if repair {
                    warn!(file = %path.display(), "recording: unreadable metadata ignored");
                }
                continue;
            };
            let audio = dir.join(&meta.file);
            if repair && !audio.exists() && has(&format!("{id}.opus.part")) {
                // Stopped between the metadata and the rename: the part is whole (fsynced first).
                let _ = fs::rename(dir.join(format!("{id}.opus.part")), &audio);
            }
            match fs::metadata(&audio) {
                Ok(m) => {
                    meta.bytes = m.len();
                    index.insert(meta);
                }
                Err(_) if repair => {
                    let _ = fs::remove_file(&path);
                }
                Err(_) => {}
            }
        }
    }
    index
}

pub mod cli;
pub mod replay;

#[cfg(test)]
mod tests;
