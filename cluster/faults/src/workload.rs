//! The clients that run through every scenario: writers that upload
//! wheels (to whichever voter leads, and through the replicas), readers
//! that list projects on every node, and a poller of the voters'
//! `/+status`. Each records what it saw into the scenario's [`History`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use hoard_testkit::artifacts::{wheel, Artifact};
use reqwest::blocking::Client;
use serde_json::Value;

use crate::docker::{nodes, REPLICAS, VOTERS};
use crate::history::{History, Observation, Outcome, Read, Write};

pub const PROJECTS: [&str; 4] = ["fault-p0", "fault-p1", "fault-p2", "fault-p3"];

/// How long one upload may take before its outcome counts as unknown.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a writer keeps following redirects and 503s for one file.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// What every client shares: node addresses, the admin token, and the
/// history being written.
pub struct Shared {
    /// Node name → `http://ADDRESS:4040`, refreshed after every fault.
    pub urls: RwLock<BTreeMap<String, String>>,
    pub token: String,
    pub started: Instant,
    pub history: Mutex<History>,
    /// Per node: bumped when its data is wiped (see [`Read::incarnation`]).
    pub incarnations: Mutex<BTreeMap<String, u32>>,
    /// The voter that last said it leads.
    pub leader: Mutex<Option<String>>,
    /// When the scenario's fault took effect.
    fault_at: Mutex<Option<f64>>,
    stop: AtomicBool,
}

impl Shared {
    pub fn new(urls: BTreeMap<String, String>, token: String) -> Arc<Shared> {
        Arc::new(Shared {
            urls: RwLock::new(urls),
            token,
            started: Instant::now(),
            history: Mutex::new(History::default()),
            incarnations: Mutex::new(BTreeMap::new()),
            leader: Mutex::new(None),
            fault_at: Mutex::new(None),
            stop: AtomicBool::new(false),
        })
    }

    pub fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    pub fn url(&self, node: &str) -> Option<String> {
        self.urls
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .cloned()
    }

    /// Marks the moment the fault took effect (the first call counts).
    pub fn mark_fault(&self) {
        let now = self.now();
        self.fault_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(now);
    }

