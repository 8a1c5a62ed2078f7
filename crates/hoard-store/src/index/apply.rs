//! `apply`: the one way the index changes. One event, one multi-tree
//! transaction: the changelog entry, the index changes, the applied
//! serial, the digest (and on a voter the Raft position) commit together.

use std::collections::BTreeMap;

use hoard_core::{Change, Event, MirrorPart, RepoFormat, RepoName, Serial};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use super::changelog::{chain_digest, encode_event, ReceivedEvent};
use super::keys::{
    digest_from, encode, serial_from, tx_get, tx_get_meta, Files, GenericDirs, GenericFiles,
    KeySpace, NpmPackages, NpmVersions, Owners, Projects, Repos, Tokens, Users, APPLIED, COUNTS,
    DIGEST, RAFT_APPLIED, RAFT_MEMBERSHIP,
};
use super::state::{
    ownership, Counts, DeprecationChange, FileState, GenericFileState, MirrorOrigin,
    NpmMirrorOrigin, NpmPackageState, NpmVersionState, OwnersState, Ownership, ProjectState,
    Rejection, RepoState, TagChange, TarballState, TokenState, UserState, YankChange,
};
use super::{Index, RaftPosition};
use crate::StoreError;

pub(super) type TxResult<T> = Result<T, ConflictableTransactionError<ApplyAbort>>;

/// Why an `apply` transaction stopped without committing.
#[derive(Debug)]
pub(super) enum ApplyAbort {
    Rejected(Rejection),
    Gap { applied: Serial, got: Serial },
    Corrupt(String),
}

fn reject<T>(r: Rejection) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(ApplyAbort::Rejected(r)))
}

fn corrupt_in_tx(e: StoreError) -> ConflictableTransactionError<ApplyAbort> {
    ConflictableTransactionError::Abort(ApplyAbort::Corrupt(e.to_string()))
}

impl Index {
    /// Applies one committed Raft entry: its event (if it carries one)
    /// takes the next serial, and the Raft position is written in the same
    /// transaction, so a crash and a re-apply give the same serials. A
    /// rejected event takes no serial, but the position still moves.
    /// Returns the event's outcome, `None` for an entry without an event.
    pub fn apply_raft(
        &self,
        position: RaftPosition<'_>,
        event: Option<&ReceivedEvent>,
    ) -> Result<Option<Result<Serial, Rejection>>, StoreError> {
        if let Some(event) = event {
            let serial = self.applied_serial()?.next();
            match self.apply_tx(serial, event.event(), event.bytes(), Some(&position)) {
                Ok(()) => return Ok(Some(Ok(serial))),
                Err(StoreError::Rejected(r)) => {
                    self.set_raft_position(&position)?;
                    return Ok(Some(Err(r)));
                }
                Err(e) => return Err(e),
            }
        }
        self.set_raft_position(&position)?;
        Ok(None)
    }

    /// Applies one event atomically: the changelog entry, the index
    /// changes, the applied serial and the digest commit together or not
    /// at all. `serial` must follow the applied serial. Not durable until
    /// [`Index::flush`].
    pub fn apply(&self, serial: Serial, event: &Event) -> Result<(), StoreError> {
        self.apply_encoded(serial, event, &encode_event(event))
    }

    /// Applies an event received from another node, keeping its exact
    /// bytes so that both nodes' digests agree.
    pub fn apply_received(&self, serial: Serial, event: &ReceivedEvent) -> Result<(), StoreError> {
        self.apply_encoded(serial, event.event(), event.bytes())
    }

    /// Applies events received from another node, taking serials from
    /// `first` on, in one transaction: all of them or none. A catch-up's
    /// way to apply many events with one commit and (by the caller) one
    /// flush.
    pub fn apply_received_batch(
        &self,
        first: Serial,
        events: &[ReceivedEvent],
    ) -> Result<(), StoreError> {
        let items: Vec<(&Event, &[u8])> = events.iter().map(|e| (e.event(), e.bytes())).collect();
        self.apply_many(first, &items, None)
    }

    fn apply_encoded(
        &self,
        serial: Serial,
        event: &Event,
        event_bytes: &[u8],
    ) -> Result<(), StoreError> {
        self.apply_tx(serial, event, event_bytes, None)
    }

