//! The web UI's pages: pure functions from plain view data to HTML, with
//! maud templates checked at compile time and escaped by construction.

use maud::{html, Markup, PreEscaped, DOCTYPE};

const STYLE: &str = include_str!("style.css");

/// Copies a `data-copy` button's value to the clipboard: the only script
/// the pages have, and the pages work without it.
const COPY_SCRIPT: &str = "document.addEventListener('click',function(e){var b=e.target.closest('[data-copy]');if(!b||!navigator.clipboard)return;navigator.clipboard.writeText(b.dataset.copy).then(function(){b.textContent='copied';setTimeout(function(){b.textContent='copy'},1500)})});";

/// What every page shows around its content.
pub struct Chrome {
    pub node_id: String,
    /// The serial the page shows: the node's applied serial, or `at`.
    pub serial: u64,
    /// Set when the page is a point-in-time view.
    pub at: Option<u64>,
    /// A warning for the whole page (this node is unhealthy or behind).
    pub banner: Option<String>,
    /// Who is signed in (or sends credentials), if anyone.
    pub who: Option<String>,
    /// Where the UI is rooted, with the point-in-time prefix if any
    /// (`/+ui` or `/+ui/+at/12`).
    pub base: String,
}

pub struct RepoRow {
    pub name: String,
    pub format: &'static str,
    /// hosted, mirror or virtual.
    pub kind: &'static str,
    /// The upstreams of a mirror, the members of a virtual repository.
    pub detail: String,
    /// Projects (PyPI) or packages (npm); `None` for a virtual repository.
    pub projects: Option<usize>,
    /// Files (PyPI) or versions (npm) whose bytes this node holds, and
    /// those bytes; `None` for a virtual repository.
    pub files: Option<u64>,
    pub bytes: Option<u64>,
    pub private: bool,
}

pub struct SearchHit {
    pub repo: String,
    pub format: &'static str,
    pub name: String,
    pub href: String,
}

pub struct FileView {
    pub filename: String,
    pub href: String,
    pub size: u64,
    pub sha256: String,
    pub uploaded: String,
    pub uploader: String,
    pub requires_python: Option<String>,
}

pub struct VersionView {
    pub version: String,
    /// `Some(reason)` when yanked (PyPI).
    pub yanked: Option<String>,
    /// `Some(message)` when deprecated (npm).
    pub deprecated: Option<String>,
    pub files: Vec<FileView>,
}

