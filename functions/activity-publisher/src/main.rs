//! The `activity-publisher` Lambda: the table's stream in, EventBridge out.

use keyward::events::{EventBridgeBus, EventsConfig};
use keyward::store::DynamoStore;
use lambda_http::lambda_runtime::{self, Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    keyward::logging::init();
    let table = DynamoStore::table_from_env()?;
    let aws = keyward::aws::config().await?;
    let store = DynamoStore::from_config(&aws, &table);
    let bus = EventBridgeBus::from_config(&aws, EventsConfig::from_env()?);
    let mint = keyward::mint();
    let (store, bus, mint) = (&store, &bus, &mint);
    lambda_runtime::run(service_fn(move |event| {
        activity_publisher::handler(bus, store, mint, event)
    }))
    .await
}
