//! Reading PEP 503 (HTML) simple pages.

/// One `<a …>text</a>` of a simple page.
#[derive(Clone, Debug)]
pub struct Anchor {
    /// Attributes in order; a value-less attribute (`data-yanked`) has None.
    /// Values are HTML-unescaped.
    pub attrs: Vec<(String, Option<String>)>,
    pub text: String,
}

impl Anchor {
    /// `Some(value)` if the attribute is present (value "" when it has none).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    pub fn has_attr(&self, name: &str) -> bool {
        self.attr(name).is_some()
    }

    pub fn href(&self) -> &str {
        self.attr("href").unwrap_or("")
    }
}

/// Unescape the HTML character references that simple pages use.
pub fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let ent = &rest[1..end];
        let ch = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ if ent.starts_with("#x") || ent.starts_with("#X") => {
                u32::from_str_radix(&ent[2..], 16)
                    .ok()
                    .and_then(char::from_u32)
            }
            _ if ent.starts_with('#') => ent[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// All anchors of an HTML page (a small parser, enough for simple pages).
pub fn anchors(html: &str) -> Vec<Anchor> {
    let mut out = Vec::new();
    let lower = html.to_ascii_lowercase();
    let mut pos = 0;
    while let Some(i) = lower[pos..].find("<a") {
        let start = pos + i + 2;
        // `<a` followed by whitespace or `>`
        match lower.as_bytes().get(start) {
            Some(b) if b.is_ascii_whitespace() || *b == b'>' => {}
            _ => {
                pos = start;
                continue;
            }
        }
        let (attrs, after) = parse_attrs(html, start);
        let close = lower[after..]
            .find("</a>")
            .map(|j| after + j)
            .unwrap_or(html.len());
        out.push(Anchor {
            attrs,
            text: unescape(html[after..close].trim()),
        });
        pos = close;
    }
    out
}

/// Parse attributes from `start` up to `>`; returns them and the index after
/// the `>`.
fn parse_attrs(html: &str, start: usize) -> (Vec<(String, Option<String>)>, usize) {
    let b = html.as_bytes();
    let mut i = start;
    let mut attrs = Vec::new();
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            return (attrs, i);
        }
        if b[i] == b'>' {
            return (attrs, i + 1);
        }
        if b[i] == b'/' {
            i += 1;
            continue;
        }
        let name_start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'=' && b[i] != b'>' {
            i += 1;
        }
        let name = html[name_start..i].to_ascii_lowercase();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            let value = if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                let q = b[i];
                let vs = i + 1;
                let mut j = vs;
                while j < b.len() && b[j] != q {
                    j += 1;
                }
                i = (j + 1).min(b.len());
                &html[vs..j.min(b.len())]
            } else {
                let vs = i;
                while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                    i += 1;
                }
                &html[vs..i]
            };
            attrs.push((name, Some(unescape(value))));
        } else {
            attrs.push((name, None));
        }
    }
}

/// The anchor whose text is `filename`, if any.
pub fn anchor_for<'a>(anchors: &'a [Anchor], filename: &str) -> Option<&'a Anchor> {
    anchors.iter().find(|a| a.text == filename)
}

/// The file anchors' texts (filenames).
pub fn filenames(html: &str) -> Vec<String> {
    anchors(html).into_iter().map(|a| a.text).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_simple_page() {
        let html = r#"<!DOCTYPE html><html><body>
<a href="../../files/demo/demo-1.0-py3-none-any.whl#sha256=ab" data-requires-python="&gt;=3.8" data-yanked data-core-metadata="sha256=cd">demo-1.0-py3-none-any.whl</a><br/>
<a href='x.tar.gz'>x.tar.gz</a>
</body></html>"#;
        let a = anchors(html);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].text, "demo-1.0-py3-none-any.whl");
        assert_eq!(a[0].attr("data-requires-python"), Some(">=3.8"));
        assert!(a[0].has_attr("data-yanked"));
        assert_eq!(a[0].attr("data-yanked"), Some(""));
        assert_eq!(a[0].attr("data-core-metadata"), Some("sha256=cd"));
        assert_eq!(a[1].href(), "x.tar.gz");
        assert!(!a[1].has_attr("data-yanked"));
    }
}
