//! Users, package owners and scoped tokens, with the real clients: a
//! second npm user's publish of someone else's package and `npm owner`,
//! twine with users' passwords, pip with credentials in a private index
//! URL, tokens scoped to projects and to a lifetime, and a revoked token
//! on a replica.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use hoard_testkit::cluster::wait_applied;
use hoard_testkit::npm::{npm_opts, Npm, PASSWORD, USER};
use hoard_testkit::tools::{isolate_python_env, py_tools};
use hoard_testkit::{wheel, Auth, Node, NodeOpts, RepoSpec, Upload};

const PKG: &str = "hoard-owned-widget";
const BOB: &str = "bob";
const BOB_PASSWORD: &str = "bobs-long-password";

fn all(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `twine upload` to the node's default `pypi` as `user` with `password`.
fn twine_as(node: &Node, user: &str, password: &str, file: &Path) -> Output {
    let mut cmd = Command::new(&py_tools().twine);
    isolate_python_env(&mut cmd)
        .arg("upload")
        .arg("--repository-url")
        .arg(format!("{}/pypi/", node.url()))
        .args(["-u", user, "-p", password])
        .args(["--non-interactive", "--disable-progress-bar"])
        .arg(file)
        .current_dir(node.root());
    cmd.output().expect("run twine")
}

/// `pip download` of `requirement` (no dependencies, no cache) from
/// `index_url` into `dest`.
pub(crate) fn pip_download(index_url: &str, requirement: &str, dest: &Path) -> Output {
    let mut cmd = Command::new(py_tools().venv.join("bin").join("python"));
    isolate_python_env(&mut cmd)
        .args(["-m", "pip", "download", "--no-deps", "--no-cache-dir"])
        .args(["--disable-pip-version-check", "--no-input"])
        .arg("--index-url")
        .arg(index_url)
        .arg("--dest")
        .arg(dest)
        .arg(requirement);
    cmd.output().expect("run pip")
}

fn admin_args(node: &Node) -> [String; 4] {
    [
        "--url".to_string(),
        node.url(),
        "--token".to_string(),
        node.admin_token(),
    ]
}

/// `hoard ARGS --url … --token ADMIN`; its stdout.
fn hoard_admin(node: &Node, args: &[&str]) -> String {
    let extra = admin_args(node);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(extra.iter().map(String::as_str));
    node.cli_ok(&all)
}

#[test]
fn npm_a_second_user_cannot_publish_anothers_package_until_an_owner_adds_them() {
    let node = Node::start(npm_opts(false));
    node.add_user(BOB, BOB_PASSWORD);

    // alice is a config user with an unsalted sha256: her login replaces
    // it with an argon2id hash.
    let users = hoard_admin(&node, &["user", "list"]);
    assert!(users.contains("sha256 (replaced"), "{users}");
    let alice = Npm::new(&node);
    let out = alice.login_pty(USER, PASSWORD, &[]);
    assert!(out.success(), "{out}");
    let users = hoard_admin(&node, &["user", "list"]);
    let line = users
        .lines()
        .find(|l| l.starts_with(USER))
        .unwrap_or_default();
    assert!(line.contains("argon2id"), "{users}");
    alice.publish(PKG, "1.0.0", &[]);
    let owners = alice.ok(alice.root(), &["owner", "ls", PKG]);
    assert!(
        owners.contains(USER),
        "the first publisher owns it: {owners}"
    );

    // What the issue found: bob, logged in as himself, publishes 9.9.9 of
    // alice's package. Refused, and nothing is stored.
    let bob = Npm::new(&node);
    let out = bob.login_pty(BOB, BOB_PASSWORD, &[]);
    assert!(out.success(), "{out}");
    let bobs = bob.package(PKG, "9.9.9", &[], "bob's");
    let before = node.store_snapshot();
    let out = bob.run(&bobs, &["publish"]);
    assert!(!out.success(), "bob's publish was accepted: {out}");
    assert!(
        out.all().contains("403") && out.all().contains("belongs to alice"),
        "npm shows the 403 and why: {out}"
    );
    node.assert_nothing_stored(&before, "", "", "");
    assert_eq!(alice.versions(PKG, &[]), ["1.0.0"]);

    // Nor may bob make himself an owner, or move a tag.
    let out = bob.run(bob.root(), &["owner", "add", BOB, PKG]);
    assert!(!out.success() && out.all().contains("403"), "{out}");
    let out = bob.run(
        bob.root(),
        &["dist-tag", "add", &format!("{PKG}@1.0.0"), "beta"],
    );
    assert!(!out.success() && out.all().contains("403"), "{out}");
    assert_eq!(node.store_snapshot(), before);

    // alice adds him; then his publish goes through.
    let out = alice.ok(alice.root(), &["owner", "add", BOB, PKG]);
    assert!(out.contains(&format!("+ {BOB} ({PKG})")), "{out}");
    let owners = bob.ok(bob.root(), &["owner", "ls", PKG]);
    assert!(owners.contains(USER) && owners.contains(BOB), "{owners}");
    let out = bob.run(&bobs, &["publish"]);
    assert!(out.success(), "{out}");
    assert_eq!(alice.versions(PKG, &[]), ["1.0.0", "9.9.9"]);

    // Removed again, he is refused again.
    alice.ok(alice.root(), &["owner", "rm", BOB, PKG]);
    let owners = alice.ok(alice.root(), &["owner", "ls", PKG]);
    assert!(!owners.contains(BOB), "{owners}");
    let dir = bob.package(PKG, "9.9.10", &[], "");
    let out = bob.run(&dir, &["publish"]);
    assert!(!out.success() && out.all().contains("403"), "{out}");

    // The last owner cannot be removed (npm refuses before asking).
    let out = alice.run(alice.root(), &["owner", "rm", USER, PKG]);
    assert!(!out.success(), "{out}");

    // A new name is bob's, and alice is the stranger there.
    bob.publish("bobs-own-widget", "1.0.0", &[]);
    let dir = alice.package("bobs-own-widget", "2.0.0", &[], "");
    let out = alice.run(&dir, &["publish"]);
    assert!(
        !out.success() && out.all().contains("belongs to bob"),
        "{out}"
    );
}

#[test]
fn pypi_a_second_user_cannot_upload_to_anothers_project_until_a_maintainer_is_added() {
    let node = Node::start_default();
    node.add_user(USER, PASSWORD);
    node.add_user(BOB, BOB_PASSWORD);
    let dir = tempfile::tempdir().unwrap();

    let first = wheel("owned-demo", "1.0").write_to(dir.path());
    let out = twine_as(&node, USER, PASSWORD, &first);
    assert!(out.status.success(), "alice's upload: {}", all(&out));

    let theirs = wheel("owned-demo", "9.9.9");
    let path = theirs.write_to(dir.path());
    let before = node.store_snapshot();
    let out = twine_as(&node, BOB, BOB_PASSWORD, &path);
    assert!(!out.status.success(), "bob's upload was accepted");
    let text = all(&out);
    assert!(
        text.contains("403") && text.contains("belongs to alice"),
        "twine shows the 403 and why: {text}"
    );
    node.assert_nothing_stored(&before, "pypi", "owned-demo", &theirs.filename);

    // A wrong password is a 401 that twine shows.
    let out = twine_as(&node, BOB, "not-bobs-password", &path);
    assert!(
        !out.status.success() && all(&out).contains("401"),
        "{}",
        all(&out)
    );

    // The owners, by the virtual repository's name or the hosted one's.
    let owners = hoard_admin(
        &node,
        &["owner", "ls", "--repo", "pypi", "--project", "Owned_Demo"],
    );
    assert_eq!(owners.trim(), USER);
    hoard_admin(
        &node,
        &[
            "owner",
            "add",
            "--repo",
            "pypi-local",
            "--project",
            "owned-demo",
            BOB,
        ],
    );
    let out = twine_as(&node, BOB, BOB_PASSWORD, &path);
    assert!(out.status.success(), "bob as a maintainer: {}", all(&out));
    let page = node.get("/pypi/simple/owned-demo/").text().unwrap();
    assert!(page.contains(&theirs.filename), "{page}");

    // A token of bob's is bound the same way; a service token is not.
    let bobs_token = hoard_admin(
        &node,
        &[
            "token", "create", "--repo", "pypi", "--perm", "upload", "--user", BOB,
        ],
    );
    hoard_admin(
        &node,
        &[
            "owner",
            "rm",
            "--repo",
            "pypi",
            "--project",
            "owned-demo",
            BOB,
        ],
    );
    let late = wheel("owned-demo", "9.9.10");
    let resp = node.upload(
        "pypi",
        &Auth::Basic(bobs_token.trim().to_string()),
        &Upload::of(&late),
    );
    assert_eq!(resp.status().as_u16(), 403);
    let service = node.create_token("pypi", "upload");
    node.upload_ok("pypi", &service, &Upload::of(&late));
}

#[test]
fn pip_reads_a_private_repository_with_credentials_in_the_index_url() {
    let node = Node::start(NodeOpts::default().repo(RepoSpec {
        anonymous_read: false,
        ..RepoSpec::pypi("private")
    }));
    node.add_user(USER, PASSWORD);
    let a = wheel("secret-sauce", "1.0");
    let up = node.create_token("private", "upload");
    node.upload_ok("private", &up, &Upload::of(&a));

    let resp = node.get("/private/simple/secret-sauce/");
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        resp.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Basic realm=\"hoard\""),
        "pip's netrc and keyring flows need the challenge"
    );

    let dest = tempfile::tempdir().unwrap();
    let port = node.addr().port();
    let url = format!("http://{USER}:{PASSWORD}@127.0.0.1:{port}/private/simple/");
    let out = pip_download(&url, "secret-sauce==1.0", dest.path());
    assert!(out.status.success(), "pip with credentials: {}", all(&out));
    assert!(dest.path().join(&a.filename).exists());

    let other = tempfile::tempdir().unwrap();
    let url = format!("http://{USER}:wrong-password@127.0.0.1:{port}/private/simple/");
    let out = pip_download(&url, "secret-sauce==1.0", other.path());
    assert!(!out.status.success(), "a wrong password let pip in");
    assert!(!other.path().join(&a.filename).exists());
    // pip reports only that it found nothing; the answer it got says why.
    let resp = node
        .http()
        .get(format!("{}/private/simple/secret-sauce/", node.url()))
        .basic_auth(USER, Some("wrong-password"))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.text().unwrap().contains("wrong username or password"));
}

