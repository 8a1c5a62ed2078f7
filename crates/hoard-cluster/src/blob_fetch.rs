//! Fetching one blob from another node over `Blobs.Get`: resumable,
//! verified, and published only once its sha256 matches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hoard_core::Sha256;
use hoard_proto::v1::blobs_client::BlobsClient;
use hoard_proto::v1::GetBlobRequest;
use hoard_store::{BlobStore, ExtraDigests, StagedBlob};
use tonic::transport::Channel;

use crate::ClusterError;

/// How often one fetch resumes a broken stream before giving up on the
/// source.
const RESUMES_PER_SOURCE: u32 = 3;

/// The longest wait for the answer to a request, or for the next chunk: a
/// source that goes silent is treated as a broken stream, so that applying
/// never hangs on it.
const CHUNK_DEADLINE: Duration = Duration::from_secs(30);

/// Streams one blob from `addr` into a temp file, resuming from the bytes
/// already received if the stream breaks, and commits it once verified.
/// `fetched` counts the bytes received.
pub(crate) async fn fetch_blob(
    blobs: &BlobStore,
    addr: &str,
    channel: Channel,
    sha: Sha256,
    fetched: &AtomicU64,
) -> Result<(), ClusterError> {
    let staged = fetch_staged(blobs, addr, channel, sha, fetched, Durability::Now).await?;
    blobs.commit(staged).await?;
    Ok(())
}

/// Whether a fetched blob's temp file is fsynced before it is handed over.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    Now,
    /// The caller makes it durable with others ([`BlobStore::commit_batch`]).
    InBatch,
}

/// [`fetch_blob`], leaving the verified blob staged for the caller to make
/// durable at its address.
pub(crate) async fn fetch_staged(
    blobs: &BlobStore,
    addr: &str,
    channel: Channel,
    sha: Sha256,
    fetched: &AtomicU64,
    durability: Durability,
) -> Result<StagedBlob, ClusterError> {
    let mut client = BlobsClient::new(channel);
    let mut writer = blobs.writer(ExtraDigests::default()).await?;
    let mut resumes = 0;
    'request: loop {
        let rpc_err = |status| ClusterError::Rpc {
            addr: addr.to_owned(),
            status,
        };
        let request = client.get(GetBlobRequest {
            sha256: sha.to_hex(),
            offset: writer.len(),
        });
        let mut stream = tokio::time::timeout(CHUNK_DEADLINE, request)
            .await
            .map_err(|_| rpc_err(silent()))?
            .map_err(rpc_err)?
            .into_inner();
        loop {
            let next = tokio::time::timeout(CHUNK_DEADLINE, stream.message())
                .await
                .unwrap_or_else(|_| Err(silent()));
            match next {
                Ok(Some(chunk)) => {
                    writer.write(&chunk.data).await?;
                    fetched.fetch_add(chunk.data.len() as u64, Ordering::Relaxed);
                }
                Ok(None) => break 'request,
                Err(status) if resumes < RESUMES_PER_SOURCE => {
                    resumes += 1;
                    tracing::debug!(%sha, offset = writer.len(), %status, "blob stream broke; resuming");
                    continue 'request;
                }
                Err(status) => return Err(rpc_err(status)),
            }
        }
    }
    let staged = match durability {
        Durability::Now => writer.finish().await?,
        Durability::InBatch => writer.finish_unsynced().await?,
    };
    if staged.digests.sha256 != sha {
        // Dropping `staged` deletes the bad copy.
        return Err(ClusterError::BlobMismatch {
            addr: addr.to_owned(),
            sha256: sha.to_hex(),
        });
    }
    Ok(staged)
}

fn silent() -> tonic::Status {
    tonic::Status::deadline_exceeded(format!("no answer within {CHUNK_DEADLINE:?}"))
}
