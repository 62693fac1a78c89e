//! One WebSocket session: hello → admission → `Joined` → welcome, then offers, floor messages
//! and keepalives in, router messages out, until the socket closes, goes idle, its media fails
//! or the hub stops. A peer that was reported `Joined` is reported `Left` exactly once.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::SinkExt;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::time::{timeout, Instant};
use tracing::{debug, info, warn, Instrument};

use super::limits::Slot;
use super::media::{MediaCmd, MediaNote};
use super::Shared;
use crate::core::floor::{ParticipantId, ToArbiter, ToParticipant};
use crate::net::peer_queue::{self, End, Limits, PeerRx, PeerTx, Queued};
use crate::net::protocol::{
    self, parse_client, Action, Answer, ChannelInfo, ClientMessage, ErrorCode, FloorEvent, Holder, IceServerInfo,
    Ports, ServerMessage, Welcome, WelcomeMember,
};
use crate::net::{HubEvent, MemberRequest, PeerId, ToPeer};

/// A stuck client (full TCP window) must not hold its session forever.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// str0m answers in microseconds; this only guards against a stopped media task.
const OFFER_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) async fn run(socket: WebSocket, shared: Arc<Shared>, remote: SocketAddr, pending: Slot) {
    let span = tracing::info_span!("hub session", %remote, peer = tracing::field::Empty);
    async move {
        let mut ws = Ws { socket };
        let Some(session) = join(&mut ws, &shared, remote, pending).await else {
            return;
        };
        let peer = session.peer;
        session.serve(&mut ws).await;
        leave(&shared, peer).await;
    }
    .instrument(span)
    .await
}

/// The session's one `Left`: through the media task (so it follows the peer's last media),
/// or directly when that task has stopped.
async fn leave(shared: &Shared, peer: PeerId) {
    if deliver(shared, &shared.media, MediaCmd::Leave { peer }).await.is_err() {
        let _ = deliver(shared, &shared.events, HubEvent::Left { peer }).await;
    }
}

/// [`peer_queue::deliver`] into one of the hub's inboxes, given up when the hub stops (its
/// consumer may be stopping too).
async fn deliver<T: Queued>(shared: &Shared, inbox: &mpsc::Sender<T>, msg: T) -> Result<(), End> {
    tokio::select! {
        biased;
        r = peer_queue::deliver(inbox, msg) => r,
        _ = shared.cancel.cancelled() => Err(End::Closed),
    }
}

struct Ws {
    socket: WebSocket,
}

enum Incoming {
    Text(String),
    Binary,
    /// Ping/pong frames: the peer is alive.
    Alive,
    Closed,
}

impl Ws {
    async fn recv(&mut self) -> Incoming {
        match self.socket.recv().await {
            Some(Ok(Message::Text(t))) => Incoming::Text(t.as_str().to_owned()),
            Some(Ok(Message::Binary(_))) => Incoming::Binary,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Incoming::Alive,
            Some(Ok(Message::Close(_))) => {
                // The WebSocket queued the answering close frame; send it, or the client sees
                // the connection drop (1006) instead of a clean close.
                let _ = timeout(SEND_TIMEOUT, self.socket.flush()).await;
                Incoming::Closed
            }
            // The only way to tell a size limit from other errors: axum hides the error type.
            Some(Err(e)) if e.to_string().contains("Message too long") => {
                warn!(error = %e, "frame over the size limit: closing with 1009");
                self.close(1009, "message too big").await;
                Incoming::Closed
            }
            Some(Err(_)) | None => Incoming::Closed,
        }
    }

    async fn send(&mut self, msg: &ServerMessage) -> bool {
        matches!(timeout(SEND_TIMEOUT, self.socket.send(Message::Text(msg.to_json().into()))).await, Ok(Ok(())))
    }

    async fn close(&mut self, code: u16, reason: &str) {
        // Close reasons are limited to 123 bytes.
        let mut end = reason.len().min(120);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let frame = CloseFrame { code, reason: reason[..end].into() };
        let _ = timeout(SEND_TIMEOUT, self.socket.send(Message::Close(Some(frame)))).await;
    }

