//! The `authorizer` Lambda: checks keys in front of other teams' APIs.

use authorizer::{Config, handler};
use std::sync::Arc;

use keyward::store::DynamoStore;
use keyward::usage::{ShutdownFlush, Usage};
use lambda_http::lambda_runtime::{self, Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let shutdown = ShutdownFlush::begin();
    // The AWS client is most of a cold start's own work; it is built on another worker while
    // this one sets up logging and reads the configuration.
    let table = DynamoStore::table_from_env()?;
    let store = tokio::spawn(async move {
        let aws = keyward::aws::config().await?;
        Ok::<_, String>(DynamoStore::from_config(&aws, &table))
    });
    keyward::logging::init();
    let config = Config::from_env()?;
    let people = config.people()?;
    let store = store.await??;
    let usage = Usage::from_env(Arc::new(store.clone()))?;
    shutdown.of(&usage).await?;
    let (config, store, usage, people) = (&config, &store, &usage, &*people);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            handler(config, store, usage, people, event.payload, keyward::now()).await
        },
    ))
    .await
}
