//! Cumulative statistics as `slmgr /dlv` shows them.

mod common;

use common::*;
use kms_protocol::LicenseState;
use kms_state::{HostState, Stats};

#[test]
fn slmgr_example_failed_requests_are_not_in_license_buckets() {
    // The campus host's `slmgr /dlv`: total 8865, failed 274, states summing to 8591.
    let mut s = HostState::default();
    let mut t = T0;
    let mut cmid = 0u128;
    let mut send = |s: &mut HostState, state: LicenseState, n: u32, refuse: bool| {
        for _ in 0..n {
            t += 1000;
            cmid += 1;
            let mut a = if refuse {
                refused(Some("windows"), cmid, t, 0xC004_F042)
            } else {
                act(Some("windows"), cmid, t)
            };
            a.license_state = state;
            count(s, &a);
        }
    };
    send(&mut s, LicenseState::Licensed, 8236, false);
    send(&mut s, LicenseState::InitialGrace, 293, false);
    send(&mut s, LicenseState::AdditionalGrace, 54, false);
    send(&mut s, LicenseState::Notification, 8, false);
    // Refused requests report some state too, but it must not be counted.
    send(&mut s, LicenseState::Licensed, 200, true);
    send(&mut s, LicenseState::InitialGrace, 74, true);

    for stats in [s.stats(), s.group_stats("windows").unwrap()] {
        assert_eq!(stats.total, 8865);
        assert_eq!(stats.failed, 274);
        let c = &stats.by_license_state;
        assert_eq!(c.unlicensed, 0);
        assert_eq!(c.licensed, 8236);
        assert_eq!(c.initial_grace, 293);
        assert_eq!(c.additional_grace, 54);
        assert_eq!(c.non_genuine_grace, 0);
        assert_eq!(c.notification, 8);
        assert_eq!(c.extended_grace, 0);
        assert_eq!(c.other, 0);
        assert_eq!(c.sum(), 8591);
        assert_eq!(stats.answered(), 8865 - 274);
    }
    assert_eq!(s.active_clients_at("windows", t), 8591);
}

#[test]
fn refused_without_group_counts_only_globally() {
    let mut s = HostState::default();
    count(&mut s, &refused(None, 1, T0, 0xC004_F042));
    assert_eq!(
        (
            s.stats().total,
            s.stats().failed,
            s.stats().by_license_state.sum()
        ),
        (1, 1, 0)
    );
    assert!(s.groups().is_empty());
    assert!(s.group_stats("windows").is_none());

    // Answered but unknown product: global total + license bucket, no group.
    let mut a = act(None, 2, T0);
    a.license_state = LicenseState::Other(42);
    count(&mut s, &a);
    assert_eq!(s.stats().total, 2);
    assert_eq!(s.stats().by_license_state.other, 1);
    assert!(s.groups().is_empty());

    // Refused with a group: group total and failed.
    count(&mut s, &refused(Some("office"), 3, T0, 0x8007_000D));
    let g = s.group_stats("office").unwrap();
    assert_eq!(
        *g,
        Stats {
            total: 1,
            failed: 1,
            ..Stats::default()
        }
    );
    assert_eq!(s.stats().total, 3);
    assert_eq!(s.groups(), vec!["office"]);
}

#[test]
fn group_stats_are_separate_and_sum_to_global() {
    let mut s = HostState::default();
    for i in 0..10u128 {
        count(&mut s, &act(Some("windows"), i, T0));
    }
    for i in 0..4u128 {
        count(&mut s, &act(Some("office"), i, T0));
    }
    count(&mut s, &act(None, 99, T0));
    assert_eq!(s.group_stats("windows").unwrap().total, 10);
    assert_eq!(s.group_stats("office").unwrap().total, 4);
    assert_eq!(s.stats().total, 15);
    // Statistics are cumulative: they do not expire with the client window.
    count(&mut s, &act(Some("windows"), 500, T0 + 365 * DAY_MS));
    assert_eq!(s.group_stats("windows").unwrap().total, 11);
    assert_eq!(s.client_count_total(), 1);
}
