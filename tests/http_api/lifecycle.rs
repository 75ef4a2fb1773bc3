//! The whole key lifecycle through the API, then a scan for leaked secrets.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::support::{Backend, Reply, Server};

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .expect("RFC 3339")
        .to_utc()
}

fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    keyward::truncate_to_millis(t)
}

/// Runs `f` and returns its result with the server-side `now` bounds around it.
fn timed<T>(f: impl FnOnce() -> T) -> (T, DateTime<Utc>, DateTime<Utc>) {
    let before = millis(Utc::now());
    let out = f();
    (out, before, millis(Utc::now()))
}

fn assert_expiry(reply: &Value, grace: TimeDelta, before: DateTime<Utc>, after: DateTime<Utc>) {
    let expires_at = time(reply);
    assert!(
        before + grace <= expires_at && expires_at <= after + grace,
        "expires_at {expires_at} is not now + {grace} (now was between {before} and {after})"
    );
}

fn verify(server: &Server, key: &str) -> Value {
    let reply = server.send(
        "POST",
        "/v1/verify",
        &[],
        json!({"key": key, "environment": "development"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    reply.json
}

struct Issued {
    id: String,
    secret: String,
}

fn create(server: &Server, admin: &str, name: &str, scopes: Value) -> Issued {
    let reply = server.call(
        "POST",
        "/v1/environments/development/keys",
        admin,
        Some(json!({"name": name, "scopes": scopes})),
    );
    assert_eq!(reply.status, 201, "{:?}", reply.json);
    Issued {
        id: reply.json["key"]["id"].as_str().unwrap().to_owned(),
        secret: reply.json["secret"].as_str().unwrap().to_owned(),
    }
}

fn rotate(
    server: &Server,
    admin: &str,
    id: &str,
    grace: Value,
) -> (Reply, DateTime<Utc>, DateTime<Utc>) {
    timed(|| {
        server.call(
            "POST",
            &format!("/v1/keys/{id}/rotate"),
            admin,
            Some(json!({"grace_period": grace})),
        )
    })
}

/// Every page of a list, following `next_cursor`; checks that pages hold at most `limit`.
fn all_pages(server: &Server, key: &str, path: &str, field: &str, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let sep = if path.contains('?') { '&' } else { '?' };
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
            None => format!("{path}{sep}limit={limit}"),
        };
        let reply = server.call("GET", &url, key, None);
        assert_eq!(reply.status, 200, "{url}: {:?}", reply.json);
        let page = reply.json[field].as_array().expect("a list").clone();
        assert!(page.len() <= limit);
        items.extend(page);
        match reply.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return items,
        }
    }
}

fn actions(entries: &[Value]) -> Vec<&str> {
    entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect()
}

#[test]
fn the_whole_key_lifecycle_on_sqlite() {
    the_whole_key_lifecycle_over_http_leaks_no_secret(Backend::Sqlite);
}

#[test]
fn the_whole_key_lifecycle_on_dynamodb() {
    the_whole_key_lifecycle_over_http_leaks_no_secret(Backend::DynamoDb);
}

