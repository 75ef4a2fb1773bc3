//! The `rotate-key` Lambda: POST /v1/keys/{key_id}/rotate: replaces a key, giving the old one a grace period.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    keyward::http::run_delivering(rotate_key::handler).await
}
