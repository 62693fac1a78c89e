//! The outbound queue, sans-IO (time comes in as `Instant`s).
//!
//! A broker outage must neither grow memory nor block the daemon, so the queue is bounded:
//! - by size: at most `capacity` messages; when full the oldest event/metrics/reply is dropped;
//! - by age: events and metrics older than `max_age` and replies older than `reply_max_age`
//!   are dropped instead of being sent late;
//! - by coalescing: retained state and metrics keep only their latest value per topic, so a
//!   port changing state 10 000 times during an outage costs one slot.
//!
//! Retained state is also held by the driver as a snapshot and republished on every connect
//! ([`Outbox::reconnected`]), so dropping queued state never loses the current picture.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Our own QoS so this module needs no MQTT crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Retained status and port state: coalesced per topic, never expires.
    State,
    /// Periodic metrics: coalesced per topic, expires.
    Metrics,
    /// Events: kept in order, expire.
    Event,
    /// Command replies (may carry MQTT 5 correlation data): kept in order, expire sooner.
    Reply,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: Qos,
    pub retain: bool,
    pub class: Class,
    /// MQTT 5 correlation data for replies.
    pub correlation: Option<Vec<u8>>,
    pub enqueued: Instant,
}

impl Message {
    pub fn new(class: Class, topic: String, payload: Vec<u8>, now: Instant) -> Self {
        let (qos, retain) = match class {
            Class::State => (Qos::AtLeastOnce, true),
            // QoS 1 metrics double as the periodic heartbeat.
            Class::Metrics | Class::Event | Class::Reply => (Qos::AtLeastOnce, false),
        };
        Self { topic, payload, qos, retain, class, correlation: None, enqueued: now }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub capacity: usize,
    pub max_age: Duration,
    pub reply_max_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self { capacity: 1000, max_age: Duration::from_secs(300), reply_max_age: Duration::from_secs(60) }
    }
}

#[derive(Debug)]
pub struct Outbox {
    queue: VecDeque<Message>,
    limits: Limits,
    dropped: u64,
}

