//! `kmsctl bench`: a bounded load generator. N activations at concurrency C, one TCP
//! connection per activation, fresh CMIDs, optional pacing; reports throughput,
//! latency percentiles, errors by kind, the longest gap without a success, and can write
//! a per-request log (one JSON line per activation) to reconcile with a host's totals.

use crate::client::{ClientError, ConnectOptions, Connection, RequestSpec};
use kms_protocol::client::BindOffer;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// Bench parameters.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// `host:port`.
    pub addr: String,
    /// Local address to connect from.
    pub source: Option<std::net::IpAddr>,
    /// Activations to run.
    pub count: usize,
    /// Concurrent clients.
    pub concurrency: usize,
    /// Optional pace, activations per second.
    pub rate: Option<f64>,
    /// Request templates cycled through (protocol/product mix).
    pub templates: Vec<RequestSpec>,
    /// Per-activation timeout.
    pub timeout: Duration,
    /// Optional per-request log file (JSON lines).
    pub log: Option<std::path::PathBuf>,
    /// Draw client machine ids from a fixed pool of this many machines (renewals of a
    /// known population) instead of a fresh one per activation.
    pub cmid_pool: Option<u64>,
}

/// One line of the per-request log.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LogLine {
    /// Sequence number.
    pub seq: usize,
    /// CMID sent.
    pub cmid: Uuid,
    /// Protocol used.
    pub protocol: u16,
    /// KMS counted id.
    pub kms_counted_id: Uuid,
    /// Start, Unix ms.
    pub start_ms: u64,
    /// Latency, microseconds.
    pub micros: u64,
    /// True when a verified activation response arrived.
    pub answered: bool,
    /// Count received.
    pub count: Option<u32>,
    /// Error kind.
    pub error: Option<String>,
}

/// Bench results.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Target.
    pub target: String,
    /// Activations attempted.
    pub requests: usize,
    /// Verified activation responses.
    pub succeeded: usize,
    /// Failures.
    pub failed: usize,
    /// Concurrency.
    pub concurrency: usize,
    /// Pace requested.
    pub rate: Option<f64>,
    /// Wall time, seconds.
    pub elapsed_s: f64,
    /// Successful activations per second.
    pub activations_per_s: f64,
    /// Latency percentiles of successful activations, ms.
    pub latency_ms: BTreeMap<String, f64>,
    /// Errors by kind.
    pub errors: BTreeMap<String, usize>,
    /// Longest interval with no successful activation completing, ms.
    pub longest_gap_ms: f64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs the bench; stops by itself after `count` activations.
