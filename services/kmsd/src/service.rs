//! The host's activation policy: turns an authenticated request into a state command
//! and an answer, the way a Microsoft KMS host decides.
//!
//! Order of checks: product known to the catalog → product group licensed on this host
//! (operator policy) → application id consistent → required count sane → optional client
//! clock check. Refusals still become commands so the statistics count them as failed.
//!
//! It also owns the host's identity as clients see it: one replicated [`HostIdentity`]
//! (hardware id, OS build and platform) chosen on the first answered request, and per count
//! group an ePID made with that build from the group's own host key (CSVLK).

use crate::backend::{Backend, BackendError};
use kms_protocol::epid::{date_from_unix_ms, platform_id_for_build, Epid, EpidChoice, HostBuild};
use kms_protocol::host::{
    Answer, HRESULT_INVALID_DATA, HRESULT_TIME_SKEW, HRESULT_UNSUPPORTED_PRODUCT,
};
use kms_protocol::host_os::HostOs;
use kms_protocol::kms::{BaseResponse, DecodedRequest, ResponseRandom};
use kms_protocol::products::{Application, Catalog, Csvlk};
use kms_protocol::time::{filetime_from_unix_ms, skew_ms};
use kms_protocol::LicenseState;
use kms_state::lifecycle::LifecyclePolicy;
use kms_state::{Activation, Command, CommandResult, HostIdentity, HostState, Outcome};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use uuid::Uuid;

/// Policy settings the service applies (reloadable as a whole).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Product group names this host is licensed for.
    pub licensed: BTreeSet<String>,
    /// Activation retry interval, minutes.
    pub activation_interval: u32,
    /// Renewal interval, minutes.
    pub renewal_interval: u32,
    /// Maximum client clock skew in ms, when checked.
    pub max_skew_ms: Option<u64>,
    /// LCID for generated ePIDs.
    pub lcid: u32,
    /// The release a newly chosen host identity claims (`host_os`).
    pub host_os: HostOs,
    /// Added to the real clock for the state's time (`clock_offset_secs`, tests only), ms.
    pub clock_offset_ms: i64,
    /// How lifecycle states are read (renewal interval, slack, expiring horizon).
    pub lifecycle: LifecyclePolicy,
    /// Inventory retention this node proposes for the cluster (`inventory_retention_days`), ms.
    pub inventory_retention_ms: u64,
    /// Alert thresholds exported for the rules: expiring and failing machines per group.
    pub alert_expiring_machines: u32,
    /// See `alert_expiring_machines`.
    pub alert_failing_machines: u32,
}

impl Policy {
    /// The state's time for a request received at `now_ms` (real clock): shifted by the
    /// configured offset (tests and drills), never below 0.
    pub fn state_time(&self, now_ms: u64) -> u64 {
        now_ms.saturating_add_signed(self.clock_offset_ms)
    }
}

/// What happened to one request, for the log line and metrics.
#[derive(Debug, Clone)]
pub struct Outcomes {
    /// Product group slug (None when unknown).
    pub product_group: Option<String>,
    /// Count group (None when unknown).
    pub count_group: Option<String>,
    /// SKU display name, if the catalog knows the SKU.
    pub product: String,
    /// Count sent to the client (0 when refused).
    pub current_count: u32,
    /// HRESULT when refused.
    pub refused: Option<u32>,
    /// Whether the answer was a replay of an already-applied request.
    pub duplicate: bool,
}

/// Errors that prevent any answer (the connection is closed; the client tries another
/// host).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The state backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The backend returned a result of the wrong kind.
    #[error("unexpected state result")]
    Unexpected,
}

/// The activation service shared by all connections.
pub struct Service {
    catalog: Arc<Catalog>,
    policy: RwLock<Arc<Policy>>,
    backend: Backend,
    /// The inventory retention this node last made sure the cluster uses (0: not yet).
    retention_synced: AtomicU64,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").finish_non_exhaustive()
    }
}

impl Service {
    /// Builds the service.
    pub fn new(catalog: Arc<Catalog>, policy: Policy, backend: Backend) -> Self {
        Self {
            catalog,
            policy: RwLock::new(Arc::new(policy)),
            backend,
            retention_synced: AtomicU64::new(0),
        }
    }

