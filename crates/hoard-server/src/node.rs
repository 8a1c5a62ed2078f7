//! A node's shared state and its start-up: opening the store, the admin
//! token, the configured repositories, and who a request comes from.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use hoard_cluster::{
    ClusterError, ClusterView, Committed, Contact, Epoch, Follower, FollowerConfig, Net, NodeInfo,
    NodeRoleKind, RaftNode, RaftNodeConfig, ReplicationSource, WriteError, Writer,
};
use hoard_core::{Change, Event, Perm, RepoKind, RepoName, Serial, Sha256, TokenRecord};
use hoard_store::{BlobStore, Index, Rejection, StagedBlob, StoreError};
use http::HeaderMap;
use tokio::sync::watch;

use crate::config::{ConfigError, NodeConfig, Role};
use crate::error::ApiError;
use crate::forward::ProxyClient;
use crate::keyed_lock::KeyedLocks;
use crate::metrics::Metrics;
use crate::page_cache::PageCache;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("the upstream client: {0}")]
    Upstream(#[from] hoard_mirror::UpstreamError),
    #[error("recording the configured repositories: {0}")]
    Write(#[from] WriteError),
}

/// How this node changes its index.
pub enum NodeRole {
    /// A member of the Raft group: writes when it is the leader.
    Voter { raft: Arc<RaftNode>, writer: Writer },
    /// Applies the changelog of an upstream.
    Replica(Arc<Follower>),
}

/// How long a starting voter waits for a leader before it serves anyway
/// (writes get 503 until one is elected).
const LEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct Node {
    pub config: NodeConfig,
    pub index: Arc<Index>,
    pub blobs: BlobStore,
    pub role: NodeRole,
    applied: watch::Receiver<Serial>,
    primary_url: watch::Receiver<Option<String>>,
    admin_token_hash: Sha256,
    pub admin_token_path: PathBuf,
    pub started: Instant,
    /// Writes of one PyPI file, or of one npm package, take turns (see
    /// `pypi::upload` and `npm::publish`).
    pub upload_locks: KeyedLocks,
    /// Rendered simple pages by serial.
    pub page_cache: PageCache,
    pub metrics: Metrics,
    /// For a replica in proxy mode: connections to the primary.
    pub proxy_client: std::sync::OnceLock<ProxyClient>,
    /// The cluster id and epoch of this node's history, and whether a
    /// newer epoch fenced it.
    pub epoch: Arc<Epoch>,
    /// The node-to-node network (connections, the fault layer).
    pub net: Net,
    /// Mirror repositories' upstream client, freshness and fills.
    pub mirror: crate::mirror::MirrorState,
    /// Set when this node must restart in place: a forced promotion or a
    /// rejoin changes what it is, and takes effect at the next start.
    restart: watch::Sender<bool>,
}

/// Who made a request, once their token checked out.
#[derive(Clone, Debug)]
pub enum Principal {
    /// The holder of this node's `admin-token` file.
    NodeAdmin,
    Token(TokenRecord),
}

impl Principal {
    pub fn allows(&self, repo: &RepoName, needed: Perm) -> bool {
        match self {
            Principal::NodeAdmin => true,
            Principal::Token(t) => t.allows(repo, needed),
        }
    }

    /// Whether this principal administers the whole node.
    pub fn is_global_admin(&self) -> bool {
        match self {
            Principal::NodeAdmin => true,
            Principal::Token(t) => t.perm == Perm::Admin && t.repo.is_none(),
        }
    }

    /// The actor recorded in events made by this principal.
    pub fn actor(&self) -> String {
        match self {
            Principal::NodeAdmin => "admin".into(),
            Principal::Token(t) => t.label.clone(),
        }
    }
}

/// A new random secret token. Only its hash is ever stored.
pub fn generate_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "hoard_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

pub fn now_us() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64
}

