//! Full and abbreviated packuments.

use std::collections::BTreeMap;

use hoard_npm::*;
use serde_json::{json, Value};
use time::macros::datetime;

use crate::{fixture, name};

fn stored(version: &str, manifest: Value, deprecated: Option<&str>) -> StoredVersion {
    StoredVersion {
        version: version.to_owned(),
        manifest,
        tarball_url: format!("http://127.0.0.1:4040/npm/hoard-demo/-/hoard-demo-{version}.tgz"),
        shasum: format!("{:0>40}", version.replace('.', "")),
        integrity: format!("sha512-{version}"),
        published: datetime!(2026-01-02 03:04:05.678901 UTC),
        deprecated: deprecated.map(str::to_owned),
    }
}

fn view() -> PackageView {
    let p = match parse_publish(&fixture("publish-unscoped-1.0.0.json"), &name("hoard-demo"))
        .unwrap()
    {
        PutDocument::Publish(p) => *p,
        _ => unreachable!(),
    };
    let mut with_script = p.manifest.clone();
    with_script["scripts"] = json!({"postinstall": "node x.js", "test": "t"});
    with_script["version"] = json!("1.10.0");
    PackageView {
        name: name("hoard-demo"),
        versions: vec![
            stored("1.10.0", with_script, None),
            stored("1.0.0", p.manifest.clone(), Some("use 2.x please")),
            stored("2.0.0-rc.1", p.manifest.clone(), Some("")),
            stored("1.2.0", json!("not an object"), None),
        ],
        dist_tags: BTreeMap::from([
            ("latest".to_owned(), "1.0.0".to_owned()),
            ("next".to_owned(), "2.0.0-rc.1".to_owned()),
            ("gone".to_owned(), "0.1.0".to_owned()),
        ]),
        created: datetime!(2026-01-01 00:00:00 UTC),
        modified: datetime!(2026-01-03 00:00:00.5 +01:00),
        readme: Some("# hoard-demo\n".into()),
        description: Some("desc".into()),
        rev: "7-hoard".into(),
        maintainers: vec![("alice".into(), "alice@example.org".into())],
    }
}

