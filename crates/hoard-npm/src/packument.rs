//! Packuments: the full document (`application/json`) and the abbreviated
//! "corgi" (`application/vnd.npm.install-v1+json`) that `npm install` asks
//! for first.
//!
//! Rendered as JSON text with the keys in a fixed order (versions in semver
//! order), so that the bytes, and an ETag computed over them, are the same on
//! every node for the same data.

use std::collections::BTreeMap;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};
use time::{OffsetDateTime, UtcOffset};

use crate::versions::compare_versions;
use crate::PackageName;

/// The media type of the abbreviated packument.
pub const ABBREVIATED_MEDIA_TYPE: &str = "application/vnd.npm.install-v1+json";

/// The manifest fields kept in the abbreviated packument: what npm needs to
/// resolve and install (as the public registry's abbreviated documents).
pub const ABBREVIATED_FIELDS: &[&str] = &[
    "name",
    "version",
    "deprecated",
    "dependencies",
    "optionalDependencies",
    "devDependencies",
    "bundleDependencies",
    "bundledDependencies",
    "peerDependencies",
    "peerDependenciesMeta",
    "acceptDependencies",
    "bin",
    "directories",
    "dist",
    "engines",
    "cpu",
    "os",
    "libc",
    "_hasShrinkwrap",
    "hasInstallScript",
    "funding",
    "license",
];

/// One stored version of a package.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredVersion {
    pub version: String,
    /// The manifest as published ([`crate::PublishRequest::manifest`]).
    pub manifest: Value,
    /// Absolute URL of the tarball on this node's public URL.
    pub tarball_url: String,
    /// Hex sha1 of the stored tarball, computed by hoard (for a mirrored
    /// tarball not fetched yet, as the upstream declared it; empty: none).
    pub shasum: String,
    /// `sha512-<base64>`, likewise.
    pub integrity: String,
    pub published: OffsetDateTime,
    /// `None` or `Some("")`: not deprecated.
    pub deprecated: Option<String>,
}

/// A package as the server stores it, for rendering.
#[derive(Debug, Clone, PartialEq)]
pub struct PackageView {
    pub name: PackageName,
    /// In any order; rendered in semver order.
    pub versions: Vec<StoredVersion>,
    /// Tags that point at a version not in `versions` are left out.
    pub dist_tags: BTreeMap<String, String>,
    pub created: OffsetDateTime,
    pub modified: OffsetDateTime,
    pub readme: Option<String>,
    pub description: Option<String>,
    /// The document revision (`_rev`) that npm echoes back in the
    /// `PUT /{name}/-rev/{rev}` of an unpublish.
    pub rev: String,
    /// The package's owners, name and email, as `npm owner ls` lists them.
    pub maintainers: Vec<(String, String)>,
}

/// npm's time format: `2026-01-02T03:04:05.678Z` (UTC, milliseconds).
pub fn format_npm_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// JSON whose objects serialize their keys in insertion order (serde_json's
/// `Map` sorts them unless the `preserve_order` feature is on, which would
/// change every other crate's output too).
enum J {
    V(Value),
    O(Vec<(String, J)>),
}

impl J {
    fn obj(m: Map<String, Value>) -> J {
        J::O(m.into_iter().map(|(k, v)| (k, J::V(v))).collect())
    }
}

impl Serialize for J {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            J::V(v) => v.serialize(s),
            J::O(entries) => {
                let mut m = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
    }
}

fn s(x: impl Into<String>) -> J {
    J::V(Value::String(x.into()))
}

fn sorted_versions(view: &PackageView) -> Vec<&StoredVersion> {
    let mut v: Vec<&StoredVersion> = view.versions.iter().collect();
    v.sort_by(|a, b| compare_versions(&a.version, &b.version));
    v.dedup_by(|a, b| a.version == b.version);
    v
}

fn live_dist_tags(view: &PackageView) -> Value {
    let tags: Map<String, Value> = view
        .dist_tags
        .iter()
        .filter(|(_, v)| view.versions.iter().any(|s| &s.version == *v))
        .map(|(t, v)| (t.clone(), Value::String(v.clone())))
        .collect();
    Value::Object(tags)
}

