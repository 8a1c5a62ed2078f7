//! Node-level endpoints: the landing page, `/+status`, and the admin API
//! (`/+admin/…`) that the CLI drives.

use std::sync::Arc;

use hoard_core::{Change, Perm, RepoFormat, RepoKind, RepoName, RepoSettings};
use hoard_store::{Rejection, StoreError};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use crate::body::read_small;
use crate::error::ApiError;
use crate::http::{json, with_body, HandlerResult};
use crate::node::{Node, NodeRole, Principal};

const MAX_ADMIN_BODY: u64 = 64 * 1024;

pub fn landing(node: &Node, _req: &Request<Incoming>) -> HandlerResult {
    let role = if node.is_primary() {
        "primary"
    } else {
        "replica"
    };
    let mut text = format!(
        "hoard node {} ({role}), serial {}\n\nrepositories:\n",
        node.config.node_id,
        node.applied_serial()
    );
    for repo in node.index.repos()? {
        let format = match repo.settings.format {
            RepoFormat::Pypi => "pypi",
            RepoFormat::Npm => "npm",
        };
        text.push_str(&format!(
            "  {} ({format}): {}/{}/\n",
            repo.name,
            node.config.public_url(),
            repo.name
        ));
    }
    Ok(with_body(StatusCode::OK, "text/plain; charset=utf-8", text))
}

pub fn status(node: &Node) -> HandlerResult {
    let counts = node.index.counts()?;
    let applied = node.applied_serial();
    let mut status = json!({
        "node_id": node.config.node_id,
        "public_url": node.config.public_url(),
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
        NodeRole::Primary(_) => json!({
            "role": "primary",
            "leader_id": node.config.node_id,
            "leader_url": node.config.public_url(),
            "commit_serial": applied.0,
            "health": "ok",
        }),
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
    }
    Ok(json(StatusCode::OK, &status))
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
        ["tokens"] => create_token(node, &principal, &body).await,
        ["yank"] => yank(node, &principal, &body).await,
        ["repos"] => create_repo(node, &principal, &body).await,
        _ => Err(ApiError::not_found("no such admin endpoint")),
    }
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

fn parse_repo(name: &str) -> Result<RepoName, ApiError> {
    name.parse()
        .map_err(|e| ApiError::bad_request(format!("{e}")))
}

fn rejected(e: StoreError) -> ApiError {
    match e {
        StoreError::Rejected(r @ (Rejection::RepoMissing(_) | Rejection::FileMissing(_))) => {
            ApiError::not_found(r.to_string())
        }
        StoreError::Rejected(r) => ApiError::new(StatusCode::CONFLICT, r.to_string()),
        other => other.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    repo: Option<String>,
    perm: String,
    label: Option<String>,
}

async fn create_token(node: &Node, principal: &Principal, body: &[u8]) -> HandlerResult {
    let req: TokenRequest = parse_json(body)?;
    let perm: Perm = req
        .perm
        .parse()
        .map_err(|e| ApiError::bad_request(format!("{e}")))?;
    let repo = req.repo.as_deref().map(parse_repo).transpose()?;
    let allowed = match &repo {
        Some(repo) => principal.allows(repo, Perm::Admin),
        None => principal.is_global_admin(),
    };
    if !allowed {
        return Err(ApiError::forbidden(
            "creating this token needs an admin token for its scope",
        ));
    }
    let label = req
        .label
        .unwrap_or_else(|| format!("{perm}@{}", repo.as_ref().map_or("*", |r| r.as_str())));
    let secret = node
        .create_token(&principal.actor(), repo, perm, label)
        .await
        .map_err(rejected)?;
    Ok(json(StatusCode::OK, &json!({ "token": secret })))
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
        .await
        .map_err(rejected)?;
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
        .await
        .map_err(rejected)?;
    Ok(json(StatusCode::OK, &json!({ "serial": serial.0 })))
}
