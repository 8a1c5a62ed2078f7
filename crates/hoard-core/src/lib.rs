//! hoard's domain types, shared by every other crate: content digests,
//! repository names, generic paths, serials, access tokens and the events that make up the
//! changelog. Everything here is plain data plus validation; no I/O.
//!
//! The changelog is the single source of truth: the index is a function of
//! the events applied to it in serial order (see `hoard-store`'s `apply`).

mod digest;
mod event;
mod generic;
mod name;

pub use digest::{Sha256, Sha256Hasher};
pub use event::{
    Change, Event, FileRecord, MirrorPart, MirrorSettings, MirroredFile, MirroredNpmVersion,
    NpmTarball, Perm, RepoFormat, RepoKind, RepoSettings, Serial, TokenRecord, UserRecord,
    VirtualSettings,
};
pub use generic::{GenericPath, MAX_GENERIC_PATH_LEN, MAX_GENERIC_SEGMENT_LEN};
pub use name::{RepoName, MAX_REPO_NAME_LEN};

/// Errors raised while validating domain values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CoreError {
    #[error("invalid sha256 digest {0:?}: expected 64 hex characters")]
    InvalidDigest(String),
    #[error("invalid repository name {0:?}: use [a-z0-9][a-z0-9._-]*, at most {MAX_REPO_NAME_LEN} characters")]
    InvalidRepoName(String),
    #[error("invalid permission {0:?}: expected read, upload or admin")]
    InvalidPerm(String),
    #[error("invalid path {path:?}: {why}")]
    InvalidGenericPath { path: String, why: &'static str },
}
