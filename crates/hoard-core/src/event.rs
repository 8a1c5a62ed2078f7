use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{CoreError, GenericPath, RepoName, Sha256};

/// The position of a committed event in the changelog. Dense: the first
/// event is serial 1, and serial 0 means "nothing applied yet".
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Serial(pub u64);

impl Serial {
    pub const ZERO: Serial = Serial(0);

    pub fn next(self) -> Serial {
        Serial(self.0 + 1)
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// One change to the index, with who made it and when. Events are the only
/// way the index changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Who made the change: a token's label, `admin`, or `system`.
    pub actor: String,
    /// When the leader accepted the change, in microseconds since the epoch.
    pub time_us: i64,
    /// The account the change was made as, where package ownership
    /// applies: the user behind a user's token or password. `None` for
    /// admins, service tokens and the system, which ownership does not
    /// bind. `apply` checks it, so two users racing to create a project
    /// cannot both own it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The node that committed the change (the leader then), for the
    /// audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub change: Change,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    RepoCreated {
        repo: RepoName,
        settings: RepoSettings,
    },
    RepoSettingsChanged {
        repo: RepoName,
        settings: RepoSettings,
    },
    /// A PyPI distribution file was added to a project (creating the
    /// project if it is new).
    FileAdded {
        repo: RepoName,
        /// The PEP 503 normalized project name.
        project: String,
        /// The project name as the uploader spelled it.
        display_name: String,
        file: FileRecord,
        /// When the file was first uploaded, elsewhere: an import keeps its
        /// source's time (PEP 700's `upload-time`). `None`: this event's
        /// time. Absent from events that do not set it, so their bytes,
        /// and the changelog digest, are what they were.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upload_time_us: Option<i64>,
    },
    /// PEP 592: files were yanked (`reason` is `Some`) or un-yanked (`None`).
    FilesYanked {
        repo: RepoName,
        project: String,
        filenames: Vec<String>,
        reason: Option<String>,
    },
    TokenCreated {
        token: TokenRecord,
    },
    TokenRevoked {
        hash: Sha256,
    },
    /// A user account was created.
    UserAdded {
        user: UserRecord,
    },
    /// A user's password, admin flag or email changed.
    UserChanged {
        user: UserRecord,
    },
    /// A user was removed: their tokens are revoked in the same step, and
    /// they no longer own anything.
    UserRemoved {
        name: String,
    },
    /// The owners of a PyPI project or an npm package were set. When
    /// `Event::user` is set, that user must be an owner or an admin.
    OwnersChanged {
        repo: RepoName,
        /// The normalized project name, or the npm package's full name.
        project: String,
        owners: Vec<String>,
    },
    /// An npm package version was published (creating the package if new).
    NpmPublished {
        repo: RepoName,
        /// The full name, `name` or `@scope/name`.
        package: String,
        version: String,
        /// The version manifest as published, as JSON text.
        manifest: String,
        tarball: NpmTarball,
        /// The dist-tags this publish sets, each to `version`.
        dist_tags: Vec<String>,
        readme: Option<String>,
        description: Option<String>,
    },
    /// A dist-tag was set to a version, or removed (`None`).
    NpmDistTagChanged {
        repo: RepoName,
        package: String,
        tag: String,
        version: Option<String>,
    },
    /// Versions were deprecated with a message, or un-deprecated (`None`).
    NpmDeprecated {
        repo: RepoName,
        package: String,
        changes: Vec<(String, Option<String>)>,
    },
    /// A mirror recorded files that an upstream lists for a project and
    /// the mirror had not listed yet (creating the project if it is new).
    /// The bytes are fetched later, on first download.
    MirrorFilesListed {
        repo: RepoName,
        project: String,
        display_name: String,
        files: Vec<MirroredFile>,
    },
    /// A mirrored file's bytes, or its PEP 658 core metadata, were fetched
    /// from the upstream, verified against the listed digest and stored.
    MirrorFileCached {
        repo: RepoName,
        project: String,
        filename: String,
        part: MirrorPart,
        sha256: Sha256,
        size: u64,
    },
    /// A mirror recorded npm versions that an upstream lists and the
    /// mirror had not listed yet (creating the package if it is new), and
    /// moved its dist-tags to match the upstream's. The tarballs are
    /// fetched later, on first download.
    NpmMirrorListed {
        repo: RepoName,
        package: String,
        versions: Vec<MirroredNpmVersion>,
        /// Tags set to a version listed here or before, or removed (`None`).
        dist_tags: Vec<(String, Option<String>)>,
    },
    /// A mirrored npm tarball was fetched from the upstream, checked
    /// against the digests it declared, and stored. `shasum` and
    /// `integrity` are computed by hoard from the stored bytes.
    NpmMirrorTarballCached {
        repo: RepoName,
        package: String,
        version: String,
        tarball: NpmTarball,
    },
    /// Versions were unpublished (only where the repository allows it),
    /// and the dist-tags moved in the same step: tags set to a remaining
    /// version, or removed (`None`). The tarballs stay in the blob store and
    /// in earlier point-in-time views.
    NpmUnpublished {
        repo: RepoName,
        package: String,
        versions: Vec<String>,
        dist_tags: Vec<(String, Option<String>)>,
    },
    /// A file of a generic repository was stored at a path: uploaded, or
    /// fetched by a mirror from `upstream_url`. A path never changes once
    /// written.
    GenericFileStored {
        repo: RepoName,
        path: GenericPath,
        sha256: Sha256,
        size: u64,
        /// As for [`Change::FileAdded`]: an import's source time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upload_time_us: Option<i64>,
        /// Where a mirror fetched the bytes from; `None` for an upload.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upstream_url: Option<String>,
    },
}

