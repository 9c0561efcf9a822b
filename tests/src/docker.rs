//! Container harness: a kms-cluster of real `kmsd` containers (image built by
//! `tests/docker/build-image.sh`, `FROM scratch`, nothing pulled) on two private Docker
//! networks of its own:
//!
//! - `clients`: the network the KMS (1688) and admin (9688) ports are published from, to
//!   127.0.0.1 only (`-p 127.0.0.1::1688`); containers cannot talk to each other on it
//!   (inter-container communication disabled);
//! - `raft`: an internal network on which the peers address each other by network alias
//!   (`raft1:9689`, `raft2:9689`, ...).
//!
//! [`DockerCluster::partition`] disconnects a container from the raft network only, so its
//! Raft/forwarding traffic is cut while its published client and admin ports keep
//! answering; [`DockerCluster::heal`] connects it again under the same alias. Each node
//! keeps its data directory in its own Docker volume, so [`DockerCluster::kill`] (SIGKILL)
//! and [`DockerCluster::start`] restart it from disk. [`DockerCluster::up_on_small_disks`]
//! puts those volumes on small tmpfs disks that [`DockerCluster::fill_disk`] can fill. Every
//! container, network and volume has
//! a unique name (random suffix) and is removed on drop, also when the test panics;
//! leftovers of test processes that died without dropping are swept on first use.
//!
//! The host only ever talks to 127.0.0.1 (published ports); the containers' DNS forwards
//! nothing outside (`--dns 127.0.0.1`), so an unresolvable peer name fails locally.

use crate::harness::{http_get, kmsctl_bin};
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The image the script builds.
pub const IMAGE: &str = "kms-cluster-test:latest";
/// KMS port inside a container.
pub const KMS_PORT: u16 = 1688;
/// Admin port inside a container.
pub const ADMIN_PORT: u16 = 9688;
/// Raft/gRPC port inside a container (on the raft network only).
pub const RAFT_PORT: u16 = 9689;
/// Raft heartbeat, ms.
pub const HEARTBEAT_MS: u64 = 50;
/// Raft election timeout (lower bound; upper is twice it), ms.
pub const ELECTION_TIMEOUT_MS: u64 = 300;
/// How long a request waits for a quorum before the quorum-loss mode applies, ms.
pub const COMMIT_TIMEOUT_MS: u64 = 1500;

const LABEL: &str = "org.kms-cluster.test";
const LABEL_PID: &str = "org.kms-cluster.test.pid";
const LABEL_HOST: &str = "org.kms-cluster.test.host";
const PREFIX: &str = "kmsct";

/// Unix time in ms (the clock the bench log's `start_ms` uses).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Runs `docker args`; panics with a clear message when docker is not on PATH.
pub fn docker(args: &[&str]) -> Output {
    match Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`docker` is not on PATH: the container fault tests (tests/tests/containers.rs) \
             need Docker Engine (docker CLI and a running daemon)"
        ),
        Err(e) => panic!("cannot run docker {args:?}: {e}"),
    }
}

/// Runs `docker args`, panics unless it succeeds; returns trimmed stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Checks Docker, sweeps leftovers of dead test processes and builds the image (once per
/// test process; the script itself is a no-op when nothing changed).
pub fn ensure_image() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let v = docker(&["version", "--format", "{{.Server.Version}}"]);
        assert!(
            v.status.success(),
            "the Docker daemon does not answer (the container fault tests need it): {}",
            String::from_utf8_lossy(&v.stderr)
        );
        sweep_orphans();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/build-image.sh");
        let started = Instant::now();
        let status = Command::new("bash")
            .arg(&script)
            .env("IMAGE", IMAGE)
            // The binaries this test run built (debug with the fault hooks, or release under
            // `cargo test --release`): one compile of kmsd per run, not a second profile.
            .env("BIN_DIR", crate::harness::bin_dir())
            .stdin(Stdio::null())
            .status()
            .expect("run tests/docker/build-image.sh");
        assert!(status.success(), "{} failed: {status}", script.display());
        eprintln!(
            "docker: image {IMAGE} ready in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    });
}

