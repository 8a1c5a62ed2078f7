//! A Raft group of voters as real processes: the first bootstraps the
//! group, the others start with `bootstrap = false` and join it through
//! the admin API. Plus a writer that keeps uploading to whichever node
//! leads, and records every upload that was acknowledged.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cluster::{client, status_of, upload, wait_for};
use crate::{wheel, Node, NodeOpts};

/// Voters `v1`…`vN` with Raft ids 1…N.
pub struct Voters {
    pub nodes: Vec<Node>,
}

impl Voters {
    pub fn start(n: usize) -> Voters {
        Voters::start_with(n, |_, opts| opts)
    }

    /// [`Voters::start`], with the options of voter `i` (1…N) changed by
    /// `tweak` (certificates, say).
    pub fn start_with(n: usize, tweak: impl Fn(usize, NodeOpts) -> NodeOpts) -> Voters {
        let mut nodes = vec![with_partition_file(tweak(1, voter_opts(1)))];
        for i in 2..=n {
            let node = with_partition_file(tweak(i, voter_opts(i)));
            let body = json!({
                "id": i,
                "grpc_addr": node.grpc_addr(),
                "http_url": node.url(),
                "node_id": format!("v{i}"),
            });
            admin_post(&nodes[0], "members/add", &body)
                .unwrap_or_else(|e| panic!("adding v{i}: {e}"));
            nodes.push(node);
        }
        let voters = Voters { nodes };
        voters.wait_leader(Duration::from_secs(20), None);
        voters
    }

    /// The index of the node that every running node agrees leads, once
    /// there is one (and it is not `not`).
    pub fn wait_leader(&self, timeout: Duration, not: Option<usize>) -> usize {
        wait_for(
            timeout,
            "one leader that every running voter follows",
            || {
                let mut leader_ids = Vec::new();
                let mut leader_index = None;
                for (i, node) in self.nodes.iter().enumerate() {
                    let Ok(s) = status_of(node) else { continue };
                    leader_ids.push(s["leader_id"].as_u64());
                    if s["role"] == "leader" {
                        leader_index = Some(i);
                    }
                }
                let i = leader_index?;
                let id = i as u64 + 1;
                (Some(i) != not && leader_ids.iter().all(|l| *l == Some(id))).then_some(i)
            },
        )
    }

    /// The index of the leader that every node in `among` follows.
    pub fn wait_leader_among(&self, timeout: Duration, among: &[usize]) -> usize {
        wait_for(timeout, "one leader that the given voters follow", || {
            let statuses: Vec<_> = among
                .iter()
                .map(|i| status_of(&self.nodes[*i]).ok())
                .collect::<Option<Vec<_>>>()?;
            let leader = statuses[0]["leader_id"].as_u64()?;
            let index = leader as usize - 1;
            let all_follow = statuses
                .iter()
                .all(|s| s["leader_id"].as_u64() == Some(leader));
            (all_follow && among.contains(&index)).then_some(index)
        })
    }

    /// Cuts voter `i` off from every other voter (both directions), or
    /// heals it with `false`, through the nodes' partition files.
    pub fn partition(&self, i: usize, cut: bool) {
        let addrs: Vec<String> = self.nodes.iter().map(Node::grpc_addr).collect();
        for (j, node) in self.nodes.iter().enumerate() {
            let blocked: Vec<&str> = if !cut {
                Vec::new()
            } else if j == i {
                addrs
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| *k != i)
                    .map(|(_, a)| a.as_str())
                    .collect()
            } else {
                vec![addrs[i].as_str()]
            };
            std::fs::write(partition_file(node), blocked.join("\n"))
                .expect("write a partition file");
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }
}

/// Starts a node whose fault layer reads `<root>/partition`.
fn with_partition_file(opts: NodeOpts) -> Node {
    let mut node = Node::prepare(opts);
    let path = partition_file(&node);
    std::fs::write(&path, "").expect("create the partition file");
    node.opts = node
        .opts
        .clone()
        .config(format!("partition_file = {:?}", path.display().to_string()));
    node.launch();
    node
}

fn partition_file(node: &Node) -> std::path::PathBuf {
    node.root().join("partition")
}

/// The options of voter `i` (Raft id `i`).
fn voter_opts(i: usize) -> NodeOpts {
    let opts = NodeOpts {
        node_id: format!("v{i}"),
        ..NodeOpts::default()
    }
    .config(format!("raft_id = {i}"));
    if i == 1 {
        opts
    } else {
        opts.config("bootstrap = false")
    }
}

