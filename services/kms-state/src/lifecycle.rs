//! The activation lifecycle of one client machine, derived from times and never stored: a
//! KMS activation lasts 180 days from the last successful request and a client renews every
//! renewal interval (7 days by default), so what a helpdesk needs to know (which machines
//! stopped renewing, which will drop to notification mode and when, which fail) follows from
//! the last success, the last request and whether that request failed.
//!
//! [`lifecycle`] is a pure function of those times and "now"; its rules at their boundaries
//! are the unit tests below. Time going backwards (a clock set back, a replica's command
//! stamped earlier) never makes a machine look older than it is: a success "in the future"
//! counts as just now.
//!
//! [`GroupLifecycle`] sums a group's machines per state and their renewal ages (the metrics);
//! [`failure_reason`] puts a recorded HRESULT into words.

use kms_protocol::host::{
    HRESULT_COUNT_TOO_LOW, HRESULT_INVALID_DATA, HRESULT_TIME_SKEW, HRESULT_UNSUPPORTED_PRODUCT,
};

use crate::window::ClientRecord;

/// How long a KMS activation lasts after the last successful request: 180 days.
pub const ACTIVATION_VALIDITY_MS: u64 = 180 * DAY_MS;

/// One day in milliseconds.
pub const DAY_MS: u64 = 24 * 3600 * 1000;

/// The times the lifecycle is read at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecyclePolicy {
    /// How often clients renew (the host's renewal interval), ms.
    pub renewal_interval_ms: u64,
    /// Grace after a missed renewal before a machine is `overdue`, ms.
    pub renewal_slack_ms: u64,
    /// A machine whose activation ends within this is `expiring`, ms.
    pub expiring_horizon_ms: u64,
}

impl Default for LifecyclePolicy {
    /// Renewal every 7 days (the default renewal interval of 10080 minutes), 1 day of slack,
    /// a 30-day horizon.
    fn default() -> Self {
        LifecyclePolicy {
            renewal_interval_ms: 7 * DAY_MS,
            renewal_slack_ms: DAY_MS,
            expiring_horizon_ms: 30 * DAY_MS,
        }
    }
}

/// What the host knows of one machine's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineTimes {
    /// The last request answered with a count at or above the client's minimum (None: never).
    pub last_success_ms: Option<u64>,
    /// The last request of any outcome.
    pub last_request_ms: u64,
    /// Whether that last request was refused or answered below the minimum.
    pub last_request_failed: bool,
}

/// Where a machine is in its activation lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lifecycle {
    /// Renewed within the renewal interval plus slack.
    Active,
    /// Missed renewals, still activated and not yet within the horizon.
    Overdue,
    /// The activation ends within the horizon.
    Expiring,
    /// 180 days or more since the last success (or never activated here).
    Expired,
    /// The last request was refused or answered below the minimum.
    Failing,
}

impl Lifecycle {
    /// Every state, in the order reports list them.
    pub const ALL: [Lifecycle; 5] = [
        Lifecycle::Active,
        Lifecycle::Overdue,
        Lifecycle::Expiring,
        Lifecycle::Expired,
        Lifecycle::Failing,
    ];

    /// The state as a lowercase word (`active`, `overdue`, `expiring`, `expired`, `failing`).
    pub fn label(self) -> &'static str {
        match self {
            Lifecycle::Active => "active",
            Lifecycle::Overdue => "overdue",
            Lifecycle::Expiring => "expiring",
            Lifecycle::Expired => "expired",
            Lifecycle::Failing => "failing",
        }
    }

    /// The state named `word` (as [`Lifecycle::label`] writes it).
    pub fn parse(word: &str) -> Option<Lifecycle> {
        Lifecycle::ALL.into_iter().find(|l| l.label() == word)
    }
}

/// When the activation a success at `last_success_ms` gave ends.
pub fn activation_ends_ms(last_success_ms: u64) -> u64 {
    last_success_ms.saturating_add(ACTIVATION_VALIDITY_MS)
}

/// The lifecycle state of a machine with `times`, at `now_ms`.
///
/// Failing wins (the helpdesk's first question is "why does it fail"); otherwise the age of
/// the last success decides: expired at 180 days exactly, expiring within the horizon before
/// that, overdue once a renewal plus slack was missed, active before.
pub fn lifecycle(times: &MachineTimes, now_ms: u64, policy: &LifecyclePolicy) -> Lifecycle {
    if times.last_request_failed {
        return Lifecycle::Failing;
    }
    let Some(success) = times.last_success_ms else {
        return Lifecycle::Expired;
    };
    let age = now_ms.saturating_sub(success);
    if age >= ACTIVATION_VALIDITY_MS {
        Lifecycle::Expired
    } else if age >= ACTIVATION_VALIDITY_MS.saturating_sub(policy.expiring_horizon_ms) {
        Lifecycle::Expiring
    } else if age
        > policy
            .renewal_interval_ms
            .saturating_add(policy.renewal_slack_ms)
    {
        Lifecycle::Overdue
    } else {
        Lifecycle::Active
    }
}

/// Upper bounds (seconds) of the renewal-age histogram: a day, the renewal interval, plus
/// slack, two weeks, the count window, 60 and 90 days, the start of the default horizon, and
/// the end of the activation.
pub const RENEWAL_AGE_BUCKETS_SECS: [u64; 9] = [
    86_400, 604_800, 691_200, 1_209_600, 2_592_000, 5_184_000, 7_776_000, 12_960_000, 15_552_000,
];

