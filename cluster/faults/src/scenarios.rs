//! The scenarios: each injects one fault while the clients run, holds it,
//! heals it, and leaves the cluster to converge. Every wait is bounded.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::docker::{datacenter, docker, nodes, Compose, PROJECT, VOTERS};
use crate::history::{check, NodeState, Verdict};
use crate::workload::{http_client, list, status, Shared, Workload, PROJECTS};

pub struct Suite {
    pub compose: Compose,
    pub image: String,
    /// The directory holding the hoard-faults binary, mounted into the
    /// delaying proxies' containers.
    pub faults_dir: PathBuf,
    /// How long each fault is held.
    pub hold: Duration,
}

pub struct Scenario {
    pub name: &'static str,
    pub what: &'static str,
    inject: fn(&Suite, &Shared) -> Result<String>,
}

pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "kill-leader",
            what: "kill -9 the leader's container, restart it after the hold",
            inject: kill_leader,
        },
        Scenario {
            name: "kill-replica-catching-up",
            what: "wipe replica2, and kill -9 it while it catches up; restart it",
            inject: kill_replica_catching_up,
        },
        Scenario {
            name: "partition-leader-dc",
            what: "disconnect the leader's datacenter from the WAN, then reconnect it",
            inject: partition_leader_dc,
        },
        Scenario {
            name: "partition-voter",
            what: "disconnect one follower voter from the WAN, then reconnect it",
            inject: partition_voter,
        },
        Scenario {
            name: "slow-wan",
            what: "60 ms each way on every link of the leader's datacenter (delaying proxies)",
            inject: slow_wan,
        },
        Scenario {
            name: "clock-jump",
            what: "a follower voter's wall clock jumps a day ahead, then back (libfaketime)",
            inject: clock_jump,
        },
        Scenario {
            name: "replica-disk-full",
            what: "fill replica3's data volume (a tmpfs), then free it",
            inject: replica_disk_full,
        },
    ]
}

/// One scenario's outcome, as the results table shows it.
pub struct Report {
    pub name: &'static str,
    pub what: &'static str,
    pub notes: String,
    pub verdict: Verdict,
    pub unknown: usize,
    pub refused: usize,
    /// From the fault to the first write acknowledged after it.
    pub recovery: Option<f64>,
    /// From the fault to the first leader of a newer term, if one came.
    pub new_leader: Option<f64>,
    pub failure_detail: Option<String>,
}

/// How long after a fault writes must be acknowledged again.
const RECOVERY_BOUND: f64 = 20.0;
/// How long the healed cluster may take to agree.
const CONVERGE_BOUND: Duration = Duration::from_secs(120);

