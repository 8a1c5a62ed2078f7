//! Reading what `devpi-export` (devpi-server 6) writes: `dataindex.json`
//! names the users (with their argon2id password hashes), the indexes,
//! and each index's release files with their upload log; the files lie
//! beside it at their `relpath`. Plain data in, plain data out: the
//! import does the I/O.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde_json::Value;

/// The file `devpi-export` writes at the top of its directory.
pub const DATAINDEX: &str = "dataindex.json";

/// A devpi user, as the export keeps it.
#[derive(Debug, PartialEq, Eq)]
pub struct DevpiUser {
    pub name: String,
    /// argon2id PHC (devpi-server 6); older exports' salted sha256
    /// hashes cannot be carried over, and are `None`.
    pub password_hash: Option<String>,
    pub email: Option<String>,
}

/// One release file of one index.
#[derive(Debug, PartialEq, Eq)]
pub struct DevpiFile {
    /// `user/index`.
    pub index: String,
    /// Where the bytes are, below the export directory.
    pub relpath: String,
    pub filename: String,
    /// The sha256 devpi recorded, when it did.
    pub sha256: Option<String>,
    /// The first upload's time, RFC 3339 (devpi logs UTC).
    pub upload_time: Option<String>,
}

#[derive(Debug, Default)]
pub struct DevpiExport {
    pub users: Vec<DevpiUser>,
    /// Every index's name, `user/index`.
    pub indexes: Vec<String>,
    pub files: Vec<DevpiFile>,
    /// Who may upload to each index (`acl_upload`), by index: the users
    /// that become the owners of its projects.
    pub uploaders: std::collections::BTreeMap<String, Vec<String>>,
}

impl DevpiExport {
    /// Reads `dir/dataindex.json`.
    pub fn read(dir: &Path) -> anyhow::Result<DevpiExport> {
        let path = dir.join(DATAINDEX);
        let text = std::fs::read(&path).with_context(|| {
            format!(
                "{} is not a devpi export (it has no {DATAINDEX})",
                dir.display()
            )
        })?;
        let doc: Value =
            serde_json::from_slice(&text).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&doc)
    }

    pub fn parse(doc: &Value) -> anyhow::Result<DevpiExport> {
        let Some(indexes) = doc["indexes"].as_object() else {
            bail!("not a devpi export: {DATAINDEX} has no \"indexes\"");
        };
        let mut export = DevpiExport::default();
        for (name, user) in doc["users"].as_object().into_iter().flatten() {
            export.users.push(DevpiUser {
                name: name.clone(),
                password_hash: user["pwhash"]
                    .as_str()
                    .filter(|h| h.starts_with("$argon2id$"))
                    .map(str::to_owned),
                email: user["email"]
                    .as_str()
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned),
            });
        }
        for (index, data) in indexes {
            export.indexes.push(index.clone());
            let uploaders = data["indexconfig"]["acl_upload"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                // devpi's pseudo-users (`:ANONYMOUS:`, `:AUTHENTICATED:`)
                // are not accounts.
                .filter(|u| !u.starts_with(':'))
                .map(str::to_owned)
                .collect();
            export.uploaders.insert(index.clone(), uploaders);
            for file in data["files"].as_array().into_iter().flatten() {
                if file["type"].as_str() != Some("releasefile") {
                    continue; // doczips and tox results are not distributions
                }
                let Some(relpath) = file["relpath"].as_str() else {
                    continue;
                };
                let filename = relpath.rsplit('/').next().unwrap_or(relpath).to_owned();
                let mapping = &file["entrymapping"];
                let sha256 = mapping["hashes"]["sha256"]
                    .as_str()
                    .or_else(|| mapping["hash_spec"].as_str()?.strip_prefix("sha256="))
                    .map(str::to_owned);
                export.files.push(DevpiFile {
                    index: index.clone(),
                    relpath: relpath.to_owned(),
                    filename,
                    sha256,
                    upload_time: upload_time(&file["log"]),
                });
            }
        }
        export.indexes.sort();
        export.users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(export)
    }

    /// The file's place on disk, refusing a `relpath` that would leave
    /// the export directory.
    pub fn path_of(dir: &Path, file: &DevpiFile) -> anyhow::Result<PathBuf> {
        let mut path = dir.to_path_buf();
        for segment in file.relpath.split('/') {
            if segment.is_empty() || segment == "." || segment == ".." || segment.contains('\\') {
                bail!(
                    "{DATAINDEX} names a file outside the export: {:?}",
                    file.relpath
                );
            }
            path.push(segment);
        }
        Ok(path)
    }
}

