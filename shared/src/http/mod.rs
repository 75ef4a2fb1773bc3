//! HTTP mapping shared by every function: reading requests, the error shape, the `Key` view,
//! and the Lambda entry point that each function's `main` calls.

mod body;
mod error;
mod people;
mod request;
mod view;

use std::future::Future;
use std::pin::Pin;

use lambda_http::http::{StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde::Serialize;

pub use body::{json_body, json_body_within};
pub use error::{ApiError, ErrorCode};
pub use people::{
    CLIENT_ID_VAR, Finish, GROUPS_CLAIM_VAR, ISSUER_VAR, NoPeople, People, ROLES_VAR, SignIn,
    SignInStart, SignedIn, people_from_env, person_token, require_role,
};
pub use request::{
    ATTEMPTS, CONSOLE_HEADER, Caller, Prepare, SESSION_COOKIE, apply_deciding, apply_prepared,
    apply_setting, authenticate, authorize_change, authorize_environment, authorize_key, cookie,
    key_from_headers, page_request, query_param, rotation_policy, session_from_headers, source_ip,
};
pub use view::{KeyView, last_use_after_change, last_use_of};

use crate::domain::{KeyPrefix, Mint, SecretPrefix, Timestamp};
use crate::secrets::SecretSink;
#[cfg(feature = "dynamodb")]
use crate::secrets::{NoSecrets, PrefixedSink};
use crate::store::KeyStore;
use crate::usage::Counter;

/// The largest request body accepted; anything larger gets `413`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What a handler returns: a response future that borrows the store.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Response<Body>> + Send + 'a>>;

/// Every function's handler has this shape, so that the Lambda runtime and `keyward serve`
/// call exactly the same code.
pub type Handler = for<'a> fn(Context<'a>, Request, Timestamp) -> HandlerFuture<'a>;

/// What a handler works with, built once per cold start: the store, the settings, and where
/// the new secret of a key with a rotation policy is delivered.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// Where keys and activity live.
    pub store: &'a dyn KeyStore,
    /// The API's settings.
    pub settings: &'a Settings,
    /// Where rotations deliver new secrets, held to the settings' secret prefix.
    pub secrets: &'a dyn SecretSink,
    /// Where new secrets and ids come from: one per process.
    pub mint: &'a Mint,
    /// Where the route counts the keys it checks: `/v1/verify`'s on Lambda, where the API's
    /// authorizer counts every other route's caller; in `keyward serve`, which has no
    /// authorizer in front, also the caller of every other route, as that authorizer would.
    pub usage: &'a dyn Counter,
    /// Who checks people's tokens beside keys: the identity provider, or nobody.
    pub people: &'a dyn People,
}

/// The API's settings, read from the environment once per cold start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// The secrets that rotation policies may name: `<prefix><environment>/...`.
    pub secret_prefix: SecretPrefix,
    /// The deployment's key prefix: its keys start with it, and a key with any other is
    /// malformed.
    pub key_prefix: KeyPrefix,
}

impl Settings {
    /// The variable that sets the secret prefix (default `keyward/`).
    pub const SECRET_PREFIX_VAR: &'static str = "KEYWARD_SECRET_PREFIX";

    /// Reads `KEYWARD_SECRET_PREFIX` and `KEYWARD_KEY_PREFIX`; a bad value stops the cold
    /// start with a message that names the variable.
    pub fn from_env() -> Result<Self, String> {
        let secret_prefix = match std::env::var(Self::SECRET_PREFIX_VAR) {
            Err(_) => SecretPrefix::default(),
            Ok(value) => SecretPrefix::parse(&value)
                .map_err(|e| format!("{}: {e}", Self::SECRET_PREFIX_VAR))?,
        };
        Ok(Self {
            secret_prefix,
            key_prefix: crate::key_prefix_from_env()?,
        })
    }
}

