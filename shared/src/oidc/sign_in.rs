//! The console's sign-in through the issuer: OpenID Connect's authorization code flow with
//! PKCE (S256), run by keyward's backend. The browser is sent to the issuer's
//! `authorization_endpoint` and comes back with a code; keyward exchanges it at the
//! `token_endpoint` with the verifier only it and the browser's cookie know, checks the ID
//! token as any person's token is checked, and matches its `nonce`. Every endpoint comes from
//! the discovery document, and is held to the rule of [`crate::published::https_url`].

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::Uri;
use serde_json::Value;

use super::{Oidc, claims_of, named_endpoint};
use crate::OsEntropy;
use crate::domain::{Entropy, Timestamp};
use crate::http::{ApiError, ErrorCode, Finish, People, SignIn, SignInStart, SignedIn};
use crate::published::post_form;

/// The scopes asked for: an ID token, with the email and the name that name the person in
/// the activity log.
const SCOPES: &str = "openid email profile";

/// 256 bits from the operating system's CSPRNG, as base64url: a state, a nonce, a verifier.
fn random() -> String {
    let mut bytes = [0u8; 32];
    OsEntropy.fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// PKCE's S256 challenge of `verifier`: its SHA-256, as base64url.
fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()))
}

/// `pairs` as a URL's query or a form's body.
fn encoded(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// `endpoint` with `pairs` added to its query.
fn with_query(endpoint: &Uri, pairs: &[(&str, &str)]) -> String {
    let joint = if endpoint.query().is_some() { '&' } else { '?' };
    format!("{endpoint}{joint}{}", encoded(pairs))
}

/// A sign-in refused, for `why`.
fn failed(why: &str) -> ApiError {
    ApiError::new(ErrorCode::SignInFailed, why)
}

impl Oidc {
    /// The endpoint `name` that the discovery document names.
    async fn endpoint(&self, name: &str) -> Result<Uri, ApiError> {
        let unavailable = |why: String| {
            tracing::warn!(endpoint = name, error = %why, "the identity provider's discovery document cannot be used");
            ApiError::new(
                ErrorCode::IdentityProviderUnavailable,
                "the identity provider could not be reached; try again",
            )
        };
        let discovery = self
            .discovery()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        named_endpoint(&discovery, name).map_err(unavailable)
    }
}

#[async_trait::async_trait]
impl SignIn for Oidc {
    async fn begin(&self, redirect_uri: &str) -> Result<SignInStart, ApiError> {
        let endpoint = self.endpoint("authorization_endpoint").await?;
        let (state, nonce, verifier) = (random(), random(), random());
        let url = with_query(
            &endpoint,
            &[
                ("response_type", "code"),
                ("client_id", &self.settings.client_id),
                ("redirect_uri", redirect_uri),
                ("scope", SCOPES),
                ("state", &state),
                ("nonce", &nonce),
                ("code_challenge", &challenge(&verifier)),
                ("code_challenge_method", "S256"),
            ],
        );
        Ok(SignInStart {
            url,
            state,
            nonce,
            verifier,
        })
    }

    async fn finish(&self, finish: Finish<'_>, now: Timestamp) -> Result<SignedIn, ApiError> {
        let endpoint = self.endpoint("token_endpoint").await?;
        let form = encoded(&[
            ("grant_type", "authorization_code"),
            ("code", finish.code),
            ("redirect_uri", finish.redirect_uri),
            ("client_id", &self.settings.client_id),
            ("code_verifier", finish.verifier),
        ]);
        let answer = post_form(&endpoint, form).await.map_err(|e| {
            tracing::warn!(error = %e, "the identity provider did not exchange a sign-in's code");
            failed("the identity provider did not exchange the sign-in's code for a token")
        })?;
        let tokens: Value = serde_json::from_slice(&answer)
            .map_err(|_| failed("the identity provider's token answer is not JSON"))?;
        let id_token = tokens["id_token"]
            .as_str()
            .ok_or_else(|| failed("the identity provider answered no ID token"))?;
        let person = self.person(id_token, now).await?;
        let claims = claims_of(id_token).unwrap_or_default();
        if claims["nonce"].as_str() != Some(finish.nonce) {
            return Err(failed("the ID token was not issued for this sign-in"));
        }
        Ok(SignedIn {
            id_token: id_token.to_owned(),
            person,
            expires_at: claims["exp"].as_i64().unwrap_or_default(),
        })
    }

    async fn end_session(&self, return_to: &str) -> Option<String> {
        let discovery = self.discovery().await.ok()?;
        let endpoint = named_endpoint(&discovery, "end_session_endpoint").ok()?;
        Some(with_query(
            &endpoint,
            &[
                ("post_logout_redirect_uri", return_to),
                ("client_id", &self.settings.client_id),
            ],
        ))
    }
}
