//! The lifecycle rules. Each operation decides the new records and the activity entry, and
//! returns them as a [`Change`] with its preconditions; a store applies the change atomically.

use super::Timestamp;
use super::activity::{ActivityEntry, Actor, Event};
use super::grace::GracePeriod;
use super::key::{Environment, Key, LeakPolicy, PendingDelivery, RotationPolicy, Status};
use super::mint::Mint;
use super::names::{EnvName, InputError, KeyId, KeyName, Kind, LeakDetails, Scopes};
use super::network::AllowedIps;
use super::token::Secret;

/// A key write, with the precondition the store must check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyWrite {
    /// A new key; no key with its id or hash may exist.
    Insert(Key),
    /// A changed key; the stored one must still be at `expected_version`.
    Update {
        /// The key as it is to be stored, at `expected_version + 1`.
        key: Key,
        /// The version that was read when the change was decided.
        expected_version: u64,
    },
}

/// An environment write, with the precondition the store must check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvironmentWrite {
    /// A new environment; none of that name may exist.
    Create(Environment),
    /// The default moves to the rotated key's successor; the default must still be `from`.
    MoveDefault {
        /// The environment.
        name: EnvName,
        /// The default key that was rotated.
        from: KeyId,
        /// Its successor.
        to: KeyId,
    },
    /// The environment's leak policy becomes `policy`; it must still be `previous`, and its
    /// default key, on which the change is recorded, still `default_key_id`.
    SetLeakPolicy {
        /// The environment.
        name: EnvName,
        /// Its default key, as read.
        default_key_id: KeyId,
        /// The policy that was read.
        previous: LeakPolicy,
        /// The policy to set.
        policy: LeakPolicy,
    },
}

/// A key's claim on the secret its rotation policy delivers to, so that no other key of the
/// environment can point its policy at that secret and overwrite it.
///
/// A store records one holder per `(environment, secret)`. It applies a claim only when
/// nobody holds the secret, or the holder is `holder` itself or a key this same change
/// writes (a rotation hands the claim to the successor), or the holder no longer delivers to
/// it ([`Key::delivers_to`]: revoked, expired, rotated, or its policy changed). Otherwise the
/// whole change is refused as claimed, and nothing is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretClaim {
    /// The environment of the key and the secret.
    pub environment: EnvName,
    /// The secret, as [`RotationPolicy::secret`] names it.
    pub secret: String,
    /// The key that delivers to it after the change.
    pub holder: KeyId,
}

impl SecretClaim {
    /// The claim of `key`'s policy, if it has one.
    fn of(key: &Key) -> Option<Self> {
        key.rotation_policy.as_ref().map(|policy| Self {
            environment: key.environment.clone(),
            secret: policy.secret().to_owned(),
            holder: key.id.clone(),
        })
    }
}

/// Everything one lifecycle operation writes: applied all together, or not at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The key records to write.
    pub keys: Vec<KeyWrite>,
    /// The environment record to write, if any.
    pub environment: Option<EnvironmentWrite>,
    /// The secret a key's policy claims by this change, if any.
    pub secret_claim: Option<SecretClaim>,
    /// The entry that records the change.
    pub activity: ActivityEntry,
}

impl Change {
    /// Whether the change writes the key `id`. A secret claimed by such a key passes to the
    /// change's own claim, since the change's preconditions hold that key where it was read.
    pub fn writes(&self, id: &KeyId) -> bool {
        self.written(id).is_some()
    }

    /// Whether the change may take its secret claim from `holder_id`, the key that holds the
    /// secret now, read as `holder` (`None` if no such key exists). It may when the change
    /// writes that key (a rotation hands the claim on). Otherwise it may not while that key
    /// still delivers to the secret, and once it stops (revoked, expired, rotated, its policy
    /// cleared or changed) only a key that holds every scope of it may take over, as a caller
    /// must to change that key itself: the services that read the secret may still use it.
    pub fn may_claim_from(&self, holder_id: &KeyId, holder: Option<&Key>) -> bool {
        let Some(claim) = &self.secret_claim else {
            return true;
        };
        if self.writes(holder_id) {
            return true;
        }
        let Some(holder) = holder else {
            return true;
        };
        if holder.delivers_to(&claim.secret, self.activity.at) {
            return false;
        }
        self.written(&claim.holder)
            .is_some_and(|claimant| claimant.controls(holder))
    }

    /// The key this change writes with id `id`, as it will be stored.
    fn written(&self, id: &KeyId) -> Option<&Key> {
        self.keys.iter().find_map(|write| match write {
            KeyWrite::Insert(key) | KeyWrite::Update { key, .. } if &key.id == id => Some(key),
            _ => None,
        })
    }
}

/// Why a lifecycle operation cannot be done on a key in its current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    /// Only an active key can be rotated.
    #[error("only an active key can be rotated; this key is {}", .0.as_str())]
    NotActive(Status),
    /// Only a key in its grace period can have its grace changed.
    #[error("only a key in its grace period can have its grace period changed; this key is {}", .0.as_str())]
    NotInGrace(Status),
    /// A revoked or expired key no longer changes.
    #[error("a revoked or expired key cannot be changed; this key is {}", .0.as_str())]
    Ended(Status),
    /// The default key must be rotated before it can be revoked, so the environment keeps a key.
    #[error("the environment's default key must be rotated before it can be revoked")]
    DefaultKeyMustBeRotated,
    /// A scheduled rotation needs the key's rotation policy.
    #[error("the key has no rotation policy")]
    NoRotationPolicy,
    /// The request itself breaks a rule.
    #[error(transparent)]
    Input(#[from] InputError),
}

/// What a caller asks for when creating a key, already parsed.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Its name.
    pub name: KeyName,
    /// Its kind.
    pub kind: Kind,
    /// Its scopes.
    pub scopes: Scopes,
    /// When it stops working, if ever.
    pub expires_at: Option<Timestamp>,
    /// How it rotates itself, if it does.
    pub rotation_policy: Option<RotationPolicy>,
    /// The networks it is accepted from; empty lets every address in.
    pub allowed_ips: AllowedIps,
}

/// A newly made key: the record, its secret to show once, and the change that stores it.
#[derive(Debug)]
pub struct Issued {
    /// The new key.
    pub key: Key,
    /// Its secret.
    pub secret: Secret,
    /// What to apply.
    pub change: Change,
}

/// The outcome of a rotation.
#[derive(Debug)]
pub struct Rotated {
    /// The successor, active at once.
    pub key: Key,
    /// The successor's secret.
    pub secret: Secret,
    /// The old key, now in grace (or expired, with a grace of `now`).
    pub previous: Key,
    /// What to apply.
    pub change: Change,
}

/// The outcome of a grace change.
#[derive(Debug)]
pub struct GraceChanged {
    /// The key with its new expiry.
    pub key: Key,
    /// What to apply.
    pub change: Change,
}

/// The outcome of a revocation.
#[derive(Debug)]
pub enum Revocation {
    /// The key is now revoked.
    Revoked {
        /// The revoked key.
        key: Key,
        /// What to apply.
        change: Box<Change>,
    },
    /// The key was already revoked or expired: nothing changes and nothing is recorded.
    Unchanged(Key),
}

