//! keyward's shared library: everything the Lambda functions and the local server share.
//!
//! `domain` decides (the `keyward-domain` crate: pure, no I/O, `now` and a [`Mint`] passed
//! in), `store` applies decisions atomically, and `http` maps requests and domain outcomes to
//! API Gateway responses.

#[cfg(feature = "aws")]
pub mod aws;
pub mod check;
pub mod delivery;
pub mod events;
pub mod http;
pub mod leak;
pub mod logging;
pub mod metrics;
#[cfg(feature = "oidc")]
pub mod oidc;
#[cfg(feature = "fetch")]
pub mod published;
pub mod secrets;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod usage;

pub use keyward_domain as domain;

use domain::{Entropy, KeyPrefix, Mint};
use rand::Rng;
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;

/// The operating system's CSPRNG, the only entropy a secret is ever drawn from.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&self, bytes: &mut [u8]) {
        UnwrapErr(SysRng).fill_bytes(bytes);
    }
}

/// The variable that sets a deployment's key prefix (`kw` when unset): every part that makes
/// or checks keys reads it, so that each takes the deployment's keys and only those.
pub const KEY_PREFIX_VAR: &str = "KEYWARD_KEY_PREFIX";

/// The key prefix that `value`, the value of [`KEY_PREFIX_VAR`], sets: the default when it is
/// unset, and for a bad value an error that names the variable.
pub fn key_prefix(value: Option<&str>) -> Result<KeyPrefix, String> {
    value.map_or_else(
        || Ok(KeyPrefix::default()),
        |value| KeyPrefix::parse(value).map_err(|e| format!("{KEY_PREFIX_VAR}: {e}")),
    )
}

/// The key prefix that this process's environment sets ([`key_prefix`]).
pub fn key_prefix_from_env() -> Result<KeyPrefix, String> {
    key_prefix(std::env::var(KEY_PREFIX_VAR).ok().as_deref())
}

/// A mint over the operating system's CSPRNG. A process makes one and shares it, so that
/// every id it makes sorts in the order it was made.
pub fn mint() -> Mint {
    Mint::new(Box::new(OsEntropy))
}

/// The current time at the millisecond precision that every stored and shown time uses.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    truncate_to_millis(chrono::Utc::now())
}

/// A time cut to whole milliseconds, so that what is stored, compared and shown agree.
pub fn truncate_to_millis(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::DurationRound;
    t.duration_trunc(chrono::TimeDelta::milliseconds(1))
        .unwrap_or(t)
}

/// An error and its causes, joined for a log line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::domain::{EnvName, Kind, Secret};

    #[test]
    fn secrets_from_the_operating_systems_entropy_are_distinct_and_spread_uniformly() {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mint = super::mint();
        let environment = EnvName::parse("p").unwrap();
        let keys: Vec<Secret> = (0..2000)
            .map(|_| Secret::generate(&mint, Kind::Secret, &environment))
            .collect();
        let distinct: std::collections::HashSet<&str> = keys.iter().map(Secret::expose).collect();
        assert_eq!(distinct.len(), keys.len());
        let mut counts = [0usize; 62];
        for key in &keys {
            let text = key.expose();
            for b in text[text.len() - 38..text.len() - 6].bytes() {
                counts[ALPHABET.iter().position(|&c| c == b).unwrap()] += 1;
            }
        }
        // 64,000 draws: about 1,032 for each character; a biased source drifts far outside.
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min > 850 && *max < 1250, "min {min} max {max}");
    }
}
