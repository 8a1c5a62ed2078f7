//! A package tarball as `npm pack` wrote it, turned back into what `npm
//! publish` sends: its `package/package.json`, read from the gzipped tar
//! in bounded memory, and the publish document around the tarball. For
//! importing a pile of tarballs; pure over bytes.

use std::io::Read as _;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::tarball::tarball_basename;
use crate::versions::parse_version;
use crate::{NpmError, PackageName};

/// The most `package.json` may weigh.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

fn bad(reason: impl Into<String>) -> NpmError {
    NpmError::InvalidDocument(reason.into())
}

/// The manifest of a package tarball: the `package.json` in its top
/// directory (`package/`, or whatever single directory npm used).
pub fn manifest_from_tarball(tarball: &[u8]) -> Result<Value, NpmError> {
    let gz = flate2::read::GzDecoder::new(tarball);
    let mut archive = tar::Archive::new(gz);
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("the tarball is not a gzipped tar: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| bad(format!("the tarball is not a gzipped tar: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(format!("a tarball member has no readable path: {e}")))?
            .into_owned();
        let parts: Vec<_> = path.components().collect();
        if parts.len() != 2 || parts[1].as_os_str() != "package.json" {
            continue;
        }
        if entry.size() > MAX_MANIFEST_BYTES {
            return Err(bad(format!(
                "package.json is larger than {MAX_MANIFEST_BYTES} bytes"
            )));
        }
        let mut text = Vec::new();
        entry
            .take(MAX_MANIFEST_BYTES)
            .read_to_end(&mut text)
            .map_err(|e| bad(format!("reading package.json: {e}")))?;
        let manifest: Value = serde_json::from_slice(&text)
            .map_err(|e| bad(format!("package.json is not JSON: {e}")))?;
        if !manifest.is_object() {
            return Err(bad("package.json is not a JSON object"));
        }
        return Ok(manifest);
    }
    Err(bad("the tarball has no package/package.json"))
}

/// The document `npm publish` would send for `tarball`, whose manifest is
/// `manifest`, to the registry at `registry` (ending with `/`), tagged
/// `latest`: the caller publishes a package's versions oldest first.
/// Returns the package's name and version too.
pub fn publish_document(
    manifest: &Value,
    tarball: &[u8],
    registry: &str,
) -> Result<(PackageName, String, Value), NpmError> {
    let name = manifest["name"]
        .as_str()
        .ok_or_else(|| bad("package.json has no name"))?;
    let version = manifest["version"]
        .as_str()
        .ok_or_else(|| bad("package.json has no version"))?;
    let package = PackageName::parse(name)?;
    parse_version(version).map_err(|e| NpmError::InvalidVersion {
        version: version.to_owned(),
        reason: e.to_string(),
    })?;
    let basename = tarball_basename(&package, version);
    let mut meta = manifest.clone();
    meta["_id"] = json!(format!("{name}@{version}"));
    meta["dist"] = json!({
        "integrity": format!("sha512-{}", B64.encode(<sha2::Sha512 as sha2::Digest>::digest(tarball))),
        "shasum": hex::encode(<sha1::Sha1 as sha1::Digest>::digest(tarball)),
        "tarball": format!("{registry}{name}/-/{basename}"),
    });
    let document = json!({
        "_id": name,
        "name": name,
        "description": manifest["description"].clone(),
        "dist-tags": { "latest": version },
        "versions": { version: meta },
        "_attachments": {
            format!("{name}-{version}.tgz"): {
                "content_type": "application/octet-stream",
                "data": B64.encode(tarball),
                "length": tarball.len(),
            }
        },
    });
    Ok((package, version.to_owned(), document))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(members: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (path, bytes) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, path, *bytes).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn a_tarball_becomes_the_document_npm_publish_sends() {
        let t = tarball(&[
            ("package/index.js", b"1"),
            (
                "package/package.json",
                br#"{"name":"@acme/widget","version":"1.2.0","description":"w"}"#,
            ),
        ]);
        let manifest = manifest_from_tarball(&t).unwrap();
        let (package, version, doc) = publish_document(&manifest, &t, "http://r/npm/").unwrap();
        assert_eq!(
            (package.full(), version.as_str()),
            ("@acme/widget".into(), "1.2.0")
        );
        let meta = &doc["versions"]["1.2.0"];
        assert_eq!(
            meta["dist"]["tarball"],
            "http://r/npm/@acme/widget/-/widget-1.2.0.tgz"
        );
        assert!(meta["dist"]["integrity"]
            .as_str()
            .unwrap()
            .starts_with("sha512-"));
        assert_eq!(meta["dist"]["shasum"].as_str().unwrap().len(), 40);
        assert_eq!(doc["dist-tags"]["latest"], "1.2.0");
        let attachment = &doc["_attachments"]["@acme/widget-1.2.0.tgz"];
        assert_eq!(attachment["length"], t.len());
        assert_eq!(B64.decode(attachment["data"].as_str().unwrap()).unwrap(), t);
    }

    #[test]
    fn what_is_not_a_package_tarball_says_why() {
        let no_manifest = tarball(&[("package/index.js", b"1")]);
        let deep = tarball(&[("package/lib/package.json", b"{}")]);
        for (bytes, says) in [
            (b"not gzip".to_vec(), "gzipped tar"),
            (no_manifest, "no package/package.json"),
            (deep, "no package/package.json"),
            (
                tarball(&[("package/package.json", b"[1]")]),
                "not a JSON object",
            ),
        ] {
            let e = manifest_from_tarball(&bytes).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
        let t = tarball(&[("package/package.json", br#"{"name":"x","version":"1"}"#)]);
        let m = manifest_from_tarball(&t).unwrap();
        assert!(publish_document(&m, &t, "http://r/").is_err());
        let m = json!({"name": "Bad Name", "version": "1.0.0"});
        assert!(publish_document(&m, &t, "http://r/").is_err());
    }
}
