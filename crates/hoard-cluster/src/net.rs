//! The one place where node-to-node connections are made and accepted.
//! Mutual TLS (a later issue) and a simulated network for tests plug in
//! here, and nowhere else.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Endpoint};

use crate::ClusterError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Normalizes an upstream address: `host:port` or a full URL.
pub fn grpc_url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

/// Opens a channel to another node's gRPC endpoint.
pub async fn connect(addr: &str) -> Result<Channel, ClusterError> {
    let err = |message: String| ClusterError::Connect {
        addr: addr.to_owned(),
        message,
    };
    Endpoint::from_shared(grpc_url(addr))
        .map_err(|e| err(e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| err(format!("{e}: {}", source_chain(&e))))
}

/// The incoming connections of a gRPC listener, with Nagle's algorithm
/// off: a changelog stream sends small messages that must not wait for
/// the peer's delayed ACK (it added ~100 ms of replication lag).
pub fn incoming(
    listener: TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures_util::StreamExt;
    TcpListenerStream::new(listener).map(|stream| {
        let stream = stream?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}
