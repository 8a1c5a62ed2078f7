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
use hoard_core::{
    Change, Event, Perm, RepoKind, RepoName, Serial, Sha256, TokenRecord, UserRecord,
};
use hoard_store::{BlobStore, Index, Rejection, StagedBlob, StoreError};
use http::HeaderMap;
use tokio::sync::watch;

pub use crate::auth::Principal;
use crate::auth::{hash_password, is_legacy_hash, legacy_password_hash, PasswordCache};
use crate::config::{ConfigError, NodeConfig, Role};
use crate::error::ApiError;
use crate::forward::ProxyClient;
use crate::keyed_lock::KeyedLocks;
use crate::limits::{ConnectionLimits, RateLimiter};
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
    #[error(transparent)]
    Https(#[from] crate::https::HttpsError),
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
    /// The web UI's repository counts and sizes, by serial.
    pub repo_stats: crate::ui::RepoStatsCache,
    pub metrics: Metrics,
    /// For a replica in proxy mode: connections to the primary.
    pub proxy_client: std::sync::OnceLock<ProxyClient>,
    /// The cluster as this node last surveyed it (`/+status/cluster`).
    pub survey: crate::survey::SurveyCache,
    /// The cluster id and epoch of this node's history, and whether a
    /// newer epoch fenced it.
    pub epoch: Arc<Epoch>,
    /// The node-to-node network (connections, the fault layer).
    pub net: Net,
    /// The followers of this node's changelog.
    pub subscribers: Arc<hoard_cluster::Subscribers>,
    /// Mirror repositories' upstream client, freshness and fills.
    pub mirror: crate::mirror::MirrorState,
    /// Set when this node must restart in place: a forced promotion or a
    /// rejoin changes what it is, and takes effect at the next start.
    restart: watch::Sender<bool>,
    /// Passwords checked since start (see [`PasswordCache`]).
    passwords: PasswordCache,
    /// Open connections per client address.
    pub connections: Arc<ConnectionLimits>,
    /// The public listener's TLS, when configured.
    pub https: Option<Arc<crate::https::Https>>,
    /// Requests per second per token or user.
    rate: RateLimiter,
    /// Web UI sign-ins per user name: password guessing is slow work.
    pub sign_in_rate: RateLimiter,
    /// Users who signed in with a password that still has a legacy sha256
    /// hash, with that password: a task replaces the hash (on the leader).
    password_upgrades: tokio::sync::mpsc::UnboundedSender<(UserRecord, String)>,
}

