//! A cluster CA and node certificates for TLS tests, made with the real
//! `hoard cert init|issue`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::node::describe_failure;
use crate::tools::hoard_bin;

/// A CA made by `hoard cert init` in a temp dir.
pub struct TestCa {
    dir: tempfile::TempDir,
}

/// A node's certificate and key files, and the CA that issued them.
#[derive(Clone, Debug)]
pub struct NodeCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

fn hoard(args: &[&str]) {
    let mut cmd = Command::new(hoard_bin());
    cmd.args(args).stdin(Stdio::null());
    let out = cmd.output().expect("run hoard cert");
    assert!(out.status.success(), "{}", describe_failure(&cmd, &out));
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::Builder::new()
            .prefix("hoard-ca-")
            .tempdir()
            .expect("temp dir");
        hoard(&["cert", "init", "--dir", &dir.path().to_string_lossy()]);
        TestCa { dir }
    }

    /// The CA certificate, as clients and nodes are given it.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `hoard cert issue NODE_ID --san 127.0.0.1 --san localhost`.
    pub fn issue(&self, node_id: &str) -> NodeCert {
        let dir = self.dir.path().to_string_lossy().to_string();
        hoard(&[
            "cert",
            "issue",
            node_id,
            "--san",
            "127.0.0.1",
            "--san",
            "localhost",
            "--dir",
            &dir,
        ]);
        NodeCert {
            cert: self.dir.path().join(format!("{node_id}.pem")),
            key: self.dir.path().join(format!("{node_id}-key.pem")),
            ca: self.ca_pem(),
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}