    /// The catalog in use.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The current policy.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().expect("policy lock").clone()
    }

    /// Replaces the policy (reload); requests already deciding keep the old one.
    pub fn set_policy(&self, policy: Policy) {
        *self.policy.write().expect("policy lock") = Arc::new(policy);
    }

    /// The state backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Decides one request received at `now_ms` (Unix ms).
    pub async fn activate(
        &self,
        req: &DecodedRequest,
        now_ms: u64,
        random: ResponseRandom,
    ) -> Result<(Answer, Outcomes), ServiceError> {
        let policy = self.policy();
        let b = &req.base;
        let group = self.catalog.group_by_counted_id(&b.kms_counted_id);
        let product = self
            .catalog
            .sku(&b.sku_id)
            .map(|s| s.name.clone())
            .or_else(|| group.map(|g| g.display.clone()))
            .unwrap_or_else(|| format!("unknown product {}", b.sku_id));

        let refusal = match group {
            None => Some(HRESULT_UNSUPPORTED_PRODUCT),
            Some(g) if !policy.licensed.contains(&g.name) => Some(HRESULT_UNSUPPORTED_PRODUCT),
            Some(g) if g.application.id() != b.application_id => Some(HRESULT_UNSUPPORTED_PRODUCT),
            Some(_) if b.required_client_count > 1000 => Some(HRESULT_INVALID_DATA),
            Some(_) => match policy.max_skew_ms {
                Some(max) if skew_ms(b.request_time, filetime_from_unix_ms(now_ms)) > max => {
                    Some(HRESULT_TIME_SKEW)
                }
                _ => None,
            },
        };

        // The client clock check above keeps the real clock; the state's time may be offset.
        let state_ms = policy.state_time(now_ms);
        self.sync_retention(&policy, state_ms).await;
        let activation = Activation {
            request_id: Uuid::new_v4(),
            time_ms: state_ms,
            count_group: group.map(|g| g.count_group.clone()),
            product_group: group.map(|g| g.name.clone()),
            kms_counted_id: b.kms_counted_id,
            application_id: b.application_id,
            sku_id: b.sku_id,
            cmid: b.cmid,
            machine_name: b.machine_name(),
            client_vm: b.is_client_vm != 0,
            license_state: LicenseState::from_wire(b.license_status),
            grace_minutes: b.grace_time,
            required_count: b.required_client_count,
            protocol_major: b.major,
            outcome: match refusal {
                Some(hresult) => Outcome::Refused { hresult },
                None => Outcome::Answered,
            },
            answered_by: self.backend.node().node_id(),
        };
        let count_group = activation.count_group.clone();
        let result = self.backend.submit(Command::Activation(activation)).await?;
        let CommandResult::Activation(applied) = result else {
            return Err(ServiceError::Unexpected);
        };
        let mut outcomes = Outcomes {
            product_group: group.map(|g| g.name.clone()),
            count_group: count_group.clone(),
            product,
            current_count: 0,
            refused: refusal,
            duplicate: applied.duplicate,
        };
        if let Some(hr) = refusal {
            return Ok((Answer::Refused(hr), outcomes));
        }
        let group = group.expect("answered implies known group");
        let cap = self.catalog.count_group_cap(&group.count_group);
        let count = applied.active_clients.min(cap);
        outcomes.current_count = count;
        let (epid, identity) = self
            .epid_for(&group.count_group, group.application, state_ms, &policy)
            .await?;
        let hwid = identity.hwid;
        let response = BaseResponse {
            minor: b.minor,
            major: b.major,
            epid,
            cmid: b.cmid,
            response_time: b.request_time,
            current_count: count,
            activation_interval: policy.activation_interval,
            renewal_interval: policy.renewal_interval,
        };
        Ok((
            Answer::Activated {
                response,
                random,
                hwid,
            },
            outcomes,
        ))
    }

    /// Makes sure the cluster prunes its inventory at this node's `inventory_retention_days`:
    /// once per process and per change of the setting, it proposes the value when the
    /// replicated one differs. A failure is logged and retried with the next request; the
    /// activation goes on either way.
    async fn sync_retention(&self, policy: &Policy, now_ms: u64) {
        let want = policy.inventory_retention_ms;
        if self.retention_synced.load(Ordering::Relaxed) == want {
            return;
        }
        let have = self.backend.read(|s| s.config().inventory_retention_ms);
        if have != want {
            let cmd = Command::SetInventoryRetention {
                retention_ms: want,
                time_ms: now_ms,
            };
            if let Err(e) = self.backend.submit(cmd).await {
                tracing::warn!(error = %e, "could not set the inventory retention; retrying with the next request");
                return;
            }
            tracing::info!(
                days = want / kms_state::lifecycle::DAY_MS,
                "inventory retention set for the cluster"
            );
        }
        self.retention_synced.store(want, Ordering::Relaxed);
    }

    /// The ePID of a count group and the host identity it was made with: from the state, else
    /// generated once with the identity's build from the newest licensed CSVLK of that
    /// application and stored (first write wins, so concurrent first requests agree). The
    /// identity is created first when the cluster has none ([`Service::host_identity`]).
    pub async fn epid_for(
        &self,
        count_group: &str,
        application: Application,
        now_ms: u64,
        policy: &Policy,
    ) -> Result<(String, HostIdentity), ServiceError> {
        let read = |s: &HostState| {
            (
                s.host_identity().copied(),
                s.epid(count_group).map(str::to_owned),
            )
        };
        let identity = match self.backend.read(read) {
            (Some(identity), Some(epid)) => return Ok((epid, identity)),
            (Some(identity), None) => identity,
            (None, _) => self.host_identity(now_ms, policy).await?,
        };
        if let Some(epid) = self
            .backend
            .read(|s| s.epid(count_group).map(str::to_owned))
        {
            return Ok((epid, identity));
        }
        let generated = self.generate_epid(application, &identity, now_ms, policy);
        let stored = self
            .backend
            .submit(Command::SetEpid {
                count_group: count_group.to_string(),
                epid: generated,
                time_ms: now_ms,
            })
            .await?;
        let CommandResult::Epid(epid) = stored else {
            return Err(ServiceError::Unexpected);
        };
        // A regenerate may have replaced the identity meanwhile; its ePID won then.
        let identity = self
            .backend
            .read(|s| s.host_identity().copied())
            .unwrap_or(identity);
        Ok((epid, identity))
    }

    /// The cluster's host identity, chosen now when it has none (first write wins).
    ///
    /// A new cluster claims `host_os` with a random hardware id. A cluster that already
    /// stored ePIDs before identities existed keeps them: it claims the newest build among
    /// them (or `host_os` when that is newer, so every licensed key installs on it) and the
    /// hardware id its Windows ePID used to give, so Windows clients see no change;
    /// `kmsctl host-identity regenerate` makes all ePIDs uniform.
    pub async fn host_identity(
        &self,
        now_ms: u64,
        policy: &Policy,
    ) -> Result<HostIdentity, ServiceError> {
        if let Some(identity) = self.backend.read(|s| s.host_identity().copied()) {
            return Ok(identity);
        }
        let candidate = self
            .backend
            .read(|s| identity_for(s, policy.host_os, now_ms));
        if candidate.build != policy.host_os.build() {
            tracing::warn!(
                build = candidate.build,
                host_os = policy.host_os.name(),
                "stored ePIDs predate the host identity: kept, the host claims their newest build; run `kmsctl host-identity regenerate` to claim host_os in every ePID"
            );
        }
        match self
            .backend
            .submit(Command::SetHostIdentity(candidate))
            .await?
        {
            CommandResult::HostIdentity(identity) => Ok(identity),
            _ => Err(ServiceError::Unexpected),
        }
    }

    /// Replaces the host identity with a new one claiming `host_os` (new random hardware id)
    /// and every count group's ePID with one made for it, in one command. Returns the
    /// identity before and after.
    pub async fn regenerate_identity(
        &self,
        now_ms: u64,
    ) -> Result<(Option<HostIdentity>, HostIdentity), ServiceError> {
        let policy = self.policy();
        let before = self.backend.read(|s| s.host_identity().copied());
        let identity = HostIdentity {
            hwid: rand::random(),
            build: policy.host_os.build(),
            platform: policy.host_os.platform_id(),
            set_ms: now_ms,
        };
        let groups: BTreeMap<&str, Application> = self
            .catalog
            .groups()
            .map(|g| (g.count_group.as_str(), g.application))
            .collect();
        let epids = groups
            .into_iter()
            .map(|(group, app)| {
                let epid = self.generate_epid(app, &identity, now_ms, &policy);
                (group.to_string(), epid)
            })
            .collect();
        match self
            .backend
            .submit(Command::ReplaceHostIdentity { identity, epids })
            .await?
        {
            CommandResult::HostIdentity(after) => Ok((before, after)),
            _ => Err(ServiceError::Unexpected),
        }
    }

    /// A new ePID for `application` on a host with `identity`'s build: from the newest
    /// licensed CSVLK of that application that installs on it, else the newest such CSVLK
    /// of the catalog (a fixed ePID when the catalog has none).
    fn generate_epid(
        &self,
        application: Application,
        identity: &HostIdentity,
        now_ms: u64,
        policy: &Policy,
    ) -> String {
        let fits = |c: &Csvlk| c.min_host_build <= identity.build;
        let newest = |licensed_only: bool| {
            self.catalog
                .groups()
                .filter(|g| g.application == application)
                .filter(|g| !licensed_only || policy.licensed.contains(&g.name))
                .filter_map(|g| g.csvlk)
                .filter(fits)
                .max_by_key(|c| (c.release_year, c.min_host_build))
        };
        let Some(csvlk) = newest(true).or_else(|| newest(false)) else {
            return "03612-00206-556-000000-03-1033-17763.0000-0012019".to_string();
        };
        let (year, day) = date_from_unix_ms(now_ms);
        let choice = EpidChoice {
            random: rand::random(),
            lcid: policy.lcid,
            today_year: year,
            today_day_of_year: day,
        };
        match Epid::generate(&csvlk, HostBuild::of(identity.build), choice) {
            Ok(mut epid) => {
                epid.platform_id = identity.platform;
                epid.to_string()
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot generate an ePID for the host identity");
                "03612-00206-556-000000-03-1033-17763.0000-0012019".to_string()
            }
        }
    }
}

