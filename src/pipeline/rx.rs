//! Radio → channel: one capture frame at a time through the receive DSP chain, accumulated to
//! whole Opus frames and encoded only while the port talks.

use crate::codec::{CodecError, Encoder, EncoderConfig, MAX_PACKET_BYTES};
use crate::dsp::{CtcssConfig, CtcssDecoder, CtcssState, DtmfConfig, DtmfDecoder, DtmfEvent, Meter, RxChain, RxConfig};

/// How long the receive audio is held back on a port that decodes DTMF, so that a digit can
/// be muted from its first sample: the decoder knows a digit ~25 ms after its onset (one
/// 20 ms window of tone, block and frame alignment), so everything still in this line when it
/// knows is silenced (SvxLink's DTMF muting does the same with its pre-mute delay).
pub const DTMF_MUTE_DELAY_MS: usize = 40;
/// Fade in and out of the mute, samples (2 ms), so muting makes no click.
const MUTE_RAMP: f32 = 96.0;
/// A frame whose peak is this far under the decoder's per-tone minimum is not fed to it (an
/// idle port's noise floor costs nothing); the decoder starts afresh on the next loud frame.
const DTMF_GATE_DB: f32 = 6.0;

/// The DTMF decoder with its mute: a delay line whose content is silenced when a digit is heard.
struct DtmfStage {
    decoder: DtmfDecoder,
    /// Peak level (linear) under which a frame is not decoded.
    gate: f32,
    /// The decoder saw the last frame (else it starts afresh).
    running: bool,
    mute: bool,
    line: Vec<f32>,
    pos: usize,
    /// Output samples still to silence: what was in the line when a digit was last heard.
    mute_left: usize,
    gain: f32,
}

impl DtmfStage {
    fn new(mute: bool) -> DtmfStage {
        let cfg = DtmfConfig::default();
        DtmfStage {
            gate: crate::dsp::db_to_gain(cfg.min_level_dbfs - DTMF_GATE_DB),
            decoder: DtmfDecoder::new(&cfg),
            running: false,
            mute,
            line: vec![0.0; if mute { DTMF_MUTE_DELAY_MS * 48 } else { 0 }],
            pos: 0,
            mute_left: 0,
            gain: 1.0,
        }
    }

    /// Decode `frame` (as it came from the radio) and, with muting, replace it by the delayed
    /// audio with every digit silenced. The digit that started in this frame, if any.
    fn process(&mut self, frame: &mut [f32]) -> Option<char> {
        let peak = frame.iter().fold(0.0f32, |m, x| if x.abs() > m { x.abs() } else { m });
        let mut digit = None;
        // NaN samples never raise the peak (`>` is false for them); the decoder cleans them.
        if peak >= self.gate || self.decoder.sounding() {
            if !self.running {
                self.decoder.reset();
                self.running = true;
            }
            self.decoder.process(frame);
            while let Some(e) = self.decoder.poll_event() {
                if let DtmfEvent::Digit(d) = e {
                    digit = Some(d);
                }
            }
        } else {
            self.running = false;
        }
        if !self.mute {
            return digit;
        }
        if self.decoder.sounding() {
            self.mute_left = self.line.len() + frame.len();
        }
        let n = self.line.len();
        for x in frame.iter_mut() {
            let y = std::mem::replace(&mut self.line[self.pos], *x);
            self.pos = if self.pos + 1 == n { 0 } else { self.pos + 1 };
            let target = if self.mute_left > 0 { 0.0 } else { 1.0 };
            self.mute_left = self.mute_left.saturating_sub(1);
            if self.gain != target {
                self.gain = if target > self.gain {
                    (self.gain + 1.0 / MUTE_RAMP).min(1.0)
                } else {
                    (self.gain - 1.0 / MUTE_RAMP).max(0.0)
                };
            }
            *x = y * self.gain;
        }
        digit
    }
}

use super::MediaPacket;

