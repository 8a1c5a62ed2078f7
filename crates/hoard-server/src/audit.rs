//! The audit trail, read from the changelog: who did what, when, as which
//! user, with which token label, on which node. `GET /+audit` (admins) and
//! `hoard audit`. An entry never shows a secret or its hash: a token is
//! named by its label and public handle, a user's password not at all.

use hoard_core::{Change, Event, RepoName, Serial};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::http::{json as json_response, HandlerResult};
use crate::node::Node;

/// The most entries one answer carries; `next_after` pages on.
const MAX_LIMIT: usize = 10_000;

/// One audit entry: the event without its secrets. `token_label` names a
/// revoked token, which the event knows only by its hash.
pub fn describe(serial: Serial, event: &Event, revoked: Option<(String, String)>) -> Value {
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(event.time_us) * 1000)
        .map(hoard_npm::format_npm_time)
        .unwrap_or_default();
    let (repo, project) = event.change.subject();
    let detail = match &event.change {
        Change::RepoCreated { settings, .. } | Change::RepoSettingsChanged { settings, .. } => {
            format!(
                "{:?} {}, anonymous reads {}",
                settings.format,
                match &settings.kind {
                    hoard_core::RepoKind::Hosted => "hosted",
                    hoard_core::RepoKind::Mirror(_) => "mirror",
                    hoard_core::RepoKind::Virtual(_) => "virtual",
                },
                if settings.anonymous_read { "on" } else { "off" }
            )
            .to_lowercase()
        }
        Change::FileAdded { file, .. } => file.filename.clone(),
        Change::GenericFileStored {
            path,
            size,
            upstream_url,
            ..
        } => match upstream_url {
            Some(url) => format!("{path} ({size} bytes, fetched from {url})"),
            None => format!("{path} ({size} bytes)"),
        },
        Change::FilesYanked {
            filenames, reason, ..
        } => match reason {
            Some(r) => format!("yanked {} ({r})", filenames.join(", ")),
            None => format!("un-yanked {}", filenames.join(", ")),
        },
        Change::TokenCreated { token } => {
            format!(
                "token {} {:?}: {} on {}{}{}{}",
                token.handle(),
                token.label,
                token.perm,
                token
                    .repo
                    .as_ref()
                    .map_or("every repository", |r| r.as_str()),
                token
                    .user
                    .as_ref()
                    .map_or(String::new(), |u| format!(", for user {u}")),
                token
                    .projects
                    .as_ref()
                    .map_or(String::new(), |p| format!(", projects {}", p.join(","))),
                token.expires_us.map_or(String::new(), |e| format!(
                    ", expires at {} s",
                    e / 1_000_000
                )),
            )
        }
        Change::TokenRevoked { .. } => match revoked {
            Some((handle, label)) => format!("token {handle} {label:?} revoked"),
            None => "a token revoked".to_owned(),
        },
        Change::UserAdded { user } => {
            format!(
                "user {} added{}",
                user.name,
                if user.admin { " (admin)" } else { "" }
            )
        }
        Change::UserChanged { user } => {
            format!(
                "user {} changed (password, email or admin flag){}",
                user.name,
                if user.admin { "; admin" } else { "" }
            )
        }
        Change::UserRemoved { name } => format!("user {name} removed"),
        Change::OwnersChanged { owners, .. } => {
            format!("owners: {}", owners.join(", "))
        }
        Change::NpmPublished {
            package, version, ..
        } => format!("{package}@{version}"),
        Change::NpmDistTagChanged { tag, version, .. } => match version {
            Some(v) => format!("dist-tag {tag} -> {v}"),
            None => format!("dist-tag {tag} removed"),
        },
        Change::NpmDeprecated { changes, .. } => changes
            .iter()
            .map(|(v, m)| match m {
                Some(m) => format!("{v} deprecated ({m})"),
                None => format!("{v} un-deprecated"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Change::NpmUnpublished { versions, .. } => {
            format!("unpublished {}", versions.join(", "))
        }
        Change::MirrorFilesListed { files, .. } => {
            format!("{} file(s) listed from upstream", files.len())
        }
        Change::MirrorFileCached { filename, .. } => format!("{filename} cached"),
        Change::NpmMirrorListed { versions, .. } => {
            format!("{} version(s) listed from upstream", versions.len())
        }
        Change::NpmMirrorTarballCached {
            package, version, ..
        } => {
            format!("{package}@{version} cached")
        }
    };
    json!({
        "serial": serial.0,
        "time": time,
        "actor": event.actor,
        "user": event.user,
        "node": event.node,
        "kind": event.change.kind(),
        "repo": repo.map(|r| r.as_str()),
        "project": project,
        "detail": detail,
    })
}

/// What `GET /+audit` filters on.
#[derive(Default, Debug, PartialEq)]
pub struct AuditQuery {
    pub repo: Option<String>,
    pub actor: Option<String>,
    pub since_us: Option<i64>,
    pub after: u64,
    pub limit: usize,
}

pub fn parse_query(query: Option<&str>) -> Result<AuditQuery, ApiError> {
    let mut q = AuditQuery {
        limit: 1000,
        ..AuditQuery::default()
    };
    for (key, value) in form_pairs(query.unwrap_or("")) {
        let bad = || ApiError::bad_request(format!("invalid {key}={value:?}"));
        match key.as_str() {
            "repo" => q.repo = Some(value),
            "actor" => q.actor = Some(value),
            "since_us" => q.since_us = Some(value.parse().map_err(|_| bad())?),
            "after" => q.after = value.parse().map_err(|_| bad())?,
            "limit" => {
                q.limit = value
                    .parse::<usize>()
                    .map_err(|_| bad())?
                    .clamp(1, MAX_LIMIT)
            }
            _ => return Err(ApiError::bad_request(format!("unknown parameter {key:?}"))),
        }
    }
    Ok(q)
}

fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

/// `GET /+audit`: global admins see everything; a repository's admin
/// sees that repository (`repo=` required).
pub fn handle(node: &Node, req: &Request<Incoming>) -> HandlerResult {
    crate::http::require_read_method(req.method())?;
    let principal = node
        .authenticate(req.headers())?
        .ok_or_else(|| ApiError::unauthorized("the audit trail needs an admin token"))?;
    let q = parse_query(req.uri().query())?;
    let allowed = match &q.repo {
        _ if principal.is_global_admin() => true,
        Some(repo) => repo
            .parse::<RepoName>()
            .is_ok_and(|r| principal.allows(&r, hoard_core::Perm::Admin)),
        None => false,
    };
    if !allowed {
        return Err(ApiError::forbidden(
            "the audit trail is for admins (a repository's admins: with repo=)",
        ));
    }
    let start = match q.since_us {
        Some(t) => first_serial_at(node, t)?.max(Serial(q.after + 1)),
        None => Serial(q.after + 1),
    };
    let mut entries = Vec::new();
    let mut next_after = None;
    for item in node.index.events_since(Serial(start.0.saturating_sub(1))) {
        let (serial, event) = item?;
        if entries.len() == q.limit {
            next_after = Some(serial.0 - 1);
            break;
        }
        if q.actor
            .as_ref()
            .is_some_and(|a| *a != event.actor && event.user.as_ref() != Some(a))
        {
            continue;
        }
        let revoked = match &event.change {
            Change::TokenRevoked { hash } => node
                .index
                .token_record(hash)?
                .map(|t| (t.handle(), t.label)),
            _ => None,
        };
        let entry = describe(serial, &event, revoked);
        if let Some(repo) = &q.repo {
            if entry["repo"].as_str() != Some(repo) {
                continue;
            }
        }
        entries.push(entry);
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "entries": entries, "next_after": next_after }),
    ))
}

