//! Simple API pages: PEP 503 HTML and PEP 691 JSON, with PEP 592 (yanked),
//! PEP 629 (repository version), PEP 658/714 (core metadata) and PEP 700
//! (versions, size, upload time).

use serde::Serialize;
use serde_json::Value;
use time::{OffsetDateTime, UtcOffset};

use crate::SimpleFormat;

/// The Simple API version these pages implement (1.1: PEP 700).
pub const API_VERSION: &str = "1.1";

/// One project on the index page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectLink {
    /// The display name.
    pub name: String,
    /// The PEP 503 normalized name, used in the link.
    pub normalized: String,
}

/// The root index page (`/{repo}/simple/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPage {
    pub projects: Vec<ProjectLink>,
    pub last_serial: u64,
}

/// One file on a project page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLink {
    pub filename: String,
    /// The file's URL (relative or absolute), without a fragment.
    pub url: String,
    /// Hex sha256 of the file.
    pub sha256: String,
    pub size: u64,
    pub upload_time: OffsetDateTime,
    /// `None` or empty: no constraint.
    pub requires_python: Option<String>,
    /// `None`: not yanked; `Some("")`: yanked without a reason.
    pub yanked: Option<String>,
    /// Hex sha256 of the file's core metadata, when it is served (PEP 658).
    pub core_metadata_sha256: Option<String>,
}

/// A project page (`/{repo}/simple/{project}/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectPage {
    /// The normalized project name.
    pub name: String,
    pub files: Vec<FileLink>,
    /// Every version of the project, rendered in the given order (see
    /// [`crate::sort_versions`]).
    pub versions: Vec<String>,
    pub last_serial: u64,
}

/// Escapes text for HTML text and double- or single-quoted attributes.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, in UTC (PEP 700 `upload-time`).
pub fn format_upload_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

fn html_head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html>\n  <head>\n    \
         <meta name=\"pypi:repository-version\" content=\"{API_VERSION}\">\n    \
         <title>{title}</title>\n  </head>\n  <body>\n    <h1>{title}</h1>\n"
    )
}

fn html_tail(last_serial: u64) -> String {
    format!("  </body>\n</html>\n<!--SERIAL {last_serial}-->\n")
}

#[derive(Serialize)]
struct Meta {
    #[serde(rename = "api-version")]
    api_version: &'static str,
    #[serde(rename = "_last-serial")]
    last_serial: u64,
}

impl Meta {
    fn new(last_serial: u64) -> Self {
        Meta {
            api_version: API_VERSION,
            last_serial,
        }
    }
}

#[derive(Serialize)]
struct ProjectJson<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct ProjectPageJson<'a> {
    meta: Meta,
    name: &'a str,
    files: Vec<FileJson<'a>>,
    versions: &'a [String],
}

#[derive(Serialize)]
struct Hashes<'a> {
    sha256: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct FileJson<'a> {
    filename: &'a str,
    url: &'a str,
    hashes: Hashes<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requires_python: Option<&'a str>,
    size: u64,
    upload_time: String,
    yanked: Value,
    core_metadata: Value,
    dist_info_metadata: Value,
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Plain structs of strings and numbers: serialization cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

fn requires_python(f: &FileLink) -> Option<&str> {
    f.requires_python.as_deref().filter(|s| !s.is_empty())
}

/// Renders the root index page.
pub fn render_index(page: &IndexPage, format: SimpleFormat) -> String {
    let mut renderer = IndexRenderer::new(format);
    let mut out = renderer.head();
    for p in &page.projects {
        renderer.push_project(&mut out, p);
    }
    out.push_str(&renderer.tail(page.last_serial));
    out
}

/// The root index page, a piece at a time, for an index too long to
/// render at once: `head`, each project in order, then `tail`. The
/// serial comes last in both formats (in JSON, `meta` follows
/// `projects`), so it can be the highest one met on the way.
pub struct IndexRenderer {
    format: SimpleFormat,
    projects: usize,
}

