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

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, KeysAndAttributes, Projection, ProjectionType, Put,
    ScalarAttributeType, StreamSpecification, StreamViewType, TimeToLiveSpecification,
    TransactWriteItem, Update,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    ActivityFilter, KeyLookup, KeyStore, Page, PageRequest, StoreConfig, StoreError, UsageOwner,
    UsageStore, due_sort_key,
};
use crate::domain::{
    ActivityEntry, Change, EnvName, Environment, EnvironmentWrite, HourlyUsage, Key, KeyHash,
    KeyId, KeyWrite, LastUse, SecretClaim, Timestamp, UsageTally, hour_of,
};

/// The table's names, shared with `keyward table create` and checked against the SAM template.
pub mod table {
    /// Partition key of the table.
    pub const PK: &str = "pk";
    /// Sort key of the table.
    pub const SK: &str = "sk";
    /// The global secondary index of keys by environment, and of the list of environments.
    pub const GSI1: &str = "gsi1";
    /// Partition key of `gsi1`.
    pub const GSI1_PK: &str = "gsi1pk";
    /// Sort key of `gsi1`.
    pub const GSI1_SK: &str = "gsi1sk";
    /// The sparse, keys-only index of keys by when the schedule next has something to do.
    pub const GSI2: &str = "gsi2";
    /// Partition key of `gsi2`: always [`DUE`], on the key items that are due some time.
    pub const GSI2_PK: &str = "gsi2pk";
    /// Sort key of `gsi2`: the due time, then the key id.
    pub const GSI2_SK: &str = "gsi2sk";
    /// The one partition of `gsi2`.
    pub const DUE: &str = "DUE";
    /// Every attribute a key schema names, the table's and both indexes': all strings.
    pub const KEY_ATTRIBUTES: [&str; 6] = [PK, SK, GSI1_PK, GSI1_SK, GSI2_PK, GSI2_SK];
    /// The attribute DynamoDB's TTL reads on hash items, in epoch seconds.
    pub const TTL: &str = "ttl";
    /// Prefix of hash items' partition keys; the stream publisher watches their removal.
    pub const HASH_PREFIX: &str = "HASH#";
    /// Prefix of the activity items that the stream publisher turns into events.
    pub const OUTBOX_PREFIX: &str = "ENVACT#";
    /// Prefix of a key's usage items, `USAGE#<env>#<key id>`; the stream publisher moves its
    /// last use forward when an hour's item is written.
    pub const USAGE_PREFIX: &str = "USAGE#";
    /// Prefix of the sort key of a usage item for one hour.
    pub const HOUR_PREFIX: &str = "H#";
    /// The sort key of a key's last use item.
    pub const LAST: &str = "LAST";
}

/// How long one usage write may take. A write that fails or runs out is put back and goes
/// with the next one, so it is never retried in place, and it is short enough that every
/// write of the shutdown flush, run at once, ends within `usage::SHUTDOWN_BUDGET`.
pub const USAGE_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(300);

/// The client settings of a usage write: one attempt, within [`USAGE_WRITE_TIMEOUT`].
fn usage_write_config() -> aws_sdk_dynamodb::config::Builder {
    aws_sdk_dynamodb::config::Builder::default()
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
                .operation_timeout(USAGE_WRITE_TIMEOUT)
                .build(),
        )
}

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

type Item = HashMap<String, AttributeValue>;

/// The most keys one `BatchGetItem` may ask for.
const MAX_BATCH_GET: usize = 100;

/// How many `BatchGetItem` calls one batch may take before unprocessed keys are an error.
const MAX_BATCH_ATTEMPTS: u32 = 6;

fn to_item<T: Serialize>(value: &T, keys: [(&str, String); 2]) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::to_item(value).map_err(backend)?;
    for (name, value) in keys {
        item.insert(name.to_owned(), s(value));
    }
    Ok(item)
}

fn from_item<T: DeserializeOwned>(item: Item) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(backend)
}

fn key_pk(id: &KeyId) -> String {
    format!("KEY#{id}")
}

fn hash_pk(hash: &KeyHash) -> String {
    format!("{}{}", table::HASH_PREFIX, hash.to_hex())
}

fn env_pk(name: &EnvName) -> String {
    format!("ENV#{name}")
}

fn env_activity_pk(name: &EnvName) -> String {
    format!("{}{name}", table::OUTBOX_PREFIX)
}

fn key_activity_pk(id: &KeyId) -> String {
    format!("KEYACT#{id}")
}

fn usage_pk(owner: &UsageOwner) -> String {
    match owner {
        UsageOwner::Key(environment, id) => format!("{}{environment}#{id}", table::USAGE_PREFIX),
        UsageOwner::Unpartitioned(id) => format!("{}{id}", table::USAGE_PREFIX),
    }
}

/// Whose usage the item with partition key `pk` holds; `None` when it is no usage item.
pub fn usage_owner(pk: &str) -> Option<UsageOwner> {
    let rest = pk.strip_prefix(table::USAGE_PREFIX)?;
    match rest.split_once('#') {
        Some((environment, id)) => Some(UsageOwner::Key(
            EnvName::parse(environment).ok()?,
            KeyId::parse(id).ok()?,
        )),
        None => KeyId::parse(rest).ok().map(UsageOwner::Unpartitioned),
    }
}

fn hour_sk(hour: Timestamp) -> String {
    format!("{}{}", table::HOUR_PREFIX, due_sort_key(hour))
}

/// How long after its hour a usage item lives: the retention and a day, since DynamoDB's TTL
/// removes items up to a couple of days late, and reads filter by time anyway.
const USAGE_TTL: chrono::TimeDelta = chrono::TimeDelta::days(8);

/// A usage item for one hour, as read back.
#[derive(serde::Deserialize)]
struct HourItem {
    sk: String,
    accepted: u64,
    refused: u64,
}

