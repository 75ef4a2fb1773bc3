//! The `keyward` command's library: one local HTTP server that mounts every function's
//! handler, the operator commands, and the client of the HTTP API (`keys`, `activity`,
//! `verify`).
//!
//! `serve` turns each hyper request into the same `lambda_http::Request` that API Gateway's
//! event becomes on Lambda (path parameters and query map included), so that local and
//! Lambda behaviour cannot drift.

pub mod api;
pub mod client;
mod show;
mod stream;

pub use stream::StreamPoller;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use keyward::aws::calls::acting_as;
use keyward::domain::{Actor, EnvName, Issued, Mint, Timestamp, create_environment};
use keyward::http::{
    ApiError, Context, ErrorCode, Handler, HandlerFuture, MAX_BODY_BYTES, People, Settings,
};
use keyward::secrets::SecretSink;
use keyward::store::{KeyStore, StoreError, UsageStore};
use keyward::usage::{Counter, Usage};
use lambda_http::aws_lambda_events::apigw::{
    ApiGatewayProxyRequestContext, ApiGatewayRequestIdentity,
};
use lambda_http::aws_lambda_events::query_map::QueryMap;
use lambda_http::http::{Method, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, RequestExt};
use tokio::net::TcpListener;

/// A route of `keyward serve` and the template's function that serves it on AWS, whose role
/// its AWS calls are recorded and checked against.
pub type Route = (Method, &'static str, Handler, &'static str);

/// The HTTP API's routes: method, path pattern with `{param}` segments, handler, and the
/// function that serves the route in `infra/template.yaml` (whose role its AWS calls use).
pub const ROUTES: &[Route] = &[
    (
        Method::POST,
        "/v1/environments/{env}/keys",
        create_key::handler,
        "CreateKey",
    ),
    (
        Method::GET,
        "/v1/environments/{env}/keys",
        list_keys::handler,
        "ListKeys",
    ),
    (
        Method::GET,
        "/v1/environments/{env}/activity",
        environment_activity::handler,
        "EnvironmentActivity",
    ),
    (Method::GET, "/v1/keys/{key_id}", get_key::handler, "GetKey"),
    (
        Method::POST,
        "/v1/keys/{key_id}/rotate",
        rotate_key::handler,
        "RotateKey",
    ),
    (
        Method::PUT,
        "/v1/keys/{key_id}/grace-period",
        change_grace_period::handler,
        "ChangeGracePeriod",
    ),
    (
        Method::PUT,
        "/v1/keys/{key_id}/rotation-policy",
        set_rotation_policy::handler,
        "SetRotationPolicy",
    ),
    (
        Method::PUT,
        "/v1/keys/{key_id}/allowed-ips",
        set_allowed_ips::handler,
        "SetAllowedIps",
    ),
    (
        Method::POST,
        "/v1/keys/{key_id}/revoke",
        revoke_key::handler,
        "RevokeKey",
    ),
    (
        Method::GET,
        "/v1/keys/{key_id}/activity",
        key_activity::handler,
        "KeyActivity",
    ),
    (
        Method::GET,
        "/v1/keys/{key_id}/usage",
        key_usage::handler,
        "KeyUsage",
    ),
    (Method::POST, "/v1/verify", verify_key::handler, VERIFY_KEY),
    (
        Method::GET,
        "/v1/environments/{env}/leak-policy",
        report_leak::leak_policy,
        "ReportLeak",
    ),
    (
        Method::PUT,
        "/v1/environments/{env}/leak-policy",
        report_leak::set_leak_policy,
        "ReportLeak",
    ),
    (
        Method::POST,
        "/v1/leaks/report",
        report_leak::report,
        "ReportLeak",
    ),
    (
        Method::POST,
        "/v1/leaks/github",
        report_leak::github,
        "ReportLeak",
    ),
    (
        Method::GET,
        "/v1/leaks/gitlab/revocable_token_types",
        report_leak::gitlab_types,
        "ReportLeak",
    ),
    (
        Method::POST,
        "/v1/leaks/gitlab/revoke_tokens",
        report_leak::gitlab_revoke,
        "ReportLeak",
    ),
    (Method::GET, "/v1/session", console_file, "Console"),
    (Method::GET, "/v1/openapi.json", console_file, "Console"),
    (Method::GET, "/v1/token-format", console_file, "Console"),
];

