//! The `revoke-key` Lambda: POST /v1/keys/{key_id}/revoke: stops a key at once.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    keyward::http::run(revoke_key::handler).await
}
