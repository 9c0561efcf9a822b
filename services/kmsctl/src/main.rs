//! kmsctl binary: argument parsing and output; the work is in the library modules.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use kms_protocol::client::BindOffer;
use kms_protocol::products::Catalog;
use kms_protocol::LicenseState;
use kmsctl::bench::{self, BenchConfig};
use kmsctl::client::{ClientError, ConnectOptions, Connection, RequestSpec};
use kmsctl::{products, render};
use std::time::Duration;
use uuid::Uuid;

/// kmsctl — operate and test KMS hosts.
#[derive(Debug, Parser)]
#[command(name = "kmsctl", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Act as a KMS client: request activation and verify the answer (like slmgr /ato).
    Activate(ActivateArgs),
    /// Show a host's status like `slmgr /dlv`.
    Status(AdminArgs),
    /// List the client inventory (which machines activated).
    Clients(ClientsArgs),
    /// List the product catalog.
    Products {
        /// Product catalog extension file to include.
        #[arg(long)]
        catalog_file: Option<std::path::PathBuf>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Load generator: N activations at concurrency C, one connection each.
    Bench(BenchArgs),
    /// Cluster membership and Raft status (gRPC API of a node).
    Cluster(ClusterArgs),
    /// Certificates for the cluster's mutual TLS: a CA, node and operator certificates.
    #[command(subcommand)]
    Cert(kmsctl::cert::CertCmd),
    /// DNS SRV records (`_vlmcs._tcp`): render zone lines / nsupdate, check resolution.
    #[command(subcommand)]
    Dns(kmsctl::dns::DnsCmd),
    /// The host identity every ePID shares (hardware id, OS build): show or regenerate it.
    #[command(subcommand)]
    HostIdentity(HostIdentityCmd),
}

#[derive(Debug, Subcommand)]
enum HostIdentityCmd {
    /// Show the identity and each count group's ePID.
    Show(AdminArgs),
    /// Choose a new identity (new hardware id, the node's host_os) and new ePIDs for every
    /// count group, at once. Clients see the new ePID at their next renewal. Audited.
    Regenerate {
        #[command(flatten)]
        admin: AdminArgs,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, clap::Args)]
struct ClusterArgs {
    #[command(flatten)]
    tls: kmsctl::cluster::TlsArgs,
    #[command(subcommand)]
    cmd: ClusterCmd,
}

#[derive(Debug, Subcommand)]
enum ClusterCmd {
    /// Every member's role, term, leader and log/applied index.
    Status {
        /// Cluster gRPC address of any node.
        #[arg(long, default_value = "127.0.0.1:9689")]
        cluster: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Initialize a new cluster with these voters (once; nodes started with --peers do
    /// it by themselves).
    Init {
        /// Cluster gRPC address of the node to initialize.
        #[arg(long, default_value = "127.0.0.1:9689")]
        cluster: String,
        /// Members `ID=HOST:PORT,...`.
        #[arg(long)]
        members: String,
    },
    /// Add a node as a non-voting learner (it catches up by snapshot and log).
    AddLearner {
        /// Cluster gRPC address of any node.
        #[arg(long, default_value = "127.0.0.1:9689")]
        cluster: String,
        /// New node id.
        #[arg(long)]
        id: u64,
        /// New node's cluster address.
        #[arg(long)]
        addr: String,
    },
    /// Make a learner a voter.
    Promote {
        /// Cluster gRPC address of any node.
        #[arg(long, default_value = "127.0.0.1:9689")]
        cluster: String,
        /// Node id.
        #[arg(long)]
        id: u64,
    },
    /// Remove a node from the cluster.
    Remove {
        /// Cluster gRPC address of any node.
        #[arg(long, default_value = "127.0.0.1:9689")]
        cluster: String,
        /// Node id.
        #[arg(long)]
        id: u64,
    },
}

async fn cluster_cmd(args: ClusterArgs) -> anyhow::Result<i32> {
    use kmsctl::cluster as c;
    let tls = args.tls.load()?;
    let tls = tls.as_ref();
    match args.cmd {
        ClusterCmd::Status { cluster, json } => {
            let rows = c::status(&cluster, tls).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", c::render(&rows));
            }
        }
        ClusterCmd::Init { cluster, members } => {
            let members = c::parse_members(&members)?;
            c::client(&cluster, tls).initialize(members).await?;
            println!("initialized");
        }
        ClusterCmd::AddLearner { cluster, id, addr } => {
            let (leader, _) = c::leader_client(&cluster, tls).await?;
            leader.add_learner(id, &addr).await?;
            println!("node {id} added as learner at {addr}");
            if !c::learner_caught_up(&leader, id).await {
                eprintln!(
                    "warning: node {id} has not received the log yet; if it stays so, check \
                     that it runs, its address and (with TLS) that its certificate is from \
                     the cluster CA with a SAN for its host (the leader's log names the error)"
                );
            }
        }
        ClusterCmd::Promote { cluster, id } => {
            // The leader checks that the learner answers and has caught up, and refuses
            // with the reason otherwise (kms-cluster's membership module).
            let (leader, _) = c::leader_client(&cluster, tls).await?;
            leader.promote(id).await?;
            println!("node {id} is a voter");
        }
        ClusterCmd::Remove { cluster, id } => {
            let (leader, status) = c::leader_client(&cluster, tls).await?;
            let was_voter = status.voters().contains(&id);
            leader.remove(id).await?;
            let what = if was_voter { "voter" } else { "learner" };
            println!("node {id} ({what}) removed");
        }
    }
    Ok(0)
}

#[derive(Debug, clap::Args)]
struct Target {
    /// KMS host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// KMS port.
    #[arg(long, default_value_t = 1688)]
    port: u16,
    /// Per-exchange timeout, ms.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Local address to connect from (e.g. 127.0.0.2 to test a host's allowlist).
    #[arg(long)]
    source: Option<std::net::IpAddr>,
}

impl Target {
    fn addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, clap::Args)]
