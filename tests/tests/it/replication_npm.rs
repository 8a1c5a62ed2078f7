//! npm through replicas (issue 4): a publish sent to a replica reaches the
//! primary, whether the replica redirects (npm follows the 307) or proxies,
//! and the replica then serves the new version for installs.

use std::time::Duration;

use hoard_testkit::cluster::{status_of, wait_applied};
use hoard_testkit::npm::{npm_opts, Npm};
use hoard_testkit::{Cluster, NodeOpts};

const CONVERGE: Duration = Duration::from_secs(60);

fn versions_on(npm: &Npm, pkg: &str) -> Vec<String> {
    npm.versions(pkg, &[])
}

#[test]
fn npm_publish_through_a_redirecting_replica_reaches_the_primary() {
    let c = Cluster::start_with(npm_opts(false), 1, false, |_, o: NodeOpts| o);
    let (p, r) = (&c.primary, &c.replicas[0]);
    let token = p.create_token("npm", "upload");
    // npm sends a token only to the registry it was configured for: the
    // redirect target (the primary) needs its own line.
    let mut npm = Npm::with_token(r, &token);
    let primary_line = format!("{}:_authToken={token}\n", Npm::new(p).nerf);
    let mut config = npm.userconfig_text();
    config.push_str(&primary_line);
    std::fs::write(npm.userconfig(), config).unwrap();

    let out = npm.publish("via-redirect", "1.0.0", &[]);
    assert!(
        out.success(),
        "npm publish through a redirecting replica: {}",
        out.all()
    );
    let primary_serial = status_of(p).unwrap()["applied_serial"].as_u64().unwrap();
    wait_applied(r, primary_serial, CONVERGE);
    assert_eq!(versions_on(&Npm::new(p), "via-redirect"), vec!["1.0.0"]);
    assert_eq!(versions_on(&npm, "via-redirect"), vec!["1.0.0"]);

    // And it installs from the replica, tarball URLs pointing at the replica.
    npm.fresh_cache();
    let project = npm.project();
    npm.ok(&project, &["install", "via-redirect"]);
    let lock = std::fs::read_to_string(project.join("package-lock.json")).unwrap();
    assert!(
        lock.contains(&format!(
            "{}via-redirect/-/via-redirect-1.0.0.tgz",
            npm.registry
        )),
        "lock file does not point at the replica:\n{lock}"
    );
}

#[test]
fn npm_publish_and_dist_tag_through_a_proxying_replica_are_visible_there_at_once() {
    let c = Cluster::start_with(npm_opts(false), 1, false, |_, o: NodeOpts| {
        o.config("replica_writes = \"proxy\"")
    });
    let (p, r) = (&c.primary, &c.replicas[0]);
    let token = p.create_token("npm", "upload");
    let npm = Npm::with_token(r, &token);

    for v in ["1.0.0", "2.0.0"] {
        let out = npm.publish("via-proxy", v, &[]);
        assert!(
            out.success(),
            "npm publish {v} through a proxying replica: {}",
            out.all()
        );
    }
    let dir = npm.root().to_path_buf();
    npm.ok(&dir, &["dist-tag", "add", "via-proxy@1.0.0", "stable"]);
    // The replica answered only once it had applied the write: no waiting.
    assert_eq!(versions_on(&npm, "via-proxy"), vec!["1.0.0", "2.0.0"]);
    let tags = npm.ok(&dir, &["dist-tag", "ls", "via-proxy"]);
    assert!(tags.contains("stable: 1.0.0"), "{tags}");
    assert_eq!(
        versions_on(&Npm::new(p), "via-proxy"),
        vec!["1.0.0", "2.0.0"]
    );
}
