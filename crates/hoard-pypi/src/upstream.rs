//! Reading an upstream index's project page: PEP 691 JSON or PEP 503 HTML,
//! as an upstream like the public index serves it (absolute file URLs on
//! another host, hashes in URL fragments, PEP 592 yanks, PEP 658/714 core
//! metadata under either attribute name, PEP 700 sizes and upload times).
//! The result is plain per-file records, which a mirror compares with what
//! it already holds; nothing here fetches anything.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::PypiError;

/// The media type of a PEP 691 JSON page, version 1.
pub const SIMPLE_JSON: &str = "application/vnd.pypi.simple.v1+json";
/// The `Accept` header a mirror sends upstream: JSON first, HTML after.
pub const UPSTREAM_ACCEPT: &str = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01";

/// The longest filename taken from an upstream page.
const MAX_UPSTREAM_FILENAME: usize = 255;

/// How an upstream page is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamFormat {
    Json,
    Html,
}

impl UpstreamFormat {
    /// The format of a page by its `Content-Type`, if it is one of the
    /// Simple API's.
    pub fn from_content_type(content_type: &str) -> Option<UpstreamFormat> {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/vnd.pypi.simple.v1+json" => Some(UpstreamFormat::Json),
            "application/vnd.pypi.simple.v1+html" | "text/html" => Some(UpstreamFormat::Html),
            _ => None,
        }
    }
}

/// One file of a project as an upstream lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamFile {
    pub filename: String,
    /// Absolute, resolved against the page's URL, without the fragment.
    pub url: String,
    /// Hash name (lowercase) → lowercase hex digest.
    pub hashes: BTreeMap<String, String>,
    pub requires_python: Option<String>,
    /// `Some(reason)` when yanked; the reason may be empty.
    pub yanked: Option<String>,
    /// PEP 658/714: `Some` when a `.metadata` file is offered, with its
    /// hashes (possibly none).
    pub core_metadata: Option<BTreeMap<String, String>>,
    pub size: Option<u64>,
    /// As the upstream wrote it (ISO 8601).
    pub upload_time: Option<String>,
}

/// A project page, as an upstream serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamProject {
    /// The name the page gives (JSON `name`), if any.
    pub name: Option<String>,
    pub files: Vec<UpstreamFile>,
    /// Entries left out, each with why: one bad link does not cost the
    /// rest of the page.
    pub refused: Vec<RefusedFile>,
}

/// A file entry of an upstream page that hoard will not mirror.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedFile {
    /// The filename or link as the page gave it.
    pub entry: String,
    pub reason: String,
}

fn bad_page(reason: impl Into<String>) -> PypiError {
    PypiError::UpstreamPage(reason.into())
}

/// Parses an upstream project page served at `page_url`.
pub fn parse_upstream_project(
    format: UpstreamFormat,
    page_url: &str,
    body: &[u8],
) -> Result<UpstreamProject, PypiError> {
    let base = url::Url::parse(page_url)
        .map_err(|e| bad_page(format!("the page URL {page_url:?} is not a URL: {e}")))?;
    match format {
        UpstreamFormat::Json => parse_json(&base, body),
        UpstreamFormat::Html => parse_html(&base, body),
    }
}

/// A `yanked`, `core-metadata` or `dist-info-metadata` value: a flag, or a
/// reason / a hash map.
#[derive(Deserialize)]
#[serde(untagged)]
enum FlagOr<T> {
    Flag(bool),
    Value(T),
}

#[derive(Deserialize)]
struct JsonMeta {
    #[serde(rename = "api-version")]
    api_version: String,
}

#[derive(Deserialize)]
struct JsonFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: BTreeMap<String, String>,
    #[serde(rename = "requires-python", default)]
    requires_python: Option<String>,
    #[serde(default)]
    yanked: Option<FlagOr<String>>,
    #[serde(rename = "core-metadata", default)]
    core_metadata: Option<FlagOr<BTreeMap<String, String>>>,
    #[serde(rename = "dist-info-metadata", default)]
    dist_info_metadata: Option<FlagOr<BTreeMap<String, String>>>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(rename = "upload-time", default)]
    upload_time: Option<String>,
}

#[derive(Deserialize)]
struct JsonProject {
    meta: JsonMeta,
    #[serde(default)]
    name: Option<String>,
    files: Vec<JsonFile>,
}

fn check_api_version(version: &str) -> Result<(), PypiError> {
    match version.split('.').next() {
        Some("1") => Ok(()),
        _ => Err(bad_page(format!(
            "the upstream speaks Simple API version {version}; this node reads version 1"
        ))),
    }
}

