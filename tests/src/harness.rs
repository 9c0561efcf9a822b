//! Process harness: builds and starts real `kmsd` binaries on loopback ephemeral ports,
//! runs the real `kmsctl`, and talks raw HTTP to the admin API (no client library, so
//! tests see exactly what a script would).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Directory holding the built binaries (`target/<profile>`).
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // target/<profile>/deps/<test-exe> → target/<profile>
        let exe = std::env::current_exe().expect("current exe");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_path_buf();
        let release = dir.file_name().is_some_and(|n| n == "release");
        // Build the binaries once per test process; a no-op when they are up to date. The
        // test kmsd carries the fault hooks the watchdog tests use (feature
        // `fault-injection`; release builds never enable it).
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "kmsd", "-p", "kmsctl"])
            .args(["--features", "kmsd/fault-injection"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        // Without the package variables cargo set for this test process: ring's build
        // script tracks CARGO_MANIFEST_DIR and CARGO_PKG_*, so values differing from the
        // outer `cargo test`'s made the two builds rebuild ring and everything above it
        // (minutes) in turn.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .iter()
            .any(|p| name.starts_with(p))
            {
                cmd.env_remove(name.as_ref());
            }
        }
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building kmsd and kmsctl failed");
        dir
    })
    .clone()
}

/// Path of the `kmsd` binary.
pub fn kmsd_bin() -> PathBuf {
    bin_dir().join("kmsd")
}

/// Path of the `kmsctl` binary.
pub fn kmsctl_bin() -> PathBuf {
    bin_dir().join("kmsctl")
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    free_port_on("127.0.0.1")
}

