//! Compact value types of the client inventory, sized for millions of records.
//!
//! Owns how one inventory entry is kept small:
//! - [`MachineName`]: the client's name inline in 24 bytes when it has at most 22 bytes (a
//!   NetBIOS name always does), on the heap otherwise; no allocation for the common case.
//! - [`Profile`]: the descriptive fields that thousands of clients share (product group, SKU,
//!   kmsCountedId, applicationId, license state, requiredClientCount, protocol, VM flag), kept
//!   once and referenced by an 8-byte pointer from each record.
//! - [`intern`] and [`intern_profile`]: the process-wide tables that make equal values share one
//!   allocation.
//!
//! Interning never changes a value: records compare, order and serialize by content, so applying
//! stays deterministic and replicas (or a snapshot read back) are equal whatever the pointers.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use kms_protocol::LicenseState;
use uuid::Uuid;

use crate::command::Activation;

/// Longest name kept inline (bytes of UTF-8).
const INLINE_NAME: usize = 22;

/// A client machine name: inline up to [`INLINE_NAME`] bytes, boxed beyond. 24 bytes either way.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum MachineName {
    /// `len` bytes of `bytes` are the UTF-8 name (always a valid `str` prefix: built from one).
    Inline { len: u8, bytes: [u8; INLINE_NAME] },
    /// A longer name.
    Heap(Box<str>),
}

impl MachineName {
    pub(crate) fn new(name: &str) -> Self {
        if name.len() <= INLINE_NAME {
            let mut bytes = [0u8; INLINE_NAME];
            bytes[..name.len()].copy_from_slice(name.as_bytes());
            MachineName::Inline {
                // Cannot truncate: `len <= INLINE_NAME < 256`.
                len: name.len() as u8,
                bytes,
            }
        } else {
            MachineName::Heap(name.into())
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            // Built from a whole `&str`, so this is valid UTF-8; the fallback is unreachable and
            // only there to avoid `unsafe` and panics.
            MachineName::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len).min(INLINE_NAME)]).unwrap_or("")
            }
            MachineName::Heap(s) => s,
        }
    }
}

impl fmt::Debug for MachineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// The descriptive fields of a client report that many clients have in common.
///
/// Why: in a large site most clients run a handful of editions on one protocol version, so
/// these ~70 bytes are the same for thousands of records; each record points at one shared copy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Profile {
    /// Catalog product group slug, if the catalog knew it.
    pub(crate) product_group: Option<Arc<str>>,
    /// skuId (edition activation id).
    pub(crate) sku_id: Uuid,
    /// kmsCountedId.
    pub(crate) kms_counted_id: Uuid,
    /// applicationId.
    pub(crate) application_id: Uuid,
    /// License state reported (the exact wire value is kept, also for unknown states).
    pub(crate) license_state: LicenseState,
    /// requiredClientCount.
    pub(crate) required_count: u32,
    /// KMS protocol major version.
    pub(crate) protocol_major: u16,
    /// Whether the client said it is a VM.
    pub(crate) client_vm: bool,
}

impl Profile {
    /// The profile an activation reports.
    pub(crate) fn of(a: &Activation) -> Self {
        Profile {
            product_group: a.product_group.as_deref().map(intern),
            sku_id: a.sku_id,
            kms_counted_id: a.kms_counted_id,
            application_id: a.application_id,
            license_state: a.license_state,
            required_count: a.required_count,
            protocol_major: a.protocol_major,
            client_vm: a.client_vm,
        }
    }

    /// Whether `a` reports exactly this profile (no allocation, unlike comparing with
    /// [`Profile::of`]).
    pub(crate) fn matches(&self, a: &Activation) -> bool {
        self.sku_id == a.sku_id
            && self.kms_counted_id == a.kms_counted_id
            && self.application_id == a.application_id
            && self.license_state == a.license_state
            && self.required_count == a.required_count
            && self.protocol_major == a.protocol_major
            && self.client_vm == a.client_vm
            && self.product_group.as_deref() == a.product_group.as_deref()
    }
}

