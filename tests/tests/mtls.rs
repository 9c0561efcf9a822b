//! Inter-node mutual TLS with real `kmsd` processes on 127.0.0.x and certificates made by
//! the real `kmsctl cert`: a TLS cluster forms and forwards, operators need a client
//! certificate of the cluster CA, a node with a certificate of another CA gets nowhere (in
//! either direction), and plaintext or certificate-less clients are refused.

use kms_tests::cluster::LocalCluster;
use kms_tests::harness::{free_port_on, kmsctl, kmsctl_ok, Kmsd};
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// The cluster CA with node certificates node1..node3 (SAN 127.0.0.i) and an operator
    /// certificate; another CA ("rogue") with a node certificate for 127.0.0.4.
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |s: &str| dir.path().join(s).display().to_string();
        kmsctl_ok(&["cert", "ca", "--out", &p("ca"), "--days", "2"]);
        for i in 1..=3 {
            let name = format!("node{i}");
            let ip = format!("127.0.0.{i}");
            kmsctl_ok(&[
                "cert",
                "node",
                "--ca-dir",
                &p("ca"),
                "--name",
                &name,
                "--san",
                &ip,
                "--san",
                "localhost",
                "--out",
                &p("certs"),
            ]);
        }
        kmsctl_ok(&[
            "cert",
            "client",
            "--ca-dir",
            &p("ca"),
            "--name",
            "operator",
            "--out",
            &p("certs"),
        ]);
        kmsctl_ok(&["cert", "ca", "--out", &p("rogue-ca"), "--name", "rogue CA"]);
        kmsctl_ok(&[
            "cert",
            "node",
            "--ca-dir",
            &p("rogue-ca"),
            "--name",
            "node4",
            "--san",
            "127.0.0.4",
            "--out",
            &p("rogue"),
        ]);
        // The rogue node trusts both CAs, so the only thing stopping it talking to the
        // cluster is the cluster checking *its* certificate (and vice versa).
        let both = format!(
            "{}{}",
            std::fs::read_to_string(dir.path().join("ca/ca.crt")).unwrap(),
            std::fs::read_to_string(dir.path().join("rogue-ca/ca.crt")).unwrap()
        );
        std::fs::write(dir.path().join("rogue/both-cas.crt"), both).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in ["ca/ca.key", "certs/node1.key", "certs/operator.key"] {
                let mode = std::fs::metadata(dir.path().join(key))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{key}");
            }
        }
        Pki { dir }
    }

    fn path(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }

    /// kmsd flags for cluster node `i` (1-based).
    fn node_flags(&self, i: usize) -> Vec<String> {
        vec![
            "--tls-ca".into(),
            self.path("ca/ca.crt"),
            "--tls-cert".into(),
            self.path(&format!("certs/node{i}.crt")),
            "--tls-key".into(),
            self.path(&format!("certs/node{i}.key")),
        ]
    }

    /// kmsd flags of the rogue node (certificate of the other CA, trusts both CAs).
    fn rogue_flags(&self) -> Vec<String> {
        vec![
            "--tls-ca".into(),
            self.path("rogue/both-cas.crt"),
            "--tls-cert".into(),
            self.path("rogue/node4.crt"),
            "--tls-key".into(),
            self.path("rogue/node4.key"),
        ]
    }

    /// kmsctl flags with the operator certificate.
    fn operator_flags(&self) -> Vec<String> {
        vec![
            "--tls-ca".into(),
            self.path("ca/ca.crt"),
            "--tls-cert".into(),
            self.path("certs/operator.crt"),
            "--tls-key".into(),
            self.path("certs/operator.key"),
        ]
    }
}

fn start_tls_cluster(pki: &Pki) -> LocalCluster {
    // fail-closed: a follower that cannot forward over TLS must not answer from its own
    // state, so an answered activation proves the forward worked.
    LocalCluster::start_with(3, &["--quorum-loss", "fail-closed"], |i| {
        pki.node_flags(i + 1)
    })
}

