//! twine's legacy upload API (`POST` multipart form, `:action=file_upload`).

use crate::filename::{name_version_splits, stem, DistFilename, DistKind};
use crate::names::{is_valid_project_name, normalize_project_name, parse_version};
use crate::PypiError;

/// Longest accepted `requires_python`, in characters.
pub const MAX_REQUIRES_PYTHON_CHARS: usize = 256;

/// The text fields of a legacy upload form. The file itself is the `content`
/// part, which the server streams and hashes; it is not stored here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadForm {
    /// `:action`; must be `file_upload`.
    pub action: Option<String>,
    pub protocol_version: Option<String>,
    pub name: Option<String>,
    pub version: Option<String>,
    /// `sdist` or `bdist_wheel`.
    pub filetype: Option<String>,
    /// `source` for sdists, a Python tag (`py3`) for wheels.
    pub pyversion: Option<String>,
    pub metadata_version: Option<String>,
    pub summary: Option<String>,
    pub description: Option<String>,
    pub description_content_type: Option<String>,
    pub author: Option<String>,
    pub author_email: Option<String>,
    pub license: Option<String>,
    pub home_page: Option<String>,
    pub keywords: Option<String>,
    pub requires_python: Option<String>,
    pub comment: Option<String>,
    pub sha256_digest: Option<String>,
    pub md5_digest: Option<String>,
    pub blake2_256_digest: Option<String>,
    /// Repeated field: every value, in order.
    pub classifiers: Vec<String>,
    /// Repeated field: every value, in order.
    pub requires_dist: Vec<String>,
}

impl UploadForm {
    /// Records one text field of the form. Unknown fields (and the `content`
    /// file part) are ignored; for single-valued fields the first value wins.
    pub fn set_field(&mut self, name: &str, value: String) {
        let slot = match name {
            ":action" => &mut self.action,
            "protocol_version" => &mut self.protocol_version,
            "name" => &mut self.name,
            "version" => &mut self.version,
            "filetype" => &mut self.filetype,
            "pyversion" => &mut self.pyversion,
            "metadata_version" => &mut self.metadata_version,
            "summary" => &mut self.summary,
            "description" => &mut self.description,
            "description_content_type" => &mut self.description_content_type,
            "author" => &mut self.author,
            "author_email" => &mut self.author_email,
            "license" => &mut self.license,
            "home_page" => &mut self.home_page,
            "keywords" => &mut self.keywords,
            "requires_python" => &mut self.requires_python,
            "comment" => &mut self.comment,
            "sha256_digest" => &mut self.sha256_digest,
            "md5_digest" => &mut self.md5_digest,
            "blake2_256_digest" => &mut self.blake2_256_digest,
            "classifiers" => return self.classifiers.push(value),
            "requires_dist" => return self.requires_dist.push(value),
            _ => return,
        };
        if slot.is_none() {
            *slot = Some(value);
        }
    }
}

/// Digests of the uploaded bytes, computed by the server, in lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputedDigests {
    pub sha256: String,
    pub md5: String,
    /// BLAKE2b with a 256-bit output (Python's `blake2b(digest_size=32)`).
    pub blake2_256: String,
}

/// An upload whose form and file passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedUpload {
    /// PEP 503 normalized project name.
    pub project: String,
    /// The project name as the uploader wrote it in the form.
    pub name: String,
    /// The normalized PEP 440 version declared in the form.
    pub version: String,
    pub filename: String,
    pub kind: DistKind,
    /// Trimmed; `None` when absent or empty.
    pub requires_python: Option<String>,
    pub summary: Option<String>,
}

/// A present, non-blank field value, trimmed.
fn present(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn check_digest(
    field: &'static str,
    declared: &Option<String>,
    computed: &str,
    hex_len: usize,
) -> Result<(), PypiError> {
    let Some(declared) = present(declared) else {
        return Ok(());
    };
    if declared.len() != hex_len || !declared.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PypiError::InvalidDigest { field });
    }
    if !declared.eq_ignore_ascii_case(computed) {
        return Err(PypiError::DigestMismatch { field });
    }
    Ok(())
}

