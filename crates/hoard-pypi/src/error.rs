//! The crate's single error type. Messages are shown verbatim to pip/twine
//! users, so they say what was wrong and with which value.

/// Everything that can be wrong with a PyPI request, an upload or a file.
///
/// Every variant is a client error (HTTP 400 for uploads); the server decides
/// the status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PypiError {
    /// The uploaded file name is unsafe or malformed.
    #[error("invalid filename '{filename}': {reason}")]
    InvalidFilename { filename: String, reason: String },

    /// The extension is not one that this index accepts.
    #[error("unsupported file type: '{filename}' (expected a .whl, .tar.gz or .zip file)")]
    UnsupportedFileType { filename: String },

    /// Not a PEP 440 version.
    #[error("invalid version '{version}': not a valid PEP 440 version")]
    InvalidVersion { version: String },

    /// Not a PEP 508 project name.
    #[error("invalid project name '{name}'")]
    InvalidProjectName { name: String },

    /// A required field of the upload form is missing or empty.
    #[error("missing required form field '{0}'")]
    MissingField(&'static str),

    /// A field of the upload form has a value that is not accepted.
    #[error("invalid form field '{field}': {reason}")]
    InvalidField { field: &'static str, reason: String },

    /// `:action` is not `file_upload`.
    #[error("unsupported :action '{0}' (only 'file_upload' is supported)")]
    UnsupportedAction(String),

    /// The file name does not agree with the form's name and version.
    #[error("filename '{filename}' does not match project '{project}' version '{version}'")]
    FilenameMismatch {
        filename: String,
        project: String,
        version: String,
    },

    /// The form's `filetype` does not agree with the file name.
    #[error("filetype '{filetype}' does not match filename '{filename}'")]
    FiletypeMismatch { filetype: String, filename: String },

    /// A declared digest is not the digest of the bytes received.
    #[error("{field} does not match the uploaded bytes")]
    DigestMismatch { field: &'static str },

    /// A declared digest is not hex of the right length.
    #[error("{field} is not a valid hex digest")]
    InvalidDigest { field: &'static str },

    /// An upstream index served a project page that cannot be used.
    #[error("unusable upstream page: {0}")]
    UpstreamPage(String),

    /// The wheel is unreadable or lacks its metadata.
    #[error("not a valid wheel: {0}")]
    InvalidWheel(String),

    /// The archive looks like a zip bomb or exceeds a limit.
    #[error("archive rejected: {0}")]
    ArchiveLimit(String),

    /// The core metadata file (METADATA / PKG-INFO) is malformed.
    #[error("invalid core metadata: {0}")]
    InvalidMetadata(String),

    /// The file's first bytes do not match its extension.
    #[error("file content does not match its extension: '{filename}' is not a {expected} file")]
    BadMagic {
        filename: String,
        expected: &'static str,
    },
}
