//! The secret delivery port: where a rotation of a key with a policy puts the new secret, so
//! that the services that use the key can read it. Its adapters are Secrets Manager
//! (production) and a local JSON file (for `keyward serve` with no AWS endpoint).
//!
//! Delivery takes two steps, the way Secrets Manager's own rotation does: the new secret is
//! first stored as a pending version that services do not read, and only made current once the
//! rotation is committed. See the README's "Scheduled rotation" for why this is crash-safe.

#[cfg(feature = "file-sink")]
mod file;
#[cfg(feature = "secrets-manager")]
mod secrets_manager;

use std::fmt;

use async_trait::async_trait;
use serde::Serialize;

#[cfg(feature = "file-sink")]
pub use file::FileSink;
#[cfg(feature = "secrets-manager")]
pub use secrets_manager::SecretsManagerSink;

use crate::domain::{EnvName, KeyId, Secret, SecretPrefix, Timestamp};

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

/// A sink that delivers only under `<prefix><environment>/`, whatever a stored policy says:
/// a policy written before that rule held, or written to the store directly, still cannot
/// reach another environment's secret. A refused delivery fails that key's step, which the
/// scheduled run logs and counts; the rotate route refuses such a policy before it writes.
pub struct PrefixedSink {
    inner: Box<dyn SecretSink>,
    prefix: SecretPrefix,
}

impl PrefixedSink {
    /// Wraps `inner`, allowing only secrets under `prefix`.
    pub fn new(inner: Box<dyn SecretSink>, prefix: SecretPrefix) -> Self {
        Self { inner, prefix }
    }
}

#[async_trait]
impl SecretSink for PrefixedSink {
    async fn put_pending(
        &self,
        secret_id: &str,
        version_id: &str,
        value: &SecretValue<'_>,
    ) -> Result<(), SecretError> {
        self.prefix
            .admits(value.environment, secret_id)
            .map_err(|e| SecretError::new("a policy names a secret outside its environment", e))?;
        self.inner.put_pending(secret_id, version_id, value).await
    }

    async fn promote(&self, secret_id: &str, version_id: &str) -> Result<(), SecretError> {
        if self.prefix.covers(secret_id) {
            self.inner.promote(secret_id, version_id).await
        } else {
            Err(SecretError::msg(
                "a policy names a secret outside the secret prefix",
            ))
        }
    }
}

/// The sink of a function that delivers no secrets. Only the functions that rotate keys link
/// Secrets Manager; a delivery asked of any other is a wiring mistake, and it fails loudly
/// rather than being lost.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSecrets;

#[async_trait]
impl SecretSink for NoSecrets {
    async fn put_pending(
        &self,
        _secret_id: &str,
        _version_id: &str,
        _value: &SecretValue<'_>,
    ) -> Result<(), SecretError> {
        Err(SecretError::msg("this function delivers no secrets"))
    }

    async fn promote(&self, _secret_id: &str, _version_id: &str) -> Result<(), SecretError> {
        Err(SecretError::msg("this function delivers no secrets"))
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::{Kind, Secret};

    use super::*;

    #[tokio::test]
    async fn a_function_that_delivers_no_secrets_refuses_every_delivery() {
        let mint = crate::mint();
        let production = EnvName::parse("production").unwrap();
        let secret = Secret::generate(&mint, Kind::Secret, &production);
        let id = KeyId::generate(&mint, crate::now());
        let value = SecretValue::new(&id, &secret, &production, crate::now());
        let refused = NoSecrets
            .put_pending("keyward/production/billing", "v1", &value)
            .await
            .unwrap_err();
        assert_eq!(refused.to_string(), "this function delivers no secrets");
        assert!(
            NoSecrets
                .promote("keyward/production/billing", "v1")
                .await
                .is_err()
        );
    }

    #[cfg(feature = "file-sink")]
    #[tokio::test]
    async fn a_prefixed_sink_delivers_only_inside_the_keys_environment() {
        let mint = crate::mint();
        let dir = std::env::temp_dir().join(format!("keyward-prefixed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secrets.json");
        let sink = PrefixedSink::new(
            Box::new(FileSink::new(file.clone())),
            SecretPrefix::default(),
        );
        let production = EnvName::parse("production").unwrap();
        let secret = Secret::generate(&mint, Kind::Secret, &production);
        let id = KeyId::generate(&mint, crate::now());
        let value = SecretValue::new(&id, &secret, &production, crate::now());
        for outside in ["keyward/staging/billing", "other/production/billing"] {
            assert!(
                sink.put_pending(outside, "v1", &value).await.is_err(),
                "{outside}"
            );
            assert!(
                sink.promote("other/production/billing", "v1")
                    .await
                    .is_err()
            );
        }
        assert!(!file.exists(), "nothing was written");
        sink.put_pending("keyward/production/billing", "v1", &value)
            .await
            .unwrap();
        sink.promote("keyward/production/billing", "v1")
            .await
            .unwrap();
        let written = std::fs::read_to_string(&file).unwrap();
        assert!(written.contains("keyward/production/billing") && !written.contains("staging"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
