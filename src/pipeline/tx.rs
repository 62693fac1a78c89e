//! Channel → radio: packets into the jitter buffer; device frames out, decoded (FEC/PLC for
//! losses), held back while the transmitter comes up, followed by a courtesy tone, with the
//! CW station ID mixed in when the keying core asks for it, and limited.

use std::time::{Duration, Instant};

use crate::codec::{CodecError, Decoder, MAX_FRAME_SAMPLES, SAMPLE_RATE};
use crate::core::jitter::{JitterBuffer, JitterConfig, JitterStats, Packet, Playout};
use crate::dsp::{CourtesyToneConfig, CwIdConfig, Meter, Sine, ToneSequence, TxChain, TxConfig};

use super::MediaPacket;

/// Where the radio's transmitter is, as the keying core says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxGate {
    /// Not keyed (or inhibited, locked out): channel audio is consumed and discarded.
    Closed,
    /// PTT is on but the TX delay has not passed: audio is held in the delay line.
    Hold,
    /// On air: audio (delayed by what was held) goes to the radio.
    Open,
    /// PTT held for the CTCSS tail: channel audio is discarded, the CTCSS tone goes on turned
    /// by 180° (reverse burst).
    Tail,
}

/// What one device frame carried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TxFrame {
    /// The channel has a talk-spurt in progress (audio, concealment or a pause within it).
    pub channel_active: bool,
    pub meter: Meter,
}

pub struct TxPath {
    jitter: JitterBuffer,
    decoder: Decoder,
    chain: TxChain,
    courtesy: Option<ToneSequence>,
    /// The CW station ID, mixed into whatever goes on air while it plays.
    cw_id: Option<ToneSequence>,
    /// A reply to the radio (a DTMF command's acknowledgement), mixed in the same way.
    reply: Option<ToneSequence>,
    /// CTCSS encoder: the tone under everything on air while the radio is keyed, added after
    /// the transmit chain (the channel audio came through the receive high-pass already, and
    /// nothing here filters the tone away).
    ctcss: Option<Sine>,
    /// The tone has been turned for the current tail.
    reversed: bool,
    /// The last decoded Opus frame and how much of it has been handed out.
    pcm: Vec<f32>,
    pcm_len: usize,
    pcm_pos: usize,
    pcm_active: bool,
    /// Audio held during the TX delay, played in order once on air (a ring buffer).
    delay: Vec<f32>,
    delay_head: usize,
    delay_len: usize,
    /// Channel audio for the current device frame.
    scratch: Vec<f32>,
    /// A talk-spurt was played on air and the courtesy tone is owed when it ends.
    owe_courtesy: bool,
}

impl TxPath {
    /// `max_hold`: the longest TX delay to buffer for (the port's `tx_delay`).
    pub fn new(
        dsp: &TxConfig,
        jitter: JitterConfig,
        courtesy: &CourtesyToneConfig,
        max_hold: Duration,
    ) -> Result<TxPath, CodecError> {
        let hold = (max_hold.as_secs_f64() * f64::from(SAMPLE_RATE)) as usize;
        Ok(TxPath {
            jitter: JitterBuffer::new(jitter),
            decoder: Decoder::new()?,
            chain: TxChain::new(dsp),
            courtesy: ToneSequence::courtesy(courtesy),
            cw_id: None,
            reply: None,
            ctcss: None,
            reversed: false,
            pcm: vec![0.0; MAX_FRAME_SAMPLES],
            pcm_len: 0,
            pcm_pos: 0,
            pcm_active: false,
            // One Opus frame of slack: the hold ends mid-frame.
            delay: vec![0.0; hold + MAX_FRAME_SAMPLES],
            delay_head: 0,
            delay_len: 0,
            scratch: vec![0.0; MAX_FRAME_SAMPLES],
            owe_courtesy: false,
        })
    }

    /// Send this CW ID when [`start_id`](Self::start_id) is called (`None` or disabled: none).
    pub fn with_cw_id(mut self, config: Option<&CwIdConfig>) -> Self {
        self.cw_id = config.and_then(ToneSequence::cw);
        self
    }

