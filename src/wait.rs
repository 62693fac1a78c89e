//! Waiting on things that may not exist, for drivers' `select!` loops: a core's next deadline
//! (`None`: nothing scheduled) and an optional channel (`None`: that link is not configured).
//! Both wait forever when there is nothing to wait for, so the `select!` arm simply never fires.

use tokio::sync::mpsc;

/// Sleep until `deadline`, or forever without one.
pub async fn until<I: Into<tokio::time::Instant>>(deadline: Option<I>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The next message of an optional channel (`None` once it is closed), or wait forever without one.
pub async fn recv<R: Inbox>(rx: &mut Option<R>) -> Option<R::Item> {
    match rx {
        Some(rx) => rx.next().await,
        None => std::future::pending().await,
    }
}

/// A channel's receiving side (every task channel in the daemon is bounded).
pub trait Inbox {
    type Item;
    fn next(&mut self) -> impl std::future::Future<Output = Option<Self::Item>> + Send;
}

impl<T: Send> Inbox for mpsc::Receiver<T> {
    type Item = T;
    fn next(&mut self) -> impl std::future::Future<Output = Option<T>> + Send {
        self.recv()
    }
}
