//! A small closed-loop HTTP/1.1 load generator.
//!
//! `concurrency` workers each hold one keep-alive connection and send `GET`s
//! back to back. The run is a warm-up followed by a measurement window of a
//! fixed length: a request counts if it completes inside the window, and body
//! bytes count when they arrive inside the window (so a 50 MB download that
//! straddles the window edge contributes the part that arrived inside it).
//! Every response must be 200 with exactly the expected number of body bytes,
//! else it is an error.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// What to request.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    pub accept: Option<String>,
    /// `Accept-Encoding` to send (`gzip`, as pip and uv do), or none.
    pub accept_encoding: Option<String>,
    /// Exact body length every response must have (as sent: compressed,
    /// if the server compressed it).
    pub expect_len: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    pub window: Duration,
    pub requests: u64,
    pub bytes: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Connections opened after the first one of each worker, because the
    /// server closed one (no keep-alive) or after an error.
    pub reconnects: u64,
    /// Responses counted that came with `Content-Encoding: gzip`: with
    /// `bytes`, this shows whether the server sent the compressed variant.
    pub gzip_responses: u64,
    /// Sorted latencies (whole response, body included) in microseconds.
    pub latencies_us: Vec<u32>,
}

impl Measured {
    pub fn req_per_s(&self) -> f64 {
        self.requests as f64 / self.window.as_secs_f64()
    }

    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.window.as_secs_f64()
    }

    /// Adds another run of the same target (a later round of an
    /// alternating series, or another worker of the same run) to this one.
    pub fn merge(&mut self, other: Measured) {
        self.window += other.window;
        self.requests += other.requests;
        self.bytes += other.bytes;
        self.errors += other.errors;
        self.reconnects += other.reconnects;
        self.gzip_responses += other.gzip_responses;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies_us.extend(other.latencies_us);
        self.latencies_us.sort_unstable();
    }

    /// Latency quantile `q` in milliseconds.
    pub fn latency_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }
}

#[derive(Default)]
struct WorkerStats {
    reconnects: u64,
    requests: u64,
    bytes: u64,
    errors: u64,
    gzip_responses: u64,
    first_error: Option<String>,
    latencies_us: Vec<u32>,
}

impl WorkerStats {
    fn error(&mut self, counted: bool, e: &anyhow::Error) {
        if counted {
            self.errors += 1;
        }
        if self.first_error.is_none() {
            self.first_error = Some(format!("{e:#}"));
        }
    }
}

/// What a probe request got: the body length as sent, and whether it was
/// gzip-encoded.
pub struct Probed {
    pub len: u64,
    pub gzip: bool,
}

/// One request that must succeed: fail early (and clearly) if the target
/// does not answer correctly. With `expect_len: None`, any length is
/// accepted (a compressed body, whose length only the server knows).
pub async fn probe(target: &Target, expect_len: Option<u64>) -> Result<Probed> {
    let mut s = connect(target.addr).await?;
    let mut st = WorkerStats::default();
    let far = Instant::now() + Duration::from_secs(3600);
    let mut t = target.clone();
    t.expect_len = expect_len.unwrap_or(u64::MAX);
    match one_request(&mut s, &t, far, far, &mut st).await {
        Ok(Outcome::Done { gzip }) => Ok(Probed {
            len: t.expect_len,
            gzip,
        }),
        Ok(_) => bail!("probe GET {}: no complete response", target.path),
        Err(e) => match e.downcast_ref::<LengthMismatch>() {
            Some(m) if expect_len.is_none() => Ok(Probed {
                len: m.got,
                gzip: m.gzip,
            }),
            _ => Err(e.context(format!("probe GET {}", target.path))),
        },
    }
}

/// A body of another length than expected.
#[derive(Debug)]
struct LengthMismatch {
    path: String,
    got: u64,
    expected: u64,
    gzip: bool,
}

impl std::fmt::Display for LengthMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GET {}: body of {} bytes, expected {}",
            self.path, self.got, self.expected
        )
    }
}

impl std::error::Error for LengthMismatch {}

/// The measurement window of a run that starts now: (from, end).
pub fn window(plan: Plan) -> (Instant, Instant) {
    let from = Instant::now() + plan.warmup;
    (from, from + plan.duration)
}

