//! Kubernetes discovery against a fake API server (`kms_tests::fake_kube`): three real
//! `kmsd` processes on 127.0.0.1-3 find each other through EndpointSlices, node 1
//! initializes the cluster and adds the others as voters; a pod missing from the slices
//! stays a voter; scaling the StatefulSet down removes the member above the replicas; a
//! learner that no longer answers is not promoted (the guarded membership path).

use kms_tests::fake_kube::FakeKube;
use kms_tests::harness::{free_port_on, Kmsd};
use kmsd::discovery::{KubeSettings, KubeSource};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const NS: &str = "kms";
const SVC: &str = "kms-headless";
const STS: &str = "kms";

fn voters(node: &Kmsd) -> Option<BTreeSet<u64>> {
    let s = node.try_status()?;
    Some(
        s["raft"]["voters"]
            .as_object()?
            .keys()
            .filter_map(|k| k.parse().ok())
            .collect(),
    )
}

fn learners(node: &Kmsd) -> BTreeSet<u64> {
    node.try_status()
        .and_then(|s| {
            s["raft"]["learners"]
                .as_object()
                .map(|o| o.keys().filter_map(|k| k.parse().ok()).collect())
        })
        .unwrap_or_default()
}

fn wait_voters(nodes: &[&Kmsd], want: &[u64], timeout: Duration) {
    let want: BTreeSet<u64> = want.iter().copied().collect();
    let deadline = Instant::now() + timeout;
    loop {
        let got: Vec<Option<BTreeSet<u64>>> = nodes.iter().map(|n| voters(n)).collect();
        if got.iter().all(|v| v.as_ref() == Some(&want)) {
            return;
        }
        if Instant::now() > deadline {
            for n in nodes {
                eprintln!("--- {} log:\n{}", n.admin, n.log_text());
            }
            panic!("voters never became {want:?}: {got:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn leader_id(nodes: &[&Kmsd]) -> Option<u64> {
    nodes.iter().find_map(|n| {
        n.try_status()
            .filter(|s| s["raft"]["role"] == "leader")
            .and_then(|s| s["raft"]["node_id"].as_u64())
    })
}

/// Starts a fake API server listing one endpoint per address (StatefulSet pods
/// `STS-0`, `STS-1`, ...) with `replicas`, and a kmsd per address in Kubernetes
/// discovery mode; waits until each is ready. Also returns the nodes' cluster addresses.
fn start_discovered(
    ips: &[&str],
    replicas: i32,
) -> (FakeKube, tempfile::TempDir, Vec<Kmsd>, Vec<String>) {
    let kube = FakeKube::start(NS, SVC, STS);
    let dir = tempfile::tempdir().unwrap();
    let cluster: Vec<String> = ips
        .iter()
        .map(|ip| format!("{ip}:{}", free_port_on(ip)))
        .collect();
    for (i, ip) in ips.iter().enumerate() {
        let port = cluster[i].rsplit_once(':').unwrap().1.parse().unwrap();
        kube.set_endpoint(&format!("{STS}-{i}"), ip, port);
    }
    kube.set_replicas(Some(replicas));
    let url = kube.url();
    let mut nodes: Vec<Kmsd> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let id = (i + 1).to_string();
            Kmsd::launch_on(
                ip,
                &dir.path().join(format!("node{id}")),
                &[
                    "--node-id",
                    &id,
                    "--cluster-listen",
                    &cluster[i],
                    "--discovery",
                    "kubernetes",
                    "--kubernetes-api-url",
                    &url,
                    "--kubernetes-namespace",
                    NS,
                    "--kubernetes-service",
                    SVC,
                    "--discovery-interval-ms",
                    "300",
                    "--heartbeat-ms",
                    "50",
                    "--election-timeout-ms",
                    "300",
                ],
            )
        })
        .collect();
    for n in &mut nodes {
        n.wait_ready();
    }
    (kube, dir, nodes, cluster)
}

#[test]
fn statefulset_members_join_and_scale_down_removes_one() {
    let ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let (kube, _dir, mut nodes, cluster) = start_discovered(&ips, 3);
    {
        let all: Vec<&Kmsd> = nodes.iter().collect();
        wait_voters(&all, &[1, 2, 3], Duration::from_secs(30));
    }
    // Node 1 initialized alone and leads; its address is the one from the slices.
    let s1 = nodes[0].status();
    assert_eq!(s1["raft"]["voters"]["3"], cluster[2].as_str(), "{s1}");
    assert_eq!(s1["raft"]["voters"]["1"], cluster[0].as_str(), "{s1}");
    // The kube client asked only for the two reads, without credentials.
    let seen = kube.requests();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|r| !r.authorization), "{seen:?}");
    assert!(
        seen.iter().all(|r| r
            .path_and_query
            .starts_with("/apis/discovery.k8s.io/v1/namespaces/kms/endpointslices?")
            || r.path_and_query == "/apis/apps/v1/namespaces/kms/statefulsets/kms"),
        "{seen:?}"
    );

    // One count across the members: distinct clients through node 1, one through node 3.
    for expected in 1..=2u64 {
        let (v, code) = nodes[0].activate(&["--product", "Windows 10 Enterprise"]);
        assert!(code == 0 || code == 3, "{v}");
        assert_eq!(v["current_count"].as_u64().unwrap(), expected, "{v}");
    }
    let (v3, code) = nodes[2].activate(&["--product", "Windows 10 Enterprise"]);
    assert!(code == 0 || code == 3, "{v3}");
    assert_eq!(v3["current_count"].as_u64().unwrap(), 3, "{v3}");
    let cmid = v3["cmid"].as_str().unwrap().to_string();
    let (again, _) = nodes[0].activate(&["--cmid", &cmid]);
    assert_eq!(again["current_count"], v3["current_count"], "{again}");

    // A pod missing from the slices (crash, restart) while replicas is still 3 stays.
    kube.remove_endpoint(&format!("{STS}-1"));
    std::thread::sleep(Duration::from_millis(1500));
    {
        let all: Vec<&Kmsd> = nodes.iter().collect();
        wait_voters(&all, &[1, 2, 3], Duration::from_secs(5));
    }
    kube.set_endpoint(
        &format!("{STS}-1"),
        ips[1],
        cluster[1].rsplit_once(':').unwrap().1.parse().unwrap(),
    );

    // Scale down to 2: the StatefulSet first, then the pod kms-2 goes away. Kubernetes
    // deletes that pod; when it leads, that is what lets another leader remove it.
    kube.set_replicas(Some(2));
    kube.remove_endpoint(&format!("{STS}-2"));
    if leader_id(&nodes.iter().collect::<Vec<_>>()) == Some(3) {
        nodes[2].stop();
    }
    {
        let survivors: Vec<&Kmsd> = nodes[..2].iter().collect();
        wait_voters(&survivors, &[1, 2], Duration::from_secs(30));
        assert!(learners(&nodes[0]).is_empty());
    }
    nodes[2].stop();
    // Two voters still commit.
    let (v, code) = nodes[1].activate(&["--product", "Windows 10 Enterprise"]);
    assert!(code == 0 || code == 3, "{v}");
    assert_eq!(v["current_count"].as_u64().unwrap(), 4, "{v}");
    let log = nodes[0].log_text() + &nodes[1].log_text();
    assert!(
        log.contains("removing voter above the StatefulSet's replicas"),
        "{log}"
    );
}

