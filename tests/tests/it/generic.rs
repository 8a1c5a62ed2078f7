//! Generic repositories: any file at a path, stored with `PUT` or
//! `hoard push` and read with `GET`, Range or `hoard pull`; immutable
//! paths, checksums, listings, replication, point-in-time views, a
//! pull-through mirror, and refused traversal.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hoard_testkit::cluster::{client, wait_applied, wait_for};
use hoard_testkit::tools::hoard_bin;
use hoard_testkit::{sha256_file, sha256_hex, Node, NodeOpts, RepoSpec};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// Stops `node` and checks its data dir with `hoard fsck`.
fn stop_and_fsck(node: &mut Node) {
    let (graceful, _) = node.stop();
    assert!(graceful, "hoard did not stop on SIGTERM");
    let fsck = node.fsck();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    assert!(fsck.status.success(), "fsck: {said}");
}

fn generic_node(name: &str) -> Node {
    Node::start(NodeOpts::default().repo(RepoSpec::generic(name)))
}

/// `PUT /{repo}/{path}` with a token and optional checksum.
fn put(
    node: &Node,
    path: &str,
    token: Option<&str>,
    checksum: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let mut request = client()
        .put(format!("{}/{path}", node.url()))
        .body(body.to_vec());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(sum) = checksum {
        request = request.header("x-checksum-sha256", sum);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    (status, response.text().unwrap_or_default())
}

fn get_json(node: &Node, path: &str) -> (u16, Value) {
    let response = client()
        .get(format!("{}/{path}", node.url()))
        .header("accept", "application/json")
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn names(listing: &Value) -> Vec<String> {
    listing["entries"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    let name = e["name"].as_str().unwrap_or_default();
                    match e["type"].as_str() {
                        Some("directory") => format!("{name}/"),
                        _ => name.to_owned(),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Writes `size` bytes that differ from block to block.
fn write_big_file(path: &Path, size: u64) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut block = vec![0u8; MIB as usize];
    for (i, b) in block.iter_mut().enumerate() {
        *b = (i * 31 % 251) as u8;
    }
    for n in 0..size / MIB {
        block[..8].copy_from_slice(&n.to_le_bytes());
        out.write_all(&block).unwrap();
    }
    out.flush().unwrap();
}

/// Runs the CLI and returns its output and peak resident memory: the
/// highest VmHWM seen while it runs (sampled; VmHWM only grows, and a
/// buffered file would stay resident for the whole transfer).
fn cli_with_peak_rss(args: &[&str]) -> (std::process::ExitStatus, String, u64) {
    let mut child = Command::new(hoard_bin())
        .args(args)
        .env_remove("HOARD_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Read the pipes on their own threads, so the child never blocks.
    let mut stderr = child.stderr.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).ok();
        s
    });
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).ok();
        s
    });
    let mut peak = 0;
    let status = loop {
        if let Some(kb) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_owned();
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
        {
            peak = peak.max(kb * 1024);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    assert!(peak > 0, "no memory figure was read for {args:?}");
    (status, text, peak)
}

#[test]
fn a_200_mib_file_is_pushed_and_pulled_in_bounded_memory_with_ranges_and_its_etag() {
    let node = generic_node("media");
    let token = node.create_token("media", "upload");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("app.box");
    write_big_file(&local, 200 * MIB);
    let sha = sha256_file(&local);
    let url = node.url();

    let (status, out, push_rss) = cli_with_peak_rss(&[
        "push",
        "--url",
        &url,
        "--repo",
        "media",
        "--token",
        &token,
        local.to_str().unwrap(),
        "images/app-1.2.box",
    ]);
    assert!(status.success(), "hoard push failed: {out}");
    assert!(out.contains("stored media/images/app-1.2.box"), "{out}");

    // HEAD and Range: the size, the sha256 as ETag, and exact bytes.
    let http = client();
    let head = http
        .head(format!("{url}/media/images/app-1.2.box"))
        .send()
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        (200 * MIB).to_string()
    );
    assert_eq!(
        head.headers()["etag"].to_str().unwrap(),
        format!("\"{sha}\"")
    );
    let range = http
        .get(format!("{url}/media/images/app-1.2.box"))
        .header("range", format!("bytes={}-{}", 5 * MIB, 5 * MIB + 15))
        .send()
        .unwrap();
    assert_eq!(range.status(), 206);
    let bytes = range.bytes().unwrap();
    assert_eq!(&bytes[..8], &5u64.to_le_bytes());
    assert_eq!(bytes.len(), 16);

    let pulled = dir.path().join("pulled.box");
    let (status, out, pull_rss) = cli_with_peak_rss(&[
        "pull",
        "--url",
        &url,
        "--repo",
        "media",
        "images/app-1.2.box",
        "-o",
        pulled.to_str().unwrap(),
    ]);
    assert!(status.success(), "hoard pull failed: {out}");
    assert_eq!(sha256_file(&pulled), sha, "the pulled file differs");

    // Bounded memory: neither side held the file. The server's peak
    // includes everything since it started (sled's cache, the runtime).
    let server_rss = node.peak_rss().expect("the node's VmHWM");
    for (who, rss) in [
        ("hoard push", push_rss),
        ("hoard pull", pull_rss),
        ("the node", server_rss),
    ] {
        assert!(
            rss < 100 * MIB,
            "{who} peaked at {} MiB moving a 200 MiB file",
            rss / MIB
        );
    }
    eprintln!(
        "peak RSS: push {} MiB, pull {} MiB, node {} MiB",
        push_rss / MIB,
        pull_rss / MIB,
        server_rss / MIB
    );
}

