//! The real npm client (the one installed on the machine) against an npm
//! repository of a hoard node: publish, dist-tags, install with a lockfile,
//! view, deprecate, search, restarts, the point-in-time view, login and
//! audit. Each test has its own node and its own npm environment (fresh
//! userconfig and cache, pointed at the node only).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hoard_testkit::npm::{
    json_error, node_eval, npm_tarball, publish_doc, put_raw, registry_at, sri_sha512, Npm,
    NpmOutput, NPM_REPO, PASSWORD, USER,
};
use hoard_testkit::Node;
use serde_json::Value;

const PKG: &str = "hoard-widget";
const SCOPED: &str = "@hoardtest/gadget";
const KEYWORD: &str = "hoardwidgetkeyword";

fn start(allow_unpublish: bool) -> Node {
    Node::start(hoard_testkit::npm::npm_opts(allow_unpublish))
}

/// A node, an upload token for its npm repository, and an npm environment
/// that uses it.
fn start_with_npm() -> (Node, Npm) {
    let node = start(false);
    let token = node.create_token(NPM_REPO, "upload");
    let npm = Npm::with_token(&node, &token);
    (node, npm)
}

/// GET `url` (a tarball) from the node: 200, and its bytes.
fn fetch(node: &Node, url: &str) -> Vec<u8> {
    let resp = node
        .http()
        .get(url)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let bytes = resp.bytes().expect("body").to_vec();
    assert_eq!(
        status,
        200,
        "GET {url}: {}",
        String::from_utf8_lossy(&bytes)
    );
    bytes
}

/// The full packument, as JSON (via reqwest).
fn packument(node: &Node, name: &str) -> Value {
    let path = format!("/{NPM_REPO}/{}", name.replace('/', "%2f"));
    let resp = node.get(&path);
    assert_eq!(resp.status().as_u16(), 200, "GET {path}");
    resp.json().expect("packument JSON")
}

/// version → dist.integrity of the packument, after checking that every
/// version's tarball, fetched from its `dist.tarball` URL, has that
/// integrity and that `dist.shasum` is its sha1.
fn checked_integrities(node: &Node, name: &str) -> BTreeMap<String, String> {
    let doc = packument(node, name);
    let mut out = BTreeMap::new();
    for (version, manifest) in doc["versions"].as_object().expect("versions") {
        let dist = &manifest["dist"];
        let url = dist["tarball"].as_str().expect("dist.tarball");
        assert!(
            url.starts_with(&format!("{}/{NPM_REPO}/", node.url())),
            "{name}@{version}: dist.tarball {url} is not on the node"
        );
        let bytes = fetch(node, url);
        let integrity = dist["integrity"].as_str().expect("dist.integrity");
        assert_eq!(integrity, sri_sha512(&bytes), "{name}@{version} integrity");
        assert_eq!(
            dist["shasum"].as_str(),
            Some(hoard_testkit::npm::sha1_hex(&bytes).as_str()),
            "{name}@{version} shasum"
        );
        out.insert(version.clone(), integrity.to_string());
    }
    out
}

/// `node` in `project`: each package's `version`, space-separated.
fn require_versions(project: &Path, names: &[&str]) -> String {
    let script = names
        .iter()
        .map(|n| format!("require({n:?}).version"))
        .collect::<Vec<_>>()
        .join(", ");
    node_eval(project, &format!("[{script}].join(' ')"))
}

/// The `package-lock.json` entry of `name`: checks that it has `version`,
/// that `resolved` is under `registry`, and that `integrity` is the sha512
/// of the bytes that the node serves at `resolved`. Returns the integrity.
fn check_lock_entry(
    node: &Node,
    project: &Path,
    name: &str,
    version: &str,
    registry: &str,
) -> String {
    let lock: Value =
        serde_json::from_slice(&std::fs::read(project.join("package-lock.json")).unwrap())
            .expect("package-lock.json is JSON");
    let entry = &lock["packages"][format!("node_modules/{name}")];
    assert_eq!(entry["version"], version, "lock entry of {name}: {entry}");
    let resolved = entry["resolved"]
        .as_str()
        .unwrap_or_else(|| panic!("no resolved URL for {name}: {entry}"));
    assert!(
        resolved.starts_with(registry),
        "{name} resolved to {resolved}, not under {registry}"
    );
    let integrity = entry["integrity"].as_str().expect("integrity");
    let bytes = fetch(node, resolved);
    assert_eq!(
        integrity,
        sri_sha512(&bytes),
        "the lockfile's integrity of {name} vs the served tarball"
    );
    integrity.to_string()
}

