//! Bounded queues to one peer, each message with its overflow policy. The hub's way of never
//! growing with a slow consumer (a client that stops reading its WebSocket, a task that stalls):
//! - [`Policy::DropOldest`] (media): at most `lossy` such messages wait; a new one drops the
//!   oldest.
//! - [`Policy::Coalesce`] (state that a newer message replaces: air, ports, desk state, a full
//!   roster): the queued message it [`supersedes`](Queued::supersedes) is removed.
//! - [`Policy::Keep`] (floor messages, roster deltas: each one matters): at most `reliable`
//!   wait; one more means the consumer cannot keep up, so the queue ends with
//!   [`End::Overflow`], drops what it holds, and the consumer disconnects its peer.
//!
//! Coalesced messages count against `reliable` too. Signaling comes out before media.
//!
//! A task's shared inbox (many senders, one consumer: the channel router's hub events, the
//! hub's media task) is tokio's bounded channel, filled through [`deliver`] with the same
//! policies: a `DropOldest` message that finds it full is dropped (the newest then: the
//! consumer already holds the older ones), any other waits for room, so the sender (a session
//! reading its client) stops reading meanwhile, and a flooding client slows only itself.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, Notify};

/// What to do with a message when its peer's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    DropOldest,
    Coalesce,
    Keep,
}

pub trait Queued {
    fn policy(&self) -> Policy;
    /// For [`Policy::Coalesce`]: whether this message makes the queued `older` one pointless.
    fn supersedes(&self, _older: &Self) -> bool {
        false
    }
}

/// How many messages may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `Keep` and `Coalesce` messages.
    pub reliable: usize,
    /// `DropOldest` messages.
    pub lossy: usize,
}

impl Limits {
    /// Per peer on the hub: a burst of 256 consoles joining is 256 roster deltas to each, and
    /// a healthy session drains far faster than that; 50 media packets are one second.
    pub const PEER: Limits = Limits { reliable: 1024, lossy: 50 };
}

/// Why a queue gives no more messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Every sender is gone, or the receiver is.
    Closed,
    /// A `Keep` message found `reliable` messages waiting: the consumer is too slow.
    Overflow,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Closed => f.write_str("queue closed"),
            End::Overflow => f.write_str("too slow: too many messages waiting"),
        }
    }
}

impl std::error::Error for End {}

struct State<T> {
    reliable: VecDeque<T>,
    lossy: VecDeque<T>,
    end: Option<End>,
    /// `DropOldest` messages dropped so far.
    dropped: u64,
}

struct Inner<T> {
    state: Mutex<State<T>>,
    limits: Limits,
    senders: AtomicUsize,
    /// Wakes the receiver: a message, the last sender gone, an overflow.
    ready: Notify,
    /// Wakes [`PeerRx::ended`].
    ended: Notify,
}

impl<T> Inner<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding the lock; a poisoned one still holds a consistent queue.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finish(&self, state: &mut State<T>, end: End) {
        if state.end.is_none() {
            state.end = Some(end);
        }
        // Free the memory now, not when the consumer gets round to it.
        state.reliable = VecDeque::new();
        state.lossy = VecDeque::new();
        self.ready.notify_one();
        self.ended.notify_waiters();
    }
}

/// A bounded queue to one peer.
pub fn channel<T: Queued>(limits: Limits) -> (PeerTx<T>, PeerRx<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State { reliable: VecDeque::new(), lossy: VecDeque::new(), end: None, dropped: 0 }),
        limits,
        senders: AtomicUsize::new(1),
        ready: Notify::new(),
        ended: Notify::new(),
    });
    (PeerTx { inner: inner.clone() }, PeerRx { inner })
}

/// The sending side; cloneable. Sending never waits.
pub struct PeerTx<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for PeerTx<T> {
    fn clone(&self) -> Self {
        self.inner.senders.fetch_add(1, Ordering::Relaxed);
        Self { inner: self.inner.clone() }
    }
}

impl<T> Drop for PeerTx<T> {
    fn drop(&mut self) {
        if self.inner.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.ready.notify_one();
        }
    }
}

impl<T> fmt::Debug for PeerTx<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTx").field("len", &self.len()).field("limits", &self.inner.limits).finish()
    }
}

