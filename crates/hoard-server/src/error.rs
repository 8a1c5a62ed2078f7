//! The error every handler returns, rendered in the client's own format.

use bytes::Bytes;
use hoard_cluster::WriteError;
use hoard_store::{Rejection, StoreError};
use http::{header, HeaderValue, Response, StatusCode};

use crate::http::{full, ResBody};

/// An HTTP error: a status and a message for a person. PyPI clients show
/// the reason phrase (twine prints it), so the message goes there too.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Close the connection after answering: the request body may be
    /// unread (a refused upload), and draining it would waste bandwidth.
    pub close: bool,
    pub www_authenticate: bool,
    pub retry_after: Option<u64>,
    /// Render as npm's `{"error": …}` JSON instead of plain text.
    pub json: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            close: false,
            www_authenticate: false,
            retry_after: None,
            json: false,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError {
            www_authenticate: true,
            ..Self::new(StatusCode::UNAUTHORIZED, message)
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// The npm client prints the `error` field of a JSON body.
    pub fn npm(mut self) -> Self {
        self.json = true;
        self
    }

    /// A plain-text (or npm JSON) response whose reason phrase is the
    /// message.
    pub fn into_response(self) -> Response<ResBody> {
        let (body, content_type) = if self.json {
            (
                serde_json::json!({ "error": self.message }).to_string(),
                "application/json",
            )
        } else {
            (format!("{}\n", self.message), "text/plain; charset=utf-8")
        };
        let mut response = Response::new(full(Bytes::from(body)));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if self.close {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.www_authenticate {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"hoard\""),
            );
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason_phrase(&self.message)) {
            response.extensions_mut().insert(reason);
        }
        response
    }
}

/// A reason phrase must be visible ASCII and spaces, on one line.
fn reason_phrase(message: &str) -> Vec<u8> {
    message
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(300)
        .collect::<String>()
        .into_bytes()
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_disk_full() {
            tracing::error!(error = %e, "disk full");
            return ApiError {
                retry_after: Some(60),
                ..ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "the server is out of disk space; try again later",
                )
            };
        }
        if e.is_backend_unavailable() {
            tracing::error!(error = %e, "blob storage unavailable");
            return ApiError {
                retry_after: Some(10),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the blob storage is unavailable ({e}); try again later"),
                )
            };
        }
        tracing::error!(error = %e, "store error");
        ApiError::internal(format!("internal storage error: {e}"))
    }
}

/// The one mapping of a rejected event to a status: a thing that is not
/// there is 404, a thing that already is there is 409.
pub fn rejection_status(r: &Rejection) -> StatusCode {
    match r {
        Rejection::RepoMissing(_)
        | Rejection::FileMissing(_)
        | Rejection::TokenMissing
        | Rejection::VersionMissing(_)
        | Rejection::PackageMissing(_)
        | Rejection::UserMissing(_) => StatusCode::NOT_FOUND,
        Rejection::RepoExists(_)
        | Rejection::FileExists(_)
        | Rejection::PathConflict(_)
        | Rejection::TokenExists
        | Rejection::UserExists(_)
        | Rejection::VersionExists(_) => StatusCode::CONFLICT,
        // pip and twine show the reason phrase, npm the body's `error`.
        Rejection::NotOwner { .. } => StatusCode::FORBIDDEN,
        Rejection::InvalidOwners(_) => StatusCode::BAD_REQUEST,
        // The upstream's bytes were not the ones it listed.
        Rejection::DigestMismatch(_) => StatusCode::BAD_GATEWAY,
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Rejected(r) => ApiError::new(rejection_status(&r), r.to_string()),
            WriteError::NotLeader { leader_url } => ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    match leader_url {
                        Some(url) => {
                            format!("leadership moved to {url} during this write; retry it")
                        }
                        None => "no leader is elected right now; retry shortly".to_owned(),
                    },
                )
            },
            WriteError::Unavailable {
                retry_after,
                reason,
            } => ApiError {
                retry_after: Some(retry_after.as_secs().max(1)),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, reason)
            },
            WriteError::Store(e) => e.into(),
        }
    }
}

/// A body-stream failure. The body is unread after these, so the
/// connection is closed.
impl From<crate::body::BodyError> for ApiError {
    fn from(e: crate::body::BodyError) -> Self {
        use crate::body::BodyError;
        let status = match e {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TimedOut => StatusCode::REQUEST_TIMEOUT,
            BodyError::Read(_) => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.to_string()).closing()
    }
}

impl From<hoard_pypi::PypiError> for ApiError {
    fn from(e: hoard_pypi::PypiError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_phrase_is_single_line_ascii() {
        assert_eq!(reason_phrase("bad\nname é"), b"bad?name ?".to_vec());
    }
}
