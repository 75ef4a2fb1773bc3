//! The secret delivery port: where a scheduled rotation puts each new secret so that the
//! services that use the key can read it. Its adapters are Secrets Manager (production) and a
//! local JSON file (for `keyward serve` with no AWS endpoint).
//!
//! Delivery takes two steps, the way Secrets Manager's own rotation does: the new secret is
//! first stored as a pending version that services do not read, and only made current once the
//! rotation is committed. See the README's "Scheduled rotation" for why this is crash-safe.

mod file;
mod secrets_manager;

use std::fmt;

use async_trait::async_trait;
use serde::Serialize;

pub use file::FileSink;
pub use secrets_manager::SecretsManagerSink;

use crate::domain::{EnvName, KeyId, Secret, Timestamp};

/// Why a secret could not be stored or made current; the cause is for the log.
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
pub struct SecretError {
    context: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SecretError {
    /// An error that says what failed, with its cause.
    pub fn new(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// An error with no further cause.
    pub fn msg(context: impl Into<String>) -> Self {
        Self {
            context: context.into(),
            source: None,
        }
    }
}

/// The JSON value a delivered secret holds: `{"key_id", "secret", "environment", "rotated_at"}`.
/// Its `Debug` never shows the secret.
#[derive(Clone, Serialize)]
pub struct SecretValue<'a> {
    key_id: &'a KeyId,
    secret: &'a str,
    environment: &'a EnvName,
    rotated_at: Timestamp,
}

impl<'a> SecretValue<'a> {
    /// The value for `key_id`'s `secret`, made at `rotated_at`.
    pub fn new(
        key_id: &'a KeyId,
        secret: &'a Secret,
        environment: &'a EnvName,
        rotated_at: Timestamp,
    ) -> Self {
        Self {
            key_id,
            secret: secret.expose(),
            environment,
            rotated_at,
        }
    }

    /// The value as the JSON text that is stored.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a value of strings serializes")
    }
}

impl fmt::Debug for SecretValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretValue")
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Where new secrets are delivered.
#[async_trait]
pub trait SecretSink: Send + Sync {
    /// Stores `value` as the pending version `version_id` of `secret_id`, which services do not
    /// read yet, creating the secret if it does not exist. Repeating it with the same version
    /// and value changes nothing.
    async fn put_pending(
        &self,
        secret_id: &str,
        version_id: &str,
        value: &SecretValue<'_>,
    ) -> Result<(), SecretError>;

    /// Makes the version `version_id` of `secret_id` current: what services read from now on.
    /// Promoting the version that is already current changes nothing.
    async fn promote(&self, secret_id: &str, version_id: &str) -> Result<(), SecretError>;
}
