//! `POST /v1/keys/{key_id}/revoke`: stops a key at once (scope `keys:write`). Revoking a key
//! that is already revoked or expired answers `200` with the key unchanged and records nothing.

use keyward::domain::{Revocation, Timestamp, revoke};
use keyward::http::{
    ApiError, Context, HandlerFuture, KeyView, apply_deciding, authorize_change,
    last_use_after_change, respond,
};
use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde_json::{Value, json};

/// The Lambda handler.
pub fn handler(context: Context<'_>, req: Request, now: Timestamp) -> HandlerFuture<'_> {
    Box::pin(async move { respond(StatusCode::OK, revoke_key(context, &req, now).await) })
}

#[tracing::instrument(skip_all, fields(caller, key_id))]
async fn revoke_key(
    context: Context<'_>,
    req: &Request,
    now: Timestamp,
) -> Result<Value, ApiError> {
    let store = context.store;
    let (caller, key) = authorize_change(context, req, now).await?;
    let (key, revoked) = apply_deciding(store, key, |key| {
        Ok(match revoke(key, caller.actor(), context.mint, now)? {
            Revocation::Revoked { key, change } => ((key, true), Some(*change)),
            Revocation::Unchanged(key) => ((key, false), None),
        })
    })
    .await?;
    if revoked {
        tracing::info!("key revoked");
    }
    let last = last_use_after_change(store, &key).await;
    Ok(json!({"key": KeyView::new(&key, last, now)}))
}

#[cfg(test)]
mod tests {
    use keyward::domain::{Actor, GracePeriod};
    use keyward::store::{KeyStore, PageRequest};
    use keyward::testing::{body_json, event, seeded};

    use super::*;

    const REST: &str = include_str!("../fixtures/rest.json");
    const HTTP: &str = include_str!("../fixtures/http.json");

    #[tokio::test]
    async fn revocation_through_either_api_shape_is_immediate_and_idempotent() {
        for fixture in [REST, HTTP] {
            let now = keyward::now();
            let s = seeded("production", now).await;
            let issued = s.worker_key(now).await;
            let vars = [
                ("KEY_ID", issued.key.id.as_str()),
                ("KEY", s.secret.expose()),
            ];
            let response = handler(s.context(), event(fixture, &vars), now).await;
            assert_eq!(response.status(), 200);
            let body = body_json(&response);
            assert_eq!(body["key"]["status"], "revoked");
            assert_eq!(body["key"]["revoked_at"], json!(now));
            let again = handler(s.context(), event(fixture, &vars), now).await;
            assert_eq!(again.status(), 200);
            assert_eq!(body_json(&again), body);
            let page = PageRequest {
                limit: 10,
                after: None,
            };
            let entries = s
                .store
                .key_activity(&issued.key.id, &page)
                .await
                .unwrap()
                .items;
            let actions: Vec<&str> = entries.iter().map(|e| e.event.action().as_str()).collect();
            assert_eq!(
                actions,
                ["key.revoked", "key.created"],
                "a second revoke records nothing"
            );
        }
    }

    #[tokio::test]
    async fn the_default_key_must_be_rotated_first() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let vars = [("KEY_ID", s.key.id.as_str()), ("KEY", s.secret.expose())];
        let response = handler(s.context(), event(REST, &vars), now).await;
        assert_eq!(response.status(), 409);
        assert_eq!(
            body_json(&response)["error"]["code"],
            "default_key_must_be_rotated"
        );
        let rotated = keyward::domain::rotate(
            &s.key,
            GracePeriod::parse("1h").unwrap(),
            Actor::operator("t"),
            &s.mint,
            now,
        )
        .unwrap();
        s.store.apply(&rotated.change).await.unwrap();
        let response = handler(s.context(), event(HTTP, &vars), now).await;
        assert_eq!(
            response.status(),
            200,
            "the old default is no longer the default"
        );
        assert_eq!(body_json(&response)["key"]["status"], "revoked");
    }

    #[tokio::test]
    async fn a_revoke_that_an_expiry_notice_gets_ahead_of_decides_again_and_succeeds() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let issued = s.expiring_key(now).await;
        let store = keyward::testing::Interfering::new(&s);
        let vars = [
            ("KEY_ID", issued.key.id.as_str()),
            ("KEY", s.secret.expose()),
        ];
        let response = handler(s.context_on(&store), event(REST, &vars), now).await;
        assert_eq!(response.status(), 200, "{:?}", body_json(&response));
        assert_eq!(body_json(&response)["key"]["status"], "revoked");
        assert_eq!(
            s.actions(&issued.key.id).await,
            ["key.revoked", "key.expiring", "key.created"]
        );
    }
}