pub struct ProjectView {
    pub repo: String,
    /// The repository the files come from, when `repo` is virtual.
    pub from_member: Option<String>,
    pub format: &'static str,
    pub name: String,
    /// Newest first.
    pub versions: Vec<VersionView>,
    /// npm dist-tags, by tag.
    pub dist_tags: Vec<(String, String)>,
    /// Install commands, labelled by client.
    pub install: Vec<(&'static str, String)>,
}

/// A file of a generic repository, in a directory or on its own page.
pub struct GenericFileRow {
    pub name: String,
    /// Where its bytes are.
    pub href: String,
    pub size: u64,
    pub sha256: String,
    pub uploaded: String,
    pub uploader: String,
    /// Where a mirror fetched it from.
    pub upstream: Option<String>,
}

/// A directory of a generic repository.
pub struct DirectoryView {
    pub repo: String,
    /// `""` for the root, else `a/b/`.
    pub dir: String,
    pub parent: Option<String>,
    /// Name (ending in `/`) and link.
    pub subdirs: Vec<(String, String)>,
    pub files: Vec<GenericFileRow>,
    /// How to store a file here.
    pub push: String,
}

pub struct GenericFileView {
    pub repo: String,
    pub dir: String,
    pub dir_href: String,
    pub file: GenericFileRow,
    pub pull: String,
    pub curl: String,
}

/// One event on the changelog page.
pub struct ChangeRow {
    pub serial: u64,
    pub time: String,
    /// Who: the actor, and the user it acted for when that differs.
    pub actor: String,
    pub node: String,
    pub kind: String,
    pub repo: String,
    pub project: String,
    /// The project's page as of this event.
    pub project_href: Option<String>,
    pub detail: String,
}

pub struct ChangelogView {
    /// The filters, empty when unset.
    pub repo: String,
    pub project: String,
    /// The repositories to filter by.
    pub repos: Vec<String>,
    /// The newest serial this page may show.
    pub upto: u64,
    /// Newest first.
    pub rows: Vec<ChangeRow>,
    /// The next page back, when there is one.
    pub older: Option<String>,
    /// Back to the newest events, when this page is not showing them.
    pub newest: Option<String>,
}

/// One node on the cluster page; `-` where the node does not say.
pub struct ClusterRow {
    pub node_id: String,
    /// The node that renders the page.
    pub this: bool,
    pub url: String,
    pub role: String,
    pub leader: bool,
    pub term: String,
    pub epoch: String,
    pub applied: String,
    pub commit: String,
    pub lag: String,
    /// ok, unhealthy, fenced, or unreachable.
    pub health: String,
    pub problem: Option<String>,
    pub version: String,
    pub upstream: String,
    pub reachable: bool,
}

/// Replaces the cluster table with a fresh one every 2 s; the page is
/// whole without it, and says when it last changed.
const CLUSTER_SCRIPT: &str = "(function(){var box=document.getElementById('cluster'),stamp=document.getElementById('refreshed'),n=0;function tick(){fetch(location.pathname+'?fragment',{cache:'no-store'}).then(function(r){if(!r.ok)throw new Error('HTTP '+r.status);return r.text()}).then(function(t){box.innerHTML=t;n+=1;box.dataset.refreshes=n;stamp.textContent='updated '+new Date().toLocaleTimeString()}).catch(function(e){stamp.textContent='could not refresh: '+e.message}).finally(function(){setTimeout(tick,2000)})}setTimeout(tick,2000)})();";

fn layout(chrome: &Chrome, title: &str, query: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · hoard" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    a.brand href={ (chrome.base) "/" } { "hoard" }
                    nav aria-label="main" {
                        a href={ (chrome.base) "/" } { "Repositories" }
                        a href="/+ui/+changelog" { "Changelog" }
                        a href="/+ui/+cluster" { "Cluster" }
                    }
                    form role="search" action={ (chrome.base) "/+search" } method="get" {
                        label for="q" class="muted" { "Search " }
                        input #q type="search" name="q" value=(query) placeholder="project name";
                        " "
                        button type="submit" { "Search" }
                    }
                    @if let Some(who) = &chrome.who {
                        form.session method="post" action="/+ui/+logout" {
                            span.muted { "signed in as " strong #who { (who) } } " "
                            button type="submit" { "Sign out" }
                        }
                    } @else {
                        a href="/+ui/+login" { "Sign in" }
                    }
                }
                main {
                    @if let Some(banner) = &chrome.banner {
                        p.banner role="alert" { (banner) }
                    }
                    @if let Some(at) = chrome.at {
                        p.banner role="note" { "A point-in-time view: as of serial " (at) ". " a href="/+ui/" { "See the present" } }
                    }
                    (content)
                }
                footer {
                    "node " (chrome.node_id) " · serial " span #serial { (chrome.serial) }
                }
                script { (PreEscaped(COPY_SCRIPT)) }
            }
        }
    }
}

pub fn home(chrome: &Chrome, repos: &[RepoRow]) -> Markup {
    let content = html! {
        h1 { "Repositories" }
        @if repos.is_empty() {
            p.muted { "No repository you may read." }
        } @else {
            table {
                caption.muted { (repos.len()) " repositories" }
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Format" } th scope="col" { "Kind" }
                    th scope="col" class="num" { "Projects" } th scope="col" class="num" { "Files" }
                    th scope="col" class="num" { "Size" } th scope="col" { "Details" }
                } }
                tbody {
                    @for r in repos {
                        tr {
                            td { a href={ (chrome.base) "/" (r.name) "/" } { (r.name) }
                                @if r.private { " " span.badge { "private" } } }
                            td { (r.format) }
                            td { (r.kind) }
                            td.num { @if let Some(n) = r.projects { (n) } @else { "—" } }
                            td.num { @if let Some(n) = r.files { (n) } @else { "—" } }
                            td.num { @if let Some(b) = r.bytes { (human_size(b)) } @else { "—" } }
                            td.muted { (r.detail) }
                        }
                    }
                }
            }
        }
    };
    layout(chrome, "Repositories", "", content)
}

