use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::configuration::LogFormat;

/// Logs to stderr, as text for people or JSON lines for collectors.
pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, never in files or collectors.
        .with_ansi(std::io::stderr().is_terminal());
    if format == LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}
