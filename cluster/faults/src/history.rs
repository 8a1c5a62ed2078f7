//! What the clients saw during one scenario, and the rules it must keep.
//! Pure: the checker reads a [`History`] and the healed cluster's final
//! state, and names every broken rule with the operations that broke it.

use std::collections::{BTreeMap, BTreeSet};

/// Seconds since the scenario started.
pub type At = f64;

#[derive(Clone, Debug)]
pub struct Write {
    pub client: String,
    /// The node the client sent it to.
    pub sent_to: String,
    pub project: String,
    pub filename: String,
    pub sha256: String,
    pub started: At,
    pub ended: At,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// 200 with a serial: the write must survive.
    Acked {
        serial: u64,
        term: u64,
        node: String,
    },
    /// A refusal (503 without a leader, 507, …): it must not matter.
    Refused { status: u16 },
    /// No answer (timeout, reset): it may or may not have happened.
    Unknown { error: String },
}

/// One read of a project page.
#[derive(Clone, Debug)]
pub struct Read {
    pub node: String,
    /// Bumped when the scenario wipes the node's data: reads of a new
    /// incarnation may start from nothing.
    pub incarnation: u32,
    pub at: At,
    /// The node's applied serial, from `x-hoard-serial`.
    pub serial: u64,
    pub project: String,
    pub files: BTreeSet<String>,
}

/// A voter's `/+status`, as polled.
#[derive(Clone, Debug)]
pub struct Observation {
    pub node: String,
    pub at: At,
    pub role: String,
    pub term: u64,
}

#[derive(Clone, Debug, Default)]
pub struct History {
    pub writes: Vec<Write>,
    pub reads: Vec<Read>,
    pub observations: Vec<Observation>,
}

/// A healed node: its serial, digest, and every file it lists by project.
#[derive(Clone, Debug, Default)]
pub struct NodeState {
    pub applied_serial: u64,
    pub digest: String,
    pub files: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Default)]
