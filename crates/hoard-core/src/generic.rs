use std::str::FromStr;

use crate::CoreError;

/// The longest path a generic repository stores, in bytes.
pub const MAX_GENERIC_PATH_LEN: usize = 1024;
/// The longest segment of such a path, in bytes (what filesystems allow,
/// so that an export can write it).
pub const MAX_GENERIC_SEGMENT_LEN: usize = 255;

/// Where a file lives in a generic repository: `/`-separated segments,
/// relative, each a plain name. A path is also a place on disk (export,
/// `hoard pull`), so nothing in it may climb out of its directory: no
/// empty, `.` or `..` segment, no backslash, no control character. A
/// segment may not start with `+`, which hoard's own paths use (`+at`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GenericPath(String);

impl GenericPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments, first to last.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The last segment: the file's name.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The directories above this path, outermost first, each as a prefix
    /// ending in `/` (`a/`, `a/b/` for `a/b/c`).
    pub fn parent_dirs(&self) -> impl Iterator<Item = &str> {
        self.0.match_indices('/').map(move |(i, _)| &self.0[..=i])
    }

    /// Checks one segment, as a path's and as a directory listing's.
    pub fn check_segment(segment: &str) -> Result<(), CoreError> {
        let why = if segment.is_empty() {
            Some("an empty segment (a leading, doubled or trailing `/`)")
        } else if segment == "." || segment == ".." {
            Some("a `.` or `..` segment")
        } else if segment.starts_with('+') {
            Some("a segment starting with `+`, which hoard's own paths use")
        } else if segment.contains('/') {
            Some("an encoded `/` inside a segment")
        } else if segment.contains('\\') {
            Some("a backslash")
        } else if segment.chars().any(char::is_control) {
            Some("a control character")
        } else if segment.len() > MAX_GENERIC_SEGMENT_LEN {
            Some("a segment longer than 255 bytes")
        } else {
            None
        };
        match why {
            Some(why) => Err(CoreError::InvalidGenericPath {
                path: segment.chars().take(80).collect(),
                why,
            }),
            None => Ok(()),
        }
    }
}

impl FromStr for GenericPath {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |why| CoreError::InvalidGenericPath {
            path: s.chars().take(80).collect(),
            why,
        };
        if s.is_empty() {
            return Err(invalid("it is empty"));
        }
        if s.starts_with('/') {
            return Err(invalid("it is absolute (starts with `/`)"));
        }
        if s.len() > MAX_GENERIC_PATH_LEN {
            return Err(invalid("it is longer than 1024 bytes"));
        }
        for segment in s.split('/') {
            Self::check_segment(segment).map_err(|e| match e {
                CoreError::InvalidGenericPath { why, .. } => invalid(why),
                other => other,
            })?;
        }
        Ok(GenericPath(s.to_owned()))
    }
}

crate::name::checked_string_traits!(GenericPath);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_relative_paths() {
        for ok in [
            "app.box",
            "images/app-1.2.box",
            "a/b/c/d.txt",
            "with space/ü.bin",
            "v1.0/x..y",
            ".hidden",
        ] {
            let path: GenericPath = ok.parse().unwrap();
            assert_eq!(path.as_str(), ok);
        }
    }

    #[test]
    fn refuses_anything_that_could_leave_its_directory() {
        let long_segment = "x".repeat(256);
        let long_path = ["y"; 600].join("/");
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a/./b",
            "a//b",
            "a/",
            "..",
            "a\\..\\b",
            "C:\\x",
            "a/\0b",
            "a/\nb",
            "+at/1/x",
            "a/+ui",
            long_segment.as_str(),
            long_path.as_str(),
        ] {
            assert!(bad.parse::<GenericPath>().is_err(), "{bad:?}");
        }
        let err = "a/../b".parse::<GenericPath>().unwrap_err().to_string();
        assert!(err.contains("`..`"), "{err}");
    }

    #[test]
    fn names_its_parts() {
        let path: GenericPath = "a/b/c.txt".parse().unwrap();
        assert_eq!(path.file_name(), "c.txt");
        assert_eq!(path.parent_dirs().collect::<Vec<_>>(), ["a/", "a/b/"]);
        assert_eq!(path.segments().count(), 3);
        let top: GenericPath = "c.txt".parse().unwrap();
        assert_eq!(top.parent_dirs().count(), 0);
    }

    #[test]
    fn a_stored_path_is_checked_when_read_back() {
        assert!(serde_json::from_str::<GenericPath>(r#""a/../b""#).is_err());
        let back: GenericPath = serde_json::from_str(r#""a/b""#).unwrap();
        assert_eq!(back.as_str(), "a/b");
    }
}
