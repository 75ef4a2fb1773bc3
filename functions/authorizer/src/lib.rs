//! keyward's Lambda authorizer, with the same rules as `/v1/verify`.
//!
//! It answers the three event shapes API Gateway sends, telling them apart by their fields:
//! REST `TOKEN` and `REQUEST` authorizers get an IAM policy, or the error `Unauthorized`
//! (API Gateway's `401`); HTTP API payload 2.0 authorizers get a simple `isAuthorized`.
//! A missing, malformed, unknown, expired or revoked key, or a key of another environment, is
//! unauthorized; a valid key without the route's scope gets a Deny policy (`403`). An allow
//! covers exactly the method that was asked for, so a cached policy opens nothing else, and
//! passes `keyId`, `environment` and `scopes` (space-separated) to the backend.
//!
//! A key that fails the format or checksum check, or whose checksummed prefix names another
//! environment, is refused without reading the store; any other check is one strongly
//! consistent read. Nothing is cached, so a revoked key fails on the very next request.

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerRequest, ApiGatewayCustomAuthorizerRequestTypeRequest,
    ApiGatewayV2CustomAuthorizerV2Request,
};
use keyward::check::{Checked, Needs, Outcome, check_presented};
use keyward::domain::{EnvName, Key, Scope, Timestamp, Verdict};
use keyward::http::key_from_headers;
use keyward::metrics;
use keyward::store::{KeyLookup, StoreError};
use keyward::usage::Counter;
use lambda_http::lambda_runtime::Diagnostic;
use serde_json::{Value, json};

/// Why a request is refused outright: the message API Gateway turns into `401`.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizerError {
    /// The key is missing, malformed, unknown, expired, revoked, or of another environment.
    #[error("Unauthorized")]
    Unauthorized,
    /// The event is none of the shapes API Gateway sends to an authorizer.
    #[error("the event is not an API Gateway authorizer event")]
    UnknownEvent,
    /// The store could not be read; API Gateway answers `500`, and the client may retry.
    #[error("the key store failed")]
    Store(#[source] StoreError),
}

impl From<AuthorizerError> for Diagnostic {
    /// API Gateway turns an error whose message is exactly `Unauthorized` into `401`; any other
    /// error becomes `500`.
    fn from(e: AuthorizerError) -> Self {
        let error_type = match e {
            AuthorizerError::Unauthorized => "Unauthorized",
            AuthorizerError::UnknownEvent => "UnknownEvent",
            AuthorizerError::Store(_) => "StoreError",
        };
        Diagnostic {
            error_type: error_type.to_owned(),
            error_message: e.to_string(),
        }
    }
}

/// One route pattern, such as `POST /orders/*`, and the scope it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RouteScope {
    /// The pattern as configured, to name it in errors.
    pattern: String,
    method: String,
    segments: Vec<String>,
    /// `None` when the route needs only a valid key (an empty scope in the configuration).
    scope: Option<Scope>,
}

impl RouteScope {
    /// The precedence rule: compared segment by segment from the left, a literal segment
    /// comes before `*` at the first position where two patterns differ; then a named
    /// method comes before `ANY`. The first matching pattern in this order decides.
    fn rank(&self) -> (Vec<bool>, bool) {
        let wild = self.segments.iter().map(|s| s == "*").collect();
        (wild, self.method == "ANY")
    }

    fn matches(&self, method: &str, path: &[&str]) -> bool {
        (self.method == "ANY" || self.method.eq_ignore_ascii_case(method))
            && self.segments.len() == path.len()
            && self
                .segments
                .iter()
                .zip(path)
                .all(|(w, g)| w == "*" || w == g)
    }

    /// Whether some request could match both patterns.
    fn overlaps(&self, other: &RouteScope) -> bool {
        let methods = self.method == "ANY" || other.method == "ANY" || self.method == other.method;
        methods
            && self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|(a, b)| a == "*" || b == "*" || a == b)
    }
}

/// The scope a request's route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement<'a> {
    /// A listed route that needs this scope.
    Scope(&'a Scope),
    /// A listed route that needs only a valid key.
    AnyValidKey,
    /// A route that no pattern lists.
    Unlisted,
}

/// Which scope each route needs, from `KEYWARD_ROUTE_SCOPES`, in precedence order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteScopes(Vec<RouteScope>);