    /// Applies `events` in order, each taking the next serial, in one
    /// transaction: all of them or none. A bulk import's way to apply many
    /// events with one commit and (by the caller) one flush. Returns the
    /// last serial. Not durable until [`Index::flush`].
    pub fn apply_batch(&self, events: &[Event]) -> Result<Serial, StoreError> {
        if events.is_empty() {
            return self.applied_serial();
        }
        let first = self.applied_serial()?.next();
        let encoded: Vec<Vec<u8>> = events.iter().map(encode_event).collect();
        let items: Vec<(&Event, &[u8])> = events
            .iter()
            .zip(&encoded)
            .map(|(e, b)| (e, b.as_slice()))
            .collect();
        self.apply_many(first, &items, None)?;
        Ok(Serial(first.0 + events.len() as u64 - 1))
    }

    fn apply_tx(
        &self,
        serial: Serial,
        event: &Event,
        event_bytes: &[u8],
        raft: Option<&RaftPosition<'_>>,
    ) -> Result<(), StoreError> {
        self.apply_many(serial, &[(event, event_bytes)], raft)
    }

    /// The one transaction: `items` take serials from `first` on.
    fn apply_many(
        &self,
        first: Serial,
        items: &[(&Event, &[u8])],
        raft: Option<&RaftPosition<'_>>,
    ) -> Result<(), StoreError> {
        let _gate = self.lock_state();
        // Which events created their project, from the attempt that
        // committed (sled may run the closure more than once).
        let created = std::cell::RefCell::new(Vec::with_capacity(items.len()));
        let trees = (
            &self.changelog,
            &self.meta,
            &self.repos,
            &self.projects,
            &self.files,
            &self.tokens,
            &self.npm_packages,
            &self.npm_versions,
            &self.users,
            &self.owners,
            &self.generic_files,
            &self.generic_dirs,
        );
        let result = trees.transaction(
            |(
                changelog,
                meta,
                repos,
                projects,
                files,
                tokens,
                npm_packages,
                npm_versions,
                users,
                owners,
                generic_files,
                generic_dirs,
            )| {
                let applied = serial_from(meta.get(APPLIED)?).map_err(corrupt_in_tx)?;
                if first != applied.next() {
                    return Err(ConflictableTransactionError::Abort(ApplyAbort::Gap {
                        applied,
                        got: first,
                    }));
                }
                let mut counts: Counts = tx_get_meta::<Counts>(meta, COUNTS)?.unwrap_or_default();
                let trees = ApplyTrees {
                    repos,
                    projects,
                    files,
                    tokens,
                    npm_packages,
                    npm_versions,
                    users,
                    owners,
                    generic_files,
                    generic_dirs,
                };
                let mut digest = digest_from(meta.get(DIGEST)?).map_err(corrupt_in_tx)?;
                let mut serial = applied;
                let mut created = created.borrow_mut();
                created.clear();
                for (event, event_bytes) in items {
                    serial = serial.next();
                    let projects_before = counts.projects;
                    apply_change(serial, event, &mut counts, &trees)?;
                    created.push(counts.projects > projects_before);
                    changelog.insert(&serial.0.to_be_bytes(), *event_bytes)?;
                    digest = chain_digest(&digest, serial, event_bytes);
                }
                meta.insert(APPLIED, &serial.0.to_be_bytes())?;
                meta.insert(DIGEST, &digest)?;
                meta.insert(COUNTS, encode(&counts))?;
                if let Some(raft) = raft {
                    meta.insert(RAFT_APPLIED, raft.applied)?;
                    if let Some(m) = raft.membership {
                        meta.insert(RAFT_MEMBERSHIP, m)?;
                    }
                }
                Ok(())
            },
        );
        match result {
            Ok(()) => {
                if items.iter().any(|(e, _)| {
                    matches!(
                        e.change,
                        Change::RepoCreated { .. } | Change::RepoSettingsChanged { .. }
                    )
                }) {
                    self.repo_cache.invalidate();
                }
                let created = created.into_inner();
                let mut serial = first;
                for ((event, _), created) in items.iter().zip(created) {
                    self.stamps.record(serial, &event.change, created);
                    serial = serial.next();
                }
                Ok(())
            }
            Err(TransactionError::Abort(ApplyAbort::Rejected(r))) => Err(StoreError::Rejected(r)),
            Err(TransactionError::Abort(ApplyAbort::Gap { applied, got })) => {
                Err(StoreError::Gap { applied, got })
            }
            Err(TransactionError::Abort(ApplyAbort::Corrupt(msg))) => Err(StoreError::Corrupt(msg)),
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
        }
    }
}

