//! The `create-key` Lambda: POST /v1/environments/{env}/keys: makes a key and shows its secret once.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    keyward::http::run(create_key::handler).await
}
