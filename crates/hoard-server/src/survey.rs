//! The whole cluster as seen from one node: ask a node's `/+status`, then
//! every member and follower it names, and theirs in turn (a replica may
//! follow a replica). `hoard status` and the web UI's cluster page both
//! read it. A node that does not answer is a report that says why.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use serde_json::{json, Value};

/// How long one node may take to answer.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(2);
/// A bound on the nodes one survey visits.
const MAX_NODES: usize = 256;

/// One node as the survey found it.
#[derive(Clone, Debug)]
pub struct NodeReport {
    pub url: String,
    /// Its id as the node that named it knows it (for a silent node).
    pub named: Option<String>,
    /// Its `/+status`, or why there is none.
    pub status: Result<Value, String>,
}

impl NodeReport {
    pub fn node_id(&self) -> String {
        match &self.status {
            Ok(s) => s["node_id"].as_str().unwrap_or("?").to_owned(),
            Err(_) => self.named.clone().unwrap_or_else(|| "?".into()),
        }
    }

    pub fn healthy(&self) -> bool {
        matches!(&self.status, Ok(s) if s["health"] == "ok")
    }

    pub fn role(&self) -> Option<&str> {
        self.status.as_ref().ok().and_then(|s| s["role"].as_str())
    }
}

/// Every node found, in the order found.
#[derive(Clone, Debug, Default)]
pub struct Survey {
    pub nodes: Vec<NodeReport>,
}

impl Survey {
    /// Healthy: every node answers and is `ok`, and there is a leader (or
    /// only replicas were found, which have no Raft view of their own).
    pub fn healthy(&self) -> bool {
        !self.nodes.is_empty() && self.nodes.iter().all(NodeReport::healthy) && self.has_leader()
    }

    pub fn has_leader(&self) -> bool {
        self.nodes.iter().any(|n| n.role() == Some("leader"))
            || self.nodes.iter().all(|n| n.role() == Some("replica"))
    }

    /// The leader's applied serial: what every other node's lag is against.
    pub fn leader_serial(&self) -> Option<u64> {
        self.nodes.iter().find_map(|n| match &n.status {
            Ok(s) if s["role"] == "leader" => s["applied_serial"].as_u64(),
            _ => None,
        })
    }

    /// The newest epoch any node reports.
    pub fn newest_epoch(&self) -> u64 {
        self.nodes
            .iter()
            .filter_map(|n| n.status.as_ref().ok()?["epoch"].as_u64())
            .max()
            .unwrap_or(0)
    }

    /// How far `report` is behind: a replica's own lag (events and
    /// seconds), a voter's distance from the leader's serial.
    pub fn lag(&self, report: &NodeReport) -> Option<(u64, Option<f64>)> {
        let s = report.status.as_ref().ok()?;
        if s["role"] == "replica" {
            return Some((
                s["lag_events"].as_u64().unwrap_or_default(),
                s["lag_seconds"].as_f64(),
            ));
        }
        let applied = s["applied_serial"].as_u64()?;
        Some((self.leader_serial()?.saturating_sub(applied), None))
    }

    /// The lag as a table shows it: `3`, `1 (0.5 s)`, or `-`.
    pub fn lag_text(&self, report: &NodeReport) -> String {
        match self.lag(report) {
            Some((events, Some(secs))) => format!("{events} ({secs:.1} s)"),
            Some((events, None)) => events.to_string(),
            None => "-".into(),
        }
    }

    /// All healthy, or how many nodes are down or unhealthy.
    pub fn summary(&self) -> String {
        let down = self.nodes.iter().filter(|n| !n.healthy()).count();
        let n = self.nodes.len();
        if self.healthy() {
            format!("{n} nodes, all healthy")
        } else if down == 0 {
            format!("{n} nodes, no leader")
        } else {
            format!("{n} nodes, {down} not healthy")
        }
    }

    /// The machine form: `hoard status --json` and `GET /+status/cluster`.
    pub fn to_json(&self) -> Value {
        let nodes: Vec<Value> = self
            .nodes
            .iter()
            .map(|n| match &n.status {
                Ok(s) => {
                    json!({"url": n.url, "node_id": n.node_id(), "reachable": true, "status": s})
                }
                Err(e) => {
                    json!({"url": n.url, "node_id": n.node_id(), "reachable": false, "error": e})
                }
            })
            .collect();
        json!({"healthy": self.healthy(), "summary": self.summary(), "nodes": nodes})
    }
}

/// A client for surveys: short timeouts, so that a silent node costs at
/// most [`NODE_TIMEOUT`].
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(NODE_TIMEOUT)
        .connect_timeout(NODE_TIMEOUT)
        .build()
}

/// One node's `/+status`, or why it has none.
pub async fn fetch(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let target = format!("{url}/+status");
    let response = client.get(&target).send().await.map_err(|e| match e {
        e if e.is_timeout() => format!("unreachable: no answer within {NODE_TIMEOUT:?}"),
        e if e.is_connect() => "unreachable: connection refused or no route".to_owned(),
        e => format!("unreachable: {e}"),
    })?;
    if !response.status().is_success() {
        return Err(format!("/+status answered {}", response.status()));
    }
    response
        .json()
        .await
        .map_err(|e| format!("/+status is not JSON: {e}"))
}