pub fn repo(chrome: &Chrome, repo: &RepoRow, projects: &[SearchHit]) -> Markup {
    let content = html! {
        h1 { (repo.name) " " span.badge { (repo.format) } " " span.badge { (repo.kind) } }
        @if !repo.detail.is_empty() { p.muted { (repo.detail) } }
        @if projects.is_empty() {
            p.muted { "No projects." }
        } @else {
            ul { @for p in projects { li { a href=(p.href) { (p.name) } } } }
        }
    };
    layout(chrome, &repo.name, "", content)
}

pub fn directory(chrome: &Chrome, repo: &RepoRow, d: &DirectoryView) -> Markup {
    let content = html! {
        h1 { (d.repo) "/" (d.dir) " " span.badge { (repo.format) } " " span.badge { (repo.kind) } }
        @if !repo.detail.is_empty() { p.muted { (repo.detail) } }
        @if let Some(parent) = &d.parent { p { a href=(parent) { "↑ up" } } }
        @if d.subdirs.is_empty() && d.files.is_empty() {
            p.muted { "Nothing stored here yet." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" class="num" { "Size" } th scope="col" { "sha256" }
                    th scope="col" { "Uploaded" } th scope="col" { "By" }
                } }
                tbody {
                    @for (name, href) in &d.subdirs {
                        tr { td { a href=(href) { (name) } } td.num { "—" } td {} td {} td {} }
                    }
                    @for f in &d.files { (generic_file_row(f)) }
                }
            }
        }
        h2 { "Store a file here" }
        pre.install { code { (d.push) } }
    };
    layout(chrome, &format!("{}/{}", d.repo, d.dir), "", content)
}

fn generic_file_row(f: &GenericFileRow) -> Markup {
    html! {
        tr {
            td { a href=(f.href) { (f.name) } }
            td.num { (human_size(f.size)) }
            td { span.hash { (f.sha256) } " " button type="button" data-copy=(f.sha256) aria-label={ "copy the sha256 of " (f.name) } { "copy" } }
            td { (f.uploaded) }
            td { (f.uploader) @if let Some(url) = &f.upstream { " " span.muted title=(url) { "(mirrored)" } } }
        }
    }
}

pub fn generic_file(chrome: &Chrome, g: &GenericFileView) -> Markup {
    let f = &g.file;
    let content = html! {
        h1 { (f.name) }
        p.muted { "in " a href=(g.dir_href) { (g.repo) "/" (g.dir) } }
        table {
            thead { tr {
                th scope="col" { "File" } th scope="col" class="num" { "Size" } th scope="col" { "sha256" }
                th scope="col" { "Uploaded" } th scope="col" { "By" }
            } }
            tbody { (generic_file_row(f)) }
        }
        @if let Some(url) = &f.upstream { p.muted { "Fetched from " code { (url) } } }
        h2 { "Download" }
        pre.install { code { (g.pull) } }
        pre.install { code { (g.curl) } }
    };
    layout(chrome, &f.name, "", content)
}

pub fn search(chrome: &Chrome, query: &str, hits: &[SearchHit], truncated: bool) -> Markup {
    let content = html! {
        h1 { "Search" }
        @if query.is_empty() {
            p.muted { "Type a project name, or part of one." }
        } @else if hits.is_empty() {
            p { "No project matches " code { (query) } "." }
        } @else {
            p.muted { (hits.len()) @if truncated { "+" } " projects match " code { (query) } "." }
            table {
                thead { tr { th scope="col" { "Project" } th scope="col" { "Repository" } th scope="col" { "Format" } } }
                tbody {
                    @for h in hits {
                        tr { td { a href=(h.href) { (h.name) } } td { (h.repo) } td { (h.format) } }
                    }
                }
            }
        }
    };
    layout(chrome, "Search", query, content)
}

