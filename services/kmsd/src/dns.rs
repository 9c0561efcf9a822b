//! DNS publishing: this node's `_vlmcs._tcp.<domain>` SRV record, kept in the zone by
//! RFC 2136 dynamic updates signed with TSIG, as a Microsoft KMS host publishes itself.
//!
//! On start (after the listeners are bound) the node deletes any older record of its own
//! target (other priority/weight/port) and adds its current one; it re-publishes every
//! ttl/2 (at most every 10 minutes) and withdraws its record (delete by rdata) on a
//! graceful shutdown. Other nodes' records are never touched. Failures are logged and
//! retried; they never stop the daemon.

use crate::config::{Config, ConfigError};
use base64::Engine as _;
use hickory_net::client::{Client, ClientHandle};
use hickory_net::proto::op::ResponseCode;
use hickory_net::proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_net::proto::rr::rdata::SRV;
use hickory_net::proto::rr::{DNSClass, Name, RData, Record, RecordSet, RecordType, TSigner};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;
use tokio::sync::watch;

/// Timeout of one update exchange (UDP, with the client's own retries).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait between two publications.
const MAX_REFRESH: Duration = Duration::from_secs(600);
/// Retry backoff after a failure: first and longest wait.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Parses `IP` or `IP:PORT` (`[v6]:PORT`), port 53 by default.
pub fn parse_server(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    s.parse::<SocketAddr>().ok().or_else(|| {
        s.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

fn parse_name(key: &'static str, s: &str) -> Result<Name, ConfigError> {
    let t = s.trim().trim_end_matches('.');
    if t.is_empty() {
        return Err(invalid(key, "must not be empty"));
    }
    if t.parse::<IpAddr>().is_ok() {
        return Err(invalid(
            key,
            format!("{s:?} must be a DNS name, not an IP address"),
        ));
    }
    if !t.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }) {
        return Err(invalid(
            key,
            format!("{s:?} is not a valid DNS name (letters, digits, '-', '_', dots)"),
        ));
    }
    let mut n = Name::from_ascii(t).map_err(|e| invalid(key, format!("{s:?}: {e}")))?;
    n.set_fqdn(true);
    Ok(n.to_lowercase())
}

fn algorithm(s: &str) -> Result<TsigAlgorithm, ConfigError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "hmac-sha256" => Ok(TsigAlgorithm::HmacSha256),
        "hmac-sha384" => Ok(TsigAlgorithm::HmacSha384),
        "hmac-sha512" => Ok(TsigAlgorithm::HmacSha512),
        other => Err(invalid(
            "dns_tsig_algorithm",
            format!("{other:?}: expected hmac-sha256, hmac-sha384 or hmac-sha512"),
        )),
    }
}

fn decode_secret(key: &'static str, text: &str) -> Result<Vec<u8>, ConfigError> {
    // Accept a BIND key file (`secret "...";`) as well as the bare base64 secret.
    let b64 = match text.find("secret") {
        Some(i) => text[i + 6..]
            .split('"')
            .nth(1)
            .ok_or_else(|| invalid(key, "BIND key file without a quoted secret"))?,
        None => text.trim(),
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| invalid(key, format!("not valid base64: {e}")))?;
    if bytes.is_empty() {
        return Err(invalid(key, "empty secret"));
    }
    Ok(bytes)
}

