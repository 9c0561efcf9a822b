//! Kubernetes peer discovery (`discovery = "kubernetes"`): the members of a StatefulSet
//! find each other through the Kubernetes API.
//!
//! - The EndpointSlices (discovery.k8s.io/v1) of the headless Service
//!   (`kubernetes.io/service-name=<service>`) list the pods; pod `<statefulset>-N` is node
//!   `N + 1`, reachable at `<hostname>.<service>.<namespace>.svc:<port>` when the endpoint
//!   has a hostname (StatefulSet pods do), else at its first address; `<port>` is the
//!   slice port named `kubernetes_port_name`. The Service should set
//!   `publishNotReadyAddresses`: a pod is not ready until it belongs to the cluster.
//! - The StatefulSet's `spec.replicas` is the desired size.
//! - Node 1 (ordinal 0) initializes a one-voter cluster when its Raft store is fresh and no
//!   discovered peer already belongs to a cluster; the others never initialize.
//! - On the leader, every `discovery_interval_ms`: [`plan`] turns the membership, the
//!   discovered endpoints and the replica count into [`Action`]s (add and promote pods
//!   with an ordinal below `replicas`, remove members above it one at a time, refresh
//!   changed addresses), which are then applied through openraft. A pod that merely
//!   disappears from the slices (crash, restart) is never removed; nothing happens while
//!   the StatefulSet cannot be read. The leader never removes itself: once its pod is
//!   deleted it hands leadership over on the way out (`kms_cluster::handover`) and the
//!   next leader removes it.
//!
//! API errors are logged and retried next round; they never stop the daemon. Every
//! membership change (and the initialization) is recorded in the audit log
//! ([`crate::audit`], events `discovery.*`).

use crate::audit::Audit;
use crate::config::{Config, ConfigError};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kms_cluster::membership;
use kms_cluster::node::ClusterNode;
use kms_cluster::{Node, NodeId};
use kube::api::{Api, ListParams};
use openraft::{ChangeMembers, ServerState};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Where the service-account namespace is mounted in a pod.
pub const NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// A learner is promoted once it matched the leader's log up to this many entries.
pub const MAX_PROMOTE_LAG: u64 = 64;

/// How long adding one learner (until it caught up) may take before the round gives up.
pub const ADD_TIMEOUT: Duration = Duration::from_secs(30);

/// The Kubernetes side of the configuration, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSettings {
    /// Namespace; None: the service-account file, else the kubeconfig's namespace.
    pub namespace: Option<String>,
    /// Headless Service name.
    pub service: String,
    /// StatefulSet name.
    pub statefulset: String,
    /// EndpointSlice port name of the cluster port.
    pub port_name: String,
    /// API server URL override.
    pub api_url: Option<String>,
    /// Round interval.
    pub interval: Duration,
}

impl KubeSettings {
    /// From the daemon configuration (`discovery = "kubernetes"`).
    pub fn from_config(cfg: &Config) -> Result<Self, ConfigError> {
        let service = cfg
            .kubernetes_service
            .clone()
            .filter(|s| !s.trim().is_empty())
            .ok_or(ConfigError::Invalid {
                key: "kubernetes_service",
                message: "required with discovery = kubernetes".into(),
            })?;
        let statefulset = cfg.kubernetes_statefulset.clone().unwrap_or_else(|| {
            service
                .strip_suffix("-headless")
                .unwrap_or(&service)
                .to_string()
        });
        Ok(KubeSettings {
            namespace: cfg.kubernetes_namespace.clone(),
            service,
            statefulset,
            port_name: cfg.kubernetes_port_name.clone(),
            api_url: cfg.kubernetes_api_url.clone(),
            interval: Duration::from_millis(cfg.discovery_interval_ms.max(1)),
        })
    }
}

/// The node id of pod `<statefulset>-<ordinal>`: ordinal + 1.
pub fn node_id_of_pod(pod: &str, statefulset: &str) -> Option<NodeId> {
    let ordinal = pod.strip_prefix(statefulset)?.strip_prefix('-')?;
    if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ordinal.parse::<NodeId>().ok()?.checked_add(1)
}

