//! Rate conversion between a device's rate and the internal 48 kHz, plus sample-format and
//! channel helpers. Everything here is allocation-free after construction.
//!
//! rubato's synchronous FFT resampler is used: device and internal clocks are both nominal rates
//! (44.1 kHz, 16 kHz, ...), the ratio is fixed, and it is both cheaper and cleaner than sinc
//! interpolation, which matters on a Pi Zero.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use super::SAMPLE_RATE;

/// Device-rate mono samples in (any amount at a time), 48 kHz frames of `frame_len` out.
pub(crate) struct Inbound {
    resampler: Option<Fft<f32>>,
    frame_len: usize,
    /// Device-rate samples not yet consumed; capacity reserved up front.
    pending: Vec<f32>,
}

impl Inbound {
    /// `max_push`: the most samples one `extend` will add (e.g. one ALSA period).
    pub(crate) fn new(rate: u32, frame_len: usize, max_push: usize) -> Result<Self, String> {
        let resampler = if rate == SAMPLE_RATE {
            None
        } else {
            let r = Fft::<f32>::new(rate as usize, SAMPLE_RATE as usize, frame_len, 1, FixedSync::Output)
                .map_err(|e| format!("resampler {rate} -> {SAMPLE_RATE} Hz: {e}"))?;
            Some(r)
        };
        let most_needed = resampler.as_ref().map_or(frame_len, |r| r.input_frames_max());
        Ok(Inbound { resampler, frame_len, pending: Vec::with_capacity(most_needed + max_push) })
    }

    /// Device-rate samples still needed before the next frame can come out.
    pub(crate) fn needed(&self) -> usize {
        let want = self.resampler.as_ref().map_or(self.frame_len, |r| r.input_frames_next());
        want.saturating_sub(self.pending.len())
    }

    /// Add device-rate samples (at most `max_push` since the last frame came out, so nothing
    /// allocates).
    pub(crate) fn extend(&mut self, samples: impl IntoIterator<Item = f32>) {
        self.pending.extend(samples);
    }

    /// Produce one 48 kHz frame into `out` if enough input is pending.
    pub(crate) fn pop_frame(&mut self, out: &mut [f32]) -> bool {
        if self.needed() > 0 {
            return false;
        }
        let used = match &mut self.resampler {
            None => {
                out.copy_from_slice(&self.pending[..self.frame_len]);
                self.frame_len
            }
            Some(r) => {
                let n_in = r.input_frames_next();
                let input = InterleavedSlice::new(&self.pending[..n_in], 1, n_in).expect("sized input");
                let mut output = InterleavedSlice::new_mut(out, 1, self.frame_len).expect("sized output");
                match r.process_into_buffer(&input, &mut output, None) {
                    Ok((used, _)) => used,
                    // Cannot happen with buffers sized from the resampler itself; never panic.
                    Err(_) => {
                        out.fill(0.0);
                        n_in
                    }
                }
            }
        };
        self.pending.drain(..used);
        true
    }
}

/// 48 kHz frames in, device-rate mono samples out.
pub(crate) struct Outbound {
    resampler: Option<Fft<f32>>,
    out: Vec<f32>,
}

impl Outbound {
    pub(crate) fn new(rate: u32, frame_len: usize) -> Result<Self, String> {
        if rate == SAMPLE_RATE {
            return Ok(Outbound { resampler: None, out: vec![0.0; frame_len] });
        }
        let r = Fft::<f32>::new(SAMPLE_RATE as usize, rate as usize, frame_len, 1, FixedSync::Input)
            .map_err(|e| format!("resampler {SAMPLE_RATE} -> {rate} Hz: {e}"))?;
        let out = vec![0.0; r.output_frames_max()];
        Ok(Outbound { resampler: Some(r), out })
    }

    /// Most device samples one frame can turn into.
    pub(crate) fn max_out(&self) -> usize {
        self.out.len()
    }

