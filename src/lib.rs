//! roipd: a radio-over-IP gateway daemon.
//!
//! The crate is split the way the data flows:
//! - [`core`]: sans-IO state machines (keying, and later floor, jitter, mixer, routing).
//!   They take inputs stamped with an `Instant` and hand back actions and the next deadline;
//!   they never read the clock, spawn threads or touch I/O.
//! - drivers: [`gpio`] (radio and desk lines behind embedded-hal traits), later audio, rtc,
//!   uplink and fleet. They are the only code that talks to hardware, sockets or the clock.
//! - [`daemon`]: builds ports from the [`config`], runs the drivers around the cores and owns
//!   shutdown, including the rule that every PTT output is released on every exit path.
pub mod audio;
pub mod bench;
pub mod cli;
pub mod codec;
pub mod config;
pub mod core;
pub mod daemon;
pub mod demo;
pub mod devices;
pub mod dsp;
pub mod fleet;
pub mod gpio;
pub mod heap;
pub mod net;
pub mod pipeline;
pub mod record;
pub mod wait;
