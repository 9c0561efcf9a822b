//! Cumulative request statistics, exactly as `slmgr /dlv` reports them.
//!
//! Owns the counting rule: every request counts in `total`; a refused request also counts in
//! `failed` and in nothing else; an answered request counts in the bucket of the license state the
//! client reported. Hence `total == failed + by_license_state.sum()` always holds.

use kms_protocol::LicenseState;

use crate::command::Outcome;

/// Request counters of a host, globally or for one count group.
///
/// Exists so that `kmsctl status` and the dashboards can print the same block as
/// `slmgr /dlv` ("Total requests received", "Failed requests received", ...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// All requests received (answered and refused).
    pub total: u64,
    /// Requests the host refused with an HRESULT.
    pub failed: u64,
    /// Answered requests by the license state the client reported.
    pub by_license_state: LicenseCounts,
}

impl Stats {
    /// Counts one request. Saturating, so it never panics.
    pub(crate) fn record(&mut self, outcome: &Outcome, state: LicenseState) {
        self.total = self.total.saturating_add(1);
        match outcome {
            Outcome::Answered => self.by_license_state.record(state),
            Outcome::Refused { .. } => self.failed = self.failed.saturating_add(1),
        }
    }

    /// Requests that were answered (`total - failed`, never underflows).
    pub fn answered(&self) -> u64 {
        self.total.saturating_sub(self.failed)
    }
}

/// Answered requests per license state: the seven states `slmgr /dlv` knows plus `other`.
///
/// A struct with named fields (rather than a map) mirrors the `slmgr /dlv` lines one to one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LicenseCounts {
    /// State 0.
    pub unlicensed: u64,
    /// State 1.
    pub licensed: u64,
    /// State 2 (out-of-box grace).
    pub initial_grace: u64,
    /// State 3 (out-of-tolerance grace: license expired or hardware changed).
    pub additional_grace: u64,
    /// State 4.
    pub non_genuine_grace: u64,
    /// State 5.
    pub notification: u64,
    /// State 6.
    pub extended_grace: u64,
    /// Any value outside 0..=6.
    pub other: u64,
}

impl LicenseCounts {
    fn slot(&mut self, state: LicenseState) -> &mut u64 {
        match state {
            LicenseState::Unlicensed => &mut self.unlicensed,
            LicenseState::Licensed => &mut self.licensed,
            LicenseState::InitialGrace => &mut self.initial_grace,
            LicenseState::AdditionalGrace => &mut self.additional_grace,
            LicenseState::NonGenuineGrace => &mut self.non_genuine_grace,
            LicenseState::Notification => &mut self.notification,
            LicenseState::ExtendedGrace => &mut self.extended_grace,
            LicenseState::Other(_) => &mut self.other,
        }
    }

    fn record(&mut self, state: LicenseState) {
        let slot = self.slot(state);
        *slot = slot.saturating_add(1);
    }

    /// The counter for `state` (all `Other(_)` values share one counter).
    pub fn get(&self, state: LicenseState) -> u64 {
        let mut copy = *self;
        *copy.slot(state)
    }

    /// Sum over all buckets, including `other`; equals the number of answered requests.
    pub fn sum(&self) -> u64 {
        [
            self.unlicensed,
            self.licensed,
            self.initial_grace,
            self.additional_grace,
            self.non_genuine_grace,
            self.notification,
            self.extended_grace,
            self.other,
        ]
        .into_iter()
        .fold(0u64, u64::saturating_add)
    }

    /// The seven known states with their counters, in `slmgr /dlv` order (for printing).
    pub fn known(&self) -> [(LicenseState, u64); 7] {
        LicenseState::KNOWN.map(|s| (s, self.get(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_counts_only_in_total_and_failed() {
        let mut s = Stats::default();
        s.record(
            &Outcome::Refused {
                hresult: 0xC004_F042,
            },
            LicenseState::Licensed,
        );
        assert_eq!((s.total, s.failed, s.by_license_state.sum()), (1, 1, 0));
        s.record(&Outcome::Answered, LicenseState::Licensed);
        s.record(&Outcome::Answered, LicenseState::Other(77));
        assert_eq!((s.total, s.failed, s.answered()), (3, 1, 2));
        assert_eq!(s.by_license_state.get(LicenseState::Licensed), 1);
        assert_eq!(s.by_license_state.get(LicenseState::Other(9)), 1);
        assert_eq!(s.by_license_state.known()[1], (LicenseState::Licensed, 1));
    }
}