pub struct Verdict {
    pub operations: usize,
    pub acked: usize,
    /// Acknowledged writes missing (or different) on some node.
    pub lost: usize,
    pub violations: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Checks every rule:
/// - every acknowledged write is on every node, with its digest;
/// - no term has two acknowledging nodes, and none acknowledged in a term
///   where the voters' status named another node as leader;
/// - each node's reads are monotonic: its serial never goes down, and a
///   file it listed stays listed;
/// - the healed nodes agree on the serial and the index digest.
pub fn check(history: &History, healed: &BTreeMap<String, NodeState>) -> Verdict {
    let mut verdict = Verdict {
        operations: history.writes.len() + history.reads.len(),
        ..Verdict::default()
    };
    check_acked_survive(history, healed, &mut verdict);
    check_one_writer_per_term(history, &mut verdict);
    check_monotonic_reads(history, &mut verdict);
    check_convergence(healed, &mut verdict);
    verdict
}

fn check_acked_survive(
    history: &History,
    healed: &BTreeMap<String, NodeState>,
    verdict: &mut Verdict,
) {
    for write in &history.writes {
        let Outcome::Acked { serial, .. } = &write.outcome else {
            continue;
        };
        verdict.acked += 1;
        let missing: Vec<String> = healed
            .iter()
            .filter_map(|(node, state)| {
                let listed = state
                    .files
                    .get(&write.project)
                    .and_then(|files| files.get(&write.filename));
                match listed {
                    Some(sha) if *sha == write.sha256 => None,
                    Some(sha) => Some(format!("{node} (sha256 {sha})")),
                    None => Some(node.clone()),
                }
            })
            .collect();
        if !missing.is_empty() {
            verdict.lost += 1;
            verdict.violations.push(format!(
                "acknowledged write lost: {} (serial {serial}, sent by {} to {} at {:.3}s) is missing on {}",
                write.filename,
                write.client,
                write.sent_to,
                write.started,
                missing.join(", ")
            ));
        }
    }
}

fn check_one_writer_per_term(history: &History, verdict: &mut Verdict) {
    let mut ackers: BTreeMap<u64, BTreeMap<&str, &Write>> = BTreeMap::new();
    for write in &history.writes {
        if let Outcome::Acked { term, node, .. } = &write.outcome {
            ackers
                .entry(*term)
                .or_default()
                .entry(node.as_str())
                .or_insert(write);
        }
    }
    // Per term, each node seen leading it and when it was first seen so.
    let mut leaders: BTreeMap<u64, BTreeMap<&str, At>> = BTreeMap::new();
    for o in &history.observations {
        if o.role == "leader" {
            leaders
                .entry(o.term)
                .or_default()
                .entry(o.node.as_str())
                .or_insert(o.at);
        }
    }
    for (term, nodes) in &leaders {
        if nodes.len() > 1 {
            let seen: Vec<String> = nodes
                .iter()
                .map(|(node, at)| format!("{node} at {at:.3}s"))
                .collect();
            verdict.violations.push(format!(
                "term {term} had two leaders in /+status: {}",
                seen.join(", ")
            ));
        }
    }
    for (term, nodes) in &ackers {
        if nodes.len() > 1 {
            verdict.violations.push(format!(
                "term {term} has writes acknowledged by {} nodes: {:?}",
                nodes.len(),
                nodes.values().collect::<Vec<_>>()
            ));
        }
        for (node, write) in nodes {
            if let Some(seen) = leaders.get(term) {
                if !seen.contains_key(node) {
                    verdict.violations.push(format!(
                        "{node} acknowledged {} in term {term}, whose leader was {:?}",
                        write.filename,
                        seen.keys().collect::<Vec<_>>()
                    ));
                }
            }
        }
    }
}

fn check_monotonic_reads(history: &History, verdict: &mut Verdict) {
    let mut chains: BTreeMap<(&str, u32, &str), Vec<&Read>> = BTreeMap::new();
    for read in &history.reads {
        chains
            .entry((read.node.as_str(), read.incarnation, read.project.as_str()))
            .or_default()
            .push(read);
    }
    for reads in chains.values_mut() {
        reads.sort_by(|a, b| a.at.total_cmp(&b.at));
        for pair in reads.windows(2) {
            let (before, after) = (pair[0], pair[1]);
            if after.serial < before.serial {
                verdict.violations.push(format!(
                    "non-monotonic read on {}: serial {} at {:.3}s, then {} at {:.3}s",
                    after.node, before.serial, before.at, after.serial, after.at
                ));
            }
            let vanished: Vec<&String> = before.files.difference(&after.files).collect();
            if !vanished.is_empty() {
                verdict.violations.push(format!(
                    "non-monotonic read on {}: {} listed {vanished:?} at {:.3}s (serial {}), not at {:.3}s (serial {})",
                    after.node, after.project, before.at, before.serial, after.at, after.serial
                ));
            }
        }
    }
}

fn check_convergence(healed: &BTreeMap<String, NodeState>, verdict: &mut Verdict) {
    let states: BTreeSet<(u64, &str)> = healed
        .values()
        .map(|s| (s.applied_serial, s.digest.as_str()))
        .collect();
    if states.len() > 1 {
        let each: Vec<String> = healed
            .iter()
            .map(|(n, s)| format!("{n}: serial {} digest {}", s.applied_serial, s.digest))
            .collect();
        verdict
            .violations
            .push(format!("the healed nodes disagree: {}", each.join("; ")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(file: &str, serial: u64, term: u64, node: &str) -> Write {
        Write {
            client: "c".into(),
            sent_to: node.into(),
            project: "p".into(),
            filename: file.into(),
            sha256: format!("sha-{file}"),
            started: serial as f64,
            ended: serial as f64 + 0.1,
            outcome: Outcome::Acked {
                serial,
                term,
                node: node.into(),
            },
        }
    }

    fn state(serial: u64, files: &[&str]) -> NodeState {
        NodeState {
            applied_serial: serial,
            digest: format!("d{serial}"),
            files: BTreeMap::from([(
                "p".to_string(),
                files
                    .iter()
                    .map(|f| (f.to_string(), format!("sha-{f}")))
                    .collect(),
            )]),
        }
    }

    fn read(node: &str, at: f64, serial: u64, files: &[&str]) -> Read {
        Read {
            node: node.into(),
            incarnation: 0,
            at,
            serial,
            project: "p".into(),
            files: files.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let history = History {
            writes: vec![acked("a", 1, 1, "v1"), acked("b", 2, 2, "v2")],
            reads: vec![read("r", 0.5, 1, &["a"]), read("r", 2.5, 2, &["a", "b"])],
            observations: vec![],
        };
        let healed = BTreeMap::from([
            ("v1".to_string(), state(2, &["a", "b"])),
            ("r".to_string(), state(2, &["a", "b"])),
        ]);
        let verdict = check(&history, &healed);
        assert!(verdict.passed(), "{:?}", verdict.violations);
        assert_eq!((verdict.acked, verdict.lost), (2, 0));
    }

    #[test]
    fn an_acknowledged_write_missing_on_one_node_is_lost() {
        let history = History {
            writes: vec![acked("a", 1, 1, "v1")],
            ..History::default()
        };
        let healed = BTreeMap::from([
            ("v1".to_string(), state(1, &["a"])),
            ("r".to_string(), state(1, &[])),
        ]);
        let verdict = check(&history, &healed);
        assert_eq!(verdict.lost, 1);
        assert!(verdict.violations[0].contains("missing on r"));
    }

    #[test]
    fn an_unknown_or_refused_write_may_be_missing() {
        let mut unknown = acked("a", 1, 1, "v1");
        unknown.outcome = Outcome::Unknown {
            error: "timeout".into(),
        };
        let mut refused = acked("b", 2, 1, "v1");
        refused.outcome = Outcome::Refused { status: 503 };
        let history = History {
            writes: vec![unknown, refused],
            ..History::default()
        };
        let healed = BTreeMap::from([("v1".to_string(), state(0, &[]))]);
        assert!(check(&history, &healed).passed());
    }

    #[test]
    fn two_acknowledging_nodes_in_one_term_are_a_violation() {
        let history = History {
            writes: vec![acked("a", 1, 3, "v1"), acked("b", 2, 3, "v2")],
            ..History::default()
        };
        let healed = BTreeMap::from([("v1".to_string(), state(2, &["a", "b"]))]);
        let verdict = check(&history, &healed);
        assert!(verdict.violations.iter().any(|v| v.contains("term 3")));
    }

    #[test]
    fn an_ack_from_a_node_that_did_not_lead_its_term_is_a_violation() {
        let history = History {
            writes: vec![acked("a", 1, 3, "v1")],
            observations: vec![Observation {
                node: "v2".into(),
                at: 0.5,
                role: "leader".into(),
                term: 3,
            }],
            ..History::default()
        };
        let healed = BTreeMap::from([("v1".to_string(), state(1, &["a"]))]);
        let verdict = check(&history, &healed);
        assert!(verdict
            .violations
            .iter()
            .any(|v| v.contains("whose leader")));
    }

    #[test]
    fn reads_going_back_are_a_violation_but_not_across_a_wipe() {
        let mut history = History {
            reads: vec![read("r", 1.0, 5, &["a"]), read("r", 2.0, 4, &[])],
            ..History::default()
        };
        let healed = BTreeMap::new();
        assert_eq!(check(&history, &healed).violations.len(), 2);
        history.reads[1].incarnation = 1;
        assert!(check(&history, &healed).passed());
    }

    #[test]
    fn healed_nodes_that_disagree_are_a_violation() {
        let healed = BTreeMap::from([
            ("v1".to_string(), state(2, &[])),
            ("r".to_string(), state(1, &[])),
        ]);
        let verdict = check(&History::default(), &healed);
        assert!(verdict.violations[0].contains("disagree"));
    }
}
