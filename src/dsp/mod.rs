//! Radio audio signal processing: pure numeric code, no I/O, no clock, no allocation per frame.
//!
//! Audio inside roipd is [`SAMPLE_RATE`] (48 kHz) mono `f32` in [-1, 1], processed in frames of
//! 10–60 ms (480–2880 samples). Every type here allocates in its constructor only; the
//! per-frame methods (`process`, `render`, `mix`) work in place on `&mut [f32]`, take frames
//! of any length, never allocate and never panic (a frame holding NaN or infinity is replaced
//! by silence and the filters are reset, so one bad frame cannot poison a port).
//!
//! - [`level`]: dBFS conversions and the per-frame [`Meter`].
//! - [`biquad`]: RBJ-cookbook biquads in transposed direct form II (f64 design, f32 state),
//!   plus the first-order emphasis shelf.
//! - [`dynamics`]: the speech [`Agc`] and the lookahead-free peak [`Limiter`].
//! - [`chain`]: the per-port chains. [`RxChain`] (radio → network): phase-equalised high-pass (CTCSS strip),
//!   optional de-emphasis, input gain, VOX level, AGC, limiter, meters. [`TxChain`]
//!   (network → radio): gain, optional pre-emphasis, limiter, meters.
//! - [`tones`]: phase-continuous [`Sine`], and [`ToneSequence`], the player behind the
//!   courtesy tone and the CW station ID.
//! - [`cw`]: Morse timing for the CW ID ([`CwIdConfig`]) and the pure [`IdTimer`].
//!
//! Configs are plain structs with radio-style defaults. Out-of-range or NaN config values are
//! clamped or replaced by their default here, so a bad config degrades instead of panicking;
//! telling the user is the config layer's job.

pub mod biquad;
pub mod chain;
pub mod ctcss;
pub mod cw;
pub mod decimate;
pub mod dtmf;
pub mod dynamics;
pub mod level;
pub mod tone_bank;
pub mod tones;

#[cfg(test)]
mod alloc_count;
#[cfg(test)]
pub(crate) mod test_util;

pub use biquad::{Biquad, BiquadCoeffs};
pub use chain::{RxChain, RxConfig, RxLevels, TxChain, TxConfig, TxLevels};
pub use ctcss::{CtcssConfig, CtcssDecoder, CtcssState, CTCSS_TONES};
pub use cw::{CwIdConfig, IdDue, IdTimer};
pub use dtmf::{DtmfConfig, DtmfDecoder, DtmfEvent};
pub use dynamics::{Agc, AgcConfig, Limiter};
pub use level::{db_to_gain, gain_to_db, Meter, SILENCE_DBFS};
pub use tones::{CourtesyToneConfig, Sine, ToneSequence, ToneStep};

/// The sample rate of all audio inside roipd, in Hz.
pub const SAMPLE_RATE: u32 = 48_000;

/// `v` clamped into `[lo, hi]`, or `default` when `v` is NaN. Config values pass through this
/// so no setting can make a filter unstable or a method panic.
pub(crate) fn clean(v: f32, lo: f32, hi: f32, default: f32) -> f32 {
    if v.is_nan() {
        default
    } else {
        v.clamp(lo, hi)
    }
}

/// The one-pole smoothing factor `exp(-1 / (tau * fs))` for a time constant in milliseconds.
pub(crate) fn time_coef(fs: f32, tau_ms: f32) -> f32 {
    (-1.0 / (tau_ms * 1e-3 * fs)).exp()
}
