//! Measures the resident memory of a `HostState` holding N distinct clients (one
//! activation each), to size hosts: `cargo run --release -p kms-state --example
//! state_memory -- 100000`.

use kms_protocol::LicenseState;
use kms_state::{Activation, Command, HostState, Outcome, StateConfig};
use uuid::Uuid;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let before = rss_kib();
    let mut st = HostState::new(StateConfig::default());
    for i in 0..n {
        let cmd = Command::Activation(Activation {
            request_id: Uuid::new_v4(),
            time_ms: 1_795_485_552_000 + i,
            count_group: Some("windows".into()),
            product_group: Some("windows-10-11".into()),
            kms_counted_id: Uuid::from_u128(1),
            application_id: Uuid::from_u128(2),
            sku_id: Uuid::from_u128(3),
            cmid: Uuid::new_v4(),
            machine_name: format!("bench-{i}"),
            client_vm: false,
            license_state: LicenseState::InitialGrace,
            grace_minutes: 43200,
            required_count: 25,
            protocol_major: 6,
            outcome: Outcome::Answered,
        });
        st.apply(&cmd);
    }
    let after = rss_kib();
    let json = serde_json::to_vec(&st).expect("serialize");
    println!(
        "{n} clients: state RSS {:.1} MiB ({} bytes/client), JSON snapshot {:.1} MiB",
        (after - before) as f64 / 1024.0,
        (after - before) * 1024 / n.max(1),
        json.len() as f64 / 1048576.0
    );
}