/// A free TCP port on a loopback address such as `127.0.0.2`.
///
/// Drawn from 20000-32767, below the kernel's ephemeral range (32768+): a port the kernel
/// handed out as `:0` could be taken again as the source port of an outgoing connection
/// (benches open thousands) before the daemon binds it. Ports handed out by this process
/// are not handed out twice; the bind check skips ports in use.
pub fn free_port_on(ip: &str) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let _ = NEXT.compare_exchange(
        0,
        std::process::id().wrapping_mul(7919) % 12_000 + 1,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..12_000 {
        let port = 20_000 + (NEXT.fetch_add(1, Ordering::Relaxed) % 12_000) as u16;
        if TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind((ip, 0))
        .expect("bind ephemeral")
        .local_addr()
        .expect("addr")
        .port()
}

/// A running `kmsd`.
pub struct Kmsd {
    child: Option<Child>,
    /// KMS address.
    pub kms: SocketAddr,
    /// Admin base URL.
    pub admin: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Where its log goes.
    pub log: PathBuf,
    args: Vec<String>,
}

impl Kmsd {
    /// Starts kmsd with `data_dir` and extra flags on fresh loopback ports, and waits
    /// until `/readyz` answers 200.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Kmsd {
        let cluster = format!("127.0.0.1:{}", free_port());
        let mut args: Vec<&str> = vec!["--cluster-listen", &cluster];
        args.extend_from_slice(extra);
        Self::start_on("127.0.0.1", data_dir, &args)
    }

    /// Starts kmsd with its KMS and admin listeners on loopback address `ip` (e.g.
    /// `127.0.0.2`); cluster flags come in `extra`.
    pub fn start_on(ip: &str, data_dir: &Path, extra: &[&str]) -> Kmsd {
        let mut k = Self::launch_on(ip, data_dir, extra);
        k.wait_ready();
        k
    }

    /// Like [`Kmsd::start_on`] without waiting for readiness (cluster members become
    /// ready only once a quorum is up).
    pub fn launch_on(ip: &str, data_dir: &Path, extra: &[&str]) -> Kmsd {
        let kms: SocketAddr = format!("{ip}:{}", free_port_on(ip)).parse().expect("addr");
        let admin_port = free_port_on(ip);
        let mut args = vec![
            "--listen".to_string(),
            kms.to_string(),
            "--admin-listen".to_string(),
            format!("{ip}:{admin_port}"),
            "--data-dir".to_string(),
            data_dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut k = Kmsd {
            child: None,
            kms,
            admin: format!("http://{ip}:{admin_port}"),
            data_dir: data_dir.to_path_buf(),
            log: data_dir.with_extension("log"),
            args,
        };
        k.spawn_inner(false);
        k
    }

    fn spawn(&mut self) {
        self.spawn_inner(true);
    }

    fn spawn_inner(&mut self, wait_ready: bool) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(kmsd_bin())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn kmsd");
        self.child = Some(child);
        if !wait_ready {
            return;
        }
        self.wait_ready();
    }

    /// Waits until `/readyz` answers 200 (listeners bound and a Raft leader known).
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http_get(&format!("{}/readyz", self.admin)) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "kmsd exited early ({status}); log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "kmsd did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Graceful stop (SIGTERM) and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts with the same flags and ports.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// `GET /status`, or None when the node does not answer.
    pub fn try_status(&self) -> Option<serde_json::Value> {
        match http_get(&format!("{}/status", self.admin)) {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `timeout` for the log to contain `needle` (kmsd's log writer runs on a
    /// thread of its own, so a line can reach the file a little after the event); the log.
    pub fn wait_log(&self, needle: &str, timeout: std::time::Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let log = self.log_text();
            if log.contains(needle) || std::time::Instant::now() >= deadline {
                return log;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// `GET /status` as JSON.
    pub fn status(&self) -> serde_json::Value {
        let (code, body) = http_get(&format!("{}/status", self.admin)).expect("status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("status json")
    }

    /// Sends a signal (`HUP`, `TERM`, ...) to the process.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args([&format!("-{sig}"), &c.id().to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "kill -{sig} failed");
        }
    }

    /// Kills the process (SIGKILL), no shutdown.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the process again after [`Kmsd::stop`] or [`Kmsd::kill`] (same flags and
    /// ports) without waiting for readiness.
    pub fn spawn_again(&mut self) {
        self.spawn_inner(false);
    }

    /// Waits up to `timeout` for the process to end by itself (e.g. a start that must be
    /// refused); its exit status, or None while it still runs (it is left running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.child.as_mut()?.try_wait().ok().flatten();
            if let Some(status) = status {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The inventory (`GET /clients`, every count group): CMID → requests.
    pub fn clients(&self) -> std::collections::BTreeMap<String, u64> {
        inventory(&format!("{}/clients", self.admin))
    }

    /// Runs `kmsctl activate` against this host with extra flags; returns the JSON line and
    /// the exit code.
    pub fn activate(&self, extra: &[&str]) -> (serde_json::Value, i32) {
        activate_at(self.kms, extra)
    }
}

/// Runs `kmsctl activate --json` against the KMS address `addr` with extra flags; returns
/// the JSON line and the exit code (panics when kmsctl printed no JSON).
pub fn activate_at(addr: SocketAddr, extra: &[&str]) -> (serde_json::Value, i32) {
    let port = addr.port().to_string();
    let host = addr.ip().to_string();
    let mut args = vec!["activate", "--host", &host, "--port", &port, "--json"];
    args.extend_from_slice(extra);
    let out = kmsctl(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let v = serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "kmsctl activate against {addr} printed no JSON: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out.status.code().unwrap_or(-1))
}

/// Copies log files to a directory that outlives the test when dropped during a panic
/// (a failing test's temporary directories are removed), and prints where.
pub struct KeepLogsOnPanic {
    /// What the copies are named after (e.g. the test's name).
    pub label: String,
    /// The log files.
    pub logs: Vec<PathBuf>,
}

impl Drop for KeepLogsOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let dir = std::env::temp_dir().join(format!("{}-{}", self.label, std::process::id()));
        if std::fs::create_dir_all(&dir).is_err() {
            return;
        }
        for (i, log) in self.logs.iter().enumerate() {
            let name = log
                .file_name()
                .map(|n| format!("{i}-{}", n.to_string_lossy()))
                .unwrap_or_else(|| format!("{i}.log"));
            let _ = std::fs::copy(log, dir.join(name));
        }
        eprintln!("logs of the failed test kept in {}", dir.display());
    }
}

impl Drop for Kmsd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The inventory an admin `/clients` URL answers: CMID → requests (panics unless 200).
pub fn inventory(url: &str) -> std::collections::BTreeMap<String, u64> {
    let (code, body) = http_get(url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(code, 200, "GET {url}: {body}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).expect("clients json");
    list.iter()
        .map(|c| {
            (
                c["cmid"].as_str().expect("cmid").to_string(),
                c["requests"].as_u64().expect("requests"),
            )
        })
        .collect()
}

/// Runs `kmsctl` with `args`.
pub fn kmsctl(args: &[&str]) -> Output {
    Command::new(kmsctl_bin())
        .args(args)
        .output()
        .expect("run kmsctl")
}

/// Runs `kmsctl bench --json` against the KMS address `kms`: `count` activations at
/// `concurrency`, then the `extra` flags (rate, protocol, timeout, log file...).
pub fn bench(kms: SocketAddr, count: u64, concurrency: u64, extra: &[&str]) -> Output {
    let (host, port) = (kms.ip().to_string(), kms.port().to_string());
    let (count, concurrency) = (count.to_string(), concurrency.to_string());
    let mut args = vec![
        "bench",
        "--host",
        &host,
        "--port",
        &port,
        "--count",
        &count,
        "--concurrency",
        &concurrency,
        "--json",
    ];
    args.extend_from_slice(extra);
    kmsctl(&args)
}

/// Runs `kmsctl` with `args` and asserts it succeeded (the failure shows its output).
pub fn kmsctl_ok(args: &[&str]) -> Output {
    let out = kmsctl(args);
    assert!(
        out.status.success(),
        "kmsctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Minimal HTTP/1.0 GET: returns status code and body.
pub fn http_get(url: &str) -> std::io::Result<(u16, String)> {
    http_get_with(url, &[]).map(|r| (r.code, r.body))
}

/// The value of series `series` (name and labels exactly as exported) in the `/metrics` of
/// the admin API at `admin`; None when it is not exported. Panics unless `/metrics` answers
/// 200.
pub fn metric(admin: &str, series: &str) -> Option<f64> {
    let (code, text) = http_get(&format!("{admin}/metrics")).expect("GET /metrics");
    assert_eq!(code, 200, "GET {admin}/metrics");
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// An idle TCP connection to `addr` from local address `source` (e.g. `127.0.0.2`), to
/// exercise a host's per-source rules; held open until dropped.
pub fn connect_from(source: &str, addr: std::net::SocketAddr) -> TcpStream {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None).expect("socket");
    let local: std::net::SocketAddr = format!("{source}:0").parse().expect("source address");
    socket.bind(&local.into()).expect("bind source");
    socket.connect(&addr.into()).expect("connect");
    socket.into()
}

/// An HTTP answer with its header block (status line and headers, as sent).
#[derive(Debug, Clone)]
pub struct HttpReply {
    /// Status code.
    pub code: u16,
    /// Status line and headers.
    pub head: String,
    /// Body.
    pub body: String,
}

impl HttpReply {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Minimal HTTP/1.0 GET with extra request headers (`Name: value` lines).
pub fn http_get_with(url: &str, headers: &[&str]) -> std::io::Result<HttpReply> {
    http_request("GET", url, headers)
}

/// Minimal HTTP/1.0 POST without a body: returns status code and body.
pub fn http_post(url: &str) -> std::io::Result<(u16, String)> {
    http_request("POST", url, &["Content-Length: 0"]).map(|r| (r.code, r.body))
}

/// Minimal HTTP/1.0 request without a body, with extra headers (`Name: value` lines).
fn http_request(method: &str, url: &str, headers: &[&str]) -> std::io::Result<HttpReply> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok(HttpReply {
        code,
        head: head.replace("\r\n", "\n"),
        body: body.to_string(),
    })
}
