//! `hoard-bench publish-memory`: what a big upload costs the server in
//! memory. One node; an `npm publish` of a big tarball (the tarball is
//! base64 inside a JSON document, a third larger) and, side by side in the
//! same run, a twine upload of a wheel of the same size (multipart, which
//! streams to disk). For each, the node's peak RSS during the request over
//! its RSS just before: the peak is reset first (`/proc/PID/clear_refs`),
//! then read from `VmHWM`. Alternated A B A B.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use hoard_testkit::npm::{npm_tarball, publish_doc_with};
use hoard_testkit::WheelSpec;
use serde_json::json;

use crate::procs::memory_kib;
use crate::report;
use crate::servers::{upload, Hoard, NodeSpec};
use crate::Common;

#[derive(Args, Debug, Clone)]
pub struct PublishMemoryArgs {
    /// Size of the tarball's and the wheel's incompressible payload, in MB
    /// (10^6 bytes).
    #[arg(long, default_value_t = 200)]
    pub mb: usize,
    /// Rounds of (npm publish, twine upload).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
}

/// Resets the peak RSS of `pid` to its current RSS (Linux ≥ 4.0).
fn reset_peak(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("reset the peak RSS of {pid} (/proc/{pid}/clear_refs)"))
}

/// One measured request: `(before, peak)` RSS in KiB, and seconds.
struct Sample {
    before_kib: u64,
    peak_kib: u64,
    secs: f64,
}

impl Sample {
    fn extra_mib(&self) -> f64 {
        self.peak_kib.saturating_sub(self.before_kib) as f64 / 1024.0
    }
}

async fn measured<F: std::future::Future<Output = Result<()>>>(
    pid: u32,
    request: F,
) -> Result<Sample> {
    // Let the allocator hand back what the previous request freed.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let (before_kib, _) = memory_kib(pid).context("read the node's RSS")?;
    reset_peak(pid)?;
    let t0 = Instant::now();
    request.await?;
    let secs = t0.elapsed().as_secs_f64();
    let (_, peak_kib) = memory_kib(pid).context("read the node's peak RSS")?;
    Ok(Sample {
        before_kib,
        peak_kib,
        secs,
    })
}

/// The body of an `npm publish` of a tarball with an `mb` MB payload.
fn npm_publish_body(hoard: &Hoard, version: &str, mb: usize) -> Result<Vec<u8>> {
    let tgz = npm_tarball("bench-big-publish", version, mb * 1_000_000);
    let doc = publish_doc_with(
        &format!("http://{}/npm/", hoard.addr),
        "bench-big-publish",
        version,
        &tgz,
        &json!({ "description": "a big publish" }),
    );
    Ok(serde_json::to_vec(&doc)?)
}

async fn npm_publish(hoard: &Hoard, admin: &str, body: Vec<u8>) -> Result<()> {
    let registry = format!("http://{}/npm", hoard.addr);
    let mb = body.len() / 1_000_000;
    let resp = hoard
        .client
        .put(format!("{registry}/bench-big-publish"))
        .bearer_auth(admin)
        .header("content-type", "application/json")
        .header("npm-command", "publish")
        .body(body)
        .send()
        .await
        .context("npm publish")?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("npm publish of a {mb} MB document: {status}: {text}");
    }
    Ok(())
}

pub async fn run(common: &Common, args: &PublishMemoryArgs, hoard_bin: PathBuf) -> Result<()> {
    let work = common.work_dir()?;
    let dir = work.path().to_path_buf();
    eprintln!("starting {}", hoard_bin.display());
    let hoard = Hoard::start_node(
        &hoard_bin,
        &NodeSpec {
            id: "bench-publish-1",
            dir: &dir,
            extra_toml: "\n[[repos]]\nname = \"pypi\"\nformat = \"pypi\"\n\n[[repos]]\nname = \"npm\"\nformat = \"npm\"\n",
            token_repo: None,
            env: &[],
        },
    )
    .await?;
    let admin = std::fs::read_to_string(hoard.data_dir.join("admin-token"))
        .context("read the admin token")?;
    let admin = admin.trim().to_owned();
    let pid = hoard.proc.pid();

    // Warm up both paths, so that neither pays for first-use allocations.
    npm_publish(&hoard, &admin, npm_publish_body(&hoard, "0.0.1", 1)?).await?;
    let small = WheelSpec::new("bench-big-upload", "0.0.1").build();
    upload(
        &hoard.client,
        &format!("http://{}/pypi/", hoard.addr),
        "__token__",
        &admin,
        &small,
    )
    .await?;

    let mut npm = Vec::new();
    let mut pypi = Vec::new();
    let mut body_len = 0;
    for round in 0..args.rounds {
        let version = format!("1.0.{round}");
        eprintln!("round {}: npm publish of {} MB", round + 1, args.mb);
        let body = npm_publish_body(&hoard, &version, args.mb)?;
        body_len = body.len();
        npm.push(measured(pid, npm_publish(&hoard, &admin, body)).await?);

        eprintln!("round {}: twine upload of {} MB", round + 1, args.mb);
        let wheel = WheelSpec::new("bench-big-upload", &version)
            .padding(args.mb * 1_000_000, round as u64 + 7)
            .build();
        let url = format!("http://{}/pypi/", hoard.addr);
        pypi.push(
            measured(pid, async {
                upload(&hoard.client, &url, "__token__", &admin, &wheel)
                    .await
                    .map(|_| ())
            })
            .await?,
        );
    }

    let worst = |v: &[Sample]| v.iter().map(Sample::extra_mib).fold(0.0, f64::max);
    let (npm_worst, pypi_worst) = (worst(&npm), worst(&pypi));
    let mut md = format!("# Memory of a big publish ({})\n\n", report::now_utc());
    md.push_str(&report::how_run(
        &crate::command_line(),
        &crate::git_description(),
        &hoard_bin,
    ));
    md.push_str(&format!(
        "- payload: {} MB incompressible (npm: a `.tgz` at gzip level 1, sent as a {:.1} MB JSON \
         document with the tarball in base64; PyPI: a stored wheel, sent as multipart)\n\
         - measure: the node's peak RSS during the request (`VmHWM`, after resetting it with \
         `/proc/PID/clear_refs`) minus its RSS just before; the time is from sending the \
         request (built beforehand) to the end of the answer\n\n",
        args.mb,
        body_len as f64 / 1e6,
    ));
    md.push_str(
        "| round | request | RSS before | peak | extra | time |\n|---|---|---|---|---|---|\n",
    );
    for (round, (n, p)) in npm.iter().zip(&pypi).enumerate() {
        for (what, s) in [("npm publish", n), ("twine upload", p)] {
            md.push_str(&format!(
                "| {} | {what} | {:.1} MiB | {:.1} MiB | **{:.1} MiB** | {:.1} s |\n",
                round + 1,
                s.before_kib as f64 / 1024.0,
                s.peak_kib as f64 / 1024.0,
                s.extra_mib(),
                s.secs
            ));
        }
    }
    md.push_str(&format!(
        "\nWorst extra RSS: npm publish {npm_worst:.1} MiB, twine upload {pypi_worst:.1} MiB \
         (ratio {:.2}×). Target for the npm publish: below 64 MiB.\n",
        npm_worst / pypi_worst.max(0.1)
    ));
    common.publish(&md, "publish-memory")
}
