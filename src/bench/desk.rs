//! The dispatch desk: what monitoring many channels costs, and what the mixer adds to latency.
//!
//! - [`run_kernel`] (`roipd bench-kernel desk`, run under callgrind by `roipd bench`): 50
//!   monitored channels into a stereo desk output, 5 of them talking (speech-like Opus streams,
//!   20 ms packets on time), the other 45 idle (no packets at all), plus the desk talking on
//!   the selected channel (its microphone through a receive path: DSP and one Opus encode).
//! - [`mixer_added_latency_ms`]: tone-burst talk-spurts on one channel of 50, in virtual time.

use std::time::{Duration, Instant};

use super::signal::speechlike;
use crate::codec::{Decoder, Encoder, EncoderConfig, MAX_FRAME_SAMPLES, MAX_PACKET_BYTES};
use crate::core::jitter::JitterConfig;
use crate::dsp::RxConfig;
use crate::pipeline::{MediaPacket, MixChannelConfig, Mixer, MixerConfig, RxPath};

const FRAME: usize = 480; // 10 ms device frame
const PACKET: usize = 960; // 20 ms Opus frame
pub const CHANNELS: usize = 50;
/// The talking channels; the desk is selected on (and talks on) channel 0.
pub const ACTIVE: [usize; 5] = [3, 13, 23, 33, 43];
const SELECTED: usize = 0;

fn encode(pcm: &[f32]) -> Result<Vec<Vec<u8>>, String> {
    let mut enc = Encoder::new(EncoderConfig::default()).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; MAX_PACKET_BYTES];
    pcm.chunks_exact(PACKET)
        .map(|f| enc.encode(f, &mut buf).map(|n| buf[..n].to_vec()).map_err(|e| e.to_string()))
        .collect()
}

fn desk_mixer(jitter: JitterConfig) -> Result<Mixer, String> {
    // Channels spread from left to right across the headset.
    let channels = (0..CHANNELS)
        .map(|i| MixChannelConfig { pan: -1.0 + 2.0 * i as f32 / (CHANNELS - 1) as f32, ..Default::default() })
        .collect();
    let mut m =
        Mixer::new(MixerConfig { channels, stereo: true, jitter, ..Default::default() }).map_err(|e| e.to_string())?;
    m.select(Some(SELECTED)).map_err(|e| e.to_string())?;
    Ok(m)
}

/// `seconds` of the desk scenario on one thread, no devices, no clock (see the module docs).
/// One second of speech is encoded up front and looped, so its cost does not scale.
pub fn run_kernel(seconds: u32) -> Result<(), String> {
    let signal = speechlike(48_000);
    let payloads = encode(&signal)?;
    // Each talker starts at a different place in the loop; packets are built once and
    // restamped in place, so the loop allocates nothing.
    let mut streams: Vec<Vec<MediaPacket>> = ACTIVE
        .iter()
        .enumerate()
        .map(|(k, _)| {
            (0..payloads.len())
                .map(|j| MediaPacket {
                    seq: 0,
                    timestamp: 0,
                    marker: false,
                    payload: payloads[(j + 10 * k) % payloads.len()].clone(),
                })
                .collect()
        })
        .collect();
    let mut mixer = desk_mixer(JitterConfig::default())?;
    let mut mic = RxPath::new(&RxConfig::default(), &EncoderConfig::default(), false).map_err(|e| e.to_string())?;
    let mut frame = [0.0f32; FRAME];
    let mut out = [0.0f32; 2 * FRAME];
    let t0 = Instant::now();
    for i in 0..seconds as usize * 100 {
        let now = t0 + Duration::from_millis(i as u64 * 10);
        let at = (i % 100) * FRAME;
        frame.copy_from_slice(&signal[at..at + FRAME]);
        std::hint::black_box(mic.process(&mut frame, true));
        if i % 2 == 0 {
            let k = i / 2;
            for (stream, &channel) in streams.iter_mut().zip(&ACTIVE) {
                let len = stream.len();
                let p = &mut stream[k % len];
                (p.seq, p.timestamp, p.marker) = (k as u16, (k * PACKET) as u32, k == 0);
                mixer.push(now, channel, p).map_err(|e| e.to_string())?;
            }
        }
        std::hint::black_box(mixer.mix(now, &mut out));
    }
    let decodes: u64 =
        (0..CHANNELS).filter(|c| !ACTIVE.contains(c)).map(|c| mixer.channel_stats(c).map_or(0, |s| s.decodes)).sum();
    if decodes != 0 {
        return Err(format!("idle channels decoded {decodes} frames"));
    }
    Ok(())
}

