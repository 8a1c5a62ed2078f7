use std::sync::Arc;

use hoard_core::{
    Change, Event, FileRecord, Perm, RepoFormat, RepoName, RepoSettings, Serial, Sha256,
    TokenRecord,
};
use hoard_store::{Index, LocalWriter, Rejection, StoreError};

fn repo() -> RepoName {
    "pypi".parse().unwrap()
}

fn event(change: Change) -> Event {
    Event {
        actor: "test".into(),
        time_us: 1_700_000_000_000_000,
        user: None,
        node: None,
        change,
    }
}

fn created() -> Event {
    event(Change::RepoCreated {
        repo: repo(),
        settings: RepoSettings::hosted(RepoFormat::Pypi),
    })
}

fn added(filename: &str, version: &str) -> Event {
    event(Change::FileAdded {
        repo: repo(),
        project: "demo".into(),
        display_name: "Demo".into(),
        file: FileRecord {
            filename: filename.into(),
            version: version.into(),
            sha256: Sha256::of(filename.as_bytes()),
            size: 3,
            packagetype: "bdist_wheel".into(),
            requires_python: None,
            core_metadata: None,
        },
        upload_time_us: None,
    })
}

fn yank(filename: &str, reason: Option<&str>) -> Event {
    event(Change::FilesYanked {
        repo: repo(),
        project: "demo".into(),
        filenames: vec![filename.into()],
        reason: reason.map(str::to_owned),
    })
}

#[test]
fn apply_requires_dense_serials_and_rejects_invalid_events() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).unwrap();
    assert!(matches!(
        index.apply(Serial(2), &created()),
        Err(StoreError::Gap { .. })
    ));
    index.apply(Serial(1), &created()).unwrap();
    assert!(matches!(
        index.apply(Serial(1), &created()),
        Err(StoreError::Gap { .. })
    ));
    assert!(matches!(
        index.apply(Serial(2), &created()),
        Err(StoreError::Rejected(Rejection::RepoExists(_)))
    ));
    index
        .apply(Serial(2), &added("demo-1.0.whl", "1.0"))
        .unwrap();
    assert!(matches!(
        index.apply(Serial(3), &added("demo-1.0.whl", "1.0")),
        Err(StoreError::Rejected(Rejection::FileExists(_)))
    ));
    // A rejected event takes no serial and changes nothing.
    assert_eq!(index.applied_serial().unwrap(), Serial(2));
    assert_eq!(index.counts().unwrap().files, 1);
    assert!(index.event(Serial(3)).unwrap().is_none());
}

#[test]
fn point_in_time_reads_follow_serials() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).unwrap();
    index.apply(Serial(1), &created()).unwrap();
    index
        .apply(Serial(2), &added("demo-1.0.whl", "1.0"))
        .unwrap();
    index
        .apply(Serial(3), &yank("demo-1.0.whl", Some("broken")))
        .unwrap();
    index
        .apply(Serial(4), &added("demo-2.0.whl", "2.0"))
        .unwrap();
    index.apply(Serial(5), &yank("demo-1.0.whl", None)).unwrap();

    let names = |at| -> Vec<String> {
        index
            .files(&repo(), "demo", at)
            .unwrap()
            .into_iter()
            .map(|f| f.record.filename)
            .collect()
    };
    assert!(index.projects(&repo(), Some(Serial(1))).unwrap().is_empty());
    assert_eq!(names(Some(Serial(2))), vec!["demo-1.0.whl"]);
    assert_eq!(names(None), vec!["demo-1.0.whl", "demo-2.0.whl"]);
    let f = index
        .file(&repo(), "demo", "demo-1.0.whl", None)
        .unwrap()
        .unwrap();
    assert_eq!(f.yanked_at(Some(Serial(2))), None);
    assert_eq!(f.yanked_at(Some(Serial(3))), Some("broken"));
    assert_eq!(f.yanked_at(Some(Serial(4))), Some("broken"));
    assert_eq!(f.yanked_at(None), None);
    assert!(index
        .file(&repo(), "demo", "demo-2.0.whl", Some(Serial(3)))
        .unwrap()
        .is_none());
}

