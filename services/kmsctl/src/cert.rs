//! `kmsctl cert ...`: a small private CA for the cluster's mutual TLS (rcgen, ring).
//!
//! - `ca`: a self-signed CA (`ca.crt`, `ca.key`), ECDSA P-256.
//! - `node`: a node certificate signed by the CA, usable as server and client certificate
//!   (EKU serverAuth + clientAuth), with the node's DNS names and IP addresses as SANs.
//! - `client`: an operator certificate (EKU clientAuth) for `kmsctl cluster ...`.
//!
//! Private keys are written with mode 0600 and never overwritten without `--force`.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// Errors of the cert commands.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A file exists and `--force` was not given.
    #[error("{0} exists (use --force to overwrite)")]
    Exists(PathBuf),
    /// Certificate generation or parsing failed.
    #[error("{context}: {source}")]
    Rcgen {
        /// What was being done.
        context: String,
        /// Cause.
        source: rcgen::Error,
    },
    /// Invalid argument.
    #[error("{0}")]
    Usage(String),
}

/// `kmsctl cert` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CertCmd {
    /// Create a cluster CA: DIR/ca.crt and DIR/ca.key.
    Ca {
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Common name of the CA.
        #[arg(long, default_value = "kms-cluster CA")]
        name: String,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Create a node certificate (server and client auth): DIR/NAME.crt and DIR/NAME.key.
    Node(LeafArgs),
    /// Create an operator client certificate (client auth) for `kmsctl cluster ...`:
    /// DIR/NAME.crt and DIR/NAME.key.
    Client(LeafArgs),
}

/// Arguments of `cert node` and `cert client`.
#[derive(Debug, clap::Args)]
pub struct LeafArgs {
    /// Directory holding ca.crt and ca.key.
    #[arg(long)]
    pub ca_dir: PathBuf,
    /// Certificate name: common name and file name stem.
    #[arg(long)]
    pub name: String,
    /// subjectAltName: a DNS name (wildcards like `*.kms-headless.ns.svc.cluster.local`
    /// allowed) or an IP address; repeatable. A node certificate needs the host part of
    /// every address peers and operators use for the node.
    #[arg(long = "san")]
    pub sans: Vec<String>,
    /// Output directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Validity in days.
    #[arg(long, default_value_t = 825)]
    pub days: u32,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// Cluster node: serverAuth + clientAuth.
    Node,
    /// Operator: clientAuth.
    Client,
}

fn rc(context: impl Into<String>) -> impl FnOnce(rcgen::Error) -> CertError {
    let context = context.into();
    move |source| CertError::Rcgen { context, source }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn validity(params: &mut CertificateParams, days: u32) -> Result<(), CertError> {
    if days == 0 {
        return Err(CertError::Usage("--days must be at least 1".into()));
    }
    let now = OffsetDateTime::now_utc();
    // A little slack for clocks that are slightly behind.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(i64::from(days));
    Ok(())
}

/// Writes `contents` to `path`; `private` files get mode 0600 (set at creation, so the key
/// is never readable by others, even briefly).
fn write_file(path: &Path, contents: &str, private: bool, force: bool) -> Result<(), CertError> {
    if !force && path.exists() {
        return Err(CertError::Exists(path.to_path_buf()));
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut f = options.open(path).map_err(io(path))?;
    #[cfg(unix)]
    if private {
        // An existing file (--force) keeps its old mode otherwise.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io(path))?;
    }
    f.write_all(contents.as_bytes()).map_err(io(path))?;
    Ok(())
}

fn check_free(paths: &[&Path], force: bool) -> Result<(), CertError> {
    if force {
        return Ok(());
    }
    match paths.iter().find(|p| p.exists()) {
        Some(p) => Err(CertError::Exists(p.to_path_buf())),
        None => Ok(()),
    }
}

/// Creates `out/ca.crt` and `out/ca.key`; returns their paths.
pub fn make_ca(
    out: &Path,
    name: &str,
    days: u32,
    force: bool,
) -> Result<(PathBuf, PathBuf), CertError> {
    std::fs::create_dir_all(out).map_err(io(out))?;
    let (crt, key_path) = (out.join("ca.crt"), out.join("ca.key"));
    check_free(&[&crt, &key_path], force)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "kms-cluster");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, days)?;
    let key = KeyPair::generate().map_err(rc("generating the CA key"))?;
    let cert = params.self_signed(&key).map_err(rc("signing the CA"))?;
    write_file(&key_path, &key.serialize_pem(), true, force)?;
    write_file(&crt, &cert.pem(), false, force)?;
    Ok((crt, key_path))
}

