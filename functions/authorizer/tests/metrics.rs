//! The metrics the authorizer publishes: the real binary, against a stand-in for Lambda's
//! Runtime API and a table on the DynamoDB endpoint that `./scripts/test` starts, checks one
//! key of each outcome; each check writes one Embedded Metric Format line to its log, which
//! is what CloudWatch turns into metrics.

use chrono::TimeDelta;
use keyward::domain::{
    Actor, EnvName, GracePeriod, KeyName, Kind, NewKey, Revocation, Scopes, create_environment,
    create_key, revoke, rotate,
};
use keyward::metrics::{CHECK_LATENCY, CHECKS, FUNCTION_DIMENSION, NAMESPACE, REFUSED};
use keyward::store::{DynamoStore, KeyStore};
use keyward::testing::LambdaProcess;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn one_check_of_each_outcome_writes_one_metric_line() {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run ./scripts/test, which starts moto's server for these tests"
    );
    let table = format!("metrics-{}", std::process::id());
    let store = DynamoStore::from_env(&table).await.unwrap();
    store.create_table().await.unwrap();
    let (mint, ops) = (keyward::mint(), || Actor::operator("t"));
    let now = keyward::now();
    let production = EnvName::parse("production").unwrap();
    let made = create_environment(&production, ops(), &mint, now);
    store.apply(&made.change).await.unwrap();
    let staging = create_environment(&EnvName::parse("staging").unwrap(), ops(), &mint, now);
    store.apply(&staging.change).await.unwrap();
    let new = |name: &str| NewKey {
        name: KeyName::parse(name).unwrap(),
        kind: Kind::Secret,
        scopes: Scopes::parse(&["orders:read"]).unwrap(),
        expires_at: None,
        rotation_policy: None,
    };
    let reader = create_key(&production, new("reader"), ops(), &mint, now).unwrap();
    store.apply(&reader.change).await.unwrap();
    let old = create_key(&production, new("old"), ops(), &mint, now).unwrap();
    store.apply(&old.change).await.unwrap();
    let rotated = rotate(&old.key, GracePeriod::NOW, ops(), &mint, now).unwrap();
    store.apply(&rotated.change).await.unwrap();
    let doomed = create_key(&production, new("doomed"), ops(), &mint, now).unwrap();
    store.apply(&doomed.change).await.unwrap();
    let Revocation::Revoked { change, .. } = revoke(&doomed.key, ops(), &mint, now).unwrap() else {
        panic!("an active key is revoked")
    };
    store.apply(&change).await.unwrap();
    let unknown = keyward::domain::Secret::generate(&mint, Kind::Secret, &production);

    let lambda = LambdaProcess::start("Authorizer", env!("CARGO_BIN_EXE_authorizer"), |command| {
        command
            .env("KEYWARD_STORE", format!("dynamodb:{table}"))
            .env("KEYWARD_ENVIRONMENT", "production")
            .env(
                "KEYWARD_ROUTE_SCOPES",
                r#"{"GET /orders": "orders:read", "POST /orders": "orders:write"}"#,
            );
    });
    let cases = [
        (Some(reader.secret.expose()), "GET/orders", "valid"),
        (
            Some(reader.secret.expose()),
            "POST/orders",
            "insufficient_scope",
        ),
        (
            Some(reader.secret.expose()),
            "GET/unlisted",
            "unlisted_route",
        ),
        (Some(old.secret.expose()), "GET/orders", "expired"),
        (Some(doomed.secret.expose()), "GET/orders", "revoked"),
        (
            Some(staging.secret.expose()),
            "GET/orders",
            "wrong_environment",
        ),
        (Some(unknown.expose()), "GET/orders", "not_found"),
        (
            Some("kw_sk_production_not-a-key"),
            "GET/orders",
            "malformed",
        ),
        (None, "GET/orders", "missing"),
    ];
    for (token, route, _) in &cases {
        let event = json!({
            "type": "TOKEN",
            "authorizationToken": token.map(|t| format!("Bearer {t}")).unwrap_or_default(),
            "methodArn": format!("arn:aws:execute-api:us-east-1:123456789012:abcdef1234/prod/{route}"),
        });
        lambda
            .invoke(&event.to_string())
            .expect("the authorizer answers");
    }
    let log = lambda.stop();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l.get("_aws").is_some())
        .collect();
    let outcomes: Vec<&str> = lines
        .iter()
        .map(|l| l["Outcome"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = cases.iter().map(|c| c.2).collect();
    assert_eq!(outcomes, expected, "{log}");
    for line in &lines {
        let directives = line["_aws"]["CloudWatchMetrics"].as_array().unwrap();
        for directive in directives {
            assert_eq!(directive["Namespace"], NAMESPACE);
            for metric in directive["Metrics"].as_array().unwrap() {
                let name = metric["Name"].as_str().unwrap();
                assert!(line[name].is_number(), "{name} has a value: {line}");
            }
            for dimensions in directive["Dimensions"].as_array().unwrap() {
                for dimension in dimensions.as_array().unwrap() {
                    let name = dimension.as_str().unwrap();
                    assert!(line[name].is_string(), "{name} has a value: {line}");
                }
            }
        }
        assert_eq!(line[FUNCTION_DIMENSION], "Authorizer");
        assert_eq!(
            line["Environment"], "production",
            "a key of another environment, or none, never names its own: {line}"
        );
        assert_eq!(line[CHECKS], 1);
        assert!(line[CHECK_LATENCY].as_f64().unwrap() >= 0.0);
        assert_eq!(
            line[REFUSED],
            u8::from(line["Outcome"] != "valid"),
            "{line}"
        );
        let at =
            chrono::DateTime::from_timestamp_millis(line["_aws"]["Timestamp"].as_i64().unwrap())
                .unwrap();
        assert!(
            (at - now).abs() < TimeDelta::minutes(5),
            "the time of the check: {at}"
        );
    }
}
