//! A TCP forwarder that delays every byte by a fixed time in each
//! direction: a slow WAN link where the kernel has no `tc netem`. It runs
//! in a container of the hoard image (the image has the libraries it
//! links), put in the path with Docker network aliases.

use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Forwards each `(listen, target)` pair until killed.
pub fn run(forwards: Vec<(String, String)>, delay: Duration) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let mut tasks = Vec::new();
        for (listen, target) in forwards {
            let listener = TcpListener::bind(&listen)
                .await
                .with_context(|| format!("listening on {listen}"))?;
            eprintln!("forwarding {listen} to {target}, {delay:?} each way");
            tasks.push(tokio::spawn(accept(listener, target, delay)));
        }
        for task in tasks {
            task.await?;
        }
        Ok(())
    })
}

async fn accept(listener: TcpListener, target: String, delay: Duration) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        let target = target.clone();
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(&target).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            tokio::join!(
                delayed_copy(in_read, out_write, delay),
                delayed_copy(out_read, in_write, delay)
            );
        });
    }
}

/// Copies `from` to `to`, each chunk `delay` after it arrived; order and
/// throughput are kept, only latency is added.
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
