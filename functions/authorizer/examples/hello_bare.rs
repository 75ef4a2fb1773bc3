//! The floor of the authorizer's cold start: the smallest `lambda_runtime` function, with no
//! logging set-up at all.

use lambda_http::lambda_runtime::{self, Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(
        |event: LambdaEvent<serde_json::Value>| async move { Ok::<_, Error>(event.payload) },
    ))
    .await
}
