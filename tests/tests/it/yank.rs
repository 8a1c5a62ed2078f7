//! Yank and un-yank (CLI and HTTP), and the point-in-time view.

use hoard_testkit::simple::anchors;
use hoard_testkit::{sha256_hex, wheel, Artifact, Node, Upload};
use serde_json::Value;

use crate::simple_api::JSON_TYPE;

const P: &str = "yank-pkg";

/// HTML at `prefix` (`/pypi` or `/pypi/+at/N`): the yank attribute of each
/// file (None: not yanked), or None if the page is 404.
fn html_yanks(node: &Node, prefix: &str) -> Option<Vec<(String, Option<String>)>> {
    let resp = node.get(&format!("{prefix}/simple/{P}/"));
    if resp.status().as_u16() == 404 {
        return None;
    }
    assert_eq!(resp.status().as_u16(), 200, "{prefix}/simple/{P}/");
    let page_url = resp.url().clone();
    let html = resp.text().unwrap();
    let mut out = Vec::new();
    for a in anchors(&html) {
        // Every listed file can be fetched through the page's own link.
        let url = page_url.join(a.href()).unwrap();
        let got = node.http().get(url.clone()).send().unwrap();
        assert_eq!(got.status().as_u16(), 200, "{url} from {prefix}");
        let (_, frag) = a.href().split_once("#sha256=").expect("sha256 fragment");
        assert_eq!(sha256_hex(&got.bytes().unwrap()), frag);
        out.push((a.text.clone(), a.attr("data-yanked").map(str::to_string)));
    }
    out.sort();
    Some(out)
}

/// JSON at `prefix`: each file's `yanked` value, or None if 404.
fn json_yanks(node: &Node, prefix: &str) -> Option<Vec<(String, Value)>> {
    let resp = node
        .http()
        .get(format!("{}{prefix}/simple/{P}/", node.url()))
        .header("accept", JSON_TYPE)
        .send()
        .unwrap();
    if resp.status().as_u16() == 404 {
        return None;
    }
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = resp.json().unwrap();
    let mut out: Vec<(String, Value)> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["filename"].as_str().unwrap().to_string(),
                f["yanked"].clone(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Some(out)
}

fn yank_cli(node: &Node, version: &str, reason: Option<&str>, undo: bool) {
    let url = node.url();
    let admin = node.admin_token();
    let mut args = vec![
        "yank",
        "--url",
        &url,
        "--repo",
        "pypi",
        "--project",
        P,
        "--version",
        version,
    ];
    if let Some(r) = reason {
        args.extend(["--reason", r]);
    }
    if undo {
        args.push("--undo");
    }
    node.cli_env_ok(&args, &[("HOARD_TOKEN", &admin)]);
}

fn html_expect(a: &Artifact, yanked: Option<&str>) -> (String, Option<String>) {
    (a.filename.clone(), yanked.map(str::to_string))
}

fn assert_json_yanked(got: &[(String, Value)], filename: &str, reason: Option<&str>) {
    let v = &got
        .iter()
        .find(|(f, _)| f == filename)
        .unwrap_or_else(|| panic!("{filename} not in {got:?}"))
        .1;
    match reason {
        None => assert_eq!(v, &Value::Bool(false), "{filename} should not be yanked"),
        Some(r) => assert!(
            v == &Value::String(r.to_string()) || v == &Value::Bool(true),
            "{filename} should be yanked ({r:?}), got {v}"
        ),
    }
}

#[test]
fn yank_unyank_and_point_in_time() {
    let node = Node::start_default();
    let token = node.create_token("pypi", "upload");
    let v1 = wheel(P, "1.0.0");
    let v2 = wheel(P, "2.0.0");
    let s0 = node.serial();
    node.upload_ok("pypi", &token, &Upload::of(&v1));
    let s1 = node.serial();
    node.upload_ok("pypi", &token, &Upload::of(&v2));
    let s2 = node.serial();
    assert_eq!((s1, s2), (s0 + 1, s0 + 2));

    yank_cli(&node, "1.0.0", Some("broken build"), false);
    let s3 = node.serial();
    assert_eq!(s3, s2 + 1, "a yank is one event");
    assert_eq!(
        html_yanks(&node, "/pypi").unwrap(),
        vec![
            html_expect(&v1, Some("broken build")),
            html_expect(&v2, None)
        ]
    );
    let j = json_yanks(&node, "/pypi").unwrap();
    assert_json_yanked(&j, &v1.filename, Some("broken build"));
    assert_json_yanked(&j, &v2.filename, None);
    // A yanked file is still served.
    let resp = node.get(&format!("/pypi/files/{P}/{}", v1.filename));
    assert_eq!(resp.status().as_u16(), 200);

    yank_cli(&node, "1.0.0", None, true);
    let s4 = node.serial();
    assert_eq!(s4, s3 + 1, "an un-yank is one event");
    assert_eq!(
        html_yanks(&node, "/pypi").unwrap(),
        vec![html_expect(&v1, None), html_expect(&v2, None)]
    );
    let j = json_yanks(&node, "/pypi").unwrap();
    assert_json_yanked(&j, &v1.filename, None);

    // The point-in-time view.
    let at = |s: u64| format!("/pypi/+at/{s}");
    assert_eq!(
        html_yanks(&node, &at(s2)).unwrap(),
        vec![html_expect(&v1, None), html_expect(&v2, None)],
        "before the yank"
    );
    assert_eq!(
        html_yanks(&node, &at(s1)).unwrap(),
        vec![html_expect(&v1, None)],
        "before the second upload"
    );
    assert_eq!(
        html_yanks(&node, &at(s3)).unwrap(),
        vec![
            html_expect(&v1, Some("broken build")),
            html_expect(&v2, None)
        ],
        "at the yank"
    );
    assert_eq!(
        html_yanks(&node, &at(s4)).unwrap(),
        vec![html_expect(&v1, None), html_expect(&v2, None)],
        "at the un-yank"
    );
    let before_project = html_yanks(&node, &at(s0));
    assert!(
        before_project.as_ref().is_none_or(|v| v.is_empty()),
        "before the first upload the project has no files: {before_project:?}"
    );
    let j = json_yanks(&node, &at(s3)).unwrap();
    assert_json_yanked(&j, &v1.filename, Some("broken build"));
    let j = json_yanks(&node, &at(s1)).unwrap();
    assert_eq!(j.len(), 1, "{j:?}");
    assert_json_yanked(&j, &v1.filename, None);

    // The point-in-time project list.
    let resp = node.get(&format!("{}/simple/", at(s0)));
    let status = resp.status().as_u16();
    assert!(
        status == 404 || !resp.text().unwrap().contains(P),
        "the project is not in the index before its first upload"
    );
    let resp = node.get(&format!("{}/simple/", at(s1)));
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.text().unwrap().contains(P));

    // Viewing history makes no events.
    assert_eq!(node.serial(), s4);
}

