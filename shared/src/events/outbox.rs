//! The outbox's way out: the table's stream, as Lambda hands it to the publisher, turned into
//! events on the bus and expiries recorded in the table; and each usage write carried to its
//! key's last use.

use aws_lambda_events::dynamodb::{Event as StreamEvent, EventRecord};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};

use super::{EventBus, MAX_ENTRIES_PER_CALL, OutgoingEvent, TTL_ACTOR};
use crate::domain::{Actor, Key, LastUse, Mint, Timestamp, expiry_notice};
use crate::store::dynamodb::{table, usage_owner};
use crate::store::{KeyStore, StoreError, UsageOwner};

impl OutgoingEvent {
    /// The event that carries a stored outbox item as it is, without the table's own
    /// attributes. It is not read into [`ActivityEntry`], so that an entry whose action a
    /// newer writer knows and this publisher does not (during a deploy) still goes out,
    /// unchanged. It needs only a string `action` (the `DetailType`) and an RFC 3339 `at`.
    /// An outbox item holds the entry and the table's `pk` and `sk`, and nothing else; a
    /// table attribute added to outbox items later must be removed here too.
    pub fn stored(mut item: serde_json::Map<String, serde_json::Value>) -> Result<Self, String> {
        for attribute in [table::PK, table::SK] {
            item.remove(attribute);
        }
        let detail_type = item
            .get("action")
            .and_then(serde_json::Value::as_str)
            .filter(|a| (1..=128).contains(&a.len()))
            .ok_or("the outbox item has no action")?
            .to_owned();
        let time = item
            .get("at")
            .and_then(serde_json::Value::as_str)
            .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
            .ok_or("the outbox item has no time")?
            .to_utc();
        let detail = serde_json::to_string(&item).map_err(|e| e.to_string())?;
        Ok(Self {
            detail_type,
            detail,
            time,
        })
    }
}

/// What one stream record asks for.
enum Work {
    /// Nothing: not an outbox insert, nor a TTL removal of a key that expired.
    Nothing,
    /// Send this event.
    Publish(OutgoingEvent),
    /// DynamoDB's TTL removed this expired key's hash item: record `key.expired` in the table,
    /// whose outbox insert then comes down the stream and is published like any entry.
    RecordExpiry(Box<Key>),
    /// A usage item for one hour was written: move its key's last use forward to the hour's.
    RecordLastUse(UsageOwner, LastUse),
}

/// The usage item's key and what its write moved forward: each of the hour's latest minutes
/// that its new image holds later than its old one did, and no later than a minute after the
/// stream recorded the write, so that a time ahead of the clock cannot stick. `None` when the
/// write moved neither (a later write of the same hour that only added counts).
fn last_use(
    record: &EventRecord,
    pk: &str,
) -> Result<Work, Box<dyn std::error::Error + Send + Sync>> {
    #[derive(serde::Deserialize, Default)]
    struct Hour {
        last_used_at: Option<Timestamp>,
        last_refused_at: Option<Timestamp>,
    }
    let owner = usage_owner(pk).ok_or("a usage item whose partition key names no key")?;
    let new: Hour = serde_dynamo::from_item(record.change.new_image.clone())?;
    let old: Hour = serde_dynamo::from_item(record.change.old_image.clone()).unwrap_or_default();
    let written = record.change.approximate_creation_date_time;
    let cap = (written.timestamp() > 0).then(|| written + chrono::TimeDelta::minutes(1));
    let moved = |new: Option<Timestamp>, old: Option<Timestamp>| {
        new.filter(|n| old.is_none_or(|o| *n > o))
            .map(|n| cap.map_or(n, |c| n.min(c)))
    };
    let last = LastUse {
        last_used_at: moved(new.last_used_at, old.last_used_at),
        last_refused_at: moved(new.last_refused_at, old.last_refused_at),
    };
    if last == LastUse::default() {
        return Ok(Work::Nothing);
    }
    Ok(Work::RecordLastUse(owner, last))
}

fn sk_of(record: &EventRecord) -> Option<&str> {
    match record.change.keys.get(table::SK) {
        Some(serde_dynamo::AttributeValue::S(sk)) => Some(sk),
        _ => None,
    }
}

fn pk_of(record: &EventRecord) -> Option<&str> {
    match record.change.keys.get(table::PK) {
        Some(serde_dynamo::AttributeValue::S(pk)) => Some(pk),
        _ => None,
    }
}