/// The manifest with hoard's `name`, `version`, `dist` and `deprecated`:
/// `dist` keeps npm's `fileCount` and `unpackedSize` but never the client's
/// tarball URL or digests (nor signatures that hoard cannot vouch for).
fn served_manifest(name: &str, v: &StoredVersion) -> Map<String, Value> {
    let mut m = match &v.manifest {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let mut dist = Map::new();
    if let Some(Value::Object(old)) = m.get("dist") {
        for keep in ["fileCount", "unpackedSize"] {
            if let Some(x) = old.get(keep) {
                dist.insert(keep.to_owned(), x.clone());
            }
        }
    }
    // A mirrored tarball not fetched yet may have only one of the two,
    // as its upstream declared; npm checks whichever it is given.
    for (key, digest) in [("integrity", &v.integrity), ("shasum", &v.shasum)] {
        if !digest.is_empty() {
            dist.insert(key.into(), Value::String(digest.clone()));
        }
    }
    dist.insert("tarball".into(), Value::String(v.tarball_url.clone()));
    m.insert("dist".into(), Value::Object(dist));
    m.insert("name".into(), Value::String(name.to_owned()));
    m.insert("version".into(), Value::String(v.version.clone()));
    m.insert("_id".into(), Value::String(format!("{name}@{}", v.version)));
    m.remove("readme");
    match v.deprecated.as_deref() {
        Some(msg) if !msg.is_empty() => {
            m.insert("deprecated".into(), Value::String(msg.to_owned()));
        }
        _ => {
            m.remove("deprecated");
        }
    }
    m
}

/// Whether a manifest runs install scripts (`preinstall`, `install` or
/// `postinstall`), which npm wants to know before it fetches the tarball.
fn has_install_script(m: &Map<String, Value>) -> bool {
    matches!(m.get("scripts"), Some(Value::Object(s))
        if ["preinstall", "install", "postinstall"].iter().any(|k| s.contains_key(*k)))
}

fn to_json(v: &J) -> String {
    // Serializing `Value`s under string keys cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "{}".to_owned())
}

/// The full packument (`GET /{name}`, `Accept: application/json`):
/// `_id`, `name`, `description`, `dist-tags`, `versions` (each manifest with
/// hoard's `dist` and `deprecated`), `time` (`created`, `modified`, and one
/// entry per version), `readme`, `readmeFilename` (of the `latest` version).
pub fn render_full_packument(view: &PackageView) -> String {
    let name = view.name.full();
    let versions = sorted_versions(view);
    let mut doc = vec![
        ("_id".to_owned(), s(&name)),
        ("_rev".to_owned(), s(&view.rev)),
        ("name".to_owned(), s(&name)),
    ];
    if let Some(d) = &view.description {
        doc.push(("description".into(), s(d)));
    }
    doc.push(("dist-tags".into(), J::V(live_dist_tags(view))));
    if !view.maintainers.is_empty() {
        doc.push((
            "maintainers".into(),
            J::V(Value::Array(
                view.maintainers
                    .iter()
                    .map(|(name, email)| serde_json::json!({ "name": name, "email": email }))
                    .collect(),
            )),
        ));
    }
    doc.push((
        "versions".into(),
        J::O(
            versions
                .iter()
                .map(|v| (v.version.clone(), J::obj(served_manifest(&name, v))))
                .collect(),
        ),
    ));
    let mut time = vec![
        ("created".to_owned(), s(format_npm_time(view.created))),
        ("modified".to_owned(), s(format_npm_time(view.modified))),
    ];
    time.extend(
        versions
            .iter()
            .map(|v| (v.version.clone(), s(format_npm_time(v.published)))),
    );
    doc.push(("time".into(), J::O(time)));
    if let Some(r) = &view.readme {
        doc.push(("readme".into(), s(r)));
    }
    let readme_filename = view
        .dist_tags
        .get("latest")
        .and_then(|l| versions.iter().find(|v| &v.version == l))
        .and_then(|v| v.manifest.get("readmeFilename"));
    if let Some(f) = readme_filename {
        doc.push(("readmeFilename".into(), J::V(f.clone())));
    }
    to_json(&J::O(doc))
}

/// The abbreviated packument (`Accept: application/vnd.npm.install-v1+json`):
/// `name`, `modified`, `dist-tags`, and `versions` with only
/// [`ABBREVIATED_FIELDS`] (and `hasInstallScript` computed from `scripts`).
pub fn render_abbreviated_packument(view: &PackageView) -> String {
    let name = view.name.full();
    let versions = sorted_versions(view)
        .into_iter()
        .map(|v| {
            let mut full = served_manifest(&name, v);
            if has_install_script(&full) {
                full.insert("hasInstallScript".into(), Value::Bool(true));
            }
            let fields = ABBREVIATED_FIELDS
                .iter()
                .filter_map(|f| full.remove(*f).map(|x| ((*f).to_owned(), J::V(x))))
                .collect();
            (v.version.clone(), J::O(fields))
        })
        .collect();
    to_json(&J::O(vec![
        ("name".into(), s(&name)),
        ("modified".into(), s(format_npm_time(view.modified))),
        ("dist-tags".into(), J::V(live_dist_tags(view))),
        ("versions".into(), J::O(versions)),
    ]))
}
