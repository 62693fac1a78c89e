//! Floor control (MCPTT-inspired, transport-neutral).
//!
//! One [`Arbiter`] per channel decides who may talk; one [`Participant`] per port or peer turns
//! PTT/COR into requests and starts media only while granted. Both are sans-IO: every input
//! carries `now`, outputs are drained with `poll_*`, and the driver calls `handle_timeout` once
//! `poll_timeout()` has passed.
//!
//! Transport contract: messages between a participant and the arbiter arrive in order, and
//! broadcasts ([`Recipient::All`]) are delivered in the same order as directed messages. The
//! participant relies on it: a `Taken`/`Idle` seen while granted means the floor was lost.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::timers::{TimerId, Timers};

/// Caller-chosen identity of a participant within a channel (port, peer, console).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub u64);

/// Floor priority: a strictly higher priority preempts the holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Priority(pub u8);

impl Priority {
    pub const NORMAL: Priority = Priority(0);
    pub const DISPATCH: Priority = Priority(100);
    /// The highest priority a port, desk or token may be configured with: 255 is reserved for
    /// the caller of an active emergency ([`crate::core::emergency`]), so it preempts every
    /// configured priority, and a second emergency caller is busy-denied, not preempting.
    pub const MAX_CONFIGURED: Priority = Priority(254);
    pub const EMERGENCY: Priority = Priority(255);

    /// A configured priority, capped below the emergency priority.
    pub fn configured(p: u8) -> Priority {
        Priority(p.min(Self::MAX_CONFIGURED.0))
    }
}

/// Participant → arbiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToArbiter {
    /// Ask for the floor.
    Request { priority: Priority },
    /// Give the floor back, or cancel a pending or queued request.
    Release,
}