/// A JSON object's members in their order, duplicates kept, so that none is silently lost.
struct Members(Vec<(String, String)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, String>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

impl RouteScopes {
    /// Parses `{"GET /orders": "orders:read", "POST /orders/*": "orders:write", "GET /health": ""}`:
    /// a method (or `ANY`), a path whose `*` segments match any one segment, and a scope, or
    /// `""` for a route that needs only a valid key. Two patterns that could match the same
    /// request with equal precedence are refused, naming both.
    pub fn parse(json: &str) -> Result<Self, String> {
        let Members(members) = serde_json::from_str(json)
            .map_err(|e| format!("KEYWARD_ROUTE_SCOPES is not a JSON object of strings: {e}"))?;
        let mut routes: Vec<RouteScope> = Vec::with_capacity(members.len());
        for (route, scope) in members {
            let (method, path) = route
                .split_once(' ')
                .filter(|(m, p)| !m.is_empty() && p.starts_with('/'))
                .ok_or_else(|| {
                    format!("KEYWARD_ROUTE_SCOPES: {route:?} is not \"METHOD /path\"")
                })?;
            let scope = match scope.as_str() {
                "" => None,
                scope => Some(
                    Scope::parse(scope, 0)
                        .map_err(|e| format!("KEYWARD_ROUTE_SCOPES: {route:?}: {e}"))?,
                ),
            };
            let candidate = RouteScope {
                method: method.to_ascii_uppercase(),
                segments: segments(path).into_iter().map(str::to_owned).collect(),
                scope,
                pattern: route.clone(),
            };
            if let Some(twin) = routes
                .iter()
                .find(|r| r.rank() == candidate.rank() && r.overlaps(&candidate))
            {
                return Err(format!(
                    "KEYWARD_ROUTE_SCOPES: {:?} and {route:?} match the same requests with equal precedence; keep one",
                    twin.pattern
                ));
            }
            routes.push(candidate);
        }
        routes.sort_by_key(RouteScope::rank);
        Ok(Self(routes))
    }

    /// What the route of `method path` needs: the first listed pattern in precedence order
    /// that matches it decides.
    pub fn required(&self, method: &str, path: &str) -> Requirement<'_> {
        let path = segments(path);
        match self.0.iter().find(|r| r.matches(method, &path)) {
            Some(RouteScope {
                scope: Some(scope), ..
            }) => Requirement::Scope(scope),
            Some(_) => Requirement::AnyValidKey,
            None => Requirement::Unlisted,
        }
    }
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// `KEYWARD_ENVIRONMENT`'s value for "a valid key of any environment".
pub const ANY_ENVIRONMENT: &str = "*";

/// The authorizer's configuration, read once at cold start.
#[derive(Debug, Clone)]
pub struct Config {
    /// The only environment whose keys it accepts; `None` (`KEYWARD_ENVIRONMENT=*`) accepts
    /// a valid key of any environment, for an API that checks the environment itself, such
    /// as keyward's own management API.
    pub environment: Option<EnvName>,
    /// The scope each route needs.
    pub routes: RouteScopes,
    /// Whether a route that no pattern lists is open to any valid key; by default it is
    /// denied, so that a route added to an API without a scope is closed, not open.
    pub allow_unlisted: bool,
}

impl Config {
    /// The variable that names the accepted environment.
    pub const ENVIRONMENT_VAR: &'static str = "KEYWARD_ENVIRONMENT";
    /// The variable that maps routes to scopes.
    pub const ROUTE_SCOPES_VAR: &'static str = "KEYWARD_ROUTE_SCOPES";
    /// The variable that says what an unlisted route gets: `deny` (the default) or `allow`.
    pub const UNLISTED_ROUTES_VAR: &'static str = "KEYWARD_UNLISTED_ROUTES";

    /// Reads the authorizer's variables; a bad value stops the cold start.
    pub fn from_env() -> Result<Self, String> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the configuration from `var`, which gives a variable's value if it is set.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let environment = var(Self::ENVIRONMENT_VAR)
            .ok_or_else(|| format!("{} is not set", Self::ENVIRONMENT_VAR))?;
        let environment = match environment.as_str() {
            ANY_ENVIRONMENT => None,
            name => Some(
                EnvName::parse(name)
                    .map_err(|e| format!("KEYWARD_ENVIRONMENT {name:?}: {e}, or *"))?,
            ),
        };
        let routes = match var(Self::ROUTE_SCOPES_VAR) {
            Some(json) => RouteScopes::parse(&json)?,
            None => RouteScopes::default(),
        };
        let allow_unlisted = match var(Self::UNLISTED_ROUTES_VAR).as_deref() {
            None | Some("deny") => false,
            Some("allow") => true,
            Some(_) => {
                return Err(format!(
                    "{} is deny (the default) or allow",
                    Self::UNLISTED_ROUTES_VAR
                ));
            }
        };
        Ok(Self {
            environment,
            routes,
            allow_unlisted,
        })
    }
}

/// Which kind of answer API Gateway expects.
enum Shape {
    /// A REST API authorizer: an IAM policy for `method_arn`.
    Rest { method_arn: String },
    /// An HTTP API authorizer with simple responses.
    Http,
}

/// What an event asks: the presented key, the method and path, and how to answer.
struct Ask {
    token: Option<String>,
    method: String,
    path: String,
    shape: Shape,
}

/// The method and path in a method or route ARN: `arn:...:api-id/stage/METHOD/path...`;
/// `None` when it names no method, so that an event without one is never allowed.
fn method_and_path(arn: &str) -> Option<(String, String)> {
    let resource = arn.splitn(6, ':').nth(5)?;
    let mut parts = resource.splitn(4, '/');
    let (_api, _stage) = (parts.next()?, parts.next()?);
    let method = parts.next().filter(|m| !m.is_empty())?.to_owned();
    Some((method, format!("/{}", parts.next().unwrap_or_default())))
}

