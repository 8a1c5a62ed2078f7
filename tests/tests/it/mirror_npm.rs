//! npm mirror repositories against a fixture upstream registry that
//! behaves like the public one (tarballs at absolute URLs on another port,
//! full and abbreviated packuments, ETags, dist-tags, deprecations): the
//! real npm client installs through a mirror and through the default
//! virtual `npm`, `npm ci` with the upstream down, integrity mismatches,
//! hostile packuments, an outage, single-flight, revalidation, a replica
//! filling its cache by way of the leader, shadowing in a virtual
//! repository, and `hoard prefetch` of a `package-lock.json`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use hoard_testkit::cluster::wait_applied;
use hoard_testkit::node::describe_failure;
use hoard_testkit::npm::{node_eval, sri_sha512, Npm};
use hoard_testkit::npm_upstream::{
    DeclaredDigests, Fault, NpmFixtureUpstream, NpmPackageFault, NpmVersionOpts, BAD_VERSION,
};
use hoard_testkit::{sha256_hex, Node, NodeOpts, RepoSpec};
use serde_json::Value;

use crate::mirror_pypi::assert_stale_because_of;

const TOP: &str = "top-pkg";
const DEP_A: &str = "dep-a";
const SCOPED: &str = "@scope/dep-b";

/// An upstream with `top-pkg` 1.0.0, which needs `dep-a@^1.0.0` and the
/// scoped `@scope/dep-b@~0.3.0`; `dep-a` also has a 2.0.0 that nothing
/// installs.
fn upstream_with_top() -> NpmFixtureUpstream {
    upstream_and_tarballs().0
}

/// [`upstream_with_top`] and its tarballs by `name@version`.
fn upstream_and_tarballs() -> (NpmFixtureUpstream, BTreeMap<String, Vec<u8>>) {
    let up = NpmFixtureUpstream::start();
    let mut tarballs = BTreeMap::new();
    for (name, version, dependencies) in [
        (DEP_A, "1.0.0", vec![]),
        (DEP_A, "1.4.0", vec![]),
        (DEP_A, "2.0.0", vec![]),
        (SCOPED, "0.3.1", vec![(DEP_A, "*")]),
        (TOP, "1.0.0", vec![(DEP_A, "^1.0.0"), (SCOPED, "~0.3.0")]),
    ] {
        let t = up.add_package(name, version, &dependencies);
        tarballs.insert(format!("{name}@{version}"), t);
    }
    up.set_dist_tag(DEP_A, "latest", Some("1.4.0"));
    (up, tarballs)
}

fn mirror_node(up: &NpmFixtureUpstream, settings: &[&str]) -> Node {
    let mut repo = RepoSpec::npm_mirror("npm-remote", &[up.registry_url()]);
    for line in settings {
        repo = repo.with(line);
    }
    Node::start(NodeOpts::default().repo(repo))
}

fn registry_of(node: &Node, repo: &str) -> String {
    format!("{}/{repo}/", node.url())
}

/// `GET /{repo}/{name}` (the full packument): status, headers and JSON
/// (or the body as a string).
fn packument(node: &Node, repo: &str, name: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = node
        .http()
        .get(format!(
            "{}/{repo}/{}",
            node.url(),
            name.replace('/', "%2f")
        ))
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().unwrap();
    let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, headers, json)
}

fn versions(doc: &Value) -> Vec<String> {
    doc["versions"]
        .as_object()
        .unwrap_or_else(|| panic!("not a packument: {doc}"))
        .keys()
        .cloned()
        .collect()
}

fn tarball_url(doc: &Value, version: &str) -> String {
    doc["versions"][version]["dist"]["tarball"]
        .as_str()
        .unwrap_or_else(|| panic!("no tarball for {version} in {doc}"))
        .to_owned()
}

/// `node` in `project`: what each package exports (`name@version`).
fn required(project: &Path, names: &[&str]) -> String {
    let script = names
        .iter()
        .map(|n| format!("require({n:?})"))
        .collect::<Vec<_>>()
        .join(", ");
    node_eval(project, &format!("[{script}].join(' ')"))
}