/// `npm dist-tag ls PKG` as a map.
fn dist_tags(npm: &Npm, pkg: &str) -> BTreeMap<String, String> {
    npm.ok(npm.root(), &["dist-tag", "ls", pkg])
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(t, v)| (t.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(t, v)| (t.to_string(), v.to_string()))
        .collect()
}

/// `npm view PKG@V deprecated` (empty when not deprecated).
fn deprecated(npm: &Npm, spec: &str) -> String {
    npm.ok(npm.root(), &["view", spec, "deprecated"])
        .trim()
        .to_string()
}

#[test]
fn npm_publish_dist_tag_and_install_with_lockfile() {
    let (node, mut npm) = start_with_npm();
    for v in ["1.0.0", "2.0.0", "3.0.0"] {
        let out = npm.publish(PKG, v, &[KEYWORD]);
        assert!(out.all().contains(&format!("+ {PKG}@{v}")), "{out}");
    }
    for v in ["1.0.0", "1.1.0"] {
        npm.publish(SCOPED, v, &[]);
    }
    let out = npm.ok(
        npm.root(),
        &["dist-tag", "add", &format!("{PKG}@2.0.0"), "beta"],
    );
    assert!(out.contains(&format!("+beta: {PKG}@2.0.0")), "{out}");

    let project = npm.project();
    npm.ok(&project, &["install", &format!("{PKG}@beta"), SCOPED]);
    assert_eq!(require_versions(&project, &[PKG, SCOPED]), "2.0.0 1.1.0");
    let registry = npm.registry.clone();
    let a = check_lock_entry(&node, &project, PKG, "2.0.0", &registry);
    let b = check_lock_entry(&node, &project, SCOPED, "1.1.0", &registry);
    // The scoped packument under both spellings.
    for path in [
        "@hoardtest%2fgadget",
        "@hoardtest/gadget",
        "@hoardtest%2Fgadget",
    ] {
        let resp = node.get(&format!("/{NPM_REPO}/{path}"));
        assert_eq!(resp.status().as_u16(), 200, "GET /{NPM_REPO}/{path}");
        let doc: Value = resp.json().expect("packument");
        assert_eq!(doc["name"], SCOPED, "GET /{NPM_REPO}/{path}");
    }
    // The same integrity as the packuments announce.
    assert_eq!(checked_integrities(&node, PKG)["2.0.0"], a);
    assert_eq!(checked_integrities(&node, SCOPED)["1.1.0"], b);

    // `npm ci` from the lockfile alone, with an empty cache.
    npm.fresh_cache();
    std::fs::remove_dir_all(project.join("node_modules")).unwrap();
    npm.ok(&project, &["ci"]);
    assert_eq!(require_versions(&project, &[PKG, SCOPED]), "2.0.0 1.1.0");
}

#[test]
fn npm_view_dist_tags_deprecate_and_search() {
    let (node, npm) = start_with_npm();
    for v in ["1.0.0", "2.0.0", "3.0.0"] {
        npm.publish(PKG, v, &[KEYWORD]);
    }
    npm.publish(SCOPED, "1.0.0", &[]);
    let root = npm.root();

    assert_eq!(npm.versions(PKG, &[]), ["1.0.0", "2.0.0", "3.0.0"]);
    let plain = npm.ok(root, &["view", PKG, "versions"]);
    for v in ["1.0.0", "2.0.0", "3.0.0"] {
        assert!(plain.contains(v), "npm view {PKG} versions: {plain}");
    }

    npm.ok(root, &["dist-tag", "add", &format!("{PKG}@2.0.0"), "beta"]);
    assert_eq!(
        dist_tags(&npm, PKG),
        tags(&[("beta", "2.0.0"), ("latest", "3.0.0")])
    );
    npm.ok(root, &["dist-tag", "rm", PKG, "beta"]);
    assert_eq!(dist_tags(&npm, PKG), tags(&[("latest", "3.0.0")]));

    let message = "1.0.0 has a bug: use 3.x";
    let before = node.serial();
    npm.ok(root, &["deprecate", &format!("{PKG}@1.0.0"), message]);
    assert!(node.serial() > before, "npm deprecate recorded no event");
    assert_eq!(deprecated(&npm, &format!("{PKG}@1.0.0")), message);
    assert_eq!(deprecated(&npm, &format!("{PKG}@2.0.0")), "");
    npm.ok(root, &["deprecate", &format!("{PKG}@1.0.0"), ""]);
    assert_eq!(deprecated(&npm, &format!("{PKG}@1.0.0")), "");

    let found: Value = serde_json::from_str(&npm.ok(root, &["search", "--json", KEYWORD]))
        .expect("npm search --json");
    let names: Vec<&str> = found
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, [PKG], "npm search {KEYWORD}: {found}");
    assert_eq!(found[0]["version"], "3.0.0");
    let table = npm.ok(root, &["search", "gadget"]);
    assert!(table.contains(SCOPED), "npm search gadget: {table}");
    let none = npm.ok(root, &["search", "nosuchthinganywhere"]);
    assert!(
        !none.contains(PKG) && !none.contains(SCOPED),
        "npm search nosuchthinganywhere: {none}"
    );
}

