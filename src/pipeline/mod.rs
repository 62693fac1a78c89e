//! The per-port media paths between an audio device and a channel, as plain structs:
//! [`RxPath`] (radio → channel: DSP, VOX level, Opus encode) and [`TxPath`] (channel → radio:
//! jitter buffer, Opus decode with FEC/PLC, TX delay line, courtesy tone, DSP).
//!
//! No threads, sockets or clock reads: device frames and `Instant`s come in from the audio
//! driver threads (`crate::daemon::audio_port`) and from `roipd bench`, which drive the very
//! same code. The DSP and codec work per frame allocates nothing; an emitted packet is one small
//! `Vec` (50 a second while talking).

pub mod fidelity;
mod mixer;
mod rx;
mod tx;

pub use mixer::{
    ChannelLevel, MixChannelConfig, MixChannelStats, MixLevels, Mixer, MixerConfig, MixerError, MAX_CHANNELS,
};
pub use rx::{RxOutput, RxPath};
pub use tx::{TxFrame, TxGate, TxPath};

/// Device frames the playback driver keeps queued ahead of the device: the most its refill
/// may be late before the device plays silence, and latency. One frame (10 ms) holds since the
/// feeder runs on a thread of its own; as an async task it left gaps on a loaded 2-core box.
pub const PLAYBACK_LEAD_FRAMES: usize = 1;