#[test]
fn changelog_and_digest_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let digest;
    {
        let index = Index::open(dir.path()).unwrap();
        index.apply(Serial(1), &created()).unwrap();
        index
            .apply(Serial(2), &added("demo-1.0.whl", "1.0"))
            .unwrap();
        index.flush().unwrap();
        digest = index.digest().unwrap();
        // A second open of the same dir is refused while this one lives.
        assert!(matches!(
            Index::open(dir.path()),
            Err(StoreError::Locked(_))
        ));
    }
    let index = Index::open(dir.path()).unwrap();
    assert_eq!(index.applied_serial().unwrap(), Serial(2));
    assert_eq!(index.digest().unwrap(), digest);
    let events: Vec<_> = index
        .events_since(Serial(0))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].1, added("demo-1.0.whl", "1.0"));
    // Newest first, from a serial on (past the end is the end).
    let back: Vec<Serial> = index
        .events_back_from(Serial(9))
        .map(|e| e.map(|(s, _)| s))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(back, [Serial(2), Serial(1)]);
    assert_eq!(index.events_back_from(Serial(1)).count(), 1);
    assert_eq!(index.events_back_from(Serial(0)).count(), 0);
    // What the repository holds, now and as of serial 1.
    let usage = index.repo_usage(&repo(), None).unwrap();
    assert_eq!((usage.files, usage.bytes), (1, 3));
    let before = index.repo_usage(&repo(), Some(Serial(1))).unwrap();
    assert_eq!((before.files, before.bytes), (0, 0));

    // Another index that applies the same events has the same digest.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Index::open(other_dir.path()).unwrap();
    for (serial, ev) in events {
        other.apply(serial, &ev).unwrap();
    }
    assert_eq!(other.digest().unwrap(), digest);
}

#[tokio::test]
async fn local_writer_assigns_serials_and_tokens_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let index = Arc::new(Index::open(dir.path()).unwrap());
    let writer = LocalWriter::spawn(index.clone()).unwrap();
    let hash = Sha256::of(b"secret");
    let token = event(Change::TokenCreated {
        token: TokenRecord {
            hash,
            repo: Some(repo()),
            perm: Perm::Upload,
            label: "ci".into(),
            id: String::new(),
            user: None,
            projects: None,
            expires_us: None,
        },
    });
    let mut handles = Vec::new();
    for ev in [created(), token] {
        let writer = writer.clone();
        handles.push(tokio::spawn(async move { writer.commit(ev).await }));
    }
    let mut serials: Vec<Serial> = Vec::new();
    for h in handles {
        serials.push(h.await.unwrap().unwrap());
    }
    serials.sort();
    assert_eq!(serials, vec![Serial(1), Serial(2)]);
    assert_eq!(*writer.durable_serial().borrow(), Serial(2));
    assert_eq!(index.token(&hash).unwrap().unwrap().record.label, "ci");
    writer
        .commit(event(Change::TokenRevoked { hash }))
        .await
        .unwrap();
    assert!(index.token(&hash).unwrap().is_none());
    assert!(matches!(
        writer.commit(created()).await,
        Err(StoreError::Rejected(_))
    ));
}

fn npm_repo() -> RepoName {
    "npm".parse().unwrap()
}

fn npm_published(version: &str, tags: &[&str]) -> Event {
    event(Change::NpmPublished {
        repo: npm_repo(),
        package: "@acme/widget".into(),
        version: version.into(),
        manifest: format!("{{\"name\":\"@acme/widget\",\"version\":\"{version}\"}}"),
        tarball: hoard_core::NpmTarball {
            sha256: Sha256::of(version.as_bytes()),
            size: 1,
            shasum: "x".into(),
            integrity: "sha512-x".into(),
        },
        dist_tags: tags.iter().map(|t| t.to_string()).collect(),
        readme: None,
        description: None,
    })
}

