//! The leak routes. Neither takes a key: holding a secret is the right to end it.
//!
//! - `POST /v1/leaks/report`: anyone who holds a key may report it leaked, as GitHub's own
//!   tokens are revoked by value. The answer is `202` whatever the strings were, so that the
//!   route never says which strings are keys; only a body that is not a report gets a `4xx`.
//! - `POST /v1/leaks/github`: GitHub's secret scanning partner program. A report is taken only
//!   with a signature that one of GitHub's published keys made over its raw body (`401`, with
//!   nothing read, otherwise), and answered with GitHub's feedback: a label for each match.
//!
//! Each secret key of this deployment in a report has its leak recorded (`key.leaked`), and
//! then its environment's leak policy decides: revoked (as its environment's default key,
//! rotated with no grace), rotated with no grace, or left working (`notify`). The policy is
//! read and set here too, at `/v1/environments/{env}/leak-policy`.

use keyward::domain::{
    EnvName, Environment, KeyHash, LeakDetails, LeakPolicy, LeakSource, Scope, Timestamp,
    set_leak_policy as domain_set_leak_policy,
};
use keyward::http::{
    ATTEMPTS, ApiError, Context, ErrorCode, HandlerFuture, authorize_environment, json_body,
    json_body_within, respond,
};
use keyward::leak::github::{self, Signature};
use keyward::leak::gitlab;
use keyward::leak::{Finding, Findings, MAX_REPORT_BYTES, MAX_SECRETS, Reported, Responder};
use keyward::store::{KeyStore, StoreError};
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

/// One match of a GitHub report. Fields GitHub may add later are ignored.
#[derive(Deserialize)]
struct GithubMatch {
    token: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    source: Option<String>,
}

/// One finding of GitLab's secret detection, as its revocation request holds it.
#[derive(Deserialize)]
struct GitlabFinding {
    #[serde(rename = "type")]
    kind: String,
    token: String,
    #[serde(default)]
    location: Option<String>,
}

/// The Lambda handler of every leak route, by the request's path.
pub fn handler(context: Context<'_>, req: Request, now: Timestamp) -> HandlerFuture<'_> {
    let path = req.uri().path();
    if path.ends_with("/leak-policy") {
        if req.method() == lambda_http::http::Method::PUT {
            set_leak_policy(context, req, now)
        } else {
            leak_policy(context, req, now)
        }
    } else if path.ends_with("/v1/leaks/github") {
        github(context, req, now)
    } else if path.ends_with("/v1/leaks/gitlab/revocable_token_types") {
        gitlab_types(context, req, now)
    } else if path.ends_with("/v1/leaks/gitlab/revoke_tokens") {
        gitlab_revoke(context, req, now)
    } else {
        report(context, req, now)
    }
}

const POLICY_SHAPE: &str = r#"{"leak_policy": "revoke", "rotate" or "notify"}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeakPolicyBody {
    leak_policy: String,
}

/// `GET /v1/environments/{env}/leak-policy` (scope `keys:read`): what a leak of the
/// environment's keys does.
pub fn leak_policy(context: Context<'_>, req: Request, now: Timestamp) -> HandlerFuture<'_> {
    Box::pin(async move {
        let answer = async {
            let (_, name) = authorize_environment(context, &req, now, Scope::KEYS_READ).await?;
            let environment = environment_of(context.store, &name).await?;
            Ok(policy_view(&environment.name, environment.leak_policy))
        };
        respond(StatusCode::OK, answer.await)
    })
}

/// `PUT /v1/environments/{env}/leak-policy` (scope `*`): sets what a leak of the
/// environment's keys does, recorded as `environment.leak_policy_changed`.
pub fn set_leak_policy(context: Context<'_>, req: Request, now: Timestamp) -> HandlerFuture<'_> {
    Box::pin(async move { respond(StatusCode::OK, put_leak_policy(context, &req, now).await) })
}

fn policy_view(environment: &EnvName, policy: LeakPolicy) -> Value {
    json!({"environment": environment, "leak_policy": policy.as_str()})
}

/// The environment `name`, which exists: the caller's key lives in it.
async fn environment_of(store: &dyn KeyStore, name: &EnvName) -> Result<Environment, ApiError> {
    store.environment(name).await?.ok_or_else(|| {
        tracing::error!(environment = %name, "the caller's environment is not stored");
        ApiError::internal()
    })
}

async fn put_leak_policy(
    context: Context<'_>,
    req: &Request,
    now: Timestamp,
) -> Result<Value, ApiError> {
    let (caller, name) = authorize_environment(context, req, now, Scope::ALL).await?;
    let body: LeakPolicyBody = json_body(req, POLICY_SHAPE)?;
    let policy = LeakPolicy::parse(&body.leak_policy).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidLeakPolicy,
            "leak_policy is revoke, rotate or notify",
        )
    })?;
    for _ in 0..ATTEMPTS {
        let environment = environment_of(context.store, &name).await?;
        let Some(change) =
            domain_set_leak_policy(&environment, policy, caller.actor(), context.mint, now)
        else {
            return Ok(policy_view(&name, policy));
        };
        match context.store.apply(&change).await {
            Ok(()) => {
                tracing::info!(leak_policy = policy.as_str(), "leak policy set");
                return Ok(policy_view(&name, policy));
            }
            Err(StoreError::Conflict) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict.into())
}

