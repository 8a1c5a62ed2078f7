//! The real clients: twine uploads, pip and uv install in fresh venvs.

use std::path::Path;
use std::process::Command;

use hoard_testkit::artifacts::{module_name, normalize, WheelSpec};
use hoard_testkit::node::{describe_failure, run_ok};
use hoard_testkit::tools::{isolate_python_env, py_tools};
use hoard_testkit::{sdist, Node, Upload};

/// The Accept header that uv sends for simple pages.
pub const UV_ACCEPT: &str =
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01";
/// The Accept header that pip sends for simple pages.
pub const PIP_ACCEPT: &str =
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";

pub fn twine_upload(node: &Node, token: &str, files: &[&Path]) -> std::process::Output {
    let tools = py_tools();
    let mut cmd = Command::new(&tools.twine);
    isolate_python_env(&mut cmd)
        .arg("upload")
        .arg("--repository-url")
        .arg(format!("{}/pypi/", node.url()))
        .args(["-u", "__token__", "-p", token])
        .args(["--non-interactive", "--disable-progress-bar", "--verbose"])
        .args(files)
        .current_dir(node.root());
    cmd.output().expect("run twine")
}

pub fn fresh_venv(dir: &Path, with_pip: bool) {
    let mut cmd = Command::new(&py_tools().python3);
    isolate_python_env(&mut cmd).args(["-m", "venv"]);
    if !with_pip {
        cmd.arg("--without-pip");
    }
    run_ok(cmd.arg(dir));
}

/// `pip install REQ` from `index` (a simple index URL) into a fresh venv
/// at `venv`, without a cache; panics unless it succeeds.
pub fn pip_install_in_fresh_venv(venv: &Path, index: &str, req: &str) {
    fresh_venv(venv, true);
    let mut cmd = Command::new(venv.join("bin").join("python"));
    isolate_python_env(&mut cmd)
        .args([
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            "--index-url",
            index,
        ])
        .arg(req);
    run_ok(&mut cmd);
}

pub fn imported_version(venv: &Path, module: &str) -> String {
    let mut cmd = Command::new(venv.join("bin").join("python"));
    isolate_python_env(&mut cmd).args([
        "-c",
        &format!("import {module}; print({module}.__version__)"),
    ]);
    let out = run_ok(&mut cmd);
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn twine_uploads_then_pip_and_uv_install() {
    let tools = py_tools();
    let node = Node::start_default();
    let token = node.create_token("pypi", "upload");
    let name = "Hoard_Demo.Pkg";
    let project = normalize(name);
    let module = module_name(name);

    let mut spec = WheelSpec::new(name, "1.2.0");
    spec.requires_python = Some(">=3.8".to_string());
    let whl = spec.build();
    let old = WheelSpec::new(name, "1.1.0").build();
    let sd = sdist(name, "1.2.0");
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<_> = [&old, &whl, &sd]
        .iter()
        .map(|a| a.write_to(dir.path()))
        .collect();
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();

    let before = node.serial();
    let out = twine_upload(&node, &token, &refs);
    assert!(
        out.status.success(),
        "{}",
        describe_failure(&Command::new("twine"), &out)
    );
    assert_eq!(node.serial(), before + 3, "three uploads, three events");

    // Every file is on the page.
    let html = node
        .get(&format!("/pypi/simple/{project}/"))
        .text()
        .unwrap();
    for a in [&old, &whl, &sd] {
        assert!(
            html.contains(&a.filename),
            "{} not listed: {html}",
            a.filename
        );
    }

    // uv is served PEP 691 JSON.
    let resp = node
        .http()
        .get(format!("{}/pypi/simple/{project}/", node.url()))
        .header("accept", crate::pypi_clients::UV_ACCEPT)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        ct.starts_with("application/vnd.pypi.simple.v1+json"),
        "uv's Accept got {ct}"
    );

    // pip, in a fresh venv, no cache.
    let pip_venv = dir.path().join("pip-venv");
    fresh_venv(&pip_venv, true);
    let mut cmd = Command::new(pip_venv.join("bin").join("python"));
    isolate_python_env(&mut cmd)
        .args(["-m", "pip", "install", "--no-cache-dir", "--index-url"])
        .arg(format!("{}/pypi/simple/", node.url()))
        .arg(name);
    run_ok(&mut cmd);
    assert_eq!(imported_version(&pip_venv, &module), "1.2.0");

    // uv, in another fresh venv, no cache.
    let uv_venv = dir.path().join("uv-venv");
    fresh_venv(&uv_venv, false);
    let log_len = node.log().len();
    let mut cmd = Command::new(&tools.uv);
    isolate_python_env(&mut cmd)
        .args(["pip", "install", "--no-cache", "--index-url"])
        .arg(format!("{}/pypi/simple/", node.url()))
        .arg("--python")
        .arg(uv_venv.join("bin").join("python"))
        .arg(name);
    run_ok(&mut cmd);
    assert_eq!(imported_version(&uv_venv, &module), "1.2.0");
    // The node logs each request with the content type it answered: uv's
    // request for the project page was answered with JSON.
    let log = node.log();
    let page_path = format!("/pypi/simple/{project}/");
    let uv_lines: Vec<&str> = log[log_len..]
        .lines()
        .filter(|l| l.contains(&page_path))
        .collect();
    if uv_lines.is_empty() {
        eprintln!("note: the node's log does not show requests; skipped the log check");
    } else {
        assert!(
            uv_lines
                .iter()
                .any(|l| l.contains("application/vnd.pypi.simple.v1+json")),
            "uv's page requests were not answered with PEP 691 JSON: {uv_lines:#?}"
        );
    }

    // uv can pin the older release too (a second resolution, from JSON).
    let mut cmd = Command::new(&tools.uv);
    isolate_python_env(&mut cmd)
        .args(["pip", "install", "--no-cache", "--index-url"])
        .arg(format!("{}/pypi/simple/", node.url()))
        .arg("--python")
        .arg(uv_venv.join("bin").join("python"))
        .arg(format!("{name}==1.1.0"));
    run_ok(&mut cmd);
    assert_eq!(imported_version(&uv_venv, &module), "1.1.0");

    // Installs are reads: no new events.
    assert_eq!(node.serial(), before + 3);
}

