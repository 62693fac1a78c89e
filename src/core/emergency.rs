//! Emergency alerts, one state per channel. Sans-IO: every input carries `now`, decisions come
//! out of [`Board::poll_output`].
//!
//! One action path serves every source: a radio's emergency input (GPIO line), a DTMF
//! command, a console's button, the fleet's `emergency` command, an edge box's radio (through
//! the hub). Raising an emergency on an idle channel
//! - alerts everyone on the channel ([`Output::Raised`]: banner and tone on every console and
//!   desk, the MQTT event and retained state), until someone acknowledges it;
//! - gives its caller, if it has one (the radio port or console member that raised it), the
//!   emergency floor priority ([`Output::Caller`]), above every configured priority, until it
//!   is acknowledged.
//!
//! A second raise on a channel already in emergency changes nothing (the first source keeps
//! it; the answer says it was already active). Acknowledging clears the alert everywhere
//! ([`Output::Cleared`]) and takes the caller's emergency priority back; acknowledging a
//! channel that is not in emergency is refused and changes nothing.
//!
//! On a box whose channels are hosted on an uplink hub the hub decides: the box mirrors what
//! the hub says ([`Board::mirror`]) and passes its own raises and acks on.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::floor::ParticipantId;

/// Index of a channel in the router's channel list.
pub type ChannelId = usize;

/// Where an emergency came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A radio port's emergency input line.
    Radio,
    /// A DTMF command heard on a radio port.
    Dtmf,
    /// A console's emergency button (hub signaling).
    Console,
    /// A desk port's button.
    Desk,
    /// The fleet's `emergency` command (MQTT).
    Fleet,
    /// The uplink hub (an edge's mirror of the hub's state).
    Hub,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Radio => "radio",
            SourceKind::Dtmf => "dtmf",
            SourceKind::Console => "console",
            SourceKind::Desk => "desk",
            SourceKind::Fleet => "fleet",
            SourceKind::Hub => "hub",
        }
    }
}

/// The floor participant that gets the emergency priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A local port (a radio, or a desk), by port index.
    Port(usize),
    /// A remote member (a console's or an edge's member on a hosted channel), by its id.
    Member(ParticipantId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub kind: SourceKind,
    /// For people: `radio1`, `radio1@edge-hilltop`, `console@dispatch`, `fleet`.
    pub name: String,
    /// Who gets the emergency floor priority (none: an alert only, e.g. a fleet command that
    /// names a channel).
    pub caller: Option<Caller>,
}

/// What the drivers must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Alert on: banner and tone on every console and desk of the channel, MQTT event and
    /// retained state.
    Raised { channel: ChannelId, source: Source },
    /// Alert off everywhere; `lasted`: from raise to acknowledgement.
    Cleared { channel: ChannelId, source: Source, by: String, lasted: Duration },
    /// Give `caller` the emergency floor priority on `channel` (Some), or take it back (None).
    Caller { channel: ChannelId, caller: Option<Caller> },
}

/// Why a request changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no such channel")]
    UnknownChannel,
    #[error("there is no active emergency on this channel")]
    NotActive,
}

/// The answer to a raise that was not refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raise {
    /// The channel was idle: the alert is on.
    Raised,
    /// An emergency was already active there: nothing changed.
    AlreadyActive,
}

#[derive(Debug, Clone)]
struct Active {
    source: Source,
    since: Instant,
}

/// The emergency state of every channel of a box.
#[derive(Debug, Clone)]
pub struct Board {
    channels: Vec<Option<Active>>,
    out: VecDeque<Output>,
}

impl Board {
    pub fn new(channels: usize) -> Self {
        Self { channels: vec![None; channels], out: VecDeque::new() }
    }

