//! Rate limiting of repeated log lines: the first `limit` events of one callsite (same
//! target, level and message template) in a window of `window` are written, the rest are
//! counted and replaced by one summary line "... repeated N times in the last W s" when
//! the window has ended (at the next event after it, or at shutdown).
//!
//! A leader that loses its quorum, a peer that stays unreachable or a library stuck in a
//! retry loop can otherwise write tens of thousands of identical lines a second, burying
//! the few that matter and filling the disk. [`Limiter`] is the bookkeeping (time is passed
//! in, so it is tested without sleeping); [`Throttle`] wraps the log layer with it.
//! Per-request records ([`UNLIMITED_TARGETS`]) are never limited: one line per activation
//! and every audit event are the log's purpose, not noise.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::field::{Field, Visit};
use tracing::span;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_core::callsite::{Callsite, Identifier};
use tracing_core::field::FieldSet;
use tracing_core::metadata::Kind;
use tracing_core::subscriber::Interest;
use tracing_subscriber::layer::{Context, Layer};

/// Target of the summary lines.
pub const SUMMARY_TARGET: &str = "kmsd::log";

/// Targets whose events are always written: the per-request line of each activation and
/// the audit events (and the summaries themselves).
pub const UNLIMITED_TARGETS: [&str; 3] = ["kmsd::activation", crate::audit::TARGET, SUMMARY_TARGET];

/// Longest sample message quoted in a summary line, in characters.
const SAMPLE_CHARS: usize = 160;

/// The limit: `limit` events per callsite in each `window`; 0 turns limiting off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepeatLimit {
    /// Events written per callsite and window (0: no limit).
    pub limit: u32,
    /// Window length.
    pub window: Duration,
}

/// Whether one occurrence is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Within the limit: write it.
    Write,
    /// Over the limit: drop it; `first` for the first one dropped in this window (the
    /// caller may attach a sample message with [`Limiter::set_sample`]).
    Suppress {
        /// First suppressed occurrence of the window.
        first: bool,
    },
}

/// Occurrences of one key that were not written in an ended window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repeats<K> {
    /// The key (callsite).
    pub key: K,
    /// How many were suppressed.
    pub count: u64,
    /// The message of the first suppressed one, when the caller set it.
    pub sample: Option<String>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    seen: u64,
    suppressed: u64,
    sample: Option<String>,
}

/// Counts occurrences per key in fixed windows starting at a key's first occurrence.
/// Memory is one entry per key seen in the current window; ended windows are swept at
/// most once per window length.
#[derive(Debug)]
pub struct Limiter<K> {
    limit: RepeatLimit,
    windows: HashMap<K, Window>,
    next_sweep: Option<Instant>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    /// A limiter with no history.
    pub fn new(limit: RepeatLimit) -> Self {
        Limiter {
            limit,
            windows: HashMap::new(),
            next_sweep: None,
        }
    }

    /// Records one occurrence of `key` at `now`. Returns whether to write it, and the
    /// suppressed repeats of windows that ended by `now` (to be reported before it).
    pub fn admit(&mut self, key: &K, now: Instant) -> (Admit, Vec<Repeats<K>>) {
        if self.limit.limit == 0 {
            return (Admit::Write, Vec::new());
        }
        let window = self.limit.window;
        let mut ended = Vec::new();
        if self.next_sweep.is_none_or(|t| now >= t) {
            ended = self.ended(now);
            self.next_sweep = Some(now + window);
        } else if self
            .windows
            .get(key)
            .is_some_and(|w| now >= w.start + window)
        {
            ended.extend(self.take(key));
        }
        let w = self.windows.entry(key.clone()).or_insert(Window {
            start: now,
            seen: 0,
            suppressed: 0,
            sample: None,
        });
        w.seen += 1;
        if w.seen <= u64::from(self.limit.limit) {
            (Admit::Write, ended)
        } else {
            w.suppressed += 1;
            (
                Admit::Suppress {
                    first: w.suppressed == 1,
                },
                ended,
            )
        }
    }

    /// Remembers the message of the first suppressed occurrence of `key`.
    pub fn set_sample(&mut self, key: &K, sample: String) {
        if let Some(w) = self.windows.get_mut(key) {
            w.sample.get_or_insert(sample);
        }
    }

