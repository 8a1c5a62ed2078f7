//! Versions (strict semver, as the registry requires) and dist-tags.

use std::cmp::Ordering;

use crate::names::is_uri_component_safe;
use crate::NpmError;

/// Longest version accepted, in bytes (npm's semver has the same bound).
pub const MAX_VERSION_LEN: usize = 256;

/// Longest dist-tag accepted, in bytes.
pub const MAX_TAG_LEN: usize = 128;

/// Validates a strict semver version (`1.2.3`, `1.0.0-rc.1`,
/// `1.0.0+build.5`): no leading `v` or `=`, no spaces, no ranges. Returns it
/// unchanged (a strict version is already in canonical form).
pub fn validate_version(version: &str) -> Result<String, NpmError> {
    parse_version(version).map(|_| version.to_owned())
}

pub(crate) fn parse_version(version: &str) -> Result<semver::Version, NpmError> {
    let invalid = |reason: String| NpmError::InvalidVersion {
        version: version.to_owned(),
        reason,
    };
    if version.is_empty() {
        return Err(invalid("a version cannot be empty".into()));
    }
    if version.len() > MAX_VERSION_LEN {
        return Err(invalid(format!(
            "a version can have at most {MAX_VERSION_LEN} characters"
        )));
    }
    semver::Version::parse(version)
        .map_err(|e| invalid(format!("not a strict semver version ({e})")))
}

/// Orders version strings by semver precedence; strings that are not
/// versions sort after the versions, by text. Build metadata breaks ties, so
/// the order is total and deterministic.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    match (semver::Version::parse(a), semver::Version::parse(b)) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

