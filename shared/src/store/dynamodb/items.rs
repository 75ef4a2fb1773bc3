//! How keyward's records map to the table's items: each item's keys, built from the names in
//! [`table`], and the records' fields.

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Item, backend, s, table};
use crate::domain::{EnvName, Key, KeyHash, KeyId, SecretClaim, Timestamp};
use crate::store::{StoreError, UsageOwner, due_sort_key};

/// A record as an item, with its partition and sort key added.
pub(super) fn to_item<T: Serialize>(
    value: &T,
    keys: [(&str, String); 2],
) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::to_item(value).map_err(backend)?;
    for (name, value) in keys {
        item.insert(name.to_owned(), s(value));
    }
    Ok(item)
}

/// An item as the record it holds.
pub(super) fn from_item<T: DeserializeOwned>(item: Item) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(backend)
}

/// A key item's partition key, from a key id or a page's cursor (the last key id read).
pub(super) fn key_pk(id: impl std::fmt::Display) -> String {
    format!("{}{id}", table::KEY_PREFIX)
}

/// A hash item's partition key.
pub(super) fn hash_pk(hash: &KeyHash) -> String {
    format!("{}{}", table::HASH_PREFIX, hash.to_hex())
}

/// An environment item's partition key, and its keys' `gsi1pk`.
pub(super) fn env_pk(name: &EnvName) -> String {
    format!("{}{name}", table::ENV_PREFIX)
}

/// The partition of an environment's activity, the outbox.
pub(super) fn env_activity_pk(name: &EnvName) -> String {
    format!("{}{name}", table::OUTBOX_PREFIX)
}

/// The partition of one key's activity.
pub(super) fn key_activity_pk(id: &KeyId) -> String {
    format!("{}{id}", table::KEY_ACTIVITY_PREFIX)
}

/// A secret claim item's partition key.
pub(super) fn claim_pk(claim: &SecretClaim) -> String {
    format!(
        "{}{}#{}",
        table::CLAIM_PREFIX,
        claim.environment,
        claim.secret
    )
}

/// A key's place in the due index, `gsi2sk`: when the schedule next has something to do
/// with it, then its id.
pub(super) fn due_sk(at: Timestamp, id: &KeyId) -> String {
    format!("{}#{id}", due_sort_key(at))
}

/// The partition of a key's usage items.
pub(super) fn usage_pk(owner: &UsageOwner) -> String {
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

/// The sort key of a usage partition's item of one hour, of the kind `prefix` names
/// ([`table::HOUR_PREFIX`] for counts, [`table::SEEN_PREFIX`] for addresses).
pub(super) fn usage_sk(prefix: &str, hour: Timestamp) -> String {
    format!("{prefix}{}", due_sort_key(hour))
}

/// The hour a usage sort key of the kind `prefix` names; `None` for another kind or text.
pub(super) fn usage_sk_hour(prefix: &str, sk: &str) -> Option<Timestamp> {
    let text = sk.strip_prefix(prefix)?;
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.to_utc())
}

/// A usage item for one hour, as read back.
#[derive(serde::Deserialize)]
pub(super) struct HourItem {
    pub(super) sk: String,
    pub(super) accepted: u64,
    pub(super) refused: u64,
}

/// A key's last use item, as read back.
#[derive(serde::Deserialize)]
pub(super) struct LastItem {
    pub(super) pk: String,
    pub(super) last_used_at: Option<Timestamp>,
    pub(super) last_refused_at: Option<Timestamp>,
}

/// A secret claim item's one field of its own.
#[derive(Serialize, serde::Deserialize)]
pub(super) struct ClaimItem {
    pub(super) holder: KeyId,
}

/// The key item, listed in its environment on `gsi1`, and in the due index while the
/// schedule has something to do with it.
pub(super) fn key_item(key: &Key) -> Result<Item, StoreError> {
    let mut item = to_item(
        key,
        [
            (table::PK, key_pk(&key.id)),
            (table::SK, table::KEY_SK.to_owned()),
        ],
    )?;
    item.insert(table::GSI1_PK.to_owned(), s(env_pk(&key.environment)));
    item.insert(table::GSI1_SK.to_owned(), s(key.id.as_str()));
    if let Some(at) = key.next_due_at() {
        item.insert(table::GSI2_PK.to_owned(), s(table::DUE));
        item.insert(table::GSI2_SK.to_owned(), s(due_sk(at, &key.id)));
    }
    Ok(item)
}

/// The hash item: a copy of the key for the one-read check, with `ttl` set from `expires_at`.
pub(super) fn hash_item(key: &Key) -> Result<Item, StoreError> {
    let mut item = to_item(
        key,
        [
            (table::PK, hash_pk(&key.hash)),
            (table::SK, table::HASH_SK.to_owned()),
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