fn lockfile(project: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(project.join("package-lock.json")).unwrap())
        .expect("package-lock.json is JSON")
}

/// A new project of `npm` with the package.json and package-lock.json of
/// `from`, for `npm ci`.
fn copy_of(npm: &mut Npm, from: &Path) -> std::path::PathBuf {
    let project = npm.project();
    for f in ["package.json", "package-lock.json"] {
        std::fs::copy(from.join(f), project.join(f)).unwrap();
    }
    project
}

const INSTALLED: &str = "top-pkg@1.0.0 dep-a@1.4.0 @scope/dep-b@0.3.1";

#[test]
fn npm_installs_through_a_mirror_and_npm_ci_works_with_the_upstream_down() {
    let (mut up, tarballs) = upstream_and_tarballs();
    let node = mirror_node(&up, &[]);
    let registry = registry_of(&node, "npm-remote");
    let mut npm = Npm::for_registry(&registry);
    let project = npm.project();
    npm.ok(&project, &["install", TOP]);
    assert_eq!(required(&project, &[TOP, DEP_A, SCOPED]), INSTALLED);

    // The lockfile names hoard's tarball URLs and the upstream's integrity.
    let lock = lockfile(&project);
    for (name, version) in [(TOP, "1.0.0"), (DEP_A, "1.4.0"), (SCOPED, "0.3.1")] {
        let entry = &lock["packages"][format!("node_modules/{name}")];
        let resolved = entry["resolved"].as_str().unwrap_or_default();
        assert!(resolved.starts_with(&registry), "{name}: {entry}");
        let upstream_bytes = &tarballs[&format!("{name}@{version}")];
        assert_eq!(entry["integrity"], sri_sha512(upstream_bytes), "{name}");
        let served = node.http().get(resolved).send().unwrap();
        assert_eq!(served.headers()["x-hoard-cache"], "hit", "{name}");
        assert_eq!(&served.bytes().unwrap()[..], &upstream_bytes[..], "{name}");
        assert_eq!(up.tarball_hits(name, version), 1, "{name}");
    }
    assert_eq!(up.tarball_hits(DEP_A, "2.0.0"), 0);

    // The upstream goes away: `npm ci` from the lockfile, with an empty
    // cache, installs the same tree from the mirror alone.
    up.stop();
    npm.fresh_cache();
    let offline = copy_of(&mut npm, &project);
    npm.ok(&offline, &["ci"]);
    assert_eq!(required(&offline, &[TOP, DEP_A, SCOPED]), INSTALLED);
    // And so does a fresh `npm install`, from the cached packuments.
    npm.fresh_cache();
    let again = npm.project();
    npm.ok(&again, &["install", TOP]);
    assert_eq!(required(&again, &[TOP, DEP_A, SCOPED]), INSTALLED);
}

