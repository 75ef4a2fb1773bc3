//! The verdict on a stored key: its state, environment and scopes. `keyward::check` applies
//! it in the one check of a presented key, behind `/v1/verify`, the API's own authentication
//! and the authorizer.

use std::net::IpAddr;

use super::Timestamp;
use super::key::{Key, LeakPolicy, Status};
use super::names::EnvName;

/// The outcome of checking a presented key; `code()` is what `/v1/verify` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The key may be used.
    Valid,
    /// The key passed the format check but no key has its hash.
    NotFound,
    /// The key failed the format or checksum check.
    Malformed,
    /// The key is past its expiry.
    Expired,
    /// The key was revoked.
    Revoked,
    /// The key belongs to another environment.
    WrongEnvironment,
    /// The key lacks a scope that was asked for.
    InsufficientScope,
    /// The key is accepted only from networks that do not hold the request's address.
    IpNotAllowed,
    /// The key is accepted only from some networks, and the request's address is not known.
    IpRequired,
}

impl Verdict {
    /// The verdict as `/v1/verify` spells it.
    pub fn code(self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::NotFound => "not_found",
            Verdict::Malformed => "malformed",
            Verdict::Expired => "expired",
            Verdict::Revoked => "revoked",
            Verdict::WrongEnvironment => "wrong_environment",
            Verdict::InsufficientScope => "insufficient_scope",
            Verdict::IpNotAllowed => "ip_not_allowed",
            Verdict::IpRequired => "ip_required",
        }
    }
}

/// Checks a stored key against where and how it is being used: revoked and expired keys fail
/// whatever else holds, and so does a key reported leaked (unless its environment's leak
/// policy was `notify`), as revoked, from the write that records the leak on, before its
/// revocation or rotation is written (which a crash or a failed write could leave undone);
/// then the environment, if one is named; then the request's address
/// (`source`, `None` when it is not known) against the key's allowed networks; then every
/// required scope.
pub fn check<S: AsRef<str>>(
    key: &Key,
    environment: Option<&EnvName>,
    source: Option<IpAddr>,
    required: &[S],
    now: Timestamp,
) -> Verdict {
    match key.status(now) {
        Status::Revoked => Verdict::Revoked,
        Status::Expired => Verdict::Expired,
        Status::Active | Status::InGrace
            if key.leaked_at.is_some() && key.leak_policy != Some(LeakPolicy::Notify) =>
        {
            Verdict::Revoked
        }
        Status::Active | Status::InGrace => {
            if environment.is_some_and(|env| *env != key.environment) {
                Verdict::WrongEnvironment
            } else if !key.allowed_ips.is_empty() && source.is_none() {
                Verdict::IpRequired
            } else if source.is_some_and(|ip| !key.allowed_ips.allows(ip)) {
                Verdict::IpNotAllowed
            } else if !required.iter().all(|s| key.scopes.grants(s.as_ref())) {
                Verdict::InsufficientScope
            } else {
                Verdict::Valid
            }
        }
    }
}