/// The identity a cluster without one claims (see [`Service::host_identity`]): `host_os` and
/// a random hardware id when no ePID is stored; else the newest stored build (at least
/// `host_os`'s) and the hardware id derived from the Windows ePID as before identities existed.
pub fn identity_for(state: &HostState, host_os: HostOs, now_ms: u64) -> HostIdentity {
    let stored: Vec<(&str, Epid)> = state
        .epids()
        .filter_map(|r| {
            Epid::parse(&r.epid)
                .ok()
                .map(|e| (r.count_group.as_str(), e))
        })
        .collect();
    let Some(newest) = stored.iter().map(|(_, e)| *e).max_by_key(|e| e.build) else {
        return HostIdentity {
            hwid: rand::random(),
            build: host_os.build(),
            platform: host_os.platform_id(),
            set_ms: now_ms,
        };
    };
    let (build, platform) = if host_os.build() > newest.build {
        (host_os.build(), host_os.platform_id())
    } else {
        let platform = platform_id_for_build(newest.build).unwrap_or(newest.platform_id);
        (newest.build, platform)
    };
    let hwid_source = stored
        .iter()
        .find(|(g, _)| *g == "windows")
        .or(stored.first())
        .map(|(g, _)| state.epid(g).unwrap_or_default())
        .unwrap_or_default();
    HostIdentity {
        hwid: hwid_from(hwid_source),
        build,
        platform,
        set_ms: now_ms,
    }
}

