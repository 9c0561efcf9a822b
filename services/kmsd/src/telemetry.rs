//! Logging and trace export setup (tracing): text or JSON lines on stderr, filtered by the
//! config's log level; optionally spans exported over OTLP/gRPC (OpenTelemetry).
//!
//! The log level is a level for our own crates ([`OWN_CRATES`]); every library (openraft,
//! tonic, h2, hyper, ...) stays at WARN unless the setting is a full filter directive
//! ([`log_filter`]). Repeated lines are rate-limited ([`crate::log_limit`]). Text lines
//! escape control characters in every field value and message ([`EscapedFields`]), so no
//! value a client sent can start a line of its own or reach the terminal as an escape
//! sequence; JSON lines are escaped by serde.
//!
//! Log lines are written by a background thread so a slow log sink never stalls the
//! request path. Spans meant for export use the target [`TRACE_TARGET`] at TRACE level:
//! the log layer's filter ignores them, only the OpenTelemetry layer (installed when
//! `otlp_endpoint` is set) records them — with tracing off they cost a disabled callsite.

use crate::config::LogFormat;
use crate::log_limit::{RepeatLimit, Repeated, Throttle};
pub use kms_cluster::trace_ctx::TRACE_TARGET;
use kms_protocol::text::Escaped;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Errors setting up trace export.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (bad endpoint).
    #[error("cannot set up OTLP trace export to {endpoint}: {message}")]
    Exporter {
        /// Endpoint.
        endpoint: String,
        /// Cause.
        message: String,
    },
}

/// Trace export settings.
#[derive(Debug, Clone)]
pub struct TraceExport {
    /// OTLP/gRPC endpoint (`http://host:4317`).
    pub endpoint: String,
    /// Fraction of root spans sampled (parent-based).
    pub sample_ratio: f64,
    /// `service.instance.id` resource attribute (the node id).
    pub instance: String,
}

/// Keeps the log writer and the span exporter alive; [`Telemetry::shutdown`] flushes both.
#[derive(Default)]
pub struct Telemetry {
    _log: Option<WorkerGuard>,
    traces: Option<SdkTracerProvider>,
    set_log_level: Option<crate::reload::SetLogLevel>,
    repeated: Option<Repeated>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("traces", &self.traces.is_some())
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Changes the log filter at runtime (None when this call installed nothing).
    pub fn log_level_switch(&self) -> Option<crate::reload::SetLogLevel> {
        self.set_log_level.clone()
    }

    /// Writes the summaries of repeated lines still pending, exports the spans still
    /// buffered and stops the exporter. The flush blocks, so it runs off the runtime's
    /// worker threads (the exporter's connection needs them).
    pub async fn shutdown(&mut self) {
        if let Some(r) = self.repeated.take() {
            r.flush();
        }
        if let Some(p) = self.traces.take() {
            let flushed = tokio::task::spawn_blocking(move || p.shutdown()).await;
            if let Ok(Err(e)) = flushed {
                eprintln!("kmsd: flushing traces: {e}");
            }
        }
    }
}

fn tracer_provider(t: &TraceExport) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(t.endpoint.clone())
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| TelemetryError::Exporter {
            endpoint: t.endpoint.clone(),
            message: e.to_string(),
        })?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_secs(1))
                .with_max_queue_size(8192)
                .build(),
        )
        .build();
    let resource = Resource::builder()
        .with_service_name("kmsd")
        .with_attribute(KeyValue::new("service.instance.id", t.instance.clone()))
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            t.sample_ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// Installs the global subscriber (log lines, and span export when `traces` is set). Must
/// run inside the tokio runtime (the OTLP exporter uses it). A second call (tests)
/// installs nothing and returns an empty [`Telemetry`].
pub fn init(
    format: LogFormat,
    level: &str,
    repeats: RepeatLimit,
    traces: Option<&TraceExport>,
) -> Result<Telemetry, TelemetryError> {
    let filter = log_filter(level).unwrap_or_else(|_| log_filter("info").expect("valid"));
    let (filter, filter_handle) = tracing_subscriber::reload::Layer::new(filter);
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
    let ansi = std::io::stderr().is_terminal();
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .fmt_fields(EscapedFields)
            .with_writer(writer)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(writer)
            .boxed(),
    };
    let fmt = Throttle::new(fmt, repeats);
    let repeated = fmt.repeated();
    let fmt = fmt.with_filter(filter);
    let provider = traces.map(tracer_provider).transpose()?;
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("kmsd"))
            .with_filter(Targets::new().with_target(TRACE_TARGET, LevelFilter::TRACE))
    });
    let installed = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .is_ok();
    if !installed {
        return Ok(Telemetry::default());
    }
    if provider.is_some() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
    }
    let set_log_level: crate::reload::SetLogLevel = std::sync::Arc::new(move |level: &str| {
        let filter = log_filter(level)?;
        filter_handle
            .reload(filter)
            .map_err(|e| format!("cannot change the log filter: {e}"))
    });
    Ok(Telemetry {
        _log: Some(guard),
        traces: provider,
        set_log_level: Some(set_log_level),
        repeated: Some(repeated),
    })
}

/// Our crates' tracing targets: a bare log level applies to these.
pub const OWN_CRATES: [&str; 6] = [
    "kmsd",
    "kmsctl",
    "kms_cluster",
    "kms_state",
    "kms_protocol",
    "kms_api",
];

