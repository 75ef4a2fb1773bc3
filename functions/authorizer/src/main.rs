//! The `authorizer` Lambda: checks keys in front of other teams' APIs.

use authorizer::{Config, handler};
use std::sync::Arc;

use keyward::store::DynamoStore;
use keyward::usage::{Usage, flush_on_shutdown};
use lambda_http::lambda_runtime::{self, Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    keyward::logging::init();
    let config = Config::from_env()?;
    let table = DynamoStore::table_from_env()?;
    let store = DynamoStore::from_config(&keyward::aws::config().await?, &table);
    let usage = Usage::from_env(Arc::new(store.clone()))?;
    flush_on_shutdown(&usage).await;
    let (config, store, usage) = (&config, &store, &usage);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            handler(config, store, usage, event.payload, keyward::now()).await
        },
    ))
    .await
}
