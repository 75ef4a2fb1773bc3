//! The `change-grace-period` Lambda: PUT /v1/keys/{key_id}/grace-period: changes a rotated key's grace.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    keyward::http::run(change_grace_period::handler).await
}