impl<T: Queued> PeerTx<T> {
    /// Queue `msg` by its policy. `Err` when the queue has ended (then, or earlier); a dropped
    /// oldest media packet is not an error.
    pub fn send(&self, msg: T) -> Result<(), End> {
        let inner = &*self.inner;
        let mut s = inner.lock();
        if let Some(end) = s.end {
            return Err(end);
        }
        match msg.policy() {
            Policy::DropOldest => {
                if s.lossy.len() >= inner.limits.lossy.max(1) {
                    s.lossy.pop_front();
                    s.dropped += 1;
                }
                s.lossy.push_back(msg);
            }
            policy => {
                if policy == Policy::Coalesce {
                    s.reliable.retain(|older| !msg.supersedes(older));
                }
                if s.reliable.len() >= inner.limits.reliable {
                    inner.finish(&mut s, End::Overflow);
                    return Err(End::Overflow);
                }
                s.reliable.push_back(msg);
            }
        }
        drop(s);
        inner.ready.notify_one();
        Ok(())
    }
}

impl<T> PeerTx<T> {
    /// Messages waiting.
    pub fn len(&self) -> usize {
        let s = self.inner.lock();
        s.reliable.len() + s.lossy.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the queue has ended (overflowed, or its receiver is gone).
    pub fn end(&self) -> Option<End> {
        self.inner.lock().end
    }
}

/// The receiving side.
pub struct PeerRx<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Drop for PeerRx<T> {
    fn drop(&mut self) {
        let mut s = self.inner.lock();
        self.inner.finish(&mut s, End::Closed);
    }
}

impl<T> fmt::Debug for PeerRx<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerRx").field("limits", &self.inner.limits).finish()
    }
}

impl<T> PeerRx<T> {
    /// The next message, signaling before media; `Err` once the queue has ended (an overflow
    /// at once, even with messages waiting) or every sender is gone and it is empty.
    pub async fn recv(&mut self) -> Result<T, End> {
        loop {
            if let Some(r) = self.try_recv() {
                return r;
            }
            self.inner.ready.notified().await;
        }
    }

    /// [`recv`](Self::recv) without waiting: `None` when nothing is there yet.
    pub fn try_recv(&mut self) -> Option<Result<T, End>> {
        let mut s = self.inner.lock();
        if let Some(end) = s.end {
            return Some(Err(end));
        }
        if let Some(m) = s.reliable.pop_front().or_else(|| s.lossy.pop_front()) {
            return Some(Ok(m));
        }
        if self.inner.senders.load(Ordering::Acquire) == 0 {
            return Some(Err(End::Closed));
        }
        None
    }

    /// Resolves when the queue overflows (to abandon a send the slow peer is blocking).
    pub async fn overflowed(&self) {
        loop {
            let notified = self.inner.ended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inner.lock().end == Some(End::Overflow) {
                return;
            }
            notified.await;
        }
    }

    /// `DropOldest` messages dropped so far.
    pub fn dropped(&self) -> u64 {
        self.inner.lock().dropped
    }
}

/// Messages a shared inbox holds; enough for every session's one message in flight, and
/// about 100 ms of media from or to every peer at once.
pub const INBOX: usize = 1024;

/// Put `msg` into a shared inbox by its policy (see the module text). `Err` only when the
/// consumer is gone; a dropped media packet is not an error.
pub async fn deliver<T: Queued>(inbox: &mpsc::Sender<T>, msg: T) -> Result<(), End> {
    match msg.policy() {
        Policy::DropOldest => deliver_lossy(inbox, msg),
        Policy::Coalesce | Policy::Keep => inbox.send(msg).await.map_err(|_| End::Closed),
    }
}

/// What [`try_deliver`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    Queued,
    /// A `DropOldest` message that found the inbox full.
    Dropped,
}

/// [`deliver`] for senders that cannot wait (a task whose loop also serves others, an audio
/// thread): a lossy message, or one that must arrive when it finds room (`Err(Full)` gives it
/// back otherwise; the sender tries again later or keeps only the newest state).
pub fn try_deliver<T: Queued>(inbox: &mpsc::Sender<T>, msg: T) -> Result<Delivered, TrySendError<T>> {
    match (msg.policy(), inbox.try_send(msg)) {
        (_, Ok(())) => Ok(Delivered::Queued),
        (Policy::DropOldest, Err(TrySendError::Full(_))) => Ok(Delivered::Dropped),
        (_, Err(e)) => Err(e),
    }
}