    /// An `error` message, then the close code that goes with it.
    async fn fail(&mut self, code: ErrorCode, message: &str) {
        debug!(code = code.as_str(), message, "closing session");
        if self.send(&ServerMessage::error(code, message)).await {
            self.close(code.close_code(), message).await;
        }
    }
}

struct Member {
    id: ParticipantId,
    request: MemberRequest,
}

struct Session {
    shared: Arc<Shared>,
    peer: PeerId,
    /// From hello; names the peer's streams in the metrics.
    name: String,
    members: Vec<Member>,
    channels: Vec<String>,
    /// Every channel the peer's token may join (a `desk` command needs all of the desk's).
    allowed: Vec<String>,
    to_peer: PeerRx<ToPeer>,
    notes_tx: PeerTx<MediaNote>,
    notes: PeerRx<MediaNote>,
    last_rx: Instant,
    _permit: OwnedSemaphorePermit,
}

/// Hello, admission, `Joined` and welcome. `None`: the session is over (and if it was
/// reported `Joined`, it has been reported `Left`).
async fn join(ws: &mut Ws, shared: &Arc<Shared>, remote: SocketAddr, pending: Slot) -> Option<Session> {
    let deadline = Instant::now() + shared.hello_timeout;
    let first = loop {
        let next = tokio::select! {
            _ = shared.cancel.cancelled() => {
                ws.close(1001, "hub stopping").await;
                return None;
            }
            m = tokio::time::timeout_at(deadline, ws.recv()) => m,
        };
        match next {
            Err(_) => {
                ws.fail(ErrorCode::Timeout, "no hello").await;
                return None;
            }
            Ok(Incoming::Alive) => continue,
            Ok(Incoming::Closed) => return None,
            Ok(Incoming::Binary) => {
                ws.fail(ErrorCode::BadRequest, "binary frames are not part of the protocol; expected hello").await;
                return None;
            }
            Ok(Incoming::Text(t)) => break t,
        }
    };
    let hello = match parse_client(&first) {
        Ok(ClientMessage::Hello(h)) => h,
        Ok(_) => {
            ws.fail(ErrorCode::BadRequest, "the first message must be hello").await;
            return None;
        }
        Err(e) => {
            ws.fail(ErrorCode::BadRequest, &e.to_string()).await;
            return None;
        }
    };
    let admitted = match shared.auth.admit(&hello) {
        Ok(a) => a,
        Err((code, message)) => {
            if code == ErrorCode::Unauthorized {
                shared.auth_failures.failed(remote.ip(), std::time::Instant::now());
            }
            info!(code = code.as_str(), name = %hello.name, "peer refused");
            ws.fail(code, &message).await;
            return None;
        }
    };
    // Authenticated: trade the pending slot for a session slot.
    let Ok(permit) = shared.sessions.clone().try_acquire_owned() else {
        info!(name = %hello.name, "peer refused: too many sessions");
        ws.fail(ErrorCode::Unavailable, "too many sessions").await;
        return None;
    };
    drop(pending);

    let peer = shared.next_peer.fetch_add(1, Ordering::Relaxed);
    tracing::Span::current().record("peer", peer);
    let (to_tx, mut to_peer) = peer_queue::channel(Limits::PEER);
    let (reply_tx, reply_rx) = oneshot::channel();
    let joined = HubEvent::Joined {
        peer,
        name: hello.name.clone(),
        members: admitted.members.clone(),
        to_peer: to_tx,
        reply: reply_tx,
    };
    if deliver(shared, &shared.events, joined).await.is_err() {
        ws.fail(ErrorCode::Unavailable, "the hub is stopping").await;
        return None;
    }
    // From here on the router knows the peer: every way out reports `Left`.
    let reply: Result<Vec<ParticipantId>, String> = tokio::select! {
        r = timeout(shared.join_timeout, reply_rx) => match r {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err("the hub is stopping".to_owned()),
            Err(_) => Err("the channel router did not answer".to_owned()),
        },
        _ = shared.cancel.cancelled() => Err("the hub is stopping".to_owned()),
    };
    let n = admitted.members.len();
    let ids = match reply {
        Ok(ids) if ids.len() == n => ids,
        other => {
            let refusal = match other {
                Ok(ids) => format!("router answered {} ids for {n} members", ids.len()),
                Err(reason) => reason,
            };
            info!(%refusal, "join refused");
            ws.fail(ErrorCode::Unavailable, &refusal).await;
            leave(shared, peer).await;
            return None;
        }
    };
    let members: Vec<Member> =
        admitted.members.into_iter().zip(ids).map(|(request, id)| Member { id, request }).collect();
    let mut channels: Vec<String> = Vec::new();
    for m in &members {
        if !channels.contains(&m.request.channel) {
            channels.push(m.request.channel.clone());
        }
    }
    // Messages the router queued while answering (a busy channel's `taken`) tell welcome who
    // talks now; they are still delivered after it.
    let mut pending = VecDeque::new();
    while let Some(Ok(m)) = to_peer.try_recv() {
        pending.push_back(m);
    }
    let welcome = welcome(peer, &members, &admitted.visible, shared, &pending, &admitted.token);
    if !ws.send(&welcome).await {
        leave(shared, peer).await;
        return None;
    }
    info!(name = %hello.name, token = %admitted.token, members = members.len(), "peer joined");
    let (notes_tx, notes) = peer_queue::channel(Limits::PEER);
    let mut session = Session {
        shared: shared.clone(),
        peer,
        name: hello.name.clone(),
        members,
        channels,
        allowed: admitted
            .visible
            .iter()
            .filter_map(|&c| shared.auth.channels().get(c))
            .map(|c| c.name.clone())
            .collect(),
        to_peer,
        notes_tx,
        notes,
        last_rx: Instant::now(),
        _permit: permit,
    };
    for m in pending {
        if !session.router_message(ws, m).await {
            leave(shared, peer).await;
            return None;
        }
    }
    Some(session)
}