/// Arbiter → participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToParticipant {
    /// You hold the floor: start media.
    Granted,
    /// Your request was refused; a new press retries.
    Deny { cause: DenyCause },
    /// You wait in the queue at `position` (1 = next); sent again whenever it changes.
    Queued { position: usize },
    /// You lost the floor: stop media now.
    Revoke { cause: RevokeCause },
    /// Broadcast: `holder` talks now.
    Taken { holder: ParticipantId, priority: Priority },
    /// Broadcast: nobody talks.
    Idle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyCause {
    /// Someone with equal or higher priority talks and queueing is off.
    Busy { holder: ParticipantId },
    /// Queueing is on but `max_queue` participants already wait.
    QueueFull,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeCause {
    /// A higher priority participant took the floor.
    Preempted { by: ParticipantId },
    /// The holder talked for `max_talk`.
    MaxTalkTime,
    /// No media from the holder for `no_media_timeout` (stuck PTT on a dead link, lost grant).
    NoMedia,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipient {
    One(ParticipantId),
    /// Every member of the channel.
    All,
}

/// One message for the driver to route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArbiterOutput {
    pub to: Recipient,
    pub msg: ToParticipant,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ArbiterConfig {
    pub max_talk: Duration,
    pub no_media_timeout: Duration,
    /// false: equal/lower priority requests are denied busy. true: they wait, highest priority
    /// first, FIFO within a priority.
    pub queue: bool,
    pub max_queue: usize,
}

impl Default for ArbiterConfig {
    fn default() -> Self {
        Self {
            max_talk: Duration::from_secs(180),
            no_media_timeout: Duration::from_secs(5),
            queue: false,
            max_queue: 8,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArbiterTimer {
    MaxTalk,
    NoMedia,
}

impl TimerId for ArbiterTimer {
    const ALL: &'static [Self] = &[Self::MaxTalk, Self::NoMedia];
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone)]
struct Waiting {
    id: ParticipantId,
    priority: Priority,
    /// Last position sent to it (0 = none yet), so only changes are sent.
    told: usize,
}

/// The floor of one channel.
#[derive(Debug, Clone)]
pub struct Arbiter {
    config: ArbiterConfig,
    holder: Option<(ParticipantId, Priority)>,
    /// Sorted by priority (highest first), FIFO within a priority. Non-empty only while taken.
    queue: Vec<Waiting>,
    timers: Timers<ArbiterTimer, 2>,
    /// Whether whoever feeds [`Arbiter::media`] can see the holder's media at all (false:
    /// no-media is not judged, see [`Arbiter::set_media_seen`]).
    media_seen: bool,
    out: VecDeque<ArbiterOutput>,
}

impl Arbiter {
    pub fn new(config: ArbiterConfig) -> Self {
        Self {
            config,
            holder: None,
            queue: Vec::new(),
            timers: Timers::default(),
            media_seen: true,
            out: VecDeque::new(),
        }
    }

    /// Whether the media of this channel can be seen (true by default). While it cannot (the
    /// floor host's own link to the media is down), silence says nothing about the talker, so
    /// no-media is not judged; once it can again, the holder has a whole `no_media_timeout`
    /// from `now` for its media to be seen (the link's grace). Max talk time runs on.
    pub fn set_media_seen(&mut self, now: Instant, seen: bool) {
        if std::mem::replace(&mut self.media_seen, seen) == seen {
            return;
        }
        if !seen {
            self.timers.stop(ArbiterTimer::NoMedia);
        } else if self.holder.is_some() {
            self.timers.set(ArbiterTimer::NoMedia, now + self.config.no_media_timeout);
        }
    }

    pub fn media_seen(&self) -> bool {
        self.media_seen
    }

    /// Feed a message received from participant `from`.
    pub fn handle_message(&mut self, now: Instant, from: ParticipantId, msg: ToArbiter) {
        match msg {
            ToArbiter::Request { priority } => self.request(now, from, priority),
            ToArbiter::Release => self.release(now, from),
        }
    }

    pub fn request(&mut self, now: Instant, id: ParticipantId, priority: Priority) {
        if self.holder.is_some_and(|(h, _)| h == id) {
            // Re-grant only: restarting the timers would let a holder dodge max talk time.
            self.send(id, ToParticipant::Granted);
            return;
        }
        if let Some(i) = self.queue.iter().position(|w| w.id == id) {
            if self.queue[i].priority == priority {
                self.queue[i].told = 0; // duplicate: keep the place, repeat the position
                self.notify_positions();
                return;
            }
            self.queue.remove(i); // new priority: decide afresh
        }
        match self.holder {
            None => self.grant(now, id, priority),
            Some((holder, held)) if priority > held => {
                self.send(holder, ToParticipant::Revoke { cause: RevokeCause::Preempted { by: id } });
                self.grant(now, id, priority);
            }
            Some((holder, _)) if !self.config.queue => {
                self.send(id, ToParticipant::Deny { cause: DenyCause::Busy { holder } })
            }
            Some(_) if self.queue.len() >= self.config.max_queue => {
                self.send(id, ToParticipant::Deny { cause: DenyCause::QueueFull })
            }
            Some(_) => {
                let at = self.queue.iter().position(|w| w.priority < priority).unwrap_or(self.queue.len());
                self.queue.insert(at, Waiting { id, priority, told: 0 });
            }
        }
        self.notify_positions();
    }

    /// Raise `id`'s priority to `priority` where it stands, without taking the floor from
    /// anyone: the holder keeps talking at the higher priority (so it cannot be preempted below
    /// it; nothing is sent), a waiting one moves up the queue. Anyone else, or a lower
    /// priority, changes nothing: a new request decides then.
    pub fn promote(&mut self, id: ParticipantId, priority: Priority) {
        match &mut self.holder {
            Some((h, held)) if *h == id => *held = (*held).max(priority),
            _ => {
                if let Some(i) = self.queue.iter().position(|w| w.id == id && w.priority < priority) {
                    let w = self.queue.remove(i);
                    let at = self.queue.iter().position(|q| q.priority < priority).unwrap_or(self.queue.len());
                    self.queue.insert(at, Waiting { priority, told: w.told, ..w });
                    self.notify_positions();
                }
            }
        }
    }

    /// The holder gives the floor back (next in queue or Idle); anyone else leaves the queue.
    pub fn release(&mut self, now: Instant, id: ParticipantId) {
        if self.holder.is_some_and(|(h, _)| h == id) {
            self.free(now);
        } else {
            self.queue.retain(|w| w.id != id);
        }
        self.notify_positions();
    }

    /// `id` disconnected or was declared dead: free its floor and drop it from the queue.
    /// Nothing is sent to it.
    pub fn leave(&mut self, now: Instant, id: ParticipantId) {
        self.release(now, id);
    }

    /// Media was seen from `id`: keeps the floor alive if `id` holds it, otherwise ignored.
    pub fn media(&mut self, now: Instant, id: ParticipantId) {
        if self.media_seen && self.holder.is_some_and(|(h, _)| h == id) {
            self.timers.set(ArbiterTimer::NoMedia, now + self.config.no_media_timeout);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((timer, _)) = self.timers.pop_expired(now) {
            let Some((holder, _)) = self.holder else {
                continue;
            };
            let cause = match timer {
                ArbiterTimer::MaxTalk => RevokeCause::MaxTalkTime,
                ArbiterTimer::NoMedia => RevokeCause::NoMedia,
            };
            self.send(holder, ToParticipant::Revoke { cause });
            self.free(now);
        }
        self.notify_positions();
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Next message to route; drain after every input.
    pub fn poll_output(&mut self) -> Option<ArbiterOutput> {
        self.out.pop_front()
    }

    pub fn holder(&self) -> Option<(ParticipantId, Priority)> {
        self.holder
    }

    /// Waiting participants, next first.
    pub fn queue(&self) -> impl ExactSizeIterator<Item = (ParticipantId, Priority)> + '_ {
        self.queue.iter().map(|w| (w.id, w.priority))
    }

    fn grant(&mut self, now: Instant, id: ParticipantId, priority: Priority) {
        self.holder = Some((id, priority));
        self.timers.set(ArbiterTimer::MaxTalk, now + self.config.max_talk);
        if self.media_seen {
            self.timers.set(ArbiterTimer::NoMedia, now + self.config.no_media_timeout);
        }
        self.send(id, ToParticipant::Granted);
        self.broadcast(ToParticipant::Taken { holder: id, priority });
    }

    fn free(&mut self, now: Instant) {
        self.holder = None;
        self.timers.stop_all();
        if self.queue.is_empty() {
            self.broadcast(ToParticipant::Idle);
        } else {
            let next = self.queue.remove(0);
            self.grant(now, next.id, next.priority);
        }
    }

    fn notify_positions(&mut self) {
        for (i, w) in self.queue.iter_mut().enumerate() {
            if w.told != i + 1 {
                w.told = i + 1;
                let msg = ToParticipant::Queued { position: i + 1 };
                self.out.push_back(ArbiterOutput { to: Recipient::One(w.id), msg });
            }
        }
    }

    fn send(&mut self, to: ParticipantId, msg: ToParticipant) {
        self.out.push_back(ArbiterOutput { to: Recipient::One(to), msg });
    }

    fn broadcast(&mut self, msg: ToParticipant) {
        self.out.push_back(ArbiterOutput { to: Recipient::All, msg });
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantConfig {
    /// Sent with every request.
    pub priority: Priority,
    /// Give up on an unanswered request after this long (`None`: wait forever).
    pub request_timeout: Option<Duration>,
    /// A radio's COR: while still pressed, ask again each time the floor goes idle after this
    /// participant was preempted or denied, so a call that is still coming in goes on being
    /// heard. Not after a max-talk revoke (a stuck COR must not hold the channel for ever);
    /// after a no-media revoke once per press (the media path blinked: the call goes on, but
    /// a press whose media never arrives does not hold the channel in turns). A console's PTT
    /// (false) must be pressed again instead.
    pub retake_when_idle: bool,
}

impl Default for ParticipantConfig {
    fn default() -> Self {
        Self { priority: Priority::NORMAL, request_timeout: Some(Duration::from_secs(2)), retake_when_idle: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParticipantState {
    /// Not asking and not holding (also after deny, revoke or request timeout while pressed).
    Idle,
    /// Request sent, no answer yet.
    Requesting,
    Queued {
        position: usize,
    },
    Granted,
}

/// Local events for the port/console driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParticipantEvent {
    /// Floor granted: open the media path.
    StartMedia,
    /// Close the media path (unpress, revoke, or floor lost).
    StopMedia,
    /// Request denied: busy tone/LED.
    BusyIndication(DenyCause),
    Queued {
        position: usize,
    },
    /// The arbiter took the floor away; comes right after `StopMedia`.
    Revoked(RevokeCause),
    /// No answer from the arbiter within `request_timeout`: the request was cancelled, or (a
    /// radio still pressed, `retake_when_idle`) sent again.
    RequestTimedOut {
        asking_again: bool,
    },
    /// Someone else talks.
    FloorTaken {
        holder: ParticipantId,
        priority: Priority,
    },
    FloorIdle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParticipantTimer {
    Request,
}

impl TimerId for ParticipantTimer {
    const ALL: &'static [Self] = &[Self::Request];
    fn index(self) -> usize {
        self as usize
    }
}

/// The floor client of one port or peer.
#[derive(Debug, Clone)]
pub struct Participant {
    id: ParticipantId,
    config: ParticipantConfig,
    state: ParticipantState,
    /// Physical press; a revoked or denied press must be released before it requests again
    /// (unless `retake_when_idle`).
    pressed: bool,
    /// This press was cut by max talk or (a second time) no media: no retake until released.
    cut: bool,
    /// This press was already revoked once for no media (and asked again).
    no_media_once: bool,
    timers: Timers<ParticipantTimer, 1>,
    transmit: VecDeque<ToArbiter>,
    events: VecDeque<ParticipantEvent>,
}

impl Participant {
    pub fn new(id: ParticipantId, config: ParticipantConfig) -> Self {
        Self {
            id,
            config,
            state: ParticipantState::Idle,
            pressed: false,
            cut: false,
            no_media_once: false,
            timers: Timers::default(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// PTT pressed or COR opened: request the floor (a repeated press is ignored). With
    /// `retake_when_idle`, a press the floor was taken from asks again when the floor goes idle.
    pub fn press(&mut self, now: Instant) {
        if std::mem::replace(&mut self.pressed, true) || self.state != ParticipantState::Idle {
            return;
        }
        self.request(now);
    }

    fn request(&mut self, now: Instant) {
        self.transmit.push_back(ToArbiter::Request { priority: self.config.priority });
        self.state = ParticipantState::Requesting;
        if let Some(t) = self.config.request_timeout {
            self.timers.set(ParticipantTimer::Request, now + t);
        }
    }

    /// Change the priority of this participant's requests (an emergency caller's, and back).
    /// A press the floor was refused to (denied busy, preempted) asks again at once with a
    /// higher priority; a holder or a queued request is promoted by the arbiter's side
    /// ([`Arbiter::promote`]), a request in flight is answered first (a radio's repeat carries
    /// the new priority).
    pub fn set_priority(&mut self, now: Instant, priority: Priority) {
        let old = std::mem::replace(&mut self.config.priority, priority);
        if priority > old && self.pressed && !self.cut && self.state == ParticipantState::Idle {
            self.request(now);
        }
    }

    /// PTT released or COR closed: release the floor or cancel the request.
    pub fn unpress(&mut self, _now: Instant) {
        if !std::mem::replace(&mut self.pressed, false) {
            return;
        }
        self.cut = false;
        self.no_media_once = false;
        match self.state {
            ParticipantState::Idle => return,
            ParticipantState::Granted => self.events.push_back(ParticipantEvent::StopMedia),
            ParticipantState::Requesting | ParticipantState::Queued { .. } => {}
        }
        self.transmit.push_back(ToArbiter::Release);
        self.go_idle();
    }

    /// Feed a message from the arbiter (directed to this participant or broadcast).
    pub fn handle_message(&mut self, now: Instant, msg: ToParticipant) {
        use ParticipantEvent as E;
        use ParticipantState as S;
        use ToParticipant as M;
        match (self.state, msg) {
            (S::Requesting | S::Queued { .. }, M::Granted) => {
                self.timers.stop_all();
                self.state = S::Granted;
                self.events.push_back(E::StartMedia);
            }
            // The answer to a request we already cancelled crossed our Release (or came after
            // a request timeout): give it back so the channel is not held by a silent member.
            (S::Idle, M::Granted | M::Queued { .. }) => self.transmit.push_back(ToArbiter::Release),
            (S::Requesting | S::Queued { .. }, M::Queued { position }) => {
                // Answered; the wait is bounded by the holder's max talk time, not by us.
                self.timers.stop_all();
                self.state = S::Queued { position };
                self.events.push_back(E::Queued { position });
            }
            (S::Requesting | S::Queued { .. }, M::Deny { cause }) => {
                self.go_idle();
                self.events.push_back(E::BusyIndication(cause));
            }
            (S::Granted, M::Revoke { cause }) => {
                self.lose_floor();
                match cause {
                    RevokeCause::MaxTalkTime => self.cut = true,
                    RevokeCause::NoMedia => self.cut |= std::mem::replace(&mut self.no_media_once, true),
                    RevokeCause::Preempted { .. } => {}
                }
                self.events.push_back(E::Revoked(cause));
            }
            (_, M::Taken { holder, priority }) if holder != self.id => {
                // In-order delivery: this is newer than our grant, so we lost the floor.
                self.lose_floor();
                self.events.push_back(E::FloorTaken { holder, priority });
            }
            (_, M::Idle) => {
                self.lose_floor();
                self.events.push_back(E::FloorIdle);
                if self.config.retake_when_idle && self.pressed && !self.cut && self.state == S::Idle {
                    self.request(now);
                }
            }
            _ => {} // Duplicates and stale messages (e.g. a Revoke for a grant already released).
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((ParticipantTimer::Request, _)) = self.timers.pop_expired(now) {
            if self.state != ParticipantState::Requesting {
                continue;
            }
            let asking_again = self.config.retake_when_idle && self.pressed && !self.cut;
            self.events.push_back(ParticipantEvent::RequestTimedOut { asking_again });
            if asking_again {
                // A radio's squelch is still open and it cannot press again: ask again rather
                // than lose the call in silence. A duplicate request is harmless (the arbiter
                // re-grants its holder, keeps a queue place, or denies once more).
                self.request(now);
            } else {
                // Cancel, in case the request is only late; a stale grant is released too.
                self.transmit.push_back(ToArbiter::Release);
                self.go_idle();
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Next message for the arbiter.
    pub fn poll_transmit(&mut self) -> Option<ToArbiter> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ParticipantEvent> {
        self.events.pop_front()
    }

    /// True only while granted: gate the media path on this.
    pub fn may_send_media(&self) -> bool {
        self.state == ParticipantState::Granted
    }

    pub fn state(&self) -> ParticipantState {
        self.state
    }

    pub fn id(&self) -> ParticipantId {
        self.id
    }

    pub fn priority(&self) -> Priority {
        self.config.priority
    }

    pub fn is_pressed(&self) -> bool {
        self.pressed
    }

    fn go_idle(&mut self) {
        self.timers.stop_all();
        self.state = ParticipantState::Idle;
    }

    fn lose_floor(&mut self) {
        if self.state == ParticipantState::Granted {
            self.events.push_back(ParticipantEvent::StopMedia);
            self.go_idle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use ParticipantEvent as E;

    const A: ParticipantId = ParticipantId(1);
    const B: ParticipantId = ParticipantId(2);
    const C: ParticipantId = ParticipantId(3);
    const D: ParticipantId = ParticipantId(4);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// One arbiter and its present members, wired in process with instant in-order delivery.
    #[derive(Clone)]
    struct Channel {
        now: Instant,
        arbiter: Arbiter,
        members: BTreeMap<ParticipantId, Participant>,
        log: Vec<(ParticipantId, ParticipantEvent)>,
    }

    impl Channel {
        fn new(config: ArbiterConfig, members: &[(ParticipantId, Priority)]) -> Self {
            let mut ch =
                Self { now: Instant::now(), arbiter: Arbiter::new(config), members: BTreeMap::new(), log: Vec::new() };
            for &(id, priority) in members {
                ch.join(id, priority);
            }
            ch
        }

        fn join(&mut self, id: ParticipantId, priority: Priority) {
            let config = ParticipantConfig { priority, ..Default::default() };
            self.members.entry(id).or_insert_with(|| Participant::new(id, config));
        }

        fn leave(&mut self, id: ParticipantId) {
            if self.members.remove(&id).is_some() {
                self.arbiter.leave(self.now, id);
                self.pump();
            }
        }

        fn press(&mut self, id: ParticipantId) {
            if let Some(p) = self.members.get_mut(&id) {
                p.press(self.now);
                self.pump();
            }
        }

        fn unpress(&mut self, id: ParticipantId) {
            if let Some(p) = self.members.get_mut(&id) {
                p.unpress(self.now);
                self.pump();
            }
        }

        /// Media flows only through the gate, as in the daemon.
        fn media(&mut self, id: ParticipantId) {
            if self.members.get(&id).is_some_and(|p| p.may_send_media()) {
                self.arbiter.media(self.now, id);
            }
        }

        fn pump(&mut self) {
            loop {
                let mut moved = false;
                for (&id, p) in &mut self.members {
                    while let Some(m) = p.poll_transmit() {
                        moved = true;
                        self.arbiter.handle_message(self.now, id, m);
                    }
                    while let Some(e) = p.poll_event() {
                        self.log.push((id, e));
                    }
                }
                while let Some(o) = self.arbiter.poll_output() {
                    moved = true;
                    for (&id, p) in &mut self.members {
                        if o.to == Recipient::All || o.to == Recipient::One(id) {
                            p.handle_message(self.now, o.msg);
                        }
                    }
                }
                if !moved {
                    return;
                }
            }
        }

        /// Step virtual time to each deadline up to `now + d`.
        fn advance(&mut self, d: Duration) {
            let end = self.now + d;
            loop {
                let next = self.members.values().filter_map(|p| p.poll_timeout());
                let next = next.chain(self.arbiter.poll_timeout()).min();
                let Some(t) = next.filter(|t| *t <= end) else {
                    break;
                };
                self.now = self.now.max(t);
                self.arbiter.handle_timeout(self.now);
                for p in self.members.values_mut() {
                    p.handle_timeout(self.now);
                }
                self.pump();
            }
            self.now = end;
        }

        /// Drain the events `id` has produced so far.
        fn events(&mut self, id: ParticipantId) -> Vec<ParticipantEvent> {
            let (mine, rest) = std::mem::take(&mut self.log).into_iter().partition(|(i, _)| *i == id);
            self.log = rest;
            mine.into_iter().map(|(_, e)| e).collect()
        }

        fn talkers(&self) -> Vec<ParticipantId> {
            self.members.values().filter(|p| p.may_send_media()).map(|p| p.id()).collect()
        }

        fn holder(&self) -> Option<ParticipantId> {
            self.arbiter.holder().map(|(h, _)| h)
        }

        fn state(&self, id: ParticipantId) -> ParticipantState {
            self.members[&id].state()
        }
    }

    fn normal(ids: &[ParticipantId]) -> Vec<(ParticipantId, Priority)> {
        ids.iter().map(|&id| (id, Priority::NORMAL)).collect()
    }

    fn queueing(max_queue: usize) -> ArbiterConfig {
        ArbiterConfig { queue: true, max_queue, ..Default::default() }
    }

    #[test]
    fn grant_when_idle() {
        let mut ch = Channel::new(ArbiterConfig::default(), &normal(&[A, B]));
        ch.press(A);
        assert_eq!(ch.events(A), [E::StartMedia]);
        assert!(ch.members[&A].may_send_media());
        assert_eq!(ch.arbiter.holder(), Some((A, Priority::NORMAL)));
        assert_eq!(ch.events(B), [E::FloorTaken { holder: A, priority: Priority::NORMAL }]);
    }

    #[test]
    fn busy_denial_for_equal_and_lower_priority() {
        let members = [(A, Priority::DISPATCH), (B, Priority::DISPATCH), (C, Priority::NORMAL)];
        let mut ch = Channel::new(ArbiterConfig::default(), &members);
        ch.press(A);
        ch.press(B);
        ch.press(C);
        for id in [B, C] {
            assert_eq!(ch.events(id).last(), Some(&E::BusyIndication(DenyCause::Busy { holder: A })));
            assert_eq!(ch.state(id), ParticipantState::Idle);
        }
        assert_eq!(ch.talkers(), [A]);
        assert_eq!(ch.arbiter.queue().len(), 0);
    }

    #[test]
    fn queue_orders_by_priority_and_grants_on_release() {
        let members = [(A, Priority(100)), (B, Priority(0)), (C, Priority(50))];
        let mut ch = Channel::new(queueing(4), &members);
        ch.press(A);
        ch.press(B);
        assert_eq!(ch.events(B).last(), Some(&E::Queued { position: 1 }));
        ch.press(C); // higher priority than B: goes ahead of it
        assert_eq!(ch.state(C), ParticipantState::Queued { position: 1 });
        assert_eq!(ch.events(B).last(), Some(&E::Queued { position: 2 }));
        assert_eq!(ch.arbiter.queue().collect::<Vec<_>>(), [(C, Priority(50)), (B, Priority(0))]);

        ch.unpress(A);
        assert_eq!(ch.talkers(), [C]);
        assert_eq!(ch.state(B), ParticipantState::Queued { position: 1 });
        ch.unpress(C);
        assert_eq!(ch.talkers(), [B]);
        ch.unpress(B);
        assert_eq!(ch.holder(), None);
        assert_eq!(ch.events(A).last(), Some(&E::FloorIdle));
    }

    #[test]
    fn full_queue_denies() {
        let mut ch = Channel::new(queueing(1), &normal(&[A, B, C]));
        ch.press(A);
        ch.press(B);
        ch.press(C);
        assert_eq!(ch.events(C).last(), Some(&E::BusyIndication(DenyCause::QueueFull)));
        assert_eq!(ch.state(C), ParticipantState::Idle);
    }

    #[test]
    fn unpress_while_queued_cancels() {
        let mut ch = Channel::new(queueing(4), &normal(&[A, B, C]));
        ch.press(A);
        ch.press(B);
        ch.press(C);
        ch.unpress(B);
        assert_eq!(ch.arbiter.queue().map(|q| q.0).collect::<Vec<_>>(), [C]);
        assert_eq!(ch.state(C), ParticipantState::Queued { position: 1 });
        ch.unpress(A);
        assert_eq!(ch.talkers(), [C]);
    }

    #[test]
    fn preemption_revokes_holder_before_granting() {
        let mut ch = Channel::new(ArbiterConfig::default(), &[(A, Priority::NORMAL), (D, Priority::DISPATCH)]);
        ch.press(A);
        ch.log.clear();
        ch.press(D);
        let stop = ch.log.iter().position(|e| *e == (A, E::StopMedia)).unwrap();
        let start = ch.log.iter().position(|e| *e == (D, E::StartMedia)).unwrap();
        assert!(stop < start, "the preempted talker stops before the new one starts");
        assert_eq!(
            ch.events(A),
            [
                E::StopMedia,
                E::Revoked(RevokeCause::Preempted { by: D }),
                E::FloorTaken { holder: D, priority: Priority::DISPATCH }
            ]
        );
        assert_eq!(ch.talkers(), [D]);

        // A keeps its PTT down but does not ask again until a new press.
        ch.unpress(D);
        assert_eq!(ch.holder(), None);
        assert!(ch.members[&A].is_pressed());
        ch.unpress(A);
        ch.press(A);
        assert_eq!(ch.talkers(), [A]);
    }

    fn radio(priority: Priority) -> ParticipantConfig {
        ParticipantConfig { priority, retake_when_idle: true, ..Default::default() }
    }

    #[test]
    fn preempted_radio_with_open_squelch_retakes_when_idle() {
        let mut ch = Channel::new(ArbiterConfig::default(), &[(D, Priority::DISPATCH)]);
        ch.members.insert(A, Participant::new(A, radio(Priority::NORMAL)));
        ch.press(A); // COR opens
        ch.press(D); // the console preempts
        assert_eq!(ch.talkers(), [D]);
        ch.log.clear();
        ch.unpress(D); // the console lets go while A still receives
        assert_eq!(ch.talkers(), [A], "the field unit's call goes on");
        assert_eq!(ch.events(A), [E::FloorIdle, E::StartMedia]);
        // A closed squelch asks for nothing.
        ch.unpress(A);
        ch.press(D);
        ch.unpress(D);
        assert_eq!(ch.holder(), None);
    }

    #[test]
    fn denied_radio_takes_the_floor_when_it_frees() {
        let mut ch = Channel::new(ArbiterConfig::default(), &[(D, Priority::DISPATCH)]);
        ch.members.insert(A, Participant::new(A, radio(Priority::NORMAL)));
        ch.members.insert(B, Participant::new(B, radio(Priority::NORMAL)));
        ch.press(D);
        ch.press(A); // busy: denied
        ch.press(B);
        assert_eq!(ch.talkers(), [D]);
        ch.unpress(D);
        // Both ask again; the first one wins, the other is denied and waits for the next idle.
        assert_eq!(ch.talkers().len(), 1);
        let first = ch.talkers()[0];
        let other = if first == A { B } else { A };
        assert_eq!(ch.state(other), ParticipantState::Idle);
        ch.unpress(first);
        assert_eq!(ch.talkers(), [other]);
    }

    #[test]
    fn radio_cut_by_a_timer_does_not_retake() {
        // A stuck COR must not hold the channel for ever: after max talk or no media, only a
        // new key-up asks again.
        for (config, cause) in [
            (ArbiterConfig { max_talk: secs(3), ..Default::default() }, RevokeCause::MaxTalkTime),
            (ArbiterConfig::default(), RevokeCause::NoMedia),
        ] {
            let mut ch = Channel::new(config, &[]);
            ch.members.insert(A, Participant::new(A, radio(Priority::NORMAL)));
            ch.press(A);
            for _ in 0..10 {
                ch.advance(secs(1));
                if cause == RevokeCause::MaxTalkTime {
                    ch.media(A);
                }
            }
            assert_eq!(ch.holder(), None, "{cause:?}");
            let revokes = ch.events(A).iter().filter(|e| **e == E::Revoked(cause)).count();
            // No media: asked again once (granted, 5 s more), then cut for good.
            assert_eq!(revokes, if cause == RevokeCause::NoMedia { 2 } else { 1 }, "{cause:?}");
            ch.unpress(A);
            ch.press(A);
            assert_eq!(ch.talkers(), [A], "a new key-up asks again");
        }
    }

    #[test]
    fn radio_revoked_for_no_media_asks_again_once_per_press_behind_the_queue() {
        let mut ch = Channel::new(queueing(4), &[]);
        ch.members.insert(A, Participant::new(A, radio(Priority::NORMAL)));
        ch.members.insert(B, Participant::new(B, radio(Priority::NORMAL)));
        ch.press(A);
        ch.press(B); // queued behind A
        ch.advance(secs(5)); // A's media never arrives
        assert_eq!(ch.talkers(), [B], "the queue goes first");
        assert_eq!(ch.state(A), ParticipantState::Idle);
        ch.log.clear();
        for _ in 0..3 {
            ch.advance(secs(1));
            ch.media(B);
        }
        ch.unpress(B);
        assert_eq!(ch.talkers(), [A], "then A, whose COR is still open, asks again");
        assert_eq!(ch.events(A).iter().filter(|e| matches!(e, E::StartMedia)).count(), 1, "one request, not a storm");
        ch.advance(secs(5)); // still no media: the second revoke of this press cuts it
        assert_eq!(ch.holder(), None);
        ch.advance(secs(60));
        assert_eq!(ch.holder(), None, "no further retake");
        ch.unpress(A);
        ch.press(A);
        ch.advance(secs(5));
        assert_eq!(ch.talkers(), [A], "a new press has its own retake");
    }

    #[test]
    fn no_media_is_not_judged_while_media_cannot_be_seen_and_has_a_grace_after() {
        let mut ch = Channel::new(ArbiterConfig::default(), &normal(&[A, B]));
        ch.press(A);
        ch.advance(secs(3));
        ch.arbiter.set_media_seen(ch.now, false); // the host's media link goes down
        assert!(!ch.arbiter.media_seen());
        ch.advance(secs(60));
        assert_eq!(ch.talkers(), [A], "not revoked while blind");
        ch.arbiter.set_media_seen(ch.now, true);
        ch.advance(Duration::from_millis(4999));
        assert_eq!(ch.talkers(), [A], "a whole no-media timeout of grace");
        ch.media(A);
        ch.advance(Duration::from_millis(4999));
        assert_eq!(ch.talkers(), [A], "media seen again keeps it");
        ch.advance(Duration::from_millis(1));
        assert_eq!(ch.holder(), None, "and no media afterwards is judged again");

        // Granted while blind: judged from when media can be seen.
        ch.arbiter.set_media_seen(ch.now, false);
        ch.press(B);
        ch.advance(secs(30));
        assert_eq!(ch.talkers(), [B]);
        ch.arbiter.set_media_seen(ch.now, true);
        ch.arbiter.set_media_seen(ch.now, true); // repeated: no new grace
        ch.advance(secs(5));
        assert_eq!(ch.holder(), None);

        // Max talk time runs on while blind.
        let mut ch = Channel::new(ArbiterConfig { max_talk: secs(10), ..Default::default() }, &normal(&[A]));
        ch.arbiter.set_media_seen(ch.now, false);
        ch.press(A);
        ch.advance(secs(10));
        assert_eq!(ch.holder(), None);
        assert!(ch.events(A).contains(&E::Revoked(RevokeCause::MaxTalkTime)));
    }

    #[test]
    fn console_does_not_retake() {
        let mut ch = Channel::new(ArbiterConfig::default(), &[(A, Priority::NORMAL), (D, Priority::DISPATCH)]);
        ch.press(A);
        ch.press(D);
        ch.unpress(D);
        assert_eq!(ch.holder(), None, "a revoked PTT must be pressed again");
    }

    #[test]
    fn equal_priority_cannot_preempt_even_with_queue() {
        let members = [(A, Priority::DISPATCH), (B, Priority::DISPATCH)];
        let mut ch = Channel::new(queueing(4), &members);
        ch.press(A);
        ch.press(B);
        assert_eq!(ch.talkers(), [A]);
        assert_eq!(ch.state(B), ParticipantState::Queued { position: 1 });
    }

    #[test]
    fn max_talk_time_frees_the_floor() {
        let mut ch = Channel::new(ArbiterConfig::default(), &normal(&[A, B]));
        ch.press(A);
        for _ in 0..179 {
            ch.advance(secs(1));
            ch.media(A);
        }
        assert_eq!(ch.talkers(), [A]);
        ch.advance(secs(1));
        assert_eq!(ch.events(A)[1..], [E::StopMedia, E::Revoked(RevokeCause::MaxTalkTime), E::FloorIdle]);
        assert_eq!(ch.talkers(), []);
        assert_eq!(ch.holder(), None);
        assert_eq!(ch.events(B).last(), Some(&E::FloorIdle));
    }

    #[test]
    fn max_talk_time_passes_floor_to_queue() {
        let mut ch = Channel::new(ArbiterConfig { max_talk: secs(3), ..queueing(4) }, &normal(&[A, B]));
        ch.press(A);
        ch.press(B);
        ch.advance(secs(3));
        assert_eq!(ch.talkers(), [B]);
    }

    #[test]
    fn no_media_timeout_frees_and_media_refresh_keeps() {
        let mut ch = Channel::new(ArbiterConfig::default(), &normal(&[A, B]));
        ch.press(A);
        for _ in 0..5 {
            ch.advance(secs(4));
            ch.media(A);
            ch.media(B); // from a non-holder: must not keep A's floor alive either
        }
        assert_eq!(ch.talkers(), [A]);
        ch.advance(Duration::from_millis(4999));
        assert_eq!(ch.talkers(), [A]);
        ch.advance(Duration::from_millis(1));
        assert_eq!(ch.events(A)[1..], [E::StopMedia, E::Revoked(RevokeCause::NoMedia), E::FloorIdle]);
        assert_eq!(ch.holder(), None);
    }

    #[test]
    fn media_from_non_holder_is_ignored() {
        let t0 = Instant::now();
        let mut arb = Arbiter::new(ArbiterConfig::default());
        arb.request(t0, A, Priority::NORMAL);
        arb.media(t0 + secs(4), B);
        assert_eq!(arb.poll_timeout(), Some(t0 + secs(5)));
    }

    #[test]
    fn release_by_holder_broadcasts_idle() {
        let mut ch = Channel::new(ArbiterConfig::default(), &normal(&[A, B, C]));
        ch.press(A);
        ch.log.clear();
        ch.unpress(A);
        assert_eq!(ch.events(A), [E::StopMedia, E::FloorIdle]);
        assert_eq!(ch.events(B), [E::FloorIdle]);
        assert_eq!(ch.events(C), [E::FloorIdle]);
        assert_eq!(ch.arbiter.poll_timeout(), None);
    }

    #[test]
    fn leave_by_holder_frees() {
        let mut ch = Channel::new(ArbiterConfig::default(), &normal(&[A, B]));
        ch.press(A);
        ch.leave(A);
        assert_eq!(ch.holder(), None);
        assert_eq!(ch.events(B).last(), Some(&E::FloorIdle));

        let mut ch = Channel::new(queueing(4), &normal(&[A, B]));
        ch.press(A);
        ch.press(B);
        ch.leave(A);
        assert_eq!(ch.talkers(), [B]);
    }

    #[test]
    fn leave_while_queued_removes() {
        let mut ch = Channel::new(queueing(4), &normal(&[A, B, C]));
        ch.press(A);
        ch.press(B);
        ch.press(C);
        ch.leave(B);
        assert_eq!(ch.state(C), ParticipantState::Queued { position: 1 });
        ch.unpress(A);
        assert_eq!(ch.talkers(), [C]);
    }

    #[test]
    fn duplicate_request_by_holder_is_idempotent() {
        let t0 = Instant::now();
        let mut arb = Arbiter::new(ArbiterConfig::default());
        arb.request(t0, A, Priority::NORMAL);
        while arb.poll_output().is_some() {}
        arb.request(t0 + secs(100), A, Priority::NORMAL);
        assert_eq!(arb.poll_output(), Some(ArbiterOutput { to: Recipient::One(A), msg: ToParticipant::Granted }));
        assert_eq!(arb.poll_output(), None);
        arb.media(t0 + secs(179), A);
        arb.handle_timeout(t0 + secs(180)); // max talk still counts from the first grant
        assert_eq!(arb.holder(), None);

        let mut p = Participant::new(A, ParticipantConfig::default());
        p.press(t0);
        p.handle_message(t0, ToParticipant::Granted);
        p.handle_message(t0, ToParticipant::Granted);
        assert_eq!(p.poll_event(), Some(E::StartMedia));
        assert_eq!(p.poll_event(), None);
    }

    #[test]
    fn duplicate_request_while_queued_keeps_place() {
        let t0 = Instant::now();
        let mut arb = Arbiter::new(queueing(4));
        for id in [A, B, C] {
            arb.request(t0, id, Priority::NORMAL);
        }
        arb.request(t0, B, Priority::NORMAL);
        assert_eq!(arb.queue().map(|q| q.0).collect::<Vec<_>>(), [B, C]);
        let last = std::iter::from_fn(|| arb.poll_output()).last();
        assert_eq!(last, Some(ArbiterOutput { to: Recipient::One(B), msg: ToParticipant::Queued { position: 1 } }));
    }

    /// A radio cannot press again while its squelch stays open: an unanswered request (lost on
    /// the way, or an answer later than the timeout) is sent again until it is answered, and
    /// whichever answer comes first decides; the call is never lost in silence.
    #[test]
    fn a_radio_still_pressed_asks_again_when_its_request_goes_unanswered() {
        let t0 = Instant::now();
        let radio = ParticipantConfig { retake_when_idle: true, ..Default::default() };
        let request = Some(ToArbiter::Request { priority: Priority::NORMAL });
        let mut p = Participant::new(A, radio.clone());
        p.press(t0);
        assert_eq!(p.poll_transmit(), request);
        for n in 1..=3 {
            p.handle_timeout(t0 + secs(2 * n));
            assert_eq!(p.poll_event(), Some(E::RequestTimedOut { asking_again: true }));
            assert_eq!(p.poll_transmit(), request, "asked again, nothing released");
            assert_eq!(p.poll_transmit(), None);
            assert_eq!(p.state(), ParticipantState::Requesting);
            assert_eq!(p.poll_timeout(), Some(t0 + secs(2 * n + 2)));
        }
        // The answer to any of them: busy. The later answers to the repeats change nothing.
        p.handle_message(t0 + secs(7), ToParticipant::Deny { cause: DenyCause::Busy { holder: B } });
        assert_eq!(p.poll_event(), Some(E::BusyIndication(DenyCause::Busy { holder: B })));
        assert_eq!(p.state(), ParticipantState::Idle);
        assert_eq!(p.poll_timeout(), None, "a denied radio waits for the floor to go idle");
        p.handle_message(t0 + secs(7), ToParticipant::Deny { cause: DenyCause::Busy { holder: B } });
        assert_eq!(p.poll_event(), None);
        // The holder lets go: the radio, still pressed, takes the floor.
        p.handle_message(t0 + secs(8), ToParticipant::Idle);
        assert_eq!(p.poll_event(), Some(E::FloorIdle));
        assert_eq!(p.poll_transmit(), request);
        p.handle_message(t0 + secs(8), ToParticipant::Granted);
        assert_eq!(p.poll_event(), Some(E::StartMedia));
        // A grant repeated for a duplicate request is no second start.
        p.handle_message(t0 + secs(8), ToParticipant::Granted);
        assert_eq!(p.poll_event(), None);
        // Released: no more requests, whatever timers there were.
        p.unpress(t0 + secs(9));
        assert_eq!(p.poll_event(), Some(E::StopMedia));
        assert_eq!(p.poll_transmit(), Some(ToArbiter::Release));
        assert_eq!(p.poll_timeout(), None);

        // A request that is answered late after a repeat: the grant counts once.
        let mut p = Participant::new(A, radio);
        p.press(t0);
        let _ = p.poll_transmit();
        p.handle_timeout(t0 + secs(2));
        let _ = (p.poll_event(), p.poll_transmit());
        p.handle_message(t0 + secs(3), ToParticipant::Granted);
        p.handle_message(t0 + secs(3), ToParticipant::Granted);
        assert_eq!(p.poll_event(), Some(E::StartMedia));
        assert_eq!(p.poll_event(), None);
        assert_eq!(p.poll_transmit(), None, "nothing handed back");
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn request_timeout_gives_up_and_releases_late_grant() {
        let t0 = Instant::now();
        let mut p = Participant::new(A, ParticipantConfig::default());
        p.press(t0);
        assert_eq!(p.poll_transmit(), Some(ToArbiter::Request { priority: Priority::NORMAL }));
        assert_eq!(p.poll_timeout(), Some(t0 + secs(2))); // the request is lost in transit
        p.handle_timeout(t0 + secs(2));
        assert_eq!(p.poll_event(), Some(E::RequestTimedOut { asking_again: false }));
        assert_eq!(p.poll_transmit(), Some(ToArbiter::Release));
        assert_eq!(p.state(), ParticipantState::Idle);
        assert_eq!(p.poll_timeout(), None);

        // The request was only late: the grant is handed back, media never starts.
        p.handle_message(t0 + secs(3), ToParticipant::Granted);
        assert!(!p.may_send_media());
        assert_eq!(p.poll_transmit(), Some(ToArbiter::Release));
        assert_eq!(p.poll_event(), None);
    }

    #[test]
    fn stale_messages_after_unpress_are_harmless() {
        let t0 = Instant::now();
        let mut p = Participant::new(A, ParticipantConfig::default());
        p.press(t0);
        p.handle_message(t0, ToParticipant::Granted);
        p.unpress(t0);
        assert_eq!(std::iter::from_fn(|| p.poll_transmit()).last(), Some(ToArbiter::Release));
        p.handle_message(t0, ToParticipant::Taken { holder: A, priority: Priority::NORMAL });
        p.handle_message(t0, ToParticipant::Revoke { cause: RevokeCause::NoMedia });
        assert_eq!(std::iter::from_fn(|| p.poll_event()).collect::<Vec<_>>(), [E::StartMedia, E::StopMedia]);
        assert_eq!(p.poll_transmit(), None);
    }

    #[test]
    fn losing_the_floor_without_revoke_stops_media() {
        let t0 = Instant::now();
        let mut p = Participant::new(A, ParticipantConfig::default());
        p.press(t0);
        p.handle_message(t0, ToParticipant::Granted);
        p.handle_message(t0, ToParticipant::Taken { holder: B, priority: Priority::NORMAL });
        assert!(!p.may_send_media());
        let events: Vec<_> = std::iter::from_fn(|| p.poll_event()).collect();
        assert_eq!(events[1..], [E::StopMedia, E::FloorTaken { holder: B, priority: Priority::NORMAL }]);
    }

    #[derive(Debug, Clone, Copy)]
    enum Action {
        Press,
        Unpress,
        Media,
        Leave,
        Rejoin,
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            3 => Just(Action::Press),
            2 => Just(Action::Unpress),
            3 => Just(Action::Media),
            1 => Just(Action::Leave),
            1 => Just(Action::Rejoin),
        ]
    }

    /// Holder and talker agree, the queue matches the members' view, the dead hold nothing.
    fn check_invariants(ch: &Channel) {
        let talkers = ch.talkers();
        assert!(talkers.len() <= 1, "two talkers: {talkers:?}");
        assert_eq!(ch.holder(), talkers.first().copied());
        if let Some((h, prio)) = ch.arbiter.holder() {
            assert_eq!(ch.members[&h].priority(), prio);
        }
        let queue: Vec<_> = ch.arbiter.queue().collect();
        let queued = ch.members.values().filter(|p| matches!(p.state(), ParticipantState::Queued { .. }));
        assert_eq!(queued.count(), queue.len());
        for (i, (id, prio)) in queue.iter().enumerate() {
            let p = ch.members.get(id).expect("a member that left is still queued");
            assert_eq!(p.state(), ParticipantState::Queued { position: i + 1 });
            assert!(*prio <= ch.arbiter.holder().unwrap().1);
            assert!(i == 0 || queue[i - 1].1 >= *prio);
        }
        // Instant delivery answers every request at once.
        assert!(ch.members.values().all(|p| p.state() != ParticipantState::Requesting));
        // A radio still receiving never leaves the floor idle (unless a timer cut it).
        if ch.holder().is_none() {
            for p in ch.members.values() {
                assert!(
                    !(p.config.retake_when_idle && p.pressed && !p.cut),
                    "{:?} receives while the floor is idle",
                    p.id()
                );
            }
        }
    }

    proptest! {
        #[test]
        fn floor_invariants_hold(
            queue in any::<bool>(),
            max_queue in 0usize..4,
            priorities in prop::collection::vec(0u8..3, 4),
            radios in prop::collection::vec(any::<bool>(), 4),
            steps in prop::collection::vec((0u64..4000, 0u64..4, action()), 0..60),
        ) {
            let config = ArbiterConfig { max_talk: secs(15), no_media_timeout: secs(3), queue, max_queue };
            let members: Vec<_> = priorities
                .iter()
                .enumerate()
                .map(|(i, p)| (ParticipantId(i as u64), Priority(p * 100)))
                .collect();
            let mut ch = Channel::new(config.clone(), &[]);
            let join = |ch: &mut Channel, i: usize| {
                let (id, priority) = members[i];
                let config = ParticipantConfig { priority, retake_when_idle: radios[i], ..Default::default() };
                ch.members.entry(id).or_insert_with(|| Participant::new(id, config));
            };
            for i in 0..members.len() {
                join(&mut ch, i);
            }
            for (delay, who, act) in steps {
                ch.advance(Duration::from_millis(delay));
                let id = ParticipantId(who);
                match act {
                    Action::Press => ch.press(id),
                    Action::Unpress => ch.unpress(id),
                    Action::Media => ch.media(id),
                    Action::Leave => ch.leave(id),
                    Action::Rejoin => join(&mut ch, who as usize),
                }
                check_invariants(&ch);
            }

            // Everyone lets go: the floor is free at once.
            let mut released = ch.clone();
            let ids: Vec<_> = released.members.keys().copied().collect();
            for id in ids {
                released.unpress(id);
                check_invariants(&released);
            }
            prop_assert_eq!(released.holder(), None);
            prop_assert_eq!(released.arbiter.queue().len(), 0);
            prop_assert!(released.members.values().all(|p| p.state() == ParticipantState::Idle));

            // Nobody lets go (stuck COR) and media stops: timeouts free it anyway.
            // Each radio may ask again once after a no-media revoke.
            ch.advance(config.no_media_timeout * (2 * members.len() as u32 + 1));
            check_invariants(&ch);
            prop_assert_eq!(ch.holder(), None);
            prop_assert_eq!(ch.arbiter.poll_timeout(), None);
        }
    }
}
