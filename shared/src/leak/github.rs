//! GitHub's secret scanning partner program: the signature that proves a report came from
//! GitHub, and the public keys it is checked with.
//!
//! GitHub signs the raw body of each report with ECDSA over P-256 and SHA-256, sends the
//! signature (base64 of its DER) in `Github-Public-Key-Signature`, and names the key in
//! `Github-Public-Key-Identifier`. The keys are published at [`DEFAULT_KEYS_URL`]; they are
//! fetched once and kept for an hour, and fetched again sooner when a report names a key
//! that is not kept, at most one try a minute, so that a flood of made-up identifiers (or
//! GitHub being down) cannot make keyward hammer GitHub.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Request, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The variable that names where GitHub's keys are published: GitHub Enterprise Server has
/// its own, and tests serve theirs on loopback.
pub const KEYS_URL_VAR: &str = "KEYWARD_GITHUB_KEYS_URL";

/// Where github.com publishes the keys that sign secret scanning reports.
pub const DEFAULT_KEYS_URL: &str = "https://api.github.com/meta/public_keys/secret_scanning";

/// How long after a fetch was tried another may be.
const REFETCH_AFTER: Duration = Duration::from_secs(60);

/// How long fetched keys are used before they are fetched again, so that a key GitHub
/// withdraws stops being trusted.
const KEEP_FOR: Duration = Duration::from_secs(3600);

/// How long a fetch of the keys may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest list of keys read.
const MAX_KEYS_BYTES: usize = 256 * 1024;

/// Why GitHub's keys could not be had; the cause is for the log.
#[derive(Debug, thiserror::Error)]
#[error("GitHub's public keys could not be fetched from {url}: {why}")]
pub struct FetchError {
    url: String,
    why: String,
}

/// The keys fetched, by identifier, as SubjectPublicKeyInfo DER, and when.
#[derive(Default)]
struct Fetched {
    keys: HashMap<String, Vec<u8>>,
    at: Option<Instant>,
}

/// GitHub's signing keys, fetched from one URL and kept for the life of the process. A check
/// with a key that is kept and fresh never waits: fetches take turns on a lock of their own.
pub struct GithubKeys {
    url: Uri,
    fetched: std::sync::RwLock<Fetched>,
    /// When a fetch was last tried, and why it failed if it did; held while one runs.
    tried: tokio::sync::Mutex<Option<(Instant, Option<String>)>>,
}

/// Whether a report's signature holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    /// It was made over this body by the key named.
    Valid,
    /// It is missing, malformed, made by a key GitHub does not publish, or not over this body.
    Invalid,
}

