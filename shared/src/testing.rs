//! Helpers for handler tests in the function crates (feature `testing`): a store seeded with
//! an environment, and real API Gateway event fixtures with placeholders filled in.

use lambda_http::{Body, Request, Response};

use crate::domain::{Actor, EnvName, Key, Secret, Timestamp, create_environment};
use crate::store::{KeyStore, SqliteStore};

/// An in-memory store holding one environment and its default key.
pub struct Seeded {
    /// The store.
    pub store: SqliteStore,
    /// The environment.
    pub environment: EnvName,
    /// Its default key, with full access.
    pub key: Key,
    /// The default key's secret.
    pub secret: Secret,
}

/// A fresh in-memory store with the environment `name` made at `now`.
pub async fn seeded(name: &str, now: Timestamp) -> Seeded {
    let store = SqliteStore::in_memory().expect("an in-memory database");
    let environment = EnvName::parse(name).expect("a valid environment name");
    let issued = create_environment(&environment, Actor::operator("test"), now);
    store
        .apply(&issued.change)
        .await
        .expect("a fresh store accepts the environment");
    Seeded {
        store,
        environment,
        key: issued.key,
        secret: issued.secret,
    }
}

/// Parses an API Gateway event (REST v1 or HTTP API v2) after replacing each `{{NAME}}`.
pub fn event(fixture: &str, vars: &[(&str, &str)]) -> Request {
    let json = vars.iter().fold(fixture.to_owned(), |json, (name, value)| {
        json.replace(&format!("{{{{{name}}}}}"), value)
    });
    lambda_http::request::from_str(&json).expect("the fixture is a valid API Gateway event")
}

/// The request that `keyward serve` (or API Gateway) would hand a handler: `method`, the
/// path parameters, the query, `Authorization: Bearer <key>` and a JSON body.
pub fn api_request(
    method: &str,
    params: &[(&str, &str)],
    query: &[(&str, &str)],
    key: &str,
    body: serde_json::Value,
) -> Request {
    use lambda_http::RequestExt;
    let map = |pairs: &[(&str, &str)]| -> std::collections::HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    lambda_http::http::Request::builder()
        .method(method)
        .uri("/")
        .header("authorization", format!("Bearer {key}"))
        .body(Body::from(body.to_string()))
        .expect("a request")
        .with_path_parameters(map(params))
        .with_query_string_parameters(map(query))
}

/// A response body as JSON.
pub fn body_json(response: &Response<Body>) -> serde_json::Value {
    serde_json::from_slice(response.body().as_ref()).expect("the response body is JSON")
}
