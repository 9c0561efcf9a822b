//! Host, domain, zone and key names: one check and one normal form (lower case, no
//! trailing dot), zone membership, the SRV owner `_vlmcs._tcp.<domain>`, zone-file SRV
//! lines and the TTL range.

use crate::DnsError;
use hickory_proto::rr::Name;
use std::net::IpAddr;

/// The SRV service label Windows KMS clients query.
pub const SERVICE: &str = "_vlmcs._tcp";
/// Longest name, in characters without the trailing dot (RFC 1035: 255 octets on the wire).
pub const MAX_NAME_LEN: usize = 253;
/// Longest label (RFC 1035).
pub const MAX_LABEL_LEN: usize = 63;
/// Highest TTL (RFC 2181: a 31-bit value).
pub const MAX_TTL: u32 = i32::MAX as u32;

/// Checks a host, domain, zone or key name and returns it in lower case without the
/// trailing dot. Labels hold letters, digits, `-` (not first or last) and `_` (for
/// `_vlmcs._tcp`-style labels), 1..=63 each, at most 253 characters in all; an IP
/// address is refused (SRV targets, zones and TSIG keys are names).
pub fn normalize_name(setting: &'static str, value: &str) -> Result<String, DnsError> {
    let n = value.trim();
    let n = n.strip_suffix('.').unwrap_or(n);
    if n.is_empty() {
        return Err(DnsError::Empty { setting });
    }
    check_len(setting, value, n)?;
    if n.parse::<IpAddr>().is_ok() {
        return Err(DnsError::IpNotName {
            setting,
            value: value.to_string(),
        });
    }
    for label in n.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return Err(DnsError::LabelLength {
                setting,
                value: value.to_string(),
                label: label.to_string(),
                len: label.len(),
                max: MAX_LABEL_LEN,
            });
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(DnsError::NameCharacter {
                setting,
                value: value.to_string(),
            });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(DnsError::LabelHyphen {
                setting,
                value: value.to_string(),
                label: label.to_string(),
            });
        }
    }
    Ok(n.to_ascii_lowercase())
}

