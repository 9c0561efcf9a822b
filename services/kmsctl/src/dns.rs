//! DNS SRV records of KMS hosts (`_vlmcs._tcp.<domain>`), as Windows clients use them.
//!
//! - `kmsctl dns render`: zone-file lines and an `nsupdate` script for a set of hosts.
//! - `kmsctl dns check`: resolves the records, orders the targets as a Windows client does
//!   (RFC 2782: ascending priority, weighted random order within a priority), resolves
//!   each target and tries a real activation against it.
//!
//! Publishing by RFC 2136 dynamic update is done by `kmsd` itself (`dns_publish`).

use crate::client::{ClientError, ConnectOptions, Connection, RequestSpec};
use anyhow::{bail, Context};
use kms_dns::{normalize_name, owner, parse_server, Secret, TsigKey, TsigSettings};
use kms_protocol::client::BindOffer;
use kms_protocol::products::Catalog;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;
use uuid::Uuid;

/// kmsctl's names of its TSIG flags, for the messages of [`kms_dns`].
const TSIG: TsigSettings = TsigSettings {
    key_name: "--key-name",
    secret: "--key-secret",
    secret_file: "--key-file",
    algorithm: "--key-algorithm",
};

/// How messages name a node's target (it comes from `--node` or from `--file`).
const TARGET: &str = "target (--node or --file)";

/// One KMS host as an SRV record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SrvNode {
    /// Host name clients connect to (A/AAAA records must exist for it).
    pub target: String,
    /// KMS TCP port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Lower is preferred.
    #[serde(default)]
    pub priority: u16,
    /// Relative share within one priority.
    #[serde(default)]
    pub weight: u16,
}

fn default_port() -> u16 {
    1688
}

/// `--file` contents.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodesFile {
    /// Domain (overridden by `--domain`).
    pub domain: Option<String>,
    /// TTL (overridden by `--ttl`).
    pub ttl: Option<u32>,
    /// The hosts.
    #[serde(default, rename = "node")]
    pub nodes: Vec<SrvNode>,
}

/// Parses `HOST:PORT:PRIORITY:WEIGHT` (port, priority and weight may be omitted from the
/// right: defaults 1688, 0, 0).
pub fn parse_node(s: &str) -> anyhow::Result<SrvNode> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() > 4 {
        bail!("--node {s:?}: expected HOST[:PORT[:PRIORITY[:WEIGHT]]]");
    }
    let num = |i: usize, what: &str, default: u16| -> anyhow::Result<u16> {
        match parts.get(i) {
            None => Ok(default),
            Some(v) => v.trim().parse::<u16>().map_err(|_| {
                anyhow::anyhow!("--node {s:?}: {what} {v:?} is not a number 0..=65535")
            }),
        }
    };
    let node = SrvNode {
        target: parts[0].to_string(),
        port: num(1, "port", 1688)?,
        priority: num(2, "priority", 0)?,
        weight: num(3, "weight", 0)?,
    };
    Ok(node)
}

/// Validates and normalizes a node list.
pub fn validate_nodes(nodes: &[SrvNode]) -> anyhow::Result<Vec<SrvNode>> {
    if nodes.is_empty() {
        bail!("no hosts: give --node HOST:PORT:PRIORITY:WEIGHT (repeatable) or --file");
    }
    let mut out: Vec<SrvNode> = Vec::new();
    for n in nodes {
        let target = normalize_name(TARGET, &n.target)?;
        if n.port == 0 {
            bail!("target {target}: port must be 1..=65535");
        }
        if out.iter().any(|o| o.target == target && o.port == n.port) {
            bail!("target {target} port {} listed twice", n.port);
        }
        out.push(SrvNode {
            target,
            ..n.clone()
        });
    }
    Ok(out)
}

/// Zone-file lines for the nodes (in priority, then weight order).
pub fn zone_lines(domain: &str, ttl: u32, nodes: &[SrvNode]) -> String {
    let mut sorted = nodes.to_vec();
    sorted.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then(b.weight.cmp(&a.weight))
            .then(a.target.cmp(&b.target))
    });
    let mut s = String::new();
    for n in &sorted {
        s.push_str(&kms_dns::srv_line(
            domain, ttl, n.priority, n.weight, n.port, &n.target,
        ));
        s.push('\n');
    }
    s
}