#[test]
fn npm_tags_deprecations_and_unpublish_are_versioned_by_serial() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).unwrap();
    let steps = [
        event(Change::RepoCreated {
            repo: npm_repo(),
            settings: RepoSettings::hosted(RepoFormat::Npm),
        }),
        npm_published("1.0.0", &["latest"]),
        npm_published("2.0.0", &["latest"]),
        event(Change::NpmDistTagChanged {
            repo: npm_repo(),
            package: "@acme/widget".into(),
            tag: "beta".into(),
            version: Some("1.0.0".into()),
        }),
        event(Change::NpmDeprecated {
            repo: npm_repo(),
            package: "@acme/widget".into(),
            changes: vec![("1.0.0".into(), Some("old".into()))],
        }),
        event(Change::NpmUnpublished {
            repo: npm_repo(),
            package: "@acme/widget".into(),
            versions: vec!["2.0.0".into()],
            dist_tags: vec![("latest".into(), Some("1.0.0".into()))],
        }),
    ];
    for (i, ev) in steps.iter().enumerate() {
        index.apply(Serial(i as u64 + 1), ev).unwrap();
    }
    // Republishing a version, even an unpublished one, is refused.
    assert!(matches!(
        index.apply(Serial(7), &npm_published("2.0.0", &[])),
        Err(StoreError::Rejected(Rejection::VersionExists(_)))
    ));
    // A tag cannot point at an unpublished version.
    assert!(matches!(
        index.apply(
            Serial(7),
            &event(Change::NpmDistTagChanged {
                repo: npm_repo(),
                package: "@acme/widget".into(),
                tag: "next".into(),
                version: Some("2.0.0".into()),
            })
        ),
        Err(StoreError::Rejected(Rejection::VersionMissing(_)))
    ));

    let pkg = index
        .npm_package(&npm_repo(), "@acme/widget", None)
        .unwrap()
        .unwrap();
    assert_eq!(pkg.tags_at(Some(Serial(2)))["latest"], "1.0.0");
    assert_eq!(pkg.tags_at(Some(Serial(3)))["latest"], "2.0.0");
    assert!(!pkg.tags_at(Some(Serial(3))).contains_key("beta"));
    assert_eq!(pkg.tags_at(None)["beta"], "1.0.0");
    // The unpublish moved latest back in the same event.
    assert_eq!(pkg.tags_at(Some(Serial(5)))["latest"], "2.0.0");
    assert_eq!(pkg.tags_at(Some(Serial(6)))["latest"], "1.0.0");

    let live = |at| -> Vec<String> {
        index
            .npm_versions(&npm_repo(), "@acme/widget", at)
            .unwrap()
            .into_iter()
            .filter(|v| v.live_at(at))
            .map(|v| v.version)
            .collect()
    };
    assert_eq!(live(Some(Serial(2))), vec!["1.0.0"]);
    assert_eq!(live(Some(Serial(5))), vec!["1.0.0", "2.0.0"]);
    assert_eq!(live(None), vec!["1.0.0"]);
    let v1 = index
        .npm_version(&npm_repo(), "@acme/widget", "1.0.0")
        .unwrap()
        .unwrap();
    assert_eq!(v1.deprecated_at(Some(Serial(4))), None);
    assert_eq!(v1.deprecated_at(None), Some("old"));
    assert_eq!(index.counts().unwrap().npm_versions, 1);
}

/// Opens an index that was just dropped: sled's own flusher thread may
/// hold the directory's lock for a moment after the last handle is gone.
fn reopen(dir: &std::path::Path) -> Index {
    for _ in 0..100 {
        match Index::open(dir) {
            Err(StoreError::Locked(_)) => std::thread::sleep(std::time::Duration::from_millis(20)),
            other => return other.unwrap(),
        }
    }
    panic!("{} stayed locked", dir.display());
}

