//! The drivers' one clock. Reading tokio's clock (not std's) lets driver tests pause and
//! advance time with `tokio::time::pause()`; cores get the value as a plain `Instant`.

pub fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}
