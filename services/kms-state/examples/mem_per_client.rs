//! Measures what a `HostState` costs per client and how its snapshot behaves, to size hosts:
//!
//! ```text
//! cargo build --release -p kms-state --examples
//! target/release/examples/mem_per_client [N] [--fqdn] [--rate R]
//! ```
//!
//! Applies N activations (default 1,000,000) with distinct CMIDs, one request id each (all
//! within the 24 h dedup retention, so the state also holds N request ids), and reports:
//! resident memory (VmRSS, VmHWM from /proc/self/status) before and after, bytes per client,
//! the clone time, the time and size of a snapshot written to a file and read back, and a
//! snapshot written on another thread while this one keeps applying re-requests of existing
//! clients at R per second (default 15,000, the host's throughput target; 0 = unpaced): the
//! longest single apply and the peak memory of that phase. `--fqdn` gives every client a 34-byte FQDN instead of a
//! short NetBIOS-style name (longer than the 22 bytes kept inline, so one heap block each).

use std::fs::File;
use std::time::{Duration, Instant};

use kms_protocol::LicenseState;
use kms_state::{Activation, Command, HostState, Outcome, StateConfig};
use uuid::Uuid;

/// 2026-11-23, a realistic unix-ms epoch.
const T0: u64 = 1_795_485_552_000;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// CPU time (user + system) of the whole process so far, from /proc/self/stat (in ticks of
/// 10 ms). The machine may be shared: CPU time next to wall time shows how much of a phase
/// was spent waiting for a core.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with the last ')'): state is field 3, utime 14.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn mem() -> (u64, u64) {
    (status_kib("VmRSS:"), status_kib("VmHWM:"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// splitmix64: spread ids over the whole key space like random v4 UUIDs, reproducibly.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn id(seed: u64, i: u64) -> Uuid {
    Uuid::from_u64_pair(mix(seed ^ mix(i)), mix(i.wrapping_add(seed)))
}

/// Activation number `seq` (its request id and time), from client `i`: one of 8 SKUs and a
/// few license states.
fn activation(i: u64, seq: u64, fqdn: bool) -> Command {
    const STATES: [LicenseState; 4] = [
        LicenseState::Licensed,
        LicenseState::Licensed,
        LicenseState::InitialGrace,
        LicenseState::Notification,
    ];
    Command::Activation(Activation {
        request_id: id(1, seq),
        time_ms: T0 + seq,
        count_group: Some("windows".into()),
        product_group: Some("windows-10-11".into()),
        kms_counted_id: Uuid::from_u128(0x58e2134f_8e11_4d17_9cb2_91069c151148),
        application_id: Uuid::from_u128(0x55c92734_d682_4d71_983e_d6ec3f16059f),
        sku_id: Uuid::from_u128(0x73111121_5638_40f6_bc11_f1d7b0d64300 + u128::from(i % 8)),
        cmid: id(2, i),
        machine_name: if fqdn {
            format!("desktop-{:07}.campus.example.org", i % 10_000_000)
        } else {
            format!("PC-{i:07}")
        },
        client_vm: i.is_multiple_of(5),
        license_state: STATES[(i % 4) as usize],
        grace_minutes: 43_200 - (i % 1000) as u32,
        required_count: 25,
        protocol_major: 6,
        answered_by: 1,
        outcome: Outcome::Answered,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Durations of single `apply` calls.
struct ApplyTimes {
    count: u64,
    sorted: Vec<Duration>,
}

impl ApplyTimes {
    fn quantile(&self, q: f64) -> Duration {
        let i = ((self.sorted.len() as f64 - 1.0) * q).round() as usize;
        self.sorted.get(i).copied().unwrap_or_default()
    }

    fn summary(&self) -> String {
        format!(
            "p50 {:.3} ms, p99.9 {:.3} ms, max {:.2} ms",
            ms(self.quantile(0.5)),
            ms(self.quantile(0.999)),
            ms(self.quantile(1.0)),
        )
    }
}

/// Applies re-requests of random existing clients at `rate` per second (0: unpaced) until
/// `done(applied)`, timing each `apply`.
fn paced(
    st: &mut HostState,
    n: u64,
    seq: &mut u64,
    rate: u64,
    fqdn: bool,
    mut done: impl FnMut(u64) -> bool,
) -> ApplyTimes {
    let started = Instant::now();
    let mut times = Vec::new();
    let mut applied = 0u64;
    while !done(applied) {
        if rate > 0 {
            let due = started + Duration::from_secs_f64(applied as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let cmd = activation(mix(*seq) % n.max(1), *seq, fqdn);
        let t = Instant::now();
        st.apply(&cmd);
        times.push(t.elapsed());
        *seq += 1;
        applied += 1;
    }
    times.sort_unstable();
    ApplyTimes {
        count: applied,
        sorted: times,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut n: u64 = 1_000_000;
    let mut fqdn = false;
    let mut rate: u64 = 15_000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--fqdn" => fqdn = true,
            "--rate" => rate = args.next().ok_or("--rate needs a value")?.parse()?,
            other => n = other.parse()?,
        }
    }
    let path = std::env::temp_dir().join(format!("kms-state-{}.snapshot", std::process::id()));

    let (rss0, _) = mem();
    let mut st = HostState::new(StateConfig::default());
    let started = Instant::now();
    let cpu0 = cpu();
    for i in 0..n {
        st.apply(&activation(i, i, fqdn));
    }
    let apply_time = started.elapsed();
    let apply_cpu = cpu() - cpu0;
    let (rss1, hwm1) = mem();
    let state_kib = rss1.saturating_sub(rss0);
    println!(
        "{n} distinct clients ({} names), {} request ids: applied in {:.2} s, CPU {:.2} s ({:.2} µs CPU/activation)",
        if fqdn { "34-byte FQDN" } else { "10-byte" },
        st.request_count(),
        apply_time.as_secs_f64(),
        apply_cpu.as_secs_f64(),
        apply_cpu.as_secs_f64() * 1e6 / n.max(1) as f64,
    );
    println!(
        "RSS before {:.1} MiB, after {:.1} MiB (HWM {:.1} MiB): state {:.1} MiB = {} bytes/client (incl. its request id)",
        mib(rss0),
        mib(rss1),
        mib(hwm1),
        mib(state_kib),
        state_kib * 1024 / n.max(1),
    );

    let t = Instant::now();
    let view = st.clone();
    let clone_time = t.elapsed();
    println!("clone: {:.3} µs", clone_time.as_secs_f64() * 1e6);

    let t = Instant::now();
    let cpu0 = cpu();
    let bytes = view.write_snapshot(File::create(&path)?)?;
    File::open(&path)?.sync_all()?;
    let write_time = t.elapsed();
    let write_cpu = cpu() - cpu0;
    println!(
        "write_snapshot to file (+ fsync): {:.0} ms, CPU {:.0} ms, {:.1} MiB ({:.1} bytes/client), RSS {:.1} MiB",
        ms(write_time),
        ms(write_cpu),
        bytes as f64 / 1048576.0,
        bytes as f64 / n.max(1) as f64,
        mib(mem().0),
    );

    // A snapshot written on another thread while this one keeps applying, as the Raft state
    // machine does: clone under the lock, serialize outside it. The commands applied meanwhile
    // are re-requests of random existing clients (each touches a different part of the maps,
    // the worst case for copy-on-write), paced at `rate` per second (0: as fast as possible).
    // First the same load for two seconds without a snapshot, as the baseline of apply times
    // (on a shared machine the longest ones are the thread waiting for a core). The peak
    // (VmHWM) is reset before the snapshot, so it is the peak of that phase.
    let pace = if rate > 0 {
        format!("paced at {rate}/s")
    } else {
        "unpaced".to_owned()
    };
    let mut seq = n;
    let t = Instant::now();
    let base = paced(&mut st, n, &mut seq, rate, fqdn, |_| {
        t.elapsed() >= Duration::from_secs(2)
    });
    println!(
        "without a snapshot: {} re-requests ({pace}); apply {}",
        base.count,
        base.summary()
    );

    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let second = st.clone();
    let writer_path = path.with_extension("concurrent");
    let writer = std::thread::spawn(move || -> Result<(u64, Duration), kms_state::StateError> {
        let t = Instant::now();
        let bytes = second.write_snapshot(File::create(&writer_path)?)?;
        Ok((bytes, t.elapsed()))
    });
    let during = paced(&mut st, n, &mut seq, rate, fqdn, |applied| {
        applied >= 1_000 && writer.is_finished()
    });
    let (bytes, took) = writer.join().map_err(|_| "snapshot thread panicked")??;
    let (rss3, hwm3) = mem();
    println!(
        "concurrent snapshot: {:.1} MiB written in {:.0} ms while {} re-requests applied ({pace}); apply {}; RSS {:.1} MiB, peak (HWM) during it {:.1} MiB",
        bytes as f64 / 1048576.0,
        ms(took),
        during.count,
        during.summary(),
        mib(rss3),
        mib(hwm3),
    );
    std::fs::remove_file(path.with_extension("concurrent"))?;

    let t = Instant::now();
    let cpu0 = cpu();
    let back = HostState::read_snapshot(File::open(&path)?)?;
    let read_time = t.elapsed();
    let read_cpu = cpu() - cpu0;
    let (rss2, hwm2) = mem();
    println!(
        "read_snapshot from file: {:.0} ms, CPU {:.0} ms, equal to the state written: {}, RSS with the restored copy too {:.1} MiB (HWM {:.1} MiB)",
        ms(read_time),
        ms(read_cpu),
        back == view,
        mib(rss2),
        mib(hwm2),
    );
    std::fs::remove_file(&path)?;
    Ok(())
}