/// The console's routes outside the API: its page and its files, public like the API's
/// description.
pub const CONSOLE_ROUTES: &[Route] = &[
    (Method::GET, "/", console_file, "Console"),
    (Method::GET, "/console/{asset}", console_file, "Console"),
];

/// The console's page and files, the API's description and the key format, the same bytes
/// the console function serves on Lambda.
fn console_file(
    context: Context<'_>,
    req: lambda_http::Request,
    now: Timestamp,
) -> HandlerFuture<'_> {
    Box::pin(async move {
        console::handler(&req, &context.settings.key_prefix, context.people, now).await
    })
}

/// The path parameters of `path` if it fits `pattern`.
fn matches(pattern: &str, path: &str) -> Option<HashMap<String, String>> {
    let (mut want, mut got) = (pattern.split('/'), path.split('/'));
    let mut params = HashMap::new();
    loop {
        match (want.next(), got.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') && !g.is_empty() => {
                params.insert(w[1..w.len() - 1].to_owned(), g.to_owned());
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return None,
        }
    }
}

/// Where a request goes.
#[derive(Debug)]
pub enum Routed {
    /// To this handler, with these path parameters, by this route pattern, served on AWS by
    /// this function of the template.
    Found(Handler, HashMap<String, String>, &'static str, &'static str),
    /// Nowhere: no route has this path (`404`).
    NotFound,
    /// Nowhere: the path is known, but only with these methods (`405`).
    WrongMethod(Vec<Method>),
}

/// Finds the handler for a request.
pub fn route(method: &Method, path: &str) -> Routed {
    let mut allowed = Vec::new();
    for (m, pattern, handler, function) in ROUTES.iter().chain(CONSOLE_ROUTES) {
        if let Some(params) = matches(pattern, path) {
            if m == method {
                return Routed::Found(*handler, params, pattern, function);
            }
            allowed.push(m.clone());
        }
    }
    if allowed.is_empty() {
        Routed::NotFound
    } else {
        Routed::WrongMethod(allowed)
    }
}

fn to_hyper(response: lambda_http::Response<Body>) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = response.into_parts();
    let bytes = match body {
        Body::Empty => Bytes::new(),
        Body::Text(text) => Bytes::from(text),
        Body::Binary(bytes) => Bytes::from(bytes),
        _ => Bytes::new(),
    };
    hyper::Response::from_parts(parts, Full::new(bytes))
}

/// Where the routes that take leak reports are, whose bodies may be larger than any other
/// route's.
const LEAK_ROUTES: &str = "/v1/leaks/";

/// The route whose checks are `VerifyKey`'s to count; every other route that checks a caller
/// counts it as the API's authorizer.
const VERIFY_ROUTE: &str = "/v1/verify";

/// The template's authorizer in front of keyward's own API, which counts every other route's
/// caller on AWS, and whose role those counts' writes use.
const API_AUTHORIZER: &str = "ApiAuthorizer";

/// The template's function behind `POST /v1/verify`, which counts the keys it checks.
const VERIFY_KEY: &str = "VerifyKey";

/// The request context API Gateway would give a request from `peer`; its `sourceIp` is the
/// one part keyward reads, to hold a key to its allowed networks.
fn from_peer(peer: SocketAddr) -> RequestContext {
    let mut identity = ApiGatewayRequestIdentity::default();
    identity.source_ip = Some(peer.ip().to_canonical().to_string());
    let mut context = ApiGatewayProxyRequestContext::default();
    context.identity = identity;
    RequestContext::ApiGatewayV1(context)
}

