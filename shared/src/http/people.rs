//! The port through which the API accepts people beside keys: a person's token, checked by
//! the identity provider's adapter (`crate::oidc`), or by nobody where none is configured.

use crate::domain::{Person, Timestamp};

use super::ApiError;

/// Checks the tokens an identity provider issues to people.
#[async_trait::async_trait]
pub trait People: Send + Sync {
    /// Whether `token` is one of this provider's kind (a JWT), to be checked as a person's;
    /// any other is checked as a key. It allocates nothing, as every key passes through it.
    fn takes(&self, token: &str) -> bool;

    /// The person `token` names, or the `401` (or `503`) that says why not.
    async fn person(&self, token: &str, now: Timestamp) -> Result<Person, ApiError>;
}

/// Where no identity provider is configured: every token is checked as a key.
pub struct NoPeople;

#[async_trait::async_trait]
impl People for NoPeople {
    fn takes(&self, _: &str) -> bool {
        false
    }

    async fn person(&self, _: &str, _: Timestamp) -> Result<Person, ApiError> {
        Err(ApiError::new(
            super::ErrorCode::InvalidApiKey,
            "the key is not valid",
        ))
    }
}

/// The variable naming the identity provider's issuer; no issuer, no people.
pub const ISSUER_VAR: &str = "KEYWARD_OIDC_ISSUER";
/// The variable naming keyward's client id at the issuer.
pub const CLIENT_ID_VAR: &str = "KEYWARD_OIDC_CLIENT_ID";
/// The variable naming the claim that lists a person's groups.
pub const GROUPS_CLAIM_VAR: &str = "KEYWARD_OIDC_GROUPS_CLAIM";
/// The variable holding the roles: JSON from a group to `{environment: [scopes]}`.
pub const ROLES_VAR: &str = "KEYWARD_OIDC_ROLES";

/// The people this process accepts: those of the identity provider that the variables above
/// name, or nobody when no issuer is set. A bad setting stops the start, as does an issuer
/// given to a build without the `oidc` feature, which would otherwise ignore it.
pub fn people_from_env() -> Result<Box<dyn People>, String> {
    #[cfg(feature = "oidc")]
    if let Some(settings) = crate::oidc::OidcSettings::from_env()? {
        return Ok(Box::new(crate::oidc::Oidc::new(settings)?));
    }
    #[cfg(not(feature = "oidc"))]
    if std::env::var(ISSUER_VAR).is_ok_and(|v| !v.trim().is_empty()) {
        return Err(format!(
            "{ISSUER_VAR} is set, but this function takes no people's tokens"
        ));
    }
    Ok(Box::new(NoPeople))
}
