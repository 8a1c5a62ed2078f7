//! Several nodes: a primary and read replicas that follow it (or follow each
//! other), and the checks that replication tests share: waiting for a
//! replica to apply a serial, for nodes to agree (same serial and digest),
//! fast uploads that report their serial, and "every listed file downloads
//! with its sha256".

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use reqwest::blocking::Client;
use reqwest::Url;
use serde_json::Value;

use crate::{Artifact, Node, NodeOpts};

/// The PEP 691 JSON media type.
pub const JSON_TYPE: &str = "application/vnd.pypi.simple.v1+json";

/// A primary and its replicas, each a [`Node`].
pub struct Cluster {
    pub primary: Node,
    pub replicas: Vec<Node>,
}

impl Cluster {
    /// A primary (`p`) and `replicas` replicas (`r1`, `r2`, …). Replica 1
    /// follows the primary. With `chain`, each later replica follows the one
    /// before it, with the primary as its second upstream; without, every
    /// replica follows the primary. `tweak` can change each replica's
    /// options (index from 0).
    pub fn start(
        replicas: usize,
        chain: bool,
        tweak: impl Fn(usize, NodeOpts) -> NodeOpts,
    ) -> Self {
        Cluster::start_with(NodeOpts::default(), replicas, chain, tweak)
    }

    /// Like [`Cluster::start`], with the primary's options (its `node_id`
    /// becomes `p`).
    pub fn start_with(
        primary: NodeOpts,
        replicas: usize,
        chain: bool,
        tweak: impl Fn(usize, NodeOpts) -> NodeOpts,
    ) -> Self {
        let primary = Node::start(NodeOpts {
            node_id: "p".to_string(),
            ..primary
        });
        let mut out: Vec<Node> = Vec::new();
        for i in 0..replicas {
            let upstreams = match (chain, out.last()) {
                (true, Some(prev)) => vec![prev.grpc_addr(), primary.grpc_addr()],
                _ => vec![primary.grpc_addr()],
            };
            let opts = tweak(i, NodeOpts::replica(&format!("r{}", i + 1), &upstreams));
            out.push(Node::start(opts));
        }
        Cluster {
            primary,
            replicas: out,
        }
    }

    /// The primary, then the replicas.
    pub fn nodes(&self) -> Vec<&Node> {
        std::iter::once(&self.primary)
            .chain(self.replicas.iter())
            .collect()
    }

    /// Wait until every node has the primary's applied serial and digest.
    pub fn wait_converged(&self, timeout: Duration) -> (u64, String) {
        wait_converged(&self.nodes(), timeout)
    }
}

/// `GET /+status` as JSON, without the checks of [`Node::status`] (for
/// polling loops: a replica may apply between the header and the body).
pub fn status_of(node: &Node) -> Result<Value> {
    let resp = node
        .http()
        .get(format!("{}/+status", node.url()))
        .timeout(Duration::from_secs(10))
        .send()?;
    if resp.status().as_u16() != 200 {
        bail!("GET /+status answered {}", resp.status());
    }
    Ok(resp.json()?)
}

