//! The stored key record, its derived status, and the environment record.

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};

use super::Timestamp;
use super::grace::{GracePeriod, RotationInterval};
use super::names::{EnvName, InputError, KeyId, KeyName, Kind, Scopes};
use super::network::AllowedIps;
use super::token::KeyHash;

/// Where a key is in its life. It is derived from the record and the time, never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not rotated, not revoked, and not past any expiry.
    Active,
    /// Rotated, and still valid until its `expires_at`.
    InGrace,
    /// Past its `expires_at`.
    Expired,
    /// Revoked explicitly.
    Revoked,
}

impl Status {
    /// The status as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::InGrace => "in_grace",
            Status::Expired => "expired",
            Status::Revoked => "revoked",
        }
    }
}

/// How a key rotates itself: how often, with what grace, and where its new secret goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationPolicy {
    /// How often the key rotates.
    pub every: RotationInterval,
    /// The grace the old key gets at each rotation.
    pub grace_period: GracePeriod,
    /// The Secrets Manager secret (name or ARN) that receives each new secret.
    pub secret_id: String,
}

impl RotationPolicy {
    /// The shortest grace a policy may give: readers of the secret cache it, and Secrets
    /// Manager's caching clients refresh every hour by default.
    pub const MIN_GRACE_SECONDS: u64 = 3600;

    /// Reads a policy from the API's JSON object `{"every", "grace_period", "secret_id"}`.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, InputError> {
        let bad = |what: &str| InputError::InvalidRotationPolicy(format!("rotation_policy.{what}"));
        let object = value.as_object().ok_or_else(|| {
            InputError::InvalidRotationPolicy(
                r#"rotation_policy is {"every", "grace_period", "secret_id"}"#.to_owned(),
            )
        })?;
        if let Some(unknown) = object
            .keys()
            .find(|k| !["every", "grace_period", "secret_id"].contains(&k.as_str()))
        {
            let name = if unknown.len() <= 40
                && unknown.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            {
                unknown.as_str()
            } else {
                "?"
            };
            return Err(bad(&format!("{name} is not a field of a rotation policy")));
        }
        let every = object
            .get("every")
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad("every is required: an ISO-8601 duration from P1D to P365D"))
            .and_then(RotationInterval::parse)?;
        let grace_period = GracePeriod::from_json(
            object
                .get("grace_period")
                .ok_or_else(|| bad("grace_period is required"))?,
        )?;
        if grace_period.seconds() < Self::MIN_GRACE_SECONDS {
            return Err(bad(
                "grace_period is at least 1h: services that read the secret cache it, and Secrets Manager's caching clients refresh hourly",
            ));
        }
        let secret_id = object
            .get("secret_id")
            .and_then(|v| v.as_str())
            .filter(|id| {
                (1..=2048).contains(&id.len())
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-:".contains(&b))
            })
            .ok_or_else(|| bad("secret_id is required: a Secrets Manager secret name or ARN"))?;
        Ok(Self {
            every,
            grace_period,
            secret_id: secret_id.to_owned(),
        })
    }

    /// The secret this policy delivers to, the same however `secret_id` names it: the name
    /// itself, or an ARN's name without the six characters Secrets Manager appends to it. Two
    /// policies deliver to one secret exactly when these are equal, which is what a
    /// secret claim compares.
    pub fn secret(&self) -> &str {
        secret_of(&self.secret_id)
    }
}

/// [`RotationPolicy::secret`]'s rule for any `secret_id`: the secret it names, however it
/// names it.
fn secret_of(secret_id: &str) -> &str {
    if !secret_id.starts_with("arn:") {
        return secret_id;
    }
    let name = secret_name(secret_id);
    let suffixed = |at: usize| {
        let suffix = &name.as_bytes()[at..];
        at > 0 && suffix[0] == b'-' && suffix[1..].iter().all(u8::is_ascii_alphanumeric)
    };
    match name.len().checked_sub(7) {
        Some(at) if suffixed(at) => &name[..at],
        _ => name,
    }
}

/// The name in `secret_id`: the id itself, or the resource of a Secrets Manager ARN. Any
/// other ARN names nothing.
fn secret_name(secret_id: &str) -> &str {
    match secret_id.strip_prefix("arn:") {
        None => secret_id,
        Some(arn) => {
            let mut parts = arn.splitn(5, ':');
            let service = parts.nth(1);
            let resource = parts.nth(2);
            match (service, resource.and_then(|r| r.strip_prefix("secret:"))) {
                (Some("secretsmanager"), Some(name)) => name,
                _ => "",
            }
        }
    }
}

