//! Adaptive jitter buffer, one per incoming RTP stream (sans-IO).
//!
//! The network side calls [`JitterBuffer::push`] with each packet and its arrival `Instant`;
//! the playout side calls [`JitterBuffer::pop`] once per frame period, paced by the audio
//! device, and is told what to feed the decoder: a packet, the FEC of the next packet, a
//! concealed frame, or nothing.
//!
//! How playout is scheduled:
//! - Every arrival is a delay sample `d = arrival - media time` (RTP timestamp / 48 kHz). The
//!   fastest recent packet (`d_min`) is the network's floor; the chosen percentile of
//!   `d - d_min` over a window of recent packets is the jitter the buffer must absorb.
//! - The jitter is the larger of that percentile and a decaying peak of `d - d_min`: the peak
//!   rises with any packet at once (a packet too late to play counts too), is held for 2 s and
//!   then falls by 20 ms a second, so a load spike is covered from the next packet on and the
//!   target comes back down slowly. There is no fixed start depth: a stream starts at what its first packets show.
//! - Target depth = jitter + one frame + a small scheduling margin (`margin`: the playout grid's
//!   phase is not ours, and a packet a hair later than the measured jitter must not miss a pop
//!   that falls just after its due time); at least two frames while the stream is losing
//!   packets, so on a calm network the next packet is here in time for its FEC), clamped to
//!   [min, max). It rises at once and, inside a talk-spurt, falls by at most two frames a
//!   second. The depth counts the frame being played, so a frame is due one frame earlier:
//!   at `media time + d_min + target - frame`, the moment the chosen percentile of packets has
//!   arrived. `e = pop - due` says how far the playout clock is from the schedule. Because
//!   the schedule is re-learned continuously, sender clock drift (a few hundred ppm) shows up
//!   as a slow creep of `e`, not as a growing or starving queue.
//! - The playout clock pops once per frame on its own grid, at a phase the buffer does not
//!   choose: a frame is played at the first pop at or after its due time, so `0 <= e < frame`
//!   is on schedule, and the grid adds 0..1 frame of latency by phase (half a frame on
//!   average), which the target does not count again. The `now` of a pop carries the
//!   caller's wake-up jitter while the device plays on a steady clock, so `e` is measured
//!   from the pop's place on the grid learned from the previous pops (its phase), not from
//!   `now`: a late or early wake-up does not make a frame look a pop behind or ahead.
//! - `e < 0`: the frame is not due yet. Between talk-spurts that is priming (silence); in a
//!   talk-spurt a concealed frame is inserted. `e >= frame`: the previous pop could have
//!   played this frame, so playout is a pop behind schedule (after warm-up, a falling target,
//!   or an insertion for a target that rose a little). Dropping a packet for that would be
//!   heard and could flap against the next insertion, so the lag is tolerated up to
//!   `frame + frame/4`, beyond which one frame is skipped (a missing frame or silence if
//!   possible, else the oldest packet); but a missing frame that would only be concealed is
//!   skipped as soon as `e >= frame`, which costs nothing. Silence gaps re-prime the buffer
//!   for free at every talk-spurt.
//! - A missing due frame is recovered from the next packet's FEC when that packet is here,
//!   else concealed; after `max_conceal` the buffer stops concealing and reports silence/idle.
//!   [`JitterBuffer::last_frame_ts`] says which frame's slot the last pop filled.
//! - Latency is bounded: the depth never exceeds `max_depth` (oldest packets are dropped), and
//!   a packet far ahead of the buffer resyncs it. Delays beyond `max_depth` (a stall's
//!   backlog) do not steer the target unless they persist (the path got slower).
//! - Each talk-spurt is a new playout start: the first packet after a pause (nothing
//!   buffered, not playing) is scheduled from its own arrival whenever its delay differs from
//!   the learned floor by more than the measured jitter: when the sender's timestamps count
//!   frames rather than time (libwebrtc resumes one frame on after a pause), the path changed
//!   while nobody talked, or the sender's capture delivers on another phase than in the last
//!   spurt (a few ms to a frame, constant through the spurt: counted as jitter, it raised the
//!   target at every over, with an inserted frame each time). Only the floor moves: the jitter
//!   learned on the path is kept, so the spurt starts at the depth the path needs with nothing
//!   carried over. Through that spurt a faster packet moves the floor down the same way (the
//!   first packet may have been a late one), so the spread is not inflated by it.
//! - A new sender (sequence jump, RFC 3550 probation: two packets in a row) or a timestamp
//!   jump inside a talk-spurt restarts the buffer; a lone stray packet is discarded.
//!
//! Payloads are copied into a fixed ring of reusable slots, so after the first packets the
//! buffer does not allocate (a slot only grows when a payload is larger than any it held).
//! [`Playout`] borrows the payload from its slot until the next call.

