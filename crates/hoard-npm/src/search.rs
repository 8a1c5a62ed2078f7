//! `GET /-/v1/search?text=…&size=…&from=…`: matching, and the response shape
//! that `npm search` reads.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::packument::format_npm_time;
use crate::PackageName;

/// Results per page when the query gives no `size` (npm asks for 20).
pub const DEFAULT_SEARCH_SIZE: usize = 20;
/// Most results per page, whatever the query asks (the public registry's
/// bound).
pub const MAX_SEARCH_SIZE: usize = 250;

/// The parameters of a search request that hoard honours. npm also sends
/// `quality`, `popularity` and `maintenance` weights; they are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    pub text: String,
    /// At most [`MAX_SEARCH_SIZE`].
    pub size: usize,
    pub from: usize,
}

/// Parses the query string (without `?`) of a search request. Missing or
/// unparsable numbers take their defaults; never fails.
pub fn parse_search_query(query: &str) -> SearchQuery {
    let mut q = SearchQuery {
        text: String::new(),
        size: DEFAULT_SEARCH_SIZE,
        from: 0,
    };
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = v.replace('+', " ");
        let v = percent_encoding::percent_decode_str(&v)
            .decode_utf8_lossy()
            .into_owned();
        match k {
            "text" => q.text = v,
            "size" => q.size = v.trim().parse().unwrap_or(DEFAULT_SEARCH_SIZE),
            "from" => q.from = v.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    q.size = q.size.min(MAX_SEARCH_SIZE);
    q
}

/// One package in a search result.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub name: PackageName,
    /// The `latest` version.
    pub version: String,
    pub description: Option<String>,
    pub keywords: Vec<String>,
    /// When `version` was published.
    pub date: OffsetDateTime,
    /// Who published `version`, if known.
    pub publisher: Option<String>,
    /// `homepage`, `repository`, `bugs`, `npm`…: absolute URLs.
    pub links: BTreeMap<String, String>,
    /// Relevance in `0.0..=1.0`, from [`search_score`].
    pub score: f64,
}

/// Whether a package matches a search text: every whitespace-separated term
/// must match, case-insensitively, as a substring of the name (with its
/// scope), of the description or of a keyword. `keywords:a,b` matches a
/// package with one of those keywords exactly; `scope:acme` (or `@acme`)
/// matches the scope. Other `qualifier:value` terms that the public registry
/// knows (`author:`, `maintainer:`, `is:`, `not:`, `boost-exact:`) are
/// ignored. An empty text matches everything.
pub fn matches_search(
    text: &str,
    name: &PackageName,
    description: Option<&str>,
    keywords: &[String],
) -> bool {
    text.split_whitespace()
        .all(|term| term_score(term, name, description, keywords).is_some())
}

/// Relevance of a package for a search text, in `0.0..=1.0` (0 when it
/// does not match): per term, 1 for the exact name, 0.8 for a name prefix,
/// 0.6 for a name substring, 0.5 for an exact keyword, 0.4 for a keyword
/// substring, 0.3 for the description; averaged over the terms.
pub fn search_score(
    text: &str,
    name: &PackageName,
    description: Option<&str>,
    keywords: &[String],
) -> f64 {
    let mut total = 0.0;
    let mut n = 0usize;
    for term in text.split_whitespace() {
        match term_score(term, name, description, keywords) {
            Some(s) => total += s,
            None => return 0.0,
        }
        n += 1;
    }
    if n == 0 {
        1.0
    } else {
        total / n as f64
    }
}

fn term_score(
    term: &str,
    name: &PackageName,
    description: Option<&str>,
    keywords: &[String],
) -> Option<f64> {
    let term = term.to_lowercase();
    if let Some((qualifier, value)) = term.split_once(':') {
        return match qualifier {
            "keywords" => value
                .split(',')
                .filter(|k| !k.is_empty())
                .any(|k| keywords.iter().any(|kw| kw.to_lowercase() == k))
                .then_some(0.5),
            "scope" => {
                let value = value.trim_start_matches('@');
                (name.scope.as_deref().map(str::to_lowercase).as_deref() == Some(value))
                    .then_some(0.5)
            }
            "author" | "maintainer" | "is" | "not" | "boost-exact" => Some(1.0),
            _ => plain_term_score(&term, name, description, keywords),
        };
    }
    plain_term_score(&term, name, description, keywords)
}

fn plain_term_score(
    term: &str,
    name: &PackageName,
    description: Option<&str>,
    keywords: &[String],
) -> Option<f64> {
    let full = name.full().to_lowercase();
    let bare = name.name.to_lowercase();
    if full == term || bare == term {
        return Some(1.0);
    }
    if full.starts_with(term) || bare.starts_with(term) {
        return Some(0.8);
    }
    if full.contains(term) {
        return Some(0.6);
    }
    let kws: Vec<String> = keywords.iter().map(|k| k.to_lowercase()).collect();
    if kws.iter().any(|k| k == term) {
        return Some(0.5);
    }
    if kws.iter().any(|k| k.contains(term)) {
        return Some(0.4);
    }
    if description.is_some_and(|d| d.to_lowercase().contains(term)) {
        return Some(0.3);
    }
    None
}

/// The `/-/v1/search` response: `{objects: [{package: {name, scope,
/// version, description, keywords, date, links, publisher, maintainers},
/// score: {final, detail: {quality, popularity, maintenance}},
/// searchScore}], total, time}`. `maintainers` is always an array: npm 10's
/// `npm search` fails on a result without it. `time` is `now`.
pub fn render_search(hits: &[SearchHit], total: u64, now: OffsetDateTime) -> Value {
    let objects: Vec<Value> = hits
        .iter()
        .map(|h| {
            let scope = h.name.scope.clone().unwrap_or_else(|| "unscoped".into());
            let maintainers: Vec<Value> = h
                .publisher
                .iter()
                .map(|p| json!({"username": p, "email": ""}))
                .collect();
            let mut package = json!({
                "name": h.name.full(),
                "scope": scope,
                "version": h.version,
                "description": h.description.clone().unwrap_or_default(),
                "keywords": h.keywords,
                "date": format_npm_time(h.date),
                "links": h.links,
                "maintainers": maintainers,
            });
            if let Some(p) = &h.publisher {
                package["publisher"] = json!({"username": p, "email": ""});
            }
            let score = if h.score.is_finite() {
                h.score.clamp(0.0, 1.0)
            } else {
                0.0
            };
            json!({
                "package": package,
                "score": {
                    "final": score,
                    "detail": {"quality": score, "popularity": 0.0, "maintenance": 0.0},
                },
                "searchScore": score,
            })
        })
        .collect();
    json!({
        "objects": objects,
        "total": total,
        "time": time_http(now),
    })
}

/// `Thu, 01 Jan 2026 00:00:00 GMT`, as the public registry writes `time`.
fn time_http(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[t.weekday().number_days_from_monday() as usize],
        t.day(),
        MONTHS[u8::from(t.month()) as usize - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
