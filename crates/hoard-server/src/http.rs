//! The HTTP listener, request dispatch, and response helpers shared by the
//! protocol handlers.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hoard_core::{RepoFormat, RepoName, Serial};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::error::ApiError;
use crate::node::Node;
use crate::{admin, forward, limits, npm, pypi};

pub type ResBody = BoxBody<Bytes, std::io::Error>;
pub type HandlerResult = Result<Response<ResBody>, ApiError>;

pub fn full(bytes: impl Into<Bytes>) -> ResBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

pub fn empty() -> ResBody {
    full(Bytes::new())
}

/// A response with a body and a content type.
pub fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<ResBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<ResBody> {
    with_body(
        status,
        "application/json",
        serde_json::to_vec_pretty(value).unwrap_or_default(),
    )
}

pub fn redirect(status: StatusCode, location: &str) -> HandlerResult {
    let mut response = Response::new(empty());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(location).map_err(|_| ApiError::bad_request("invalid path"))?,
    );
    Ok(response)
}

/// Serves HTTP on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish (up to a bound).
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let max_per_ip = node.config.max_connections_per_ip;
                let Some(slot) = node.connections.admit(peer.ip(), max_per_ip) else {
                    tracing::warn!(%peer, max_per_ip, "refused a connection: too many from this address");
                    tokio::spawn(refuse_connection(stream, max_per_ip));
                    continue;
                };
                let node = node.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _slot = slot;
                    match node.https.clone() {
                        None => serve_connection(node, stream, peer, watcher).await,
                        Some(https) => {
                            let handshake = https.acceptor().accept(stream);
                            match tokio::time::timeout(node.config.header_timeout(), handshake).await {
                                Ok(Ok(tls)) => serve_connection(node, tls, peer, watcher).await,
                                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        }
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: waiting for in-flight requests");
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish in 10s; closing them");
    }
    Ok(())
}

/// Serves HTTP/1.1 on one accepted connection (plain or TLS) until it
/// closes, with the header limits and timeout.
async fn serve_connection<S>(
    node: Arc<Node>,
    stream: S,
    peer: std::net::SocketAddr,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = node.config.header_timeout();
    let (io, returned) = limits::track(stream);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(node.config.max_header_bytes)
        .max_headers(node.config.max_headers)
        .serve_connection(
            TokioIo::new(io),
            service_fn(move |req| {
                let node = node.clone();
                async move { Ok::<_, Infallible>(handle(node, req).await) }
            }),
        );
    match watcher.watch(conn).await {
        Ok(()) => {}
        Err(e) if e.is_timeout() => {
            tracing::info!(%peer, "a request's headers took too long: 408");
            returned.answer_header_timeout(header_timeout).await;
        }
        Err(e) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
    }
}

/// Answers a connection over its address's limit with a 429, and closes it.
async fn refuse_connection(mut stream: tokio::net::TcpStream, max: usize) {
    use tokio::io::AsyncWriteExt as _;
    let answer = limits::too_many_connections(max);
    let write = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), write).await;
}

async fn handle(node: Arc<Node>, req: Request<Incoming>) -> Response<ResBody> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let request_bytes = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let checked = match node.check_rate(req.headers()) {
        Ok(()) => wait_for_min_serial(&node, &req).await,
        Err(e) => Err(e),
    };
    let mut response = match checked {
        Ok(()) => route(&node, req).await,
        Err(e) => {
            // Refused before the body: let the client read why.
            crate::body::discard_refused(req, node.config.body_timeout());
            Err(e)
        }
    }
    .unwrap_or_else(ApiError::into_response);
    response
        .headers_mut()
        .insert("x-hoard-serial", HeaderValue::from(node.applied_serial().0));
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    node.metrics.record(crate::metrics::Exchange {
        route: route_of(&node, &method, &path),
        method: method.clone(),
        status: response.status().as_u16(),
        seconds: started.elapsed().as_secs_f64(),
        request_bytes,
        // A streamed file's body has no exact size; its header says it.
        response_bytes: response.body().size_hint().exact().or_else(|| {
            response
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
        }),
    });
    // The binary batches this target's lines (one per request).
    tracing::info!(
        target: "hoard::access",
        %method,
        path = %path,
        status = response.status().as_u16(),
        content_type,
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

/// The `route` label of a request: by its path's shape, except below a
/// generic repository, whose paths have any shape.
fn route_of(node: &Node, method: &Method, path: &str) -> crate::metrics::Route {
    let repo = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let generic = !repo.starts_with('+')
        && repo
            .parse::<RepoName>()
            .ok()
            .and_then(|name| node.index.repo(&name).ok().flatten())
            .is_some_and(|r| r.settings.format == RepoFormat::Generic);
    if generic {
        crate::metrics::Route::of_generic(method, path)
    } else {
        crate::metrics::Route::of(method, path)
    }
}

/// Read-your-writes across nodes: `X-Hoard-Min-Serial: N` waits (bounded)
/// until this node has applied N.
async fn wait_for_min_serial(node: &Node, req: &Request<Incoming>) -> Result<(), ApiError> {
    let Some(value) = req.headers().get("x-hoard-min-serial") else {
        return Ok(());
    };
    let wanted = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| ApiError::bad_request("X-Hoard-Min-Serial must be a serial number"))?;
    if node
        .wait_for_serial(Serial(wanted), node.config.min_serial_wait())
        .await
    {
        Ok(())
    } else {
        Err(ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "this node has applied serial {} and not yet {wanted}; retry shortly",
                    node.applied_serial()
                ),
            )
        })
    }
}

