//! People signed in through an OpenID Connect provider: their ID tokens (or Cognito's access
//! tokens) checked against the keys the issuer publishes, and their groups mapped to roles.
//!
//! Everything but four settings comes from the issuer's discovery document. A token is
//! checked in this order, each failure a `401` with its own code: its shape, its algorithm
//! (`RS256` or `ES256` only: never `none`, never HMAC, whatever its header says), its `iss`
//! (before any key is fetched, so another issuer's tokens cost nothing), the key its `kid`
//! names (the issuer's JWKS, kept and refetched as [`crate::published`] keeps keys), its
//! signature, its audience (`aud` holds the client id, or Cognito's `client_id` is it), then
//! `exp` and `nbf`, against the request's `now`, with 60 s of skew.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::domain::{Person, Roles, Timestamp};
use crate::http::{
    ApiError, CLIENT_ID_VAR, ErrorCode, GROUPS_CLAIM_VAR, ISSUER_VAR, People, ROLES_VAR, SignIn,
};
use crate::published::{FetchError, PublishedKeys, get, https_url};

mod sign_in;

/// The groups claim when none is named; Cognito's is `cognito:groups`.
pub const DEFAULT_GROUPS_CLAIM: &str = "groups";

/// How long a fetched discovery document is used.
const DISCOVERY_KEPT_FOR: Duration = Duration::from_secs(3600);

/// How far a token's `exp` and `nbf` may be off.
const SKEW_SECONDS: i64 = 60;

/// The settings of sign-in through one issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSettings {
    /// The issuer, exactly as its tokens' `iss` and its discovery document name it.
    pub issuer: String,
    /// keyward's client id at the issuer: the audience its tokens must be for.
    pub client_id: String,
    /// The claim that lists a person's groups.
    pub groups_claim: String,
    /// What each group may do.
    pub roles: Roles,
}

impl OidcSettings {
    /// The settings from their variables ([`crate::http::ISSUER_VAR`] and the rest): `None`
    /// without an issuer; an error
    /// that names the variable when one is set wrong or an issuer has no client id.
    pub fn from_env() -> Result<Option<Self>, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let Some(issuer) = var(ISSUER_VAR) else {
            return Ok(None);
        };
        let client_id = var(CLIENT_ID_VAR)
            .ok_or_else(|| format!("{CLIENT_ID_VAR} is needed beside {ISSUER_VAR}"))?;
        Self::new(
            &issuer,
            &client_id,
            var(GROUPS_CLAIM_VAR).as_deref(),
            var(ROLES_VAR).as_deref(),
        )
        .map(Some)
    }

    /// Settings from their values; `groups_claim` defaults to `groups`, and `roles` to none.
    pub fn new(
        issuer: &str,
        client_id: &str,
        groups_claim: Option<&str>,
        roles: Option<&str>,
    ) -> Result<Self, String> {
        https_url(ISSUER_VAR, issuer)?;
        let roles = Roles::parse(roles.unwrap_or("{}")).map_err(|e| format!("{ROLES_VAR}: {e}"))?;
        Ok(Self {
            issuer: issuer.to_owned(),
            client_id: client_id.to_owned(),
            groups_claim: groups_claim.unwrap_or(DEFAULT_GROUPS_CLAIM).to_owned(),
            roles,
        })
    }

    /// Where the issuer's discovery document is.
    fn discovery_url(&self) -> String {
        format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        )
    }
}

/// The issuer's keys, checked against its tokens: the [`People`] adapter.
pub struct Oidc {
    settings: OidcSettings,
    keys: PublishedKeys<Jwk>,
    /// The discovery document as last fetched, and when: every sign-in and every fetch of the
    /// keys reads it, and it changes about never.
    discovered: std::sync::Mutex<Option<(Instant, Value)>>,
}

impl Oidc {
    /// Sign-in through the issuer `settings` name; nothing is fetched until a token comes.
    pub fn new(settings: OidcSettings) -> Result<Self, String> {
        let discovery = https_url(ISSUER_VAR, &settings.discovery_url())?;
        Ok(Self {
            settings,
            keys: PublishedKeys::new(discovery),
            discovered: std::sync::Mutex::new(None),
        })
    }

