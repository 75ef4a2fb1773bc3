//! Events end to end on moto: lifecycle changes through the functions, the table's stream read
//! with the SDK and fed to the publisher, an EventBridge rule that routes to an SQS queue, and
//! the events read back. Then faults: nothing is lost when EventBridge fails.

use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use keyward::aws::calls::acting_as;
use keyward::domain::{Actor, create_environment};
use keyward::events::{EventBridgeBus, EventBus, EventsConfig, lambda_event};
use keyward::store::{DynamoStore, KeyStore};
use keyward::testing::api_request;
use keyward::testing::orders_key;
use lambda_http::lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

async fn aws() -> aws_config::SdkConfig {
    keyward::testing::moto_config().await
}

/// A table with an environment, and one key taken through create, rotate, grace change and
/// revoke by the functions' handlers; the revoke is a person's, signed in through an issuer
/// on loopback. Returns the store, the secrets issued and the actions.
async fn table_with_a_lifecycle() -> (DynamoStore, Vec<String>) {
    let mint = keyward::mint();
    let store = keyward::testing::moto_table("events").await.store;
    let now = keyward::now();
    let env = create_environment(
        &keyward::domain::EnvName::parse("production").unwrap(),
        Actor::operator("ops"),
        &mint,
        now,
    );
    store.apply(&env.change).await.expect("an environment");
    let admin = &env.secret;
    let settings = keyward::http::Settings::default();
    let secrets =
        keyward::secrets::SecretsManagerSink::from_config(&keyward::aws::config().await.unwrap());
    let issuer = keyward::testing::Es256Issuer::start();
    let roles = r#"{"platform-admins": {"*": ["*"]}}"#;
    let settings_of_people =
        keyward::oidc::OidcSettings::new(&issuer.issuer, "keyward-console", None, Some(roles))
            .unwrap();
    let people = keyward::oidc::Oidc::new(settings_of_people).unwrap();
    let person = issuer.sign(&issuer.claims(
        "keyward-console",
        "dana",
        &["platform-admins"],
        now.timestamp(),
    ));
    let context = keyward::http::Context {
        store: &store,
        settings: &settings,
        secrets: &secrets,
        mint: &mint,
        usage: &keyward::usage::NotCounted,
        people: &people,
    };
    let created = acting_as(
        "CreateKey",
        create_key::handler(
            context,
            api_request(
                "POST",
                &[("env", "production")],
                &[],
                admin.expose(),
                json!({"name": "worker", "scopes": ["orders:read"]}),
            ),
            keyward::now(),
        ),
    )
    .await;
    assert_eq!(created.status(), 201);
    let created: Value = serde_json::from_slice(created.body().as_ref()).unwrap();
    let id = created["key"]["id"].as_str().unwrap().to_owned();
    let path = [("key_id", id.as_str())];
    let rotated = acting_as(
        "RotateKey",
        rotate_key::handler(
            context,
            api_request(
                "POST",
                &path,
                &[],
                admin.expose(),
                json!({"grace_period": "24h"}),
            ),
            keyward::now(),
        ),
    )
    .await;
    assert_eq!(rotated.status(), 201);
    let rotated: Value = serde_json::from_slice(rotated.body().as_ref()).unwrap();
    let changed = acting_as(
        "ChangeGracePeriod",
        change_grace_period::handler(
            context,
            api_request(
                "PUT",
                &path,
                &[],
                admin.expose(),
                json!({"grace_period": "1h"}),
            ),
            keyward::now(),
        ),
    )
    .await;
    assert_eq!(changed.status(), 200);
    let revoked = acting_as(
        "RevokeKey",
        revoke_key::handler(
            context,
            api_request("POST", &path, &[], &person, json!({})),
            keyward::now(),
        ),
    )
    .await;
    assert_eq!(revoked.status(), 200);
    let secrets = vec![
        admin.expose().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
        rotated["secret"].as_str().unwrap().to_owned(),
    ];
    (store, secrets)
}