    /// Raise an emergency on `channel`.
    pub fn raise(&mut self, now: Instant, channel: ChannelId, source: Source) -> Result<Raise, Refused> {
        let slot = self.channels.get_mut(channel).ok_or(Refused::UnknownChannel)?;
        if slot.is_some() {
            return Ok(Raise::AlreadyActive);
        }
        let caller = source.caller;
        *slot = Some(Active { source: source.clone(), since: now });
        if caller.is_some() {
            self.out.push_back(Output::Caller { channel, caller });
        }
        self.out.push_back(Output::Raised { channel, source });
        Ok(Raise::Raised)
    }

    /// Acknowledge the emergency on `channel` (`by`: who, for people).
    pub fn ack(&mut self, now: Instant, channel: ChannelId, by: &str) -> Result<(), Refused> {
        let slot = self.channels.get_mut(channel).ok_or(Refused::UnknownChannel)?;
        let active = slot.take().ok_or(Refused::NotActive)?;
        if active.source.caller.is_some() {
            self.out.push_back(Output::Caller { channel, caller: None });
        }
        let lasted = now.saturating_duration_since(active.since);
        self.out.push_back(Output::Cleared { channel, source: active.source, by: by.to_string(), lasted });
        Ok(())
    }

    /// An edge's copy of the hub's state of `channel` (`Some(source)`: active). Callers are
    /// the hub's business: the mirror never outputs [`Output::Caller`].
    pub fn mirror(&mut self, now: Instant, channel: ChannelId, state: Option<Source>) {
        let Some(slot) = self.channels.get_mut(channel) else { return };
        match state {
            Some(mut source) => {
                source.caller = None;
                if slot.as_ref().is_some_and(|a| a.source == source) {
                    return;
                }
                *slot = Some(Active { source: source.clone(), since: now });
                self.out.push_back(Output::Raised { channel, source });
            }
            None => {
                if let Some(active) = slot.take() {
                    let lasted = now.saturating_duration_since(active.since);
                    self.out.push_back(Output::Cleared { channel, source: active.source, by: String::new(), lasted });
                }
            }
        }
    }

    /// A port left its channel or the box forgets its remote members (the uplink went down, a
    /// peer left): a caller that is gone keeps no priority, but the alert stays until someone
    /// acknowledges it.
    pub fn forget_caller(&mut self, caller: Caller) {
        for (channel, slot) in self.channels.iter_mut().enumerate() {
            if let Some(a) = slot.as_mut().filter(|a| a.source.caller == Some(caller)) {
                a.source.caller = None;
                self.out.push_back(Output::Caller { channel, caller: None });
            }
        }
    }

    /// Forget every mirrored alert (an edge whose uplink went down: the hub tells it again).
    pub fn clear_all_mirrored(&mut self, now: Instant) {
        for channel in 0..self.channels.len() {
            self.mirror(now, channel, None);
        }
    }

    /// The source of the emergency active on `channel`, if any.
    pub fn active(&self, channel: ChannelId) -> Option<&Source> {
        self.channels.get(channel)?.as_ref().map(|a| &a.source)
    }

