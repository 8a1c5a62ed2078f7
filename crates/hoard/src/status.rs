//! `hoard status`: the whole cluster in one table, found from one node
//! (`hoard_server::survey`). A node that does not answer is a row that
//! says so, and makes the command exit 1, as does any node whose health
//! is not `ok`.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use hoard_server::survey::{self, Survey};

/// `hoard status --node`: one node's `/+status` as JSON; exits 1 unless
/// its health is `ok` (the container health check).
pub(crate) async fn node(url: &str) -> anyhow::Result<ExitCode> {
    let status = survey::fetch(&client()?, url)
        .await
        .map_err(anyhow::Error::msg)?;
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
        let found = survey::survey(&client, url, None).await;
        let healthy = found.healthy();
        let text = if as_json {
            serde_json::to_string_pretty(&found.to_json())?
        } else {
            table(&found)
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
    survey::client().context("an HTTP client")
}

fn table(survey: &Survey) -> String {
    let mut lines = vec![[
        "NODE", "ROLE", "LEADER", "TERM", "EPOCH", "APPLIED", "LAG", "HEALTH", "URL",
    ]
    .map(str::to_owned)
    .to_vec()];
    for r in &survey.nodes {
        let cells = match &r.status {
            Ok(s) => {
                let applied = s["applied_serial"].as_u64().unwrap_or_default();
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
                    survey.lag_text(r),
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
    out.push_str(&survey.summary());
    out
}
