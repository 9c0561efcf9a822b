//! Baseline for the c=1 latency: what one durable append costs on this disk, with no KMS
//! host around it.
//!
//! A single-node kmsd answers an activation only after its log record is on disk: one
//! `pwrite` of a ~300-byte record into a preallocated segment and one `fdatasync` (the
//! store's group commit; at c=1 every activation is its own group). This writes such records
//! into a file of zeros in DIR (what the store's preallocated segments are) and reports the
//! latency of write + fdatasync, first back to back, then with an idle gap before each one
//! like the gap between two activations at c=1 (an idle core wakes more slowly on this VM).
//! `tcp_baseline COUNT 1` (the TCP pattern alone) plus the second figure is the floor under
//! any KMS host that makes each answer durable before sending it. The back-to-back pass also
//! reports the writing thread's context switches per append (the disk waits inside one
//! `fdatasync`; the idle pass adds its own sleep to each).
//!
//! `cargo run --release -p kmsctl --example disk_baseline -- DIR [COUNT] [GAP_US]`

use kmsctl::bench::context_switches;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Size of the file of zeros written into (the store's segments are 8 MiB).
const FILE_LEN: usize = 8 << 20;
/// Bytes per record, about one v6 activation's log entry.
const RECORD: usize = 300;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(dir) = args.get(1) else {
        eprintln!("usage: disk_baseline DIR [COUNT] [GAP_US]");
        std::process::exit(2);
    };
    let count: usize = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
        .max(1);
    let gap_us: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(300);
    let path = Path::new(dir).join(format!("disk-baseline-{}.tmp", std::process::id()));
    let result = measure(&path, count, gap_us);
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
        Err(e) => {
            eprintln!("disk_baseline: {}: {e}", path.display());
            std::process::exit(1);
        }
    }
}

fn measure(path: &Path, count: usize, gap_us: u64) -> std::io::Result<Vec<String>> {
    let file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(path)?;
    let record = [0x5au8; RECORD];
    let per_pass = count.min(FILE_LEN / RECORD);
    let mut lines = Vec::new();
    for (label, gap) in [
        ("back to back", Duration::ZERO),
        ("after an idle gap", Duration::from_micros(gap_us)),
    ] {
        // A fresh file of zeros for each pass, made durable first: the writes below only
        // overwrite allocated blocks, as in a preallocated segment.
        file.write_all_at(&vec![0u8; FILE_LEN], 0)?;
        file.sync_all()?;
        let mut took = Vec::with_capacity(per_pass);
        let me = Path::new("/proc/thread-self/status");
        let switches_before = context_switches(me);
        for i in 0..per_pass {
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
            let t0 = Instant::now();
            file.write_all_at(&record, (i * RECORD) as u64)?;
            file.sync_data()?;
            took.push(t0.elapsed().as_micros() as u64);
        }
        let switches = match (switches_before, context_switches(me)) {
            (Some(a), Some(b)) if gap.is_zero() => format!(
                "; {:.2} context switches per append",
                b.saturating_sub(a) as f64 / per_pass as f64
            ),
            _ => String::new(),
        };
        took.sort_unstable();
        let pct = |p: f64| kmsctl::bench::percentile(&took, p);
        let gap_text = if gap.is_zero() {
            String::new()
        } else {
            format!(" of {gap_us} µs")
        };
        lines.push(format!(
            "durable append ({RECORD} B write + fdatasync), {label}{gap_text}: {per_pass} appends, p50 {:.3} ms p90 {:.3} ms p99 {:.3} ms{switches}",
            pct(50.0),
            pct(90.0),
            pct(99.0)
        ));
    }
    Ok(lines)
}
