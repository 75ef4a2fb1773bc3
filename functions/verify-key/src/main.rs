//! The `verify-key` Lambda: POST /v1/verify: checks a key the way the authorizer does.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    keyward::http::run_counting(verify_key::handler).await
}