#[tokio::test]
async fn a_snapshot_install_counts_only_once_finished_and_a_reset_empties_the_index() {
    let source_dir = tempfile::tempdir().unwrap();
    let source = Index::open(source_dir.path()).unwrap();
    source.apply(Serial(1), &created()).unwrap();
    source
        .apply(Serial(2), &added("demo-1.0.tar.gz", "1.0"))
        .unwrap();
    let snap = source_dir.path().join("snap");
    source.export_snapshot(&snap).unwrap();
    let digest = source.digest().unwrap();

    // Imported but not finished (a crash while its blobs are fetched):
    // the next open starts empty, so the snapshot is installed again.
    let dir = tempfile::tempdir().unwrap();
    {
        let index = reopen(dir.path());
        index.import_snapshot(&snap).unwrap();
        assert_eq!(index.applied_serial().unwrap(), Serial(2));
    }
    let index = reopen(dir.path());
    assert_eq!(index.applied_serial().unwrap(), Serial(0));
    assert!(index.files(&repo(), "demo", None).unwrap().is_empty());

    index.import_snapshot(&snap).unwrap();
    index.finish_snapshot_install().await.unwrap();
    drop(index);
    let index = reopen(dir.path());
    assert_eq!(index.applied_serial().unwrap(), Serial(2));
    assert_eq!(index.digest().unwrap(), digest);

    // A rejoin's reset: nothing left, and a new history starts at 1.
    index.reset().await.unwrap();
    drop(index);
    let index = reopen(dir.path());
    assert_eq!(index.applied_serial().unwrap(), Serial(0));
    assert_eq!(index.counts().unwrap().files, 0);
    index.apply(Serial(1), &created()).unwrap();
}

fn mirrored(filename: &str, yanked: Option<&str>) -> hoard_core::MirroredFile {
    hoard_core::MirroredFile {
        record: FileRecord {
            filename: filename.into(),
            version: "1.0".into(),
            sha256: Sha256::of(filename.as_bytes()),
            size: 0,
            packagetype: "bdist_wheel".into(),
            requires_python: None,
            core_metadata: Some(Sha256::of(b"metadata")),
        },
        url: format!("http://127.0.0.1:9/files/{filename}"),
        upload_time_us: Some(42),
        yanked: yanked.map(str::to_owned),
    }
}

fn cached(filename: &str, part: hoard_core::MirrorPart, sha256: Sha256) -> Event {
    event(Change::MirrorFileCached {
        repo: repo(),
        project: "demo".into(),
        filename: filename.into(),
        part,
        sha256,
        size: 1234,
    })
}

