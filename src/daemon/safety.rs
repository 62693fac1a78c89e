//! The radio is never left keyed: every PTT output is registered here as soon as it is opened,
//! and released on every exit path. A panic anywhere (any thread, any task) trips the registry
//! from the panic hook, before unwinding or aborting, so even `panic = "abort"` builds unkey.
//! Once tripped, [`PttLine::set`] refuses to key again for the rest of the process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};

use tracing::{error, info};

use crate::gpio::{GpioError, LogicalOutput};

static PTTS: Mutex<Vec<LogicalOutput>> = Mutex::new(Vec::new());
static TRIPPED: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// A PTT output that the safety registry knows about.
#[derive(Clone)]
pub struct PttLine {
    out: LogicalOutput,
}

impl PttLine {
    /// Register an (already unkeyed) output as a PTT.
    pub fn register(out: LogicalOutput) -> Self {
        lock_ptts().push(out.clone());
        Self { out }
    }

    pub fn name(&self) -> &str {
        self.out.name()
    }

    /// Key or unkey. Keying is refused once the process is shutting down or has panicked.
    pub fn set(&self, keyed: bool) -> Result<(), GpioError> {
        if keyed && tripped() {
            return self.out.set(false);
        }
        self.out.set(keyed)
    }
}

fn lock_ptts() -> std::sync::MutexGuard<'static, Vec<LogicalOutput>> {
    PTTS.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn tripped() -> bool {
    TRIPPED.load(Ordering::SeqCst)
}

/// Unkey every registered PTT and refuse keying from now on. Safe to call repeatedly and
/// from a panic hook: it never blocks for long and never panics.
pub fn release_all(why: &str) -> usize {
    TRIPPED.store(true, Ordering::SeqCst);
    let ptts: Vec<LogicalOutput> = match PTTS.try_lock() {
        Ok(g) => g.clone(),
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().clone(),
        // Held by a thread that is registering a PTT right now; wait briefly for it.
        Err(std::sync::TryLockError::WouldBlock) => lock_ptts().clone(),
    };
    let mut released = 0;
    for ptt in &ptts {
        match ptt.force_off() {
            Ok(()) => released += 1,
            Err(e) => error!(line = ptt.name(), error = %e, "could not release PTT"),
        }
    }
    if !ptts.is_empty() {
        info!(released, total = ptts.len(), reason = why, "PTT outputs released");
    }
    released
}

/// Install the panic hook (once per process). It releases every PTT, then runs the default
/// hook so the panic message still reaches the log.
pub fn install_panic_hook() {
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            release_all("panic");
            default(info);
        }));
    });
}

/// After an orderly restart (config reload): every PTT was released and its line closed; the
/// next run registers its own. Never called after a panic or fatal error.
pub fn rearm() {
    lock_ptts().clear();
    TRIPPED.store(false, Ordering::SeqCst);
}
