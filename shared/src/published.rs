//! Keys that others publish over HTTPS, and the one way keyward fetches and keeps them:
//! GitHub's secret scanning keys, and an identity provider's signing keys (its JWKS).
//!
//! Fetched keys are kept for an hour, so that a key the publisher withdraws stops being
//! trusted, and fetched again sooner when a check names a key that is not kept, at most one
//! try a minute, so that made-up identifiers (or the publisher being down) cannot make keyward
//! hammer the publisher. A check with a key that is kept and fresh never waits on a fetch.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How long after a fetch was tried another may be.
const REFETCH_AFTER: Duration = Duration::from_secs(60);

/// How long fetched keys are used before they are fetched again.
const KEEP_FOR: Duration = Duration::from_secs(3600);

/// How long fetched keys are still used while every fetch fails: past it, a key the publisher
/// may have withdrawn is trusted no more, and checks fail until a fetch succeeds.
const MAX_STALE: Duration = Duration::from_secs(24 * 3600);

/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest document read.
const MAX_BYTES: usize = 256 * 1024;

/// `url`, if it is `https://`, or `http://` to this machine's loopback only: a key fetched in
/// clear from elsewhere could be anyone's. `name` is what the error names (a variable).
pub fn https_url(name: &str, url: &str) -> Result<Uri, String> {
    let bad = |why: &str| format!("{name}: {url:?} {why}");
    let uri: Uri = url.parse().map_err(|_| bad("is not a URL"))?;
    let host = uri.host().ok_or_else(|| bad("has no host"))?;
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if loopback => Ok(uri),
        _ => Err(bad("is not https:// (plain http:// only to loopback)")),
    }
}

/// Why published keys could not be had; the cause is for the log.
#[derive(Debug, thiserror::Error)]
#[error("the request to {url} failed: {why}")]
pub struct FetchError {
    url: String,
    why: String,
}

impl FetchError {
    /// A failure to fetch from `url`, for `why`.
    pub fn new(url: &Uri, why: impl Into<String>) -> Self {
        Self {
            url: url.to_string(),
            why: why.into(),
        }
    }
}

/// GETs `url` as JSON: at most 256 KiB, within five seconds, and a `2xx` answer.
pub async fn get(url: &Uri) -> Result<Bytes, FetchError> {
    send(url, Request::get(url.clone()), Bytes::new()).await
}

/// POSTs the form `form` to `url` and reads the JSON answer, within the same bounds as
/// [`get`]: the exchange of a sign-in's code for its tokens.
pub async fn post_form(url: &Uri, form: String) -> Result<Bytes, FetchError> {
    let request = Request::post(url.clone())
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    send(url, request, Bytes::from(form)).await
}

/// Sends one request to `url` (https, or http to loopback as [`https_url`] allows), and
/// reads a `2xx` JSON answer of at most 256 KiB within five seconds.
async fn send(
    url: &Uri,
    request: hyper::http::request::Builder,
    body: Bytes,
) -> Result<Bytes, FetchError> {
    let failed = |why: String| FetchError::new(url, why);
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider)
        .map_err(|e| failed(format!("the system's root certificates: {e}")))?
        .https_or_http()
        .enable_http1()
        .wrap_connector({
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http
        });
    let client = Client::builder(TokioExecutor::new()).build(https);
    let request = request
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "keyward")
        .body(Full::new(body))
        .map_err(|e| failed(e.to_string()))?;
    let exchange = async {
        let answer = client
            .request(request)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = answer.status();
        let body = Limited::new(answer.into_body(), MAX_BYTES)
            .collect()
            .await
            .map_err(|e| failed(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(failed(format!(
                "it answered {status}{}",
                oauth_error(&body)
            )));
        }
        Ok(body)
    };
    tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| failed(format!("no answer within {FETCH_TIMEOUT:?}")))?
}

