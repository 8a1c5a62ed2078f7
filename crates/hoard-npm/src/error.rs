//! The crate's single error type. npm prints the `error` field of a JSON error
//! body verbatim (`npm error 400 Bad Request - PUT http://… - <error>`), so
//! every message says what was wrong and with which value, and stands alone.

/// Everything that can be wrong with an npm request body, name or path.
///
/// Every variant is a client error; the server chooses the status code
/// (400 for most, 403 for a version that already exists, and so on) and sends
/// [`error_body`] of the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NpmError {
    /// Not a package name that npm's rules allow (for a new package, or at
    /// all).
    #[error("invalid package name '{name}': {reason}")]
    InvalidName { name: String, reason: String },

    /// Not a strict semver version.
    #[error("invalid version '{version}': {reason}")]
    InvalidVersion { version: String, reason: String },

    /// Not an acceptable dist-tag name.
    #[error("invalid dist-tag '{tag}': {reason}")]
    InvalidTag { tag: String, reason: String },

    /// A tarball file name that does not belong to the package.
    #[error("invalid tarball name '{filename}': {reason}")]
    InvalidTarballName { filename: String, reason: String },

    /// The request body is not JSON, or not the JSON value expected.
    #[error("malformed JSON body: {0}")]
    MalformedJson(String),

    /// The document, without its attachment data, is larger than the
    /// server keeps.
    #[error("the document is larger than the limit of {limit} bytes (not counting the tarball)")]
    DocumentTooLarge { limit: usize },

    /// The body is JSON, but a field is missing or has the wrong shape.
    #[error("invalid document: {0}")]
    InvalidDocument(String),

    /// The package named in the document is not the one in the URL.
    #[error("package name mismatch: the URL names '{url}' but the document names '{document}'")]
    NameMismatch { url: String, document: String },

    /// A publish must carry exactly one version.
    #[error("a publish must contain exactly one version in 'versions', found {0}")]
    VersionCount(usize),

    /// A publish must carry exactly one tarball.
    #[error("a publish must contain exactly one attachment in '_attachments', found {0}")]
    AttachmentCount(usize),

    /// The attachment is not the tarball of the published version.
    #[error("attachment '{found}' does not match the published version: expected '{expected}'")]
    AttachmentName { expected: String, found: String },

    /// The attachment's `data` is not strict, padded, standard base64.
    #[error("attachment '{attachment}' is not valid base64: {reason}")]
    BadBase64 { attachment: String, reason: String },

    /// The attachment's declared `length` is not the length of its bytes.
    #[error("attachment length mismatch: declared {declared} bytes, received {actual}")]
    LengthMismatch { declared: u64, actual: u64 },

    /// `dist.shasum` is not the sha1 of the tarball.
    #[error("shasum mismatch: dist.shasum is {declared} but the tarball's sha1 is {actual}")]
    ShasumMismatch { declared: String, actual: String },

    /// A hash listed in `dist.integrity` is not the tarball's.
    #[error("integrity mismatch: dist.integrity declares {declared} but the tarball's {algorithm} is {actual}")]
    IntegrityMismatch {
        algorithm: &'static str,
        declared: String,
        actual: String,
    },

    /// `dist.integrity` or `dist.shasum` is not well formed.
    #[error("invalid {field}: {reason}")]
    InvalidDigest { field: &'static str, reason: String },

    /// The tarball is not gzip data.
    #[error("attachment '{0}' is not a gzipped tarball (.tgz)")]
    NotGzip(String),

    /// A dist-tag `PUT` body that is not an exact version.
    #[error("dist-tag target {0} is not an exact version: name one, as in `npm dist-tag add <pkg>@1.2.3 <tag>`")]
    DistTagTarget(String),

    /// A login body that is not a user document for the user in the URL.
    #[error("invalid login: {0}")]
    InvalidLogin(String),

    /// A request path that is not part of the npm registry API.
    #[error("not an npm registry path: '{0}'")]
    UnknownPath(String),
}

/// The JSON error body npm understands: `{"error": "<message>"}`.
///
/// npm shows the `error` field after the status line, for example
/// `npm error 403 403 Forbidden - PUT http://…/pkg - <message>`.
pub fn error_body(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

impl NpmError {
    /// [`error_body`] of this error's message.
    pub fn body(&self) -> String {
        error_body(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_is_json_with_error_field() {
        let body = error_body("bad \"thing\"\n");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v, serde_json::json!({"error": "bad \"thing\"\n"}));
    }

    #[test]
    fn error_message_is_the_body() {
        let e = NpmError::VersionCount(2);
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(
            v["error"],
            "a publish must contain exactly one version in 'versions', found 2"
        );
    }
}