fn welcome(
    peer: PeerId,
    members: &[Member],
    visible: &[usize],
    shared: &Shared,
    pending: &VecDeque<ToPeer>,
    token: &str,
) -> ServerMessage {
    let mut holders: HashMap<&str, Option<Holder>> = HashMap::new();
    for m in pending {
        if let ToPeer::Floor { channel, member: None, msg, holder_name } = m {
            match msg {
                ToParticipant::Taken { holder, .. } => {
                    let name = holder_name.clone().unwrap_or_default();
                    holders.insert(channel, Some(Holder { id: holder.0, name }));
                }
                ToParticipant::Idle => {
                    holders.insert(channel, None);
                }
                _ => {}
            }
        }
    }
    let all = shared.auth.channels();
    ServerMessage::Welcome(Welcome {
        peer,
        members: members
            .iter()
            .map(|m| WelcomeMember { key: m.request.key.clone(), channel: m.request.channel.clone(), id: m.id.0 })
            .collect(),
        channels: visible
            .iter()
            .map(|&i| ChannelInfo {
                name: all[i].name.clone(),
                label: all[i].label.clone(),
                holder: holders.get(all[i].name.as_str()).cloned().flatten(),
            })
            .collect(),
        ice_servers: ice_servers(&shared.ice_servers, token, std::time::SystemTime::now()),
    })
}

/// The configured STUN/TURN servers; TURN ones with credentials for the token's name.
fn ice_servers(servers: &[super::IceServer], token: &str, now: std::time::SystemTime) -> Vec<IceServerInfo> {
    servers
        .iter()
        .map(|s| {
            let creds = s.secret.as_ref().map(|secret| super::turn_credentials(secret, token, now, s.ttl));
            IceServerInfo {
                urls: s.urls.clone(),
                username: creds.as_ref().map(|c| c.0.clone()),
                credential: creds.map(|c| c.1),
            }
        })
        .collect()
}

enum Step {
    Stop,
    Ws(Incoming),
    Router(Result<ToPeer, End>),
    Note(Result<MediaNote, End>),
    Idle,
}

