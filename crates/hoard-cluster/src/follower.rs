//! The replica side of replication: follow an upstream's changelog, fetch
//! and verify the blobs each event names, and apply the events in serial
//! order. A serial counts as applied only once its blobs are local and
//! the index is flushed, so a replica never lists a file it cannot serve.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use hoard_core::{Serial, Sha256};
use hoard_proto::v1::changelog_client::ChangelogClient;
use hoard_proto::v1::{changelog_message, Heartbeat, InlineBlob, SubscribeRequest};
use hoard_store::{BlobStore, Index, ReceivedEvent, StagedBlob, StoreError};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::blob_fetch::Durability;
use crate::epoch::{ClusterIdentity, Epoch};
use crate::net::Net;
use crate::ClusterError;

const MAX_BACKOFF: Duration = Duration::from_secs(5);
const FLUSH_EVERY: u64 = 512;
/// The most events applied in one transaction.
const BATCH_MAX: usize = 512;
/// The most items fetched ahead while a batch's blobs are made durable.
/// More held more memory than it saved time: with 512, a replica of 10k
/// projects stayed at 118 MiB after its catch-up, against 60 MiB.
const READ_AHEAD: usize = 64;
/// While catching up, how long applied events may wait for company before
/// they are flushed.
const CATCH_UP_FLUSH_DELAY: Duration = Duration::from_millis(50);
/// The longest applied events stay unflushed (invisible) while a catch-up
/// streams in without pause.
const MAX_FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// Room the index's disk must have before a replica whose index stopped
/// taking writes restarts: a few of sled's log segments, so that the
/// restart does not fail the same way at once.
const ROOM_TO_RESTART: usize = 8 << 20;
/// How often a replica whose index stopped taking writes looks for room.
const ROOM_POLL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct FollowerConfig {
    pub node_id: String,
    /// This node's public HTTP URL, told to upstreams for their status.
    pub http_url: String,
    /// gRPC addresses to follow, in order of preference.
    pub upstreams: Vec<String>,
    /// How many events may have blob fetches in flight at once.
    pub fetch_concurrency: usize,
    /// How often a catch-up logs its progress.
    pub progress_every: Duration,
}

/// What `/+status` shows about a replica's replication.
#[derive(Clone, Debug, Default)]
pub struct FollowerStatus {
    pub upstream: Option<String>,
    pub connected: bool,
    pub upstream_serial: u64,
    pub upstream_time_us: i64,
    pub applied_time_us: i64,
    pub pending_blobs: u64,
    pub blob_bytes_fetched: u64,
    /// Subscriptions to an upstream after the first.
    pub reconnects: u64,
    /// Set while something stops the replica from applying (a full disk).
    pub problem: Option<String>,
}

impl FollowerStatus {
    /// How far behind the upstream's latest event this replica is, in seconds.
    pub fn lag_seconds(&self, applied: Serial) -> f64 {
        if applied.0 >= self.upstream_serial {
            0.0
        } else {
            (self.upstream_time_us - self.applied_time_us).max(0) as f64 / 1e6
        }
    }
}

pub struct Follower {
    config: FollowerConfig,
    index: Arc<Index>,
    blobs: BlobStore,
    applied: watch::Sender<Serial>,
    primary_url: watch::Sender<Option<String>>,
    status: Mutex<FollowerStatus>,
    pending_blobs: AtomicU64,
    bytes_fetched: AtomicU64,
    /// Set while catching up: where it started, for the progress lines.
    catch_up: Mutex<Option<CatchUp>>,
    /// Learns the cluster id and epoch from the upstream's heartbeats.
    epoch: Arc<Epoch>,
    net: Net,
    /// Set, with the reason, once the index must be opened again before
    /// this replica can apply anything more.
    reopen: watch::Sender<Option<String>>,
}

/// A catch-up in progress: where it started and where it was at the last
/// progress line, to tell the rate and the time left.
struct CatchUp {
    started: Instant,
    from_serial: u64,
    from_bytes: u64,
    mark: Instant,
    mark_serial: u64,
    mark_bytes: u64,
}

