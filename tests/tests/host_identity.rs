//! One host identity (issue 13): on a 3-node cluster the ePIDs of every count group (Windows,
//! Office 2010, Office 2013+) share one hardware id and one OS build on every node, each made
//! from its own group's host key; the same after a node restarts; and
//! `kmsctl host-identity regenerate` replaces them all at once, still uniform.

use kms_protocol::epid::Epid;
use kms_protocol::products::Catalog;
use kms_tests::cluster::LocalCluster;
use kms_tests::harness::kmsctl_ok;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// One product per count group, with the catalog groups whose CSVLK its ePID may come from.
const PRODUCTS: [(&str, &str); 3] = [
    ("windows", "Windows 10 Enterprise"),
    ("office2010", "office-2010"),
    ("office", "office-2016"),
];

/// What every node answered, per count group: (hwid, ePID).
type Answers = Vec<(&'static str, String, Epid)>;

/// Activates one client per count group against every node (V6, which carries the hwid).
fn answers(c: &LocalCluster) -> Answers {
    let mut out = Vec::new();
    for node in &c.nodes {
        for (group, product) in PRODUCTS {
            let (v, code) = node.activate(&["--product", product, "--protocol", "6"]);
            assert!(
                code == 0 || code == 3,
                "activation of {product} failed: {v}"
            );
            let hwid = v["hwid"]
                .as_str()
                .expect("V6 answer has a hwid")
                .to_string();
            let epid = Epid::parse(v["epid"].as_str().expect("epid")).expect("ePID parses");
            out.push((group, hwid, epid));
        }
    }
    out
}

/// Asserts one hwid, one build and platform across all answers, one ePID per group (the
/// same on every node), different between groups, each valid for a CSVLK of its count
/// group. Returns (hwid, build, the ePIDs by group).
fn assert_uniform(answers: &Answers) -> (String, u32, BTreeSet<(String, String)>) {
    let catalog = Catalog::builtin();
    let hwids: BTreeSet<&str> = answers.iter().map(|(_, h, _)| h.as_str()).collect();
    assert_eq!(hwids.len(), 1, "one hardware id: {answers:?}");
    let builds: BTreeSet<(u32, u32)> = answers
        .iter()
        .map(|(_, _, e)| (e.build, e.platform_id))
        .collect();
    assert_eq!(builds.len(), 1, "one build and platform: {answers:?}");
    let per_group: BTreeSet<(String, String)> = answers
        .iter()
        .map(|(g, _, e)| (g.to_string(), e.to_string()))
        .collect();
    assert_eq!(
        per_group.len(),
        PRODUCTS.len(),
        "one ePID per group on every node"
    );
    let epids: BTreeSet<&str> = per_group.iter().map(|(_, e)| e.as_str()).collect();
    assert_eq!(epids.len(), PRODUCTS.len(), "groups have different ePIDs");
    for (group, _, epid) in answers {
        let valid = catalog
            .groups()
            .filter(|g| g.count_group == *group)
            .filter_map(|g| g.csvlk)
            .any(|k| epid.validate_for(&k).is_ok());
        assert!(valid, "{epid} of {group} fits no CSVLK of its count group");
    }
    let hwid = hwids.into_iter().next().unwrap().to_string();
    (hwid, builds.into_iter().next().unwrap().0, per_group)
}

fn show(admin: &str) -> serde_json::Value {
    let out = kmsctl_ok(&["host-identity", "show", "--admin", admin, "--json"]);
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn every_group_and_node_shows_one_host() {
    let mut c = LocalCluster::start(3, &["--host-os", "2022"]);
    c.wait_leader(Duration::from_secs(10));

    let (hwid, build, epids) = assert_uniform(&answers(&c));
    assert_eq!(build, 20348, "host_os 2022");
    let shown = show(&c.nodes[1].admin);
    assert_eq!(shown["identity"]["hwid"], hwid.as_str());
    assert_eq!(shown["identity"]["host_os"], "2022");
    assert_eq!(shown["uniform"], true);

    // A restarted node answers with the same identity and ePIDs.
    c.nodes[2].restart();
    c.nodes[2].wait_ready();
    c.wait_leader(Duration::from_secs(10));
    let (hwid2, build2, epids2) = assert_uniform(&answers(&c));
    assert_eq!((&hwid2, build2, &epids2), (&hwid, build, &epids));

    // Regenerate through one node: a new identity, still uniform, on every node.
    let out = kmsctl_ok(&[
        "host-identity",
        "regenerate",
        "--yes",
        "--json",
        "--admin",
        &c.nodes[0].admin,
    ]);
    let regenerated: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let new_hwid = regenerated["identity"]["hwid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_hwid, hwid);
    assert_eq!(regenerated["uniform"], true);
    // Followers apply it shortly after the leader.
    let deadline = Instant::now() + Duration::from_secs(10);
    while c
        .nodes
        .iter()
        .any(|n| show(&n.admin)["identity"]["hwid"] != new_hwid.as_str())
    {
        assert!(
            Instant::now() < deadline,
            "regenerate did not reach every node"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (hwid3, build3, epids3) = assert_uniform(&answers(&c));
    assert_eq!(hwid3, new_hwid);
    assert_eq!(build3, 20348);
    assert!(epids3.is_disjoint(&epids), "every ePID is new");
    c.nodes[0].stop();
    let audit_seen = c
        .nodes
        .iter()
        .any(|n| n.log_text().contains("host_identity.regenerate"));
    assert!(audit_seen, "the regenerate is audited");
}
