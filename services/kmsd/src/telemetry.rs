//! Structured logging setup (tracing): text or JSON lines on stderr, filter from the
//! config. Lines are written by a background thread so a slow log sink never stalls the
//! request path.

use crate::config::LogFormat;
use std::io::IsTerminal;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Keep the returned guard alive until exit: dropping it
/// flushes the remaining lines. Later calls (tests) install nothing.
pub fn init(format: LogFormat, level: &str) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match format {
        LogFormat::Text => builder.try_init().is_ok(),
        LogFormat::Json => builder.json().flatten_event(true).try_init().is_ok(),
    };
    installed.then_some(guard)
}
