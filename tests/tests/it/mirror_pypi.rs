//! PyPI mirror repositories against a fixture upstream that behaves like
//! the public index (absolute file URLs on another port, JSON and HTML,
//! ETags, gzip, yanks, PEP 658 metadata): real pip and uv installs, an
//! upstream outage, single-flight, revalidation, hostile upstreams, and a
//! replica filling its cache by way of the leader.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use hoard_testkit::artifacts::WheelSpec;
use hoard_testkit::cluster::wait_applied;
use hoard_testkit::node::run_ok;
use hoard_testkit::tools::{isolate_python_env, py_tools};
use hoard_testkit::upstream::{Fault, FileOpts, FixtureUpstream, ProjectFault};
use hoard_testkit::{sha256_hex, Artifact, Node, NodeOpts, RepoSpec};
use serde_json::Value;

use crate::pypi_clients::{fresh_venv, imported_version, PIP_ACCEPT};

/// An upstream with `app` 1.0 (which needs `dep-a` and `dep-b`), its two
/// dependencies, and an older yanked `dep-b`.
fn upstream_with_app() -> (FixtureUpstream, BTreeMap<String, Artifact>) {
    let upstream = FixtureUpstream::start();
    let mut files = BTreeMap::new();
    let specs = [
        ("app", "1.0", vec!["dep-a>=1.0", "dep-b"]),
        ("dep-a", "1.0", vec![]),
        ("dep-b", "2.0", vec![]),
        ("dep-b", "1.0", vec![]),
    ];
    for (name, version, requires) in specs {
        let mut spec = WheelSpec::new(name, version);
        for r in requires {
            spec = spec.requires(r);
        }
        let a = spec.build();
        let opts = FileOpts {
            yanked: (name == "dep-b" && version == "1.0").then(|| "broken".to_owned()),
            ..FileOpts::default()
        };
        upstream.add_wheel(name, &a, opts);
        files.insert(a.filename.clone(), a);
    }
    (upstream, files)
}

fn mirror_node(upstream: &FixtureUpstream, settings: &[&str]) -> Node {
    let mut repo = RepoSpec::pypi_mirror("pypi-remote", &[upstream.index_url()]);
    for line in settings {
        repo = repo.with(line);
    }
    Node::start(NodeOpts::default().repo(repo))
}

fn index_of(node: &Node) -> String {
    format!("{}/pypi-remote/simple/", node.url())
}

fn pip_install(node: &Node, venv: &std::path::Path, req: &str) {
    pip_install_from(&index_of(node), venv, &[req]);
}

/// A fresh venv (in a temp dir that lives as long as the first value)
/// with `reqs` installed by pip from `index`.
fn installed_from(index: &str, reqs: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    fresh_venv(&venv, true);
    pip_install_from(index, &venv, reqs);
    (dir, venv)
}

/// pip, without a cache, from `index` only.
fn pip_install_from(index: &str, venv: &std::path::Path, reqs: &[&str]) {
    let mut cmd = Command::new(venv.join("bin").join("python"));
    isolate_python_env(&mut cmd)
        .args(["-m", "pip", "install", "--no-cache-dir", "--index-url"])
        .arg(index)
        .args(reqs);
    run_ok(&mut cmd);
}

fn json_page(node: &Node, project: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = node
        .http()
        .get(format!("{}{project}/", index_of(node)))
        .header("accept", PIP_ACCEPT)
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().unwrap();
    let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, headers, json)
}

