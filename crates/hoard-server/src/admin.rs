//! Node-level endpoints: the landing page, `/+status`, and the admin API
//! (`/+admin/…`) that the CLI drives.

use std::sync::Arc;

use hoard_core::{Change, Perm, RepoFormat, RepoKind, RepoName, RepoSettings};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::read_small;
use crate::error::ApiError;
use crate::http::{json, with_body, HandlerResult};
use crate::node::{Node, NodeRole, Principal};

const MAX_ADMIN_BODY: u64 = 64 * 1024;

pub fn landing(node: &Node, _req: &Request<Incoming>) -> HandlerResult {
    let role = node.role_kind().as_str();
    let mut text = format!(
        "hoard node {} ({role}), serial {}\n\nrepositories:\n",
        node.config.node_id,
        node.applied_serial()
    );
    for repo in node.index.repos()? {
        let format = repo.settings.format.as_str();
        text.push_str(&format!(
            "  {} ({format}): {}/{}/\n",
            repo.name,
            node.config.public_url(),
            repo.name
        ));
    }
    text.push_str(&format!("\nweb UI: {}/+ui/\n", node.config.public_url()));
    Ok(with_body(StatusCode::OK, "text/plain; charset=utf-8", text))
}

pub fn status(node: &Node) -> HandlerResult {
    Ok(json(StatusCode::OK, &status_value(node)?))
}

/// `GET /+status/cluster`: every node this one finds (see
/// [`crate::survey`]), as `hoard status --json` prints it.
pub async fn cluster_status(node: &Node) -> HandlerResult {
    Ok(json(StatusCode::OK, &cluster_survey(node).await?.to_json()))
}

pub async fn cluster_survey(node: &Node) -> Result<crate::survey::Survey, ApiError> {
    let own = status_value(node)?;
    Ok(node.survey.get(&node.config.public_url(), own).await)
}

/// This node's `/+status` document.
pub fn status_value(node: &Node) -> Result<Value, ApiError> {
    let counts = node.index.counts()?;
    let applied = node.applied_serial();
    let mut status = json!({
        "node_id": node.config.node_id,
        "version": env!("CARGO_PKG_VERSION"),
        "public_url": node.config.public_url(),
        "grpc_addr": node.config.grpc_public(),
        "applied_serial": applied.0,
        "digest": node.index.digest()?.to_hex(),
        "uptime_secs": node.started.elapsed().as_secs(),
        "counts": {
            "repos": counts.repos,
            "projects": counts.projects,
            "files": counts.files,
            "tokens": counts.tokens,
        },
    });
    let fields = match &node.role {
        NodeRole::Voter { raft, .. } => {
            let view = raft.view().borrow().clone();
            let problem = raft.problem();
            json!({
                "role": view.role.as_str(),
                "raft_id": view.node_id,
                "leader_id": view.leader_id,
                "leader_url": view.leader_url,
                "term": view.term,
                // Every applied event is committed; events committed but
                // not yet applied here are not counted.
                "commit_serial": applied.0,
                "commit_index": view.commit_index,
                "voters": view.voters,
                "learners": view.learners,
                // Where each member is, so that a status table can ask it.
                "members": view.nodes.iter().map(|(id, info)| json!({
                    "raft_id": id,
                    "node_id": info.name,
                    "http_url": info.http_url,
                    "grpc_addr": info.grpc_addr,
                    "voter": view.voters.contains(id),
                })).collect::<Vec<_>>(),
                "snapshots_installed": raft.snapshots_installed(),
                "health": if problem.is_some() { "unhealthy" } else { "ok" },
                "problem": problem,
            })
        }
        NodeRole::Replica(follower) => {
            let f = follower.status();
            let upstream_serial = f.upstream_serial.max(applied.0);
            json!({
                "role": "replica",
                "leader_url": node.primary_url(),
                "commit_serial": upstream_serial,
                "upstream": f.upstream,
                "upstream_connected": f.connected,
                "upstream_serial": upstream_serial,
                "lag_events": upstream_serial - applied.0,
                "lag_seconds": f.lag_seconds(applied),
                "pending_blobs": f.pending_blobs,
                "blob_bytes_fetched": f.blob_bytes_fetched,
                "health": if f.problem.is_some() { "unhealthy" } else { "ok" },
                "problem": f.problem,
            })
        }
    };
    if let (Some(status), Some(fields)) = (status.as_object_mut(), fields.as_object()) {
        status.extend(fields.clone());
        let followers: Vec<Value> = node
            .subscribers
            .list()
            .into_iter()
            .map(|f| {
                json!({
                    "node_id": f.node_id,
                    "http_url": f.http_url,
                    "connected": f.connected,
                    "for_secs": f.for_secs,
                    "since_serial": f.since.0,
                    "sent_serial": f.sent.0,
                })
            })
            .collect();
        status.insert("followers".into(), json!(followers));
        let identity = node.epoch.known_identity();
        status.insert(
            "epoch".into(),
            json!(identity.as_ref().map_or(0, |i| i.epoch)),
        );
        if let Some(i) = &identity {
            status.insert("epoch_since_serial".into(), json!(i.since_serial));
            status.insert("epoch_previous".into(), json!(i.previous));
        }
        status.insert("cluster_id".into(), json!(identity.map(|i| i.cluster_id)));
        if let Some(f) = node.epoch.fenced() {
            status.insert("health".into(), json!("fenced"));
            status.insert("leader_url".into(), json!(f.contact_url));
            status.insert(
                "problem".into(),
                json!(format!(
                    "fenced: {} superseded this node's epoch (its leader: {}); it no longer votes or writes. Run `hoard rejoin` to reset it from the new leader",
                    f.identity, f.contact_url
                )),
            );
            status.insert(
                "fenced_by".into(),
                json!({"epoch": f.identity.epoch, "cluster_id": f.identity.cluster_id, "leader_url": f.contact_url}),
            );
        }
        if let Some(step) = node.epoch.pending() {
            status.insert("pending".into(), json!(step));
        }
    }
    Ok(status)
}

