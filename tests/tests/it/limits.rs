//! Request limits, each configured small and tried: oversized uploads get
//! a 413 that the real npm and twine print (not `EPIPE`), also when the
//! client waits for `100 Continue`; slow headers get a 408; too many or too
//! large headers a 431; too many connections from one address, and too
//! many requests per second with one token, a 429 with `Retry-After`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use hoard_testkit::artifacts::{pseudo_random, WheelSpec};
use hoard_testkit::http::read_response;
use hoard_testkit::npm::{npm_opts, Npm, NPM_REPO};
use hoard_testkit::tools::{isolate_python_env, py_tools};
use hoard_testkit::{Auth, Node, NodeOpts, Upload};

/// Everything a raw connection gets until the server closes it (or 10 s).
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

#[test]
fn npm_prints_a_413_for_an_oversized_publish_and_nothing_is_stored() {
    let node = Node::start(npm_opts(false).top_level("max_npm_publish_bytes = 1048576"));
    let token = node.create_token(NPM_REPO, "upload");
    let npm = Npm::with_token(&node, &token);
    let dir = npm.package("hoard-too-big", "1.0.0", &[], "");
    // Incompressible, so the tarball (and its base64) stays over 1 MiB.
    std::fs::write(dir.join("blob.bin"), pseudo_random(3 << 20, 7)).unwrap();
    let before = node.store_snapshot();
    let out = npm.run(&dir, &["publish"]);
    assert!(!out.success(), "{out}");
    assert!(
        out.all().contains("413") && out.all().contains("limit"),
        "npm should print the 413 and its reason: {out}"
    );
    assert!(
        !out.all().contains("EPIPE"),
        "npm saw a reset connection: {out}"
    );
    node.assert_nothing_stored(&before, "", "", "");

    // A publish under the limit on the same node goes through.
    npm.publish("hoard-small-enough", "1.0.0", &[]);
}

#[test]
fn twine_prints_a_413_for_an_oversized_upload() {
    let node = Node::start(NodeOpts::default().max_upload_bytes(100_000));
    let token = node.create_token("pypi", "upload");
    let big = WheelSpec::new("too-big", "1.0.0")
        .padding(400_000, 3)
        .build();
    let dir = tempfile::tempdir().unwrap();
    let path = big.write_to(dir.path());
    let before = node.store_snapshot();
    let mut cmd = Command::new(&py_tools().twine);
    isolate_python_env(&mut cmd)
        .arg("upload")
        .arg("--repository-url")
        .arg(format!("{}/pypi/", node.url()))
        .args(["-u", "__token__", "-p", &token])
        .args(["--non-interactive", "--disable-progress-bar"])
        .arg(&path);
    let out = cmd.output().expect("run twine");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("413"), "twine should print the 413: {text}");
    node.assert_nothing_stored(&before, "pypi", "too-big", &big.filename);
}