    /// The issuer's discovery document, which must name this issuer; fetched again an hour
    /// after it was.
    async fn discovery(&self) -> Result<Value, FetchError> {
        let kept = self.discovered.lock().ok().and_then(|kept| kept.clone());
        if let Some((_, discovery)) = kept.filter(|(at, _)| at.elapsed() < DISCOVERY_KEPT_FOR) {
            return Ok(discovery);
        }
        let url = self.keys.url();
        let discovery: Value = serde_json::from_slice(&get(url).await?)
            .map_err(|_| FetchError::new(url, "the discovery document is not JSON"))?;
        if discovery["issuer"].as_str() != Some(self.settings.issuer.as_str()) {
            return Err(FetchError::new(
                url,
                "the discovery document names another issuer",
            ));
        }
        if let Ok(mut kept) = self.discovered.lock() {
            *kept = Some((Instant::now(), discovery.clone()));
        }
        Ok(discovery)
    }

    /// The issuer's keys by `kid`, from the `jwks_uri` its discovery document names; a key
    /// without a `kid`, or the only key, is also kept under `""` for tokens that name none.
    async fn fetch(&self) -> Result<HashMap<String, Jwk>, FetchError> {
        let discovery = self.discovery().await?;
        let jwks_uri = named_endpoint(&discovery, "jwks_uri")
            .map_err(|why| FetchError::new(self.keys.url(), why))?;
        let set: Value = serde_json::from_slice(&get(&jwks_uri).await?)
            .map_err(|_| FetchError::new(&jwks_uri, "the JWKS is not JSON"))?;
        let usable: Vec<Jwk> = set["keys"]
            .as_array()
            .ok_or_else(|| FetchError::new(&jwks_uri, "the JWKS has no keys"))?
            .iter()
            .filter_map(|key| serde_json::from_value::<Jwk>(key.clone()).ok())
            .filter(|key| {
                !matches!(
                    key.common.public_key_use,
                    Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
                ) && !matches!(key.algorithm, AlgorithmParameters::OctetKey(_))
            })
            .collect();
        let mut keys: HashMap<String, Jwk> = HashMap::new();
        for key in &usable {
            let kid = key.common.key_id.clone().unwrap_or_default();
            keys.entry(kid).or_insert_with(|| key.clone());
        }
        if let [only] = usable.as_slice() {
            keys.insert(String::new(), only.clone());
        }
        Ok(keys)
    }

    /// The person `token` names, or the failure that refuses it.
    async fn check(&self, token: &str, now: Timestamp) -> Result<Person, ApiError> {
        let refuse = |code, message: &str| ApiError::new(code, message);
        let malformed = || {
            refuse(
                ErrorCode::MalformedToken,
                "the token is not a JWT of this identity provider",
            )
        };
        let parts: Vec<&str> = token.split('.').collect();
        let [header, claims, _] = parts.as_slice() else {
            return Err(malformed());
        };
        let (header, claims) = part(header).zip(part(claims)).ok_or_else(malformed)?;
        let algorithm = match header["alg"].as_str() {
            Some("RS256") => Algorithm::RS256,
            Some("ES256") => Algorithm::ES256,
            _ => {
                return Err(refuse(
                    ErrorCode::UnsupportedTokenAlgorithm,
                    "the token is signed with neither RS256 nor ES256",
                ));
            }
        };
        if claims["iss"].as_str() != Some(self.settings.issuer.as_str()) {
            return Err(refuse(
                ErrorCode::InvalidTokenIssuer,
                "the token was issued by another issuer",
            ));
        }
        let kid = header["kid"].as_str().unwrap_or_default();
        let key = self
            .keys
            .key(kid, || self.fetch())
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "the identity provider's keys are unavailable");
                refuse(
                    ErrorCode::IdentityProviderUnavailable,
                    "the identity provider's keys could not be fetched; try again",
                )
            })?
            .filter(|key| fits(key, algorithm))
            .and_then(|key| DecodingKey::from_jwk(&key).ok())
            .ok_or_else(|| {
                refuse(
                    ErrorCode::UnknownTokenKey,
                    "the token names no key that its issuer publishes for its algorithm",
                )
            })?;
        let mut validation = Validation::new(algorithm);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|_| {
            refuse(
                ErrorCode::InvalidTokenSignature,
                "the token's signature does not hold",
            )
        })?;
        let client_id = self.settings.client_id.as_str();
        let for_keyward = match &claims["aud"] {
            Value::String(aud) => aud == client_id,
            // Several audiences: the party it was issued to (`azp`) must be keyward, or a
            // token another client asked for could name keyward among others (OIDC Core
            // 3.1.3.7).
            Value::Array(auds) => {
                auds.iter().any(|a| a.as_str() == Some(client_id))
                    && (auds.len() == 1 || claims["azp"].as_str() == Some(client_id))
            }
            // Cognito's access tokens have no `aud`; they name the client in `client_id`.
            Value::Null => {
                claims["token_use"] == "access" && claims["client_id"].as_str() == Some(client_id)
            }
            _ => false,
        };
        if !for_keyward {
            return Err(refuse(
                ErrorCode::InvalidTokenAudience,
                "the token is for another client",
            ));
        }
        let now = now.timestamp();
        match claims["exp"].as_i64() {
            Some(exp) if now <= exp.saturating_add(SKEW_SECONDS) => {}
            Some(_) => return Err(refuse(ErrorCode::ExpiredToken, "the token has expired")),
            None => return Err(malformed()),
        }
        match &claims["nbf"] {
            Value::Null => {}
            nbf => match nbf.as_i64() {
                Some(nbf) if now.saturating_add(SKEW_SECONDS) < nbf => {
                    return Err(refuse(
                        ErrorCode::TokenNotYetValid,
                        "the token is not valid yet",
                    ));
                }
                Some(_) => {}
                None => return Err(malformed()),
            },
        }
        let sub = claims["sub"]
            .as_str()
            .filter(|s| !s.is_empty() && s.len() <= MAX_SUB_BYTES && s.chars().all(shown_as_is))
            .ok_or_else(malformed)?;
        // The email only if the provider says it is verified (some send it as text): where
        // people may set their own, an unverified one would sign the log with another's name.
        let verified = matches!(&claims["email_verified"], Value::Bool(true))
            || claims["email_verified"] == "true";
        let email = claims["email"].as_str().filter(|_| verified);
        let name = email
            .or_else(|| claims["name"].as_str())
            .map(shown_name)
            .filter(|s| !s.is_empty());
        let groups: Vec<&str> = match &claims[self.settings.groups_claim.as_str()] {
            Value::Array(groups) => groups.iter().filter_map(Value::as_str).collect(),
            Value::String(group) => vec![group.as_str()],
            _ => Vec::new(),
        };
        Ok(Person {
            sub: sub.to_owned(),
            name,
            grants: self.settings.roles.grants(&groups),
        })
    }
}

