//! `POST /v1/leaks/report`: anyone who holds a key may report it leaked, with no other
//! credential: holding a secret is the right to end it, as GitHub's own tokens are revoked
//! by value. Each secret key of this deployment in the report has its leak recorded
//! (`key.leaked`) and is revoked, or, as its environment's default key, rotated with no grace.
//! The answer is `202` whatever the strings were, so that the route never says which strings
//! are keys; only a body that is not a report gets a `4xx`.

use keyward::domain::{LeakDetails, LeakSource, Timestamp};
use keyward::http::{ApiError, Context, ErrorCode, HandlerFuture, json_body_within, respond};
use keyward::leak::{Findings, MAX_REPORT_BYTES, MAX_SECRETS, Reported, Responder};
use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

const SHAPE: &str = r#"{"secrets": [string] (1 to 1000), "url"?: string, "source"?: string}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportBody {
    secrets: Vec<String>,
    url: Option<String>,
    source: Option<String>,
}

/// The Lambda handler.
pub fn handler(context: Context<'_>, req: Request, now: Timestamp) -> HandlerFuture<'_> {
    Box::pin(async move { respond(StatusCode::ACCEPTED, report(context, &req, now).await) })
}

async fn report(context: Context<'_>, req: &Request, now: Timestamp) -> Result<Value, ApiError> {
    let body: ReportBody = json_body_within(req, SHAPE, MAX_REPORT_BYTES)?;
    if !(1..=MAX_SECRETS).contains(&body.secrets.len()) {
        return Err(ApiError::new(
            ErrorCode::InvalidLeakReport,
            format!("secrets holds 1 to {MAX_SECRETS} strings; send more in several reports"),
        ));
    }
    let details = LeakDetails::parse(body.url.as_deref(), body.source.as_deref())?;
    let responder = Responder {
        store: context.store,
        secrets: context.secrets,
        mint: context.mint,
        prefix: &context.settings.key_prefix,
    };
    let reported = Reported::all(&body.secrets, &details);
    let found = responder.report(&reported, LeakSource::Report, now).await?;
    let findings = Findings::of(&found);
    tracing::info!(
        strings = body.secrets.len(),
        keys = findings.keys,
        unknown = findings.unknown,
        publishable = findings.publishable,
        not_keys = findings.not_keys,
        "leak report answered"
    );
    Ok(json!({"received": body.secrets.len()}))
}

#[cfg(test)]
mod tests {
    use keyward::domain::{KeyPrefix, Status};
    use keyward::store::{KeyLookup, KeyStore};
    use keyward::testing::{Interfering, api_request, body_json, event, seeded};

    use super::*;

    const REST: &str = include_str!("../fixtures/rest.json");

    fn report_of(body: Value) -> Request {
        api_request("POST", &[], &[], "", body)
    }

    #[tokio::test]
    async fn a_key_reported_three_times_is_recorded_once_and_revoked_once() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let issued = s.worker_key(now).await;
        let vars = [("KEY", issued.secret.expose())];
        let response = handler(s.context(), event(REST, &vars), now).await;
        assert_eq!(response.status(), 202, "{:?}", body_json(&response));
        assert_eq!(body_json(&response), json!({"received": 3}));
        let again = handler(s.context(), event(REST, &vars), now).await;
        assert_eq!(again.status(), 202);
        assert_eq!(
            s.actions(&issued.key.id).await,
            ["key.revoked", "key.leaked", "key.created"]
        );
        let stored = s.store.key(&issued.key.id).await.unwrap().unwrap();
        assert_eq!(stored.status(now), Status::Revoked);
        assert_eq!(stored.leaked_at, Some(now));
        let page = keyward::store::PageRequest {
            limit: 10,
            after: None,
        };
        let entries = s.store.key_activity(&issued.key.id, &page).await.unwrap();
        let leaked = serde_json::to_value(&entries.items[1]).unwrap();
        assert_eq!(leaked["actor"], json!({"type": "system", "id": "report"}));
        assert_eq!(
            leaked["url"],
            "https://github.com/acme/app/blob/0b1c/config.env"
        );
        assert_eq!(leaked["source"], "commit");
        assert!(!leaked.to_string().contains(issued.secret.expose()));
    }

    #[tokio::test]
    async fn the_default_key_is_rotated_with_no_grace_since_it_cannot_be_revoked() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let response = handler(
            s.context(),
            report_of(json!({"secrets": [s.secret.expose()]})),
            now,
        )
        .await;
        assert_eq!(response.status(), 202);
        let old = s.store.key(&s.key.id).await.unwrap().unwrap();
        assert_eq!(old.status(now), Status::Expired);
        let successor = old.rotated_to.expect("the default key was rotated");
        let successor = s.store.key(&successor).await.unwrap().unwrap();
        assert!(successor.default && successor.leaked_at.is_none());
        assert_eq!(
            s.actions(&s.key.id).await,
            ["key.rotated", "key.leaked", "key.created"]
        );
    }

    #[tokio::test]
    async fn a_report_that_loses_to_another_write_reads_the_key_again_and_finishes() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let issued = s.expiring_key(now).await;
        let store = Interfering::new(&s);
        let report = report_of(json!({"secrets": [issued.secret.expose()]}));
        let response = handler(s.context_on(&store), report, now).await;
        assert_eq!(response.status(), 202, "{:?}", body_json(&response));
        assert_eq!(
            s.actions(&issued.key.id).await,
            ["key.revoked", "key.leaked", "key.expiring", "key.created"]
        );
    }

    #[tokio::test]
    async fn strings_that_are_not_live_secret_keys_change_nothing_and_get_the_same_answer() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let issued = s.worker_key(now).await;
        let acme = KeyPrefix::parse("acme").unwrap();
        let other = keyward::domain::Secret::generate(
            &keyward::mint().with_key_prefix(acme),
            keyward::domain::Kind::Secret,
            &s.environment,
        );
        let unknown = keyward::domain::Secret::generate(
            &s.mint,
            keyward::domain::Kind::Secret,
            &s.environment,
        );
        let mut flipped = issued.secret.expose().to_owned();
        let last = flipped.pop().unwrap();
        flipped.push(if last == 'a' { 'b' } else { 'a' });
        let strings = ["hello", other.expose(), unknown.expose(), flipped.as_str()];
        let response = handler(s.context(), report_of(json!({"secrets": strings})), now).await;
        assert_eq!(response.status(), 202);
        assert_eq!(body_json(&response), json!({"received": 4}));
        assert_eq!(s.actions(&issued.key.id).await, ["key.created"]);
        assert!(
            s.store
                .key_by_hash(&issued.key.hash)
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn a_body_that_is_not_a_report_gets_a_clear_400() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let too_many = vec!["x"; MAX_SECRETS + 1];
        for (body, code) in [
            (json!({"secrets": []}), "invalid_leak_report"),
            (json!({"secrets": too_many}), "invalid_leak_report"),
            (
                json!({"secrets": [s.secret.expose()], "url": format!("https://x.example/{}", s.secret.expose())}),
                "invalid_leak_report",
            ),
            (json!({"secrets": "one"}), "invalid_field"),
            (json!({"url": "https://x.example"}), "missing_field"),
            (json!({"secrets": ["a"], "token": "b"}), "unknown_field"),
        ] {
            let response = handler(s.context(), report_of(body.clone()), now).await;
            assert_eq!(response.status(), 400, "{body}");
            assert_eq!(body_json(&response)["error"]["code"], code, "{body}");
        }
        assert_eq!(
            s.actions(&s.key.id).await,
            ["key.created"],
            "a refused report ends nothing, even with a key in it"
        );
    }
}