pub async fn handle(node: &Arc<Node>, req: Request<Incoming>, rest: &[String]) -> HandlerResult {
    if req.method() != Method::POST {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "admin endpoints take POST",
        ));
    }
    let principal = node
        .authenticate(req.headers())?
        .ok_or_else(|| ApiError::unauthorized("the admin API needs an admin token"))?;
    let body = read_small(req.into_body(), MAX_ADMIN_BODY, node.config.body_timeout())
        .await
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    match rest
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["yank"] => yank(node, &principal, &body).await,
        ["repos"] => create_repo(node, &principal, &body).await,
        ["members", "list"] => list_members(node, &principal),
        ["members", "add"] => add_member(node, &principal, &body).await,
        ["members", "remove"] => remove_member(node, &principal, &body).await,
        ["promote"] => promote(node, &principal, &body).await,
        ["local", "force-promote"] => force_promote(node, &principal, &body).await,
        ["local", "rejoin"] => rejoin(node, &principal),
        ["local", "join"] => join(node, &principal, &body),
        ["local", "backup"] => crate::backup::handle(node, &principal, &body).await,
        path => crate::accounts::handle(node, &principal, path, &body).await,
    }
}

fn require_global_admin(principal: &Principal, what: &str) -> Result<(), ApiError> {
    if principal.is_global_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "{what} needs a global admin token"
        )))
    }
}

fn voter(node: &Node) -> Result<&Arc<hoard_cluster::RaftNode>, ApiError> {
    node.raft().ok_or_else(|| {
        ApiError::bad_request("this node is a read replica, not a member of the Raft group")
    })
}

fn members_json(node: &Node) -> Result<serde_json::Value, ApiError> {
    let view = voter(node)?.view().borrow().clone();
    let describe = |id: &u64| {
        let info = view.nodes.get(id);
        json!({
            "id": id,
            "grpc_addr": info.map(|n| n.grpc_addr.clone()),
            "http_url": info.map(|n| n.http_url.clone()),
            "leader": view.leader_id == Some(*id),
        })
    };
    Ok(json!({
        "leader_id": view.leader_id,
        "term": view.term,
        "voters": view.voters.iter().map(describe).collect::<Vec<_>>(),
        "learners": view.learners.iter().map(describe).collect::<Vec<_>>(),
    }))
}

