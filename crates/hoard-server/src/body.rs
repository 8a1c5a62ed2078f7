//! Request bodies as bounded streams: a size limit checked while reading,
//! and a deadline for each next chunk, so that a slow or truncated body
//! cannot hold a task (or a temp file) forever.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use http_body_util::BodyExt;
use hyper::body::Incoming;

#[derive(Clone, Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("timed out waiting for the rest of the request body")]
    TimedOut,
    #[error("reading the request body failed: {0}")]
    Read(String),
}

/// How long a refused body is read and thrown away, at most.
const LINGER_TIME: Duration = Duration::from_secs(30);
/// How much of a refused body is read and thrown away, at most.
const LINGER_BYTES: u64 = 4 << 30;

/// Reads and throws away the rest of a refused request's body, in the
/// background and bounded (a lingering close, as nginx does it). A client
/// that sends its whole body before it reads an answer, as npm does, then
/// reads the refusal (413, 401) instead of a reset connection (`EPIPE`).
/// The connection closes when the body ends or the bound is reached.
pub fn discard_rest(mut body: Incoming, idle: Duration) {
    tokio::spawn(async move {
        let deadline = Instant::now() + LINGER_TIME;
        let mut seen = 0u64;
        while seen < LINGER_BYTES {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(idle.min(left), body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                }
                _ => break,
            }
        }
        tracing::debug!(bytes = seen, "discarded the rest of a refused body");
    });
}

/// [`discard_rest`] for a request refused before its body was read. A
/// client that asked for `100 Continue` has not sent its body, and will
/// not: polling the body would make hyper send the `100` it waits for, so
/// the connection just closes after the answer.
pub fn discard_refused(req: http::Request<Incoming>, idle: Duration) {
    let expects_continue = req
        .headers()
        .get(http::header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if !expects_continue {
        discard_rest(req.into_body(), idle);
    }
}

/// Streams the data frames of `body`, failing once more than `limit` bytes
/// arrive or when no frame arrives within `idle`. Past the limit, the rest
/// is discarded ([`discard_rest`]) so that the client reads the 413.
pub fn bounded_stream(
    body: Incoming,
    limit: u64,
    idle: Duration,
) -> impl Stream<Item = Result<Bytes, BodyError>> + Send + 'static {
    struct State {
        body: Option<Incoming>,
        seen: u64,
        done: bool,
    }
    let state = State {
        body: Some(body),
        seen: 0,
        done: false,
    };
    futures_util::stream::unfold(state, move |mut st| async move {
        loop {
            let body = st.body.as_mut().filter(|_| !st.done)?;
            let frame = match tokio::time::timeout(idle, body.frame()).await {
                Err(_) => {
                    st.done = true;
                    return Some((Err(BodyError::TimedOut), st));
                }
                Ok(None) => return None,
                Ok(Some(Err(e))) => {
                    st.done = true;
                    return Some((Err(BodyError::Read(e.to_string())), st));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers carry nothing we need
            };
            st.seen += data.len() as u64;
            if st.seen > limit {
                st.done = true;
                if let Some(rest) = st.body.take() {
                    discard_rest(rest, idle);
                }
                return Some((Err(BodyError::TooLarge { limit }), st));
            }
            return Some((Ok(data), st));
        }
    })
}

/// A body read by its own task: the data goes to a parser (which may stop
/// at a closing boundary), while [`BodyCompletion`] tells whether the
/// whole declared body really arrived.
pub fn pump(
    body: Incoming,
    limit: u64,
    idle: Duration,
) -> (
    impl Stream<Item = Result<Bytes, BodyError>> + Send + 'static,
    BodyCompletion,
) {
    use futures_util::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let trace = std::sync::Arc::new(std::sync::Mutex::new(BodyTrace::default()));
    let recorder = trace.clone();
    let task = tokio::spawn(async move {
        let stream = bounded_stream(body, limit, idle);
        futures_util::pin_mut!(stream);
        let mut parser_listening = true;
        while let Some(item) = stream.next().await {
            if let Ok(data) = &item {
                if let Ok(mut trace) = recorder.lock() {
                    trace.record(data);
                }
            }
            // Once the parser is done, keep reading (bounded) to the end.
            if parser_listening && tx.send(item.clone()).await.is_err() {
                parser_listening = false;
            }
            item?;
        }
        Ok(())
    });
    (
        EndAfterPending::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
        BodyCompletion { task, trace },
    )
}

/// A stream that reports its end only on a poll that follows a `Pending`.
///
/// multer 3.1 misreads a stream that delivers its last bytes and its end
/// within one poll while it looks for the first boundary: it sees the end
/// and answers `IncompleteStream` to a whole, valid form, without looking
/// at the bytes that just arrived (rwf2/multer#70, not released). A body
/// read by its own task ([`pump`]) does that now and then under load: the
/// task can send the whole of a small body and close the channel between
/// two of the parser's polls. Ending one poll later gives the parser the
/// bytes first.
pub struct EndAfterPending<S> {
    inner: S,
    /// Items were returned since the last `Pending`.
    fresh: bool,
    ended: bool,
}

impl<S> EndAfterPending<S> {
    pub fn new(inner: S) -> Self {
        EndAfterPending {
            inner,
            fresh: false,
            ended: false,
        }
    }
}

impl<S: Stream + Unpin> Stream for EndAfterPending<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        use std::task::Poll;
        if self.ended {
            return Poll::Ready(None);
        }
        match std::pin::Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(item)) => {
                self.fresh = true;
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) if self.fresh => {
                self.fresh = false;
                self.ended = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                self.fresh = false;
                Poll::Pending
            }
        }
    }
}

