//! A seeded, randomized fault test: three voters and a replica, two
//! uploaders, and random kill -9, restart, partition and heal steps. A
//! history checker then asserts:
//! - every acknowledged upload is listed and served by every node;
//! - each term had one leader, and acknowledgements of one term came from
//!   one node;
//! - the serial each node reports never goes down (reads are monotonic,
//!   kill -9 and restarts included);
//! - all nodes end with the same serial and digest.
//!
//! The schedule is reproducible from its seed: `HOARD_FAULT_SEED=N`
//! replays one, `HOARD_FAULT_SECS` sets how long it runs (60 s here; the
//! long run is described in `bench/README.md`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hoard_testkit::cluster::{download, listed, status_of, wait_converged};
use hoard_testkit::voters::{Uploader, Voters};
use hoard_testkit::{Node, NodeOpts};

/// xorshift64*: small, seedable, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug)]
enum Impaired {
    Killed(usize),
    Partitioned(usize),
}

/// What the observer threads saw.
#[derive(Default)]
struct History {
    /// term → the leader ids seen claiming it.
    leaders: BTreeMap<u64, std::collections::BTreeSet<u64>>,
    /// Per node URL, the last serial seen, and any decrease.
    last_serial: BTreeMap<String, u64>,
    regressions: Vec<String>,
}

fn observe(urls: &[String], history: &Mutex<History>, http: &reqwest::blocking::Client) {
    for url in urls {
        let Ok(resp) = http
            .get(format!("{url}/+status"))
            .timeout(Duration::from_secs(2))
            .send()
        else {
            continue;
        };
        let Ok(s) = resp.json::<serde_json::Value>() else {
            continue;
        };
        let mut h = history.lock().unwrap();
        if s["role"] == "leader" {
            if let (Some(term), Some(id)) = (s["term"].as_u64(), s["raft_id"].as_u64()) {
                h.leaders.entry(term).or_default().insert(id);
            }
        }
        if let Some(serial) = s["applied_serial"].as_u64() {
            let last = h.last_serial.get(url).copied().unwrap_or(0);
            if serial < last {
                h.regressions
                    .push(format!("{url}: serial {last} then {serial}"));
            }
            h.last_serial.insert(url.clone(), serial.max(last));
        }
    }
}

