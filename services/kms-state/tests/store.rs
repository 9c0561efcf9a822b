//! SledStore: persistence, reopen, pruning on disk, atomic batches, schema checks.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use kms_state::{
    Command, CommandResult, HostState, SledStore, StateConfig, StateError, StoreOptions,
    CLIENT_WINDOW_MS, SCHEMA_VERSION,
};
use uuid::Uuid;

fn open(path: &Path) -> SledStore {
    SledStore::open(path, StoreOptions::default()).expect("open store")
}

/// Opens the sled database directly (to inspect or damage the key layout). sled releases its
/// file lock from a background thread after a drop, so retry briefly like `SledStore::open`.
fn raw_db(path: &Path) -> sled::Db {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("open sled: {e}"),
        }
    }
}

fn acts(list: Vec<kms_state::Activation>) -> Vec<Command> {
    list.into_iter().map(Command::Activation).collect()
}

fn populated(store: &mut SledStore) {
    let mut cmds = acts(
        (0..30u128)
            .map(|i| act(Some("windows"), i, T0 + i as u64))
            .collect(),
    );
    cmds.push(Command::SetEpid {
        count_group: "windows".into(),
        epid: "06401-00206-551-123456-03-1041-9200.0000-0012025".into(),
        time_ms: T0,
    });
    cmds.extend(acts(vec![
        act(Some("office"), 1, T0 + 100),
        refused(Some("office"), 2, T0 + 101, 0xC004_F06C),
        refused(None, 3, T0 + 102, 0xC004_F042),
        act(None, 4, T0 + 103),
    ]));
    store.apply_batch(&cmds).unwrap();
    // Second batch: renewals and an ePID for Office.
    let mut more = acts(
        (0..10u128)
            .map(|i| act(Some("windows"), i, T0 + DAY_MS / 2))
            .collect(),
    );
    more.push(Command::SetEpid {
        count_group: "office".into(),
        epid: "office-epid".into(),
        time_ms: T0 + DAY_MS / 2,
    });
    store.apply_batch(&more).unwrap();
}

#[test]
fn reopen_restores_identical_state() {
    let dir = tempfile::tempdir().unwrap();
    let expected: HostState = {
        let mut store = open(dir.path());
        populated(&mut store);
        store.flush().unwrap();
        assert!(store.data_dir_size().unwrap() > 0);
        store.state().clone()
    };
    let store = open(dir.path());
    assert_eq!(store.state(), &expected);
    let s = store.state();
    assert_eq!(s.stats().total, 44);
    assert_eq!(s.stats().failed, 2);
    assert_eq!(s.group_stats("office").unwrap().total, 2);
    assert_eq!(s.epid("office"), Some("office-epid"));
    assert!(s.epid("windows").unwrap().starts_with("06401"));
    assert_eq!(
        s.client("windows", &Uuid::from_u128(3)).unwrap().requests,
        2
    );
    assert_eq!(s.request_count(), 44);
    assert_eq!(s.active_clients_at("windows", T0 + DAY_MS), 30);
    assert_eq!(
        s.client("windows", &Uuid::from_u128(3))
            .unwrap()
            .last_seen_ms,
        T0 + DAY_MS / 2
    );
}

#[test]
fn state_survives_drop_without_explicit_flush() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let mut store = open(dir.path());
        populated(&mut store);
        store.state().clone()
    };
    assert_eq!(open(dir.path()).state(), &expected);
}

#[test]
fn duplicates_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let a = act(Some("windows"), 1, T0);
    {
        let mut store = open(dir.path());
        store
            .apply_batch(&acts(vec![act(Some("windows"), 0, T0), a.clone()]))
            .unwrap();
    }
    let mut store = open(dir.path());
    let res = store.apply_batch(&acts(vec![a])).unwrap();
    assert_eq!(
        res,
        vec![CommandResult::Activation(kms_state::ActivationResult {
            active_clients: 2,
            duplicate: true
        })]
    );
    assert_eq!(store.state().stats().total, 2);
}

