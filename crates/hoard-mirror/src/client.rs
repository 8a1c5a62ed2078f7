//! The upstream HTTP client: rustls, a timeout on every request, bounded
//! retries with backoff for failures that may pass, bounded redirects,
//! gzip for pages (never for files, whose bytes are hashed as sent).

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use hoard_store::BlobWriter;
use reqwest::{header, StatusCode};

/// Redirects followed before giving up (a loop ends here).
const MAX_REDIRECTS: usize = 10;
/// Tries of one request when the failure may pass (refused, reset, 5xx, 429).
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The largest page read from an upstream.
const MAX_PAGE_BYTES: usize = 64 << 20;

#[derive(Clone, Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{url}: no answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("{url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: more than {MAX_REDIRECTS} redirects")]
    Redirects { url: String },
    #[error("{url}: the body is larger than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("{url}: the bytes have sha256 {got}, but the index lists {expected}")]
    Digest {
        url: String,
        expected: String,
        got: String,
    },
    #[error("{url}: reading the body failed: {reason}")]
    Body { url: String, reason: String },
    #[error("storing {url}: {reason}")]
    Store { url: String, reason: String },
}

impl UpstreamError {
    /// Whether trying the same request again soon may succeed.
    fn may_pass(&self) -> bool {
        match self {
            UpstreamError::Unreachable { .. } => true,
            UpstreamError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// `ETag` and `Last-Modified` of a page, for a conditional request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// A page as the upstream sent it (decompressed).
#[derive(Clone, Debug)]
pub struct Page {
    /// Where it was found, after redirects: relative links resolve here.
    pub url: String,
    pub content_type: Option<String>,
    pub body: Bytes,
    pub validators: Validators,
}

#[derive(Clone, Debug)]
pub enum PageResponse {
    Page(Page),
    /// The validators still hold.
    NotModified,
    NotFound,
}

#[derive(Clone)]
pub struct UpstreamClient {
    pages: reqwest::Client,
    files: reqwest::Client,
}

/// The size a download may reach: the listed size when the upstream gave
/// one, else `fallback`.
pub fn download_limit(listed: u64, fallback: u64) -> u64 {
    if listed > 0 {
        listed
    } else {
        fallback
    }
}

impl UpstreamClient {
    pub fn new() -> Result<Self, UpstreamError> {
        let build = |gzip: bool| {
            let builder = reqwest::Client::builder()
                .user_agent(concat!("hoard/", env!("CARGO_PKG_VERSION")))
                .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
                .connect_timeout(Duration::from_secs(10));
            let builder = if gzip { builder } else { builder.no_gzip() };
            builder.build().map_err(|e| UpstreamError::Unreachable {
                url: String::new(),
                reason: format!("building the HTTP client: {e}"),
            })
        };
        Ok(UpstreamClient {
            pages: build(true)?,
            files: build(false)?,
        })
    }

    /// GETs a page, conditionally when `validators` are given, within
    /// `timeout` per try.
    pub async fn page(
        &self,
        url: &str,
        accept: &str,
        validators: Option<&Validators>,
        timeout: Duration,
    ) -> Result<PageResponse, UpstreamError> {
        retrying(|| async {
            let mut request = self
                .pages
                .get(url)
                .header(header::ACCEPT, accept)
                .timeout(timeout);
            if let Some(v) = validators {
                if let Some(etag) = &v.etag {
                    request = request.header(header::IF_NONE_MATCH, etag);
                }
                if let Some(lm) = &v.last_modified {
                    request = request.header(header::IF_MODIFIED_SINCE, lm);
                }
            }
            let response = request.send().await.map_err(|e| failed(url, timeout, e))?;
            match response.status() {
                StatusCode::NOT_MODIFIED => return Ok(PageResponse::NotModified),
                StatusCode::NOT_FOUND | StatusCode::GONE => return Ok(PageResponse::NotFound),
                status if !status.is_success() => {
                    return Err(UpstreamError::Status {
                        url: url.to_owned(),
                        status: status.as_u16(),
                    })
                }
                _ => {}
            }
            let text = |name: header::HeaderName| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let content_type = text(header::CONTENT_TYPE);
            let validators = Validators {
                etag: text(header::ETAG),
                last_modified: text(header::LAST_MODIFIED),
            };
            let final_url = response.url().to_string();
            let mut body = Vec::new();
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| failed(url, timeout, e))?;
                if body.len() + chunk.len() > MAX_PAGE_BYTES {
                    return Err(UpstreamError::TooLarge {
                        url: url.to_owned(),
                        limit: MAX_PAGE_BYTES as u64,
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(PageResponse::Page(Page {
                url: final_url,
                content_type,
                body: Bytes::from(body),
                validators,
            }))
        })
        .await
    }

    /// A GET whose answer matters only by its status, headers and a short
    /// body (asking another hoard node to fill its cache).
    pub async fn get_small(
        &self,
        url: &str,
        headers: &[(&'static str, &str)],
        timeout: Duration,
    ) -> Result<(u16, header::HeaderMap, String), UpstreamError> {
        let mut request = self.files.get(url).timeout(timeout);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.map_err(|e| failed(url, timeout, e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap_or_default();
        Ok((status, headers, body.chars().take(2000).collect()))
    }

    /// Streams the file at `url` into `writer`, failing when no bytes come
    /// for `idle` or more than `limit` arrive. Retried only while nothing
    /// was written.
    pub async fn download(
        &self,
        url: &str,
        idle: Duration,
        limit: u64,
        writer: &mut BlobWriter,
    ) -> Result<(), UpstreamError> {
        let response = retrying(|| async {
            let response = tokio::time::timeout(idle, self.files.get(url).send())
                .await
                .map_err(|_| UpstreamError::Timeout {
                    url: url.to_owned(),
                    secs: idle.as_secs(),
                })?
                .map_err(|e| failed(url, idle, e))?;
            match response.status() {
                status if status.is_success() => Ok(response),
                status => Err(UpstreamError::Status {
                    url: url.to_owned(),
                    status: status.as_u16(),
                }),
            }
        })
        .await?;
        let mut stream = response.bytes_stream();
        loop {
            let next = tokio::time::timeout(idle, stream.next())
                .await
                .map_err(|_| UpstreamError::Timeout {
                    url: url.to_owned(),
                    secs: idle.as_secs(),
                })?;
            let Some(chunk) = next else {
                return Ok(());
            };
            let chunk = chunk.map_err(|e| UpstreamError::Body {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
            if writer.len() + chunk.len() as u64 > limit {
                return Err(UpstreamError::TooLarge {
                    url: url.to_owned(),
                    limit,
                });
            }
            writer
                .write(&chunk)
                .await
                .map_err(|e| UpstreamError::Store {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })?;
        }
    }
}

/// Runs `attempt` until it succeeds, fails for good, or has been tried
/// [`ATTEMPTS`] times, backing off between tries.
async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T, UpstreamError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, UpstreamError>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(e) if e.may_pass() && tries < ATTEMPTS => {
                tracing::debug!(error = %e, tries, "upstream request failed; trying again");
                tokio::time::sleep(backoff).await;
                backoff *= 4;
                tries += 1;
            }
            other => return other,
        }
    }
}

fn failed(url: &str, timeout: Duration, e: reqwest::Error) -> UpstreamError {
    let url = url.to_owned();
    if e.is_timeout() {
        UpstreamError::Timeout {
            url,
            secs: timeout.as_secs(),
        }
    } else if e.is_redirect() {
        UpstreamError::Redirects { url }
    } else {
        // The chain says why (refused, reset, TLS, DNS).
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            reason = format!("{reason}: {s}");
            source = s.source();
        }
        UpstreamError::Unreachable { url, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_builds_with_tls() {
        UpstreamClient::new().unwrap();
    }

    #[tokio::test]
    async fn a_refused_connection_is_tried_a_bounded_number_of_times() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/simple/x/", listener.local_addr().unwrap());
        drop(listener);
        let client = UpstreamClient::new().unwrap();
        let started = std::time::Instant::now();
        let err = client
            .page(&url, "text/html", None, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::Unreachable { .. }), "{err}");
        // Three tries: two backoffs of 100 and 400 ms.
        assert!(started.elapsed() >= Duration::from_millis(500));
    }
}
