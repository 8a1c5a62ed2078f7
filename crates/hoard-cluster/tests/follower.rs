//! The follower against misbehaving upstreams: real stores in temp dirs,
//! real gRPC on loopback, and a scripted upstream that sends what a
//! broken or malicious node would.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::Stream;
use hoard_cluster::{serve_grpc, Follower, FollowerConfig, ReplicationSource};
use hoard_core::{Change, Event, FileRecord, RepoFormat, RepoName, RepoSettings, Serial, Sha256};
use hoard_proto::v1::blobs_server::{Blobs, BlobsServer};
use hoard_proto::v1::changelog_server::{Changelog, ChangelogServer};
use hoard_proto::v1::{
    changelog_message, BlobChunk, ChangelogMessage, CommittedEvent, GetBlobRequest, InlineBlob,
    SubscribeRequest,
};
use hoard_store::{BlobStore, Index, LocalWriter};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

fn repo() -> RepoName {
    "pypi".parse().unwrap()
}

fn event(change: Change) -> Event {
    Event {
        actor: "test".into(),
        time_us: 1,
        user: None,
        node: None,
        change,
    }
}

fn repo_created() -> Event {
    event(Change::RepoCreated {
        repo: repo(),
        settings: RepoSettings::hosted(RepoFormat::Pypi),
    })
}

fn file_added(name: &str, content: &[u8]) -> Event {
    event(Change::FileAdded {
        repo: repo(),
        project: "demo".into(),
        display_name: "demo".into(),
        file: FileRecord {
            filename: name.into(),
            version: "1.0".into(),
            sha256: Sha256::of(content),
            size: content.len() as u64,
            packagetype: "sdist".into(),
            requires_python: None,
            core_metadata: None,
        },
        upload_time_us: None,
    })
}

/// An upstream that sends a fixed list of (serial, event) on every
/// subscription and records the `since_serial` of each; its blobs answer
/// with `blob_bytes`, whatever is asked, and events carry `inline_bytes`
/// as their blobs' bytes, if set.
#[derive(Clone)]
struct Scripted {
    events: Vec<(u64, Event)>,
    blob_bytes: Vec<u8>,
    /// Sent inside each event, as the bytes of each blob it names.
    inline_bytes: Option<Vec<u8>>,
    subscriptions: Arc<Mutex<Vec<u64>>>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Changelog for Scripted {
    type SubscribeStream = BoxStream<ChangelogMessage>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let since = request.into_inner().since_serial;
        self.subscriptions.lock().unwrap().push(since);
        let messages: Vec<Result<ChangelogMessage, Status>> = self
            .events
            .iter()
            .filter(|(serial, _)| *serial > since)
            .map(|(serial, ev)| {
                Ok(ChangelogMessage {
                    kind: Some(changelog_message::Kind::Event(CommittedEvent {
                        serial: *serial,
                        event: hoard_store::ReceivedEvent::encode(ev.clone())
                            .bytes()
                            .to_vec(),
                        blobs: self
                            .inline_bytes
                            .iter()
                            .flat_map(|data| {
                                ev.change.blobs().into_iter().map(|sha| InlineBlob {
                                    sha256: sha.to_hex(),
                                    data: data.clone(),
                                })
                            })
                            .collect(),
                    })),
                })
            })
            .collect();
        // Keep the stream open after the script, like a live upstream.
        let stream = futures_util::stream::iter(messages).chain(futures_util::stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }
}

#[tonic::async_trait]
impl Blobs for Scripted {
    type GetStream = BoxStream<BlobChunk>;

    async fn get(
        &self,
        _request: Request<GetBlobRequest>,
    ) -> Result<Response<Self::GetStream>, Status> {
        let chunk = BlobChunk {
            data: self.blob_bytes.clone(),
            total_size: self.blob_bytes.len() as u64,
        };
        Ok(Response::new(Box::pin(futures_util::stream::iter([Ok(
            chunk,
        )]))))
    }

    async fn pull(
        &self,
        _request: Request<hoard_proto::v1::PullRequest>,
    ) -> Result<Response<hoard_proto::v1::PullReply>, Status> {
        Err(Status::unimplemented("a scripted upstream never pulls"))
    }
}

use futures_util::StreamExt;

async fn start_scripted(script: Scripted) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ChangelogServer::new(script.clone()))
            .add_service(BlobsServer::new(script))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

