//! `POST /v1/keys/{key_id}/rotate`: replaces an active key with a new one, and gives the old
//! key a grace period (scope `keys:write`). The new secret of a key with a rotation policy is
//! delivered to the policy's secret in the steps of `keyward::delivery`, before the answer.

use keyward::delivery;
use keyward::domain::{GracePeriod, Key, LastUse, Rotated, Timestamp, rotate};
use keyward::error_chain;
use keyward::http::{
    ApiError, Context, ErrorCode, HandlerFuture, KeyView, Prepare, apply_prepared,
    authorize_change, json_body, last_use_after_change, respond,
};
use keyward::secrets::SecretSink;
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
    Box::pin(async move { respond(StatusCode::CREATED, rotate_key(context, &req, now).await) })
}

/// `502`: the new secret could not be stored in the policy's secret, so nothing was rotated.
fn not_staged() -> ApiError {
    ApiError::new(
        ErrorCode::SecretDeliveryFailed,
        "the new key could not be stored in the secret its rotation policy names, so the key \
         was not rotated; try again, or correct the policy",
    )
}

/// Step 1 of a delivery, before each attempt to commit a rotation.
struct Stage<'a> {
    secrets: &'a dyn SecretSink,
    now: Timestamp,
}

#[async_trait::async_trait]
impl Prepare<Rotated> for Stage<'_> {
    async fn prepare(&self, rotated: &Rotated) -> Result<(), ApiError> {
        delivery::stage(self.secrets, rotated, self.now)
            .await
            .map_err(|e| {
                tracing::error!(error = %error_chain(&e), "the new secret could not be staged");
                not_staged()
            })
    }
}

#[tracing::instrument(skip_all, fields(caller, key_id, new_key_id))]
async fn rotate_key(
    context: Context<'_>,
    req: &Request,
    now: Timestamp,
) -> Result<Value, ApiError> {
    let (store, secrets, mint) = (context.store, context.secrets, context.mint);
    let (caller, key) = authorize_change(context, req, now).await?;
    if let Some(policy) = &key.rotation_policy {
        let prefix = &context.settings.secret_prefix;
        if prefix.admits(&key.environment, &policy.secret_id).is_err() {
            return Err(ApiError::new(
                ErrorCode::RotationPolicyOutsideEnvironment,
                "the key's rotation policy names a secret outside its environment, so its new \
                 secret cannot be delivered; set a policy that names one inside it first",
            ));
        }
    }
    let body: RotateBody = json_body(req, SHAPE)?;
    let grace = GracePeriod::from_json(&body.grace_period)?;
    let actor = caller.actor();
    let decide = |key: &Key| {
        let rotated = rotate(key, grace, actor.clone(), mint, now)?;
        caller.require_lifetime(rotated.key.expires_at)?;
        caller.require_networks(&rotated.key.allowed_ips)?;
        let change = rotated.change.clone();
        Ok((rotated, Some(change)))
    };
    let rotated = apply_prepared(store, key, decide, &Stage { secrets, now }).await?;
    tracing::Span::current().record("new_key_id", rotated.key.id.as_str());
    tracing::info!(grace_period = %grace, "key rotated");
    let mut new_key = rotated.key.clone();
    if new_key.pending_delivery.is_some() {
        match delivery::finish(store, secrets, &new_key.id, &actor, mint, now).await {
            Ok(Some(delivered)) => new_key = delivered,
            outcome => {
                if let Err(e) = outcome {
                    tracing::warn!(
                        error = %error_chain(&e),
                        "the rotation is committed; scheduled rotation finishes its delivery"
                    );
                }
                if let Ok(Some(stored)) = store.key(&new_key.id).await {
                    new_key = stored;
                }
            }
        }
    }
    Ok(json!({
        "key": KeyView::new(&new_key, LastUse::default(), now),
        "secret": rotated.secret.expose(),
        "previous": KeyView::new(&rotated.previous, last_use_after_change(store, &rotated.previous).await, now),
    }))
}

#[cfg(test)]
mod tests {
    use keyward::domain::PresentedKey;
    use keyward::store::{KeyLookup, KeyStore};
    use keyward::testing::{body_json, event, seeded};

    use super::*;

