//! The `hello` Lambda: an example backend behind keyward's authorizer.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    keyward::logging::init();
    lambda_http::run(lambda_http::service_fn(|req| async move {
        Ok::<_, std::convert::Infallible>(hello::handler(&req))
    }))
    .await
}