pub async fn run(cfg: BenchConfig) -> BenchReport {
    assert!(!cfg.templates.is_empty(), "at least one request template");
    let cfg = Arc::new(cfg);
    let next = Arc::new(AtomicUsize::new(0));
    let lines = Arc::new(Mutex::new(Vec::with_capacity(cfg.count)));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..cfg.concurrency.max(1) {
        let cfg = cfg.clone();
        let next = next.clone();
        let lines = lines.clone();
        workers.push(tokio::spawn(async move {
            let mut local = Vec::new();
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= cfg.count {
                    break;
                }
                if let Some(rate) = cfg.rate {
                    let due = started + Duration::from_secs_f64(seq as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let mut spec = cfg.templates[seq % cfg.templates.len()].clone();
                match cfg.cmid_pool {
                    Some(pool) if pool > 0 => {
                        let m = rand::random::<u64>() % pool;
                        spec.cmid = Uuid::from_u64_pair(0x6b6d_7363_746c_0000, m);
                        spec.machine_name = format!("bench-pc-{m}");
                    }
                    _ => {
                        spec.cmid = Uuid::new_v4();
                        spec.machine_name = format!("bench-{seq}");
                    }
                }
                spec.request_time = kms_protocol::time::filetime_from_unix_ms(now_ms());
                let t0 = Instant::now();
                let start_ms = now_ms();
                let result = one(&cfg, &spec).await;
                let micros = t0.elapsed().as_micros() as u64;
                let done = started.elapsed();
                local.push((
                    done,
                    LogLine {
                        seq,
                        cmid: spec.cmid,
                        protocol: spec.protocol,
                        kms_counted_id: spec.kms_counted_id,
                        start_ms,
                        micros,
                        answered: result.is_ok(),
                        count: result.as_ref().ok().copied(),
                        error: result.err().map(|e| e.kind()),
                    },
                ));
            }
            lines.lock().expect("lines").extend(local);
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let elapsed = started.elapsed();
    let mut all = std::mem::take(&mut *lines.lock().expect("lines"));
    all.sort_by_key(|(_, l)| l.seq);
    if let Some(path) = &cfg.log {
        let mut text = String::new();
        for (_, l) in &all {
            text.push_str(&serde_json::to_string(l).unwrap_or_default());
            text.push('\n');
        }
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("kmsctl: cannot write bench log {}: {e}", path.display());
        }
    }
    summarize(&cfg, &all, elapsed)
}

async fn one(cfg: &BenchConfig, spec: &RequestSpec) -> Result<u32, ClientError> {
    let opts = ConnectOptions {
        addr: cfg.addr.clone(),
        source: cfg.source,
        offer: BindOffer::default(),
        timeout: cfg.timeout,
    };
    let mut conn = Connection::open(&opts).await?;
    let a = conn.activate(&spec.to_base(), cfg.timeout).await?;
    Ok(a.response.current_count)
}

/// The `p`th percentile of `sorted` (ascending microseconds), in milliseconds; 0 when empty.
/// The same rule for every latency figure kmsctl and its baseline examples print.
pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64 / 1000.0
}

/// Context switches (voluntary + nonvoluntary) of one thread so far, from a
/// `/proc/.../status` file (`/proc/thread-self/status` for the calling thread,
/// `/proc/PID/task/TID/status` for another); `None` where it cannot be read (not Linux).
/// The baselines use it to put a switch count beside their latency floors.
pub fn context_switches(status: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(status).ok()?;
    let mut total = None;
    for line in text.lines() {
        if let Some(v) = line
            .strip_prefix("voluntary_ctxt_switches:")
            .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
        {
            *total.get_or_insert(0) += v.trim().parse::<u64>().ok()?;
        }
    }
    total
}

fn summarize(cfg: &BenchConfig, all: &[(Duration, LogLine)], elapsed: Duration) -> BenchReport {
    let mut lat: Vec<u64> = all
        .iter()
        .filter(|(_, l)| l.answered)
        .map(|(_, l)| l.micros)
        .collect();
    lat.sort_unstable();
    let mut errors = BTreeMap::new();
    for (_, l) in all {
        if let Some(e) = &l.error {
            *errors.entry(e.clone()).or_insert(0) += 1;
        }
    }
    // Longest gap between consecutive successful completions (and from the start).
    let mut done: Vec<Duration> = all
        .iter()
        .filter(|(_, l)| l.answered)
        .map(|(d, _)| *d)
        .collect();
    done.sort();
    let mut gap = Duration::ZERO;
    let mut prev = Duration::ZERO;
    for d in &done {
        gap = gap.max(d.saturating_sub(prev));
        prev = *d;
    }
    let succeeded = lat.len();
    let mut latency_ms = BTreeMap::new();
    for (k, p) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("max", 100.0)] {
        latency_ms.insert(k.to_string(), percentile(&lat, p));
    }
    BenchReport {
        target: cfg.addr.clone(),
        requests: all.len(),
        succeeded,
        failed: all.len() - succeeded,
        concurrency: cfg.concurrency,
        rate: cfg.rate,
        elapsed_s: elapsed.as_secs_f64(),
        activations_per_s: succeeded as f64 / elapsed.as_secs_f64().max(1e-9),
        latency_ms,
        errors,
        longest_gap_ms: gap.as_secs_f64() * 1000.0,
    }
}

impl BenchReport {
    /// Human-readable summary.
    pub fn render(&self) -> String {
        let mut s = format!(
            "target            {}\nrequests          {} ({} ok, {} failed) at concurrency {}{}\nelapsed           {:.3} s\nactivations/s     {:.0}\nlatency ms        p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}\nlongest gap       {:.1} ms without a successful activation\n",
            self.target,
            self.requests,
            self.succeeded,
            self.failed,
            self.concurrency,
            self.rate.map(|r| format!(", paced at {r}/s")).unwrap_or_default(),
            self.elapsed_s,
            self.activations_per_s,
            self.latency_ms["p50"],
            self.latency_ms["p90"],
            self.latency_ms["p99"],
            self.latency_ms["max"],
            self.longest_gap_ms,
        );
        if self.errors.is_empty() {
            s.push_str("errors            none\n");
        } else {
            for (k, n) in &self.errors {
                s.push_str(&format!("error             {k}: {n}\n"));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn context_switches_counts_a_sleep_of_the_calling_thread() {
        let me = Path::new("/proc/thread-self/status");
        let before = context_switches(me).expect("a Linux status file");
        std::thread::sleep(Duration::from_millis(2));
        let after = context_switches(me).expect("a Linux status file");
        assert!(after > before, "{before} -> {after}");
        assert_eq!(
            context_switches(Path::new("/proc/no-such-thread/status")),
            None
        );
    }

    #[test]
    fn percentile_picks_the_nearest_rank_in_milliseconds() {
        let sorted = [100, 200, 300, 400, 500];
        assert_eq!(percentile(&sorted, 50.0), 0.3);
        assert_eq!(percentile(&sorted, 100.0), 0.5);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