/// What a client sees of the package, checked after each restart.
fn check_state(node: &Node, npm: &mut Npm, integrities: &BTreeMap<String, String>, legacy: bool) {
    npm.fresh_cache();
    assert_eq!(npm.versions(PKG, &[]), ["1.0.0", "2.0.0", "3.0.0"]);
    let mut expected = tags(&[("beta", "2.0.0"), ("latest", "3.0.0")]);
    if legacy {
        expected.insert("legacy".into(), "1.0.0".into());
    }
    assert_eq!(dist_tags(npm, PKG), expected);
    assert_eq!(deprecated(npm, &format!("{PKG}@1.0.0")), "do not use 1.0.0");
    assert_eq!(&checked_integrities(node, PKG), integrities);
    let project = npm.project();
    npm.ok(&project, &["install", &format!("{PKG}@beta")]);
    let registry = npm.registry.clone();
    let integrity = check_lock_entry(node, &project, PKG, "2.0.0", &registry);
    assert_eq!(integrity, integrities["2.0.0"]);
}

#[test]
fn npm_state_survives_graceful_restart_and_kill9() {
    let (mut node, mut npm) = start_with_npm();
    for v in ["1.0.0", "2.0.0", "3.0.0"] {
        npm.publish(PKG, v, &[KEYWORD]);
    }
    let root = npm.root().to_path_buf();
    npm.ok(&root, &["dist-tag", "add", &format!("{PKG}@2.0.0"), "beta"]);
    npm.ok(
        &root,
        &["deprecate", &format!("{PKG}@1.0.0"), "do not use 1.0.0"],
    );
    let integrities = checked_integrities(&node, PKG);
    assert_eq!(integrities.len(), 3);
    let serial = node.serial();

    let (graceful, status) = node.stop();
    assert!(graceful, "the node did not stop on SIGTERM ({status})");
    node.restart();
    assert_eq!(node.serial(), serial, "serial after a graceful restart");
    check_state(&node, &mut npm, &integrities, false);

    // A change acknowledged just before a kill -9 survives it.
    npm.ok(
        &root,
        &["dist-tag", "add", &format!("{PKG}@1.0.0"), "legacy"],
    );
    let serial = node.serial();
    node.kill9();
    node.restart();
    assert_eq!(node.serial(), serial, "serial after kill -9");
    check_state(&node, &mut npm, &integrities, true);
}

#[test]
fn npm_point_in_time_registry() {
    let (node, mut npm) = start_with_npm();
    npm.publish(PKG, "1.0.0", &[]);
    let s1 = node.serial();
    npm.publish(PKG, "2.0.0", &[]);
    let s2 = node.serial();
    npm.publish(PKG, "3.0.0", &[]);
    assert!(s1 < s2 && s2 < node.serial());

    let at1 = registry_at(&node, s1);
    let at2 = registry_at(&node, s2);
    assert_eq!(npm.versions(PKG, &["--registry", &at1]), ["1.0.0"]);
    assert_eq!(npm.versions(PKG, &["--registry", &at2]), ["1.0.0", "2.0.0"]);
    assert_eq!(npm.versions(PKG, &[]), ["1.0.0", "2.0.0", "3.0.0"]);

    let project = npm.project();
    npm.ok(&project, &["install", PKG, "--registry", &at1]);
    assert_eq!(require_versions(&project, &[PKG]), "1.0.0");
    check_lock_entry(&node, &project, PKG, "1.0.0", &at1);

    // The view is read-only: a publish there (with a valid token) is
    // refused with npm's JSON error, and stores nothing.
    let token = node.create_token(NPM_REPO, "upload");
    let before = node.store_snapshot();
    let tarball = npm_tarball(PKG, "4.0.0", 0);
    let doc = publish_doc(&at1, PKG, "4.0.0", &tarball);
    let path = format!("/{NPM_REPO}/+at/{s1}/{PKG}");
    let resp = put_raw(&node, &path, Some(&token), doc.to_string().as_bytes());
    assert_eq!(resp.status, 405, "PUT {path}: {resp}");
    assert!(json_error(&resp).contains("read-only"), "{resp}");
    node.assert_nothing_stored(&before, NPM_REPO, PKG, "");
    assert_eq!(npm.versions(PKG, &[]), ["1.0.0", "2.0.0", "3.0.0"]);
}