fn list_members(node: &Node, principal: &Principal) -> HandlerResult {
    require_global_admin(principal, "listing members")?;
    Ok(json(StatusCode::OK, &members_json(node)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMemberRequest {
    id: u64,
    grpc_addr: String,
    http_url: String,
    /// Add as a learner only: it follows the log but does not vote.
    #[serde(default)]
    learner: bool,
    /// The member's `node_id`: with cluster TLS, the common name of its
    /// certificate, which then alone may speak for this Raft id.
    #[serde(default)]
    node_id: Option<String>,
}

async fn add_member(node: &Node, principal: &Principal, body: &[u8]) -> HandlerResult {
    require_global_admin(principal, "changing members")?;
    let req: AddMemberRequest = parse_json(body)?;
    if req.id == 0 {
        return Err(ApiError::bad_request("a member id must be positive"));
    }
    if !(req.http_url.starts_with("http://") || req.http_url.starts_with("https://")) {
        return Err(ApiError::bad_request(format!(
            "http_url {:?} must start with http:// or https://",
            req.http_url
        )));
    }
    let name = req.node_id.filter(|n| !n.is_empty());
    if name.is_none() && node.config.cluster_tls.is_some() {
        // Unbound, any cluster certificate could speak for the member.
        return Err(ApiError::bad_request(
            "with cluster TLS, a member needs its node_id (hoard members add --node-id NAME), \
             the common name of its certificate",
        ));
    }
    let info = hoard_cluster::NodeInfo {
        grpc_addr: req.grpc_addr,
        http_url: req.http_url.trim_end_matches('/').to_owned(),
        name,
    };
    voter(node)?
        .add_member(req.id, info, req.learner)
        .await
        .map_err(propose_error)?;
    Ok(json(StatusCode::OK, &members_json(node)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveMemberRequest {
    id: u64,
}

async fn remove_member(node: &Node, principal: &Principal, body: &[u8]) -> HandlerResult {
    require_global_admin(principal, "changing members")?;
    let req: RemoveMemberRequest = parse_json(body)?;
    let raft = voter(node)?;
    let view = raft.view().borrow().clone();
    if !view.voters.contains(&req.id) && !view.learners.contains(&req.id) {
        return Err(ApiError::not_found(format!(
            "node {} is not a member",
            req.id
        )));
    }
    raft.remove_member(req.id).await.map_err(propose_error)?;
    Ok(json(StatusCode::OK, &members_json(node)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteRequest {
    id: u64,
    #[serde(default = "promote_wait")]
    wait_secs: u64,
}

fn promote_wait() -> u64 {
    10
}

async fn promote(node: &Node, principal: &Principal, body: &[u8]) -> HandlerResult {
    require_global_admin(principal, "a leadership transfer")?;
    let req: PromoteRequest = parse_json(body)?;
    voter(node)?
        .transfer_leadership(req.id, std::time::Duration::from_secs(req.wait_secs))
        .await
        .map_err(propose_error)?;
    Ok(json(StatusCode::OK, &members_json(node)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RaftIdRequest {
    /// The Raft id this node takes (or has) as a voter.
    id: u64,
}

/// The positive Raft id that a node-local promotion request names.
fn raft_id_in(body: &[u8]) -> Result<u64, ApiError> {
    let req: RaftIdRequest = parse_json(body)?;
    if req.id == 0 {
        return Err(ApiError::bad_request("a Raft id must be positive"));
    }
    Ok(req.id)
}

/// Disaster recovery, on the node to promote: it becomes the only voter
/// of a new epoch at its next start, which follows at once.
async fn force_promote(node: &Node, principal: &Principal, body: &[u8]) -> HandlerResult {
    require_global_admin(principal, "a forced promotion")?;
    let id = raft_id_in(body)?;
    // The old epoch's nodes that the new leader fences.
    let old_members: Vec<String> = match &node.role {
        NodeRole::Voter { raft, .. } => {
            if raft.id() != id {
                return Err(ApiError::bad_request(format!(
                    "this node is voter {}; a voter keeps its Raft id when it is promoted",
                    raft.id()
                )));
            }
            let view = raft.view().borrow().clone();
            view.nodes.values().map(|n| n.grpc_addr.clone()).collect()
        }
        NodeRole::Replica(_) => node.config.upstreams.clone(),
    };
    // The new epoch holds this node's history as it is on disk now.
    node.index.flush()?;
    let serial = node.index.applied_serial()?;
    let identity = node
        .epoch
        .begin_new_epoch(id, old_members.clone(), serial.0)
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, e.to_string()))?;
    tracing::warn!(%identity, %serial, fencing = ?old_members, "forced promotion: this node starts {identity} as its only voter");
    restarting(
        node,
        "forced promotion",
        json!({
            "raft_id": id,
            "epoch": identity.epoch,
            "cluster_id": identity.cluster_id,
            "last_serial": serial.0,
            "fencing": old_members,
        }),
    )
}

/// On a node that a newer epoch fenced: reset it from that epoch's
/// leader at the next start (which follows at once), and join it.
fn rejoin(node: &Node, principal: &Principal) -> HandlerResult {
    require_global_admin(principal, "a rejoin")?;
    let raft = voter(node)?;
    let by = node
        .epoch
        .begin_rejoin(raft.id())
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, e.to_string()))?;
    restarting(
        node,
        "rejoining the new epoch",
        json!({
            "raft_id": raft.id(),
            "epoch": by.identity.epoch,
            "cluster_id": by.identity.cluster_id,
            "leader_url": by.contact_url,
        }),
    )
}

/// Answers a node-local step that takes effect at the next start (202),
/// and asks for that start.
fn restarting(node: &Node, why: &str, mut answer: serde_json::Value) -> HandlerResult {
    node.request_restart(why);
    if let Some(fields) = answer.as_object_mut() {
        fields.insert("restarting".into(), json!(true));
    }
    Ok(json(StatusCode::ACCEPTED, &answer))
}

/// On a replica, the first step of its planned promotion: at its next
/// start (which follows at once) it joins its upstreams' Raft group.
fn join(node: &Node, principal: &Principal, body: &[u8]) -> HandlerResult {
    require_global_admin(principal, "joining the Raft group")?;
    // One that no node ever had.
    let id = raft_id_in(body)?;
    if !matches!(node.role, NodeRole::Replica(_)) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "this node is a member of the Raft group already",
        ));
    }
    let identity = node
        .epoch
        .begin_join(id, node.config.upstreams.clone())
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, e.to_string()))?;
    restarting(
        node,
        "joining the Raft group as a voter",
        json!({
            "raft_id": id,
            "epoch": identity.epoch,
            "cluster_id": identity.cluster_id,
        }),
    )
}

fn propose_error(e: hoard_cluster::ProposeError) -> ApiError {
    use hoard_cluster::{ProposeError, WriteError};
    ApiError::from(match e {
        ProposeError::Rejected(r) => WriteError::Rejected(r),
        ProposeError::NotLeader { leader_url } => WriteError::NotLeader { leader_url },
        ProposeError::Unavailable(reason) => WriteError::Unavailable {
            retry_after: std::time::Duration::from_secs(1),
            reason,
        },
    })
}

pub(crate) fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

pub(crate) fn parse_repo(name: &str) -> Result<RepoName, ApiError> {
    name.parse()
        .map_err(|e| ApiError::bad_request(format!("{e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct YankRequest {
    repo: String,
    project: String,
    version: Option<String>,
    filename: Option<String>,
    reason: Option<String>,
    #[serde(default)]
    undo: bool,
}

async fn yank(node: &Node, principal: &Principal, body: &[u8]) -> HandlerResult {
    let req: YankRequest = parse_json(body)?;
    let repo = parse_repo(&req.repo)?;
    if !principal.allows(&repo, Perm::Admin) {
        return Err(ApiError::forbidden(format!(
            "yanking in {repo} needs an admin token"
        )));
    }
    let project = hoard_pypi::normalize_project_name(&req.project);
    // Yanking through a virtual repository yanks in the hosted member that
    // holds the project.
    let repo = match node.index.repo(&repo)?.map(|r| r.settings.kind) {
        Some(hoard_core::RepoKind::Virtual(v)) => {
            let mut holder = None;
            for member in v.members {
                let hosted = node
                    .index
                    .repo(&member)?
                    .is_some_and(|m| matches!(m.settings.kind, hoard_core::RepoKind::Hosted));
                if hosted && node.index.project(&member, &project, None)?.is_some() {
                    holder = Some(member);
                    break;
                }
            }
            holder.ok_or_else(|| {
                ApiError::not_found(format!("no hosted member of {repo} has {project}"))
            })?
        }
        _ => repo,
    };
    let version = req
        .version
        .as_deref()
        .map(hoard_pypi::normalize_version)
        .transpose()?;
    let files = node.index.files(&repo, &project, None)?;
    let filenames: Vec<String> = files
        .iter()
        .filter(|f| version.as_ref().is_none_or(|v| &f.record.version == v))
        .filter(|f| {
            req.filename
                .as_ref()
                .is_none_or(|n| &f.record.filename == n)
        })
        .map(|f| f.record.filename.clone())
        .collect();
    if version.is_none() && req.filename.is_none() {
        return Err(ApiError::bad_request(
            "name a version or a filename to yank",
        ));
    }
    if filenames.is_empty() {
        return Err(ApiError::not_found(format!(
            "no matching files of {project} in {repo}"
        )));
    }
    let reason = if req.undo {
        None
    } else {
        Some(req.reason.unwrap_or_default())
    };
    let serial = node
        .commit(
            &principal.actor(),
            Change::FilesYanked {
                repo,
                project,
                filenames: filenames.clone(),
                reason,
            },
        )
        .await?;
    Ok(json(
        StatusCode::OK,
        &json!({ "serial": serial.0, "filenames": filenames }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RepoRequest {
    name: String,
    format: RepoFormat,
    #[serde(default = "yes")]
    anonymous_read: bool,
    #[serde(default)]
    allow_unpublish: bool,
}

fn yes() -> bool {
    true
}

async fn create_repo(node: &Node, principal: &Principal, body: &[u8]) -> HandlerResult {
    let req: RepoRequest = parse_json(body)?;
    if !principal.is_global_admin() {
        return Err(ApiError::forbidden(
            "creating a repository needs a global admin token",
        ));
    }
    let repo = parse_repo(&req.name)?;
    let settings = RepoSettings {
        format: req.format,
        kind: RepoKind::Hosted,
        anonymous_read: req.anonymous_read,
        allow_unpublish: req.allow_unpublish,
    };
    let serial = node
        .commit(&principal.actor(), Change::RepoCreated { repo, settings })
        .await?;
    Ok(json(StatusCode::OK, &json!({ "serial": serial.0 })))
}
