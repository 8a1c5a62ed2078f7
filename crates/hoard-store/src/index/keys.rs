//! The index's trees as typed key spaces, in the manner of databend's
//! `SledKeySpace`: each space names its tree, builds its keys, and knows
//! the type of its values, so that no caller spells a tree name or
//! decodes a value by hand. Plus the keys of the `meta` tree and its
//! fixed-width values.

use hoard_core::{RepoName, Serial, Sha256};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::apply::{ApplyAbort, TxResult};
use super::state::{
    FileState, GenericFileState, NpmPackageState, NpmVersionState, OwnersState, ProjectState,
    RepoState, Since, TokenState, UserState,
};
use crate::StoreError;

/// One tree of the index, and what its values are.
pub(super) trait KeySpace {
    /// The sled tree that holds this space.
    const TREE: &'static str;
    type Value: Serialize + DeserializeOwned;

    fn encode(value: &Self::Value) -> Vec<u8> {
        serde_json::to_vec(value).expect("index values serialize")
    }

    fn decode(bytes: &[u8]) -> Result<Self::Value, StoreError> {
        decode(Self::TREE, bytes)
    }
}

/// Repositories by name.
pub(super) struct Repos;
/// PyPI projects by repository and normalized name.
pub(super) struct Projects;
/// PyPI files by repository, project and filename.
pub(super) struct Files;
/// Tokens by the sha256 of their secret.
pub(super) struct Tokens;
/// npm packages by repository and name.
pub(super) struct NpmPackages;
/// npm versions by repository, package and version.
pub(super) struct NpmVersions;
/// User accounts by name.
pub(super) struct Users;
/// Owners of PyPI projects and npm packages, by repository and name.
pub(super) struct Owners;
/// Files of generic repositories, by repository and path: a directory's
/// files and subdirectories are one prefix scan of `repo\0dir/`.
pub(super) struct GenericFiles;

/// The directories of generic repositories, by repository and prefix
/// (`a/`, `a/b/`), each with the serial that made it: kept so that `apply`
/// can tell a directory from a file without a scan.
pub(super) struct GenericDirs;

impl KeySpace for GenericDirs {
    const TREE: &'static str = "generic_dirs";
    type Value = Serial;
}

impl GenericDirs {
    pub(super) fn key(repo: &RepoName, dir: &str) -> Vec<u8> {
        two_part_key(repo, dir)
    }
}

impl KeySpace for GenericFiles {
    const TREE: &'static str = "generic_files";
    type Value = GenericFileState;
}

impl GenericFiles {
    /// The key of a path, or of a directory prefix (`a/b/`, or `` for the
    /// repository's root).
    pub(super) fn key(repo: &RepoName, path: &str) -> Vec<u8> {
        two_part_key(repo, path)
    }
}

impl KeySpace for Users {
    const TREE: &'static str = "users";
    type Value = UserState;
}

impl KeySpace for Owners {
    const TREE: &'static str = "owners";
    type Value = OwnersState;
}

impl Users {
    pub(super) fn key(name: &str) -> &[u8] {
        name.as_bytes()
    }
}

impl Owners {
    pub(super) fn key(repo: &RepoName, project: &str) -> Vec<u8> {
        two_part_key(repo, project)
    }
}

impl KeySpace for Repos {
    const TREE: &'static str = "repos";
    type Value = RepoState;
}

impl KeySpace for Projects {
    const TREE: &'static str = "projects";
    type Value = ProjectState;
}

impl KeySpace for Files {
    const TREE: &'static str = "files";
    type Value = FileState;
}

impl KeySpace for Tokens {
    const TREE: &'static str = "tokens";
    type Value = TokenState;
}

impl KeySpace for NpmPackages {
    const TREE: &'static str = "npm_packages";
    type Value = NpmPackageState;
}

impl KeySpace for NpmVersions {
    const TREE: &'static str = "npm_versions";
    type Value = NpmVersionState;
}

// Keys are NUL-separated: names never contain NUL, and a prefix scan of
// `repo\0` or `repo\0project\0` finds exactly that repository's or
// project's records.

impl Repos {
    pub(super) fn key(repo: &RepoName) -> &[u8] {
        repo.as_str().as_bytes()
    }
}

impl Projects {
    pub(super) fn key(repo: &RepoName, project: &str) -> Vec<u8> {
        two_part_key(repo, project)
    }

    /// Every project of `repo`.
    pub(super) fn prefix(repo: &RepoName) -> Vec<u8> {
        repo_prefix(repo)
    }
}

impl Files {
    pub(super) fn key(repo: &RepoName, project: &str, filename: &str) -> Vec<u8> {
        three_part_key(repo, project, filename)
    }

    /// Every file of every project of `repo`.
    pub(super) fn repo_prefix(repo: &RepoName) -> Vec<u8> {
        repo_prefix(repo)
    }

    /// Every file of one project.
    pub(super) fn prefix(repo: &RepoName, project: &str) -> Vec<u8> {
        let mut prefix = two_part_key(repo, project);
        prefix.push(0);
        prefix
    }
}

impl Tokens {
    pub(super) fn key(hash: &Sha256) -> &[u8] {
        hash.as_bytes()
    }
}

impl NpmPackages {
    pub(super) fn key(repo: &RepoName, package: &str) -> Vec<u8> {
        two_part_key(repo, package)
    }

    /// Every package of `repo`.
    pub(super) fn prefix(repo: &RepoName) -> Vec<u8> {
        repo_prefix(repo)
    }
}

impl NpmVersions {
    pub(super) fn key(repo: &RepoName, package: &str, version: &str) -> Vec<u8> {
        three_part_key(repo, package, version)
    }