impl Node {
    /// Opens the data dir (creating it on first start) and starts the
    /// node's role: a Raft voter or a replica follower. The configured
    /// repositories are recorded by [`Node::settle`], once a leader is known.
    pub async fn open(config: NodeConfig) -> Result<Arc<Node>, NodeError> {
        config.validate()?;
        let data = config.data_dir.clone();
        std::fs::create_dir_all(&data).map_err(|source| StoreError::Io {
            context: format!("create data dir {}", data.display()),
            source,
        })?;
        let index = Arc::new(Index::open(&data.join("index"))?);
        let blobs = BlobStore::open(&data)?;
        let admin_token_path = data.join("admin-token");
        let admin_token_hash = load_or_create_admin_token(&admin_token_path)?;
        let net = Net::new(config.grpc_public(), config.partition_file.clone());
        let epoch = Epoch::open(
            &data,
            Contact {
                grpc_addr: config.grpc_public(),
                http_url: config.public_url(),
            },
        )?;
        // A forced promotion or a rejoin made this node a voter, whatever
        // its configuration says.
        let voter_id = epoch.voter_id();
        let role = if voter_id.is_some() {
            Role::Voter
        } else {
            config.role
        };
        let (role, applied, primary_url) = match role {
            Role::Voter => {
                let raft = RaftNode::start(
                    RaftNodeConfig {
                        id: voter_id.unwrap_or(config.raft_id),
                        info: NodeInfo {
                            grpc_addr: config.grpc_public(),
                            http_url: config.public_url(),
                        },
                        cluster: config.cluster_name.clone(),
                        tuning: config.raft.clone(),
                        snapshot_dir: data.join("snapshots"),
                        bootstrap: config.bootstrap && voter_id.is_none(),
                    },
                    index.clone(),
                    blobs.clone(),
                    epoch.clone(),
                    net.clone(),
                )
                .await?;
                let applied = raft.applied();
                let url = leader_url_watch(raft.view());
                let writer = Writer::new(raft.clone(), blobs.clone());
                (NodeRole::Voter { raft, writer }, applied, url)
            }
            Role::Replica => {
                let follower = Follower::new(
                    FollowerConfig {
                        node_id: config.node_id.clone(),
                        upstreams: config.upstreams.clone(),
                        fetch_concurrency: config.fetch_concurrency,
                    },
                    index.clone(),
                    blobs.clone(),
                    epoch.clone(),
                    net.clone(),
                )?;
                let url = match &config.primary_url {
                    Some(url) => watch::channel(Some(url.trim_end_matches('/').to_owned())).1,
                    None => follower.primary_url(),
                };
                (NodeRole::Replica(follower.clone()), follower.applied(), url)
            }
        };
        let node = Arc::new(Node {
            config,
            index,
            blobs,
            role,
            applied,
            primary_url,
            admin_token_hash,
            admin_token_path,
            started: Instant::now(),
            upload_locks: KeyedLocks::default(),
            page_cache: PageCache::default(),
            metrics: Metrics::default(),
            proxy_client: std::sync::OnceLock::new(),
            epoch,
            net,
            mirror: crate::mirror::MirrorState::new()?,
            restart: watch::Sender::new(false),
        });
        Ok(node)
    }

    /// Waits (bounded) for a leader; on the leader, records the configured
    /// repositories. Call it once the gRPC services run: the other voters
    /// must reach this node for an election.
    pub async fn settle(&self) -> Result<(), NodeError> {
        if let NodeRole::Voter { raft, .. } = &self.role {
            let joining = matches!(
                self.epoch.pending(),
                Some(hoard_cluster::PendingStep::Join { .. })
            );
            if (!self.config.bootstrap || joining) && raft.view().borrow().voters.is_empty() {
                tracing::info!("not a member of a Raft group yet: waiting for `hoard members add`");
                return Ok(());
            }
            match raft.wait_for_leader(LEADER_WAIT).await {
                Some(_) if raft.view().borrow().role == NodeRoleKind::Leader => {
                    // A restarted voter can briefly believe it still leads;
                    // a barrier or a write then fails, and that is not fatal:
                    // whoever leads has recorded the repositories.
                    let recorded = match raft.barrier().await {
                        Ok(()) => self.ensure_configured_repos().await,
                        Err(e) => Err(NodeError::Cluster(e)),
                    };
                    if let Err(e) = recorded {
                        tracing::warn!(error = %e, "could not record the configured repositories as leader");
                    }
                }
                Some(leader) => tracing::info!(leader, "following the elected leader"),
                None => tracing::warn!("no leader elected yet; writes get 503 until one is"),
            }
        }
        Ok(())
    }

