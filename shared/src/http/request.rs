//! Reading requests: the caller's key, path and query parameters, and JSON bodies.

use std::net::IpAddr;

use lambda_http::http::HeaderMap;
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};

use super::{ApiError, Context, ErrorCode, Settings};
use crate::check::{Needs, Outcome, check_presented};
use crate::domain::{
    Actor, AllowedIps, EnvName, Key, KeyId, LifecycleError, RotationPolicy, Scope, Scopes, Setting,
    Timestamp, Verdict,
};
use crate::store::{KeyStore, PageRequest, StoreError};

/// The key that headers present: `Authorization: Bearer <key>`, or else `x-api-key`. The
/// API and the authorizer both read keys this way.
pub fn key_from_headers(headers: &HeaderMap) -> Option<&str> {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let bearer = header("authorization").and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    bearer
        .or_else(|| header("x-api-key"))
        .filter(|k| !k.is_empty())
}

/// The address a request came from, as API Gateway saw it: `requestContext.identity.sourceIp`
/// on a REST API, `requestContext.http.sourceIp` on an HTTP API (and the peer's address on
/// `keyward serve`, which puts it there). Never `X-Forwarded-For`, which the caller writes.
pub fn source_ip(req: &Request) -> Option<IpAddr> {
    let text = match req.request_context_ref()? {
        RequestContext::ApiGatewayV1(context) => context.identity.source_ip.as_deref(),
        RequestContext::ApiGatewayV2(context) => context.http.source_ip.as_deref(),
        _ => None,
    }?;
    text.parse().ok()
}

/// A caller whose key is valid now.
#[derive(Debug, Clone)]
pub struct Caller {
    key: Key,
}

impl Caller {
    /// The caller as the actor of the changes it makes.
    pub fn actor(&self) -> Actor {
        Actor::api_key(&self.key.id)
    }

