//! The `activity-publisher` Lambda: the table's stream in, EventBridge out.

use keyward::events::{EventBridgeBus, EventsConfig};
use keyward::store::StoreConfig;
use lambda_http::lambda_runtime::{self, Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    keyward::logging::init();
    let aws = keyward::aws::config().await;
    let store = StoreConfig::from_env()?.open_with(&aws)?;
    let bus = EventBridgeBus::from_config(&aws, EventsConfig::from_env()?);
    let mint = keyward::mint();
    let (store, bus, mint) = (&*store, &bus, &mint);
    lambda_runtime::run(service_fn(move |event| {
        activity_publisher::handler(bus, store, mint, event)
    }))
    .await
}
