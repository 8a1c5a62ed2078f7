//! Command-line interface.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use hoard_core::{Perm, RepoName};
use hoard_server::{Node, NodeConfig, NodeRole};
use serde_json::{json, Value};

use crate::settings;

#[derive(Parser)]
#[command(
    name = "hoard",
    version,
    about = "A replicated artifact mirror for PyPI and npm"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node. With no configuration: a single-node primary on
    /// 127.0.0.1:4040 with data in ./hoard-data, a PyPI repository `pypi`
    /// (uploads to `pypi-local`, the rest from the mirror `pypi-remote`)
    /// and an npm registry `npm` (likewise `npm-local` and `npm-remote`).
    Serve {
        /// A TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Log JSON lines instead of human-readable text.
        #[arg(long)]
        log_json: bool,
        /// The upstream index of the default mirror `pypi-remote` (a
        /// Simple API root, e.g. https://index.example/simple/).
        #[arg(long, value_name = "URL")]
        pypi_upstream: Option<String>,
        /// The upstream registry of the default mirror `npm-remote` (a
        /// registry root, e.g. https://registry.example/).
        #[arg(long, value_name = "URL")]
        npm_upstream: Option<String>,
    },
    /// Manage access tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage users: accounts that sign in with a password (npm login,
    /// pip with credentials) and own packages.
    User {
        #[command(subcommand)]
        command: crate::accounts::UserCommand,
    },
    /// Manage the owners of a PyPI project or an npm package.
    Owner {
        #[command(subcommand)]
        command: crate::accounts::OwnerCommand,
    },
    /// Show the audit trail: who changed what, when, as which user, with
    /// which token label, on which node. Never secrets or their hashes.
    #[command(after_help = "Examples:\n  \
        hoard audit --since 24h\n  \
        hoard audit --repo pypi-local --actor alice --since 2026-12-01")]
    Audit {
        #[command(flatten)]
        target: Target,
        /// Only this repository's changes.
        #[arg(long)]
        repo: Option<String>,
        /// Only changes since: 90m, 24h, 7d, 2026-12-01 or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only changes by this token label or user.
        #[arg(long)]
        actor: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make the cluster CA and node certificates, for mutual TLS between
    /// nodes ([cluster_tls]) and HTTPS ([tls]).
    Cert {
        #[command(subcommand)]
        command: crate::cert::CertCommand,
    },
    /// Yank (or with --undo, un-yank) a release or one file (PEP 592).
    Yank {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        repo: String,
        #[arg(long)]
        project: String,
        /// Yank every file of this version.
        #[arg(long, required_unless_present = "filename")]
        version: Option<String>,
        /// Yank only this file.
        #[arg(long)]
        filename: Option<String>,
        /// Shown to installers that pick a yanked file.
        #[arg(long)]
        reason: Option<String>,
        /// Un-yank instead.
        #[arg(long)]
        undo: bool,
    },
    /// Fetch every file that a pinned requirements file or an npm lockfile
    /// names into a node's cache (its mirror repositories), so that a
    /// later build works with the upstreams out of reach. `--hash` pins and
    /// locked integrities are checked against what the node lists.
    #[command(after_help = "Examples:\n  \
        hoard prefetch --repo pypi-remote -r requirements.txt\n  \
        hoard prefetch --repo npm package-lock.json")]
    Prefetch {
        /// The node's URL; default: the local node's configured address.
        #[arg(long)]
        url: Option<String>,
        /// The repository to fill (a mirror, or a virtual one with mirrors);
        /// default: pypi for a requirements file. Required for a lockfile.
        #[arg(long)]
        repo: Option<String>,
        /// A `package-lock.json` or `npm-shrinkwrap.json` (lockfileVersion
        /// 1 to 3), or a requirements file: a JSON file is read as a
        /// lockfile, anything else as requirements.
        #[arg(
            value_name = "FILE",
            required_unless_present = "requirement",
            conflicts_with = "requirement"
        )]
        file: Option<PathBuf>,
        /// A requirements file with `name==version` lines (as `pip freeze`
        /// or `pip-compile --generate-hashes` write them).
        #[arg(short = 'r', long = "requirement", value_name = "FILE")]
        requirement: Option<PathBuf>,
        /// A read token, for a repository without anonymous reads.
        #[arg(long, env = "HOARD_TOKEN")]
        token: Option<String>,
        /// The local node's configuration (for its address).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Write a PyPI repository, as of one serial, to a directory that any
    /// static file server serves as an index pip installs from: the files,
    /// PEP 503 and PEP 691 pages with relative links, and a manifest
    /// (`hoard-export.json`). Files already there with the right sha256
    /// are kept, so a second run, or one after an interruption, resumes.
    #[command(after_help = "Example:\n  \
        hoard export --url http://node:4040 --repo pypi-local --to ./pypi-export\n  \
        python3 -m http.server --directory ./pypi-export 8000   # pip install --index-url http://host:8000/simple/ …")]
    Export {
        /// The node's URL (any node: a replica exports as well); default:
        /// the local node's configured address.
        #[arg(long)]
        url: Option<String>,
        /// The repository (PyPI: hosted, mirror or virtual).
        #[arg(long)]
        repo: String,
        /// The directory to write (created if missing).
        #[arg(long)]
        to: PathBuf,
        /// The serial to export as of; default: the node's, when it starts.
        #[arg(long)]
        at: Option<u64>,
        /// A read token, for a repository without anonymous reads.
        #[arg(long, env = "HOARD_TOKEN")]
        token: Option<String>,
        /// The local node's configuration (for its address).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Upload every wheel and sdist under a directory (CI output, or a
    /// `hoard export` tree) to a PyPI repository, or publish every npm
    /// tarball (`.tgz`) to an npm one, several at a time, each checked as
    /// an upload or a publish is. What the repository already holds with
    /// the same digest is skipped, so a second run imports nothing.
    #[command(after_help = "Examples:\n  \
        hoard import --url http://node:4040 --repo pypi-local ./dist\n  \
        hoard import --url http://node:4040 --repo pypi-local --from-bandersnatch /srv/pypi\n  \
        hoard import --url http://node:4040 --repo pypi-local --from-devpi ./devpi-export --index root/prod")]
    Import {
        /// The node's URL (writes go to the leader); default: the local
        /// node's configured address.
        #[arg(long)]
        url: Option<String>,
        /// The repository to import into (PyPI, or npm for `.tgz` files).
        #[arg(long)]
        repo: String,
        /// The directory to import, searched recursively (a `hoard export`
        /// tree keeps its upload times).
        #[arg(required_unless_present_any = ["from_devpi", "from_bandersnatch"],
              conflicts_with_all = ["from_devpi", "from_bandersnatch"])]
        dir: Option<PathBuf>,
        /// A directory written by `devpi-export` (devpi-server 6): its
        /// users (an admin token is needed) and release files, with their
        /// upload times.
        #[arg(long, conflicts_with = "from_bandersnatch")]
        from_devpi: Option<PathBuf>,
        /// With --from-devpi: only this index (`user/index`); default: all.
        #[arg(long, requires = "from_devpi")]
        index: Option<String>,
        /// A bandersnatch mirror's directory (with `web/packages`, and
        /// `web/json` for the upload times).
        #[arg(long)]
        from_bandersnatch: Option<PathBuf>,
        /// Files in flight at once.
        #[arg(long, default_value_t = 4)]
        jobs: usize,
        /// Do not keep the upload times of an export's manifest (keeping
        /// them needs an admin token for the repository).
        #[arg(long)]
        no_upload_times: bool,
        /// Write straight into this stopped node's data dir, in batches
        /// (one sync and one transaction per 500 files): the fast way to
        /// load a large tree into a new one-voter node. PyPI files only.
        #[arg(long, conflicts_with_all = ["url", "from_devpi"])]
        data_dir: Option<PathBuf>,
        /// An upload token for the repository.
        #[arg(long, env = "HOARD_TOKEN")]
        token: Option<String>,
        /// The local node's configuration (for its address).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Store one file at a path of a generic repository, streamed, with
    /// its sha256 checked by the node. A path never changes once stored:
    /// the same bytes again succeed, other bytes are refused (409).
    #[command(after_help = "Example:\n  \
        hoard push --url http://node:4040 --repo media ./app.box images/app-1.2.box")]
    Push {
        /// The node's URL (writes go to the leader); default: the local
        /// node's configured address.
        #[arg(long)]
        url: Option<String>,
        /// The generic repository.
        #[arg(long)]
        repo: String,
        /// The local file to send.
        file: PathBuf,
        /// Where to store it in the repository (`dir/name`).
        path: String,
        /// An upload token for the repository.
        #[arg(long, env = "HOARD_TOKEN")]
        token: Option<String>,
        /// The local node's configuration (for its address).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Fetch one file of a generic repository, streamed, and checked
    /// against its sha256 before it takes its name.
    #[command(after_help = "Example:\n  \
        hoard pull --url http://node:4040 --repo media images/app-1.2.box")]
    Pull {
        /// The node's URL (any node); default: the local node's configured
        /// address.
        #[arg(long)]
        url: Option<String>,
        /// The generic repository.
        #[arg(long)]
        repo: String,
        /// The file's path in the repository.
        path: String,
        /// Where to write it (a file, or a directory); default: its name,
        /// in the current directory.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Fetch it as of this serial.
        #[arg(long)]
        at: Option<u64>,
        /// A read token, for a repository without anonymous reads.
        #[arg(long, env = "HOARD_TOKEN")]
        token: Option<String>,
        /// The local node's configuration (for its address).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Create a repository.
    Repo {
        #[command(subcommand)]
        command: RepoCommand,
    },
    /// List, add or remove the voters and learners of the Raft group.
    Members {
        #[command(subcommand)]
        command: MembersCommand,
    },
    /// Hand leadership to the voter with this Raft id (a planned handover).
    /// If the node at --url is a replica, it first joins as a voter with
    /// this id and catches up. With --force (disaster recovery, when no quorum can be reached):
    /// make the node at --url the only voter of a new epoch, with this
    /// Raft id; the old epoch's nodes are fenced until `hoard rejoin`.
    Promote {
        #[command(flatten)]
        target: Target,
        /// The Raft id of the voter that should lead (with --force: the
        /// id the promoted node takes; a voter keeps its own).
        node: u64,
        /// Start a new epoch on the node at --url, without the old quorum.
        #[arg(long, conflicts_with = "replace")]
        force: bool,
        /// After the handover, remove this voter (a dead one) from the group.
        #[arg(long, value_name = "DEAD_VOTER")]
        replace: Option<u64>,
        /// How long to wait for the new leader, in seconds.
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
    /// On a node that a forced promotion fenced: reset it from the new
    /// epoch's leader (blobs are kept) and join that epoch as a voter.
    Rejoin {
        #[command(flatten)]
        target: Target,
        /// For a node that is stopped (its --config or --data-dir): the new
        /// epoch's leader. The node's next start then resets it and joins,
        /// without running the old epoch first.
        #[arg(long, value_name = "LEADER_URL")]
        leader: Option<String>,
        /// How long to wait for the node to catch up, in seconds.
        #[arg(long, default_value_t = 600)]
        wait: u64,
    },
    /// The whole cluster as a table: every voter and replica that the
    /// node at --url knows of, with role, leader, term, serials, lag and
    /// health. Exits 1 if a node is unreachable or unhealthy, or no node
    /// leads.
    Status {
        #[command(flatten)]
        target: Target,
        /// The table as JSON.
        #[arg(long)]
        json: bool,
        /// Redraw every SECS seconds.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<u64>,
        /// Only this node: its /+status as JSON, exiting 1 unless its health
        /// is ok (a container health check).
        #[arg(long, conflicts_with_all = ["json", "watch"])]
        node: bool,
    },
    /// Start a local cluster (a primary and replicas) as child processes on
    /// loopback ports, and describe it in DIR/cluster.json.
    Demo {
        #[arg(long, default_value_t = 1)]
        voters: usize,
        #[arg(long, default_value_t = 2)]
        replicas: usize,
        /// Each replica after the first follows the previous one (fan-out tree).
        #[arg(long)]
        chain: bool,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Write a consistent copy of a running node into DIR, on the node's
    /// machine: its index as of one serial, the blobs that serial lists
    /// (hard-linked where the filesystem allows), and a manifest. Writes go
    /// on meanwhile.
    Backup {
        #[command(flatten)]
        target: Target,
        /// A new or empty directory (resolved here, written by the node).
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
    /// Build a new data dir from a backup, checking every blob; it starts
    /// at the backup's serial (start it as a replica to catch up).
    Restore {
        /// The backup's directory (with its manifest.json).
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// The new node's data dir (must not hold an index yet).
        #[arg(long, value_name = "NEW")]
        data_dir: PathBuf,
    },
    /// Check a stopped node's data dir: the changelog is whole, every
    /// listed file has its blob with its size, and every blob on disk
    /// matches its sha256 (in a bucket: with --deep, which reads them all).
    Fsck {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Re-hash every blob in the bucket too (blobs on disk always are).
        #[arg(long)]
        deep: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it once, alone on stdout.
    Create {
        #[command(flatten)]
        target: Target,
        /// The repository the token is for; omit for every repository.
        #[arg(long)]
        repo: Option<String>,
        /// read, upload or admin.
        #[arg(long)]
        perm: String,
        /// A name for the token, recorded as the actor of its changes.
        #[arg(long)]
        label: Option<String>,
        /// The user the token belongs to: its uploads are bound by that
        /// user's package ownership. Without it, a service token (CI),
        /// which ownership does not bind.
        #[arg(long)]
        user: Option<String>,
        /// Limit the token's writes to this project (repeatable).
        #[arg(long = "project", value_name = "PROJECT")]
        projects: Vec<String>,
        /// The token stops working after this long: 3600, 90m, 12h, 30d.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration_secs)]
        expires: Option<u64>,
    },
    /// List live tokens (their ids, scopes and expiry; never secrets).
    List {
        #[command(flatten)]
        target: Target,
        /// Only this user's tokens.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token by the id that `token list` shows.
    Revoke {
        #[command(flatten)]
        target: Target,
        id: String,
    },
}

/// `3600`, `90s`, `90m`, `12h` or `30d`, in seconds.
fn parse_duration_secs(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 3600, 90m, 12h or 30d"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown unit {other:?}: use s, m, h or d")),
    };
    match n.checked_mul(unit) {
        Some(0) | None => Err(format!("{text:?} is not a usable lifetime")),
        Some(secs) => Ok(secs),
    }
}

#[derive(Subcommand)]
enum MembersCommand {
    /// Print the voters and learners, and which one leads.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Add a node (started with `bootstrap = false`): it joins as a
    /// learner, catches up, then becomes a voter.
    Add {
        #[command(flatten)]
        target: Target,
        /// Its Raft id (`raft_id` in its configuration).
        #[arg(long)]
        id: u64,
        /// Its gRPC address, as the other nodes reach it.
        #[arg(long)]
        grpc: String,
        /// Its public HTTP URL.
        #[arg(long)]
        http: String,
        /// Keep it a learner (it follows the log, but does not vote).
        #[arg(long)]
        learner: bool,
        /// Its `node_id`. With cluster TLS, the common name of its
        /// certificate: only a peer with that certificate may then speak
        /// for this Raft id.
        #[arg(long)]
        node_id: Option<String>,
    },
    /// Remove a voter or learner.
    Remove {
        #[command(flatten)]
        target: Target,
        id: u64,
    },
}

#[derive(Subcommand)]
enum RepoCommand {
    Create {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        name: String,
        /// pypi, npm or generic.
        #[arg(long)]
        format: String,
        /// Require a read token for reads.
        #[arg(long)]
        private: bool,
    },
}

/// The node a client command talks to: `--url`, or the local node's
/// configured address.
fn node_url(url: Option<String>, config: Option<&std::path::Path>) -> anyhow::Result<String> {
    match url {
        Some(url) => Ok(url),
        None => Ok(settings::load(config)?.public_url()),
    }
}

/// Which node an admin command acts on, and with which token.
#[derive(Args, Clone)]
pub(crate) struct Target {
    /// The node's URL; default: the local node's configured address.
    #[arg(long)]
    url: Option<String>,
    /// An admin token; default: $HOARD_TOKEN, then the local data dir's admin-token.
    #[arg(long)]
    token: Option<String>,
    /// The local node's configuration (for its address and data dir).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The local node's data dir (for the admin token, or offline use).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl Target {
    pub(crate) fn local_config(&self) -> anyhow::Result<NodeConfig> {
        let mut config = settings::load(self.config.as_deref())?;
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        Ok(config)
    }

    pub(crate) fn url(&self) -> anyhow::Result<String> {
        match &self.url {
            Some(url) => Ok(url.trim_end_matches('/').to_owned()),
            None => Ok(self.local_config()?.public_url()),
        }
    }

    pub(crate) fn token(&self) -> anyhow::Result<String> {
        if let Some(token) = &self.token {
            return Ok(token.clone());
        }
        if let Ok(token) = std::env::var("HOARD_TOKEN") {
            if !token.trim().is_empty() {
                return Ok(token.trim().to_owned());
            }
        }
        let path = self.local_config()?.data_dir.join("admin-token");
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_owned())
            .with_context(|| {
                format!(
                    "no admin token: pass --token, set HOARD_TOKEN, or run where {} exists",
                    path.display()
                )
            })
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            log_json,
            pypi_upstream,
            npm_upstream,
        } => serve(config.as_deref(), log_json, pypi_upstream, npm_upstream).await,
        Command::Token {
            command:
                TokenCommand::Create {
                    target,
                    repo,
                    perm,
                    label,
                    user,
                    projects,
                    expires,
                },
        } => {
            let scope = TokenOptions {
                user,
                projects,
                expires,
            };
            token_create(&target, repo, &perm, label, scope).await
        }
        Command::Token {
            command: TokenCommand::List { target, user },
        } => crate::accounts::token_list(&target, user).await,
        Command::Token {
            command: TokenCommand::Revoke { target, id },
        } => crate::accounts::token_revoke(&target, &id).await,
        Command::User { command } => crate::accounts::user(command).await,
        Command::Owner { command } => crate::accounts::owner(command).await,
        Command::Cert { command } => crate::cert::run(command),
        Command::Audit {
            target,
            repo,
            since,
            actor,
            json,
        } => crate::audit::run(&target, repo, since, actor, json).await,
        Command::Prefetch {
            url,
            repo,
            file,
            requirement,
            token,
            config,
        } => {
            let url = node_url(url, config.as_deref())?;
            let Some(file) = file.or(requirement) else {
                bail!("name a lockfile or a requirements file (-r FILE)");
            };
            crate::prefetch::prefetch(&url, repo.as_deref(), &file, token.as_deref()).await
        }
        Command::Import {
            url,
            repo,
            dir,
            from_devpi,
            index,
            from_bandersnatch,
            jobs,
            no_upload_times,
            data_dir,
            token,
            config,
        } => {
            if let Some(data_dir) = data_dir {
                let Some(dir) = dir.or(from_bandersnatch) else {
                    bail!("--data-dir imports a directory of wheels and sdists (or --from-bandersnatch)");
                };
                return crate::import_offline::import_offline(
                    &data_dir,
                    &repo,
                    &dir,
                    jobs,
                    !no_upload_times,
                );
            }
            let url = node_url(url, config.as_deref())?;
            let source = match (dir, from_devpi, from_bandersnatch) {
                (_, Some(dir), _) => crate::import::Source::Devpi { dir, index },
                (_, _, Some(dir)) => {
                    if !dir.join("web").join("packages").is_dir() {
                        bail!(
                            "{} is not a bandersnatch mirror: it has no web/packages",
                            dir.display()
                        );
                    }
                    crate::import::Source::Dir(dir)
                }
                (Some(dir), None, None) => {
                    if crate::transfer::is_generic(&url, &repo, token.as_deref()).await? {
                        return crate::transfer::import_generic(
                            &url,
                            &repo,
                            &dir,
                            jobs,
                            token,
                            !no_upload_times,
                        )
                        .await;
                    }
                    crate::import::Source::Dir(dir)
                }
                (None, None, None) => bail!("name a directory to import"),
            };
            crate::import::import(&url, &repo, source, jobs, token, !no_upload_times).await
        }
        Command::Push {
            url,
            repo,
            file,
            path,
            token,
            config,
        } => {
            let url = node_url(url, config.as_deref())?;
            crate::transfer::push(&url, &repo, &file, &path, token.as_deref()).await
        }
        Command::Pull {
            url,
            repo,
            path,
            output,
            at,
            token,
            config,
        } => {
            let url = node_url(url, config.as_deref())?;
            crate::transfer::pull(&url, &repo, &path, output, at, token.as_deref()).await
        }
        Command::Export {
            url,
            repo,
            to,
            at,
            token,
            config,
        } => {
            let url = node_url(url, config.as_deref())?;
            if crate::transfer::is_generic(&url, &repo, token.as_deref()).await? {
                return crate::transfer::export_generic(&url, &repo, &to, at, token.as_deref())
                    .await;
            }
            if crate::export_npm::is_npm(&url, &repo, token.as_deref()).await? {
                return crate::export_npm::export_npm(&url, &repo, &to, at, token.as_deref()).await;
            }
            crate::export::export(&url, &repo, &to, at, token.as_deref()).await
        }
        Command::Yank {
            target,
            repo,
            project,
            version,
            filename,
            reason,
            undo,
        } => {
            let body = json!({
                "repo": repo, "project": project, "version": version,
                "filename": filename, "reason": reason, "undo": undo,
            });
            let answer = admin_post(&target, "yank", &body).await?;
            let files = answer["filenames"].as_array().map(Vec::len).unwrap_or(0);
            let verb = if undo { "un-yanked" } else { "yanked" };
            eprintln!("{verb} {files} file(s) at serial {}", answer["serial"]);
            Ok(ExitCode::SUCCESS)
        }
        Command::Repo {
            command:
                RepoCommand::Create {
                    target,
                    name,
                    format,
                    private,
                },
        } => {
            let body = json!({ "name": name, "format": format, "anonymous_read": !private });
            let answer = admin_post(&target, "repos", &body).await?;
            eprintln!("created repository {name} at serial {}", answer["serial"]);
            Ok(ExitCode::SUCCESS)
        }
        Command::Members { command } => {
            let answer = match command {
                MembersCommand::List { target } => {
                    admin_post(&target, "members/list", &json!({})).await?
                }
                MembersCommand::Add {
                    target,
                    id,
                    grpc,
                    http,
                    learner,
                    node_id,
                } => {
                    eprintln!("adding node {id}; it catches up before it votes");
                    let body = json!({ "id": id, "grpc_addr": grpc, "http_url": http,
                                       "learner": learner, "node_id": node_id });
                    admin_post(&target, "members/add", &body).await?
                }
                MembersCommand::Remove { target, id } => {
                    admin_post(&target, "members/remove", &json!({ "id": id })).await?
                }
            };
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Promote {
            target,
            node,
            force: true,
            wait,
            ..
        } => crate::promotion::force_promote(&target, node, wait).await,
        Command::Promote {
            target,
            node,
            force: false,
            replace,
            wait,
        } => crate::promotion::promote(&target, node, replace, wait).await,
        Command::Rejoin {
            target,
            leader: Some(leader),
            ..
        } => crate::promotion::rejoin_stopped(&target, &leader).await,
        Command::Rejoin {
            target,
            leader: None,
            wait,
        } => crate::promotion::rejoin(&target, wait).await,
        Command::Status {
            target,
            json,
            watch,
            node,
        } => {
            let url = target.url()?;
            if node {
                crate::status::node(&url).await
            } else {
                crate::status::cluster(&url, json, watch).await
            }
        }
        Command::Backup { target, to } => crate::backup::backup(&target, &to).await,
        Command::Restore { from, data_dir } => crate::backup::restore(&from, &data_dir).await,
        Command::Fsck {
            data_dir,
            config,
            deep,
        } => fsck(data_dir, config.as_deref(), deep).await,
        Command::Demo {
            voters,
            replicas,
            chain,
            dir,
        } => {
            crate::demo::run(voters, replicas, chain, &dir).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::log_writer::LogWriter::new())
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn serve(
    config: Option<&Path>,
    log_json: bool,
    pypi_upstream: Option<String>,
    npm_upstream: Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut config = settings::load(config)?;
    if pypi_upstream.is_some() || npm_upstream.is_some() {
        config.pypi_upstream = pypi_upstream.or(config.pypi_upstream);
        config.npm_upstream = npm_upstream.or(config.npm_upstream);
        config.apply_default_upstreams();
        config.validate()?;
    }
    init_logging(log_json || config.log_format == "json");
    let (http_addr, grpc_addr) = (config.http_listen, config.grpc_listen);
    let listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("cannot listen on {http_addr} (is another hoard running?)"))?;
    let grpc_listener = tokio::net::TcpListener::bind(grpc_addr)
        .await
        .with_context(|| format!("cannot listen for gRPC on {grpc_addr}"))?;
    let node = Node::open(config).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut restart = node.restart_requested();
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown_signal() => {}
            _ = restart.wait_for(|r| *r) => {}
        }
        let _ = stop.send(true);
    });
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let grpc = tokio::spawn(hoard_cluster::serve_grpc(
        node.replication_source(),
        node.raft().cloned(),
        grpc_listener,
        until_stopped(stopped.clone()),
    ));
    node.settle().await?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        node_id = %node.config.node_id,
        role = node.role_kind().as_str(),
        url = %node.config.public_url(),
        grpc = %grpc_addr,
        data_dir = %node.data_dir().display(),
        admin_token = %node.admin_token_path.display(),
        applied_serial = %node.applied_serial(),
        "hoard is serving"
    );

    if let NodeRole::Replica(follower) = &node.role {
        tokio::spawn(follower.clone().run(stopped.clone()));
    }
    tokio::spawn(reload_on_sighup(node.clone()));
    hoard_server::serve(node.clone(), listener, until_stopped(stopped)).await?;
    // Replication streams never end by themselves; give them a moment.
    if tokio::time::timeout(std::time::Duration::from_secs(2), grpc)
        .await
        .is_err()
    {
        tracing::debug!("gRPC streams still open at shutdown");
    }
    if let Some(raft) = node.raft() {
        raft.shutdown().await;
    }
    let restarting = *node.restart_requested().borrow();
    match node.index.flush() {
        // The restart reopens the index from its last good flush.
        Err(e) if restarting => tracing::warn!(error = %e, "the index could not be flushed"),
        result => result?,
    }
    if restarting {
        return Err(restart_in_place());
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Replaces this process with a fresh start of the same binary and
/// arguments: the same pid, so a supervisor sees no exit. Every file and
/// socket is opened close-on-exec, so sled's lock and the listeners are
/// released. Returns only if the exec failed.
fn restart_in_place() -> anyhow::Error {
    use std::os::unix::process::CommandExt as _;
    tracing::info!("starting again in place");
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return anyhow::anyhow!("cannot restart: the binary's path: {e}"),
    };
    let e = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .exec();
    anyhow::anyhow!("cannot restart {}: {e}", exe.display())
}