impl Suite {
    pub fn run(&self, scenario: &Scenario, tag: u32, shared: Arc<Shared>) -> Result<Report> {
        eprintln!("== {}: {}", scenario.name, scenario.what);
        reconnect_all(&self.compose);
        let workload = Workload::start(shared.clone(), tag);
        std::thread::sleep(Duration::from_secs(2));
        let injected = (scenario.inject)(self, &shared);
        let fault_at = shared.fault_at().unwrap_or_else(|| shared.now());
        refresh_urls(&self.compose, &shared)?;
        // A fault step that went wrong fails the scenario; the cluster
        // is still checked.
        let (notes, step_failed) = match injected {
            Ok(notes) => (notes, None),
            Err(e) => (
                "the fault step failed".to_owned(),
                Some(format!("the fault step failed: {e:#}")),
            ),
        };
        // Writes must come back, then run a little longer on the healed cluster.
        let recovered = wait_until(Duration::from_secs_f64(RECOVERY_BOUND), || {
            shared.first_ack_after(fault_at)
        });
        std::thread::sleep(Duration::from_secs(2));
        let history = workload.stop();
        let max_acked = history
            .writes
            .iter()
            .filter_map(|w| match w.outcome {
                crate::history::Outcome::Acked { serial, .. } => Some(serial),
                _ => None,
            })
            .max()
            .unwrap_or_default();
        let (healed, unconverged) = match converge(&shared, max_acked) {
            Ok(healed) => (healed, None),
            Err(e) => (
                BTreeMap::new(),
                Some(format!("the healed cluster cannot be read: {e:#}")),
            ),
        };
        let mut verdict = check(&history, &healed);
        // With no healed state, nothing could be checked as present.
        verdict.violations.extend(unconverged);
        verdict.violations.extend(step_failed);
        let recovery = recovered.map(|at| at - fault_at);
        let new_leader = new_leader_after(&history, fault_at);
        if recovery.is_none() {
            verdict.violations.push(format!(
                "no write was acknowledged within {RECOVERY_BOUND} s of the fault"
            ));
        }
        let unknown = history
            .writes
            .iter()
            .filter(|w| matches!(w.outcome, crate::history::Outcome::Unknown { .. }))
            .count();
        let refused = history
            .writes
            .iter()
            .filter(|w| matches!(w.outcome, crate::history::Outcome::Refused { .. }))
            .count();
        let mut refusals: BTreeMap<(String, u16), usize> = BTreeMap::new();
        for w in &history.writes {
            if let crate::history::Outcome::Refused { status } = w.outcome {
                *refusals.entry((w.client.clone(), status)).or_default() += 1;
            }
        }
        if !refusals.is_empty() {
            eprintln!("   refused (client, status): {refusals:?}");
        }
        let failure_detail = (!verdict.passed()).then(|| {
            let mut detail = String::new();
            for v in &verdict.violations {
                detail.push_str(&format!("- {v}\n"));
            }
            for node in nodes() {
                detail.push_str(&format!(
                    "--- {node}, last log lines:\n{}\n",
                    self.compose.logs(node, 30)
                ));
            }
            detail
        });
        eprintln!(
            "   {} operations, {} acknowledged, {} lost, {unknown} unknown, {refused} refused, recovered in {}: {}",
            verdict.operations,
            verdict.acked,
            verdict.lost,
            recovery.map_or("-".into(), |r| format!("{r:.1} s")),
            if verdict.passed() { "pass" } else { "FAIL" }
        );
        Ok(Report {
            name: scenario.name,
            what: scenario.what,
            notes,
            verdict,
            unknown,
            refused,
            recovery,
            new_leader,
            failure_detail,
        })
    }
}

/// When, after `fault_at`, a voter first reported leading a term newer
/// than every term seen before the fault: seconds after the fault.
fn new_leader_after(history: &crate::history::History, fault_at: f64) -> Option<f64> {
    let before = history
        .observations
        .iter()
        .filter(|o| o.at < fault_at)
        .map(|o| o.term)
        .max()
        .unwrap_or_default();
    history
        .observations
        .iter()
        .filter(|o| o.at >= fault_at && o.role == "leader" && o.term > before)
        .map(|o| o.at - fault_at)
        .min_by(f64::total_cmp)
}

pub fn wait_until<T>(bound: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Puts every node back on the WAN, as compose.yaml has them: the heal of
/// every partition, and a reset before each scenario, so that one that
/// failed halfway does not leave a node cut off for the next.
pub fn reconnect_all(compose: &Compose) {
    for node in nodes() {
        // "already exists in network" is the usual answer, and fine.
        let _ = compose.connect("wan", node);
    }
}

/// Node addresses change when a container restarts or reconnects.
pub fn refresh_urls(compose: &Compose, shared: &Shared) -> Result<()> {
    let mut urls = BTreeMap::new();
    for node in nodes() {
        if let Ok(ip) = compose.address(node) {
            urls.insert(node.to_owned(), format!("http://{ip}:4040"));
        }
    }
    *shared.urls.write().unwrap_or_else(|p| p.into_inner()) = urls;
    Ok(())
}

/// Waits until every node answers with the same serial and digest, at
/// least `serial`; then reads each node's files.
fn converge(shared: &Shared, serial: u64) -> Result<BTreeMap<String, NodeState>> {
    let http = http_client(Duration::from_secs(2));
    let agreed = wait_until(CONVERGE_BOUND, || {
        let mut seen = Vec::new();
        for node in nodes() {
            let s = status(&http, &shared.url(node)?)?;
            let applied = s["applied_serial"].as_u64()?;
            let healthy = s["health"].as_str() == Some("ok");
            if applied < serial || !healthy {
                return None;
            }
            seen.push((applied, s["digest"].as_str()?.to_owned()));
        }
        seen.dedup();
        (seen.len() == 1).then_some(())
    });
    if agreed.is_none() {
        eprintln!("   the nodes did not agree within {CONVERGE_BOUND:?}");
    }
    let mut healed = BTreeMap::new();
    for node in nodes() {
        let base = shared
            .url(node)
            .with_context(|| format!("no address for {node}"))?;
        let s = status(&http, &base).with_context(|| format!("{node} does not answer"))?;
        let mut state = NodeState {
            applied_serial: s["applied_serial"].as_u64().unwrap_or_default(),
            digest: s["digest"].as_str().unwrap_or_default().to_owned(),
            files: BTreeMap::new(),
        };
        for project in PROJECTS {
            let (_, files) = list(&http, &base, project)?;
            state.files.insert(project.to_owned(), files);
        }
        healed.insert(node.to_owned(), state);
    }
    Ok(healed)
}

/// The voter that leads with the newest term, waiting (bounded) for one.
pub fn leader(shared: &Shared) -> Result<&'static str> {
    let http = http_client(Duration::from_secs(1));
    wait_until(Duration::from_secs(30), || {
        VOTERS
            .iter()
            .filter_map(|v| {
                let s = status(&http, &shared.url(v)?)?;
                (s["role"].as_str() == Some("leader"))
                    .then(|| (s["term"].as_u64().unwrap_or(0), *v))
            })
            .max()
            .map(|(_, v)| v)
    })
    .context("no voter leads")
}