#[test]
fn the_default_virtual_npm_installs_from_the_upstream_given_by_hoard_npm_upstream() {
    let up = upstream_with_top();
    let node = Node::start(NodeOpts::default().env("HOARD_NPM_UPSTREAM", &up.registry_url()));
    // A publish to the default `npm` lands in `npm-local`.
    let token = node.create_token("npm", "upload");
    let mut npm = Npm::with_token(&node, &token);
    npm.publish("own-tool", "0.1.0", &[]);
    let (status, _, local) = packument(&node, "npm-local", "own-tool");
    assert_eq!(status, 200, "{local}");
    assert_eq!(versions(&local), ["0.1.0"]);

    let project = npm.project();
    npm.ok(&project, &["install", TOP, "own-tool"]);
    assert_eq!(required(&project, &[TOP, DEP_A, SCOPED]), INSTALLED);
    assert_eq!(node_eval(&project, "require('own-tool').version"), "0.1.0");
    let lock = lockfile(&project);
    for name in [TOP, "own-tool"] {
        let resolved = lock["packages"][format!("node_modules/{name}")]["resolved"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(resolved.starts_with(&npm.registry), "{name}: {resolved}");
    }
    assert_eq!(up.packument_hits("own-tool"), 0, "hosted names stay local");
}

#[test]
fn upstream_tarballs_that_do_not_match_their_integrity_are_502_and_store_nothing() {
    let up = upstream_with_top();
    let old = npm_tarball_of("old-style", "1.0.0");
    up.add_version(
        "old-style",
        "1.0.0",
        old.clone(),
        NpmVersionOpts {
            digests: DeclaredDigests::ShasumOnly,
            ..NpmVersionOpts::default()
        },
    );
    let node = mirror_node(&up, &[]);
    let (_, _, doc) = packument(&node, "npm-remote", DEP_A);
    let url = tarball_url(&doc, "1.4.0");
    assert!(url.starts_with(&node.url()), "rewritten to hoard: {url}");
    up.set_tarballs_fault(Fault::WrongBytes);
    let before = node.store_snapshot();
    let resp = node.http().get(&url).send().unwrap();
    assert_eq!(resp.status().as_u16(), 502);
    let body = resp.text().unwrap();
    assert!(body.contains("do not match"), "{body}");
    node.assert_nothing_stored(&before, "npm-remote", DEP_A, "");
    let upstream_url = up.tarball_url(DEP_A, "1.4.0");
    assert!(
        node.log()
            .lines()
            .any(|l| l.contains("do not match the listed digest") && l.contains(&upstream_url)),
        "the refusal is logged with the upstream URL {upstream_url}"
    );
    // A package that declares only a sha1 is checked against it.
    let (_, _, doc) = packument(&node, "npm-remote", "old-style");
    let old_url = tarball_url(&doc, "1.0.0");
    let before = node.store_snapshot();
    assert_eq!(node.http().get(&old_url).send().unwrap().status(), 502);
    node.assert_nothing_stored(&before, "npm-remote", "old-style", "");

    // Once the upstream serves the right bytes, both are fetched and kept.
    up.set_tarballs_fault(Fault::None);
    let resp = node.http().get(&url).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["x-hoard-cache"], "miss");
    let bytes = node.http().get(&old_url).send().unwrap().bytes().unwrap();
    assert_eq!(bytes, old);
    let (_, _, doc) = packument(&node, "npm-remote", "old-style");
    assert_eq!(
        doc["versions"]["1.0.0"]["dist"]["integrity"],
        sri_sha512(&old),
        "hoard adds the sha512 that it checked"
    );
}

fn npm_tarball_of(name: &str, version: &str) -> Vec<u8> {
    hoard_testkit::npm_upstream::npm_package_tarball(name, version, &Default::default())
}

#[test]
fn hostile_packument_entries_are_refused_and_logged_and_the_rest_is_served() {
    let up = upstream_with_top();
    for name in ["other-scheme", "no-digests", "bad-version"] {
        up.add_package(name, "1.0.0", &[]);
        up.add_package(name, "1.1.0", &[]);
    }
    up.set_package_fault("other-scheme", NpmPackageFault::OtherSchemeTarball);
    up.set_package_fault("no-digests", NpmPackageFault::NoDigests);
    up.set_package_fault("bad-version", NpmPackageFault::BadVersion);
    up.set_package_fault(DEP_A, NpmPackageFault::MalformedPackument);
    let node = mirror_node(&up, &[]);

    for (name, reason) in [("other-scheme", "not http(s)"), ("no-digests", "neither")] {
        let (status, _, doc) = packument(&node, "npm-remote", name);
        assert_eq!(status, 200, "{name}: {doc}");
        assert_eq!(versions(&doc), ["1.1.0"], "{name}");
        assert_eq!(doc["dist-tags"]["latest"], "1.1.0", "{name}");
        assert!(
            node.log()
                .lines()
                .any(|l| l.contains("upstream npm version refused")
                    && l.contains(reason)
                    && l.contains(&up.packument_url(name))),
            "{name}: the refusal is logged with its reason ({reason}) and URL"
        );
        let tarball = node.http().get(tarball_url(&doc, "1.1.0")).send().unwrap();
        assert_eq!(tarball.status().as_u16(), 200, "{name}");
    }
    let (status, _, doc) = packument(&node, "npm-remote", "bad-version");
    assert_eq!(status, 200, "{doc}");
    assert_eq!(versions(&doc), ["1.0.0", "1.1.0"]);
    assert!(doc["time"].get(BAD_VERSION).is_none(), "{doc}");
    assert!(node.log().contains(BAD_VERSION));

    let (status, _, body) = packument(&node, "npm-remote", DEP_A);
    assert_eq!(status, 502, "{body}");
    assert!(node.log().contains("upstream packument refused"));
    // npm says what went wrong.
    let npm = Npm::for_registry(&registry_of(&node, "npm-remote"));
    let out = npm.fails(
        npm.root(),
        &["view", DEP_A, "versions", "--fetch-retries=0"],
    );
    assert!(out.all().contains("502"), "{out}");
}