pub fn project(chrome: &Chrome, p: &ProjectView) -> Markup {
    let content = html! {
        h1 { (p.name) " " span.badge { (p.format) } }
        p.muted {
            "in " a href={ (chrome.base) "/" (p.repo) "/" } { (p.repo) }
            @if let Some(member) = &p.from_member { " (from its member " (member) ")" }
            " · " (p.versions.len()) " versions"
        }
        h2 { "Install" }
        @for (client, command) in &p.install {
            p.muted { (client) }
            pre.install { code { (command) } }
        }
        @if !p.dist_tags.is_empty() {
            h2 { "Dist-tags" }
            table {
                thead { tr { th scope="col" { "Tag" } th scope="col" { "Version" } } }
                tbody { @for (tag, version) in &p.dist_tags { tr { td { (tag) } td { (version) } } } }
            }
        }
        h2 { "Versions" }
        @for v in &p.versions {
            section aria-label={ "version " (v.version) } {
                h3 #{ "v-" (v.version) } {
                    (v.version)
                    @if let Some(reason) = &v.yanked {
                        " " span.badge.yanked title=(reason) { "yanked" }
                        @if !reason.is_empty() { " " span.muted { (reason) } }
                    }
                    @if let Some(message) = &v.deprecated {
                        " " span.badge.deprecated { "deprecated" } " " span.muted { (message) }
                    }
                }
                table {
                    thead { tr {
                        th scope="col" { "File" } th scope="col" class="num" { "Size" } th scope="col" { "sha256" }
                        th scope="col" { "Uploaded" } th scope="col" { "By" }
                        @if p.format == "pypi" { th scope="col" { "Requires-Python" } }
                    } }
                    tbody {
                        @for f in &v.files {
                            tr {
                                td { a href=(f.href) { (f.filename) } }
                                td.num { (human_size(f.size)) }
                                td { span.hash { (f.sha256) } " " button type="button" data-copy=(f.sha256) aria-label={ "copy the sha256 of " (f.filename) } { "copy" } }
                                td { (f.uploaded) }
                                td { (f.uploader) }
                                @if p.format == "pypi" {
                                    td { @if let Some(r) = &f.requires_python { code { (r) } } @else { span.muted { "—" } } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(chrome, &p.name, "", content)
}

pub fn changelog(chrome: &Chrome, c: &ChangelogView) -> Markup {
    let content = html! {
        h1 { "Changelog" }
        form.filters method="get" action={ (chrome.base) "/+changelog" } {
            label for="repo" { "Repository " }
            select #repo name="repo" {
                option value="" selected[c.repo.is_empty()] { "all" }
                @for r in &c.repos { option value=(r) selected[*r == c.repo] { (r) } }
            }
            " "
            label for="project" { "Project " }
            input #project type="text" name="project" value=(c.project) placeholder="any";
            " "
            button type="submit" { "Filter" }
        }
        p.muted { "Events at or before serial " (c.upto) ", newest first." }
        @if c.rows.is_empty() {
            p.muted { "No events." }
        } @else {
            table {
                thead { tr {
                    th scope="col" class="num" { "Serial" } th scope="col" { "Time" } th scope="col" { "Who" }
                    th scope="col" { "Kind" } th scope="col" { "Repository" } th scope="col" { "Project" }
                    th scope="col" { "What" } th scope="col" { "Node" }
                } }
                tbody {
                    @for r in &c.rows {
                        tr data-serial=(r.serial) {
                            td.num { a href={ "/+ui/+at/" (r.serial) "/" } title="the repositories as of this serial" { (r.serial) } }
                            td { (r.time) }
                            td { (r.actor) }
                            td { (r.kind) }
                            td { (r.repo) }
                            td { @if let Some(href) = &r.project_href { a href=(href) { (r.project) } } @else { (r.project) } }
                            td { (r.detail) }
                            td.muted { (r.node) }
                        }
                    }
                }
            }
        }
        nav.pager aria-label="pages" {
            @if let Some(href) = &c.newest { a href=(href) { "Newest events" } " " }
            @if let Some(href) = &c.older { a href=(href) rel="next" { "Older events" } }
        }
    };
    layout(chrome, "Changelog", "", content)
}

/// The cluster table: the part of the cluster page that refreshes.
pub fn cluster_table(rows: &[ClusterRow], summary: &str, healthy: bool) -> Markup {
    html! {
        p.summary.ok[healthy].bad[!healthy] role="status" { (summary) }
        table {
            thead { tr {
                th scope="col" { "Node" } th scope="col" { "Role" } th scope="col" { "Term" }
                th scope="col" { "Epoch" } th scope="col" class="num" { "Applied" }
                th scope="col" class="num" { "Commit" } th scope="col" class="num" { "Lag" }
                th scope="col" { "Health" } th scope="col" { "Version" } th scope="col" { "Upstream" }
            } }
            tbody {
                @for r in rows {
                    tr.down[!r.reachable] data-node=(r.node_id) {
                        td {
                            @if r.reachable { a href={ (r.url) "/+ui/+cluster" } { (r.node_id) } } @else { (r.node_id) }
                            @if r.this { " " span.badge { "this node" } }
                            br; span.muted { (r.url) }
                        }
                        td { @if r.leader { strong title="the Raft leader: it takes every write" { (r.role) } } @else { (r.role) } }
                        td { (r.term) }
                        td { (r.epoch) }
                        td.num { (r.applied) }
                        td.num { (r.commit) }
                        td.num { (r.lag) }
                        td {
                            span.health.ok[r.health == "ok"].bad[r.health != "ok"] { (r.health) }
                            @if let Some(p) = &r.problem { br; span.muted { (p) } }
                        }
                        td { (r.version) }
                        td.muted { (r.upstream) }
                    }
                }
            }
        }
    }
}

pub fn cluster(chrome: &Chrome, table: Markup) -> Markup {
    let content = html! {
        h1 { "Cluster" }
        p.muted { "Every node that this node finds through the members and followers it knows. "
            span #refreshed aria-live="polite" { "Refreshes every 2 s." } }
        div #cluster data-refreshes="0" { (table) }
        script { (PreEscaped(CLUSTER_SCRIPT)) }
    };
    layout(chrome, "Cluster", "", content)
}

pub fn login(chrome: &Chrome, next: &str, user: &str, error: Option<&str>) -> Markup {
    let content = html! {
        h1 { "Sign in" }
        p.muted { "Private repositories show once you sign in with your user name and password, or with a token (leave the user name empty)." }
        @if let Some(error) = error { p.banner role="alert" { (error) } }
        form.login method="post" action="/+ui/+login" {
            input type="hidden" name="next" value=(next);
            p { label for="user" { "User name" } br; input #user type="text" name="user" value=(user) autocomplete="username"; }
            p { label for="password" { "Password or token" } br; input #password type="password" name="password" autocomplete="current-password" required; }
            p { button type="submit" { "Sign in" } }
        }
    };
    layout(chrome, "Sign in", "", content)
}

pub fn not_found(chrome: &Chrome, message: &str) -> Markup {
    layout(
        chrome,
        "Not found",
        "",
        html! {
            h1 { "Not found" }
            p { (message) }
            @if chrome.who.is_none() {
                p.muted { "Private repositories show once you " a href="/+ui/+login" { "sign in" } "." }
            }
        },
    )
}

/// 1536 -> "1.5 KiB".
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chrome() -> Chrome {
        Chrome {
            node_id: "n1".into(),
            serial: 7,
            at: None,
            banner: None,
            who: None,
            base: "/+ui".into(),
        }
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(50 << 20), "50.0 MiB");
    }

    #[test]
    fn names_and_reasons_are_escaped() {
        let page = project(
            &chrome(),
            &ProjectView {
                repo: "pypi".into(),
                from_member: None,
                format: "pypi",
                name: "<script>x</script>".into(),
                versions: vec![VersionView {
                    version: "1.0".into(),
                    yanked: Some("\"broken\" & <b>".into()),
                    deprecated: None,
                    files: vec![],
                }],
                dist_tags: vec![],
                install: vec![("pip", "pip install x".into())],
            },
        )
        .into_string();
        assert!(!page.contains("<script>x</script>"));
        assert!(page.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(page.contains("&quot;broken&quot; &amp; &lt;b&gt;"));
        assert!(page.contains("yanked"));
    }

    #[test]
    fn every_page_shows_its_serial_and_a_point_in_time_view_says_so() {
        let page = home(&chrome(), &[]).into_string();
        assert!(page.contains(r#"<span id="serial">7</span>"#), "{page}");
        assert!(!page.contains("point-in-time"));
        let at = Chrome {
            at: Some(3),
            serial: 3,
            base: "/+ui/+at/3".into(),
            ..chrome()
        };
        let page = home(&at, &[]).into_string();
        assert!(page.contains("as of serial 3"), "{page}");
        assert!(page.contains(r#"href="/+ui/+at/3/""#), "{page}");
    }
}