impl Session {
    async fn serve(mut self, ws: &mut Ws) {
        let cancel = self.shared.cancel.clone();
        loop {
            let idle_at = self.last_rx + self.shared.idle_timeout;
            let step = tokio::select! {
                _ = cancel.cancelled() => Step::Stop,
                m = ws.recv() => Step::Ws(m),
                m = self.to_peer.recv() => Step::Router(m),
                n = self.notes.recv() => Step::Note(n),
                _ = tokio::time::sleep_until(idle_at) => Step::Idle,
            };
            let go_on = match step {
                Step::Stop => {
                    ws.close(1001, "hub stopping").await;
                    false
                }
                Step::Ws(m) => {
                    self.last_rx = Instant::now();
                    self.incoming(ws, m).await
                }
                Step::Router(Ok(m)) => self.router_message(ws, m).await,
                Step::Router(Err(End::Overflow)) => {
                    self.too_slow(ws).await;
                    false
                }
                Step::Router(Err(End::Closed)) => {
                    ws.fail(ErrorCode::Unavailable, "the channel router stopped").await;
                    false
                }
                Step::Note(Ok(MediaNote::Connected)) => {
                    info!("media connected");
                    true
                }
                Step::Note(Ok(MediaNote::Failed(reason))) => {
                    ws.fail(ErrorCode::MediaFailed, &reason).await;
                    false
                }
                // The session holds a sender itself: the notes never close.
                Step::Note(Err(_)) => true,
                Step::Idle => {
                    let secs = self.shared.idle_timeout.as_secs_f32();
                    ws.fail(ErrorCode::Timeout, &format!("nothing received for {secs} s")).await;
                    false
                }
            };
            if !go_on {
                return;
            }
        }
    }

    /// One frame from the peer; false ends the session. Bad messages get an error and the
    /// session stays up.
    async fn incoming(&mut self, ws: &mut Ws, m: Incoming) -> bool {
        let text = match m {
            Incoming::Closed => return false,
            Incoming::Alive => return true,
            Incoming::Binary => return ws.send(&bad("binary frames are not part of the protocol")).await,
            Incoming::Text(t) => t,
        };
        let reply = match parse_client(&text) {
            Err(e) => bad(e.to_string()),
            Ok(ClientMessage::Ping) => ServerMessage::Pong,
            Ok(ClientMessage::Hello(_)) => bad("already joined"),
            Ok(ClientMessage::Floor(f)) => {
                let Some(m) = self.members.iter().find(|m| m.id.0 == f.id) else {
                    return ws.send(&bad(format!("member {} is not yours", f.id))).await;
                };
                let msg = match f.action {
                    Action::Request => ToArbiter::Request { priority: m.request.priority },
                    Action::Release => ToArbiter::Release,
                };
                // Waits while the router's inbox is full: this client is not read meanwhile.
                let floor = HubEvent::Floor { peer: self.peer, member: m.id, msg };
                let _ = deliver(&self.shared, &self.shared.events, floor).await;
                return true;
            }
            Ok(ClientMessage::Emergency(e)) => {
                // Only for a channel the token allows; a member must be the peer's own, on it.
                if !self.allowed.contains(&e.channel) {
                    let why = format!("channel {} is not allowed for this token", e.channel);
                    return ws.send(&ServerMessage::error(ErrorCode::Forbidden, why)).await;
                }
                let member = match e.id {
                    None => None,
                    Some(id) => match self.members.iter().find(|m| m.id.0 == id && m.request.channel == e.channel) {
                        Some(m) => Some(m.id),
                        None => return ws.send(&bad(format!("member {id} is not yours on {}", e.channel))).await,
                    },
                };
                let raise = e.action == protocol::EmergencyVerb::Raise;
                let name = match member.and_then(|id| self.members.iter().find(|m| m.id == id)) {
                    Some(m) => format!("{}@{}", m.request.key, self.name),
                    None => self.name.clone(),
                };
                info!(channel = %e.channel, raise, %name, "emergency from a peer");
                let event = HubEvent::Emergency { peer: self.peer, name, channel: e.channel, member, raise };
                let _ = deliver(&self.shared, &self.shared.events, event).await;
                return true;
            }
            Ok(ClientMessage::Desk(d)) => match self.desk(d.port.clone(), d.action).await {
                Ok(()) => ServerMessage::Desk(protocol::DeskDone { port: d.port }),
                Err(e) => bad(e),
            },
            Ok(ClientMessage::Offer(offer)) => {
                let joined: Vec<&str> = self.channels.iter().map(String::as_str).collect();
                match protocol::validate_offer(&offer, &joined) {
                    Err(e) => bad(e.to_string()),
                    Ok(mids) => match self.offer(offer.sdp, mids).await {
                        Ok(sdp) => ServerMessage::Answer(Answer { sdp }),
                        Err(e) => bad(e),
                    },
                }
            }
        };
        ws.send(&reply).await
    }

