use std::str::FromStr;

use crate::CoreError;

pub const MAX_REPO_NAME_LEN: usize = 64;

/// A repository name: `[a-z0-9][a-z0-9._-]*`. It is the first path segment
/// of every URL of the repository, so it must never need escaping.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RepoName {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut chars = s.chars();
        let first_ok =
            matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
        if first_ok && rest_ok && s.len() <= MAX_REPO_NAME_LEN {
            Ok(RepoName(s.to_owned()))
        } else {
            Err(CoreError::InvalidRepoName(s.chars().take(80).collect()))
        }
    }
}

/// Display, Debug (quoted) and serde as the string for a newtype over a
/// validated `String`, deserializing through its `FromStr`, so that a
/// stored value is checked again when it is read back.
macro_rules! checked_string_traits {
    ($name:ident) => {
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use checked_string_traits;

checked_string_traits!(RepoName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for ok in ["pypi", "a", "internal-py", "x.y_z", "0abc"] {
            assert!(ok.parse::<RepoName>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_invalid_names() {
        let long = "a".repeat(MAX_REPO_NAME_LEN + 1);
        for bad in ["", "Pypi", "-x", ".x", "a/b", "a b", "+at", long.as_str()] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad}");
        }
    }
}