/// Checks the `dns_*` settings (called by [`Config::validate`]).
pub fn validate(cfg: &Config) -> Result<(), ConfigError> {
    if cfg.dns_ttl == 0 || cfg.dns_ttl > i32::MAX as u32 {
        return Err(invalid("dns_ttl", "must be 1..=2147483647 seconds"));
    }
    algorithm(&cfg.dns_tsig_algorithm)?;
    if let Some(s) = &cfg.dns_server {
        if parse_server(s).is_none() {
            return Err(invalid(
                "dns_server",
                format!("{s:?} is not IP or IP:PORT (e.g. 10.0.0.53 or 10.0.0.53:53)"),
            ));
        }
    }
    if cfg.dns_tsig_secret.is_some() && cfg.dns_tsig_secret_file.is_some() {
        return Err(invalid(
            "dns_tsig_secret",
            "give dns_tsig_secret or dns_tsig_secret_file, not both",
        ));
    }
    if let Some(s) = &cfg.dns_tsig_secret {
        decode_secret("dns_tsig_secret", s)?;
    }
    if let Some(n) = &cfg.dns_tsig_key_name {
        parse_name("dns_tsig_key_name", n)?;
    }
    let has_secret = cfg.dns_tsig_secret.is_some() || cfg.dns_tsig_secret_file.is_some();
    if cfg.dns_tsig_key_name.is_some() != has_secret {
        return Err(invalid(
            "dns_tsig_key_name",
            "dns_tsig_key_name and a secret (dns_tsig_secret or dns_tsig_secret_file) go together",
        ));
    }
    if !cfg.dns_publish {
        return Ok(());
    }
    if cfg.dns_server.is_none() {
        return Err(invalid("dns_server", "required when dns_publish is on"));
    }
    let zone = parse_name(
        "dns_zone",
        cfg.dns_zone
            .as_deref()
            .ok_or_else(|| invalid("dns_zone", "required when dns_publish is on"))?,
    )?;
    let domain = match &cfg.dns_domain {
        Some(d) => parse_name("dns_domain", d)?,
        None => zone.clone(),
    };
    if !zone.zone_of(&domain) {
        return Err(invalid(
            "dns_domain",
            format!("{domain} is not inside dns_zone {zone}"),
        ));
    }
    parse_name(
        "dns_target",
        cfg.dns_target
            .as_deref()
            .ok_or_else(|| invalid("dns_target", "required when dns_publish is on"))?,
    )?;
    Ok(())
}

/// What to publish where.
#[derive(Clone)]
pub struct Publication {
    /// DNS server taking updates.
    pub server: SocketAddr,
    /// Zone.
    pub zone: Name,
    /// `_vlmcs._tcp.<domain>.`
    pub owner: Name,
    /// This node's record.
    pub srv: SRV,
    /// TTL.
    pub ttl: u32,
    /// TSIG signer, if any.
    pub signer: Option<TSigner>,
}

impl std::fmt::Debug for Publication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publication")
            .field("server", &self.server)
            .field("zone", &self.zone.to_string())
            .field("record", &self.record_text())
            .field(
                "tsig",
                &self.signer.as_ref().map(|s| s.signer_name().to_string()),
            )
            .finish()
    }
}

impl Publication {
    /// Builds the publication from a validated configuration and the KMS port.
    pub fn from_config(cfg: &Config, port: u16) -> Result<Self, ConfigError> {
        validate(cfg)?;
        let server = cfg
            .dns_server
            .as_deref()
            .and_then(parse_server)
            .ok_or_else(|| invalid("dns_server", "required when dns_publish is on"))?;
        let zone = parse_name("dns_zone", cfg.dns_zone.as_deref().unwrap_or_default())?;
        let domain = match &cfg.dns_domain {
            Some(d) => parse_name("dns_domain", d)?,
            None => zone.clone(),
        };
        let owner = Name::from_ascii("_vlmcs._tcp")
            .and_then(|n| n.append_domain(&domain))
            .map_err(|e| invalid("dns_domain", e.to_string()))?;
        let target = parse_name("dns_target", cfg.dns_target.as_deref().unwrap_or_default())?;
        let signer = match &cfg.dns_tsig_key_name {
            None => None,
            Some(name) => {
                let secret = match (&cfg.dns_tsig_secret, &cfg.dns_tsig_secret_file) {
                    (Some(s), _) => decode_secret("dns_tsig_secret", s)?,
                    (None, Some(p)) => read_secret_file(p)?,
                    (None, None) => unreachable!("validated"),
                };
                Some(
                    TSigner::new(
                        secret,
                        algorithm(&cfg.dns_tsig_algorithm)?,
                        parse_name("dns_tsig_key_name", name)?,
                        300,
                    )
                    .map_err(|e| invalid("dns_tsig_algorithm", e.to_string()))?,
                )
            }
        };
        Ok(Self {
            server,
            zone,
            owner,
            srv: SRV::new(cfg.dns_priority, cfg.dns_weight, port, target),
            ttl: cfg.dns_ttl,
            signer,
        })
    }

    /// The record as a zone-file line.
    pub fn record_text(&self) -> String {
        format!(
            "{} {} IN SRV {} {} {} {}",
            self.owner,
            self.ttl,
            self.srv.priority,
            self.srv.weight,
            self.srv.port,
            self.srv.target
        )
    }

    fn record(&self, srv: SRV) -> Record {
        let mut r = Record::from_rdata(self.owner.clone(), self.ttl, RData::SRV(srv));
        r.dns_class = DNSClass::IN;
        r
    }

