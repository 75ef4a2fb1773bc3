//! The `set-allowed-ips` Lambda: PUT /v1/keys/{key_id}/allowed-ips.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    keyward::http::run(set_allowed_ips::handler).await
}