    /// `403 insufficient_scope` unless the caller's key grants `scope`.
    pub fn require_scope(&self, scope: &str) -> Result<(), ApiError> {
        if self.key.scopes.grants(scope) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::InsufficientScope,
                format!("this key lacks the scope {scope}"),
            ))
        }
    }

    /// `403 wrong_environment` unless the caller's key belongs to `environment`. It reads
    /// nothing, so the answer is the same whether that environment exists or not.
    pub fn require_environment(&self, environment: &EnvName) -> Result<(), ApiError> {
        if self.key.environment == *environment {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::WrongEnvironment,
                "this key belongs to another environment",
            ))
        }
    }

    /// `403 scope_escalation` unless the caller holds every one of `scopes`: a key hands out
    /// only what it holds itself.
    pub fn require_grant(&self, scopes: &Scopes) -> Result<(), ApiError> {
        match scopes.first_not_granted_by(&self.key.scopes) {
            None => Ok(()),
            Some(missing) => Err(ApiError::new(
                ErrorCode::ScopeEscalation,
                format!(
                    "a key can grant only scopes it holds, and this key does not hold {}",
                    missing.as_str()
                ),
            )),
        }
    }

    /// `403 lifetime_escalation` unless what the caller makes stops working by the time the
    /// caller's own key does (`until`; `None` is never). A key that expires, such as a leaked
    /// key that was rotated and is in its grace period, cannot outlive itself through a new
    /// key, a rotation, a longer grace or a rotation policy. A `*` key is not limited: it is
    /// full access, and the default key must keep working through its own grace period.
    pub fn require_lifetime(&self, until: Option<Timestamp>) -> Result<(), ApiError> {
        let Some(own) = self.key.expires_at else {
            return Ok(());
        };
        if self.key.scopes.is_all() || until.is_some_and(|t| t <= own) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::LifetimeEscalation,
                "this key expires, so it can make only credentials that stop working no later than it does",
            ))
        }
    }

    /// `403 network_escalation` unless every address `networks` lets in, the caller's own key
    /// lets in too: a key held to a CI runner's range cannot make, or rotate into, a key that
    /// works from anywhere else. A caller with no list is not limited.
    pub fn require_networks(&self, networks: &AllowedIps) -> Result<(), ApiError> {
        if self.key.allowed_ips.covers(networks) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::NetworkEscalation,
                "this key is held to some networks, so it can make and change only keys held within them",
            ))
        }
    }

    /// `409 would_lock_out` when `target`, as it would be stored, has networks that leave out
    /// `source`, the address this request came from, and is a key whose loss nobody could
    /// undo from here: the caller's own key or its successor (it would refuse its own next
    /// request), or the environment's default key (when the caller expires, or is revoked,
    /// no key may be left that can change it back).
    pub fn require_reachable(&self, target: &Key, source: Option<IpAddr>) -> Result<(), ApiError> {
        let guarded = target.id == self.key.id
            || target.rotated_from.as_ref() == Some(&self.key.id)
            || target.default;
        let locked_out = guarded
            && !target.allowed_ips.is_empty()
            && !source.is_some_and(|ip| target.allowed_ips.allows(ip));
        if locked_out {
            Err(ApiError::new(
                ErrorCode::WouldLockOut,
                "these networks would not let in the address this request comes from, and the key is the one making it, its successor or the environment's default key; change it from inside them",
            ))
        } else {
            Ok(())
        }
    }

    /// `403 scope_escalation` unless the caller may change `target`: only a `*` key changes
    /// the default key or a `*` key, and any other key changes only keys whose scopes it
    /// holds, since a rotation hands the caller a secret with the target's scopes.
    pub fn require_control(&self, target: &Key) -> Result<(), ApiError> {
        if self.key.controls(target) {
            return Ok(());
        }
        if target.default || target.scopes.is_all() {
            return Err(ApiError::new(
                ErrorCode::ScopeEscalation,
                format!(
                    "only a key with {} can change the default key or a key with {}",
                    Scope::ALL,
                    Scope::ALL
                ),
            ));
        }
        let missing = target
            .scopes
            .first_not_granted_by(&self.key.scopes)
            .map_or("", |scope| scope.as_str());
        Err(ApiError::new(
            ErrorCode::ScopeEscalation,
            format!(
                "a key can change only keys whose scopes it holds, and this key does not hold {missing}"
            ),
        ))
    }
}

/// Checks the caller's key with at most one store read ([`check_presented`], which also
/// counts it in `usage`), from the request's address ([`source_ip`]); a key used from outside
/// its allowed networks is a `403`, every other failure a `401`.
pub async fn authenticate(
    context: Context<'_>,
    req: &Request,
    now: Timestamp,
) -> Result<Caller, ApiError> {
    let token = key_from_headers(req.headers());
    let needs = Needs {
        source: source_ip(req),
        ..Needs::default()
    };
    let checked = check_presented(
        context.store,
        context.usage,
        &context.settings.key_prefix,
        token,
        needs,
        now,
    )
    .await?;
    let invalid = || ApiError::new(ErrorCode::InvalidApiKey, "the key is not valid");
    match (checked.outcome, checked.key) {
        (Outcome::Checked(Verdict::Valid), Some(key)) => {
            tracing::Span::current().record("caller", key.id.as_str());
            tracing::debug!(hint = %key.hint, "caller authenticated");
            Ok(Caller { key })
        }
        (Outcome::Missing, _) => Err(ApiError::new(
            ErrorCode::MissingApiKey,
            "send a key in Authorization: Bearer <key> or in x-api-key",
        )),
        (Outcome::Checked(Verdict::Revoked), _) => Err(ApiError::new(
            ErrorCode::RevokedApiKey,
            "the key was revoked",
        )),
        (Outcome::Checked(Verdict::Expired), _) => Err(ApiError::new(
            ErrorCode::ExpiredApiKey,
            "the key has expired",
        )),
        (Outcome::Checked(Verdict::IpNotAllowed | Verdict::IpRequired), _) => Err(ApiError::new(
            ErrorCode::IpNotAllowed,
            "the key is not accepted from this address",
        )),
        _ => Err(invalid()),
    }
}