/// `GET /v1/leaks/gitlab/revocable_token_types`.
pub fn gitlab_types(_: Context<'_>, req: Request, _: Timestamp) -> HandlerFuture<'_> {
    Box::pin(async move {
        let answer = admit_gitlab(&req).await;
        respond(
            StatusCode::OK,
            answer.map(|()| json!({"types": [gitlab::TOKEN_TYPE]})),
        )
    })
}

/// `POST /v1/leaks/gitlab/revoke_tokens`.
pub fn gitlab_revoke(context: Context<'_>, req: Request, now: Timestamp) -> HandlerFuture<'_> {
    Box::pin(async move {
        match revoke_for_gitlab(context, &req, now).await {
            Ok(()) => {
                let mut accepted = respond(StatusCode::NO_CONTENT, Ok::<_, ApiError>(()));
                *accepted.body_mut() = lambda_http::Body::Empty;
                accepted
            }
            Err(e) => e.into_response(),
        }
    })
}

/// Whether the request carries the token GitLab shares with keyward (`401` if not).
async fn admit_gitlab(req: &Request) -> Result<(), ApiError> {
    let refused = |why: &str| ApiError::new(ErrorCode::InvalidScannerToken, why.to_owned());
    let Some(token) = gitlab::installed() else {
        return Err(refused(
            "this keyward takes no GitLab requests: it has no token shared with GitLab",
        ));
    };
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match token.admits(presented).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(refused(
            "a GitLab request needs the token shared with keyward in Authorization",
        )),
        Err(e) => {
            tracing::error!(error = %e, "a GitLab request could not be judged");
            Err(ApiError::new(
                ErrorCode::ScannerKeysUnavailable,
                "the token shared with GitLab could not be read to check the request; try again",
            ))
        }
    }
}

async fn revoke_for_gitlab(
    context: Context<'_>,
    req: &Request,
    now: Timestamp,
) -> Result<(), ApiError> {
    admit_gitlab(req).await?;
    let body = req.body().as_ref();
    if body.len() > MAX_REPORT_BYTES {
        return Err(ApiError::payload_too_large(MAX_REPORT_BYTES));
    }
    let findings: Vec<GitlabFinding> = serde_json::from_slice(body).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidJson,
            "the body is not GitLab's array of {type, token, location}; do not send it again",
        )
    })?;
    if findings.iter().any(|f| f.kind != gitlab::TOKEN_TYPE) {
        return Err(ApiError::new(
            ErrorCode::InvalidLeakReport,
            format!(
                "a finding is of a type keyward does not revoke; it revokes only {}",
                gitlab::TOKEN_TYPE
            ),
        ));
    }
    let reported: Vec<Reported> = findings
        .iter()
        .map(|found| Reported {
            secret: found.token.clone(),
            details: seen_at(found.location.as_deref(), None),
        })
        .collect();
    answer(&context, &reported, LeakSource::Gitlab, now).await?;
    Ok(())
}

