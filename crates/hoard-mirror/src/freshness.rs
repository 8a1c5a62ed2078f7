//! When each mirrored page was last checked with its upstream. Node-local
//! and in memory: it is how this node saves round trips, not a fact every
//! node must agree on, so it never goes through the changelog (a
//! revalidation that finds nothing new adds no event). After a restart,
//! the first request for a page revalidates it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::Validators;

/// The last check of one page.
#[derive(Clone, Debug)]
pub struct PageState {
    pub checked: Instant,
    /// For the next conditional request.
    pub validators: Validators,
    /// Every upstream answered 404.
    pub not_found: bool,
}

impl PageState {
    /// Whether the page may be served without asking the upstream: a page
    /// for `ttl`, a "not found" for `negative_ttl`.
    pub fn is_fresh(&self, ttl: Duration, negative_ttl: Duration) -> bool {
        let ttl = if self.not_found { negative_ttl } else { ttl };
        self.checked.elapsed() < ttl
    }
}

#[derive(Default)]
pub struct Freshness {
    pages: Mutex<HashMap<String, PageState>>,
}

impl Freshness {
    pub fn get(&self, key: &str) -> Option<PageState> {
        self.lock().get(key).cloned()
    }

    /// The upstream sent the page (or said it had not changed).
    pub fn checked(&self, key: &str, validators: Validators) {
        self.set(key, validators, false);
    }

    /// Every upstream said it has no such page.
    pub fn not_found(&self, key: &str) {
        self.set(key, Validators::default(), true);
    }

    fn set(&self, key: &str, validators: Validators, not_found: bool) {
        self.lock().insert(
            key.to_owned(),
            PageState {
                checked: Instant::now(),
                validators,
                not_found,
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PageState>> {
        self.pages.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_misses_have_their_own_ttl() {
        let f = Freshness::default();
        assert!(f.get("p/a").is_none());
        f.checked("p/a", Validators::default());
        f.not_found("p/b");
        let long = Duration::from_secs(600);
        assert!(f.get("p/a").unwrap().is_fresh(long, Duration::ZERO));
        assert!(!f.get("p/b").unwrap().is_fresh(long, Duration::ZERO));
        assert!(f.get("p/b").unwrap().is_fresh(Duration::ZERO, long));
    }
}