/// Web UI sign-in attempts per user name: a burst, then one every 10 s.
const SIGN_IN_BURST: u32 = 10;
const SIGN_INS_PER_MINUTE: u32 = 6;

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
        let index = Arc::new(Index::open_with_cache(
            &data.join("index"),
            config.index_cache_mib << 20,
        )?);
        let blobs = config.blobs.open_store(&data)?;
        tracing::info!(blobs = %blobs.describe(), "blob store");
        // For the store metrics: a listing of the blobs, off the start-up
        // path (it is long on a large store).
        let counting = blobs.clone();
        tokio::spawn(async move {
            match counting.count().await {
                Ok((count, bytes)) => tracing::info!(count, bytes, "counted the blob store"),
                Err(e) => tracing::warn!(error = %e, "could not count the blob store"),
            }
        });
        let admin_token_path = data.join("admin-token");
        let admin_token_hash = load_or_create_admin_token(&admin_token_path)?;
        let cluster_tls = match config.cluster_tls_files() {
            Some(files) => Some(hoard_cluster::ClusterTls::load(files)?),
            None => {
                tracing::warn!(
                    grpc = %config.grpc_listen,
                    "node-to-node traffic is plaintext: configure [cluster_tls] for mutual TLS"
                );
                None
            }
        };
        let net = Net::new(
            config.grpc_public(),
            config.partition_file.clone(),
            cluster_tls,
        );
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
                            name: Some(config.node_id.clone()),
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
                        http_url: config.public_url(),
                        upstreams: config.upstreams.clone(),
                        fetch_concurrency: config.fetch_concurrency,
                        progress_every: std::time::Duration::from_secs_f64(
                            config.catch_up_log_secs,
                        ),
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
        let https = config
            .tls
            .clone()
            .map(crate::https::Https::load)
            .transpose()?;
        let (password_upgrades, upgrades) = tokio::sync::mpsc::unbounded_channel();
        let config_rate = (config.token_rate_per_sec, config.token_burst);
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
            repo_stats: Default::default(),
            metrics: Metrics::default(),
            proxy_client: std::sync::OnceLock::new(),
            survey: Default::default(),
            epoch,
            net,
            subscribers: Arc::default(),
            mirror: crate::mirror::MirrorState::new()?,
            restart: watch::Sender::new(false),
            passwords: PasswordCache::default(),
            connections: Arc::default(),
            https,
            rate: RateLimiter::new(config_rate.0, config_rate.1),
            sign_in_rate: RateLimiter::per_minute(SIGN_INS_PER_MINUTE, SIGN_IN_BURST),
            password_upgrades,
        });
        tokio::spawn(upgrade_legacy_passwords(Arc::downgrade(&node), upgrades));
        if let NodeRole::Voter { raft, .. } = &node.role {
            tokio::spawn(count_term_changes(Arc::downgrade(&node), raft.view()));
        }
        if let NodeRole::Replica(follower) = &node.role {
            tokio::spawn(restart_when_index_reopens(
                Arc::downgrade(&node),
                follower.reopen_needed(),
            ));
        }
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
                        Ok(()) => match self.ensure_configured_repos().await {
                            Ok(()) => self.ensure_configured_users().await,
                            Err(e) => Err(e),
                        },
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

    /// Reads the HTTPS and cluster TLS certificates again (SIGHUP). Open
    /// connections keep going; on an error the old ones stay in use.
    pub fn reload_tls(&self) {
        if let Some(https) = &self.https {
            if let Err(e) = https.reload() {
                tracing::error!(error = %e, "kept the old HTTPS certificate");
            }
        }
        if let Some(tls) = self.net.tls() {
            if let Err(e) = tls.reload() {
                tracing::error!(error = %e, "kept the old cluster TLS certificates");
            }
        }
    }

    /// What keeps this node from being healthy, as `/+status` says it:
    /// the Raft core stopped, or the replica cannot apply.
    pub fn health_problem(&self) -> Option<String> {
        match &self.role {
            NodeRole::Voter { raft, .. } => raft.problem(),
            NodeRole::Replica(follower) => follower.status().problem,
        }
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
            subscribers: self.subscribers.clone(),
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

    /// Records the config's `users` that the index does not know yet, with
    /// their sha256 hashes carried over (replaced on their next sign-in).
    /// A user the index knows keeps what the index says: `hoard user`
    /// manages users from then on.
    async fn ensure_configured_users(&self) -> Result<(), NodeError> {
        for user in &self.config.users {
            if self.index.user(&user.name)?.is_some() {
                continue;
            }
            let record = UserRecord {
                name: user.name.clone(),
                password_hash: legacy_password_hash(&user.password_sha256),
                admin: user.admin,
                email: None,
            };
            match self
                .commit("system", Change::UserAdded { user: record })
                .await
            {
                Ok(serial) => {
                    tracing::info!(user = %user.name, %serial, "configured user recorded")
                }
                Err(WriteError::Rejected(Rejection::UserExists(_))) => {}
                Err(e) => return Err(e.into()),
            }
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

    /// Commits one change made by `principal`: its actor, and the user
    /// whose package ownership `apply` checks.
    pub async fn commit_as(
        &self,
        principal: &Principal,
        change: Change,
    ) -> Result<Serial, WriteError> {
        Ok(self
            .commit_with_blobs_as(principal, Vec::new(), change)
            .await?
            .serial)
    }

    /// [`Node::commit_with_blobs`], made by `principal` (see [`Node::commit_as`]).
    pub async fn commit_with_blobs_as(
        &self,
        principal: &Principal,
        blobs: Vec<StagedBlob>,
        change: Change,
    ) -> Result<Committed, WriteError> {
        self.commit_event(&principal.actor(), principal.acting_user(), blobs, change)
            .await
    }

    /// Makes `blobs` durable, then commits `change`, through the writer.
    pub async fn commit_with_blobs(
        &self,
        actor: &str,
        blobs: Vec<StagedBlob>,
        change: Change,
    ) -> Result<Committed, WriteError> {
        self.commit_event(actor, None, blobs, change).await
    }

    async fn commit_event(
        &self,
        actor: &str,
        user: Option<String>,
        blobs: Vec<StagedBlob>,
        change: Change,
    ) -> Result<Committed, WriteError> {
        let event = Event {
            actor: actor.to_owned(),
            time_us: now_us(),
            user,
            node: Some(self.config.node_id.clone()),
            change,
        };
        match &self.role {
            NodeRole::Voter { writer, .. } => {
                let result = writer.commit(blobs, event).await;
                self.metrics.record_proposal(match &result {
                    Ok(_) => "committed",
                    Err(WriteError::Rejected(_)) => "rejected",
                    Err(WriteError::NotLeader { .. }) => "not_leader",
                    Err(WriteError::Unavailable { .. }) => "unavailable",
                    Err(WriteError::Store(_)) => "failed",
                });
                result
            }
            NodeRole::Replica(_) => Err(WriteError::NotLeader {
                leader_url: self.primary_url(),
            }),
        }
    }

    /// Creates a token, returning its secret (shown once, never stored)
    /// and its public handle.
    pub async fn create_token(
        &self,
        actor: &str,
        scope: TokenScope,
    ) -> Result<(String, String), WriteError> {
        if let Some(repo) = &scope.repo {
            if self.index.repo(repo)?.is_none() {
                return Err(WriteError::Rejected(Rejection::RepoMissing(repo.clone())));
            }
        }
        let secret = generate_token();
        let handle = hex::encode(rand::random::<[u8; 6]>());
        let token = TokenRecord {
            hash: Sha256::of(secret.as_bytes()),
            repo: scope.repo,
            perm: scope.perm,
            label: scope.label,
            id: handle.clone(),
            user: scope.user,
            projects: scope.projects,
            expires_us: scope.expires_us,
        };
        self.commit(actor, Change::TokenCreated { token }).await?;
        Ok((secret, handle))
    }

    /// Resolves the request's credentials: `Authorization: Bearer <token>`,
    /// or Basic auth with a token as the password (twine sends user
    /// `__token__`), or Basic auth with a user's name and password (pip
    /// with credentials in the index URL). `Ok(None)` when the request
    /// carries none.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Principal>, ApiError> {
        self.resolve_credentials(headers)
    }

    /// Counts a request against the rate of the credentials it carries
    /// (whatever they turn out to be: guessing tokens is rate-limited
    /// too). The node's own admin token is not limited.
    pub fn check_rate(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Ok(());
        };
        let key = Sha256::of(value.as_bytes());
        let bearer_admin = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().strip_prefix("Bearer "))
            .is_some_and(|t| Sha256::of(t.trim().as_bytes()) == self.admin_token_hash);
        if bearer_admin {
            return Ok(());
        }
        self.rate.check(&key.to_hex()).map_err(|wait| ApiError {
            retry_after: Some(wait),
            ..ApiError::new(
                http::StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "more than {} requests per second with these credentials; retry in {wait} s",
                    self.config.token_rate_per_sec
                ),
            )
        })
    }

    fn resolve_credentials(&self, headers: &HeaderMap) -> Result<Option<Principal>, ApiError> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Ok(None);
        };
        let value = value
            .to_str()
            .map_err(|_| ApiError::bad_request("the Authorization header is not valid text"))?;
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        let (user, secret) = if scheme.eq_ignore_ascii_case("bearer") {
            (None, rest.trim().to_owned())
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .map_err(|_| ApiError::bad_request("malformed Basic credentials"))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| ApiError::bad_request("malformed Basic credentials"))?;
            match decoded.split_once(':') {
                Some((user, password)) => (Some(user.to_owned()), password.to_owned()),
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
        if let Some(principal) = self.token_principal(&secret)? {
            return Ok(Some(principal));
        }
        match user.filter(|u| !u.is_empty() && u != "__token__") {
            Some(name) => match self.index.user(&name)? {
                Some(account) if self.passwords.verify(&account.record, &secret) => {
                    if is_legacy_hash(&account.record.password_hash) {
                        let _ = self
                            .password_upgrades
                            .send((account.record.clone(), secret));
                    }
                    Ok(Some(Principal::User(account.record)))
                }
                _ => Err(ApiError::unauthorized("wrong username or password")),
            },
            None => Err(ApiError::forbidden("invalid or revoked token")),
        }
    }

    /// The key that seals this node's web UI sessions: derived from its
    /// admin token, so a new admin token ends every session.
    fn session_key(&self) -> Sha256 {
        let mut key = b"hoard web UI sessions\0".to_vec();
        key.extend_from_slice(self.admin_token_hash.as_bytes());
        Sha256::of(&key)
    }

    /// A web UI request's principal: its credentials, or its session
    /// cookie. A session whose user or token is gone is no session.
    pub fn authenticate_ui(&self, headers: &HeaderMap) -> Result<Option<Principal>, ApiError> {
        if headers.contains_key(http::header::AUTHORIZATION) {
            return self.authenticate(headers);
        }
        let Some(value) = crate::session::cookie(headers) else {
            return Ok(None);
        };
        let mut found = None;
        let subject = crate::session::open(
            self.session_key().as_bytes(),
            value,
            now_us() / 1_000_000,
            |subject| match subject {
                crate::session::Subject::User(name) => {
                    let user = self.index.user(name).ok()??.record;
                    let credential = user.password_hash.clone().into_bytes();
                    found = Some(Principal::User(user));
                    Some(credential)
                }
                crate::session::Subject::NodeAdmin => {
                    found = Some(Principal::NodeAdmin);
                    Some(Vec::new())
                }
                crate::session::Subject::Token(hex) => {
                    let hash: Sha256 = hex.parse().ok()?;
                    let token = self.index.token(&hash).ok()??.record;
                    if token.expired(now_us()) {
                        return None;
                    }
                    found = Some(Principal::Token(token));
                    Some(hash.as_bytes().to_vec())
                }
            },
        );
        Ok(subject.and(found))
    }

    /// A session cookie value for `principal`.
    pub fn seal_session(&self, principal: &Principal) -> String {
        let (subject, credential) = match principal {
            Principal::User(u) => (
                crate::session::Subject::User(u.name.clone()),
                u.password_hash.clone().into_bytes(),
            ),
            Principal::Token(t) => (
                crate::session::Subject::Token(t.hash.to_hex()),
                t.hash.as_bytes().to_vec(),
            ),
            // The key already changes with the admin token.
            Principal::NodeAdmin => (crate::session::Subject::NodeAdmin, Vec::new()),
        };
        let expires = now_us() / 1_000_000 + crate::session::LIFETIME_SECS;
        crate::session::seal(
            self.session_key().as_bytes(),
            &subject,
            expires,
            &credential,
        )
    }

    /// Whom a token stands for: this node's admin token, or a live access
    /// token. `None`: no such token (or a revoked one).
    pub fn token_principal(&self, secret: &str) -> Result<Option<Principal>, ApiError> {
        let hash = Sha256::of(secret.as_bytes());
        if hash == self.admin_token_hash {
            return Ok(Some(Principal::NodeAdmin));
        }
        let Some(state) = self.index.token(&hash)? else {
            return Ok(None);
        };
        if state.record.expired(now_us()) {
            return Err(ApiError::unauthorized(format!(
                "the token {:?} has expired; ask for a new one",
                state.record.label
            )));
        }
        Ok(Some(Principal::Token(state.record)))
    }

    /// Checks a user's password, as a sign-in (npm login) does: replaces
    /// a legacy hash on success. `None`: no such user, or a wrong password.
    pub async fn sign_in(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Option<UserRecord>, ApiError> {
        let Some(account) = self.index.user(name)? else {
            return Ok(None);
        };
        if !self.passwords.verify(&account.record, password) {
            return Ok(None);
        }
        if is_legacy_hash(&account.record.password_hash) {
            self.upgrade_password(&account.record, password).await;
        }
        Ok(Some(account.record))
    }

    /// Replaces a user's legacy password hash with an argon2id one. Only
    /// the leader writes; elsewhere the next sign-in there tries again.
    async fn upgrade_password(&self, user: &UserRecord, password: &str) {
        if !self.is_leader() {
            return;
        }
        let password = password.to_owned();
        let Ok(password_hash) = tokio::task::spawn_blocking(move || hash_password(&password)).await
        else {
            return;
        };
        let upgraded = UserRecord {
            password_hash,
            ..user.clone()
        };
        match self
            .commit("system", Change::UserChanged { user: upgraded })
            .await
        {
            Ok(serial) => {
                tracing::info!(user = %user.name, %serial, "replaced a legacy sha256 password hash with argon2id")
            }
            Err(e) => {
                tracing::warn!(user = %user.name, error = %e, "could not replace a legacy password hash")
            }
        }
    }

    /// Refuses, before anything is stored, a change to `project` (its
    /// normalized name) that the token's project scope or package
    /// ownership would refuse. `apply` checks ownership again.
    pub fn may_write(
        &self,
        principal: &Principal,
        repo: &RepoName,
        project: &str,
    ) -> Result<(), ApiError> {
        if !principal.allows_project(project) {
            return Err(ApiError::forbidden(format!(
                "this token may not write to {project}: it is scoped to other projects"
            )));
        }
        if let Some(user) = principal.acting_user() {
            if let Err(r) = self.index.check_owner(&user, repo, project)? {
                return Err(WriteError::Rejected(r).into());
            }
        }
        Ok(())
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

/// What a new token may do, and for whom.
pub struct TokenScope {
    pub repo: Option<RepoName>,
    pub perm: Perm,
    pub label: String,
    pub user: Option<String>,
    pub projects: Option<Vec<String>>,
    pub expires_us: Option<i64>,
}

/// Counts the Raft terms this node sees begin, for `/+metrics`.
async fn count_term_changes(
    node: std::sync::Weak<Node>,
    mut view: watch::Receiver<hoard_cluster::ClusterView>,
) {
    let mut term = view.borrow_and_update().term;
    while view.changed().await.is_ok() {
        // Cloned out at once: holding the borrow can deadlock openraft.
        let now = view.borrow_and_update().term;
        if now > term {
            let Some(node) = node.upgrade() else { return };
            node.metrics.record_term_change();
            term = now;
        }
    }
}

/// A replica whose index stopped taking writes (sled keeps a failed
/// write's error until it is opened again) restarts in place once its
/// follower sees room on the disk: the restart reopens the index from its
/// last flush and follows on from there.
async fn restart_when_index_reopens(
    node: std::sync::Weak<Node>,
    mut reopen: watch::Receiver<Option<String>>,
) {
    let Ok(why) = reopen.wait_for(Option::is_some).await.map(|w| w.clone()) else {
        return;
    };
    if let (Some(node), Some(why)) = (node.upgrade(), why) {
        node.request_restart(&why);
    }
}

/// Replaces legacy password hashes that Basic sign-ins proved, one at a
/// time, for as long as the node lives.
async fn upgrade_legacy_passwords(
    node: std::sync::Weak<Node>,
    mut upgrades: tokio::sync::mpsc::UnboundedReceiver<(UserRecord, String)>,
) {
    while let Some((user, password)) = upgrades.recv().await {
        let Some(node) = node.upgrade() else {
            return;
        };
        // Another sign-in may have upgraded it meanwhile.
        let current = node.index.user(&user.name).ok().flatten();
        if current.is_some_and(|c| c.record.password_hash == user.password_hash) {
            node.upgrade_password(&user, &password).await;
        }
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
