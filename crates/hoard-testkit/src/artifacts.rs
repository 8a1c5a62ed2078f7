//! Test artifacts: wheels and sdists that pip, uv and twine accept, and
//! hostile files (zip bombs) for the bad-input tests.

use std::io::{Cursor, Write};
use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use sha2::Digest as _;
use zip::write::SimpleFileOptions;

/// A distribution file in memory.
#[derive(Clone, Debug)]
pub struct Artifact {
    /// The project name as given (not normalized).
    pub name: String,
    pub version: String,
    pub filename: String,
    pub bytes: Vec<u8>,
    /// The METADATA / PKG-INFO text inside.
    pub metadata: String,
}

impl Artifact {
    pub fn sha256(&self) -> String {
        crate::sha256_hex(&self.bytes)
    }

    pub fn md5(&self) -> String {
        crate::md5_hex(&self.bytes)
    }

    /// Write it into `dir` under its filename.
    pub fn write_to(&self, dir: &Path) -> std::path::PathBuf {
        crate::node::write_file(dir, &self.filename, &self.bytes)
    }
}

/// PEP 503 normalized name: lowercase, runs of `-`, `_`, `.` become `-`.
pub fn normalize(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.chars() {
        if c == '-' || c == '_' || c == '.' {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// The name as it appears in wheel and sdist filenames: normalized, with `_`.
pub fn dist_name(name: &str) -> String {
    normalize(name).replace('-', "_")
}

/// The importable module of a test project (same as the dist name).
pub fn module_name(name: &str) -> String {
    dist_name(name)
}

/// What to put in a wheel.
#[derive(Clone, Debug)]
pub struct WheelSpec {
    pub name: String,
    pub version: String,
    pub requires_python: Option<String>,
    /// Leave out `*.dist-info/METADATA`.
    pub omit_metadata: bool,
    /// More members (path, bytes), e.g. incompressible padding.
    pub extra_files: Vec<(String, Vec<u8>)>,
    /// PEP 508 requirements, one `Requires-Dist:` line each in METADATA
    /// (e.g. `"dep-a>=1.0"`); empty by default.
    pub requires_dist: Vec<String>,
}

impl WheelSpec {
    pub fn new(name: &str, version: &str) -> WheelSpec {
        WheelSpec {
            name: name.to_string(),
            version: version.to_string(),
            requires_python: None,
            omit_metadata: false,
            extra_files: Vec::new(),
            requires_dist: Vec::new(),
        }
    }

    /// Add one requirement (`Requires-Dist`), e.g. `"dep-a>=1.0"`.
    pub fn requires(mut self, req: &str) -> Self {
        self.requires_dist.push(req.to_string());
        self
    }

    /// The METADATA text of this wheel.
    pub fn metadata(&self) -> String {
        core_metadata_with_requires(
            &self.name,
            &self.version,
            self.requires_python.as_deref(),
            &self.requires_dist,
        )
    }

    /// Add `size` bytes of pseudo-random (incompressible) data as a member.
    pub fn padding(mut self, size: usize, seed: u64) -> Self {
        let path = format!("{}/padding.bin", module_name(&self.name));
        self.extra_files.push((path, pseudo_random(size, seed)));
        self
    }

    pub fn build(&self) -> Artifact {
        build_wheel(self)
    }
}

/// A valid pure-python wheel `{name}-{version}-py3-none-any.whl`.
pub fn wheel(name: &str, version: &str) -> Artifact {
    WheelSpec::new(name, version).build()
}

/// METADATA (core metadata 2.1) for a test project.
pub fn core_metadata(name: &str, version: &str, requires_python: Option<&str>) -> String {
    core_metadata_with_requires(name, version, requires_python, &[])
}

/// METADATA (core metadata 2.1) for a test project that depends on others:
/// one `Requires-Dist: {req}` line per entry of `requires_dist`.
pub fn core_metadata_with_requires(
    name: &str,
    version: &str,
    requires_python: Option<&str>,
    requires_dist: &[String],
) -> String {
    let mut m = format!(
        "Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: a hoard test package\n"
    );
    if let Some(rp) = requires_python {
        m.push_str(&format!("Requires-Python: {rp}\n"));
    }
    for req in requires_dist {
        m.push_str(&format!("Requires-Dist: {req}\n"));
    }
    m
}

fn record_hash(bytes: &[u8]) -> String {
    let digest = sha2::Sha256::digest(bytes);
    format!(
        "sha256={}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    )
}

/// The members of a wheel, in order, with RECORD last.
pub fn wheel_members(spec: &WheelSpec) -> Vec<(String, Vec<u8>)> {
    let dist = dist_name(&spec.name);
    let module = module_name(&spec.name);
    let info = format!("{dist}-{}.dist-info", spec.version);
    let metadata = spec.metadata();
    let mut files: Vec<(String, Vec<u8>)> = vec![(
        format!("{module}/__init__.py"),
        format!("__version__ = \"{}\"\n", spec.version).into_bytes(),
    )];
    files.extend(spec.extra_files.iter().cloned());
    if !spec.omit_metadata {
        files.push((format!("{info}/METADATA"), metadata.into_bytes()));
    }
    files.push((
        format!("{info}/WHEEL"),
        b"Wheel-Version: 1.0\nGenerator: hoard-testkit\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
            .to_vec(),
    ));
    let mut record = String::new();
    for (path, bytes) in &files {
        record.push_str(&format!("{path},{},{}\n", record_hash(bytes), bytes.len()));
    }
    record.push_str(&format!("{info}/RECORD,,\n"));
    files.push((format!("{info}/RECORD"), record.into_bytes()));
    files
}

/// Zip `members` (deflated, except large members, which are stored: they
/// are incompressible padding, and deflate is slow in debug builds).
pub fn zip_bytes(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut zw = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let deflated =
        SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (path, bytes) in members {
        let opts = if bytes.len() > 64 * 1024 {
            stored
        } else {
            deflated
        };
        zw.start_file(path.as_str(), opts).expect("zip start_file");
        zw.write_all(bytes).expect("zip write");
    }
    zw.finish().expect("zip finish").into_inner()
}

pub fn build_wheel(spec: &WheelSpec) -> Artifact {
    let members = wheel_members(spec);
    let bytes = zip_bytes(&members);
    Artifact {
        name: spec.name.clone(),
        version: spec.version.clone(),
        filename: format!(
            "{}-{}-py3-none-any.whl",
            dist_name(&spec.name),
            spec.version
        ),
        bytes,
        metadata: spec.metadata(),
    }
}

/// An sdist `{name}-{version}.tar.gz` with PKG-INFO and a minimal
/// pyproject.toml.
pub fn sdist(name: &str, version: &str) -> Artifact {
    let dist = dist_name(name);
    let module = module_name(name);
    let root = format!("{dist}-{version}");
    let pkg_info = core_metadata(name, version, None);
    let pyproject = format!(
        "[build-system]\nrequires = [\"setuptools>=61\"]\nbuild-backend = \"setuptools.build_meta\"\n\n\
         [project]\nname = \"{name}\"\nversion = \"{version}\"\n"
    );
    let init = format!("__version__ = \"{version}\"\n");
    let members: Vec<(String, Vec<u8>)> = vec![
        (format!("{root}/PKG-INFO"), pkg_info.clone().into_bytes()),
        (format!("{root}/pyproject.toml"), pyproject.into_bytes()),
        (format!("{root}/{module}/__init__.py"), init.into_bytes()),
    ];
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(1_700_000_000);
    dir.set_cksum();
    tar.append_data(&mut dir, format!("{root}/"), std::io::empty())
        .unwrap();
    for (path, bytes) in &members {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(bytes.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        tar.append_data(&mut h, path, bytes.as_slice()).unwrap();
    }
    let bytes = tar.into_inner().unwrap().finish().unwrap();
    Artifact {
        name: name.to_string(),
        version: version.to_string(),
        filename: format!("{root}.tar.gz"),
        bytes,
        metadata: pkg_info,
    }
}

/// Deterministic pseudo-random bytes (xorshift), incompressible.
pub fn pseudo_random(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(size);
    out
}

/// Which member of a zip-bomb wheel is the bomb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BombMember {
    /// `*.dist-info/METADATA` (which the server must read).
    Metadata,
    /// Another member (`{module}/data.bin`), next to a valid METADATA.
    Other,
}

/// A wheel with one member that inflates to `inflated_bytes` of zeros.
///
/// With `lie_about_size`, the local and central headers of that member claim
/// an uncompressed size of 1000 bytes, so a server that trusts the headers
/// and then reads the member without a bound is caught too.
///
/// The deflate stream is made by Python's zlib (C speed; the Rust deflate of
/// a debug build would take long for hundreds of MiB).
pub fn zip_bomb_wheel(
    name: &str,
    version: &str,
    member: BombMember,
    inflated_bytes: u64,
    lie_about_size: bool,
) -> Artifact {
    let spec = WheelSpec::new(name, version);
    let mut members = wheel_members(&spec);
    let info = format!("{}-{version}.dist-info", dist_name(name));
    let bomb_path = match member {
        BombMember::Metadata => {
            members.retain(|(p, _)| *p != format!("{info}/METADATA"));
            format!("{info}/METADATA")
        }
        BombMember::Other => format!("{}/data.bin", module_name(name)),
    };
    let dir = tempfile::tempdir().unwrap();
    let normal = dir.path().join("normal.json");
    let members_json: Vec<serde_json::Value> = members
        .iter()
        .map(|(p, b)| {
            serde_json::json!({
                "path": p,
                "b64": base64::engine::general_purpose::STANDARD.encode(b),
            })
        })
        .collect();
    std::fs::write(&normal, serde_json::to_vec(&members_json).unwrap()).unwrap();
    let out = dir.path().join("bomb.whl");
    let script = r#"
import base64, json, struct, sys, zipfile, zlib
normal, bomb_path, size, lie, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5]
members = json.load(open(normal))
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
    for m in members:
        zf.writestr(m["path"], base64.b64decode(m["b64"]))
    with zf.open(bomb_path, "w", force_zip64=False) as f:
        chunk = bytes(1 << 20)
        left = size
        while left > 0:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n
if lie:
    data = bytearray(open(out, "rb").read())
    name = bomb_path.encode()
    # local file header: sig, ver, flags, method, time, date, crc, csize, usize, nlen, xlen
    i = 0
    while True:
        i = data.find(b"PK\x03\x04", i)
        if i < 0:
            break
        nlen, = struct.unpack_from("<H", data, i + 26)
        if data[i + 30:i + 30 + nlen] == name:
            struct.pack_into("<I", data, i + 22, 1000)
        i += 4
    # central directory header: usize at +24, nlen at +28, name at +46
    i = 0
    while True:
        i = data.find(b"PK\x01\x02", i)
        if i < 0:
            break
        nlen, = struct.unpack_from("<H", data, i + 28)
        if data[i + 46:i + 46 + nlen] == name:
            struct.pack_into("<I", data, i + 24, 1000)
        i += 4
    open(out, "wb").write(bytes(data))
"#;
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&normal)
        .arg(&bomb_path)
        .arg(inflated_bytes.to_string())
        .arg(if lie_about_size { "1" } else { "0" })
        .arg(&out)
        .status()
        .expect("run python3 to make a zip bomb");
    assert!(status.success(), "making the zip bomb failed");
    let bytes = std::fs::read(&out).unwrap();
    Artifact {
        name: name.to_string(),
        version: version.to_string(),
        filename: format!("{}-{version}-py3-none-any.whl", dist_name(name)),
        bytes,
        metadata: core_metadata(name, version, None),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn wheel_is_a_zip_with_metadata_and_padding() {
        let w = WheelSpec::new("bench-pages", "1.0.3")
            .padding(100_000, 1)
            .build();
        assert_eq!(w.filename, "bench_pages-1.0.3-py3-none-any.whl");
        let mut z = zip::ZipArchive::new(Cursor::new(w.bytes)).unwrap();
        let mut m = String::new();
        z.by_name("bench_pages-1.0.3.dist-info/METADATA")
            .unwrap()
            .read_to_string(&mut m)
            .unwrap();
        assert!(m.contains("Name: bench-pages\nVersion: 1.0.3\n"));
        assert_eq!(m, w.metadata);
        let padding = z.by_name("bench_pages/padding.bin").unwrap();
        assert_eq!(padding.size(), 100_000);
        // Big incompressible members are stored, not deflated.
        assert_eq!(padding.compression(), zip::CompressionMethod::Stored);
    }

    #[test]
    fn requires_dist_lines_are_in_metadata() {
        let w = WheelSpec::new("needs-deps", "2.0")
            .requires("dep-a>=1.0")
            .requires("dep-b")
            .build();
        assert!(w
            .metadata
            .ends_with("Requires-Dist: dep-a>=1.0\nRequires-Dist: dep-b\n"));
        let mut z = zip::ZipArchive::new(Cursor::new(w.bytes)).unwrap();
        let mut m = String::new();
        z.by_name("needs_deps-2.0.dist-info/METADATA")
            .unwrap()
            .read_to_string(&mut m)
            .unwrap();
        assert_eq!(m, w.metadata);
        assert!(!wheel("no-deps", "1.0").metadata.contains("Requires-Dist"));
    }
}