/// POST `/+admin/{endpoint}` with the node's own admin token.
pub fn admin_post(node: &Node, endpoint: &str, body: &Value) -> Result<Value, String> {
    let resp = node
        .http()
        .post(format!("{}/+admin/{endpoint}", node.url()))
        .bearer_auth(node.admin_token())
        .json(body)
        .timeout(Duration::from_secs(60))
        .send()
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    if status != 200 {
        return Err(format!("{endpoint} answered {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

/// What the writer saw.
#[derive(Default)]
pub struct WriteLog {
    /// filename → sha256 of every upload that got a 2xx.
    pub acked: BTreeMap<String, String>,
    /// Uploads answered with a retryable status (307, 503) or not at all.
    pub retried: usize,
    /// Answers that are neither success nor retryable: a test failure.
    pub unexpected: Vec<String>,
    /// When each ack arrived, and from which node's URL.
    pub acks: Vec<(Instant, String)>,
    /// The term each ack was given in, and by which node's URL.
    pub terms: Vec<(u64, String)>,
}

/// Uploads wheels of `project` one after another to the leader among
/// `urls` until stopped, following 307s and retrying 503s and refused
/// connections, and records every acknowledged upload.
pub struct Uploader {
    stop: Arc<AtomicBool>,
    pub log: Arc<Mutex<WriteLog>>,
    pub sent: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Uploader {
    pub fn start(urls: Vec<String>, token: String, project: &str) -> Uploader {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(WriteLog::default()));
        let sent = Arc::new(AtomicUsize::new(0));
        let project = project.to_owned();
        let thread = {
            let (stop, log, sent) = (stop.clone(), log.clone(), sent.clone());
            std::thread::spawn(move || {
                let http = client();
                let mut target = 0;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let a = wheel(&project, &format!("1.0.{n}"));
                    sent.fetch_add(1, Ordering::Relaxed);
                    // Each wheel is sent until it is acknowledged or refused.
                    let mut url = urls[target].clone();
                    let mut unavailable = 0;
                    loop {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        match upload(&http, &url, &token, &a) {
                            Ok(up) if up.status == 200 => {
                                let mut log = log.lock().unwrap();
                                log.acked
                                    .insert(a.filename.clone(), crate::sha256_hex(&a.bytes));
                                log.acks.push((Instant::now(), url.clone()));
                                if let Some(term) = up.term {
                                    log.terms.push((term, url.clone()));
                                }
                                break;
                            }
                            Ok(up) if up.status == 307 && up.location.is_some() => {
                                let location = up.location.unwrap();
                                url = location.trim_end_matches("/pypi/").to_owned();
                                log.lock().unwrap().retried += 1;
                            }
                            Ok(up) if up.status == 503 => {
                                log.lock().unwrap().retried += 1;
                                // A node cut off from the quorum answers 503
                                // for as long as it is: try the next one.
                                unavailable += 1;
                                if unavailable % 3 == 0 {
                                    target = (target + 1) % urls.len();
                                    url = urls[target].clone();
                                }
                                std::thread::sleep(Duration::from_millis(100));
                            }
                            Ok(up) => {
                                log.lock().unwrap().unexpected.push(format!(
                                    "{} to {url}: {} {}",
                                    a.filename, up.status, up.body
                                ));
                                break;
                            }
                            Err(_) => {
                                // Refused or cut off: that node may be dead.
                                log.lock().unwrap().retried += 1;
                                target = (target + 1) % urls.len();
                                url = urls[target].clone();
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        }
                    }
                }
            })
        };
        Uploader {
            stop,
            log,
            sent,
            thread: Some(thread),
        }
    }

    pub fn acked(&self) -> usize {
        self.log.lock().unwrap().acked.len()
    }

    /// Waits until `more` uploads beyond `from` were acknowledged.
    pub fn wait_acked(&self, from: usize, more: usize, timeout: Duration) {
        wait_for(
            timeout,
            &format!("{more} more acknowledged uploads"),
            || (self.acked() >= from + more).then_some(()),
        );
    }

    /// The acknowledgements so far: when, and from which node's URL.
    pub fn acks(&self) -> Vec<(Instant, String)> {
        self.log.lock().unwrap().acks.clone()
    }

    pub fn finish(mut self) -> WriteLog {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("uploader thread");
        }
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}
