//! Proof that the per-frame paths do not allocate.
//!
//! The library's unit-test binary gets a counting global allocator: it forwards every call to
//! the system allocator unchanged and, on threads that have armed it, counts allocations.
//! The counters are const-initialized thread-locals of `Cell` types without destructors, so
//! touching them never allocates or registers anything, and other tests running in parallel
//! on other threads neither see nor disturb the count.
//!
//! This exists only under `cfg(test)`: release and debug builds keep the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: never panic inside the allocator, even during thread teardown.
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is exactly the system allocator's; counting touches no heap memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// How many allocations (including reallocations) `f` makes on this thread.
pub(crate) fn allocations_in(f: impl FnOnce()) -> usize {
    COUNT.with(|c| c.set(0));
    ARMED.with(|a| a.set(true));
    f();
    ARMED.with(|a| a.set(false));
    COUNT.with(|c| c.get())
}

#[cfg(test)]
mod tests {
    use super::allocations_in;
    use crate::dsp::test_util::{speech_like, Noise};
    use crate::dsp::*;
    use std::hint::black_box;
    use std::time::{Duration, Instant};

    #[test]
    fn the_counter_sees_allocations() {
        assert_eq!(allocations_in(|| drop(black_box(vec![1u8; 10]))), 1);
        assert_eq!(allocations_in(|| drop(black_box(Box::new(5u64)))), 1);
        assert_eq!(allocations_in(|| black_box(())), 0);
    }

    #[test]
    fn chains_tones_and_timers_do_not_allocate_per_frame() {
        // Everything is built (and allocated) up front.
        let mut rx_default = RxChain::new(&RxConfig::default());
        let mut rx_all = RxChain::new(&RxConfig { de_emphasis: true, gain_db: 6.0, ..RxConfig::default() });
        let mut tx_default = TxChain::new(&TxConfig::default());
        let mut tx_all = TxChain::new(&TxConfig { pre_emphasis: true, gain_db: 3.0, ..TxConfig::default() });
        let beep_cfg = CourtesyToneConfig { enabled: true, ..CourtesyToneConfig::default() };
        let mut beep = ToneSequence::courtesy(&beep_cfg).unwrap();
        let id_cfg = CwIdConfig { enabled: true, text: "DE N0CALL/R".into(), ..CwIdConfig::default() };
        let mut cw = ToneSequence::cw(&id_cfg).unwrap();
        let mut sine = Sine::new(SAMPLE_RATE, 1000.0, -10.0);
        let mut timer = IdTimer::from_config(&id_cfg);
        let speech = speech_like(-30.0, 2.0);
        let mut noise = Noise::new(9);
        let mut frames: Vec<Vec<f32>> = [480, 960, 1440, 2880, 333].iter().map(|&n| vec![0f32; n]).collect();
        let t0 = Instant::now();

        let count = allocations_in(|| {
            let mut pos = 0;
            for round in 0..400 {
                let frame = &mut frames[round % 5];
                // Speech, then noise, then a NaN frame now and then.
                let n = frame.len();
                if pos + n <= speech.len() {
                    frame.copy_from_slice(&speech[pos..pos + n]);
                    pos += n;
                } else {
                    noise.fill(frame, 0.5);
                }
                if round % 97 == 0 {
                    frame[n / 2] = f32::NAN;
                }
                let mut copy_levels = 0.0;
                for rx in [&mut rx_default, &mut rx_all] {
                    let levels = rx.process(frame);
                    copy_levels += levels.vox_dbfs + levels.output.peak_dbfs;
                }
                if round % 50 == 0 {
                    beep.start();
                    cw.start();
                }
                cw.mix(frame);
                beep.render(frame);
                sine.mix(frame);
                for tx in [&mut tx_default, &mut tx_all] {
                    let levels = tx.process(frame);
                    copy_levels += levels.output.rms_dbfs;
                }
                black_box(copy_levels);
                let now = t0 + Duration::from_millis(20 * round as u64);
                timer.set_keyed(now, round % 30 < 20);
                if timer.due(now).is_some() {
                    timer.id_sent(now);
                }
                black_box(timer.poll_timeout());
                if round == 200 {
                    rx_all.set_gain_db(-3.0);
                    tx_all.set_gain_db(-3.0);
                    rx_default.reset();
                    tx_default.reset();
                }
            }
        });
        assert_eq!(count, 0, "allocations in the per-frame paths");
    }

    #[test]
    fn building_rx_and_tx_chains_does_not_allocate_either() {
        let count = allocations_in(|| {
            black_box(RxChain::new(&RxConfig::default()));
            black_box(TxChain::new(&TxConfig { pre_emphasis: true, ..TxConfig::default() }));
        });
        assert_eq!(count, 0);
    }
}