    /// Every channel in emergency, with its source.
    pub fn all_active(&self) -> impl Iterator<Item = (ChannelId, &Source)> + '_ {
        self.channels.iter().enumerate().filter_map(|(c, a)| a.as_ref().map(|a| (c, &a.source)))
    }

    /// Next decision to carry out; drain after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn radio(port: usize) -> Source {
        Source { kind: SourceKind::Radio, name: format!("radio{port}"), caller: Some(Caller::Port(port)) }
    }

    fn drain(b: &mut Board) -> Vec<Output> {
        std::iter::from_fn(|| b.poll_output()).collect()
    }

    #[test]
    fn a_raise_alerts_and_gives_its_caller_the_floor_priority_until_acknowledged() {
        let t = Instant::now();
        let mut b = Board::new(2);
        assert_eq!(b.raise(t, 1, radio(3)), Ok(Raise::Raised));
        assert_eq!(
            drain(&mut b),
            [
                Output::Caller { channel: 1, caller: Some(Caller::Port(3)) },
                Output::Raised { channel: 1, source: radio(3) }
            ]
        );
        assert_eq!(b.active(1), Some(&radio(3)));
        assert_eq!(b.active(0), None);
        b.ack(t + Duration::from_secs(7), 1, "console@dispatch").unwrap();
        assert_eq!(
            drain(&mut b),
            [
                Output::Caller { channel: 1, caller: None },
                Output::Cleared {
                    channel: 1,
                    source: radio(3),
                    by: "console@dispatch".into(),
                    lasted: Duration::from_secs(7)
                }
            ]
        );
        assert_eq!(b.active(1), None);
    }

    #[test]
    fn a_second_raise_changes_nothing_and_the_first_caller_keeps_it() {
        let t = Instant::now();
        let mut b = Board::new(1);
        b.raise(t, 0, radio(0)).unwrap();
        drain(&mut b);
        assert_eq!(b.raise(t, 0, radio(1)), Ok(Raise::AlreadyActive));
        assert!(drain(&mut b).is_empty());
        assert_eq!(b.active(0), Some(&radio(0)));
    }

    #[test]
    fn an_alert_without_a_caller_moves_no_floor() {
        let t = Instant::now();
        let mut b = Board::new(1);
        let fleet = Source { kind: SourceKind::Fleet, name: "fleet".into(), caller: None };
        b.raise(t, 0, fleet.clone()).unwrap();
        assert_eq!(drain(&mut b), [Output::Raised { channel: 0, source: fleet.clone() }]);
        b.ack(t, 0, "fleet").unwrap();
        assert!(matches!(drain(&mut b)[..], [Output::Cleared { .. }]));
    }

    #[test]
    fn refusals_change_nothing() {
        let t = Instant::now();
        let mut b = Board::new(1);
        assert_eq!(b.ack(t, 0, "x"), Err(Refused::NotActive));
        assert_eq!(b.ack(t, 5, "x"), Err(Refused::UnknownChannel));
        assert_eq!(b.raise(t, 5, radio(0)), Err(Refused::UnknownChannel));
        assert!(drain(&mut b).is_empty());
        b.raise(t, 0, radio(0)).unwrap();
        b.ack(t, 0, "x").unwrap();
        drain(&mut b);
        assert_eq!(b.ack(t, 0, "x"), Err(Refused::NotActive), "a second ack");
        assert!(drain(&mut b).is_empty());
    }

    #[test]
    fn a_caller_that_leaves_loses_the_priority_but_the_alert_stays() {
        let t = Instant::now();
        let mut b = Board::new(2);
        let console = Source {
            kind: SourceKind::Console,
            name: "console@d".into(),
            caller: Some(Caller::Member(ParticipantId(9))),
        };
        b.raise(t, 1, console).unwrap();
        drain(&mut b);
        b.forget_caller(Caller::Member(ParticipantId(9)));
        assert_eq!(drain(&mut b), [Output::Caller { channel: 1, caller: None }]);
        assert!(b.active(1).is_some());
        b.forget_caller(Caller::Member(ParticipantId(9)));
        assert!(drain(&mut b).is_empty(), "once");
        b.ack(t, 1, "x").unwrap();
        assert!(matches!(drain(&mut b)[..], [Output::Cleared { .. }]), "no caller left to take back");
    }

    #[test]
    fn a_mirror_follows_the_hub_without_callers_and_repeats_nothing() {
        let t = Instant::now();
        let mut b = Board::new(1);
        let hub = Source { kind: SourceKind::Radio, name: "radio1@edge".into(), caller: Some(Caller::Port(0)) };
        b.mirror(t, 0, Some(hub.clone()));
        let plain = Source { caller: None, ..hub.clone() };
        assert_eq!(drain(&mut b), [Output::Raised { channel: 0, source: plain.clone() }]);
        b.mirror(t, 0, Some(hub));
        assert!(drain(&mut b).is_empty(), "the same state again");
        b.clear_all_mirrored(t);
        assert!(matches!(&drain(&mut b)[..], [Output::Cleared { source, .. }] if *source == plain));
        b.clear_all_mirrored(t);
        assert!(drain(&mut b).is_empty());
    }
}
