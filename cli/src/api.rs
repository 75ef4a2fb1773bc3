//! The client side of the HTTP API: one JSON request at a time to a keyward at a URL, over
//! HTTP or HTTPS (the system's roots), and the three ways a request can fail, each with the
//! exit status a script branches on.

use std::fmt;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, Uri, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use keyward::domain::KeyPrefix;
use serde_json::Value;

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a whole request may take, answer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest answer read: far above any page of 100 keys or entries.
const MAX_ANSWER_BYTES: usize = 8 << 20;

/// Why a command did not succeed, and so which exit status it ends with.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// The command line is wrong: exit status 2.
    Usage(String),
    /// keyward refused the request, with its error code and message: exit status 1.
    Refused {
        /// The API's `error.code`.
        code: String,
        /// The API's `error.message`.
        message: String,
    },
    /// The command failed for a reason of its own, such as a store it could not open: exit
    /// status 1.
    Failed(String),
    /// keyward could not be reached, answered `5xx`, `429` or something that is not its API:
    /// exit status 3, the class a script may retry.
    Unreachable(String),
}

impl Failure {
    /// The process's exit status for this failure.
    pub fn exit_status(&self) -> u8 {
        match self {
            Failure::Refused { .. } | Failure::Failed(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Unreachable(_) => 3,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused { code, message } => write!(f, "{code}: {message}"),
            Failure::Usage(message) | Failure::Failed(message) | Failure::Unreachable(message) => {
                f.write_str(message)
            }
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Failed(message)
    }
}

/// The caller's key. It goes into one header and nowhere else: its `Debug` hides it.
pub struct CallerKey(String);

impl CallerKey {
    /// Takes a key as read from a variable, a file or stdin, without the line's end. A key
    /// that could not be sent in a header is a usage error that does not repeat it.
    pub fn new(text: &str, source: &str) -> Result<Self, Failure> {
        let key = text.trim();
        if key.is_empty() {
            return Err(Failure::Usage(format!("{source} holds no key")));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Failure::Usage(format!(
                "{source} does not hold a key: a key is one word of ASCII letters, digits and _"
            )));
        }
        Ok(Self(key.to_owned()))
    }

    /// The key itself, to derive its environment from.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CallerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallerKey(..)")
    }
}