struct ApplyTrees<'a> {
    repos: &'a TransactionalTree,
    projects: &'a TransactionalTree,
    files: &'a TransactionalTree,
    tokens: &'a TransactionalTree,
    npm_packages: &'a TransactionalTree,
    npm_versions: &'a TransactionalTree,
    users: &'a TransactionalTree,
    owners: &'a TransactionalTree,
    generic_files: &'a TransactionalTree,
    generic_dirs: &'a TransactionalTree,
}

fn apply_change(
    serial: Serial,
    event: &Event,
    counts: &mut Counts,
    trees: &ApplyTrees<'_>,
) -> TxResult<()> {
    let ApplyTrees {
        repos,
        projects,
        files,
        tokens,
        npm_packages,
        npm_versions,
        users,
        owners,
        generic_files,
        generic_dirs,
    } = trees;
    match &event.change {
        Change::RepoCreated { repo, settings } => {
            if repos.get(Repos::key(repo))?.is_some() {
                return reject(Rejection::RepoExists(repo.clone()));
            }
            let state = RepoState {
                name: repo.clone(),
                settings: settings.clone(),
                created: serial,
            };
            repos.insert(Repos::key(repo), Repos::encode(&state))?;
            counts.repos += 1;
        }
        Change::RepoSettingsChanged { repo, settings } => {
            let Some(mut state) = tx_get::<Repos>(repos, Repos::key(repo))? else {
                return reject(Rejection::RepoMissing(repo.clone()));
            };
            state.settings = settings.clone();
            repos.insert(Repos::key(repo), Repos::encode(&state))?;
        }
        Change::FileAdded {
            repo,
            project,
            display_name,
            file,
            upload_time_us,
        } => {
            if repos.get(Repos::key(repo))?.is_none() {
                return reject(Rejection::RepoMissing(repo.clone()));
            }
            let key = Files::key(repo, project, &file.filename);
            if files.get(&key)?.is_some() {
                return reject(Rejection::FileExists(file.filename.clone()));
            }
            let exists = projects.get(Projects::key(repo, project))?.is_some();
            check_owner(serial, event, trees, repo, project, exists)?;
            ensure_project(serial, counts, projects, repo, project, display_name)?;
            let state = FileState {
                record: file.clone(),
                added: serial,
                upload_time_us: upload_time_us.unwrap_or(event.time_us),
                uploader: event.actor.clone(),
                yanks: Vec::new(),
                mirror: None,
            };
            files.insert(key, Files::encode(&state))?;
            counts.files += 1;
        }
        Change::MirrorFilesListed {
            repo,
            project,
            display_name,
            files: listed,
        } => {
            if repos.get(Repos::key(repo))?.is_none() {
                return reject(Rejection::RepoMissing(repo.clone()));
            }
            ensure_project(serial, counts, projects, repo, project, display_name)?;
            for file in listed {
                let key = Files::key(repo, project, &file.record.filename);
                // A file listed already keeps its first record: what was
                // served is never replaced under a build.
                if files.get(&key)?.is_some() {
                    continue;
                }
                let yanks = file
                    .yanked
                    .as_ref()
                    .map(|reason| YankChange {
                        serial,
                        reason: Some(reason.clone()),
                    })
                    .into_iter()
                    .collect();
                let state = FileState {
                    record: file.record.clone(),
                    added: serial,
                    upload_time_us: file.upload_time_us.unwrap_or(event.time_us),
                    uploader: event.actor.clone(),
                    yanks,
                    mirror: Some(MirrorOrigin {
                        url: file.url.clone(),
                        cached: None,
                        metadata_cached: None,
                    }),
                };
                files.insert(key, Files::encode(&state))?;
                counts.files += 1;
            }
        }
        Change::MirrorFileCached {
            repo,
            project,
            filename,
            part,
            sha256,
            size,
        } => {
            let key = Files::key(repo, project, filename);
            let Some(mut state) = tx_get::<Files>(files, &key)? else {
                return reject(Rejection::FileMissing(filename.clone()));
            };
            let listed = match part {
                MirrorPart::File => Some(state.record.sha256),
                MirrorPart::CoreMetadata => state.record.core_metadata,
            };
            let Some(origin) = state.mirror.as_mut().filter(|_| listed == Some(*sha256)) else {
                return reject(Rejection::DigestMismatch(filename.clone()));
            };
            match part {
                MirrorPart::File => {
                    origin.cached.get_or_insert(serial);
                    state.record.size = *size;
                }
                MirrorPart::CoreMetadata => {
                    origin.metadata_cached.get_or_insert(serial);
                }
            }
            files.insert(key, Files::encode(&state))?;
        }
        Change::FilesYanked {
            repo,
            project,
            filenames,
            reason,
        } => {
            check_owner(serial, event, trees, repo, project, true)?;
            for filename in filenames {
                let key = Files::key(repo, project, filename);
                let Some(mut state) = tx_get::<Files>(files, &key)? else {
                    return reject(Rejection::FileMissing(filename.clone()));
                };
                state.yanks.push(YankChange {
                    serial,
                    reason: reason.clone(),
                });
                files.insert(key, Files::encode(&state))?;
            }
        }
        Change::TokenCreated { token } => {
            if tokens.get(Tokens::key(&token.hash))?.is_some() {
                return reject(Rejection::TokenExists);
            }
            if let Some(user) = &token.user {
                if users.get(Users::key(user))?.is_none() {
                    return reject(Rejection::UserMissing(user.clone()));
                }
            }
            let state = TokenState {
                record: token.clone(),
                created: serial,
                revoked: None,
            };
            tokens.insert(Tokens::key(&token.hash), Tokens::encode(&state))?;
            counts.tokens += 1;
        }
        Change::TokenRevoked { hash } => {
            let Some(mut state) = tx_get::<Tokens>(tokens, Tokens::key(hash))? else {
                return reject(Rejection::TokenMissing);
            };
            if state.revoked.is_none() {
                state.revoked = Some(serial);
                tokens.insert(Tokens::key(hash), Tokens::encode(&state))?;
                counts.tokens = counts.tokens.saturating_sub(1);
            }
        }
        Change::UserAdded { user } => {
            if users.get(Users::key(&user.name))?.is_some() {
                return reject(Rejection::UserExists(user.name.clone()));
            }
            let state = UserState {
                record: user.clone(),
                created: serial,
            };
            users.insert(Users::key(&user.name), Users::encode(&state))?;
            counts.users += 1;
        }
        Change::UserChanged { user } => {
            let Some(mut state) = tx_get::<Users>(users, Users::key(&user.name))? else {
                return reject(Rejection::UserMissing(user.name.clone()));
            };
            state.record = user.clone();
            users.insert(Users::key(&user.name), Users::encode(&state))?;
        }
        Change::UserRemoved { name } => {
            // The user's tokens stop working with the account: a token is
            // honoured only while an account of its user exists that was
            // created before it (see `Index::token`).
            if users.remove(Users::key(name))?.is_none() {
                return reject(Rejection::UserMissing(name.clone()));
            }
            counts.users = counts.users.saturating_sub(1);
        }
        Change::OwnersChanged {
            repo,
            project,
            owners: wanted,
        } => {
            if repos.get(Repos::key(repo))?.is_none() {
                return reject(Rejection::RepoMissing(repo.clone()));
            }
            if let Some(user) = &event.user {
                if !is_admin(users, user)? {
                    let current = tx_get::<Owners>(owners, &Owners::key(repo, project))?
                        .unwrap_or_default()
                        .owners;
                    if !current.contains(user) {
                        return reject(Rejection::NotOwner {
                            user: user.clone(),
                            project: project.clone(),
                            owners: current,
                        });
                    }
                }
                if wanted.is_empty() {
                    return reject(Rejection::InvalidOwners(format!(
                        "{project} must keep at least one owner; add someone else first"
                    )));
                }
            }
            for owner in wanted {
                if users.get(Users::key(owner))?.is_none() {
                    return reject(Rejection::UserMissing(owner.clone()));
                }
            }
            let state = OwnersState {
                owners: wanted.clone(),
                changed: serial,
            };
            owners.insert(Owners::key(repo, project), Owners::encode(&state))?;
        }
        Change::NpmPublished {
            repo,
            package,
            version,
            manifest,
            tarball,
            dist_tags,
            readme,
            description,
        } => {
            if repos.get(Repos::key(repo))?.is_none() {
                return reject(Rejection::RepoMissing(repo.clone()));
            }
            let vkey = NpmVersions::key(repo, package, version);
            if npm_versions.get(&vkey)?.is_some() {
                return reject(Rejection::VersionExists(format!("{package}@{version}")));
            }
            let pkey = NpmPackages::key(repo, package);
            let exists = npm_packages.get(&pkey)?.is_some();
            check_owner(serial, event, trees, repo, package, exists)?;
            let mut pkg =
                ensure_npm_package(serial, event.time_us, counts, npm_packages, repo, package)?;
            for tag in dist_tags {
                pkg.tags.entry(tag.clone()).or_default().push(TagChange {
                    serial,
                    time_us: event.time_us,
                    version: Some(version.clone()),
                });
            }
            npm_packages.insert(pkey, NpmPackages::encode(&pkg))?;
            let state = NpmVersionState {
                version: version.clone(),
                manifest: manifest.clone(),
                tarball: tarball.into(),
                published: serial,
                time_us: event.time_us,
                publisher: event.actor.clone(),
                readme: readme.clone(),
                description: description.clone(),
                deprecations: Vec::new(),
                unpublished: None,
                mirror: None,
            };
            npm_versions.insert(vkey, NpmVersions::encode(&state))?;
            counts.npm_versions += 1;
        }
        Change::NpmMirrorListed {
            repo,
            package,
            versions,
            dist_tags,
        } => {
            if repos.get(Repos::key(repo))?.is_none() {
                return reject(Rejection::RepoMissing(repo.clone()));
            }
            ensure_npm_package(serial, event.time_us, counts, npm_packages, repo, package)?;
            for listed in versions {
                let vkey = NpmVersions::key(repo, package, &listed.version);
                // A version listed already keeps its first record: what was
                // served is never replaced under a build.
                if npm_versions.get(&vkey)?.is_some() {
                    continue;
                }
                let manifest: serde_json::Value =
                    serde_json::from_str(&listed.manifest).unwrap_or_default();
                let description = manifest
                    .get("description")
                    .and_then(|d| d.as_str())
                    .map(str::to_owned);
                let time_us = listed.time_us.unwrap_or(event.time_us);
                let state = NpmVersionState {
                    version: listed.version.clone(),
                    manifest: listed.manifest.clone(),
                    tarball: TarballState {
                        sha256: None,
                        size: 0,
                        shasum: listed.shasum.clone().unwrap_or_default(),
                        integrity: listed.integrity.clone().unwrap_or_default(),
                    },
                    published: serial,
                    time_us,
                    publisher: event.actor.clone(),
                    readme: None,
                    description,
                    deprecations: listed
                        .deprecated
                        .iter()
                        .map(|message| DeprecationChange {
                            serial,
                            time_us,
                            message: Some(message.clone()),
                        })
                        .collect(),
                    unpublished: None,
                    mirror: Some(NpmMirrorOrigin {
                        url: listed.url.clone(),
                        cached: None,
                    }),
                };
                npm_versions.insert(vkey, NpmVersions::encode(&state))?;
                counts.npm_versions += 1;
            }
            set_dist_tags(serial, event.time_us, trees, repo, package, dist_tags)?;
        }
        Change::NpmMirrorTarballCached {
            repo,
            package,
            version,
            tarball,
        } => {
            let vkey = NpmVersions::key(repo, package, version);
            let Some(mut state) = tx_get::<NpmVersions>(npm_versions, &vkey)? else {
                return reject(Rejection::VersionMissing(format!("{package}@{version}")));
            };
            let declared = &state.tarball;
            let agrees = |declared: &str, stored: &str| declared.is_empty() || declared == stored;
            let matches = agrees(&declared.shasum, &tarball.shasum)
                && agrees(&declared.integrity, &tarball.integrity);
            let Some(origin) = state.mirror.as_mut().filter(|_| matches) else {
                return reject(Rejection::DigestMismatch(format!("{package}@{version}")));
            };
            // Cached once: a second fill of the same bytes changes nothing.
            if origin.cached.is_none() {
                origin.cached = Some(serial);
                state.tarball = tarball.into();
                npm_versions.insert(vkey, NpmVersions::encode(&state))?;
            }
        }
        Change::NpmDistTagChanged {
            repo,
            package,
            tag,
            version,
        } => {
            check_owner(serial, event, trees, repo, package, true)?;
            set_dist_tags(
                serial,
                event.time_us,
                trees,
                repo,
                package,
                &[(tag.clone(), version.clone())],
            )?;
        }
        Change::NpmDeprecated {
            repo,
            package,
            changes,
        } => {
            check_owner(serial, event, trees, repo, package, true)?;
            for (version, message) in changes {
                let vkey = NpmVersions::key(repo, package, version);
                let Some(mut state) = tx_get::<NpmVersions>(npm_versions, &vkey)? else {
                    return reject(Rejection::VersionMissing(format!("{package}@{version}")));
                };
                state.deprecations.push(DeprecationChange {
                    serial,
                    time_us: event.time_us,
                    message: message.clone(),
                });
                npm_versions.insert(vkey, NpmVersions::encode(&state))?;
            }
        }
        Change::NpmUnpublished {
            repo,
            package,
            versions,
            dist_tags,
        } => {
            check_owner(serial, event, trees, repo, package, true)?;
            for version in versions {
                let vkey = NpmVersions::key(repo, package, version);
                let live =
                    tx_get::<NpmVersions>(npm_versions, &vkey)?.filter(|v| v.unpublished.is_none());
                let Some(mut state) = live else {
                    return reject(Rejection::VersionMissing(format!("{package}@{version}")));
                };
                state.unpublished = Some(serial);
                npm_versions.insert(vkey, NpmVersions::encode(&state))?;
                counts.npm_versions = counts.npm_versions.saturating_sub(1);
            }
            set_dist_tags(serial, event.time_us, trees, repo, package, dist_tags)?;
        }
        Change::GenericFileStored {
            repo,
            path,
            sha256,
            size,
            upload_time_us,
            upstream_url,
        } => {
            let generic = tx_get::<Repos>(repos, Repos::key(repo))?
                .is_some_and(|r| r.settings.format == RepoFormat::Generic);
            if !generic {
                return reject(Rejection::RepoMissing(repo.clone()));
            }
            let key = GenericFiles::key(repo, path.as_str());
            if generic_files.get(&key)?.is_some() {
                return reject(Rejection::FileExists(path.to_string()));
            }
            // A path is a file or a directory, never both: an export
            // writes it to a filesystem.
            let as_dir = format!("{path}/");
            if generic_dirs.get(GenericDirs::key(repo, &as_dir))?.is_some() {
                return reject(Rejection::PathConflict(format!(
                    "{path} is a directory; a file cannot be stored there"
                )));
            }
            for dir in path.parent_dirs() {
                let file = dir.trim_end_matches('/');
                if generic_files.get(GenericFiles::key(repo, file))?.is_some() {
                    return reject(Rejection::PathConflict(format!(
                        "{file} is a file, so {path} cannot be stored under it"
                    )));
                }
            }
            for dir in path.parent_dirs() {
                let dkey = GenericDirs::key(repo, dir);
                if generic_dirs.get(&dkey)?.is_none() {
                    generic_dirs.insert(dkey, GenericDirs::encode(&serial))?;
                }
            }
            let state = GenericFileState {
                path: path.clone(),
                sha256: *sha256,
                size: *size,
                added: serial,
                upload_time_us: upload_time_us.unwrap_or(event.time_us),
                uploader: event.actor.clone(),
                upstream_url: upstream_url.clone(),
            };
            generic_files.insert(key, GenericFiles::encode(&state))?;
            counts.generic_files += 1;
        }
    }
    Ok(())
}

