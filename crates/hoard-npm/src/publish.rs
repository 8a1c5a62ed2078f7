//! The documents that npm `PUT`s to `/{name}`: a publish (`npm publish`)
//! or a metadata update (`npm deprecate`), and the revision `PUT` to
//! `/{name}/-rev/{rev}` that `npm unpublish pkg@version` and `npm owner`
//! send.
//!
//! What npm 10.8 sends (fixtures in `tests/fixtures/`):
//! - `npm publish`: `{_id, name, description, "dist-tags": {tag: v},
//!   versions: {v: manifest}, access, _attachments: {"<name>-<v>.tgz":
//!   {content_type, data, length}}}`. The readme is in the manifest
//!   (`readme`, `readmeFilename`), not at the top level. For a scoped package
//!   the attachment key is the full name: `@acme/widget-1.0.0.tgz`.
//! - `npm deprecate`: `GET /{name}?write=true`, then a `PUT /{name}` of that
//!   packument, with `deprecated` set on the matching versions (`""` to
//!   un-deprecate) and no `_attachments`.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::publish_stream::StreamedAttachment;
use crate::tarball::{tarball_basename, verify_tarball_hashes, TarballDigests, TarballHashes};
use crate::versions::{parse_version, validate_tag};
use crate::{validate_new_package_name, NpmError, PackageName};

/// What a `PUT /{name}` body asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum PutDocument {
    /// `npm publish`: one new version and its tarball (boxed: it is large).
    Publish(Box<PublishRequest>),
    /// A document without attachments: `npm deprecate` (and un-deprecate).
    Deprecate(DeprecateRequest),
}

/// A checked `npm publish`: the name is valid for a new package, the single
/// version is strict semver, the tarball is gzip data whose length, shasum
/// and integrity match what the document declares.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishRequest {
    pub name: PackageName,
    pub version: String,
    /// The version manifest as published (npm's fields, `dist` included),
    /// minus `readme`, which is moved to [`PublishRequest::readme`]. Render
    /// it with hoard's own `dist` (see [`crate::render_full_packument`]).
    pub manifest: Value,
    /// The dist-tags that the publish sets, each pointing at `version`
    /// (`latest` by default, or the `--tag`). May be empty; see
    /// [`dist_tags_after_publish`].
    pub dist_tags: Vec<(String, String)>,
    /// The decoded tarball when it was in the document; `None` when it
    /// was streamed out of it ([`crate::PublishSplitter`]), checked by its
    /// hashes, and is the caller's to store.
    pub tarball: Option<Vec<u8>>,
    /// `{name-without-scope}-{version}.tgz`.
    pub tarball_basename: String,
    /// Digests of the tarball, computed here (and checked against `dist`).
    pub digests: TarballDigests,
    /// The top-level `readme`, else the manifest's.
    pub readme: Option<String>,
    /// The top-level `description`, else the manifest's.
    pub description: Option<String>,
}

/// A metadata `PUT` without attachments: what `npm deprecate` sends. It is
/// the whole packument as npm fetched it, so the server diffs it against what
/// it stores: `changes` has `(version, message)` for every version that
/// carries a `deprecated` field (`""`: not deprecated), and a version
/// without the field makes no statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeprecateRequest {
    pub name: PackageName,
    pub changes: Vec<(String, String)>,
    /// Every version key in the document. A version that the server does not
    /// have means that this was not a deprecation (a publish without its
    /// tarball): refuse it.
    pub versions: Vec<String>,
}

/// The body of `PUT /{name}/-rev/{rev}`: npm's unpublish of one version
/// sends the packument without that version (then deletes the tarball with
/// `DELETE /{name}/-/{file}/-rev/{rev}`); `npm owner` sends it with changed
/// `maintainers`. The server diffs `versions` with what it stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionUpdate {
    pub name: PackageName,
    /// Every version key that remains in the document; `None` when it has
    /// no `versions` (an owner change).
    pub versions: Option<Vec<String>>,
    pub dist_tags: Vec<(String, String)>,
    /// The owners' names, when the document has `maintainers`.
    pub maintainers: Option<Vec<String>>,
}

