//! The node's configuration, as plain data. The binary loads it (TOML file
//! plus `HOARD_*` environment variables); everything here has a default,
//! so an empty configuration is a working single-node primary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hoard_cluster::RaftTuning;
use hoard_core::{MirrorSettings, RepoFormat, RepoKind, RepoName, RepoSettings, VirtualSettings};
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
    /// The largest npm publish document accepted (the tarball inside is
    /// base64, about 3/4 of it), in bytes.
    pub max_npm_publish_bytes: u64,
    /// How long to wait for the next bytes of a request body, in seconds.
    pub body_timeout_secs: u64,
    /// How long a request's headers may take to arrive, in seconds; a
    /// client slower than that (slowloris) gets a 408 and is disconnected.
    pub header_timeout_secs: u64,
    /// The most bytes of request headers (431 beyond; at least 8192).
    pub max_header_bytes: usize,
    /// The most request header fields (431 beyond).
    pub max_headers: usize,
    /// The most open connections from one client address (429 beyond).
    pub max_connections_per_ip: usize,
    /// Requests per second per token or user, refilled continuously, with
    /// bursts up to `token_burst` (429 with `Retry-After` beyond). 0: no
    /// limit.
    pub token_rate_per_sec: u32,
    pub token_burst: u32,
    /// How long a request with `X-Hoard-Min-Serial` may wait, in seconds.
    pub min_serial_wait_secs: u64,
    /// The index's (sled's) page cache, in MiB: more keeps more of a large
    /// index in memory, for faster first renders of its pages.
    pub index_cache_mib: u64,
    /// `text` or `json`.
    pub log_format: String,
    /// Repositories to create at start if they do not exist (primary
    /// only). Default: a virtual `pypi` made of a hosted `pypi-local` and
    /// a mirror `pypi-remote`.
    pub repos: Vec<RepoConfig>,
    /// The upstream of the mirror `pypi-remote` when its own `upstreams`
    /// are empty (`hoard serve --pypi-upstream URL`).
    pub pypi_upstream: Option<String>,
    /// Likewise for the mirror `npm-remote` (`--npm-upstream URL`).
    pub npm_upstream: Option<String>,
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
    /// Node-to-node mutual TLS with the cluster CA (changelog, blobs,
    /// Raft). Without it the gRPC listener must be on loopback, unless
    /// `insecure_cluster` is set.
    pub cluster_tls: Option<ClusterTlsConfig>,
    /// Plaintext node-to-node traffic on a non-loopback address: only on a
    /// network that is itself trusted.
    pub insecure_cluster: bool,
    /// HTTPS on the public listener.
    pub tls: Option<HttpsConfig>,
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
    /// For a replica: seconds between two progress lines of a catch-up.
    pub catch_up_log_secs: f64,
    /// Accounts that may `npm login` to get an upload token. There is no
    /// self-registration: a login for any other name is refused.
    pub users: Vec<UserConfig>,
    /// `[blobs]`: where this node keeps blob bytes.
    pub blobs: BlobsConfig,
}

/// `[blobs]`: the data dir's `blobs/` (`kind = "fs"`, the default), or a
/// bucket of an S3-compatible service (`kind = "s3"`). With S3, the
/// credentials come from the environment (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`) or the usual AWS configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlobsConfig {
    pub kind: BlobsKind,
    pub bucket: String,
    /// Put before every key.
    pub prefix: String,
    /// The service's URL; the provider's default when unset.
    pub endpoint: Option<String>,
    pub region: String,
    /// Answer downloads with a 302 to a short-lived presigned URL, so that
    /// the bytes never pass through hoard.
    pub presigned_redirects: bool,
    /// How long a presigned URL stays valid, in seconds.
    pub presigned_ttl_secs: u64,
    /// How long one request to the service may take, in seconds.
    pub timeout_secs: u64,
    /// How often a failed request is tried again (with backoff).
    pub retries: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobsKind {
    Fs,
    S3,
}

impl Default for BlobsConfig {
    fn default() -> Self {
        BlobsConfig {
            kind: BlobsKind::Fs,
            bucket: String::new(),
            prefix: "blobs/".into(),
            endpoint: None,
            region: "us-east-1".into(),
            presigned_redirects: false,
            presigned_ttl_secs: 300,
            timeout_secs: 30,
            retries: 3,
        }
    }
}