struct ActivateArgs {
    #[command(flatten)]
    target: Target,
    /// KMS protocol 4, 5 or 6 (default: the product's own).
    #[arg(long)]
    protocol: Option<u16>,
    /// Product: SKU name ("Windows 10 Enterprise"), group name ("office-2016") or GUID.
    #[arg(long, default_value = "Windows 10 Enterprise")]
    product: String,
    /// Override the SKU (activation) id.
    #[arg(long)]
    sku_id: Option<Uuid>,
    /// Override the KMS counted id.
    #[arg(long)]
    kms_id: Option<Uuid>,
    /// Override the application id.
    #[arg(long)]
    app_id: Option<Uuid>,
    /// Client machine id (default: random).
    #[arg(long)]
    cmid: Option<Uuid>,
    /// Machine name (default: kmsctl-<random>).
    #[arg(long)]
    machine_name: Option<String>,
    /// License state: unlicensed, licensed, initial-grace, additional-grace,
    /// non-genuine-grace, notification, extended-grace, or a number.
    #[arg(long, default_value = "initial-grace")]
    license_state: String,
    /// Minutes left in the license state.
    #[arg(long, default_value_t = 43200)]
    grace_minutes: u32,
    /// Minimum count the client requires (default: the product's).
    #[arg(long)]
    required_count: Option<u32>,
    /// Report as a virtual machine.
    #[arg(long)]
    client_vm: bool,
    /// Requests to send on the one connection.
    #[arg(long, default_value_t = 1)]
    requests: u32,
    /// Do not offer NDR64 in the bind.
    #[arg(long)]
    no_ndr64: bool,
    /// Do not offer bind-time feature negotiation.
    #[arg(long)]
    no_btfn: bool,
    /// Shift the request time by this many minutes (to test clock checks).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    time_offset_minutes: i64,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// Admin API base URL (`http://` is assumed when no scheme is given).
    #[arg(long, default_value = "http://127.0.0.1:9688")]
    admin: String,
    /// Admin API bearer token (kmsd's admin_token). Neither this nor --token-file given:
    /// KMSD_ADMIN_TOKEN, when set (as in a kmsd container).
    #[arg(long, env = "KMSCTL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the admin API bearer token (a trailing newline is ignored).
    #[arg(long, env = "KMSCTL_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

impl AdminArgs {
    /// The admin API base URL without a trailing slash; `host:port` means `http://host:port`.
    fn base(&self) -> String {
        admin_base(&self.admin)
    }

