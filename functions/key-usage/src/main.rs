//! The `key-usage` Lambda: GET /v1/keys/{key_id}/usage: a key's checks per hour for the last week.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    keyward::http::run(key_usage::handler).await
}
