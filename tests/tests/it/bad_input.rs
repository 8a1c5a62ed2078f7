//! Every bad upload of issue 2 gets its status, and nothing is stored: the
//! applied serial is unchanged, no blob appears under `<data>/blobs/`, no
//! temp file is left under `<data>/tmp/`, and the file is not listed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hoard_testkit::artifacts::{pseudo_random, zip_bomb_wheel, BombMember, WheelSpec};
use hoard_testkit::http::read_response;
use hoard_testkit::{
    sdist, wheel, Artifact, Auth, Multipart, Node, NodeOpts, RawResponse, RepoSpec, Upload,
};

const PROJECT: &str = "bad-pkg";

struct Fixture {
    node: Node,
    token: String,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with(NodeOpts::default())
    }

    /// A node with an upload token and one good file of `bad-pkg` (so its
    /// page exists).
    fn with(opts: NodeOpts) -> Fixture {
        let node = Node::start(opts);
        let token = node.create_token("pypi", "upload");
        node.upload_ok("pypi", &token, &Upload::of(&wheel(PROJECT, "0.1.0")));
        Fixture { node, token }
    }

    fn auth(&self) -> Auth {
        Auth::Basic(self.token.clone())
    }

    /// Send `body` as an upload and expect `status` and nothing stored.
    /// `listed_as` is a filename that must not appear on the page.
    fn expect(
        &self,
        what: &str,
        auth: &Auth,
        content_type: Option<&str>,
        body: &[u8],
        status: u16,
        listed_as: &str,
    ) -> RawResponse {
        let before = self.node.store_snapshot();
        let resp = self.node.raw_upload("pypi", auth, content_type, body);
        assert_eq!(resp.status, status, "{what}: got {resp}");
        self.node
            .assert_nothing_stored(&before, "pypi", PROJECT, listed_as);
        assert_eq!(
            self.node.get("/+status").status().as_u16(),
            200,
            "{what}: the node is still up"
        );
        resp
    }

    /// Upload `u` (as a multipart body) and expect `status`, nothing stored.
    fn expect_upload(&self, what: &str, u: &Upload, status: u16, listed_as: &str) -> RawResponse {
        let mp = u.multipart();
        self.expect(
            what,
            &self.auth(),
            Some(&mp.content_type()),
            &mp.finish(),
            status,
            listed_as,
        )
    }
}

/// A good wheel of the fixture's project.
fn good() -> Artifact {
    wheel(PROJECT, "1.0.0")
}

#[test]
fn missing_token_is_401() {
    let fx = Fixture::new();
    let a = good();
    let mp = Upload::of(&a).multipart();
    fx.expect(
        "no token",
        &Auth::None,
        Some(&mp.content_type()),
        &mp.finish(),
        401,
        &a.filename,
    );
    // Basic auth with an empty password is no token either.
    let empty = Auth::Basic(String::new());
    let before = fx.node.store_snapshot();
    let resp = fx
        .node
        .raw_upload("pypi", &empty, Some(&mp.content_type()), &mp.finish());
    assert!(
        resp.status == 401 || resp.status == 403,
        "empty password: {resp}"
    );
    fx.node
        .assert_nothing_stored(&before, "pypi", PROJECT, &a.filename);
}

#[test]
fn wrong_token_is_403() {
    let fx = Fixture::new();
    let a = good();
    let mp = Upload::of(&a).multipart();
    for auth in [
        Auth::Basic("not-a-token".into()),
        Auth::Bearer("not-a-token".into()),
        Auth::Basic(format!("{}x", fx.token)),
    ] {
        fx.expect(
            &format!("wrong token {auth:?}"),
            &auth,
            Some(&mp.content_type()),
            &mp.finish(),
            403,
            &a.filename,
        );
    }
}

