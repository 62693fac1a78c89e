use std::io::Cursor;
use std::time::{Duration, Instant};

use super::*;
use crate::codec::{Decoder, Encoder, EncoderConfig};
use crate::dsp::test_util::{rms_db, sine_from};

const FRAME: u32 = 960;

fn talker() -> TalkerInfo {
    TalkerInfo { name: "radio1".into(), source: SourceKind::Radio, priority: 0 }
}

/// Real Opus packets of a 1 kHz tone, 20 ms each.
fn tone_packets(n: usize) -> Vec<Vec<u8>> {
    let mut enc = Encoder::new(EncoderConfig::default()).unwrap();
    (0..n)
        .map(|i| {
            let pcm = sine_from(1000.0, 0.3, i * FRAME as usize, FRAME as usize);
            let mut out = vec![0; 1500];
            let len = enc.encode(&pcm, &mut out).unwrap();
            out.truncate(len);
            out
        })
        .collect()
}

/// Everything the recorder handed out, file by file: (meta, bytes).
fn files(rec: &mut ChannelRecorder) -> Vec<(Option<RecordingMeta>, Vec<u8>)> {
    let mut files: Vec<(String, Option<RecordingMeta>, Vec<u8>, u32)> = Vec::new();
    while let Some(out) = rec.poll_output() {
        match out {
            RecordOutput::Begin { id, bytes, .. } => files.push((id, None, bytes, 0)),
            RecordOutput::Data { id, seq, bytes } => {
                let f = files.iter_mut().find(|f| f.0 == id).expect("data for a file never begun");
                assert_eq!(seq, f.3 + 1, "chunks in order");
                f.3 = seq;
                f.2.extend_from_slice(&bytes);
            }
            RecordOutput::End { meta, seq, bytes } => {
                let f = files.iter_mut().find(|f| f.0 == meta.id).expect("end of a file never begun");
                assert_eq!(seq, f.3 + 1, "chunks in order");
                f.2.extend_from_slice(&bytes);
                f.1 = Some(meta);
            }
        }
    }
    files.into_iter().map(|(_, m, b, _)| (m, b)).collect()
}

/// The packets of an Ogg Opus file, with the last granule position, checking the page flags.
fn parse(bytes: &[u8]) -> (Vec<Vec<u8>>, u64) {
    let mut r = ogg::PacketReader::new(Cursor::new(bytes.to_vec()));
    let mut packets = Vec::new();
    let mut granule = 0;
    let mut eos = false;
    while let Some(p) = r.read_packet().expect("valid Ogg") {
        assert!(!eos, "nothing after the end of stream");
        granule = p.absgp_page();
        eos = p.last_in_stream();
        packets.push(p.data);
    }
    assert!(eos, "the last page carries end-of-stream");
    assert_eq!(&packets[0][..8], b"OpusHead");
    assert_eq!(&packets[1][..8], b"OpusTags");
    (packets.split_off(2), granule)
}

/// Decode the audio packets as opusdec would (zero-length frames conceal).
fn decode(packets: &[Vec<u8>]) -> Vec<f32> {
    let mut dec = Decoder::new().unwrap();
    let mut pcm = Vec::new();
    for p in packets {
        let mut out = vec![0.0; 5760];
        let n = dec.decode(p, &mut out).unwrap();
        pcm.extend_from_slice(&out[..n]);
    }
    pcm
}

/// Feed packets 20 ms apart from `t0`, with `skip` left out (lost).
fn feed(rec: &mut ChannelRecorder, t0: Instant, ts0: u32, packets: &[Vec<u8>], skip: impl Fn(usize) -> bool) {
    for (i, p) in packets.iter().enumerate() {
        if !skip(i) {
            rec.packet(t0 + Duration::from_millis(20 * i as u64), ts0.wrapping_add(FRAME * i as u32), p);
        }
    }
}

