//! `hoard-bench npm`: one node with an npm repository. A package with many
//! versions (published one `PUT` at a time, as `npm publish` does) and one
//! big tarball; then the abbreviated packument (what `npm install` asks
//! for), the full packument, and the tarball, each measured side by side
//! with nginx and a hyper static server serving the very same bytes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use hoard_testkit::npm::{npm_tarball, publish_doc_with};
use serde_json::json;

use crate::measure::{Endpoint, Plans};
use crate::procs::Proc;
use crate::report::{fmt_num, Report, Row};
use crate::servers::{self, Hoard, NodeSpec, StaticFiles};
use crate::{command_line, git_description, Common};

const REPO: &str = "npm";
const PACKAGE: &str = "bench-npm";
const BIG_PACKAGE: &str = "bench-npm-big";
/// What npm 10 sends for `npm install`.
pub const ABBREVIATED_ACCEPT: &str =
    "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*";
const FULL_ACCEPT: &str = "application/json";

pub const STATIC_ABBREVIATED: &str = "/packument-abbreviated.json";
const STATIC_FULL: &str = "/packument-full.json";
pub const STATIC_TARBALL: &str = "/big.tgz";

#[derive(Args, Debug, Clone)]
pub struct NpmArgs {
    /// Keep-alive connections for the packument scenarios.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Keep-alive connections for the tarball download.
    #[arg(long, default_value_t = 4)]
    pub download_concurrency: usize,
    /// Versions (1.0.0, 1.0.1, …) of the package whose packuments are measured.
    #[arg(long, default_value_t = 300)]
    pub versions: usize,
    /// Size of the incompressible payload of the big tarball, in MB (10^6 bytes).
    #[arg(long, default_value_t = 20)]
    pub tarball_mb: usize,
    /// Samples of the cold packument (the first GET after a publish of one
    /// more version of the package, which evicts its cached pages).
    #[arg(long, default_value_t = 10)]
    pub cold_samples: usize,
}

/// The body of `PUT /{repo}/{name}` that publishes `version` with `tgz`, in
/// the shape npm 10 sends, with the fields of a real package's manifest
/// (keywords, `dependencies`, engines, readme), which the full packument
/// carries for every version. `registry` is the registry's URL (for
/// `dist.tarball`, which the server replaces).
fn publish_document(
    registry: &str,
    name: &str,
    version: &str,
    tgz: &[u8],
    dependencies: &serde_json::Value,
) -> Vec<u8> {
    let description = "a hoard benchmark package";
    let manifest = json!({
        "description": description,
        "keywords": ["hoard", "benchmark"],
        "dependencies": dependencies,
        "engines": { "node": ">=18" },
        "readme": format!("# {name}\n\nA package for hoard's benchmark, version {version}.\n"),
        "readmeFilename": "README.md",
    });
    let doc = publish_doc_with(&format!("{registry}/"), name, version, tgz, &manifest);
    serde_json::to_vec(&doc).expect("json")
}

struct Publisher<'a> {
    hoard: &'a Hoard,
    registry: String,
}

impl Publisher<'_> {
    /// Publishes one version; returns the time to the acknowledgement.
    async fn publish(
        &self,
        name: &str,
        version: &str,
        tgz: &[u8],
        deps: &serde_json::Value,
    ) -> Result<Duration> {
        let doc = publish_document(&self.registry, name, version, tgz, deps);
        let t0 = Instant::now();
        let resp = self
            .hoard
            .client
            .put(format!("{}/{name}", self.registry))
            .bearer_auth(&self.hoard.token)
            .header("content-type", "application/json")
            .header("npm-command", "publish")
            .body(doc)
            .send()
            .await
            .with_context(|| format!("publish {name}@{version}"))?;
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        let elapsed = t0.elapsed();
        if !status.is_success() {
            bail!(
                "publish {name}@{version}: {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(elapsed)
    }
}

/// Median and max of a sample, in ms.
fn median_max_ms(v: &mut [Duration]) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        v.get(v.len() / 2).copied().map_or(f64::NAN, ms),
        v.last().copied().map_or(f64::NAN, ms),
    )
}

