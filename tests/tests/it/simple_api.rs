//! The Simple API (PEP 503/691/592/629/658/714/700), uploads' success paths,
//! auth paths, `/+status`, and configuration.

use hoard_testkit::artifacts::{normalize, WheelSpec};
use hoard_testkit::node::serial_header;
use hoard_testkit::simple::{anchor_for, anchors};
use hoard_testkit::{sdist, sha256_hex, wheel, Auth, Node, NodeOpts, RepoSpec, Upload};
use reqwest::Url;
use serde_json::Value;

use crate::pypi_clients::{PIP_ACCEPT, UV_ACCEPT};

pub const JSON_TYPE: &str = "application/vnd.pypi.simple.v1+json";

/// GET the project's JSON page (asserting 200 and the PEP 691 type).
pub fn json_page(node: &Node, repo: &str, project: &str) -> Value {
    let resp = node
        .http()
        .get(format!("{}/{repo}/simple/{project}/", node.url()))
        .header("accept", JSON_TYPE)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "JSON page of {project}");
    let ct = content_type(&resp);
    assert!(ct.starts_with(JSON_TYPE), "JSON page content-type {ct}");
    resp.json().unwrap()
}

/// GET the project's HTML page (asserting 200 and text/html): its URL and
/// body.
pub fn html_page(node: &Node, repo: &str, project: &str) -> (Url, String) {
    let resp = node.get(&format!("/{repo}/simple/{project}/"));
    assert_eq!(resp.status().as_u16(), 200, "HTML page of {project}");
    let ct = content_type(&resp);
    assert!(ct.starts_with("text/html"), "HTML page content-type {ct}");
    (resp.url().clone(), resp.text().unwrap())
}

/// The absolute URL of a file entry of a JSON page.
pub fn file_url(node: &Node, repo: &str, project: &str, file: &Value) -> Url {
    let page = Url::parse(&format!("{}/{repo}/simple/{project}/", node.url())).unwrap();
    page.join(file["url"].as_str().expect("file url")).unwrap()
}

