//! Serving blobs: ETag, immutable caching, HEAD, conditional and Range
//! requests. Shared by every protocol that serves files.

use futures_util::TryStreamExt;
use hoard_core::Sha256;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use crate::error::ApiError;
use crate::http::{empty, HandlerResult};
use crate::node::Node;
use crate::range::{parse_range, RangeAnswer};

pub async fn serve_blob(
    node: &Node,
    method: &Method,
    headers: &HeaderMap,
    sha: &Sha256,
    size: u64,
    content_type: &'static str,
) -> HandlerResult {
    let etag = format!("\"{sha}\"");
    let mut response = Response::new(empty());
    let h = response.headers_mut();
    h.insert(header::ETAG, header_value(&etag));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));

    if etag_matches(headers.get(header::IF_NONE_MATCH), &etag) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(response);
    }
    if node.config.blobs.presigned_redirects && method == Method::GET {
        let ttl = node.config.blobs.presigned_ttl();
        match node.blobs.presigned_get(sha, ttl).await {
            Ok(Some(url)) => return Ok(presigned_redirect(&url, ttl)),
            Ok(None) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // If-Range with a different validator means "send it all".
    let range_header = match headers.get(header::IF_RANGE) {
        Some(v) if v.to_str().ok().map(str::trim) != Some(etag.as_str()) => None,
        _ => headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
    };
    let (start, len) = match parse_range(range_header, size) {
        RangeAnswer::Full => (0, size),
        RangeAnswer::Partial { start, end } => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes {start}-{end}/{size}")),
            );
            (start, end - start + 1)
        }
        RangeAnswer::Unsatisfiable => {
            *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes */{size}")),
            );
            return Ok(response);
        }
    };
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if method == Method::HEAD {
        return Ok(response);
    }
    let bytes = node.blobs.read(sha, start, len).await.map_err(|e| {
        if e.is_backend_unavailable() {
            return ApiError::from(e); // a 503: try again later
        }
        // The index lists this file, so its blob must be here.
        tracing::error!(%sha, error = %e, "listed blob cannot be read");
        ApiError::internal("the file's content is unavailable on this node")
    })?;
    let stream = sync_wrapper::SyncStream::new(bytes.map_ok(Frame::data));
    *response.body_mut() = StreamBody::new(stream).boxed();
    Ok(response)
}

/// A 302 to a presigned URL. It must not be cached longer than the URL
/// lives; the client sends its Range (if any) on to the URL.
fn presigned_redirect(url: &str, ttl: std::time::Duration) -> Response<crate::http::ResBody> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::FOUND;
    let h = response.headers_mut();
    h.insert(header::LOCATION, header_value(url));
    let max_age = (ttl.as_secs() / 2).max(1);
    h.insert(
        header::CACHE_CONTROL,
        header_value(&format!("private, max-age={max_age}")),
    );
    response
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn etag_matches(header: Option<&HeaderValue>, etag: &str) -> bool {
    let Some(value) = header.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    value
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
}
