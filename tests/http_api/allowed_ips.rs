//! A key held to some networks, on both stores: set at create and shown normalised, copied by
//! a rotation, changed with immediate effect, and checked against the address the platform saw, by `/v1/verify` (its
//! `source_ip`) and by the API itself (the caller's address; `keyward serve` is on loopback).

use serde_json::{Value, json};

use crate::support::{Backend, Server};

#[test]
fn a_key_held_to_some_networks_on_sqlite() {
    a_key_held_to_some_networks(Backend::Sqlite);
}

#[test]
fn a_key_held_to_some_networks_on_dynamodb() {
    a_key_held_to_some_networks(Backend::DynamoDb);
}

/// What `/v1/verify` answers for `secret` checked as if called from `source_ip`.
fn verified(server: &Server, secret: &str, source_ip: Value) -> Value {
    let body = json!({"key": secret, "source_ip": source_ip});
    let reply = server.send("POST", "/v1/verify", &[], body.to_string().as_bytes());
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    reply.json
}

fn a_key_held_to_some_networks(backend: Backend) {
    let server = Server::start(backend);
    let admin = server.create_environment("staging");
    let create =
        |body: Value| server.call("POST", "/v1/environments/staging/keys", &admin, Some(body));
    let made = create(json!({
        "name": "runner",
        "scopes": ["keys:read"],
        "allowed_ips": ["::ffff:198.51.100.0/120", "2001:db8::7", "198.51.100.0/24"],
    }));
    assert_eq!(made.status, 201, "{:?}", made.json);
    let pinned = json!(["198.51.100.0/24", "2001:db8::7"]);
    assert_eq!(
        made.json["key"]["allowed_ips"], pinned,
        "a mapped range is its IPv4 form, and a repeated range is kept once"
    );
    let (id, secret) = (
        made.json["key"]["id"].as_str().unwrap().to_owned(),
        made.json["secret"].as_str().unwrap().to_owned(),
    );
    let got = server.call("GET", &format!("/v1/keys/{id}"), &admin, None);
    assert_eq!(got.json["key"]["allowed_ips"], pinned);
    let activity = server.call("GET", &format!("/v1/keys/{id}/activity"), &admin, None);
    let entries = activity.json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["action"], "key.created");
    assert_eq!(
        entries[0]["allowed_ips"], pinned,
        "the entry records the list"
    );

    for (source, code) in [
        (json!("198.51.100.20"), "valid"),
        (json!("::ffff:198.51.100.20"), "valid"),
        (json!("2001:db8::7"), "valid"),
        (json!("203.0.113.9"), "ip_not_allowed"),
        (json!("2001:db8::8"), "ip_not_allowed"),
        (json!(null), "ip_required"),
    ] {
        let answer = verified(&server, &secret, source.clone());
        assert_eq!(answer["code"], code, "{source}: {answer}");
        assert_eq!(answer["valid"], code == "valid");
    }
    for bad in ["198.51.100.20:443", "198.51.100.0/24", "localhost"] {
        let body = json!({"key": secret, "source_ip": bad});
        let reply = server.send("POST", "/v1/verify", &[], body.to_string().as_bytes());
        assert_eq!(
            (reply.status, reply.code()),
            (400, "invalid_source_ip"),
            "{bad}"
        );
    }

    // The API holds its own callers to their networks: this server sees 127.0.0.1.
    let listed = server.call("GET", "/v1/environments/staging/keys", &secret, None);
    assert_eq!((listed.status, listed.code()), (403, "ip_not_allowed"));
    let local = create(
        json!({"name": "local", "scopes": ["keys:read"], "allowed_ips": ["127.0.0.0/8", "::1"]}),
    );
    assert_eq!(local.status, 201, "{:?}", local.json);
    let local_secret = local.json["secret"].as_str().unwrap();
    let listed = server.call("GET", "/v1/environments/staging/keys", local_secret, None);
    assert_eq!(listed.status, 200, "{:?}", listed.json);
    let open = listed.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["default"] == true)
        .unwrap();
    assert_eq!(
        open["allowed_ips"],
        json!([]),
        "a key without a list shows an empty one"
    );

    // A caller held to networks makes, and rotates into, only keys held within them.
    let ci = create(
        json!({"name": "ci", "scopes": ["keys:read", "keys:write"], "allowed_ips": ["127.0.0.0/8", "::1"]}),
    );
    let ci = ci.json["secret"].as_str().unwrap().to_owned();
    let by_ci = |body: Value| server.call("POST", "/v1/environments/staging/keys", &ci, Some(body));
    for escaping in [
        json!(null),
        json!([]),
        json!(["10.0.0.0/8"]),
        json!(["126.0.0.0/7"]),
        json!(["127.0.0.1", "0.0.0.0/0"]),
    ] {
        let reply =
            by_ci(json!({"name": "escape", "scopes": ["keys:read"], "allowed_ips": escaping}));
        assert_eq!(
            (reply.status, reply.code()),
            (403, "network_escalation"),
            "{escaping}"
        );
    }
    let held =
        by_ci(json!({"name": "held", "scopes": ["keys:read"], "allowed_ips": ["127.0.0.1"]}));
    assert_eq!(held.status, 201, "{:?}", held.json);
    let rotate_by_ci = |key: &Value| {
        let id = key["key"]["id"].as_str().unwrap();
        server.call(
            "POST",
            &format!("/v1/keys/{id}/rotate"),
            &ci,
            Some(json!({"grace_period": "1h"})),
        )
    };
    assert_eq!(rotate_by_ci(&held.json).status, 201);
    let open_key = create(json!({"name": "open", "scopes": ["keys:read"]}));
    let reply = rotate_by_ci(&open_key.json);
    assert_eq!((reply.status, reply.code()), (403, "network_escalation"));
    // A policy makes successors of a key by schedule, so on an open key it is the same
    // escalation; on a key held within the caller's networks it is allowed.
    let set_policy = |key: &Value| {
        let id = key["key"]["id"].as_str().unwrap();
        let policy = json!({"every": "P1D", "grace_period": "1h", "secret_id": format!("keyward/staging/{id}")});
        server.call(
            "PUT",
            &format!("/v1/keys/{id}/rotation-policy"),
            &ci,
            Some(json!({"rotation_policy": policy})),
        )
    };
    let reply = set_policy(&open_key.json);
    assert_eq!(
        (reply.status, reply.code()),
        (403, "network_escalation"),
        "{:?}",
        reply.json
    );
    let held =
        by_ci(json!({"name": "held too", "scopes": ["keys:read"], "allowed_ips": ["127.0.0.1"]}));
    let reply = set_policy(&held.json);
    assert_eq!(reply.status, 200, "{:?}", reply.json);

    let rotated = server.call(
        "POST",
        &format!("/v1/keys/{id}/rotate"),
        &admin,
        Some(json!({"grace_period": "1h"})),
    );
    assert_eq!(rotated.status, 201, "{:?}", rotated.json);
    assert_eq!(
        rotated.json["key"]["allowed_ips"], pinned,
        "the successor keeps the list"
    );
    let successor = rotated.json["secret"].as_str().unwrap();
    assert_eq!(
        verified(&server, successor, json!("203.0.113.9"))["code"],
        "ip_not_allowed"
    );
    assert_eq!(
        verified(&server, successor, json!("198.51.100.1"))["code"],
        "valid"
    );
    assert_eq!(
        verified(&server, &secret, json!("203.0.113.9"))["code"],
        "ip_not_allowed",
        "the old key in its grace keeps its list too"
    );

    // A change holds from the next request, for a key just checked (serve keeps those in
    // memory) and for the API's own caller; a key in its grace can be changed too.
    let set_ips = |key_id: &str, caller: &str, networks: Value| {
        server.call(
            "PUT",
            &format!("/v1/keys/{key_id}/allowed-ips"),
            caller,
            Some(json!({"allowed_ips": networks})),
        )
    };
    let opened = set_ips(&id, &admin, json!([]));
    assert_eq!(opened.status, 200, "{:?}", opened.json);
    assert_eq!(opened.json["key"]["status"], "in_grace");
    assert_eq!(
        verified(&server, &secret, json!("203.0.113.9"))["code"],
        "valid",
        "cleared: any address"
    );
    assert_eq!(verified(&server, &secret, json!(null))["code"], "valid");
    assert_eq!(
        verified(&server, successor, json!("203.0.113.9"))["code"],
        "ip_not_allowed",
        "the successor keeps the list the rotation gave it"
    );
    let local_id = local.json["key"]["id"].as_str().unwrap();
    let elsewhere = set_ips(local_id, &admin, json!(["203.0.113.0/24"]));
    assert_eq!(elsewhere.status, 200, "{:?}", elsewhere.json);
    let listed = server.call("GET", "/v1/environments/staging/keys", local_secret, None);
    assert_eq!((listed.status, listed.code()), (403, "ip_not_allowed"));
    let reply = set_ips(local_id, &ci, json!(["127.0.0.1"]));
    assert_eq!(
        (reply.status, reply.code()),
        (403, "network_escalation"),
        "a key held elsewhere is out of the reach of a caller held to loopback"
    );
    assert_eq!(set_ips(local_id, &admin, json!(["127.0.0.1"])).status, 200);
    let within = set_ips(local_id, &ci, json!(["127.0.0.0/8"]));
    assert_eq!(within.status, 200, "{:?}", within.json);
    let reply = set_ips(local_id, &ci, json!([]));
    assert_eq!(
        (reply.status, reply.code()),
        (403, "network_escalation"),
        "a caller held to loopback cannot open a key to every address"
    );
    let listed = server.call("GET", "/v1/environments/staging/keys", local_secret, None);
    assert_eq!(listed.status, 200, "{:?}", listed.json);
    let activity = server.call(
        "GET",
        &format!("/v1/keys/{local_id}/activity"),
        &admin,
        None,
    );
    let changes: Vec<_> = activity.json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "key.allowed_ips_changed")
        .map(|e| (e["previous"].clone(), e["allowed_ips"].clone()))
        .collect();
    assert_eq!(
        changes,
        [
            (json!(["127.0.0.1"]), json!(["127.0.0.0/8"])),
            (json!(["203.0.113.0/24"]), json!(["127.0.0.1"])),
            (json!(["127.0.0.0/8", "::1"]), json!(["203.0.113.0/24"])),
        ]
    );

    let too_many: Vec<String> = (0..=100).map(|i| format!("10.0.{i}.0/24")).collect();
    for (allowed_ips, code, why) in [
        (
            json!(["10.0.0.1/8"]),
            "invalid_allowed_ips",
            "host bits set: the network is 10.0.0.0/8",
        ),
        (
            json!(["192.0.2.1", "nope"]),
            "invalid_allowed_ips",
            "allowed_ips[1]",
        ),
        (json!(too_many), "invalid_allowed_ips", "at most 100"),
        (json!("10.0.0.0/8"), "invalid_field", "allowed_ips"),
    ] {
        let reply = create(json!({"name": "bad", "allowed_ips": allowed_ips}));
        assert_eq!(
            (reply.status, reply.code()),
            (400, code),
            "{:?}",
            reply.json
        );
        let message = reply.json["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{message}");
    }
}
