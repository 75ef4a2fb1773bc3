//! The API's error shape, `{"error": {"code", "message"}}`, and how every failure maps to it.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use serde_json::json;

use crate::domain::{InputError, LifecycleError};
use crate::store::StoreError;

/// Declares [`ErrorCode`]: each variant with its code and its one status, written once.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $code:literal, $status:ident;)+) => {
        /// Every error code the API answers with. Each has one status, so a client can rely
        /// on the pair, and the OpenAPI test lists the codes from [`ErrorCode::ALL`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)+
        }

        impl ErrorCode {
            /// Every code, for the tests that hold the document to them.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The code as the error body spells it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)+
                }
            }

            /// The one status this code is answered with.
            pub fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)+
                }
            }
        }
    };
}

error_codes! {
    /// The body is not a JSON object.
    InvalidJson = "invalid_json", BAD_REQUEST;
    /// A required field is absent.
    MissingField = "missing_field", BAD_REQUEST;
    /// A field is not part of the request.
    UnknownField = "unknown_field", BAD_REQUEST;
    /// A field has the wrong type.
    InvalidField = "invalid_field", BAD_REQUEST;
    /// An environment name breaks its rule.
    InvalidEnvironment = "invalid_environment", BAD_REQUEST;
    /// A key id breaks its rule.
    InvalidKeyId = "invalid_key_id", BAD_REQUEST;
    /// A key name breaks its rule.
    InvalidName = "invalid_name", BAD_REQUEST;
    /// A kind is neither `secret` nor `publishable`.
    InvalidKind = "invalid_kind", BAD_REQUEST;
    /// A scope breaks its rule, or there are too many.
    InvalidScope = "invalid_scope", BAD_REQUEST;
    /// A publishable key was asked for a reserved scope.
    ScopeNotAllowed = "scope_not_allowed", BAD_REQUEST;
    /// A grace period is not one the API takes.
    InvalidGracePeriod = "invalid_grace_period", BAD_REQUEST;
    /// A rotation policy as sent breaks its rule.
    InvalidRotationPolicy = "invalid_rotation_policy", BAD_REQUEST;
    /// An `allowed_ips` list has a bad entry, or too many.
    InvalidAllowedIps = "invalid_allowed_ips", BAD_REQUEST;
    /// A report said to come from a scanner lacks a signature that one of its keys made over
    /// the body.
    InvalidSignature = "invalid_signature", UNAUTHORIZED;
    /// A request said to come from GitLab lacks the token it shares with keyward.
    InvalidScannerToken = "invalid_scanner_token", UNAUTHORIZED;
    /// The keys that a scanner's signature is checked with could not be had: try again.
    ScannerKeysUnavailable = "scanner_keys_unavailable", SERVICE_UNAVAILABLE;
    /// A leak policy that is not `revoke`, `rotate` or `notify`.
    InvalidLeakPolicy = "invalid_leak_policy", BAD_REQUEST;
    /// A leak report holds too many secrets, or a `url` or `source` it cannot record.
    InvalidLeakReport = "invalid_leak_report", BAD_REQUEST;
    /// A `source_ip` is not an IPv4 or IPv6 address.
    InvalidSourceIp = "invalid_source_ip", BAD_REQUEST;
    /// A person's sign-in came back unlike it left (its `state` or `nonce`), or the identity
    /// provider refused it: the console's callback sends the page this code, and a sign-in
    /// whose request names no host to come back to answers it.
    SignInFailed = "sign_in_failed", BAD_REQUEST;
    /// An expiry is not a future RFC 3339 time.
    InvalidExpiresAt = "invalid_expires_at", BAD_REQUEST;
    /// A page's limit is not from 1 to 100.
    InvalidLimit = "invalid_limit", BAD_REQUEST;
    /// A cursor is not one a page gave.
    InvalidCursor = "invalid_cursor", BAD_REQUEST;
    /// An activity filter names an action that does not exist.
    InvalidAction = "invalid_action", BAD_REQUEST;
    /// No key was sent.
    MissingApiKey = "missing_api_key", UNAUTHORIZED;
    /// The key sent is unknown, malformed or of another kind.
    InvalidApiKey = "invalid_api_key", UNAUTHORIZED;
    /// The key sent was revoked.
    RevokedApiKey = "revoked_api_key", UNAUTHORIZED;
    /// The key sent has expired.
    ExpiredApiKey = "expired_api_key", UNAUTHORIZED;
    /// A person's token is not a JWT: three base64url parts, a header and claims of JSON.
    MalformedToken = "malformed_token", UNAUTHORIZED;
    /// A person's token is signed with an algorithm other than RS256 or ES256 (never `none`
    /// nor HMAC).
    UnsupportedTokenAlgorithm = "unsupported_token_algorithm", UNAUTHORIZED;
    /// A person's token was issued by another issuer than the one configured.
    InvalidTokenIssuer = "invalid_token_issuer", UNAUTHORIZED;
    /// A person's token names a key that its issuer does not publish.
    UnknownTokenKey = "unknown_token_key", UNAUTHORIZED;
    /// A person's token's signature does not hold.
    InvalidTokenSignature = "invalid_token_signature", UNAUTHORIZED;
    /// A person's token is for another client than keyward's.
    InvalidTokenAudience = "invalid_token_audience", UNAUTHORIZED;
    /// A person's token expired (more than 60 s ago).
    ExpiredToken = "expired_token", UNAUTHORIZED;
    /// A person's token is not valid yet (by more than 60 s).
    TokenNotYetValid = "token_not_yet_valid", UNAUTHORIZED;
    /// The console's session was asked for without a signed-in person's cookie.
    NotSignedIn = "not_signed_in", UNAUTHORIZED;
    /// The example backend was called without keyward's authorizer in front of it.
    MissingAuthorizerContext = "missing_authorizer_context", UNAUTHORIZED;
    /// A person's groups grant no role at all.
    NoRole = "no_role", FORBIDDEN;
    /// The caller's key lacks the route's scope.
    InsufficientScope = "insufficient_scope", FORBIDDEN;
    /// The caller's key is accepted only from networks that do not hold the request's address.
    IpNotAllowed = "ip_not_allowed", FORBIDDEN;
    /// The caller's key belongs to another environment.
    WrongEnvironment = "wrong_environment", FORBIDDEN;
    /// The caller would grant or change scopes it does not hold.
    ScopeEscalation = "scope_escalation", FORBIDDEN;
    /// An expiring caller would make a credential that outlives it.
    LifetimeEscalation = "lifetime_escalation", FORBIDDEN;
    /// A caller held to some networks would make a key that works outside them.
    NetworkEscalation = "network_escalation", FORBIDDEN;
    /// No key has this id in this environment.
    KeyNotFound = "key_not_found", NOT_FOUND;
    /// A person named an environment that does not exist (a key's always does).
    EnvironmentNotFound = "environment_not_found", NOT_FOUND;
    /// People sign in to this deployment's console only with keys: no identity provider is
    /// configured.
    PeopleNotConfigured = "people_not_configured", NOT_FOUND;
    /// No route has this path.
    RouteNotFound = "route_not_found", NOT_FOUND;
    /// The route does not take this method.
    MethodNotAllowed = "method_not_allowed", METHOD_NOT_ALLOWED;
    /// The key changed while the request was applied.
    Conflict = "conflict", CONFLICT;
    /// Another key of the environment holds the secret.
    SecretInUse = "secret_in_use", CONFLICT;
    /// The key is not active.
    KeyNotActive = "key_not_active", CONFLICT;
    /// The key is not in its grace period.
    KeyNotInGrace = "key_not_in_grace", CONFLICT;
    /// The key is revoked or expired, so it no longer changes.
    KeyEnded = "key_ended", CONFLICT;
    /// The caller's key would no longer be accepted from where it is calling.
    WouldLockOut = "would_lock_out", CONFLICT;
    /// The default key is rotated, never revoked.
    DefaultKeyMustBeRotated = "default_key_must_be_rotated", CONFLICT;
    /// A scheduled rotation met a key without a policy; no route gives it.
    NoRotationPolicy = "no_rotation_policy", CONFLICT;
    /// The key's stored policy names a secret outside its environment.
    RotationPolicyOutsideEnvironment = "rotation_policy_outside_environment", CONFLICT;
    /// The body is over the limit.
    PayloadTooLarge = "payload_too_large", PAYLOAD_TOO_LARGE;
    /// Something failed on keyward's side.
    InternalError = "internal_error", INTERNAL_SERVER_ERROR;
    /// The identity provider's keys could not be fetched to check a person's token: try again.
    IdentityProviderUnavailable = "identity_provider_unavailable", SERVICE_UNAVAILABLE;
    /// A rotation's new secret could not be stored in its policy's secret.
    SecretDeliveryFailed = "secret_delivery_failed", BAD_GATEWAY;
}

