//! A real BIND 9 (`named`) on a loopback port, authoritative for one test zone that
//! accepts dynamic updates signed with a TSIG key; plus `dig`, `nsupdate` and
//! `named-checkzone` helpers. Needs Debian's `bind9`, `bind9-utils`, `bind9-dnsutils`.

use crate::harness::free_port;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Name of the test TSIG key.
pub const KEY_NAME: &str = "kms-key";
/// Its secret (base64 of 32 fixed bytes; a test fixture, not a real key).
pub const KEY_SECRET: &str = "a21zLWNsdXN0ZXItdGVzdC10c2lnLWtleS0zMmJ5dGU=";

/// Path of a BIND tool, whether in PATH or in /usr/sbin (not in a user's PATH).
pub fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(name)
}

/// True when `named`, `nsupdate`, `dig` and `named-checkzone` are installed.
pub fn available() -> bool {
    ["named", "nsupdate", "dig", "named-checkzone"]
        .iter()
        .all(|t| tool(t).exists())
}

/// A running `named`.
pub struct Bind {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Port it listens on (UDP and TCP, 127.0.0.1).
    pub port: u16,
    /// The zone it serves.
    pub zone: String,
}

impl Bind {
    /// Starts `named -g` for `zone` with the extra zone-file lines `records` (relative
    /// names, e.g. `node1 IN A 127.0.0.1`), and waits until it answers.
    pub fn start(zone: &str, records: &[&str]) -> Bind {
        assert!(
            available(),
            "BIND 9 is not installed (apt-get install bind9 bind9-utils bind9-dnsutils)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let port = free_udp_tcp_port();
        std::fs::write(
            d.join("key.conf"),
            kms_dns::bind_key_file(KEY_NAME, kms_dns::TsigAlgorithm::HmacSha256, KEY_SECRET),
        )
        .expect("key");
        let mut zone_text = format!(
            "$TTL 300\n@ IN SOA ns1.{zone}. hostmaster.{zone}. 1 3600 600 86400 300\n@ IN NS ns1.{zone}.\nns1 IN A 127.0.0.1\n"
        );
        for r in records {
            zone_text.push_str(r);
            zone_text.push('\n');
        }
        std::fs::write(d.join("zone.db"), zone_text).expect("zone");
        let conf = format!(
            r#"include "{dir}/key.conf";
options {{
    directory "{dir}";
    pid-file "{dir}/named.pid";
    session-keyfile "{dir}/session.key";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
}};
controls {{ }};
zone "{zone}" {{
    type primary;
    file "{dir}/zone.db";
    allow-update {{ key {KEY_NAME}; }};
}};
"#,
            dir = d.display()
        );
        std::fs::write(d.join("named.conf"), conf).expect("conf");
        let log = std::fs::File::create(d.join("named.log")).expect("log");
        // named runs as the current user; as root it stays root (no -u), which is fine
        // for a throwaway test server in a temp directory.
        let child = Command::new(tool("named"))
            .arg("-g")
            .arg("-c")
            .arg(d.join("named.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn named");
        let mut b = Bind {
            child: Some(child),
            dir,
            port,
            zone: zone.to_string(),
        };
        b.wait_ready();
        b
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.dig(&["SOA", &self.zone.clone()]);
            if out.contains("hostmaster") {
                return;
            }
            if let Some(s) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("named exited ({s}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "named did not answer:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `IP:PORT` of the server.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The temp directory (config, zone, journal, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// named's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }

    /// Path of the key file (`nsupdate -k`).
    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("key.conf")
    }

    /// Runs `dig @127.0.0.1 -p PORT +short <args>`; returns stdout.
    pub fn dig(&self, args: &[&str]) -> String {
        let out = Command::new(tool("dig"))
            .arg("@127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string())
            .args(["+short", "+time=2", "+tries=1"])
            .args(args)
            .output()
            .expect("run dig");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SRV records at `_vlmcs._tcp.<zone>`, sorted lines `PRIO WEIGHT PORT TARGET`.
    pub fn srv(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .dig(&["SRV", &format!("_vlmcs._tcp.{}.", self.zone)])
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    /// Polls [`Bind::srv`] until `pred` holds (or panics after `secs`).
    pub fn wait_srv(&self, secs: u64, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.srv();
            if pred(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "SRV records never matched; last: {v:?}\nnamed log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `nsupdate -k <key file>` with `script` on stdin.
    pub fn nsupdate(&self, script: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(tool("nsupdate"))
            .arg("-k")
            .arg(self.key_file())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nsupdate");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write script");
        child.wait_with_output().expect("nsupdate output")
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A port free for both UDP and TCP on 127.0.0.1.
fn free_udp_tcp_port() -> u16 {
    for _ in 0..50 {
        let p = free_port();
        if UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    panic!("no free UDP+TCP port");
}

/// Runs `named-checkzone ZONE FILE`.
pub fn checkzone(zone: &str, file: &Path) -> Output {
    Command::new(tool("named-checkzone"))
        .arg(zone)
        .arg(file)
        .output()
        .expect("run named-checkzone")
}
