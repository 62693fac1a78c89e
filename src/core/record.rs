//! Recording of every transmission on a channel, as the Opus packets the box forwards: one Ogg
//! Opus file per transmission (RFC 7845), no decoding, no re-encoding. Sans-IO, like every
//! core: the driver tells it who took and who left the floor and hands it each packet of the
//! channel's stream with the `Instant` it arrived; out come the bytes of each file and, when
//! the transmission ends, its metadata. Writing them somewhere is the driver's business.
//!
//! **One file per transmission.** A transmission is one holding of the floor: it starts when a
//! talker takes it and ends when the talker releases it, is preempted, times out (`max_talk`,
//! `tot`), goes silent (`no_media`) or its link is lost. The file starts with the first packet:
//! a holder that sent nothing leaves no file.
//!
//! **Right length.** The file's granule position counts 48 kHz samples of the stream's own
//! timestamps, so pauses play as pauses: a gap in the timestamps (a lost packet, DTX, a pause
//! between talk-spurts of one holder) is filled with Opus packets of zero-length frames
//! (RFC 6716 §3.2.1: the decoder conceals them, fading to silence) in the configuration of the
//! packet before it, at most 120 ms per packet (code 3, RFC 6716 §3.2.5). A fraction of a
//! frame left over is carried to the next gap, so the file never drifts by more than half a
//! frame. A timestamp jump larger than the wall-clock gap plus a second is a resync, not a
//! pause: the wall-clock gap is used. Packets reordered by up to [`REORDER_DEPTH`] packets are
//! put back in order; later or duplicate ones are dropped (counted).
//!
//! **Pages.** The Ogg paging (lacing, CRC) is the `ogg` crate's. A page is closed at least
//! every second of audio, so a crash loses at most that much of the transmission in progress.
//! Transmissions shorter than `min_length` never reach the driver: their first bytes are held
//! until the file is that long.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ogg::writing::{PacketWriteEndInfo, PacketWriter};
use serde::{Deserialize, Serialize};

use crate::codec::{packet_samples, SAMPLE_RATE};
use crate::fleet::protocol::rfc3339_millis;

/// Packets held back to put reordered ones in place (60 ms at 20 ms frames).
pub const REORDER_DEPTH: usize = 3;
/// A page is closed once it holds this much audio.
const PAGE_SAMPLES: u64 = SAMPLE_RATE as u64;
/// At most 120 ms of audio in one Opus packet.
const MAX_PACKET_SAMPLES: u32 = SAMPLE_RATE * 120 / 1000;
/// Version of the metadata format.
pub const META_VERSION: u32 = 1;

/// What kind of member talked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A radio port of this box (its receiver).
    Radio,
    /// A desk port of this box.
    Desk,
    /// A remote peer of this hub: a browser console or an edge box's port.
    Peer,
    /// Someone on the uplink hub's channel.
    Uplink,
    /// A patch carrying the talker of another channel.
    Patch,
}

/// How a transmission ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndCause {
    /// The talker let go (PTT released, squelch closed).
    Released,
    /// A higher priority talker took the floor.
    Preempted,
    /// The channel's maximum talk time (`max_talk_ms`) ran out.
    Tot,
    /// The talker sent no media for the channel's `no_media_ms`.
    NoMedia,
    /// The talker's link (peer, uplink) went away.
    LinkLost,
    /// The daemon stopped.
    Shutdown,
}

impl EndCause {
    pub fn as_str(self) -> &'static str {
        match self {
            EndCause::Released => "released",
            EndCause::Preempted => "preempted",
            EndCause::Tot => "tot",
            EndCause::NoMedia => "no_media",
            EndCause::LinkLost => "link_lost",
            EndCause::Shutdown => "shutdown",
        }
    }
}

/// Who took the floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TalkerInfo {
    pub name: String,
    pub source: SourceKind,
    pub priority: u8,
}

/// The metadata of one recorded transmission (its sidecar file, its index entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingMeta {
    pub version: u32,
    /// `<start, compact UTC>-<channel>`, e.g. `20261206T214343123Z-ops`: unique, sorts by time.
    pub id: String,
    pub channel: String,
    pub talker: String,
    pub source: SourceKind,
    pub priority: u8,
    /// RFC 3339 UTC of the first packet.
    pub start: String,
    pub start_unix_ms: u64,
    /// Length of the file's audio.
    pub duration_ms: u64,
    pub end: EndCause,
    /// The Ogg Opus file, relative to the recording directory.
    pub file: String,
    /// Opus packets as received.
    pub packets: u64,
    /// Audio filled in for lost packets and pauses.
    pub filled_ms: u64,
    /// Packets dropped: duplicates, later than the reorder window, unreadable.
    pub dropped_packets: u64,
    /// Size of the file (set by the writer).
    #[serde(default)]
    pub bytes: u64,
    /// The writer lost part of the file (its queue was full or the disk was): it plays up to
    /// the loss.
    #[serde(default)]
    pub truncated: bool,
}