/// Where rotation policies may deliver: only to secrets named `<prefix><environment>/...`,
/// so that a key of one environment can never overwrite a secret that another one reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretPrefix(String);

impl SecretPrefix {
    /// The prefix when none is configured.
    pub const DEFAULT: &'static str = "keyward/";

    /// Checks a configured prefix: 1 to 256 characters that a Secrets Manager name may hold.
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = (1..=256).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err("a secret prefix is 1 to 256 characters of A-Z, a-z, 0-9 and /_+=.@-".to_owned())
        }
    }

    /// The prefix as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `secret_id` names a secret under the prefix, in any environment.
    pub fn covers(&self, secret_id: &str) -> bool {
        secret_name(secret_id).starts_with(self.0.as_str())
    }

    /// Accepts `secret_id` for a key of `environment` only when it names a secret under
    /// `<prefix><environment>/`: by name, or by the ARN of such a secret.
    pub fn admits(&self, environment: &EnvName, secret_id: &str) -> Result<(), InputError> {
        let within = secret_name(secret_id)
            .strip_prefix(self.0.as_str())
            .and_then(|rest| rest.strip_prefix(environment.as_str()))
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rest| !rest.is_empty());
        if within {
            Ok(())
        } else {
            Err(InputError::InvalidRotationPolicy(format!(
                "rotation_policy.secret_id names a secret under {}{environment}/, by name or ARN: a key delivers only to its own environment's secrets",
                self.0
            )))
        }
    }
}

impl Default for SecretPrefix {
    fn default() -> Self {
        Self(Self::DEFAULT.to_owned())
    }
}

/// A key as stored: everything but its secret, which exists only as `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    /// The public id.
    pub id: KeyId,
    /// The only environment where the key is accepted.
    pub environment: EnvName,
    /// A human name.
    pub name: KeyName,
    /// Secret or publishable.
    pub kind: Kind,
    /// What the key may do.
    pub scopes: Scopes,
    /// Whether this is its environment's default key, which must be rotated before revocation.
    pub default: bool,
    /// SHA-256 of the secret.
    pub hash: KeyHash,
    /// Prefix and last four characters of the secret.
    pub hint: String,
    /// When the key was made.
    pub created_at: Timestamp,
    /// When the key stops working, if it does.
    pub expires_at: Option<Timestamp>,
    /// When the key was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
    /// The key this one replaced.
    pub rotated_from: Option<KeyId>,
    /// The key that replaced this one.
    pub rotated_to: Option<KeyId>,
    /// The expiry the key had before it was rotated: no grace may run past it.
    pub expiry_limit: Option<Timestamp>,
    /// How the key rotates itself, if it does.
    pub rotation_policy: Option<RotationPolicy>,
    /// The networks the key is accepted from; empty lets every address in.
    #[serde(default, skip_serializing_if = "AllowedIps::is_empty")]
    pub allowed_ips: AllowedIps,
    /// The last expiry notice recorded, so that each is recorded once.
    #[serde(default)]
    pub expiry_notice: Option<ExpiryNotice>,
    /// A rotation's new secret that is not yet the current version of the policy's secret.
    #[serde(default)]
    pub pending_delivery: Option<PendingDelivery>,
    /// The deliveries of this key's secret that failed in a row, which put off the next.
    #[serde(default)]
    pub delivery_failures: Option<DeliveryFailures>,
    /// When the key was rotated, if it was: from then, the schedule watches its grace for the
    /// moment it goes quiet.
    #[serde(default)]
    pub rotated_at: Option<Timestamp>,
    /// When a scheduled run found the key quiet in its grace while its successor was used
    /// (`key.grace_idle`), so that it is recorded once.
    #[serde(default)]
    pub grace_idle_at: Option<Timestamp>,
    /// When a report of a leak of its secret was recorded (`key.leaked`), so that it is
    /// recorded once and the key then follows its leak policy.
    #[serde(default)]
    pub leaked_at: Option<Timestamp>,
    /// The leak policy of its environment when its leak was recorded: every check refuses a
    /// leaked key unless it was `notify`.
    #[serde(default)]
    pub leak_policy: Option<LeakPolicy>,
    /// Bumped by every change; a write applies only if the stored version is the one read.
    pub version: u64,
}

