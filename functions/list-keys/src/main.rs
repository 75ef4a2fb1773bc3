//! The `list-keys` Lambda: GET /v1/environments/{env}/keys: an environment's keys, newest first.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    keyward::http::run(list_keys::handler).await
}