impl IndexRenderer {
    pub fn new(format: SimpleFormat) -> Self {
        IndexRenderer {
            format,
            projects: 0,
        }
    }

    pub fn head(&self) -> String {
        if self.format.is_json() {
            "{\"projects\":[".to_owned()
        } else {
            html_head("Simple index")
        }
    }

    /// Appends one project's entry to `out`.
    pub fn push_project(&mut self, out: &mut String, p: &ProjectLink) {
        if self.format.is_json() {
            if self.projects > 0 {
                out.push(',');
            }
            out.push_str(&to_json(&ProjectJson { name: &p.name }));
        } else {
            out.push_str("    <a href=\"");
            out.push_str(&html_escape(&p.normalized));
            out.push_str("/\">");
            out.push_str(&html_escape(&p.name));
            out.push_str("</a><br>\n");
        }
        self.projects += 1;
    }

    pub fn tail(&self, last_serial: u64) -> String {
        if self.format.is_json() {
            format!("],\"meta\":{}}}", to_json(&Meta::new(last_serial)))
        } else {
            html_tail(last_serial)
        }
    }
}

/// Renders a project page.
pub fn render_project(page: &ProjectPage, format: SimpleFormat) -> String {
    if format.is_json() {
        return to_json(&ProjectPageJson {
            meta: Meta::new(page.last_serial),
            name: &page.name,
            files: page.files.iter().map(file_json).collect(),
            versions: &page.versions,
        });
    }
    let mut html = html_head(&format!("Links for {}", html_escape(&page.name)));
    for f in &page.files {
        html.push_str("    ");
        html.push_str(&file_anchor(f));
        html.push_str("<br>\n");
    }
    html.push_str(&html_tail(page.last_serial));
    html
}

fn file_json(f: &FileLink) -> FileJson<'_> {
    let yanked = match f.yanked.as_deref() {
        None => Value::Bool(false),
        Some("") => Value::Bool(true),
        Some(reason) => Value::String(reason.to_owned()),
    };
    let metadata = match &f.core_metadata_sha256 {
        Some(h) => serde_json::json!({ "sha256": h }),
        None => Value::Bool(false),
    };
    FileJson {
        filename: &f.filename,
        url: &f.url,
        hashes: Hashes { sha256: &f.sha256 },
        requires_python: requires_python(f),
        size: f.size,
        upload_time: format_upload_time(f.upload_time),
        yanked,
        core_metadata: metadata.clone(),
        dist_info_metadata: metadata,
    }
}

