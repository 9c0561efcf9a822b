//! Client access control on port 1688, decided from the peer address before any byte is
//! parsed: the CIDR allowlist, the per-source-IP connection limit and the per-source-IP
//! request rate (token bucket). The policy is swapped as a whole on reload; per-IP state
//! survives a reload.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};

/// An IPv4 or IPv6 network (`10.0.0.0/8`, `2001:db8::/32`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A CIDR that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IPv4/IPv6 address or CIDR (e.g. 10.0.0.0/8, 2001:db8::/32)")]
pub struct CidrError(pub String);

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CidrError(s.to_string());
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The networks allowed when none are configured: loopback, RFC 1918 private, shared
/// address space (carrier NAT), link-local, and IPv6 loopback, unique-local, link-local.
pub const DEFAULT_ALLOW: [&str; 9] = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

/// The access policy (reloadable as a whole).
#[derive(Debug, Clone, PartialEq)]
pub struct AccessPolicy {
    /// Networks whose clients may connect.
    pub allow: Vec<Cidr>,
    /// Networks exempt from the per-address limits below.
    pub exempt: Vec<Cidr>,
    /// Simultaneous connections from one source address (0 = unlimited).
    pub max_connections_per_ip: usize,
    /// Sustained requests per second from one source address (0 = unlimited).
    pub requests_per_ip_per_sec: f64,
    /// Requests one source address may send in a burst above the sustained rate.
    pub request_burst: f64,
}

/// Parses a list of CIDRs.
pub fn parse_cidrs(list: &[String]) -> Result<Vec<Cidr>, CidrError> {
    list.iter().map(|c| c.parse()).collect()
}

impl AccessPolicy {
    /// Parses the allowlist (empty: [`DEFAULT_ALLOW`]).
    pub fn parse_allow(list: &[String]) -> Result<Vec<Cidr>, CidrError> {
        if list.is_empty() {
            return Ok(DEFAULT_ALLOW
                .iter()
                .map(|c| c.parse().expect("valid default"))
                .collect());
        }
        parse_cidrs(list)
    }

    /// Whether `ip` is exempt from the per-address limits.
    pub fn exempt(&self, ip: IpAddr) -> bool {
        self.exempt.iter().any(|c| c.contains(ip))
    }

    /// Whether `ip` is on the allowlist.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|c| c.contains(ip))
    }
}

/// Why a connection or request was turned away (the `reason` label of
/// `kms_connections_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Source address not on the allowlist.
    NotAllowed,
    /// Too many simultaneous connections from this source address.
    PerIpLimit,
    /// The global connection cap is reached.
    GlobalLimit,
    /// This source address exceeded its request rate.
    RateLimited,
}

impl Refusal {
    /// Every reason, in label order.
    pub const ALL: [Refusal; 4] = [
        Refusal::NotAllowed,
        Refusal::PerIpLimit,
        Refusal::GlobalLimit,
        Refusal::RateLimited,
    ];

    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::NotAllowed => "not_allowed",
            Refusal::PerIpLimit => "per_ip_limit",
            Refusal::GlobalLimit => "global_limit",
            Refusal::RateLimited => "rate_limited",
        }
    }
}

#[derive(Debug, Default)]
struct IpState {
    connections: usize,
    tokens: f64,
    refilled_ms: u64,
}

/// Per-source-IP bookkeeping under the current [`AccessPolicy`].
#[derive(Debug)]
pub struct Gate {
    policy: RwLock<Arc<AccessPolicy>>,
    ips: Mutex<HashMap<IpAddr, IpState>>,
}

/// One admitted connection; releases its per-IP slot when dropped.
#[derive(Debug)]
pub struct Ticket {
    gate: Arc<Gate>,
    /// The source address holding a per-IP slot (None when exempt).
    ip: Option<IpAddr>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut ips = self.gate.ips.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = ips.get_mut(&ip) {
            s.connections = s.connections.saturating_sub(1);
        }
    }
}

