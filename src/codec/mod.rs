//! Voice codec: Opus at 48 kHz mono, f32 samples in [-1, 1].
//!
//! A thin, allocation-free wrapper over libopus (through `audiopus`): the caller owns every
//! buffer, so the audio threads never allocate per frame. Decoding never panics on bytes from
//! the network; a bad packet is an [`CodecError`] and the caller conceals the frame instead.

pub mod opus;

pub use opus::{packet_samples, Bandwidth, Decoder, Encoder, EncoderConfig};

use std::time::Duration;

/// The only sample rate used on the wire and inside the daemon (RTP clock rate for Opus too).
pub const SAMPLE_RATE: u32 = 48_000;

/// A large enough output buffer for any single encoded frame (libopus' own recommendation).
pub const MAX_PACKET_BYTES: usize = 4000;

/// Longest frame an Opus packet can carry (120 ms); a decode buffer this long never fails on size.
pub const MAX_FRAME_SAMPLES: usize = SAMPLE_RATE as usize * 120 / 1000;

/// Encoder frame length. Longer frames cost less CPU and header overhead, shorter ones less delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FrameDuration {
    Ms10,
    #[default]
    Ms20,
    Ms40,
    Ms60,
}

impl FrameDuration {
    pub const ALL: [FrameDuration; 4] = [Self::Ms10, Self::Ms20, Self::Ms40, Self::Ms60];

    pub fn from_millis(ms: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.millis() == ms)
    }

    pub fn millis(self) -> u32 {
        match self {
            Self::Ms10 => 10,
            Self::Ms20 => 20,
            Self::Ms40 => 40,
            Self::Ms60 => 60,
        }
    }

    /// Samples per frame at 48 kHz mono (also the RTP timestamp increment per packet).
    pub fn samples(self) -> usize {
        samples_for(Duration::from_millis(self.millis().into()))
    }

    pub fn duration(self) -> Duration {
        Duration::from_millis(self.millis().into())
    }
}

/// Samples at 48 kHz in `d` (rounded down).
pub fn samples_for(d: Duration) -> usize {
    (d.as_micros() * u128::from(SAMPLE_RATE) / 1_000_000) as usize
}

/// Codec failures. Everything that comes from the network maps to `InvalidPacket`/`EmptyPacket`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error("input frame has {got} samples, the encoder expects {expected}")]
    FrameSize { expected: usize, got: usize },
    #[error("output buffer holds {got} samples/bytes, {need} needed")]
    BufferTooSmall { need: usize, got: usize },
    #[error("empty packet")]
    EmptyPacket,
    #[error("malformed Opus packet")]
    InvalidPacket,
    #[error("invalid codec setting: {0}")]
    InvalidSetting(&'static str),
    #[error("libopus: {0}")]
    Opus(String),
}

pub type Result<T> = std::result::Result<T, CodecError>;