/// Does the file name agree with the form's project and version?
///
/// The file name's own parse is tried first; for sdists, whose names may
/// contain `-`, every other split of the stem is tried too, so that
/// `foo-1.0-1.tar.gz` matches project `foo` version `1.0.post1`.
fn filename_matches(file: &DistFilename, project: &str, version: &pep440_rs::Version) -> bool {
    let primary =
        file.project == project && parse_version(&file.version).is_ok_and(|v| v == *version);
    primary
        || (file.kind == DistKind::Sdist
            && name_version_splits(stem(file))
                .any(|(n, v)| normalize_project_name(n) == project && v == *version))
}

/// Checks a legacy upload form against the file name and the digests that
/// the server computed while streaming the file.
///
/// - `:action` must be `file_upload`; `protocol_version`, if given, `1`.
/// - `name` and `version` are required; the name must be a valid project
///   name, equal to the file name's after normalization, and the version
///   PEP 440-equal to the file name's.
/// - `filetype`, if given, must agree with the file (`bdist_wheel`, `sdist`).
/// - Each declared digest (hex, any case) must equal the computed one.
/// - `requires_python` must be printable and at most 256 characters.
pub fn validate_upload(
    form: &UploadForm,
    file: &DistFilename,
    digests: &ComputedDigests,
) -> Result<ValidatedUpload, PypiError> {
    match present(&form.action) {
        Some("file_upload") => {}
        Some(other) => return Err(PypiError::UnsupportedAction(other.to_owned())),
        None => return Err(PypiError::MissingField(":action")),
    }
    if let Some(pv) = present(&form.protocol_version) {
        if pv != "1" {
            return Err(PypiError::InvalidField {
                field: "protocol_version",
                reason: format!("unsupported protocol version '{pv}' (expected '1')"),
            });
        }
    }
    let name = present(&form.name).ok_or(PypiError::MissingField("name"))?;
    let version_str = present(&form.version).ok_or(PypiError::MissingField("version"))?;
    if !is_valid_project_name(name) {
        return Err(PypiError::InvalidProjectName { name: name.into() });
    }
    let version = parse_version(version_str)?;
    let project = normalize_project_name(name);
    if !filename_matches(file, &project, &version) {
        return Err(PypiError::FilenameMismatch {
            filename: file.filename.clone(),
            project: name.to_owned(),
            version: version_str.to_owned(),
        });
    }
    if let Some(filetype) = present(&form.filetype) {
        if filetype != file.kind.packagetype() {
            return Err(PypiError::FiletypeMismatch {
                filetype: filetype.to_owned(),
                filename: file.filename.clone(),
            });
        }
    }
    check_digest("sha256_digest", &form.sha256_digest, &digests.sha256, 64)?;
    check_digest("md5_digest", &form.md5_digest, &digests.md5, 32)?;
    check_digest(
        "blake2_256_digest",
        &form.blake2_256_digest,
        &digests.blake2_256,
        64,
    )?;
    let requires_python = present(&form.requires_python).map(str::to_owned);
    if let Some(rp) = &requires_python {
        if rp.chars().count() > MAX_REQUIRES_PYTHON_CHARS {
            return Err(PypiError::InvalidField {
                field: "requires_python",
                reason: format!("longer than {MAX_REQUIRES_PYTHON_CHARS} characters"),
            });
        }
        if rp.chars().any(char::is_control) {
            return Err(PypiError::InvalidField {
                field: "requires_python",
                reason: "contains a control character".into(),
            });
        }
    }
    Ok(ValidatedUpload {
        project,
        name: name.to_owned(),
        version: version.to_string(),
        filename: file.filename.clone(),
        kind: file.kind,
        requires_python,
        summary: present(&form.summary).map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_dist_filename;

    const BODY: &[u8] = b"hello wheel";

    fn digests() -> ComputedDigests {
        use blake2::digest::consts::U32;
        use sha2::Digest;
        ComputedDigests {
            sha256: hex::encode(sha2::Sha256::digest(BODY)),
            md5: hex::encode(md5::Md5::digest(BODY)),
            blake2_256: hex::encode(blake2::Blake2b::<U32>::digest(BODY)),
        }
    }

    fn form(name: &str, version: &str, filetype: &str) -> UploadForm {
        let d = digests();
        let mut f = UploadForm::default();
        for (k, v) in [
            (":action", "file_upload"),
            ("protocol_version", "1"),
            ("name", name),
            ("version", version),
            ("filetype", filetype),
            ("pyversion", "py3"),
            ("metadata_version", "2.1"),
            ("summary", "A package"),
            ("requires_python", ">=3.8"),
            ("sha256_digest", &d.sha256),
            ("md5_digest", &d.md5),
            ("blake2_256_digest", &d.blake2_256),
        ] {
            f.set_field(k, v.to_owned());
        }
        f
    }

    fn wheel() -> DistFilename {
        parse_dist_filename("Foo_Bar-1.0-py3-none-any.whl").unwrap()
    }

    #[test]
    fn set_field_keeps_first_and_ignores_unknown() {
        let mut f = UploadForm::default();
        f.set_field("name", "first".into());
        f.set_field("name", "second".into());
        f.set_field("content", "bytes".into());
        f.set_field("gpg_signature", "sig".into());
        f.set_field("classifiers", "A".into());
        f.set_field("classifiers", "B".into());
        f.set_field("requires_dist", "requests".into());
        assert_eq!(f.name.as_deref(), Some("first"));
        assert_eq!(f.classifiers, ["A", "B"]);
        assert_eq!(f.requires_dist, ["requests"]);
        assert_eq!(
            f,
            UploadForm {
                name: Some("first".into()),
                classifiers: vec!["A".into(), "B".into()],
                requires_dist: vec!["requests".into()],
                ..Default::default()
            }
        );
    }

    #[test]
    fn accepts_a_twine_wheel_upload() {
        let v =
            validate_upload(&form("Foo.Bar", "1.0", "bdist_wheel"), &wheel(), &digests()).unwrap();
        assert_eq!(
            v,
            ValidatedUpload {
                project: "foo-bar".into(),
                name: "Foo.Bar".into(),
                version: "1.0".into(),
                filename: "Foo_Bar-1.0-py3-none-any.whl".into(),
                kind: DistKind::Wheel,
                requires_python: Some(">=3.8".into()),
                summary: Some("A package".into()),
            }
        );
    }

    #[test]
    fn accepts_uppercase_digests_and_missing_optional_fields() {
        let d = digests();
        let mut f = UploadForm::default();
        f.set_field(":action", "file_upload".into());
        f.set_field("name", "foo-bar".into());
        f.set_field("version", "1.0.0".into()); // PEP 440-equal to 1.0
        f.set_field("sha256_digest", d.sha256.to_uppercase());
        f.set_field("requires_python", "  ".into());
        let v = validate_upload(&f, &wheel(), &d).unwrap();
        assert_eq!(v.version, "1.0.0");
        assert_eq!(v.requires_python, None);
        assert_eq!(v.summary, None);
    }

    #[test]
    fn accepts_sdist_with_dashes_and_post_release() {
        let file = parse_dist_filename("foo-1.0-1.tar.gz").unwrap();
        // The last-dash split reads it as foo-1.0 version 1 ...
        assert_eq!(
            (file.project.as_str(), file.version.as_str()),
            ("foo-1-0", "1")
        );
        // ... but the form decides: foo 1.0.post1.
        let v = validate_upload(&form("foo", "1.0.post1", "sdist"), &file, &digests()).unwrap();
        assert_eq!(
            (v.project.as_str(), v.version.as_str()),
            ("foo", "1.0.post1")
        );
        assert_eq!(v.kind, DistKind::Sdist);

        let file = parse_dist_filename("my-pkg-2.0a1.tar.gz").unwrap();
        let v =
            validate_upload(&form("My_Pkg", "2.0.0-alpha1", "sdist"), &file, &digests()).unwrap();
        assert_eq!(
            (v.project.as_str(), v.version.as_str()),
            ("my-pkg", "2.0.0a1")
        );
    }

    #[test]
    fn rejects_wrong_action() {
        let mut f = form("foo-bar", "1.0", "bdist_wheel");
        f.action = Some("submit".into());
        assert_eq!(
            validate_upload(&f, &wheel(), &digests()),
            Err(PypiError::UnsupportedAction("submit".into()))
        );
        f.action = None;
        assert_eq!(
            validate_upload(&f, &wheel(), &digests()),
            Err(PypiError::MissingField(":action"))
        );
    }

    #[test]
    fn rejects_bad_protocol_version() {
        let mut f = form("foo-bar", "1.0", "bdist_wheel");
        f.protocol_version = Some("2".into());
        assert!(matches!(
            validate_upload(&f, &wheel(), &digests()),
            Err(PypiError::InvalidField {
                field: "protocol_version",
                ..
            })
        ));
    }

    #[test]
    fn rejects_missing_name_or_version() {
        let mut f = form("foo-bar", "1.0", "bdist_wheel");
        f.name = Some(" ".into());
        let err = validate_upload(&f, &wheel(), &digests()).unwrap_err();
        assert_eq!(err, PypiError::MissingField("name"));
        assert_eq!(err.to_string(), "missing required form field 'name'");
        let mut f = form("foo-bar", "1.0", "bdist_wheel");
        f.version = None;
        assert_eq!(
            validate_upload(&f, &wheel(), &digests()),
            Err(PypiError::MissingField("version"))
        );
    }

    #[test]
    fn rejects_invalid_name_and_version() {
        let f = form("foo bar", "1.0", "bdist_wheel");
        assert!(matches!(
            validate_upload(&f, &wheel(), &digests()),
            Err(PypiError::InvalidProjectName { .. })
        ));
        let f = form("foo-bar", "one", "bdist_wheel");
        assert!(matches!(
            validate_upload(&f, &wheel(), &digests()),
            Err(PypiError::InvalidVersion { .. })
        ));
    }

    #[test]
    fn rejects_name_mismatch() {
        let err = validate_upload(&form("other", "1.0", "bdist_wheel"), &wheel(), &digests())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "filename 'Foo_Bar-1.0-py3-none-any.whl' does not match project 'other' version '1.0'"
        );
    }

    #[test]
    fn rejects_version_mismatch() {
        let err = validate_upload(
            &form("foo-bar", "1.0.1", "bdist_wheel"),
            &wheel(),
            &digests(),
        )
        .unwrap_err();
        assert!(matches!(err, PypiError::FilenameMismatch { .. }));
        let sdist = parse_dist_filename("foo-1.0-1.tar.gz").unwrap();
        let err = validate_upload(&form("foo", "1.0", "sdist"), &sdist, &digests()).unwrap_err();
        assert!(matches!(err, PypiError::FilenameMismatch { .. }));
    }

    #[test]
    fn rejects_filetype_mismatch() {
        let err =
            validate_upload(&form("foo-bar", "1.0", "sdist"), &wheel(), &digests()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "filetype 'sdist' does not match filename 'Foo_Bar-1.0-py3-none-any.whl'"
        );
        let err = validate_upload(&form("foo-bar", "1.0", "bdist_egg"), &wheel(), &digests())
            .unwrap_err();
        assert!(matches!(err, PypiError::FiletypeMismatch { .. }));
    }

    #[test]
    fn rejects_sha256_mismatch() {
        let mut f = form("foo-bar", "1.0", "bdist_wheel");
        f.sha256_digest = Some("ab".repeat(32));
        let err = validate_upload(&f, &wheel(), &digests()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sha256_digest does not match the uploaded bytes"
        );
    }

    #[test]
    fn rejects_md5_mismatch() {
        let mut f = form("foo-bar", "1.0", "bdist_wheel");
        f.md5_digest = Some("0".repeat(32));
        let err = validate_upload(&f, &wheel(), &digests()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "md5_digest does not match the uploaded bytes"
        );
    }

    #[test]
    fn rejects_blake2_mismatch() {
        let mut f = form("foo-bar", "1.0", "bdist_wheel");
        f.blake2_256_digest = Some("1".repeat(64));
        assert_eq!(
            validate_upload(&f, &wheel(), &digests()),
            Err(PypiError::DigestMismatch {
                field: "blake2_256_digest"
            })
        );
    }

    #[test]
    fn rejects_malformed_digests() {
        for bad in ["xyz", &"g".repeat(64), &"a".repeat(63)] {
            let mut f = form("foo-bar", "1.0", "bdist_wheel");
            f.sha256_digest = Some(bad.to_string());
            assert_eq!(
                validate_upload(&f, &wheel(), &digests()),
                Err(PypiError::InvalidDigest {
                    field: "sha256_digest"
                })
            );
        }
    }

    #[test]
    fn rejects_bad_requires_python() {
        let mut f = form("foo-bar", "1.0", "bdist_wheel");
        f.requires_python = Some(">=3.8\u{1b}[31m".into());
        assert!(matches!(
            validate_upload(&f, &wheel(), &digests()),
            Err(PypiError::InvalidField {
                field: "requires_python",
                ..
            })
        ));
        f.requires_python = Some(">=3.8,".repeat(50));
        assert!(matches!(
            validate_upload(&f, &wheel(), &digests()),
            Err(PypiError::InvalidField {
                field: "requires_python",
                ..
            })
        ));
    }
}