/// A key's last use item, as read back.
#[derive(serde::Deserialize)]
struct LastItem {
    pk: String,
    last_used_at: Option<Timestamp>,
    last_refused_at: Option<Timestamp>,
}

fn claim_pk(claim: &SecretClaim) -> String {
    format!("CLAIM#{}#{}", claim.environment, claim.secret)
}

/// A secret claim item's one field of its own.
#[derive(Serialize, serde::Deserialize)]
struct ClaimItem {
    holder: KeyId,
}

/// A change's transaction, as [`DynamoStore::writes`] builds it.
struct Writes {
    items: Vec<TransactWriteItem>,
    hash_updates: Vec<usize>,
    claim: Vec<usize>,
}

/// How often a change whose claim moved under it is judged again before it is a conflict.
const CLAIM_ATTEMPTS: usize = 3;

/// Why one judged attempt at a change was not applied.
enum Applied {
    /// Only the claim's conditions failed: somebody else changed the claim or its holder.
    ClaimMoved,
    /// Anything else.
    Store(StoreError),
}

impl From<StoreError> for Applied {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// What a change's claim found when it read the claim: the holder then, and that holder's
/// version when the change does not write it itself, so that the transaction can require
/// both to be as they were read.
struct ClaimSeen {
    holder: Option<KeyId>,
    holder_version: Option<u64>,
}

/// The key item, listed in its environment on `gsi1`.
fn key_item(key: &Key) -> Result<Item, StoreError> {
    let mut item = to_item(
        key,
        [(table::PK, key_pk(&key.id)), (table::SK, "KEY".to_owned())],
    )?;
    item.insert(table::GSI1_PK.to_owned(), s(env_pk(&key.environment)));
    item.insert(table::GSI1_SK.to_owned(), s(key.id.as_str()));
    if let Some(at) = key.next_due_at() {
        item.insert(table::GSI2_PK.to_owned(), s(table::DUE));
        item.insert(
            table::GSI2_SK.to_owned(),
            s(format!("{}#{}", due_sort_key(at), key.id)),
        );
    }
    Ok(item)
}

/// The hash item: a copy of the key for the one-read check, with `ttl` set from `expires_at`.
fn hash_item(key: &Key) -> Result<Item, StoreError> {
    let mut item = to_item(
        key,
        [
            (table::PK, hash_pk(&key.hash)),
            (table::SK, "HASH".to_owned()),
        ],
    )?;
    if let Some(at) = key.expires_at {
        item.insert(
            table::TTL.to_owned(),
            AttributeValue::N(at.timestamp().to_string()),
        );
    }
    Ok(item)
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

    fn put(&self, item: Item, condition: Option<&str>) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_owned))
            .build()
            .map_err(backend)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), Transaction> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(match cancelled(&e) {
                Some(failed) => Transaction::Cancelled(failed),
                None => Transaction::Failed(backend(e)),
            }),
        }
    }

    /// The transaction's items, the positions of the hash items that an update rewrites only
    /// if they still exist, and the positions of the secret claim's items.
    fn writes(&self, change: &Change, seen: Option<&ClaimSeen>) -> Result<Writes, StoreError> {
        let mut items = Vec::with_capacity(10);
        let mut hash_updates = Vec::new();
        let mut claim = Vec::new();
        for write in &change.keys {
            match write {
                KeyWrite::Insert(key) => {
                    items.push(self.put(key_item(key)?, Some("attribute_not_exists(pk)"))?);
                    items.push(self.put(hash_item(key)?, Some("attribute_not_exists(pk)"))?);
                }
                KeyWrite::Update {
                    key,
                    expected_version,
                } => {
                    let put = Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(key_item(key)?))
                        .condition_expression("#version = :expected")
                        .expression_attribute_names("#version", "version")
                        .expression_attribute_values(
                            ":expected",
                            AttributeValue::N(expected_version.to_string()),
                        )
                        .build()
                        .map_err(backend)?;
                    items.push(TransactWriteItem::builder().put(put).build());
                    hash_updates.push(items.len());
                    items.push(self.put(hash_item(key)?, Some("attribute_exists(pk)"))?);
                }
            }
        }
        match &change.environment {
            Some(EnvironmentWrite::Create(env)) => {
                let mut item = to_item(
                    env,
                    [
                        (table::PK, env_pk(&env.name)),
                        (table::SK, "ENV".to_owned()),
                    ],
                )?;
                item.insert(table::GSI1_PK.to_owned(), s("ENVIRONMENTS"));
                item.insert(table::GSI1_SK.to_owned(), s(env.name.as_str()));
                items.push(self.put(item, Some("attribute_not_exists(pk)"))?);
            }
            Some(EnvironmentWrite::MoveDefault { name, from, to }) => {
                let update = Update::builder()
                    .table_name(&self.table)
                    .key(table::PK, s(env_pk(name)))
                    .key(table::SK, s("ENV"))
                    .update_expression("SET default_key_id = :to")
                    .condition_expression("default_key_id = :from")
                    .expression_attribute_values(":to", s(to.as_str()))
                    .expression_attribute_values(":from", s(from.as_str()))
                    .build()
                    .map_err(backend)?;
                items.push(TransactWriteItem::builder().update(update).build());
            }
            None => {}
        }
        if let (Some(wanted), Some(seen)) = (&change.secret_claim, seen) {
            let start = items.len();
            self.claim_writes(wanted, seen, &mut items)?;
            claim.extend(start..items.len());
        }
        let entry = &change.activity;
        let sk = entry.id.as_str().to_owned();
        let outbox = to_item(
            entry,
            [
                (table::PK, env_activity_pk(&entry.environment)),
                (table::SK, sk.clone()),
            ],
        )?;
        items.push(self.put(outbox, Some("attribute_not_exists(pk)"))?);
        for key_id in std::iter::once(&entry.key_id).chain(entry.related_key_id()) {
            let copy = to_item(
                entry,
                [
                    (table::PK, key_activity_pk(key_id)),
                    (table::SK, sk.clone()),
                ],
            )?;
            items.push(self.put(copy, None)?);
        }
        Ok(Writes {
            items,
            hash_updates,
            claim,
        })
    }

    /// The claim item, conditioned on the holder that was read, and a check that the holder,
    /// if the change does not write it, is still at the version that was judged.
    fn claim_writes(
        &self,
        claim: &SecretClaim,
        seen: &ClaimSeen,
        items: &mut Vec<TransactWriteItem>,
    ) -> Result<(), StoreError> {
        let item = to_item(
            &ClaimItem {
                holder: claim.holder.clone(),
            },
            [
                (table::PK, claim_pk(claim)),
                (table::SK, "CLAIM".to_owned()),
            ],
        )?;
        let put = Put::builder().table_name(&self.table).set_item(Some(item));
        let put = match &seen.holder {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(holder) => put
                .condition_expression("holder = :seen")
                .expression_attribute_values(":seen", s(holder.as_str())),
        };
        items.push(
            TransactWriteItem::builder()
                .put(put.build().map_err(backend)?)
                .build(),
        );
        if let (Some(holder), Some(version)) = (&seen.holder, seen.holder_version) {
            let check = ConditionCheck::builder()
                .table_name(&self.table)
                .key(table::PK, s(key_pk(holder)))
                .key(table::SK, s("KEY"))
                .condition_expression("#version = :judged")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":judged", AttributeValue::N(version.to_string()))
                .build()
                .map_err(backend)?;
            items.push(TransactWriteItem::builder().condition_check(check).build());
        }
        Ok(())
    }

    /// Reads the claim `change` makes, if any, and judges it: [`StoreError::SecretClaimed`]
    /// when another key still delivers to the secret.
    async fn judge_claim(&self, change: &Change) -> Result<Option<ClaimSeen>, StoreError> {
        let Some(claim) = &change.secret_claim else {
            return Ok(None);
        };
        let item: Option<ClaimItem> = self.get(claim_pk(claim), "CLAIM").await?;
        let Some(holder) = item.map(|i| i.holder) else {
            if let Some(deliverer) = self.unclaimed_deliverer(change, claim).await? {
                return Err(self.refusal(change, &deliverer).await?);
            }
            return Ok(Some(ClaimSeen {
                holder: None,
                holder_version: None,
            }));
        };
        if change.writes(&holder) {
            return Ok(Some(ClaimSeen {
                holder: Some(holder),
                holder_version: None,
            }));
        }
        let current: Option<Key> = self.get(key_pk(&holder), "KEY").await?;
        if !change.may_claim_from(&holder, current.as_ref()) {
            return Err(self.refusal(change, &holder).await?);
        }
        Ok(Some(ClaimSeen {
            holder: Some(holder),
            holder_version: current.map(|k| k.version),
        }))
    }

    /// Why a change may not claim the secret that `holder` holds: a conflict if the change
    /// was decided on a key that changed since (that answer comes first), else the claim.
    async fn refusal(&self, change: &Change, holder: &KeyId) -> Result<StoreError, StoreError> {
        tracing::debug!(%holder, "the secret is another key's");
        Ok(if self.updates_are_current(change).await? {
            StoreError::SecretClaimed
        } else {
            StoreError::Conflict
        })
    }

    /// A key of the claim's environment, other than those the change writes, that delivers
    /// to the secret although nobody holds the claim: a policy stored before secrets had
    /// claims. Read (the environment's keys, on `gsi1`) only for a secret without a claim,
    /// so once per secret.
    async fn unclaimed_deliverer(
        &self,
        change: &Change,
        claim: &SecretClaim,
    ) -> Result<Option<KeyId>, StoreError> {
        let mut page = PageRequest {
            limit: 100,
            after: None,
        };
        loop {
            let keys = self.keys(&claim.environment, &page).await?;
            if let Some(key) = keys.items.iter().find(|key| {
                !change.writes(&key.id) && key.delivers_to(&claim.secret, change.activity.at)
            }) {
                return Ok(Some(key.id.clone()));
            }
            match keys.next_cursor {
                Some(after) => page.after = Some(after),
                None => return Ok(None),
            }
        }
    }

    /// Whether every key the change updates is still at the version it was decided on: a
    /// change decided on a stale key is a conflict, whatever else it would meet.
    async fn updates_are_current(&self, change: &Change) -> Result<bool, StoreError> {
        for write in &change.keys {
            if let KeyWrite::Update {
                key,
                expected_version,
            } = write
            {
                let stored: Option<Key> = self.get(key_pk(&key.id), "KEY").await?;
                if stored.map(|k| k.version) != Some(*expected_version) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Applies a change whose claim was judged as `seen`, in one transaction. A key's hash
    /// item is only ever deleted by TTL, after the key expired; when an update finds it gone,
    /// the change is applied again without it, so that nothing brings back what TTL removed.
    async fn apply_judged(&self, change: &Change, seen: Option<&ClaimSeen>) -> Result<(), Applied> {
        let first = self.writes(change, seen)?;
        let gone = match self.transact(first.items).await {
            Ok(()) => return Ok(()),
            Err(Transaction::Failed(e)) => return Err(e.into()),
            Err(Transaction::Cancelled(failed)) if failed.is_empty() => {
                // Another transaction touched one of the items. With a claim, that may be a
                // rival claim: judge again, and a stale key still ends as a conflict then.
                return Err(match seen {
                    Some(_) => Applied::ClaimMoved,
                    None => StoreError::Conflict.into(),
                });
            }
            Err(Transaction::Cancelled(failed)) => {
                if failed.iter().all(|i| first.claim.contains(i)) {
                    return Err(Applied::ClaimMoved);
                }
                if !failed.iter().all(|i| first.hash_updates.contains(i)) {
                    return Err(StoreError::Conflict.into());
                }
                failed
            }
        };
        // Rare: build the items again rather than keep a copy of every transaction.
        let rest = self
            .writes(change, seen)?
            .items
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !gone.contains(i))
            .map(|(_, item)| item)
            .collect();
        match self.transact(rest).await {
            Ok(()) => Ok(()),
            Err(Transaction::Failed(e)) => Err(e.into()),
            Err(Transaction::Cancelled(_)) => Err(StoreError::Conflict.into()),
        }
    }

    async fn get<T: DeserializeOwned>(
        &self,
        pk: String,
        sk: &str,
    ) -> Result<Option<T>, StoreError> {
        self.get_read(pk, sk, true).await
    }

    /// One usage partition's hourly counts from the hour of `since` on, oldest first.
    async fn usage_hours(
        &self,
        owner: &UsageOwner,
        since: Timestamp,
    ) -> Result<Vec<HourlyUsage>, StoreError> {
        let mut hours = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk AND #sk BETWEEN :from AND :to")
                .expression_attribute_names("#pk", table::PK)
                .expression_attribute_names("#sk", table::SK)
                .expression_attribute_values(":pk", s(usage_pk(owner)))
                .expression_attribute_values(":from", s(hour_sk(hour_of(since))))
                .expression_attribute_values(":to", s(format!("{}~", table::HOUR_PREFIX)))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(backend)?;
            for item in out.items.unwrap_or_default() {
                let item: HourItem = from_item(item)?;
                let hour = item
                    .sk
                    .strip_prefix(table::HOUR_PREFIX)
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .ok_or_else(|| backend(std::io::Error::other("a usage item without its hour")))?
                    .to_utc();
                hours.push(HourlyUsage {
                    hour,
                    accepted: item.accepted,
                    refused: item.refused,
                });
            }
            match out.last_evaluated_key {
                Some(last) => start = Some(last),
                None => break,
            }
        }
        Ok(hours)
    }

    /// The last use items of these usage partitions, by key; one without an item is left out.
    async fn last_items(
        &self,
        owners: &[UsageOwner],
    ) -> Result<HashMap<KeyId, LastUse>, StoreError> {
        let last = |item: &LastItem| LastUse {
            last_used_at: item.last_used_at,
            last_refused_at: item.last_refused_at,
        };
        let mut found = HashMap::new();
        // One key, as every route but the list asks: a GetItem, which every function may send.
        if let [owner] = owners {
            if let Some(item) = self
                .get_read::<LastItem>(usage_pk(owner), table::LAST, false)
                .await?
            {
                found.insert(owner.key_id().clone(), last(&item));
            }
            return Ok(found);
        }
        for chunk in owners.chunks(MAX_BATCH_GET) {
            let keys = chunk
                .iter()
                .map(|owner| {
                    Item::from([
                        (table::PK.to_owned(), s(usage_pk(owner))),
                        (table::SK.to_owned(), s(table::LAST)),
                    ])
                })
                .collect();
            for item in self.batch_get::<LastItem>(keys, false).await? {
                let owner = usage_owner(&item.pk).ok_or_else(|| {
                    backend(std::io::Error::other("a last use item without its key"))
                })?;
                found.insert(owner.key_id().clone(), last(&item));
            }
        }
        Ok(found)
    }

    /// [`DynamoStore::get`], strongly consistent or not: a last use, which lags its checks
    /// anyway, is read eventually consistent, for half the read units.
    async fn get_read<T: DeserializeOwned>(
        &self,
        pk: String,
        sk: &str,
        consistent: bool,
    ) -> Result<Option<T>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(table::PK, s(pk))
            .key(table::SK, s(sk))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(backend)?;
        out.item.map(from_item).transpose()
    }

    /// Reads up to `limit + 1` matching items, newest first, following DynamoDB's own pages
    /// (a filter may leave a page short or empty); whether a `LastEvaluatedKey` comes with the
    /// last page does not matter, because the extra item alone says whether more follow.
    ///
    /// One request reads at most [`READ_PAGES`] times `limit + 1` items, whatever the filter
    /// leaves of them. When it stops there, short of `limit` matches, the page holds what it
    /// found and a cursor at the last item read, so the next request goes on from there.
    async fn page<T: DeserializeOwned>(
        &self,
        query: Query<'_>,
        request: &PageRequest,
        id_of: impl Fn(&T) -> String,
    ) -> Result<Page<T>, StoreError> {
        let want = request.limit + 1;
        let budget = READ_PAGES * want;
        let mut read = 0;
        let mut items: Vec<T> = Vec::with_capacity(want);
        let mut start = request.after.as_ref().map(|after| (query.start)(after));
        loop {
            let limit = (want - items.len()).min(budget - read);
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(format!("{} = :pk", query.pk_name))
                .expression_attribute_values(":pk", s(query.pk.clone()))
                .scan_index_forward(false)
                .limit(i32::try_from(limit).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take());
            if let Some(index) = query.index {
                q = q.index_name(index);
            } else {
                q = q.consistent_read(true);
            }
            for (name, value) in &query.filter {
                q = q.expression_attribute_values(*name, value.clone());
            }
            for (placeholder, name) in &query.names {
                q = q.expression_attribute_names(*placeholder, *name);
            }
            if let Some(expression) = &query.filter_expression {
                q = q.filter_expression(expression);
            }
            let out = q.send().await.map_err(backend)?;
            let returned = out.items.unwrap_or_default();
            read += usize::try_from(out.scanned_count)
                .unwrap_or(0)
                .max(returned.len());
            for item in returned {
                items.push(from_item(item)?);
            }
            match out.last_evaluated_key {
                Some(last) if items.len() < want && read < budget => start = Some(last),
                Some(last) if items.len() < want => {
                    let Some(AttributeValue::S(sk)) = last.get(query.sk_name) else {
                        return Err(StoreError::Backend(
                            "a query stopped at an item without its sort key".into(),
                        ));
                    };
                    return Ok(Page {
                        items,
                        next_cursor: Some(sk.clone()),
                    });
                }
                _ => break,
            }
        }
        Ok(Page::from_overfetch(items, request.limit, id_of))
    }

    /// Creates the table with its indexes, stream and TTL, as `keyward table create` does.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        self.create_table_request()?
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build()
                    .map_err(backend)?,
            )
            .send()
            .await
            .map_err(backend)?;
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(table::TTL)
                    .build()
                    .map_err(backend)?,
            )
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// The table's `CreateTable` request with its keys, both indexes and on-demand billing,
    /// but no stream: [`DynamoStore::create_table`] adds the stream, and a benchmark that
    /// reads none sends it as it is (moto copies a table's stream records on every write).
    pub fn create_table_request(&self) -> Result<CreateTableFluentBuilder, StoreError> {
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
        };
        let index = |name: &str, pk: &str, sk: &str, projection: ProjectionType| {
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key(pk, KeyType::Hash).map_err(backend)?)
                .key_schema(key(sk, KeyType::Range).map_err(backend)?)
                .projection(Projection::builder().projection_type(projection).build())
                .build()
                .map_err(backend)
        };
        let gsi = index(
            table::GSI1,
            table::GSI1_PK,
            table::GSI1_SK,
            ProjectionType::All,
        )?;
        let due = index(
            table::GSI2,
            table::GSI2_PK,
            table::GSI2_SK,
            ProjectionType::KeysOnly,
        )?;
        let mut create = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest);
        for name in table::KEY_ATTRIBUTES {
            create = create.attribute_definitions(attribute(name).map_err(backend)?);
        }
        Ok(create
            .key_schema(key(table::PK, KeyType::Hash).map_err(backend)?)
            .key_schema(key(table::SK, KeyType::Range).map_err(backend)?)
            .global_secondary_indexes(gsi)
            .global_secondary_indexes(due))
    }

    /// Reads up to 100 items with one `BatchGetItem` (strongly consistent or not), and again,
    /// after a growing pause, for any keys DynamoDB leaves unprocessed when it throttles.
    async fn batch_get<T: DeserializeOwned>(
        &self,
        mut ids: Vec<Item>,
        consistent: bool,
    ) -> Result<Vec<T>, StoreError> {
        let mut keys = Vec::with_capacity(ids.len());
        for attempt in 0u32.. {
            if ids.is_empty() {
                break;
            }
            if attempt == MAX_BATCH_ATTEMPTS {
                return Err(backend(std::io::Error::other(format!(
                    "{} keys were still unprocessed after {attempt} BatchGetItem calls",
                    ids.len()
                ))));
            }
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(25 << attempt)).await;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut ids)))
                .consistent_read(consistent)
                .build()
                .map_err(backend)?;
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(backend)?;
            for item in out
                .responses
                .and_then(|mut r| r.remove(&self.table))
                .unwrap_or_default()
            {
                keys.push(from_item(item)?);
            }
            if let Some(left) = out.unprocessed_keys.and_then(|mut u| u.remove(&self.table)) {
                ids = left.keys;
            }
        }
        Ok(keys)
    }

    /// The table's stream ARN, for the local stream poller.
    pub async fn stream_arn(&self) -> Result<Option<String>, StoreError> {
        let out = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(backend)?;
        Ok(out.table.and_then(|t| t.latest_stream_arn))
    }
}