/// `POST /v1/leaks/report`.
pub fn report(context: Context<'_>, req: Request, now: Timestamp) -> HandlerFuture<'_> {
    Box::pin(async move { respond(StatusCode::ACCEPTED, by_value(context, &req, now).await) })
}

/// `POST /v1/leaks/github`.
pub fn github(context: Context<'_>, req: Request, now: Timestamp) -> HandlerFuture<'_> {
    Box::pin(async move { respond(StatusCode::OK, from_github(context, &req, now).await) })
}

/// Answers every key of a report, as `source` reported it, and logs what the strings came to
/// (never which strings): what each of the three ways in does once its request is taken.
async fn answer(
    context: &Context<'_>,
    reported: &[Reported],
    source: LeakSource,
    now: Timestamp,
) -> Result<Vec<Finding>, ApiError> {
    let responder = Responder {
        store: context.store,
        secrets: context.secrets,
        mint: context.mint,
        prefix: &context.settings.key_prefix,
    };
    let found = responder.report(reported, source, now).await?;
    let findings = Findings::of(&found);
    tracing::info!(
        source = source.as_str(),
        strings = found.len(),
        keys = findings.keys,
        unknown = findings.unknown,
        publishable = findings.publishable,
        not_keys = findings.not_keys,
        "leak report answered"
    );
    Ok(found)
}

async fn by_value(context: Context<'_>, req: &Request, now: Timestamp) -> Result<Value, ApiError> {
    let body: ReportBody = json_body_within(req, SHAPE, MAX_REPORT_BYTES)?;
    if !(1..=MAX_SECRETS).contains(&body.secrets.len()) {
        return Err(ApiError::new(
            ErrorCode::InvalidLeakReport,
            format!("secrets holds 1 to {MAX_SECRETS} strings; send more in several reports"),
        ));
    }
    let details = LeakDetails::parse(body.url.as_deref(), body.source.as_deref())?;
    let reported = Reported::all(&body.secrets, &details);
    answer(&context, &reported, LeakSource::Report, now).await?;
    Ok(json!({"received": body.secrets.len()}))
}

/// `401`: the report is not GitHub's, as far as keyward can tell.
fn not_signed() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidSignature,
        "a GitHub report needs Github-Public-Key-Identifier and Github-Public-Key-Signature, \
         a signature that one of GitHub's published keys made over the raw body",
    )
}

/// `503`: GitHub's keys could not be had, so the report cannot be judged; GitHub sends it
/// again.
fn keys_unavailable() -> ApiError {
    ApiError::new(
        ErrorCode::ScannerKeysUnavailable,
        "GitHub's public keys could not be fetched to check the signature; try again",
    )
}

/// Where a scanner says a match was seen, keeping what can be recorded: a `url` or `source`
/// that [`LeakDetails::parse`] refuses is left out rather than losing the match.
fn seen_at(url: Option<&str>, source: Option<&str>) -> LeakDetails {
    let url = url.filter(|v| !v.is_empty());
    let source = source.filter(|v| !v.is_empty());
    LeakDetails {
        url: LeakDetails::parse(url, None).ok().and_then(|d| d.url),
        source: LeakDetails::parse(None, source).ok().and_then(|d| d.source),
    }
}

async fn from_github(
    context: Context<'_>,
    req: &Request,
    now: Timestamp,
) -> Result<Value, ApiError> {
    let body = req.body().as_ref();
    if body.len() > MAX_REPORT_BYTES {
        return Err(ApiError::payload_too_large(MAX_REPORT_BYTES));
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let (Some(identifier), Some(signature)) = (
        header("github-public-key-identifier"),
        header("github-public-key-signature"),
    ) else {
        return Err(not_signed());
    };
    let keys = github::installed().ok_or_else(keys_unavailable)?;
    match keys.check(identifier, signature, body).await {
        Ok(Signature::Valid) => {}
        Ok(Signature::Invalid) => return Err(not_signed()),
        Err(e) => {
            tracing::error!(error = %e, "a GitHub report could not be judged");
            return Err(keys_unavailable());
        }
    }
    let matches: Vec<GithubMatch> = serde_json::from_slice(body).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidJson,
            "the body is not GitHub's array of {token, type, url, source}",
        )
    })?;
    let reported: Vec<Reported> = matches
        .iter()
        .map(|found| Reported {
            secret: found.token.clone(),
            details: seen_at(found.url.as_deref(), found.source.as_deref()),
        })
        .collect();
    let found = answer(&context, &reported, LeakSource::Github, now).await?;
    let feedback: Vec<Value> = matches
        .iter()
        .zip(&found)
        .map(|(reported, finding)| {
            let label = match finding {
                Finding::Key => "true_positive",
                Finding::NotAKey | Finding::Publishable | Finding::Unknown => "false_positive",
            };
            json!({
                "token_hash": KeyHash::of(&reported.token).to_hex(),
                "token_type": reported.kind,
                "label": label,
            })
        })
        .collect();
    Ok(Value::Array(feedback))
}

