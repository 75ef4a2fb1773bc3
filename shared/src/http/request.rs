//! Reading requests: the caller's key, path and query parameters, and JSON bodies.

use std::borrow::Cow;
use std::net::IpAddr;

use lambda_http::http::HeaderMap;
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};

use super::{ApiError, Context, ErrorCode, Settings, person_token, require_role};
use crate::check::{Needs, Outcome, check_presented};
use crate::domain::{
    Actor, AllowedIps, EnvName, Key, KeyId, LifecycleError, Person, RotationPolicy, Scope, Scopes,
    Setting, Timestamp, Verdict,
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

/// The cookie that holds a signed-in person's ID token: `__Host-` so that only this host,
/// over HTTPS, can set it, `HttpOnly` so that no script reads it, `SameSite=Strict` so that
/// no other site's request carries it.
pub const SESSION_COOKIE: &str = "__Host-keyward-session";

/// The header the console sends with every call: the session's cookie is read only from a
/// request that carries it, which no other site's page can send without a CORS preflight,
/// and keyward answers none.
pub const CONSOLE_HEADER: &str = "x-keyward-console";

/// The value of the cookie `name` in `headers`, if it is there.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value.trim())
        })
        .filter(|v| !v.is_empty())
}

/// What the console's session presents: its cookie, on a request that carries
/// [`CONSOLE_HEADER`] and no credential of its own (no `Authorization`, no `x-api-key`). It
/// is only ever checked as a person's token, never as a key: keyward sets that cookie only to
/// an ID token, and the caller passes it to the People port alone.
pub fn session_from_headers(headers: &HeaderMap) -> Option<&str> {
    let own = headers.contains_key("authorization") || headers.contains_key("x-api-key");
    if own || !headers.contains_key(CONSOLE_HEADER) {
        return None;
    }
    cookie(headers, SESSION_COOKIE)
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

/// A caller whose key, or person's token, is valid now.
#[derive(Debug, Clone)]
pub struct Caller {
    who: Who,
}

/// Who a caller is.
#[derive(Debug, Clone)]
enum Who {
    /// A holder of one of keyward's keys, which belongs to one environment.
    Key(Box<Key>),
    /// A person, with the scopes their groups grant in each environment.
    Person(Person),
}

impl Caller {
    /// The caller as the actor of the changes it makes: the key's id, or the person.
    pub fn actor(&self) -> Actor {
        match &self.who {
            Who::Key(key) => Actor::api_key(&key.id),
            Who::Person(person) => Actor::user(&person.sub, person.name.clone()),
        }
    }

    /// The scopes the caller holds in `environment`: a key's own in its environment and none
    /// elsewhere; a person's groups' grants there.
    fn scopes_in(&self, environment: &EnvName) -> Cow<'_, Scopes> {
        match &self.who {
            Who::Key(key) if key.environment == *environment => Cow::Borrowed(&key.scopes),
            Who::Key(_) => Cow::Owned(Scopes::default()),
            Who::Person(person) => Cow::Owned(person.grants.scopes_in(environment)),
        }
    }

    /// `403 insufficient_scope` unless the caller holds `scope` somewhere: a key in its
    /// environment, a person in any. It authorizes nothing by itself: [`authorize_key`] asks
    /// it before reading the key, and then holds the key's environment to the scope.
    fn require_scope_somewhere(&self, scope: &str) -> Result<(), ApiError> {
        let held = match &self.who {
            Who::Key(key) => key.scopes.grants(scope),
            Who::Person(person) => person.grants.grants_anywhere(scope),
        };
        held.then_some(()).ok_or_else(|| self.lacks(scope))
    }

    /// `403 wrong_environment` unless the caller may act in `environment` at all: a key of
    /// it (whatever its scopes), or a person with a role there. It reads nothing, so the
    /// answer is the same whether that environment exists or not.
    fn require_environment(&self, environment: &EnvName) -> Result<(), ApiError> {
        let (allowed, message) = match &self.who {
            Who::Key(key) => (
                key.environment == *environment,
                "this key belongs to another environment",
            ),
            Who::Person(person) => (
                person.grants.scopes_in(environment).iter().next().is_some(),
                "your groups grant you no role in this environment",
            ),
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::new(ErrorCode::WrongEnvironment, message))
        }
    }

    /// `403 insufficient_scope` unless the caller holds `scope` in `environment`.
    fn require_scope_in(&self, environment: &EnvName, scope: &str) -> Result<(), ApiError> {
        if self.scopes_in(environment).grants(scope) {
            Ok(())
        } else {
            Err(self.lacks(scope))
        }
    }

    /// `403 insufficient_scope` for a caller without `scope`, said to a key or to a person.
    fn lacks(&self, scope: &str) -> ApiError {
        let message = match &self.who {
            Who::Key(_) => format!("this key lacks the scope {scope}"),
            Who::Person(_) => format!("your groups do not grant you the scope {scope} here"),
        };
        ApiError::new(ErrorCode::InsufficientScope, message)
    }

    /// `403 scope_escalation` unless the caller holds every one of `scopes` in `environment`:
    /// a caller hands out only what it holds itself.
    pub fn require_grant(&self, environment: &EnvName, scopes: &Scopes) -> Result<(), ApiError> {
        let Some(missing) = scopes.first_not_granted_by(&self.scopes_in(environment)) else {
            return Ok(());
        };
        let message = match &self.who {
            Who::Key(_) => "a key can grant only scopes it holds, and this key does not hold",
            Who::Person(_) => {
                "you can grant only scopes your groups give you here, and they do not give"
            }
        };
        Err(ApiError::new(
            ErrorCode::ScopeEscalation,
            format!("{message} {}", missing.as_str()),
        ))
    }

    /// `403 lifetime_escalation` unless what the caller makes stops working by the time the
    /// caller's own key does (`until`; `None` is never). A key that expires, such as a leaked
    /// key that was rotated and is in its grace period, cannot outlive itself through a new
    /// key, a rotation, a longer grace or a rotation policy. A `*` key is not limited: it is
    /// full access, and the default key must keep working through its own grace period.
    /// A person is not limited: their rights end when their groups change, not with a key.
    pub fn require_lifetime(&self, until: Option<Timestamp>) -> Result<(), ApiError> {
        let Who::Key(key) = &self.who else {
            return Ok(());
        };
        let Some(own) = key.expires_at else {
            return Ok(());
        };
        if key.scopes.is_all() || until.is_some_and(|t| t <= own) {
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
    /// works from anywhere else. A caller with no list, as a person, is not limited.
    pub fn require_networks(&self, networks: &AllowedIps) -> Result<(), ApiError> {
        let held = match &self.who {
            Who::Key(key) => key.allowed_ips.covers(networks),
            Who::Person(_) => true,
        };
        if held {
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
        let own = |id: &KeyId| matches!(&self.who, Who::Key(key) if key.id == *id);
        let guarded =
            own(&target.id) || target.rotated_from.as_ref().is_some_and(own) || target.default;
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

    /// `403 scope_escalation` unless the caller may change `target`: only a caller with `*`
    /// in its environment changes the default key or a `*` key, and any other changes only
    /// keys whose scopes it holds there, since a rotation hands the caller a secret with the
    /// target's scopes.
    pub fn require_control(&self, target: &Key) -> Result<(), ApiError> {
        let held = self.scopes_in(&target.environment);
        if target.changeable_with(&held) {
            return Ok(());
        }
        if target.default || target.scopes.is_all() {
            let who = match &self.who {
                Who::Key(_) => "a key with",
                Who::Person(_) => "a person whose groups grant, here,",
            };
            return Err(ApiError::new(
                ErrorCode::ScopeEscalation,
                format!(
                    "only {who} {} can change the default key or a key with {}",
                    Scope::ALL,
                    Scope::ALL
                ),
            ));
        }
        let missing = target
            .scopes
            .first_not_granted_by(&held)
            .map_or("", |scope| scope.as_str());
        let message = match &self.who {
            Who::Key(_) => {
                "a key can change only keys whose scopes it holds, and this key does not hold"
            }
            Who::Person(_) => {
                "you can change only keys whose scopes your groups give you here, and they do not give"
            }
        };
        Err(ApiError::new(
            ErrorCode::ScopeEscalation,
            format!("{message} {missing}"),
        ))
    }
}

/// Checks the caller: a person's token, when the identity provider takes it (`401` with the
/// reason, or `403 no_role` for a person whose groups grant nothing); else a key, with at
/// most one store read ([`check_presented`], which also counts it in `usage`), from the
/// request's address ([`source_ip`]); a key used from outside its allowed networks is a
/// `403`, every other failure a `401`.
pub async fn authenticate(
    context: Context<'_>,
    req: &Request,
    now: Timestamp,
) -> Result<Caller, ApiError> {
    let token = key_from_headers(req.headers());
    let session = session_from_headers(req.headers());
    if let Some(token) = person_token(context.people, token, session) {
        let person = context.people.person(token, now).await?;
        tracing::Span::current().record("caller", person.sub.as_str());
        require_role(&person)?;
        return Ok(Caller {
            who: Who::Person(person),
        });
    }
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
            Ok(Caller {
                who: Who::Key(Box::new(key)),
            })
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

/// The checks of every `/v1/keys/{key_id}` route, in order: the caller (`401`), the id
/// (`400`), the scope held anywhere (`403`), then the key (`404`). A key of an environment
/// where the caller lacks the scope answers exactly like a key that does not exist, so an id
/// reveals nothing outside what the caller may read.
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
    caller.require_scope_somewhere(scope)?;
    store
        .key(&id)
        .await?
        .filter(|key| caller.require_scope_in(&key.environment, scope).is_ok())
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

/// The checks of every `/v1/environments/{env}` route, in order: the caller (`401`), the
/// name (`400`), access to that environment (`403 wrong_environment`, before anything else
/// is read, so it says nothing about whether another environment exists), then the scope
/// there (`403`). A key lives in its environment, so that environment exists; a person's
/// role may name one that does not, or every one, so for a person it is read (`404`), as
/// only someone with rights there can tell.
pub async fn authorize_environment(
    context: Context<'_>,
    req: &Request,
    now: Timestamp,
    scope: &str,
) -> Result<(Caller, EnvName), ApiError> {
    let caller = authenticate(context, req, now).await?;
    let environment = environment_param(req)?;
    caller.require_environment(&environment)?;
    caller.require_scope_in(&environment, scope)?;
    if matches!(caller.who, Who::Person(_))
        && context.store.environment(&environment).await?.is_none()
    {
        return Err(ApiError::new(
            ErrorCode::EnvironmentNotFound,
            "no environment has this name",
        ));
    }
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
