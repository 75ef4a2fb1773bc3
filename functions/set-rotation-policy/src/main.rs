//! The `set-rotation-policy` Lambda: PUT /v1/keys/{key_id}/rotation-policy.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    keyward::http::run(set_rotation_policy::handler).await
}