    /// Convert one frame; the result is only valid until the next call.
    pub(crate) fn process(&mut self, frame: &[f32]) -> &[f32] {
        match &mut self.resampler {
            None => {
                self.out.copy_from_slice(frame);
                &self.out
            }
            Some(r) => {
                let n_out = r.output_frames_next();
                let input = InterleavedSlice::new(frame, 1, frame.len()).expect("sized input");
                let mut output = InterleavedSlice::new_mut(&mut self.out, 1, n_out).expect("sized output");
                match r.process_into_buffer(&input, &mut output, None) {
                    Ok((_, written)) => &self.out[..written],
                    Err(_) => &[],
                }
            }
        }
    }
}

pub(crate) fn i16_to_f32(s: i16) -> f32 {
    f32::from(s) / 32768.0
}

pub(crate) fn f32_to_i16(x: f32) -> i16 {
    // NaN becomes 0 through the saturating cast.
    (x.clamp(-1.0, 1.0) * 32767.0).round() as i16
}

/// Peak amplitude for a level in dBFS.
pub(crate) fn dbfs_to_amplitude(dbfs: f64) -> f64 {
    10f64.powf(dbfs / 20.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::test_util::{goertzel_power, rms};

    fn tone(rate: u32, hz: f64, n: usize) -> Vec<f32> {
        (0..n).map(|i| (0.5 * (2.0 * std::f64::consts::PI * hz * i as f64 / rate as f64).sin()) as f32).collect()
    }

    #[test]
    fn passthrough_at_48k() {
        let mut inb = Inbound::new(48_000, 480, 480).unwrap();
        let src = tone(48_000, 1000.0, 480);
        assert_eq!(inb.needed(), 480);
        inb.extend(src.iter().copied());
        let mut out = vec![0.0; 480];
        assert!(inb.pop_frame(&mut out));
        assert_eq!(out, src);
        assert!(!inb.pop_frame(&mut out));
    }

    #[test]
    fn inbound_44k1_keeps_tone_and_rate() {
        let mut inb = Inbound::new(44_100, 480, 441).unwrap();
        let src = tone(44_100, 1000.0, 44_100);
        let mut out = vec![0.0; 480];
        let mut got = vec![];
        for chunk in src.chunks(441) {
            inb.extend(chunk.iter().copied());
            while inb.pop_frame(&mut out) {
                got.extend_from_slice(&out);
            }
        }
        // One second in gives about one second out (minus what is still buffered).
        assert!((47_000..=48_000).contains(&got.len()), "{} samples", got.len());
        let steady = &got[4800..];
        assert!((rms(steady) - 0.5 / 2f32.sqrt()).abs() < 0.02, "level kept: rms {}", rms(steady));
        let at = goertzel_power(steady, 48_000.0, 1000.0);
        let off = goertzel_power(steady, 48_000.0, 1100.0);
        assert!(at > 100.0 * off, "the tone stays at 1 kHz");
    }

    #[test]
    fn outbound_16k_keeps_tone() {
        let mut ob = Outbound::new(16_000, 480).unwrap();
        let src = tone(48_000, 1000.0, 48_000);
        let mut got = vec![];
        for frame in src.chunks(480) {
            got.extend_from_slice(ob.process(frame));
        }
        assert!((15_500..=16_000).contains(&got.len()), "{} samples", got.len());
        let steady = &got[1600..];
        assert!((rms(steady) - 0.5 / 2f32.sqrt()).abs() < 0.02);
        assert!(goertzel_power(steady, 16_000.0, 1000.0) > 100.0 * goertzel_power(steady, 16_000.0, 1300.0));
    }

    #[test]
    fn sample_conversions() {
        assert_eq!(f32_to_i16(1.0), 32767);
        assert_eq!(f32_to_i16(-2.0), -32767);
        assert_eq!(f32_to_i16(f32::NAN), 0);
        assert_eq!(i16_to_f32(-32768), -1.0);
        assert!((dbfs_to_amplitude(-6.0) - 0.501).abs() < 0.001);
    }
}