/// Answers one request with the handler its route names.
async fn handle(
    context: Context<'_>,
    counters: &Counters,
    peer: SocketAddr,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    // The log names the route's pattern, never the path: a client may paste a key into a URL.
    let mut route_name = "unrouted";
    let response = match route(&parts.method, parts.uri.path()) {
        Routed::NotFound => {
            ApiError::new(ErrorCode::RouteNotFound, "no route has this path").into_response()
        }
        Routed::WrongMethod(allowed) => {
            let error = ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this route does not take this method",
            );
            let mut response = error.into_response();
            let allow = allowed
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            if let Ok(value) = header::HeaderValue::from_str(&allow) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            response
        }
        Routed::Found(handler, params, pattern, function) => {
            route_name = pattern;
            let limit = if pattern.starts_with(LEAK_ROUTES) {
                keyward::leak::MAX_REPORT_BYTES
            } else {
                MAX_BODY_BYTES
            };
            match Limited::new(body, limit).collect().await {
                Err(_) => ApiError::payload_too_large(limit).into_response(),
                Ok(collected) => {
                    let bytes = collected.to_bytes();
                    let body = if bytes.is_empty() {
                        Body::Empty
                    } else {
                        Body::Binary(bytes.to_vec())
                    };
                    let query: QueryMap =
                        parts.uri.query().unwrap_or("").parse().unwrap_or_default();
                    let request = lambda_http::Request::from_parts(parts, body)
                        .with_path_parameters(params)
                        .with_query_string_parameters(query)
                        .with_request_context(from_peer(peer));
                    let now = keyward::now();
                    // `keyward serve` has no authorizer in front, so a route's own check of
                    // its caller counts the key as the API's authorizer does on AWS.
                    let usage: &dyn Counter = if pattern == VERIFY_ROUTE {
                        &counters.verify_key
                    } else {
                        &counters.api_authorizer
                    };
                    let context = Context { usage, ..context };
                    acting_as(function, handler(context, request, now)).await
                }
            }
        }
    };
    tracing::info!(%method, route = route_name, status = response.status().as_u16(), micros = started.elapsed().as_micros() as u64, "request");
    to_hyper(response)
}

/// Who the local schedule's changes name as their actor.
pub const LOCAL_SCHEDULE: &str = "keyward serve";

/// The template's function that the schedule rule invokes, whose role a run's calls use.
const SCHEDULED_ROTATION: &str = "ScheduledRotation";

/// Runs the scheduled rotation every `period`, the first time at once, as the schedule rule
/// does on AWS. A run that cannot read its due keys is logged, and the next one tries again.
pub async fn run_schedule(
    store: &dyn KeyStore,
    sink: &dyn SecretSink,
    mint: &Mint,
    period: Duration,
) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let actor = Actor::schedule(LOCAL_SCHEDULE);
    loop {
        ticks.tick().await;
        let run = scheduled_rotation::run(store, sink, mint, &actor, keyward::now());
        if let Err(e) = acting_as(SCHEDULED_ROTATION, run).await {
            tracing::error!(error = %keyward::error_chain(&e), "the scheduled run cannot read its due keys");
        }
    }
}

/// `keyward serve`'s usage counters: one for each function that counts checks on AWS, so that
/// each one's writes are that function's, as deployed (and recorded as its AWS calls).
#[derive(Clone)]
pub struct Counters {
    /// The API authorizer's, for the caller of every management route.
    pub api_authorizer: Usage,
    /// `POST /v1/verify`'s.
    pub verify_key: Usage,
}

impl Counters {
    /// Both, writing to `store` at the interval that `KEYWARD_USAGE_WRITE_EVERY` sets.
    pub fn from_env(store: Arc<dyn UsageStore>) -> Result<Self, String> {
        let every = keyward::usage::write_every_from_env()?;
        Ok(Self {
            api_authorizer: Usage::for_function(Arc::clone(&store), every, API_AUTHORIZER),
            verify_key: Usage::for_function(store, every, VERIFY_KEY),
        })
    }

    /// Writes what falls due, on both, until the process ends (see [`sweep_usage`]).
    pub async fn sweep(&self) {
        tokio::join!(
            sweep_usage(&self.api_authorizer),
            sweep_usage(&self.verify_key)
        );
    }

    /// Writes everything both hold, for at most `within`; answers the checks not known to be
    /// written.
    pub async fn flush_all(&self, within: Duration) -> u64 {
        let (api, verify) = tokio::join!(
            self.api_authorizer.flush_all(within),
            self.verify_key.flush_all(within)
        );
        api + verify
    }
}

