//! The changelog: events in serial order as their exact bytes, the event
//! format version, and the chained digest that two nodes compare.

use hoard_core::{Event, Serial, Sha256};
use serde::{Deserialize, Serialize};

use super::keys::{decode, encode, serial_from};
use super::Index;
use crate::StoreError;

/// An event as another node's changelog stores it: decoded once, with
/// the bytes it was decoded from, which are what this node stores too.
pub struct ReceivedEvent {
    event: Event,
    bytes: Vec<u8>,
}

/// The format of events this node writes and understands. An event
/// carries it as `"v"`; a node refuses events of a newer format, or of a
/// kind it does not know, so that a mixed-version cluster fails loudly
/// instead of applying half of a change.
pub const EVENT_FORMAT: u32 = 1;

#[derive(Serialize)]
struct VersionedEvent<'a> {
    v: u32,
    #[serde(flatten)]
    event: &'a Event,
}

#[derive(Deserialize)]
struct EventVersion {
    #[serde(default)]
    v: Option<u32>,
}

pub(super) fn encode_event(event: &Event) -> Vec<u8> {
    encode(&VersionedEvent {
        v: EVENT_FORMAT,
        event,
    })
}

pub(super) fn decode_event(bytes: &[u8]) -> Result<Event, StoreError> {
    let version: EventVersion = decode("an incoming event", bytes)?;
    match version.v {
        Some(v) if v > EVENT_FORMAT => {
            return Err(StoreError::Corrupt(format!(
                "an event of format {v}, newer than this node's format {EVENT_FORMAT}: \
                 upgrade this node"
            )))
        }
        _ => {}
    }
    serde_json::from_slice(bytes).map_err(|e| {
        StoreError::Corrupt(format!(
            "an event this node cannot read (a kind it does not know? upgrade this node): {e}"
        ))
    })
}

impl ReceivedEvent {
    pub fn decode(bytes: Vec<u8>) -> Result<Self, StoreError> {
        let event = decode_event(&bytes)?;
        Ok(ReceivedEvent { event, bytes })
    }

    /// Encodes an event made on this node, as every node will store it.
    pub fn encode(event: Event) -> Self {
        let bytes = encode_event(&event);
        ReceivedEvent { event, bytes }
    }

    pub fn event(&self) -> &Event {
        &self.event
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The chained digest after applying `event_bytes` at `serial`: equal on
/// two nodes exactly when they applied the same events.
pub(super) fn chain_digest(prev: &[u8; 32], serial: Serial, event_bytes: &[u8]) -> [u8; 32] {
    let mut hasher = hoard_core::Sha256Hasher::new();
    hasher.update(prev);
    hasher.update(&serial.0.to_be_bytes());
    hasher.update(event_bytes);
    *hasher.finish().as_bytes()
}

impl Index {
    /// The event at `serial`, as stored.
    pub fn event(&self, serial: Serial) -> Result<Option<Event>, StoreError> {
        match self.changelog.get(serial.0.to_be_bytes())? {
            Some(bytes) => decode("changelog", &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Up to `limit` events after `since`, as stored, in serial order.
    pub fn raw_events(
        &self,
        since: Serial,
        limit: usize,
    ) -> Result<Vec<(Serial, Vec<u8>)>, StoreError> {
        self.changelog
            .range((since.0 + 1).to_be_bytes()..)
            .take(limit)
            .map(|item| {
                let (key, value) = item?;
                Ok((serial_from(Some(key))?, value.to_vec()))
            })
            .collect()
    }

    /// Events after `since`, in serial order.
    pub fn events_since(
        &self,
        since: Serial,
    ) -> impl Iterator<Item = Result<(Serial, Event), StoreError>> + '_ {
        self.changelog
            .range((since.0 + 1).to_be_bytes()..)
            .map(|item| {
                let (key, value) = item?;
                let serial = serial_from(Some(key))?;
                Ok((serial, decode("changelog", &value)?))
            })
    }

    /// Events at or before `upto`, newest first.
    pub fn events_back_from(
        &self,
        upto: Serial,
    ) -> impl Iterator<Item = Result<(Serial, Event), StoreError>> + '_ {
        self.changelog
            .range(..=upto.0.to_be_bytes())
            .rev()
            .map(|item| {
                let (key, value) = item?;
                let serial = serial_from(Some(key))?;
                Ok((serial, decode("changelog", &value)?))
            })
    }

    /// Walks the changelog: serials must be dense from 1 to the applied
    /// serial, every event must decode, and the chained digest must match.
    /// Returns the number of events and the problems found.
    pub fn verify_changelog(&self) -> Result<(u64, Vec<String>), StoreError> {
        let applied = self.applied_serial()?;
        let mut problems = Vec::new();
        let mut digest = [0u8; 32];
        let mut expected = Serial(1);
        let mut count = 0;
        for item in self.changelog.iter() {
            let (key, value) = item?;
            let serial = serial_from(Some(key))?;
            if serial != expected {
                problems.push(format!(
                    "changelog: expected serial {expected}, found {serial}"
                ));
            }
            if let Err(e) = decode_event(&value) {
                problems.push(format!("changelog: event {serial} does not decode: {e}"));
            }
            digest = chain_digest(&digest, serial, &value);
            expected = serial.next();
            count += 1;
        }
        if count != applied.0 {
            problems.push(format!(
                "changelog has {count} events but the applied serial is {applied}"
            ));
        }
        if Sha256::from_bytes(digest) != self.digest()? {
            problems.push("changelog digest does not match the recorded digest".into());
        }
        Ok((count, problems))
    }
}
