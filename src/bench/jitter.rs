//! The jitter buffer under a seeded lossy, jittery network, in virtual time.

use std::time::{Duration, Instant};

use crate::core::jitter::{JitterBuffer, JitterConfig, Packet, Playout};

pub struct JitterFigures {
    pub on_time_pct: f64,
    pub added_p95_ms: f64,
    pub lost_pct: f64,
    /// Share of the lost frames heard anyway, from the next packet's FEC (printed by this
    /// module's test; not in `roipd bench`'s report).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fec_recovered_pct: f64,
}

const FRAME: Duration = Duration::from_millis(20);
const PATH_DELAY: Duration = Duration::from_millis(20);
const JITTER_S: f64 = 0.040;
const LOSS: f64 = 0.10;
const PHASES_MS: [u64; 4] = [0, 5, 10, 15];

/// 20 ms packets for `seconds`, 10% lost, each delayed 20 ms + uniform 0-40 ms (so packets
/// reorder), pulled by a playout clock every 20 ms. The playout clock's phase against the
/// sender's is arbitrary in real life, so the run is repeated at four phases and pooled.
/// Packets are pushed at their own arrival time (the daemon pushes on receipt, not on the
/// playout clock). A frame is "on time" when its own slot played it, recovered it by FEC or
/// concealed it (an inserted frame fills no frame's slot); "added latency" is playout time
/// minus send time minus the fixed 20 ms path delay, for each frame heard from a packet (its
/// own, or the next one's FEC).
pub fn lossy_network(seed: u64, seconds: f64) -> JitterFigures {
    let net = Network::seeded(seed, seconds);
    let runs: Vec<PhaseRun> = PHASES_MS.iter().map(|&ms| net.play_out(Duration::from_millis(ms))).collect();
    net.figures(runs)
}

/// The seeded stream as it arrives: (arrival, sequence number), in arrival order.
struct Network {
    t0: Instant,
    count: usize,
    arrivals: Vec<(Instant, u16)>,
}

/// One playout run.
struct PhaseRun {
    /// Frames whose own slot played, recovered or concealed them.
    on_time: usize,
    /// Frames heard from the next packet's FEC.
    fec: usize,
    added_ms: Vec<f64>,
}

impl Network {
    fn seeded(seed: u64, seconds: f64) -> Self {
        let mut state = seed | 1;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let count = (seconds / FRAME.as_secs_f64()) as usize;
        let t0 = Instant::now();
        let mut arrivals: Vec<(Instant, u16)> = Vec::new();
        for seq in 0..count {
            if rand() < LOSS {
                continue;
            }
            let jitter = Duration::from_secs_f64(rand() * JITTER_S);
            arrivals.push((t0 + FRAME * seq as u32 + PATH_DELAY + jitter, seq as u16));
        }
        arrivals.sort_by_key(|a| a.0);
        Self { t0, count, arrivals }
    }

    fn lost(&self) -> usize {
        self.count - self.arrivals.len()
    }

    /// Pooled figures of some playout runs.
    fn figures(&self, runs: Vec<PhaseRun>) -> JitterFigures {
        let n = runs.len().max(1);
        let (mut on_time, mut fec, mut added) = (0, 0, Vec::new());
        for mut run in runs {
            (on_time, fec) = (on_time + run.on_time, fec + run.fec);
            added.append(&mut run.added_ms);
        }
        added.sort_by(f64::total_cmp);
        JitterFigures {
            on_time_pct: 100.0 * on_time as f64 / (n * self.count).max(1) as f64,
            added_p95_ms: added.get(added.len() * 95 / 100).copied().unwrap_or(0.0),
            lost_pct: 100.0 * self.lost() as f64 / self.count.max(1) as f64,
            fec_recovered_pct: 100.0 * fec as f64 / (n * self.lost()).max(1) as f64,
        }
    }

    /// One playout run against the arrivals, the playout clock `phase` after the path delay.
    fn play_out(&self, phase: Duration) -> PhaseRun {
        let (t0, arrivals, count) = (self.t0, &self.arrivals, self.count);
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut covered = vec![false; count];
        let (mut next, mut fec, mut added_ms) = (0, 0, Vec::new());
        // The stream plus a second of tail, on the playout clock.
        for slot in 0..count + 50 {
            let now = t0 + PATH_DELAY + phase + FRAME * slot as u32;
            while next < arrivals.len() && arrivals[next].0 <= now {
                let (at, seq) = arrivals[next];
                let payload = seq.to_be_bytes();
                jb.push(at, Packet { seq, timestamp: u32::from(seq) * 960, marker: seq == 0, payload: &payload });
                next += 1;
            }
            let (heard, by_fec) = match jb.pop(now) {
                Playout::Packet(_) => (true, false),
                Playout::Fec(_) => (true, true),
                _ => (false, false),
            };
            // Which frame's own slot this pop filled, if any (not an insertion, not a pause).
            let Some(k) = jb.last_frame_ts().map(|ts| (ts / 960) as usize).filter(|&k| k < count) else {
                continue;
            };
            covered[k] = true;
            if heard {
                let sent = t0 + FRAME * k as u32;
                added_ms.push((now - sent - PATH_DELAY).as_secs_f64() * 1e3);
                fec += usize::from(by_fec);
            }
        }
        PhaseRun { on_time: covered.iter().filter(|&&c| c).count(), fec, added_ms }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn lossy_network_meets_the_targets() {
        let net = super::Network::seeded(0x5eed, 60.0);
        for ms in super::PHASES_MS {
            let p = net.figures(vec![net.play_out(Duration::from_millis(ms))]);
            eprintln!(
                "phase {ms:2} ms: on time {:.2}%, p95 added {:.1} ms, FEC recovered {:.1}% of lost",
                p.on_time_pct, p.added_p95_ms, p.fec_recovered_pct
            );
        }
        let j = super::lossy_network(0x5eed, 60.0);
        eprintln!(
            "pooled: on time {:.2}%, p95 added {:.1} ms, lost {:.1}%, FEC recovered {:.1}% of lost",
            j.on_time_pct, j.added_p95_ms, j.lost_pct, j.fec_recovered_pct
        );
        assert!((8.0..12.0).contains(&j.lost_pct), "seeded loss {:.1}%", j.lost_pct);
        assert!(j.on_time_pct >= 95.0, "on time {:.2}%", j.on_time_pct);
        assert!(j.added_p95_ms <= 60.0, "p95 added {:.1} ms", j.added_p95_ms);
        assert!(j.fec_recovered_pct >= 30.0, "FEC recovered {:.1}% of lost", j.fec_recovered_pct);
    }
}
