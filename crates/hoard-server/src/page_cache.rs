//! Rendered index pages, kept while the state they show is current.
//! A page is a pure function of the index at a serial, so a key with the
//! serial never goes stale; old serials simply stop being asked for.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use crate::http::{with_body, ResBody};

/// Pages kept at most, and their bytes (both variants) at most; past
/// either the cache starts over, which is cheap next to rendering and
/// keeps memory bounded.
const MAX_PAGES: usize = 4096;
const MAX_BYTES: usize = 128 << 20;

/// Pages smaller than this are sent as they are: gzip would save a few
/// bytes and cost a header.
const MIN_GZIP: usize = 512;

/// A rendered page, and its gzip, made once, by the first request that
/// takes gzip, so that later ones cost no compression (and a page that
/// nobody asks gzipped costs none at all).
pub struct CachedPage {
    pub body: Bytes,
    /// A strong validator of the identity variant: a digest of the body.
    pub etag: String,
    /// The gzip variant and its ETag; `None` inside when it is not worth
    /// sending.
    gzip: OnceLock<Option<(Bytes, String)>>,
}

impl CachedPage {
    fn new(body: String) -> Self {
        let digest = hoard_core::Sha256::of(body.as_bytes()).to_hex();
        CachedPage {
            etag: format!("\"{}\"", &digest[..32]),
            body: Bytes::from(body),
            gzip: OnceLock::new(),
        }
    }

    fn gzip(&self) -> Option<&(Bytes, String)> {
        self.gzip
            .get_or_init(|| {
                let body = &self.body;
                (body.len() >= MIN_GZIP)
                    .then(|| gzip(body))
                    .filter(|gz| gz.len() < body.len() / 10 * 9)
                    .map(|gz| (Bytes::from(gz), self.gzip_etag()))
            })
            .as_ref()
    }

    /// The gzip variant's ETag: the identity one's, marked.
    fn gzip_etag(&self) -> String {
        format!("{}-gzip\"", self.etag.trim_end_matches('"'))
    }

    /// Whether `tag` (from `If-None-Match`) names this page, gzipped or not.
    fn is_named_by(&self, tag: &str) -> bool {
        tag == "*" || tag == self.etag || tag.strip_suffix("-gzip\"") == self.etag.strip_suffix('"')
    }

    /// The bytes it holds, as the cache counts them: the body, and room
    /// for a gzip variant made later (at most 90% of it).
    fn size(&self) -> usize {
        self.body.len() * 2
    }

    /// The page as an answer to a request with `headers`: gzip if the
    /// client takes it, and 304 when `If-None-Match` names the page in
    /// either variant (they are the same content). Sets the content type,
    /// the `ETag` and `Vary`; the caller adds caching headers.
    pub fn respond(&self, headers: &HeaderMap, content_type: &'static str) -> Response<ResBody> {
        let gzip = accepts_gzip(headers).then(|| self.gzip()).flatten();
        let (body, etag, gzipped) = match gzip {
            Some((gz, etag)) => (gz, etag, true),
            None => (&self.body, &self.etag, false),
        };
        let not_modified = headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|c| c.trim().trim_start_matches("W/"))
            .any(|c| self.is_named_by(c));
        let mut response = if not_modified {
            let mut r = Response::new(crate::http::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            r
        } else {
            with_body(StatusCode::OK, content_type, body.clone())
        };
        let h = response.headers_mut();
        h.insert(
            header::VARY,
            HeaderValue::from_static("Accept, Accept-Encoding"),
        );
        if gzipped {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        if let Ok(v) = HeaderValue::from_str(etag) {
            h.insert(header::ETAG, v);
        }
        response
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 4), Compression::default());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

/// Whether `Accept-Encoding` takes gzip (RFC 9110 12.5.3): named, or
/// covered by `*`, with a q-value above 0.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut star = false;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match coding.as_str() {
                "gzip" | "x-gzip" => return q > 0.0,
                "*" => star = q > 0.0,
                _ => {}
            }
        }
    }
    star
}

#[derive(Default)]
pub struct PageCache {
    pages: Mutex<Pages>,
    /// Pages served from the cache, and pages rendered, for `/+metrics`.
    pub hits: AtomicU64,
    pub renders: AtomicU64,
}

#[derive(Default)]
struct Pages {
    by_key: HashMap<String, Arc<CachedPage>>,
    bytes: usize,
}

impl PageCache {
    /// The page for `key`, rendering it with `render` on a miss. A key
    /// names what the page shows (see `Index::page_stamp`), so a hit is
    /// never stale.
    pub fn get_or_render<E>(
        &self,
        key: String,
        render: impl FnOnce() -> Result<String, E>,
    ) -> Result<Arc<CachedPage>, E> {
        if let Some(page) = self.get(&key) {
            return Ok(page);
        }
        Ok(self.insert(key, render()?))
    }

