//! License states a KMS client reports in its request (offset 8 of the base request).
//!
//! The host counts requests by these states in its cumulative statistics, exactly as
//! `slmgr /dlv` shows them.

use serde::{Deserialize, Serialize};

/// The license state a client reports. Values outside 0..=6 are kept as [`LicenseState::Other`]
/// so a decoder never rejects a request only for this field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LicenseState {
    /// 0: unlicensed.
    Unlicensed,
    /// 1: licensed (activated).
    Licensed,
    /// 2: initial (out-of-box) grace period.
    InitialGrace,
    /// 3: additional grace: license expired or hardware out of tolerance.
    AdditionalGrace,
    /// 4: non-genuine grace period.
    NonGenuineGrace,
    /// 5: notification mode.
    Notification,
    /// 6: extended grace.
    ExtendedGrace,
    /// Any other value a client sent.
    Other(u32),
}

impl LicenseState {
    /// All seven states `slmgr /dlv` reports, in its order.
    pub const KNOWN: [LicenseState; 7] = [
        LicenseState::Unlicensed,
        LicenseState::Licensed,
        LicenseState::InitialGrace,
        LicenseState::AdditionalGrace,
        LicenseState::NonGenuineGrace,
        LicenseState::Notification,
        LicenseState::ExtendedGrace,
    ];

    /// Maps the wire value.
    pub fn from_wire(v: u32) -> Self {
        match v {
            0 => Self::Unlicensed,
            1 => Self::Licensed,
            2 => Self::InitialGrace,
            3 => Self::AdditionalGrace,
            4 => Self::NonGenuineGrace,
            5 => Self::Notification,
            6 => Self::ExtendedGrace,
            other => Self::Other(other),
        }
    }

    /// The wire value.
    pub fn to_wire(self) -> u32 {
        match self {
            Self::Unlicensed => 0,
            Self::Licensed => 1,
            Self::InitialGrace => 2,
            Self::AdditionalGrace => 3,
            Self::NonGenuineGrace => 4,
            Self::Notification => 5,
            Self::ExtendedGrace => 6,
            Self::Other(v) => v,
        }
    }

    /// Stable snake_case label for metrics, JSON and CLI flags.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unlicensed => "unlicensed",
            Self::Licensed => "licensed",
            Self::InitialGrace => "initial_grace",
            Self::AdditionalGrace => "additional_grace",
            Self::NonGenuineGrace => "non_genuine_grace",
            Self::Notification => "notification",
            Self::ExtendedGrace => "extended_grace",
            Self::Other(_) => "other",
        }
    }

    /// The wording `slmgr /dlv` uses ("Requests with License Status ...").
    pub fn slmgr_text(self) -> &'static str {
        match self {
            Self::Unlicensed => "Unlicensed",
            Self::Licensed => "Licensed",
            Self::InitialGrace => "Initial grace period",
            Self::AdditionalGrace => "License expired or Hardware out of tolerance",
            Self::NonGenuineGrace => "Non-genuine grace period",
            Self::Notification => "Notification",
            Self::ExtendedGrace => "Extended grace period",
            Self::Other(_) => "Other",
        }
    }

    /// Parses a label or a number (for CLI flags).
    pub fn parse(s: &str) -> Option<Self> {
        if let Ok(n) = s.parse::<u32>() {
            return Some(Self::from_wire(n));
        }
        Self::KNOWN
            .into_iter()
            .find(|st| st.label() == s || st.label().replace('_', "-") == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip() {
        for v in 0..10 {
            assert_eq!(LicenseState::from_wire(v).to_wire(), v);
        }
        assert_eq!(
            LicenseState::parse("initial-grace"),
            Some(LicenseState::InitialGrace)
        );
        assert_eq!(LicenseState::parse("1"), Some(LicenseState::Licensed));
        assert_eq!(LicenseState::parse("bogus"), None);
    }
}
