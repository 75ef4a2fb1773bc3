//! The store port: what the functions need from storage, and its adapters.
//!
//! The domain decides a [`Change`]; a store applies it all at once with its preconditions, or
//! reports [`StoreError::Conflict`] and applies nothing.

#[cfg(feature = "dynamodb")]
pub mod dynamodb;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::collections::HashMap;
use std::path::PathBuf;

use async_trait::async_trait;

#[cfg(feature = "dynamodb")]
pub use dynamodb::DynamoStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

use crate::domain::{
    Action, ActivityEntry, Change, EnvName, Environment, HourlyUsage, Key, KeyHash, KeyId, LastUse,
    Timestamp, UsageTally,
};

/// A time as the due indexes sort it: fixed-width RFC 3339 in UTC with milliseconds, so that
/// text order is time order.
#[cfg(any(feature = "sqlite", feature = "dynamodb"))]
fn due_sort_key(at: Timestamp) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A precondition of the change no longer holds: somebody else changed the records first.
    #[error("a precondition of the change no longer holds")]
    Conflict,
    /// The change's rotation policy names a secret that another active key of the environment
    /// already delivers to (see [`SecretClaim`](crate::domain::SecretClaim)); nothing was written.
    #[error("another active key already delivers to this secret")]
    SecretClaimed,
    /// The store itself failed; the cause is for the log, never for the client.
    #[error("the store failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Which page of a list to read: at most `limit` items after the `after` cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// How many items at most.
    pub limit: usize,
    /// The id of the last item of the previous page; items come after it, newest first.
    pub after: Option<String>,
}

/// One page of a list, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// The cursor for the next page, if there may be one.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// The page made from up to `limit + 1` items read after the cursor: the extra item, if
    /// there is one, says that another page follows, and the last item kept is its cursor.
    /// Every adapter reads one item more than asked for and lets this decide.
    pub fn from_overfetch(mut items: Vec<T>, limit: usize, id_of: impl Fn(&T) -> String) -> Self {
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(id_of)
        } else {
            None
        };
        Self { items, next_cursor }
    }
}

/// Which entries of an environment's activity to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivityFilter {
    /// Only entries of this action.
    pub action: Option<Action>,
    /// Only entries about this key, as the subject or as a rotation's new key.
    pub key_id: Option<KeyId>,
}

/// The one read behind every key check: a key by the hash of its secret, strongly consistent.
/// The authorizer needs nothing else, so it asks for only this.
#[async_trait]
pub trait KeyLookup: Send + Sync {
    /// The key whose secret hashes to `hash`.
    async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<Key>, StoreError>;
}

/// Whose usage a usage item holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UsageOwner {
    /// A key in its environment: where every usage write goes, so that a role may be limited
    /// to one environment's usage.
    Key(EnvName, KeyId),
    /// A key alone: where versions before usage was kept by environment wrote it. Its hours
    /// expire eight days after they end, but its last use stays, so both are read beside the
    /// new ones.
    Unpartitioned(KeyId),
}

impl UsageOwner {
    /// The key whose usage it is.
    pub fn key_id(&self) -> &KeyId {
        match self {
            Self::Key(_, id) | Self::Unpartitioned(id) => id,
        }
    }
}

/// Where usage counts go, kept apart from the key records so that counting can never make a
/// lifecycle change conflict: no usage write touches a key's item or its version.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Adds a tally's counts to its key's hours and moves its last use forward: one write per
    /// hour the tally spans (one, unless it crosses the hour). Counts are kept for
    /// [`USAGE_RETENTION`](crate::domain::USAGE_RETENTION).
    async fn add_usage(&self, tally: &UsageTally) -> Result<(), StoreError>;
    /// A key's hourly counts from the hour of `since` on, oldest first; hours without checks
    /// are left out. `environment` is the key's.
    async fn hourly_usage(
        &self,
        environment: &EnvName,
        id: &KeyId,
        since: Timestamp,
    ) -> Result<Vec<HourlyUsage>, StoreError>;
    /// The addresses a key's accepted checks came from, by hour, from the hour of `since` on,
    /// as `(hour, address)` pairs in no order. An hour stops taking addresses once it holds
    /// [`SEEN_LIMIT`](crate::domain::SEEN_LIMIT), and a write brings at most that many, so an
    /// hour holds fewer than twice that. `environment` is the key's.
    async fn seen_addresses(
        &self,
        environment: &EnvName,
        id: &KeyId,
        since: Timestamp,
    ) -> Result<Vec<(Timestamp, std::net::IpAddr)>, StoreError>;
    /// When each of these keys, all of `environment`, was last used and refused; a key never
    /// presented is left out.
    async fn last_use(
        &self,
        environment: &EnvName,
        ids: &[&KeyId],
    ) -> Result<HashMap<KeyId, LastUse>, StoreError>;
    /// Moves a key's last use forward to `last`, never back. DynamoDB's stream calls it for
    /// each usage write, since one `UpdateItem` cannot also keep a maximum on another item.
    async fn record_last_use(&self, owner: &UsageOwner, last: LastUse) -> Result<(), StoreError>;
}