/// An Opus packet with the RTP fields the jitter buffer needs. This is what channels carry,
/// in-process between local ports and over WebRTC to peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPacket {
    pub seq: u16,
    /// 48 kHz RTP timestamp of the packet's first sample.
    pub timestamp: u32,
    /// First packet of a talk-spurt.
    pub marker: bool,
    pub payload: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::codec::EncoderConfig;
    use crate::core::jitter::JitterConfig;
    use crate::dsp::{CourtesyToneConfig, Meter, RxConfig, Sine, TxConfig};

    const PERIOD: usize = 480; // 10 ms device frames

    fn rx(vox: bool) -> RxPath {
        RxPath::new(&RxConfig::default(), &EncoderConfig::default(), vox).unwrap()
    }

    fn tx(courtesy: bool, hold: Duration) -> TxPath {
        let courtesy = CourtesyToneConfig { enabled: courtesy, ..Default::default() };
        TxPath::new(&TxConfig::default(), JitterConfig::default(), &courtesy, hold).unwrap()
    }

    /// Run `frames` device periods: tone into RX while `talking(i)`, packets straight into TX,
    /// TX output collected with the gate from `gate(i)`.
    fn run(
        rx: &mut RxPath,
        tx: &mut TxPath,
        frames: usize,
        talking: impl Fn(usize) -> bool,
        gate: impl Fn(usize) -> TxGate,
    ) -> (Vec<f32>, usize) {
        let t0 = Instant::now();
        let mut tone = Sine::new(48_000, 1000.0, -12.0);
        let mut output = Vec::new();
        let mut packets = 0;
        for i in 0..frames {
            let now = t0 + Duration::from_millis(10 * i as u64);
            let mut frame = [0.0f32; PERIOD];
            tone.render(&mut frame);
            if let Some(p) = rx.process(&mut frame, talking(i)).packet {
                packets += 1;
                tx.push(now, &p);
            }
            let mut out = [0.0f32; PERIOD];
            tx.fill(now, gate(i), &mut out);
            output.extend_from_slice(&out);
        }
        (output, packets)
    }

    fn first_loud(samples: &[f32]) -> Option<usize> {
        samples.iter().position(|s| s.abs() > 0.05)
    }

    /// A DTMF digit in the middle of a talk-spurt is reported and silenced from its first to
    /// its last sample (the channel hears a gap, not the digit); audio around it passes.
    /// Without the mute the digit would reach the channel: the same check on the output of an
    /// unmuted path finds it.
    #[test]
    fn a_dtmf_digit_is_reported_and_muted_from_the_channel() {
        use crate::dsp::{DtmfConfig, DtmfDecoder, DtmfEvent};
        let (fl, fh) = crate::dsp::dtmf::dtmf_freqs('5').unwrap();
        let w = std::f64::consts::TAU / 48_000.0;
        let input: Vec<f32> = (0..100 * PERIOD)
            .map(|i| {
                let t = i as f64;
                if (50 * PERIOD..60 * PERIOD).contains(&i) {
                    (0.1 * (w * fl * t).sin() + 0.1 * (w * fh * t).sin()) as f32
                } else {
                    (0.1 * (w * 440.0 * t).sin()) as f32
                }
            })
            .collect();
        let run = |mute: bool| {
            let mut r = rx(false).with_dtmf(mute);
            let (mut out, mut digits) = (Vec::new(), String::new());
            for f in input.chunks(PERIOD) {
                let mut frame = f.to_vec();
                let o = r.process(&mut frame, true);
                digits.extend(o.dtmf);
                out.extend_from_slice(&frame);
            }
            (out, digits)
        };
        let heard = |out: &[f32]| {
            let mut d = DtmfDecoder::new(&DtmfConfig { min_level_dbfs: -60.0, ..DtmfConfig::default() });
            d.process(out);
            std::iter::from_fn(|| d.poll_event()).any(|e| matches!(e, DtmfEvent::Digit(_)))
        };
        let (plain, digits) = run(false);
        assert_eq!(digits, "5");
        assert!(heard(&plain), "an unmuted path passes the digit");
        let (muted, digits) = run(true);
        assert_eq!(digits, "5");
        assert!(!heard(&muted), "the digit reached the channel");
        // Input 500-600 ms is output 540-640 ms: silent (the fades at its edges aside).
        let ms = |t: usize| t * 48;
        let gap = Meter::measure(&muted[ms(542)..ms(638)]);
        assert!(gap.peak_dbfs < -60.0, "{gap:?}");
        assert!(Meter::measure(&muted[ms(300)..ms(480)]).rms_dbfs > -30.0, "speech before the digit passes");
        assert!(Meter::measure(&muted[ms(750)..ms(1000)]).rms_dbfs > -30.0, "and after it");
    }

    /// CTCSS encode: the tone is under the channel audio at its level and frequency (the
    /// CTCSS decoder, on the radio's transmit audio, opens on it and measures it), from the
    /// key-up (TX delay) on; channel audio through the receive high-pass (which keeps tones
    /// under 300 Hz off the channel) does not take it away, since it is added after; the
    /// transmitter unkeyed sends nothing.
    #[test]
    fn ctcss_encode_rides_under_channel_audio_at_its_level() {
        use crate::dsp::{CtcssConfig, CtcssDecoder};
        let mut r = rx(false);
        let mut t = tx(false, Duration::from_millis(200)).with_ctcss(100.0, -24.0);
        let (out, _) = run(
            &mut r,
            &mut t,
            300,
            |_| true,
            |i| match i {
                0..20 => TxGate::Hold,
                20..250 => TxGate::Open,
                _ => TxGate::Closed,
            },
        );
        let mut dec = CtcssDecoder::new(&CtcssConfig { tone_hz: 100.0, ..CtcssConfig::default() });
        let held = &out[..20 * PERIOD];
        dec.process(held);
        assert!((Meter::measure(held).peak_dbfs + 24.0).abs() < 0.5, "the tone alone during the TX delay");
        let keyed = &out[20 * PERIOD..250 * PERIOD];
        assert!(Meter::measure(keyed).rms_dbfs > -24.0, "channel audio on air");
        dec.process(keyed);
        let st = dec.state();
        assert!(st.open && st.heard_hz == Some(100.0), "{st:?}");
        assert!((st.level_dbfs + 24.0).abs() < 1.0, "level {:.1} dBFS", st.level_dbfs);
        assert!(Meter::measure(&out[250 * PERIOD..]).peak_dbfs < -90.0, "nothing once unkeyed");
        // The same channel audio without the encoder carries no tone.
        let (mut r, mut t) = (rx(false), tx(false, Duration::ZERO));
        let (plain, _) = run(&mut r, &mut t, 250, |_| true, |_| TxGate::Open);
        let mut dec = CtcssDecoder::new(&CtcssConfig { tone_hz: 100.0, ..CtcssConfig::default() });
        dec.process(&plain);
        assert_eq!(dec.state().heard_hz, None);
    }

    /// The reverse burst: in the tail the tone goes on turned by 180°, alone, and a CTCSS
    /// decoder listening to the transmitter closes on it before the carrier drops.
    #[test]
    fn the_ctcss_tail_is_a_reverse_burst_the_decoder_closes_on() {
        use crate::dsp::{CtcssConfig, CtcssDecoder};
        let mut r = rx(false);
        let mut t = tx(false, Duration::ZERO).with_ctcss(100.0, -20.0);
        let (out, _) = run(&mut r, &mut t, 115, |_| true, |i| if i < 100 { TxGate::Open } else { TxGate::Tail });
        let mut dec = CtcssDecoder::new(&CtcssConfig { tone_hz: 100.0, ..CtcssConfig::default() });
        dec.process(&out[..100 * PERIOD]);
        assert!(dec.is_open());
        let tail = &out[100 * PERIOD..];
        assert!((Meter::measure(tail).peak_dbfs + 20.0).abs() < 0.5, "the tone alone in the tail");
        let mut closed_at = None;
        for (i, f) in tail.chunks(PERIOD).enumerate() {
            if !dec.process(f) && closed_at.is_none() {
                closed_at = Some(i * 10 + 10);
            }
        }
        let ms = closed_at.expect("the decoder closes on the reverse burst");
        assert!(ms <= 150, "closed {ms} ms into the 150 ms tail");
    }

    #[test]
    fn tone_goes_through_rx_and_tx_paths() {
        let (mut r, mut t) = (rx(false), tx(false, Duration::ZERO));
        let (out, packets) = run(&mut r, &mut t, 200, |_| true, |_| TxGate::Open);
        assert_eq!(packets, 100, "20 ms packets for 2 s");
        // A steady tone for a whole second: it must not fade (DTX would replace it).
        let tail = Meter::measure(&out[48_000..]);

        // AGC targets -18 dBFS RMS; the limiter caps peaks at -6 dBFS.
        assert!(tail.rms_dbfs > -24.0 && tail.peak_dbfs <= -5.9, "{tail:?}");
        let onset = first_loud(&out).unwrap();
        assert!(onset < 4_800, "first audio after {} ms", onset / 48);
    }

    #[test]
    fn idle_port_encodes_nothing_and_vox_still_measures() {
        let mut r = rx(false);
        let mut frame = [0.3f32; PERIOD];
        let out = r.process(&mut frame, false);
        assert!(out.packet.is_none() && out.vox_dbfs.is_none());
        assert!(out.meter.peak_dbfs > -11.0);
        let mut v = rx(true);
        let out = v.process(&mut [0.3f32; PERIOD], false);
        assert!(out.packet.is_none());
        assert!(out.vox_dbfs.is_some());
    }

    /// The playback device stops while the transmit path is idle: idle must mean that filling
    /// frames would play nothing, through a spurt, its concealment, the TX delay's hold and
    /// the courtesy tone.
    #[test]
    fn tx_path_is_idle_only_when_it_has_nothing_left_to_play() {
        let (mut r, mut t) = (rx(false), tx(true, Duration::from_millis(100)));
        assert!(t.idle(), "fresh");
        let t0 = Instant::now();
        let mut tone = Sine::new(48_000, 1000.0, -12.0);
        let mut idle_with_sound = vec![];
        let mut idle_frames = vec![];
        for i in 0..300usize {
            let now = t0 + Duration::from_millis(10 * i as u64);
            let mut frame = [0.0f32; PERIOD];
            tone.render(&mut frame);
            if let Some(p) = r.process(&mut frame, (10..60).contains(&i)).packet {
                t.push(now, &p);
            }
            let was_idle = t.idle();
            let gate = if (5..200).contains(&i) { TxGate::Open } else { TxGate::Closed };
            let mut out = [0.0f32; PERIOD];
            t.fill(now, gate, &mut out);
            if was_idle {
                idle_frames.push(i);
                if out.iter().any(|s| s.abs() > 1e-4) {
                    idle_with_sound.push(i);
                }
            }
        }
        assert_eq!(idle_with_sound, Vec::<usize>::new(), "an idle path played sound");
        // Busy from the first packet to the end of the courtesy tone, idle before and after.
        assert!(idle_frames.contains(&5) && !idle_frames.contains(&12) && !idle_frames.contains(&70));
        assert!(idle_frames.contains(&150) && idle_frames.contains(&299), "{idle_frames:?}");
    }

    #[test]
    fn first_packet_of_each_spurt_has_the_marker_and_timestamps_show_the_gap() {
        let mut r = rx(false);
        let mut packets = Vec::new();
        for i in 0..60 {
            let talking = !(20..40).contains(&i);
            if let Some(p) = r.process(&mut [0.1f32; PERIOD], talking).packet {
                packets.push(p);
            }
        }
        let markers: Vec<_> = packets.iter().filter(|p| p.marker).map(|p| p.timestamp).collect();
        assert_eq!(markers, vec![0, 40 * PERIOD as u32]);
        assert!(packets.windows(2).all(|w| w[1].seq == w[0].seq.wrapping_add(1)));
    }

    /// Issue 13: a spurt that starts between two codec-frame boundaries of the sample clock
    /// (COR opened on the second 10 ms frame of a 20 ms device period) starts its first packet
    /// at the boundary before, with the audio since: it sends exactly what a spurt started at
    /// that boundary would, and its first packet comes with the frame that opened it. Started
    /// where COR opened, its packets came a 10 ms frame later than those of a spurt on the
    /// boundary, and the far jitter buffer took the difference between overs for jitter.
    #[test]
    fn a_spurt_starting_mid_codec_frame_starts_on_the_boundary_before() {
        for vox in [false, true] {
            let run = |start: usize| {
                let mut r = rx(vox);
                let mut tone = Sine::new(48_000, 700.0, -14.0);
                let mut packets = Vec::new();
                for i in 0..60 {
                    let mut frame = [0.0f32; PERIOD];
                    tone.render(&mut frame);
                    // Two spurts: from `start` and from `start + 20`.
                    let talking = (start..start + 10).contains(&i) || (start + 20..start + 30).contains(&i);
                    if let Some(p) = r.process(&mut frame, talking).packet {
                        packets.push((i, p));
                    }
                }
                packets
            };
            let (on, off) = (run(20), run(21));
            // Both spurts of `off` start a frame after a boundary (21, 41).
            assert!(off.iter().all(|(_, p)| p.timestamp % (2 * PERIOD as u32) == 0), "vox {vox}: {off:?}");
            let first: Vec<_> = off.iter().filter(|(_, p)| p.marker).map(|(i, p)| (*i, p.timestamp)).collect();
            assert_eq!(first, [(21, 20 * PERIOD as u32), (41, 40 * PERIOD as u32)], "vox {vox}");
            // The first spurt is the one started on the boundary, packet for packet.
            let payloads =
                |v: &[(usize, MediaPacket)]| v.iter().take(5).map(|(_, p)| p.payload.clone()).collect::<Vec<_>>();
            assert_eq!(payloads(&off), payloads(&on), "vox {vox}");
        }
    }

    #[test]
    fn closed_gate_discards_and_hold_delays_audio_by_the_tx_delay() {
        let (mut r, mut t) = (rx(false), tx(false, Duration::from_millis(300)));
        let (out, _) = run(&mut r, &mut t, 100, |_| true, |_| TxGate::Closed);
        assert!(first_loud(&out).is_none(), "nothing on air while unkeyed");

        let (mut r, mut t) = (rx(false), tx(false, Duration::from_millis(300)));
        let (direct, _) = run(&mut r, &mut t, 100, |_| true, |_| TxGate::Open);
        let (mut r, mut t) = (rx(false), tx(false, Duration::from_millis(300)));
        // Keyed at frame 0, TX delay 300 ms: audio held for 30 frames.
        let (held, _) = run(&mut r, &mut t, 100, |_| true, |i| if i < 30 { TxGate::Hold } else { TxGate::Open });
        let (a, b) = (first_loud(&direct).unwrap(), first_loud(&held).unwrap());
        assert!(b >= 30 * PERIOD, "nothing before the TX delay ends");
        // Nothing lost: the first word comes out, 300 ms late (within a frame).
        let late_ms = (b - a) as f64 / 48.0;
        assert!((late_ms - 300.0).abs() <= 20.0, "held audio starts {late_ms} ms later");
    }

    #[test]
    fn cw_id_plays_when_started_on_an_open_gate_and_stops_when_unkeyed() {
        use crate::dsp::CwIdConfig;
        let id = CwIdConfig { enabled: true, text: "E E".into(), wpm: 20.0, ..CwIdConfig::default() };
        let mut t = tx(false, Duration::ZERO).with_cw_id(Some(&id));
        // "E E": dit, word gap, dit = 1 + 7 + 1 units of 60 ms, plus half a 5 ms ramp at each end.
        let len = t.cw_id_length();
        assert!(len >= Duration::from_millis(540) && len <= Duration::from_millis(546), "{len:?}");
        let t0 = Instant::now();
        let mut out = Vec::new();
        t.start_id();
        for i in 0..80 {
            let mut frame = [0.0f32; PERIOD];
            t.fill(t0 + Duration::from_millis(10 * i), TxGate::Open, &mut frame);
            out.extend_from_slice(&frame);
        }
        assert!(!t.id_active(), "over after its length");
        let onset = first_loud(&out).unwrap();
        assert!(onset < PERIOD, "starts with the next frame");
        // 800 Hz at -18 dBFS peak: the first dit, then silence after the second.
        let dit = Meter::measure(&out[480..2400]);
        assert!((dit.peak_dbfs + 18.0).abs() < 0.5, "{dit:?}");
        assert!(Meter::measure(&out[(0.56 * 48_000.0) as usize..]).peak_dbfs < -60.0);

        // Cut by the gate closing: nothing of it is left for the next key-up.
        t.start_id();
        let mut frame = [0.0f32; PERIOD];
        t.fill(t0, TxGate::Open, &mut frame);
        t.fill(t0, TxGate::Closed, &mut frame);
        assert!(!t.id_active());
        t.fill(t0, TxGate::Open, &mut frame);
        assert!(Meter::measure(&frame).peak_dbfs < -60.0);
        // Without an ID configured, start_id does nothing.
        let mut plain = tx(false, Duration::ZERO);
        plain.start_id();
        assert!(!plain.id_active() && plain.cw_id_length().is_zero());
    }

    #[test]
    fn delay_line_drains_after_the_over_and_the_courtesy_tone_follows() {
        let (mut r, mut t) = (rx(false), tx(true, Duration::from_millis(200)));
        // Talk for 1 s, keyed with a 200 ms TX delay, then stay keyed (hang) for 1 s.
        let (out, _) = run(&mut r, &mut t, 200, |i| i < 100, |i| if i < 20 { TxGate::Hold } else { TxGate::Open });
        assert_eq!(t.held(), Duration::ZERO, "delay line drained");
        // Voice ends about 1.2 s + jitter depth (one frame: a clean stream starts at what it
        // shows) in; the beep (1500/1000 Hz) comes after it.
        let after = &out[(1.41 * 48_000.0) as usize..];
        assert!(first_loud(after).is_some(), "courtesy tone after the over");
        assert!(Meter::measure(&out[(1.9 * 48_000.0) as usize..]).peak_dbfs < -60.0, "then silence");
    }
}
