//! Text rendering in the shape admins know: `slmgr /dlv` for host status, `slmgr /ato`
//! for an activation; the host identity with each group's ePID.
//!
//! Every string that came over the network (above all the machine names clients chose)
//! goes through [`kms_protocol::text::escape`] before it reaches the terminal, so a name
//! cannot carry escape sequences or break a table row.

use kms_api::{ClientInfo, StatusReport};
use kms_protocol::text::escape;
use kms_protocol::LicenseState;

/// Renders `/status` the way the `slmgr /dlv` block reads, one block per count group,
/// then the cluster-wide cumulative requests.
pub fn status(r: &StatusReport) -> String {
    let mut s = String::new();
    for g in &r.groups {
        s.push_str(&format!("Name: {} KMS host\n", escape(&g.display)));
        s.push_str(&format!("Application ID: {}\n", g.application_id));
        s.push_str(&format!(
            "Extended PID: {}\n",
            escape(
                g.epid
                    .as_deref()
                    .unwrap_or("(not generated yet: no activation so far)")
            )
        ));
        let licensed = if g.licensed_products.is_empty() {
            "none".to_string()
        } else {
            escape(&g.licensed_products.join(", ")).into_owned()
        };
        s.push_str(&format!("Licensed product groups: {licensed}\n\n"));
        s.push_str("Key Management Service is enabled on this machine\n");
        s.push_str(&format!("    Current count: {}\n", g.current_count));
        s.push_str(&format!(
            "    Minimum count needed: {} (clients in the last 30 days: {})\n",
            g.minimum, g.active_clients
        ));
        s.push_str(&format!("    Listening on Port: {}\n", r.port));
        s.push_str(if r.dns_publishing {
            "    DNS publishing enabled\n"
        } else {
            "    DNS publishing disabled\n"
        });
        s.push_str(&format!("    KMS priority: {}\n\n", escape(&r.priority)));
        s.push_str(&format!(
            "    Activation interval: {} minutes\n    Renewal interval: {} minutes\n\n",
            r.activation_interval, r.renewal_interval
        ));
        s.push_str(&stats_block(&g.stats, "    "));
        s.push('\n');
    }
    s.push_str("Key Management Service cumulative requests received from clients (all products)\n");
    s.push_str(&stats_block(&r.stats, "    "));
    s.push('\n');
    s.push_str(&raft_block(&r.raft));
    s.push_str(&storage_line(&r.storage));
    s
}

/// The node's data directory and disk, e.g. `Data directory: 102.0 MiB; disk 2.0 GiB free of
/// 20.0 GiB (10%)` (nothing from a node that does not report it).
pub fn storage_line(d: &kms_api::StorageView) -> String {
    if d.filesystem_bytes == 0 {
        return String::new();
    }
    format!(
        "Data directory: {}; disk {} free of {} ({}%)\n",
        bytes(d.data_dir_bytes),
        bytes(d.available_bytes),
        bytes(d.filesystem_bytes),
        d.available_bytes.saturating_mul(100) / d.filesystem_bytes
    )
}

/// Bytes in binary units with one decimal (`512 B`, `1.5 KiB`, `102.0 MiB`).
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The Raft view of one node.
pub fn raft_block(v: &kms_api::RaftView) -> String {
    let opt = |x: Option<u64>| x.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
    let mut s = format!(
        "Cluster (as node {} sees it)\n    Role: {}\n    Term: {}\n    Leader: {}\n    Last log / commit / applied index: {} / {} / {}\n    Snapshot index: {}\n",
        v.node_id,
        escape(&v.role),
        v.term,
        opt(v.leader),
        opt(v.last_log_index),
        opt(v.commit_index),
        opt(v.applied_index),
        opt(v.snapshot_index),
    );
    for (kind, members) in [("Voter", &v.voters), ("Learner", &v.learners)] {
        for (id, addr) in members {
            let m = v
                .replication
                .get(id)
                .map(|m| format!(" matched {}", opt(*m)))
                .unwrap_or_default();
            s.push_str(&format!("    {kind} {id} at {}{m}\n", escape(addr)));
        }
    }
    s
}