#[test]
fn a_transmission_is_one_file_of_its_length_with_its_metadata() {
    let t0 = Instant::now();
    let mut rec = ChannelRecorder::new("ops", RecordConfig::default());
    let packets = tone_packets(100);
    rec.floor_taken(t0, 1_765_057_423_100, TalkerInfo { priority: 100, ..talker() });
    // The first packet 40 ms after the grant; timestamps wrap through u32::MAX on the way.
    feed(&mut rec, t0 + Duration::from_millis(40), u32::MAX - 10 * FRAME, &packets, |_| false);
    rec.floor_ended(t0 + Duration::from_secs(3), EndCause::Preempted);
    let files = files(&mut rec);
    assert_eq!(files.len(), 1);
    let (meta, bytes) = &files[0];
    let meta = meta.as_ref().expect("ended");
    assert_eq!(meta.id, "20251206T214343140Z-ops");
    assert_eq!(meta.start, "2025-12-06T21:43:43.140Z");
    assert_eq!((meta.channel.as_str(), meta.talker.as_str(), meta.priority), ("ops", "radio1", 100));
    assert_eq!(meta.source, SourceKind::Radio);
    assert_eq!(meta.end, EndCause::Preempted);
    assert_eq!((meta.duration_ms, meta.packets, meta.filled_ms, meta.dropped_packets), (2000, 100, 0, 0));
    let (audio, granule) = parse(bytes);
    assert_eq!(granule, 96_000);
    assert_eq!(audio, packets, "the packets as forwarded, not re-encoded");
    let pcm = decode(&audio);
    assert_eq!(pcm.len(), 96_000);
    assert!(rms_db(&pcm[48_000..]) > -14.0, "the tone: {:.1} dB", rms_db(&pcm[48_000..]));
    // JSON round trip of the sidecar.
    let json = serde_json::to_string(meta).unwrap();
    assert!(json.contains("\"end\":\"preempted\"") && json.contains("\"source\":\"radio\""), "{json}");
    assert_eq!(&serde_json::from_str::<RecordingMeta>(&json).unwrap(), meta);
}

#[test]
fn lost_packets_are_filled_and_the_file_keeps_its_length() {
    let t0 = Instant::now();
    let mut rec = ChannelRecorder::new("ops", RecordConfig::default());
    let packets = tone_packets(100);
    rec.floor_taken(t0, 0, talker());
    // 5 lost in a row and then every 10th.
    feed(&mut rec, t0, 5000, &packets, |i| (40..45).contains(&i) || (i > 50 && i % 10 == 3));
    rec.floor_ended(t0 + Duration::from_secs(2), EndCause::Released);
    let files = files(&mut rec);
    let (meta, bytes) = &files[0];
    let meta = meta.as_ref().unwrap();
    assert_eq!((meta.duration_ms, meta.packets, meta.filled_ms), (2000, 90, 200));
    let (audio, granule) = parse(bytes);
    assert_eq!(granule, 96_000);
    assert!(audio.iter().any(|p| p.len() == 2 && p[0] & 3 == 3 && p[1] == 5), "one packet of 5 empty frames");
    assert_eq!(decode(&audio).len(), 96_000, "libopus decodes the filled frames (concealment)");
}

#[test]
fn a_pause_between_talk_spurts_is_kept_and_a_timestamp_jump_is_not() {
    let t0 = Instant::now();
    let mut rec = ChannelRecorder::new("ops", RecordConfig::default());
    let packets = tone_packets(50);
    rec.floor_taken(t0, 0, talker());
    feed(&mut rec, t0, 0, &packets[..25], |_| false);
    // 1.01 s pause (wall clock and timestamps agree), not a multiple of a frame.
    let t1 = t0 + Duration::from_millis(500 + 1010);
    feed(&mut rec, t1, 25 * FRAME + 48_480, &packets[25..], |_| false);
    // A jump of 100 s in the timestamps 20 ms later: a resync, not 100 s of silence.
    let t2 = t1 + Duration::from_millis(500 + 20);
    rec.packet(t2, 4_800_000, &packets[0]);
    rec.floor_ended(t2, EndCause::Tot);
    let files = files(&mut rec);
    let meta = files[0].0.as_ref().unwrap();
    let (audio, granule) = parse(&files[0].1);
    // 51 packets; 1010 ms of pause is 50.5 frames: 51 filled, and the half frame too many is
    // taken from the next gap (20 ms between the last two, less 10 ms: one frame, rounded).
    assert_eq!(meta.packets, 51);
    assert_eq!(granule, 51 * 960 + 51 * 960 + 960, "{granule}");
    assert_eq!(meta.end, EndCause::Tot);
    assert_eq!(decode(&audio).len() as u64, granule);
}

#[test]
fn rounding_never_drifts_by_more_than_half_a_frame() {
    let t0 = Instant::now();
    let mut rec = ChannelRecorder::new("ops", RecordConfig::default());
    let p = tone_packets(1).remove(0);
    rec.floor_taken(t0, 0, talker());
    // 20 spurts of one packet, each 30 ms (1.5 frames) after the end of the one before.
    let mut ts = 0u32;
    for i in 0..20u64 {
        rec.packet(t0 + Duration::from_millis(50 * i), ts, &p);
        ts += FRAME + 1440;
    }
    rec.floor_ended(t0 + Duration::from_secs(2), EndCause::Released);
    let files = files(&mut rec);
    let (_, granule) = parse(&files[0].1);
    let exact = 19 * (960 + 1440) + 960;
    assert!((granule as i64 - exact as i64).abs() <= 480, "{granule} vs {exact}");
}

