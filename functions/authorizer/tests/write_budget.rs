//! The write budget of usage counting, measured with an SDK interceptor on the DynamoDB client
//! as the capacity bench measures (`cli/benches/dynamodb_cost.rs`): 10,000 checks of one key
//! within a minute from one process cost one `GetItem` each and, together, one usage write;
//! BENCHMARKS.md records the figures.

use keyward::http::NoPeople;
use std::sync::Arc;
use std::time::{Duration, Instant};

use authorizer::{Config, RouteScopes, handler};
use chrono::TimeDelta;
use futures_util::StreamExt;
use keyward::aws::calls::acting_as;
use keyward::domain::{Actor, EnvName, create_environment, create_key, hour_of};
use keyward::store::{KeyStore, UsageStore};
use keyward::testing::{Operations, orders_key};
use keyward::usage::{DEFAULT_WRITE_EVERY, Usage};
use serde_json::json;

/// Waits until `operations` has sent `expected` of `name`, or 20 seconds have passed, then a
/// little longer, so that a write that should not come has had its chance to.
async fn settle(operations: &Operations, name: &str, expected: usize) -> usize {
    let until = Instant::now() + Duration::from_secs(20);
    while operations.count(name) < expected && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    operations.count(name)
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_checks_in_a_minute_cost_one_read_each_and_one_usage_write() {
    const CHECKS: usize = 10_000;
    let (table, operations) = keyward::testing::counted_moto_table("budget").await;
    let store = table.store;
    let mint = keyward::mint();
    let start = keyward::now();
    let production = EnvName::parse("production").unwrap();
    let environment = create_environment(&production, Actor::operator("t"), &mint, start);
    store.apply(&environment.change).await.unwrap();
    let input = orders_key("busy");
    let issued = create_key(&production, input, Actor::operator("t"), &mint, start).unwrap();
    store.apply(&issued.change).await.unwrap();
    let config = Config {
        environment: Some(production),
        routes: RouteScopes::parse(r#"{"GET /orders": "orders:read"}"#).unwrap(),
        allow_unlisted: false,
        key_prefix: Default::default(),
    };
    let usage = Usage::for_function(Arc::new(store.clone()), DEFAULT_WRITE_EVERY, "Authorizer");
    let event = json!({
        "type": "TOKEN",
        "authorizationToken": format!("Bearer {}", issued.secret.expose()),
        "methodArn": "arn:aws:execute-api:us-east-1:123456789012:abcdef1234/prod/GET/orders",
    });
    operations.clear();

    // 10,000 checks spread over 50 seconds of the clock the handler is given, 16 at a time,
    // within one hour so that every count falls in one hour's item.
    let first = hour_of(start) + TimeDelta::minutes(61);
    let checks = futures_util::stream::iter(0..CHECKS).map(|i| {
        let now = first + TimeDelta::milliseconds(5 * i as i64);
        acting_as(
            "Authorizer",
            handler(&config, &store, &usage, &NoPeople, event.clone(), now),
        )
    });
    let answers: Vec<_> = checks.buffer_unordered(16).collect().await;
    for answer in answers {
        assert_eq!(
            answer.unwrap()["policyDocument"]["Statement"][0]["Effect"],
            "Allow"
        );
    }
    let writes = settle(&operations, "UpdateItem", 1).await;
    assert_eq!(operations.count("GetItem"), CHECKS, "one read per check");
    assert_eq!(
        writes, 1,
        "the first check's write, and no other within the minute"
    );
    assert_eq!(operations.total(), CHECKS + 1, "{:?}", operations.counts());
    eprintln!(
        "{CHECKS} checks in 50 s: {} GetItem, {writes} UpdateItem",
        operations.count("GetItem")
    );

    // A minute after that write (whichever check of the first sixteen made it), the next
    // check writes everything held, itself included.
    let later = first + TimeDelta::seconds(50) + DEFAULT_WRITE_EVERY;
    acting_as(
        "Authorizer",
        handler(&config, &store, &usage, &NoPeople, event.clone(), later),
    )
    .await
    .unwrap();
    assert_eq!(settle(&operations, "UpdateItem", 2).await, 2);
    assert_eq!(usage.flush_all(Duration::from_secs(10)).await, 0);
    assert_eq!(
        operations.count("UpdateItem"),
        2,
        "nothing was left to flush"
    );
    let hours = store
        .hourly_usage(&issued.key.environment, &issued.key.id, hour_of(start))
        .await
        .unwrap();
    let accepted: u64 = hours.iter().map(|h| h.accepted).sum();
    assert_eq!(accepted, CHECKS as u64 + 1);
}
