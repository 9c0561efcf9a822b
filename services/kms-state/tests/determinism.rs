//! Property tests: determinism, invariants, serde round trip, and a naive reference model.

mod common;

use std::collections::{BTreeMap, HashMap};

use kms_protocol::LicenseState;
use kms_state::{
    Activation, Command, CommandResult, HostState, Outcome, StateConfig, CLIENT_WINDOW_MS,
};
use proptest::prelude::*;
use uuid::Uuid;

const GROUPS: [Option<&str>; 4] = [Some("windows"), Some("office"), Some("office2010"), None];

#[derive(Debug, Clone)]
enum Op {
    Act {
        req: u8,
        cmid: u8,
        group: usize,
        state: u32,
        refused: bool,
        vm: bool,
    },
    Epid {
        group: usize,
        epid: u8,
    },
    Retention {
        days: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (any::<u8>(), 0u8..40, 0usize..4, 0u32..9, prop::bool::weighted(0.15), any::<bool>())
            .prop_map(|(req, cmid, group, state, refused, vm)| Op::Act { req, cmid, group, state, refused, vm }),
        1 => (0usize..3, 0u8..3).prop_map(|(group, epid)| Op::Epid { group, epid }),
        1 => (20u64..70).prop_map(|days| Op::Retention { days }),
    ]
}

/// Builds commands; `step` maps each op's delta to a time.
fn commands(ops: &[(Op, i64)], monotone: bool) -> Vec<Command> {
    let mut t: u64 = common::T0;
    ops.iter()
        .map(|(op, delta)| {
            t = if monotone {
                t.saturating_add(delta.unsigned_abs())
            } else {
                t.saturating_add_signed(*delta)
            };
            match op {
                Op::Act {
                    req,
                    cmid,
                    group,
                    state,
                    refused,
                    vm,
                } => Command::Activation(Activation {
                    request_id: Uuid::from_u128(u128::from(*req) + 1),
                    time_ms: t,
                    count_group: GROUPS[*group].map(str::to_owned),
                    product_group: Some(format!("pg{}", cmid % 3)),
                    kms_counted_id: Uuid::from_u128(7),
                    application_id: Uuid::from_u128(8),
                    sku_id: Uuid::from_u128(9),
                    cmid: Uuid::from_u128(u128::from(*cmid)),
                    machine_name: format!("m{cmid}"),
                    client_vm: *vm,
                    license_state: LicenseState::from_wire(*state),
                    grace_minutes: *state * 100,
                    required_count: 25,
                    protocol_major: 6,
                    answered_by: u64::from(*req % 3),
                    outcome: if *refused {
                        Outcome::Refused {
                            hresult: 0xC004_F042,
                        }
                    } else {
                        Outcome::Answered
                    },
                }),
                Op::Epid { group, epid } => Command::SetEpid {
                    count_group: GROUPS[*group].unwrap().to_owned(),
                    epid: format!("epid-{epid}"),
                    time_ms: t,
                },
                Op::Retention { days } => Command::SetInventoryRetention {
                    retention_ms: days * 24 * 3600 * 1000,
                    time_ms: t,
                },
            }
        })
        .collect()
}

fn delta() -> impl Strategy<Value = i64> {
    let day = 24 * 3600 * 1000i64;
    prop_oneof![
        4 => 0i64..3_600_000,
        2 => 0i64..(10 * day),
        1 => (25 * day)..(35 * day),
        1 => -day..0,
        1 => Just(CLIENT_WINDOW_MS as i64),
    ]
}

