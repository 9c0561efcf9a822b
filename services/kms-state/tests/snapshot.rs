//! The snapshot codec: lossless round trips, deterministic bytes, and rejection of cut or
//! damaged files with a typed error.

mod common;

use common::*;
use kms_protocol::LicenseState;
use kms_state::{
    Activation, Command, HostIdentity, HostState, Outcome, StateConfig, StateError,
    CLIENT_WINDOW_MS, MAX_RECORD_LEN, SNAPSHOT_MAGIC, SNAPSHOT_SCHEMA_VERSION,
};
use proptest::prelude::*;
use uuid::Uuid;

fn bytes_of(s: &HostState) -> Vec<u8> {
    let mut out = Vec::new();
    let n = s.write_snapshot(&mut out).expect("write snapshot");
    assert_eq!(n, out.len() as u64, "reported size");
    out
}

fn read(bytes: &[u8]) -> Result<HostState, StateError> {
    HostState::read_snapshot(bytes)
}

/// A state with every kind of record: two groups, refused and unknown-product requests,
/// unusual license states, long and non-ASCII machine names, ePIDs.
fn sample_state() -> HostState {
    let mut s = HostState::new(StateConfig {
        dedup_retention_ms: 3_600_000,
        ..StateConfig::default()
    });
    for i in 0..20u128 {
        let mut a = act(
            Some(if i % 3 == 0 { "office" } else { "windows" }),
            i,
            T0 + i as u64,
        );
        a.license_state = LicenseState::from_wire((i % 9) as u32);
        a.client_vm = i % 2 == 1;
        if i % 5 == 0 {
            a.machine_name = format!("a-long-machine-name-{i}.dépt.campus.example");
        }
        count(&mut s, &a);
    }
    count(&mut s, &refused(None, 100, T0 + 50, 0x8007_000D));
    count(&mut s, &refused(Some("office"), 101, T0 + 51, 0xC004_F06C));
    s.apply(&Command::SetEpid {
        count_group: "windows".into(),
        epid: "55041-00206-551-123456-03-1041-9200.0000-0012025".into(),
        time_ms: T0,
    });
    s
}

#[test]
fn round_trip_is_exact_and_stable() {
    let s = sample_state();
    let bytes = bytes_of(&s);
    let back = read(&bytes).unwrap();
    assert_eq!(back, s);
    assert_eq!(bytes_of(&back), bytes, "re-encoding gives the same bytes");
    assert_eq!(
        back.client("windows", &Uuid::from_u128(5)),
        s.client("windows", &Uuid::from_u128(5))
    );

    // Indexes are rebuilt: expiry still works on the restored state.
    let mut restored = back;
    count(&mut restored, &act(Some("windows"), 500, T0 + 31 * DAY_MS));
    assert_eq!(restored.client_count_total(), 1);
    assert_eq!(restored.request_count(), 1);
}

#[test]
fn empty_state_round_trips() {
    for s in [
        HostState::default(),
        HostState::new(StateConfig {
            dedup_retention_ms: 0,
            ..StateConfig::default()
        }),
    ] {
        assert_eq!(read(&bytes_of(&s)).unwrap(), s);
    }
}

#[test]
fn serde_form_is_the_snapshot() {
    let s = sample_state();
    let json = serde_json::to_vec(&s).unwrap();
    let back: HostState = serde_json::from_slice(&json).unwrap();
    assert_eq!(back, s);
    let mut corrupt: Vec<u8> = serde_json::from_slice(&json).unwrap();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    let err = serde_json::from_slice::<HostState>(&serde_json::to_vec(&corrupt).unwrap());
    assert!(err.unwrap_err().to_string().contains("checksum"));
}

#[test]
fn equal_states_from_different_histories_give_equal_bytes() {
    // Same commands, but one state went through a snapshot and a clone halfway.
    let cmds: Vec<Command> = (0..50u128)
        .map(|i| Command::Activation(act(Some("windows"), i % 17, T0 + i as u64 * 1000)))
        .collect();
    let mut a = HostState::default();
    for c in &cmds {
        a.apply(c);
    }
    let mut b = HostState::default();
    for c in &cmds[..25] {
        b.apply(c);
    }
    let mut b = read(&bytes_of(&b)).unwrap().clone();
    for c in &cmds[25..] {
        b.apply(c);
    }
    assert_eq!(a, b);
    assert_eq!(bytes_of(&a), bytes_of(&b));
}