    /// How long the CW ID plays (zero when there is none).
    pub fn cw_id_length(&self) -> Duration {
        let samples = self.cw_id.as_ref().map_or(0, ToneSequence::len_samples);
        Duration::from_secs_f64(samples as f64 / f64::from(SAMPLE_RATE))
    }

    /// Start the CW ID from its beginning: it is mixed into the next frames while the gate is
    /// open (the keying core asks only once TX audio is open), and stops if the gate closes.
    pub fn start_id(&mut self) {
        if let Some(id) = &mut self.cw_id {
            id.start();
        }
    }

    /// Send CTCSS `hz` at peak `level_dbfs` under the audio whenever the radio is keyed (TX
    /// delay included, so receivers open before the first word).
    pub fn with_ctcss(mut self, hz: f32, level_dbfs: f32) -> Self {
        self.ctcss = Some(Sine::new(SAMPLE_RATE, hz, level_dbfs));
        self
    }

    /// The reply to play on the next [`start_reply`](Self::start_reply).
    pub fn set_reply(&mut self, reply: ToneSequence) {
        self.reply = Some(reply);
    }

    /// Start the reply set last: like the ID, mixed into the next frames while the gate is
    /// open, stopped (and forgotten) if the gate closes.
    pub fn start_reply(&mut self) {
        if let Some(r) = &mut self.reply {
            r.start();
        }
    }

    pub fn reply_active(&self) -> bool {
        self.reply.as_ref().is_some_and(ToneSequence::is_active)
    }

    /// The CW ID is playing.
    pub fn id_active(&self) -> bool {
        self.cw_id.as_ref().is_some_and(ToneSequence::is_active)
    }

    /// A packet arrived from the channel.
    pub fn push(&mut self, now: Instant, packet: &MediaPacket) {
        self.jitter.push(
            now,
            Packet { seq: packet.seq, timestamp: packet.timestamp, marker: packet.marker, payload: &packet.payload },
        );
    }

    /// Gain of the channel's audio towards the radio, dB.
    pub fn set_gain_db(&mut self, db: f32) {
        self.chain.set_gain_db(db);
    }

    pub fn jitter_stats(&self) -> JitterStats {
        self.jitter.stats()
    }

    /// Nothing to play: no talk-spurt in progress or waiting in the jitter buffer, nothing held
    /// by the TX delay, no courtesy tone or ID sounding. Filling frames changes nothing then.
    pub fn idle(&self) -> bool {
        !self.pcm_active
            && self.jitter.buffered() == 0
            && self.delay_len == 0
            && !self.courtesy.as_ref().is_some_and(ToneSequence::is_active)
            && !self.id_active()
            && !self.reply_active()
    }

    /// Audio held back by the TX delay right now.
    pub fn held(&self) -> Duration {
        Duration::from_secs_f64(self.delay_len as f64 / f64::from(SAMPLE_RATE))
    }
    /// No channel audio goes out (closed, or the CTCSS tail): no delay line, no courtesy tone
    /// owed, and an ID or reply cut short (TOT, inhibit, fault) must not play its rest on the
    /// next key-up.
    fn off_air(&mut self) {
        self.delay_len = 0;
        self.owe_courtesy = false;
        if let Some(id) = &mut self.cw_id {
            id.stop();
        }
        if let Some(r) = &mut self.reply {
            r.stop();
        }
    }

