//! Pipeline work loops: timed per frame (with unpaced sim devices), and the deterministic
//! single-thread kernels that `roipd bench` runs under callgrind in a child process.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::signal::speechlike;
use crate::audio::{AudioOptions, CaptureHandle, Pacing, PlaybackHandle};
use crate::codec::{Decoder, Encoder, EncoderConfig, MAX_FRAME_SAMPLES, MAX_PACKET_BYTES};
use crate::core::jitter::JitterConfig;
use crate::dsp::{CourtesyToneConfig, CtcssConfig, CtcssDecoder, DtmfConfig, DtmfDecoder, RxConfig, TxConfig};
use crate::pipeline::{MediaPacket, RxPath, TxGate, TxPath};

const FRAME: usize = 480; // 10 ms device frame
const FRAME_MS: u64 = 10;

pub struct FrameCosts {
    pub rx_us: f64,
    pub tx_us: f64,
}

fn rx_path(vox: bool) -> Result<RxPath, String> {
    RxPath::new(&RxConfig::default(), &EncoderConfig::default(), vox).map_err(|e| e.to_string())
}

fn tx_path() -> Result<TxPath, String> {
    TxPath::new(&TxConfig::default(), JitterConfig::default(), &CourtesyToneConfig::default(), Duration::ZERO)
        .map_err(|e| e.to_string())
}

/// Encode `signal` into 20 ms packets as a talking port would.
fn packets_of(signal: &[f32]) -> Result<Vec<MediaPacket>, String> {
    let mut rx = rx_path(false)?;
    let mut frame = [0.0f32; FRAME];
    Ok(signal
        .chunks_exact(FRAME)
        .filter_map(|c| {
            frame.copy_from_slice(c);
            rx.process(&mut frame, true).packet
        })
        .collect())
}

/// Microseconds per device frame through each path, devices running unpaced.
pub fn frame_costs(seconds: u32) -> Result<FrameCosts, String> {
    let frames = seconds.max(1) as usize * 100;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let wav = dir.path().join("speech.wav");
    write_wav(&wav, &speechlike(48_000 * 2))?;
    let opts = AudioOptions { pacing: Pacing::Fast, ..Default::default() };

    let capture = CaptureHandle::open(&format!("sim:wav:{}", wav.display()), &opts).map_err(|e| e.to_string())?;
    let mut rx = rx_path(false)?;
    let mut frame = vec![0.0f32; FRAME];
    // Time our work, not the wait for the device thread: each frame is read once it is queued.
    let mut busy = Duration::ZERO;
    for _ in 0..frames {
        let waited = Instant::now();
        while capture.queued() == 0 {
            if waited.elapsed() > Duration::from_secs(5) {
                return Err("capture device produced nothing".into());
            }
            std::thread::yield_now();
        }
        let start = Instant::now();
        capture.try_recv(&mut frame).map_err(|e| format!("capture: {e:?}"))?;
        rx.process(&mut frame, true);
        busy += start.elapsed();
    }
    let rx_us = busy.as_secs_f64() * 1e6 / frames as f64;
    capture.stop();

    let packets = packets_of(&speechlike(frames * FRAME))?;
    let playback = PlaybackHandle::open("sim:null", &opts).map_err(|e| e.to_string())?;
    let mut tx = tx_path()?;
    let t0 = Instant::now();
    let start = Instant::now();
    for i in 0..frames {
        // Virtual arrival time: packets on time, every other device frame.
        let now = t0 + Duration::from_millis(i as u64 * FRAME_MS);
        if i % 2 == 0 {
            if let Some(p) = packets.get(i / 2) {
                tx.push(now, p);
            }
        }
        tx.fill(now, TxGate::Open, &mut frame);
        playback.push(&frame).map_err(|e| format!("playback: {e:?}"))?;
    }
    let tx_us = start.elapsed().as_secs_f64() * 1e6 / frames as f64;
    playback.stop();
    Ok(FrameCosts { rx_us, tx_us })
}

/// Write 48 kHz mono 16-bit WAV.
pub fn write_wav(path: &Path, samples: &[f32]) -> Result<(), String> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).map_err(|e| e.to_string())?;
    for s in samples {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16).map_err(|e| e.to_string())?;
    }
    w.finalize().map_err(|e| e.to_string())
}

/// What a callgrind child process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kernel {
    /// One talking radio port: receive path on its audio and transmit path on a channel stream.
    Busy,
    /// Opus alone: encode and decode of the same signal with the same settings.
    Codec,
    /// A radio port with COR closed and the channel idle.
    Idle,
    /// A dispatch desk: 50 monitored channels, 5 talking, the desk talking on one.
    Desk,
    /// The recorder of one busy channel (`core::record`): a 20 ms packet every 20 ms, a new
    /// transmission every 10 s, its Ogg pages collected (the writer thread's disk I/O is not
    /// in it).
    Record,
    /// The CTCSS and DTMF decoders of one radio port on its receive audio.
    Signalling,
}

