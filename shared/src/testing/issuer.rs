//! An ES256 issuer, as a test plays one: P-256 key pairs made in the test, whose public keys a
//! loopback server publishes behind a discovery document, and which sign tokens. It covers
//! what the OpenID provider the HTTP tests run cannot: ES256, and a key rotated at the issuer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// The issuer: its current key, and what its server publishes.
pub struct Es256Issuer {
    /// Its issuer URL, as its tokens name it.
    pub issuer: String,
    /// The current key: its `kid`, its PKCS#8 DER and its public JWK.
    key: Mutex<(String, Vec<u8>, Value)>,
    published: Arc<Mutex<Value>>,
    discovery: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

/// A new P-256 key pair: its PKCS#8 DER and its public key as a JWK named `kid`.
fn key_pair(kid: &str) -> (Vec<u8>, Value) {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("a key pair");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        .expect("the key pair reads back");
    // The uncompressed point: 0x04, then x and y, 32 bytes each.
    let point = pair.public_key().as_ref();
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    });
    (pkcs8.as_ref().to_vec(), jwk)
}

impl Es256Issuer {
    /// An issuer with one key (`kid` `k1`), published on a loopback port until the process
    /// ends.
    pub fn start() -> Self {
        let (der, jwk) = key_pair("k1");
        let published = Arc::new(Mutex::new(json!({"keys": [jwk.clone()]})));
        let fetches = Arc::new(AtomicUsize::new(0));
        let discovery = Arc::new(Mutex::new(Value::Null));
        let (serving, counted, discovering) = (
            Arc::clone(&published),
            Arc::clone(&fetches),
            Arc::clone(&discovery),
        );
        let addr = crate::testing::publish_on_loopback(move |request| {
            if request.starts_with("GET /jwks ") {
                counted.fetch_add(1, Ordering::SeqCst);
                serving.lock().expect("the keys").to_string()
            } else {
                discovering
                    .lock()
                    .expect("the discovery document")
                    .to_string()
            }
        });
        let issuer = format!("http://{addr}");
        *discovery.lock().expect("the discovery document") =
            json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")});
        Self {
            issuer,
            key: Mutex::new(("k1".to_owned(), der, jwk)),
            published,
            discovery,
            fetches,
        }
    }

    /// A token with these claims, signed ES256 by the current key and naming its `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let (kid, der, _) = self.key.lock().expect("the key").clone();
        self.signed(&der, Some(kid), claims)
    }

    /// A token with these claims, signed ES256 by the current key and naming no `kid`.
    pub fn sign_without_kid(&self, claims: &Value) -> String {
        let (_, der, _) = self.key.lock().expect("the key").clone();
        self.signed(&der, None, claims)
    }

    fn signed(&self, der: &[u8], kid: Option<String>, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = kid;
        let key = jsonwebtoken::EncodingKey::from_ec_der(der);
        jsonwebtoken::encode(&header, claims, &key).expect("a token")
    }

    /// Claims that pass every check for `client_id`: this issuer's, for `sub` in `groups`,
    /// valid for an hour from `now` (seconds since the epoch).
    pub fn claims(&self, client_id: &str, sub: &str, groups: &[&str], now: i64) -> Value {
        json!({
            "iss": self.issuer, "aud": client_id, "sub": sub, "groups": groups,
            "email": format!("{sub}@example.com"), "email_verified": true,
            "iat": now, "exp": now + 3600,
        })
    }

    /// Rotates the issuer's key: a new one, `kid`, signs from now on and is the only one
    /// published.
    pub fn rotate(&self, kid: &str) {
        let (der, jwk) = key_pair(kid);
        *self.published.lock().expect("the keys") = json!({"keys": [jwk.clone()]});
        *self.key.lock().expect("the key") = (kid.to_owned(), der, jwk);
    }

    /// The current key's public JWK, as published.
    pub fn jwk(&self) -> Value {
        self.key.lock().expect("the key").2.clone()
    }

    /// Publishes `keys` as the JWKS from now on; the signing key stays.
    pub fn publish_keys(&self, keys: Value) {
        *self.published.lock().expect("the keys") = keys;
    }

    /// Publishes `document` as the discovery document from now on.
    pub fn publish_discovery(&self, document: Value) {
        *self.discovery.lock().expect("the discovery document") = document;
    }

    /// How often the keys were fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}
