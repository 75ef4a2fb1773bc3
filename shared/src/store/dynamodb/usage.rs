//! Usage: each key's hourly counts and last use, beside its records and never in them.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::items::{HourItem, LastItem, from_item, usage_owner, usage_pk, usage_sk, usage_sk_hour};
use super::read::MAX_BATCH_GET;
use super::{DynamoStore, Item, backend, condition_failed, s, table};
use crate::domain::{
    EnvName, HourlyUsage, KeyId, LastUse, SEEN_LIMIT, Timestamp, USAGE_RETENTION, UsageTally,
    hour_of,
};
use crate::store::{StoreError, UsageOwner, UsageStore, due_sort_key};

/// How long one usage write may take. A write that fails or runs out is put back and goes
/// with the next one, so it is never retried in place, and it is short enough that every
/// write of the shutdown flush, run at once, ends within `usage::SHUTDOWN_BUDGET`, with the
/// write of its hour's addresses after it ([`SEEN_WRITE_TIMEOUT`]).
pub const USAGE_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(300);

/// How long after its hour a usage item lives: the retention and a day, since DynamoDB's TTL
/// removes items up to a couple of days late, and reads filter by time anyway.
const USAGE_TTL: chrono::TimeDelta = USAGE_RETENTION
    .checked_add(&chrono::TimeDelta::days(1))
    .unwrap();

/// The attribute of a seen item that holds its addresses.
const SEEN_ATTRIBUTE: &str = "ips";

/// How long the write of an hour's addresses may take, after its counts': together they end
/// within the shutdown flush's budget, and a slow one loses only addresses.
pub const SEEN_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(80);

/// The client settings of a usage write: one attempt, within `timeout`.
fn usage_write_config(timeout: std::time::Duration) -> aws_sdk_dynamodb::config::Builder {
    aws_sdk_dynamodb::config::Builder::default()
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
                .operation_timeout(timeout)
                .build(),
        )
}

impl DynamoStore {
    /// The items of the usage partition `pk` whose sort keys start with `prefix`, from the
    /// one for the hour of `since` on, oldest first, every page read.
    async fn usage_items(
        &self,
        pk: String,
        prefix: &str,
        since: Timestamp,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk AND #sk BETWEEN :from AND :to")
                .expression_attribute_names("#pk", table::PK)
                .expression_attribute_names("#sk", table::SK)
                .expression_attribute_values(":pk", s(pk.clone()))
                .expression_attribute_values(":from", s(usage_sk(prefix, hour_of(since))))
                .expression_attribute_values(":to", s(format!("{prefix}~")))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(backend)?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(last) => start = Some(last),
                None => return Ok(items),
            }
        }
    }

    /// One usage partition's hourly counts from the hour of `since` on, oldest first.
    async fn usage_hours(
        &self,
        owner: &UsageOwner,
        since: Timestamp,
    ) -> Result<Vec<HourlyUsage>, StoreError> {
        let items = self
            .usage_items(usage_pk(owner), table::HOUR_PREFIX, since)
            .await?;
        items
            .into_iter()
            .map(|item| {
                let item: HourItem = from_item(item)?;
                let hour = usage_sk_hour(table::HOUR_PREFIX, &item.sk).ok_or_else(|| {
                    backend(std::io::Error::other("a usage item without its hour"))
                })?;
                Ok(HourlyUsage {
                    hour,
                    accepted: item.accepted,
                    refused: item.refused,
                })
            })
            .collect()
    }

    /// Adds the addresses of one hour's accepted checks to that hour's seen item, a string set,
    /// unless the set holds [`SEEN_LIMIT`] already: then the condition fails, which leaves it
    /// as it is and is no error. Adding is idempotent, so a write put back and sent again
    /// adds nothing twice.
    async fn add_seen(
        &self,
        pk: &str,
        hour: Timestamp,
        addresses: &BTreeSet<IpAddr>,
    ) -> Result<(), StoreError> {
        let written = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(table::PK, s(pk.to_owned()))
            .key(table::SK, s(usage_sk(table::SEEN_PREFIX, hour)))
            .update_expression("ADD #ips :ips SET #ttl = :ttl")
            .condition_expression("attribute_not_exists(#ips) OR size(#ips) < :limit")
            .expression_attribute_names("#ips", SEEN_ATTRIBUTE)
            .expression_attribute_names("#ttl", table::TTL)
            .expression_attribute_values(
                ":ips",
                AttributeValue::Ss(addresses.iter().map(ToString::to_string).collect()),
            )
            .expression_attribute_values(
                ":ttl",
                AttributeValue::N((hour + USAGE_TTL).timestamp().to_string()),
            )
            .expression_attribute_values(":limit", AttributeValue::N(SEEN_LIMIT.to_string()))
            .customize()
            .config_override(usage_write_config(SEEN_WRITE_TIMEOUT))
            .send()
            .await;
        match written {
            Err(e) if !condition_failed(&e) => Err(backend(e)),
            _ => Ok(()),
        }
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
}

#[async_trait]
impl UsageStore for DynamoStore {
    async fn add_usage(&self, tally: &UsageTally) -> Result<(), StoreError> {
        let pk = usage_pk(&UsageOwner::Key(
            tally.environment.clone(),
            tally.key_id.clone(),
        ));
        for (hour, (accepted, refused)) in &tally.hours {
            let mut set = vec!["#ttl = :ttl".to_owned()];
            let mut update = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(table::PK, s(pk.clone()))
                .key(table::SK, s(usage_sk(table::HOUR_PREFIX, *hour)))
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
                .config_override(usage_write_config(USAGE_WRITE_TIMEOUT))
                .send()
                .await
                .map_err(backend)?;
            // The addresses go after the counts, at their best: a failure is logged and
            // lost (this process sends them again in a later hour), never put back with the
            // counts, which would then be added twice, and never in their way.
            if let Some(addresses) = tally.seen.get(hour).filter(|a| !a.is_empty())
                && let Err(e) = self.add_seen(&pk, *hour, addresses).await
            {
                tracing::warn!(key_id = %tally.key_id, error = %crate::error_chain(&e), "the addresses of an hour's checks were not written");
            }
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

    async fn seen_addresses(
        &self,
        environment: &EnvName,
        id: &KeyId,
        since: Timestamp,
    ) -> Result<Vec<(Timestamp, IpAddr)>, StoreError> {
        let pk = usage_pk(&UsageOwner::Key(environment.clone(), id.clone()));
        let mut seen = Vec::new();
        for item in self.usage_items(pk, table::SEEN_PREFIX, since).await? {
            let hour = match item.get(table::SK) {
                Some(AttributeValue::S(sk)) => usage_sk_hour(table::SEEN_PREFIX, sk),
                _ => None,
            };
            let (Some(hour), Some(AttributeValue::Ss(addresses))) =
                (hour, item.get(SEEN_ATTRIBUTE))
            else {
                // What cannot be read is left out, and the hours and the rest still answer.
                tracing::warn!("a seen item without its hour or addresses is skipped");
                continue;
            };
            seen.extend(
                addresses
                    .iter()
                    .filter_map(|a| a.parse().ok())
                    .map(|address| (hour, address)),
            );
        }
        Ok(seen)
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

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::Client;

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
        let config = usage_write_config(USAGE_WRITE_TIMEOUT).build();
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
        const {
            assert!(
                USAGE_WRITE_TIMEOUT.as_millis() + SEEN_WRITE_TIMEOUT.as_millis()
                    < crate::usage::SHUTDOWN_BUDGET.as_millis()
            )
        };
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
}