/// An npm version as an upstream lists it, recorded by a mirror.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirroredNpmVersion {
    pub version: String,
    /// The upstream's version manifest, as JSON text (its `dist` is
    /// replaced by hoard's when served).
    pub manifest: String,
    /// Where the tarball is, absolute.
    pub url: String,
    /// What the upstream declares, which the bytes are checked against when
    /// they are fetched: hex sha1 (`dist.shasum`), and the `sha512-…` entry
    /// of `dist.integrity`. At least one of them is present.
    pub shasum: Option<String>,
    pub integrity: Option<String>,
    /// The upstream's publish time, when it gave one.
    pub time_us: Option<i64>,
    /// The upstream's deprecation message, if any.
    pub deprecated: Option<String>,
}

/// An npm tarball's digests, all computed by hoard from the stored bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NpmTarball {
    pub sha256: Sha256,
    pub size: u64,
    /// Hex sha1, npm's `dist.shasum`.
    pub shasum: String,
    /// `sha512-<base64>`, npm's `dist.integrity`.
    pub integrity: String,
}

impl Change {
    /// The blobs that must be present locally before this change may be
    /// applied: a node never lists a file that it cannot serve.
    pub fn blobs(&self) -> Vec<Sha256> {
        match self {
            Change::FileAdded { file, .. } => {
                let mut blobs = vec![file.sha256];
                blobs.extend(file.core_metadata);
                blobs
            }
            Change::NpmPublished { tarball, .. } => vec![tarball.sha256],
            Change::MirrorFileCached { sha256, .. } => vec![*sha256],
            Change::NpmMirrorTarballCached { tarball, .. } => vec![tarball.sha256],
            Change::GenericFileStored { sha256, .. } => vec![*sha256],
            _ => Vec::new(),
        }
    }

