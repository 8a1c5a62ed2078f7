//! An `npm publish` body, split as it streams in. npm sends one JSON
//! document whose `_attachments.<file>.data` is the tarball in base64, a
//! third larger than the tarball itself. [`PublishSplitter`] runs that one
//! string through a streaming base64 decoder, handing the decoded bytes to
//! the caller (who writes them to a temp blob) and hashing them on the
//! way, and keeps the rest of the document, which is small, for
//! [`parse_split_publish`] to parse and check in full. So a publish costs
//! memory for its metadata, never for its tarball.
//!
//! The splitter follows only as much JSON as it needs: strings, nesting,
//! and the keys on the path to the attachment (decoded exactly as serde
//! decodes them). A `data` string it does not stream (not a string, or not
//! on that path) stays in the kept document and is decoded from there, so
//! the outcome is that of [`crate::parse_publish`] on the whole body. Two
//! differences, both refusals: duplicate `_attachments` or `data` keys,
//! which a JSON parser would silently resolve to the last one, and JSON
//! escapes inside the base64 text other than `\/`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::publish::parse_put_document;
use crate::tarball::{TarballHasher, TarballHashes};
use crate::{NpmError, PackageName, PutDocument};

/// The longest key the splitter decodes; a longer one is on no path it
/// follows (an attachment's key is a file name, at most a few hundred
/// bytes).
const MAX_KEY_BYTES: usize = 1024;

/// Splits a publish document as it streams in; see the module docs.
pub struct PublishSplitter {
    kept: Vec<u8>,
    limit: usize,
    frames: Vec<Frame>,
    string: Option<InString>,
    /// How many keys `_attachments` has had so far.
    attachment_keys: usize,
    root_attachments: bool,
    streamed: Option<Streaming>,
    done: Option<StreamedAttachment>,
}

enum Frame {
    Object {
        expecting_key: bool,
        /// The key whose value is being read, decoded; `None` when it
        /// was too long to be on a followed path.
        key: Option<String>,
        /// This object is an attachment and has had a `data` key.
        has_data: bool,
    },
    Array,
}

struct InString {
    escaped: bool,
    kind: StringKind,
}

enum StringKind {
    /// A key: its raw bytes (escapes included), while short enough.
    Key(Option<Vec<u8>>),
    /// A value kept in the document.
    Kept,
    /// The attachment's data, decoded rather than kept.
    Data,
}

struct Streaming {
    key: String,
    decoder: Base64Stream,
    hasher: TarballHasher,
    head: Vec<u8>,
}

/// The attachment's `data`, decoded as it streamed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamedAttachment {
    /// The attachment's key in `_attachments`.
    pub key: String,
    /// The decoded tarball's hashes and length.
    pub hashes: TarballHashes,
    /// Its first bytes (at most two: the gzip magic).
    pub head: Vec<u8>,
}

/// A publish body after [`PublishSplitter::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPublish {
    /// The document with the streamed `data` replaced by `""`.
    pub document: Vec<u8>,
    /// The attachment data that was streamed out, if any was.
    pub attachment: Option<StreamedAttachment>,
}

impl PublishSplitter {
    /// A splitter that keeps at most `limit` bytes of the document
    /// (everything but the streamed attachment data).
    pub fn new(limit: usize) -> PublishSplitter {
        PublishSplitter {
            kept: Vec::new(),
            limit,
            frames: Vec::new(),
            string: None,
            attachment_keys: 0,
            root_attachments: false,
            streamed: None,
            done: None,
        }
    }

    /// Reads the next bytes of the body. Decoded attachment bytes are
    /// appended to `decoded`, for the caller to store.
    pub fn feed(&mut self, chunk: &[u8], decoded: &mut Vec<u8>) -> Result<(), NpmError> {
        let mut i = 0;
        while i < chunk.len() {
            if matches!(
                self.string,
                Some(InString {
                    kind: StringKind::Data,
                    ..
                })
            ) {
                i = self.feed_data(chunk, i, decoded)?;
                continue;
            }
            let byte = chunk[i];
            i += 1;
            self.keep(byte)?;
            match self.string.take() {
                Some(s) => self.in_string(s, byte)?,
                None => self.structure(byte)?,
            }
        }
        Ok(())
    }

