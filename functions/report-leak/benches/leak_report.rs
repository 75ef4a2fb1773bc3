//! A leak report of 1,000 live keys: how long keyward takes to answer it, the same report
//! again, and 1,000 strings that are no key; and on DynamoDB which calls it makes, counted
//! from the requests the SDK sends.
//!
//! `scripts/with-moto cargo bench -p report-leak --bench leak_report`; with
//! `KEYWARD_BENCH_SMOKE=1`, one tiny run (./scripts/test's).
//!
//! SQLite in memory shows keyward's own work. Against moto's single-threaded server the time
//! is mostly moto's (it copies the table for every transaction); the call counts are what
//! DynamoDB would be sent, and they bound a report's time there.

use std::time::{Duration, Instant};

use keyward::domain::{
    Actor, Change, EnvName, KeyPrefix, LeakDetails, LeakSource, Mint, create_environment,
    create_key,
};
use keyward::leak::{Findings, Reported, Responder};
use keyward::secrets::NoSecrets;
use keyward::store::{DynamoStore, KeyStore, SqliteStore};
use keyward::testing::orders_key;

/// The variable that makes the bench one tiny run, as ./scripts/test runs it: only to show
/// that it still runs; its figures measure nothing.
const SMOKE: &str = "KEYWARD_BENCH_SMOKE";

/// How many keys a report holds, on SQLite and on moto: 1,000 and 100, or 20 and 4.
fn size() -> (usize, usize) {
    match std::env::var_os(SMOKE) {
        Some(_) => (20, 4),
        None => (1000, 100),
    }
}

/// `keys` live secret keys in a fresh environment, written 45 to a change (DynamoDB takes up to
/// 100 items in a transaction), and their secrets.
async fn fill(store: &dyn KeyStore, mint: &Mint, keys: usize) -> Vec<String> {
    let env = EnvName::parse("production").unwrap();
    let now = keyward::now();
    let made = create_environment(&env, Actor::operator("bench"), mint, now);
    store.apply(&made.change).await.unwrap();
    let mut changes: Vec<Change> = Vec::new();
    let mut secrets = Vec::new();
    for i in 0..keys {
        let input = orders_key(&format!("service-{i}"));
        let issued = create_key(&env, input, Actor::operator("bench"), mint, now).unwrap();
        secrets.push(issued.secret.expose().to_owned());
        match changes.last_mut() {
            Some(change) if change.keys.len() < 45 => change.keys.extend(issued.change.keys),
            _ => changes.push(issued.change),
        }
    }
    for change in &changes {
        store.apply(change).await.unwrap();
    }
    secrets
}

/// Reports `secrets` once, and says what they came to and how long it took.
async fn timed(store: &dyn KeyStore, mint: &Mint, secrets: &[String]) -> (Findings, Duration) {
    let responder = Responder {
        store,
        secrets: &NoSecrets,
        mint,
        prefix: &KeyPrefix::default(),
    };
    let details = LeakDetails::parse(Some("https://github.com/acme/app/commit/1"), None).unwrap();
    let started = Instant::now();
    let found = responder
        .report(
            &Reported::all(secrets, &details),
            LeakSource::Report,
            keyward::now(),
        )
        .await
        .unwrap();
    (Findings::of(&found), started.elapsed())
}

/// Strings shaped like keys of this deployment whose checksum fails.
fn noise(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("kw_sk_production_{i:038}"))
        .collect()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

async fn on_sqlite() {
    let (keys, _) = size();
    let (mut first, mut again, mut garbage) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        let store = SqliteStore::in_memory().unwrap();
        let mint = keyward::mint();
        let secrets = fill(&store, &mint, keys).await;
        let (found, took) = timed(&store, &mint, &secrets).await;
        assert_eq!(found.keys, keys, "every key was found and ended");
        first.push(took);
        again.push(timed(&store, &mint, &secrets).await.1);
        let (found, took) = timed(&store, &mint, &noise(keys)).await;
        assert_eq!(found.not_keys, keys);
        garbage.push(took);
    }
    println!("SQLite in memory, median of 5, {keys} strings in a report:");
    println!(
        "  live keys, each recorded and revoked  {:>8.1?}",
        median(first)
    );
    println!(
        "  the same keys again, each read        {:>8.1?}",
        median(again)
    );
    println!(
        "  strings whose checksum fails          {:>8.1?}",
        median(garbage)
    );
}

async fn on_moto() {
    let (_, keys) = size();
    let (table, operations) = keyward::testing::counted_moto_table("leak-bench").await;
    let store: &DynamoStore = &table.store;
    let mint = keyward::mint();
    let secrets = fill(store, &mint, keys).await;
    for label in [
        "live keys, each recorded and revoked",
        "the same keys again",
    ] {
        operations.clear();
        let (found, took) = timed(store, &mint, &secrets).await;
        assert_eq!(found.keys, keys);
        println!("DynamoDB on moto, {keys} keys, {label}: {took:.1?}");
        for (operation, count) in operations.counts() {
            println!("  {operation:<20} {count:>5}");
        }
    }
}

#[tokio::main]
async fn main() {
    on_sqlite().await;
    on_moto().await;
}
