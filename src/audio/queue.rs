//! The bounded frame queue between a device thread and the rest of the daemon.
//!
//! Fixed-size frames live in a pool allocated once: pushing copies into a spare buffer (or
//! recycles the oldest queued one when full), popping copies out and returns the buffer to the
//! pool, so the steady state never allocates. The queue never grows past its capacity: when the
//! reader is slow, either the oldest frame is dropped (live audio: latency stays bounded) or the
//! writer waits (offline/test runs: nothing is lost), as the caller chooses per push.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// What a push does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    DropOldest,
    Wait,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// Queued, after dropping the oldest frame to make room.
    DroppedOldest,
    /// The queue is closed; the frame was discarded.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Popped {
    Frame,
    Empty,
    /// Closed and nothing left to read.
    Closed,
}

/// How long a pop may wait for a frame.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    No,
    Until(Instant),
}

pub(crate) struct FrameQueue {
    frame_len: usize,
    capacity: usize,
    inner: Mutex<Inner>,
    readable: Condvar,
    writable: Condvar,
    /// Wakes async readers; `notify_one` keeps a permit, so a push between a reader's empty
    /// check and its await is never lost.
    notify: tokio::sync::Notify,
}

struct Inner {
    frames: VecDeque<Box<[f32]>>,
    spare: Vec<Box<[f32]>>,
    closed: bool,
}

impl FrameQueue {
    pub(crate) fn new(frame_len: usize, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        FrameQueue {
            frame_len,
            capacity,
            inner: Mutex::new(Inner {
                frames: VecDeque::with_capacity(capacity),
                spare: (0..capacity).map(|_| vec![0.0; frame_len].into_boxed_slice()).collect(),
                closed: false,
            }),
            readable: Condvar::new(),
            writable: Condvar::new(),
            notify: tokio::sync::Notify::new(),
        }
    }

    pub(crate) fn frame_len(&self) -> usize {
        self.frame_len
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    // A panic elsewhere must not take audio down with it: a poisoned lock is still usable here
    // because every critical section leaves the queue consistent.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a copy of `frame` (which must be `frame_len` long; the caller checks).
    pub(crate) fn push(&self, frame: &[f32], overflow: Overflow) -> Pushed {
        debug_assert_eq!(frame.len(), self.frame_len);
        let mut inner = self.lock();
        let mut result = Pushed::Queued;
        loop {
            if inner.closed {
                return Pushed::Closed;
            }
            if inner.frames.len() < self.capacity {
                break;
            }
            match overflow {
                Overflow::DropOldest => {
                    let oldest = inner.frames.pop_front().expect("full queue has a front");
                    inner.spare.push(oldest);
                    result = Pushed::DroppedOldest;
                }
                Overflow::Wait => inner = self.writable.wait(inner).unwrap_or_else(|e| e.into_inner()),
            }
        }
        let mut buf = inner.spare.pop().expect("pool holds `capacity` buffers");
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        buf[n..].fill(0.0);
        inner.frames.push_back(buf);
        drop(inner);
        self.readable.notify_one();
        self.notify.notify_one();
        result
    }

    /// Copy the oldest frame into `out` (`frame_len` long; the caller checks).
    pub(crate) fn pop_into(&self, out: &mut [f32], wait: Wait) -> Popped {
        let mut inner = self.lock();
        loop {
            if let Some(buf) = inner.frames.pop_front() {
                let n = out.len().min(buf.len());
                out[..n].copy_from_slice(&buf[..n]);
                inner.spare.push(buf);
                drop(inner);
                self.writable.notify_one();
                return Popped::Frame;
            }
            if inner.closed {
                return Popped::Closed;
            }
            let Wait::Until(deadline) = wait else { return Popped::Empty };
            let now = Instant::now();
            if now >= deadline {
                return Popped::Empty;
            }
            inner = self.readable.wait_timeout(inner, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Wait (async) until a frame may be there or the queue closed. Spurious wakeups are fine.
    pub(crate) async fn readable(&self) {
        self.notify.notified().await
    }

    /// No more pushes; readers drain what is left and then see `Closed`. Wakes every waiter.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.readable.notify_all();
        self.writable.notify_all();
        // Wake every pending async reader, plus leave a permit for one that is about to wait.
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().frames.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn frame(v: f32) -> Vec<f32> {
        vec![v; 4]
    }

    #[test]
    fn drops_oldest_when_full() {
        let q = FrameQueue::new(4, 3);
        for i in 0..3 {
            assert_eq!(q.push(&frame(i as f32), Overflow::DropOldest), Pushed::Queued);
        }
        assert_eq!(q.push(&frame(3.0), Overflow::DropOldest), Pushed::DroppedOldest);
        assert_eq!(q.push(&frame(4.0), Overflow::DropOldest), Pushed::DroppedOldest);
        assert_eq!(q.len(), 3);
        let mut out = frame(-1.0);
        for want in [2.0, 3.0, 4.0] {
            assert_eq!(q.pop_into(&mut out, Wait::No), Popped::Frame);
            assert_eq!(out, frame(want), "newest frames survive, in order");
        }
        assert_eq!(q.pop_into(&mut out, Wait::No), Popped::Empty);
    }

    #[test]
    fn wait_policy_blocks_until_read() {
        let q = Arc::new(FrameQueue::new(4, 2));
        q.push(&frame(0.0), Overflow::Wait);
        q.push(&frame(1.0), Overflow::Wait);
        let writer = {
            let q = q.clone();
            std::thread::spawn(move || q.push(&frame(2.0), Overflow::Wait))
        };
        std::thread::sleep(Duration::from_millis(30));
        assert!(!writer.is_finished(), "a full queue holds a waiting writer");
        let mut out = frame(0.0);
        assert_eq!(q.pop_into(&mut out, Wait::No), Popped::Frame);
        assert_eq!(writer.join().unwrap(), Pushed::Queued);
        let mut got = vec![];
        while q.pop_into(&mut out, Wait::No) == Popped::Frame {
            got.push(out[0]);
        }
        assert_eq!(got, [1.0, 2.0], "nothing lost");
    }

    #[test]
    fn close_wakes_waiters_and_drains() {
        let q = Arc::new(FrameQueue::new(4, 1));
        let reader = {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut out = frame(0.0);
                q.pop_into(&mut out, Wait::Until(Instant::now() + Duration::from_secs(10)))
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        q.close();
        assert_eq!(reader.join().unwrap(), Popped::Closed);
        assert_eq!(q.push(&frame(1.0), Overflow::Wait), Pushed::Closed);

        let q = FrameQueue::new(4, 2);
        q.push(&frame(7.0), Overflow::DropOldest);
        q.close();
        let mut out = frame(0.0);
        assert_eq!(q.pop_into(&mut out, Wait::No), Popped::Frame, "what was queued is still readable");
        assert_eq!(q.pop_into(&mut out, Wait::No), Popped::Closed);
    }

    #[test]
    fn pop_times_out() {
        let q = FrameQueue::new(4, 1);
        let t0 = Instant::now();
        let mut out = frame(0.0);
        assert_eq!(q.pop_into(&mut out, Wait::Until(t0 + Duration::from_millis(30))), Popped::Empty);
        assert!(t0.elapsed() >= Duration::from_millis(30));
    }
}