#[test]
fn an_upstream_outage_serves_the_cached_packument_marked_stale() {
    let up = upstream_with_top();
    let node = mirror_node(&up, &["ttl_secs = 0", "timeout_secs = 1"]);
    let (status, _, cached) = packument(&node, "npm-remote", TOP);
    assert_eq!(status, 200, "{cached}");
    let url = tarball_url(&cached, "1.0.0");
    assert_eq!(node.http().get(&url).send().unwrap().status(), 200);

    for fault in [Fault::ServerError, Fault::Hang, Fault::RedirectLoop] {
        up.set_fault(fault);
        let (status, headers, doc) = packument(&node, "npm-remote", TOP);
        assert_eq!(status, 200, "{fault:?}: {doc}");
        assert_eq!(doc["versions"], cached["versions"], "{fault:?}");
        assert_stale_because_of(&headers, fault);
        // A cached tarball is served as it is.
        assert_eq!(node.http().get(&url).send().unwrap().status(), 200);
        // A package never fetched cannot be served, and is not remembered
        // as missing either.
        let (status, _, body) = packument(&node, "npm-remote", SCOPED);
        assert_eq!(status, 502, "{fault:?}: {body}");
    }
    up.set_fault(Fault::None);
    let (status, headers, _) = packument(&node, "npm-remote", SCOPED);
    assert_eq!(
        status, 200,
        "after the outage, the failures were not cached"
    );
    assert!(headers.get("x-hoard-stale").is_none());
}

#[test]
fn revalidation_refreshes_dist_tags_and_deprecations_and_records_only_what_changed() {
    let up = upstream_with_top();
    let node = mirror_node(&up, &["ttl_secs = 0"]);
    let (_, _, doc) = packument(&node, "npm-remote", DEP_A);
    assert_eq!(doc["dist-tags"]["latest"], "1.4.0");
    let serial = node.serial();
    let hits = up.packument_hits(DEP_A);
    let (_, _, again) = packument(&node, "npm-remote", DEP_A);
    assert_eq!(again["versions"], doc["versions"]);
    assert_eq!(up.packument_hits(DEP_A), hits + 1, "revalidated");
    assert_eq!(
        node.serial(),
        serial,
        "a revalidation without news records nothing"
    );

    // Upstream: a new version under `next`, `latest` moved, a deprecation.
    up.add_version(
        DEP_A,
        "3.0.0-rc.1",
        npm_tarball_of(DEP_A, "3.0.0-rc.1"),
        NpmVersionOpts {
            tag: Some("next".into()),
            ..NpmVersionOpts::default()
        },
    );
    up.set_dist_tag(DEP_A, "latest", Some("2.0.0"));
    up.deprecate(DEP_A, "1.0.0", Some("use 2.x"));
    let (_, _, doc) = packument(&node, "npm-remote", DEP_A);
    assert_eq!(doc["dist-tags"]["latest"], "2.0.0", "{doc}");
    assert_eq!(doc["dist-tags"]["next"], "3.0.0-rc.1", "{doc}");
    assert_eq!(doc["versions"]["1.0.0"]["deprecated"], "use 2.x");
    assert!(node.serial() > serial);

    // npm sees the same.
    let npm = Npm::for_registry(&registry_of(&node, "npm-remote"));
    let tags = npm.view_json(&[DEP_A, "dist-tags"]);
    assert_eq!(tags["next"], "3.0.0-rc.1", "{tags}");
    assert_eq!(tags["latest"], "2.0.0", "{tags}");
}