    /// Every version of every package of `repo`.
    pub(super) fn repo_prefix(repo: &RepoName) -> Vec<u8> {
        repo_prefix(repo)
    }

    /// Every version of one package.
    pub(super) fn prefix(repo: &RepoName, package: &str) -> Vec<u8> {
        let mut prefix = two_part_key(repo, package);
        prefix.push(0);
        prefix
    }
}

fn two_part_key(repo: &RepoName, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(repo.as_str().len() + name.len() + 1);
    key.extend_from_slice(repo.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(name.as_bytes());
    key
}

fn three_part_key(repo: &RepoName, name: &str, item: &str) -> Vec<u8> {
    let mut key = two_part_key(repo, name);
    key.push(0);
    key.extend_from_slice(item.as_bytes());
    key
}

fn repo_prefix(repo: &RepoName) -> Vec<u8> {
    let mut prefix = repo.as_str().as_bytes().to_vec();
    prefix.push(0);
    prefix
}

// The `meta` tree: single values under fixed keys.

/// The last applied serial, 8 big-endian bytes.
pub(super) const APPLIED: &[u8] = b"applied_serial";
/// The chained digest of every applied event, 32 bytes.
pub(super) const DIGEST: &[u8] = b"digest";
/// [`Counts`](super::Counts), as JSON.
pub(super) const COUNTS: &[u8] = b"counts";
/// The Raft log id of the last applied entry, as hoard-cluster encodes it.
pub(super) const RAFT_APPLIED: &[u8] = b"raft_applied";
/// The last applied Raft membership, as hoard-cluster encodes it.
pub(super) const RAFT_MEMBERSHIP: &[u8] = b"raft_membership";
/// Set while a snapshot is being installed: the trees are half-written.
pub(super) const INSTALLING: &[u8] = b"installing_snapshot";

/// A space's record at `key` if it existed at `at` (`None`: now).
pub(super) fn get_at<K: KeySpace>(
    tree: &sled::Tree,
    key: &[u8],
    at: Option<Serial>,
) -> Result<Option<K::Value>, StoreError>
where
    K::Value: Since,
{
    match tree.get(key)? {
        Some(bytes) => {
            let value = K::decode(&bytes)?;
            Ok(at.is_none_or(|at| value.since() <= at).then_some(value))
        }
        None => Ok(None),
    }
}

/// [`scan_at`] one record at a time: for listings too long to hold.
pub(super) fn scan_at_iter<K: KeySpace>(
    tree: &sled::Tree,
    prefix: Vec<u8>,
    at: Option<Serial>,
) -> impl Iterator<Item = Result<K::Value, StoreError>> + Send + 'static
where
    K::Value: Since + Send + 'static,
{
    tree.scan_prefix(prefix)
        .values()
        .map(|value| K::decode(&value?))
        .filter(move |value| match value {
            Ok(value) => at.is_none_or(|at| value.since() <= at),
            Err(_) => true,
        })
}

/// A space's records under `prefix` that existed at `at`, in key order.
pub(super) fn scan_at<K: KeySpace>(
    tree: &sled::Tree,
    prefix: Vec<u8>,
    at: Option<Serial>,
) -> Result<Vec<K::Value>, StoreError>
where
    K::Value: Since,
{
    let mut out = Vec::new();
    for value in tree.scan_prefix(prefix).values() {
        let value = K::decode(&value?)?;
        if at.is_none_or(|at| value.since() <= at) {
            out.push(value);
        }
    }
    Ok(out)
}

/// A space's record at `key`, inside an `apply` transaction.
pub(super) fn tx_get<K: KeySpace>(
    tree: &TransactionalTree,
    key: &[u8],
) -> TxResult<Option<K::Value>> {
    match tree.get(key)? {
        None => Ok(None),
        Some(bytes) => K::decode(&bytes)
            .map(Some)
            .map_err(|e| ConflictableTransactionError::Abort(ApplyAbort::Corrupt(e.to_string()))),
    }
}

/// A JSON value of the `meta` tree, inside an `apply` transaction.
pub(super) fn tx_get_meta<T: DeserializeOwned>(
    tree: &TransactionalTree,
    key: &[u8],
) -> TxResult<Option<T>> {
    match tree.get(key)? {
        None => Ok(None),
        Some(bytes) => decode("meta", &bytes)
            .map(Some)
            .map_err(|e| ConflictableTransactionError::Abort(ApplyAbort::Corrupt(e.to_string()))),
    }
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("index values serialize")
}

pub(super) fn decode<T: DeserializeOwned>(tree: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("undecodable value in {tree}: {e}")))
}

/// A serial stored as 8 big-endian bytes; absent is zero. Anything else is
/// corruption, and says so: reading it as zero would restart the serials.
pub(super) fn serial_from(bytes: Option<sled::IVec>) -> Result<Serial, StoreError> {
    match bytes {
        None => Ok(Serial::ZERO),
        Some(b) => <[u8; 8]>::try_from(b.as_ref())
            .map(|b| Serial(u64::from_be_bytes(b)))
            .map_err(|_| StoreError::Corrupt(format!("a serial of {} bytes, not 8", b.len()))),
    }
}

/// The stored chained digest; absent (nothing applied) is all zeros.
pub(super) fn digest_from(bytes: Option<sled::IVec>) -> Result<[u8; 32], StoreError> {
    match bytes {
        None => Ok([0; 32]),
        Some(b) => <[u8; 32]>::try_from(b.as_ref())
            .map_err(|_| StoreError::Corrupt(format!("a digest of {} bytes, not 32", b.len()))),
    }
}