#[test]
fn token_of_another_repo_is_403() {
    let fx = Fixture::with(
        NodeOpts::default()
            .repo(RepoSpec::pypi("pypi"))
            .repo(RepoSpec::pypi("other")),
    );
    let other = fx.node.create_token("other", "upload");
    let a = good();
    let mp = Upload::of(&a).multipart();
    for auth in [Auth::Basic(other.clone()), Auth::Bearer(other.clone())] {
        fx.expect(
            "token of another repo",
            &auth,
            Some(&mp.content_type()),
            &mp.finish(),
            403,
            &a.filename,
        );
    }
    // It does work where it belongs.
    fx.node.upload_ok("other", &other, &Upload::of(&a));
}

#[test]
fn read_only_token_is_403() {
    let fx = Fixture::new();
    let read = fx.node.create_token("pypi", "read");
    let a = good();
    let mp = Upload::of(&a).multipart();
    fx.expect(
        "read-only token",
        &Auth::Basic(read),
        Some(&mp.content_type()),
        &mp.finish(),
        403,
        &a.filename,
    );
}

#[test]
fn unsafe_filenames_are_400() {
    let fx = Fixture::new();
    let a = good();
    for bad in [
        format!("x/{}", a.filename),
        format!("../{}", a.filename),
        format!("/tmp/{}", a.filename),
        format!("x\\{}", a.filename),
        format!("..\\{}", a.filename),
        format!("..{}", a.filename),
        "bad_pkg-1.0.0-py3-none-any..whl".to_string(),
        format!("{}\0", a.filename),
        format!("{}\0.exe", a.filename),
        "bad_pkg\0-1.0.0-py3-none-any.whl".to_string(),
    ] {
        let mut u = Upload::of(&a);
        u.filename = bad.clone();
        fx.expect_upload(&format!("filename {bad:?}"), &u, 400, &a.filename);
    }
}

#[test]
fn filename_not_matching_name_or_version_is_400() {
    let fx = Fixture::new();
    let a = good();
    // The declared name or version differs from the file's.
    let mut u = Upload::of(&a);
    u.name = "other-pkg".into();
    fx.expect_upload("name field differs from filename", &u, 400, &a.filename);
    let mut u = Upload::of(&a);
    u.version = "2.0.0".into();
    fx.expect_upload("version field differs from filename", &u, 400, &a.filename);
    // A file of another project.
    let other = wheel("other-pkg", "1.0.0");
    let mut u = Upload::of(&other);
    u.name = PROJECT.into();
    fx.expect_upload("filename of another project", &u, 400, &other.filename);
    // An sdist named for another version.
    let sd = sdist(PROJECT, "3.0");
    let mut u = Upload::of(&sd);
    u.version = "3.1".into();
    fx.expect_upload("sdist of another version", &u, 400, &sd.filename);
    // A prefix of the name is not the name.
    let long = wheel("bad-pkg-extra", "1.0.0");
    let mut u = Upload::of(&long);
    u.name = PROJECT.into();
    fx.expect_upload("name is a prefix", &u, 400, &long.filename);
}

#[test]
fn digest_mismatches_are_400() {
    let fx = Fixture::new();
    let a = good();
    let mut u = Upload::of(&a);
    u.sha256_digest = Some(hoard_testkit::sha256_hex(b"something else"));
    fx.expect_upload("sha256_digest mismatch", &u, 400, &a.filename);
    let mut u = Upload::of(&a);
    u.md5_digest = Some(hoard_testkit::md5_hex(b"something else"));
    fx.expect_upload("md5_digest mismatch", &u, 400, &a.filename);
    let mut u = Upload::of(&a);
    u.sha256_digest = Some("not-hex".into());
    fx.expect_upload("sha256_digest not hex", &u, 400, &a.filename);
    // Upper-case hex of the right digest is the right digest.
    let mut u = Upload::of(&a);
    u.sha256_digest = Some(a.sha256().to_uppercase());
    u.md5_digest = None;
    let resp = fx.node.upload("pypi", &fx.auth(), &u);
    assert_eq!(resp.status().as_u16(), 200, "upper-case sha256_digest");
}