struct Draft<'a> {
    environment: &'a EnvName,
    name: KeyName,
    kind: Kind,
    scopes: Scopes,
    default: bool,
    expires_at: Option<Timestamp>,
    rotation_policy: Option<RotationPolicy>,
    allowed_ips: AllowedIps,
    rotated_from: Option<KeyId>,
}

impl Draft<'_> {
    fn issue(self, mint: &Mint, now: Timestamp) -> (Key, Secret) {
        let secret = Secret::generate(mint, self.kind, self.environment);
        let key = Key {
            id: KeyId::generate(mint, now),
            environment: self.environment.clone(),
            name: self.name,
            kind: self.kind,
            scopes: self.scopes,
            default: self.default,
            hash: secret.hash(),
            hint: secret.hint(),
            created_at: now,
            expires_at: self.expires_at,
            revoked_at: None,
            rotated_from: self.rotated_from,
            rotated_to: None,
            expiry_limit: None,
            rotation_policy: self.rotation_policy,
            allowed_ips: self.allowed_ips,
            expiry_notice: None,
            pending_delivery: None,
            delivery_failures: None,
            rotated_at: None,
            grace_idle_at: None,
            leaked_at: None,
            leak_policy: None,
            version: 1,
        };
        (key, secret)
    }
}

fn created(key: &Key, actor: Actor, mint: &Mint, now: Timestamp) -> ActivityEntry {
    let event = Event::Created {
        name: key.name.clone(),
        kind: key.kind,
        scopes: key.scopes.clone(),
        expires_at: key.expires_at,
        allowed_ips: key.allowed_ips.clone(),
    };
    ActivityEntry::new(mint, &key.environment, &key.id, actor, event, now)
}

/// The next version of `key`, and the write that stores it if nobody changed it meanwhile.
pub(super) fn update(key: Key) -> (Key, KeyWrite) {
    let expected_version = key.version;
    let key = Key {
        version: expected_version + 1,
        ..key
    };
    (
        key.clone(),
        KeyWrite::Update {
            key,
            expected_version,
        },
    )
}

/// The change that writes one existing key (`write`, from [`update`]) and records `event` on
/// it: what every operation on a single key applies.
pub(super) fn key_change(
    key: &Key,
    write: KeyWrite,
    actor: Actor,
    event: Event,
    mint: &Mint,
    now: Timestamp,
) -> Change {
    Change {
        keys: vec![write],
        environment: None,
        secret_claim: None,
        activity: ActivityEntry::new(mint, &key.environment, &key.id, actor, event, now),
    }
}

/// The expiry a grace gives at `now`, never past `limit`.
fn grace_expiry(grace: GracePeriod, limit: Option<Timestamp>, now: Timestamp) -> Timestamp {
    let wanted = now + grace.duration();
    limit.map_or(wanted, |limit| wanted.min(limit))
}

/// Makes a new active key in `environment`.
pub fn create_key(
    environment: &EnvName,
    input: NewKey,
    actor: Actor,
    mint: &Mint,
    now: Timestamp,
) -> Result<Issued, LifecycleError> {
    if input.kind == Kind::Publishable
        && let Some(scope) = input.scopes.first_management()
    {
        return Err(InputError::ScopeNotAllowed(scope.as_str().to_owned()).into());
    }
    if input.expires_at.is_some_and(|at| at <= now) {
        return Err(InputError::ExpiresAtNotInFuture.into());
    }
    let (key, secret) = Draft {
        environment,
        name: input.name,
        kind: input.kind,
        scopes: input.scopes,
        default: false,
        expires_at: input.expires_at,
        rotation_policy: input.rotation_policy,
        allowed_ips: input.allowed_ips,
        rotated_from: None,
    }
    .issue(mint, now);
    let change = Change {
        keys: vec![KeyWrite::Insert(key.clone())],
        environment: None,
        secret_claim: SecretClaim::of(&key),
        activity: created(&key, actor, mint, now),
    };
    Ok(Issued {
        key,
        secret,
        change,
    })
}

/// Makes an environment with its default key: a secret key with full access.
pub fn create_environment(name: &EnvName, actor: Actor, mint: &Mint, now: Timestamp) -> Issued {
    let (key, secret) = Draft {
        environment: name,
        name: KeyName::parse("default").expect("a valid literal name"),
        kind: Kind::Secret,
        scopes: Scopes::all(),
        default: true,
        expires_at: None,
        rotation_policy: None,
        allowed_ips: AllowedIps::default(),
        rotated_from: None,
    }
    .issue(mint, now);
    let environment = Environment {
        name: name.clone(),
        default_key_id: key.id.clone(),
        created_at: now,
        leak_policy: LeakPolicy::default(),
    };
    let change = Change {
        keys: vec![KeyWrite::Insert(key.clone())],
        environment: Some(EnvironmentWrite::Create(environment)),
        secret_claim: None,
        activity: created(&key, actor, mint, now),
    };
    Issued {
        key,
        secret,
        change,
    }
}

/// Replaces an active key with a new one; the old key stays valid for `grace`, but never
/// past an expiry it already had. The default flag moves to the successor. A key with a
/// rotation policy hands its successor a pending delivery to the policy's secret, whoever
/// rotates it: the services that read that secret must get the new key before the old one
/// dies, so the caller delivers it (see `delivery`). Its grace is at least an hour, as its
/// policy's is, or `now` for a leaked key.
pub fn rotate(
    old: &Key,
    grace: GracePeriod,
    actor: Actor,
    mint: &Mint,
    now: Timestamp,
) -> Result<Rotated, LifecycleError> {
    let status = old.status(now);
    if status != Status::Active {
        return Err(LifecycleError::NotActive(status));
    }
    let short = grace.seconds() > 0 && grace.seconds() < RotationPolicy::MIN_GRACE_SECONDS;
    if old.rotation_policy.is_some() && short {
        return Err(InputError::InvalidGracePeriod(
            "a key with a rotation policy rotates with a grace of at least 1h, since services that read its secret cache it for up to an hour; or with now, for a leaked key".to_owned(),
        )
        .into());
    }
    let (key, secret) = Draft {
        environment: &old.environment,
        name: old.name.clone(),
        kind: old.kind,
        scopes: old.scopes.clone(),
        default: old.default,
        expires_at: None,
        rotation_policy: old.rotation_policy.clone(),
        allowed_ips: old.allowed_ips.clone(),
        rotated_from: Some(old.id.clone()),
    }
    .issue(mint, now);
    let key = Key {
        pending_delivery: old.rotation_policy.as_ref().map(|policy| PendingDelivery {
            secret_id: policy.secret_id.clone(),
            version_id: PendingDelivery::version_id_for(&key.id),
        }),
        ..key
    };
    let expires_at = grace_expiry(grace, old.expires_at, now);
    let (previous, write) = update(Key {
        rotated_to: Some(key.id.clone()),
        rotated_at: Some(now),
        expires_at: Some(expires_at),
        expiry_limit: old.expires_at,
        default: false,
        delivery_failures: None,
        ..old.clone()
    });
    let event = Event::Rotated {
        new_key_id: key.id.clone(),
        grace_period: grace,
        previous_expires_at: old.expires_at,
        expires_at,
    };
    let change = Change {
        keys: vec![KeyWrite::Insert(key.clone()), write],
        environment: old.default.then(|| EnvironmentWrite::MoveDefault {
            name: old.environment.clone(),
            from: old.id.clone(),
            to: key.id.clone(),
        }),
        secret_claim: SecretClaim::of(&key),
        activity: ActivityEntry::new(mint, &old.environment, &old.id, actor, event, now),
    };
    Ok(Rotated {
        key,
        secret,
        previous,
        change,
    })
}