/// Events per second and MB/s between two points.
fn rates(events: u64, bytes: u64, elapsed: Duration) -> (f64, f64) {
    let secs = elapsed.as_secs_f64().max(1e-3);
    (events as f64 / secs, bytes as f64 / 1e6 / secs)
}

/// An event ready to apply: its serial, itself, its staged blobs.
type BatchedEvent = (Serial, Box<ReceivedEvent>, Vec<StagedBlob>);

enum Item {
    Event {
        serial: Serial,
        // Boxed: an event is much larger than a heartbeat.
        event: Box<ReceivedEvent>,
        /// Blob bytes the upstream sent along, by hex sha256, unchecked.
        inline: Vec<InlineBlob>,
        /// Its blobs, verified and staged, to be made durable (all of a
        /// batch's at once) before it is applied.
        staged: Vec<StagedBlob>,
    },
    Heartbeat(Heartbeat),
}

/// The follower's items, with those fetched while it was busy applying
/// kept in order until it asks for them.
struct ReadAhead<'p, P> {
    pipeline: &'p mut P,
    ahead: std::collections::VecDeque<Result<Item, ClusterError>>,
    ended: bool,
}

impl<'p, P> ReadAhead<'p, P>
where
    P: futures_util::Stream<Item = Result<Item, ClusterError>> + Unpin,
{
    fn new(pipeline: &'p mut P) -> Self {
        ReadAhead {
            pipeline,
            ahead: std::collections::VecDeque::new(),
            ended: false,
        }
    }

    async fn next(&mut self) -> Option<Result<Item, ClusterError>> {
        match self.ahead.pop_front() {
            Some(item) => Some(item),
            None if self.ended => None,
            None => self.pipeline.next().await,
        }
    }

    /// The next item if one is there without waiting (`Some(None)`: the
    /// stream ended).
    fn next_now(&mut self) -> Option<Option<Result<Item, ClusterError>>> {
        match self.ahead.pop_front() {
            Some(item) => Some(Some(item)),
            None if self.ended => Some(None),
            None => self.pipeline.next().now_or_never(),
        }
    }

    /// Awaits `work` while the pipeline goes on fetching, up to
    /// `READ_AHEAD` items ahead. Stream::next is cancel-safe: an item is
    /// taken only when it is ready.
    async fn while_fetching<T>(&mut self, work: impl std::future::Future<Output = T>) -> T {
        let mut work = std::pin::pin!(work);
        loop {
            let room = !self.ended && self.ahead.len() < READ_AHEAD;
            tokio::select! {
                biased;
                out = &mut work => return out,
                item = self.pipeline.next(), if room => match item {
                    Some(item) => self.ahead.push_back(item),
                    None => self.ended = true,
                },
            }
        }
    }
}

impl Follower {
    pub fn new(
        config: FollowerConfig,
        index: Arc<Index>,
        blobs: BlobStore,
        epoch: Arc<Epoch>,
        net: Net,
    ) -> Result<Arc<Self>, StoreError> {
        let applied = index.applied_serial()?;
        let applied_time_us = index.event(applied)?.map_or(0, |e| e.time_us);
        Ok(Arc::new(Follower {
            config,
            index,
            blobs,
            applied: watch::Sender::new(applied),
            primary_url: watch::Sender::new(None),
            status: Mutex::new(FollowerStatus {
                applied_time_us,
                ..FollowerStatus::default()
            }),
            pending_blobs: AtomicU64::new(0),
            bytes_fetched: AtomicU64::new(0),
            catch_up: Mutex::new(None),
            epoch,
            net,
            reopen: watch::Sender::new(None),
        }))
    }

    /// The applied (durable, blobs present) serial.
    pub fn applied(&self) -> watch::Receiver<Serial> {
        self.applied.subscribe()
    }

    /// The primary's public URL, learned from upstream heartbeats.
    pub fn primary_url(&self) -> watch::Receiver<Option<String>> {
        self.primary_url.subscribe()
    }