/// The headers of every answer of the API: nothing may keep one (a create or a rotation
/// carries a new secret), a browser may not read one as anything but JSON, nor frame it, nor
/// send its address on. The API shares the console's origin, so it gets the same care.
pub const API_HEADERS: [(header::HeaderName, &str); 6] = [
    (header::CONTENT_TYPE, "application/json"),
    (header::CACHE_CONTROL, "no-store"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; frame-ancestors 'none'",
    ),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
];

/// A JSON response, with [`API_HEADERS`].
pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Body::Text(String::from_utf8(bytes).unwrap_or_default()));
    *response.status_mut() = status;
    for (name, value) in API_HEADERS {
        response
            .headers_mut()
            .insert(name, header::HeaderValue::from_static(value));
    }
    response
}

/// `status` with the body of `result`, or the error it holds.
pub fn respond<T: Serialize>(status: StatusCode, result: Result<T, ApiError>) -> Response<Body> {
    match result {
        Ok(body) => json_response(status, &body),
        Err(e) => e.into_response(),
    }
}

/// The whole `main` of a function that delivers no secrets: the DynamoDB table that
/// `KEYWARD_STORE` names (its client built once per cold start, beside the rest; a bad value
/// stops the start with a clear message), logging, the settings, then the Lambda runtime.
#[cfg(feature = "dynamodb")]
pub async fn run(handler: Handler) -> Result<(), lambda_http::Error> {
    run_lambda(handler, |_| Box::new(NoSecrets), false, true).await
}

/// The whole `main` of `verify-key`, the one handler that checks keys itself: as [`run`], with
/// its checks counted in the table's usage items and written before the instance shuts down.
#[cfg(feature = "dynamodb")]
pub async fn run_counting(handler: Handler) -> Result<(), lambda_http::Error> {
    run_lambda(handler, |_| Box::new(NoSecrets), true, false).await
}

/// The whole `main` of a function whose rotations deliver secrets: as [`run`], with Secrets
/// Manager under the secret prefix, its client built from the same AWS configuration.
#[cfg(all(feature = "dynamodb", feature = "secrets-manager"))]
pub async fn run_delivering(handler: Handler) -> Result<(), lambda_http::Error> {
    run_lambda(
        handler,
        |aws| Box::new(crate::secrets::SecretsManagerSink::from_config(aws)),
        false,
        true,
    )
    .await
}

#[cfg(feature = "dynamodb")]
async fn run_lambda(
    handler: Handler,
    sink: impl FnOnce(&aws_config::SdkConfig) -> Box<dyn SecretSink> + Send + 'static,
    counting: bool,
    people: bool,
) -> Result<(), lambda_http::Error> {
    let shutdown = counting.then(crate::usage::ShutdownFlush::begin);
    // The AWS clients are most of a cold start's own work; they are built on another worker
    // while this one sets up logging and reads the settings.
    let table = crate::store::DynamoStore::table_from_env()?;
    let clients = tokio::spawn(async move {
        let aws = crate::aws::config().await?;
        Ok::<_, String>((
            crate::store::DynamoStore::from_config(&aws, &table),
            sink(&aws),
        ))
    });
    crate::logging::init();
    let settings = Settings::from_env()?;
    let (store, sink) = clients.await??;
    let secrets = PrefixedSink::new(sink, settings.secret_prefix.clone());
    let mint = crate::mint().with_key_prefix(settings.key_prefix.clone());
    let usage: Box<dyn Counter> = match shutdown {
        Some(shutdown) => {
            let usage = crate::usage::Usage::from_env(std::sync::Arc::new(store.clone()))?;
            shutdown.of(&usage).await?;
            Box::new(usage)
        }
        None => Box::new(crate::usage::NotCounted),
    };
    let people = match people {
        true => people_from_env()?,
        false => Box::new(NoPeople),
    };
    let context = Context {
        store: &store,
        settings: &settings,
        secrets: &secrets,
        mint: &mint,
        usage: &*usage,
        people: &*people,
    };
    lambda_http::run(lambda_http::service_fn(move |req| async move {
        Ok::<_, std::convert::Infallible>(handler(context, req, crate::now()).await)
    }))
    .await
}