    /// Removes the windows that ended by `now`; their suppressed repeats.
    pub fn ended(&mut self, now: Instant) -> Vec<Repeats<K>> {
        let window = self.limit.window;
        let keys: Vec<K> = self
            .windows
            .iter()
            .filter(|(_, w)| now >= w.start + window)
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter().filter_map(|k| self.take(k)).collect()
    }

    /// Removes every window (shutdown); their suppressed repeats.
    pub fn drain(&mut self) -> Vec<Repeats<K>> {
        let keys: Vec<K> = self.windows.keys().cloned().collect();
        keys.iter().filter_map(|k| self.take(k)).collect()
    }

    fn take(&mut self, key: &K) -> Option<Repeats<K>> {
        let w = self.windows.remove(key)?;
        (w.suppressed > 0).then(|| Repeats {
            key: key.clone(),
            count: w.suppressed,
            sample: w.sample,
        })
    }
}

/// A callsite, compared by identity.
#[derive(Clone, Copy)]
pub struct Site(&'static Metadata<'static>);

impl PartialEq for Site {
    fn eq(&self, other: &Self) -> bool {
        self.0.callsite() == other.0.callsite()
    }
}
impl Eq for Site {}
impl Hash for Site {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.callsite().hash(state)
    }
}

/// The summary line of `r`.
fn summary_text(r: &Repeats<Site>, window: Duration) -> String {
    let meta = r.key.0;
    let what = r.sample.as_deref().unwrap_or(meta.name());
    format!(
        "{}: \"{what}\" repeated {} times in the last {} s (not written)",
        meta.target(),
        r.count,
        window.as_secs_f64()
    )
}

/// Shared handle on a [`Throttle`]'s bookkeeping, to write the pending summaries at
/// shutdown.
#[derive(Clone)]
pub struct Repeated(Arc<Mutex<Limiter<Site>>>, Duration);

impl Repeated {
    fn lock(&self) -> MutexGuard<'_, Limiter<Site>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes a summary line for every window with suppressed events (through the normal
    /// log path; call it outside of the subscriber, e.g. when the daemon stops).
    pub fn flush(&self) {
        let pending = self.lock().drain();
        for r in pending {
            let text = summary_text(&r, self.1);
            match *r.key.0.level() {
                Level::ERROR => tracing::error!(target: SUMMARY_TARGET, "{text}"),
                Level::WARN => tracing::warn!(target: SUMMARY_TARGET, "{text}"),
                Level::INFO => tracing::info!(target: SUMMARY_TARGET, "{text}"),
                Level::DEBUG => tracing::debug!(target: SUMMARY_TARGET, "{text}"),
                _ => tracing::trace!(target: SUMMARY_TARGET, "{text}"),
            }
        }
    }
}

/// Wraps a log layer: events over the limit are not passed on; summaries are passed on
/// as events of their own (target [`SUMMARY_TARGET`], the level of the lines they stand
/// for). Put the level filter outside (`Throttle::new(fmt).with_filter(filter)`) so only
/// events that would be written count.
pub struct Throttle<L> {
    inner: L,
    limiter: Repeated,
    clock: Arc<dyn Fn() -> Instant + Send + Sync>,
}

impl<L> Throttle<L> {
    /// Limits `inner` with the real clock.
    pub fn new(inner: L, limit: RepeatLimit) -> Self {
        Self::with_clock(inner, limit, Arc::new(Instant::now))
    }

    /// Limits `inner`, reading time from `clock` (tests).
    pub fn with_clock(
        inner: L,
        limit: RepeatLimit,
        clock: Arc<dyn Fn() -> Instant + Send + Sync>,
    ) -> Self {
        Throttle {
            inner,
            limiter: Repeated(Arc::new(Mutex::new(Limiter::new(limit))), limit.window),
            clock,
        }
    }

    /// The handle that flushes pending summaries.
    pub fn repeated(&self) -> Repeated {
        self.limiter.clone()
    }
}

/// Collects an event's `message` field.
struct MessageOf(Option<String>);

