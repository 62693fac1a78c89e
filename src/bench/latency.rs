//! Gateway-added latency per direction, with real-time simulated devices and the real paths.
//! Tone bursts (0.5 s silence, 0.5 s tone) go in; each burst's onset is found at the output.

use std::time::{Duration, Instant};

use super::kernels::write_wav;
use super::signal::{onsets, tone_bursts};
use crate::audio::{AudioOptions, CaptureHandle, PlaybackHandle};
use crate::codec::{Decoder, Encoder, EncoderConfig, MAX_FRAME_SAMPLES, MAX_PACKET_BYTES};
use crate::core::jitter::JitterConfig;
use crate::dsp::{CourtesyToneConfig, RxConfig, TxConfig};
use crate::pipeline::{MediaPacket, RxPath, TxGate, TxPath, PLAYBACK_LEAD_FRAMES};

const RATE: f64 = 48_000.0;
const FRAME: usize = 480;
const BURST_PERIOD: usize = 48_000;
const BURSTS: usize = 4;
const THRESHOLD: f32 = 0.05;
const QUIET: usize = 4_800;

fn median(mut v: Vec<f64>) -> Result<f64, String> {
    if v.is_empty() {
        return Err("no tone onset found at the output".into());
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Ok(v[v.len() / 2])
}

/// Radio → network: from a burst onset at the capture device to the packet carrying it
/// leaving the receive path.
pub fn rx_added_ms() -> Result<f64, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let wav = dir.path().join("bursts.wav");
    write_wav(&wav, &tone_bursts(BURST_PERIOD, BURST_PERIOD))?;
    let capture = CaptureHandle::open(&format!("sim:wav:{}", wav.display()), &AudioOptions::default())
        .map_err(|e| e.to_string())?;
    let mut rx = RxPath::new(&RxConfig::default(), &EncoderConfig::default(), false).map_err(|e| e.to_string())?;
    let mut frame = vec![0.0f32; FRAME];
    let mut input = Vec::new();
    // Device clock: frame k's last sample was captured no earlier than `epoch + (k+1) * 10 ms`;
    // the least-delayed delivery pins the epoch.
    let mut epoch: Option<Instant> = None;
    let mut sent: Vec<(Instant, MediaPacket)> = Vec::new();
    for k in 0..(BURSTS * BURST_PERIOD / FRAME) {
        capture.recv_timeout(&mut frame, Duration::from_secs(2)).map_err(|e| format!("capture: {e:?}"))?;
        let got = Instant::now();
        let captured_by = got.checked_sub(Duration::from_micros((k as u64 + 1) * 10_000));
        if let Some(e) = captured_by {
            epoch = Some(epoch.map_or(e, |old| old.min(e)));
        }
        input.extend_from_slice(&frame);
        if let Some(p) = rx.process(&mut frame, true).packet {
            sent.push((Instant::now(), p));
        }
    }
    capture.stop();
    let epoch = epoch.ok_or("no capture timing")?;

    // Decode what left, as the far end would, to find where each onset ended up.
    let mut dec = Decoder::new().map_err(|e| e.to_string())?;
    let (mut decoded, mut pcm) = (Vec::new(), vec![0.0f32; MAX_FRAME_SAMPLES]);
    let mut packet_start = Vec::new();
    for (_, p) in &sent {
        packet_start.push(decoded.len());
        let n = dec.decode(&p.payload, &mut pcm).map_err(|e| e.to_string())?;
        decoded.extend_from_slice(&pcm[..n]);
    }
    let ins = onsets(&input, THRESHOLD, QUIET);
    let outs = onsets(&decoded, THRESHOLD, QUIET);
    let mut added = Vec::new();
    for (&i, &o) in ins.iter().zip(outs.iter()).skip(1) {
        let p = packet_start.partition_point(|&s| s <= o) - 1;
        let onset_at = epoch + Duration::from_secs_f64(i as f64 / RATE);
        added.push(sent[p].0.saturating_duration_since(onset_at).as_secs_f64() * 1e3);
    }
    median(added)
}

