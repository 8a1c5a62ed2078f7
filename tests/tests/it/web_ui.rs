//! The web UI (`/+ui/`) in a real browser: headless Chromium (Debian's
//! `chromium`) loads each page from a node that twine-style uploads and
//! the real npm client filled, and the test reads what the page shows
//! once its script has run. Screenshots go to `target/ui-screenshots/`
//! (`HOARD_UI_SCREENSHOTS=docs/screenshots` refreshes the README's).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use hoard_testkit::artifacts::WheelSpec;
use hoard_testkit::cluster::{client, upload_ok, wait_for};
use hoard_testkit::demo::Demo;
use hoard_testkit::node::describe_failure;
use hoard_testkit::npm::Npm;
use hoard_testkit::tools::{chromium, target_dir, workspace_root};
use hoard_testkit::{wheel, Node, NodeOpts, RepoSpec, Upload};
use serde_json::{json, Value};

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
    // Its row: 1 project, 2 files, and their bytes.
    let row = home
        .split(r#"href="/+ui/pypi/""#)
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap_or_default();
    let bytes = old.bytes.len() + new.bytes.len();
    let size = if bytes < 1024 {
        format!("{bytes} B")
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    };
    for cell in ["1", "2", size.as_str()] {
        assert!(
            row.contains(&format!(r#"<td class="num">{cell}</td>"#)),
            "no {cell} in the pypi row: {row}"
        );
    }
    b.screenshot(&format!("{url}/+ui/"), "home");

    // Search: normalized names, prefixes and substrings, across formats.
    let found = b.dom(&format!("{url}/+ui/+search?q=DEMO.pkg"));
    assert_says(&found, "Demo_Pkg", "a search for DEMO.pkg");
    assert!(found.contains(r#"href="/+ui/pypi/Demo_Pkg""#), "{found}");
    let found = b.dom(&format!("{url}/+ui/+search?q=widg"));
    assert_says(&found, "@acme/widget", "a search for widg");
    let none = b.dom(&format!("{url}/+ui/+search?q=hidden"));
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

/// An admin API call on a demo node, with its admin token.
fn admin(
    http: &reqwest::blocking::Client,
    url: &str,
    token: &str,
    path: &str,
    body: Value,
) -> Value {
    let resp = http
        .post(format!("{url}/+admin/{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .unwrap_or_else(|e| panic!("POST /+admin/{path}: {e}"));
    let status = resp.status();
    let text = resp.text().unwrap_or_default();
    assert!(status.is_success(), "POST /+admin/{path}: {status}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// A page that posts a sign-in form to `url` as soon as it loads: the
/// browser then follows the redirect with its new session cookie.
fn sign_in_page(
    dir: &std::path::Path,
    url: &str,
    user: &str,
    password: &str,
    next: &str,
) -> String {
    let path = dir.join(format!("sign-in-{}.html", hoard_testkit::unique("p")));
    let page = format!(
        r#"<!doctype html><form method="post" action="{url}/+ui/+login"><input name="user" value="{user}"><input name="password" value="{password}"><input name="next" value="{next}"></form><script>document.forms[0].submit()</script>"#
    );
    std::fs::write(&path, page).unwrap();
    format!("file://{}", path.display())
}

/// Done when: every page on a demo cluster (3 voters and a replica), read
/// from the replica, including the cluster page with a killed node shown
/// unreachable; `hoard status` against the same cluster; and signing in
/// for a private repository.
#[test]
fn every_page_of_a_demo_cluster_in_chromium_and_a_killed_node_on_the_cluster_page() {
    let demo = Demo::start(3, 1);
    let http = client();
    let status = |i: usize| -> Value {
        http.get(format!("{}/+status", demo.url(i)))
            .send()
            .and_then(|r| r.json())
            .unwrap_or(Value::Null)
    };
    let leader = wait_for(Duration::from_secs(30), "a demo leader", || {
        (0..3).find(|&i| status(i)["role"] == "leader")
    });
    let (lurl, ltoken) = (demo.url(leader), demo.admin_token(leader));
    let replica = demo.url(3);

    admin(
        &http,
        &lurl,
        &ltoken,
        "repos",
        json!({"name": "secret", "format": "pypi", "anonymous_read": false}),
    );
    admin(
        &http,
        &lurl,
        &ltoken,
        "users/add",
        json!({"name": "carol", "password": "correct horse battery"}),
    );
    let token = admin(
        &http,
        &lurl,
        &ltoken,
        "tokens/create",
        json!({"repo": "pypi", "perm": "upload", "label": "ci"}),
    )["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_token = admin(
        &http,
        &lurl,
        &ltoken,
        "tokens/create",
        json!({"repo": "secret", "perm": "upload", "label": "secret-ci"}),
    )["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = upload_ok(&http, &lurl, &token, &wheel("Demo_Pkg", "1.0"));
    // Enough events for a second changelog page.
    for i in 0..55 {
        upload_ok(&http, &lurl, &token, &wheel("bulk", &format!("0.{i}")));
    }
    let new = wheel("Demo_Pkg", "2.0");
    upload_ok(&http, &lurl, &token, &new);
    let hidden = upload_ok(
        &http,
        &format!("{lurl}/secret/"),
        &secret_token,
        &wheel("hidden-thing", "1.0"),
    );
    let last = admin(
        &http,
        &lurl,
        &ltoken,
        "yank",
        json!({"repo": "pypi", "project": "demo-pkg", "version": "1.0", "reason": "broken"}),
    );
    eprintln!("yank: {last}");
    // An npm package, published with the real npm client.
    let npm_token = admin(
        &http,
        &lurl,
        &ltoken,
        "tokens/create",
        json!({"repo": "npm-local", "perm": "upload", "label": "npm-ci"}),
    )["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let npm = Npm::for_registry(&format!("{lurl}/npm-local/"));
    npm.write_userconfig(Some(&npm_token));
    npm.publish("@acme/widget", "1.0.0", &["ui"]);
    let head = status(leader)["applied_serial"].as_u64().unwrap();
    assert!(head > hidden);
    wait_for(Duration::from_secs(30), "the replica catches up", || {
        (status(3)["applied_serial"].as_u64()? >= head).then_some(())
    });

    let b = Browser::new();
    // Home, search, a project, a point-in-time view: from the replica.
    let home = b.dom(&format!("{replica}/+ui/"));
    for says in ["pypi", "hosted", "Cluster", "Changelog", "Sign in"] {
        assert_says(&home, says, "the replica's home page");
    }
    assert!(!text(&home).contains("secret"), "{home}");
    let found = b.dom(&format!("{replica}/+ui/+search?q=demo"));
    assert!(found.contains(r#"/Demo_Pkg""#), "{found}");
    let page = b.dom(&format!("{replica}/+ui/pypi/demo-pkg"));
    for says in [new.sha256().as_str(), "yanked", "broken", "uv pip install"] {
        assert_says(&page, says, "the project page on the replica");
    }
    let package = b.dom(&format!("{replica}/+ui/npm/@acme/widget"));
    for says in ["latest 1.0.0", "widget-1.0.0.tgz", "npm install --registry"] {
        assert_says(&package, says, "the npm package page on the replica");
    }
    let past = text(&b.dom(&format!("{replica}/+ui/+at/{first}/pypi/demo-pkg")));
    assert!(
        past.contains(&format!("as of serial {first}")) && !past.contains("2.0"),
        "{past}"
    );

    // The changelog: newest first, paged by serial, filtered (by the
    // virtual repository `pypi`, whose events are its members'); the private
    // repository's events only for who may read it.
    let log = b.dom(&format!("{replica}/+ui/+changelog"));
    let t = text(&log);
    assert!(t.contains("files yanked") && t.contains("broken"), "{t}");
    assert!(
        log.contains(&format!(r#"data-serial="{head}""#)),
        "the newest event first: {log}"
    );
    assert!(!t.contains("hidden-thing") && !t.contains("carol"), "{t}");
    let older = log
        .split(r#"rel="next""#)
        .next()
        .and_then(|s| s.rsplit("href=\"").next())
        .and_then(|s| s.split('"').next())
        .expect("an Older events link")
        .replace("&amp;", "&");
    assert!(older.contains("upto="), "{older}");
    let page2 = b.dom(&format!("{replica}{older}"));
    let serials: Vec<u64> = page2
        .split(r#"data-serial=""#)
        .skip(1)
        .filter_map(|s| s.split('"').next()?.parse().ok())
        .collect();
    assert!(
        !serials.is_empty() && serials.windows(2).all(|w| w[0] > w[1]),
        "{serials:?}"
    );
    assert!(serials[0] < head - 49, "{serials:?}");
    let filtered = text(&b.dom(&format!(
        "{replica}/+ui/+changelog?repo=pypi&project=Demo.Pkg"
    )));
    assert!(
        filtered.contains(&new.filename) && !filtered.contains("bulk"),
        "{filtered}"
    );
    b.screenshot(&format!("{replica}/+ui/+changelog"), "changelog");

    // Signing in: a wrong password is refused on the form; the right one
    // opens the private repository and its events, on the replica.
    let wrong = b.dom(&sign_in_page(
        b.profile.path(),
        &replica,
        "carol",
        "not her password",
        "/+ui/secret/hidden-thing",
    ));
    assert_says(&wrong, "Wrong user name or password", "a failed sign-in");
    let signed_in = b.dom(&sign_in_page(
        b.profile.path(),
        &replica,
        "carol",
        "correct horse battery",
        "/+ui/secret/hidden-thing",
    ));
    assert_says(
        &signed_in,
        "signed in as carol",
        "the page after signing in",
    );
    assert_says(&signed_in, "hidden-thing", "the private project");
    let log = text(&b.dom(&format!("{replica}/+ui/+changelog?repo=secret")));
    assert!(log.contains("hidden-thing"), "{log}");
    b.screenshot(&format!("{replica}/+ui/"), "home-signed-in");
    // Guessing is slowed down: after a burst, a 429 that says when to
    // retry, even for the right password.
    let attempt = |password: &str| {
        http.post(format!("{replica}/+ui/+login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("user=carol&password={password}"))
            .send()
            .unwrap()
    };
    let statuses: Vec<u16> = (0..10)
        .map(|_| attempt("guess").status().as_u16())
        .collect();
    assert_eq!(statuses[0], 401, "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let refused = attempt("correct+horse+battery");
    assert_eq!(refused.status().as_u16(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert!(refused
        .text()
        .unwrap()
        .contains("Too many sign-in attempts"));
    // Signed out (a new profile has no cookie), the page is not there.
    let anonymous = http
        .get(format!("{replica}/+ui/secret/hidden-thing"))
        .send()
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 404);

    // The cluster page: four nodes, the leader marked, refreshed by its
    // script; `hoard status` agrees.
    let cluster = b.dom(&format!("{replica}/+ui/+cluster"));
    let t = text(&cluster);
    assert!(t.contains("4 nodes, all healthy"), "{t}");
    for n in &demo.nodes {
        let id = n["id"].as_str().unwrap();
        assert!(
            cluster.contains(&format!(r#"data-node="{id}""#)),
            "no {id}: {t}"
        );
    }
    assert!(
        t.contains("this node") && t.contains("leader") && t.contains("replica"),
        "{t}"
    );
    let refreshes: u64 = cluster
        .split(r#"data-refreshes=""#)
        .nth(1)
        .and_then(|s| s.split('"').next()?.parse().ok())
        .unwrap_or(0);
    assert!(refreshes >= 1, "the page never refreshed itself: {cluster}");
    let cli = |url: &str| {
        let out = Command::new(hoard_testkit::tools::hoard_bin())
            .args(["status", "--url", url])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, table) = cli(&replica);
    assert_eq!(code, Some(0), "{table}");
    assert!(
        table.trim_end().ends_with("4 nodes, all healthy"),
        "{table}"
    );

    // A voter dies: the page and the table say so.
    let victim = (leader + 1) % 3;
    let victim_id = demo.nodes[victim]["id"].as_str().unwrap().to_owned();
    demo.kill9(victim);
    let cluster = wait_for(
        Duration::from_secs(30),
        "the cluster page shows the dead node",
        || {
            let dom = b.dom(&format!("{replica}/+ui/+cluster"));
            text(&dom).contains("4 nodes, 1 not healthy").then_some(dom)
        },
    );
    let row = cluster
        .split(&format!(r#"data-node="{victim_id}""#))
        .nth(1)
        .and_then(|s| s.split("</tr>").next())
        .unwrap_or_else(|| panic!("no row for {victim_id}: {cluster}"));
    assert!(row.contains("unreachable"), "{row}");
    b.screenshot(&format!("{replica}/+ui/+cluster"), "cluster");
    let (code, table) = cli(&replica);
    assert_eq!(code, Some(1), "{table}");
    assert!(table.contains("unreachable"), "{table}");
}