impl BlobsConfig {
    /// The S3 backend's settings, when this is one.
    pub fn s3_settings(&self) -> Option<hoard_store::S3Settings> {
        (self.kind == BlobsKind::S3).then(|| hoard_store::S3Settings {
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            timeout: Duration::from_secs(self.timeout_secs),
            retries: self.retries,
        })
    }

    pub fn presigned_ttl(&self) -> Duration {
        Duration::from_secs(self.presigned_ttl_secs)
    }

    /// Opens the node's blob store as configured: the data dir's `tmp/`
    /// for staging, and the blobs in `blobs/` or the bucket.
    pub fn open_store(
        &self,
        data_dir: &std::path::Path,
    ) -> Result<hoard_store::BlobStore, hoard_store::StoreError> {
        match self.s3_settings() {
            None => hoard_store::BlobStore::open(data_dir),
            Some(s3) => hoard_store::BlobStore::with_backend(
                data_dir,
                std::sync::Arc::new(hoard_store::S3Blobs::new(&s3)?),
            ),
        }
    }
}

/// `[cluster_tls]`: files from `hoard cert init` and `hoard cert issue`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTlsConfig {
    /// The cluster CA's certificate.
    pub ca: PathBuf,
    /// This node's certificate, whose common name is its node id.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// If not empty, only these node ids may connect or be connected to:
    /// remove a node from it (and SIGHUP) to retire its certificate.
    #[serde(default)]
    pub allowed_nodes: Vec<String>,
}

/// `[tls]`: the public listener's certificate chain and key (PEM),
/// re-read on SIGHUP.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Hex sha256 of the password (`printf %s PASSWORD | sha256sum`).
    /// Recorded in the index on first start, and replaced there by an
    /// argon2id hash at the user's first sign-in; prefer `hoard user add`.
    pub password_sha256: String,
    #[serde(default)]
    pub admin: bool,
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

/// The largest index cache a node takes (1 TiB): a bound that keeps the
/// size in bytes from overflowing, far above any machine's memory.
const MAX_INDEX_CACHE_MIB: u64 = 1 << 20;

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: "hoard-1".into(),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 4040)),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 4041)),
            public_url: None,
            data_dir: PathBuf::from("./hoard-data"),
            max_upload_bytes: 1 << 30,
            max_npm_publish_bytes: 256 << 20,
            body_timeout_secs: 30,
            header_timeout_secs: 30,
            max_header_bytes: 64 << 10,
            max_headers: 100,
            max_connections_per_ip: 256,
            token_rate_per_sec: 500,
            token_burst: 1000,
            min_serial_wait_secs: 10,
            index_cache_mib: hoard_store::DEFAULT_INDEX_CACHE_BYTES >> 20,
            log_format: "text".into(),
            repos: RepoConfig::defaults(),
            pypi_upstream: None,
            npm_upstream: None,
            role: Role::Voter,
            raft_id: 1,
            bootstrap: true,
            cluster_name: "hoard".into(),
            grpc_public: None,
            raft: RaftTuning::default(),
            cluster_tls: None,
            insecure_cluster: false,
            tls: None,
            partition_file: None,
            upstreams: Vec::new(),
            primary_url: None,
            replica_writes: ReplicaWrites::Redirect,
            fetch_concurrency: 8,
            catch_up_log_secs: 5.0,
            users: Vec::new(),
            blobs: BlobsConfig::default(),
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
    /// A virtual repository's members, in order of priority.
    #[serde(default)]
    pub members: Vec<String>,
    /// The hosted member that uploads to a virtual repository go to.
    pub upload_to: Option<String>,
    /// A virtual repository: merge a hosted project with mirrored ones of
    /// the same name, instead of letting the hosted one hide them.
    #[serde(default)]
    pub merge_mirrored: bool,
}

