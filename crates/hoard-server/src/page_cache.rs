//! Rendered index pages, kept while the state they show is current.
//! A page is a pure function of the index at a serial, so a key with the
//! serial never goes stale; old serials simply stop being asked for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Pages kept at most; past this the cache starts over, which is cheap
/// next to rendering and keeps memory bounded.
const MAX_PAGES: usize = 4096;

#[derive(Clone)]
pub struct CachedPage {
    pub body: Bytes,
    /// A strong validator: a digest of the body.
    pub etag: String,
}

#[derive(Default)]
pub struct PageCache {
    pages: Mutex<HashMap<String, Arc<CachedPage>>>,
}

impl PageCache {
    /// The page for `key`, rendering it with `render` on a miss.
    pub fn get_or_render<E>(
        &self,
        key: String,
        render: impl FnOnce() -> Result<String, E>,
    ) -> Result<Arc<CachedPage>, E> {
        if let Some(page) = self.lock().get(&key) {
            return Ok(page.clone());
        }
        let body = render()?;
        let digest = hoard_core::Sha256::of(body.as_bytes()).to_hex();
        let page = Arc::new(CachedPage {
            etag: format!("\"{}\"", &digest[..32]),
            body: Bytes::from(body),
        });
        let mut pages = self.lock();
        if pages.len() >= MAX_PAGES {
            pages.clear();
        }
        pages.insert(key, page.clone());
        Ok(page)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<CachedPage>>> {
        self.pages.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_once_per_key() {
        let cache = PageCache::default();
        let mut calls = 0;
        for _ in 0..3 {
            let page = cache
                .get_or_render("k".into(), || {
                    calls += 1;
                    Ok::<_, ()>("body".to_owned())
                })
                .unwrap();
            assert_eq!(page.body, "body");
        }
        assert_eq!(calls, 1);
        let other = cache
            .get_or_render("k2".into(), || Ok::<_, ()>("other".to_owned()))
            .unwrap();
        assert_ne!(
            other.etag,
            cache.get_or_render("k".into(), || Err(())).unwrap().etag
        );
    }
}
