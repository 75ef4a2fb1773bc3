//! The console and the API's description: static files, the same bytes on Lambda and in
//! `keyward serve`, embedded in the binary, and people's sign-in to the console. Nothing here
//! reads a store or takes a key: the console's page signs in with a key in the browser, or a
//! person signs in through the identity provider ([`session`]), and the page calls the JSON
//! API on the same origin like any other client.

mod session;

use keyward::domain::{KeyPrefix, Timestamp, scanner_regex};
use keyward::http::People;
use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};

/// The API's description as JSON: `openapi.yaml`, converted by `scripts/openapi-json`. A
/// test fails when it no longer says what the YAML says.
pub const OPENAPI_JSON: &str = include_str!("../../../openapi.json");

/// The console's page, served at `/`.
pub const INDEX_HTML: &str = include_str!("../assets/index.html");

/// The console's files under `/console/`: name, content type and bytes. `console.js` is the
/// page's module; it imports the others by their relative names.
pub const ASSETS: &[(&str, &str, &str)] = &[
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/console.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/api.js"),
    ),
    (
        "dialogs.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/dialogs.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/dom.js"),
    ),
    (
        "time.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/time.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../assets/console.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../assets/favicon.svg"),
    ),
];

/// What the console's page may load and do: its own scripts, styles and API and nothing
/// else, no inline script or style, and no framing by another page.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The Lambda handler, and `keyward serve`'s for the same routes: `GET /` is the page,
/// `GET /console/{asset}` its files (and `sign-in`, `callback` and `sign-out`, a person's
/// sign-in through `people`'s identity provider), `GET /v1/session` who is signed in,
/// `GET /v1/openapi.json` the API's description, and `GET /v1/token-format` the format of
/// the keys of the deployment, whose prefix is `prefix`.
pub async fn handler(
    req: &Request,
    prefix: &KeyPrefix,
    people: &dyn People,
    now: Timestamp,
) -> Response<Body> {
    if let Some(asset) = req
        .path_parameters_ref()
        .and_then(|params| params.first("asset"))
    {
        return match asset {
            "sign-in" => session::begin(req, people).await,
            "callback" => session::callback(req, people, now).await,
            "sign-out" => session::sign_out(req, people).await,
            _ => match ASSETS.iter().find(|(name, _, _)| *name == asset) {
                Some((_, content_type, bytes)) => file(content_type, bytes, "no-cache"),
                None => not_found(),
            },
        };
    }
    if req.uri().path().ends_with("/v1/session") {
        return session::session(req, people, now).await;
    }
    if req.uri().path().ends_with("/openapi.json") {
        return file("application/json", OPENAPI_JSON, "public, max-age=300");
    }
    if req.uri().path().ends_with("/v1/token-format") {
        return file(
            "application/json",
            &token_format(prefix),
            "public, max-age=300",
        );
    }
    if let Some(RequestContext::ApiGatewayV1(context)) = req.request_context_ref()
        && let Some(path) = context.path.as_deref().filter(|p| {
            p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') && !p.ends_with('/')
        })
    {
        return with_slash(path);
    }
    file("text/html; charset=utf-8", INDEX_HTML, "no-cache")
}

/// What a secret scanner needs to find the deployment's keys: their prefix, the regular
/// expression of its secret keys, and the checksum that tells a key from a string shaped like
/// one.
fn token_format(prefix: &KeyPrefix) -> String {
    serde_json::json!({
        "prefix": prefix.as_str(),
        "regex": scanner_regex(prefix),
        "checksum": "crc32",
    })
    .to_string()
}

/// A static file with the console's security headers.
fn file(content_type: &'static str, bytes: &str, cache: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::Text(bytes.to_owned()));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    secure(&mut response);
    response
}

/// The headers every answer of the console carries.
fn secure(response: &mut Response<Body>) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// `404` for a file the console does not have, in the API's error shape.
fn not_found() -> Response<Body> {
    let body = r#"{"error":{"code":"route_not_found","message":"the console has no such file"}}"#;
    let mut response = Response::new(Body::Text(body.to_owned()));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    secure(&mut response);
    response
}