/// The path split into segments, percent-decoded. The empty last segment
/// of a path ending in `/` is kept: PEP 503 pages live at `…/`.
pub fn segments(path: &str) -> Result<Vec<String>, ApiError> {
    path.trim_start_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| ApiError::bad_request("the path is not valid UTF-8"))
        })
        .collect()
}

async fn route(node: &Arc<Node>, req: Request<Incoming>) -> HandlerResult {
    // Anything but a read is a write, and only the leader writes. The
    // role changes with elections; a write that loses the leader after
    // this check gets a retryable answer from the writer.
    // `/+admin/local/…` acts on this node itself, leader or not.
    if !node.is_leader()
        && req.method() != Method::GET
        && req.method() != Method::HEAD
        && !req.uri().path().starts_with("/+admin/local/")
        && !is_ui_session_path(req.uri().path())
    {
        return forward::forward_write(node, req).await;
    }
    let segs = segments(req.uri().path())?;
    let seg_refs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match seg_refs.as_slice() {
        [""] => admin::landing(node, &req),
        ["+status"] => admin::status(node),
        ["+status", "cluster"] => {
            require_read_method(req.method())?;
            admin::cluster_status(node).await
        }
        ["+ui", "+cluster"] => crate::ui::cluster_page(node, &req).await,
        ["+ui", "+login"] => crate::ui::login(node, req).await,
        ["+ui", "+logout"] => crate::ui::logout(node, &req),
        ["+audit"] => crate::audit::handle(node, &req),
        ["+ui", rest @ ..] => crate::ui::handle(node, &req, rest),
        ["+metrics"] => Ok(with_body(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            crate::metrics::render(node),
        )),
        ["+admin", rest @ ..] => {
            let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            admin::handle(node, req, &rest).await
        }
        [repo, rest @ ..] => {
            let name: RepoName = repo
                .parse()
                .map_err(|_| ApiError::not_found(format!("no repository named {repo:?}")))?;
            let state = node
                .index
                .repo(&name)?
                .ok_or_else(|| ApiError::not_found(format!("no repository named {name}")))?;
            match state.settings.format {
                RepoFormat::Pypi => {
                    let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
                    pypi::handle(node, req, &state, &rest).await
                }
                // npm names keep their escapes (`@scope%2fname`), and a
                // generic path's encoded `/` must not become a separator:
                // both get the raw path below the repository.
                RepoFormat::Npm => {
                    let below = raw_below_repo(&req);
                    npm::handle(node, req, &state, &below).await
                }
                RepoFormat::Generic => {
                    let below = raw_below_repo(&req);
                    crate::generic::handle(node, req, &state, &below).await
                }
            }
        }
        [] => Err(ApiError::not_found("not found")),
    }
}

/// The request's path below its first segment (the repository), still
/// percent-encoded.
fn raw_below_repo(req: &Request<Incoming>) -> String {
    req.uri()
        .path()
        .trim_start_matches('/')
        .split_once('/')
        .map_or("", |(_, below)| below)
        .to_owned()
}

/// Signing in and out of the web UI is this node's own business (its
/// sessions are sealed with its key), on a replica too.
fn is_ui_session_path(path: &str) -> bool {
    matches!(path, "/+ui/+login" | "/+ui/+logout")
}

/// Only these methods are served on read paths.
pub fn require_read_method(method: &Method) -> Result<(), ApiError> {
    if method == Method::GET || method == Method::HEAD {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed here"),
        ))
    }
}