#[test]
fn mirrored_files_are_listed_before_their_bytes_and_cached_only_with_the_listed_digest() {
    use hoard_core::MirrorPart;
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).unwrap();
    index.apply(Serial(1), &created()).unwrap();
    let listed = |files| {
        event(Change::MirrorFilesListed {
            repo: repo(),
            project: "demo".into(),
            display_name: "Demo".into(),
            files,
        })
    };
    index
        .apply(
            Serial(2),
            &listed(vec![
                mirrored("demo-1.0-py3-none-any.whl", None),
                mirrored("demo-0.9-py3-none-any.whl", Some("broken")),
            ]),
        )
        .unwrap();
    let file = |name: &str| index.file(&repo(), "demo", name, None).unwrap().unwrap();
    let wheel = file("demo-1.0-py3-none-any.whl");
    assert!(!wheel.is_stored());
    assert!(wheel.stored_blobs().is_empty());
    assert_eq!(wheel.upload_time_us, 42);
    assert_eq!(
        file("demo-0.9-py3-none-any.whl").yanked_at(None),
        Some("broken")
    );

    // Listing a known file again keeps the first record.
    let mut changed = mirrored("demo-1.0-py3-none-any.whl", None);
    changed.url = "http://127.0.0.1:9/elsewhere".into();
    index.apply(Serial(3), &listed(vec![changed])).unwrap();
    assert_eq!(
        file("demo-1.0-py3-none-any.whl").mirror.unwrap().url,
        "http://127.0.0.1:9/files/demo-1.0-py3-none-any.whl"
    );
    assert_eq!(index.counts().unwrap().files, 2);

    // Bytes other than the listed ones are refused, and take no serial.
    assert!(matches!(
        index.apply(
            Serial(4),
            &cached(
                "demo-1.0-py3-none-any.whl",
                MirrorPart::File,
                Sha256::of(b"other")
            )
        ),
        Err(StoreError::Rejected(Rejection::DigestMismatch(_)))
    ));
    assert_eq!(index.applied_serial().unwrap(), Serial(3));

    let sha = Sha256::of(b"demo-1.0-py3-none-any.whl");
    index
        .apply(
            Serial(4),
            &cached("demo-1.0-py3-none-any.whl", MirrorPart::File, sha),
        )
        .unwrap();
    let wheel = file("demo-1.0-py3-none-any.whl");
    assert!(wheel.is_stored());
    assert_eq!(wheel.record.size, 1234);
    assert_eq!(wheel.stored_blobs(), vec![sha]);
    index
        .apply(
            Serial(5),
            &cached(
                "demo-1.0-py3-none-any.whl",
                MirrorPart::CoreMetadata,
                Sha256::of(b"metadata"),
            ),
        )
        .unwrap();
    assert_eq!(
        file("demo-1.0-py3-none-any.whl").stored_blobs(),
        vec![sha, Sha256::of(b"metadata")]
    );
}

fn npm_created() -> Event {
    event(Change::RepoCreated {
        repo: "npm-remote".parse().unwrap(),
        settings: RepoSettings::hosted(RepoFormat::Npm),
    })
}

fn npm_listed(version: &str, shasum: &str, tags: Vec<(&str, Option<&str>)>) -> Event {
    event(Change::NpmMirrorListed {
        repo: "npm-remote".parse().unwrap(),
        package: "@s/demo".into(),
        versions: vec![hoard_core::MirroredNpmVersion {
            version: version.into(),
            manifest: format!(r#"{{"name":"@s/demo","version":"{version}","description":"d"}}"#),
            url: format!("http://127.0.0.1:9/tarballs/@s/demo/-/demo-{version}.tgz"),
            shasum: Some(shasum.into()),
            integrity: None,
            time_us: Some(7),
            deprecated: None,
        }],
        dist_tags: tags
            .into_iter()
            .map(|(t, v)| (t.to_owned(), v.map(str::to_owned)))
            .collect(),
    })
}

#[test]
fn mirrored_npm_versions_are_listed_before_their_tarballs_and_cached_only_with_the_declared_digest()
{
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).unwrap();
    let remote: RepoName = "npm-remote".parse().unwrap();
    index.apply(Serial(1), &npm_created()).unwrap();
    index
        .apply(
            Serial(2),
            &npm_listed("1.0.0", "aa", vec![("latest", Some("1.0.0"))]),
        )
        .unwrap();
    let version = |v: &str| index.npm_version(&remote, "@s/demo", v).unwrap().unwrap();
    let listed = version("1.0.0");
    assert_eq!(listed.tarball.sha256, None);
    assert_eq!(listed.tarball.shasum, "aa");
    assert_eq!(listed.time_us, 7);
    assert_eq!(listed.description.as_deref(), Some("d"));
    assert_eq!(index.all_npm_tarballs().count(), 0, "nothing is stored yet");
    let tags = |index: &Index| {
        index
            .npm_package(&remote, "@s/demo", None)
            .unwrap()
            .unwrap()
            .tags_at(None)
    };
    assert_eq!(tags(&index)["latest"], "1.0.0");

    // A tag may only point at a version that is listed: the event is
    // refused whole and takes no serial.
    assert!(matches!(
        index.apply(
            Serial(3),
            &npm_listed("1.1.0", "bb", vec![("next", Some("9.9.9"))])
        ),
        Err(StoreError::Rejected(Rejection::VersionMissing(_)))
    ));
    assert!(index
        .npm_version(&remote, "@s/demo", "1.1.0")
        .unwrap()
        .is_none());

    // Listing a known version again keeps the first record; tags move.
    index
        .apply(
            Serial(3),
            &npm_listed("1.0.0", "cc", vec![("beta", Some("1.0.0"))]),
        )
        .unwrap();
    assert_eq!(version("1.0.0").tarball.shasum, "aa");
    assert_eq!(tags(&index)["beta"], "1.0.0");
    assert_eq!(index.counts().unwrap().npm_versions, 1);

    let cached = |shasum: &str| {
        event(Change::NpmMirrorTarballCached {
            repo: remote.clone(),
            package: "@s/demo".into(),
            version: "1.0.0".into(),
            tarball: hoard_core::NpmTarball {
                sha256: Sha256::of(b"tgz"),
                size: 3,
                shasum: shasum.into(),
                integrity: "sha512-x".into(),
            },
        })
    };
    assert!(matches!(
        index.apply(Serial(4), &cached("bb")),
        Err(StoreError::Rejected(Rejection::DigestMismatch(_)))
    ));
    index.apply(Serial(4), &cached("aa")).unwrap();
    let stored = version("1.0.0");
    assert_eq!(stored.tarball.sha256, Some(Sha256::of(b"tgz")));
    assert_eq!(stored.tarball.integrity, "sha512-x");
    assert_eq!(stored.mirror.unwrap().cached, Some(Serial(4)));
    assert_eq!(
        index
            .all_npm_tarballs()
            .map(Result::unwrap)
            .collect::<Vec<_>>(),
        vec![("1.0.0".to_owned(), Sha256::of(b"tgz"))]
    );
}

