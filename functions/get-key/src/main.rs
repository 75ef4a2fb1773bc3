//! The `get-key` Lambda: GET /v1/keys/{key_id}: one key.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    keyward::http::run(get_key::handler).await
}