fn deliver_lossy<T: Queued>(inbox: &mpsc::Sender<T>, msg: T) -> Result<(), End> {
    match try_deliver(inbox, msg) {
        Err(TrySendError::Closed(_)) => Err(End::Closed),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum M {
        Media(u32),
        State(&'static str, u32),
        Event(u32),
    }

    impl Queued for M {
        fn policy(&self) -> Policy {
            match self {
                M::Media(_) => Policy::DropOldest,
                M::State(..) => Policy::Coalesce,
                M::Event(_) => Policy::Keep,
            }
        }
        fn supersedes(&self, older: &Self) -> bool {
            matches!((self, older), (M::State(a, _), M::State(b, _)) if a == b)
        }
    }

    fn drain(rx: &mut PeerRx<M>) -> Vec<M> {
        std::iter::from_fn(|| rx.try_recv().and_then(Result::ok)).collect()
    }

    #[test]
    fn media_drops_the_oldest_and_never_grows() {
        let (tx, mut rx) = channel(Limits { reliable: 4, lossy: 3 });
        for i in 0..1000 {
            tx.send(M::Media(i)).unwrap();
            assert!(tx.len() <= 3);
        }
        assert_eq!(drain(&mut rx), [M::Media(997), M::Media(998), M::Media(999)]);
        assert_eq!(rx.dropped(), 997);
        assert_eq!(tx.end(), None);
    }

    #[test]
    fn state_replaces_its_older_self_and_signaling_comes_first() {
        let (tx, mut rx) = channel(Limits { reliable: 4, lossy: 3 });
        tx.send(M::Media(1)).unwrap();
        for i in 0..100 {
            tx.send(M::State("air", i)).unwrap();
            tx.send(M::State("ports", i)).unwrap();
        }
        tx.send(M::Event(7)).unwrap();
        assert_eq!(drain(&mut rx), [M::State("air", 99), M::State("ports", 99), M::Event(7), M::Media(1)]);
    }

    #[test]
    fn a_consumer_that_falls_behind_is_ended_and_its_queue_freed() {
        let (tx, mut rx) = channel(Limits { reliable: 4, lossy: 3 });
        for i in 0..4 {
            tx.send(M::Event(i)).unwrap();
        }
        tx.send(M::Media(0)).unwrap();
        assert_eq!(tx.send(M::Event(4)), Err(End::Overflow));
        assert_eq!(tx.len(), 0, "what was queued is dropped at once");
        assert_eq!(tx.send(M::Event(5)), Err(End::Overflow));
        assert_eq!(tx.send(M::Media(1)), Err(End::Overflow));
        assert!(matches!(rx.try_recv(), Some(Err(End::Overflow))), "the overflow comes before what waited");
    }

    #[test]
    fn senders_gone_ends_after_the_last_message_and_receiver_gone_refuses() {
        let (tx, mut rx) = channel(Limits::PEER);
        let tx2 = tx.clone();
        tx.send(M::Event(1)).unwrap();
        drop(tx);
        drop(tx2);
        assert_eq!(rx.try_recv(), Some(Ok(M::Event(1))));
        assert_eq!(rx.try_recv(), Some(Err(End::Closed)));

        let (tx, rx) = channel::<M>(Limits::PEER);
        drop(rx);
        assert_eq!(tx.send(M::Event(1)), Err(End::Closed));
    }

    #[tokio::test]
    async fn recv_wakes_for_messages_overflow_and_the_last_sender() {
        let (tx, mut rx) = channel(Limits { reliable: 1, lossy: 1 });
        let waiter = tokio::spawn(async move {
            let first = rx.recv().await;
            rx.overflowed().await;
            (first, rx.recv().await)
        });
        tokio::task::yield_now().await;
        tx.send(M::Event(1)).unwrap();
        tokio::task::yield_now().await;
        tx.send(M::Event(2)).unwrap();
        let _ = tx.send(M::Event(3));
        let (first, then) = waiter.await.unwrap();
        assert_eq!(first, Ok(M::Event(1)));
        assert_eq!(then, Err(End::Overflow));

        let (tx, mut rx) = channel::<M>(Limits::PEER);
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        drop(tx);
        assert_eq!(waiter.await.unwrap(), Err(End::Closed));
    }

    #[tokio::test]
    async fn an_inbox_drops_media_when_full_and_makes_the_rest_wait() {
        let (tx, mut rx) = mpsc::channel(2);
        deliver(&tx, M::Event(1)).await.unwrap();
        deliver(&tx, M::Media(1)).await.unwrap();
        for i in 2..100 {
            deliver(&tx, M::Media(i)).await.unwrap();
        }
        assert!(matches!(try_deliver(&tx, M::Event(2)), Err(TrySendError::Full(M::Event(2)))));
        assert_eq!(try_deliver(&tx, M::Media(100)).unwrap(), Delivered::Dropped);
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { deliver(&tx, M::Event(2)).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a message that must arrive waits for room");
        assert_eq!(rx.recv().await, Some(M::Event(1)));
        waiting.await.unwrap().unwrap();
        assert_eq!(rx.recv().await, Some(M::Media(1)));
        assert_eq!(rx.recv().await, Some(M::Event(2)), "media that found it full was dropped");
        drop(rx);
        assert_eq!(deliver(&tx, M::Media(0)).await, Err(End::Closed));
        assert_eq!(deliver(&tx, M::Event(0)).await, Err(End::Closed));
    }
}
