//! Bad input to an npm repository: each request is refused with its status
//! and npm's JSON error (`{"error": …}`), and nothing is stored (same
//! applied serial, no new blob, no temp leftovers, the package or version
//! absent). Publish documents are built by hand in the shape that
//! `npm publish` sends; republish and unpublish go through the real npm.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hoard_testkit::http::read_response;
use hoard_testkit::npm::{
    json_error, npm_opts, npm_tarball, publish_doc, put_raw, registry_at, registry_url, sri_sha512,
    Npm, NPM_REPO, OTHER_REPO,
};
use hoard_testkit::{Node, RawResponse};
use serde_json::{json, Value};

const PKG: &str = "hoard-bad";
const LIMIT: u64 = 128 * 1024;

/// A node for hand-built requests (small `max_upload_bytes`) and an upload
/// token for its npm repository.
fn start() -> (Node, String) {
    let node = Node::start(npm_opts(false).top_level(format!("max_npm_publish_bytes = {LIMIT}")));
    let token = node.create_token(NPM_REPO, "upload");
    (node, token)
}

/// A valid publish document for `name@version`.
fn doc(node: &Node, name: &str, version: &str) -> Value {
    let tarball = npm_tarball(name, version, 0);
    publish_doc(&registry_url(node), name, version, &tarball)
}

/// `GET /npm/{path}` must not find the package (or `version` of it).
fn assert_absent(node: &Node, url_name: &str, version: Option<&str>) {
    let path = format!("/{NPM_REPO}/{url_name}");
    let head = format!("GET {path} HTTP/1.1\r\nAccept: application/json");
    let resp = node.raw(&head, b"");
    match version {
        None => assert_ne!(
            resp.status, 200,
            "GET {path} found a package that was refused: {resp}"
        ),
        Some(v) => {
            if resp.status == 200 {
                let doc: Value = serde_json::from_slice(&resp.body).expect("packument JSON");
                assert!(
                    doc["versions"].get(v).is_none(),
                    "GET {path} lists the refused version {v}: {resp}"
                );
            }
        }
    }
}

/// PUT `body` at `path`, expect `status` and a JSON error containing
/// `needle`, then check that nothing was stored. Returns the error.
#[allow(clippy::too_many_arguments)]
fn refused(
    node: &Node,
    what: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
    status: u16,
    needle: &str,
    absent: (&str, Option<&str>),
) -> String {
    let before = node.store_snapshot();
    let resp = put_raw(node, path, token, body);
    assert_eq!(resp.status, status, "{what}: PUT {path}: {resp}");
    let msg = json_error(&resp);
    assert_eq!(
        resp.header("x-hoard-serial"),
        Some(before.serial.to_string().as_str()),
        "{what}: X-Hoard-Serial of the refusal: {resp:?}"
    );
    assert!(
        msg.to_lowercase().contains(&needle.to_lowercase()),
        "{what}: expected an error about {needle:?}, got {msg:?}"
    );
    node.assert_nothing_stored(&before, NPM_REPO, absent.0, "");
    assert_absent(node, absent.0, absent.1);
    msg
}

fn ok_publish(node: &Node, token: &str, url_name: &str, doc: &Value) -> RawResponse {
    let path = format!("/{NPM_REPO}/{url_name}");
    let resp = put_raw(node, &path, Some(token), doc.to_string().as_bytes());
    assert_eq!(resp.status, 200, "PUT {path}: {resp}");
    resp
}

#[test]
fn npm_valid_hand_built_publish_is_accepted() {
    // The control for every test below: the hand-built document is good.
    let (node, token) = start();
    let before = node.serial();
    let resp = ok_publish(&node, &token, PKG, &doc(&node, PKG, "1.0.0"));
    let serial: u64 = resp
        .header("x-hoard-upload-serial")
        .expect("x-hoard-upload-serial")
        .parse()
        .unwrap();
    assert!(serial > before);
    assert_eq!(node.serial(), serial);
    let scoped = "@hoardtest/bad";
    ok_publish(
        &node,
        &token,
        "@hoardtest%2fbad",
        &doc(&node, scoped, "1.0.0"),
    );
    let npm = Npm::new(&node);
    assert_eq!(npm.versions(PKG, &[]), ["1.0.0"]);
    assert_eq!(npm.versions(scoped, &[]), ["1.0.0"]);
}