    /// The repository and the project (or npm package) a change is about,
    /// where it is about one.
    pub fn subject(&self) -> (Option<&RepoName>, Option<&str>) {
        match self {
            Change::RepoCreated { repo, .. } | Change::RepoSettingsChanged { repo, .. } => {
                (Some(repo), None)
            }
            Change::FileAdded { repo, project, .. }
            | Change::FilesYanked { repo, project, .. }
            | Change::OwnersChanged { repo, project, .. }
            | Change::MirrorFilesListed { repo, project, .. }
            | Change::MirrorFileCached { repo, project, .. } => (Some(repo), Some(project)),
            Change::NpmPublished { repo, package, .. }
            | Change::NpmDistTagChanged { repo, package, .. }
            | Change::NpmDeprecated { repo, package, .. }
            | Change::NpmUnpublished { repo, package, .. }
            | Change::NpmMirrorListed { repo, package, .. }
            | Change::NpmMirrorTarballCached { repo, package, .. } => (Some(repo), Some(package)),
            Change::GenericFileStored { repo, path, .. } => (Some(repo), path.segments().next()),
            Change::TokenCreated { token } => (token.repo.as_ref(), None),
            Change::TokenRevoked { .. }
            | Change::UserAdded { .. }
            | Change::UserChanged { .. }
            | Change::UserRemoved { .. } => (None, None),
        }
    }

    /// A short name of the change kind, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::RepoCreated { .. } => "repo_created",
            Change::RepoSettingsChanged { .. } => "repo_settings_changed",
            Change::FileAdded { .. } => "file_added",
            Change::FilesYanked { .. } => "files_yanked",
            Change::TokenCreated { .. } => "token_created",
            Change::TokenRevoked { .. } => "token_revoked",
            Change::UserAdded { .. } => "user_added",
            Change::UserChanged { .. } => "user_changed",
            Change::UserRemoved { .. } => "user_removed",
            Change::OwnersChanged { .. } => "owners_changed",
            Change::NpmPublished { .. } => "npm_published",
            Change::NpmDistTagChanged { .. } => "npm_dist_tag_changed",
            Change::NpmDeprecated { .. } => "npm_deprecated",
            Change::NpmUnpublished { .. } => "npm_unpublished",
            Change::MirrorFilesListed { .. } => "mirror_files_listed",
            Change::MirrorFileCached { .. } => "mirror_file_cached",
            Change::NpmMirrorListed { .. } => "npm_mirror_listed",
            Change::NpmMirrorTarballCached { .. } => "npm_mirror_tarball_cached",
            Change::GenericFileStored { .. } => "generic_file_stored",
        }
    }
}

/// A distribution file as uploaded. Immutable once added, except for its
/// yank state, which lives beside it in the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub filename: String,
    /// The normalized PEP 440 version.
    pub version: String,
    pub sha256: Sha256,
    pub size: u64,
    /// `bdist_wheel` or `sdist`.
    pub packagetype: String,
    pub requires_python: Option<String>,
    /// The digest of the PEP 658 core metadata blob, for wheels.
    pub core_metadata: Option<Sha256>,
}

/// A file as an upstream lists it, recorded by a mirror. `record.sha256`
/// (and `record.core_metadata`) are the digests the upstream declared,
/// which the bytes are checked against when they are fetched;
/// `record.size` is 0 when the upstream did not say.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirroredFile {
    pub record: FileRecord,
    /// Where the bytes are, absolute.
    pub url: String,
    /// The upstream's upload time, when it gave one.
    pub upload_time_us: Option<i64>,
    /// `Some(reason)` when the upstream lists the file as yanked.
    pub yanked: Option<String>,
}

/// Which bytes of a mirrored file were cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MirrorPart {
    File,
    /// The PEP 658 `.metadata` file.
    CoreMetadata,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepoFormat {
    Pypi,
    Npm,
    /// Any file at any path, as Artifactory's generic and Nexus's raw
    /// repositories keep them.
    Generic,
}

