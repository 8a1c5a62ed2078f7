//! Mutual TLS between nodes. Every node-to-node connection (changelog,
//! blobs, Raft) is TLS with a certificate from the cluster's CA on both
//! sides, so a peer without one is refused at the handshake. A peer's
//! node id is its certificate's common name, never what it says about
//! itself; an optional allow-list of node ids, checked after the
//! handshake, retires the certificate of a removed node. The files are
//! read again on [`ClusterTls::reload`] (SIGHUP).

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::ClusterError;

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a node's cluster TLS material is, as configured.
#[derive(Clone, Debug)]
pub struct ClusterTlsFiles {
    /// The cluster CA's certificate (PEM): peers must present one it issued.
    pub ca: PathBuf,
    /// This node's certificate chain (PEM), from `hoard cert issue`.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// When not empty, only peers whose certificate names one of these
    /// node ids are served, and only such servers are called.
    pub allowed_nodes: Vec<String>,
}

/// The loaded material: what accepting and connecting use right now.
pub struct ClusterTls {
    files: ClusterTlsFiles,
    current: RwLock<Loaded>,
}

#[derive(Clone)]
struct Loaded {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    allowed: Option<Arc<HashSet<String>>>,
    own_id: String,
}

fn tls_error(path: &Path, message: impl std::fmt::Display) -> ClusterError {
    ClusterError::Tls(format!("{}: {message}", path.display()))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClusterError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(path, e))?;
    if certs.is_empty() {
        return Err(tls_error(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The common name of a DER certificate: the node id `hoard cert issue`
/// put there.
pub fn certificate_node_id(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

impl ClusterTls {
    /// Reads and checks the files: a node that cannot make its TLS
    /// configuration does not start.
    pub fn load(files: ClusterTlsFiles) -> Result<Arc<ClusterTls>, ClusterError> {
        let loaded = Self::build(&files)?;
        tracing::info!(
            node = %loaded.own_id,
            ca = %files.ca.display(),
            allowed = ?files.allowed_nodes,
            "node-to-node traffic is mutual TLS with the cluster CA"
        );
        Ok(Arc::new(ClusterTls {
            files,
            current: RwLock::new(loaded),
        }))
    }

    /// Reads the files again (certificates renewed, the allow-list
    /// changed). Connections already open keep going; on an error the old
    /// configuration stays.
    pub fn reload(&self) -> Result<(), ClusterError> {
        let loaded = Self::build(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        tracing::info!("reloaded the cluster TLS certificates");
        Ok(())
    }

    fn loaded(&self) -> Loaded {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn build(files: &ClusterTlsFiles) -> Result<Loaded, ClusterError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        for ca in read_certs(&files.ca)? {
            roots
                .add(ca)
                .map_err(|e| tls_error(&files.ca, format!("not a usable CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let chain = read_certs(&files.cert)?;
        let own_id = certificate_node_id(&chain[0]).ok_or_else(|| {
            tls_error(&files.cert, "the certificate has no common name (node id)")
        })?;
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| tls_error(&files.key, e))?;

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| tls_error(&files.ca, e))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClusterError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| tls_error(&files.cert, e))?;
        server.alpn_protocols = vec![b"h2".to_vec()];

        let mut client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClusterError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| tls_error(&files.cert, e))?;
        client.alpn_protocols = vec![b"h2".to_vec()];

        let allowed = (!files.allowed_nodes.is_empty())
            .then(|| Arc::new(files.allowed_nodes.iter().cloned().collect()));
        Ok(Loaded {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            allowed,
            own_id,
        })
    }

    /// The TLS side of an accepted connection: the handshake (the peer's
    /// certificate is checked against the CA there), then the allow-list.
    pub async fn accept(&self, tcp: TcpStream, remote: SocketAddr) -> io::Result<PeerStream> {
        let loaded = self.loaded();
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, loaded.acceptor.accept(tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        let node_id = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|c| certificate_node_id(c));
        let Some(node_id) = node_id else {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the peer's certificate names no node",
            ));
        };
        if let Some(allowed) = &loaded.allowed {
            if !allowed.contains(&node_id) {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("node {node_id:?} is not in allowed_nodes"),
                ));
            }
        }
        Ok(PeerStream {
            inner: PeerInner::Tls(Box::new(tls)),
            peer: PeerInfo {
                remote,
                node_id: Some(node_id),
            },
        })
    }

    /// The TLS side of a connection to `host` (a name or an address in the
    /// peer's certificate).
    pub async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let loaded = self.loaded();
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, loaded.connector.connect(name, tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        let server_id = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|c| certificate_node_id(c));
        if let Some(allowed) = &loaded.allowed {
            if !server_id.as_ref().is_some_and(|id| allowed.contains(id)) {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("{host} presents node {server_id:?}, which is not in allowed_nodes"),
                ));
            }
        }
        Ok(tls)
    }
}

/// Who is on the other end of an accepted node-to-node connection. gRPC
/// handlers find it in the request's extensions.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote: SocketAddr,
    /// The node id of the peer's certificate; `None` without TLS.
    pub node_id: Option<String>,
}

/// An accepted node-to-node connection, plain or TLS.
pub struct PeerStream {
    inner: PeerInner,
    peer: PeerInfo,
}

enum PeerInner {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl PeerStream {
    pub fn plain(tcp: TcpStream, remote: SocketAddr) -> PeerStream {
        PeerStream {
            inner: PeerInner::Plain(tcp),
            peer: PeerInfo {
                remote,
                node_id: None,
            },
        }
    }
}

impl tonic::transport::server::Connected for PeerStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.inner {
            PeerInner::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PeerInner::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.inner {
            PeerInner::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PeerInner::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            PeerInner::Plain(s) => Pin::new(s).poll_flush(cx),
            PeerInner::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            PeerInner::Plain(s) => Pin::new(s).poll_shutdown(cx),
            PeerInner::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