/// A login in a pty that must be refused: npm exits non-zero and saves no
/// token.
fn refused_login(node: &Node, user: &str, password: &str) -> NpmOutput {
    let npm = Npm::new(node);
    let before = npm.userconfig_text();
    let out = npm.login_pty(user, password, &[]);
    assert!(!out.success(), "the login of {user:?} should fail: {out}");
    assert_eq!(
        npm.userconfig_text(),
        before,
        "a refused login saved: {out}"
    );
    assert!(!npm.userconfig_text().contains("_authToken"));
    out
}

#[test]
fn npm_login_and_whoami() {
    let node = start(false);
    let npm = Npm::new(&node);
    let out = npm.login_pty(USER, PASSWORD, &[]);
    assert!(out.success(), "{out}");
    assert!(out.all().contains("Logged in"), "{out}");
    let config = npm.userconfig_text();
    let prefix = format!("{}:_authToken=", npm.nerf);
    assert!(
        config
            .lines()
            .any(|l| l.starts_with(&prefix) && l.len() > prefix.len()),
        "no token saved in the userconfig: {config:?}\n{out}"
    );
    assert!(
        !out.all().contains(PASSWORD),
        "the password was echoed: {out}"
    );
    assert_eq!(npm.ok(npm.root(), &["whoami"]).trim(), USER);
    // The token is an upload token for the repository.
    npm.publish(PKG, "1.0.0", &[]);

    // The legacy flow directly.
    let legacy = Npm::new(&node);
    let out = legacy.login_pty(USER, PASSWORD, &["--auth-type=legacy"]);
    assert!(out.success(), "{out}");
    assert_eq!(legacy.ok(legacy.root(), &["whoami"]).trim(), USER);

    // `npm adduser` logs a configured user in too.
    let adduser = Npm::new(&node);
    let out = adduser.adduser_pty(USER, PASSWORD, "alice@example.invalid");
    assert!(out.success(), "{out}");
    assert_eq!(adduser.ok(adduser.root(), &["whoami"]).trim(), USER);

    let out = refused_login(&node, USER, "not-the-password");
    // npm shows its own text for a 401 (not the body's error).
    assert!(
        out.all().contains("E401") && out.all().contains("Incorrect or missing password"),
        "a wrong password: {out}"
    );
    let resp = node
        .http()
        .put(format!(
            "{}/{NPM_REPO}/-/user/org.couchdb.user:{USER}",
            node.url()
        ))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({
                "_id": format!("org.couchdb.user:{USER}"),
                "name": USER,
                "password": "not-the-password",
                "type": "user",
                "roles": [],
                "date": "2024-01-01T00:00:00.000Z",
            })
            .to_string(),
        )
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().expect("JSON error");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    let out = refused_login(&node, "mallory", PASSWORD);
    assert!(
        out.all().contains("403") && out.all().contains("self-registration is off"),
        "an unknown user: {out}"
    );

    // Self-registration is off for `npm adduser` as well.
    let stranger = Npm::new(&node);
    let out = stranger.adduser_pty("mallory", PASSWORD, "mallory@example.invalid");
    assert!(
        !out.success(),
        "npm adduser of a new user should fail: {out}"
    );
    assert!(out.all().contains("self-registration is off"), "{out}");
    assert!(!stranger.userconfig_text().contains("_authToken"));

    // No token: whoami fails.
    let anonymous = Npm::new(&node);
    let out = anonymous.fails(anonymous.root(), &["whoami"]);
    assert!(
        out.all().contains("401") || out.all().contains("ENEEDAUTH"),
        "{out}"
    );
}

#[test]
fn npm_audit_is_refused_promptly_and_install_still_works() {
    let (node, mut npm) = start_with_npm();
    npm.publish(PKG, "1.0.0", &[]);
    let project = npm.project();
    // With audit on: the install's audit requests get 404s, quietly.
    let out = npm.run(&project, &["install", PKG, "--audit"]);
    assert!(out.success(), "{out}");
    assert!(!out.all().contains("npm error"), "{out}");
    assert_eq!(require_versions(&project, &[PKG]), "1.0.0");

    let out = npm.fails(&project, &["audit"]);
    assert!(
        out.elapsed < Duration::from_secs(30),
        "npm audit took {:?}",
        out.elapsed
    );
    assert!(out.all().contains("not supported"), "{out}");

    for path in [
        "-/npm/v1/security/advisories/bulk",
        "-/npm/v1/security/audits/quick",
    ] {
        let resp = node
            .http()
            .post(format!("{}/{NPM_REPO}/{path}", node.url()))
            .header("content-type", "application/json")
            .body(format!("{{\"{PKG}\": [\"1.0.0\"]}}"))
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 404, "POST {path}");
        let body: Value = resp.json().expect("JSON");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("not supported")),
            "POST {path}: {body}"
        );
    }
}
