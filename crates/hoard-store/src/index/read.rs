//! Queries: each reads one typed key space, as of a serial when asked.

use hoard_core::{RepoName, Serial, Sha256};

use super::keys::{
    get_at, scan_at, scan_at_iter, Files, GenericDirs, GenericFiles, KeySpace, NpmPackages,
    NpmVersions, Owners, Projects, Repos, Tokens, Users,
};
use super::state::{
    ownership, FileState, GenericFileState, NpmPackageState, NpmVersionState, ProjectState,
    Rejection, RepoState, TokenState, UserState,
};
use super::Index;
use crate::StoreError;

/// What a repository holds: see [`Index::repo_usage`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepoUsage {
    pub files: u64,
    pub bytes: u64,
}

/// One entry of a generic repository's directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GenericEntry {
    File(GenericFileState),
    /// A subdirectory: its name, and the serial that made it.
    Dir {
        name: String,
        created: Serial,
    },
}

/// The direct children under `prefix` in a tree keyed by `/`-separated
/// paths, in key order: each key with no `/` after the prefix, and the
/// first key of each subdirectory (`sub/…`). A subdirectory's other keys
/// are skipped with one seek, so a listing costs its own entries, not the
/// whole subtree.
fn direct_children<'a>(
    tree: &'a sled::Tree,
    prefix: &'a [u8],
) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec), sled::Error>> + 'a {
    let mut start = prefix.to_vec();
    std::iter::from_fn(move || {
        let item = match tree.range(start.as_slice()..).next()? {
            Ok(item) => item,
            Err(e) => return Some(Err(e)),
        };
        let key = &item.0;
        if !key.starts_with(prefix) {
            return None;
        }
        let rest = &key[prefix.len()..];
        start = match rest.iter().position(|b| *b == b'/') {
            // `0` follows `/`: the first key past everything under `sub/`.
            Some(slash) => [prefix, &rest[..slash], b"0"].concat(),
            None => [key.as_ref(), &[0]].concat(),
        };
        Some(Ok(item))
    })
}

impl Index {
    /// A generic repository's file at `path`, if it existed at `at`.
    pub fn generic_file(
        &self,
        repo: &RepoName,
        path: &str,
        at: Option<Serial>,
    ) -> Result<Option<GenericFileState>, StoreError> {
        get_at::<GenericFiles>(&self.generic_files, &GenericFiles::key(repo, path), at)
    }

    /// The files and subdirectories directly in `dir` (`""` for the root,
    /// else `a/b/`) as they were at `at`, subdirectories first, each part
    /// by name. `None` when the directory did not exist then (the root
    /// always does).
    pub fn generic_listing(
        &self,
        repo: &RepoName,
        dir: &str,
        at: Option<Serial>,
    ) -> Result<Option<Vec<GenericEntry>>, StoreError> {
        let existed = |serial: Serial| at.is_none_or(|at| serial <= at);
        if !dir.is_empty() {
            let key = GenericDirs::key(repo, dir);
            match self.generic_dirs.get(&key)? {
                Some(bytes) if existed(GenericDirs::decode(&bytes)?) => {}
                _ => return Ok(None),
            }
        }
        let prefix = GenericDirs::key(repo, dir);
        let mut entries = Vec::new();
        for item in direct_children(&self.generic_dirs, &prefix) {
            let (key, value) = item?;
            let created = GenericDirs::decode(&value)?;
            let rest = String::from_utf8_lossy(&key[prefix.len()..]);
            // The first key under a subdirectory is the subdirectory itself.
            if let Some(name) = rest.strip_suffix('/').filter(|n| !n.contains('/')) {
                if existed(created) {
                    entries.push(GenericEntry::Dir {
                        name: name.to_owned(),
                        created,
                    });
                }
            }
        }
        for item in direct_children(&self.generic_files, &prefix) {
            let (key, value) = item?;
            if key[prefix.len()..].contains(&b'/') {
                continue;
            }
            let file = GenericFiles::decode(&value)?;
            if existed(file.added) {
                entries.push(GenericEntry::File(file));
            }
        }
        Ok(Some(entries))
    }

    /// Every file of one generic repository as it was at `at`, in path
    /// order (for export and usage).
    pub fn generic_files(
        &self,
        repo: &RepoName,
        at: Option<Serial>,
    ) -> Result<Vec<GenericFileState>, StoreError> {
        scan_at::<GenericFiles>(&self.generic_files, GenericFiles::key(repo, ""), at)
    }