/// What the driver must write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutput {
    /// A new file `id` (`<id>.opus`) with its first bytes. Only once it is `min_length` long.
    Begin { id: String, channel: String, bytes: Vec<u8> },
    /// More bytes of file `id`; `seq` counts the chunks of a file from 1 (Begin is 0), so a
    /// writer that lost one knows.
    Data { id: String, seq: u32, bytes: Vec<u8> },
    /// The last bytes of file `meta.id` (its final page) and its metadata: the file is whole.
    End { meta: RecordingMeta, seq: u32, bytes: Vec<u8> },
}

#[derive(Debug, Clone)]
pub struct RecordConfig {
    /// Shorter transmissions are not kept (kerchunks).
    pub min_length: Duration,
}

impl Default for RecordConfig {
    fn default() -> Self {
        Self { min_length: Duration::from_millis(500) }
    }
}

/// A packet of the channel's stream, as the recorder needs it.
#[derive(Debug, Clone)]
struct Packet {
    at: Instant,
    timestamp: u32,
    payload: Vec<u8>,
}

/// The file being made.
struct File {
    id: String,
    start_unix_ms: u64,
    serial: u32,
    writer: PacketWriter<'static, Vec<u8>>,
    /// Samples written (the granule position of the last written packet).
    granule: u64,
    next_page: u64,
    /// The newest packet, written when the next one comes (or with the end-of-stream flag).
    held: Option<(Vec<u8>, u32)>,
    /// The timestamp the packet after the held one should have.
    next_ts: u32,
    last_at: Instant,
    /// Samples of gap not yet filled (a fraction of a frame, either sign).
    residual: i64,
    packets: u64,
    filled: u64,
    /// Bytes not yet handed out because the file is still shorter than `min_length`.
    pending: Option<Vec<u8>>,
    seq: u32,
}

struct Take {
    talker: TalkerInfo,
    floor_at: Instant,
    floor_unix_ms: u64,
    /// Sorted by timestamp.
    reorder: Vec<Packet>,
    file: Option<File>,
    dropped: u64,
}

/// The recorder of one channel.
pub struct ChannelRecorder {
    channel: String,
    config: RecordConfig,
    take: Option<Take>,
    out: VecDeque<RecordOutput>,
    /// Transmissions not kept for being shorter than `min_length`.
    short: u64,
}

