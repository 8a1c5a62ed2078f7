//! npm lockfiles (`package-lock.json`, `npm-shrinkwrap.json`; lockfileVersion
//! 1, 2 and 3): which exact registry packages an `npm ci` installs, and
//! whether the registry's digests agree with the locked ones. For
//! `hoard prefetch`.
//!
//! Entries that a registry does not serve are left out. Without a word:
//! the root and workspace folders (keys without `node_modules/`), links
//! (`link: true`), and packages bundled in their parent's tarball
//! (`inBundle`, v1 `bundled`), since fetching the parent brings them.
//! Listed in [`PackageLock::skipped`]: packages from git, `file:` or a
//! tarball URL, which the build fetches from there, so that a caller can
//! say that the mirror cannot cover them (they are no error: a lockfile
//! with one git dependency is a valid lockfile).

use std::collections::HashMap;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::{validate_version, PackageName};

/// Standard base64, padded or not: SRI digests are compared as bytes, so
/// that a lockfile written by a tool that drops the `=` still matches.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A lockfile that cannot be read at all, or a locked digest that the
/// registry contradicts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockfileError {
    /// Not JSON.
    #[error("not an npm lockfile: not JSON ({0})")]
    NotJson(String),

    /// JSON, but not shaped like a `package-lock.json`.
    #[error("not an npm lockfile: {0}")]
    NotALockfile(String),

    /// A `lockfileVersion` this reader does not know.
    #[error("unsupported lockfileVersion {0}: hoard reads lockfileVersion 1, 2 and 3")]
    UnsupportedVersion(String),

    /// An algorithm that both sides list has different digests.
    #[error("integrity mismatch: the lockfile locks {locked} but the registry lists {registry}")]
    IntegrityMismatch {
        algorithm: String,
        locked: String,
        registry: String,
    },

    /// The two sides share no algorithm (and no sha1 to compare with
    /// `dist.shasum`), so the locked digest cannot be checked.
    #[error(
        "cannot check integrity: the lockfile locks {locked} but the registry lists {registry}"
    )]
    IntegrityUncheckable { locked: String, registry: String },
}

/// One registry package of a lockfile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockedPackage {
    /// The real name (`@scope/name`), not the alias it is installed under.
    pub name: String,
    /// A strict semver version.
    pub version: String,
    /// The tarball URL the lockfile names (http or https), if any: npm
    /// leaves it out of some lockfiles, and then installs from the
    /// configured registry.
    pub resolved: Option<String>,
    /// The locked SRI string (`sha512-…`), if any.
    pub integrity: Option<String>,
    /// Where the lockfile has it (`node_modules/a/node_modules/@s/b`), for
    /// messages; the first place, when several hold the same version.
    pub path: String,
}

/// A lockfile entry that cannot be prefetched, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockProblem {
    pub path: String,
    pub reason: String,
}

/// A package installed from somewhere other than a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedPackage {
    pub path: String,
    /// Where it comes from: the `resolved` URL, or the v1 `version` spec
    /// (`git+https://…`, `github:user/repo#sha`, `file:…`).
    pub source: String,
}

/// What a lockfile asks a registry for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageLock {
    pub lockfile_version: u64,
    /// Each (name, version) once, sorted by lockfile path.
    pub packages: Vec<LockedPackage>,
    pub problems: Vec<LockProblem>,
    pub skipped: Vec<SkippedPackage>,
}

/// Reads a `package-lock.json` or `npm-shrinkwrap.json`. Version 2 and 3
/// lockfiles are read from `packages` (v2's `dependencies` only repeats it
/// for old clients), version 1 lockfiles from the nested `dependencies`.
/// Entries with a name or version that the registry would refuse, or of
/// the wrong shape, are [`LockProblem`]s; see the module documentation for
/// what is left out.
pub fn parse_package_lock(text: &str) -> Result<PackageLock, LockfileError> {
    let doc: Value =
        serde_json::from_str(text).map_err(|e| LockfileError::NotJson(e.to_string()))?;
    let Value::Object(doc) = doc else {
        return Err(LockfileError::NotALockfile(
            "the document is not a JSON object".into(),
        ));
    };
    let lockfile_version = match doc.get("lockfileVersion") {
        None => return Err(LockfileError::NotALockfile(
            "no lockfileVersion field (only package-lock.json and npm-shrinkwrap.json are read)"
                .into(),
        )),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v @ 1..=3) => v,
            _ => return Err(LockfileError::UnsupportedVersion(n.to_string())),
        },
        Some(other) => return Err(LockfileError::UnsupportedVersion(other.to_string())),
    };
    let mut out = Collector::default();
    match (lockfile_version, doc.get("packages")) {
        (2 | 3, Some(Value::Object(packages))) => read_packages(packages, &mut out),
        (2 | 3, Some(_)) => {
            return Err(LockfileError::NotALockfile(
                "'packages' is not an object".into(),
            ))
        }
        (3, None) => {
            return Err(LockfileError::NotALockfile(
                "a lockfileVersion 3 lockfile has a 'packages' object".into(),
            ))
        }
        // v1, and a v2 lockfile that lost its `packages`: v2 keeps the v1
        // tree for npm 6, and it names the same packages.
        _ => match doc.get("dependencies") {
            None => {}
            Some(Value::Object(deps)) => read_dependencies(deps, "", &mut out),
            Some(_) => {
                return Err(LockfileError::NotALockfile(
                    "'dependencies' is not an object".into(),
                ))
            }
        },
    }
    Ok(PackageLock {
        lockfile_version,
        packages: out.packages,
        problems: out.problems,
        skipped: out.skipped,
    })
}

