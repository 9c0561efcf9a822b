//! HostState as a whole serializes and deserializes losslessly (it becomes the Raft snapshot).

mod common;

use common::*;
use kms_protocol::LicenseState;
use kms_state::{Command, HostState, StateConfig};

#[test]
fn host_state_serde_round_trip() {
    let mut s = HostState::new(StateConfig {
        dedup_retention_ms: 3_600_000,
    });
    for i in 0..20u128 {
        let mut a = act(
            Some(if i % 3 == 0 { "office" } else { "windows" }),
            i,
            T0 + i as u64,
        );
        a.license_state = LicenseState::from_wire((i % 9) as u32);
        a.client_vm = i % 2 == 1;
        count(&mut s, &a);
    }
    count(&mut s, &refused(None, 100, T0 + 50, 0x8007_000D));
    s.apply(&Command::SetEpid {
        count_group: "windows".into(),
        epid: "55041-00206-551-123456-03-1041-9200.0000-0012025".into(),
        time_ms: T0,
    });

    let json = serde_json::to_string(&s).unwrap();
    let back: HostState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    assert_eq!(
        serde_json::to_string(&back).unwrap(),
        json,
        "stable encoding"
    );

    // Indexes are rebuilt: expiry still works on the restored state.
    let mut restored = back;
    count(&mut restored, &act(Some("windows"), 500, T0 + 31 * DAY_MS));
    assert_eq!(restored.client_count_total(), 1);
    assert_eq!(restored.request_count(), 1);
}

#[test]
fn commands_serde_round_trip() {
    let cmds = vec![
        Command::Activation(act(Some("windows"), 1, T0)),
        Command::Activation(refused(None, 2, T0, 0xC004_F042)),
        Command::SetEpid {
            count_group: "office".into(),
            epid: "e".into(),
            time_ms: 5,
        },
    ];
    let json = serde_json::to_string(&cmds).unwrap();
    let back: Vec<Command> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, cmds);
}