/// The members listed by EndpointSlices: node id → cluster address. Endpoints of other
/// pods, without an address or without the named port are skipped; the first slice
/// listing a node wins.
pub fn endpoints_from_slices(
    slices: &[EndpointSlice],
    settings: &KubeSettings,
    namespace: &str,
) -> BTreeMap<NodeId, String> {
    let mut out = BTreeMap::new();
    for slice in slices {
        if slice.address_type == "FQDN" {
            continue;
        }
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == settings.port_name)
            .and_then(|p| p.port)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let pod = ep
                .target_ref
                .as_ref()
                .and_then(|r| r.name.as_deref())
                .or(ep.hostname.as_deref());
            let Some(id) = pod.and_then(|p| node_id_of_pod(p, &settings.statefulset)) else {
                continue;
            };
            let addr = match (&ep.hostname, ep.addresses.first()) {
                (Some(h), _) if !h.is_empty() => {
                    format!("{h}.{}.{namespace}.svc:{port}", settings.service)
                }
                (_, Some(ip)) if ip.contains(':') => format!("[{ip}]:{port}"),
                (_, Some(ip)) => format!("{ip}:{port}"),
                _ => continue,
            };
            out.entry(id).or_insert(addr);
        }
    }
    out
}

/// The leader's view of the membership, as [`plan`] needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembershipView {
    /// This node (the leader).
    pub leader: NodeId,
    /// Voters and their addresses.
    pub voters: BTreeMap<NodeId, String>,
    /// Learners and their addresses.
    pub learners: BTreeMap<NodeId, String>,
    /// Highest log index each follower/learner matched, when known.
    pub matched: BTreeMap<NodeId, u64>,
    /// The leader's last log index.
    pub last_log_index: u64,
}

/// One membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Update the addresses of existing members.
    SetAddresses(BTreeMap<NodeId, String>),
    /// Remove a voter above the desired size (it leaves the membership).
    RemoveVoter(NodeId),
    /// Remove a learner above the desired size.
    RemoveLearner(NodeId),
    /// Promote a caught-up learner to voter.
    Promote(NodeId),
    /// Add a new node: as learner until caught up, then as voter.
    Add {
        /// Node id.
        id: NodeId,
        /// Its cluster address.
        addr: String,
    },
}

/// What to change, given the membership, the discovered endpoints and the StatefulSet's
/// replica count. Wanted members are ids `1..=replicas`; at most one voter is removed
/// per round, never the leader, never the last voter; members missing from the slices
/// are left alone.
pub fn plan(
    view: &MembershipView,
    discovered: &BTreeMap<NodeId, String>,
    replicas: u64,
) -> Vec<Action> {
    let wanted = |id: NodeId| id >= 1 && id <= replicas;
    let mut actions = Vec::new();

    let moved: BTreeMap<NodeId, String> = view
        .voters
        .iter()
        .chain(&view.learners)
        .filter(|(id, _)| wanted(**id))
        .filter_map(|(id, addr)| match discovered.get(id) {
            Some(new) if new != addr => Some((*id, new.clone())),
            _ => None,
        })
        .collect();
    if !moved.is_empty() {
        actions.push(Action::SetAddresses(moved));
    }

    for id in view.learners.keys().filter(|id| !wanted(**id)) {
        actions.push(Action::RemoveLearner(*id));
    }
    if view.voters.len() > 1 {
        if let Some(id) = view
            .voters
            .keys()
            .rev()
            .find(|id| !wanted(**id) && **id != view.leader)
        {
            actions.push(Action::RemoveVoter(*id));
        }
    }

    for id in view.learners.keys().filter(|id| wanted(**id)) {
        let caught_up = view
            .matched
            .get(id)
            .is_some_and(|m| m + MAX_PROMOTE_LAG >= view.last_log_index);
        if caught_up {
            actions.push(Action::Promote(*id));
        }
    }

    for (id, addr) in discovered {
        if wanted(*id) && !view.voters.contains_key(id) && !view.learners.contains_key(id) {
            actions.push(Action::Add {
                id: *id,
                addr: addr.clone(),
            });
        }
    }
    actions
}