    /// The Raft group member, on a voter.
    pub fn raft(&self) -> Option<&Arc<RaftNode>> {
        match &self.role {
            NodeRole::Voter { raft, .. } => Some(raft),
            NodeRole::Replica(_) => None,
        }
    }

    /// The cluster as this node sees it now; `None` on a replica.
    pub fn cluster_view(&self) -> Option<ClusterView> {
        match &self.role {
            NodeRole::Voter { raft, .. } => Some(raft.view().borrow().clone()),
            NodeRole::Replica(_) => None,
        }
    }

    /// This node's role right now: it changes with elections.
    pub fn role_kind(&self) -> NodeRoleKind {
        match &self.role {
            NodeRole::Voter { raft, .. } => raft.view().borrow().role,
            NodeRole::Replica(_) => NodeRoleKind::Replica,
        }
    }

    /// Whether this node is the leader, the one that accepts writes.
    pub fn is_leader(&self) -> bool {
        self.role_kind() == NodeRoleKind::Leader && self.epoch.fenced().is_none()
    }

    /// The primary's public URL, if known: where writes go. A node that
    /// a newer epoch fenced sends them to that epoch's leader.
    pub fn primary_url(&self) -> Option<String> {
        if let Some(f) = self.epoch.fenced() {
            return Some(f.contact_url);
        }
        self.primary_url.borrow().clone()
    }

    /// Asks the binary to stop this node gracefully and start it again
    /// in place, with the same arguments.
    pub fn request_restart(&self, why: &str) {
        tracing::warn!("restarting in place: {why}");
        self.restart.send_replace(true);
    }

    /// Becomes true when a restart is requested.
    pub fn restart_requested(&self) -> watch::Receiver<bool> {
        self.restart.subscribe()
    }

    /// What this node offers to replicas that follow it.
    pub fn replication_source(&self) -> ReplicationSource {
        ReplicationSource {
            node_id: self.config.node_id.clone(),
            index: self.index.clone(),
            blobs: self.blobs.clone(),
            applied: self.applied.clone(),
            primary_url: self.primary_url.clone(),
            epoch: self.epoch.clone(),
            net: self.net.clone(),
        }
    }

    fn holds_anything(&self, repo: &RepoName) -> Result<bool, NodeError> {
        Ok(!self.index.projects(repo, None)?.is_empty()
            || !self.index.npm_packages(repo, None)?.is_empty())
    }

    async fn ensure_configured_repos(&self) -> Result<(), NodeError> {
        for repo in &self.config.repos {
            let (name, settings) = self.config.repo_settings(repo)?;
            let change = match self.index.repo(&name)? {
                None => Change::RepoCreated {
                    repo: name.clone(),
                    settings,
                },
                // A hosted repository with projects or packages stays hosted:
                // an older node's default `pypi` keeps serving what it holds.
                Some(state)
                    if matches!(state.settings.kind, RepoKind::Hosted)
                        && !matches!(settings.kind, RepoKind::Hosted)
                        && self.holds_anything(&name)? =>
                {
                    tracing::warn!(
                        repo = %name,
                        "this hosted repository holds projects: it stays hosted, not {}",
                        repo.kind
                    );
                    continue;
                }
                Some(state) if state.settings != settings => Change::RepoSettingsChanged {
                    repo: name.clone(),
                    settings,
                },
                Some(_) => continue,
            };
            let serial = self.commit("system", change).await?;
            tracing::info!(repo = %name, %serial, "configured repository recorded");
        }
        Ok(())
    }

    /// The serial that this node has applied and made durable.
    pub fn applied_serial(&self) -> Serial {
        *self.applied.borrow()
    }