fn parse_json(base: &url::Url, body: &[u8]) -> Result<UpstreamProject, PypiError> {
    let page: JsonProject = serde_json::from_slice(body)
        .map_err(|e| bad_page(format!("not a PEP 691 project page: {e}")))?;
    check_api_version(&page.meta.api_version)?;
    let mut listed = Listed::default();
    for f in page.files {
        let entry = f.filename.clone();
        let file = (|| {
            let (url, fragment_hash) = resolve(base, &f.url)?;
            let mut hashes = checked_hashes(f.hashes)?;
            if let Some((name, hex)) = fragment_hash {
                hashes.entry(name).or_insert(hex);
            }
            let yanked = match f.yanked {
                None | Some(FlagOr::Flag(false)) => None,
                Some(FlagOr::Flag(true)) => Some(String::new()),
                Some(FlagOr::Value(reason)) => Some(reason),
            };
            let core_metadata = match f.core_metadata.or(f.dist_info_metadata) {
                None | Some(FlagOr::Flag(false)) => None,
                Some(FlagOr::Flag(true)) => Some(BTreeMap::new()),
                Some(FlagOr::Value(hashes)) => Some(checked_hashes(hashes)?),
            };
            Ok(UpstreamFile {
                filename: checked_filename(f.filename)?,
                url,
                hashes,
                requires_python: f.requires_python.filter(|r| !r.is_empty()),
                yanked,
                core_metadata,
                size: f.size,
                upload_time: f.upload_time,
            })
        })();
        listed.push(entry, file);
    }
    Ok(listed.into_project(page.name))
}

/// Files of a page as they are read: kept, or refused with a reason.
#[derive(Default)]
struct Listed {
    files: Vec<UpstreamFile>,
    refused: Vec<RefusedFile>,
}

impl Listed {
    fn push(&mut self, entry: String, file: Result<UpstreamFile, PypiError>) {
        match file {
            Ok(file) => self.files.push(file),
            Err(e) => self.refused.push(RefusedFile {
                entry,
                reason: match e {
                    PypiError::UpstreamPage(reason) => reason,
                    other => other.to_string(),
                },
            }),
        }
    }

    fn into_project(self, name: Option<String>) -> UpstreamProject {
        UpstreamProject {
            name,
            files: self.files,
            refused: self.refused,
        }
    }
}

fn parse_html(base: &url::Url, body: &[u8]) -> Result<UpstreamProject, PypiError> {
    let text = std::str::from_utf8(body).map_err(|_| bad_page("the HTML page is not UTF-8"))?;
    let document = scraper::Html::parse_document(text);
    let meta = scraper::Selector::parse(r#"meta[name="pypi:repository-version"]"#)
        .map_err(|e| bad_page(e.to_string()))?;
    if let Some(version) = document
        .select(&meta)
        .next()
        .and_then(|m| m.value().attr("content"))
    {
        check_api_version(version)?;
    }
    // A `<base href>` moves where relative links point.
    let base_selector =
        scraper::Selector::parse("base[href]").map_err(|e| bad_page(e.to_string()))?;
    let base = match document
        .select(&base_selector)
        .next()
        .and_then(|b| b.value().attr("href"))
    {
        Some(href) => base
            .join(href)
            .map_err(|e| bad_page(format!("the page's <base href={href:?}> is not a URL: {e}")))?,
        None => base.clone(),
    };
    let anchors = scraper::Selector::parse("a[href]").map_err(|e| bad_page(e.to_string()))?;
    let mut listed = Listed::default();
    for anchor in document.select(&anchors) {
        let attrs = anchor.value();
        let href = attrs.attr("href").unwrap_or_default();
        let file = (|| {
            let (url, fragment_hash) = resolve(&base, href)?;
            let text: String = anchor.text().collect();
            let filename = match text.trim() {
                "" => last_path_segment(&url),
                name => name.to_owned(),
            };
            let mut hashes = BTreeMap::new();
            if let Some((name, hex)) = fragment_hash {
                hashes.insert(name, hex);
            }
            let core_metadata = match attrs
                .attr("data-core-metadata")
                .or_else(|| attrs.attr("data-dist-info-metadata"))
            {
                None => None,
                Some("true") => Some(BTreeMap::new()),
                Some(value) => Some(hash_pair(value)?.into_iter().collect()),
            };
            Ok(UpstreamFile {
                filename: checked_filename(filename)?,
                url,
                hashes,
                requires_python: attrs
                    .attr("data-requires-python")
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned),
                yanked: attrs.attr("data-yanked").map(str::to_owned),
                core_metadata,
                size: None,
                upload_time: None,
            })
        })();
        listed.push(href.to_owned(), file);
    }
    Ok(listed.into_project(None))
}

