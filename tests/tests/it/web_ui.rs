//! The web UI (`/+ui/`) in a real browser: headless Chromium (Debian's
//! `chromium`) loads each page from a node that twine-style uploads and
//! the real npm client filled, and the test reads what the page shows
//! once its script has run. Screenshots go to `target/ui-screenshots/`
//! (`HOARD_UI_SCREENSHOTS=docs/screenshots` refreshes the README's).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use hoard_testkit::artifacts::WheelSpec;
use hoard_testkit::cluster::{client, upload_ok};
use hoard_testkit::node::describe_failure;
use hoard_testkit::npm::Npm;
use hoard_testkit::tools::{chromium, target_dir, workspace_root};
use hoard_testkit::{wheel, Node, NodeOpts, RepoSpec, Upload};

/// Chromium with what a headless run as root in a container needs, and
/// a throwaway profile.
fn browser(profile: &std::path::Path) -> Command {
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--virtual-time-budget=3000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

struct Browser {
    profile: tempfile::TempDir,
    shots: PathBuf,
}

impl Browser {
    fn new() -> Browser {
        let shots = match std::env::var_os("HOARD_UI_SCREENSHOTS") {
            Some(dir) => workspace_root().join(dir),
            None => target_dir().join("ui-screenshots"),
        };
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            profile: tempfile::tempdir().unwrap(),
            shots,
        }
    }

    /// The page's DOM once loaded and its scripts have run.
    fn dom(&self, url: &str) -> String {
        let mut cmd = browser(self.profile.path());
        cmd.arg("--dump-dom").arg(url);
        let out = cmd.output().expect("run chromium");
        assert!(out.status.success(), "{}", describe_failure(&cmd, &out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A 1280×900 screenshot of the page, as `name.png`.
    fn screenshot(&self, url: &str, name: &str) {
        let path = self.shots.join(format!("{name}.png"));
        let _ = std::fs::remove_file(&path);
        let mut cmd = browser(self.profile.path());
        cmd.arg("--window-size=1280,900")
            .arg(format!("--screenshot={}", path.display()))
            .arg(url);
        let out = cmd.output().expect("run chromium");
        assert!(out.status.success(), "{}", describe_failure(&cmd, &out));
        let png = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{} is not a page's screenshot ({} bytes)",
            path.display(),
            png.len()
        );
    }
}

/// The text of a DOM, without tags, styles and scripts, for "the page
/// says …" checks.
fn text(dom: &str) -> String {
    let mut dom = dom.to_owned();
    for (open, close) in [("<style", "</style>"), ("<script", "</script>")] {
        while let Some(start) = dom.find(open) {
            let end = dom[start..]
                .find(close)
                .map_or(dom.len(), |e| start + e + close.len());
            dom.replace_range(start..end, " ");
        }
    }
    let mut out = String::new();
    let mut in_tag = false;
    for c in dom.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn assert_says(dom: &str, what: &str, page: &str) {
    let t = text(dom);
    assert!(t.contains(what), "{page} does not say {what:?}:\n{t}");
}

#[test]
fn the_web_ui_shows_repositories_search_projects_and_past_serials_in_chromium() {
    let node = Node::start(
        NodeOpts::default()
            .repo(RepoSpec::pypi("pypi"))
            .repo(RepoSpec {
                anonymous_read: false,
                ..RepoSpec::pypi("secret")
            })
            .repo(RepoSpec::npm("npm")),
    );
    let url = node.url();
    let http = client();
    let token = node.create_token("pypi", "upload");
    let old = WheelSpec::new("Demo_Pkg", "1.0").build();
    let before_new = upload_ok(&http, &url, &token, &old);
    let new = wheel("Demo_Pkg", "2.0");
    upload_ok(&http, &url, &token, &new);
    node.cli_ok(&[
        "yank",
        "--repo",
        "pypi",
        "--project",
        "demo-pkg",
        "--version",
        "1.0",
        "--reason",
        "broken <build>",
        "--url",
        &url,
        "--token",
        &node.admin_token(),
    ]);
    let secret_token = node.create_token("secret", "upload");
    node.upload_ok(
        "secret",
        &secret_token,
        &Upload::of(&wheel("hidden-thing", "1.0")),
    );
    let npm_token = node.create_token("npm", "upload");
    let npm = Npm::with_token(&node, &npm_token);
    for version in ["1.0.0", "1.1.0"] {
        let out = npm.publish("@acme/widget", version, &["ui"]);
        assert!(out.success(), "{}", out.all());
    }

    // The node's landing text points people at the UI.
    let landing = http.get(format!("{url}/")).send().unwrap().text().unwrap();
    assert!(
        landing.contains(&format!("web UI: {url}/+ui/")),
        "{landing}"
    );

    let b = Browser::new();
    // Home: every readable repository, its kind and counts; no private one.
    let home = b.dom(&format!("{url}/+ui/"));
    for says in ["Repositories", "pypi", "npm", "hosted", "node "] {
        assert_says(&home, says, "the home page");
    }
    assert!(
        !text(&home).contains("secret"),
        "a private repository is listed: {home}"
    );
    assert!(home.contains(r#"href="/+ui/pypi/""#), "{home}");
    b.screenshot(&format!("{url}/+ui/"), "home");

    // Search: normalized names, prefixes and substrings, across formats.
    let found = b.dom(&format!("{url}/+ui/search?q=DEMO.pkg"));
    assert_says(&found, "Demo_Pkg", "a search for DEMO.pkg");
    assert!(found.contains(r#"href="/+ui/pypi/Demo_Pkg""#), "{found}");
    let found = b.dom(&format!("{url}/+ui/search?q=widg"));
    assert_says(&found, "@acme/widget", "a search for widg");
    let none = b.dom(&format!("{url}/+ui/search?q=hidden"));
    assert_says(
        &none,
        "No project matches",
        "a search for a private project",
    );

    // A PyPI project: newest version first, the yank and its reason, each
    // file's sha256 and uploader, and the install commands for this node.
    let page = b.dom(&format!("{url}/+ui/pypi/demo-pkg"));
    let t = text(&page);
    let (v2, v1) = (t.find("2.0 File").unwrap(), t.find("1.0 yanked").unwrap());
    assert!(v2 < v1, "newest first: {t}");
    for says in [
        "broken <build>".to_string(),
        new.sha256(),
        old.sha256(),
        new.filename.clone(),
        format!("pip install --index-url {url}/pypi/simple/ Demo_Pkg"),
        format!("uv pip install --index-url {url}/pypi/simple/ Demo_Pkg"),
    ] {
        assert_says(&page, &says, "the project page");
    }
    let file_href = format!("/pypi/files/demo-pkg/{}", new.filename);
    assert!(page.contains(&file_href), "{page}");
    let got = http.get(format!("{url}{file_href}")).send().unwrap();
    assert_eq!(got.bytes().unwrap().as_ref(), new.bytes.as_slice());
    b.screenshot(&format!("{url}/+ui/pypi/demo-pkg"), "project");

    // An npm package: dist-tags, versions, the tarball's sha256.
    let page = b.dom(&format!("{url}/+ui/npm/@acme/widget"));
    for says in [
        "latest 1.1.0",
        "1.0.0",
        "widget-1.1.0.tgz",
        "npm install --registry",
    ] {
        assert_says(&page, says, "the npm package page");
    }
    b.screenshot(&format!("{url}/+ui/npm/@acme/widget"), "npm-package");

    // As of a past serial: before 2.0 was uploaded and 1.0 yanked.
    let past = b.dom(&format!("{url}/+ui/+at/{before_new}/pypi/demo-pkg"));
    let t = text(&past);
    assert!(t.contains(&format!("as of serial {before_new}")), "{t}");
    assert!(
        t.contains("1.0") && !t.contains("2.0") && !t.contains("yanked"),
        "{t}"
    );

    // Private and missing: a 404 page that says why, with the search box.
    let missing = http
        .get(format!("{url}/+ui/secret/hidden-thing"))
        .send()
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let missing = missing.text().unwrap();
    assert!(missing.contains("no repository named secret") && missing.contains(r#"type="search""#));
    // With a token that may read it, the private repository is there.
    let with_token = http
        .get(format!("{url}/+ui/secret/hidden-thing"))
        .bearer_auth(&secret_token)
        .timeout(Duration::from_secs(10))
        .send()
        .unwrap();
    assert_eq!(with_token.status().as_u16(), 200);
    assert!(with_token.text().unwrap().contains("hidden-thing"));
}