#[test]
fn yank_over_the_admin_http_api() {
    let node = Node::start_default();
    let token = node.create_token("pypi", "upload");
    let v1 = wheel(P, "1.0.0");
    node.upload_ok("pypi", &token, &Upload::of(&v1));
    let s = node.serial();
    let yank = |bearer: Option<&str>, body: Value| {
        let mut req = node
            .http()
            .post(format!("{}/+admin/yank", node.url()))
            .json(&body);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        req.send().unwrap().status().as_u16()
    };
    let admin = node.admin_token();
    let body =
        serde_json::json!({"repo": "pypi", "project": P, "version": "1.0.0", "reason": "cve"});
    assert_eq!(yank(None, body.clone()), 401);
    assert_eq!(
        yank(Some(&token), body.clone()),
        403,
        "an upload token cannot yank"
    );
    assert_eq!(node.serial(), s);
    assert_eq!(yank(Some(&admin), body), 200);
    assert_eq!(node.serial(), s + 1);
    assert_json_yanked(
        &json_yanks(&node, "/pypi").unwrap(),
        &v1.filename,
        Some("cve"),
    );
    // Name normalization applies to the project.
    let undo = serde_json::json!({"repo": "pypi", "project": "Yank_Pkg", "version": "1.0.0", "undo": true});
    assert_eq!(yank(Some(&admin), undo), 200);
    assert_eq!(node.serial(), s + 2);
    assert_json_yanked(&json_yanks(&node, "/pypi").unwrap(), &v1.filename, None);
    // An unknown release is not a silent success.
    let missing = serde_json::json!({"repo": "pypi", "project": P, "version": "9.9"});
    let status = yank(Some(&admin), missing);
    assert!(
        status == 404 || status == 400,
        "yank of an unknown release: {status}"
    );
    assert_eq!(node.serial(), s + 2);
}
