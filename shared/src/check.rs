//! The one check of a presented key, behind both authorizers, `POST /v1/verify` and the
//! API's own authentication: precedence and what counts as accepted are decided here once.
//!
//! In order: no key at all; a key that is not well formed (another deployment's prefix among
//! them); a key whose prefix names another
//! environment than the one asked for (refused before anything is read); a key no stored key
//! has the hash of; then the stored key's own state, environment, allowed networks and scopes
//! ([`check`](crate::domain::check)); and last a route that admits no key. Every check that
//! found a key is counted, as accepted only when the key is let through.

use crate::domain::{EnvName, Key, KeyPrefix, PresentedKey, Timestamp, Verdict, check};
use crate::store::{KeyLookup, StoreError};
use crate::usage::Counter;

/// What a key is checked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs<'a> {
    /// The one environment whose keys pass; `None` lets every environment's keys pass.
    pub environment: Option<&'a EnvName>,
    /// The address the request came from, as the platform saw it (never a header the caller
    /// writes); `None` when it is not known, which refuses a key that allows some networks only.
    pub source: Option<std::net::IpAddr>,
    /// The scopes the key must hold, every one.
    pub scopes: &'a [&'a str],
    /// Whether the route admits no key at all: an authorizer's unlisted route when such
    /// routes are closed. A key that passes everything else is then refused, and counted so.
    pub closed: bool,
}

/// What one check came to: the typed outcome that callers answer with and metrics count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No key was presented.
    Missing,
    /// A key was presented, and this is what it is.
    Checked(Verdict),
    /// A key that passes everything else, on a route that admits none.
    RouteClosed,
}

impl Outcome {
    /// The outcome as the metrics name it: a `/v1/verify` code, `missing` or `unlisted_route`.
    pub fn code(self) -> &'static str {
        match self {
            Outcome::Missing => "missing",
            Outcome::Checked(verdict) => verdict.code(),
            Outcome::RouteClosed => "unlisted_route",
        }
    }

    /// Whether the key is let through.
    pub fn accepted(self) -> bool {
        self == Outcome::Checked(Verdict::Valid)
    }

    /// The outcome as `/v1/verify`, which always has a key and never a closed route, answers
    /// it: no key is a malformed one, and a closed route is a scope the key lacks.
    pub fn verdict(self) -> Verdict {
        match self {
            Outcome::Missing => Verdict::Malformed,
            Outcome::Checked(verdict) => verdict,
            Outcome::RouteClosed => Verdict::InsufficientScope,
        }
    }
}

/// A check's outcome, and the stored key when one was found.
#[derive(Debug, Clone)]
pub struct Checked {
    /// What it came to.
    pub outcome: Outcome,
    /// The key whose hash matched, whatever the outcome.
    pub key: Option<Key>,
}

