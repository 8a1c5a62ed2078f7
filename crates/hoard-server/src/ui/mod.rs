//! The web UI under `/+ui/`: repositories, search, project pages, the
//! changelog, the cluster, and signing in, rendered on the server from the
//! index (no build step, no CDN). A page reads the index as of one serial
//! (the node's, or `/+ui/+at/{serial}/…`) and lists only the repositories
//! the request may read: with a token, or a session from `/+ui/+login`.
//! The UI's own pages start with `+`, which no repository name can.

mod pages;

use std::collections::BTreeMap;

use hoard_core::{Perm, RepoFormat, RepoKind, RepoName, Serial};
use hoard_store::{GenericEntry, RepoState};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use percent_encoding::utf8_percent_encode;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::{require_read_method, with_body, HandlerResult};
use crate::node::Node;
use pages::{
    ChangeRow, Chrome, ClusterRow, FileView, ProjectView, RepoRow, SearchHit, VersionView,
};

/// Most search results on one page.
const MAX_HITS: usize = 200;

const PATH_SAFE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@');

/// One UI request: who asks, and as of which serial.
struct View<'a> {
    node: &'a Node,
    principal: Option<Principal>,
    at: Option<Serial>,
    chrome: Chrome,
}

impl View<'_> {
    fn readable(&self, repo: &RepoState) -> bool {
        repo.settings.anonymous_read
            || self
                .principal
                .as_ref()
                .is_some_and(|p| p.allows(&repo.name, Perm::Read))
    }

    fn repos(&self) -> Result<Vec<RepoState>, ApiError> {
        let at = self.at.unwrap_or(Serial(u64::MAX));
        Ok(self
            .node
            .index
            .repos()?
            .into_iter()
            .filter(|r| r.created <= at && self.readable(r))
            .collect())
    }

    fn repo(&self, name: &str) -> Result<RepoState, ApiError> {
        let missing = || ApiError::not_found(format!("no repository named {name}"));
        let name: RepoName = name.parse().map_err(|_| missing())?;
        self.repos()?
            .into_iter()
            .find(|r| r.name == name)
            .ok_or_else(missing)
    }

    fn page(&self, markup: maud::Markup) -> HandlerResult {
        Ok(html(StatusCode::OK, markup))
    }
}

fn html(status: StatusCode, markup: maud::Markup) -> http::Response<crate::http::ResBody> {
    with_body(status, "text/html; charset=utf-8", markup.into_string())
}

pub fn handle(node: &Node, req: &Request<Incoming>, rest: &[&str]) -> HandlerResult {
    require_read_method(req.method())?;
    let (at, rest) = match rest {
        ["+at", serial, rest @ ..] => (Some(crate::pypi::parse_at(node, serial)?), rest),
        _ => (None, rest),
    };
    let principal = node.authenticate_ui(req.headers())?;
    let mut chrome = chrome(node, at);
    chrome.who = principal.as_ref().map(Principal::actor);
    let view = View {
        node,
        principal,
        at,
        chrome,
    };
    let result = match rest {
        [] | [""] => home(&view),
        ["+search"] => search(&view, &query_param(req, "q").unwrap_or_default()),
        ["+changelog"] => changelog(&view, req),
        [repo] | [repo, ""] => repo_page(&view, repo),
        [repo, path @ ..] if is_generic(&view, repo) => generic_page(&view, repo, path),
        [repo, scope, name] | [repo, scope, name, ""] if scope.starts_with('@') => {
            project_page(&view, repo, &format!("{scope}/{name}"))
        }
        [repo, project] | [repo, project, ""] => project_page(&view, repo, project),
        _ => Err(ApiError::not_found("no such page")),
    };
    // A missing page is a page too, with the search box.
    result.or_else(|e| match e.status {
        StatusCode::NOT_FOUND => Ok(html(
            StatusCode::NOT_FOUND,
            pages::not_found(&view.chrome, &e.message),
        )),
        _ => Err(e),
    })
}