/// Refuses a `name` (without trailing dot) longer than [`MAX_NAME_LEN`]; `value` is what
/// the operator gave.
fn check_len(setting: &'static str, value: &str, name: &str) -> Result<(), DnsError> {
    if name.len() > MAX_NAME_LEN {
        return Err(DnsError::NameTooLong {
            setting,
            value: value.to_string(),
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    Ok(())
}

/// [`normalize_name`] as a fully qualified hickory [`Name`].
pub fn dns_name(setting: &'static str, value: &str) -> Result<Name, DnsError> {
    let n = normalize_name(setting, value)?;
    fqdn(setting, &n)
}

fn fqdn(setting: &'static str, normalized: &str) -> Result<Name, DnsError> {
    let mut name = Name::from_ascii(normalized).map_err(|e| DnsError::Hickory {
        setting,
        value: normalized.to_string(),
        reason: e.to_string(),
    })?;
    name.set_fqdn(true);
    Ok(name)
}

/// Refuses a `name` that is neither `zone` nor below it (both normalized).
pub fn check_in_zone(
    setting: &'static str,
    name: &str,
    zone_setting: &'static str,
    zone: &str,
) -> Result<(), DnsError> {
    let inside = name == zone
        || name
            .strip_suffix(zone)
            .is_some_and(|head| head.ends_with('.'));
    if inside {
        Ok(())
    } else {
        Err(DnsError::NotInZone {
            setting,
            name: name.to_string(),
            zone_setting,
            zone: zone.to_string(),
        })
    }
}

/// The fully qualified SRV owner `_vlmcs._tcp.<domain>.` of a normalized domain.
pub fn owner(domain: &str) -> String {
    format!("{SERVICE}.{domain}.")
}

/// [`owner`] as a hickory [`Name`]; `setting` names the domain's setting.
pub fn owner_name(setting: &'static str, domain: &str) -> Result<Name, DnsError> {
    let owner = owner(domain);
    let owner = owner.strip_suffix('.').unwrap_or(&owner);
    check_len(setting, domain, owner)?;
    fqdn(setting, owner)
}

/// One zone-file line `_vlmcs._tcp.<domain>. TTL IN SRV PRIORITY WEIGHT PORT TARGET.`
/// (normalized domain and target).
pub fn srv_line(
    domain: &str,
    ttl: u32,
    priority: u16,
    weight: u16,
    port: u16,
    target: &str,
) -> String {
    format!(
        "{} {ttl} IN SRV {priority} {weight} {port} {target}.",
        owner(domain)
    )
}

/// Checks a record TTL: 1..=2147483647 seconds.
pub fn ttl(setting: &'static str, value: u64) -> Result<u32, DnsError> {
    match u32::try_from(value) {
        Ok(t) if (1..=MAX_TTL).contains(&t) => Ok(t),
        _ => Err(DnsError::Ttl {
            setting,
            value,
            min: 1,
            max: MAX_TTL,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(n: usize) -> String {
        "a".repeat(n)
    }

    #[test]
    fn names_are_lower_case_without_trailing_dot() {
        assert_eq!(
            normalize_name("x", " KMS1.Campus.Example. ").unwrap(),
            "kms1.campus.example"
        );
        assert_eq!(
            normalize_name("x", "kms1.campus.example").unwrap(),
            "kms1.campus.example"
        );
        assert_eq!(
            normalize_name("x", "_vlmcs._tcp.a-b.c").unwrap(),
            "_vlmcs._tcp.a-b.c"
        );
        // One trailing dot only.
        assert!(normalize_name("x", "a.example..").is_err());
        let n = dns_name("x", "Kms1.Example").unwrap();
        assert!(n.is_fqdn());
        assert_eq!(n.to_string(), "kms1.example.");
    }

    #[test]
    fn label_length_boundaries() {
        let ok = format!("{}.example", label(63));
        assert_eq!(normalize_name("dns_target", &ok).unwrap(), ok);
        let e = normalize_name("dns_target", &format!("{}.example", label(64))).unwrap_err();
        assert!(matches!(e, DnsError::LabelLength { len: 64, .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("dns_target \"aaaa") && msg.contains("1..=63"),
            "{msg}"
        );
        assert!(matches!(
            normalize_name("x", "a..example").unwrap_err(),
            DnsError::LabelLength { len: 0, .. }
        ));
        assert!(matches!(
            normalize_name("x", ".example").unwrap_err(),
            DnsError::LabelLength { len: 0, .. }
        ));
    }

    #[test]
    fn total_length_boundaries() {
        let n253 = format!("{}.{}.{}.{}", label(63), label(63), label(63), label(61));
        assert_eq!(n253.len(), 253);
        assert_eq!(normalize_name("x", &format!("{n253}.")).unwrap(), n253);
        let n254 = format!("{}.{}.{}.{}", label(63), label(63), label(63), label(62));
        let e = normalize_name("--domain", &n254).unwrap_err();
        assert!(
            matches!(
                e,
                DnsError::NameTooLong {
                    len: 254,
                    max: 253,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().starts_with("--domain "), "{e}");
        // The owner of a 253-character domain is too long.
        assert!(matches!(
            owner_name("dns_domain", &n253).unwrap_err(),
            DnsError::NameTooLong { .. }
        ));
    }

    #[test]
    fn bad_names_are_refused() {
        let err = |v: &str| normalize_name("--node", v).unwrap_err();
        assert!(matches!(err(""), DnsError::Empty { setting: "--node" }));
        assert!(matches!(err(" . "), DnsError::Empty { .. }));
        assert!(matches!(err("10.0.0.1"), DnsError::IpNotName { .. }));
        assert!(matches!(err("fd00::1"), DnsError::IpNotName { .. }));
        assert!(matches!(
            err("bad name.example"),
            DnsError::NameCharacter { .. }
        ));
        assert!(matches!(err("a*.example"), DnsError::NameCharacter { .. }));
        assert!(matches!(err("-a.example"), DnsError::LabelHyphen { .. }));
        assert!(matches!(err("a-.example"), DnsError::LabelHyphen { .. }));
        let msg = err("10.0.0.1").to_string();
        assert_eq!(
            msg,
            "--node \"10.0.0.1\": must be a DNS name, not an IP address"
        );
    }

    #[test]
    fn zone_membership() {
        check_in_zone("d", "campus.example", "z", "campus.example").unwrap();
        check_in_zone("d", "site1.campus.example", "z", "campus.example").unwrap();
        let e = check_in_zone(
            "dns_domain",
            "othercampus.example",
            "dns_zone",
            "campus.example",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "dns_domain othercampus.example is not inside dns_zone campus.example"
        );
        assert!(check_in_zone("d", "example", "z", "campus.example").is_err());
    }

    #[test]
    fn owner_and_zone_line() {
        assert_eq!(owner("campus.example"), "_vlmcs._tcp.campus.example.");
        assert_eq!(
            owner_name("d", "campus.example").unwrap().to_string(),
            "_vlmcs._tcp.campus.example."
        );
        assert_eq!(
            srv_line("campus.example", 3600, 10, 50, 1688, "kms1.campus.example"),
            "_vlmcs._tcp.campus.example. 3600 IN SRV 10 50 1688 kms1.campus.example."
        );
    }

    #[test]
    fn ttl_boundaries() {
        assert_eq!(ttl("--ttl", 1).unwrap(), 1);
        assert_eq!(ttl("--ttl", 2_147_483_647).unwrap(), 2_147_483_647);
        let e = ttl("--ttl", 0).unwrap_err();
        assert_eq!(e.to_string(), "--ttl 0: must be 1..=2147483647 seconds");
        assert!(ttl("dns_ttl", 2_147_483_648).is_err());
        assert!(ttl("dns_ttl", u64::MAX).is_err());
    }
}
