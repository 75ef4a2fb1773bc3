//! The `scheduled-rotation` Lambda: an EventBridge schedule in, rotations and notices out.

use keyward::http::Settings;
use keyward::secrets::{PrefixedSink, SecretsManagerSink};
use keyward::store::StoreConfig;
use lambda_http::lambda_runtime::{self, Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    keyward::logging::init();
    let aws = keyward::aws::config().await;
    let store = StoreConfig::from_env()?.open_with(&aws)?;
    let prefix = Settings::from_env()?.secret_prefix;
    let sink = PrefixedSink::new(Box::new(SecretsManagerSink::from_config(&aws)), prefix);
    let mint = keyward::mint();
    let (store, sink, mint) = (&*store, &sink, &mint);
    lambda_runtime::run(service_fn(move |event| {
        scheduled_rotation::handler(store, sink, mint, event)
    }))
    .await
}
