//! The key format's hot paths: issuing a key (CSPRNG, checksum, SHA-256) and checking a
//! presented key (format, checksum, SHA-256), beside SHA-256 alone as their floor.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keyward::domain::{EnvName, KeyPrefix, Kind, PresentedKey, Secret};
use sha2::{Digest, Sha256};

fn keys(c: &mut Criterion) {
    let env = EnvName::parse("production").unwrap();
    let mint = keyward::mint();
    let secret = Secret::generate(&mint, Kind::Secret, &env);
    let presented = secret.expose().to_owned();
    // The deployment's prefix, read once at start as every function reads it.
    let prefix = KeyPrefix::default();
    c.bench_function("generate and hash a key", |b| {
        b.iter(|| {
            black_box(Secret::generate(
                &mint,
                black_box(Kind::Secret),
                black_box(&env),
            ))
            .hash()
        })
    });
    c.bench_function("parse, checksum and hash a presented key", |b| {
        b.iter(|| PresentedKey::parse(black_box(&presented), black_box(&prefix)).unwrap())
    });
    c.bench_function("sha-256 of a key alone", |b| {
        b.iter(|| Sha256::digest(black_box(presented.as_bytes())))
    });
}

criterion_group!(benches, keys);
criterion_main!(benches);
