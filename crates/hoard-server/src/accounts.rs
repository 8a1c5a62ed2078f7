//! The admin API for accounts, that `hoard user|owner|token` drives: users
//! (events, so every node can check a password), the owners of packages,
//! and tokens with their scopes. Secrets go in once and never come back
//! out: answers carry no password hash and no token hash.

use hoard_core::{Change, Perm, RepoFormat, RepoKind, RepoName, UserRecord};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::admin::{parse_json, parse_repo};
use crate::auth::{hash_password, is_argon2id_phc, is_legacy_hash};
use crate::error::ApiError;
use crate::http::{json, HandlerResult};
use crate::node::{now_us, Node, Principal, TokenScope};
use crate::virtual_repo::upload_target;

/// The longest user name, as npm's.
const MAX_USER_NAME: usize = 64;
/// A password shorter than this is refused: it would fall to a guess.
const MIN_PASSWORD_LEN: usize = 8;

pub async fn handle(
    node: &Node,
    principal: &Principal,
    path: &[&str],
    body: &[u8],
) -> HandlerResult {
    match path {
        ["users", "add"] => add_user(node, principal, body).await,
        ["users", "passwd"] => change_user(node, principal, body).await,
        ["users", "remove"] => remove_user(node, principal, body).await,
        ["users", "list"] => list_users(node, principal),
        ["owners", "add"] => change_owners(node, principal, body, true).await,
        ["owners", "remove"] => change_owners(node, principal, body, false).await,
        ["owners", "list"] => list_owners(node, principal, body),
        ["tokens"] | ["tokens", "create"] => create_token(node, principal, body).await,
        ["tokens", "list"] => list_tokens(node, principal, body),
        ["tokens", "revoke"] => revoke_token(node, principal, body).await,
        _ => Err(ApiError::not_found("no such admin endpoint")),
    }
}

/// A user name: what npm accepts, and safe in URLs and logs.
fn check_user_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_USER_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid user name {:?}: use letters, digits, '.', '_' and '-', starting with a letter or digit, at most {MAX_USER_NAME}",
            name.chars().take(80).collect::<String>()
        )))
    }
}

fn check_password(password: &str) -> Result<(), ApiError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(ApiError::bad_request(format!(
            "the password is too short: use at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    Ok(())
}

fn require_admin(principal: &Principal, what: &str) -> Result<(), ApiError> {
    if principal.is_global_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!("{what} needs an admin")))
    }
}

/// The user a principal acts as, whatever its permission: the one whose
/// own password and tokens it may manage.
fn own_user(principal: &Principal) -> Option<String> {
    match principal {
        Principal::NodeAdmin => None,
        Principal::Token(t) => t.user.clone(),
        Principal::User(u) => Some(u.name.clone()),
    }
}