/// Poll `f` every 50 ms until it returns `Some`, or panic after `timeout`
/// naming `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until `node` has applied `serial`; returns its status then.
pub fn wait_applied(node: &Node, serial: u64, timeout: Duration) -> Value {
    let mut last = Value::Null;
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = status_of(node) {
            if s["applied_serial"].as_u64().is_some_and(|a| a >= serial) {
                return s;
            }
            last = s;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not apply serial {serial} within {timeout:?}; last /+status: {last:#}",
            node.opts.node_id
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until all `nodes` report the same `applied_serial` and `digest` as
/// the first one (whose serial must be stable by then: stop writing
/// first). Returns that serial and digest.
pub fn wait_converged(nodes: &[&Node], timeout: Duration) -> (u64, String) {
    let deadline = Instant::now() + timeout;
    loop {
        let statuses: Vec<Option<Value>> = nodes.iter().map(|n| status_of(n).ok()).collect();
        let key = |s: &Option<Value>| {
            s.as_ref().map(|s| {
                (
                    s["applied_serial"].as_u64(),
                    s["digest"].as_str().map(str::to_string),
                )
            })
        };
        let first = key(&statuses[0]);
        if let Some((Some(serial), Some(digest))) = &first {
            if statuses.iter().all(|s| key(s) == first) {
                return (*serial, digest.clone());
            }
        }
        if Instant::now() > deadline {
            let mut msg = format!("nodes did not converge within {timeout:?}:\n");
            for (n, s) in nodes.iter().zip(&statuses) {
                msg.push_str(&format!(
                    "  {}: {}\n",
                    n.opts.node_id,
                    s.as_ref()
                        .map_or("no status".to_string(), |s| s.to_string())
                ));
            }
            if let Some((Some(serial), _)) = &first {
                if statuses
                    .iter()
                    .all(|s| key(s).and_then(|k| k.0) == Some(*serial))
                {
                    msg.push_str(&first_divergence(nodes));
                }
            }
            panic!("{msg}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where nodes that reached the same serial with different digests first
/// differ, as their audit trails show it: the diagnosis a failed
/// convergence needs, which the digests alone cannot give.
fn first_divergence(nodes: &[&Node]) -> String {
    let trails: Vec<Result<Vec<Value>>> = nodes.iter().map(|n| audit_trail(n)).collect();
    let mut out = String::from("audit trails:\n");
    for (n, t) in nodes.iter().zip(&trails) {
        if let Err(e) = t {
            out.push_str(&format!("  {}: unreadable: {e:#}\n", n.opts.node_id));
        }
    }
    let trails: Vec<&Vec<Value>> = trails.iter().filter_map(|t| t.as_ref().ok()).collect();
    let Some(shortest) = trails.iter().map(|t| t.len()).min() else {
        return out;
    };
    let Some(at) = (0..shortest).find(|&i| trails.iter().any(|t| t[i] != trails[0][i])) else {
        out.push_str(&format!(
            "  the first {shortest} entries agree: the events differ in what the audit trail does not show\n"
        ));
        return out;
    };
    for (n, t) in nodes.iter().zip(&trails) {
        out.push_str(&format!("  {} from entry {at}:\n", n.opts.node_id));
        for e in t.iter().skip(at.saturating_sub(1)).take(4) {
            out.push_str(&format!("    {e}\n"));
        }
    }
    out
}

/// Every entry of a node's `GET /+audit`, paged, with its admin token.
fn audit_trail(node: &Node) -> Result<Vec<Value>> {
    let mut entries = Vec::new();
    let mut after = 0u64;
    loop {
        let page: Value = node
            .http()
            .get(format!("{}/+audit?limit=10000&after={after}", node.url()))
            .bearer_auth(node.admin_token())
            .send()?
            .error_for_status()?
            .json()?;
        if let Some(list) = page["entries"].as_array() {
            entries.extend(list.iter().cloned());
        }
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => return Ok(entries),
        }
    }
}

/// A blocking client for tests' own threads: no proxy, no redirects.
pub fn client() -> Client {
    Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client")
}

/// What an upload got back.
#[derive(Clone, Debug)]
pub struct Uploaded {
    pub status: u16,
    /// `x-hoard-upload-serial`, if present.
    pub serial: Option<u64>,
    pub location: Option<String>,
    /// `x-hoard-term`: the Raft term of the node that acknowledged.
    pub term: Option<u64>,
    pub body: String,
}

/// A twine-like wheel upload with reqwest's multipart to `{url}/pypi/`
/// (`url` is a node's base URL, or a full `.../pypi/` URL ending in `/`).
pub fn upload(client: &Client, url: &str, token: &str, a: &Artifact) -> Result<Uploaded> {
    let target = if url.ends_with('/') {
        url.to_string()
    } else {
        format!("{url}/pypi/")
    };
    // One buffer with its exact length, as the raw-multipart tests send
    // theirs.
    let mp = crate::http::Upload::of(a).multipart();
    let resp = client
        .post(target)
        .basic_auth("__token__", Some(token))
        .header(reqwest::header::CONTENT_TYPE, mp.content_type())
        .body(mp.finish())
        .send()?;
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let serial = match header("x-hoard-upload-serial") {
        Some(s) => Some(
            s.trim()
                .parse()
                .with_context(|| format!("x-hoard-upload-serial {s:?}"))?,
        ),
        None => None,
    };
    let location = header("location");
    let term = header("x-hoard-term").and_then(|t| t.trim().parse().ok());
    let status = resp.status().as_u16();
    Ok(Uploaded {
        status,
        serial,
        location,
        term,
        body: resp.text().unwrap_or_default(),
    })
}

/// Upload and require 200 with an `x-hoard-upload-serial`; returns it.
pub fn upload_ok(client: &Client, url: &str, token: &str, a: &Artifact) -> u64 {
    let up = upload(client, url, token, a)
        .unwrap_or_else(|e| panic!("upload {} to {url}: {e:#}", a.filename));
    assert_eq!(
        up.status, 200,
        "upload {} to {url}: {}",
        a.filename, up.body
    );
    up.serial.unwrap_or_else(|| {
        panic!(
            "upload {} to {url}: 200 without x-hoard-upload-serial",
            a.filename
        )
    })
}

/// One file of a PEP 691 page.
#[derive(Clone, Debug)]
pub struct Listed {
    pub filename: String,
    pub sha256: String,
    pub url: Url,
}

/// The files that `{base}/pypi/simple/{project}/` lists (JSON); empty on
/// 404.
pub fn listed(client: &Client, base: &str, project: &str) -> Result<Vec<Listed>> {
    let page_url = Url::parse(&format!("{base}/pypi/simple/{project}/"))?;
    let resp = client
        .get(page_url.clone())
        .header("accept", JSON_TYPE)
        .send()?;
    let status = resp.status().as_u16();
    if status == 404 {
        return Ok(Vec::new());
    }
    if status != 200 {
        bail!("GET {page_url} answered {status}: {}", resp.text()?);
    }
    let page: Value = resp.json().context("JSON page")?;
    let files = page["files"]
        .as_array()
        .with_context(|| format!("no files array in {page}"))?;
    files
        .iter()
        .map(|f| {
            Ok(Listed {
                filename: f["filename"].as_str().context("filename")?.to_string(),
                sha256: f["hashes"]["sha256"]
                    .as_str()
                    .context("hashes.sha256")?
                    .to_string(),
                url: page_url.join(f["url"].as_str().context("url")?)?,
            })
        })
        .collect()
}

/// GET `url`: the body, or an error naming the status.
pub fn download(client: &Client, url: &Url) -> Result<Vec<u8>> {
    let resp = client.get(url.clone()).send()?;
    let status = resp.status().as_u16();
    if status != 200 {
        bail!(
            "GET {url} answered {status}: {}",
            resp.text().unwrap_or_default()
        );
    }
    Ok(resp.bytes()?.to_vec())
}

/// What `node` lists for `project` (filename → sha256), after checking
/// that every listed file downloads with its listed sha256: a node never
/// lists a file it cannot serve.
pub fn served(node: &Node, project: &str) -> BTreeMap<String, String> {
    let files = listed(node.http(), &node.url(), project)
        .unwrap_or_else(|e| panic!("{}: listing {project}: {e:#}", node.opts.node_id));
    let mut got = BTreeMap::new();
    for f in &files {
        let bytes = download(node.http(), &f.url)
            .unwrap_or_else(|e| panic!("{}: listed file {}: {e:#}", node.opts.node_id, f.filename));
        assert_eq!(
            crate::sha256_hex(&bytes),
            f.sha256,
            "{}: {} downloads with other bytes than its listed sha256",
            node.opts.node_id,
            f.filename
        );
        got.insert(f.filename.clone(), f.sha256.clone());
    }
    got
}

/// Every file of `expected` (filename → sha256) is listed and served by
/// `node`. Other files may be listed too: an upload whose answer was lost
/// can still have committed.
pub fn assert_serves_all(node: &Node, project: &str, expected: &BTreeMap<String, String>) {
    let got = served(node, project);
    for (filename, sha) in expected {
        assert_eq!(
            got.get(filename),
            Some(sha),
            "{}: acknowledged upload {filename} is missing (lists {} files, {} acknowledged)",
            node.opts.node_id,
            got.len(),
            expected.len()
        );
    }
}

/// Check that every file the node lists for `project` downloads with the
/// listed sha256, and that the listing is exactly `expected` (filename →
/// sha256).
pub fn assert_serves_exactly(node: &Node, project: &str, expected: &BTreeMap<String, String>) {
    let got = served(node, project);
    if &got != expected {
        let missing: Vec<_> = expected.keys().filter(|k| !got.contains_key(*k)).collect();
        let extra: Vec<_> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
        let differ: Vec<_> = got
            .iter()
            .filter(|(k, v)| expected.get(*k).is_some_and(|e| e != *v))
            .map(|(k, _)| k)
            .collect();
        panic!(
            "{}: {project} lists {} files, expected {}; missing {missing:?}, unexpected \
             {extra:?}, other sha256 {differ:?}",
            node.opts.node_id,
            got.len(),
            expected.len()
        );
    }
}