use std::time::{Duration, Instant};

/// RTP clock of Opus (RFC 7587): 48 kHz whatever the coded bandwidth.
pub const CLOCK_RATE: i64 = 48_000;

/// RFC 3550 A.1: a sequence jump this far ahead or behind is a new stream, not loss/reorder.
const MAX_DROPOUT: i64 = 3000;
const MAX_MISORDER: i64 = 100;
/// A delay this far from the fastest recent packet means the timestamps jumped (new sender,
/// restarted clock, very long silence with drift), not network jitter: start over.
const TIMEBASE_JUMP_US: i64 = 1_000_000;
/// Arrivals slower than `max_depth` beyond the fastest for this long mean the path's delay
/// changed; a stall's backlog arrives in one burst and never lasts this long.
const PATH_CHANGE_US: i64 = 500_000;
/// The jitter peak (see `DelayEstimator::peak`) is held this long after it last rose, then
/// falls by `PEAK_FALL_US_PER_S`: a 100 ms spike keeps the target up for 7 s. Without the
/// hold, the few-ms spikes of a loaded box decayed within ~150 ms, and each new one raised the
/// target again, by an inserted (concealed) frame each time.
const PEAK_HOLD_US: i64 = 2_000_000;
const PEAK_FALL_US_PER_S: i64 = 20_000;
/// The percentile is re-estimated every few arrivals (a new fastest packet counts at once).
const ESTIMATE_EVERY: u32 = 4;
/// Inside a talk-spurt the target may fall by this many frames per second (between
/// talk-spurts it falls at once, for free).
const TARGET_FALL_FRAMES_PER_S: i64 = 2;
/// Above 0.5% recent loss the target keeps a spare frame for FEC, until loss is below 0.1%.
const LOSSY_ON: u32 = (1 << 16) / 200;
const LOSSY_OFF: u32 = (1 << 16) / 1000;
/// Payload bytes reserved per slot up front (60 ms of Opus at 32 kbps).
const SLOT_RESERVE: usize = 256;
/// A pop this close to the learned playout grid (in frames) is scheduling jitter: it moves the
/// grid by `1/POP_GRID_GAIN` of its error; a pop further off restarts the grid.
const POP_GRID_SNAP: i64 = 4;
const POP_GRID_GAIN: i64 = 8;

#[derive(Debug, Clone, PartialEq)]
pub struct JitterConfig {
    /// Packet duration (and pop period) until the stream shows another one.
    pub frame: Duration,
    pub min_depth: Duration,
    pub max_depth: Duration,
    /// Share of packets the target should absorb (0.95: 5% may arrive too late).
    pub jitter_percentile: f64,
    /// Delay samples kept for the estimate (250 = 5 s of 20 ms packets).
    pub window: usize,
    /// Consecutive frames to conceal before reporting silence instead.
    pub max_conceal: Duration,
    /// Larger payloads are rejected (not Opus over RTP on any sane MTU).
    pub max_payload: usize,
    /// Slack kept between a frame's due time and the measured arrival of the packets it needs.
    /// The playout grid may sit just after the due time (its phase is not ours to choose), and
    /// then a packet a fraction of a millisecond later than any measured so far is too late
    /// and concealed: on a jitter-free local path radio A → radio B that concealed a frame in
    /// about half of all overs. 2 ms costs 2 ms of latency on average.
    pub margin: Duration,
}

impl Default for JitterConfig {
    fn default() -> Self {
        let ms = Duration::from_millis;
        Self {
            frame: ms(20),
            // One 10 ms frame: the target never falls below a frame and the margin anyway, and
            // 20 ms kept a second 10 ms frame on every clean stream.
            min_depth: ms(10),
            max_depth: ms(200),
            jitter_percentile: 0.95,
            window: 250,
            max_conceal: ms(80),
            max_payload: 1500,
            margin: ms(2),
        }
    }
}

/// One RTP packet as the buffer needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub seq: u16,
    /// 48 kHz RTP timestamp.
    pub timestamp: u32,
    /// RTP marker: first packet of a talk-spurt.
    pub marker: bool,
    pub payload: &'a [u8],
}