/// Whether `user` is an admin account.
fn is_admin(users: &TransactionalTree, user: &str) -> TxResult<bool> {
    Ok(tx_get::<Users>(users, Users::key(user))?.is_some_and(|u| u.record.admin))
}

/// Package ownership (see [`ownership`]), checked here rather than only
/// in a handler so that two users racing to publish a new name cannot
/// both win. Records the first user of a new project as its owner.
fn check_owner(
    serial: Serial,
    event: &Event,
    trees: &ApplyTrees<'_>,
    repo: &RepoName,
    project: &str,
    exists: bool,
) -> TxResult<()> {
    let Some(user) = &event.user else {
        return Ok(());
    };
    let account = tx_get::<Users>(trees.users, Users::key(user))?;
    let key = Owners::key(repo, project);
    let owners = tx_get::<Owners>(trees.owners, &key)?;
    match ownership(user, account.as_ref(), owners.as_ref(), project, exists) {
        Ok(Ownership::Allowed) => Ok(()),
        Ok(Ownership::Claims) => {
            let state = OwnersState {
                owners: vec![user.clone()],
                changed: serial,
            };
            trees.owners.insert(key, Owners::encode(&state))?;
            Ok(())
        }
        Err(r) => reject(r),
    }
}

/// Creates a PyPI project on its first file.
fn ensure_project(
    serial: Serial,
    counts: &mut Counts,
    projects: &TransactionalTree,
    repo: &RepoName,
    project: &str,
    display_name: &str,
) -> TxResult<()> {
    let pkey = Projects::key(repo, project);
    if projects.get(&pkey)?.is_none() {
        let state = ProjectState {
            name: project.to_owned(),
            display_name: display_name.to_owned(),
            created: serial,
        };
        projects.insert(pkey, Projects::encode(&state))?;
        counts.projects += 1;
    }
    Ok(())
}