impl GithubKeys {
    /// The keys published at `url`: `https://`, or `http://` to this machine's loopback only,
    /// since a key fetched in clear from elsewhere could be anyone's.
    pub fn new(url: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("{KEYS_URL_VAR}: {url:?} {why}");
        let uri: Uri = url.parse().map_err(|_| bad("is not a URL"))?;
        let host = uri.host().ok_or_else(|| bad("has no host"))?;
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if loopback => {}
            _ => return Err(bad("is not https:// (plain http:// only to loopback)")),
        }
        Ok(Self {
            url: uri,
            fetched: std::sync::RwLock::new(Fetched::default()),
            tried: tokio::sync::Mutex::new(None),
        })
    }

    /// The keys at `KEYWARD_GITHUB_KEYS_URL`, or github.com's when it is unset.
    pub fn from_env() -> Result<Self, String> {
        Self::new(&std::env::var(KEYS_URL_VAR).unwrap_or_else(|_| DEFAULT_KEYS_URL.to_owned()))
    }

    /// Whether `signature` (base64 of an ECDSA DER signature) was made over `body` by the
    /// key `identifier` names. A fetch that fails is an error: the report cannot be judged.
    pub async fn check(
        &self,
        identifier: &str,
        signature: &str,
        body: &[u8],
    ) -> Result<Signature, FetchError> {
        let Ok(signature) = STANDARD.decode(signature.trim()) else {
            return Ok(Signature::Invalid);
        };
        let Some(key) = self.key(identifier).await? else {
            return Ok(Signature::Invalid);
        };
        Ok(if signature_holds(&key, body, &signature) {
            Signature::Valid
        } else {
            Signature::Invalid
        })
    }

    /// The key named `identifier`, as kept while it is fresh; else the keys are fetched again,
    /// at most once a minute however that went (so that made-up identifiers, or GitHub being
    /// down, cannot make keyward hammer it). A key that a failed fetch could not refresh is
    /// still used; with no key at all, the failure is the error.
    async fn key(&self, identifier: &str) -> Result<Option<Vec<u8>>, FetchError> {
        let kept = || {
            let fetched = self.fetched.read().unwrap_or_else(|e| e.into_inner());
            let fresh = fetched.at.is_some_and(|at| at.elapsed() < KEEP_FOR);
            (fetched.keys.get(identifier).cloned(), fresh)
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
            && at.elapsed() < REFETCH_AFTER
        {
            return match (key, failure) {
                (None, Some(why)) => Err(FetchError {
                    url: self.url.to_string(),
                    why: format!("{why}; not tried again within a minute"),
                }),
                (key, _) => Ok(key),
            };
        }
        let outcome = self.fetch().await;
        *tried = Some((
            Instant::now(),
            outcome.as_ref().err().map(|e| e.why.clone()),
        ));
        match outcome {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), url = %self.url, "GitHub's public keys fetched");
                let mut fetched = self.fetched.write().unwrap_or_else(|e| e.into_inner());
                *fetched = Fetched {
                    keys,
                    at: Some(Instant::now()),
                };
                Ok(fetched.keys.get(identifier).cloned())
            }
            Err(e) if key.is_some() => {
                tracing::warn!(error = %e, "GitHub's keys could not be refreshed; the kept key is used");
                Ok(key)
            }
            Err(e) => Err(e),
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, Vec<u8>>, FetchError> {
        let failed = |why: String| FetchError {
            url: self.url.to_string(),
            why,
        };
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
        let request = Request::get(self.url.clone())
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, "keyward")
            .body(Empty::<Bytes>::new())
            .map_err(|e| failed(e.to_string()))?;
        let exchange = async {
            let answer = client
                .request(request)
                .await
                .map_err(|e| failed(e.to_string()))?;
            let status = answer.status();
            let body = Limited::new(answer.into_body(), MAX_KEYS_BYTES)
                .collect()
                .await
                .map_err(|e| failed(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                return Err(failed(format!("it answered {status}")));
            }
            Ok(body)
        };
        let body = tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| failed(format!("no answer within {FETCH_TIMEOUT:?}")))??;
        parse_keys(&body).ok_or_else(|| failed("the answer is not GitHub's list of keys".into()))
    }
}

/// The keys of GitHub's answer, `{"public_keys": [{"key_identifier", "key"}]}` with each key
/// in PEM, as DER by identifier; a key that is not PEM is left out.
fn parse_keys(body: &[u8]) -> Option<HashMap<String, Vec<u8>>> {
    let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
    let keys = answer["public_keys"].as_array()?;
    Some(
        keys.iter()
            .filter_map(|key| {
                let identifier = key["key_identifier"].as_str()?;
                Some((identifier.to_owned(), pem_to_der(key["key"].as_str()?)?))
            })
            .collect(),
    )
}

/// The DER inside a PEM `PUBLIC KEY` block.
fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let inner = pem
        .trim()
        .strip_prefix("-----BEGIN PUBLIC KEY-----")?
        .strip_suffix("-----END PUBLIC KEY-----")?;
    let base64: String = inner.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(base64).ok()
}

/// Whether `signature` (DER) over `body` was made by the P-256 key `public_key`
/// (SubjectPublicKeyInfo DER), with SHA-256.
pub fn signature_holds(public_key: &[u8], body: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, public_key)
        .verify(body, signature)
        .is_ok()
}

/// The keys this process checks GitHub's reports with, once [`install`]ed.
static INSTALLED: OnceLock<GithubKeys> = OnceLock::new();