/// A keyward at a URL, and the key that requests are made with, if any.
pub struct Api {
    base: String,
    key: Option<CallerKey>,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// Whether `host` (from a URL, so an IPv6 address comes in brackets) is this machine's
/// loopback, where plain HTTP never leaves the machine.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Api {
    /// A client of the keyward at `url` (`http://` or `https://`, with an optional path
    /// prefix such as an API Gateway stage). HTTPS trusts the system's roots, which
    /// `SSL_CERT_FILE` and `SSL_CERT_DIR` can replace. Plain `http://` is refused to any host
    /// but this machine's loopback unless `insecure_http` says otherwise, because every request
    /// carries a key.
    pub fn new(url: &str, key: Option<CallerKey>, insecure_http: bool) -> Result<Self, Failure> {
        let base = url.trim_end_matches('/').to_owned();
        let uri: Uri = base
            .parse()
            .map_err(|_| Failure::Usage(format!("--url {url} is not a URL")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(Failure::Usage(format!(
                    "--url {url} is not an http:// or https:// URL"
                )));
            }
        };
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(Failure::Usage(
                "--url must not hold a user or password: keyward takes its key from KEYWARD_API_KEY"
                    .to_owned(),
            ));
        }
        let Some(host) = uri.host().filter(|_| uri.query().is_none()) else {
            return Err(Failure::Usage(format!(
                "--url {url} needs a host and no query"
            )));
        };
        if !https && !insecure_http && !is_loopback(host) {
            return Err(Failure::Usage(format!(
                "--url {url} is plain http:// to {host}, which is not this machine: the key would cross the network in clear. Use https://, or add --insecure-http to send it anyway"
            )));
        }
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = if https {
            builder
                .with_provider_and_native_roots(provider)
                .map_err(|e| {
                    Failure::Failed(format!(
                        "cannot load the system's root certificates for {url}: {e}"
                    ))
                })?
        } else {
            let tls = rustls::ClientConfig::builder_with_provider(provider.into())
                .with_safe_default_protocol_versions()
                .map_err(|e| Failure::Failed(format!("cannot set up TLS: {e}")))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            builder.with_tls_config(tls)
        };
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.enforce_http(false);
        let connector = builder
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        Ok(Self {
            base,
            key,
            http: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// The key requests are made with, if any.
    pub fn key(&self) -> Option<&CallerKey> {
        self.key.as_ref()
    }

    /// The prefix of the deployment's keys, as the key acted with shows it: a deployment
    /// takes only keys with its own prefix, so the caller's key names it, and no setting can
    /// disagree with the server. Without a key, or with one of no known shape, the default.
    pub fn key_prefix(&self) -> KeyPrefix {
        self.key
            .as_ref()
            .and_then(|key| key.expose().split_once('_'))
            .and_then(|(prefix, _)| KeyPrefix::parse(prefix).ok())
            .unwrap_or_default()
    }

    /// Sends one request to `path` (from `/v1`, with its query) and answers its JSON body:
    /// a `4xx` is [`Failure::Refused`], anything else that is not a `2xx` JSON answer is
    /// [`Failure::Unreachable`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let url = format!("{}{path}", self.base);
        let mut request = Request::builder()
            .method(method)
            .uri(&url)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("keyward-cli/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(key) = &self.key {
            request = request.header(header::AUTHORIZATION, format!("Bearer {}", key.0));
        }
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(json.to_string())
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(body))
            .map_err(|_| Failure::Usage(format!("{url} is not a URL that can be requested")))?;
        let exchange = async {
            let answer =
                self.http.request(request).await.map_err(|e| {
                    format!("cannot reach {}: {}", self.base, keyward::error_chain(&e))
                })?;
            let status = answer.status();
            let bytes = Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| format!("{} broke off its answer: {e}", self.base))?
                .to_bytes();
            Ok::<_, String>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                Failure::Unreachable(format!(
                    "{} did not answer within {} seconds",
                    self.base,
                    REQUEST_TIMEOUT.as_secs()
                ))
            })?
            .map_err(Failure::Unreachable)?;
        judge(status, &bytes, &self.base)
    }
}

/// Where the words of `text` that hold one of `kinds` (such as `_sk_`) are, in order: a word
/// is a run of ASCII letters, digits and `_`, so that a key is found whatever its prefix.
/// Found in one pass, so that a long text full of them costs time in proportion to its length.
fn key_words<'t>(text: &'t str, kinds: &'t [&str]) -> impl Iterator<Item = (usize, usize)> + 't {
    let in_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut from = 0;
    std::iter::from_fn(move || {
        let rest = &text[from..];
        let at = rest
            .match_indices('_')
            .map(|(i, _)| i)
            .find(|&i| kinds.iter().any(|kind| rest[i..].starts_with(kind)))?;
        let start = from + rest[..at].trim_end_matches(in_word).len();
        let tail = &rest[at..];
        let end = from + at + tail.find(|c: char| !in_word(c)).unwrap_or(tail.len());
        from = end;
        Some((start, end))
    })
}

/// Text from a server with anything shaped like a keyward key hidden, and control characters
/// replaced: API Gateway repeats a bad `Authorization` header in its message, and a message
/// goes to stderr, which CI logs keep. Every word with `_sk_` or `_pk_` in it is hidden,
/// whatever its prefix, so that a key of another deployment is never printed either.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut kept = 0;
    for (start, end) in key_words(text, &["_sk_", "_pk_"]) {
        out.push_str(&text[kept..start]);
        out.push_str("[a key]");
        kept = end;
    }
    out.push_str(&text[kept..]);
    crate::show::clean(&out)
}

