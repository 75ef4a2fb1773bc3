//! The authorizer's decision path, from the event's JSON text to the response's JSON text,
//! on an in-process store (a hash map behind `KeyLookup`: the benchmark is about the decision,
//! not about a database), with and without usage counting (whose writes, at most one a
//! minute, go to a store that drops them), beside SHA-256 of the key alone, the floor of any
//! check.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use authorizer::{Config, RouteScopes, handler};
use criterion::{Criterion, criterion_group, criterion_main};
use keyward::domain::{
    Actor, AllowedIps, EnvName, HourlyUsage, Key, KeyHash, KeyId, LastUse, NewKey, Timestamp,
    UsageTally, create_key,
};
use keyward::http::{NoPeople, People};
use keyward::oidc::{Oidc, OidcSettings};
use keyward::store::{KeyLookup, StoreError, UsageOwner, UsageStore};
use keyward::testing::{Es256Issuer, orders_key};
use keyward::usage::{Counter, DEFAULT_WRITE_EVERY, NotCounted, Usage};
use sha2::{Digest, Sha256};

struct InMemory(HashMap<String, Key>);

/// Where the counted bench's usage goes: nowhere but a count of its checks, since what is
/// measured is the check's own cost of counting, not a write that happens once a minute.
#[derive(Default)]
struct Dropped(AtomicU64);