/// The id `hoard token list` shows for the token labelled `label`.
fn token_id(node: &Node, label: &str) -> String {
    let listing = hoard_admin(node, &["token", "list"]);
    assert!(
        !listing.contains("hoard_") && !listing.contains("sha256"),
        "token list shows no secrets or hashes: {listing}"
    );
    listing
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(label))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no token labelled {label}: {listing}"))
        .to_string()
}

#[test]
fn a_revoked_token_is_refused_on_a_replica_once_it_has_applied_the_revocation() {
    let leader = Node::start(NodeOpts::default().repo(RepoSpec {
        anonymous_read: false,
        ..RepoSpec::pypi("private")
    }));
    let replica = Node::start(NodeOpts::replica("r1", &[leader.grpc_addr()]));
    let read = leader.create_token("private", "read");
    wait_applied(&replica, leader.serial(), Duration::from_secs(20));
    let get = |token: &str| {
        replica
            .http()
            .get(format!("{}/private/simple/", replica.url()))
            .basic_auth("__token__", Some(token))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(get(&read), 200);

    let id = token_id(&leader, "test");
    let extra = admin_args(&leader);
    let mut args = vec!["token", "revoke", id.as_str()];
    args.extend(extra.iter().map(String::as_str));
    let out = leader.cli(&args);
    assert!(out.status.success(), "{}", all(&out));
    let revoked_at = leader.serial();
    wait_applied(&replica, revoked_at, Duration::from_secs(20));
    assert_eq!(get(&read), 403, "the replica still honours a revoked token");
}

#[test]
fn tokens_scoped_to_projects_and_a_lifetime_and_a_removed_users_tokens() {
    let node = Node::start_default();
    node.add_user(USER, PASSWORD);
    let scoped = hoard_admin(
        &node,
        &[
            "token",
            "create",
            "--repo",
            "pypi",
            "--perm",
            "upload",
            "--user",
            USER,
            "--project",
            "Scoped_Ok",
            "--expires",
            "1d",
            "--label",
            "scoped",
        ],
    );
    let scoped = scoped.trim().to_string();
    node.upload_ok("pypi", &scoped, &Upload::of(&wheel("scoped-ok", "1.0")));

    let elsewhere = wheel("scoped-elsewhere", "1.0");
    let before = node.store_snapshot();
    let resp = node.upload(
        "pypi",
        &Auth::Basic(scoped.clone()),
        &Upload::of(&elsewhere),
    );
    assert_eq!(resp.status().as_u16(), 403);
    assert!(resp.text().unwrap().contains("scoped to other projects"));
    node.assert_nothing_stored(&before, "pypi", "scoped-elsewhere", &elsewhere.filename);

    let brief = hoard_admin(
        &node,
        &[
            "token",
            "create",
            "--repo",
            "pypi",
            "--perm",
            "upload",
            "--expires",
            "1s",
        ],
    );
    std::thread::sleep(Duration::from_millis(1500));
    let resp = node.upload(
        "pypi",
        &Auth::Basic(brief.trim().to_string()),
        &Upload::of(&wheel("too-late", "1.0")),
    );
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.text().unwrap().contains("expired"));

    // Users are listed without their hashes; a removed user's tokens die
    // with the account, and a new account of the same name does not
    // revive them.
    let users = hoard_admin(&node, &["user", "list"]);
    assert!(
        users.contains(USER) && users.contains("argon2id"),
        "{users}"
    );
    assert!(
        !users.contains("$argon2"),
        "user list shows a hash: {users}"
    );
    let listing = hoard_admin(&node, &["token", "list"]);
    assert!(
        listing.contains("scoped") && listing.contains(USER),
        "{listing}"
    );
    hoard_admin(&node, &["user", "remove", USER]);
    node.add_user(USER, PASSWORD);
    let resp = node.upload(
        "pypi",
        &Auth::Basic(scoped),
        &Upload::of(&wheel("scoped-ok", "2.0")),
    );
    assert_eq!(resp.status().as_u16(), 403);
}