/// Removes containers, networks and volumes labelled by a test process of this host that
/// no longer runs (killed before its `Drop` ran).
fn sweep_orphans() {
    let host = hostname();
    let alive = |pid: &str| Path::new("/proc").join(pid).exists();
    let list = |kind: &[&str], fmt: &str| -> Vec<(String, String, String)> {
        let mut args = kind.to_vec();
        args.extend_from_slice(&["--filter", "label=org.kms-cluster.test", "--format", fmt]);
        let out = docker(&args);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((
                    it.next()?.to_string(),
                    it.next().unwrap_or("").to_string(),
                    it.next().unwrap_or("").to_string(),
                ))
            })
            .collect()
    };
    let fmt = format!("{{{{.ID}}}} {{{{.Label \"{LABEL_PID}\"}}}} {{{{.Label \"{LABEL_HOST}\"}}}}");
    let vfmt =
        format!("{{{{.Name}}}} {{{{.Label \"{LABEL_PID}\"}}}} {{{{.Label \"{LABEL_HOST}\"}}}}");
    let orphan = |(_, pid, h): &(String, String, String)| *h == host && !alive(pid);
    for (id, ..) in list(&["ps", "-a"], &fmt).iter().filter(|x| orphan(x)) {
        let _ = docker(&["rm", "-f", "-v", id]);
    }
    for (id, ..) in list(&["network", "ls"], &fmt).iter().filter(|x| orphan(x)) {
        let _ = docker(&["network", "rm", id]);
    }
    for (id, ..) in list(&["volume", "ls"], &vfmt).iter().filter(|x| orphan(x)) {
        let _ = docker(&["volume", "rm", "-f", id]);
    }
}

fn random_suffix() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:010x}", h.finish() & 0xff_ffff_ffff)
}

/// One container of the cluster.
#[derive(Debug)]
pub struct DockerNode {
    /// Raft node id (index + 1).
    pub id: u64,
    /// Container name.
    pub name: String,
    /// Its name on the raft network.
    pub alias: String,
    /// Its data volume (mounted on /data).
    pub volume: String,
    /// KMS endpoint on the host (127.0.0.1, published port).
    pub kms: SocketAddr,
    /// Admin base URL on the host (127.0.0.1, published port).
    pub admin: String,
    running: bool,
    partitioned: bool,
}

/// Name of the container that keeps `node`'s small-disk volume mounted.
fn holder_name(node: &DockerNode) -> String {
    format!("{}-hold", node.name)
}

/// N `kmsd` containers forming one Raft cluster.
pub struct DockerCluster {
    /// The members; index i is node id i+1.
    pub nodes: Vec<DockerNode>,
    /// The `--peers` value (aliases on the raft network).
    pub peers: String,
    /// Network the client ports are published from.
    pub clients_net: String,
    /// Network the Raft traffic uses.
    pub raft_net: String,
    /// Scratch directory of the test (bench logs).
    pub dir: tempfile::TempDir,
    /// Whether the volumes are small disks kept mounted by holder containers (see
    /// [`DockerCluster::up_on_small_disks`]; node `i`'s is named by `holder(i)`).
    small_disks: bool,
}

impl DockerCluster {
    /// Creates the networks, volumes and `n` containers (with the harness's Raft timings
    /// plus `extra` kmsd flags), starts them and waits until every node is ready.
    pub fn up(n: usize, extra: &[&str]) -> DockerCluster {
        Self::up_with_files(n, extra, &[])
    }

    /// [`DockerCluster::up`], copying each `(host file, container path)` of `files` into
    /// every container before its first start (e.g. a `--catalog-file`).
    pub fn up_with_files(n: usize, extra: &[&str], files: &[(&Path, &str)]) -> DockerCluster {
        Self::up_inner(n, extra, files, None)
    }

    /// [`DockerCluster::up`] with each node's data directory on a small disk of its own: a
    /// tmpfs volume of `size` (e.g. `40m`) that a holder container keeps mounted, so that
    /// its content survives the node's restarts and [`DockerCluster::fill_disk`] can put a
    /// ballast file on it.
    pub fn up_on_small_disks(n: usize, extra: &[&str], size: &str) -> DockerCluster {
        Self::up_inner(n, extra, &[], Some(size))
    }

