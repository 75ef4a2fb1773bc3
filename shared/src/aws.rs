//! The AWS configuration behind every client keyward builds on Lambda.
//!
//! The SDK's default HTTPS client reads the system's root certificates at cold start, which
//! is most of a function's start-up time (BENCHMARKS.md, "The authorizer's cold start").
//! AWS service endpoints present certificates from Amazon Trust Services, so the client
//! trusts just its roots (`amazon-roots.pem`: Amazon Root CA 1 to 4 and Starfield Services
//! Root CA G2, which cross-signs them), held in the binary. Where that may not hold, it
//! keeps the system's roots: when an `AWS_ENDPOINT_URL` variable names another endpoint, and
//! in the China regions, whose endpoints are not under Amazon Trust Services. Behind an
//! egress proxy that inspects TLS, AWS endpoints present the proxy's certificates instead, so
//! `KEYWARD_TLS_ROOTS=system` switches back to the system's roots (and so to `SSL_CERT_FILE`
//! and `SSL_CERT_DIR`, where an operator adds the proxy's authority), at the cost in cold
//! start that BENCHMARKS.md measures.
//!
//! Lambda hands a function its credentials in `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
//! and `AWS_SESSION_TOKEN`, which the SDK's default credential chain tries first anyway. When
//! they are set, the client reads them directly, and skips building the rest of that chain
//! (an STS client for web identity, an IMDS client, the ECS and profile providers), about a
//! tenth of the authorizer's cold start (BENCHMARKS.md). Without them, the whole chain is
//! kept, so profiles and SSO still work on a laptop. The region likewise: Lambda sets
//! `AWS_REGION`, which the default region chain tries first, so when it is set it is named,
//! and the chain's other providers (an IMDS client among them) are not built.

pub mod calls;

use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore};
use aws_smithy_http_client::{Builder, ConnectorBuilder};

/// Amazon Trust Services' five root certificates, in PEM.
const AMAZON_ROOTS: &[u8] = include_bytes!("amazon-roots.pem");

/// The root certificates the HTTPS client trusts, as `KEYWARD_TLS_ROOTS` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsRoots {
    /// Amazon Trust Services' five roots, held in the binary: the default.
    Amazon,
    /// The system's roots, which `SSL_CERT_FILE` and `SSL_CERT_DIR` can change.
    System,
}

impl TlsRoots {
    /// The variable that chooses the roots.
    pub const VAR: &'static str = "KEYWARD_TLS_ROOTS";

    /// Parses `amazon` or `system`; anything else is refused, so that a typo never leaves a
    /// function behind a proxy trusting what the operator meant to replace.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "amazon" => Ok(Self::Amazon),
            "system" => Ok(Self::System),
            other => Err(format!(
                "{}: {other:?} is not a choice of roots: expected amazon or system",
                Self::VAR
            )),
        }
    }
}

/// What the environment lets the configuration skip, judged from the variables that
/// `aws_config` itself reads.
#[derive(Debug, PartialEq, Eq)]
struct Shortcuts {
    /// The roots keyward's own HTTPS client trusts, or `None` for the SDK's default client,
    /// which an endpoint named in `AWS_ENDPOINT_URL` or a China region keeps.
    roots: Option<TlsRoots>,
    /// The credentials are in the environment, where the default chain would find them first.
    env_credentials: bool,
    /// The region in `AWS_REGION`, where the default chain would find it first; naming it
    /// spares building the chain's other providers (an IMDS client among them).
    region: Option<String>,
}

impl Shortcuts {
    fn from_vars(vars: impl Iterator<Item = (String, String)>) -> Result<Self, String> {
        let (mut custom_endpoint, mut china) = (false, false);
        let (mut key_id, mut secret) = (false, false);
        let mut roots = TlsRoots::Amazon;
        let mut region = None;
        for (name, value) in vars {
            if name == "AWS_REGION" && !value.is_empty() {
                region = Some(value.clone());
            }
            if name == TlsRoots::VAR {
                roots = TlsRoots::parse(&value)?;
            }
            custom_endpoint |= name.starts_with("AWS_ENDPOINT_URL");
            china |=
                (name == "AWS_REGION" || name == "AWS_DEFAULT_REGION") && value.starts_with("cn-");
            key_id |= name == "AWS_ACCESS_KEY_ID" && !value.is_empty();
            secret |= name == "AWS_SECRET_ACCESS_KEY" && !value.is_empty();
        }
        Ok(Self {
            roots: if custom_endpoint || china {
                None
            } else {
                Some(roots)
            },
            env_credentials: key_id && secret,
            region,
        })
    }
}