impl Visit for MessageOf {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let text = format!("{value:?}");
            let short: String = text.chars().take(SAMPLE_CHARS).collect();
            let cut = short.len() < text.len();
            self.0 = Some(if cut { short + "…" } else { short });
        }
    }
}

macro_rules! summary_callsites {
    ($($cs:ident, $meta:ident, $level:expr;)*) => {$(
        struct $cs;
        static $meta: Metadata<'static> = Metadata::new(
            "log repeats",
            SUMMARY_TARGET,
            $level,
            Some(file!()),
            Some(line!()),
            Some(module_path!()),
            FieldSet::new(&["message"], Identifier(&$cs)),
            Kind::EVENT,
        );
        impl Callsite for $cs {
            fn set_interest(&self, _: Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                &$meta
            }
        }
    )*};
}

summary_callsites! {
    ErrorSummary, ERROR_SUMMARY, Level::ERROR;
    WarnSummary, WARN_SUMMARY, Level::WARN;
    InfoSummary, INFO_SUMMARY, Level::INFO;
    DebugSummary, DEBUG_SUMMARY, Level::DEBUG;
    TraceSummary, TRACE_SUMMARY, Level::TRACE;
}

fn summary_metadata(level: &Level) -> &'static Metadata<'static> {
    match *level {
        Level::ERROR => &ERROR_SUMMARY,
        Level::WARN => &WARN_SUMMARY,
        Level::INFO => &INFO_SUMMARY,
        Level::DEBUG => &DEBUG_SUMMARY,
        _ => &TRACE_SUMMARY,
    }
}