    /// The split document. A body that ended inside the attachment data
    /// is kept without it; parsing then reports the truncated JSON.
    pub fn finish(self) -> SplitPublish {
        SplitPublish {
            document: self.kept,
            attachment: self.done,
        }
    }

    fn keep(&mut self, byte: u8) -> Result<(), NpmError> {
        if self.kept.len() >= self.limit {
            return Err(NpmError::DocumentTooLarge { limit: self.limit });
        }
        self.kept.push(byte);
        Ok(())
    }

    /// Streams attachment data from `chunk[from..]` up to its closing
    /// quote (or the end of the chunk); returns where it stopped.
    fn feed_data(
        &mut self,
        chunk: &[u8],
        from: usize,
        decoded: &mut Vec<u8>,
    ) -> Result<usize, NpmError> {
        let Some(streaming) = self.streamed.as_mut() else {
            return Err(NpmError::InvalidDocument(
                "attachment data without an attachment".into(),
            ));
        };
        let escaped = self.string.as_ref().is_some_and(|s| s.escaped);
        let start = decoded.len();
        let mut i = from;
        let result = if escaped {
            // Base64 needs no escapes; JSON allows writing `/` as `\/`.
            i += 1;
            match chunk[from] {
                b'/' => streaming.decoder.push(b"/", decoded),
                other => Err(format!(
                    "the escape \\{} in its data is not base64",
                    other.escape_ascii()
                )),
            }
        } else {
            let end = chunk[from..]
                .iter()
                .position(|&b| b == b'"' || b == b'\\')
                .map_or(chunk.len(), |p| from + p);
            i = end;
            streaming.decoder.push(&chunk[from..end], decoded)
        };
        result.map_err(|reason| NpmError::BadBase64 {
            attachment: streaming.key.clone(),
            reason,
        })?;
        let new = &decoded[start..];
        streaming.hasher.update(new);
        let want = 2usize.saturating_sub(streaming.head.len()).min(new.len());
        streaming.head.extend_from_slice(&new[..want]);
        if let Some(s) = self.string.as_mut() {
            s.escaped = false;
        }
        match chunk.get(i) {
            Some(b'\\') => {
                if let Some(s) = self.string.as_mut() {
                    s.escaped = true;
                }
                Ok(i + 1)
            }
            Some(b'"') => {
                self.end_data()?;
                self.keep(b'"')?;
                self.string = None;
                Ok(i + 1)
            }
            _ => Ok(i),
        }
    }

    fn end_data(&mut self) -> Result<(), NpmError> {
        let Some(streaming) = self.streamed.take() else {
            return Ok(());
        };
        streaming
            .decoder
            .finish()
            .map_err(|reason| NpmError::BadBase64 {
                attachment: streaming.key.clone(),
                reason,
            })?;
        self.done = Some(StreamedAttachment {
            key: streaming.key,
            hashes: streaming.hasher.finish(),
            head: streaming.head,
        });
        Ok(())
    }

    fn in_string(&mut self, mut s: InString, byte: u8) -> Result<(), NpmError> {
        let closing = !s.escaped && byte == b'"';
        s.escaped = !s.escaped && byte == b'\\';
        if !closing {
            if let StringKind::Key(raw) = &mut s.kind {
                if let Some(bytes) = raw {
                    bytes.push(byte);
                    if bytes.len() > MAX_KEY_BYTES {
                        *raw = None;
                    }
                }
            }
            self.string = Some(s);
            return Ok(());
        }
        if let StringKind::Key(raw) = s.kind {
            let key = raw.and_then(|raw| {
                let mut quoted = Vec::with_capacity(raw.len() + 2);
                quoted.push(b'"');
                quoted.extend_from_slice(&raw);
                quoted.push(b'"');
                serde_json::from_slice::<String>(&quoted).ok()
            });
            self.key_read(key)?;
        }
        Ok(())
    }