    /// The bearer token to send, if any.
    fn token(&self) -> anyhow::Result<Option<String>> {
        match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => {
                bail!("give --token (KMSCTL_TOKEN) or --token-file (KMSCTL_TOKEN_FILE), not both")
            }
            (Some(t), None) => Ok(Some(t.trim().to_string())),
            (None, Some(p)) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read the token file {}", p.display()))?;
                let t = text.trim();
                if t.is_empty() {
                    bail!("the token file {} is empty", p.display());
                }
                Ok(Some(t.to_string()))
            }
            (None, None) => Ok(std::env::var("KMSD_ADMIN_TOKEN")
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())),
        }
    }
}

/// Exit code when the admin API refused the request (401).
const EXIT_UNAUTHORIZED: i32 = 6;

/// The admin API answered 401.
#[derive(Debug)]
struct Unauthorized {
    url: String,
    sent_token: bool,
}

impl std::fmt::Display for Unauthorized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = if self.sent_token {
            "the admin API rejected the token (check --token, --token-file or KMSCTL_TOKEN)"
        } else {
            "the admin API requires a token: pass --token or --token-file, or set KMSCTL_TOKEN"
        };
        write!(f, "{}: 401 Unauthorized: {why}", self.url)
    }
}

impl std::error::Error for Unauthorized {}

#[derive(Debug, clap::Args)]
struct ClientsArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// Only this count group (windows, office2010, office).
    #[arg(long)]
    group: Option<String>,
    /// Only this product group (e.g. windows-10-11).
    #[arg(long)]
    product: Option<String>,
    /// Only clients seen within this many hours.
    #[arg(long)]
    seen_within_hours: Option<u64>,
    /// Only this client machine id (what `slmgr /dlv` shows as "Client Machine ID").
    #[arg(long)]
    cmid: Option<uuid::Uuid>,
    /// One machine by name, current or previous (ignoring case): shown in full, with its
    /// failure and name history.
    #[arg(long)]
    machine: Option<String>,
    /// Only machines in this lifecycle state: active, overdue (missed renewals), expiring
    /// (activation ends within the horizon), expired, failing (last request refused or
    /// below the minimum).
    #[arg(long, value_parser = ["active", "overdue", "expiring", "expired", "failing"])]
    state: Option<String>,
    /// Print CSV (for a spreadsheet) instead of a table.
    #[arg(long, conflicts_with = "json")]
    csv: bool,
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    #[command(flatten)]
    target: Target,
    /// Activations to run.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Pace: activations per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Protocol: 4, 5, 6 or `mix` (each product's own).
    #[arg(long, default_value = "6")]
    protocol: String,
    /// Products (repeatable; default Windows 10 Enterprise).
    #[arg(long)]
    product: Vec<String>,
    /// Write one JSON line per activation to this file.
    #[arg(long)]
    log: Option<std::path::PathBuf>,
    /// JSON output.
    #[arg(long)]
    json: bool,
    /// Draw CMIDs from a pool of this many machines (renewals) instead of fresh ones.
    #[arg(long)]
    cmid_pool: Option<u64>,
    /// License state every request reports (as for `activate`).
    #[arg(long, default_value = "initial-grace")]
    license_state: String,
    /// Client threads. One keeps the measuring instrument from competing with the host
    /// for cores when both run on one machine.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn exit_code(e: &ClientError) -> i32 {
    match e {
        ClientError::Refused(_) => 4,
        ClientError::NotAuthentic(_) => 5,
        _ => 1,
    }
}

fn parse_license_state(s: &str) -> anyhow::Result<LicenseState> {
    LicenseState::parse(s).with_context(|| format!("unknown license state {s:?}"))
}

