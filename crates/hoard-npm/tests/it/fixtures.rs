//! The real bodies of `npm publish`, `npm deprecate`, `npm dist-tag add`,
//! `npm unpublish` and `npm login`.

use std::collections::BTreeMap;

use hoard_npm::*;
use serde_json::{json, Value};

use crate::{fixture, name};

fn publish(file: &str, url: &str) -> Result<PublishRequest, NpmError> {
    match parse_publish(&fixture(file), &name(url))? {
        PutDocument::Publish(p) => Ok(*p),
        other => panic!("expected a publish, got {other:?}"),
    }
}

#[test]
fn npm_publish_unscoped() {
    let p = publish("publish-unscoped-1.0.0.json", "hoard-demo").unwrap();
    assert_eq!(p.name.full(), "hoard-demo");
    assert_eq!(p.version, "1.0.0");
    assert_eq!(p.tarball_basename, "hoard-demo-1.0.0.tgz");
    assert_eq!(p.dist_tags, vec![("latest".to_owned(), "1.0.0".to_owned())]);
    assert_eq!(p.readme.as_deref(), Some("# hoard-demo\n"));
    assert_eq!(
        p.description.as_deref(),
        Some("A tiny package for hoard's npm fixtures")
    );
    let doc: Value = serde_json::from_slice(&fixture("publish-unscoped-1.0.0.json")).unwrap();
    let dist = &doc["versions"]["1.0.0"]["dist"];
    assert_eq!(p.digests.shasum, dist["shasum"].as_str().unwrap());
    assert_eq!(p.digests.integrity, dist["integrity"].as_str().unwrap());
    assert_eq!(
        p.tarball.as_ref().map(|t| t.len() as u64).unwrap(),
        doc["_attachments"]["hoard-demo-1.0.0.tgz"]["length"]
            .as_u64()
            .unwrap()
    );
    assert_eq!(p.manifest["bin"], json!({"hoard-demo": "cli.js"}));
    assert_eq!(p.manifest["engines"], json!({"node": ">=18"}));
    assert!(p.manifest.get("readme").is_none());
}

#[test]
fn npm_publish_with_tag() {
    let p = publish("publish-unscoped-2.0.0-tag-beta.json", "hoard-demo").unwrap();
    assert_eq!(p.version, "2.0.0");
    assert_eq!(p.dist_tags, vec![("beta".to_owned(), "2.0.0".to_owned())]);
    let existing = BTreeMap::from([("latest".to_owned(), "1.1.0".to_owned())]);
    let tags = dist_tags_after_publish(&existing, &p);
    assert_eq!(tags["latest"], "1.1.0");
    assert_eq!(tags["beta"], "2.0.0");
}

#[test]
fn npm_publish_scoped() {
    // npm PUTs it to `/@acme%2fwidget`, with the attachment keyed
    // `@acme/widget-1.0.0.tgz`.
    let url = PackageName::from_path_segment("@acme%2fwidget").unwrap();
    let PutDocument::Publish(p) =
        parse_publish(&fixture("publish-scoped-1.0.0.json"), &url).unwrap()
    else {
        panic!()
    };
    let p = *p;
    assert_eq!(p.name.full(), "@acme/widget");
    assert_eq!(p.tarball_basename, "widget-1.0.0.tgz");
    assert_eq!(p.manifest["publishConfig"], json!({"access": "public"}));
    // npm's placeholder when there is no README is kept as npm wrote it.
    assert_eq!(p.readme.as_deref(), Some("ERROR: No README data found!"));
}

#[test]
fn npm_publish_to_the_wrong_url() {
    assert!(matches!(
        publish("publish-unscoped-1.0.0.json", "other"),
        Err(NpmError::NameMismatch { .. })
    ));
    assert!(matches!(
        publish("publish-scoped-1.0.0.json", "widget"),
        Err(NpmError::NameMismatch { .. })
    ));
}

