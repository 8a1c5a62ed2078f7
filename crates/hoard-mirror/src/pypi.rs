//! What an upstream PyPI project page adds to a mirror: the files it has
//! not listed yet, and the yank changes of those it has. Pure: the server
//! reads the index and records the result through the writer.

use std::collections::BTreeMap;

use hoard_core::{FileRecord, MirroredFile, Sha256};
use hoard_pypi::{parse_dist_filename, RefusedFile, UpstreamFile, UpstreamProject};

/// What the mirror holds of one file now.
#[derive(Clone, Debug)]
pub struct KnownFile {
    /// `Some(reason)` while yanked.
    pub yanked: Option<String>,
}

/// The changes one fetch of a page brings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PypiRefresh {
    pub display_name: String,
    /// Files to list, in the page's order.
    pub new_files: Vec<MirroredFile>,
    /// Yank states to set, by reason (`None`: un-yank), each with its files.
    pub yanks: BTreeMap<Option<String>, Vec<String>>,
    /// Entries of the page left out, with why.
    pub refused: Vec<RefusedFile>,
}

impl PypiRefresh {
    /// A revalidation that finds nothing new records nothing.
    pub fn is_empty(&self) -> bool {
        self.new_files.is_empty() && self.yanks.is_empty()
    }
}

/// Compares `page`, an upstream's page for the normalized `project`, with
/// the files the mirror lists (`known`, by filename). Files the upstream
/// no longer lists stay: a cached file is never removed.
pub fn plan_pypi_refresh(
    project: &str,
    page: &UpstreamProject,
    known: &BTreeMap<String, KnownFile>,
) -> PypiRefresh {
    let mut refresh = PypiRefresh {
        display_name: page.name.clone().unwrap_or_else(|| project.to_owned()),
        refused: page.refused.clone(),
        ..PypiRefresh::default()
    };
    for file in &page.files {
        if let Some(k) = known.get(&file.filename) {
            if k.yanked != file.yanked {
                refresh
                    .yanks
                    .entry(file.yanked.clone())
                    .or_default()
                    .push(file.filename.clone());
            }
            continue;
        }
        match mirrored_file(project, file) {
            Ok(m) => refresh.new_files.push(m),
            Err(reason) => refresh.refused.push(RefusedFile {
                entry: file.filename.clone(),
                reason,
            }),
        }
    }
    refresh
}

fn mirrored_file(project: &str, file: &UpstreamFile) -> Result<MirroredFile, String> {
    let dist = parse_dist_filename(&file.filename).map_err(|e| e.to_string())?;
    if dist.project != project {
        return Err(format!("the file belongs to project {:?}", dist.project));
    }
    let sha256 = file
        .hashes
        .get("sha256")
        .ok_or("the upstream lists no sha256 for it")?
        .parse::<Sha256>()
        .map_err(|e| format!("its sha256: {e}"))?;
    // A .metadata file is offered only with a digest to check it against.
    let core_metadata = file
        .core_metadata
        .as_ref()
        .and_then(|hashes| hashes.get("sha256"))
        .and_then(|hex| hex.parse::<Sha256>().ok());
    Ok(MirroredFile {
        record: FileRecord {
            filename: file.filename.clone(),
            version: dist.version.clone(),
            sha256,
            size: file.size.unwrap_or(0),
            packagetype: dist.kind.packagetype().to_owned(),
            requires_python: file.requires_python.clone(),
            core_metadata,
        },
        url: file.url.clone(),
        upload_time_us: file.upload_time.as_deref().and_then(parse_upload_time),
        yanked: file.yanked.clone(),
    })
}

/// An ISO 8601 / RFC 3339 time, in microseconds since the epoch.
fn parse_upload_time(text: &str) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0f343b0931126a20f133d67c2b018a3b7cc28b6e2b3c3e8f6f2e6f6e6f6e6f6e";

    fn upstream(filename: &str, yanked: Option<&str>) -> UpstreamFile {
        UpstreamFile {
            filename: filename.to_owned(),
            url: format!("https://files.test/{filename}"),
            hashes: [("sha256".to_owned(), SHA.to_owned())].into(),
            requires_python: Some(">=3.8".to_owned()),
            yanked: yanked.map(str::to_owned),
            core_metadata: Some([("sha256".to_owned(), SHA.to_owned())].into()),
            size: Some(10),
            upload_time: Some("2026-01-02T03:04:05.000000Z".to_owned()),
        }
    }

    fn page(files: Vec<UpstreamFile>) -> UpstreamProject {
        UpstreamProject {
            name: Some("Demo".to_owned()),
            files,
            refused: Vec::new(),
        }
    }

    #[test]
    fn new_files_are_listed_and_known_ones_only_change_their_yank_state() {
        let page = page(vec![
            upstream("demo-1.0-py3-none-any.whl", None),
            upstream("demo-1.1.tar.gz", Some("broken")),
            upstream("demo-0.9-py3-none-any.whl", None),
        ]);
        let first = plan_pypi_refresh("demo", &page, &BTreeMap::new());
        assert_eq!(first.display_name, "Demo");
        assert_eq!(first.new_files.len(), 3);
        let sdist = &first.new_files[1];
        assert_eq!(sdist.record.version, "1.1");
        assert_eq!(sdist.record.packagetype, "sdist");
        assert_eq!(sdist.yanked.as_deref(), Some("broken"));
        assert_eq!(sdist.upload_time_us, Some(1_767_323_045_000_000));
        assert_eq!(sdist.record.core_metadata, Some(SHA.parse().unwrap()));

        let known: BTreeMap<String, KnownFile> = [
            ("demo-1.0-py3-none-any.whl", Some("")),
            ("demo-1.1.tar.gz", Some("broken")),
            ("demo-0.9-py3-none-any.whl", None),
        ]
        .into_iter()
        .map(|(f, y)| {
            (
                f.to_owned(),
                KnownFile {
                    yanked: y.map(str::to_owned),
                },
            )
        })
        .collect();
        let again = plan_pypi_refresh("demo", &page, &known);
        assert!(again.new_files.is_empty());
        assert_eq!(
            again.yanks,
            [(None, vec!["demo-1.0-py3-none-any.whl".to_owned()])].into()
        );
        let unchanged = plan_pypi_refresh("demo", &page, &{
            let mut k = known;
            k.get_mut("demo-1.0-py3-none-any.whl").unwrap().yanked = None;
            k
        });
        assert!(unchanged.is_empty());
    }

    #[test]
    fn files_without_a_sha256_or_of_another_project_are_refused() {
        let mut no_hash = upstream("demo-1.0.tar.gz", None);
        no_hash.hashes.clear();
        let page = page(vec![
            no_hash,
            upstream("other-1.0.tar.gz", None),
            upstream("demo-setup.exe", None),
            upstream("demo-2.0.tar.gz", None),
        ]);
        let refresh = plan_pypi_refresh("demo", &page, &BTreeMap::new());
        let listed: Vec<&str> = refresh
            .new_files
            .iter()
            .map(|f| f.record.filename.as_str())
            .collect();
        assert_eq!(listed, ["demo-2.0.tar.gz"]);
        assert_eq!(refresh.refused.len(), 3, "{:?}", refresh.refused);
        assert!(refresh.refused[0].reason.contains("no sha256"));
        assert!(refresh.refused[1].reason.contains("project \"other\""));
    }
}