/// What the mixer adds between the jitter buffer and the output, in ms (median over bursts).
///
/// Four 200 ms tone bursts, each a talk-spurt of its own (marker, then nothing for 300 ms, as
/// with DTX), on one channel of a 50-channel desk, the other 49 idle. The jitter buffer is set
/// to a one-frame target without a scheduling margin, so on this jitter-free simulated network
/// every packet is due the moment it arrives, and packets arrive at the instant of a 10 ms `mix` call. Added latency
/// is the time from a burst's packet arriving to the burst's onset in the mixer output, less
/// the onset's offset within that packet (found by decoding the same packets directly).
/// Zero means the mixer plays a due packet in the very call it arrives in.
pub fn mixer_added_latency_ms() -> Result<f64, String> {
    const BURSTS: usize = 4;
    const BURST_PACKETS: usize = 10;
    const SPURT_FRAMES: usize = 50; // 500 ms: 200 ms of tone, 300 ms of nothing
    const CHANNEL: usize = 17;
    let tone: Vec<f32> = (0..BURST_PACKETS * PACKET)
        .map(|i| 0.25 * (std::f32::consts::TAU * 1000.0 * i as f32 / 48_000.0).sin())
        .collect();
    // Every burst is the same packets (a fresh encoder on the same tone).
    let payloads = encode(&tone)?;
    // Where the onset is in a burst's packets: a plain decoder, fresh as the mixer's is at the
    // first burst (at the later ones, its concealment of the end of the previous burst has
    // faded out to the same silence).
    let mut dec = Decoder::new().map_err(|e| e.to_string())?;
    let (mut reference, mut pcm) = (Vec::new(), vec![0.0f32; MAX_FRAME_SAMPLES]);
    for p in &payloads {
        let n = dec.decode(p, &mut pcm).map_err(|e| e.to_string())?;
        reference.extend_from_slice(&pcm[..n]);
    }

    let ms = Duration::from_millis;
    let mut mixer = desk_mixer(JitterConfig { min_depth: ms(20), margin: Duration::ZERO, ..Default::default() })?;
    mixer.select(None).map_err(|e| e.to_string())?;
    // Hard left: the left side carries the channel at unity gain.
    mixer.set_pan(CHANNEL, -1.0).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let (mut output, mut out) = (Vec::new(), [0.0f32; 2 * FRAME]);
    // Device frame at which each packet arrived.
    let mut arrived = Vec::new();
    for f in 0..BURSTS * SPURT_FRAMES {
        let now = t0 + ms(10 * f as u64);
        let in_spurt = f % SPURT_FRAMES;
        if in_spurt % 2 == 0 && in_spurt / 2 < BURST_PACKETS {
            let k = arrived.len();
            let payload = payloads[k % BURST_PACKETS].clone();
            let p = MediaPacket { seq: k as u16, timestamp: (f * FRAME) as u32, marker: in_spurt == 0, payload };
            mixer.push(now, CHANNEL, &p).map_err(|e| e.to_string())?;
            arrived.push(f);
        }
        mixer.mix(now, &mut out);
        output.extend(out.iter().step_by(2));
    }

    let loud = |x: &[f32]| x.iter().position(|v| v.abs() > 0.05);
    let r = loud(&reference).ok_or("no onset in the reference")?;
    let mut added = Vec::new();
    for b in 0..BURSTS {
        let o0 = b * SPURT_FRAMES * FRAME;
        let o = o0 + loud(&output[o0..o0 + SPURT_FRAMES * FRAME]).ok_or("no onset in the mixer output")?;
        let (packet, offset) = (b * BURST_PACKETS + r / PACKET, r % PACKET);
        let could_play = arrived[packet] * FRAME + offset;
        added.push((o as f64 - could_play as f64) / 48.0);
    }
    added.sort_by(|a, b| a.total_cmp(b));
    Ok(added[added.len() / 2])
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_mixer_adds_no_latency_and_the_kernel_runs() {
        let added = super::mixer_added_latency_ms().unwrap();
        assert!(added.abs() < 0.5, "{added} ms");
        super::run_kernel(1).unwrap();
    }
}
