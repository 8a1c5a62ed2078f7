//! File downloads: ETag, Content-Length, immutable caching, HEAD, Range, 304.

use hoard_testkit::artifacts::WheelSpec;
use hoard_testkit::{sha256_hex, Node, Upload};

fn header(resp: &reqwest::blocking::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn download_headers_head_range_and_304() {
    let node = Node::start_default();
    let token = node.create_token("pypi", "upload");
    let a = WheelSpec::new("dl-pkg", "1.0.0")
        .padding(200_000, 7)
        .build();
    node.upload_ok("pypi", &token, &Upload::of(&a));
    let url = format!("{}/pypi/files/dl-pkg/{}", node.url(), a.filename);
    let sha = a.sha256();
    let size = a.bytes.len();
    let etag = format!("\"{sha}\"");

    let resp = node.http().get(&url).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(header(&resp, "etag"), etag);
    assert_eq!(header(&resp, "content-length"), size.to_string());
    assert!(header(&resp, "cache-control").contains("immutable"));
    let body = resp.bytes().unwrap();
    assert_eq!(sha256_hex(&body), sha);

    let resp = node.http().head(&url).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200, "HEAD");
    assert_eq!(header(&resp, "etag"), etag);
    assert_eq!(header(&resp, "content-length"), size.to_string());
    assert!(header(&resp, "cache-control").contains("immutable"));
    assert!(resp.bytes().unwrap().is_empty(), "HEAD has no body");

    for (range, start, end) in [
        ("bytes=0-0", 0, 0),
        ("bytes=10-99", 10, 99),
        (
            &format!("bytes={}-", size - 100) as &str,
            size - 100,
            size - 1,
        ),
        ("bytes=-50", size - 50, size - 1),
        (&format!("bytes=100-{}", size + 1000) as &str, 100, size - 1),
    ] {
        let resp = node.http().get(&url).header("range", range).send().unwrap();
        assert_eq!(resp.status().as_u16(), 206, "Range {range}");
        assert_eq!(
            header(&resp, "content-range"),
            format!("bytes {start}-{end}/{size}"),
            "Range {range}"
        );
        assert_eq!(
            header(&resp, "content-length"),
            (end - start + 1).to_string()
        );
        let body = resp.bytes().unwrap();
        assert_eq!(&body[..], &a.bytes[start..=end], "Range {range}");
    }
    let resp = node
        .http()
        .get(&url)
        .header("range", format!("bytes={}-", size + 10))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 416, "unsatisfiable range");

    let resp = node
        .http()
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 304);
    assert!(resp.bytes().unwrap().is_empty());
    let resp = node
        .http()
        .get(&url)
        .header("if-none-match", "\"0000\"")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "a non-matching If-None-Match");

    // The core metadata file.
    let resp = node.http().get(format!("{url}.metadata")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().unwrap(), a.metadata);

    // Unknown files and projects.
    for path in [
        "/pypi/files/dl-pkg/dl_pkg-9.9.9-py3-none-any.whl".to_string(),
        format!("/pypi/files/nope/{}", a.filename),
    ] {
        assert_eq!(node.get(&path).status().as_u16(), 404, "{path}");
    }
    // No way out of the store.
    let admin = node.admin_token();
    for path in [
        "/pypi/files/dl-pkg/..%2F..%2Fadmin-token",
        "/pypi/files/..%2F..%2F..%2Fadmin-token",
        "/pypi/files/dl-pkg/%2E%2E/%2E%2E/%2E%2E/admin-token",
    ] {
        let resp = node.get(path);
        let status = resp.status().as_u16();
        assert!(status == 400 || status == 404, "{path}: {status}");
        assert!(
            !resp.text().unwrap().contains(&admin),
            "{path} leaked the admin token"
        );
    }
}