/// SIGHUP: read the TLS certificates again, without dropping connections.
async fn reload_on_sighup(node: std::sync::Arc<Node>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading TLS certificates");
        node.reload_tls();
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// An admin endpoint's answer that is not a success.
#[derive(Debug, thiserror::Error)]
#[error("{url} answered {status}: {message}")]
pub(crate) struct AdminRefusal {
    url: String,
    pub(crate) status: reqwest::StatusCode,
    message: String,
}

pub(crate) async fn admin_post(
    target: &Target,
    endpoint: &str,
    body: &Value,
) -> anyhow::Result<Value> {
    let mut url = format!("{}/+admin/{endpoint}", target.url()?);
    let token = target.token()?;
    // Admin writes go to the leader: follow its redirect ourselves, once,
    // keeping the token the operator gave us.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut response = None;
    for _ in 0..2 {
        let r = client
            .post(&url)
            .bearer_auth(&token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        match r.headers().get(reqwest::header::LOCATION) {
            Some(location) if r.status() == reqwest::StatusCode::TEMPORARY_REDIRECT => {
                let location = location.to_str().context("a redirect to a non-text URL")?;
                eprintln!("this node is not the leader; sending to {location}");
                url = location.to_owned();
            }
            _ => {
                response = Some(r);
                break;
            }
        }
    }
    let response = response.with_context(|| format!("{url} redirected again"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(AdminRefusal {
            url,
            status,
            message: text.trim().to_owned(),
        }
        .into());
    }
    serde_json::from_str(&text).with_context(|| format!("{url} answered with invalid JSON"))
}

/// What `token create` scopes a token to, beyond repository and permission.
struct TokenOptions {
    user: Option<String>,
    projects: Vec<String>,
    expires: Option<u64>,
}

async fn token_create(
    target: &Target,
    repo: Option<String>,
    perm: &str,
    label: Option<String>,
    options: TokenOptions,
) -> anyhow::Result<ExitCode> {
    let perm: Perm = perm.parse()?;
    let repo: Option<RepoName> = repo.map(|r| r.parse()).transpose()?;
    let projects = (!options.projects.is_empty()).then_some(&options.projects);
    let body = json!({
        "repo": repo, "perm": perm.to_string(), "label": label, "user": options.user,
        "projects": projects, "expires_in_secs": options.expires,
    });
    let answer = match admin_post(target, "tokens", &body).await {
        Ok(answer) => answer,
        // No node answers at the local address: open its data dir directly
        // (plain service tokens only: scopes are checked by a running node).
        Err(e)
            if target.url.is_none()
                && is_connect_error(&e)
                && options.user.is_none()
                && projects.is_none()
                && options.expires.is_none() =>
        {
            return token_create_offline(target, repo, perm, label).await;
        }
        Err(e) => return Err(e),
    };
    let token = answer["token"]
        .as_str()
        .context("the node's answer has no token")?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

fn is_connect_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_connect)
    })
}

