//! Where log lines go: to stderr as they are made, except access lines
//! (target `hoard::access`, one per request), which are gathered and
//! written in batches. One `write(2)` per request, with its formatting,
//! was about 8% of a node's CPU under a page load (`perf record` during
//! `hoard-bench pypi`).
//!
//! A batch goes out when it reaches [`BATCH_BYTES`], before any other line
//! (so the log keeps its order), at most [`BATCH_DELAY`] after its first
//! line, and when the process exits normally. A kill -9 loses at most
//! that last moment of access lines; warnings and errors are never held.

use std::io::{self, Write};
use std::sync::{Condvar, Mutex, MutexGuard, Once};
use std::time::Duration;

use tracing::Metadata;
use tracing_subscriber::fmt::MakeWriter;

/// The target of the per-request access lines.
pub const ACCESS_TARGET: &str = "hoard::access";
/// A batch this large is written at once.
const BATCH_BYTES: usize = 32 * 1024;
/// The longest an access line waits.
const BATCH_DELAY: Duration = Duration::from_millis(100);

/// Access lines not yet written, and what they are written to.
struct Batcher<W: Write> {
    pending: Vec<u8>,
    sink: W,
}

impl<W: Write> Batcher<W> {
    const fn new(sink: W) -> Self {
        Batcher {
            pending: Vec::new(),
            sink,
        }
    }

    /// Holds an access line; true if it is the first of a new batch.
    fn access(&mut self, line: &[u8]) -> io::Result<bool> {
        let first = self.pending.is_empty();
        self.pending.extend_from_slice(line);
        if self.pending.len() >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(first)
    }

    /// Writes any other line, after the access lines made before it.
    fn direct(&mut self, line: &[u8]) -> io::Result<()> {
        self.flush()?;
        self.sink.write_all(line)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = self.sink.write_all(&self.pending);
        self.pending.clear();
        result
    }
}

/// The process's stderr (`io::stderr()` cannot be made in a static).
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::stderr().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        io::stderr().write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

static BATCH: Mutex<Batcher<Stderr>> = Mutex::new(Batcher::new(Stderr));
/// Wakes the flusher thread when a batch starts.
static STARTED: Condvar = Condvar::new();
static FLUSHER: Once = Once::new();

fn batch() -> MutexGuard<'static, Batcher<Stderr>> {
    BATCH.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes the access lines still held. Call before the process exits.
pub fn flush() {
    let _ = batch().flush();
}

/// The `MakeWriter` of the log: access lines batched, the rest direct.
pub struct LogWriter;

impl LogWriter {
    pub fn new() -> Self {
        FLUSHER.call_once(|| {
            let spawned = std::thread::Builder::new()
                .name("log-flusher".into())
                .spawn(|| loop {
                    let mut held = batch();
                    while held.pending.is_empty() {
                        held = STARTED.wait(held).unwrap_or_else(|p| p.into_inner());
                    }
                    drop(held);
                    std::thread::sleep(BATCH_DELAY);
                    flush();
                });
            if let Err(e) = spawned {
                // Without it, batches still go out by size and at exit.
                eprintln!("warning: cannot start the log flusher thread: {e}");
            }
        });
        LogWriter
    }
}

/// One line's writer (the fmt layer writes each line with one call).
pub enum LineWriter {
    Access,
    Direct,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut held = batch();
        match self {
            LineWriter::Access => {
                if held.access(buf)? {
                    STARTED.notify_one();
                }
            }
            LineWriter::Direct => held.direct(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter::Direct
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter {
        if meta.target() == ACCESS_TARGET {
            LineWriter::Access
        } else {
            LineWriter::Direct
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_lines_wait_for_a_full_batch_or_the_next_other_line_and_keep_their_order() {
        let mut b = Batcher::new(Vec::new());
        assert!(b.access(b"GET /a\n").unwrap());
        assert!(!b.access(b"GET /b\n").unwrap());
        assert!(b.sink.is_empty(), "access lines are held");
        b.direct(b"WARN x\n").unwrap();
        assert_eq!(b.sink, b"GET /a\nGET /b\nWARN x\n");

        let before = b.sink.len();
        let line = [b'a'; 1000];
        let mut written = 0;
        while b.sink.len() == before {
            b.access(&line).unwrap();
            written += 1;
        }
        assert_eq!(written, BATCH_BYTES.div_ceil(1000), "a full batch goes out");
        assert!(b.pending.is_empty());
        b.access(b"GET /c\n").unwrap();
        b.flush().unwrap();
        assert!(b.sink.ends_with(b"GET /c\n"));
    }
}