fn test_epoch(dir: &std::path::Path) -> Arc<hoard_cluster::Epoch> {
    hoard_cluster::Epoch::open(
        dir,
        hoard_cluster::Contact {
            grpc_addr: "127.0.0.1:0".into(),
            http_url: "http://127.0.0.1:0".into(),
        },
    )
    .unwrap()
}

struct Replica {
    _dir: tempfile::TempDir,
    index: Arc<Index>,
    blobs: BlobStore,
    follower: Arc<Follower>,
    _stop: watch::Sender<bool>,
}

fn start_replica(upstreams: Vec<String>) -> Replica {
    let dir = tempfile::tempdir().unwrap();
    let index = Arc::new(Index::open(&dir.path().join("index")).unwrap());
    let blobs = BlobStore::open(dir.path()).unwrap();
    let follower = Follower::new(
        FollowerConfig {
            node_id: "replica".into(),
            http_url: String::new(),
            upstreams,
            fetch_concurrency: 4,
            progress_every: std::time::Duration::from_secs(5),
        },
        index.clone(),
        blobs.clone(),
        test_epoch(dir.path()),
        hoard_cluster::Net::new("127.0.0.1:0".into(), None, None),
    )
    .unwrap();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(follower.clone().run(stopped));
    Replica {
        _dir: dir,
        index,
        blobs,
        follower,
        _stop: stop,
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn a_gap_in_the_stream_disconnects_and_resumes_from_the_applied_serial() {
    let subscriptions = Arc::new(Mutex::new(Vec::new()));
    let addr = start_scripted(Scripted {
        // Serial 2 is missing.
        events: vec![(1, repo_created()), (3, repo_created())],
        blob_bytes: Vec::new(),
        inline_bytes: None,
        subscriptions: subscriptions.clone(),
    })
    .await;
    let replica = start_replica(vec![addr]);
    wait_until("the replica resubscribed", || {
        subscriptions.lock().unwrap().len() >= 2
    })
    .await;
    let subs = subscriptions.lock().unwrap().clone();
    assert_eq!(subs[0], 0);
    assert_eq!(subs[1], 1, "resumes after the last applied serial");
    assert_eq!(replica.index.applied_serial().unwrap(), Serial(1));
    assert_eq!(*replica.follower.applied().borrow(), Serial(1));
    // It says why it is stuck instead of looking healthy.
    let problem = replica.follower.status().problem.unwrap_or_default();
    assert!(problem.contains("cannot apply"), "{problem:?}");
}

#[tokio::test]
async fn an_event_the_index_rejects_makes_the_follower_unhealthy() {
    let subscriptions = Arc::new(Mutex::new(Vec::new()));
    let addr = start_scripted(Scripted {
        // The same repository created twice: no index accepts that.
        events: vec![(1, repo_created()), (2, repo_created())],
        blob_bytes: Vec::new(),
        inline_bytes: None,
        subscriptions: subscriptions.clone(),
    })
    .await;
    let replica = start_replica(vec![addr]);
    wait_until("the follower reports the rejected event", || {
        replica
            .follower
            .status()
            .problem
            .is_some_and(|p| p.contains("already exists"))
    })
    .await;
    assert_eq!(replica.index.applied_serial().unwrap(), Serial(1));
}

#[tokio::test]
async fn a_repeated_serial_disconnects_and_resumes() {
    let subscriptions = Arc::new(Mutex::new(Vec::new()));
    let addr = start_scripted(Scripted {
        events: vec![(1, repo_created()), (1, repo_created())],
        blob_bytes: Vec::new(),
        inline_bytes: None,
        subscriptions: subscriptions.clone(),
    })
    .await;
    let replica = start_replica(vec![addr]);
    wait_until("the replica resubscribed", || {
        subscriptions.lock().unwrap().len() >= 2
    })
    .await;
    assert_eq!(subscriptions.lock().unwrap()[1], 1);
    assert_eq!(replica.index.applied_serial().unwrap(), Serial(1));
}

#[tokio::test]
async fn a_blob_with_wrong_bytes_is_discarded_and_fetched_from_another_upstream() {
    let content = b"the real bytes of the sdist".to_vec();
    let events = vec![
        (1, repo_created()),
        (2, file_added("demo-1.0.tar.gz", &content)),
    ];
    // The first upstream serves tampered bytes for every blob.
    let bad = start_scripted(Scripted {
        events: events.clone(),
        blob_bytes: b"tampered".to_vec(),
        inline_bytes: None,
        subscriptions: Arc::new(Mutex::new(Vec::new())),
    })
    .await;

    // The second is a real node holding the real blob.
    let dir = tempfile::tempdir().unwrap();
    let index = Arc::new(Index::open(&dir.path().join("index")).unwrap());
    let blobs = BlobStore::open(dir.path()).unwrap();
    blobs.put_bytes(&content).await.unwrap();
    let writer = LocalWriter::spawn(index.clone()).unwrap();
    for (_, ev) in &events {
        writer.commit(ev.clone()).await.unwrap();
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let good = listener.local_addr().unwrap().to_string();
    let (_, primary_url) = watch::channel(None);
    tokio::spawn(serve_grpc(
        ReplicationSource {
            node_id: "good".into(),
            index: index.clone(),
            blobs,
            applied: writer.durable_serial(),
            primary_url,
            epoch: test_epoch(dir.path()),
            net: hoard_cluster::Net::new(good.clone(), None, None),
            subscribers: Default::default(),
        },
        None,
        listener,
        std::future::pending(),
    ));

    let replica = start_replica(vec![bad, good]);
    wait_until("the file's event is applied", || {
        *replica.follower.applied().borrow() == Serial(2)
    })
    .await;
    let sha = Sha256::of(&content);
    assert!(replica.blobs.contains(&sha).await.unwrap());
    assert!(replica.blobs.verify(&sha).await.unwrap());
    assert_eq!(replica.index.digest().unwrap(), index.digest().unwrap());
    // The tampered copy left nothing behind.
    assert_eq!(replica.blobs.list().await.unwrap().len(), 1);
    assert_eq!(
        std::fs::read_dir(replica.blobs.tmp_dir()).unwrap().count(),
        0
    );
}

/// A replica of a scripted upstream whose events carry `inline` as their
/// blobs' bytes and whose `Blobs.Get` answers `fetched`: what it applies
/// and stores.
async fn replica_of_inline(inline: &[u8], fetched: &[u8]) -> (Replica, Sha256) {
    let content = b"the real bytes of the sdist".to_vec();
    let addr = start_scripted(Scripted {
        events: vec![
            (1, repo_created()),
            (2, file_added("demo-1.0.tar.gz", &content)),
        ],
        blob_bytes: fetched.to_vec(),
        inline_bytes: Some(inline.to_vec()),
        subscriptions: Arc::new(Mutex::new(Vec::new())),
    })
    .await;
    let replica = start_replica(vec![addr]);
    wait_until("the replica applied the file", || {
        replica.index.applied_serial().unwrap() == Serial(2)
    })
    .await;
    (replica, Sha256::of(&content))
}

async fn stored(blobs: &BlobStore, sha: &Sha256) -> Vec<u8> {
    let mut stream = blobs.read(sha, 0, u64::MAX).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

#[tokio::test]
async fn a_blob_sent_inside_its_event_is_kept_without_a_fetch() {
    let content = b"the real bytes of the sdist";
    // Blobs.Get would answer tampered bytes: only the inline copy can do.
    let (replica, sha) = replica_of_inline(content, b"tampered").await;
    assert_eq!(stored(&replica.blobs, &sha).await, content);
    assert_eq!(
        replica.follower.status().blob_bytes_fetched,
        content.len() as u64
    );
}

#[tokio::test]
async fn an_inline_blob_with_wrong_bytes_is_discarded_and_fetched() {
    let content = b"the real bytes of the sdist";
    let (replica, sha) = replica_of_inline(b"tampered", content).await;
    assert_eq!(stored(&replica.blobs, &sha).await, content);
    let (count, bytes) = replica.blobs.count().await.unwrap();
    assert_eq!(
        (count, bytes),
        (1, content.len() as u64),
        "only the real blob is kept"
    );
}
