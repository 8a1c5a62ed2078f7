//! Wheel core metadata (PEP 658), core metadata parsing, and file magic.

use std::io::{Read, Seek};

use zip::ZipArchive;

use crate::filename::{name_version_splits, DistFilename, DistKind};
use crate::names::{is_valid_project_name, normalize_project_name, parse_version};
use crate::PypiError;

const MIB: u64 = 1024 * 1024;

/// Entries at most this large (uncompressed) are exempt from the ratio check:
/// small, highly compressible files are normal.
pub const RATIO_EXEMPT_BYTES: u64 = MIB;

/// Limits applied to a wheel before anything in it is decompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZipLimits {
    /// Largest METADATA file accepted.
    pub max_metadata_bytes: u64,
    /// Largest sum of the entries' declared uncompressed sizes.
    pub max_total_uncompressed: u64,
    /// Largest uncompressed/compressed ratio of an entry over 1 MiB.
    pub max_ratio: u64,
    /// Most entries in the archive.
    pub max_entries: usize,
}

impl Default for ZipLimits {
    fn default() -> Self {
        ZipLimits {
            max_metadata_bytes: 4 * MIB,
            max_total_uncompressed: 4 * 1024 * MIB,
            max_ratio: 200,
            max_entries: 100_000,
        }
    }
}

fn bad_wheel(reason: impl Into<String>) -> PypiError {
    PypiError::InvalidWheel(reason.into())
}

/// If `entry` is `{dir}.dist-info/METADATA` at the top level, returns `dir`.
fn dist_info_of(entry: &str) -> Option<&str> {
    let dir = entry.strip_suffix(".dist-info/METADATA")?;
    (!dir.is_empty() && !dir.contains('/') && !dir.contains('\\')).then_some(dir)
}

/// Does `{dir}.dist-info` belong to this wheel's project and version?
fn dist_info_matches(dir: &str, file: &DistFilename) -> bool {
    let Ok(want) = parse_version(&file.version) else {
        return false;
    };
    name_version_splits(dir).any(|(n, v)| normalize_project_name(n) == file.project && v == want)
}

/// Reads the core metadata (`*.dist-info/METADATA`) out of a wheel, for PEP 658.
///
/// Before decompressing anything it checks the central directory against
/// `limits`: the number of entries, the sum of declared uncompressed sizes,
/// and the compression ratio of every entry over 1 MiB (zip bombs). The
/// METADATA entry is the top-level `.dist-info` whose name and version match
/// the file name's; failing that, the only top-level `*.dist-info/METADATA`.
/// It is read through a bounded reader, so a lying size header cannot make
/// it read more than `max_metadata_bytes + 1` bytes.
pub fn extract_wheel_metadata<R: Read + Seek>(
    reader: R,
    file: &DistFilename,
    limits: &ZipLimits,
) -> Result<Vec<u8>, PypiError> {
    if file.kind != DistKind::Wheel {
        return Err(bad_wheel(format!("'{}' is not a wheel", file.filename)));
    }
    let mut archive = ZipArchive::new(reader).map_err(|_| bad_wheel("not a zip archive"))?;
    if archive.len() > limits.max_entries {
        return Err(PypiError::ArchiveLimit(format!(
            "{} entries, more than the limit of {}",
            archive.len(),
            limits.max_entries
        )));
    }

    let mut total: u64 = 0;
    let mut matching = Vec::new();
    let mut any_metadata = Vec::new();
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| bad_wheel(format!("corrupt zip entry #{i}: {e}")))?;
        let (size, compressed) = (entry.size(), entry.compressed_size());
        if size > RATIO_EXEMPT_BYTES && (size / compressed.max(1)) > limits.max_ratio {
            return Err(PypiError::ArchiveLimit(format!(
                "entry '{}' has a compression ratio over {} ({} bytes from {})",
                entry.name(),
                limits.max_ratio,
                size,
                compressed
            )));
        }
        total = total.saturating_add(size);
        if total > limits.max_total_uncompressed {
            return Err(PypiError::ArchiveLimit(format!(
                "total uncompressed size exceeds the limit of {} bytes",
                limits.max_total_uncompressed
            )));
        }
        if let Some(dir) = dist_info_of(entry.name()) {
            if dist_info_matches(dir, file) {
                matching.push(i);
            }
            any_metadata.push(i);
        }
    }

    verify_members(&mut archive, limits)?;

    let index = match (matching.as_slice(), any_metadata.as_slice()) {
        ([i], _) => *i,
        ([], [i]) => *i,
        ([], []) => return Err(bad_wheel("no .dist-info/METADATA file")),
        _ => return Err(bad_wheel("more than one .dist-info/METADATA file")),
    };

    let entry = archive
        .by_index(index)
        .map_err(|e| bad_wheel(format!("cannot read METADATA: {e}")))?;
    let too_large = || {
        PypiError::ArchiveLimit(format!(
            "METADATA is larger than the limit of {} bytes",
            limits.max_metadata_bytes
        ))
    };
    if entry.size() > limits.max_metadata_bytes {
        return Err(too_large());
    }
    // The declared size is only a hint: cap the up-front allocation.
    let mut out = Vec::with_capacity(entry.size().min(MIB) as usize);
    entry
        .take(limits.max_metadata_bytes.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| bad_wheel(format!("cannot read METADATA: {e}")))?;
    if out.len() as u64 > limits.max_metadata_bytes {
        return Err(too_large());
    }
    Ok(out)
}

