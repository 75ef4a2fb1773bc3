//! The `scheduled-rotation` Lambda: an EventBridge schedule in, rotations and notices out.

use keyward::http::Settings;
use keyward::secrets::{PrefixedSink, SecretsManagerSink};
use keyward::store::DynamoStore;
use lambda_http::lambda_runtime::{self, Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    keyward::logging::init();
    let table = DynamoStore::table_from_env()?;
    let aws = keyward::aws::config().await?;
    let store = DynamoStore::from_config(&aws, &table);
    let settings = Settings::from_env()?;
    let sink = PrefixedSink::new(
        Box::new(SecretsManagerSink::from_config(&aws)),
        settings.secret_prefix,
    );
    let mint = keyward::mint().with_key_prefix(settings.key_prefix);
    let (store, sink, mint) = (&store, &sink, &mint);
    lambda_runtime::run(service_fn(move |event| {
        scheduled_rotation::handler(store, sink, mint, event)
    }))
    .await
}
