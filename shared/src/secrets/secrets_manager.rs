//! The Secrets Manager adapter: a pending version under `AWSPENDING`, promoted by moving
//! `AWSCURRENT` (Secrets Manager then moves `AWSPREVIOUS` to the version it left).

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;

use super::{SecretError, SecretSink, SecretValue};

const CURRENT: &str = "AWSCURRENT";
const PENDING: &str = "AWSPENDING";

/// Delivers secrets to AWS Secrets Manager.
#[derive(Clone, Debug)]
pub struct SecretsManagerSink {
    client: Client,
}

impl SecretsManagerSink {
    /// A sink with a client built from `aws`, the configuration the function shares.
    pub fn from_config(aws: &aws_config::SdkConfig) -> Self {
        Self::new(Client::new(aws))
    }

    /// A sink on this client, which records its calls when the call log is on
    /// (`crate::aws::calls`).
    pub fn new(client: Client) -> Self {
        let client = match crate::aws::calls::call_log() {
            Some(log) => Client::from_conf(client.config().to_builder().interceptor(log).build()),
            None => client,
        };
        Self { client }
    }

    async fn put(
        &self,
        secret_id: &str,
        version_id: &str,
        value: &str,
    ) -> Result<bool, SecretError> {
        match self
            .client
            .put_secret_value()
            .secret_id(secret_id)
            .client_request_token(version_id)
            .secret_string(value)
            .version_stages(PENDING)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(SecretError::new(
                format!("cannot store a pending version of the secret {secret_id}"),
                e,
            )),
        }
    }

    /// Creates an empty secret named `secret_id`; one that another run made meanwhile is fine.
    async fn create(&self, secret_id: &str) -> Result<(), SecretError> {
        if secret_id.starts_with("arn:") {
            return Err(SecretError::msg(format!(
                "the secret {secret_id} does not exist, and a secret named by its ARN cannot be created"
            )));
        }
        match self
            .client
            .create_secret()
            .name(secret_id)
            .description("API key delivered by keyward's rotation")
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_exists_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(SecretError::new(
                format!("cannot create the secret {secret_id}"),
                e,
            )),
        }
    }

    async fn move_stage(
        &self,
        secret_id: &str,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), SecretError> {
        self.client
            .update_secret_version_stage()
            .secret_id(secret_id)
            .version_stage(stage)
            .set_move_to_version_id(to.map(str::to_owned))
            .set_remove_from_version_id(from.map(str::to_owned))
            .send()
            .await
            .map_err(|e| {
                SecretError::new(format!("cannot move {stage} of the secret {secret_id}"), e)
            })?;
        Ok(())
    }
}

#[async_trait]
impl SecretSink for SecretsManagerSink {
    async fn put_pending(
        &self,
        secret_id: &str,
        version_id: &str,
        value: &SecretValue<'_>,
    ) -> Result<(), SecretError> {
        let value = value.to_json();
        if !self.put(secret_id, version_id, &value).await? {
            self.create(secret_id).await?;
            if !self.put(secret_id, version_id, &value).await? {
                return Err(SecretError::msg(format!(
                    "the secret {secret_id} was created but cannot be found"
                )));
            }
        }
        Ok(())
    }

    async fn promote(&self, secret_id: &str, version_id: &str) -> Result<(), SecretError> {
        let described = self
            .client
            .describe_secret()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| SecretError::new(format!("cannot read the secret {secret_id}"), e))?;
        let stages = described.version_ids_to_stages();
        let has = |version: &str, stage: &str| {
            stages
                .and_then(|s| s.get(version))
                .is_some_and(|labels| labels.iter().any(|l| l == stage))
        };
        if !has(version_id, CURRENT) {
            let current = stages.and_then(|s| {
                s.iter()
                    .find(|(_, labels)| labels.iter().any(|l| l == CURRENT))
                    .map(|(version, _)| version.as_str())
            });
            self.move_stage(secret_id, CURRENT, Some(version_id), current)
                .await?;
        }
        if has(version_id, PENDING) {
            self.move_stage(secret_id, PENDING, None, Some(version_id))
                .await?;
        }
        Ok(())
    }
}
