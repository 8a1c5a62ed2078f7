//! Every repository's state in memory: a page request reads its
//! repository, and decoding it from sled each time cost more than serving
//! the cached page. Repositories are few and change rarely; any change
//! drops the whole map, and the next read loads it again.

use std::collections::HashMap;
use std::sync::RwLock;

use hoard_core::RepoName;

use super::state::RepoState;

#[derive(Default)]
pub(super) struct RepoCache {
    inner: RwLock<Cached>,
}

#[derive(Default)]
struct Cached {
    /// Moves on every invalidation, so that a map loaded before one is
    /// never kept after it.
    version: u64,
    repos: Option<HashMap<RepoName, RepoState>>,
}

impl RepoCache {
    /// `name`'s state, loading every repository with `load` if the map is
    /// not in memory.
    pub(super) fn get<E>(
        &self,
        name: &RepoName,
        load: impl FnOnce() -> Result<Vec<RepoState>, E>,
    ) -> Result<Option<RepoState>, E> {
        let version = {
            let cached = self.inner.read().unwrap_or_else(|p| p.into_inner());
            if let Some(repos) = &cached.repos {
                return Ok(repos.get(name).cloned());
            }
            cached.version
        };
        let repos: HashMap<RepoName, RepoState> =
            load()?.into_iter().map(|r| (r.name.clone(), r)).collect();
        let found = repos.get(name).cloned();
        let mut cached = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if cached.version == version {
            cached.repos = Some(repos);
        }
        Ok(found)
    }

    /// A repository changed, or the whole state did.
    pub(super) fn invalidate(&self) {
        let mut cached = self.inner.write().unwrap_or_else(|p| p.into_inner());
        cached.version += 1;
        cached.repos = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoard_core::{RepoFormat, RepoSettings, Serial};

    fn state(name: &str) -> RepoState {
        RepoState {
            name: name.parse().unwrap(),
            settings: RepoSettings::hosted(RepoFormat::Pypi),
            created: Serial(1),
        }
    }

    #[test]
    fn loads_once_until_invalidated() {
        let cache = RepoCache::default();
        let a: RepoName = "a".parse().unwrap();
        let mut loads = 0;
        for _ in 0..3 {
            let got = cache.get(&a, || {
                loads += 1;
                Ok::<_, ()>(vec![state("a")])
            });
            assert_eq!(got.unwrap().unwrap().name, a);
        }
        assert_eq!(loads, 1);
        cache.invalidate();
        let got = cache.get(&a, || Ok::<_, ()>(vec![state("b")])).unwrap();
        assert!(got.is_none(), "reloaded after the invalidation");
    }

    #[test]
    fn a_map_loaded_across_an_invalidation_is_not_kept() {
        let cache = RepoCache::default();
        let a: RepoName = "a".parse().unwrap();
        let got = cache
            .get(&a, || {
                // A change lands while the old state is being read.
                cache.invalidate();
                Ok::<_, ()>(vec![state("a")])
            })
            .unwrap();
        assert!(got.is_some());
        let mut loaded_again = false;
        cache
            .get(&a, || {
                loaded_again = true;
                Ok::<_, ()>(vec![])
            })
            .unwrap();
        assert!(loaded_again);
    }
}