    pub fn fault_at(&self) -> Option<f64> {
        *self.fault_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn bump_incarnation(&self, node: &str) {
        let mut incarnations = self.incarnations.lock().unwrap_or_else(|p| p.into_inner());
        *incarnations.entry(node.to_owned()).or_default() += 1;
    }

    fn incarnation(&self, node: &str) -> u32 {
        let incarnations = self.incarnations.lock().unwrap_or_else(|p| p.into_inner());
        incarnations.get(node).copied().unwrap_or_default()
    }

    fn record(&self, f: impl FnOnce(&mut History)) {
        f(&mut self.history.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Records one upload of `a`, ending now.
    fn record_write(
        &self,
        client: &str,
        sent_to: &str,
        a: &Artifact,
        started: f64,
        outcome: Outcome,
    ) {
        let write = Write {
            client: client.to_owned(),
            sent_to: sent_to.to_owned(),
            project: a.name.clone(),
            filename: a.filename.clone(),
            sha256: a.sha256(),
            started,
            ended: self.now(),
            outcome,
        };
        self.record(|h| h.writes.push(write));
    }

    /// The same addresses and token, with a history of its own.
    pub fn fresh(&self) -> Arc<Shared> {
        let urls = self.urls.read().unwrap_or_else(|p| p.into_inner()).clone();
        Shared::new(urls, self.token.clone())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The first acknowledged write that started at or after `since`:
    /// when it ended.
    pub fn first_ack_after(&self, since: f64) -> Option<f64> {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history
            .writes
            .iter()
            .filter(|w| w.started >= since && matches!(w.outcome, Outcome::Acked { .. }))
            .map(|w| w.ended)
            .min_by(f64::total_cmp)
    }
}

pub fn http_client(timeout: Duration) -> Client {
    http_client_connecting_within(timeout, Duration::from_secs(1))
}

fn http_client_connecting_within(timeout: Duration, connect: Duration) -> Client {
    Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(connect)
        .build()
        .expect("an HTTP client")
}

/// The running clients of one scenario.
pub struct Workload {
    pub shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Workload {
    /// Starts two leader-seeking writers, one writer through the
    /// replicas, a reader per node and the status poller. `tag` keeps
    /// this scenario's filenames apart from every other's.
    pub fn start(shared: Arc<Shared>, tag: u32) -> Workload {
        let mut threads = Vec::new();
        for client in 0..2 {
            let shared = shared.clone();
            threads.push(std::thread::spawn(move || {
                write_through_leader(&shared, tag, client)
            }));
        }
        {
            let shared = shared.clone();
            threads.push(std::thread::spawn(move || {
                write_through_replicas(&shared, tag, 2)
            }));
        }
        for node in nodes() {
            let shared = shared.clone();
            threads.push(std::thread::spawn(move || read_node(&shared, node)));
        }
        {
            let shared = shared.clone();
            threads.push(std::thread::spawn(move || poll_status(&shared)));
        }
        Workload { shared, threads }
    }

    /// Stops every client and hands back what they saw.
    pub fn stop(self) -> History {
        self.shared.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
        std::mem::take(
            &mut *self
                .shared
                .history
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }
}

fn artifact(tag: u32, client: u32, n: u32) -> Artifact {
    let project = PROJECTS[(n as usize + client as usize) % PROJECTS.len()];
    wheel(project, &format!("{tag}.{client}.{n}"))
}

/// One upload's answer.
enum Answer {
    Acked {
        serial: u64,
        term: u64,
        node: String,
    },
    Redirect(String),
    Status(u16),
    /// The request never reached the node: safe to send elsewhere.
    NotSent,
    /// Sent, and no answer: it may have happened.
    Lost(String),
}

fn post(client: &Client, base: &str, token: &str, a: &Artifact) -> Answer {
    let mp = hoard_testkit::http::Upload::of(a).multipart();
    let response = client
        .post(format!("{base}/pypi/"))
        .basic_auth("__token__", Some(token))
        .header(reqwest::header::CONTENT_TYPE, mp.content_type())
        .body(mp.finish())
        .send();
    let response = match response {
        Ok(r) => r,
        Err(e) if e.is_connect() => return Answer::NotSent,
        Err(e) => return Answer::Lost(format!("{e:#}")),
    };
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let status = response.status().as_u16();
    match status {
        200 => {
            let serial = header("x-hoard-upload-serial").and_then(|s| s.parse().ok());
            let term = header("x-hoard-term").and_then(|s| s.parse().ok());
            match (serial, term, header("x-hoard-node")) {
                (Some(serial), Some(term), Some(node)) => Answer::Acked { serial, term, node },
                _ => Answer::Lost("200 without x-hoard-upload-serial, -term or -node".into()),
            }
        }
        307 | 308 => match header("location") {
            Some(location) => Answer::Redirect(location),
            None => Answer::Status(status),
        },
        _ => Answer::Status(status),
    }
}

/// The node a redirect names, by its host (`http://voter2:4040/...`).
fn node_of(location: &str) -> Option<String> {
    let url = reqwest::Url::parse(location).ok()?;
    let host = url.host_str()?;
    VOTERS.iter().find(|v| **v == host).map(|v| v.to_string())
}

fn write_through_leader(shared: &Shared, tag: u32, client: u32) {
    let http = http_client(UPLOAD_TIMEOUT);
    let mut target_index = client as usize;
    let mut n = 0;
    while !shared.stopped() {
        n += 1;
        let a = artifact(tag, client, n);
        let started = shared.now();
        let deadline = Instant::now() + WRITE_DEADLINE;
        let mut target = shared
            .leader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| VOTERS[target_index % VOTERS.len()].to_owned());
        let outcome = loop {
            let Some(base) = shared.url(&target) else {
                break Outcome::Unknown {
                    error: format!("no address for {target}"),
                };
            };
            let answer = post(&http, &base, &shared.token, &a);
            let retry = match answer {
                Answer::Acked { serial, term, node } => {
                    break Outcome::Acked { serial, term, node }
                }
                Answer::Lost(error) => break Outcome::Unknown { error },
                Answer::Redirect(location) => match node_of(&location) {
                    Some(leader) => {
                        target = leader;
                        307
                    }
                    None => break Outcome::Refused { status: 307 },
                },
                Answer::Status(status @ (502..=504)) => {
                    target_index += 1;
                    target = VOTERS[target_index % VOTERS.len()].to_owned();
                    std::thread::sleep(Duration::from_millis(200));
                    status
                }
                Answer::Status(status) => break Outcome::Refused { status },
                Answer::NotSent => {
                    target_index += 1;
                    target = VOTERS[target_index % VOTERS.len()].to_owned();
                    std::thread::sleep(Duration::from_millis(100));
                    0
                }
            };
            if Instant::now() > deadline || shared.stopped() {
                break Outcome::Refused { status: retry };
            }
        };
        shared.record_write(
            &format!("leader-writer-{client}"),
            &target,
            &a,
            started,
            outcome,
        );
        std::thread::sleep(Duration::from_millis(30));
    }
}

fn write_through_replicas(shared: &Shared, tag: u32, client: u32) {
    let http = http_client(UPLOAD_TIMEOUT);
    let mut n = 0;
    while !shared.stopped() {
        n += 1;
        let a = artifact(tag, client, n);
        let replica = REPLICAS[n as usize % REPLICAS.len()];
        let started = shared.now();
        let outcome = match shared.url(replica) {
            None => Outcome::Unknown {
                error: format!("no address for {replica}"),
            },
            Some(base) => match post(&http, &base, &shared.token, &a) {
                Answer::Acked { serial, term, node } => Outcome::Acked { serial, term, node },
                Answer::Lost(error) => Outcome::Unknown { error },
                Answer::NotSent => Outcome::Refused { status: 0 },
                Answer::Redirect(_) => Outcome::Refused { status: 307 },
                Answer::Status(status) => Outcome::Refused { status },
            },
        };
        shared.record_write("replica-writer", replica, &a, started, outcome);
        std::thread::sleep(Duration::from_millis(60));
    }
}

/// The files that `base` lists for `project`, and its serial.
pub fn list(client: &Client, base: &str, project: &str) -> Result<(u64, BTreeMap<String, String>)> {
    let response = client
        .get(format!("{base}/pypi/simple/{project}/"))
        .header("accept", "application/vnd.pypi.simple.v1+json")
        .send()?;
    let serial = response
        .headers()
        .get("x-hoard-serial")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
        .context("no x-hoard-serial")?;
    match response.status().as_u16() {
        404 => return Ok((serial, BTreeMap::new())),
        200 => {}
        status => anyhow::bail!("{base}: project page answered {status}"),
    }
    let page: Value = response.json()?;
    let files = page["files"]
        .as_array()
        .context("no files in the page")?
        .iter()
        .filter_map(|f| {
            Some((
                f["filename"].as_str()?.to_owned(),
                f["hashes"]["sha256"].as_str()?.to_owned(),
            ))
        })
        .collect();
    Ok((serial, files))
}

fn read_node(shared: &Shared, node: &str) {
    let http = http_client(Duration::from_secs(2));
    let mut n = 0usize;
    while !shared.stopped() {
        n += 1;
        let project = PROJECTS[n % PROJECTS.len()];
        let incarnation = shared.incarnation(node);
        let at = shared.now();
        if let Some(base) = shared.url(node) {
            if let Ok((serial, files)) = list(&http, &base, project) {
                let files: BTreeSet<String> = files.into_keys().collect();
                shared.record(|h| {
                    h.reads.push(Read {
                        node: node.to_owned(),
                        incarnation,
                        at,
                        serial,
                        project: project.to_owned(),
                        files,
                    })
                });
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A node's `/+status`, or None if it does not answer.
pub fn status(client: &Client, base: &str) -> Option<Value> {
    client
        .get(format!("{base}/+status"))
        .send()
        .ok()?
        .json()
        .ok()
}

fn poll_status(shared: &Shared) {
    // Short: one round asks every voter in turn, and a dead one must not
    // hide a new leader for long.
    let http =
        http_client_connecting_within(Duration::from_millis(500), Duration::from_millis(300));
    while !shared.stopped() {
        // A cut-off leader goes on saying it leads: the newest term wins.
        let mut newest: Option<(u64, &str)> = None;
        for voter in VOTERS {
            let Some(base) = shared.url(voter) else {
                continue;
            };
            let Some(status) = status(&http, &base) else {
                continue;
            };
            let role = status["role"].as_str().unwrap_or_default().to_owned();
            let term = status["term"].as_u64().unwrap_or_default();
            if role == "leader" && newest.is_none_or(|(t, _)| term > t) {
                newest = Some((term, voter));
            }
            let at = shared.now();
            shared.record(|h| {
                h.observations.push(Observation {
                    node: voter.to_owned(),
                    at,
                    role,
                    term,
                })
            });
        }
        if let Some((_, voter)) = newest {
            *shared.leader.lock().unwrap_or_else(|p| p.into_inner()) = Some(voter.to_owned());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