/// What the playout side should do with this frame period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Playout<'a> {
    /// Decode this packet.
    Packet(&'a [u8]),
    /// The frame is lost but the next packet is here: decode its in-band FEC
    /// (the packet itself is returned again by the next pop).
    Fec(&'a [u8]),
    /// Lost or not yet here: run the decoder's packet loss concealment.
    Conceal,
    /// A stream is active but this frame is a pause (priming, DTX gap, long loss): play silence.
    Silence,
    /// Nothing buffered and no talk-spurt in progress.
    Idle,
}

/// Counters since creation, and the current levels.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JitterStats {
    /// Audio buffered ahead of the playout point.
    pub depth_ms: f64,
    pub target_ms: f64,
    /// Measured delay spread (percentile minus minimum).
    pub jitter_ms: f64,
    pub pushed: u64,
    pub played: u64,
    /// Arrived after their frame was played, concealed or skipped.
    pub late: u64,
    /// Sequence numbers the playout passed without ever receiving them.
    pub lost: u64,
    /// Conceal outputs (for loss, and for insertions).
    pub concealed: u64,
    /// Concealed frames the talk-spurt came back from: gaps a listener hears inside an over
    /// (the fade after a spurt's last packet is not one).
    pub gaps_concealed: u64,
    pub fec_recovered: u64,
    pub duplicates: u64,
    /// Packets dropped to bring the depth back to target or under the maximum.
    pub dropped_for_overflow: u64,
    /// Frames inserted (conceal or silence) because playout ran ahead of the schedule.
    pub inserted: u64,
    /// Missing frames passed over (not concealed) because playout lagged the schedule.
    pub skipped: u64,
    /// Packets discarded on a stream reset, or stray packets from another stream.
    pub flushed: u64,
    /// Payloads over `max_payload`.
    pub rejected: u64,
    /// New streams (sequence or timestamp jumps) after the first.
    pub resets: u64,
    /// Talk-spurts scheduled afresh because their delay did not continue the previous one's.
    pub rebased: u64,
}

#[derive(Debug, Clone, Default)]
struct Slot {
    filled: bool,
    seq: i64,
    ts: i64,
    marker: bool,
    payload: Vec<u8>,
}

impl Slot {
    fn with_reserve() -> Self {
        Self { payload: Vec::with_capacity(SLOT_RESERVE), ..Default::default() }
    }
    fn fill(&mut self, seq: i64, ts: i64, marker: bool, payload: &[u8]) {
        self.payload.clear();
        self.payload.extend_from_slice(payload);
        (self.filled, self.seq, self.ts, self.marker) = (true, seq, ts, marker);
    }
}

/// Recent arrival delays (µs): their minimum and a percentile of the spread above it.
#[derive(Debug, Clone)]
struct DelayEstimator {
    window: usize,
    samples: Vec<i64>,
    next: usize,
    scratch: Vec<i64>,
    d_min: i64,
    spread: i64,
    /// Decaying peak of `d - d_min` (µs): rises at once with any packet's delay, is held for
    /// `PEAK_HOLD_US`, then falls by `PEAK_FALL_US_PER_S`. A spike is covered from the next
    /// packet on, not after it fills the percentile, and the first packets of a stream set
    /// the target from what they show. `peak` is its value at the last packet; `peak_top` and
    /// `peak_at` the value and time of its last rise.
    peak: i64,
    peak_top: i64,
    peak_at: i64,
    since_estimate: u32,
}

impl DelayEstimator {
    fn new(window: usize) -> Self {
        Self {
            window,
            samples: Vec::with_capacity(window),
            next: 0,
            scratch: Vec::with_capacity(window),
            d_min: 0,
            spread: 0,
            peak: 0,
            peak_top: 0,
            peak_at: 0,
            since_estimate: 0,
        }
    }

    fn clear(&mut self) {
        self.samples.clear();
        (self.next, self.d_min, self.spread, self.since_estimate) = (0, 0, 0, 0);
        (self.peak, self.peak_top, self.peak_at) = (0, 0, 0);
    }

    fn len(&self) -> usize {
        self.samples.len()
    }

    /// Moves the floor by `off`, keeping the spread: same path jitter, new timebase.
    fn shift(&mut self, off: i64) {
        for d in self.samples.iter_mut() {
            *d += off;
        }
        self.d_min += off;
    }

    /// A packet that arrived at `now` (µs) with delay `d`.
    fn add(&mut self, now: i64, d: i64, percentile: f64) {
        if self.samples.len() < self.window {
            self.samples.push(d);
        } else {
            self.samples[self.next] = d;
        }
        self.next = (self.next + 1) % self.window;
        self.since_estimate += 1;
        if self.samples.len() == 1 || d < self.d_min {
            // A faster path shows up at once: otherwise playout would lag it for a while.
            self.d_min = d;
        }
        let falling = (now - self.peak_at - PEAK_HOLD_US).clamp(0, 1_000_000_000);
        let held = (self.peak_top - falling * PEAK_FALL_US_PER_S / 1_000_000).max(0);
        let spread = (d - self.d_min).max(0);
        if spread >= held {
            (self.peak_top, self.peak_at) = (spread, now);
        }
        self.peak = held.max(spread);
        if self.since_estimate >= ESTIMATE_EVERY {
            self.estimate(percentile);
        }
    }