#[test]
fn clone_is_a_point_in_time_view() {
    let mut s = sample_state();
    let before = bytes_of(&s);
    let view = s.clone();
    for i in 0..100u128 {
        count(
            &mut s,
            &act(Some("windows"), 1_000 + i, T0 + 100 + i as u64),
        );
    }
    count(&mut s, &act(Some("windows"), 7, T0 + 40 * DAY_MS));
    assert_eq!(
        bytes_of(&view),
        before,
        "the clone did not see later commands"
    );
    assert_ne!(bytes_of(&s), before);
}

#[test]
fn every_cut_is_rejected() {
    let bytes = bytes_of(&sample_state());
    for len in 0..bytes.len() {
        match read(&bytes[..len]) {
            Err(StateError::Truncated { .. }) => {}
            other => panic!("cut at {len} of {}: {other:?}", bytes.len()),
        }
    }
}

#[test]
fn every_bit_flip_is_rejected() {
    // Every bit of the tiny state, and a spread of bits (every 7th) of the larger one.
    let tiny = bytes_of(&tiny_state());
    let sample = bytes_of(&sample_state());
    let flips = (0..tiny.len() * 8)
        .map(|i| (&tiny, i))
        .chain((0..sample.len() * 8).step_by(7).map(|i| (&sample, i)));
    for (bytes, i) in flips {
        let mut damaged = bytes.clone();
        damaged[i / 8] ^= 1 << (i % 8);
        assert!(
            read(&damaged).is_err(),
            "flip of bit {} of byte {} accepted",
            i % 8,
            i / 8
        );
    }
}

#[test]
fn header_errors_are_typed() {
    let bytes = bytes_of(&sample_state());

    let mut wrong = bytes.clone();
    wrong[..8].copy_from_slice(b"NOTSTATE");
    assert!(matches!(read(&wrong), Err(StateError::BadMagic { found }) if &found == b"NOTSTATE"));

    let mut newer = bytes.clone();
    newer[8..12].copy_from_slice(&(SNAPSHOT_SCHEMA_VERSION + 1).to_le_bytes());
    assert!(matches!(
        read(&newer),
        Err(StateError::SchemaVersion { found, expected })
            if found == SNAPSHOT_SCHEMA_VERSION + 1 && expected == SNAPSHOT_SCHEMA_VERSION
    ));

    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(read(&longer), Err(StateError::TrailingData)));

    let mut crc = bytes.clone();
    let last = crc.len() - 1;
    crc[last] ^= 0x80;
    assert!(matches!(read(&crc), Err(StateError::Checksum { .. })));

    assert!(matches!(
        read(&[]),
        Err(StateError::Truncated {
            records: 0,
            part: "header"
        })
    ));
}

#[test]
fn record_level_errors_are_typed() {
    let header: Vec<u8> = SNAPSHOT_MAGIC
        .iter()
        .copied()
        .chain(SNAPSHOT_SCHEMA_VERSION.to_le_bytes())
        .collect();
    let with = |tail: &[u8]| -> Vec<u8> { header.iter().chain(tail).copied().collect() };

    // A length beyond the limit: refused before allocating.
    let mut huge = Vec::new();
    prost_len(MAX_RECORD_LEN + 1, &mut huge);
    assert!(matches!(
        read(&with(&huge)),
        Err(StateError::RecordTooLarge { record: 0, .. })
    ));
    // A varint that never ends.
    assert!(matches!(
        read(&with(&[0xff; 11])),
        Err(StateError::BadLength { record: 0 })
    ));
    // Bytes that are not a Record message (field 1, wire type 7 does not exist).
    assert!(matches!(
        read(&with(&[1, 0x0f])),
        Err(StateError::Decode { record: 0, .. })
    ));
    // An empty Record (no kind).
    assert!(matches!(
        read(&with(&[0])),
        Err(StateError::InvalidRecord { record: 0, .. })
    ));
    // An End record first: the config is missing.
    assert!(matches!(
        read(&with(&[2, 0x7a, 0])),
        Err(StateError::UnexpectedRecord {
            record: 0,
            found: "end",
            expected: "config"
        })
    ));
}

