//! DNS publishing: this node's `_vlmcs._tcp.<domain>` SRV record, kept in the zone by
//! RFC 2136 dynamic updates signed with TSIG, as a Microsoft KMS host publishes itself.
//!
//! On start (after the listeners are bound) the node deletes any older record of its own
//! target (other priority/weight/port) and adds its current one; it re-publishes every
//! ttl/2 (at most every 10 minutes) and withdraws its record (delete by rdata) on a
//! graceful shutdown. Other nodes' records are never touched. Failures are logged and
//! retried; they never stop the daemon.

use crate::config::{Config, ConfigError};
use hickory_net::client::{Client, ClientHandle};
use hickory_net::proto::op::ResponseCode;
use hickory_net::proto::rr::rdata::SRV;
use hickory_net::proto::rr::{DNSClass, Name, RData, Record, RecordSet, RecordType, TSigner};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use kms_dns::{Secret, TsigAlgorithm, TsigKey, TsigSettings};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::watch;

/// Timeout of one update exchange (UDP, with the client's own retries).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait between two publications.
const MAX_REFRESH: Duration = Duration::from_secs(600);
/// Retry backoff after a failure: first and longest wait.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// kmsd's names of its TSIG settings, for the messages of [`kms_dns`].
const TSIG: TsigSettings = TsigSettings {
    key_name: "dns_tsig_key_name",
    secret: "dns_tsig_secret",
    secret_file: "dns_tsig_secret_file",
    algorithm: "dns_tsig_algorithm",
};

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Zone, owner and target of the record, checked by [`kms_dns`]'s rules.
struct Names {
    zone: Name,
    owner: Name,
    target: Name,
    /// Normalized domain and target, for the zone-file line.
    domain: String,
    target_text: String,
}

fn names(cfg: &Config) -> Result<Names, ConfigError> {
    let required = |key: &'static str, v: &Option<String>| -> Result<String, ConfigError> {
        v.clone()
            .ok_or_else(|| invalid(key, "required when dns_publish is on"))
    };
    let zone = kms_dns::normalize_name("dns_zone", &required("dns_zone", &cfg.dns_zone)?)?;
    let domain = match &cfg.dns_domain {
        Some(d) => kms_dns::normalize_name("dns_domain", d)?,
        None => zone.clone(),
    };
    kms_dns::check_in_zone("dns_domain", &domain, "dns_zone", &zone)?;
    let target_text =
        kms_dns::normalize_name("dns_target", &required("dns_target", &cfg.dns_target)?)?;
    Ok(Names {
        zone: kms_dns::dns_name("dns_zone", &zone)?,
        owner: kms_dns::owner_name("dns_domain", &domain)?,
        target: kms_dns::dns_name("dns_target", &target_text)?,
        domain,
        target_text,
    })
}