fn kill_leader(suite: &Suite, shared: &Shared) -> Result<String> {
    let leader = leader(shared)?;
    suite.compose.kill(leader)?;
    shared.mark_fault();
    std::thread::sleep(suite.hold);
    suite.compose.start(leader)?;
    Ok(format!("killed {leader}"))
}

fn kill_replica_catching_up(suite: &Suite, shared: &Shared) -> Result<String> {
    let replica = "replica2";
    // Reads of the wiped node start again from nothing: a new incarnation,
    // before the old container goes and again once it is gone.
    shared.bump_incarnation(replica);
    suite
        .compose
        .compose(&["rm", "--stop", "--force", replica])?;
    shared.mark_fault();
    shared.bump_incarnation(replica);
    let volume = format!("{PROJECT}_{replica}-data");
    docker(&["volume", "rm", "--force", &volume])?;
    // Created first and started with `docker start`: `docker-compose up`
    // takes longer to return than a release build takes to catch up.
    suite
        .compose
        .compose(&["up", "--no-start", "--no-deps", replica])?;
    let id = suite.compose.container(replica)?;
    // `docker-compose start` would attach the service's other networks;
    // `docker start` leaves the container on its first one only.
    let _ = docker(&[
        "network",
        "connect",
        "--alias",
        replica,
        &format!("{PROJECT}_wan"),
        &id,
    ]);
    docker(&["start", &id])?;
    let ip = suite.compose.address_of(&id, replica)?;
    shared
        .urls
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(replica.to_owned(), format!("http://{ip}:4040"));
    let http = http_client(Duration::from_millis(500));
    // Kill it as soon as it knows how far behind it is (the upstream's
    // first heartbeat) and is not there yet: poll tightly, a release build
    // catches up in a second or two, and the applied serial moves only
    // when a batch is flushed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let caught = loop {
        let seen = shared.url(replica).and_then(|url| {
            let s = status(&http, &url)?;
            Some((
                s["applied_serial"].as_u64()?,
                s["upstream_serial"].as_u64()?,
            ))
        });
        match seen {
            Some((applied, upstream)) if upstream > 0 => break Some((applied, upstream)),
            _ if Instant::now() > deadline => break None,
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    suite.compose.kill(replica)?;
    std::thread::sleep(suite.hold / 2);
    suite.compose.start(replica)?;
    Ok(match caught {
        Some((applied, upstream)) if applied < upstream => {
            format!("killed {replica} at serial {applied} of {upstream}")
        }
        Some((applied, _)) => format!("killed {replica} at serial {applied}, caught up already"),
        None => format!("killed {replica} before it heard from an upstream"),
    })
}

fn partition_leader_dc(suite: &Suite, shared: &Shared) -> Result<String> {
    let leader = leader(shared)?;
    let dc = datacenter(leader);
    let cut: Vec<&str> = nodes()
        .into_iter()
        .filter(|n| datacenter(n) == dc)
        .collect();
    let cutting = cut
        .iter()
        .try_for_each(|node| suite.compose.disconnect("wan", node));
    if cutting.is_ok() {
        shared.mark_fault();
        std::thread::sleep(suite.hold);
    }
    // Heal whatever was cut, even if the cut failed halfway.
    reconnect_all(&suite.compose);
    cutting?;
    Ok(format!("cut {dc} ({}) off the WAN", cut.join(", ")))
}

fn partition_voter(suite: &Suite, shared: &Shared) -> Result<String> {
    let leader = leader(shared)?;
    let voter = VOTERS
        .iter()
        .find(|v| **v != leader)
        .context("no follower")?;
    let cutting = suite.compose.disconnect("wan", voter);
    if cutting.is_ok() {
        shared.mark_fault();
        std::thread::sleep(suite.hold);
    }
    reconnect_all(&suite.compose);
    cutting?;
    Ok(format!("cut {voter} off the WAN"))
}

const SLOW_WAN_DELAY_MS: u64 = 60;

fn slow_wan(suite: &Suite, shared: &Shared) -> Result<String> {
    let slow = leader(shared)?;
    let dc = datacenter(slow);
    let slow_ip = suite.compose.address(slow)?;
    let others: Vec<(&str, String)> = VOTERS
        .iter()
        .filter(|v| **v != slow)
        .map(|v| Ok((*v, suite.compose.address_on(v, "wan")?)))
        .collect::<Result<_>>()?;
    // The slow voter leaves the WAN; in its place, under its name, a proxy
    // that reaches it through its datacenter. In its datacenter, under the
    // other voters' names, proxies that reach them across the WAN.
    suite.compose.disconnect("wan", slow)?;
    let mut proxies = Vec::new();
    let result = (|| -> Result<()> {
        proxies.push(start_proxy(suite, slow, "wan", &dc, &slow_ip)?);
        for (voter, ip) in &others {
            proxies.push(start_proxy(suite, voter, &dc, "wan", ip)?);
        }
        shared.mark_fault();
        std::thread::sleep(suite.hold);
        Ok(())
    })();
    for proxy in &proxies {
        let _ = docker(&["rm", "--force", proxy]);
    }
    reconnect_all(&suite.compose);
    result?;
    Ok(format!(
        "{SLOW_WAN_DELAY_MS} ms each way between {slow} ({dc}) and the other voters"
    ))
}

/// A delaying proxy named `alias` on `network`, also attached to `via`,
/// forwarding ports 4040 and 4041 to `target_ip`.
fn start_proxy(
    suite: &Suite,
    alias: &str,
    network: &str,
    via: &str,
    target_ip: &str,
) -> Result<String> {
    let name = format!("{PROJECT}-slow-{alias}-on-{network}");
    let _ = docker(&["rm", "--force", &name]);
    let mount = format!("{}:/faults:ro", suite.faults_dir.display());
    let delay = SLOW_WAN_DELAY_MS.to_string();
    let http = format!("0.0.0.0:4040={target_ip}:4040");
    let grpc = format!("0.0.0.0:4041={target_ip}:4041");
    docker(&[
        "run",
        "--detach",
        "--name",
        &name,
        "--network",
        &format!("{PROJECT}_{network}"),
        "--network-alias",
        alias,
        "--no-healthcheck",
        "--volume",
        &mount,
        "--entrypoint",
        "/faults/hoard-faults",
        &suite.image,
        "proxy",
        "--delay-ms",
        &delay,
        "--forward",
        &http,
        "--forward",
        &grpc,
    ])?;
    docker(&["network", "connect", &format!("{PROJECT}_{via}"), &name])?;
    Ok(name)
}

fn replica_disk_full(suite: &Suite, shared: &Shared) -> Result<String> {
    let replica = "replica3";
    let filler = suite.compose.volume_path(replica)?.join("fault-filler");
    let mut file = std::fs::File::create(&filler).with_context(|| {
        format!(
            "creating {} (is the volume mounted here?)",
            filler.display()
        )
    })?;
    let chunk = vec![0u8; 1 << 20];
    let mut filled = 0u64;
    while file.write_all(&chunk).is_ok() {
        filled += chunk.len() as u64;
    }
    let _ = file.sync_all();
    drop(file);
    shared.mark_fault();
    let http = http_client(Duration::from_secs(1));
    let unhealthy = wait_until(Duration::from_secs(30), || {
        let s = status(&http, &shared.url(replica)?)?;
        (s["health"].as_str() == Some("unhealthy"))
            .then(|| s["problem"].as_str().unwrap_or("").to_owned())
    });
    std::thread::sleep(suite.hold);
    std::fs::remove_file(&filler)?;
    match unhealthy {
        Some(problem) => Ok(format!(
            "filled {} MiB; {replica} reported: {problem}",
            filled >> 20
        )),
        None => bail!("{replica} never reported its full disk as unhealthy"),
    }
}

/// Debian's libfaketime (`apt-get install libfaketime`): its libraries
/// link only what the hoard image has already.
const FAKETIME_DIR: &str = "/usr/lib/x86_64-linux-gnu/faketime";

fn clock_jump(suite: &Suite, shared: &Shared) -> Result<String> {
    let lib = std::path::Path::new(FAKETIME_DIR).join("libfaketimeMT.so.1");
    if !lib.is_file() {
        bail!(
            "{} is missing: install Debian's libfaketime (cluster/faults/run does)",
            lib.display()
        );
    }
    let leader = leader(shared)?;
    let voter = ["voter3", "voter2", "voter1"]
        .into_iter()
        .find(|v| *v != leader)
        .context("no follower")?;
    // The node reads its offset from this file (at most a second old):
    // writing it moves the node's wall clock, and only its wall clock.
    let dir = tempfile::tempdir()?;
    let offset = dir.path().join("offset");
    std::fs::write(&offset, "+0\n")?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(&offset, std::fs::Permissions::from_mode(0o644))?;
    let overrides = dir.path().join("clock.yaml");
    std::fs::write(
        &overrides,
        format!(
            "services:\n  {voter}:\n    environment:\n      LD_PRELOAD: /faketime/libfaketimeMT.so.1\n      \
             FAKETIME_TIMESTAMP_FILE: /faketime-clock/offset\n      FAKETIME_CACHE_DURATION: \"1\"\n      \
             DONT_FAKE_MONOTONIC: \"1\"\n    volumes:\n      - {FAKETIME_DIR}:/faketime:ro\n      \
             - {}:/faketime-clock:ro\n",
            dir.path().display()
        ),
    )?;
    // The voter restarts with the library preloaded and its clock still
    // true, and catches up before its clock moves.
    suite
        .compose
        .compose_with(&[&overrides], &["up", "-d", "--no-deps", voter])?;
    refresh_urls(&suite.compose, shared)?;
    let http = http_client(Duration::from_secs(1));
    wait_until(Duration::from_secs(60), || {
        let s = status(&http, &shared.url(voter)?)?;
        (s["health"].as_str() == Some("ok") && s["role"].as_str() == Some("follower")).then_some(())
    })
    .with_context(|| format!("{voter} did not come back as a follower"))?;
    // The node's clock, as the timestamp of its latest log line (the
    // readers make one every 50 ms). Not its Date header: hyper caches
    // that until a wall-clock deadline, so after a jump back it stays
    // ahead for as long as the jump.
    let container = suite.compose.container(voter)?;
    let skew = || -> Option<f64> {
        let logs = std::process::Command::new("docker")
            .args(["logs", "--tail", "3", &container])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&logs.stdout).into_owned()
            + &String::from_utf8_lossy(&logs.stderr);
        let line = text.lines().rev().find(|l| l.contains("\"timestamp\""))?;
        let stamp: serde_json::Value = serde_json::from_str(line).ok()?;
        let at = time::OffsetDateTime::parse(
            stamp["timestamp"].as_str()?,
            &time::format_description::well_known::Rfc3339,
        )
        .ok()?;
        Some((at - time::OffsetDateTime::now_utc()).as_seconds_f64())
    };
    let jumped = (|| -> Result<f64> {
        std::fs::write(&offset, "+1d\n")?;
        let ahead = wait_until(Duration::from_secs(10), || skew().filter(|s| *s > 80_000.0))
            .with_context(|| format!("{voter}'s clock did not move ahead"))?;
        shared.mark_fault();
        std::thread::sleep(suite.hold);
        std::fs::write(&offset, "+0\n")?;
        wait_until(Duration::from_secs(10), || {
            skew().filter(|s| s.abs() < 60.0)
        })
        .with_context(|| format!("{voter}'s clock did not come back"))?;
        std::thread::sleep(suite.hold);
        Ok(ahead)
    })();
    // Heal, whatever happened: the voter again as compose.yaml describes it.
    suite.compose.compose(&["up", "-d", "--no-deps", voter])?;
    Ok(format!(
        "{voter}'s clock {:.1} h ahead for {} s, then back",
        jumped? / 3600.0,
        suite.hold.as_secs()
    ))
}