/// Parses and checks a `PUT /{name}` body against the package named in the
/// URL. See [`PutDocument`]. The server limits the body's size before
/// calling this (the decoded tarball is at most ¾ of the body).
pub fn parse_publish(body: &[u8], url_name: &PackageName) -> Result<PutDocument, NpmError> {
    parse_put_document(body, url_name, None)
}

/// [`parse_publish`] of a document whose attachment data may have been
/// streamed out (`streamed`), to be checked by its hashes.
pub(crate) fn parse_put_document(
    body: &[u8],
    url_name: &PackageName,
    streamed: Option<&StreamedAttachment>,
) -> Result<PutDocument, NpmError> {
    let doc = parse_object(body)?;
    check_document_name(&doc, url_name)?;
    match doc.get("_attachments") {
        None | Some(Value::Null) => parse_deprecate(&doc, url_name).map(PutDocument::Deprecate),
        Some(Value::Object(a)) if a.is_empty() => {
            parse_deprecate(&doc, url_name).map(PutDocument::Deprecate)
        }
        Some(_) => {
            parse_new_version(doc, url_name, streamed).map(|p| PutDocument::Publish(Box::new(p)))
        }
    }
}

/// Parses a `PUT /{name}/-rev/{rev}` body. See [`RevisionUpdate`].
pub fn parse_revision_put(body: &[u8], url_name: &PackageName) -> Result<RevisionUpdate, NpmError> {
    let doc = parse_object(body)?;
    check_names(&doc, url_name, false)?;
    let versions = match doc.get("versions") {
        None | Some(Value::Null) => None,
        Some(Value::Object(v)) => Some(v.keys().cloned().collect()),
        Some(_) => return Err(doc_err("'versions' must be an object")),
    };
    let maintainers = match doc.get("maintainers") {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) => {
            let mut names = Vec::new();
            for m in list {
                let name = match m {
                    Value::Object(o) => o.get("name").and_then(Value::as_str),
                    Value::String(s) => Some(s.as_str()),
                    _ => None,
                };
                let name =
                    name.ok_or_else(|| doc_err("each of 'maintainers' must have a 'name'"))?;
                crate::validate_username(name)?;
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_owned());
                }
            }
            Some(names)
        }
        Some(_) => return Err(doc_err("'maintainers' must be an array")),
    };
    if versions.is_none() && maintainers.is_none() {
        return Err(doc_err(
            "a revision update needs 'versions' (an unpublish) or 'maintainers' (an owner change)",
        ));
    }
    Ok(RevisionUpdate {
        name: url_name.clone(),
        versions,
        dist_tags: parse_dist_tags(&doc)?,
        maintainers,
    })
}

/// The dist-tags after a publish: `existing`, with the publish's tags set;
/// and `latest` set to the published version when no `latest` exists (the
/// first publish, whatever its `--tag`, as the public registry does).
pub fn dist_tags_after_publish(
    existing: &BTreeMap<String, String>,
    publish: &PublishRequest,
) -> BTreeMap<String, String> {
    let mut tags = existing.clone();
    for (tag, version) in &publish.dist_tags {
        tags.insert(tag.clone(), version.clone());
    }
    tags.entry("latest".to_owned())
        .or_insert_with(|| publish.version.clone());
    tags
}

fn doc_err(msg: impl Into<String>) -> NpmError {
    NpmError::InvalidDocument(msg.into())
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, NpmError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(NpmError::MalformedJson("expected a JSON object".into())),
        Err(e) => Err(NpmError::MalformedJson(e.to_string())),
    }
}

/// `name` must be the URL's package; `_id`, when present, too.
fn check_document_name(doc: &Map<String, Value>, url_name: &PackageName) -> Result<(), NpmError> {
    check_names(doc, url_name, true)
}

