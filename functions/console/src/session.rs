//! People's sign-in to the console, where an identity provider is configured: a
//! backend-for-frontend. keyward runs OpenID Connect's authorization code flow with PKCE
//! itself and keeps the ID token in a cookie that no script can read (`HttpOnly`), that only
//! this host can set (`__Host-`, `Secure`), and that no other site's request carries
//! (`SameSite=Strict`). The page never holds a token: it calls the API on its own origin, and
//! the cookie goes along, read only from requests that carry [`CONSOLE_HEADER`].
//!
//! - `GET /console/sign-in` sends the browser to the issuer, with a fresh `state`, `nonce`
//!   and PKCE verifier kept in a short cookie of their own.
//! - `GET /console/callback` matches the `state`, exchanges the code, checks the ID token
//!   and its `nonce`, and sets the session's cookie.
//! - `GET /console/sign-out` drops the cookie, and sends the browser to end its session at
//!   the issuer too, where the issuer publishes how.
//! - `GET /v1/session` says who is signed in and what their roles grant, for the page's
//!   environment switcher.

use keyward::domain::Timestamp;
use keyward::http::{
    ApiError, CONSOLE_HEADER, ErrorCode, Finish, People, SESSION_COOKIE, SignedIn, cookie,
    json_response, require_role, session_from_headers,
};
use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};

use super::secure;

/// The cookie that carries a sign-in's `state`, `nonce` and PKCE verifier from its start to
/// its callback. `SameSite=Lax`, not `Strict`: the callback is a navigation from the issuer's
/// site, which a strict cookie would not come back with.
const SIGN_IN_COOKIE: &str = "__Host-keyward-sign-in";

/// The callback's path below the console's address: the redirect URI that a sign-in sends,
/// and that its exchange must name again, exactly.
const CALLBACK: &str = "console/callback";

/// How long a sign-in may take, in seconds, from its start to its callback.
const SIGN_IN_SECONDS: i64 = 600;

/// The longest a session's cookie is kept, in seconds, whatever the ID token's own `exp`: a
/// working day.
const MAX_SESSION_SECONDS: i64 = 8 * 3600;

/// The largest `Set-Cookie` value that browsers keep (4096 bytes, name and value), with room
/// for the attributes.
const MAX_COOKIE_BYTES: usize = 4000;

/// The console's address, as the browser asked for it: API Gateway's host and stage over
/// HTTPS, or `keyward serve`'s host over plain HTTP; `suffix` is the route's own part of the
/// path. `None` for a host that is no host name.
fn console_base(req: &Request, suffix: &str) -> Option<String> {
    let context = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(context)) => Some(context),
        _ => None,
    };
    let deployed = context.and_then(|c| c.domain_name.as_deref());
    let host = deployed.or_else(|| req.headers().get(header::HOST)?.to_str().ok())?;
    let fits = |c: char| c.is_ascii_alphanumeric() || ".-:[]".contains(c);
    if host.is_empty() || !host.chars().all(fits) {
        return None;
    }
    // `keyward serve` signs people in on loopback only, where a browser takes a `Secure`
    // cookie over plain HTTP; any other name (a DNS rebinding's among them) is refused.
    if deployed.is_none() && !is_loopback(host) {
        return None;
    }
    let path = context
        .and_then(|c| c.path.as_deref())
        .unwrap_or_else(|| req.uri().path());
    let prefix = path.strip_suffix(suffix)?;
    if !prefix.starts_with('/') || prefix.contains("//") {
        return None;
    }
    let scheme = if deployed.is_some() { "https" } else { "http" };
    Some(format!("{scheme}://{host}{prefix}"))
}

/// Whether `host` (a `Host` header: a name or an address, and a port) is this machine's
/// loopback.
fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A redirect to `location` (`302` to the issuer, `303` back to the page), setting `cookies`.
fn redirect(status: StatusCode, location: &str, cookies: &[String]) -> Response<Body> {
    let mut response = Response::new(Body::Empty);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, location);
    }
    for set in cookies {
        if let Ok(value) = HeaderValue::from_str(set) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure(&mut response);
    response
}

/// The cookie `name` set to `value` for `max_age` seconds, with every attribute a session's
/// cookie needs.
fn set_cookie(name: &str, value: &str, max_age: i64, same_site: &str) -> String {
    format!("{name}={value}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite={same_site}")
}