async fn activate(a: ActivateArgs) -> anyhow::Result<i32> {
    let catalog = Catalog::builtin();
    let choice = products::resolve(&catalog, &a.product)?;
    let protocol = a.protocol.unwrap_or(choice.protocol);
    if !(4..=6).contains(&protocol) {
        bail!("--protocol must be 4, 5 or 6");
    }
    let license = parse_license_state(&a.license_state)?;
    let spec = RequestSpec {
        protocol,
        application_id: a.app_id.unwrap_or(choice.application_id),
        sku_id: a.sku_id.unwrap_or(choice.sku_id),
        kms_counted_id: a.kms_id.unwrap_or(choice.kms_counted_id),
        cmid: a.cmid.unwrap_or_else(Uuid::new_v4),
        machine_name: a
            .machine_name
            .clone()
            .unwrap_or_else(|| format!("kmsctl-{:08x}", rand::random::<u32>())),
        license_status: license.to_wire(),
        grace_minutes: a.grace_minutes,
        required_count: a.required_count.unwrap_or(choice.minimum_count),
        client_vm: a.client_vm,
        request_time: kms_protocol::time::filetime_from_unix_ms(
            (now_ms() as i64 + a.time_offset_minutes * 60_000).max(0) as u64,
        ),
    };
    let timeout = Duration::from_millis(a.target.timeout_ms);
    let opts = ConnectOptions {
        source: a.target.source,
        addr: a.target.addr(),
        offer: BindOffer {
            ndr64: !a.no_ndr64,
            btfn: !a.no_btfn,
        },
        timeout,
    };
    let product_name = choice.sku_name.clone().unwrap_or(choice.display.clone());
    let mut conn = match Connection::open(&opts).await {
        Ok(c) => c,
        Err(e) => {
            report_error(&a, &product_name, &e);
            return Ok(exit_code(&e));
        }
    };
    let mut code = 0;
    for _ in 0..a.requests.max(1) {
        let base = spec.to_base();
        match conn.activate(&base, timeout).await {
            Ok(r) => {
                let count = r.response.current_count;
                let insufficient = count < spec.required_count;
                if a.json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "activated": !insufficient,
                            "host": opts.addr,
                            "protocol": protocol,
                            "product": product_name,
                            "sku_id": spec.sku_id,
                            "kms_counted_id": spec.kms_counted_id,
                            "cmid": spec.cmid,
                            "machine_name": spec.machine_name,
                            "epid": r.response.epid,
                            "hwid": r.hwid.map(|h| h.iter().map(|b| format!("{b:02X}")).collect::<String>()),
                            "current_count": count,
                            "required_count": spec.required_count,
                            "activation_interval": r.response.activation_interval,
                            "renewal_interval": r.response.renewal_interval,
                            "ndr": format!("{:?}", r.ndr),
                            "error": insufficient.then_some("0xC004F038"),
                        })
                    );
                } else {
                    println!("Activating {product_name} ({}) ...", spec.sku_id);
                    if insufficient {
                        println!(
                            "Error: 0xC004F038 The count reported by your Key Management Service (KMS) is insufficient ({count} < {}).",
                            spec.required_count
                        );
                    } else {
                        println!("Product activated successfully.");
                    }
                    println!(
                        "    KMS host:             {} (protocol {protocol}.0, {:?})",
                        opts.addr, r.ndr
                    );
                    println!(
                        "    KMS host extended PID: {}",
                        kms_protocol::text::Escaped(&r.response.epid)
                    );
                    if let Some(h) = r.hwid {
                        println!(
                            "    KMS host hardware ID: {}",
                            h.iter().map(|b| format!("{b:02X}")).collect::<String>()
                        );
                    }
                    println!("    Client machine ID:    {}", spec.cmid);
                    println!(
                        "    Current count:        {count} (required {})",
                        spec.required_count
                    );
                    println!(
                        "    Activation interval:  {} minutes\n    Renewal interval:     {} minutes",
                        r.response.activation_interval, r.response.renewal_interval
                    );
                }
                if insufficient {
                    code = 3;
                }
            }
            Err(e) => {
                report_error(&a, &product_name, &e);
                return Ok(exit_code(&e));
            }
        }
    }
    Ok(code)
}

fn report_error(a: &ActivateArgs, product: &str, e: &ClientError) {
    if a.json {
        let hresult = match e {
            ClientError::Refused(hr) => Some(format!("{hr:#010X}")),
            _ => None,
        };
        println!(
            "{}",
            serde_json::json!({"activated": false, "host": a.target.addr(), "product": product, "error": e.to_string(), "kind": e.kind(), "hresult": hresult})
        );
    } else {
        eprintln!("Activating {product} ...\nError: {e}");
    }
}