/// The 8-byte hardware id clusters derived from their Windows ePID before host identities
/// were replicated; kept so an upgraded cluster's identity keeps the hwid its clients saw.
pub fn hwid_from(epid: &str) -> [u8; 8] {
    let d = Sha256::digest(format!("kms-cluster hwid {epid}").as_bytes());
    let mut h = [0u8; 8];
    h.copy_from_slice(&d[..8]);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_epid(s: &mut HostState, group: &str, epid: &str) {
        s.apply(&Command::SetEpid {
            count_group: group.into(),
            epid: epid.into(),
            time_ms: 1,
        });
    }

    #[test]
    fn a_new_cluster_claims_host_os() {
        let s = HostState::default();
        let a = identity_for(&s, HostOs::Server2022, 7);
        assert_eq!((a.build, a.platform, a.set_ms), (20348, 3612, 7));
        let b = identity_for(&s, HostOs::Server2022, 7);
        assert_ne!(a.hwid, b.hwid, "hardware ids are random");
    }

    #[test]
    fn an_upgraded_cluster_keeps_its_epids_and_windows_hwid() {
        let mut s = HostState::default();
        let windows = "06401-00206-551-123456-03-1033-9600.0000-1002018";
        set_epid(
            &mut s,
            "office",
            "03612-00206-491-123456-03-1033-17763.0000-0012019",
        );
        set_epid(&mut s, "windows", windows);
        // Newest stored build (17763) is newer than 2012 R2: it is kept.
        let id = identity_for(&s, HostOs::Server2012R2, 9);
        assert_eq!((id.build, id.platform), (17763, 3612));
        assert_eq!(id.hwid, hwid_from(windows));
        // host_os newer than every stored build wins, so licensed keys still install.
        let id = identity_for(&s, HostOs::Server2025, 9);
        assert_eq!((id.build, id.platform), (26100, 3612));
        assert_eq!(id.hwid, hwid_from(windows));
    }
}