fn as_user(user: &str, change: Change) -> Event {
    Event {
        user: Some(user.into()),
        ..event(change)
    }
}

fn user_added(name: &str, admin: bool) -> Event {
    event(Change::UserAdded {
        user: hoard_core::UserRecord {
            name: name.into(),
            password_hash: "$argon2id$test".into(),
            admin,
            email: None,
        },
    })
}

fn user_token(user: &str, secret: &[u8]) -> Event {
    event(Change::TokenCreated {
        token: TokenRecord {
            hash: Sha256::of(secret),
            repo: None,
            perm: Perm::Upload,
            label: user.into(),
            id: String::new(),
            user: Some(user.into()),
            projects: None,
            expires_us: None,
        },
    })
}

#[test]
fn the_first_user_to_upload_owns_the_project_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).unwrap();
    let mut serial = Serial::ZERO;
    let mut apply = |ev: Event| -> Result<(), StoreError> {
        let next = serial.next();
        index.apply(next, &ev)?;
        serial = next;
        Ok(())
    };
    apply(created()).unwrap();
    apply(user_added("alice", false)).unwrap();
    apply(user_added("bob", false)).unwrap();
    apply(user_added("root", true)).unwrap();
    apply(as_user("alice", added("demo-1.0.tar.gz", "1.0").change)).unwrap();

    let refused = apply(as_user("bob", added("demo-9.9.9.tar.gz", "9.9.9").change));
    match refused {
        Err(StoreError::Rejected(Rejection::NotOwner { user, owners, .. })) => {
            assert_eq!(user, "bob");
            assert_eq!(owners, vec!["alice".to_string()]);
        }
        other => panic!("bob's upload was not refused: {other:?}"),
    }
    // Nothing of it is left: no serial, no file.
    assert_eq!(index.applied_serial().unwrap(), Serial(5));
    assert_eq!(index.files(&repo(), "demo", None).unwrap().len(), 1);

    // bob may not make himself an owner; alice may add him.
    let add_bob = Change::OwnersChanged {
        repo: repo(),
        project: "demo".into(),
        owners: vec!["alice".into(), "bob".into()],
    };
    assert!(matches!(
        apply(as_user("bob", add_bob.clone())),
        Err(StoreError::Rejected(Rejection::NotOwner { .. }))
    ));
    apply(as_user("alice", add_bob)).unwrap();
    apply(as_user("bob", added("demo-2.0.tar.gz", "2.0").change)).unwrap();
    // An admin user, and a change made as no user, pass.
    apply(as_user("root", added("demo-3.0.tar.gz", "3.0").change)).unwrap();
    apply(added("demo-4.0.tar.gz", "4.0")).unwrap();
    // Owners must be users.
    assert!(matches!(
        apply(as_user(
            "alice",
            Change::OwnersChanged {
                repo: repo(),
                project: "demo".into(),
                owners: vec!["mallory".into()],
            }
        )),
        Err(StoreError::Rejected(Rejection::UserMissing(_)))
    ));
    assert_eq!(index.owners(&repo(), "demo").unwrap(), vec!["alice", "bob"]);
}

