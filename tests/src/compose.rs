//! Docker Compose harness: the repository's own `docker-compose.yml` run as a uniquely
//! named compose project, with the image `kms-cluster:local` built by
//! `docker/build-local.sh` (the repository's Dockerfile, no registry needed).
//!
//! Works with Compose v2 (`docker compose`, preferred) and v1 (`docker-compose`, as
//! Debian packages it). Every published port is chosen by the test (free ports on
//! 127.0.0.1, through the environment variables the compose file reads) and bound to
//! 127.0.0.1 only, so the host only ever talks to loopback. The project (containers,
//! network, volumes) is removed with `down -v` on drop, also when the test panics;
//! projects of test processes that died before dropping theirs are removed on first use.

use crate::docker::docker;
use crate::harness::{free_port, http_get};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The tag `docker/build-local.sh` builds and the compose file uses by default.
pub const LOCAL_IMAGE: &str = "kms-cluster:local";
/// The kmsd services of the compose file, node ids 1..3 in order.
pub const KMS_SERVICES: [&str; 3] = ["kms1", "kms2", "kms3"];
/// Prefix of the test projects' names (followed by the test process id, `x` and a random
/// suffix).
const PROJECT_PREFIX: &str = "kmsctc";

/// The repository root (where the Dockerfile and docker-compose.yml are).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

/// The compose command of this machine: `docker compose` (v2 plugin) when it works, else
/// `docker-compose` (v1); panics when neither exists.
pub fn compose_cmd() -> &'static [&'static str] {
    static CMD: OnceLock<&'static [&'static str]> = OnceLock::new();
    CMD.get_or_init(|| {
        let works = |argv: &[&str]| {
            Command::new(argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if works(&["docker", "compose", "version"]) {
            &["docker", "compose"]
        } else if works(&["docker-compose", "version"]) {
            &["docker-compose"]
        } else {
            panic!(
                "neither `docker compose` (Compose v2) nor `docker-compose` (v1) works: the \
                 compose test (tests/tests/compose.rs) needs one of them"
            )
        }
    })
}

/// True when the compose command is v1 (`docker-compose`).
pub fn compose_v1() -> bool {
    compose_cmd() == ["docker-compose"]
}

/// Checks Docker, removes projects left by dead test processes and builds the image with
/// `docker/build-local.sh` (once per test process; the script is a no-op when nothing
/// changed).
pub fn ensure_local_image() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let v = docker(&["version", "--format", "{{.Server.Version}}"]);
        assert!(
            v.status.success(),
            "the Docker daemon does not answer (the compose test needs it): {}",
            String::from_utf8_lossy(&v.stderr)
        );
        sweep_orphans();
        let script = repo_root().join("docker/build-local.sh");
        let started = Instant::now();
        let status = Command::new("bash")
            .arg(&script)
            .env("IMAGE", LOCAL_IMAGE)
            // The binaries this test run built (debug with the fault hooks, or release under
            // `cargo test --release`): one compile of kmsd per run, not a second profile.
            .env("BIN_DIR", crate::harness::bin_dir())
            .stdin(Stdio::null())
            .status()
            .expect("run docker/build-local.sh");
        assert!(status.success(), "{} failed: {status}", script.display());
        eprintln!(
            "compose: image {LOCAL_IMAGE} ready in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    });
}

/// `down -v` for every test project whose process no longer runs.
fn sweep_orphans() {
    let out = docker(&[
        "ps",
        "-a",
        "--filter",
        "label=com.docker.compose.project",
        "--format",
        "{{.Label \"com.docker.compose.project\"}}",
    ]);
    let vols = docker(&[
        "volume",
        "ls",
        "--filter",
        "label=com.docker.compose.project",
        "--format",
        "{{.Label \"com.docker.compose.project\"}}",
    ]);
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&vols.stdout).lines())
        .map(str::trim)
        .filter(|n| n.starts_with(PROJECT_PREFIX))
        .map(String::from)
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        let pid = name[PROJECT_PREFIX.len()..]
            .split('x')
            .next()
            .unwrap_or_default();
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            eprintln!("compose: removing project {name} left by dead process {pid}");
            let _ = ComposeProject::down_project(&name, &[]);
        }
    }
}

fn random_suffix() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:08x}", h.finish() & 0xffff_ffff)
}

/// One compose project of the repository's docker-compose.yml.
pub struct ComposeProject {
    /// Project name (`-p`).
    pub name: String,
    /// Environment the compose file is interpolated with (ports, image).
    pub env: Vec<(String, String)>,
    /// KMS endpoint of kms1..kms3 on the host (127.0.0.1, published ports).
    pub kms: Vec<SocketAddr>,
    /// Admin base URL of kms1..kms3 on the host (127.0.0.1, published ports).
    pub admin: Vec<String>,
}

impl ComposeProject {
    /// A new project (nothing started yet): builds the image if needed and chooses free
    /// loopback ports for every published port of the compose file.
    pub fn new() -> ComposeProject {
        ensure_local_image();
        Self::unbuilt()
    }

    /// Like [`ComposeProject::new`] without building the image: enough for checks of the
    /// resolved configuration ([`ComposeProject::config`]), which need Compose only.
    pub fn unbuilt() -> ComposeProject {
        let name = format!("{PROJECT_PREFIX}{}x{}", std::process::id(), random_suffix());
        let mut env: Vec<(String, String)> = vec![
            ("KMS_IMAGE".into(), LOCAL_IMAGE.into()),
            ("KMS_BIND".into(), "127.0.0.1".into()),
        ];
        let mut kms = Vec::new();
        let mut admin = Vec::new();
        for i in 1..=KMS_SERVICES.len() {
            let (k, a) = (free_port(), free_port());
            env.push((format!("KMS{i}_PORT"), k.to_string()));
            env.push((format!("KMS{i}_ADMIN_PORT"), a.to_string()));
            kms.push(SocketAddr::from(([127, 0, 0, 1], k)));
            admin.push(format!("http://127.0.0.1:{a}"));
        }
        for var in ["PROMETHEUS_PORT", "ALERTMANAGER_PORT", "GRAFANA_PORT"] {
            env.push((var.into(), free_port().to_string()));
        }
        ComposeProject {
            name,
            env,
            kms,
            admin,
        }
    }