fn file_anchor(f: &FileLink) -> String {
    let mut a = format!(
        "<a href=\"{}\"",
        html_escape(&format!("{}#sha256={}", f.url, f.sha256))
    );
    if let Some(rp) = requires_python(f) {
        a.push_str(&format!(" data-requires-python=\"{}\"", html_escape(rp)));
    }
    if let Some(reason) = &f.yanked {
        a.push_str(&format!(" data-yanked=\"{}\"", html_escape(reason)));
    }
    if let Some(h) = &f.core_metadata_sha256 {
        let h = html_escape(h);
        a.push_str(&format!(
            " data-dist-info-metadata=\"sha256={h}\" data-core-metadata=\"sha256={h}\""
        ));
    }
    a.push_str(&format!(">{}</a>", html_escape(&f.filename)));
    a
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;

    const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const SHA_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const SHA_M: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    fn index() -> IndexPage {
        IndexPage {
            projects: vec![
                ProjectLink {
                    name: "Foo_Bar".into(),
                    normalized: "foo-bar".into(),
                },
                ProjectLink {
                    name: "requests".into(),
                    normalized: "requests".into(),
                },
            ],
            last_serial: 42,
        }
    }

    fn project() -> ProjectPage {
        ProjectPage {
            name: "foo-bar".into(),
            files: vec![
                FileLink {
                    filename: "foo_bar-1.0.tar.gz".into(),
                    url: "../../files/foo-bar/foo_bar-1.0.tar.gz".into(),
                    sha256: SHA_A.into(),
                    size: 1234,
                    upload_time: datetime!(2024-03-01 12:34:56.789 UTC),
                    requires_python: None,
                    yanked: None,
                    core_metadata_sha256: None,
                },
                FileLink {
                    filename: "foo_bar-1.1-py3-none-any.whl".into(),
                    url: "../../files/foo-bar/foo_bar-1.1-py3-none-any.whl".into(),
                    sha256: SHA_B.into(),
                    size: 99,
                    upload_time: datetime!(2024-03-02 02:00:00.000_001 +02:00),
                    requires_python: Some(">=3.8, <4 & 'x' \"y\"".into()),
                    yanked: Some("broken <build>".into()),
                    core_metadata_sha256: Some(SHA_M.into()),
                },
                FileLink {
                    filename: "foo_bar-1.2-py3-none-any.whl".into(),
                    url: "/r/files/foo_bar-1.2-py3-none-any.whl".into(),
                    sha256: SHA_B.into(),
                    size: 0,
                    upload_time: datetime!(2024-03-03 00:00 UTC),
                    requires_python: Some(String::new()),
                    yanked: Some(String::new()),
                    core_metadata_sha256: None,
                },
            ],
            versions: vec!["1.0".into(), "1.1".into(), "1.2".into()],
            last_serial: 7,
        }
    }

    #[test]
    fn escapes_html() {
        assert_eq!(html_escape(">=3.8"), "&gt;=3.8");
        assert_eq!(html_escape("a&b<c\"d'e"), "a&amp;b&lt;c&quot;d&#x27;e");
        assert_eq!(html_escape("plain"), "plain");
    }

    #[test]
    fn formats_upload_time_in_utc_with_microseconds() {
        assert_eq!(
            format_upload_time(datetime!(2024-03-01 12:34:56.789 UTC)),
            "2024-03-01T12:34:56.789000Z"
        );
        assert_eq!(
            format_upload_time(datetime!(2024-01-01 01:00:00.000_001 +02:00)),
            "2023-12-31T23:00:00.000001Z"
        );
        assert_eq!(
            format_upload_time(OffsetDateTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn index_html() {
        let html = render_index(&index(), SimpleFormat::Html);
        assert_eq!(
            html,
            "<!DOCTYPE html>\n<html>\n  <head>\n    \
             <meta name=\"pypi:repository-version\" content=\"1.1\">\n    \
             <title>Simple index</title>\n  </head>\n  <body>\n    <h1>Simple index</h1>\n    \
             <a href=\"foo-bar/\">Foo_Bar</a><br>\n    \
             <a href=\"requests/\">requests</a><br>\n  </body>\n</html>\n<!--SERIAL 42-->\n"
        );
        assert_eq!(render_index(&index(), SimpleFormat::HtmlV1), html);
    }

    #[test]
    fn index_json() {
        let v: Value = serde_json::from_str(&render_index(&index(), SimpleFormat::JsonV1)).unwrap();
        assert_eq!(
            v,
            json!({
                "meta": {"api-version": "1.1", "_last-serial": 42},
                "projects": [{"name": "Foo_Bar"}, {"name": "requests"}]
            })
        );
        let empty = IndexPage {
            projects: vec![],
            last_serial: 0,
        };
        let v: Value = serde_json::from_str(&render_index(&empty, SimpleFormat::JsonV1)).unwrap();
        assert_eq!(v["projects"], json!([]));
        assert!(render_index(&empty, SimpleFormat::Html)
            .contains("<body>\n    <h1>Simple index</h1>\n  </body>"));
    }

    #[test]
    fn project_html() {
        let html = render_project(&project(), SimpleFormat::Html);
        assert!(html.starts_with("<!DOCTYPE html>\n"));
        assert!(html.contains("<meta name=\"pypi:repository-version\" content=\"1.1\">"));
        assert!(html.contains("<title>Links for foo-bar</title>"));
        assert!(html.contains("<h1>Links for foo-bar</h1>"));
        let anchors: Vec<&str> = html
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("<a "))
            .collect();
        assert_eq!(
            anchors,
            [
                format!(
                    "<a href=\"../../files/foo-bar/foo_bar-1.0.tar.gz#sha256={SHA_A}\">foo_bar-1.0.tar.gz</a><br>"
                ),
                format!(
                    "<a href=\"../../files/foo-bar/foo_bar-1.1-py3-none-any.whl#sha256={SHA_B}\" \
                     data-requires-python=\"&gt;=3.8, &lt;4 &amp; &#x27;x&#x27; &quot;y&quot;\" \
                     data-yanked=\"broken &lt;build&gt;\" \
                     data-dist-info-metadata=\"sha256={SHA_M}\" data-core-metadata=\"sha256={SHA_M}\">\
                     foo_bar-1.1-py3-none-any.whl</a><br>"
                ),
                format!(
                    "<a href=\"/r/files/foo_bar-1.2-py3-none-any.whl#sha256={SHA_B}\" data-yanked=\"\">\
                     foo_bar-1.2-py3-none-any.whl</a><br>"
                ),
            ]
        );
        assert!(html.ends_with("</html>\n<!--SERIAL 7-->\n"));
        assert_eq!(render_project(&project(), SimpleFormat::HtmlV1), html);
    }

    #[test]
    fn project_html_escapes_name_and_url() {
        let mut p = project();
        p.name = "a<b".into();
        p.files.truncate(1);
        p.files[0].url = "x?a=1&b=\"2\"".into();
        let html = render_project(&p, SimpleFormat::Html);
        assert!(html.contains("<title>Links for a&lt;b</title>"));
        assert!(html.contains(&format!(
            "href=\"x?a=1&amp;b=&quot;2&quot;#sha256={SHA_A}\""
        )));
    }

    #[test]
    fn project_json() {
        let v: Value =
            serde_json::from_str(&render_project(&project(), SimpleFormat::JsonV1)).unwrap();
        assert_eq!(
            v,
            json!({
                "meta": {"api-version": "1.1", "_last-serial": 7},
                "name": "foo-bar",
                "files": [
                    {
                        "filename": "foo_bar-1.0.tar.gz",
                        "url": "../../files/foo-bar/foo_bar-1.0.tar.gz",
                        "hashes": {"sha256": SHA_A},
                        "size": 1234,
                        "upload-time": "2024-03-01T12:34:56.789000Z",
                        "yanked": false,
                        "core-metadata": false,
                        "dist-info-metadata": false
                    },
                    {
                        "filename": "foo_bar-1.1-py3-none-any.whl",
                        "url": "../../files/foo-bar/foo_bar-1.1-py3-none-any.whl",
                        "hashes": {"sha256": SHA_B},
                        "requires-python": ">=3.8, <4 & 'x' \"y\"",
                        "size": 99,
                        "upload-time": "2024-03-02T00:00:00.000001Z",
                        "yanked": "broken <build>",
                        "core-metadata": {"sha256": SHA_M},
                        "dist-info-metadata": {"sha256": SHA_M}
                    },
                    {
                        "filename": "foo_bar-1.2-py3-none-any.whl",
                        "url": "/r/files/foo_bar-1.2-py3-none-any.whl",
                        "hashes": {"sha256": SHA_B},
                        "size": 0,
                        "upload-time": "2024-03-03T00:00:00.000000Z",
                        "yanked": true,
                        "core-metadata": false,
                        "dist-info-metadata": false
                    }
                ],
                "versions": ["1.0", "1.1", "1.2"]
            })
        );
    }

    #[test]
    fn project_json_without_files() {
        let p = ProjectPage {
            name: "empty".into(),
            files: vec![],
            versions: vec![],
            last_serial: 3,
        };
        let v: Value = serde_json::from_str(&render_project(&p, SimpleFormat::JsonV1)).unwrap();
        assert_eq!(
            v,
            json!({"meta": {"api-version": "1.1", "_last-serial": 3}, "name": "empty", "files": [], "versions": []})
        );
    }
}