#[test]
fn a_project_without_owners_is_for_admins_and_a_removed_users_tokens_stay_dead() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).unwrap();
    let mut serial = Serial::ZERO;
    let mut apply = |ev: Event| -> Result<(), StoreError> {
        let next = serial.next();
        index.apply(next, &ev)?;
        serial = next;
        Ok(())
    };
    apply(created()).unwrap();
    apply(user_added("bob", false)).unwrap();
    // A service token (no user) made the project: nobody owns it.
    apply(added("demo-1.0.tar.gz", "1.0")).unwrap();
    match apply(as_user("bob", added("demo-2.0.tar.gz", "2.0").change)) {
        Err(StoreError::Rejected(r @ Rejection::NotOwner { .. })) => {
            assert!(r.to_string().contains("no owners"), "{r}");
        }
        other => panic!("{other:?}"),
    }
    // A token for a user who does not exist is refused.
    assert!(matches!(
        apply(user_token("ghost", b"g")),
        Err(StoreError::Rejected(Rejection::UserMissing(_)))
    ));
    apply(user_token("bob", b"bob-secret")).unwrap();
    assert!(index.token(&Sha256::of(b"bob-secret")).unwrap().is_some());
    apply(event(Change::UserRemoved { name: "bob".into() })).unwrap();
    assert!(index.token(&Sha256::of(b"bob-secret")).unwrap().is_none());
    // A new account of the same name does not revive the old token.
    apply(user_added("bob", false)).unwrap();
    assert!(index.token(&Sha256::of(b"bob-secret")).unwrap().is_none());
    assert_eq!(index.counts().unwrap().users, 1);
}

fn generic_stored(repo: &str, path: &str) -> Event {
    event(Change::GenericFileStored {
        repo: repo.parse().unwrap(),
        path: path.parse().unwrap(),
        sha256: Sha256::of(path.as_bytes()),
        size: path.len() as u64,
        upload_time_us: None,
        upstream_url: None,
    })
}

fn listing(index: &Index, dir: &str, at: Option<u64>) -> Option<Vec<String>> {
    use hoard_store::GenericEntry;
    let entries = index
        .generic_listing(&"media".parse().unwrap(), dir, at.map(Serial))
        .unwrap()?;
    Some(
        entries
            .into_iter()
            .map(|e| match e {
                GenericEntry::Dir { name, .. } => format!("{name}/"),
                GenericEntry::File(f) => f.path.file_name().to_owned(),
            })
            .collect(),
    )
}

