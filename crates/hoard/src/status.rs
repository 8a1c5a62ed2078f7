//! `hoard status`: the whole cluster in one table, found from one node. It
//! asks the node at the URL, then every member and follower that its
//! `/+status` names, and theirs in turn (a replica may follow a replica).
//! A node that does not answer is a row that says so, and makes the
//! command exit 1, as does any node whose health is not `ok`.

use std::collections::{BTreeSet, VecDeque};
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{json, Value};

/// How long one node may take to answer.
const NODE_TIMEOUT: Duration = Duration::from_secs(2);
/// A bound on the nodes one survey visits.
const MAX_NODES: usize = 256;

/// One node as the survey found it.
struct Row {
    url: String,
    /// Its id as the node that named it knows it (for a silent node).
    named: Option<String>,
    status: Result<Value, String>,
}

impl Row {
    fn node_id(&self) -> String {
        match &self.status {
            Ok(s) => s["node_id"].as_str().unwrap_or("?").to_owned(),
            Err(_) => self.named.clone().unwrap_or_else(|| "?".into()),
        }
    }

    fn healthy(&self) -> bool {
        matches!(&self.status, Ok(s) if s["health"] == "ok")
    }
}

/// `hoard status --node`: one node's `/+status` as JSON; exits 1 unless
/// its health is `ok` (the container health check).
pub(crate) async fn node(url: &str) -> anyhow::Result<ExitCode> {
    let status = fetch(&client()?, url).await.map_err(anyhow::Error::msg)?;
    println!("{}", serde_json::to_string_pretty(&status)?);
    match status["health"].as_str() {
        Some("ok") => Ok(ExitCode::SUCCESS),
        other => {
            let problem = status["problem"].as_str();
            eprintln!(
                "{url}: health is {}{}",
                other.unwrap_or("missing"),
                problem.map(|p| format!(": {p}")).unwrap_or_default()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `hoard status [--json] [--watch SECS]`: the cluster table.
pub(crate) async fn cluster(
    url: &str,
    as_json: bool,
    watch: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let client = client()?;
    loop {
        let rows = survey(&client, url).await;
        let healthy = !rows.is_empty() && rows.iter().all(Row::healthy) && has_leader(&rows);
        let text = if as_json {
            serde_json::to_string_pretty(&survey_json(&rows, healthy))?
        } else {
            table(&rows, healthy)
        };
        let Some(every) = watch else {
            println!("{text}");
            return Ok(if healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        };
        if std::io::stdout().is_terminal() {
            // Clear the screen and go home, so the table redraws in place.
            print!("\x1b[2J\x1b[H");
        }
        let now = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[hour]:[minute]:[second] UTC"
            ))
            .unwrap_or_default();
        println!("{now}, every {every} s (Ctrl-C stops)\n{text}");
        tokio::time::sleep(Duration::from_secs(every.max(1))).await;
    }
}

fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(NODE_TIMEOUT)
        .connect_timeout(NODE_TIMEOUT)
        .build()
        .context("an HTTP client")
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let target = format!("{url}/+status");
    let response = client.get(&target).send().await.map_err(|e| match e {
        e if e.is_timeout() => format!("no answer within {NODE_TIMEOUT:?}"),
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

/// Every node reachable by names from the node at `start`, in the order
/// found. The nodes are asked one at a time: a cluster is a handful of
/// nodes, and a silent one costs at most [`NODE_TIMEOUT`].
async fn survey(client: &reqwest::Client, start: &str) -> Vec<Row> {
    let mut queue = VecDeque::from([(start.trim_end_matches('/').to_owned(), None)]);
    let mut seen_urls = BTreeSet::new();
    let mut seen_ids = BTreeSet::new();
    let mut rows = Vec::new();
    while let Some((url, named)) = queue.pop_front() {
        if rows.len() >= MAX_NODES || !seen_urls.insert(url.clone()) {
            continue;
        }
        let status = fetch(client, &url).await;
        if let Ok(s) = &status {
            // The same node under a second URL (its public_url, say).
            let id = s["node_id"].as_str().unwrap_or_default().to_owned();
            if !seen_ids.insert(id) {
                continue;
            }
            // A replica knows its leader's URL; a voter its members and
            // followers; each of them names the rest.
            if let Some(leader) = s["leader_url"].as_str().filter(|u| !u.is_empty()) {
                queue.push_back((leader.trim_end_matches('/').to_owned(), None));
            }
            let named_urls = s["members"]
                .as_array()
                .into_iter()
                .chain(s["followers"].as_array())
                .flatten();
            for other in named_urls {
                let Some(url) = other["http_url"].as_str().filter(|u| !u.is_empty()) else {
                    continue;
                };
                let name = other["node_id"].as_str().map(str::to_owned);
                queue.push_back((url.trim_end_matches('/').to_owned(), name));
            }
        } else if named.as_ref().is_some_and(|n| seen_ids.contains(n)) {
            continue;
        }
        rows.push(Row { url, named, status });
    }
    rows
}

fn has_leader(rows: &[Row]) -> bool {
    rows.iter()
        .any(|r| matches!(&r.status, Ok(s) if s["role"] == "leader"))
        || rows
            .iter()
            .all(|r| matches!(&r.status, Ok(s) if s["role"] == "replica"))
}

/// The leader's applied serial: what every other node's lag is against.
fn leader_serial(rows: &[Row]) -> Option<u64> {
    rows.iter().find_map(|r| match &r.status {
        Ok(s) if s["role"] == "leader" => s["applied_serial"].as_u64(),
        _ => None,
    })
}

fn survey_json(rows: &[Row], healthy: bool) -> Value {
    let nodes: Vec<Value> = rows
        .iter()
        .map(|r| match &r.status {
            Ok(s) => json!({"url": r.url, "node_id": r.node_id(), "reachable": true, "status": s}),
            Err(e) => json!({"url": r.url, "node_id": r.node_id(), "reachable": false, "error": e}),
        })
        .collect();
    json!({"healthy": healthy, "nodes": nodes})
}

fn table(rows: &[Row], healthy: bool) -> String {
    let leader_serial = leader_serial(rows);
    let mut lines = vec![[
        "NODE", "ROLE", "LEADER", "TERM", "EPOCH", "APPLIED", "LAG", "HEALTH", "URL",
    ]
    .map(str::to_owned)
    .to_vec()];
    for r in rows {
        let cells = match &r.status {
            Ok(s) => {
                let applied = s["applied_serial"].as_u64().unwrap_or_default();
                let lag = if s["role"] == "replica" {
                    let events = s["lag_events"].as_u64().unwrap_or_default();
                    let secs = s["lag_seconds"].as_f64().unwrap_or_default();
                    format!("{events} ({secs:.1} s)")
                } else {
                    leader_serial
                        .map(|l| l.saturating_sub(applied).to_string())
                        .unwrap_or_else(|| "-".into())
                };
                let health = match s["problem"].as_str() {
                    Some(problem) => format!("{}: {problem}", s["health"].as_str().unwrap_or("?")),
                    None => s["health"].as_str().unwrap_or("?").to_owned(),
                };
                vec![
                    r.node_id(),
                    s["role"].as_str().unwrap_or("?").to_owned(),
                    if s["role"] == "leader" {
                        "*".into()
                    } else {
                        String::new()
                    },
                    s["term"].as_u64().map_or("-".into(), |t| t.to_string()),
                    s["epoch"].as_u64().map_or("-".into(), |e| e.to_string()),
                    applied.to_string(),
                    lag,
                    health,
                    r.url.clone(),
                ]
            }
            Err(e) => vec![
                r.node_id(),
                "?".into(),
                String::new(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                e.clone(),
                r.url.clone(),
            ],
        };
        lines.push(cells);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    let down = rows.iter().filter(|r| !r.healthy()).count();
    out.push_str(&if healthy {
        format!("{} nodes, all healthy", rows.len())
    } else if down == 0 {
        format!("{} nodes, no leader", rows.len())
    } else {
        format!("{} nodes, {down} not healthy", rows.len())
    });
    out
}