#[test]
fn twine_shows_the_servers_refusal() {
    let node = Node::start_default();
    let token = node.create_token("pypi", "upload");
    let a = hoard_testkit::wheel("twine-conflict", "1.0.0");
    let dir = tempfile::tempdir().unwrap();
    let path = a.write_to(dir.path());
    let out = twine_upload(&node, &token, &[&path]);
    assert!(
        out.status.success(),
        "{}",
        describe_failure(&Command::new("twine"), &out)
    );

    // The same filename with other bytes: 409, and twine says why.
    let mut spec = WheelSpec::new("twine-conflict", "1.0.0");
    spec.extra_files
        .push(("twine_conflict/other.py".into(), b"x = 1\n".to_vec()));
    let b = spec.build();
    assert_eq!(a.filename, b.filename);
    let dir2 = tempfile::tempdir().unwrap();
    let path2 = b.write_to(dir2.path());
    let before = node.store_snapshot();
    let out = twine_upload(&node, &token, &[&path2]);
    assert!(
        !out.status.success(),
        "twine should fail on a conflicting file"
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("409"),
        "twine output should name the 409: {all}"
    );
    assert_eq!(node.store_snapshot(), before);

    // A wrong token: twine fails with 403.
    let out = twine_upload(&node, "not-a-token", &[&path]);
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("403"),
        "twine output should name the 403: {all}"
    );
}

fn uv_install(index: &str, venv: &Path, req: &str) {
    let mut cmd = Command::new(&py_tools().uv);
    isolate_python_env(&mut cmd)
        .args(["pip", "install", "--no-cache", "--index-url", index])
        .arg("--python")
        .arg(venv.join("bin").join("python"))
        .arg(req);
    run_ok(&mut cmd);
}

/// Reproducible installs: uv pointed at `/pypi/+at/{serial}/simple/` gets
/// what was there then; and pip and uv skip a yanked release.
#[test]
fn point_in_time_index_and_yanked_releases_with_real_clients() {
    let node = Node::start_default();
    let token = node.create_token("pypi", "upload");
    let name = "pinned-pkg";
    let module = module_name(name);
    node.upload_ok(
        "pypi",
        &token,
        &Upload::of(&hoard_testkit::wheel(name, "1.0.0")),
    );
    let s1 = node.serial();
    node.upload_ok(
        "pypi",
        &token,
        &Upload::of(&hoard_testkit::wheel(name, "2.0.0")),
    );
    let dir = tempfile::tempdir().unwrap();
    let venv = |n: &str| {
        let p = dir.path().join(n);
        fresh_venv(&p, false);
        p
    };

    let v = venv("latest");
    uv_install(&format!("{}/pypi/simple/", node.url()), &v, name);
    assert_eq!(imported_version(&v, &module), "2.0.0");

    let v = venv("pinned");
    uv_install(&format!("{}/pypi/+at/{s1}/simple/", node.url()), &v, name);
    assert_eq!(
        imported_version(&v, &module),
        "1.0.0",
        "the index as of serial {s1}"
    );

    // Yank 2.0.0: unpinned installs skip it.
    let admin = node.admin_token();
    let url = node.url();
    node.cli_env_ok(
        &[
            "yank",
            "--url",
            &url,
            "--repo",
            "pypi",
            "--project",
            name,
            "--version",
            "2.0.0",
            "--reason",
            "bad",
        ],
        &[("HOARD_TOKEN", &admin)],
    );
    let v = venv("after-yank-uv");
    uv_install(&format!("{}/pypi/simple/", node.url()), &v, name);
    assert_eq!(
        imported_version(&v, &module),
        "1.0.0",
        "uv skips a yanked release"
    );

    let pip_venv = dir.path().join("after-yank-pip");
    fresh_venv(&pip_venv, true);
    let mut cmd = Command::new(pip_venv.join("bin").join("python"));
    isolate_python_env(&mut cmd)
        .args(["-m", "pip", "install", "--no-cache-dir", "--index-url"])
        .arg(format!("{}/pypi/simple/", node.url()))
        .arg(name);
    run_ok(&mut cmd);
    assert_eq!(
        imported_version(&pip_venv, &module),
        "1.0.0",
        "pip skips a yanked release"
    );
}
