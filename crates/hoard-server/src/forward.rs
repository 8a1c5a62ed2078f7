//! Writes that reach a replica go to the primary: a `307` to the
//! primary's public URL, or (`replica_writes = "proxy"`) the request is
//! passed through, for clients that drop credentials on redirects.

use std::time::Duration;

use hoard_core::Serial;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::ReplicaWrites;
use crate::error::ApiError;
use crate::http::HandlerResult;
use crate::node::Node;

/// Headers that describe one hop, not the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
];

/// The connection pool a replica proxies writes through.
pub type ProxyClient = Client<HttpConnector, Incoming>;

pub async fn forward_write(node: &Node, req: Request<Incoming>) -> HandlerResult {
    let primary = node.primary_url().ok_or_else(|| ApiError {
        retry_after: Some(2),
        ..ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this replica does not know its primary yet; retry shortly",
        )
    })?;
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let target = format!("{primary}{path}");
    match node.config.replica_writes {
        ReplicaWrites::Redirect => {
            let mut response = Response::new(crate::http::full(format!(
                "this node is a read replica; send writes to {target}\n"
            )));
            *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
            response.headers_mut().insert(
                header::LOCATION,
                HeaderValue::from_str(&target)
                    .map_err(|_| ApiError::internal("bad primary URL"))?,
            );
            // The body was not read: don't reuse this connection.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            Ok(response)
        }
        ReplicaWrites::Proxy => proxy(node, req, &target).await,
    }
}

async fn proxy(node: &Node, req: Request<Incoming>, target: &str) -> HandlerResult {
    let (mut parts, body) = req.into_parts();
    parts.uri = target
        .parse()
        .map_err(|_| ApiError::internal(format!("bad primary URL {target:?}")))?;
    for name in HOP_BY_HOP {
        parts.headers.remove(*name);
    }
    let response = node
        .proxy_client
        .get_or_init(|| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build_http()
        })
        .request(Request::from_parts(parts, body))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("the primary is unreachable: {e}"),
            )
        })?;
    let (mut parts, body) = response.into_parts();
    if parts.status.is_redirection() {
        // The node this replica knew as the primary no longer leads (or
        // primary_url names a follower). The body has been sent on and
        // cannot be sent again, and clients do not replay a POST or PUT
        // to a redirect: answer as any node does while the leader changes.
        let location = parts
            .headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("elsewhere");
        return Err(ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{target} is not the leader (it sends writes to {location}): \
                     the leader changed, or primary_url names a follower; retry shortly"
                ),
            )
        });
    }
    for name in HOP_BY_HOP {
        parts.headers.remove(*name);
    }
    // Read-your-writes through this replica: answer once it has applied
    // what the primary had when it answered (bounded). The primary's
    // serial header is then replaced by this node's own.
    let primary_serial = parts
        .headers
        .remove("x-hoard-serial")
        .and_then(|v| v.to_str().ok().and_then(|v| v.parse::<u64>().ok()));
    if let Some(serial) = primary_serial {
        node.wait_for_serial(Serial(serial), node.config.min_serial_wait())
            .await;
    }
    Ok(Response::from_parts(
        parts,
        body.map_err(std::io::Error::other).boxed(),
    ))
}