    fn up_inner(
        n: usize,
        extra: &[&str],
        files: &[(&Path, &str)],
        small_disk: Option<&str>,
    ) -> DockerCluster {
        ensure_image();
        let sfx = random_suffix();
        let base = format!("{PREFIX}-{sfx}");
        let pid = std::process::id().to_string();
        let host = hostname();
        let labels = [
            "--label".to_string(),
            LABEL.to_string(),
            "--label".to_string(),
            format!("{LABEL_PID}={pid}"),
            "--label".to_string(),
            format!("{LABEL_HOST}={host}"),
        ];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let peers = (1..=n)
            .map(|i| format!("{i}=raft{i}:{RAFT_PORT}"))
            .collect::<Vec<_>>()
            .join(",");
        // Own the names first, so that Drop removes whatever was created before a panic.
        let mut c = DockerCluster {
            nodes: (1..=n as u64)
                .map(|id| DockerNode {
                    id,
                    name: format!("{base}-n{id}"),
                    alias: format!("raft{id}"),
                    volume: format!("{base}-n{id}-data"),
                    kms: "127.0.0.1:0".parse().expect("addr"),
                    admin: String::new(),
                    running: false,
                    partitioned: false,
                })
                .collect(),
            peers: peers.clone(),
            clients_net: format!("{base}-clients"),
            raft_net: format!("{base}-raft"),
            dir: tempfile::tempdir().expect("tempdir"),
            small_disks: small_disk.is_some(),
        };
        let mut args = vec!["network", "create", "--driver", "bridge"];
        args.extend_from_slice(&labels);
        args.extend_from_slice(&[
            "-o",
            "com.docker.network.bridge.enable_icc=false",
            &c.clients_net,
        ]);
        docker_ok(&args);
        let mut args = vec!["network", "create", "--driver", "bridge", "--internal"];
        args.extend_from_slice(&labels);
        args.push(&c.raft_net);
        docker_ok(&args);

        let timings = [
            "--heartbeat-ms".to_string(),
            HEARTBEAT_MS.to_string(),
            "--election-timeout-ms".to_string(),
            ELECTION_TIMEOUT_MS.to_string(),
            "--commit-timeout-ms".to_string(),
            COMMIT_TIMEOUT_MS.to_string(),
            // Every bench client reaches the containers through Docker's port proxy, i.e.
            // from one source address: the per-source limits would throttle the load
            // these tests need (they are tested in tests/tests/access.rs).
            "--requests-per-ip-per-sec".to_string(),
            "0".to_string(),
            "--max-connections-per-ip".to_string(),
            "0".to_string(),
        ];
        let tmpfs_opts = small_disk.map(|size| format!("o=size={size},uid=10001,gid=10001"));
        for node in &c.nodes {
            let mut args = vec!["volume", "create"];
            args.extend_from_slice(&labels);
            if let Some(o) = &tmpfs_opts {
                args.extend_from_slice(&[
                    "--opt",
                    "type=tmpfs",
                    "--opt",
                    "device=tmpfs",
                    "--opt",
                    o,
                ]);
            }
            args.push(&node.volume);
            docker_ok(&args);
            if small_disk.is_some() {
                // A tmpfs volume is unmounted (and emptied) when no container uses it: the
                // holder (an idle kmsd with its own data in /tmp, no network) keeps it.
                let holder = holder_name(node);
                let mount = format!("{}:/data", node.volume);
                let mut args = vec!["run", "-d", "--name", &holder, "--network", "none"];
                args.extend_from_slice(&labels);
                args.extend_from_slice(&[
                    "-v",
                    &mount,
                    IMAGE,
                    "--listen",
                    "127.0.0.1:1688",
                    "--admin-listen",
                    "127.0.0.1:9688",
                    "--cluster-listen",
                    "127.0.0.1:9689",
                    "--data-dir",
                    "/tmp/hold",
                ]);
                docker_ok(&args);
            }
            let id = node.id.to_string();
            let advertise = format!("{}:{RAFT_PORT}", node.alias);
            let kms_pub = format!("127.0.0.1::{KMS_PORT}");
            let admin_pub = format!("127.0.0.1::{ADMIN_PORT}");
            let mount = format!("{}:/data", node.volume);
            let listen = format!("0.0.0.0:{KMS_PORT}");
            let admin = format!("0.0.0.0:{ADMIN_PORT}");
            let cluster = format!("0.0.0.0:{RAFT_PORT}");
            let hostname = format!("n{id}");
            let mut args = vec!["create", "--name", &node.name, "--hostname", &hostname];
            args.extend_from_slice(&labels);
            args.extend_from_slice(&[
                "--network",
                &c.clients_net,
                "-p",
                &kms_pub,
                "-p",
                &admin_pub,
                "--dns",
                "127.0.0.1",
                "-v",
                &mount,
                IMAGE,
                "--node-id",
                &id,
                "--cluster-listen",
                &cluster,
                "--cluster-advertise",
                &advertise,
                "--peers",
                &peers,
                "--listen",
                &listen,
                "--admin-listen",
                &admin,
                "--data-dir",
                "/data",
            ]);
            args.extend(timings.iter().map(String::as_str));
            args.extend_from_slice(extra);
            docker_ok(&args);
            docker_ok(&[
                "network",
                "connect",
                "--alias",
                &node.alias,
                &c.raft_net,
                &node.name,
            ]);
        }
        for node in &c.nodes {
            for (src, dst) in files {
                let dst = format!("{}:{dst}", node.name);
                docker_ok(&["cp", &src.display().to_string(), &dst]);
            }
        }
        for i in 0..n {
            c.start(i);
        }
        for i in 0..n {
            c.wait_ready(i, Duration::from_secs(30));
        }
        c
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Starts (or restarts, after [`DockerCluster::kill`]) container `i` with its own
    /// volume, and reads back its published ports (they may change on a restart). Does
    /// not wait for readiness.
    pub fn start(&mut self, i: usize) {
        docker_ok(&["start", &self.nodes[i].name]);
        let kms = self.published(i, KMS_PORT);
        let admin = self.published(i, ADMIN_PORT);
        let n = &mut self.nodes[i];
        n.kms = kms;
        n.admin = format!("http://{admin}");
        n.running = true;
    }

    fn published(&self, i: usize, port: u16) -> SocketAddr {
        let spec = format!("{port}/tcp");
        let out = docker_ok(&["port", &self.nodes[i].name, &spec]);
        let addr = out
            .lines()
            .find_map(|l| l.trim().parse::<SocketAddr>().ok())
            .unwrap_or_else(|| panic!("no published address for {spec}: {out:?}"));
        assert!(addr.ip().is_loopback(), "{addr} is not a loopback address");
        addr
    }

    /// Starts container `i` without reading its published ports: for a start that is expected
    /// to fail (the ports of a container that has already stopped cannot be read).
    pub fn start_expecting_exit(&mut self, i: usize) {
        docker_ok(&["start", &self.nodes[i].name]);
    }

    /// SIGKILLs container `i` (no shutdown; its volume stays).
    pub fn kill(&mut self, i: usize) {
        docker_ok(&["kill", &self.nodes[i].name]);
        self.nodes[i].running = false;
    }

    /// Stops container `i` gracefully (SIGTERM, SIGKILL after 10 s; its volume stays).
    pub fn stop(&mut self, i: usize) {
        docker_ok(&["stop", "-t", "10", &self.nodes[i].name]);
        self.nodes[i].running = false;
    }

    /// Freezes every process of container `i` (`docker pause`: cgroup freezer). Its
    /// ports still accept connections (docker-proxy) but nothing answers: do not ask a
    /// paused node for its status.
    pub fn pause(&mut self, i: usize) {
        docker_ok(&["pause", &self.nodes[i].name]);
    }

    /// Thaws container `i` after [`DockerCluster::pause`].
    pub fn unpause(&mut self, i: usize) {
        docker_ok(&["unpause", &self.nodes[i].name]);
    }

    /// Name of the cluster's second Raft network (see [`DockerCluster::split_off`];
    /// removed on drop when it exists).
    pub fn side_net(&self) -> String {
        format!("{}-side", self.raft_net)
    }

    /// Moves the nodes `group` from the raft network onto the side network (created on
    /// first use, internal, labelled like the rest) under their aliases: they reach each
    /// other but not the other nodes (a real two-sided partition). Heal with
    /// [`DockerCluster::rejoin`].
    pub fn split_off(&mut self, group: &[usize]) {
        let side = self.side_net();
        if !docker(&["network", "inspect", &side]).status.success() {
            let pid = format!("{LABEL_PID}={}", std::process::id());
            let host = format!("{LABEL_HOST}={}", hostname());
            docker_ok(&[
                "network",
                "create",
                "--internal",
                "--label",
                LABEL,
                "--label",
                &pid,
                "--label",
                &host,
                &side,
            ]);
        }
        for &i in group {
            self.partition(i);
            docker_ok(&[
                "network",
                "connect",
                "--alias",
                &self.nodes[i].alias,
                &side,
                &self.nodes[i].name,
            ]);
        }
    }

    /// Undoes [`DockerCluster::split_off`] for `group`: off the side network, back on
    /// the raft network.
    pub fn rejoin(&mut self, group: &[usize]) {
        let side = self.side_net();
        for &i in group {
            docker_ok(&["network", "disconnect", &side, &self.nodes[i].name]);
            self.heal(i);
        }
    }

    /// When container `i`'s process last ended (Docker's `State.FinishedAt`), Unix ms.
    pub fn finished_at_ms(&self, i: usize) -> u64 {
        let t = docker_ok(&[
            "inspect",
            "--format",
            "{{.State.FinishedAt}}",
            &self.nodes[i].name,
        ]);
        rfc3339_utc_ms(&t).unwrap_or_else(|| panic!("unexpected FinishedAt {t:?}"))
    }

    /// Cuts node `i`'s Raft traffic (disconnects it from the raft network); its published
    /// client and admin ports keep working.
    pub fn partition(&mut self, i: usize) {
        docker_ok(&["network", "disconnect", &self.raft_net, &self.nodes[i].name]);
        self.nodes[i].partitioned = true;
    }

    /// Restores node `i`'s Raft traffic (connects it again under its alias).
    pub fn heal(&mut self, i: usize) {
        docker_ok(&[
            "network",
            "connect",
            "--alias",
            &self.nodes[i].alias,
            &self.raft_net,
            &self.nodes[i].name,
        ]);
        self.nodes[i].partitioned = false;
    }

    /// True while container `i` runs (as far as this harness knows).
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].running
    }

    /// True while node `i` is partitioned.
    pub fn is_partitioned(&self, i: usize) -> bool {
        self.nodes[i].partitioned
    }

    /// KMS endpoint of node `i` on the host.
    pub fn kms(&self, i: usize) -> SocketAddr {
        self.nodes[i].kms
    }

    /// Admin base URL of node `i` on the host.
    pub fn admin(&self, i: usize) -> &str {
        &self.nodes[i].admin
    }

    /// `GET /status` of node `i`, or None when it does not answer.
    pub fn try_status(&self, i: usize) -> Option<serde_json::Value> {
        if !self.nodes[i].running {
            return None;
        }
        match http_get(&format!("{}/status", self.nodes[i].admin)) {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// `GET /status` of node `i` as JSON (panics when it does not answer).
    pub fn status(&self, i: usize) -> serde_json::Value {
        let url = format!("{}/status", self.nodes[i].admin);
        let (code, body) = http_get(&url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(code, 200, "GET {url}: {body}");
        serde_json::from_str(&body).expect("status json")
    }

    /// The inventory of node `i` for count group `group`: CMID → requests.
    pub fn clients(&self, i: usize, group: &str) -> BTreeMap<String, u64> {
        crate::harness::inventory(&format!("{}/clients?group={group}", self.nodes[i].admin))
    }

    /// Waits until node `i`'s `/readyz` answers 200 (a leader is known).
    pub fn wait_ready(&self, i: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let url = format!("{}/readyz", self.nodes[i].admin);
        loop {
            if let Ok((200, _)) = http_get(&url) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "node {} did not become ready within {timeout:?}; log tail:\n{}",
                    self.nodes[i].id,
                    self.logs_tail(i, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Index of a running node that reports itself leader, if any.
    pub fn leader(&self) -> Option<usize> {
        (0..self.len()).find(|&i| {
            self.try_status(i)
                .is_some_and(|s| s["raft"]["role"] == "leader")
        })
    }

    /// Index of a running, connected node that is leader with a term above `min_term`.
    pub fn leader_after(&self, min_term: u64) -> Option<usize> {
        (0..self.len())
            .filter(|&i| !self.nodes[i].partitioned)
            .find(|&i| {
                self.try_status(i).is_some_and(|s| {
                    s["raft"]["role"] == "leader" && s["raft"]["term"].as_u64() > Some(min_term)
                })
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

    /// Waits until every running node reports the same applied index, request statistics
    /// and groups, and an empty outbox; returns their statuses (running nodes only).
    pub fn wait_converged(&self, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        let running = (0..self.len()).filter(|&i| self.nodes[i].running).count();
        loop {
            let statuses: Vec<serde_json::Value> =
                (0..self.len()).filter_map(|i| self.try_status(i)).collect();
            let key = |s: &serde_json::Value| {
                (
                    s["raft"]["applied_index"].clone(),
                    s["total_requests"].clone(),
                    s["failed_requests"].clone(),
                    s["requests_by_license_state"].clone(),
                    s["groups"].clone(),
                )
            };
            if statuses.len() == running
                && statuses.iter().all(|s| key(s) == key(&statuses[0]))
                && statuses.iter().all(|s| s["raft"]["outbox_len"] == 0)
            {
                return statuses;
            }
            if Instant::now() >= deadline {
                panic!(
                    "nodes did not converge within {timeout:?}: {:#?}",
                    statuses.iter().map(brief).collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `n` lines of container `i`'s log.
    pub fn logs_tail(&self, i: usize, n: usize) -> String {
        self.logs(i, &["--tail", &n.to_string()])
    }

    /// Container `i`'s log from `unix_ms` (milliseconds since the epoch) on.
    pub fn logs_since(&self, i: usize, unix_ms: u64) -> String {
        self.logs(
            i,
            &[
                "--since",
                &format!("{}.{:03}", unix_ms / 1000, unix_ms % 1000),
            ],
        )
    }

    /// `docker logs` of container `i` with `options` (its stdout, then its stderr).
    fn logs(&self, i: usize, options: &[&str]) -> String {
        let mut args = vec!["logs"];
        args.extend_from_slice(options);
        args.push(&self.nodes[i].name);
        let out = docker(&args);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Puts a ballast file of `bytes` zeros on node `i`'s small disk (see
    /// [`DockerCluster::up_on_small_disks`]), next to its data directory.
    pub fn fill_disk(&self, i: usize, bytes: u64) {
        let out = self.put_zeros(i, "ballast", bytes);
        assert!(out.status.success(), "docker cp of the ballast: {out:?}");
    }

    /// Fills what is left of node `i`'s small disk, to the last page: the largest file of zeros
    /// that still fits (the image has no shell, so `docker cp` tries sizes that halve).
    pub fn fill_disk_to_the_end(&self, i: usize) {
        let fits_in = |bytes: u64| self.put_zeros(i, "fill", bytes).status.success();
        let mut fits = 0;
        let mut step: u64 = 64 << 20;
        while step >= 4096 {
            if fits_in(fits + step) {
                fits += step;
            } else {
                step /= 2;
            }
        }
        // A failed copy may have left a shorter file: the last size that fitted, again.
        assert!(
            fits_in(fits),
            "copying {fits} bytes that fitted before failed"
        );
    }

    /// Empties the ballast of [`DockerCluster::fill_disk`] and the file of
    /// [`DockerCluster::fill_disk_to_the_end`] (frees their space).
    pub fn free_disk(&self, i: usize) {
        for name in ["ballast", "fill"] {
            let out = self.put_zeros(i, name, 0);
            assert!(out.status.success(), "docker cp emptying {name}: {out:?}");
        }
    }

    /// Copies a file of `bytes` zeros to `/data/NAME` on node `i`'s small disk (through its
    /// holder container), replacing what was there; Docker's answer.
    fn put_zeros(&self, i: usize, name: &str, bytes: u64) -> Output {
        let file = self.path(name);
        let f = std::fs::File::create(&file).expect("create a file of zeros");
        f.set_len(bytes).expect("size a file of zeros");
        drop(f);
        let dst = format!("{}:/data/{name}", self.holder(i));
        docker(&["cp", &file.display().to_string(), &dst])
    }

    fn holder(&self, i: usize) -> String {
        assert!(
            self.small_disks,
            "fill_disk/free_disk need DockerCluster::up_on_small_disks"
        );
        holder_name(&self.nodes[i])
    }

    /// Whether container `i`'s process has ended by itself (Docker's state), with its exit
    /// code; marks the node as not running when it has.
    pub fn exited(&mut self, i: usize) -> Option<i64> {
        let out = docker_ok(&[
            "inspect",
            "--format",
            "{{.State.Running}} {{.State.ExitCode}}",
            &self.nodes[i].name,
        ]);
        let mut it = out.split_whitespace();
        if it.next() == Some("true") {
            return None;
        }
        self.nodes[i].running = false;
        it.next().and_then(|c| c.parse().ok())
    }

    /// A path for a file in the test's scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Parses Docker's UTC timestamps (`2026-11-24T03:55:01.123456789Z`) to Unix ms.
pub fn rfc3339_utc_ms(t: &str) -> Option<u64> {
    let t = t.strip_suffix('Z')?;
    let (date, time) = t.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut h = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (h.next()??, h.next()??, h.next()??);
    let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(((days * 24 + hh) * 60 + mm) * 60 * 1000 + ss * 1000 + ms).ok()
}

/// One line describing a node's status (for messages).
pub fn brief(s: &serde_json::Value) -> String {
    let r = &s["raft"];
    format!(
        "node {} {} term {} leader {} applied {} total {} failed {} outbox {} stale_ms {}",
        r["node_id"],
        r["role"],
        r["term"],
        r["leader"],
        r["applied_index"],
        s["total_requests"],
        s["failed_requests"],
        r["outbox_len"],
        r["stale_ms"]
    )
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.len() {
                eprintln!(
                    "---- {} (node {}) log tail ----\n{}",
                    self.nodes[i].name,
                    self.nodes[i].id,
                    self.logs_tail(i, 30)
                );
            }
        }
        let holders: Vec<String> = if self.small_disks {
            self.nodes.iter().map(holder_name).collect()
        } else {
            Vec::new()
        };
        let names: Vec<&str> = self
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .chain(holders.iter().map(String::as_str))
            .collect();
        let mut args = vec!["rm", "-f", "-v"];
        args.extend_from_slice(&names);
        let _ = docker(&args);
        let _ = docker(&["network", "rm", &self.clients_net, &self.raft_net]);
        if docker(&["network", "inspect", &self.side_net()])
            .status
            .success()
        {
            let _ = docker(&["network", "rm", &self.side_net()]);
        }
        let vols: Vec<&str> = self.nodes.iter().map(|n| n.volume.as_str()).collect();
        let mut args = vec!["volume", "rm", "-f"];
        args.extend_from_slice(&vols);
        let _ = docker(&args);
    }
}

/// Load for a [`Bench`].
#[derive(Debug, Clone, Copy)]
pub struct BenchLoad {
    /// Activations.
    pub count: usize,
    /// Concurrent clients.
    pub concurrency: usize,
    /// Activations started per second (0: as fast as the host answers).
    pub rate: u32,
    /// Per-activation timeout, ms.
    pub timeout_ms: u64,
}

/// A `kmsctl bench` running in the background against one endpoint.
pub struct Bench {
    handle: std::thread::JoinHandle<Output>,
    log: PathBuf,
    target: SocketAddr,
}

/// What a finished bench reports.
#[derive(Debug)]
pub struct BenchResult {
    /// The JSON report (`--json`).
    pub report: serde_json::Value,
    /// One line per attempted activation (`--log`).
    pub lines: Vec<serde_json::Value>,
}

impl Bench {
    /// Starts `kmsctl bench` (protocol 6, Windows 10 Enterprise) against `target`,
    /// logging each activation to `log`.
    pub fn spawn(target: SocketAddr, load: BenchLoad, log: &Path) -> Bench {
        let mut args: Vec<String> = vec![
            "bench".into(),
            "--host".into(),
            target.ip().to_string(),
            "--port".into(),
            target.port().to_string(),
            "--count".into(),
            load.count.to_string(),
            "--concurrency".into(),
            load.concurrency.to_string(),
            "--protocol".into(),
            "6".into(),
            "--timeout-ms".into(),
            load.timeout_ms.to_string(),
            "--json".into(),
            "--log".into(),
            log.display().to_string(),
        ];
        if load.rate > 0 {
            args.extend(["--rate".into(), load.rate.to_string()]);
        }
        let bin = kmsctl_bin();
        let handle = std::thread::spawn(move || {
            Command::new(bin)
                .args(&args)
                .stdin(Stdio::null())
                .output()
                .expect("run kmsctl bench")
        });
        Bench {
            handle,
            log: log.to_path_buf(),
            target,
        }
    }

    /// True once the bench process has ended.
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Waits for the bench to end; reads its report and log.
    pub fn join(self) -> BenchResult {
        let out = self.handle.join().expect("bench thread");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "bench against {} printed no report ({e}): {}{}",
                self.target,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let lines = std::fs::read_to_string(&self.log)
            .unwrap_or_else(|e| panic!("bench log {}: {e}", self.log.display()))
            .lines()
            .map(|l| serde_json::from_str(l).expect("bench log line"))
            .collect();
        BenchResult { report, lines }
    }
}

impl BenchResult {
    /// The answered activations.
    pub fn answered(&self) -> impl Iterator<Item = &serde_json::Value> {
        self.lines.iter().filter(|l| l["answered"] == true)
    }

    /// Number of answered activations.
    pub fn answered_count(&self) -> usize {
        self.answered().count()
    }

    /// (attempted, answered) among the activations started in `[from_ms, to_ms)`.
    pub fn started_between(&self, from_ms: u64, to_ms: u64) -> (usize, usize) {
        let within: Vec<&serde_json::Value> = self
            .lines
            .iter()
            .filter(|l| {
                l["start_ms"]
                    .as_u64()
                    .is_some_and(|t| t >= from_ms && t < to_ms)
            })
            .collect();
        let answered = within.iter().filter(|l| l["answered"] == true).count();
        (within.len(), answered)
    }

    /// The answered activations whose answer arrived in `[from_ms, to_ms)` (start plus
    /// latency).
    pub fn answered_between(&self, from_ms: u64, to_ms: u64) -> Vec<&serde_json::Value> {
        self.answered()
            .filter(|l| {
                let end =
                    l["start_ms"].as_u64().unwrap_or(0) + l["micros"].as_u64().unwrap_or(0) / 1000;
                end >= from_ms && end < to_ms
            })
            .collect()
    }

    /// Errors by kind, as the report gives them.
    pub fn errors(&self) -> &serde_json::Value {
        &self.report["errors"]
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_docker_timestamps() {
        assert_eq!(
            super::rfc3339_utc_ms("2026-11-24T03:55:01.123456789Z"),
            Some(1_795_492_501_123)
        );
        assert_eq!(super::rfc3339_utc_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            super::rfc3339_utc_ms("2000-02-29T12:00:00.5Z"),
            Some(951_825_600_500)
        );
        assert_eq!(super::rfc3339_utc_ms("garbage"), None);
    }
}
