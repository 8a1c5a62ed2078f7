//! Blobs in an S3-compatible bucket (`[blobs] kind = "s3"`), against a
//! real S3 service that the tests start: moto's server, from PyPI.

use std::path::Path;
use std::process::Command;

use hoard_testkit::artifacts::{module_name, normalize, WheelSpec};
use hoard_testkit::cluster::{self, upload};
use hoard_testkit::node::{describe_failure, output_text};
use hoard_testkit::npm::{npm_opts, Npm, NPM_REPO};
use hoard_testkit::s3::{S3Server, TEST_TIMEOUTS};
use hoard_testkit::{wheel, Node, NodeOpts, RepoSpec};

use crate::pypi_clients::{imported_version, pip_install_in_fresh_venv, twine_upload};

const BUCKET: &str = "hoard-dc1";

/// `opts` with its blobs in `bucket` of `s3` (`extra`: more `[blobs]`
/// keys), and the credentials in its environment.
fn with_s3_blobs(mut opts: NodeOpts, s3: &S3Server, bucket: &str, extra: &str) -> NodeOpts {
    // Before any table that the options already hold.
    let keys = format!("{TEST_TIMEOUTS}{extra}");
    opts.extra_config.insert(0, s3.blobs_config(bucket, &keys));
    for (k, v) in S3Server::credentials() {
        opts = opts.env(k, v);
    }
    opts
}

/// npm's repositories and a hosted PyPI repository `pypi`.
fn pypi_and_npm() -> NodeOpts {
    npm_opts(false).repo(RepoSpec {
        name: "pypi".into(),
        format: "pypi".into(),
        kind: "hosted".into(),
        anonymous_read: true,
        extra: Vec::new(),
    })
}

/// The keys under `blobs/` in the bucket, with their sizes.
fn blob_objects(s3: &S3Server, bucket: &str) -> Vec<(String, u64)> {
    s3.objects(bucket)
        .into_iter()
        .filter(|(key, _)| key.starts_with("blobs/"))
        .collect()
}

fn blob_key(sha: &str) -> String {
    format!("blobs/{}/{}/{sha}", &sha[0..2], &sha[2..4])
}

/// The URL of `filename` as the project's simple page links it.
fn file_url(node: &Node, project: &str, filename: &str) -> reqwest::Url {
    let page_url = format!("{}/pypi/simple/{project}/", node.url());
    let page = node.http().get(&page_url).send().unwrap().text().unwrap();
    let href = page
        .split('"')
        .find(|s| s.contains(filename))
        .unwrap_or_else(|| panic!("{filename} is not linked: {page}"));
    let href = href.split('#').next().unwrap();
    reqwest::Url::parse(&page_url).unwrap().join(href).unwrap()
}