#[test]
fn pruned_clients_and_request_ids_are_gone_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let old = act(Some("windows"), 1, T0);
    let expected = {
        let mut store = open(dir.path());
        store
            .apply_batch(&acts(vec![old.clone(), act(Some("office"), 2, T0)]))
            .unwrap();
        store.flush().unwrap();
        let res = store
            .apply_batch(&acts(vec![act(Some("windows"), 3, T0 + CLIENT_WINDOW_MS)]))
            .unwrap();
        assert_eq!(
            res[0],
            CommandResult::Activation(kms_state::ActivationResult {
                active_clients: 1,
                duplicate: false
            })
        );
        store.state().clone()
    };
    let store = open(dir.path());
    assert_eq!(store.state(), &expected);
    assert!(store.state().client("windows", &old.cmid).is_none());
    assert!(store
        .state()
        .client("office", &Uuid::from_u128(2))
        .is_none());
    assert!(store.state().request(&old.request_id).is_none());
    assert_eq!(store.state().client_count_total(), 1);
    assert_eq!(store.state().request_count(), 1);
    drop(store);

    // Check the documented key layout directly.
    let db = raw_db(dir.path());
    let key = |k: String| db.get(k.as_bytes()).unwrap();
    assert!(key(format!("client/windows/{}", old.cmid)).is_none());
    assert!(key(format!("request/{}", old.request_id)).is_none());
    assert!(key(format!("client/windows/{}", Uuid::from_u128(3))).is_some());
    assert!(key("stats/global".into()).is_some());
    assert!(key("stats/group/office".into()).is_some());
    let v = key("meta/schema_version".into()).unwrap();
    assert_eq!(serde_json::from_slice::<u32>(&v).unwrap(), SCHEMA_VERSION);
    let clients = db.scan_prefix("client/").count();
    let requests = db.scan_prefix("request/").count();
    // The two first request ids are older than the 24 h retention: forgotten on disk too.
    assert_eq!((clients, requests), (1, 1));
}

#[test]
fn schema_version_mismatch_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    {
        let db = raw_db(dir.path());
        db.insert("meta/schema_version", b"99".to_vec()).unwrap();
        db.flush().unwrap();
    }
    match SledStore::open(dir.path(), StoreOptions::default()) {
        Err(StateError::SchemaVersion {
            found: 99,
            expected,
        }) => {
            assert_eq!(expected, SCHEMA_VERSION)
        }
        other => panic!("expected SchemaVersion error, got {other:?}"),
    }
}

#[test]
fn corrupt_entries_are_reported_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open(dir.path());
        store
            .apply_batch(&acts(vec![act(Some("windows"), 1, T0)]))
            .unwrap();
    }
    let key = format!("client/windows/{}", Uuid::from_u128(1));
    {
        let db = raw_db(dir.path());
        db.insert(key.as_bytes(), b"{not json".to_vec()).unwrap();
        db.flush().unwrap();
    }
    match SledStore::open(dir.path(), StoreOptions::default()) {
        Err(StateError::Corrupt { key: k, .. }) => assert_eq!(k, key),
        other => panic!("expected Corrupt, got {other:?}"),
    }

    // Data without a schema version is not silently treated as a new store.
    let dir = tempfile::tempdir().unwrap();
    {
        let db = raw_db(dir.path());
        db.insert("stats/global", b"{}".to_vec()).unwrap();
        db.flush().unwrap();
    }
    assert!(matches!(
        SledStore::open(dir.path(), StoreOptions::default()),
        Err(StateError::Corrupt { .. })
    ));
}

