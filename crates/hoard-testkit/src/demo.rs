//! `hoard demo` as tests run it: a local cluster of child processes,
//! described by its `cluster.json`. Whatever is left of it is killed on
//! drop, and a failing test prints its logs.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::wait_for;
use crate::tools::hoard_bin;

pub struct Demo {
    pub child: Child,
    pub dir: tempfile::TempDir,
    /// The nodes of `cluster.json`: id, role, pid, http_url, grpc_addr,
    /// data_dir, admin_token.
    pub nodes: Vec<Value>,
}

impl Demo {
    /// `hoard demo --voters V --replicas R`, once its `cluster.json` is
    /// written (every node answers by then).
    pub fn start(voters: usize, replicas: usize) -> Demo {
        let dir = tempfile::Builder::new()
            .prefix("hoard-demo-")
            .tempdir()
            .expect("a temp dir");
        let log = std::fs::File::create(dir.path().join("demo.log")).expect("demo.log");
        let mut cmd = Command::new(hoard_bin());
        cmd.args(["demo", "--voters", &voters.to_string()])
            .args(["--replicas", &replicas.to_string(), "--dir"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("demo.log"))
            .stderr(log);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HOARD_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd.spawn().expect("spawn hoard demo");
        let mut demo = Demo {
            child,
            dir,
            nodes: Vec::new(),
        };
        let cluster_json = demo.dir.path().join("cluster.json");
        let t = Instant::now();
        let cluster: Value = wait_for(
            Duration::from_secs(60),
            "hoard demo writes cluster.json",
            || {
                if let Ok(Some(status)) = demo.child.try_wait() {
                    panic!("hoard demo exited with {status} before writing cluster.json");
                }
                let text = std::fs::read_to_string(&cluster_json).ok()?;
                serde_json::from_str(&text).ok()
            },
        );
        eprintln!("cluster.json after {:?}", t.elapsed());
        demo.nodes = cluster["nodes"].as_array().cloned().unwrap_or_default();
        demo
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n["pid"].as_u64())
            .map(|p| p as u32)
            .collect()
    }

    pub fn url(&self, i: usize) -> String {
        self.nodes[i]["http_url"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn admin_token(&self, i: usize) -> String {
        self.nodes[i]["admin_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// `kill -9` of node `i`.
    pub fn kill9(&self, i: usize) {
        if let Some(pid) = self.nodes[i]["pid"].as_u64() {
            // SAFETY: signalling a process that this test started.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

/// Whether process `pid` is gone (or a zombie).
pub fn pid_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // `pid (comm) STATE …`: the state follows the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in self.pids() {
            if !pid_gone(pid) {
                // SAFETY: signalling a process that this test started.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("demo.log")).unwrap_or_default();
            eprintln!("----- hoard demo output -----\n{log}\n-----");
            for entry in std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let node_log = entry.path().join("hoard.log");
                if let Ok(text) = std::fs::read_to_string(&node_log) {
                    let tail: Vec<&str> = text.lines().rev().take(60).collect();
                    eprintln!("----- {} (tail) -----", node_log.display());
                    for line in tail.into_iter().rev() {
                        eprintln!("{line}");
                    }
                }
            }
        }
    }
}
