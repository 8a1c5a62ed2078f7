//! The disaster-recovery commands: `hoard promote --force` starts a new
//! epoch on one node when no quorum can be reached, and `hoard rejoin`
//! brings a node that the new epoch fenced back as a voter. Both ask the
//! node to restart in place, then follow its `/+status` until it is done.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::cli::{admin_post, Target};

/// How often the node's status is read while waiting.
const POLL: Duration = Duration::from_millis(250);
/// How often progress is printed while a rejoining node catches up.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

async fn status(url: &str) -> anyhow::Result<Value> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let response = client
        .get(format!("{url}/+status"))
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    response.json().await.context("status is not JSON")
}

pub async fn force_promote(target: &Target, raft_id: u64, wait: u64) -> anyhow::Result<ExitCode> {
    let url = target.url()?;
    eprintln!(
        "forced promotion of {url}: it becomes the only voter (Raft id {raft_id}) of a new epoch"
    );
    let answer = admin_post(target, "local/force-promote", &json!({ "id": raft_id })).await?;
    let epoch = answer["epoch"]
        .as_u64()
        .context("the answer has no epoch")?;
    eprintln!(
        "epoch {epoch} (cluster {}) begins at serial {}; the node restarts",
        answer["cluster_id"].as_str().unwrap_or("?"),
        answer["last_serial"]
    );
    let deadline = Instant::now() + Duration::from_secs(wait);
    let led = loop {
        if let Ok(s) = status(&url).await {
            if s["epoch"].as_u64() == Some(epoch) && s["role"] == "leader" {
                break s;
            }
        }
        if Instant::now() > deadline {
            bail!("{url} did not lead epoch {epoch} within {wait}s; see its log");
        }
        tokio::time::sleep(POLL).await;
    };
    println!(
        "node {raft_id} leads epoch {epoch} and holds every event up to serial {}.",
        led["applied_serial"]
    );
    let fencing: Vec<&str> = answer["fencing"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !fencing.is_empty() {
        println!(
            "The old epoch's nodes ({}) are fenced as soon as they are reachable. \
             Run `hoard rejoin --url <node>` on each to bring it back as a voter.",
            fencing.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn rejoin(target: &Target, wait: u64) -> anyhow::Result<ExitCode> {
    let url = target.url()?;
    let answer = admin_post(target, "local/rejoin", &json!({})).await?;
    let epoch = answer["epoch"]
        .as_u64()
        .context("the answer has no epoch")?;
    let leader = answer["leader_url"]
        .as_str()
        .context("the answer names no leader")?
        .to_owned();
    let id = answer["raft_id"]
        .as_u64()
        .context("the answer has no raft_id")?;
    eprintln!(
        "{url} (voter {id}) restarts, empties its index (blobs stay) and joins epoch {epoch} through {leader}"
    );
    let deadline = Instant::now() + Duration::from_secs(wait);
    let mut last_progress = Instant::now();
    loop {
        let node = status(&url).await.ok();
        let target_serial = status(&leader)
            .await
            .ok()
            .and_then(|s| s["applied_serial"].as_u64());
        if let Some(s) = &node {
            let is_voter = s["voters"]
                .as_array()
                .is_some_and(|v| v.iter().any(|x| x.as_u64() == Some(id)));
            let serial = s["applied_serial"].as_u64().unwrap_or(0);
            let caught_up = target_serial.is_some_and(|t| serial >= t);
            if s["epoch"].as_u64() == Some(epoch)
                && s.get("pending").is_none()
                && s["health"] == "ok"
                && is_voter
                && caught_up
            {
                println!("node {id} is a voter of epoch {epoch} again, at serial {serial}.");
                return Ok(ExitCode::SUCCESS);
            }
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                eprintln!(
                    "catching up: serial {serial} of {}{}",
                    target_serial.map_or("?".into(), |t| t.to_string()),
                    if is_voter { "" } else { " (not a voter yet)" }
                );
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{url} did not rejoin within {wait}s; see its log and `hoard status --url {url}`"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}
