//! openraft's storage conformance suite against the write-ahead log store and state machine.
//!
//! Every case gets a fresh data directory of its own (the guard `G` of the
//! suite's builder keeps the directory until the case ends). `test_all` runs the upstream list
//! as a whole, so cases added by a later openraft release are covered too; the per-case tests
//! below name each case so a failure points at it directly.
//!
//! The suite starts its own tokio runtime per case, so these are plain `#[test]`s.

use kms_cluster::{open_stores, LogStore, StateMachine, StorageError, TypeConfig, WalOptions};
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

/// Builds a log store and state machine over a new data directory. The entry cache is tiny
/// (one byte), so every read but the newest goes to the segment files. The log writes with
/// direct asynchronous writes (the default, where the filesystem allows them); [`PwriteBuilder`]
/// is the same with `pwrite` + `fdatasync`.
struct WalBuilder;

/// [`WalBuilder`] with direct writes off.
struct PwriteBuilder;

fn build(direct_io: bool) -> (TempDir, LogStore, StateMachine) {
    let dir = tempfile::tempdir().expect("create temp dir");
    let options = WalOptions {
        segment_bytes: 512,
        cache_bytes: 1,
        preallocate: true,
        direct_io,
    };
    let (log, sm) = open_stores(dir.path(), options).expect("open raft stores");
    (dir, log, sm)
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for WalBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        Ok(build(true))
    }
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for PwriteBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        Ok(build(false))
    }
}

type WalSuite = Suite<TypeConfig, LogStore, StateMachine, WalBuilder, TempDir>;

#[test]
fn suite_test_all() {
    if let Err(e) = Suite::test_all(WalBuilder) {
        panic!("storage suite failed: {e}");
    }
}

#[test]
fn suite_test_all_with_pwrite() {
    if let Err(e) = Suite::test_all(PwriteBuilder) {
        panic!("storage suite (pwrite) failed: {e}");
    }
}

/// Runs one case on a fresh runtime (as the suite does) and fails the test on its error.
fn run(case: impl std::future::Future<Output = Result<(), StorageError>>) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    if let Err(e) = runtime.block_on(case) {
        panic!("storage suite case failed: {e}");
    }
}

macro_rules! suite_cases {
    ($($case:ident),* $(,)?) => {
        mod case {
            use super::*;
            $(
                #[test]
                fn $case() {
                    run(async {
                        let (_dir, log, sm) = WalBuilder.build().await?;
                        WalSuite::$case(log, sm).await
                    })
                }
            )*

            #[test]
            fn transfer_snapshot() {
                run(WalSuite::transfer_snapshot(&WalBuilder))
            }
        }
    };
}

// The list of `Suite::test_store` in openraft 0.9.25 (transfer_snapshot is added by the macro).
suite_cases!(
    last_membership_in_log_initial,
    last_membership_in_log,
    last_membership_in_log_multi_step,
    get_membership_initial,
    get_membership_from_log_and_empty_sm,
    get_membership_from_empty_log_and_sm,
    get_membership_from_log_le_sm_last_applied,
    get_membership_from_log_gt_sm_last_applied_1,
    get_membership_from_log_gt_sm_last_applied_2,
    get_initial_state_without_init,
    get_initial_state_membership_from_log_and_sm,
    get_initial_state_with_state,
    get_initial_state_last_log_gt_sm,
    get_initial_state_last_log_lt_sm,
    get_initial_state_log_ids,
    get_initial_state_re_apply_committed,
    save_vote,
    get_log_entries,
    limited_get_log_entries,
    try_get_log_entry,
    initial_logs,
    get_log_state,
    get_log_id,
    last_id_in_log,
    last_applied_state,
    purge_logs_upto_0,
    purge_logs_upto_5,
    purge_logs_upto_20,
    delete_logs_since_11,
    delete_logs_since_0,
    append_to_log,
    snapshot_meta,
    apply_single,
    apply_multiple,
);
