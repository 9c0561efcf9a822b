//! Mutual TLS for the cluster port: [`TlsConfig`] holds the cluster CA and this node's
//! certificate chain and key, checked once when loaded.
//!
//! - Server side ([`TlsConfig::incoming`]): every connection must present a client
//!   certificate signed by the CA (client authentication is mandatory); handshakes run
//!   concurrently and a failed one is logged with the peer's address.
//! - Client side ([`TlsConfig::client_config`]): every outbound connection (Raft RPCs,
//!   forwarding, status and membership calls) presents this node's certificate and verifies
//!   the server against the CA, for the host part of the peer address (a DNS name or an IP
//!   address: the server's certificate needs a matching subjectAltName).
//!
//! Crypto is rustls with the ring provider; no aws-lc, no OpenSSL.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// How long a TLS handshake on the cluster port may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed handshake from the same address is logged at `warn` at most this often (a
/// rejected peer retries its Raft RPCs several times a second).
const HANDSHAKE_WARN_EVERY: Duration = Duration::from_secs(60);

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the {what} file {path}: {source}")]
    Read {
        /// Which file (CA certificate, certificate, private key).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("invalid {what} file {path}: {message}")]
    Pem {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The files parse but do not make a TLS configuration (e.g. the key does not belong to
    /// the certificate, the CA certificate is not a usable trust anchor).
    #[error("unusable TLS settings: {0}")]
    Config(String),
    /// A peer address has no host part usable as a TLS server name.
    #[error("cannot verify {addr:?}: {message}")]
    ServerName {
        /// The address.
        addr: String,
        /// Why.
        message: String,
    },
}

/// The cluster CA plus this node's (or operator's) certificate chain and private key.
/// Cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    inner: Arc<Inner>,
}

struct Inner {
    ca_pem: Vec<u8>,
    identity: Identity,
    server: Arc<ServerConfig>,
    /// Where the files came from (for logs).
    source: String,
    warned: Mutex<HashMap<IpAddr, Instant>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TlsConfig")
            .field("source", &self.inner.source)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn certs(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |message: String| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        message,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM CERTIFICATE block".into()));
    }
    Ok(certs)
}

impl TlsConfig {
    /// Reads and checks the CA certificate(s), the certificate chain and the private key
    /// (PEM files).
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<TlsConfig, TlsError> {
        let ca_pem = read("CA certificate", ca)?;
        let cert_pem = read("certificate", cert)?;
        let key_pem = read("private key", key)?;
        Self::from_pem_files(&ca_pem, &cert_pem, &key_pem, (ca, cert, key))
    }

    /// Like [`TlsConfig::load`] from PEM text already in memory.
    pub fn from_pem(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsConfig, TlsError> {
        let p = Path::new("(memory)");
        Self::from_pem_files(ca_pem, cert_pem, key_pem, (p, p, p))
    }

    fn from_pem_files(
        ca_pem: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
        (ca, cert, key): (&Path, &Path, &Path),
    ) -> Result<TlsConfig, TlsError> {
        let ca_certs = certs("CA certificate", ca, ca_pem)?;
        let chain = certs("certificate", cert, cert_pem)?;
        let private_key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
            what: "private key",
            path: key.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut roots = RootCertStore::empty();
        for c in ca_certs {
            roots
                .add(c)
                .map_err(|e| TlsError::Config(format!("CA certificate {}: {e}", ca.display())))?;
        }
        let roots = Arc::new(roots);
        let config_err = |e: rustls::Error| TlsError::Config(e.to_string());

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), private_key.clone_key())
            .map_err(|e| {
                TlsError::Config(format!(
                    "certificate {} with key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        // The same material as a client identity (checks the key once more, cheaply).
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config_err)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, private_key)
            .map_err(config_err)?;

        Ok(TlsConfig {
            inner: Arc::new(Inner {
                ca_pem: ca_pem.to_vec(),
                identity: Identity::from_pem(cert_pem, key_pem),
                server: Arc::new(server),
                source: format!("{} / {}", ca.display(), cert.display()),
                warned: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// tonic's client TLS settings for a connection to `addr` (`host:port`, `[v6]:port` or
    /// a URI): CA as the only trust anchor, this certificate as client identity, the host
    /// part as the name the server's certificate must carry.
    pub fn client_config(&self, addr: &str) -> Result<ClientTlsConfig, TlsError> {
        let host = host_of(addr);
        ServerName::try_from(host.to_string()).map_err(|e| TlsError::ServerName {
            addr: addr.to_string(),
            message: e.to_string(),
        })?;
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.inner.ca_pem))
            .identity(self.inner.identity.clone())
            .domain_name(host))
    }

    /// Accepts TCP connections on `listener` and yields those that completed the mutual TLS
    /// handshake, for `Server::serve_with_incoming*`. Stops accepting when the stream is
    /// dropped (the server shut down).
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(self.inner.server.clone());
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    _ = tx.closed() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // EMFILE and the like: back off instead of spinning.
                            tracing::warn!(error = %e, "cluster port: accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                let this = this.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(tls)).await;
                        }
                        Ok(Err(e)) => this.handshake_failed(peer, &e.to_string()),
                        Err(_) => this.handshake_failed(peer, "handshake timed out"),
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }

    fn handshake_failed(&self, peer: SocketAddr, error: &str) {
        let now = Instant::now();
        let warn = {
            let mut warned = self.inner.warned.lock().unwrap_or_else(|p| p.into_inner());
            warned.retain(|_, t| now.duration_since(*t) < HANDSHAKE_WARN_EVERY);
            match warned.get(&peer.ip()) {
                Some(_) => false,
                None => {
                    warned.insert(peer.ip(), now);
                    true
                }
            }
        };
        if warn {
            tracing::warn!(%peer, error, "cluster TLS handshake failed (repeats from this address are logged at debug for 60 s)");
        } else {
            tracing::debug!(%peer, error, "cluster TLS handshake failed");
        }
    }
}

/// The host part of a node address: `host:port` → `host`, `[::1]:port` → `::1`, and the
/// same after an optional `scheme://`.
pub fn host_of(addr: &str) -> &str {
    let rest = addr.split_once("://").map_or(addr, |(_, r)| r);
    let rest = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = rest.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    match rest.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_part_of_addresses() {
        assert_eq!(host_of("10.0.0.5:9689"), "10.0.0.5");
        assert_eq!(host_of("kms-0.kms-headless:9689"), "kms-0.kms-headless");
        assert_eq!(host_of("[fd00::5]:9689"), "fd00::5");
        assert_eq!(host_of("https://node1:9689"), "node1");
        assert_eq!(host_of("http://[::1]:1/x"), "::1");
        assert_eq!(host_of("node1"), "node1");
    }

    #[test]
    fn unreadable_and_invalid_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.crt");
        let e = TlsConfig::load(&missing, &missing, &missing).unwrap_err();
        assert!(
            matches!(
                e,
                TlsError::Read {
                    what: "CA certificate",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("missing.crt"), "{e}");

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = TlsConfig::load(&junk, &junk, &junk).unwrap_err();
        assert!(
            matches!(
                e,
                TlsError::Pem {
                    what: "CA certificate",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("junk.pem"), "{e}");
    }
}