/// An `nsupdate` script replacing the whole `_vlmcs._tcp` RRset of `domain` with `nodes`.
pub fn nsupdate_script(
    domain: &str,
    zone: &str,
    ttl: u32,
    nodes: &[SrvNode],
    server: Option<SocketAddr>,
    key: Option<&TsigKey>,
) -> String {
    let mut s = String::new();
    if let Some(a) = server {
        s.push_str(&format!("server {} {}\n", a.ip(), a.port()));
    }
    s.push_str(&format!("zone {zone}.\n"));
    if let Some(k) = key {
        s.push_str(&format!(
            "key {}:{} {}\n",
            k.algorithm(),
            k.name(),
            k.secret_base64()
        ));
    }
    s.push_str(&format!("update delete {} SRV\n", owner(domain)));
    for line in zone_lines(domain, ttl, nodes).lines() {
        s.push_str(&format!("update add {line}\n"));
    }
    s.push_str("send\n");
    s
}

/// An SRV record as resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SrvRecord {
    /// Priority.
    pub priority: u16,
    /// Weight.
    pub weight: u16,
    /// Port.
    pub port: u16,
    /// Target host name (no trailing dot).
    pub target: String,
}

/// Orders SRV records as an RFC 2782 client does: ascending priority; within one
/// priority, repeated weighted random selection (the running-sum algorithm of RFC 2782,
/// with zero-weight records placed first so that they have a small chance too).
pub fn rfc2782_order<R: Rng + ?Sized>(records: &[SrvRecord], rng: &mut R) -> Vec<SrvRecord> {
    let mut priorities: Vec<u16> = records.iter().map(|r| r.priority).collect();
    priorities.sort_unstable();
    priorities.dedup();
    let mut out = Vec::with_capacity(records.len());
    for p in priorities {
        // Zero weights first, then the others, as RFC 2782 requires.
        let mut left: Vec<SrvRecord> = records
            .iter()
            .filter(|r| r.priority == p && r.weight == 0)
            .chain(records.iter().filter(|r| r.priority == p && r.weight > 0))
            .cloned()
            .collect();
        while !left.is_empty() {
            let total: u32 = left.iter().map(|r| r.weight as u32).sum();
            let pick = rng.random_range(0..=total);
            let mut running = 0u32;
            let mut chosen = left.len() - 1;
            for (i, r) in left.iter().enumerate() {
                running += r.weight as u32;
                if running >= pick {
                    chosen = i;
                    break;
                }
            }
            out.push(left.remove(chosen));
        }
    }
    out
}

/// Result of trying one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    /// The record.
    #[serde(flatten)]
    pub record: SrvRecord,
    /// Addresses the target resolved to.
    pub addresses: Vec<String>,
    /// The address that answered (or the last one tried).
    pub address: Option<String>,
    /// `activated`, `count` (answered, count below the minimum), `refused`,
    /// `not-authentic` or `unreachable` (also: name did not resolve).
    pub result: String,
    /// Current count the host reported.
    pub current_count: Option<u32>,
    /// Error text.
    pub error: Option<String>,
    /// True for the target a Windows client would use (the first that answers).
    pub used: bool,
}

impl TargetResult {
    /// The host answered the KMS request (whatever the answer).
    pub fn answered(&self) -> bool {
        self.result != "unreachable"
    }
}

fn resolver(server: Option<SocketAddr>) -> anyhow::Result<hickory_resolver::TokioResolver> {
    use hickory_resolver::config::{
        ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig,
    };
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    let mut builder = match server {
        Some(addr) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
            let mut b = hickory_resolver::TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], vec![ns]),
                TokioRuntimeProvider::default(),
            );
            b.options_mut().use_hosts_file = ResolveHosts::Never;
            b
        }
        None => hickory_resolver::TokioResolver::builder_tokio()
            .context("cannot read the system resolver configuration")?,
    };
    let opts = builder.options_mut();
    opts.timeout = Duration::from_secs(3);
    opts.attempts = 1;
    opts.cache_size = 0;
    Ok(builder.build()?)
}

