//! The authorizer's event parsing under arbitrary input: any JSON at all, and the three real
//! event shapes (REST `TOKEN` and `REQUEST`, HTTP API 2.0, from the fixtures) with arbitrary
//! headers, tokens and ARNs. It never panics, and without the one valid key in the store it never allows. The
//! store is an in-process map: these properties are about the event, not about a database.

use keyward::http::NoPeople;
use std::collections::HashMap;

use async_trait::async_trait;
use authorizer::{Config, RouteScopes, handler};
use keyward::domain::{Actor, EnvName, Key, KeyHash, NewKey, Scopes, create_key};
use keyward::store::{KeyLookup, StoreError};
use keyward::testing::orders_key;
use keyward::usage::NotCounted;
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
        scopes: Scopes::parse(&["*"]).unwrap(),
        ..orders_key("the one")
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
        key_prefix: Default::default(),
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
        .block_on(handler(
            config,
            store,
            &NotCounted,
            &NoPeople,
            event,
            keyward::now(),
        ))
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

/// A real API Gateway event of `shape` (0: REST `TOKEN`, 1: REST `REQUEST`, 2: HTTP API
/// 2.0), from the fixtures, with `headers` (or, for `TOKEN`, `token`) and `arn` in place.
fn shaped(shape: usize, headers: &Map<String, Value>, token: &str, arn: &str) -> Value {
    let (fixture, arn_field) = match shape {
        0 => (include_str!("../fixtures/token.json"), "methodArn"),
        1 => (include_str!("../fixtures/request.json"), "methodArn"),
        _ => (include_str!("../fixtures/http.json"), "routeArn"),
    };
    let text = fixture
        .replace("{{METHOD}}", "GET")
        .replace("{{PATH}}", "/orders")
        .replace("{{HEADER}}", "x-placeholder")
        .replace("{{VALUE}}", "placeholder")
        .replace("{{TOKEN}}", "placeholder");
    let mut event: Value = serde_json::from_str(&text).unwrap();
    event[arn_field] = json!(arn);
    if shape == 0 {
        event["authorizationToken"] = json!(token);
    } else {
        event["headers"] = Value::Object(headers.clone());
        if event.get("multiValueHeaders").is_some() {
            let multi: Map<String, Value> = headers
                .iter()
                .map(|(k, v)| (k.clone(), json!([v])))
                .collect();
            event["multiValueHeaders"] = Value::Object(multi);
        }
    }
    event
}

/// The control for the properties below: the harness sees an allow when there is one. The
/// valid key, in each event shape, is allowed.
#[test]
fn the_valid_key_is_allowed_in_every_event_shape() {
    let (store, secret) = store();
    let arn = "arn:aws:execute-api:us-east-1:123456789012:abc/test/GET/orders";
    let bearer = format!("Bearer {secret}");
    let header = |name: &str, value: &str| {
        Map::from_iter([(name.to_owned(), Value::String(value.to_owned()))])
    };
    for event in [
        shaped(0, &Map::new(), &bearer, arn),
        shaped(1, &header("Authorization", &bearer), "", arn),
        shaped(1, &header("x-api-key", &secret), "", arn),
        shaped(2, &header("authorization", &bearer), "", arn),
    ] {
        for (any_environment, allow_unlisted) in [(false, false), (true, true)] {
            let answer = decide(
                &config(any_environment, allow_unlisted),
                &store,
                event.clone(),
            );
            assert!(answer.as_ref().is_some_and(allows), "{event} {answer:?}");
        }
    }
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
        let event = shaped(shape, &headers, &authorization_token, &method_arn);
        if let Some(answer) = decide(&config(any_environment, allow_unlisted), &store, event) {
            prop_assert!(!allows(&answer), "{answer}");
        }
    }

    #[test]
    fn the_valid_key_is_allowed_whatever_other_headers_come_with_it(
        extra in prop::collection::vec(("[A-Za-z0-9-]{1,20}", "[ -~]{0,60}"), 0..10),
        header in prop_oneof![Just("authorization"), Just("Authorization"), Just("x-api-key"), Just("X-API-KEY")],
        http in any::<bool>(),
    ) {
        let (store, secret) = store();
        let ours = |name: &str| ["authorization", "x-api-key"].contains(&name.to_ascii_lowercase().as_str());
        let mut headers: Map<String, Value> = extra
            .into_iter()
            .filter(|(name, _)| !ours(name))
            .map(|(name, value)| (name, Value::String(value)))
            .collect();
        let value = if header.eq_ignore_ascii_case("authorization") {
            format!("Bearer {secret}")
        } else {
            secret.clone()
        };
        headers.insert(header.to_owned(), Value::String(value));
        let arn = "arn:aws:execute-api:us-east-1:123456789012:abc/test/GET/orders";
        let event = shaped(if http { 2 } else { 1 }, &headers, "", arn);
        let answer = decide(&config(false, false), &store, event);
        prop_assert!(answer.as_ref().is_some_and(allows), "{:?}", answer);
    }
}
