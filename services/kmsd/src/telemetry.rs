//! Logging and trace export setup (tracing): text or JSON lines on stderr, filtered by the
//! config's log level; optionally spans exported over OTLP/gRPC (OpenTelemetry).
//!
//! Log lines are written by a background thread so a slow log sink never stalls the
//! request path. Spans meant for export use the target [`TRACE_TARGET`] at TRACE level:
//! the log layer's filter ignores them, only the OpenTelemetry layer (installed when
//! `otlp_endpoint` is set) records them — with tracing off they cost a disabled callsite.

use crate::config::LogFormat;
pub use kms_cluster::trace_ctx::TRACE_TARGET;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use std::io::IsTerminal;
use std::time::Duration;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::{LevelFilter, Targets};
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

    /// Exports the spans still buffered and stops the exporter. The flush blocks, so it
    /// runs off the runtime's worker threads (the exporter's connection needs them).
    pub async fn shutdown(&mut self) {
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
    traces: Option<&TraceExport>,
) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, filter_handle) = tracing_subscriber::reload::Layer::new(filter);
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
    let ansi = std::io::stderr().is_terminal();
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(writer)
            .boxed(),
    }
    .with_filter(filter);
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
        let filter = EnvFilter::try_new(level).map_err(|e| format!("{level:?}: {e}"))?;
        filter_handle
            .reload(filter)
            .map_err(|e| format!("cannot change the log filter: {e}"))
    });
    Ok(Telemetry {
        _log: Some(guard),
        traces: provider,
        set_log_level: Some(set_log_level),
    })
}
