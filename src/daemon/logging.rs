//! tracing to stderr. Under systemd (JOURNAL_STREAM set) journald adds its own timestamps,
//! so ours are left out; colours only on a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Install the subscriber once. `RUST_LOG` wins over the config's level.
pub fn init(config_level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(config_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let result = if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
    // Already installed (tests running several daemons in one process): keep the first.
    let _ = result;
}