pub fn content_type(resp: &reqwest::blocking::Response) -> String {
    resp.headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// A node with `demo-pkg` 1.0.0 (wheel with Requires-Python, and sdist).
fn node_with_demo() -> (
    Node,
    String,
    hoard_testkit::Artifact,
    hoard_testkit::Artifact,
) {
    let node = Node::start_default();
    let token = node.create_token("pypi", "upload");
    let mut spec = WheelSpec::new("Demo_Pkg", "1.0.0");
    spec.requires_python = Some(">=3.8".to_string());
    let whl = spec.build();
    let sd = sdist("Demo_Pkg", "1.0.0");
    node.upload_ok("pypi", &token, &Upload::of(&whl));
    node.upload_ok("pypi", &token, &Upload::of(&sd));
    (node, token, whl, sd)
}

#[test]
fn html_page_has_relative_hashed_urls_and_core_metadata() {
    let (node, _token, whl, sd) = node_with_demo();
    let (page_url, html) = html_page(&node, "pypi", "demo-pkg");
    let links = anchors(&html);
    assert_eq!(links.len(), 2, "two files: {html}");
    for (a, has_metadata) in [(&whl, true), (&sd, false)] {
        let link = anchor_for(&links, &a.filename)
            .unwrap_or_else(|| panic!("{} not on the page: {html}", a.filename));
        let href = link.href();
        assert!(
            !href.starts_with("http:") && !href.starts_with("https:") && !href.starts_with('/'),
            "file URLs should be relative: {href}"
        );
        let (path, fragment) = href.split_once('#').expect("a #sha256= fragment");
        assert_eq!(fragment, format!("sha256={}", a.sha256()));
        let resolved = page_url.join(path).unwrap();
        assert_eq!(
            resolved.path(),
            format!("/pypi/files/demo-pkg/{}", a.filename),
            "where {href} resolves"
        );
        let body = node.http().get(resolved.clone()).send().unwrap();
        assert_eq!(body.status().as_u16(), 200);
        assert_eq!(sha256_hex(&body.bytes().unwrap()), a.sha256());

        if has_metadata {
            let meta_sha = format!("sha256={}", sha256_hex(a.metadata.as_bytes()));
            assert_eq!(
                link.attr("data-core-metadata"),
                Some(meta_sha.as_str()),
                "PEP 714"
            );
            assert_eq!(
                link.attr("data-dist-info-metadata"),
                Some(meta_sha.as_str()),
                "PEP 658"
            );
            assert_eq!(link.attr("data-requires-python"), Some(">=3.8"));
            let meta = node
                .http()
                .get(format!("{resolved}.metadata"))
                .send()
                .unwrap();
            assert_eq!(meta.status().as_u16(), 200);
            assert_eq!(meta.text().unwrap(), a.metadata);
        } else {
            assert!(
                !link.has_attr("data-core-metadata"),
                "sdist has no core metadata"
            );
        }
        assert!(!link.has_attr("data-yanked"));
    }
    // PEP 629
    assert!(
        html.contains(r#"<meta name="pypi:repository-version" content="1."#),
        "PEP 629 meta tag missing: {html}"
    );
}

#[test]
fn json_page_follows_pep_691_and_700() {
    let (node, _token, whl, sd) = node_with_demo();
    node.upload_ok(
        "pypi",
        &node.create_token("pypi", "upload"),
        &Upload::of(&wheel("demo-pkg", "0.9")),
    );
    let page = json_page(&node, "pypi", "demo-pkg");
    assert_eq!(page["meta"]["api-version"], "1.1", "{page}");
    assert_eq!(page["name"], "demo-pkg");
    let mut versions: Vec<&str> = page["versions"]
        .as_array()
        .expect("PEP 700 versions")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    versions.sort();
    assert_eq!(versions, ["0.9", "1.0.0"]);
    let files = page["files"].as_array().unwrap();
    assert_eq!(files.len(), 3);
    for a in [&whl, &sd] {
        let f = files
            .iter()
            .find(|f| f["filename"] == a.filename.as_str())
            .unwrap_or_else(|| panic!("{} missing: {page}", a.filename));
        assert_eq!(f["hashes"]["sha256"], a.sha256().as_str());
        assert_eq!(f["size"], a.bytes.len() as u64, "PEP 700 size");
        let t = f["upload-time"].as_str().expect("PEP 700 upload-time");
        assert!(
            t.len() >= 20 && t.ends_with('Z') && t.contains('T'),
            "upload-time {t}"
        );
        assert_eq!(f["yanked"], false);
        let url = file_url(&node, "pypi", "demo-pkg", f);
        assert_eq!(url.path(), format!("/pypi/files/demo-pkg/{}", a.filename));
        if a.filename.ends_with(".whl") {
            let sha = sha256_hex(a.metadata.as_bytes());
            assert_eq!(f["core-metadata"]["sha256"], sha.as_str(), "PEP 714: {f}");
            assert_eq!(f["requires-python"], ">=3.8");
        } else {
            assert!(
                f.get("core-metadata").is_none_or(|v| v == false),
                "sdist core-metadata: {f}"
            );
        }
    }
}

#[test]
fn accept_header_negotiation() {
    let (node, _token, _whl, _sd) = node_with_demo();
    let cases: [(Option<&str>, &str); 6] = [
        (None, "text/html"),
        (Some("text/html"), "text/html"),
        (Some(UV_ACCEPT), JSON_TYPE),
        (Some(PIP_ACCEPT), JSON_TYPE),
        (Some(JSON_TYPE), JSON_TYPE),
        (Some("application/vnd.pypi.simple.latest+json"), JSON_TYPE),
    ];
    for path in ["/pypi/simple/", "/pypi/simple/demo-pkg/"] {
        for (accept, want) in cases {
            // Not the node's usual client: another crate of the workspace turns on
            // reqwest's gzip, which would decode the body and drop its header.
            let client = reqwest::blocking::Client::builder()
                .no_gzip()
                .build()
                .unwrap();
            let mut req = client.get(format!("{}{path}", node.url()));
            if let Some(a) = accept {
                req = req.header("accept", a);
            }
            let resp = req.send().unwrap();
            assert_eq!(resp.status().as_u16(), 200, "{path} Accept {accept:?}");
            let ct = content_type(&resp);
            assert!(
                ct.starts_with(want),
                "{path} Accept {accept:?}: got {ct}, want {want}"
            );
        }
        // The v1 HTML type may be answered as itself or as text/html.
        let resp = node
            .http()
            .get(format!("{}{path}", node.url()))
            .header("accept", "application/vnd.pypi.simple.v1+html")
            .send()
            .unwrap();
        let ct = content_type(&resp);
        assert!(
            ct.starts_with("application/vnd.pypi.simple.v1+html") || ct.starts_with("text/html"),
            "v1+html got {ct}"
        );
    }
}

#[test]
fn project_index_lists_projects() {
    let (node, token, _whl, _sd) = node_with_demo();
    node.upload_ok("pypi", &token, &Upload::of(&wheel("other.thing", "1")));
    let resp = node.get("/pypi/simple/");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(content_type(&resp).starts_with("text/html"));
    let url = resp.url().clone();
    let html = resp.text().unwrap();
    let links = anchors(&html);
    for project in ["demo-pkg", "other-thing"] {
        let link = links
            .iter()
            .find(|a| normalize(&a.text) == project)
            .unwrap_or_else(|| panic!("{project} not in the index: {html}"));
        assert_eq!(
            url.join(link.href()).unwrap().path(),
            format!("/pypi/simple/{project}/")
        );
    }
    let resp = node
        .http()
        .get(format!("{}/pypi/simple/", node.url()))
        .header("accept", JSON_TYPE)
        .send()
        .unwrap();
    let v: Value = resp.json().unwrap();
    assert_eq!(v["meta"]["api-version"], "1.1");
    let mut names: Vec<String> = v["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| normalize(p["name"].as_str().unwrap()))
        .collect();
    names.sort();
    assert_eq!(names, ["demo-pkg", "other-thing"]);
}

#[test]
fn non_normalized_names_redirect_and_unknown_projects_404() {
    let (node, _token, _whl, _sd) = node_with_demo();
    for path in [
        "/pypi/simple/Demo_Pkg/",
        "/pypi/simple/demo.pkg/",
        "/pypi/simple/DEMO--pkg/",
    ] {
        let resp = node.get(path);
        assert_eq!(resp.status().as_u16(), 301, "{path}");
        let loc = resp.headers()["location"].to_str().unwrap();
        let target = Url::parse(&format!("{}{path}", node.url()))
            .unwrap()
            .join(loc)
            .unwrap();
        assert_eq!(
            target.path(),
            "/pypi/simple/demo-pkg/",
            "{path} redirects to {loc}"
        );
    }
    let resp = node.get("/pypi/simple/no-such-project/");
    assert_eq!(resp.status().as_u16(), 404);
    assert!(serial_header(&resp).is_ok(), "404 without X-Hoard-Serial");
    let resp = node
        .http()
        .get(format!("{}/pypi/simple/no-such-project/", node.url()))
        .header("accept", JSON_TYPE)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(node.get("/no-such-repo/simple/").status().as_u16(), 404);
}

#[test]
fn identical_reupload_is_ok_without_an_event_and_different_bytes_conflict() {
    let (node, token, whl, _sd) = node_with_demo();
    let before = node.store_snapshot();
    let resp = node.upload("pypi", &Auth::Basic(token.clone()), &Upload::of(&whl));
    assert_eq!(resp.status().as_u16(), 200, "identical re-upload");
    assert_eq!(
        node.store_snapshot(),
        before,
        "identical re-upload made an event or a blob"
    );

    let mut spec = WheelSpec::new("Demo_Pkg", "1.0.0");
    spec.extra_files
        .push(("demo_pkg/extra.py".into(), b"y = 2\n".to_vec()));
    let other = spec.build();
    assert_eq!(other.filename, whl.filename);
    let resp = node.upload("pypi", &Auth::Basic(token), &Upload::of(&other));
    assert_eq!(resp.status().as_u16(), 409, "same filename, other bytes");
    node.assert_nothing_stored(&before, "pypi", "demo-pkg", "");
    let page = json_page(&node, "pypi", "demo-pkg");
    let f = page["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["filename"] == whl.filename.as_str())
        .unwrap();
    assert_eq!(
        f["hashes"]["sha256"],
        whl.sha256().as_str(),
        "the first upload stays"
    );
}

#[test]
fn bearer_tokens_and_the_admin_http_api() {
    let node = Node::start_default();
    let admin = node.admin_token();
    let create = |bearer: Option<&str>, perm: &str| {
        let mut req = node
            .http()
            .post(format!("{}/+admin/tokens", node.url()))
            .json(&serde_json::json!({"repo": "pypi", "perm": perm, "label": "ci"}));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        req.send().unwrap()
    };
    let resp = create(Some(&admin), "upload");
    assert_eq!(resp.status().as_u16(), 200);
    let token = resp.json::<Value>().unwrap()["token"]
        .as_str()
        .expect("{\"token\": …}")
        .to_string();
    let serial = node.serial();
    let a = wheel("bearer-pkg", "1.0");
    let resp = node.upload("pypi", &Auth::Bearer(token.clone()), &Upload::of(&a));
    assert_eq!(resp.status().as_u16(), 200, "{}", resp.text().unwrap());
    assert_eq!(node.serial(), serial + 1);

    // The CLI takes the admin token from HOARD_TOKEN too.
    let url = node.url();
    let out = node.cli_env_ok(
        &[
            "token", "create", "--repo", "pypi", "--perm", "upload", "--url", &url,
        ],
        &[("HOARD_TOKEN", &admin)],
    );
    let cli_token = out.trim();
    assert_eq!(out.lines().count(), 1, "one line: {out:?}");
    let resp = node.upload(
        "pypi",
        &Auth::Basic(cli_token.to_string()),
        &Upload::of(&wheel("bearer-pkg", "1.1")),
    );
    assert_eq!(resp.status().as_u16(), 200);
    // A wrong admin token makes the CLI fail.
    let out = node.cli_env(
        &[
            "token", "create", "--repo", "pypi", "--perm", "upload", "--url", &url,
        ],
        &[("HOARD_TOKEN", "wrong")],
    );
    assert!(
        !out.status.success(),
        "token create with a wrong admin token"
    );

    // Only an admin token may create tokens.
    assert_eq!(create(None, "upload").status().as_u16(), 401);
    assert_eq!(create(Some(&token), "upload").status().as_u16(), 403);
    assert_eq!(create(Some("nonsense"), "admin").status().as_u16(), 403);

    // The admin token file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(node.data_dir().join("admin-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "admin-token mode {mode:o}");
}

#[test]
fn status_and_serial_header() {
    let node = Node::start(NodeOpts {
        node_id: "status-node".into(),
        ..NodeOpts::default()
    });
    let s = node.status();
    assert_eq!(s["node_id"], "status-node", "{s}");
    assert_eq!(s["role"], "leader", "{s}");
    for k in ["repos", "projects", "files"] {
        assert!(s["counts"][k].is_u64(), "counts.{k}: {s}");
    }
    // The default repositories: pypi-local, pypi-remote and the virtual
    // pypi, and likewise for npm.
    assert_eq!(s["counts"]["repos"], 6);
    assert_eq!(s["counts"]["files"], 0);
    let token = node.create_token("pypi", "upload");
    let serial = node.serial();
    node.upload_ok("pypi", &token, &Upload::of(&wheel("counted", "1")));
    node.upload_ok("pypi", &token, &Upload::of(&sdist("counted", "1")));
    let s = node.status();
    assert_eq!(s["applied_serial"], serial + 2);
    assert_eq!(s["counts"]["projects"], 1);
    assert_eq!(s["counts"]["files"], 2);

    // Every response carries X-Hoard-Serial, errors included.
    for path in [
        "/pypi/simple/",
        "/pypi/simple/counted/",
        "/pypi/simple/missing/",
        "/pypi/files/counted/nope.whl",
        "/nope",
    ] {
        let resp = node.get(path);
        assert_eq!(
            serial_header(&resp).unwrap_or_else(|e| panic!("{path}: {e}")),
            serial + 2,
            "{path}"
        );
    }
    let resp = node.upload("pypi", &Auth::None, &Upload::of(&wheel("counted", "2")));
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(serial_header(&resp).unwrap(), serial + 2, "on a 401");

    // The CLI prints the same status.
    let out = node.cli_ok(&["status", "--node", "--url", &node.url()]);
    let v: Value = serde_json::from_str(out.trim()).expect("hoard status prints JSON");
    assert_eq!(v["node_id"], "status-node");
    assert_eq!(v["applied_serial"], serial + 2);
}

#[test]
fn configured_repos_env_overrides_and_private_reads() {
    let private = RepoSpec {
        anonymous_read: false,
        ..RepoSpec::pypi("private")
    };
    let node = Node::start(
        NodeOpts::default()
            .repo(RepoSpec::pypi("internal"))
            .repo(private)
            .env("HOARD_NODE_ID", "from-env"),
    );
    let s = node.status();
    assert_eq!(s["node_id"], "from-env", "HOARD_NODE_ID overrides node_id");
    assert_eq!(s["counts"]["repos"], 2);
    assert_eq!(
        node.get("/pypi/simple/").status().as_u16(),
        404,
        "no default repo"
    );

    let up = node.create_token("internal", "upload");
    node.upload_ok("internal", &up, &Upload::of(&wheel("inner", "1.0")));
    assert_eq!(node.get("/internal/simple/inner/").status().as_u16(), 200);

    let up = node.create_token("private", "upload");
    let a = wheel("secret", "1.0");
    node.upload_ok("private", &up, &Upload::of(&a));
    for path in ["/private/simple/secret/", "/private/simple/"] {
        assert_eq!(
            node.get(path).status().as_u16(),
            401,
            "anonymous read of {path}"
        );
    }
    let read = node.create_token("private", "read");
    let resp = node
        .http()
        .get(format!("{}/private/simple/secret/", node.url()))
        .basic_auth("__token__", Some(&read))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.text().unwrap().contains(&a.filename));
    let resp = node
        .http()
        .get(format!(
            "{}/private/files/secret/{}",
            node.url(),
            a.filename
        ))
        .send()
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        401,
        "anonymous download from a private repo"
    );
    let resp = node
        .http()
        .get(format!(
            "{}/private/files/secret/{}",
            node.url(),
            a.filename
        ))
        .bearer_auth(&read)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // A read token of another repo does not open this one.
    let other_read = node.create_token("internal", "read");
    let resp = node
        .http()
        .get(format!("{}/private/simple/secret/", node.url()))
        .bearer_auth(&other_read)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
}

/// The GET of `path` with `headers`: status, headers and body exactly as
/// sent, over a plain socket: reqwest, built with the workspace's features
/// (hoard-mirror turns on its gzip), decoded gzip bodies even with
/// `no_gzip()`.
fn get_with(
    node: &Node,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    use std::io::{Read, Write};
    let url = Url::parse(&node.url()).unwrap();
    let host = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let mut stream = std::net::TcpStream::connect(&host).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8(response[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut map = reqwest::header::HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        map.append(
            reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            value.trim().parse().unwrap(),
        );
    }
    (status, map, response[split + 4..].to_vec())
}

fn page_renders(node: &Node) -> f64 {
    crate::metrics::value(
        &crate::metrics::scrape(node),
        "hoard_page_cache_renders_total",
    )
}

#[test]
fn a_write_leaves_other_projects_pages_cached_and_gzip_goes_to_clients_that_take_it() {
    let node = Node::start_default();
    let token = node.create_token("pypi", "upload");
    // Enough files for pages worth compressing.
    for minor in 0..8 {
        let version = format!("1.{minor}.0");
        node.upload_ok("pypi", &token, &Upload::of(&wheel("alpha", &version)));
    }
    let alpha_serial = node.serial();
    node.upload_ok("pypi", &token, &Upload::of(&wheel("beta", "1.0.0")));

    // The hosted repository and the virtual one in front of it.
    let pages = |repo: &str| {
        [
            (format!("/{repo}/simple/alpha/"), "text/html"),
            (format!("/{repo}/simple/alpha/"), JSON_TYPE),
            (format!("/{repo}/simple/"), "text/html"),
        ]
    };
    let mut etags = Vec::new();
    for repo in ["pypi", "pypi-local"] {
        for (path, accept) in pages(repo) {
            let (status, headers, body) = get_with(&node, &path, &[("accept", accept)]);
            assert_eq!(status, 200, "{path}");
            etags.push(headers["etag"].to_str().unwrap().to_owned());
            if accept == JSON_TYPE {
                // PyPI's meaning: the serial of the project's last change.
                let page: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(page["meta"]["_last-serial"], alpha_serial, "{page}");
            }
        }
    }

    // A new version of another project changes none of those pages, and
    // renders none of them again.
    node.upload_ok("pypi", &token, &Upload::of(&wheel("beta", "1.1.0")));
    let renders = page_renders(&node);
    let mut etag = etags.iter();
    for repo in ["pypi", "pypi-local"] {
        for (path, accept) in pages(repo) {
            let tag = etag.next().unwrap();
            let (status, _, _) =
                get_with(&node, &path, &[("accept", accept), ("if-none-match", tag)]);
            assert_eq!(status, 304, "{path} ({accept}) after a write to beta");
        }
    }
    assert_eq!(
        page_renders(&node),
        renders,
        "pages rendered again after a write elsewhere"
    );
    // beta's own page shows the new version.
    let (_, beta) = html_page(&node, "pypi", "beta");
    assert!(beta.contains("beta-1.1.0-"), "{beta}");

    // A new project changes the index pages, and only them.
    node.upload_ok("pypi", &token, &Upload::of(&wheel("gamma", "1.0.0")));
    for (i, repo) in ["pypi", "pypi-local"].into_iter().enumerate() {
        for (j, (path, accept)) in pages(repo).into_iter().enumerate() {
            let tag = &etags[i * 3 + j];
            let (status, _, body) =
                get_with(&node, &path, &[("accept", accept), ("if-none-match", tag)]);
            if path.ends_with("/simple/") {
                assert_eq!(status, 200, "{path} after a new project");
                assert!(String::from_utf8_lossy(&body).contains("gamma"), "{path}");
            } else {
                assert_eq!(status, 304, "{path} ({accept}) after a new project");
            }
        }
    }

    // gzip, pre-compressed, to a client that takes it; the same page as
    // the identity one, with its own ETag, and Vary says why. The index of
    // three projects is too small to be worth it, and goes as it is.
    let (_, headers, index) = get_with(&node, "/pypi/simple/", &[("accept-encoding", "gzip")]);
    assert!(index.len() < 512 && headers.get("content-encoding").is_none());
    for (path, accept) in pages("pypi").into_iter().take(2) {
        let (_, plain_headers, plain) = get_with(&node, &path, &[("accept", accept)]);
        let (status, headers, gz) = get_with(
            &node,
            &path,
            &[("accept", accept), ("accept-encoding", "gzip, deflate")],
        );
        assert_eq!(status, 200);
        assert_eq!(headers["content-encoding"], "gzip", "{path} ({accept})");
        let vary = headers["vary"].to_str().unwrap().to_ascii_lowercase();
        assert!(
            vary.contains("accept-encoding") && vary.contains("accept"),
            "{vary}"
        );
        assert!(plain_headers.get("content-encoding").is_none());
        assert_ne!(headers["etag"], plain_headers["etag"]);
        assert!(
            gz.len() < plain.len(),
            "{} gzip bytes for {}",
            gz.len(),
            plain.len()
        );
        let mut unzipped = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut unzipped)
            .unwrap();
        assert_eq!(unzipped, plain, "{path} ({accept})");
        let etag = headers["etag"].to_str().unwrap();
        let (status, _, _) = get_with(
            &node,
            &path,
            &[
                ("accept", accept),
                ("accept-encoding", "gzip"),
                ("if-none-match", etag),
            ],
        );
        assert_eq!(status, 304);
        // Refused with q=0, it is not sent.
        let (_, headers, _) = get_with(
            &node,
            &path,
            &[("accept", accept), ("accept-encoding", "gzip;q=0")],
        );
        assert!(headers.get("content-encoding").is_none());
    }
}

/// The project names an index page lists, HTML or JSON.
fn index_names(body: &[u8], json: bool) -> Vec<String> {
    let text = std::str::from_utf8(body).unwrap();
    if json {
        let v: Value = serde_json::from_str(text).unwrap();
        v["projects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    } else {
        anchors(text).into_iter().map(|a| a.text).collect()
    }
}

/// Reads a chunked body (RFC 9112 7.1) whole.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = std::str::from_utf8(&body[..line_end]).unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        body = &body[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// An index longer than one request renders at once is streamed (chunked,
/// from the index, a chunk at a time) and lists what a short one would:
/// every project once, in name order, the virtual repository's members
/// merged, the serial of the last one created. The next request gets the
/// page from the cache, whole and with an ETag.
#[test]
fn a_long_index_page_is_streamed_in_order_and_then_served_from_the_cache() {
    let _heavy = hoard_testkit::heavy_test();
    let node = Node::start_default();
    let token = node.create_token("pypi", "upload");
    // Uploads, 8 at a time, so that the test runs with blobs in a bucket
    // too (an offline import writes only to a data dir's blobs).
    let mut expected: Vec<String> = (0..2_600).map(|i| format!("many-{i:05}")).collect();
    std::thread::scope(|scope| {
        for part in expected.chunks(325) {
            let (node, token) = (&node, &token);
            scope.spawn(move || {
                for name in part {
                    node.upload_ok("pypi", token, &Upload::of(&wheel(name, "1.0")));
                }
            });
        }
    });
    // One more, the last project created, in the middle of the order.
    node.upload_ok("pypi", &token, &Upload::of(&wheel("many-01000x", "1.0")));
    expected.push("many-01000x".to_owned());
    expected.sort();
    let last_created = node.serial();

    for repo in ["pypi-local", "pypi"] {
        for (accept, json) in [("text/html", false), (JSON_TYPE, true)] {
            let path = format!("/{repo}/simple/");
            let (status, headers, body) = get_with(&node, &path, &[("Accept", accept)]);
            assert_eq!(status, 200, "{path} {accept}");
            assert_eq!(
                headers
                    .get("transfer-encoding")
                    .map(|v| v.to_str().unwrap()),
                Some("chunked"),
                "{path} {accept}: {headers:?}"
            );
            assert!(headers.get("etag").is_none(), "{headers:?}");
            let streamed = dechunk(&body);
            assert_eq!(index_names(&streamed, json), expected, "{path} {accept}");
            let text = String::from_utf8_lossy(&streamed);
            if json {
                let v: Value = serde_json::from_slice(&streamed).unwrap();
                assert_eq!(v["meta"]["_last-serial"], last_created, "{path}");
            } else {
                assert!(
                    text.ends_with(&format!("<!--SERIAL {last_created}-->\n")),
                    "{path}"
                );
            }

            let (status, headers, cached) = get_with(&node, &path, &[("Accept", accept)]);
            assert_eq!(status, 200);
            assert!(headers.get("etag").is_some(), "{path}: {headers:?}");
            assert_eq!(
                headers
                    .get("content-length")
                    .map(|v| v.to_str().unwrap().to_owned()),
                Some(streamed.len().to_string())
            );
            assert_eq!(
                cached, streamed,
                "{path} {accept}: the cached page is the streamed one"
            );
        }
    }
}