    /// Produce the next device frame for the radio, paced by the device (call it once per
    /// device period, `out.len()` samples at most `MAX_FRAME_SAMPLES`).
    pub fn fill(&mut self, now: Instant, gate: TxGate, out: &mut [f32]) -> TxFrame {
        let n = out.len().min(self.scratch.len());
        let out = &mut out[..n];
        let channel_active = self.channel_audio(now, n);

        match gate {
            TxGate::Closed => {
                // Not on air: silence, and no DSP spent on it (an idle port costs ~nothing).
                self.off_air();
                out.fill(0.0);
                if let Some(tone) = &mut self.ctcss {
                    // Each key-up starts the tone afresh.
                    tone.reset_phase();
                }
                self.reversed = false;
                return TxFrame { channel_active, meter: Meter::SILENCE };
            }
            TxGate::Tail => {
                self.off_air();
                out.fill(0.0);
                if let Some(tone) = &mut self.ctcss {
                    if !std::mem::replace(&mut self.reversed, true) {
                        tone.invert();
                    }
                    tone.mix(out);
                }
                return TxFrame { channel_active, meter: Meter::SILENCE };
            }
            TxGate::Hold => {
                if channel_active {
                    self.hold_scratch(n);
                }
                out.fill(0.0);
            }
            TxGate::Open => {
                if channel_active {
                    self.hold_scratch(n);
                    self.owe_courtesy = true;
                }
                // The delay line drains when the channel goes quiet, so the TX delay costs
                // latency only within an over.
                self.release(out);
                if !channel_active && self.delay_len == 0 && std::mem::take(&mut self.owe_courtesy) {
                    if let Some(c) = &mut self.courtesy {
                        c.start();
                    }
                }
                if let Some(c) = &mut self.courtesy {
                    if c.is_active() {
                        c.mix(out);
                    }
                }
                // Under the channel audio, if any: the ID must not wait for a long over.
                if let Some(id) = &mut self.cw_id {
                    if id.is_active() {
                        id.mix(out);
                    }
                }
                if let Some(r) = &mut self.reply {
                    if r.is_active() {
                        r.mix(out);
                    }
                }
            }
        }
        let levels = self.chain.process(out);
        if let Some(tone) = &mut self.ctcss {
            tone.mix(out);
        }
        TxFrame { channel_active, meter: levels.output }
    }

    /// Fill `scratch[..n]` from decoded frames, popping the jitter buffer once per packet
    /// duration. Returns whether the channel has a talk-spurt in progress.
    fn channel_audio(&mut self, now: Instant, n: usize) -> bool {
        let mut active = false;
        let mut done = 0;
        while done < n {
            if self.pcm_pos == self.pcm_len {
                self.decode_next(now);
            }
            let take = (self.pcm_len - self.pcm_pos).min(n - done);
            self.scratch[done..done + take].copy_from_slice(&self.pcm[self.pcm_pos..self.pcm_pos + take]);
            self.pcm_pos += take;
            done += take;
            active |= self.pcm_active;
        }
        active
    }

    fn decode_next(&mut self, now: Instant) {
        let frame = (self.jitter.frame_duration().as_secs_f64() * f64::from(SAMPLE_RATE)) as usize;
        let frame = frame.clamp(1, self.pcm.len());
        let (decoded, active) = match self.jitter.pop(now) {
            Playout::Packet(p) => {
                // The first packet after the channel went idle starts afresh: decoded on the
                // state the last spurt's concealment left, it came out with a level
                // oscillation of +5..-8 dB over its first 100 ms.
                if !self.pcm_active {
                    let _ = self.decoder.reset();
                }
                (self.decoder.decode(p, &mut self.pcm), true)
            }
            Playout::Fec(next) => (self.decoder.decode_fec(next, &mut self.pcm), true),
            Playout::Conceal => (self.decoder.conceal(&mut self.pcm), true),
            Playout::Silence => (Err(CodecError::EmptyPacket), true),
            Playout::Idle => (Err(CodecError::EmptyPacket), false),
        };
        self.pcm_len = match decoded {
            Ok(len) if len > 0 => len,
            // A packet the decoder refuses (or a pause) is a frame of silence.
            _ => {
                self.pcm[..frame].fill(0.0);
                frame
            }
        };
        self.pcm_pos = 0;
        self.pcm_active = active;
    }

    fn hold_scratch(&mut self, n: usize) {
        let cap = self.delay.len();
        for i in 0..n {
            if self.delay_len == cap {
                // Full (a hold longer than configured): drop the oldest, latency stays bounded.
                self.delay_head = (self.delay_head + 1) % cap;
                self.delay_len -= 1;
            }
            let tail = (self.delay_head + self.delay_len) % cap;
            self.delay[tail] = self.scratch[i];
            self.delay_len += 1;
        }
    }

    fn release(&mut self, out: &mut [f32]) {
        let cap = self.delay.len();
        let take = self.delay_len.min(out.len());
        for o in out[..take].iter_mut() {
            *o = self.delay[self.delay_head];
            self.delay_head = (self.delay_head + 1) % cap;
        }
        self.delay_len -= take;
        out[take..].fill(0.0);
    }
}