#[test]
fn configured_retention_is_persisted_and_options_win() {
    let dir = tempfile::tempdir().unwrap();
    let opts = |ms| StoreOptions {
        state_config: StateConfig {
            dedup_retention_ms: ms,
        },
        cache_capacity: 1024 * 1024,
    };
    {
        let store = SledStore::open(dir.path(), opts(1_000)).unwrap();
        assert_eq!(store.state().config().dedup_retention_ms, 1_000);
    }
    let store = SledStore::open(dir.path(), opts(5_000)).unwrap();
    assert_eq!(store.state().config().dedup_retention_ms, 5_000);
    drop(store);
    let db = raw_db(dir.path());
    let cfg: StateConfig =
        serde_json::from_slice(&db.get("meta/config").unwrap().unwrap()).unwrap();
    assert_eq!(cfg.dedup_retention_ms, 5_000);
}

#[test]
fn replace_state_installs_a_snapshot() {
    let src = tempfile::tempdir().unwrap();
    let snapshot = {
        let mut store = open(src.path());
        populated(&mut store);
        serde_json::to_vec(store.state()).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open(dir.path());
        // Pre-existing data that the snapshot does not contain must disappear.
        store
            .apply_batch(&acts(vec![act(Some("other"), 999, T0)]))
            .unwrap();
        store
            .replace_state(serde_json::from_slice(&snapshot).unwrap())
            .unwrap();
    }
    let store = open(dir.path());
    let expected: HostState = serde_json::from_slice(&snapshot).unwrap();
    assert_eq!(store.state(), &expected);
    assert!(store.state().group_stats("other").is_none());
}

const CRASH_CHILD_ENV: &str = "KMS_STATE_CRASH_CHILD_DIR";
const BATCH: u64 = 12;

/// Child side of the crash test: writes batches of `BATCH` new clients forever (bounded), all
/// tagged with their batch number, and marks when the first flush is done.
fn crash_child(dir: &Path) {
    let mut store = open(dir);
    let start = Instant::now();
    for b in 0..1_000_000u64 {
        let cmds = acts(
            (0..BATCH)
                .map(|i| {
                    let mut a = act(Some("windows"), u128::from(b * BATCH + i), T0 + b);
                    a.machine_name = format!("batch-{b}");
                    a
                })
                .collect(),
        );
        store.apply_batch(&cmds).unwrap();
        if b % 5 == 0 {
            store.flush().unwrap();
            if b == 0 {
                std::fs::write(dir.join("started"), b"").unwrap();
            }
        }
        if start.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    // Never reached in the test: the parent kills us first. Do not flush on drop.
    std::process::abort();
}

#[test]
fn batch_is_atomic_across_a_crash() {
    if let Some(dir) = std::env::var_os(CRASH_CHILD_ENV) {
        crash_child(Path::new(&dir));
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for round in 0..3u64 {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("db");
        std::fs::create_dir_all(&data).unwrap();
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "batch_is_atomic_across_a_crash",
                "--test-threads=1",
            ])
            .env(CRASH_CHILD_ENV, &data)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !data.join("started").exists() {
            assert!(Instant::now() < deadline, "child never started writing");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(150 + 170 * round));
        child.kill().unwrap(); // SIGKILL: no destructor, no flush.
        child.wait().unwrap();

        let store = open(&data);
        let s = store.state();
        let total = s.stats().total;
        assert!(total >= BATCH, "the flushed first batch must survive");
        assert_eq!(
            total % BATCH,
            0,
            "a batch was half written: {total} requests"
        );
        assert_eq!(s.client_count_total() as u64, total);
        assert_eq!(s.request_count() as u64, total);
        assert_eq!(s.group_stats("windows").unwrap().total, total);
        let mut per_batch = std::collections::BTreeMap::<String, u64>::new();
        for c in s.clients(Default::default()) {
            *per_batch.entry(c.machine_name.clone()).or_default() += 1;
        }
        assert!(per_batch.values().all(|&n| n == BATCH), "{per_batch:?}");
        assert_eq!(per_batch.len() as u64, total / BATCH);
    }
}