fn bearer(value: &str) -> &str {
    match value.trim().split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => value.trim(),
    }
}

fn ask(event: Value) -> Result<Ask, AuthorizerError> {
    let kind = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let version = event
        .get("version")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let unknown = |_| AuthorizerError::UnknownEvent;
    match (version.as_str(), kind.as_str()) {
        ("2.0", _) => {
            let e: ApiGatewayV2CustomAuthorizerV2Request =
                serde_json::from_value(event).map_err(unknown)?;
            let (method, path) = e
                .route_arn
                .as_deref()
                .and_then(method_and_path)
                .ok_or(AuthorizerError::UnknownEvent)?;
            Ok(Ask {
                token: key_from_headers(&e.headers).map(str::to_owned),
                method,
                path,
                shape: Shape::Http,
            })
        }
        (_, "TOKEN") => {
            let e: ApiGatewayCustomAuthorizerRequest =
                serde_json::from_value(event).map_err(unknown)?;
            let method_arn = e.method_arn.unwrap_or_default();
            let (method, path) =
                method_and_path(&method_arn).ok_or(AuthorizerError::UnknownEvent)?;
            let token = e
                .authorization_token
                .as_deref()
                .map(bearer)
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            Ok(Ask {
                token,
                method,
                path,
                shape: Shape::Rest { method_arn },
            })
        }
        (_, "REQUEST") => {
            let e: ApiGatewayCustomAuthorizerRequestTypeRequest =
                serde_json::from_value(event).map_err(unknown)?;
            let method_arn = e.method_arn.unwrap_or_default();
            let (method, path) =
                method_and_path(&method_arn).ok_or(AuthorizerError::UnknownEvent)?;
            Ok(Ask {
                token: key_from_headers(&e.headers).map(str::to_owned),
                method,
                path,
                shape: Shape::Rest { method_arn },
            })
        }
        _ => Err(AuthorizerError::UnknownEvent),
    }
}

/// The outcome of one check.
enum Decision {
    Unauthorized,
    Deny(Key),
    Allow(Key),
}

/// What one check found: the decision, its outcome, and the environment the metrics may name
/// (the key's, once it is found, else the authorizer's).
struct Decided {
    decision: Decision,
    outcome: Outcome,
    environment: Option<EnvName>,
}

async fn decide(
    config: &Config,
    store: &dyn KeyLookup,
    usage: &dyn Counter,
    ask: &Ask,
    required: Requirement<'_>,
    now: Timestamp,
) -> Result<Decided, StoreError> {
    let scope;
    let needs = Needs {
        environment: config.environment.as_ref(),
        scopes: match required {
            Requirement::Scope(required) => {
                scope = [required.as_str()];
                &scope
            }
            Requirement::AnyValidKey | Requirement::Unlisted => &[],
        },
        closed: required == Requirement::Unlisted && !config.allow_unlisted,
    };
    let Checked { outcome, key } =
        check_presented(store, usage, ask.token.as_deref(), needs, now).await?;
    let environment = key
        .as_ref()
        .map(|k| k.environment.clone())
        .or_else(|| config.environment.clone());
    let decision = match (outcome, key) {
        (Outcome::Checked(Verdict::Valid), Some(key)) => Decision::Allow(key),
        (Outcome::Checked(Verdict::InsufficientScope) | Outcome::RouteClosed, Some(key)) => {
            Decision::Deny(key)
        }
        _ => Decision::Unauthorized,
    };
    Ok(Decided {
        decision,
        outcome,
        environment,
    })
}

fn context(key: &Key) -> Value {
    let scopes: Vec<&str> = key.scopes.iter().map(Scope::as_str).collect();
    json!({"keyId": key.id, "environment": key.environment, "kind": key.kind, "scopes": scopes.join(" ")})
}

fn policy(key: &Key, effect: &str, method_arn: &str) -> Value {
    json!({
        "principalId": key.id,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": method_arn}],
        },
        "context": context(key),
    })
}