#[test]
fn body_over_max_upload_bytes_is_413() {
    let fx = Fixture::with(NodeOpts::default().max_upload_bytes(100_000));
    let big = WheelSpec::new(PROJECT, "1.0.0").padding(300_000, 1).build();
    assert!(big.bytes.len() > 250_000);
    let u = Upload::of(&big);
    fx.expect_upload("body over max_upload_bytes", &u, 413, &big.filename);

    // Chunked, with no Content-Length: detected while streaming.
    let mp = u.multipart();
    let body = mp.finish();
    let mut chunked = Vec::new();
    for c in body.chunks(8192) {
        chunked.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        chunked.extend_from_slice(c);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let before = fx.node.store_snapshot();
    let head = format!(
        "POST /pypi/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Type: {}\r\nAuthorization: {}",
        mp.content_type(),
        fx.auth().header_value().unwrap()
    );
    let resp = fx.node.raw(&head, &chunked);
    assert_eq!(resp.status, 413, "chunked body over the limit: {resp}");
    fx.node
        .assert_nothing_stored(&before, "pypi", PROJECT, &big.filename);

    // A huge declared length is refused without waiting for the body.
    let before = fx.node.store_snapshot();
    let mut s = TcpStream::connect(fx.node.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "POST /pypi/ HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000000\r\nContent-Type: {}\r\n\
         Authorization: {}\r\nConnection: close\r\n\r\n",
        mp.content_type(),
        fx.auth().header_value().unwrap()
    );
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(&body[..200_000.min(body.len())]);
    let t = Instant::now();
    let resp = read_response(&mut s).expect("a response to a 2 GB Content-Length");
    assert_eq!(resp.status, 413, "2 GB Content-Length: {resp}");
    assert!(t.elapsed() < Duration::from_secs(15));
    drop(s);
    fx.node
        .assert_nothing_stored(&before, "pypi", PROJECT, &big.filename);

    // Under the limit is fine.
    fx.node
        .upload_ok("pypi", &fx.token, &Upload::of(&wheel(PROJECT, "1.0.1")));
}

#[test]
fn truncated_multipart_is_400() {
    let fx = Fixture::new();
    let a = WheelSpec::new(PROJECT, "1.0.0").padding(20_000, 3).build();
    let mp = Upload::of(&a).multipart();
    let ct = mp.content_type();
    let full = mp.finish();
    let unfinished = mp.unfinished();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "cut in the file's bytes",
            full[..full.len() - 5_000].to_vec(),
        ),
        (
            "cut right after the file's bytes",
            unfinished[..unfinished.len() - 2].to_vec(),
        ),
        ("no closing boundary", unfinished.clone()),
        (
            "cut in the closing boundary",
            full[..full.len() - 6].to_vec(),
        ),
        ("cut in a part's headers", full[..60].to_vec()),
    ];
    for (what, body) in cases {
        let resp = fx.expect(what, &fx.auth(), Some(&ct), &body, 400, &a.filename);
        if what == "no closing boundary" {
            // The answer says how much of the body arrived, so that a
            // client's truncated body can be told from a server's fault.
            let text = String::from_utf8_lossy(&resp.body);
            let says = format!(
                "the body ended after {0} bytes; Content-Length {0}",
                body.len()
            );
            assert!(text.contains(&says), "{what}: {text}");
        }
    }
}

#[test]
fn malformed_multipart_is_400() {
    let fx = Fixture::new();
    let a = good();
    let mp = Upload::of(&a).multipart();
    let ct = mp.content_type();
    let b = mp.boundary().to_string();
    let bad_headers = format!("--{b}\r\nthis is not a header\r\n\r\nx\r\n--{b}--\r\n").into_bytes();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "not multipart at all",
            b"hello, this is not multipart".to_vec(),
        ),
        ("empty body", Vec::new()),
        ("a part without headers", bad_headers),
        ("another boundary", {
            let other = Multipart::new();
            Upload::of(&a)
                .multipart()
                .finish()
                .replace_boundary(mp.boundary(), other.boundary())
        }),
        ("no content part", {
            let mut u = Multipart::new()
                .field(":action", "file_upload")
                .field("name", PROJECT)
                .field("version", "1.0.0")
                .field("filetype", "bdist_wheel");
            u = u.field("sha256_digest", &a.sha256());
            let body = u.finish();
            // re-frame under the advertised boundary
            body.replace_boundary(u.boundary(), mp.boundary())
        }),
    ];
    for (what, body) in cases {
        fx.expect(what, &fx.auth(), Some(&ct), &body, 400, &a.filename);
    }
    // An unknown :action is not an upload.
    let mut u = Upload::of(&a);
    u.action = false;
    let body = {
        let m = u.multipart();
        let mut v = format!(
            "--{}\r\nContent-Disposition: form-data; name=\":action\"\r\n\r\nremove_pkg\r\n",
            m.boundary()
        )
        .into_bytes();
        v.extend_from_slice(&m.finish());
        (m.content_type(), v)
    };
    fx.expect(
        ":action=remove_pkg",
        &fx.auth(),
        Some(&body.0),
        &body.1,
        400,
        &a.filename,
    );
}