impl RepoConfig {
    fn new(name: &str, format: RepoFormat, kind: &str) -> RepoConfig {
        RepoConfig {
            name: name.into(),
            format,
            kind: kind.into(),
            anonymous_read: true,
            allow_unpublish: false,
            upstreams: Vec::new(),
            ttl_secs: None,
            negative_ttl_secs: None,
            offline: false,
            timeout_secs: None,
            members: Vec::new(),
            upload_to: None,
            merge_mirrored: false,
        }
    }

    /// For each format `f` (`pypi`, `npm`): `f-local` (hosted), `f-remote`
    /// (a mirror, of `pypi_upstream` or `npm_upstream`) and `f`, the
    /// virtual repository of both that clients use.
    fn defaults() -> Vec<RepoConfig> {
        [("pypi", RepoFormat::Pypi), ("npm", RepoFormat::Npm)]
            .into_iter()
            .flat_map(|(name, format)| {
                let local = format!("{name}-local");
                let remote = format!("{name}-remote");
                let mut combined = RepoConfig::new(name, format, "virtual");
                combined.members = vec![local.clone(), remote.clone()];
                combined.upload_to = Some(local.clone());
                [
                    RepoConfig::new(&local, format, "hosted"),
                    RepoConfig::new(&remote, format, "mirror"),
                    combined,
                ]
            })
            .collect()
    }
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
        if self.blobs.kind == BlobsKind::S3 {
            if self.blobs.bucket.is_empty() {
                return invalid("[blobs] kind = \"s3\" needs a bucket".into());
            }
            if self.blobs.timeout_secs == 0 || self.blobs.presigned_ttl_secs == 0 {
                return invalid(
                    "[blobs] timeout_secs and presigned_ttl_secs must be positive".into(),
                );
            }
            if let Some(url) = &self.blobs.endpoint {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return invalid(format!(
                        "[blobs] endpoint {url:?} must start with http:// or https://"
                    ));
                }
            }
        } else if self.blobs.presigned_redirects {
            return invalid(
                "[blobs] presigned_redirects needs kind = \"s3\": files on disk are served by hoard"
                    .into(),
            );
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return invalid(format!(
                    "public_url {url:?} must start with http:// or https://"
                ));
            }
        }
        if !(1..=MAX_INDEX_CACHE_MIB).contains(&self.index_cache_mib) {
            return invalid(format!(
                "index_cache_mib must be between 1 and {MAX_INDEX_CACHE_MIB}, not {}",
                self.index_cache_mib
            ));
        }
        if self.max_upload_bytes == 0 || self.body_timeout_secs == 0 {
            return invalid("max_upload_bytes and body_timeout_secs must be positive".into());
        }
        if self.max_npm_publish_bytes == 0
            || self.header_timeout_secs == 0
            || self.max_connections_per_ip == 0
            || self.max_headers == 0
        {
            return invalid(
                "max_npm_publish_bytes, header_timeout_secs, max_headers and max_connections_per_ip must be positive"
                    .into(),
            );
        }
        if self.cluster_tls.is_none()
            && !self.insecure_cluster
            && !self.grpc_listen.ip().is_loopback()
        {
            return invalid(format!(
                "grpc_listen {} is not a loopback address, and node-to-node traffic has no TLS: \
                 configure [cluster_tls] (see `hoard cert init` and `hoard cert issue`), or set \
                 insecure_cluster = true on a network you trust",
                self.grpc_listen
            ));
        }
        if self.max_header_bytes < 8192 {
            return invalid(format!(
                "max_header_bytes is {}: it must be at least 8192",
                self.max_header_bytes
            ));
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
        if !(self.catch_up_log_secs.is_finite() && self.catch_up_log_secs > 0.0) {
            return invalid("catch_up_log_secs must be a positive number of seconds".into());
        }
        if self.fetch_concurrency == 0 {
            return invalid("fetch_concurrency must be positive".into());
        }
        Ok(())
    }

    /// Gives `pypi_upstream` to the mirror `pypi-remote` and `npm_upstream`
    /// to `npm-remote`, each if it has no upstreams of its own.
    pub fn apply_default_upstreams(&mut self) {
        for (name, url) in [
            ("pypi-remote", self.pypi_upstream.clone()),
            ("npm-remote", self.npm_upstream.clone()),
        ] {
            let Some(url) = url else { continue };
            for repo in &mut self.repos {
                if repo.name == name && repo.kind == "mirror" && repo.upstreams.is_empty() {
                    repo.upstreams = vec![url.clone()];
                }
            }
        }
    }

    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| {
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{}", self.http_listen)
            })
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

    pub fn cluster_tls_files(&self) -> Option<hoard_cluster::ClusterTlsFiles> {
        self.cluster_tls
            .as_ref()
            .map(|t| hoard_cluster::ClusterTlsFiles {
                ca: t.ca.clone(),
                cert: t.cert.clone(),
                key: t.key.clone(),
                allowed_nodes: t.allowed_nodes.clone(),
            })
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }

    pub fn min_serial_wait(&self) -> Duration {
        Duration::from_secs(self.min_serial_wait_secs)
    }

    /// A virtual repository's members: configured repositories of its
    /// format that are not virtual themselves; `upload_to` one of the
    /// hosted ones.
    fn virtual_settings(
        &self,
        name: &RepoName,
        repo: &RepoConfig,
    ) -> Result<VirtualSettings, ConfigError> {
        let invalid = |msg: String| ConfigError::Invalid(format!("repository {name}: {msg}"));
        if repo.members.is_empty() {
            return Err(invalid("a virtual repository needs members".into()));
        }
        let member_kind = |member: &str| {
            self.repos
                .iter()
                .find(|r| r.name == member)
                .map(|r| (r.format, r.kind.as_str()))
        };
        let mut members = Vec::new();
        for member in &repo.members {
            match member_kind(member) {
                None => {
                    return Err(invalid(format!(
                        "member {member:?} is not a configured repository"
                    )))
                }
                Some((format, _)) if format != repo.format => {
                    return Err(invalid(format!(
                        "member {member:?} is not a {:?} repository",
                        repo.format
                    )))
                }
                Some((_, "virtual")) => {
                    return Err(invalid(format!("member {member:?} is virtual itself")))
                }
                Some(_) => {}
            }
            let member: RepoName = member.parse().map_err(|e| invalid(format!("{e}")))?;
            if members.contains(&member) {
                return Err(invalid(format!("member {member} is listed twice")));
            }
            members.push(member);
        }
        let upload_to = match &repo.upload_to {
            None => None,
            Some(target) if !repo.members.contains(target) => {
                return Err(invalid(format!(
                    "upload_to {target:?} is not one of its members"
                )))
            }
            Some(target) if member_kind(target).map(|(_, k)| k) != Some("hosted") => {
                return Err(invalid(format!(
                    "upload_to {target:?} is not a hosted repository"
                )))
            }
            Some(target) => Some(target.parse().map_err(|e| invalid(format!("{e}")))?),
        };
        Ok(VirtualSettings {
            members,
            upload_to,
            merge_mirrored: repo.merge_mirrored,
        })
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
            _ if repo.kind != "virtual"
                && (!repo.members.is_empty()
                    || repo.upload_to.is_some()
                    || repo.merge_mirrored) =>
            {
                return Err(invalid(
                    "members, upload_to and merge_mirrored are settings of a virtual \
                     repository (kind = \"virtual\")"
                        .into(),
                ))
            }
            "hosted" if mirror_only => {
                return Err(invalid(
                    "upstreams, ttl_secs, negative_ttl_secs, offline and timeout_secs \
                     are settings of a mirror (kind = \"mirror\")"
                        .into(),
                ))
            }
            "hosted" => RepoKind::Hosted,
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
            "virtual" if mirror_only => {
                return Err(invalid(
                    "upstreams and the freshness settings belong to its mirror members".into(),
                ))
            }
            "virtual" => RepoKind::Virtual(self.virtual_settings(&name, repo)?),
            other => {
                return Err(invalid(format!(
                    "kind {other:?} is unknown (use hosted, mirror or virtual)"
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

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str, kind: &str) -> RepoConfig {
        RepoConfig::new(name, RepoFormat::Pypi, kind)
    }

    #[test]
    fn the_defaults_are_a_virtual_pypi_and_npm_each_of_a_hosted_and_a_mirror_repository() {
        let mut config = NodeConfig::default();
        config.validate().unwrap();
        let kinds: Vec<(&str, &str)> = config
            .repos
            .iter()
            .map(|r| (r.name.as_str(), r.kind.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("pypi-local", "hosted"),
                ("pypi-remote", "mirror"),
                ("pypi", "virtual"),
                ("npm-local", "hosted"),
                ("npm-remote", "mirror"),
                ("npm", "virtual")
            ]
        );
        assert_eq!(config.repos[5].format, RepoFormat::Npm);
        config.pypi_upstream = Some("http://index.test/simple/".into());
        config.npm_upstream = Some("http://registry.test/".into());
        config.apply_default_upstreams();
        assert_eq!(config.repos[1].upstreams, ["http://index.test/simple/"]);
        assert_eq!(config.repos[4].upstreams, ["http://registry.test/"]);
        config.validate().unwrap();
    }

    #[test]
    fn an_index_cache_of_zero_or_past_a_tebibyte_is_refused() {
        for (mib, ok) in [
            (0, false),
            (1, true),
            (8, true),
            (1 << 20, true),
            (1 << 44, false),
        ] {
            let config = NodeConfig {
                index_cache_mib: mib,
                ..NodeConfig::default()
            };
            let result = config.validate();
            assert_eq!(result.is_ok(), ok, "{mib}: {result:?}");
            if let Err(e) = result {
                assert!(e.to_string().contains("index_cache_mib"), "{e}");
            }
        }
    }

    fn with(repos: Vec<RepoConfig>) -> NodeConfig {
        NodeConfig {
            repos,
            ..NodeConfig::default()
        }
    }

    fn refusal(repos: Vec<RepoConfig>) -> String {
        with(repos).validate().unwrap_err().to_string()
    }

    #[test]
    fn mirrors_get_their_defaults_and_need_http_upstreams() {
        let mut remote = repo("remote", "mirror");
        remote.upstreams = vec!["http://index.test/simple".into()];
        remote.ttl_secs = Some(5);
        let config = with(vec![remote.clone()]);
        let (_, settings) = config.repo_settings(&remote).unwrap();
        let RepoKind::Mirror(m) = settings.kind else {
            panic!("not a mirror: {settings:?}");
        };
        assert_eq!(m.upstreams, ["http://index.test/simple/"]);
        assert_eq!(
            (m.ttl_secs, m.negative_ttl_secs, m.timeout_secs),
            (5, 60, 30)
        );

        remote.upstreams = vec!["ftp://index.test/".into()];
        assert!(refusal(vec![remote]).contains("must start with http"));
        let mut hosted = repo("local", "hosted");
        hosted.offline = true;
        assert!(refusal(vec![hosted]).contains("settings of a mirror"));
    }

    #[test]
    fn virtual_members_must_be_configured_non_virtual_repositories_of_its_format() {
        let local = repo("local", "hosted");
        let mut remote = repo("remote", "mirror");
        remote.upstreams = vec!["http://index.test/simple/".into()];
        let mut all = repo("all", "virtual");
        all.members = vec!["local".into(), "remote".into()];
        all.upload_to = Some("local".into());
        with(vec![local.clone(), remote.clone(), all.clone()])
            .validate()
            .unwrap();

        type Change = Box<dyn Fn(&mut RepoConfig)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|v| v.members.clear()), "needs members"),
            (
                Box::new(|v| v.members.push("nope".into())),
                "not a configured",
            ),
            (Box::new(|v| v.members.push("local".into())), "listed twice"),
            (Box::new(|v| v.members.push("all".into())), "virtual itself"),
            (
                Box::new(|v| v.upload_to = Some("remote".into())),
                "not a hosted",
            ),
            (
                Box::new(|v| v.upload_to = Some("elsewhere".into())),
                "not one of its members",
            ),
            (Box::new(|v| v.ttl_secs = Some(1)), "mirror members"),
        ];
        for (change, expected) in cases {
            let mut v = all.clone();
            change(&mut v);
            let err = refusal(vec![local.clone(), remote.clone(), v]);
            assert!(err.contains(expected), "{expected}: {err}");
        }
        let mut hosted = repo("h", "hosted");
        hosted.members = vec!["local".into()];
        assert!(refusal(vec![local, hosted]).contains("settings of a virtual"));
    }
}
