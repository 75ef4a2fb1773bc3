//! `PUT /v1/keys/{key_id}/rotation-policy`: sets, changes or clears (with `null`) how an active
//! key rotates itself (scope `keys:write`). Setting the policy the key already has changes
//! nothing and records nothing.

use keyward::domain::{Key, Timestamp, set_rotation_policy};
use keyward::http::{
    ApiError, Context, HandlerFuture, KeyView, apply_setting, authorize_change, json_body,
    last_use_after_change, respond, rotation_policy,
};
use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

const SHAPE: &str = r#"{"rotation_policy": {"every": ISO-8601 duration from P1D to P365D, "grace_period", "secret_id": Secrets Manager name or ARN} or null}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    rotation_policy: Value,
}

/// The Lambda handler.
pub fn handler(context: Context<'_>, req: Request, now: Timestamp) -> HandlerFuture<'_> {
    Box::pin(async move { respond(StatusCode::OK, set_policy(context, &req, now).await) })
}

#[tracing::instrument(name = "set_rotation_policy", skip_all, fields(caller, key_id))]
async fn set_policy(
    context: Context<'_>,
    req: &Request,
    now: Timestamp,
) -> Result<Value, ApiError> {
    let store = context.store;
    let (caller, key) = authorize_change(context, req, now).await?;
    let body: PolicyBody = json_body(req, SHAPE)?;
    let policy = match body.rotation_policy {
        Value::Null => None,
        value => Some(rotation_policy(&value, &key.environment, context.settings)?),
    };
    let decide =
        |key: &Key| set_rotation_policy(key, policy.clone(), caller.actor(), context.mint, now);
    let allow = |_: &Key, after: &Key| {
        // A policy makes successors, which keep the key's networks.
        if after.rotation_policy.is_some() {
            caller.require_lifetime(None)?;
            caller.require_networks(&after.allowed_ips)?;
        }
        Ok(())
    };
    let (key, changed) = apply_setting(store, key, decide, allow).await?;
    if changed {
        let set = key.rotation_policy.is_some();
        tracing::info!(set, "rotation policy changed");
    }
    let last = last_use_after_change(store, &key).await;
    Ok(json!({"key": KeyView::new(&key, last, now)}))
}

#[cfg(test)]
mod tests {
    use keyward::domain::Action;
    use keyward::store::{ActivityFilter, KeyStore, PageRequest};
    use keyward::testing::{body_json, event, seeded};

    use super::*;

    const REST: &str = include_str!("../fixtures/rest.json");
    const HTTP: &str = include_str!("../fixtures/http.json");
    const POLICY: &str = r#"{\"rotation_policy\": {\"every\": \"P90D\", \"grace_period\": \"24h\", \"secret_id\": \"keyward/production/billing\"}}"#;

    async fn entries(s: &keyward::testing::Seeded) -> usize {
        let filter = ActivityFilter {
            action: Some(Action::RotationPolicyChanged),
            key_id: Some(s.key.id.clone()),
        };
        let page = PageRequest {
            limit: 10,
            after: None,
        };
        s.store
            .environment_activity(&s.environment, &filter, &page)
            .await
            .unwrap()
            .items
            .len()
    }

    #[tokio::test]
    async fn a_policy_is_set_through_either_api_shape_then_cleared_once() {
        for fixture in [REST, HTTP] {
            let now = keyward::now();
            let s = seeded("production", now).await;
            let put = |body: &'static str| {
                event(
                    fixture,
                    &[
                        ("KEY_ID", s.key.id.as_str()),
                        ("KEY", s.secret.expose()),
                        ("BODY", body),
                    ],
                )
            };
            let response = handler(s.context(), put(POLICY), now).await;
            assert_eq!(response.status(), 200);
            let body = body_json(&response);
            assert_eq!(
                body["key"]["rotation_policy"],
                json!({"every": "P90D", "grace_period": "24h", "secret_id": "keyward/production/billing"})
            );
            assert_eq!(entries(&s).await, 1);
            assert_eq!(handler(s.context(), put(POLICY), now).await.status(), 200);
            assert_eq!(
                entries(&s).await,
                1,
                "the same policy again records nothing"
            );
            let cleared = handler(s.context(), put(r#"{\"rotation_policy\": null}"#), now).await;
            assert_eq!(cleared.status(), 200);
            assert_eq!(body_json(&cleared)["key"]["rotation_policy"], Value::Null);
            assert_eq!(entries(&s).await, 2);
        }
    }

    /// An expiry notice recorded between the handler's read and its write changes the key's
    /// version but not the decision: the policy is decided again and set, as every other
    /// change does, not answered `409`.
    #[tokio::test]
    async fn a_background_write_meanwhile_is_decided_again_not_a_conflict() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let expiring = s.expiring_key(now).await;
        let store = keyward::testing::Interfering::new(&s);
        let vars = [
            ("KEY_ID", expiring.key.id.as_str()),
            ("KEY", s.secret.expose()),
            ("BODY", POLICY),
        ];
        let response = handler(s.context_on(&store), event(REST, &vars), now).await;
        assert_eq!(response.status(), 200, "{:?}", body_json(&response));
        assert_eq!(
            s.actions(&expiring.key.id).await,
            ["key.rotation_policy_changed", "key.expiring", "key.created"]
        );
    }

    #[tokio::test]
    async fn a_secret_that_another_active_key_delivers_to_is_refused_and_nothing_is_recorded() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let holder = s.policy_key("keyward/production/billing", now).await;
        let vars = [
            ("KEY_ID", s.key.id.as_str()),
            ("KEY", s.secret.expose()),
            ("BODY", POLICY),
        ];
        let response = handler(s.context(), event(REST, &vars), now).await;
        assert_eq!(response.status(), 409);
        assert_eq!(body_json(&response)["error"]["code"], "secret_in_use");
        assert_eq!(entries(&s).await, 0);
        let stored = s.store.key(&s.key.id).await.unwrap().unwrap();
        assert_eq!(stored.rotation_policy, None);
        assert!(
            s.store
                .key(&holder.key.id)
                .await
                .unwrap()
                .unwrap()
                .delivers_to("keyward/production/billing", now)
        );
    }

    #[tokio::test]
    async fn bad_bodies_and_keys_that_are_not_active_get_clear_errors() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        for (body, status, code) in [
            (r#"{}"#, 400, "missing_field"),
            (
                r#"{\"rotation_policy\": \"P90D\"}"#,
                400,
                "invalid_rotation_policy",
            ),
            (
                r#"{\"rotation_policy\": {\"every\": \"PT1H\", \"grace_period\": \"1h\", \"secret_id\": \"s\"}}"#,
                400,
                "invalid_rotation_policy",
            ),
            (
                r#"{\"rotation_policy\": null, \"extra\": 1}"#,
                400,
                "unknown_field",
            ),
        ] {
            let vars = [
                ("KEY_ID", s.key.id.as_str()),
                ("KEY", s.secret.expose()),
                ("BODY", body),
            ];
            let response = handler(s.context(), event(REST, &vars), now).await;
            assert_eq!(response.status(), status, "{body}");
            assert_eq!(body_json(&response)["error"]["code"], code, "{body}");
        }
        let rotated = keyward::domain::rotate(
            &s.key,
            keyward::domain::GracePeriod::parse("1h").unwrap(),
            keyward::domain::Actor::operator("test"),
            &s.mint,
            now,
        )
        .unwrap();
        s.store.apply(&rotated.change).await.unwrap();
        let vars = [
            ("KEY_ID", s.key.id.as_str()),
            ("KEY", rotated.secret.expose()),
            ("BODY", POLICY),
        ];
        let response = handler(s.context(), event(REST, &vars), now).await;
        assert_eq!(response.status(), 409);
        assert_eq!(body_json(&response)["error"]["code"], "key_not_active");
    }
}