/// Creates an npm package on its first version; returns it as it is now.
fn ensure_npm_package(
    serial: Serial,
    time_us: i64,
    counts: &mut Counts,
    npm_packages: &TransactionalTree,
    repo: &RepoName,
    package: &str,
) -> TxResult<NpmPackageState> {
    let pkey = NpmPackages::key(repo, package);
    if let Some(pkg) = tx_get::<NpmPackages>(npm_packages, &pkey)? {
        return Ok(pkg);
    }
    counts.npm_packages += 1;
    let pkg = NpmPackageState {
        name: package.to_owned(),
        created: serial,
        created_us: time_us,
        tags: BTreeMap::new(),
    };
    npm_packages.insert(pkey, NpmPackages::encode(&pkg))?;
    Ok(pkg)
}

/// Sets (or with `None` removes) dist-tags of a package; a tag may only
/// point at a live version.
fn set_dist_tags(
    serial: Serial,
    time_us: i64,
    trees: &ApplyTrees<'_>,
    repo: &RepoName,
    package: &str,
    changes: &[(String, Option<String>)],
) -> TxResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let pkey = NpmPackages::key(repo, package);
    let Some(mut pkg) = tx_get::<NpmPackages>(trees.npm_packages, &pkey)? else {
        return reject(Rejection::PackageMissing(package.to_owned()));
    };
    for (tag, version) in changes {
        if let Some(version) = version {
            let vkey = NpmVersions::key(repo, package, version);
            let live = tx_get::<NpmVersions>(trees.npm_versions, &vkey)?
                .is_some_and(|v| v.unpublished.is_none());
            if !live {
                return reject(Rejection::VersionMissing(format!("{package}@{version}")));
            }
        }
        pkg.tags.entry(tag.clone()).or_default().push(TagChange {
            serial,
            time_us,
            version: version.clone(),
        });
    }
    trees.npm_packages.insert(pkey, NpmPackages::encode(&pkg))?;
    Ok(())
}
