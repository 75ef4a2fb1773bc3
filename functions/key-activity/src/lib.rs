//! `GET /v1/keys/{key_id}/activity`: a key's activity, newest first, a page at a time, with
//! the rotation that made it (scope `activity:read`).

use keyward::domain::{ActivityId, Scope, Timestamp};
use keyward::http::{ApiError, Context, HandlerFuture, authorize_key, page_request, respond};
use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde_json::{Value, json};

/// The Lambda handler.
pub fn handler(context: Context<'_>, req: Request, now: Timestamp) -> HandlerFuture<'_> {
    Box::pin(async move { respond(StatusCode::OK, activity(context, &req, now).await) })
}

#[tracing::instrument(name = "key_activity", skip_all, fields(caller, key_id))]
async fn activity(context: Context<'_>, req: &Request, now: Timestamp) -> Result<Value, ApiError> {
    let store = context.store;
    let (_, key) = authorize_key(context, req, now, Scope::ACTIVITY_READ).await?;
    let page = page_request(req, |c| ActivityId::parse(c).is_some())?;
    let entries = store.key_activity(&key.id, &page).await?;
    Ok(json!({"entries": entries.items, "next_cursor": entries.next_cursor}))
}
