//! Writes: one lifecycle change as one transaction, with its secret claim judged first.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem, Update};

use super::items::{
    ClaimItem, claim_pk, due_sk, env_activity_pk, env_pk, hash_item, key_activity_pk, key_item,
    key_pk, to_item,
};
use super::{DynamoStore, Item, backend, condition_failed, s, table};
use crate::domain::{
    Change, EnvironmentWrite, Key, KeyId, KeyWrite, LeakPolicy, SecretClaim, Timestamp,
};
use crate::store::{KeyStore, PageRequest, StoreError};

/// A change's transaction, as [`DynamoStore::writes`] builds it.
struct Writes {
    items: Vec<TransactWriteItem>,
    hash_updates: Vec<usize>,
    claim: Vec<usize>,
}

/// How often a change whose claim moved under it is judged again before it is a conflict.
const CLAIM_ATTEMPTS: usize = 3;

/// Why one judged attempt at a change was not applied.
enum NotApplied {
    /// Only the claim's conditions failed: somebody else changed the claim or its holder.
    ClaimMoved,
    /// Anything else.
    Store(StoreError),
}

impl From<StoreError> for NotApplied {
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

/// Why a transaction did not apply.
enum TransactFailure {
    /// Another transaction wrote one of its items at the same time.
    Raced,
    /// The conditions of the items at these positions failed.
    Conditions(Vec<usize>),
    /// Any other failure.
    Failed(StoreError),
}

impl From<SdkError<TransactWriteItemsError>> for TransactFailure {
    /// A cancellation by a rival transaction or by conditions, or else a failure.
    fn from(e: SdkError<TransactWriteItemsError>) -> Self {
        let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
            e.as_service_error()
        else {
            return Self::Failed(backend(e));
        };
        let reasons = cancelled.cancellation_reasons();
        if reasons
            .iter()
            .any(|r| r.code() == Some("TransactionConflict"))
        {
            return Self::Raced;
        }
        let failed: Vec<usize> = reasons
            .iter()
            .enumerate()
            .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
            .map(|(i, _)| i)
            .collect();
        if failed.is_empty() {
            Self::Failed(backend(e))
        } else {
            Self::Conditions(failed)
        }
    }
}

impl DynamoStore {
    fn put(&self, item: Item, condition: Option<&str>) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_owned))
            .build()
            .map_err(backend)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), TransactFailure> {
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map(|_| ())
            .map_err(TransactFailure::from)
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
                        (table::SK, table::ENV_SK.to_owned()),
                    ],
                )?;
                item.insert(table::GSI1_PK.to_owned(), s(table::ENVIRONMENTS));
                item.insert(table::GSI1_SK.to_owned(), s(env.name.as_str()));
                items.push(self.put(item, Some("attribute_not_exists(pk)"))?);
            }
            Some(EnvironmentWrite::MoveDefault { name, from, to }) => {
                let update = Update::builder()
                    .table_name(&self.table)
                    .key(table::PK, s(env_pk(name)))
                    .key(table::SK, s(table::ENV_SK))
                    .update_expression("SET default_key_id = :to")
                    .condition_expression("default_key_id = :from")
                    .expression_attribute_values(":to", s(to.as_str()))
                    .expression_attribute_values(":from", s(from.as_str()))
                    .build()
                    .map_err(backend)?;
                items.push(TransactWriteItem::builder().update(update).build());
            }
            Some(EnvironmentWrite::SetLeakPolicy {
                name,
                default_key_id,
                previous,
                policy,
            }) => {
                // An environment made before there was a policy has none stored: `revoke`.
                let was = if *previous == LeakPolicy::default() {
                    "(attribute_not_exists(leak_policy) OR leak_policy = :previous) AND default_key_id = :default"
                } else {
                    "leak_policy = :previous AND default_key_id = :default"
                };
                let update = Update::builder()
                    .table_name(&self.table)
                    .key(table::PK, s(env_pk(name)))
                    .key(table::SK, s(table::ENV_SK))
                    .update_expression("SET leak_policy = :policy")
                    .condition_expression(was)
                    .expression_attribute_values(":policy", s(policy.as_str()))
                    .expression_attribute_values(":previous", s(previous.as_str()))
                    .expression_attribute_values(":default", s(default_key_id.as_str()))
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
                (table::SK, table::CLAIM_SK.to_owned()),
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
                .key(table::SK, s(table::KEY_SK))
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
        let item: Option<ClaimItem> = self.get(claim_pk(claim), table::CLAIM_SK).await?;
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
        let current: Option<Key> = self.get(key_pk(&holder), table::KEY_SK).await?;
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
                let stored: Option<Key> = self.get(key_pk(&key.id), table::KEY_SK).await?;
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
    async fn apply_judged(
        &self,
        change: &Change,
        seen: Option<&ClaimSeen>,
    ) -> Result<(), NotApplied> {
        let first = self.writes(change, seen)?;
        let gone = match self.transact(first.items).await {
            Ok(()) => return Ok(()),
            Err(TransactFailure::Failed(e)) => return Err(e.into()),
            Err(TransactFailure::Raced) => {
                // Another transaction touched one of the items. With a claim, that may be a
                // rival claim: judge again, and a stale key still ends as a conflict then.
                return Err(match seen {
                    Some(_) => NotApplied::ClaimMoved,
                    None => StoreError::Conflict.into(),
                });
            }
            Err(TransactFailure::Conditions(failed)) => {
                if failed.iter().all(|i| first.claim.contains(i)) {
                    return Err(NotApplied::ClaimMoved);
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
            Err(TransactFailure::Failed(e)) => Err(e.into()),
            Err(TransactFailure::Raced | TransactFailure::Conditions(_)) => {
                Err(StoreError::Conflict.into())
            }
        }
    }

    /// Moves `key` in the due index to `until`, unless it changed or left the index.
    pub(super) async fn move_due(&self, key: &Key, until: Timestamp) -> Result<(), StoreError> {
        let moved = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(table::PK, s(key_pk(&key.id)))
            .key(table::SK, s(table::KEY_SK))
            .update_expression("SET #due = :due")
            .condition_expression("#version = :version AND attribute_exists(#due)")
            .expression_attribute_names("#due", table::GSI2_SK)
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":due", s(due_sk(until, &key.id)))
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
    pub(super) async fn apply_change(&self, change: &Change) -> Result<(), StoreError> {
        let mut attempt = 1;
        loop {
            let seen = self.judge_claim(change).await?;
            match self.apply_judged(change, seen.as_ref()).await {
                Ok(()) => return Ok(()),
                Err(NotApplied::Store(e)) => return Err(e),
                Err(NotApplied::ClaimMoved) if attempt < CLAIM_ATTEMPTS => attempt += 1,
                Err(NotApplied::ClaimMoved) => return Err(StoreError::Conflict),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        Actor, EnvName, NewKey, RotationPolicy, Setting, create_environment, create_key,
        set_rotation_policy,
    };

    fn policy(secret_id: &str) -> Option<RotationPolicy> {
        let json =
            serde_json::json!({"every": "P30D", "grace_period": "24h", "secret_id": secret_id});
        Some(RotationPolicy::from_json(&json).unwrap())
    }

    fn set(key: &Key, policy: Option<RotationPolicy>) -> (Key, Change) {
        let now = crate::now();
        match set_rotation_policy(key, policy, Actor::operator("t"), &crate::mint(), now).unwrap() {
            Setting::Changed { key, change } => (key, *change),
            Setting::Unchanged(_) => panic!("unchanged"),
        }
    }

    /// A takeover judged while the holder had stopped delivering, but applied after the
    /// holder took its secret back: the claim item still names the same holder, so only the
    /// check of the holder's version stops it; judged again, the claim is refused.
    /// An environment stored before leak policies has no `leak_policy` attribute: it reads
    /// as `revoke`, and a change from `revoke` applies to it; a change decided on a stale
    /// policy, or on a default key that moved, is refused.
    #[tokio::test]
    async fn a_leak_policy_is_set_on_an_environment_stored_before_there_were_any() {
        use crate::domain::{GracePeriod, LeakPolicy, rotate, set_leak_policy};
        let table = crate::testing::moto_table("leak-policy").await;
        let store = table.store;
        let (mint, now) = (crate::mint(), crate::now());
        let env = EnvName::parse("production").unwrap();
        let made = create_environment(&env, Actor::operator("t"), &mint, now);
        store.apply(&made.change).await.unwrap();
        table
            .client
            .update_item()
            .table_name(&table.name)
            .key(table::PK, s(env_pk(&env)))
            .key(table::SK, s(table::ENV_SK))
            .update_expression("REMOVE leak_policy")
            .send()
            .await
            .unwrap();
        let old = store.environment(&env).await.unwrap().unwrap();
        assert_eq!(old.leak_policy, LeakPolicy::Revoke);
        let set_to = |from: &crate::domain::Environment, policy| {
            set_leak_policy(from, policy, Actor::operator("t"), &mint, now).unwrap()
        };
        let stale = set_to(&old, LeakPolicy::Rotate);
        store
            .apply(&set_to(&old, LeakPolicy::Notify))
            .await
            .unwrap();
        assert!(matches!(
            store.apply(&stale).await,
            Err(StoreError::Conflict)
        ));
        let notify = store.environment(&env).await.unwrap().unwrap();
        assert_eq!(notify.leak_policy, LeakPolicy::Notify);
        let from_notify = set_to(&notify, LeakPolicy::Revoke);
        let stale_from_notify = set_to(&notify, LeakPolicy::Rotate);
        store.apply(&from_notify).await.unwrap();
        assert!(matches!(
            store.apply(&stale_from_notify).await,
            Err(StoreError::Conflict)
        ));
        let revoke = store.environment(&env).await.unwrap().unwrap();
        let before_the_default_moved = set_to(&revoke, LeakPolicy::Notify);
        let moved = rotate(
            &made.key,
            GracePeriod::NOW,
            Actor::operator("t"),
            &mint,
            now,
        )
        .unwrap();
        store.apply(&moved.change).await.unwrap();
        assert!(matches!(
            store.apply(&before_the_default_moved).await,
            Err(StoreError::Conflict)
        ));
        assert_eq!(
            store.environment(&env).await.unwrap().unwrap().leak_policy,
            LeakPolicy::Revoke
        );
    }

    #[tokio::test]
    async fn a_takeover_racing_the_holder_taking_its_secret_back_is_refused() {
        let store = crate::testing::moto_table("claims").await.store;
        let (mint, now) = (crate::mint(), crate::now());
        let env = EnvName::parse("production").unwrap();
        let made = create_environment(&env, Actor::operator("t"), &mint, now);
        store.apply(&made.change).await.unwrap();
        let secret = "keyward/production/orders";
        let new_key = |name: &str| NewKey {
            rotation_policy: policy(secret),
            ..crate::testing::orders_key(name)
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
            Err(NotApplied::ClaimMoved)
        ));
        assert!(matches!(
            store.apply(&rival.change).await,
            Err(StoreError::SecretClaimed)
        ));
        assert_eq!(store.key(&rival.key.id).await.unwrap(), None);
    }
}