async fn get_json<T: serde::de::DeserializeOwned>(
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<T> {
    admin_json(reqwest::Method::GET, url, token).await
}

/// One admin API call answering JSON; 401 becomes [`Unauthorized`], another failure
/// status an error carrying the server's message.
async fn admin_json<T: serde::de::DeserializeOwned>(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<T> {
    let mut req = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?
        .request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach the admin API at {url}"))?;
    if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
        return Err(Unauthorized {
            url: url.to_string(),
            sent_token: token.is_some(),
        }
        .into());
    }
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(AdminAnswered {
            url: url.to_string(),
            status,
            body: body.trim().to_string(),
        }
        .into());
    }
    resp.json()
        .await
        .with_context(|| format!("bad JSON from {url}"))
}

async fn host_identity(cmd: HostIdentityCmd) -> anyhow::Result<i32> {
    let (admin, regenerate, yes) = match cmd {
        HostIdentityCmd::Show(a) => (a, false, false),
        HostIdentityCmd::Regenerate { admin, yes } => (admin, true, yes),
    };
    let token = admin.token()?;
    let (method, url) = if regenerate {
        if !yes && !confirm(
            "Replace the host identity and every ePID (clients see them at their next renewal)?",
        )? {
            eprintln!("not regenerated");
            return Ok(1);
        }
        (
            reqwest::Method::POST,
            format!("{}/host-identity/regenerate", admin.base()),
        )
    } else {
        (
            reqwest::Method::GET,
            format!("{}/host-identity", admin.base()),
        )
    };
    let r: kms_api::HostIdentityReport = admin_json(method, &url, token.as_deref()).await?;
    if admin.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", render::host_identity(&r));
    }
    Ok(0)
}

/// Asks `question` on the terminal; true for an answer starting with y.
fn confirm(question: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead, Read, Write};
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().take(64).read_line(&mut line)?;
    Ok(line.trim().to_ascii_lowercase().starts_with('y'))
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.cmd {
        Cmd::Activate(a) => activate(a).await,
        Cmd::Cluster(c) => cluster_cmd(c).await,
        Cmd::Cert(c) => {
            kmsctl::cert::run(c)?;
            Ok(0)
        }
        Cmd::Dns(c) => kmsctl::dns::run(c).await,
        Cmd::HostIdentity(c) => host_identity(c).await,
        Cmd::Status(a) => {
            let url = format!("{}/status", a.base());
            let token = a.token()?;
            if a.json {
                let v: serde_json::Value = get_json(&url, token.as_deref()).await?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let r: kms_api::StatusReport = get_json(&url, token.as_deref()).await?;
                print!("{}", render::status(&r));
            }
            Ok(0)
        }
        Cmd::Clients(c) => {
            let mut url = reqwest::Url::parse(&format!("{}/clients", c.admin.base()))
                .with_context(|| format!("--admin {:?} is not a URL", c.admin.base()))?;
            {
                let mut q = url.query_pairs_mut();
                if let Some(g) = &c.group {
                    q.append_pair("group", g);
                }
                if let Some(p) = &c.product {
                    q.append_pair("product", p);
                }
                if let Some(h) = c.seen_within_hours {
                    let since = now_ms().saturating_sub(h * 3_600_000);
                    q.append_pair("since_ms", &since.to_string());
                }
                if let Some(id) = c.cmid {
                    q.append_pair("cmid", &id.to_string());
                }
                if let Some(m) = &c.machine {
                    q.append_pair("machine", m);
                }
                if let Some(st) = &c.state {
                    q.append_pair("state", st);
                }
            }
            let url = url.to_string();
            let token = c.admin.token()?;
            let list: Vec<kms_api::ClientInfo> = get_json(&url, token.as_deref()).await?;
            if c.admin.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if c.csv {
                print!("{}", render::clients_csv(&list));
            } else if c.machine.is_some() || c.cmid.is_some() {
                print!("{}", render::client_details(&list));
            } else {
                print!("{}", render::clients(&list));
            }
            Ok(0)
        }
        Cmd::Products { catalog_file, json } => {
            let mut catalog = Catalog::builtin();
            if let Some(p) = catalog_file {
                let text = std::fs::read_to_string(&p)
                    .with_context(|| format!("cannot read {}", p.display()))?;
                catalog.extend_from_toml(&text)?;
            }
            let rows: Vec<serde_json::Value> = catalog
                .groups()
                .map(|g| {
                    serde_json::json!({
                        "group": g.name, "display": g.display, "kms_counted_id": g.kms_counted_id,
                        "application_id": g.application.id(), "count_group": g.count_group,
                        "minimum_count": g.minimum_count, "protocol": g.protocol,
                        "skus": catalog.skus_of(&g.name).map(|s| serde_json::json!({"name": s.name, "sku_id": s.sku_id})).collect::<Vec<_>>(),
                    })
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for g in catalog.groups() {
                    println!(
                        "{:<24} {:<44} min {:>2}  v{}  count group {:<10} {}",
                        g.name,
                        g.display,
                        g.minimum_count,
                        g.protocol,
                        g.count_group,
                        g.kms_counted_id
                    );
                    for s in catalog.skus_of(&g.name) {
                        println!("    {:<52} {}", s.name, s.sku_id);
                    }
                }
            }
            Ok(0)
        }
        Cmd::Bench(b) => {
            let catalog = Catalog::builtin();
            let names = if b.product.is_empty() {
                vec!["Windows 10 Enterprise".to_string()]
            } else {
                b.product.clone()
            };
            let license = parse_license_state(&b.license_state)?;
            let mut templates = Vec::new();
            for n in &names {
                let c = products::resolve(&catalog, n)?;
                let protocols: Vec<u16> = match b.protocol.as_str() {
                    "mix" => vec![4, 5, 6],
                    p => vec![p.parse().context("--protocol must be 4, 5, 6 or mix")?],
                };
                for protocol in protocols {
                    if !(4..=6).contains(&protocol) {
                        bail!("--protocol must be 4, 5, 6 or mix");
                    }
                    templates.push(RequestSpec {
                        protocol,
                        application_id: c.application_id,
                        sku_id: c.sku_id,
                        kms_counted_id: c.kms_counted_id,
                        cmid: Uuid::nil(),
                        machine_name: String::new(),
                        license_status: license.to_wire(),
                        grace_minutes: 43200,
                        required_count: c.minimum_count,
                        client_vm: false,
                        request_time: 0,
                    });
                }
            }
            let report = bench::run(BenchConfig {
                addr: b.target.addr(),
                source: b.target.source,
                count: b.count,
                concurrency: b.concurrency,
                rate: b.rate,
                templates,
                timeout: Duration::from_millis(b.target.timeout_ms),
                log: b.log,
                cmid_pool: b.cmid_pool,
            })
            .await;
            if b.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(if report.failed > 0 { 1 } else { 0 })
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let threads = match &cli.cmd {
        Cmd::Bench(b) => b.threads.max(1),
        _ => 1,
    };
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    }
    .enable_all()
    .build()
    .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("kmsctl: {e:#}");
            let code = failure_exit_code(&e);
            std::process::exit(code);
        }
    }
}

