//! Logging set-up shared by every command.

use tracing_subscriber::EnvFilter;

/// Installs a `tracing` subscriber writing to stderr; `RUST_LOG` overrides the default level `info`.
pub fn init_logging() {
    init_logging_at("info");
}

/// Like [`init_logging`] with another default level (tests keep quiet unless asked).
pub fn init_logging_at(default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // A second call (tests, embedding) keeps the first subscriber instead of failing.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
