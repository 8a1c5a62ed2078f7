//! The read model: what the index stores for each repository, project,
//! file, token and npm package, and why an event can be refused.

use std::collections::BTreeMap;

use hoard_core::{
    FileRecord, GenericPath, NpmTarball, RepoName, RepoSettings, Serial, Sha256, TokenRecord,
    UserRecord,
};
use serde::{Deserialize, Serialize};

/// Why an event could not be applied. Deterministic: every node rejects the
/// same event for the same reason, and a rejected event takes no serial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("repository {0} already exists")]
    RepoExists(RepoName),
    #[error("repository {0} does not exist")]
    RepoMissing(RepoName),
    #[error("file {0} already exists")]
    FileExists(String),
    #[error("file {0} does not exist")]
    FileMissing(String),
    #[error("token already exists")]
    TokenExists,
    #[error("token does not exist")]
    TokenMissing,
    #[error("{0} already exists")]
    VersionExists(String),
    #[error("{0} does not exist")]
    VersionMissing(String),
    #[error("package {0} does not exist")]
    PackageMissing(String),
    /// A mirror cached bytes whose digest is not the one listed.
    #[error("{0}: the cached bytes are not the ones listed")]
    DigestMismatch(String),
    #[error("user {0} already exists")]
    UserExists(String),
    #[error("user {0} does not exist")]
    UserMissing(String),
    /// A user who neither owns a project nor is an admin tried to change it.
    #[error("{}", not_owner_message(.user, .project, .owners))]
    NotOwner {
        user: String,
        project: String,
        owners: Vec<String>,
    },
    #[error("{0}")]
    InvalidOwners(String),
    /// A generic path would be both a file and a directory.
    #[error("{0}")]
    PathConflict(String),
}

fn not_owner_message(user: &str, project: &str, owners: &[String]) -> String {
    if owners.is_empty() {
        format!(
            "user {user} may not change {project}: it has no owners, so only an admin may; \
             ask an admin to add you (hoard owner add)"
        )
    } else {
        format!(
            "user {user} may not change {project}: it belongs to {}; ask one of them to add you as an owner",
            owners.join(", ")
        )
    }
}

/// What package ownership says about a change made as a user.
#[derive(Debug, PartialEq, Eq)]
pub enum Ownership {
    Allowed,
    /// Allowed, and the user becomes the owner of the new project.
    Claims,
}

/// Package ownership: a change made as `user` to `project` must come from
/// one of its owners or from an admin. The first user to create a project
/// (`exists == false`) owns it, unless owners were named for it before;
/// a project with no owners (made by an admin or a service token) is
/// changed only by admins until an admin names its owners.
pub fn ownership(
    user: &str,
    account: Option<&UserState>,
    owners: Option<&OwnersState>,
    project: &str,
    exists: bool,
) -> Result<Ownership, Rejection> {
    let Some(account) = account else {
        return Err(Rejection::UserMissing(user.to_owned()));
    };
    match owners {
        Some(o) if o.owners.iter().any(|u| u == user) => Ok(Ownership::Allowed),
        None if !exists => Ok(Ownership::Claims),
        _ if account.record.admin => Ok(Ownership::Allowed),
        _ => Err(Rejection::NotOwner {
            user: user.to_owned(),
            project: project.to_owned(),
            owners: owners.map(|o| o.owners.clone()).unwrap_or_default(),
        }),
    }
}

/// A user account, and the serial it was created at: tokens made before it
/// (for an earlier account of the same name) do not work for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    pub record: UserRecord,
    pub created: Serial,
}

/// Who owns a PyPI project or an npm package.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnersState {
    pub owners: Vec<String>,
    pub changed: Serial,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoState {
    pub name: RepoName,
    pub settings: RepoSettings,
    pub created: Serial,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectState {
    /// The normalized name.
    pub name: String,
    pub display_name: String,
    pub created: Serial,
}

/// One yank or un-yank of a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct YankChange {
    pub serial: Serial,
    /// `Some(reason)` (possibly empty) when yanked, `None` when un-yanked.
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    pub record: FileRecord,
    pub added: Serial,
    pub upload_time_us: i64,
    pub uploader: String,
    /// Every yank change, oldest first, so that any past state can be read.
    pub yanks: Vec<YankChange>,
    /// For a file of a mirror: where it came from, and whether its bytes
    /// are stored yet. `None` for an uploaded file, whose bytes always are.
    #[serde(default)]
    pub mirror: Option<MirrorOrigin>,
}

/// A mirrored file's upstream, and which of its bytes are cached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorOrigin {
    pub url: String,
    /// The serial at which the file's bytes were stored.
    pub cached: Option<Serial>,
    /// The serial at which its PEP 658 metadata was stored.
    pub metadata_cached: Option<Serial>,
}

impl FileState {
    /// The blobs this node holds for the file: all of an uploaded file's,
    /// and what a mirror has fetched so far.
    pub fn stored_blobs(&self) -> Vec<Sha256> {
        let r = &self.record;
        match &self.mirror {
            None => std::iter::once(r.sha256).chain(r.core_metadata).collect(),
            Some(origin) => {
                let file = origin.cached.map(|_| r.sha256);
                let metadata = origin.metadata_cached.and(r.core_metadata);
                file.into_iter().chain(metadata).collect()
            }
        }
    }

    /// Whether the file's own bytes are stored (always, unless mirrored).
    pub fn is_stored(&self) -> bool {
        self.mirror.as_ref().is_none_or(|m| m.cached.is_some())
    }