fn stats_block(st: &kms_api::RequestStats, indent: &str) -> String {
    let mut s = format!(
        "{indent}Total requests received: {}\n{indent}Failed requests received: {}\n",
        st.total_requests, st.failed_requests
    );
    for l in LicenseState::KNOWN {
        let n = st
            .requests_by_license_state
            .get(l.label())
            .copied()
            .unwrap_or(0);
        s.push_str(&format!(
            "{indent}Requests with License Status {}: {n}\n",
            l.slmgr_text()
        ));
    }
    // States slmgr has no line for (a client reported a value outside 0..=6): one line of
    // their own, so that the lines add up to the total.
    let known: Vec<&str> = LicenseState::KNOWN.iter().map(|l| l.label()).collect();
    let other: u64 = st
        .requests_by_license_state
        .iter()
        .filter(|(label, _)| !known.contains(&label.as_str()))
        .map(|(_, n)| *n)
        .sum();
    if other > 0 {
        s.push_str(&format!(
            "{indent}Requests with another License Status: {other}\n"
        ));
    }
    s
}

fn fmt_ms(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// The product column of a client: SKU name, else product group, else the SKU id.
fn product_of(c: &ClientInfo) -> String {
    c.product
        .clone()
        .or_else(|| c.product_group.clone())
        .unwrap_or_else(|| c.sku_id.to_string())
}

/// `YYYY-MM-DD HH:MM:SSZ`, or `-` for none.
fn fmt_opt_ms(ms: Option<u64>) -> String {
    ms.filter(|t| *t > 0)
        .map_or_else(|| "-".to_string(), fmt_ms)
}

/// Renders the client inventory as a table: one line per machine with its lifecycle state,
/// when its activation ends, and its last failure.
pub fn clients(list: &[ClientInfo]) -> String {
    let row = |cols: [&str; 10]| {
        format!(
            "{:<36}  {:<28}  {:<10}  {:<32}  {:<8}  {:<20}  {:<20}  {:<10}  {:>4}  {}\n",
            cols[0],
            cols[1],
            cols[2],
            cols[3],
            cols[4],
            cols[5],
            cols[6],
            cols[7],
            cols[8],
            cols[9]
        )
    };
    let mut s = row([
        "CMID",
        "MACHINE",
        "GROUP",
        "PRODUCT",
        "STATE",
        "LAST SUCCESS",
        "ACTIVATION ENDS",
        "FAILURE",
        "NODE",
        "LAST REQUEST",
    ]);
    for c in list {
        let failure = c
            .last_failure
            .as_ref()
            .filter(|_| c.consecutive_failures > 0)
            .map_or_else(|| "-".to_string(), |f| f.hresult.clone());
        s.push_str(&row([
            &c.cmid.to_string(),
            &escape(&c.machine_name),
            &escape(&c.count_group),
            &escape(&product_of(c)),
            &escape(&c.state),
            &fmt_opt_ms(c.last_success_ms),
            &fmt_opt_ms(c.activation_ends_ms),
            &failure,
            &c.answered_by.to_string(),
            &fmt_opt_ms(Some(c.last_request_ms)),
        ]));
    }
    s.push_str(&format!("{} client machine(s)\n", list.len()));
    s
}

/// One machine in full (`kmsctl clients --machine NAME` or `--cmid ID`): every inventory
/// entry of it (one per count group), with its lifecycle, last failure and name history.
pub fn client_details(list: &[ClientInfo]) -> String {
    let mut s = String::new();
    for c in list {
        let line = |s: &mut String, k: &str, v: &str| s.push_str(&format!("{k:<24}{v}\n"));
        line(&mut s, "Machine:", &escape(&c.machine_name));
        let previous: Vec<String> = c
            .previous_names
            .iter()
            .map(|n| escape(n).into_owned())
            .collect();
        if !previous.is_empty() {
            line(&mut s, "Previous names:", &previous.join(", "));
        }
        line(&mut s, "Client Machine ID:", &c.cmid.to_string());
        line(&mut s, "Count group:", &escape(&c.count_group));
        line(&mut s, "Product:", &escape(&product_of(c)));
        line(&mut s, "Lifecycle state:", &escape(&c.state));
        line(
            &mut s,
            "In the count:",
            if c.counted {
                "yes"
            } else {
                "no (not answered within 30 days)"
            },
        );
        line(&mut s, "Last success:", &fmt_opt_ms(c.last_success_ms));
        line(
            &mut s,
            "Activation ends:",
            &fmt_opt_ms(c.activation_ends_ms),
        );
        line(
            &mut s,
            "Last request:",
            &fmt_opt_ms(Some(c.last_request_ms)),
        );
        line(
            &mut s,
            "Answered by node:",
            &if c.answered_by == 0 {
                "unknown".to_string()
            } else {
                c.answered_by.to_string()
            },
        );
        match &c.last_failure {
            Some(f) => line(
                &mut s,
                "Last failure:",
                &format!(
                    "{} {} ({})",
                    fmt_ms(f.time_ms),
                    f.hresult,
                    escape(&f.reason)
                ),
            ),
            None => line(&mut s, "Last failure:", "-"),
        }
        line(
            &mut s,
            "Failures in a row:",
            &c.consecutive_failures.to_string(),
        );
        line(&mut s, "License state:", &escape(&c.license_state));
        line(&mut s, "Grace minutes:", &c.grace_minutes.to_string());
        line(&mut s, "VM:", if c.client_vm { "yes" } else { "no" });
        line(&mut s, "Protocol:", &format!("v{}", c.protocol));
        line(&mut s, "First seen:", &fmt_opt_ms(Some(c.first_seen_ms)));
        line(&mut s, "Requests:", &c.requests.to_string());
        s.push('\n');
    }
    s.push_str(&format!(
        "{} inventory entr{}\n",
        list.len(),
        if list.len() == 1 { "y" } else { "ies" }
    ));
    s
}

/// One CSV field: control characters escaped as in the table, quoted when it holds a comma,
/// a quote or starts with a character a spreadsheet would run as a formula.
fn csv_field(v: &str) -> String {
    let v = escape(v).into_owned();
    let formula = v.starts_with(['=', '+', '-', '@']);
    if formula || v.contains([',', '"']) {
        let body = if formula { format!("'{v}") } else { v };
        format!("\"{}\"", body.replace('"', "\"\""))
    } else {
        v
    }
}

/// The inventory as CSV (RFC 4180, one header line) for the helpdesk's spreadsheet; times in
/// UTC as in the table.
pub fn clients_csv(list: &[ClientInfo]) -> String {
    let mut s = String::from(
        "cmid,machine_name,previous_names,count_group,product,state,counted,last_success,\
         activation_ends,last_request,last_failure,last_failure_hresult,last_failure_reason,\
         consecutive_failures,answered_by,license_state,client_vm,first_seen,requests\r\n",
    );
    for c in list {
        let (ft, fh, fr) = c.last_failure.as_ref().map_or_else(
            || (String::new(), String::new(), String::new()),
            |f| (fmt_ms(f.time_ms), f.hresult.clone(), f.reason.clone()),
        );
        let blank = |ms: Option<u64>| ms.filter(|t| *t > 0).map(fmt_ms).unwrap_or_default();
        let fields = [
            c.cmid.to_string(),
            c.machine_name.clone(),
            c.previous_names.join(";"),
            c.count_group.clone(),
            product_of(c),
            c.state.clone(),
            c.counted.to_string(),
            blank(c.last_success_ms),
            blank(c.activation_ends_ms),
            blank(Some(c.last_request_ms)),
            ft,
            fh,
            fr,
            c.consecutive_failures.to_string(),
            c.answered_by.to_string(),
            c.license_state.clone(),
            c.client_vm.to_string(),
            blank(Some(c.first_seen_ms)),
            c.requests.to_string(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        s.push_str(&line.join(","));
        s.push_str("\r\n");
    }
    s
}

/// `kmsctl host-identity show`: the identity, then one line per stored ePID marked when it
/// does not name the identity's build and platform.
pub fn host_identity(r: &kms_api::HostIdentityReport) -> String {
    let mut out = String::new();
    match &r.identity {
        Some(id) => {
            let os = id.host_os.as_deref().unwrap_or("unknown release");
            out.push_str(&format!("Hardware ID: {}\n", id.hwid));
            out.push_str(&format!(
                "Host OS: build {} ({os}), platform {}\n",
                id.build, id.platform
            ));
        }
        None => {
            out.push_str("Host identity: not chosen yet (the first answered request chooses it)\n")
        }
    }
    out.push_str(&format!("Configured host_os: {}\n", r.configured_host_os));
    for e in &r.epids {
        let mark = if e.matches_identity {
            ""
        } else {
            "  (other build: regenerate to make it uniform)"
        };
        out.push_str(&format!("ePID {}: {}{mark}\n", e.count_group, e.epid));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_strings_are_escaped_in_the_table() {
        let c = ClientInfo {
            cmid: uuid::Uuid::nil(),
            machine_name:
                "PC\n2026-12-01T00:00:00.000000Z ERROR kmsd: FAKE\x1b]0;pwned\x07\x1b[31m".into(),
            count_group: "windows".into(),
            product_group: None,
            sku_id: uuid::Uuid::nil(),
            product: Some("Windows\u{202e}".into()),
            client_vm: false,
            license_state: "licensed".into(),
            grace_minutes: 0,
            protocol: 6,
            first_seen_ms: 0,
            last_seen_ms: 0,
            requests: 1,
            counted: true,
            last_request_ms: 0,
            last_success_ms: None,
            activation_ends_ms: None,
            last_failure: None,
            consecutive_failures: 0,
            answered_by: 1,
            previous_names: vec!["OLD\x1bNAME,=1".into()],
            state: "active".into(),
        };
        let csv = clients_csv(std::slice::from_ref(&c));
        assert_eq!(csv.lines().count(), 2, "{csv}");
        assert!(!csv
            .chars()
            .any(|ch| ch != '\n' && ch != '\r' && kms_protocol::text::is_unsafe(ch)));
        assert!(csv.contains("\"OLD\\u{1b}NAME,=1\""), "{csv}");
        let details = client_details(std::slice::from_ref(&c));
        assert!(
            details.contains("Previous names:         OLD\\u{1b}NAME,=1"),
            "{details}"
        );
        let text = clients(&[c]);
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(!text
            .chars()
            .any(|ch| ch != '\n' && kms_protocol::text::is_unsafe(ch)));
        assert!(text.contains(
            "PC\\u{a}2026-12-01T00:00:00.000000Z ERROR kmsd: FAKE\\u{1b}]0;pwned\\u{7}\\u{1b}[31m"
        ));
        assert!(text.contains("Windows\\u{202e}"));
    }

    #[test]
    fn status_lines_add_up_to_the_total_with_other_states() {
        let by: std::collections::BTreeMap<String, u64> = [
            ("licensed".to_string(), 400),
            ("notification".to_string(), 100),
            ("other".to_string(), 3),
        ]
        .into_iter()
        .collect();
        let st = kms_api::RequestStats {
            total_requests: 504,
            failed_requests: 1,
            requests_by_license_state: by,
        };
        let text = stats_block(&st, "");
        let sum: u64 = text
            .lines()
            .filter(|l| !l.starts_with("Total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert_eq!(sum, 504, "{text}");
        assert!(
            text.contains("Requests with another License Status: 3"),
            "{text}"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(fmt_ms(0), "1970-01-01 00:00:00Z");
        assert_eq!(fmt_ms(1_795_485_552_000), "2026-11-24 01:59:12Z");
    }

    #[test]
    fn status_block_has_slmgr_lines() {
        let mut by = std::collections::BTreeMap::new();
        by.insert("licensed".to_string(), 8236);
        by.insert("initial_grace".to_string(), 293);
        let stats = kms_api::RequestStats {
            total_requests: 8865,
            failed_requests: 274,
            requests_by_license_state: by,
        };
        let r = StatusReport {
            version: "0".into(),
            listening: vec!["0.0.0.0:1688".into()],
            port: 1688,
            dns_publishing: true,
            priority: "Normal".into(),
            activation_interval: 120,
            renewal_interval: 10080,
            licensed_groups: vec![],
            stats: stats.clone(),
            groups: vec![kms_api::GroupStatus {
                name: "windows".into(),
                display: "Windows".into(),
                application_id: uuid::Uuid::nil(),
                epid: Some("55041-00172-037-474982-03-1041-7601.0000-1302011".into()),
                current_count: 50,
                active_clients: 61,
                minimum: 25,
                cap: 50,
                licensed_products: vec!["windows-7".into()],
                stats,
            }],
            connections: Default::default(),
            clock_offset_secs: 0,
            raft: Default::default(),
            storage: kms_api::StorageView {
                data_dir_bytes: 106_954_752,
                available_bytes: 2_147_483_648,
                filesystem_bytes: 21_474_836_480,
            },
        };
        let text = status(&r);
        for line in [
            "    Current count: 50",
            "    Listening on Port: 1688",
            "    DNS publishing enabled",
            "    KMS priority: Normal",
            "    Total requests received: 8865",
            "    Failed requests received: 274",
            "    Requests with License Status Licensed: 8236",
            "    Requests with License Status Initial grace period: 293",
            "    Requests with License Status License expired or Hardware out of tolerance: 0",
            "Extended PID: 55041-00172-037-474982-03-1041-7601.0000-1302011",
            "Data directory: 102.0 MiB; disk 2.0 GiB free of 20.0 GiB (10%)",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        let mut older = r.clone();
        older.storage = Default::default();
        assert!(!status(&older).contains("Data directory"));
    }

    #[test]
    fn byte_sizes_in_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(8 << 20), "8.0 MiB");
        assert_eq!(bytes(u64::MAX), "16384.0 PiB");
    }
}