fn filenames(page: &Value) -> Vec<String> {
    let mut names: Vec<String> = page["files"]
        .as_array()
        .unwrap_or_else(|| panic!("not a project page: {page}"))
        .iter()
        .map(|f| f["filename"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

fn file_url(node: &Node, page: &Value, filename: &str) -> String {
    let file = page["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["filename"] == filename)
        .unwrap_or_else(|| panic!("{filename} is not on the page: {page}"));
    let href = file["url"].as_str().unwrap();
    let base = reqwest::Url::parse(&format!("{}app/", index_of(node))).unwrap();
    base.join(href).unwrap().to_string()
}

#[test]
fn pip_and_uv_install_through_a_mirror_and_again_with_the_upstream_down() {
    let (mut upstream, files) = upstream_with_app();
    let node = mirror_node(&upstream, &[]);
    let dir = tempfile::tempdir().unwrap();

    let pip_venv = dir.path().join("pip");
    fresh_venv(&pip_venv, true);
    pip_install(&node, &pip_venv, "app");
    assert_eq!(imported_version(&pip_venv, "app"), "1.0");
    assert_eq!(imported_version(&pip_venv, "dep_b"), "2.0");

    // uv resolves from the same pages, and the files are already cached.
    let uv_venv = dir.path().join("uv");
    fresh_venv(&uv_venv, false);
    let mut cmd = Command::new(&py_tools().uv);
    isolate_python_env(&mut cmd)
        .args(["pip", "install", "--no-cache", "--index-url"])
        .arg(index_of(&node))
        .arg("--python")
        .arg(uv_venv.join("bin").join("python"))
        .arg("app");
    run_ok(&mut cmd);
    assert_eq!(imported_version(&uv_venv, "dep_a"), "1.0");
    for filename in ["app-1.0-py3-none-any.whl", "dep_a-1.0-py3-none-any.whl"] {
        assert_eq!(upstream.file_hits(filename), 1, "{filename} fetched once");
    }
    // The yanked file was listed, never installed, never fetched.
    assert_eq!(upstream.file_hits("dep_b-1.0-py3-none-any.whl"), 0);

    // The mirror serves the bytes the upstream listed.
    let (_, _, page) = json_page(&node, "app");
    let url = file_url(&node, &page, "app-1.0-py3-none-any.whl");
    let bytes = node.http().get(url).send().unwrap().bytes().unwrap();
    assert_eq!(
        sha256_hex(&bytes),
        files["app-1.0-py3-none-any.whl"].sha256()
    );

    // The upstream goes away: a fresh venv without any cache installs the
    // same packages from the mirror.
    upstream.stop();
    let offline_venv = dir.path().join("pip-offline");
    fresh_venv(&offline_venv, true);
    pip_install(&node, &offline_venv, "app");
    assert_eq!(imported_version(&offline_venv, "dep_b"), "2.0");
}

#[test]
fn fifty_concurrent_first_downloads_cause_one_upstream_fetch() {
    let (upstream, files) = upstream_with_app();
    let node = Arc::new(mirror_node(&upstream, &[]));
    let (_, _, page) = json_page(&node, "app");
    let filename = "app-1.0-py3-none-any.whl";
    let url = file_url(&node, &page, filename);
    // Every upstream answer is slow, so the downloads surely overlap.
    upstream.set_latency(Duration::from_millis(300));
    let barrier = Arc::new(Barrier::new(50));
    let threads: Vec<_> = (0..50)
        .map(|_| {
            let (node, url, barrier) = (node.clone(), url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let resp = node.http().get(&url).send().unwrap();
                (resp.status().as_u16(), resp.bytes().unwrap())
            })
        })
        .collect();
    let want = files[filename].sha256();
    for t in threads {
        let (status, bytes) = t.join().unwrap();
        assert_eq!(status, 200);
        assert_eq!(sha256_hex(&bytes), want);
    }
    assert_eq!(upstream.file_hits(filename), 1);
}

#[test]
fn pages_revalidate_after_the_ttl_and_record_only_what_changed() {
    let (upstream, _) = upstream_with_app();
    let node = mirror_node(&upstream, &["ttl_secs = 0"]);
    let (status, _, page) = json_page(&node, "dep-b");
    assert_eq!(status, 200);
    assert_eq!(
        filenames(&page),
        ["dep_b-1.0-py3-none-any.whl", "dep_b-2.0-py3-none-any.whl"]
    );
    let yanked = |page: &Value, f: &str| {
        page["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["filename"] == f)
            .unwrap()["yanked"]
            .clone()
    };
    assert_eq!(yanked(&page, "dep_b-1.0-py3-none-any.whl"), "broken");
    let serial = node.serial();

    // Nothing changed upstream: asked again (conditionally), nothing recorded.
    let hits = upstream.page_hits("dep-b");
    let (status, _, again) = json_page(&node, "dep-b");
    assert_eq!(status, 200);
    assert_eq!(again["files"], page["files"]);
    assert_eq!(upstream.page_hits("dep-b"), hits + 1);
    assert_eq!(
        node.serial(),
        serial,
        "a revalidation without news records nothing"
    );

    // A new release and an un-yank upstream: both show, as two events.
    let new = WheelSpec::new("dep-b", "3.0").build();
    upstream.add_wheel("dep-b", &new, FileOpts::default());
    upstream.set_yanked("dep_b-1.0-py3-none-any.whl", None);
    let (_, _, page) = json_page(&node, "dep-b");
    assert_eq!(filenames(&page).len(), 3);
    assert_eq!(yanked(&page, "dep_b-1.0-py3-none-any.whl"), false);
    assert_eq!(node.serial(), serial + 2);
}

/// The answer carries `X-Hoard-Stale`, and it names `fault` (of an
/// upstream with `timeout_secs = 1`).
pub(crate) fn assert_stale_because_of(headers: &reqwest::header::HeaderMap, fault: Fault) {
    let stale = headers
        .get("x-hoard-stale")
        .unwrap_or_else(|| panic!("{fault:?}: no x-hoard-stale header"))
        .to_str()
        .unwrap()
        .to_owned();
    let expected = match fault {
        Fault::ServerError => "500",
        Fault::Hang => "no answer within 1 s",
        _ => "redirects",
    };
    assert!(stale.contains(expected), "{fault:?}: {stale}");
}

#[test]
fn an_upstream_outage_serves_the_cached_page_marked_stale() {
    let (upstream, _) = upstream_with_app();
    let node = mirror_node(&upstream, &["ttl_secs = 0", "timeout_secs = 1"]);
    let (status, _, cached) = json_page(&node, "app");
    assert_eq!(status, 200);

    for fault in [Fault::ServerError, Fault::Hang, Fault::RedirectLoop] {
        upstream.set_fault(fault);
        let (status, headers, page) = json_page(&node, "app");
        assert_eq!(status, 200, "{fault:?}: {page}");
        assert_eq!(page["files"], cached["files"], "{fault:?}");
        assert_stale_because_of(&headers, fault);
        // A project never fetched cannot be served, and is not
        // remembered as missing either.
        let (status, _, body) = json_page(&node, "dep-a");
        assert_eq!(status, 502, "{fault:?}: {body}");
    }
    upstream.set_fault(Fault::None);
    let (status, headers, _) = json_page(&node, "dep-a");
    assert_eq!(
        status, 200,
        "after the outage, the failures were not cached"
    );
    assert!(headers.get("x-hoard-stale").is_none());
}

#[test]
fn upstream_bytes_that_do_not_match_the_listed_digest_are_502_and_store_nothing() {
    let (upstream, _) = upstream_with_app();
    let node = mirror_node(&upstream, &[]);
    let (_, _, page) = json_page(&node, "app");
    let filename = "app-1.0-py3-none-any.whl";
    let url = file_url(&node, &page, filename);
    upstream.set_files_fault(Fault::WrongBytes);
    let before = node.store_snapshot();
    let resp = node.http().get(&url).send().unwrap();
    assert_eq!(resp.status().as_u16(), 502);
    assert!(resp.text().unwrap().contains("do not match"));
    node.assert_nothing_stored(&before, "pypi-remote", "app", "not-a-file");
    let upstream_url = upstream.file_url(filename);
    assert!(
        node.log()
            .lines()
            .any(|l| l.contains("do not match the listed digest") && l.contains(&upstream_url)),
        "the refusal is logged with the upstream URL {upstream_url}"
    );
    // Once the upstream serves the right bytes, the file is fetched.
    upstream.set_files_fault(Fault::None);
    assert_eq!(node.http().get(&url).send().unwrap().status().as_u16(), 200);
    let metrics = node.get("/+metrics").text().unwrap();
    for line in [
        "hoard_mirror_digest_mismatches_total 1",
        "hoard_mirror_files_cached_total 1",
        "hoard_mirror_pages_fetched_total 1",
        // Both downloads were answered; the first one's bytes were wrong.
        r#"hoard_mirror_upstream_request_duration_seconds_count{kind="file",result="ok"} 2"#,
        r#"hoard_mirror_upstream_request_duration_seconds_count{kind="page",result="ok"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
}

#[test]
fn hostile_page_entries_are_refused_and_logged_and_the_rest_is_served() {
    let (upstream, _) = upstream_with_app();
    let node = mirror_node(&upstream, &["ttl_secs = 0"]);
    upstream.set_project_fault("app", ProjectFault::TraversalFilename);
    let (status, _, page) = json_page(&node, "app");
    assert_eq!(status, 200, "{page}");
    assert_eq!(filenames(&page), ["app-1.0-py3-none-any.whl"]);
    assert!(node
        .log()
        .lines()
        .any(|l| l.contains("upstream file entry refused") && l.contains("evil")));

    upstream.set_project_fault("dep-a", ProjectFault::OtherSchemeUrl);
    let (status, _, page) = json_page(&node, "dep-a");
    assert_eq!(status, 404, "the only file is refused: {page}");
    assert!(node.log().contains("not http or https"));

    upstream.set_project_fault("dep-b", ProjectFault::MalformedPage);
    let (status, _, body) = json_page(&node, "dep-b");
    assert_eq!(status, 502, "{body}");
    assert!(node.log().contains("upstream page refused"));
}

#[test]
fn a_missing_project_is_remembered_for_the_negative_ttl_only() {
    let (upstream, _) = upstream_with_app();
    let node = mirror_node(&upstream, &["negative_ttl_secs = 3600"]);
    let (status, _, _) = json_page(&node, "later");
    assert_eq!(status, 404);
    let later = WheelSpec::new("later", "1.0").build();
    upstream.add_wheel("later", &later, FileOpts::default());
    let (status, _, _) = json_page(&node, "later");
    assert_eq!(status, 404, "remembered as missing");
    assert_eq!(upstream.page_hits("later"), 1);

    let node = mirror_node(&upstream, &["negative_ttl_secs = 0"]);
    let (status, _, page) = json_page(&node, "later");
    assert_eq!(status, 200, "{page}");
}

#[test]
fn a_replica_answers_a_cache_miss_by_way_of_the_leader() {
    let (upstream, files) = upstream_with_app();
    let primary = mirror_node(&upstream, &[]);
    let replica = Node::start(NodeOpts::replica("r1", &[primary.grpc_addr()]));
    wait_applied(&replica, primary.serial(), Duration::from_secs(30));

    let (status, _, page) = json_page(&replica, "app");
    assert_eq!(status, 200, "{page}");
    assert_eq!(upstream.page_hits("app"), 1);
    let filename = "app-1.0-py3-none-any.whl";
    let url = file_url(&replica, &page, filename);
    assert!(url.starts_with(&replica.url()), "{url}");
    let bytes = replica.http().get(&url).send().unwrap().bytes().unwrap();
    assert_eq!(sha256_hex(&bytes), files[filename].sha256());
    assert_eq!(upstream.file_hits(filename), 1);
    // The replica holds the blob itself: the leader has it too.
    let on_primary = primary
        .http()
        .get(url.replace(&replica.url(), &primary.url()))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(on_primary, bytes);
    assert_eq!(upstream.file_hits(filename), 1);
}

fn virtual_repo(name: &str, members: &[&str], extra: &[&str]) -> RepoSpec {
    let mut spec = RepoSpec::virtual_of("pypi", name, members);
    for line in extra {
        spec = spec.with(line);
    }
    spec
}

#[test]
fn a_virtual_repository_serves_hosted_and_mirrored_projects_and_hosted_names_hide_mirrored_ones() {
    let (upstream, _) = upstream_with_app();
    // The public index has a project of the same name as an internal one,
    // at a tempting version (dependency confusion).
    let attacker = WheelSpec::new("internal-lib", "99.0").build();
    upstream.add_wheel("internal-lib", &attacker, FileOpts::default());
    let node = Node::start(
        NodeOpts::default()
            .repo(RepoSpec::pypi("pypi-local"))
            .repo(RepoSpec::pypi_mirror(
                "pypi-remote",
                &[upstream.index_url()],
            ))
            .repo(virtual_repo(
                "pypi",
                &["pypi-local", "pypi-remote"],
                &["upload_to = \"pypi-local\""],
            ))
            .repo(virtual_repo(
                "merged",
                &["pypi-local", "pypi-remote"],
                &["merge_mirrored = true"],
            )),
    );
    // An upload to the virtual repository lands in its hosted member.
    let token = node.create_token("pypi", "upload");
    let internal = WheelSpec::new("internal-lib", "1.0").build();
    hoard_testkit::cluster::upload_ok(
        node.http(),
        &format!("{}/pypi/", node.url()),
        &token,
        &internal,
    );
    let page = |repo: &str, project: &str| {
        let resp = node
            .http()
            .get(format!("{}/{repo}/simple/{project}/", node.url()))
            .header("accept", PIP_ACCEPT)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{repo}/{project}");
        filenames(&resp.json::<Value>().unwrap())
    };
    assert_eq!(
        page("pypi-local", "internal-lib"),
        ["internal_lib-1.0-py3-none-any.whl"]
    );
    assert_eq!(
        page("pypi", "internal-lib"),
        ["internal_lib-1.0-py3-none-any.whl"]
    );
    assert_eq!(
        upstream.page_hits("internal-lib"),
        0,
        "a hosted name is not even looked up upstream"
    );
    assert_eq!(
        page("merged", "internal-lib"),
        [
            "internal_lib-1.0-py3-none-any.whl",
            "internal_lib-99.0-py3-none-any.whl"
        ]
    );
    assert_eq!(page("pypi", "app"), ["app-1.0-py3-none-any.whl"]);

    // pip installs hosted and mirrored packages through the one URL, and
    // gets the internal build.
    let (_dir, venv) = installed_from(
        &format!("{}/pypi/simple/", node.url()),
        &["app", "internal-lib"],
    );
    assert_eq!(imported_version(&venv, "internal_lib"), "1.0");
    assert_eq!(imported_version(&venv, "dep_a"), "1.0");

    // The index lists the members' projects together.
    let index = node
        .http()
        .get(format!("{}/pypi/simple/", node.url()))
        .header("accept", PIP_ACCEPT)
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap();
    let names: Vec<&str> = index["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in ["app", "dep-a", "dep-b", "internal-lib"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
}

#[test]
fn the_default_virtual_pypi_installs_from_the_upstream_given_by_hoard_pypi_upstream() {
    let (upstream, _) = upstream_with_app();
    let node = Node::start(NodeOpts::default().env("HOARD_PYPI_UPSTREAM", &upstream.index_url()));
    // Uploads to the default `pypi` land in `pypi-local`.
    let token = node.create_token("pypi", "upload");
    let own = WheelSpec::new("own-tool", "0.1").build();
    hoard_testkit::cluster::upload_ok(node.http(), &format!("{}/pypi/", node.url()), &token, &own);
    let (_dir, venv) = installed_from(
        &format!("{}/pypi/simple/", node.url()),
        &["app", "own-tool"],
    );
    assert_eq!(imported_version(&venv, "dep_b"), "2.0");
    assert_eq!(imported_version(&venv, "own_tool"), "0.1");
    let local = node.get("/pypi-local/simple/own-tool/");
    assert_eq!(local.status().as_u16(), 200);
}

#[test]
fn a_data_dir_with_the_old_hosted_pypi_keeps_it_hosted_under_the_new_default() {
    // An older node's default: one hosted `pypi`, with an upload in it.
    let mut node = Node::start(NodeOpts::default().repo(RepoSpec::pypi("pypi")));
    let token = node.create_token("pypi", "upload");
    let old = WheelSpec::new("kept", "1.0").build();
    hoard_testkit::cluster::upload_ok(node.http(), &format!("{}/pypi/", node.url()), &token, &old);
    node.stop();
    node.opts.repos.clear();
    node.launch();
    let resp = node
        .http()
        .get(format!("{}/pypi/simple/kept/", node.url()))
        .header("accept", PIP_ACCEPT)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        filenames(&resp.json::<Value>().unwrap()),
        ["kept-1.0-py3-none-any.whl"]
    );
    // It still takes uploads itself, and the new repositories exist beside it.
    let newer = WheelSpec::new("kept", "2.0").build();
    hoard_testkit::cluster::upload_ok(
        node.http(),
        &format!("{}/pypi/", node.url()),
        &token,
        &newer,
    );
    assert_eq!(node.get("/pypi-local/simple/").status().as_u16(), 200);
    assert!(node.log().contains("stays hosted"));
}

#[test]
fn prefetch_of_a_requirements_file_lets_pip_install_it_with_the_upstream_down() {
    let (mut upstream, files) = upstream_with_app();
    let node = mirror_node(&upstream, &[]);
    let dir = tempfile::tempdir().unwrap();
    let requirements = dir.path().join("requirements.txt");
    let pin = |filename: &str| files[filename].sha256();
    std::fs::write(
        &requirements,
        format!(
            "# as pip-compile --generate-hashes writes it\n\
             app==1.0 \\\n    --hash=sha256:{}\n\
             dep-a==1.0 --hash=sha256:{}\n\
             dep-b==2.0 --hash=sha256:{}\n",
            pin("app-1.0-py3-none-any.whl"),
            pin("dep_a-1.0-py3-none-any.whl"),
            pin("dep_b-2.0-py3-none-any.whl"),
        ),
    )
    .unwrap();
    let req = requirements.to_str().unwrap();
    let prefetch = |req: &str| {
        node.cli(&[
            "prefetch",
            "--url",
            &node.url(),
            "--repo",
            "pypi-remote",
            "-r",
            req,
        ])
    };
    let out = prefetch(req);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("3 file(s) fetched, 0 already cached, 0 failed"),
        "{stdout}"
    );
    assert!(stderr.contains("[2/3] dep-a==1.0"), "progress: {stderr}");
    for filename in files.keys().filter(|f| !f.starts_with("dep_b-1.0")) {
        assert_eq!(upstream.file_hits(filename), 1, "{filename}");
        assert_eq!(upstream.metadata_hits(filename), 1, "{filename}.metadata");
    }
    let again = String::from_utf8_lossy(&prefetch(req).stdout).into_owned();
    assert!(
        again.contains("0 file(s) fetched, 3 already cached"),
        "{again}"
    );

    // The upstream is gone: pip, checking every hash, installs from hoard.
    upstream.stop();
    let venv = dir.path().join("venv");
    fresh_venv(&venv, true);
    let mut cmd = Command::new(venv.join("bin").join("python"));
    isolate_python_env(&mut cmd)
        .args(["-m", "pip", "install", "--no-cache-dir", "--require-hashes"])
        .arg("--index-url")
        .arg(index_of(&node))
        .arg("-r")
        .arg(&requirements);
    run_ok(&mut cmd);
    assert_eq!(imported_version(&venv, "app"), "1.0");

    // What cannot be prefetched is named, and the run fails.
    let bad = dir.path().join("bad.txt");
    std::fs::write(
        &bad,
        format!("dep-a>=1.0\ndep-b==2.0 --hash=sha256:{}\n", "0".repeat(64)),
    )
    .unwrap();
    let out = prefetch(bad.to_str().unwrap());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("not pinned"), "{stdout}");
    assert!(stdout.contains("has a pinned --hash"), "{stdout}");
}