fn check_invariants(s: &HostState) {
    let stats = s.stats();
    assert_eq!(stats.total, stats.failed + stats.by_license_state.sum());
    let mut group_total = 0;
    for g in s.groups() {
        if let Some(gs) = s.group_stats(g) {
            assert_eq!(gs.total, gs.failed + gs.by_license_state.sum());
            group_total += gs.total;
        }
    }
    assert!(group_total <= stats.total);
    let listed = s.clients(Default::default()).count();
    assert_eq!(listed, s.inventory_len());
    let counted = s.clients(Default::default()).filter(|r| r.counted).count();
    assert_eq!(counted, s.client_count_total());
    assert_eq!(listed, counted + s.retired_len());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn same_commands_give_same_state_and_results(
        ops in prop::collection::vec((op(), delta()), 0..120),
        retention in prop_oneof![Just(kms_state::DEFAULT_DEDUP_RETENTION_MS), 0u64..(3 * 24 * 3600 * 1000)],
    ) {
        let cmds = commands(&ops, false);
        let config = StateConfig {
            dedup_retention_ms: retention,
            ..StateConfig::default()
        };
        let mut a = HostState::new(config);
        let mut b = HostState::new(config);
        for cmd in &cmds {
            let ra = a.apply(cmd);
            let rb = b.apply(cmd);
            prop_assert_eq!(ra, rb);
            check_invariants(&a);
        }
        prop_assert_eq!(&a, &b);
        // Snapshot round trip (the Raft snapshot format) preserves the state exactly,
        // and the restored state keeps behaving identically.
        let json = serde_json::to_vec(&a).unwrap();
        let mut c: HostState = serde_json::from_slice(&json).unwrap();
        prop_assert_eq!(&c, &a);
        for cmd in &cmds {
            prop_assert_eq!(a.apply(cmd), c.apply(cmd));
        }
        prop_assert_eq!(&c, &a);
    }

    /// With non-decreasing times, compare against a naive model: count = distinct CMIDs of the
    /// group whose latest answered request is less than 30 days old.
    #[test]
    fn counts_match_naive_model(ops in prop::collection::vec((op(), delta()), 0..150)) {
        let cmds = commands(&ops, true);
        let retention = kms_state::DEFAULT_DEDUP_RETENTION_MS;
        let mut s = HostState::default();
        let mut last_seen: BTreeMap<(String, Uuid), u64> = BTreeMap::new();
        let mut applied: HashMap<Uuid, (u64, u32)> = HashMap::new();
        let mut totals: BTreeMap<Option<String>, (u64, u64)> = BTreeMap::new();
        let mut epids: BTreeMap<String, String> = BTreeMap::new();
        // Inventory model: (group or "unknown", cmid) -> last request of any outcome.
        let mut last_request: BTreeMap<(String, Uuid), u64> = BTreeMap::new();
        let mut inventory_retention = kms_state::DEFAULT_INVENTORY_RETENTION_MS;
        for cmd in &cmds {
            let res = s.apply(cmd);
            match cmd {
                Command::SetEpid { count_group, epid, .. } => {
                    let want = epids.entry(count_group.clone()).or_insert_with(|| epid.clone());
                    prop_assert_eq!(res, CommandResult::Epid(want.clone()));
                }
                Command::SetHostIdentity(_) | Command::ReplaceHostIdentity { .. } => {
                    prop_assert!(matches!(res, CommandResult::HostIdentity(_)));
                }
                Command::SetInventoryRetention { retention_ms, .. } => {
                    inventory_retention = (*retention_ms).max(CLIENT_WINDOW_MS);
                    prop_assert_eq!(res, CommandResult::InventoryRetention(inventory_retention));
                }
                Command::Activation(a) => {
                    let CommandResult::Activation(r) = res else { panic!("wrong result") };
                    let t = a.time_ms;
                    if let Some(&(t0, n)) = applied.get(&a.request_id) {
                        if t0 + retention > t {
                            prop_assert!(r.duplicate);
                            prop_assert_eq!(r.active_clients, n);
                            continue;
                        }
                    }
                    prop_assert!(!r.duplicate);
                    let refused = !a.outcome.is_answered();
                    let mut bump = |key: Option<String>| {
                        let e = totals.entry(key).or_default();
                        e.0 += 1;
                        e.1 += u64::from(refused);
                    };
                    bump(None);
                    if let Some(g) = &a.count_group {
                        bump(Some(g.clone()));
                    }
                    if let (Some(g), false) = (&a.count_group, refused) {
                        last_seen.insert((g.clone(), a.cmid), t);
                    }
                    let expected = a.count_group.as_ref().map_or(0, |g| {
                        last_seen
                            .iter()
                            .filter(|((lg, _), &ls)| lg == g && ls + CLIENT_WINDOW_MS > t)
                            .count() as u32
                    });
                    prop_assert_eq!(r.active_clients, expected);
                    applied.insert(a.request_id, (t, expected));
                    let key = a.count_group.clone().unwrap_or_else(|| kms_state::UNKNOWN_GROUP.into());
                    // Pruning happens before the request is recorded and is final.
                    last_request.retain(|_, lr| lr.saturating_add(inventory_retention) > t);
                    let e = last_request.entry((key, a.cmid)).or_insert(t);
                    *e = (*e).max(t);
                    prop_assert_eq!(s.inventory_len(), last_request.len());
                    for g in ["windows", "office", "office2010"] {
                        let naive = last_seen
                            .iter()
                            .filter(|((lg, _), &ls)| lg == g && ls + CLIENT_WINDOW_MS > t + 1)
                            .count() as u32;
                        prop_assert_eq!(s.active_clients_at(g, t + 1), naive);
                    }
                }
            }
        }
        for (key, (total, failed)) in totals {
            let st = match &key {
                None => *s.stats(),
                Some(g) => *s.group_stats(g).unwrap(),
            };
            prop_assert_eq!((st.total, st.failed), (total, failed));
        }
    }
}