/// How many bytes of a body's start and end a [`BodyTrace`] keeps.
const TRACE_EDGE: usize = 256;

/// What a pumped body looked like, kept small: its size, how many chunks
/// it came in, and its first and last bytes. A form that fails to parse
/// is logged with it, so that the log shows what the parser was given.
#[derive(Default)]
pub struct BodyTrace {
    received: u64,
    chunks: u64,
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
}

impl BodyTrace {
    fn record(&mut self, data: &[u8]) {
        self.received += data.len() as u64;
        self.chunks += 1;
        let room = TRACE_EDGE.saturating_sub(self.head.len());
        self.head.extend_from_slice(&data[..room.min(data.len())]);
        let keep = data.len().min(TRACE_EDGE);
        self.tail.extend(&data[data.len() - keep..]);
        while self.tail.len() > TRACE_EDGE {
            self.tail.pop_front();
        }
    }
}

impl std::fmt::Display for BodyTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        write!(
            f,
            "{} bytes in {} chunks, starting {:?}, ending {:?}",
            self.received,
            self.chunks,
            String::from_utf8_lossy(&self.head),
            String::from_utf8_lossy(&tail),
        )
    }
}

/// What became of a body, for diagnosing a form that ended early.
pub enum BodyOutcome {
    /// Read to its declared end.
    Ended {
        received: u64,
    },
    Failed(BodyError),
    /// Still arriving when asked.
    Reading {
        received: u64,
    },
}

pub struct BodyCompletion {
    task: tokio::task::JoinHandle<Result<(), BodyError>>,
    trace: std::sync::Arc<std::sync::Mutex<BodyTrace>>,
}

impl BodyCompletion {
    /// How reading ended, waiting at most `wait` for it to end, and the
    /// body's trace (as far as it arrived).
    pub async fn outcome(self, wait: Duration) -> (BodyOutcome, String) {
        let trace = self.trace.clone();
        let describe = || {
            trace
                .lock()
                .map_or_else(|_| String::new(), |t| t.to_string())
        };
        let count = || trace.lock().map_or(0, |t| t.received);
        let outcome = match tokio::time::timeout(wait, self.finished()).await {
            Ok(Ok(())) => BodyOutcome::Ended { received: count() },
            Ok(Err(e)) => BodyOutcome::Failed(e),
            Err(_) => BodyOutcome::Reading { received: count() },
        };
        (outcome, describe())
    }

    /// Waits until the body has been read to its end, or failed.
    pub async fn finished(self) -> Result<(), BodyError> {
        self.task
            .await
            .unwrap_or_else(|e| Err(BodyError::Read(e.to_string())))
    }
}

/// Reads a whole small body (admin JSON) within `limit` bytes.
pub async fn read_small(body: Incoming, limit: u64, idle: Duration) -> Result<Vec<u8>, BodyError> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let stream = bounded_stream(body, limit, idle);
    futures_util::pin_mut!(stream);
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;

    /// Hands out chunks, answering `Pending` (and waking at once) on the
    /// polls that `pending` marks: the orders in which a body task's
    /// sends and a parser's polls can meet.
    struct Scripted {
        chunks: VecDeque<Bytes>,
        pending: Vec<bool>,
        polls: usize,
    }

    impl Stream for Scripted {
        type Item = Result<Bytes, std::io::Error>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            let poll = self.polls;
            self.polls += 1;
            if self.pending.get(poll).copied().unwrap_or(false) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(self.chunks.pop_front().map(Ok))
        }
    }

    async fn parse(
        body: &[u8],
        cut: usize,
        pending: Vec<bool>,
        boundary: &str,
        end_after_pending: bool,
    ) -> Result<usize, multer::Error> {
        let scripted = Scripted {
            chunks: [&body[..cut], &body[cut..]]
                .into_iter()
                .map(Bytes::copy_from_slice)
                .collect(),
            pending,
            polls: 0,
        };
        let mut multipart = if end_after_pending {
            multer::Multipart::new(EndAfterPending::new(scripted), boundary)
        } else {
            multer::Multipart::new(scripted, boundary)
        };
        let mut bytes = 0;
        while let Some(mut field) = multipart.next_field().await? {
            while let Some(chunk) = field.chunk().await? {
                bytes += chunk.len();
            }
        }
        Ok(bytes)
    }

    /// A twine upload cut in two at every byte, with `Pending` before any
    /// of the first polls: multer alone fails some of these orders (the
    /// check that this test can fail), and never with [`EndAfterPending`].
    #[tokio::test]
    async fn a_whole_form_parses_however_its_body_and_end_arrive() {
        let artifact = hoard_testkit::wheel("race-pkg", "1.0.118");
        let form = hoard_testkit::Upload::of(&artifact).multipart();
        let (body, boundary) = (form.finish(), form.boundary().to_owned());
        let mut bare_failures = 0;
        for cut in 0..=body.len() {
            for mask in 0..8u32 {
                let pending: Vec<bool> = (0..3).map(|k| mask & (1 << k) != 0).collect();
                let parsed = parse(&body, cut, pending.clone(), &boundary, true).await;
                assert!(
                    parsed.is_ok(),
                    "cut at {cut}, pending {pending:?}: {parsed:?}"
                );
                if parse(&body, cut, pending, &boundary, false).await.is_err() {
                    bare_failures += 1;
                }
            }
        }
        assert!(
            bare_failures > 0,
            "multer alone parsed every order: is rwf2/multer#70 fixed? Then EndAfterPending can go"
        );
    }
}
