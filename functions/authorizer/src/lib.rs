//! keyward's Lambda authorizer, with the same rules as `/v1/verify`.
//!
//! It answers the three event shapes API Gateway sends, telling them apart by their fields:
//! REST `TOKEN` and `REQUEST` authorizers get an IAM policy, or the error `Unauthorized`
//! (API Gateway's `401`); HTTP API payload 2.0 authorizers get a simple `isAuthorized`.
//! A missing, malformed, unknown, expired or revoked key, or a key of another environment, is
//! unauthorized; a valid key without the route's scope, or used from outside its allowed
//! networks (`sourceIp`, never `X-Forwarded-For`; a `TOKEN` event carries no address, so a key
//! with allowed networks is denied there), gets a Deny policy (`403`) whose context names the
//! `reason` (`insufficient_scope`, `unlisted_route`, `ip_not_allowed`, `ip_required`). An allow
//! covers exactly the method that was asked for, so a cached policy opens nothing else, and
//! passes `keyId`, `environment` and `scopes` (space-separated) to the backend.
//!
//! A key that fails the format or checksum check, or whose checksummed prefix names another
//! environment, is refused without reading the store; any other check is one strongly
//! consistent read. Nothing is cached, so a revoked key fails on the very next request.
//!
//! Where people are accepted (an issuer in `keyward::http::ISSUER_VAR`, which keyward's own
//! API authorizer gets and the exported one does not), a person's token is checked instead, with
//! no store read: a token that fails a check is unauthorized, and a person is allowed a route
//! whose scope their groups grant in the authorizer's environment (in any, for `*`), with
//! `person` (their subject) in the context. An issuer whose keys cannot be had is an error
//! (`500`), not a refusal. The API's own handlers
//! check the token again. An authorizer of one environment, the one other teams attach, never
//! takes people ([`Config::people`]).

mod config;
mod event;
mod routes;

pub use config::{ANY_ENVIRONMENT, Config};
pub use routes::{Requirement, RouteScopes};

use keyward::check::{Checked, Needs, Outcome, check_presented};
use keyward::domain::{EnvName, Key, Person, Scope, Timestamp, Verdict};
use keyward::http::{People, person_token};
use keyward::metrics;
use keyward::store::{KeyLookup, StoreError};
use keyward::usage::Counter;
use lambda_http::lambda_runtime::Diagnostic;
use serde_json::{Value, json};

use event::{Ask, Shape, ask};

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
    /// The identity provider's keys could not be had to check a person's token: API Gateway
    /// answers `500`, so that the client retries rather than drops a token that may be good.
    #[error("the identity provider's keys are unavailable")]
    IdentityProvider,
}

