//! ICE-TCP (RFC 6544): STUN, DTLS and SRTP on a TCP connection, each packet behind a 2-byte
//! big-endian length (RFC 4571). Passive side (the hub): clients whose UDP is blocked connect to
//! `ice_tcp_listen`; active side (an edge's uplink): a connection to the hub's passive candidate
//! is opened when str0m first sends to it. These are only thin drivers: a task per connection
//! turns the byte stream into frames for the media loop (which hands them to the `Rtc` that
//! `accepts()` them, as it does datagrams) and writes the frames the loop routes to it. str0m
//! does the ICE: TCP candidates pair with TCP candidates.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// Connections at once; more are closed at accept.
pub(crate) const MAX_CONNECTIONS: usize = 128;
/// Connections from one address (an IPv6 /64) at once: a client opens one per hub candidate.
pub(crate) const MAX_PER_ADDR: usize = 8;
/// A connection that carries no frame for this long is closed (ICE consent checks come every
/// few seconds on a live one).
pub(crate) const IDLE: Duration = Duration::from_secs(30);
/// A client sends its first connectivity check as soon as it has connected: a connection
/// silent for this long is not ICE and gives its slot back.
pub(crate) const FIRST_FRAME: Duration = Duration::from_secs(5);
/// Frames queued to one connection; more are dropped, as a full UDP socket would drop them.
const QUEUE: usize = 128;
/// A write that does not finish in this long ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest frame RFC 4571 can carry.
pub(crate) const MAX_FRAME: usize = u16::MAX as usize;

/// What connection tasks tell the media task.
#[derive(Debug)]
pub(crate) enum TcpEvent {
    Open { id: u64, remote: SocketAddr, tx: mpsc::Sender<Vec<u8>> },
    Frame { remote: SocketAddr, local: SocketAddr, data: Vec<u8> },
    Closed { id: u64, remote: SocketAddr },
}

/// Accept connections on `listener` until `cancel`, a task each. `slot` gives a connection from
/// an address its place (held until it closes), or refuses it (too many from there);
/// `first_frame` is [`FIRST_FRAME`] but in tests.
pub(crate) async fn accept<S: Send + 'static>(
    listener: TcpListener,
    events: mpsc::Sender<TcpEvent>,
    tasks: TaskTracker,
    cancel: CancellationToken,
    slot: impl Fn(std::net::IpAddr) -> Option<S>,
    first_frame: Duration,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let next = AtomicU64::new(1);
    loop {
        let (stream, remote) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait a little rather than spin.
                    debug!(error = %e, "ICE-TCP accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(total) = slots.clone().try_acquire_owned() else {
            warn!(%remote, "ICE-TCP: too many connections, closed");
            continue;
        };
        let Some(slot) = slot(remote.ip()) else {
            debug!(%remote, "ICE-TCP: too many connections from this address, closed");
            continue;
        };
        let Ok(local) = stream.local_addr() else { continue };
        let _ = stream.set_nodelay(true);
        let id = next.fetch_add(1, Ordering::Relaxed);
        let (read, write) = stream.into_split();
        let (tx, rx) = mpsc::channel(QUEUE);
        if events.send(TcpEvent::Open { id, remote, tx }).await.is_err() {
            break;
        }
        let events = events.clone();
        let cancel = cancel.clone();
        tasks.spawn(async move {
            let _slots = (total, slot);
            tokio::select! {
                _ = cancel.cancelled() => {}
                r = read_frames(read, remote, local, &events, first_frame) => debug!(%remote, reason = %r, "ICE-TCP connection ended"),
                r = write_frames(write, rx) => debug!(%remote, reason = %r, "ICE-TCP connection ended"),
            }
            let _ = events.send(TcpEvent::Closed { id, remote }).await;
        });
    }
}

/// Read RFC 4571 frames and pass them on, until EOF, an error or [`IDLE`].
async fn read_frames(
    mut read: impl AsyncRead + Unpin,
    remote: SocketAddr,
    local: SocketAddr,
    events: &mpsc::Sender<TcpEvent>,
    first_frame: Duration,
) -> String {
    let mut wait = first_frame;
    loop {
        let frame = match timeout(wait, read_frame(&mut read)).await {
            Err(_) => return "idle".into(),
            Ok(Err(e)) => return e.to_string(),
            Ok(Ok(f)) => f,
        };
        if frame.is_empty() {
            continue; // a zero-length frame carries nothing
        }
        wait = IDLE;
        if events.send(TcpEvent::Frame { remote, local, data: frame }).await.is_err() {
            return "hub stopped".into();
        }
    }
}