fn chrome(node: &Node, at: Option<Serial>) -> Chrome {
    Chrome {
        node_id: node.config.node_id.clone(),
        serial: at.unwrap_or(node.applied_serial()).0,
        at: at.map(|s| s.0),
        banner: node.health_problem(),
        who: None,
        base: match at {
            Some(s) => format!("/+ui/+at/{s}"),
            None => "/+ui".to_owned(),
        },
    }
}

/// `/+ui/+cluster`: every node this one finds, refreshed in place by the
/// page's script from `/+ui/+cluster?fragment` (the same table, rendered
/// here, so there is one template for both).
pub async fn cluster_page(node: &Node, req: &Request<Incoming>) -> HandlerResult {
    require_read_method(req.method())?;
    let survey = crate::admin::cluster_survey(node).await?;
    let own = survey
        .nodes
        .iter()
        .find(|n| n.node_id() == node.config.node_id);
    let mut chrome = chrome(node, None);
    chrome.who = node
        .authenticate_ui(req.headers())
        .ok()
        .flatten()
        .map(|p| p.actor());
    chrome.banner = chrome.banner.or_else(|| cluster_warning(&survey, own));
    let rows: Vec<ClusterRow> = survey
        .nodes
        .iter()
        .map(|n| cluster_row(&survey, n, &node.config.node_id))
        .collect();
    let table = pages::cluster_table(&rows, &survey.summary(), survey.healthy());
    if query_param(req, "fragment").is_some() {
        return Ok(html(StatusCode::OK, table));
    }
    Ok(html(StatusCode::OK, pages::cluster(&chrome, table)))
}

/// The most a sign-in form may carry.
const MAX_LOGIN_BODY: u64 = 16 * 1024;

/// `GET /+ui/+login` shows the sign-in form; `POST` checks a user's
/// password (or a token, with the user name `__token__` or none) and
/// starts a session. Every node answers it itself: the session is sealed
/// with this node's key.
pub async fn login(node: &Node, req: Request<Incoming>) -> HandlerResult {
    let next = query_param(&req, "next")
        .filter(|n| safe_next(n))
        .unwrap_or_else(|| "/+ui/".to_owned());
    let chrome = chrome(node, None);
    if req.method() != http::Method::POST {
        require_read_method(req.method())?;
        return Ok(html(StatusCode::OK, pages::login(&chrome, &next, "", None)));
    }
    let body = crate::body::read_small(req.into_body(), MAX_LOGIN_BODY, node.config.body_timeout())
        .await
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let user = form.get("user").map(|u| u.trim()).unwrap_or_default();
    let password = form.get("password").map(String::as_str).unwrap_or_default();
    let next = form
        .get("next")
        .filter(|n| safe_next(n))
        .cloned()
        .unwrap_or(next);
    // Counted per user name, tokens together under one.
    if let Err(wait) = node.sign_in_rate.check(&format!("ui-sign-in:{user}")) {
        tracing::warn!(user, "web UI sign-ins refused: too many attempts");
        let mut response = html(
            StatusCode::TOO_MANY_REQUESTS,
            pages::login(
                &chrome,
                &next,
                user,
                Some(&format!(
                    "Too many sign-in attempts for this name; try again in {wait} s."
                )),
            ),
        );
        set_header(&mut response, http::header::RETRY_AFTER, &wait.to_string())?;
        return Ok(response);
    }
    let principal = if user.is_empty() || user == "__token__" {
        match node.token_principal(password.trim()) {
            Ok(principal) => principal,
            // Expired: the form says so, as for a wrong one.
            Err(e) if e.status == StatusCode::UNAUTHORIZED => None,
            Err(e) => return Err(e),
        }
    } else {
        node.sign_in(user, password).await?.map(Principal::User)
    };
    let Some(principal) = principal else {
        tracing::info!(user, "a web UI sign-in was refused");
        return Ok(html(
            StatusCode::UNAUTHORIZED,
            pages::login(
                &chrome,
                &next,
                user,
                Some("Wrong user name or password (or an invalid, expired or revoked token)."),
            ),
        ));
    };
    let sealed = node.seal_session(&principal);
    tracing::info!(who = %principal.actor(), "signed in to the web UI");
    let mut response = with_body(
        StatusCode::SEE_OTHER,
        "text/plain; charset=utf-8",
        "signed in\n",
    );
    set_header(&mut response, http::header::LOCATION, &next)?;
    set_header(
        &mut response,
        http::header::SET_COOKIE,
        &crate::session::set_cookie(Some(&sealed), node.https.is_some()),
    )?;
    Ok(response)
}

