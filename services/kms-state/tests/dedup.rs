//! Idempotency by request id.

mod common;

use common::*;
use kms_state::{
    ActivationResult, Command, CommandResult, HostState, StateConfig, DEFAULT_DEDUP_RETENTION_MS,
};

#[test]
fn duplicate_request_is_counted_once_and_returns_the_same_result() {
    let mut s = HostState::default();
    count(&mut s, &act(Some("windows"), 1, T0));
    let a = act(Some("windows"), 2, T0 + 10);
    assert_eq!(count(&mut s, &a), 2);
    count(&mut s, &act(Some("windows"), 3, T0 + 20));

    let before = s.clone();
    // Re-proposed (e.g. after a leader change), possibly stamped later: same answer, no change.
    for t in [a.time_ms, T0 + 30, T0 + DEFAULT_DEDUP_RETENTION_MS - 1] {
        let dup = kms_state::Activation {
            time_ms: t,
            ..a.clone()
        };
        let res = s.apply(&Command::Activation(dup));
        assert_eq!(
            res,
            CommandResult::Activation(ActivationResult {
                active_clients: 2,
                duplicate: true
            })
        );
        assert_eq!(s, before, "a duplicate changes nothing");
    }
    assert_eq!(s.stats().total, 3);
    assert_eq!(s.client("windows", &a.cmid).unwrap().requests, 1);
}

#[test]
fn request_ids_are_forgotten_after_retention() {
    let mut s = HostState::default();
    let a = act(Some("windows"), 1, T0);
    count(&mut s, &a);
    assert!(s.request(&a.request_id).is_some());

    // A later command prunes ids whose retention is over.
    count(
        &mut s,
        &act(Some("windows"), 2, T0 + DEFAULT_DEDUP_RETENTION_MS - 1),
    );
    assert!(s.request(&a.request_id).is_some());
    s.apply(&Command::Activation(act(
        Some("windows"),
        3,
        T0 + DEFAULT_DEDUP_RETENTION_MS,
    )));
    assert!(s.request(&a.request_id).is_none());
    assert_eq!(s.request_count(), 2);

    // The same id arriving after its retention is a new request (counted again).
    let again = kms_state::Activation {
        time_ms: T0 + DEFAULT_DEDUP_RETENTION_MS + 5,
        ..a.clone()
    };
    let r = apply(&mut s, &again);
    assert!(!r.duplicate);
    assert_eq!(r.active_clients, 3);
    assert_eq!(s.stats().total, 4);
    assert_eq!(s.client("windows", &a.cmid).unwrap().requests, 2);
}

#[test]
fn expired_id_is_new_even_without_a_pruning_command_in_between() {
    let mut s = HostState::new(StateConfig {
        dedup_retention_ms: 1_000,
        ..StateConfig::default()
    });
    let a = act(Some("office"), 1, T0);
    count(&mut s, &a);
    let late = kms_state::Activation {
        time_ms: T0 + 1_000,
        ..a.clone()
    };
    let res = s.apply(&Command::Activation(late));
    assert_eq!(
        res,
        CommandResult::Activation(ActivationResult {
            active_clients: 1,
            duplicate: false
        })
    );
    // Forgotten and remembered again in the same command, with the new time.
    assert_eq!(s.request(&a.request_id).unwrap().time_ms, T0 + 1_000);
    assert_eq!(s.stats().total, 2);
}

#[test]
fn set_epid_first_write_wins() {
    let mut s = HostState::default();
    let set = |epid: &str, t| Command::SetEpid {
        count_group: "windows".into(),
        epid: epid.into(),
        time_ms: t,
    };
    let r = s.apply(&set("A", T0));
    assert_eq!(r, CommandResult::Epid("A".into()));
    let before = s.clone();
    let r = s.apply(&set("B", T0 + 1));
    assert_eq!(r, CommandResult::Epid("A".into()));
    assert_eq!(s, before);
    assert_eq!(s.epid("windows"), Some("A"));
    assert_eq!(s.epid("office"), None);
    assert_eq!(s.groups(), vec!["windows"]);
}
