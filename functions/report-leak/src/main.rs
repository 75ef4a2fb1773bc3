//! The `report-leak` Lambda: POST /v1/leaks/report, POST /v1/leaks/github and GitLab's token
//! revocation routes: ends the keys that a report holds.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let keys = keyward::leak::github::GithubKeys::from_env()?;
    keyward::leak::github::install(keys);
    keyward::leak::gitlab::install(keyward::leak::gitlab::GitlabToken::from_env()?);
    keyward::http::run_delivering(report_leak::handler).await
}