/// Inflates every member into nothing, against a byte budget: headers can
/// lie about sizes, and an installer will inflate all of it. A member that
/// inflates past its declared size, past the ratio limit or past the total
/// budget, or that fails its CRC, makes the wheel invalid.
fn verify_members<R: Read + Seek>(
    archive: &mut ZipArchive<R>,
    limits: &ZipLimits,
) -> Result<(), PypiError> {
    let mut budget = limits.max_total_uncompressed;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| bad_wheel(format!("corrupt zip entry #{i}: {e}")))?;
        let name = entry.name().to_owned();
        let (declared, compressed) = (entry.size(), entry.compressed_size());
        // Read at most one byte past what the entry may legitimately hold.
        let cap = declared.min(budget).saturating_add(1);
        let actual = std::io::copy(&mut (&mut entry).take(cap), &mut std::io::sink())
            .map_err(|e| bad_wheel(format!("cannot inflate '{name}': {e}")))?;
        if actual > declared {
            return Err(PypiError::ArchiveLimit(format!(
                "entry '{name}' inflates beyond its declared size of {declared} bytes"
            )));
        }
        if actual > RATIO_EXEMPT_BYTES && actual / compressed.max(1) > limits.max_ratio {
            return Err(PypiError::ArchiveLimit(format!(
                "entry '{name}' has a compression ratio over {}",
                limits.max_ratio
            )));
        }
        budget = budget.saturating_sub(actual);
    }
    Ok(())
}

/// The fields of core metadata that an index needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreMetadata {
    pub metadata_version: String,
    /// As written.
    pub name: String,
    /// As written.
    pub version: String,
    pub requires_python: Option<String>,
}