fn files_in(dir: &Path) -> usize {
    walk(dir).len()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Done when: the PyPI and npm flows pass on a node whose blobs are in
/// the bucket; every blob is in the bucket at its address with its size,
/// none in the data dir; downloads (with Range and HEAD) stream from the
/// bucket; fsck lists and re-hashes the bucket and is clean.
#[test]
fn pypi_and_npm_flows_on_a_node_with_s3_blobs() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let opts = with_s3_blobs(pypi_and_npm(), &s3, BUCKET, "");
    let mut node = Node::start(opts);
    assert!(
        node.log().contains("s3 bucket hoard-dc1"),
        "the node says where its blobs are:\n{}",
        node.log()
    );

    // twine uploads a wheel and an sdist; pip installs.
    let token = node.create_token("pypi", "upload");
    let name = "S3_Backed.Pkg";
    let whl = WheelSpec::new(name, "1.0.0").build();
    let sd = hoard_testkit::sdist(name, "1.0.0");
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<_> = [&whl, &sd].iter().map(|a| a.write_to(dir.path())).collect();
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    let out = twine_upload(&node, &token, &refs);
    assert!(
        out.status.success(),
        "{}",
        describe_failure(&Command::new("twine"), &out)
    );
    let venv = dir.path().join("venv");
    pip_install_in_fresh_venv(&venv, &format!("{}/pypi/simple/", node.url()), name);
    assert_eq!(imported_version(&venv, &module_name(name)), "1.0.0");

    // Each file is in the bucket at its address, with its size.
    let objects = blob_objects(&s3, BUCKET);
    for a in [&whl, &sd] {
        let key = blob_key(&a.sha256());
        assert!(
            objects.contains(&(key.clone(), a.bytes.len() as u64)),
            "{key} ({} bytes) not in {objects:#?}",
            a.bytes.len()
        );
    }
    // The wheel's core metadata too; nothing in the data dir's blobs/,
    // and nothing left in tmp/.
    assert_eq!(objects.len(), 3, "{objects:#?}");
    assert_eq!(files_in(&node.data_dir().join("blobs")), 0);
    assert_eq!(files_in(&node.data_dir().join("tmp")), 0);

    // Downloads stream from the bucket: whole, a Range, and HEAD.
    let project = normalize(name);
    let url = file_url(&node, &project, &whl.filename);
    let http = node.http();
    let whole = http.get(url.clone()).send().unwrap();
    assert_eq!(whole.status().as_u16(), 200);
    assert_eq!(whole.bytes().unwrap().as_ref(), &whl.bytes[..]);
    let part = http
        .get(url.clone())
        .header("range", "bytes=10-19")
        .send()
        .unwrap();
    assert_eq!(part.status().as_u16(), 206);
    assert_eq!(part.bytes().unwrap().as_ref(), &whl.bytes[10..20]);
    let head = http.head(url).send().unwrap();
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        whl.bytes.len().to_string()
    );

    // npm publishes and installs.
    let npm_token = node.create_token(NPM_REPO, "upload");
    let mut npm = Npm::with_token(&node, &npm_token);
    let out = npm.publish("s3-widget", "1.0.0", &[]);
    assert!(out.all().contains("+ s3-widget@1.0.0"), "{out}");
    let project_dir = npm.project();
    npm.ok(&project_dir, &["install", "s3-widget"]);
    assert!(project_dir
        .join("node_modules/s3-widget/package.json")
        .is_file());
    assert_eq!(blob_objects(&s3, BUCKET).len(), 4);
    assert_eq!(files_in(&node.data_dir().join("blobs")), 0);

    // An online backup copies the blobs down from the bucket.
    let backup = tempfile::tempdir().unwrap();
    let to = backup.path().join("b");
    let admin = node.admin_token();
    let out = node.cli_env(
        &[
            "backup",
            "--url",
            &node.url(),
            "--token",
            &admin,
            "--to",
            to.to_str().unwrap(),
        ],
        &S3Server::credentials(),
    );
    let said = output_text(&out);
    assert!(out.status.success(), "hoard backup: {said}");
    assert!(said.contains("4 blobs"), "{said}");
    assert!(said.contains("(0 hard-linked, 4 copied)"), "{said}");
    assert_eq!(files_in(&to.join("blobs")), 4);

    // fsck lists the bucket and re-hashes every object.
    node.stop();
    // Tools given the data dir alone are told that its blobs are not there.
    let dir_only = node.cli(&["fsck", "--data-dir", node.data_dir().to_str().unwrap()]);
    assert!(!dir_only.status.success());
    assert!(
        output_text(&dir_only).contains("are kept in s3 bucket hoard-dc1"),
        "{}",
        output_text(&dir_only)
    );
    let out = node.fsck();
    let text = output_text(&out);
    assert!(out.status.success(), "fsck: {text}");
    assert!(text.contains("4 blobs"), "{text}");
    assert!(text.contains("s3 bucket"), "{text}");
}