/// Validates a dist-tag name: non-empty, at most 128 bytes, URL-friendly
/// (`encodeURIComponent(tag) == tag`), not `.` or `..`, and not something
/// that npm would read as a version or a range (`1`, `1.x`, `v2`, `^1`, `*`,
/// `x`…): npm itself refuses to add such a tag, because `pkg@<tag>` would be
/// ambiguous.
pub fn validate_tag(tag: &str) -> Result<String, NpmError> {
    let invalid = |reason: &str| {
        Err(NpmError::InvalidTag {
            tag: tag.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if tag.is_empty() {
        return invalid("a tag cannot be empty");
    }
    if tag.len() > MAX_TAG_LEN {
        return invalid("a tag can have at most 128 characters");
    }
    if !is_uri_component_safe(tag) {
        return invalid("a tag can only contain URL-friendly characters");
    }
    if tag == "." || tag == ".." {
        return invalid("a tag cannot be '.' or '..'");
    }
    if looks_like_range(tag) {
        return invalid("a tag must not be a valid semver version or range");
    }
    Ok(tag.to_owned())
}

/// Approximates node-semver's `validRange(tag) != null` for URL-friendly
/// text: a version or partial version, optionally prefixed with `v` or `=`,
/// with `x`/`X`/`*` wildcards (`~`, the only operator that is URL-friendly, is
/// accepted as a prefix too).
fn looks_like_range(tag: &str) -> bool {
    if semver::VersionReq::parse(tag).is_ok() {
        return true;
    }
    let t = tag.trim_start_matches(['~', '=', 'v']);
    if t.is_empty() {
        return tag.contains(['~', '=']);
    }
    // Partial versions: up to three dot-separated parts, each numeric or a
    // wildcard, the last optionally followed by a prerelease/build suffix.
    let (core, _suffix) = match t.find(['-', '+']) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() <= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && (p.bytes().all(|b| b.is_ascii_digit()) || matches!(*p, "x" | "X" | "*"))
        })
}

/// Parses the body of `PUT /-/package/{name}/dist-tags/{tag}`: npm sends the
/// version as a JSON string (`"2.0.0"`). npm sends whatever follows the `@`
/// unresolved (`npm dist-tag add pkg@^1 t` sends `"^1"`), so anything but an
/// exact version is refused with a message that says so. Whether the version
/// exists is for the server to check.
pub fn parse_dist_tag_put(body: &[u8]) -> Result<String, NpmError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| NpmError::MalformedJson(e.to_string()))?;
    let serde_json::Value::String(version) = value else {
        return Err(NpmError::MalformedJson(
            "expected a JSON string holding a version, like \"1.2.3\"".into(),
        ));
    };
    let version = version.trim();
    match parse_version(version) {
        Ok(_) => Ok(version.to_owned()),
        Err(_) => Err(NpmError::DistTagTarget(format!(
            "'{}'",
            version.chars().take(MAX_VERSION_LEN).collect::<String>()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_strict_semver() {
        for ok in [
            "1.0.0",
            "0.0.1",
            "1.0.0-rc.1",
            "1.0.0-alpha+build.5",
            "10.20.30",
        ] {
            assert_eq!(validate_version(ok).unwrap(), ok);
        }
        for bad in [
            "", "1", "1.0", "v1.0.0", "=1.0.0", " 1.0.0", "1.0.0 ", "^1.0.0", "01.0.0", "1.0.0-",
            "latest", "1.0.0.0",
        ] {
            assert!(
                matches!(validate_version(bad), Err(NpmError::InvalidVersion { .. })),
                "{bad:?}"
            );
        }
        assert!(validate_version(&format!("1.0.0-{}", "a".repeat(300))).is_err());
    }

    #[test]
    fn compares_by_semver_precedence() {
        let mut v = vec!["1.10.0", "1.2.0", "not-a-version", "1.2.0-rc.1", "0.9.0"];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(
            v,
            ["0.9.0", "1.2.0-rc.1", "1.2.0", "1.10.0", "not-a-version"]
        );
    }

    #[test]
    fn tags() {
        for ok in [
            "latest",
            "beta",
            "next",
            "canary-2",
            "release_1",
            "Stable",
            "v",
            "x1",
            "1a",
            "legacy",
        ] {
            assert_eq!(validate_tag(ok).unwrap(), ok, "{ok}");
        }
        for bad in [
            "",
            "1",
            "1.0",
            "1.0.0",
            "1.x",
            "1.X.x",
            "x",
            "X",
            "*",
            "v1",
            "v1.2.3",
            "=1.0.0",
            "~1.2",
            "1.0.0-beta",
            "a b",
            "a/b",
            "%2e",
            ".",
            "..",
            "^1",
            ">=1",
            "tag?",
        ] {
            assert!(
                matches!(validate_tag(bad), Err(NpmError::InvalidTag { .. })),
                "{bad:?}"
            );
        }
        assert!(validate_tag(&"t".repeat(129)).is_err());
    }

    #[test]
    fn dist_tag_put_bodies() {
        assert_eq!(parse_dist_tag_put(b"\"2.0.0\"").unwrap(), "2.0.0");
        assert_eq!(
            parse_dist_tag_put(b" \"1.0.0-rc.1\"\n").unwrap(),
            "1.0.0-rc.1"
        );
        assert!(matches!(
            parse_dist_tag_put(b"2.0.0"),
            Err(NpmError::MalformedJson(_))
        ));
        assert!(matches!(
            parse_dist_tag_put(b"{\"v\":1}"),
            Err(NpmError::MalformedJson(_))
        ));
        assert!(matches!(
            parse_dist_tag_put(b""),
            Err(NpmError::MalformedJson(_))
        ));
        let e = parse_dist_tag_put(b"\"^1\"").unwrap_err();
        assert_eq!(
            e.to_string(),
            "dist-tag target '^1' is not an exact version: name one, as in `npm dist-tag add <pkg>@1.2.3 <tag>`"
        );
        assert!(matches!(
            parse_dist_tag_put(b"\"latest\""),
            Err(NpmError::DistTagTarget(_))
        ));
    }
}
