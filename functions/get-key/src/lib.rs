//! `GET /v1/keys/{key_id}`: one key, without its secret (scope `keys:read`).

use keyward::domain::{Scope, Timestamp};
use keyward::http::{ApiError, Context, HandlerFuture, KeyView, authorize_key, respond};
use keyward::store::KeyStore;
use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde_json::{Value, json};

/// The Lambda handler.
pub fn handler(context: Context<'_>, req: Request, now: Timestamp) -> HandlerFuture<'_> {
    Box::pin(async move { respond(StatusCode::OK, get(context.store, &req, now).await) })
}

#[tracing::instrument(name = "get_key", skip_all, fields(caller, key_id))]
async fn get(store: &dyn KeyStore, req: &Request, now: Timestamp) -> Result<Value, ApiError> {
    let (_, key) = authorize_key(store, req, now, Scope::KEYS_READ).await?;
    Ok(json!({"key": KeyView::new(&key, now)}))
}