/// Sets a rotated key's expiry to `now + grace`, shorter or longer than before, but never
/// past the expiry the key had before it was rotated.
pub fn change_grace_period(
    key: &Key,
    grace: GracePeriod,
    actor: Actor,
    mint: &Mint,
    now: Timestamp,
) -> Result<GraceChanged, LifecycleError> {
    let status = key.status(now);
    if status != Status::InGrace {
        return Err(LifecycleError::NotInGrace(status));
    }
    let expires_at = grace_expiry(grace, key.expiry_limit, now);
    let event = Event::GracePeriodChanged {
        grace_period: grace,
        previous_expires_at: key.expires_at,
        expires_at,
    };
    let (changed, write) = update(Key {
        expires_at: Some(expires_at),
        ..key.clone()
    });
    let change = key_change(key, write, actor, event, mint, now);
    Ok(GraceChanged {
        key: changed,
        change,
    })
}

/// Revokes a key at once. A key that is already revoked or expired is left as it is.
pub fn revoke(
    key: &Key,
    actor: Actor,
    mint: &Mint,
    now: Timestamp,
) -> Result<Revocation, LifecycleError> {
    match key.status(now) {
        Status::Revoked | Status::Expired => return Ok(Revocation::Unchanged(key.clone())),
        Status::Active | Status::InGrace => {}
    }
    if key.default {
        return Err(LifecycleError::DefaultKeyMustBeRotated);
    }
    let (revoked, write) = update(Key {
        revoked_at: Some(now),
        expires_at: Some(now),
        ..key.clone()
    });
    let event = Event::Revoked { revoked_at: now };
    let change = key_change(key, write, actor, event, mint, now);
    Ok(Revocation::Revoked {
        key: revoked,
        change: Box::new(change),
    })
}

/// Who reported a leak: the `system` actor of the entries that the report makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeakSource {
    /// Anyone holding the secret, through `POST /v1/leaks/report`.
    Report,
    /// GitHub's secret scanning, through `POST /v1/leaks/github`.
    Github,
    /// Self-managed GitLab's secret detection, through `POST /v1/leaks/gitlab/revoke_tokens`.
    Gitlab,
}

impl LeakSource {
    /// The id its entries' actor has.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Report => "report",
            Self::Github => "github",
            Self::Gitlab => "gitlab",
        }
    }
}

/// The next step of a key's answer to a report that its secret leaked. A report takes the
/// steps one at a time, each applied before the next is decided, until none is left; a step
/// decided on a key that changed meanwhile is decided again on the key as it is now.
#[derive(Debug)]
pub enum LeakStep {
    /// The key is revoked or expired already: there is nothing to do and nothing is recorded,
    /// which makes a report of the same secret again change nothing.
    Ended,
    /// The leak is recorded (`key.leaked`) and marks the key; its revocation follows.
    Record {
        /// The key, marked leaked.
        key: Key,
        /// What to apply.
        change: Box<Change>,
    },
    /// The key, whose leak is recorded, is revoked.
    Revoke {
        /// The revoked key.
        key: Key,
        /// What to apply.
        change: Box<Change>,
    },
    /// The key, whose leak is recorded, is rotated with a grace of `now` (by the policy
    /// `rotate`, if its rotation policy delivers the successor, or as its environment's
    /// default key, which cannot be revoked).
    Rotate(Box<Rotated>),
}

/// The next step of a secret key's answer to a report that its secret leaked, under its
/// environment's `policy`, each recorded with `actor` (keyward itself, named by where the
/// report came from). A publishable key is never reported: it is meant to be public, and the
/// caller leaves it alone by its format.
pub fn leak_step(
    key: &Key,
    policy: LeakPolicy,
    actor: &Actor,
    details: &LeakDetails,
    mint: &Mint,
    now: Timestamp,
) -> Result<LeakStep, LifecycleError> {
    let actor = actor.clone();
    let status = key.status(now);
    if matches!(status, Status::Revoked | Status::Expired) {
        return Ok(LeakStep::Ended);
    }
    // A leak recorded under `notify` and reported again under a stricter policy is recorded
    // again, under that policy, before anything else: from that write on every check refuses
    // the key, whatever becomes of the step that ends it.
    let escalates = key.leak_policy == Some(LeakPolicy::Notify) && policy != LeakPolicy::Notify;
    if key.leaked_at.is_none() || escalates {
        let (marked, write) = update(Key {
            leaked_at: Some(now),
            leak_policy: Some(policy),
            ..key.clone()
        });
        let event = Event::Leaked {
            details: details.clone(),
            leak_policy: policy,
        };
        let change = key_change(key, write, actor, event, mint, now);
        return Ok(LeakStep::Record {
            key: marked,
            change: Box::new(change),
        });
    }
    // A leak recorded under a policy that ends the key is ended, even if the environment's
    // policy became `notify` meanwhile: every check already refuses it.
    let recorded = key.leak_policy.unwrap_or_default();
    let effective = if policy == LeakPolicy::Notify {
        recorded
    } else {
        policy
    };
    // A key rotates when its successor can be used: one that its rotation policy delivers,
    // or the environment's default key, which cannot be revoked.
    let rotates = key.default
        || (effective == LeakPolicy::Rotate
            && status == Status::Active
            && key.rotation_policy.is_some());
    match effective {
        LeakPolicy::Notify => Ok(LeakStep::Ended),
        LeakPolicy::Revoke | LeakPolicy::Rotate if rotates => {
            let rotated = rotate(key, GracePeriod::NOW, actor, mint, now)?;
            Ok(LeakStep::Rotate(Box::new(rotated)))
        }
        LeakPolicy::Revoke | LeakPolicy::Rotate => Ok(match revoke(key, actor, mint, now)? {
            Revocation::Revoked { key, change } => LeakStep::Revoke { key, change },
            Revocation::Unchanged(_) => LeakStep::Ended,
        }),
    }
}

/// Sets what a leak of an environment's keys does. The change is recorded on the
/// environment's default key, its root, as `environment.leak_policy_changed`, so that it
/// shows in the environment's activity with who made it; setting the policy it has records
/// nothing.
pub fn set_leak_policy(
    environment: &Environment,
    policy: LeakPolicy,
    actor: Actor,
    mint: &Mint,
    now: Timestamp,
) -> Option<Change> {
    if environment.leak_policy == policy {
        return None;
    }
    let event = Event::LeakPolicyChanged {
        previous: environment.leak_policy,
        leak_policy: policy,
    };
    Some(Change {
        keys: Vec::new(),
        environment: Some(EnvironmentWrite::SetLeakPolicy {
            name: environment.name.clone(),
            default_key_id: environment.default_key_id.clone(),
            previous: environment.leak_policy,
            policy,
        }),
        secret_claim: None,
        activity: ActivityEntry::new(
            mint,
            &environment.name,
            &environment.default_key_id,
            actor,
            event,
            now,
        ),
    })
}