impl Key {
    /// Whether `other` is this key as far as any user's change is concerned: it may differ
    /// only by what background writes change (expiry notices, secret deliveries, a grace found
    /// idle, a leak recorded, and the version they bump), so a decision made on one holds for the other.
    pub fn decides_like(&self, other: &Key) -> bool {
        let decided = |k: &Key| Key {
            version: 0,
            expiry_notice: None,
            pending_delivery: None,
            delivery_failures: None,
            grace_idle_at: None,
            leaked_at: None,
            leak_policy: None,
            ..k.clone()
        };
        decided(self) == decided(other)
    }

    /// Whether the key, at `now`, is the one that delivers its new secrets to `secret` (as
    /// [`RotationPolicy::secret`] names it): it is active and its policy names that secret. A
    /// key in its grace has handed that to its successor. Every question of whether a key
    /// delivers to a secret is this one.
    pub fn delivers_to(&self, secret: &str, now: Timestamp) -> bool {
        self.status(now) == Status::Active
            && self
                .rotation_policy
                .as_ref()
                .is_some_and(|p| p.secret() == secret)
    }

    /// Whether this key holds everything `other` does, as the management API requires of a
    /// caller that changes `other`: every scope of it, and `*` if `other` is a `*` key or its
    /// environment's default.
    pub fn controls(&self, other: &Key) -> bool {
        other.changeable_with(&self.scopes)
    }

    /// Whether a caller holding `held` in this key's environment may change it, key or
    /// person: every scope of it, and `*` if it is a `*` key or its environment's default.
    pub fn changeable_with(&self, held: &Scopes) -> bool {
        held.is_all()
            || (!self.default
                && !self.scopes.is_all()
                && self.scopes.first_not_granted_by(held).is_none())
    }

    /// The key's status at `now`.
    pub fn status(&self, now: Timestamp) -> Status {
        if self.revoked_at.is_some() {
            Status::Revoked
        } else if self.expires_at.is_some_and(|at| at <= now) {
            Status::Expired
        } else if self.rotated_to.is_some() {
            Status::InGrace
        } else {
            Status::Active
        }
    }
}

/// An environment: a name, which key is its default, and what a leak of its keys does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// The environment's name.
    pub name: EnvName,
    /// Its default key, which always exists and is active or about to be replaced.
    pub default_key_id: KeyId,
    /// When it was made.
    pub created_at: Timestamp,
    /// What a confirmed leak of one of its keys does; `revoke` for an environment made
    /// before there was a choice.
    #[serde(default)]
    pub leak_policy: LeakPolicy,
}

/// What a confirmed leak of a key does, chosen per environment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakPolicy {
    /// The key dies now (a default key, which cannot be revoked, is rotated with no grace).
    #[default]
    Revoke,
    /// The key is rotated with a grace of `now`, and its rotation policy, if any, delivers
    /// the successor (a key already in its grace is revoked: it has a successor).
    Rotate,
    /// Only the `key.leaked` entry and its event: the key keeps working, for owners who
    /// would rather rotate it themselves.
    Notify,
}

impl LeakPolicy {
    /// Every policy, in the order the API lists them.
    pub const ALL: [LeakPolicy; 3] = [LeakPolicy::Revoke, LeakPolicy::Rotate, LeakPolicy::Notify];

    /// The policy as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            LeakPolicy::Revoke => "revoke",
            LeakPolicy::Rotate => "rotate",
            LeakPolicy::Notify => "notify",
        }
    }

    /// The policy spelled `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// How close a key is to its expiry, in the steps that get a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ExpiryStage {
    /// It expires within 24 hours.
    #[serde(rename = "24h")]
    Within24h,
    /// It expires within an hour.
    #[serde(rename = "1h")]
    Within1h,
    /// It has expired.
    #[serde(rename = "expired")]
    Expired,
}

impl ExpiryStage {
    /// The stage a key that expires at `expires_at` is in at `now`, if any.
    pub(crate) fn at(expires_at: Timestamp, now: Timestamp) -> Option<Self> {
        let left = expires_at - now;
        if left <= TimeDelta::zero() {
            Some(Self::Expired)
        } else if left <= TimeDelta::hours(1) {
            Some(Self::Within1h)
        } else if left <= TimeDelta::hours(24) {
            Some(Self::Within24h)
        } else {
            None
        }
    }
}