    fn estimate(&mut self, percentile: f64) {
        self.since_estimate = 0;
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.samples);
        let Some(&min) = self.scratch.iter().min() else { return };
        let last = self.scratch.len() - 1;
        let k = ((last as f64 * percentile).round() as usize).min(last);
        let (_, &mut p, _) = self.scratch.select_nth_unstable(k);
        (self.d_min, self.spread) = (min, p - min);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Played,
    Late,
    Overflow,
}

/// What `decide` chose; `pop` turns slot indices into borrowed payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Packet(usize),
    Fec(usize),
    Conceal,
    Silence,
    Idle,
}

#[derive(Debug, Clone)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    slots: Vec<Slot>,
    /// Time origin for the µs arithmetic (first input).
    epoch: Option<Instant>,
    /// A stream has been seen: the cursor below is meaningful.
    active: bool,
    /// Every sequence number up to here is done (played, dropped or given up), unwrapped.
    last_seq: i64,
    /// Highest buffered sequence number (== `last_seq` when empty).
    newest_seq: i64,
    /// Media time (unwrapped RTP timestamp) of the frame the next pop fills.
    play_ts: i64,
    /// Samples per packet, learned from the stream.
    frame_ts: i64,
    frame_guess: (i64, u32),
    /// A talk-spurt is playing (vs. priming or waiting between spurts).
    in_talk: bool,
    conceal_run: u32,
    /// Conceal outputs (not FEC) since the last played packet.
    concealed_run: u32,
    /// Bit n set: `last_seq - n` was played (tells duplicates from late packets).
    played_mask: u128,
    /// RFC 3550 probation: a lone packet from outside the window, kept until the next one
    /// shows whether it starts a new stream.
    stray: Slot,
    stray_arrival: i64,
    est: DelayEstimator,
    /// Arrival time of the first of a run of packets too slow to count as jitter.
    outliers_since: Option<i64>,
    /// The current talk-spurt was scheduled afresh from its first packet (see `push_us`).
    spurt_rebased: bool,
    /// Target depth in use (µs) and when it was last updated: it rises at once but falls
    /// gradually inside a talk-spurt, so a shrinking target drops at most one frame per
    /// `TARGET_FALL_FRAMES_PER_S`th of a second instead of a burst of them.
    target: i64,
    target_at: i64,
    /// Recent loss rate (Q16, averaged over ~512 packets). While packets are being lost the
    /// target is at least two frames, so the next packet can be here in time for its FEC.
    loss_avg: u32,
    lossy: bool,
    /// Media time of the frame whose slot the last pop filled (None: an insertion or a pause).
    last_frame: Option<i64>,
    /// Where the playout clock's next pop falls on its learned grid (µs).
    next_pop: Option<i64>,
    stats: JitterStats,
}

fn ts_to_us(ts: i64) -> i64 {
    (ts * 1_000_000).div_euclid(CLOCK_RATE)
}

fn duration_us(d: Duration) -> i64 {
    d.as_micros().min(i64::MAX as u128) as i64
}

impl JitterBuffer {
    /// Out-of-range settings are clamped to something usable (config validation reports them).
    pub fn new(mut cfg: JitterConfig) -> Self {
        let ms = Duration::from_millis;
        cfg.frame = cfg.frame.clamp(Duration::from_micros(2500), ms(120));
        cfg.max_depth = cfg.max_depth.clamp(cfg.frame * 2, ms(5000));
        cfg.min_depth = cfg.min_depth.clamp(cfg.frame, cfg.max_depth - cfg.frame);
        cfg.window = cfg.window.clamp(8, 10_000);
        cfg.jitter_percentile = cfg.jitter_percentile.clamp(0.5, 1.0);
        // Enough slots for max_depth of 10 ms packets plus reordering; a power of two so the
        // index stays continuous across the 16-bit sequence wrap.
        let slots = (duration_us(cfg.max_depth) / 10_000 + 16).clamp(32, 1024) as usize;
        let slots = (0..slots.next_power_of_two()).map(|_| Slot::with_reserve()).collect();
        Self {
            frame_ts: duration_us(cfg.frame) * CLOCK_RATE / 1_000_000,
            est: DelayEstimator::new(cfg.window),
            cfg,
            slots,
            epoch: None,
            active: false,
            last_seq: 0,
            newest_seq: 0,
            play_ts: 0,
            frame_guess: (0, 0),
            in_talk: false,
            conceal_run: 0,
            concealed_run: 0,
            played_mask: 0,
            stray: Slot::with_reserve(),
            stray_arrival: 0,
            target: 0,
            target_at: 0,
            loss_avg: 0,
            lossy: false,
            outliers_since: None,
            spurt_rebased: false,
            last_frame: None,
            next_pop: None,
            stats: JitterStats::default(),
        }
    }

    pub fn config(&self) -> &JitterConfig {
        &self.cfg
    }

