//! Multipart bodies, twine-like upload forms, and a raw HTTP/1.1 client.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use base64::Engine as _;
use reqwest::blocking::RequestBuilder;

use crate::artifacts::Artifact;

/// How a request authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    /// Basic auth with user `__token__` and the token as password (twine).
    Basic(String),
    /// `Authorization: Bearer <token>`.
    Bearer(String),
}

impl Auth {
    /// The `Authorization` header value, if any.
    pub fn header_value(&self) -> Option<String> {
        match self {
            Auth::None => None,
            Auth::Basic(t) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("__token__:{t}"))
            )),
            Auth::Bearer(t) => Some(format!("Bearer {t}")),
        }
    }

    pub fn apply(&self, req: RequestBuilder) -> RequestBuilder {
        match self.header_value() {
            Some(v) => req.header("authorization", v),
            None => req,
        }
    }
}

/// A multipart/form-data body built by hand, so that tests control every
/// byte (and can cut or corrupt it).
#[derive(Clone, Debug)]
pub struct Multipart {
    boundary: String,
    body: Vec<u8>,
}

impl Default for Multipart {
    fn default() -> Self {
        Multipart::new()
    }
}

impl Multipart {
    pub fn new() -> Multipart {
        Multipart {
            boundary: format!("hoardtestboundary{}", crate::unique("x")),
            body: Vec::new(),
        }
    }

    pub fn boundary(&self) -> &str {
        &self.boundary
    }

    /// `multipart/form-data; boundary=…`
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// A text field.
    pub fn field(mut self, name: &str, value: &str) -> Self {
        self.body.extend_from_slice(
            format!(
                "--{}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n",
                self.boundary
            )
            .as_bytes(),
        );
        self
    }

    /// A file field. `filename` is written as raw bytes between quotes, so
    /// tests can put hostile bytes in it.
    pub fn file(mut self, name: &str, filename: &[u8], content: &[u8]) -> Self {
        self.body.extend_from_slice(
            format!(
                "--{}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"",
                self.boundary
            )
            .as_bytes(),
        );
        self.body.extend_from_slice(filename);
        self.body
            .extend_from_slice(b"\"\r\nContent-Type: application/octet-stream\r\n\r\n");
        self.body.extend_from_slice(content);
        self.body.extend_from_slice(b"\r\n");
        self
    }

    /// The body so far, without the closing boundary.
    pub fn unfinished(&self) -> Vec<u8> {
        self.body.clone()
    }

    /// The complete body, with the closing boundary.
    pub fn finish(&self) -> Vec<u8> {
        let mut body = self.body.clone();
        body.extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        body
    }
}

/// The fields of a twine (legacy API) upload. Every field can be changed
/// to make a bad upload.
#[derive(Clone, Debug)]
pub struct Upload {
    pub name: String,
    pub version: String,
    pub filetype: String,
    pub pyversion: String,
    pub metadata_version: String,
    /// The filename, sent as is (tests put `/`, `\`, `..` or NUL in it).
    pub filename: String,
    pub content: Vec<u8>,
    pub sha256_digest: Option<String>,
    pub md5_digest: Option<String>,
    /// Send the `:action=file_upload` field.
    pub action: bool,
}

impl Upload {
    /// The upload that twine would make for this artifact (with both digests).
    pub fn of(a: &Artifact) -> Upload {
        let (filetype, pyversion) = if a.filename.ends_with(".whl") {
            ("bdist_wheel", "py3")
        } else {
            ("sdist", "source")
        };
        Upload {
            name: a.name.clone(),
            version: a.version.clone(),
            filetype: filetype.to_string(),
            pyversion: pyversion.to_string(),
            metadata_version: "2.1".to_string(),
            filename: a.filename.clone(),
            content: a.bytes.clone(),
            sha256_digest: Some(crate::sha256_hex(&a.bytes)),
            md5_digest: Some(crate::md5_hex(&a.bytes)),
            action: true,
        }
    }

    /// The multipart body, in twine's field order (`content` last).
    pub fn multipart(&self) -> Multipart {
        let mut mp = Multipart::new();
        if self.action {
            mp = mp
                .field(":action", "file_upload")
                .field("protocol_version", "1");
        }
        mp = mp
            .field("metadata_version", &self.metadata_version)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("filetype", &self.filetype)
            .field("pyversion", &self.pyversion);
        if let Some(d) = &self.sha256_digest {
            mp = mp.field("sha256_digest", d);
        }
        if let Some(d) = &self.md5_digest {
            mp = mp.field("md5_digest", d);
        }
        mp.file("content", self.filename.as_bytes(), &self.content)
    }
}

/// A response read off a raw socket.
#[derive(Clone, Debug)]
pub struct RawResponse {
    pub status: u16,
    /// The reason phrase of the status line.
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl std::fmt::Display for RawResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?} body={:?}",
            self.status,
            self.reason,
            self.text()
        )
    }
}

/// Send `head` then `body` on a fresh connection and read one response.
///
/// The body is written from another thread, and write errors are ignored,
/// so that a server that answers early (413) and closes is still heard.
pub fn raw_request(addr: SocketAddr, head: &[u8], body: &[u8]) -> Result<RawResponse> {
    let mut stream = TcpStream::connect(addr).context("connect")?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    stream.write_all(head).context("write head")?;
    let mut writer = stream.try_clone()?;
    let body = body.to_vec();
    let writer_thread = std::thread::spawn(move || {
        for chunk in body.chunks(64 * 1024) {
            if writer.write_all(chunk).is_err() {
                return;
            }
        }
        let _ = writer.flush();
    });
    let resp = read_response(&mut stream);
    let _ = stream.shutdown(Shutdown::Both);
    let _ = writer_thread.join();
    resp
}

/// Read one HTTP/1.1 response (Content-Length, chunked, or until EOF).
pub fn read_response(stream: &mut impl Read) -> Result<RawResponse> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos;
        }
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) => bail!("reading the response head: {e} (got {:?})", lossy(&buf)),
        };
        if n == 0 {
            bail!(
                "connection closed before a response head (got {:?})",
                lossy(&buf)
            );
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut rest = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let _version = parts.next();
    let status: u16 = parts
        .next()
        .unwrap_or_default()
        .parse()
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let reason = parts.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    // Read the rest; a reset after the response was sent is not an error.
    let mut read_more = |rest: &mut Vec<u8>, want: Option<usize>| loop {
        if want.is_some_and(|w| rest.len() >= w) {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => rest.extend_from_slice(&chunk[..n]),
        }
    };
    let body = if status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if get("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
    {
        read_more(&mut rest, None);
        dechunk(&rest)?
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().context("bad Content-Length")?;
        read_more(&mut rest, Some(len));
        rest.truncate(len);
        rest
    } else {
        read_more(&mut rest, None);
        rest
    };
    Ok(RawResponse {
        status,
        reason,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = find(data, b"\r\n") else {
            return Ok(out);
        };
        let size_str = String::from_utf8_lossy(&data[..eol]);
        let size_str = size_str.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_str, 16)
            .with_context(|| format!("bad chunk size {size_str:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let take = size.min(data.len());
        out.extend_from_slice(&data[..take]);
        data = &data[take..];
        if data.starts_with(b"\r\n") {
            data = &data[2..];
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
