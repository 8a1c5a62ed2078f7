//! One row of a side-by-side table: a load run against one server, with
//! the CPU time that the server and the load generator used in its window.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;

use crate::load::{self, Plan, Target};
use crate::procs::{cpu_seconds_self, cpu_seconds_tree};
use crate::report::Row;

/// One server's answer to one scenario.
pub struct Endpoint {
    pub server: &'static str,
    pub pid: u32,
    pub addr: SocketAddr,
    pub path: String,
    pub accept: String,
    /// `Accept-Encoding` to send; then the body's length is the one the
    /// server's first answer had (a compressed one, if it compressed).
    pub accept_encoding: Option<String>,
    /// The body's length without content encoding.
    pub len: u64,
}

/// The load plans of a run: small responses and downloads.
#[derive(Clone, Copy, Debug)]
pub struct Plans {
    pub pages: Plan,
    pub download: Plan,
}

impl Plans {
    pub fn new(
        concurrency: usize,
        download_concurrency: usize,
        warmup: f64,
        duration: f64,
    ) -> Self {
        let pages = Plan {
            concurrency,
            warmup: Duration::from_secs_f64(warmup),
            duration: Duration::from_secs_f64(duration),
        };
        Plans {
            pages,
            download: Plan {
                concurrency: download_concurrency,
                ..pages
            },
        }
    }
}

/// Runs `plan` against `e`, after one probe request that must succeed.
pub async fn row(scenario: &'static str, e: &Endpoint, plan: Plan) -> Result<Row> {
    let mut target = Target {
        addr: e.addr,
        path: e.path.clone(),
        accept: Some(e.accept.clone()),
        accept_encoding: e.accept_encoding.clone(),
        expect_len: e.len,
    };
    eprintln!(
        "{scenario} / {}: {} connections, {} s warm-up + {} s",
        e.server,
        plan.concurrency,
        plan.warmup.as_secs_f64(),
        plan.duration.as_secs_f64()
    );
    let identity_len = e.accept_encoding.is_none().then_some(e.len);
    let probed = load::probe(&target, identity_len).await?;
    target.expect_len = probed.len;
    if target.accept_encoding.is_some() {
        eprintln!(
            "  {} answers {} bytes, {}",
            e.server,
            probed.len,
            if probed.gzip { "gzip" } else { "not encoded" }
        );
    }
    let (from, end) = load::window(plan);
    let pid = e.pid;
    let sampler = async move {
        tokio::time::sleep_until(from.into()).await;
        let a = (cpu_seconds_tree(pid), cpu_seconds_self());
        tokio::time::sleep_until(end.into()).await;
        let b = (cpu_seconds_tree(pid), cpu_seconds_self());
        (b.0 - a.0, b.1 - a.1)
    };
    let (m, (server_cpu, client_cpu)) = tokio::join!(load::run(&target, plan, from, end), sampler);
    let row = Row {
        scenario,
        server: e.server,
        concurrency: plan.concurrency,
        measured: m?,
        server_cpu_s: server_cpu,
        client_cpu_s: client_cpu,
    };
    eprintln!("  {}", row.one_line());
    Ok(row)
}

/// Runs `plan` against every endpoint in turn, `rounds` times over (A B A
/// B …), so that a drift of the shared machine during the series hits
/// every server alike; returns one row per endpoint, its rounds merged.
pub async fn alternating(
    scenario: &'static str,
    endpoints: &[Endpoint],
    plan: Plan,
    rounds: usize,
) -> Result<Vec<Row>> {
    let mut rows: Vec<Option<Row>> = endpoints.iter().map(|_| None).collect();
    for _ in 0..rounds.max(1) {
        for (e, merged) in endpoints.iter().zip(rows.iter_mut()) {
            let r = row(scenario, e, plan).await?;
            match merged {
                Some(m) => m.merge(r),
                None => *merged = Some(r),
            }
        }
    }
    Ok(rows.into_iter().flatten().collect())
}
