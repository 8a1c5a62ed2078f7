//! Project names (PEP 503 / PEP 508) and versions (PEP 440).

use std::cmp::Ordering;
use std::str::FromStr;

use pep440_rs::Version;

use crate::PypiError;

/// Longest version string accepted; real versions are far shorter.
const MAX_VERSION_LEN: usize = 128;

/// PEP 503 normalization: lowercase, and every run of `-`, `_` and `.` becomes
/// one `-`. It does not validate: see [`is_valid_project_name`].
pub fn normalize_project_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_sep {
                out.push('-');
                in_sep = true;
            }
        } else {
            out.extend(c.to_lowercase());
            in_sep = false;
        }
    }
    out
}

/// PEP 508 name rule, case-insensitive:
/// `^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$`.
pub fn is_valid_project_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Parses a PEP 440 version. Surrounding whitespace is not accepted.
pub(crate) fn parse_version(v: &str) -> Result<Version, PypiError> {
    let invalid = || PypiError::InvalidVersion {
        version: v.to_owned(),
    };
    if v.is_empty() || v.len() > MAX_VERSION_LEN || v.trim() != v {
        return Err(invalid());
    }
    Version::from_str(v).map_err(|_| invalid())
}

/// Validates a PEP 440 version and returns its normalized form
/// (`"1.0.0-alpha1"` -> `"1.0.0a1"`, `"1.0-1"` -> `"1.0.post1"`).
pub fn normalize_version(v: &str) -> Result<String, PypiError> {
    parse_version(v).map(|v| v.to_string())
}

/// Sorts versions ascending in PEP 440 order. Versions that PEP 440 considers
/// equal (`1.0`, `1.0.0`) are ordered by their text; unparseable strings come
/// last, in lexicographic order.
pub fn sort_versions(versions: &mut [String]) {
    let mut keyed: Vec<(Option<Version>, String)> = versions
        .iter_mut()
        .map(|s| (Version::from_str(s).ok(), std::mem::take(s)))
        .collect();
    keyed.sort_by(|(va, sa), (vb, sb)| match (va, vb) {
        (Some(a), Some(b)) => a.cmp(b).then_with(|| sa.cmp(sb)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => sa.cmp(sb),
    });
    for (slot, (_, s)) in versions.iter_mut().zip(keyed) {
        *slot = s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_names_per_pep_503() {
        assert_eq!(normalize_project_name("Django"), "django");
        assert_eq!(normalize_project_name("foo_bar"), "foo-bar");
        assert_eq!(normalize_project_name("Foo.Bar"), "foo-bar");
        assert_eq!(normalize_project_name("foo-_.-bar"), "foo-bar");
        assert_eq!(
            normalize_project_name("FOO__BAR--baz..qux"),
            "foo-bar-baz-qux"
        );
        assert_eq!(normalize_project_name("a"), "a");
        assert_eq!(normalize_project_name(""), "");
    }

    #[test]
    fn validates_names_per_pep_508() {
        for ok in [
            "a",
            "Z",
            "9",
            "foo",
            "Foo-Bar",
            "foo_bar.baz",
            "a-1",
            "zope.interface",
        ] {
            assert!(is_valid_project_name(ok), "{ok} should be valid");
        }
        for bad in [
            "", "-foo", "foo-", "_foo", "foo.", ".foo", "foo bar", "foo/bar", "föo", "foo+bar",
            "a\0",
        ] {
            assert!(!is_valid_project_name(bad), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn normalizes_versions() {
        let cases = [
            ("1.0", "1.0"),
            ("1.0.0-alpha1", "1.0.0a1"),
            ("1.0.0.a1", "1.0.0a1"),
            ("1.0-1", "1.0.post1"),
            ("1.0.post1", "1.0.post1"),
            ("1.0-r1", "1.0.post1"),
            ("1.0.DEV2", "1.0.dev2"),
            ("v2.0", "2.0"),
            ("1!2.0rc1", "1!2.0rc1"),
            ("1.0+Local.Build", "1.0+local.build"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_version(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn rejects_non_pep440_versions() {
        for bad in [
            "",
            "abc",
            "1.0-beta-final",
            " 1.0",
            "1.0 ",
            "1..0",
            "1.0/2",
            "latest",
        ] {
            let err = normalize_version(bad).unwrap_err();
            assert_eq!(
                err,
                PypiError::InvalidVersion {
                    version: bad.into()
                }
            );
        }
        let long = "1.".repeat(100) + "0";
        assert!(normalize_version(&long).is_err());
        assert_eq!(
            normalize_version("abc").unwrap_err().to_string(),
            "invalid version 'abc': not a valid PEP 440 version"
        );
    }

    #[test]
    fn sorts_versions_in_pep440_order() {
        let mut v: Vec<String> = [
            "1.10",
            "garbage",
            "1.0",
            "1.0.post1",
            "1.0a1",
            "1.0.dev0",
            "0.9",
            "1.2",
            "1.0rc1",
            "2!0.1",
            "another",
            "1.0.0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        sort_versions(&mut v);
        assert_eq!(
            v,
            [
                "0.9",
                "1.0.dev0",
                "1.0a1",
                "1.0rc1",
                "1.0",
                "1.0.0",
                "1.0.post1",
                "1.2",
                "1.10",
                "2!0.1",
                "another",
                "garbage"
            ]
        );
        let mut empty: Vec<String> = Vec::new();
        sort_versions(&mut empty);
        assert!(empty.is_empty());
    }
}