/// The last expiry notice recorded for a key: a notice belongs to one expiry, so a changed
/// expiry gets its own notices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiryNotice {
    /// The expiry the notice was about.
    pub expires_at: Timestamp,
    /// The last stage recorded.
    pub stage: ExpiryStage,
}

/// A rotation's new secret, stored as a pending version of the policy's secret but not
/// yet made current. While it is set, the key is due, so that a rerun finishes the delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDelivery {
    /// The secret (name or ARN) that holds the pending version.
    pub secret_id: String,
    /// The pending version's id, derived from the key id.
    pub version_id: String,
}

impl PendingDelivery {
    /// The secret this version waits in, as [`RotationPolicy::secret`] names a secret, so it
    /// can be asked of [`Key::delivers_to`].
    pub fn secret(&self) -> &str {
        secret_of(&self.secret_id)
    }

    /// The secret version id of `key`'s secret: 34 characters, within Secrets Manager's 32 to
    /// 64 for a `ClientRequestToken`, and the same however often it is asked for.
    pub fn version_id_for(key: &KeyId) -> String {
        format!("keyward-{key}")
    }
}

/// The wait after a key's first failed delivery. It doubles with each failure in a row, up to
/// [`MAX_RETRY_WAIT`]: a minute is EventBridge's shortest schedule, so the first retry comes
/// at the next run, whatever the schedule.
pub const FIRST_RETRY_WAIT: TimeDelta = TimeDelta::minutes(1);

/// The longest a key whose deliveries keep failing waits for its next attempt.
pub const MAX_RETRY_WAIT: TimeDelta = TimeDelta::hours(1);

/// Taken off every wait, so that a run that an EventBridge schedule starts a few seconds
/// early still finds the key due.
pub const RETRY_SLACK: TimeDelta = TimeDelta::seconds(10);

/// A key's deliveries that failed in a row, and when the schedule tries again. Until then
/// its rotation or delivery is not due (its expiry notices still are), so keys whose secret
/// cannot be written never crowd out the keys behind them in a run. A successful delivery,
/// a rotation, or a new policy forgets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryFailures {
    /// How many deliveries failed in a row.
    pub count: u32,
    /// When the last one failed.
    pub last_failed_at: Timestamp,
    /// When the schedule tries again.
    pub retry_at: Timestamp,
}

