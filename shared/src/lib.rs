//! keyward's shared library: everything the Lambda functions and the local server share.
//!
//! `domain` decides (the `keyward-domain` crate: pure, no I/O, `now` and a [`Mint`] passed
//! in), `store` applies decisions atomically, and `http` maps requests and domain outcomes to
//! API Gateway responses.

#[cfg(feature = "aws")]
pub mod aws;
pub mod delivery;
pub mod events;
pub mod http;
pub mod logging;
pub mod secrets;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use keyward_domain as domain;

use domain::{Entropy, Mint};
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
