//! Request limits that keep one client from holding the node: how long a
//! request's headers may take (slowloris gets a 408), how many
//! connections one address may hold, and how many requests a token may
//! make per second (429 with `Retry-After`). Header size and count are
//! hyper's (431), configured where the listener is built.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::sync::oneshot;

/// A connection's stream as hyper sees it, which remembers whether bytes
/// arrived since the last answer went out, and hands the stream back when
/// hyper drops it. When hyper gives up on a request's headers (its header
/// timeout), the connection task then writes a 408 on the same stream —
/// but only if part of a request had arrived: an idle keep-alive
/// connection is closed quietly, because a 408 there could be read as the
/// answer to the client's next request.
pub struct TrackedIo<S> {
    inner: Option<S>,
    read_since_write: Arc<AtomicBool>,
    give_back: Option<oneshot::Sender<S>>,
}

/// The other side of a [`TrackedIo`]: the stream once hyper is done.
pub struct Returned<S> {
    stream: oneshot::Receiver<S>,
    read_since_write: Arc<AtomicBool>,
}

pub fn track<S>(stream: S) -> (TrackedIo<S>, Returned<S>) {
    let (tx, rx) = oneshot::channel();
    let flag = Arc::new(AtomicBool::new(false));
    (
        TrackedIo {
            inner: Some(stream),
            read_since_write: flag.clone(),
            give_back: Some(tx),
        },
        Returned {
            stream: rx,
            read_since_write: flag,
        },
    )
}

impl<S> Drop for TrackedIo<S> {
    fn drop(&mut self) {
        if let (Some(stream), Some(tx)) = (self.inner.take(), self.give_back.take()) {
            let _ = tx.send(stream);
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the stream was handed back")
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Err(gone()));
        };
        let polled = Pin::new(inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.read_since_write.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> TrackedIo<S> {
    /// Writes with `write`, noting that the connection has written since
    /// it last read.
    fn poll_written(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(Err(gone()));
        };
        let polled = write(Pin::new(inner), cx);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.read_since_write.store(false, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TrackedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_written(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_written(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    /// hyper sends a response's head and body with one `writev` only when
    /// its stream says it can; otherwise it first copies every body chunk
    /// into its own buffer.
    fn is_write_vectored(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_flush(cx),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_shutdown(cx),
            None => Poll::Ready(Err(gone())),
        }
    }
}

impl<S: AsyncWrite + Unpin> Returned<S> {
    /// After hyper's header timeout: a 408 if part of a request arrived,
    /// then the connection closes.
    pub async fn answer_header_timeout(self, timeout: Duration) {
        let partial = self.read_since_write.load(Ordering::Relaxed);
        let Ok(mut stream) = self.stream.await else {
            return;
        };
        if partial {
            let body = format!(
                "the request's headers did not arrive within {} s\n",
                timeout.as_secs()
            );
            let answer = format!(
                "HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n\
                 connection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let write = async {
                stream.write_all(answer.as_bytes()).await?;
                stream.shutdown().await
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), write).await;
        }
    }
}

/// Open connections per client address.
#[derive(Default)]
pub struct ConnectionLimits {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its address, until dropped.
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    addr: IpAddr,
}

impl ConnectionLimits {
    /// Counts a new connection from `addr`, or `None` if it already holds
    /// `max`.
    pub fn admit(self: &Arc<Self>, addr: IpAddr, max: usize) -> Option<ConnectionSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(addr).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            limits: self.clone(),
            addr,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.addr) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.addr);
            }
        }
    }
}

/// The answer to a connection over its address's limit, written before
/// hyper sees it.
pub fn too_many_connections(max: usize) -> String {
    let body =
        format!("more than {max} open connections from this address; close some and retry\n");
    format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain; charset=utf-8\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Requests per second per credential: a token bucket each, refilled at
/// `rate` up to `burst`. Buckets of credentials not seen for a minute are
/// dropped, so the map stays as small as the set of active clients.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        RateLimiter {
            rate: f64::from(rate_per_sec),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// A slower limiter: `per_minute` a minute, bursts up to `burst`.
    pub fn per_minute(per_minute: u32, burst: u32) -> Self {
        RateLimiter {
            rate: f64::from(per_minute) / 60.0,
            ..RateLimiter::new(0, burst)
        }
    }

    /// Takes one request from `key`'s bucket; `Err(secs)` is how long to
    /// wait for the next one. A rate of 0 means no limit.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(60));
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - bucket.tokens) / self.rate).ceil() as u64).max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_asks_to_wait() {
        let limiter = RateLimiter::new(1, 3);
        for _ in 0..3 {
            assert_eq!(limiter.check("t"), Ok(()));
        }
        assert_eq!(limiter.check("t"), Err(1));
        // Another credential has its own bucket.
        assert_eq!(limiter.check("u"), Ok(()));
        assert_eq!(RateLimiter::new(0, 1).check("t"), Ok(()));
        let slow = RateLimiter::per_minute(6, 2);
        assert_eq!(slow.check("t"), Ok(()));
        assert_eq!(slow.check("t"), Ok(()));
        assert_eq!(slow.check("t"), Err(10));
    }

    #[test]
    fn connection_slots_count_per_address_and_free_on_drop() {
        let limits = Arc::new(ConnectionLimits::default());
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let one = limits.admit(a, 2).unwrap();
        let _two = limits.admit(a, 2).unwrap();
        assert!(limits.admit(a, 2).is_none());
        assert!(limits.admit(b, 2).is_some());
        drop(one);
        assert!(limits.admit(a, 2).is_some());
    }

    #[tokio::test]
    async fn a_partial_request_gets_a_408_and_an_idle_connection_nothing() {
        for (sent, expect_408) in [
            (&b"GET / HTTP/1.1\r\nX-Slow: "[..], true),
            (&b""[..], false),
        ] {
            let (client, server) = tokio::io::duplex(4096);
            let (mut io, returned) = track(server);
            let mut client = client;
            client.write_all(sent).await.unwrap();
            let mut buf = [0u8; 64];
            if !sent.is_empty() {
                let mut rb = ReadBuf::new(&mut buf);
                std::future::poll_fn(|cx| Pin::new(&mut io).poll_read(cx, &mut rb))
                    .await
                    .unwrap();
            }
            drop(io);
            returned.answer_header_timeout(Duration::from_secs(5)).await;
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut client, &mut got)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&got);
            assert_eq!(text.starts_with("HTTP/1.1 408"), expect_408, "{text}");
        }
    }
}
