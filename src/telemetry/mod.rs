//! What fledge tells its operators: logs, its own Prometheus series, and the health endpoints.

pub mod api_requests;
pub mod health;
pub mod http;
pub mod metrics;
pub mod transport;

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

/// Logging for the controller: `level` unless `RUST_LOG` is set; JSON lines when `json`.
pub fn init_controller_logging(level: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