#[async_trait]
impl UsageStore for Dropped {
    async fn add_usage(&self, tally: &UsageTally) -> Result<(), StoreError> {
        self.0.fetch_add(tally.checks(), Ordering::SeqCst);
        Ok(())
    }
    async fn hourly_usage(
        &self,
        _: &EnvName,
        _: &KeyId,
        _: Timestamp,
    ) -> Result<Vec<HourlyUsage>, StoreError> {
        Ok(Vec::new())
    }
    async fn seen_addresses(
        &self,
        _: &EnvName,
        _: &KeyId,
        _: Timestamp,
    ) -> Result<Vec<(Timestamp, std::net::IpAddr)>, StoreError> {
        Ok(Vec::new())
    }
    async fn last_use(
        &self,
        _: &EnvName,
        _: &[&KeyId],
    ) -> Result<HashMap<KeyId, LastUse>, StoreError> {
        Ok(HashMap::new())
    }
    async fn record_last_use(&self, _: &UsageOwner, _: LastUse) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl KeyLookup for InMemory {
    async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<Key>, StoreError> {
        Ok(self.0.get(&hash.to_hex()).cloned())
    }
}

fn decision(c: &mut Criterion) {
    let mint = keyward::mint();
    let env = EnvName::parse("production").unwrap();
    let input = orders_key("bench");
    let issued = create_key(&env, input, Actor::operator("bench"), &mint, keyward::now()).unwrap();
    // The longest list a key may have, whose last range alone holds the caller: 50 IPv6 and 50
    // IPv4 networks, every one tried.
    let networks: Vec<String> = (0..50)
        .map(|i| format!("2001:db8:{i:x}::/48"))
        .chain((0..50).map(|i| format!("10.{i}.0.0/16")))
        .collect();
    let pinned_input = NewKey {
        allowed_ips: AllowedIps::parse(&networks).unwrap(),
        ..orders_key("pinned")
    };
    let pinned = create_key(
        &env,
        pinned_input,
        Actor::operator("bench"),
        &mint,
        keyward::now(),
    )
    .unwrap();
    let store = InMemory(HashMap::from([
        (issued.key.hash.to_hex(), issued.key.clone()),
        (pinned.key.hash.to_hex(), pinned.key.clone()),
    ]));
    let config = Config {
        environment: Some(env),
        routes: RouteScopes::parse(r#"{"GET /orders": "orders:read"}"#).unwrap(),
        allow_unlisted: false,
        key_prefix: Default::default(),
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
    let from = |token: &str| {
        serde_json::json!({
            "type": "REQUEST",
            "methodArn": "arn:aws:execute-api:us-west-2:123456789012:ymy8tbxw7b/prod/GET/orders",
            "headers": {"authorization": format!("Bearer {token}")},
            "requestContext": {"identity": {"sourceIp": "10.49.7.9"}},
        })
        .to_string()
    };
    let open_request = from(&secret);
    let pinned_request = from(pinned.secret.expose());
    let bad_checksum = event(&format!("{}000000", &secret[..secret.len() - 6]));
    // Time for the usage counter; IO for the people's issuer, fetched once by the first check.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .enable_io()
        .build()
        .unwrap();
    let now = keyward::now();
    let dropped = Arc::new(Dropped::default());
    let counted = Usage::new(
        Arc::clone(&dropped) as Arc<dyn UsageStore>,
        DEFAULT_WRITE_EVERY,
    );
    let decide = |text: &str, usage: &dyn Counter, people: &dyn People| {
        let event: serde_json::Value = serde_json::from_str(text).unwrap();
        match runtime.block_on(handler(&config, &store, usage, people, event, now)) {
            Ok(answer) => answer.to_string(),
            Err(e) => e.to_string(),
        }
    };
    let run_with = |text: &str, usage: &dyn Counter| decide(text, usage, &NoPeople);
    let run = |text: &str| run_with(text, &NotCounted);
    assert!(run(&valid).contains("\"Allow\""));
    assert_eq!(run(&bad_checksum), "Unauthorized");
    c.bench_function(
        "authorizer: valid key, with the store read (event JSON to policy JSON)",
        |b| b.iter(|| run(black_box(&valid))),
    );
    // keyward's own API authorizer takes people's tokens too: an issuer on loopback (ES256),
    // its keys fetched by the first check and kept.
    let issuer = Es256Issuer::start();
    let settings = OidcSettings::new(
        &issuer.issuer,
        "keyward-console",
        None,
        Some(r#"{"devs": {"*": ["orders:read"]}}"#),
    )
    .unwrap();
    let people = Oidc::new(settings).unwrap();
    let now_seconds = now.timestamp();
    let person =
        event(&issuer.sign(&issuer.claims("keyward-console", "dana", &["devs"], now_seconds)));
    assert!(decide(&person, &NotCounted, &people).contains("\"Allow\""));
    c.bench_function(
        "authorizer: valid key, people's tokens accepted too (the API's authorizer)",
        |b| b.iter(|| decide(black_box(&valid), &NotCounted, &people)),
    );
    c.bench_function(
        "authorizer: a person's ES256 token, the issuer's keys kept (no store read)",
        |b| b.iter(|| decide(black_box(&person), &NotCounted, &people)),
    );
    c.bench_function(
        "authorizer: valid key, with the store read, usage counted",
        |b| b.iter(|| run_with(black_box(&valid), &counted)),
    );
    // Written or held, every check was counted; in cargo's test mode (one run of each) the
    // one check goes out at once, so the count is read after a flush.
    let left = runtime.block_on(counted.flush_all(std::time::Duration::from_secs(1)));
    assert_eq!(left, 0);
    assert!(
        dropped.0.load(Ordering::SeqCst) > 0,
        "the checks were counted"
    );
    assert!(run(&open_request).contains("\"Allow\""));
    assert!(run(&pinned_request).contains("\"Allow\""));
    c.bench_function(
        "authorizer: REQUEST event, a key with no allowed networks",
        |b| b.iter(|| run(black_box(&open_request))),
    );
    c.bench_function(
        "authorizer: REQUEST event, a key with no allowed networks, usage counted with its address",
        |b| b.iter(|| run_with(black_box(&open_request), &counted)),
    );
    c.bench_function(
        "authorizer: REQUEST event, a key with 100 allowed networks, the caller in the last",
        |b| b.iter(|| run(black_box(&pinned_request))),
    );
    let caller: std::net::IpAddr = "10.49.7.9".parse().unwrap();
    c.bench_function(
        "100 allowed networks, the caller in the last (the match alone)",
        |b| b.iter(|| black_box(&pinned.key.allowed_ips).allows(black_box(caller))),
    );
    c.bench_function(
        "authorizer: bad checksum, no store read (event JSON to Unauthorized)",
        |b| b.iter(|| run(black_box(&bad_checksum))),
    );
    let production = EnvName::parse("production").unwrap();
    let check = keyward::metrics::Check {
        outcome: Some(keyward::check::Outcome::Checked(
            keyward::domain::Verdict::Valid,
        )),
        environment: Some(&production),
        latency: std::time::Duration::from_micros(4),
    };
    c.bench_function(
        "the check's metric line (EMF JSON, written on Lambda only)",
        |b| b.iter(|| keyward::metrics::line(black_box("authorizer"), &check, now)),
    );
    c.bench_function("sha-256 of the key alone", |b| {
        b.iter(|| Sha256::digest(black_box(secret.as_bytes())))
    });
}

criterion_group!(benches, decision);
criterion_main!(benches);