/// Done when: with `presigned_redirects`, a download is a 302 to a
/// short-lived presigned URL of the bucket, and pip and npm follow it.
#[test]
fn presigned_redirects_are_followed_by_pip_and_npm() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let opts = with_s3_blobs(
        pypi_and_npm(),
        &s3,
        BUCKET,
        ", presigned_redirects = true, presigned_ttl_secs = 120",
    );
    let node = Node::start(opts);
    let token = node.create_token("pypi", "upload");
    let name = "Presigned_Pkg";
    let whl = WheelSpec::new(name, "2.0.0").build();
    let http = cluster::client();
    let up = upload(&http, &node.url(), &token, &whl).unwrap();
    assert_eq!(up.status, 200, "{}", up.body);

    let project = normalize(name);
    let url = file_url(&node, &project, &whl.filename);
    let resp = http.get(url.clone()).send().unwrap();
    assert_eq!(resp.status().as_u16(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{}/{BUCKET}/blobs/", s3.endpoint())),
        "{location}"
    );
    assert!(location.contains("X-Amz-Signature="), "{location}");
    assert!(location.contains("X-Amz-Expires=120"), "{location}");
    let cache = resp.headers()["cache-control"].to_str().unwrap();
    assert!(!cache.contains("immutable"), "{cache}");
    let direct = http.get(&location).send().unwrap();
    assert_eq!(direct.status().as_u16(), 200);
    assert_eq!(direct.bytes().unwrap().as_ref(), &whl.bytes[..]);
    // HEAD is still answered by hoard.
    let head = http.head(url).send().unwrap();
    assert_eq!(head.status().as_u16(), 200);

    // pip follows the redirect (and checks the hash on the page).
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    let log_len = node.log().len();
    pip_install_in_fresh_venv(&venv, &format!("{}/pypi/simple/", node.url()), name);
    assert_eq!(imported_version(&venv, &module_name(name)), "2.0.0");
    node.wait_for_log_line(log_len, "pip's download was not redirected", |l| {
        l.contains(&whl.filename) && l.contains("status=302")
    });

    // npm follows it for tarballs.
    let npm_token = node.create_token(NPM_REPO, "upload");
    let mut npm = Npm::with_token(&node, &npm_token);
    let out = npm.publish("presigned-widget", "1.0.0", &[]);
    assert!(out.all().contains("+ presigned-widget@1.0.0"), "{out}");
    npm.fresh_cache();
    let project_dir = npm.project();
    let log_len = node.log().len();
    npm.ok(&project_dir, &["install", "presigned-widget"]);
    assert!(project_dir
        .join("node_modules/presigned-widget/package.json")
        .is_file());
    node.wait_for_log_line(log_len, "npm's tarball download was not redirected", |l| {
        l.contains(".tgz") && l.contains("status=302")
    });
}

/// Done when: while the S3 service hangs, each upload fails with a 503
/// and a clear message, and nothing is listed or recorded; once it is
/// back, uploads work again.
#[test]
fn an_s3_outage_fails_uploads_with_503_and_lists_nothing_until_it_returns() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let node = Node::start(with_s3_blobs(NodeOpts::default(), &s3, BUCKET, ""));
    let token = node.create_token("pypi", "upload");
    let http = cluster::client();
    let first = wheel("outage-pkg", "1.0.0");
    let up = upload(&http, &node.url(), &token, &first).unwrap();
    assert_eq!(up.status, 200, "{}", up.body);

    s3.freeze();
    let serial = node.serial();
    for version in ["1.0.1", "1.0.2"] {
        let a = wheel("outage-pkg", version);
        let up = upload(&http, &node.url(), &token, &a).unwrap();
        assert_eq!(up.status, 503, "{}", up.body);
        assert!(
            up.body.contains("blob storage is unavailable"),
            "{}",
            up.body
        );
        assert_eq!(node.serial(), serial, "a failed upload records nothing");
        let page = node.get("/pypi/simple/outage-pkg/").text().unwrap();
        assert!(!page.contains(&a.filename), "{page}");
        assert_eq!(files_in(&node.data_dir().join("tmp")), 0);
    }
    // What was stored before is listed still; its download is a 503 too.
    let page = node.get("/pypi/simple/outage-pkg/").text().unwrap();
    assert!(page.contains(&first.filename), "{page}");
    let download = http
        .get(file_url(&node, "outage-pkg", &first.filename))
        .send()
        .unwrap();
    assert_eq!(download.status().as_u16(), 503);
    assert!(download.headers().contains_key("retry-after"));

    s3.thaw();
    let again = wheel("outage-pkg", "1.0.1");
    let up = upload(&http, &node.url(), &token, &again).unwrap();
    assert_eq!(up.status, 200, "{}", up.body);
    let page = node.get("/pypi/simple/outage-pkg/").text().unwrap();
    assert!(page.contains(&again.filename), "{page}");
}