/// Checks the `dns_*` settings (called by [`Config::validate`]). A secret file is read
/// only when publishing starts ([`Publication::from_config`]).
pub fn validate(cfg: &Config) -> Result<(), ConfigError> {
    kms_dns::ttl("dns_ttl", cfg.dns_ttl.into())?;
    TsigAlgorithm::parse(TSIG.algorithm, &cfg.dns_tsig_algorithm)?;
    if let Some(s) = &cfg.dns_server {
        kms_dns::parse_server("dns_server", s)?;
    }
    if cfg.dns_tsig_secret.is_some() && cfg.dns_tsig_secret_file.is_some() {
        return Err(invalid(
            "dns_tsig_secret",
            "give dns_tsig_secret or dns_tsig_secret_file, not both",
        ));
    }
    if let Some(s) = &cfg.dns_tsig_secret {
        kms_dns::decode_secret(TSIG.secret, s)?;
    }
    if let Some(n) = &cfg.dns_tsig_key_name {
        kms_dns::normalize_name(TSIG.key_name, n)?;
        if let Some(s) = &cfg.dns_tsig_secret {
            // An inline BIND key file must name this key and algorithm.
            TsigKey::new(&TSIG, n, &cfg.dns_tsig_algorithm, Secret::Inline(s))?;
        }
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
    names(cfg)?;
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
    /// The record as a zone-file line.
    line: String,
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
    /// Builds the publication from a validated configuration and the KMS port; reads
    /// the secret file.
    pub fn from_config(cfg: &Config, port: u16) -> Result<Self, ConfigError> {
        validate(cfg)?;
        let server = kms_dns::parse_server("dns_server", cfg.dns_server.as_deref().unwrap_or(""))?;
        let names = names(cfg)?;
        let signer = match &cfg.dns_tsig_key_name {
            None => None,
            Some(name) => {
                let secret = match (&cfg.dns_tsig_secret, &cfg.dns_tsig_secret_file) {
                    (Some(s), _) => Secret::Inline(s),
                    (None, Some(p)) => Secret::File(p),
                    (None, None) => {
                        return Err(invalid(
                            "dns_tsig_key_name",
                            "needs dns_tsig_secret or dns_tsig_secret_file",
                        ))
                    }
                };
                let key = TsigKey::new(&TSIG, name, &cfg.dns_tsig_algorithm, secret)?;
                Some(key.signer(&TSIG)?)
            }
        };
        Ok(Self {
            server,
            zone: names.zone,
            owner: names.owner,
            srv: SRV::new(cfg.dns_priority, cfg.dns_weight, port, names.target),
            ttl: cfg.dns_ttl,
            signer,
            line: kms_dns::srv_line(
                &names.domain,
                cfg.dns_ttl,
                cfg.dns_priority,
                cfg.dns_weight,
                port,
                &names.target_text,
            ),
        })
    }

    /// The record as a zone-file line.
    pub fn record_text(&self) -> String {
        self.line.clone()
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
    fn tsig_rules_are_kms_dns_rules() {
        for alg in ["hmac-md5", "hmac-sha1"] {
            let e = Config {
                dns_tsig_algorithm: alg.into(),
                ..base()
            }
            .validate()
            .unwrap_err()
            .to_string();
            assert!(
                e.starts_with(&format!(
                    "invalid setting dns_tsig_algorithm {alg:?}: refused"
                )) && e.contains("hmac-sha256, hmac-sha384, hmac-sha512"),
                "{e}"
            );
        }
        for alg in ["hmac-sha256", "HMAC-SHA384", "hmac-sha512"] {
            let p = Publication::from_config(
                &Config {
                    dns_tsig_algorithm: alg.into(),
                    ..base()
                },
                1688,
            )
            .unwrap();
            let signer = p.signer.unwrap();
            assert_eq!(signer.signer_name().to_string(), "kms-key.");
            assert_eq!(
                signer.algorithm().to_name().to_string(),
                alg.to_ascii_lowercase()
            );
        }
        // A BIND key file for another algorithm is refused when publishing starts.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms-key.conf");
        let text = kms_dns::bind_key_file("kms-key", TsigAlgorithm::HmacSha512, "c2VjcmV0");
        std::fs::write(&path, text).unwrap();
        let c = Config {
            dns_tsig_secret: None,
            dns_tsig_secret_file: Some(path),
            ..base()
        };
        c.validate().unwrap();
        let e = Publication::from_config(&c, 1688).unwrap_err().to_string();
        assert!(
            e.contains("dns_tsig_secret_file")
                && e.contains("hmac-sha512")
                && e.contains("dns_tsig_algorithm"),
            "{e}"
        );
        // Names: upper case and a trailing dot are normalized; a 64-character label is not.
        let p = Publication::from_config(
            &Config {
                dns_zone: Some("Campus.Test.".into()),
                dns_target: Some("KMS1.campus.test.".into()),
                ..base()
            },
            1688,
        )
        .unwrap();
        assert_eq!(
            p.record_text(),
            "_vlmcs._tcp.campus.test. 3600 IN SRV 10 50 1688 kms1.campus.test."
        );
        let e = Config {
            dns_target: Some(format!("{}.campus.test", "a".repeat(64))),
            ..base()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("invalid setting dns_target \"aaa") && e.contains("1..=63"),
            "{e}"
        );
    }
}
