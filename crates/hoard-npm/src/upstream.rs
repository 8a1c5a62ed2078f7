//! An upstream registry's full packument, as a mirror reads it: the versions
//! it can serve (each with the digests its tarball is checked against), the
//! dist-tags, and the versions it refuses, with why. A hostile or broken
//! entry is refused on its own; the rest of the packument still works.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::versions::validate_version;
use crate::{NpmError, PackageName};

/// The largest version manifest kept (without its readme). Real manifests
/// are a few KiB; a bigger one would be recorded on every node.
pub const MAX_UPSTREAM_MANIFEST_BYTES: usize = 256 << 10;

/// One version an upstream lists that a mirror can serve.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamVersion {
    pub version: String,
    /// The manifest without `readme` (the packument's `dist` is replaced by
    /// hoard's when served).
    pub manifest: Map<String, Value>,
    /// The absolute http(s) URL of the tarball.
    pub tarball_url: String,
    /// Lowercase hex sha1 (`dist.shasum`), when declared.
    pub shasum: Option<String>,
    /// `sha512-<base64>`, the sha512 entry of `dist.integrity`, when declared.
    pub integrity: Option<String>,
    /// `time[version]`, when given.
    pub published: Option<OffsetDateTime>,
    /// A non-empty deprecation message.
    pub deprecated: Option<String>,
}

/// A version of the packument left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedVersion {
    pub version: String,
    pub reason: String,
}

/// What an upstream's packument offers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpstreamPackument {
    /// In the packument's order.
    pub versions: Vec<UpstreamVersion>,
    /// Tags whose value is a valid version (it may still be refused).
    pub dist_tags: BTreeMap<String, String>,
    pub refused: Vec<RefusedVersion>,
}

/// Reads the full packument `body` of `package`. A body that is not a JSON
/// object, or names another package, is an error; a bad version is refused
/// alone.
pub fn parse_upstream_packument(
    package: &PackageName,
    body: &[u8],
) -> Result<UpstreamPackument, NpmError> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| NpmError::MalformedJson(e.to_string()))?;
    let Value::Object(doc) = doc else {
        return Err(NpmError::InvalidDocument(
            "the packument is not a JSON object".into(),
        ));
    };
    let full = package.full();
    match doc.get("name") {
        Some(Value::String(name)) if *name == full => {}
        Some(Value::String(name)) => {
            return Err(NpmError::NameMismatch {
                url: full,
                document: name.clone(),
            })
        }
        _ => {
            return Err(NpmError::InvalidDocument(
                "the packument has no 'name'".into(),
            ))
        }
    }
    let times = match doc.get("time") {
        Some(Value::Object(t)) => t.clone(),
        _ => Map::new(),
    };
    let mut out = UpstreamPackument::default();
    if let Some(Value::Object(tags)) = doc.get("dist-tags") {
        for (tag, version) in tags {
            if let Some(v) = version.as_str().filter(|v| validate_version(v).is_ok()) {
                out.dist_tags.insert(tag.clone(), v.to_owned());
            }
        }
    }
    let versions = match doc.get("versions") {
        Some(Value::Object(v)) => v,
        None => return Ok(out),
        Some(_) => {
            return Err(NpmError::InvalidDocument(
                "the packument's 'versions' is not an object".into(),
            ))
        }
    };
    for (version, manifest) in versions {
        match upstream_version(&full, version, manifest, times.get(version)) {
            Ok(v) => out.versions.push(v),
            Err(reason) => out.refused.push(RefusedVersion {
                version: version.chars().take(80).collect(),
                reason,
            }),
        }
    }
    Ok(out)
}

