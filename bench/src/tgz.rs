//! npm packages built in memory: real gzipped tarballs (`package/…`), and
//! the `PUT /{name}` document that `npm publish` sends for one version.

use std::io::Write as _;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::json;
use sha1::Digest as _;

/// A `.tgz` with `package/package.json`, `package/index.js`, a README, and
/// `package/payload.bin` if `payload` is given (stored with the fastest
/// gzip level: it is meant to be incompressible).
pub fn build(name: &str, version: &str, payload: Option<&[u8]>) -> Vec<u8> {
    let level = if payload.is_some() {
        Compression::fast()
    } else {
        Compression::default()
    };
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), level));
    let manifest = serde_json::to_vec_pretty(&json!({
        "name": name,
        "version": version,
        "description": "a hoard benchmark package",
        "main": "index.js",
        "license": "MIT",
    }))
    .expect("json");
    let index = format!("module.exports = {{ version: {version:?} }};\n");
    let readme = format!("# {name}\n\nA package for hoard's benchmark.\n");
    let mut members: Vec<(&str, &[u8])> = vec![
        ("package/package.json", &manifest),
        ("package/index.js", index.as_bytes()),
        ("package/README.md", readme.as_bytes()),
    ];
    if let Some(p) = payload {
        members.push(("package/payload.bin", p));
    }
    for (path, bytes) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        // npm packs every file with this mtime (1985-10-26).
        h.set_mtime(499_162_500);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, path, bytes).expect("tar append");
    }
    let gz = tar.into_inner().expect("tar finish");
    gz.finish().expect("gzip finish")
}

/// The body of `PUT /{repo}/{name}` that publishes `version` with `tgz`, in
/// the shape npm 10 sends (see crates/hoard-npm/tests/fixtures). `registry`
/// is the registry's URL (for `dist.tarball`, which the server replaces).
pub fn publish_document(
    registry: &str,
    name: &str,
    version: &str,
    tgz: &[u8],
    dependencies: &serde_json::Value,
) -> Vec<u8> {
    let shasum = hex::encode(sha1::Sha1::digest(tgz));
    let integrity = format!("sha512-{}", B64.encode(sha2::Sha512::digest(tgz)));
    let file = format!("{name}-{version}.tgz");
    let description = "a hoard benchmark package";
    let readme = format!("# {name}\n\nA package for hoard's benchmark, version {version}.\n");
    let doc = json!({
        "_id": name,
        "name": name,
        "description": description,
        "dist-tags": { "latest": version },
        "versions": {
            version: {
                "name": name,
                "version": version,
                "description": description,
                "main": "index.js",
                "keywords": ["hoard", "benchmark"],
                "license": "MIT",
                "dependencies": dependencies,
                "engines": { "node": ">=18" },
                "_id": format!("{name}@{version}"),
                "readme": readme,
                "readmeFilename": "README.md",
                "_nodeVersion": "20.20.2",
                "_npmVersion": "10.8.2",
                "dist": {
                    "integrity": integrity,
                    "shasum": shasum,
                    "tarball": format!("{registry}/{name}/-/{file}"),
                },
            }
        },
        "access": null,
        "_attachments": {
            file: {
                "content_type": "application/octet-stream",
                "data": B64.encode(tgz),
                "length": tgz.len(),
            }
        },
    });
    let mut out = Vec::with_capacity(tgz.len() * 4 / 3 + 4096);
    out.write_all(&serde_json::to_vec(&doc).expect("json"))
        .expect("write to a Vec");
    out
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn tarball_is_gzipped_tar_with_package_json() {
        let t = build("bench-npm", "1.2.3", Some(&[7u8; 1000]));
        assert_eq!(&t[..2], &[0x1f, 0x8b]);
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&t[..]));
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            if path == "package/package.json" {
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                assert!(s.contains("\"version\": \"1.2.3\""));
            }
            names.push(path);
        }
        assert!(names.contains(&"package/payload.bin".to_string()));
    }

    #[test]
    fn publish_document_declares_the_right_digests() {
        let t = build("bench-npm", "1.0.0", None);
        let doc: serde_json::Value = serde_json::from_slice(&publish_document(
            "http://127.0.0.1:1/npm",
            "bench-npm",
            "1.0.0",
            &t,
            &json!({}),
        ))
        .unwrap();
        let att = &doc["_attachments"]["bench-npm-1.0.0.tgz"];
        assert_eq!(att["length"], t.len());
        assert_eq!(B64.decode(att["data"].as_str().unwrap()).unwrap(), t);
        let dist = &doc["versions"]["1.0.0"]["dist"];
        assert_eq!(dist["shasum"], hex::encode(sha1::Sha1::digest(&t)));
        assert!(dist["integrity"].as_str().unwrap().starts_with("sha512-"));
    }
}