#[test]
fn generic_paths_are_files_or_directories_listed_as_of_a_serial() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).unwrap();
    let media: RepoName = "media".parse().unwrap();
    index
        .apply(
            Serial(1),
            &event(Change::RepoCreated {
                repo: media.clone(),
                settings: RepoSettings::hosted(RepoFormat::Generic),
            }),
        )
        .unwrap();
    index
        .apply(Serial(2), &generic_stored("media", "images/app-1.0.box"))
        .unwrap();
    index
        .apply(Serial(3), &generic_stored("media", "readme.txt"))
        .unwrap();
    index
        .apply(
            Serial(4),
            &generic_stored("media", "images/old/app-0.9.box"),
        )
        .unwrap();
    index
        .apply(Serial(5), &generic_stored("media", "images/app-1.1.box"))
        .unwrap();
    // A name that sorts between `images/` and what follows it.
    index
        .apply(Serial(6), &generic_stored("media", "images-x.txt"))
        .unwrap();

    assert_eq!(
        listing(&index, "", None).unwrap(),
        ["images/", "images-x.txt", "readme.txt"]
    );
    assert_eq!(
        listing(&index, "images/", None).unwrap(),
        ["old/", "app-1.0.box", "app-1.1.box"]
    );
    // As of serial 3: neither `old/` nor 1.1 existed yet.
    assert_eq!(
        listing(&index, "images/", Some(3)).unwrap(),
        ["app-1.0.box"]
    );
    assert_eq!(listing(&index, "images/old/", Some(3)), None);
    assert_eq!(listing(&index, "", Some(1)).unwrap(), Vec::<String>::new());
    assert_eq!(listing(&index, "nothing/", None), None);

    let file = index
        .generic_file(&media, "images/app-1.0.box", None)
        .unwrap()
        .unwrap();
    assert_eq!(file.added, Serial(2));
    assert_eq!(file.uploader, "test");
    assert!(index
        .generic_file(&media, "images/app-1.1.box", Some(Serial(4)))
        .unwrap()
        .is_none());

    // Immutable, and never both a file and a directory.
    for (path, why) in [
        ("images/app-1.0.box", "exists"),
        ("images", "is a directory"),
        ("readme.txt/x", "is a file"),
        ("images/old", "is a directory"),
    ] {
        let err = index
            .apply(Serial(7), &generic_stored("media", path))
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Rejected(r) if r.to_string().contains(why)),
            "{path}: {err}"
        );
    }
    // Only into a generic repository.
    index.apply(Serial(7), &created()).unwrap();
    assert!(matches!(
        index.apply(Serial(8), &generic_stored("pypi", "x.bin")),
        Err(StoreError::Rejected(Rejection::RepoMissing(_)))
    ));
    assert_eq!(index.counts().unwrap().generic_files, 5);
    let usage = index.repo_usage(&media, None).unwrap();
    assert_eq!(usage.files, 5);
    assert_eq!(index.all_generic_files().count(), 5);
}

#[test]
fn a_batch_takes_consecutive_serials_and_the_same_digest_as_one_by_one_or_nothing() {
    let events = vec![
        created(),
        added("demo-1.0-py3-none-any.whl", "1.0"),
        added("demo-1.1-py3-none-any.whl", "1.1"),
        generic_stored_in_pypi_is_refused(),
    ];
    let one_dir = tempfile::tempdir().unwrap();
    let one = Index::open(one_dir.path()).unwrap();
    for (i, e) in events[..3].iter().enumerate() {
        one.apply(Serial(i as u64 + 1), e).unwrap();
    }
    let batch_dir = tempfile::tempdir().unwrap();
    let batch = Index::open(batch_dir.path()).unwrap();
    // A refused event refuses the whole batch: nothing of it is applied.
    assert!(matches!(
        batch.apply_batch(&events),
        Err(StoreError::Rejected(Rejection::RepoMissing(_)))
    ));
    assert_eq!(batch.applied_serial().unwrap(), Serial::ZERO);
    assert!(batch.repo(&repo()).unwrap().is_none());
    assert_eq!(batch.apply_batch(&events[..3]).unwrap(), Serial(3));
    assert_eq!(batch.digest().unwrap(), one.digest().unwrap());
    assert_eq!(batch.files(&repo(), "demo", None).unwrap().len(), 2);
    assert_eq!(batch.counts().unwrap(), one.counts().unwrap());
    assert_eq!(batch.apply_batch(&[]).unwrap(), Serial(3));
}

fn generic_stored_in_pypi_is_refused() -> Event {
    generic_stored("pypi", "x.bin")
}