impl<S, L> Layer<S> for Throttle<L>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.inner.on_register_dispatch(subscriber)
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber)
    }

    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.inner.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.enabled(metadata, ctx)
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_new_span(attrs, id, ctx)
    }

    fn on_record(&self, span: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        self.inner.on_record(span, values, ctx)
    }

    fn on_follows_from(&self, span: &span::Id, follows: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_follows_from(span, follows, ctx)
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.event_enabled(event, ctx)
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        if UNLIMITED_TARGETS.contains(&meta.target()) {
            return self.inner.on_event(event, ctx);
        }
        let site = Site(meta);
        let now = (self.clock)();
        let (admit, ended) = {
            let mut limiter = self.limiter.lock();
            let (admit, ended) = limiter.admit(&site, now);
            if admit == (Admit::Suppress { first: true }) {
                let mut m = MessageOf(None);
                event.record(&mut m);
                if let Some(sample) = m.0 {
                    limiter.set_sample(&site, sample);
                }
            }
            (admit, ended)
        };
        for r in &ended {
            let text = summary_text(r, self.limiter.1);
            let summary = summary_metadata(r.key.0.level());
            let fields = summary.fields();
            let Some(message) = fields.field("message") else {
                continue;
            };
            let values: [(&Field, Option<&dyn tracing::Value>); 1] = [(
                &message,
                Some(&format_args!("{text}") as &dyn tracing::Value),
            )];
            let values = fields.value_set(&values);
            self.inner
                .on_event(&Event::new(summary, &values), ctx.clone());
        }
        if admit == Admit::Write {
            self.inner.on_event(event, ctx);
        }
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_enter(id, ctx)
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_exit(id, ctx)
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        self.inner.on_close(id, ctx)
    }

    fn on_id_change(&self, old: &span::Id, new: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_id_change(old, new, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(limit: u32, secs: u64) -> RepeatLimit {
        RepeatLimit {
            limit,
            window: Duration::from_secs(secs),
        }
    }

    #[test]
    fn first_k_pass_then_suppressed_then_one_summary_after_the_window() {
        let t0 = Instant::now();
        let mut l = Limiter::new(limit(3, 10));
        let mut written = 0;
        let mut firsts = 0;
        for i in 0..1000u64 {
            let (a, ended) = l.admit(&"heartbeat", t0 + Duration::from_millis(i));
            assert!(ended.is_empty(), "nothing ended within the window");
            match a {
                Admit::Write => written += 1,
                Admit::Suppress { first } => firsts += u32::from(first),
            }
            if i == 3 {
                l.set_sample(&"heartbeat", "received heartbeat".into());
            }
        }
        assert_eq!((written, firsts), (3, 1));
        // The next occurrence after the window: written, after the summary of the last one.
        let (a, ended) = l.admit(&"heartbeat", t0 + Duration::from_secs(10));
        assert_eq!(a, Admit::Write);
        assert_eq!(
            ended,
            vec![Repeats {
                key: "heartbeat",
                count: 997,
                sample: Some("received heartbeat".into()),
            }]
        );
        // A new window: the limit applies afresh, nothing to report from a clean window.
        for i in 1..3 {
            let (a, ended) = l.admit(&"heartbeat", t0 + Duration::from_secs(10 + i));
            assert_eq!((a, ended.len()), (Admit::Write, 0));
        }
        assert_eq!(
            l.admit(&"heartbeat", t0 + Duration::from_secs(13)).0,
            Admit::Suppress { first: true }
        );
        assert_eq!(l.drain().len(), 1);
        assert!(l.drain().is_empty());
    }

    #[test]
    fn keys_are_counted_apart_and_ended_windows_are_reported_by_other_keys() {
        let t0 = Instant::now();
        let mut l = Limiter::new(limit(1, 5));
        assert_eq!(l.admit(&"a", t0).0, Admit::Write);
        assert_eq!(l.admit(&"b", t0).0, Admit::Write);
        assert_eq!(l.admit(&"a", t0).0, Admit::Suppress { first: true });
        assert_eq!(l.admit(&"a", t0).0, Admit::Suppress { first: false });
        // "a" falls silent; the sweep at the next event of "b" after the window reports it.
        let (a, ended) = l.admit(&"b", t0 + Duration::from_secs(6));
        assert_eq!(a, Admit::Write);
        assert_eq!(ended.len(), 1);
        assert_eq!((ended[0].key, ended[0].count), ("a", 2));
        // Clean windows leave no entries behind.
        assert!(l.ended(t0 + Duration::from_secs(60)).is_empty());
        assert!(l.windows.is_empty());
    }

    #[test]
    fn zero_turns_limiting_off() {
        let t0 = Instant::now();
        let mut l = Limiter::new(limit(0, 10));
        for _ in 0..10_000 {
            assert_eq!(l.admit(&1u8, t0), (Admit::Write, Vec::new()));
        }
        assert!(l.drain().is_empty());
    }

    /// The layer over a real fmt layer: what reaches the output.
    #[test]
    fn throttle_writes_summary_lines_through_the_log_layer() {
        use tracing_subscriber::layer::SubscriberExt;
        let out = crate::telemetry::tests::Captured::default();
        let now = Arc::new(Mutex::new(Instant::now()));
        let clock = {
            let now = now.clone();
            Arc::new(move || *now.lock().unwrap())
        };
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(out.clone())
            .with_ansi(false);
        let throttle = Throttle::with_clock(fmt, limit(2, 10), clock);
        let repeated = throttle.repeated();
        let subscriber = tracing_subscriber::registry().with(throttle);
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..50 {
                tracing::info!(target: "openraft::core", cmd = "Heartbeat", "received RaftMsg::ExternalCommand {i}");
                tracing::info!(target: "kmsd::activation", "KMS request {i}");
            }
            *now.lock().unwrap() += Duration::from_secs(11);
            tracing::info!(target: "openraft::core", cmd = "Heartbeat", "received RaftMsg::ExternalCommand late");
            for _ in 0..3 {
                tracing::warn!("stopping");
            }
            repeated.flush();
        });
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        let heartbeats = lines
            .iter()
            .filter(|l| l.contains("ExternalCommand"))
            .count();
        // 2 written, 1 summary, 1 after the window.
        assert_eq!(heartbeats, 4, "{text}");
        assert!(text.contains("INFO kmsd::log: openraft::core: \"received RaftMsg::ExternalCommand 2\" repeated 48 times in the last 10 s (not written)"), "{text}");
        assert!(text.contains("ExternalCommand late"));
        assert_eq!(
            lines.iter().filter(|l| l.contains("KMS request")).count(),
            50
        );
        // The flush at the end reports the third "stopping".
        assert!(
            text.contains("WARN kmsd::log: kmsd::log_limit::tests: \"stopping\" repeated 1 times"),
            "{text}"
        );
    }
}
