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

    /// How people sign in to the console, or `None` where only keys do.
    fn sign_in(&self) -> Option<&dyn SignIn>;
}

/// The console's sign-in through the identity provider: OpenID Connect's authorization code
/// flow with PKCE, run by keyward's backend so that no token ever reaches the page's script.
#[async_trait::async_trait]
pub trait SignIn: Send + Sync {
    /// Where to send the browser to sign in, coming back to `redirect_uri`.
    async fn begin(&self, redirect_uri: &str) -> Result<SignInStart, ApiError>;

    /// The sign-in that `begin` started, finished with the `code` the browser brought back:
    /// the code exchanged (with the PKCE `verifier`) for an ID token, the token checked, and
    /// its `nonce` matched against the one sent.
    async fn finish(&self, finish: Finish<'_>, now: Timestamp) -> Result<SignedIn, ApiError>;

    /// Where to send the browser to end its session at the provider too, coming back to
    /// `return_to`; `None` where the provider publishes no `end_session_endpoint`. It names
    /// keyward's client, never the ID token (`id_token_hint`): the token is still good until
    /// its `exp`, and a URL ends up in the browser's history and the provider's logs.
    async fn end_session(&self, return_to: &str) -> Option<String>;
}

/// A sign-in begun: where the browser goes, and the secrets its return must match, which
/// stay in the browser's cookie, out of the page's reach. No `Debug`: it holds them.
pub struct SignInStart {
    /// The provider's authorization endpoint, with this sign-in's parameters.
    pub url: String,
    /// Sent, and expected back unchanged: the return belongs to this browser's sign-in.
    pub state: String,
    /// Sent, and expected in the ID token: the token was issued for this sign-in.
    pub nonce: String,
    /// PKCE's secret: only its SHA-256 is sent, and the code is worth nothing without it.
    pub verifier: String,
}

/// What the browser brought back, and what its sign-in kept. No `Debug`: it holds the code
/// and the verifier.
#[derive(Clone, Copy)]
pub struct Finish<'a> {
    /// The authorization code.
    pub code: &'a str,
    /// The redirect URI the sign-in began with.
    pub redirect_uri: &'a str,
    /// The sign-in's PKCE verifier.
    pub verifier: &'a str,
    /// The sign-in's nonce.
    pub nonce: &'a str,
}

/// A finished sign-in: the ID token that the session's cookie holds, whom it names, and
/// when it expires (its `exp`). No `Debug`: it holds the token.
pub struct SignedIn {
    /// The ID token, checked.
    pub id_token: String,
    /// The person it names.
    pub person: Person,
    /// Its `exp`, in seconds since the epoch.
    pub expires_at: i64,
}

/// `403 no_role` for a person whose groups grant nothing anywhere: such a person may do
/// nothing, on the API or in the console.
pub fn require_role(person: &Person) -> Result<(), ApiError> {
    if person.grants.is_empty() {
        return Err(ApiError::new(
            super::ErrorCode::NoRole,
            "your groups grant no role in keyward; ask an administrator for one",
        ));
    }
    Ok(())
}

/// The person's token among what a request presents: its own credential (`presented`) if
/// `people` takes it, or else the console's `session`, which a request has only when it has
/// no credential of its own ([`super::session_from_headers`]). A value `people` does not take
/// is no person's; the session's is never checked as a key.
pub fn person_token<'t>(
    people: &dyn People,
    presented: Option<&'t str>,
    session: Option<&'t str>,
) -> Option<&'t str> {
    presented.or(session).filter(|t| people.takes(t))
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

    fn sign_in(&self) -> Option<&dyn SignIn> {
        None
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