/// Reads the tiny golden state after replacing each `(from, to)` once in its hex (and the
/// CRC after them): a file whose checksum is right, as a buggy writer would make it. Returns
/// the error the reader gives.
fn read_rewritten(replacements: &[(&str, &str)]) -> StateError {
    let mut body = TINY_GOLDEN[..TINY_GOLDEN.len() - 8].to_owned();
    for (from, to) in replacements {
        assert!(body.contains(from), "the golden layout changed: {from}");
        body = body.replacen(from, to, 1);
    }
    let crc = crc32fast::hash(&hex::decode(&body).unwrap());
    body.push_str(&hex::encode(crc.to_le_bytes()));
    read(&hex::decode(&body).unwrap()).unwrap_err()
}

/// A client listed in both the counted and the retired section of its window is refused.
#[test]
fn a_client_both_counted_and_retired_is_refused() {
    let client = concat!(
        "30322e0a10000000000000000000000000000000c1120370633120882730073801",
        "408827508827",
        "58b8e093800c60016801",
    );
    let err = read_rewritten(&[
        (
            "0d220b0a0777696e646f77731001",
            "0f220d0a0777696e646f777310011801", // Window "windows", 1 counted, 1 retired
        ),
        (client, &format!("{client}{client}")),
        (
            "107a0e0808100218012001280130013801",
            "107a0e0809100218012001280130023801", // End: 9 records, 2 clients
        ),
    ]);
    assert!(
        matches!(
            err,
            StateError::InvalidRecord {
                kind: "client",
                reason: "a client both counted and retired",
                ..
            }
        ),
        "{err}"
    );
}

/// The same request id listed twice (at two times, so the expiry order holds) is refused: a
/// written state never remembers an id twice.
#[test]
fn a_request_id_listed_twice_is_refused() {
    let request = "193a170a10000000000000000000000000000000aa1088271801";
    let again = "183a160a10000000000000000000000000000000aa10011801"; // aa again, 1 ms later
    let err = read_rewritten(&[
        (request, &format!("{request}{again}")),
        (
            "107a0e0808100218012001280130013801",
            "107a0e0809100218012001280130013802", // End: 9 records, 2 requests
        ),
    ]);
    assert!(
        matches!(
            err,
            StateError::InvalidRecord {
                reason: "a request id listed twice",
                ..
            }
        ),
        "{err}"
    );
}