#[test]
fn fifty_concurrent_first_downloads_of_a_tarball_cause_one_upstream_fetch() {
    let up = upstream_with_top();
    let node = Arc::new(mirror_node(&up, &[]));
    let (_, _, doc) = packument(&node, "npm-remote", SCOPED);
    let url = tarball_url(&doc, "0.3.1");
    up.set_latency(Duration::from_millis(300));
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
    let want = doc["versions"]["0.3.1"]["dist"]["integrity"].clone();
    for t in threads {
        let (status, bytes) = t.join().unwrap();
        assert_eq!(status, 200);
        assert_eq!(Value::String(sri_sha512(&bytes)), want);
    }
    assert_eq!(up.tarball_hits(SCOPED, "0.3.1"), 1);
}

#[test]
fn a_replica_answers_a_packument_and_tarball_miss_by_way_of_the_leader() {
    let up = upstream_with_top();
    let primary = mirror_node(&up, &[]);
    let replica = Node::start(NodeOpts::replica("r1", &[primary.grpc_addr()]));
    wait_applied(&replica, primary.serial(), Duration::from_secs(30));

    let (status, _, doc) = packument(&replica, "npm-remote", SCOPED);
    assert_eq!(status, 200, "{doc}");
    assert_eq!(up.packument_hits(SCOPED), 1);
    let url = tarball_url(&doc, "0.3.1");
    assert!(url.starts_with(&replica.url()), "{url}");
    let bytes = replica.http().get(&url).send().unwrap().bytes().unwrap();
    assert_eq!(
        Value::String(sri_sha512(&bytes)),
        doc["versions"]["0.3.1"]["dist"]["integrity"]
    );
    assert_eq!(up.tarball_hits(SCOPED, "0.3.1"), 1);
    let on_primary = primary
        .http()
        .get(url.replace(&replica.url(), &primary.url()))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(sha256_hex(&on_primary), sha256_hex(&bytes));
    assert_eq!(up.tarball_hits(SCOPED, "0.3.1"), 1);

    // npm installs through the replica; the rest is filled the same way.
    let mut npm = Npm::for_registry(&registry_of(&replica, "npm-remote"));
    let project = npm.project();
    npm.ok(&project, &["install", TOP]);
    assert_eq!(required(&project, &[TOP, DEP_A, SCOPED]), INSTALLED);
    assert_eq!(up.tarball_hits(TOP, "1.0.0"), 1);
}

#[test]
fn a_virtual_npm_repository_serves_hosted_and_mirrored_packages_and_hosted_names_hide_mirrored_ones(
) {
    let up = upstream_with_top();
    // The public registry has a package of the same name as an internal
    // one, at a tempting version (dependency confusion).
    up.add_package("internal-lib", "99.0.0", &[]);
    let node = Node::start(
        NodeOpts::default()
            .repo(RepoSpec::npm("npm-local"))
            .repo(RepoSpec::npm_mirror("npm-remote", &[up.registry_url()]))
            .repo(
                RepoSpec::virtual_of("npm", "npm", &["npm-local", "npm-remote"])
                    .with("upload_to = \"npm-local\""),
            )
            .repo(
                RepoSpec::virtual_of("npm", "merged", &["npm-local", "npm-remote"])
                    .with("merge_mirrored = true"),
            ),
    );
    let token = node.create_token("npm", "upload");
    let mut npm = Npm::with_token(&node, &token);
    npm.publish("internal-lib", "1.0.0", &[]);

    let (_, _, local) = packument(&node, "npm-local", "internal-lib");
    assert_eq!(versions(&local), ["1.0.0"]);
    let (_, _, seen) = packument(&node, "npm", "internal-lib");
    assert_eq!(versions(&seen), ["1.0.0"]);
    assert_eq!(seen["dist-tags"]["latest"], "1.0.0");
    assert_eq!(
        up.packument_hits("internal-lib"),
        0,
        "a hosted name is not even looked up upstream"
    );
    let (_, _, merged) = packument(&node, "merged", "internal-lib");
    assert_eq!(versions(&merged), ["1.0.0", "99.0.0"]);

    // npm installs hosted and mirrored packages through the one URL, and
    // gets the internal build.
    let project = npm.project();
    npm.ok(&project, &["install", TOP, "internal-lib"]);
    assert_eq!(required(&project, &[TOP, DEP_A, SCOPED]), INSTALLED);
    assert_eq!(
        node_eval(&project, "require('internal-lib/package.json').version"),
        "1.0.0"
    );
    assert_eq!(up.tarball_hits("internal-lib", "99.0.0"), 0);
}

