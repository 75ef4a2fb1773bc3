//! The `environment-activity` Lambda: GET /v1/environments/{env}/activity: an environment's activity, filtered.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    keyward::http::run(environment_activity::handler).await
}
