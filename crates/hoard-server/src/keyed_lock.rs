//! Per-key async locks: uploads of one filename take turns, so that the
//! losers of a race see the winner's file before they store a blob.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Default)]
pub struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

pub struct KeyedGuard<'a> {
    owner: &'a KeyedLocks,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    pub async fn lock(&self, key: String) -> KeyedGuard<'_> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(key.clone()).or_default().clone()
        };
        KeyedGuard {
            owner: self,
            key,
            guard: Some(lock.lock_owned().await),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().unwrap().len()
    }
}

impl Drop for KeyedGuard<'_> {
    fn drop(&mut self) {
        let mut locks = self.owner.locks.lock().unwrap_or_else(|p| p.into_inner());
        // The map and this guard hold the only references: nobody waits.
        if locks
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) <= 2)
        {
            locks.remove(&self.key);
        }
        self.guard.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_key_waits_and_entries_are_removed() {
        let locks = Arc::new(KeyedLocks::default());
        let first = locks.lock("a".into()).await;
        let other = locks.lock("b".into()).await; // a different key is free
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move {
            let _g = l2.lock("a".into()).await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(first);
        waiter.await.unwrap();
        drop(other);
        assert_eq!(locks.len(), 0);
    }
}
