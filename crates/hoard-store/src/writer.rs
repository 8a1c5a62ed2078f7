//! The single-node primary's writer: one thread assigns serials, applies
//! events and flushes sled before anyone is told that a write succeeded.

use std::sync::Arc;
use std::thread;

use hoard_core::{Event, Serial};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{Index, StoreError};

/// Most events applied between two flushes: concurrent writers share one
/// fsync (group commit), without starving any of them for long.
const MAX_BATCH: usize = 256;

struct Job {
    event: Event,
    reply: oneshot::Sender<Result<Serial, StoreError>>,
}

/// Commits events to a local index, one writer thread for the whole node.
/// sled is flushed once per batch from this thread only, which avoids
/// sled 0.34's concurrent-flush deadlock.
#[derive(Clone)]
pub struct LocalWriter {
    jobs: mpsc::UnboundedSender<Job>,
    durable: watch::Receiver<Serial>,
}

impl LocalWriter {
    pub fn spawn(index: Arc<Index>) -> Result<Self, StoreError> {
        let (jobs, rx) = mpsc::unbounded_channel();
        let (durable_tx, durable) = watch::channel(index.applied_serial()?);
        thread::Builder::new()
            .name("hoard-writer".into())
            .spawn(move || run(index, rx, durable_tx))
            .map_err(|e| StoreError::Io {
                context: "spawn the writer thread".into(),
                source: e,
            })?;
        Ok(LocalWriter { jobs, durable })
    }

    /// Commits one event and returns its serial once it is durable.
    pub async fn commit(&self, event: Event) -> Result<Serial, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job { event, reply })
            .map_err(|_| StoreError::WriterStopped)?;
        rx.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// The latest durable serial, updated after every flush.
    pub fn durable_serial(&self) -> watch::Receiver<Serial> {
        self.durable.clone()
    }
}

fn run(index: Arc<Index>, mut jobs: mpsc::UnboundedReceiver<Job>, durable: watch::Sender<Serial>) {
    let mut failed = false;
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if failed {
            for job in batch {
                let _ = job.reply.send(Err(StoreError::WriterStopped));
            }
            continue;
        }
        let mut results = Vec::with_capacity(batch.len());
        for job in &batch {
            let result = index.applied_serial().and_then(|applied| {
                let serial = applied.next();
                index.apply(serial, &job.event).map(|()| serial)
            });
            results.push(result);
        }
        if let Err(e) = index.flush() {
            // Applied but maybe not durable: acknowledging would risk losing
            // an acknowledged write, so refuse everything from now on.
            tracing::error!(error = %e, "flushing the index failed; refusing further writes");
            failed = true;
            for job in batch {
                let _ = job.reply.send(Err(StoreError::WriterStopped));
            }
            continue;
        }
        if let Ok(serial) = index.applied_serial() {
            durable.send_replace(serial);
        }
        for (job, result) in batch.into_iter().zip(results) {
            if let Ok(serial) = &result {
                tracing::debug!(%serial, kind = job.event.change.kind(), "committed");
            }
            let _ = job.reply.send(result);
        }
    }
}