trait ReplaceBoundary {
    fn replace_boundary(self, from: &str, to: &str) -> Vec<u8>;
}

impl ReplaceBoundary for Vec<u8> {
    /// Replace every occurrence of `from` by `to` (bytes; bodies are binary).
    fn replace_boundary(self, from: &str, to: &str) -> Vec<u8> {
        let (from, to) = (from.as_bytes(), to.as_bytes());
        let mut out = Vec::with_capacity(self.len());
        let mut i = 0;
        while i < self.len() {
            if self[i..].starts_with(from) {
                out.extend_from_slice(to);
                i += from.len();
            } else {
                out.push(self[i]);
                i += 1;
            }
        }
        out
    }
}

#[test]
fn wheel_without_metadata_is_400() {
    let fx = Fixture::new();
    let mut spec = WheelSpec::new(PROJECT, "1.0.0");
    spec.omit_metadata = true;
    let a = spec.build();
    fx.expect_upload("wheel without METADATA", &Upload::of(&a), 400, &a.filename);
}

const BOMB: u64 = 500 << 20;
const MEMORY_BOUND: u64 = 200 << 20;

fn expect_bomb_refused(fx: &Fixture, what: &str, a: &Artifact) {
    let before_rss = fx.node.peak_rss().expect("VmHWM of the node");
    fx.expect_upload(what, &Upload::of(a), 400, &a.filename);
    let after_rss = fx.node.peak_rss().expect("VmHWM of the node");
    assert!(
        after_rss.saturating_sub(before_rss) < MEMORY_BOUND,
        "{what}: the node's peak RSS grew from {} MiB to {} MiB",
        before_rss >> 20,
        after_rss >> 20
    );
}

#[test]
fn zip_bomb_metadata_is_400_with_bounded_memory() {
    let fx = Fixture::new();
    let a = zip_bomb_wheel(PROJECT, "1.0.0", BombMember::Metadata, BOMB, false);
    assert!(a.bytes.len() < 2 << 20, "bomb is {} bytes", a.bytes.len());
    expect_bomb_refused(&fx, "METADATA inflating to 500 MiB", &a);
    let a = zip_bomb_wheel(PROJECT, "1.0.0", BombMember::Metadata, BOMB, true);
    expect_bomb_refused(
        &fx,
        "METADATA inflating to 500 MiB, headers say 1000 bytes",
        &a,
    );
}

#[test]
fn zip_bomb_in_another_member_is_400_with_bounded_memory() {
    let fx = Fixture::new();
    let a = zip_bomb_wheel(PROJECT, "1.0.0", BombMember::Other, BOMB, false);
    expect_bomb_refused(&fx, "a member inflating to 500 MiB", &a);
    let a = zip_bomb_wheel(PROJECT, "1.0.0", BombMember::Other, BOMB, true);
    expect_bomb_refused(
        &fx,
        "a member inflating to 500 MiB, headers say 1000 bytes",
        &a,
    );
}

#[test]
fn invalid_version_is_400() {
    let fx = Fixture::new();
    for v in ["banana", "1.0.0.dev1.dev2", "1.0+", "1..0", "v"] {
        let a = wheel(PROJECT, v);
        fx.expect_upload(&format!("version {v:?}"), &Upload::of(&a), 400, &a.filename);
    }
    let sd = sdist(PROJECT, "not.a.version");
    fx.expect_upload(
        "sdist version not.a.version",
        &Upload::of(&sd),
        400,
        &sd.filename,
    );
}