fn cluster_status(addr: &str, tls: &[String]) -> Output {
    let mut args = vec!["cluster", "status", "--cluster", addr, "--json"];
    args.extend(tls.iter().map(String::as_str));
    kmsctl(&args)
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn tls_cluster_forms_forwards_and_serves_operators_with_a_client_certificate() {
    let pki = Pki::new();
    let mut c = start_tls_cluster(&pki);
    let leader = c.wait_leader(Duration::from_secs(10));
    let follower = (leader + 1) % 3;
    // Activations through a follower are forwarded to the leader (over TLS).
    let mut last = 0;
    for _ in 0..3 {
        let (v, code) = c.nodes[follower].activate(&["--product", "Windows 10 Enterprise"]);
        assert!(code == 0 || code == 3, "activation failed: {v}");
        last = v["current_count"].as_u64().unwrap();
    }
    assert_eq!(last, 3, "count is the cluster's");
    let (v, _) = c.nodes[leader].activate(&["--product", "Windows 10 Enterprise"]);
    assert_eq!(v["current_count"], 4);
    let statuses = c.wait_converged(Duration::from_secs(10));
    for s in &statuses {
        assert_eq!(s["total_requests"], 4, "{s}");
        assert_eq!(s["raft"]["voters"].as_object().unwrap().len(), 3, "{s}");
    }

    // Operators: with the client certificate, every member answers.
    let addr = c.cluster_addr(follower);
    let out = cluster_status(&addr, &pki.operator_flags());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    for r in rows {
        assert!(r["error"].is_null(), "{r}");
        assert_eq!(r["membership"], "voter", "{r}");
        assert_eq!(r["leader"].as_u64(), Some(leader as u64 + 1), "{r}");
    }
    // Env variables work like the flags.
    let out = std::process::Command::new(kms_tests::harness::kmsctl_bin())
        .args(["cluster", "status", "--cluster", &addr])
        .env("KMSCTL_TLS_CA", pki.path("ca/ca.crt"))
        .env("KMSCTL_TLS_CERT", pki.path("certs/operator.crt"))
        .env("KMSCTL_TLS_KEY", pki.path("certs/operator.key"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without a client certificate: plaintext kmsctl fails.
    let out = cluster_status(&addr, &[]);
    assert!(!out.status.success(), "plaintext status must fail");
    // A client certificate of another CA fails too.
    let rogue_client = vec![
        "--tls-ca".to_string(),
        pki.path("ca/ca.crt"),
        "--tls-cert".into(),
        pki.path("rogue/node4.crt"),
        "--tls-key".into(),
        pki.path("rogue/node4.key"),
    ];
    let out = cluster_status(&addr, &rogue_client);
    assert!(
        !out.status.success(),
        "foreign client certificate must fail"
    );
    // Membership commands need it as well.
    let out = kmsctl(&["cluster", "promote", "--cluster", &addr, "--id", "9"]);
    assert!(!out.status.success());
    // Only some of the TLS flags: a usage error, not a silent plaintext attempt.
    let out = kmsctl(&[
        "cluster",
        "status",
        "--cluster",
        &addr,
        "--tls-ca",
        &pki.path("ca/ca.crt"),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tls-cert"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The refused handshakes are logged by the node that refused them.
    wait_for(
        "handshake failures in the log",
        Duration::from_secs(5),
        || {
            c.nodes[follower]
                .log_text()
                .contains("cluster TLS handshake failed")
        },
    );

    // A graceful stop of the leader hands leadership over across TLS (TakeLeadership).
    c.nodes[leader].stop();
    let log = c.nodes[leader].log_text();
    assert!(
        log.contains("event=\"cluster.leadership_handover\""),
        "no hand-over over TLS:\n{log}"
    );
}

/// A TLS client that trusts the cluster CA but presents no certificate completes its half of
/// the handshake (TLS 1.3) and is then refused by the server.
#[test]
fn tls_client_without_certificate_and_plaintext_client_are_refused() {
    let pki = Pki::new();
    let c = LocalCluster::start_with(1, &[], |i| pki.node_flags(i + 1));
    let addr = c.cluster_addr(0);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ca_pem = std::fs::read(pki.dir.path().join("ca/ca.crt")).unwrap();
    let outcome = rt.block_on(async {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca_pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = match connector.connect(name, tcp).await {
            Ok(tls) => tls,
            Err(e) => return Err(e.to_string()),
        };
        // HTTP/2 preface; the server's answer must be an alert, not a SETTINGS frame.
        let write = tls
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await;
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await;
        match (write, read) {
            (Err(e), _) => Err(e.to_string()),
            (_, Ok(Err(e))) => Err(e.to_string()),
            (_, Ok(Ok(0))) => Err("closed".to_string()),
            (_, Ok(Ok(n))) => Ok(n),
            (_, Err(_)) => Ok(0),
        }
    });
    let err = outcome.expect_err("a client without certificate must be refused");
    assert!(
        err.to_lowercase().contains("certificate") || err == "closed",
        "unexpected failure: {err}"
    );

    // The same client with the operator certificate gets HTTP/2 SETTINGS back: the refusal
    // above was about the missing certificate, not a broken server.
    let out = cluster_status(&addr, &pki.operator_flags());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A plaintext gRPC client gets nothing either.
    let out = cluster_status(&addr, &[]);
    assert!(!out.status.success());
    let plain = rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
        buf
    });
    // An HTTP/2 server would answer with a SETTINGS frame (type 4 at byte 3); a TLS server
    // answers a non-TLS record with at most an alert record (content type 21) and closes.
    assert!(
        plain.len() < 9 || plain[3] != 4,
        "plaintext HTTP/2 got an HTTP/2 answer: {plain:?}"
    );
    assert!(
        plain.is_empty() || plain[0] == 21,
        "expected nothing or a TLS alert, got {plain:?}"
    );
}

fn raft_view(k: &Kmsd) -> (u64, serde_json::Value, serde_json::Value) {
    let s = k.status();
    (
        s["raft"]["term"].as_u64().unwrap(),
        s["raft"]["voters"].clone(),
        s["raft"]["leader"].clone(),
    )
}

#[test]
fn node_with_a_certificate_of_another_ca_cannot_join_or_disturb() {
    let pki = Pki::new();
    let mut c = start_tls_cluster(&pki);
    let leader = c.wait_leader(Duration::from_secs(10));
    c.wait_converged(Duration::from_secs(10));
    let before: Vec<_> = c.nodes.iter().map(raft_view).collect();
    for n in &c.nodes {
        assert!(!n.log_text().contains("cluster TLS handshake failed"));
    }
    assert!(before.iter().all(|v| v == &before[0]), "{before:?}");

    // 1. A rogue node that believes it is the lowest id of the cluster's peer list, with a
    //    certificate the cluster does not accept. It starts with an empty store, so before
    //    it may initialize or campaign it must hear from its peers (kms-cluster's identity
    //    check): its `Identity` calls fail in the TLS handshake, so it never takes part.
    let rogue_addr = format!("127.0.0.4:{}", free_port_on("127.0.0.4"));
    let rogue_peers = format!("0={rogue_addr},{}", c.peers);
    let rogue_dir = c.dir.path().join("rogue0");
    let mut args = vec![
        "--node-id".to_string(),
        "0".into(),
        "--cluster-listen".into(),
        rogue_addr.clone(),
        "--peers".into(),
        rogue_peers,
        "--heartbeat-ms".into(),
        "50".into(),
        "--election-timeout-ms".into(),
        "300".into(),
    ];
    args.extend(pki.rogue_flags());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut rogue = Kmsd::launch_on("127.0.0.4", &rogue_dir, &argv);
    // Its calls are refused in the TLS handshake by every real node (the source address of
    // loopback connections is 127.0.0.1, so the log names no rogue address; no handshake
    // failed before the rogue started)...
    wait_for(
        "the cluster nodes to log refused handshakes",
        Duration::from_secs(15),
        || {
            c.nodes
                .iter()
                .all(|n| n.log_text().contains("cluster TLS handshake failed"))
        },
    );
    // ... and it stays out: no peer answered, so it neither initialized nor campaigned.
    wait_for(
        "the rogue node to say why it waits",
        Duration::from_secs(10),
        || {
            rogue
                .log_text()
                .contains("empty store: not taking part in Raft yet")
        },
    );
    let s = rogue.status();
    assert_eq!(s["raft"]["quarantined"], true, "{s}");
    assert_eq!(s["raft"]["term"], 0, "{s}");
    assert!(
        !rogue.log_text().contains("cluster initialized"),
        "{}",
        rogue.log_text()
    );
    let rogue_status = rogue.status();
    assert_ne!(rogue_status["raft"]["role"], "leader", "{rogue_status}");
    // The cluster did not notice: same term, voters and leader everywhere.
    let after: Vec<_> = c.nodes.iter().map(raft_view).collect();
    assert_eq!(after, before, "the cluster's Raft view changed");
    rogue.stop();

    // 2. The operator adds the rogue node as a learner: the leader's replication to it fails
    //    in the TLS handshake (its server certificate is not from the cluster CA), so it
    //    never catches up and the (blocking) add-learner does not succeed.
    // Not the lowest id: waits to be added instead of bootstrapping.
    let rogue_flags = pki.rogue_flags();
    let argv: Vec<&str> = rogue_flags.iter().map(String::as_str).collect();
    let (learner, learner_addr) = c.launch_joiner(4, &argv);
    let leader_addr = c.cluster_addr(leader);
    let op = pki.operator_flags();
    let mut add = vec![
        "cluster".to_string(),
        "add-learner".into(),
        "--cluster".into(),
        leader_addr.clone(),
        "--id".into(),
        "4".into(),
        "--addr".into(),
        learner_addr.clone(),
    ];
    add.extend(op.iter().cloned());
    let argv: Vec<&str> = add.iter().map(String::as_str).collect();
    // openraft's add-learner adds it to the membership and waits only briefly for it to
    // catch up; kmsctl then warns that it did not.
    let out = kmsctl(&argv);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("has not received the log"),
        "add-learner did not warn: {stderr}"
    );
    wait_for(
        "the leader to log TLS errors replicating to node 4",
        Duration::from_secs(15),
        || {
            c.nodes[leader]
                .log_text()
                .lines()
                .any(|l| l.contains("invalid peer certificate") || l.contains("UnknownIssuer"))
        },
    );
    // The leader knows node 4 as a learner it cannot replicate to.
    let ls = c.nodes[leader].status();
    assert!(ls["raft"]["learners"].get("4").is_some(), "{ls}");
    assert!(ls["raft"]["replication"]["4"].is_null(), "{ls}");
    // The learner got nothing: no leader known, nothing applied.
    let s = learner.status();
    assert!(s["raft"]["leader"].is_null(), "{s}");
    assert!(
        s["raft"]["applied_index"].as_u64().unwrap_or(0) == 0,
        "the foreign node received the log: {s}"
    );
    // The voters are still the three, with the same leader.
    for n in &c.nodes {
        let (_, voters, leader_id) = raft_view(n);
        assert_eq!(voters, before[0].1);
        assert_eq!(leader_id, before[0].2);
    }
}
