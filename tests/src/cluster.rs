//! A local cluster of real `kmsd` processes, one per loopback address (127.0.0.1,
//! 127.0.0.2, ...), formed from a static peer list exactly as an operator starts one.

use crate::harness::{free_port_on, Kmsd};
use std::time::{Duration, Instant};

/// N kmsd processes forming one Raft cluster.
pub struct LocalCluster {
    /// The members; index i is node id i+1 on 127.0.0.{i+1}.
    pub nodes: Vec<Kmsd>,
    /// The `--peers` value.
    pub peers: String,
    /// Holds the data directories.
    pub dir: tempfile::TempDir,
}

/// Fast Raft timings for test nodes, unless `extra` sets its own.
fn fast_timings(extra: &[&str]) -> &'static [&'static str] {
    if extra.contains(&"--election-timeout-ms") {
        &[]
    } else {
        &["--heartbeat-ms", "50", "--election-timeout-ms", "300"]
    }
}

impl LocalCluster {
    /// Starts `n` nodes with extra flags and waits until each is ready.
    pub fn start(n: usize, extra: &[&str]) -> LocalCluster {
        Self::start_with(n, extra, |_| Vec::new())
    }

    /// Like [`LocalCluster::start`] with flags of its own for each node (`per_node(i)` for
    /// node id i+1 on 127.0.0.{i+1}), e.g. its TLS certificate.
    pub fn start_with(
        n: usize,
        extra: &[&str],
        per_node: impl Fn(usize) -> Vec<String>,
    ) -> LocalCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ips: Vec<String> = (1..=n).map(|i| format!("127.0.0.{i}")).collect();
        let addrs: Vec<String> = ips
            .iter()
            .map(|ip| format!("{ip}:{}", free_port_on(ip)))
            .collect();
        let peers = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            let id = (i + 1).to_string();
            let mut args: Vec<&str> = vec![
                "--node-id",
                &id,
                "--cluster-listen",
                &addrs[i],
                "--peers",
                &peers,
            ];
            args.extend_from_slice(fast_timings(extra));
            args.extend_from_slice(extra);
            let own = per_node(i);
            args.extend(own.iter().map(String::as_str));
            nodes.push(Kmsd::launch_on(
                ip,
                &dir.path().join(format!("node{id}")),
                &args,
            ));
        }
        for n in &mut nodes {
            n.wait_ready();
        }
        LocalCluster { nodes, peers, dir }
    }

    /// The cluster (gRPC) address of node index `i`, from the peer list.
    pub fn cluster_addr(&self, i: usize) -> String {
        self.peers
            .split(',')
            .nth(i)
            .and_then(|p| p.split_once('='))
            .map(|(_, a)| a.to_string())
            .expect("node in the peer list")
    }

    /// Launches node `id` on 127.0.0.{id} with the cluster's peers plus itself (so it
    /// waits to be added rather than bootstrapping), the same fast timings unless `extra`
    /// sets its own, and `extra`; does not wait for readiness. Returns the node and its
    /// cluster address.
    pub fn launch_joiner(&self, id: u64, extra: &[&str]) -> (Kmsd, String) {
        let ip = format!("127.0.0.{id}");
        let addr = format!("{ip}:{}", free_port_on(&ip));
        let node_id = id.to_string();
        let peers = format!("{},{id}={addr}", self.peers);
        let mut args: Vec<&str> = vec![
            "--node-id",
            &node_id,
            "--cluster-listen",
            &addr,
            "--peers",
            &peers,
        ];
        args.extend_from_slice(fast_timings(extra));
        args.extend_from_slice(extra);
        let node = Kmsd::launch_on(&ip, &self.dir.path().join(format!("node{id}")), &args);
        (node, addr)
    }

    /// Index of the node that reports itself leader, if any answers so.
    pub fn leader(&self) -> Option<usize> {
        self.nodes.iter().position(|n| {
            n.try_status()
                .is_some_and(|s| s["raft"]["role"] == "leader")
        })
    }

    /// Waits until a leader is known; returns its index.
    pub fn wait_leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.leader() {
                return i;
            }
            assert!(Instant::now() < deadline, "no leader within {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Moves every node's test clock: writes `clock_offset_secs = secs` into `config` (the
    /// file every node was started with `--config`), sends SIGHUP to each node, and waits
    /// until each reports the offset in `/status`.
    pub fn set_clock_offset(&self, config: &std::path::Path, secs: i64) {
        std::fs::write(config, format!("clock_offset_secs = {secs}\n")).expect("config");
        for n in &self.nodes {
            n.signal("HUP");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for n in &self.nodes {
            while n.status()["clock_offset_secs"] != secs {
                assert!(Instant::now() < deadline, "{}: offset not applied", n.admin);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Waits until every running node reports the same applied index, the same request
    /// statistics and the same groups; returns their statuses.
    pub fn wait_converged(&mut self, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses: Vec<serde_json::Value> = self
                .nodes
                .iter_mut()
                .filter_map(|n| if n.is_running() { n.try_status() } else { None })
                .collect();
            let key = |s: &serde_json::Value| {
                (
                    s["raft"]["applied_index"].clone(),
                    s["total_requests"].clone(),
                    s["failed_requests"].clone(),
                    s["requests_by_license_state"].clone(),
                    s["groups"].clone(),
                )
            };
            if !statuses.is_empty() && statuses.iter().all(|s| key(s) == key(&statuses[0])) {
                return statuses;
            }
            assert!(
                Instant::now() < deadline,
                "nodes did not converge: {:?}",
                statuses
                    .iter()
                    .map(|s| format!(
                        "node {} {} term {} applied {} snapshot {} total {} windows {}",
                        s["raft"]["node_id"],
                        s["raft"]["role"],
                        s["raft"]["term"],
                        s["raft"]["applied_index"],
                        s["raft"]["snapshot_index"],
                        s["total_requests"],
                        s["groups"][0]["active_clients"]
                    ))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