#[test]
fn randomized_kills_and_partitions_lose_nothing_and_keep_one_leader_per_term() {
    let _heavy = hoard_testkit::heavy_test();
    let seed = env_u64("HOARD_FAULT_SEED", 20261201);
    let secs = env_u64("HOARD_FAULT_SECS", 60);
    eprintln!("fault schedule seed {seed} for {secs} s (HOARD_FAULT_SEED={seed} replays it)");
    let mut rng = Rng(seed.max(1));

    let mut voters = Voters::start(3);
    let upstreams: Vec<String> = voters.nodes.iter().map(Node::grpc_addr).collect();
    let replica = Node::start(NodeOpts::replica("r1", &upstreams));
    let leader = voters.wait_leader(Duration::from_secs(20), None);
    let token = voters.nodes[leader].create_token("pypi", "upload");
    let uploaders = [
        Uploader::start(voters.urls(), token.clone(), "chaos-a"),
        Uploader::start(voters.urls(), token, "chaos-b"),
    ];

    let mut urls = voters.urls();
    urls.push(replica.url());
    let history = Arc::new(Mutex::new(History::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let observer = {
        let (urls, history, stop) = (urls.clone(), history.clone(), stop.clone());
        std::thread::spawn(move || {
            let http = hoard_testkit::cluster::client();
            while !stop.load(Ordering::Relaxed) {
                observe(&urls, &history, &http);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // At most one voter is impaired at a time, so a majority can always
    // make progress; which one, how, and for how long is the seed's.
    let end = Instant::now() + Duration::from_secs(secs);
    let mut impaired: Option<Impaired> = None;
    let mut steps = Vec::new();
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(500 + rng.below(2000)));
        let step = match impaired.take() {
            Some(Impaired::Killed(i)) => {
                voters.nodes[i].restart();
                format!("restart v{}", i + 1)
            }
            Some(Impaired::Partitioned(i)) => {
                voters.partition(i, false);
                format!("heal v{}", i + 1)
            }
            None => {
                let i = rng.below(3) as usize;
                if rng.below(2) == 0 {
                    voters.nodes[i].kill9();
                    impaired = Some(Impaired::Killed(i));
                    format!("kill -9 v{}", i + 1)
                } else {
                    voters.partition(i, true);
                    impaired = Some(Impaired::Partitioned(i));
                    format!("partition v{}", i + 1)
                }
            }
        };
        eprintln!(
            "{:>6.1}s  {step}",
            (Instant::now() + Duration::from_secs(secs) - end).as_secs_f64()
        );
        steps.push(step);
    }
    match impaired {
        Some(Impaired::Killed(i)) => voters.nodes[i].restart(),
        Some(Impaired::Partitioned(i)) => voters.partition(i, false),
        None => {}
    }
    let logs: Vec<_> = uploaders.into_iter().map(Uploader::finish).collect();
    stop.store(true, Ordering::Relaxed);
    observer.join().unwrap();

    let mut nodes: Vec<&Node> = voters.nodes.iter().collect();
    nodes.push(&replica);
    let (serial, digest) = wait_converged(&nodes, Duration::from_secs(90));
    eprintln!(
        "{} steps; converged at serial {serial} (digest {digest}); acknowledged {} + {}",
        steps.len(),
        logs[0].acked.len(),
        logs[1].acked.len()
    );

    // Every acknowledged upload is on every node, and served.
    for (log, project) in logs.iter().zip(["chaos-a", "chaos-b"]) {
        if !log.unexpected.is_empty() {
            // What the servers logged about refused uploads.
            for node in &nodes {
                for line in node.log().lines().filter(|l| l.contains("WARN")) {
                    eprintln!("{}: {line}", node.opts.node_id);
                }
            }
        }
        assert!(
            log.unexpected.is_empty(),
            "{project}: {:#?}",
            log.unexpected
        );
        assert!(!log.acked.is_empty(), "{project}: nothing was acknowledged");
        for node in &nodes {
            let files = listed(node.http(), &node.url(), project).unwrap();
            let got: BTreeMap<&str, &str> = files
                .iter()
                .map(|f| (f.filename.as_str(), f.sha256.as_str()))
                .collect();
            for (filename, sha) in &log.acked {
                assert_eq!(
                    got.get(filename.as_str()),
                    Some(&sha.as_str()),
                    "{}: acknowledged {filename} is missing (seed {seed})",
                    node.opts.node_id
                );
            }
            // Spot-check that what is listed is served.
            for f in files.iter().step_by(25) {
                let bytes = download(node.http(), &f.url).unwrap();
                assert_eq!(hoard_testkit::sha256_hex(&bytes), f.sha256);
            }
        }
    }

    // One leader per term, and one acknowledging node per term.
    let h = history.lock().unwrap();
    for (term, ids) in &h.leaders {
        assert_eq!(
            ids.len(),
            1,
            "term {term} had leaders {ids:?} (seed {seed})"
        );
    }
    let mut ackers: BTreeMap<u64, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for log in &logs {
        for (term, url) in &log.terms {
            ackers.entry(*term).or_default().insert(url.as_str());
        }
    }
    for (term, urls) in &ackers {
        assert_eq!(
            urls.len(),
            1,
            "term {term}: acknowledged by {urls:?} (seed {seed})"
        );
    }
    assert!(
        h.regressions.is_empty(),
        "serials went down: {:?} (seed {seed})",
        h.regressions
    );
    // And the replica, which never was a voter, agrees too.
    assert_eq!(status_of(&replica).unwrap()["digest"], digest.as_str());
}
