//! Client counting: distinct CMIDs per count group within the 30-day window.

mod common;

use common::*;
use kms_protocol::LicenseState;
use kms_state::{ClientFilter, Command, HostState, CLIENT_WINDOW_MS};
use uuid::Uuid;

#[test]
fn count_grows_with_distinct_cmids_and_26th_client_sees_26() {
    let mut s = HostState::default();
    for i in 1..=60u32 {
        let n = count(&mut s, &act(Some("windows"), i.into(), T0 + u64::from(i)));
        assert_eq!(n, i, "client #{i}: uncapped, the caller caps");
    }
    let mut s = HostState::default();
    let counts: Vec<u32> = (1..=26u128)
        .map(|i| count(&mut s, &act(Some("windows"), i, T0 + i as u64 * 1000)))
        .collect();
    assert_eq!(counts[0], 1, "first client ever sees 1");
    assert_eq!(counts[25], 26);
    assert_eq!(s.active_clients_at("windows", T0 + 30_000), 26);
}

#[test]
fn repeat_cmid_does_not_raise_count() {
    let mut s = HostState::default();
    for i in 0..5u128 {
        count(&mut s, &act(Some("windows"), i, T0));
    }
    for k in 0..10u64 {
        assert_eq!(count(&mut s, &act(Some("windows"), 3, T0 + k * DAY_MS)), 5);
    }
    let rec = s.client("windows", &Uuid::from_u128(3)).unwrap();
    assert_eq!(rec.requests, 11);
    assert_eq!(rec.first_seen_ms, T0);
    assert_eq!(rec.last_seen_ms, T0 + 9 * DAY_MS);
}

#[test]
fn thirty_day_boundary_is_exact() {
    assert_eq!(CLIENT_WINDOW_MS, 30 * 24 * 3600 * 1000);
    let mut s = HostState::default();
    let a = Uuid::from_u128(1);
    assert_eq!(count(&mut s, &act(Some("windows"), 1, T0)), 1);

    // One millisecond before the 30 days are over, client 1 still counts.
    let t_last_in = T0 + CLIENT_WINDOW_MS - 1;
    assert_eq!(s.active_clients_at("windows", t_last_in), 1);
    let rec = s.client("windows", &a).unwrap();
    assert!(rec.is_active_at(t_last_in));
    assert!(!rec.is_active_at(T0 + CLIENT_WINDOW_MS));
    assert_eq!(count(&mut s, &act(Some("windows"), 2, t_last_in)), 2);
    assert!(s.client("windows", &a).is_some());

    // Exactly 30 days later it is gone: only clients 2 and 3 count.
    let t_out = T0 + CLIENT_WINDOW_MS;
    assert_eq!(
        s.active_clients_at("windows", t_out),
        1,
        "read view without pruning"
    );
    assert!(s.client("windows", &a).is_some(), "views do not mutate");
    assert_eq!(count(&mut s, &act(Some("windows"), 3, t_out)), 2);
    let rec = s.client("windows", &a).unwrap();
    assert!(!rec.counted, "out of the count, still in the inventory");
    assert!(!rec.is_active_at(t_out));

    // Client 1 coming back counts again; its record keeps its history.
    assert_eq!(count(&mut s, &act(Some("windows"), 1, t_out + 5)), 3);
    let rec = s.client("windows", &a).unwrap();
    assert!(rec.counted);
    assert_eq!((rec.first_seen_ms, rec.requests), (T0, 2));
}

#[test]
fn renewal_keeps_client_in_window() {
    let mut s = HostState::default();
    count(&mut s, &act(Some("windows"), 1, T0));
    // Renews every 7 days for a year: always counted, never duplicated.
    for week in 1..52u64 {
        let t = T0 + week * 7 * DAY_MS;
        assert_eq!(count(&mut s, &act(Some("windows"), 1, t)), 1);
        assert_eq!(s.active_clients_at("windows", t + CLIENT_WINDOW_MS - 1), 1);
    }
}

#[test]
fn count_groups_are_separate() {
    let mut s = HostState::default();
    for i in 0..7u128 {
        count(&mut s, &act(Some("windows"), i, T0));
    }
    // The same machine running Office is counted in the Office pool independently.
    assert_eq!(count(&mut s, &act(Some("office"), 0, T0)), 1);
    assert_eq!(count(&mut s, &act(Some("office"), 100, T0)), 2);
    assert_eq!(count(&mut s, &act(Some("office2010"), 0, T0)), 1);
    assert_eq!(count(&mut s, &act(Some("windows"), 8, T0)), 8);
    assert_eq!(s.active_clients_at("windows", T0), 8);
    assert_eq!(s.active_clients_at("office", T0), 2);
    assert_eq!(s.active_clients_at("office2010", T0), 1);
    assert_eq!(s.active_clients_at("unknown", T0), 0);
    assert_eq!(s.groups(), vec!["office", "office2010", "windows"]);
    assert_eq!(s.client_count_total(), 11);
}

