//! Package names, after npm's `validate-npm-package-name` (v5/v6).
//!
//! npm has two levels. A name that breaks an *error* rule was never valid
//! (empty, leading `.` or `_`, surrounding spaces, `node_modules`, not
//! URL-friendly); [`PackageName::parse`] applies only those, so that old
//! packages with capitals (mirrored from upstream) can still be looked up. A
//! name that breaks a *warning* rule (over 214 characters, capital letters,
//! `~'!()*`) is refused for new packages only;
//! [`validate_new_package_name`] applies both. Shadowing a core node module is
//! a warning in npm and is allowed here.

use std::fmt;

use crate::NpmError;

/// Longest name accepted for a new package, in characters (npm's rule).
pub const MAX_NAME_LEN: usize = 214;

/// Longest name accepted at all; a bound for lookups of old packages.
const MAX_ANY_NAME_LEN: usize = 1024;

/// A package name, scoped (`@scope/name`) or not. Both parts are
/// URL-friendly, so they can be put into paths without escaping.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PackageName {
    /// The scope without its `@`.
    pub scope: Option<String>,
    /// The name without its scope.
    pub name: String,
}

impl PackageName {
    /// Parses a name with npm's error rules only (the rules for packages that
    /// may already exist). Use [`validate_new_package_name`] for publishes.
    pub fn parse(name: &str) -> Result<PackageName, NpmError> {
        parse_with(name, false)
    }

    /// `@scope/name`, or `name`: the name as npm users write it, and the
    /// `name` and `_id` of a packument.
    pub fn full(&self) -> String {
        match &self.scope {
            Some(scope) => format!("@{scope}/{}", self.name),
            None => self.name.clone(),
        }
    }

    /// `@scope/name` or `name`: the package's path in tarball URLs, as the
    /// public registry writes them (`/@scope/name/-/name-1.0.0.tgz`) and as
    /// npm then fetches them.
    pub fn url_path(&self) -> String {
        self.full()
    }

    /// `@scope%2fname` or `name`: npm's `escapedName`, the form npm itself
    /// uses in packument and dist-tag request paths.
    pub fn escaped(&self) -> String {
        match &self.scope {
            Some(scope) => format!("@{scope}%2f{}", self.name),
            None => self.name.clone(),
        }
    }

    /// The tarball's path below the registry root:
    /// `@scope/name/-/name-1.0.0.tgz` or `name/-/name-1.0.0.tgz`.
    pub fn tarball_path(&self, version: &str) -> String {
        format!(
            "{}/-/{}",
            self.url_path(),
            crate::tarball_basename(self, version)
        )
    }

    /// Parses one percent-encoded path segment: `name`, or the escaped scoped
    /// form `@scope%2fname` (`%2F` too). Percent escapes are decoded first, so
    /// `%2e%2e` is `..` and is refused like `..`.
    pub fn from_path_segment(segment: &str) -> Result<PackageName, NpmError> {
        let decoded = percent_decode(segment)?;
        PackageName::parse(&decoded)
    }

    /// Parses the two path segments of the unescaped scoped form
    /// (`@scope` and `name`, each percent-encoded).
    pub fn from_scoped_segments(scope: &str, name: &str) -> Result<PackageName, NpmError> {
        let scope = percent_decode(scope)?;
        let name = percent_decode(name)?;
        if !scope.starts_with('@') || scope.contains('/') || name.contains('/') {
            return Err(invalid(
                &format!("{scope}/{name}"),
                "name can only contain URL-friendly characters",
            ));
        }
        PackageName::parse(&format!("{scope}/{name}"))
    }
}

impl fmt::Display for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(scope) = &self.scope {
            write!(f, "@{scope}/")?;
        }
        f.write_str(&self.name)
    }
}

/// Validates the name of a new package with every rule that npm enforces
/// for new packages: non-empty, at most 214 characters, lowercase, no leading
/// `.` or `_`, no surrounding spaces, URL-friendly (`encodeURIComponent(name)
/// == name`, except for the `/` after `@scope`), none of `~'!()*` in the
/// name part, not `node_modules` or `favicon.ico`. A core module name
/// (`http`, `fs`…) is allowed.
pub fn validate_new_package_name(name: &str) -> Result<PackageName, NpmError> {
    parse_with(name, true)
}

