//! The admin listener's limits against a real `kmsd` on loopback, with small limits passed
//! as flags: silent, slow-header and idle admin connections are closed by their timeouts,
//! an oversized header gets 431 (or a closed connection), connections beyond
//! `admin_max_connections` are closed at once (counted, logged once) while KMS activations on
//! the KMS port keep being answered, and a limit of 0 is refused at start.
//!
//! The machine running the tests is busy: the bounds are loose (a 1 s timeout must close
//! within 5 s, and not long before its time).

use kms_tests::harness::{http_get, kmsd_bin, Kmsd};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

const HEADER_TIMEOUT_MS: u64 = 1000;
const IDLE_TIMEOUT_MS: u64 = 3000;
/// What a 1-3 s timeout may take on a loaded machine.
const SLACK: Duration = Duration::from_secs(5);

/// A raw TCP connection to the admin port of `k`.
fn raw(k: &Kmsd) -> TcpStream {
    let addr = k.admin.strip_prefix("http://").expect("http admin URL");
    TcpStream::connect(addr).expect("connect to the admin port")
}

/// Reads until the server closes `s` (end of stream or reset) or `limit` passes; how long
/// that took (None: still open) and everything read.
fn wait_closed(s: &mut TcpStream, limit: Duration) -> (Option<Duration>, Vec<u8>) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        let left = limit
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(1));
        s.set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (Some(start.elapsed()), got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (Some(start.elapsed()), got),
        }
    }
    (None, got)
}

/// Asserts that `s` is closed after at least `min` and within `max`, measured from `since`.
fn closed_between(s: &mut TcpStream, since: Instant, min: Duration, max: Duration, what: &str) {
    let (closed, got) = wait_closed(s, max.saturating_sub(since.elapsed()));
    assert!(
        closed.is_some(),
        "{what}: still open after {max:?}; got {:?}",
        String::from_utf8_lossy(&got)
    );
    let took = since.elapsed();
    assert!(took >= min, "{what}: closed after {took:?}, before {min:?}");
}

/// One HTTP/1.1 keep-alive GET on `s`; the status code (the body is read by its length).
fn get_keep_alive(s: &mut TcpStream, path: &str) -> u16 {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: kmsd\r\n\r\n").as_bytes())
        .unwrap();
    s.set_read_timeout(Some(SLACK)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Header block, then Content-Length bytes of body; bounded by the read timeout.
    loop {
        let n = s.read(&mut buf).expect("answer");
        assert!(n > 0, "closed before answering: {got:?}");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (name, v) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .expect("content-length");
        if body.len() >= len {
            return head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .expect("status code");
        }
    }
}

fn connections(k: &Kmsd) -> serde_json::Value {
    k.status()["connections"].clone()
}

/// KMS on the KMS port answers (0 activated, 3 count still below the minimum).
fn kms_answers(k: &Kmsd) {
    let (v, code) = k.activate(&["--product", "Windows 10 Enterprise"]);
    assert!(code == 0 || code == 3, "exit {code}: {v}");
}

#[test]
fn silent_slow_and_idle_admin_clients_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kmsd::start(
        &dir.path().join("d"),
        &[
            "--admin-header-timeout-ms",
            &HEADER_TIMEOUT_MS.to_string(),
            "--admin-idle-timeout-ms",
            &IDLE_TIMEOUT_MS.to_string(),
            "--admin-max-header-bytes",
            "4096",
        ],
    );
    let header = Duration::from_millis(HEADER_TIMEOUT_MS);
    let idle = Duration::from_millis(IDLE_TIMEOUT_MS);
    // Half the timeout as the lower bound: the server's clock starts at its accept, a
    // little before ours.
    let (header_min, idle_min) = (header / 2, idle - header);

    // A connection that never sends a byte must send its first header in time.
    let t = Instant::now();
    let mut silent = raw(&k);
    // A partial request line and a partial header.
    let mut line = raw(&k);
    line.write_all(b"GET /status HTT").unwrap();
    let mut partial = raw(&k);
    partial
        .write_all(b"GET /status HTTP/1.1\r\nHost: kmsd\r\nX-Slow: ")
        .unwrap();
    closed_between(&mut silent, t, header_min, header + SLACK, "silent");
    closed_between(&mut line, t, header_min, header + SLACK, "partial line");
    closed_between(
        &mut partial,
        t,
        header_min,
        header + SLACK,
        "partial header",
    );

    // A client trickling its header a byte at a time gains nothing by it.
    let t = Instant::now();
    let mut slow = raw(&k);
    let mut cut = false;
    for b in b"GET /status HTTP/1.1\r\nHost: kmsd\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    {
        if slow.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !cut {
        closed_between(&mut slow, t, header_min, header + SLACK, "trickle");
    }
    assert!(
        t.elapsed() >= header_min,
        "trickle cut after {:?}",
        t.elapsed()
    );
    assert!(
        t.elapsed() < header + SLACK,
        "trickle cut after {:?}",
        t.elapsed()
    );

    // Keep-alive: idle longer than the header timeout is fine, the next request is answered;
    // idle for the idle timeout closes the connection.
    let mut ka = raw(&k);
    assert_eq!(get_keep_alive(&mut ka, "/livez"), 200);
    std::thread::sleep(header + header / 2);
    assert_eq!(get_keep_alive(&mut ka, "/readyz"), 200);
    let t = Instant::now();
    closed_between(&mut ka, t, idle_min, idle + SLACK, "idle keep-alive");

    // Oversized header: 431 (or a closed connection), never an answer; a 2 KiB one is fine.
    let mut big = raw(&k);
    let pad = "a".repeat(8000);
    let _ = big.write_all(
        format!("GET /status HTTP/1.1\r\nHost: kmsd\r\nX-Pad: {pad}\r\n\r\n").as_bytes(),
    );
    let (closed, got) = wait_closed(&mut big, SLACK);
    assert!(closed.is_some(), "oversized header: connection left open");
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.is_empty() || got.starts_with("HTTP/1.1 431"),
        "oversized header answered: {got}"
    );
    let mut fine = raw(&k);
    let pad = format!(
        "GET /livez HTTP/1.1\r\nHost: kmsd\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(2048)
    );
    fine.write_all(pad.as_bytes()).unwrap();
    let (_, got) = wait_closed(&mut fine, Duration::from_millis(500));
    // Closed by us, before its idle timeout: not counted.
    drop(fine);
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );

    // KMS kept serving; the admin API too, and it counted what it closed.
    kms_answers(&k);
    let c = connections(&k);
    assert_eq!(c["admin_header_timeouts"], 4, "{c}");
    assert_eq!(c["admin_idle_timeouts"], 1, "{c}");
    assert_eq!(c["admin_refused"], 0, "{c}");
    let (code, metrics) = http_get(&format!("{}/metrics", k.admin)).unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l == "kms_admin_connection_timeouts_total{kind=\"header\"} 4"),
        "{metrics}"
    );
}

