//! At `trace`, scheduled rotation writes a new secret to Secrets Manager, and the AWS SDK,
//! which logs whole request bodies at that level, must not put it in the log; and a policy
//! stored with another environment's secret (as one written before policies were held to
//! their environment could be) is not delivered. The real binary runs against a stand-in for
//! Lambda's Runtime API, with DynamoDB and Secrets Manager on moto's server (started by
//! `./scripts/test`).

use chrono::TimeDelta;
use keyward::domain::{Actor, EnvName, NewKey, RotationPolicy, create_environment, create_key};
use keyward::store::KeyStore;
use keyward::testing::orders_key;
use keyward::testing::{MotoTable, moto_table};
use keyward::testing::{invoke_lambda, log_holds};

#[tokio::test]
async fn a_run_at_trace_level_delivers_only_inside_the_environment_and_logs_no_secret() {
    let mint = keyward::mint();
    let MotoTable {
        store, name: table, ..
    } = moto_table("trace").await;
    let made = keyward::now() - TimeDelta::days(2);
    let environment = EnvName::parse("production").unwrap();
    let admin = create_environment(&environment, Actor::operator("test"), &mint, made);
    store.apply(&admin.change).await.unwrap();
    let secret_id = format!("keyward/production/trace-{}", std::process::id());
    let staging_secret_id = format!("keyward/staging/trace-{}", std::process::id());
    let policy_key = |secret_id: &str| {
        let input = NewKey {
            rotation_policy: Some(
                RotationPolicy::from_json(
                    &serde_json::json!({"every": "P1D", "grace_period": "1h", "secret_id": secret_id}),
                )
                .unwrap(),
            ),
            ..orders_key("billing")
        };
        create_key(&environment, input, Actor::operator("test"), &mint, made).unwrap()
    };
    let issued = policy_key(&secret_id);
    store.apply(&issued.change).await.unwrap();
    let stray = policy_key(&staging_secret_id);
    store.apply(&stray.change).await.unwrap();

    let store_var = format!("dynamodb:{table}");
    let run = invoke_lambda(
        "ScheduledRotation",
        env!("CARGO_BIN_EXE_scheduled-rotation"),
        &[
            ("KEYWARD_STORE", &store_var),
            ("RUST_LOG", "trace"),
            ("AWS_LAMBDA_LOG_LEVEL", "TRACE"),
            // The SDK's own switches that put request and response bodies in its trace lines.
            ("LOG_SIGNABLE_BODY", "true"),
            ("LOG_SENSITIVE_BODIES", "true"),
        ],
        include_str!("../fixtures/scheduled-event.json"),
    );
    let report: serde_json::Value = serde_json::from_str(&run.answer).unwrap();
    assert_eq!(
        (report["rotated"].as_u64(), report["failed"].as_u64()),
        (Some(1), Some(1)),
        "{}\n{}",
        run.answer,
        run.log
    );
    let metrics: Vec<serde_json::Value> = run
        .log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line.get("_aws").is_some())
        .collect();
    assert_eq!(metrics.len(), 1, "one metrics line per run: {}", run.log);
    assert_eq!(
        (
            &metrics[0][scheduled_rotation::FAILED_METRIC],
            &metrics[0][scheduled_rotation::FUNCTION_DIMENSION]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!("ScheduledRotation")
        ),
        "the failed delivery reaches CloudWatch as a metric"
    );
    let aws = aws_config::load_from_env().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&aws);
    let refused = secrets
        .describe_secret()
        .secret_id(&staging_secret_id)
        .send()
        .await;
    assert!(refused.is_err(), "another environment's secret was created");
    assert!(run.log.contains("outside its environment"), "{}", run.log);
    let stored = secrets
        .get_secret_value()
        .secret_id(&secret_id)
        .send()
        .await
        .unwrap();
    let value: serde_json::Value = serde_json::from_str(stored.secret_string().unwrap()).unwrap();
    let delivered = value["secret"].as_str().unwrap();
    assert!(delivered.starts_with("kw_sk_production_"));
    assert!(
        run.log.contains("secret delivered")
            && run.log.contains(issued.key.id.as_str())
            && run.log.contains("handling a due key"),
        "the log was captured, below info too: {}",
        run.log
    );
    for (what, secret) in [
        ("the delivered key", delivered),
        ("the rotated key", issued.secret.expose()),
        ("the key that was not delivered", stray.secret.expose()),
        ("the default key", admin.secret.expose()),
    ] {
        assert!(
            !log_holds(&run.log, secret),
            "{what} is in the log:\n{}",
            run.log
        );
    }
}
