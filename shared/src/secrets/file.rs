//! The local file adapter, for `keyward serve` with no AWS endpoint: one JSON file, readable by
//! its owner only (mode `0600`), that holds each secret's current version and the versions
//! still pending (more than one only when overlapping runs raced for one key):
//!
//! ```json
//! {"keyward/billing": {"current": {"version_id": "...", "value": {"key_id", "secret", ...}},
//!                      "pending": []}}
//! ```
//!
//! Every write goes to a new `0600` file that then replaces the old one, so a crash leaves the
//! old file or the new one, never half of one.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Mutex;

use super::{SecretError, SecretSink, SecretValue};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Version {
    version_id: String,
    value: Value,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Entry {
    current: Option<Version>,
    pending: Vec<Version>,
}

type Secrets = BTreeMap<String, Entry>;

/// Delivers secrets to a local JSON file.
#[derive(Clone, Debug)]
pub struct FileSink {
    path: Arc<PathBuf>,
    lock: Arc<Mutex<()>>,
}

impl FileSink {
    /// A sink that writes `path`, which it creates with mode `0600` if it is missing.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: Arc::new(path.into()),
            lock: Arc::new(Mutex::new(())),
        }
    }

    /// The file it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file, changes it with `edit`, and replaces it, while no other call of this
    /// sink does the same.
    async fn edit(
        &self,
        edit: impl FnOnce(&mut Secrets) -> Result<(), SecretError> + Send + 'static,
    ) -> Result<(), SecretError> {
        let _held = self.lock.lock().await;
        let path = Arc::clone(&self.path);
        tokio::task::spawn_blocking(move || {
            let failed = |what: &str| {
                let what = format!("cannot {what} the secrets file {}", path.display());
                move |e: std::io::Error| SecretError::new(what, e)
            };
            let mut secrets: Secrets = match std::fs::read(&*path) {
                Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                    SecretError::new(
                        format!("the secrets file {} is not JSON", path.display()),
                        e,
                    )
                })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Secrets::new(),
                Err(e) => return Err(failed("read")(e)),
            };
            edit(&mut secrets)?;
            let json = serde_json::to_vec_pretty(&secrets).expect("JSON values serialize");
            let temporary = path.with_extension("tmp");
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temporary)
                .map_err(failed("write"))?;
            file.write_all(&json).map_err(failed("write"))?;
            file.sync_all().map_err(failed("write"))?;
            std::fs::rename(&temporary, &*path).map_err(failed("replace"))
        })
        .await
        .map_err(|e| SecretError::new("the secrets file writer stopped", e))?
    }
}

#[async_trait]
impl SecretSink for FileSink {
    async fn put_pending(
        &self,
        secret_id: &str,
        version_id: &str,
        value: &SecretValue<'_>,
    ) -> Result<(), SecretError> {
        let value = serde_json::to_value(value).expect("a value of strings serializes");
        let (secret_id, version_id) = (secret_id.to_owned(), version_id.to_owned());
        self.edit(move |secrets| {
            let entry = secrets.entry(secret_id).or_default();
            let mut known = entry.current.iter().chain(&entry.pending);
            if !known.any(|v| v.version_id == version_id) {
                entry.pending.push(Version { version_id, value });
            }
            Ok(())
        })
        .await
    }

    async fn promote(&self, secret_id: &str, version_id: &str) -> Result<(), SecretError> {
        let (secret_id, version_id) = (secret_id.to_owned(), version_id.to_owned());
        self.edit(move |secrets| {
            let entry = secrets.get_mut(&secret_id).ok_or_else(|| {
                SecretError::msg(format!("the secrets file has no secret {secret_id}"))
            })?;
            if entry
                .current
                .as_ref()
                .is_some_and(|v| v.version_id == version_id)
            {
                return Ok(());
            }
            let position = entry
                .pending
                .iter()
                .position(|v| v.version_id == version_id)
                .ok_or_else(|| {
                    SecretError::msg(format!(
                        "the secret {secret_id} has no version {version_id}"
                    ))
                })?;
            entry.current = Some(entry.pending.swap_remove(position));
            entry.pending.clear();
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use chrono::Utc;

    use super::*;
    use crate::domain::{EnvName, KeyId, Kind, Secret};

    fn read(sink: &FileSink) -> Value {
        serde_json::from_slice(&std::fs::read(sink.path()).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_pending_version_is_current_only_once_promoted_and_the_file_is_private() {
        let mint = crate::mint();
        let dir = std::env::temp_dir().join(format!("keyward-file-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sink = FileSink::new(dir.join("secrets.json"));
        let env = EnvName::parse("production").unwrap();
        let (id, secret) = (
            KeyId::generate(&mint, Utc::now()),
            Secret::generate(&mint, Kind::Secret, &env),
        );
        let value = SecretValue::new(&id, &secret, &env, Utc::now());
        assert!(!format!("{value:?}").contains(secret.expose()));

        sink.put_pending("billing", "v1", &value).await.unwrap();
        let mode = std::fs::metadata(sink.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        sink.put_pending("billing", "v0", &value).await.unwrap();
        sink.put_pending("billing", "v1", &value).await.unwrap();
        assert_eq!(read(&sink)["billing"]["current"], Value::Null);
        assert_eq!(read(&sink)["billing"]["pending"][0]["version_id"], "v1");
        assert_eq!(
            read(&sink)["billing"]["pending"].as_array().unwrap().len(),
            2
        );
        assert!(
            sink.promote("billing", "v2").await.is_err(),
            "an unknown version"
        );
        sink.promote("billing", "v1").await.unwrap();
        sink.promote("billing", "v1").await.unwrap();
        let file = read(&sink);
        assert_eq!(
            file["billing"]["current"]["value"]["secret"],
            secret.expose()
        );
        assert_eq!(file["billing"]["current"]["value"]["key_id"], id.as_str());
        assert_eq!(file["billing"]["pending"], serde_json::json!([]));
        assert!(
            sink.promote("other", "v1").await.is_err(),
            "an unknown secret"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