impl Outbox {
    pub fn new(mut limits: Limits) -> Self {
        limits.capacity = limits.capacity.max(1);
        Self { queue: VecDeque::new(), limits, dropped: 0 }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The queued messages, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Message> {
        self.queue.iter()
    }

    /// Messages dropped so far (full queue or too old).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Queue a message. Never blocks and never grows past the capacity.
    pub fn push(&mut self, msg: Message) {
        if matches!(msg.class, Class::State | Class::Metrics) {
            if let Some(slot) = self.queue.iter_mut().find(|m| m.class == msg.class && m.topic == msg.topic) {
                *slot = msg;
                return;
            }
        }
        if self.queue.len() >= self.limits.capacity {
            match self.queue.iter().position(|m| m.class != Class::State) {
                Some(oldest) => {
                    self.queue.remove(oldest);
                }
                // Only state queued (more ports than slots): the newcomer has to go.
                None => {
                    self.dropped += 1;
                    return;
                }
            }
            self.dropped += 1;
        }
        self.queue.push_back(msg);
    }

    /// The next message still worth sending; drops expired ones on the way.
    pub fn front(&mut self, now: Instant) -> Option<&Message> {
        while let Some(m) = self.queue.front() {
            if self.expired(m, now) {
                self.queue.pop_front();
                self.dropped += 1;
            } else {
                break;
            }
        }
        self.queue.front()
    }

    /// Remove the message [`front`](Self::front) returned, once the client accepted it.
    pub fn pop_front(&mut self) -> Option<Message> {
        self.queue.pop_front()
    }

    /// Drop everything too old (called periodically so an outage does not hold stale events).
    pub fn expire(&mut self, now: Instant) {
        let before = self.queue.len();
        let limits = self.limits;
        self.queue.retain(|m| !expired(limits, m, now));
        self.dropped += (before - self.queue.len()) as u64;
    }

    /// On (re)connect: queued state is superseded by the current snapshot, which goes first so
    /// subscribers see status and port state before the events that happened meanwhile.
    pub fn reconnected(&mut self, snapshot: Vec<Message>) {
        self.queue.retain(|m| m.class != Class::State);
        for msg in snapshot.into_iter().rev() {
            self.queue.push_front(msg);
        }
        // The snapshot may push events past the capacity: trim the oldest of them.
        while self.queue.len() > self.limits.capacity {
            match self.queue.iter().position(|m| m.class != Class::State) {
                Some(i) => {
                    self.queue.remove(i);
                    self.dropped += 1;
                }
                None => break,
            }
        }
    }

    fn expired(&self, m: &Message, now: Instant) -> bool {
        expired(self.limits, m, now)
    }
}

fn expired(limits: Limits, m: &Message, now: Instant) -> bool {
    let age = now.saturating_duration_since(m.enqueued);
    match m.class {
        Class::State => false,
        Class::Metrics | Class::Event => age > limits.max_age,
        Class::Reply => age > limits.reply_max_age,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(class: Class, topic: &str, payload: &str, t: Instant) -> Message {
        Message::new(class, topic.into(), payload.into(), t)
    }

    fn drain(o: &mut Outbox, now: Instant) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while o.front(now).is_some() {
            let m = o.pop_front().unwrap();
            out.push((m.topic, String::from_utf8(m.payload).unwrap()));
        }
        out
    }

    fn limits(capacity: usize) -> Limits {
        Limits { capacity, max_age: Duration::from_secs(300), reply_max_age: Duration::from_secs(60) }
    }

    #[test]
    fn fifo_with_retain_flags() {
        let t = Instant::now();
        let mut o = Outbox::new(Limits::default());
        o.push(msg(Class::Event, "e", "1", t));
        o.push(msg(Class::State, "s", "a", t));
        o.push(msg(Class::Reply, "r", "x", t));
        assert_eq!(o.front(t).map(|m| (m.retain, m.qos)), Some((false, Qos::AtLeastOnce)));
        assert_eq!(drain(&mut o, t), [("e".into(), "1".into()), ("s".into(), "a".into()), ("r".into(), "x".into())]);
        let s = msg(Class::State, "s", "a", t);
        assert!(s.retain);
    }

    #[test]
    fn state_and_metrics_coalesce_per_topic() {
        let t = Instant::now();
        let mut o = Outbox::new(limits(10));
        for i in 0..10_000 {
            o.push(msg(Class::State, "state/r1", &i.to_string(), t));
            o.push(msg(Class::State, "state/r2", &(i * 2).to_string(), t));
            o.push(msg(Class::Metrics, "metrics", &i.to_string(), t));
        }
        assert_eq!(o.len(), 3);
        assert_eq!(o.dropped(), 0);
        assert_eq!(
            drain(&mut o, t),
            [
                ("state/r1".into(), "9999".into()),
                ("state/r2".into(), "19998".into()),
                ("metrics".into(), "9999".into())
            ]
        );
    }

    #[test]
    fn size_bound_drops_oldest_non_state() {
        let t = Instant::now();
        let mut o = Outbox::new(limits(5));
        o.push(msg(Class::State, "status", "online", t));
        for i in 0..100 {
            o.push(msg(Class::Event, "event", &i.to_string(), t));
            assert!(o.len() <= 5);
        }
        assert_eq!(o.dropped(), 96);
        let got = drain(&mut o, t);
        assert_eq!(got[0], ("status".into(), "online".into()), "state survives overflow");
        let events: Vec<_> = got[1..].iter().map(|(_, p)| p.as_str()).collect();
        assert_eq!(events, ["96", "97", "98", "99"], "the newest events are kept");
    }

    #[test]
    fn only_state_queued_then_newcomer_is_dropped() {
        let t = Instant::now();
        let mut o = Outbox::new(limits(2));
        o.push(msg(Class::State, "a", "1", t));
        o.push(msg(Class::State, "b", "1", t));
        o.push(msg(Class::Event, "e", "1", t));
        assert_eq!(o.len(), 2);
        assert_eq!(o.dropped(), 1);
    }

    #[test]
    fn age_bound() {
        let t0 = Instant::now();
        let mut o = Outbox::new(limits(100));
        o.push(msg(Class::Event, "event", "old", t0));
        o.push(msg(Class::Reply, "reply", "old", t0));
        o.push(msg(Class::State, "status", "kept", t0));
        o.push(msg(Class::Metrics, "metrics", "old", t0));
        o.push(msg(Class::Event, "event", "new", t0 + Duration::from_secs(250)));
        // After 61 s only the reply is stale.
        let t1 = t0 + Duration::from_secs(61);
        o.expire(t1);
        assert_eq!(o.len(), 4);
        assert_eq!(o.dropped(), 1);
        // After 301 s the old event and metrics are gone too; state never expires.
        let t2 = t0 + Duration::from_secs(301);
        assert_eq!(o.front(t2).map(|m| m.topic.as_str()), Some("status"));
        assert_eq!(drain(&mut o, t2), [("status".into(), "kept".into()), ("event".into(), "new".into())]);
        assert_eq!(o.dropped(), 3);
    }

    #[test]
    fn reconnect_puts_snapshot_first_and_replaces_queued_state() {
        let t = Instant::now();
        let mut o = Outbox::new(limits(4));
        o.push(msg(Class::Event, "event", "1", t));
        o.push(msg(Class::State, "state/r1", "stale", t));
        o.push(msg(Class::Event, "event", "2", t));
        o.push(msg(Class::Event, "event", "3", t));
        o.reconnected(vec![msg(Class::State, "status", "online", t), msg(Class::State, "state/r1", "fresh", t)]);
        assert_eq!(o.len(), 4);
        assert_eq!(
            drain(&mut o, t),
            [
                ("status".into(), "online".into()),
                ("state/r1".into(), "fresh".into()),
                ("event".into(), "2".into()),
                ("event".into(), "3".into()),
            ]
        );
        assert_eq!(o.dropped(), 1);
    }
}
