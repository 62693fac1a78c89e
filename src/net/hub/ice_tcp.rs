//! ICE-TCP, passive side (RFC 6544): clients whose UDP is blocked connect to the hub's
//! `ice_tcp_listen` port, and STUN, DTLS and SRTP then travel on that connection, each packet
//! behind a 2-byte big-endian length (RFC 4571). This is only the thin driver: a task per
//! connection turns the byte stream into frames for the media task (which hands them to the
//! `Rtc` that `accepts()` them, as it does datagrams) and writes the frames the media task
//! routes to it. str0m does the ICE: its passive TCP host candidates pair with the clients'
//! active ones.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// Connections at once; more are closed at accept.
pub(crate) const MAX_CONNECTIONS: usize = 128;
/// A connection that carries no frame for this long is closed (ICE consent checks come every
/// few seconds on a live one).
pub(crate) const IDLE: Duration = Duration::from_secs(30);
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

/// Accept connections on `listener` until `cancel`, a task each.
pub(crate) async fn accept(
    listener: TcpListener,
    events: mpsc::Sender<TcpEvent>,
    tasks: TaskTracker,
    cancel: CancellationToken,
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(%remote, "ICE-TCP: too many connections, closed");
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
            let _slot = slot;
            tokio::select! {
                _ = cancel.cancelled() => {}
                r = read_frames(read, remote, local, &events) => debug!(%remote, reason = %r, "ICE-TCP connection ended"),
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
) -> String {
    loop {
        let frame = match timeout(IDLE, read_frame(&mut read)).await {
            Err(_) => return "idle".into(),
            Ok(Err(e)) => return e.to_string(),
            Ok(Ok(f)) => f,
        };
        if frame.is_empty() {
            continue; // a zero-length frame carries nothing
        }
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

    #[tokio::test]
    async fn a_truncated_frame_is_an_error_not_a_short_frame() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 10, 1, 2, 3]).await.unwrap();
        drop(a);
        assert!(read_frame(&mut b).await.is_err());
    }
}