pub struct RxPath {
    chain: RxChain,
    encoder: Encoder,
    /// Samples waiting for a whole Opus frame.
    pending: Vec<f32>,
    filled: usize,
    encoded: Vec<u8>,
    /// Sample clock: RTP timestamp of the next captured sample. It runs while idle too, so
    /// the receiver sees the gap between talk-spurts.
    clock: u32,
    /// RTP timestamp of `pending[0]`.
    pending_ts: u32,
    seq: u16,
    talking: bool,
    /// The next packet is the first of a talk-spurt.
    marker: bool,
    /// VOX needs the chain's level on every frame, talking or not.
    vox: bool,
    /// While idle: the frames captured since the sample clock last crossed a codec-frame
    /// boundary (less than one codec frame), and the chain as it was at that boundary. A
    /// spurt that starts between boundaries takes them as its start, so every packet ends
    /// on the same phase of the clock: the device delivers whole codec frames there (its
    /// period is one), and a packet is complete on the read that completes it instead of a
    /// read later. Started wherever COR opened, a spurt's packets came 0 or 10 ms later than
    /// the last spurt's, which the far jitter buffer took for jitter.
    pre: Vec<f32>,
    /// Samples kept in `pre` (None: what came since the boundary is not all there).
    pre_len: Option<usize>,
    pre_chain: RxChain,
    /// The CTCSS decoder, on the audio as it comes from the radio (before the high-pass
    /// that keeps the tone off the channel), when CTCSS is a COR source.
    ctcss: Option<CtcssDecoder>,
    /// The DTMF decoder (and mute), when the port takes DTMF commands.
    dtmf: Option<DtmfStage>,
}

/// What one capture frame produced.
#[derive(Debug, Clone, PartialEq)]
pub struct RxOutput {
    /// Level of the frame as it came from the radio.
    pub meter: Meter,
    /// VOX level (dBFS) for the keying core; `None` unless VOX is the COR source.
    pub vox_dbfs: Option<f32>,
    /// An encoded packet, when this frame completed one.
    pub packet: Option<MediaPacket>,
    /// The CTCSS decoder's state after this frame, when it runs.
    pub ctcss: Option<CtcssState>,
    /// A DTMF digit that started in this frame (a digit lasts at least 35 ms and is followed
    /// by at least 40 ms without it, so a frame of 60 ms or less starts at most one).
    pub dtmf: Option<char>,
}

impl RxPath {
    pub fn new(dsp: &RxConfig, codec: &EncoderConfig, vox: bool) -> Result<RxPath, CodecError> {
        let encoder = Encoder::new(codec.clone())?;
        let frame = encoder.frame_samples();
        let chain = RxChain::new(dsp);
        Ok(RxPath {
            pre: vec![0.0; frame],
            pre_len: None,
            pre_chain: chain.clone(),
            chain,
            encoder,
            pending: vec![0.0; frame],
            filled: 0,
            encoded: vec![0; MAX_PACKET_BYTES],
            clock: 0,
            pending_ts: 0,
            seq: 0,
            talking: false,
            marker: false,
            vox,
            ctcss: None,
            dtmf: None,
        })
    }

    /// Decode CTCSS (`tone_hz` opens it) on every captured frame, talking or not.
    pub fn with_ctcss(mut self, tone_hz: f32) -> RxPath {
        self.ctcss = Some(CtcssDecoder::new(&CtcssConfig { tone_hz, ..CtcssConfig::default() }));
        self
    }

    /// Decode DTMF digits on every captured frame, talking or not; with `mute`, the receive
    /// audio is delayed by [`DTMF_MUTE_DELAY_MS`] and every digit is silenced in it, so no
    /// digit reaches the channel (or the VOX level).
    pub fn with_dtmf(mut self, mute: bool) -> RxPath {
        self.dtmf = Some(DtmfStage::new(mute));
        self
    }

    /// Samples per Opus frame.
    pub fn codec_frame(&self) -> usize {
        self.pending.len()
    }

    /// Process one capture frame (processed in place). `talking`: the port's receiver is open
    /// and it holds the floor, so its audio goes to the channel. While it does not talk, only
    /// levels are measured (with VOX, after the filters that the VOX level needs): an idle port
    /// costs next to nothing.
    pub fn process(&mut self, frame: &mut [f32], talking: bool) -> RxOutput {
        let ctcss = self.ctcss.as_mut().map(|d| {
            d.process(frame);
            d.state()
        });
        let dtmf = self.dtmf.as_mut().and_then(|d| d.process(frame));
        let mut out = self.process_audio(frame, talking);
        out.ctcss = ctcss;
        out.dtmf = dtmf;
        out
    }

