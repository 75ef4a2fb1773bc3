//! An example backend for the authorizer: it answers with the context that keyward's
//! authorizer passed (`keyId`, `environment` and `scopes`), so that the wiring can be seen.
//! REST APIs put that context in `requestContext.authorizer`; HTTP APIs nest it under
//! `requestContext.authorizer.lambda`.

use keyward::http::{ApiError, ErrorCode, json_response};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{Map, Value, json};

/// The authorizer's context, from either kind of API.
fn authorizer_context(req: &Request) -> Option<Map<String, Value>> {
    let fields = &req.request_context_ref()?.authorizer()?.fields;
    let context = match fields.get("lambda") {
        Some(Value::Object(lambda)) => lambda.clone(),
        _ => fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    context.contains_key("keyId").then_some(context)
}

/// The Lambda handler.
pub fn handler(req: &Request) -> Response<Body> {
    match authorizer_context(req) {
        Some(context) => json_response(
            StatusCode::OK,
            &json!({
                "message": "hello from behind keyward",
                "key_id": context.get("keyId"),
                "environment": context.get("environment"),
                "kind": context.get("kind"),
                "scopes": context.get("scopes"),
            }),
        ),
        None => ApiError::new(
            ErrorCode::MissingAuthorizerContext,
            "this route must sit behind keyward's authorizer",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use keyward::testing::{body_json, event};

    use super::*;

    #[test]
    fn it_echoes_the_context_of_a_rest_authorizer() {
        let response = handler(&event(include_str!("../fixtures/rest.json"), &[]));
        assert_eq!(response.status(), 200);
        let body = body_json(&response);
        assert_eq!(body["key_id"], "key_08DvEV00000000000000AA");
        assert_eq!(body["environment"], "production");
        assert_eq!(body["kind"], "secret");
        assert_eq!(body["scopes"], "orders:read orders:write");
    }

    #[test]
    fn it_echoes_the_context_of_an_http_api_authorizer() {
        let response = handler(&event(include_str!("../fixtures/http.json"), &[]));
        assert_eq!(response.status(), 200);
        let body = body_json(&response);
        assert_eq!(body["scopes"], "orders:read");
        assert_eq!(
            body["kind"], "publishable",
            "a backend can refuse browser keys"
        );
    }

    #[test]
    fn without_an_authorizer_context_it_refuses() {
        let response = handler(&event(
            include_str!("../fixtures/rest-without-authorizer.json"),
            &[],
        ));
        assert_eq!(response.status(), 401);
        assert_eq!(
            body_json(&response)["error"]["code"],
            "missing_authorizer_context"
        );
    }
}
