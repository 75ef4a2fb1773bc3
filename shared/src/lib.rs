//! keyward's shared library: everything the Lambda functions and the local server share.
//!
//! `domain` decides (pure, no I/O, `now` passed in), `store` applies decisions atomically,
//! and `http` maps requests and domain outcomes to API Gateway responses.

pub mod domain;
pub mod http;
pub mod store;

/// The current time at the millisecond precision that every stored and shown time uses.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::DurationRound;
    let now = chrono::Utc::now();
    now.duration_trunc(chrono::TimeDelta::milliseconds(1))
        .unwrap_or(now)
}