#[test]
fn npm_publish_refuses_names_that_npm_forbids() {
    let (node, token) = start();
    let long = "a".repeat(215);
    // (name in the document, name in the URL path, what the error says)
    let cases: Vec<(&str, &str, &str)> = vec![
        ("Hoard-Upper", "Hoard-Upper", "capital letters"),
        (".hidden-pkg", ".hidden-pkg", "period"),
        ("_private-pkg", "_private-pkg", "underscore"),
        ("..", "..", "period"),
        ("..", "%2e%2e", "period"),
        ("..", "%2E%2E", "period"),
        (&long, &long, "214"),
        ("a b", "a%20b", "URL-friendly"),
        ("a/b", "a%2fb", "URL-friendly"),
        ("@hoardtest/Upper", "@hoardtest%2fUpper", "capital letters"),
        ("@hoardtest/.dot", "@hoardtest%2f.dot", "period"),
    ];
    for (name, url_name, needle) in cases {
        let body = doc(&node, name, "1.0.0").to_string();
        refused(
            &node,
            &format!("name {name:?} at {url_name:?}"),
            &format!("/{NPM_REPO}/{url_name}"),
            Some(&token),
            body.as_bytes(),
            400,
            needle,
            (url_name, None),
        );
    }
}

#[test]
fn npm_publish_refuses_bad_attachments_and_versions() {
    let (node, token) = start();
    let registry = registry_url(&node);
    let path = format!("/{NPM_REPO}/{PKG}");
    let tarball = npm_tarball(PKG, "1.0.0", 0);
    let other = npm_tarball(PKG, "1.0.1", 0);
    let good = publish_doc(&registry, PKG, "1.0.0", &tarball);
    let key = format!("{PKG}-1.0.0.tgz");
    let mut cases: Vec<(&str, Value, &str)> = Vec::new();

    let mut d = good.clone();
    d["versions"]["1.0.0"]["dist"]["integrity"] = json!(sri_sha512(&other));
    cases.push(("declared integrity of other bytes", d, "integrity"));

    let mut d = good.clone();
    d["versions"]["1.0.0"]["dist"]["shasum"] = json!(hoard_testkit::npm::sha1_hex(&other));
    cases.push(("declared shasum of other bytes", d, "shasum"));

    // The bytes changed in transit: same length, still gzip, digests of
    // the original.
    let mut tampered = tarball.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x55;
    let mut d = good.clone();
    d["_attachments"][&key]["data"] = json!(base64_of(&tampered));
    cases.push(("tampered bytes", d, "mismatch"));

    let mut d = good.clone();
    d["_attachments"][&key]["data"] = json!("this is not base64!");
    cases.push(("data that is not base64", d, "base64"));

    // Bytes that match their digests but are not a gzipped tarball.
    let plain = b"just some text, not a tarball".to_vec();
    let mut d = publish_doc(&registry, PKG, "1.0.0", &plain);
    d["_attachments"][&key]["length"] = json!(plain.len());
    cases.push(("an attachment that is not gzip", d, "gzip"));

    let mut d = good.clone();
    d["_attachments"][&key]["length"] = json!(tarball.len() + 1);
    cases.push(("declared length + 1", d, "length"));

    let mut d = good.clone();
    d["_attachments"][&key]["length"] = json!(tarball.len() - 1);
    cases.push(("declared length - 1", d, "length"));

    let mut d = good.clone();
    d["_attachments"][format!("{PKG}-1.0.1.tgz")] = json!({
        "content_type": "application/octet-stream",
        "data": base64_of(&other),
        "length": other.len(),
    });
    cases.push(("two attachments", d, "exactly one attachment"));

    let mut d = good.clone();
    d["versions"] = json!({});
    cases.push(("empty versions", d, "exactly one version"));

    let mut d = good.clone();
    d.as_object_mut().unwrap().remove("versions");
    cases.push(("no versions", d, "exactly one version"));

    // The attachment is for 1.0.0, but the document only has 1.0.1.
    let mut d = good.clone();
    let manifest = d["versions"]["1.0.0"].clone();
    let mut m101 = manifest.clone();
    m101["version"] = json!("1.0.1");
    m101["_id"] = json!(format!("{PKG}@1.0.1"));
    d["versions"] = json!({ "1.0.1": m101 });
    d["dist-tags"] = json!({ "latest": "1.0.1" });
    cases.push(("the attachment's version is missing", d, "attachment"));

    let mut d = good.clone();
    d["_attachments"] = json!({});
    cases.push(("no attachment", d, ""));

    for (what, d, needle) in cases {
        refused(
            &node,
            what,
            &path,
            Some(&token),
            d.to_string().as_bytes(),
            400,
            needle,
            (PKG, None),
        );
    }
    // Nothing was left behind that blocks the good document.
    ok_publish(&node, &token, PKG, &good);
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn npm_publish_refuses_missing_and_unauthorized_tokens() {
    let (node, _upload) = start();
    let path = format!("/{NPM_REPO}/{PKG}");
    let body = doc(&node, PKG, "1.0.0").to_string();
    let other_repo = node.create_token(OTHER_REPO, "upload");
    let read_only = node.create_token(NPM_REPO, "read");
    let cases: Vec<(&str, Option<&str>, u16, &str)> = vec![
        ("no token", None, 401, "needs a token"),
        (
            "an unknown token",
            Some("hoard_notarealtoken"),
            403,
            "token",
        ),
        (
            "a token for another repository",
            Some(&other_repo),
            403,
            "does not grant",
        ),
        ("a read-only token", Some(&read_only), 403, "does not grant"),
    ];
    for (what, token, status, needle) in cases {
        refused(
            &node,
            what,
            &path,
            token,
            body.as_bytes(),
            status,
            needle,
            (PKG, None),
        );
    }

    // The real npm with a read-only token: it prints hoard's message.
    let npm = Npm::with_token(&node, &read_only);
    let dir = npm.package(PKG, "1.0.0", &[], "");
    let before = node.store_snapshot();
    let out = npm.fails(&dir, &["publish"]);
    assert!(
        out.all().contains("403") && out.all().contains("does not grant"),
        "{out}"
    );
    node.assert_nothing_stored(&before, NPM_REPO, PKG, "");
    assert_absent(&node, PKG, None);
}

#[test]
fn npm_publish_refuses_malformed_json() {
    let (node, token) = start();
    let path = format!("/{NPM_REPO}/{PKG}");
    let good = doc(&node, PKG, "1.0.0").to_string();
    let cut = &good[..good.len() / 2];
    let cases: Vec<(&str, &[u8])> = vec![
        ("a cut document", cut.as_bytes()),
        ("not JSON", b"name=hoard-bad&version=1.0.0"),
        ("a JSON array", b"[1, 2, 3]"),
        ("a JSON string", b"\"hoard-bad\""),
        ("an empty body", b""),
        ("invalid UTF-8", b"{\"name\": \"hoard-\xff\xfe\"}"),
    ];
    for (what, body) in cases {
        refused(&node, what, &path, Some(&token), body, 400, "", (PKG, None));
    }
    // The document names another package than the URL.
    let other = doc(&node, "hoard-other", "1.0.0").to_string();
    refused(
        &node,
        "a document for another package",
        &path,
        Some(&token),
        other.as_bytes(),
        400,
        "mismatch",
        (PKG, None),
    );
    assert_absent(&node, "hoard-other", None);
}

/// Send `PUT path` with a chunked body of up to `max` bytes (a document
/// whose attachment never ends), stopping when the answer comes. Returns
/// the answer and how many body bytes were written before it came.
fn stream_put(node: &Node, path: &str, token: &str, max: u64) -> (RawResponse, u64) {
    let mut stream = TcpStream::connect(node.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        node.addr()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut writer = stream.try_clone().unwrap();
    let (sent2, done2) = (sent.clone(), done.clone());
    let prefix = format!(
        "{{\"name\":\"{PKG}\",\"versions\":{{}},\"_attachments\":{{\"{PKG}-1.0.0.tgz\":{{\"data\":\""
    );
    let thread = std::thread::spawn(move || {
        let mut chunk = format!("{:x}\r\n{prefix}\r\n", prefix.len()).into_bytes();
        let filler = vec![b'A'; 64 * 1024];
        while !done2.load(Ordering::Relaxed) && sent2.load(Ordering::Relaxed) < max {
            if writer.write_all(&chunk).is_err() {
                return;
            }
            sent2.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            chunk = format!("{:x}\r\n", filler.len()).into_bytes();
            chunk.extend_from_slice(&filler);
            chunk.extend_from_slice(b"\r\n");
        }
    });
    let resp = read_response(&mut stream);
    let at = sent.load(Ordering::Relaxed);
    done.store(true, Ordering::Relaxed);
    let _ = stream.shutdown(Shutdown::Both);
    let _ = thread.join();
    // Drain nothing more: the connection is gone.
    let _ = stream.read(&mut [0u8; 1]);
    (
        resp.unwrap_or_else(|e| panic!("no answer to a streamed PUT {path}: {e:#}")),
        at,
    )
}

#[test]
fn npm_publish_over_max_npm_publish_bytes_is_refused_with_413() {
    let (node, token) = start();
    let path = format!("/{NPM_REPO}/{PKG}");
    // A real document, over the limit (incompressible padding).
    let tarball = npm_tarball(PKG, "1.0.0", LIMIT as usize);
    let big = publish_doc(&registry_url(&node), PKG, "1.0.0", &tarball).to_string();
    assert!(big.len() as u64 > LIMIT);
    refused(
        &node,
        "a document over max_npm_publish_bytes",
        &path,
        Some(&token),
        big.as_bytes(),
        413,
        "limit",
        (PKG, None),
    );

    // Without a Content-Length: refused once the limit is passed, not
    // after reading everything.
    let before = node.store_snapshot();
    let max = 256 * 1024 * 1024;
    let (resp, sent) = stream_put(&node, &path, &token, max);
    assert_eq!(resp.status, 413, "a streamed document: {resp}");
    json_error(&resp);
    assert!(
        sent < 64 * 1024 * 1024,
        "the node answered only after {sent} bytes of a stream (limit {LIMIT})"
    );
    node.assert_nothing_stored(&before, NPM_REPO, PKG, "");
    assert_absent(&node, PKG, None);

    // Just under the limit is fine.
    let tarball = npm_tarball(PKG, "1.0.0", 16 * 1024);
    ok_publish(
        &node,
        &token,
        PKG,
        &publish_doc(&registry_url(&node), PKG, "1.0.0", &tarball),
    );
}

#[test]
fn npm_republish_of_a_version_is_refused_by_npm() {
    let (node, token) = start();
    let npm = Npm::with_token(&node, &token);
    npm.publish(PKG, "1.0.0", &[]);
    let integrity = npm.view_json(&[&format!("{PKG}@1.0.0"), "dist.integrity"]);

    // Other bytes under the same version.
    let dir = npm.package(PKG, "1.0.0", &[], "changed");
    let before = node.store_snapshot();
    let out = npm.fails(&dir, &["publish"]);
    assert!(
        out.all().contains("403")
            && out
                .all()
                .contains("You cannot publish over the previously published versions: 1.0.0."),
        "{out}"
    );
    node.assert_nothing_stored(&before, NPM_REPO, PKG, "");
    assert_eq!(
        npm.view_json(&[&format!("{PKG}@1.0.0"), "dist.integrity"]),
        integrity
    );
}

#[test]
fn npm_unpublish_is_refused_by_default() {
    let (node, token) = start();
    let mut npm = Npm::with_token(&node, &token);
    npm.publish(PKG, "1.0.0", &[]);
    npm.publish(PKG, "2.0.0", &[]);
    let spec = format!("{PKG}@1.0.0");
    let before = node.store_snapshot();
    let out = npm.fails(npm.root(), &["unpublish", &spec, "--force"]);
    assert!(
        out.all().contains("403") && out.all().contains("unpublish is disabled"),
        "{out}"
    );
    // Not even the node's admin token may unpublish here.
    npm.write_userconfig(Some(&node.admin_token()));
    let out = npm.fails(npm.root(), &["unpublish", &spec, "--force"]);
    assert!(out.all().contains("unpublish is disabled"), "{out}");
    let out = npm.fails(npm.root(), &["unpublish", PKG, "--force"]);
    assert!(out.all().contains("unpublish is disabled"), "{out}");
    node.assert_nothing_stored(&before, NPM_REPO, PKG, "");

    npm.fresh_cache();
    assert_eq!(npm.versions(PKG, &[]), ["1.0.0", "2.0.0"]);
    let project = npm.project();
    npm.ok(&project, &["install", &spec]);
    assert!(project.join("node_modules").join(PKG).is_dir());
}

#[test]
fn npm_unpublish_with_admin_token_when_allowed() {
    let node = Node::start(npm_opts(true));
    let token = node.create_token(NPM_REPO, "upload");
    let mut npm = Npm::with_token(&node, &token);
    npm.publish(PKG, "1.0.0", &[]);
    npm.publish(PKG, "2.0.0", &[]);
    let spec = format!("{PKG}@1.0.0");
    let tarball_url = format!("{}/{NPM_REPO}/{PKG}/-/{PKG}-1.0.0.tgz", node.url());
    let bytes = node
        .http()
        .get(&tarball_url)
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let s0 = node.serial();

    // An upload token may not unpublish, even here.
    let before = node.store_snapshot();
    let out = npm.fails(npm.root(), &["unpublish", &spec, "--force"]);
    assert!(
        out.all().contains("403") && out.all().contains("admin"),
        "{out}"
    );
    node.assert_nothing_stored(&before, NPM_REPO, PKG, "");

    npm.write_userconfig(Some(&node.admin_token()));
    let out = npm.ok(npm.root(), &["unpublish", &spec, "--force"]);
    assert!(out.contains(&format!("- {spec}")), "{out}");
    assert!(node.serial() > s0, "the unpublish recorded no event");

    npm.fresh_cache();
    assert_eq!(npm.versions(PKG, &[]), ["2.0.0"]);
    let resp = node.http().get(&tarball_url).send().unwrap();
    assert_eq!(resp.status().as_u16(), 404, "the unpublished tarball");
    // The earlier view still has it, with the same bytes.
    assert_eq!(
        npm.versions(PKG, &["--registry", &registry_at(&node, s0)]),
        ["1.0.0", "2.0.0"]
    );
    let at = format!("{}/{NPM_REPO}/+at/{s0}/{PKG}/-/{PKG}-1.0.0.tgz", node.url());
    let resp = node.http().get(&at).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200, "GET {at}");
    assert_eq!(resp.bytes().unwrap(), bytes);

    // An unpublished version cannot be published again.
    let before = node.store_snapshot();
    let body = doc(&node, PKG, "1.0.0").to_string();
    let resp = put_raw(
        &node,
        &format!("/{NPM_REPO}/{PKG}"),
        Some(&token),
        body.as_bytes(),
    );
    assert_eq!(resp.status, 403, "republish after unpublish: {resp}");
    json_error(&resp);
    node.assert_nothing_stored(&before, NPM_REPO, PKG, "");
}

/// npm's unpublish of the `latest` version sends the packument without it,
/// with the tags that pointed at it removed and `latest` moved to the
/// highest remaining version (libnpmpublish's unpublish.js; the public
/// registry does the same): afterwards `npm view` still shows the package,
/// and the dist-tags endpoint agrees with the packument.
#[test]
fn npm_unpublish_of_the_latest_version_moves_latest() {
    let node = Node::start(npm_opts(true));
    let npm = Npm::with_token(&node, &node.admin_token());
    npm.publish(PKG, "1.0.0", &[]);
    npm.publish(PKG, "2.0.0", &[]);
    npm.ok(
        npm.root(),
        &["dist-tag", "add", &format!("{PKG}@2.0.0"), "beta"],
    );
    npm.ok(
        npm.root(),
        &["unpublish", &format!("{PKG}@2.0.0"), "--force"],
    );
    let packument: Value = node
        .get(&format!("/{NPM_REPO}/{PKG}"))
        .json()
        .expect("packument");
    let endpoint: Value = node
        .get(&format!("/{NPM_REPO}/-/package/{PKG}/dist-tags"))
        .json()
        .expect("dist-tags");
    let versions = npm.versions(PKG, &[]);
    let seen = format!(
        "packument dist-tags {}, GET /-/package/{PKG}/dist-tags {endpoint}, \
         `npm view {PKG} versions` {versions:?}",
        packument["dist-tags"]
    );
    assert_eq!(endpoint, json!({ "latest": "1.0.0" }), "{seen}");
    assert_eq!(packument["dist-tags"], endpoint, "{seen}");
    assert_eq!(versions, ["1.0.0"], "{seen}");
}