fn upstream_version(
    package: &str,
    version: &str,
    manifest: &Value,
    time: Option<&Value>,
) -> Result<UpstreamVersion, String> {
    validate_version(version).map_err(|e| e.to_string())?;
    let Value::Object(manifest) = manifest else {
        return Err("its manifest is not an object".into());
    };
    if manifest.get("name").and_then(Value::as_str) != Some(package) {
        return Err(format!("its manifest does not name {package}"));
    }
    if manifest.get("version").and_then(Value::as_str) != Some(version) {
        return Err("its manifest names another version".into());
    }
    let Some(Value::Object(dist)) = manifest.get("dist") else {
        return Err("it has no 'dist'".into());
    };
    let tarball_url = dist
        .get("tarball")
        .and_then(Value::as_str)
        .ok_or("its dist has no tarball URL")?;
    if !(tarball_url.starts_with("https://") || tarball_url.starts_with("http://")) {
        return Err(format!(
            "its tarball URL {:?} is not http(s)",
            tarball_url.chars().take(120).collect::<String>()
        ));
    }
    let (sha512, sri_sha1) = dist
        .get("integrity")
        .and_then(Value::as_str)
        .map(sri_digests)
        .unwrap_or_default();
    let shasum = dist
        .get("shasum")
        .and_then(Value::as_str)
        .filter(|s| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
        .or(sri_sha1);
    if sha512.is_none() && shasum.is_none() {
        return Err("it declares neither a sha512 integrity nor a sha1 shasum".into());
    }
    let mut manifest = manifest.clone();
    manifest.remove("readme");
    let size = serde_json::to_string(&manifest).map_or(0, |t| t.len());
    if size > MAX_UPSTREAM_MANIFEST_BYTES {
        return Err(format!(
            "its manifest is {size} bytes, more than {MAX_UPSTREAM_MANIFEST_BYTES}"
        ));
    }
    let deprecated = manifest
        .get("deprecated")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_owned);
    Ok(UpstreamVersion {
        version: version.to_owned(),
        tarball_url: tarball_url.to_owned(),
        shasum,
        integrity: sha512.map(|d| format!("sha512-{}", B64.encode(d))),
        published: time
            .and_then(Value::as_str)
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok()),
        deprecated,
        manifest,
    })
}

/// The sha512 digest, and the hex sha1, of an SRI string; entries that do
/// not decode to a digest of the right length are ignored.
fn sri_digests(sri: &str) -> (Option<Vec<u8>>, Option<String>) {
    let mut sha512 = None;
    let mut sha1 = None;
    for entry in sri.split_ascii_whitespace() {
        let hash = entry.split('?').next().unwrap_or_default();
        let Some((algorithm, b64)) = hash.split_once('-') else {
            continue;
        };
        let Ok(digest) = B64.decode(b64) else {
            continue;
        };
        match (algorithm, digest.len()) {
            ("sha512", 64) => sha512 = sha512.or(Some(digest)),
            ("sha1", 20) => sha1 = sha1.or(Some(hex::encode(digest))),
            _ => {}
        }
    }
    (sha512, sha1)
}

/// Whether a tarball whose digests hoard computed (`sha1`, `sha512`)
/// matches what the upstream declared. Every declared digest must match.
pub fn tarball_matches_declared(
    declared_shasum: Option<&str>,
    declared_integrity: Option<&str>,
    sha1: &[u8; 20],
    sha512: &[u8; 64],
) -> bool {
    let shasum_ok = declared_shasum.is_none_or(|s| s.eq_ignore_ascii_case(&hex::encode(sha1)));
    let integrity_ok = declared_integrity
        .is_none_or(|i| i.strip_prefix("sha512-") == Some(B64.encode(sha512).as_str()));
    shasum_ok && integrity_ok
}

#[cfg(test)]
mod tests {
    use sha1::Sha1;
    use sha2::{Digest, Sha512};

    use super::*;

    fn name(s: &str) -> PackageName {
        PackageName::parse(s).unwrap()
    }

    fn version(v: &str, dist: Value) -> Value {
        serde_json::json!({
            "name": "@s/demo", "version": v, "readme": "long", "dist": dist,
            "dependencies": {"left-pad": "^1.0.0"},
        })
    }

    fn tgz_dist(bytes: &[u8]) -> Value {
        serde_json::json!({
            "tarball": "http://127.0.0.1:9/tarballs/@s/demo/-/demo.tgz",
            "shasum": hex::encode(Sha1::digest(bytes)),
            "integrity": format!("sha512-{}", B64.encode(Sha512::digest(bytes))),
        })
    }

