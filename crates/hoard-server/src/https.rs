//! HTTPS on the public listener: rustls (aws-lc-rs) with the configured
//! certificate chain and key. [`Https::reload`] (SIGHUP) reads them again:
//! new connections get the new certificate, open ones keep theirs.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::HttpsConfig;

#[derive(Debug, thiserror::Error)]
#[error("HTTPS: {path}: {message}")]
pub struct HttpsError {
    path: String,
    message: String,
}

fn error(path: &Path, message: impl std::fmt::Display) -> HttpsError {
    HttpsError {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

pub struct Https {
    files: HttpsConfig,
    acceptor: RwLock<TlsAcceptor>,
}

impl Https {
    pub fn load(files: HttpsConfig) -> Result<Arc<Https>, HttpsError> {
        let acceptor = Self::build(&files)?;
        tracing::info!(cert = %files.cert.display(), "the public listener serves HTTPS");
        Ok(Arc::new(Https {
            files,
            acceptor: RwLock::new(acceptor),
        }))
    }

    /// Reads the certificate and key again; on an error the old ones stay.
    pub fn reload(&self) -> Result<(), HttpsError> {
        let acceptor = Self::build(&self.files)?;
        *self.acceptor.write().unwrap_or_else(|p| p.into_inner()) = acceptor;
        tracing::info!(cert = %self.files.cert.display(), "reloaded the HTTPS certificate");
        Ok(())
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn build(files: &HttpsConfig) -> Result<TlsAcceptor, HttpsError> {
        let chain = CertificateDer::pem_file_iter(&files.cert)
            .map_err(|e| error(&files.cert, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(&files.cert, e))?;
        if chain.is_empty() {
            return Err(error(&files.cert, "no PEM certificate in it"));
        }
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| error(&files.key, e))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| error(&files.cert, e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| error(&files.cert, e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}