/// `POST /+ui/+logout`: ends the session.
pub fn logout(node: &Node, req: &Request<Incoming>) -> HandlerResult {
    if req.method() != http::Method::POST {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "sign out with POST",
        ));
    }
    let mut response = with_body(
        StatusCode::SEE_OTHER,
        "text/plain; charset=utf-8",
        "signed out\n",
    );
    set_header(&mut response, http::header::LOCATION, "/+ui/")?;
    set_header(
        &mut response,
        http::header::SET_COOKIE,
        &crate::session::set_cookie(None, node.https.is_some()),
    )?;
    Ok(response)
}

fn set_header(
    response: &mut http::Response<crate::http::ResBody>,
    name: http::HeaderName,
    value: &str,
) -> Result<(), ApiError> {
    let value = http::HeaderValue::from_str(value)
        .map_err(|_| ApiError::bad_request("a header value that HTTP cannot carry"))?;
    response.headers_mut().insert(name, value);
    Ok(())
}

/// Where a sign-in may send the browser on: a UI page of this node, not
/// another site (`//host`, `/\\host`).
fn safe_next(next: &str) -> bool {
    next.starts_with("/+ui/") && !next.contains("//") && !next.contains('\\')
}

/// A replica this far behind, or a node left in an old epoch, is worth
/// a banner even when it calls itself healthy.
const BEHIND_EVENTS: u64 = 1000;
const BEHIND_SECONDS: f64 = 30.0;

fn cluster_warning(
    survey: &crate::survey::Survey,
    own: Option<&crate::survey::NodeReport>,
) -> Option<String> {
    let own = own?;
    let status = own.status.as_ref().ok()?;
    let epoch = status["epoch"].as_u64().unwrap_or(0);
    let newest = survey.newest_epoch();
    if epoch < newest {
        return Some(format!(
            "this node is in epoch {epoch}, but the cluster has moved on to epoch {newest}: it serves an old history"
        ));
    }
    match survey.lag(own) {
        Some((events, seconds))
            if events >= BEHIND_EVENTS || seconds.is_some_and(|s| s >= BEHIND_SECONDS) =>
        {
            Some(match seconds {
                Some(s) => format!("this node is {events} events ({s:.0} s) behind its upstream"),
                None => format!("this node is {events} events behind the leader"),
            })
        }
        _ => None,
    }
}

fn cluster_row(
    survey: &crate::survey::Survey,
    report: &crate::survey::NodeReport,
    own_id: &str,
) -> ClusterRow {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) if s.is_empty() => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let node_id = report.node_id();
    let this = node_id == own_id;
    match &report.status {
        Ok(s) => ClusterRow {
            node_id,
            this,
            url: report.url.clone(),
            role: text(&s["role"]),
            leader: s["role"] == "leader",
            term: text(&s["term"]),
            epoch: text(&s["epoch"]),
            applied: text(&s["applied_serial"]),
            commit: text(&s["commit_serial"]),
            lag: survey.lag_text(report),
            health: text(&s["health"]),
            problem: s["problem"].as_str().map(str::to_owned),
            version: text(&s["version"]),
            upstream: text(&s["upstream"]),
            reachable: true,
        },
        Err(e) => ClusterRow {
            node_id,
            this,
            url: report.url.clone(),
            role: "-".into(),
            leader: false,
            term: "-".into(),
            epoch: "-".into(),
            applied: "-".into(),
            commit: "-".into(),
            lag: "-".into(),
            health: "unreachable".into(),
            problem: Some(e.strip_prefix("unreachable: ").unwrap_or(e).to_owned()),
            version: "-".into(),
            upstream: "-".into(),
            reachable: false,
        },
    }
}

fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.uri().query()?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim().to_owned())
}

fn format_name(format: RepoFormat) -> &'static str {
    format.as_str()
}

/// A repository's project count and usage as of one serial. Each is a
/// scan of the repository, so the latest are kept until the next event:
/// home pages between two writes cost a lookup.
#[derive(Default)]
pub struct RepoStatsCache {
    entries: std::sync::Mutex<std::collections::HashMap<RepoName, (Serial, RepoStats)>>,
}

type RepoStats = (usize, hoard_store::RepoUsage);

fn repo_stats(view: &View, repo: &RepoState) -> Result<RepoStats, ApiError> {
    let serial = view.at.unwrap_or(view.node.applied_serial());
    let cache = &view.node.repo_stats;
    let cached = cache.entries.lock().ok().and_then(|e| {
        e.get(&repo.name)
            .filter(|(s, _)| *s == serial)
            .map(|(_, v)| *v)
    });
    if let Some(stats) = cached {
        return Ok(stats);
    }
    // Read as of `serial`, so that what is cached matches its key even if
    // an event is applied meanwhile.
    let at = Some(serial);
    let projects = match repo.settings.format {
        RepoFormat::Pypi => view.node.index.projects(&repo.name, at)?.len(),
        RepoFormat::Npm => view.node.index.npm_packages(&repo.name, at)?.len(),
        RepoFormat::Generic => view
            .node
            .index
            .generic_listing(&repo.name, "", at)?
            .map_or(0, |entries| entries.len()),
    };
    let stats = (projects, view.node.index.repo_usage(&repo.name, at)?);
    if view.at.is_none() {
        if let Ok(mut entries) = cache.entries.lock() {
            entries.insert(repo.name.clone(), (serial, stats));
        }
    }
    Ok(stats)
}

/// The projects (PyPI) or packages (npm) of a hosted or mirror repository,
/// by display name.
fn project_names(view: &View, repo: &RepoState) -> Result<Vec<String>, ApiError> {
    let index = &view.node.index;
    Ok(match repo.settings.format {
        RepoFormat::Pypi => index
            .projects(&repo.name, view.at)?
            .into_iter()
            .map(|p| p.display_name)
            .collect(),
        RepoFormat::Npm => index
            .npm_packages(&repo.name, view.at)?
            .into_iter()
            .map(|p| p.name)
            .collect(),
        // The top of the tree: directories end in `/`.
        RepoFormat::Generic => index
            .generic_listing(&repo.name, "", view.at)?
            .unwrap_or_default()
            .iter()
            .map(|entry| match entry {
                GenericEntry::Dir { name, .. } => format!("{name}/"),
                GenericEntry::File(f) => f.path.to_string(),
            })
            .collect(),
    })
}