    /// Current packet duration (as learned from the stream).
    pub fn frame_duration(&self) -> Duration {
        Duration::from_micros(ts_to_us(self.frame_ts) as u64)
    }

    /// Packets held (waiting to play), including a stray one on probation.
    pub fn buffered(&self) -> usize {
        self.slots.iter().filter(|s| s.filled).count() + usize::from(self.stray.filled)
    }

    pub fn stats(&self) -> JitterStats {
        JitterStats {
            depth_ms: self.depth_us() as f64 / 1000.0,
            target_ms: self.target as f64 / 1000.0,
            jitter_ms: self.est.spread as f64 / 1000.0,
            ..self.stats
        }
    }

    /// Forget the stream (counters are kept).
    pub fn reset(&mut self) {
        self.flush();
        self.active = false;
        self.est.clear();
    }

    /// A packet arrived at `now`.
    pub fn push(&mut self, now: Instant, pkt: Packet<'_>) {
        self.stats.pushed += 1;
        let now_us = self.micros(now);
        self.push_us(now_us, pkt);
    }

    fn push_us(&mut self, now_us: i64, pkt: Packet<'_>) {
        if pkt.payload.len() > self.cfg.max_payload {
            self.stats.rejected += 1;
            return;
        }
        if !self.active {
            self.restart(now_us, pkt);
            return;
        }
        let seq = self.seq_ext(pkt.seq);
        let ds = seq - self.last_seq;
        if ds <= -MAX_MISORDER || ds >= MAX_DROPOUT {
            self.on_stray(now_us, pkt);
            return;
        }
        if self.stray.filled {
            // The stray was not followed by its successor: it was noise, not a new stream.
            self.stray.filled = false;
            self.stats.flushed += 1;
        }
        if ds <= 0 {
            if self.was_played(seq) {
                self.stats.duplicates += 1;
            } else {
                self.stats.late += 1;
                // Too late is the clearest sign the target is too low: it counts at once.
                let d = now_us - ts_to_us(self.ts_ext(pkt.timestamp));
                if d - self.est.d_min <= duration_us(self.cfg.max_depth) {
                    self.est.add(now_us, d, self.cfg.jitter_percentile);
                }
            }
            return;
        }
        let ts = self.ts_ext(pkt.timestamp);
        let d = now_us - ts_to_us(ts);
        let off = d - self.est.d_min;
        if !self.in_talk && self.is_empty() && self.est.len() > 0 {
            // A new talk-spurt: schedule it from its own arrival if the jitter seen on the
            // path cannot explain its delay, keeping that jitter (module docs).
            self.spurt_rebased = off.abs() > self.est.spread;
            if self.spurt_rebased {
                self.est.shift(off);
                self.outliers_since = None;
                self.stats.rebased += 1;
            }
        } else if self.spurt_rebased && off < 0 {
            self.est.shift(off);
        }
        if self.est.len() > 0 && (d - self.est.d_min).abs() > TIMEBASE_JUMP_US {
            self.restart(now_us, pkt);
            return;
        }
        if ds >= self.slots.len() as i64 {
            // Far ahead of everything buffered (a long outage): that audio is stale now.
            while self.drop_head(Fate::Overflow) {}
            self.advance_seq(seq - 1, false);
            self.stats.lost += 1; // advance_seq counted the gap before seq - 1, not seq - 1
            self.in_talk = false;
        }
        let i = self.index(seq);
        if self.slots[i].filled {
            self.stats.duplicates += 1;
            return;
        }
        // Delays no buffer within max could absorb (a stall) would only pin the target at max,
        // so they are left out; but if they keep coming, the path itself got slower: relearn.
        if d - self.est.d_min <= duration_us(self.cfg.max_depth) {
            self.est.add(now_us, d, self.cfg.jitter_percentile);
            self.outliers_since = None;
        } else if now_us - *self.outliers_since.get_or_insert(now_us) >= PATH_CHANGE_US {
            self.est.clear();
            self.est.add(now_us, d, self.cfg.jitter_percentile);
            self.outliers_since = None;
        }
        if self.in_talk {
            if ts < self.play_ts - self.frame_ts / 2 {
                // Its frame was already concealed or skipped.
                self.stats.late += 1;
                return;
            }
        } else if self.is_empty() || ts < self.play_ts {
            // Between talk-spurts the cursor follows the earliest packet of the next one.
            self.play_ts = ts;
        }
        self.slots[i].fill(seq, ts, pkt.marker, pkt.payload);
        self.newest_seq = self.newest_seq.max(seq);
        self.learn_frame(seq, ts);
        while self.depth_us() > duration_us(self.cfg.max_depth) {
            self.drop_head(Fate::Overflow);
        }
    }

