//! `POST /v1/verify`: checks a key with the same rules as the authorizer. It needs no
//! credentials: the key in the body is the one checked, and the answer is always `200`
//! with `valid` and a `code` unless the request itself is malformed.

use keyward::domain::{EnvName, PresentedKey, Scopes, Timestamp, Verdict, check};
use keyward::http::{ApiError, HandlerFuture, json_body, respond};
use keyward::store::KeyStore;
use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

const SHAPE: &str = r#"{"key": string, "environment"?: string, "scopes"?: [string]}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    key: String,
    environment: Option<String>,
    scopes: Option<Vec<String>>,
}

/// The Lambda handler.
pub fn handler(store: &dyn KeyStore, req: Request, now: Timestamp) -> HandlerFuture<'_> {
    Box::pin(async move { respond(StatusCode::OK, verify(store, &req, now).await) })
}

fn answer(verdict: Verdict) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("valid".into(), json!(verdict == Verdict::Valid));
    body.insert("code".into(), json!(verdict.code()));
    body
}

#[tracing::instrument(skip_all, fields(key_id, code))]
async fn verify(store: &dyn KeyStore, req: &Request, now: Timestamp) -> Result<Value, ApiError> {
    let body: VerifyBody = json_body(req, SHAPE)?;
    let environment = body
        .environment
        .as_deref()
        .map(EnvName::parse)
        .transpose()?;
    let scopes = Scopes::parse(&body.scopes.unwrap_or_default())?;
    let required: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    let Ok(presented) = PresentedKey::parse(&body.key) else {
        tracing::Span::current().record("code", Verdict::Malformed.code());
        return Ok(Value::Object(answer(Verdict::Malformed)));
    };
    let Some(key) = store.key_by_hash(&presented.hash).await? else {
        tracing::Span::current().record("code", Verdict::NotFound.code());
        return Ok(Value::Object(answer(Verdict::NotFound)));
    };
    let verdict = check(&key, environment.as_ref(), &required, now);
    let span = tracing::Span::current();
    span.record("key_id", key.id.as_str());
    span.record("code", verdict.code());
    tracing::info!("key verified");
    let mut body = answer(verdict);
    body.insert("key_id".into(), json!(key.id));
    if verdict == Verdict::Valid {
        body.insert("environment".into(), json!(key.environment));
        body.insert("scopes".into(), json!(key.scopes));
        body.insert("expires_at".into(), json!(key.expires_at));
    }
    Ok(Value::Object(body))
}
