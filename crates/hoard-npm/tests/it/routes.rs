//! Request paths, as npm 10.8 sends them.

use hoard_npm::*;

use crate::name;

fn route(p: &str) -> NpmPath {
    parse_npm_path(p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

#[test]
fn packuments_in_every_spelling() {
    assert_eq!(
        route("hoard-demo"),
        NpmPath::Package {
            name: name("hoard-demo")
        }
    );
    assert_eq!(
        route("/hoard-demo"),
        NpmPath::Package {
            name: name("hoard-demo")
        }
    );
    for p in [
        "@acme%2fwidget",
        "@acme%2Fwidget",
        "@acme/widget",
        "%40acme%2fwidget",
    ] {
        assert_eq!(
            route(p),
            NpmPath::Package {
                name: name("@acme/widget")
            },
            "{p}"
        );
    }
    assert_eq!(
        route("hoard-demo/1.0.0"),
        NpmPath::PackageVersion {
            name: name("hoard-demo"),
            spec: "1.0.0".into()
        }
    );
    assert_eq!(
        route("@acme/widget/latest"),
        NpmPath::PackageVersion {
            name: name("@acme/widget"),
            spec: "latest".into()
        }
    );
}

#[test]
fn tarballs() {
    let t = |n: &str, v: &str, b: &str| NpmPath::Tarball {
        name: name(n),
        basename: b.into(),
        version: v.into(),
    };
    assert_eq!(
        route("hoard-demo/-/hoard-demo-1.0.0.tgz"),
        t("hoard-demo", "1.0.0", "hoard-demo-1.0.0.tgz")
    );
    assert_eq!(
        route("@acme/widget/-/widget-1.0.0.tgz"),
        t("@acme/widget", "1.0.0", "widget-1.0.0.tgz")
    );
    assert_eq!(
        route("@acme%2fwidget/-/widget-1.0.0.tgz"),
        t("@acme/widget", "1.0.0", "widget-1.0.0.tgz")
    );
    // The tarball URL that npm itself writes into a scoped publish document.
    assert_eq!(
        route("@acme/widget/-/@acme/widget-1.0.0.tgz"),
        t("@acme/widget", "1.0.0", "widget-1.0.0.tgz")
    );
    assert_eq!(
        route("hoard-demo/-/hoard-demo-1.0.0.tgz/-rev/2-b"),
        NpmPath::TarballRevision {
            name: name("hoard-demo"),
            basename: "hoard-demo-1.0.0.tgz".into(),
            version: "1.0.0".into(),
            rev: "2-b".into()
        }
    );
    for bad in [
        "hoard-demo/-/other-1.0.0.tgz",
        "hoard-demo/-/hoard-demo-1.0.tgz",
        "hoard-demo/-/..%2fhoard-demo-1.0.0.tgz",
        "@acme/widget/-/@evil/widget-1.0.0.tgz",
    ] {
        assert!(parse_npm_path(bad).is_err(), "{bad}");
    }
}

#[test]
fn special_endpoints() {
    assert_eq!(route(""), NpmPath::Root);
    assert_eq!(route("-/ping"), NpmPath::Ping);
    assert_eq!(route("-/whoami"), NpmPath::Whoami);
    assert_eq!(route("-/v1/search"), NpmPath::Search);
    assert_eq!(route("-/v1/login"), NpmPath::WebLogin);
    assert_eq!(
        route("-/user/org.couchdb.user:alice"),
        NpmPath::CouchUser {
            user: "alice".into()
        }
    );
    assert_eq!(
        route("-/user/org.couchdb.user%3Aalice/-rev/1-x"),
        NpmPath::CouchUser {
            user: "alice".into()
        }
    );
    assert_eq!(route("-/npm/v1/security/advisories/bulk"), NpmPath::Audit);
    assert_eq!(route("-/npm/v1/security/audits/quick"), NpmPath::Audit);
    assert_eq!(
        route("-/package/hoard-demo/dist-tags"),
        NpmPath::DistTags {
            name: name("hoard-demo")
        }
    );
    assert_eq!(
        route("-/package/@acme%2fwidget/dist-tags"),
        NpmPath::DistTags {
            name: name("@acme/widget")
        }
    );
    assert_eq!(
        route("-/package/@acme/widget/dist-tags"),
        NpmPath::DistTags {
            name: name("@acme/widget")
        }
    );
    assert_eq!(
        route("-/package/@acme%2fwidget/dist-tags/stable"),
        NpmPath::DistTag {
            name: name("@acme/widget"),
            tag: "stable".into()
        }
    );
    assert_eq!(
        route("hoard-demo/-rev/1-a"),
        NpmPath::PackageRevision {
            name: name("hoard-demo"),
            rev: "1-a".into()
        }
    );
}

#[test]
fn refuses_bad_paths() {
    for bad in [
        "-/nope",
        "-/user/alice",
        "-/user/org.couchdb.user:",
        "-/package/x/other",
        "a//b",
        "hoard-demo/-",
        "hoard-demo/-/",
        "a/b/c",
        "hoard-demo/-x",
    ] {
        assert!(parse_npm_path(bad).is_err(), "{bad}");
    }
    for bad in [
        "%2e%2e",
        "..",
        "%2E%2E/-/x-1.0.0.tgz",
        ".hidden",
        "_x",
        "@acme%2f%2e%2e",
        "a%20b",
        "-/package/%2e%2e/dist-tags",
    ] {
        assert!(
            matches!(parse_npm_path(bad), Err(NpmError::InvalidName { .. })),
            "{bad}: {:?}",
            parse_npm_path(bad)
        );
    }
}
