//! `GET /v1/environments/{env}/keys`: an environment's keys, newest first, a page at a time
//! (scope `keys:read`).

use keyward::domain::{KeyId, Scope, Timestamp};
use keyward::http::{
    ApiError, Context, HandlerFuture, KeyView, authorize_environment, page_request, respond,
};
use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde_json::{Value, json};

/// The Lambda handler.
pub fn handler(context: Context<'_>, req: Request, now: Timestamp) -> HandlerFuture<'_> {
    Box::pin(async move { respond(StatusCode::OK, list(context, &req, now).await) })
}

#[tracing::instrument(name = "list_keys", skip_all, fields(caller))]
async fn list(context: Context<'_>, req: &Request, now: Timestamp) -> Result<Value, ApiError> {
    let store = context.store;
    let (_, environment) = authorize_environment(context, req, now, Scope::KEYS_READ).await?;
    let page = page_request(req, |c| KeyId::parse(c).is_ok())?;
    let keys = store.keys(&environment, &page).await?;
    let views = KeyView::read_all(store, &keys.items, now).await?;
    Ok(json!({"keys": views, "next_cursor": keys.next_cursor}))
}
