//! Our requests to Janus, matched to their replies by transaction.

use std::time::Instant;

use super::{Ch, Role};
use crate::net::janus::protocol::StreamRef;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Req {
    CreateSession,
    Attach(Ch, Role),
    Keepalive,
    Exists(Ch),
    CreateRoom(Ch),
    /// `edit` changing nothing: with our secret (`true`) or a wrong one.
    CheckSecret(Ch, bool),
    /// `join` without the PIN, which must be refused.
    ProbePin(Ch),
    Join(Ch),
    Publish(Ch),
    ConfigureSend(Ch, bool),
    Subscribe(Ch, Vec<StreamRef>),
    Update(Ch, Vec<StreamRef>),
    Start(Ch),
    ConfigureReceive(Ch, Vec<(String, bool)>),
    Moderate {
        ch: Ch,
        feed: u64,
        mute: bool,
    },
    Destroy,
}

impl Req {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Req::CreateSession => "create",
            Req::Attach(..) => "attach",
            Req::Keepalive => "keepalive",
            Req::Exists(_) => "exists",
            Req::CreateRoom(_) => "create room",
            Req::CheckSecret(..) => "edit",
            Req::ProbePin(_) => "join without PIN",
            Req::Join(_) => "join",
            Req::Publish(_) => "publish",
            Req::ConfigureSend(..) => "configure",
            Req::Subscribe(..) => "subscribe",
            Req::Update(..) => "update",
            Req::Start(_) => "start",
            Req::ConfigureReceive(..) => "configure subscription",
            Req::Moderate { .. } => "moderate",
            Req::Destroy => "destroy",
        }
    }

    /// The channel a request is about, if any.
    pub(super) fn channel(&self) -> Option<Ch> {
        match self {
            Req::Attach(ch, _)
            | Req::Exists(ch)
            | Req::CreateRoom(ch)
            | Req::CheckSecret(ch, _)
            | Req::ProbePin(ch)
            | Req::Join(ch)
            | Req::Publish(ch)
            | Req::ConfigureSend(ch, _)
            | Req::Subscribe(ch, _)
            | Req::Update(ch, _)
            | Req::Start(ch)
            | Req::ConfigureReceive(ch, _)
            | Req::Moderate { ch, .. } => Some(*ch),
            Req::CreateSession | Req::Keepalive | Req::Destroy => None,
        }
    }
}

#[derive(Debug)]
pub(super) struct Pending {
    pub(super) req: Req,
    pub(super) deadline: Instant,
}