#[test]
fn the_audit_trail_shows_who_did_what_without_secrets() {
    let node = Node::start_default();
    node.add_user(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let file = wheel("audited", "1.0").write_to(dir.path());
    let out = twine_as(&node, USER, PASSWORD, &file);
    assert!(out.status.success(), "{}", all(&out));
    let secret = hoard_admin(
        &node,
        &[
            "token", "create", "--repo", "pypi", "--perm", "upload", "--label", "ci-bot",
        ],
    );
    let secret = secret.trim();
    let id = token_id(&node, "ci-bot");
    hoard_admin(&node, &["token", "revoke", &id]);

    let trail = hoard_admin(&node, &["audit", "--since", "1h"]);
    for want in [
        "user alice added",
        "audited-1.0-py3-none-any.whl",
        "ci-bot",
        "revoked",
        "n1",
    ] {
        assert!(
            trail.contains(want),
            "the audit trail lacks {want:?}:\n{trail}"
        );
    }
    let hash = hoard_testkit::sha256_hex(secret.as_bytes());
    assert!(
        !trail.contains(secret) && !trail.contains(&hash) && !trail.contains("argon2"),
        "the audit trail shows a secret or a hash:\n{trail}"
    );
    // Filters: by actor (the user), by repository, and as JSON lines.
    let mine = hoard_admin(&node, &["audit", "--actor", USER, "--json"]);
    let entries: Vec<serde_json::Value> = mine
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(!entries.is_empty());
    assert!(
        entries
            .iter()
            .all(|e| e["user"] == USER || e["actor"] == USER),
        "{mine}"
    );
    assert!(entries
        .iter()
        .any(|e| e["kind"] == "file_added" && e["repo"] == "pypi-local"));
    let local = hoard_admin(&node, &["audit", "--repo", "pypi-local", "--json"]);
    assert!(
        local.lines().all(|l| l.contains("\"repo\":\"pypi-local\"")),
        "{local}"
    );
    // A date in the future finds nothing.
    let none = hoard_admin(&node, &["audit", "--since", "2999-01-01", "--json"]);
    assert!(none.trim().is_empty(), "{none}");

    // Only admins read it.
    assert_eq!(node.get("/+audit").status().as_u16(), 401);
    let reader = node.create_token("pypi", "read");
    let resp = node
        .http()
        .get(format!("{}/+audit", node.url()))
        .bearer_auth(&reader)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
}