/// How many pages' worth of items one list request may read: a filter that matches little
/// on a busy environment makes a short page with a cursor, not a read of the whole partition.
pub const READ_PAGES: usize = 5;

/// One paginated query: which partition, how to resume after a cursor, and what to filter.
struct Query<'a> {
    index: Option<&'static str>,
    pk_name: &'static str,
    /// The sort key's name, whose value in a `LastEvaluatedKey` is the cursor to go on from.
    sk_name: &'static str,
    pk: String,
    start: Box<dyn Fn(&str) -> Item + Send + Sync + 'a>,
    filter_expression: Option<String>,
    filter: Vec<(&'static str, AttributeValue)>,
    names: Vec<(&'static str, &'static str)>,
}

/// Resumes an activity query after the entry `after` in partition `pk`.
fn after_activity(pk: String) -> Box<dyn Fn(&str) -> Item + Send + Sync> {
    Box::new(move |after| {
        HashMap::from([
            (table::PK.to_owned(), s(pk.clone())),
            (table::SK.to_owned(), s(after)),
        ])
    })
}

/// Whether a failed transaction lost to a competing writer, and so is a domain conflict.
/// Why a transaction did not apply.
enum Transaction {
    /// Cancelled by conditions or by a concurrent transaction: the positions of the items
    /// whose condition failed (empty when another transaction got in the way).
    Cancelled(Vec<usize>),
    /// Any other failure.
    Failed(StoreError),
}