impl ChannelRecorder {
    pub fn new(channel: &str, config: RecordConfig) -> Self {
        Self { channel: channel.to_string(), config, take: None, out: VecDeque::new(), short: 0 }
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Whether a transmission is being recorded (a talker holds the floor).
    pub fn active(&self) -> bool {
        self.take.is_some()
    }

    /// Transmissions left out for being shorter than `min_length`.
    pub fn short_skipped(&self) -> u64 {
        self.short
    }

    /// `talker` took the floor at `now`, which is `unix_ms` on the wall clock. A transmission
    /// still open ends as released.
    pub fn floor_taken(&mut self, now: Instant, unix_ms: u64, talker: TalkerInfo) {
        self.floor_ended(now, EndCause::Released);
        self.take =
            Some(Take { talker, floor_at: now, floor_unix_ms: unix_ms, reorder: Vec::new(), file: None, dropped: 0 });
    }

    /// The transmission ended (the floor went idle or to someone else).
    pub fn floor_ended(&mut self, _now: Instant, cause: EndCause) {
        let Some(mut take) = self.take.take() else { return };
        for p in std::mem::take(&mut take.reorder) {
            self.process(&mut take, p);
        }
        let Some(mut file) = take.file.take() else { return };
        if let Some((payload, samples)) = file.held.take() {
            file.granule += u64::from(samples);
            let _ = file.writer.write_packet(payload, file.serial, PacketWriteEndInfo::EndStream, file.granule);
        }
        if file.pending.is_some() {
            // Never begun: shorter than `min_length`, nothing reached the driver.
            self.short += 1;
            return;
        }
        let bytes = std::mem::take(file.writer.inner_mut());
        let meta = self.meta(&take, &file, cause);
        file.seq += 1;
        self.out.push_back(RecordOutput::End { meta, seq: file.seq, bytes });
    }

    /// A packet of the channel's stream (as forwarded, after re-stamping), arrived at `now`.
    /// Ignored while nobody holds the floor.
    pub fn packet(&mut self, now: Instant, timestamp: u32, payload: &[u8]) {
        let Some(mut take) = self.take.take() else { return };
        let anchor = take.file.as_ref().map_or(timestamp, |f| f.next_ts);
        let key = |ts: u32| ts.wrapping_sub(anchor) as i32;
        let at = take.reorder.partition_point(|p| key(p.timestamp) <= key(timestamp));
        take.reorder.insert(at, Packet { at: now, timestamp, payload: payload.to_vec() });
        if take.reorder.len() > REORDER_DEPTH {
            let p = take.reorder.remove(0);
            self.process(&mut take, p);
        }
        self.take = Some(take);
    }

    pub fn poll_output(&mut self) -> Option<RecordOutput> {
        self.out.pop_front()
    }

    fn min_samples(&self) -> u64 {
        (self.config.min_length.as_millis() as u64).saturating_mul(u64::from(SAMPLE_RATE)) / 1000
    }

    fn meta(&self, take: &Take, file: &File, end: EndCause) -> RecordingMeta {
        RecordingMeta {
            version: META_VERSION,
            id: file.id.clone(),
            channel: self.channel.clone(),
            talker: take.talker.name.clone(),
            source: take.talker.source,
            priority: take.talker.priority,
            start: rfc3339_millis(file.start_unix_ms),
            start_unix_ms: file.start_unix_ms,
            duration_ms: file.granule * 1000 / u64::from(SAMPLE_RATE),
            end,
            file: format!("{}.opus", file.id),
            packets: file.packets,
            filled_ms: file.filled * 1000 / u64::from(SAMPLE_RATE),
            dropped_packets: take.dropped,
            bytes: 0,
            truncated: false,
        }
    }

    /// One packet, in timestamp order.
    fn process(&mut self, take: &mut Take, p: Packet) {
        let Ok(samples) = packet_samples(&p.payload) else {
            take.dropped += 1;
            return;
        };
        let samples = samples as u32;
        if take.file.is_none() {
            take.file = Some(self.open(take, &p));
        }
        let Some(file) = take.file.as_mut() else { return };
        let (held_samples, held_toc) = file.held.as_ref().map_or((0, p.payload[0]), |(h, s)| (*s, h[0]));
        let mut gap = i64::from(p.timestamp.wrapping_sub(file.next_ts) as i32);
        if file.held.is_some() && gap < 0 {
            take.dropped += 1; // duplicate or too late to put in place
            return;
        }
        // A jump the wall clock does not show is a resync: the arrival gap counts instead.
        let wall = (p.at.saturating_duration_since(file.last_at).as_micros() as i64) * i64::from(SAMPLE_RATE)
            / 1_000_000
            - i64::from(held_samples);
        if gap > wall.max(0) + i64::from(SAMPLE_RATE) {
            gap = wall.max(0);
        }
        file.last_at = p.at;
        if let Some((payload, held)) = file.held.take() {
            write(file, payload, held);
        }
        if gap > 0 {
            fill(file, held_toc, gap);
        }
        file.held = Some((p.payload, samples));
        file.next_ts = p.timestamp.wrapping_add(samples);
        file.packets += 1;
        let bytes = std::mem::take(file.writer.inner_mut());
        match file.pending.as_mut() {
            Some(pending) => {
                pending.extend_from_slice(&bytes);
                if file.granule + u64::from(samples) >= self.min_samples() {
                    let bytes = file.pending.take().unwrap_or_default();
                    self.out.push_back(RecordOutput::Begin {
                        id: file.id.clone(),
                        channel: self.channel.clone(),
                        bytes,
                    });
                }
            }
            None if !bytes.is_empty() => {
                file.seq += 1;
                self.out.push_back(RecordOutput::Data { id: file.id.clone(), seq: file.seq, bytes });
            }
            None => {}
        }
    }

    /// A new file whose first packet is `p`: its id and its Ogg Opus headers.
    fn open(&self, take: &Take, p: &Packet) -> File {
        let since_floor = p.at.saturating_duration_since(take.floor_at).as_millis() as u64;
        let start_unix_ms = take.floor_unix_ms + since_floor;
        let start = rfc3339_millis(start_unix_ms);
        let compact: String = start.chars().filter(|c| !matches!(c, '-' | ':' | '.')).collect();
        let id = format!("{compact}-{}", self.channel);
        let serial = fnv32(id.as_bytes());
        let mut writer = PacketWriter::new(Vec::new());
        let _ = writer.write_packet(opus_head(), serial, PacketWriteEndInfo::EndPage, 0);
        let tags = opus_tags(&[
            ("TITLE", &self.channel),
            ("ARTIST", &take.talker.name),
            ("DATE", &start),
            ("ROIPD_CHANNEL", &self.channel),
            ("ROIPD_TALKER", &take.talker.name),
            ("ROIPD_SOURCE", &format!("{:?}", take.talker.source).to_lowercase()),
            ("ROIPD_PRIORITY", &take.talker.priority.to_string()),
        ]);
        let _ = writer.write_packet(tags, serial, PacketWriteEndInfo::EndPage, 0);
        File {
            id,
            start_unix_ms,
            serial,
            writer,
            granule: 0,
            next_page: PAGE_SAMPLES,
            held: None,
            next_ts: p.timestamp,
            last_at: p.at,
            residual: 0,
            packets: 0,
            filled: 0,
            pending: Some(Vec::new()),
            seq: 0,
        }
    }
}

/// Write one packet of `samples`, closing the page once it holds a second of audio.
fn write(file: &mut File, payload: Vec<u8>, samples: u32) {
    file.granule += u64::from(samples);
    let end = if file.granule >= file.next_page {
        file.next_page = file.granule + PAGE_SAMPLES;
        PacketWriteEndInfo::EndPage
    } else {
        PacketWriteEndInfo::NormalPacket
    };
    let _ = file.writer.write_packet(payload, file.serial, end, file.granule);
}

/// Fill `gap` samples (plus the residual of earlier gaps) with zero-length frames of the
/// configuration in `toc`, to the nearest whole frame.
fn fill(file: &mut File, toc: u8, gap: i64) {
    let frame = i64::from(frame_samples(toc));
    let want = gap + file.residual;
    let frames = if want > 0 { (want + frame / 2) / frame } else { 0 };
    file.residual = want - frames * frame;
    let per_packet = (i64::from(MAX_PACKET_SAMPLES) / frame).clamp(1, 48);
    let mut left = frames;
    while left > 0 {
        let m = left.min(per_packet);
        left -= m;
        // Code 3, CBR, no padding: M frames of 0 bytes each.
        let packet = vec![(toc & !0x03) | 0x03, m as u8];
        let samples = (m * frame) as u32;
        file.filled += u64::from(samples);
        write(file, packet, samples);
    }
}

/// Samples of one frame in the configuration of a TOC byte (RFC 6716 §3.1).
fn frame_samples(toc: u8) -> u32 {
    // The same table as `packet_samples`, read from a one-frame packet.
    packet_samples(&[toc & !0x03]).map_or(960, |s| s as u32)
}

/// The identification header (RFC 7845 §5.1): mono, no pre-skip (the file starts mid-stream at
/// a packet boundary; every decoded sample is the talker's), 48 kHz, family 0.
fn opus_head() -> Vec<u8> {
    let mut h = b"OpusHead".to_vec();
    h.push(1); // version
    h.push(1); // channels
    h.extend_from_slice(&0u16.to_le_bytes()); // pre-skip
    h.extend_from_slice(&SAMPLE_RATE.to_le_bytes());
    h.extend_from_slice(&0i16.to_le_bytes()); // output gain
    h.push(0); // mapping family
    h
}

/// The comment header (RFC 7845 §5.2).
fn opus_tags(tags: &[(&str, &str)]) -> Vec<u8> {
    let vendor = concat!("roipd ", env!("CARGO_PKG_VERSION"));
    let mut h = b"OpusTags".to_vec();
    h.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    h.extend_from_slice(vendor.as_bytes());
    h.extend_from_slice(&(tags.len() as u32).to_le_bytes());
    for (k, v) in tags {
        let c = format!("{k}={v}");
        h.extend_from_slice(&(c.len() as u32).to_le_bytes());
        h.extend_from_slice(c.as_bytes());
    }
    h
}

fn fnv32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests;

/// A recorder's whole file of `n` 20 ms packets of a 1 kHz tone and its length in ms (tests).
#[cfg(test)]
pub(crate) fn test_file(n: usize) -> (Vec<u8>, u64) {
    tests::tone_file(n)
}