    /// Checks a completed key for the duplicates that would make the
    /// streamed data differ from what a JSON parser reads, and records it.
    fn key_read(&mut self, key: Option<String>) -> Result<(), NpmError> {
        let depth = self.frames.len();
        let in_attachments = depth == 2 && self.frame_key(0) == Some("_attachments");
        if depth == 1 && key.as_deref() == Some("_attachments") {
            if self.root_attachments {
                return Err(NpmError::InvalidDocument(
                    "the document has '_attachments' twice".into(),
                ));
            }
            self.root_attachments = true;
        }
        if in_attachments {
            self.attachment_keys += 1;
            if self.attachment_keys > 1 {
                return Err(NpmError::AttachmentCount(self.attachment_keys));
            }
        }
        let on_data_path = depth == 3
            && self.frame_key(0) == Some("_attachments")
            && key.as_deref() == Some("data");
        if let Some(Frame::Object {
            key: slot,
            has_data,
            ..
        }) = self.frames.last_mut()
        {
            if on_data_path {
                if *has_data {
                    return Err(NpmError::InvalidDocument(
                        "an attachment has 'data' twice".into(),
                    ));
                }
                *has_data = true;
            }
            *slot = key;
        }
        Ok(())
    }

    fn frame_key(&self, depth: usize) -> Option<&str> {
        match self.frames.get(depth) {
            Some(Frame::Object { key, .. }) => key.as_deref(),
            _ => None,
        }
    }

    fn structure(&mut self, byte: u8) -> Result<(), NpmError> {
        match byte {
            b'"' => {
                let kind = match self.frames.last() {
                    Some(Frame::Object {
                        expecting_key: true,
                        ..
                    }) => StringKind::Key(Some(Vec::new())),
                    _ if self.at_attachment_data() => {
                        let key = self.frame_key(1).unwrap_or_default().to_owned();
                        self.streamed = Some(Streaming {
                            key,
                            decoder: Base64Stream::default(),
                            hasher: TarballHasher::default(),
                            head: Vec::new(),
                        });
                        StringKind::Data
                    }
                    _ => StringKind::Kept,
                };
                self.string = Some(InString {
                    escaped: false,
                    kind,
                });
            }
            b'{' => self.frames.push(Frame::Object {
                expecting_key: true,
                key: None,
                has_data: false,
            }),
            b'[' => self.frames.push(Frame::Array),
            b'}' | b']' => {
                self.frames.pop();
            }
            b':' | b',' => {
                if let Some(Frame::Object { expecting_key, .. }) = self.frames.last_mut() {
                    *expecting_key = byte == b',';
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether a string starting now is `_attachments.<key>.data`.
    fn at_attachment_data(&self) -> bool {
        self.frames.len() == 3
            && self.frame_key(0) == Some("_attachments")
            && matches!(self.frames[1], Frame::Object { key: Some(_), .. })
            && self.frame_key(2) == Some("data")
            && self.done.is_none()
    }
}

/// Strict, padded, standard base64, decoded as it arrives in pieces of
/// any size: the same alphabet and rules as decoding it whole.
#[derive(Default)]
struct Base64Stream {
    carry: Vec<u8>,
    padded: bool,
    /// Characters decoded so far, for error offsets.
    offset: usize,
}

impl Base64Stream {
    fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        if input.is_empty() {
            return Ok(());
        }
        if self.padded {
            return Err(format!(
                "data continues after the padding, at offset {}",
                self.offset
            ));
        }
        if !self.carry.is_empty() {
            let take = (4 - self.carry.len()).min(input.len());
            self.carry.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.carry.len() < 4 {
                return Ok(());
            }
            let quad = std::mem::take(&mut self.carry);
            self.decode(&quad, out)?;
            if self.padded && !input.is_empty() {
                return Err(format!(
                    "data continues after the padding, at offset {}",
                    self.offset
                ));
            }
        }
        let whole = input.len() / 4 * 4;
        self.decode(&input[..whole], out)?;
        let rest = &input[whole..];
        if !rest.is_empty() {
            if self.padded {
                return Err(format!(
                    "data continues after the padding, at offset {}",
                    self.offset
                ));
            }
            self.carry.extend_from_slice(rest);
        }
        Ok(())
    }

    fn decode(&mut self, quads: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        if quads.is_empty() {
            return Ok(());
        }
        let at = self.offset;
        B64.decode_vec(quads, out).map_err(|e| match e {
            base64::DecodeError::InvalidByte(o, b)
            | base64::DecodeError::InvalidLastSymbol(o, b) => {
                format!("invalid character {:?} at offset {}", b as char, at + o)
            }
            other => other.to_string(),
        })?;
        self.offset += quads.len();
        self.padded = quads.last() == Some(&b'=');
        Ok(())
    }

    fn finish(&self) -> Result<(), String> {
        if self.carry.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "its length, {} characters, is not a multiple of 4",
                self.offset + self.carry.len()
            ))
        }
    }
}

