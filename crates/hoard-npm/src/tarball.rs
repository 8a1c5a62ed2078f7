//! Tarball file names and digests (`dist.shasum`, `dist.integrity`).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::Value;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::versions::parse_version;
use crate::{NpmError, PackageName};

/// `{name-without-scope}-{version}.tgz`: the tarball's file name, as the
/// public registry names it (`widget-1.0.0.tgz` for `@acme/widget`).
pub fn tarball_basename(pkg: &PackageName, version: &str) -> String {
    format!("{}-{version}.tgz", pkg.name)
}

/// Parses a tarball file name of `pkg` back to its version. Accepts the
/// registry's form (`widget-1.0.0.tgz`) and, for scoped packages, the form
/// npm writes into the `dist.tarball` of a publish document
/// (`@acme/widget-1.0.0.tgz`). The version must be strict semver.
pub fn parse_tarball_basename(pkg: &PackageName, basename: &str) -> Result<String, NpmError> {
    let invalid = |reason: String| NpmError::InvalidTarballName {
        filename: basename.to_owned(),
        reason,
    };
    let full_prefix = format!("{}-", pkg.full());
    let short_prefix = format!("{}-", pkg.name);
    let rest = basename
        .strip_prefix(&full_prefix)
        .or_else(|| basename.strip_prefix(&short_prefix))
        .ok_or_else(|| invalid(format!("expected '{short_prefix}<version>.tgz'")))?;
    let version = rest
        .strip_suffix(".tgz")
        .ok_or_else(|| invalid("a tarball name ends with '.tgz'".into()))?;
    parse_version(version).map_err(|e| invalid(e.to_string()))?;
    Ok(version.to_owned())
}

/// The digests of a tarball, as npm writes them in `dist`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarballDigests {
    /// Lowercase hex sha1 (`dist.shasum`).
    pub shasum: String,
    /// `sha512-<base64>` (`dist.integrity`).
    pub integrity: String,
    /// Lowercase hex sha256 (hoard's blob address).
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

impl TarballDigests {
    /// Hashes `bytes`.
    pub fn compute(bytes: &[u8]) -> TarballDigests {
        TarballHashes::of(bytes).digests()
    }
}

/// Every hash that `dist.shasum` and `dist.integrity` may name, of a
/// tarball: computed in one pass as its bytes stream by
/// ([`TarballHasher`]), so it can be checked without holding the tarball.
#[derive(Clone, PartialEq, Eq)]
pub struct TarballHashes {
    pub size: u64,
    pub sha1: [u8; 20],
    pub sha256: [u8; 32],
    pub sha384: [u8; 48],
    pub sha512: [u8; 64],
}

impl std::fmt::Debug for TarballHashes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarballHashes")
            .field("size", &self.size)
            .field("sha256", &hex::encode(self.sha256))
            .finish_non_exhaustive()
    }
}

impl TarballHashes {
    pub fn of(bytes: &[u8]) -> TarballHashes {
        let mut hasher = TarballHasher::default();
        hasher.update(bytes);
        hasher.finish()
    }

    /// The digests as npm writes them, and hoard's sha256.
    pub fn digests(&self) -> TarballDigests {
        TarballDigests {
            shasum: hex::encode(self.sha1),
            integrity: format!("sha512-{}", B64.encode(self.sha512)),
            sha256: hex::encode(self.sha256),
            size: self.size,
        }
    }
}

/// Computes [`TarballHashes`] incrementally.
#[derive(Clone, Default)]
pub struct TarballHasher {
    size: u64,
    sha1: Sha1,
    sha256: Sha256,
    sha384: Sha384,
    sha512: Sha512,
}

impl TarballHasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        self.sha1.update(bytes);
        self.sha256.update(bytes);
        self.sha384.update(bytes);
        self.sha512.update(bytes);
    }

    pub fn finish(self) -> TarballHashes {
        TarballHashes {
            size: self.size,
            sha1: self.sha1.finalize().into(),
            sha256: self.sha256.finalize().into(),
            sha384: self.sha384.finalize().into(),
            sha512: self.sha512.finalize().into(),
        }
    }
}

/// Checks a tarball against a version's `dist` object and returns its
/// digests. `dist.shasum`, when present, must be 40 hex digits and the sha1
/// of the bytes. `dist.integrity`, when present, is a space-separated SRI
/// list (`sha512-… sha1-…`, options after `?` ignored); every entry for
/// sha1, sha256, sha384 or sha512 must match the bytes, entries for other
/// algorithms are ignored, and at least one entry must be checkable. A
/// missing `dist` or missing fields are accepted: hoard computes its own
/// digests and serves those.
pub fn verify_tarball(dist: &Value, bytes: &[u8]) -> Result<TarballDigests, NpmError> {
    verify_tarball_hashes(dist, &TarballHashes::of(bytes))
}