    fn client(&self) -> Client<TokioRuntimeProvider> {
        let stream = UdpClientStream::builder(self.server, TokioRuntimeProvider::default())
            .with_timeout(Some(EXCHANGE_TIMEOUT))
            .with_signer(self.signer.clone())
            .build();
        let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
        tokio::spawn(bg);
        client
    }

    /// The SRV records currently at the owner name whose target is this node's.
    async fn own_records(
        &self,
        client: &mut Client<TokioRuntimeProvider>,
    ) -> Result<Vec<SRV>, String> {
        let resp = tokio::time::timeout(
            EXCHANGE_TIMEOUT * 2,
            client.query(self.owner.clone(), DNSClass::IN, RecordType::SRV),
        )
        .await
        .map_err(|_| "query timed out".to_string())?
        .map_err(|e| format!("query failed: {e}"))?;
        let code = resp.metadata.response_code;
        if code != ResponseCode::NoError && code != ResponseCode::NXDomain {
            return Err(format!("query answered {code}"));
        }
        Ok(resp
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) if s.target.to_lowercase() == self.srv.target => Some(s.clone()),
                _ => None,
            })
            .collect())
    }

    async fn update(
        &self,
        what: &str,
        fut: impl std::future::Future<
            Output = Result<hickory_net::proto::op::DnsResponse, hickory_net::NetError>,
        >,
    ) -> Result<(), String> {
        let resp = tokio::time::timeout(EXCHANGE_TIMEOUT * 2, fut)
            .await
            .map_err(|_| format!("{what}: no answer from {}", self.server))?
            .map_err(|e| {
                let e = e.to_string();
                // BIND answers a bad signature with an unsigned TSIG (BADSIG/BADKEY, empty
                // MAC), which the client reports as a TSIG protocol error.
                if self.signer.is_some() && e.contains("TSIG") {
                    format!(
                        "{what}: {} refused the TSIG signature (BADSIG/BADKEY: wrong key name, \
                         secret or algorithm, or clock skew over 5 minutes) [{e}]",
                        self.server
                    )
                } else {
                    format!("{what}: {e}")
                }
            })?;
        let code = resp.metadata.response_code;
        if code != ResponseCode::NoError {
            return Err(format!("{what}: {} answered {code}", self.server));
        }
        Ok(())
    }

    /// Deletes this target's outdated records and adds the current one.
    pub async fn publish(&self) -> Result<(), String> {
        let mut client = self.client();
        let old: Vec<SRV> = self
            .own_records(&mut client)
            .await?
            .into_iter()
            .filter(|s| *s != self.srv)
            .collect();
        if !old.is_empty() {
            let mut set = RecordSet::with_ttl(self.owner.clone(), RecordType::SRV, self.ttl);
            for s in old {
                set.insert(self.record(s), 0);
            }
            self.update(
                "delete old record",
                client.delete_by_rdata(set, self.zone.clone()),
            )
            .await?;
        }
        let rec = self.record(self.srv.clone());
        self.update("add", client.append(rec, self.zone.clone(), false))
            .await
    }

    /// Deletes this node's current record.
    pub async fn withdraw(&self) -> Result<(), String> {
        let mut client = self.client();
        let rec = self.record(self.srv.clone());
        self.update("delete", client.delete_by_rdata(rec, self.zone.clone()))
            .await
    }

    /// Time between two successful publications.
    pub fn refresh(&self) -> Duration {
        Duration::from_secs((self.ttl / 2).max(1) as u64).min(MAX_REFRESH)
    }
}

fn read_secret_file(p: &Path) -> Result<Vec<u8>, ConfigError> {
    let text = std::fs::read_to_string(p).map_err(|e| {
        invalid(
            "dns_tsig_secret_file",
            format!("cannot read {}: {e}", p.display()),
        )
    })?;
    decode_secret("dns_tsig_secret_file", &text)
}

