//! Trace context across the cluster's gRPC calls (W3C `traceparent` in gRPC metadata).
//!
//! Spans of this crate use the target [`TRACE_TARGET`] at TRACE level: the daemon's log
//! output ignores them and only its OpenTelemetry layer (when configured) records them, so
//! they cost next to nothing when tracing is off. Injection and extraction go through the
//! global propagator, which is a no-op until the daemon installs the W3C one.

use opentelemetry::propagation::{Extractor, Injector};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Target of every span meant for trace export.
pub const TRACE_TARGET: &str = "kms_trace";

struct Inject<'a>(&'a mut MetadataMap);

impl Injector for Inject<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct Extract<'a>(&'a MetadataMap);

impl Extractor for Extract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// Writes `span`'s trace context into outgoing gRPC metadata.
pub fn inject(span: &tracing::Span, metadata: &mut MetadataMap) {
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut Inject(metadata))
    });
}

/// Makes the trace context found in incoming metadata the parent of `span`.
pub fn adopt(span: &tracing::Span, metadata: &MetadataMap) {
    if span.is_disabled() {
        return;
    }
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Extract(metadata)));
    let _ = span.set_parent(cx);
}

/// A server span for an incoming RPC, child of the caller's context.
pub fn server_span(name: &'static str, metadata: &MetadataMap) -> tracing::Span {
    let span =
        tracing::trace_span!(target: "kms_trace", "rpc", otel.name = name, otel.kind = "server");
    adopt(&span, metadata);
    span
}

/// A client span for an outgoing RPC (child of the current span).
pub fn client_span(name: &'static str) -> tracing::Span {
    tracing::trace_span!(target: "kms_trace", "rpc", otel.name = name, otel.kind = "client")
}
