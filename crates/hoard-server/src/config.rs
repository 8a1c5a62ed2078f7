//! The node's configuration, as plain data. The binary loads it (TOML file
//! plus `HOARD_*` environment variables); everything here has a default,
//! so an empty configuration is a working single-node primary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hoard_cluster::RaftTuning;
use hoard_core::{MirrorSettings, RepoFormat, RepoKind, RepoName, RepoSettings};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// A stable name for this node, shown in `/+status` and logs.
    pub node_id: String,
    pub http_listen: SocketAddr,
    pub grpc_listen: SocketAddr,
    /// The URL clients use to reach this node; defaults to `http://{http_listen}`.
    pub public_url: Option<String>,
    pub data_dir: PathBuf,
    /// The largest upload body accepted, in bytes.
    pub max_upload_bytes: u64,
    /// How long to wait for the next bytes of a request body, in seconds.
    pub body_timeout_secs: u64,
    /// How long a request with `X-Hoard-Min-Serial` may wait, in seconds.
    pub min_serial_wait_secs: u64,
    /// `text` or `json`.
    pub log_format: String,
    /// Repositories to create at start if they do not exist (primary only).
    pub repos: Vec<RepoConfig>,
    /// `voter` (a member of the Raft group; `primary` is an old name for
    /// it) or `replica`.
    pub role: Role,
    /// A voter's id in the Raft group: unique in the cluster, never reused.
    pub raft_id: u64,
    /// On the first start of a voter, make it the only voter of a new
    /// group. Leave it on for the first node of a cluster (and for `hoard
    /// serve`); turn it off for voters that `hoard members add` adds later.
    pub bootstrap: bool,
    /// The cluster's name.
    pub cluster_name: String,
    /// The gRPC address other nodes use to reach this one; defaults to
    /// `grpc_listen`.
    pub grpc_public: Option<String>,
    /// Raft timing and log retention.
    pub raft: RaftTuning,
    /// For fault tests only: a file listing the gRPC addresses this node
    /// must neither call nor answer (a simulated network partition).
    pub partition_file: Option<PathBuf>,
    /// For a replica: gRPC addresses of the nodes to follow, in order of
    /// preference (voters or other replicas).
    pub upstreams: Vec<String>,
    /// For a replica: the primary's public URL for writes. Default: learned
    /// from the upstream's heartbeats.
    pub primary_url: Option<String>,
    /// For a replica: `redirect` writes to the primary (307), or `proxy` them.
    pub replica_writes: ReplicaWrites,
    /// For a replica: how many events may fetch blobs at once.
    pub fetch_concurrency: usize,
    /// Accounts that may `npm login` to get an upload token. There is no
    /// self-registration: a login for any other name is refused.
    pub users: Vec<UserConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Hex sha256 of the password (`printf %s PASSWORD | sha256sum`).
    pub password_sha256: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    #[serde(alias = "primary")]
    Voter,
    Replica,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaWrites {
    Redirect,
    Proxy,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: "hoard-1".into(),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 4040)),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 4041)),
            public_url: None,
            data_dir: PathBuf::from("./hoard-data"),
            max_upload_bytes: 1 << 30,
            body_timeout_secs: 30,
            min_serial_wait_secs: 10,
            log_format: "text".into(),
            repos: vec![RepoConfig {
                name: "pypi".into(),
                format: RepoFormat::Pypi,
                kind: "hosted".into(),
                anonymous_read: true,
                allow_unpublish: false,
                upstreams: Vec::new(),
                ttl_secs: None,
                negative_ttl_secs: None,
                offline: false,
                timeout_secs: None,
            }],
            role: Role::Voter,
            raft_id: 1,
            bootstrap: true,
            cluster_name: "hoard".into(),
            grpc_public: None,
            raft: RaftTuning::default(),
            partition_file: None,
            upstreams: Vec::new(),
            primary_url: None,
            replica_writes: ReplicaWrites::Redirect,
            fetch_concurrency: 8,
            users: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub name: String,
    pub format: RepoFormat,
    #[serde(default = "hosted")]
    pub kind: String,
    #[serde(default = "yes")]
    pub anonymous_read: bool,
    /// npm: let an admin unpublish versions (recorded as events).
    #[serde(default)]
    pub allow_unpublish: bool,
    /// A mirror's upstream base URLs, in order (for PyPI the Simple API
    /// root, e.g. `https://index.example/simple/`).
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// A mirror's freshness: how long a page is served without asking.
    pub ttl_secs: Option<u64>,
    /// How long a mirror remembers that no upstream has a project.
    pub negative_ttl_secs: Option<u64>,
    /// A mirror that never contacts its upstreams.
    #[serde(default)]
    pub offline: bool,
    /// The bound on one upstream request.
    pub timeout_secs: Option<u64>,
}

