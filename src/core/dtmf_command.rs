//! DTMF command matcher for one radio port: keypad digits (as the DTMF decoder reports them)
//! and their `Instant`s in, commands out.
//!
//! A command is an optional access PIN, then one of the configured prefixes, then the
//! prefix's argument if it takes one:
//!
//! - `select_channel` (default `*1`): two more digits `nn`, the `nn`-th channel of the port's
//!   list (`01` the first);
//! - `set_channel NAME` (any prefix the config gives it): that channel;
//! - `status` (default `*2`): tell the radio which channel the port is on;
//! - `emergency` (default none; `*9` by convention): an emergency action (not supported by the
//!   daemon yet; it answers so);
//! - `cancel` (default `##`): drop what was entered so far. It needs no PIN, and ends an
//!   entry wherever it appears, so `##` is always a way out of a mistyped PIN.
//!
//! Digits are collected until they make a whole command ([`Outcome::Command`]), can no longer
//! become one ([`Outcome::Rejected`]: a wrong PIN, an unknown prefix, a channel number out of
//! the list), or the inter-digit timeout passes with an incomplete entry
//! ([`Reject::Timeout`]). No configured prefix may be a prefix of another, so a command is
//! complete as soon as its digits are in. A wrong PIN is told only once the entry is as long as
//! the PIN, not at its first wrong digit.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What a prefix does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtmfAction {
    /// Two more digits pick a channel from the port's list.
    SelectChannel,
    /// Move the port to this channel.
    SetChannel(String),
    Status,
    Cancel,
    /// Raise an emergency (not implemented by the daemon yet: answered "not supported").
    Emergency,
}

impl DtmfAction {
    /// `select_channel`, `set_channel NAME`, `status`, `cancel`, `emergency`.
    pub fn parse(text: &str) -> Result<DtmfAction, String> {
        let mut words = text.split_whitespace();
        let action = match (words.next(), words.next(), words.next()) {
            (Some("select_channel"), None, _) => DtmfAction::SelectChannel,
            (Some("set_channel"), Some(name), None) => DtmfAction::SetChannel(name.to_string()),
            (Some("status"), None, _) => DtmfAction::Status,
            (Some("cancel"), None, _) => DtmfAction::Cancel,
            (Some("emergency"), None, _) => DtmfAction::Emergency,
            _ => {
                return Err(format!(
                    "`{text}` is not a DTMF action: use select_channel, set_channel NAME, status, cancel or emergency"
                ))
            }
        };
        Ok(action)
    }
}

/// A command the port should carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtmfCommand {
    SetChannel(String),
    Status,
    Emergency,
}

