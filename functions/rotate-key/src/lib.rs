//! `POST /v1/keys/{key_id}/rotate`: replaces an active key with a new one, and gives the old
//! key a grace period (scope `keys:write`).

use keyward::domain::{GracePeriod, Timestamp, rotate};
use keyward::http::{
    ApiError, Context, HandlerFuture, KeyView, apply_deciding, authorize_change, json_body, respond,
};
use keyward::store::KeyStore;
use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

const SHAPE: &str = r#"{"grace_period": "now", "1h", "24h", "3d", "7d", an ISO-8601 duration or a number of seconds}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    grace_period: Value,
}

/// The Lambda handler.
pub fn handler(context: Context<'_>, req: Request, now: Timestamp) -> HandlerFuture<'_> {
    Box::pin(async move {
        respond(
            StatusCode::CREATED,
            rotate_key(context.store, &req, now).await,
        )
    })
}

#[tracing::instrument(skip_all, fields(caller, key_id, new_key_id))]
async fn rotate_key(
    store: &dyn KeyStore,
    req: &Request,
    now: Timestamp,
) -> Result<Value, ApiError> {
    let (caller, key) = authorize_change(store, req, now).await?;
    let body: RotateBody = json_body(req, SHAPE)?;
    let grace = GracePeriod::from_json(&body.grace_period)?;
    let rotated = apply_deciding(store, key, |key| {
        let rotated = rotate(key, grace, caller.actor(), now)?;
        caller.require_lifetime(rotated.key.expires_at)?;
        let change = rotated.change.clone();
        Ok((rotated, Some(change)))
    })
    .await?;
    tracing::Span::current().record("new_key_id", rotated.key.id.as_str());
    tracing::info!(grace_period = %grace, "key rotated");
    Ok(json!({
        "key": KeyView::new(&rotated.key, now),
        "secret": rotated.secret.expose(),
        "previous": KeyView::new(&rotated.previous, now),
    }))
}

#[cfg(test)]
mod tests {
    use keyward::domain::PresentedKey;
    use keyward::store::KeyLookup;
    use keyward::testing::{body_json, event, seeded};

    use super::*;

    const REST: &str = include_str!("../fixtures/rest.json");
    const HTTP: &str = include_str!("../fixtures/http.json");

    #[tokio::test]
    async fn rotation_through_either_api_shape_gives_a_new_key_and_a_grace() {
        for (fixture, grace_secs) in [(REST, 86_400), (HTTP, 14 * 86_400)] {
            let now = keyward::now();
            let s = seeded("production", now).await;
            let vars = [("KEY_ID", s.key.id.as_str()), ("KEY", s.secret.expose())];
            let response = handler(s.context(), event(fixture, &vars), now).await;
            assert_eq!(response.status(), 201);
            let body = body_json(&response);
            assert_eq!(body["previous"]["id"], s.key.id.as_str());
            assert_eq!(body["previous"]["status"], "in_grace");
            assert_eq!(body["previous"]["rotated_to"], body["key"]["id"]);
            let expected = now + chrono::TimeDelta::seconds(grace_secs);
            assert_eq!(body["previous"]["expires_at"], json!(expected));
            assert_eq!(body["key"]["rotated_from"], s.key.id.as_str());
            assert_eq!(body["key"]["default"], true);
            let secret = body["secret"].as_str().unwrap();
            let new_key = s
                .store
                .key_by_hash(&PresentedKey::parse(secret).unwrap().hash)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(body["key"]["id"], new_key.id.as_str());
        }
    }

    #[tokio::test]
    async fn a_key_in_grace_cannot_be_rotated_again() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let vars = [("KEY_ID", s.key.id.as_str()), ("KEY", s.secret.expose())];
        assert_eq!(
            handler(s.context(), event(REST, &vars), now).await.status(),
            201
        );
        let again = handler(s.context(), event(REST, &vars), now).await;
        assert_eq!(again.status(), 409);
        assert_eq!(body_json(&again)["error"]["code"], "key_not_active");
    }

    #[tokio::test]
    async fn a_rotation_that_an_expiry_notice_gets_ahead_of_decides_again_and_succeeds() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let issued = s.expiring_key(now).await;
        let store = keyward::testing::Interfering::new(&s.store);
        let vars = [
            ("KEY_ID", issued.key.id.as_str()),
            ("KEY", s.secret.expose()),
        ];
        let response = handler(s.context_on(&store), event(REST, &vars), now).await;
        assert_eq!(response.status(), 201, "{:?}", body_json(&response));
        assert_eq!(body_json(&response)["previous"]["status"], "in_grace");
        assert_eq!(
            s.actions(&issued.key.id).await,
            ["key.rotated", "key.expiring", "key.created"]
        );
    }
}