/// The outcome of setting one of a key's settings: its rotation policy or its networks.
#[derive(Debug)]
pub enum Setting {
    /// The setting changed.
    Changed {
        /// The key with its new setting.
        key: Key,
        /// What to apply.
        change: Box<Change>,
    },
    /// The key already had this setting: nothing changes and nothing is recorded.
    Unchanged(Key),
}

/// Sets or clears the rotation policy of an active key. Its next scheduled rotation is the new
/// policy's interval after the key was made, so a policy that is already overdue rotates the
/// key at the next scheduled run. Failed deliveries to the old policy's secret are forgotten,
/// so that a corrected policy is tried at once.
pub fn set_rotation_policy(
    key: &Key,
    policy: Option<RotationPolicy>,
    actor: Actor,
    mint: &Mint,
    now: Timestamp,
) -> Result<Setting, LifecycleError> {
    let status = key.status(now);
    if status != Status::Active {
        return Err(LifecycleError::NotActive(status));
    }
    if key.rotation_policy == policy {
        return Ok(Setting::Unchanged(key.clone()));
    }
    let event = Event::RotationPolicyChanged {
        previous: key.rotation_policy.clone(),
        rotation_policy: policy.clone(),
    };
    let (changed, write) = update(Key {
        rotation_policy: policy,
        delivery_failures: None,
        ..key.clone()
    });
    let change = Change {
        secret_claim: SecretClaim::of(&changed),
        ..key_change(key, write, actor, event, mint, now)
    };
    Ok(Setting::Changed {
        key: changed,
        change: Box::new(change),
    })
}

/// Replaces the networks a key is accepted from; an empty list lets every address in. A key
/// in its grace can be held too (a leaked key that services still use can be pinned to
/// them), but a revoked or expired key no longer changes. Its successors keep their own
/// lists: a rotation copied the list as it was.
pub fn set_allowed_ips(
    key: &Key,
    allowed_ips: AllowedIps,
    actor: Actor,
    mint: &Mint,
    now: Timestamp,
) -> Result<Setting, LifecycleError> {
    let status = key.status(now);
    if !matches!(status, Status::Active | Status::InGrace) {
        return Err(LifecycleError::Ended(status));
    }
    if key.allowed_ips.same_ranges(&allowed_ips) {
        return Ok(Setting::Unchanged(key.clone()));
    }
    let event = Event::AllowedIpsChanged {
        previous: key.allowed_ips.clone(),
        allowed_ips: allowed_ips.clone(),
    };
    let (changed, write) = update(Key {
        allowed_ips,
        ..key.clone()
    });
    let change = key_change(key, write, actor, event, mint, now);
    Ok(Setting::Changed {
        key: changed,
        change: Box::new(change),
    })
}

#[cfg(test)]
mod tests {
    use crate::mint::test_mint;
    use chrono::{TimeDelta, TimeZone, Utc};

    use super::*;
    use crate::{Action, Scope, Verdict, check};

    fn t0() -> Timestamp {
        Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
    }

    fn env() -> EnvName {
        EnvName::parse("production").unwrap()
    }

    fn operator() -> Actor {
        Actor::operator("alice")
    }

    fn new_key(kind: Kind, scopes: &[&str], expires_at: Option<Timestamp>) -> NewKey {
        NewKey {
            name: KeyName::parse("billing").unwrap(),
            kind,
            scopes: Scopes::parse(scopes).unwrap(),
            expires_at,
            rotation_policy: None,
            allowed_ips: Default::default(),
        }
    }

    fn active_key() -> Key {
        create_key(
            &env(),
            new_key(Kind::Secret, &["orders:read"], None),
            operator(),
            test_mint(),
            t0(),
        )
        .unwrap()
        .key
    }

    fn grace(s: &str) -> GracePeriod {
        GracePeriod::parse(s).unwrap()
    }

    #[test]
    fn create_makes_an_active_key_whose_secret_matches_its_hash() {
        let issued = create_key(
            &env(),
            new_key(Kind::Secret, &["orders:read"], None),
            operator(),
            test_mint(),
            t0(),
        )
        .unwrap();
        assert_eq!(issued.key.status(t0()), Status::Active);
        assert_eq!(issued.secret.hash(), issued.key.hash);
        assert!(!issued.key.default);
        assert_eq!(
            issued.change.keys,
            vec![KeyWrite::Insert(issued.key.clone())]
        );
        assert_eq!(issued.change.activity.event.action(), Action::Created);
        assert_eq!(issued.change.activity.actor, operator());
    }

    #[test]
    fn publishable_keys_carry_only_custom_scopes() {
        for scope in ["*", "keys:read", "keys:write", "activity:read"] {
            let err = create_key(
                &env(),
                new_key(Kind::Publishable, &["orders:read", scope], None),
                operator(),
                test_mint(),
                t0(),
            )
            .unwrap_err();
            assert_eq!(
                err,
                LifecycleError::Input(InputError::ScopeNotAllowed(scope.to_owned()))
            );
        }
        assert!(
            create_key(
                &env(),
                new_key(Kind::Publishable, &["orders:read"], None),
                operator(),
                test_mint(),
                t0()
            )
            .is_ok()
        );
    }

    #[test]
    fn create_refuses_an_expiry_that_is_not_in_the_future() {
        for at in [t0(), t0() - TimeDelta::seconds(1)] {
            let err = create_key(
                &env(),
                new_key(Kind::Secret, &[], Some(at)),
                operator(),
                test_mint(),
                t0(),
            )
            .unwrap_err();
            assert_eq!(err, LifecycleError::Input(InputError::ExpiresAtNotInFuture));
        }
    }

    #[test]
    fn status_is_derived_from_the_record_and_the_time() {
        let key = active_key();
        assert_eq!(key.status(t0()), Status::Active);
        let expiring = Key {
            expires_at: Some(t0() + TimeDelta::hours(1)),
            ..key.clone()
        };
        assert_eq!(expiring.status(t0()), Status::Active);
        assert_eq!(expiring.status(t0() + TimeDelta::hours(1)), Status::Expired);
        let rotated = rotate(&key, grace("1h"), operator(), test_mint(), t0())
            .unwrap()
            .previous;
        assert_eq!(rotated.status(t0()), Status::InGrace);
        assert_eq!(
            rotated.status(t0() + TimeDelta::minutes(59)),
            Status::InGrace
        );
        assert_eq!(rotated.status(t0() + TimeDelta::hours(1)), Status::Expired);
        let revoked = Key {
            revoked_at: Some(t0()),
            expires_at: Some(t0()),
            ..key
        };
        assert_eq!(revoked.status(t0() - TimeDelta::hours(1)), Status::Revoked);
    }