/// The exit code of a failed command, the same for every subcommand: 6 refused by the admin
/// API (401), 1 the host or node could not be reached or answered with an error (as
/// `activate`'s network errors), 2 anything else (usage, bad files).
fn failure_exit_code(e: &anyhow::Error) -> i32 {
    if e.is::<Unauthorized>() {
        return EXIT_UNAUTHORIZED;
    }
    let network = e.chain().any(|cause| {
        cause
            .downcast_ref::<reqwest::Error>()
            .is_some_and(|r| !r.is_builder())
            || cause.is::<kms_cluster::network::NetError>()
            || cause.is::<AdminAnswered>()
    });
    if network {
        1
    } else {
        2
    }
}

/// The admin API answered with an error status other than 401.
#[derive(Debug, thiserror::Error)]
#[error("{url} answered {status}: {body}")]
struct AdminAnswered {
    url: String,
    status: reqwest::StatusCode,
    body: String,
}

/// `admin` as a base URL: trailing slashes dropped, `http://` added when it names no scheme.
fn admin_base(admin: &str) -> String {
    let trimmed = admin.trim().trim_end_matches('/');
    if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    }
}

#[cfg(test)]
mod tests {
    use super::admin_base;

    #[test]
    fn an_admin_address_without_a_scheme_means_http() {
        assert_eq!(admin_base("127.0.0.1:9688"), "http://127.0.0.1:9688");
        assert_eq!(admin_base("http://h:9688/"), "http://h:9688");
        assert_eq!(
            admin_base("https://kms.example:443"),
            "https://kms.example:443"
        );
        assert_eq!(admin_base("[::1]:9688"), "http://[::1]:9688");
    }
}