fn the_whole_key_lifecycle_over_http_leaks_no_secret(backend: Backend) {
    let server = Server::start(backend);
    let admin = server.default_key.clone();
    let mut secrets = vec![admin.clone()];

    // Rotation with each preset: the old key's expiry is now + grace, and it verifies until then.
    for (preset, grace) in [
        ("now", TimeDelta::zero()),
        ("1h", TimeDelta::hours(1)),
        ("24h", TimeDelta::hours(24)),
        ("3d", TimeDelta::days(3)),
        ("7d", TimeDelta::days(7)),
    ] {
        let key = create(
            &server,
            &admin,
            &format!("worker {preset}"),
            json!(["keys:read", "orders:read"]),
        );
        secrets.push(key.secret.clone());
        let (reply, before, after) = rotate(&server, &admin, &key.id, json!(preset));
        assert_eq!(reply.status, 201, "{preset}: {:?}", reply.json);
        secrets.push(reply.json["secret"].as_str().unwrap().to_owned());
        let previous = &reply.json["previous"];
        assert_eq!(previous["id"], key.id.as_str());
        assert_eq!(previous["rotated_to"], reply.json["key"]["id"]);
        assert_eq!(reply.json["key"]["rotated_from"], key.id.as_str());
        assert_eq!(reply.json["key"]["name"], format!("worker {preset}"));
        assert_eq!(
            reply.json["key"]["scopes"],
            json!(["keys:read", "orders:read"])
        );
        assert_expiry(&previous["expires_at"], grace, before, after);
        let old = verify(&server, &key.secret);
        let own = server.call("GET", &format!("/v1/keys/{}", key.id), &key.secret, None);
        if preset == "now" {
            assert_eq!(previous["status"], "expired");
            assert_eq!(
                (old["valid"].clone(), old["code"].clone()),
                (json!(false), json!("expired"))
            );
            assert_eq!(
                (own.status, own.code()),
                (401, "expired_api_key"),
                "`now` fails the old key at once"
            );
        } else {
            assert_eq!(previous["status"], "in_grace");
            assert_eq!(
                (old["valid"].clone(), old["code"].clone()),
                (json!(true), json!("valid")),
                "{preset}"
            );
            assert_eq!(own.status, 200, "the old key still works during its grace");
            assert_eq!(own.json["key"]["status"], "in_grace");
        }
        let new = verify(&server, reply.json["secret"].as_str().unwrap());
        assert_eq!(new["code"], "valid");
    }

    // A custom grace, as ISO-8601 and as seconds.
    for (grace, length) in [
        (json!("P14D"), TimeDelta::days(14)),
        (json!(5400), TimeDelta::seconds(5400)),
    ] {
        let key = create(&server, &admin, "custom", json!([]));
        secrets.push(key.secret.clone());
        let (reply, before, after) = rotate(&server, &admin, &key.id, grace);
        assert_eq!(reply.status, 201);
        secrets.push(reply.json["secret"].as_str().unwrap().to_owned());
        assert_expiry(&reply.json["previous"]["expires_at"], length, before, after);
    }

    // Change the grace period: extend it, then cut it to now.
    let key = create(&server, &admin, "grace", json!(["keys:read"]));
    secrets.push(key.secret.clone());
    let (reply, _, _) = rotate(&server, &admin, &key.id, json!("1h"));
    secrets.push(reply.json["secret"].as_str().unwrap().to_owned());
    let path = format!("/v1/keys/{}/grace-period", key.id);
    let (extended, before, after) =
        timed(|| server.call("PUT", &path, &admin, Some(json!({"grace_period": "7d"}))));
    assert_eq!(extended.status, 200, "{:?}", extended.json);
    assert_expiry(
        &extended.json["key"]["expires_at"],
        TimeDelta::days(7),
        before,
        after,
    );
    assert_eq!(verify(&server, &key.secret)["code"], "valid");
    let (cut, before, after) =
        timed(|| server.call("PUT", &path, &admin, Some(json!({"grace_period": "now"}))));
    assert_eq!(cut.status, 200);
    assert_eq!(cut.json["key"]["status"], "expired");
    assert_expiry(
        &cut.json["key"]["expires_at"],
        TimeDelta::zero(),
        before,
        after,
    );
    assert_eq!(verify(&server, &key.secret)["code"], "expired");
    assert_eq!(
        server
            .call("GET", &format!("/v1/keys/{}", key.id), &key.secret, None)
            .status,
        401
    );
    let revived = server.call("PUT", &path, &admin, Some(json!({"grace_period": "7d"})));
    assert_eq!(
        (revived.status, revived.code()),
        (409, "key_not_in_grace"),
        "an expired key cannot be brought back"
    );

    // The default key must be rotated before it can be revoked.
    let default_id = server.default_key_id.clone();
    let refused = server.call(
        "POST",
        &format!("/v1/keys/{default_id}/revoke"),
        &admin,
        None,
    );
    assert_eq!(
        (refused.status, refused.code()),
        (409, "default_key_must_be_rotated")
    );
    let (rotated, _, _) = rotate(&server, &admin, &default_id, json!("24h"));
    assert_eq!(rotated.status, 201);
    assert_eq!(rotated.json["key"]["default"], true);
    assert_eq!(rotated.json["previous"]["default"], false);
    let new_admin = rotated.json["secret"].as_str().unwrap().to_owned();
    let new_admin_id = rotated.json["key"]["id"].as_str().unwrap().to_owned();
    secrets.push(new_admin.clone());
    assert_eq!(
        server
            .call("GET", "/v1/environments/development/keys", &admin, None)
            .status,
        200,
        "the old default works in its grace"
    );
    let revoked = server.call(
        "POST",
        &format!("/v1/keys/{default_id}/revoke"),
        &new_admin,
        None,
    );
    assert_eq!(revoked.status, 200, "{:?}", revoked.json);
    assert_eq!(revoked.json["key"]["status"], "revoked");
    let next = server.call("GET", "/v1/environments/development/keys", &admin, None);
    assert_eq!(
        (next.status, next.code()),
        (401, "revoked_api_key"),
        "the revoked key fails on the very next request"
    );
    assert_eq!(verify(&server, &admin)["code"], "revoked");
    let again = server.call(
        "POST",
        &format!("/v1/keys/{default_id}/revoke"),
        &new_admin,
        None,
    );
    assert_eq!(again.status, 200);
    // Last use is not the key's state: the refused checks just above may have been written
    // between the two answers (serve, like AWS, writes each function's counts on its own).
    let state = |answer: &Value| {
        let mut key = answer["key"].clone();
        for usage in ["last_used_at", "last_refused_at"] {
            key.as_object_mut().unwrap().remove(usage);
        }
        key
    };
    assert_eq!(
        state(&again.json),
        state(&revoked.json),
        "revoking twice changes nothing"
    );

    // The default key's own activity, newest first, with who acted.
    let entries = all_pages(
        &server,
        &new_admin,
        &format!("/v1/keys/{default_id}/activity"),
        "entries",
        2,
    );
    assert_eq!(
        actions(&entries),
        ["key.revoked", "key.rotated", "key.created"]
    );
    assert_eq!(
        entries[0]["actor"],
        json!({"type": "api_key", "id": new_admin_id})
    );
    assert_eq!(
        entries[1]["actor"],
        json!({"type": "api_key", "id": default_id})
    );
    assert_eq!(entries[1]["new_key_id"], new_admin_id.as_str());
    assert_eq!(entries[1]["grace_period"], "24h");
    assert_eq!(
        entries[2]["actor"],
        json!({"type": "operator", "id": "test-operator"})
    );
    let successor = all_pages(
        &server,
        &new_admin,
        &format!("/v1/keys/{new_admin_id}/activity"),
        "entries",
        10,
    );
    assert_eq!(
        actions(&successor),
        ["key.rotated"],
        "the rotation shows in the new key's activity too"
    );

    // The environment's activity: newest first, paginated, filtered.
    let everything = all_pages(
        &server,
        &new_admin,
        "/v1/environments/development/activity",
        "entries",
        100,
    );
    let paged = all_pages(
        &server,
        &new_admin,
        "/v1/environments/development/activity",
        "entries",
        3,
    );
    assert_eq!(
        paged, everything,
        "pages of 3 hold exactly the entries of one big page, in order"
    );
    let ids: Vec<&str> = everything
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "newest first, no duplicates"
    );
    let times: Vec<DateTime<Utc>> = everything.iter().map(|e| time(&e["at"])).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]));
    assert_eq!(
        everything.len(),
        1 + 5 * 2 + 2 * 2 + 2 + 2 + 1 + 1,
        "created and rotated for each key, two grace changes, one revocation"
    );
    let rotations = all_pages(
        &server,
        &new_admin,
        "/v1/environments/development/activity?action=key.rotated",
        "entries",
        4,
    );
    assert_eq!(rotations.len(), 5 + 2 + 1 + 1);
    assert!(rotations.iter().all(|e| e["action"] == "key.rotated"));
    let graces = all_pages(
        &server,
        &new_admin,
        "/v1/environments/development/activity?action=key.grace_period_changed",
        "entries",
        10,
    );
    assert_eq!(graces.len(), 2);
    assert!(
        graces
            .iter()
            .all(|e| e["previous_expires_at"].is_string() && e["expires_at"].is_string())
    );
    let about_default = all_pages(
        &server,
        &new_admin,
        &format!("/v1/environments/development/activity?key_id={default_id}"),
        "entries",
        10,
    );
    assert_eq!(
        actions(&about_default),
        ["key.revoked", "key.rotated", "key.created"]
    );
    let revocations =
        format!("/v1/environments/development/activity?key_id={default_id}&action=key.revoked");
    assert_eq!(
        all_pages(&server, &new_admin, &revocations, "entries", 10).len(),
        1
    );

    // Listing keys: newest first, every key once.
    let keys = all_pages(
        &server,
        &new_admin,
        "/v1/environments/development/keys",
        "keys",
        4,
    );
    assert_eq!(keys.len(), 1 + 5 * 2 + 2 * 2 + 2 + 1);
    assert_eq!(keys[0]["id"], new_admin_id.as_str());
    let key_ids: Vec<&str> = keys.iter().map(|k| k["id"].as_str().unwrap()).collect();
    assert!(key_ids.windows(2).all(|w| w[0] > w[1]));

    // A key pasted into the path by mistake is refused, and is not logged either.
    let pasted = server.call("GET", &format!("/v1/keys/{new_admin}"), &new_admin, None);
    assert_eq!((pasted.status, pasted.code()), (400, "invalid_key_id"));
    let unrouted = server.call("GET", &format!("/v2/{new_admin}"), &new_admin, None);
    assert_eq!((unrouted.status, unrouted.code()), (404, "route_not_found"));

    // No secret appears anywhere but in the create and rotate answers that issued it.
    let logs = server.logs();
    assert!(logs.contains("key rotated"), "the log was captured");
    let stored = server.stored_text();
    let hint = keys[0]["hint"].as_str().unwrap();
    assert!(stored.contains(hint), "the store was read");
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a secret is in the log");
        assert!(
            !stored.contains(secret.as_str()),
            "a secret is in the store"
        );
        for exchange in server.exchanges() {
            let issues_secrets = exchange.status == 201;
            if !issues_secrets {
                assert!(
                    !exchange.body.contains(secret.as_str()),
                    "a secret is in {} {}",
                    exchange.method,
                    exchange.path
                );
            }
        }
    }
    let issuing = server
        .exchanges()
        .iter()
        .filter(|e| e.status == 201)
        .count();
    assert_eq!(
        issuing,
        secrets.len() - 1,
        "only create and rotate answers were exempt from the scan"
    );
}