/// Parses and checks a split publish body against the package in the URL:
/// what [`crate::parse_publish`] does with the whole body, except that a
/// streamed tarball is checked by its hashes and left to the caller.
pub fn parse_split_publish(
    split: &SplitPublish,
    url_name: &PackageName,
) -> Result<PutDocument, NpmError> {
    parse_put_document(&split.document, url_name, split.attachment.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TarballDigests;
    use serde_json::json;

    const TGZ: &[u8] = &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6, 7];

    fn doc(bytes: &[u8]) -> serde_json::Value {
        let d = TarballDigests::compute(bytes);
        json!({
            "_id": "a", "name": "a", "dist-tags": {"latest": "1.0.0"},
            "versions": {"1.0.0": {"name": "a", "version": "1.0.0",
                "dist": {"integrity": d.integrity, "shasum": d.shasum}}},
            "_attachments": {"a-1.0.0.tgz": {
                "content_type": "application/octet-stream",
                "data": B64.encode(bytes), "length": bytes.len()}},
        })
    }

    /// Feeds `body` in pieces of `piece` bytes.
    fn split(body: &[u8], piece: usize) -> Result<(SplitPublish, Vec<u8>), NpmError> {
        let mut splitter = PublishSplitter::new(1 << 20);
        let mut decoded = Vec::new();
        for chunk in body.chunks(piece) {
            splitter.feed(chunk, &mut decoded)?;
        }
        Ok((splitter.finish(), decoded))
    }

    fn pkg() -> PackageName {
        PackageName::parse("a").unwrap()
    }

    #[test]
    fn streams_the_data_out_in_any_pieces() {
        let body = doc(TGZ).to_string();
        for piece in [1, 2, 3, 5, 7, 64, body.len()] {
            let (s, decoded) = split(body.as_bytes(), piece).unwrap();
            assert_eq!(decoded, TGZ, "piece {piece}");
            let a = s.attachment.clone().unwrap();
            assert_eq!(a.key, "a-1.0.0.tgz");
            assert_eq!(a.hashes, TarballHashes::of(TGZ));
            assert_eq!(a.head, &TGZ[..2]);
            let text = String::from_utf8(s.document.clone()).unwrap();
            assert!(text.contains(r#""data":"""#), "{text}");
            let PutDocument::Publish(p) = parse_split_publish(&s, &pkg()).unwrap() else {
                panic!("a publish")
            };
            assert_eq!(p.tarball, None, "streamed, not held");
            assert_eq!(p.digests, TarballDigests::compute(TGZ));
        }
    }

    #[test]
    fn keeps_what_it_does_not_stream() {
        // Data that is not a string stays in the document, and is refused
        // there.
        let mut d = doc(TGZ);
        d["_attachments"]["a-1.0.0.tgz"]["data"] = json!([1, 2]);
        let (s, decoded) = split(d.to_string().as_bytes(), 3).unwrap();
        assert!(decoded.is_empty());
        assert!(matches!(
            parse_split_publish(&s, &pkg()),
            Err(NpmError::InvalidDocument(_))
        ));
        // A deprecation has no data at all.
        let dep = json!({"_id": "a", "name": "a", "versions": {"1.0.0": {"deprecated": "x"}}});
        let (s, decoded) = split(dep.to_string().as_bytes(), 4).unwrap();
        assert!(decoded.is_empty());
        assert_eq!(s.attachment, None);
        assert_eq!(s.document, dep.to_string().as_bytes());
        assert!(matches!(
            parse_split_publish(&s, &pkg()),
            Ok(PutDocument::Deprecate(_))
        ));
    }

    #[test]
    fn escaped_keys_are_decoded_as_serde_does() {
        let body = doc(TGZ).to_string().replace(r#""data""#, r#""d\u0061ta""#);
        let (s, decoded) = split(body.as_bytes(), 3).unwrap();
        assert_eq!(decoded, TGZ);
        assert!(parse_split_publish(&s, &pkg()).is_ok());
    }

    #[test]
    fn refuses_bad_base64_like_the_whole_document_parser() {
        for data in [
            "not base64!",
            "H4sI AAAA",
            "H4sIAAAAAAA",
            "H4sIAA==AA",
            "H4sIAA",
        ] {
            let mut d = doc(TGZ);
            d["_attachments"]["a-1.0.0.tgz"]["data"] = json!(data);
            for piece in [1, 3, 1000] {
                let outcome = split(d.to_string().as_bytes(), piece)
                    .and_then(|(s, _)| parse_split_publish(&s, &pkg()));
                assert!(
                    matches!(outcome, Err(NpmError::BadBase64 { .. })),
                    "{data} in pieces of {piece}: {outcome:?}"
                );
            }
        }
        // `\/` is `/`; other escapes are not base64.
        let body = doc(b"\x1f\x8b\xff\xff").to_string();
        assert!(body.contains('/'), "{body}");
        let escaped = body.replace('/', "\\/");
        let (s, decoded) = split(escaped.as_bytes(), 2).unwrap();
        assert_eq!(decoded, b"\x1f\x8b\xff\xff");
        assert!(parse_split_publish(&s, &pkg()).is_ok());
        let mut d = doc(TGZ);
        d["_attachments"]["a-1.0.0.tgz"]["data"] = json!("H4sI\nAAAA");
        assert!(matches!(
            split(d.to_string().as_bytes(), 5),
            Err(NpmError::BadBase64 { .. })
        ));
    }

    #[test]
    fn refuses_duplicates_a_json_parser_would_hide() {
        let body = doc(TGZ).to_string();
        let data = format!(r#""data":"{}""#, B64.encode(TGZ));
        let twice = body.replace(&data, &format!("{data},{data}"));
        assert!(matches!(
            split(twice.as_bytes(), 7),
            Err(NpmError::InvalidDocument(_))
        ));
        let att = body.split_once(r#""_attachments":"#).unwrap().1;
        let att = &att[..att.len() - 1];
        let doubled = format!(r#"{},"_attachments":{att}}}"#, &body[..body.len() - 1]);
        assert!(matches!(
            split(doubled.as_bytes(), 7),
            Err(NpmError::InvalidDocument(_))
        ));
        let mut d = doc(TGZ);
        let a = d["_attachments"]["a-1.0.0.tgz"].clone();
        d["_attachments"]["a-1.0.1.tgz"] = a;
        assert_eq!(
            split(d.to_string().as_bytes(), 7).unwrap_err(),
            NpmError::AttachmentCount(2)
        );
    }

    #[test]
    fn bounds_what_it_keeps() {
        let mut d = doc(TGZ);
        d["readme"] = json!("x".repeat(4096));
        let mut splitter = PublishSplitter::new(1024);
        let mut decoded = Vec::new();
        assert_eq!(
            splitter.feed(d.to_string().as_bytes(), &mut decoded),
            Err(NpmError::DocumentTooLarge { limit: 1024 })
        );
        // The data does not count against the limit.
        let big = [&TGZ[..2], &[7u8; 100_000][..]].concat();
        let body = doc(&big).to_string();
        let mut splitter = PublishSplitter::new(4096);
        let mut decoded = Vec::new();
        splitter.feed(body.as_bytes(), &mut decoded).unwrap();
        assert_eq!(decoded, big);
        assert!(parse_split_publish(&splitter.finish(), &pkg()).is_ok());
    }

    #[test]
    fn a_truncated_body_is_malformed() {
        let body = doc(TGZ).to_string();
        let cut = body.find("H4sI").unwrap() + 6;
        let (s, _) = split(&body.as_bytes()[..cut], 4).unwrap();
        assert_eq!(s.attachment, None);
        assert!(matches!(
            parse_split_publish(&s, &pkg()),
            Err(NpmError::MalformedJson(_))
        ));
    }
}