    #[test]
    fn rotation_copies_the_key_and_gives_the_old_one_its_grace() {
        let old = Key {
            rotation_policy: Some(RotationPolicy {
                every: crate::RotationInterval::parse("P90D").unwrap(),
                grace_period: grace("24h"),
                secret_id: "keyward/billing".into(),
            }),
            ..active_key()
        };
        for (preset, secs) in [
            ("now", 0),
            ("1h", 3600),
            ("24h", 86_400),
            ("3d", 259_200),
            ("7d", 604_800),
        ] {
            let r = rotate(&old, grace(preset), operator(), test_mint(), t0()).unwrap();
            assert_eq!(r.key.name, old.name);
            assert_eq!(r.key.kind, old.kind);
            assert_eq!(r.key.scopes, old.scopes);
            assert_eq!(r.key.environment, old.environment);
            assert_eq!(r.key.rotation_policy, old.rotation_policy);
            assert_eq!(r.key.rotated_from.as_ref(), Some(&old.id));
            assert_eq!(r.key.status(t0()), Status::Active);
            assert_ne!(r.key.hash, old.hash);
            assert_eq!(r.previous.rotated_to.as_ref(), Some(&r.key.id));
            assert_eq!(r.previous.expires_at, Some(t0() + TimeDelta::seconds(secs)));
            let expected_status = if secs == 0 {
                Status::Expired
            } else {
                Status::InGrace
            };
            assert_eq!(r.previous.status(t0()), expected_status, "{preset}");
            assert_eq!(
                r.change.keys,
                vec![
                    KeyWrite::Insert(r.key.clone()),
                    KeyWrite::Update {
                        key: r.previous.clone(),
                        expected_version: old.version
                    }
                ]
            );
            assert_eq!(r.previous.version, old.version + 1);
            let Event::Rotated {
                new_key_id,
                expires_at,
                previous_expires_at,
                grace_period,
            } = &r.change.activity.event
            else {
                panic!("not a rotation entry: {:?}", r.change.activity)
            };
            assert_eq!(
                (new_key_id, *expires_at, *previous_expires_at, *grace_period),
                (
                    &r.key.id,
                    t0() + TimeDelta::seconds(secs),
                    None,
                    grace(preset)
                )
            );
            assert_eq!(r.change.activity.key_id, old.id);
            assert_eq!(r.change.activity.related_key_id(), Some(&r.key.id));
        }
    }

    #[test]
    fn grace_never_runs_past_an_expiry_the_key_already_had() {
        let limit = t0() + TimeDelta::hours(2);
        let old = Key {
            expires_at: Some(limit),
            ..active_key()
        };
        let r = rotate(&old, grace("24h"), operator(), test_mint(), t0()).unwrap();
        assert_eq!(r.previous.expires_at, Some(limit));
        assert_eq!(
            rotate(&old, grace("1h"), operator(), test_mint(), t0())
                .unwrap()
                .previous
                .expires_at,
            Some(t0() + TimeDelta::hours(1))
        );
        let extended = change_grace_period(
            &r.previous,
            grace("7d"),
            operator(),
            test_mint(),
            t0() + TimeDelta::minutes(1),
        )
        .unwrap();
        assert_eq!(extended.key.expires_at, Some(limit));
    }

    #[test]
    fn only_active_keys_rotate() {
        let r = rotate(&active_key(), grace("1h"), operator(), test_mint(), t0()).unwrap();
        assert_eq!(
            rotate(&r.previous, grace("1h"), operator(), test_mint(), t0()).unwrap_err(),
            LifecycleError::NotActive(Status::InGrace)
        );
        let later = t0() + TimeDelta::hours(2);
        assert_eq!(
            rotate(&r.previous, grace("1h"), operator(), test_mint(), later).unwrap_err(),
            LifecycleError::NotActive(Status::Expired)
        );
        let Revocation::Revoked { key: revoked, .. } =
            revoke(&r.key, operator(), test_mint(), t0()).unwrap()
        else {
            panic!("not revoked")
        };
        assert_eq!(
            rotate(&revoked, grace("1h"), operator(), test_mint(), t0()).unwrap_err(),
            LifecycleError::NotActive(Status::Revoked)
        );
    }

    #[test]
    fn rotating_the_default_key_moves_the_default_to_the_successor() {
        let issued = create_environment(&env(), operator(), test_mint(), t0());
        assert!(issued.key.default);
        assert_eq!(issued.key.scopes, Scopes::all());
        assert!(
            matches!(issued.change.environment, Some(EnvironmentWrite::Create(ref e)) if e.default_key_id == issued.key.id)
        );
        let r = rotate(&issued.key, grace("24h"), operator(), test_mint(), t0()).unwrap();
        assert!(r.key.default);
        assert!(!r.previous.default);
        assert_eq!(
            r.change.environment,
            Some(EnvironmentWrite::MoveDefault {
                name: env(),
                from: issued.key.id.clone(),
                to: r.key.id.clone()
            })
        );
        assert!(
            rotate(&active_key(), grace("1h"), operator(), test_mint(), t0())
                .unwrap()
                .change
                .environment
                .is_none()
        );
    }

    #[test]
    fn the_default_key_must_be_rotated_before_it_is_revoked() {
        let issued = create_environment(&env(), operator(), test_mint(), t0());
        assert_eq!(
            revoke(&issued.key, operator(), test_mint(), t0()).unwrap_err(),
            LifecycleError::DefaultKeyMustBeRotated
        );
        let r = rotate(&issued.key, grace("24h"), operator(), test_mint(), t0()).unwrap();
        assert!(matches!(
            revoke(&r.previous, operator(), test_mint(), t0()).unwrap(),
            Revocation::Revoked { .. }
        ));
        assert_eq!(
            revoke(&r.key, operator(), test_mint(), t0()).unwrap_err(),
            LifecycleError::DefaultKeyMustBeRotated
        );
    }