pub(crate) fn invalid(name: &str, reason: &str) -> NpmError {
    NpmError::InvalidName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Decodes percent escapes; the result must be UTF-8.
pub(crate) fn percent_decode(s: &str) -> Result<String, NpmError> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| invalid(s, "name is not valid UTF-8 once percent-decoded"))
}

/// `encodeURIComponent(s) == s`: only `A-Z a-z 0-9 - _ . ! ~ * ' ( )`.
pub(crate) fn is_uri_component_safe(s: &str) -> bool {
    s.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
            )
    })
}

fn parse_with(name: &str, new: bool) -> Result<PackageName, NpmError> {
    let err = |reason: &str| Err(invalid(name, reason));
    if name.is_empty() {
        return err("name length must be greater than zero");
    }
    if name.chars().count() > MAX_ANY_NAME_LEN {
        return err("name can no longer contain more than 214 characters");
    }
    if name.starts_with('.') {
        return err("name cannot start with a period");
    }
    if name.starts_with('_') {
        return err("name cannot start with an underscore");
    }
    if name.trim() != name {
        return err("name cannot contain leading or trailing spaces");
    }
    for blocked in ["node_modules", "favicon.ico"] {
        if name.eq_ignore_ascii_case(blocked) {
            return err(&format!("{blocked} is not a valid package name"));
        }
    }
    let parsed = if is_uri_component_safe(name) {
        PackageName {
            scope: None,
            name: name.to_owned(),
        }
    } else {
        // Maybe a scoped name: `@scope/name`, one `/`, both parts URL-safe.
        let scoped = name
            .strip_prefix('@')
            .and_then(|rest| rest.split_once('/'))
            .filter(|(scope, pkg)| !scope.is_empty() && !pkg.is_empty() && !pkg.contains('/'));
        let Some((scope, pkg)) = scoped else {
            return err("name can only contain URL-friendly characters");
        };
        if pkg.starts_with('.') {
            return err("name cannot start with a period");
        }
        if !is_uri_component_safe(scope) || !is_uri_component_safe(pkg) {
            return err("name can only contain URL-friendly characters");
        }
        // Not in npm's rules; closes `@../x` and `@./x` path tricks.
        if scope.starts_with('.') {
            return err("scope cannot start with a period");
        }
        PackageName {
            scope: Some(scope.to_owned()),
            name: pkg.to_owned(),
        }
    };
    if new {
        if name.chars().count() > MAX_NAME_LEN {
            return err("name can no longer contain more than 214 characters");
        }
        if name.to_lowercase() != name {
            return err("name can no longer contain capital letters");
        }
        if parsed.name.contains(['~', '\'', '!', '(', ')', '*']) {
            return err("name can no longer contain special characters (\"~'!()*\")");
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(r: Result<PackageName, NpmError>) -> String {
        match r {
            Err(NpmError::InvalidName { reason, .. }) => reason,
            other => panic!("expected InvalidName, got {other:?}"),
        }
    }

    #[test]
    fn accepts_plain_and_scoped_names() {
        let n = validate_new_package_name("hoard-demo").unwrap();
        assert_eq!(n.scope, None);
        assert_eq!(n.full(), "hoard-demo");
        assert_eq!(n.url_path(), "hoard-demo");
        assert_eq!(n.escaped(), "hoard-demo");

        let s = validate_new_package_name("@acme/widget").unwrap();
        assert_eq!(s.scope.as_deref(), Some("acme"));
        assert_eq!(s.name, "widget");
        assert_eq!(s.full(), "@acme/widget");
        assert_eq!(s.to_string(), "@acme/widget");
        assert_eq!(s.url_path(), "@acme/widget");
        assert_eq!(s.escaped(), "@acme%2fwidget");
        assert_eq!(s.tarball_path("1.0.0"), "@acme/widget/-/widget-1.0.0.tgz");
        assert_eq!(n.tarball_path("1.0.0"), "hoard-demo/-/hoard-demo-1.0.0.tgz");

        for ok in [
            "a",
            "a.b",
            "a_b",
            "a-b",
            "0",
            "http",
            "fs",
            "@a/b.c",
            "x".repeat(214).as_str(),
        ] {
            validate_new_package_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn refuses_empty() {
        assert_eq!(
            reason(validate_new_package_name("")),
            "name length must be greater than zero"
        );
    }

    #[test]
    fn refuses_uppercase_for_new_packages_only() {
        assert_eq!(
            reason(validate_new_package_name("Hoard")),
            "name can no longer contain capital letters"
        );
        assert!(validate_new_package_name("@Acme/widget").is_err());
        // An old package with capitals can still be looked up.
        assert_eq!(
            PackageName::parse("JSONStream").unwrap().full(),
            "JSONStream"
        );
    }

    #[test]
    fn refuses_leading_period_and_underscore() {
        assert_eq!(
            reason(validate_new_package_name(".hidden")),
            "name cannot start with a period"
        );
        assert_eq!(
            reason(validate_new_package_name("_private")),
            "name cannot start with an underscore"
        );
        assert_eq!(
            reason(validate_new_package_name("@acme/.x")),
            "name cannot start with a period"
        );
        assert!(PackageName::parse(".x").is_err());
        assert!(PackageName::parse("_x").is_err());
    }

    #[test]
    fn refuses_dot_dot_in_every_form() {
        for bad in [
            "..",
            ".",
            "../x",
            "@../x",
            "@./x",
            "@acme/..",
            "a/../b",
            "@acme/../x",
        ] {
            assert!(validate_new_package_name(bad).is_err(), "{bad}");
            assert!(PackageName::parse(bad).is_err(), "{bad}");
        }
        for seg in ["%2e%2e", "%2E%2E", ".%2e", "%2e"] {
            assert!(PackageName::from_path_segment(seg).is_err(), "{seg}");
        }
        assert!(PackageName::from_path_segment("@acme%2f%2e%2e").is_err());
        assert!(PackageName::from_scoped_segments("@acme", "%2e%2e").is_err());
        assert!(PackageName::from_scoped_segments("@%2e%2e", "x").is_err());
    }

    #[test]
    fn refuses_over_214_characters() {
        let long = "a".repeat(215);
        assert_eq!(
            reason(validate_new_package_name(&long)),
            "name can no longer contain more than 214 characters"
        );
        assert!(validate_new_package_name(&format!("@s/{}", "a".repeat(212))).is_err());
        assert!(validate_new_package_name(&format!("@s/{}", "a".repeat(211))).is_ok());
        // A huge name is refused even for lookups.
        assert!(PackageName::parse(&"a".repeat(5000)).is_err());
    }

    #[test]
    fn refuses_url_unsafe_names() {
        for bad in [
            "a b", "a/b", "a/b/c", "@a/b/c", "@/b", "@a/", "@", "a%20b", "a?b", "a#b", "a:b", "ü",
            "a\u{0}b", "@a b/c", "a\\b",
        ] {
            assert_eq!(
                reason(validate_new_package_name(bad)),
                "name can only contain URL-friendly characters",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn refuses_surrounding_spaces() {
        assert_eq!(
            reason(validate_new_package_name(" a")),
            "name cannot contain leading or trailing spaces"
        );
        assert!(validate_new_package_name("a ").is_err());
    }

    #[test]
    fn refuses_blocked_names() {
        assert!(validate_new_package_name("node_modules").is_err());
        assert!(validate_new_package_name("favicon.ico").is_err());
        assert!(PackageName::parse("NODE_MODULES").is_err());
    }

    #[test]
    fn refuses_special_characters_for_new_packages() {
        for bad in ["a~b", "a'b", "a!", "(a)", "a*", "@acme/a!"] {
            assert!(validate_new_package_name(bad).is_err(), "{bad}");
            assert!(PackageName::parse(bad).is_ok(), "{bad} is a valid old name");
        }
    }

    #[test]
    fn parses_path_segments_in_both_scoped_forms() {
        for seg in ["@acme%2fwidget", "@acme%2Fwidget", "%40acme%2fwidget"] {
            let n = PackageName::from_path_segment(seg).unwrap();
            assert_eq!(n.full(), "@acme/widget", "{seg}");
        }
        let n = PackageName::from_scoped_segments("@acme", "widget").unwrap();
        assert_eq!(n.full(), "@acme/widget");
        assert_eq!(
            PackageName::from_path_segment("hoard-demo").unwrap().full(),
            "hoard-demo"
        );
        assert!(PackageName::from_scoped_segments("acme", "widget").is_err());
        assert!(PackageName::from_scoped_segments("@acme", "a%2fb").is_err());
        assert!(PackageName::from_path_segment("%ff").is_err());
        assert!(PackageName::from_path_segment("a%2fb").is_err());
    }
}