/// An HTTPS client like the SDK's default (rustls with aws-lc), which takes its proxy from the
/// environment and trusts `roots`.
fn https_client(roots: TlsRoots) -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    let roots = match roots {
        TlsRoots::Amazon => TrustStore::empty()
            .with_native_roots(false)
            .with_pem_certificate(AMAZON_ROOTS),
        TlsRoots::System => TrustStore::empty().with_native_roots(true),
    };
    let context = TlsContext::builder()
        .with_trust_store(roots)
        .build()
        .expect("a trust store of PEM certificates builds");
    Builder::new().build_with_connector_fn(move |settings, components| {
        let mut connector = ConnectorBuilder::default()
            .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(context.clone());
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

/// The configuration from the standard AWS variables, with the HTTPS client and credentials
/// described above. A bad `KEYWARD_TLS_ROOTS` is an error that names it.
pub async fn config() -> Result<SdkConfig, String> {
    let shortcuts =
        Shortcuts::from_vars(std::env::vars_os().filter_map(|(name, value)| {
            Some((name.into_string().ok()?, value.into_string().ok()?))
        }))?;
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(roots) = shortcuts.roots {
        loader = loader.http_client(https_client(roots));
    }
    if shortcuts.env_credentials {
        loader = loader.credentials_provider(EnvironmentVariableCredentialsProvider::new());
    }
    if let Some(region) = shortcuts.region {
        loader = loader.region(aws_config::Region::new(region));
    }
    Ok(loader.load().await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn amazon_roots_serve_aws_endpoints_but_not_custom_ones_or_china() {
        let roots = |pairs: &[(&str, &str)]| Shortcuts::from_vars(vars(pairs)).unwrap().roots;
        assert_eq!(
            roots(&[("AWS_REGION", "eu-west-1")]),
            Some(TlsRoots::Amazon)
        );
        assert_eq!(
            roots(&[
                ("AWS_REGION", "eu-west-1"),
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
            ]),
            None
        );
        assert_eq!(
            roots(&[("AWS_ENDPOINT_URL_DYNAMODB", "https://dynamodb.internal")]),
            None
        );
        assert_eq!(roots(&[("AWS_REGION", "cn-north-1")]), None);
        assert_eq!(roots(&[("AWS_DEFAULT_REGION", "cn-northwest-1")]), None);
    }

    #[test]
    fn an_operator_switches_back_to_the_systems_roots_by_name_only() {
        let roots = |value: &str| {
            Shortcuts::from_vars(vars(&[("AWS_REGION", "eu-west-1"), (TlsRoots::VAR, value)]))
                .map(|s| s.roots)
        };
        assert_eq!(roots("system"), Ok(Some(TlsRoots::System)));
        assert_eq!(roots("amazon"), Ok(Some(TlsRoots::Amazon)));
        for typo in ["System", "native", ""] {
            let refused = roots(typo).unwrap_err();
            assert!(refused.starts_with("KEYWARD_TLS_ROOTS: "), "{refused}");
        }
    }

    #[test]
    fn the_region_comes_straight_from_aws_region_when_it_is_set() {
        let region = |pairs: &[(&str, &str)]| Shortcuts::from_vars(vars(pairs)).unwrap().region;
        assert_eq!(
            region(&[("AWS_REGION", "eu-west-1")]),
            Some("eu-west-1".to_owned())
        );
        assert_eq!(region(&[("AWS_REGION", "")]), None);
        assert_eq!(
            region(&[("AWS_DEFAULT_REGION", "eu-west-1")]),
            None,
            "left to the chain"
        );
    }

    #[test]
    fn credentials_come_straight_from_the_environment_only_when_both_halves_are_there() {
        let env =
            |pairs: &[(&str, &str)]| Shortcuts::from_vars(vars(pairs)).unwrap().env_credentials;
        assert!(env(&[
            ("AWS_ACCESS_KEY_ID", "ASIAEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "example"),
            ("AWS_SESSION_TOKEN", "token"),
        ]));
        assert!(env(&[
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_SECRET_ACCESS_KEY", "s")
        ]));
        assert!(!env(&[("AWS_ACCESS_KEY_ID", "AKIA")]));
        assert!(!env(&[("AWS_SECRET_ACCESS_KEY", "s")]));
        assert!(!env(&[
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", "s")
        ]));
        assert!(!env(&[("AWS_PROFILE", "dev")]));
    }

    #[cfg(feature = "dynamodb")]
    #[tokio::test]
    async fn the_client_builds_its_tls_connector_from_the_amazon_roots_and_fails_cleanly() {
        use aws_sdk_dynamodb::config::{Credentials, Region};
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("id", "secret", None, None, "test"))
            .endpoint_url("https://127.0.0.1:9")
            .http_client(https_client(TlsRoots::Amazon))
            .build();
        let err = aws_sdk_dynamodb::Client::from_conf(config)
            .list_tables()
            .send()
            .await
            .unwrap_err();
        assert!(
            matches!(err, aws_sdk_dynamodb::error::SdkError::DispatchFailure(_)),
            "the connector was built and the connection refused: {err:?}"
        );
    }

    #[test]
    fn the_five_amazon_roots_are_whole_pem_certificates() {
        let text = std::str::from_utf8(AMAZON_ROOTS).unwrap();
        let blocks: Vec<&str> = text
            .split("-----BEGIN CERTIFICATE-----")
            .skip(1)
            .map(|b| b.split("-----END CERTIFICATE-----").next().unwrap())
            .collect();
        assert_eq!(blocks.len(), 5);
        for block in blocks {
            let base64: String = block.split_whitespace().collect();
            assert!(base64.starts_with("MII"), "a DER certificate: {base64:.20}");
            assert!(base64.len() > 500);
        }
    }
}