#[cfg(test)]
mod tests {
    use keyward::domain::{KeyPrefix, Status};
    use keyward::store::{KeyLookup, KeyStore};
    use std::sync::OnceLock;

    use keyward::testing::{GithubSigner, Interfering, api_request, body_json, event, seeded};

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
        let stored = s.store.key(&issued.key.id).await.unwrap().unwrap();
        assert_eq!(stored.status(now), Status::Revoked);
        assert_eq!(stored.leaked_at, Some(now));
        let leaked = leaked_entry(&s, &issued.key.id).await;
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

    /// What the one key check says of `secret` in `s`'s store.
    async fn checked(s: &keyward::testing::Seeded, secret: &str, now: Timestamp) -> &'static str {
        let needs = keyward::check::Needs {
            environment: None,
            source: None,
            scopes: &[],
            closed: false,
        };
        let prefix = KeyPrefix::default();
        keyward::check::check_presented(
            &s.store,
            &keyward::usage::NotCounted,
            &prefix,
            Some(secret),
            needs,
            now,
        )
        .await
        .unwrap()
        .outcome
        .code()
    }

    #[tokio::test]
    async fn a_store_that_fails_after_the_leak_is_recorded_leaves_the_key_refused_and_a_report_again_ends_it()
     {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let issued = s.worker_key(now).await;
        let report = || report_of(json!({"secrets": [issued.secret.expose()]}));
        let down = Interfering::failing_after(&s, 1);
        let response = handler(s.context_on(&down), report(), now).await;
        assert_eq!(
            response.status(),
            500,
            "the store failed: worth sending again"
        );
        assert_eq!(
            s.actions(&issued.key.id).await,
            ["key.leaked", "key.created"]
        );
        assert_eq!(
            checked(&s, issued.secret.expose(), now).await,
            "revoked",
            "refused from the first write"
        );
        let response = handler(s.context(), report(), now).await;
        assert_eq!(response.status(), 202);
        assert_eq!(
            s.actions(&issued.key.id).await,
            ["key.revoked", "key.leaked", "key.created"],
            "the report again finishes it, and records the leak once"
        );
    }

    #[tokio::test]
    async fn a_default_key_whose_successor_cannot_be_delivered_is_refused_and_the_answer_is_the_same()
     {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let outside = json!({"every": "P30D", "grace_period": "24h", "secret_id": "payments/production/admin"});
        let policy = keyward::domain::RotationPolicy::from_json(&outside).unwrap();
        let keyward::domain::Setting::Changed { change, .. } =
            keyward::domain::set_rotation_policy(
                &s.key,
                Some(policy),
                keyward::domain::Actor::operator("t"),
                &s.mint,
                now,
            )
            .unwrap()
        else {
            panic!("the policy is new")
        };
        s.store.apply(&change).await.unwrap();
        let response = handler(
            s.context(),
            report_of(json!({"secrets": [s.secret.expose()]})),
            now,
        )
        .await;
        assert_eq!(response.status(), 202, "{:?}", body_json(&response));
        assert_eq!(body_json(&response), json!({"received": 1}));
        assert_eq!(
            s.actions(&s.key.id).await,
            ["key.leaked", "key.rotation_policy_changed", "key.created"],
            "not rotated: its successor could not be staged outside the secret prefix"
        );
        assert_eq!(checked(&s, s.secret.expose(), now).await, "revoked");
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

    /// The `key.leaked` entry of `id`, whose activity must be its creation, its leak and its
    /// revocation, as JSON.
    async fn leaked_entry(s: &keyward::testing::Seeded, id: &keyward::domain::KeyId) -> Value {
        assert_eq!(
            s.actions(id).await,
            ["key.revoked", "key.leaked", "key.created"]
        );
        let page = keyward::store::PageRequest {
            limit: 10,
            after: None,
        };
        let entries = s.store.key_activity(id, &page).await.unwrap();
        serde_json::to_value(&entries.items[1]).unwrap()
    }

    /// GitHub as the tests play it, its keys installed for this process.
    fn signer() -> &'static GithubSigner {
        static SIGNER: OnceLock<GithubSigner> = OnceLock::new();
        SIGNER.get_or_init(|| {
            let signer = GithubSigner::start();
            github::install(github::GithubKeys::new(&signer.url).unwrap());
            signer
        })
    }

    /// A report as GitHub sends it: `body` as is, with these headers.
    fn from_github_with(body: &str, headers: &[(&str, &str)]) -> Request {
        let mut request = lambda_http::http::Request::builder()
            .method("POST")
            .uri("/v1/leaks/github")
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(lambda_http::Body::from(body)).unwrap()
    }

    /// A report signed by GitHub's test key.
    fn signed(body: &str) -> Request {
        let signature = signer().sign(body.as_bytes());
        from_github_with(
            body,
            &[
                ("Github-Public-Key-Identifier", GithubSigner::IDENTIFIER),
                ("Github-Public-Key-Signature", &signature),
            ],
        )
    }

    #[tokio::test]
    async fn a_signed_github_report_ends_its_keys_and_labels_each_match() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let issued = s.worker_key(now).await;
        let publishable = keyward::domain::Secret::generate(
            &s.mint,
            keyward::domain::Kind::Publishable,
            &s.environment,
        );
        let body = json!([
            {"token": issued.secret.expose(), "type": "keyward_secret_key", "url": "https://github.com/acme/app/blob/0b1c/.env", "source": "commit"},
            {"token": publishable.expose(), "type": "keyward_publishable_key", "url": "", "source": "npm"},
            {"token": "kw_sk_production_not_a_key", "type": "keyward_secret_key", "url": "", "source": "content"},
        ])
        .to_string();
        let response = handler(s.context(), signed(&body), now).await;
        assert_eq!(response.status(), 200, "{:?}", body_json(&response));
        let hash = |token: &str| keyward::domain::KeyHash::of(token).to_hex();
        assert_eq!(
            body_json(&response),
            json!([
                {"token_hash": hash(issued.secret.expose()), "token_type": "keyward_secret_key", "label": "true_positive"},
                {"token_hash": hash(publishable.expose()), "token_type": "keyward_publishable_key", "label": "false_positive"},
                {"token_hash": hash("kw_sk_production_not_a_key"), "token_type": "keyward_secret_key", "label": "false_positive"},
            ])
        );
        let leaked = leaked_entry(&s, &issued.key.id).await;
        assert_eq!(leaked["actor"], json!({"type": "system", "id": "github"}));
        assert_eq!(leaked["url"], "https://github.com/acme/app/blob/0b1c/.env");
        assert_eq!(leaked["source"], "commit");
        let again = handler(s.context(), signed(&body), now).await;
        assert_eq!(
            body_json(&again)[0]["label"],
            "true_positive",
            "an ended key is still a real one"
        );
        assert_eq!(
            s.actions(&issued.key.id).await.len(),
            3,
            "and changes no more"
        );
    }

    #[tokio::test]
    async fn a_github_report_without_githubs_signature_is_401_and_ends_nothing() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let issued = s.worker_key(now).await;
        let body =
            json!([{"token": issued.secret.expose(), "type": "t", "url": "", "source": "commit"}])
                .to_string();
        let signature = signer().sign(body.as_bytes());
        let mut tampered = body.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = b' ';
        let tampered = String::from_utf8(tampered).unwrap();
        let stranger = GithubSigner::start().sign(body.as_bytes());
        let id = ("Github-Public-Key-Identifier", GithubSigner::IDENTIFIER);
        for request in [
            from_github_with(&body, &[]),
            from_github_with(&body, &[id]),
            from_github_with(&body, &[("Github-Public-Key-Signature", &signature)]),
            from_github_with(
                &tampered,
                &[id, ("Github-Public-Key-Signature", &signature)],
            ),
            from_github_with(&body, &[id, ("Github-Public-Key-Signature", &stranger)]),
            from_github_with(&body, &[id, ("Github-Public-Key-Signature", "not base64!")]),
        ] {
            let response = handler(s.context(), request, now).await;
            assert_eq!(response.status(), 401);
            assert_eq!(body_json(&response)["error"]["code"], "invalid_signature");
        }
        assert_eq!(s.actions(&issued.key.id).await, ["key.created"]);
    }

    #[tokio::test]
    async fn an_unknown_key_identifier_fetches_githubs_keys_at_most_once_a_minute() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let body = "[]";
        let signature = signer().sign(body.as_bytes());
        let known = handler(s.context(), signed(body), now).await;
        assert_eq!(known.status(), 200, "{:?}", body_json(&known));
        let before = signer().fetches();
        for _ in 0..5 {
            let request = from_github_with(
                body,
                &[
                    ("Github-Public-Key-Identifier", "rotated-away"),
                    ("Github-Public-Key-Signature", &signature),
                ],
            );
            assert_eq!(handler(s.context(), request, now).await.status(), 401);
        }
        assert!(
            signer().fetches() - before <= 1,
            "five unknown identifiers in a minute: {} fetches",
            signer().fetches() - before
        );
    }

    /// The token this test process shares with GitLab, kept in a file and installed.
    fn gitlab_token() -> &'static str {
        static TOKEN: OnceLock<String> = OnceLock::new();
        TOKEN.get_or_init(|| {
            let token = "shared-with-gitlab-0123456789".to_owned();
            let file =
                std::env::temp_dir().join(format!("keyward-gitlab-token-{}", std::process::id()));
            std::fs::write(&file, &token).unwrap();
            gitlab::install(Some(
                gitlab::GitlabToken::parse(&format!("file:{}", file.display())).unwrap(),
            ));
            token
        })
    }

    /// A request as GitLab sends one to `path`, with `authorization` as it is.
    fn from_gitlab_with(method: &str, path: &str, authorization: &str, body: &str) -> Request {
        lambda_http::http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", authorization)
            .header("content-type", "application/json")
            .body(lambda_http::Body::from(body))
            .unwrap()
    }

    #[tokio::test]
    async fn gitlab_with_the_shared_token_learns_the_type_and_its_findings_end_their_keys() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let issued = s.worker_key(now).await;
        let types = "/v1/leaks/gitlab/revocable_token_types";
        let answer = handler(
            s.context(),
            from_gitlab_with("GET", types, gitlab_token(), ""),
            now,
        )
        .await;
        assert_eq!(answer.status(), 200);
        assert_eq!(
            body_json(&answer),
            json!({"types": ["gitleaks_rule_id_keyward_secret_key"]})
        );
        let body = json!([
            {"type": "gitleaks_rule_id_keyward_secret_key", "token": issued.secret.expose(), "location": "https://gitlab.example.com/acme/app/-/blob/0b1c/.env"},
            {"type": "gitleaks_rule_id_keyward_secret_key", "token": "kw_sk_production_no", "location": "https://gitlab.example.com/acme/app/-/blob/0b1c/.env"},
        ])
        .to_string();
        let revoke = "/v1/leaks/gitlab/revoke_tokens";
        let bearer = format!("Bearer {}", gitlab_token());
        let answer = handler(
            s.context(),
            from_gitlab_with("POST", revoke, &bearer, &body),
            now,
        )
        .await;
        assert_eq!(answer.status(), 204);
        assert!(answer.body().is_empty());
        let leaked = leaked_entry(&s, &issued.key.id).await;
        assert_eq!(leaked["actor"], json!({"type": "system", "id": "gitlab"}));
        assert_eq!(
            leaked["url"],
            "https://gitlab.example.com/acme/app/-/blob/0b1c/.env"
        );
    }

    #[tokio::test]
    async fn gitlab_without_the_shared_token_or_with_a_type_keyward_does_not_revoke_ends_nothing() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let issued = s.worker_key(now).await;
        let revoke = "/v1/leaks/gitlab/revoke_tokens";
        let finding = |kind: &str| {
            json!([{"type": kind, "token": issued.secret.expose(), "location": ""}]).to_string()
        };
        let ours = finding("gitleaks_rule_id_keyward_secret_key");
        for (authorization, body, status, code) in [
            ("", ours.clone(), 401, "invalid_scanner_token"),
            (
                "shared-with-gitlab",
                ours.clone(),
                401,
                "invalid_scanner_token",
            ),
            ("Bearer nope", ours.clone(), 401, "invalid_scanner_token"),
            (
                gitlab_token(),
                finding("gitleaks_rule_id_gitlab_personal_access_token"),
                400,
                "invalid_leak_report",
            ),
            (
                gitlab_token(),
                "{\"type\": 1}".to_owned(),
                400,
                "invalid_json",
            ),
        ] {
            let answer = handler(
                s.context(),
                from_gitlab_with("POST", revoke, authorization, &body),
                now,
            )
            .await;
            assert_eq!(answer.status(), status, "{authorization:?} {body}");
            assert_eq!(body_json(&answer)["error"]["code"], code);
        }
        let types = "/v1/leaks/gitlab/revocable_token_types";
        let answer = handler(
            s.context(),
            from_gitlab_with("GET", types, "wrong", ""),
            now,
        )
        .await;
        assert_eq!(answer.status(), 401);
        assert_eq!(s.actions(&issued.key.id).await, ["key.created"]);
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