#[test]
fn npm_publish_tampered() {
    let mut doc: Value = serde_json::from_slice(&fixture("publish-unscoped-1.0.0.json")).unwrap();
    let data = doc["_attachments"]["hoard-demo-1.0.0.tgz"]["data"]
        .as_str()
        .unwrap()
        .to_owned();
    // Swap one base64 character: same length, different bytes.
    let mut chars: Vec<char> = data.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    doc["_attachments"]["hoard-demo-1.0.0.tgz"]["data"] =
        json!(chars.into_iter().collect::<String>());
    let e = parse_publish(doc.to_string().as_bytes(), &name("hoard-demo")).unwrap_err();
    assert!(matches!(e, NpmError::ShasumMismatch { .. }), "{e}");
    // Without the shasum, integrity catches it.
    doc["versions"]["1.0.0"]["dist"]
        .as_object_mut()
        .unwrap()
        .remove("shasum");
    let e = parse_publish(doc.to_string().as_bytes(), &name("hoard-demo")).unwrap_err();
    assert!(
        matches!(
            e,
            NpmError::IntegrityMismatch {
                algorithm: "sha512",
                ..
            }
        ),
        "{e}"
    );
    let declared = doc["versions"]["1.0.0"]["dist"]["integrity"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        e.to_string().starts_with(&format!("integrity mismatch: dist.integrity declares {declared} but the tarball's sha512 is sha512-")),
        "{e}"
    );
}

#[test]
fn npm_deprecate_and_undeprecate() {
    let PutDocument::Deprecate(d) =
        parse_publish(&fixture("deprecate.json"), &name("hoard-demo")).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        d.changes,
        vec![("1.0.0".to_owned(), "use 2.x please".to_owned())]
    );
    assert_eq!(d.versions.len(), 3);
    let PutDocument::Deprecate(u) =
        parse_publish(&fixture("undeprecate.json"), &name("hoard-demo")).unwrap()
    else {
        panic!()
    };
    assert_eq!(u.changes, vec![("1.0.0".to_owned(), String::new())]);
    let url = PackageName::from_path_segment("@acme%2fwidget").unwrap();
    let PutDocument::Deprecate(s) = parse_publish(&fixture("deprecate-scoped.json"), &url).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        s.changes,
        vec![("1.0.0".to_owned(), "scoped deprecation".to_owned())]
    );
}

#[test]
fn npm_unpublish_version_put() {
    let r =
        parse_revision_put(&fixture("unpublish-version-put.json"), &name("hoard-demo")).unwrap();
    let mut v = r
        .versions
        .clone()
        .expect("an unpublish lists the versions left");
    v.sort();
    assert_eq!(v, ["1.1.0", "2.0.0"], "1.0.0 was removed");
}

#[test]
fn npm_dist_tag_add() {
    assert_eq!(
        parse_dist_tag_put(&fixture("dist-tag-put.json")).unwrap(),
        "2.0.0"
    );
    assert!(matches!(
        parse_dist_tag_put(&fixture("dist-tag-put-range.json")),
        Err(NpmError::DistTagTarget(_))
    ));
}

#[test]
fn npm_login_and_adduser() {
    let l = parse_login(&fixture("login-couch.json"), "alice").unwrap();
    assert_eq!(l.name, "alice");
    assert_eq!(l.password, "s3cret-fixture");
    assert_eq!(l.email, None);
    assert!(
        !format!("{l:?}").contains("s3cret"),
        "Debug hides the password"
    );
    let a = parse_login(&fixture("adduser-couch.json"), "bob").unwrap();
    assert_eq!(a.email.as_deref(), Some("bob@example.invalid"));
    assert!(parse_login(&fixture("login-couch.json"), "bob").is_err());
    // The web login bodies are `{}` and `{"create":true}`: nothing to parse.
    assert_eq!(fixture("web-login-post.json"), b"{}");
}

#[test]
fn session_transcript_paths_all_parse() {
    // Every path that npm requested in the captured session is one we route.
    let text = String::from_utf8(fixture("npm-10.8.2-session.jsonl")).unwrap();
    let mut seen = 0;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let Some(path) = v["path"].as_str() else {
            continue;
        };
        let path = path.split('?').next().unwrap();
        let route = parse_npm_path(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        if path.ends_with(".tgz") {
            assert!(matches!(route, NpmPath::Tarball { .. }), "{path}");
        }
        seen += 1;
    }
    assert!(seen > 20);
}