impl Gate {
    /// A gate with `policy`.
    pub fn new(policy: AccessPolicy) -> Arc<Gate> {
        Arc::new(Gate {
            policy: RwLock::new(Arc::new(policy)),
            ips: Mutex::new(HashMap::new()),
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<AccessPolicy> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the policy (reload); open connections keep their slots.
    pub fn set_policy(&self, policy: AccessPolicy) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
    }

    /// Admits a new connection from `ip`, or says why not. Called before reading a byte.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refusal> {
        let ip = ip.to_canonical();
        let policy = self.policy();
        if !policy.allows(ip) {
            return Err(Refusal::NotAllowed);
        }
        if policy.exempt(ip) {
            return Ok(Ticket {
                gate: self.clone(),
                ip: None,
            });
        }
        let mut ips = self.ips.lock().unwrap_or_else(|p| p.into_inner());
        let state = ips.entry(ip).or_insert_with(|| IpState {
            tokens: policy.request_burst,
            ..IpState::default()
        });
        if policy.max_connections_per_ip > 0 && state.connections >= policy.max_connections_per_ip {
            return Err(Refusal::PerIpLimit);
        }
        state.connections += 1;
        Ok(Ticket {
            gate: self.clone(),
            ip: Some(ip),
        })
    }

    /// Takes one request token for `ip` at `now_ms`; false when over the rate.
    pub fn take_request(&self, ip: IpAddr, now_ms: u64) -> bool {
        let policy = self.policy();
        if policy.requests_per_ip_per_sec <= 0.0 || policy.exempt(ip.to_canonical()) {
            return true;
        }
        let mut ips = self.ips.lock().unwrap_or_else(|p| p.into_inner());
        let state = ips.entry(ip.to_canonical()).or_insert_with(|| IpState {
            tokens: policy.request_burst,
            refilled_ms: now_ms,
            ..IpState::default()
        });
        let elapsed_s = now_ms.saturating_sub(state.refilled_ms) as f64 / 1000.0;
        state.tokens = (state.tokens + elapsed_s * policy.requests_per_ip_per_sec)
            .min(policy.request_burst.max(1.0));
        state.refilled_ms = now_ms;
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets idle addresses (no open connection, bucket full again) so the table stays
    /// bounded by the active sources.
    pub fn sweep(&self, now_ms: u64) {
        let policy = self.policy();
        let full_after_ms = if policy.requests_per_ip_per_sec > 0.0 {
            (policy.request_burst / policy.requests_per_ip_per_sec * 1000.0) as u64
        } else {
            0
        };
        let mut ips = self.ips.lock().unwrap_or_else(|p| p.into_inner());
        ips.retain(|_, s| {
            s.connections > 0 || now_ms.saturating_sub(s.refilled_ms) < full_after_ms
        });
    }

    /// Source addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.ips.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy(allow: &[&str]) -> AccessPolicy {
        AccessPolicy {
            allow: allow.iter().map(|c| c.parse().unwrap()).collect(),
            exempt: vec!["127.0.0.100/32".parse().unwrap()],
            max_connections_per_ip: 2,
            requests_per_ip_per_sec: 10.0,
            request_burst: 3.0,
        }
    }

    #[test]
    fn cidrs_parse_and_match_both_families() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains(ip("10.1.200.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")), "v4-mapped counts as v4");
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.1.0.1")));
        let host: Cidr = "192.0.2.7".parse().unwrap();
        assert!(host.contains(ip("192.0.2.7")) && !host.contains(ip("192.0.2.8")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.1")));
        for bad in ["10.0.0.0/33", "fe80::/129", "campus", "10.0.0/8", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn default_allowlist_is_private_and_loopback() {
        let p = AccessPolicy {
            allow: AccessPolicy::parse_allow(&[]).unwrap(),
            ..policy(&[])
        };
        for ok in [
            "127.0.0.5",
            "10.9.8.7",
            "172.20.1.1",
            "192.168.1.1",
            "::1",
            "fd00::1",
        ] {
            assert!(p.allows(ip(ok)), "{ok}");
        }
        for no in ["8.8.8.8", "172.32.0.1", "2001:db8::1", "203.0.113.9"] {
            assert!(!p.allows(ip(no)), "{no}");
        }
    }

    #[test]
    fn per_ip_connection_limit_and_release() {
        let g = Gate::new(policy(&["127.0.0.0/8"]));
        let a = g.admit(ip("127.0.0.2")).unwrap();
        let _b = g.admit(ip("127.0.0.2")).unwrap();
        assert_eq!(g.admit(ip("127.0.0.2")).unwrap_err(), Refusal::PerIpLimit);
        let _other = g.admit(ip("127.0.0.3")).unwrap();
        drop(a);
        assert!(g.admit(ip("127.0.0.2")).is_ok());
        assert_eq!(g.admit(ip("10.0.0.1")).unwrap_err(), Refusal::NotAllowed);
        let exempt: Vec<Ticket> = (0..5)
            .map(|_| g.admit(ip("127.0.0.100")).unwrap())
            .collect();
        assert_eq!(exempt.len(), 5, "exempt sources have no per-IP limit");
        assert!((0..50).all(|_| g.take_request(ip("127.0.0.100"), 0)));
    }

    #[test]
    fn token_bucket_allows_burst_then_rate() {
        let g = Gate::new(policy(&["127.0.0.0/8"]));
        let c = ip("127.0.0.9");
        assert!((0..3).all(|_| g.take_request(c, 1_000)), "burst of 3");
        assert!(!g.take_request(c, 1_000));
        assert!(g.take_request(c, 1_100), "10/s refills one per 100 ms");
        assert!(!g.take_request(c, 1_150));
        assert!(
            g.take_request(ip("127.0.0.10"), 1_150),
            "other sources unaffected"
        );
    }

    #[test]
    fn reload_changes_policy_and_sweep_forgets_idle_sources() {
        let g = Gate::new(policy(&["127.0.0.0/8"]));
        assert!(g.take_request(ip("127.0.0.9"), 0));
        g.set_policy(policy(&["10.0.0.0/8"]));
        assert_eq!(g.admit(ip("127.0.0.1")).unwrap_err(), Refusal::NotAllowed);
        let _t = g.admit(ip("10.0.0.1")).unwrap();
        g.sweep(60_000);
        assert_eq!(
            g.tracked(),
            1,
            "only the source with an open connection stays"
        );
    }
}