/// The OAuth error code (RFC 6749 §5.2) of a refusal's JSON body, such as `invalid_grant`,
/// as ` (code)` for the log: only a short word of its shape, never the body's other text.
fn oauth_error(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .filter(|code| {
            (1..=40).contains(&code.len())
                && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
        .map(|code| format!(" ({code})"))
        .unwrap_or_default()
}

/// The keys fetched, by identifier, and when.
struct Fetched<K> {
    keys: HashMap<String, K>,
    at: Option<Instant>,
}

/// Keys fetched from one publisher and kept for the life of the process. Fetches take turns
/// on a lock of their own, so a check with a kept key never waits.
pub struct PublishedKeys<K> {
    url: Uri,
    /// How long after a fetch was tried another may be: a minute, but for tests.
    refetch_after: Duration,
    /// How long keys are kept fresh, and used at most while fetches fail: an hour and a day,
    /// but for tests.
    keep_for: Duration,
    max_stale: Duration,
    fetched: std::sync::RwLock<Fetched<K>>,
    /// When a fetch was last tried, and why it failed if it did; held while one runs.
    tried: tokio::sync::Mutex<Option<(Instant, Option<String>)>>,
}

impl<K: Clone> PublishedKeys<K> {
    /// Keys published at `url` (already held to [`https_url`]), none fetched yet.
    pub fn new(url: Uri) -> Self {
        Self {
            url,
            refetch_after: REFETCH_AFTER,
            keep_for: KEEP_FOR,
            max_stale: MAX_STALE,
            fetched: std::sync::RwLock::new(Fetched {
                keys: HashMap::new(),
                at: None,
            }),
            tried: tokio::sync::Mutex::new(None),
        }
    }

    /// The same keys, fetched again at most once per `wait` instead of once a minute, so that a
    /// test can see a fetch after the wait without waiting a minute.
    #[cfg(any(test, feature = "testing"))]
    pub fn refetching_after(self, wait: Duration) -> Self {
        Self {
            refetch_after: wait,
            ..self
        }
    }

    /// The same keys, fresh for `keep_for` and used at most `max_stale` while fetches fail.
    #[cfg(test)]
    fn aging(self, keep_for: Duration, max_stale: Duration) -> Self {
        Self {
            keep_for,
            max_stale,
            ..self
        }
    }

    /// Where the keys are published.
    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// The key named `identifier`, as kept while it is fresh; else `fetch` is called for
    /// every key, at most once a minute however that went. A key that a failed fetch could
    /// not refresh is still used for up to a day after it was fetched; with no key at all, or
    /// only one older than that, the failure is the error.
    pub async fn key<F, Fut>(&self, identifier: &str, fetch: F) -> Result<Option<K>, FetchError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<HashMap<String, K>, FetchError>>,
    {
        let kept = || {
            let fetched = self.fetched.read().unwrap_or_else(|e| e.into_inner());
            let age = fetched.at.map(|at| at.elapsed());
            let fresh = age.is_some_and(|age| age < self.keep_for);
            let usable = age.is_some_and(|age| age < self.max_stale);
            let key = fetched.keys.get(identifier).filter(|_| usable).cloned();
            (key, fresh)
        };
        if let (Some(key), true) = kept() {
            return Ok(Some(key));
        }
        let mut tried = self.tried.lock().await;
        let (key, fresh) = kept();
        if key.is_some() && fresh {
            return Ok(key);
        }
        if let Some((at, failure)) = tried.as_ref()
            && at.elapsed() < self.refetch_after
        {
            return match (key, failure) {
                (None, Some(why)) => Err(FetchError::new(
                    &self.url,
                    format!("{why}; not tried again yet"),
                )),
                (key, _) => Ok(key),
            };
        }
        let outcome = fetch().await;
        *tried = Some((
            Instant::now(),
            outcome.as_ref().err().map(|e| e.why.clone()),
        ));
        match outcome {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), url = %self.url, "published keys fetched");
                let mut fetched = self.fetched.write().unwrap_or_else(|e| e.into_inner());
                *fetched = Fetched {
                    keys,
                    at: Some(Instant::now()),
                };
                Ok(fetched.keys.get(identifier).cloned())
            }
            Err(e) if key.is_some() => {
                tracing::warn!(error = %e, "published keys could not be refreshed; the kept key is used");
                Ok(key)
            }
            Err(e) => Err(e),
        }
    }

    /// When the last fetch was tried, and why it failed if it did.
    #[cfg(test)]
    pub(crate) async fn last_try(&self) -> Option<(Instant, Option<String>)> {
        self.tried.lock().await.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publisher_is_https_or_loopback() {
        for good in [
            "https://api.github.com/meta/public_keys/secret_scanning",
            "https://login.example.com/.well-known/jwks.json",
            "http://127.0.0.1:9/keys",
            "http://[::1]:9/keys",
            "http://localhost:9/keys",
        ] {
            assert!(https_url("VAR", good).is_ok(), "{good}");
        }
        for bad in ["http://api.github.com/keys", "ftp://x/keys", "keys", ""] {
            let refused = https_url("VAR", bad).err().unwrap_or_default();
            assert!(refused.starts_with("VAR: "), "{bad}: {refused}");
        }
    }

    #[tokio::test]
    async fn keys_that_cannot_be_fetched_are_unavailable_and_tried_again_only_after_a_minute() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = https_url(
            "VAR",
            &format!("http://{}/keys", closed.local_addr().unwrap()),
        )
        .unwrap();
        drop(closed);
        let keys = PublishedKeys::<String>::new(url.clone());
        let started = Instant::now();
        let tries = std::sync::atomic::AtomicUsize::new(0);
        let fetch = || async {
            tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = get(&url).await?;
            Ok(HashMap::from([(
                "k".to_owned(),
                String::from_utf8_lossy(&body).into_owned(),
            )]))
        };
        for _ in 0..3 {
            assert!(keys.key("k", fetch).await.is_err(), "nothing to check with");
        }
        assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst), 1);
        let (at, failure) = keys.last_try().await.expect("one try");
        assert!(at >= started && failure.is_some());
        let again = keys.key("k", fetch).await.unwrap_err().to_string();
        assert!(again.contains("not tried again yet"), "{again}");
    }

    #[tokio::test]
    async fn a_kept_key_is_used_without_a_fetch_and_an_unknown_one_fetches_at_most_once_a_minute() {
        let keys = PublishedKeys::new(https_url("VAR", "http://127.0.0.1:9/keys").unwrap());
        let tries = std::sync::atomic::AtomicUsize::new(0);
        let fetch = || async {
            tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(HashMap::from([("known".to_owned(), 7)]))
        };
        assert_eq!(keys.key("known", fetch).await.unwrap(), Some(7));
        assert_eq!(keys.key("known", fetch).await.unwrap(), Some(7));
        assert_eq!(keys.key("made-up", fetch).await.unwrap(), None);
        assert_eq!(keys.key("made-up-too", fetch).await.unwrap(), None);
        assert_eq!(
            tries.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the unknown identifiers came within a minute of the first fetch"
        );
    }

    #[tokio::test]
    async fn a_kept_key_outlives_failed_fetches_for_a_while_and_no_longer() {
        let wait = Duration::from_millis(40);
        let keys = PublishedKeys::new(https_url("VAR", "http://127.0.0.1:9/keys").unwrap())
            .refetching_after(Duration::ZERO)
            .aging(wait, 25 * wait);
        let good = || async { Ok(HashMap::from([("k".to_owned(), 7)])) };
        let url = keys.url().clone();
        let down = || async move { Err(FetchError::new(&url, "down")) };
        assert_eq!(keys.key("k", good).await.unwrap(), Some(7));
        std::thread::sleep(2 * wait);
        assert_eq!(
            keys.key("k", down.clone()).await.unwrap(),
            Some(7),
            "stale, and the publisher down: the kept key still serves"
        );
        std::thread::sleep(25 * wait);
        assert!(
            keys.key("k", down).await.is_err(),
            "too stale to trust: the failure is the answer"
        );
    }
}
