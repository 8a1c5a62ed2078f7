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
    let target = Target {
        addr: e.addr,
        path: e.path.clone(),
        accept: Some(e.accept.clone()),
        expect_len: e.len,
    };
    eprintln!(
        "{scenario} / {}: {} connections, {:.0} s warm-up + {:.0} s",
        e.server,
        plan.concurrency,
        plan.warmup.as_secs_f64(),
        plan.duration.as_secs_f64()
    );
    load::probe(&target).await?;
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