/// Write queued frames until the queue closes (the media task forgot the connection) or a
/// write fails or stalls.
async fn write_frames(mut write: impl AsyncWrite + Unpin, mut rx: mpsc::Receiver<Vec<u8>>) -> String {
    while let Some(frame) = rx.recv().await {
        match timeout(WRITE_TIMEOUT, write.write_all(&frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return e.to_string(),
            Err(_) => return "write stalled".into(),
        }
    }
    "closed by the hub".into()
}

/// Active ICE-TCP: connections this side opens, one per remote address, on demand.
pub(crate) struct Active {
    conns: HashMap<SocketAddr, (mpsc::Sender<Vec<u8>>, Instant)>,
    frames_tx: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    frames_rx: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    /// Ends every connection task when this is dropped.
    cancel: CancellationToken,
}

/// A failed connection to an address is not tried again for this long (checks come faster).
const RECONNECT: Duration = Duration::from_secs(1);
/// Remote addresses at once (the hub announces a few TCP candidates).
const MAX_ACTIVE: usize = 8;

impl Active {
    pub fn new() -> Self {
        let (frames_tx, frames_rx) = mpsc::channel(QUEUE);
        Self { conns: HashMap::new(), frames_tx, frames_rx, cancel: CancellationToken::new() }
    }

    /// Send `data` to `to`, connecting first if there is no connection (frames wait in its
    /// queue meanwhile); dropped when the queue is full or a connection failed just now.
    pub fn send(&mut self, to: SocketAddr, data: &[u8]) {
        let Some(frame) = frame(data) else { return };
        let now = Instant::now();
        let live = self.conns.get(&to).is_some_and(|(tx, at)| !tx.is_closed() || now < *at + RECONNECT);
        if !live {
            self.conns.retain(|_, (tx, _)| !tx.is_closed());
            if self.conns.len() >= MAX_ACTIVE {
                return;
            }
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(connect(to, rx, self.frames_tx.clone(), self.cancel.clone()));
            self.conns.insert(to, (tx, now));
        }
        if let Some((tx, _)) = self.conns.get(&to) {
            let _ = tx.try_send(frame);
        }
    }

    /// The next frame from any connection, with the address it came from.
    pub async fn recv(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.frames_rx.recv().await
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn connect(
    to: SocketAddr,
    rx: mpsc::Receiver<Vec<u8>>,
    frames: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    cancel: CancellationToken,
) {
    let stream = tokio::select! {
        _ = cancel.cancelled() => return,
        r = timeout(WRITE_TIMEOUT, TcpStream::connect(to)) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return debug!(%to, error = %e, "ICE-TCP connect"),
            Err(_) => return debug!(%to, "ICE-TCP connect timed out"),
        },
    };
    let _ = stream.set_nodelay(true);
    debug!(%to, "ICE-TCP connected");
    let (mut read, write) = stream.into_split();
    let reader = async {
        loop {
            match timeout(IDLE, read_frame(&mut read)).await {
                Ok(Ok(f)) if f.is_empty() => {}
                Ok(Ok(f)) => {
                    if frames.send((to, f)).await.is_err() {
                        return "closed".to_string();
                    }
                }
                Ok(Err(e)) => return e.to_string(),
                Err(_) => return "idle".to_string(),
            }
        }
    };
    tokio::select! {
        _ = cancel.cancelled() => {}
        r = reader => debug!(%to, reason = %r, "ICE-TCP connection ended"),
        r = write_frames(write, rx) => debug!(%to, reason = %r, "ICE-TCP connection ended"),
    }
}

/// One frame: a 2-byte big-endian length, then that many bytes.
pub(crate) async fn read_frame(read: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Vec<u8>> {
    let n = read.read_u16().await? as usize;
    let mut frame = vec![0u8; n];
    read.read_exact(&mut frame).await?;
    Ok(frame)
}

/// `data` behind its length; `None` if it does not fit in one frame.
pub(crate) fn frame(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() > MAX_FRAME {
        return None;
    }
    let n = data.len() as u16;
    let mut out = Vec::with_capacity(data.len() + 2);
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(data);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_across_arbitrary_splits() {
        let (mut a, mut b) = tokio::io::duplex(7); // tiny buffer: frames arrive in pieces
        let sent: Vec<Vec<u8>> = vec![vec![1; 1], vec![], vec![0xAB; 1200], (0..=255u8).collect()];
        let writer = {
            let sent = sent.clone();
            tokio::spawn(async move {
                for s in &sent {
                    a.write_all(&frame(s).unwrap()).await.unwrap();
                }
            })
        };
        for s in &sent {
            assert_eq!(&read_frame(&mut b).await.unwrap(), s);
        }
        writer.await.unwrap();
        assert!(read_frame(&mut b).await.is_err(), "EOF ends the stream");
    }

    #[test]
    fn frame_is_length_prefixed_and_bounded() {
        assert_eq!(frame(&[9, 8, 7]).unwrap(), vec![0, 3, 9, 8, 7]);
        assert_eq!(frame(&vec![0; MAX_FRAME]).unwrap()[..2], [0xFF, 0xFF]);
        assert!(frame(&vec![0; MAX_FRAME + 1]).is_none());
    }

    /// The passive side: frames in and out, a silent connection closed after `first_frame`,
    /// one over the per-address limit closed at once, `Closed` reported for each.
    #[tokio::test]
    async fn passive_connections_carry_frames_and_are_limited() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let (tasks, cancel) = (TaskTracker::new(), CancellationToken::new());
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let slot = {
            let open = open.clone();
            move |_ip| {
                // Two at once from anywhere, for the test.
                (open.fetch_add(1, Ordering::SeqCst) < 2).then_some(())
            }
        };
        tasks.spawn(accept(listener, tx, tasks.clone(), cancel.clone(), slot, Duration::from_millis(300)));

        let mut talker = tokio::net::TcpStream::connect(addr).await.unwrap();
        let TcpEvent::Open { remote, tx: out, .. } = rx.recv().await.unwrap() else { panic!("no Open") };
        talker.write_all(&frame(b"stun").unwrap()).await.unwrap();
        match rx.recv().await.unwrap() {
            TcpEvent::Frame { remote: r, data, local } => {
                assert_eq!((r, data.as_slice(), local), (remote, &b"stun"[..], addr));
            }
            other => panic!("{other:?}"),
        }
        out.send(frame(b"answer").unwrap()).await.unwrap();
        assert_eq!(read_frame(&mut talker).await.unwrap(), b"answer");

        let started = std::time::Instant::now();
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Held: dropping its sender is how the media loop closes a connection.
        let silent_open = rx.recv().await.unwrap();
        assert!(matches!(silent_open, TcpEvent::Open { .. }));
        let refused = std::time::Instant::now();
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(third.read(&mut byte).await.unwrap_or(0), 0, "over the limit: closed");
        assert!(refused.elapsed() < Duration::from_millis(200), "at once, not after first_frame");
        assert_eq!(silent.read(&mut byte).await.unwrap_or(0), 0, "silent: closed");
        let silent_for = started.elapsed();
        assert!(silent_for >= Duration::from_millis(250), "after first_frame, not at once: {silent_for:?}");
        assert!(silent_for < Duration::from_secs(3), "after first_frame, not IDLE: {silent_for:?}");
        assert!(matches!(rx.recv().await.unwrap(), TcpEvent::Closed { .. }));
        // The talker, past its first frame, is still up.
        talker.write_all(&frame(b"again").unwrap()).await.unwrap();
        assert!(matches!(rx.recv().await.unwrap(), TcpEvent::Frame { .. }));
        cancel.cancel();
        tasks.close();
        tasks.wait().await;
    }

    #[tokio::test]
    async fn a_truncated_frame_is_an_error_not_a_short_frame() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 10, 1, 2, 3]).await.unwrap();
        drop(a);
        assert!(read_frame(&mut b).await.is_err());
    }
}
