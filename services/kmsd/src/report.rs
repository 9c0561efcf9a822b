//! Builds the admin API documents ([`kms_api`]) from the state, the catalog and the
//! running configuration.

use crate::service::Service;
use crate::stats::Counters;
use kms_api::{ClientInfo, GroupStatus, RequestStats, StatusReport, StorageView};
use kms_protocol::LicenseState;
use kms_state::lifecycle::{activation_ends_ms, failure_reason};
use kms_state::{ClientFilter, Stats};
use std::collections::BTreeMap;

fn request_stats(s: Option<&Stats>) -> RequestStats {
    let Some(s) = s else {
        return RequestStats {
            requests_by_license_state: LicenseState::KNOWN
                .iter()
                .map(|l| (l.label().to_string(), 0))
                .collect(),
            ..RequestStats::default()
        };
    };
    let mut by: BTreeMap<String, u64> = s
        .by_license_state
        .known()
        .iter()
        .map(|(l, n)| (l.label().to_string(), *n))
        .collect();
    if s.by_license_state.other > 0 {
        by.insert("other".into(), s.by_license_state.other);
    }
    RequestStats {
        total_requests: s.total,
        failed_requests: s.failed,
        requests_by_license_state: by,
    }
}

/// Inputs of the status document that are not in the state.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// KMS listening addresses.
    pub listening: Vec<std::net::SocketAddr>,
    /// DNS publishing enabled.
    pub dns_publishing: bool,
    /// The data directory (its size and free disk space are reported).
    pub data_dir: std::path::PathBuf,
}

/// Size of `dir` and the free space of its filesystem (zeros for what cannot be read).
pub fn storage(dir: &std::path::Path) -> StorageView {
    let space = kms_cluster::space::of(dir).ok();
    StorageView {
        data_dir_bytes: kms_cluster::dir_size(dir),
        available_bytes: space.map_or(0, |s| s.available),
        filesystem_bytes: space.map_or(0, |s| s.size),
    }
}

/// `GET /status` at `now_ms`.
pub fn status(
    service: &Service,
    counters: &Counters,
    facts: &HostFacts,
    now_ms: u64,
) -> StatusReport {
    let policy = service.policy();
    let catalog = service.catalog();
    let groups = service.backend().read(|st| {
        catalog
            .count_groups()
            .into_iter()
            .map(|cg| {
                let licensed_products: Vec<String> = catalog
                    .groups()
                    .filter(|g| g.count_group == cg.name && policy.licensed.contains(&g.name))
                    .map(|g| g.name.clone())
                    .collect();
                let active = st.active_clients_at(&cg.name, now_ms);
                GroupStatus {
                    display: cg.display.clone(),
                    application_id: cg.application.id(),
                    epid: st.epid(&cg.name).map(str::to_owned),
                    current_count: active.min(cg.cap),
                    active_clients: active,
                    minimum: cg.minimum,
                    cap: cg.cap,
                    licensed_products,
                    stats: request_stats(st.group_stats(&cg.name)),
                    name: cg.name,
                }
            })
            .collect::<Vec<_>>()
    });
    let stats = service.backend().read(|st| request_stats(Some(st.stats())));
    let c = counters.snapshot();
    let connections = serde_json_map(&c);
    let raft = service.backend().node().view();
    StatusReport {
        raft,
        version: env!("CARGO_PKG_VERSION").to_string(),
        listening: facts.listening.iter().map(|a| a.to_string()).collect(),
        port: facts.listening.first().map(|a| a.port()).unwrap_or(1688),
        dns_publishing: facts.dns_publishing,
        priority: "Normal".into(),
        activation_interval: policy.activation_interval,
        renewal_interval: policy.renewal_interval,
        licensed_groups: policy.licensed.iter().cloned().collect(),
        stats,
        groups,
        connections,
        clock_offset_secs: policy.clock_offset_ms / 1000,
        storage: storage(&facts.data_dir),
    }
}

fn serde_json_map(c: &crate::stats::CounterSnapshot) -> BTreeMap<String, u64> {
    let v = serde_json::to_value(c).unwrap_or_default();
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_u64().map(|n| (k.clone(), n)))
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /clients` with a filter.
pub fn clients(service: &Service, filter: ClientFilter, now_ms: u64) -> Vec<ClientInfo> {
    let catalog = service.catalog();
    let lifecycle = service.policy().lifecycle;
    let mut out = service.backend().read(|st| {
        st.clients(filter)
            .map(|r| ClientInfo {
                cmid: r.cmid,
                machine_name: r.machine_name.to_owned(),
                count_group: r.count_group.to_string(),
                product_group: r.product_group.map(str::to_owned),
                sku_id: r.sku_id,
                product: catalog.sku(&r.sku_id).map(|s| s.name.clone()),
                client_vm: r.client_vm,
                license_state: r.license_state.label().to_string(),
                grace_minutes: r.grace_minutes,
                protocol: r.protocol_major,
                first_seen_ms: r.first_seen_ms,
                last_seen_ms: r.last_seen_ms,
                requests: r.requests,
                counted: r.is_active_at(now_ms),
                last_request_ms: r.last_request_ms,
                last_success_ms: r.last_success_ms,
                activation_ends_ms: r.last_success_ms.map(activation_ends_ms),
                last_failure: r.last_failure.map(|f| kms_api::ClientFailure {
                    time_ms: f.time_ms,
                    hresult: format!("0x{:08X}", f.hresult),
                    reason: failure_reason(f.hresult).to_string(),
                }),
                consecutive_failures: r.consecutive_failures,
                answered_by: r.answered_by,
                previous_names: r.previous_names.iter().map(str::to_owned).collect(),
                state: r.lifecycle(now_ms, &lifecycle).label().to_string(),
            })
            .collect::<Vec<_>>()
    });
    out.sort_by(|a, b| {
        b.last_request_ms
            .cmp(&a.last_request_ms)
            .then(a.cmid.cmp(&b.cmid))
    });
    out
}

/// The `/host-identity` document: the replicated identity and each stored ePID checked
/// against it.
pub fn host_identity(service: &Service) -> kms_api::HostIdentityReport {
    let host_os = service.policy().host_os;
    service.backend().read(|s| {
        let identity = s.host_identity().copied();
        let epids: Vec<kms_api::GroupEpid> = s
            .epids()
            .map(|r| kms_api::GroupEpid {
                count_group: r.count_group.clone(),
                epid: r.epid.clone(),
                matches_identity: identity.is_some_and(|id| {
                    kms_protocol::epid::Epid::parse(&r.epid)
                        .is_ok_and(|e| e.build == id.build && e.platform_id == id.platform)
                }),
            })
            .collect();
        kms_api::HostIdentityReport {
            uniform: identity.is_some() && epids.iter().all(|e| e.matches_identity),
            identity: identity.map(|id| kms_api::HostIdentityView {
                hwid: id.hwid.iter().map(|b| format!("{b:02X}")).collect(),
                build: id.build,
                platform: id.platform,
                host_os: kms_protocol::host_os::HostOs::from_build(id.build)
                    .map(|os| os.name().to_string()),
                set_ms: id.set_ms,
            }),
            configured_host_os: host_os.name().to_string(),
            epids,
        }
    })
}
