//! Sans-IO cores: plain state machines with no tokio, threads, sockets or clock reads.
//!
//! Each core takes inputs stamped with an [`std::time::Instant`] supplied by its driver, and
//! hands back events/actions plus the next deadline (`poll_timeout`). Drivers sleep until that
//! deadline and call `handle_timeout`. This keeps every timer testable in virtual time:
//! a ten-minute scenario runs in microseconds.
//! `tests/sans_io.rs` checks that nothing in this folder imports I/O crates or reads the clock.

pub mod desk;
pub mod dtmf_command;
pub mod emergency;
pub mod floor;
pub mod jitter;
pub mod keying;
pub mod record;
pub mod restamp;
pub mod routing;
pub mod timers;
