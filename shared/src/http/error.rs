//! The API's error shape, `{"error": {"code", "message"}}`, and how every failure maps to it.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use serde_json::json;

use crate::domain::{InputError, LifecycleError};
use crate::store::StoreError;

/// A failed request: a status, a stable snake_case code and a sentence for people.
/// Messages never hold a secret, nor any value the caller sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// `400` for bad input.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// `401` for a missing, unknown, malformed, expired or revoked key.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// `403` for a valid key that may not do this.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// `404` for an unknown key or environment.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// `413` for a body over the limit.
    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the body is over the limit of {} bytes",
                super::MAX_BODY_BYTES
            ),
        )
    }

    /// `500`, with nothing about the cause: that goes to the log.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "something went wrong on our side; try again",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The error code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The response that carries this error.
    pub fn into_response(self) -> Response<Body> {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        super::json_response(self.status, &body)
    }
}

impl From<InputError> for ApiError {
    fn from(e: InputError) -> Self {
        let code = match e {
            InputError::InvalidEnvironment => "invalid_environment",
            InputError::InvalidKeyId => "invalid_key_id",
            InputError::InvalidName => "invalid_name",
            InputError::InvalidScope { .. } | InputError::TooManyScopes => "invalid_scope",
            InputError::ScopeNotAllowed(_) => "scope_not_allowed",
            InputError::InvalidGracePeriod(_) => "invalid_grace_period",
            InputError::InvalidRotationPolicy(_) => "invalid_rotation_policy",
            InputError::ExpiresAtNotInFuture => "invalid_expires_at",
        };
        Self::bad_request(code, e.to_string())
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        let code = match e {
            LifecycleError::NotActive(_) => "key_not_active",
            LifecycleError::NotInGrace(_) => "key_not_in_grace",
            LifecycleError::DefaultKeyMustBeRotated => "default_key_must_be_rotated",
            LifecycleError::NoRotationPolicy => "no_rotation_policy",
            LifecycleError::Input(input) => return input.into(),
        };
        Self::new(StatusCode::CONFLICT, code, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                "the key changed while this request was applied; read it again and retry",
            ),
            StoreError::SecretClaimed => Self::new(
                StatusCode::CONFLICT,
                "secret_in_use",
                "another key of this environment holds this secret: one that delivers to it, or \
                 one that did and holds scopes this key lacks; a secret has one key, so name another",
            ),
            StoreError::Backend(_) => {
                tracing::error!(error = %crate::error_chain(&e), "store failure");
                Self::internal()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_failure_is_an_opaque_500_and_a_conflict_is_a_409() {
        let cause = std::io::Error::other("connection reset by peer at 10.0.0.7");
        let error = ApiError::from(StoreError::Backend(Box::new(cause)));
        assert_eq!(
            (error.status(), error.code()),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
        );
        let body = String::from_utf8(error.into_response().body().to_vec()).unwrap();
        assert!(
            !body.contains("10.0.0.7") && !body.contains("connection"),
            "the cause stays in the log: {body}"
        );
        let conflict = ApiError::from(StoreError::Conflict);
        assert_eq!(
            (conflict.status(), conflict.code()),
            (StatusCode::CONFLICT, "conflict")
        );
        let claimed = ApiError::from(StoreError::SecretClaimed);
        assert_eq!(
            (claimed.status(), claimed.code()),
            (StatusCode::CONFLICT, "secret_in_use")
        );
    }
}