/// Checks `token`, a key of the deployment whose keys start with `prefix`, for `needs` at
/// `now` with at most one read of `store`, and counts the check of a key that was found in
/// `usage`.
pub async fn check_presented(
    store: &dyn KeyLookup,
    usage: &dyn Counter,
    prefix: &KeyPrefix,
    token: Option<&str>,
    needs: Needs<'_>,
    now: Timestamp,
) -> Result<Checked, StoreError> {
    let refused = |verdict| Checked {
        outcome: Outcome::Checked(verdict),
        key: None,
    };
    let Some(token) = token else {
        return Ok(Checked {
            outcome: Outcome::Missing,
            key: None,
        });
    };
    let Ok(presented) = PresentedKey::parse(token, prefix) else {
        return Ok(refused(Verdict::Malformed));
    };
    if needs
        .environment
        .is_some_and(|env| presented.environment != *env)
    {
        return Ok(refused(Verdict::WrongEnvironment));
    }
    let Some(key) = store.key_by_hash(&presented.hash).await? else {
        return Ok(refused(Verdict::NotFound));
    };
    let outcome = match check(&key, needs.environment, needs.source, needs.scopes, now) {
        Verdict::Valid if needs.closed => Outcome::RouteClosed,
        verdict => Outcome::Checked(verdict),
    };
    usage.count(
        &key.environment,
        &key.id,
        outcome.accepted(),
        needs.source,
        now,
    );
    Ok(Checked {
        outcome,
        key: Some(key),
    })
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use std::net::IpAddr;
    use std::sync::Mutex;

    use super::*;
    use crate::domain::{Actor, KeyId, create_environment};
    use crate::testing::seeded;

    /// Every check counted, as (key, accepted, source).
    #[derive(Default)]
    struct Counted(Mutex<Vec<(KeyId, bool, Option<IpAddr>)>>);

    impl Counter for Counted {
        fn count(
            &self,
            _: &EnvName,
            key: &KeyId,
            accepted: bool,
            source: Option<IpAddr>,
            _: Timestamp,
        ) {
            self.0.lock().unwrap().push((key.clone(), accepted, source));
        }
    }

    #[tokio::test]
    async fn each_outcome_in_its_order_and_only_found_keys_are_counted() {
        let now = crate::now();
        let s = seeded("production", now).await;
        let staging = EnvName::parse("staging").unwrap();
        let secret = s.secret.expose();
        let never_stored = create_environment(&staging, Actor::operator("test"), &s.mint, now);
        let unknown = never_stored.secret.expose();
        let worker = s.worker_key(now).await;
        let orders_only = worker.secret.expose();
        let billing = Needs {
            scopes: &["billing:write"],
            ..Needs::default()
        };
        let in_staging = Needs {
            environment: Some(&staging),
            ..Needs::default()
        };
        let closed = Needs {
            closed: true,
            ..Needs::default()
        };
        let from: IpAddr = "203.0.113.9".parse().unwrap();
        let exacting = Needs {
            environment: Some(&s.environment),
            source: Some(from),
            scopes: &["orders:read", "billing:write"],
            closed: false,
        };
        let cases = [
            (None, Needs::default(), Outcome::Missing, false),
            (
                Some("kw_sk_x"),
                Needs::default(),
                Outcome::Checked(Verdict::Malformed),
                false,
            ),
            (
                Some(secret),
                in_staging,
                Outcome::Checked(Verdict::WrongEnvironment),
                false,
            ),
            (
                Some(unknown),
                Needs::default(),
                Outcome::Checked(Verdict::NotFound),
                false,
            ),
            (
                Some(secret),
                Needs::default(),
                Outcome::Checked(Verdict::Valid),
                true,
            ),
            (Some(secret), closed, Outcome::RouteClosed, true),
            (
                Some(secret),
                exacting,
                Outcome::Checked(Verdict::Valid),
                true,
            ),
            (
                Some(orders_only),
                billing,
                Outcome::Checked(Verdict::InsufficientScope),
                true,
            ),
        ];
        let counted = Counted::default();
        for (token, needs, expected, found) in cases {
            let checked =
                check_presented(&s.store, &counted, &KeyPrefix::default(), token, needs, now)
                    .await
                    .unwrap();
            assert_eq!(checked.outcome, expected, "{token:?}");
            assert_eq!(checked.key.is_some(), found, "{token:?}");
        }
        // Another deployment, whose keys start with its own prefix, finds nothing in this
        // key and counts nothing.
        let acme = KeyPrefix::parse("acme").unwrap();
        let checked = check_presented(
            &s.store,
            &counted,
            &acme,
            Some(secret),
            Needs::default(),
            now,
        )
        .await
        .unwrap();
        assert_eq!(checked.outcome, Outcome::Checked(Verdict::Malformed));
        assert!(checked.key.is_none());
        let (id, worker) = (&s.key.id, &worker.key.id);
        assert_eq!(
            *counted.0.lock().unwrap(),
            [
                (id.clone(), true, None),
                (id.clone(), false, None),
                (id.clone(), true, Some(from)),
                (worker.clone(), false, None)
            ],
            "a key found is counted, accepted only when it passes, with the address it came from"
        );
    }
}