/// Resolves the `_vlmcs._tcp` SRV records of `domain`.
pub async fn lookup_srv(
    domain: &str,
    server: Option<SocketAddr>,
) -> anyhow::Result<Vec<SrvRecord>> {
    let r = resolver(server)?;
    let name = owner(domain);
    let lookup = r
        .srv_lookup(name.as_str())
        .await
        .with_context(|| format!("no SRV records for {name}"))?;
    let mut out = Vec::new();
    for rec in lookup.answers() {
        if let hickory_resolver::proto::rr::RData::SRV(srv) = &rec.data {
            out.push(SrvRecord {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                target: srv.target.to_ascii().trim_end_matches('.').to_string(),
            });
        }
    }
    if out.is_empty() {
        bail!("no SRV records for {name}");
    }
    Ok(out)
}

/// What `dns check` does with each target.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Domain whose `_vlmcs._tcp` records are checked.
    pub domain: String,
    /// Nameserver to ask (default: the system's).
    pub server: Option<SocketAddr>,
    /// RNG seed for the weighted order (default: random).
    pub seed: Option<u64>,
    /// Product to request.
    pub product: String,
    /// Per-exchange timeout.
    pub timeout: Duration,
}

/// Resolves, orders and tries every target. Returns the targets in client order.
pub async fn check(opts: &CheckOptions) -> anyhow::Result<Vec<TargetResult>> {
    let domain = normalize_name("DOMAIN", &opts.domain)?;
    let records = lookup_srv(&domain, opts.server).await?;
    let mut rng = match opts.seed {
        Some(s) => rand::rngs::StdRng::seed_from_u64(s),
        None => rand::rngs::StdRng::from_os_rng(),
    };
    let ordered = rfc2782_order(&records, &mut rng);
    let resolver = resolver(opts.server)?;
    let catalog = Catalog::builtin();
    let choice = crate::products::resolve(&catalog, &opts.product)?;
    let mut out = Vec::new();
    let mut used = false;
    for record in ordered {
        let mut t = TargetResult {
            record: record.clone(),
            addresses: vec![],
            address: None,
            result: "unreachable".into(),
            current_count: None,
            error: None,
            used: false,
        };
        match resolver.lookup_ip(format!("{}.", record.target)).await {
            Ok(ips) => t.addresses = ips.iter().map(|ip| ip.to_string()).collect(),
            Err(e) => t.error = Some(format!("cannot resolve {}: {e}", record.target)),
        }
        for ip in t.addresses.clone() {
            let addr = SocketAddr::new(ip.parse()?, record.port).to_string();
            t.address = Some(addr.clone());
            let spec = RequestSpec {
                protocol: choice.protocol,
                application_id: choice.application_id,
                sku_id: choice.sku_id,
                kms_counted_id: choice.kms_counted_id,
                cmid: Uuid::new_v4(),
                machine_name: format!("kmsctl-{:08x}", rand::random::<u32>()),
                license_status: kms_protocol::LicenseState::InitialGrace.to_wire(),
                grace_minutes: 43200,
                required_count: choice.minimum_count,
                client_vm: false,
                request_time: kms_protocol::time::filetime_from_unix_ms(now_ms()),
            };
            let copts = ConnectOptions {
                addr: addr.clone(),
                offer: BindOffer {
                    ndr64: true,
                    btfn: true,
                },
                timeout: opts.timeout,
                source: None,
            };
            let res = match Connection::open(&copts).await {
                Ok(mut c) => c.activate(&spec.to_base(), opts.timeout).await,
                Err(e) => Err(e),
            };
            match res {
                Ok(r) => {
                    let count = r.response.current_count;
                    t.current_count = Some(count);
                    t.error = None;
                    if count >= spec.required_count {
                        t.result = "activated".into();
                    } else {
                        t.result = "count".into();
                        t.error = Some(format!(
                            "0xC004F038 count {count} is below the minimum {}",
                            spec.required_count
                        ));
                    }
                    break;
                }
                Err(e) => {
                    t.error = Some(e.to_string());
                    t.result = match e {
                        ClientError::Refused(_) => "refused",
                        ClientError::NotAuthentic(_) => "not-authentic",
                        _ => "unreachable",
                    }
                    .into();
                    if t.answered() {
                        break;
                    }
                }
            }
        }
        if !used && t.answered() {
            t.used = true;
            used = true;
        }
        out.push(t);
    }
    Ok(out)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Text table of a check.
pub fn render_check(domain: &str, results: &[TargetResult]) -> String {
    let mut s = format!(
        "{} — {} target(s) in client order\n",
        owner(domain),
        results.len()
    );
    s.push_str(&format!(
        "{:<4} {:>8} {:>6} {:<32} {:<24} {:<12} note\n",
        "use", "priority", "weight", "target", "address", "result"
    ));
    for t in results {
        let target = format!("{}:{}", t.record.target, t.record.port);
        s.push_str(&format!(
            "{:<4} {:>8} {:>6} {:<32} {:<24} {:<12} {}\n",
            if t.used { "->" } else { "" },
            t.record.priority,
            t.record.weight,
            target,
            t.address.as_deref().unwrap_or("-"),
            t.result,
            t.error.as_deref().unwrap_or("")
        ));
    }
    match results.iter().find(|t| t.used) {
        Some(t) => s.push_str(&format!(
            "A client would use {} ({}).\n",
            t.record.target,
            t.address.as_deref().unwrap_or("-")
        )),
        None => s.push_str("No target answers: clients cannot activate.\n"),
    }
    s
}

/// `kmsctl dns ...`
#[derive(Debug, clap::Subcommand)]
pub enum DnsCmd {
    /// Print `_vlmcs._tcp` SRV zone-file lines (and an nsupdate script) for KMS hosts.
    Render(RenderArgs),
    /// Resolve `_vlmcs._tcp.<domain>`, order the targets like a Windows client and try
    /// an activation against each.
    Check(CheckArgs),
}

/// `kmsctl dns render`.
#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// DNS domain clients search (records go to `_vlmcs._tcp.<domain>`).
    #[arg(long)]
    pub domain: Option<String>,
    /// Host `NAME:PORT:PRIORITY:WEIGHT` (repeatable; port/priority/weight default
    /// 1688/0/0).
    #[arg(long = "node")]
    pub nodes: Vec<String>,
    /// TOML file: optional `domain`, `ttl`, and `[[node]]` tables with `target`, `port`,
    /// `priority`, `weight`.
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// Record TTL, seconds (default 3600).
    #[arg(long)]
    pub ttl: Option<u32>,
    /// Print an nsupdate script instead (replaces the whole RRset with these records).
    #[arg(long)]
    pub nsupdate: bool,
    /// Zone to update (default: the domain).
    #[arg(long)]
    pub zone: Option<String>,
    /// DNS server for the nsupdate script: IP or IP:PORT.
    #[arg(long)]
    pub server: Option<String>,
    /// TSIG key name for the nsupdate script.
    #[arg(long)]
    pub key_name: Option<String>,
    /// TSIG secret (base64, or the text of a BIND key file).
    #[arg(long, conflicts_with = "key_file")]
    pub key_secret: Option<String>,
    /// File with the TSIG secret: base64, or a BIND key file (`tsig-keygen` output; its
    /// key name and algorithm must match --key-name and --key-algorithm).
    #[arg(long)]
    pub key_file: Option<std::path::PathBuf>,
    /// TSIG algorithm: hmac-sha256, hmac-sha384 or hmac-sha512 (hmac-md5 and hmac-sha1
    /// are refused).
    #[arg(long, default_value = "hmac-sha256")]
    pub key_algorithm: String,
}

