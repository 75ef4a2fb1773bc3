//! `PUT /v1/keys/{key_id}/grace-period`: sets a rotated key's expiry to now plus a new grace,
//! shorter or longer than before (scope `keys:write`).

use keyward::domain::{GracePeriod, Timestamp, change_grace_period};
use keyward::http::{
    ApiError, Context, HandlerFuture, KeyView, apply_deciding, authorize_change, json_body,
    last_use_after_change, respond,
};
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
    Box::pin(async move { respond(StatusCode::OK, change(context, &req, now).await) })
}

#[tracing::instrument(name = "change_grace_period", skip_all, fields(caller, key_id))]
async fn change(context: Context<'_>, req: &Request, now: Timestamp) -> Result<Value, ApiError> {
    let store = context.store;
    let (caller, key) = authorize_change(context, req, now).await?;
    let body: GraceBody = json_body(req, SHAPE)?;
    let grace = GracePeriod::from_json(&body.grace_period)?;
    let changed = apply_deciding(store, key, |key| {
        let changed = change_grace_period(key, grace, caller.actor(), context.mint, now)?;
        caller.require_lifetime(changed.key.expires_at)?;
        Ok((changed.key, Some(changed.change)))
    })
    .await?;
    tracing::info!(grace_period = %grace, "grace period changed");
    let last = last_use_after_change(store, &changed).await;
    Ok(json!({"key": KeyView::new(&changed, last, now)}))
}

#[cfg(test)]
mod tests {
    use keyward::domain::{Actor, GracePeriod, rotate};
    use keyward::store::KeyStore;
    use keyward::testing::{Interfering, api_request, body_json, seeded};

    use super::*;

    #[tokio::test]
    async fn a_grace_change_that_an_expiry_notice_gets_ahead_of_decides_again_and_succeeds() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let issued = s.worker_key(now).await;
        let twelve_hours = GracePeriod::parse("PT12H").unwrap();
        let rotated = rotate(
            &issued.key,
            twelve_hours,
            Actor::operator("t"),
            &s.mint,
            now,
        )
        .unwrap();
        s.store.apply(&rotated.change).await.unwrap();

        let store = Interfering::new(&s);
        let id = issued.key.id.as_str();
        let req = api_request(
            "PUT",
            &[("key_id", id)],
            &[],
            s.secret.expose(),
            json!({"grace_period": "1h"}),
        );
        let response = handler(s.context_on(&store), req, now).await;
        assert_eq!(response.status(), 200, "{:?}", body_json(&response));
        assert_eq!(
            body_json(&response)["key"]["expires_at"],
            json!(now + chrono::TimeDelta::hours(1))
        );
        assert_eq!(
            s.actions(&issued.key.id).await,
            [
                "key.grace_period_changed",
                "key.expiring",
                "key.rotated",
                "key.created"
            ]
        );
    }
}
