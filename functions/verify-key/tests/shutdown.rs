//! What a `verify-key` instance loses of its usage counts when Lambda stops it, held to what
//! README.md ("Usage") promises. The real binary runs against a stand-in for Lambda's Runtime
//! and Extensions APIs, with its table on the DynamoDB endpoint that `./scripts/test` starts,
//! and gets the signals Lambda sends: `SIGSTOP`/`SIGCONT` for a freeze and a thaw, `SIGTERM`
//! at shutdown, `SIGKILL` when an instance dies outright.

use std::time::{Duration, Instant};

use keyward::domain::{Actor, EnvName, Key, Secret, create_environment, hour_of};
use keyward::store::{DynamoStore, KeyStore, UsageStore};
use keyward::testing::LambdaProcess;

const REST: &str = include_str!("../fixtures/rest.json");

/// A fresh table with one environment; its default key is the one checked.
struct Table {
    store: DynamoStore,
    name: String,
    key: Key,
    secret: Secret,
}

async fn table(test: &str) -> Table {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run ./scripts/test, which starts moto's server for these tests"
    );
    let name = format!("shutdown-{test}-{}", std::process::id());
    let store = DynamoStore::from_env(&name).await.unwrap();
    store.create_table().await.unwrap();
    let issued = create_environment(
        &EnvName::parse("production").unwrap(),
        Actor::operator("test"),
        &keyward::mint(),
        keyward::now(),
    );
    store.apply(&issued.change).await.unwrap();
    Table {
        store,
        name,
        key: issued.key,
        secret: issued.secret,
    }
}

impl Table {
    /// `verify-key` on this table, writing a key's counts at most once `every` seconds.
    fn function(&self, every: &str) -> LambdaProcess {
        let store = format!("dynamodb:{}", self.name);
        LambdaProcess::start(env!("CARGO_BIN_EXE_verify-key"), |command| {
            command
                .env("KEYWARD_STORE", &store)
                .env("KEYWARD_USAGE_WRITE_EVERY", every);
        })
    }

    /// Checks the key once through the function; the answer must be `valid`.
    fn check(&self, lambda: &LambdaProcess) {
        let event = REST.replace("{{KEY}}", self.secret.expose());
        let answer = lambda.invoke(&event).expect("the function answers");
        assert!(
            answer.contains(r#"\"valid\":true"#),
            "{answer}\n{}",
            lambda.log()
        );
    }

    /// The accepted checks the table holds for the key.
    async fn stored(&self) -> u64 {
        let since = hour_of(keyward::now()) - chrono::TimeDelta::hours(1);
        let hours = self.store.hourly_usage(&self.key.id, since).await.unwrap();
        hours.iter().map(|h| h.accepted).sum()
    }

    /// Waits until the table holds `expected` accepted checks, or gives up after 20 seconds
    /// and returns what it holds.
    async fn stored_reaching(&self, expected: u64) -> u64 {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let stored = self.stored().await;
            if stored >= expected || Instant::now() >= until {
                return stored;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Lambda freezes an instance between requests, thaws it to shut it down, sends `SIGTERM`,
/// and kills it 500 ms later. The promise: a shutdown loses nothing. The test waits for the
/// process to end by itself rather than killing it at 500 ms, so that a slow machine cannot
/// fail it; it prints how long the shutdown took (BENCHMARKS.md records it).
#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_after_a_freeze_loses_no_check() {
    const CHECKS: u64 = 40;
    let table = table("term").await;
    let mut lambda = table.function("60");
    for _ in 0..CHECKS {
        table.check(&lambda);
    }
    assert_eq!(
        table.stored_reaching(1).await,
        1,
        "the first check is written at once, the rest are held for a minute"
    );
    lambda.signal("STOP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    lambda.signal("CONT");
    let asked = Instant::now();
    lambda.signal("TERM");
    let status = lambda
        .wait(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the function did not end; its log:\n{}", lambda.log()));
    eprintln!(
        "verify-key ended {} ms after SIGTERM",
        asked.elapsed().as_millis()
    );
    assert!(status.success(), "{status:?}\n{}", lambda.log());
    assert_eq!(table.stored().await, CHECKS, "{}", lambda.log());
    let log = lambda.log();
    let metrics: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l.get("_aws").is_some())
        .collect();
    assert_eq!(
        metrics.len() as u64,
        CHECKS,
        "one metric line per check: {log}"
    );
    assert!(
        metrics.iter().all(|m| m["Outcome"] == "valid"
            && m["Environment"] == "production"
            && m["Refused"] == 0),
        "{log}"
    );
}

/// An instance that dies without a shutdown (a timeout, running out of memory) loses what it
/// held: the checks since each key's last write, never one that was written. With writes at
/// most once a second: five checks (the first written at once, four held), a pause past the
/// interval, one check that writes all five and itself, then seven more before the kill.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_instance_loses_only_the_checks_since_the_keys_last_write() {
    let table = table("kill").await;
    let mut lambda = table.function("1");
    for _ in 0..5 {
        table.check(&lambda);
    }
    assert!(table.stored_reaching(1).await >= 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    table.check(&lambda);
    assert_eq!(table.stored_reaching(6).await, 6, "{}", lambda.log());
    for _ in 0..7 {
        table.check(&lambda);
    }
    lambda.signal("KILL");
    lambda
        .wait(Duration::from_secs(10))
        .expect("a killed process ends");
    let stored = table.stored().await;
    assert!(
        (6..=13).contains(&stored),
        "what was written stays written, and nothing is counted twice: {stored}"
    );
    eprintln!("killed: {} of the last 7 checks lost", 13 - stored);
}
