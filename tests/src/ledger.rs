//! [`Ledger`]: what `kmsctl bench` logs say was attempted and answered (fresh CMIDs, one
//! per activation), checked against a node's inventory and totals — "every answered
//! activation is counted exactly once".
//!
//! An activation the bench gave up on (a timeout, a reset connection, a killed host) may
//! still have been counted: the host committed it and the answer was lost on the way. Such
//! activations are allowed in the inventory, once; everything else there is a violation.

use std::collections::{BTreeMap, HashMap};

/// One attempted activation, from a bench log line.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Sequence number within its bench run.
    pub seq: u64,
    /// Start, Unix ms.
    pub start_ms: u64,
    /// True when a verified answer arrived.
    pub answered: bool,
    /// Why not, when not.
    pub error: Option<String>,
}

/// Every activation of one or more bench runs, by CMID.
#[derive(Debug, Default)]
pub struct Ledger {
    attempts: HashMap<String, Attempt>,
    answered: usize,
}

/// What a successful [`Ledger::check`] found.
#[derive(Debug, Clone)]
pub struct Reconciled {
    /// Answered activations (all counted once).
    pub answered: usize,
    /// Activations the bench did not see answered that the node counted anyway, with the
    /// bench's error kind.
    pub counted_unanswered: Vec<(String, String)>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Adds the lines of one bench log (`--log`); a CMID seen twice is a test bug (bench
    /// draws fresh ones) and panics.
    pub fn add(&mut self, lines: &[serde_json::Value]) {
        for l in lines {
            let cmid = l["cmid"]
                .as_str()
                .expect("bench log line has a cmid")
                .to_string();
            let a = Attempt {
                seq: l["seq"].as_u64().unwrap_or(0),
                start_ms: l["start_ms"].as_u64().unwrap_or(0),
                answered: l["answered"] == true,
                error: l["error"].as_str().map(str::to_owned),
            };
            if a.answered {
                self.answered += 1;
            }
            let prev = self.attempts.insert(cmid.clone(), a);
            assert!(prev.is_none(), "bench used CMID {cmid} twice");
        }
    }

    /// Activations attempted.
    pub fn attempted(&self) -> usize {
        self.attempts.len()
    }

    /// Activations answered.
    pub fn answered(&self) -> usize {
        self.answered
    }

    /// Checks a node's inventory (CMID → requests, from `/clients`) and its
    /// `total_requests`: every answered CMID is there with one request; every entry there
    /// is an attempted CMID with one request; the requests add up to `total`. Returns the
    /// first violations found (at most 10 of each kind) as text.
    pub fn check(
        &self,
        inventory: &BTreeMap<String, u64>,
        total: u64,
    ) -> Result<Reconciled, String> {
        let mut problems = Vec::new();
        let mut missing = 0usize;
        for (cmid, a) in self.attempts.iter().filter(|(_, a)| a.answered) {
            match inventory.get(cmid) {
                Some(1) => {}
                Some(n) => problems.push(format!(
                    "answered {cmid} (seq {}, started {}) counted {n} times",
                    a.seq, a.start_ms
                )),
                None => {
                    missing += 1;
                    if missing <= 10 {
                        problems.push(format!(
                            "answered {cmid} (seq {}, started {}) is not in the inventory",
                            a.seq, a.start_ms
                        ));
                    }
                }
            }
        }
        if missing > 10 {
            problems.push(format!("... {missing} answered activations missing in all"));
        }
        let mut counted_unanswered = Vec::new();
        let mut unknown = 0usize;
        for (cmid, n) in inventory {
            match self.attempts.get(cmid) {
                None => {
                    unknown += 1;
                    if unknown <= 10 {
                        problems.push(format!("inventory holds {cmid} that no bench sent"));
                    }
                }
                Some(a) => {
                    if *n != 1 {
                        problems.push(format!("{cmid} has {n} requests (sent once)"));
                    }
                    if !a.answered {
                        counted_unanswered
                            .push((cmid.clone(), a.error.clone().unwrap_or_default()));
                    }
                }
            }
        }
        let sum: u64 = inventory.values().sum();
        if sum != total {
            problems.push(format!(
                "inventory requests add up to {sum}, total_requests is {total}"
            ));
        }
        if problems.is_empty() {
            Ok(Reconciled {
                answered: self.answered,
                counted_unanswered,
            })
        } else {
            Err(format!(
                "{} attempted, {} answered, {} in the inventory, total {total}:\n  {}",
                self.attempts.len(),
                self.answered,
                inventory.len(),
                problems.join("\n  ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(seq: u64, cmid: &str, answered: bool) -> serde_json::Value {
        json!({"seq": seq, "cmid": cmid, "start_ms": 1, "answered": answered,
               "error": if answered { serde_json::Value::Null } else { json!("timeout") }})
    }

    #[test]
    fn finds_lost_doubled_and_unknown_activations() {
        let mut l = Ledger::new();
        l.add(&[line(0, "a", true), line(1, "b", true), line(2, "c", false)]);
        let inv = |v: &[(&str, u64)]| -> BTreeMap<String, u64> {
            v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
        };
        let ok = l.check(&inv(&[("a", 1), ("b", 1), ("c", 1)]), 3).unwrap();
        assert_eq!(ok.counted_unanswered, vec![("c".into(), "timeout".into())]);
        assert!(l.check(&inv(&[("a", 1), ("b", 1)]), 2).is_ok());
        assert!(l.check(&inv(&[("a", 1)]), 1).unwrap_err().contains("b"));
        assert!(l.check(&inv(&[("a", 2), ("b", 1)]), 3).is_err());
        assert!(l.check(&inv(&[("a", 1), ("b", 1), ("x", 1)]), 3).is_err());
        assert!(l.check(&inv(&[("a", 1), ("b", 1)]), 3).is_err());
    }
}