    const REST: &str = include_str!("../fixtures/rest.json");
    const HTTP: &str = include_str!("../fixtures/http.json");

    #[tokio::test]
    async fn a_policy_keys_new_secret_is_current_in_its_secret_before_the_answer() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let key = s.policy_key("keyward/production/billing", now).await.key;
        let vars = [("KEY_ID", key.id.as_str()), ("KEY", s.secret.expose())];
        let response = handler(s.context(), event(REST, &vars), now).await;
        assert_eq!(response.status(), 201, "{:?}", body_json(&response));
        let body = body_json(&response);
        assert_eq!(body["key"]["pending_delivery"], Value::Null, "delivered");
        let file: Value = serde_json::from_slice(&std::fs::read(&s.secrets_file).unwrap()).unwrap();
        let current = &file["keyward/production/billing"]["current"]["value"];
        assert_eq!(current["key_id"], body["key"]["id"]);
        assert_eq!(current["secret"], body["secret"]);
        let new_id = body["key"]["id"].as_str().unwrap();
        let new_id = keyward::domain::KeyId::parse(new_id).unwrap();
        assert_eq!(
            s.actions(&new_id).await,
            ["key.secret_delivered", "key.rotated"]
        );
    }

    #[tokio::test]
    async fn a_secret_that_cannot_be_written_rotates_nothing_and_says_so() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let key = s.policy_key("keyward/production/billing", now).await.key;
        let unwritable = keyward::secrets::FileSink::new("/nonexistent/keyward/secrets.json");
        let context = Context {
            secrets: &unwritable,
            ..s.context()
        };
        let vars = [("KEY_ID", key.id.as_str()), ("KEY", s.secret.expose())];
        let response = handler(context, event(REST, &vars), now).await;
        assert_eq!(response.status(), 502);
        let body = body_json(&response);
        assert_eq!(body["error"]["code"], "secret_delivery_failed");
        assert!(!body.to_string().contains("billing"), "{body}");
        let stored = s.store.key(&key.id).await.unwrap().unwrap();
        assert_eq!(stored, key, "nothing changed");
        assert_eq!(s.actions(&key.id).await, ["key.created"]);
    }

    #[tokio::test]
    async fn a_policy_that_delivers_outside_the_environment_is_refused_before_anything_is_written()
    {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let key = s.policy_key("keyward/staging/billing", now).await.key;
        let vars = [("KEY_ID", key.id.as_str()), ("KEY", s.secret.expose())];
        let response = handler(s.context(), event(REST, &vars), now).await;
        assert_eq!(response.status(), 409);
        let body = body_json(&response);
        assert_eq!(body["error"]["code"], "rotation_policy_outside_environment");
        assert!(!body.to_string().contains("staging"), "{body}");
        assert_eq!(s.store.key(&key.id).await.unwrap().unwrap(), key);
        assert!(!s.secrets_file.exists(), "nothing was written");
    }

    #[tokio::test]
    async fn a_policy_key_rotates_with_an_hour_of_grace_at_least_or_now() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let key = s.policy_key("keyward/production/billing", now).await.key;
        let vars = [("KEY_ID", key.id.as_str()), ("KEY", s.secret.expose())];
        let short = event(REST, &vars);
        let short = Request::from_parts(
            short.into_parts().0,
            lambda_http::Body::Text(r#"{"grace_period": "PT30M"}"#.to_owned()),
        );
        let response = handler(s.context(), short, now).await;
        assert_eq!(response.status(), 400);
        assert_eq!(
            body_json(&response)["error"]["code"],
            "invalid_grace_period"
        );
        assert_eq!(s.store.key(&key.id).await.unwrap().unwrap(), key);
        let leaked = event(REST, &vars);
        let leaked = Request::from_parts(
            leaked.into_parts().0,
            lambda_http::Body::Text(r#"{"grace_period": "now"}"#.to_owned()),
        );
        let response = handler(s.context(), leaked, now).await;
        assert_eq!(response.status(), 201, "{:?}", body_json(&response));
        assert_eq!(body_json(&response)["previous"]["status"], "expired");
    }

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
                .key_by_hash(
                    &PresentedKey::parse(secret, &Default::default())
                        .unwrap()
                        .hash,
                )
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
        let store = keyward::testing::Interfering::new(&s);
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