fn work(record: &EventRecord) -> Result<Work, Box<dyn std::error::Error + Send + Sync>> {
    let pk = pk_of(record).unwrap_or_default();
    match record.event_name.as_str() {
        "INSERT" if pk.starts_with(table::OUTBOX_PREFIX) => {
            let item: serde_json::Map<String, serde_json::Value> =
                serde_dynamo::from_item(record.change.new_image.clone())?;
            Ok(Work::Publish(OutgoingEvent::stored(item)?))
        }
        "INSERT" | "MODIFY"
            if pk.starts_with(table::USAGE_PREFIX)
                && sk_of(record).is_some_and(|sk| sk.starts_with(table::HOUR_PREFIX)) =>
        {
            // Retrying cannot make a usage record readable, and it must not hold up the
            // shard's events: it is logged and left, and the key's next write carries its use.
            Ok(last_use(record, pk).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "a usage record cannot be read; it is skipped");
                Work::Nothing
            }))
        }
        "REMOVE" if pk.starts_with(table::HASH_PREFIX) => {
            let by_ttl = record.user_identity.as_ref().is_some_and(|u| {
                u.type_ == "Service" && u.principal_id == "dynamodb.amazonaws.com"
            });
            if !by_ttl {
                return Ok(Work::Nothing);
            }
            let key: Key = serde_dynamo::from_item(record.change.old_image.clone())?;
            Ok(Work::RecordExpiry(Box::new(key)))
        }
        _ => Ok(Work::Nothing),
    }
}

/// Publishes what a batch of DynamoDB stream records asks for, and names in
/// `batchItemFailures` exactly the records (by sequence number) that did not get out.
pub async fn publish_stream(
    event: &StreamEvent,
    bus: &dyn EventBus,
    store: &dyn KeyStore,
    mint: &Mint,
    now: Timestamp,
) -> DynamoDbEventResponse {
    let mut failed: Vec<String> = Vec::new();
    let mut outgoing: Vec<(String, OutgoingEvent)> = Vec::new();
    let mut last_uses: std::collections::BTreeMap<UsageOwner, (LastUse, Vec<String>)> =
        std::collections::BTreeMap::new();
    for record in &event.records {
        let id = record
            .change
            .sequence_number
            .clone()
            .unwrap_or_else(|| record.event_id.clone());
        match work(record) {
            Ok(Work::Nothing) => {}
            Ok(Work::Publish(event)) => outgoing.push((id, event)),
            Ok(Work::RecordLastUse(owner, last)) => {
                let (seen, ids) = last_uses.entry(owner).or_default();
                *seen = seen.merge(last);
                ids.push(id);
            }
            Ok(Work::RecordExpiry(key)) => {
                let Some(change) = expiry_notice(&key, Actor::system(TTL_ACTOR), mint, now) else {
                    continue;
                };
                match store.apply(&change).await {
                    Ok(()) | Err(StoreError::Conflict) => {
                        tracing::info!(key_id = %key.id, "expiry recorded")
                    }
                    Err(e) => {
                        tracing::error!(key_id = %key.id, error = %crate::error_chain(&e), "cannot record an expiry");
                        failed.push(id);
                    }
                }
            }
            Err(e) => {
                tracing::error!(record = %id, error = %e, "a stream record cannot be read");
                failed.push(id);
            }
        }
    }
    // One write per usage partition for the whole batch (a key has two while versions that
    // wrote the earlier layout still run), of the latest of its records' minutes; if it
    // fails, every record that asked for it is retried.
    for (owner, (last, ids)) in last_uses {
        if let Err(e) = store.record_last_use(&owner, last).await {
            tracing::error!(key_id = %owner.key_id(), error = %crate::error_chain(&e), "cannot record a last use");
            failed.extend(ids);
        }
    }
    for chunk in outgoing.chunks(MAX_ENTRIES_PER_CALL) {
        let events: Vec<OutgoingEvent> = chunk.iter().map(|(_, e)| e.clone()).collect();
        for ((id, event), result) in chunk.iter().zip(bus.publish(&events).await) {
            if let Err(e) = result {
                tracing::warn!(record = %id, detail_type = %event.detail_type, error = %e, "an event did not get out");
                failed.push(id.clone());
            }
        }
    }
    tracing::info!(
        records = event.records.len(),
        published = outgoing.len(),
        failed = failed.len(),
        "stream batch"
    );
    let mut response = DynamoDbEventResponse::default();
    response.batch_item_failures = failed
        .into_iter()
        .map(|id| {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(id);
            failure
        })
        .collect();
    response
}
