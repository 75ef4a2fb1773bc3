//! Usage over HTTP: `/v1/verify` and the caller's own key are counted, every key shows its
//! last use, `GET /v1/keys/{key_id}/usage` shows the hours, a stop loses nothing, and usage
//! never makes a lifecycle change conflict.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::support::{Backend, Server};

fn create(server: &Server, name: &str, scopes: &[&str]) -> (String, String) {
    let reply = server.call(
        "POST",
        "/v1/environments/development/keys",
        &server.default_key,
        Some(json!({"name": name, "scopes": scopes})),
    );
    assert_eq!(reply.status, 201, "{:?}", reply.json);
    (
        reply.json["key"]["id"].as_str().unwrap().to_owned(),
        reply.json["secret"].as_str().unwrap().to_owned(),
    )
}

fn verify(server: &Server, secret: &str, scopes: &[&str]) -> String {
    verify_from(server, secret, scopes, Value::Null)
}

/// `/v1/verify` of a check made from `source_ip`.
fn verify_from(server: &Server, secret: &str, scopes: &[&str], source_ip: Value) -> String {
    let reply = server.call(
        "POST",
        "/v1/verify",
        "",
        Some(json!({"key": secret, "scopes": scopes, "source_ip": source_ip})),
    );
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    reply.json["code"].as_str().unwrap().to_owned()
}

fn key(server: &Server, id: &str) -> Value {
    let reply = server.call("GET", &format!("/v1/keys/{id}"), &server.default_key, None);
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    reply.json["key"].clone()
}

/// The key's accepted and refused checks over the week.
fn totals(server: &Server, id: &str) -> (u64, u64) {
    let reply = server.call(
        "GET",
        &format!("/v1/keys/{id}/usage"),
        &server.default_key,
        None,
    );
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let hours = reply.json["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 168);
    hours.iter().fold((0, 0), |(a, r), h| {
        (
            a + h["accepted"].as_u64().unwrap(),
            r + h["refused"].as_u64().unwrap(),
        )
    })
}

/// Polls until `done` holds of what `read` gives, for at most 20 seconds.
fn eventually<T: std::fmt::Debug>(read: impl Fn() -> T, done: impl Fn(&T) -> bool) -> T {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let value = read();
        if done(&value) || Instant::now() >= until {
            return value;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .unwrap_or_else(|| panic!("a time: {value}"))
        .parse()
        .unwrap()
}

fn minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::minutes(1)).unwrap()
}

#[test]
fn checks_are_counted_and_shown_on_sqlite() {
    checks_are_counted_and_shown(Backend::Sqlite);
}

#[test]
fn checks_are_counted_and_shown_on_dynamodb() {
    checks_are_counted_and_shown(Backend::DynamoDb);
}

/// With writes at most once a second, counts and last use show within seconds; on DynamoDB
/// the last use comes through the table's stream, which `serve` polls.
fn checks_are_counted_and_shown(backend: Backend) {
    let server = Server::start_with_env(
        backend,
        &["--no-schedule"],
        &[("KEYWARD_USAGE_WRITE_EVERY", "1")],
    );
    let (reader, secret) = create(&server, "reader", &["orders:read"]);
    let (doomed, doomed_secret) = create(&server, "doomed", &["orders:read"]);
    let fresh = key(&server, &reader);
    assert_eq!(
        (&fresh["last_used_at"], &fresh["last_refused_at"]),
        (&Value::Null, &Value::Null)
    );

    let before = Utc::now();
    for i in 0..10 {
        let source = if i % 2 == 0 {
            json!("::ffff:203.0.113.9")
        } else {
            Value::Null
        };
        assert_eq!(
            verify_from(&server, &secret, &["orders:read"], source),
            "valid"
        );
    }
    for _ in 0..3 {
        assert_eq!(
            verify_from(&server, &secret, &["orders:write"], json!("198.51.100.66")),
            "insufficient_scope"
        );
    }
    assert_eq!(verify(&server, &doomed_secret, &[]), "valid");
    let revoked = server.call(
        "POST",
        &format!("/v1/keys/{doomed}/revoke"),
        &server.default_key,
        None,
    );
    assert_eq!(revoked.status, 200);
    for _ in 0..4 {
        assert_eq!(verify(&server, &doomed_secret, &[]), "revoked");
    }
    let after = Utc::now();

    assert_eq!(
        eventually(|| totals(&server, &reader), |t| *t == (10, 3)),
        (10, 3)
    );
    let usage = server.call(
        "GET",
        &format!("/v1/keys/{reader}/usage"),
        &server.default_key,
        None,
    );
    let seen = usage.json["seen_ips"].as_array().unwrap().clone();
    assert_eq!(
        seen.iter()
            .map(|s| s["address"].clone())
            .collect::<Vec<_>>(),
        [json!("203.0.113.9")],
        "accepted checks' addresses, as IPv4; a refused check's is never listed"
    );
    let hour = time(&seen[0]["last_seen_hour"]);
    assert_eq!(hour, hour.duration_trunc(TimeDelta::hours(1)).unwrap());
    assert!(hour <= after && after - hour < TimeDelta::hours(2));
    assert_eq!(
        eventually(|| totals(&server, &doomed), |t| *t == (1, 4)),
        (1, 4)
    );
    let shown = eventually(
        || key(&server, &reader),
        |k| !k["last_used_at"].is_null() && !k["last_refused_at"].is_null(),
    );
    for field in ["last_used_at", "last_refused_at"] {
        let at = time(&shown[field]);
        assert!(
            minute(before) <= at && at <= minute(after),
            "{field} {at} is the minute of a check"
        );
        assert_eq!(at, minute(at), "{field} is to the minute");
    }
    let doomed_listed = eventually(
        || {
            let listed = server.call(
                "GET",
                "/v1/environments/development/keys",
                &server.default_key,
                None,
            );
            listed.json["keys"]
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["id"] == doomed.as_str())
                .unwrap()
                .clone()
        },
        |k| !k["last_refused_at"].is_null(),
    );
    assert!(
        !doomed_listed["last_used_at"].is_null(),
        "the list shows last use too"
    );
    assert!(!doomed_listed["last_refused_at"].is_null());

    let admin = eventually(
        || key(&server, &server.default_key_id),
        |k| !k["last_used_at"].is_null(),
    );
    assert!(
        !admin["last_used_at"].is_null(),
        "the caller's own key is counted, as the API's authorizer counts it on AWS"
    );
    let own = eventually(
        || {
            let usage = server.call(
                "GET",
                &format!("/v1/keys/{}/usage", server.default_key_id),
                &server.default_key,
                None,
            );
            usage.json["seen_ips"].clone()
        },
        |seen| seen.as_array().is_some_and(|s| !s.is_empty()),
    );
    assert_eq!(
        own[0]["address"], "127.0.0.1",
        "the API's caller is seen from where it connects"
    );
}