impl DeliveryFailures {
    /// The failures after one more at `now`: the wait doubles, up to [`MAX_RETRY_WAIT`].
    pub(crate) fn after(previous: Option<Self>, now: Timestamp) -> Self {
        let count = previous.map_or(0, |f| f.count).saturating_add(1);
        let doublings = count.saturating_sub(1).min(16);
        let wait = (FIRST_RETRY_WAIT * (1 << doublings)).min(MAX_RETRY_WAIT);
        Self {
            count,
            last_failed_at: now,
            retry_at: now + wait - RETRY_SLACK,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::mint::test_mint;
    use serde_json::json;

    use super::*;

    #[test]
    fn only_background_writes_leave_a_decision_standing() {
        let now = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
        let env = EnvName::parse("production").unwrap();
        let issued = crate::create_environment(&env, crate::Actor::operator("t"), test_mint(), now);
        let seen = issued.key;
        let noticed = Key {
            version: seen.version + 1,
            expiry_notice: Some(ExpiryNotice {
                expires_at: now,
                stage: crate::ExpiryStage::Within24h,
            }),
            ..seen.clone()
        };
        assert!(seen.decides_like(&noticed));
        let rotated = Key {
            rotated_to: Some(KeyId::generate(test_mint(), now)),
            ..noticed.clone()
        };
        assert!(
            !seen.decides_like(&rotated),
            "a rotation changes what may be decided"
        );
        let regraced = Key {
            expires_at: Some(now),
            ..noticed
        };
        assert!(!seen.decides_like(&regraced));
    }

    #[test]
    fn a_policy_delivers_only_under_its_own_environment() {
        let prefix = SecretPrefix::default();
        let production = EnvName::parse("production").unwrap();
        let arn = |name: &str| {
            format!("arn:aws:secretsmanager:eu-west-1:123456789012:secret:{name}-AbCdEf")
        };
        for good in [
            "keyward/production/billing".to_owned(),
            "keyward/production/a/b".to_owned(),
            arn("keyward/production/billing"),
        ] {
            assert_eq!(prefix.admits(&production, &good), Ok(()), "{good}");
        }
        for bad in [
            "keyward/staging/billing".to_owned(),
            "keyward/production".to_owned(),
            "keyward/production/".to_owned(),
            "keyward/productionx/billing".to_owned(),
            "other/production/billing".to_owned(),
            "production/billing".to_owned(),
            arn("keyward/staging/billing"),
            arn("other/production/billing"),
            "arn:aws:ssm:eu-west-1:123456789012:parameter:keyward/production/billing".to_owned(),
            "arn:keyward/production/billing".to_owned(),
        ] {
            assert!(
                matches!(
                    prefix.admits(&production, &bad),
                    Err(InputError::InvalidRotationPolicy(_))
                ),
                "{bad}"
            );
        }
        assert!(prefix.covers("keyward/staging/x") && prefix.covers(&arn("keyward/x")));
        assert!(
            !prefix.covers("other/keyward/x")
                && !prefix.covers("arn:aws:ssm:r:1:parameter:keyward/x")
        );
        let custom = SecretPrefix::parse("teams/payments/").unwrap();
        assert_eq!(
            custom.admits(&production, "teams/payments/production/x"),
            Ok(())
        );
        assert!(custom.admits(&production, "keyward/production/x").is_err());
        for bad in ["", "has space", &"x".repeat(257)] {
            assert!(SecretPrefix::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_secret_is_the_same_by_name_by_arn_and_by_partial_arn() {
        let policy = |secret_id: &str| {
            RotationPolicy::from_json(
                &json!({"every": "P90D", "grace_period": "24h", "secret_id": secret_id}),
            )
            .unwrap()
        };
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:";
        for (secret_id, secret) in [
            ("keyward/production/billing", "keyward/production/billing"),
            (
                &format!("{arn}keyward/production/billing-AbC123"),
                "keyward/production/billing",
            ),
            (
                &format!("{arn}keyward/production/billing"),
                "keyward/production/billing",
            ),
            (
                "keyward/production/billing-AbC123",
                "keyward/production/billing-AbC123",
            ),
            (
                &format!("{arn}keyward/production/billing-AbC123-XyZ789"),
                "keyward/production/billing-AbC123",
            ),
            (&format!("{arn}-AbC123"), "-AbC123"),
            ("arn:aws:ssm:r:1:parameter:x-AbC123", ""),
        ] {
            assert_eq!(policy(secret_id).secret(), secret, "{secret_id}");
        }
        let stored = RotationPolicy {
            secret_id: format!("{arn}\u{e9}abcdef"),
            ..policy("s")
        };
        assert_eq!(
            stored.secret(),
            "\u{e9}abcdef",
            "a record written past the API's checks, with a character of two bytes where a suffix would start"
        );
    }

    #[test]
    fn rotation_policies_are_read_from_json_with_precise_errors() {
        let policy = RotationPolicy::from_json(
            &json!({"every": "P90D", "grace_period": "24h", "secret_id": "keyward/billing"}),
        )
        .unwrap();
        assert_eq!(policy.grace_period, GracePeriod::parse("24h").unwrap());
        assert_eq!(String::from(policy.every), "P90D");
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:keyward/billing-AbCdEf";
        assert!(
            RotationPolicy::from_json(
                &json!({"every": "P1D", "grace_period": 3600, "secret_id": arn})
            )
            .is_ok()
        );
        for (bad, needle) in [
            (json!("P90D"), "rotation_policy is"),
            (json!({"every": "P90D", "grace_period": "24h"}), "secret_id"),
            (
                json!({"every": "PT1H", "grace_period": "24h", "secret_id": "s"}),
                "P1D to P365D",
            ),
            (
                json!({"grace_period": "24h", "secret_id": "s"}),
                "every is required",
            ),
            (
                json!({"every": "P90D", "secret_id": "s"}),
                "grace_period is required",
            ),
            (
                json!({"every": "P90D", "grace_period": "2h", "secret_id": "s"}),
                "grace_period is one of",
            ),
            (
                json!({"every": "P90D", "grace_period": "1h", "secret_id": "has space"}),
                "secret_id",
            ),
            (
                json!({"every": "P90D", "grace_period": "1h", "secret_id": "s", "extra": 1}),
                "extra is not a field",
            ),
            (
                json!({"every": "P90D", "grace_period": "now", "secret_id": "s"}),
                "at least 1h",
            ),
            (
                json!({"every": "P90D", "grace_period": 3599, "secret_id": "s"}),
                "at least 1h",
            ),
        ] {
            let err = RotationPolicy::from_json(&bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
