//! `GET /v1/keys/{key_id}`: one key, without its secret (scope `keys:read`).

use keyward::domain::{Scope, Timestamp};
use keyward::http::{
    ApiError, Context, HandlerFuture, KeyView, authorize_key, last_use_of, respond,
};
use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde_json::{Value, json};

/// The Lambda handler.
pub fn handler(context: Context<'_>, req: Request, now: Timestamp) -> HandlerFuture<'_> {
    Box::pin(async move { respond(StatusCode::OK, get(context, &req, now).await) })
}

#[tracing::instrument(name = "get_key", skip_all, fields(caller, key_id))]
async fn get(context: Context<'_>, req: &Request, now: Timestamp) -> Result<Value, ApiError> {
    let store = context.store;
    let (_, key) = authorize_key(context, req, now, Scope::KEYS_READ).await?;
    let last = last_use_of(store, &key).await?;
    Ok(json!({"key": KeyView::new(&key, last, now)}))
}

#[cfg(test)]
mod tests {
    use keyward::domain::{Actor, delivery_failed, rotate};
    use keyward::testing::{api_request, body_json, seeded};

    use keyward::store::KeyStore;

    use super::*;

    #[tokio::test]
    async fn a_key_shows_its_pending_delivery_and_its_failed_deliveries() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let secret_id = "keyward/production/billing";
        let issued = s.policy_key(secret_id, now).await;
        let grace = keyward::domain::GracePeriod::parse("1h").unwrap();
        let rotated = rotate(&issued.key, grace, Actor::operator("t"), &s.mint, now).unwrap();
        s.store.apply(&rotated.change).await.unwrap();
        let failed = delivery_failed(
            &rotated.key,
            secret_id,
            Actor::schedule("rule"),
            &s.mint,
            now,
        );
        s.store.apply(&failed).await.unwrap();

        let get = |id: &str| {
            api_request(
                "GET",
                &[("key_id", id)],
                &[],
                s.secret.expose(),
                Value::Null,
            )
        };
        let response = handler(s.context(), get(rotated.key.id.as_str()), now).await;
        assert_eq!(response.status(), 200);
        let key = &body_json(&response)["key"];
        assert_eq!(
            key["pending_delivery"],
            json!({"secret_id": secret_id, "version_id": format!("keyward-{}", rotated.key.id)})
        );
        assert_eq!(
            key["delivery_failures"],
            json!({"count": 1, "last_failed_at": now, "retry_at": now + keyward::domain::FIRST_RETRY_WAIT - keyward::domain::RETRY_SLACK})
        );
        let previous = handler(s.context(), get(issued.key.id.as_str()), now).await;
        let previous = &body_json(&previous)["key"];
        assert_eq!(previous["pending_delivery"], Value::Null);
        assert_eq!(previous["delivery_failures"], Value::Null);
    }
}