/// The endpoint `name` of a discovery document, held to [`https_url`]'s rule; the error says
/// why not.
fn named_endpoint(discovery: &Value, name: &str) -> Result<hyper::Uri, String> {
    let url = discovery[name]
        .as_str()
        .ok_or_else(|| format!("the discovery document has no {name}"))?;
    https_url(name, url)
}

/// One part of a JWT, decoded: a JSON object, or nothing.
fn part(text: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(Value::is_object)
}

/// The claims of `token`, read without any check: only for a token already checked.
fn claims_of(token: &str) -> Option<Value> {
    part(token.split('.').nth(1)?)
}

/// The longest subject taken; OpenID Connect caps it at 255 ASCII characters.
const MAX_SUB_BYTES: usize = 255;

/// The most characters of a person's name kept for the activity log.
const MAX_NAME_CHARS: usize = 200;

/// Whether `c` shows as itself: no control character, and no format character (such as a
/// bidirectional override) that could make one name read as another.
fn shown_as_is(c: char) -> bool {
    !c.is_control() && !crate::domain::is_format_character(c)
}

/// A name as the log keeps it: at most [`MAX_NAME_CHARS`] characters, each shown as itself,
/// any white space (a tab, a line break) as a space.
fn shown_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .filter(|c| shown_as_is(*c))
        .take(MAX_NAME_CHARS)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Whether `key` can have signed with `algorithm`: an RSA key for RS256, a P-256 key for
/// ES256, and, if the key names its algorithm, that one.
fn fits(key: &Jwk, algorithm: Algorithm) -> bool {
    let named_fits = key
        .common
        .key_algorithm
        .is_none_or(|named| match algorithm {
            Algorithm::RS256 => named == KeyAlgorithm::RS256,
            Algorithm::ES256 => named == KeyAlgorithm::ES256,
            _ => false,
        });
    let kind_fits = match (&key.algorithm, algorithm) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        _ => false,
    };
    named_fits && kind_fits
}

/// Whether `token` has a JWT's shape (three parts, the first a JSON header): only then is it
/// checked as a person's, so that keys, which have no dots, stay keys.
fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.matches('.').count() == 2
}

#[async_trait::async_trait]
impl People for Oidc {
    fn takes(&self, token: &str) -> bool {
        looks_like_jwt(token)
    }

