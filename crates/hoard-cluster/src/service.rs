//! The serving side of replication: `Changelog.Subscribe` and `Blobs.Get`.
//! Any node serves them, so replicas can follow voters or other replicas.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use hoard_core::{Serial, Sha256};
use hoard_proto::v1::blobs_server::{Blobs, BlobsServer};
use hoard_proto::v1::changelog_server::{Changelog, ChangelogServer};
use hoard_proto::v1::{
    changelog_message, BlobChunk, ChangelogMessage, CommittedEvent, GetBlobRequest, Heartbeat,
    InlineBlob, PullReply, PullRequest, SubscribeRequest,
};
use hoard_store::{BlobStore, Index, ReceivedEvent};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::epoch::Epoch;
use crate::net::Net;
use crate::ClusterError;

const HEARTBEAT: Duration = Duration::from_secs(1);
const EVENTS_PER_READ: usize = 512;
const BLOB_CHUNK: usize = 256 * 1024;

/// Blobs up to this size travel inside the event that names them, to a
/// follower at the head of the changelog. Past the head (a catch-up),
/// blobs are fetched by the follower, many at once, and the stream holds
/// no blob bytes.
pub const INLINE_BLOB_MAX: u64 = 256 * 1024;

/// What a node offers to its followers.
#[derive(Clone)]
pub struct ReplicationSource {
    pub node_id: String,
    pub index: Arc<Index>,
    pub blobs: BlobStore,
    /// The serial this node has applied durably; streams follow it.
    pub applied: watch::Receiver<Serial>,
    /// The primary's public HTTP URL, as far as this node knows.
    pub primary_url: watch::Receiver<Option<String>>,
    /// The cluster id and epoch of what this node holds.
    pub epoch: Arc<Epoch>,
    pub net: Net,
    /// Who follows this node, for its status.
    pub subscribers: Arc<crate::Subscribers>,
}

impl ReplicationSource {
    /// The small blobs that `event` names, as far as they can be read
    /// now; a blob left out is fetched by the follower.
    async fn inline_blobs(&self, event: &[u8]) -> Vec<InlineBlob> {
        let Ok(event) = ReceivedEvent::decode(event.to_vec()) else {
            return Vec::new();
        };
        let mut inline = Vec::new();
        'blobs: for sha in event.event().change.blobs() {
            match self.blobs.size_of(&sha).await {
                Ok(Some(size)) if size <= INLINE_BLOB_MAX => {}
                _ => continue,
            }
            let Ok(mut stream) = self.blobs.read(&sha, 0, INLINE_BLOB_MAX).await else {
                continue;
            };
            let mut data = Vec::new();
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(chunk) => data.extend_from_slice(&chunk),
                    Err(_) => continue 'blobs,
                }
            }
            inline.push(InlineBlob {
                sha256: sha.to_hex(),
                data,
            });
        }
        inline
    }

    fn heartbeat(&self, latest: Serial) -> ChangelogMessage {
        let latest_time_us = self
            .index
            .event(latest)
            .ok()
            .flatten()
            .map_or(0, |e| e.time_us);
        let identity = self.epoch.known_identity();
        ChangelogMessage {
            kind: Some(changelog_message::Kind::Heartbeat(Heartbeat {
                latest_serial: latest.0,
                node_id: self.node_id.clone(),
                primary_url: self.primary_url.borrow().clone().unwrap_or_default(),
                latest_time_us,
                cluster_id: identity
                    .as_ref()
                    .map(|i| i.cluster_id.clone())
                    .unwrap_or_default(),
                epoch: identity.as_ref().map_or(0, |i| i.epoch),
                epoch_since_serial: identity.as_ref().map_or(0, |i| i.since_serial),
                previous_cluster_id: identity.and_then(|i| i.previous).unwrap_or_default(),
            })),
        }
    }
}