#[test]
fn refused_and_ungrouped_requests_do_not_count_clients() {
    let mut s = HostState::default();
    count(&mut s, &act(Some("windows"), 1, T0));
    // Refused: recorded for the machine, not counted; the result reports the group's count.
    assert_eq!(
        count(&mut s, &refused(Some("windows"), 2, T0, 0xC004_F06C)),
        1
    );
    let rec = s.client("windows", &Uuid::from_u128(2)).unwrap();
    assert!(!rec.counted);
    assert_eq!(rec.last_failure.map(|f| f.hresult), Some(0xC004_F06C));
    // Unknown product (no count group): nothing counted, result 0; the machine is listed in
    // the "unknown" inventory group, which is no count group.
    assert_eq!(count(&mut s, &act(None, 3, T0)), 0);
    let rec = s
        .client(kms_state::UNKNOWN_GROUP, &Uuid::from_u128(3))
        .unwrap();
    assert!(!rec.counted);
    assert_eq!(rec.last_failure.map(|f| f.hresult), Some(0xC004_F042));
    assert_eq!(s.active_clients_at(kms_state::UNKNOWN_GROUP, T0), 0);
    assert!(!s.groups().contains(&kms_state::UNKNOWN_GROUP));
    assert_eq!(count(&mut s, &act(Some("windows"), 4, T0)), 2);
    assert_eq!(s.client_count_total(), 2);
    assert_eq!(s.inventory_len(), 4);
}

#[test]
fn client_vms_count_like_physical_machines() {
    let mut s = HostState::default();
    for i in 0..10u128 {
        let mut a = act(Some("windows"), i, T0);
        a.client_vm = i % 2 == 0;
        assert_eq!(count(&mut s, &a), i as u32 + 1);
    }
}

#[test]
fn idle_groups_are_pruned_by_later_commands() {
    let mut s = HostState::default();
    count(&mut s, &act(Some("office2010"), 1, T0));
    count(&mut s, &act(Some("windows"), 2, T0 + CLIENT_WINDOW_MS));
    assert!(!s.client("office2010", &Uuid::from_u128(1)).unwrap().counted);
    assert_eq!(s.client_count_total(), 1);
    // After the inventory retention the record is gone too.
    count(
        &mut s,
        &act(
            Some("windows"),
            2,
            T0 + kms_state::DEFAULT_INVENTORY_RETENTION_MS,
        ),
    );
    assert!(s.client("office2010", &Uuid::from_u128(1)).is_none());
    // Statistics are cumulative and stay.
    assert_eq!(s.group_stats("office2010").unwrap().total, 1);
    assert!(s.groups().contains(&"office2010"));
}

#[test]
fn inventory_keeps_latest_report_and_filters() {
    let mut s = HostState::default();
    let mut a = act(Some("windows"), 1, T0);
    a.license_state = LicenseState::InitialGrace;
    count(&mut s, &a);
    let mut b = act(Some("windows"), 1, T0 + DAY_MS);
    b.license_state = LicenseState::Licensed;
    b.grace_minutes = 259_200;
    b.machine_name = "renamed.campus.example".into();
    b.client_vm = true;
    count(&mut s, &b);
    // An older report applied later (another node's clock) does not overwrite newer fields.
    let mut c = act(Some("windows"), 1, T0 + 10);
    c.machine_name = "stale".into();
    count(&mut s, &c);
    let rec = s.client("windows", &Uuid::from_u128(1)).unwrap();
    assert_eq!(rec.machine_name, "renamed.campus.example");
    assert_eq!(rec.license_state, LicenseState::Licensed);
    assert_eq!(rec.grace_minutes, 259_200);
    assert!(rec.client_vm);
    assert_eq!(
        (rec.first_seen_ms, rec.last_seen_ms, rec.requests),
        (T0, T0 + DAY_MS, 3)
    );
    assert_eq!(rec.kms_counted_id, WIN_KMS_ID);
    assert_eq!(rec.protocol_major, 6);

    let mut o = act(Some("office"), 2, T0 + 2 * DAY_MS);
    o.product_group = Some("office-2016".into());
    count(&mut s, &o);

    let all: Vec<_> = s.clients(ClientFilter::default()).map(|r| r.cmid).collect();
    assert_eq!(all.len(), 2);
    let office: Vec<_> = s
        .clients(ClientFilter {
            count_group: Some("office".into()),
            ..Default::default()
        })
        .collect();
    assert_eq!(office.len(), 1);
    assert_eq!(office[0].cmid, Uuid::from_u128(2));
    let by_product = s
        .clients(ClientFilter {
            product_group: Some("windows-10-11".into()),
            ..Default::default()
        })
        .count();
    assert_eq!(by_product, 1);
    let recent = s
        .clients(ClientFilter {
            seen_since_ms: Some(T0 + 2 * DAY_MS),
            ..Default::default()
        })
        .count();
    assert_eq!(recent, 1);
}

#[test]
fn time_going_backwards_or_extreme_never_panics() {
    let mut s = HostState::default();
    for (cmid, t) in [
        (1, T0),
        (2, T0 - DAY_MS),
        (3, 0),
        (1, 5),
        (4, u64::MAX),
        (5, 0),
        (4, 1),
    ] {
        count(&mut s, &act(Some("windows"), cmid, t));
    }
    // u64::MAX prunes everything older than 30 days before it; later small times keep counting.
    assert!(s.active_clients_at("windows", u64::MAX) >= 1);
    assert_eq!(
        s.active_clients_at("windows", 0),
        s.client_count_total() as u32
    );
    s.apply(&Command::SetEpid {
        count_group: "windows".into(),
        epid: "x".into(),
        time_ms: 0,
    });
}