#[test]
fn expect_100_continue_gets_the_413_first_and_a_small_upload_its_100() {
    let node = Node::start(NodeOpts::default().max_upload_bytes(100_000));
    let token = node.create_token("pypi", "upload");
    let auth = Auth::Basic(token);

    // Over the limit: the 413 comes without a byte of the body sent.
    let mut s = TcpStream::connect(node.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /pypi/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\
         Content-Type: multipart/form-data; boundary=b\r\nExpect: 100-continue\r\n\
         Authorization: {}\r\n\r\n",
        auth.header_value().unwrap()
    );
    s.write_all(head.as_bytes()).unwrap();
    let resp = read_response(&mut s).expect("an answer before the body");
    assert_eq!(resp.status, 413, "{resp}");

    // Under it: 100 Continue, then the body, then 200.
    let a = WheelSpec::new("continued", "1.0.0").build();
    let mp = Upload::of(&a).multipart();
    let body = mp.finish();
    let mut s = TcpStream::connect(node.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /pypi/ HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nContent-Type: {}\r\n\
         Expect: 100-continue\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        body.len(),
        mp.content_type(),
        auth.header_value().unwrap()
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert!(
        interim.starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"),
        "{}",
        String::from_utf8_lossy(&interim)
    );
    s.write_all(&body).unwrap();
    let resp = read_response(&mut s).expect("the upload's answer");
    assert_eq!(resp.status, 200, "{resp}");
}

#[test]
fn slow_headers_get_a_408_and_an_idle_connection_is_closed_quietly() {
    let node = Node::start(NodeOpts::default().top_level("header_timeout_secs = 1"));
    let mut slow = TcpStream::connect(node.addr()).unwrap();
    slow.write_all(b"GET /+status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let started = Instant::now();
    let got = read_until_closed(&mut slow);
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "slow headers got {text:?}"
    );
    assert!(text.contains("did not arrive within 1 s"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let mut idle = TcpStream::connect(node.addr()).unwrap();
    let got = read_until_closed(&mut idle);
    assert!(
        got.is_empty(),
        "an idle connection got {:?}",
        String::from_utf8_lossy(&got)
    );

    // A request on time is answered as ever.
    assert_eq!(node.get("/+status").status().as_u16(), 200);
}

#[test]
fn too_many_or_too_large_headers_get_a_431() {
    let node = Node::start(
        NodeOpts::default()
            .top_level("max_headers = 20")
            .top_level("max_header_bytes = 8192"),
    );
    let mut many = String::from("GET /+status HTTP/1.1\r\n");
    for i in 0..30 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    let resp = node.raw(many.trim_end_matches("\r\n"), b"");
    assert_eq!(resp.status, 431, "30 headers: {resp}");

    let big = format!("GET /+status HTTP/1.1\r\nX-Big: {}", "a".repeat(16 * 1024));
    let resp = node.raw(&big, b"");
    assert_eq!(resp.status, 431, "a 16 KiB header: {resp}");

    let fine = "GET /+status HTTP/1.1\r\nX-A: 1\r\nX-B: 2";
    assert_eq!(node.raw(fine, b"").status, 200);
}

#[test]
fn connections_from_one_address_are_limited() {
    let node = Node::start(NodeOpts::default().top_level("max_connections_per_ip = 4"));
    // The harness may hold one pooled connection of its own: open raw ones
    // until the node refuses, each proven admitted by an answered request.
    let mut open = Vec::new();
    let refused = loop {
        assert!(
            open.len() <= 4,
            "the node admitted {} connections",
            open.len()
        );
        let mut s = TcpStream::connect(node.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /+status HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let resp = read_response(&mut s).expect("an answer");
        if resp.status == 429 {
            break resp;
        }
        assert_eq!(resp.status, 200);
        open.push(s);
    };
    assert!(
        open.len() >= 3,
        "refused after only {} connections",
        open.len()
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.text().contains("open connections"), "{refused}");
    // Closing one frees a place.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = TcpStream::connect(node.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /+status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        if read_response(&mut s).expect("an answer").status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed connection's place was not freed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_token_over_its_request_rate_gets_a_429_with_retry_after() {
    let node = Node::start(
        NodeOpts::default()
            .top_level("token_rate_per_sec = 1")
            .top_level("token_burst = 3"),
    );
    let token = node.create_token("pypi", "read");
    let get = |token: Option<&str>| {
        let mut req = node.http().get(format!("{}/pypi/simple/", node.url()));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().unwrap()
    };
    for _ in 0..3 {
        assert_eq!(get(Some(&token)).status().as_u16(), 200);
    }
    let resp = get(Some(&token));
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After: {retry}");
    // Anonymous reads and other tokens are not held back by it.
    assert_eq!(get(None).status().as_u16(), 200);
    let other = node.create_token("pypi", "read");
    assert_eq!(get(Some(&other)).status().as_u16(), 200);
    // After the wait it asked for, the token works again.
    std::thread::sleep(Duration::from_secs(retry) + Duration::from_millis(200));
    assert_eq!(get(Some(&token)).status().as_u16(), 200);
}
