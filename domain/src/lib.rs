//! keyward's key domain: formats, names, grace periods, lifecycle rules and activity entries.
//!
//! Nothing here does I/O, and the crate depends on nothing that could: no runtime, no SDK,
//! no database, no clock and no operating-system randomness. Every rule that depends on time
//! takes `now`, and everything new (a secret, an id) comes from a [`Mint`] that the caller
//! builds over its own [`Entropy`].
//!
//! The modules depend on each other in one direction only, in the order of [`LAYERS`]; a
//! test reads their sources and holds them to it.

mod activity;
mod base62;
mod grace;
mod key;
mod lifecycle;
mod mint;
mod names;
mod network;
mod people;
mod schedule;
mod token;
mod usage;
mod verify;

pub use activity::{Action, ActivityEntry, Actor, ActorType, Event};
pub use grace::{GracePeriod, RotationInterval, parse_iso8601_seconds};
pub use key::{
    DeliveryFailures, Environment, ExpiryNotice, ExpiryStage, FIRST_RETRY_WAIT, Key, LeakPolicy,
    MAX_RETRY_WAIT, PendingDelivery, RETRY_SLACK, RotationPolicy, SecretPrefix, Status,
};
pub use lifecycle::{
    Change, EnvironmentWrite, GraceChanged, Issued, KeyWrite, LeakSource, LeakStep, LifecycleError,
    NewKey, Revocation, Rotated, SecretClaim, Setting, change_grace_period, create_environment,
    create_key, leak_step, revoke, rotate, set_allowed_ips, set_leak_policy, set_rotation_policy,
};
pub use mint::{Entropy, InvalidKeyPrefix, KeyPrefix, Mint};
pub use names::{
    ActivityId, EnvName, InputError, KeyId, KeyName, Kind, LeakDetails, Scope, Scopes,
    is_format_character,
};
pub use network::{AllowedIps, IpRange};
pub use people::{Grants, Person, Roles};
pub use schedule::{
    Due, GRACE_IDLE_AFTER, GRACE_WATCH_EVERY, GraceWatch, Seen, delivery_failed, expiry_notice,
    scheduled_rotation, secret_delivered, watch_grace,
};
pub use token::{KeyHash, MalformedKey, PresentedKey, Secret, scanner_regex};
pub use usage::{
    HourlyUsage, LastUse, SEEN_LIMIT, SeenAddress, USAGE_RETENTION, UsageTally, hour_of, minute_of,
    seen_window, usage_window,
};
pub use verify::{Verdict, check};

/// A point in time, in UTC, as every record and rule uses it.
pub type Timestamp = chrono::DateTime<chrono::Utc>;

/// The modules from the bottom up: each may use only the modules before it.
pub const LAYERS: [&str; 13] = [
    "base62",
    "mint",
    "names",
    "network",
    "people",
    "usage",
    "token",
    "grace",
    "key",
    "activity",
    "lifecycle",
    "schedule",
    "verify",
];

#[cfg(test)]
mod tests {
    use super::LAYERS;

    /// Each module's source, by name, as the compiler sees it.
    const SOURCES: [(&str, &str); 13] = [
        ("base62", include_str!("base62.rs")),
        ("mint", include_str!("mint.rs")),
        ("names", include_str!("names.rs")),
        ("network", include_str!("network.rs")),
        ("people", include_str!("people.rs")),
        ("usage", include_str!("usage.rs")),
        ("token", include_str!("token.rs")),
        ("grace", include_str!("grace.rs")),
        ("key", include_str!("key.rs")),
        ("activity", include_str!("activity.rs")),
        ("lifecycle", include_str!("lifecycle.rs")),
        ("schedule", include_str!("schedule.rs")),
        ("verify", include_str!("verify.rs")),
    ];

    /// The sibling modules that `source` names, through `super::` or `crate::`, outside its
    /// tests. A grouped path (`super::{...}`) or a name re-exported at the crate root
    /// (`crate::Key`) would hide which module it reaches, so it counts as a use of every
    /// module; `Timestamp`, which the root itself defines, is the one root name allowed.
    fn uses(source: &str) -> Vec<&'static str> {
        let code = source.split("#[cfg(test)]").next().unwrap_or(source);
        let hidden = ["super::{", "crate::{", "super::*", "crate::*"]
            .iter()
            .any(|p| code.contains(p))
            || code
                .match_indices("crate::")
                .chain(code.match_indices("super::"))
                .any(|(at, p)| {
                    let rest = &code[at + p.len()..];
                    rest.starts_with(|c: char| c.is_ascii_uppercase())
                        && !rest.starts_with("Timestamp")
                });
        if hidden {
            return LAYERS.to_vec();
        }
        LAYERS
            .into_iter()
            .filter(|m| {
                [format!("super::{m}"), format!("crate::{m}")]
                    .iter()
                    .any(|path| {
                        code.match_indices(path.as_str()).any(|(at, _)| {
                            !code[at + path.len()..]
                                .starts_with(|c: char| c.is_alphanumeric() || c == '_')
                        })
                    })
            })
            .collect()
    }

    #[test]
    fn every_module_is_a_layer_and_uses_only_the_layers_below_it() {
        let mut named: Vec<&str> = SOURCES.iter().map(|(m, _)| *m).collect();
        named.sort_unstable();
        let mut declared: Vec<&str> = include_str!("lib.rs")
            .lines()
            .filter_map(|line| {
                let line = line
                    .trim_start_matches("pub ")
                    .trim_start_matches("pub(crate) ");
                line.strip_prefix("mod ")?.strip_suffix(';')
            })
            .collect();
        declared.sort_unstable();
        assert_eq!(declared, named, "every module of lib.rs is read here");
        let mut layers = LAYERS.to_vec();
        layers.sort_unstable();
        assert_eq!(named, layers, "every module has a place in LAYERS");
        for (module, source) in SOURCES {
            let own = LAYERS.iter().position(|m| *m == module).unwrap();
            for used in uses(source) {
                let theirs = LAYERS.iter().position(|m| *m == used).unwrap();
                assert!(theirs < own, "{module} uses {used}, which is not below it");
            }
        }
    }

    #[test]
    fn the_layer_check_sees_a_use_of_a_module_above() {
        assert_eq!(uses("use super::schedule::Due;\n"), ["schedule"]);
        assert_eq!(uses("use crate::key::{Key};\n"), ["key"]);
        assert!(uses("use super::keys_of_another_kind;\n").is_empty());
        assert_eq!(uses("use super::{key::Key, names::KeyId};\n"), LAYERS);
        assert_eq!(uses("fn f(k: crate::Key) {}\n"), LAYERS);
        assert_eq!(uses("use super::*;\n"), LAYERS);
        assert!(uses("fn f() {}\n#[cfg(test)]\nuse super::verify::check;\n").is_empty());
    }
}