/// Everything the management API reads and writes.
#[async_trait]
pub trait KeyStore: KeyLookup + UsageStore {
    /// A key by its id.
    async fn key(&self, id: &KeyId) -> Result<Option<Key>, StoreError>;
    /// An environment by its name.
    async fn environment(&self, name: &EnvName) -> Result<Option<Environment>, StoreError>;
    /// Whether no environment exists yet, so `keyward serve` knows to make the first.
    async fn is_empty(&self) -> Result<bool, StoreError>;
    /// An environment's keys, newest first.
    async fn keys(
        &self,
        environment: &EnvName,
        page: &PageRequest,
    ) -> Result<Page<Key>, StoreError>;
    /// A key's activity, newest first, including rotations that made it.
    async fn key_activity(
        &self,
        id: &KeyId,
        page: &PageRequest,
    ) -> Result<Page<ActivityEntry>, StoreError>;
    /// An environment's activity, newest first, filtered.
    async fn environment_activity(
        &self,
        environment: &EnvName,
        filter: &ActivityFilter,
        page: &PageRequest,
    ) -> Result<Page<ActivityEntry>, StoreError>;
    /// Up to `limit` keys that a scheduled run has something to do with at `now` (their
    /// [`Key::next_due_at`] has come), earliest first, read from an index and strongly
    /// consistent.
    async fn due_keys(&self, now: Timestamp, limit: usize) -> Result<Vec<Key>, StoreError>;
    /// Applies a change with its activity entry atomically, or fails with `Conflict`.
    async fn apply(&self, change: &Change) -> Result<(), StoreError>;
    /// Moves a key in the due index to `until` without changing the key, if it is still at the
    /// version read: what a scheduled run does when it looked at a key and has nothing to do
    /// with it before then. A key changed meanwhile keeps the place its change gave it.
    async fn postpone(&self, key: &Key, until: Timestamp) -> Result<(), StoreError>;
}

/// Where the keys live, as `KEYWARD_STORE` and `--store` name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// An embedded SQLite file.
    Sqlite(PathBuf),
    /// A DynamoDB table, reached through the standard AWS configuration (`AWS_ENDPOINT_URL`, ...).
    DynamoDb(String),
}

impl StoreConfig {
    /// The environment variable that names the store.
    pub const VAR: &'static str = "KEYWARD_STORE";

    /// Parses `sqlite:<path>` or `dynamodb:<table>`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let table_ok = |t: &str| {
            (3..=255).contains(&t.len())
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        };
        match s.split_once(':') {
            Some(("sqlite", path)) if !path.is_empty() => Ok(Self::Sqlite(PathBuf::from(path))),
            Some(("dynamodb", table)) if table_ok(table) => Ok(Self::DynamoDb(table.to_owned())),
            Some(("dynamodb", _)) => Err(format!(
                "{s:?}: a DynamoDB table name is 3 to 255 characters of a-z, A-Z, 0-9, _, . and -"
            )),
            _ => Err(format!(
                "{s:?} is not a store: expected sqlite:<path> or dynamodb:<table>"
            )),
        }
    }

    /// Reads the store from `KEYWARD_STORE`.
    pub fn from_env() -> Result<Self, String> {
        let value = std::env::var(Self::VAR).map_err(|_| {
            format!(
                "{} is not set: expected sqlite:<path> or dynamodb:<table>",
                Self::VAR
            )
        })?;
        Self::parse(&value).map_err(|e| format!("{}: {e}", Self::VAR))
    }

    /// Opens the store, creating an SQLite file's schema if needed. Only `keyward serve` and
    /// the CLI open either kind; a Lambda function opens its table with
    /// [`DynamoStore::table_from_env`].
    #[cfg(all(feature = "sqlite", feature = "dynamodb"))]
    pub async fn open(&self) -> Result<std::sync::Arc<dyn KeyStore>, StoreError> {
        self.open_with(SqliteStore::open).await
    }

    /// Opens the store as [`StoreConfig::open`] does, for the one process that serves it: an
    /// SQLite file is opened with [`SqliteStore::open_owned`], which refuses a second server.
    #[cfg(all(feature = "sqlite", feature = "dynamodb"))]
    pub async fn open_to_serve(&self) -> Result<std::sync::Arc<dyn KeyStore>, StoreError> {
        self.open_with(SqliteStore::open_owned).await
    }

    #[cfg(all(feature = "sqlite", feature = "dynamodb"))]
    async fn open_with(
        &self,
        sqlite: fn(&std::path::Path) -> Result<SqliteStore, StoreError>,
    ) -> Result<std::sync::Arc<dyn KeyStore>, StoreError> {
        match self {
            Self::Sqlite(path) => Ok(std::sync::Arc::new(sqlite(path)?)),
            Self::DynamoDb(table) => Ok(std::sync::Arc::new(DynamoStore::new(
                aws_sdk_dynamodb::Client::new(
                    &crate::aws::config()
                        .await
                        .map_err(|e| StoreError::Backend(e.into()))?,
                ),
                table,
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_config_parses_sqlite_paths_and_refuses_others() {
        assert_eq!(
            StoreConfig::parse("sqlite:keyward.db"),
            Ok(StoreConfig::Sqlite("keyward.db".into()))
        );
        assert_eq!(
            StoreConfig::parse("sqlite:/tmp/a:b.db"),
            Ok(StoreConfig::Sqlite("/tmp/a:b.db".into()))
        );
        assert_eq!(
            StoreConfig::parse("dynamodb:keyward-prod"),
            Ok(StoreConfig::DynamoDb("keyward-prod".into()))
        );
        for bad in [
            "",
            "sqlite:",
            "keyward.db",
            "postgres:x",
            "dynamodb:",
            "dynamodb:a",
            "dynamodb:has space",
        ] {
            assert!(StoreConfig::parse(bad).is_err(), "{bad}");
        }
    }
}
