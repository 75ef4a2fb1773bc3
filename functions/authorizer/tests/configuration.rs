//! Bad configuration stops the authorizer's cold start with a message that names the
//! variable, before it asks the Runtime API for any event.

use std::process::Command;

fn start(vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_authorizer"))
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
        .env("AWS_LAMBDA_FUNCTION_NAME", "authorizer")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("KEYWARD_STORE", "dynamodb:keyward-configuration")
        .envs(vars.iter().copied())
        .output()
        .expect("the authorizer runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn each_bad_variable_stops_the_cold_start_and_is_named() {
    for (vars, needle) in [
        (&[][..], "KEYWARD_ENVIRONMENT is not set"),
        (&[("KEYWARD_ENVIRONMENT", "Prod!")], "KEYWARD_ENVIRONMENT"),
        (&[("KEYWARD_ENVIRONMENT", "**")], "KEYWARD_ENVIRONMENT"),
        (
            &[
                ("KEYWARD_ENVIRONMENT", "production"),
                ("KEYWARD_ROUTE_SCOPES", "[1]"),
            ],
            "KEYWARD_ROUTE_SCOPES",
        ),
        (
            &[
                ("KEYWARD_ENVIRONMENT", "production"),
                ("KEYWARD_ROUTE_SCOPES", r#"{"GET /a": "Bad Scope"}"#),
            ],
            "KEYWARD_ROUTE_SCOPES",
        ),
        (
            &[
                ("KEYWARD_ENVIRONMENT", "production"),
                ("KEYWARD_STORE", "postgres:x"),
            ],
            "KEYWARD_STORE",
        ),
        (
            &[
                ("KEYWARD_ENVIRONMENT", "production"),
                ("KEYWARD_STORE", "sqlite:/tmp/keyward.db"),
            ],
            "a Lambda function keeps its keys in DynamoDB",
        ),
        (
            &[
                ("KEYWARD_ENVIRONMENT", "production"),
                ("KEYWARD_UNLISTED_ROUTES", "open"),
            ],
            "KEYWARD_UNLISTED_ROUTES",
        ),
        (
            &[
                ("KEYWARD_ENVIRONMENT", "production"),
                ("KEYWARD_TLS_ROOTS", "System"),
            ],
            "KEYWARD_TLS_ROOTS",
        ),
    ] {
        let (code, stderr) = start(vars);
        assert_eq!(code, Some(1), "{vars:?}: {stderr}");
        assert!(stderr.contains(needle), "{vars:?}: {stderr}");
    }
}

#[test]
fn patterns_of_equal_precedence_stop_the_cold_start_naming_both() {
    let (code, stderr) = start(&[
        ("KEYWARD_ENVIRONMENT", "production"),
        (
            "KEYWARD_ROUTE_SCOPES",
            r#"{"GET /orders/*": "orders:read", "POST /x": "x", "get /orders/*/": "orders:write"}"#,
        ),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("GET /orders/*")
            && stderr.contains("get /orders/*/")
            && stderr.contains("equal precedence"),
        "{stderr}"
    );
}
