//! Builders shared by the integration tests.
#![allow(dead_code)]

use kms_protocol::LicenseState;
use kms_state::{Activation, ActivationResult, Command, CommandResult, HostState, Outcome};
use uuid::Uuid;

pub const DAY_MS: u64 = 24 * 3600 * 1000;
/// A realistic epoch (2025-01-01) so that `t - 30d` is meaningful.
pub const T0: u64 = 1_735_689_600_000;

pub const WIN_KMS_ID: Uuid = Uuid::from_u128(0x58e2134f_8e11_4d17_9cb2_91069c151148);
pub const WIN_APP_ID: Uuid = Uuid::from_u128(0x55c92734_d682_4d71_983e_d6ec3f16059f);

/// An answered Windows-10/11 request from client `cmid` at `time_ms`, with a fresh request id.
pub fn act(group: Option<&str>, cmid: u128, time_ms: u64) -> Activation {
    Activation {
        request_id: Uuid::new_v4(),
        time_ms,
        count_group: group.map(str::to_owned),
        product_group: Some("windows-10-11".into()),
        kms_counted_id: WIN_KMS_ID,
        application_id: WIN_APP_ID,
        sku_id: Uuid::from_u128(0x73111121_5638_40f6_bc11_f1d7b0d64300),
        cmid: Uuid::from_u128(cmid),
        machine_name: format!("pc-{cmid}.campus.example"),
        client_vm: false,
        license_state: LicenseState::Licensed,
        grace_minutes: 43_200,
        required_count: 25,
        protocol_major: 6,
        answered_by: 1,
        outcome: Outcome::Answered,
    }
}

/// Same as [`act`] but refused with `hresult`.
pub fn refused(group: Option<&str>, cmid: u128, time_ms: u64, hresult: u32) -> Activation {
    Activation {
        answered_by: 1,
        outcome: Outcome::Refused { hresult },
        ..act(group, cmid, time_ms)
    }
}

/// Applies an activation and returns its result.
pub fn apply(state: &mut HostState, a: &Activation) -> ActivationResult {
    match state.apply(&Command::Activation(a.clone())) {
        CommandResult::Activation(r) => r,
        other => panic!("unexpected result {other:?}"),
    }
}

/// Applies an activation and returns only the count.
pub fn count(state: &mut HostState, a: &Activation) -> u32 {
    let r = apply(state, a);
    assert!(!r.duplicate);
    r.active_clients
}
