//! HTTP mapping shared by every function: reading requests, the error shape, the `Key` view,
//! and the Lambda entry point that each function's `main` calls.

mod error;
mod request;
mod view;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use lambda_http::http::{StatusCode, header};
use lambda_http::{Body, Request, Response, service_fn};
use serde::Serialize;

pub use error::ApiError;
pub use request::{
    Caller, authenticate, authorize_environment, authorize_key, json_body, key_from_headers,
    page_request, query_param,
};
pub use view::KeyView;

use crate::domain::Timestamp;
use crate::store::{KeyStore, StoreConfig};

/// The largest request body accepted; anything larger gets `413`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What a handler returns: a response future that borrows the store.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Response<Body>> + Send + 'a>>;

/// Every function's handler has this shape, so that the Lambda runtime and `keyward serve`
/// call exactly the same code.
pub type Handler = for<'a> fn(&'a dyn KeyStore, Request, Timestamp) -> HandlerFuture<'a>;

/// A JSON response.
pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Body::Text(String::from_utf8(bytes).unwrap_or_default()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// `status` with the body of `result`, or the error it holds.
pub fn respond<T: Serialize>(status: StatusCode, result: Result<T, ApiError>) -> Response<Body> {
    match result {
        Ok(body) => json_response(status, &body),
        Err(e) => e.into_response(),
    }
}

/// A function's whole `main`: logging, the store from `KEYWARD_STORE` (built once per cold
/// start; a bad value stops the start with a clear message), then the Lambda runtime.
pub async fn run(handler: Handler) -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    let store = StoreConfig::from_env()?.open().await?;
    let store = &*store;
    lambda_http::run(service_fn(move |req| async move {
        Ok::<_, Infallible>(handler(store, req, crate::now()).await)
    }))
    .await
}
