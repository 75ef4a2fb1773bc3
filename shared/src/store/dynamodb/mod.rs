//! The DynamoDB adapter: the production store, one table.
//!
//! | item | `pk` | `sk` | `gsi1pk` / `gsi1sk` | what else |
//! |---|---|---|---|---|
//! | key | `KEY#<key id>` | `KEY` | `ENV#<env>` / `<key id>` | the key record, `version`; and `gsi2pk` = `DUE` / `gsi2sk` = `<next due time>#<key id>` while the schedule has something to do with it |
//! | hash | `HASH#<sha256>` | `HASH` | | a copy of the key record, and `ttl` (epoch seconds of `expires_at`) |
//! | environment | `ENV#<env>` | `ENV` | `ENVIRONMENTS` / `<env>` | `default_key_id`, `created_at` |
//! | activity (outbox) | `ENVACT#<env>` | `<activity id>` | | the entry; the stream publishes these |
//! | activity per key | `KEYACT#<key id>` | `<activity id>` | | a copy of the entry, for the key and for a rotation's new key |
//! | secret claim | `CLAIM#<env>#<secret>` | `CLAIM` | | `holder`: the key that delivers to the secret (see `SecretClaim`) |
//! | usage per hour | `USAGE#<env>#<key id>` | `H#<hour>` | | `accepted`, `refused`, the hour's latest `last_used_at` and `last_refused_at`, and `ttl` |
//! | seen addresses | `USAGE#<env>#<key id>` | `S#<hour>` | | `ips`: a string set of the addresses the hour's accepted checks came from, added to while it holds fewer than `SEEN_LIMIT`; and `ttl` |
//! | last use | `USAGE#<env>#<key id>` | `LAST` | | `last_used_at`, `last_refused_at`, moved forward by the stream publisher |
//!
//! Usage is kept by environment so that a role that counts one environment's checks (the
//! exported authorizer's) may be limited to `USAGE#<env>#*`. Versions before wrote
//! `USAGE#<key id>` ([`UsageOwner::Unpartitioned`]); those items are read beside the new.
//!
//! Access patterns and their cost (see BENCHMARKS.md for the counts):
//! - check a key: one strongly consistent `GetItem` on its hash item;
//! - read a key: one `GetItem`; list an environment's keys: one `Query` on `gsi1`, newest first;
//! - activity per environment or per key: one `Query` on the base table, newest first,
//!   strongly consistent, with a filter for `?action=`;
//! - keys a scheduled run must handle: one `Query` on the sparse, keys-only `gsi2` for due
//!   times up to now, then one consistent `BatchGetItem` per 100 keys;
//! - count a key's checks: one `UpdateItem` (`ADD`) on its hour's usage item per write (a
//!   process writes a key's counts at most once a minute), never on the key's own items, so that
//!   usage cannot make a lifecycle change conflict; the stream publisher then moves the key's
//!   last use forward (one conditional `UpdateItem` per key and batch, when a minute moved);
//! - a key's hourly usage: one `Query` on its usage partition, and at the same time one on
//!   the partition earlier versions wrote; a key's last use: one eventually consistent
//!   `GetItem`, and a page of keys': one eventually consistent `BatchGetItem` per 100 keys
//!   (last use lags its checks anyway), each with the same again, at the same time, on the
//!   earlier partitions, while a writer of that layout may still be running;
//! - every lifecycle change: one `TransactWriteItems` with the key's version as condition;
//!   one that claims a secret first reads the claim (one `GetItem`) and, when another key
//!   holds it, that key (a second), and conditions the transaction on both being unchanged.
//!
//! DynamoDB's TTL removes hash items after their `expires_at`; expiry itself is always decided
//! by `expires_at`, and the stream's `REMOVE` record of such an item becomes `key.expired`.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{StoreConfig, StoreError};

mod items;
mod read;
mod schema;
mod usage;
mod write;

pub use items::usage_owner;
pub use read::READ_PAGES;
pub use schema::table;
pub use usage::USAGE_WRITE_TIMEOUT;

/// The DynamoDB store.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

type Item = std::collections::HashMap<String, AttributeValue>;

/// Whether a write failed only on its condition.
fn condition_failed(e: &SdkError<UpdateItemError>) -> bool {
    e.as_service_error()
        .is_some_and(UpdateItemError::is_conditional_check_failed_exception)
}

impl DynamoStore {
    /// A store on `table`, with a client built from the standard AWS configuration.
    pub async fn from_env(table: &str) -> Result<Self, String> {
        let config = crate::aws::config().await?;
        Ok(Self::new(Client::new(&config), table))
    }

    /// The table that `KEYWARD_STORE` names, read before any AWS configuration is loaded. A
    /// Lambda function keeps its keys in DynamoDB only, so an SQLite store stops its cold
    /// start.
    pub fn table_from_env() -> Result<String, String> {
        match StoreConfig::from_env()? {
            StoreConfig::DynamoDb(table) => Ok(table),
            StoreConfig::Sqlite(_) => Err(format!(
                "{}: a Lambda function keeps its keys in DynamoDB: expected dynamodb:<table>",
                StoreConfig::VAR
            )),
        }
    }

    /// A store on `table`, with a client built from `aws`, which a function loads once.
    pub fn from_config(aws: &aws_config::SdkConfig, table: &str) -> Self {
        Self::new(Client::new(aws), table)
    }

    /// A store on `table` with this client, which records its calls when the call log is on
    /// (`crate::aws::calls`).
    pub fn new(client: Client, table: &str) -> Self {
        let client = match crate::aws::calls::call_log() {
            Some(log) => Client::from_conf(client.config().to_builder().interceptor(log).build()),
            None => client,
        };
        Self {
            client,
            table: table.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_log_reads_leading_keys_from_this_tables_partition_keys() {
        assert_eq!(
            crate::aws::calls::PARTITION_KEYS,
            [table::PK, table::GSI1_PK, table::GSI2_PK]
        );
    }
}