/// One node with the npm fixture published, and what it serves (checked),
/// written to the static servers' root.
pub struct Prepared {
    pub hoard: Hoard,
    pub files: StaticFiles,
    /// `/npm/bench-npm`: both packuments, by `Accept`.
    pub pkg_path: String,
    /// The big tarball's path on hoard.
    pub tarball_path: String,
    pub abbreviated: bytes::Bytes,
    pub full: bytes::Bytes,
    pub big: Vec<u8>,
    /// The "Data and publishes" section of a report.
    pub setup_md: String,
}

/// Starts hoard in `dir`, publishes the fixture (timed, informative),
/// samples cold packuments, and writes the static servers' files.
pub async fn prepare(args: &NpmArgs, hoard_bin: &Path, dir: &Path) -> Result<Prepared> {
    eprintln!("starting {}", hoard_bin.display());
    let hoard = Hoard::start_node(
        hoard_bin,
        &NodeSpec {
            id: "bench-npm-1",
            dir,
            extra_toml: "\n[[repos]]\nname = \"npm\"\nformat = \"npm\"\n",
            token_repo: Some(REPO),
            env: &[],
        },
    )
    .await?;
    let publisher = Publisher {
        hoard: &hoard,
        registry: format!("http://{}/{REPO}", hoard.addr),
    };

    // 1. The package with many versions, one publish at a time.
    eprintln!("publishing {} versions of {PACKAGE}", args.versions);
    let deps = json!({ "left-pad": "^1.3.0", "ms": "^2.1.3", "debug": "^4.3.4" });
    let mut publish_times = Vec::with_capacity(args.versions);
    let t0 = Instant::now();
    let mut small_tgz_bytes = 0;
    for i in 0..args.versions {
        let version = format!("1.0.{i}");
        let t = npm_tarball(PACKAGE, &version, 0);
        small_tgz_bytes = t.len();
        publish_times.push(publisher.publish(PACKAGE, &version, &t, &deps).await?);
    }
    let publish_total = t0.elapsed();
    let (publish_p50, publish_max) = median_max_ms(&mut publish_times);

    // 2. The big tarball.
    eprintln!("building and publishing the {} MB tarball", args.tarball_mb);
    let big = npm_tarball(BIG_PACKAGE, "1.0.0", args.tarball_mb * 1_000_000);
    let big_publish = publisher
        .publish(BIG_PACKAGE, "1.0.0", &big, &json!({}))
        .await?;

    // 3. What hoard serves, checked.
    let pkg_path = format!("/{REPO}/{PACKAGE}");
    let abbreviated = hoard.get(&pkg_path, ABBREVIATED_ACCEPT).await?;
    let full = hoard.get(&pkg_path, FULL_ACCEPT).await?;
    for (what, doc) in [("abbreviated", &abbreviated), ("full", &full)] {
        let v: serde_json::Value =
            serde_json::from_slice(doc).with_context(|| format!("hoard's {what} packument"))?;
        let n = v["versions"].as_object().map_or(0, |m| m.len());
        if n != args.versions {
            bail!(
                "hoard's {what} packument lists {n} versions, expected {}",
                args.versions
            );
        }
    }
    if abbreviated == full {
        bail!("hoard served the same document for the abbreviated and the full packument");
    }
    let big_doc: serde_json::Value = serde_json::from_slice(
        &hoard
            .get(&format!("/{REPO}/{BIG_PACKAGE}"), ABBREVIATED_ACCEPT)
            .await?,
    )?;
    let tarball_url = big_doc["versions"]["1.0.0"]["dist"]["tarball"]
        .as_str()
        .context("no dist.tarball in the big package's packument")?
        .to_string();
    let tarball_path = tarball_url
        .strip_prefix(&format!("http://{}", hoard.addr))
        .with_context(|| format!("dist.tarball {tarball_url} is not on this node"))?
        .to_string();
    let served = hoard.get(&tarball_path, "*/*").await?;
    if served.as_ref() != big.as_slice() {
        bail!("hoard served different bytes for {tarball_path}");
    }
    drop(served);

    // 4. Cold packuments: pages are cached per package, so only a write to
    //    this package makes the next GET render its packument again: one
    //    more version of it per sample (informative samples).
    eprintln!("measuring {} cold packument renders", args.cold_samples);
    let mut cold_abbrev = Vec::new();
    let mut cold_full = Vec::new();
    let mut warm_abbrev = Vec::new();
    for k in 0..args.cold_samples {
        let version = format!("1.1.{k}");
        let t = npm_tarball(PACKAGE, &version, 0);
        publisher.publish(PACKAGE, &version, &t, &deps).await?;
        for (accept, out) in [
            (ABBREVIATED_ACCEPT, &mut cold_abbrev),
            (FULL_ACCEPT, &mut cold_full),
            (ABBREVIATED_ACCEPT, &mut warm_abbrev),
        ] {
            let t0 = Instant::now();
            hoard.get(&pkg_path, accept).await?;
            out.push(t0.elapsed());
        }
    }
    let cold_abbrev = median_max_ms(&mut cold_abbrev);
    let cold_full = median_max_ms(&mut cold_full);
    let warm_abbrev = median_max_ms(&mut warm_abbrev);
    // The documents changed with those publishes (`modified`, `_rev`):
    // serve the current ones from here on.
    let abbreviated = hoard.get(&pkg_path, ABBREVIATED_ACCEPT).await?;
    let full = hoard.get(&pkg_path, FULL_ACCEPT).await?;

    let files = StaticFiles::write(
        dir,
        &[
            (STATIC_ABBREVIATED, &abbreviated),
            (STATIC_FULL, &full),
            (STATIC_TARBALL, &big),
        ],
    )?;

    let mut setup = String::new();
    let w = &mut setup;
    let _ = writeln!(w, "## Data and publishes\n");
    let _ = writeln!(
        w,
        "- package `{PACKAGE}`: {} versions (1.0.0 … 1.0.{}), each published with its own `PUT /{REPO}/{PACKAGE}` (one version, three dependencies, a {small_tgz_bytes}-byte tarball); abbreviated packument {} bytes, full packument {} bytes",
        args.versions,
        args.versions.saturating_sub(1),
        abbreviated.len(),
        full.len()
    );
    let _ = writeln!(
        w,
        "- big tarball `{BIG_PACKAGE}-1.0.0.tgz`: {} bytes (an incompressible {} MB payload, gzip level 1), at `{tarball_path}`",
        big.len(),
        args.tarball_mb
    );
    let _ = writeln!(
        w,
        "- publishes (one sample each, informative): {} versions one at a time in {:.2} s ({:.0}/s; median {:.1} ms, max {:.1} ms); the big tarball in {:.2} s ({:.0} MB/s of tarball, {:.0} MB/s of base64 document)",
        args.versions,
        publish_total.as_secs_f64(),
        args.versions as f64 / publish_total.as_secs_f64(),
        publish_p50,
        publish_max,
        big_publish.as_secs_f64(),
        big.len() as f64 / 1e6 / big_publish.as_secs_f64(),
        big.len() as f64 * 4.0 / 3.0 / 1e6 / big_publish.as_secs_f64()
    );
    let _ = writeln!(
        w,
        "- cold packuments ({} samples, one request at a time, no other load): after a publish of one more version of `{PACKAGE}` (1.1.0, 1.1.1, …: the measured packuments have these versions too), the first GET of `{PACKAGE}` renders it again: abbreviated median {} ms (max {}), full median {} ms (max {}); the next abbreviated GET, from the page cache: median {} ms (max {})",
        args.cold_samples,
        fmt_num(cold_abbrev.0),
        fmt_num(cold_abbrev.1),
        fmt_num(cold_full.0),
        fmt_num(cold_full.1),
        fmt_num(warm_abbrev.0),
        fmt_num(warm_abbrev.1)
    );
    let _ = writeln!(
        w,
        "- hoard's requests: `GET {pkg_path}` with `Accept: {ABBREVIATED_ACCEPT}` (what npm 10 sends for an install) or `Accept: {FULL_ACCEPT}`; `GET {tarball_path}`. The static servers: `GET {STATIC_ABBREVIATED}`, `{STATIC_FULL}`, `{STATIC_TARBALL}` (the bytes hoard served, checked before measuring)"
    );

    Ok(Prepared {
        hoard,
        files,
        pkg_path,
        tarball_path,
        abbreviated,
        full,
        big,
        setup_md: setup,
    })
}