/// The first serial whose event is at or after `time_us` (events are in
/// time order: the leader stamps them as it commits them).
fn first_serial_at(node: &Node, time_us: i64) -> Result<Serial, ApiError> {
    let (mut lo, mut hi) = (1u64, node.applied_serial().0 + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match node.index.event(Serial(mid))? {
            Some(e) if e.time_us < time_us => lo = mid + 1,
            _ => hi = mid,
        }
    }
    Ok(Serial(lo))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoard_core::{Perm, Sha256, TokenRecord, UserRecord};

    fn event(change: Change) -> Event {
        Event {
            actor: "ci".into(),
            time_us: 1_700_000_000_000_000,
            user: Some("alice".into()),
            node: Some("hoard-1".into()),
            change,
        }
    }

    #[test]
    fn entries_name_tokens_and_users_without_their_secrets() {
        let hash = Sha256::of(b"the secret");
        let token = TokenRecord {
            hash,
            repo: Some("pypi".parse().unwrap()),
            perm: Perm::Upload,
            label: "ci".into(),
            id: "abc123".into(),
            user: Some("alice".into()),
            projects: None,
            expires_us: None,
        };
        let created = describe(Serial(7), &event(Change::TokenCreated { token }), None);
        let text = created.to_string();
        assert!(
            text.contains("abc123") && text.contains("for user alice"),
            "{text}"
        );
        assert!(!text.contains(&hash.to_hex()), "{text}");
        assert_eq!(created["time"], "2023-11-14T22:13:20.000Z");
        assert_eq!(created["node"], "hoard-1");
        assert_eq!(created["repo"], "pypi");

        let user = UserRecord {
            name: "bob".into(),
            password_hash: "$argon2id$v=19$secret-hash".into(),
            admin: true,
            email: None,
        };
        let added = describe(Serial(8), &event(Change::UserAdded { user }), None).to_string();
        assert!(
            added.contains("user bob added (admin)") && !added.contains("argon2"),
            "{added}"
        );

        let revoked = describe(
            Serial(9),
            &event(Change::TokenRevoked { hash }),
            Some(("abc123".into(), "ci".into())),
        )
        .to_string();
        assert!(
            revoked.contains("abc123") && !revoked.contains(&hash.to_hex()),
            "{revoked}"
        );
    }

    #[test]
    fn queries_parse_and_refuse_what_they_do_not_know() {
        let q = parse_query(Some(
            "repo=pypi&actor=ci%20bot&since_us=5&after=3&limit=99999",
        ))
        .unwrap();
        assert_eq!(q.repo.as_deref(), Some("pypi"));
        assert_eq!(q.actor.as_deref(), Some("ci bot"));
        assert_eq!((q.since_us, q.after, q.limit), (Some(5), 3, MAX_LIMIT));
        assert!(parse_query(Some("colour=red")).is_err());
        assert!(parse_query(Some("after=x")).is_err());
        assert_eq!(parse_query(None).unwrap().limit, 1000);
    }
}