/// `serve` holds counts for a minute; stopped with SIGTERM, it writes them before it ends.
#[test]
fn a_stop_loses_no_count() {
    let mut server = Server::start(Backend::Sqlite);
    let (reader, secret) = create(&server, "reader", &["orders:read"]);
    for _ in 0..25 {
        assert_eq!(verify(&server, &secret, &[]), "valid");
    }
    assert_eq!(
        eventually(|| totals(&server, &reader), |t| t.0 >= 1),
        (1, 0),
        "the first check is written at once and the rest held"
    );
    server.restart();
    assert_eq!(totals(&server, &reader), (25, 0));
}

#[test]
fn usage_never_makes_a_rotation_or_a_revocation_conflict_on_sqlite() {
    usage_never_makes_a_change_conflict(Backend::Sqlite);
}

#[test]
fn usage_never_makes_a_rotation_or_a_revocation_conflict_on_dynamodb() {
    usage_never_makes_a_change_conflict(Backend::DynamoDb);
}

/// The checks of `key_id` in usage writes that `serve` logged as not written: those it put
/// back and sent again, which may have landed the first time too.
fn lost_writes(log: &str, key_id: &str) -> u64 {
    let colours = regex::Regex::new("\x1b\\[[0-9;]*m").unwrap();
    let checks = regex::Regex::new(r"checks=(\d+)").unwrap();
    colours
        .replace_all(log, "")
        .lines()
        .filter(|line| {
            line.contains("usage not written") && line.contains(&format!("key_id={key_id}"))
        })
        .filter_map(|line| checks.captures(line)?[1].parse::<u64>().ok())
        .sum()
}

/// Four threads check one key as fast as they can, its counts written every second, while it
/// is rotated, its grace changed, and it is revoked: each change succeeds (usage never bumps a
/// key's version, so there is nothing for it to conflict with; `apply_deciding` would hide a
/// conflict with a background write by deciding again, but none is possible here).
fn usage_never_makes_a_change_conflict(backend: Backend) {
    let server = Server::start_with_env(
        backend,
        &["--no-schedule"],
        &[("KEYWARD_USAGE_WRITE_EVERY", "1")],
    );
    let (id, secret) = create(&server, "busy", &["orders:read"]);
    let stop = AtomicBool::new(false);
    let checks = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    verify(&server, &secret, &[]);
                    checks.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        let change = |method: &str, path: String, body: Option<Value>, status: u16| {
            std::thread::sleep(Duration::from_millis(1200));
            let reply = server.call(method, &path, &server.default_key, body);
            assert_eq!(reply.status, status, "{method} {path}: {:?}", reply.json);
            reply
        };
        let rotated = change(
            "POST",
            format!("/v1/keys/{id}/rotate"),
            Some(json!({"grace_period": "1h"})),
            201,
        );
        change(
            "PUT",
            format!("/v1/keys/{id}/grace-period"),
            Some(json!({"grace_period": "24h"})),
            200,
        );
        change("POST", format!("/v1/keys/{id}/revoke"), None, 200);
        let successor = rotated.json["key"]["id"].as_str().unwrap().to_owned();
        change("POST", format!("/v1/keys/{successor}/revoke"), None, 200);
        stop.store(true, Ordering::SeqCst);
    });
    let made = checks.load(Ordering::SeqCst) as u64;
    assert!(made > 0);
    let (accepted, refused) = eventually(|| totals(&server, &id), |t| t.0 + t.1 >= made);
    // A write of this key's counts whose answer was lost (a timeout on a slow machine) is put
    // back and written again, so its checks may count twice: the safe direction, which the
    // server logs with the number of checks. Every check is counted, and no more than once
    // besides those.
    let lost = lost_writes(&server.logs(), &id);
    assert!(
        (made..=made + lost).contains(&(accepted + refused)),
        "{made} checks, {lost} of them in writes whose answer was lost, counted {}",
        accepted + refused
    );
    assert!(refused > 0, "the checks after the revocation are refused");
}
