//! The compose cluster, driven through the `docker` and `docker-compose`
//! commands: bring-up, kills, network cuts, addresses and volumes. Every
//! command is bounded in time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

/// The compose project: the fault suite's containers, networks and
/// volumes are named `hoard-faults_*`, apart from anything else running.
pub const PROJECT: &str = "hoard-faults";

pub const VOTERS: [&str; 3] = ["voter1", "voter2", "voter3"];
pub const REPLICAS: [&str; 2] = ["replica2", "replica3"];

/// Every serving node: the voters, then the replicas.
pub fn nodes() -> Vec<&'static str> {
    VOTERS.iter().chain(REPLICAS.iter()).copied().collect()
}

/// The datacenter network a node lives in: `dc1` for voter1, `dc2` for
/// voter2 and replica2, …
pub fn datacenter(node: &str) -> String {
    format!("dc{}", node.chars().last().unwrap_or('1'))
}

pub struct Compose {
    file: PathBuf,
    /// Extra environment for `docker-compose` (HOARD_IMAGE, …).
    env: Vec<(String, String)>,
}

const COMMAND_DEADLINE: Duration = Duration::from_secs(120);

/// Runs `program args`, bounded by [`COMMAND_DEADLINE`]; its stdout.
fn run(program: &str, args: &[&str], env: &[(String, String)]) -> Result<String> {
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let started = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > COMMAND_DEADLINE {
            let _ = child.kill();
            bail!("{program} {args:?} took over {COMMAND_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn docker(args: &[&str]) -> Result<String> {
    run("docker", args, &[])
}

impl Compose {
    pub fn new(file: &Path, image: &str) -> Compose {
        Compose {
            file: file.to_path_buf(),
            env: vec![("HOARD_IMAGE".into(), image.into())],
        }
    }

    pub fn compose(&self, args: &[&str]) -> Result<String> {
        self.compose_with(&[], args)
    }

    /// `docker-compose` with override files after the cluster's own.
    pub fn compose_with(&self, overrides: &[&Path], args: &[&str]) -> Result<String> {
        let mut files = vec![self.file.to_string_lossy().into_owned()];
        files.extend(overrides.iter().map(|p| p.to_string_lossy().into_owned()));
        let mut full = vec!["-p", PROJECT];
        for file in &files {
            full.extend(["-f", file.as_str()]);
        }
        full.extend_from_slice(args);
        run("docker-compose", &full, &self.env)
    }

    /// Starts the cluster from nothing (old containers and volumes of the
    /// project are removed first).
    pub fn up_fresh(&self) -> Result<()> {
        self.down()?;
        self.compose(&["up", "-d", "--quiet-pull"])?;
        Ok(())
    }

    /// Stops and removes the project's containers, networks and volumes.
    pub fn down(&self) -> Result<()> {
        self.compose(&["down", "-v", "--remove-orphans", "--timeout", "5"])?;
        Ok(())
    }

    pub fn container(&self, service: &str) -> Result<String> {
        let id = self.compose(&["ps", "-q", service])?.trim().to_owned();
        if id.is_empty() {
            bail!("service {service} has no container");
        }
        Ok(id)
    }

    /// The node's address on its datacenter network, which this machine
    /// (the bridge's host) reaches directly.
    pub fn address(&self, service: &str) -> Result<String> {
        self.address_of(&self.container(service)?, service)
    }

    /// [`Compose::address`] of a container already looked up (each lookup
    /// is a `docker-compose` run, which takes a while).
    pub fn address_of(&self, id: &str, service: &str) -> Result<String> {
        address_on(id, service, &datacenter(service))
    }

    /// The service's address on `network` (`wan`, `dc2`, …).
    pub fn address_on(&self, service: &str, network: &str) -> Result<String> {
        address_on(&self.container(service)?, service, network)
    }

    /// SIGKILL: the process dies with no chance to flush anything.
    pub fn kill(&self, service: &str) -> Result<()> {
        docker(&["kill", "--signal", "KILL", &self.container(service)?])?;
        Ok(())
    }

    pub fn start(&self, service: &str) -> Result<()> {
        docker(&["start", &self.container(service)?])?;
        Ok(())
    }

    pub fn disconnect(&self, network: &str, service: &str) -> Result<()> {
        let net = format!("{PROJECT}_{network}");
        docker(&["network", "disconnect", &net, &self.container(service)?])?;
        Ok(())
    }

    /// Reconnects `service` under its service name, as compose attached it.
    pub fn connect(&self, network: &str, service: &str) -> Result<()> {
        let net = format!("{PROJECT}_{network}");
        docker(&[
            "network",
            "connect",
            "--alias",
            service,
            &net,
            &self.container(service)?,
        ])?;
        Ok(())
    }

    /// Where this machine sees the service's data volume.
    pub fn volume_path(&self, service: &str) -> Result<PathBuf> {
        let volume = format!("{PROJECT}_{service}-data");
        let out = docker(&["volume", "inspect", "--format", "{{.Mountpoint}}", &volume])?;
        Ok(PathBuf::from(out.trim()))
    }

    /// The service's recent log lines, for a failure report.
    pub fn logs(&self, service: &str, lines: usize) -> String {
        let tail = lines.to_string();
        self.compose(&["logs", "--no-color", "--tail", &tail, service])
            .unwrap_or_else(|e| format!("(no logs: {e:#})"))
    }
}

fn networks_of(id: &str) -> Result<serde_json::Map<String, Value>> {
    let out = docker(&[
        "inspect",
        "--format",
        "{{json .NetworkSettings.Networks}}",
        id,
    ])?;
    let value: Value = serde_json::from_str(out.trim()).context("docker inspect")?;
    value
        .as_object()
        .cloned()
        .context("docker inspect: no networks")
}

fn address_on(id: &str, service: &str, network: &str) -> Result<String> {
    let net = format!("{PROJECT}_{network}");
    networks_of(id)?
        .get(&net)
        .and_then(|n| n["IPAddress"].as_str())
        .filter(|ip| !ip.is_empty())
        .map(str::to_owned)
        .with_context(|| format!("{service} has no address on {net}"))
}