/// Writes the usage that is due every ten seconds (or every interval between writes, if that
/// is shorter), so that an idle server's counts go out soon after they fall due, as a busy
/// one's do with its next check.
async fn sweep_usage(usage: &Usage) {
    let every = usage.every().to_std().unwrap_or(Duration::from_secs(10));
    let mut ticks = tokio::time::interval(every.min(Duration::from_secs(10)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        usage.sweep(keyward::now());
    }
}

/// Serves the HTTP API on `listener` until the process ends; rotations of keys with a policy
/// deliver to `secrets`, everything new comes from the process's one `mint`, and checks
/// of known keys are counted in `counters`, and people's tokens are checked by `people`.
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn KeyStore>,
    settings: Settings,
    secrets: Arc<dyn SecretSink>,
    mint: Arc<Mint>,
    counters: Counters,
    people: Arc<dyn People>,
) -> std::io::Result<()> {
    let settings = Arc::new(settings);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let (store, settings, secrets, mint, counters, people) = (
            Arc::clone(&store),
            Arc::clone(&settings),
            Arc::clone(&secrets),
            Arc::clone(&mint),
            counters.clone(),
            Arc::clone(&people),
        );
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (store, settings, secrets, mint, counters, people) = (
                    Arc::clone(&store),
                    Arc::clone(&settings),
                    Arc::clone(&secrets),
                    Arc::clone(&mint),
                    counters.clone(),
                    Arc::clone(&people),
                );
                async move {
                    let context = Context {
                        store: &*store,
                        settings: &settings,
                        secrets: &*secrets,
                        mint: &mint,
                        usage: &counters.verify_key,
                        people: &*people,
                    };
                    Ok::<_, Infallible>(handle(context, &counters, peer, req).await)
                }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
    }
}

/// The operator running the command, as recorded in activity entries.
pub fn operator() -> Actor {
    let name = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "local".to_owned());
    Actor::operator(name)
}

/// Why an environment could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CreateEnvironmentError {
    /// An environment of that name exists already.
    #[error("the environment {0} exists already")]
    Exists(EnvName),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

/// Makes an environment with its default key, whose secret the caller shows once.
pub async fn create_environment_in(
    store: &dyn KeyStore,
    name: &EnvName,
    actor: Actor,
    mint: &Mint,
) -> Result<Issued, CreateEnvironmentError> {
    let issued = create_environment(name, actor, mint, keyward::now());
    match store.apply(&issued.change).await {
        Ok(()) => Ok(issued),
        Err(StoreError::Conflict) => Err(CreateEnvironmentError::Exists(name.clone())),
        Err(e) => Err(CreateEnvironmentError::Store(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_their_patterns_only() {
        let Routed::Found(_, params, _, function) = route(&Method::POST, "/v1/keys/key_abc/rotate")
        else {
            panic!("no route")
        };
        assert_eq!(
            (params.get("key_id").map(String::as_str), function),
            (Some("key_abc"), "RotateKey")
        );
        let Routed::Found(_, params, _, _) = route(&Method::GET, "/v1/environments/prod/activity")
        else {
            panic!("no route")
        };
        assert_eq!(params.get("env").map(String::as_str), Some("prod"));
        let Routed::Found(_, params, pattern, _) = route(&Method::GET, "/console/console.js")
        else {
            panic!("no route")
        };
        assert_eq!(
            (params.get("asset").map(String::as_str), pattern),
            (Some("console.js"), "/console/{asset}")
        );
        assert!(matches!(route(&Method::POST, "/"), Routed::WrongMethod(_)));
        for path in [
            "//",
            "/console",
            "/console/",
            "/v1",
            "/v1/keys",
            "/v1/keys//rotate",
            "/v1/keys/a/rotate/x",
            "/v1/verify/",
            "/v2/verify",
        ] {
            assert!(
                matches!(route(&Method::POST, path), Routed::NotFound),
                "{path}"
            );
        }
    }

    #[test]
    fn a_known_path_with_another_method_names_the_allowed_methods() {
        let Routed::WrongMethod(allowed) = route(&Method::DELETE, "/v1/environments/prod/keys")
        else {
            panic!("not a 405")
        };
        assert_eq!(allowed, [Method::POST, Method::GET]);
    }
}
