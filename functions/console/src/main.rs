//! The `console` Lambda: the API's static content and the key format, with no store and no
//! key, and people's sign-in to the console where an identity provider is configured.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    keyward::logging::init();
    let prefix = keyward::key_prefix_from_env()?;
    let prefix = &prefix;
    let people = keyward::http::people_from_env()?;
    let people = &*people;
    lambda_http::run(lambda_http::service_fn(move |req| async move {
        Ok::<_, std::convert::Infallible>(
            console::handler(&req, prefix, people, keyward::now()).await,
        )
    }))
    .await
}