    async fn person(&self, token: &str, now: Timestamp) -> Result<Person, ApiError> {
        let checked = self.check(token, now).await;
        if let Err(e) = &checked {
            tracing::info!(code = e.code(), "a person's token was refused");
        }
        checked
    }

    fn sign_in(&self) -> Option<&dyn SignIn> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_need_an_https_issuer_a_client_id_and_good_roles() {
        let good = OidcSettings::new("https://id.example.com", "keyward", None, None).unwrap();
        assert_eq!(good.groups_claim, "groups");
        assert_eq!(
            good.discovery_url(),
            "https://id.example.com/.well-known/openid-configuration"
        );
        assert!(OidcSettings::new("http://id.example.com", "keyward", None, None).is_err());
        let bad_roles =
            OidcSettings::new("https://id.example.com", "k", None, Some("[]")).unwrap_err();
        assert!(bad_roles.starts_with(ROLES_VAR), "{bad_roles}");
    }

    #[test]
    fn only_a_jwts_shape_is_checked_as_a_person() {
        assert!(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.e30.c2ln"));
        assert!(!looks_like_jwt("kw_sk_production_3xYz"));
        assert!(!looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.e30"));
    }
}

#[cfg(all(test, feature = "testing"))]
mod issued {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::testing::Es256Issuer;

    const CLIENT: &str = "keyward-console";

    fn oidc(issuer: &str) -> Oidc {
        let roles = r#"{"devs": {"staging": ["keys:read"]}}"#;
        Oidc::new(OidcSettings::new(issuer, CLIENT, None, Some(roles)).unwrap()).unwrap()
    }

    fn at(seconds: i64) -> Timestamp {
        chrono::Utc.timestamp_opt(seconds, 0).unwrap()
    }

    /// A token from `issuer` with its claims that pass every check, changed by `edit`.
    fn signed_with(issuer: &Es256Issuer, now: i64, edit: &dyn Fn(&mut Value)) -> String {
        let mut claims = issuer.claims(CLIENT, "dana", &["devs"], now);
        edit(&mut claims);
        issuer.sign(&claims)
    }

    fn code(checked: Result<Person, ApiError>) -> &'static str {
        checked.map_or_else(|e| e.code(), |_| "accepted")
    }

    #[tokio::test]
    async fn an_es256_token_is_accepted_and_names_the_person_and_their_grants() {
        let issuer = Es256Issuer::start();
        let oidc = oidc(&issuer.issuer);
        let now = 1_800_000_000;
        let token = issuer.sign(&issuer.claims(CLIENT, "dana", &["devs"], now));
        let person = oidc.check(&token, at(now)).await.unwrap();
        assert_eq!(
            (person.sub.as_str(), person.name.as_deref()),
            ("dana", Some("dana@example.com"))
        );
        let staging = crate::domain::EnvName::parse("staging").unwrap();
        assert!(person.grants.scopes_in(&staging).grants("keys:read"));
        let mut cognito = issuer.claims(CLIENT, "dana", &["devs"], now);
        cognito["aud"] = Value::Null;
        cognito["client_id"] = json!(CLIENT);
        cognito["token_use"] = json!("access");
        assert_eq!(
            code(oidc.check(&issuer.sign(&cognito), at(now)).await),
            "accepted"
        );
        let mut listed = issuer.claims(CLIENT, "dana", &["devs"], now);
        listed["aud"] = json!(["another", CLIENT]);
        listed["azp"] = json!(CLIENT);
        assert_eq!(
            code(oidc.check(&issuer.sign(&listed), at(now)).await),
            "accepted"
        );
    }

    #[tokio::test]
    async fn exp_and_nbf_are_held_to_the_requests_now_with_60_seconds_of_skew() {
        let issuer = Es256Issuer::start();
        let oidc = oidc(&issuer.issuer);
        let now = 1_800_000_000;
        let mut claims = issuer.claims(CLIENT, "dana", &["devs"], now);
        claims["exp"] = json!(now);
        claims["nbf"] = json!(now);
        let token = issuer.sign(&claims);
        assert_eq!(code(oidc.check(&token, at(now + 60)).await), "accepted");
        assert_eq!(
            code(oidc.check(&token, at(now + 61)).await),
            "expired_token"
        );
        assert_eq!(code(oidc.check(&token, at(now - 60)).await), "accepted");
        assert_eq!(
            code(oidc.check(&token, at(now - 61)).await),
            "token_not_yet_valid"
        );
        claims["nbf"] = json!("soon");
        let odd = issuer.sign(&claims);
        assert_eq!(code(oidc.check(&odd, at(now)).await), "malformed_token");
        claims["nbf"] = Value::Null;
        claims["exp"] = Value::Null;
        let endless = issuer.sign(&claims);
        assert_eq!(code(oidc.check(&endless, at(now)).await), "malformed_token");
    }

    #[tokio::test]
    async fn a_key_rotated_at_the_issuer_is_fetched_once_and_a_made_up_kid_fetches_nothing() {
        let issuer = Es256Issuer::start();
        // A wait of 300 ms stands for the minute between two fetches.
        let wait = std::time::Duration::from_millis(300);
        let base = oidc(&issuer.issuer);
        let oidc = Oidc {
            keys: base.keys.refetching_after(wait),
            ..base
        };
        let now = 1_800_000_000;
        let claims = issuer.claims(CLIENT, "dana", &["devs"], now);
        let first = issuer.sign(&claims);
        assert_eq!(code(oidc.check(&first, at(now)).await), "accepted");
        assert_eq!(code(oidc.check(&first, at(now)).await), "accepted");
        assert_eq!(issuer.fetches(), 1, "kept keys are not fetched again");
        // The discovery document is kept for an hour: were it fetched again for the next
        // fetch of the keys, this one would refuse them.
        issuer.publish_discovery(json!({"issuer": "https://elsewhere.example.com", "jwks_uri": format!("{}/jwks", issuer.issuer)}));
        issuer.rotate("k2");
        let rotated = issuer.sign(&claims);
        assert_eq!(
            code(oidc.check(&rotated, at(now)).await),
            "unknown_token_key",
            "within the wait of the last fetch, an unknown kid fetches nothing"
        );
        assert_eq!(issuer.fetches(), 1);
        std::thread::sleep(wait);
        assert_eq!(code(oidc.check(&rotated, at(now)).await), "accepted");
        assert_eq!(
            issuer.fetches(),
            2,
            "after the wait, an unknown kid fetches again"
        );
        issuer.rotate("k9");
        let unknown = issuer.sign(&claims);
        assert_eq!(
            code(oidc.check(&unknown, at(now)).await),
            "unknown_token_key"
        );
        assert_eq!(issuer.fetches(), 2, "at most one fetch per wait");
    }

    #[tokio::test]
    async fn a_header_that_names_another_algorithm_than_its_key_finds_no_key() {
        let issuer = Es256Issuer::start();
        let oidc = oidc(&issuer.issuer);
        let now = 1_800_000_000;
        let token = issuer.sign(&issuer.claims(CLIENT, "dana", &["devs"], now));
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"k1"}"#);
        let rest = token.split_once('.').unwrap().1;
        let relabelled = format!("{header}.{rest}");
        assert_eq!(
            code(oidc.check(&relabelled, at(now)).await),
            "unknown_token_key"
        );
    }

