//! Activity entries: one for each lifecycle change, naming who acted.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Timestamp;
use super::grace::GracePeriod;
use super::key::{ExpiryStage, LeakPolicy, RotationPolicy};
use super::mint::Mint;
use super::names::{ActivityId, EnvName, KeyId, KeyName, Kind, LeakDetails, Scopes};
use super::network::AllowedIps;

/// Who made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorType {
    /// A caller of the HTTP API, named by its key id.
    ApiKey,
    /// A person at the command line, or an IAM principal.
    Operator,
    /// A schedule rule, named by its ARN.
    Schedule,
    /// keyward itself, for what happens by time alone (an expiry seen in DynamoDB's TTL
    /// removal) or on a leak report (named by where the report came from).
    System,
    /// A person signed in through the identity provider, named by its subject.
    User,
}

/// Who made a change, as recorded in its activity entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// What kind of actor.
    #[serde(rename = "type")]
    pub kind: ActorType,
    /// The actor's id: a key id, an operator's name, a rule's ARN, or a person's subject.
    pub id: String,
    /// A person's email or name, as their token gave it; only people have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Actor {
    /// A caller authenticated by one of keyward's own keys.
    pub fn api_key(id: &KeyId) -> Self {
        Self {
            kind: ActorType::ApiKey,
            id: id.to_string(),
            name: None,
        }
    }

    /// An operator at the command line.
    pub fn operator(name: impl Into<String>) -> Self {
        Self {
            kind: ActorType::Operator,
            id: name.into(),
            name: None,
        }
    }

    /// A schedule rule, named by its ARN (or `keyward serve` for the local schedule).
    pub fn schedule(id: impl Into<String>) -> Self {
        Self {
            kind: ActorType::Schedule,
            id: id.into(),
            name: None,
        }
    }

    /// A person signed in through the identity provider: `sub` is the provider's subject, and
    /// `name` their email or name, when the token gave one.
    pub fn user(sub: impl Into<String>, name: Option<String>) -> Self {
        Self {
            kind: ActorType::User,
            id: sub.into(),
            name,
        }
    }

    /// keyward itself, for changes that nobody made: `id` names the mechanism.
    pub fn system(id: impl Into<String>) -> Self {
        Self {
            kind: ActorType::System,
            id: id.into(),
            name: None,
        }
    }
}

/// What happened, with the facts each kind of change records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action")]
pub enum Event {
    /// A key was made.
    #[serde(rename = "key.created")]
    Created {
        /// Its name.
        name: KeyName,
        /// Its kind.
        kind: Kind,
        /// Its scopes.
        scopes: Scopes,
        /// Its expiry, if it has one.
        expires_at: Option<Timestamp>,
        /// The networks it is accepted from; left out when it is accepted from anywhere.
        #[serde(default, skip_serializing_if = "AllowedIps::is_empty")]
        allowed_ips: AllowedIps,
    },
    /// A key was replaced by a new one, and keeps working for its grace.
    #[serde(rename = "key.rotated")]
    Rotated {
        /// The replacement.
        new_key_id: KeyId,
        /// The grace that was asked for.
        grace_period: GracePeriod,
        /// The old key's expiry before the rotation.
        previous_expires_at: Option<Timestamp>,
        /// The old key's expiry after the rotation.
        expires_at: Timestamp,
    },
    /// The grace of a rotated key was changed.
    #[serde(rename = "key.grace_period_changed")]
    GracePeriodChanged {
        /// The grace that was asked for, counted from the change.
        grace_period: GracePeriod,
        /// The expiry before the change.
        previous_expires_at: Option<Timestamp>,
        /// The expiry after the change.
        expires_at: Timestamp,
    },
    /// A key was revoked.
    #[serde(rename = "key.revoked")]
    Revoked {
        /// When.
        revoked_at: Timestamp,
    },
    /// A key reached its expiry.
    #[serde(rename = "key.expired")]
    Expired {
        /// When it expired.
        expires_at: Timestamp,
    },
    /// A key's secret was reported leaked. What the report does next (a revocation, or a
    /// rotation of a default key) is an entry of its own.
    #[serde(rename = "key.leaked")]
    Leaked {
        /// Where it was seen, as the reporter said; never the secret.
        #[serde(flatten)]
        details: LeakDetails,
        /// What the leak does, as its environment's policy said: `notify` leaves the key
        /// working.
        #[serde(default)]
        leak_policy: LeakPolicy,
    },
    /// What a leak of an environment's keys does was changed; recorded on the environment's
    /// default key.
    #[serde(rename = "environment.leak_policy_changed")]
    LeakPolicyChanged {
        /// The policy before.
        previous: LeakPolicy,
        /// The policy after.
        leak_policy: LeakPolicy,
    },
    /// A key will expire soon: within 24 hours, then again within an hour.
    #[serde(rename = "key.expiring")]
    Expiring {
        /// When it expires.
        expires_at: Timestamp,
        /// How soon: `24h` or `1h`.
        within: ExpiryStage,
    },
    /// A key's rotation policy was set, changed or cleared.
    #[serde(rename = "key.rotation_policy_changed")]
    RotationPolicyChanged {
        /// The policy before.
        previous: Option<RotationPolicy>,
        /// The policy after; `null` when cleared.
        rotation_policy: Option<RotationPolicy>,
    },
    /// The networks a key is accepted from were replaced.
    #[serde(rename = "key.allowed_ips_changed")]
    AllowedIpsChanged {
        /// The list before; empty when every address was let in.
        previous: AllowedIps,
        /// The list after; empty when every address is let in.
        allowed_ips: AllowedIps,
    },
    /// A scheduled rotation's new secret became the current version of the key's secret.
    #[serde(rename = "key.secret_delivered")]
    SecretDelivered {
        /// The secret (name or ARN) that now holds it.
        secret_id: String,
        /// The version that holds it.
        version_id: String,
    },
    /// A key's new secret could not be delivered to its policy's secret; the schedule tries
    /// again at `retry_at`.
    #[serde(rename = "key.secret_delivery_failed")]
    SecretDeliveryFailed {
        /// The secret (name or ARN) that could not be written or made current.
        secret_id: String,
        /// How many deliveries failed in a row.
        failures: u32,
        /// When the schedule tries again.
        retry_at: Timestamp,
    },
    /// A key in its grace has not been presented for an hour while its successor has: the
    /// services have switched, and its grace can be cut. Recorded once per rotation.
    #[serde(rename = "key.grace_idle")]
    GraceIdle {
        /// The successor, which is in use.
        new_key_id: KeyId,
        /// The minute the key was last presented, accepted or refused; `null` if never.
        last_presented_at: Option<Timestamp>,
        /// The minute its successor was last used.
        successor_last_used_at: Timestamp,
        /// When its grace ends, unless it is cut.
        expires_at: Option<Timestamp>,
    },
}

