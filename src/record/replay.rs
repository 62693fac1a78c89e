//! A recording back to audio for replay on a desk's speaker (`replay_last`, issue 17): an Ogg
//! Opus file (RFC 7845, as the recorder writes it, or any mono/stereo Ogg Opus stream) decoded
//! to 48 kHz mono samples. Pure: bytes in, samples out; malformed input is an error, never a
//! panic (the file is on disk and may be anything).

use std::io::Cursor;

use crate::codec::{Decoder, MAX_FRAME_SAMPLES};

/// At most this much audio is decoded (a replay is for the last transmission, and a channel's
/// `max_talk_ms` is far below): 10 minutes, 115 MB of f32 at most.
pub const MAX_REPLAY_SAMPLES: usize = 48_000 * 600;

/// Decode an Ogg Opus file to 48 kHz mono: the OpusHead's pre-skip dropped, the end cut at the
/// last page's granule position, as `opusdec` does.
pub fn decode_ogg_opus(bytes: &[u8]) -> Result<Vec<f32>, String> {
    let mut reader = ogg::PacketReader::new(Cursor::new(bytes));
    let mut read = || reader.read_packet().map_err(|e| format!("not an Ogg stream: {e}"));
    let head = read()?.ok_or("empty file")?;
    if head.data.len() < 19 || &head.data[..8] != b"OpusHead" {
        return Err("not Ogg Opus (no OpusHead)".into());
    }
    let channels = head.data[9];
    if !(1..=2).contains(&channels) || head.data.get(18).copied().unwrap_or(1) != 0 {
        return Err(format!("{channels} channels or a channel mapping: only mono and stereo are replayed"));
    }
    let pre_skip = usize::from(u16::from_le_bytes([head.data[10], head.data[11]]));
    let tags = read()?.ok_or("no OpusTags")?;
    if tags.data.len() < 8 || &tags.data[..8] != b"OpusTags" {
        return Err("not Ogg Opus (no OpusTags)".into());
    }
    // The recorder writes mono; a stereo file is decoded by a mono decoder (libopus downmixes).
    let mut dec = Decoder::new().map_err(|e| e.to_string())?;
    let mut frame = vec![0.0f32; MAX_FRAME_SAMPLES];
    let mut pcm = Vec::new();
    let mut granule = None;
    while let Some(p) = read()? {
        if p.data.is_empty() {
            continue;
        }
        let n = match dec.decode(&p.data, &mut frame) {
            Ok(n) => n,
            // A damaged packet: concealed, so the timeline keeps its length.
            Err(_) => dec.conceal(&mut frame).unwrap_or(0),
        };
        pcm.extend_from_slice(&frame[..n]);
        if p.absgp_page() != u64::MAX {
            granule = Some(p.absgp_page());
        }
        if pcm.len() > MAX_REPLAY_SAMPLES + pre_skip {
            return Err("longer than 10 minutes: not replayed".into());
        }
    }
    if let Some(g) = granule {
        pcm.truncate(usize::try_from(g).unwrap_or(usize::MAX));
    }
    pcm.drain(..pre_skip.min(pcm.len()));
    Ok(pcm)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::dsp::test_util::sine_from;

    fn rms(x: &[f32]) -> f32 {
        (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
    }

    /// Power of `freq` in `x` (one DFT bin), relative to the whole signal's power.
    fn tone_share(x: &[f32], freq: f32) -> f32 {
        let (mut re, mut im) = (0.0f64, 0.0f64);
        for (i, v) in x.iter().enumerate() {
            let ph = std::f64::consts::TAU * f64::from(freq) * i as f64 / 48_000.0;
            re += f64::from(*v) * ph.cos();
            im += f64::from(*v) * ph.sin();
        }
        let p = (re * re + im * im) * 2.0 / (x.len() as f64).powi(2);
        (p / f64::from(rms(x)).powi(2)) as f32
    }

    /// A file as the recorder writes it (tests of the core make the packets): 1 kHz, 1.2 s.
    fn recorder_file() -> (Vec<u8>, u64) {
        crate::core::record::test_file(60)
    }

    #[test]
    fn a_recorders_file_decodes_to_its_length_and_tone() {
        let (bytes, duration_ms) = recorder_file();
        let pcm = decode_ogg_opus(&bytes).unwrap();
        assert_eq!(pcm.len() as u64, duration_ms * 48, "granule length");
        let tail = &pcm[4800..];
        assert!(tone_share(tail, 1000.0) > 0.9, "1 kHz: {}", tone_share(tail, 1000.0));
    }

    /// `opusenc` (pre-skip 312, its own granule end) decodes like `opusdec` says.
    #[test]
    fn an_opusenc_file_decodes_as_opusdec_does() {
        let dir = tempfile::tempdir().unwrap();
        let wav = dir.path().join("in.wav");
        let pcm = sine_from(700.0, 0.3, 0, 48_000 + 123);
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 48_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&wav, spec).unwrap();
        for s in &pcm {
            w.write_sample((s * 32767.0) as i16).unwrap();
        }
        w.finalize().unwrap();
        let opus = dir.path().join("x.opus");
        let ok = Command::new("opusenc").args(["--quiet"]).arg(&wav).arg(&opus).status();
        assert!(ok.is_ok_and(|s| s.success()), "opusenc (Debian opus-tools) must be installed");
        let got = decode_ogg_opus(&std::fs::read(&opus).unwrap()).unwrap();
        assert_eq!(got.len(), pcm.len(), "pre-skip and end trimmed: the input's length");
        assert!(tone_share(&got[4800..], 700.0) > 0.9);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let (bytes, _) = recorder_file();
        for bad in [&b""[..], b"OggS", b"hello world, not ogg", &bytes[..40], &bytes[..bytes.len() / 2]] {
            let _ = decode_ogg_opus(bad);
        }
        assert!(decode_ogg_opus(b"").is_err());
        assert!(decode_ogg_opus(b"not ogg at all, not at all").is_err());
        // Every byte flipped in turn (a damaged file): never a panic.
        for i in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[i] ^= 0x5a;
            let _ = decode_ogg_opus(&b);
        }
    }
}