impl RepoFormat {
    /// The name in configuration and URLs: `pypi`, `npm`, `generic`.
    pub fn as_str(self) -> &'static str {
        match self {
            RepoFormat::Pypi => "pypi",
            RepoFormat::Npm => "npm",
            RepoFormat::Generic => "generic",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RepoKind {
    Hosted,
    Mirror(MirrorSettings),
    Virtual(VirtualSettings),
}

/// A repository served as the union of others.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualSettings {
    /// Hosted or mirror repositories of the same format, in order of
    /// priority: the first one to list a filename serves it.
    pub members: Vec<RepoName>,
    /// The hosted member that uploads to this repository go to.
    #[serde(default)]
    pub upload_to: Option<RepoName>,
    /// Dependency confusion: by default a project that a hosted member has
    /// hides the same name in the mirror members. `true` merges them.
    #[serde(default)]
    pub merge_mirrored: bool,
}

/// How a mirror repository follows its upstreams.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorSettings {
    /// Base URLs, in order: for PyPI the Simple API root (`…/simple/`),
    /// for npm the registry root. Empty: nothing is fetched.
    pub upstreams: Vec<String>,
    /// How long a fetched page is served without asking the upstream.
    #[serde(default = "MirrorSettings::default_ttl")]
    pub ttl_secs: u64,
    /// How long "no upstream has this project" is remembered.
    #[serde(default = "MirrorSettings::default_negative_ttl")]
    pub negative_ttl_secs: u64,
    /// Never contact an upstream: serve only what is cached.
    #[serde(default)]
    pub offline: bool,
    /// The bound on one upstream request, connect to last byte of a page.
    #[serde(default = "MirrorSettings::default_timeout")]
    pub timeout_secs: u64,
}

impl MirrorSettings {
    fn default_ttl() -> u64 {
        600
    }

    fn default_negative_ttl() -> u64 {
        60
    }

    fn default_timeout() -> u64 {
        30
    }

    pub fn new(upstreams: Vec<String>) -> Self {
        MirrorSettings {
            upstreams,
            ttl_secs: Self::default_ttl(),
            negative_ttl_secs: Self::default_negative_ttl(),
            offline: false,
            timeout_secs: Self::default_timeout(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoSettings {
    pub format: RepoFormat,
    #[serde(flatten)]
    pub kind: RepoKind,
    /// Whether reads need no token.
    pub anonymous_read: bool,
    /// npm: whether an admin may unpublish versions. Off by default:
    /// artifacts must not vanish from under a build.
    #[serde(default)]
    pub allow_unpublish: bool,
}

impl RepoSettings {
    pub fn hosted(format: RepoFormat) -> Self {
        RepoSettings {
            format,
            kind: RepoKind::Hosted,
            anonymous_read: true,
            allow_unpublish: false,
        }
    }
}

/// What a token may do. Each level includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Perm {
    Read,
    Upload,
    Admin,
}

impl FromStr for Perm {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Perm::Read),
            "upload" => Ok(Perm::Upload),
            "admin" => Ok(Perm::Admin),
            other => Err(CoreError::InvalidPerm(other.chars().take(40).collect())),
        }
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Perm::Read => "read",
            Perm::Upload => "upload",
            Perm::Admin => "admin",
        })
    }
}

/// An access token as the index knows it: only the hash of the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// sha256 of the secret token string.
    pub hash: Sha256,
    /// The repository the token is for; `None` means every repository.
    pub repo: Option<RepoName>,
    pub perm: Perm,
    /// A human label, recorded as the actor of the token's changes.
    pub label: String,
    /// A public handle for `hoard token list|revoke`, random, unrelated to
    /// the secret. Empty for tokens made before handles existed: their
    /// handle is then derived from the hash ([`TokenRecord::handle`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// The user the token belongs to, whose ownership of packages binds
    /// its uploads. `None`: a service token, made by an admin for a
    /// repository (CI), which ownership does not bind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The normalized project (or npm package) names the token may write
    /// to; `None` means every project of its repositories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projects: Option<Vec<String>>,
    /// When the token stops working, in microseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_us: Option<i64>,
}