/// The cookie `name` dropped.
fn drop_cookie(name: &str, same_site: &str) -> String {
    set_cookie(name, "", 0, same_site)
}

/// `404 people_not_configured`: this console signs in with keys only.
fn not_configured() -> Response<Body> {
    ApiError::new(
        ErrorCode::PeopleNotConfigured,
        "no identity provider is configured: sign in with an API key",
    )
    .into_response()
}

/// `400 sign_in_failed` for a request whose host cannot make an address to come back to.
fn no_host() -> Response<Body> {
    ApiError::new(
        ErrorCode::SignInFailed,
        "the request names no host to come back to",
    )
    .into_response()
}

/// `GET /console/sign-in`: the browser sent to the issuer to sign in.
pub(crate) async fn begin(req: &Request, people: &dyn People) -> Response<Body> {
    let Some(sign_in) = people.sign_in() else {
        return not_configured();
    };
    let Some(base) = console_base(req, "console/sign-in") else {
        return no_host();
    };
    match sign_in.begin(&format!("{base}{CALLBACK}")).await {
        Ok(start) => {
            let kept = format!("{}.{}.{}", start.state, start.nonce, start.verifier);
            let cookie = set_cookie(SIGN_IN_COOKIE, &kept, SIGN_IN_SECONDS, "Lax");
            redirect(StatusCode::FOUND, &start.url, &[cookie])
        }
        Err(e) => failed_to_page(&base, &e),
    }
}

/// `GET /console/callback`: the issuer's answer, turned into the session's cookie, and the
/// browser sent back to the page; a failure is sent back as its code, in the page's address.
pub(crate) async fn callback(req: &Request, people: &dyn People, now: Timestamp) -> Response<Body> {
    let Some(sign_in) = people.sign_in() else {
        return not_configured();
    };
    let Some(base) = console_base(req, CALLBACK) else {
        return no_host();
    };
    let failed = |why: &str| Err(ApiError::new(ErrorCode::SignInFailed, why));
    let query = req.query_string_parameters();
    let kept: Option<Vec<&str>> =
        cookie(req.headers(), SIGN_IN_COOKIE).map(|v| v.split('.').collect());
    let outcome = match (kept.as_deref(), query.first("state"), query.first("code")) {
        (None, _, _) => failed("the sign-in was not started here, or took over ten minutes"),
        (_, _, _) if query.first("error").is_some() => {
            failed("the identity provider did not sign you in")
        }
        (Some([state, nonce, verifier]), Some(came), Some(code)) if came == *state => {
            let finish = Finish {
                code,
                redirect_uri: &format!("{base}{CALLBACK}"),
                verifier,
                nonce,
            };
            sign_in.finish(finish, now).await
        }
        _ => failed("the sign-in came back unlike it left"),
    };
    back_to_page(&base, outcome, now.timestamp())
}

/// The browser sent back to the page, signed in: the session's cookie set to the ID token
/// for as long as it lasts, and the sign-in's own cookie dropped.
fn back_to_page(base: &str, outcome: Result<SignedIn, ApiError>, now: i64) -> Response<Body> {
    let signed_in = match outcome {
        Ok(signed_in) => signed_in,
        Err(e) => return failed_to_page(base, &e),
    };
    let lasts = (signed_in.expires_at - now).min(MAX_SESSION_SECONDS);
    if lasts <= 0 {
        let e = ApiError::new(
            ErrorCode::SignInFailed,
            "the identity provider's ID token expires as it is issued",
        );
        return failed_to_page(base, &e);
    }
    let session = set_cookie(SESSION_COOKIE, &signed_in.id_token, lasts, "Strict");
    if session.len() > MAX_COOKIE_BYTES {
        let e = ApiError::new(
            ErrorCode::SignInFailed,
            "the identity provider's ID token is too large for a browser's cookie",
        );
        return failed_to_page(base, &e);
    }
    tracing::info!(person = %signed_in.person.sub, "a person signed in to the console");
    let spent = drop_cookie(SIGN_IN_COOKIE, "Lax");
    redirect(
        StatusCode::SEE_OTHER,
        &format!("{base}#/keys"),
        &[spent, session],
    )
}