#[test]
fn scale_down_without_a_readable_statefulset_changes_nothing() {
    // Planning is unit-tested in kmsd; here the real process keeps its voters when the
    // StatefulSet read fails (404), even with endpoints gone.
    let ips = ["127.0.0.1", "127.0.0.2"];
    let (kube, _dir, nodes, _cluster) = start_discovered(&ips, 2);
    let all: Vec<&Kmsd> = nodes.iter().collect();
    wait_voters(&all, &[1, 2], Duration::from_secs(30));
    kube.set_replicas(None);
    kube.remove_endpoint(&format!("{STS}-1"));
    std::thread::sleep(Duration::from_millis(1500));
    wait_voters(&all, &[1, 2], Duration::from_secs(5));
    assert!(nodes[0]
        .log_text()
        .contains("cannot read the StatefulSet; no membership change this round"));
}

/// Discovery goes through the guarded membership path: a learner that had caught up but no
/// longer answers (stopped with SIGSTOP, as a hung pod) is not promoted, the single voter
/// keeps committing with a stable membership, and the learner is promoted once it answers.
#[test]
fn discovery_does_not_promote_a_learner_that_does_not_answer() {
    let (kube, dir, nodes, cluster) = start_discovered(&["127.0.0.1"], 1);
    wait_voters(&[&nodes[0]], &[1], Duration::from_secs(30));
    // Discovery holds still while the StatefulSet cannot be read.
    kube.set_replicas(None);
    let addr2 = format!("127.0.0.2:{}", free_port_on("127.0.0.2"));
    let peers = format!("1={},2={addr2}", cluster[0]);
    let mut n2 = Kmsd::launch_on(
        "127.0.0.2",
        &dir.path().join("node2"),
        &[
            "--node-id",
            "2",
            "--cluster-listen",
            &addr2,
            "--peers",
            &peers,
            "--heartbeat-ms",
            "50",
            "--election-timeout-ms",
            "300",
        ],
    );
    let out = kms_tests::harness::kmsctl_ok(&[
        "cluster",
        "add-learner",
        "--cluster",
        &cluster[0],
        "--id",
        "2",
        "--addr",
        &addr2,
    ]);
    assert!(out.status.success());
    n2.wait_ready();
    let (v, code) = nodes[0].activate(&["--product", "Windows 10 Enterprise"]);
    assert!(code == 0 || code == 3, "{v}");
    // Caught up: the leader has replicated its whole log to node 2.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let raft = nodes[0].status()["raft"].clone();
        if raft["replication"]["2"].as_u64().is_some()
            && raft["replication"]["2"] == raft["last_log_index"]
        {
            break;
        }
        assert!(Instant::now() < deadline, "learner never caught up: {raft}");
        std::thread::sleep(Duration::from_millis(100));
    }
    n2.signal("STOP");
    let port2: u16 = addr2.rsplit_once(':').unwrap().1.parse().unwrap();
    kube.set_endpoint(&format!("{STS}-1"), "127.0.0.2", port2);
    kube.set_replicas(Some(2));

    let deadline = Instant::now() + Duration::from_secs(40);
    while !nodes[0].log_text().contains("does not answer") {
        assert!(
            Instant::now() < deadline,
            "discovery never tried (and was refused) to promote node 2:\n{}",
            nodes[0].log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let raft = nodes[0].status()["raft"].clone();
    assert_eq!(raft["membership_state"], "stable", "{raft}");
    assert_eq!(voters(&nodes[0]), Some(BTreeSet::from([1])), "{raft}");
    let before = raft["applied_index"].as_u64().unwrap();
    let (v, code) = nodes[0].activate(&["--product", "Windows 10 Enterprise"]);
    assert!(code == 0 || code == 3, "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes[0].status()["raft"]["applied_index"].as_u64().unwrap() <= before {
        assert!(
            Instant::now() < deadline,
            "the single voter stopped committing"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Answering again: discovery promotes it.
    n2.signal("CONT");
    wait_voters(&[&nodes[0]], &[1, 2], Duration::from_secs(40));
    // The joint configuration ({1} -> {1,2}) already lists both voters; the uniform one is
    // committed right after it (it failed here when read in between, on a slower run).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let raft = nodes[0].status()["raft"].clone();
        if raft["membership_state"] == "stable" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "membership not stable 10 s after both became voters: {raft}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// kube's client is pointed at `kubernetes_api_url` and works over plain HTTP without
/// credentials; the StatefulSet's absence is an error, not a panic.
#[tokio::test]
async fn kube_client_uses_the_api_url_without_credentials() {
    let kube = FakeKube::start(NS, SVC, STS);
    kube.set_endpoint("kms-0", "10.1.2.3", 9689);
    kube.set_endpoint("kms-1", "fd00::7", 9689);
    kube.set_endpoint("not-ours-0", "10.1.2.9", 9689);
    let cfg = kmsd::config::Config {
        discovery: "kubernetes".into(),
        kubernetes_service: Some(SVC.into()),
        kubernetes_namespace: Some(NS.into()),
        kubernetes_api_url: Some(kube.url()),
        ..kmsd::config::Config::default()
    };
    cfg.validate().unwrap();
    let settings = KubeSettings::from_config(&cfg).unwrap();
    assert_eq!(settings.statefulset, STS);
    let source = KubeSource::connect(&settings).await.unwrap();
    assert_eq!(source.namespace, NS);
    let found = source.endpoints().await.unwrap();
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        vec![
            (1, "10.1.2.3:9689".to_string()),
            (2, "[fd00::7]:9689".to_string())
        ]
    );
    assert!(source.replicas().await.is_err());
    kube.set_replicas(Some(5));
    assert_eq!(source.replicas().await.unwrap(), 5);
    let seen = kube.requests();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.iter().all(|r| !r.authorization));
    assert!(
        seen[0]
            .path_and_query
            .starts_with("/apis/discovery.k8s.io/v1/namespaces/kms/endpointslices?")
            && seen[0]
                .path_and_query
                .contains("labelSelector=kubernetes.io%2Fservice-name%3Dkms-headless"),
        "{seen:?}"
    );
    assert_eq!(
        seen[1].path_and_query,
        "/apis/apps/v1/namespaces/kms/statefulsets/kms"
    );
}