/// [`verify_tarball`] of a tarball that was hashed as it streamed by.
pub fn verify_tarball_hashes(
    dist: &Value,
    hashes: &TarballHashes,
) -> Result<TarballDigests, NpmError> {
    let digests = hashes.digests();
    let dist = match dist {
        Value::Null => return Ok(digests),
        Value::Object(map) => map,
        _ => return Err(NpmError::InvalidDocument("'dist' must be an object".into())),
    };
    match dist.get("shasum") {
        None | Some(Value::Null) => {}
        Some(Value::String(declared)) => {
            if declared.len() != 40 || !declared.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(NpmError::InvalidDigest {
                    field: "dist.shasum",
                    reason: "expected 40 hex digits (sha1)".into(),
                });
            }
            if !declared.eq_ignore_ascii_case(&digests.shasum) {
                return Err(NpmError::ShasumMismatch {
                    declared: declared.to_ascii_lowercase(),
                    actual: digests.shasum,
                });
            }
        }
        Some(_) => {
            return Err(NpmError::InvalidDigest {
                field: "dist.shasum",
                reason: "must be a string".into(),
            })
        }
    }
    match dist.get("integrity") {
        None | Some(Value::Null) => {}
        Some(Value::String(sri)) => verify_integrity_hashes(sri, hashes)?,
        Some(_) => {
            return Err(NpmError::InvalidDigest {
                field: "dist.integrity",
                reason: "must be a string".into(),
            })
        }
    }
    Ok(digests)
}

/// Checks an SRI string (see [`verify_tarball`]).
pub fn verify_integrity(sri: &str, bytes: &[u8]) -> Result<(), NpmError> {
    verify_integrity_hashes(sri, &TarballHashes::of(bytes))
}

/// [`verify_integrity`] against hashes computed as the bytes streamed by.
pub fn verify_integrity_hashes(sri: &str, hashes: &TarballHashes) -> Result<(), NpmError> {
    let bad = |reason: String| NpmError::InvalidDigest {
        field: "dist.integrity",
        reason,
    };
    let mut checked = 0usize;
    for entry in sri.split_ascii_whitespace() {
        let hash = entry.split('?').next().unwrap_or_default();
        let Some((algorithm, b64)) = hash.split_once('-') else {
            return Err(bad(format!(
                "'{}' is not '<algorithm>-<base64>'",
                short(entry)
            )));
        };
        let (name, actual): (&'static str, &[u8]) = match algorithm {
            "sha512" => ("sha512", &hashes.sha512),
            "sha384" => ("sha384", &hashes.sha384),
            "sha256" => ("sha256", &hashes.sha256),
            "sha1" => ("sha1", &hashes.sha1),
            _ => continue,
        };
        let declared = B64
            .decode(b64)
            .map_err(|_| bad(format!("'{}' is not valid base64", short(entry))))?;
        if declared.len() != actual.len() {
            return Err(bad(format!(
                "'{}' has the wrong length for {name}",
                short(entry)
            )));
        }
        if declared != actual {
            return Err(NpmError::IntegrityMismatch {
                algorithm: name,
                declared: short(hash),
                actual: format!("{name}-{}", B64.encode(actual)),
            });
        }
        checked += 1;
    }
    if checked == 0 {
        return Err(bad(
            "no sha512, sha384, sha256 or sha1 hash to check the tarball against".into(),
        ));
    }
    Ok(())
}

