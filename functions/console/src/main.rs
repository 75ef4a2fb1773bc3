//! The `console` Lambda: the API's static content and the key format, with no store and no
//! key.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    keyward::logging::init();
    let prefix = keyward::key_prefix_from_env()?;
    let prefix = &prefix;
    lambda_http::run(lambda_http::service_fn(move |req| async move {
        Ok::<_, std::convert::Infallible>(console::handler(&req, prefix))
    }))
    .await
}
