//! Outgoing RTP numbering for one track whose packets come from successive talkers.
//!
//! A channel's track to a peer carries whoever holds the floor: each talker has its own
//! sequence numbers and timestamps, but the receiver sees one SSRC and wants one continuous
//! stream. [`Restamper`] keeps the current talker's spacing (so loss, reordering and DTX gaps
//! stay visible to the far jitter buffer) and re-bases at every talk-spurt start or
//! discontinuity: the sequence continues at +1, the marker is set, and the timestamp advances
//! by the wall-clock time since the last packet (at least one packet's length), so the far end
//! hears the pause as a pause and timestamps never run backwards. Pure: `now` comes in.
//!
//! A new talker is a packet from another source than the last (when the caller knows the
//! source: [`Restamper::stamp_from`]) or with numbering unrelated to the last packet's.
//! A talk-spurt start is a marker, a jump in the source's numbering, or a packet that arrives
//! later than its own timestamp says by more than the source's recent jitter plus one frame.
//! The last matters because a source's timestamps need not count wall time: libwebrtc counts
//! encoded frames, so after a pause its next packet is one frame and one sequence number on,
//! often without a marker. Forwarded as it came, the far jitter buffer would take the pause
//! for network delay and grow by it at every over (issue 13, observation 1). Jitter the path
//! has shown (the decaying peak of how late packets came) is not a pause: the source's own
//! spacing is kept then, so a delay spike is absorbed by the far buffer, not heard as a gap.
//! For the same reason a marked spurt start from the same talker whose timestamps did count
//! the pause (within that jitter and a frame) keeps its spacing too: the advance already
//! equals the wall-clock gap, and it carries no arrival jitter from one spurt to the next.

use std::time::Instant;

use crate::codec::{packet_samples, SAMPLE_RATE};
use crate::pipeline::MediaPacket;

/// Packets this far behind the newest are still treated as reordered, not a new source.
const MAX_REORDER: i32 = 100;
/// A forward sequence jump beyond this is a new source, not loss.
const MAX_GAP: i32 = 1_000;
/// Timestamp deltas outside this window (samples) are a new source.
const MAX_TS_BACK: i64 = 2 * SAMPLE_RATE as i64;
const MAX_TS_AHEAD: i64 = 10 * SAMPLE_RATE as i64;
/// Assumed length when a payload has no readable Opus TOC.
const DEFAULT_SAMPLES: u32 = 960;
/// The learned jitter peak falls by 1/this of the elapsed time (20 ms per second), and never
/// exceeds `MAX_JITTER` samples, so a pause longer than that is always a new talk-spurt.
const JITTER_DECAY: i64 = 50;
const MAX_JITTER: i64 = SAMPLE_RATE as i64 / 2;

/// RTP fields to send one packet with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Extended sequence number (str0m carries the rollover count for SRTP).
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
}

#[derive(Debug, Clone)]
struct Current<S> {
    source: S,
    last_in_seq: u16,
    last_in_ts: u32,
    last_out_seq: u64,
    last_out_ts: u32,
    /// out timestamp − in timestamp for the current source.
    ts_offset: u32,
    last_samples: u32,
    last_at: Instant,
    /// Decaying peak (samples) of how much later than their timestamps packets of this source
    /// arrived, relative to the previous newest one: the jitter its path has shown.
    jitter: i64,
}

/// Restamps one outgoing track. `S` names a source where the caller knows it (a channel's
/// talkers); `()` where only the packets' numbering tells sources apart.
#[derive(Debug, Clone)]
pub struct Restamper<S = ()> {
    first_seq: u64,
    first_ts: u32,
    cur: Option<Current<S>>,
}

impl<S> Restamper<S> {
    /// `first_seq`/`first_ts` should be random (RFC 3550); the sequence starts low enough that
    /// the SRTP rollover counter begins at 0 without any signaling.
    pub fn new(first_seq: u16, first_ts: u32) -> Self {
        Self { first_seq: u64::from(first_seq.clamp(MAX_REORDER as u16 + 1, 30_000)), first_ts, cur: None }
    }
}

impl Restamper {
    /// The stamp for `packet`, or `None` for a duplicate of the newest packet.
    pub fn stamp(&mut self, now: Instant, packet: &MediaPacket) -> Option<Stamp> {
        self.stamp_from(now, (), packet)
    }
}

