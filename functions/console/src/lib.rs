//! The API's static content, the same bytes on Lambda and in `keyward serve`: for now the
//! API's description, `openapi.json`, which `openapi.yaml` is the source of. Nothing here
//! reads a store or takes a key.

use lambda_http::http::{StatusCode, header};
use lambda_http::{Body, Request, Response};

/// The API's description as JSON: `openapi.yaml`, converted by `scripts/openapi-json`. A
/// test fails when it no longer says what the YAML says.
pub const OPENAPI_JSON: &str = include_str!("../../../openapi.json");

/// The Lambda handler. The template routes only `GET /v1/openapi.json` here, so every
/// request it gets is answered with the document.
pub fn handler(_: &Request) -> Response<Body> {
    let mut response = Response::new(Body::Text(OPENAPI_JSON.to_owned()));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("public, max-age=300"),
    );
    response
}

#[cfg(test)]
mod tests {
    use keyward::testing::event;

    use super::*;

    #[test]
    fn an_api_gateway_event_gets_the_document_as_json() {
        let response = handler(&event(include_str!("../fixtures/rest.json"), &[]));
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let Body::Text(text) = response.body() else {
            panic!("a text body")
        };
        let document: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(document["openapi"], "3.1.0");
        assert!(document["paths"]["/v1/openapi.json"]["get"].is_object());
    }
}
