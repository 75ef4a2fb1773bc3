//! At `trace`, the most a deployer can ask for, the create-key Lambda's log holds neither the
//! caller's key nor the key it creates, though the AWS SDK logs whole request bodies at that
//! level. The real binary runs against a stand-in for Lambda's Runtime API, answers a real
//! API Gateway event, and writes to DynamoDB on moto's server (started by `./scripts/test`).

use keyward::domain::{Actor, EnvName, create_environment};
use keyward::store::KeyStore;
use keyward::testing::{MotoTable, moto_table};
use keyward::testing::{invoke_lambda, log_holds};

#[tokio::test]
async fn a_key_created_at_trace_level_leaves_no_secret_in_the_log() {
    let mint = keyward::mint();
    let MotoTable {
        store, name: table, ..
    } = moto_table("trace-create").await;
    let environment = EnvName::parse("production").unwrap();
    let admin = create_environment(&environment, Actor::operator("test"), &mint, keyward::now());
    store.apply(&admin.change).await.unwrap();

    let event = include_str!("../fixtures/rest.json")
        .replace("{{ENV}}", "production")
        .replace("{{KEY}}", admin.secret.expose());
    let store_var = format!("dynamodb:{table}");
    let run = invoke_lambda(
        "CreateKey",
        env!("CARGO_BIN_EXE_create-key"),
        &[
            ("KEYWARD_STORE", &store_var),
            ("RUST_LOG", "trace"),
            ("AWS_LAMBDA_LOG_LEVEL", "TRACE"),
            // The SDK's own switches that put request and response bodies in its trace lines.
            ("LOG_SIGNABLE_BODY", "true"),
            ("LOG_SENSITIVE_BODIES", "true"),
        ],
        &event,
    );

    let answer: serde_json::Value = serde_json::from_str(&run.answer).unwrap();
    assert_eq!(answer["statusCode"], 201, "{}", run.answer);
    let body: serde_json::Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    let created = body["secret"].as_str().unwrap();
    assert!(
        run.log.contains("key created")
            && run.log.contains("DEBUG")
            && run.log.contains("caller authenticated"),
        "the log was captured, below info too: {}",
        run.log
    );
    for (what, secret) in [
        ("the caller's key", admin.secret.expose()),
        ("the new key", created),
    ] {
        assert!(
            !log_holds(&run.log, secret),
            "{what} is in the log:\n{}",
            run.log
        );
    }
}
