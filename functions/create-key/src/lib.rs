//! `POST /v1/environments/{env}/keys`: makes a key and shows its secret once (scope `keys:write`).

use chrono::DateTime;
use keyward::domain::{
    AllowedIps, EnvName, KeyName, Kind, LastUse, NewKey, Scope, Scopes, Timestamp, create_key,
};
use keyward::http::{
    ApiError, Context, ErrorCode, HandlerFuture, KeyView, Settings, authorize_environment,
    json_body, respond, rotation_policy,
};
use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

const SHAPE: &str = r#"{"name": string, "kind"?: "secret" or "publishable", "scopes"?: [string], "expires_at"?: RFC 3339 time, "rotation_policy"?: {"every", "grace_period", "secret_id"}, "allowed_ips"?: [IPv4 or IPv6 address or CIDR range]}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    kind: Option<String>,
    scopes: Option<Vec<String>>,
    expires_at: Option<String>,
    rotation_policy: Option<Value>,
    allowed_ips: Option<Vec<String>>,
}

impl CreateBody {
    fn parse(self, environment: &EnvName, settings: &Settings) -> Result<NewKey, ApiError> {
        let kind = match self.kind.as_deref() {
            None | Some("secret") => Kind::Secret,
            Some("publishable") => Kind::Publishable,
            Some(_) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidKind,
                    "kind is secret or publishable",
                ));
            }
        };
        let expires_at = self
            .expires_at
            .map(|s| {
                DateTime::parse_from_rfc3339(&s)
                    .map(|t| keyward::truncate_to_millis(t.to_utc()))
                    .map_err(|_| {
                        ApiError::new(
                            ErrorCode::InvalidExpiresAt,
                            "expires_at is an RFC 3339 time such as 2027-01-31T00:00:00Z",
                        )
                    })
            })
            .transpose()?;
        let rotation_policy = match self.rotation_policy {
            None | Some(Value::Null) => None,
            Some(v) => Some(rotation_policy(&v, environment, settings)?),
        };
        Ok(NewKey {
            name: KeyName::parse(&self.name)?,
            kind,
            scopes: Scopes::parse(&self.scopes.unwrap_or_default())?,
            expires_at,
            rotation_policy,
            allowed_ips: AllowedIps::parse(&self.allowed_ips.unwrap_or_default())?,
        })
    }
}

/// The Lambda handler.
pub fn handler(context: Context<'_>, req: Request, now: Timestamp) -> HandlerFuture<'_> {
    Box::pin(async move { respond(StatusCode::CREATED, create(context, &req, now).await) })
}

#[tracing::instrument(name = "create_key", skip_all, fields(caller, key_id))]
async fn create(context: Context<'_>, req: &Request, now: Timestamp) -> Result<Value, ApiError> {
    let store = context.store;
    let (caller, environment) = authorize_environment(context, req, now, Scope::KEYS_WRITE).await?;
    let input = json_body::<CreateBody>(req, SHAPE)?.parse(&environment, context.settings)?;
    caller.require_grant(&environment, &input.scopes)?;
    let issued = create_key(&environment, input, caller.actor(), context.mint, now)?;
    // A key with a rotation policy is followed by successors that never expire, as the
    // policy's own setting on an existing key is (set-rotation-policy).
    let lasts_until = match issued.key.rotation_policy {
        Some(_) => None,
        None => issued.key.expires_at,
    };
    caller.require_lifetime(lasts_until)?;
    caller.require_networks(&issued.key.allowed_ips)?;
    store.apply(&issued.change).await?;
    tracing::Span::current().record("key_id", issued.key.id.as_str());
    tracing::info!("key created");
    let never = LastUse::default();
    Ok(json!({"key": KeyView::new(&issued.key, never, now), "secret": issued.secret.expose()}))
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
    async fn a_rest_api_event_creates_a_secret_key() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let req = event(REST, &[("ENV", "production"), ("KEY", s.secret.expose())]);
        let response = handler(s.context(), req, now).await;
        assert_eq!(response.status(), 201);
        let body = body_json(&response);
        assert_eq!(body["key"]["kind"], "secret");
        assert_eq!(body["key"]["status"], "active");
        assert_eq!(body["key"]["scopes"], json!(["orders:read"]));
        let secret = body["secret"].as_str().unwrap();
        let stored = s
            .store
            .key_by_hash(
                &PresentedKey::parse(secret, &Default::default())
                    .unwrap()
                    .hash,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(body["key"]["id"], stored.id.as_str());
    }

    #[tokio::test]
    async fn an_http_api_event_with_a_base64_body_creates_a_publishable_key() {
        let now = keyward::now();
        let s = seeded("staging", now).await;
        let req = event(HTTP, &[("ENV", "staging"), ("KEY", s.secret.expose())]);
        let response = handler(s.context(), req, now).await;
        assert_eq!(response.status(), 201);
        let body = body_json(&response);
        assert_eq!(body["key"]["kind"], "publishable");
        assert!(
            body["secret"]
                .as_str()
                .unwrap()
                .starts_with("kw_pk_staging_")
        );
    }

    #[tokio::test]
    async fn a_key_for_another_environment_is_forbidden() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let other = seeded("staging", now).await;
        let req = event(
            REST,
            &[("ENV", "production"), ("KEY", other.secret.expose())],
        );
        let response = handler(s.context(), req, now).await;
        assert_eq!(
            response.status(),
            401,
            "a key unknown to this store is not valid"
        );
        let staging = keyward::domain::create_environment(
            &other.environment,
            keyward::domain::Actor::operator("t"),
            &s.mint,
            now,
        );
        s.store.apply(&staging.change).await.unwrap();
        let req = event(
            REST,
            &[("ENV", "production"), ("KEY", staging.secret.expose())],
        );
        let response = handler(s.context(), req, now).await;
        assert_eq!(response.status(), 403);
        assert_eq!(body_json(&response)["error"]["code"], "wrong_environment");
    }
}