fn repo_row(view: &View, repo: &RepoState) -> Result<RepoRow, ApiError> {
    let (kind, detail) = match &repo.settings.kind {
        RepoKind::Hosted => ("hosted", String::new()),
        RepoKind::Mirror(m) => (
            "mirror",
            if m.upstreams.is_empty() {
                "no upstream configured".to_owned()
            } else {
                format!("upstream {}", m.upstreams.join(", "))
            },
        ),
        RepoKind::Virtual(v) => (
            "virtual",
            format!(
                "over {}",
                v.members
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    };
    // A virtual repository holds nothing of its own.
    let held = match kind {
        "virtual" => None,
        _ => Some(repo_stats(view, repo)?),
    };
    Ok(RepoRow {
        name: repo.name.to_string(),
        format: format_name(repo.settings.format),
        kind,
        detail,
        projects: held.map(|(projects, _)| projects),
        files: held.map(|(_, usage)| usage.files),
        bytes: held.map(|(_, usage)| usage.bytes),
        private: !repo.settings.anonymous_read,
    })
}

fn home(view: &View) -> HandlerResult {
    let rows = view
        .repos()?
        .iter()
        .map(|r| repo_row(view, r))
        .collect::<Result<Vec<_>, _>>()?;
    view.page(pages::home(&view.chrome, &rows))
}

fn project_href(view: &View, repo: &RepoName, name: &str) -> String {
    format!(
        "{}/{repo}/{}",
        view.chrome.base,
        utf8_percent_encode(name, PATH_SAFE)
            .to_string()
            .replace("%2F", "/")
    )
}

/// The repositories whose projects a repository shows: itself, or a
/// virtual repository's members (that the request may read).
fn sources(view: &View, repo: &RepoState) -> Result<Vec<RepoState>, ApiError> {
    match &repo.settings.kind {
        RepoKind::Virtual(v) => {
            let readable = view.repos()?;
            Ok(v.members
                .iter()
                .filter_map(|m| readable.iter().find(|r| &r.name == m).cloned())
                .collect())
        }
        _ => Ok(vec![repo.clone()]),
    }
}

fn repo_page(view: &View, name: &str) -> HandlerResult {
    let repo = view.repo(name)?;
    let mut names = BTreeMap::new();
    for source in sources(view, &repo)? {
        for project in project_names(view, &source)? {
            names.entry(project.to_lowercase()).or_insert(project);
        }
    }
    let hits: Vec<SearchHit> = names
        .into_values()
        .map(|project| SearchHit {
            href: project_href(view, &repo.name, &project),
            repo: repo.name.to_string(),
            format: format_name(repo.settings.format),
            name: project,
        })
        .collect();
    view.page(pages::repo(&view.chrome, &repo_row(view, &repo)?, &hits))
}

fn is_generic(view: &View, repo: &str) -> bool {
    view.repo(repo)
        .is_ok_and(|r| r.settings.format == RepoFormat::Generic)
}

/// A directory of a generic repository (a path ending in `/`), or one
/// file's page.
fn generic_page(view: &View, repo_name: &str, path: &[&str]) -> HandlerResult {
    let repo = view.repo(repo_name)?;
    let serial = view.at.unwrap_or_else(|| view.node.applied_serial());
    let sources = sources(view, &repo)?;
    let public = view.node.config.public_url();
    let link = |path: &str| {
        let escaped: Vec<String> = path
            .split('/')
            .map(crate::generic::escape_segment)
            .collect();
        escaped.join("/")
    };
    let (dirs, file) = match path.split_last() {
        Some((&"", dirs)) => (dirs, None),
        Some((last, dirs)) => (dirs, Some(*last)),
        None => (path, None),
    };
    let dir: String = dirs.iter().map(|d| format!("{d}/")).collect();
    let download = |path: &str| match view.at {
        Some(at) => format!("{public}/{}/+at/{at}/{}", repo.name, link(path)),
        None => format!("{public}/{}/{}", repo.name, link(path)),
    };
    let to_row = |f: &hoard_store::GenericFileState| pages::GenericFileRow {
        name: f.path.file_name().to_owned(),
        href: download(f.path.as_str()),
        size: f.size,
        sha256: f.sha256.to_hex(),
        uploaded: time_text(f.upload_time_us),
        uploader: f.uploader.clone(),
        upstream: f.upstream_url.clone(),
    };
    if let Some(name) = file {
        let path = format!("{dir}{name}");
        for source in &sources {
            if let Some(f) = view
                .node
                .index
                .generic_file(&source.name, &path, Some(serial))?
            {
                let page = pages::GenericFileView {
                    repo: repo.name.to_string(),
                    dir: dir.clone(),
                    dir_href: format!("{}/{}/{}", view.chrome.base, repo.name, link(&dir)),
                    file: to_row(&f),
                    pull: format!("hoard pull --url {public} --repo {} {path}", repo.name),
                    curl: format!("curl -fLO {}", download(&path)),
                };
                return view.page(pages::generic_file(&view.chrome, &page));
            }
        }
        return Err(ApiError::not_found(format!(
            "{repo_name} has no file {path}"
        )));
    }
    let entries = crate::generic::merged_listing(view.node, &sources, &dir, serial)?
        .ok_or_else(|| ApiError::not_found(format!("{repo_name} has no directory {dir}")))?;
    let mut subdirs = Vec::new();
    let mut files = Vec::new();
    for entry in &entries {
        match entry {
            GenericEntry::Dir { name, .. } => subdirs.push((
                format!("{name}/"),
                format!(
                    "{}/{}/{}{}/",
                    view.chrome.base,
                    repo.name,
                    link(&dir),
                    crate::generic::escape_segment(name)
                ),
            )),
            GenericEntry::File(f) => files.push(to_row(f)),
        }
    }
    let page = pages::DirectoryView {
        repo: repo.name.to_string(),
        dir: dir.clone(),
        parent: (!dir.is_empty()).then(|| {
            let parent = dirs[..dirs.len() - 1]
                .iter()
                .map(|d| format!("{d}/"))
                .collect::<String>();
            format!("{}/{}/{}", view.chrome.base, repo.name, link(&parent))
        }),
        subdirs,
        files,
        push: format!(
            "hoard push --url {public} --repo {} ./FILE {dir}FILE",
            repo.name
        ),
    };
    view.page(pages::directory(
        &view.chrome,
        &repo_row(view, &repo)?,
        &page,
    ))
}

/// Case, `-`, `_` and `.` do not matter (PEP 503's normalization).
fn search_key(name: &str) -> String {
    hoard_pypi::normalize_project_name(name)
}

fn search(view: &View, query: &str) -> HandlerResult {
    let key = search_key(query);
    let mut hits = Vec::new();
    let mut truncated = false;
    if !key.is_empty() {
        let mut scored = Vec::new();
        for repo in view.repos()? {
            if matches!(repo.settings.kind, RepoKind::Virtual(_)) {
                continue;
            }
            for project in project_names(view, &repo)? {
                let name = search_key(&project);
                // Exact names first, then prefixes, then the rest.
                let rank = if name == key {
                    0
                } else if name.starts_with(&key) {
                    1
                } else if name.contains(&key) {
                    2
                } else {
                    continue;
                };
                scored.push((rank, name, repo.clone(), project));
            }
        }
        scored.sort_by(|a, b| (a.0, &a.1, &a.2.name).cmp(&(b.0, &b.1, &b.2.name)));
        truncated = scored.len() > MAX_HITS;
        hits = scored
            .into_iter()
            .take(MAX_HITS)
            .map(|(_, _, repo, project)| SearchHit {
                href: project_href(view, &repo.name, &project),
                repo: repo.name.to_string(),
                format: format_name(repo.settings.format),
                name: project,
            })
            .collect();
    }
    view.page(pages::search(&view.chrome, query, &hits, truncated))
}

/// Events on one changelog page.
const CHANGELOG_PAGE: usize = 50;
/// Events one changelog page reads at most while filtering, so that a
/// rare filter over a long history answers quickly; the page then links
/// on from where it stopped.
const CHANGELOG_SCAN: usize = 20_000;

/// Events about users and tokens are for admins; the rest for whoever
/// may read their repository.
fn may_see(
    view: &View,
    event: &hoard_core::Event,
    repo: Option<&str>,
    readable: &[RepoState],
) -> bool {
    use hoard_core::Change;
    let admin = view.principal.as_ref().is_some_and(|p| p.is_global_admin());
    match &event.change {
        Change::TokenCreated { .. }
        | Change::TokenRevoked { .. }
        | Change::UserAdded { .. }
        | Change::UserChanged { .. }
        | Change::UserRemoved { .. } => admin,
        _ => match repo {
            Some(repo) => readable.iter().any(|r| r.name.as_str() == repo),
            None => admin,
        },
    }
}

/// `/+ui/+changelog?repo=R&project=P&upto=N`: events newest first, a
/// page of them at a time, paged by serial.
fn changelog(view: &View, req: &Request<Incoming>) -> HandlerResult {
    let repo = query_param(req, "repo").filter(|r| !r.is_empty());
    let project = query_param(req, "project").filter(|p| !p.is_empty());
    let newest = view.at.unwrap_or(view.node.applied_serial());
    let upto = match query_param(req, "upto") {
        Some(b) => Serial(
            b.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("upto={b:?} is not a serial")))?
                .min(newest.0),
        ),
        None => newest,
    };
    let readable = view.repos()?;
    // A virtual repository's events are its members'.
    let repo_names: Option<Vec<String>> = match &repo {
        Some(name) => Some(match readable.iter().find(|r| r.name.as_str() == name) {
            Some(state) => sources(view, state)?
                .iter()
                .map(|r| r.name.to_string())
                .chain([name.clone()])
                .collect(),
            None => vec![name.clone()],
        }),
        None => None,
    };
    let project_key = project.as_deref().map(search_key);
    let mut rows = Vec::new();
    let mut older = None;
    for (scanned, item) in view.node.index.events_back_from(upto).enumerate() {
        let (serial, event) = item?;
        if rows.len() == CHANGELOG_PAGE || scanned == CHANGELOG_SCAN {
            older = Some(serial.0);
            break;
        }
        // Filtered on the event itself: describing it costs more.
        let (entry_repo, entry_project) = event.change.subject();
        let entry_repo = entry_repo.map(RepoName::as_str);
        if !may_see(view, &event, entry_repo, &readable)
            || repo_names
                .as_ref()
                .is_some_and(|names| !entry_repo.is_some_and(|r| names.iter().any(|n| n == r)))
            || project_key
                .as_ref()
                .is_some_and(|p| entry_project.map(search_key).as_ref() != Some(p))
        {
            continue;
        }
        let revoked = match &event.change {
            hoard_core::Change::TokenRevoked { hash } => view
                .node
                .index
                .token_record(hash)?
                .map(|t| (t.handle(), t.label)),
            _ => None,
        };
        let entry = crate::audit::describe(serial, &event, revoked);
        let text = |key: &str| entry[key].as_str().unwrap_or_default().to_owned();
        rows.push(ChangeRow {
            serial: serial.0,
            time: time_text(event.time_us),
            actor: match entry["user"].as_str() {
                Some(user) if user != event.actor => format!("{} ({user})", event.actor),
                _ => event.actor.clone(),
            },
            node: text("node"),
            kind: text("kind").replace('_', " "),
            repo: text("repo"),
            project_href: match (entry_repo, entry_project) {
                (Some(r), Some(p)) => Some(format!(
                    "/+ui/+at/{serial}/{r}/{}",
                    utf8_percent_encode(p, PATH_SAFE)
                        .to_string()
                        .replace("%2F", "/")
                )),
                _ => None,
            },
            project: text("project"),
            detail: text("detail"),
        });
    }
    let link = |upto: Option<u64>| {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if let Some(r) = &repo {
            query.append_pair("repo", r);
        }
        if let Some(p) = &project {
            query.append_pair("project", p);
        }
        if let Some(b) = upto {
            query.append_pair("upto", &b.to_string());
        }
        format!("{}/+changelog?{}", view.chrome.base, query.finish())
    };
    let page = pages::ChangelogView {
        repo: repo.clone().unwrap_or_default(),
        project: project.clone().unwrap_or_default(),
        repos: readable.iter().map(|r| r.name.to_string()).collect(),
        upto: upto.0,
        older: older.map(|s| link(Some(s))),
        newest: (upto < newest).then(|| link(None)),
        rows,
    };
    view.page(pages::changelog(&view.chrome, &page))
}