/// The time of the first `upload` in a devpi file log, whose times are
/// `[year, month, day, hour, minute, second]` in UTC.
fn upload_time(log: &Value) -> Option<String> {
    let entry = log
        .as_array()?
        .iter()
        .find(|e| e["what"].as_str() == Some("upload"))?;
    let parts: Vec<u64> = entry["when"]
        .as_array()?
        .iter()
        .map(Value::as_u64)
        .collect::<Option<_>>()?;
    let [y, mo, d, h, mi, s] = parts.as_slice() else {
        return None;
    };
    Some(format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        serde_json::json!({
            "users": {
                "root": {"pwhash": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", "username": "root"},
                "old": {"pwhash": "abc", "pwsalt": "xyz", "email": "o@x"},
            },
            "indexes": {
                "root/dev": {
                    "indexconfig": {"type": "stage", "acl_upload": ["root", ":ANONYMOUS:"]},
                    "files": [
                        {
                            "type": "releasefile",
                            "projectname": "devpkg",
                            "version": "1.0",
                            "relpath": "root/dev/devpkg/1.0/devpkg-1.0-py3-none-any.whl",
                            "entrymapping": {"hash_spec": "sha256=00ff", "hashes": {"sha256": "00ff"}},
                            "log": [
                                {"what": "push", "when": [2025, 1, 1, 0, 0, 0]},
                                {"what": "upload", "who": "root", "when": [2024, 3, 9, 7, 5, 1], "dst": "root/dev"}
                            ]
                        },
                        {"type": "doczip", "relpath": "root/dev/devpkg/1.0/devpkg-1.0.doc.zip"}
                    ]
                },
                "alice/prod": {"files": []}
            }
        })
    }

    #[test]
    fn an_export_gives_users_indexes_and_release_files_with_upload_times() {
        let export = DevpiExport::parse(&sample()).unwrap();
        assert_eq!(export.indexes, ["alice/prod", "root/dev"]);
        assert_eq!(
            export.files,
            [DevpiFile {
                index: "root/dev".into(),
                relpath: "root/dev/devpkg/1.0/devpkg-1.0-py3-none-any.whl".into(),
                filename: "devpkg-1.0-py3-none-any.whl".into(),
                sha256: Some("00ff".into()),
                upload_time: Some("2024-03-09T07:05:01Z".into()),
            }]
        );
        let users: Vec<_> = export
            .users
            .iter()
            .map(|u| (u.name.as_str(), u.password_hash.is_some()))
            .collect();
        assert_eq!(users, [("old", false), ("root", true)]);
        assert_eq!(export.uploaders["root/dev"], ["root"]);
        assert!(export.uploaders["alice/prod"].is_empty());
    }

    #[test]
    fn a_relpath_may_not_leave_the_export() {
        let mut file = DevpiExport::parse(&sample()).unwrap().files.remove(0);
        let dir = Path::new("/x/export");
        assert!(DevpiExport::path_of(dir, &file).is_ok());
        for bad in ["../etc/passwd", "/etc/passwd", "a//b", "a/./b", "a\\..\\b"] {
            file.relpath = bad.into();
            assert!(DevpiExport::path_of(dir, &file).is_err(), "{bad}");
        }
        assert!(DevpiExport::parse(&serde_json::json!({"users": {}})).is_err());
    }
}
