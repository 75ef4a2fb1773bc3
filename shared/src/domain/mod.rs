//! The key domain: formats, names, grace periods, lifecycle rules and activity entries.
//! Nothing here does I/O; every rule that depends on time takes `now` as an argument.

mod activity;
mod grace;
mod key;
mod lifecycle;
mod names;
mod schedule;
mod token;
mod verify;

pub use activity::{Action, ActivityEntry, Actor, ActorType, Event};
pub use grace::{GracePeriod, RotationInterval, parse_iso8601_seconds};
pub use key::{Environment, Key, RotationPolicy, SecretPrefix, Status};
pub use lifecycle::{
    Change, EnvironmentWrite, GraceChanged, Issued, KeyWrite, LifecycleError, NewKey, PolicyChange,
    Revocation, Rotated, change_grace_period, create_environment, create_key, revoke, rotate,
    set_rotation_policy,
};
pub use names::{ActivityId, EnvName, InputError, KeyId, KeyName, Kind, Scope, Scopes};
pub use schedule::{
    DeliveryFailures, Due, ExpiryNotice, ExpiryStage, FIRST_RETRY_WAIT, MAX_RETRY_WAIT,
    PendingDelivery, RETRY_SLACK, delivery_failed, expiry_notice, scheduled_rotation,
    secret_delivered,
};
pub use token::{KeyHash, MalformedKey, PresentedKey, Secret};
pub use verify::{Verdict, check};

/// A point in time, in UTC, as every record and rule uses it.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
