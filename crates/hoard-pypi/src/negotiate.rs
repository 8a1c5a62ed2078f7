//! PEP 691 content negotiation for the Simple API.

/// A representation of a Simple API page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimpleFormat {
    /// PEP 691 JSON, `application/vnd.pypi.simple.v1+json`.
    JsonV1,
    /// PEP 503 HTML served as `application/vnd.pypi.simple.v1+html`.
    HtmlV1,
    /// PEP 503 HTML served as `text/html` (legacy clients, browsers).
    Html,
}

impl SimpleFormat {
    /// The `Content-Type` of a response in this format. Responses negotiated
    /// on `Accept` should also carry `Vary: Accept`.
    pub fn content_type(self) -> &'static str {
        match self {
            SimpleFormat::JsonV1 => "application/vnd.pypi.simple.v1+json",
            SimpleFormat::HtmlV1 => "application/vnd.pypi.simple.v1+html",
            SimpleFormat::Html => "text/html",
        }
    }

    /// Is this format JSON (else HTML)?
    pub fn is_json(self) -> bool {
        self == SimpleFormat::JsonV1
    }
}

/// The formats, in order of preference for explicit (non-wildcard) matches.
const FORMATS: [SimpleFormat; 3] = [
    SimpleFormat::JsonV1,
    SimpleFormat::HtmlV1,
    SimpleFormat::Html,
];

/// How specifically a media range names a format: higher is more specific.
fn specificity(range_type: &str, range_sub: &str, format: SimpleFormat) -> Option<u8> {
    let (t, subs): (&str, &[&str]) = match format {
        SimpleFormat::JsonV1 => (
            "application",
            &["vnd.pypi.simple.v1+json", "vnd.pypi.simple.latest+json"],
        ),
        SimpleFormat::HtmlV1 => (
            "application",
            &["vnd.pypi.simple.v1+html", "vnd.pypi.simple.latest+html"],
        ),
        SimpleFormat::Html => ("text", &["html"]),
    };
    match (range_type, range_sub) {
        ("*", "*") => Some(0),
        (rt, "*") if rt == t => Some(1),
        (rt, rs) if rt == t && subs.contains(&rs) => Some(2),
        _ => None,
    }
}

/// Parses a q-value: `0` to `1` with at most three decimals, in thousandths.
fn parse_q(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_value = format!("{frac:0<3}").parse::<u16>().ok()?;
    match int {
        "0" => Some(frac_value),
        "1" if frac_value == 0 => Some(1000),
        _ => None,
    }
}

/// One media range of an Accept header: (type, subtype, q in thousandths).
fn parse_range(range: &str) -> Option<(String, String, u16)> {
    let mut parts = range.split(';');
    let media = parts.next()?.trim().to_ascii_lowercase();
    let (t, s) = media.split_once('/')?;
    let (t, s) = (t.trim(), s.trim());
    if t.is_empty() || s.is_empty() || (t == "*" && s != "*") {
        return None;
    }
    let mut q = 1000;
    for param in parts {
        if let Some((k, v)) = param.split_once('=') {
            if k.trim().eq_ignore_ascii_case("q") {
                q = parse_q(v.trim())?;
            }
        }
    }
    Some((t.to_owned(), s.to_owned(), q))
}