#[derive(Default)]
struct Collector {
    packages: Vec<LockedPackage>,
    problems: Vec<LockProblem>,
    skipped: Vec<SkippedPackage>,
    seen: HashMap<(String, String), usize>,
}

impl Collector {
    fn problem(&mut self, path: &str, reason: impl Into<String>) {
        self.problems.push(LockProblem {
            path: path.to_owned(),
            reason: reason.into(),
        });
    }

    fn skip(&mut self, path: &str, source: &str) {
        self.skipped.push(SkippedPackage {
            path: path.to_owned(),
            source: source.to_owned(),
        });
    }

    fn add(
        &mut self,
        path: &str,
        name: &str,
        version: &str,
        resolved: Option<&str>,
        integrity: Option<&str>,
    ) {
        let name = match PackageName::parse(name) {
            Ok(n) => n.full(),
            Err(e) => return self.problem(path, e.to_string()),
        };
        let version = match validate_version(version) {
            Ok(v) => v,
            Err(e) => return self.problem(path, e.to_string()),
        };
        let key = (name.clone(), version.clone());
        if let Some(&at) = self.seen.get(&key) {
            let first = &mut self.packages[at];
            match (&first.integrity, integrity) {
                (None, Some(i)) => first.integrity = Some(i.to_owned()),
                (Some(a), Some(b)) => {
                    if let IntegrityComparison::Disagree { .. } = compare_integrity(a, b) {
                        let reason = format!(
                            "{name}@{version} is locked with integrity {b}, but {} with {a}",
                            first.path
                        );
                        self.problem(path, reason);
                    }
                }
                _ => {}
            }
            return;
        }
        self.seen.insert(key, self.packages.len());
        self.packages.push(LockedPackage {
            name,
            version,
            resolved: resolved.map(str::to_owned),
            integrity: integrity.map(str::to_owned),
            path: path.to_owned(),
        });
    }
}

/// The name a `packages` key installs: what follows its last
/// `node_modules/` (`@s/b` for `node_modules/a/node_modules/@s/b`). `None`
/// for the root and workspace folders.
fn installed_name(key: &str) -> Option<&str> {
    match key.rsplit_once("/node_modules/") {
        Some((_, name)) => Some(name),
        None => key.strip_prefix("node_modules/"),
    }
}

fn flag(entry: &Map<String, Value>, field: &str) -> bool {
    entry.get(field).and_then(Value::as_bool) == Some(true)
}

/// String fields, `None` when absent; `Err` when one has another type.
fn string_fields<'a, const N: usize>(
    entry: &'a Map<String, Value>,
    fields: [&str; N],
) -> Result<[Option<&'a str>; N], String> {
    let mut out = [None; N];
    for (slot, field) in out.iter_mut().zip(fields) {
        *slot = match entry.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err(format!("'{field}' is not a string")),
        };
    }
    Ok(out)
}