fn prost_len(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// One client with one request in one group, an ePID: one record of every kind.
fn tiny_state() -> HostState {
    let mut s = HostState::new(StateConfig {
        dedup_retention_ms: 1_000,
        ..StateConfig::default()
    });
    s.apply(&Command::Activation(Activation {
        request_id: Uuid::from_u128(0xAA),
        time_ms: 5_000,
        count_group: Some("windows".into()),
        product_group: Some("win10".into()),
        kms_counted_id: Uuid::from_u128(1),
        application_id: Uuid::from_u128(2),
        sku_id: Uuid::from_u128(3),
        cmid: Uuid::from_u128(0xC1),
        machine_name: "pc1".into(),
        client_vm: true,
        license_state: LicenseState::InitialGrace,
        grace_minutes: 7,
        required_count: 25,
        protocol_major: 6,
        answered_by: 1,
        outcome: Outcome::Answered,
    }));
    s.apply(&Command::SetEpid {
        count_group: "windows".into(),
        epid: "E".into(),
        time_ms: 5_001,
    });
    s
}

/// The tiny state's snapshot, record by record.
const TINY_GOLDEN: &str = concat!(
    "4b4d535354415445", // magic "KMSSTATE"
    "02000000", // schema version 2
    "0b0a0908e8071080c0dfaf40", // Config { dedup_retention_ms: 1000, inventory_retention_ms: 200 days }
    "06120410013001", // GroupStats, global: total 1, initial_grace 1
    "0f120d0a0777696e646f777310013001", // GroupStats "windows": total 1, initial_grace 1
    "111a0f0a0777696e646f7773120145188927", // Epid "windows" = "E", set_ms 5001
    "0d220b0a0777696e646f77731001", // Window "windows", 1 counted client, none retired
    "472a450a0577696e31301210000000000000000000000000000000031a10000000000000000000000000000000012210000000000000000000000000000000022802301938064001", // Profile 0: "win10", sku 3, kms 1, app 2, state 2, count 25, v6, VM
    concat!(
        "30322e0a10000000000000000000000000000000c1120370633120882730073801", // Client c1 "pc1", profile 0, last_seen 5000, age 0, grace 7, 1 request
        "408827", // last request 5000 (no success: a count of 1 is below its minimum of 25)
        "508827", "58b8e093800c", // last failure 5000, 0xC004F038
        "6001", "6801", // 1 consecutive failure, answered by node 1
    ),
    "193a170a10000000000000000000000000000000aa1088271801", // Request aa, time 5000, active 1
    "107a0e0808100218012001280130013801", // End: 8 records; 2 stats, 1 epid, window, profile, client, request
    "1c9fefb6", // CRC-32
);

/// The same state as written by schema 1 (before the inventory kept records beyond the
/// count): still read.
const TINY_GOLDEN_V1: &str = concat!(
    "4b4d535354415445", // magic "KMSSTATE"
    "01000000", // schema version 1
    "050a0308e807", // Config { dedup_retention_ms: 1000 }
    "06120410013001", // GroupStats, global: total 1, initial_grace 1
    "0f120d0a0777696e646f777310013001", // GroupStats "windows": total 1, initial_grace 1
    "111a0f0a0777696e646f7773120145188927", // Epid "windows" = "E", set_ms 5001
    "0d220b0a0777696e646f77731001", // Window "windows", 1 client
    "472a450a0577696e31301210000000000000000000000000000000031a10000000000000000000000000000000012210000000000000000000000000000000022802301938064001", // Profile 0: "win10", sku 3, kms 1, app 2, state 2, count 25, v6, VM
    "20321e0a10000000000000000000000000000000c1120370633120882730073801", // Client c1 "pc1", profile 0, last_seen 5000, age 0, grace 7, 1 request
    "193a170a10000000000000000000000000000000aa1088271801", // Request aa, time 5000, active 1
    "107a0e0808100218012001280130013801", // End: 8 records; 2 stats, 1 epid, window, profile, client, request
    "044dff10", // CRC-32
);

/// A schema-1 file reads with every client counted, its last request and last success its
/// last counted request, no failure, and the default inventory retention.
#[test]
fn schema_1_snapshots_still_read() {
    let s = read(&hex::decode(TINY_GOLDEN_V1).unwrap()).unwrap();
    let c = s.client("windows", &Uuid::from_u128(0xc1)).unwrap();
    assert!(c.counted);
    assert_eq!(
        (c.first_seen_ms, c.last_seen_ms, c.last_request_ms),
        (5_000, 5_000, 5_000)
    );
    assert_eq!(c.last_success_ms, Some(5_000));
    assert_eq!((c.last_failure, c.consecutive_failures), (None, 0));
    assert!(c.previous_names.is_empty());
    assert_eq!(
        s.config().inventory_retention_ms,
        kms_state::DEFAULT_INVENTORY_RETENTION_MS
    );
    assert_eq!(s.active_clients_at("windows", 5_000), 1);
}

/// A tiny state's exact bytes. The format is deterministic; this pins it so that a change of
/// layout is deliberate. To update after an intended change (with a new
/// SNAPSHOT_SCHEMA_VERSION if old files no longer read the same), run
/// `cargo test -p kms-state --test snapshot golden -- --nocapture` and copy the printed hex.
#[test]
fn golden_bytes_of_a_tiny_snapshot() {
    let s = tiny_state();
    let hex = hex::encode(bytes_of(&s));
    println!("{hex}");
    assert_eq!(hex, TINY_GOLDEN);
    assert_eq!(read(&hex::decode(TINY_GOLDEN).unwrap()).unwrap(), s);
    // Written before host identities existed, and still read: no identity.
    assert_eq!(s.host_identity(), None);
}

/// The tiny state plus a host identity: the identity record sits between the statistics and
/// the ePIDs, and the end marker counts it (field 8). Update as above.
#[test]
fn golden_bytes_of_a_tiny_snapshot_with_a_host_identity() {
    let mut s = tiny_state();
    s.apply(&Command::SetHostIdentity(HostIdentity {
        hwid: *b"\x01\x23\x45\x67\x89\xab\xcd\xef",
        build: 20348,
        platform: 3612,
        set_ms: 5_002,
    }));
    let hex = hex::encode(bytes_of(&s));
    println!("{hex}");
    // The tiny state's records, with the identity record before the ePID, and a new end
    // marker (9 records, host_identity 1) and checksum.
    let golden = TINY_GOLDEN
        .replacen(
            "111a0f0a",
            concat!(
                "1642140a080123456789abcdef10fc9e01189c1c208a27", // hwid, build 20348, platform 3612, set_ms 5002
                "111a0f0a",
            ),
            1,
        )
        .replacen(
            "107a0e08081002180120012801300138011c9fefb6",
            "127a10080910021801200128013001380140015cbad0e9",
            1,
        );
    assert_ne!(golden, TINY_GOLDEN);
    assert_eq!(hex, golden);
    assert_eq!(read(&hex::decode(&golden).unwrap()).unwrap(), s);
}

// ---- property: any history round-trips and keeps behaving identically ----

#[derive(Debug, Clone)]
struct Op {
    req: u8,
    cmid: u8,
    group: usize,
    state: u32,
    refused: bool,
    long_name: bool,
    delta: i64,
}

const GROUPS: [Option<&str>; 4] = [Some("windows"), Some("office"), Some("office2010"), None];

fn op() -> impl Strategy<Value = Op> {
    let day = 24 * 3600 * 1000i64;
    (
        any::<u8>(),
        0u8..60,
        0usize..4,
        prop_oneof![0u32..9, Just(u32::MAX)],
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.2),
        prop_oneof![
            4 => 0i64..3_600_000,
            2 => 0i64..(10 * day),
            1 => -day..0,
            1 => Just(CLIENT_WINDOW_MS as i64),
        ],
    )
        .prop_map(|(req, cmid, group, state, refused, long_name, delta)| Op {
            req,
            cmid,
            group,
            state,
            refused,
            long_name,
            delta,
        })
}