/// Why an entry was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    WrongPin,
    /// No configured command starts with these digits.
    Unknown,
    /// `select_channel` with a number that is not on the list.
    NoSuchChannel,
    /// The inter-digit timeout passed before the command was complete.
    Timeout,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::WrongPin => "wrong_pin",
            Reject::Unknown => "unknown",
            Reject::NoSuchChannel => "no_such_channel",
            Reject::Timeout => "timeout",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A complete command. `digits` is the entry with the PIN masked (for logs and events).
    Command {
        command: DtmfCommand,
        digits: String,
    },
    Rejected {
        reason: Reject,
        digits: String,
    },
    /// `cancel` was entered: what came before it is dropped.
    Cancelled {
        digits: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct DtmfCommandConfig {
    /// Access PIN (digits 0-9) every command but `cancel` starts with.
    pub pin: Option<String>,
    /// An entry not complete this long after its last digit is dropped.
    pub timeout: Duration,
    /// `select_channel`'s list: `01` is the first.
    pub channels: Vec<String>,
    /// Prefix (digits `0-9 * # A-D`) and what it does.
    pub commands: Vec<(String, DtmfAction)>,
}

impl Default for DtmfCommandConfig {
    fn default() -> Self {
        DtmfCommandConfig {
            pin: None,
            timeout: Duration::from_secs(3),
            channels: Vec::new(),
            commands: default_commands(),
        }
    }
}

/// `*1` select_channel, `*2` status, `##` cancel.
pub fn default_commands() -> Vec<(String, DtmfAction)> {
    vec![("*1".into(), DtmfAction::SelectChannel), ("*2".into(), DtmfAction::Status), ("##".into(), DtmfAction::Cancel)]
}

/// A DTMF keypad digit.
pub fn is_dtmf_digit(c: char) -> bool {
    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D')
}

/// What is wrong with a command table, if anything (the config checker reports it).
pub fn check_commands(commands: &[(String, DtmfAction)]) -> Result<(), String> {
    for (i, (p, _)) in commands.iter().enumerate() {
        if p.is_empty() || p.len() > 8 || !p.chars().all(is_dtmf_digit) {
            return Err(format!("`{p}` is not a DTMF prefix (1-8 of 0-9 * # A-D)"));
        }
        for (q, _) in &commands[i + 1..] {
            if p.starts_with(q.as_str()) || q.starts_with(p.as_str()) {
                return Err(format!("`{p}` and `{q}`: one prefix starts the other, so one could never be entered"));
            }
        }
    }
    Ok(())
}

/// Longest entry kept (a PIN of 8, a prefix of 8, two argument digits and slack).
const MAX_ENTRY: usize = 24;

#[derive(Debug, Clone)]
pub struct DtmfCommands {
    config: DtmfCommandConfig,
    entry: String,
    last: Option<Instant>,
    /// The entry ends in the first digits of `cancel`.
    cancelling: bool,
    out: VecDeque<Outcome>,
}

impl DtmfCommands {
    pub fn new(config: DtmfCommandConfig) -> DtmfCommands {
        DtmfCommands { config, entry: String::new(), last: None, cancelling: false, out: VecDeque::new() }
    }

    pub fn config(&self) -> &DtmfCommandConfig {
        &self.config
    }

    /// A digit was heard at `now`. Anything that is not a keypad digit is ignored.
    pub fn handle_digit(&mut self, now: Instant, digit: char) {
        self.handle_timeout(now);
        let digit = digit.to_ascii_uppercase();
        if !is_dtmf_digit(digit) {
            return;
        }
        self.entry.push(digit);
        self.last = Some(now);
        self.judge();
    }

    /// Ends an entry whose inter-digit timeout passed by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(at) = self.poll_timeout() {
            if now >= at {
                self.reject(Reject::Timeout);
            }
        }
    }

    /// When an incomplete entry times out.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let last = self.last.filter(|_| !self.entry.is_empty())?;
        Some(last.checked_add(self.config.timeout).unwrap_or(last))
    }

    pub fn poll_outcome(&mut self) -> Option<Outcome> {
        self.out.pop_front()
    }

    /// An entry is in progress.
    pub fn pending(&self) -> bool {
        !self.entry.is_empty()
    }

    fn masked(&self) -> String {
        let pin = self.config.pin.as_ref().map_or(0, String::len);
        self.entry.chars().enumerate().map(|(i, c)| if i < pin { 'x' } else { c }).collect()
    }

    fn finish(&mut self, outcome: Outcome) {
        self.entry.clear();
        self.last = None;
        self.cancelling = false;
        self.out.push_back(outcome);
    }

    fn reject(&mut self, reason: Reject) {
        // An entry that may be ending in the first digits of `cancel` gets no verdict yet
        // (the timeout ends it if nothing follows); a timeout or an overlong entry does.
        if self.cancelling && !matches!(reason, Reject::Timeout) && self.entry.len() <= MAX_ENTRY {
            return;
        }
        let digits = self.masked();
        self.finish(Outcome::Rejected { reason, digits });
    }

    fn judge(&mut self) {
        // `cancel` ends any entry, PIN or not.
        let cancel = self.config.commands.iter().find(|(_, a)| *a == DtmfAction::Cancel).map(|(p, _)| p.clone());
        if cancel.as_ref().is_some_and(|p| self.entry.ends_with(p.as_str())) {
            let digits = self.masked();
            self.finish(Outcome::Cancelled { digits });
            return;
        }
        self.cancelling = cancel.is_some_and(|p| (1..p.len()).any(|k| self.entry.ends_with(&p[..k])));
        if self.entry.len() > MAX_ENTRY {
            self.reject(Reject::Unknown);
            return;
        }
        let pin = self.config.pin.clone().unwrap_or_default();
        if self.entry.len() < pin.len() {
            return;
        }
        if !self.entry.starts_with(pin.as_str()) {
            self.reject(Reject::WrongPin);
            return;
        }
        let rest = self.entry[pin.len()..].to_string();
        let mut could_be = false;
        let mut matched = None;
        for (prefix, action) in &self.config.commands {
            if *action == DtmfAction::Cancel {
                could_be |= prefix.starts_with(rest.as_str());
                continue;
            }
            if let Some(arg) = rest.strip_prefix(prefix.as_str()) {
                matched = Some((action.clone(), arg.to_string()));
                break;
            }
            could_be |= prefix.starts_with(rest.as_str());
        }
        let Some((action, arg)) = matched else {
            if !could_be {
                self.reject(Reject::Unknown);
            }
            return;
        };
        let command = match action {
            DtmfAction::SelectChannel => {
                if arg.chars().any(|c| !c.is_ascii_digit()) {
                    self.reject(Reject::Unknown);
                    return;
                }
                if arg.len() < 2 {
                    return;
                }
                let n: usize = arg.parse().unwrap_or(0);
                match n.checked_sub(1).and_then(|i| self.config.channels.get(i)) {
                    Some(c) => DtmfCommand::SetChannel(c.clone()),
                    None => {
                        self.reject(Reject::NoSuchChannel);
                        return;
                    }
                }
            }
            DtmfAction::SetChannel(c) => DtmfCommand::SetChannel(c),
            DtmfAction::Status => DtmfCommand::Status,
            DtmfAction::Emergency => DtmfCommand::Emergency,
            DtmfAction::Cancel => return,
        };
        let digits = self.masked();
        self.finish(Outcome::Command { command, digits });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(pin: Option<&str>) -> DtmfCommands {
        let mut commands = default_commands();
        commands.push(("*9".into(), DtmfAction::Emergency));
        commands.push(("*31".into(), DtmfAction::SetChannel("fire".into())));
        DtmfCommands::new(DtmfCommandConfig {
            pin: pin.map(str::to_string),
            timeout: Duration::from_secs(3),
            channels: vec!["ops".into(), "fire".into(), "ems".into()],
            commands,
        })
    }

    /// Type `digits` 200 ms apart from `t0`; every outcome.
    fn typed(m: &mut DtmfCommands, t0: Instant, digits: &str) -> Vec<Outcome> {
        for (i, d) in digits.chars().enumerate() {
            m.handle_digit(t0 + Duration::from_millis(200 * i as u64), d);
        }
        std::iter::from_fn(|| m.poll_outcome()).collect()
    }

    fn cmd(command: DtmfCommand, digits: &str) -> Outcome {
        Outcome::Command { command, digits: digits.into() }
    }

    fn rej(reason: Reject, digits: &str) -> Outcome {
        Outcome::Rejected { reason, digits: digits.into() }
    }

    #[test]
    fn commands_complete_as_soon_as_their_digits_are_in() {
        let t0 = Instant::now();
        let mut m = matcher(None);
        assert_eq!(typed(&mut m, t0, "*102"), [cmd(DtmfCommand::SetChannel("fire".into()), "*102")]);
        assert_eq!(typed(&mut m, t0, "*2"), [cmd(DtmfCommand::Status, "*2")]);
        assert_eq!(typed(&mut m, t0, "*31"), [cmd(DtmfCommand::SetChannel("fire".into()), "*31")]);
        assert_eq!(typed(&mut m, t0, "*9"), [cmd(DtmfCommand::Emergency, "*9")]);
        assert_eq!(typed(&mut m, t0, "*103"), [cmd(DtmfCommand::SetChannel("ems".into()), "*103")]);
        assert_eq!(typed(&mut m, t0, "*104"), [rej(Reject::NoSuchChannel, "*104")]);
        assert_eq!(typed(&mut m, t0, "*100"), [rej(Reject::NoSuchChannel, "*100")]);
        assert_eq!(typed(&mut m, t0, "*1*"), [rej(Reject::Unknown, "*1*")]);
        assert_eq!(typed(&mut m, t0, "*5"), [rej(Reject::Unknown, "*5")]);
        assert_eq!(typed(&mut m, t0, "5"), [rej(Reject::Unknown, "5")]);
        assert!(!m.pending());
    }

    #[test]
    fn the_pin_comes_first_is_masked_and_a_wrong_one_is_told_at_its_length() {
        let t0 = Instant::now();
        let mut m = matcher(Some("4711"));
        assert_eq!(typed(&mut m, t0, "4711*101"), [cmd(DtmfCommand::SetChannel("ops".into()), "xxxx*101")]);
        assert!(typed(&mut m, t0, "471").is_empty(), "not yet: three digits of four");
        assert_eq!(typed(&mut m, t0 + Duration::from_secs(1), "2"), [rej(Reject::WrongPin, "xxxx")]);
        assert_eq!(typed(&mut m, t0, "1234*101"), [rej(Reject::WrongPin, "xxxx"), rej(Reject::WrongPin, "xxxx")]);
        // Without the PIN a command is not one.
        assert_eq!(typed(&mut m, t0, "*2"), []);
        assert!(m.pending());
        assert_eq!(typed(&mut m, t0, "##"), [Outcome::Cancelled { digits: "xxxx".into() }]);
    }

    #[test]
    fn cancel_needs_no_pin_and_ends_any_entry() {
        let t0 = Instant::now();
        let mut m = matcher(Some("12"));
        assert_eq!(typed(&mut m, t0, "##"), [Outcome::Cancelled { digits: "xx".into() }]);
        assert_eq!(typed(&mut m, t0, "12*1##"), [Outcome::Cancelled { digits: "xx*1##".into() }]);
        assert_eq!(typed(&mut m, t0, "12*2"), [cmd(DtmfCommand::Status, "xx*2")]);
    }

    #[test]
    fn an_incomplete_entry_ends_at_the_inter_digit_timeout() {
        let t0 = Instant::now();
        let mut m = matcher(None);
        m.handle_digit(t0, '*');
        m.handle_digit(t0 + Duration::from_secs(2), '1');
        assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        m.handle_timeout(t0 + Duration::from_millis(4999));
        assert_eq!(m.poll_outcome(), None);
        m.handle_timeout(t0 + Duration::from_secs(5));
        assert_eq!(m.poll_outcome(), Some(rej(Reject::Timeout, "*1")));
        assert_eq!(m.poll_timeout(), None);
        // A digit after the timeout starts afresh (the late `0` is not `*10`).
        m.handle_digit(t0, '*');
        m.handle_digit(t0 + Duration::from_secs(9), '2');
        assert_eq!(m.poll_outcome(), Some(rej(Reject::Timeout, "*")));
        assert_eq!(m.poll_outcome(), Some(rej(Reject::Unknown, "2")));
    }

    #[test]
    fn prefixes_that_start_one_another_or_are_not_digits_are_refused() {
        let a = |p: &str| (p.to_string(), DtmfAction::Status);
        assert!(check_commands(&[a("*1"), a("*2"), a("##")]).is_ok());
        assert!(check_commands(&[a("*1"), a("*12")]).is_err());
        assert!(check_commands(&[a("*1"), a("*1")]).is_err());
        assert!(check_commands(&[a("")]).is_err());
        assert!(check_commands(&[a("*x")]).is_err());
        assert_eq!(DtmfAction::parse("set_channel fire"), Ok(DtmfAction::SetChannel("fire".into())));
        assert!(DtmfAction::parse("set_channel").is_err());
        assert!(DtmfAction::parse("reboot").is_err());
    }

    #[test]
    fn garbage_and_floods_stay_bounded() {
        let t0 = Instant::now();
        let mut m = matcher(Some("1234"));
        for i in 0..10_000u64 {
            m.handle_digit(t0 + Duration::from_millis(i), ['1', '2', '3', '4', 'x', '*', 'D'][(i % 7) as usize]);
            while m.poll_outcome().is_some() {}
            assert!(m.entry.len() <= MAX_ENTRY);
        }
    }
}