    /// A console's control of the box's desk port, answered by the desk.
    async fn desk(&self, port: String, action: serde_json::Value) -> Result<(), String> {
        let desks = self.shared.desk.as_ref().ok_or("this box has no desk port")?;
        let (reply, answer) = oneshot::channel();
        let request = super::DeskRequest { port, action, allowed: self.allowed.clone(), reply };
        deliver(&self.shared, desks, request).await.map_err(|_| "the desk is stopped".to_owned())?;
        match timeout(OFFER_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            _ => Err("the desk did not answer".to_owned()),
        }
    }

    async fn offer(&self, sdp: String, mids: Vec<(String, String)>) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        let cmd = MediaCmd::Offer {
            peer: self.peer,
            name: self.name.clone(),
            sdp,
            mids,
            notes: self.notes_tx.clone(),
            reply,
        };
        deliver(&self.shared, &self.shared.media, cmd).await.map_err(|_| "media is stopped".to_owned())?;
        match timeout(OFFER_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            _ => Err("media did not answer".to_owned()),
        }
    }

    /// One message from the router; false ends the session.
    async fn router_message(&mut self, ws: &mut Ws, m: ToPeer) -> bool {
        let msg = match m {
            ToPeer::Media { channel, packet } => {
                let write = MediaCmd::Write { peer: self.peer, channel, packet };
                let _ = deliver(&self.shared, &self.shared.media, write).await;
                return true;
            }
            ToPeer::Floor { channel, member, msg, holder_name } => {
                ServerMessage::Floor(FloorEvent::from_router(&channel, member, &msg, holder_name.as_deref()))
            }
            ToPeer::Roster(roster) => ServerMessage::Roster(Arc::unwrap_or_clone(roster)),
            ToPeer::RosterDelta(delta) => ServerMessage::RosterDelta(Arc::unwrap_or_clone(delta)),
            ToPeer::Ports { ports } => ServerMessage::Ports(Ports { ports }),
            ToPeer::Desk(state) => ServerMessage::DeskState(state),
            ToPeer::Air(air) => ServerMessage::Air(air),
            ToPeer::Emergency(e) if self.allowed.contains(&e.channel) => ServerMessage::Emergency(e),
            ToPeer::Emergency(_) => return true,
        };
        // A peer that stops reading blocks this send (up to SEND_TIMEOUT) while its queue
        // fills: once the queue overflows there is no point waiting.
        tokio::select! {
            sent = ws.send(&msg) => sent,
            _ = self.to_peer.overflowed() => {
                self.too_slow(ws).await;
                false
            }
        }
    }

    /// The peer does not read what the hub sends fast enough: its queue overflowed and was
    /// dropped. It is disconnected (and reconnects, getting the whole state again).
    async fn too_slow(&self, ws: &mut Ws) {
        warn!(name = %self.name, "peer too slow to read its messages: disconnected");
        ws.close(ErrorCode::TooSlow.close_code(), "too slow: too many messages waiting").await;
    }
}

fn bad(message: impl Into<String>) -> ServerMessage {
    ServerMessage::error(ErrorCode::BadRequest, message)
}