#[test]
fn wheel_that_is_not_a_zip_is_400() {
    let fx = Fixture::new();
    let mut a = good();
    a.bytes = b"this is not a zip archive at all".to_vec();
    fx.expect_upload("a .whl that is text", &Upload::of(&a), 400, &a.filename);
    let mut a = good();
    a.bytes = pseudo_random(50_000, 9);
    fx.expect_upload("a .whl that is noise", &Upload::of(&a), 400, &a.filename);
    // A zip that is cut short.
    let mut a = good();
    a.bytes.truncate(a.bytes.len() / 2);
    fx.expect_upload("a truncated zip", &Upload::of(&a), 400, &a.filename);
    // A .tar.gz that is not gzip, and one without PKG-INFO.
    let mut sd = sdist(PROJECT, "1.0.0");
    sd.bytes = b"not gzip".to_vec();
    fx.expect_upload(
        "an sdist that is not gzip",
        &Upload::of(&sd),
        400,
        &sd.filename,
    );
}

#[test]
fn exe_is_400() {
    let fx = Fixture::new();
    for (filename, filetype) in [
        ("bad_pkg-1.0.0.win32.exe", "bdist_wininst"),
        ("bad_pkg-1.0.0.exe", "bdist_wheel"),
        ("bad_pkg-1.0.0-py3-none-any.exe", "bdist_wheel"),
    ] {
        let a = Artifact {
            name: PROJECT.into(),
            version: "1.0.0".into(),
            filename: filename.into(),
            bytes: pseudo_random(10_000, 4),
            metadata: String::new(),
        };
        let mut u = Upload::of(&a);
        u.filetype = filetype.into();
        fx.expect_upload(filename, &u, 400, filename);
    }
    // A real zip named .exe is still not a Python distribution.
    let mut a = good();
    a.filename = "bad_pkg-1.0.0.win-amd64.exe".into();
    let mut u = Upload::of(&a);
    u.filetype = "bdist_wininst".into();
    fx.expect_upload("a zip named .exe", &u, 400, &a.filename);
}

#[test]
fn multipart_without_boundary_is_400() {
    let fx = Fixture::new();
    let a = good();
    let body = Upload::of(&a).multipart().finish();
    for ct in [
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; charset=utf-8",
    ] {
        fx.expect(ct, &fx.auth(), Some(ct), &body, 400, &a.filename);
    }
    fx.expect("no Content-Type", &fx.auth(), None, &body, 400, &a.filename);
}

