//! Property and fuzz tests of what a node decodes from its peers: the
//! changelog stream's protobuf messages, and the events inside them.
//! Whatever arrives, decoding gives a value or a clean error, never a
//! panic; an event that decodes re-encodes to an event that decodes to
//! the same value. Long with `HOARD_FUZZ_SECS` (see `tests/fuzz-long.sh`
//! at the workspace root).

use hoard_core::{Change, Event, RepoFormat, RepoName, RepoSettings, Sha256, UserRecord};
use hoard_proto::v1::{changelog_message, ChangelogMessage, CommittedEvent};
use hoard_store::ReceivedEvent;
use hoard_testkit::fuzz::{fuzz, mutated};
use proptest::prelude::*;
use prost::Message as _;

const DIR: &str = env!("CARGO_MANIFEST_DIR");

fn event(change: Change) -> Event {
    Event {
        actor: "alice-ci".into(),
        time_us: 1_700_000_000_000_000,
        user: Some("alice".into()),
        node: Some("dc1".into()),
        change,
    }
}

/// Events of several kinds, as the changelog stores them.
fn stored_events() -> Vec<Vec<u8>> {
    let repo: RepoName = "pypi".parse().unwrap();
    [
        Change::RepoCreated {
            repo: repo.clone(),
            settings: RepoSettings::hosted(RepoFormat::Pypi),
        },
        Change::FilesYanked {
            repo: repo.clone(),
            project: "demo".into(),
            filenames: vec!["demo-1.0-py3-none-any.whl".into()],
            reason: Some("broken".into()),
        },
        Change::TokenRevoked {
            hash: Sha256::of(b"secret"),
        },
        Change::UserAdded {
            user: UserRecord {
                name: "bob".into(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                admin: false,
                email: Some("bob@example.invalid".into()),
            },
        },
        Change::OwnersChanged {
            repo: repo.clone(),
            project: "demo".into(),
            owners: vec!["alice".into(), "bob".into()],
        },
        Change::NpmDistTagChanged {
            repo: "npm".parse().unwrap(),
            package: "@acme/widget".into(),
            tag: "beta".into(),
            version: Some("2.0.0-rc.1".into()),
        },
    ]
    .into_iter()
    .map(|change| ReceivedEvent::encode(event(change)).bytes().to_vec())
    .collect()
}

/// What decodes must survive a round trip unchanged.
fn round_trips(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    if let Ok(received) = ReceivedEvent::decode(bytes) {
        let again = ReceivedEvent::encode(received.event().clone());
        let back = ReceivedEvent::decode(again.bytes().to_vec());
        prop_assert!(back.is_ok(), "a re-encoded event does not decode");
        prop_assert_eq!(
            back.ok().map(|b| b.event().clone()),
            Some(received.event().clone())
        );
    }
    Ok(())
}

#[test]
fn events_decode_or_refuse_and_round_trip() {
    let stored = stored_events();
    for bytes in &stored {
        assert!(
            ReceivedEvent::decode(bytes.clone()).is_ok(),
            "the corpus decodes"
        );
    }
    let inputs = prop_oneof![
        mutated(stored[0].clone()),
        mutated(stored[1].clone()),
        mutated(stored[2].clone()),
        mutated(stored[3].clone()),
        mutated(stored[4].clone()),
        mutated(stored[5].clone()),
        proptest::collection::vec(any::<u8>(), 0..256),
    ];
    fuzz(DIR, "event_decode", inputs, round_trips);
}

#[test]
fn changelog_messages_decode_or_refuse() {
    let messages: Vec<Vec<u8>> = stored_events()
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            ChangelogMessage {
                kind: Some(changelog_message::Kind::Event(CommittedEvent {
                    serial: i as u64 + 1,
                    event,
                    blobs: Vec::new(),
                })),
            }
            .encode_to_vec()
        })
        .collect();
    let inputs = prop_oneof![
        mutated(messages[0].clone()),
        mutated(messages[3].clone()),
        proptest::collection::vec(any::<u8>(), 0..256),
    ];
    fuzz(DIR, "changelog_message", inputs, |bytes| {
        if let Ok(ChangelogMessage {
            kind: Some(changelog_message::Kind::Event(ev)),
        }) = ChangelogMessage::decode(bytes.as_slice())
        {
            round_trips(ev.event)?;
        }
        Ok(())
    });
}
