//! npm protocol logic for hoard, as pure functions over plain data.
//!
//! This crate owns: package names after npm's rules ([`PackageName`],
//! [`validate_new_package_name`]); strict semver versions and dist-tags
//! ([`validate_version`], [`validate_tag`], [`parse_dist_tag_put`]); tarball
//! names and digests ([`tarball_basename`], [`verify_tarball`]); the
//! documents that `npm publish` and `npm deprecate` `PUT`
//! ([`parse_publish`]), and a publish split as it streams in, its tarball
//! decoded out of it in bounded memory ([`PublishSplitter`]); packument rendering, full and abbreviated
//! ([`render_full_packument`], [`render_abbreviated_packument`]); search
//! ([`matches_search`], [`render_search`]); legacy login ([`parse_login`]);
//! lockfiles and locked integrities, for prefetching
//! ([`parse_package_lock`], [`check_locked_integrity`], failing with a
//! [`LockfileError`]); what a mirror reads from an upstream's packument
//! ([`parse_upstream_packument`]); and which registry endpoint a path names
//! ([`parse_npm_path`]); and a packed tarball's manifest and publish
//! document, for imports ([`manifest_from_tarball`], [`publish_document`]). No network
//! or file-system I/O: the server feeds it data, and every error is an
//! [`NpmError`] whose message npm prints verbatim (send [`error_body`]).
//!
//! `tests/fixtures/` holds what npm 10.8.2 really sends, captured from the
//! real client, and `tests/fixtures/README.md` the request sequences.

mod error;
mod lockfile;
mod login;
mod names;
mod pack;
mod packument;
mod publish;
mod publish_stream;
mod routes;
mod search;
mod tarball;
mod upstream;
mod versions;

pub use error::{error_body, NpmError};
pub use lockfile::{
    check_locked_integrity, compare_integrity, parse_package_lock, IntegrityComparison,
    LockProblem, LockedPackage, LockfileError, PackageLock, SkippedPackage,
};
pub use login::{
    audit_not_supported_body, login_ok_body, ok_body, parse_couch_user_segment, parse_login,
    user_doc, validate_username, web_login_not_supported_body, whoami_body, LoginRequest,
    AUDIT_NOT_SUPPORTED_STATUS, MAX_USERNAME_LEN, WEB_LOGIN_FALLBACK_STATUS,
};
pub use names::{validate_new_package_name, PackageName, MAX_NAME_LEN};
pub use pack::{manifest_from_tarball, publish_document};
pub use packument::{
    format_npm_time, render_abbreviated_packument, render_full_packument, PackageView,
    StoredVersion, ABBREVIATED_FIELDS, ABBREVIATED_MEDIA_TYPE,
};
pub use publish::{
    dist_tags_after_publish, parse_publish, parse_revision_put, DeprecateRequest, PublishRequest,
    PutDocument, RevisionUpdate,
};
pub use publish_stream::{parse_split_publish, PublishSplitter, SplitPublish, StreamedAttachment};
pub use routes::{parse_npm_path, NpmPath};
pub use search::{
    matches_search, parse_search_query, render_search, search_score, SearchHit, SearchQuery,
    DEFAULT_SEARCH_SIZE, MAX_SEARCH_SIZE,
};
pub use tarball::{
    parse_tarball_basename, tarball_basename, verify_integrity, verify_integrity_hashes,
    verify_tarball, verify_tarball_hashes, TarballDigests, TarballHasher, TarballHashes,
};
pub use upstream::{
    parse_upstream_packument, tarball_matches_declared, RefusedVersion, UpstreamPackument,
    UpstreamVersion, MAX_UPSTREAM_MANIFEST_BYTES,
};
pub use versions::{
    compare_versions, parse_dist_tag_put, validate_tag, validate_version, MAX_TAG_LEN,
    MAX_VERSION_LEN,
};
