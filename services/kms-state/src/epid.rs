//! ePIDs per count group: the stable extended PID a host answers with for each application.

/// The ePID of one count group, kept so that every node of the cluster answers with the same one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpidRecord {
    /// Count group it belongs to.
    pub count_group: String,
    /// The extended PID string sent in responses.
    pub epid: String,
    /// Time of the command that set it (unix ms).
    pub set_ms: u64,
}
