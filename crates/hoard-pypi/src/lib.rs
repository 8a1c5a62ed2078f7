//! PyPI protocol logic for hoard, as pure functions over plain data.
//!
//! This crate owns: project-name and version rules (PEP 503/508/440);
//! distribution file names ([`parse_dist_filename`]); checking a twine
//! legacy upload form against its file ([`validate_upload`]); reading and
//! parsing a wheel's core metadata with zip-bomb limits
//! ([`extract_wheel_metadata`], [`parse_core_metadata`]); Simple API content
//! negotiation ([`negotiate`], PEP 691) and page rendering ([`render_index`],
//! [`render_project`]: PEP 503 HTML and PEP 691 JSON with PEPs 592, 629,
//! 658/714 and 700); reading an upstream index's project page into
//! per-file records ([`parse_upstream_project`]), for mirrors; pinned
//! requirements files ([`parse_requirements`]), for prefetching. No network or file-system I/O: the server feeds it
//! data, and every error is a [`PypiError`] whose message is fit for users.

mod error;
mod filename;
mod names;
mod negotiate;
mod render;
mod requirements;
mod upload;
mod upstream;
mod wheel;

pub use error::PypiError;
pub use filename::{parse_dist_filename, DistFilename, DistKind, MAX_FILENAME_BYTES};
pub use names::{is_valid_project_name, normalize_project_name, normalize_version, sort_versions};
pub use negotiate::{negotiate, SimpleFormat};
pub use render::{
    format_upload_time, html_escape, render_index, render_project, FileLink, IndexPage,
    IndexRenderer, ProjectLink, ProjectPage, API_VERSION,
};
pub use requirements::{parse_requirements, PinnedRequirement, RequirementProblem};
pub use upload::{
    validate_upload, ComputedDigests, UploadForm, ValidatedUpload, MAX_REQUIRES_PYTHON_CHARS,
};
pub use upstream::{
    parse_upstream_project, RefusedFile, UpstreamFile, UpstreamFormat, UpstreamProject,
    SIMPLE_JSON, UPSTREAM_ACCEPT,
};
pub use wheel::{
    check_sdist_magic, extract_wheel_metadata, parse_core_metadata, CoreMetadata, ZipLimits,
    RATIO_EXEMPT_BYTES,
};
