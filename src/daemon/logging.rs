//! tracing to stderr. Under systemd (JOURNAL_STREAM set) journald adds its own timestamps,
//! so ours are left out; colours only on a terminal.
//!
//! The filter is a [`Targets`] list (`info`, `roipd=debug,warn`): the `target=level` syntax of
//! `RUST_LOG` without the regex engine an `EnvFilter` would add to the binary.

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Install the subscriber once. `RUST_LOG` wins over the config's level.
pub fn init(config_level: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| crate::config::parse_log_filter(&s).ok())
        .or_else(|| crate::config::parse_log_filter(config_level).ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    let result = if std::env::var_os("JOURNAL_STREAM").is_some() {
        registry.with(fmt.without_time()).try_init()
    } else {
        registry.with(fmt).try_init()
    };
    // Already installed (tests running several daemons in one process): keep the first.
    let _ = result;
}