/// 24 MiB of bytes that differ per `seed` (three multipart parts).
fn big_payload(seed: u64) -> Vec<u8> {
    hoard_testkit::artifacts::pseudo_random(24 << 20, seed)
}

/// The files of a generic directory listing: name → (size, sha256).
fn generic_files(node: &Node, dir: &str) -> std::collections::BTreeMap<String, (u64, String)> {
    let listing: serde_json::Value = node
        .http()
        .get(format!("{}/{dir}", node.url()))
        .header("accept", "application/json")
        .send()
        .unwrap()
        .json()
        .unwrap_or(serde_json::Value::Null);
    listing["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] != "directory")
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_owned(),
                (
                    e["size"].as_u64().unwrap_or_default(),
                    e["sha256"].as_str().unwrap_or_default().to_owned(),
                ),
            )
        })
        .collect()
}

/// Done when: kill -9 while 24 MiB files go up as multipart uploads leaves
/// no listed file without its whole object, and no object under a content
/// address that is not whole; the node restarts, takes the same uploads,
/// and fsck (which re-hashes the bucket) is clean.
#[test]
fn kill9_during_multipart_uploads_to_s3_leaves_no_listed_file_without_its_object() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let opts = with_s3_blobs(
        NodeOpts::default().repo(RepoSpec::generic("files")),
        &s3,
        BUCKET,
        "",
    );
    let mut node = Node::start(opts);
    let token = node.create_token("files", "upload");
    let payloads: Vec<Vec<u8>> = (0..4).map(big_payload).collect();
    for (trial, delay_ms) in [150u64, 600, 1200].into_iter().enumerate() {
        let (url, token_) = (node.url(), token.clone());
        let bodies = payloads.clone();
        let uploader = std::thread::spawn(move || {
            for (i, body) in bodies.into_iter().enumerate() {
                let sent = cluster::client()
                    .put(format!("{url}/files/t{trial}/f{i}.bin"))
                    .bearer_auth(&token_)
                    .body(body)
                    .send();
                if sent.is_err() {
                    return; // the node died under it
                }
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        node.kill9();
        uploader.join().unwrap();
        node.restart();

        // Every listed file is whole in the bucket.
        let objects: std::collections::BTreeMap<String, u64> =
            blob_objects(&s3, BUCKET).into_iter().collect();
        let listed = generic_files(&node, &format!("files/t{trial}/"));
        eprintln!(
            "trial {trial}: killed after {delay_ms} ms; {} files listed, {} objects",
            listed.len(),
            objects.len()
        );
        for (name, (size, sha)) in listed {
            assert_eq!(
                objects.get(&blob_key(&sha)),
                Some(&size),
                "trial {trial}: {name} is listed without its whole object"
            );
        }
        // Every object at a content address is one of the payloads, whole.
        let wanted: std::collections::BTreeMap<String, u64> = payloads
            .iter()
            .map(|p| (blob_key(&hoard_testkit::sha256_hex(p)), p.len() as u64))
            .collect();
        for (key, size) in &objects {
            assert_eq!(
                wanted.get(key),
                Some(size),
                "trial {trial}: {key} is not whole"
            );
        }
        assert_eq!(files_in(&node.data_dir().join("tmp")), 0, "swept at start");
    }
    // The same uploads again go through, and the bucket holds each once.
    for (i, body) in payloads.iter().enumerate() {
        let resp = cluster::client()
            .put(format!("{}/files/again/f{i}.bin", node.url()))
            .bearer_auth(&token)
            .body(body.clone())
            .send()
            .unwrap();
        assert!(resp.status().is_success(), "{:?}", resp.text());
    }
    assert_eq!(generic_files(&node, "files/again/").len(), 4);
    assert_eq!(blob_objects(&s3, BUCKET).len(), 4);
    let got = node
        .http()
        .get(format!("{}/files/again/f2.bin", node.url()))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert!(
        got.as_ref() == &payloads[2][..],
        "a multipart blob reads back whole"
    );
    node.stop();
    let out = node.fsck();
    let text = output_text(&out);
    assert!(out.status.success(), "fsck: {text}");
}

/// Done when: replication works between any mix of backends: an fs
/// primary with a replica whose blobs are in a bucket, and a primary with
/// S3 blobs with an fs replica. Each replica serves every file, pip
/// installs from it, and all digests match.
#[test]
fn replication_between_fs_and_s3_backed_nodes_both_ways() {
    let s3 = S3Server::start();
    for bucket in ["primary-blobs", "replica-blobs"] {
        s3.create_bucket(bucket);
    }
    // An fs primary and an S3 primary, each with a replica of the other kind.
    let fs_primary = Node::start(NodeOpts::default());
    let s3_primary = Node::start(with_s3_blobs(NodeOpts::default(), &s3, "primary-blobs", ""));
    let s3_replica = Node::start(with_s3_blobs(
        NodeOpts::replica("r-s3", &[fs_primary.grpc_addr()]),
        &s3,
        "replica-blobs",
        "",
    ));
    let fs_replica = Node::start(NodeOpts::replica("r-fs", &[s3_primary.grpc_addr()]));

    let http = cluster::client();
    for (primary, replica) in [(&fs_primary, &s3_replica), (&s3_primary, &fs_replica)] {
        let token = primary.create_token("pypi", "upload");
        let files: Vec<_> = (0..5)
            .map(|i| wheel("Mixed_Pkg", &format!("1.0.{i}")))
            .collect();
        let mut last = 0;
        for f in &files {
            last = cluster::upload_ok(&http, &primary.url(), &token, f);
        }
        cluster::wait_applied(replica, last, std::time::Duration::from_secs(60));
        assert_eq!(replica.status()["digest"], primary.status()["digest"]);
        for f in &files {
            let url = file_url(replica, "mixed-pkg", &f.filename);
            let got = replica.http().get(url).send().unwrap().bytes().unwrap();
            assert!(
                got.as_ref() == &f.bytes[..],
                "{} from the replica",
                f.filename
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let venv = dir.path().join("venv");
        let index = format!("{}/pypi/simple/", replica.url());
        pip_install_in_fresh_venv(&venv, &index, "Mixed_Pkg");
        assert_eq!(imported_version(&venv, &module_name("Mixed_Pkg")), "1.0.4");
    }
    // Where the bytes are: each S3-backed node's blobs in its bucket, the
    // others' on disk.
    assert_eq!(
        blob_objects(&s3, "replica-blobs").len(),
        10,
        "5 wheels and their metadata"
    );
    assert_eq!(blob_objects(&s3, "primary-blobs").len(), 10);
    assert_eq!(files_in(&s3_replica.data_dir().join("blobs")), 0);
    assert_eq!(files_in(&fs_replica.data_dir().join("blobs")), 10);
}