fn path_param(req: &Request, name: &str) -> Option<String> {
    req.path_parameters_ref()
        .and_then(|p| p.first(name))
        .map(str::to_owned)
}

/// The `{key_id}` path parameter.
fn key_id_param(req: &Request) -> Result<KeyId, ApiError> {
    let raw = path_param(req, "key_id").unwrap_or_default();
    Ok(KeyId::parse(&raw)?)
}

/// The `{env}` path parameter.
fn environment_param(req: &Request) -> Result<EnvName, ApiError> {
    let raw = path_param(req, "env").unwrap_or_default();
    Ok(EnvName::parse(&raw)?)
}

/// A query string parameter.
pub fn query_param<'r>(req: &'r Request, name: &str) -> Option<&'r str> {
    req.query_string_parameters_ref()
        .and_then(|q| q.first(name))
}

/// `?limit=` (1 to 100, default 20) and `?cursor=`; `valid_cursor` says whether a cursor
/// could have come from this list.
pub fn page_request(
    req: &Request,
    valid_cursor: impl Fn(&str) -> bool,
) -> Result<PageRequest, ApiError> {
    let limit = match query_param(req, "limit") {
        None => 20,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidLimit,
                    "limit is a whole number from 1 to 100",
                )
            })?,
    };
    let after = match query_param(req, "cursor") {
        None => None,
        Some(c) if valid_cursor(c) => Some(c.to_owned()),
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidCursor,
                "cursor is the next_cursor of a previous page of this list",
            ));
        }
    };
    Ok(PageRequest { limit, after })
}

/// The checks of every `/v1/keys/{key_id}` route, in order: the caller's key (`401`), the
/// id (`400`), the scope (`403`), then the key (`404`). A key of another environment answers
/// exactly like a key that does not exist, so an id reveals nothing outside the caller's
/// environment.
pub async fn authorize_key(
    context: Context<'_>,
    req: &Request,
    now: Timestamp,
    scope: &str,
) -> Result<(Caller, Key), ApiError> {
    let store = context.store;
    let caller = authenticate(context, req, now).await?;
    let id = key_id_param(req)?;
    tracing::Span::current().record("key_id", id.as_str());
    caller.require_scope(scope)?;
    store
        .key(&id)
        .await?
        .filter(|key| key.environment == caller.key.environment)
        .map(|key| (caller, key))
        .ok_or_else(|| ApiError::new(ErrorCode::KeyNotFound, "no key has this id"))
}

/// The checks of every route that changes a key: those of [`authorize_key`] with
/// `keys:write`, then that the caller may change this key (`403 scope_escalation`).
pub async fn authorize_change(
    context: Context<'_>,
    req: &Request,
    now: Timestamp,
) -> Result<(Caller, Key), ApiError> {
    let (caller, key) = authorize_key(context, req, now, Scope::KEYS_WRITE).await?;
    caller.require_control(&key)?;
    Ok((caller, key))
}

/// The checks of every `/v1/environments/{env}` route, in order: the caller's key (`401`),
/// the name (`400`), the caller's own environment (`403 wrong_environment`, before anything
/// else is read, so it says nothing about whether another environment exists), then the
/// scope (`403`). The caller's key lives in its environment, so that environment exists.
pub async fn authorize_environment(
    context: Context<'_>,
    req: &Request,
    now: Timestamp,
    scope: &str,
) -> Result<(Caller, EnvName), ApiError> {
    let caller = authenticate(context, req, now).await?;
    let environment = environment_param(req)?;
    caller.require_environment(&environment)?;
    caller.require_scope(scope)?;
    Ok((caller, environment))
}

/// How many times a change is decided and applied before a conflict is answered: a key's
/// here, and an environment's leak policy in the leak function.
pub const ATTEMPTS: usize = 3;

