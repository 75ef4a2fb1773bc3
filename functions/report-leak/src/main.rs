//! The `report-leak` Lambda: POST /v1/leaks/report and POST /v1/leaks/github: ends the keys
//! that a report holds.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let keys = keyward::leak::github::GithubKeys::from_env()?;
    keyward::leak::github::install(keys);
    keyward::http::run_delivering(report_leak::handler).await
}