    /// Waits until this node has applied `serial`, for at most `wait`.
    pub async fn wait_for_serial(&self, serial: Serial, wait: std::time::Duration) -> bool {
        let mut rx = self.applied.clone();
        tokio::time::timeout(wait, rx.wait_for(|s| *s >= serial))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Commits one change as `actor`, returning its serial once committed.
    pub async fn commit(&self, actor: &str, change: Change) -> Result<Serial, WriteError> {
        Ok(self
            .commit_with_blobs(actor, Vec::new(), change)
            .await?
            .serial)
    }

    /// Makes `blobs` durable, then commits `change`, through the writer.
    pub async fn commit_with_blobs(
        &self,
        actor: &str,
        blobs: Vec<StagedBlob>,
        change: Change,
    ) -> Result<Committed, WriteError> {
        let event = Event {
            actor: actor.to_owned(),
            time_us: now_us(),
            change,
        };
        match &self.role {
            NodeRole::Voter { writer, .. } => writer.commit(blobs, event).await,
            NodeRole::Replica(_) => Err(WriteError::NotLeader {
                leader_url: self.primary_url(),
            }),
        }
    }

    /// Creates a token, returning its secret (shown once, never stored).
    pub async fn create_token(
        &self,
        actor: &str,
        repo: Option<RepoName>,
        perm: Perm,
        label: String,
    ) -> Result<String, WriteError> {
        if let Some(repo) = &repo {
            if self.index.repo(repo)?.is_none() {
                return Err(WriteError::Rejected(Rejection::RepoMissing(repo.clone())));
            }
        }
        let secret = generate_token();
        let token = TokenRecord {
            hash: Sha256::of(secret.as_bytes()),
            repo,
            perm,
            label,
        };
        self.commit(actor, Change::TokenCreated { token }).await?;
        Ok(secret)
    }

    /// Resolves the request's credentials: `Authorization: Bearer <token>`,
    /// or Basic auth with the token as password (twine sends user
    /// `__token__`). `Ok(None)` when the request carries none.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Principal>, ApiError> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Ok(None);
        };
        let value = value
            .to_str()
            .map_err(|_| ApiError::bad_request("the Authorization header is not valid text"))?;
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        let secret = if scheme.eq_ignore_ascii_case("bearer") {
            rest.trim().to_owned()
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .map_err(|_| ApiError::bad_request("malformed Basic credentials"))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| ApiError::bad_request("malformed Basic credentials"))?;
            match decoded.split_once(':') {
                Some((_user, password)) => password.to_owned(),
                None => return Err(ApiError::bad_request("malformed Basic credentials")),
            }
        } else {
            return Err(ApiError::unauthorized(format!(
                "unsupported authorization scheme {scheme:?}; use a token"
            )));
        };
        if secret.is_empty() {
            return Ok(None);
        }
        let hash = Sha256::of(secret.as_bytes());
        if hash == self.admin_token_hash {
            return Ok(Some(Principal::NodeAdmin));
        }
        match self.index.token(&hash)? {
            Some(state) => Ok(Some(Principal::Token(state.record))),
            None => Err(ApiError::forbidden("invalid or revoked token")),
        }
    }

    /// Requires credentials that grant `needed` on `repo`.
    pub fn require(
        &self,
        headers: &HeaderMap,
        repo: &RepoName,
        needed: Perm,
    ) -> Result<Principal, ApiError> {
        match self.authenticate(headers)? {
            None => Err(ApiError::unauthorized(format!(
                "{needed} access to {repo} needs a token"
            ))),
            Some(p) if p.allows(repo, needed) => Ok(p),
            Some(_) => Err(ApiError::forbidden(format!(
                "this token does not grant {needed} access to {repo}"
            ))),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }
}

/// The leader's public URL, following the cluster view.
fn leader_url_watch(mut view: watch::Receiver<ClusterView>) -> watch::Receiver<Option<String>> {
    let (tx, rx) = watch::channel(view.borrow().leader_url.clone());
    tokio::spawn(async move {
        while view.changed().await.is_ok() {
            let url = view.borrow_and_update().leader_url.clone();
            tx.send_if_modified(|u| {
                let changed = *u != url;
                *u = url;
                changed
            });
        }
    });
    rx
}

/// Reads this node's admin token hash, writing a new token (mode 0600) on
/// first start. The token stays on this node; it is not in the changelog.
fn load_or_create_admin_token(path: &Path) -> Result<Sha256, StoreError> {
    match std::fs::read_to_string(path) {
        Ok(secret) => Ok(Sha256::of(secret.trim().as_bytes())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = generate_token();
            hoard_store::write_file_durable(path, format!("{secret}\n").as_bytes(), 0o600)?;
            tracing::info!(path = %path.display(), "wrote a new admin token");
            Ok(Sha256::of(secret.as_bytes()))
        }
        Err(source) => Err(StoreError::Io {
            context: format!("read {}", path.display()),
            source,
        }),
    }
}