/// `kmsctl dns check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// DNS domain (queries `_vlmcs._tcp.<domain>`).
    pub domain: String,
    /// Ask this nameserver only (IP or IP:PORT, UDP then TCP); default: the system's.
    #[arg(long)]
    pub server: Option<String>,
    /// Seed of the weighted random order (reproducible output).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Product to request.
    #[arg(long, default_value = "Windows 10 Enterprise")]
    pub product: String,
    /// Per-exchange timeout, ms.
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// Renders from arguments: the text to print.
pub fn render_cmd(a: &RenderArgs) -> anyhow::Result<String> {
    let file = match &a.file {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            toml::from_str::<NodesFile>(&text)
                .map_err(|e| anyhow::anyhow!("invalid nodes file {}: {e}", p.display()))?
        }
        None => NodesFile::default(),
    };
    let domain = a
        .domain
        .clone()
        .or(file.domain.clone())
        .context("--domain is required (or `domain` in --file)")?;
    let domain = normalize_name("--domain", &domain)?;
    let ttl = kms_dns::ttl("--ttl", a.ttl.or(file.ttl).unwrap_or(3600).into())?;
    let mut nodes = file.nodes.clone();
    for n in &a.nodes {
        nodes.push(parse_node(n)?);
    }
    let nodes = validate_nodes(&nodes)?;
    let zone_text = zone_lines(&domain, ttl, &nodes);
    let secret = match (&a.key_secret, &a.key_file) {
        (Some(s), _) => Some(Secret::Inline(s)),
        (None, Some(p)) => Some(Secret::File(p)),
        (None, None) => None,
    };
    let key = match (&a.key_name, secret) {
        (Some(n), Some(s)) => Some(TsigKey::new(&TSIG, n, &a.key_algorithm, s)?),
        (None, None) => None,
        _ => bail!("--key-name and --key-secret (or --key-file) go together"),
    };
    let server = a
        .server
        .as_deref()
        .map(|s| parse_server("--server", s))
        .transpose()?;
    let zone = match &a.zone {
        Some(z) => normalize_name("--zone", z)?,
        None => domain.clone(),
    };
    kms_dns::check_in_zone("--domain", &domain, "--zone", &zone)?;
    if a.nsupdate {
        // Only the script, so that `kmsctl dns render ... --nsupdate | nsupdate` works.
        return Ok(format!(
            "; replaces {} with {} record(s)\n{}",
            owner(&domain),
            nodes.len(),
            nsupdate_script(&domain, &zone, ttl, &nodes, server, key.as_ref())
        ));
    }
    if key.is_some() || server.is_some() || a.zone.is_some() {
        bail!("--server, --zone and --key-* only apply with --nsupdate");
    }
    Ok(zone_text)
}

