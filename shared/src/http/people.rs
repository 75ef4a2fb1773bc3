//! The port through which the API accepts people beside keys: a person's token, checked by
//! the identity provider's adapter (`crate::oidc`), or by nobody where none is configured.

use crate::domain::{Person, Timestamp};

use super::ApiError;

/// Checks the tokens an identity provider issues to people.
#[async_trait::async_trait]
pub trait People: Send + Sync {
    /// The person `token` names, or the `401` (or `503`) that says why not; `None` when the
    /// token is not one of this provider's kind (no JWT), so that it is checked as a key.
    async fn person(&self, token: &str, now: Timestamp) -> Option<Result<Person, ApiError>>;
}

/// Where no identity provider is configured: every token is checked as a key.
pub struct NoPeople;

#[async_trait::async_trait]
impl People for NoPeople {
    async fn person(&self, _: &str, _: Timestamp) -> Option<Result<Person, ApiError>> {
        None
    }
}

/// The people this process accepts: those of the identity provider that the `KEYWARD_OIDC_*`
/// variables name, or nobody when no issuer is set. A bad setting stops the start.
pub fn people_from_env() -> Result<Box<dyn People>, String> {
    #[cfg(feature = "oidc")]
    if let Some(settings) = crate::oidc::OidcSettings::from_env()? {
        return Ok(Box::new(crate::oidc::Oidc::new(settings)?));
    }
    Ok(Box::new(NoPeople))
}