    fn process_audio(&mut self, frame: &mut [f32], talking: bool) -> RxOutput {
        let start_ts = self.clock;
        self.clock = self.clock.wrapping_add(frame.len() as u32);
        let codec = self.pending.len();
        let phase = start_ts as usize % codec;
        if talking && !self.talking {
            self.marker = true;
            // A new over does not continue the last one: without these resets the encoder
            // predicts from, and the high-pass rings with, audio that ended seconds ago (a
            // tone's second over came out 6-8 dB off for 80 ms). With VOX the chain ran on
            // in between, so its filters already hold the present; the AGC keeps its gain.
            let _ = self.encoder.reset();
            if !self.vox {
                self.chain.reset_filters();
            }
            self.start_on_boundary(start_ts, phase);
        }
        if !talking {
            // A partial frame at the end of a spurt is dropped (< one frame of tail).
            self.filled = 0;
            self.keep_since_boundary(frame, phase);
        }
        self.talking = talking;

        if !talking {
            if !self.vox {
                return RxOutput {
                    meter: Meter::measure(frame),
                    vox_dbfs: None,
                    packet: None,
                    ctcss: None,
                    dtmf: None,
                };
            }
            let levels = self.chain.levels_only(frame);
            return RxOutput {
                meter: levels.input,
                vox_dbfs: Some(levels.vox_dbfs),
                packet: None,
                ctcss: None,
                dtmf: None,
            };
        }
        let levels = self.chain.process(frame);
        let vox_dbfs = self.vox.then_some(levels.vox_dbfs);
        let mut out = RxOutput { meter: levels.input, vox_dbfs, packet: None, ctcss: None, dtmf: None };

        // Accumulate; a frame never spans two packets in practice (device periods divide the
        // Opus frame), but handle it anyway by carrying the rest over.
        let mut offset = 0;
        while offset < frame.len() {
            if self.filled == 0 {
                self.pending_ts = start_ts.wrapping_add(offset as u32);
            }
            let n = (self.pending.len() - self.filled).min(frame.len() - offset);
            self.pending[self.filled..self.filled + n].copy_from_slice(&frame[offset..offset + n]);
            self.filled += n;
            offset += n;
            if self.filled == self.pending.len() {
                self.filled = 0;
                match self.encoder.encode(&self.pending, &mut self.encoded) {
                    Ok(len) => {
                        out.packet = Some(MediaPacket {
                            seq: self.seq,
                            timestamp: self.pending_ts,
                            marker: std::mem::take(&mut self.marker),
                            payload: self.encoded[..len].to_vec(),
                        });
                        self.seq = self.seq.wrapping_add(1);
                    }
                    Err(e) => tracing::warn!(error = %e, "Opus encode failed; frame dropped"),
                }
            }
        }
        out
    }

    /// While idle: keep `frame` (at `phase` samples past a codec-frame boundary) if the frames
    /// kept since that boundary and it are still short of a whole codec frame.
    fn keep_since_boundary(&mut self, frame: &[f32], phase: usize) {
        if phase == 0 {
            self.pre_len = Some(0);
            if self.vox {
                self.pre_chain.clone_from(&self.chain);
            }
        }
        let end = phase + frame.len();
        // Not contiguous with what is kept, or a whole codec frame: nothing to start from.
        self.pre_len = self.pre_len.filter(|&n| n == phase && end < self.pre.len()).map(|_| end);
        if self.pre_len.is_some() {
            self.pre[phase..end].copy_from_slice(frame);
        }
    }

    /// A spurt starts `phase` samples past a boundary: start its first packet at the boundary
    /// with the frames kept since, run through the chain as if the spurt had begun there.
    fn start_on_boundary(&mut self, start_ts: u32, phase: usize) {
        // Taken in any case: nothing kept from before a spurt may start a later one.
        if self.pre_len.take() != Some(phase) || phase == 0 {
            return;
        }
        if self.vox {
            self.chain.clone_from(&self.pre_chain);
        }
        self.chain.process(&mut self.pre[..phase]);
        self.pending[..phase].copy_from_slice(&self.pre[..phase]);
        (self.filled, self.pending_ts) = (phase, start_ts.wrapping_sub(phase as u32));
    }

    /// An idle VOX port whose receive audio is [`crate::dsp::chain::QUIET_MARGIN_DB`] under
    /// the VOX close threshold `close_dbfs` (a closed squelch's noise floor) only meters it:
    /// see [`RxChain::set_quiet_floor`].
    pub fn set_vox_close(&mut self, close_dbfs: f32) {
        self.chain.set_quiet_floor(close_dbfs);
        self.pre_chain.set_quiet_floor(close_dbfs);
    }

    /// Tell the encoder how much loss to prepare FEC for (from the receivers' reports).
    pub fn set_packet_loss(&mut self, pct: u8) {
        let _ = self.encoder.set_packet_loss(pct);
    }
}