impl TokenRecord {
    /// Whether this token grants `needed` on `repo`.
    pub fn allows(&self, repo: &RepoName, needed: Perm) -> bool {
        self.perm >= needed && self.repo.as_ref().is_none_or(|r| r == repo)
    }

    /// Whether this token may write to `project` (normalized).
    pub fn allows_project(&self, project: &str) -> bool {
        self.projects
            .as_ref()
            .is_none_or(|ps| ps.iter().any(|p| p == project))
    }

    /// Whether the token has expired at `now_us`.
    pub fn expired(&self, now_us: i64) -> bool {
        self.expires_us.is_some_and(|e| e <= now_us)
    }

    /// The token's public handle.
    pub fn handle(&self) -> String {
        if self.id.is_empty() {
            self.hash.to_hex()[..12].to_owned()
        } else {
            self.id.clone()
        }
    }
}

/// A user account as the index knows it. Every node holds the password
/// hash, so that any node can check a password on a read; it is an
/// argon2id PHC string, never the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub password_hash: String,
    /// An admin may write to any package and manage users and owners.
    #[serde(default)]
    pub admin: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("name", &self.name)
            .field("password_hash", &"<redacted>")
            .field("admin", &self.admin)
            .field("email", &self.email)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[test]
    fn event_json_round_trip() {
        let ev = Event {
            actor: "ci".into(),
            time_us: 1_700_000_000_000_000,
            user: None,
            node: None,
            change: Change::FileAdded {
                repo: repo("pypi"),
                project: "demo-pkg".into(),
                display_name: "Demo_Pkg".into(),
                file: FileRecord {
                    filename: "Demo_Pkg-1.0-py3-none-any.whl".into(),
                    version: "1.0".into(),
                    sha256: Sha256::of(b"wheel"),
                    size: 5,
                    packagetype: "bdist_wheel".into(),
                    requires_python: Some(">=3.8".into()),
                    core_metadata: Some(Sha256::of(b"meta")),
                },
                upload_time_us: None,
            },
        };
        let json = serde_json::to_vec(&ev).unwrap();
        assert_eq!(serde_json::from_slice::<Event>(&json).unwrap(), ev);
        assert_eq!(
            ev.change.blobs(),
            vec![Sha256::of(b"wheel"), Sha256::of(b"meta")]
        );
        // Without an imported upload time the bytes are what they were
        // before the field existed; with one, it round-trips.
        assert!(!String::from_utf8_lossy(&json).contains("upload_time_us"));
        let mut imported = ev.clone();
        if let Change::FileAdded { upload_time_us, .. } = &mut imported.change {
            *upload_time_us = Some(1_500_000_000_000_000);
        }
        let json = serde_json::to_vec(&imported).unwrap();
        assert_eq!(serde_json::from_slice::<Event>(&json).unwrap(), imported);
    }

    #[test]
    fn token_scope() {
        let t = TokenRecord {
            hash: Sha256::of(b"t"),
            repo: Some(repo("pypi")),
            perm: Perm::Upload,
            label: "ci".into(),
            id: String::new(),
            user: None,
            projects: Some(vec!["demo".into()]),
            expires_us: Some(100),
        };
        assert!(t.allows_project("demo"));
        assert!(!t.allows_project("other"));
        assert!(!t.expired(99));
        assert!(t.expired(100));
        assert_eq!(t.handle().len(), 12);
        assert!(t.allows(&repo("pypi"), Perm::Read));
        assert!(t.allows(&repo("pypi"), Perm::Upload));
        assert!(!t.allows(&repo("pypi"), Perm::Admin));
        assert!(!t.allows(&repo("other"), Perm::Read));
        let global = TokenRecord { repo: None, ..t };
        assert!(global.allows(&repo("other"), Perm::Upload));
    }
}