/// A Kubernetes API client for discovery.
#[derive(Clone)]
pub struct KubeSource {
    client: kube::Client,
    /// The namespace in use.
    pub namespace: String,
    settings: KubeSettings,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("namespace", &self.namespace)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl KubeSource {
    /// Builds the client: `api_url` (no credentials) when set, else the in-cluster
    /// service account, else the kubeconfig.
    pub async fn connect(settings: &KubeSettings) -> Result<KubeSource, String> {
        let config = match &settings.api_url {
            Some(url) => {
                let uri: http::Uri = url
                    .parse()
                    .map_err(|e| format!("kubernetes_api_url {url:?}: {e}"))?;
                kube::Config::new(uri)
            }
            None => match kube::Config::incluster() {
                Ok(c) => c,
                Err(incluster) => kube::Config::infer().await.map_err(|e| {
                    format!("no in-cluster config ({incluster}) and no kubeconfig ({e})")
                })?,
            },
        };
        let namespace = match &settings.namespace {
            Some(ns) => ns.clone(),
            None => std::fs::read_to_string(NAMESPACE_FILE)
                .map(|s| s.trim().to_string())
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| config.default_namespace.clone()),
        };
        let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
        Ok(KubeSource {
            client,
            namespace,
            settings: settings.clone(),
        })
    }

    /// The members listed by the Service's EndpointSlices.
    pub async fn endpoints(&self) -> Result<BTreeMap<NodeId, String>, kube::Error> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.namespace);
        let selector = format!("kubernetes.io/service-name={}", self.settings.service);
        let list = api.list(&ListParams::default().labels(&selector)).await?;
        Ok(endpoints_from_slices(
            &list.items,
            &self.settings,
            &self.namespace,
        ))
    }

    /// The StatefulSet's desired replica count (`spec.replicas`, default 1).
    pub async fn replicas(&self) -> Result<u64, kube::Error> {
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &self.namespace);
        let sts = api.get(&self.settings.statefulset).await?;
        let replicas = sts.spec.and_then(|s| s.replicas).unwrap_or(1);
        Ok(u64::try_from(replicas).unwrap_or(0))
    }
}

/// Runs discovery until `stop` turns true: initializes the cluster on node 1, reconciles
/// the membership while this node leads. `advertise` is this node's configured address.
pub async fn run(
    node: Arc<ClusterNode>,
    settings: KubeSettings,
    advertise: String,
    audit: Arc<Audit>,
    mut stop: watch::Receiver<bool>,
) {
    let mut source = None;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(settings.interval) => {}
        }
        if *stop.borrow() {
            return;
        }
        if source.is_none() {
            match KubeSource::connect(&settings).await {
                Ok(s) => {
                    tracing::info!(namespace = %s.namespace, service = %settings.service, statefulset = %settings.statefulset, "kubernetes discovery started");
                    source = Some(s);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "kubernetes discovery: no API client; retrying");
                    continue;
                }
            }
        }
        if let Some(s) = &source {
            round(&node, s, &advertise, &audit).await;
        }
    }
}