/// The browser sent back to the page with the code of why its sign-in failed, which the
/// page explains; the sign-in's cookie is dropped.
fn failed_to_page(base: &str, e: &ApiError) -> Response<Body> {
    tracing::info!(code = e.code(), error = ?e, "a sign-in failed");
    let location = format!("{base}#/sign-in?failed={}", e.code());
    redirect(
        StatusCode::SEE_OTHER,
        &location,
        &[drop_cookie(SIGN_IN_COOKIE, "Lax")],
    )
}

/// `GET /console/sign-out`: the session's cookie dropped, and the browser sent to end its
/// session at the issuer, or else back to the page. Only the console's own page signs out: a
/// browser says where a navigation came from (`Sec-Fetch-Site`), and one from another site
/// is sent back to the page with its session as it was.
pub(crate) async fn sign_out(req: &Request, people: &dyn People) -> Response<Body> {
    let Some(base) = console_base(req, "console/sign-out") else {
        return no_host();
    };
    let from = req
        .headers()
        .get("sec-fetch-site")
        .map(HeaderValue::as_bytes);
    if from.is_some_and(|site| site != b"same-origin") {
        return redirect(StatusCode::SEE_OTHER, &format!("{base}#/keys"), &[]);
    }
    let location = match people.sign_in() {
        Some(sign_in) => sign_in.end_session(&base).await,
        None => None,
    };
    redirect(
        StatusCode::SEE_OTHER,
        &location.unwrap_or_else(|| format!("{base}#/signed-out")),
        &[drop_cookie(SESSION_COOKIE, "Strict")],
    )
}

