//! What a `verify-key` instance loses of its usage counts when Lambda stops it, held to what
//! README.md ("Usage") promises. The real binary runs against a stand-in for Lambda's Runtime
//! and Extensions APIs, with its table on the DynamoDB endpoint that `./scripts/test` starts,
//! and gets the signals Lambda sends: `SIGSTOP`/`SIGCONT` for a freeze and a thaw, `SIGTERM`
//! at shutdown, `SIGKILL` when an instance dies outright.

use std::time::{Duration, Instant};

use keyward::domain::{Actor, EnvName, Key, Secret, create_environment, create_key, hour_of};
use keyward::store::{DynamoStore, KeyStore, UsageStore};
use keyward::testing::LambdaProcess;
use keyward::testing::orders_key;
use keyward::testing::{MotoTable, moto_table};

const REST: &str = include_str!("../fixtures/rest.json");

/// A fresh table with one environment and `keys` keys that are checked.
struct Table {
    store: DynamoStore,
    name: String,
    keys: Vec<(Key, Secret)>,
}

async fn table(test: &str, keys: usize) -> Table {
    let MotoTable { store, name, .. } = moto_table(&format!("shutdown-{test}")).await;
    let (mint, now) = (keyward::mint(), keyward::now());
    let production = EnvName::parse("production").unwrap();
    let issued = create_environment(&production, Actor::operator("test"), &mint, now);
    store.apply(&issued.change).await.unwrap();
    let mut made = vec![(issued.key, issued.secret)];
    for n in 1..keys {
        let input = orders_key(&format!("service {n}"));
        let issued = create_key(&production, input, Actor::operator("test"), &mint, now).unwrap();
        store.apply(&issued.change).await.unwrap();
        made.push((issued.key, issued.secret));
    }
    Table {
        store,
        name,
        keys: made,
    }
}

impl Table {
    /// `verify-key` on this table, writing a key's counts at most once `every` seconds.
    fn function(&self, every: &str) -> LambdaProcess {
        let store = format!("dynamodb:{}", self.name);
        LambdaProcess::start("VerifyKey", env!("CARGO_BIN_EXE_verify-key"), |command| {
            command
                .env("KEYWARD_STORE", &store)
                .env("KEYWARD_USAGE_WRITE_EVERY", every);
        })
    }

    /// Checks key `n` once through the function; the answer must be `valid`.
    fn check(&self, lambda: &LambdaProcess, n: usize) {
        let event = REST.replace("{{KEY}}", self.keys[n].1.expose());
        let answer = lambda.invoke(&event).expect("the function answers");
        assert!(
            answer.contains(r#"\"valid\":true"#),
            "{answer}\n{}",
            lambda.log()
        );
    }

    /// The accepted checks the table holds for key `n`.
    async fn stored(&self, n: usize) -> u64 {
        let since = hour_of(keyward::now()) - chrono::TimeDelta::hours(1);
        let hours = self
            .store
            .hourly_usage(&self.keys[n].0.environment, &self.keys[n].0.id, since)
            .await
            .unwrap();
        hours.iter().map(|h| h.accepted).sum()
    }

    /// Waits until the table holds `expected` accepted checks of key `n`, or gives up after 20
    /// seconds and returns what it holds.
    async fn stored_reaching(&self, n: usize, expected: u64) -> u64 {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let stored = self.stored(n).await;
            if stored >= expected || Instant::now() >= until {
                return stored;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Lambda freezes an instance between requests, thaws it to shut it down, sends `SIGTERM`,
/// and kills it 500 ms later. The promise: a shutdown loses nothing, unless its writes cannot
/// finish in that time. A hundred keys are checked once each (each first check is written at
/// once, on a task of its own) and one of them 39 times more (held), and the instance is
/// frozen right after (the test prints how many first writes had not landed by then). The
/// function gives its shutdown writes 400 ms, as on Lambda, so a machine too loaded to write
/// 140 checks to moto in 400 ms would fail this; it measured 11 ms (BENCHMARKS.md). The test
/// waits for the process to end rather than killing it at 500 ms.
#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_after_a_freeze_loses_no_check() {
    const KEYS: usize = 100;
    let table = table("term", KEYS).await;
    let mut lambda = table.function("60");
    for n in 0..KEYS {
        table.check(&lambda, n);
    }
    for _ in 1..40 {
        table.check(&lambda, 0);
    }
    lambda.signal("STOP");
    let mut landed = 0;
    for n in 1..KEYS {
        landed += usize::from(table.stored(n).await > 0);
    }
    eprintln!(
        "frozen with {} of {} first writes not landed yet",
        KEYS - 1 - landed,
        KEYS - 1
    );
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
    let log = lambda.log();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(!log.contains("usage not written"), "{log}");
    assert_eq!(table.stored(0).await, 40, "{log}");
    for n in 1..KEYS {
        assert_eq!(table.stored(n).await, 1, "key {n}: {log}");
    }
    let metrics: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l.get("_aws").is_some())
        .collect();
    assert_eq!(metrics.len(), KEYS + 39, "one metric line per check: {log}");
    assert!(
        metrics.iter().all(|m| m["Outcome"] == "valid"
            && m["Environment"] == "production"
            && m["Refused"] == 0),
        "{log}"
    );
}

/// An instance that dies without a shutdown (a timeout, running out of memory) loses what it
/// held: the checks since each key's last write, never one that was written. Twelve checks
/// within the minute: the first is written at once, the other eleven are held, and the kill
/// loses exactly those.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_instance_loses_only_the_checks_since_the_keys_last_write() {
    let table = table("kill", 1).await;
    let mut lambda = table.function("60");
    for _ in 0..12 {
        table.check(&lambda, 0);
    }
    assert_eq!(table.stored_reaching(0, 1).await, 1);
    lambda.signal("KILL");
    lambda
        .wait(Duration::from_secs(10))
        .expect("a killed process ends");
    assert_eq!(
        table.stored(0).await,
        1,
        "what was written stays written, once; the eleven held checks are lost"
    );
}