/// A failed request: a code (which fixes the status) and a sentence for people.
/// Messages never hold a secret, nor any value the caller sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
}

impl ApiError {
    /// An error with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `413` for a body over the route's limit of `limit` bytes.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is over the limit of {limit} bytes"),
        )
    }

    /// `500`, with nothing about the cause: that goes to the log.
    pub fn internal() -> Self {
        Self::new(
            ErrorCode::InternalError,
            "something went wrong on our side; try again",
        )
    }

    /// The HTTP status, the code's.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The error code as the body spells it.
    pub fn code(&self) -> &'static str {
        self.code.as_str()
    }

    /// The response that carries this error.
    pub fn into_response(self) -> Response<Body> {
        let body = json!({"error": {"code": self.code.as_str(), "message": self.message}});
        super::json_response(self.status(), &body)
    }
}

impl From<InputError> for ApiError {
    fn from(e: InputError) -> Self {
        let code = match e {
            InputError::InvalidEnvironment => ErrorCode::InvalidEnvironment,
            InputError::InvalidKeyId => ErrorCode::InvalidKeyId,
            InputError::InvalidName => ErrorCode::InvalidName,
            InputError::InvalidScope { .. } | InputError::TooManyScopes => ErrorCode::InvalidScope,
            InputError::ScopeNotAllowed(_) => ErrorCode::ScopeNotAllowed,
            InputError::InvalidGracePeriod(_) => ErrorCode::InvalidGracePeriod,
            InputError::InvalidRotationPolicy(_) => ErrorCode::InvalidRotationPolicy,
            InputError::InvalidAllowedIps(_) => ErrorCode::InvalidAllowedIps,
            InputError::ExpiresAtNotInFuture => ErrorCode::InvalidExpiresAt,
            InputError::InvalidLeakDetails(_) => ErrorCode::InvalidLeakReport,
        };
        Self::new(code, e.to_string())
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        let code = match e {
            LifecycleError::NotActive(_) => ErrorCode::KeyNotActive,
            LifecycleError::NotInGrace(_) => ErrorCode::KeyNotInGrace,
            LifecycleError::Ended(_) => ErrorCode::KeyEnded,
            LifecycleError::DefaultKeyMustBeRotated => ErrorCode::DefaultKeyMustBeRotated,
            LifecycleError::NoRotationPolicy => ErrorCode::NoRotationPolicy,
            LifecycleError::Input(input) => return input.into(),
        };
        Self::new(code, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => Self::new(
                ErrorCode::Conflict,
                "the key changed while this request was applied; read it again and retry",
            ),
            StoreError::SecretClaimed => Self::new(
                ErrorCode::SecretInUse,
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
