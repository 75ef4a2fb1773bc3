//! One scheduled run over 1,000 keys of which 100 are due: how long it takes, and which
//! DynamoDB and Secrets Manager calls it makes, counted from the requests the SDK sends.
//!
//! `scripts/with-moto cargo bench -p scheduled-rotation --bench scheduled_run`; with
//! `KEYWARD_BENCH_SMOKE=1`, one tiny run (./scripts/test's).
//!
//! Against moto's single-threaded server the time is mostly moto's; the call counts are
//! what DynamoDB and Secrets Manager would bill. The same run on SQLite with the local
//! secrets file shows keyward's own cost.

use std::time::{Duration, Instant};

use chrono::{TimeDelta, TimeZone, Utc};
use keyward::domain::{
    Actor, Change, EnvName, NewKey, RotationPolicy, Timestamp, create_environment, create_key,
};
use keyward::secrets::{FileSink, SecretSink, SecretsManagerSink};
use keyward::store::{DynamoStore, KeyStore, SqliteStore};
use keyward::testing::{Operations, orders_key};
use scheduled_rotation::{Report, run};

/// The variable that makes every bench one tiny run, as ./scripts/test runs them: only to
/// show that it still runs; its figures measure nothing.
const SMOKE: &str = "KEYWARD_BENCH_SMOKE";

/// How many keys, and how many of them due: 1,000 and 100, or 40 and 4 in a smoke run.
fn size() -> (usize, usize) {
    match std::env::var_os(SMOKE) {
        Some(_) => (40, 4),
        None => (1000, 100),
    }
}

fn now() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

/// 1,000 keys with a 30-day policy, of which the first 100 were made 31 days ago. They are
/// written 45 to a change (90 items and the change's activity entry, under DynamoDB's 100
/// per transaction), because moto copies the whole table for every transaction and a
/// thousand of them take minutes and gigabytes.
async fn fill(store: &dyn KeyStore, prefix: &str) {
    let mint = keyward::mint();
    let env = EnvName::parse("production").unwrap();
    let made = now() - TimeDelta::days(400);
    store
        .apply(&create_environment(&env, Actor::operator("bench"), &mint, made).change)
        .await
        .unwrap();
    let mut changes: Vec<Change> = Vec::new();
    let (keys, due) = size();
    for i in 0..keys {
        let age = if i < due { 31 } else { 1 };
        let policy = serde_json::json!({"every": "P30D", "grace_period": "24h", "secret_id": format!("{prefix}/key-{i}")});
        let input = NewKey {
            rotation_policy: Some(RotationPolicy::from_json(&policy).unwrap()),
            ..orders_key(&format!("service-{i}"))
        };
        let at = now() - TimeDelta::days(age) + TimeDelta::milliseconds(i as i64);
        let issued = create_key(&env, input, Actor::operator("bench"), &mint, at).unwrap();
        match changes.last_mut() {
            Some(change) if change.keys.len() < 45 => change.keys.extend(issued.change.keys),
            _ => changes.push(issued.change),
        }
    }
    for change in &changes {
        store.apply(change).await.unwrap();
    }
}

async fn timed(store: &dyn KeyStore, sink: &dyn SecretSink) -> (Report, Duration) {
    let started = Instant::now();
    let report = run(
        store,
        sink,
        &keyward::mint(),
        &Actor::schedule("bench"),
        now(),
    )
    .await
    .unwrap();
    let took = started.elapsed();
    assert_eq!((report.rotated, report.failed), (size().1, 0), "{report:?}");
    (report, took)
}

async fn on_aws(secrets_exist: bool) {
    let config = aws_config::load_from_env().await;
    let (label, slug) = if secrets_exist {
        ("the secrets exist", "existing")
    } else {
        ("first delivery, which creates the secrets", "new")
    };
    let prefix = format!("bench-{slug}-{}", std::process::id());
    // Without the stream that `create_table` adds: moto copies a table, stream records
    // included, for every transaction, which makes filling 1,000 keys quadratic in time and
    // memory (gigabytes). The run reads no stream.
    let seeding = DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), &prefix);
    seeding
        .create_table_request()
        .unwrap()
        .send()
        .await
        .unwrap();
    fill(&seeding, &prefix).await;
    let plain_secrets = aws_sdk_secretsmanager::Client::new(&config);
    if secrets_exist {
        for i in 0..size().1 {
            plain_secrets
                .create_secret()
                .name(format!("{prefix}/key-{i}"))
                .secret_string("{}")
                .send()
                .await
                .unwrap();
        }
    }
    let counter = Operations::default();
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&config)
            .interceptor(counter.clone())
            .build(),
    );
    let secrets = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&config)
            .interceptor(counter.clone())
            .build(),
    );
    let store = DynamoStore::new(dynamodb, &prefix);
    let sink = SecretsManagerSink::new(secrets);
    let (_, took) = timed(&store, &sink).await;
    println!(
        "DynamoDB + Secrets Manager on moto, {label}: {} ms for {} keys, {} due",
        took.as_millis(),
        size().0,
        size().1
    );
    for (operation, count) in counter.counts() {
        println!("  {operation:<26} {count:>5}");
    }
}

async fn on_sqlite() {
    let dir = std::env::temp_dir().join(format!("keyward-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut times = Vec::new();
    let rounds = if std::env::var_os(SMOKE).is_some() {
        1
    } else {
        5
    };
    for round in 0..rounds {
        let store = SqliteStore::in_memory().unwrap();
        fill(&store, "local").await;
        let sink = FileSink::new(dir.join(format!("secrets-{round}.json")));
        times.push(timed(&store, &sink).await.1);
    }
    times.sort();
    println!(
        "SQLite + secrets file: median {} ms of {rounds} runs (min {} ms, max {} ms)",
        times[rounds / 2].as_millis(),
        times[0].as_millis(),
        times[rounds - 1].as_millis()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::main]
async fn main() {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "run it with scripts/with-moto, which starts moto's server on loopback"
    );
    on_sqlite().await;
    on_aws(false).await;
    on_aws(true).await;
}