/// The filter directives for a `log_level` setting. A bare level (`info`, `debug`, ...)
/// sets our crates ([`OWN_CRATES`]) to it and every other target (openraft, tonic, h2,
/// hyper, tower, rustls, kube, hickory, ...) to WARN (or to the level when that is
/// quieter). Anything else (`info,openraft=info`, `kmsd=debug`) is a tracing EnvFilter
/// directive taken as written.
pub fn log_directives(level: &str) -> String {
    let level = level.trim();
    match level.parse::<LevelFilter>() {
        Ok(own) => {
            let others = own.min(LevelFilter::WARN);
            let mut d = others.to_string().to_lowercase();
            for c in OWN_CRATES {
                let _ = write!(d, ",{c}={}", own.to_string().to_lowercase());
            }
            d
        }
        Err(_) => level.to_string(),
    }
}

/// The log filter for a `log_level` setting ([`log_directives`]); Err names what is wrong.
pub fn log_filter(level: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .parse(log_directives(level))
        .map_err(|e| format!("{level:?}: {e}"))
}

/// Text-log field formatter: like the default one (`message`, then `name=value` pairs),
/// with every value and the message passed through [`kms_protocol::text::escape`], so no
/// field (a client's machine name, an error text, a span field) can contain a raw
/// newline, ESC, BEL or bidi control, whether the call site remembered to escape it or not.
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> std::fmt::Result {
        let mut v = EscapingVisitor {
            writer,
            first: true,
            scratch: String::new(),
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct EscapingVisitor<'w> {
    writer: Writer<'w>,
    first: bool,
    scratch: String,
    result: std::fmt::Result,
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"))
        } else {
            self.record_debug(field, &value)
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        if name.starts_with("log.") {
            return; // `log` crate metadata, as the default formatter skips it
        }
        self.scratch.clear();
        let _ = write!(self.scratch, "{value:?}");
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = if name == "message" {
            write!(self.writer, "{sep}{}", Escaped(&self.scratch))
        } else {
            let name = name.strip_prefix("r#").unwrap_or(name);
            write!(self.writer, "{sep}{name}={}", Escaped(&self.scratch))
        };
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A log writer into memory.
    #[derive(Clone, Default)]
    pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        pub(crate) fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    #[test]
    fn a_bare_level_is_ours_and_libraries_stay_at_warn() {
        assert_eq!(
            log_directives("info"),
            "warn,kmsd=info,kmsctl=info,kms_cluster=info,kms_state=info,kms_protocol=info,kms_api=info"
        );
        assert!(log_directives(" DEBUG ").starts_with("warn,kmsd=debug,"));
        // Quieter than warn: libraries follow.
        assert!(log_directives("error").starts_with("error,kmsd=error,"));
        // Full directives are the operator's.
        assert_eq!(log_directives("info,openraft=info"), "info,openraft=info");
        assert_eq!(log_directives("kmsd=debug"), "kmsd=debug");
        assert!(log_filter("info,openraft=info").is_ok());
        assert!(log_filter("kmsd=loud").is_err());
    }

    fn text_log(filter: &str, emit: impl FnOnce()) -> String {
        use tracing_subscriber::layer::SubscriberExt;
        let out = Captured::default();
        let fmt = tracing_subscriber::fmt::layer()
            .fmt_fields(EscapedFields)
            .with_writer(out.clone())
            .with_ansi(false)
            .with_filter(log_filter(filter).unwrap());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(fmt), emit);
        out.text()
    }

    #[test]
    fn library_info_is_hidden_by_default_and_shown_on_request() {
        let emit = || {
            tracing::info!(target: "openraft::core::raft_core", "received RaftMsg::ExternalCommand");
            tracing::warn!(target: "openraft::replication", "replication to 2 failed");
            tracing::info!(target: "h2::proto", "connection");
            tracing::info!(target: "kmsd", "kmsd ready");
            tracing::debug!(target: "kms_cluster::node", "tick");
        };
        let text = text_log("info", emit);
        assert!(
            !text.contains("ExternalCommand") && !text.contains("h2::proto"),
            "{text}"
        );
        assert!(text.contains("replication to 2 failed") && text.contains("kmsd ready"));
        assert!(!text.contains("tick"));
        let text = text_log("info,openraft=info", emit);
        assert!(text.contains("ExternalCommand"), "{text}");
        let text = text_log("debug", emit);
        assert!(
            text.contains("tick") && !text.contains("ExternalCommand"),
            "{text}"
        );
    }

    #[test]
    fn no_field_can_split_a_line_or_carry_an_escape() {
        let forged = "PC\n2026-12-01T00:00:00.000000Z ERROR kmsd: FAKE injected line";
        let esc = "\x1b]0;pwned\x07\x1b[31m";
        let text = text_log("info", || {
            let span = tracing::info_span!("conn", peer = %esc);
            let _g = span.enter();
            tracing::info!(machine = %forged, other = forged, e = ?esc, "KMS request {forged}");
            tracing::info!("{esc}\u{202e}");
        });
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(!text.bytes().any(|b| b == 0x1b || b == 0x07), "{text}");
        assert!(!text.contains('\u{202e}'));
        for line in text.lines() {
            assert!(!line.starts_with("2026-12-01"), "{line}");
        }
        assert!(text.contains("machine=PC\\u{a}2026-12-01T00:00:00.000000Z ERROR kmsd: FAKE"));
        assert!(
            text.contains("peer=\\u{1b}]0;pwned\\u{7}\\u{1b}[31m"),
            "{text}"
        );
        // Debug-formatted values keep their own escapes (no double escaping).
        assert!(text.contains("other=\"PC\\n2026"), "{text}");
        assert!(text.contains("KMS request PC\\u{a}2026"), "{text}");
    }
}