/// Network → radio: from the packet carrying a burst onset arriving at the transmit path to
/// that onset leaving the playback device.
pub fn tx_added_ms() -> Result<f64, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out_wav = dir.path().join("tx.wav");
    let signal = tone_bursts(BURSTS * BURST_PERIOD, BURST_PERIOD);
    let mut enc = Encoder::new(EncoderConfig::default()).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; MAX_PACKET_BYTES];
    let mut packets = Vec::new();
    for (k, chunk) in signal.chunks_exact(2 * FRAME).enumerate() {
        let n = enc.encode(chunk, &mut buf).map_err(|e| e.to_string())?;
        packets.push(MediaPacket {
            seq: k as u16,
            timestamp: (k * 2 * FRAME) as u32,
            marker: k == 0,
            payload: buf[..n].to_vec(),
        });
    }
    // Where each onset sits in the stream the talker sent (after the encoder's lookahead).
    let mut dec = Decoder::new().map_err(|e| e.to_string())?;
    let (mut reference, mut pcm) = (Vec::new(), vec![0.0f32; MAX_FRAME_SAMPLES]);
    for p in &packets {
        let n = dec.decode(&p.payload, &mut pcm).map_err(|e| e.to_string())?;
        reference.extend_from_slice(&pcm[..n]);
    }

    let playback = PlaybackHandle::open(&format!("sim:wav-out:{}", out_wav.display()), &AudioOptions::default())
        .map_err(|e| e.to_string())?;
    let mut tx =
        TxPath::new(&TxConfig::default(), JitterConfig::default(), &CourtesyToneConfig::default(), Duration::ZERO)
            .map_err(|e| e.to_string())?;
    let mut frame = vec![0.0f32; FRAME];
    let start = Instant::now();
    let mut arrived = Vec::new();
    // The device's clock: frame m starts playing at `play_epoch + m * 10 ms`.
    let mut play_epoch: Option<Instant> = None;
    let mut next = 0;
    let end = start + Duration::from_millis((BURSTS * BURST_PERIOD / 48) as u64 + 300);
    while Instant::now() < end {
        let now = Instant::now();
        if next < packets.len() && now >= start + Duration::from_millis(20 * next as u64) {
            tx.push(now, &packets[next]);
            arrived.push(now);
            next += 1;
        }
        // The same refill rule as the daemon's playback task.
        while playback.queued() < PLAYBACK_LEAD_FRAMES {
            tx.fill(Instant::now(), TxGate::Open, &mut frame);
            playback.push(&frame).map_err(|e| format!("playback: {e:?}"))?;
        }
        let played = playback.stats().frames;
        if played > 0 {
            let e = Instant::now().checked_sub(Duration::from_micros(played * 10_000));
            play_epoch = match (play_epoch, e) {
                (Some(old), Some(e)) => Some(old.max(e)),
                (None, e) => e,
                (old, None) => old,
            };
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    playback.close();
    let play_epoch = play_epoch.ok_or("playback never ran")?;
    let mut reader = hound::WavReader::open(&out_wav).map_err(|e| e.to_string())?;
    let output: Vec<f32> = reader.samples::<i16>().filter_map(Result::ok).map(|s| f32::from(s) / 32768.0).collect();

    let refs = onsets(&reference, THRESHOLD, QUIET);
    let outs = onsets(&output, THRESHOLD, QUIET);
    let mut added = Vec::new();
    for (&r, &o) in refs.iter().zip(outs.iter()).skip(1) {
        let (p, offset) = (r / (2 * FRAME), r % (2 * FRAME));
        let could_play = arrived[p] + Duration::from_secs_f64(offset as f64 / RATE);
        let played_at = play_epoch + Duration::from_secs_f64(o as f64 / RATE);
        added.push(played_at.saturating_duration_since(could_play).as_secs_f64() * 1e3);
    }
    median(added)
}
