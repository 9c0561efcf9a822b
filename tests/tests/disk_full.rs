//! A data disk that fills up, the way production fills one: a node's data directory on a
//! small disk of its own (a 20 MiB tmpfs volume, `DockerCluster::up_on_small_disks`), most of
//! it taken by a ballast file, and `kmsctl bench` with fresh clients until the disk is full
//! (the snapshot, two copies of it while a new one is written, and the log).
//!
//! What an operator relies on:
//! - `/status` (`storage`) and `/metrics` report the disk's size and free space (what
//!   `KmsDataDiskLow` alerts on);
//! - on a small or nearly full disk the log does not preallocate segments (it says so once):
//!   an 8 MiB segment set aside would take the space its own next writes need;
//! - when the disk is full the node stops by itself, with `No space left on device` in its
//!   log, a non-zero exit status and no panic;
//! - started again while the disk is still full, it stops again, with the error and what to
//!   do (free space or grow the volume) as its last words;
//! - once space is freed it starts again from its data directory, and every activation a
//!   client saw answered is counted exactly once (`kms_tests::ledger`); it then serves again.
//!
//! ```sh
//! cargo test -p kms-tests --test disk_full -- --nocapture
//! ```

use kms_tests::docker::{Bench, BenchLoad, DockerCluster};
use kms_tests::ledger::Ledger;
use std::time::{Duration, Instant};

/// Size of the node's disk.
const DISK: &str = "20m";
const DISK_BYTES: u64 = 20 << 20;
/// Ballast put on it once the node runs: leaves about 6 MiB.
const BALLAST: u64 = 14 << 20;
/// Activations per bench run; runs follow each other until the node stops (a few runs:
/// tens of thousands of connections a minute would exhaust the ports of Docker's proxy).
const RUN: usize = 10_000;
/// Most bench runs before the test gives up on filling the disk.
const MAX_RUNS: usize = 20;
/// Log entries between snapshots: snapshots and purges take part in filling the disk.
const SNAPSHOT_EVERY: &str = "2000";
const ENOSPC: &str = "No space left on device";
const LOW_SPACE_LINE: &str = "raft log segments are no longer preallocated";
/// The advice kmsd prints when it stops on a full disk.
const DISK_FULL_HINT: &str = "is full: free space on it or grow the volume";

fn storage(c: &DockerCluster) -> (u64, u64, u64) {
    let s = c.status(0);
    let g = |k: &str| {
        s["storage"][k]
            .as_u64()
            .unwrap_or_else(|| panic!("status.storage.{k} missing: {}", s["storage"]))
    };
    (
        g("data_dir_bytes"),
        g("available_bytes"),
        g("filesystem_bytes"),
    )
}

fn metric(c: &DockerCluster, name: &str) -> u64 {
    kms_tests::harness::metric(c.admin(0), name).unwrap_or_else(|| panic!("{name} not in /metrics"))
        as u64
}