async fn hash_off_thread(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ApiError::internal(format!("hashing the password failed: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRequest {
    name: String,
    password: Option<String>,
    /// Instead of a password: another system's argon2id hash of it (an
    /// import keeps devpi's users' passwords this way). Admins only.
    password_hash: Option<String>,
    admin: Option<bool>,
    email: Option<String>,
}

async fn add_user(node: &Node, principal: &Principal, body: &[u8]) -> HandlerResult {
    require_admin(principal, "adding a user")?;
    let req: UserRequest = parse_json(body)?;
    check_user_name(&req.name)?;
    let password_hash = match (req.password, req.password_hash) {
        (Some(password), None) => {
            check_password(&password)?;
            hash_off_thread(password).await?
        }
        (None, Some(hash)) if is_argon2id_phc(&hash) => hash,
        (None, Some(_)) => {
            return Err(ApiError::bad_request(
                "password_hash must be an argon2id PHC string ($argon2id$v=19$…)",
            ))
        }
        _ => {
            return Err(ApiError::bad_request(
                "a new user needs a password (or an imported password_hash, not both)",
            ))
        }
    };
    let user = UserRecord {
        name: req.name.clone(),
        password_hash,
        admin: req.admin.unwrap_or(false),
        email: req.email.filter(|e| !e.is_empty()),
    };
    let serial = node
        .commit(&principal.actor(), Change::UserAdded { user })
        .await?;
    tracing::info!(user = %req.name, %serial, "user added");
    Ok(json(
        StatusCode::OK,
        &json!({ "name": req.name, "serial": serial.0 }),
    ))
}

/// A new password, admin flag or email. A user may change their own
/// password and email; only an admin changes the admin flag.
async fn change_user(node: &Node, principal: &Principal, body: &[u8]) -> HandlerResult {
    let req: UserRequest = parse_json(body)?;
    if req.password_hash.is_some() {
        return Err(ApiError::bad_request(
            "password_hash is taken only when a user is added (an import); change a password with password",
        ));
    }
    let own = own_user(principal).as_deref() == Some(req.name.as_str());
    if !principal.is_global_admin() && (!own || req.admin.is_some()) {
        return Err(ApiError::forbidden(
            "changing another user, or anyone's admin flag, needs an admin",
        ));
    }
    let Some(current) = node.index.user(&req.name)? else {
        return Err(ApiError::not_found(format!(
            "user {} does not exist",
            req.name
        )));
    };
    let mut user = current.record;
    if let Some(password) = req.password {
        check_password(&password)?;
        user.password_hash = hash_off_thread(password).await?;
    }
    if let Some(admin) = req.admin {
        user.admin = admin;
    }
    if let Some(email) = req.email {
        user.email = Some(email).filter(|e| !e.is_empty());
    }
    let serial = node
        .commit(&principal.actor(), Change::UserChanged { user })
        .await?;
    tracing::info!(user = %req.name, %serial, "user changed");
    Ok(json(
        StatusCode::OK,
        &json!({ "name": req.name, "serial": serial.0 }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameRequest {
    name: String,
}

async fn remove_user(node: &Node, principal: &Principal, body: &[u8]) -> HandlerResult {
    require_admin(principal, "removing a user")?;
    let req: NameRequest = parse_json(body)?;
    let serial = node
        .commit(
            &principal.actor(),
            Change::UserRemoved {
                name: req.name.clone(),
            },
        )
        .await?;
    tracing::info!(user = %req.name, %serial, "user removed; their tokens no longer work");
    Ok(json(
        StatusCode::OK,
        &json!({ "name": req.name, "serial": serial.0 }),
    ))
}

fn list_users(node: &Node, principal: &Principal) -> HandlerResult {
    require_admin(principal, "listing users")?;
    let users: Vec<_> = node
        .index
        .users()?
        .into_iter()
        .map(|u| {
            json!({
                "name": u.record.name,
                "admin": u.record.admin,
                "email": u.record.email,
                "created_serial": u.created.0,
                "password": if is_legacy_hash(&u.record.password_hash) { "sha256 (replaced at the next sign-in)" } else { "argon2id" },
            })
        })
        .collect();
    Ok(json(StatusCode::OK, &json!({ "users": users })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnerRequest {
    repo: String,
    project: String,
    user: Option<String>,
}

/// Where a project's owners live, and the name they are keyed by: a
/// virtual repository's are its `upload_to` member's (where its uploads
/// go); PyPI names are PEP 503 normalized, npm names taken as given.
fn project_key(
    node: &Node,
    repo: &RepoName,
    project: &str,
) -> Result<(RepoName, String), ApiError> {
    let mut state = node
        .index
        .repo(repo)?
        .ok_or_else(|| ApiError::not_found(format!("repository {repo} does not exist")))?;
    if let RepoKind::Virtual(v) = &state.settings.kind {
        state = upload_target(node, &state, v)?;
    }
    let key = match state.settings.format {
        RepoFormat::Pypi => hoard_pypi::normalize_project_name(project),
        RepoFormat::Npm => project.to_owned(),
        RepoFormat::Generic => {
            return Err(ApiError::bad_request(format!(
                "{repo} is a generic repository: owners are kept for PyPI projects and npm \
                 packages; upload tokens decide who writes a generic path"
            )))
        }
    };
    Ok((state.name, key))
}

/// `hoard owner add|remove`: an owner of the project or an admin may
/// change its owners; `apply` checks it. Naming owners for a project not
/// uploaded yet reserves the name for them.
async fn change_owners(
    node: &Node,
    principal: &Principal,
    body: &[u8],
    add: bool,
) -> HandlerResult {
    let req: OwnerRequest = parse_json(body)?;
    let (repo, project) = project_key(node, &parse_repo(&req.repo)?, &req.project)?;
    let user = req
        .user
        .ok_or_else(|| ApiError::bad_request("name the user to add or remove"))?;
    if !principal.allows(&repo, Perm::Upload) {
        return Err(ApiError::forbidden(format!(
            "changing owners in {repo} needs a user or an admin"
        )));
    }
    let mut owners = node.index.owners(&repo, &project)?;
    if add {
        if !owners.contains(&user) {
            owners.push(user.clone());
        }
    } else {
        owners.retain(|o| *o != user);
    }
    let serial = node
        .commit_as(
            principal,
            Change::OwnersChanged {
                repo: repo.clone(),
                project: project.clone(),
                owners: owners.clone(),
            },
        )
        .await?;
    tracing::info!(%repo, %project, ?owners, %serial, "owners changed");
    Ok(json(
        StatusCode::OK,
        &json!({ "repo": repo.as_str(), "project": project, "owners": owners, "serial": serial.0 }),
    ))
}

fn list_owners(node: &Node, principal: &Principal, body: &[u8]) -> HandlerResult {
    let req: OwnerRequest = parse_json(body)?;
    let named = parse_repo(&req.repo)?;
    if !principal.allows(&named, Perm::Read) {
        return Err(ApiError::forbidden(format!(
            "reading {named} needs a token"
        )));
    }
    let (repo, project) = project_key(node, &named, &req.project)?;
    let owners = node.index.owners(&repo, &project)?;
    Ok(json(
        StatusCode::OK,
        &json!({ "repo": repo.as_str(), "project": project, "owners": owners }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    repo: Option<String>,
    perm: String,
    label: Option<String>,
    user: Option<String>,
    projects: Option<Vec<String>>,
    /// Seconds from now.
    expires_in_secs: Option<u64>,
}

/// A token for a repository's admin to give out, or for a user to make
/// for themselves (at most upload).
async fn create_token(node: &Node, principal: &Principal, body: &[u8]) -> HandlerResult {
    let req: TokenRequest = parse_json(body)?;
    let perm: Perm = req
        .perm
        .parse()
        .map_err(|e| ApiError::bad_request(format!("{e}")))?;
    let repo = req.repo.as_deref().map(parse_repo).transpose()?;
    let scope_admin = match &repo {
        Some(repo) => principal.allows(repo, Perm::Admin),
        None => principal.is_global_admin(),
    };
    let for_self = req.user.is_some() && req.user == own_user(principal) && perm <= Perm::Upload;
    if !scope_admin && !for_self {
        return Err(ApiError::forbidden(
            "creating this token needs an admin token for its scope (a user may make upload tokens for themselves)",
        ));
    }
    if let Some(user) = &req.user {
        if node.index.user(user)?.is_none() {
            return Err(ApiError::not_found(format!("user {user} does not exist")));
        }
    }
    let projects = match req.projects {
        Some(names) if names.is_empty() => {
            return Err(ApiError::bad_request(
                "a token scoped to no project could do nothing",
            ))
        }
        Some(names) => Some(
            names
                .iter()
                .map(|p| match &repo {
                    Some(r) => project_key(node, r, p).map(|(_, key)| key),
                    None => Ok(p.to_owned()),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    let expires_us = match req.expires_in_secs {
        Some(0) => return Err(ApiError::bad_request("a token must live longer than 0 s")),
        Some(secs) => Some(now_us().saturating_add((secs as i64).saturating_mul(1_000_000))),
        None => None,
    };
    let label = req.label.unwrap_or_else(|| match &req.user {
        Some(user) => format!(
            "{user} {perm}@{}",
            repo.as_ref().map_or("*", |r| r.as_str())
        ),
        None => format!("{perm}@{}", repo.as_ref().map_or("*", |r| r.as_str())),
    });
    let (secret, handle) = node
        .create_token(
            &principal.actor(),
            TokenScope {
                repo,
                perm,
                label,
                user: req.user,
                projects,
                expires_us,
            },
        )
        .await?;
    Ok(json(
        StatusCode::OK,
        &json!({ "token": secret, "id": handle }),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TokenListRequest {
    user: Option<String>,
}

/// Live tokens: every one for an admin, a user's own otherwise. Never the
/// hash: the handle is what `revoke` takes.
fn list_tokens(node: &Node, principal: &Principal, body: &[u8]) -> HandlerResult {
    let req: TokenListRequest = if body.is_empty() {
        TokenListRequest::default()
    } else {
        parse_json(body)?
    };
    let own = own_user(principal);
    if !principal.is_global_admin() && (own.is_none() || (req.user.is_some() && req.user != own)) {
        return Err(ApiError::forbidden(
            "listing tokens needs an admin, or a user's own sign-in",
        ));
    }
    let only = if principal.is_global_admin() {
        req.user
    } else {
        own
    };
    let now = now_us();
    let tokens: Vec<_> = node
        .index
        .tokens()?
        .into_iter()
        .filter(|t| only.is_none() || t.record.user == only)
        .map(|t| {
            json!({
                "id": t.record.handle(),
                "label": t.record.label,
                "user": t.record.user,
                "repo": t.record.repo.as_ref().map(|r| r.as_str()),
                "perm": t.record.perm.to_string(),
                "projects": t.record.projects,
                "expires_us": t.record.expires_us,
                "expired": t.record.expired(now),
                "created_serial": t.created.0,
            })
        })
        .collect();
    Ok(json(StatusCode::OK, &json!({ "tokens": tokens })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    id: String,
}

/// Revocation is an event: every node refuses the token once it has
/// applied this serial.
async fn revoke_token(node: &Node, principal: &Principal, body: &[u8]) -> HandlerResult {
    let req: RevokeRequest = parse_json(body)?;
    let token = node
        .index
        .tokens()?
        .into_iter()
        .find(|t| t.record.handle() == req.id)
        .ok_or_else(|| ApiError::not_found(format!("no live token has the id {:?}", req.id)))?;
    let scope_admin = match &token.record.repo {
        Some(repo) => principal.allows(repo, Perm::Admin),
        None => principal.is_global_admin(),
    };
    let own = token.record.user.is_some() && token.record.user == own_user(principal);
    if !scope_admin && !own {
        return Err(ApiError::forbidden(
            "revoking this token needs an admin for its scope, or its user",
        ));
    }
    let serial = node
        .commit(
            &principal.actor(),
            Change::TokenRevoked {
                hash: token.record.hash,
            },
        )
        .await?;
    tracing::info!(id = %req.id, label = %token.record.label, %serial, "token revoked");
    Ok(json(
        StatusCode::OK,
        &json!({ "id": req.id, "serial": serial.0 }),
    ))
}
