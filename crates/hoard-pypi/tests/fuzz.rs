//! Property and fuzz tests of the PyPI parsers: distribution file names
//! and PEP 440 versions, wheel zips and their METADATA, the upload form's
//! checks, and the Simple API's content negotiation. Whatever the input,
//! a parser answers `Ok` or a clean `Err`, never a panic, and what it
//! accepts is consistent. Short here; long with `HOARD_FUZZ_SECS` (see
//! `tests/fuzz-long.sh` at the workspace root).

use std::io::Cursor;

use hoard_pypi::{
    extract_wheel_metadata, negotiate, normalize_project_name, normalize_version,
    parse_core_metadata, parse_dist_filename, validate_upload, ComputedDigests, DistKind,
    UploadForm, ZipLimits,
};
use hoard_testkit::fuzz::{fuzz, mutated};
use hoard_testkit::{wheel, WheelSpec};
use proptest::prelude::*;

const DIR: &str = env!("CARGO_MANIFEST_DIR");

/// File names near valid ones: name, version and tags from pieces that
/// parsers trip over, plus arbitrary text.
fn filenames() -> impl Strategy<Value = String> {
    let piece = "[A-Za-z0-9._+!-]{0,12}";
    prop_oneof![
        (
            piece,
            piece,
            prop_oneof![
                Just(".tar.gz"),
                Just("-py3-none-any.whl"),
                Just(".zip"),
                Just(".whl")
            ]
        )
            .prop_map(|(n, v, ext)| format!("{n}-{v}{ext}")),
        (piece, piece, piece, piece, piece)
            .prop_map(|(n, v, b, p, a)| format!("{n}-{v}-{b}-{p}-{a}.whl")),
        any::<String>(),
    ]
}

#[test]
fn file_names_parse_or_refuse_and_what_parses_is_normalized() {
    fuzz(DIR, "dist_filename", filenames(), |name| {
        if let Ok(d) = parse_dist_filename(&name) {
            prop_assert_eq!(&d.filename, &name);
            prop_assert_eq!(normalize_project_name(&d.name), d.project.clone());
            // The version is normalized already: normalizing again changes nothing.
            prop_assert_eq!(normalize_version(&d.version).ok(), Some(d.version.clone()));
        }
        Ok(())
    });
}

#[test]
fn versions_normalize_idempotently() {
    let versions = prop_oneof!["[0-9vV.!+a-z_-]{0,24}", any::<String>()];
    fuzz(DIR, "pep440_version", versions, |v| {
        if let Ok(n) = normalize_version(&v) {
            prop_assert_eq!(normalize_version(&n).ok(), Some(n.clone()));
        }
        Ok(())
    });
}

#[test]
fn wheel_zips_and_their_metadata_never_panic() {
    let good = wheel("fuzzed", "1.0").bytes;
    let padded = WheelSpec::new("fuzzed", "1.0")
        .padding(300, 1)
        .build()
        .bytes;
    let inputs = prop_oneof![
        mutated(good),
        mutated(padded),
        proptest::collection::vec(any::<u8>(), 0..2048)
    ];
    let file = parse_dist_filename("fuzzed-1.0-py3-none-any.whl").expect("a wheel name");
    assert_eq!(file.kind, DistKind::Wheel);
    fuzz(DIR, "wheel_zip", inputs, |bytes| {
        if let Ok(meta) = extract_wheel_metadata(Cursor::new(&bytes), &file, &ZipLimits::default())
        {
            let _ = parse_core_metadata(&meta);
        }
        Ok(())
    });
}

#[test]
fn core_metadata_never_panics() {
    let text =
        "Metadata-Version: 2.1\nName: fuzzed\nVersion: 1.0\nRequires-Python: >=3.8\n\nbody\n";
    let inputs = prop_oneof![
        mutated(text.as_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 0..512)
    ];
    fuzz(DIR, "core_metadata", inputs, |bytes| {
        let _ = parse_core_metadata(&bytes);
        Ok(())
    });
}

#[test]
fn upload_forms_are_checked_without_panics() {
    let field = || proptest::option::of(prop_oneof!["[ -~]{0,40}", any::<String>()]);
    let forms = (
        proptest::option::of(prop_oneof![
            Just("file_upload".to_string()),
            any::<String>()
        ]),
        proptest::option::of(prop_oneof![Just("Fuzzed".to_string()), any::<String>()]),
        proptest::option::of(prop_oneof![Just("1.0".to_string()), any::<String>()]),
        field(),
        field(),
    );
    let file = parse_dist_filename("fuzzed-1.0.tar.gz").expect("an sdist name");
    let digests = ComputedDigests {
        sha256: "ab".repeat(32),
        md5: "cd".repeat(16),
        blake2_256: "ef".repeat(32),
    };
    fuzz(
        DIR,
        "upload_form",
        forms,
        |(action, name, version, requires_python, sha256)| {
            let mut form = UploadForm::default();
            for (key, value) in [
                (":action", action),
                ("name", name),
                ("version", version),
                ("requires_python", requires_python),
                ("sha256_digest", sha256),
            ] {
                if let Some(v) = value {
                    form.set_field(key, v);
                }
            }
            if let Ok(upload) = validate_upload(&form, &file, &digests) {
                prop_assert_eq!(upload.project, "fuzzed");
            }
            Ok(())
        },
    );
}

#[test]
fn negotiation_ignores_the_order_of_ranges_and_format_overrides_accept() {
    let media = prop_oneof![
        Just("application/vnd.pypi.simple.v1+json"),
        Just("application/vnd.pypi.simple.v1+html"),
        Just("text/html"),
        Just("application/vnd.pypi.simple.latest+json"),
        Just("*/*"),
        Just("text/*"),
        Just("application/json"),
    ];
    let entry = (
        media,
        proptest::option::of("(0(\\.[0-9]{0,3})?|1(\\.0{0,3})?|[0-9.x-]{0,5})"),
    )
        .prop_map(|(m, q)| match q {
            Some(q) => format!("{m};q={q}"),
            None => m.to_string(),
        });
    let entries = proptest::collection::vec(entry, 0..5);
    let format = prop_oneof![
        Just("application/vnd.pypi.simple.v1+json".to_string()),
        Just("text/html".to_string()),
        "[ -~]{0,30}",
        any::<String>(),
    ];
    fuzz(
        DIR,
        "simple_negotiation",
        (entries, format, any::<String>()),
        |(entries, format, garbage)| {
            let forward = entries.join(", ");
            let backward: Vec<String> = entries.iter().rev().cloned().collect();
            prop_assert_eq!(
                negotiate(Some(&forward), None),
                negotiate(Some(&backward.join(",")), None)
            );
            if !format.trim().is_empty() {
                prop_assert_eq!(
                    negotiate(Some(&garbage), Some(&format)),
                    negotiate(Some(&format), None)
                );
            }
            Ok(())
        },
    );
}
