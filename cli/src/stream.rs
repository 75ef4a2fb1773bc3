//! The local stand-in for the stream trigger: while `serve` runs on DynamoDB, it polls the
//! table's stream and hands each batch to the same handler as the `activity-publisher` Lambda,
//! so a developer sees events flow. Records that did not get out are retried on the next poll,
//! before any newer ones.

use std::time::Duration;

use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use keyward::events::{EventBus, lambda_event};
use keyward::store::KeyStore;
use lambda_http::lambda_runtime::{Context, LambdaEvent};

/// How long the poller waits between reads of each shard.
const POLL: Duration = Duration::from_secs(1);

struct Shard {
    id: String,
    iterator: Option<String>,
    pending: Vec<Record>,
}

/// Where the poller reads from.
pub struct StreamPoller {
    client: Client,
    arn: String,
    shards: Vec<Shard>,
}

impl StreamPoller {
    /// Opens every shard of the stream at its latest point: from now on, nothing is missed.
    pub async fn open(client: Client, arn: String) -> Result<Self, String> {
        let mut poller = Self {
            client,
            arn,
            shards: Vec::new(),
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
        let shards = out
            .stream_description
            .map(|d| d.shards.unwrap_or_default())
            .unwrap_or_default();
        for shard in shards {
            let Some(id) = shard.shard_id else { continue };
            if self.shards.iter().any(|s| s.id == id) {
                continue;
            }
            let iterator = self
                .client
                .get_shard_iterator()
                .stream_arn(&self.arn)
                .shard_id(&id)
                .shard_iterator_type(from.clone())
                .send()
                .await
                .map_err(|e| keyward::error_chain(&e))?
                .shard_iterator;
            self.shards.push(Shard {
                id,
                iterator,
                pending: Vec::new(),
            });
        }
        Ok(())
    }

    /// Polls until the process ends.
    pub async fn run(mut self, bus: &dyn EventBus, store: &dyn KeyStore) {
        loop {
            for shard in &mut self.shards {
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
                let Ok(response) = activity_publisher::handler(
                    bus,
                    store,
                    LambdaEvent::new(event, Context::default()),
                )
                .await;
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
            self.shards
                .retain(|s| s.iterator.is_some() || !s.pending.is_empty());
            if let Err(e) = self.discover(ShardIteratorType::TrimHorizon).await {
                tracing::warn!(error = %e, "cannot list the stream's shards");
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