    #[test]
    fn versions_keep_their_digests_times_and_deprecations_and_drop_the_readme() {
        let mut v1 = version("1.0.0", tgz_dist(b"one"));
        v1["deprecated"] = "use 2".into();
        let doc = serde_json::json!({
            "name": "@s/demo",
            "dist-tags": {"latest": "2.0.0", "beta": "not a version"},
            "versions": {"1.0.0": v1, "2.0.0": version("2.0.0", tgz_dist(b"two"))},
            "time": {"1.0.0": "2026-01-02T03:04:05.678Z"},
        });
        let p = parse_upstream_packument(&name("@s/demo"), doc.to_string().as_bytes()).unwrap();
        assert!(p.refused.is_empty(), "{:?}", p.refused);
        assert_eq!(
            p.dist_tags,
            [("latest".to_owned(), "2.0.0".to_owned())].into()
        );
        let one = &p.versions[0];
        assert_eq!(one.deprecated.as_deref(), Some("use 2"));
        assert_eq!(
            one.published.map(|t| t.unix_timestamp()),
            Some(1_767_323_045)
        );
        assert!(!one.manifest.contains_key("readme"));
        assert_eq!(one.shasum, Some(hex::encode(Sha1::digest(b"one"))));
        let sha1: [u8; 20] = Sha1::digest(b"one").into();
        let sha512: [u8; 64] = Sha512::digest(b"one").into();
        assert!(tarball_matches_declared(
            one.shasum.as_deref(),
            one.integrity.as_deref(),
            &sha1,
            &sha512
        ));
        let other: [u8; 64] = Sha512::digest(b"two").into();
        assert!(!tarball_matches_declared(
            None,
            one.integrity.as_deref(),
            &sha1,
            &other
        ));
        assert_eq!(p.versions[1].published, None);
    }

    #[test]
    fn hostile_versions_are_refused_one_at_a_time() {
        let good = version("1.0.0", tgz_dist(b"one"));
        let mut ftp = tgz_dist(b"two");
        ftp["tarball"] = "ftp://127.0.0.1/x.tgz".into();
        let sha1_only = serde_json::json!({
            "tarball": "https://127.0.0.1/y.tgz",
            "integrity": format!("sha1-{}", B64.encode(Sha1::digest(b"four"))),
        });
        let doc = serde_json::json!({
            "name": "@s/demo",
            "versions": {
                "1.0.0": good,
                "2.0.0": version("2.0.0", ftp),
                "3.0.0": version("3.0.0", serde_json::json!({"tarball": "https://127.0.0.1/z.tgz"})),
                "4.0.0": version("4.0.0", sha1_only),
                "not-a-version!": version("not-a-version!", tgz_dist(b"x")),
                "5.0.0": version("1.0.0", tgz_dist(b"five")),
            },
        });
        let p = parse_upstream_packument(&name("@s/demo"), doc.to_string().as_bytes()).unwrap();
        let kept: Vec<&str> = p.versions.iter().map(|v| v.version.as_str()).collect();
        assert_eq!(kept, ["1.0.0", "4.0.0"]);
        assert_eq!(
            p.versions[1].shasum,
            Some(hex::encode(Sha1::digest(b"four")))
        );
        assert_eq!(p.versions[1].integrity, None);
        let reasons: BTreeMap<&str, &str> = p
            .refused
            .iter()
            .map(|r| (r.version.as_str(), r.reason.as_str()))
            .collect();
        assert!(reasons["2.0.0"].contains("not http(s)"), "{reasons:?}");
        assert!(reasons["3.0.0"].contains("neither"), "{reasons:?}");
        assert!(reasons.contains_key("not-a-version!"));
        assert!(reasons["5.0.0"].contains("another version"));
    }

    #[test]
    fn a_broken_or_foreign_packument_is_an_error() {
        let demo = name("demo");
        assert!(matches!(
            parse_upstream_packument(&demo, b"{\"name\": \"de"),
            Err(NpmError::MalformedJson(_))
        ));
        assert!(matches!(
            parse_upstream_packument(&demo, b"[]"),
            Err(NpmError::InvalidDocument(_))
        ));
        assert!(matches!(
            parse_upstream_packument(&demo, br#"{"name": "other", "versions": {}}"#),
            Err(NpmError::NameMismatch { .. })
        ));
    }
}
