//! Pinned requirements files (`pip freeze`, `pip-compile --generate-hashes`,
//! `uv pip compile`): which exact versions, and which file digests, a build
//! will install. For `hoard prefetch`.

use crate::names::{normalize_project_name, normalize_version};

/// One `name==version` line, with its `--hash` pins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedRequirement {
    /// The PEP 503 normalized name.
    pub project: String,
    /// The normalized PEP 440 version.
    pub version: String,
    /// Lowercase hex sha256 digests from `--hash=sha256:…`; empty: any file
    /// of the version.
    pub sha256: Vec<String>,
    /// The line number (1-based) where the requirement starts.
    pub line: usize,
}

/// A line that cannot be prefetched, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequirementProblem {
    pub line: usize,
    pub text: String,
    pub reason: String,
}

/// Reads a requirements file: comments, blank lines and global options
/// (`-i`, `--index-url`, `--extra-index-url`, …) are skipped, and
/// continuation lines joined. Lines that are not an exact pin (`==`) are
/// problems: a prefetch cannot know which file a range would pick.
pub fn parse_requirements(text: &str) -> (Vec<PinnedRequirement>, Vec<RequirementProblem>) {
    let mut pins = Vec::new();
    let mut problems = Vec::new();
    for (line, logical) in logical_lines(text) {
        let problem = |reason: &str| RequirementProblem {
            line,
            text: logical.clone(),
            reason: reason.to_owned(),
        };
        if logical.starts_with('-') {
            // `-r other.txt` and `-e` would need files or builds.
            if logical.starts_with("-r") || logical.starts_with("--requirement") {
                problems.push(problem("nested requirements files are not read"));
            } else if logical.starts_with("-e") || logical.starts_with("--editable") {
                problems.push(problem("an editable install is not an index file"));
            }
            continue;
        }
        match parse_pin(&logical) {
            Ok((project, version, sha256)) => pins.push(PinnedRequirement {
                project,
                version,
                sha256,
                line,
            }),
            Err(reason) => problems.push(problem(&reason)),
        }
    }
    (pins, problems)
}

/// Lines with comments removed and `\` continuations joined, each with
/// the number of its first physical line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        // A `#` starts a comment at the line start or after whitespace.
        let without_comment = match raw.find(" #").or_else(|| raw.starts_with('#').then_some(0)) {
            Some(at) => &raw[..at],
            None => raw,
        };
        if current.is_empty() {
            start = i + 1;
        }
        let (body, continued) = match without_comment.trim_end().strip_suffix('\\') {
            Some(body) => (body, true),
            None => (without_comment, false),
        };
        current.push_str(body.trim());
        current.push(' ');
        if !continued {
            let logical = current.trim().to_owned();
            if !logical.is_empty() {
                out.push((start, logical));
            }
            current.clear();
        }
    }
    let logical = current.trim().to_owned();
    if !logical.is_empty() {
        out.push((start, logical));
    }
    out
}

fn parse_pin(line: &str) -> Result<(String, String, Vec<String>), String> {
    let mut words = line.split_whitespace();
    let spec = words.next().unwrap_or_default();
    let mut sha256 = Vec::new();
    for word in words {
        let Some(hash) = word
            .strip_prefix("--hash=")
            .or_else(|| word.strip_prefix("--hash:"))
        else {
            continue;
        };
        match hash.split_once(':') {
            Some(("sha256", hex))
                if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                sha256.push(hex.to_ascii_lowercase())
            }
            Some(("sha256", _)) => return Err(format!("{hash:?} is not a sha256 digest")),
            // Other algorithms cannot be checked against an index's sha256.
            _ => {}
        }
    }
    // Markers (`; python_version < "3.9"`) do not change what to fetch.
    let spec = spec.split(';').next().unwrap_or_default();
    let Some((name, version)) = spec.split_once("==") else {
        return Err("not pinned to one version with ==".to_owned());
    };
    if version.starts_with('=') || version.contains(',') || version.contains('*') {
        return Err("not pinned to one version with ==".to_owned());
    }
    let name = name.split('[').next().unwrap_or_default().trim();
    if name.is_empty() || !crate::is_valid_project_name(name) {
        return Err(format!("{name:?} is not a project name"));
    }
    let version = normalize_version(version.trim()).map_err(|e| e.to_string())?;
    Ok((normalize_project_name(name), version, sha256))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

    #[test]
    fn pins_hashes_continuations_and_comments() {
        let text = format!(
            "# generated\n--index-url http://x.test/simple/\n\n\
             Foo_Bar[extra]==1.0 \\\n    --hash=sha256:{A} \\\n    --hash=sha256:{B}\n\
             baz==2.0.0 ; python_version >= \"3.8\"  # why\n\
             qux==3\n"
        );
        let (pins, problems) = parse_requirements(&text);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            pins,
            vec![
                PinnedRequirement {
                    project: "foo-bar".into(),
                    version: "1.0".into(),
                    sha256: vec![A.into(), B.to_ascii_lowercase()],
                    line: 4,
                },
                PinnedRequirement {
                    project: "baz".into(),
                    version: "2.0.0".into(),
                    sha256: vec![],
                    line: 7,
                },
                PinnedRequirement {
                    project: "qux".into(),
                    version: "3".into(),
                    sha256: vec![],
                    line: 8,
                },
            ]
        );
    }

    #[test]
    fn what_cannot_be_prefetched_is_a_problem_with_a_reason() {
        let text = "a>=1.0\nb==1.*\n-r other.txt\n-e ./local\nc==1.0 --hash=sha256:xyz\nd===1.0\n";
        let (pins, problems) = parse_requirements(text);
        assert!(pins.is_empty(), "{pins:?}");
        let lines: Vec<(usize, bool)> = problems
            .iter()
            .map(|p| (p.line, !p.reason.is_empty()))
            .collect();
        assert_eq!(
            lines,
            [
                (1, true),
                (2, true),
                (3, true),
                (4, true),
                (5, true),
                (6, true)
            ]
        );
        assert!(problems[0].reason.contains("not pinned"));
        assert!(problems[4].reason.contains("not a sha256"));
    }
}
