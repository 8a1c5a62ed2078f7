//! Wheels built in memory: real zips with `*.dist-info/METADATA`, `WHEEL`
//! and `RECORD`, which hoard accepts at upload.

use std::io::{Cursor, Write as _};

use sha2::Digest as _;
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

/// A wheel file in memory.
pub struct Wheel {
    /// Project name as uploaded (already normalized: `[a-z0-9-]`).
    pub name: String,
    pub version: String,
    pub filename: String,
    pub bytes: Vec<u8>,
}

impl Wheel {
    pub fn sha256(&self) -> String {
        hex::encode(sha2::Sha256::digest(&self.bytes))
    }
}

fn b64_urlsafe_nopad(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Build `{dist}-{version}-py3-none-any.whl` for project `name` (which must
/// be PEP 503 normalized), with `payload` (if any) as an extra member.
/// `stored` picks the zip method of the payload member (stored: no
/// compression work at build or upload time, which fits incompressible bytes).
pub fn build(name: &str, version: &str, payload: Option<&[u8]>, stored: bool) -> Wheel {
    let dist = name.replace('-', "_");
    let info = format!("{dist}-{version}.dist-info");
    let metadata = format!(
        "Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: a hoard benchmark package\n"
    );
    let mut members: Vec<(String, &[u8], bool)> = Vec::new();
    let init = format!("__version__ = \"{version}\"\n");
    members.push((format!("{dist}/__init__.py"), init.as_bytes(), false));
    if let Some(p) = payload {
        members.push((format!("{dist}/payload.bin"), p, stored));
    }
    members.push((format!("{info}/METADATA"), metadata.as_bytes(), false));
    let wheel_txt: &[u8] =
        b"Wheel-Version: 1.0\nGenerator: hoard-bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n";
    members.push((format!("{info}/WHEEL"), wheel_txt, false));
    let mut record = String::new();
    for (path, bytes, _) in &members {
        let digest = sha2::Sha256::digest(bytes);
        record.push_str(&format!(
            "{path},sha256={},{}\n",
            b64_urlsafe_nopad(&digest),
            bytes.len()
        ));
    }
    record.push_str(&format!("{info}/RECORD,,\n"));

    let mut zw = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let deflated = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    let stored_opts = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .large_file(false);
    for (path, bytes, stored) in &members {
        let opts = if *stored { stored_opts } else { deflated };
        zw.start_file(path.as_str(), opts).expect("zip start_file");
        zw.write_all(bytes).expect("zip write");
    }
    zw.start_file(format!("{info}/RECORD"), deflated)
        .expect("zip start_file");
    zw.write_all(record.as_bytes()).expect("zip write");
    let bytes = zw.finish().expect("zip finish").into_inner();
    Wheel {
        name: name.to_string(),
        version: version.to_string(),
        filename: format!("{dist}-{version}-py3-none-any.whl"),
        bytes,
    }
}

/// Deterministic incompressible bytes (xorshift64).
pub fn random_bytes(size: usize, seed: u64) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(b64_urlsafe_nopad(b""), "");
        assert_eq!(b64_urlsafe_nopad(b"f"), "Zg");
        assert_eq!(b64_urlsafe_nopad(b"fo"), "Zm8");
        assert_eq!(b64_urlsafe_nopad(b"foo"), "Zm9v");
        assert_eq!(b64_urlsafe_nopad(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn wheel_is_a_zip_with_metadata() {
        let w = build("bench-pages", "1.0.3", Some(&random_bytes(1000, 1)), true);
        assert_eq!(w.filename, "bench_pages-1.0.3-py3-none-any.whl");
        let mut z = zip::ZipArchive::new(Cursor::new(w.bytes)).unwrap();
        let mut m = String::new();
        std::io::Read::read_to_string(
            &mut z.by_name("bench_pages-1.0.3.dist-info/METADATA").unwrap(),
            &mut m,
        )
        .unwrap();
        assert!(m.contains("Name: bench-pages\nVersion: 1.0.3\n"));
    }
}