/// Commands for `ops`, times starting from `*t` (left at the last command's time).
fn commands(ops: &[Op], t: &mut u64) -> Vec<Command> {
    ops.iter()
        .map(|o| {
            *t = t.saturating_add_signed(o.delta);
            let t = *t;
            if o.req % 29 == 0 {
                return Command::SetHostIdentity(HostIdentity {
                    hwid: [o.cmid; 8],
                    build: 20348,
                    platform: 3612,
                    set_ms: t,
                });
            }
            if o.req % 31 == 0 {
                return Command::ReplaceHostIdentity {
                    identity: HostIdentity {
                        hwid: [o.cmid ^ 0xff; 8],
                        build: 26100,
                        platform: 3612,
                        set_ms: t,
                    },
                    epids: [("windows".to_string(), format!("epid-r{}", o.cmid))].into(),
                };
            }
            if o.req % 23 == 0 {
                return Command::SetEpid {
                    count_group: GROUPS[o.group % 3].unwrap().into(),
                    epid: format!("epid-{}", o.cmid),
                    time_ms: t,
                };
            }
            Command::Activation(Activation {
                request_id: Uuid::from_u128(u128::from(o.req)),
                time_ms: t,
                count_group: GROUPS[o.group].map(str::to_owned),
                product_group: (o.cmid % 4 != 0).then(|| format!("pg{}", o.cmid % 3)),
                kms_counted_id: Uuid::from_u128(7),
                application_id: Uuid::from_u128(8),
                sku_id: Uuid::from_u128(u128::from(o.cmid % 5)),
                cmid: Uuid::from_u128(u128::from(o.cmid)),
                machine_name: if o.long_name {
                    format!("machine-{}.a-rather-long.domain.example", o.cmid)
                } else {
                    format!("m{}", o.cmid)
                },
                client_vm: o.cmid % 2 == 0,
                license_state: LicenseState::from_wire(o.state),
                grace_minutes: o.state.wrapping_mul(100),
                required_count: 25,
                protocol_major: 4 + u16::from(o.cmid % 3),
                answered_by: 1,
                outcome: if o.refused {
                    Outcome::Refused {
                        hresult: 0xC004_F042,
                    }
                } else {
                    Outcome::Answered
                },
            })
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn snapshot_round_trip_preserves_state_and_behaviour(
        before in prop::collection::vec(op(), 0..150),
        after in prop::collection::vec(op(), 0..60),
        retention in prop_oneof![Just(kms_state::DEFAULT_DEDUP_RETENTION_MS), 0u64..(2 * 24 * 3600 * 1000)],
    ) {
        let mut a = HostState::new(StateConfig {
            dedup_retention_ms: retention,
            ..StateConfig::default()
        });
        let mut t = T0;
        for c in commands(&before, &mut t) {
            a.apply(&c);
        }
        let bytes = bytes_of(&a);
        let mut b = read(&bytes).unwrap();
        prop_assert_eq!(&b, &a);
        prop_assert_eq!(bytes_of(&b), bytes);

        // Continue from where `before` stopped, on both.
        for c in commands(&after, &mut t) {
            prop_assert_eq!(a.apply(&c), b.apply(&c));
        }
        prop_assert_eq!(&b, &a);
        prop_assert_eq!(bytes_of(&b), bytes_of(&a));
    }
}

/// How a test damages a valid snapshot.
#[derive(Debug, Clone)]
enum Damage {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Damage::Set(i, b)),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Damage::Insert(i, b)),
        1 => any::<usize>().prop_map(Damage::Remove),
        1 => any::<usize>().prop_map(Damage::Truncate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever happens to the bytes, reading returns (never panics), and a changed file is
    /// never read back as a different state without an error.
    #[test]
    fn damaged_snapshots_never_panic(damages in prop::collection::vec(damage(), 1..6)) {
        let original = sample_state();
        let mut bytes = bytes_of(&original);
        for d in damages {
            let len = bytes.len().max(1);
            match d {
                Damage::Set(i, b) => { if let Some(x) = bytes.get_mut(i % len) { *x = b } }
                Damage::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
                Damage::Remove(i) => { if !bytes.is_empty() { bytes.remove(i % len); } }
                Damage::Truncate(i) => bytes.truncate(i % len),
            }
        }
        if let Ok(state) = read(&bytes) {
            prop_assert_eq!(state, original, "damaged bytes decoded to another state");
        }
    }

    /// Random records after a valid header are rejected or decoded, never a panic.
    #[test]
    fn garbage_after_the_header_never_panics(tail in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        bytes.extend_from_slice(&SNAPSHOT_SCHEMA_VERSION.to_le_bytes());
        bytes.extend_from_slice(&tail);
        prop_assert!(read(&bytes).is_err());
    }
}

#[test]
fn large_state_round_trips() {
    // More clients and request ids than the reader inserts per chunk.
    let mut s = HostState::default();
    for i in 0..20_000u128 {
        let group = if i % 4 == 0 { "office" } else { "windows" };
        count(&mut s, &act(Some(group), i, T0 + i as u64));
    }
    let bytes = bytes_of(&s);
    let back = read(&bytes).unwrap();
    assert_eq!(back.client_count_total(), 20_000);
    assert_eq!(back.request_count(), 20_000);
    assert_eq!(back, s);
    assert_eq!(bytes_of(&back), bytes);
}