#[test]
fn reordered_packets_are_put_back_and_duplicates_dropped() {
    let t0 = Instant::now();
    let packets = tone_packets(50);
    let mut order: Vec<usize> = (0..50).collect();
    order.swap(10, 11);
    order.swap(20, 22);
    let mut rec = ChannelRecorder::new("ops", RecordConfig::default());
    rec.floor_taken(t0, 0, talker());
    for (k, &i) in order.iter().enumerate() {
        rec.packet(t0 + Duration::from_millis(20 * k as u64), FRAME * i as u32, &packets[i]);
        if i == 30 {
            rec.packet(t0 + Duration::from_millis(20 * k as u64), FRAME * i as u32, &packets[i]);
        }
    }
    // Far too late: its place is written already.
    rec.packet(t0 + Duration::from_millis(1000), FRAME * 5, &packets[5]);
    rec.packet(t0 + Duration::from_millis(1000), 0, &[]);
    rec.floor_ended(t0 + Duration::from_secs(1), EndCause::Released);
    let files = files(&mut rec);
    let meta = files[0].0.as_ref().unwrap();
    let (audio, granule) = parse(&files[0].1);
    assert_eq!(audio, packets);
    assert_eq!(granule, 48_000);
    assert_eq!((meta.packets, meta.dropped_packets, meta.filled_ms), (50, 3, 0));
}

#[test]
fn short_and_silent_transmissions_leave_no_file() {
    let t0 = Instant::now();
    let packets = tone_packets(30);
    let mut rec = ChannelRecorder::new("ops", RecordConfig { min_length: Duration::from_millis(500) });
    rec.floor_taken(t0, 0, talker());
    feed(&mut rec, t0, 0, &packets[..24], |_| false); // 480 ms
    rec.floor_ended(t0 + Duration::from_millis(500), EndCause::Released);
    rec.floor_taken(t0 + Duration::from_secs(1), 1000, talker());
    rec.floor_ended(t0 + Duration::from_secs(6), EndCause::NoMedia);
    assert_eq!(rec.poll_output(), None);
    assert_eq!(rec.short_skipped(), 1);
    // Nothing reaches the driver before the file is min_length long (the reorder window holds
    // three packets back); then all of it.
    rec.floor_taken(t0 + Duration::from_secs(7), 7000, talker());
    let t = t0 + Duration::from_secs(7);
    feed(&mut rec, t, 0, &packets[..27], |_| false);
    assert_eq!(rec.poll_output(), None);
    feed(&mut rec, t, 0, &packets[..28], |i| i < 27);
    assert!(matches!(rec.poll_output(), Some(RecordOutput::Begin { .. })));
    // Packets with nobody holding the floor are ignored; a new talker ends the last file.
    rec.floor_taken(t + Duration::from_secs(1), 8000, TalkerInfo { name: "console@web".into(), ..talker() });
    let ended: Vec<_> = std::iter::from_fn(|| rec.poll_output()).collect();
    assert!(
        matches!(ended.last(), Some(RecordOutput::End { meta, .. }) if meta.duration_ms == 560 && meta.end == EndCause::Released),
        "{ended:?}"
    );
    rec.floor_ended(t + Duration::from_secs(2), EndCause::LinkLost);
    rec.packet(t + Duration::from_secs(3), 0, &packets[0]);
    assert_eq!(rec.poll_output(), None);
}

#[test]
fn pages_close_every_second_so_a_crash_loses_little() {
    let t0 = Instant::now();
    let packets = tone_packets(250);
    let mut rec = ChannelRecorder::new("ops", RecordConfig::default());
    rec.floor_taken(t0, 0, talker());
    feed(&mut rec, t0, 0, &packets, |_| false);
    // Before the end: what was handed out is a readable file of at least 4 s.
    let mut bytes = Vec::new();
    while let Some(out) = rec.poll_output() {
        match out {
            RecordOutput::Begin { bytes: b, .. } | RecordOutput::Data { bytes: b, .. } => bytes.extend(b),
            RecordOutput::End { .. } => panic!("not ended"),
        }
    }
    let mut r = ogg::PacketReader::new(Cursor::new(bytes));
    let mut granule = 0;
    while let Ok(Some(p)) = r.read_packet() {
        granule = p.absgp_page();
    }
    assert!(granule >= 4 * 48_000, "{granule}");
}

/// A whole file as the recorder writes it: `n` packets of a 1 kHz tone, with its length (ms),
/// for the tests of what reads recordings (`record::replay`).
pub(crate) fn tone_file(n: usize) -> (Vec<u8>, u64) {
    let t0 = Instant::now();
    let mut rec = ChannelRecorder::new("ops", RecordConfig::default());
    rec.floor_taken(t0, 1_765_057_423_100, talker());
    feed(&mut rec, t0, 1000, &tone_packets(n), |_| false);
    rec.floor_ended(t0 + Duration::from_millis(20 * n as u64 + 20), EndCause::Released);
    let (meta, bytes) = files(&mut rec).pop().expect("a file");
    (bytes, meta.expect("ended").duration_ms)
}