/// One discovery round.
async fn round(node: &ClusterNode, source: &KubeSource, advertise: &str, audit: &Audit) {
    let me = node.node_id();
    if node.in_quarantine() {
        // An empty store: the node asks these peers whether they know an earlier incarnation
        // of it before it takes part in Raft (kms-cluster's identity check).
        match source.endpoints().await {
            Ok(d) => node.note_peers(
                d.into_iter()
                    .filter(|(id, _)| *id != me)
                    .map(|(_, addr)| addr)
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "kubernetes discovery: cannot list EndpointSlices")
            }
        }
        return;
    }
    let m = node.metrics();
    if me == 1
        && m.membership_config
            .membership()
            .voter_ids()
            .next()
            .is_none()
    {
        // Possibly a fresh store: initialize only with a complete view of the peers.
        let discovered = match source.endpoints().await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "kubernetes discovery: cannot list EndpointSlices");
                return;
            }
        };
        let addr = discovered
            .get(&me)
            .cloned()
            .unwrap_or(advertise.to_string());
        let peers: Vec<String> = discovered
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(_, a)| a.clone())
            .collect();
        match node.initialize_alone(&addr, &peers).await {
            Ok(true) => audit.record(
                "discovery.initialize",
                serde_json::json!({ "members": { (me.to_string()): addr }, "ok": true }),
            ),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "kubernetes discovery: cannot initialize the cluster");
                audit.record(
                    "discovery.initialize",
                    serde_json::json!({ "members": { (me.to_string()): addr }, "ok": false, "error": e }),
                );
            }
        }
        return;
    }
    if m.state != ServerState::Leader || m.current_leader != Some(me) {
        return;
    }
    let discovered = match source.endpoints().await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "kubernetes discovery: cannot list EndpointSlices");
            return;
        }
    };
    let replicas = match source.replicas().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "kubernetes discovery: cannot read the StatefulSet; no membership change this round");
            return;
        }
    };
    let membership = m.membership_config.membership();
    let voter_ids: BTreeSet<NodeId> = membership.voter_ids().collect();
    let mut view = MembershipView {
        leader: me,
        last_log_index: m.last_log_index.unwrap_or(0),
        ..MembershipView::default()
    };
    for (id, n) in membership.nodes() {
        if voter_ids.contains(id) {
            view.voters.insert(*id, n.addr.clone());
        } else {
            view.learners.insert(*id, n.addr.clone());
        }
    }
    if let Some(r) = &m.replication {
        for (id, l) in r.iter() {
            if let Some(l) = l {
                view.matched.insert(*id, l.index);
            }
        }
    }
    if me > replicas {
        tracing::info!(
            node_id = me,
            replicas,
            "this leader is above the StatefulSet's replicas; the next leader removes it"
        );
    }
    for action in plan(&view, &discovered, replicas) {
        let result = apply(node, &action).await;
        let (event, details) = audit_record(&action, &result);
        audit.record(event, details);
        if let Err(e) = result {
            tracing::warn!(?action, error = %e, "kubernetes discovery: membership change failed; retrying next round");
            return;
        }
    }
}

/// The audit event name and details of an applied action.
pub fn audit_record(
    action: &Action,
    result: &Result<(), String>,
) -> (&'static str, serde_json::Value) {
    use serde_json::json;
    let (event, mut details) = match action {
        Action::SetAddresses(m) => ("discovery.set_addresses", json!({ "addresses": m })),
        Action::RemoveVoter(id) => ("discovery.remove_voter", json!({ "node_id": id })),
        Action::RemoveLearner(id) => ("discovery.remove_learner", json!({ "node_id": id })),
        Action::Promote(id) => ("discovery.promote", json!({ "node_id": id })),
        Action::Add { id, addr } => (
            "discovery.add_learner",
            json!({ "node_id": id, "addr": addr }),
        ),
    };
    details["ok"] = json!(result.is_ok());
    if let Err(e) = result {
        details["error"] = json!(e);
    }
    (event, details)
}