/// `href` resolved against `base`, without its fragment, and the hash
/// the fragment carries (`#sha256=…`), if any.
#[allow(clippy::type_complexity)]
fn resolve(base: &url::Url, href: &str) -> Result<(String, Option<(String, String)>), PypiError> {
    let mut url = base
        .join(href)
        .map_err(|e| bad_page(format!("the file link {href:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad_page(format!(
            "the file link {href:?} is not http or https"
        )));
    }
    let hash = match url.fragment() {
        Some(fragment) if fragment.contains('=') => hash_pair(fragment)?,
        _ => None,
    };
    url.set_fragment(None);
    Ok((url.to_string(), hash))
}

/// `name=hex`, checked.
fn hash_pair(value: &str) -> Result<Option<(String, String)>, PypiError> {
    let Some((name, hex)) = value.split_once('=') else {
        return Err(bad_page(format!("{value:?} is not a name=digest pair")));
    };
    let mut one = BTreeMap::new();
    one.insert(name.to_owned(), hex.to_owned());
    Ok(checked_hashes(one)?.into_iter().next())
}

/// Hash names lowercased; digests lowercase hex, of the right length for
/// the names hoard knows.
fn checked_hashes(hashes: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, PypiError> {
    let mut out = BTreeMap::new();
    for (name, hex) in hashes {
        let name = name.to_ascii_lowercase();
        let hex = hex.to_ascii_lowercase();
        let want = match name.as_str() {
            "sha256" | "blake2b_256" => Some(64),
            "md5" => Some(32),
            "sha512" => Some(128),
            _ => None,
        };
        let hex_ok = !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_ok || want.is_some_and(|len| hex.len() != len) {
            return Err(bad_page(format!("the {name} digest {hex:?} is not valid")));
        }
        out.insert(name, hex);
    }
    Ok(out)
}

/// A filename that is safe to store and serve under.
fn checked_filename(filename: String) -> Result<String, PypiError> {
    let unsafe_name = filename.is_empty()
        || filename.len() > MAX_UPSTREAM_FILENAME
        || filename.contains(['/', '\\', '\0'])
        || filename.starts_with('.')
        || filename.chars().any(char::is_control);
    if unsafe_name {
        return Err(bad_page(format!(
            "the upstream lists an unsafe filename {filename:?}"
        )));
    }
    Ok(filename)
}

fn last_path_segment(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.path_segments()?.next_back().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "https://index.test/simple/demo/";
    const SHA: &str = "0f343b0931126a20f133d67c2b018a3b7cc28b6e2b3c3e8f6f2e6f6e6f6e6f6e";

    #[test]
    fn json_pages_give_every_field_and_absolute_urls() {
        let body = format!(
            r#"{{"meta":{{"api-version":"1.1"}},"name":"demo","versions":["1.0"],"files":[
              {{"filename":"demo-1.0-py3-none-any.whl","url":"https://files.test/packages/ab/demo-1.0-py3-none-any.whl",
                "hashes":{{"SHA256":"{}"}},"requires-python":">=3.8","yanked":"broken","core-metadata":{{"sha256":"{SHA}"}},
                "size":1234,"upload-time":"2024-01-02T03:04:05.000000Z"}},
              {{"filename":"demo-1.0.tar.gz","url":"../../packages/demo-1.0.tar.gz#sha256={SHA}",
                "hashes":{{}},"requires-python":null,"yanked":false,"dist-info-metadata":true}}]}}"#,
            SHA.to_uppercase()
        );
        let project = parse_upstream_project(UpstreamFormat::Json, PAGE, body.as_bytes()).unwrap();
        assert_eq!(project.name.as_deref(), Some("demo"));
        let wheel = &project.files[0];
        assert_eq!(wheel.hashes["sha256"], SHA);
        assert_eq!(wheel.yanked.as_deref(), Some("broken"));
        assert_eq!(wheel.requires_python.as_deref(), Some(">=3.8"));
        assert_eq!(wheel.core_metadata.as_ref().unwrap()["sha256"], SHA);
        assert_eq!(wheel.size, Some(1234));
        let sdist = &project.files[1];
        assert_eq!(sdist.url, "https://index.test/packages/demo-1.0.tar.gz");
        assert_eq!(sdist.hashes["sha256"], SHA);
        assert_eq!(sdist.yanked, None);
        assert_eq!(sdist.core_metadata, Some(BTreeMap::new()));
    }

    #[test]
    fn html_pages_give_hashes_yanks_metadata_and_decoded_attributes() {
        let body = format!(
            r#"<!DOCTYPE html><html><head><meta name="pypi:repository-version" content="1.0"></head><body>
            <a href="https://files.test/p/demo-1.0-py3-none-any.whl#sha256={SHA}" data-requires-python="&gt;=3.8"
               data-dist-info-metadata="sha256={SHA}">demo-1.0-py3-none-any.whl</a><br/>
            <a href="/p/demo-0.9.tar.gz?x=1&amp;y=2#sha256={SHA}" data-yanked="">demo-0.9.tar.gz</a>
            <a href="https://files.test/p/demo-0.8.zip" data-core-metadata="true"> </a>
            </body></html>"#
        );
        let project = parse_upstream_project(UpstreamFormat::Html, PAGE, body.as_bytes()).unwrap();
        let [wheel, sdist, zip] = project.files.as_slice() else {
            panic!("three files expected: {project:?}");
        };
        assert_eq!(wheel.requires_python.as_deref(), Some(">=3.8"));
        assert_eq!(wheel.core_metadata.as_ref().unwrap()["sha256"], SHA);
        assert_eq!(wheel.yanked, None);
        assert_eq!(sdist.url, "https://index.test/p/demo-0.9.tar.gz?x=1&y=2");
        assert_eq!(sdist.yanked.as_deref(), Some(""));
        assert_eq!(sdist.hashes["sha256"], SHA);
        // An empty anchor text names the file by its URL.
        assert_eq!(zip.filename, "demo-0.8.zip");
        assert_eq!(zip.core_metadata, Some(BTreeMap::new()));
    }

    #[test]
    fn bad_pages_are_refused_with_a_reason() {
        let cases: [(UpstreamFormat, String, &str); 3] = [
            (
                UpstreamFormat::Json,
                r#"{"meta":{"api-version":"2.0"},"files":[]}"#.into(),
                "version 2.0",
            ),
            (UpstreamFormat::Json, "not json".into(), "not a PEP 691"),
            (
                UpstreamFormat::Html,
                r#"<meta name="pypi:repository-version" content="3.0"><a href="x.whl">x.whl</a>"#
                    .into(),
                "version 3.0",
            ),
        ];
        for (format, body, expected) in cases {
            let err = parse_upstream_project(format, PAGE, body.as_bytes())
                .err()
                .unwrap_or_else(|| panic!("{body} was accepted"));
            assert!(err.to_string().contains(expected), "{body}: {err}");
        }
    }

    #[test]
    fn bad_file_entries_are_refused_alone() {
        let good = format!(
            r#"{{"filename":"a-1.0.tar.gz","url":"https://f.test/a-1.0.tar.gz","hashes":{{"sha256":"{SHA}"}}}}"#
        );
        let cases: [(UpstreamFormat, String, &str); 5] = [
            (
                UpstreamFormat::Json,
                format!(
                    r#"{{"meta":{{"api-version":"1.0"}},"files":[{{"filename":"../etc/passwd","url":"https://f.test/x","hashes":{{}}}},{good}]}}"#
                ),
                "unsafe filename",
            ),
            (
                UpstreamFormat::Json,
                format!(
                    r#"{{"meta":{{"api-version":"1.0"}},"files":[{{"filename":"a.whl","url":"https://f.test/a.whl","hashes":{{"sha256":"xyz"}}}},{good}]}}"#
                ),
                "not valid",
            ),
            (
                UpstreamFormat::Json,
                format!(
                    r#"{{"meta":{{"api-version":"1.0"}},"files":[{{"filename":"a.whl","url":"ftp://f.test/a.whl","hashes":{{}}}},{good}]}}"#
                ),
                "not http",
            ),
            (
                UpstreamFormat::Html,
                format!(
                    r#"<a href="file:///etc/passwd">x.whl</a><a href="https://f.test/a-1.0.tar.gz#sha256={SHA}">a-1.0.tar.gz</a>"#
                ),
                "not http",
            ),
            (
                UpstreamFormat::Html,
                format!(
                    r#"<a href="../x/..%2f..%2fevil.whl">..%2fevil.whl</a><a href="https://f.test/a-1.0.tar.gz#sha256={SHA}">a-1.0.tar.gz</a>"#
                ),
                "unsafe filename",
            ),
        ];
        for (format, body, expected) in cases {
            let page = parse_upstream_project(format, PAGE, body.as_bytes())
                .unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(page.refused.len(), 1, "{body}: {:?}", page.refused);
            assert!(
                page.refused[0].reason.contains(expected),
                "{body}: {:?}",
                page.refused
            );
            let names: Vec<&str> = page.files.iter().map(|f| f.filename.as_str()).collect();
            assert_eq!(names, ["a-1.0.tar.gz"], "{body}");
        }
    }

    #[test]
    fn content_types_pick_the_format() {
        assert_eq!(
            UpstreamFormat::from_content_type("application/vnd.pypi.simple.v1+json"),
            Some(UpstreamFormat::Json)
        );
        assert_eq!(
            UpstreamFormat::from_content_type("text/html; charset=utf-8"),
            Some(UpstreamFormat::Html)
        );
        assert_eq!(UpstreamFormat::from_content_type("application/json"), None);
    }
}