    /// RTP timestamp of the frame whose own slot the last [`pop`](Self::pop) filled, with its
    /// packet, the next packet's FEC or a concealment; `None` when that pop inserted a frame
    /// (playout ahead of the schedule) or played silence or nothing.
    pub fn last_frame_ts(&self) -> Option<u32> {
        self.last_frame.map(|ts| ts as u32)
    }

    /// The playout side needs the next frame at `now`.
    pub fn pop(&mut self, now: Instant) -> Playout<'_> {
        let now_us = self.micros(now);
        let at = self.pop_grid(now_us);
        self.last_frame = None;
        match self.decide(at) {
            Decision::Packet(i) => Playout::Packet(&self.slots[i].payload),
            Decision::Fec(i) => Playout::Fec(&self.slots[i].payload),
            Decision::Conceal => Playout::Conceal,
            Decision::Silence => Playout::Silence,
            Decision::Idle => Playout::Idle,
        }
    }

    fn decide(&mut self, now: i64) -> Decision {
        if !self.active {
            return Decision::Idle;
        }
        self.update_target(now);
        let frame_us = ts_to_us(self.frame_ts);
        let too_late = frame_us + frame_us / 4;
        let half = self.frame_ts / 2;
        let mut skipped = false;
        // Every pass consumes a packet, skips a frame, or leaves the talk-spurt: bounded.
        for _ in 0..2 * self.slots.len() + 4 {
            let head = self.head().map(|i| (i, self.slots[i].seq, self.slots[i].ts, self.slots[i].marker));
            if !self.in_talk {
                // Between talk-spurts: start the next one when its first packet is due.
                let Some((i, _, ts, _)) = head else { return Decision::Idle };
                let e = now - self.due_us(ts);
                if e < 0 {
                    self.play_ts = ts;
                    return Decision::Silence;
                }
                if e > too_late {
                    self.consume(i, Fate::Late);
                    continue;
                }
                (self.in_talk, self.conceal_run, self.play_ts) = (true, 0, ts);
                self.concealed_run = 0;
                continue;
            }
            let e = now - self.due_us(self.play_ts);
            match head {
                Some((i, _, ts, _)) if ts < self.play_ts - half => {
                    self.consume(i, Fate::Late);
                }
                Some((i, _, ts, _)) if ts <= self.play_ts + half => {
                    if e < 0 {
                        return self.insert();
                    }
                    if e > too_late && !skipped {
                        skipped = true;
                        self.consume(i, Fate::Overflow);
                        self.play_ts = ts + self.frame_ts;
                        continue;
                    }
                    self.consume(i, Fate::Played);
                    (self.play_ts, self.conceal_run, self.last_frame) = (ts + self.frame_ts, 0, Some(ts));
                    self.stats.gaps_concealed += u64::from(std::mem::take(&mut self.concealed_run));
                    return Decision::Packet(i);
                }
                // Contiguous sequence with a timestamp gap (DTX), or a marked new talk-spurt:
                // this is a pause, not loss; re-prime on the next packet.
                Some((_, seq, _, marker)) if marker || seq == self.last_seq + 1 => self.in_talk = false,
                _ => {
                    // The due frame is missing: lost, late, or the talker stopped.
                    if e < 0 {
                        return self.insert();
                    }
                    let fec = head.filter(|&(_, _, ts, _)| (ts - (self.play_ts + self.frame_ts)).abs() <= half);
                    // Dropping a missing frame costs nothing: do it when lagging anyway, and
                    // also as soon as the previous pop could have played this frame (the pop
                    // grid left a whole frame of slack) and it would only be concealed. That
                    // takes back the frame a falling target (warm-up, calmer network) or an
                    // insertion left, which the packet-dropping threshold tolerates.
                    if !skipped && (e > too_late || (e >= frame_us && fec.is_none())) {
                        skipped = true;
                        self.play_ts += self.frame_ts;
                        self.stats.skipped += 1;
                        continue;
                    }
                    if self.conceal_run >= self.max_conceal_frames() {
                        self.in_talk = false;
                        continue;
                    }
                    self.conceal_run += 1;
                    self.last_frame = Some(self.play_ts);
                    self.play_ts += self.frame_ts;
                    if let Some((i, _, _, _)) = fec {
                        self.stats.fec_recovered += 1;
                        return Decision::Fec(i);
                    }
                    self.stats.concealed += 1;
                    self.concealed_run += 1;
                    return Decision::Conceal;
                }
            }
        }
        Decision::Silence
    }

    /// When the audio of a pop at `now` is played, on the playout clock's grid. The caller's
    /// `now` carries its wake-up jitter, but the device plays its samples on a steady clock,
    /// so the grid (its phase) is learned from the pops, and a pop near it counts as on it:
    /// that jitter does not make frames look due a pop early or late and insert or skip.
    fn pop_grid(&mut self, now: i64) -> i64 {
        let period = ts_to_us(self.frame_ts);
        let at = match self.next_pop {
            Some(p) if (now - p).abs() <= period / POP_GRID_SNAP => p + (now - p) / POP_GRID_GAIN,
            _ => now,
        };
        self.next_pop = Some(at + period);
        at
    }

    /// Playout is ahead of the schedule: stretch by one frame without moving the cursor.
    fn insert(&mut self) -> Decision {
        self.stats.inserted += 1;
        if self.conceal_run < self.max_conceal_frames() {
            self.conceal_run += 1;
            self.stats.concealed += 1;
            self.concealed_run += 1;
            Decision::Conceal
        } else {
            Decision::Silence
        }
    }

    /// Starts a new stream at `pkt` (first packet, or a confirmed jump).
    fn restart(&mut self, now_us: i64, pkt: Packet<'_>) {
        if self.active {
            self.stats.resets += 1;
        }
        self.flush();
        self.est.clear();
        self.spurt_rebased = false;
        self.active = true;
        // Unwrapped origins: any value works; these keep the numbers positive.
        self.last_seq = i64::from(pkt.seq) + 0x1_0000 - 1;
        self.newest_seq = self.last_seq;
        self.play_ts = i64::from(pkt.timestamp);
        (self.in_talk, self.conceal_run, self.played_mask, self.concealed_run) = (false, 0, 0, 0);
        (self.loss_avg, self.lossy, self.frame_guess) = (0, false, (0, 0));
        let (seq, ts) = (self.last_seq + 1, self.play_ts);
        self.est.add(now_us, now_us - ts_to_us(ts), self.cfg.jitter_percentile);
        self.outliers_since = None;
        (self.target, self.target_at) = (self.wanted_target_us(), now_us);
        let i = self.index(seq);
        self.slots[i].fill(seq, ts, pkt.marker, pkt.payload);
        self.newest_seq = seq;
    }

    /// A packet far outside the sequence window: a stray, or the first of a new stream.
    fn on_stray(&mut self, now_us: i64, pkt: Packet<'_>) {
        let follows = self.stray.filled && pkt.seq == (self.stray.seq as u16).wrapping_add(1);
        if !follows {
            if self.stray.filled {
                self.stats.flushed += 1;
            }
            self.stray.fill(i64::from(pkt.seq), i64::from(pkt.timestamp), pkt.marker, pkt.payload);
            // Remember when it came, so its delay sample is right if it is confirmed.
            self.stray_arrival = now_us;
            return;
        }
        // Two in a row: a new stream. Start it with the stray, then take this one normally.
        self.stray.filled = false;
        let payload = std::mem::take(&mut self.stray.payload);
        let first = Packet {
            seq: self.stray.seq as u16,
            timestamp: self.stray.ts as u32,
            marker: self.stray.marker,
            payload: &payload,
        };
        self.restart(self.stray_arrival, first);
        self.stray.payload = payload;
        self.push_us(now_us, pkt);
    }

    fn flush(&mut self) {
        for s in self.slots.iter_mut().chain(std::iter::once(&mut self.stray)) {
            if s.filled {
                s.filled = false;
                self.stats.flushed += 1;
            }
        }
        self.newest_seq = self.last_seq;
    }

    /// Index of the oldest buffered packet.
    fn head(&self) -> Option<usize> {
        (self.last_seq + 1..=self.newest_seq).map(|s| self.index(s)).find(|&i| self.slots[i].filled)
    }

    fn is_empty(&self) -> bool {
        self.newest_seq <= self.last_seq
    }

    /// Removes a packet from the buffer (its payload stays readable until the next push).
    fn consume(&mut self, i: usize, fate: Fate) {
        self.slots[i].filled = false;
        match fate {
            Fate::Played => self.stats.played += 1,
            Fate::Late => self.stats.late += 1,
            Fate::Overflow => self.stats.dropped_for_overflow += 1,
        }
        self.advance_seq(self.slots[i].seq, fate == Fate::Played);
        if self.is_empty() {
            self.newest_seq = self.last_seq;
        }
    }

    /// Drops the oldest packet to cut latency; false when empty.
    fn drop_head(&mut self, fate: Fate) -> bool {
        let Some(i) = self.head() else { return false };
        let ts = self.slots[i].ts;
        self.consume(i, fate);
        self.play_ts = self.play_ts.max(ts + self.frame_ts);
        true
    }

    /// Marks every sequence number up to `seq` done; the never-received ones are lost.
    fn advance_seq(&mut self, seq: i64, played: bool) {
        let n = seq - self.last_seq;
        if n <= 0 {
            return;
        }
        self.stats.lost += (n - 1) as u64;
        for lost in (0..n).map(|i| i < n - 1).take(512) {
            let x = if lost { 1 << 16 } else { 0 };
            self.loss_avg = (self.loss_avg * 511 + x) / 512;
        }
        // Hysteresis, so a loss rate near the threshold does not move the target back and forth.
        if self.loss_avg > LOSSY_ON {
            self.lossy = true;
        } else if self.loss_avg < LOSSY_OFF {
            self.lossy = false;
        }
        self.played_mask = if n >= 128 { 0 } else { self.played_mask << n } | u128::from(played);
        self.last_seq = seq;
        self.newest_seq = self.newest_seq.max(seq);
    }

    fn was_played(&self, seq: i64) -> bool {
        let back = self.last_seq - seq;
        (0..128).contains(&back) && self.played_mask >> back & 1 == 1
    }

    /// Adopts a new packet duration once three adjacent pairs agree on it.
    fn learn_frame(&mut self, seq: i64, ts: i64) {
        let prev = &self.slots[self.index(seq - 1)];
        if !(prev.filled && prev.seq == seq - 1) {
            return;
        }
        let delta = ts - prev.ts;
        // 2.5..=120 ms in whole 2.5 ms steps; anything else is a DTX gap or a jump.
        if !(120..=5760).contains(&delta) || delta % 120 != 0 || delta == self.frame_ts {
            self.frame_guess = (0, 0);
            return;
        }
        if self.frame_guess.0 == delta {
            self.frame_guess.1 += 1;
        } else {
            self.frame_guess = (delta, 1);
        }
        if self.frame_guess.1 >= 3 {
            self.frame_ts = delta;
            self.frame_guess = (0, 0);
        }
    }

    fn max_conceal_frames(&self) -> u32 {
        let frame = ts_to_us(self.frame_ts).max(1);
        ((duration_us(self.cfg.max_conceal) + frame - 1) / frame) as u32
    }

    fn update_target(&mut self, now: i64) {
        let want = self.wanted_target_us();
        let elapsed = (now - self.target_at).clamp(0, 1_000_000);
        self.target_at = now;
        let fall = elapsed * ts_to_us(self.frame_ts) * TARGET_FALL_FRAMES_PER_S / 1_000_000;
        self.target = if want >= self.target || !self.in_talk { want } else { (self.target - fall).max(want) };
    }

    /// Measured jitter (the larger of the percentile and the decaying peak) plus the frame
    /// itself (plus a spare one for FEC on a lossy stream), within [min, max - 1.25 frames] so
    /// the schedule alone never pushes the depth over max. From the first packet on: a stream
    /// starts at the depth its first packets show, not at a fixed guess.
    fn wanted_target_us(&self) -> i64 {
        let frame = ts_to_us(self.frame_ts);
        let min = duration_us(self.cfg.min_depth);
        let limit = (duration_us(self.cfg.max_depth) - frame - frame / 4).max(min);
        let mut want = self.est.spread.max(self.est.peak) + frame + duration_us(self.cfg.margin);
        if self.lossy {
            want = want.max(2 * frame);
        }
        want.clamp(min, limit)
    }

    /// When the frame at media time `ts` should be handed to the device.
    fn due_us(&self, ts: i64) -> i64 {
        ts_to_us(ts) + self.est.d_min + self.target - ts_to_us(self.frame_ts)
    }

    /// Audio waiting ahead of the cursor. Counted both in sequence numbers (ignores DTX gaps)
    /// and in media time (ignores the lag of `last_seq` while concealing); the smaller is true.
    fn depth_us(&self) -> i64 {
        if self.is_empty() {
            return 0;
        }
        let newest = &self.slots[self.index(self.newest_seq)];
        let by_seq = (self.newest_seq - self.last_seq) * self.frame_ts;
        let by_time = newest.ts + self.frame_ts - self.play_ts;
        ts_to_us(by_seq.min(by_time).max(0))
    }

    fn index(&self, seq: i64) -> usize {
        seq.rem_euclid(self.slots.len() as i64) as usize
    }

    /// Unwraps a 16-bit sequence number next to `last_seq`.
    fn seq_ext(&self, seq: u16) -> i64 {
        self.last_seq + i64::from(seq.wrapping_sub(self.last_seq as u16) as i16)
    }

    /// Unwraps a 32-bit timestamp next to the playout cursor.
    fn ts_ext(&self, ts: u32) -> i64 {
        self.play_ts + i64::from(ts.wrapping_sub(self.play_ts as u32) as i32)
    }

    fn micros(&mut self, now: Instant) -> i64 {
        let epoch = *self.epoch.get_or_insert(now);
        match now.checked_duration_since(epoch) {
            Some(d) => duration_us(d),
            None => -duration_us(epoch - now),
        }
    }
}

#[cfg(test)]
mod tests;