    /// The yank reason in force at `at` (`None`: the latest state).
    pub fn yanked_at(&self, at: Option<Serial>) -> Option<&str> {
        self.yanks
            .iter()
            .rev()
            .find(|y| at.is_none_or(|at| y.serial <= at))
            .and_then(|y| y.reason.as_deref())
    }
}

/// A file of a generic repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenericFileState {
    pub path: GenericPath,
    pub sha256: Sha256,
    pub size: u64,
    pub added: Serial,
    pub upload_time_us: i64,
    pub uploader: String,
    /// Where a mirror fetched it from; `None` for an upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_url: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenState {
    pub record: TokenRecord,
    pub created: Serial,
    pub revoked: Option<Serial>,
}

/// One change of an npm dist-tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagChange {
    pub serial: Serial,
    pub time_us: i64,
    /// `None`: the tag was removed.
    pub version: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NpmPackageState {
    /// The full name, `name` or `@scope/name`.
    pub name: String,
    pub created: Serial,
    pub created_us: i64,
    /// Every change of every tag, oldest first.
    pub tags: BTreeMap<String, Vec<TagChange>>,
}

impl NpmPackageState {
    /// The dist-tags in force at `at` (`None`: now).
    pub fn tags_at(&self, at: Option<Serial>) -> BTreeMap<String, String> {
        self.tags
            .iter()
            .filter_map(|(tag, changes)| {
                let change = changes
                    .iter()
                    .rev()
                    .find(|c| at.is_none_or(|at| c.serial <= at))?;
                Some((tag.clone(), change.version.clone()?))
            })
            .collect()
    }

    /// The time of the latest tag change at `at`.
    pub fn last_tag_change_us(&self, at: Option<Serial>) -> Option<i64> {
        self.tags
            .values()
            .flatten()
            .filter(|c| at.is_none_or(|at| c.serial <= at))
            .map(|c| c.time_us)
            .max()
    }
}

/// One deprecation or un-deprecation of an npm version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeprecationChange {
    pub serial: Serial,
    pub time_us: i64,
    pub message: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NpmVersionState {
    pub version: String,
    /// The manifest as published (or as the upstream listed it), as JSON
    /// text.
    pub manifest: String,
    pub tarball: TarballState,
    pub published: Serial,
    pub time_us: i64,
    pub publisher: String,
    pub readme: Option<String>,
    pub description: Option<String>,
    pub deprecations: Vec<DeprecationChange>,
    /// When it was unpublished, if it was.
    pub unpublished: Option<Serial>,
    /// For a version of a mirror: where its tarball came from. `None` for
    /// a published version.
    #[serde(default)]
    pub mirror: Option<NpmMirrorOrigin>,
}

/// An npm version's tarball as the index knows it. Field for field what
/// [`NpmTarball`] is, except that a mirrored tarball has no address until
/// it is fetched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TarballState {
    /// The blob; `None` while a mirrored tarball is not fetched yet.
    pub sha256: Option<Sha256>,
    /// 0 until a mirrored tarball is fetched.
    pub size: u64,
    /// Hex sha1. Before a mirrored tarball is fetched: what the upstream
    /// declared, possibly empty.
    pub shasum: String,
    /// `sha512-<base64>`, likewise.
    pub integrity: String,
}

impl From<&NpmTarball> for TarballState {
    fn from(t: &NpmTarball) -> Self {
        TarballState {
            sha256: Some(t.sha256),
            size: t.size,
            shasum: t.shasum.clone(),
            integrity: t.integrity.clone(),
        }
    }
}

/// A mirrored npm version's upstream tarball.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NpmMirrorOrigin {
    pub url: String,
    /// The serial at which the tarball was stored.
    pub cached: Option<Serial>,
}

impl NpmVersionState {
    /// Whether the version is listed at `at` (`None`: now).
    pub fn live_at(&self, at: Option<Serial>) -> bool {
        let published = at.is_none_or(|at| self.published <= at);
        let unpublished = self
            .unpublished
            .is_some_and(|u| at.is_none_or(|at| u <= at));
        published && !unpublished
    }

    pub fn deprecated_at(&self, at: Option<Serial>) -> Option<&str> {
        self.deprecations
            .iter()
            .rev()
            .find(|d| at.is_none_or(|at| d.serial <= at))
            .and_then(|d| d.message.as_deref())
    }

    /// The time of the latest change to this version at `at`.
    pub fn last_change_us(&self, at: Option<Serial>) -> i64 {
        self.deprecations
            .iter()
            .filter(|d| at.is_none_or(|at| d.serial <= at))
            .map(|d| d.time_us)
            .fold(self.time_us, i64::max)
    }
}

/// Totals kept up to date by `apply`, so that status pages cost nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub repos: u64,
    pub projects: u64,
    pub files: u64,
    pub tokens: u64,
    #[serde(default)]
    pub npm_packages: u64,
    #[serde(default)]
    pub npm_versions: u64,
    #[serde(default)]
    pub users: u64,
    #[serde(default)]
    pub generic_files: u64,
}

/// Index records that came into being at a serial, so that a view at an
/// earlier serial leaves them out.
pub(super) trait Since {
    fn since(&self) -> Serial;
}

impl Since for ProjectState {
    fn since(&self) -> Serial {
        self.created
    }
}

impl Since for FileState {
    fn since(&self) -> Serial {
        self.added
    }
}

impl Since for GenericFileState {
    fn since(&self) -> Serial {
        self.added
    }
}

impl Since for NpmPackageState {
    fn since(&self) -> Serial {
        self.created
    }
}

impl Since for NpmVersionState {
    fn since(&self) -> Serial {
        self.published
    }
}