/// serde_json's map order depends on a feature that any crate in the
/// build may turn on; sorting makes the order of a run the same anyway.
fn sorted(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

fn is_http_url(s: &str) -> bool {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://")
}

fn read_packages(packages: &Map<String, Value>, out: &mut Collector) {
    for (path, entry) in sorted(packages) {
        let Some(installed) = installed_name(path) else {
            continue;
        };
        let Value::Object(entry) = entry else {
            out.problem(path, "the entry is not an object");
            continue;
        };
        if flag(entry, "link") || flag(entry, "inBundle") {
            continue;
        }
        let fields = string_fields(entry, ["name", "version", "resolved", "integrity"]);
        let [name, version, resolved, integrity] = match fields {
            Ok(f) => f,
            Err(reason) => {
                out.problem(path, reason);
                continue;
            }
        };
        if let Some(source) = resolved.filter(|r| !is_http_url(r)) {
            out.skip(path, source);
            continue;
        }
        let Some(version) = version else {
            out.problem(path, "no version");
            continue;
        };
        // An alias (`"node_modules/alias": {"name": "real"}`) installs
        // `real` under another folder name.
        out.add(
            path,
            name.unwrap_or(installed),
            version,
            resolved,
            integrity,
        );
    }
}

/// Walks a v1 `dependencies` tree below `parent` (a `node_modules/…` path,
/// or empty for the root), naming entries by the path they install to.
fn read_dependencies(deps: &Map<String, Value>, parent: &str, out: &mut Collector) {
    for (key, entry) in sorted(deps) {
        let path = format!("{parent}node_modules/{key}");
        let Value::Object(entry) = entry else {
            out.problem(&path, "the entry is not an object");
            continue;
        };
        // What a bundled package depends on is bundled with it.
        if flag(entry, "bundled") {
            continue;
        }
        read_v1_entry(key, entry, &path, out);
        match entry.get("dependencies") {
            None | Some(Value::Null) => {}
            Some(Value::Object(nested)) => read_dependencies(nested, &format!("{path}/"), out),
            Some(_) => out.problem(&path, "'dependencies' is not an object"),
        }
    }
}

fn read_v1_entry(key: &str, entry: &Map<String, Value>, path: &str, out: &mut Collector) {
    let [version, resolved, integrity] =
        match string_fields(entry, ["version", "resolved", "integrity"]) {
            Ok(f) => f,
            Err(reason) => return out.problem(path, reason),
        };
    let Some(version) = version else {
        return out.problem(path, "no version");
    };
    let (name, version) = match version.strip_prefix("npm:") {
        Some(spec) => match spec.rsplit_once('@') {
            Some((name, version)) if !name.is_empty() => (name, version),
            _ => {
                return out.problem(
                    path,
                    format!("alias '{version}' is not 'npm:<name>@<version>'"),
                )
            }
        },
        // No semver version has a ':' or '/': this is a git, GitHub,
        // file or tarball URL spec.
        None if version.contains([':', '/']) => return out.skip(path, version),
        None => (key, version),
    };
    if let Some(source) = resolved.filter(|r| !is_http_url(r)) {
        return out.skip(path, source);
    }
    out.add(path, name, version, resolved, integrity);
}

/// How two SRI strings (`sha512-<base64> sha1-<base64>`) relate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntegrityComparison {
    /// They share algorithms, and for each shared algorithm a digest.
    Agree,
    /// A shared algorithm has no digest in common.
    Disagree { algorithm: String },
    /// No algorithm is in both.
    NothingInCommon,
}

/// The well-formed `(algorithm, digest)` entries of an SRI string; options
/// after `?` and malformed entries are ignored, as npm's `ssri` does.
fn sri_entries(sri: &str) -> Vec<(String, Vec<u8>)> {
    sri.split_ascii_whitespace()
        .filter_map(|entry| {
            let hash = entry.split('?').next()?;
            let (algorithm, b64) = hash.split_once('-')?;
            let digest = B64.decode(b64).ok().filter(|d| !d.is_empty())?;
            Some((algorithm.to_ascii_lowercase(), digest))
        })
        .collect()
}

/// Compares two SRI strings. Every algorithm that both list must share a
/// digest (a digest is compared decoded, so padding does not matter): one
/// matching sha1 does not outweigh a differing sha512.
pub fn compare_integrity(a: &str, b: &str) -> IntegrityComparison {
    let (a, b) = (sri_entries(a), sri_entries(b));
    let mut common = false;
    for (algorithm, _) in &a {
        if !b.iter().any(|(alg, _)| alg == algorithm) {
            continue;
        }
        common = true;
        let shared = a.iter().any(|(alg_a, da)| {
            alg_a == algorithm && b.iter().any(|(alg_b, db)| alg_b == algorithm && da == db)
        });
        if !shared {
            return IntegrityComparison::Disagree {
                algorithm: algorithm.clone(),
            };
        }
    }
    if common {
        IntegrityComparison::Agree
    } else {
        IntegrityComparison::NothingInCommon
    }
}