#[test]
fn a_path_is_immutable_a_wrong_checksum_stores_nothing_and_directories_list() {
    let mut node = generic_node("media");
    let upload = node.create_token("media", "upload");
    let read_only = node.create_token("media", "read");

    let (status, body) = put(&node, "media/docs/a.txt", Some(&upload), None, b"one");
    assert_eq!(status, 201, "{body}");
    let stored: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stored["sha256"], sha256_hex(b"one"));
    // The same bytes again: fine, and no new event.
    let serial = node.serial();
    let (status, body) = put(&node, "media/docs/a.txt", Some(&upload), None, b"one");
    assert_eq!(status, 200, "{body}");
    assert_eq!(node.serial(), serial);
    // Other bytes: 409, before or after the body is read.
    let (status, body) = put(&node, "media/docs/a.txt", Some(&upload), None, b"two");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("never changes"), "{body}");
    let (status, body) = put(
        &node,
        "media/docs/a.txt",
        Some(&upload),
        Some(&sha256_hex(b"two")),
        b"two",
    );
    assert_eq!(status, 409, "{body}");
    let got = node.get("/media/docs/a.txt");
    assert_eq!(got.text().unwrap(), "one");

    // A wrong checksum: refused, and nothing is left behind.
    let before = node.store_snapshot();
    let (status, body) = put(
        &node,
        "media/docs/b.txt",
        Some(&upload),
        Some(&sha256_hex(b"something else")),
        b"three",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("checksum mismatch"), "{body}");
    node.assert_nothing_stored(&before, "media", "", "");
    assert_eq!(node.get("/media/docs/b.txt").status(), 404);
    let (status, body) = put(&node, "media/docs/c.txt", Some(&upload), Some("abc"), b"x");
    assert_eq!(status, 400, "{body}");
    // A right one is stored.
    let (status, body) = put(
        &node,
        "media/docs/b.txt",
        Some(&upload),
        Some(&sha256_hex(b"three")),
        b"three",
    );
    assert_eq!(status, 201, "{body}");

    // A path is a file or a directory, never both.
    let (status, body) = put(&node, "media/docs", Some(&upload), None, b"x");
    assert_eq!(status, 409, "{body}");
    let (status, body) = put(&node, "media/docs/a.txt/inner", Some(&upload), None, b"x");
    assert_eq!(status, 409, "{body}");

    // Who may write.
    let before = node.store_snapshot();
    assert_eq!(put(&node, "media/x.bin", None, None, b"x").0, 401);
    assert_eq!(
        put(&node, "media/x.bin", Some(&read_only), None, b"x").0,
        403
    );
    node.assert_nothing_stored(&before, "media", "", "");

    // Listings, as JSON and HTML; a directory without its `/` redirects.
    let (status, root) = get_json(&node, "media/");
    assert_eq!(status, 200, "{root}");
    assert_eq!(names(&root), ["docs/"]);
    let (_, docs) = get_json(&node, "media/docs/");
    assert_eq!(names(&docs), ["a.txt", "b.txt"]);
    let a = &docs["entries"][0];
    assert_eq!(a["size"], 3);
    assert_eq!(a["sha256"], sha256_hex(b"one"));
    assert!(a["time"].as_str().unwrap().ends_with('Z'), "{a}");
    assert!(!a["uploader"].as_str().unwrap().is_empty(), "{a}");
    let html = node.get("/media/docs/").text().unwrap();
    assert!(html.contains("href=\"a.txt\""), "{html}");
    let redirect = node.get("/media/docs");
    assert_eq!(redirect.status(), 301);
    assert_eq!(redirect.headers()["location"], "/media/docs/");
    assert_eq!(node.get("/media/nothing/").status(), 404);
    assert_eq!(node.get("/media/nothing.txt").status(), 404);

    // The web UI browses it.
    let ui = node.get("/+ui/media/docs/").text().unwrap();
    assert!(
        ui.contains("a.txt") && ui.contains(&sha256_hex(b"one")),
        "{ui}"
    );
    let page = node.get("/+ui/media/docs/a.txt").text().unwrap();
    assert!(page.contains("hoard pull"), "{page}");
    stop_and_fsck(&mut node);
}