/// Picks the Simple API format for a request (PEP 691).
///
/// `format_query` is the `?format=` URL parameter; when present and
/// non-empty it replaces the `Accept` header. The value is read as an Accept
/// header: media ranges with q-values; `q=0` means "not acceptable". Each
/// format takes the q of the most specific range that matches it; the
/// highest q wins. Ties go to JSON v1, then HTML v1, then `text/html` for
/// explicit matches, and to `text/html` for wildcard matches, so a missing
/// header, an empty one, one without a valid range, or `*/*` gives
/// [`SimpleFormat::Html`]. `None` means nothing acceptable: answer 406.
pub fn negotiate(accept: Option<&str>, format_query: Option<&str>) -> Option<SimpleFormat> {
    let header = match format_query.map(str::trim).filter(|f| !f.is_empty()) {
        Some(f) => f,
        None => accept.unwrap_or(""),
    };
    let ranges: Vec<(String, String, u16)> = header.split(',').filter_map(parse_range).collect();
    if ranges.is_empty() {
        return Some(SimpleFormat::Html);
    }

    // For each format: (q, specificity, tie-break rank); larger wins.
    let mut best: Option<((u16, u8, u8), SimpleFormat)> = None;
    for (i, format) in FORMATS.into_iter().enumerate() {
        let Some((q, spec)) = ranges
            .iter()
            .filter_map(|(t, s, q)| specificity(t, s, format).map(|spec| (*q, spec)))
            .max_by_key(|(q, spec)| (*spec, *q))
        else {
            continue;
        };
        if q == 0 {
            continue;
        }
        let rank = if spec == 2 { 2 - i as u8 } else { i as u8 };
        let key = (q, spec, rank);
        if best.is_none_or(|(k, _)| key > k) {
            best = Some((key, format));
        }
    }
    best.map(|(_, f)| f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use SimpleFormat::*;

    const PIP: &str = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";
    const UV: &str = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01";
    const FIREFOX: &str =
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";
    const CHROME: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7";

    fn n(accept: &str) -> Option<SimpleFormat> {
        negotiate(Some(accept), None)
    }

    #[test]
    fn content_types() {
        assert_eq!(JsonV1.content_type(), "application/vnd.pypi.simple.v1+json");
        assert_eq!(HtmlV1.content_type(), "application/vnd.pypi.simple.v1+html");
        assert_eq!(Html.content_type(), "text/html");
        assert!(JsonV1.is_json() && !Html.is_json() && !HtmlV1.is_json());
    }

    #[test]
    fn real_clients() {
        assert_eq!(n(PIP), Some(JsonV1));
        assert_eq!(n(UV), Some(JsonV1));
        assert_eq!(n(FIREFOX), Some(Html));
        assert_eq!(n(CHROME), Some(Html));
        // Old pip sends no Accept at all.
        assert_eq!(negotiate(None, None), Some(Html));
        assert_eq!(n("*/*"), Some(Html));
        assert_eq!(n(""), Some(Html));
        assert_eq!(n("text/html"), Some(Html));
        // curl
        assert_eq!(n("*/*;q=0.5"), Some(Html));
    }

    #[test]
    fn q_values_decide() {
        assert_eq!(
            n("application/vnd.pypi.simple.v1+json;q=0.5, text/html"),
            Some(Html)
        );
        assert_eq!(
            n("application/vnd.pypi.simple.v1+html, application/vnd.pypi.simple.v1+json;q=0.9"),
            Some(HtmlV1)
        );
        // Wildcard-only matches prefer the HTML forms.
        assert_eq!(n("text/html;q=0.3, */*;q=0.5"), Some(HtmlV1));
        assert_eq!(n("application/*"), Some(HtmlV1));
        assert_eq!(n("text/*"), Some(Html));
    }

    #[test]
    fn ties_prefer_json_then_html_v1() {
        assert_eq!(
            n("text/html, application/vnd.pypi.simple.v1+html, application/vnd.pypi.simple.v1+json"),
            Some(JsonV1)
        );
        assert_eq!(
            n("text/html, application/vnd.pypi.simple.v1+html"),
            Some(HtmlV1)
        );
        // An explicit match beats a wildcard at the same q.
        assert_eq!(n("*/*, application/vnd.pypi.simple.v1+json"), Some(JsonV1));
        assert_eq!(n("application/vnd.pypi.simple.v1+html, */*"), Some(HtmlV1));
    }

    #[test]
    fn q_zero_is_not_acceptable() {
        assert_eq!(n("application/vnd.pypi.simple.v1+json;q=0"), None);
        assert_eq!(n("text/html;q=0, */*"), Some(HtmlV1));
        assert_eq!(
            n("*/*, text/html;q=0, application/vnd.pypi.simple.v1+html;q=0.000"),
            Some(JsonV1)
        );
        assert_eq!(n("*/*;q=0"), None);
        assert_eq!(n("application/json"), None);
        assert_eq!(n("image/png, application/xml;q=0.9"), None);
    }

    #[test]
    fn latest_aliases_and_case() {
        assert_eq!(n("application/vnd.pypi.simple.latest+json"), Some(JsonV1));
        assert_eq!(n("application/vnd.pypi.simple.latest+html"), Some(HtmlV1));
        assert_eq!(
            n("Application/VND.PyPI.Simple.V1+JSON; Q=1.0"),
            Some(JsonV1)
        );
        assert_eq!(n("text/html; charset=utf-8"), Some(Html));
    }

    #[test]
    fn invalid_ranges_are_ignored() {
        assert_eq!(
            n("application/vnd.pypi.simple.v1+json;q=2, text/html;q=0.5"),
            Some(Html)
        );
        assert_eq!(
            n("application/vnd.pypi.simple.v1+json;q=abc, text/html;q=0.5"),
            Some(Html)
        );
        assert_eq!(n("garbage"), Some(Html));
        assert_eq!(n(",,, ;q=1"), Some(Html));
        assert_eq!(n("*/html"), Some(Html));
    }

    #[test]
    fn format_query_overrides_accept() {
        assert_eq!(negotiate(Some(PIP), Some("text/html")), Some(Html));
        assert_eq!(
            negotiate(None, Some("application/vnd.pypi.simple.v1+json")),
            Some(JsonV1)
        );
        assert_eq!(
            negotiate(
                Some("text/html"),
                Some("application/vnd.pypi.simple.latest+html")
            ),
            Some(HtmlV1)
        );
        assert_eq!(negotiate(Some(PIP), Some("application/json")), None);
        assert_eq!(negotiate(Some(PIP), Some("")), Some(JsonV1));
    }

    #[test]
    fn parses_q_values() {
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("0.1"), Some(100));
        assert_eq!(parse_q("0.01"), Some(10));
        assert_eq!(parse_q("0.001"), Some(1));
        assert_eq!(parse_q("0"), Some(0));
        assert_eq!(parse_q("0."), Some(0));
        for bad in ["1.5", "2", "0.0001", "-0.5", "", "abc", "0.a", "01"] {
            assert_eq!(parse_q(bad), None, "{bad}");
        }
    }
}