/// Checks a locked SRI string against a registry version's `dist.integrity`
/// and `dist.shasum`: by [`compare_integrity`] when they share an
/// algorithm, else by the locked sha1 against the hex `shasum` (lockfiles
/// of old npm versions lock only sha1). A digest that cannot be checked
/// either way is an error too: the prefetch would cache a file that
/// nothing vouches for.
pub fn check_locked_integrity(
    locked: &str,
    dist_integrity: Option<&str>,
    dist_shasum: Option<&str>,
) -> Result<(), LockfileError> {
    if let Some(registry) = dist_integrity {
        match compare_integrity(locked, registry) {
            IntegrityComparison::Agree => return Ok(()),
            IntegrityComparison::Disagree { algorithm } => {
                return Err(LockfileError::IntegrityMismatch {
                    algorithm,
                    locked: locked.trim().to_owned(),
                    registry: registry.trim().to_owned(),
                })
            }
            IntegrityComparison::NothingInCommon => {}
        }
    }
    let locked_sha1: Vec<String> = sri_entries(locked)
        .into_iter()
        .filter(|(alg, _)| alg == "sha1")
        .map(|(_, digest)| hex::encode(digest))
        .collect();
    let registry = match (dist_integrity, dist_shasum) {
        (Some(i), Some(s)) => format!("{} and shasum {s}", i.trim()),
        (Some(i), None) => i.trim().to_owned(),
        (None, Some(s)) => format!("shasum {s}"),
        (None, None) => "no digest".to_owned(),
    };
    match dist_shasum {
        Some(shasum) if !locked_sha1.is_empty() => {
            if locked_sha1
                .iter()
                .any(|l| l.eq_ignore_ascii_case(shasum.trim()))
            {
                Ok(())
            } else {
                Err(LockfileError::IntegrityMismatch {
                    algorithm: "sha1".into(),
                    locked: locked.trim().to_owned(),
                    registry,
                })
            }
        }
        _ => Err(LockfileError::IntegrityUncheckable {
            locked: locked.trim().to_owned(),
            registry,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Digests of b"hello" (see tarball.rs), and of b"other".
    const HELLO_512: &str = "sha512-m3HSJL1i83hdltRq0+o9czGb+8KJDKra4t/3JRlnPKcjI8PZm6XBHXx6zG4UuMXaDEZjR1wuXDre9G9zvN7AQw==";
    const HELLO_SHA1_HEX: &str = "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d";
    const HELLO_SHA1: &str = "sha1-qvTGHdzF6KLavt4PO0gs2a6pQ00=";
    const OTHER_SHA1: &str = "sha1-0JQeaNqPOBUf+Gph/Fn3xc+fyqI=";

    fn other_512() -> String {
        crate::TarballDigests::compute(b"other").integrity
    }

    fn names(lock: &PackageLock) -> Vec<String> {
        lock.packages
            .iter()
            .map(|p| format!("{}@{}", p.name, p.version))
            .collect()
    }

    /// A workspace project as npm 10 writes it: a scoped package, nested
    /// versions, an alias, a workspace link, a bundled dependency, a git
    /// and a `file:` dependency, and one entry without `resolved`.
    const V3: &str = r#"{
  "name": "app",
  "version": "1.0.0",
  "lockfileVersion": 3,
  "requires": true,
  "packages": {
    "": {
      "name": "app",
      "version": "1.0.0",
      "workspaces": ["packages/*"],
      "dependencies": {"@babel/code-frame": "^7.24.0", "cjs-width": "npm:string-width@^4.2.3"}
    },
    "node_modules/@babel/code-frame": {
      "version": "7.24.7",
      "resolved": "https://registry.npmjs.org/@babel/code-frame/-/code-frame-7.24.7.tgz",
      "integrity": "sha512-BcYH1CVJBO9tvyIZ2jVeXgSIMvGZ2FDRvDdOIVQyuklNKSsx+eppDEBq/g47Ayw+RqNFE+URvOShmf+f/qwAlA==",
      "dependencies": {"picocolors": "^1.0.0"},
      "engines": {"node": ">=6.9.0"}
    },
    "node_modules/cjs-width": {
      "name": "string-width",
      "version": "4.2.3",
      "resolved": "https://registry.npmjs.org/string-width/-/string-width-4.2.3.tgz",
      "integrity": "sha512-wKyQRQpjJ0sIp62ErSZdGsjMJWsap5oRNihHhu6G7JVO/9jIB6UyevL+tXuOqrng8j/cxKTWyWUwvSTriiZz/g=="
    },
    "node_modules/string-width": {
      "version": "4.2.3",
      "resolved": "https://registry.npmjs.org/string-width/-/string-width-4.2.3.tgz",
      "integrity": "sha512-wKyQRQpjJ0sIp62ErSZdGsjMJWsap5oRNihHhu6G7JVO/9jIB6UyevL+tXuOqrng8j/cxKTWyWUwvSTriiZz/g=="
    },
    "node_modules/picocolors": {
      "version": "1.0.1",
      "resolved": "https://registry.npmjs.org/picocolors/-/picocolors-1.0.1.tgz",
      "integrity": "sha512-anP1Z8qwhkbmu7MFP5iTt+wQKXgwzf7zTyGlcdzabySa9vd0Xt392U0rVmz9poOaBj0uHJKyyo9/upk0HrEQew=="
    },
    "node_modules/wrap/node_modules/@scope/inner": {
      "version": "2.0.0",
      "resolved": "https://registry.npmjs.org/@scope/inner/-/inner-2.0.0.tgz",
      "integrity": "sha512-AAAA"
    },
    "node_modules/wrap": {
      "version": "1.0.0",
      "resolved": "https://registry.npmjs.org/wrap/-/wrap-1.0.0.tgz",
      "integrity": "sha1-qvTGHdzF6KLavt4PO0gs2a6pQ00="
    },
    "node_modules/other/node_modules/picocolors": {
      "version": "1.0.1",
      "resolved": "https://registry.npmjs.org/picocolors/-/picocolors-1.0.1.tgz",
      "integrity": "sha512-anP1Z8qwhkbmu7MFP5iTt+wQKXgwzf7zTyGlcdzabySa9vd0Xt392U0rVmz9poOaBj0uHJKyyo9/upk0HrEQew=="
    },
    "node_modules/other": {
      "version": "3.1.0",
      "resolved": "http://registry.internal:4873/other/-/other-3.1.0.tgz",
      "dependencies": {"picocolors": "1.0.1"}
    },
    "node_modules/my-lib": {
      "resolved": "packages/my-lib",
      "link": true
    },
    "packages/my-lib": {
      "name": "my-lib",
      "version": "0.1.0",
      "dependencies": {"left-pad": "1.3.0"}
    },
    "packages/my-lib/node_modules/left-pad": {
      "version": "1.3.0",
      "license": "WTFPL"
    },
    "node_modules/npm": {
      "version": "10.8.2",
      "resolved": "https://registry.npmjs.org/npm/-/npm-10.8.2.tgz",
      "bundleDependencies": ["abbrev"]
    },
    "node_modules/npm/node_modules/abbrev": {
      "version": "2.0.0",
      "inBundle": true
    },
    "node_modules/gitdep": {
      "version": "1.0.0",
      "resolved": "git+ssh://git@github.com/acme/gitdep.git#5b4c0dbc1ae2d3f1b8c1d9d0b4f5cf1b1f2a3c4d"
    },
    "node_modules/vendored": {
      "version": "0.0.1",
      "resolved": "file:vendor/vendored-0.0.1.tgz",
      "integrity": "sha512-AAAA"
    }
  }
}"#;

    #[test]
    fn reads_v3_packages() {
        let lock = parse_package_lock(V3).unwrap();
        assert_eq!(lock.lockfile_version, 3);
        assert_eq!(
            names(&lock),
            // The alias and the plain string-width are one package, and
            // the two picocolors too.
            [
                "@babel/code-frame@7.24.7",
                "string-width@4.2.3",
                "npm@10.8.2",
                "other@3.1.0",
                "picocolors@1.0.1",
                "wrap@1.0.0",
                "@scope/inner@2.0.0",
                "left-pad@1.3.0",
            ]
        );
        assert!(lock.problems.is_empty(), "{:?}", lock.problems);
        let alias = &lock.packages[1];
        assert_eq!(alias.path, "node_modules/cjs-width");
        assert_eq!(
            alias.resolved.as_deref(),
            Some("https://registry.npmjs.org/string-width/-/string-width-4.2.3.tgz")
        );
        let scoped = lock
            .packages
            .iter()
            .find(|p| p.name == "@scope/inner")
            .unwrap();
        assert_eq!(scoped.path, "node_modules/wrap/node_modules/@scope/inner");
        assert_eq!(scoped.integrity.as_deref(), Some("sha512-AAAA"));
        let unresolved = lock.packages.last().unwrap();
        assert_eq!(unresolved.path, "packages/my-lib/node_modules/left-pad");
        assert_eq!(
            (unresolved.resolved.clone(), unresolved.integrity.clone()),
            (None, None)
        );
        assert_eq!(
            lock.skipped,
            [
                SkippedPackage {
                    path: "node_modules/gitdep".into(),
                    source: "git+ssh://git@github.com/acme/gitdep.git#5b4c0dbc1ae2d3f1b8c1d9d0b4f5cf1b1f2a3c4d".into(),
                },
                SkippedPackage {
                    path: "node_modules/vendored".into(),
                    source: "file:vendor/vendored-0.0.1.tgz".into(),
                },
            ]
        );
    }

    #[test]
    fn v2_reads_packages_not_its_v1_copy() {
        let text = r#"{
  "name": "app", "lockfileVersion": 2, "requires": true,
  "packages": {
    "": {"name": "app", "dependencies": {"ms": "^2.1.3"}},
    "node_modules/ms": {
      "version": "2.1.3",
      "resolved": "https://registry.npmjs.org/ms/-/ms-2.1.3.tgz",
      "integrity": "sha512-6FlzubTLZG3J2a/NVCAleEhjzq5oxgHyaCU9yYXvcLsvoVaHJq/s5xXI6/XXP6tz7R9xAOtHnSO/tXtF3WRTlA=="
    }
  },
  "dependencies": {
    "ms": {"version": "2.1.3", "resolved": "https://registry.npmjs.org/ms/-/ms-2.1.3.tgz"},
    "only-in-v1-copy": {"version": "1.0.0"}
  }
}"#;
        let lock = parse_package_lock(text).unwrap();
        assert_eq!(lock.lockfile_version, 2);
        assert_eq!(names(&lock), ["ms@2.1.3"]);
    }

    /// An npm 6 lockfile: nesting, aliases (scoped too), a bundled
    /// subtree, git, GitHub, `file:` and tarball-URL versions.
    const V1: &str = r#"{
  "name": "legacy",
  "version": "1.0.0",
  "lockfileVersion": 1,
  "requires": true,
  "dependencies": {
    "@types/node": {
      "version": "20.14.9",
      "resolved": "https://registry.npmjs.org/@types/node/-/node-20.14.9.tgz",
      "integrity": "sha512-06OCtnTXtWOZBJlRApleWndH4JsRVs1pDCc8dLSQp+7PpUpX3ePdHyeNSFTeSe7FtKyQkrlPvHwJOW3SLd8Oyg==",
      "dev": true
    },
    "debug": {
      "version": "4.3.5",
      "resolved": "https://registry.npmjs.org/debug/-/debug-4.3.5.tgz",
      "integrity": "sha512-pt0bNEmneDIvdL1Xsd9oDQ/wrQRkXDT4AUWlNZNPKvW5x/jyO9VFXkJUP07vQ2upmw5PlaITaPKc31jK13V+jg==",
      "requires": {"ms": "2.1.2"},
      "dependencies": {
        "ms": {
          "version": "2.1.2",
          "resolved": "https://registry.npmjs.org/ms/-/ms-2.1.2.tgz",
          "integrity": "sha512-sGkPx+VjMtmA6MX27oA4FBFELFCZZ4S4XqeGOXCv68tT+jb3vk/RyaKWP0PTKyWtmLSM0b+adUTEvbs1PEaH2w=="
        }
      }
    },
    "ms": {
      "version": "2.1.3",
      "resolved": "https://registry.npmjs.org/ms/-/ms-2.1.3.tgz",
      "integrity": "sha1-qvTGHdzF6KLavt4PO0gs2a6pQ00="
    },
    "my-types": {
      "version": "npm:@types/node@20.14.9",
      "resolved": "https://registry.npmjs.org/@types/node/-/node-20.14.9.tgz",
      "integrity": "sha512-06OCtnTXtWOZBJlRApleWndH4JsRVs1pDCc8dLSQp+7PpUpX3ePdHyeNSFTeSe7FtKyQkrlPvHwJOW3SLd8Oyg=="
    },
    "old-ms": {
      "version": "npm:ms@0.7.3",
      "resolved": "https://registry.npmjs.org/ms/-/ms-0.7.3.tgz",
      "integrity": "sha1-cIFVpeROM/X9D8U+gdDUCpG+H/8="
    },
    "node-pre-gyp": {
      "version": "0.17.0",
      "resolved": "https://registry.npmjs.org/node-pre-gyp/-/node-pre-gyp-0.17.0.tgz",
      "dependencies": {
        "abbrev": {
          "version": "1.1.1",
          "bundled": true,
          "dependencies": {"deep": {"version": "1.0.0", "bundled": true}}
        }
      }
    },
    "gitdep": {
      "version": "git+https://github.com/acme/gitdep.git#5b4c0dbc1ae2d3f1b8c1d9d0b4f5cf1b1f2a3c4d",
      "from": "git+https://github.com/acme/gitdep.git",
      "requires": {"ms": "^2.1.1"},
      "dependencies": {"semver": {"version": "7.6.2", "resolved": "https://registry.npmjs.org/semver/-/semver-7.6.2.tgz"}}
    },
    "ghdep": {"version": "github:acme/ghdep#0123456789abcdef", "from": "github:acme/ghdep"},
    "local": {"version": "file:../local"},
    "remote": {"version": "https://example.com/remote-1.0.0.tgz", "integrity": "sha512-AAAA"}
  }
}"#;

    #[test]
    fn reads_v1_dependencies() {
        let lock = parse_package_lock(V1).unwrap();
        assert_eq!(lock.lockfile_version, 1);
        assert_eq!(
            names(&lock),
            [
                "@types/node@20.14.9",
                "debug@4.3.5",
                "ms@2.1.2",
                "semver@7.6.2",
                "ms@2.1.3",
                "node-pre-gyp@0.17.0",
                "ms@0.7.3",
            ]
        );
        assert!(lock.problems.is_empty(), "{:?}", lock.problems);
        assert_eq!(lock.packages[2].path, "node_modules/debug/node_modules/ms");
        assert_eq!(
            lock.packages[3].path,
            "node_modules/gitdep/node_modules/semver"
        );
        assert_eq!(lock.packages[6].path, "node_modules/old-ms");
        let skipped: Vec<&str> = lock.skipped.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            skipped,
            [
                "node_modules/ghdep",
                "node_modules/gitdep",
                "node_modules/local",
                "node_modules/remote"
            ]
        );
        assert_eq!(lock.skipped[2].source, "file:../local");
    }

    #[test]
    fn bad_entries_are_problems() {
        let text = r#"{
  "lockfileVersion": 3,
  "packages": {
    "": {"name": "app"},
    "node_modules/no-version": {"resolved": "https://r.test/no-version/-/no-version-1.0.0.tgz"},
    "node_modules/loose": {"version": "1.0"},
    "node_modules/.hidden": {"version": "1.0.0"},
    "node_modules/weird": {"version": 1},
    "node_modules/scalar": "1.0.0",
    "node_modules/ok": {"version": "1.0.0", "integrity": "sha1-qvTGHdzF6KLavt4PO0gs2a6pQ00="},
    "node_modules/x/node_modules/ok": {"version": "1.0.0", "integrity": "sha1-0JQeaNqPOBUf+Gph/Fn3xc+fyqI="}
  }
}"#;
        let lock = parse_package_lock(text).unwrap();
        assert_eq!(names(&lock), ["ok@1.0.0"]);
        let problems: Vec<(&str, &str)> = lock
            .problems
            .iter()
            .map(|p| (p.path.as_str(), p.reason.as_str()))
            .collect();
        assert_eq!(problems.len(), 6, "{problems:?}");
        assert_eq!(problems[0].0, "node_modules/.hidden");
        assert!(problems[0].1.starts_with("invalid package name '.hidden'"));
        assert_eq!(problems[1].0, "node_modules/loose");
        assert!(problems[1].1.starts_with("invalid version '1.0'"));
        assert_eq!(problems[2], ("node_modules/no-version", "no version"));
        assert_eq!(
            problems[3],
            ("node_modules/scalar", "the entry is not an object")
        );
        assert_eq!(
            problems[4],
            ("node_modules/weird", "'version' is not a string")
        );
        assert_eq!(problems[5].0, "node_modules/x/node_modules/ok");
        assert!(
            problems[5].1.contains("but node_modules/ok with"),
            "{}",
            problems[5].1
        );

        let v1 = r#"{"lockfileVersion": 1, "dependencies": {"a": {"version": "npm:@1.0.0"}}}"#;
        let lock = parse_package_lock(v1).unwrap();
        assert_eq!(
            lock.problems,
            [LockProblem {
                path: "node_modules/a".into(),
                reason: "alias 'npm:@1.0.0' is not 'npm:<name>@<version>'".into()
            }]
        );
    }

    #[test]
    fn duplicates_fill_in_a_missing_integrity() {
        let text = r#"{"lockfileVersion": 3, "packages": {
            "node_modules/a/node_modules/ms": {"version": "2.1.3", "integrity": "sha1-qvTGHdzF6KLavt4PO0gs2a6pQ00="},
            "node_modules/ms": {"version": "2.1.3"}
        }}"#;
        let lock = parse_package_lock(text).unwrap();
        assert_eq!(lock.packages.len(), 1);
        assert_eq!(lock.packages[0].path, "node_modules/a/node_modules/ms");
        let text = text.replace(
            r#""integrity": "sha1-qvTGHdzF6KLavt4PO0gs2a6pQ00=""#,
            r#""resolved": "https://r.test/ms/-/ms-2.1.3.tgz""#,
        );
        let text = text.replace(
            r#"{"version": "2.1.3"}"#,
            &format!(r#"{{"version": "2.1.3", "integrity": "{HELLO_512}"}}"#),
        );
        let lock = parse_package_lock(&text).unwrap();
        assert_eq!(lock.packages[0].integrity.as_deref(), Some(HELLO_512));
    }

    #[test]
    fn refuses_what_is_not_a_lockfile() {
        let cases = [
            ("", "not an npm lockfile: not JSON"),
            ("flask==3.0.0\n", "not an npm lockfile: not JSON"),
            (
                "[]",
                "not an npm lockfile: the document is not a JSON object",
            ),
            (
                r#"{"name": "app", "dependencies": {}}"#,
                "not an npm lockfile: no lockfileVersion field",
            ),
            (
                r#"{"lockfileVersion": 4, "packages": {}}"#,
                "unsupported lockfileVersion 4",
            ),
            (
                r#"{"lockfileVersion": "3"}"#,
                "unsupported lockfileVersion \"3\"",
            ),
            (r#"{"lockfileVersion": 0}"#, "unsupported lockfileVersion 0"),
            (
                r#"{"lockfileVersion": 3}"#,
                "not an npm lockfile: a lockfileVersion 3 lockfile has a 'packages' object",
            ),
            (
                r#"{"lockfileVersion": 2, "packages": []}"#,
                "not an npm lockfile: 'packages' is not an object",
            ),
            (
                r#"{"lockfileVersion": 1, "dependencies": []}"#,
                "not an npm lockfile: 'dependencies' is not an object",
            ),
        ];
        for (text, message) in cases {
            let e = parse_package_lock(text).unwrap_err().to_string();
            assert!(e.starts_with(message), "{text:?}: {e}");
        }
        // An empty project's lockfile.
        let lock = parse_package_lock(r#"{"lockfileVersion": 1}"#).unwrap();
        assert!(lock.packages.is_empty() && lock.problems.is_empty());
    }

    #[test]
    fn compares_sri_strings() {
        use IntegrityComparison::*;
        let other = other_512();
        assert_eq!(compare_integrity(HELLO_512, HELLO_512), Agree);
        // Options, extra whitespace, unknown and malformed entries.
        assert_eq!(
            compare_integrity(&format!(" {HELLO_512}?foo md5-xyz bogus "), HELLO_512),
            Agree
        );
        // Several digests of one algorithm: one shared is enough.
        assert_eq!(
            compare_integrity(&format!("{other} {HELLO_512}"), HELLO_512),
            Agree
        );
        assert_eq!(
            compare_integrity(&format!("{HELLO_512} {HELLO_SHA1}"), HELLO_SHA1),
            Agree
        );
        assert_eq!(
            compare_integrity(HELLO_512, &other),
            Disagree {
                algorithm: "sha512".into()
            }
        );
        // A matching sha1 does not excuse a differing sha512.
        assert_eq!(
            compare_integrity(
                &format!("{HELLO_512} {HELLO_SHA1}"),
                &format!("{other} {HELLO_SHA1}")
            ),
            Disagree {
                algorithm: "sha512".into()
            }
        );
        assert_eq!(compare_integrity(HELLO_512, HELLO_SHA1), NothingInCommon);
        assert_eq!(compare_integrity("", HELLO_SHA1), NothingInCommon);
        // Base64 without its padding is the same digest.
        assert_eq!(
            compare_integrity(HELLO_512.trim_end_matches('='), HELLO_512),
            Agree
        );
    }

    #[test]
    fn checks_locked_integrity_against_dist() {
        assert_eq!(
            check_locked_integrity(HELLO_512, Some(HELLO_512), Some(HELLO_SHA1_HEX)),
            Ok(())
        );
        // Old lockfiles lock sha1; new registries list sha512 and shasum.
        assert_eq!(
            check_locked_integrity(HELLO_SHA1, Some(HELLO_512), Some(HELLO_SHA1_HEX)),
            Ok(())
        );
        assert_eq!(
            check_locked_integrity(HELLO_SHA1, None, Some(&HELLO_SHA1_HEX.to_uppercase())),
            Ok(())
        );
        let e = check_locked_integrity(HELLO_512, Some(&other_512()), Some(HELLO_SHA1_HEX))
            .unwrap_err();
        assert!(
            matches!(&e, LockfileError::IntegrityMismatch { algorithm, .. } if algorithm == "sha512"),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "integrity mismatch: the lockfile locks {HELLO_512} but the registry lists {}",
                other_512()
            )
        );
        let e =
            check_locked_integrity(OTHER_SHA1, Some(HELLO_512), Some(HELLO_SHA1_HEX)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "integrity mismatch: the lockfile locks {OTHER_SHA1} but the registry lists {HELLO_512} and shasum {HELLO_SHA1_HEX}"
            )
        );
        // Nothing to compare with: no verdict is no pass.
        let e = check_locked_integrity(HELLO_512, None, Some(HELLO_SHA1_HEX)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("cannot check integrity: the lockfile locks {HELLO_512} but the registry lists shasum {HELLO_SHA1_HEX}")
        );
        assert!(matches!(
            check_locked_integrity(HELLO_SHA1, None, None),
            Err(LockfileError::IntegrityUncheckable { .. })
        ));
        assert!(matches!(
            check_locked_integrity("sha512-!!!", Some(HELLO_512), None),
            Err(LockfileError::IntegrityUncheckable { .. })
        ));
    }
}