/// Shares one allocation per distinct name (count groups, product groups: a few dozen names
/// from the catalog for any number of clients).
pub(crate) fn intern(name: &str) -> Arc<str> {
    static NAMES: OnceLock<Mutex<BTreeSet<Arc<str>>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(n) = names.get(name) {
        return n.clone();
    }
    let n: Arc<str> = Arc::from(name);
    names.insert(n.clone());
    n
}

/// Live profiles by content. Holds weak references, so profiles no record uses any more (an
/// expired client's, or one a client sent once with a random SKU) are freed; dead entries are
/// swept whenever the table has doubled since the last sweep, which keeps it within twice the
/// number of live profiles at amortised O(1) cost.
#[derive(Default)]
struct ProfileTable {
    live: BTreeMap<Profile, Weak<Profile>>,
    sweep_at: usize,
}

const MIN_SWEEP: usize = 1024;

/// The shared copy of `profile` (allocated on first use).
pub(crate) fn intern_profile(profile: Profile) -> Arc<Profile> {
    static PROFILES: OnceLock<Mutex<ProfileTable>> = OnceLock::new();
    let mut table = PROFILES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(p) = table.live.get(&profile).and_then(Weak::upgrade) {
        return p;
    }
    if table.live.len() >= table.sweep_at.max(MIN_SWEEP) {
        table.live.retain(|_, w| w.strong_count() > 0);
        table.sweep_at = table.live.len() * 2;
    }
    let shared = Arc::new(profile.clone());
    table.live.insert(profile, Arc::downgrade(&shared));
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_name_inline_and_heap() {
        for name in [
            "",
            "PC1",
            "exactly-22-bytes-name!",
            "twenty-three-bytes-name",
            "desktop-4f2a9c.campus.example.org",
            "ünïcødé-ñåmé",
        ] {
            let m = MachineName::new(name);
            assert_eq!(m.as_str(), name);
            assert_eq!(
                matches!(m, MachineName::Inline { .. }),
                name.len() <= INLINE_NAME
            );
            assert_eq!(m, MachineName::new(name));
            assert_eq!(format!("{m:?}"), format!("{name:?}"));
        }
        assert_ne!(MachineName::new("a"), MachineName::new("b"));
        assert_eq!(std::mem::size_of::<MachineName>(), 24);
    }

    fn profile(sku: u128) -> Profile {
        Profile {
            product_group: Some(intern("windows-10-11")),
            sku_id: Uuid::from_u128(sku),
            kms_counted_id: Uuid::from_u128(1),
            application_id: Uuid::from_u128(2),
            license_state: LicenseState::Other(77),
            required_count: 25,
            protocol_major: 6,
            client_vm: false,
        }
    }

    #[test]
    fn profiles_are_shared_and_freed() {
        let a = intern_profile(profile(10));
        let b = intern_profile(profile(10));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.license_state, LicenseState::Other(77));
        let c = intern_profile(profile(11));
        assert!(!Arc::ptr_eq(&a, &c) && *a != *c);
        // Many one-off profiles: the table sweeps the dead ones instead of growing forever.
        for sku in 1_000..5_000 {
            drop(intern_profile(profile(sku)));
        }
        let again = intern_profile(profile(10));
        assert!(Arc::ptr_eq(&a, &again), "live profiles survive a sweep");
    }

    #[test]
    fn names_are_shared() {
        assert!(Arc::ptr_eq(&intern("office"), &intern("office")));
        assert_eq!(&*intern("windows"), "windows");
    }

    #[test]
    fn record_sizes_stay_small() {
        assert!(std::mem::size_of::<Option<Arc<Profile>>>() == 8);
        assert!(std::mem::size_of::<LicenseState>() <= 8);
    }
}