/// A running publisher.
pub struct Publisher {
    publication: Publication,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Starts publishing when `dns_publish` is on; `port` is the KMS port clients use.
    /// Problems are logged, never fatal: `None` when publishing is off or impossible.
    pub fn spawn(cfg: &Config, port: u16) -> Option<Publisher> {
        if !cfg.dns_publish {
            return None;
        }
        let publication = match Publication::from_config(cfg, port) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "DNS publishing disabled");
                return None;
            }
        };
        tracing::info!(record = %publication.record_text(), server = %publication.server, zone = %publication.zone, "DNS publishing enabled");
        let (stop, mut stop_rx) = watch::channel(false);
        let p = publication.clone();
        let task = tokio::spawn(async move {
            let mut backoff = RETRY_FIRST;
            let mut published = false;
            loop {
                let wait = match p.publish().await {
                    Ok(()) => {
                        if !published {
                            tracing::info!(record = %p.record_text(), "SRV record published");
                        } else {
                            tracing::debug!(record = %p.record_text(), "SRV record refreshed");
                        }
                        published = true;
                        backoff = RETRY_FIRST;
                        p.refresh()
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, server = %p.server, retry_in_s = backoff.as_secs(), "DNS publishing failed; will retry");
                        let w = backoff;
                        backoff = (backoff * 2)
                            .min(RETRY_MAX)
                            .min(p.refresh().max(RETRY_FIRST));
                        w
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop_rx.changed() => return,
                }
            }
        });
        Some(Publisher {
            publication,
            stop,
            task,
        })
    }

    /// Stops re-publishing and deletes this node's record (bounded in time; a failure is
    /// logged).
    pub async fn withdraw(self) {
        let _ = self.stop.send(true);
        // A publication in flight finishes first, so that its add cannot follow the delete.
        if tokio::time::timeout(EXCHANGE_TIMEOUT * 3, self.task)
            .await
            .is_err()
        {
            tracing::warn!("DNS publisher did not stop in time");
        }
        match self.publication.withdraw().await {
            Ok(()) => {
                tracing::info!(record = %self.publication.record_text(), "SRV record withdrawn")
            }
            Err(e) => tracing::warn!(error = %e, "could not withdraw the SRV record"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        Config {
            dns_publish: true,
            dns_server: Some("127.0.0.1:5353".into()),
            dns_zone: Some("campus.test".into()),
            dns_target: Some("kms1.campus.test".into()),
            dns_tsig_key_name: Some("kms-key".into()),
            dns_tsig_secret: Some("c2VjcmV0c2VjcmV0c2VjcmV0".into()),
            dns_priority: 10,
            dns_weight: 50,
            ..Config::default()
        }
    }

    #[test]
    fn publication_from_config() {
        let p = Publication::from_config(&base(), 1700).unwrap();
        assert_eq!(p.server, "127.0.0.1:5353".parse().unwrap());
        assert_eq!(
            p.record_text(),
            "_vlmcs._tcp.campus.test. 3600 IN SRV 10 50 1700 kms1.campus.test."
        );
        assert_eq!(p.refresh(), Duration::from_secs(600));
        let c = Config {
            dns_domain: Some("site1.campus.test".into()),
            dns_server: Some("10.0.0.53".into()),
            dns_ttl: 60,
            ..base()
        };
        let p = Publication::from_config(&c, 1688).unwrap();
        assert_eq!(p.server.port(), 53);
        assert_eq!(p.owner.to_string(), "_vlmcs._tcp.site1.campus.test.");
        assert_eq!(p.refresh(), Duration::from_secs(30));
    }

    #[test]
    fn bad_dns_settings_rejected() {
        let bad = |c: Config, key: &str| {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        };
        bad(
            Config {
                dns_target: None,
                ..base()
            },
            "dns_target",
        );
        bad(
            Config {
                dns_zone: None,
                ..base()
            },
            "dns_zone",
        );
        bad(
            Config {
                dns_server: Some("dns.example".into()),
                ..base()
            },
            "dns_server",
        );
        bad(
            Config {
                dns_tsig_secret: Some("!!".into()),
                ..base()
            },
            "dns_tsig_secret",
        );
        bad(
            Config {
                dns_tsig_secret: None,
                ..base()
            },
            "dns_tsig_key_name",
        );
        bad(
            Config {
                dns_tsig_algorithm: "hmac-md5".into(),
                ..base()
            },
            "dns_tsig_algorithm",
        );
        bad(
            Config {
                dns_domain: Some("other.example".into()),
                ..base()
            },
            "dns_domain",
        );
        bad(
            Config {
                dns_target: Some("10.0.0.1".into()),
                ..base()
            },
            "dns_target",
        );
        bad(
            Config {
                dns_ttl: 0,
                ..base()
            },
            "dns_ttl",
        );
        // Off: only the generic checks apply.
        Config {
            dns_publish: false,
            dns_target: None,
            ..base()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn secret_from_bind_key_file() {
        let text = "key \"kms-key\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0\";\n};\n";
        assert_eq!(decode_secret("k", text).unwrap(), b"secret");
        assert_eq!(decode_secret("k", " c2VjcmV0\n").unwrap(), b"secret");
    }
}
