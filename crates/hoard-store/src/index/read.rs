//! Queries: each reads one typed key space, as of a serial when asked.

use hoard_core::{RepoName, Serial, Sha256};

use super::keys::{
    get_at, scan_at, Files, KeySpace, NpmPackages, NpmVersions, Projects, Repos, Tokens,
};
use super::state::{
    FileState, NpmPackageState, NpmVersionState, ProjectState, RepoState, TokenState,
};
use super::Index;
use crate::StoreError;

impl Index {
    pub fn repo(&self, name: &RepoName) -> Result<Option<RepoState>, StoreError> {
        match self.repos.get(Repos::key(name))? {
            Some(bytes) => Repos::decode(&bytes).map(Some),
            None => Ok(None),
        }
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
    pub fn token(&self, hash: &Sha256) -> Result<Option<TokenState>, StoreError> {
        match self.tokens.get(Tokens::key(hash))? {
            Some(bytes) => {
                let state = Tokens::decode(&bytes)?;
                Ok(state.revoked.is_none().then_some(state))
            }
            None => Ok(None),
        }
    }
}
