//! One thread that makes sled durable for everyone on a node.
//!
//! sled 0.34 makes writes durable only on `flush()`, and concurrent
//! `flush_async` calls can deadlock. So every writer that must wait for
//! durability (a Raft append, a vote, a snapshot) hands a callback to this
//! thread, which flushes once for everything that queued up meanwhile
//! (group commit) and then runs the callbacks. After one failed flush it
//! refuses everything: data may have been lost, and answering "durable"
//! would be a lie.

use std::io;
use std::sync::mpsc;
use std::thread;

use crate::StoreError;

type Callback = Box<dyn FnOnce(io::Result<()>) + Send>;

/// Most callbacks served by one flush.
const MAX_BATCH: usize = 1024;

/// A flush request: the database travels with each job, so the thread
/// keeps no handle of its own and sled's lock goes with the last user.
type Job = (sled::Db, Callback);

#[derive(Clone)]
pub struct Flusher {
    db: sled::Db,
    jobs: mpsc::Sender<Job>,
}

impl Flusher {
    pub(crate) fn spawn(db: sled::Db) -> Result<Self, StoreError> {
        let (jobs, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("hoard-flusher".into())
            .spawn(move || run(rx))
            .map_err(|source| StoreError::Io {
                context: "spawn the flusher thread".into(),
                source,
            })?;
        Ok(Flusher { db, jobs })
    }

    /// Runs `done` once everything written before this call is on disk
    /// (or with the error if it cannot be).
    pub fn after_flush(&self, done: impl FnOnce(io::Result<()>) + Send + 'static) {
        if let Err(mpsc::SendError((_, done))) = self.jobs.send((self.db.clone(), Box::new(done))) {
            done(Err(io::Error::other("the flusher thread has stopped")));
        }
    }

    /// Waits until everything written before this call is on disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.after_flush(move |r| {
            let _ = tx.send(r);
        });
        rx.await
            .map_err(|_| io::Error::other("the flusher thread has stopped"))
            .and_then(|r| r)
            .map_err(|source| StoreError::Io {
                context: "flush the index".into(),
                source,
            })
    }
}

fn run(jobs: mpsc::Receiver<Job>) {
    let mut failed: Option<String> = None;
    while let Ok((db, first)) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok((_, job)) => batch.push(job),
                Err(_) => break,
            }
        }
        if failed.is_none() {
            if let Err(e) = db.flush() {
                tracing::error!(error = %e, "flushing the index failed; refusing further writes");
                failed = Some(e.to_string());
            }
        }
        drop(db);
        for done in batch {
            done(match &failed {
                None => Ok(()),
                Some(e) => Err(io::Error::other(format!(
                    "an earlier flush of the index failed: {e}"
                ))),
            });
        }
    }
}
