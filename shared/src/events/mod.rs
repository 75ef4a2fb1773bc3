//! Events: every activity entry goes out on an event bus, through an outbox.
//!
//! A change writes its entry to the table in the same transaction as the change. The table's
//! stream carries the new outbox item to `publish_stream` (feature `dynamodb`), which sends it
//! to the bus and reports the stream records that did not get out, so that only those are
//! retried. Delivery is at least once: a record can be sent again after a partial failure, and
//! consumers deduplicate on the entry's `id`, which is also the detail's `id`.

#[cfg(feature = "eventbridge")]
mod eventbridge;
#[cfg(feature = "dynamodb")]
mod outbox;
#[cfg(feature = "dynamodb-streams")]
mod stream;

use async_trait::async_trait;

#[cfg(feature = "eventbridge")]
pub use eventbridge::EventBridgeBus;
#[cfg(feature = "dynamodb")]
pub use outbox::publish_stream;
#[cfg(feature = "dynamodb-streams")]
pub use stream::lambda_event;

use crate::domain::{ActivityEntry, Timestamp};

/// The most entries one `PutEvents` call takes.
pub const MAX_ENTRIES_PER_CALL: usize = 10;

/// One event for the bus: an activity entry as JSON, under its action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEvent {
    /// The action, such as `key.rotated`: EventBridge's `DetailType`.
    pub detail_type: String,
    /// The entry as JSON: EventBridge's `Detail`.
    pub detail: String,
    /// When the change happened.
    pub time: Timestamp,
}

impl OutgoingEvent {
    /// The event that carries `entry`.
    pub fn of(entry: &ActivityEntry) -> Result<Self, serde_json::Error> {
        Ok(Self {
            detail_type: entry.event.action().as_str().to_owned(),
            detail: serde_json::to_string(entry)?,
            time: entry.at,
        })
    }
}

/// Why one event did not get onto the bus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct PublishError {
    /// The bus's error code, such as `ThrottlingException`, or the call's failure.
    pub code: String,
    /// What the bus said.
    pub message: String,
}

/// Somewhere events go.
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Publishes at most [`MAX_ENTRIES_PER_CALL`] events in one call, and says for each, in
    /// order, whether it got onto the bus. A failed call fails every event in it.
    async fn publish(&self, events: &[OutgoingEvent]) -> Vec<Result<(), PublishError>>;
}

/// Where events go, as `KEYWARD_EVENT_BUS` and `KEYWARD_EVENT_SOURCE` say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// The bus's name or ARN.
    pub bus: String,
    /// The events' `Source`.
    pub source: String,
}

impl EventsConfig {
    /// The variable that names the bus.
    pub const BUS_VAR: &'static str = "KEYWARD_EVENT_BUS";
    /// The variable that names the events' source.
    pub const SOURCE_VAR: &'static str = "KEYWARD_EVENT_SOURCE";

    /// Reads the bus and the source, with their defaults `default` and `keyward`.
    pub fn from_env() -> Result<Self, String> {
        let read = |name: &str, default: &str| match std::env::var(name) {
            Ok(v) if v.is_empty() || v.len() > 1600 => {
                Err(format!("{name} must be 1 to 1600 characters"))
            }
            Ok(v) => Ok(v),
            Err(_) => Ok(default.to_owned()),
        };
        Ok(Self {
            bus: read(Self::BUS_VAR, "default")?,
            source: read(Self::SOURCE_VAR, "keyward")?,
        })
    }
}

/// The mechanism named as the actor of expiries seen in TTL removals.
pub const TTL_ACTOR: &str = "dynamodb-ttl";