/// Decides a change of `key` and applies it. When the store refuses it because the key
/// changed meanwhile, it reads the key again and decides again: a decision that now needs
/// no change (a revoke that lost to another revoke) or refuses (a rotation that lost to
/// another, `409 key_not_active`) answers as such. If the key changed only by a background
/// write that does not alter the decision (an expiry notice, a secret delivery), the new
/// decision is applied, at most three attempts in all; after any other change it answers
/// `409 conflict`. `decide` gives the outcome and the change to apply, if any.
pub async fn apply_deciding<T: Sync>(
    store: &dyn KeyStore,
    key: Key,
    decide: impl Fn(&Key) -> Result<(T, Option<crate::domain::Change>), ApiError>,
) -> Result<T, ApiError> {
    apply_prepared(store, key, decide, &NothingToPrepare).await
}

/// [`apply_deciding`] for one of a key's settings: `decide` is the domain's decision, and
/// `allow` holds a change to what the caller may do, given the key before it and after it.
/// Answers the key as it is now, and whether this request changed it.
pub async fn apply_setting(
    store: &dyn KeyStore,
    key: Key,
    decide: impl Fn(&Key) -> Result<Setting, LifecycleError>,
    allow: impl Fn(&Key, &Key) -> Result<(), ApiError>,
) -> Result<(Key, bool), ApiError> {
    apply_deciding(store, key, |key| {
        Ok(match decide(key)? {
            Setting::Changed {
                key: changed,
                change,
            } => {
                allow(key, &changed)?;
                ((changed, true), Some(*change))
            }
            Setting::Unchanged(key) => ((key, false), None),
        })
    })
    .await
}

/// What must be done for a decision before its change is applied: a rotation stores the new
/// secret it will deliver before it commits.
#[async_trait::async_trait]
pub trait Prepare<T: Sync>: Sync {
    /// Does it; an error applies nothing and is the answer.
    async fn prepare(&self, outcome: &T) -> Result<(), ApiError>;
}

/// For changes that need nothing done first.
struct NothingToPrepare;

#[async_trait::async_trait]
impl<T: Sync> Prepare<T> for NothingToPrepare {
    async fn prepare(&self, _: &T) -> Result<(), ApiError> {
        Ok(())
    }
}

/// [`apply_deciding`], with `prepare` done for each decision before its change is applied.
pub async fn apply_prepared<T: Sync>(
    store: &dyn KeyStore,
    mut key: Key,
    decide: impl Fn(&Key) -> Result<(T, Option<crate::domain::Change>), ApiError>,
    prepare: &dyn Prepare<T>,
) -> Result<T, ApiError> {
    let mut decided = decide(&key)?;
    for attempt in 1..=ATTEMPTS {
        let (outcome, change) = decided;
        let Some(change) = change else {
            return Ok(outcome);
        };
        prepare.prepare(&outcome).await?;
        match store.apply(&change).await {
            Ok(()) => return Ok(outcome),
            Err(StoreError::Conflict) if attempt < ATTEMPTS => {
                let Some(fresh) = store.key(&key.id).await? else {
                    return Err(StoreError::Conflict.into());
                };
                decided = decide(&fresh)?;
                if decided.1.is_some() && !fresh.decides_like(&key) {
                    return Err(StoreError::Conflict.into());
                }
                tracing::debug!(attempt, "the key changed meanwhile; decided again");
                key = fresh;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict.into())
}

/// A rotation policy from the API's JSON, for a key of `environment`: well formed, with a
/// grace of at least an hour, delivering only under `<prefix><environment>/` (`400`).
pub fn rotation_policy(
    value: &serde_json::Value,
    environment: &EnvName,
    settings: &Settings,
) -> Result<RotationPolicy, ApiError> {
    let policy = RotationPolicy::from_json(value)?;
    settings
        .secret_prefix
        .admits(environment, &policy.secret_id)?;
    Ok(policy)
}