/// Applies one action through openraft.
async fn apply(node: &ClusterNode, action: &Action) -> Result<(), String> {
    let raft = node.raft();
    let to_nodes = |m: &BTreeMap<NodeId, String>| -> BTreeMap<NodeId, Node> {
        m.iter()
            .map(|(id, a)| (*id, Node { addr: a.clone() }))
            .collect()
    };
    // Every change goes through kms-cluster's guarded membership path: a learner is promoted
    // only when it answers and has caught up, and no change waits longer than its bound.
    let tls = node.tls();
    let guarded = |e: membership::MembershipError| e.to_string();
    match action {
        Action::SetAddresses(m) => {
            tracing::info!(addresses = ?m, "kubernetes discovery: updating member addresses");
            membership::change(
                raft,
                ChangeMembers::SetNodes(to_nodes(m)),
                membership::CHANGE_TIMEOUT,
            )
            .await
            .map_err(guarded)
        }
        Action::RemoveVoter(id) => {
            tracing::info!(
                node_id = id,
                "kubernetes discovery: removing voter above the StatefulSet's replicas"
            );
            membership::remove(raft, *id).await.map_err(guarded)
        }
        Action::RemoveLearner(id) => {
            tracing::info!(
                node_id = id,
                "kubernetes discovery: removing learner above the StatefulSet's replicas"
            );
            membership::remove(raft, *id).await.map_err(guarded)
        }
        Action::Promote(id) => {
            tracing::info!(
                node_id = id,
                "kubernetes discovery: promoting learner to voter"
            );
            membership::promote(raft, *id, |addr| membership::answers(addr, tls))
                .await
                .map_err(guarded)
        }
        Action::Add { id, addr } => {
            tracing::info!(node_id = id, %addr, "kubernetes discovery: adding learner");
            match tokio::time::timeout(
                ADD_TIMEOUT,
                raft.add_learner(*id, Node { addr: addr.clone() }, true),
            )
            .await
            {
                Ok(r) => {
                    r.map_err(|e| e.to_string())?;
                }
                Err(_) => return Err(format!("learner {id} did not catch up in {ADD_TIMEOUT:?}")),
            }
            tracing::info!(
                node_id = id,
                "kubernetes discovery: promoting learner to voter"
            );
            membership::promote(raft, *id, |addr| membership::answers(addr, tls))
                .await
                .map_err(guarded)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort};

    fn settings() -> KubeSettings {
        let cfg = Config {
            discovery: "kubernetes".into(),
            kubernetes_service: Some("kms-headless".into()),
            ..Config::default()
        };
        KubeSettings::from_config(&cfg).unwrap()
    }

    fn ep(pod: &str, ip: &str, hostname: Option<&str>) -> Endpoint {
        Endpoint {
            addresses: vec![ip.to_string()],
            hostname: hostname.map(str::to_string),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: Some(pod.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn slice(ty: &str, port: i32, endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            address_type: ty.into(),
            endpoints,
            ports: Some(vec![
                EndpointPort {
                    name: Some("kms".into()),
                    port: Some(1688),
                    ..Default::default()
                },
                EndpointPort {
                    name: Some("cluster".into()),
                    port: Some(port),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }
    }

    fn map(items: &[(NodeId, &str)]) -> BTreeMap<NodeId, String> {
        items.iter().map(|(i, a)| (*i, a.to_string())).collect()
    }

    #[test]
    fn settings_defaults() {
        let s = settings();
        assert_eq!(s.statefulset, "kms");
        assert_eq!(s.port_name, "cluster");
        assert_eq!(s.interval, Duration::from_millis(5000));
    }

    #[test]
    fn pod_names_to_node_ids() {
        assert_eq!(node_id_of_pod("kms-0", "kms"), Some(1));
        assert_eq!(node_id_of_pod("kms-12", "kms"), Some(13));
        assert_eq!(node_id_of_pod("kms-cluster-0", "kms"), None);
        assert_eq!(node_id_of_pod("kms-", "kms"), None);
        assert_eq!(node_id_of_pod("kms-+1", "kms"), None);
        assert_eq!(node_id_of_pod("other-1", "kms"), None);
    }

    #[test]
    fn slices_give_addresses() {
        let s = settings();
        let slices = vec![
            slice(
                "IPv4",
                9689,
                vec![
                    ep("kms-0", "10.0.0.5", Some("kms-0")),
                    ep("kms-1", "10.0.0.6", None),
                    ep("unrelated-0", "10.0.0.7", None),
                ],
            ),
            slice("IPv6", 9689, vec![ep("kms-2", "fd00::2", None)]),
            slice("IPv4", 9000, vec![ep("kms-2", "10.0.0.8", None)]),
        ];
        let got = endpoints_from_slices(&slices, &s, "ns");
        assert_eq!(
            got,
            map(&[
                (1, "kms-0.kms-headless.ns.svc:9689"),
                (2, "10.0.0.6:9689"),
                (3, "[fd00::2]:9689"),
            ])
        );
        // A slice without the named port is skipped.
        let mut no_port = slice("IPv4", 9689, vec![ep("kms-0", "10.0.0.5", None)]);
        no_port.ports = Some(vec![EndpointPort {
            name: Some("kms".into()),
            port: Some(1688),
            ..Default::default()
        }]);
        assert!(endpoints_from_slices(&[no_port], &s, "ns").is_empty());
    }

    fn view(voters: &[(NodeId, &str)], learners: &[(NodeId, &str)]) -> MembershipView {
        MembershipView {
            leader: 1,
            voters: map(voters),
            learners: map(learners),
            matched: BTreeMap::new(),
            last_log_index: 100,
        }
    }

    #[test]
    fn grows_to_the_replicas() {
        let v = view(&[(1, "a:1")], &[]);
        let found = map(&[(1, "a:1"), (2, "b:1"), (3, "c:1"), (4, "d:1")]);
        assert_eq!(
            plan(&v, &found, 3),
            vec![
                Action::Add {
                    id: 2,
                    addr: "b:1".into()
                },
                Action::Add {
                    id: 3,
                    addr: "c:1".into()
                },
            ]
        );
        // Nothing at all is planned when everything matches.
        let full = view(&[(1, "a:1"), (2, "b:1"), (3, "c:1")], &[]);
        assert!(plan(&full, &found, 3).is_empty());
    }

    #[test]
    fn promotes_only_caught_up_learners() {
        let mut v = view(&[(1, "a:1")], &[(2, "b:1"), (3, "c:1")]);
        v.matched.insert(2, 90);
        v.matched.insert(3, 10);
        assert_eq!(plan(&v, &BTreeMap::new(), 3), vec![Action::Promote(2)]);
    }

    #[test]
    fn missing_pods_are_not_removed() {
        let v = view(&[(1, "a:1"), (2, "b:1"), (3, "c:1")], &[]);
        assert!(plan(&v, &map(&[(1, "a:1")]), 3).is_empty());
    }

    #[test]
    fn scale_down_removes_one_voter_at_a_time_never_the_leader() {
        let v = view(&[(1, "a:1"), (2, "b:1"), (3, "c:1")], &[(4, "d:1")]);
        assert_eq!(
            plan(&v, &BTreeMap::new(), 1),
            vec![Action::RemoveLearner(4), Action::RemoveVoter(3)]
        );
        let mut led_by_3 = view(&[(1, "a:1"), (2, "b:1"), (3, "c:1")], &[]);
        led_by_3.leader = 3;
        assert_eq!(
            plan(&led_by_3, &BTreeMap::new(), 1),
            vec![Action::RemoveVoter(2)]
        );
        let mut alone = view(&[(3, "c:1")], &[]);
        alone.leader = 3;
        assert!(plan(&alone, &BTreeMap::new(), 1).is_empty());
        // replicas 0 (scaled to zero): still never below one voter, never the leader.
        let two = view(&[(1, "a:1"), (2, "b:1")], &[]);
        assert_eq!(
            plan(&two, &BTreeMap::new(), 0),
            vec![Action::RemoveVoter(2)]
        );
        let one = view(&[(1, "a:1")], &[]);
        assert!(plan(&one, &BTreeMap::new(), 0).is_empty());
    }

    #[test]
    fn audit_event_names() {
        let (e, d) = audit_record(
            &Action::Add {
                id: 2,
                addr: "b:1".into(),
            },
            &Ok(()),
        );
        assert_eq!(e, "discovery.add_learner");
        assert_eq!(
            d,
            serde_json::json!({"node_id": 2, "addr": "b:1", "ok": true})
        );
        let (e, d) = audit_record(&Action::RemoveVoter(3), &Err("no quorum".into()));
        assert_eq!(e, "discovery.remove_voter");
        assert_eq!(d["ok"], false);
        assert_eq!(d["error"], "no quorum");
        assert_eq!(
            audit_record(&Action::Promote(2), &Ok(())).0,
            "discovery.promote"
        );
        assert_eq!(
            audit_record(&Action::RemoveLearner(4), &Ok(())).0,
            "discovery.remove_learner"
        );
        assert_eq!(
            audit_record(&Action::SetAddresses(map(&[(1, "a:1")])), &Ok(())).0,
            "discovery.set_addresses"
        );
    }

    #[test]
    fn changed_addresses_are_updated_for_wanted_members() {
        let v = view(&[(1, "0.0.0.0:9689"), (2, "b:1"), (3, "c:1")], &[]);
        let found = map(&[(1, "a:1"), (2, "b:1"), (3, "c:2")]);
        assert_eq!(
            plan(&v, &found, 2),
            vec![
                Action::SetAddresses(map(&[(1, "a:1")])),
                Action::RemoveVoter(3)
            ]
        );
    }
}