#[test]
fn connections_over_the_cap_are_closed_at_once_while_kms_serves() {
    const CAP: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let k = Kmsd::start(
        &dir.path().join("d"),
        &[
            "--admin-max-connections",
            &CAP.to_string(),
            "--admin-header-timeout-ms",
            "60000",
            "--admin-idle-timeout-ms",
            "60000",
        ],
    );
    // The readiness check's connection ends with its answer; let its task finish.
    std::thread::sleep(Duration::from_millis(300));
    let mut held: Vec<TcpStream> = (0..CAP).map(|_| raw(&k)).collect();
    std::thread::sleep(Duration::from_millis(300));
    for (i, s) in held.iter_mut().enumerate() {
        let (closed, _) = wait_closed(s, Duration::from_millis(200));
        assert_eq!(closed, None, "held connection {i} was closed");
    }
    for i in 0..3 {
        let mut extra = raw(&k);
        let (closed, got) = wait_closed(&mut extra, SLACK);
        let took = closed.unwrap_or_else(|| panic!("extra connection {i} left open"));
        assert!(
            took < Duration::from_secs(2),
            "extra {i} closed after {took:?}"
        );
        assert!(got.is_empty(), "extra {i} got an answer");
    }
    // Admin full: KMS clients are answered all the same.
    kms_answers(&k);
    kms_answers(&k);

    drop(held);
    let deadline = Instant::now() + SLACK;
    loop {
        match http_get(&format!("{}/status", k.admin)) {
            Ok((200, _)) => break,
            other => assert!(
                Instant::now() < deadline,
                "admin API after release: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The three extras, plus any poll above that came before the server saw the releases.
    let refused = connections(&k)["admin_refused"].as_u64().unwrap();
    assert!(refused >= 3, "{refused}");
    let (_, metrics) = http_get(&format!("{}/metrics", k.admin)).unwrap();
    let series = format!("kms_admin_connections_refused_total {refused}");
    assert!(metrics.lines().any(|l| l == series), "{metrics}");
    // Logged once for the burst, not per connection.
    let log = k.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("admin connections refused"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains("admin_max_connections"),
        "{}",
        lines[0]
    );
}

#[test]
fn zero_admin_limits_are_refused_at_start() {
    for key in [
        "admin-header-timeout-ms",
        "admin-idle-timeout-ms",
        "admin-max-header-bytes",
        "admin-max-connections",
    ] {
        let out = Command::new(kmsd_bin())
            .args([&format!("--{key}"), "0", "--print-config"])
            .output()
            .expect("run kmsd");
        assert_eq!(out.status.code(), Some(2), "--{key} 0: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&key.replace('-', "_")), "--{key} 0: {err}");
    }
    let out = Command::new(kmsd_bin())
        .args(["--admin-max-connections", "8", "--print-config"])
        .output()
        .expect("run kmsd");
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("admin_max_connections = 8"), "{shown}");
    assert!(shown.contains("admin_idle_timeout_ms = 60000"), "{shown}");
}