#[test]
fn a_full_disk_stops_the_node_and_loses_nothing_it_acknowledged() {
    let mut c = DockerCluster::up_on_small_disks(
        1,
        &["--snapshot-every", SNAPSHOT_EVERY, "--log-level", "warn"],
        DISK,
    );
    let (_, free_before, size) = storage(&c);
    assert_eq!(size, DISK_BYTES, "status.storage.filesystem_bytes");
    assert_eq!(metric(&c, "kms_data_filesystem_size_bytes"), DISK_BYTES);

    c.fill_disk(0, BALLAST);
    let (_, free_filled, _) = storage(&c);
    assert!(
        free_before.saturating_sub(free_filled) >= BALLAST,
        "the ballast took {} of {BALLAST} bytes",
        free_before.saturating_sub(free_filled)
    );
    assert_eq!(
        metric(&c, "kms_data_filesystem_avail_bytes"),
        storage(&c).1,
        "/metrics and /status read the same disk"
    );
    eprintln!("disk: {size} bytes, {free_filled} free after the ballast");

    // Fresh clients until the node stops by itself.
    let mut ledger = Ledger::new();
    let started = Instant::now();
    let mut exit = None;
    for run in 0..MAX_RUNS {
        let log = c.path(&format!("bench-{run}.log"));
        let load = BenchLoad {
            count: RUN,
            concurrency: 16,
            rate: 0,
            timeout_ms: 5000,
        };
        let r = Bench::spawn(c.kms(0), load, &log).join();
        ledger.add(&r.lines);
        eprintln!(
            "run {run}: {} answered, errors {}; {} answered in all after {:.0?}",
            r.answered_count(),
            r.errors(),
            ledger.answered(),
            started.elapsed()
        );
        // The container may take a moment to end after its last answer.
        let until =
            Instant::now() + Duration::from_secs(if r.answered_count() < RUN { 30 } else { 0 });
        loop {
            exit = c.exited(0);
            if exit.is_some() || Instant::now() >= until {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if exit.is_some() {
            break;
        }
    }
    let code = exit.unwrap_or_else(|| {
        panic!(
            "the node still runs after {MAX_RUNS} runs of {RUN} activations on a {DISK} disk: {}",
            c.logs_tail(0, 20)
        )
    });
    let logs = c.logs_tail(0, 100_000);
    assert_ne!(code, 0, "a node stopped by a full disk exits with an error");
    assert!(
        logs.contains(ENOSPC),
        "no '{ENOSPC}' in the log:\n{}",
        c.logs_tail(0, 30)
    );
    assert!(!logs.contains("panicked"), "kmsd panicked:\n{logs}");
    assert!(
        logs.contains(LOW_SPACE_LINE),
        "the log kept preallocating segments on a nearly full disk:\n{}",
        c.logs_tail(0, 30)
    );
    assert!(ledger.answered() > 0);

    // Its supervisor starts it again while the disk is still full: it stops again, says why and
    // what to do, and loses nothing (checked once the space is freed).
    c.fill_disk_to_the_end(0);
    c.start_expecting_exit(0);
    let until = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(code) = c.exited(0) {
            break code;
        }
        assert!(
            Instant::now() < until,
            "the node runs on a full disk: {}",
            c.logs_tail(0, 20)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let last = c.logs_tail(0, 3);
    eprintln!("started on the full disk: exit {code}, last lines:\n{last}");
    assert_ne!(code, 0, "a node that cannot start exits with an error");
    assert!(
        last.contains(ENOSPC),
        "the last lines do not say why:\n{last}"
    );
    assert!(
        last.contains(DISK_FULL_HINT),
        "the last lines do not say what to do:\n{last}"
    );
    assert!(
        !c.logs_tail(0, 100_000).contains("panicked"),
        "kmsd panicked:\n{}",
        c.logs_tail(0, 30)
    );

    // Space freed (the volume grown, other files removed): the node starts from its data
    // directory and has lost nothing it acknowledged.
    c.free_disk(0);
    c.start(0);
    c.wait_ready(0, Duration::from_secs(60));
    let total = c.status(0)["total_requests"]
        .as_u64()
        .expect("total_requests");
    let reconciled = ledger
        .check(&c.clients(0, "windows"), total)
        .unwrap_or_else(|e| panic!("after the restart: {e}"));
    eprintln!(
        "after the restart: {} answered activations all counted once, {} counted but cut off by the stop, total {total}",
        reconciled.answered,
        reconciled.counted_unanswered.len()
    );
    let (_, free_after, _) = storage(&c);
    assert!(
        free_after > free_filled,
        "freeing the ballast shows in status.storage"
    );

    let log = c.path("bench-after.log");
    let load = BenchLoad {
        count: 500,
        concurrency: 4,
        rate: 0,
        timeout_ms: 5000,
    };
    let r = Bench::spawn(c.kms(0), load, &log).join();
    assert_eq!(r.answered_count(), 500, "serving again: {}", r.errors());
}
