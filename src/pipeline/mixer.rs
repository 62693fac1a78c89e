//! The desk mixer: N monitored channels (each an incoming Opus stream) into one desk output
//! (speaker or headset, mono or interleaved stereo), sans-IO.
//!
//! Every channel owns a [`JitterBuffer`] and a [`Decoder`], built with the mixer; the per-frame
//! work ([`Mixer::push`], [`Mixer::mix`]) allocates nothing once a stream's payloads have been
//! seen. `Instant`s come in with every call; the mixer never reads the clock.
//!
//! What a frame costs, channel by channel (CPU is the point on a desk with 50 channels):
//! - **Idle** (no talk-spurt: the jitter buffer reports `Idle`, e.g. no packets, or a DTX gap):
//!   one `pop` per device frame and a few comparisons. No decode, no DSP.
//! - **Paused** (`Silence`: priming, or a pause inside a talk-spurt): the same, but reported
//!   active.
//! - **Muted** (not listened to and not priority): the jitter buffer is still popped on time,
//!   so its packets are consumed and the stream stays in sync, but nothing is decoded. The last
//!   few skipped payloads are kept (copied into reused buffers): an unmute in the middle of an
//!   Opus frame decodes that frame at once, so unmute takes effect in the very next
//!   [`Mixer::mix`]. The decoder, which missed frames, is reset and warmed up on the two packets
//!   before the one it resumes on (a cold SILK decoder starts several dB low for 40-60 ms; warmed
//!   up, within about 1 dB in the first frame).
//! - **Heard**: one decode (or FEC/PLC) per Opus frame, then a multiply-add into the output.
//!
//! Gains: volume (dB), pan (constant power: `cos`/`sin` of `(pan + 1) π/4`, so -3 dB per
//! side in the middle; a mono output ignores pan), mute, and ducking all end up in one target
//! gain per channel and side. Every change ramps linearly across one device frame (no zipper
//! noise, no click) and is complete at its end: mute and unmute take effect within one frame.
//! Ducking (`duck_db`, 0 = off) lowers every unselected, non-priority channel while the
//! selected channel is heard and active; the duck level itself moves with `duck_attack_ms`, is
//! held `duck_hold_ms` over short pauses (DTX gaps between words) and recovers with
//! `duck_release_ms`. A **priority** (emergency) channel is always heard (mute is ignored)
//! and never ducked.
//!
//! The sum goes through a peak [`Limiter`] (`limiter_dbfs`, -6 dBFS by default): the output
//! never exceeds its ceiling, however many channels are loud at once.
//!
//! Latency: the mixer adds none of its own. Each channel is popped in the `mix` call whose
//! `now` the jitter buffer's schedule makes a frame due at, and the decoded audio goes into
//! that same call's output (after an idle or paused frame the channel is polled again on every
//! call rather than once per Opus frame, so the first packet of a talk-spurt is not held back
//! to an Opus-frame boundary).

use std::f32::consts::FRAC_PI_4;
use std::time::Instant;

use crate::codec::{packet_samples, CodecError, Decoder, MAX_FRAME_SAMPLES, SAMPLE_RATE};
use crate::core::jitter::{JitterBuffer, JitterConfig, JitterStats, Packet, Playout};
use crate::dsp::level::{peak_and_sum_sq, power_to_db};
use crate::dsp::{db_to_gain, gain_to_db, Limiter, Meter, SILENCE_DBFS};

use super::MediaPacket;

/// Most channels one mixer takes (the active set is reported as a `u64` bitset).
pub const MAX_CHANNELS: usize = 64;

/// Skipped packets decoded (output discarded) before a muted channel's decoder resumes.
const WARM_UP: usize = 2;

const FS: f32 = SAMPLE_RATE as f32;
/// A limiter releasing on silence this close to unity (dB) is put back at unity.
const LIMITER_SNAP_DB: f32 = 0.05;
const VOLUME_DB: (f32, f32) = (-60.0, 20.0);

/// One monitored channel's initial settings (all can be changed later).
#[derive(Debug, Clone, PartialEq)]
pub struct MixChannelConfig {
    /// Listened to (unmuted).
    pub listen: bool,
    /// Gain, -60..=+20 dB.
    pub volume_db: f32,
    /// -1 (left) ..= +1 (right); used by a stereo output only.
    pub pan: f32,
    /// Priority/emergency channel: heard even when muted, never ducked.
    pub priority: bool,
}