    #[tokio::test]
    async fn an_issuer_whose_keys_cannot_be_fetched_is_unavailable_not_a_bad_token() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let issuer = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let oidc = oidc(&issuer);
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"k1"}"#);
        let claims = URL_SAFE_NO_PAD.encode(json!({"iss": issuer}).to_string());
        let token = format!("{header}.{claims}.c2ln");
        let refused = oidc.check(&token, at(1_800_000_000)).await.unwrap_err();
        assert_eq!(
            (refused.code(), refused.status().as_u16()),
            ("identity_provider_unavailable", 503)
        );
    }

    #[tokio::test]
    async fn an_audience_is_keywards_only_as_the_token_says_so_plainly() {
        let issuer = Es256Issuer::start();
        let oidc = oidc(&issuer.issuer);
        let now = 1_800_000_000;
        type Edit<'a> = &'a dyn Fn(&mut Value);
        let cases: [(&str, Edit); 4] = [
            ("another audience, keyward's client_id beside it", &|c| {
                c["aud"] = json!("another");
                c["client_id"] = json!(CLIENT);
            }),
            ("several audiences, issued to another party", &|c| {
                c["aud"] = json!(["another", CLIENT]);
                c["azp"] = json!("another");
            }),
            ("several audiences, no azp", &|c| {
                c["aud"] = json!(["another", CLIENT])
            }),
            ("no aud, a client_id on an ID token", &|c| {
                c["aud"] = Value::Null;
                c["client_id"] = json!(CLIENT);
            }),
        ];
        for (case, edit) in cases {
            let token = signed_with(&issuer, now, edit);
            assert_eq!(
                code(oidc.check(&token, at(now)).await),
                "invalid_token_audience",
                "{case}"
            );
        }
    }

    #[tokio::test]
    async fn a_subject_must_show_as_itself_and_a_name_is_cleaned_and_unverified_email_passed_over()
    {
        let issuer = Es256Issuer::start();
        let oidc = oidc(&issuer.issuer);
        let now = 1_800_000_000;
        let with = |edit: &dyn Fn(&mut Value)| signed_with(&issuer, now, edit);
        for bad_sub in [
            Value::Null,
            json!(""),
            json!("da\u{202e}na"),
            json!("x".repeat(256)),
        ] {
            let token = with(&|c| c["sub"] = bad_sub.clone());
            assert_eq!(
                code(oidc.check(&token, at(now)).await),
                "malformed_token",
                "{bad_sub}"
            );
        }
        let hostile = with(&|c| c["email"] = json!("\u{1b}[2Jdana\u{202e}@example.com"));
        let person = oidc.check(&hostile, at(now)).await.unwrap();
        assert_eq!(person.name.as_deref(), Some("[2Jdana@example.com"));
        for unverified in [json!(false), json!("false"), Value::Null] {
            let token = with(&|c| {
                c["email"] = json!("ceo@example.com");
                c["email_verified"] = unverified.clone();
                c["name"] = json!("Dana\tR.");
            });
            let person = oidc.check(&token, at(now)).await.unwrap();
            assert_eq!(person.name.as_deref(), Some("Dana R."), "{unverified}");
        }
        let said_as_text = with(&|c| c["email_verified"] = json!("true"));
        let person = oidc.check(&said_as_text, at(now)).await.unwrap();
        assert_eq!(person.name.as_deref(), Some("dana@example.com"));
        let long = with(&|c| c["email"] = json!("d".repeat(5000)));
        let person = oidc.check(&long, at(now)).await.unwrap();
        assert_eq!(person.name.map(|n| n.chars().count()), Some(MAX_NAME_CHARS));
    }

    #[tokio::test]
    async fn a_discovery_document_or_a_jwks_that_breaks_a_rule_gives_no_key() {
        let now = 1_800_000_000;
        let issuer = Es256Issuer::start();
        issuer.publish_discovery(json!({"issuer": "https://elsewhere.example.com", "jwks_uri": format!("{}/jwks", issuer.issuer)}));
        let token = issuer.sign(&issuer.claims(CLIENT, "dana", &["devs"], now));
        assert_eq!(
            code(oidc(&issuer.issuer).check(&token, at(now)).await),
            "identity_provider_unavailable",
            "a discovery document that names another issuer"
        );
        issuer.publish_discovery(
            json!({"issuer": issuer.issuer, "jwks_uri": "http://example.com/jwks"}),
        );
        let refused = oidc(&issuer.issuer).fetch().await.unwrap_err().to_string();
        assert!(
            refused.contains("is not https://"),
            "keys in clear from elsewhere than loopback are not fetched: {refused}"
        );
        issuer.publish_discovery(
            json!({"issuer": issuer.issuer, "jwks_uri": format!("{}/jwks", issuer.issuer)}),
        );
        let mut for_encryption = issuer.jwk();
        for_encryption["use"] = json!("enc");
        let secret = json!({"kty": "oct", "kid": "k1", "k": "c2VjcmV0"});
        issuer.publish_keys(json!({"keys": [for_encryption, secret]}));
        assert_eq!(
            code(oidc(&issuer.issuer).check(&token, at(now)).await),
            "unknown_token_key",
            "an encryption key and a symmetric key are never used to check a signature"
        );
    }

    #[tokio::test]
    async fn a_token_without_a_kid_takes_the_only_key_and_none_of_several() {
        let now = 1_800_000_000;
        let issuer = Es256Issuer::start();
        let token = issuer.sign_without_kid(&issuer.claims(CLIENT, "dana", &["devs"], now));
        assert_eq!(
            code(oidc(&issuer.issuer).check(&token, at(now)).await),
            "accepted",
            "the issuer's only key, published under its kid k1"
        );
        let mut other = issuer.jwk();
        other["kid"] = json!("k2");
        issuer.publish_keys(json!({"keys": [issuer.jwk(), other]}));
        assert_eq!(
            code(oidc(&issuer.issuer).check(&token, at(now)).await),
            "unknown_token_key",
            "with several keys, a token must name its own"
        );
    }
}
