//! The metrics the authorizer publishes: the real binary, against a stand-in for Lambda's
//! Runtime API and a table on the DynamoDB endpoint that `./scripts/test` starts, checks one
//! key of each outcome; each check writes one Embedded Metric Format line to its log, which
//! is what CloudWatch turns into metrics.

use chrono::TimeDelta;
use keyward::domain::{EnvName, Kind};
use keyward::metrics::{CHECK_LATENCY, CHECKS, FUNCTION_DIMENSION, NAMESPACE, REFUSED};
use keyward::testing::{LambdaProcess, MotoTable, keys_in_every_state, moto_table};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn one_check_of_each_outcome_writes_one_metric_line() {
    let MotoTable {
        store, name: table, ..
    } = moto_table("metrics").await;
    let (mint, now) = (keyward::mint(), keyward::now());
    let production = EnvName::parse("production").unwrap();
    let k = keys_in_every_state(&store, &mint, now).await;
    let (reader, old, doomed, staging) = (k.reader, k.expired, k.revoked, k.staging);
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
    let mut took = Vec::new();
    for (token, route, _) in &cases {
        let event = json!({
            "type": "TOKEN",
            "authorizationToken": token.map(|t| format!("Bearer {t}")).unwrap_or_default(),
            "methodArn": format!("arn:aws:execute-api:us-east-1:123456789012:abcdef1234/prod/{route}"),
        });
        let started = std::time::Instant::now();
        lambda
            .invoke(&event.to_string())
            .expect("the authorizer answers");
        took.push(started.elapsed());
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
    for (line, took) in lines.iter().zip(&took) {
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
        // Within the invocation it was measured in: a latency in micro- or nanoseconds, or one
        // measured over more than the check, is out of these bounds (one in seconds is not;
        // the unit itself is held by the unit test of keyward::metrics).
        let latency = line[CHECK_LATENCY].as_f64().unwrap();
        let invocation = took.as_secs_f64() * 1000.0;
        assert!(
            latency > 0.0 && latency <= invocation,
            "{latency} ms within an invocation of {invocation} ms: {line}"
        );
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