fn time_text(us: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "-".to_owned())
}

fn project_page(view: &View, repo_name: &str, project: &str) -> HandlerResult {
    let repo = view.repo(repo_name)?;
    let public = view.node.config.public_url();
    for source in sources(view, &repo)? {
        let from_member = (source.name != repo.name).then(|| source.name.to_string());
        let page = match repo.settings.format {
            RepoFormat::Pypi => pypi_project(view, &repo, &source, project, &public)?,
            RepoFormat::Npm => npm_package(view, &repo, &source, project, &public)?,
            RepoFormat::Generic => None,
        };
        if let Some(mut page) = page {
            page.from_member = from_member;
            return view.page(pages::project(&view.chrome, &page));
        }
    }
    Err(ApiError::not_found(format!(
        "{repo_name} has no project {project}"
    )))
}

fn pypi_project(
    view: &View,
    repo: &RepoState,
    source: &RepoState,
    project: &str,
    public: &str,
) -> Result<Option<ProjectView>, ApiError> {
    let normalized = hoard_pypi::normalize_project_name(project);
    let index = &view.node.index;
    let Some(state) = index.project(&source.name, &normalized, view.at)? else {
        return Ok(None);
    };
    let files = index.files(&source.name, &normalized, view.at)?;
    let mut by_version: BTreeMap<String, Vec<&hoard_store::FileState>> = BTreeMap::new();
    for f in &files {
        by_version
            .entry(f.record.version.clone())
            .or_default()
            .push(f);
    }
    let mut order: Vec<String> = by_version.keys().cloned().collect();
    hoard_pypi::sort_versions(&mut order);
    let versions = order
        .iter()
        .rev()
        .map(|version| {
            let files = &by_version[version];
            // A version is yanked when every file of it is (PEP 592).
            let yanked = files
                .iter()
                .map(|f| f.yanked_at(view.at))
                .collect::<Option<Vec<_>>>()
                .map(|reasons| reasons.first().copied().unwrap_or_default().to_owned());
            VersionView {
                version: version.clone(),
                yanked,
                deprecated: None,
                files: files
                    .iter()
                    .map(|f| FileView {
                        href: format!(
                            "/{}/files/{normalized}/{}",
                            repo.name,
                            utf8_percent_encode(&f.record.filename, PATH_SAFE)
                        ),
                        filename: f.record.filename.clone(),
                        size: f.record.size,
                        sha256: f.record.sha256.to_hex(),
                        uploaded: time_text(f.upload_time_us),
                        uploader: f.uploader.clone(),
                        requires_python: f.record.requires_python.clone(),
                    })
                    .collect(),
            }
        })
        .collect();
    let index_url = format!("{public}/{}/simple/", repo.name);
    Ok(Some(ProjectView {
        repo: repo.name.to_string(),
        from_member: None,
        format: "pypi",
        install: vec![
            (
                "pip",
                format!("pip install --index-url {index_url} {}", state.display_name),
            ),
            (
                "uv",
                format!(
                    "uv pip install --index-url {index_url} {}",
                    state.display_name
                ),
            ),
        ],
        name: state.display_name,
        versions,
        dist_tags: Vec::new(),
    }))
}