/// Every record on the table's stream, oldest first.
async fn stream_records(store: &DynamoStore, aws: &aws_config::SdkConfig) -> Vec<Record> {
    let streams = aws_sdk_dynamodbstreams::Client::new(aws);
    let arn = store
        .stream_arn()
        .await
        .unwrap()
        .expect("the table has a stream");
    let description = streams
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap();
    let mut records = Vec::new();
    for shard in description.stream_description.unwrap().shards() {
        let mut iterator = streams
            .get_shard_iterator()
            .stream_arn(&arn)
            .shard_id(shard.shard_id().unwrap())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator;
        while let Some(it) = iterator {
            let out = streams
                .get_records()
                .shard_iterator(it)
                .send()
                .await
                .unwrap();
            if out.records().is_empty() {
                break;
            }
            records.extend(out.records().iter().cloned());
            iterator = out.next_shard_iterator;
        }
    }
    records
}

/// A bus whose rule sends every keyward event to a fresh SQS queue; returns the bus's name
/// and the queue's URL.
async fn bus_to_queue(aws: &aws_config::SdkConfig) -> (String, String) {
    let (events, sqs) = (
        aws_sdk_eventbridge::Client::new(aws),
        aws_sdk_sqs::Client::new(aws),
    );
    let bus = unique("keyward-bus");
    events.create_event_bus().name(&bus).send().await.unwrap();
    let queue = sqs
        .create_queue()
        .queue_name(unique("keyward-events"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    let arn =
        attributes.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
    events
        .put_rule()
        .name("all-keyward-events")
        .event_bus_name(&bus)
        .event_pattern(json!({"source": ["keyward"]}).to_string())
        .send()
        .await
        .unwrap();
    let target = aws_sdk_eventbridge::types::Target::builder()
        .id("queue")
        .arn(arn)
        .build()
        .unwrap();
    events
        .put_targets()
        .rule("all-keyward-events")
        .event_bus_name(&bus)
        .targets(target)
        .send()
        .await
        .unwrap();
    (bus, queue)
}

/// Reads the queue until it has been empty for a moment.
async fn drain(aws: &aws_config::SdkConfig, queue: &str) -> Vec<Value> {
    let sqs = aws_sdk_sqs::Client::new(aws);
    let mut messages = Vec::new();
    let mut empty_reads = 0;
    while empty_reads < 3 {
        let out = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        if out.messages().is_empty() {
            empty_reads += 1;
        }
        for message in out.messages() {
            messages.push(serde_json::from_str(message.body().unwrap()).unwrap());
            sqs.delete_message()
                .queue_url(queue)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    messages
}

/// The publisher's handler given `records` as Lambda hands them over, its AWS calls recorded
/// as the template's `ActivityPublisher`'s.
async fn publish(
    bus: &dyn EventBus,
    store: &dyn KeyStore,
    records: &[Record],
) -> aws_lambda_events::streams::DynamoDbEventResponse {
    let event = LambdaEvent::new(
        lambda_event(records).expect("records convert to a Lambda event"),
        Context::default(),
    );
    let mint = keyward::mint();
    let handled = activity_publisher::handler(bus, store, &mint, event);
    let Ok(response) = acting_as("ActivityPublisher", handled).await;
    response
}

/// Every event that the table's whole stream so far becomes on a fresh bus, which must take
/// them all, as a queue behind the bus receives them.
async fn published_events(aws: &aws_config::SdkConfig, store: &DynamoStore) -> Vec<Value> {
    let records = stream_records(store, aws).await;
    let (bus, queue) = bus_to_queue(aws).await;
    let publisher = EventBridgeBus::new(
        aws_sdk_eventbridge::Client::new(aws),
        EventsConfig {
            bus,
            source: "keyward".into(),
        },
    );
    let response = publish(&publisher, store, &records).await;
    assert!(failed(&response).is_empty(), "{:?}", failed(&response));
    drain(aws, &queue).await
}

fn failed(response: &aws_lambda_events::streams::DynamoDbEventResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .filter_map(|f| f.item_identifier.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_activity_entry_reaches_an_sqs_queue_through_eventbridge_in_order() {
    let aws = aws().await;
    let (store, secrets) = table_with_a_lifecycle().await;
    let events = published_events(&aws, &store).await;
    let records = stream_records(&store, &aws).await;
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["detail-type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "key.created",
            "key.created",
            "key.rotated",
            "key.grace_period_changed",
            "key.revoked"
        ]
    );
    let outbox = keyward::store::dynamodb::table::OUTBOX_PREFIX;
    let stored: Vec<Value> = records
        .iter()
        .filter(|r| r.event_name.as_ref().map(|n| n.as_str()) == Some("INSERT"))
        .filter_map(|r| r.dynamodb.as_ref()?.new_image.clone())
        .filter(|image| matches!(image.get("pk"), Some(aws_sdk_dynamodbstreams::types::AttributeValue::S(pk)) if pk.starts_with(outbox)))
        .map(|image| serde_dynamo::from_item(image).unwrap())
        .collect::<Vec<keyward::domain::ActivityEntry>>()
        .iter()
        .map(|entry| serde_json::to_value(entry).unwrap())
        .collect();
    assert_eq!(stored.len(), 5);
    for (event, entry) in events.iter().zip(&stored) {
        assert_eq!(event["source"], "keyward");
        assert_eq!(event["detail-type"], entry["action"]);
        assert_eq!(event["detail"], *entry, "the detail is the activity entry");
    }
    assert_eq!(
        events[0]["detail"]["actor"],
        json!({"type": "operator", "id": "ops"})
    );
    assert_eq!(
        events[4]["detail"]["actor"],
        json!({"type": "user", "id": "dana", "name": "dana@example.com"}),
        "a person's change names the person"
    );
    assert_eq!(events[2]["detail"]["grace_period"], "24h");
    assert!(events[3]["detail"]["previous_expires_at"].is_string());
    let text = serde_json::to_string(&events).unwrap();
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "a secret is in an event");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_eventbridge_fails_every_record_is_reported_and_a_rerun_loses_nothing() {
    let aws = aws().await;
    let (store, _) = table_with_a_lifecycle().await;
    let records = stream_records(&store, &aws).await;
    let outbox_records: Vec<String> = records
        .iter()
        .filter(|r| {
            r.dynamodb.as_ref().and_then(|d| d.keys.as_ref()).and_then(|k| k.get("pk")).is_some_and(|pk| {
                matches!(pk, aws_sdk_dynamodbstreams::types::AttributeValue::S(pk) if pk.starts_with("ENVACT#"))
            })
        })
        .filter_map(|r| r.dynamodb.as_ref()?.sequence_number.clone())
        .collect();
    assert_eq!(outbox_records.len(), 5);
    let (bus, queue) = bus_to_queue(&aws).await;

    let missing = EventBridgeBus::new(
        aws_sdk_eventbridge::Client::new(&aws),
        EventsConfig {
            bus: unique("no-such-bus"),
            source: "keyward".into(),
        },
    );
    let response = publish(&missing, &store, &records).await;
    assert_eq!(
        failed(&response),
        outbox_records,
        "a bus that does not exist fails exactly the outbox records"
    );

    let unreachable_config = aws_sdk_eventbridge::config::Builder::from(&aws)
        .endpoint_url("http://127.0.0.1:9")
        .build();
    let unreachable = EventBridgeBus::new(
        aws_sdk_eventbridge::Client::from_conf(unreachable_config),
        EventsConfig {
            bus: bus.clone(),
            source: "keyward".into(),
        },
    );
    let response = publish(&unreachable, &store, &records).await;
    assert_eq!(
        failed(&response),
        outbox_records,
        "an unreachable endpoint fails exactly the outbox records"
    );
    assert!(drain(&aws, &queue).await.is_empty(), "nothing got out");

    let working = EventBridgeBus::new(
        aws_sdk_eventbridge::Client::new(&aws),
        EventsConfig {
            bus,
            source: "keyward".into(),
        },
    );
    let response = publish(&working, &store, &records).await;
    assert!(failed(&response).is_empty());
    let events = drain(&aws, &queue).await;
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e["detail"]["id"].as_str().unwrap())
        .collect();
    let unique_ids: std::collections::HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(
        (ids.len(), unique_ids.len()),
        (5, 5),
        "every event arrives once after the retry"
    );
}

/// Reads the queue until `count` messages have arrived, for at most 30 seconds.
async fn receive(aws: &aws_config::SdkConfig, queue: &str, count: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut messages = Vec::new();
    while messages.len() < count && std::time::Instant::now() < deadline {
        messages.extend(drain(aws, queue).await);
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_dynamodb_publishes_the_stream_as_the_lambda_does() {
    use std::io::{BufRead, BufReader, Read, Write};

    let aws = aws().await;
    let table = unique("serve");
    let created = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["table", "create", &table])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let (bus, queue) = bus_to_queue(&aws).await;
    let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            &format!("dynamodb:{table}"),
            "--no-schedule",
        ])
        .env("KEYWARD_EVENT_BUS", &bus)
        .env_remove("KEYWARD_KEY_PREFIX")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (mut key, mut addr) = (String::new(), String::new());
    for line in BufReader::new(serve.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.starts_with("kw_") {
            key = line;
        } else if let Some(a) = line.strip_prefix("keyward is listening on http://") {
            addr = a.to_owned();
            break;
        }
    }
    let body = json!({"name": "from serve"}).to_string();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "POST /v1/environments/development/keys HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");

    let events = receive(&aws, &queue, 2).await;
    let _ = serve.kill();
    let _ = serve.wait();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["detail"]["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        ["default", "from serve"],
        "the bootstrap key and the new key, published by serve's poller"
    );
    assert!(events.iter().all(|e| e["detail-type"] == "key.created"));
}

/// A key quiet in its grace while its successor is used: the scheduled run records
/// `key.grace_idle` once, and through the table's stream it is one event on the bus. The
/// usage writes that the stream also carries move last use and publish nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_quiet_in_its_grace_is_one_grace_idle_event() {
    use keyward::domain::{GracePeriod, UsageTally, create_key, rotate};
    use keyward::store::UsageStore;

    let aws = aws().await;
    let mint = keyward::mint();
    let store = keyward::testing::moto_table("idle").await.store;
    let now = keyward::now();
    let rotated_at = now - chrono::TimeDelta::hours(3);
    let production = keyward::domain::EnvName::parse("production").unwrap();
    let env = create_environment(&production, Actor::operator("ops"), &mint, rotated_at);
    store.apply(&env.change).await.unwrap();
    let input = orders_key("billing");
    let old = create_key(
        &production,
        input,
        Actor::operator("ops"),
        &mint,
        rotated_at,
    )
    .unwrap();
    store.apply(&old.change).await.unwrap();
    let grace = GracePeriod::parse("7d").unwrap();
    let rotated = rotate(&old.key, grace, Actor::operator("ops"), &mint, rotated_at).unwrap();
    store.apply(&rotated.change).await.unwrap();
    for (key, at) in [
        (&old.key, now - chrono::TimeDelta::hours(2)),
        (&rotated.key, now - chrono::TimeDelta::minutes(5)),
    ] {
        let mut tally = UsageTally::new(key.environment.clone(), key.id.clone());
        tally.count(true, at);
        store.add_usage(&tally).await.unwrap();
    }

    let records = stream_records(&store, &aws).await;
    let (bus, queue) = bus_to_queue(&aws).await;
    let publisher = EventBridgeBus::new(
        aws_sdk_eventbridge::Client::new(&aws),
        EventsConfig {
            bus: bus.clone(),
            source: "keyward".into(),
        },
    );
    let publish_all = |records: Vec<Record>| {
        let (publisher, store) = (&publisher, &store);
        async move {
            let response = publish(publisher, store, &records).await;
            assert!(failed(&response).is_empty(), "{:?}", failed(&response));
        }
    };
    publish_all(records.clone()).await;
    let last = store
        .last_use(&production, &[&old.key.id, &rotated.key.id])
        .await
        .unwrap();
    assert_eq!(last.len(), 2, "the stream carried both keys' last use");

    let rule = Actor::schedule("arn:aws:events:us-east-1:123456789012:rule/keyward-rotation");
    let sink = keyward::secrets::SecretsManagerSink::from_config(&aws);
    for _ in 0..2 {
        let report = scheduled_rotation::run(&store, &sink, &mint, &rule, now)
            .await
            .unwrap();
        assert_eq!(report.failed, 0, "{report:?}");
    }
    let all = stream_records(&store, &aws).await;
    publish_all(all[records.len()..].to_vec()).await;
    let events = drain(&aws, &queue).await;
    let idle: Vec<&Value> = events
        .iter()
        .filter(|e| e["detail-type"] == "key.grace_idle")
        .collect();
    assert_eq!(idle.len(), 1, "{events:?}");
    assert_eq!(idle[0]["detail"]["key_id"], old.key.id.as_str());
    assert_eq!(idle[0]["detail"]["new_key_id"], rotated.key.id.as_str());
    assert_eq!(idle[0]["detail"]["actor"]["type"], "schedule");
    assert!(
        events
            .iter()
            .all(|e| ["key.created", "key.rotated", "key.grace_idle"]
                .contains(&e["detail-type"].as_str().unwrap())),
        "usage publishes nothing: {events:?}"
    );
}

/// A key reported leaked on DynamoDB: its `key.leaked` and its revocation are one event each
/// on the bus, whoever reported it how often, with the reporter's `url` and `source` and
/// never the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_key_is_one_leaked_event_and_one_revoked_event_without_its_secret() {
    use keyward::domain::{LeakDetails, LeakSource, create_key};
    use keyward::leak::{Finding, Reported, Responder};

    let aws = aws().await;
    let mint = keyward::mint();
    let store = keyward::testing::moto_table("leak").await.store;
    let now = keyward::now();
    let production = keyward::domain::EnvName::parse("production").unwrap();
    let env = create_environment(&production, Actor::operator("ops"), &mint, now);
    store.apply(&env.change).await.unwrap();
    let issued = create_key(
        &production,
        orders_key("ci"),
        Actor::operator("ops"),
        &mint,
        now,
    )
    .unwrap();
    store.apply(&issued.change).await.unwrap();
    let sink = keyward::secrets::SecretsManagerSink::from_config(&aws);
    let responder = Responder {
        store: &store,
        secrets: &sink,
        mint: &mint,
        prefix: &keyward::domain::KeyPrefix::default(),
    };
    let details =
        LeakDetails::parse(Some("https://github.com/acme/app/commit/1"), Some("commit")).unwrap();
    let secret = issued.secret.expose().to_owned();
    for _ in 0..3 {
        let reported = Reported::all(&[secret.clone(), secret.clone()], &details);
        let found = responder
            .report(&reported, LeakSource::Report, now)
            .await
            .unwrap();
        assert_eq!(found, [Finding::Key, Finding::Key]);
    }

    let events = published_events(&aws, &store).await;
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["detail-type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types.iter().filter(|t| **t == "key.leaked").count(),
        1,
        "{types:?}"
    );
    assert_eq!(
        types.iter().filter(|t| **t == "key.revoked").count(),
        1,
        "{types:?}"
    );
    let leaked = events
        .iter()
        .find(|e| e["detail-type"] == "key.leaked")
        .unwrap();
    assert_eq!(leaked["detail"]["key_id"], issued.key.id.as_str());
    assert_eq!(
        leaked["detail"]["actor"],
        json!({"type": "system", "id": "report"})
    );
    assert_eq!(
        leaked["detail"]["url"],
        "https://github.com/acme/app/commit/1"
    );
    assert_eq!(leaked["detail"]["source"], "commit");
    for event in &events {
        assert!(!event.to_string().contains(&secret), "{event}");
    }
}