#[test]
fn prefetch_of_a_package_lock_lets_npm_ci_run_with_the_upstream_down() {
    let mut up = upstream_with_top();
    let node = mirror_node(&up, &[]);
    let registry = registry_of(&node, "npm-remote");
    let mut npm = Npm::for_registry(&registry);
    // The lockfile a developer commits, resolved through hoard; making it
    // fetches packuments only.
    let project = npm.project();
    npm.ok(&project, &["install", "--package-lock-only", TOP]);
    assert_eq!(up.tarball_hits(TOP, "1.0.0"), 0);
    let lock = project.join("package-lock.json");
    let prefetch = || {
        node.cli(&[
            "prefetch",
            "--url",
            &node.url(),
            "--repo",
            "npm-remote",
            lock.to_str().unwrap(),
        ])
    };
    let out = prefetch();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("prefetched 3 package(s) into npm-remote: 3 file(s) fetched, 0 already cached, 0 failed"),
        "{stdout}"
    );
    assert!(stderr.contains("[1/3]"), "progress: {stderr}");
    for (name, version) in [(TOP, "1.0.0"), (DEP_A, "1.4.0"), (SCOPED, "0.3.1")] {
        assert_eq!(up.tarball_hits(name, version), 1, "{name}");
    }
    let again = String::from_utf8_lossy(&prefetch().stdout).into_owned();
    assert!(
        again.contains("0 file(s) fetched, 3 already cached"),
        "{again}"
    );
    // On a terminal (a pty from script(1)), a progress bar as well.
    let on_tty = run_on_tty(
        &node,
        &[
            "prefetch",
            "--url",
            &node.url(),
            "--repo",
            "npm-remote",
            lock.to_str().unwrap(),
        ],
    );
    assert!(
        on_tty.contains("prefetch [") && on_tty.contains("/3"),
        "no progress bar on a terminal: {on_tty:?}"
    );
    assert!(on_tty.contains("3 already cached"), "{on_tty:?}");

    // The upstream is gone: `npm ci`, checking every integrity, installs.
    up.stop();
    npm.fresh_cache();
    let offline = copy_of(&mut npm, &project);
    npm.ok(&offline, &["ci"]);
    assert_eq!(required(&offline, &[TOP, DEP_A, SCOPED]), INSTALLED);

    // A lockfile whose integrity the mirror does not serve is named, and
    // the run fails.
    let mut tampered = lockfile(&project);
    tampered["packages"]["node_modules/dep-a"]["integrity"] =
        Value::String(sri_sha512(b"something else"));
    let bad = npm.root().join("tampered-lock.json");
    std::fs::write(&bad, serde_json::to_vec_pretty(&tampered).unwrap()).unwrap();
    let out = node.cli(&[
        "prefetch",
        "--url",
        &node.url(),
        "--repo",
        "npm-remote",
        bad.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("1 failed"), "{stdout}");
    assert!(stdout.contains("dep-a@1.4.0"), "{stdout}");
}

/// `hoard ARGS` on a pseudo-terminal (script(1)), as a person at a
/// terminal runs it: everything it wrote, escape sequences and all.
fn run_on_tty(node: &Node, args: &[&str]) -> String {
    let mut line = hoard_testkit::tools::hoard_bin().display().to_string();
    for a in args {
        line.push_str(&format!(" '{}'", a.replace('\'', "'\\''")));
    }
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qefc", &line, "/dev/null"])
        .current_dir(node.root())
        .stdin(std::process::Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HOARD_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd.output().expect("run script(1)");
    assert!(out.status.success(), "{}", describe_failure(&cmd, &out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
