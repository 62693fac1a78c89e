//! Opus encoder/decoder for radio voice: 48 kHz mono f32, application VOIP.
//!
//! Defaults are chosen for FM radio audio on a small board: the audio is band-limited to
//! 300–3000 Hz by the radios, so narrowband SILK (4 kHz audio) carries all of it; in-band FEC
//! is on because lossy uplinks are the normal case.

use audiopus::coder::{Decoder as OpusDecoder, Encoder as OpusEncoder, GenericCtl};
use audiopus::{Application, Bitrate, Channels, ErrorCode, SampleRate, Signal};

use super::{CodecError, FrameDuration, Result, MAX_FRAME_SAMPLES};

/// Audio bandwidth of the coded signal (set explicitly: the automatic choice wastes bits on
/// radio audio that has nothing above 3 kHz).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bandwidth {
    /// 4 kHz audio: covers the FM voice channel (300–3000 Hz).
    #[default]
    Narrowband,
    /// 6 kHz audio.
    Mediumband,
    /// 8 kHz audio.
    Wideband,
    /// 12 kHz audio.
    Superwideband,
    /// 20 kHz audio.
    Fullband,
}

impl From<Bandwidth> for audiopus::Bandwidth {
    fn from(b: Bandwidth) -> Self {
        match b {
            Bandwidth::Narrowband => audiopus::Bandwidth::Narrowband,
            Bandwidth::Mediumband => audiopus::Bandwidth::Mediumband,
            Bandwidth::Wideband => audiopus::Bandwidth::Wideband,
            Bandwidth::Superwideband => audiopus::Bandwidth::Superwideband,
            Bandwidth::Fullband => audiopus::Bandwidth::Fullband,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderConfig {
    pub frame: FrameDuration,
    /// 500..=512000. Default 48 kb/s (about 43 kb/s on speech: SILK narrowband spends less
    /// than asked), the knee for a 1 kHz tone radio → radio with the FEC copy on (virtual-time
    /// path, `pipeline::fidelity`, libopus 1.3.1; steady SNR / worst while settling / onset
    /// error): 24 kb/s 37 / 14 / 3.8 dB, 32 kb/s 37 / 22 / 1.6, 40 kb/s 42 / 29 / 0.6,
    /// 48 kb/s 44 / 35 / 0.3, 64 kb/s 44 / 37 / 0.2. The FEC copy (LBRR) comes out of
    /// this budget: libopus turns FEC on only when its "equivalent rate" (bitrate x 0.91 for
    /// complexity 1, x 0.8 below complexity 2, less loss/(6 loss + 10)) clears a threshold per
    /// bandwidth (x 1.15 at 10 % loss: ~15 kb/s narrowband, ~20 kb/s wideband), and otherwise
    /// lowers the bandwidth until it does. So 24 kb/s "wideband" at 10 % loss actually coded
    /// mediumband with an LBRR copy that starved the primary (18-26 dB, level wobbling by
    /// 2.4 dB), and wideband with FEC needs ~32 kb/s and costs 30 % more CPU than narrowband.
    pub bitrate_bps: u32,
    /// 0..=10. Default 1, from callgrind on x86 (libopus 1.3.1, 20 ms, 24 kb/s with FEC, which
    /// coded mediumband; encode and decode per audio-second): complexity 5 costs 90 M
    /// instructions, 3 costs 77 M, 2 costs 71 M, 1 costs 40 M (narrowband 48 kb/s: 32 M).
    /// Only 1 keeps a busy port (codec plus DSP: 48 M then, 42 M now) inside 5% of a
    /// Raspberry Pi 4 core (~75 M on x86); on band-limited, noisy FM audio the extra search of
    /// higher settings buys nothing audible. `roipd bench` reports the figures.
    pub complexity: u8,
    /// Narrowband by default: radio audio has nothing above 3 kHz, and SILK at 8 kHz costs
    /// about 25 % fewer instructions than at 12 or 16 kHz (callgrind, encode + decode).
    pub bandwidth: Bandwidth,
    /// In-band FEC (SILK LBRR): each packet carries a coarse copy of the previous frame.
    pub fec: bool,
    /// Discontinuous transmission: silent frames encode to 1–2 bytes that need not be sent.
    /// Off by default: Opus's voice detector judges a steady tone (a test tone, DTMF, a far
    /// station's CW ID or courtesy beep) to be background after about a second and replaces it
    /// with comfort noise (measured: a 1 kHz tone fell from -18 to -40 dBFS). roipd encodes only
    /// while COR/VOX is open, so DTX would save little anyway.
    pub dtx: bool,
    /// Expected loss (0..=100); tells the encoder how much to spend on FEC.
    pub packet_loss_pct: u8,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self {
            frame: FrameDuration::Ms20,
            bitrate_bps: 48_000,
            complexity: 1,
            bandwidth: Bandwidth::Narrowband,
            fec: true,
            dtx: false,
            packet_loss_pct: 10,
        }
    }
}

fn opus_err(e: audiopus::Error) -> CodecError {
    match e {
        audiopus::Error::EmptyPacket => CodecError::EmptyPacket,
        audiopus::Error::Opus(ErrorCode::InvalidPacket) => CodecError::InvalidPacket,
        other => CodecError::Opus(other.to_string()),
    }
}

fn check_bitrate(bps: u32) -> Result<i32> {
    match bps {
        500..=512_000 => Ok(bps as i32),
        _ => Err(CodecError::InvalidSetting("bitrate must be 500..=512000 bps")),
    }
}

fn check_loss(pct: u8) -> Result<u8> {
    if pct <= 100 {
        Ok(pct)
    } else {
        Err(CodecError::InvalidSetting("packet loss must be 0..=100 %"))
    }
}

/// Opus encoder for one outgoing stream.
#[derive(Debug)]
pub struct Encoder {
    inner: OpusEncoder,
    cfg: EncoderConfig,
}

impl Encoder {
    pub fn new(cfg: EncoderConfig) -> Result<Self> {
        if cfg.complexity > 10 {
            return Err(CodecError::InvalidSetting("complexity must be 0..=10"));
        }
        let bitrate = check_bitrate(cfg.bitrate_bps)?;
        let loss = check_loss(cfg.packet_loss_pct)?;
        let mut inner = OpusEncoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip).map_err(opus_err)?;
        inner.set_bitrate(Bitrate::BitsPerSecond(bitrate)).map_err(opus_err)?;
        inner.set_complexity(cfg.complexity).map_err(opus_err)?;
        inner.set_bandwidth(cfg.bandwidth.into()).map_err(opus_err)?;
        // Voice keeps the encoder in SILK, the only mode that has in-band FEC.
        inner.set_signal(Signal::Voice).map_err(opus_err)?;
        inner.set_inband_fec(cfg.fec).map_err(opus_err)?;
        inner.set_packet_loss_perc(loss).map_err(opus_err)?;
        inner.set_encoder_ctl_request(audiopus::ffi::OPUS_SET_DTX_REQUEST, i32::from(cfg.dtx)).map_err(opus_err)?;
        Ok(Self { inner, cfg })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    /// Samples per input frame (480, 960, 1920 or 2880).
    pub fn frame_samples(&self) -> usize {
        self.cfg.frame.samples()
    }

    /// Encoder delay in samples: decoded audio lags the input by this much.
    pub fn lookahead(&self) -> Result<usize> {
        self.inner.lookahead().map(|n| n as usize).map_err(opus_err)
    }

    /// Encodes exactly one frame into `out` and returns the packet length. No allocation.
    /// With DTX on, a result of 1–2 bytes is a silence frame that need not be sent.
    pub fn encode(&mut self, pcm: &[f32], out: &mut [u8]) -> Result<usize> {
        let expected = self.frame_samples();
        if pcm.len() != expected {
            return Err(CodecError::FrameSize { expected, got: pcm.len() });
        }
        if out.len() < 2 {
            return Err(CodecError::BufferTooSmall { need: 2, got: out.len() });
        }
        // libopus caps its output at i32::MAX bytes; anything past 4000 is never used anyway.
        let n = out.len().min(super::MAX_PACKET_BYTES);
        self.inner.encode_float(pcm, &mut out[..n]).map_err(opus_err)
    }

    /// Loss the receivers report (e.g. from RTCP), so FEC gets the bits it needs.
    pub fn set_packet_loss(&mut self, pct: u8) -> Result<()> {
        self.inner.set_packet_loss_perc(check_loss(pct)?).map_err(opus_err)?;
        self.cfg.packet_loss_pct = pct;
        Ok(())
    }

    /// Forgets the audio before (a new talk-spurt does not continue the last one).
    pub fn reset(&mut self) -> Result<()> {
        self.inner.reset_state().map_err(opus_err)
    }

    pub fn set_bitrate(&mut self, bps: u32) -> Result<()> {
        self.inner.set_bitrate(Bitrate::BitsPerSecond(check_bitrate(bps)?)).map_err(opus_err)?;
        self.cfg.bitrate_bps = bps;
        Ok(())
    }
}

/// Samples (at 48 kHz) of audio in an Opus packet, read from its TOC byte (RFC 6716 §3.1).
/// Rejects what libopus would reject: empty packets, a missing frame count, more than 120 ms.
pub fn packet_samples(packet: &[u8]) -> Result<usize> {
    let toc = *packet.first().ok_or(CodecError::EmptyPacket)?;
    let config = usize::from(toc >> 3);
    let per_frame = match config {
        // SILK-only: 10, 20, 40, 60 ms.
        0..=11 => [480, 960, 1920, 2880][config % 4],
        // Hybrid: 10, 20 ms.
        12..=15 => [480, 960][config % 2],
        // CELT-only: 2.5, 5, 10, 20 ms.
        _ => [120, 240, 480, 960][config % 4],
    };
    let frames = match toc & 0x3 {
        0 => 1,
        1 | 2 => 2,
        _ => usize::from(*packet.get(1).ok_or(CodecError::InvalidPacket)? & 0x3f),
    };
    let total = per_frame * frames;
    if frames == 0 || total > MAX_FRAME_SAMPLES {
        return Err(CodecError::InvalidPacket);
    }
    Ok(total)
}

/// Opus decoder for one incoming stream.
#[derive(Debug)]
pub struct Decoder {
    inner: OpusDecoder,
    /// Length of the last decoded frame: what a concealed frame must cover.
    frame: usize,
}

impl Decoder {
    pub fn new() -> Result<Self> {
        let inner = OpusDecoder::new(SampleRate::Hz48000, Channels::Mono).map_err(opus_err)?;
        Ok(Self { inner, frame: FrameDuration::default().samples() })
    }

    /// Samples the next concealed frame will have (the last decoded packet's length; 20 ms
    /// before any packet).
    pub fn frame_samples(&self) -> usize {
        self.frame
    }

    /// Decodes one packet into `out` and returns the sample count. Malformed input is an error,
    /// never a panic; the caller should [`conceal`](Self::conceal) that frame instead.
    pub fn decode(&mut self, packet: &[u8], out: &mut [f32]) -> Result<usize> {
        let n = packet_samples(packet)?;
        let out = sized(out, n)?;
        let got = self.inner.decode_float(Some(packet), out, false).map_err(opus_err)?;
        self.frame = got;
        Ok(got)
    }

    /// Recovers the frame lost just before `next_packet` from that packet's in-band FEC.
    /// The lost frame is taken to be as long as `next_packet` (one stream keeps one frame
    /// size). Without FEC data in `next_packet`, libopus falls back to concealment.
    /// Decode `next_packet` itself normally afterwards.
    pub fn decode_fec(&mut self, next_packet: &[u8], out: &mut [f32]) -> Result<usize> {
        let n = packet_samples(next_packet)?;
        let out = sized(out, n)?;
        self.inner.decode_float(Some(next_packet), out, true).map_err(opus_err)
    }

    /// Packet loss concealment: synthesises one frame of [`frame_samples`](Self::frame_samples).
    pub fn conceal(&mut self, out: &mut [f32]) -> Result<usize> {
        let out = sized(out, self.frame)?;
        self.inner.decode_float(None::<&[u8]>, out, false).map_err(opus_err)
    }

    /// Forgets the previous stream (e.g. a new talker after a resync).
    pub fn reset(&mut self) -> Result<()> {
        self.inner.reset_state().map_err(opus_err)
    }
}

/// The first `n` samples of `out`: libopus needs the exact frame length for FEC and PLC.
fn sized(out: &mut [f32], n: usize) -> Result<&mut [f32]> {
    let got = out.len();
    out.get_mut(..n).ok_or(CodecError::BufferTooSmall { need: n, got })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{MAX_PACKET_BYTES, SAMPLE_RATE};
    use std::f32::consts::TAU;

    const FS: f32 = SAMPLE_RATE as f32;

    fn db(x: f32) -> f32 {
        20.0 * x.log10()
    }

    fn rms(x: &[f32]) -> f32 {
        (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
    }

    fn tone(freq: f32, dbfs: f32, samples: usize) -> Vec<f32> {
        let a = 10f32.powf(dbfs / 20.0);
        (0..samples).map(|i| a * (TAU * freq * i as f32 / FS).sin()).collect()
    }

    /// Speech-like test signal: a buzz with wandering pitch (110–190 Hz), decaying harmonics
    /// and a 4 Hz syllable envelope, so PLC cannot simply repeat the last period.
    fn voice(samples: usize) -> Vec<f32> {
        let mut phase = 0.0f32;
        (0..samples)
            .map(|i| {
                let t = i as f32 / FS;
                let f0 = 150.0 + 40.0 * (TAU * 1.3 * t).sin();
                phase += TAU * f0 / FS;
                let env = 0.5 - 0.5 * (TAU * 4.0 * t).cos();
                let buzz: f32 = (1..=12).map(|h| (phase * h as f32).sin() / h as f32).sum();
                0.25 * env * buzz
            })
            .collect()
    }

    /// Encodes `pcm` frame by frame; returns the packets.
    fn encode_all(enc: &mut Encoder, pcm: &[f32]) -> Vec<Vec<u8>> {
        let mut out = [0u8; MAX_PACKET_BYTES];
        pcm.chunks_exact(enc.frame_samples())
            .map(|frame| {
                let n = enc.encode(frame, &mut out).expect("encode");
                out[..n].to_vec()
            })
            .collect()
    }

    fn decode_all(packets: &[Vec<u8>]) -> Vec<f32> {
        let mut dec = Decoder::new().unwrap();
        let mut buf = [0f32; MAX_FRAME_SAMPLES];
        let mut pcm = Vec::new();
        for p in packets {
            let n = dec.decode(p, &mut buf).expect("decode");
            pcm.extend_from_slice(&buf[..n]);
        }
        pcm
    }

    /// Frequency from interpolated upward zero crossings.
    fn zero_crossing_freq(x: &[f32]) -> f32 {
        let ups: Vec<f32> = x
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w[0] < 0.0 && w[1] >= 0.0)
            .map(|(i, w)| i as f32 + w[0] / (w[0] - w[1]))
            .collect();
        (ups.len() - 1) as f32 * FS / (ups[ups.len() - 1] - ups[0])
    }

    /// Lag (in samples, 0..max) at which `y` best matches `x`.
    fn best_lag(x: &[f32], y: &[f32], max: usize) -> usize {
        let score = |lag: usize| -> f32 { x.iter().zip(&y[lag..]).map(|(a, b)| a * b).sum() };
        (0..max).max_by(|a, b| score(*a).total_cmp(&score(*b))).unwrap()
    }

    fn correlation(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        dot / (a.iter().map(|x| x * x).sum::<f32>() * b.iter().map(|y| y * y).sum::<f32>()).sqrt()
    }

    #[test]
    fn defaults_are_radio_voice_settings() {
        let cfg = EncoderConfig::default();
        assert_eq!(cfg.frame, FrameDuration::Ms20);
        assert_eq!((cfg.bitrate_bps, cfg.complexity, cfg.packet_loss_pct), (48_000, 1, 10));
        assert_eq!(cfg.bandwidth, Bandwidth::Narrowband);
        assert!(cfg.fec && !cfg.dtx);
        let enc = Encoder::new(cfg).unwrap();
        assert!(enc.inner.inband_fec().unwrap());
        assert_eq!(enc.inner.complexity().unwrap(), 1);
        assert_eq!(enc.inner.encoder_ctl_request(audiopus::ffi::OPUS_GET_DTX_REQUEST).unwrap(), 0);
    }

    /// The TOC's bandwidth (SILK-only configs 0-11: NB, MB, WB) and whether the SILK frame
    /// carries an LBRR (FEC) copy: with one 20 ms mono frame, the first two range-coded bits
    /// are the VAD and LBRR flags (RFC 6716 4.2.3).
    fn silk_bandwidth_and_lbrr(packet: &[u8]) -> (Option<Bandwidth>, bool) {
        let bw = match packet[0] >> 3 {
            0..=3 => Some(Bandwidth::Narrowband),
            4..=7 => Some(Bandwidth::Mediumband),
            8..=11 => Some(Bandwidth::Wideband),
            _ => None,
        };
        (bw, packet.len() > 1 && packet[1] & 0x40 != 0)
    }

    /// libopus (1.3.1) turns FEC on only when the bitrate leaves room for it, and otherwise
    /// narrows the bandwidth until it does: the old default (wideband, 24 kb/s, 10 % loss)
    /// silently coded mediumband with a copy that starved the primary. The default now codes
    /// what it says: narrowband, with the FEC copy in (nearly) every voiced packet.
    #[test]
    fn defaults_code_narrowband_with_fec_as_configured() {
        let speech = voice(960 * 50);
        let run = |cfg: EncoderConfig| -> Vec<(Option<Bandwidth>, bool)> {
            let mut enc = Encoder::new(cfg).unwrap();
            encode_all(&mut enc, &speech).iter().skip(5).map(|p| silk_bandwidth_and_lbrr(p)).collect()
        };
        let d = run(EncoderConfig::default());
        assert!(d.iter().all(|&(bw, _)| bw == Some(Bandwidth::Narrowband)), "{d:?}");
        assert!(d.iter().filter(|&&(_, lbrr)| lbrr).count() * 10 >= d.len() * 9, "{d:?}");
        let old = run(EncoderConfig { bandwidth: Bandwidth::Wideband, bitrate_bps: 24_000, ..Default::default() });
        assert!(old.iter().all(|&(bw, _)| bw == Some(Bandwidth::Mediumband)), "{old:?}");
    }

    #[test]
    fn round_trip_1khz_tone_keeps_frequency_and_level() {
        let input = tone(1000.0, -12.0, SAMPLE_RATE as usize); // 1 s
        let mut enc = Encoder::new(EncoderConfig::default()).unwrap();
        let output = decode_all(&encode_all(&mut enc, &input));
        assert_eq!(output.len(), input.len());

        // Skip the first 100 ms (codec start-up), then align by the measured codec delay.
        let skip = 4800;
        let lag = best_lag(&input[skip..skip + 9600], &output[skip..], 960);
        let steady = &output[skip + lag..];
        let freq = zero_crossing_freq(steady);
        let level = db(rms(steady) * 2f32.sqrt()); // peak-equivalent dBFS of a sine
        let lookahead = enc.lookahead().unwrap();
        eprintln!(
            "round trip: {freq:.2} Hz (error {:+.2} Hz), level {level:.2} dBFS (error {:+.2} dB); \
             aligned at lag {lag} (a tone only fixes it modulo 48); encoder lookahead {lookahead}",
            freq - 1000.0,
            level + 12.0,
        );
        assert!((freq - 1000.0).abs() < 2.0, "frequency {freq}");
        assert!((level + 12.0).abs() <= 1.5, "level {level} dBFS");
        assert!(correlation(&input[skip..skip + steady.len()], steady) > 0.95);
    }

    #[test]
    fn every_frame_duration_round_trips() {
        for frame in FrameDuration::ALL {
            let mut enc = Encoder::new(EncoderConfig { frame, ..Default::default() }).unwrap();
            let input = tone(700.0, -12.0, frame.samples() * (600 / frame.millis() as usize));
            let packets = encode_all(&mut enc, &input);
            for p in &packets {
                assert_eq!(packet_samples(p).unwrap(), frame.samples(), "{frame:?}");
            }
            let out = decode_all(&packets);
            assert_eq!(out.len(), input.len());
            let level = db(rms(&out[out.len() / 2..]) * 2f32.sqrt());
            eprintln!("{} ms frames: {} packets, level {level:.2} dBFS", frame.millis(), packets.len());
            assert!((level + 12.0).abs() <= 1.5, "{frame:?}: {level} dBFS");
        }
    }

    #[test]
    fn fec_recovers_a_lost_frame_better_than_plc() {
        let frame = 960;
        let input = voice(frame * 150);
        let mut enc = Encoder::new(EncoderConfig { packet_loss_pct: 20, ..Default::default() }).unwrap();
        let packets = encode_all(&mut enc, &input);
        // Reference: what the receiver hears with no loss at all.
        let clean = decode_all(&packets);

        let (mut fec_sum, mut plc_sum, mut trials) = (0.0, 0.0, 0);
        let mut buf = [0f32; MAX_FRAME_SAMPLES];
        // Drop one packet in each of many places (every 7th frame, past start-up).
        for k in (20..140).step_by(7) {
            let mut fec_dec = Decoder::new().unwrap();
            let mut plc_dec = Decoder::new().unwrap();
            for p in &packets[..k] {
                fec_dec.decode(p, &mut buf).unwrap();
                plc_dec.decode(p, &mut buf).unwrap();
            }
            let n = fec_dec.decode_fec(&packets[k + 1], &mut buf).unwrap();
            assert_eq!(n, frame);
            let recovered = buf[..n].to_vec();
            let n = plc_dec.conceal(&mut buf).unwrap();
            assert_eq!(n, frame);
            let concealed = buf[..n].to_vec();
            let want = &clean[k * frame..(k + 1) * frame];
            // Correlation means nothing in the pauses between "syllables".
            if rms(want) > 0.03 {
                fec_sum += correlation(&recovered, want);
                plc_sum += correlation(&concealed, want);
                trials += 1;
                assert!(rms(&recovered) > 0.3 * rms(want), "FEC frame at {k} is near silent");
            }
            // The next packet still decodes normally afterwards.
            assert_eq!(fec_dec.decode(&packets[k + 1], &mut buf).unwrap(), frame);
        }
        let (fec, plc) = (fec_sum / trials as f32, plc_sum / trials as f32);
        eprintln!("lost-frame correlation with the clean decode over {trials} drops: FEC {fec:.3}, PLC {plc:.3}");
        assert!(fec > 0.8, "FEC correlation {fec}");
        assert!(fec > plc + 0.1, "FEC {fec} should beat PLC {plc}");
    }

    #[test]
    fn dtx_shrinks_silence_to_tiny_packets() {
        let mut enc = Encoder::new(EncoderConfig { dtx: true, ..Default::default() }).unwrap();
        let mut out = [0u8; MAX_PACKET_BYTES];
        let speech = voice(960 * 10);
        for f in speech.chunks_exact(960) {
            enc.encode(f, &mut out).unwrap();
        }
        let silence = [0f32; 960];
        let sizes: Vec<usize> = (0..100).map(|_| enc.encode(&silence, &mut out).unwrap()).collect();
        let hangover = sizes.iter().position(|&n| n <= 3).unwrap_or(sizes.len());
        let rest = &sizes[hangover..];
        let tiny = rest.iter().filter(|&&n| n <= 3).count();
        eprintln!(
            "DTX on silence: tiny (<= 3 B) from frame {hangover}, then {tiny}/{} tiny; the others \
             are comfort-noise updates of {:?} B; sizes {:?}",
            rest.len(),
            rest.iter().filter(|&&n| n > 3).collect::<Vec<_>>(),
            &sizes[..40],
        );
        // SILK's hangover is about 200 ms; after it only a small comfort-noise update every
        // ~400 ms (20 frames) is bigger than 3 bytes.
        assert!(hangover <= 15, "{sizes:?}");
        assert!(tiny * 100 >= rest.len() * 90, "{sizes:?}");
        assert!(rest.iter().all(|&n| n <= 10), "{sizes:?}");
        let updates = rest.iter().enumerate().filter(|(_, &n)| n > 3).map(|(i, _)| i);
        assert!(updates.collect::<Vec<_>>().windows(2).all(|w| w[1] - w[0] >= 15), "{sizes:?}");
    }

    #[test]
    fn malformed_packets_are_errors_or_concealment_never_panics() {
        let mut enc = Encoder::new(EncoderConfig::default()).unwrap();
        let good = encode_all(&mut enc, &voice(960 * 20));
        let mut dec = Decoder::new().unwrap();
        let mut buf = [0f32; MAX_FRAME_SAMPLES];
        let mut small = [0f32; 960];
        let (mut ok, mut err) = (0, 0);
        let mut tally = |r: Result<usize>| match r {
            Ok(n) => {
                assert!(n <= MAX_FRAME_SAMPLES);
                ok += 1
            }
            Err(_) => err += 1,
        };

        assert_eq!(dec.decode(&[], &mut buf), Err(CodecError::EmptyPacket));
        assert_eq!(dec.decode_fec(&[], &mut buf), Err(CodecError::EmptyPacket));
        // Code-3 packet without its frame-count byte.
        assert_eq!(packet_samples(&[0x03]), Err(CodecError::InvalidPacket));
        // 60 ms packet into a 20 ms buffer.
        assert!(matches!(dec.decode(&[0x18], &mut small), Err(CodecError::BufferTooSmall { .. })));

        // Truncated real packets.
        for p in &good {
            for len in 0..p.len() {
                tally(dec.decode(&p[..len], &mut buf));
                tally(dec.decode_fec(&p[..len], &mut small));
            }
        }
        // Random bytes (xorshift), lengths 0..300.
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut junk = [0u8; 300];
        for _ in 0..5000 {
            let len = (rand() % 300) as usize;
            junk[..len].iter_mut().for_each(|b| *b = rand() as u8);
            tally(dec.decode(&junk[..len], &mut buf));
            tally(dec.decode_fec(&junk[..len], &mut buf));
            tally(dec.conceal(&mut buf));
        }
        eprintln!("malformed input: {ok} decoded/concealed, {err} rejected");
        assert!(err > 0 && ok > 0);
        // Still a working decoder afterwards.
        for p in &good {
            assert_eq!(dec.decode(p, &mut buf).unwrap(), 960);
        }
    }

    #[test]
    fn bad_settings_and_frame_sizes_are_errors() {
        assert!(Encoder::new(EncoderConfig { complexity: 11, ..Default::default() }).is_err());
        assert!(Encoder::new(EncoderConfig { bitrate_bps: 100, ..Default::default() }).is_err());
        assert!(Encoder::new(EncoderConfig { packet_loss_pct: 101, ..Default::default() }).is_err());
        let mut enc = Encoder::new(EncoderConfig::default()).unwrap();
        let mut out = [0u8; MAX_PACKET_BYTES];
        assert_eq!(enc.encode(&[0.0; 480], &mut out), Err(CodecError::FrameSize { expected: 960, got: 480 }));
        assert!(enc.encode(&[0.0; 960], &mut out[..1]).is_err());
        assert!(enc.set_bitrate(16_000).is_ok() && enc.set_packet_loss(5).is_ok());
        assert!(enc.set_bitrate(0).is_err() && enc.set_packet_loss(200).is_err());
        assert_eq!((enc.config().bitrate_bps, enc.config().packet_loss_pct), (16_000, 5));
        assert_eq!(FrameDuration::from_millis(40), Some(FrameDuration::Ms40));
        assert_eq!(FrameDuration::from_millis(30), None);
    }
}
