//! GitLab's token revocation contract, for self-managed GitLab: its secret detection sends the
//! keys it finds to `POST /v1/revoke_tokens`, after asking `GET /v1/revocable_token_types`
//! which types to send, both with a token shared beforehand in `Authorization`.
//!
//! The token is kept in Secrets Manager on AWS and in a file locally (`KEYWARD_GITLAB_TOKEN`
//! names which), read at the first request and again, at most once a minute, when a request
//! presents another, so that a token changed in both places takes effect without a restart.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::domain::KeyHash;

/// The variable that names where the shared token is: `secretsmanager:<name or ARN>` or
/// `file:<path>`. Without it, no GitLab request is taken.
pub const TOKEN_VAR: &str = "KEYWARD_GITLAB_TOKEN";

/// The one type of token keyward revokes, as GitLab names a finding of the gitleaks rule
/// `keyward_secret_key`: `gitleaks_rule_id_` and the rule's id.
pub const TOKEN_TYPE: &str = "gitleaks_rule_id_keyward_secret_key";

/// How long after a read of the token a token that does not match may cause another.
const REREAD_AFTER: Duration = Duration::from_secs(60);

/// Where the shared token is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    SecretsManager(String),
    File(PathBuf),
}

/// Why the shared token could not be read; the cause is for the log.
#[derive(Debug, thiserror::Error)]
#[error("the GitLab token could not be read from {place}: {why}")]
pub struct ReadError {
    place: String,
    why: String,
}

/// The token GitLab shares with keyward, read where [`TOKEN_VAR`] says.
pub struct GitlabToken {
    source: Source,
    /// The token as last read (its hash), and when it was read.
    read: tokio::sync::Mutex<Option<(KeyHash, Instant)>>,
}

impl GitlabToken {
    /// Where `value` says the token is.
    pub fn parse(value: &str) -> Result<Self, String> {
        let source = match value.split_once(':') {
            Some(("secretsmanager", id)) if !id.is_empty() => Source::SecretsManager(id.to_owned()),
            Some(("file", path)) if !path.is_empty() => Source::File(PathBuf::from(path)),
            _ => {
                return Err(format!(
                    "{TOKEN_VAR}: {value:?} is not secretsmanager:<name or ARN> or file:<path>"
                ));
            }
        };
        Ok(Self {
            source,
            read: tokio::sync::Mutex::new(None),
        })
    }

    /// The token [`TOKEN_VAR`] names, if it names one.
    pub fn from_env() -> Result<Option<Self>, String> {
        std::env::var(TOKEN_VAR)
            .ok()
            .map(|value| Self::parse(&value))
            .transpose()
    }

    /// Whether `authorization` (the header, with or without `Bearer `) is the shared token.
    /// Tokens are compared by their SHA-256, so that the comparison's time says nothing
    /// about the token.
    pub async fn admits(&self, authorization: &str) -> Result<bool, ReadError> {
        let presented = authorization.trim();
        let presented = presented.strip_prefix("Bearer ").unwrap_or(presented);
        if presented.is_empty() {
            return Ok(false);
        }
        let presented = KeyHash::of(presented);
        let mut read = self.read.lock().await;
        if let Some((token, at)) = read.as_ref()
            && (*token == presented || at.elapsed() < REREAD_AFTER)
        {
            return Ok(*token == presented);
        }
        let token = KeyHash::of(self.fetch().await?.trim());
        let admitted = token == presented;
        *read = Some((token, Instant::now()));
        Ok(admitted)
    }

    async fn fetch(&self) -> Result<String, ReadError> {
        let failed = |why: String| ReadError {
            place: match &self.source {
                Source::SecretsManager(id) => format!("the secret {id}"),
                Source::File(path) => format!("the file {}", path.display()),
            },
            why,
        };
        let token = match &self.source {
            Source::File(path) => {
                std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?
            }
            Source::SecretsManager(id) => {
                let aws = crate::aws::config().await.map_err(failed)?;
                let client = aws_sdk_secretsmanager::Client::new(&aws);
                let client = match crate::aws::calls::call_log() {
                    Some(log) => aws_sdk_secretsmanager::Client::from_conf(
                        client.config().to_builder().interceptor(log).build(),
                    ),
                    None => client,
                };
                let answer = client
                    .get_secret_value()
                    .secret_id(id)
                    .send()
                    .await
                    .map_err(|e| failed(crate::error_chain(&e)))?;
                answer
                    .secret_string()
                    .ok_or_else(|| failed("it holds no text".to_owned()))?
                    .to_owned()
            }
        };
        if token.trim().is_empty() {
            return Err(failed("it is empty".to_owned()));
        }
        Ok(token)
    }
}

/// The token this process takes GitLab's requests with, once [`install`]ed.
static INSTALLED: OnceLock<Option<GitlabToken>> = OnceLock::new();

/// Sets the token this process takes GitLab's requests with, once, at start: the function's
/// `main` and `keyward serve` install [`GitlabToken::from_env`]. A second call keeps the first.
pub fn install(token: Option<GitlabToken>) {
    let _ = INSTALLED.set(token);
}

/// The token installed, if one was.
pub fn installed() -> Option<&'static GitlabToken> {
    INSTALLED.get().and_then(Option::as_ref)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_in_secrets_manager_or_a_file() {
        assert_eq!(
            GitlabToken::parse("secretsmanager:keyward-gitlab-revocation-token")
                .unwrap()
                .source,
            Source::SecretsManager("keyward-gitlab-revocation-token".into())
        );
        assert_eq!(
            GitlabToken::parse("file:/etc/keyward/gitlab")
                .unwrap()
                .source,
            Source::File("/etc/keyward/gitlab".into())
        );
        for bad in ["", "gitlab", "file:", "secretsmanager:", "ssm:/x"] {
            let refused = GitlabToken::parse(bad).err().unwrap_or_default();
            assert!(refused.starts_with(TOKEN_VAR), "{bad}: {refused}");
        }
    }

    #[tokio::test]
    async fn only_the_shared_token_is_admitted_and_a_changed_one_is_read_again_after_a_minute() {
        let file = std::env::temp_dir().join(format!("keyward-gitlab-{}", std::process::id()));
        std::fs::write(&file, "s3cret-shared\n").unwrap();
        let token = GitlabToken::parse(&format!("file:{}", file.display())).unwrap();
        for (presented, admitted) in [
            ("s3cret-shared", true),
            ("Bearer s3cret-shared", true),
            ("s3cret-share", false),
            ("", false),
            ("Bearer ", false),
        ] {
            assert_eq!(
                token.admits(presented).await.unwrap(),
                admitted,
                "{presented:?}"
            );
        }
        std::fs::write(&file, "changed").unwrap();
        assert!(
            !token.admits("changed").await.unwrap(),
            "read at most once a minute"
        );
        let mut read = token.read.lock().await;
        let at = &mut read.as_mut().unwrap().1;
        *at = at.checked_sub(REREAD_AFTER).unwrap();
        drop(read);
        assert!(
            token.admits("changed").await.unwrap(),
            "a minute on, read again"
        );
        assert!(!token.admits("s3cret-shared").await.unwrap());
        std::fs::remove_file(&file).unwrap();
        let gone = GitlabToken::parse(&format!("file:{}", file.display())).unwrap();
        assert!(
            gone.admits("anything").await.is_err(),
            "a token that cannot be read is an error"
        );
    }
}