fn hosted() -> String {
    "hosted".into()
}

fn yes() -> bool {
    true
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl NodeConfig {
    /// Checks what serde cannot: names, URLs and ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        if self.node_id.is_empty() {
            return invalid("node_id must not be empty".into());
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return invalid(format!(
                    "public_url {url:?} must start with http:// or https://"
                ));
            }
        }
        if self.max_upload_bytes == 0 || self.body_timeout_secs == 0 {
            return invalid("max_upload_bytes and body_timeout_secs must be positive".into());
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return invalid(format!(
                "log_format {:?}: use text or json",
                self.log_format
            ));
        }
        for repo in &self.repos {
            self.repo_settings(repo)?;
        }
        if self.role == Role::Replica && self.upstreams.is_empty() {
            return invalid(
                "a replica needs `upstreams`: the gRPC addresses of nodes to follow".into(),
            );
        }
        self.raft
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if self.raft_id == 0 {
            return invalid("raft_id must be positive".into());
        }
        if self.fetch_concurrency == 0 {
            return invalid("fetch_concurrency must be positive".into());
        }
        Ok(())
    }

    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.http_listen))
            .trim_end_matches('/')
            .to_owned()
    }

    /// Where other nodes reach this node's gRPC services.
    pub fn grpc_public(&self) -> String {
        self.grpc_public
            .clone()
            .unwrap_or_else(|| self.grpc_listen.to_string())
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_secs)
    }

    pub fn min_serial_wait(&self) -> Duration {
        Duration::from_secs(self.min_serial_wait_secs)
    }

    pub fn repo_settings(
        &self,
        repo: &RepoConfig,
    ) -> Result<(RepoName, RepoSettings), ConfigError> {
        let name: RepoName = repo
            .name
            .parse()
            .map_err(|e| ConfigError::Invalid(format!("{e}")))?;
        let invalid = |msg: String| ConfigError::Invalid(format!("repository {name}: {msg}"));
        let mirror_only = !repo.upstreams.is_empty()
            || repo.ttl_secs.is_some()
            || repo.negative_ttl_secs.is_some()
            || repo.offline
            || repo.timeout_secs.is_some();
        let kind = match repo.kind.as_str() {
            "hosted" if mirror_only => {
                return Err(invalid(
                    "upstreams, ttl_secs, negative_ttl_secs, offline and timeout_secs \
                     are settings of a mirror (kind = \"mirror\")"
                        .into(),
                ))
            }
            "hosted" => RepoKind::Hosted,
            "mirror" if repo.format == RepoFormat::Npm => {
                return Err(invalid(
                    "npm mirrors are not supported yet (PyPI mirrors are)".into(),
                ))
            }
            "mirror" => {
                for url in &repo.upstreams {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(invalid(format!(
                            "upstream {url:?} must start with http:// or https://"
                        )));
                    }
                }
                let mut m = MirrorSettings::new(
                    repo.upstreams
                        .iter()
                        .map(|u| format!("{}/", u.trim_end_matches('/')))
                        .collect(),
                );
                m.ttl_secs = repo.ttl_secs.unwrap_or(m.ttl_secs);
                m.negative_ttl_secs = repo.negative_ttl_secs.unwrap_or(m.negative_ttl_secs);
                m.timeout_secs = repo.timeout_secs.unwrap_or(m.timeout_secs);
                m.offline = repo.offline;
                if m.timeout_secs == 0 {
                    return Err(invalid("timeout_secs must be positive".into()));
                }
                RepoKind::Mirror(m)
            }
            other => {
                return Err(invalid(format!(
                    "kind {other:?} is not supported yet (use hosted or mirror)"
                )))
            }
        };
        Ok((
            name,
            RepoSettings {
                format: repo.format,
                kind,
                anonymous_read: repo.anonymous_read,
                allow_unpublish: repo.allow_unpublish,
            },
        ))
    }
}