impl From<AuthorizerError> for Diagnostic {
    /// API Gateway turns an error whose message is exactly `Unauthorized` into `401`; any other
    /// error becomes `500`.
    fn from(e: AuthorizerError) -> Self {
        let error_type = match e {
            AuthorizerError::Unauthorized => "Unauthorized",
            AuthorizerError::UnknownEvent => "UnknownEvent",
            AuthorizerError::Store(_) => "StoreError",
            AuthorizerError::IdentityProvider => "IdentityProviderUnavailable",
        };
        Diagnostic {
            error_type: error_type.to_owned(),
            error_message: e.to_string(),
        }
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
        source: ask.source,
        scopes: match required {
            Requirement::Scope(required) => {
                scope = [required.as_str()];
                &scope
            }
            Requirement::AnyValidKey | Requirement::Unlisted => &[],
        },
        closed: required == Requirement::Unlisted && !config.allow_unlisted,
    };
    let Checked { outcome, key } = check_presented(
        store,
        usage,
        &config.key_prefix,
        ask.token.as_deref(),
        needs,
        now,
    )
    .await?;
    let environment = key
        .as_ref()
        .map(|k| k.environment.clone())
        .or_else(|| config.environment.clone());
    let decision = match (outcome, key) {
        (Outcome::Checked(Verdict::Valid), Some(key)) => Decision::Allow(key),
        (
            Outcome::Checked(
                Verdict::InsufficientScope | Verdict::IpNotAllowed | Verdict::IpRequired,
            )
            | Outcome::RouteClosed,
            Some(key),
        ) => Decision::Deny(key),
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

/// A REST authorizer's answer: `effect` on exactly `method_arn`, for `principal`.
fn policy(principal: &str, effect: &str, method_arn: &str, context: Value) -> Value {
    json!({
        "principalId": principal,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": method_arn}],
        },
        "context": context,
    })
}

/// Whether `person` may have a route that needs `required`, in the authorizer's environment.
/// A route that needs no scope lets in a person whose groups grant nothing, as it lets in any
/// valid key: on keyward's own API, whose routes all need none here, the function behind
/// answers `403 no_role`, where API Gateway's own `403` could only say `ip_not_allowed`.
fn person_allowed(config: &Config, person: &Person, required: Requirement<'_>) -> bool {
    match required {
        Requirement::Scope(scope) => match &config.environment {
            Some(environment) => person.grants.scopes_in(environment).grants(scope.as_str()),
            None => person.grants.grants_anywhere(scope.as_str()),
        },
        Requirement::AnyValidKey => true,
        Requirement::Unlisted => config.allow_unlisted,
    }
}

/// The answer for a person's token: unauthorized when it fails a check, else an allow or a
/// deny of the route, as API Gateway's `shape` wants it.
fn answer_person(
    config: &Config,
    checked: Result<Person, keyward::http::ApiError>,
    ask: &Ask,
    required: Requirement<'_>,
) -> Result<Value, AuthorizerError> {
    let person = match checked {
        Ok(person) => person,
        Err(e) if e.status().is_server_error() => {
            tracing::error!(reason = e.code(), "cannot check a person's token");
            return Err(AuthorizerError::IdentityProvider);
        }
        Err(e) => {
            tracing::info!(
                method = ask.method.as_str(),
                reason = e.code(),
                "unauthorized"
            );
            return match ask.shape {
                Shape::Rest { .. } => Err(AuthorizerError::Unauthorized),
                Shape::Http => Ok(json!({"isAuthorized": false})),
            };
        }
    };
    let allowed = person_allowed(config, &person, required);
    tracing::info!(
        person = person.sub.as_str(),
        method = ask.method.as_str(),
        allowed,
        "a person's token"
    );
    let context = json!({"person": person.sub});
    Ok(match &ask.shape {
        Shape::Rest { method_arn } => {
            let effect = if allowed { "Allow" } else { "Deny" };
            policy(&person.sub, effect, method_arn, context)
        }
        Shape::Http => json!({"isAuthorized": allowed, "context": context}),
    })
}

/// Answers one authorizer event, counting the check of a known key in `usage`; a person's
/// token goes to `people`.
pub async fn handler(
    config: &Config,
    store: &dyn KeyLookup,
    usage: &dyn Counter,
    people: &dyn People,
    event: Value,
    now: Timestamp,
) -> Result<Value, AuthorizerError> {
    let ask = ask(event).inspect_err(|_| tracing::warn!("not an authorizer event"))?;
    let required = config.routes.required(&ask.method, &ask.path);
    if let Some(token) = person_token(people, ask.token.as_deref(), ask.session.as_deref()) {
        let checked = people.person(token, now).await;
        return answer_person(config, checked, &ask, required);
    }
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
            let reason = outcome.code();
            tracing::info!(key_id = %key.id, hint = %key.hint, method, scope, reason, "denied")
        }
        Decision::Unauthorized => tracing::info!(method, scope, "unauthorized"),
    }
    match (decision, ask.shape) {
        (Decision::Unauthorized, Shape::Rest { .. }) => Err(AuthorizerError::Unauthorized),
        (Decision::Deny(key), Shape::Rest { method_arn }) => {
            let mut denied = policy(key.id.as_str(), "Deny", &method_arn, context(&key));
            denied["context"]["reason"] = json!(outcome.code());
            Ok(denied)
        }
        (Decision::Allow(key), Shape::Rest { method_arn }) => {
            Ok(policy(key.id.as_str(), "Allow", &method_arn, context(&key)))
        }
        (Decision::Unauthorized, Shape::Http) => Ok(json!({"isAuthorized": false})),
        (Decision::Deny(key), Shape::Http) => {
            let mut context = context(&key);
            context["reason"] = json!(outcome.code());
            Ok(json!({"isAuthorized": false, "context": context}))
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
    use keyward::domain::{
        Actor, AllowedIps, KeyHash, Kind, NewKey, Revocation, Secret, create_key, revoke,
    };
    use keyward::domain::{KeyPrefix, PresentedKey, hour_of};
    use keyward::http::NoPeople;
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
            key_prefix: Default::default(),
        }
    }

    /// What the authorizer answers `event` with under `config`, counting nothing.
    async fn answered(
        config: &Config,
        store: &dyn KeyLookup,
        event: Value,
    ) -> Result<Value, AuthorizerError> {
        handler(config, store, &NotCounted, &NoPeople, event, keyward::now()).await
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
                let checking = handler(
                    &config,
                    &counting,
                    &NotCounted,
                    &NoPeople,
                    asked,
                    keyward::now(),
                );
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
            let checking = answered(&config, store, ask());
            let before = acting_as(AUTHORIZER, checking).await;
            assert_eq!(outcome(fixture, &before, "/GET/orders"), Outcome::Allow);
            let Revocation::Revoked { change, .. } =
                revoke(&issued.key, Actor::operator("t"), &mint, keyward::now()).unwrap()
            else {
                panic!()
            };
            store.apply(&change).await.unwrap();
            let checking = answered(&config, store, ask());
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
            .key_by_hash(
                &PresentedKey::parse(k.revoked.secret.expose(), &Default::default())
                    .unwrap()
                    .hash,
            )
            .await
            .unwrap()
            .unwrap();
        let staging = store
            .key_by_hash(
                &PresentedKey::parse(k.staging.secret.expose(), &Default::default())
                    .unwrap()
                    .hash,
            )
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
                    let checking = handler(&config, &*store, &usage, &NoPeople, asked, now);
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
        one_thread:
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
            let allowed = answered(&any, &store, ask(k.staging.secret.expose())).await;
            assert_eq!(outcome(fixture, &allowed, "/GET/orders"), Outcome::Allow);
            assert_eq!(allowed.unwrap()["context"]["environment"], "staging");
            let refused = answered(&config(), &store, ask(k.staging.secret.expose())).await;
            assert_eq!(
                outcome(fixture, &refused, "/GET/orders"),
                Outcome::Unauthorized
            );
            let revoked = answered(&any, &store, ask(k.revoked.secret.expose())).await;
            assert_eq!(
                outcome(fixture, &revoked, "/GET/orders"),
                Outcome::Unauthorized
            );
        }
    }

    #[tokio::test]
    async fn a_deployment_with_its_own_key_prefix_takes_no_other_deployments_key() {
        let store = SqliteStore::in_memory().unwrap();
        let k = keys(&store).await;
        let acme = Config {
            key_prefix: KeyPrefix::parse("acme").unwrap(),
            ..config()
        };
        for fixture in [TOKEN, REQUEST, HTTP] {
            let ask = |token: &str| event(fixture, "GET", "/orders", Some(token));
            let allowed = answered(&config(), &store, ask(k.reader.secret.expose())).await;
            assert_eq!(outcome(fixture, &allowed, "/GET/orders"), Outcome::Allow);
            let refused = answered(&acme, &store, ask(k.reader.secret.expose())).await;
            assert_eq!(
                outcome(fixture, &refused, "/GET/orders"),
                Outcome::Unauthorized,
                "a kw_ key is malformed where the prefix is acme"
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
            let answer = answered(&config(), &store, event.clone()).await;
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
                let answer = answered(&open, &store, asked).await;
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
            let closed = answered(&config(), &store, ask(k.reader.secret.expose())).await;
            assert_eq!(outcome(fixture, &closed, "/GET/unlisted/7"), Outcome::Deny);
            let allowed = answered(&open, &store, ask(k.reader.secret.expose())).await;
            assert_eq!(
                outcome(fixture, &allowed, "/GET/unlisted/7"),
                Outcome::Allow
            );
            let revoked = answered(&open, &store, ask(k.revoked.secret.expose())).await;
            assert_eq!(
                outcome(fixture, &revoked, "/GET/unlisted/7"),
                Outcome::Unauthorized,
                "an open route still needs a valid key"
            );
            let scoped = event(fixture, "POST", "/orders/1", Some(k.reader.secret.expose()));
            let denied = answered(&open, &store, scoped).await;
            assert_eq!(
                outcome(fixture, &denied, "/POST/orders/1"),
                Outcome::Deny,
                "opening unlisted routes leaves listed scopes in force"
            );
        }
    }

    #[tokio::test]
    async fn a_key_with_allowed_networks_is_held_to_the_address_api_gateway_saw_never_a_header() {
        let store = SqliteStore::in_memory().unwrap();
        keys(&store).await;
        let input = NewKey {
            allowed_ips: AllowedIps::parse(&["198.51.100.0/24"]).unwrap(),
            ..orders_key("pinned")
        };
        let production = EnvName::parse("production").unwrap();
        let pinned = create_key(
            &production,
            input,
            Actor::operator("t"),
            &keyward::mint(),
            keyward::now(),
        )
        .unwrap();
        store.apply(&pinned.change).await.unwrap();
        let secret = pinned.secret.expose();
        // The caller writes X-Forwarded-For, and names an allowed address in it.
        let from = |fixture: &str, source: &str| {
            let mut e = event(fixture, "GET", "/orders", Some(secret));
            let context = if fixture == REQUEST {
                "identity"
            } else {
                "http"
            };
            e["requestContext"][context]["sourceIp"] = json!(source);
            e["headers"]["X-Forwarded-For"] = json!("198.51.100.7");
            e
        };
        for fixture in [REQUEST, HTTP] {
            let inside = answered(&config(), &store, from(fixture, "198.51.100.20")).await;
            assert_eq!(outcome(fixture, &inside, "/GET/orders"), Outcome::Allow);
            let outside = answered(&config(), &store, from(fixture, "203.0.113.9")).await;
            assert_eq!(outcome(fixture, &outside, "/GET/orders"), Outcome::Deny);
            assert_eq!(outside.unwrap()["context"]["reason"], "ip_not_allowed");
            // What API Gateway's console test puts there: no address, so no pass.
            let unknown = answered(&config(), &store, from(fixture, "test-invoke-source-ip")).await;
            assert_eq!(outcome(fixture, &unknown, "/GET/orders"), Outcome::Deny);
            assert_eq!(unknown.unwrap()["context"]["reason"], "ip_required");
        }
        let token = event(TOKEN, "GET", "/orders", Some(secret));
        let token = answered(&config(), &store, token).await;
        assert_eq!(outcome(TOKEN, &token, "/GET/orders"), Outcome::Deny);
        assert_eq!(
            token.unwrap()["context"]["reason"],
            "ip_required",
            "a TOKEN event carries no address"
        );
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
            let answer = answered(&config(), &store, ask).await.unwrap();
            assert_eq!(answer["context"]["kind"], "publishable");
        }
    }

    #[tokio::test]
    async fn a_persons_token_is_held_to_the_routes_scope_in_the_authorizers_environment() {
        use keyward::oidc::{Oidc, OidcSettings};
        use keyward::testing::Es256Issuer;
        let issuer = Es256Issuer::start();
        let roles = r#"{"prod-readers": {"production": ["orders:read"]}, "staging-readers": {"staging": ["orders:read"]}, "any-readers": {"*": ["orders:read"]}}"#;
        let settings = OidcSettings::new(&issuer.issuer, "keyward", None, Some(roles)).unwrap();
        let people = Oidc::new(settings).unwrap();
        let now = keyward::now();
        let token = |groups: &[&str]| {
            issuer.sign(&issuer.claims("keyward", "dana", groups, now.timestamp()))
        };
        let store = SqliteStore::in_memory().unwrap();
        // An authorizer of one environment refuses people at its start (Config::people); the
        // cases on one are for a configuration made by hand, to hold the rule all the same.
        let every = Config {
            environment: None,
            ..config()
        };
        let cases: [(&Config, &[&str], &str, Outcome); 7] = [
            (&config(), &["prod-readers"], "/orders", Outcome::Allow),
            (&config(), &["any-readers"], "/orders", Outcome::Allow),
            (&config(), &["staging-readers"], "/orders", Outcome::Deny),
            (&config(), &["nobody"], "/health", Outcome::Allow),
            (&config(), &["prod-readers"], "/unlisted", Outcome::Deny),
            (&every, &["staging-readers"], "/orders", Outcome::Allow),
            (&every, &["nobody"], "/orders", Outcome::Deny),
        ];
        for fixture in [TOKEN, REQUEST, HTTP] {
            for (config, groups, path, expected) in &cases {
                let asked = event(fixture, "GET", path, Some(&token(groups)));
                let answer = handler(config, &store, &NotCounted, &people, asked, now).await;
                assert_eq!(
                    outcome(fixture, &answer, &format!("/GET{path}")),
                    *expected,
                    "{groups:?} on {path}"
                );
                if *expected == Outcome::Allow {
                    assert_eq!(answer.unwrap()["context"]["person"], "dana");
                }
            }
            let tampered = format!("{}x", token(&["prod-readers"]));
            let asked = event(fixture, "GET", "/orders", Some(&tampered));
            let answer = handler(&config(), &store, &NotCounted, &people, asked, now).await;
            assert_eq!(
                outcome(fixture, &answer, "/GET/orders"),
                Outcome::Unauthorized
            );
        }
    }

    #[tokio::test]
    async fn the_consoles_session_cookie_is_a_persons_token_only_with_the_consoles_header() {
        use keyward::oidc::{Oidc, OidcSettings};
        use keyward::testing::Es256Issuer;
        let issuer = Es256Issuer::start();
        let roles = r#"{"prod-readers": {"production": ["orders:read"]}}"#;
        let settings = OidcSettings::new(&issuer.issuer, "keyward", None, Some(roles)).unwrap();
        let people = Oidc::new(settings).unwrap();
        let now = keyward::now();
        let token =
            issuer.sign(&issuer.claims("keyward", "dana", &["prod-readers"], now.timestamp()));
        let store = SqliteStore::in_memory().unwrap();
        let cookie = format!("__Host-keyward-session={token}");
        let mut console = event(REQUEST, "GET", "/orders", None);
        console["headers"]["Cookie"] = json!(cookie);
        console["headers"]["x-keyward-console"] = json!("1");
        let mut alone = event(REQUEST, "GET", "/orders", None);
        alone["headers"]["Cookie"] = json!(cookie);
        for (asked, expected) in [(console, Outcome::Allow), (alone, Outcome::Unauthorized)] {
            let answer = handler(&config(), &store, &NotCounted, &people, asked, now).await;
            assert_eq!(outcome(REQUEST, &answer, "/GET/orders"), expected);
        }
    }

    #[tokio::test]
    async fn an_issuer_whose_keys_cannot_be_had_is_an_error_not_a_refusal() {
        use keyward::oidc::{Oidc, OidcSettings};
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let issuer = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let people = Oidc::new(OidcSettings::new(&issuer, "keyward", None, None).unwrap()).unwrap();
        let claims = serde_json::json!({"iss": issuer}).to_string();
        let b64 = |text: &str| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
        };
        let token = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"ES256","kid":"k1"}"#),
            b64(&claims)
        );
        let store = SqliteStore::in_memory().unwrap();
        for fixture in [TOKEN, REQUEST, HTTP] {
            let asked = event(fixture, "GET", "/orders", Some(&token));
            let answer = handler(
                &config(),
                &store,
                &NotCounted,
                &people,
                asked,
                keyward::now(),
            )
            .await;
            assert!(
                matches!(answer, Err(AuthorizerError::IdentityProvider)),
                "{answer:?}"
            );
            let diagnostic = Diagnostic::from(answer.unwrap_err());
            assert_eq!(
                diagnostic.error_type, "IdentityProviderUnavailable",
                "not Unauthorized: API Gateway answers 500"
            );
        }
    }
}
