//! The followers subscribed to this node's changelog, as its `/+status`
//! lists them: a status table finds replicas through the nodes they
//! follow. A follower that went away stays listed, as disconnected, for
//! an hour, so that a dead replica shows as down rather than vanishing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hoard_core::Serial;

/// How long a disconnected follower stays listed.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// One follower, as its status entry shows it.
#[derive(Clone, Debug)]
pub struct Subscriber {
    pub node_id: String,
    /// Its public HTTP URL (empty if it did not say).
    pub http_url: String,
    /// The serial its latest subscription started after.
    pub since: Serial,
    /// The last serial sent to it.
    pub sent: Serial,
    pub connected: bool,
    /// Since when it is connected, or disconnected.
    pub for_secs: u64,
}

#[derive(Debug)]
struct Entry {
    http_url: String,
    since: Serial,
    sent: Serial,
    /// Open streams: a follower that reconnects may overlap its old one.
    streams: u32,
    changed: Instant,
}

#[derive(Debug, Default)]
pub struct Subscribers {
    entries: Mutex<BTreeMap<String, Entry>>,
}

impl Subscribers {
    /// Records a subscription; it counts as connected until the returned
    /// guard is dropped.
    pub fn connect(self: &Arc<Self>, node_id: &str, http_url: &str, since: Serial) -> Subscription {
        let mut entries = self.lock();
        let entry = entries.entry(node_id.to_owned()).or_insert_with(|| Entry {
            http_url: String::new(),
            since,
            sent: since,
            streams: 0,
            changed: Instant::now(),
        });
        if !http_url.is_empty() {
            entry.http_url = http_url.to_owned();
        }
        entry.since = since;
        entry.sent = since;
        if entry.streams == 0 {
            entry.changed = Instant::now();
        }
        entry.streams += 1;
        Subscription {
            subscribers: self.clone(),
            node_id: node_id.to_owned(),
        }
    }

    /// Every follower connected now or within the last hour.
    pub fn list(&self) -> Vec<Subscriber> {
        let mut entries = self.lock();
        entries.retain(|_, e| e.streams > 0 || e.changed.elapsed() < FORGET_AFTER);
        entries
            .iter()
            .map(|(node_id, e)| Subscriber {
                node_id: node_id.clone(),
                http_url: e.http_url.clone(),
                since: e.since,
                sent: e.sent,
                connected: e.streams > 0,
                for_secs: e.changed.elapsed().as_secs(),
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A live subscription: records what was sent, and the disconnect when
/// dropped.
pub struct Subscription {
    subscribers: Arc<Subscribers>,
    node_id: String,
}

impl Subscription {
    pub fn sent(&self, serial: Serial) {
        if let Some(e) = self.subscribers.lock().get_mut(&self.node_id) {
            e.sent = e.sent.max(serial);
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(e) = self.subscribers.lock().get_mut(&self.node_id) {
            e.streams = e.streams.saturating_sub(1);
            if e.streams == 0 {
                e.changed = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_is_listed_while_connected_and_as_disconnected_after() {
        let subscribers = Arc::new(Subscribers::default());
        let first = subscribers.connect("r1", "http://r1:4040", Serial(5));
        first.sent(Serial(9));
        let list = subscribers.list();
        assert_eq!(list.len(), 1);
        assert!(list[0].connected);
        assert_eq!((list[0].since, list[0].sent), (Serial(5), Serial(9)));
        assert_eq!(list[0].http_url, "http://r1:4040");
        // A reconnect overlapping the old stream: still connected when the
        // old one ends.
        let second = subscribers.connect("r1", "", Serial(9));
        drop(first);
        assert!(subscribers.list()[0].connected);
        assert_eq!(subscribers.list()[0].http_url, "http://r1:4040");
        drop(second);
        let list = subscribers.list();
        assert!(!list[0].connected);
    }
}
