//! The `key-activity` Lambda: GET /v1/keys/{key_id}/activity: a key's activity, newest first.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    keyward::http::run(key_activity::handler).await
}
