//! Promotion: `hoard promote` hands leadership to a voter, or to a
//! replica once it has joined as a voter; `hoard promote --force` starts
//! a new epoch on one node when no quorum can be reached; `hoard rejoin`
//! brings a node that the new epoch fenced back as a voter. A node that
//! changes what it is restarts in place; the commands follow its
//! `/+status` until it is done, and show progress.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use hoard_cluster::{ClusterIdentity, Contact, Epoch};
use hoard_server::Role;
use hoard_store::Index;

use crate::cli::{admin_post, AdminRefusal, Target};
use crate::progress::Progress;

/// How often the node's status is read while waiting.
const POLL: Duration = Duration::from_millis(250);

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

/// A planned handover to `raft_id`, the node at `--url`. A replica first
/// joins as a voter and catches up. With `replace`, that voter (a dead
/// one, say) is removed afterwards.
pub async fn promote(
    target: &Target,
    raft_id: u64,
    replace: Option<u64>,
    wait: u64,
) -> anyhow::Result<ExitCode> {
    let url = target.url()?;
    let s = status(&url).await?;
    if s["role"] == "replica" {
        eprintln!(
            "{url} is a replica: it joins the Raft group as voter {raft_id} (its blobs stay), catches up, then takes leadership"
        );
        let answer = admin_post(target, "local/join", &json!({ "id": raft_id })).await?;
        let epoch = answer["epoch"].as_u64();
        let fallback = s["leader_url"].as_str().unwrap_or_default().to_owned();
        wait_until_caught_up_voter(&url, raft_id, epoch, &fallback, wait).await?;
    }
    let body = json!({ "id": raft_id, "wait_secs": wait });
    let answer = admin_post(target, "promote", &body).await?;
    println!("node {raft_id} leads now (term {}).", answer["term"]);
    if let Some(dead) = replace {
        // Right after a handover the node may not know the new leader yet
        // (a 503); that passes within an election timeout.
        let deadline = Instant::now() + Duration::from_secs(wait);
        loop {
            match admin_post(target, "members/remove", &json!({ "id": dead })).await {
                Ok(_) => break,
                Err(e)
                    if e.downcast_ref::<AdminRefusal>()
                        .is_some_and(|r| r.status == reqwest::StatusCode::SERVICE_UNAVAILABLE)
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => return Err(e),
            }
        }
        println!("voter {dead} is no longer a member.");
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
    let serial = wait_until_caught_up_voter(&url, id, Some(epoch), &leader, wait).await?;
    println!("node {id} is a voter of epoch {epoch} again, at serial {serial}.");
    Ok(ExitCode::SUCCESS)
}

/// `hoard rejoin --leader URL` on a stopped node: prepares its data dir so
/// that its next start empties its index (blobs stay) and joins the
/// leader's epoch. It never runs the old epoch again, so it cannot join
/// old peers in an election before it hears of the new epoch.
pub async fn rejoin_stopped(target: &Target, leader: &str) -> anyhow::Result<ExitCode> {
    let config = target.local_config()?;
    let leader = leader.trim_end_matches('/');
    let s = status(leader).await?;
    if s["role"] != "leader" {
        bail!("{leader} is not the leader (its role is {})", s["role"]);
    }
    let identity = ClusterIdentity {
        cluster_id: s["cluster_id"]
            .as_str()
            .context("the leader's status has no cluster_id")?
            .to_owned(),
        epoch: s["epoch"]
            .as_u64()
            .context("the leader's status has no epoch")?,
        since_serial: s["epoch_since_serial"].as_u64().unwrap_or(0),
        previous: s["epoch_previous"].as_str().map(str::to_owned),
    };
    let grpc = s["grpc_addr"]
        .as_str()
        .context("the leader's status has no grpc_addr")?
        .to_owned();
    // A running node holds its index's lock: refuse to touch its state.
    let index_dir = config.data_dir.join("index");
    drop(Index::open(&index_dir).with_context(|| {
        format!(
            "cannot open {}; stop the node first (or rejoin it while it runs, without --leader)",
            index_dir.display()
        )
    })?);
    let epoch = Epoch::open(
        &config.data_dir,
        Contact {
            grpc_addr: config.grpc_public(),
            http_url: config.public_url(),
        },
    )?;
    let voter_id = match (epoch.voter_id(), config.role) {
        (Some(id), _) => id,
        (None, Role::Voter) => config.raft_id,
        (None, Role::Replica) => bail!(
            "{} is a replica's data dir: a replica does not rejoin; start it and it follows, or rebuild it",
            config.data_dir.display()
        ),
    };
    epoch.prepare_rejoin(identity.clone(), voter_id, grpc)?;
    println!(
        "node {voter_id} will join {identity} through {leader} at its next start, emptying its index first (blobs stay). Start it now; `hoard status --url {}` shows its progress.",
        config.public_url()
    );
    Ok(ExitCode::SUCCESS)
}

/// Follows the node at `url` until it is voter `id` (of `epoch`, if
/// given), healthy, and has applied what the leader had; prints progress.
/// Returns its applied serial.
async fn wait_until_caught_up_voter(
    url: &str,
    id: u64,
    epoch: Option<u64>,
    fallback_leader: &str,
    wait: u64,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(wait);
    let mut progress = Progress::new("catching up: serial", None);
    loop {
        if let Ok(s) = status(url).await {
            let leader = s["leader_url"]
                .as_str()
                .filter(|l| !l.is_empty() && *l != url)
                .unwrap_or(fallback_leader)
                .to_owned();
            let target_serial = status(&leader)
                .await
                .ok()
                .and_then(|l| l["applied_serial"].as_u64());
            let is_voter = s["voters"]
                .as_array()
                .is_some_and(|v| v.iter().any(|x| x.as_u64() == Some(id)));
            let serial = s["applied_serial"].as_u64().unwrap_or(0);
            let caught_up = target_serial.is_some_and(|t| serial >= t);
            if epoch.is_none_or(|e| s["epoch"].as_u64() == Some(e))
                && s.get("pending").is_none()
                && s["health"] == "ok"
                && is_voter
                && caught_up
            {
                progress.finish();
                eprintln!("caught up: serial {serial}, a voter");
                return Ok(serial);
            }
            progress.update(
                serial,
                target_serial,
                if is_voter { "" } else { "(not a voter yet)" },
            );
        }
        if Instant::now() > deadline {
            progress.finish();
            bail!("{url} did not catch up as voter {id} within {wait}s; see its log and `hoard status --url {url}`");
        }
        tokio::time::sleep(POLL).await;
    }
}
