//! The host's activation policy: turns an authenticated request into a state command
//! and an answer, the way a Microsoft KMS host decides.
//!
//! Order of checks: product known to the catalog → product group licensed on this host
//! (operator policy) → application id consistent → required count sane → optional client
//! clock check. Refusals still become commands so the statistics count them as failed.

use crate::backend::{Backend, BackendError};
use kms_protocol::epid::{date_from_unix_ms, Epid, EpidChoice};
use kms_protocol::host::{
    Answer, HRESULT_INVALID_DATA, HRESULT_TIME_SKEW, HRESULT_UNSUPPORTED_PRODUCT,
};
use kms_protocol::kms::{BaseResponse, DecodedRequest, ResponseRandom};
use kms_protocol::products::{Application, Catalog};
use kms_protocol::time::{filetime_from_unix_ms, skew_ms};
use kms_protocol::LicenseState;
use kms_state::{Activation, Command, CommandResult, Outcome};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
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
    epids: RwLock<HashMap<String, String>>,
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
            epids: RwLock::new(HashMap::new()),
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

        let activation = Activation {
            request_id: Uuid::new_v4(),
            time_ms: now_ms,
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
        let epid = self
            .epid_for(&group.count_group, group.application, now_ms, &policy)
            .await?;
        let hwid = hwid_from(&epid);
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

    /// The stable ePID of a count group: from memory, else from the state, else generated
    /// once from the newest licensed CSVLK of that application and stored (first write
    /// wins, so concurrent first requests agree).
    pub async fn epid_for(
        &self,
        count_group: &str,
        application: Application,
        now_ms: u64,
        policy: &Policy,
    ) -> Result<String, ServiceError> {
        if let Some(e) = self.epids.read().expect("epid lock").get(count_group) {
            return Ok(e.clone());
        }
        if let Some(e) = self
            .backend
            .read(|s| s.epid(count_group).map(str::to_owned))
        {
            self.remember(count_group, &e);
            return Ok(e);
        }
        let licensed: Vec<&String> = policy.licensed.iter().collect();
        let csvlk = self
            .catalog
            .newest_csvlk_group(application, &licensed)
            .and_then(|g| g.csvlk)
            .or_else(|| {
                self.catalog
                    .groups()
                    .filter(|g| g.application == application)
                    .filter_map(|g| g.csvlk)
                    .max_by_key(|c| (c.release_year, c.min_host_build))
            });
        let generated = match csvlk {
            Some(c) => {
                let (year, day) = date_from_unix_ms(now_ms);
                Epid::generate(
                    &c,
                    EpidChoice {
                        random: rand::random(),
                        lcid: policy.lcid,
                        today_year: year,
                        today_day_of_year: day,
                    },
                )
                .to_string()
            }
            None => "03612-00206-556-000000-03-1033-17763.0000-0012019".to_string(),
        };
        let stored = self
            .backend
            .submit(Command::SetEpid {
                count_group: count_group.to_string(),
                epid: generated,
                time_ms: now_ms,
            })
            .await?;
        let CommandResult::Epid(e) = stored else {
            return Err(ServiceError::Unexpected);
        };
        self.remember(count_group, &e);
        Ok(e)
    }

    fn remember(&self, group: &str, epid: &str) {
        self.epids
            .write()
            .expect("epid lock")
            .insert(group.to_string(), epid.to_string());
    }
}

/// A stable 8-byte hardware id derived from the host's ePID, so every node of a cluster
/// presents the same identity without extra configuration.
pub fn hwid_from(epid: &str) -> [u8; 8] {
    let d = Sha256::digest(format!("kms-cluster hwid {epid}").as_bytes());
    let mut h = [0u8; 8];
    h.copy_from_slice(&d[..8]);
    h
}