/// Runs `kmsctl dns ...`; returns the exit code.
pub async fn run(cmd: DnsCmd) -> anyhow::Result<i32> {
    match cmd {
        DnsCmd::Render(a) => {
            print!("{}", render_cmd(&a)?);
            Ok(0)
        }
        DnsCmd::Check(a) => {
            let opts = CheckOptions {
                domain: a.domain.clone(),
                server: a
                    .server
                    .as_deref()
                    .map(|s| parse_server("--server", s))
                    .transpose()?,
                seed: a.seed,
                product: a.product.clone(),
                timeout: Duration::from_millis(a.timeout_ms),
            };
            let results = match check(&opts).await {
                Ok(r) => r,
                Err(e) => {
                    if a.json {
                        println!(
                            "{}",
                            serde_json::json!({"domain": a.domain, "targets": [], "error": format!("{e:#}")})
                        );
                    } else {
                        eprintln!("kmsctl: {e:#}");
                    }
                    return Ok(1);
                }
            };
            let ok = results.iter().any(TargetResult::answered);
            if a.json {
                let used = results.iter().find(|t| t.used).map(|t| &t.record.target);
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "domain": a.domain,
                        "owner": owner(a.domain.trim_end_matches('.')),
                        "targets": results,
                        "used": used,
                    }))?
                );
            } else {
                print!("{}", render_check(a.domain.trim_end_matches('.'), &results));
            }
            Ok(if ok { 0 } else { 1 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(p: u16, w: u16, t: &str) -> SrvRecord {
        SrvRecord {
            priority: p,
            weight: w,
            port: 1688,
            target: t.into(),
        }
    }

    #[test]
    fn priority_order_is_strict() {
        let recs = vec![
            rec(20, 100, "c"),
            rec(0, 1, "a1"),
            rec(10, 65535, "b"),
            rec(0, 50, "a2"),
            rec(0, 0, "a0"),
        ];
        for seed in 0..200 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let o = rfc2782_order(&recs, &mut rng);
            assert_eq!(o.len(), recs.len());
            let prios: Vec<u16> = o.iter().map(|r| r.priority).collect();
            assert_eq!(prios, vec![0, 0, 0, 10, 20], "seed {seed}");
        }
    }

    #[test]
    fn weighted_selection_distribution() {
        // 3:1 weights → the heavier one first about 75 % of the time.
        let recs = vec![rec(0, 75, "heavy"), rec(0, 25, "light")];
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let n = 20_000;
        let heavy_first = (0..n)
            .filter(|_| rfc2782_order(&recs, &mut rng)[0].target == "heavy")
            .count();
        let share = heavy_first as f64 / n as f64;
        assert!((0.72..0.78).contains(&share), "share {share}");
        // Same seed, same order.
        let a = rfc2782_order(&recs, &mut rand::rngs::StdRng::seed_from_u64(7));
        let b = rfc2782_order(&recs, &mut rand::rngs::StdRng::seed_from_u64(7));
        assert_eq!(a, b);
    }

    #[test]
    fn zero_weights_get_a_small_chance() {
        let recs = vec![rec(0, 0, "zero"), rec(0, 99, "big")];
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let n = 50_000;
        let zero_first = (0..n)
            .filter(|_| rfc2782_order(&recs, &mut rng)[0].target == "zero")
            .count();
        // Chance 1/100 (pick == 0 of 0..=99).
        assert!(zero_first > 0, "zero weight never chosen first");
        let share = zero_first as f64 / n as f64;
        assert!(share < 0.02, "share {share}");
        // All zero: uniform among them.
        let all_zero = vec![rec(0, 0, "x"), rec(0, 0, "y")];
        let x_first = (0..n)
            .filter(|_| rfc2782_order(&all_zero, &mut rng)[0].target == "x")
            .count();
        // pick is always 0 → the first listed wins; RFC 2782 leaves all-zero order free.
        assert!(x_first > 0);
    }

    #[test]
    fn render_zone_and_nsupdate() {
        let nodes = validate_nodes(&[
            parse_node("KMS2.campus.example.:1688:10:50").unwrap(),
            parse_node("kms1.campus.example:1688:0:100").unwrap(),
        ])
        .unwrap();
        let z = zone_lines("campus.example", 3600, &nodes);
        assert_eq!(
            z,
            "_vlmcs._tcp.campus.example. 3600 IN SRV 0 100 1688 kms1.campus.example.\n\
             _vlmcs._tcp.campus.example. 3600 IN SRV 10 50 1688 kms2.campus.example.\n"
        );
        let key = TsigKey::new(
            &TSIG,
            "kms-key",
            "HMAC-SHA256",
            Secret::Inline("c2VjcmV0c2VjcmV0"),
        )
        .unwrap();
        let s = nsupdate_script(
            "campus.example",
            "campus.example",
            3600,
            &nodes,
            Some(parse_server("--server", "10.0.0.53").unwrap()),
            Some(&key),
        );
        assert!(s.starts_with("server 10.0.0.53 53\nzone campus.example.\nkey hmac-sha256:kms-key c2VjcmV0c2VjcmV0\nupdate delete _vlmcs._tcp.campus.example. SRV\nupdate add _vlmcs._tcp.campus.example. 3600 IN SRV 0 100"), "{s}");
        assert!(s.ends_with("send\n"));
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert!(parse_node("kms1:99999").is_err());
        assert!(parse_node("kms1:1688:x").is_err());
        assert!(parse_node("a:1:2:3:4").is_err());
        assert!(validate_nodes(&[parse_node("10.0.0.1:1688").unwrap()]).is_err());
        assert!(validate_nodes(&[parse_node("bad name:1688").unwrap()]).is_err());
        assert!(validate_nodes(&[parse_node("-a.example:1688").unwrap()]).is_err());
        assert!(validate_nodes(&[parse_node("a.example:0").unwrap()]).is_err());
        assert!(validate_nodes(&[]).is_err());
        assert!(validate_nodes(&[
            parse_node("a.example").unwrap(),
            parse_node("A.example.").unwrap()
        ])
        .is_err());
        let e = validate_nodes(&[parse_node("bad name:1688").unwrap()]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("target (--node or --file) \"bad name\""),
            "{e}"
        );
    }

    #[test]
    fn nodes_file() {
        let f: NodesFile = toml::from_str(
            "domain = \"campus.example\"\nttl = 600\n[[node]]\ntarget = \"kms1.campus.example\"\npriority = 0\nweight = 100\n[[node]]\ntarget = \"kms2.campus.example\"\nport = 1700\npriority = 10\n",
        )
        .unwrap();
        assert_eq!(f.nodes.len(), 2);
        assert_eq!(f.nodes[0].port, 1688);
        assert_eq!(f.nodes[1].port, 1700);
        assert!(toml::from_str::<NodesFile>("[[node]]\ntarget = \"a\"\nprio = 1\n").is_err());
    }

    fn render_args() -> RenderArgs {
        RenderArgs {
            domain: Some("Campus.Example.".into()),
            nodes: vec!["kms1.campus.example".into()],
            file: None,
            ttl: None,
            nsupdate: true,
            zone: None,
            server: Some("[::1]".into()),
            key_name: Some("kms-key".into()),
            key_secret: Some("c2VjcmV0".into()),
            key_file: None,
            key_algorithm: "hmac-sha256".into(),
        }
    }

    #[test]
    fn render_applies_the_shared_rules() {
        let s = render_cmd(&render_args()).unwrap();
        assert!(s.contains("server ::1 53\nzone campus.example.\n"), "{s}");
        assert!(s.contains("key hmac-sha256:kms-key c2VjcmV0\n"), "{s}");
        for alg in ["hmac-md5", "hmac-sha1"] {
            let e = render_cmd(&RenderArgs {
                key_algorithm: alg.into(),
                ..render_args()
            })
            .unwrap_err()
            .to_string();
            assert!(
                e.starts_with(&format!("--key-algorithm {alg:?}: refused"))
                    && e.contains("hmac-sha256, hmac-sha384, hmac-sha512"),
                "{e}"
            );
        }
        let bad = |a: RenderArgs, start: &str| {
            let e = render_cmd(&a).unwrap_err().to_string();
            assert!(e.starts_with(start), "{e}");
        };
        bad(
            RenderArgs {
                ttl: Some(0),
                ..render_args()
            },
            "--ttl 0: must be 1..=2147483647",
        );
        bad(
            RenderArgs {
                server: Some("dns.example".into()),
                ..render_args()
            },
            "--server \"dns.example\"",
        );
        bad(
            RenderArgs {
                key_secret: Some("!!".into()),
                ..render_args()
            },
            "--key-secret: the TSIG secret is not valid base64",
        );
        bad(
            RenderArgs {
                zone: Some("other.example".into()),
                ..render_args()
            },
            "--domain campus.example is not inside --zone other.example",
        );
        bad(
            RenderArgs {
                key_secret: None,
                ..render_args()
            },
            "--key-name and --key-secret (or --key-file) go together",
        );
    }

    #[test]
    fn render_reads_a_bind_key_file() {
        use kms_dns::TsigAlgorithm;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms-key.conf");
        let text = kms_dns::bind_key_file("kms-key", TsigAlgorithm::HmacSha384, "c2VjcmV0");
        std::fs::write(&path, text).unwrap();
        let a = RenderArgs {
            key_secret: None,
            key_file: Some(path),
            key_algorithm: "hmac-sha384".into(),
            ..render_args()
        };
        let s = render_cmd(&a).unwrap();
        assert!(s.contains("key hmac-sha384:kms-key c2VjcmV0\n"), "{s}");
        let e = render_cmd(&RenderArgs {
            key_algorithm: "hmac-sha256".into(),
            ..a
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("--key-file: the key file says algorithm \"hmac-sha384\""),
            "{e}"
        );
    }
}
