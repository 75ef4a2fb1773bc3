//! The authorizer's decision path, from the event's JSON text to the response's JSON text,
//! on an in-process store (a hash map behind `KeyLookup`: the benchmark is about the decision,
//! not about a database), beside SHA-256 of the key alone, the floor of any check.

use std::collections::HashMap;
use std::hint::black_box;

use async_trait::async_trait;
use authorizer::{Config, RouteScopes, handler};
use criterion::{Criterion, criterion_group, criterion_main};
use keyward::domain::{Actor, EnvName, Key, KeyHash, KeyName, Kind, NewKey, Scopes, create_key};
use keyward::store::{KeyLookup, StoreError};
use keyward::usage::NotCounted;
use sha2::{Digest, Sha256};

struct InMemory(HashMap<String, Key>);

#[async_trait]
impl KeyLookup for InMemory {
    async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<Key>, StoreError> {
        Ok(self.0.get(&hash.to_hex()).cloned())
    }
}

fn decision(c: &mut Criterion) {
    let mint = keyward::mint();
    let env = EnvName::parse("production").unwrap();
    let input = NewKey {
        name: KeyName::parse("bench").unwrap(),
        kind: Kind::Secret,
        scopes: Scopes::parse(&["orders:read"]).unwrap(),
        expires_at: None,
        rotation_policy: None,
    };
    let issued = create_key(&env, input, Actor::operator("bench"), &mint, keyward::now()).unwrap();
    let store = InMemory(HashMap::from([(
        issued.key.hash.to_hex(),
        issued.key.clone(),
    )]));
    let config = Config {
        environment: Some(env),
        routes: RouteScopes::parse(r#"{"GET /orders": "orders:read"}"#).unwrap(),
        allow_unlisted: false,
    };
    let secret = issued.secret.expose().to_owned();
    let event = |token: &str| {
        serde_json::json!({
            "type": "TOKEN",
            "authorizationToken": format!("Bearer {token}"),
            "methodArn": "arn:aws:execute-api:us-west-2:123456789012:ymy8tbxw7b/prod/GET/orders",
        })
        .to_string()
    };
    let valid = event(&secret);
    let bad_checksum = event(&format!("{}000000", &secret[..secret.len() - 6]));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let now = keyward::now();
    let run = |text: &str| {
        let event: serde_json::Value = serde_json::from_str(text).unwrap();
        match runtime.block_on(handler(&config, &store, &NotCounted, event, now)) {
            Ok(answer) => answer.to_string(),
            Err(e) => e.to_string(),
        }
    };
    assert!(run(&valid).contains("\"Allow\""));
    assert_eq!(run(&bad_checksum), "Unauthorized");
    c.bench_function(
        "authorizer: valid key, with the store read (event JSON to policy JSON)",
        |b| b.iter(|| run(black_box(&valid))),
    );
    c.bench_function(
        "authorizer: bad checksum, no store read (event JSON to Unauthorized)",
        |b| b.iter(|| run(black_box(&bad_checksum))),
    );
    c.bench_function("sha-256 of the key alone", |b| {
        b.iter(|| Sha256::digest(black_box(secret.as_bytes())))
    });
}

criterion_group!(benches, decision);
criterion_main!(benches);