/// The lifecycle figures of one inventory group: machines per state and the distribution of
/// the time since each machine's last success.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupLifecycle {
    /// Machines per state, indexed like [`Lifecycle::ALL`].
    pub states: [u64; 5],
    /// Machines whose renewal age is at most each bound of [`RENEWAL_AGE_BUCKETS_SECS`]
    /// (not cumulative: each machine is in the first bucket that holds it).
    pub age_buckets: [u64; 9],
    /// Machines with a success older than the last bound.
    pub age_overflow: u64,
    /// Sum of the renewal ages in seconds.
    pub age_sum_secs: u64,
    /// Machines with a success (observed in the histogram).
    pub age_count: u64,
}

impl GroupLifecycle {
    /// Adds one machine.
    pub fn add(&mut self, record: &ClientRecord<'_>, now_ms: u64, policy: &LifecyclePolicy) {
        let state = record.lifecycle(now_ms, policy);
        if let Some(i) = Lifecycle::ALL.iter().position(|s| *s == state) {
            self.states[i] += 1;
        }
        if let Some(success) = record.last_success_ms {
            let age = now_ms.saturating_sub(success) / 1000;
            match RENEWAL_AGE_BUCKETS_SECS.iter().position(|b| age <= *b) {
                Some(i) => self.age_buckets[i] += 1,
                None => self.age_overflow += 1,
            }
            self.age_sum_secs = self.age_sum_secs.saturating_add(age);
            self.age_count += 1;
        }
    }

    /// Machines in `state`.
    pub fn count(&self, state: Lifecycle) -> u64 {
        Lifecycle::ALL
            .iter()
            .position(|s| *s == state)
            .map_or(0, |i| self.states[i])
    }
}

/// Words for the HRESULTs a machine's record can hold.
pub fn failure_reason(hresult: u32) -> &'static str {
    match hresult {
        HRESULT_UNSUPPORTED_PRODUCT => {
            "product not licensed on this host (no host key for its product group)"
        }
        HRESULT_COUNT_TOO_LOW => "count below the client's minimum",
        HRESULT_TIME_SKEW => "client clock differs from the host's by more than allowed",
        HRESULT_INVALID_DATA => "invalid request data",
        _ => "refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000;

    fn ok_at(success: u64) -> MachineTimes {
        MachineTimes {
            last_success_ms: Some(success),
            last_request_ms: success,
            last_request_failed: false,
        }
    }

    fn at(days: u64, ms: i64) -> u64 {
        (T0 + days * DAY_MS).saturating_add_signed(ms)
    }

    #[test]
    fn renewal_slack_boundary() {
        let p = LifecyclePolicy::default();
        let t = ok_at(T0);
        assert_eq!(lifecycle(&t, T0, &p), Lifecycle::Active);
        assert_eq!(
            lifecycle(&t, at(8, 0), &p),
            Lifecycle::Active,
            "7 days + 1 day slack"
        );
        assert_eq!(lifecycle(&t, at(8, 1), &p), Lifecycle::Overdue);
    }

    #[test]
    fn horizon_and_180_days_exact() {
        let p = LifecyclePolicy::default();
        let t = ok_at(T0);
        assert_eq!(lifecycle(&t, at(150, -1), &p), Lifecycle::Overdue);
        assert_eq!(lifecycle(&t, at(150, 0), &p), Lifecycle::Expiring);
        assert_eq!(lifecycle(&t, at(180, -1), &p), Lifecycle::Expiring);
        assert_eq!(lifecycle(&t, at(180, 0), &p), Lifecycle::Expired);
        assert_eq!(activation_ends_ms(T0), at(180, 0));
        let narrow = LifecyclePolicy {
            expiring_horizon_ms: 0,
            ..p
        };
        assert_eq!(lifecycle(&t, at(180, -1), &narrow), Lifecycle::Overdue);
    }

    #[test]
    fn a_failure_after_a_success_is_failing_and_a_success_after_failures_is_active() {
        let p = LifecyclePolicy::default();
        let failed = MachineTimes {
            last_success_ms: Some(T0),
            last_request_ms: at(7, 0),
            last_request_failed: true,
        };
        assert_eq!(lifecycle(&failed, at(7, 0), &p), Lifecycle::Failing);
        assert_eq!(lifecycle(&failed, at(200, 0), &p), Lifecycle::Failing);
        let recovered = ok_at(at(9, 0));
        assert_eq!(lifecycle(&recovered, at(9, 0), &p), Lifecycle::Active);
        let never = MachineTimes {
            last_success_ms: None,
            last_request_ms: T0,
            last_request_failed: false,
        };
        assert_eq!(lifecycle(&never, T0, &p), Lifecycle::Expired);
    }

    #[test]
    fn time_going_backwards_never_ages_a_machine() {
        let p = LifecyclePolicy::default();
        let t = ok_at(at(10, 0));
        assert_eq!(lifecycle(&t, T0, &p), Lifecycle::Active);
        assert_eq!(lifecycle(&t, 0, &p), Lifecycle::Active);
        assert_eq!(lifecycle(&ok_at(u64::MAX), u64::MAX, &p), Lifecycle::Active);
    }

    #[test]
    fn labels_round_trip() {
        for l in Lifecycle::ALL {
            assert_eq!(Lifecycle::parse(l.label()), Some(l));
        }
        assert_eq!(Lifecycle::parse("expirng"), None);
    }
}
