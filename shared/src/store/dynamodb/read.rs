//! Reads: single items, pages newest first, batches, and the `KeyStore` port on top of them.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use serde::de::DeserializeOwned;

use super::items::{env_activity_pk, env_pk, from_item, hash_pk, key_activity_pk, key_pk};
use super::{DynamoStore, Item, backend, s, table};
use crate::domain::{ActivityEntry, Change, EnvName, Environment, Key, KeyHash, KeyId, Timestamp};
use crate::store::{
    ActivityFilter, KeyLookup, KeyStore, Page, PageRequest, StoreError, due_sort_key,
};

/// The most keys one `BatchGetItem` may ask for.
pub(super) const MAX_BATCH_GET: usize = 100;

/// How many `BatchGetItem` calls one batch may take before unprocessed keys are an error.
const MAX_BATCH_ATTEMPTS: u32 = 6;

impl DynamoStore {
    /// One item, strongly consistent.
    pub(super) async fn get<T: DeserializeOwned>(
        &self,
        pk: String,
        sk: &str,
    ) -> Result<Option<T>, StoreError> {
        self.get_read(pk, sk, true).await
    }

    /// [`DynamoStore::get`], strongly consistent or not: a last use, which lags its checks
    /// anyway, is read eventually consistent, for half the read units.
    pub(super) async fn get_read<T: DeserializeOwned>(
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

    /// Reads up to 100 items with one `BatchGetItem` (strongly consistent or not), and again,
    /// after a growing pause, for any keys DynamoDB leaves unprocessed when it throttles.
    pub(super) async fn batch_get<T: DeserializeOwned>(
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

#[async_trait]
impl KeyLookup for DynamoStore {
    async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<Key>, StoreError> {
        self.get(hash_pk(hash), table::HASH_SK).await
    }
}

#[async_trait]
impl KeyStore for DynamoStore {
    async fn key(&self, id: &KeyId) -> Result<Option<Key>, StoreError> {
        self.get(key_pk(id), table::KEY_SK).await
    }

    async fn environment(&self, name: &EnvName) -> Result<Option<Environment>, StoreError> {
        self.get(env_pk(name), table::ENV_SK).await
    }

    async fn is_empty(&self) -> Result<bool, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(table::GSI1)
            .key_condition_expression(format!("{} = :pk", table::GSI1_PK))
            .expression_attribute_values(":pk", s(table::ENVIRONMENTS))
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
                    (table::PK.to_owned(), s(key_pk(after))),
                    (table::SK.to_owned(), s(table::KEY_SK)),
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
        self.move_due(key, until).await
    }

    /// [`DynamoStore::apply_change`].
    async fn apply(&self, change: &Change) -> Result<(), StoreError> {
        self.apply_change(change).await
    }
}
