//! Publishes the table's stream: each new outbox item becomes one EventBridge event, and each
//! TTL removal of an expired key becomes a `key.expired` entry (and so, one batch later, an
//! event). The answer names the records that did not get out (`ReportBatchItemFailures`), and
//! Lambda retries the batch from the first of them: records after it that did get out are
//! sent again, so a consumer sees each entry at least once and dedupes on its `id`.

use std::convert::Infallible;

use aws_lambda_events::dynamodb::Event;
use aws_lambda_events::streams::DynamoDbEventResponse;
use keyward::domain::Mint;
use keyward::events::{EventBus, publish_stream};
use keyward::store::KeyStore;
use lambda_http::lambda_runtime::LambdaEvent;

/// The Lambda handler.
pub async fn handler(
    bus: &dyn EventBus,
    store: &dyn KeyStore,
    mint: &Mint,
    event: LambdaEvent<Event>,
) -> Result<DynamoDbEventResponse, Infallible> {
    Ok(publish_stream(&event.payload, bus, store, mint, keyward::now()).await)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use keyward::domain::{
        Action, ActivityEntry, Actor, Change, Event as KeyEvent, Key, KeyId, KeyWrite, LastUse,
    };
    use keyward::events::{OutgoingEvent, PublishError};
    use keyward::store::UsageStore;
    use keyward::store::{ActivityFilter, PageRequest};
    use keyward::testing::seeded;
    use lambda_http::lambda_runtime::Context;
    use serde_json::Value;
    use serde_json::json;

    use super::*;

    const BATCH: &str = include_str!("../fixtures/stream-batch.json");

    /// A bus that records what it is sent, and fails the events whose detail type it is told to.
    #[derive(Default)]
    struct RecordingBus {
        sent: Mutex<Vec<OutgoingEvent>>,
        calls: Mutex<Vec<usize>>,
        failing: Vec<&'static str>,
    }

    #[async_trait]
    impl EventBus for RecordingBus {
        async fn publish(&self, events: &[OutgoingEvent]) -> Vec<Result<(), PublishError>> {
            self.calls.lock().unwrap().push(events.len());
            events
                .iter()
                .map(|e| {
                    if self.failing.contains(&e.detail_type.as_str()) {
                        Err(PublishError {
                            code: "ThrottlingException".into(),
                            message: "slow down".into(),
                        })
                    } else {
                        self.sent.lock().unwrap().push(e.clone());
                        Ok(())
                    }
                })
                .collect()
        }
    }

    fn lambda_event(json: &str) -> LambdaEvent<Event> {
        LambdaEvent::new(
            serde_json::from_str(json).expect("a DynamoDB stream event"),
            Context::default(),
        )
    }

    fn failures(response: &DynamoDbEventResponse) -> Vec<&str> {
        response
            .batch_item_failures
            .iter()
            .filter_map(|f| f.item_identifier.as_deref())
            .collect()
    }

    /// Stores the key whose hash item the batch's TTL removal names, as it was before: the
    /// key item outlives its hash item, and the expiry is recorded on it.
    async fn store_the_removed_key(s: &keyward::testing::Seeded) -> Key {
        let batch: Event = serde_json::from_str(BATCH).unwrap();
        let removal = batch
            .records
            .iter()
            .find(|r| r.event_name == "REMOVE")
            .expect("the batch has a removal");
        let key: Key = serde_dynamo::from_item(removal.change.old_image.clone()).unwrap();
        let created = KeyEvent::Created {
            name: key.name.clone(),
            kind: key.kind,
            scopes: key.scopes.clone(),
            expires_at: None,
            allowed_ips: key.allowed_ips.clone(),
        };
        let change = Change {
            keys: vec![KeyWrite::Insert(key.clone())],
            environment: None,
            secret_claim: None,
            activity: ActivityEntry::new(
                &s.mint,
                &s.environment,
                &key.id,
                Actor::operator("test"),
                created,
                key.created_at,
            ),
        };
        s.store.apply(&change).await.unwrap();
        key
    }

    #[tokio::test]
    async fn an_outbox_insert_is_published_and_a_ttl_removal_is_recorded_as_an_expiry() {
        let s = seeded("production", keyward::now()).await;
        let removed = store_the_removed_key(&s).await;
        let bus = RecordingBus::default();
        let response = handler(&bus, &s.store, &s.mint, lambda_event(BATCH))
            .await
            .unwrap();
        assert!(failures(&response).is_empty());
        let sent = bus.sent.lock().unwrap().clone();
        assert_eq!(
            sent.len(),
            1,
            "only the outbox insert is published; the modify and the user's delete are not"
        );
        assert_eq!(sent[0].detail_type, "key.created");
        let detail: Value = serde_json::from_str(&sent[0].detail).unwrap();
        assert_eq!(detail["id"], "act_08DvEW0000000000000001");
        assert_eq!(detail["actor"]["type"], "api_key");
        assert!(
            detail.get("pk").is_none(),
            "the detail is the entry, not the table item"
        );

        let filter = ActivityFilter {
            action: Some(Action::Expired),
            key_id: None,
        };
        let page = PageRequest {
            limit: 10,
            after: None,
        };
        let expired = s
            .store
            .environment_activity(&s.environment, &filter, &page)
            .await
            .unwrap()
            .items;
        assert_eq!(expired.len(), 1);
        assert_eq!(
            expired[0].key_id,
            KeyId::parse("key_08DvEV00000000000000BB").unwrap()
        );
        assert_eq!(expired[0].actor.id, keyward::events::TTL_ACTOR);
        let stored = s.store.key(&removed.id).await.unwrap().unwrap();
        assert_eq!(
            stored.version,
            removed.version + 1,
            "the key records that its expiry notice is done, so the schedule does not repeat it"
        );

        handler(&bus, &s.store, &s.mint, lambda_event(BATCH))
            .await
            .unwrap();
        let again = s
            .store
            .environment_activity(&s.environment, &filter, &page)
            .await
            .unwrap()
            .items;
        assert_eq!(again, expired, "a retried batch records the expiry once");
    }

    #[tokio::test]
    async fn only_the_records_whose_events_failed_are_named() {
        let s = seeded("production", keyward::now()).await;
        let mut batch: Value = serde_json::from_str(BATCH).unwrap();
        let records = batch["Records"].as_array_mut().unwrap();
        let insert = records[0].clone();
        for (i, action) in ["key.rotated", "key.revoked", "key.rotated"]
            .into_iter()
            .enumerate()
        {
            let mut copy = insert.clone();
            copy["dynamodb"]["SequenceNumber"] = Value::from(format!("50{i}"));
            copy["dynamodb"]["NewImage"]["action"]["S"] = Value::from(action);
            copy["dynamodb"]["NewImage"]["new_key_id"] =
                serde_json::json!({"S": "key_08DvEV00000000000000CC"});
            copy["dynamodb"]["NewImage"]["grace_period"] = serde_json::json!({"S": "24h"});
            copy["dynamodb"]["NewImage"]["previous_expires_at"] = serde_json::json!({"NULL": true});
            copy["dynamodb"]["NewImage"]["expires_at"] =
                serde_json::json!({"S": "2026-11-28T04:00:00.000Z"});
            copy["dynamodb"]["NewImage"]["revoked_at"] =
                serde_json::json!({"S": "2026-11-27T04:00:00.000Z"});
            records.push(copy);
        }
        let bus = RecordingBus {
            failing: vec!["key.rotated"],
            ..RecordingBus::default()
        };
        let response = handler(&bus, &s.store, &s.mint, lambda_event(&batch.to_string()))
            .await
            .unwrap();
        assert_eq!(failures(&response), ["500", "502"]);
        let sent: Vec<String> = bus
            .sent
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.detail_type.clone())
            .collect();
        assert_eq!(sent, ["key.created", "key.revoked"]);
    }

    #[tokio::test]
    async fn a_large_batch_goes_out_ten_entries_per_call() {
        let s = seeded("production", keyward::now()).await;
        let mut batch: Value = serde_json::from_str(BATCH).unwrap();
        let records = batch["Records"].as_array_mut().unwrap();
        let insert = records[0].clone();
        for i in 0..24 {
            let mut copy = insert.clone();
            copy["dynamodb"]["SequenceNumber"] = Value::from(format!("{}", 1000 + i));
            copy["dynamodb"]["NewImage"]["id"]["S"] =
                Value::from(format!("act_08DvEW00000000000001{i:02}"));
            records.push(copy);
        }
        let bus = RecordingBus::default();
        let response = handler(&bus, &s.store, &s.mint, lambda_event(&batch.to_string()))
            .await
            .unwrap();
        assert!(failures(&response).is_empty());
        assert_eq!(*bus.calls.lock().unwrap(), [10, 10, 5]);
        assert_eq!(bus.sent.lock().unwrap().len(), 25);
    }

    #[tokio::test]
    async fn an_action_this_publisher_does_not_know_is_delivered_unchanged() {
        let s = seeded("production", keyward::now()).await;
        let mut batch: Value = serde_json::from_str(BATCH).unwrap();
        let image = &mut batch["Records"][0]["dynamodb"]["NewImage"];
        image["action"]["S"] = Value::from("key.renamed");
        image["previous_name"] = serde_json::json!({"S": "billing"});
        image["detail"] = serde_json::json!({"M": {"reason": {"S": "typo"}, "count": {"N": "2"}}});
        let bus = RecordingBus::default();
        let response = handler(&bus, &s.store, &s.mint, lambda_event(&batch.to_string()))
            .await
            .unwrap();
        assert!(
            failures(&response).is_empty(),
            "a deploy in progress drops nothing"
        );
        let sent = bus.sent.lock().unwrap().clone();
        assert_eq!(sent[0].detail_type, "key.renamed");
        let detail: Value = serde_json::from_str(&sent[0].detail).unwrap();
        assert_eq!(
            detail,
            serde_json::json!({
                "id": "act_08DvEW0000000000000001",
                "at": "2026-11-27T04:00:00.000Z",
                "environment": "production",
                "key_id": "key_08DvEV00000000000000AA",
                "actor": {"type": "api_key", "id": "key_08DvEU00000000000000ZZ"},
                "action": "key.renamed",
                "name": "billing worker",
                "kind": "secret",
                "scopes": ["orders:read"],
                "expires_at": null,
                "previous_name": "billing",
                "detail": {"reason": "typo", "count": 2},
            }),
            "the stored entry as it is, without the table's own attributes"
        );
    }

    #[tokio::test]
    async fn a_record_that_cannot_be_read_is_reported_not_dropped() {
        let s = seeded("production", keyward::now()).await;
        let mut batch: Value = serde_json::from_str(BATCH).unwrap();
        let records = batch["Records"].as_array_mut().unwrap();
        let insert = records[0].clone();
        records.clear();
        for (sequence, field, value) in [
            ("100", "action", serde_json::json!({"N": "7"})),
            ("101", "at", serde_json::json!({"S": "yesterday"})),
            ("102", "action", serde_json::json!({"S": ""})),
        ] {
            let mut record = insert.clone();
            record["dynamodb"]["SequenceNumber"] = Value::from(sequence);
            record["dynamodb"]["NewImage"][field] = value;
            records.push(record);
        }
        let bus = RecordingBus::default();
        let response = handler(&bus, &s.store, &s.mint, lambda_event(&batch.to_string()))
            .await
            .unwrap();
        assert_eq!(failures(&response), ["100", "101", "102"]);
        assert!(bus.sent.lock().unwrap().is_empty());
    }

    /// A usage item for one hour of the partition `pk`, as the stream carries its insert,
    /// change or TTL removal.
    fn usage_record(
        sequence: &str,
        name: &str,
        pk: &str,
        used: Option<&str>,
        refused: Option<&str>,
    ) -> Value {
        let minute = |t: Option<&str>| t.map_or(json!({"NULL": true}), |t| json!({"S": t}));
        let keys = json!({"pk": {"S": pk}, "sk": {"S": "H#2026-11-27T11:00:00.000Z"}});
        let mut image = keys.clone();
        image["accepted"] = json!({"N": "12"});
        image["refused"] = json!({"N": "3"});
        image["ttl"] = json!({"N": "1795000000"});
        image["last_used_at"] = minute(used);
        image["last_refused_at"] = minute(refused);
        stream_record(sequence, name, keys, image)
    }

    /// The stream's record of the item `image` (whose key is `keys`) being inserted, changed
    /// or removed (`name`).
    fn stream_record(sequence: &str, name: &str, keys: Value, image: Value) -> Value {
        let (new, old) = if name == "REMOVE" {
            (json!({}), image)
        } else {
            (image, json!({}))
        };
        json!({
            "eventID": format!("ev-{sequence}"),
            "eventName": name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {
                "Keys": keys,
                "NewImage": new,
                "OldImage": old,
                "SequenceNumber": sequence,
                "SizeBytes": 120,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/keyward/stream/2026-11-27T00:00:00.000",
        })
    }

    /// The item of an hour's seen addresses sits in the usage partition; its writes and its
    /// TTL removal are neither events nor a last use, and fail nothing.
    #[tokio::test]
    async fn a_seen_addresses_write_is_passed_over() {
        let s = seeded("production", keyward::now()).await;
        let pk = format!("USAGE#production#{}", s.key.id);
        let keys = json!({"pk": {"S": pk}, "sk": {"S": "S#2026-11-27T11:00:00.000Z"}});
        let mut image = keys.clone();
        image["ips"] = json!({"SS": ["198.51.100.7", "2001:db8::7"]});
        image["ttl"] = json!({"N": "1795000000"});
        let records: Vec<Value> = [("1", "INSERT"), ("2", "MODIFY"), ("3", "REMOVE")]
            .into_iter()
            .map(|(sequence, name)| stream_record(sequence, name, keys.clone(), image.clone()))
            .collect();
        let batch = json!({"Records": records});
        let bus = RecordingBus::default();
        let response = handler(&bus, &s.store, &s.mint, lambda_event(&batch.to_string()))
            .await
            .unwrap();
        assert!(failures(&response).is_empty());
        assert!(bus.sent.lock().unwrap().is_empty());
        assert!(
            s.store
                .last_use(&s.environment, &[&s.key.id])
                .await
                .unwrap()
                .is_empty(),
            "no last use comes of it"
        );
    }

    #[tokio::test]
    async fn a_usage_write_moves_its_keys_last_use_forward_and_never_back() {
        let s = seeded("production", keyward::now()).await;
        let key = &format!("USAGE#production#{}", s.key.id);
        // Written by a version before usage was kept by environment, during a deploy.
        let unpartitioned = &format!("USAGE#{}", s.key.id);
        let records = [
            usage_record("1", "INSERT", key, Some("2026-11-27T11:05:00.000Z"), None),
            usage_record(
                "2",
                "MODIFY",
                key,
                Some("2026-11-27T11:20:00.000Z"),
                Some("2026-11-27T11:07:00.000Z"),
            ),
            usage_record("3", "MODIFY", key, Some("2026-11-27T11:10:00.000Z"), None),
            usage_record("4", "REMOVE", key, Some("2026-11-27T11:59:00.000Z"), None),
            usage_record(
                "5",
                "INSERT",
                unpartitioned,
                Some("2026-11-27T11:15:00.000Z"),
                Some("2026-11-27T11:30:00.000Z"),
            ),
        ];
        let batch = json!({"Records": records});
        let bus = RecordingBus::default();
        let response = handler(&bus, &s.store, &s.mint, lambda_event(&batch.to_string()))
            .await
            .unwrap();
        assert!(failures(&response).is_empty());
        assert!(bus.sent.lock().unwrap().is_empty(), "usage is not an event");
        let last = s
            .store
            .last_use(&s.environment, &[&s.key.id])
            .await
            .unwrap()[&s.key.id];
        let at = |t: &str| t.parse().ok();
        assert_eq!(
            last,
            LastUse {
                last_used_at: at("2026-11-27T11:20:00Z"),
                last_refused_at: at("2026-11-27T11:30:00Z"),
            },
            "a late write's earlier minute, and TTL's removal, leave it as it was; a write of \
             the layout before usage was kept by environment moves it too"
        );

        let mut ahead = usage_record("6", "MODIFY", key, Some("2099-01-01T00:00:00.000Z"), None);
        ahead["dynamodb"]["ApproximateCreationDateTime"] = json!(1_795_780_800.0);
        let batch = json!({"Records": [ahead]});
        let response = handler(&bus, &s.store, &s.mint, lambda_event(&batch.to_string()))
            .await
            .unwrap();
        assert!(failures(&response).is_empty());
        let last = s
            .store
            .last_use(&s.environment, &[&s.key.id])
            .await
            .unwrap()[&s.key.id];
        assert_eq!(
            last.last_used_at,
            at("2026-11-27T12:01:00Z"),
            "a time ahead of the stream's clock is held to a minute after the write"
        );

        let id = &s.key.id;
        let unreadable: Vec<Value> = [
            "USAGE#key_short".to_owned(),
            format!("USAGE#Production#{id}"),
            format!("USAGE#production#{id}#x"),
        ]
        .iter()
        .map(|pk| usage_record("7", "MODIFY", pk, Some("2026-11-27T13:00:00.000Z"), None))
        .collect();
        let unreadable = json!({"Records": unreadable});
        let response = handler(
            &bus,
            &s.store,
            &s.mint,
            lambda_event(&unreadable.to_string()),
        )
        .await
        .unwrap();
        assert!(
            failures(&response).is_empty(),
            "a usage record that cannot be read is skipped, not retried"
        );
        let last = s.store.last_use(&s.environment, &[id]).await.unwrap()[id];
        assert_eq!(
            last.last_used_at,
            at("2026-11-27T12:01:00Z"),
            "and it moves nothing"
        );
    }
}
