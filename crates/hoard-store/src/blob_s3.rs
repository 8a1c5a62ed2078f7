//! The S3 blob backend: blobs in a bucket of any S3-compatible service,
//! at `{prefix}ab/cd/<sha256>`, through `object_store`.
//!
//! A blob is hashed and checked in the node's local `tmp/` first, then
//! uploaded straight to its address: in one PUT when small, else as a
//! multipart upload of bounded parts. Both become visible only once
//! complete, so an address never holds half a blob; a crash mid-way leaves
//! at most an unfinished multipart upload, which the bucket's lifecycle
//! rule for incomplete uploads removes. Every PUT carries the part's
//! sha256 checksum, so the service refuses bytes that changed on the way.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt as _, TryStreamExt as _};
use hoard_core::Sha256;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer as _;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt as _, PutPayload,
    RetryConfig, WriteMultipart,
};
use tokio::io::AsyncReadExt as _;

use crate::blob_backend::{BlobBackend, BlobByteStream, Staged, StoredObject};
use crate::StoreError;

/// Blobs up to this size go up in one PUT; larger ones as multipart
/// uploads of parts this size (S3 takes 5 MiB at least, but the last).
const PART_SIZE: usize = 8 << 20;
/// Parts of one blob in flight at once: memory is bounded by this many
/// parts.
const PARTS_IN_FLIGHT: usize = 2;
/// How much of the staged file is read at a time.
const READ_CHUNK: usize = 1 << 20;

/// Where the bucket is and how to talk to it. Credentials come from the
/// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, …).
#[derive(Clone, Debug)]
pub struct S3Settings {
    pub bucket: String,
    /// Put before every key; `blobs/`, say.
    pub prefix: String,
    /// An S3-compatible endpoint; `None` for the provider's default.
    pub endpoint: Option<String>,
    pub region: String,
    /// How long one request may take.
    pub timeout: Duration,
    /// How often a failed request is tried again, with backoff.
    pub retries: usize,
}

#[derive(Debug)]
pub struct S3Blobs {
    store: Arc<AmazonS3>,
    bucket: String,
    prefix: String,
}

impl S3Blobs {
    /// Builds the client. Nothing is sent until the first request.
    pub fn new(settings: &S3Settings) -> Result<Self, StoreError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_checksum_algorithm(object_store::aws::Checksum::SHA256)
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(settings.timeout)
                    .with_connect_timeout(settings.timeout.min(Duration::from_secs(5))),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: settings.retries,
                retry_timeout: settings.timeout * (settings.retries as u32 + 1),
            });
        if let Some(endpoint) = &settings.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = builder.build().map_err(|e| StoreError::Backend {
            context: format!("configure the S3 bucket {}", settings.bucket),
            source: Box::new(e),
        })?;
        let prefix = match settings.prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        Ok(S3Blobs {
            store: Arc::new(store),
            bucket: settings.bucket.clone(),
            prefix,
        })
    }

    fn key_of(&self, sha: &Sha256) -> ObjectPath {
        let hex = sha.to_hex();
        ObjectPath::from(format!(
            "{}{}/{}/{hex}",
            self.prefix,
            &hex[0..2],
            &hex[2..4]
        ))
    }

    fn error(&self, what: &str, e: object_store::Error) -> StoreError {
        StoreError::Backend {
            context: format!("S3 bucket {}: {what}", self.bucket),
            source: Box::new(e),
        }
    }

    async fn upload_multipart(
        &self,
        key: &ObjectPath,
        file: &mut tokio::fs::File,
        staged: &Staged<'_>,
    ) -> Result<(), StoreError> {
        let upload = self
            .store
            .put_multipart(key)
            .await
            .map_err(|e| self.error("start a multipart upload", e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut buf = vec![0u8; READ_CHUNK];
        let read = async {
            loop {
                let n = file
                    .read(&mut buf)
                    .await
                    .map_err(crate::durable::io_err("read", staged.path))?;
                if n == 0 {
                    return Ok::<_, StoreError>(());
                }
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| self.error("upload a part", e))?;
                writer.write(&buf[..n]);
            }
        };
        match read.await {
            Ok(()) => writer
                .finish()
                .await
                .map(|_| ())
                .map_err(|e| self.error("complete a multipart upload", e)),
            Err(e) => {
                // Best effort: a lifecycle rule removes what this misses.
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }
}

#[async_trait::async_trait]
impl BlobBackend for S3Blobs {
    fn describe(&self) -> String {
        format!("s3 bucket {} prefix {:?}", self.bucket, self.prefix)
    }

    async fn publish(&self, staged: Staged<'_>) -> Result<bool, StoreError> {
        if self.size_of(&staged.sha256).await? == Some(staged.size) {
            return Ok(false); // content-addressed: the same bytes
        }
        let key = self.key_of(&staged.sha256);
        let mut file = tokio::fs::File::open(staged.path)
            .await
            .map_err(crate::durable::io_err("open", staged.path))?;
        if staged.size <= PART_SIZE as u64 {
            let mut bytes = Vec::with_capacity(staged.size as usize);
            file.read_to_end(&mut bytes)
                .await
                .map_err(crate::durable::io_err("read", staged.path))?;
            self.store
                .put(&key, PutPayload::from(bytes))
                .await
                .map_err(|e| self.error("upload", e))?;
        } else {
            self.upload_multipart(&key, &mut file, &staged).await?;
        }
        Ok(true)
    }

    async fn size_of(&self, sha: &Sha256) -> Result<Option<u64>, StoreError> {
        match self.store.head(&self.key_of(sha)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("look up a blob", e)),
        }
    }

    async fn read(&self, sha: &Sha256, start: u64, len: u64) -> Result<BlobByteStream, StoreError> {
        if len == 0 {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        let options = GetOptions::new().with_range(Some(start..start + len));
        let result = self
            .store
            .get_opts(&self.key_of(sha), options)
            .await
            .map_err(|e| self.error("read a blob", e))?;
        Ok(Box::pin(result.into_stream().map_err(io::Error::other)))
    }

    async fn list(&self) -> Result<Vec<StoredObject>, StoreError> {
        let prefix = ObjectPath::from(self.prefix.trim_end_matches('/'));
        let prefix = (!self.prefix.is_empty()).then_some(prefix);
        let mut listing = self.store.list(prefix.as_ref());
        let mut out = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| self.error("list the blobs", e))?;
            let sha = meta
                .location
                .filename()
                .and_then(|n| n.parse::<Sha256>().ok())
                .filter(|sha| self.key_of(sha) == meta.location);
            out.push(StoredObject {
                location: format!("s3://{}/{}", self.bucket, meta.location),
                sha256: sha,
                size: meta.size,
                stored_at: Some(meta.last_modified.into()),
            });
        }
        out.sort();
        Ok(out)
    }

    async fn presigned_get(
        &self,
        sha: &Sha256,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        let url = self
            .store
            .signed_url(http::Method::GET, &self.key_of(sha), ttl)
            .await
            .map_err(|e| self.error("sign a download URL", e))?;
        Ok(Some(url.to_string()))
    }
}
