//! What an upstream npm packument adds to a mirror: the versions it has not
//! listed yet, the dist-tags where they moved, and the deprecations that
//! changed. Pure: the server reads the index and records the result through
//! the writer.

use std::collections::{BTreeMap, BTreeSet};

use hoard_core::MirroredNpmVersion;
use hoard_npm::{RefusedVersion, UpstreamPackument, UpstreamVersion};

/// What the mirror holds of one version now.
#[derive(Clone, Debug, Default)]
pub struct KnownNpmVersion {
    /// A non-empty message while deprecated.
    pub deprecated: Option<String>,
}

/// The changes one fetch of a packument brings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NpmRefresh {
    /// Versions to list, in the packument's order.
    pub new_versions: Vec<MirroredNpmVersion>,
    /// Tags to set (to a known or new version) or remove (`None`).
    pub dist_tags: Vec<(String, Option<String>)>,
    /// Known versions whose deprecation changed (`None`: un-deprecated).
    pub deprecations: Vec<(String, Option<String>)>,
    /// Versions of the packument left out, with why.
    pub refused: Vec<RefusedVersion>,
}

impl NpmRefresh {
    /// A revalidation that finds nothing new records nothing.
    pub fn is_empty(&self) -> bool {
        self.new_versions.is_empty() && self.dist_tags.is_empty() && self.deprecations.is_empty()
    }
}

/// Compares `page`, an upstream's packument, with what the mirror lists:
/// `known` versions and the current `tags`. Versions the upstream no longer
/// lists stay (a cached tarball is never removed), and a tag the upstream
/// points at a version the mirror cannot list keeps its current value.
pub fn plan_npm_refresh(
    page: &UpstreamPackument,
    known: &BTreeMap<String, KnownNpmVersion>,
    tags: &BTreeMap<String, String>,
) -> NpmRefresh {
    let mut refresh = NpmRefresh {
        refused: page.refused.clone(),
        ..NpmRefresh::default()
    };
    for v in &page.versions {
        match known.get(&v.version) {
            Some(k) if k.deprecated != v.deprecated => refresh
                .deprecations
                .push((v.version.clone(), v.deprecated.clone())),
            Some(_) => {}
            None => refresh.new_versions.push(mirrored_version(v)),
        }
    }
    let listable: BTreeSet<&str> = known
        .keys()
        .map(String::as_str)
        .chain(refresh.new_versions.iter().map(|v| v.version.as_str()))
        .collect();
    for (tag, version) in &page.dist_tags {
        if listable.contains(version.as_str()) && tags.get(tag) != Some(version) {
            refresh.dist_tags.push((tag.clone(), Some(version.clone())));
        }
    }
    for tag in tags.keys() {
        if !page.dist_tags.contains_key(tag) {
            refresh.dist_tags.push((tag.clone(), None));
        }
    }
    refresh
}

fn mirrored_version(v: &UpstreamVersion) -> MirroredNpmVersion {
    MirroredNpmVersion {
        version: v.version.clone(),
        // Serializing a JSON map cannot fail.
        manifest: serde_json::to_string(&v.manifest).unwrap_or_else(|_| "{}".into()),
        url: v.tarball_url.clone(),
        shasum: v.shasum.clone(),
        integrity: v.integrity.clone(),
        time_us: v
            .published
            .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1000).ok()),
        deprecated: v.deprecated.clone(),
    }
}

#[cfg(test)]
mod tests {
    use hoard_npm::{parse_upstream_packument, PackageName};

    use super::*;

    const SHASUM: &str = "0123456789abcdef0123456789abcdef01234567";

    fn packument(versions: &[(&str, Option<&str>)], tags: &[(&str, &str)]) -> UpstreamPackument {
        let versions: serde_json::Map<String, serde_json::Value> = versions
            .iter()
            .map(|(v, deprecated)| {
                let mut m = serde_json::json!({
                    "name": "demo", "version": v,
                    "dist": {"tarball": format!("https://127.0.0.1/demo-{v}.tgz"), "shasum": SHASUM},
                });
                if let Some(d) = deprecated {
                    m["deprecated"] = (*d).into();
                }
                ((*v).to_owned(), m)
            })
            .collect();
        let tags: serde_json::Map<String, serde_json::Value> = tags
            .iter()
            .map(|(t, v)| ((*t).to_owned(), (*v).into()))
            .collect();
        let doc = serde_json::json!({"name": "demo", "versions": versions, "dist-tags": tags});
        parse_upstream_packument(
            &PackageName::parse("demo").unwrap(),
            doc.to_string().as_bytes(),
        )
        .unwrap()
    }

    fn known(versions: &[(&str, Option<&str>)]) -> BTreeMap<String, KnownNpmVersion> {
        versions
            .iter()
            .map(|(v, d)| {
                (
                    (*v).to_owned(),
                    KnownNpmVersion {
                        deprecated: d.map(str::to_owned),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn the_first_fetch_lists_everything_and_a_revalidation_only_the_difference() {
        let page = packument(&[("1.0.0", None), ("1.1.0", None)], &[("latest", "1.1.0")]);
        let first = plan_npm_refresh(&page, &BTreeMap::new(), &BTreeMap::new());
        assert_eq!(first.new_versions.len(), 2);
        assert_eq!(first.new_versions[0].shasum.as_deref(), Some(SHASUM));
        assert_eq!(
            first.dist_tags,
            [("latest".to_owned(), Some("1.1.0".to_owned()))]
        );
        let tags: BTreeMap<String, String> = [("latest".to_owned(), "1.1.0".to_owned())].into();
        let listed = known(&[("1.0.0", None), ("1.1.0", None)]);
        assert!(plan_npm_refresh(&page, &listed, &tags).is_empty());

        // The upstream publishes 2.0.0, moves latest, adds next, deprecates 1.0.0.
        let page = packument(
            &[("1.0.0", Some("old")), ("1.1.0", None), ("2.0.0", None)],
            &[("latest", "2.0.0"), ("next", "1.1.0")],
        );
        let again = plan_npm_refresh(&page, &listed, &tags);
        let new: Vec<&str> = again
            .new_versions
            .iter()
            .map(|v| v.version.as_str())
            .collect();
        assert_eq!(new, ["2.0.0"]);
        assert_eq!(
            again.dist_tags,
            [
                ("latest".to_owned(), Some("2.0.0".to_owned())),
                ("next".to_owned(), Some("1.1.0".to_owned()))
            ]
        );
        assert_eq!(
            again.deprecations,
            [("1.0.0".to_owned(), Some("old".to_owned()))]
        );
    }

    #[test]
    fn versions_the_upstream_dropped_stay_and_tags_never_point_at_a_refused_version() {
        let mut page = packument(
            &[("1.1.0", None)],
            &[("latest", "1.1.0"), ("beta", "9.0.0")],
        );
        page.refused.push(RefusedVersion {
            version: "9.0.0".into(),
            reason: "hostile".into(),
        });
        let tags: BTreeMap<String, String> = [
            ("latest".to_owned(), "1.0.0".to_owned()),
            ("old".to_owned(), "1.0.0".to_owned()),
        ]
        .into();
        let refresh = plan_npm_refresh(&page, &known(&[("1.0.0", None)]), &tags);
        assert_eq!(refresh.new_versions.len(), 1);
        assert_eq!(
            refresh.dist_tags,
            [
                ("latest".to_owned(), Some("1.1.0".to_owned())),
                ("old".to_owned(), None)
            ]
        );
        assert_eq!(refresh.refused.len(), 1);
    }
}