    /// Becomes `Some(reason)` when the index has stopped taking writes and
    /// its disk takes them again: the node must open the index anew (restart)
    /// to go on. [`Follower::run`] has returned by then.
    pub fn reopen_needed(&self) -> watch::Receiver<Option<String>> {
        self.reopen.subscribe()
    }

    pub fn status(&self) -> FollowerStatus {
        let mut status = self.lock_status().clone();
        status.pending_blobs = self.pending_blobs.load(Ordering::Relaxed);
        status.blob_bytes_fetched = self.bytes_fetched.load(Ordering::Relaxed);
        status
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, FollowerStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows the upstreams until `shutdown` turns true: on any failure,
    /// back off and go on with the next upstream, from the applied serial.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let upstreams = self.config.upstreams.clone();
        if upstreams.is_empty() {
            tracing::error!("a replica needs at least one upstream to follow");
            return;
        }
        let mut turn = 0usize;
        let mut backoff = Duration::from_millis(100);
        for attempt in 0u64.. {
            if attempt > 0 {
                self.lock_status().reconnects += 1;
            }
            let addr = &upstreams[turn % upstreams.len()];
            let before = *self.applied.borrow();
            let result = tokio::select! {
                r = self.follow(addr) => r,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            {
                let mut status = self.lock_status();
                status.connected = false;
                match &result {
                    Err(ClusterError::Store(e)) if e.needs_reopen() => {
                        status.problem = Some(format!(
                            "the index stopped taking writes ({e}); \
                             restarting once its disk takes writes again"
                        ));
                    }
                    Err(ClusterError::Store(e)) if e.is_disk_full() => {
                        status.problem = Some(format!("disk full, not applying: {e}"));
                    }
                    // What the upstream sends cannot be applied here: a gap,
                    // an event this node cannot decode (a newer node's?), or
                    // one the index rejects. Reconnecting will not fix it by
                    // itself, so say so instead of looking healthy.
                    Err(
                        e @ (ClusterError::Protocol { .. }
                        | ClusterError::Store(
                            StoreError::Rejected(_)
                            | StoreError::Corrupt(_)
                            | StoreError::Gap { .. },
                        )),
                    ) => {
                        status.problem = Some(format!("cannot apply what {addr} sends: {e}"));
                    }
                    // The upstream will not serve this replica's history (an
                    // epoch that does not continue it); if none will, that
                    // stays the problem.
                    Err(ClusterError::Rpc {
                        status: refusal, ..
                    }) if refusal.code() == tonic::Code::FailedPrecondition => {
                        status.problem = Some(format!(
                            "{addr} refuses to be followed: {}",
                            refusal.message()
                        ));
                    }
                    _ => {}
                }
            }
            match result {
                Ok(()) => tracing::info!(upstream = %addr, "upstream ended the stream"),
                Err(ClusterError::Store(e)) if e.needs_reopen() => {
                    tracing::error!(error = %e, "the index stopped taking writes; waiting for room on its disk to restart");
                    if self.wait_for_room(&mut shutdown).await {
                        self.reopen.send_replace(Some(format!(
                            "the index stopped taking writes ({e}), and its disk takes writes again"
                        )));
                    }
                    return;
                }
                Err(e) => tracing::warn!(upstream = %addr, error = %e, "following stopped"),
            }
            if *self.applied.borrow() > before {
                backoff = Duration::from_millis(100);
            } else {
                // Nothing gained from this upstream: try the next one.
                turn += 1;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// Waits until the index's disk takes [`ROOM_TO_RESTART`] more bytes:
    /// true then, false on shutdown.
    async fn wait_for_room(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        loop {
            let dir = self.index.dir().to_owned();
            let room =
                tokio::task::spawn_blocking(move || hoard_store::has_room(&dir, ROOM_TO_RESTART))
                    .await
                    .is_ok_and(|r| r.is_ok());
            if room {
                return true;
            }
            tokio::select! {
                () = tokio::time::sleep(ROOM_POLL) => {}
                _ = shutdown.wait_for(|stop| *stop) => return false,
            }
        }
    }

    async fn follow(&self, addr: &str) -> Result<(), ClusterError> {
        let channel = self.net.connect(addr).await?;
        let since = self.index.applied_serial()?;
        let mut client = ChangelogClient::new(channel.clone());
        let mut request = tonic::Request::new(SubscribeRequest {
            since_serial: since.0,
            subscriber_id: self.config.node_id.clone(),
            subscriber_url: self.config.http_url.clone(),
        });
        self.epoch.attach(request.metadata_mut());
        let stream = client
            .subscribe(request)
            .await
            .map_err(|status| ClusterError::Rpc {
                addr: addr.to_owned(),
                status,
            })?
            .into_inner();
        {
            let mut status = self.lock_status();
            status.upstream = Some(addr.to_owned());
            status.connected = true;
        }
        tracing::info!(upstream = %addr, %since, "following");

        // Check order as messages arrive, then fetch blobs for several
        // events at once, yielding them in serial order.
        let mut expected = since.next();
        let pipeline = stream
            .map(|message| -> Result<Item, ClusterError> {
                let message = message.map_err(|status| ClusterError::Rpc {
                    addr: addr.to_owned(),
                    status,
                })?;
                match message.kind {
                    Some(changelog_message::Kind::Event(ev)) => {
                        let serial = Serial(ev.serial);
                        if serial != expected {
                            return Err(ClusterError::Protocol {
                                addr: addr.to_owned(),
                                message: format!("expected serial {expected}, got {serial}"),
                            });
                        }
                        expected = serial.next();
                        let event = ReceivedEvent::decode(ev.event).map_err(|e| {
                            ClusterError::Protocol {
                                addr: addr.to_owned(),
                                message: format!("undecodable event {serial}: {e}"),
                            }
                        })?;
                        Ok(Item::Event {
                            serial,
                            event: Box::new(event),
                            inline: ev.blobs,
                            staged: Vec::new(),
                        })
                    }
                    Some(changelog_message::Kind::Heartbeat(hb)) => Ok(Item::Heartbeat(hb)),
                    None => Err(ClusterError::Protocol {
                        addr: addr.to_owned(),
                        message: "empty message".into(),
                    }),
                }
            })
            .map(|item| {
                let channel = channel.clone();
                async move {
                    let mut item = item?;
                    if let Item::Event {
                        event,
                        inline,
                        staged,
                        ..
                    } = &mut item
                    {
                        let inline = std::mem::take(inline);
                        let blobs = event.event().change.blobs().into_iter().map(|sha| {
                            let channel = channel.clone();
                            let sent = inline
                                .iter()
                                .find(|b| b.sha256 == sha.to_hex())
                                .map(|b| b.data.as_slice());
                            async move {
                                if matches!(self.blobs.contains(&sha).await, Ok(true)) {
                                    return Ok(None);
                                }
                                if let Some(data) = sent {
                                    if let Some(kept) =
                                        self.stage_inline_blob(addr, sha, data).await?
                                    {
                                        return Ok(Some(kept));
                                    }
                                }
                                self.fetch_blob(addr, &channel, sha).await.map(Some)
                            }
                        });
                        // An event's blobs (a file and its metadata) at once.
                        *staged = futures_util::future::try_join_all(blobs)
                            .await?
                            .into_iter()
                            .flatten()
                            .collect();
                    }
                    Ok::<Item, ClusterError>(item)
                }
            })
            .buffered(self.config.fetch_concurrency.max(1));
        futures_util::pin_mut!(pipeline);

        let mut unflushed: u64 = 0;
        let result = self.apply_stream(&mut pipeline, &mut unflushed).await;
        // Whatever ended the stream, what was applied is kept: make it
        // durable and visible, so that the next subscription resumes after it.
        if unflushed > 0 {
            self.flush().await?;
        }
        result
    }

    /// Applies items in order, flushing whenever it has caught up with what
    /// has arrived (or every `FLUSH_EVERY` events). Fetching goes on while
    /// a batch's blobs are made durable: otherwise a catch-up's fetches
    /// stopped at every `syncfs`, and each batch held only the few events
    /// fetched meanwhile.
    async fn apply_stream(
        &self,
        pipeline: &mut (impl futures_util::Stream<Item = Result<Item, ClusterError>> + Unpin),
        unflushed: &mut u64,
    ) -> Result<(), ClusterError> {
        let mut items = ReadAhead::new(pipeline);
        let mut last_progress = Instant::now();
        let mut last_flush = Instant::now();
        let mut next = items.next().await;
        while let Some(item) = next {
            // The events that have arrived, in order, go in together: their
            // blobs made durable at once, then one transaction.
            let mut batch = Vec::new();
            let mut item = Some(item);
            // A broken stream ends the batch; what came before it is applied.
            let mut broken = None;
            while let Some(arrived) = item.take() {
                match arrived {
                    Err(e) => broken = Some(e),
                    Ok(Item::Heartbeat(hb)) => self.on_heartbeat(&hb),
                    Ok(Item::Event {
                        serial,
                        event,
                        staged,
                        ..
                    }) => batch.push((serial, event, staged)),
                }
                if broken.is_none() && batch.len() < BATCH_MAX {
                    item = items.next_now().flatten();
                }
            }
            if let Some((last, last_event, _)) = batch.last() {
                let (last, time_us) = (*last, last_event.event().time_us);
                *unflushed += batch.len() as u64;
                let mut batch = batch;
                let staged: Vec<StagedBlob> = batch
                    .iter_mut()
                    .flat_map(|(_, _, blobs)| std::mem::take(blobs))
                    .collect();
                if !staged.is_empty() {
                    items
                        .while_fetching(self.blobs.commit_batch(staged))
                        .await?;
                }
                self.apply_batch(batch).await?;
                let mut status = self.lock_status();
                status.upstream_serial = status.upstream_serial.max(last.0);
                status.applied_time_us = time_us;
                status.upstream_time_us = status.upstream_time_us.max(time_us);
            }
            if let Some(e) = broken {
                return Err(e);
            }
            if *unflushed >= FLUSH_EVERY
                || (*unflushed > 0 && last_flush.elapsed() >= MAX_FLUSH_INTERVAL)
            {
                self.flush().await?;
                *unflushed = 0;
                last_flush = Instant::now();
            }
            if last_progress.elapsed() >= self.config.progress_every {
                self.log_progress();
                last_progress = Instant::now();
            }
            next = match items.next_now() {
                Some(ready) => ready,
                None if *unflushed == 0 => items.next().await,
                None => {
                    // Nothing more has arrived yet. When caught up, make what
                    // was applied durable and visible now; while catching up,
                    // give the next events a moment to share the flush.
                    let caught_up =
                        self.index.applied_serial()?.0 >= self.lock_status().upstream_serial;
                    let more = if caught_up {
                        None
                    } else {
                        tokio::time::timeout(CATCH_UP_FLUSH_DELAY, items.next())
                            .await
                            .ok()
                    };
                    match more {
                        Some(item) => item,
                        None => {
                            self.flush().await?;
                            *unflushed = 0;
                            last_flush = Instant::now();
                            items.next().await
                        }
                    }
                }
            };
        }
        Ok(())
    }

    /// Applies a batch's events (their blobs already durable) in one
    /// transaction. If the index refuses one of them, the events before it
    /// are applied one by one, and its refusal is the error.
    async fn apply_batch(&self, batch: Vec<BatchedEvent>) -> Result<(), ClusterError> {
        let Some(first) = batch.first().map(|(serial, _, _)| *serial) else {
            return Ok(());
        };
        let events: Vec<ReceivedEvent> = batch.into_iter().map(|(_, event, _)| *event).collect();
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || match index.apply_received_batch(first, &events) {
            Err(StoreError::Rejected(_)) if events.len() > 1 => {
                let mut serial = first;
                for event in &events {
                    index.apply_received(serial, event)?;
                    serial = serial.next();
                }
                Ok(())
            }
            other => other,
        })
        .await
        .map_err(|e| StoreError::Io {
            context: "apply task".into(),
            source: std::io::Error::other(e),
        })??;
        Ok(())
    }

    fn on_heartbeat(&self, hb: &Heartbeat) {
        let mut status = self.lock_status();
        status.upstream_serial = hb.latest_serial;
        status.upstream_time_us = hb.latest_time_us;
        drop(status);
        let applied = self.applied.borrow().0;
        if hb.latest_serial > applied {
            let mut catch_up = self.catch_up.lock().unwrap_or_else(|p| p.into_inner());
            if catch_up.is_none() {
                let now = Instant::now();
                let bytes = self.bytes_fetched.load(Ordering::Relaxed);
                *catch_up = Some(CatchUp {
                    started: now,
                    from_serial: applied,
                    from_bytes: bytes,
                    mark: now,
                    mark_serial: applied,
                    mark_bytes: bytes,
                });
                tracing::info!(
                    applied,
                    total = hb.latest_serial,
                    upstream = %hb.node_id,
                    "catching up: serial {applied} of {}",
                    hb.latest_serial
                );
            }
        }
        if !hb.cluster_id.is_empty() {
            self.epoch.observe(ClusterIdentity {
                cluster_id: hb.cluster_id.clone(),
                epoch: hb.epoch,
                since_serial: hb.epoch_since_serial,
                previous: Some(hb.previous_cluster_id.clone()).filter(|p| !p.is_empty()),
            });
        }
        if !hb.primary_url.is_empty() {
            self.primary_url.send_if_modified(|url| {
                let changed = url.as_deref() != Some(hb.primary_url.as_str());
                if changed {
                    *url = Some(hb.primary_url.clone());
                }
                changed
            });
        }
    }

    /// One progress line of a catch-up: the serial, the rate since the
    /// last line, and the time left at that rate.
    fn log_progress(&self) {
        let status = self.status();
        // Applied, flushed or not: flushes come in steps, progress does not.
        let applied = self
            .index
            .applied_serial()
            .map_or(self.applied.borrow().0, |s| s.0);
        let total = status.upstream_serial;
        let mut catch_up = self.catch_up.lock().unwrap_or_else(|p| p.into_inner());
        let Some(c) = catch_up.as_mut().filter(|_| applied < total) else {
            return;
        };
        let now = Instant::now();
        let (events_per_sec, mb_per_sec) = rates(
            applied.saturating_sub(c.mark_serial),
            status.blob_bytes_fetched.saturating_sub(c.mark_bytes),
            now - c.mark,
        );
        let eta = if events_per_sec > 0.0 {
            format!("{:.0} s", (total - applied) as f64 / events_per_sec)
        } else {
            "unknown".to_owned()
        };
        (c.mark, c.mark_serial, c.mark_bytes) = (now, applied, status.blob_bytes_fetched);
        tracing::info!(
            applied,
            total,
            events_per_sec = events_per_sec.round(),
            mb_per_sec = (mb_per_sec * 10.0).round() / 10.0,
            bytes_fetched = status.blob_bytes_fetched,
            pending_blobs = status.pending_blobs,
            "catching up: serial {applied} of {total}, {events_per_sec:.0} events/s, {mb_per_sec:.1} MB/s, ETA {eta}"
        );
    }

    /// Flushes the index and publishes the applied serial.
    async fn flush(&self) -> Result<(), ClusterError> {
        let index = self.index.clone();
        let serial = tokio::task::spawn_blocking(move || {
            index.flush()?;
            index.applied_serial()
        })
        .await
        .map_err(|e| StoreError::Io {
            context: "flush task".into(),
            source: std::io::Error::other(e),
        })??;
        self.applied.send_replace(serial);
        let upstream_serial = {
            let mut status = self.lock_status();
            status.problem = None;
            status.upstream_serial
        };
        if serial.0 >= upstream_serial {
            let done = self
                .catch_up
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(c) = done {
                let bytes = self.bytes_fetched.load(Ordering::Relaxed);
                let elapsed = c.started.elapsed();
                let (events_per_sec, mb_per_sec) = rates(
                    serial.0.saturating_sub(c.from_serial),
                    bytes.saturating_sub(c.from_bytes),
                    elapsed,
                );
                tracing::info!(
                    %serial,
                    bytes_fetched = bytes,
                    secs = elapsed.as_secs_f64(),
                    "caught up: serial {serial} in {:.1} s, {events_per_sec:.0} events/s, {mb_per_sec:.1} MB/s",
                    elapsed.as_secs_f64()
                );
                // A catch-up's batches leave the allocator's arenas full of
                // freed memory that it keeps; an idle replica gives it back.
                tokio::task::spawn_blocking(return_freed_memory);
            }
        }
        Ok(())
    }

    /// Stages a blob that came inside its event, if its bytes are what
    /// the event names; `None` (and nothing kept) if they are not.
    async fn stage_inline_blob(
        &self,
        addr: &str,
        sha: Sha256,
        data: &[u8],
    ) -> Result<Option<StagedBlob>, ClusterError> {
        let blobs = self.blobs.clone();
        let bytes = data.to_vec();
        let staged = tokio::task::spawn_blocking(move || blobs.stage_bytes_unsynced(&bytes))
            .await
            .map_err(|e| StoreError::Io {
                context: "stage task".into(),
                source: std::io::Error::other(e),
            })??;
        if staged.digests.sha256 != sha {
            // Dropping `staged` deletes it.
            tracing::warn!(upstream = %addr, %sha, "an inline blob does not match its sha256; fetching it");
            return Ok(None);
        }
        self.bytes_fetched
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(Some(staged))
    }

    /// Fetches and stages `sha`: from the current upstream first, then
    /// from the others, discarding any copy whose bytes do not match.
    async fn fetch_blob(
        &self,
        addr: &str,
        channel: &Channel,
        sha: Sha256,
    ) -> Result<StagedBlob, ClusterError> {
        self.pending_blobs.fetch_add(1, Ordering::Relaxed);
        let result = self.fetch_blob_from_any(addr, channel, sha).await;
        self.pending_blobs.fetch_sub(1, Ordering::Relaxed);
        result
    }

    async fn fetch_blob_from_any(
        &self,
        addr: &str,
        channel: &Channel,
        sha: Sha256,
    ) -> Result<StagedBlob, ClusterError> {
        let mut last_error = match self.fetch_blob_from(addr, channel.clone(), sha).await {
            Ok(staged) => return Ok(staged),
            Err(e @ ClusterError::Store(_)) => return Err(e),
            Err(e) => e,
        };
        tracing::warn!(upstream = %addr, %sha, error = %last_error, "blob fetch failed; trying other upstreams");
        for other in self.config.upstreams.iter().filter(|u| u.as_str() != addr) {
            let result = match self.net.connect(other).await {
                Ok(ch) => self.fetch_blob_from(other, ch, sha).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(staged) => return Ok(staged),
                Err(e @ ClusterError::Store(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(upstream = %other, %sha, error = %e, "blob fetch failed");
                    last_error = e;
                }
            }
        }
        Err(last_error)
    }

    async fn fetch_blob_from(
        &self,
        addr: &str,
        channel: Channel,
        sha: Sha256,
    ) -> Result<StagedBlob, ClusterError> {
        crate::blob_fetch::fetch_staged(
            &self.blobs,
            addr,
            channel,
            sha,
            &self.bytes_fetched,
            Durability::InBatch,
        )
        .await
    }
}

/// Hands the allocator's free memory back to the kernel (glibc keeps what
/// a burst of allocations freed, in every thread's arena).
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
