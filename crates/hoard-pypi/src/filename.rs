//! Distribution file names: wheels (`.whl`) and sdists (`.tar.gz`, `.zip`).

use pep440_rs::Version;

use crate::names::{is_valid_project_name, normalize_project_name, parse_version};
use crate::PypiError;

/// Longest file name accepted, in bytes (a common file system limit).
pub const MAX_FILENAME_BYTES: usize = 255;

/// The kind of a distribution file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DistKind {
    /// A built distribution, `.whl`.
    Wheel,
    /// A source distribution, `.tar.gz` or `.zip`.
    Sdist,
}

impl DistKind {
    /// The `filetype` / `packagetype` name used by twine and PyPI.
    pub fn packagetype(self) -> &'static str {
        match self {
            DistKind::Wheel => "bdist_wheel",
            DistKind::Sdist => "sdist",
        }
    }
}

/// A parsed, validated distribution file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistFilename {
    /// The file name itself, unchanged.
    pub filename: String,
    /// The project name as written in the file name (e.g. `Foo_Bar`).
    pub name: String,
    /// The PEP 503 normalized project name (e.g. `foo-bar`).
    pub project: String,
    /// The normalized PEP 440 version.
    pub version: String,
    /// Wheel or sdist.
    pub kind: DistKind,
}

impl DistFilename {
    /// The file's extension, including its dot: `.whl`, `.tar.gz` or `.zip`.
    pub fn extension(&self) -> &'static str {
        if self.filename.ends_with(".whl") {
            ".whl"
        } else if self.filename.ends_with(".zip") {
            ".zip"
        } else {
            ".tar.gz"
        }
    }
}

fn invalid(filename: &str, reason: impl Into<String>) -> PypiError {
    PypiError::InvalidFilename {
        filename: filename.to_owned(),
        reason: reason.into(),
    }
}

/// Rejects names that are unsafe as path components or in a URL.
fn check_safe(filename: &str) -> Result<(), PypiError> {
    if filename.is_empty() {
        return Err(invalid(filename, "empty filename"));
    }
    if filename.len() > MAX_FILENAME_BYTES {
        return Err(invalid(
            filename,
            format!("longer than {MAX_FILENAME_BYTES} bytes"),
        ));
    }
    if filename.chars().any(char::is_control) {
        return Err(invalid(filename, "contains a control character"));
    }
    if filename.contains('/') || filename.contains('\\') {
        return Err(invalid(filename, "contains a path separator"));
    }
    if filename.contains("..") {
        return Err(invalid(filename, "contains '..'"));
    }
    if filename.starts_with('.') {
        return Err(invalid(filename, "starts with '.'"));
    }
    Ok(())
}

/// Parses and validates an uploaded distribution file name.
///
/// - Unsafe names are rejected: empty, over 255 bytes, control characters
///   (NUL included), `/`, `\`, `..`, a leading `.`.
/// - Only `.whl`, `.tar.gz` and `.zip` (sdist) are accepted; anything else
///   (`.exe`, `.egg`, `.tar.bz2`, …) is "unsupported file type".
/// - Wheels: `{name}-{version}(-{build})?-{python tag}-{abi tag}-{platform tag}.whl`,
///   with the name escaped (no `-`), a build tag starting with a digit, and
///   non-empty tags of `[A-Za-z0-9_.]`.
/// - Sdists: `{name}-{version}.tar.gz` / `.zip`; the name may contain `-`, so
///   the split is at the last `-` whose suffix is a PEP 440 version and whose
///   prefix is a valid project name.
pub fn parse_dist_filename(filename: &str) -> Result<DistFilename, PypiError> {
    check_safe(filename)?;
    if let Some(stem) = filename.strip_suffix(".whl") {
        parse_wheel(filename, stem)
    } else if let Some(stem) = filename
        .strip_suffix(".tar.gz")
        .or_else(|| filename.strip_suffix(".zip"))
    {
        parse_sdist(filename, stem)
    } else {
        Err(PypiError::UnsupportedFileType {
            filename: filename.to_owned(),
        })
    }
}