    fn command(name: &str, env: &[(String, String)], args: &[&str]) -> Command {
        let cmd = compose_cmd();
        let root = repo_root();
        let file = root.join("docker-compose.yml");
        let mut c = Command::new(cmd[0]);
        c.args(&cmd[1..])
            .arg("-f")
            .arg(&file)
            .arg("--project-directory")
            .arg(&root)
            .args(["-p", name])
            .args(args)
            .current_dir(&root)
            .stdin(Stdio::null());
        // Only the test's own settings: none of the compose file's variables from the
        // caller's environment.
        for (k, _) in std::env::vars() {
            if ["KMS", "GRAFANA_", "PROMETHEUS_", "ALERTMANAGER_"]
                .iter()
                .any(|p| k.starts_with(p))
            {
                c.env_remove(k);
            }
        }
        c.envs(env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn down_project(name: &str, env: &[(String, String)]) -> Output {
        Self::command(name, env, &["down", "-v", "--remove-orphans", "-t", "5"])
            .output()
            .expect("run compose down")
    }

    /// The value this project gives the compose file's variable `var` (e.g. a port).
    pub fn var(&self, var: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == var)
            .map(|(_, v)| v.as_str())
    }

    /// Runs the compose command with `args` in this project.
    pub fn run(&self, args: &[&str]) -> Output {
        Self::command(&self.name, &self.env, args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {:?} {args:?}: {e}", compose_cmd()))
    }

    /// Runs the compose command, panics unless it succeeds; returns stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{:?} {args:?} failed ({}): {}{}",
            compose_cmd(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The resolved configuration (`config`): JSON from v2 (`--format json`), YAML from
    /// v1, both returned as JSON values.
    pub fn config(&self) -> serde_json::Value {
        let text = if compose_v1() {
            self.run_ok(&["config"])
        } else {
            self.run_ok(&["config", "--format", "json"])
        };
        serde_yaml_ng::from_str(&text).expect("compose config output")
    }

    /// `up -d` of `services` (without building: the image is there).
    pub fn up(&self, services: &[&str]) {
        let mut args = vec!["up", "-d", "--no-build"];
        args.extend_from_slice(services);
        self.run_ok(&args);
    }

    /// The container id of `service`.
    pub fn container(&self, service: &str) -> String {
        let id = self.run_ok(&["ps", "-q", service]).trim().to_string();
        assert!(!id.is_empty(), "service {service} has no container");
        id
    }

    /// Docker's health status of `service`'s container (`healthy`, `starting`, ...).
    pub fn health(&self, service: &str) -> String {
        let out = docker(&[
            "inspect",
            "--format",
            "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}",
            &self.container(service),
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Waits until Docker reports every one of `services` healthy (the image's health
    /// check: `/readyz` answers 200).
    pub fn wait_healthy(&self, services: &[&str], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for s in services {
            loop {
                let h = self.health(s);
                if h == "healthy" {
                    break;
                }
                if Instant::now() >= deadline {
                    panic!(
                        "{s} is not healthy within {timeout:?} (health: {h}); logs:\n{}",
                        self.logs(s, 40)
                    );
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }

    /// `GET /status` of node `i` (0-based) as JSON, or None when it does not answer.
    pub fn try_status(&self, i: usize) -> Option<serde_json::Value> {
        match http_get(&format!("{}/status", self.admin[i])) {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// The last `n` log lines of `service`.
    pub fn logs(&self, service: &str, n: usize) -> String {
        let n = n.to_string();
        let out = self.run(&["logs", "--no-color", "--tail", &n, service]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Default for ComposeProject {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for s in KMS_SERVICES {
                eprintln!("---- {s} log tail ----\n{}", self.logs(s, 30));
            }
        }
        let out = Self::down_project(&self.name, &self.env);
        if !out.status.success() {
            eprintln!(
                "compose down -v of {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The bind mounts of a service in a resolved compose configuration as (source, target):
/// v2 lists `{type, source, target}` objects, v1 `source:target[:mode]` strings.
pub fn mounts(service: &serde_json::Value) -> Vec<(String, String)> {
    service["volumes"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .filter_map(|v| match v {
                    serde_json::Value::String(s) => {
                        let mut it = s.split(':');
                        Some((it.next()?.to_string(), it.next()?.to_string()))
                    }
                    serde_json::Value::Object(o) => Some((
                        o.get("source")?.as_str()?.to_string(),
                        o.get("target")?.as_str()?.to_string(),
                    )),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The published ports of a service in a resolved compose configuration as (host ip,
/// host port, container port): v2 lists `{host_ip, published, target}` objects, v1
/// `ip:published:target[/proto]` strings.
pub fn ports(service: &serde_json::Value) -> Vec<(String, String, String)> {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    service["ports"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| match p {
                    serde_json::Value::String(s) => {
                        let s = s.split('/').next()?;
                        let mut it = s.rsplitn(3, ':');
                        let target = it.next()?.to_string();
                        let published = it.next()?.to_string();
                        Some((it.next().unwrap_or("").to_string(), published, target))
                    }
                    serde_json::Value::Object(o) => Some((
                        o.get("host_ip").and_then(text).unwrap_or_default(),
                        o.get("published").and_then(text)?,
                        o.get("target").and_then(text)?,
                    )),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}
