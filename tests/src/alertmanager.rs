//! A real Alertmanager (Debian's `prometheus-alertmanager` package) started by a test on
//! loopback ports, and the webhook receiver a test owns: a small HTTP server on
//! 127.0.0.1 that keeps every JSON body Alertmanager POSTs to it.

use crate::harness::free_port;
use crate::observability::debian_tool;
use crate::prom::Server;
use serde_json::Value as Json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The largest notification body the receiver accepts.
const MAX_BODY: usize = 1 << 20;

/// The Alertmanager server binary: `$ALERTMANAGER`, or `prometheus-alertmanager` (the
/// Debian name) on `PATH`; panics naming the package when there is none.
pub fn alertmanager_bin() -> PathBuf {
    debian_tool(
        "ALERTMANAGER",
        "prometheus-alertmanager",
        "prometheus-alertmanager",
    )
}

/// A running Alertmanager, clustering disabled; killed on drop.
pub struct Alertmanager {
    /// `host:port` of its API, for Prometheus's `alerting` block.
    pub addr: String,
    /// Its log file.
    pub log: PathBuf,
    _server: Server,
}

impl Alertmanager {
    /// Starts Alertmanager with the configuration `config` (YAML) on a free loopback
    /// port, its state in a temporary directory; waits until it is ready.
    pub fn start(config: &str) -> Alertmanager {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("alertmanager.yml");
        std::fs::write(&config_path, config).expect("write alertmanager config");
        let addr = format!("127.0.0.1:{}", free_port());
        let args = [
            format!("--config.file={}", config_path.display()),
            format!("--storage.path={}", dir.path().join("data").display()),
            format!("--web.listen-address={addr}"),
            "--cluster.listen-address=".to_string(),
            "--log.level=warn".to_string(),
        ];
        let ready = format!("http://{addr}/-/ready");
        let server = Server::start(alertmanager_bin(), &args, dir, "alertmanager", &ready);
        Alertmanager {
            addr,
            log: server.log.clone(),
            _server: server,
        }
    }
}

/// A webhook receiver on 127.0.0.1: answers every POST with 200 and keeps its body (as
/// JSON; a body that is not JSON is kept as a string). Stopped on drop.
pub struct Webhook {
    /// The URL to give Alertmanager (`webhook_configs[].url`).
    pub url: String,
    bodies: Arc<Mutex<Vec<Json>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Webhook {
    /// Starts the receiver on a free loopback port.
    pub fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind webhook");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!(
            "http://{}/alerts",
            listener.local_addr().expect("webhook address")
        );
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (bodies, stop) = (bodies.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            if let Some(body) = serve(conn) {
                                bodies.lock().expect("bodies").push(body);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        };
        Webhook {
            url,
            bodies,
            stop,
            thread: Some(thread),
        }
    }

    /// Every body received so far, in order.
    pub fn received(&self) -> Vec<Json> {
        self.bodies.lock().expect("bodies").clone()
    }

    /// Waits up to `timeout` for a body that satisfies `pred` and returns it; panics with
    /// `what` and everything received otherwise.
    #[track_caller]
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Json) -> bool) -> Json {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(b) = self.received().into_iter().find(|b| pred(b)) {
                return b;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {timeout:?}; received: {:#?}",
                self.received()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one HTTP request from `conn` (headers, then `Content-Length` bytes), answers
/// 200 and returns its body; `None` when the request is cut short or malformed.
fn serve(conn: TcpStream) -> Option<Json> {
    conn.set_nonblocking(false).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(conn);
    let (mut len, mut complete) = (0usize, false);
    // A request line and at most 100 header lines.
    for _ in 0..=100 {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            complete = true;
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                len = value.trim().parse().ok()?;
            }
        }
    }
    if !complete || len > MAX_BODY {
        return None;
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let mut conn = reader.into_inner();
    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let text = String::from_utf8_lossy(&body).into_owned();
    Some(serde_json::from_str(&text).unwrap_or(Json::String(text)))
}