fn is_tag(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

fn parse_wheel(filename: &str, stem: &str) -> Result<DistFilename, PypiError> {
    let parts: Vec<&str> = stem.split('-').collect();
    let (name, version, build, tags) =
        match parts.as_slice() {
            [n, v, py, abi, plat] => (*n, *v, None, [*py, *abi, *plat]),
            [n, v, b, py, abi, plat] => (*n, *v, Some(*b), [*py, *abi, *plat]),
            _ => return Err(invalid(
                filename,
                "expected '{name}-{version}(-{build})?-{python tag}-{abi tag}-{platform tag}.whl'",
            )),
        };
    if !is_valid_project_name(name) {
        return Err(PypiError::InvalidProjectName { name: name.into() });
    }
    let version = parse_version(version)?;
    if let Some(build) = build {
        if !build.starts_with(|c: char| c.is_ascii_digit()) || !is_tag(build) {
            return Err(invalid(
                filename,
                format!("invalid build tag '{build}' (must start with a digit)"),
            ));
        }
    }
    if let Some(bad) = tags.iter().find(|t| !is_tag(t)) {
        return Err(invalid(filename, format!("invalid wheel tag '{bad}'")));
    }
    Ok(DistFilename {
        filename: filename.to_owned(),
        name: name.to_owned(),
        project: normalize_project_name(name),
        version: version.to_string(),
        kind: DistKind::Wheel,
    })
}

fn parse_sdist(filename: &str, stem: &str) -> Result<DistFilename, PypiError> {
    let (name, version) = split_name_version(stem).ok_or_else(|| match stem.rsplit_once('-') {
        None => invalid(filename, "expected '{name}-{version}.tar.gz' or '.zip'"),
        Some((name, version)) => {
            if parse_version(version).is_err() {
                PypiError::InvalidVersion {
                    version: version.into(),
                }
            } else {
                PypiError::InvalidProjectName { name: name.into() }
            }
        }
    })?;
    Ok(DistFilename {
        filename: filename.to_owned(),
        name: name.to_owned(),
        project: normalize_project_name(name),
        version: version.to_string(),
        kind: DistKind::Sdist,
    })
}

/// Every way to read `stem` as `{valid name}-{PEP 440 version}`, the split at
/// the last `-` first.
pub(crate) fn name_version_splits(stem: &str) -> impl Iterator<Item = (&str, Version)> {
    stem.rmatch_indices('-').filter_map(move |(i, _)| {
        let (name, version) = (&stem[..i], &stem[i + 1..]);
        if !is_valid_project_name(name) {
            return None;
        }
        parse_version(version).ok().map(|v| (name, v))
    })
}

fn split_name_version(stem: &str) -> Option<(&str, Version)> {
    name_version_splits(stem).next()
}

/// The part of a distribution file name before its extension.
pub(crate) fn stem(file: &DistFilename) -> &str {
    let name = file.filename.as_str();
    name.strip_suffix(file.extension()).unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(f: &str) -> DistFilename {
        parse_dist_filename(f).unwrap_or_else(|e| panic!("{f}: {e}"))
    }

    #[test]
    fn parses_wheels() {
        let d = ok("Foo_Bar-1.0.0-py3-none-any.whl");
        assert_eq!(d.filename, "Foo_Bar-1.0.0-py3-none-any.whl");
        assert_eq!(d.name, "Foo_Bar");
        assert_eq!(d.project, "foo-bar");
        assert_eq!(d.version, "1.0.0");
        assert_eq!(d.kind, DistKind::Wheel);
        assert_eq!(d.kind.packagetype(), "bdist_wheel");
        assert_eq!(d.extension(), ".whl");

        let d = ok("numpy-2.1.0rc1-1-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl");
        assert_eq!(d.project, "numpy");
        assert_eq!(d.version, "2.1.0rc1");

        let d = ok("torch-2.0.0+cu118-cp311-cp311-linux_x86_64.whl");
        assert_eq!(d.version, "2.0.0+cu118");

        let d = ok("zope.interface-6.0-py2.py3-none-any.whl");
        assert_eq!(d.project, "zope-interface");
    }

    #[test]
    fn parses_sdists() {
        let d = ok("foo_bar-1.0.tar.gz");
        assert_eq!(
            (d.name.as_str(), d.project.as_str()),
            ("foo_bar", "foo-bar")
        );
        assert_eq!(d.version, "1.0");
        assert_eq!(d.kind, DistKind::Sdist);
        assert_eq!(d.kind.packagetype(), "sdist");
        assert_eq!(d.extension(), ".tar.gz");

        let d = ok("my-cool-pkg-2.0.0a1.zip");
        assert_eq!(d.name, "my-cool-pkg");
        assert_eq!(d.project, "my-cool-pkg");
        assert_eq!(d.version, "2.0.0a1");
        assert_eq!(d.extension(), ".zip");

        let d = ok("Django-4.2.tar.gz");
        assert_eq!((d.name.as_str(), d.project.as_str()), ("Django", "django"));

        // A name ending in a number still splits at the version.
        let d = ok("py-2-1.0.tar.gz");
        assert_eq!((d.name.as_str(), d.version.as_str()), ("py-2", "1.0"));
    }

    #[test]
    fn rejects_unsafe_names() {
        let long = format!("{}-1.0.tar.gz", "a".repeat(250));
        for bad in [
            "",
            "../foo-1.0.tar.gz",
            "foo/bar-1.0.tar.gz",
            "foo\\bar-1.0.tar.gz",
            "foo-1.0\0.tar.gz",
            "foo-1.0\n.tar.gz",
            "foo-1.0\u{7f}.tar.gz",
            ".foo-1.0.tar.gz",
            "foo..bar-1.0.tar.gz",
            long.as_str(),
        ] {
            match parse_dist_filename(bad) {
                Err(PypiError::InvalidFilename { filename, .. }) => assert_eq!(filename, bad),
                other => panic!("{bad:?}: expected InvalidFilename, got {other:?}"),
            }
        }
        assert_eq!(
            parse_dist_filename("../x.tar.gz").unwrap_err().to_string(),
            "invalid filename '../x.tar.gz': contains a path separator"
        );
    }

    #[test]
    fn rejects_unsupported_extensions() {
        for bad in [
            "foo-1.0.exe",
            "foo-1.0-py3.8.egg",
            "foo-1.0.tar.bz2",
            "foo-1.0.tar",
            "foo-1.0.tgz",
            "foo-1.0.msi",
            "foo-1.0.rpm",
            "foo-1.0.TAR.GZ",
            "foo",
        ] {
            assert_eq!(
                parse_dist_filename(bad),
                Err(PypiError::UnsupportedFileType {
                    filename: bad.into()
                }),
                "{bad}"
            );
        }
        assert!(parse_dist_filename("foo-1.0.exe")
            .unwrap_err()
            .to_string()
            .starts_with("unsupported file type"));
    }

    #[test]
    fn rejects_bad_versions() {
        for bad in [
            "foo-notaversion.tar.gz",
            "foo-1.0.x.zip",
            "foo-latest-py3-none-any.whl",
            "foo-1.0_beta_final-py3-none-any.whl",
        ] {
            assert!(
                matches!(
                    parse_dist_filename(bad),
                    Err(PypiError::InvalidVersion { .. })
                ),
                "{bad}: {:?}",
                parse_dist_filename(bad)
            );
        }
        assert_eq!(
            parse_dist_filename("foo-abc.tar.gz")
                .unwrap_err()
                .to_string(),
            "invalid version 'abc': not a valid PEP 440 version"
        );
    }

    #[test]
    fn rejects_malformed_wheels() {
        for bad in [
            "foo-1.0.whl",
            "foo-1.0-py3-none.whl",
            "foo-1.0-1-2-py3-none-any.whl",
            "foo-1.0-py3--any.whl",
            "foo-1.0-py3-none-.whl",
            "foo-1.0-abc-py3-none-any.whl",
            "foo-1.0-py3-none-any+x.whl",
        ] {
            assert!(
                matches!(
                    parse_dist_filename(bad),
                    Err(PypiError::InvalidFilename { .. })
                ),
                "{bad}: {:?}",
                parse_dist_filename(bad)
            );
        }
        for bad in [
            "_foo-1.0-py3-none-any.whl",
            "foo+x-1.0-py3-none-any.whl",
            "-1.0-py3-none-any.whl",
        ] {
            assert!(
                matches!(
                    parse_dist_filename(bad),
                    Err(PypiError::InvalidProjectName { .. })
                ),
                "{bad}: {:?}",
                parse_dist_filename(bad)
            );
        }
    }

    #[test]
    fn rejects_malformed_sdists() {
        assert!(matches!(
            parse_dist_filename("foo.tar.gz"),
            Err(PypiError::InvalidFilename { .. })
        ));
        assert!(matches!(
            parse_dist_filename("-1.0.tar.gz"),
            Err(PypiError::InvalidProjectName { .. })
        ));
        assert!(matches!(
            parse_dist_filename("foo bar-1.0.tar.gz"),
            Err(PypiError::InvalidProjectName { .. })
        ));
    }

    #[test]
    fn splits_all_ways() {
        let splits: Vec<(&str, String)> = name_version_splits("foo-1.0-1")
            .map(|(n, v)| (n, v.to_string()))
            .collect();
        assert_eq!(
            splits,
            [
                ("foo-1.0", "1".to_string()),
                ("foo", "1.0.post1".to_string())
            ]
        );
        assert_eq!(stem(&ok("foo-1.0.tar.gz")), "foo-1.0");
        assert_eq!(stem(&ok("foo-1.0.zip")), "foo-1.0");
    }
}