impl Default for MixChannelConfig {
    fn default() -> Self {
        Self { listen: true, volume_db: 0.0, pan: 0.0, priority: false }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MixerConfig {
    pub channels: Vec<MixChannelConfig>,
    /// Interleaved stereo output (L, R) with per-channel pan; else mono (the plain sum).
    pub stereo: bool,
    /// Gain of unselected channels while the selected one talks, -60..=0 dB; 0 turns it off.
    pub duck_db: f32,
    /// Time for the duck to go all the way down, ms.
    pub duck_attack_ms: f32,
    /// The duck stays this long after the selected channel stops (bridges pauses), ms.
    pub duck_hold_ms: f32,
    /// Time for the duck to come all the way back up, ms.
    pub duck_release_ms: f32,
    /// Ceiling of the limiter on the sum, dBFS.
    pub limiter_dbfs: f32,
    pub jitter: JitterConfig,
}

impl Default for MixerConfig {
    fn default() -> Self {
        Self {
            channels: Vec::new(),
            stereo: false,
            duck_db: -12.0,
            duck_attack_ms: 20.0,
            duck_hold_ms: 500.0,
            duck_release_ms: 250.0,
            limiter_dbfs: -6.0,
            jitter: JitterConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MixerError {
    #[error("no channel {0} in this mixer")]
    NoSuchChannel(usize),
    #[error("{0} channels: a mixer takes at most {MAX_CHANNELS}")]
    TooManyChannels(usize),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// One channel as the last [`Mixer::mix`] saw it (for LEDs and the console).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelLevel {
    /// A talk-spurt is in progress (RX activity LED), whether the channel is heard or not.
    pub active: bool,
    /// Heard: listened to, or priority.
    pub audible: bool,
    /// Lowered by ducking right now.
    pub ducked: bool,
    /// RMS over the frame of the decoded audio before gain, dBFS; [`SILENCE_DBFS`] while idle,
    /// paused or not decoded (muted).
    pub level_dbfs: f32,
    /// Gain in effect at the end of the frame (volume, duck, mute; not pan), dB.
    pub gain_db: f32,
}

impl ChannelLevel {
    const IDLE: ChannelLevel =
        ChannelLevel { active: false, audible: false, ducked: false, level_dbfs: SILENCE_DBFS, gain_db: SILENCE_DBFS };
}

/// What one [`Mixer::mix`] call produced, besides the audio. Borrows the mixer's own buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixLevels<'a> {
    /// One entry per channel, in configuration order.
    pub channels: &'a [ChannelLevel],
    /// Bit `i`: channel `i` is active (the same as `channels[i].active`).
    pub active: u64,
    /// The output frame after the limiter (both sides together for stereo).
    pub out: Meter,
    /// Limiter gain at the end of the frame, dB (0 when not limiting).
    pub limiter_db: f32,
}

/// Counters of one channel since the mixer was built.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MixChannelStats {
    /// Decoder runs of any kind (packet, FEC, concealment): the CPU that channel cost.
    pub decodes: u64,
    pub fec: u64,
    pub concealed: u64,
    /// Frames consumed from the jitter buffer without decoding them (muted).
    pub skipped: u64,
    /// Skipped frames decoded after all because the channel was unmuted in the middle of them.
    pub late_decodes: u64,
    /// Skipped packets decoded again to warm the decoder up on unmute (also in `decodes`).
    pub warm_up_decodes: u64,
    /// Packets the decoder refused (played as silence).
    pub errors: u64,
    pub jitter: JitterStats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Packet,
    Fec,
    Conceal,
}

struct Channel {
    jitter: JitterBuffer,
    decoder: Decoder,
    /// The current Opus frame (or pause) and how far it has been played.
    pcm: Vec<f32>,
    len: usize,
    pos: usize,
    /// `pcm[..len]` holds decoded audio (else the frame is silent or was skipped).
    audio: bool,
    /// The current frame belongs to a talk-spurt.
    in_spurt: bool,
    /// The current frame was skipped (muted): what to decode if it is unmuted in the middle.
    skipped: Option<Kind>,
    missed: Missed,
    listen: bool,
    priority: bool,
    volume_db: f32,
    pan: f32,
    /// Linear volume and the pan law's side gains, kept from the setters.
    volume: f32,
    side: [f32; 2],
    /// Gain per side at the end of the last frame (where the next ramp starts).
    gain: [f32; 2],
    stats: MixChannelStats,
}

impl Channel {
    fn new(cfg: &MixChannelConfig, jitter: &JitterConfig) -> Result<Channel, CodecError> {
        let mut ch = Channel {
            jitter: JitterBuffer::new(jitter.clone()),
            decoder: Decoder::new()?,
            pcm: vec![0.0; MAX_FRAME_SAMPLES],
            len: 0,
            pos: 0,
            audio: false,
            in_spurt: false,
            skipped: None,
            missed: Missed::new(),
            listen: cfg.listen,
            priority: cfg.priority,
            volume_db: 0.0,
            pan: 0.0,
            volume: 1.0,
            side: [1.0, 1.0],
            gain: [0.0, 0.0],
            stats: MixChannelStats::default(),
        };
        ch.set_volume(cfg.volume_db);
        ch.set_pan(cfg.pan);
        Ok(ch)
    }

    fn audible(&self) -> bool {
        self.listen || self.priority
    }

    fn set_volume(&mut self, db: f32) {
        if !db.is_nan() {
            self.volume_db = db.clamp(VOLUME_DB.0, VOLUME_DB.1);
            self.volume = db_to_gain(self.volume_db);
        }
    }

    fn set_pan(&mut self, pan: f32) {
        if !pan.is_nan() {
            self.pan = pan.clamp(-1.0, 1.0);
            let theta = (self.pan + 1.0) * FRAC_PI_4;
            self.side = [theta.cos(), theta.sin()];
        }
    }

    /// Gain (volume, duck, mute) and whether the duck applies; and the gain per output side.
    fn target(&self, duck: f32, sides: usize) -> ((f32, bool), [f32; 2]) {
        let ducked = duck < 1.0 && !self.priority;
        let g = if self.audible() { self.volume * if ducked { duck } else { 1.0 } } else { 0.0 };
        ((g, ducked), if sides == 2 { [g * self.side[0], g * self.side[1]] } else { [g, g] })
    }

    /// Samples of the stream's current packet duration.
    fn frame_samples(&self) -> usize {
        let us = self.jitter.frame_duration().as_micros() as usize;
        (us * SAMPLE_RATE as usize / 1_000_000).clamp(1, self.pcm.len())
    }

    /// Add `n` frames of this channel into `out` (`sides` samples per frame), the gain ramping
    /// from the last frame's to `to`. Returns (in a talk-spurt, sum of squares before gain,
    /// anything added).
    fn mix_into(&mut self, now: Instant, out: &mut [f32], sides: usize, to: [f32; 2]) -> (bool, f32, bool) {
        let n = out.len() / sides;
        let from = std::mem::replace(&mut self.gain, to);
        // Audio is needed while the gain is (or was, for the fade-out) above zero.
        let wanted = to != [0.0; 2] || from != [0.0; 2];
        if wanted && self.skipped.is_some() && self.pos < self.len {
            self.late_decode();
        }
        let step = [(to[0] - from[0]) / n.max(1) as f32, (to[1] - from[1]) / n.max(1) as f32];
        let (mut in_spurt, mut sum_sq, mut added) = (false, 0.0, false);
        let mut done = 0;
        while done < n {
            if self.pos >= self.len {
                self.next_frame(now, wanted, n - done);
            }
            let take = (self.len - self.pos).min(n - done);
            in_spurt |= self.in_spurt;
            if self.audio && wanted {
                let src = &self.pcm[self.pos..self.pos + take];
                sum_sq += peak_and_sum_sq(src).1;
                let dst = &mut out[done * sides..(done + take) * sides];
                add_scaled(dst, src, sides, from, step, done);
                added = true;
            }
            self.pos += take;
            done += take;
        }
        (in_spurt, sum_sq, added)
    }

    /// Pop the next frame from the jitter buffer; decode it if it will be heard.
    fn next_frame(&mut self, now: Instant, wanted: bool, rest_of_call: usize) {
        let frame = self.frame_samples();
        let Channel { jitter, decoder, pcm, missed, stats, .. } = self;
        let (kind, payload) = match jitter.pop(now) {
            Playout::Packet(p) => (Kind::Packet, p),
            Playout::Fec(p) => (Kind::Fec, p),
            Playout::Conceal => (Kind::Conceal, &[][..]),
            pause @ (Playout::Silence | Playout::Idle) => {
                // Nothing to decode. Poll again on the next call (not after a whole Opus
                // frame), so a talk-spurt starts in the call where it becomes due.
                self.in_spurt = pause == Playout::Silence;
                (self.audio, self.skipped, self.pos, self.len) = (false, None, 0, frame.min(rest_of_call));
                return;
            }
        };
        self.in_spurt = true;
        self.pos = 0;
        if wanted {
            missed.resync(decoder, pcm, stats, false);
            let decoded = decode(decoder, kind, payload, pcm);
            count(stats, kind, &decoded);
            (self.len, self.audio, self.skipped) = match decoded {
                Ok(n) if n > 0 => (n, true, None),
                _ => (frame, false, None),
            };
        } else {
            // Consumed in step with the stream, not decoded; kept for an unmute mid-frame.
            missed.keep(kind, payload);
            stats.skipped += 1;
            self.len = match kind {
                Kind::Packet | Kind::Fec => packet_samples(payload).unwrap_or(frame),
                Kind::Conceal => frame,
            }
            .clamp(1, pcm.len());
            (self.audio, self.skipped) = (false, Some(kind));
        }
    }

    /// The channel became audible in the middle of a frame it skipped: decode it now.
    fn late_decode(&mut self) {
        let Some(kind) = self.skipped.take() else { return };
        let Channel { decoder, pcm, missed, stats, .. } = self;
        // A skipped packet is the newest kept one: warm up on those before it.
        missed.resync(decoder, pcm, stats, kind == Kind::Packet);
        let payload = match kind {
            Kind::Packet => missed.newest(),
            Kind::Fec => &missed.fec[..],
            Kind::Conceal => &[][..],
        };
        let decoded = decode(decoder, kind, payload, pcm);
        count(stats, kind, &decoded);
        if let Ok(n) = decoded {
            if n > 0 {
                pcm[n.min(self.len)..self.len].fill(0.0);
                self.audio = true;
                stats.late_decodes += 1;
            }
        }
    }
}

/// What a muted channel skipped: the last packets (to warm the decoder up on unmute) and the
/// next packet of a skipped FEC frame. Buffers are reused: no allocation per frame.
struct Missed {
    ring: [Vec<u8>; WARM_UP + 1],
    /// Next slot to write, and how many slots hold packets not yet given to the decoder.
    head: usize,
    kept: usize,
    fec: Vec<u8>,
    /// The decoder missed frames: reset and warm it up before the next decode.
    stale: bool,
}

impl Missed {
    fn new() -> Missed {
        Missed {
            ring: std::array::from_fn(|_| Vec::with_capacity(256)),
            head: 0,
            kept: 0,
            fec: Vec::with_capacity(256),
            stale: false,
        }
    }

    fn keep(&mut self, kind: Kind, payload: &[u8]) {
        self.stale = true;
        let buf = match kind {
            Kind::Packet => {
                let slot = self.head;
                self.head = (self.head + 1) % self.ring.len();
                self.kept = (self.kept + 1).min(self.ring.len());
                &mut self.ring[slot]
            }
            Kind::Fec => &mut self.fec,
            Kind::Conceal => return,
        };
        buf.clear();
        buf.extend_from_slice(payload);
    }

    /// The last packet kept.
    fn newest(&self) -> &[u8] {
        let n = self.ring.len();
        &self.ring[(self.head + n - 1) % n]
    }

    /// Before decoding again after skipping: reset the decoder and feed it the (up to)
    /// [`WARM_UP`] packets kept before the one it resumes on (`but_newest`: that one is the
    /// newest kept).
    fn resync(&mut self, decoder: &mut Decoder, pcm: &mut [f32], stats: &mut MixChannelStats, but_newest: bool) {
        if !std::mem::take(&mut self.stale) {
            return;
        }
        let _ = decoder.reset();
        let n = self.ring.len();
        let skip = usize::from(but_newest);
        let warm = self.kept.saturating_sub(skip).min(WARM_UP);
        for k in (1..=warm).rev() {
            let _ = decoder.decode(&self.ring[(self.head + 2 * n - skip - k) % n], pcm);
            stats.decodes += 1;
            stats.warm_up_decodes += 1;
        }
        self.kept = 0;
    }
}

fn decode(decoder: &mut Decoder, kind: Kind, payload: &[u8], pcm: &mut [f32]) -> Result<usize, CodecError> {
    match kind {
        Kind::Packet => decoder.decode(payload, pcm),
        Kind::Fec => decoder.decode_fec(payload, pcm),
        Kind::Conceal => decoder.conceal(pcm),
    }
}

fn count(stats: &mut MixChannelStats, kind: Kind, result: &Result<usize, CodecError>) {
    stats.decodes += 1;
    match (kind, result) {
        (_, Err(_)) => stats.errors += 1,
        (Kind::Fec, _) => stats.fec += 1,
        (Kind::Conceal, _) => stats.concealed += 1,
        (Kind::Packet, _) => {}
    }
}

/// `dst += src * gain`, interleaved over `sides`, the gain of side `s` at source sample `k`
/// being `from[s] + step[s] * (offset + k + 1)` (a linear ramp over the device frame).
fn add_scaled(dst: &mut [f32], src: &[f32], sides: usize, from: [f32; 2], step: [f32; 2], offset: usize) {
    let steady = step == [0.0; 2];
    match (sides, steady) {
        (1, true) => {
            let g = from[0];
            dst.iter_mut().zip(src).for_each(|(o, &x)| *o += x * g);
        }
        (1, false) => {
            for (k, (o, &x)) in dst.iter_mut().zip(src).enumerate() {
                *o += x * (from[0] + step[0] * (offset + k + 1) as f32);
            }
        }
        (_, true) => {
            let [l, r] = from;
            for (o, &x) in dst.chunks_exact_mut(2).zip(src) {
                o[0] += x * l;
                o[1] += x * r;
            }
        }
        (_, false) => {
            for (k, (o, &x)) in dst.chunks_exact_mut(2).zip(src).enumerate() {
                let t = (offset + k + 1) as f32;
                o[0] += x * (from[0] + step[0] * t);
                o[1] += x * (from[1] + step[1] * t);
            }
        }
    }
}

/// The duck level: a ramp in dB between 0 and `depth_db`, down while the selected channel
/// talks, held over short pauses, then back up.
struct Duck {
    depth_db: f32,
    /// dB per sample.
    attack: f32,
    release: f32,
    hold: usize,
    hold_left: usize,
    level_db: f32,
    gain: f32,
}

impl Duck {
    fn new(cfg: &MixerConfig) -> Duck {
        let per_sample = |ms: f32, default: f32| crate::dsp::clean(ms, 0.1, 60_000.0, default) * 1e-3 * FS;
        let depth_db = crate::dsp::clean(cfg.duck_db, -60.0, 0.0, -12.0);
        Duck {
            depth_db,
            attack: -depth_db / per_sample(cfg.duck_attack_ms, 20.0),
            release: -depth_db / per_sample(cfg.duck_release_ms, 250.0),
            hold: crate::dsp::clean(cfg.duck_hold_ms, 0.0, 60_000.0, 500.0) as usize * SAMPLE_RATE as usize / 1000,
            hold_left: 0,
            level_db: 0.0,
            gain: 1.0,
        }
    }

    /// Advance by `n` samples; the gain reached at their end.
    fn update(&mut self, talking: bool, n: usize) -> f32 {
        if self.depth_db == 0.0 {
            return 1.0;
        }
        if talking {
            self.hold_left = self.hold;
        }
        let down = talking || self.hold_left > 0;
        if !talking {
            self.hold_left = self.hold_left.saturating_sub(n);
        }
        let level = if down {
            (self.level_db - self.attack * n as f32).max(self.depth_db)
        } else {
            (self.level_db + self.release * n as f32).min(0.0)
        };
        if level != self.level_db {
            self.level_db = level;
            self.gain = db_to_gain(level);
        }
        self.gain
    }
}

/// The mixer for one desk output. See the module documentation.
pub struct Mixer {
    channels: Vec<Channel>,
    levels: Vec<ChannelLevel>,
    sides: usize,
    selected: Option<usize>,
    duck: Duck,
    limiter: Limiter,
    /// The emergency alert tone: samples played since it started (None: off).
    alert: Option<u64>,
    replay: Option<Replay>,
}

/// A recording played on the desk's output (`replay_last`): decoded 48 kHz mono samples and
/// where the next frame starts.
struct Replay {
    pcm: Vec<f32>,
    at: usize,
}

/// The emergency alert: 960 Hz and 1440 Hz alternating every 250 ms, 500 ms of tone then
/// 500 ms of pause, at -12 dBFS, mixed over the channels until the emergency is acknowledged.
const ALERT_TONES_HZ: [f32; 2] = [960.0, 1440.0];
const ALERT_AMPLITUDE: f32 = 0.25;

impl Mixer {
    /// Builds every channel's jitter buffer and decoder up front (the only allocations).
    pub fn new(cfg: MixerConfig) -> Result<Mixer, MixerError> {
        if cfg.channels.len() > MAX_CHANNELS {
            return Err(MixerError::TooManyChannels(cfg.channels.len()));
        }
        let sides = if cfg.stereo { 2 } else { 1 };
        let mut channels = cfg.channels.iter().map(|c| Channel::new(c, &cfg.jitter)).collect::<Result<Vec<_>, _>>()?;
        for c in &mut channels {
            // A channel heard from the first frame starts at its gain, not faded in.
            c.gain = c.target(1.0, sides).1;
        }
        Ok(Mixer {
            levels: vec![ChannelLevel::IDLE; channels.len()],
            channels,
            sides,
            selected: None,
            alert: None,
            duck: Duck::new(&cfg),
            // Interleaved stereo runs through one (linked) limiter at twice the sample rate.
            limiter: Limiter::new(SAMPLE_RATE * sides as u32, cfg.limiter_dbfs, Limiter::RELEASE_MS),
            replay: None,
        })
    }

    pub fn channels(&self) -> usize {
        self.channels.len()
    }

    pub fn stereo(&self) -> bool {
        self.sides == 2
    }

    fn channel(&mut self, i: usize) -> Result<&mut Channel, MixerError> {
        self.channels.get_mut(i).ok_or(MixerError::NoSuchChannel(i))
    }

    /// A packet of channel `i` arrived at `now`.
    pub fn push(&mut self, now: Instant, i: usize, packet: &MediaPacket) -> Result<(), MixerError> {
        let p =
            Packet { seq: packet.seq, timestamp: packet.timestamp, marker: packet.marker, payload: &packet.payload };
        self.channel(i)?.jitter.push(now, p);
        Ok(())
    }

    /// Listen to (unmute) or mute channel `i`; effective in the next [`mix`](Self::mix).
    pub fn set_listen(&mut self, i: usize, listen: bool) -> Result<(), MixerError> {
        self.channel(i)?.listen = listen;
        Ok(())
    }

    /// Volume of channel `i` in dB (clamped to -60..=+20; NaN is ignored).
    pub fn set_volume(&mut self, i: usize, db: f32) -> Result<(), MixerError> {
        self.channel(i)?.set_volume(db);
        Ok(())
    }

    /// Pan of channel `i`, -1 (left) ..= +1 (right) (clamped; NaN is ignored).
    pub fn set_pan(&mut self, i: usize, pan: f32) -> Result<(), MixerError> {
        self.channel(i)?.set_pan(pan);
        Ok(())
    }

    /// Make channel `i` a priority (emergency) channel, or not.
    pub fn set_priority(&mut self, i: usize, priority: bool) -> Result<(), MixerError> {
        self.channel(i)?.priority = priority;
        Ok(())
    }

    /// The channel the desk is selected on (the one never ducked), or none.
    pub fn select(&mut self, i: Option<usize>) -> Result<(), MixerError> {
        if let Some(i) = i {
            self.channel(i)?;
        }
        self.selected = i;
        Ok(())
    }

    pub fn selected(&self) -> Option<usize> {
        self.selected
    }

    /// Channel `i`'s current settings.
    pub fn settings(&self, i: usize) -> Option<MixChannelConfig> {
        self.channels.get(i).map(|c| MixChannelConfig {
            listen: c.listen,
            volume_db: c.volume_db,
            pan: c.pan,
            priority: c.priority,
        })
    }

    pub fn channel_stats(&self, i: usize) -> Option<MixChannelStats> {
        self.channels.get(i).map(|c| MixChannelStats { jitter: c.jitter.stats(), ..c.stats })
    }

    /// Decoder runs over all channels since the mixer was built.
    pub fn decodes(&self) -> u64 {
        self.channels.iter().map(|c| c.stats.decodes).sum()
    }

    /// Play `pcm` (48 kHz mono, a decoded recording) on this output from the next
    /// [`mix`](Self::mix) on, replacing a replay in progress. It is mixed at unity (centred on
    /// a stereo output: -3 dB per side, as a channel panned to the middle), through the
    /// limiter, and **live traffic wins**: the first frame in which any channel this output
    /// hears is active (a talker in a spurt, not muted), the replay fades out across that frame
    /// and is dropped. It is never resumed: the dispatcher asks again.
    pub fn replay(&mut self, pcm: Vec<f32>) {
        self.replay = (!pcm.is_empty()).then_some(Replay { pcm, at: 0 });
    }

    /// A replay is playing.
    pub fn replaying(&self) -> bool {
        self.replay.is_some()
    }

    pub fn stop_replay(&mut self) {
        self.replay = None;
    }

    /// Nothing to play: no channel in a talk-spurt or holding packets (muted ones included:
    /// they are consumed in step), the duck and the limiter at rest. Mixing then only yields
    /// silence and moves nothing on, so the output device may stop asking until a packet is
    /// [`push`](Self::push)ed.
    pub fn idle(&self) -> bool {
        self.alert.is_none()
            && self.replay.is_none()
            && self.channels.iter().all(|c| !c.in_spurt && c.jitter.buffered() == 0)
            && self.duck.level_db == 0.0
            && self.limiter.gain_db() >= 0.0
    }

    /// Sound the emergency alert tone over the mix (on) until it is turned off.
    pub fn set_alert(&mut self, on: bool) {
        match (on, self.alert) {
            (true, None) => self.alert = Some(0),
            (false, _) => self.alert = None,
            _ => {}
        }
    }

    pub fn alert(&self) -> bool {
        self.alert.is_some()
    }

    fn mix_alert(&mut self, out: &mut [f32]) -> bool {
        let Some(n) = self.alert.as_mut() else { return false };
        let quarter = SAMPLE_RATE as u64 / 4;
        for frame in out.chunks_mut(self.sides) {
            let phase = *n % (4 * quarter);
            if phase < 2 * quarter {
                let f = ALERT_TONES_HZ[(phase / quarter) as usize];
                let v = ALERT_AMPLITUDE * (std::f32::consts::TAU * f * (*n as f32 / FS)).sin();
                frame.iter_mut().for_each(|x| *x += v);
            }
            *n += 1;
        }
        true
    }

    /// Produce the next device frame at `now` (call once per device period): `out` is one
    /// frame, mono, or interleaved L/R for a stereo mixer (an odd trailing sample is zeroed).
    /// At most [`MAX_FRAME_SAMPLES`] frames are filled; the rest of a longer buffer is zeroed.
    pub fn mix(&mut self, now: Instant, out: &mut [f32]) -> MixLevels<'_> {
        out.fill(0.0);
        let frames = (out.len() / self.sides).min(MAX_FRAME_SAMPLES);
        let out = &mut out[..frames * self.sides];
        let mut any = false;
        // The selected channel first: whether it talks in this frame sets the duck for the rest.
        let selected = self.selected.filter(|&s| s < self.channels.len());
        if let Some(s) = selected {
            any |= self.mix_one(s, now, out, 1.0);
        }
        let talking = selected.is_some_and(|s| self.levels[s].active && self.levels[s].audible);
        let duck = self.duck.update(talking, frames);
        for i in 0..self.channels.len() {
            if Some(i) != selected {
                any |= self.mix_one(i, now, out, duck);
            }
        }
        any |= self.mix_alert(out);
        any |= self.mix_replay(out, frames);
        // On silence the limiter only has its release to finish; once at unity it is skipped.
        // Its one-pole release reaches unity only after seconds of f32 rounding: on silence,
        // within an inaudible step of it, it snaps there, so the mixer can go idle.
        if any {
            self.limiter.process(out);
        } else if self.limiter.gain_db() > -LIMITER_SNAP_DB {
            self.limiter.reset();
        } else {
            self.limiter.process(out);
        }
        let active = self.levels.iter().enumerate().fold(0u64, |m, (i, l)| m | u64::from(l.active) << i);
        MixLevels {
            channels: &self.levels,
            active,
            out: if any { Meter::measure(out) } else { Meter::SILENCE },
            limiter_db: self.limiter.gain_db(),
        }
    }

    /// The replay's next frame into `out`, unless live traffic cuts it (see [`replay`](Self::replay)).
    fn mix_replay(&mut self, out: &mut [f32], frames: usize) -> bool {
        let Some(r) = &mut self.replay else { return false };
        let live = self.levels.iter().any(|l| l.active && l.audible);
        let gain = if self.sides == 2 { FRAC_PI_4.cos() } else { 1.0 };
        let rest = &r.pcm[r.at.min(r.pcm.len())..];
        for (f, &v) in rest.iter().take(frames).enumerate() {
            // Cut: a linear fade to zero across this frame, no click.
            let fade = if live { 1.0 - f as f32 / frames as f32 } else { 1.0 };
            for side in 0..self.sides {
                out[f * self.sides + side] += v * gain * fade;
            }
        }
        r.at += frames;
        if live || r.at >= r.pcm.len() {
            self.replay = None;
        }
        true
    }

    fn mix_one(&mut self, i: usize, now: Instant, out: &mut [f32], duck: f32) -> bool {
        let sides = self.sides;
        let c = &mut self.channels[i];
        // The selected channel is mixed before the duck is known, and is never ducked.
        let duck = if Some(i) == self.selected { 1.0 } else { duck };
        let ((g, ducked), to) = c.target(duck, sides);
        let (active, sum_sq, added) = c.mix_into(now, out, sides, to);
        let frames = (out.len() / sides).max(1);
        self.levels[i] = ChannelLevel {
            active,
            audible: c.audible(),
            ducked,
            level_dbfs: if added { power_to_db(sum_sq / frames as f32) } else { SILENCE_DBFS },
            gain_db: gain_to_db(g),
        };
        added
    }
}

#[cfg(test)]
mod alert_tests {
    use super::*;

    #[test]
    fn the_alert_tone_sounds_until_turned_off_and_keeps_the_mixer_awake() {
        let cfg = MixerConfig { channels: vec![MixChannelConfig::default()], ..Default::default() };
        let mut m = Mixer::new(cfg).unwrap();
        let t = Instant::now();
        let mut out = [0.0f32; 480];
        assert!(m.idle());
        m.set_alert(true);
        assert!(!m.idle(), "the speaker must not pause while the alert sounds");
        let level = m.mix(t, &mut out).out;
        assert!(level.rms_dbfs > -20.0, "{level:?}");
        m.set_alert(false);
        let level = m.mix(t, &mut out).out;
        assert!(level.rms_dbfs < -90.0, "{level:?}");
    }
}

#[cfg(test)]
mod tests {
    use std::f64::consts::TAU;
    use std::ops::Range;
    use std::time::Duration;

    use super::*;
    use crate::codec::{Encoder, EncoderConfig, MAX_PACKET_BYTES};

    /// 10 ms device frames; 20 ms Opus packets.
    const DEV: usize = 480;
    const PKT: usize = 960;

    /// A frame is due the moment its packet arrives (target = one frame, no jitter on the
    /// simulated network, no scheduling margin): device frame `f` of the output plays a talker's decoded samples
    /// `(f - start) * DEV..`, so the output can be compared with a plain decode sample for sample.
    fn tight() -> JitterConfig {
        let ms = Duration::from_millis;
        JitterConfig { min_depth: ms(20), margin: Duration::ZERO, ..JitterConfig::default() }
    }

    fn mixer(n: usize, stereo: bool, duck_db: f32) -> Mixer {
        let channels = vec![MixChannelConfig::default(); n];
        Mixer::new(MixerConfig { channels, stereo, duck_db, jitter: tight(), ..MixerConfig::default() }).unwrap()
    }

    fn tone(freq: f64, amp: f64, samples: usize) -> Vec<f32> {
        (0..samples).map(|i| (amp * (TAU * freq * i as f64 / 48_000.0).sin()) as f32).collect()
    }

    fn encode(pcm: &[f32]) -> Vec<Vec<u8>> {
        let mut enc = Encoder::new(EncoderConfig::default()).unwrap();
        let mut buf = [0u8; MAX_PACKET_BYTES];
        pcm.chunks_exact(PKT)
            .map(|f| {
                let n = enc.encode(f, &mut buf).unwrap();
                buf[..n].to_vec()
            })
            .collect()
    }

    fn decode_all(payloads: &[Vec<u8>]) -> Vec<f32> {
        let mut dec = Decoder::new().unwrap();
        let mut pcm = vec![0.0; MAX_FRAME_SAMPLES];
        let mut all = Vec::new();
        for p in payloads {
            let n = dec.decode(p, &mut pcm).unwrap();
            all.extend_from_slice(&pcm[..n]);
        }
        all
    }

    /// One talker: a tone for `seconds` on `channel`, the first packet arriving at device frame
    /// `start`, one every 20 ms. RTP time runs from t0, so spurts on one channel line up.
    struct Talker {
        channel: usize,
        start: usize,
        freq: f64,
        amp: f64,
        payloads: Vec<Vec<u8>>,
        /// The same packets through a plain decoder: what the channel carries.
        reference: Vec<f32>,
    }

    impl Talker {
        fn new(channel: usize, start: usize, freq: f64, amp: f64, seconds: f64) -> Talker {
            let payloads = encode(&tone(freq, amp, (48_000.0 * seconds) as usize));
            let reference = decode_all(&payloads);
            Talker { channel, start, freq, amp, payloads, reference }
        }

        fn packet(&self, frame: usize) -> Option<MediaPacket> {
            let k = frame.checked_sub(self.start)?;
            if k % 2 != 0 || k / 2 >= self.payloads.len() {
                return None;
            }
            Some(MediaPacket {
                seq: (frame / 2) as u16,
                timestamp: (frame * DEV) as u32,
                marker: k == 0,
                payload: self.payloads[k / 2].clone(),
            })
        }

        /// The decoded samples the output should carry in device frames `frames`.
        fn heard(&self, frames: Range<usize>) -> &[f32] {
            &self.reference[(frames.start - self.start) * DEV..(frames.end - self.start) * DEV]
        }
    }

    /// Runs the mixer device frame by device frame.
    struct Sim {
        mixer: Mixer,
        t0: Instant,
        frame: usize,
        out: Vec<f32>,
        /// `(active bitset, per-channel levels)` of every frame.
        levels: Vec<(u64, Vec<ChannelLevel>)>,
        limiter_db: Vec<f32>,
    }

    impl Sim {
        fn new(mixer: Mixer) -> Sim {
            Sim { mixer, t0: Instant::now(), frame: 0, out: Vec::new(), levels: Vec::new(), limiter_db: Vec::new() }
        }

        fn run(&mut self, frames: usize, talkers: &[Talker], mut control: impl FnMut(usize, &mut Mixer)) {
            let sides = self.mixer.sides;
            let mut buf = vec![0.0; DEV * sides];
            for _ in 0..frames {
                let now = self.t0 + Duration::from_millis(10 * self.frame as u64);
                control(self.frame, &mut self.mixer);
                for t in talkers {
                    if let Some(p) = t.packet(self.frame) {
                        self.mixer.push(now, t.channel, &p).unwrap();
                    }
                }
                let lv = self.mixer.mix(now, &mut buf);
                self.levels.push((lv.active, lv.channels.to_vec()));
                self.limiter_db.push(lv.limiter_db);
                self.out.extend_from_slice(&buf);
                self.frame += 1;
            }
        }

        /// Output samples of device frames `frames` (side `side` of a stereo output).
        fn frames(&self, frames: Range<usize>, side: usize) -> Vec<f32> {
            let s = self.mixer.sides;
            self.out[frames.start * DEV * s..frames.end * DEV * s].iter().skip(side).step_by(s).copied().collect()
        }

        /// The gain `t`'s tone got in the output over `frames` (Goertzel, output against the
        /// talker's own decode of the same media time), dB.
        fn gain_db(&self, t: &Talker, frames: Range<usize>, side: usize) -> f64 {
            db(goertzel(&self.frames(frames.clone(), side), t.freq) / goertzel(t.heard(frames), t.freq))
        }
    }

    /// Amplitude of the `freq` component (Goertzel). Windows of whole cycles of every test
    /// tone (multiples of 10 ms) keep the tones from leaking into each other.
    fn goertzel(x: &[f32], freq: f64) -> f64 {
        let w = TAU * freq / 48_000.0;
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &v in x {
            let s = f64::from(v) + coeff * s1 - s2;
            (s2, s1) = (s1, s);
        }
        let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
        2.0 * power.max(0.0).sqrt() / x.len() as f64
    }

    fn db(x: f64) -> f64 {
        20.0 * x.log10()
    }

    fn peak(x: &[f32]) -> f32 {
        x.iter().fold(0.0, |a, &b| a.max(b.abs()))
    }

    /// Largest sample-to-sample step: a click shows up as a step beyond the tones' own slope.
    fn max_step(x: &[f32]) -> f32 {
        x.windows(2).fold(0.0f32, |a, w| a.max((w[1] - w[0]).abs()))
    }

    fn slope(talkers: &[Talker]) -> f32 {
        talkers.iter().map(|t| (t.amp * TAU * t.freq / 48_000.0) as f32).sum()
    }

    #[test]
    fn a_replay_plays_its_samples_and_then_the_mixer_is_idle() {
        let mut sim = Sim::new(mixer(2, false, 0.0));
        let pcm = tone(500.0, 0.3, 30 * DEV + 100);
        sim.mixer.replay(pcm.clone());
        assert!(!sim.mixer.idle() && sim.mixer.replaying());
        sim.run(40, &[], |_, _| {});
        assert_eq!(&sim.out[..pcm.len()], &pcm[..], "sample for sample, from the first frame on");
        assert!(sim.out[pcm.len()..].iter().all(|&v| v == 0.0));
        assert!(!sim.mixer.replaying() && sim.mixer.idle(), "done: the device may stop");

        let mut stereo = Sim::new(mixer(1, true, 0.0));
        stereo.mixer.replay(pcm.clone());
        stereo.run(10, &[], |_, _| {});
        for side in 0..2 {
            let got = stereo.frames(0..10, side);
            let want: Vec<f32> = pcm[..10 * DEV].iter().map(|v| v * FRAC_PI_4.cos()).collect();
            assert_eq!(got, want, "side {side}: centred, -3 dB");
        }
    }

    #[test]
    fn live_traffic_cuts_a_replay_within_the_frame_it_arrives_in() {
        let mut sim = Sim::new(mixer(2, false, 0.0));
        sim.mixer.replay(tone(500.0, 0.3, 48_000 * 2));
        // Channel 1 starts talking at device frame 50 (0.5 s into the replay).
        let live = Talker::new(1, 50, 1000.0, 0.3, 1.0);
        sim.run(100, std::slice::from_ref(&live), |_, _| {});
        let replay_db = |frames: Range<usize>| db(goertzel(&sim.frames(frames, 0), 500.0) / 0.3);
        assert!(replay_db(10..50).abs() < 0.5, "the replay at unity before: {:.1} dB", replay_db(10..50));
        let first = sim.levels.iter().position(|(active, _)| active & 0b10 != 0).expect("channel 1 active");
        assert!(first <= 51, "live audio from frame {first}");
        assert!(replay_db(first + 1..100) < -60.0, "gone after the live frame: {:.1} dB", replay_db(first + 1..100));
        assert!(sim.gain_db(&live, first + 1..100, 0).abs() < 0.5, "the live talker at its gain");
        assert!(max_step(&sim.frames(first - 1..first + 2, 0)) < 2.0 * slope(&[live]) + 0.05, "faded, no click");
        assert!(!sim.mixer.replaying());
    }

    #[test]
    fn ten_channels_three_talking_each_tone_at_its_gain() {
        let mut sim = Sim::new(mixer(10, false, 0.0));
        // -12 dBFS each (the sum stays under the limiter), on channels 2, 5, 8.
        let tones = [(500.0, 0.0), (1000.0, -6.0), (1500.0, -10.0)];
        let talkers: Vec<Talker> =
            tones.iter().enumerate().map(|(k, &(f, _))| Talker::new(2 + 3 * k, 5 + k, f, 0.25, 2.0)).collect();
        for (t, &(_, vol)) in talkers.iter().zip(&tones) {
            sim.mixer.set_volume(t.channel, vol).unwrap();
        }
        sim.run(220, &talkers, |_, _| {});
        let steady = 60..180;
        for (t, &(f, vol)) in talkers.iter().zip(&tones) {
            let err = sim.gain_db(t, steady.clone(), 0) - f64::from(vol);
            // End to end, the codec's own level error on a pure tone comes in too.
            let e2e = db(goertzel(&sim.frames(steady.clone(), 0), f) / t.amp) - f64::from(vol);
            eprintln!("{f} Hz at {vol} dB: mixer gain error {err:+.3} dB (end to end with Opus: {e2e:+.2} dB)");
            assert!(err.abs() <= 0.1, "{f} Hz: {err} dB");
            assert!(e2e.abs() <= 1.5, "{f} Hz: {e2e} dB");
        }
        // LEDs: exactly the three talking channels are active in the steady part.
        let want = talkers.iter().fold(0u64, |m, t| m | 1 << t.channel);
        assert!(sim.levels[steady.clone()].iter().all(|(a, _)| *a == want));
        let (_, lv) = &sim.levels[100];
        assert!(lv[2].level_dbfs > -20.0 && lv[0].level_dbfs == SILENCE_DBFS, "{lv:?}");
        assert!(peak(&sim.out) < 0.5, "the limiter stayed out of it");
        // Idle channels cost no decode at all.
        for i in 0..10 {
            let s = sim.mixer.channel_stats(i).unwrap();
            if talkers.iter().any(|t| t.channel == i) {
                assert!(s.decodes >= 100, "channel {i}: {s:?}");
            } else {
                assert_eq!((s.decodes, s.jitter.pushed), (0, 0), "channel {i}");
            }
        }
        // After the talkers stop (and 80 ms of concealment), idle again and silent.
        assert_eq!(sim.levels[219].0, 0);
        assert_eq!(peak(&sim.frames(217..220, 0)), 0.0);
    }

    /// A desk's speaker stops asking for frames while the mixer is idle and starts again on the
    /// next packet: idle must mean that the frames not mixed would have changed nothing. A
    /// mixer mixed only while not idle (or a packet came) plays the next spurt exactly as one
    /// mixed on every frame, and is idle neither during a spurt, its concealment, the duck's
    /// hold and release, nor while the limiter recovers.
    #[test]
    fn a_mixer_skipped_while_idle_plays_the_next_spurt_as_one_mixed_throughout() {
        let talkers = [Talker::new(0, 0, 1000.0, 1.0, 1.0), Talker::new(1, 300, 700.0, 0.25, 1.0)];
        let mk = || {
            let mut m = mixer(3, false, -12.0);
            m.select(Some(0)).unwrap();
            m
        };
        let (mut every, mut skipping) = (mk(), mk());
        assert!(every.idle(), "nothing pushed yet");
        let t0 = Instant::now();
        let (mut out_every, mut out_skipping) = (Vec::new(), Vec::new());
        let mut buf = vec![0.0; DEV];
        let (mut skipped, mut idle_from) = (0, None);
        for frame in 0..420 {
            let now = t0 + Duration::from_millis(10 * frame as u64);
            let mut pushed = false;
            for t in &talkers {
                if let Some(p) = t.packet(frame) {
                    every.push(now, t.channel, &p).unwrap();
                    skipping.push(now, t.channel, &p).unwrap();
                    pushed = true;
                }
            }
            let lv = every.mix(now, &mut buf);
            let (active, limiter_db) = (lv.active, lv.limiter_db);
            out_every.extend_from_slice(&buf);
            if (1..100).contains(&frame) || (300..400).contains(&frame) {
                assert!(!every.idle() && active != 0, "frame {frame}: a spurt is playing");
            }
            if every.idle() {
                assert!(active == 0 && limiter_db >= 0.0, "frame {frame}");
                idle_from.get_or_insert(frame);
            }
            if pushed || !skipping.idle() {
                skipping.mix(now, &mut buf);
            } else {
                buf.fill(0.0);
                skipped += 1;
            }
            out_skipping.extend_from_slice(&buf);
        }
        // The first spurt ends at frame 100; concealment, the duck's hold (500 ms) and release
        // (250 ms) come after it.
        let idle_from = idle_from.unwrap();
        assert!((170..300).contains(&idle_from), "idle from frame {idle_from}");
        assert!(skipped > 100, "{skipped} frames skipped");
        assert!(peak(&out_every[300 * DEV..400 * DEV]) > 0.1, "the second spurt is heard");
        assert_eq!(out_every, out_skipping, "skipping idle frames changed the output");
    }

    #[test]
    fn full_scale_on_three_channels_never_passes_the_ceiling() {
        for stereo in [false, true] {
            let mut sim = Sim::new(mixer(10, stereo, 0.0));
            let talkers: Vec<Talker> =
                [500.0, 1000.0, 1500.0].iter().enumerate().map(|(k, &f)| Talker::new(k, 0, f, 1.0, 1.0)).collect();
            sim.run(120, &talkers, |_, _| {});
            let ceiling = db_to_gain(-6.0);
            let p = peak(&sim.out);
            let min_gain = sim.limiter_db.iter().fold(0.0f32, |a, &b| a.min(b));
            eprintln!(
                "3 x full scale, stereo {stereo}: peak {:.3} dBFS, limiter down to {min_gain:.1} dB",
                gain_to_db(p)
            );
            assert!(p <= ceiling, "peak {p} over {ceiling}");
            assert!(p > 0.95 * ceiling, "limiting, not muting: {p}");
            assert!(min_gain < -6.0);
        }
    }

    #[test]
    fn mute_and_unmute_take_effect_within_one_frame() {
        let mut sim = Sim::new(mixer(10, false, 0.0));
        let talker = Talker::new(4, 0, 1000.0, 0.25, 2.0);
        // Mute at frame 60; unmute at frame 121, in the middle of an Opus frame.
        let (mute, unmute) = (60, 121);
        sim.run(180, std::slice::from_ref(&talker), |f, m| {
            if f == mute {
                m.set_listen(4, false).unwrap();
            }
            if f == unmute {
                m.set_listen(4, true).unwrap();
            }
        });
        assert!(sim.gain_db(&talker, 40..60, 0).abs() < 0.01);
        // The mute frame fades out; from the next one on, silence.
        assert!(peak(&sim.frames(mute..mute + 1, 0)) > 0.05);
        assert_eq!(peak(&sim.frames(mute + 1..unmute, 0)), 0.0);
        // The unmute frame fades in; the next one is at full level.
        let fade_in = sim.frames(unmute..unmute + 1, 0);
        assert!(peak(&fade_in[..48]) < 0.3 * peak(&fade_in[DEV - 48..]));
        let next = sim.gain_db(&talker, unmute + 1..unmute + 2, 0);
        let later = sim.gain_db(&talker, unmute + 3..unmute + 13, 0);
        eprintln!("unmute: the frame after at {next:+.2} dB, from 30 ms on {later:+.2} dB");
        assert!(next.abs() < 1.0 && later.abs() < 0.1, "{next} {later}");
        // No click either way.
        assert!(max_step(&sim.out) < 1.2 * slope(std::slice::from_ref(&talker)), "{}", max_step(&sim.out));

        let s = sim.mixer.channel_stats(4).unwrap();
        eprintln!("muted channel: {s:?}");
        // Frames 62..=120 skipped (the fade-out at 60 needed its frame); 120 decoded late at 121
        // after warming up on 116 and 118.
        assert_eq!((s.skipped, s.late_decodes, s.warm_up_decodes), (30, 1, 2));
        assert_eq!(s.decodes, s.jitter.played - s.skipped + s.late_decodes + s.warm_up_decodes);
        assert_eq!(s.jitter.played, s.jitter.pushed, "muted packets are consumed in step");
        // The LED shows activity while muted.
        let lv = &sim.levels[mute + 10].1[4];
        assert!(lv.active && !lv.audible && lv.level_dbfs == SILENCE_DBFS);
    }

    #[test]
    fn muted_channels_are_not_decoded() {
        let mut channels = vec![MixChannelConfig::default(); 3];
        channels[1].listen = false;
        let mut sim = Sim::new(
            Mixer::new(MixerConfig { channels, duck_db: 0.0, jitter: tight(), ..Default::default() }).unwrap(),
        );
        let talkers = [Talker::new(0, 0, 500.0, 0.25, 1.0), Talker::new(1, 0, 1000.0, 0.25, 1.0)];
        sim.run(100, &talkers, |_, _| {});
        let (a, b) = (sim.mixer.channel_stats(0).unwrap(), sim.mixer.channel_stats(1).unwrap());
        assert_eq!((a.decodes, a.skipped), (50, 0));
        assert_eq!((b.decodes, b.skipped, b.jitter.played), (0, 50, 50));
        assert_eq!(sim.mixer.channel_stats(2).unwrap().decodes, 0);
        // The output is channel 0 alone, sample for sample.
        let (out, want) = (sim.frames(0..100, 0), talkers[0].heard(0..100));
        let diff = out.iter().zip(want).position(|(a, b)| a != b);
        assert_eq!(diff, None, "{:?}", diff.map(|i| (out[i], want[i])));
    }

    /// Channel 0 (selected) talks from 1 s to 2 s; channel 1 talks all along; channel 2, the
    /// priority one, is muted and talks all along too.
    fn duck_scene() -> (Sim, Vec<Talker>) {
        let mut sim = Sim::new(mixer(4, false, -12.0));
        sim.mixer.select(Some(0)).unwrap();
        sim.mixer.set_priority(2, true).unwrap();
        sim.mixer.set_listen(2, false).unwrap();
        let talkers = vec![
            Talker::new(0, 100, 500.0, 0.1, 1.0),
            Talker::new(1, 0, 1000.0, 0.1, 4.0),
            Talker::new(2, 0, 1500.0, 0.1, 4.0),
        ];
        sim.run(400, &talkers, |_, _| {});
        (sim, talkers)
    }

    #[test]
    fn unselected_channels_duck_while_the_selected_one_talks_and_recover() {
        let (sim, t) = duck_scene();
        let before = sim.gain_db(&t[1], 50..100, 0);
        let during = sim.gain_db(&t[1], 110..195, 0);
        // Channel 0's last packet plays at frames 198-199, then 80 ms of concealment;
        // the duck holds 500 ms and releases in 250 ms.
        let recovered = sim.gain_db(&t[1], 290..390, 0);
        eprintln!("ducking: unselected channel at {before:+.2} dB before, {during:+.2} during, {recovered:+.2} after");
        assert!(before.abs() < 0.1 && (during + 12.0).abs() < 0.1 && recovered.abs() < 0.1);
        // Down within the 20 ms attack of the selected talker's first packet.
        assert!((sim.gain_db(&t[1], 102..110, 0) + 12.0).abs() < 0.1);
        assert!(sim.levels[150].1[1].ducked && !sim.levels[150].1[0].ducked && !sim.levels[300].1[1].ducked);
        // The selected channel itself is at full gain.
        assert!(sim.gain_db(&t[0], 110..195, 0).abs() < 0.1);
        // No click: the ramps are smooth.
        assert!(max_step(&sim.out) < 1.2 * slope(&t), "{} vs {}", max_step(&sim.out), slope(&t));
    }

    #[test]
    fn the_priority_channel_is_heard_when_muted_and_never_ducked() {
        let (sim, t) = duck_scene();
        let (before, during) = (sim.gain_db(&t[2], 50..100, 0), sim.gain_db(&t[2], 110..195, 0));
        eprintln!("priority channel (muted): {before:+.3} dB before the selected talks, {during:+.3} during");
        assert!(before.abs() < 0.1 && during.abs() < 0.1);
        assert!(sim.levels[150].1[2].audible && !sim.levels[150].1[2].ducked);
        let s = sim.mixer.channel_stats(2).unwrap();
        assert_eq!((s.decodes, s.skipped), (200, 0));
    }

    #[test]
    fn stereo_pan_puts_channels_left_and_right() {
        let mut sim = Sim::new(mixer(3, true, 0.0));
        for (i, pan) in [-1.0, 1.0, 0.0].into_iter().enumerate() {
            sim.mixer.set_pan(i, pan).unwrap();
        }
        let talkers = [
            Talker::new(0, 0, 500.0, 0.2, 1.0),
            Talker::new(1, 0, 1000.0, 0.2, 1.0),
            Talker::new(2, 0, 1500.0, 0.2, 1.0),
        ];
        sim.run(100, &talkers, |_, _| {});
        let g = |t: &Talker, side| sim.gain_db(t, 20..90, side);
        let [left, right, centre] = &talkers;
        eprintln!(
            "pan: left channel L {:+.2} R {:.1} dB; right channel L {:.1} R {:+.2}; centre L {:+.3} R {:+.3}",
            g(left, 0),
            g(left, 1),
            g(right, 0),
            g(right, 1),
            g(centre, 0),
            g(centre, 1)
        );
        assert!(g(left, 0).abs() < 0.1 && g(left, 1) < -60.0);
        assert!(g(right, 1).abs() < 0.1 && g(right, 0) < -60.0);
        assert!((g(centre, 0) + 3.01).abs() < 0.1 && (g(centre, 1) + 3.01).abs() < 0.1);
    }

    #[test]
    fn a_packet_due_now_is_heard_in_the_same_mix_call() {
        // Tone bursts as separate talk-spurts on one channel of ten; each spurt's first packet
        // is due on arrival (tight jitter config) and arrives just before a mix call.
        let mut m = mixer(10, false, -12.0);
        m.select(Some(7)).unwrap();
        let t0 = Instant::now();
        let burst = encode(&tone(1000.0, 0.25, PKT * 10));
        let reference = decode_all(&burst);
        let first_loud = |x: &[f32]| x.iter().position(|v| v.abs() > 0.05);
        let ref_onset = first_loud(&reference).unwrap();
        let mut added = Vec::new();
        let mut seq = 0u16;
        for spurt in 0..4u64 {
            // 200 ms of burst, then 300 ms of nothing (as with DTX: sequence numbers go on).
            let start = spurt * 50 + 3;
            let mut heard = Vec::new();
            for f in spurt * 50..spurt * 50 + 50 {
                let now = t0 + Duration::from_millis(10 * f);
                let k = f.checked_sub(start).filter(|k| k % 2 == 0 && k / 2 < 10);
                if let Some(k) = k {
                    let payload = burst[k as usize / 2].clone();
                    let p = MediaPacket { seq, timestamp: (f as usize * DEV) as u32, marker: k == 0, payload };
                    seq = seq.wrapping_add(1);
                    m.push(now, 7, &p).unwrap();
                }
                let mut out = [0.0f32; DEV];
                let lv = m.mix(now, &mut out);
                if f == start {
                    assert!(
                        lv.channels[7].active && lv.out.peak_dbfs > -20.0,
                        "spurt {spurt}: heard in the call of its first packet"
                    );
                    assert_eq!(m.channel_stats(7).unwrap().jitter.played, 10 * spurt + 1);
                } else if f < start {
                    assert!(!lv.channels[7].active && lv.out == Meter::SILENCE);
                }
                if f >= start {
                    heard.extend_from_slice(&out);
                }
            }
            let onset = first_loud(&heard).unwrap();
            added.push((onset as f64 - ref_onset as f64) / 48.0);
            if spurt == 0 {
                // Sample-exact: from the first packet's call on, the output is the plain decode.
                assert_eq!(&heard[..PKT * 10], &reference[..]);
            }
        }
        eprintln!("mixer added latency per spurt: {added:?} ms (0: heard in the call its packet is due in)");
        assert!(added.iter().all(|&a| a == 0.0), "{added:?}");
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let mut m = mixer(2, true, -12.0);
        let now = Instant::now();
        let p = MediaPacket { seq: 1, timestamp: 0, marker: true, payload: vec![0xff; 40] };
        assert_eq!(m.push(now, 2, &p), Err(MixerError::NoSuchChannel(2)));
        assert!(m.set_listen(5, true).is_err() && m.set_volume(9, 0.0).is_err() && m.select(Some(2)).is_err());
        m.set_volume(0, f32::NAN).unwrap();
        m.set_pan(0, f32::INFINITY).unwrap();
        m.set_volume(1, 1e9).unwrap();
        assert_eq!(m.settings(0).unwrap().volume_db, 0.0);
        assert_eq!(m.settings(0).unwrap().pan, 1.0);
        assert_eq!(m.settings(1).unwrap().volume_db, 20.0);
        // Garbage payloads: refused by the decoder, played as silence, counted.
        for k in 0..20u16 {
            let now = now + Duration::from_millis(20 * u64::from(k));
            let p =
                MediaPacket { seq: k, timestamp: u32::from(k) * 960, marker: k == 0, payload: vec![0xff, 0xff, 0xff] };
            m.push(now, 0, &p).unwrap();
            for half in 0..2 {
                let mut out = [1.0f32; 2 * DEV + 1];
                let lv = m.mix(now + Duration::from_millis(10 * half), &mut out);
                assert!(out.iter().all(|&x| x == 0.0) && lv.out == Meter::SILENCE);
            }
        }
        assert_eq!(m.channel_stats(0).unwrap().errors, 20);
        // Empty and oversized buffers.
        m.mix(now, &mut []);
        m.mix(now, &mut vec![0.0; 3 * MAX_FRAME_SAMPLES]);
        let too_many = vec![MixChannelConfig::default(); MAX_CHANNELS + 1];
        assert!(matches!(
            Mixer::new(MixerConfig { channels: too_many, ..Default::default() }),
            Err(MixerError::TooManyChannels(65))
        ));
    }
}