pub async fn run(common: &Common, args: &NpmArgs, hoard_bin: PathBuf) -> Result<()> {
    let server_threads = common.server_threads();
    let plans = Plans::new(
        args.concurrency,
        args.download_concurrency,
        common.warmup,
        common.duration,
    );
    let work = common.work_dir()?;
    let dir = work.path().to_path_buf();
    let Prepared {
        hoard,
        files,
        pkg_path,
        tarball_path,
        abbreviated,
        full,
        big,
        setup_md: setup,
    } = prepare(args, &hoard_bin, &dir).await?;

    // 5. The servers, side by side.
    let mut notes = Vec::new();
    let mut procs: Vec<(&'static str, Proc, std::net::SocketAddr, bool)> = Vec::new();
    let mut server_lines = Vec::new();
    if common.wants("nginx") {
        match servers::find_nginx(common.nginx.as_deref()) {
            Some(bin) => {
                let v = servers::nginx_version(&bin);
                let (proc, addr) = servers::start_nginx(&bin, &dir, &files, server_threads).await?;
                server_lines.push(format!(
                    "nginx {v}: {server_threads} worker processes, sendfile, open_file_cache, access log off"
                ));
                procs.push(("nginx", proc, addr, true));
            }
            None => notes.push(
                "nginx not found (apt-get install nginx): nginx baseline skipped".to_string(),
            ),
        }
    }
    if common.wants("hyper") {
        let (proc, addr) = servers::start_static(&dir, &files, server_threads).await?;
        server_lines.push(format!(
            "hyper-static: hyper 1 HTTP/1.1 serving the same files from memory, {server_threads} runtime threads"
        ));
        procs.push(("hyper-static", proc, addr, true));
    }
    for (_, _, addr, _) in &procs {
        servers::verify_same_bytes(*addr, STATIC_ABBREVIATED, &abbreviated).await?;
        servers::verify_same_bytes(*addr, STATIC_FULL, &full).await?;
        servers::verify_same_bytes(*addr, STATIC_TARBALL, &big).await?;
    }

    let scenarios: [(&'static str, &str, &str, u64, bool); 3] = [
        (
            "abbreviated packument",
            STATIC_ABBREVIATED,
            ABBREVIATED_ACCEPT,
            abbreviated.len() as u64,
            false,
        ),
        (
            "full packument",
            STATIC_FULL,
            FULL_ACCEPT,
            full.len() as u64,
            false,
        ),
        (
            "download tarball",
            STATIC_TARBALL,
            "*/*",
            big.len() as u64,
            true,
        ),
    ];
    let mut rows: Vec<Row> = Vec::new();
    for (label, static_path, accept, len, download) in scenarios {
        let plan = if download {
            plans.download
        } else {
            plans.pages
        };
        let hoard_path = match label {
            "download tarball" => tarball_path.clone(),
            _ => pkg_path.clone(),
        };
        let mut endpoints = vec![Endpoint {
            server: "hoard",
            pid: hoard.proc.pid(),
            addr: hoard.addr,
            path: hoard_path,
            accept: accept.to_string(),
            accept_encoding: None,
            len,
        }];
        for (name, proc, addr, _) in &procs {
            endpoints.push(Endpoint {
                server: name,
                pid: proc.pid(),
                addr: *addr,
                path: static_path.to_string(),
                accept: accept.to_string(),
                accept_encoding: None,
                len,
            });
        }
        for e in &endpoints {
            rows.push(crate::measure::row(label, e, plan).await?);
        }
    }

    let report = Report {
        title: "hoard npm benchmark".into(),
        baselines_blurb: "nginx and hyper-static serve the same bytes".into(),
        command: command_line(),
        hoard_bin,
        plans,
        plan_names: ("packuments", "tarball"),
        client_threads: common.client_threads,
        server_lines,
        setup_md: setup,
        rows,
        notes,
        git: git_description(),
    };
    common.publish(&report.markdown(), "npm")?;
    drop(procs);
    drop(hoard);
    drop(work);
    Ok(())
}