    #[test]
    fn grace_can_be_extended_or_cut_but_only_while_in_grace() {
        let r = rotate(&active_key(), grace("1h"), operator(), test_mint(), t0()).unwrap();
        let at = t0() + TimeDelta::minutes(30);
        let longer =
            change_grace_period(&r.previous, grace("7d"), operator(), test_mint(), at).unwrap();
        assert_eq!(longer.key.expires_at, Some(at + TimeDelta::days(7)));
        let Event::GracePeriodChanged {
            previous_expires_at,
            expires_at,
            ..
        } = longer.change.activity.event
        else {
            panic!()
        };
        assert_eq!(
            (previous_expires_at, expires_at),
            (Some(t0() + TimeDelta::hours(1)), at + TimeDelta::days(7))
        );
        let cut = change_grace_period(&longer.key, GracePeriod::NOW, operator(), test_mint(), at)
            .unwrap();
        assert_eq!(cut.key.status(at), Status::Expired);
        assert_eq!(
            change_grace_period(&cut.key, grace("1h"), operator(), test_mint(), at).unwrap_err(),
            LifecycleError::NotInGrace(Status::Expired)
        );
        assert_eq!(
            change_grace_period(&r.key, grace("1h"), operator(), test_mint(), at).unwrap_err(),
            LifecycleError::NotInGrace(Status::Active)
        );
        let Revocation::Revoked { key: revoked, .. } =
            revoke(&longer.key, operator(), test_mint(), at).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            change_grace_period(&revoked, grace("1h"), operator(), test_mint(), at).unwrap_err(),
            LifecycleError::NotInGrace(Status::Revoked)
        );
    }

    #[test]
    fn revocation_is_immediate_and_idempotent() {
        let key = active_key();
        let Revocation::Revoked {
            key: revoked,
            change,
        } = revoke(&key, operator(), test_mint(), t0()).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (revoked.revoked_at, revoked.expires_at),
            (Some(t0()), Some(t0()))
        );
        assert_eq!(revoked.status(t0()), Status::Revoked);
        assert_eq!(change.activity.event, Event::Revoked { revoked_at: t0() });
        assert!(
            matches!(revoke(&revoked, operator(), test_mint(), t0()).unwrap(), Revocation::Unchanged(k) if k == revoked)
        );
        let expired = Key {
            expires_at: Some(t0()),
            ..key.clone()
        };
        assert!(matches!(
            revoke(&expired, operator(), test_mint(), t0()).unwrap(),
            Revocation::Unchanged(_)
        ));
        let in_grace = rotate(&key, grace("1h"), operator(), test_mint(), t0())
            .unwrap()
            .previous;
        assert!(matches!(
            revoke(&in_grace, operator(), test_mint(), t0()).unwrap(),
            Revocation::Revoked { .. }
        ));
    }

    /// Applies each step of a leak report to `key` as a store would, under the policy
    /// `revoke`, and says which steps were taken and the key at the end.
    fn report_leak(key: Key) -> (Vec<&'static str>, Key) {
        report_leak_under(LeakPolicy::Revoke, key)
    }

    /// [`report_leak`] under `policy`.
    fn report_leak_under(policy: LeakPolicy, mut key: Key) -> (Vec<&'static str>, Key) {
        let details = LeakDetails::parse(Some("https://example.com/commit/1"), Some("commit"));
        let details = details.unwrap();
        let mut steps = Vec::new();
        loop {
            let reporter = Actor::system("report");
            match leak_step(&key, policy, &reporter, &details, test_mint(), t0()).unwrap() {
                LeakStep::Ended => return (steps, key),
                LeakStep::Record {
                    key: marked,
                    change,
                } => {
                    assert_eq!(change.activity.actor, Actor::system("report"));
                    assert_eq!(
                        change.activity.event,
                        Event::Leaked {
                            details: details.clone(),
                            leak_policy: policy,
                        }
                    );
                    assert_eq!(marked.leaked_at, Some(t0()));
                    steps.push("record");
                    key = marked;
                }
                LeakStep::Revoke {
                    key: revoked,
                    change,
                } => {
                    assert_eq!(change.activity.actor, Actor::system("report"));
                    assert_eq!(change.activity.event.action(), Action::Revoked);
                    steps.push("revoke");
                    key = revoked;
                }
                LeakStep::Rotate(rotated) => {
                    assert_eq!(rotated.change.activity.actor, Actor::system("report"));
                    assert_eq!(rotated.previous.expires_at, Some(t0()));
                    assert_eq!(rotated.key.default, key.default);
                    assert!(rotated.key.leaked_at.is_none());
                    steps.push("rotate");
                    key = rotated.previous;
                }
            }
        }
    }

    #[test]
    fn a_leaked_key_is_recorded_once_then_revoked_and_a_second_report_changes_nothing() {
        let (steps, key) = report_leak(active_key());
        assert_eq!(steps, ["record", "revoke"]);
        assert_eq!(key.status(t0()), Status::Revoked);
        assert_eq!(report_leak(key).0, Vec::<&str>::new());
        let marked = Key {
            leaked_at: Some(t0()),
            ..active_key()
        };
        assert_eq!(
            report_leak(marked).0,
            ["revoke"],
            "a report that stopped after recording finishes with the revocation alone"
        );
        let in_grace = rotate(&active_key(), grace("7d"), operator(), test_mint(), t0())
            .unwrap()
            .previous;
        let (steps, key) = report_leak(in_grace);
        assert_eq!(steps, ["record", "revoke"], "a grace is no shelter");
        assert_eq!(key.status(t0()), Status::Revoked);
    }

    #[test]
    fn a_key_whose_leak_is_recorded_fails_every_check_before_it_is_revoked() {
        let details = LeakDetails::default();
        for key in [
            active_key(),
            create_environment(&env(), operator(), test_mint(), t0()).key,
        ] {
            let scope = ["orders:read"];
            let needs: &[&str] = if key.default { &[] } else { &scope };
            assert_eq!(check(&key, None, None, needs, t0()), Verdict::Valid);
            let reporter = Actor::system("report");
            let LeakStep::Record { key: marked, .. } = leak_step(
                &key,
                LeakPolicy::Revoke,
                &reporter,
                &details,
                test_mint(),
                t0(),
            )
            .unwrap() else {
                panic!("a live key's leak is recorded first")
            };
            assert_eq!(
                marked.status(t0()),
                key.status(t0()),
                "its revocation is still to come"
            );
            assert_eq!(check(&marked, None, None, needs, t0()), Verdict::Revoked);
        }
    }

    #[test]
    fn the_environments_leak_policy_decides_what_a_leak_does() {
        let policy = RotationPolicy::from_json(&serde_json::json!({"every": "P30D", "grace_period": "24h", "secret_id": "keyward/production/billing"})).unwrap();
        let delivered = Key {
            rotation_policy: Some(policy),
            ..active_key()
        };
        let (steps, key) = report_leak_under(LeakPolicy::Rotate, delivered);
        assert_eq!(steps, ["record", "rotate"], "rotated with no grace");
        assert_eq!(key.status(t0()), Status::Expired);
        let (steps, _) = report_leak_under(LeakPolicy::Rotate, active_key());
        assert_eq!(
            steps,
            ["record", "revoke"],
            "a successor nobody would get is not made"
        );
        let in_grace = rotate(&active_key(), grace("7d"), operator(), test_mint(), t0())
            .unwrap()
            .previous;
        let (steps, _) = report_leak_under(LeakPolicy::Rotate, in_grace);
        assert_eq!(
            steps,
            ["record", "revoke"],
            "a key in its grace has its successor already"
        );
        let (steps, key) = report_leak_under(LeakPolicy::Notify, active_key());
        assert_eq!(steps, ["record"], "only the entry");
        assert_eq!(key.status(t0()), Status::Active);
        assert_eq!(key.leak_policy, Some(LeakPolicy::Notify));
        assert_eq!(
            check(&key, None, None, &["orders:read"], t0()),
            Verdict::Valid,
            "a key whose leak only notifies keeps working"
        );
        let (steps, key) = report_leak_under(LeakPolicy::Revoke, key);
        assert_eq!(
            steps,
            ["record", "revoke"],
            "reported again under a stricter policy, recorded again, under it, then ended"
        );
        assert_eq!(key.status(t0()), Status::Revoked);
        assert_eq!(key.leak_policy, Some(LeakPolicy::Revoke));
        let marked = Key {
            leaked_at: Some(t0()),
            leak_policy: Some(LeakPolicy::Revoke),
            ..active_key()
        };
        let (steps, _) = report_leak_under(LeakPolicy::Notify, marked);
        assert_eq!(
            steps,
            ["revoke"],
            "a leak recorded to end the key ends it, though the policy became notify"
        );
    }

    #[test]
    fn a_leak_policy_change_is_recorded_on_the_default_key_and_a_same_one_records_nothing() {
        let issued = create_environment(&env(), operator(), test_mint(), t0());
        let Some(EnvironmentWrite::Create(environment)) = issued.change.environment else {
            panic!("the environment is made")
        };
        assert_eq!(environment.leak_policy, LeakPolicy::Revoke);
        assert!(
            set_leak_policy(
                &environment,
                LeakPolicy::Revoke,
                operator(),
                test_mint(),
                t0()
            )
            .is_none()
        );
        let change = set_leak_policy(
            &environment,
            LeakPolicy::Notify,
            operator(),
            test_mint(),
            t0(),
        )
        .unwrap();
        assert!(change.keys.is_empty());
        assert_eq!(change.activity.key_id, issued.key.id);
        assert_eq!(
            change.activity.event,
            Event::LeakPolicyChanged {
                previous: LeakPolicy::Revoke,
                leak_policy: LeakPolicy::Notify
            }
        );
        assert_eq!(
            change.environment,
            Some(EnvironmentWrite::SetLeakPolicy {
                name: env(),
                default_key_id: issued.key.id.clone(),
                previous: LeakPolicy::Revoke,
                policy: LeakPolicy::Notify
            })
        );
        assert_eq!(LeakPolicy::parse("notify"), Some(LeakPolicy::Notify));
        assert_eq!(LeakPolicy::parse("Notify"), None);
    }

    #[test]
    fn a_leaked_default_key_is_rotated_with_no_grace() {
        let issued = create_environment(&env(), operator(), test_mint(), t0());
        let (steps, key) = report_leak(issued.key);
        assert_eq!(steps, ["record", "rotate"]);
        assert_eq!(key.status(t0()), Status::Expired);
    }

    #[test]
    fn a_report_cannot_write_a_secret_or_hidden_text_into_the_log() {
        assert!(LeakDetails::parse(None, None).is_ok());
        let kept = LeakDetails::parse(
            Some("HTTPS://github.com/acme/app/blob/0b1c/.env"),
            Some("issue comment"),
        )
        .unwrap();
        assert_eq!(kept.source.as_deref(), Some("issue comment"));
        let long = "x".repeat(LeakDetails::MAX_URL + 1);
        let long_source = "x".repeat(LeakDetails::MAX_SOURCE + 1);
        for (url, source) in [
            (Some("https://example.com/kw_sk_production_abc"), None),
            (Some("https://example.com/?k=KW_SK_PRODUCTION_abc"), None),
            (
                Some("https://example.com/?k=kw%5Fsk%5Fproduction_abc"),
                None,
            ),
            (None, Some("kw_sk_x")),
            (Some(""), None),
            (Some("javascript:alert(1)"), None),
            (Some("see https://example.com"), None),
            (Some(long.as_str()), None),
            (Some("https://example.com/\u{202e}"), None),
            (None, Some("line\nbreak")),
            (None, Some("")),
            (None, Some("<b>")),
            (None, Some(long_source.as_str())),
        ] {
            assert!(
                matches!(
                    LeakDetails::parse(url, source),
                    Err(InputError::InvalidLeakDetails(_))
                ),
                "{url:?} {source:?}"
            );
        }
    }

    #[test]
    fn a_rotation_policy_is_set_changed_or_cleared_on_an_active_key_only() {
        let key = active_key();
        let policy = RotationPolicy::from_json(
            &serde_json::json!({"every": "P30D", "grace_period": "24h", "secret_id": "keyward/billing"}),
        )
        .unwrap();
        let Setting::Changed { key: set, change } =
            set_rotation_policy(&key, Some(policy.clone()), operator(), test_mint(), t0()).unwrap()
        else {
            panic!("not changed")
        };
        assert_eq!(set.rotation_policy.as_ref(), Some(&policy));
        assert_eq!(set.version, key.version + 1);
        assert_eq!(
            change.activity.event,
            Event::RotationPolicyChanged {
                previous: None,
                rotation_policy: Some(policy.clone())
            }
        );
        assert!(matches!(
            set_rotation_policy(&set, Some(policy.clone()), operator(), test_mint(), t0()).unwrap(),
            Setting::Unchanged(k) if k == set
        ));
        let Setting::Changed { key: cleared, .. } =
            set_rotation_policy(&set, None, operator(), test_mint(), t0()).unwrap()
        else {
            panic!("not cleared")
        };
        assert_eq!(cleared.rotation_policy, None);
        let in_grace = rotate(&set, grace("1h"), operator(), test_mint(), t0()).unwrap();
        assert_eq!(
            in_grace.key.rotation_policy.as_ref(),
            Some(&policy),
            "carried over"
        );
        assert_eq!(
            set_rotation_policy(&in_grace.previous, None, operator(), test_mint(), t0())
                .unwrap_err(),
            LifecycleError::NotActive(Status::InGrace)
        );
    }

    #[test]
    fn a_policy_claims_its_secret_and_a_rotation_hands_the_claim_to_the_successor() {
        let key = active_key();
        let policy = RotationPolicy::from_json(
            &serde_json::json!({"every": "P30D", "grace_period": "24h", "secret_id": "keyward/billing"}),
        )
        .unwrap();
        let claim_of = |holder: &Key| SecretClaim {
            environment: env(),
            secret: "keyward/billing".to_owned(),
            holder: holder.id.clone(),
        };
        let Setting::Changed { key: set, change } =
            set_rotation_policy(&key, Some(policy.clone()), operator(), test_mint(), t0()).unwrap()
        else {
            panic!("not changed")
        };
        assert_eq!(change.secret_claim, Some(claim_of(&set)));
        assert!(set.delivers_to("keyward/billing", t0()));
        assert!(!set.delivers_to("keyward/other", t0()));

        let rotated = rotate(&set, grace("24h"), operator(), test_mint(), t0()).unwrap();
        assert_eq!(rotated.change.secret_claim, Some(claim_of(&rotated.key)));
        assert!(rotated.key.delivers_to("keyward/billing", t0()));
        assert!(
            !rotated.previous.delivers_to("keyward/billing", t0()),
            "a key in its grace no longer delivers"
        );

        let created = create_key(
            &env(),
            NewKey {
                rotation_policy: Some(policy),
                ..new_key(Kind::Secret, &["orders:read"], None)
            },
            operator(),
            test_mint(),
            t0(),
        )
        .unwrap();
        assert_eq!(created.change.secret_claim, Some(claim_of(&created.key)));
        assert!(
            rotated.change.may_claim_from(&set.id, Some(&set)),
            "a rotation takes the claim from the key it rotates"
        );
        assert!(
            !created
                .change
                .may_claim_from(&rotated.key.id, Some(&rotated.key)),
            "a new key cannot take a secret that an active key delivers to"
        );
        assert!(created.change.may_claim_from(&set.id, None));
        assert!(
            created
                .change
                .may_claim_from(&set.id, Some(&rotated.previous))
        );

        let Setting::Changed {
            change: cleared, ..
        } = set_rotation_policy(&rotated.key, None, operator(), test_mint(), t0()).unwrap()
        else {
            panic!("not cleared")
        };
        let later = change_grace_period(
            &rotated.previous,
            grace("1h"),
            operator(),
            test_mint(),
            t0(),
        )
        .unwrap()
        .change;
        let Revocation::Revoked {
            key: gone,
            change: revoked,
        } = revoke(&rotated.key, operator(), test_mint(), t0()).unwrap()
        else {
            panic!("not revoked")
        };
        for change in [cleared.as_ref(), &later, revoked.as_ref()] {
            assert_eq!(change.secret_claim, None, "{:?}", change.activity.event);
        }
        assert!(
            !gone.delivers_to("keyward/billing", t0()),
            "nor does a revoked one"
        );
        assert!(created.change.may_claim_from(&gone.id, Some(&gone)));
        let wider = Key {
            scopes: Scopes::parse(&["orders:read", "orders:write"]).unwrap(),
            ..gone.clone()
        };
        assert!(
            !created.change.may_claim_from(&wider.id, Some(&wider)),
            "a stale claim passes only to a key that holds every scope of its holder"
        );
        let default = Key {
            default: true,
            ..gone.clone()
        };
        assert!(!created.change.may_claim_from(&default.id, Some(&default)));
        assert_eq!(
            rotate(&key, grace("1h"), operator(), test_mint(), t0())
                .unwrap()
                .change
                .secret_claim,
            None,
            "a key without a policy claims nothing"
        );
    }

    #[test]
    fn verification_checks_status_then_environment_then_scopes() {
        let key = active_key();
        let none: [&str; 0] = [];
        assert_eq!(check(&key, None, None, &none, t0()), Verdict::Valid);
        assert_eq!(
            check(&key, Some(&env()), None, &["orders:read"], t0()),
            Verdict::Valid
        );
        assert_eq!(
            check(
                &key,
                Some(&EnvName::parse("staging").unwrap()),
                None,
                &none,
                t0()
            ),
            Verdict::WrongEnvironment
        );
        assert_eq!(
            check(&key, None, None, &["orders:read", "orders:write"], t0()),
            Verdict::InsufficientScope
        );
        let in_grace = rotate(&key, grace("1h"), operator(), test_mint(), t0())
            .unwrap()
            .previous;
        assert_eq!(check(&in_grace, None, None, &none, t0()), Verdict::Valid);
        assert_eq!(
            check(&in_grace, None, None, &none, t0() + TimeDelta::hours(1)),
            Verdict::Expired
        );
        let revoked = Key {
            revoked_at: Some(t0()),
            expires_at: Some(t0()),
            ..key
        };
        assert_eq!(
            check(
                &revoked,
                Some(&EnvName::parse("staging").unwrap()),
                None,
                &[Scope::ALL],
                t0()
            ),
            Verdict::Revoked
        );
    }

    #[test]
    fn a_key_with_allowed_networks_is_checked_after_its_environment_and_before_its_scopes() {
        let pinned = create_key(
            &env(),
            NewKey {
                allowed_ips: AllowedIps::parse(&["198.51.100.0/24"]).unwrap(),
                ..new_key(Kind::Secret, &["orders:read"], None)
            },
            operator(),
            test_mint(),
            t0(),
        )
        .unwrap()
        .key;
        let inside = Some("198.51.100.7".parse().unwrap());
        let outside = Some("203.0.113.7".parse().unwrap());
        let none: [&str; 0] = [];
        assert_eq!(check(&pinned, None, inside, &none, t0()), Verdict::Valid);
        assert_eq!(
            check(&pinned, None, outside, &none, t0()),
            Verdict::IpNotAllowed
        );
        assert_eq!(check(&pinned, None, None, &none, t0()), Verdict::IpRequired);
        assert_eq!(
            check(
                &pinned,
                Some(&EnvName::parse("staging").unwrap()),
                outside,
                &none,
                t0()
            ),
            Verdict::WrongEnvironment
        );
        assert_eq!(
            check(&pinned, None, outside, &["billing:write"], t0()),
            Verdict::IpNotAllowed,
            "an address outside is refused before a missing scope is"
        );
        let successor = rotate(&pinned, grace("1h"), operator(), test_mint(), t0())
            .unwrap()
            .key;
        assert_eq!(
            successor.allowed_ips, pinned.allowed_ips,
            "rotation copies the list"
        );
        assert_eq!(
            check(&active_key(), None, outside, &none, t0()),
            Verdict::Valid,
            "a key without a list is used from anywhere"
        );
    }

    #[test]
    fn networks_are_replaced_on_a_key_that_still_works_and_recorded_before_and_after() {
        let key = active_key();
        let ranges = AllowedIps::parse(&["198.51.100.0/24", "2001:db8::/32"]).unwrap();
        let Setting::Changed { key: held, change } =
            set_allowed_ips(&key, ranges.clone(), operator(), test_mint(), t0()).unwrap()
        else {
            panic!("not changed")
        };
        assert_eq!(held.allowed_ips, ranges);
        assert_eq!(held.version, key.version + 1);
        assert_eq!(
            change.activity.event,
            Event::AllowedIpsChanged {
                previous: AllowedIps::default(),
                allowed_ips: ranges.clone(),
            }
        );
        assert_eq!(change.secret_claim, None);
        assert!(matches!(
            set_allowed_ips(&held, ranges.clone(), operator(), test_mint(), t0()).unwrap(),
            Setting::Unchanged(k) if k == held
        ));
        let reordered = AllowedIps::parse(&["2001:db8::/32", "198.51.100.0/24"]).unwrap();
        assert!(
            matches!(
                set_allowed_ips(&held, reordered, operator(), test_mint(), t0()).unwrap(),
                Setting::Unchanged(_)
            ),
            "the same ranges in another order change nothing"
        );
        let rotated = rotate(&held, grace("1h"), operator(), test_mint(), t0()).unwrap();
        let Setting::Changed {
            key: cleared,
            change,
        } = set_allowed_ips(
            &rotated.previous,
            AllowedIps::default(),
            operator(),
            test_mint(),
            t0(),
        )
        .unwrap()
        else {
            panic!("a key in its grace is not changed")
        };
        assert!(cleared.allowed_ips.is_empty());
        assert!(
            matches!(&change.keys[..], [KeyWrite::Update { key, .. }] if key.id == rotated.previous.id),
            "only the key in its grace is written, never its successor"
        );
        assert_eq!(
            change.activity.event,
            Event::AllowedIpsChanged {
                previous: ranges.clone(),
                allowed_ips: AllowedIps::default(),
            }
        );
        let Revocation::Revoked { key: revoked, .. } =
            revoke(&rotated.key, operator(), test_mint(), t0()).unwrap()
        else {
            panic!("not revoked")
        };
        assert_eq!(
            set_allowed_ips(
                &revoked,
                AllowedIps::default(),
                operator(),
                test_mint(),
                t0()
            )
            .unwrap_err(),
            LifecycleError::Ended(Status::Revoked)
        );
        let later = t0() + TimeDelta::hours(2);
        assert_eq!(
            set_allowed_ips(&rotated.previous, ranges, operator(), test_mint(), later).unwrap_err(),
            LifecycleError::Ended(Status::Expired)
        );
    }
}