/// Each of `name` and `_id` that is present must be the URL's package;
/// `name` must be present when `require_name`, else one of them must be
/// (`npm owner` sends `_id` alone).
fn check_names(
    doc: &Map<String, Value>,
    url_name: &PackageName,
    require_name: bool,
) -> Result<(), NpmError> {
    if !require_name && !doc.contains_key("name") && !doc.contains_key("_id") {
        return Err(doc_err("missing 'name' and '_id'"));
    }
    let expected = url_name.full();
    for field in ["name", "_id"] {
        match doc.get(field) {
            Some(Value::String(n)) if *n == expected => {}
            Some(Value::String(n)) => {
                return Err(NpmError::NameMismatch {
                    url: expected,
                    document: n.clone(),
                })
            }
            None if field == "_id" || !require_name => {}
            None => return Err(doc_err("missing 'name'")),
            Some(_) => return Err(doc_err(format!("'{field}' must be a string"))),
        }
    }
    Ok(())
}

fn optional_string(map: &Map<String, Value>, field: &str) -> Result<Option<String>, NpmError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(doc_err(format!("'{field}' must be a string"))),
    }
}

fn parse_dist_tags(doc: &Map<String, Value>) -> Result<Vec<(String, String)>, NpmError> {
    match doc.get("dist-tags") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(tags)) => tags
            .iter()
            .map(|(tag, v)| match v {
                Value::String(v) => Ok((tag.clone(), v.clone())),
                _ => Err(doc_err(format!(
                    "dist-tag '{tag}' must name a version string"
                ))),
            })
            .collect(),
        Some(_) => Err(doc_err("'dist-tags' must be an object")),
    }
}

fn parse_deprecate(
    doc: &Map<String, Value>,
    url_name: &PackageName,
) -> Result<DeprecateRequest, NpmError> {
    let versions = match doc.get("versions") {
        Some(Value::Object(v)) => v,
        None | Some(Value::Null) => {
            return Err(doc_err(
                "a publish needs 'versions' and '_attachments'; this document has neither",
            ))
        }
        Some(_) => return Err(doc_err("'versions' must be an object")),
    };
    let mut changes = Vec::new();
    for (version, manifest) in versions {
        let Value::Object(manifest) = manifest else {
            return Err(doc_err(format!("versions['{version}'] must be an object")));
        };
        match manifest.get("deprecated") {
            None | Some(Value::Null) => {}
            Some(Value::String(msg)) => changes.push((version.clone(), msg.clone())),
            Some(Value::Bool(false)) => changes.push((version.clone(), String::new())),
            Some(_) => {
                return Err(doc_err(format!(
                    "versions['{version}'].deprecated must be a string"
                )))
            }
        }
    }
    Ok(DeprecateRequest {
        name: url_name.clone(),
        changes,
        versions: versions.keys().cloned().collect(),
    })
}