/// The URLs (with the ids they are known by) that a node's status names:
/// a replica knows its leader's URL, a voter its members and followers.
pub fn named_nodes(status: &Value) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    if let Some(leader) = status["leader_url"].as_str().filter(|u| !u.is_empty()) {
        found.push((leader.trim_end_matches('/').to_owned(), None));
    }
    let named = status["members"]
        .as_array()
        .into_iter()
        .chain(status["followers"].as_array())
        .flatten();
    for other in named {
        let Some(url) = other["http_url"].as_str().filter(|u| !u.is_empty()) else {
            continue;
        };
        let name = other["node_id"].as_str().map(str::to_owned);
        found.push((url.trim_end_matches('/').to_owned(), name));
    }
    found
}

/// Every node reachable by names from the node at `start`. `known` is
/// that node's status when the caller has it already (a node surveying
/// from itself). Nodes are asked one at a time: a cluster is a handful
/// of nodes.
pub async fn survey(client: &reqwest::Client, start: &str, known: Option<Value>) -> Survey {
    let start = start.trim_end_matches('/').to_owned();
    let mut queue = VecDeque::from([(start, None, known)]);
    let mut seen_urls = BTreeSet::new();
    let mut seen_ids = BTreeSet::new();
    let mut nodes = Vec::new();
    while let Some((url, named, known)) = queue.pop_front() {
        if nodes.len() >= MAX_NODES || !seen_urls.insert(url.clone()) {
            continue;
        }
        let status = match known {
            Some(status) => Ok(status),
            None => fetch(client, &url).await,
        };
        if let Ok(s) = &status {
            // The same node under a second URL (its public_url, say).
            let id = s["node_id"].as_str().unwrap_or_default().to_owned();
            if !seen_ids.insert(id) {
                continue;
            }
            for (url, name) in named_nodes(s) {
                queue.push_back((url, name, None));
            }
        } else if named.as_ref().is_some_and(|n| seen_ids.contains(n)) {
            continue;
        }
        nodes.push(NodeReport { url, named, status });
    }
    Survey { nodes }
}

/// A node's latest survey from itself, shared by the requests that want
/// one within [`SurveyCache::MAX_AGE`]: many open cluster pages then cost
/// one survey a second, not one each.
#[derive(Default)]
pub struct SurveyCache {
    client: std::sync::OnceLock<Option<reqwest::Client>>,
    last: tokio::sync::Mutex<Option<(std::time::Instant, Survey)>>,
}

impl SurveyCache {
    pub const MAX_AGE: Duration = Duration::from_secs(1);

    /// A survey starting from this node (`own_url`, whose status is
    /// `own`), at most [`Self::MAX_AGE`] old.
    pub async fn get(&self, own_url: &str, own: Value) -> Survey {
        // Waiting here while another request surveys is the point.
        let mut last = self.last.lock().await;
        if let Some((at, survey)) = last.as_ref() {
            if at.elapsed() < Self::MAX_AGE {
                return survey.clone();
            }
        }
        let survey = match self.client.get_or_init(|| client().ok()) {
            Some(client) => survey(client, own_url, Some(own)).await,
            // No client (no TLS roots, say): this node alone.
            None => Survey {
                nodes: vec![NodeReport {
                    url: own_url.to_owned(),
                    named: None,
                    status: Ok(own),
                }],
            },
        };
        *last = Some((std::time::Instant::now(), survey.clone()));
        survey
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, status: Value) -> NodeReport {
        NodeReport {
            url: format!("http://{id}"),
            named: Some(id.into()),
            status: Ok(status),
        }
    }

    #[test]
    fn health_lag_and_summary_follow_the_reports() {
        let mut survey = Survey {
            nodes: vec![
                report(
                    "a",
                    json!({"node_id": "a", "role": "leader", "health": "ok", "applied_serial": 10, "epoch": 1}),
                ),
                report(
                    "b",
                    json!({"node_id": "b", "role": "follower", "health": "ok", "applied_serial": 7, "epoch": 1}),
                ),
                report(
                    "c",
                    json!({"node_id": "c", "role": "replica", "health": "ok", "applied_serial": 9, "lag_events": 1, "lag_seconds": 0.5, "epoch": 2}),
                ),
            ],
        };
        assert!(survey.healthy());
        assert_eq!(survey.summary(), "3 nodes, all healthy");
        assert_eq!(survey.lag(&survey.nodes[1]), Some((3, None)));
        assert_eq!(survey.lag(&survey.nodes[2]), Some((1, Some(0.5))));
        assert_eq!(survey.lag_text(&survey.nodes[2]), "1 (0.5 s)");
        assert_eq!(survey.newest_epoch(), 2);

        survey.nodes.push(NodeReport {
            url: "http://d".into(),
            named: Some("d".into()),
            status: Err("unreachable: connection refused or no route".into()),
        });
        assert!(!survey.healthy());
        assert_eq!(survey.summary(), "4 nodes, 1 not healthy");
        assert_eq!(survey.nodes[3].node_id(), "d");
        assert_eq!(survey.to_json()["nodes"][3]["reachable"], false);

        survey
            .nodes
            .retain(|n| n.role() != Some("leader") && n.healthy());
        assert_eq!(survey.summary(), "2 nodes, no leader");
    }

    #[test]
    fn a_status_names_its_leader_members_and_followers() {
        let status = json!({
            "leader_url": "http://l/",
            "members": [{"node_id": "m", "http_url": "http://m"}, {"node_id": "x", "http_url": ""}],
            "followers": [{"node_id": "f", "http_url": "http://f/"}],
        });
        assert_eq!(
            named_nodes(&status),
            vec![
                ("http://l".to_owned(), None),
                ("http://m".to_owned(), Some("m".to_owned())),
                ("http://f".to_owned(), Some("f".to_owned())),
            ]
        );
    }
}
