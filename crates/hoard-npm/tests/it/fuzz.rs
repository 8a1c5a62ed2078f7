//! Property and fuzz tests of the npm parsers: publish documents (real
//! ones from npm, mutated), revision updates, dist-tag bodies and package
//! names. Whatever the input, a parser answers `Ok` or a clean `Err`,
//! never a panic, and what it accepts is self-consistent. Short here;
//! long with `HOARD_FUZZ_SECS` (see `tests/fuzz-long.sh`).

use hoard_npm::{
    parse_dist_tag_put, parse_publish, parse_revision_put, parse_split_publish, NpmError,
    PackageName, PublishSplitter, PutDocument, SplitPublish,
};
use hoard_testkit::fuzz::{fuzz, mutated};
use proptest::prelude::*;
use sha2::Digest as _;

use crate::{fixture, name};

const DIR: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn publish_documents_parse_or_refuse_and_what_parses_is_checked() {
    let docs = prop_oneof![
        mutated(fixture("publish-unscoped-1.0.0.json")),
        mutated(fixture("publish-scoped-1.0.0.json")),
        mutated(fixture("deprecate.json")),
        proptest::collection::vec(any::<u8>(), 0..1024),
    ];
    let unscoped = name("hoard-demo");
    let scoped = name("@hoard-test/demo");
    fuzz(DIR, "npm_publish", docs, |bytes| {
        for url_name in [&unscoped, &scoped] {
            if let Ok(PutDocument::Publish(p)) = parse_publish(&bytes, url_name) {
                // Accepted: it is for the URL's package, and the digests
                // are those of the tarball it carries.
                prop_assert_eq!(&p.name, url_name);
                let tarball = p.tarball.clone().unwrap_or_default();
                prop_assert_eq!(p.digests.size, tarball.len() as u64);
                prop_assert_eq!(
                    &p.digests.sha256,
                    &hex::encode(sha2::Sha256::digest(&tarball))
                );
            }
        }
        Ok(())
    });
}

/// `body` fed to a [`PublishSplitter`] in pieces cut at `cuts`.
fn split(body: &[u8], cuts: &[usize]) -> Result<(SplitPublish, Vec<u8>), NpmError> {
    let mut splitter = PublishSplitter::new(1 << 20);
    let mut decoded = Vec::new();
    let mut rest = body;
    for cut in cuts {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(cut % rest.len() + 1);
        splitter.feed(piece, &mut decoded)?;
        rest = tail;
    }
    splitter.feed(rest, &mut decoded)?;
    Ok((splitter.finish(), decoded))
}

#[test]
fn a_publish_split_as_it_streams_is_the_publish_parsed_whole() {
    let docs = (
        prop_oneof![
            mutated(fixture("publish-unscoped-1.0.0.json")),
            mutated(fixture("publish-scoped-1.0.0.json")),
            mutated(fixture("deprecate.json")),
        ],
        proptest::collection::vec(any::<usize>(), 0..12),
    );
    let unscoped = name("hoard-demo");
    let scoped = name("@hoard-test/demo");
    fuzz(DIR, "npm_publish_split", docs, |(bytes, cuts)| {
        let Ok((split_doc, decoded)) = split(&bytes, &cuts) else {
            return Ok(());
        };
        // Where it cuts makes no difference.
        let (whole_doc, whole_decoded) = split(&bytes, &[]).expect("one piece splits too");
        prop_assert_eq!(&split_doc, &whole_doc);
        prop_assert_eq!(&decoded, &whole_decoded);
        for url_name in [&unscoped, &scoped] {
            let Ok(streamed) = parse_split_publish(&split_doc, url_name) else {
                continue;
            };
            // Whatever the splitter accepts, the whole-document parser
            // accepts the same way.
            let whole = parse_publish(&bytes, url_name);
            prop_assert!(whole.is_ok(), "split accepted, whole refused: {:?}", whole);
            match (streamed, whole.ok()) {
                (PutDocument::Publish(s), Some(PutDocument::Publish(w))) => {
                    prop_assert_eq!(s.tarball.as_ref(), None);
                    prop_assert_eq!(Some(&decoded), w.tarball.as_ref());
                    prop_assert_eq!(&s.digests, &w.digests);
                    prop_assert_eq!(&s.manifest, &w.manifest);
                    prop_assert_eq!(&s.dist_tags, &w.dist_tags);
                }
                (PutDocument::Deprecate(s), Some(PutDocument::Deprecate(w))) => {
                    prop_assert_eq!(s, w);
                }
                (s, w) => prop_assert!(false, "split {:?}, whole {:?}", s, w),
            }
        }
        Ok(())
    });
}

#[test]
fn revision_updates_and_dist_tag_bodies_never_panic() {
    let docs = prop_oneof![
        mutated(fixture("unpublish-version-put.json")),
        mutated(
            br#"{"_id":"hoard-demo","_rev":"3-hoard","maintainers":[{"name":"alice","email":""}]}"#
                .to_vec()
        ),
        mutated(br#""1.0.0""#.to_vec()),
        proptest::collection::vec(any::<u8>(), 0..256),
    ];
    let url_name = name("hoard-demo");
    fuzz(DIR, "npm_revision", docs, |bytes| {
        if let Ok(update) = parse_revision_put(&bytes, &url_name) {
            prop_assert!(update.versions.is_some() || update.maintainers.is_some());
        }
        let _ = parse_dist_tag_put(&bytes);
        Ok(())
    });
}

#[test]
fn package_names_parse_or_refuse_and_round_trip() {
    let names = prop_oneof![
        "@?[a-z0-9._~-]{0,12}(/[a-z0-9._~-]{0,12})?",
        "[A-Za-z0-9@/%._ -]{0,20}",
        any::<String>(),
    ];
    fuzz(DIR, "npm_package_name", names, |text| {
        if let Ok(parsed) = PackageName::parse(&text) {
            prop_assert_eq!(parsed.full(), text.clone());
            prop_assert_eq!(PackageName::parse(&parsed.full()).ok(), Some(parsed));
        }
        Ok(())
    });
}
