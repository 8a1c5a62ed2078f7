//! The one place where node-to-node connections are made and accepted.
//! Mutual TLS ([`crate::tls`]) and the fault layer for tests plug in
//! here, and nowhere else.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tonic::transport::{Channel, Endpoint};

use crate::tls::{ClusterTls, PeerStream};
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

/// The metadata key in which a node names itself on node-to-node calls.
pub const FROM_HEADER: &str = "x-hoard-from";

/// The node-to-node network as one value: who this node is, how it
/// connects to peers and accepts them, and the fault layer. Every
/// connection in hoard-cluster is made through it, so that mutual TLS
/// (later) and a simulated network replace one value, not call sites.
#[derive(Clone)]
pub struct Net {
    inner: Arc<NetInner>,
}

struct NetInner {
    /// This node's gRPC address, sent along with its calls.
    own_addr: String,
    /// A file listing, one per line, the gRPC addresses this node must
    /// neither call nor answer: a network partition that tests switch on
    /// and off by rewriting it. `None` outside fault tests.
    partition_file: Option<PathBuf>,
    /// Channels kept for calls that happen on every write (blob pulls), so
    /// that an upload does not pay a TCP and HTTP/2 handshake per voter. A
    /// tonic channel reconnects by itself when its peer comes back.
    channels: Mutex<HashMap<String, Channel>>,
    /// Mutual TLS with the cluster CA; `None`: plaintext (loopback only,
    /// unless the operator said `insecure_cluster`).
    tls: Option<Arc<ClusterTls>>,
}

impl Net {
    /// The network of the node reached at `own_addr`.
    pub fn new(
        own_addr: String,
        partition_file: Option<PathBuf>,
        tls: Option<Arc<ClusterTls>>,
    ) -> Net {
        if let Some(path) = &partition_file {
            tracing::warn!(path = %path.display(), "fault injection is on: node-to-node calls obey this partition file");
        }
        Net {
            inner: Arc::new(NetInner {
                own_addr,
                partition_file,
                channels: Mutex::new(HashMap::new()),
                tls,
            }),
        }
    }

    /// The cluster TLS material, to reload it.
    pub fn tls(&self) -> Option<&Arc<ClusterTls>> {
        self.inner.tls.as_ref()
    }

    /// This node's gRPC address.
    pub fn own_addr(&self) -> &str {
        &self.inner.own_addr
    }

    /// Whether the fault layer cuts this node off from `addr` right now.
    pub fn partitioned_from(&self, addr: &str) -> bool {
        let Some(path) = &self.inner.partition_file else {
            return false;
        };
        std::fs::read_to_string(path)
            .map(|text| text.lines().any(|l| l.trim() == addr))
            .unwrap_or(false)
    }

    /// Names this node on a call, for the receiver's fault layer.
    pub fn name_sender(&self, metadata: &mut tonic::metadata::MetadataMap) {
        if let Ok(addr) = self.inner.own_addr.parse() {
            metadata.insert(FROM_HEADER, addr);
        }
    }

    /// Refuses a request whose sender the fault layer cuts off from us.
    #[allow(clippy::result_large_err)]
    pub fn check_sender<T>(&self, request: &tonic::Request<T>) -> Result<(), tonic::Status> {
        let from = request
            .metadata()
            .get(FROM_HEADER)
            .and_then(|v| v.to_str().ok());
        match from {
            Some(from) if self.partitioned_from(from) => Err(tonic::Status::unavailable(format!(
                "partitioned from {from} (fault layer)"
            ))),
            _ => Ok(()),
        }
    }

    /// A kept channel to `addr`, connecting on first use. The fault layer
    /// is asked on every call, not only when connecting.
    pub async fn shared_channel(&self, addr: &str) -> Result<Channel, ClusterError> {
        if self.partitioned_from(addr) {
            return Err(partition_error(addr));
        }
        let cached = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            .cloned();
        if let Some(channel) = cached {
            return Ok(channel);
        }
        let channel = self.connect(addr).await?;
        self.inner
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Opens a channel to another node's gRPC endpoint.
    pub async fn connect(&self, addr: &str) -> Result<Channel, ClusterError> {
        if self.partitioned_from(addr) {
            return Err(partition_error(addr));
        }
        let err = |message: String| ClusterError::Connect {
            addr: addr.to_owned(),
            message,
        };
        let url = grpc_url(addr);
        let endpoint = Endpoint::from_shared(url.replacen("https://", "http://", 1))
            .map_err(|e| err(e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10));
        let connected = match &self.inner.tls {
            None => endpoint.connect().await,
            // TLS is done here rather than by tonic, so that the same
            // rustls configuration (and its reload) serves both sides.
            Some(tls) => {
                let tls = tls.clone();
                let connector = tower::service_fn(move |uri: tonic::codegen::http::Uri| {
                    let tls = tls.clone();
                    async move {
                        let host = uri
                            .host()
                            .unwrap_or_default()
                            .trim_matches(['[', ']'])
                            .to_owned();
                        let port = uri.port_u16().unwrap_or(443);
                        let tcp = TcpStream::connect((host.as_str(), port)).await?;
                        tcp.set_nodelay(true)?;
                        let stream = tls.connect(&host, tcp).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                });
                endpoint.connect_with_connector(connector).await
            }
        };
        connected.map_err(|e| err(format!("{e}: {}", source_chain(&e))))
    }

    /// The incoming connections of a gRPC listener, with Nagle's
    /// algorithm off: a changelog stream sends small messages that must
    /// not wait for the peer's delayed ACK (it added ~100 ms of
    /// replication lag). With TLS, each connection is handed over once
    /// its handshake and the allow-list passed; a peer that fails them is
    /// logged and dropped, and the others are not held up meanwhile.
    pub fn accept(
        &self,
        listener: TcpListener,
    ) -> impl futures_util::Stream<Item = std::io::Result<PeerStream>> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let tls = self.inner.tls.clone();
        tokio::spawn(async move {
            loop {
                // The server stopped taking connections: free the port.
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = tx.closed() => return,
                };
                let (tcp, remote) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "gRPC accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let Some(tls) = tls.clone() else {
                    if tx.send(Ok(PeerStream::plain(tcp, remote))).await.is_err() {
                        return;
                    }
                    continue;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tls.accept(tcp, remote).await {
                        Ok(stream) => {
                            let _ = tx.send(Ok(stream)).await;
                        }
                        Err(e) => {
                            tracing::warn!(%remote, error = %e, "refused a node-to-node connection");
                        }
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// The error of a call that the fault layer cut.
pub fn partition_error(addr: &str) -> ClusterError {
    ClusterError::Connect {
        addr: addr.to_owned(),
        message: "cut off by the fault layer's partition file".into(),
    }
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