/// `GET /v1/session`: the signed-in person and the scopes their roles grant in each
/// environment (`*` for every one).
pub(crate) async fn session(req: &Request, people: &dyn People, now: Timestamp) -> Response<Body> {
    if people.sign_in().is_none() {
        return not_configured();
    }
    let Some(token) = session_from_headers(req.headers()) else {
        let why = if req.headers().contains_key(CONSOLE_HEADER) {
            "sign in first"
        } else {
            "the session is read only by the console, which sends x-keyward-console"
        };
        return ApiError::new(ErrorCode::NotSignedIn, why).into_response();
    };
    let person = match people.person(token, now).await {
        Ok(person) => person,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = require_role(&person) {
        return e.into_response();
    }
    let body = serde_json::json!({
        "person": {"id": person.sub, "name": person.name},
        "grants": person.grants.listed(),
    });
    json_response(StatusCode::OK, &body)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use keyward::http::NoPeople;
    use keyward::oidc::{Oidc, OidcSettings};
    use keyward::testing::Provider;
    use lambda_http::http::HeaderMap;
    use serde_json::{Value, json};
    use sha2::{Digest, Sha256};

    use super::*;

    const CLIENT: &str = "keyward-console";
    const HOST: &str = "127.0.0.1:8080";
    const BASE: &str = "http://127.0.0.1:8080/";

    /// A provider with Dana set up in the group `devs`, and keyward signing people in
    /// through it with `devs` holding every scope in `development`.
    fn signing_in() -> (Provider, Oidc) {
        let provider = Provider::start(&[]);
        let claims =
            json!({"email": "dana@example.com", "email_verified": true, "groups": ["devs"]});
        provider.set_person("dana", &claims);
        let roles = r#"{"devs": {"development": ["*"]}}"#;
        let settings = OidcSettings::new(&provider.issuer, CLIENT, None, Some(roles)).unwrap();
        (provider, Oidc::new(settings).unwrap())
    }

    /// A browser's GET of `path` on keyward serve, with these query parameters and headers.
    fn get(path: &str, query: &[(&str, &str)], headers: &[(&str, &str)]) -> Request {
        let mut builder = lambda_http::http::Request::builder()
            .uri(format!("http://{HOST}{path}"))
            .header(header::HOST, HOST);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let query: HashMap<String, String> = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        builder
            .body(Body::Empty)
            .unwrap()
            .with_query_string_parameters(query)
    }

    fn location(response: &Response<Body>) -> &str {
        response.headers()[header::LOCATION].to_str().unwrap()
    }

    /// The `Set-Cookie` of `name`, whole, if the response sets it.
    fn set_cookie_of<'r>(response: &'r Response<Body>, name: &str) -> Option<&'r str> {
        response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .find(|v| v.starts_with(&format!("{name}=")))
    }

    /// The value the `Set-Cookie` of `name` sets.
    fn cookie_value<'r>(response: &'r Response<Body>, name: &str) -> &'r str {
        let set = set_cookie_of(response, name).expect("the cookie is set");
        set[name.len() + 1..].split(';').next().unwrap()
    }

    fn query_of(url: &str) -> HashMap<String, String> {
        let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
        form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect()
    }

    fn json_of(response: &Response<Body>) -> Value {
        match response.body() {
            Body::Text(text) => serde_json::from_str(text).unwrap(),
            _ => panic!("a text body"),
        }
    }

    /// A sign-in begun, and Dana authorizing it: the sign-in's cookie, and the callback's
    /// query as the provider sent the browser back.
    async fn authorized(provider: &Provider, oidc: &Oidc) -> (String, HashMap<String, String>) {
        let started = begin(&get("/console/sign-in", &[], &[]), oidc).await;
        let kept = cookie_value(&started, SIGN_IN_COOKIE).to_owned();
        let back = provider.authorize(location(&started), "dana");
        assert!(
            back.starts_with(&format!("{BASE}console/callback?")),
            "{back}"
        );
        (kept, query_of(&back))
    }

    async fn call_back(oidc: &Oidc, kept: &str, query: &HashMap<String, String>) -> Response<Body> {
        let cookie = format!("{SIGN_IN_COOKIE}={kept}");
        let query: Vec<(&str, &str)> = query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        callback(
            &get("/console/callback", &query, &[("cookie", &cookie)]),
            oidc,
            keyward::now(),
        )
        .await
    }

    #[tokio::test]
    async fn a_sign_in_leaves_with_state_nonce_and_an_s256_challenge_whose_secrets_stay_in_a_cookie()
     {
        let (provider, oidc) = signing_in();
        let started = begin(&get("/console/sign-in", &[], &[]), &oidc).await;
        assert_eq!(started.status(), 302);
        let to = location(&started);
        assert!(
            to.starts_with(&format!("{}/oauth2/authorize?", provider.issuer)),
            "{to}"
        );
        let asked = query_of(to);
        let set = set_cookie_of(&started, SIGN_IN_COOKIE).unwrap();
        for attribute in [
            "Path=/",
            "Max-Age=600",
            "Secure",
            "HttpOnly",
            "SameSite=Lax",
        ] {
            assert!(set.contains(attribute), "{set} has {attribute}");
        }
        let kept: Vec<&str> = cookie_value(&started, SIGN_IN_COOKIE).split('.').collect();
        let [state, nonce, verifier] = kept.as_slice() else {
            panic!("state, nonce and verifier: {kept:?}");
        };
        assert_eq!(asked["state"], *state);
        assert_eq!(asked["nonce"], *nonce);
        assert_eq!(
            asked["code_challenge"],
            URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
        );
        assert!(!to.contains(verifier), "only the verifier's hash leaves");
        assert_eq!(asked["code_challenge_method"], "S256");
        assert_eq!(asked["response_type"], "code");
        assert_eq!(asked["client_id"], CLIENT);
        assert_eq!(asked["redirect_uri"], format!("{BASE}console/callback"));
        assert_eq!(asked["scope"], "openid email profile");
        for secret in [state, nonce, verifier] {
            assert_eq!(URL_SAFE_NO_PAD.decode(secret).unwrap().len(), 32);
        }
        let again = begin(&get("/console/sign-in", &[], &[]), &oidc).await;
        assert_ne!(query_of(location(&again))["state"], asked["state"]);
    }

    #[tokio::test]
    async fn the_callback_keeps_the_id_token_in_a_strict_cookie_that_the_session_and_sign_out_read()
    {
        let (provider, oidc) = signing_in();
        let (kept, query) = authorized(&provider, &oidc).await;
        let back = call_back(&oidc, &kept, &query).await;
        assert_eq!(back.status(), 303);
        assert_eq!(location(&back), format!("{BASE}#/keys"));
        let session = set_cookie_of(&back, SESSION_COOKIE).unwrap();
        for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
            assert!(session.contains(attribute), "{session} has {attribute}");
        }
        let lasts: i64 = session
            .split("Max-Age=")
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(lasts > 0, "the cookie lasts as long as the token");
        let spent = set_cookie_of(&back, SIGN_IN_COOKIE).unwrap();
        assert!(spent.contains("Max-Age=0"), "{spent}");

        let token = cookie_value(&back, SESSION_COOKIE);
        let cookie = format!("{SESSION_COOKIE}={token}");
        let asked = session_of(&oidc, &[("cookie", &cookie), (CONSOLE_HEADER, "1")]).await;
        assert_eq!(asked.status(), 200);
        assert_eq!(
            json_of(&asked),
            json!({"person": {"id": "dana", "name": "dana@example.com"}, "grants": {"development": ["*"]}})
        );
        let unasked = session_of(&oidc, &[("cookie", &cookie)]).await;
        assert_eq!(json_of(&unasked)["error"]["code"], "not_signed_in");

        // A navigation from another site signs no one out.
        let elsewhere = [
            ("cookie", cookie.as_str()),
            ("sec-fetch-site", "cross-site"),
        ];
        let kept = sign_out(&get("/console/sign-out", &[], &elsewhere), &oidc).await;
        assert_eq!(location(&kept), format!("{BASE}#/keys"));
        assert!(set_cookie_of(&kept, SESSION_COOKIE).is_none());

        let own = [
            ("cookie", cookie.as_str()),
            ("sec-fetch-site", "same-origin"),
        ];
        let out = sign_out(&get("/console/sign-out", &[], &own), &oidc).await;
        assert_eq!(out.status(), 303);
        let end = location(&out);
        assert!(
            end.starts_with(&format!("{}/oauth2/end_session?", provider.issuer)),
            "{end}"
        );
        assert!(
            !end.contains(token),
            "the token, good until its exp, is in no URL"
        );
        let ending = query_of(end);
        assert_eq!(ending["client_id"], CLIENT);
        assert_eq!(ending["post_logout_redirect_uri"], BASE);
        assert!(
            set_cookie_of(&out, SESSION_COOKIE)
                .unwrap()
                .contains("Max-Age=0")
        );
    }

    async fn session_of(oidc: &Oidc, headers: &[(&str, &str)]) -> Response<Body> {
        session(&get("/v1/session", &[], headers), oidc, keyward::now()).await
    }

    /// A callback that must fail: back to the page with `sign_in_failed`, and no session.
    fn refused(back: &Response<Body>, case: &str) {
        assert_eq!(back.status(), 303, "{case}");
        assert_eq!(
            location(back),
            format!("{BASE}#/sign-in?failed=sign_in_failed"),
            "{case}"
        );
        assert!(set_cookie_of(back, SESSION_COOKIE).is_none(), "{case}");
        assert!(
            set_cookie_of(back, SIGN_IN_COOKIE)
                .unwrap()
                .contains("Max-Age=0"),
            "{case}"
        );
    }

    #[test]
    fn the_sessions_cookie_lasts_as_the_token_does_at_most_eight_hours_and_never_not_at_all() {
        let now = 1_800_000_000;
        let signed_in = |lasts: i64, token: &str| SignedIn {
            id_token: token.to_owned(),
            person: keyward::domain::Person {
                sub: "dana".into(),
                name: None,
                grants: Default::default(),
            },
            expires_at: now + lasts,
        };
        let max_age = |back: &Response<Body>| {
            let set = set_cookie_of(back, SESSION_COOKIE).expect("a session");
            set.split("Max-Age=")
                .nth(1)
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_owned()
        };
        let hour = back_to_page(BASE, Ok(signed_in(3600, "a.b.c")), now);
        assert_eq!(max_age(&hour), "3600");
        let day = back_to_page(BASE, Ok(signed_in(24 * 3600, "a.b.c")), now);
        assert_eq!(max_age(&day), "28800", "eight hours at most");
        refused(
            &back_to_page(BASE, Ok(signed_in(0, "a.b.c")), now),
            "a token that expires as it is issued",
        );
        let huge = format!("a.{}.c", "b".repeat(MAX_COOKIE_BYTES));
        refused(
            &back_to_page(BASE, Ok(signed_in(3600, &huge)), now),
            "a token too large for a cookie",
        );
    }

    #[tokio::test]
    async fn a_callback_unlike_its_sign_in_signs_no_one_in() {
        let (provider, oidc) = signing_in();
        let (kept, query) = authorized(&provider, &oidc).await;
        let no_cookie = callback(
            &get(
                "/console/callback",
                &[("code", &query["code"]), ("state", &query["state"])],
                &[],
            ),
            &oidc,
            keyward::now(),
        )
        .await;
        refused(&no_cookie, "a callback with no sign-in of this browser's");
        let mut other_state = query.clone();
        other_state.insert("state".into(), "another".into());
        refused(
            &call_back(&oidc, &kept, &other_state).await,
            "another state",
        );
        let mut denied = query.clone();
        denied.insert("error".into(), "access_denied".into());
        refused(
            &call_back(&oidc, &kept, &denied).await,
            "an error from the provider",
        );

        let (kept, query) = authorized(&provider, &oidc).await;
        let parts: Vec<&str> = kept.split('.').collect();
        let other_verifier = format!("{}.{}.{}", parts[0], parts[1], "A".repeat(43));
        refused(
            &call_back(&oidc, &other_verifier, &query).await,
            "another verifier: the provider's PKCE check refuses the code",
        );

        let (kept, query) = authorized(&provider, &oidc).await;
        let parts: Vec<&str> = kept.split('.').collect();
        let other_nonce = format!("{}.{}.{}", parts[0], "B".repeat(43), parts[2]);
        refused(
            &call_back(&oidc, &other_nonce, &query).await,
            "an ID token for another nonce",
        );
        let (kept, query) = authorized(&provider, &oidc).await;
        let first = call_back(&oidc, &kept, &query).await;
        assert!(set_cookie_of(&first, SESSION_COOKIE).is_some(), "signed in");
        assert!(
            set_cookie_of(&call_back(&oidc, &kept, &query).await, SESSION_COOKIE).is_none(),
            "a code is exchanged once"
        );
    }

    #[tokio::test]
    async fn on_api_gateway_a_sign_in_comes_back_to_the_stage_over_https() {
        let (_provider, oidc) = signing_in();
        let event = include_str!("../fixtures/asset.json").replace("{{ASSET}}", "sign-in");
        let begun = crate::handler(
            &keyward::testing::event(&event, &[]),
            &keyward::domain::KeyPrefix::default(),
            &oidc,
            keyward::now(),
        )
        .await;
        assert_eq!(begun.status(), 302);
        assert_eq!(
            query_of(location(&begun))["redirect_uri"],
            "https://gy415nuibc.execute-api.us-east-2.amazonaws.com/Prod/console/callback"
        );
    }

    #[tokio::test]
    async fn without_an_identity_provider_the_console_signs_in_with_keys_only() {
        let begun = begin(&get("/console/sign-in", &[], &[]), &NoPeople).await;
        assert_eq!(begun.status(), 404);
        assert_eq!(json_of(&begun)["error"]["code"], "people_not_configured");
        let asked = session(
            &get("/v1/session", &[], &[(CONSOLE_HEADER, "1")]),
            &NoPeople,
            keyward::now(),
        )
        .await;
        assert_eq!(json_of(&asked)["error"]["code"], "people_not_configured");
        let back = callback(
            &get("/console/callback", &[], &[]),
            &NoPeople,
            keyward::now(),
        )
        .await;
        assert_eq!(back.status(), 404);
    }

    #[tokio::test]
    async fn a_host_that_is_no_host_name_is_never_sent_back_to() {
        let (_provider, oidc) = signing_in();
        // On `keyward serve`, only loopback names: a rebinding name points at this machine too.
        for host in ["127.0.0.1:8080", "localhost:8080", "[::1]:8080"] {
            let mut req = get("/console/sign-in", &[], &[]);
            req.headers_mut()
                .insert(header::HOST, HeaderValue::from_str(host).unwrap());
            let begun = begin(&req, &oidc).await;
            assert_eq!(begun.status(), 302, "{host:?}");
        }
        for host in [
            "evil.example/x",
            "a b",
            "",
            "rebound.example.com:8080",
            "10.0.0.5:8080",
        ] {
            let mut req = get("/console/sign-in", &[], &[]);
            *req.headers_mut() = HeaderMap::new();
            if !host.is_empty() {
                req.headers_mut()
                    .insert(header::HOST, HeaderValue::from_str(host).unwrap());
            }
            let begun = begin(&req, &oidc).await;
            assert_eq!(begun.status(), 400, "{host:?}");
            assert!(begun.headers().get(header::LOCATION).is_none());
        }
    }
}
