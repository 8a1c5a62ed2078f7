//! `hoard export`: a PyPI repository as a static index and a manifest,
//! served by `python3 -m http.server` to pip; and `hoard import` of a
//! directory (an export's included) and of npm tarballs.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hoard_testkit::cluster::{client, served, status_of, upload_ok, wait_for};
use hoard_testkit::npm::{node_eval, npm_opts, npm_tarball, Npm, NPM_REPO};
use hoard_testkit::tools::py_tools;
use hoard_testkit::{sdist, sha256_hex, wheel, Artifact, Node, Upload};
use serde_json::Value;

use crate::accounts::pip_download;

/// `python3 -m http.server` over a directory, stopped on drop.
pub(crate) struct StaticServer(Child);

impl StaticServer {
    pub(crate) fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn serve_dir(dir: &std::path::Path) -> (StaticServer, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let child = Command::new(&py_tools().python3)
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--directory")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start python3 -m http.server");
    let server = StaticServer(child);
    let url = format!("http://127.0.0.1:{port}");
    wait_for(Duration::from_secs(20), "http.server answers", || {
        client().get(format!("{url}/simple/")).send().ok()?;
        Some(())
    });
    (server, url)
}

#[test]
fn an_export_is_a_static_index_pip_installs_from_and_a_rerun_keeps_what_is_there() {
    let node = Node::start_default();
    let url = node.url();
    let http = client();
    let token = node.create_token("pypi", "upload");
    let old = wheel("alpha", "1.0");
    let new = wheel("alpha", "2.0");
    let beta = sdist("beta", "0.1");
    for a in [&old, &new, &beta] {
        upload_ok(&http, &url, &token, a);
    }
    node.cli_ok(&[
        "yank",
        "--repo",
        "pypi",
        "--project",
        "alpha",
        "--version",
        "2.0",
        "--reason",
        "broken",
        "--url",
        &url,
        "--token",
        &node.admin_token(),
    ]);
    let serial = node.serial();
    // Later than the export's serial: not in it.
    upload_ok(&http, &url, &token, &wheel("gamma", "1.0"));

    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("export");
    let export = || {
        node.cli_ok(&[
            "export",
            "--url",
            &url,
            "--repo",
            "pypi",
            "--to",
            to.to_str().unwrap(),
            "--at",
            &serial.to_string(),
        ])
    };
    let out = export();
    assert!(
        out.contains("3 file(s) written") && out.contains(&format!("serial {serial}")),
        "{out}"
    );

    // The manifest: every file with its sha256, upload time and yank.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(to.join("hoard-export.json")).unwrap()).unwrap();
    assert_eq!(manifest["serial"], serial, "{manifest:#}");
    let files = manifest["files"].as_array().unwrap();
    assert_eq!(files.len(), 3, "{manifest:#}");
    for a in [&old, &new, &beta] {
        let entry = files
            .iter()
            .find(|f| f["filename"] == a.filename.as_str())
            .unwrap_or_else(|| panic!("{} not in the manifest", a.filename));
        assert_eq!(entry["sha256"], a.sha256().as_str());
        assert!(entry["upload_time"].as_str().is_some(), "{entry}");
        let on_disk = std::fs::read(to.join(entry["path"].as_str().unwrap())).unwrap();
        assert_eq!(sha256_hex(&on_disk), a.sha256());
        let yanked = entry["yanked"].as_str();
        assert_eq!(yanked, (a.filename == new.filename).then_some("broken"));
    }
    assert!(!to.join("files/gamma").exists());

    // Any static file server is an index: pip skips the yanked 2.0.
    let (_server, static_url) = serve_dir(&to);
    let got = tempfile::tempdir().unwrap();
    let out = pip_download(&format!("{static_url}/simple/"), "alpha", got.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fetched = std::fs::read(got.path().join(&old.filename)).unwrap();
    assert_eq!(fetched, old.bytes);
    // The sdist (pip would build it): its link, relative, with its hash.
    let page = http
        .get(format!("{static_url}/simple/beta/"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let href = format!(
        "../../files/beta/{}#sha256={}",
        beta.filename,
        beta.sha256()
    );
    assert!(page.contains(&href), "{page}");
    let file = http
        .get(format!("{static_url}/files/beta/{}", beta.filename))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(file.as_ref(), beta.bytes.as_slice());

    // Again: nothing to write; a damaged file is written anew.
    let out = export();
    assert!(
        out.contains("0 file(s) written") && out.contains("3 already there"),
        "{out}"
    );
    let damaged = to.join("files/beta").join(&beta.filename);
    std::fs::write(&damaged, b"not the sdist").unwrap();
    let out = export();
    assert!(out.contains("1 file(s) written"), "{out}");
    assert_eq!(std::fs::read(&damaged).unwrap(), beta.bytes);
}

/// `hoard import` of a directory: every wheel and sdist, nested or not,
/// uploaded and checked as twine's are; a second run imports nothing; and
/// an export imported into a fresh node serves the same files.
#[test]
fn a_directory_imports_once_and_an_export_imports_into_a_fresh_node_with_the_same_files() {
    let node = Node::start_default();
    let url = node.url();
    let token = node.create_token("pypi", "upload");
    let dir = tempfile::tempdir().unwrap();
    let mut expected: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for i in 0..30 {
        let project = format!("imp-{}", i % 6);
        let a = if i % 5 == 0 {
            sdist(&project, &format!("1.{i}"))
        } else {
            wheel(&project, &format!("1.{i}"))
        };
        let sub = dir.path().join(format!("build-{}", i % 3)).join("dist");
        std::fs::create_dir_all(&sub).unwrap();
        a.write_to(&sub);
        expected
            .entry(project)
            .or_default()
            .insert(a.filename.clone(), a.sha256());
    }
    // Named like a wheel but not one; not a distribution name at all.
    std::fs::write(dir.path().join("broken-1.0-py3-none-any.whl"), b"not a zip").unwrap();
    std::fs::write(dir.path().join("notes.whl"), b"?").unwrap();
    std::fs::write(dir.path().join("README.txt"), b"ignored").unwrap();
    let import = |node: &Node, token: &str, from: &std::path::Path| {
        let out = node.cli(&[
            "import",
            "--url",
            &node.url(),
            "--repo",
            "pypi",
            "--token",
            token,
            from.to_str().unwrap(),
        ]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };

    let (code, out) = import(&node, &token, dir.path());
    assert_eq!(code, Some(1), "refusals exit 1: {out}");
    assert!(
        out.contains("30 file(s)") && out.contains("0 already present, 2 refused"),
        "{out}"
    );
    assert!(out.contains("broken-1.0-py3-none-any.whl: 400"), "{out}");
    assert!(out.contains("notes.whl"), "{out}");
    for (project, files) in &expected {
        assert_eq!(&served(&node, project), files, "{project}");
    }
    assert!(served(&node, "broken").is_empty());

    let (_, again) = import(&node, &token, dir.path());
    assert!(
        again.contains("0 file(s)") && again.contains("30 already present"),
        "{again}"
    );

    // Out through an export, into a fresh node: the same files and hashes.
    let exported = tempfile::tempdir().unwrap();
    node.cli_ok(&[
        "export",
        "--url",
        &url,
        "--repo",
        "pypi",
        "--to",
        exported.path().to_str().unwrap(),
    ]);
    // An upload token may not set upload times: every file is refused,
    // saying so; the node's admin token may, and the times are kept.
    let fresh = Node::start_default();
    let fresh_token = fresh.create_token("pypi", "upload");
    let (code, out) = import(&fresh, &fresh_token, exported.path());
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("0 file(s)") && out.contains("needs an admin token"),
        "{out}"
    );
    let (code, out) = import(&fresh, &fresh.admin_token(), exported.path());
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("30 file(s)"), "{out}");
    for (project, files) in &expected {
        assert_eq!(&served(&fresh, project), files, "{project}");
        assert_eq!(
            upload_times(&fresh, project),
            upload_times(&node, project),
            "{project}"
        );
    }
}

/// Each file's PEP 700 `upload-time` on `node`'s `pypi` page of `project`.
fn upload_times(node: &Node, project: &str) -> BTreeMap<String, String> {
    let page: Value = client()
        .get(format!("{}/pypi/simple/{project}/", node.url()))
        .header("accept", "application/vnd.pypi.simple.v1+json")
        .send()
        .unwrap()
        .json()
        .unwrap();
    page["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["filename"].as_str().unwrap().to_owned(),
                f["upload-time"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// `X-Hoard-Upload-Time` is for a repository's admins, in RFC 3339, and
/// not in the future; a refused one stores nothing.
#[test]
fn an_upload_time_is_set_only_by_admins_and_only_a_past_one() {
    let node = Node::start_default();
    let upload_token = node.create_token("pypi", "upload");
    let a = wheel("timed", "1.0");
    let send = |token: &str, time: &str| {
        let mp = Upload::of(&a).multipart();
        client()
            .post(format!("{}/pypi/", node.url()))
            .basic_auth("__token__", Some(token))
            .header("content-type", mp.content_type())
            .header("x-hoard-upload-time", time)
            .body(mp.finish())
            .send()
            .unwrap()
    };
    let before = node.store_snapshot();
    for (token, time, status, says) in [
        (
            upload_token.as_str(),
            "2020-01-02T03:04:05Z",
            403,
            "needs an admin token",
        ),
        (
            &node.admin_token(),
            "yesterday",
            400,
            "not an RFC 3339 time",
        ),
        (
            &node.admin_token(),
            "2999-01-01T00:00:00Z",
            400,
            "in the future",
        ),
    ] {
        let response = send(token, time);
        assert_eq!(response.status().as_u16(), status, "{time}");
        let text = response.text().unwrap();
        assert!(text.contains(says), "{text}");
        node.assert_nothing_stored(&before, "pypi", "timed", &a.filename);
    }
    let response = send(&node.admin_token(), "2020-01-02T03:04:05Z");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        upload_times(&node, "timed")
            .get(&a.filename)
            .map(String::as_str),
        Some("2020-01-02T03:04:05.000000Z")
    );
}

/// `hoard import` of 100 npm tarballs (20 packages, 5 versions each, one
/// scoped): each published as npm would, oldest first, so npm installs
/// the newest; a second run publishes nothing.
#[test]
fn a_hundred_npm_tarballs_import_and_npm_installs_them() {
    let node = Node::start(npm_opts(false));
    let token = node.create_token(NPM_REPO, "upload");
    let dir = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for p in 0..20 {
        let name = if p == 0 {
            "@acme/imported".to_owned()
        } else {
            format!("imported-{p:02}")
        };
        // Written newest first: the import orders them itself.
        for v in (0..5).rev() {
            let file = format!("{}-1.{v}.0.tgz", name.replace('/', "-"));
            std::fs::write(
                dir.path().join(file),
                npm_tarball(&name, &format!("1.{v}.0"), 0),
            )
            .unwrap();
        }
        names.push(name);
    }
    std::fs::write(dir.path().join("broken-1.0.0.tgz"), b"not a tarball").unwrap();
    let import = || {
        let out = node.cli(&[
            "import",
            "--url",
            &node.url(),
            "--repo",
            NPM_REPO,
            "--token",
            &token,
            dir.path().to_str().unwrap(),
        ]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = import();
    assert_eq!(code, Some(1), "the broken tarball is refused: {out}");
    assert!(
        out.contains("100 file(s)") && out.contains("1 refused"),
        "{out}"
    );
    assert!(out.contains("broken-1.0.0.tgz"), "{out}");

    let mut npm = Npm::new(&node);
    let project = npm.project();
    npm.ok(&project, &["install", "@acme/imported", "imported-07"]);
    let versions = node_eval(
        &project,
        "[require('@acme/imported/package.json').version, require('imported-07/package.json').version].join(' ')",
    );
    assert_eq!(versions, "1.4.0 1.4.0");
    npm.ok(&project, &["install", "imported-03@1.1.0"]);

    let (_, again) = import();
    assert!(
        again.contains("0 file(s)") && again.contains("100 already present"),
        "{again}"
    );
}

/// Done when: 2,000 generated wheels and sdists import and pip installs
/// from them; the node killed with kill -9 mid-import, then a re-run,
/// ends complete, and fsck finds the data dir clean.
#[test]
fn an_import_of_2000_files_killed_mid_way_completes_on_a_rerun_with_a_clean_fsck() {
    let _heavy = hoard_testkit::heavy_test();
    let mut node = Node::start_default();
    let token = node.create_token("pypi", "upload");
    let dir = tempfile::tempdir().unwrap();
    let mut expected: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for i in 0..2000 {
        let project = format!("bulk-{}", i % 100);
        let version = format!("{}.{}", i / 100, i % 7);
        let a = if i % 5 == 0 {
            sdist(&project, &version)
        } else {
            wheel(&project, &version)
        };
        let sub = dir.path().join(format!("part-{}", i % 10));
        std::fs::create_dir_all(&sub).unwrap();
        a.write_to(&sub);
        expected
            .entry(project)
            .or_default()
            .insert(a.filename.clone(), a.sha256());
    }
    let import_cmd = |node: &Node| {
        let mut cmd = Command::new(hoard_testkit::tools::hoard_bin());
        cmd.args([
            "import",
            "--url",
            &node.url(),
            "--repo",
            "pypi",
            "--jobs",
            "8",
        ])
        .args(["--token", &token])
        .arg(dir.path())
        .stdin(Stdio::null())
        .env_remove("HOARD_TOKEN");
        cmd
    };

    // Killed while files go in: the import fails, and the node keeps what
    // it acknowledged.
    let start = node.serial();
    let running = import_cmd(&node)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(120), "the import under way", || {
        let applied = status_of(&node).ok()?["applied_serial"].as_u64()?;
        (applied >= start + 300).then_some(())
    });
    node.kill9();
    let interrupted = running.wait_with_output().unwrap();
    assert!(
        !interrupted.status.success(),
        "the import should fail with its node gone: {}",
        String::from_utf8_lossy(&interrupted.stdout)
    );
    node.restart();

    let out = import_cmd(&node).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = [" file(s) (", " already present"].map(|label| count_before(&stdout, label));
    assert_eq!(counts[0] + counts[1], 2000, "{stdout}");
    assert!(counts[1] >= 300, "the first run's files are kept: {stdout}");
    for (project, files) in expected.iter().step_by(9) {
        assert_eq!(&served(&node, project), files, "{project}");
    }
    let got = tempfile::tempdir().unwrap();
    let out = pip_download(
        &format!("{}/pypi/simple/", node.url()),
        "bulk-42==3.6",
        got.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    node.stop();
    let fsck = node.fsck();
    assert!(
        fsck.status.success(),
        "{}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
}

/// The number just before `label` in a summary line.
fn count_before(text: &str, label: &str) -> usize {
    text.split(label)
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count before {label:?}: {text}"))
}

/// Done when: a bandersnatch-layout tree imports: its files from
/// `web/packages/`, its upload times from `web/json/`.
#[test]
fn a_bandersnatch_tree_imports_with_its_upload_times() {
    let node = Node::start_default();
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web");
    let mut expected = BTreeMap::new();
    let mut times = BTreeMap::new();
    for (i, (project, version)) in [
        ("band-one", "1.0"),
        ("band-one", "1.1"),
        ("band-two", "0.3"),
    ]
    .into_iter()
    .enumerate()
    {
        let a = if i == 2 {
            sdist(project, version)
        } else {
            wheel(project, version)
        };
        let h = a.sha256();
        let packages = web
            .join("packages")
            .join(&h[0..2])
            .join(&h[2..4])
            .join(&h[4..]);
        std::fs::create_dir_all(&packages).unwrap();
        a.write_to(&packages);
        let simple = web.join("simple").join(project);
        std::fs::create_dir_all(&simple).unwrap();
        std::fs::write(
            simple.join("index.html"),
            format!(
                "<a href=\"../../packages/{}/{}/{}/{}#sha256={h}\">{}</a>",
                &h[0..2],
                &h[2..4],
                &h[4..],
                a.filename,
                a.filename
            ),
        )
        .unwrap();
        let time = format!("2019-0{}-15T10:20:30.000000Z", i + 1);
        expected
            .entry(project.to_owned())
            .or_insert_with(BTreeMap::new)
            .insert(a.filename.clone(), h.clone());
        times
            .entry(project.to_owned())
            .or_insert_with(BTreeMap::new)
            .insert(a.filename.clone(), time);
    }
    std::fs::create_dir_all(web.join("json")).unwrap();
    for (project, files) in &times {
        let releases: serde_json::Map<String, Value> = files
            .iter()
            .map(|(filename, time)| {
                (
                    filename.clone(),
                    serde_json::json!([{"filename": filename, "upload_time_iso_8601": time}]),
                )
            })
            .collect();
        std::fs::write(
            web.join("json").join(project),
            serde_json::json!({"info": {"name": project}, "releases": releases}).to_string(),
        )
        .unwrap();
    }
    let out = node.cli(&[
        "import",
        "--url",
        &node.url(),
        "--repo",
        "pypi",
        "--token",
        &node.admin_token(),
        "--from-bandersnatch",
        dir.path().to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("3 file(s)"), "{stdout}");
    for (project, files) in &expected {
        assert_eq!(&served(&node, project), files, "{project}");
        assert_eq!(&upload_times(&node, project), &times[project], "{project}");
    }
}

/// A devpi-server 6 (from PyPI) with a root index and a user's index,
/// stopped; returns what `devpi-export` wrote, and the upload time devpi
/// logged for each file.
fn devpi_export_of(
    work: &std::path::Path,
    root_files: &[&Artifact],
    alice_files: &[&Artifact],
) -> std::path::PathBuf {
    let bin = hoard_testkit::tools::devpi_bin();
    let serverdir = work.join("devpi-server");
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new(bin.join("devpi-init"))
        .arg("--serverdir")
        .arg(&serverdir)
        .args(["--no-root-pypi", "--root-passwd", "rootpw"]));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let log = std::fs::File::create(work.join("devpi.log")).unwrap();
    let server = Command::new(bin.join("devpi-server"))
        .arg("--serverdir")
        .arg(&serverdir)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--offline-mode",
        ])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut server = StaticServer(server);
    let url = format!("http://127.0.0.1:{port}");
    let http = client();
    wait_for(Duration::from_secs(120), "devpi-server answers", || {
        http.get(format!("{url}/+api"))
            .send()
            .ok()?
            .status()
            .is_success()
            .then_some(())
    });
    let put = |path: &str, auth: Option<(&str, &str)>, body: Value| {
        let mut request = http.put(format!("{url}/{path}")).json(&body);
        if let Some((user, password)) = auth {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().unwrap();
        assert!(
            response.status().is_success(),
            "devpi PUT /{path}: {}",
            response.status()
        );
    };
    put(
        "root/dev",
        Some(("root", "rootpw")),
        serde_json::json!({"type": "stage", "bases": [], "volatile": true}),
    );
    put(
        "alice",
        None,
        serde_json::json!({"password": "alice-devpi-pw", "email": "alice@example.org"}),
    );
    put(
        "alice/prod",
        Some(("alice", "alice-devpi-pw")),
        serde_json::json!({"type": "stage", "bases": ["root/dev"], "volatile": false}),
    );
    let dist = work.join("dist");
    std::fs::create_dir_all(&dist).unwrap();
    for (index, (user, password), files) in [
        ("root/dev", ("root", "rootpw"), root_files),
        ("alice/prod", ("alice", "alice-devpi-pw"), alice_files),
    ] {
        let paths: Vec<_> = files.iter().map(|a| a.write_to(&dist)).collect();
        let mut cmd = Command::new(&py_tools().twine);
        hoard_testkit::tools::isolate_python_env(&mut cmd)
            .args(["upload", "--disable-progress-bar", "--non-interactive"])
            .args(["--repository-url", &format!("{url}/{index}/")])
            .args(["-u", user, "-p", password])
            .args(&paths);
        run(&mut cmd);
    }
    server.stop();
    let export = work.join("devpi-export");
    run(Command::new(bin.join("devpi-export"))
        .arg("--serverdir")
        .arg(&serverdir)
        .arg(&export));
    export
}

/// Done when: a devpi export made by a real devpi-server (installed from
/// PyPI) imports with its upload times, and pip installs from it. Its
/// users come along, and sign in with their devpi passwords.
#[test]
fn a_devpi_export_imports_with_its_users_and_upload_times_and_pip_installs_from_it() {
    let work = tempfile::tempdir().unwrap();
    let root_files = [wheel("devpi-tool", "1.0"), sdist("devpi-tool", "1.1")];
    let alice_files = [wheel("alice-lib", "0.1")];
    let export = devpi_export_of(
        work.path(),
        &root_files.iter().collect::<Vec<_>>(),
        &alice_files.iter().collect::<Vec<_>>(),
    );
    // What devpi logged, read from its export independently of hoard.
    let dataindex: Value =
        serde_json::from_slice(&std::fs::read(export.join("dataindex.json")).unwrap()).unwrap();
    let mut devpi_times = BTreeMap::new();
    for index in dataindex["indexes"].as_object().unwrap().values() {
        for f in index["files"].as_array().unwrap() {
            let when: Vec<u64> = f["log"][0]["when"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_u64().unwrap())
                .collect();
            let name = f["relpath"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned();
            devpi_times.insert(
                name,
                format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                    when[0], when[1], when[2], when[3], when[4], when[5]
                ),
            );
        }
    }
    assert_eq!(devpi_times.len(), 3, "{dataindex}");

    let node = Node::start_default();
    let url = node.url();
    let admin = node.admin_token();
    let import = |extra: &[&str]| {
        let mut args = vec!["import", "--url", &url, "--repo", "pypi", "--token", &admin];
        args.extend_from_slice(extra);
        args.extend(["--from-devpi", export.to_str().unwrap()]);
        let out = node.cli(&args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        text
    };
    // One index first, then all of them.
    let first = import(&["--index", "alice/prod"]);
    assert!(first.contains("imported into pypi: 1 file(s)"), "{first}");
    assert!(first.contains("devpi users: 2 added"), "{first}");
    let rest = import(&[]);
    assert!(rest.contains("imported into pypi: 2 file(s)"), "{rest}");
    assert!(rest.contains("1 already present"), "{rest}");
    let again = import(&[]);
    assert!(again.contains("imported into pypi: 0 file(s)"), "{again}");
    assert!(again.contains("3 already present"), "{again}");

    for (project, files) in [
        ("devpi-tool", &root_files[..]),
        ("alice-lib", &alice_files[..]),
    ] {
        let expected: BTreeMap<String, String> = files
            .iter()
            .map(|a| (a.filename.clone(), a.sha256()))
            .collect();
        assert_eq!(served(&node, project), expected, "{project}");
        for (filename, time) in upload_times(&node, project) {
            assert!(
                time.starts_with(&devpi_times[&filename]),
                "{filename}: hoard says {time}, devpi logged {}",
                devpi_times[&filename]
            );
        }
    }
    let got = tempfile::tempdir().unwrap();
    let out = pip_download(
        &format!("{}/pypi/simple/", node.url()),
        "devpi-tool==1.0",
        got.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Each index's uploaders own its projects.
    for (project, owner) in [("devpi-tool", "root"), ("alice-lib", "alice")] {
        let listed: Value = client()
            .post(format!("{}/+admin/owners/list", node.url()))
            .bearer_auth(node.admin_token())
            .json(&serde_json::json!({"repo": "pypi", "project": project}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(
            listed["owners"],
            serde_json::json!([owner]),
            "{project}: {listed}"
        );
    }
    // alice signs in with her devpi password.
    let sign_in = |password: &str| {
        client()
            .post(format!("{}/+ui/+login", node.url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("user=alice&password={password}"))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(sign_in("alice-devpi-pw"), 303);
    assert_ne!(sign_in("not-her-password"), 303);
}

/// `hoard import --data-dir`: straight into a stopped one-voter node's
/// store, in batches; killed mid-way and run again, it completes, the
/// node serves every file, and fsck finds the store clean. A running
/// node's data dir is refused.
#[test]
fn an_offline_import_into_a_stopped_node_resumes_after_kill_9_with_a_clean_fsck() {
    let _heavy = hoard_testkit::heavy_test();
    let mut node = Node::start_default();
    let data_dir = node.data_dir();
    let dir = tempfile::tempdir().unwrap();
    let mut expected: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for i in 0..3000 {
        let project = format!("offline-{}", i % 150);
        let version = format!("{}.{}", i / 150, i % 3);
        let a = if i % 4 == 0 {
            sdist(&project, &version)
        } else {
            wheel(&project, &version)
        };
        a.write_to(dir.path());
        expected
            .entry(project)
            .or_default()
            .insert(a.filename.clone(), a.sha256());
    }
    // Named like a wheel, but not a zip: refused, and nothing of it stays.
    std::fs::write(dir.path().join("broken-1.0-py3-none-any.whl"), b"not a zip").unwrap();
    let import = || {
        let mut cmd = Command::new(hoard_testkit::tools::hoard_bin());
        cmd.args(["import", "--repo", "pypi", "--jobs", "1", "--data-dir"])
            .arg(&data_dir)
            .arg(dir.path())
            .env_remove("HOARD_TOKEN")
            .stdin(Stdio::null());
        cmd
    };
    let out = import().output().unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("stop it first"), "{said}");

    node.stop();
    let mut running = import()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A batch is 500 files (and a wheel's metadata each, ~875 blobs):
    // blobs of a second batch mean the first is listed and flushed.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while hoard_testkit::node::count_files(&data_dir.join("blobs")) < 1000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the offline import never got under way"
        );
        assert!(
            running.try_wait().unwrap().is_none(),
            "the offline import ended early"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    running.kill().unwrap();
    let killed = running.wait_with_output().unwrap();
    assert!(
        !killed.status.success(),
        "the import finished before it was killed: {}",
        String::from_utf8_lossy(&killed.stdout)
    );

    let out = import().output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !out.status.success(),
        "the broken file is refused: {stdout}"
    );
    let counts = [" file(s) (", " already present", " refused"].map(|l| count_before(&stdout, l));
    assert_eq!(counts[0] + counts[1], 3000, "{stdout}");
    assert!(
        counts[1] >= 450,
        "the first run's first batch is kept: {stdout}"
    );
    assert_eq!(counts[2], 1, "{stdout}");
    assert!(stdout.contains("broken-1.0-py3-none-any.whl"), "{stdout}");

    node.restart();
    for (project, files) in expected.iter().step_by(13) {
        assert_eq!(&served(&node, project), files, "{project}");
    }
    let got = tempfile::tempdir().unwrap();
    let out = pip_download(
        &format!("{}/pypi/simple/", node.url()),
        "offline-42==0.0",
        got.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.stop();
    let fsck = node.fsck();
    assert!(
        fsck.status.success(),
        "{}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
}

/// Each version's `dist.shasum` in a packument, by version.
fn npm_shasums(node: &Node, path: &str) -> BTreeMap<String, String> {
    let doc: Value = client()
        .get(format!("{}/{path}", node.url()))
        .header("accept", "application/json")
        .send()
        .unwrap()
        .json()
        .unwrap();
    doc["versions"]
        .as_object()
        .unwrap_or_else(|| panic!("{path}: {doc}"))
        .iter()
        .map(|(v, d)| (v.clone(), d["dist"]["shasum"].as_str().unwrap().to_owned()))
        .collect()
}

/// An npm repository exports in the registry's layout (packuments and
/// tarballs) as of a serial, and imports into a fresh node with the same
/// versions and digests.
#[test]
fn an_npm_export_imports_into_a_fresh_node_with_the_same_versions_and_digests() {
    let source = Node::start(npm_opts(false));
    let token = source.create_token(NPM_REPO, "upload");
    let tarballs = tempfile::tempdir().unwrap();
    let names = ["@acme/exported", "exported-one", "exported-two"];
    for name in names {
        for v in ["1.0.0", "1.1.0"] {
            let file = format!("{}-{v}.tgz", name.replace('/', "-"));
            std::fs::write(tarballs.path().join(file), npm_tarball(name, v, 100)).unwrap();
        }
    }
    let import_into = |node: &Node, token: &str, dir: &std::path::Path| {
        node.cli_ok(&[
            "import",
            "--url",
            &node.url(),
            "--repo",
            NPM_REPO,
            "--token",
            token,
            dir.to_str().unwrap(),
        ])
    };
    let said = import_into(&source, &token, tarballs.path());
    assert!(said.contains("6 file(s)"), "{said}");
    let at = source.serial();
    // Published after the export's serial: not in it.
    let later = tempfile::tempdir().unwrap();
    std::fs::write(
        later.path().join("exported-one-2.0.0.tgz"),
        npm_tarball("exported-one", "2.0.0", 0),
    )
    .unwrap();
    import_into(&source, &token, later.path());

    let out = tempfile::tempdir().unwrap();
    let export = || {
        source.cli_ok(&[
            "export",
            "--url",
            &source.url(),
            "--repo",
            NPM_REPO,
            "--to",
            out.path().to_str().unwrap(),
            "--at",
            &at.to_string(),
        ])
    };
    let said = export();
    assert!(said.contains("3 packages, 6 tarball(s) written"), "{said}");
    assert!(export().contains("6 already there"));
    let packument: Value = serde_json::from_slice(
        &std::fs::read(out.path().join("@acme/exported/index.json")).unwrap(),
    )
    .unwrap();
    let tarball = packument["versions"]["1.0.0"]["dist"]["tarball"]
        .as_str()
        .unwrap();
    assert!(tarball.starts_with("-/"), "{tarball}");
    assert!(out.path().join("@acme/exported").join(tarball).is_file());

    let fresh = Node::start(npm_opts(false));
    let fresh_token = fresh.create_token(NPM_REPO, "upload");
    let said = import_into(&fresh, &fresh_token, out.path());
    assert!(said.contains("imported into npm: 6 file(s)"), "{said}");
    for name in names {
        let path = name.replace('/', "%2f");
        assert_eq!(
            npm_shasums(&fresh, &format!("{NPM_REPO}/{path}")),
            npm_shasums(&source, &format!("{NPM_REPO}/+at/{at}/{path}")),
            "{name}"
        );
    }
}
