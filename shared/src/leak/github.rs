//! GitHub's secret scanning partner program: the signature that proves a report came from
//! GitHub, and the public keys it is checked with.
//!
//! GitHub signs the raw body of each report with ECDSA over P-256 and SHA-256, sends the
//! signature (base64 of its DER) in `Github-Public-Key-Signature`, and names the key in
//! `Github-Public-Key-Identifier`. The keys are published at [`DEFAULT_KEYS_URL`], and
//! fetched and kept as every published key is ([`crate::published`]).

use std::collections::HashMap;
use std::sync::OnceLock;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::published::{FetchError, PublishedKeys, get, https_url};

/// The variable that names where GitHub's keys are published: GitHub Enterprise Server has
/// its own, and tests serve theirs on loopback.
pub const KEYS_URL_VAR: &str = "KEYWARD_GITHUB_KEYS_URL";

/// Where github.com publishes the keys that sign secret scanning reports.
pub const DEFAULT_KEYS_URL: &str = "https://api.github.com/meta/public_keys/secret_scanning";

/// GitHub's signing keys, as SubjectPublicKeyInfo DER by identifier, fetched from one URL
/// and kept for the life of the process.
pub struct GithubKeys {
    keys: PublishedKeys<Vec<u8>>,
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
        Ok(Self {
            keys: PublishedKeys::new(https_url(KEYS_URL_VAR, url)?),
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
        let url = self.keys.url();
        let fetch = || async {
            let body = get(url).await?;
            parse_keys(&body)
                .ok_or_else(|| FetchError::new(url, "the answer is not GitHub's list of keys"))
        };
        let Some(key) = self.keys.key(identifier, fetch).await? else {
            return Ok(Signature::Invalid);
        };
        Ok(if signature_holds(&key, body, &signature) {
            Signature::Valid
        } else {
            Signature::Invalid
        })
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