    /// Every file of every generic repository, for fsck and snapshots.
    pub fn all_generic_files(
        &self,
    ) -> impl Iterator<Item = Result<GenericFileState, StoreError>> + '_ {
        self.generic_files
            .iter()
            .values()
            .map(|v| GenericFiles::decode(&v?))
    }

    pub fn repo(&self, name: &RepoName) -> Result<Option<RepoState>, StoreError> {
        self.repo_cache.get(name, || self.repos())
    }

    pub fn repos(&self) -> Result<Vec<RepoState>, StoreError> {
        self.repos
            .iter()
            .values()
            .map(|v| Repos::decode(&v?))
            .collect()
    }

    /// The projects of `repo` that existed at `at` (`None`: now).
    pub fn projects(
        &self,
        repo: &RepoName,
        at: Option<Serial>,
    ) -> Result<Vec<ProjectState>, StoreError> {
        scan_at::<Projects>(&self.projects, Projects::prefix(repo), at)
    }

    /// [`Index::projects`] one at a time, in name order, from a sled
    /// iterator (a consistent view per leaf, not of the whole tree; `at`
    /// pins what is listed).
    pub fn projects_iter(
        &self,
        repo: &RepoName,
        at: Option<Serial>,
    ) -> impl Iterator<Item = Result<ProjectState, StoreError>> + Send + 'static {
        scan_at_iter::<Projects>(&self.projects, Projects::prefix(repo), at)
    }

    pub fn project(
        &self,
        repo: &RepoName,
        project: &str,
        at: Option<Serial>,
    ) -> Result<Option<ProjectState>, StoreError> {
        get_at::<Projects>(&self.projects, &Projects::key(repo, project), at)
    }

    /// The files of a project that existed at `at` (`None`: now).
    pub fn files(
        &self,
        repo: &RepoName,
        project: &str,
        at: Option<Serial>,
    ) -> Result<Vec<FileState>, StoreError> {
        scan_at::<Files>(&self.files, Files::prefix(repo, project), at)
    }

    pub fn file(
        &self,
        repo: &RepoName,
        project: &str,
        filename: &str,
        at: Option<Serial>,
    ) -> Result<Option<FileState>, StoreError> {
        get_at::<Files>(&self.files, &Files::key(repo, project, filename), at)
    }

    /// What `repo` holds at `at` (`None`: now): its files (PyPI) or live
    /// versions (npm) whose bytes this node stores, and their bytes. A
    /// mirror's listed but unfetched files are not counted. One scan of
    /// the repository: for pages that show it, not for hot paths.
    pub fn repo_usage(&self, repo: &RepoName, at: Option<Serial>) -> Result<RepoUsage, StoreError> {
        let mut usage = RepoUsage::default();
        let held = |cached: Option<Serial>| cached.is_some_and(|c| at.is_none_or(|at| c <= at));
        for file in scan_at::<Files>(&self.files, Files::repo_prefix(repo), at)? {
            if file.mirror.as_ref().is_none_or(|m| held(m.cached)) {
                usage.files += 1;
                usage.bytes += file.record.size;
            }
        }
        for version in
            scan_at::<NpmVersions>(&self.npm_versions, NpmVersions::repo_prefix(repo), at)?
        {
            if version.live_at(at) && version.tarball.sha256.is_some() {
                usage.files += 1;
                usage.bytes += version.tarball.size;
            }
        }
        for file in self.generic_files(repo, at)? {
            usage.files += 1;
            usage.bytes += file.size;
        }
        Ok(usage)
    }

    /// Every file of every repository, for fsck.
    pub fn all_files(&self) -> impl Iterator<Item = Result<FileState, StoreError>> + '_ {
        self.files.iter().values().map(|v| Files::decode(&v?))
    }

    /// An npm package that existed at `at` (`None`: now).
    pub fn npm_package(
        &self,
        repo: &RepoName,
        package: &str,
        at: Option<Serial>,
    ) -> Result<Option<NpmPackageState>, StoreError> {
        get_at::<NpmPackages>(&self.npm_packages, &NpmPackages::key(repo, package), at)
    }

    /// Every npm package of `repo` that existed at `at`.
    pub fn npm_packages(
        &self,
        repo: &RepoName,
        at: Option<Serial>,
    ) -> Result<Vec<NpmPackageState>, StoreError> {
        scan_at::<NpmPackages>(&self.npm_packages, NpmPackages::prefix(repo), at)
    }

    /// Every version of a package ever published up to `at`, unpublished
    /// ones included (see [`NpmVersionState::live_at`]).
    pub fn npm_versions(
        &self,
        repo: &RepoName,
        package: &str,
        at: Option<Serial>,
    ) -> Result<Vec<NpmVersionState>, StoreError> {
        scan_at::<NpmVersions>(&self.npm_versions, NpmVersions::prefix(repo, package), at)
    }

    /// One version as it is now, unpublished or not.
    pub fn npm_version(
        &self,
        repo: &RepoName,
        package: &str,
        version: &str,
    ) -> Result<Option<NpmVersionState>, StoreError> {
        get_at::<NpmVersions>(
            &self.npm_versions,
            &NpmVersions::key(repo, package, version),
            None,
        )
    }

    /// The tarball blobs that npm versions reference (mirrored ones once
    /// fetched), for fsck and snapshots.
    pub fn all_npm_tarballs(
        &self,
    ) -> impl Iterator<Item = Result<(String, Sha256), StoreError>> + '_ {
        self.npm_versions.iter().values().filter_map(|v| {
            let state = v
                .map_err(StoreError::from)
                .and_then(|v| NpmVersions::decode(&v));
            match state {
                Ok(state) => state.tarball.sha256.map(|sha| Ok((state.version, sha))),
                Err(e) => Some(Err(e)),
            }
        })
    }

    /// A live (not revoked) token by the hash of its secret.
    /// The live token with this hash: not revoked, and if it belongs to a
    /// user, that user's account exists and is older than the token (a
    /// removed user's tokens die with the account, and do not come back
    /// for a new account of the same name). Expiry is the caller's check:
    /// it depends on the clock, not on the index.
    pub fn token(&self, hash: &Sha256) -> Result<Option<TokenState>, StoreError> {
        let Some(bytes) = self.tokens.get(Tokens::key(hash))? else {
            return Ok(None);
        };
        let state = Tokens::decode(&bytes)?;
        if state.revoked.is_some() {
            return Ok(None);
        }
        if let Some(user) = &state.record.user {
            match self.user(user)? {
                Some(account) if account.created < state.created => {}
                _ => return Ok(None),
            }
        }
        Ok(Some(state))
    }

    /// The token with this hash as recorded, live or not (for the audit
    /// trail: a revocation names its token only by the hash).
    pub fn token_record(
        &self,
        hash: &Sha256,
    ) -> Result<Option<hoard_core::TokenRecord>, StoreError> {
        match self.tokens.get(Tokens::key(hash))? {
            Some(bytes) => Ok(Some(Tokens::decode(&bytes)?.record)),
            None => Ok(None),
        }
    }

    /// Every live token (see [`Index::token`]), oldest first.
    pub fn tokens(&self) -> Result<Vec<TokenState>, StoreError> {
        let mut out = Vec::new();
        for value in self.tokens.iter().values() {
            let state = Tokens::decode(&value?)?;
            if let Some(live) = self.token(&state.record.hash)? {
                out.push(live);
            }
        }
        out.sort_by_key(|t| t.created);
        Ok(out)
    }

    pub fn user(&self, name: &str) -> Result<Option<UserState>, StoreError> {
        match self.users.get(Users::key(name))? {
            Some(bytes) => Users::decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Every user account, by name.
    pub fn users(&self) -> Result<Vec<UserState>, StoreError> {
        self.users
            .iter()
            .values()
            .map(|v| Users::decode(&v?))
            .collect()
    }

    /// Whether a change made as `user` to `project` would pass package
    /// ownership now (see [`ownership`]). Handlers ask before they store
    /// anything; `apply` asks again, and its answer is the one that holds.
    pub fn check_owner(
        &self,
        user: &str,
        repo: &RepoName,
        project: &str,
    ) -> Result<Result<(), Rejection>, StoreError> {
        let account = self.user(user)?;
        let owners = match self.owners.get(Owners::key(repo, project))? {
            Some(bytes) => Some(Owners::decode(&bytes)?),
            None => None,
        };
        let exists = self.projects.get(Projects::key(repo, project))?.is_some()
            || self
                .npm_packages
                .get(NpmPackages::key(repo, project))?
                .is_some();
        Ok(ownership(user, account.as_ref(), owners.as_ref(), project, exists).map(|_| ()))
    }

    /// The owners of a PyPI project (normalized name) or an npm package;
    /// empty when it has none.
    pub fn owners(&self, repo: &RepoName, project: &str) -> Result<Vec<String>, StoreError> {
        match self.owners.get(Owners::key(repo, project))? {
            Some(bytes) => Ok(Owners::decode(&bytes)?.owners),
            None => Ok(Vec::new()),
        }
    }
}