/// A stage's root asked for without its slash (`/prod`): the page's relative links would
/// miss the stage, so it is sent to `/prod/`. A path that a browser would read as another
/// host (`//host`) is never redirected to.
fn with_slash(path: &str) -> Response<Body> {
    let mut response = Response::new(Body::Empty);
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(location) = HeaderValue::from_str(&format!("{path}/")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    secure(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use keyward::http::NoPeople;
    use keyward::testing::event;

    use super::*;

    async fn serve(req: &Request) -> Response<Body> {
        handler(req, &KeyPrefix::default(), &NoPeople, keyward::now()).await
    }

    #[tokio::test]
    async fn the_token_format_names_the_deployments_prefix_and_its_regex() {
        let rest = include_str!("../fixtures/rest.json").replace("openapi.json", "token-format");
        let acme = KeyPrefix::parse("acme").unwrap();
        let response = handler(&event(&rest, &[]), &acme, &NoPeople, keyward::now()).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let format: serde_json::Value = serde_json::from_str(text(&response)).unwrap();
        assert_eq!(
            format,
            serde_json::json!({
                "prefix": "acme",
                "regex": r"acme_sk_[a-z0-9_]{1,32}_[A-Za-z0-9]{38}\b",
                "checksum": "crc32",
            })
        );
    }

    fn text(response: &Response<Body>) -> &str {
        match response.body() {
            Body::Text(text) => text,
            _ => panic!("a text body"),
        }
    }

    #[tokio::test]
    async fn an_api_gateway_event_gets_the_document_as_json() {
        let response = serve(&event(include_str!("../fixtures/rest.json"), &[])).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let document: serde_json::Value = serde_json::from_str(text(&response)).unwrap();
        assert_eq!(document["openapi"], "3.1.0");
        assert!(document["paths"]["/v1/openapi.json"]["get"].is_object());
    }

    #[tokio::test]
    async fn the_page_and_its_files_carry_a_strict_policy() {
        let page = serve(&event(include_str!("../fixtures/page.json"), &[])).await;
        assert_eq!(page.status(), 200);
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(text(&page).contains(r#"<script type="module" src="console/console.js">"#));
        for (name, content_type, bytes) in ASSETS {
            let asset = serve(&event(
                &include_str!("../fixtures/asset.json").replace("{{ASSET}}", name),
                &[],
            ))
            .await;
            assert_eq!(asset.status(), 200, "{name}");
            assert_eq!(asset.headers()[header::CONTENT_TYPE], *content_type);
            assert_eq!(text(&asset), *bytes);
        }
        let missing = serve(&event(
            &include_str!("../fixtures/asset.json").replace("{{ASSET}}", "secrets.json"),
            &[],
        ))
        .await;
        assert_eq!(missing.status(), 404);
        for response in [&page, &missing] {
            let headers = response.headers();
            let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(policy.starts_with("default-src 'self';"), "{policy}");
            assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
            assert!(!policy.contains("unsafe"), "{policy}");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        }
    }

    #[tokio::test]
    async fn a_stage_asked_for_without_its_slash_is_sent_to_it_with_one() {
        let page = include_str!("../fixtures/page.json");
        let bare = serve(&event(&page.replace("\"/Prod/\"", "\"/Prod\""), &[])).await;
        assert_eq!(bare.status(), 308);
        assert_eq!(bare.headers()[header::LOCATION], "/Prod/");
        for odd in ["//evil.example", "/\\\\evil.example", "evil.example"] {
            let page = serve(&event(
                &page.replace("\"/Prod/\"", &format!("\"{odd}\"")),
                &[],
            ))
            .await;
            assert_eq!(page.status(), 200, "{odd} is no place to send anyone");
        }
    }

    #[test]
    fn the_files_ask_no_other_origin_for_anything() {
        for text in [INDEX_HTML]
            .into_iter()
            .chain(ASSETS.iter().map(|(_, _, bytes)| *bytes))
        {
            // SVG's namespace is a name, not an address anything is fetched from: in the
            // favicon's `xmlns`, and in the chart's `createElementNS`.
            let text = text.replace("\"http://www.w3.org/2000/svg\"", "");
            for other in ["http://", "https://", "@import", "url("] {
                assert!(!text.contains(other), "{other} in a console file");
            }
            assert!(
                !text.contains("innerHTML"),
                "text from the API is never HTML"
            );
        }
    }
}