/// The positions of the failed conditions, if the transaction was cancelled by a condition or
/// by a conflicting transaction.
fn cancelled(e: &SdkError<TransactWriteItemsError>) -> Option<Vec<usize>> {
    let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
        e.as_service_error()
    else {
        return None;
    };
    let reasons = cancelled.cancellation_reasons();
    let conflict = reasons
        .iter()
        .any(|r| r.code() == Some("TransactionConflict"));
    let failed: Vec<usize> = reasons
        .iter()
        .enumerate()
        .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
        .map(|(i, _)| i)
        .collect();
    match (conflict, failed.is_empty()) {
        (false, true) => None,
        (true, _) => Some(Vec::new()),
        (false, false) => Some(failed),
    }
}

/// Whether a write failed only on its condition.
fn condition_failed(e: &SdkError<UpdateItemError>) -> bool {
    e.as_service_error()
        .is_some_and(UpdateItemError::is_conditional_check_failed_exception)
}

#[async_trait]
impl UsageStore for DynamoStore {
    async fn add_usage(&self, tally: &UsageTally) -> Result<(), StoreError> {
        for (hour, (accepted, refused)) in &tally.hours {
            let mut set = vec!["#ttl = :ttl".to_owned()];
            let mut update = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(
                    table::PK,
                    s(usage_pk(&UsageOwner::Key(
                        tally.environment.clone(),
                        tally.key_id.clone(),
                    ))),
                )
                .key(table::SK, s(hour_sk(*hour)))
                .expression_attribute_names("#ttl", table::TTL)
                .expression_attribute_values(":a", AttributeValue::N(accepted.to_string()))
                .expression_attribute_values(":r", AttributeValue::N(refused.to_string()))
                .expression_attribute_values(
                    ":ttl",
                    AttributeValue::N((*hour + USAGE_TTL).timestamp().to_string()),
                );
            // The hour's latest minutes ride on its item, so that the stream can carry them to
            // the key's last use; a late write may set an earlier minute here, which the last
            // use, kept as a maximum, ignores.
            for (name, placeholder, at) in [
                ("last_used_at", ":u", tally.last.last_used_at),
                ("last_refused_at", ":f", tally.last.last_refused_at),
            ] {
                if let Some(at) = at.filter(|at| hour_of(*at) == *hour) {
                    set.push(format!("{name} = {placeholder}"));
                    update = update.expression_attribute_values(placeholder, s(due_sort_key(at)));
                }
            }
            update
                .update_expression(format!(
                    "ADD accepted :a, refused :r SET {}",
                    set.join(", ")
                ))
                .customize()
                .config_override(usage_write_config())
                .send()
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    async fn hourly_usage(
        &self,
        environment: &EnvName,
        id: &KeyId,
        since: Timestamp,
    ) -> Result<Vec<HourlyUsage>, StoreError> {
        let (partitioned, unpartitioned) = (
            UsageOwner::Key(environment.clone(), id.clone()),
            UsageOwner::Unpartitioned(id.clone()),
        );
        let (mut hours, earlier) = tokio::try_join!(
            self.usage_hours(&partitioned, since),
            self.usage_hours(&unpartitioned, since)
        )?;
        if earlier.is_empty() {
            return Ok(hours);
        }
        // An hour that a version before and this one both counted (while a deploy rolls out)
        // is the sum of the two.
        for old in earlier {
            match hours.iter_mut().find(|h| h.hour == old.hour) {
                Some(hour) => {
                    hour.accepted += old.accepted;
                    hour.refused += old.refused;
                }
                None => hours.push(old),
            }
        }
        hours.sort_by_key(|h| h.hour);
        Ok(hours)
    }

    async fn last_use(
        &self,
        environment: &EnvName,
        ids: &[&KeyId],
    ) -> Result<HashMap<KeyId, LastUse>, StoreError> {
        let owners: Vec<UsageOwner> = ids
            .iter()
            .map(|id| UsageOwner::Key(environment.clone(), (*id).clone()))
            .collect();
        // Versions before usage was kept by environment may still be counting (a second
        // deployment of the authorizer not yet upgraded), so both are read, at once, and the
        // later of each time is the key's.
        let earlier: Vec<UsageOwner> = ids
            .iter()
            .map(|id| UsageOwner::Unpartitioned((*id).clone()))
            .collect();
        let (mut found, before) =
            tokio::try_join!(self.last_items(&owners), self.last_items(&earlier))?;
        for (id, last) in before {
            let merged = found.get(&id).copied().unwrap_or_default().merge(last);
            found.insert(id, merged);
        }
        Ok(found)
    }

    async fn record_last_use(&self, owner: &UsageOwner, last: LastUse) -> Result<(), StoreError> {
        for (name, at) in [
            ("last_used_at", last.last_used_at),
            ("last_refused_at", last.last_refused_at),
        ] {
            let Some(at) = at else { continue };
            let written = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(table::PK, s(usage_pk(owner)))
                .key(table::SK, s(table::LAST))
                .update_expression("SET #at = :at")
                .condition_expression("attribute_not_exists(#at) OR #at < :at")
                .expression_attribute_names("#at", name)
                .expression_attribute_values(":at", s(due_sort_key(at)))
                .send()
                .await;
            match written {
                Err(e) if !condition_failed(&e) => return Err(backend(e)),
                _ => {}
            }
        }
        Ok(())
    }
}

#[async_trait]
impl KeyLookup for DynamoStore {
    async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<Key>, StoreError> {
        self.get(hash_pk(hash), "HASH").await
    }
}

#[async_trait]
impl KeyStore for DynamoStore {
    async fn key(&self, id: &KeyId) -> Result<Option<Key>, StoreError> {
        self.get(key_pk(id), "KEY").await
    }

    async fn environment(&self, name: &EnvName) -> Result<Option<Environment>, StoreError> {
        self.get(env_pk(name), "ENV").await
    }

    async fn is_empty(&self) -> Result<bool, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(table::GSI1)
            .key_condition_expression("gsi1pk = :pk")
            .expression_attribute_values(":pk", s("ENVIRONMENTS"))
            .limit(1)
            .send()
            .await
            .map_err(backend)?;
        Ok(out.items.unwrap_or_default().is_empty())
    }

    async fn keys(
        &self,
        environment: &EnvName,
        request: &PageRequest,
    ) -> Result<Page<Key>, StoreError> {
        let env = env_pk(environment);
        let query = Query {
            index: Some(table::GSI1),
            pk_name: table::GSI1_PK,
            sk_name: table::GSI1_SK,
            pk: env.clone(),
            start: Box::new(move |after| {
                HashMap::from([
                    (table::PK.to_owned(), s(format!("KEY#{after}"))),
                    (table::SK.to_owned(), s("KEY")),
                    (table::GSI1_PK.to_owned(), s(env.clone())),
                    (table::GSI1_SK.to_owned(), s(after)),
                ])
            }),
            filter_expression: None,
            filter: Vec::new(),
            names: Vec::new(),
        };
        self.page(query, request, |k: &Key| k.id.to_string()).await
    }

    async fn key_activity(
        &self,
        id: &KeyId,
        request: &PageRequest,
    ) -> Result<Page<ActivityEntry>, StoreError> {
        let pk = key_activity_pk(id);
        let query = Query {
            index: None,
            pk_name: table::PK,
            sk_name: table::SK,
            pk: pk.clone(),
            start: after_activity(pk),
            filter_expression: None,
            filter: Vec::new(),
            names: Vec::new(),
        };
        self.page(query, request, |e: &ActivityEntry| e.id.as_str().to_owned())
            .await
    }

    async fn environment_activity(
        &self,
        environment: &EnvName,
        filter: &ActivityFilter,
        request: &PageRequest,
    ) -> Result<Page<ActivityEntry>, StoreError> {
        let (mut conditions, mut values, mut names) = (Vec::new(), Vec::new(), Vec::new());
        let pk = match &filter.key_id {
            Some(key_id) => {
                conditions.push("#environment = :environment");
                values.push((":environment", s(environment.as_str())));
                names.push(("#environment", "environment"));
                key_activity_pk(key_id)
            }
            None => env_activity_pk(environment),
        };
        if let Some(action) = filter.action {
            conditions.push("#action = :action");
            values.push((":action", s(action.as_str())));
            names.push(("#action", "action"));
        }
        let query = Query {
            index: None,
            pk_name: table::PK,
            sk_name: table::SK,
            pk: pk.clone(),
            start: after_activity(pk),
            filter_expression: (!conditions.is_empty()).then(|| conditions.join(" AND ")),
            filter: values,
            names,
        };
        self.page(query, request, |e: &ActivityEntry| e.id.as_str().to_owned())
            .await
    }

    async fn due_keys(&self, now: Timestamp, limit: usize) -> Result<Vec<Key>, StoreError> {
        let upto = format!("{}#~", due_sort_key(now));
        let mut ids: Vec<Item> = Vec::new();
        let mut start = None;
        while ids.len() < limit {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(table::GSI2)
                .key_condition_expression("#pk = :due AND #sk <= :upto")
                .expression_attribute_names("#pk", table::GSI2_PK)
                .expression_attribute_names("#sk", table::GSI2_SK)
                .expression_attribute_values(":due", s(table::DUE))
                .expression_attribute_values(":upto", s(upto.clone()))
                .limit(i32::try_from(limit - ids.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(backend)?;
            ids.extend(out.items.unwrap_or_default().into_iter().map(|item| {
                [table::PK, table::SK]
                    .into_iter()
                    .filter_map(|name| Some((name.to_owned(), item.get(name)?.clone())))
                    .collect::<Item>()
            }));
            match out.last_evaluated_key {
                Some(last) => start = Some(last),
                None => break,
            }
        }
        let mut keys = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_BATCH_GET) {
            keys.extend(self.batch_get::<Key>(chunk.to_vec(), true).await?);
        }
        // In the index's order, which is where each key's due time put it: a key whose grace
        // watch a run moved on sits there, not at the time its record alone would give.
        let order: HashMap<String, usize> = ids
            .iter()
            .enumerate()
            .filter_map(|(n, item)| match item.get(table::PK) {
                Some(AttributeValue::S(pk)) => Some((pk.clone(), n)),
                _ => None,
            })
            .collect();
        keys.sort_by_key(|k| order.get(&key_pk(&k.id)).copied().unwrap_or(usize::MAX));
        Ok(keys)
    }

    async fn postpone(&self, key: &Key, until: Timestamp) -> Result<(), StoreError> {
        let moved = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(table::PK, s(key_pk(&key.id)))
            .key(table::SK, s("KEY"))
            .update_expression("SET #due = :due")
            .condition_expression("#version = :version AND attribute_exists(#due)")
            .expression_attribute_names("#due", table::GSI2_SK)
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":due", s(format!("{}#{}", due_sort_key(until), key.id)))
            .expression_attribute_values(":version", AttributeValue::N(key.version.to_string()))
            .send()
            .await;
        match moved {
            Err(e) if !condition_failed(&e) => Err(backend(e)),
            _ => Ok(()),
        }
    }

    /// Judges the change's claim, if it makes one, then applies it in one transaction. If the
    /// claim moved between the reads and the transaction, it judges again, so that racing
    /// claims end as one applied and the rest [`StoreError::SecretClaimed`], not as conflicts.
    async fn apply(&self, change: &Change) -> Result<(), StoreError> {
        let mut attempt = 1;
        loop {
            let seen = self.judge_claim(change).await?;
            match self.apply_judged(change, seen.as_ref()).await {
                Ok(()) => return Ok(()),
                Err(Applied::Store(e)) => return Err(e),
                Err(Applied::ClaimMoved) if attempt < CLAIM_ATTEMPTS => attempt += 1,
                Err(Applied::ClaimMoved) => return Err(StoreError::Conflict),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        Actor, KeyName, Kind, NewKey, PolicyChange, RotationPolicy, Scopes, create_environment,
        create_key, set_rotation_policy,
    };

    #[test]
    fn a_usage_partition_names_its_key_in_either_layout_and_nothing_else_is_one() {
        let production = EnvName::parse("production").unwrap();
        let id = KeyId::parse("key_0123456789abcdefghijkl").unwrap();
        for owner in [
            UsageOwner::Key(production.clone(), id.clone()),
            UsageOwner::Unpartitioned(id.clone()),
        ] {
            assert_eq!(usage_owner(&usage_pk(&owner)), Some(owner));
        }
        assert_eq!(
            usage_pk(&UsageOwner::Key(production, id.clone())),
            format!("USAGE#production#{id}")
        );
        for pk in [
            "USAGE#",
            "USAGE#production#",
            "USAGE#production",
            "USAGE#Production#key_0123456789abcdefghijkl",
            "USAGE#production#key_0123456789abcdefghijkl#x",
            "USAGE#key_0123456789abcdefghijkl#key_0123456789abcdefghijkl",
            "KEY#key_0123456789abcdefghijkl",
        ] {
            assert_eq!(usage_owner(pk), None, "{pk}");
        }
    }

    /// A DynamoDB store on a loopback endpoint that `answer` serves, and a tally to write.
    async fn store_on(
        answer: impl Fn(tokio::net::TcpStream) + Send + 'static,
    ) -> (DynamoStore, UsageTally) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                answer(stream);
            }
        });
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "id", "secret", None, None, "test",
            ))
            .endpoint_url(format!("http://{address}"))
            .build();
        let mut tally = UsageTally::new(
            EnvName::parse("production").unwrap(),
            KeyId::generate(&crate::mint(), crate::now()),
        );
        tally.count(true, crate::now());
        (DynamoStore::new(Client::from_conf(config), "usage"), tally)
    }

    /// A usage write that fails is not tried again (it goes with the next write instead),
    /// and runs out within its timeout, whatever the function's client would do.
    #[test]
    fn a_usage_write_is_one_attempt_with_a_timeout_of_its_own() {
        let config = usage_write_config().build();
        assert_eq!(config.retry_config().map(|r| r.max_attempts()), Some(1));
        assert_eq!(
            config.timeout_config().and_then(|t| t.operation_timeout()),
            Some(USAGE_WRITE_TIMEOUT)
        );
    }

    /// A usage write to an endpoint that never answers gives up by itself, where the SDK's own
    /// settings would wait without end, past the shutdown flush's budget.
    #[tokio::test]
    async fn a_usage_write_gives_up_on_an_endpoint_that_never_answers() {
        const { assert!(USAGE_WRITE_TIMEOUT.as_millis() < crate::usage::SHUTDOWN_BUDGET.as_millis()) };
        let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let holding = std::sync::Arc::clone(&held);
        let (store, tally) = store_on(move |stream| holding.lock().unwrap().push(stream)).await;
        let written = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            UsageStore::add_usage(&store, &tally),
        )
        .await
        .expect("the write gives up by itself, long before this guard");
        assert!(written.is_err());
        drop(held);
    }

    #[test]
    fn the_call_log_reads_leading_keys_from_this_tables_partition_keys() {
        assert_eq!(
            crate::aws::calls::PARTITION_KEYS,
            [table::PK, table::GSI1_PK, table::GSI2_PK]
        );
    }

    fn policy(secret_id: &str) -> Option<RotationPolicy> {
        let json =
            serde_json::json!({"every": "P30D", "grace_period": "24h", "secret_id": secret_id});
        Some(RotationPolicy::from_json(&json).unwrap())
    }

    fn set(key: &Key, policy: Option<RotationPolicy>) -> (Key, Change) {
        let now = crate::now();
        match set_rotation_policy(key, policy, Actor::operator("t"), &crate::mint(), now).unwrap() {
            PolicyChange::Changed { key, change } => (key, *change),
            PolicyChange::Unchanged(_) => panic!("unchanged"),
        }
    }

    /// A takeover judged while the holder had stopped delivering, but applied after the
    /// holder took its secret back: the claim item still names the same holder, so only the
    /// check of the holder's version stops it; judged again, the claim is refused.
    #[tokio::test]
    async fn a_takeover_racing_the_holder_taking_its_secret_back_is_refused() {
        assert!(
            std::env::var_os("AWS_ENDPOINT_URL").is_some(),
            "AWS_ENDPOINT_URL is not set: run ./scripts/test, which starts moto's server"
        );
        let store = DynamoStore::from_env(&format!("claims-{}", std::process::id()))
            .await
            .unwrap();
        store.create_table().await.unwrap();
        let (mint, now) = (crate::mint(), crate::now());
        let env = EnvName::parse("production").unwrap();
        let made = create_environment(&env, Actor::operator("t"), &mint, now);
        store.apply(&made.change).await.unwrap();
        let secret = "keyward/production/orders";
        let new_key = |name: &str| NewKey {
            name: KeyName::parse(name).unwrap(),
            kind: Kind::Secret,
            scopes: Scopes::parse(&["orders:read"]).unwrap(),
            expires_at: None,
            rotation_policy: policy(secret),
        };
        let holder = create_key(&env, new_key("holder"), Actor::operator("t"), &mint, now).unwrap();
        store.apply(&holder.change).await.unwrap();
        let (paused, cleared) = set(&holder.key, None);
        store.apply(&cleared).await.unwrap();

        let rival = create_key(&env, new_key("rival"), Actor::operator("t"), &mint, now).unwrap();
        let seen = store.judge_claim(&rival.change).await.unwrap();
        assert!(seen.as_ref().is_some_and(|s| s.holder_version.is_some()));
        let (_, back) = set(&paused, policy(secret));
        store.apply(&back).await.unwrap();

        assert!(matches!(
            store.apply_judged(&rival.change, seen.as_ref()).await,
            Err(Applied::ClaimMoved)
        ));
        assert!(matches!(
            store.apply(&rival.change).await,
            Err(StoreError::SecretClaimed)
        ));
        assert_eq!(store.key(&rival.key.id).await.unwrap(), None);
    }
}