#[test]
fn traversal_encoded_separators_and_absolute_paths_are_refused() {
    let node = generic_node("media");
    let token = node.create_token("media", "upload");
    let before = node.store_snapshot();
    for path in [
        "/media/../escaped.txt",
        "/media/a/../../escaped.txt",
        "/media/%2e%2e/escaped.txt",
        "/media/a/%2E%2E/%2e%2e/escaped.txt",
        "/media/a%2Fb.txt",
        "/media/..%2f..%2fescaped.txt",
        "/media//etc/passwd",
        "/media/a/./b.txt",
        "/media/a%5C..%5Cb.txt",
        "/media/a%00b.txt",
        "/media/+at/1/x.txt",
        "/media/dir/",
    ] {
        let answer = node.raw(
            &format!("PUT {path} HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Length: 3"),
            b"bad",
        );
        assert!(
            answer.status == 400 || answer.status == 404,
            "PUT {path} answered {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        let read = node.raw(&format!("GET {path} HTTP/1.1"), b"");
        assert!(
            read.status == 400 || read.status == 404,
            "GET {path} answered {}",
            read.status
        );
    }
    node.assert_nothing_stored(&before, "media", "", "");
    assert!(!node.data_dir().join("escaped.txt").exists());
    assert!(!node.root().join("escaped.txt").exists());
}

#[test]
fn a_replica_serves_generic_files_and_listings_as_of_a_serial() {
    let primary = generic_node("media");
    let token = primary.create_token("media", "upload");
    let mut replica = Node::start(NodeOpts::replica("r1", &[primary.grpc_addr()]));
    let (status, body) = put(
        &primary,
        "media/builds/1.0/app.box",
        Some(&token),
        None,
        b"v1",
    );
    assert_eq!(status, 201, "{body}");
    let first: u64 = serde_json::from_str::<Value>(&body).unwrap()["serial"]
        .as_u64()
        .unwrap();
    // A write sent to the replica is sent on to the primary: `hoard push`
    // follows the replica's redirect.
    let answer = replica.raw(
        &format!("PUT /media/x.bin HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Length: 1"),
        b"x",
    );
    assert_eq!(
        answer.status,
        307,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("app.box");
    std::fs::write(&local, b"v11").unwrap();
    let out = replica.cli_ok(&[
        "push",
        "--url",
        &replica.url(),
        "--repo",
        "media",
        "--token",
        &token,
        local.to_str().unwrap(),
        "builds/1.1/app.box",
    ]);
    let second = primary.serial();
    assert!(out.contains("builds/1.1/app.box"), "{out}");
    assert!(second > first);
    wait_applied(&replica, second, Duration::from_secs(30));

    let got = replica.get("/media/builds/1.1/app.box");
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().unwrap(), "v11");
    let (_, now) = get_json(&replica, "media/builds/");
    assert_eq!(names(&now), ["1.0/", "1.1/"]);
    let (status, then) = get_json(&replica, &format!("media/+at/{first}/builds/"));
    assert_eq!(status, 200, "{then}");
    assert_eq!(names(&then), ["1.0/"]);
    assert_eq!(then["at"], first);
    assert_eq!(
        replica
            .get(&format!("/media/+at/{first}/builds/1.1/app.box"))
            .status(),
        404
    );
    assert_eq!(
        replica
            .get(&format!("/media/+at/{first}/builds/1.0/app.box"))
            .text()
            .unwrap(),
        "v1"
    );
    assert_eq!(replica.status()["digest"], primary.status()["digest"]);
    stop_and_fsck(&mut replica);
}

#[test]
fn a_generic_mirror_fetches_a_path_once_and_serves_it_from_then_on() {
    let upstream_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(upstream_dir.path().join("tools")).unwrap();
    std::fs::write(
        upstream_dir.path().join("tools/cli-2.0.tar.gz"),
        b"tool bytes",
    )
    .unwrap();
    let (mut upstream, upstream_url) = crate::export::serve_dir(upstream_dir.path());
    let mut node =
        Node::start(NodeOpts::default().repo(RepoSpec::generic_mirror("remote", &[upstream_url])));
    let first = node.get("/remote/tools/cli-2.0.tar.gz");
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-hoard-cache"], "miss");
    assert_eq!(first.text().unwrap(), "tool bytes");
    let (_, listing) = get_json(&node, "remote/tools/");
    assert_eq!(names(&listing), ["cli-2.0.tar.gz"]);
    assert_eq!(node.get("/remote/tools/missing.bin").status(), 404);
    assert_eq!(
        node.raw("PUT /remote/x.bin HTTP/1.1\r\nContent-Length: 1", b"x")
            .status,
        401
    );

    // With the upstream gone, the cached file is still served.
    upstream.stop();
    let again = wait_for(Duration::from_secs(10), "the cached file", || {
        let r = node.get("/remote/tools/cli-2.0.tar.gz");
        (r.status() == 200).then_some(r)
    });
    assert_eq!(again.headers()["x-hoard-cache"], "hit");
    assert_eq!(again.text().unwrap(), "tool bytes");
    stop_and_fsck(&mut node);
}

/// Every file of a generic repository as its listings give it: path →
/// (sha256, upload time).
fn tree(node: &Node, repo: &str) -> std::collections::BTreeMap<String, (String, String)> {
    let mut out = std::collections::BTreeMap::new();
    let mut dirs = vec![String::new()];
    while let Some(dir) = dirs.pop() {
        let (status, listing) = get_json(node, &format!("{repo}/{dir}"));
        assert_eq!(status, 200, "{repo}/{dir}: {listing}");
        for e in listing["entries"].as_array().unwrap() {
            let name = e["name"].as_str().unwrap();
            if e["type"] == "directory" {
                dirs.push(format!("{dir}{name}/"));
            } else {
                out.insert(
                    format!("{dir}{name}"),
                    (
                        e["sha256"].as_str().unwrap().to_owned(),
                        e["time"].as_str().unwrap().to_owned(),
                    ),
                );
            }
        }
    }
    out
}

#[test]
fn a_generic_export_imports_into_a_fresh_node_with_the_same_paths_hashes_and_times() {
    let source = generic_node("media");
    let token = source.create_token("media", "upload");
    for (path, body) in [
        ("readme.txt", &b"top"[..]),
        ("images/app-1.0.box", b"box one"),
        ("images/app-1.1.box", b"box two"),
        ("screens/2026/12/login.png", b"\x89PNG not really"),
    ] {
        let (status, body) = put(&source, &format!("media/{path}"), Some(&token), None, body);
        assert_eq!(status, 201, "{body}");
    }
    let at = source.serial();
    // Written after the export's serial: not in it.
    assert_eq!(
        put(&source, "media/later.txt", Some(&token), None, b"x").0,
        201
    );
    let out_dir = tempfile::tempdir().unwrap();
    let url = source.url();
    let export = |dir: &Path| {
        source.cli_ok(&[
            "export",
            "--url",
            &url,
            "--repo",
            "media",
            "--to",
            dir.to_str().unwrap(),
            "--at",
            &at.to_string(),
        ])
    };
    let said = export(out_dir.path());
    assert!(said.contains("4 file(s) written"), "{said}");
    assert!(export(out_dir.path()).contains("4 already there"));
    assert_eq!(
        std::fs::read(out_dir.path().join("files/screens/2026/12/login.png")).unwrap(),
        b"\x89PNG not really"
    );

    let fresh = generic_node("media");
    let import = || {
        fresh.cli_ok(&[
            "import",
            "--url",
            &fresh.url(),
            "--repo",
            "media",
            "--token",
            &fresh.admin_token(),
            out_dir.path().to_str().unwrap(),
        ])
    };
    let said = import();
    assert!(said.contains("imported into media: 4 file(s)"), "{said}");
    let mut expected = tree(&source, "media");
    expected.remove("later.txt");
    assert_eq!(tree(&fresh, "media"), expected);
    assert!(import().contains("0 file(s) (0 bytes), 4 already present"));

    // A plain directory imports at its relative paths, with the import's time.
    let plain = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(plain.path().join("docs/v1")).unwrap();
    std::fs::write(plain.path().join("docs/v1/guide.pdf"), b"guide").unwrap();
    std::fs::write(plain.path().join("images"), b"a file where a directory is").unwrap();
    let out = fresh.cli(&[
        "import",
        "--url",
        &fresh.url(),
        "--repo",
        "media",
        "--token",
        &fresh.admin_token(),
        plain.path().to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a refusal exits 1: {said}");
    assert!(
        said.contains("1 file(s)") && said.contains("1 refused"),
        "{said}"
    );
    assert_eq!(
        fresh.get("/media/docs/v1/guide.pdf").text().unwrap(),
        "guide"
    );
}