    /// The page for `key`, if cached (a hit).
    pub fn get(&self, key: &str) -> Option<Arc<CachedPage>> {
        let page = self.lock().by_key.get(key).cloned();
        if page.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        page
    }

    /// Keeps a page rendered for `key` after a miss (a render).
    pub fn insert(&self, key: String, body: String) -> Arc<CachedPage> {
        self.renders.fetch_add(1, Ordering::Relaxed);
        let page = Arc::new(CachedPage::new(body));
        let mut pages = self.lock();
        if pages.by_key.len() >= MAX_PAGES || pages.bytes + page.size() > MAX_BYTES {
            pages.by_key.clear();
            pages.bytes = 0;
        }
        pages.bytes += page.size();
        if let Some(old) = pages.by_key.insert(key, page.clone()) {
            pages.bytes -= old.size();
        }
        page
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pages> {
        self.pages.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::Read;

    #[test]
    fn renders_once_per_key() {
        let cache = PageCache::default();
        let mut calls = 0;
        for _ in 0..3 {
            let page = cache
                .get_or_render("k".into(), || {
                    calls += 1;
                    Ok::<_, ()>("body".to_owned())
                })
                .unwrap();
            assert_eq!(page.body, "body");
        }
        assert_eq!(calls, 1);
        let other = cache
            .get_or_render("k2".into(), || Ok::<_, ()>("other".to_owned()))
            .unwrap();
        assert_ne!(
            other.etag,
            cache.get_or_render("k".into(), || Err(())).unwrap().etag
        );
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), HeaderValue::from_str(v).unwrap()))
            .collect()
    }

    #[test]
    fn gzip_is_taken_when_named_or_covered_by_a_star_with_a_q_above_0() {
        let ae = header::ACCEPT_ENCODING;
        for yes in [
            "gzip",
            "gzip, deflate",
            "br;q=1.0, GZIP;q=0.5",
            "*",
            "x-gzip",
            "deflate, *;q=0.1",
        ] {
            assert!(accepts_gzip(&headers(&[(ae.clone(), yes)])), "{yes}");
        }
        for no in [
            "",
            "identity",
            "br",
            "gzip;q=0",
            "*;q=0",
            "gzip;q=0, *",
            "deflate",
        ] {
            assert!(!accepts_gzip(&headers(&[(ae.clone(), no)])), "{no}");
        }
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    async fn body_of(response: Response<ResBody>) -> Bytes {
        response.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_page_is_served_gzipped_to_those_who_take_it_and_each_variant_revalidates() {
        let cache = PageCache::default();
        let text = "<a href=\"x\">x</a>\n".repeat(200);
        let page = cache
            .get_or_render("p".into(), || Ok::<_, ()>(text.clone()))
            .unwrap();

        let plain = page.respond(&HeaderMap::new(), "text/html");
        assert_eq!(plain.status(), StatusCode::OK);
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(plain.headers()[header::VARY], "Accept, Accept-Encoding");
        let plain_etag = plain.headers()[header::ETAG].clone();
        assert_eq!(body_of(plain).await, text.as_bytes());

        let gz = page.respond(
            &headers(&[(header::ACCEPT_ENCODING, "gzip, deflate")]),
            "text/html",
        );
        assert_eq!(gz.headers()[header::CONTENT_ENCODING], "gzip");
        let gz_etag = gz.headers()[header::ETAG].clone();
        assert_ne!(gz_etag, plain_etag);
        let compressed = body_of(gz).await;
        assert!(
            compressed.len() < text.len() / 5,
            "{} bytes",
            compressed.len()
        );
        let mut unzipped = String::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_string(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, text);

        for etag in [&plain_etag, &gz_etag] {
            let again = page.respond(
                &headers(&[
                    (header::ACCEPT_ENCODING, "gzip"),
                    (header::IF_NONE_MATCH, etag.to_str().unwrap()),
                ]),
                "text/html",
            );
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
            assert!(body_of(again).await.is_empty());
        }
        let other = page.respond(
            &headers(&[(header::IF_NONE_MATCH, "\"0123\"")]),
            "text/html",
        );
        assert_eq!(other.status(), StatusCode::OK);
    }

    #[test]
    fn a_small_page_has_no_gzip_variant() {
        let cache = PageCache::default();
        let page = cache
            .get_or_render("s".into(), || Ok::<_, ()>("tiny".to_owned()))
            .unwrap();
        let r = page.respond(&headers(&[(header::ACCEPT_ENCODING, "gzip")]), "text/html");
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
    }
}