/// Run `plan` against `target` on the current tokio runtime, measuring
/// between `from` and `end` (see [`window`]).
pub async fn run(target: &Target, plan: Plan, from: Instant, end: Instant) -> Result<Measured> {
    let target = Arc::new(target.clone());
    let mut set = JoinSet::new();
    for _ in 0..plan.concurrency.max(1) {
        set.spawn(worker(target.clone(), from, end));
    }
    let mut m = Measured {
        window: end.duration_since(from),
        ..Measured::default()
    };
    while let Some(r) = set.join_next().await {
        let st = r.context("load worker panicked")?;
        m.merge(Measured {
            window: Duration::ZERO,
            requests: st.requests,
            bytes: st.bytes,
            errors: st.errors,
            first_error: st.first_error,
            reconnects: st.reconnects,
            gzip_responses: st.gzip_responses,
            latencies_us: st.latencies_us,
        });
    }
    Ok(m)
}

/// One keep-alive HTTP/1.1 connection. hyper rather than reqwest: a
/// reqwest built with its `gzip` feature (cargo unifies it in when
/// hoard-mirror is built in the same invocation) would send
/// `Accept-Encoding` by itself and decompress what it gets.
pub(crate) async fn connect(addr: SocketAddr) -> Result<SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the peer closes.
        let _ = conn.await;
    });
    Ok(sender)
}

enum Outcome {
    /// A complete response; `gzip`: it was `Content-Encoding: gzip`.
    Done { gzip: bool },
    /// The window closed while the body was still arriving.
    Cut,
    /// The server had closed the connection before the request was sent
    /// (it does not keep connections alive): not an error.
    Closed,
}

async fn one_request(
    sender: &mut SendRequest<Empty<Bytes>>,
    t: &Target,
    from: Instant,
    end: Instant,
    st: &mut WorkerStats,
) -> Result<Outcome> {
    if sender.ready().await.is_err() {
        return Ok(Outcome::Closed);
    }
    let mut req = http::Request::get(t.path.as_str())
        .header(http::header::HOST, t.addr.to_string())
        .header(http::header::USER_AGENT, "hoard-bench");
    if let Some(a) = &t.accept {
        req = req.header(http::header::ACCEPT, a.as_str());
    }
    if let Some(a) = &t.accept_encoding {
        req = req.header(http::header::ACCEPT_ENCODING, a.as_str());
    }
    let req = req.body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    if resp.status() != http::StatusCode::OK {
        bail!("GET {}: status {}", t.path, resp.status());
    }
    let gzip = resp
        .headers()
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Some(d) = frame.data_ref() {
            n += d.len() as u64;
            let now = Instant::now();
            if now >= from && now <= end {
                st.bytes += d.len() as u64;
            }
            if now > end {
                return Ok(Outcome::Cut);
            }
        }
    }
    if n != t.expect_len {
        return Err(LengthMismatch {
            path: t.path.clone(),
            got: n,
            expected: t.expect_len,
            gzip,
        }
        .into());
    }
    Ok(Outcome::Done { gzip })
}

async fn worker(t: Arc<Target>, from: Instant, end: Instant) -> WorkerStats {
    let mut st = WorkerStats::default();
    let mut sender: Option<SendRequest<Empty<Bytes>>> = None;
    let mut opened = false;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let s = match sender.as_mut() {
            Some(s) => s,
            None => match connect(t.addr).await {
                Ok(s) => {
                    if opened {
                        st.reconnects += 1;
                    }
                    opened = true;
                    sender.insert(s)
                }
                Err(e) => {
                    st.error(now >= from, &e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let t0 = Instant::now();
        match one_request(s, &t, from, end, &mut st).await {
            Ok(Outcome::Done { gzip }) => {
                let t1 = Instant::now();
                if t1 >= from && t1 <= end {
                    st.requests += 1;
                    st.gzip_responses += u64::from(gzip);
                    let us = t1.duration_since(t0).as_micros();
                    st.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                }
            }
            Ok(Outcome::Cut) => break,
            Ok(Outcome::Closed) => sender = None,
            Err(e) => {
                let t1 = Instant::now();
                st.error(t1 >= from && t1 <= end, &e);
                sender = None;
            }
        }
    }
    st
}
