//! `PUT /v1/keys/{key_id}/grace-period`: sets a rotated key's expiry to now plus a new grace,
//! shorter or longer than before (scope `keys:write`).

use keyward::domain::{GracePeriod, Timestamp, change_grace_period};
use keyward::http::{
    ApiError, Context, HandlerFuture, KeyView, authorize_change, json_body, respond,
};
use keyward::store::KeyStore;
use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

const SHAPE: &str = r#"{"grace_period": "now", "1h", "24h", "3d", "7d", an ISO-8601 duration or a number of seconds}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GraceBody {
    grace_period: Value,
}

/// The Lambda handler.
pub fn handler(context: Context<'_>, req: Request, now: Timestamp) -> HandlerFuture<'_> {
    Box::pin(async move { respond(StatusCode::OK, change(context.store, &req, now).await) })
}

#[tracing::instrument(name = "change_grace_period", skip_all, fields(caller, key_id))]
async fn change(store: &dyn KeyStore, req: &Request, now: Timestamp) -> Result<Value, ApiError> {
    let (caller, key) = authorize_change(store, req, now).await?;
    let body: GraceBody = json_body(req, SHAPE)?;
    let grace = GracePeriod::from_json(&body.grace_period)?;
    let changed = change_grace_period(&key, grace, caller.actor(), now)?;
    caller.require_lifetime(changed.key.expires_at)?;
    store.apply(&changed.change).await?;
    tracing::info!(grace_period = %grace, "grace period changed");
    Ok(json!({"key": KeyView::new(&changed.key, now)}))
}
