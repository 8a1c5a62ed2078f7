//! Which npm registry endpoint a request path names.
//!
//! The server strips `/{repo}/` (and `+at/{serial}/`) and the query, and
//! passes the rest, still percent-encoded, to [`parse_npm_path`]. Package
//! names come in three spellings: `name`, `@scope%2fname` (one segment;
//! `%2F` too; what npm uses for packuments and dist-tags) and `@scope/name`
//! (two segments; what tarball URLs use).

use crate::login::parse_couch_user_segment;
use crate::names::percent_decode;
use crate::tarball::parse_tarball_basename;
use crate::{NpmError, PackageName};

/// An npm registry endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NpmPath {
    /// `` (the registry root).
    Root,
    /// `-/ping` (`npm ping`): answer `{}`.
    Ping,
    /// `-/whoami`.
    Whoami,
    /// `-/v1/search`.
    Search,
    /// `-/v1/login` (web login; see [`crate::WEB_LOGIN_FALLBACK_STATUS`]).
    WebLogin,
    /// `-/user/org.couchdb.user:{user}` (and `…/-rev/{rev}`): legacy login.
    CouchUser { user: String },
    /// `-/npm/v1/security/…`: audit (not supported).
    Audit,
    /// `-/package/{name}/dist-tags`.
    DistTags { name: PackageName },
    /// `-/package/{name}/dist-tags/{tag}` (tag percent-decoded, not
    /// validated: `GET`/`DELETE` of any tag is harmless).
    DistTag { name: PackageName, tag: String },
    /// `{name}`: the packument (`GET`), a publish or deprecate (`PUT`).
    Package { name: PackageName },
    /// `{name}/{version-or-tag}`: one version's manifest.
    PackageVersion { name: PackageName, spec: String },
    /// `{name}/-rev/{rev}`: `PUT` (unpublish of a version, owner changes) or
    /// `DELETE` (unpublish of the package).
    PackageRevision { name: PackageName, rev: String },
    /// `{name}/-/{basename}`: a tarball. `basename` is the registry form
    /// (`widget-1.0.0.tgz`) even when the path used npm's scoped publish form
    /// (`@acme/widget-1.0.0.tgz`).
    Tarball {
        name: PackageName,
        basename: String,
        version: String,
    },
    /// `{name}/-/{basename}/-rev/{rev}`: `DELETE` of a tarball (unpublish).
    TarballRevision {
        name: PackageName,
        basename: String,
        version: String,
        rev: String,
    },
}

/// Parses a registry path (below the repository root, percent-encoded,
/// without query). Errors are [`NpmError::InvalidName`] and friends for a
/// bad name or file, [`NpmError::UnknownPath`] for anything else (answer
/// 404).
pub fn parse_npm_path(path: &str) -> Result<NpmPath, NpmError> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let unknown = || NpmError::UnknownPath(path.chars().take(200).collect());
    if path.is_empty() {
        return Ok(NpmPath::Root);
    }
    let segs: Vec<&str> = path.split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return Err(unknown());
    }
    if segs[0] == "-" {
        return match &segs[1..] {
            ["ping"] => Ok(NpmPath::Ping),
            ["whoami"] => Ok(NpmPath::Whoami),
            ["v1", "search"] => Ok(NpmPath::Search),
            ["v1", "login"] => Ok(NpmPath::WebLogin),
            ["user", user] | ["user", user, "-rev", _] => Ok(NpmPath::CouchUser {
                user: parse_couch_user_segment(user)?,
            }),
            ["npm", "v1", "security", ..] => Ok(NpmPath::Audit),
            ["package", rest @ ..] => {
                let (name, rest) = take_name(rest).ok_or_else(unknown)??;
                match rest {
                    ["dist-tags"] => Ok(NpmPath::DistTags { name }),
                    ["dist-tags", tag] => Ok(NpmPath::DistTag {
                        name,
                        tag: percent_decode(tag).map_err(|_| unknown())?,
                    }),
                    _ => Err(unknown()),
                }
            }
            _ => Err(unknown()),
        };
    }
    let (name, rest) = take_name(&segs).ok_or_else(unknown)??;
    match rest {
        [] => Ok(NpmPath::Package { name }),
        ["-rev", rev] => Ok(NpmPath::PackageRevision {
            name,
            rev: (*rev).to_owned(),
        }),
        ["-", file @ ..] => {
            // npm's publish form for scoped tarballs: `-/@scope/name-1.0.0.tgz`.
            let (file, rev) = match file {
                [f] => (percent_decode(f)?, None),
                [f, "-rev", r] => (percent_decode(f)?, Some(*r)),
                [s, f] => (
                    format!("{}/{}", percent_decode(s)?, percent_decode(f)?),
                    None,
                ),
                [s, f, "-rev", r] => (
                    format!("{}/{}", percent_decode(s)?, percent_decode(f)?),
                    Some(*r),
                ),
                _ => return Err(unknown()),
            };
            let version = parse_tarball_basename(&name, &file)?;
            let basename = crate::tarball_basename(&name, &version);
            Ok(match rev {
                None => NpmPath::Tarball {
                    name,
                    basename,
                    version,
                },
                Some(rev) => NpmPath::TarballRevision {
                    name,
                    basename,
                    version,
                    rev: rev.to_owned(),
                },
            })
        }
        [spec] if !spec.starts_with('-') => Ok(NpmPath::PackageVersion {
            name,
            spec: percent_decode(spec).map_err(|_| unknown())?,
        }),
        _ => Err(unknown()),
    }
}

type NameAndRest<'a> = Result<(PackageName, &'a [&'a str]), NpmError>;

/// Takes a package name off the front of the segments: `@scope/name` (two
/// segments) or one segment. `None` when there are no segments.
fn take_name<'a>(segs: &'a [&'a str]) -> Option<NameAndRest<'a>> {
    let first = *segs.first()?;
    // `@scope` alone (not `@scope%2fname`) starts the two-segment form.
    let decoded_first = percent_decode(first).ok();
    let two = decoded_first
        .as_deref()
        .is_some_and(|d| d.starts_with('@') && !d.contains('/'));
    Some(if two {
        match segs.get(1) {
            Some(second) => {
                PackageName::from_scoped_segments(first, second).map(|n| (n, &segs[2..]))
            }
            None => PackageName::from_path_segment(first).map(|n| (n, &segs[1..])),
        }
    } else {
        PackageName::from_path_segment(first).map(|n| (n, &segs[1..]))
    })
}
