//! Configuration reload (SIGHUP): which settings change at runtime, applying them to the
//! running parts without dropping connections, and naming the ones that need a restart.
//!
//! A reloaded configuration has already been parsed and validated as a whole (an invalid
//! one never gets here: the daemon logs why and keeps the old one). Reloadable: the client
//! allowlist and per-source limits, PDU size and timeouts for new connections, the
//! licensed product groups and the other activation policy settings, the log level.

use crate::access::Gate;
use crate::config::{Config, ConfigError};
use crate::listener::Listener;
use crate::service::Service;
use std::sync::Arc;
use std::time::Duration;

/// Keys applied at runtime; every other key that differs needs a restart.
pub const RELOADABLE: [&str; 21] = [
    "allow_cidrs",
    "limit_exempt_cidrs",
    "max_connections_per_ip",
    "requests_per_ip_per_sec",
    "request_burst",
    "connection_lifetime_ms",
    "max_pdu_bytes",
    "read_timeout_ms",
    "idle_timeout_ms",
    "licensed_groups",
    "activation_interval",
    "renewal_interval",
    "check_client_time",
    "max_clock_skew_minutes",
    "lcid",
    "clock_offset_secs",
    "inventory_retention_days",
    "expiring_horizon_days",
    "alert_expiring_machines",
    "alert_failing_machines",
    "log_level",
];

/// Sets the log filter (from the telemetry setup).
pub type SetLogLevel = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The running parts a reload changes.
pub struct Targets {
    /// Client access gate.
    pub gate: Arc<Gate>,
    /// Listener settings for new connections.
    pub listener: Arc<Listener>,
    /// Activation policy.
    pub service: Arc<Service>,
    /// Log filter, when the telemetry setup can change it.
    pub set_log_level: Option<SetLogLevel>,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Reloadable keys whose value changed (applied).
    pub applied: Vec<String>,
    /// Keys that changed but need a restart (not applied; the old value stays).
    pub need_restart: Vec<String>,
}

/// Top-level keys whose values differ between two configurations.
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let as_table = |c: &Config| match toml::Value::try_from(c) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::map::Map::new(),
    };
    let (a, b) = (as_table(old), as_table(new));
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Applies the reloadable part of `new` over `running` and returns the configuration now
/// in force (restart-only keys keep their running values).
pub fn apply(
    running: &Config,
    new: &Config,
    targets: &Targets,
) -> Result<(Config, Outcome), ConfigError> {
    let changed = changed_keys(running, new);
    let (applied, need_restart): (Vec<String>, Vec<String>) = changed
        .into_iter()
        .partition(|k| RELOADABLE.contains(&k.as_str()));
    let mut effective = running.clone();
    effective.allow_cidrs = new.allow_cidrs.clone();
    effective.limit_exempt_cidrs = new.limit_exempt_cidrs.clone();
    effective.max_connections_per_ip = new.max_connections_per_ip;
    effective.requests_per_ip_per_sec = new.requests_per_ip_per_sec;
    effective.request_burst = new.request_burst;
    effective.connection_lifetime_ms = new.connection_lifetime_ms;
    effective.max_pdu_bytes = new.max_pdu_bytes;
    effective.read_timeout_ms = new.read_timeout_ms;
    effective.idle_timeout_ms = new.idle_timeout_ms;
    effective.licensed_groups = new.licensed_groups.clone();
    effective.activation_interval = new.activation_interval;
    effective.renewal_interval = new.renewal_interval;
    effective.check_client_time = new.check_client_time;
    effective.max_clock_skew_minutes = new.max_clock_skew_minutes;
    effective.lcid = new.lcid;
    effective.clock_offset_secs = new.clock_offset_secs;
    effective.inventory_retention_days = new.inventory_retention_days;
    effective.expiring_horizon_days = new.expiring_horizon_days;
    effective.alert_expiring_machines = new.alert_expiring_machines;
    effective.alert_failing_machines = new.alert_failing_machines;
    effective.log_level = new.log_level.clone();
    effective.validate()?;

    // Everything is computed before anything is applied: a failure changes nothing.
    let access = effective.access_policy()?;
    let policy = crate::policy_from(&effective, targets.service.catalog())?;
    if applied.iter().any(|k| k == "log_level") {
        if let Some(set) = &targets.set_log_level {
            set(&effective.log_level).map_err(|message| ConfigError::Invalid {
                key: "log_level",
                message,
            })?;
        }
    }
    targets.gate.set_policy(access);
    targets.listener.set_limits(
        effective.max_pdu_bytes,
        Duration::from_millis(effective.read_timeout_ms),
        Duration::from_millis(effective.idle_timeout_ms),
        Duration::from_millis(effective.connection_lifetime_ms),
    );
    targets.service.set_policy(policy);
    Ok((
        effective,
        Outcome {
            applied,
            need_restart,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reloadable_keys_exist_in_the_schema() {
        let table = match toml::Value::try_from(Config::default()).unwrap() {
            toml::Value::Table(t) => t,
            _ => unreachable!(),
        };
        for k in RELOADABLE {
            // Optional keys without a value are absent from the TOML; all of ours have one.
            assert!(table.contains_key(k), "{k} is not a config key");
        }
    }

    #[test]
    fn changed_keys_are_split_into_applied_and_restart() {
        let old = Config::default();
        let new = Config {
            licensed_groups: "windows".into(),
            cache_mib: 64,
            allow_cidrs: vec!["10.0.0.0/8".into()],
            ..Config::default()
        };
        assert_eq!(
            changed_keys(&old, &new),
            vec!["allow_cidrs", "cache_mib", "licensed_groups"]
        );
        let (applied, restart): (Vec<_>, Vec<_>) = changed_keys(&old, &new)
            .into_iter()
            .partition(|k| RELOADABLE.contains(&k.as_str()));
        assert_eq!(applied, vec!["allow_cidrs", "licensed_groups"]);
        assert_eq!(restart, vec!["cache_mib"]);
    }
}
