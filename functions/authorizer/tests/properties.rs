//! The authorizer's event parsing under arbitrary input: any JSON at all, and the three real
//! event shapes (REST `TOKEN` and `REQUEST`, HTTP API 2.0) with arbitrary headers, tokens and
//! ARNs. It never panics, and without the one valid key in the store it never allows. The
//! store is an in-process map: these properties are about the event, not about a database.

use std::collections::HashMap;

use async_trait::async_trait;
use authorizer::{Config, RouteScopes, handler};
use keyward::domain::{Actor, EnvName, Key, KeyHash, KeyName, Kind, NewKey, Scopes, create_key};
use keyward::store::{KeyLookup, StoreError};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

struct OneKey(HashMap<String, Key>);

#[async_trait]
impl KeyLookup for OneKey {
    async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<Key>, StoreError> {
        Ok(self.0.get(&hash.to_hex()).cloned())
    }
}

/// A store with one valid `*` key of `production`, and that key's secret.
fn store() -> (OneKey, String) {
    let input = NewKey {
        name: KeyName::parse("the one").unwrap(),
        kind: Kind::Secret,
        scopes: Scopes::parse(&["*"]).unwrap(),
        expires_at: None,
        rotation_policy: None,
    };
    let env = EnvName::parse("production").unwrap();
    let issued = create_key(
        &env,
        input,
        Actor::operator("t"),
        &keyward::mint(),
        keyward::now(),
    )
    .unwrap();
    let store = OneKey(HashMap::from([(issued.key.hash.to_hex(), issued.key)]));
    (store, issued.secret.expose().to_owned())
}

fn config(any_environment: bool, allow_unlisted: bool) -> Config {
    Config {
        environment: (!any_environment).then(|| EnvName::parse("production").unwrap()),
        routes: RouteScopes::parse(r#"{"GET /orders": "orders:read", "ANY /admin/*": "admin"}"#)
            .unwrap(),
        allow_unlisted,
    }
}

/// Whether an answer lets the request through, in either API's shape.
fn allows(answer: &Value) -> bool {
    answer["isAuthorized"] == json!(true)
        || answer["policyDocument"]["Statement"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|statement| statement["Effect"] == "Allow")
}

fn decide(config: &Config, store: &OneKey, event: Value) -> Option<Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime
        .block_on(handler(config, store, event, keyward::now()))
        .ok()
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        ".{0,40}".prop_map(Value::String),
        prop_oneof![
            Just("TOKEN"),
            Just("REQUEST"),
            Just("2.0"),
            Just("1.0"),
            Just("Bearer "),
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((field_name(), inner), 0..8)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Field and header names: the ones the authorizer reads, in any case, and any others.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop_oneof![
            Just("type"),
            Just("version"),
            Just("headers"),
            Just("authorizationToken"),
            Just("methodArn"),
            Just("routeArn"),
            Just("authorization"),
            Just("Authorization"),
            Just("AUTHORIZATION"),
            Just("x-api-key"),
            Just("X-Api-Key"),
        ]
        .prop_map(str::to_owned),
        "[A-Za-z-]{0,20}",
        ".{0,20}",
    ]
}

/// A header value or a token: empty, blank, `Bearer` with anything, or anything at all,
/// including text shaped like a key.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[ \t]{0,4}",
        ".{0,80}".prop_map(|t| format!("Bearer {t}")),
        "(Bearer |bearer |BEARER )?kw_(sk|pk)_[a-z0-9_]{1,33}_[A-Za-z0-9]{38}",
        ".{0,120}",
    ]
}

fn arn() -> impl Strategy<Value = String> {
    prop_oneof![
        "arn:aws:execute-api:us-east-1:123456789012:abc/test/(GET|POST|DELETE|[A-Z]{0,8})(/[a-z*]{0,8}){0,4}",
        ".{0,80}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_json_at_all_is_answered_without_a_panic_and_never_allowed(
        event in any_json(),
        any_environment in any::<bool>(),
        allow_unlisted in any::<bool>(),
    ) {
        let (store, _) = store();
        if let Some(answer) = decide(&config(any_environment, allow_unlisted), &store, event) {
            prop_assert!(!allows(&answer), "{answer}");
        }
    }

    #[test]
    fn real_event_shapes_with_any_headers_and_tokens_never_allow_without_the_key(
        shape in 0..3usize,
        headers in prop::collection::vec((field_name(), token()), 0..10),
        authorization_token in token(),
        method_arn in arn(),
        any_environment in any::<bool>(),
        allow_unlisted in any::<bool>(),
    ) {
        let (store, _) = store();
        let headers: Map<String, Value> = headers
            .into_iter()
            .map(|(name, value)| (name, Value::String(value)))
            .collect();
        let event = match shape {
            0 => json!({"type": "TOKEN", "authorizationToken": authorization_token, "methodArn": method_arn}),
            1 => json!({"type": "REQUEST", "methodArn": method_arn, "headers": headers}),
            _ => json!({"version": "2.0", "type": "REQUEST", "routeArn": method_arn, "headers": headers}),
        };
        if let Some(answer) = decide(&config(any_environment, allow_unlisted), &store, event) {
            prop_assert!(!allows(&answer), "{answer}");
        }
    }

    #[test]
    fn the_valid_key_among_any_other_headers_is_never_a_panic(
        extra in prop::collection::vec((field_name(), token()), 0..10),
        header in prop_oneof![Just("authorization"), Just("Authorization"), Just("x-api-key"), Just("X-API-KEY")],
        method_arn in arn(),
        http in any::<bool>(),
    ) {
        let (store, secret) = store();
        let mut headers: Map<String, Value> = extra
            .into_iter()
            .map(|(name, value)| (name, Value::String(value)))
            .collect();
        headers.insert(header.to_owned(), Value::String(format!("Bearer {secret}")));
        let event = if http {
            json!({"version": "2.0", "type": "REQUEST", "routeArn": method_arn, "headers": headers})
        } else {
            json!({"type": "REQUEST", "methodArn": method_arn, "headers": headers})
        };
        if let Some(answer) = decide(&config(true, true), &store, event)
            && allows(&answer)
        {
            prop_assert!(answer.to_string().contains("\"keyId\""), "{answer}");
        }
    }
}