async fn token_create_offline(
    target: &Target,
    repo: Option<RepoName>,
    perm: Perm,
    label: Option<String>,
) -> anyhow::Result<ExitCode> {
    let config = target.local_config()?;
    eprintln!(
        "no node answers at {}; creating the token in {} directly",
        config.public_url(),
        config.data_dir.display()
    );
    let node = Node::open(config).await?;
    node.settle().await?;
    let label =
        label.unwrap_or_else(|| format!("{perm}@{}", repo.as_ref().map_or("*", |r| r.as_str())));
    let (secret, _) = node
        .create_token(
            "admin",
            hoard_server::TokenScope {
                repo,
                perm,
                label,
                user: None,
                projects: None,
                expires_us: None,
            },
        )
        .await?;
    node.index.flush()?;
    println!("{secret}");
    Ok(ExitCode::SUCCESS)
}

async fn fsck(
    data_dir: Option<PathBuf>,
    config: Option<&Path>,
    deep: bool,
) -> anyhow::Result<ExitCode> {
    // The configuration says where the blobs are (the data dir, or a
    // bucket); --data-dir alone means they are in the data dir.
    let (data_dir, blobs_config) = match (data_dir, config) {
        (Some(dir), None) => (dir, hoard_server::BlobsConfig::default()),
        (dir, config) => {
            let settings = settings::load(config)?;
            (dir.unwrap_or(settings.data_dir), settings.blobs)
        }
    };
    if !data_dir.join("index").is_dir() {
        bail!("{} is not a hoard data dir (no index/)", data_dir.display());
    }
    let index = hoard_store::Index::open(&data_dir.join("index"))?;
    let blobs = blobs_config.open_store(&data_dir)?;
    let rehash = deep || blobs_config.kind == hoard_server::BlobsKind::Fs;
    let report =
        hoard_store::fsck(&index, &blobs, rehash, |line| eprintln!("fsck: {line}")).await?;
    println!(
        "checked {} events, {} files, {} blobs",
        report.events, report.files, report.blobs
    );
    if !report.orphans.is_empty() {
        println!(
            "{} unlisted blob(s) (uploads that stopped before they were committed; harmless)",
            report.orphans.len()
        );
    }
    for problem in &report.problems {
        println!("PROBLEM: {problem}");
    }
    if report.is_clean() {
        println!("clean");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{} problem(s) found", report.problems.len());
        Ok(ExitCode::from(2))
    }
}