fn npm_package(
    view: &View,
    repo: &RepoState,
    source: &RepoState,
    name: &str,
    public: &str,
) -> Result<Option<ProjectView>, ApiError> {
    let index = &view.node.index;
    let Some(package) = index.npm_package(&source.name, name, view.at)? else {
        return Ok(None);
    };
    let mut versions: Vec<_> = index
        .npm_versions(&source.name, name, view.at)?
        .into_iter()
        .filter(|v| v.live_at(view.at))
        .collect();
    versions.sort_by(|a, b| hoard_npm::compare_versions(&b.version, &a.version));
    let unscoped = name.rsplit('/').next().unwrap_or(name);
    let versions = versions
        .iter()
        .map(|v| {
            let basename = format!("{unscoped}-{}.tgz", v.version);
            VersionView {
                version: v.version.clone(),
                yanked: None,
                deprecated: v.deprecated_at(view.at).map(str::to_owned),
                files: vec![FileView {
                    href: format!("/{}/{name}/-/{basename}", repo.name),
                    filename: basename,
                    size: v.tarball.size,
                    sha256: v
                        .tarball
                        .sha256
                        .map(|s| s.to_hex())
                        .unwrap_or_else(|| "not fetched yet".to_owned()),
                    uploaded: time_text(v.time_us),
                    uploader: v.publisher.clone(),
                    requires_python: None,
                }],
            }
        })
        .collect();
    Ok(Some(ProjectView {
        repo: repo.name.to_string(),
        from_member: None,
        format: "npm",
        name: package.name.clone(),
        dist_tags: package.tags_at(view.at).into_iter().collect(),
        install: vec![(
            "npm",
            format!(
                "npm install --registry {public}/{}/ {}",
                repo.name, package.name
            ),
        )],
        versions,
    }))
}
