//! `GET /v1/environments/{env}/activity`: an environment's activity, newest first, a page at a
//! time, filtered by `?action=` and `?key_id=` (scope `activity:read`).

use keyward::domain::{Action, ActivityId, KeyId, Scope, Timestamp};
use keyward::http::{
    ApiError, Context, ErrorCode, HandlerFuture, authorize_environment, page_request, query_param,
    respond,
};
use keyward::store::ActivityFilter;
use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde_json::{Value, json};

/// The Lambda handler.
pub fn handler(context: Context<'_>, req: Request, now: Timestamp) -> HandlerFuture<'_> {
    Box::pin(async move { respond(StatusCode::OK, activity(context, &req, now).await) })
}

fn filter(req: &Request) -> Result<ActivityFilter, ApiError> {
    let action = query_param(req, "action")
        .map(|a| {
            Action::parse(a).ok_or_else(|| {
                let actions: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
                ApiError::new(
                    ErrorCode::InvalidAction,
                    format!("action is one of {}", actions.join(", ")),
                )
            })
        })
        .transpose()?;
    let key_id = query_param(req, "key_id").map(KeyId::parse).transpose()?;
    Ok(ActivityFilter { action, key_id })
}

#[tracing::instrument(name = "environment_activity", skip_all, fields(caller))]
async fn activity(context: Context<'_>, req: &Request, now: Timestamp) -> Result<Value, ApiError> {
    let store = context.store;
    let (_, environment) = authorize_environment(context, req, now, Scope::ACTIVITY_READ).await?;
    let filter = filter(req)?;
    let page = page_request(req, |c| ActivityId::parse(c).is_some())?;
    let entries = store
        .environment_activity(&environment, &filter, &page)
        .await?;
    Ok(json!({"entries": entries.items, "next_cursor": entries.next_cursor}))
}