#[test]
fn full_packument_shape() {
    let text = render_full_packument(&view());
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["_id"], "hoard-demo");
    assert_eq!(doc["name"], "hoard-demo");
    assert_eq!(doc["description"], "desc");
    assert_eq!(doc["readme"], "# hoard-demo\n");
    assert_eq!(doc["readmeFilename"], "README.md");
    assert_eq!(
        doc["maintainers"],
        json!([{"name": "alice", "email": "alice@example.org"}]),
        "what npm owner ls prints"
    );
    assert_eq!(
        doc["dist-tags"],
        json!({"latest": "1.0.0", "next": "2.0.0-rc.1"}),
        "dangling tags are dropped"
    );
    assert_eq!(doc["time"]["created"], "2026-01-01T00:00:00.000Z");
    assert_eq!(doc["time"]["modified"], "2026-01-02T23:00:00.500Z");
    assert_eq!(doc["time"]["1.0.0"], "2026-01-02T03:04:05.678Z");

    let v = &doc["versions"]["1.0.0"];
    assert_eq!(v["name"], "hoard-demo");
    assert_eq!(v["version"], "1.0.0");
    assert_eq!(v["_id"], "hoard-demo@1.0.0");
    assert_eq!(v["deprecated"], "use 2.x please");
    assert_eq!(
        v["dist"],
        json!({
            "integrity": "sha512-1.0.0",
            "shasum": "0000000000000000000000000000000000000100",
            "tarball": "http://127.0.0.1:4040/npm/hoard-demo/-/hoard-demo-1.0.0.tgz",
        }),
        "hoard's dist replaces the client's"
    );
    assert_eq!(v["bin"], json!({"hoard-demo": "cli.js"}));
    assert!(v.get("readme").is_none());
    assert!(
        doc["versions"]["2.0.0-rc.1"].get("deprecated").is_none(),
        "empty message: not deprecated"
    );
    // A stored manifest that is not an object still renders.
    assert_eq!(doc["versions"]["1.2.0"]["version"], "1.2.0");
    // Stored version wins over the manifest's own `version`.
    assert_eq!(doc["versions"]["1.10.0"]["version"], "1.10.0");

    // Versions and time are in semver order in the text.
    let order: Vec<usize> = [
        "\"1.0.0\":{",
        "\"1.2.0\":{",
        "\"1.10.0\":{",
        "\"2.0.0-rc.1\":{",
    ]
    .iter()
    .map(|k| text.find(k).unwrap_or_else(|| panic!("{k}")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    assert!(
        text.starts_with("{\"_id\":\"hoard-demo\",\"_rev\":\"7-hoard\",\"name\":\"hoard-demo\"")
    );
}

#[test]
fn rendering_is_deterministic() {
    let mut shuffled = view();
    shuffled.versions.reverse();
    assert_eq!(
        render_full_packument(&view()),
        render_full_packument(&shuffled)
    );
    assert_eq!(
        render_abbreviated_packument(&view()),
        render_abbreviated_packument(&shuffled)
    );
}

#[test]
fn abbreviated_packument_shape() {
    let text = render_abbreviated_packument(&view());
    let doc: Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 4, "{keys:?}");
    assert_eq!(doc["name"], "hoard-demo");
    assert_eq!(doc["modified"], "2026-01-02T23:00:00.500Z");
    assert_eq!(doc["dist-tags"]["latest"], "1.0.0");
    let v = &doc["versions"]["1.0.0"];
    assert_eq!(
        v,
        &json!({
            "name": "hoard-demo",
            "version": "1.0.0",
            "deprecated": "use 2.x please",
            "dependencies": {},
            "bin": {"hoard-demo": "cli.js"},
            "dist": {
                "integrity": "sha512-1.0.0",
                "shasum": "0000000000000000000000000000000000000100",
                "tarball": "http://127.0.0.1:4040/npm/hoard-demo/-/hoard-demo-1.0.0.tgz",
            },
            "engines": {"node": ">=18"},
            "license": "MIT",
        })
    );
    let s = &doc["versions"]["1.10.0"];
    assert_eq!(s["hasInstallScript"], true);
    assert!(s.get("scripts").is_none());
    assert!(s.get("description").is_none());
    assert!(text.find("\"1.2.0\"").unwrap() < text.find("\"1.10.0\"").unwrap());
}

#[test]
fn scoped_packument() {
    let mut v = view();
    v.name = name("@acme/widget");
    let doc: Value = serde_json::from_str(&render_full_packument(&v)).unwrap();
    assert_eq!(doc["_id"], "@acme/widget");
    assert_eq!(doc["versions"]["1.0.0"]["name"], "@acme/widget");
    assert_eq!(doc["versions"]["1.0.0"]["_id"], "@acme/widget@1.0.0");
}

#[test]
fn empty_package() {
    let v = PackageView {
        name: name("x"),
        versions: vec![],
        dist_tags: BTreeMap::new(),
        created: datetime!(2026-01-01 00:00 UTC),
        modified: datetime!(2026-01-01 00:00 UTC),
        readme: None,
        description: None,
        rev: "1-x".into(),
        maintainers: vec![],
    };
    let doc: Value = serde_json::from_str(&render_full_packument(&v)).unwrap();
    assert_eq!(doc["versions"], json!({}));
    assert_eq!(doc["dist-tags"], json!({}));
    assert!(doc.get("readme").is_none());
    assert!(doc.get("maintainers").is_none());
    let doc: Value = serde_json::from_str(&render_abbreviated_packument(&v)).unwrap();
    assert_eq!(doc["versions"], json!({}));
}

#[test]
fn npm_time_format() {
    assert_eq!(
        format_npm_time(datetime!(2026-11-21 23:34:05.360999 UTC)),
        "2026-11-21T23:34:05.360Z"
    );
    assert_eq!(
        format_npm_time(datetime!(2026-01-01 00:30 +01:00)),
        "2025-12-31T23:30:00.000Z"
    );
}