#[test]
fn json_body_is_400() {
    let fx = Fixture::new();
    let a = good();
    let body = serde_json::json!({
        ":action": "file_upload",
        "name": PROJECT,
        "version": "1.0.0",
        "filetype": "bdist_wheel",
        "content": base64_of(&a.bytes),
    })
    .to_string();
    fx.expect(
        "JSON body",
        &fx.auth(),
        Some("application/json"),
        body.as_bytes(),
        400,
        &a.filename,
    );
    fx.expect(
        "form-urlencoded body",
        &fx.auth(),
        Some("application/x-www-form-urlencoded"),
        b":action=file_upload&name=bad-pkg&version=1.0.0",
        400,
        &a.filename,
    );
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Send the head and `sent` bytes of a body declared as `declared` bytes
/// long, then wait: the node must answer 408 or close within 15 s.
fn short_body(fx: &Fixture, what: &str, sent: &[u8], declared: usize, content_type: &str) {
    assert!(declared > sent.len());
    let before = fx.node.store_snapshot();
    let mut s = TcpStream::connect(fx.node.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST /pypi/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n\
         Content-Length: {declared}\r\nAuthorization: {}\r\n\r\n",
        fx.auth().header_value().unwrap()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(sent).unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let outcome = loop {
        match s.read(&mut chunk) {
            Ok(0) => break "closed",
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                break "timeout"
            }
            Err(_) => break "reset",
        }
    };
    let elapsed = t.elapsed();
    assert_ne!(
        outcome, "timeout",
        "{what}: no answer and no close within 30 s (body_timeout_secs = 2)"
    );
    assert!(
        elapsed < Duration::from_secs(15),
        "{what}: took {elapsed:?}"
    );
    if !buf.is_empty() {
        let resp = read_response(&mut &buf[..]).expect("a parsable response");
        assert_eq!(resp.status, 408, "{what}: {resp}");
    }
    eprintln!(
        "{what}: {outcome} after {elapsed:?}, {} response bytes",
        buf.len()
    );
    drop(s);
    fx.node
        .assert_nothing_stored(&before, "pypi", PROJECT, &good().filename);
}

#[test]
fn body_shorter_than_content_length_times_out_and_stores_nothing() {
    let fx = Fixture::new();
    let a = WheelSpec::new(PROJECT, "1.0.0").padding(30_000, 5).build();
    let mp = Upload::of(&a).multipart();
    let full = mp.finish();
    short_body(
        &fx,
        "half a body",
        &full[..full.len() / 2],
        100_000,
        &mp.content_type(),
    );
    short_body(&fx, "headers only", b"", 100_000, &mp.content_type());
    // The node still takes uploads.
    fx.node.upload_ok("pypi", &fx.token, &Upload::of(&a));
}

/// The multipart body is complete (closing boundary and all), but the HTTP
/// body is shorter than its Content-Length: the request never completed, so
/// the upload must not be kept.
#[test]
fn complete_multipart_in_a_short_body_stores_nothing() {
    let fx = Fixture::new();
    let a = WheelSpec::new(PROJECT, "1.0.0").padding(30_000, 5).build();
    let mp = Upload::of(&a).multipart();
    let full = mp.finish();
    short_body(
        &fx,
        "the whole multipart, short of its Content-Length",
        &full,
        full.len() + 10_000,
        &mp.content_type(),
    );
}

#[test]
fn error_responses_are_plain_text_with_the_message_as_reason() {
    let fx = Fixture::new();
    let a = good();
    let mut cases: Vec<(&str, RawResponse)> = Vec::new();
    let mut u = Upload::of(&a);
    u.sha256_digest = Some(hoard_testkit::sha256_hex(b"x"));
    let mp = u.multipart();
    cases.push((
        "400",
        fx.node
            .raw_upload("pypi", &fx.auth(), Some(&mp.content_type()), &mp.finish()),
    ));
    let mp = Upload::of(&a).multipart();
    cases.push((
        "401",
        fx.node
            .raw_upload("pypi", &Auth::None, Some(&mp.content_type()), &mp.finish()),
    ));
    cases.push((
        "403",
        fx.node.raw_upload(
            "pypi",
            &Auth::Bearer("nope".into()),
            Some(&mp.content_type()),
            &mp.finish(),
        ),
    ));
    let first = wheel(PROJECT, "0.1.0");
    let mut spec = WheelSpec::new(PROJECT, "0.1.0");
    spec.extra_files
        .push(("bad_pkg/x.py".into(), b"x = 1\n".to_vec()));
    let conflicting = spec.build();
    assert_eq!(first.filename, conflicting.filename);
    let mp = Upload::of(&conflicting).multipart();
    cases.push((
        "409",
        fx.node
            .raw_upload("pypi", &fx.auth(), Some(&mp.content_type()), &mp.finish()),
    ));
    let mut failures = Vec::new();
    for (want, resp) in &cases {
        let ct = resp.header("content-type").unwrap_or("");
        let body = resp.text();
        let problems: Vec<String> = [
            (resp.status.to_string() != *want).then(|| format!("status {}", resp.status)),
            (!ct.starts_with("text/plain")).then(|| format!("content-type {ct:?}")),
            body.trim().is_empty().then(|| "empty body".to_string()),
            (resp.reason.trim() != body.trim())
                .then(|| format!("reason {:?} != body {:?}", resp.reason, body.trim())),
            resp.header("x-hoard-serial")
                .is_none()
                .then(|| "no X-Hoard-Serial".to_string()),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !problems.is_empty() {
            failures.push(format!("{want}: {}", problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "error responses: {failures:#?}");
}
