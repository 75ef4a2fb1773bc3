//! The EventBridge adapter of [`EventBus`].

use async_trait::async_trait;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use super::{EventBus, EventsConfig, OutgoingEvent, PublishError};

/// Publishes to one EventBridge bus with one `Source`.
#[derive(Debug, Clone)]
pub struct EventBridgeBus {
    client: Client,
    config: EventsConfig,
}

impl EventBridgeBus {
    /// A bus with a client built from `aws`, the configuration the function shares.
    pub fn from_config(aws: &aws_config::SdkConfig, config: EventsConfig) -> Self {
        Self::new(Client::new(aws), config)
    }

    /// A bus with this client, which records its calls when the call log is on
    /// (`crate::aws::calls`).
    pub fn new(client: Client, config: EventsConfig) -> Self {
        let client = match crate::aws::calls::call_log() {
            Some(log) => Client::from_conf(client.config().to_builder().interceptor(log).build()),
            None => client,
        };
        Self { client, config }
    }
}

#[async_trait]
impl EventBus for EventBridgeBus {
    async fn publish(&self, events: &[OutgoingEvent]) -> Vec<Result<(), PublishError>> {
        let entries = events
            .iter()
            .map(|e| {
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.config.bus)
                    .source(&self.config.source)
                    .detail_type(&e.detail_type)
                    .detail(&e.detail)
                    .time(aws_sdk_eventbridge::primitives::DateTime::from_millis(
                        e.time.timestamp_millis(),
                    ))
                    .build()
            })
            .collect();
        let all_failed = |code: &str, message: String| {
            events
                .iter()
                .map(|_| {
                    Err(PublishError {
                        code: code.to_owned(),
                        message: message.clone(),
                    })
                })
                .collect()
        };
        let out = match self
            .client
            .put_events()
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let code = e
                    .as_service_error()
                    .and_then(|s| s.meta().code())
                    .unwrap_or("CallFailed")
                    .to_owned();
                let message = crate::error_chain(&e);
                return all_failed(&code, message);
            }
        };
        if out.entries().len() != events.len() {
            return all_failed(
                "EntryCountMismatch",
                format!(
                    "sent {} entries, got {} results",
                    events.len(),
                    out.entries().len()
                ),
            );
        }
        let results: Vec<Result<(), PublishError>> = out
            .entries()
            .iter()
            .map(|entry| match entry.error_code() {
                None => Ok(()),
                Some(code) => Err(PublishError {
                    code: code.to_owned(),
                    message: entry.error_message().unwrap_or_default().to_owned(),
                }),
            })
            .collect();
        let failed = results.iter().filter(|r| r.is_err()).count();
        if usize::try_from(out.failed_entry_count()).ok() != Some(failed) {
            tracing::warn!(
                failed_entry_count = out.failed_entry_count(),
                failed,
                "PutEvents' count disagrees with its entries"
            );
        }
        results
    }
}