impl CoreMetadata {
    /// Checks that the metadata describes the same project and version as the
    /// file name.
    pub fn check_matches(&self, file: &DistFilename) -> Result<(), PypiError> {
        let same_version = match (parse_version(&self.version), parse_version(&file.version)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if normalize_project_name(&self.name) != file.project || !same_version {
            return Err(PypiError::InvalidMetadata(format!(
                "METADATA is for '{}' version '{}', but the file is '{}'",
                self.name, self.version, file.filename
            )));
        }
        Ok(())
    }
}

/// Parses the header section of RFC 822 style core metadata (METADATA or
/// PKG-INFO): everything up to the first blank line. Field names are
/// case-insensitive, folded (continuation) lines are unfolded, and the first
/// occurrence of a field wins. `Metadata-Version`, a valid `Name` and a PEP
/// 440 `Version` are required.
pub fn parse_core_metadata(bytes: &[u8]) -> Result<CoreMetadata, PypiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| PypiError::InvalidMetadata("not valid UTF-8".into()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);

    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((key, value)) = line.split_once(':') {
            fields.push((key.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let get = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let missing = |f: &str| PypiError::InvalidMetadata(format!("missing field '{f}'"));
    let metadata_version = get("metadata-version").ok_or_else(|| missing("Metadata-Version"))?;
    let name = get("name").ok_or_else(|| missing("Name"))?;
    let version = get("version").ok_or_else(|| missing("Version"))?;
    if !is_valid_project_name(&name) {
        return Err(PypiError::InvalidMetadata(format!("invalid Name '{name}'")));
    }
    if parse_version(&version).is_err() {
        return Err(PypiError::InvalidMetadata(format!(
            "Version '{version}' is not a valid PEP 440 version"
        )));
    }
    Ok(CoreMetadata {
        metadata_version,
        name,
        version,
        requires_python: get("requires-python"),
    })
}

/// Checks that a file's first bytes match its extension: gzip (`1f 8b`) for
/// `.tar.gz`, a zip local header (`PK\x03\x04`) for `.zip` and `.whl`.
pub fn check_sdist_magic(file: &DistFilename, head: &[u8]) -> Result<(), PypiError> {
    let (magic, expected): (&[u8], &'static str) = match file.extension() {
        ".tar.gz" => (b"\x1f\x8b", "gzip"),
        _ => (b"PK\x03\x04", "zip"),
    };
    if head.starts_with(magic) {
        Ok(())
    } else {
        Err(PypiError::BadMagic {
            filename: file.filename.clone(),
            expected,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write};

    use zip::write::SimpleFileOptions;
    use zip::{CompressionMethod, ZipWriter};

    use super::*;
    use crate::parse_dist_filename;

    const METADATA: &str = "Metadata-Version: 2.1\nName: Foo_Bar\nVersion: 1.0\n\
        Requires-Python: >=3.8\nSummary: x\n\nLong description\nName: ignored\n";

    fn wheel_file() -> DistFilename {
        parse_dist_filename("foo_bar-1.0-py3-none-any.whl").unwrap()
    }

    fn build_zip(entries: &[(&str, &[u8])], method: CompressionMethod) -> Vec<u8> {
        let mut w = ZipWriter::new(Cursor::new(Vec::new()));
        let opts = SimpleFileOptions::default().compression_method(method);
        for (name, data) in entries {
            w.start_file(*name, opts).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn wheel(entries: &[(&str, &[u8])]) -> Vec<u8> {
        build_zip(entries, CompressionMethod::Deflated)
    }

    fn extract(bytes: Vec<u8>, limits: &ZipLimits) -> Result<Vec<u8>, PypiError> {
        extract_wheel_metadata(Cursor::new(bytes), &wheel_file(), limits)
    }

    #[test]
    fn extracts_metadata_of_matching_dist_info() {
        let bytes = wheel(&[
            ("foo_bar/__init__.py", b"print('hi')\n"),
            ("foo_bar-1.0.dist-info/WHEEL", b"Wheel-Version: 1.0\n"),
            ("foo_bar-1.0.dist-info/METADATA", METADATA.as_bytes()),
            ("foo_bar-1.0.dist-info/RECORD", b""),
        ]);
        let got = extract(bytes, &ZipLimits::default()).unwrap();
        assert_eq!(got, METADATA.as_bytes());
        let meta = parse_core_metadata(&got).unwrap();
        meta.check_matches(&wheel_file()).unwrap();
    }

    #[test]
    fn prefers_matching_dist_info_over_others() {
        let bytes = wheel(&[
            ("vendored-2.0.dist-info/METADATA", b"Name: vendored\n"),
            ("Foo.Bar-1.0.0.dist-info/METADATA", METADATA.as_bytes()),
            ("nested/foo_bar-1.0.dist-info/METADATA", b"nested"),
        ]);
        assert_eq!(
            extract(bytes, &ZipLimits::default()).unwrap(),
            METADATA.as_bytes()
        );
    }

    #[test]
    fn accepts_a_single_dist_info_even_if_oddly_named() {
        let bytes = wheel(&[("foo-bar-1.0.dist-info/METADATA", b"x")]);
        assert_eq!(extract(bytes, &ZipLimits::default()).unwrap(), b"x");
        let bytes = wheel(&[("weird.dist-info/METADATA", b"y")]);
        assert_eq!(extract(bytes, &ZipLimits::default()).unwrap(), b"y");
    }

    #[test]
    fn rejects_ambiguous_metadata() {
        let bytes = wheel(&[
            ("a-1.0.dist-info/METADATA", b"a"),
            ("b-1.0.dist-info/METADATA", b"b"),
        ]);
        assert_eq!(
            extract(bytes, &ZipLimits::default()),
            Err(bad_wheel("more than one .dist-info/METADATA file"))
        );
    }

    #[test]
    fn rejects_non_zip() {
        for bytes in [
            b"".to_vec(),
            b"not a zip at all".to_vec(),
            vec![0x1f, 0x8b, 0, 0],
        ] {
            let err = extract(bytes, &ZipLimits::default()).unwrap_err();
            assert_eq!(err.to_string(), "not a valid wheel: not a zip archive");
        }
    }

    #[test]
    fn rejects_sdist_file() {
        let sdist = parse_dist_filename("foo_bar-1.0.tar.gz").unwrap();
        let bytes = wheel(&[("foo_bar-1.0.dist-info/METADATA", b"x")]);
        assert!(matches!(
            extract_wheel_metadata(Cursor::new(bytes), &sdist, &ZipLimits::default()),
            Err(PypiError::InvalidWheel(_))
        ));
    }

    #[test]
    fn rejects_wheel_without_metadata() {
        let bytes = wheel(&[
            ("foo_bar/__init__.py", b""),
            ("foo_bar-1.0.dist-info/WHEEL", b"Wheel-Version: 1.0\n"),
            ("foo_bar-1.0.dist-info/metadata.json", b"{}"),
        ]);
        let err = extract(bytes, &ZipLimits::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not a valid wheel: no .dist-info/METADATA file"
        );
        let empty = wheel(&[]);
        assert_eq!(
            extract(empty, &ZipLimits::default()),
            Err(bad_wheel("no .dist-info/METADATA file"))
        );
    }

    #[test]
    fn rejects_zip_bomb_by_ratio() {
        let zeros = vec![0u8; 8 * 1024 * 1024];
        let bytes = wheel(&[
            ("foo_bar-1.0.dist-info/METADATA", METADATA.as_bytes()),
            ("foo_bar/bomb.bin", &zeros),
        ]);
        assert!(bytes.len() < 100_000, "deflated zeros should be tiny");
        let err = extract(bytes.clone(), &ZipLimits::default()).unwrap_err();
        assert!(
            matches!(&err, PypiError::ArchiveLimit(m) if m.contains("compression ratio")),
            "{err}"
        );
        // With a permissive ratio the same archive is accepted.
        let lax = ZipLimits {
            max_ratio: 100_000,
            ..ZipLimits::default()
        };
        assert!(extract(bytes, &lax).is_ok());
    }

    #[test]
    fn small_compressible_entries_are_exempt_from_ratio() {
        let zeros = vec![0u8; 1024 * 1024];
        let bytes = wheel(&[
            ("foo_bar/zeros.bin", &zeros),
            ("foo_bar-1.0.dist-info/METADATA", METADATA.as_bytes()),
        ]);
        assert!(extract(bytes, &ZipLimits::default()).is_ok());
    }

    #[test]
    fn rejects_total_uncompressed_over_limit() {
        let data = vec![7u8; 600];
        let bytes = build_zip(
            &[
                ("foo_bar-1.0.dist-info/METADATA", METADATA.as_bytes()),
                ("a.bin", &data),
                ("b.bin", &data),
            ],
            CompressionMethod::Stored,
        );
        let limits = ZipLimits {
            max_total_uncompressed: 1000,
            ..ZipLimits::default()
        };
        let err = extract(bytes, &limits).unwrap_err();
        assert!(
            matches!(&err, PypiError::ArchiveLimit(m) if m.contains("total uncompressed")),
            "{err}"
        );
    }

    #[test]
    fn rejects_too_many_entries() {
        let names: Vec<String> = (0..5).map(|i| format!("f{i}")).collect();
        let mut entries: Vec<(&str, &[u8])> =
            names.iter().map(|n| (n.as_str(), &b""[..])).collect();
        entries.push(("foo_bar-1.0.dist-info/METADATA", METADATA.as_bytes()));
        let bytes = wheel(&entries);
        let limits = ZipLimits {
            max_entries: 5,
            ..ZipLimits::default()
        };
        let err = extract(bytes.clone(), &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "archive rejected: 6 entries, more than the limit of 5"
        );
        let limits = ZipLimits {
            max_entries: 6,
            ..ZipLimits::default()
        };
        assert!(extract(bytes, &limits).is_ok());
    }

    #[test]
    fn rejects_metadata_over_limit() {
        let big = format!("{METADATA}{}", "x".repeat(5000));
        let bytes = wheel(&[("foo_bar-1.0.dist-info/METADATA", big.as_bytes())]);
        let limits = ZipLimits {
            max_metadata_bytes: 4096,
            ..ZipLimits::default()
        };
        let err = extract(bytes.clone(), &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "archive rejected: METADATA is larger than the limit of 4096 bytes"
        );
        let exact = ZipLimits {
            max_metadata_bytes: big.len() as u64,
            ..ZipLimits::default()
        };
        assert_eq!(extract(bytes, &exact).unwrap(), big.as_bytes());
    }

    /// Overwrites the declared uncompressed size of `name` in both its local
    /// header and its central directory header.
    fn patch_declared_size(zip: &mut [u8], name: &str, size: u32) {
        let name = name.as_bytes();
        let mut patched = 0;
        let mut i = 0;
        while i + 4 <= zip.len() {
            let sig = &zip[i..i + 4];
            if sig == b"PK\x03\x04" && zip[i + 30..].starts_with(name) {
                zip[i + 22..i + 26].copy_from_slice(&size.to_le_bytes());
                patched += 1;
            } else if sig == b"PK\x01\x02" && zip[i + 46..].starts_with(name) {
                zip[i + 24..i + 28].copy_from_slice(&size.to_le_bytes());
                patched += 1;
            }
            i += 1;
        }
        assert_eq!(patched, 2, "expected a local and a central header");
    }

    #[test]
    fn lying_size_header_cannot_exceed_limit() {
        let big = "M".repeat(100_000);
        let mut bytes = wheel(&[("foo_bar-1.0.dist-info/METADATA", big.as_bytes())]);
        patch_declared_size(&mut bytes, "foo_bar-1.0.dist-info/METADATA", 10);
        let limits = ZipLimits {
            max_metadata_bytes: 1000,
            ..ZipLimits::default()
        };
        let err = extract(bytes, &limits).unwrap_err();
        // The zip reader trusts the compressed stream, not the header: the
        // bounded inflation of every member stops it.
        assert_eq!(
            err.to_string(),
            "archive rejected: entry 'foo_bar-1.0.dist-info/METADATA' inflates beyond its declared size of 10 bytes"
        );
    }

    #[test]
    fn lying_size_header_on_another_member_is_refused() {
        let zeros = vec![0u8; 5 << 20];
        let mut bytes = wheel(&[
            (
                "foo_bar-1.0.dist-info/METADATA",
                b"Metadata-Version: 2.1\nName: foo_bar\nVersion: 1.0\n".as_slice(),
            ),
            ("foo_bar/data.bin", zeros.as_slice()),
        ]);
        patch_declared_size(&mut bytes, "foo_bar/data.bin", 1000);
        let err = extract(bytes, &ZipLimits::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("inflates beyond its declared size"),
            "{err}"
        );
    }

    #[test]
    fn rejects_corrupt_metadata_entry() {
        let mut bytes = build_zip(
            &[("foo_bar-1.0.dist-info/METADATA", METADATA.as_bytes())],
            CompressionMethod::Stored,
        );
        // Flip a byte of the stored data: the CRC check must fail.
        let pos = bytes
            .windows(METADATA.len())
            .position(|w| w == METADATA.as_bytes())
            .unwrap();
        bytes[pos] ^= 0xff;
        assert!(matches!(
            extract(bytes, &ZipLimits::default()),
            Err(PypiError::InvalidWheel(_))
        ));
    }

    #[test]
    fn parses_core_metadata() {
        let m = parse_core_metadata(METADATA.as_bytes()).unwrap();
        assert_eq!(
            m,
            CoreMetadata {
                metadata_version: "2.1".into(),
                name: "Foo_Bar".into(),
                version: "1.0".into(),
                requires_python: Some(">=3.8".into()),
            }
        );
    }

    #[test]
    fn parses_crlf_case_and_continuations() {
        let text = "\u{feff}metadata-version: 2.3\r\nNAME:  foo\r\nversion: 2.0rc1\r\n\
            Requires-Python: >=3.8,\r\n  <4\r\nClassifier: A\r\n\r\nRequires-Python: >=2\r\n";
        let m = parse_core_metadata(text.as_bytes()).unwrap();
        assert_eq!(m.metadata_version, "2.3");
        assert_eq!(m.name, "foo");
        assert_eq!(m.version, "2.0rc1");
        assert_eq!(m.requires_python.as_deref(), Some(">=3.8, <4"));
    }

    #[test]
    fn first_occurrence_wins_and_body_is_ignored() {
        let text = "Metadata-Version: 2.1\nName: a\nName: b\nVersion: 1\n\nVersion: 2\n";
        let m = parse_core_metadata(text.as_bytes()).unwrap();
        assert_eq!((m.name.as_str(), m.version.as_str()), ("a", "1"));
        assert_eq!(m.requires_python, None);
    }

    #[test]
    fn rejects_bad_core_metadata() {
        let cases: [(&[u8], &str); 6] = [
            (b"\xff\xfe", "invalid core metadata: not valid UTF-8"),
            (
                b"Name: a\nVersion: 1\n",
                "invalid core metadata: missing field 'Metadata-Version'",
            ),
            (
                b"Metadata-Version: 2.1\nVersion: 1\n",
                "invalid core metadata: missing field 'Name'",
            ),
            (
                b"Metadata-Version: 2.1\nName: a\n\nVersion: 1\n",
                "invalid core metadata: missing field 'Version'",
            ),
            (
                b"Metadata-Version: 2.1\nName: a b\nVersion: 1\n",
                "invalid core metadata: invalid Name 'a b'",
            ),
            (
                b"Metadata-Version: 2.1\nName: a\nVersion: one\n",
                "invalid core metadata: Version 'one' is not a valid PEP 440 version",
            ),
        ];
        for (bytes, msg) in cases {
            assert_eq!(parse_core_metadata(bytes).unwrap_err().to_string(), msg);
        }
    }

    #[test]
    fn metadata_must_match_filename() {
        let m =
            parse_core_metadata(b"Metadata-Version: 2.1\nName: foo-bar\nVersion: 1.0.0\n").unwrap();
        m.check_matches(&wheel_file()).unwrap();
        let m = parse_core_metadata(b"Metadata-Version: 2.1\nName: other\nVersion: 1.0\n").unwrap();
        assert!(matches!(
            m.check_matches(&wheel_file()),
            Err(PypiError::InvalidMetadata(_))
        ));
        let m =
            parse_core_metadata(b"Metadata-Version: 2.1\nName: foo_bar\nVersion: 1.1\n").unwrap();
        assert!(matches!(
            m.check_matches(&wheel_file()),
            Err(PypiError::InvalidMetadata(_))
        ));
    }

    #[test]
    fn checks_magic_bytes() {
        let tgz = parse_dist_filename("foo-1.0.tar.gz").unwrap();
        let zip = parse_dist_filename("foo-1.0.zip").unwrap();
        let whl = parse_dist_filename("foo-1.0-py3-none-any.whl").unwrap();
        assert!(check_sdist_magic(&tgz, b"\x1f\x8b\x08\x00rest").is_ok());
        assert!(check_sdist_magic(&zip, b"PK\x03\x04rest").is_ok());
        assert!(check_sdist_magic(&whl, b"PK\x03\x04").is_ok());
        let err = check_sdist_magic(&tgz, b"PK\x03\x04").unwrap_err();
        assert_eq!(
            err.to_string(),
            "file content does not match its extension: 'foo-1.0.tar.gz' is not a gzip file"
        );
        assert!(check_sdist_magic(&zip, b"\x1f\x8b").is_err());
        assert!(check_sdist_magic(&tgz, b"\x1f").is_err());
        assert!(check_sdist_magic(&zip, b"").is_err());
        assert!(check_sdist_magic(&whl, b"MZ\x90\x00").is_err());
    }
}