fn parse_new_version(
    mut doc: Map<String, Value>,
    url_name: &PackageName,
    streamed: Option<&StreamedAttachment>,
) -> Result<PublishRequest, NpmError> {
    let name = validate_new_package_name(&url_name.full())?;
    let full = name.full();

    let versions = match doc.remove("versions") {
        Some(Value::Object(v)) => v,
        None | Some(Value::Null) => return Err(NpmError::VersionCount(0)),
        Some(_) => return Err(doc_err("'versions' must be an object")),
    };
    if versions.len() != 1 {
        return Err(NpmError::VersionCount(versions.len()));
    }
    let Some((version, manifest)) = versions.into_iter().next() else {
        return Err(NpmError::VersionCount(0));
    };
    parse_version(&version)?;
    let Value::Object(mut manifest) = manifest else {
        return Err(doc_err(format!("versions['{version}'] must be an object")));
    };
    match manifest.get("name") {
        Some(Value::String(n)) if *n == full => {}
        Some(Value::String(n)) => {
            return Err(NpmError::NameMismatch {
                url: full,
                document: n.clone(),
            })
        }
        _ => {
            return Err(doc_err(format!(
                "versions['{version}'].name must be '{full}'"
            )))
        }
    }
    match manifest.get("version") {
        Some(Value::String(v)) if *v == version => {}
        _ => {
            return Err(doc_err(format!(
                "versions['{version}'].version must be '{version}'"
            )))
        }
    }
    match manifest.get("_id") {
        None | Some(Value::Null) => {}
        Some(Value::String(id)) if *id == format!("{full}@{version}") => {}
        Some(_) => {
            return Err(doc_err(format!(
                "versions['{version}']._id must be '{full}@{version}'"
            )))
        }
    }

    let attachments = match doc.remove("_attachments") {
        Some(Value::Object(a)) => a,
        _ => return Err(doc_err("'_attachments' must be an object")),
    };
    if attachments.len() != 1 {
        return Err(NpmError::AttachmentCount(attachments.len()));
    }
    let Some((key, attachment)) = attachments.into_iter().next() else {
        return Err(NpmError::AttachmentCount(0));
    };
    let basename = tarball_basename(&name, &version);
    let npm_key = format!("{full}-{version}.tgz");
    if key != basename && key != npm_key {
        return Err(NpmError::AttachmentName {
            expected: npm_key,
            found: key,
        });
    }
    let Value::Object(attachment) = attachment else {
        return Err(doc_err(format!("attachment '{key}' must be an object")));
    };
    let Some(Value::String(data)) = attachment.get("data") else {
        return Err(doc_err(format!("attachment '{key}' needs 'data' (base64)")));
    };
    let declared = match attachment.get("length") {
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
            doc_err(format!(
                "attachment '{key}': 'length' must be a whole number"
            ))
        })?,
        _ => return Err(doc_err(format!("attachment '{key}' needs 'length'"))),
    };
    let (tarball, hashes, head) = match streamed {
        Some(s) if s.key == key && data.is_empty() => (None, s.hashes.clone(), s.head.clone()),
        Some(_) => {
            return Err(doc_err(format!(
                "attachment '{key}' is not the one whose data the document carries"
            )))
        }
        None => {
            let bytes = B64.decode(data).map_err(|e| NpmError::BadBase64 {
                attachment: key.clone(),
                reason: e.to_string(),
            })?;
            let hashes = TarballHashes::of(&bytes);
            let head = bytes[..bytes.len().min(2)].to_vec();
            (Some(bytes), hashes, head)
        }
    };
    if hashes.size != declared {
        return Err(NpmError::LengthMismatch {
            declared,
            actual: hashes.size,
        });
    }
    if !head.starts_with(&[0x1f, 0x8b]) {
        return Err(NpmError::NotGzip(key));
    }
    let digests = verify_tarball_hashes(manifest.get("dist").unwrap_or(&Value::Null), &hashes)?;

    let mut dist_tags = Vec::new();
    for (tag, target) in parse_dist_tags(&doc)? {
        validate_tag(&tag)?;
        if target != version {
            return Err(doc_err(format!(
                "dist-tag '{tag}' points to '{target}', but this publish is of '{version}'"
            )));
        }
        dist_tags.push((tag, target));
    }

    let manifest_readme = match manifest.remove("readme") {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let readme = optional_string(&doc, "readme")?.or(manifest_readme);
    let description = match optional_string(&doc, "description")? {
        Some(d) => Some(d),
        None => optional_string(&manifest, "description")?,
    };

    Ok(PublishRequest {
        name,
        version,
        manifest: Value::Object(manifest),
        dist_tags,
        tarball,
        tarball_basename: basename,
        digests,
        readme,
        description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A gzip-looking tarball (only the magic matters here).
    const TGZ: &[u8] = &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 4, 5];

    fn pkg(s: &str) -> PackageName {
        PackageName::parse(s).unwrap()
    }

    /// A publish document shaped like npm 10's.
    fn doc(name: &str, version: &str, bytes: &[u8]) -> Value {
        let d = TarballDigests::compute(bytes);
        json!({
            "_id": name,
            "name": name,
            "description": "d",
            "dist-tags": {"latest": version},
            "versions": {version: {
                "name": name, "version": version, "description": "d",
                "_id": format!("{name}@{version}"),
                "readme": "# readme", "readmeFilename": "README.md",
                "_nodeVersion": "20.20.2", "_npmVersion": "10.8.2",
                "dist": {"integrity": d.integrity, "shasum": d.shasum,
                         "tarball": format!("http://127.0.0.1:4040/npm/{name}/-/{name}-{version}.tgz")},
            }},
            "access": null,
            "_attachments": {format!("{name}-{version}.tgz"): {
                "content_type": "application/octet-stream",
                "data": B64.encode(bytes),
                "length": bytes.len(),
            }},
        })
    }

    fn publish(v: &Value, url: &str) -> Result<PublishRequest, NpmError> {
        match parse_publish(v.to_string().as_bytes(), &pkg(url))? {
            PutDocument::Publish(p) => Ok(*p),
            other => panic!("expected a publish, got {other:?}"),
        }
    }

    #[test]
    fn accepts_a_publish() {
        let p = publish(&doc("hoard-demo", "1.0.0", TGZ), "hoard-demo").unwrap();
        assert_eq!(p.name.full(), "hoard-demo");
        assert_eq!(p.version, "1.0.0");
        assert_eq!(p.tarball.as_deref(), Some(TGZ));
        assert_eq!(p.tarball_basename, "hoard-demo-1.0.0.tgz");
        assert_eq!(p.dist_tags, vec![("latest".to_owned(), "1.0.0".to_owned())]);
        assert_eq!(p.readme.as_deref(), Some("# readme"));
        assert_eq!(p.description.as_deref(), Some("d"));
        assert_eq!(p.digests, TarballDigests::compute(TGZ));
        assert!(
            p.manifest.get("readme").is_none(),
            "readme moves out of the manifest"
        );
        assert_eq!(p.manifest["readmeFilename"], "README.md");
        assert_eq!(p.manifest["_npmVersion"], "10.8.2");
    }

    #[test]
    fn accepts_scoped_publish_with_either_attachment_key() {
        let mut d = doc("@acme/widget", "1.0.0", TGZ);
        let p = publish(&d, "@acme/widget").unwrap();
        assert_eq!(p.tarball_basename, "widget-1.0.0.tgz");
        let att = d["_attachments"]["@acme/widget-1.0.0.tgz"].take();
        d["_attachments"] = json!({"widget-1.0.0.tgz": att});
        assert_eq!(
            publish(&d, "@acme/widget").unwrap().tarball_basename,
            "widget-1.0.0.tgz"
        );
    }

    #[test]
    fn top_level_readme_wins() {
        let mut d = doc("a", "1.0.0", TGZ);
        d["readme"] = json!("top");
        assert_eq!(publish(&d, "a").unwrap().readme.as_deref(), Some("top"));
        d["versions"]["1.0.0"]
            .as_object_mut()
            .unwrap()
            .remove("readme");
        d.as_object_mut().unwrap().remove("readme");
        d.as_object_mut().unwrap().remove("description");
        let p = publish(&d, "a").unwrap();
        assert_eq!(p.readme, None);
        assert_eq!(
            p.description.as_deref(),
            Some("d"),
            "falls back to the manifest"
        );
    }

    #[test]
    fn refuses_malformed_json() {
        for body in [
            &b"{"[..],
            b"",
            b"[]",
            b"\"x\"",
            b"{\"name\": }",
            b"\xff\xfe",
        ] {
            assert!(
                matches!(
                    parse_publish(body, &pkg("a")),
                    Err(NpmError::MalformedJson(_))
                ),
                "{body:?}"
            );
        }
    }

    #[test]
    fn refuses_name_mismatch() {
        let d = doc("hoard-demo", "1.0.0", TGZ);
        let e = publish(&d, "other").unwrap_err();
        assert_eq!(
            e.to_string(),
            "package name mismatch: the URL names 'other' but the document names 'hoard-demo'"
        );
        // The manifest's name too.
        let mut d = doc("a", "1.0.0", TGZ);
        d["versions"]["1.0.0"]["name"] = json!("b");
        assert!(matches!(
            publish(&d, "a"),
            Err(NpmError::NameMismatch { .. })
        ));
        // And `_id`.
        let mut d = doc("a", "1.0.0", TGZ);
        d["_id"] = json!("b");
        assert!(matches!(
            publish(&d, "a"),
            Err(NpmError::NameMismatch { .. })
        ));
        // A missing name.
        let mut d = doc("a", "1.0.0", TGZ);
        d.as_object_mut().unwrap().remove("name");
        assert!(matches!(
            publish(&d, "a"),
            Err(NpmError::InvalidDocument(_))
        ));
    }

    #[test]
    fn refuses_names_invalid_for_new_packages() {
        let d = doc("Hoard", "1.0.0", TGZ);
        assert!(matches!(
            publish(&d, "Hoard"),
            Err(NpmError::InvalidName { .. })
        ));
    }

    #[test]
    fn refuses_other_than_one_version() {
        let mut d = doc("a", "1.0.0", TGZ);
        let m = d["versions"]["1.0.0"].clone();
        d["versions"]["1.0.1"] = m;
        assert_eq!(publish(&d, "a").unwrap_err(), NpmError::VersionCount(2));
        d["versions"] = json!({});
        assert_eq!(publish(&d, "a").unwrap_err(), NpmError::VersionCount(0));
        d.as_object_mut().unwrap().remove("versions");
        assert_eq!(publish(&d, "a").unwrap_err(), NpmError::VersionCount(0));
    }

    #[test]
    fn refuses_version_missing_from_versions() {
        // The attachment is for 2.0.0, `versions` has only 1.0.0.
        let mut d = doc("a", "1.0.0", TGZ);
        let att = d["_attachments"]["a-1.0.0.tgz"].take();
        d["_attachments"] = json!({"a-2.0.0.tgz": att});
        let e = publish(&d, "a").unwrap_err();
        assert_eq!(
            e,
            NpmError::AttachmentName {
                expected: "a-1.0.0.tgz".into(),
                found: "a-2.0.0.tgz".into()
            }
        );
        // The manifest's version is not its key.
        let mut d = doc("a", "1.0.0", TGZ);
        d["versions"]["1.0.0"]["version"] = json!("1.0.1");
        assert!(matches!(
            publish(&d, "a"),
            Err(NpmError::InvalidDocument(_))
        ));
    }

    #[test]
    fn refuses_bad_versions() {
        let d = doc("a", "v1.0.0", TGZ);
        assert!(matches!(
            publish(&d, "a"),
            Err(NpmError::InvalidVersion { .. })
        ));
        let d = doc("a", "1.0", TGZ);
        assert!(matches!(
            publish(&d, "a"),
            Err(NpmError::InvalidVersion { .. })
        ));
    }

    #[test]
    fn refuses_two_attachments_or_none() {
        let mut d = doc("a", "1.0.0", TGZ);
        let att = d["_attachments"]["a-1.0.0.tgz"].clone();
        d["_attachments"]["a-1.0.1.tgz"] = att;
        assert_eq!(publish(&d, "a").unwrap_err(), NpmError::AttachmentCount(2));
        let mut d = doc("a", "1.0.0", TGZ);
        d["_attachments"] = json!([1]);
        assert!(matches!(
            publish(&d, "a"),
            Err(NpmError::InvalidDocument(_))
        ));
    }

    #[test]
    fn refuses_bad_base64() {
        for data in [
            "not base64!",
            "H4sI AAAA",
            "H4sIAAAAAAA",
            "H4sIAA==AA",
            "H4sIAA",
        ] {
            let mut d = doc("a", "1.0.0", TGZ);
            d["_attachments"]["a-1.0.0.tgz"]["data"] = json!(data);
            assert!(
                matches!(publish(&d, "a"), Err(NpmError::BadBase64 { .. })),
                "{data}"
            );
        }
        let mut d = doc("a", "1.0.0", TGZ);
        d["_attachments"]["a-1.0.0.tgz"]["data"] = json!(5);
        assert!(matches!(
            publish(&d, "a"),
            Err(NpmError::InvalidDocument(_))
        ));
    }

    #[test]
    fn refuses_length_mismatch() {
        let mut d = doc("a", "1.0.0", TGZ);
        d["_attachments"]["a-1.0.0.tgz"]["length"] = json!(TGZ.len() + 1);
        assert_eq!(
            publish(&d, "a").unwrap_err().to_string(),
            "attachment length mismatch: declared 16 bytes, received 15"
        );
        for bad in [json!(-1), json!(1.5), json!("15"), Value::Null] {
            d["_attachments"]["a-1.0.0.tgz"]["length"] = bad.clone();
            assert!(
                matches!(publish(&d, "a"), Err(NpmError::InvalidDocument(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn refuses_shasum_and_integrity_mismatch() {
        let mut d = doc("a", "1.0.0", TGZ);
        d["versions"]["1.0.0"]["dist"]["shasum"] = json!("0".repeat(40));
        assert!(matches!(
            publish(&d, "a"),
            Err(NpmError::ShasumMismatch { .. })
        ));
        let mut d = doc("a", "1.0.0", TGZ);
        d["versions"]["1.0.0"]["dist"]["integrity"] =
            json!(TarballDigests::compute(b"other").integrity);
        assert!(matches!(
            publish(&d, "a"),
            Err(NpmError::IntegrityMismatch { .. })
        ));
        // The bytes changed but the digests did not.
        let mut d = doc("a", "1.0.0", TGZ);
        let mut other = TGZ.to_vec();
        other.push(9);
        d["_attachments"]["a-1.0.0.tgz"]["data"] = json!(B64.encode(&other));
        d["_attachments"]["a-1.0.0.tgz"]["length"] = json!(other.len());
        assert!(matches!(
            publish(&d, "a"),
            Err(NpmError::ShasumMismatch { .. })
        ));
    }

    #[test]
    fn refuses_non_gzip() {
        let d = doc("a", "1.0.0", b"plain text");
        assert_eq!(
            publish(&d, "a").unwrap_err(),
            NpmError::NotGzip("a-1.0.0.tgz".into())
        );
    }

    #[test]
    fn dist_tags_must_point_at_the_published_version() {
        let mut d = doc("a", "1.0.0", TGZ);
        d["dist-tags"] = json!({"beta": "0.9.0"});
        assert!(matches!(
            publish(&d, "a"),
            Err(NpmError::InvalidDocument(_))
        ));
        d["dist-tags"] = json!({"1.0": "1.0.0"});
        assert!(matches!(publish(&d, "a"), Err(NpmError::InvalidTag { .. })));
        d["dist-tags"] = json!({"beta": 1});
        assert!(matches!(
            publish(&d, "a"),
            Err(NpmError::InvalidDocument(_))
        ));
    }

    #[test]
    fn latest_is_set_by_the_first_publish() {
        let mut d = doc("a", "2.0.0", TGZ);
        d["dist-tags"] = json!({"beta": "2.0.0"});
        let p = publish(&d, "a").unwrap();
        let first = dist_tags_after_publish(&BTreeMap::new(), &p);
        assert_eq!(first.get("latest").map(String::as_str), Some("2.0.0"));
        assert_eq!(first.get("beta").map(String::as_str), Some("2.0.0"));
        let existing = BTreeMap::from([("latest".to_owned(), "1.0.0".to_owned())]);
        let later = dist_tags_after_publish(&existing, &p);
        assert_eq!(later.get("latest").map(String::as_str), Some("1.0.0"));
        d.as_object_mut().unwrap().remove("dist-tags");
        let p = publish(&d, "a").unwrap();
        assert!(p.dist_tags.is_empty());
        assert_eq!(
            dist_tags_after_publish(&BTreeMap::new(), &p)["latest"],
            "2.0.0"
        );
    }

    #[test]
    fn deprecate_documents() {
        let body = json!({
            "_id": "a", "name": "a", "dist-tags": {"latest": "1.0.0"},
            "versions": {
                "1.0.0": {"name": "a", "version": "1.0.0", "deprecated": "use 2"},
                "1.1.0": {"name": "a", "version": "1.1.0", "deprecated": ""},
                "1.2.0": {"name": "a", "version": "1.2.0", "deprecated": false},
                "2.0.0": {"name": "a", "version": "2.0.0"},
            },
        });
        let PutDocument::Deprecate(d) =
            parse_publish(body.to_string().as_bytes(), &pkg("a")).unwrap()
        else {
            panic!("expected a deprecation")
        };
        assert_eq!(
            d.changes,
            vec![
                ("1.0.0".into(), "use 2".into()),
                ("1.1.0".into(), String::new()),
                ("1.2.0".into(), String::new())
            ]
        );
        assert_eq!(d.versions, ["1.0.0", "1.1.0", "1.2.0", "2.0.0"]);
        // `_attachments: {}` is no attachment.
        let mut b = body.clone();
        b["_attachments"] = json!({});
        assert!(matches!(
            parse_publish(b.to_string().as_bytes(), &pkg("a")),
            Ok(PutDocument::Deprecate(_))
        ));
        let mut b = body.clone();
        b["versions"]["1.0.0"]["deprecated"] = json!(1);
        assert!(parse_publish(b.to_string().as_bytes(), &pkg("a")).is_err());
        let mut b = body.clone();
        b.as_object_mut().unwrap().remove("versions");
        assert!(matches!(
            parse_publish(b.to_string().as_bytes(), &pkg("a")),
            Err(NpmError::InvalidDocument(_))
        ));
        assert!(matches!(
            parse_publish(body.to_string().as_bytes(), &pkg("b")),
            Err(NpmError::NameMismatch { .. })
        ));
    }

    #[test]
    fn revision_puts() {
        let body = json!({"_id": "a", "_rev": "1-a", "name": "a", "dist-tags": {"latest": "1.1.0"},
                          "versions": {"1.1.0": {}}});
        let r = parse_revision_put(body.to_string().as_bytes(), &pkg("a")).unwrap();
        assert_eq!(r.versions, Some(vec!["1.1.0".to_string()]));
        assert_eq!(r.dist_tags, vec![("latest".into(), "1.1.0".into())]);
        assert_eq!(r.maintainers, None);
        assert!(parse_revision_put(b"{}", &pkg("a")).is_err());
        // What `npm owner add bob a` sends.
        let owners = json!({"_id": "a", "_rev": "1-a",
                            "maintainers": [{"name": "alice", "email": "a@x"}, {"name": "bob", "email": ""}]});
        let r = parse_revision_put(owners.to_string().as_bytes(), &pkg("a")).unwrap();
        assert_eq!(r.versions, None);
        assert_eq!(
            r.maintainers,
            Some(vec!["alice".to_string(), "bob".to_string()])
        );
        let bad = json!({"_id": "a", "maintainers": [{"email": "x"}]});
        assert!(parse_revision_put(bad.to_string().as_bytes(), &pkg("a")).is_err());
        let bad = json!({"_id": "a", "maintainers": "alice"});
        assert!(parse_revision_put(bad.to_string().as_bytes(), &pkg("a")).is_err());
        assert!(parse_revision_put(body.to_string().as_bytes(), &pkg("b")).is_err());
    }
}
