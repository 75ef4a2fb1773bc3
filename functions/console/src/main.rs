//! The `console` Lambda: the API's static content, with no store and no key.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    keyward::logging::init();
    lambda_http::run(lambda_http::service_fn(|req| async move {
        Ok::<_, std::convert::Infallible>(console::handler(&req))
    }))
    .await
}
