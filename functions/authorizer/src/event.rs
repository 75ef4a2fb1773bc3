//! The three event shapes API Gateway sends an authorizer, read into one question.

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerRequest, ApiGatewayCustomAuthorizerRequestTypeRequest,
    ApiGatewayV2CustomAuthorizerV2Request,
};
use std::net::IpAddr;

use keyward::http::{key_from_headers, session_from_headers};
use serde_json::Value;

use crate::AuthorizerError;

/// Which kind of answer API Gateway expects.
pub(crate) enum Shape {
    /// A REST API authorizer: an IAM policy for `method_arn`.
    Rest { method_arn: String },
    /// An HTTP API authorizer with simple responses.
    Http,
}

/// What an event asks: the presented key, the method and path, and how to answer.
pub(crate) struct Ask {
    /// The presented key (or a person's token), if any.
    pub(crate) token: Option<String>,
    /// The console's session, a person's token in its cookie (REST events only: keyward's
    /// own API is a REST API, and no other API is sent its cookie); never checked as a key.
    pub(crate) session: Option<String>,
    /// The method asked for, as the ARN or route names it.
    pub(crate) method: String,
    /// The path asked for.
    pub(crate) path: String,
    /// The caller's address as API Gateway saw it (`sourceIp`, never `X-Forwarded-For`);
    /// `None` for a `TOKEN` event, which carries none.
    pub(crate) source: Option<IpAddr>,
    /// How to answer.
    pub(crate) shape: Shape,
}

/// The method and path in a method or route ARN: `arn:...:api-id/stage/METHOD/path...`;
/// `None` when it names no method, so that an event without one is never allowed.
fn method_and_path(arn: &str) -> Option<(String, String)> {
    let resource = arn.splitn(6, ':').nth(5)?;
    let mut parts = resource.splitn(4, '/');
    let (_api, _stage) = (parts.next()?, parts.next()?);
    let method = parts.next().filter(|m| !m.is_empty())?.to_owned();
    Some((method, format!("/{}", parts.next().unwrap_or_default())))
}

/// An event's `sourceIp`, if it is an address.
fn address(source_ip: Option<&str>) -> Option<IpAddr> {
    source_ip?.parse().ok()
}

fn bearer(value: &str) -> &str {
    match value.trim().split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => value.trim(),
    }
}

/// Reads an authorizer event of any of the three shapes; any other is `UnknownEvent`.
pub(crate) fn ask(event: Value) -> Result<Ask, AuthorizerError> {
    let kind = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let version = event
        .get("version")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let unknown = |_| AuthorizerError::UnknownEvent;
    match (version.as_str(), kind.as_str()) {
        ("2.0", _) => {
            let e: ApiGatewayV2CustomAuthorizerV2Request =
                serde_json::from_value(event).map_err(unknown)?;
            let (method, path) = e
                .route_arn
                .as_deref()
                .and_then(method_and_path)
                .ok_or(AuthorizerError::UnknownEvent)?;
            Ok(Ask {
                token: key_from_headers(&e.headers).map(str::to_owned),
                session: None,
                method,
                path,
                source: address(e.request_context.http.source_ip.as_deref()),
                shape: Shape::Http,
            })
        }
        (_, "TOKEN") => {
            let e: ApiGatewayCustomAuthorizerRequest =
                serde_json::from_value(event).map_err(unknown)?;
            let method_arn = e.method_arn.unwrap_or_default();
            let (method, path) =
                method_and_path(&method_arn).ok_or(AuthorizerError::UnknownEvent)?;
            let token = e
                .authorization_token
                .as_deref()
                .map(bearer)
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            Ok(Ask {
                token,
                session: None,
                method,
                path,
                source: None,
                shape: Shape::Rest { method_arn },
            })
        }
        (_, "REQUEST") => {
            let e: ApiGatewayCustomAuthorizerRequestTypeRequest =
                serde_json::from_value(event).map_err(unknown)?;
            let method_arn = e.method_arn.unwrap_or_default();
            let (method, path) =
                method_and_path(&method_arn).ok_or(AuthorizerError::UnknownEvent)?;
            let source = e.request_context.identity.as_ref();
            Ok(Ask {
                token: key_from_headers(&e.headers).map(str::to_owned),
                session: session_from_headers(&e.headers).map(str::to_owned),
                method,
                path,
                source: address(source.and_then(|i| i.source_ip.as_deref())),
                shape: Shape::Rest { method_arn },
            })
        }
        _ => Err(AuthorizerError::UnknownEvent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_and_path_come_from_the_arn() {
        assert_eq!(
            method_and_path("arn:aws:execute-api:us-east-1:1:api/prod/GET/orders/42"),
            Some(("GET".into(), "/orders/42".into()))
        );
        assert_eq!(
            method_and_path("arn:aws:execute-api:us-east-1:1:api/prod/POST/"),
            Some(("POST".into(), "/".into()))
        );
        assert_eq!(method_and_path("garbage"), None, "no method: no route");
    }
}