impl<S: PartialEq + Copy> Restamper<S> {
    /// The stamp for `packet` sent by `source`, or `None` for a duplicate of the newest packet.
    /// A change of source always starts a new talk-spurt, whatever the numbering says.
    pub fn stamp_from(&mut self, now: Instant, source: S, packet: &MediaPacket) -> Option<Stamp> {
        let samples = packet_samples(&packet.payload).map_or(DEFAULT_SAMPLES, |n| n as u32);
        let Some(cur) = &mut self.cur else {
            self.cur = Some(Current {
                source,
                last_in_seq: packet.seq,
                last_in_ts: packet.timestamp,
                last_out_seq: self.first_seq,
                last_out_ts: self.first_ts,
                ts_offset: self.first_ts.wrapping_sub(packet.timestamp),
                last_samples: samples,
                last_at: now,
                jitter: 0,
            });
            return Some(Stamp { seq: self.first_seq, timestamp: self.first_ts, marker: true });
        };
        let dseq = i32::from(packet.seq.wrapping_sub(cur.last_in_seq) as i16);
        let dts = i64::from(packet.timestamp.wrapping_sub(cur.last_in_ts) as i32);
        if cur.source == source && dseq == 0 && dts == 0 {
            return None;
        }
        let elapsed = now.saturating_duration_since(cur.last_at);
        let elapsed_samples =
            (elapsed.as_micros() * u128::from(SAMPLE_RATE) / 1_000_000).min(u128::from(u32::MAX / 2)) as i64;
        // How much later than its timestamp says this packet came, after the previous newest.
        let lateness = elapsed_samples - dts;
        let slack = cur.jitter + i64::from(cur.last_samples);
        // A source's timestamps never run ahead of the wall clock by more than its path's
        // jitter: a packet a second or more "from the future" is another talker whose
        // numbering happens to lie near the last one's (forwarded as the same, the far end
        // would hear a pause of up to 10 s that never was).
        let ahead = dseq > 0 && -lateness > slack + i64::from(SAMPLE_RATE);
        let numbered = cur.source == source
            && dseq != 0
            && !ahead
            && (-MAX_REORDER..=MAX_GAP).contains(&dseq)
            && (-MAX_TS_BACK..=MAX_TS_AHEAD).contains(&dts);
        let paused = dseq > 0 && lateness > slack;
        // A marked talk-spurt start whose timestamps advanced by the wall-clock gap (within the
        // path's jitter and a frame): the source stamps time (roipd's own capture does), so
        // its spacing is kept. Re-based on the arrival instead, each spurt would carry its
        // first packet's jitter over to the next one, and the far buffer would take that
        // random walk for jitter (its target grew over a few overs, issue 13).
        let timed = !packet.marker || (dseq > 0 && lateness.abs() <= slack);
        if numbered && timed && !paused {
            let seq = cur.last_out_seq.saturating_add_signed(i64::from(dseq)).max(1);
            let timestamp = packet.timestamp.wrapping_add(cur.ts_offset);
            // The source's own timestamps skip more than its missing packets explain: it
            // paused (DTX, or a talker that stamps wall time), so this starts a talk-spurt.
            let marker = packet.marker || (dseq > 0 && dts > (i64::from(dseq) + 1) * i64::from(cur.last_samples));
            if dseq > 0 {
                let decayed = cur.jitter - elapsed_samples / JITTER_DECAY;
                cur.jitter = decayed.max(lateness).clamp(0, MAX_JITTER);
                cur.last_in_seq = packet.seq;
                cur.last_in_ts = packet.timestamp;
                cur.last_out_seq = seq;
                cur.last_out_ts = timestamp;
                cur.last_samples = samples;
                cur.last_at = now;
            }
            return Some(Stamp { seq, timestamp, marker });
        }
        // New talker or new talk-spurt: continue the outgoing stream where it left off. The
        // same source's path keeps its learned jitter; a new one starts without.
        let jitter = if numbered { cur.jitter } else { 0 };
        let timestamp = cur.last_out_ts.wrapping_add((elapsed_samples as u32).max(cur.last_samples));
        let seq = cur.last_out_seq + 1;
        *cur = Current {
            source,
            last_in_seq: packet.seq,
            last_in_ts: packet.timestamp,
            last_out_seq: seq,
            last_out_ts: timestamp,
            ts_offset: timestamp.wrapping_sub(packet.timestamp),
            last_samples: samples,
            last_at: now,
            jitter,
        };
        Some(Stamp { seq, timestamp, marker: true })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A 20 ms CELT-only packet (TOC config 31, one frame).
    const P20: [u8; 3] = [31 << 3, 0, 0];

    fn pkt(seq: u16, ts: u32, marker: bool) -> MediaPacket {
        MediaPacket { seq, timestamp: ts, marker, payload: P20.to_vec() }
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn one_talker_keeps_its_spacing_gaps_and_reordering() {
        let t0 = Instant::now();
        let mut r = Restamper::<()>::new(1000, 5000);
        let a = r.stamp(t0, &pkt(65534, 4_294_966_336, true)).unwrap();
        assert_eq!(a, Stamp { seq: 1000, timestamp: 5000, marker: true });
        // Wraps in both fields, a lost packet (seq 1), and a late one.
        let b = r.stamp(ms(t0, 20), &pkt(65535, 0, false)).unwrap();
        let c = r.stamp(ms(t0, 40), &pkt(0, 960, false)).unwrap();
        let d = r.stamp(ms(t0, 80), &pkt(2, 2880, false)).unwrap();
        let late = r.stamp(ms(t0, 85), &pkt(1, 1920, false)).unwrap();
        assert_eq!([b.seq, c.seq, d.seq, late.seq], [1001, 1002, 1004, 1003]);
        assert_eq!([b.timestamp, c.timestamp, d.timestamp, late.timestamp], [5960, 6920, 8840, 7880]);
        assert!(![b, c, d, late].iter().any(|s| s.marker));
        assert_eq!(r.stamp(ms(t0, 90), &pkt(2, 2880, false)), None, "duplicate dropped");
    }

    /// Found by the overs property: a second talker whose numbering lies just ahead of the
    /// first's (51 packets, 10 s of timestamps) 50 ms after it stopped is a new talker, not the
    /// same one 10 s later.
    #[test]
    fn a_talker_numbered_close_to_the_last_but_far_in_the_future_is_a_new_talker() {
        let t0 = Instant::now();
        let mut r = Restamper::<()>::new(1000, 0);
        for i in 0..10u16 {
            r.stamp(ms(t0, 20 * u64::from(i)), &pkt(40_130 + i, 96_000 + 960 * u32::from(i), i == 0));
        }
        // Last packet at 180 ms, out ts 8640; the next talker 50 ms later, 51 on in sequence
        // and 479,000 samples on in timestamps.
        let s = r.stamp(ms(t0, 230), &pkt(40_190, 96_000 + 9 * 960 + 479_000, false)).unwrap();
        assert!(s.marker, "{s:?}");
        assert_eq!(s.timestamp, 8640 + 2400, "advanced by the 50 ms that passed");
        // A talker that stamps wall time and sent nothing for 3 s is still the same one.
        let mut r = Restamper::<()>::new(1000, 0);
        r.stamp(t0, &pkt(7, 0, true));
        let s = r.stamp(ms(t0, 3000), &pkt(8, 144_000, false)).unwrap();
        assert_eq!(s.timestamp, 144_000);
    }

    #[test]
    fn a_new_talker_continues_the_stream_with_the_pause_in_the_timestamps() {
        let t0 = Instant::now();
        let mut r = Restamper::<()>::new(1000, 0);
        for i in 0..10u16 {
            r.stamp(ms(t0, 20 * u64::from(i)), &pkt(100 + i, 96_000 + 960 * u32::from(i), i == 0));
        }
        // Last packet at 180 ms, out ts 8640. The next talker starts 500 ms later, far away
        // in both numbering spaces, without a marker (lost first packet).
        let s = r.stamp(ms(t0, 680), &pkt(40_000, 7, false)).unwrap();
        assert_eq!(s, Stamp { seq: 1010, timestamp: 8640 + 24_000, marker: true });
        let s2 = r.stamp(ms(t0, 700), &pkt(40_001, 967, false)).unwrap();
        assert_eq!(s2, Stamp { seq: 1011, timestamp: 8640 + 24_000 + 960, marker: false });
    }

    /// A channel's talkers named by the caller (was routing's StreamStitch): a preempting
    /// talker whose numbers happen to follow the last one's is still a new talker.
    #[test]
    fn a_named_source_change_is_a_new_talker_whatever_its_numbering() {
        let t0 = Instant::now();
        let mut r = Restamper::<(u8, u8)>::new(1000, 0);
        let (radio, desk) = ((0, 0), (1, 0));
        assert_eq!(r.stamp_from(t0, radio, &pkt(500, 96_000, true)).unwrap().seq, 1000);
        assert_eq!(r.stamp_from(ms(t0, 20), radio, &pkt(501, 96_960, false)).unwrap().timestamp, 960);
        // The desk's numbers continue the radio's exactly: the 40 ms since still show.
        let d = r.stamp_from(ms(t0, 60), desk, &pkt(502, 97_920, false)).unwrap();
        assert_eq!(d, Stamp { seq: 1002, timestamp: 960 + 1920, marker: true });
        let d2 = r.stamp_from(ms(t0, 80), desk, &pkt(503, 98_880, false)).unwrap();
        assert_eq!(d2, Stamp { seq: 1003, timestamp: 960 + 2880, marker: false });
        // The same port patched in from another channel is another source.
        let p = r.stamp_from(ms(t0, 100), (1, 2), &pkt(504, 99_840, false)).unwrap();
        assert_eq!((p.seq, p.marker), (1004, true));
        // A duplicate of the newest packet from the same source is dropped, not from another.
        assert_eq!(r.stamp_from(ms(t0, 101), (1, 2), &pkt(504, 99_840, false)), None);
        assert!(r.stamp_from(ms(t0, 102), desk, &pkt(504, 99_840, false)).is_some());
    }

    #[test]
    fn a_marker_rebases_even_from_the_same_talker_and_time_never_runs_back() {
        let t0 = Instant::now();
        let mut r = Restamper::<()>::new(1000, 0);
        r.stamp(t0, &pkt(10, 1000, true));
        // Back-to-back talk-spurt (no wall-clock gap): still one packet length ahead.
        let s = r.stamp(t0, &pkt(11, 1000u32.wrapping_sub(48_000), true)).unwrap();
        assert_eq!(s, Stamp { seq: 1001, timestamp: 960, marker: true });
    }

    /// Issue 13, observation 1: libwebrtc counts encoded frames, so across a pause its next
    /// packet is one frame and one sequence number on, without a marker. The outgoing stream
    /// must still show the pause, or the far jitter buffer grows by every gap.
    #[test]
    fn a_pause_hidden_by_the_sources_numbering_still_advances_by_the_wall_clock_gap() {
        let t0 = Instant::now();
        let mut r = Restamper::<()>::new(1000, 0);
        let (mut seq, mut ts, mut at) = (500u16, 7_000u32, 0u64);
        let mut last_out = r.stamp(ms(t0, at), &pkt(seq, ts, true)).unwrap();
        for (over, gap_ms) in [1100u64, 1700, 1300, 1500, 1200].into_iter().enumerate() {
            for _ in 0..50 {
                (seq, ts, at) = (seq.wrapping_add(1), ts.wrapping_add(960), at + 20);
                let s = r.stamp(ms(t0, at), &pkt(seq, ts, false)).unwrap();
                assert!(!s.marker && s.timestamp.wrapping_sub(last_out.timestamp) == 960, "over {over}: {s:?}");
                last_out = s;
            }
            (seq, ts, at) = (seq.wrapping_add(1), ts.wrapping_add(960), at + gap_ms);
            let s = r.stamp(ms(t0, at), &pkt(seq, ts, false)).unwrap();
            let advance = s.timestamp.wrapping_sub(last_out.timestamp);
            assert!(s.marker, "over {over}: a new talk-spurt needs the marker: {s:?}");
            assert_eq!(advance, gap_ms as u32 * 48, "over {over}: timestamp advance vs {gap_ms} ms");
            assert_eq!(s.seq, last_out.seq + 1);
            last_out = s;
        }
    }

    /// Issue 13: roipd's own capture stamps wall time and marks each spurt. Re-based on its
    /// arrival, each spurt carried its first packet's lateness (the capture thread's wake-up)
    /// over to all later ones, and the far buffer took that walk for jitter (its target grew
    /// to 60-100 ms over a few overs in the rig). Its spacing is kept, marker and all.
    #[test]
    fn a_marked_spurt_from_a_source_that_stamps_time_keeps_its_spacing() {
        let t0 = Instant::now();
        let mut r = Restamper::<()>::new(1000, 0);
        let (mut seq, mut ts, mut at_us) = (7u16, 1_000u32, 0u64);
        let mut offsets = Vec::new();
        for over in 0..8u64 {
            for i in 0..30 {
                let late = if i == 0 { [0, 6_000, 2_000, 9_000][over as usize % 4] } else { 0 };
                let s = r.stamp(t0 + Duration::from_micros(at_us + late), &pkt(seq, ts, i == 0)).unwrap();
                assert_eq!(s.marker, i == 0, "over {over} packet {i}: {s:?}");
                offsets.push(s.timestamp.wrapping_sub(ts));
                (seq, ts, at_us) = (seq.wrapping_add(1), ts.wrapping_add(960), at_us + 20_000);
            }
            let gap_us = 700_000 + 130_000 * over;
            (ts, at_us) = (ts.wrapping_add((gap_us * 48 / 1000) as u32), at_us + gap_us);
        }
        assert!(offsets.iter().all(|&o| o == offsets[0]), "{offsets:?}");
    }

    /// Jitter the path has shown (late packets followed by the backlog) is not a pause: the
    /// source's own spacing is kept, so the far buffer absorbs it instead of hearing a gap.
    #[test]
    fn jitter_within_a_talk_spurt_keeps_the_sources_spacing() {
        let t0 = Instant::now();
        let mut r = Restamper::<()>::new(1000, 0);
        let first = r.stamp(t0, &pkt(0, 0, true)).unwrap();
        // A packet one frame late (adjacent reordering) and then a 30 ms late one: the path's
        // jitter is learned from the first, and the second stays within a frame of it.
        let arrivals: [(u16, u64); 6] = [(1, 20), (3, 60), (2, 80), (4, 100), (5, 150), (6, 151)];
        for (seq, at) in arrivals {
            let s = r.stamp(ms(t0, at), &pkt(seq, 960 * u32::from(seq), false)).unwrap();
            assert_eq!(s.timestamp.wrapping_sub(first.timestamp), 960 * u32::from(seq), "{seq}: {s:?}");
            assert!(!s.marker);
        }
    }

    #[test]
    fn sequence_starts_low_enough_for_srtp_and_high_enough_for_reordering() {
        assert_eq!(Restamper::<()>::new(65_000, 0).first_seq, 30_000);
        assert_eq!(Restamper::<()>::new(0, 0).first_seq, 101);
        let t0 = Instant::now();
        let mut r = Restamper::<()>::new(0, 0);
        r.stamp(t0, &pkt(500, 0, true));
        let s = r.stamp(t0, &pkt(400, 0, false)).unwrap();
        assert_eq!(s.seq, 1, "reordered before the first packet stays positive");
    }

    /// Issue 13: random overs from one to three sources (each stamping wall time or counting
    /// frames like libwebrtc), 0.05-5 s apart, with loss and reordering, forwarded through one
    /// Restamper to a roipd jitter buffer on the far side.
    mod overs {
        use proptest::prelude::*;

        use super::*;
        use crate::core::jitter::{JitterBuffer, JitterConfig, Packet};

        const PATH_US: u64 = 30_000;
        const HOP_US: u64 = 5_000;

        struct Sent {
            arrival_us: u64,
            delay_us: u64,
            over: usize,
            packet: MediaPacket,
        }

        fn samples(us: u64) -> i64 {
            (us * 48 / 1000) as i64
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]

            /// Across every pause the outgoing timestamp advances by the wall-clock gap within
            /// one frame (plus the delay variation the path showed in the last 3 s, which the
            /// Restamper must not mistake for pauses), and the far buffer's depth and target
            /// stay within its bounds without ever restarting.
            #[test]
            fn outgoing_timestamps_track_wall_time_and_the_far_buffer_stays_bounded(
                overs in prop::collection::vec((0usize..3, 2usize..60, 50u64..5000, any::<bool>()), 2..12),
                counting in prop::array::uniform3(any::<bool>()),
                origins in prop::array::uniform3((any::<u16>(), any::<u32>())),
                loss_pct in 0u64..15,
                reorder_pct in 0u64..15,
                seed: u64,
            ) {
                let mut rng = seed | 1;
                let mut rand = move |n: u64| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng % n
                };
                // (seq, ts, last send) of each source's own numbering.
                let mut src: Vec<(u16, u32, Option<u64>)> = origins.iter().map(|&(q, t)| (q, t, None)).collect();
                let (mut send, mut sent) = (0u64, Vec::new());
                for (o, &(s, frames, gap_ms, marker)) in overs.iter().enumerate() {
                    if o > 0 {
                        send += gap_ms * 1000;
                    }
                    for i in 0..frames {
                        let (seq, ts, last) = &mut src[s];
                        if let Some(last) = *last {
                            *seq = seq.wrapping_add(1);
                            // libwebrtc counts frames: one frame on whatever the pause.
                            let step = if counting[s] { 960 } else { samples(send - last) as u32 };
                            *ts = ts.wrapping_add(step);
                        }
                        *last = Some(send);
                        let packet = MediaPacket { seq: *seq, timestamp: *ts, marker: marker && i == 0, payload: P20.to_vec() };
                        let delay_us = if rand(100) < reorder_pct { 21_000 + rand(40_000) } else { 0 };
                        if rand(100) >= loss_pct {
                            sent.push(Sent { arrival_us: send + PATH_US + delay_us, delay_us, over: o, packet });
                        }
                        send += 20_000;
                    }
                    send -= 20_000;
                }
                sent.sort_by_key(|p| p.arrival_us);

                let t0 = Instant::now();
                let at = |us: u64| t0 + Duration::from_micros(us);
                let mut r = Restamper::<()>::new(origins[0].0, origins[0].1);
                // The newest packet sent out: (out stamp, arrival, path delay, over).
                let mut newest: Option<(Stamp, u64, u64, usize)> = None;
                let mut out = Vec::new();
                for p in &sent {
                    let Some(stamp) = r.stamp(at(p.arrival_us), &p.packet) else { continue };
                    if let Some((prev, arrived, delay, over)) = newest {
                        if p.over != over {
                            let advance = i64::from(stamp.timestamp.wrapping_sub(prev.timestamp) as i32);
                            let wall = samples(p.arrival_us - arrived);
                            let jitter = sent
                                .iter()
                                .filter(|q| q.arrival_us < p.arrival_us && q.arrival_us + 3_000_000 >= p.arrival_us)
                                .map(|q| q.delay_us)
                                .max()
                                .unwrap_or(0);
                            let allowed = 960 + samples(p.delay_us.abs_diff(delay)) + samples(jitter);
                            prop_assert!(
                                (advance - wall).abs() <= allowed,
                                "over {}: advance {} vs wall {} samples (allowed {})", p.over, advance, wall, allowed
                            );
                            prop_assert!(jitter > 0 || stamp.marker, "over {}: no marker {:?}", p.over, stamp);
                        }
                    }
                    if newest.is_none_or(|(prev, ..)| stamp.seq > prev.seq) {
                        newest = Some((stamp, p.arrival_us, p.delay_us, p.over));
                    }
                    out.push((p.arrival_us + HOP_US, stamp));
                }

                // The far side: a roipd jitter buffer popped every 20 ms.
                let cfg = JitterConfig::default();
                let max_ms = cfg.max_depth.as_secs_f64() * 1000.0;
                let mut jb = JitterBuffer::new(cfg);
                let end = out.last().map_or(0, |o| o.0) + 1_000_000;
                let (mut next, mut pop) = (0, 3_000u64);
                while pop < end {
                    while next < out.len() && out[next].0 <= pop {
                        let (arrival, s) = out[next];
                        jb.push(at(arrival), Packet { seq: s.seq as u16, timestamp: s.timestamp, marker: s.marker, payload: &P20 });
                        next += 1;
                        let st = jb.stats();
                        prop_assert!(st.depth_ms <= max_ms && st.target_ms <= max_ms, "{:?}", st);
                    }
                    let _ = jb.pop(at(pop));
                    let st = jb.stats();
                    prop_assert!(st.depth_ms <= max_ms && st.target_ms <= max_ms, "{:?}", st);
                    pop += 20_000;
                }
                prop_assert_eq!(jb.stats().resets, 0, "{:?}", jb.stats());
            }
        }
    }

    #[test]
    fn garbage_payloads_do_not_panic() {
        let t0 = Instant::now();
        let mut r = Restamper::<()>::new(7, 7);
        for (i, p) in [vec![], vec![0xff], vec![3], vec![0xff, 0xff]].into_iter().enumerate() {
            let packet = MediaPacket { seq: i as u16, timestamp: 0, marker: false, payload: p };
            r.stamp(ms(t0, i as u64), &packet);
        }
    }
}
