//! DNS server addresses: `IP`, `IP:PORT`, `[IPv6]` or `[IPv6]:PORT`, port 53 when omitted.

use crate::DnsError;
use std::net::{IpAddr, SocketAddr};

/// The DNS port used when an address has none.
pub const DEFAULT_PORT: u16 = 53;

/// Parses a DNS server address. Names are refused (the server is where names get
/// resolved), and so are port 0 and brackets around anything but a whole IPv6 address.
/// A bare IPv6 address takes no port (`fd00::53` is the address, port 53).
pub fn parse_server(setting: &'static str, value: &str) -> Result<SocketAddr, DnsError> {
    let s = value.trim();
    let bad = |reason: &'static str| DnsError::Server {
        setting,
        value: value.to_string(),
        reason,
    };
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let addr = if let Ok(a) = s.parse::<SocketAddr>() {
        a
    } else if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        match inner.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => SocketAddr::new(IpAddr::V6(ip), DEFAULT_PORT),
            _ => return Err(bad("brackets hold an IPv6 address")),
        }
    } else if let Ok(ip) = s.parse::<IpAddr>() {
        SocketAddr::new(ip, DEFAULT_PORT)
    } else {
        return Err(bad("not an IP address with an optional port"));
    };
    if addr.port() == 0 {
        return Err(bad("port 0"));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        parse_server("dns_server", s).unwrap().to_string()
    }

    #[test]
    fn good_addresses() {
        assert_eq!(ok("10.0.0.53"), "10.0.0.53:53");
        assert_eq!(ok(" 10.0.0.53:5353 "), "10.0.0.53:5353");
        assert_eq!(ok("10.0.0.53:65535"), "10.0.0.53:65535");
        assert_eq!(ok("10.0.0.53:1"), "10.0.0.53:1");
        assert_eq!(ok("fd00::53"), "[fd00::53]:53");
        assert_eq!(ok("[fd00::53]"), "[fd00::53]:53");
        assert_eq!(ok("[fd00::53]:5353"), "[fd00::53]:5353");
        assert_eq!(ok("::1"), "[::1]:53");
    }

    #[test]
    fn bad_addresses() {
        for s in [
            "",
            "   ",
            "dns.example",
            "dns.example:53",
            "10.0.0.53:0",
            "10.0.0.53:65536",
            "10.0.0.53:",
            "10.0.0.256",
            "[10.0.0.53]",
            "[10.0.0.53]:53",
            "[fd00::53",
            "fd00::53]",
            "[fd00::53]:0",
            "[fd00::53]:x",
        ] {
            let e = parse_server("--server", s).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, DnsError::Server { .. }), "{s:?}: {msg}");
            assert!(
                msg.starts_with(&format!("--server {s:?}: ")) && msg.contains("IP:PORT"),
                "{msg}"
            );
        }
    }
}