/// Answers one authorizer event, counting the check of a known key in `usage`.
pub async fn handler(
    config: &Config,
    store: &dyn KeyLookup,
    usage: &dyn Counter,
    event: Value,
    now: Timestamp,
) -> Result<Value, AuthorizerError> {
    let ask = ask(event).inspect_err(|_| tracing::warn!("not an authorizer event"))?;
    let required = config.routes.required(&ask.method, &ask.path);
    let started = std::time::Instant::now();
    let Decided {
        decision,
        outcome,
        environment,
    } = decide(config, store, usage, &ask, required, now)
        .await
        .map_err(AuthorizerError::Store)
        .inspect_err(|e| {
            tracing::error!(error = %keyward::error_chain(e), "cannot check a key");
            // A store that fails shows on the dashboard as an outcome of its own.
            let failed = metrics::Check {
                outcome: None,
                environment: config.environment.as_ref(),
                latency: started.elapsed(),
            };
            metrics::publish(&failed, now);
        })?;
    metrics::publish(
        &metrics::Check {
            outcome: Some(outcome),
            environment: environment.as_ref(),
            latency: started.elapsed(),
        },
        now,
    );
    // The log names the method and the scope the route needs, never the path: a client may
    // paste a key into a URL.
    let method = ask.method.as_str();
    let scope = match required {
        Requirement::Scope(scope) => scope.as_str(),
        Requirement::AnyValidKey => "none",
        Requirement::Unlisted => "unlisted",
    };
    match &decision {
        Decision::Allow(key) => {
            tracing::info!(key_id = %key.id, hint = %key.hint, method, scope, "allowed")
        }
        Decision::Deny(key) => {
            tracing::info!(key_id = %key.id, hint = %key.hint, method, scope, "denied: scope")
        }
        Decision::Unauthorized => tracing::info!(method, scope, "unauthorized"),
    }
    match (decision, ask.shape) {
        (Decision::Unauthorized, Shape::Rest { .. }) => Err(AuthorizerError::Unauthorized),
        (Decision::Deny(key), Shape::Rest { method_arn }) => Ok(policy(&key, "Deny", &method_arn)),
        (Decision::Allow(key), Shape::Rest { method_arn }) => {
            Ok(policy(&key, "Allow", &method_arn))
        }
        (Decision::Unauthorized, Shape::Http) => Ok(json!({"isAuthorized": false})),
        (Decision::Deny(key), Shape::Http) => {
            Ok(json!({"isAuthorized": false, "context": context(&key)}))
        }
        (Decision::Allow(key), Shape::Http) => {
            Ok(json!({"isAuthorized": true, "context": context(&key)}))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use keyward::aws::calls::acting_as;
    use keyward::domain::{Actor, KeyHash, Kind, NewKey, Revocation, Secret, create_key, revoke};
    use keyward::domain::{PresentedKey, hour_of};
    use keyward::store::UsageStore;
    use keyward::store::{KeyStore, SqliteStore};
    use keyward::testing::orders_key;
    use keyward::testing::{KeysInEveryState, keys_in_every_state, moto_table};
    use keyward::usage::{DEFAULT_WRITE_EVERY, NotCounted, Usage};

    use super::*;

    /// The template's function these tests' AWS calls are recorded as (`keyward::aws::calls`).
    const AUTHORIZER: &str = "Authorizer";

    const TOKEN: &str = include_str!("../fixtures/token.json");
    const REQUEST: &str = include_str!("../fixtures/request.json");
    const HTTP: &str = include_str!("../fixtures/http.json");

    /// Counts the reads that reach the store.
    struct Counting<'a> {
        inner: &'a dyn KeyStore,
        reads: AtomicUsize,
    }

    #[async_trait]
    impl KeyLookup for Counting<'_> {
        async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<Key>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.key_by_hash(hash).await
        }
    }

    /// A log sink for one test thread.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn config() -> Config {
        Config {
            environment: Some(EnvName::parse("production").unwrap()),
            routes: RouteScopes::parse(
                r#"{"GET /orders": "orders:read", "POST /orders/*": "orders:write", "GET /health": ""}"#,
            )
            .unwrap(),
            allow_unlisted: false,
        }
    }

    /// Keys in every state the authorizer must tell apart, on `store`.
    async fn keys(store: &dyn KeyStore) -> KeysInEveryState {
        keys_in_every_state(store, &keyward::mint(), keyward::now()).await
    }

    /// The event of `fixture` for `method path`, presenting `token` (or nothing).
    fn event(fixture: &str, method: &str, path: &str, token: Option<&str>) -> Value {
        let (header, value) = match token {
            Some(t) if fixture == TOKEN => ("authorization", t.to_owned()),
            Some(t) => ("authorization", format!("Bearer {t}")),
            None => ("x-unrelated", "nothing".to_owned()),
        };
        let json = fixture
            .replace("{{METHOD}}", method)
            .replace("{{PATH}}", path)
            .replace("{{HEADER}}", header)
            .replace("{{VALUE}}", &value)
            .replace("{{TOKEN}}", if token.is_some() { &value } else { "" });
        serde_json::from_str(&json).expect("a valid fixture")
    }

    #[derive(Debug, PartialEq)]
    enum Outcome {
        Unauthorized,
        Deny,
        Allow,
    }

    fn outcome(
        fixture: &str,
        answer: &Result<Value, AuthorizerError>,
        method_arn_suffix: &str,
    ) -> Outcome {
        match answer {
            Err(AuthorizerError::Unauthorized) => Outcome::Unauthorized,
            Err(e) => panic!("not an authorizer answer: {e}"),
            Ok(v) if fixture == HTTP => match v["isAuthorized"].as_bool() {
                Some(true) => Outcome::Allow,
                _ if v.get("context").is_some() => Outcome::Deny,
                _ => Outcome::Unauthorized,
            },
            Ok(v) => {
                let statement = &v["policyDocument"]["Statement"][0];
                assert!(
                    statement["Resource"]
                        .as_str()
                        .unwrap()
                        .ends_with(method_arn_suffix),
                    "exactly the method asked for: {v}"
                );
                assert_eq!(statement["Action"], "execute-api:Invoke");
                match statement["Effect"].as_str() {
                    Some("Allow") => Outcome::Allow,
                    Some("Deny") => Outcome::Deny,
                    other => panic!("no effect: {other:?}"),
                }
            }
        }
    }

    async fn every_outcome_on_every_shape(store: Arc<dyn KeyStore>) {
        let store = &*store;
        let mint = keyward::mint();
        let k = keys(store).await;
        let config = config();
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt().with_writer({
            let logs = logs.clone();
            move || logs.clone()
        });
        let _guard = tracing::subscriber::set_default(subscriber.finish());
        // tracing-core asks only the registering thread's own subscriber about a new callsite
        // while exactly one scoped subscriber exists, so a test on another thread that logs
        // `allowed` first would switch that line off here too. A second one keeps it asking all.
        let _second = tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .with_writer(std::io::sink)
                .finish(),
        );
        let reader = k.reader.secret.expose();
        let bad_checksum = format!("{}000000", &reader[..reader.len() - 6]);
        let unknown = Secret::generate(&mint, Kind::Secret, config.environment.as_ref().unwrap());
        let pasted_path = format!("/echo/{reader}");
        let cases = [
            ("missing", None, "GET", "/orders", Outcome::Unauthorized, 0),
            (
                "malformed",
                Some("hello"),
                "GET",
                "/orders",
                Outcome::Unauthorized,
                0,
            ),
            (
                "bad checksum",
                Some(&bad_checksum),
                "GET",
                "/orders",
                Outcome::Unauthorized,
                0,
            ),
            (
                "another environment",
                Some(k.staging.secret.expose()),
                "GET",
                "/orders",
                Outcome::Unauthorized,
                0,
            ),
            (
                "unknown",
                Some(unknown.expose()),
                "GET",
                "/orders",
                Outcome::Unauthorized,
                1,
            ),
            (
                "expired",
                Some(k.expired.secret.expose()),
                "GET",
                "/orders",
                Outcome::Unauthorized,
                1,
            ),
            (
                "revoked",
                Some(k.revoked.secret.expose()),
                "GET",
                "/orders",
                Outcome::Unauthorized,
                1,
            ),
            (
                "without the scope",
                Some(reader),
                "POST",
                "/orders/42",
                Outcome::Deny,
                1,
            ),
            (
                "with the scope",
                Some(reader),
                "GET",
                "/orders",
                Outcome::Allow,
                1,
            ),
            (
                "on a route listed with no scope",
                Some(reader),
                "GET",
                "/health",
                Outcome::Allow,
                1,
            ),
            (
                "on an unlisted route",
                Some(reader),
                "DELETE",
                "/orders",
                Outcome::Deny,
                1,
            ),
            (
                "an unknown key on an unlisted route",
                Some(unknown.expose()),
                "GET",
                "/unlisted",
                Outcome::Unauthorized,
                1,
            ),
            (
                "with a key pasted into an unlisted path",
                Some(reader),
                "GET",
                pasted_path.as_str(),
                Outcome::Deny,
                1,
            ),
        ];
        for fixture in [TOKEN, REQUEST, HTTP] {
            for (what, token, method, path, expected, reads) in &cases {
                let counting = Counting {
                    inner: store,
                    reads: AtomicUsize::new(0),
                };
                let asked = event(fixture, method, path, *token);
                let checking = handler(&config, &counting, &NotCounted, asked, keyward::now());
                let answer = acting_as(AUTHORIZER, checking).await;
                let shape = &fixture[..40];
                assert_eq!(
                    outcome(fixture, &answer, &format!("/{method}{path}")),
                    *expected,
                    "{what} on {shape}"
                );
                assert_eq!(
                    counting.reads.load(Ordering::SeqCst),
                    *reads,
                    "store reads for {what} on {shape}"
                );
                if *expected == Outcome::Allow {
                    assert_eq!(
                        answer.as_ref().unwrap()["context"],
                        json!({"keyId": k.reader.key.id, "environment": "production", "kind": "secret", "scopes": "orders:read"})
                    );
                    if fixture != HTTP {
                        assert_eq!(
                            answer.as_ref().unwrap()["principalId"],
                            k.reader.key.id.as_str()
                        );
                    }
                }
            }
        }
        let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert!(
            logged.contains("allowed") && logged.contains(k.reader.key.id.as_str()),
            "the log was captured: {logged}"
        );
        for secret in [
            reader,
            k.expired.secret.expose(),
            k.revoked.secret.expose(),
            k.staging.secret.expose(),
            unknown.expose(),
            &bad_checksum,
        ] {
            assert!(!logged.contains(secret), "a secret is in the log");
        }
    }

    async fn revocation_holds_on_the_next_call(store: Arc<dyn KeyStore>) {
        let store = &*store;
        let mint = keyward::mint();
        keys(store).await;
        let config = config();
        for fixture in [TOKEN, REQUEST, HTTP] {
            let input = orders_key("short-lived");
            let issued = create_key(
                config.environment.as_ref().unwrap(),
                input,
                Actor::operator("t"),
                &mint,
                keyward::now(),
            )
            .unwrap();
            store.apply(&issued.change).await.unwrap();
            let ask = || event(fixture, "GET", "/orders", Some(issued.secret.expose()));
            let checking = handler(&config, store, &NotCounted, ask(), keyward::now());
            let before = acting_as(AUTHORIZER, checking).await;
            assert_eq!(outcome(fixture, &before, "/GET/orders"), Outcome::Allow);
            let Revocation::Revoked { change, .. } =
                revoke(&issued.key, Actor::operator("t"), &mint, keyward::now()).unwrap()
            else {
                panic!()
            };
            store.apply(&change).await.unwrap();
            let checking = handler(&config, store, &NotCounted, ask(), keyward::now());
            let after = acting_as(AUTHORIZER, checking).await;
            assert_eq!(
                outcome(fixture, &after, "/GET/orders"),
                Outcome::Unauthorized,
                "the very next call"
            );
        }
    }

    /// Every shape counts each check of a known key: allowed ones as accepted, denied and
    /// unauthorized ones (a missing scope, a revoked key) as refused. A key refused on its
    /// prefix alone (another environment, a bad checksum) is never read, so nothing counts.
    async fn every_check_of_a_known_key_counts(store: Arc<dyn KeyStore>) {
        let k = keys(&*store).await;
        let usage = Usage::for_function(
            store.clone() as Arc<dyn UsageStore>,
            DEFAULT_WRITE_EVERY,
            AUTHORIZER,
        );
        let now = keyward::now();
        let revoked = store
            .key_by_hash(&PresentedKey::parse(k.revoked.secret.expose()).unwrap().hash)
            .await
            .unwrap()
            .unwrap();
        let staging = store
            .key_by_hash(&PresentedKey::parse(k.staging.secret.expose()).unwrap().hash)
            .await
            .unwrap()
            .unwrap();
        let cases = [
            (
                "GET",
                "/orders",
                k.reader.secret.expose(),
                7,
                Outcome::Allow,
            ),
            (
                "POST",
                "/orders/1",
                k.reader.secret.expose(),
                2,
                Outcome::Deny,
            ),
            (
                "GET",
                "/orders",
                k.revoked.secret.expose(),
                3,
                Outcome::Unauthorized,
            ),
            (
                "GET",
                "/orders",
                k.staging.secret.expose(),
                4,
                Outcome::Unauthorized,
            ),
            (
                "GET",
                "/orders",
                "kw_sk_production_garbage",
                5,
                Outcome::Unauthorized,
            ),
        ];
        for fixture in [TOKEN, REQUEST, HTTP] {
            for (method, path, token, times, expected) in &cases {
                for _ in 0..*times {
                    let asked = event(fixture, method, path, Some(token));
                    let config = config();
                    let checking = handler(&config, &*store, &usage, asked, now);
                    let answer = acting_as(AUTHORIZER, checking).await;
                    assert_eq!(
                        &outcome(fixture, &answer, &format!("/{method}{path}")),
                        expected
                    );
                }
            }
        }
        assert_eq!(usage.flush_all(std::time::Duration::from_secs(30)).await, 0);
        let counts = |key: Key| {
            let store = Arc::clone(&store);
            async move {
                let hours = store
                    .hourly_usage(&key.environment, &key.id, hour_of(now))
                    .await
                    .unwrap();
                hours
                    .iter()
                    .fold((0, 0), |(a, r), h| (a + h.accepted, r + h.refused))
            }
        };
        assert_eq!(counts(k.reader.key.clone()).await, (21, 6));
        assert_eq!(counts(revoked).await, (0, 9));
        assert_eq!(counts(staging).await, (0, 0));
    }

    keyward::on_both_stores!(
        on_sqlite => Arc::new(SqliteStore::in_memory().unwrap()),
        on_dynamodb => Arc::new(moto_table("authorizer").await.store);
        every_check_of_a_known_key_counts,
        every_outcome_on_every_shape,
        revocation_holds_on_the_next_call
    );

    #[tokio::test]
    async fn with_any_environment_a_valid_key_of_each_environment_is_allowed() {
        let store = SqliteStore::in_memory().unwrap();
        let k = keys(&store).await;
        let any = Config {
            environment: None,
            ..config()
        };
        for fixture in [TOKEN, REQUEST, HTTP] {
            let ask = |token: &str| event(fixture, "GET", "/orders", Some(token));
            let allowed = handler(
                &any,
                &store,
                &NotCounted,
                ask(k.staging.secret.expose()),
                keyward::now(),
            )
            .await;
            assert_eq!(outcome(fixture, &allowed, "/GET/orders"), Outcome::Allow);
            assert_eq!(allowed.unwrap()["context"]["environment"], "staging");
            let refused = handler(
                &config(),
                &store,
                &NotCounted,
                ask(k.staging.secret.expose()),
                keyward::now(),
            )
            .await;
            assert_eq!(
                outcome(fixture, &refused, "/GET/orders"),
                Outcome::Unauthorized
            );
            let revoked = handler(
                &any,
                &store,
                &NotCounted,
                ask(k.revoked.secret.expose()),
                keyward::now(),
            )
            .await;
            assert_eq!(
                outcome(fixture, &revoked, "/GET/orders"),
                Outcome::Unauthorized
            );
        }
    }

    #[tokio::test]
    async fn an_event_of_no_known_shape_is_an_error_not_a_panic() {
        let store = SqliteStore::in_memory().unwrap();
        for event in [
            json!({}),
            json!({"type": "TOKEN", "methodArn": 5}),
            json!([1, 2]),
            json!({"type": "WEBSOCKET"}),
        ] {
            let answer = handler(
                &config(),
                &store,
                &NotCounted,
                event.clone(),
                keyward::now(),
            )
            .await;
            assert!(
                matches!(answer, Err(AuthorizerError::UnknownEvent)),
                "{event}"
            );
        }
        let unauthorized = Diagnostic::from(AuthorizerError::Unauthorized);
        assert_eq!(
            unauthorized.error_message, "Unauthorized",
            "API Gateway matches this message exactly"
        );
    }

    /// An event that names no method is no request of any route: even with unlisted routes
    /// open it is refused as unknown, never allowed on an empty resource.
    #[tokio::test]
    async fn an_event_without_its_method_is_unknown_even_with_unlisted_routes_open() {
        let store = SqliteStore::in_memory().unwrap();
        let k = keys(&store).await;
        let open = Config {
            allow_unlisted: true,
            ..config()
        };
        for fixture in [TOKEN, REQUEST, HTTP] {
            let whole = event(fixture, "GET", "/orders", Some(k.reader.secret.expose()));
            let field = if fixture == HTTP {
                "routeArn"
            } else {
                "methodArn"
            };
            let arn = whole[field].as_str().unwrap().to_owned();
            let stage = arn.rsplitn(3, '/').nth(2).unwrap().to_owned();
            for broken in [
                None,
                Some(String::new()),
                Some(stage.clone()),
                Some(format!("{stage}/")),
            ] {
                let mut asked = whole.clone();
                match &broken {
                    None => asked.as_object_mut().unwrap().remove(field),
                    Some(arn) => asked
                        .as_object_mut()
                        .unwrap()
                        .insert(field.into(), json!(arn)),
                };
                let answer = handler(&open, &store, &NotCounted, asked, keyward::now()).await;
                assert!(
                    matches!(answer, Err(AuthorizerError::UnknownEvent)),
                    "{fixture:.40} with {field} {broken:?}: {answer:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn unlisted_routes_are_open_only_when_the_configuration_says_so() {
        let store = SqliteStore::in_memory().unwrap();
        let k = keys(&store).await;
        let open = Config {
            allow_unlisted: true,
            ..config()
        };
        for fixture in [TOKEN, REQUEST, HTTP] {
            let ask = |token: &str| event(fixture, "GET", "/unlisted/7", Some(token));
            let closed = handler(
                &config(),
                &store,
                &NotCounted,
                ask(k.reader.secret.expose()),
                keyward::now(),
            )
            .await;
            assert_eq!(outcome(fixture, &closed, "/GET/unlisted/7"), Outcome::Deny);
            let allowed = handler(
                &open,
                &store,
                &NotCounted,
                ask(k.reader.secret.expose()),
                keyward::now(),
            )
            .await;
            assert_eq!(
                outcome(fixture, &allowed, "/GET/unlisted/7"),
                Outcome::Allow
            );
            let revoked = handler(
                &open,
                &store,
                &NotCounted,
                ask(k.revoked.secret.expose()),
                keyward::now(),
            )
            .await;
            assert_eq!(
                outcome(fixture, &revoked, "/GET/unlisted/7"),
                Outcome::Unauthorized,
                "an open route still needs a valid key"
            );
            let scoped = event(fixture, "POST", "/orders/1", Some(k.reader.secret.expose()));
            let denied = handler(&open, &store, &NotCounted, scoped, keyward::now()).await;
            assert_eq!(
                outcome(fixture, &denied, "/POST/orders/1"),
                Outcome::Deny,
                "opening unlisted routes leaves listed scopes in force"
            );
        }
    }

    #[tokio::test]
    async fn the_context_names_a_publishable_key_as_such() {
        let mint = keyward::mint();
        let store = SqliteStore::in_memory().unwrap();
        keys(&store).await;
        let input = NewKey {
            kind: Kind::Publishable,
            ..orders_key("browser")
        };
        let production = EnvName::parse("production").unwrap();
        let issued = create_key(
            &production,
            input,
            Actor::operator("t"),
            &mint,
            keyward::now(),
        )
        .unwrap();
        store.apply(&issued.change).await.unwrap();
        for fixture in [TOKEN, REQUEST, HTTP] {
            let ask = event(fixture, "GET", "/orders", Some(issued.secret.expose()));
            let answer = handler(&config(), &store, &NotCounted, ask, keyward::now())
                .await
                .unwrap();
            assert_eq!(answer["context"]["kind"], "publishable");
        }
    }

    /// Patterns chosen so that every rule of the precedence order decides some request.
    const PATTERNS: [(&str, &str); 9] = [
        ("GET /orders", "orders:read"),
        ("POST /orders/*", "orders:write"),
        ("ANY /admin/*/x", "admin"),
        ("GET /orders/special", "special"),
        ("GET /a/*", "a"),
        ("GET /*/b", "b"),
        ("ANY /a/b", "any-a-b"),
        ("GET /*/*", "two"),
        ("GET /health", ""),
    ];

    fn requirement(routes: &RouteScopes, method: &str, path: &str) -> String {
        match routes.required(method, path) {
            Requirement::Scope(scope) => scope.as_str().to_owned(),
            Requirement::AnyValidKey => "any valid key".to_owned(),
            Requirement::Unlisted => "unlisted".to_owned(),
        }
    }

    #[test]
    fn one_precedence_rule_decides_whatever_order_the_patterns_come_in() {
        let expected = [
            ("GET", "/orders", "orders:read"),
            ("get", "/orders/", "orders:read"),
            ("POST", "/orders/42", "orders:write"),
            ("DELETE", "/admin/7/x", "admin"),
            ("GET", "/orders/special", "special"),
            ("GET", "/orders/42", "two"),
            ("GET", "/a/b", "any-a-b"),
            ("POST", "/a/b", "any-a-b"),
            ("GET", "/a/c", "a"),
            ("GET", "/c/b", "b"),
            ("GET", "/c/d", "two"),
            ("GET", "/health", "any valid key"),
            ("POST", "/a/c", "unlisted"),
            ("POST", "/orders/42/items", "unlisted"),
            ("GET", "/", "unlisted"),
        ];
        let mut order: Vec<usize> = (0..PATTERNS.len()).collect();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..500 {
            for i in (1..order.len()).rev() {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                order.swap(i, (seed >> 33) as usize % (i + 1));
            }
            let members: Vec<String> = order
                .iter()
                .map(|&i| format!("{:?}: {:?}", PATTERNS[i].0, PATTERNS[i].1))
                .collect();
            let json = format!("{{{}}}", members.join(", "));
            let routes = RouteScopes::parse(&json).unwrap();
            for (method, path, scope) in expected {
                assert_eq!(
                    requirement(&routes, method, path),
                    scope,
                    "{method} {path} with {json}"
                );
            }
        }
    }

    #[test]
    fn patterns_that_match_the_same_requests_with_equal_precedence_are_refused() {
        for (json, first, second) in [
            (r#"{"GET /a": "x", "get /a/": "y"}"#, "GET /a", "get /a/"),
            (r#"{"GET /a": "x", "GET /a": "x"}"#, "GET /a", "GET /a"),
            (
                r#"{"ANY /a/*": "x", "ANY //a/*": "y"}"#,
                "ANY /a/*",
                "ANY //a/*",
            ),
        ] {
            let err = RouteScopes::parse(json).unwrap_err();
            assert!(
                err.contains(&format!("{first:?}")) && err.contains(&format!("{second:?}")),
                "{json}: {err}"
            );
        }
        for distinct in [
            r#"{"GET /a/*": "x", "POST /a/*": "y"}"#,
            r#"{"GET /a/*": "x", "GET /b/*": "y"}"#,
            r#"{"GET /a/*": "x", "ANY /a/*": "y"}"#,
            r#"{"GET /a/*": "x", "GET /*/b": "y"}"#,
        ] {
            assert!(RouteScopes::parse(distinct).is_ok(), "{distinct}");
        }
        for bad in [
            "[]",
            "{\"GET\": \"a\"}",
            "{\"GET orders\": \"a\"}",
            "{\"GET /a\": \"Not A Scope\"}",
            "{\"GET /a\": 5}",
        ] {
            assert!(RouteScopes::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unlisted_routes_are_denied_unless_allow_is_said() {
        let with = |unlisted: Option<&str>| {
            Config::from_vars(|name| match name {
                Config::ENVIRONMENT_VAR => Some("production".to_owned()),
                Config::UNLISTED_ROUTES_VAR => unlisted.map(str::to_owned),
                _ => None,
            })
        };
        assert!(!with(None).unwrap().allow_unlisted, "closed when unsaid");
        assert!(!with(Some("deny")).unwrap().allow_unlisted);
        assert!(with(Some("allow")).unwrap().allow_unlisted);
        for bad in ["Allow", "yes", "", "true"] {
            assert!(with(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn method_and_path_come_from_the_arn() {
        assert_eq!(
            method_and_path("arn:aws:execute-api:us-east-1:1:api/prod/GET/orders/42"),
            Some(("GET".into(), "/orders/42".into()))
        );
        assert_eq!(
            method_and_path("arn:aws:execute-api:us-east-1:1:api/prod/POST/"),
            Some(("POST".into(), "/".into()))
        );
        assert_eq!(method_and_path("garbage"), None, "no method: no route");
    }
}