impl Event {
    /// The action this event records.
    pub fn action(&self) -> Action {
        match self {
            Event::Created { .. } => Action::Created,
            Event::Rotated { .. } => Action::Rotated,
            Event::GracePeriodChanged { .. } => Action::GracePeriodChanged,
            Event::Revoked { .. } => Action::Revoked,
            Event::Expired { .. } => Action::Expired,
            Event::Expiring { .. } => Action::Expiring,
            Event::RotationPolicyChanged { .. } => Action::RotationPolicyChanged,
            Event::AllowedIpsChanged { .. } => Action::AllowedIpsChanged,
            Event::SecretDelivered { .. } => Action::SecretDelivered,
            Event::SecretDeliveryFailed { .. } => Action::SecretDeliveryFailed,
            Event::GraceIdle { .. } => Action::GraceIdle,
            Event::Leaked { .. } => Action::Leaked,
            Event::LeakPolicyChanged { .. } => Action::LeakPolicyChanged,
        }
    }
}

/// The activity actions, for filters and for events' detail types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `key.created`
    Created,
    /// `key.rotated`
    Rotated,
    /// `key.grace_period_changed`
    GracePeriodChanged,
    /// `key.revoked`
    Revoked,
    /// `key.expired`
    Expired,
    /// `key.expiring`
    Expiring,
    /// `key.rotation_policy_changed`
    RotationPolicyChanged,
    /// `key.allowed_ips_changed`
    AllowedIpsChanged,
    /// `key.secret_delivered`
    SecretDelivered,
    /// `key.secret_delivery_failed`
    SecretDeliveryFailed,
    /// `key.grace_idle`
    GraceIdle,
    /// `key.leaked`
    Leaked,
    /// `environment.leak_policy_changed`
    LeakPolicyChanged,
}

impl Action {
    /// Every action, for whatever must list them (the parser, and the API's description).
    pub const ALL: [Action; 13] = [
        Action::Created,
        Action::Rotated,
        Action::GracePeriodChanged,
        Action::Revoked,
        Action::Expired,
        Action::Expiring,
        Action::RotationPolicyChanged,
        Action::AllowedIpsChanged,
        Action::SecretDelivered,
        Action::SecretDeliveryFailed,
        Action::GraceIdle,
        Action::Leaked,
        Action::LeakPolicyChanged,
    ];

    /// The action's name, such as `key.rotated`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "key.created",
            Action::Rotated => "key.rotated",
            Action::GracePeriodChanged => "key.grace_period_changed",
            Action::Revoked => "key.revoked",
            Action::Expired => "key.expired",
            Action::Expiring => "key.expiring",
            Action::RotationPolicyChanged => "key.rotation_policy_changed",
            Action::AllowedIpsChanged => "key.allowed_ips_changed",
            Action::SecretDelivered => "key.secret_delivered",
            Action::SecretDeliveryFailed => "key.secret_delivery_failed",
            Action::GraceIdle => "key.grace_idle",
            Action::Leaked => "key.leaked",
            Action::LeakPolicyChanged => "environment.leak_policy_changed",
        }
    }

    /// The action with this name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the activity log. It is written in the same atomic write as its change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityEntry {
    /// Its id, which sorts by time; consumers deduplicate events on it.
    pub id: ActivityId,
    /// When the change happened.
    pub at: Timestamp,
    /// The environment of the key.
    pub environment: EnvName,
    /// The key that changed (for a rotation, the old key).
    pub key_id: KeyId,
    /// Who made the change.
    pub actor: Actor,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

impl ActivityEntry {
    /// A new entry for `event` on `key_id`, at `now`, its id made by `mint`.
    pub fn new(
        mint: &Mint,
        environment: &EnvName,
        key_id: &KeyId,
        actor: Actor,
        event: Event,
        now: Timestamp,
    ) -> Self {
        Self {
            id: ActivityId::generate(mint, now),
            at: now,
            environment: environment.clone(),
            key_id: key_id.clone(),
            actor,
            event,
        }
    }

    /// The other key this entry is about, so that it also shows in that key's activity:
    /// a rotation belongs to the new key's history as well as the old one's.
    pub fn related_key_id(&self) -> Option<&KeyId> {
        match &self.event {
            Event::Rotated { new_key_id, .. } => Some(new_key_id),
            _ => None,
        }
    }
}