/// Creates `out/NAME.crt` and `out/NAME.key` signed by the CA in `ca_dir`; returns their
/// paths.
pub fn make_leaf(args: &LeafArgs, usage: Usage) -> Result<(PathBuf, PathBuf), CertError> {
    let name = args.name.trim();
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(CertError::Usage(format!(
            "--name {:?} must be a plain file name",
            args.name
        )));
    }
    if usage == Usage::Node && args.sans.is_empty() {
        return Err(CertError::Usage(
            "a node certificate needs at least one --san (the host part of its cluster address)"
                .into(),
        ));
    }
    let ca_crt_path = args.ca_dir.join("ca.crt");
    let ca_key_path = args.ca_dir.join("ca.key");
    let ca_pem = std::fs::read_to_string(&ca_crt_path).map_err(io(&ca_crt_path))?;
    let ca_key_pem = std::fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?;
    let ca_key =
        KeyPair::from_pem(&ca_key_pem).map_err(rc(format!("reading {}", ca_key_path.display())))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .map_err(rc(format!("reading {}", ca_crt_path.display())))?;

    std::fs::create_dir_all(&args.out).map_err(io(&args.out))?;
    let crt = args.out.join(format!("{name}.crt"));
    let key_path = args.out.join(format!("{name}.key"));
    check_free(&[&crt, &key_path], args.force)?;

    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rc("parameters"))?;
    for san in &args.sans {
        let san = san.trim().trim_start_matches('[').trim_end_matches(']');
        params.subject_alt_names.push(match san.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                san.to_string()
                    .try_into()
                    .map_err(rc(format!("--san {san:?}")))?,
            ),
        });
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "kms-cluster");
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match usage {
        Usage::Node => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, args.days)?;
    let key = KeyPair::generate().map_err(rc("generating the key"))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(rc("signing the certificate"))?;
    write_file(&key_path, &key.serialize_pem(), true, args.force)?;
    // The chain: the leaf only (peers trust the CA itself).
    write_file(&crt, &cert.pem(), false, args.force)?;
    Ok((crt, key_path))
}

/// Runs a `kmsctl cert` command; prints the files written.
pub fn run(cmd: CertCmd) -> Result<(), CertError> {
    let (crt, key) = match cmd {
        CertCmd::Ca {
            out,
            days,
            name,
            force,
        } => make_ca(&out, &name, days, force)?,
        CertCmd::Node(args) => make_leaf(&args, Usage::Node)?,
        CertCmd::Client(args) => make_leaf(&args, Usage::Client)?,
    };
    println!("wrote {} and {} (mode 0600)", crt.display(), key.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(dir: &Path, name: &str, sans: &[&str]) -> LeafArgs {
        LeafArgs {
            ca_dir: dir.join("ca"),
            name: name.into(),
            sans: sans.iter().map(|s| s.to_string()).collect(),
            out: dir.join("out"),
            days: 30,
            force: false,
        }
    }

    #[test]
    fn ca_node_and_client_files() {
        let dir = tempfile::tempdir().unwrap();
        let (ca_crt, ca_key) = make_ca(&dir.path().join("ca"), "test CA", 10, false).unwrap();
        assert!(std::fs::read_to_string(&ca_crt)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&ca_key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No silent overwrite of a CA.
        assert!(matches!(
            make_ca(&dir.path().join("ca"), "test CA", 10, false),
            Err(CertError::Exists(_))
        ));
        let (crt, key) = make_leaf(
            &leaf(dir.path(), "node1", &["node1.example", "10.0.0.5", "[::1]"]),
            Usage::Node,
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // The files make a usable mutual TLS configuration with the CA.
        kms_cluster::network::TlsConfig::load(&ca_crt, &crt, &key).unwrap();
        let (ccrt, ckey) = make_leaf(&leaf(dir.path(), "operator", &[]), Usage::Client).unwrap();
        kms_cluster::network::TlsConfig::load(&ca_crt, &ccrt, &ckey).unwrap();
        // A node certificate without SANs and a path as name are refused.
        assert!(matches!(
            make_leaf(&leaf(dir.path(), "node2", &[]), Usage::Node),
            Err(CertError::Usage(_))
        ));
        assert!(matches!(
            make_leaf(&leaf(dir.path(), "../x", &["a"]), Usage::Node),
            Err(CertError::Usage(_))
        ));
        // A key that does not belong to the certificate is refused when loading.
        let e = kms_cluster::network::TlsConfig::load(&ca_crt, &crt, &ckey).unwrap_err();
        assert!(e.to_string().contains("node1.crt"), "{e}");
    }
}