/// Every string of `text` shaped like a secret key of the deployment whose keys start with
/// `prefix`, each once, in the order first found: what `keyward leaks report` finds in a leaked
/// file. As the scanner regex does, it takes a key right after a word character (`key%3D` in
/// a URL) and runs to the end of the word.
pub fn secret_keys_in<'t>(text: &'t str, prefix: &KeyPrefix) -> Vec<&'t str> {
    let start = format!("{}_sk_", prefix.as_str());
    let in_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut seen = std::collections::HashSet::new();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(&start) {
        let begin = from + at;
        let tail = &text[begin..];
        let end = begin + tail.find(|c: char| !in_word(c)).unwrap_or(tail.len());
        if seen.insert(&text[begin..end]) {
            found.push(&text[begin..end]);
        }
        from = end;
    }
    found
}

/// [`redact`] for text of several lines, whose line ends are kept.
pub fn redact_lines(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| match line.strip_suffix('\n') {
            Some(line) => format!("{}\n", redact(line)),
            None => redact(line),
        })
        .collect()
}

/// Turns an answer into its JSON, or the failure it stands for.
fn judge(status: StatusCode, body: &[u8], base: &str) -> Result<Value, Failure> {
    let json = serde_json::from_slice::<Value>(body).ok();
    if status.is_success() {
        return json.ok_or_else(|| {
            Failure::Unreachable(format!(
                "{base} answered {status} with something that is not keyward's JSON"
            ))
        });
    }
    let error = json.as_ref().and_then(|j| {
        let code = j["error"]["code"].as_str()?;
        let message = j["error"]["message"].as_str().unwrap_or("");
        Some((redact(code), redact(message)))
    });
    // API Gateway answers its own refusals (a missing route, a throttle) as {"message": ...},
    // or {"Message": ...} for an explicit deny.
    let gateway = || {
        let json = json.as_ref()?;
        let message = json["message"].as_str().or(json["Message"].as_str())?;
        Some((format!("http_{}", status.as_u16()), redact(message)))
    };
    let Some((code, message)) = error.or_else(gateway) else {
        return Err(Failure::Unreachable(format!(
            "{base} answered {status} with something that is not keyward's JSON"
        )));
    };
    let retryable = matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT
    );
    if status.is_client_error() && !retryable {
        Err(Failure::Refused { code, message })
    } else {
        Err(Failure::Unreachable(format!(
            "{base} answered {}: {code}: {message}",
            status.as_u16()
        )))
    }
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: &str, message: &str) -> Failure {
        Failure::Refused {
            code: code.to_owned(),
            message: message.to_owned(),
        }
    }

    #[test]
    fn the_deployments_secret_keys_are_found_anywhere_in_a_text_and_each_once() {
        let kw = KeyPrefix::default();
        let text =
            "a=kw_sk_prod_Ab9\n\"kw_sk_prod_Ab9\" key%3Dkw_sk_x_y&kw_pk_prod_P1 acme_sk_p_Q2";
        assert_eq!(
            secret_keys_in(text, &kw),
            ["kw_sk_prod_Ab9", "kw_sk_x_y"],
            "a publishable key and another prefix's are left out"
        );
        let acme = KeyPrefix::parse("acme").unwrap();
        assert_eq!(secret_keys_in(text, &acme), ["acme_sk_p_Q2"]);
        assert!(secret_keys_in("no keys", &kw).is_empty());
    }

    #[test]
    fn each_kind_of_answer_is_its_class_of_failure() {
        let base = "http://127.0.0.1:1";
        let error =
            br#"{"error": {"code": "default_key_must_be_rotated", "message": "rotate it first"}}"#;
        assert_eq!(
            judge(StatusCode::CONFLICT, error, base),
            Err(refused("default_key_must_be_rotated", "rotate it first"))
        );
        assert_eq!(
            judge(StatusCode::FORBIDDEN, br#"{"message": "Forbidden"}"#, base),
            Err(refused("http_403", "Forbidden"))
        );
        assert_eq!(
            judge(
                StatusCode::FORBIDDEN,
                br#"{"Message": "explicit deny"}"#,
                base
            ),
            Err(refused("http_403", "explicit deny"))
        );
        let gateway = br#"{"message": "'kw_sk_production_abc123XYZ' not a valid key=value pair in Authorization header: 'Bearer kw_sk_production_abc123XYZ'"}"#;
        let failure = judge(StatusCode::FORBIDDEN, gateway, base).unwrap_err();
        assert!(!failure.to_string().contains("kw_sk_"), "{failure}");
        assert!(
            failure.to_string().contains("'[a key]' not a valid"),
            "{failure}"
        );
        let throttled = judge(
            StatusCode::TOO_MANY_REQUESTS,
            br#"{"message": "Too Many Requests"}"#,
            base,
        );
        assert_eq!(throttled.map_err(|f| f.exit_status()), Err(3));
        assert_eq!(
            judge(StatusCode::NOT_FOUND, b"<html>", base).map_err(|f| f.exit_status()),
            Err(3)
        );
        for (status, body) in [
            (StatusCode::INTERNAL_SERVER_ERROR, &error[..]),
            (StatusCode::BAD_GATEWAY, b"<html>"),
            (StatusCode::OK, b"<html>"),
        ] {
            let failure = judge(status, body, base).unwrap_err();
            assert_eq!(failure.exit_status(), 3, "{status}: {failure}");
            assert!(failure.to_string().contains(base), "{failure}");
        }
        assert_eq!(
            judge(StatusCode::CREATED, br#"{"key": {}}"#, base),
            Ok(serde_json::json!({"key": {}}))
        );
    }

    #[test]
    fn a_caller_key_is_never_repeated_or_shown() {
        let key = CallerKey::new("  kw_sk_x_abc\n", "KEYWARD_API_KEY").unwrap();
        assert_eq!(key.expose(), "kw_sk_x_abc");
        assert_eq!(format!("{key:?}"), "CallerKey(..)");
        for bad in ["", " \n", "kw sk", "kw_é"] {
            let failure = CallerKey::new(bad, "the file k").unwrap_err();
            assert_eq!(failure.exit_status(), 2);
            assert!(failure.to_string().starts_with("the file k "), "{failure}");
            assert!(bad.trim().is_empty() || !failure.to_string().contains(bad.trim()));
        }
    }

    #[test]
    fn urls_are_checked_before_anything_is_sent() {
        for bad in [
            "127.0.0.1:8080",
            "ftp://x",
            "http://",
            "http://x/?a=b",
            "not a url",
            "https://user:secret@x",
        ] {
            let failure = Api::new(bad, None, false).err().expect(bad);
            assert_eq!(failure.exit_status(), 2, "{bad}: {failure}");
        }
        assert!(Api::new("http://127.0.0.1:8080/", None, false).is_ok());
        for here in [
            "http://localhost:8080",
            "http://127.0.0.2",
            "http://[::1]:8080/prod",
        ] {
            assert!(Api::new(here, None, false).is_ok(), "{here}");
        }
        for away in [
            "http://10.0.0.5:8080",
            "http://keyward.example.com",
            "http://[2001:db8::1]",
        ] {
            let refused = Api::new(away, None, false).err().expect(away);
            assert!(
                matches!(&refused, Failure::Usage(m) if m.contains("--insecure-http")),
                "{away}: {refused:?}"
            );
            assert!(
                Api::new(away, None, true).is_ok(),
                "{away} with --insecure-http"
            );
        }
        assert!(Api::new("https://keyward.example.com/prod", None, false).is_ok());
    }

    #[test]
    fn anything_shaped_like_a_key_is_hidden() {
        assert_eq!(
            redact("a kw_pk_dev_Ab9 and kw_sk_x_y.\u{1b}[2J"),
            "a [a key] and [a key].?[2J"
        );
        assert_eq!(redact("no key here"), "no key here");
        assert_eq!(
            redact("'Bearer acme_sk_prod_Ab9' and (acme2_pk_x_y)"),
            "'Bearer [a key]' and ([a key])",
            "another deployment's keys too"
        );
        assert_eq!(
            redact("\u{201c}acme_sk_prod_Ab9\u{201d} é_pk_x"),
            "\u{201c}[a key]\u{201d} é[a key]",
            "a key after a character of several bytes"
        );
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("key.rotated"), "key.rotated");
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
