//! The local stand-in for the stream trigger: while `serve` runs on DynamoDB, it polls the
//! table's stream and hands each batch to the same handler as the `activity-publisher` Lambda,
//! so a developer sees events flow. Records that did not get out are retried on the next poll,
//! before any newer ones. A closed shard is read to its end once: the stream keeps listing it
//! for 24 hours, and reading it again would publish its events again.

use std::collections::HashSet;
use std::time::Duration;

use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use keyward::aws::calls::acting_as;
use keyward::domain::Mint;
use keyward::events::{EventBus, lambda_event};
use keyward::store::KeyStore;
use lambda_http::lambda_runtime::{Context, LambdaEvent};

/// The template's function whose event source mapping reads the stream on AWS, and whose role
/// its publishing uses.
const ACTIVITY_PUBLISHER: &str = "ActivityPublisher";

/// How long the poller waits between reads of each shard.
const POLL: Duration = Duration::from_secs(1);

struct Shard {
    id: String,
    iterator: Option<String>,
    pending: Vec<Record>,
}

impl Shard {
    /// A closed shard read to its end, with nothing left to retry.
    fn finished(&self) -> bool {
        self.iterator.is_none() && self.pending.is_empty()
    }
}

/// Which shards the poller reads, and which it has finished.
#[derive(Default)]
struct Shards {
    open: Vec<Shard>,
    finished: HashSet<String>,
}

impl Shards {
    /// Of the shards the stream lists, those the poller has neither open nor finished.
    fn unseen<'a>(&self, listed: &'a [String]) -> Vec<&'a String> {
        listed
            .iter()
            .filter(|id| !self.finished.contains(*id) && !self.open.iter().any(|s| &s.id == *id))
            .collect()
    }

    /// Moves the shards read to their end, with nothing left to retry, to the finished ones.
    fn close_finished(&mut self) {
        for shard in self.open.iter().filter(|s| s.finished()) {
            self.finished.insert(shard.id.clone());
        }
        self.open.retain(|s| !s.finished());
    }
}

/// Where the poller reads from.
pub struct StreamPoller {
    client: Client,
    arn: String,
    shards: Shards,
}

impl StreamPoller {
    /// Opens every shard of the stream at its latest point: from now on, nothing is missed.
    pub async fn open(client: Client, arn: String) -> Result<Self, String> {
        let mut poller = Self {
            client,
            arn,
            shards: Shards::default(),
        };
        poller.discover(ShardIteratorType::Latest).await?;
        Ok(poller)
    }

    /// Adds the shards not seen yet; new shards after the first are read from their start.
    async fn discover(&mut self, from: ShardIteratorType) -> Result<(), String> {
        let out = self
            .client
            .describe_stream()
            .stream_arn(&self.arn)
            .send()
            .await
            .map_err(|e| keyward::error_chain(&e))?;
        let listed: Vec<String> = out
            .stream_description
            .map(|d| d.shards.unwrap_or_default())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|shard| shard.shard_id)
            .collect();
        for id in self.shards.unseen(&listed) {
            let iterator = self
                .client
                .get_shard_iterator()
                .stream_arn(&self.arn)
                .shard_id(id)
                .shard_iterator_type(from.clone())
                .send()
                .await
                .map_err(|e| keyward::error_chain(&e))?
                .shard_iterator;
            self.shards.open.push(Shard {
                id: id.clone(),
                iterator,
                pending: Vec::new(),
            });
        }
        Ok(())
    }

    /// Polls until the process ends.
    pub async fn run(mut self, bus: &dyn EventBus, store: &dyn KeyStore, mint: &Mint) {
        loop {
            for shard in &mut self.shards.open {
                let mut batch = std::mem::take(&mut shard.pending);
                if let Some(iterator) = shard.iterator.take() {
                    match self
                        .client
                        .get_records()
                        .shard_iterator(&iterator)
                        .send()
                        .await
                    {
                        Ok(out) => {
                            batch.extend(out.records.unwrap_or_default());
                            shard.iterator = out.next_shard_iterator;
                        }
                        Err(e) => {
                            tracing::warn!(shard = %shard.id, error = %keyward::error_chain(&e), "cannot read the stream");
                            shard.iterator = Some(iterator);
                        }
                    }
                }
                if batch.is_empty() {
                    continue;
                }
                let event = match lambda_event(&batch) {
                    Ok(event) => event,
                    Err(e) => {
                        tracing::error!(error = %e, "stream records do not convert to a Lambda event");
                        shard.pending = batch;
                        continue;
                    }
                };
                let publish = activity_publisher::handler(
                    bus,
                    store,
                    mint,
                    LambdaEvent::new(event, Context::default()),
                );
                let Ok(response) = acting_as(ACTIVITY_PUBLISHER, publish).await;
                let failed: Vec<&str> = response
                    .batch_item_failures
                    .iter()
                    .filter_map(|f| f.item_identifier.as_deref())
                    .collect();
                shard.pending = batch
                    .into_iter()
                    .filter(|r| {
                        r.dynamodb
                            .as_ref()
                            .and_then(|d| d.sequence_number.as_deref())
                            .is_some_and(|s| failed.contains(&s))
                    })
                    .collect();
            }
            self.shards.close_finished();
            if let Err(e) = self.discover(ShardIteratorType::TrimHorizon).await {
                tracing::warn!(error = %e, "cannot list the stream's shards");
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, iterator: Option<&str>, pending: usize) -> Shard {
        let record = Record::builder().event_id("e").build();
        Shard {
            id: id.to_owned(),
            iterator: iterator.map(str::to_owned),
            pending: vec![record; pending],
        }
    }

    #[test]
    fn a_closed_shard_read_to_its_end_is_never_opened_again() {
        let mut shards = Shards {
            open: vec![
                shard("closed-and-read", None, 0),
                shard("closed-with-retries", None, 2),
                shard("open", Some("it"), 0),
            ],
            finished: HashSet::new(),
        };
        shards.close_finished();
        let open: Vec<&str> = shards.open.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(open, ["closed-with-retries", "open"]);
        let listed: Vec<String> = ["closed-and-read", "closed-with-retries", "open", "new"]
            .map(str::to_owned)
            .into();
        assert_eq!(
            shards.unseen(&listed),
            ["new"],
            "the stream still lists the closed shard, and it is not read from its start again"
        );
        shards.open[0].pending.clear();
        shards.close_finished();
        assert_eq!(shards.unseen(&listed), ["new"]);
        assert_eq!(shards.finished.len(), 2);
    }
}