/// Serves the replication services on `listener` until `shutdown`.
/// A voter serves the Raft RPCs on the same listener.
pub async fn serve_grpc(
    source: ReplicationSource,
    raft: Option<Arc<crate::RaftNode>>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ClusterError> {
    let net = source.net.clone();
    tonic::transport::Server::builder()
        .add_service(ChangelogServer::new(source.clone()))
        .add_service(BlobsServer::new(source))
        .add_optional_service(raft.map(|r| r.rpc_service()))
        .serve_with_incoming_shutdown(net.accept(listener), shutdown)
        .await?;
    Ok(())
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Changelog for ReplicationSource {
    type SubscribeStream = BoxStream<ChangelogMessage>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.epoch
            .admit_subscriber(request.metadata(), request.get_ref().since_serial)?;
        // With TLS the subscriber is who its certificate says, whatever
        // the request claims.
        let certified = request
            .extensions()
            .get::<crate::tls::PeerInfo>()
            .and_then(|p| p.node_id.clone());
        let req = request.into_inner();
        if let Some(id) = certified {
            if req.subscriber_id != id {
                tracing::warn!(certificate = %id, claimed = %req.subscriber_id, "refused a subscriber that names another node");
                return Err(Status::permission_denied(format!(
                    "the certificate is node {id:?}, but the subscription names {:?}",
                    req.subscriber_id
                )));
            }
        }
        let since = Serial(req.since_serial);
        tracing::info!(subscriber = %req.subscriber_id, %since, "follower subscribed");
        let (tx, rx) = mpsc::channel(1024);
        let source = self.clone();
        let subscription = self
            .subscribers
            .connect(&req.subscriber_id, &req.subscriber_url, since);
        tokio::spawn(async move {
            if let Err(e) = stream_changelog(source, since, &tx, &subscription).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Sends every event after `since`, then follows new ones. Heartbeats go
/// out when idle. Ends when the follower goes away.
async fn stream_changelog(
    source: ReplicationSource,
    since: Serial,
    tx: &mpsc::Sender<Result<ChangelogMessage, Status>>,
    subscription: &crate::subscribers::Subscription,
) -> Result<(), Status> {
    let mut applied = source.applied.clone();
    let mut sent = since;
    let first = *applied.borrow_and_update();
    if tx.send(Ok(source.heartbeat(first))).await.is_err() {
        return Ok(());
    }
    loop {
        let latest = *applied.borrow_and_update();
        while sent < latest {
            let index = source.index.clone();
            let from = sent;
            let batch =
                tokio::task::spawn_blocking(move || index.raw_events(from, EVENTS_PER_READ))
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?
                    .map_err(|e| Status::internal(e.to_string()))?;
            if batch.is_empty() {
                break;
            }
            // A short read means this follower is at the head: its small
            // blobs go inline. Behind it, the follower fetches them, many
            // at once: reading each one here, in order, held a catch-up
            // of blobs the follower already had to 2,400 events/s.
            let at_head = batch.len() < EVENTS_PER_READ;
            for (serial, event) in batch {
                let blobs = if at_head {
                    source.inline_blobs(&event).await
                } else {
                    Vec::new()
                };
                let msg = ChangelogMessage {
                    kind: Some(changelog_message::Kind::Event(CommittedEvent {
                        serial: serial.0,
                        event,
                        blobs,
                    })),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return Ok(());
                }
                sent = serial;
            }
            subscription.sent(sent);
        }
        tokio::select! {
            changed = applied.changed() => {
                if changed.is_err() {
                    return Ok(()); // the node is shutting down
                }
            }
            () = tokio::time::sleep(HEARTBEAT) => {
                let latest = *applied.borrow();
                if tx.send(Ok(source.heartbeat(latest))).await.is_err() {
                    return Ok(());
                }
            }
            () = tx.closed() => return Ok(()),
        }
    }
}

#[tonic::async_trait]
impl Blobs for ReplicationSource {
    type GetStream = BoxStream<BlobChunk>;

    async fn pull(&self, request: Request<PullRequest>) -> Result<Response<PullReply>, Status> {
        let req = request.into_inner();
        let mut wanted = Vec::with_capacity(req.sha256s.len());
        for sha in &req.sha256s {
            let sha: Sha256 = sha
                .parse()
                .map_err(|e| Status::invalid_argument(format!("{e}")))?;
            if !matches!(self.blobs.contains(&sha).await, Ok(true)) {
                wanted.push(sha);
            }
        }
        if wanted.is_empty() {
            return Ok(Response::new(PullReply {}));
        }
        let channel = self
            .net
            .shared_channel(&req.from)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let fetched = std::sync::atomic::AtomicU64::new(0);
        for sha in wanted {
            crate::blob_fetch::fetch_blob(&self.blobs, &req.from, channel.clone(), sha, &fetched)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
        }
        Ok(Response::new(PullReply {}))
    }

    async fn get(
        &self,
        request: Request<GetBlobRequest>,
    ) -> Result<Response<Self::GetStream>, Status> {
        let req = request.into_inner();
        let sha: Sha256 = req
            .sha256
            .parse()
            .map_err(|e| Status::invalid_argument(format!("{e}")))?;
        let total = self
            .blobs
            .size_of(&sha)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .ok_or_else(|| Status::not_found(format!("blob {sha} is not on this node")))?;
        if req.offset > total {
            return Err(Status::out_of_range(format!(
                "offset {} is past the end of blob {sha} ({total} bytes)",
                req.offset
            )));
        }
        let mut bytes = self
            .blobs
            .read(&sha, req.offset, total - req.offset)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            // Chunks of BLOB_CHUNK bytes, whatever sizes the store reads
            // in; the first carries the total size, even when empty.
            let mut first = true;
            let mut pending = Vec::with_capacity(BLOB_CHUNK);
            loop {
                let end = match bytes.next().await {
                    Some(Ok(data)) => {
                        pending.extend_from_slice(&data);
                        false
                    }
                    Some(Err(e)) => {
                        let _ = tx.send(Err(Status::unavailable(e.to_string()))).await;
                        return;
                    }
                    None => true,
                };
                while pending.len() >= BLOB_CHUNK || (end && (first || !pending.is_empty())) {
                    let take = pending.len().min(BLOB_CHUNK);
                    let chunk = BlobChunk {
                        data: pending.drain(..take).collect(),
                        total_size: if first { total } else { 0 },
                    };
                    first = false;
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
                if end {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