/// Run `seconds` of audio through a kernel on one thread, no devices, no clock.
/// One second of signal is generated up front and looped, so its cost does not scale.
pub fn run_kernel(kernel: Kernel, seconds: u32) -> Result<(), String> {
    let signal = speechlike(48_000);
    let frames = seconds as usize * 100;
    let mut frame = [0.0f32; FRAME];
    let chunk = |i: usize| &signal[(i % 100) * FRAME..(i % 100 + 1) * FRAME];
    let t0 = Instant::now();
    match kernel {
        Kernel::Busy => {
            let (mut rx, mut tx) = (rx_path(false)?, tx_path()?);
            let channel = packets_of(&signal)?;
            let mut out = [0.0f32; FRAME];
            for i in 0..frames {
                let now = t0 + Duration::from_millis(i as u64 * FRAME_MS);
                frame.copy_from_slice(chunk(i));
                std::hint::black_box(rx.process(&mut frame, true));
                if i % 2 == 0 {
                    let mut p = channel[(i / 2) % channel.len()].clone();
                    p.seq = (i / 2) as u16;
                    p.timestamp = (i * FRAME) as u32;
                    tx.push(now, &p);
                }
                tx.fill(now, TxGate::Open, &mut out);
                std::hint::black_box(&out);
            }
        }
        Kernel::Codec => {
            let mut enc = Encoder::new(EncoderConfig::default()).map_err(|e| e.to_string())?;
            let mut dec = Decoder::new().map_err(|e| e.to_string())?;
            let (mut packet, mut pcm) = (vec![0u8; MAX_PACKET_BYTES], vec![0.0f32; MAX_FRAME_SAMPLES]);
            for i in 0..frames / 2 {
                let at = (i % 50) * 2 * FRAME;
                let n = enc.encode(&signal[at..at + 2 * FRAME], &mut packet).map_err(|e| e.to_string())?;
                dec.decode(&packet[..n], &mut pcm).map_err(|e| e.to_string())?;
                std::hint::black_box(&pcm);
            }
        }
        Kernel::Desk => super::desk::run_kernel(seconds)?,
        Kernel::Record => {
            use crate::core::record::{ChannelRecorder, RecordConfig, SourceKind, TalkerInfo};
            let channel = packets_of(&signal)?;
            let mut rec = ChannelRecorder::new("ops", RecordConfig::default());
            let talker = TalkerInfo { name: "radio1".into(), source: SourceKind::Radio, priority: 0 };
            let mut bytes = 0usize;
            for i in 0..frames / 2 {
                let now = t0 + Duration::from_millis(i as u64 * 2 * FRAME_MS);
                if i % 500 == 0 {
                    rec.floor_taken(now, 1_700_000_000_000 + i as u64 * 20, talker.clone());
                }
                let p = &channel[i % channel.len()];
                rec.packet(now, (i * 2 * FRAME) as u32, &p.payload);
                while let Some(out) = rec.poll_output() {
                    bytes += match out {
                        crate::core::record::RecordOutput::Begin { bytes, .. }
                        | crate::core::record::RecordOutput::Data { bytes, .. }
                        | crate::core::record::RecordOutput::End { bytes, .. } => bytes.len(),
                    };
                }
            }
            std::hint::black_box(bytes);
        }
        Kernel::Signalling => {
            let mut ctcss = CtcssDecoder::new(&CtcssConfig::default());
            let mut dtmf = DtmfDecoder::new(&DtmfConfig::default());
            for i in 0..frames {
                std::hint::black_box(ctcss.process(chunk(i)));
                dtmf.process(chunk(i));
                while let Some(e) = dtmf.poll_event() {
                    std::hint::black_box(e);
                }
            }
        }
        Kernel::Idle => {
            let (mut rx, mut tx) = (rx_path(false)?, tx_path()?);
            let mut out = [0.0f32; FRAME];
            for i in 0..frames {
                let now = t0 + Duration::from_millis(i as u64 * FRAME_MS);
                frame.copy_from_slice(chunk(i));
                std::hint::black_box(rx.process(&mut frame, false));
                tx.fill(now, TxGate::Closed, &mut out);
                std::hint::black_box(&out);
            }
        }
    }
    Ok(())
}

pub struct Callgrind {
    pub busy: f64,
    pub codec: f64,
    pub idle: f64,
    pub desk: f64,
    pub record: f64,
    pub signalling: f64,
}

/// Million instructions per audio-second of each kernel: two runs of different lengths,
/// so start-up and signal generation cancel out.
pub fn callgrind_figures() -> Result<Callgrind, String> {
    if Command::new("valgrind").arg("--version").output().is_err() {
        return Err("valgrind not installed".into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let per_second = |kernel: &str| -> Result<f64, String> {
        let (short, long) = (1u32, 6u32);
        let a = collected(&exe, kernel, short)?;
        let b = collected(&exe, kernel, long)?;
        Ok((b.saturating_sub(a)) as f64 / f64::from(long - short) / 1e6)
    };
    Ok(Callgrind {
        busy: per_second("busy")?,
        codec: per_second("codec")?,
        idle: per_second("idle")?,
        desk: per_second("desk")?,
        record: per_second("record")?,
        signalling: per_second("signalling")?,
    })
}

fn collected(exe: &Path, kernel: &str, seconds: u32) -> Result<u64, String> {
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(exe)
        .args(["bench-kernel", kernel, "--seconds", &seconds.to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("callgrind run of `{kernel}` failed: {}", stderr.lines().last().unwrap_or("")));
    }
    stderr
        .lines()
        .find_map(|l| l.split_once("Collected :").map(|(_, n)| n.trim().parse::<u64>()))
        .and_then(Result::ok)
        .ok_or_else(|| "no instruction count in callgrind output".into())
}