/// Bounds user text quoted in messages.
fn short(s: &str) -> String {
    const MAX: usize = 200;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(MAX).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pkg(s: &str) -> PackageName {
        PackageName::parse(s).unwrap()
    }

    #[test]
    fn basenames() {
        assert_eq!(
            tarball_basename(&pkg("hoard-demo"), "1.0.0"),
            "hoard-demo-1.0.0.tgz"
        );
        assert_eq!(
            tarball_basename(&pkg("@acme/widget"), "1.0.0-rc.1"),
            "widget-1.0.0-rc.1.tgz"
        );
    }

    #[test]
    fn parses_basenames() {
        let p = pkg("hoard-demo");
        assert_eq!(
            parse_tarball_basename(&p, "hoard-demo-1.0.0.tgz").unwrap(),
            "1.0.0"
        );
        assert_eq!(
            parse_tarball_basename(&p, "hoard-demo-1.0.0-rc.1+b.2.tgz").unwrap(),
            "1.0.0-rc.1+b.2"
        );
        let s = pkg("@acme/widget");
        assert_eq!(
            parse_tarball_basename(&s, "widget-2.0.0.tgz").unwrap(),
            "2.0.0"
        );
        assert_eq!(
            parse_tarball_basename(&s, "@acme/widget-2.0.0.tgz").unwrap(),
            "2.0.0"
        );
        // A dashed name: the prefix is the whole name.
        let d = pkg("a-b");
        assert_eq!(
            parse_tarball_basename(&d, "a-b-1.2.3.tgz").unwrap(),
            "1.2.3"
        );
        for bad in [
            "hoard-demo-1.0.0.tar.gz",
            "other-1.0.0.tgz",
            "hoard-demo-1.0.tgz",
            "hoard-demo-.tgz",
            "hoard-demo-v1.0.0.tgz",
            "hoard-demo-1.0.0.tgz/x",
            "",
            "../hoard-demo-1.0.0.tgz",
        ] {
            assert!(
                matches!(
                    parse_tarball_basename(&p, bad),
                    Err(NpmError::InvalidTarballName { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(parse_tarball_basename(&s, "@other/widget-1.0.0.tgz").is_err());
    }

    #[test]
    fn computes_npm_digests() {
        let d = TarballDigests::compute(b"hello");
        assert_eq!(d.shasum, "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d");
        assert_eq!(
            d.integrity,
            "sha512-m3HSJL1i83hdltRq0+o9czGb+8KJDKra4t/3JRlnPKcjI8PZm6XBHXx6zG4UuMXaDEZjR1wuXDre9G9zvN7AQw=="
        );
        assert_eq!(
            d.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(d.size, 5);
    }

    #[test]
    fn verifies_declared_digests() {
        let d = TarballDigests::compute(b"hello");
        let sha1_sri = format!("sha1-{}", B64.encode(Sha1::digest(b"hello")));
        let ok = [
            json!({"shasum": d.shasum, "integrity": d.integrity}),
            json!({"shasum": d.shasum.to_uppercase()}),
            json!({"integrity": format!("{} {sha1_sri}", d.integrity)}),
            json!({"integrity": format!("  {}?opt=1  md5-xyz ", d.integrity)}),
            json!({}),
            Value::Null,
        ];
        for dist in ok {
            assert_eq!(verify_tarball(&dist, b"hello").unwrap(), d, "{dist}");
        }
    }

    #[test]
    fn refuses_shasum_mismatch() {
        let e = verify_tarball(&json!({"shasum": "0".repeat(40)}), b"hello").unwrap_err();
        assert_eq!(
            e.to_string(),
            "shasum mismatch: dist.shasum is 0000000000000000000000000000000000000000 but the tarball's sha1 is aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"
        );
        for bad in [
            json!({"shasum": "abc"}),
            json!({"shasum": "z".repeat(40)}),
            json!({"shasum": 5}),
        ] {
            assert!(
                matches!(
                    verify_tarball(&bad, b"hello"),
                    Err(NpmError::InvalidDigest { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn refuses_integrity_mismatch() {
        let other = TarballDigests::compute(b"other");
        let e = verify_tarball(&json!({"integrity": other.integrity}), b"hello").unwrap_err();
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
        // Every checkable entry must match, not just one.
        let good = TarballDigests::compute(b"hello").integrity;
        let wrong_sha1 = format!("sha1-{}", B64.encode(Sha1::digest(b"other")));
        let e = verify_tarball(
            &json!({"integrity": format!("{good} {wrong_sha1}")}),
            b"hello",
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                NpmError::IntegrityMismatch {
                    algorithm: "sha1",
                    ..
                }
            ),
            "{e}"
        );
        let wrong_256 = format!("sha256-{}", B64.encode(Sha256::digest(b"other")));
        assert!(verify_tarball(&json!({"integrity": wrong_256}), b"hello").is_err());
    }

    #[test]
    fn refuses_malformed_integrity() {
        for bad in [
            json!({"integrity": ""}),
            json!({"integrity": "md5-abc"}),
            json!({"integrity": "sha512"}),
            json!({"integrity": "sha512-!!!"}),
            json!({"integrity": "sha512-aGVsbG8="}),
            json!({"integrity": ["sha512-x"]}),
        ] {
            assert!(
                matches!(
                    verify_tarball(&bad, b"hello"),
                    Err(NpmError::InvalidDigest { .. })
                ),
                "{bad}"
            );
        }
        assert!(verify_tarball(&json!("dist"), b"hello").is_err());
    }
}