/// Sets the keys this process checks GitHub's reports with, once, at start: the function's
/// `main` and `keyward serve` install [`GithubKeys::from_env`]. A second call keeps the first.
pub fn install(keys: GithubKeys) {
    let _ = INSTALLED.set(keys);
}

/// The keys installed, if any.
pub fn installed() -> Option<&'static GithubKeys> {
    INSTALLED.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test key that GitHub's documentation of the partner program signs its sample with.
    const DOCS_KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEsz9ugWDj5jK5ELBK42ynytbo38gP
HzZFI03Exwz8Lh/tCfL3YxwMdLjB+bMznsanlhK0RwcGP3IDb34kQDIo3Q==
-----END PUBLIC KEY-----";
    const DOCS_SIGNATURE: &str = "MEUCIFLZzeK++IhS+y276SRk2Pe5LfDrfvTXu6iwKKcFGCrvAiEAhHN2kDOhy2I6eGkOFmxNkOJ+L2y8oQ9A2T9GGJo6WJY=";
    const DOCS_BODY: &[u8] =
        br#"[{"token":"some_token","type":"some_type","url":"some_url","source":"some_source"}]"#;

    #[test]
    fn githubs_documented_sample_verifies_and_any_flipped_byte_fails() {
        let key = pem_to_der(DOCS_KEY).unwrap();
        let signature = STANDARD.decode(DOCS_SIGNATURE).unwrap();
        assert!(signature_holds(&key, DOCS_BODY, &signature));
        for at in 0..DOCS_BODY.len() {
            let mut body = DOCS_BODY.to_vec();
            body[at] ^= 0x01;
            assert!(!signature_holds(&key, &body, &signature), "byte {at}");
        }
        for at in 0..signature.len() {
            let mut flipped = signature.clone();
            flipped[at] ^= 0x01;
            assert!(
                !signature_holds(&key, DOCS_BODY, &flipped),
                "signature byte {at}"
            );
        }
    }

    #[test]
    fn the_keys_url_is_https_or_loopback() {
        for good in [
            DEFAULT_KEYS_URL,
            "https://ghe.example.com/api/v3/meta/public_keys/secret_scanning",
            "http://127.0.0.1:9/keys",
            "http://[::1]:9/keys",
            "http://localhost:9/keys",
        ] {
            assert!(GithubKeys::new(good).is_ok(), "{good}");
        }
        for bad in ["http://api.github.com/keys", "ftp://x/keys", "keys", ""] {
            let refused = GithubKeys::new(bad).err().unwrap_or_default();
            assert!(refused.starts_with(KEYS_URL_VAR), "{bad}: {refused}");
        }
    }

    #[tokio::test]
    async fn keys_that_cannot_be_fetched_are_unavailable_and_tried_again_only_after_a_minute() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/keys", closed.local_addr().unwrap());
        drop(closed);
        let keys = GithubKeys::new(&url).unwrap();
        let started = Instant::now();
        for _ in 0..3 {
            let failed = keys.check("any", DOCS_SIGNATURE, DOCS_BODY).await;
            assert!(failed.is_err(), "no keys: the report cannot be judged");
        }
        let tries = keys.tried.lock().await.clone();
        let (at, failure) = tries.expect("one try");
        assert!(at >= started && failure.is_some());
        let again = keys.check("any", DOCS_SIGNATURE, DOCS_BODY).await;
        assert!(
            again
                .unwrap_err()
                .to_string()
                .contains("not tried again within a minute"),
            "the last try is remembered"
        );
    }

    #[test]
    fn githubs_list_of_keys_is_read_and_a_key_that_is_not_pem_left_out() {
        let body = serde_json::json!({"public_keys": [
            {"key_identifier": "docs", "key": DOCS_KEY, "is_current": true},
            {"key_identifier": "broken", "key": "not a key", "is_current": false},
        ]});
        let keys = parse_keys(body.to_string().as_bytes()).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["docs"]);
        assert!(parse_keys(b"[]").is_none());
        assert!(parse_keys(b"not json").is_none());
    }
}
