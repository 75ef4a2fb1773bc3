//! The `report-leak` Lambda: POST /v1/leaks/report: ends the keys that a report holds.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    keyward::http::run_delivering(report_leak::handler).await
}
