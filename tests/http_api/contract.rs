//! Every answer that these tests see, held against `openapi.yaml`: its status is one the
//! operation documents, and an error's code is in that response's list. The hand-written
//! suites reach the answers a generator rarely does (`secret_in_use`, `scope_escalation`,
//! `default_key_must_be_rotated`), so together they check that the document names every
//! code the server gives. And the document's request examples are sent, and accepted.

use std::sync::LazyLock;

use lambda_http::http::Method;
use serde_json::{Value, json};

use crate::support::{Backend, Server};

/// The document, as JSON.
pub static DOCUMENT: LazyLock<Value> = LazyLock::new(|| {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.yaml"))
        .expect("openapi.yaml is readable");
    serde_norway::from_str(&text).expect("openapi.yaml is YAML")
});

/// Follows a local `$ref`, if `value` is one.
fn resolve(value: &Value) -> &Value {
    match value["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference
                .strip_prefix('#')
                .expect("a reference inside the document");
            resolve(DOCUMENT.pointer(pointer).expect("the reference resolves"))
        }
        None => value,
    }
}

/// The error codes a documented response may carry, from its schema's `code` enum.
pub fn documented_codes(response: &Value) -> Vec<&str> {
    let schema = &resolve(response)["content"]["application/json"]["schema"];
    schema["allOf"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|part| part["properties"]["error"]["properties"]["code"]["enum"].as_array())
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Asserts that the answer `status` with `body` to `method path` is one the document allows.
/// Paths that no route has (`404 route_not_found`, `405 method_not_allowed`) are the
/// router's, not an operation's; the README documents them. The console's files are not
/// part of the API.
pub fn check(method: &str, path: &str, status: u16, body: &str) {
    let path = path.split('?').next().unwrap_or_default();
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let keyward_cli::Routed::Found(_, _, pattern, _) = keyward_cli::route(&method, path) else {
        return;
    };
    if !pattern.starts_with("/v1/") {
        return;
    }
    let operation = &DOCUMENT["paths"][pattern][method.as_str().to_lowercase()];
    assert!(
        operation.is_object(),
        "{method} {pattern} is served but not in openapi.yaml"
    );
    let response = &operation["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {pattern} answered {status}, which openapi.yaml does not document: {body}"
    );
    if status >= 400 {
        let answer: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let code = answer["error"]["code"].as_str().unwrap_or("<no code>");
        assert!(
            documented_codes(response).contains(&code),
            "{method} {pattern} answered {status} {code}, which openapi.yaml does not list for {status}"
        );
    }
}

/// The request examples of every operation, as `(operation id, example name, body)`.
fn request_examples() -> Vec<(String, String, Value)> {
    let mut examples = Vec::new();
    for (_, item) in DOCUMENT["paths"].as_object().unwrap() {
        for (_, operation) in item.as_object().unwrap() {
            let Some(named) =
                operation["requestBody"]["content"]["application/json"]["examples"].as_object()
            else {
                continue;
            };
            for (name, example) in named {
                examples.push((
                    operation["operationId"].as_str().unwrap().to_owned(),
                    name.clone(),
                    resolve(example)["value"].clone(),
                ));
            }
        }
    }
    examples
}

#[test]
fn every_request_example_in_the_document_is_accepted() {
    let server = Server::start(Backend::Sqlite);
    let admin = server.default_key.as_str();
    let new_key = |name: &str| {
        let reply = server.call(
            "POST",
            "/v1/environments/development/keys",
            admin,
            Some(json!({"name": name, "scopes": ["orders:read"]})),
        );
        assert_eq!(reply.status, 201);
        reply.json["key"]["id"].as_str().unwrap().to_owned()
    };
    let examples = request_examples();
    assert!(examples.len() >= 10, "{examples:?}");
    for (operation, name, example) in examples {
        let body: Value = serde_json::from_str(
            &example
                .to_string()
                .replace("keyward/production/", "keyward/development/")
                .replace("kw_sk_production_", "kw_sk_development_")
                .replace("\"production\"", "\"development\""),
        )
        .unwrap();
        let (method, path) = match operation.as_str() {
            "createKey" => ("POST", "/v1/environments/development/keys".to_owned()),
            "rotateKey" => ("POST", format!("/v1/keys/{}/rotate", new_key("rotated"))),
            "changeGracePeriod" => {
                let rotated = server.call(
                    "POST",
                    &format!("/v1/keys/{}/rotate", new_key("in grace")),
                    admin,
                    Some(json!({"grace_period": "1h"})),
                );
                let previous = rotated.json["previous"]["id"].as_str().unwrap().to_owned();
                ("PUT", format!("/v1/keys/{previous}/grace-period"))
            }
            "setRotationPolicy" => (
                "PUT",
                format!("/v1/keys/{}/rotation-policy", new_key(&name)),
            ),
            "setAllowedIps" => ("PUT", format!("/v1/keys/{}/allowed-ips", new_key(&name))),
            "verifyKey" => ("POST", "/v1/verify".to_owned()),
            "reportLeak" => ("POST", "/v1/leaks/report".to_owned()),
            "setLeakPolicy" => ("PUT", "/v1/environments/development/leak-policy".to_owned()),
            other => panic!("no way to send an example of {other}"),
        };
        let reply = server.call(method, &path, admin, Some(body));
        assert!(
            (200..300).contains(&reply.status),
            "{operation} example {name}: {} {:?}",
            reply.status,
            reply.json
        );
    }
}

/// Found by schemathesis on `POST /v1/verify`: a `null` optional field was taken as left out,
/// which the document did not allow. The document now says so for every optional field of a
/// request that takes it; here the server is held to that on create and on verify.
#[test]
fn a_null_optional_field_is_the_same_as_leaving_it_out() {
    let server = Server::start(Backend::Sqlite);
    let admin = server.default_key.as_str();
    let created = server.call(
        "POST",
        "/v1/environments/development/keys",
        admin,
        Some(json!({"name": "nulls", "kind": null, "scopes": null, "expires_at": null, "rotation_policy": null})),
    );
    assert_eq!(created.status, 201, "{:?}", created.json);
    assert_eq!(created.json["key"]["kind"], "secret");
    assert_eq!(created.json["key"]["scopes"], json!([]));
    let verified = server.call(
        "POST",
        "/v1/verify",
        "",
        Some(json!({"key": admin, "environment": null, "scopes": null})),
    );
    assert_eq!(verified.json["code"], "valid", "{:?}", verified.json);
}

/// Each operation's `x-keyward-scope` is the scope the server asks for: a key with every
/// other management scope gets `403 insufficient_scope`, and a key with that one alone gets
/// past the scope check.
#[test]
fn each_operation_needs_exactly_the_scope_the_document_names() {
    let server = Server::start(Backend::Sqlite);
    let admin = server.default_key.as_str();
    let create = |scopes: Vec<&str>| {
        let reply = server.call(
            "POST",
            "/v1/environments/development/keys",
            admin,
            Some(json!({"name": "scoped", "scopes": scopes})),
        );
        assert_eq!(reply.status, 201, "{:?}", reply.json);
        (
            reply.json["key"]["id"].as_str().unwrap().to_owned(),
            reply.json["secret"].as_str().unwrap().to_owned(),
        )
    };
    let (target, _) = create(vec!["orders:read"]);
    let management = ["keys:read", "keys:write", "activity:read"];
    let mut checked = 0;
    for (path, item) in DOCUMENT["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(scope) = operation["x-keyward-scope"].as_str() else {
                continue;
            };
            let path = path
                .replace("{env}", "development")
                .replace("{key_id}", &target);
            let body = match operation["operationId"].as_str().unwrap() {
                "createKey" => Some(json!({"name": "made"})),
                "rotateKey" | "changeGracePeriod" => Some(json!({"grace_period": "1h"})),
                "setRotationPolicy" => Some(json!({"rotation_policy": null})),
                "setAllowedIps" => Some(json!({"allowed_ips": []})),
                "setLeakPolicy" => Some(json!({"leak_policy": "revoke"})),
                _ => None,
            };
            let method = method.to_uppercase();
            let others: Vec<&str> = management.into_iter().filter(|s| *s != scope).collect();
            let (_, without) = create(others);
            let refused = server.call(&method, &path, &without, body.clone());
            assert_eq!(
                (refused.status, refused.code()),
                (403, "insufficient_scope"),
                "{method} {path} without {scope}"
            );
            let (_, only) = create(vec![scope]);
            let answered = server.call(&method, &path, &only, body);
            assert_ne!(
                answered.code(),
                "insufficient_scope",
                "{method} {path} with {scope} alone"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 13, "every operation that needs a key");
}

/// Every answer of every route of the API, an error's too, may not be kept by any cache, and
/// is read only as the JSON it is: a create or a rotation answers with a new secret. The two
/// public documents (the API's description and the key format) hold no secret, and may be
/// cached. The
/// router's own `404` and `405`, and a body over the limit, carry the same headers.
#[test]
fn every_answer_of_the_api_is_neither_cached_nor_sniffed() {
    let server = Server::start(Backend::Sqlite);
    let key = server.default_key.clone();
    let id = server.default_key_id.clone();
    let mut asked: Vec<(String, String, Option<Value>)> = keyward_cli::ROUTES
        .iter()
        .filter(|(_, pattern, _, _)| !matches!(*pattern, "/v1/openapi.json" | "/v1/token-format"))
        .map(|(method, pattern, _, _)| {
            let path = pattern
                .replace("{env}", "development")
                .replace("{key_id}", &id);
            (method.to_string(), path, Some(json!({})))
        })
        .collect();
    asked.push(("GET".to_owned(), "/v1/no-such-route".to_owned(), None));
    asked.push(("DELETE".to_owned(), format!("/v1/keys/{id}"), None));
    asked.push((
        "POST".to_owned(),
        "/v1/environments/development/keys".to_owned(),
        Some(json!({"name": "x".repeat(70_000)})),
    ));
    for (method, path, body) in asked {
        let reply = server.call(&method, &path, &key, body);
        let headers = reply.headers.to_ascii_lowercase();
        for (name, value) in keyward::http::API_HEADERS {
            let header = format!("{name}: {value}").to_ascii_lowercase();
            assert!(
                headers.contains(&header),
                "{method} {path} ({}) lacks {header}: {headers}",
                reply.status
            );
        }
    }
}
