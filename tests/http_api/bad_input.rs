//! A catalogue of bad requests: each gets its status and error code, in the JSON error
//! shape, and none gets a `500`.

use keyward::domain::{EnvName, Kind, Secret};
use serde_json::json;

use crate::support::{Backend, Server};

struct Case {
    what: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn case(
    what: &'static str,
    method: &'static str,
    path: impl Into<String>,
    key: &str,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        what,
        method,
        path: path.into(),
        headers: vec![("Authorization", format!("Bearer {key}"))],
        body: body.into(),
        status,
        code,
    }
}

#[test]
fn every_bad_request_on_sqlite_gets_its_status_and_code() {
    every_bad_request_gets_its_status_and_code_and_none_gets_a_500(Backend::Sqlite);
}

#[test]
fn every_bad_request_on_dynamodb_gets_its_status_and_code() {
    every_bad_request_gets_its_status_and_code_and_none_gets_a_500(Backend::DynamoDb);
}

fn every_bad_request_gets_its_status_and_code_and_none_gets_a_500(backend: Backend) {
    let mint = keyward::mint();
    let server = Server::start(backend);
    let admin = server.default_key.as_str();
    let create = |body: serde_json::Value| {
        let reply = server.call(
            "POST",
            "/v1/environments/development/keys",
            admin,
            Some(body),
        );
        assert_eq!(reply.status, 201, "{:?}", reply.json);
        (
            reply.json["key"]["id"].as_str().unwrap().to_owned(),
            reply.json["secret"].as_str().unwrap().to_owned(),
        )
    };
    let (reader_id, reader) =
        create(json!({"name": "reader", "scopes": ["keys:read", "orders:read"]}));
    let (in_grace_id, _) = create(json!({"name": "in grace"}));
    create(json!({"name": "billing", "rotation_policy":
        {"every": "P30D", "grace_period": "24h", "secret_id": "keyward/development/billing"}}));
    let rotated = server.call(
        "POST",
        &format!("/v1/keys/{in_grace_id}/rotate"),
        admin,
        Some(json!({"grace_period": "1h"})),
    );
    assert_eq!(rotated.status, 201);
    let (revoked_id, _) = create(json!({"name": "revoked"}));
    let revoked = server.call(
        "POST",
        &format!("/v1/keys/{revoked_id}/revoke"),
        admin,
        None,
    );
    assert_eq!(revoked.status, 200);
    let too_many: Vec<String> = (0..=100).map(|i| format!("10.0.{i}.0/24")).collect();
    let too_many = json!({ "allowed_ips": too_many }).to_string();
    let staging = server.create_environment("staging");
    let unknown_but_well_formed =
        Secret::generate(&mint, Kind::Secret, &EnvName::parse("development").unwrap());
    let bad_checksum = format!("{}000000", &admin[..admin.len() - 6]);
    let keys = "/v1/environments/development/keys";
    let rotate_reader = format!("/v1/keys/{reader_id}/rotate");
    let missing_key_id = "key_0000000000000000000000";
    let mut cases = vec![
        case(
            "malformed JSON",
            "POST",
            keys,
            admin,
            r#"{"name": "#,
            400,
            "invalid_json",
        ),
        case(
            "a body that is not an object",
            "POST",
            keys,
            admin,
            "[1, 2]",
            400,
            "invalid_json",
        ),
        case(
            "a body that is not UTF-8",
            "POST",
            keys,
            admin,
            vec![0xff, 0xfe, b'{'],
            400,
            "invalid_json",
        ),
        case(
            "an empty body",
            "POST",
            &rotate_reader,
            admin,
            "",
            400,
            "invalid_json",
        ),
        case(
            "a missing name",
            "POST",
            keys,
            admin,
            "{}",
            400,
            "missing_field",
        ),
        case(
            "an unknown field",
            "POST",
            keys,
            admin,
            r#"{"name": "x", "colour": "red"}"#,
            400,
            "unknown_field",
        ),
        case(
            "a name of the wrong type",
            "POST",
            keys,
            admin,
            r#"{"name": 5}"#,
            400,
            "invalid_field",
        ),
        case(
            "a blank name",
            "POST",
            keys,
            admin,
            r#"{"name": "   "}"#,
            400,
            "invalid_name",
        ),
        case(
            "a name that a bidi control makes read as another",
            "POST",
            keys,
            admin,
            r#"{"name": "test \u202eyek noitcudorp"}"#,
            400,
            "invalid_name",
        ),
        case(
            "a name with a zero-width space",
            "POST",
            keys,
            admin,
            r#"{"name": "billing\u200b"}"#,
            400,
            "invalid_name",
        ),
        case(
            "an unknown kind",
            "POST",
            keys,
            admin,
            r#"{"name": "x", "kind": "admin"}"#,
            400,
            "invalid_kind",
        ),
        case(
            "a malformed scope",
            "POST",
            keys,
            admin,
            r#"{"name": "x", "scopes": ["Orders:Read"]}"#,
            400,
            "invalid_scope",
        ),
        case(
            "an empty scope word",
            "POST",
            keys,
            admin,
            r#"{"name": "x", "scopes": ["orders::read"]}"#,
            400,
            "invalid_scope",
        ),
        case(
            "a publishable key asking for keys:write",
            "POST",
            keys,
            admin,
            r#"{"name": "x", "kind": "publishable", "scopes": ["keys:write"]}"#,
            400,
            "scope_not_allowed",
        ),
        case(
            "a publishable key asking for *",
            "POST",
            keys,
            admin,
            r#"{"name": "x", "kind": "publishable", "scopes": ["*"]}"#,
            400,
            "scope_not_allowed",
        ),
        case(
            "an expiry in the past",
            "POST",
            keys,
            admin,
            r#"{"name": "x", "expires_at": "2020-01-01T00:00:00Z"}"#,
            400,
            "invalid_expires_at",
        ),
        case(
            "an expiry that is not a time",
            "POST",
            keys,
            admin,
            r#"{"name": "x", "expires_at": "tomorrow"}"#,
            400,
            "invalid_expires_at",
        ),
        case(
            "a rotation policy rotating hourly",
            "POST",
            keys,
            admin,
            r#"{"name": "x", "rotation_policy": {"every": "PT1H", "grace_period": "1h", "secret_id": "s"}}"#,
            400,
            "invalid_rotation_policy",
        ),
        case(
            "a bad environment name",
            "POST",
            "/v1/environments/Prod_1/keys",
            admin,
            r#"{"name": "x"}"#,
            400,
            "invalid_environment",
        ),
        case(
            "an unknown environment, refused like any other than the caller's",
            "POST",
            "/v1/environments/nowhere/keys",
            admin,
            r#"{"name": "x"}"#,
            403,
            "wrong_environment",
        ),
        case(
            "a body over 64 KiB",
            "POST",
            keys,
            admin,
            format!(r#"{{"name": "{}"}}"#, "x".repeat(64 * 1024)),
            413,
            "payload_too_large",
        ),
        case(
            "an unknown grace period",
            "POST",
            &rotate_reader,
            admin,
            r#"{"grace_period": "2h"}"#,
            400,
            "invalid_grace_period",
        ),
        case(
            "a grace period over 365 days",
            "POST",
            &rotate_reader,
            admin,
            r#"{"grace_period": "P366D"}"#,
            400,
            "invalid_grace_period",
        ),
        case(
            "negative seconds of grace",
            "POST",
            &rotate_reader,
            admin,
            r#"{"grace_period": -5}"#,
            400,
            "invalid_grace_period",
        ),
        case(
            "a grace period in months",
            "POST",
            &rotate_reader,
            admin,
            r#"{"grace_period": "P1M"}"#,
            400,
            "invalid_grace_period",
        ),
        case(
            "a missing grace period",
            "POST",
            &rotate_reader,
            admin,
            "{}",
            400,
            "missing_field",
        ),
        case(
            "an unknown key id",
            "POST",
            format!("/v1/keys/{missing_key_id}/rotate"),
            admin,
            r#"{"grace_period": "1h"}"#,
            404,
            "key_not_found",
        ),
        case(
            "a malformed key id",
            "GET",
            "/v1/keys/key_%20nope",
            admin,
            "",
            400,
            "invalid_key_id",
        ),
        case(
            "a garbage key",
            "GET",
            keys,
            "hello",
            "",
            401,
            "invalid_api_key",
        ),
        case(
            "a key with a bad checksum",
            "GET",
            keys,
            &bad_checksum,
            "",
            401,
            "invalid_api_key",
        ),
        case(
            "a well-formed key nobody issued",
            "GET",
            keys,
            unknown_but_well_formed.expose(),
            "",
            401,
            "invalid_api_key",
        ),
        case(
            "a key from another environment",
            "GET",
            keys,
            &staging,
            "",
            403,
            "wrong_environment",
        ),
        case(
            "a key without the scope",
            "POST",
            keys,
            &reader,
            r#"{"name": "x"}"#,
            403,
            "insufficient_scope",
        ),
        case(
            "rotating a key in grace",
            "POST",
            format!("/v1/keys/{in_grace_id}/rotate"),
            admin,
            r#"{"grace_period": "1h"}"#,
            409,
            "key_not_active",
        ),
        case(
            "changing the grace of an active key",
            "PUT",
            format!("/v1/keys/{reader_id}/grace-period"),
            admin,
            r#"{"grace_period": "1h"}"#,
            409,
            "key_not_in_grace",
        ),
        case(
            "a rotation policy on a key in grace",
            "PUT",
            format!("/v1/keys/{in_grace_id}/rotation-policy"),
            admin,
            r#"{"rotation_policy": null}"#,
            409,
            "key_not_active",
        ),
        case(
            "a created key's policy naming a secret that another active key delivers to",
            "POST",
            keys,
            admin,
            r#"{"name": "thief", "rotation_policy": {"every": "P30D", "grace_period": "24h", "secret_id": "keyward/development/billing"}}"#,
            409,
            "secret_in_use",
        ),
        case(
            "a policy naming, by ARN, a secret that another active key delivers to",
            "PUT",
            format!("/v1/keys/{reader_id}/rotation-policy"),
            admin,
            r#"{"rotation_policy": {"every": "P30D", "grace_period": "24h", "secret_id": "arn:aws:secretsmanager:us-east-1:123456789012:secret:keyward/development/billing-Ab12Cd"}}"#,
            409,
            "secret_in_use",
        ),
        case(
            "a rotation policy that rotates hourly",
            "PUT",
            format!("/v1/keys/{reader_id}/rotation-policy"),
            admin,
            r#"{"rotation_policy": {"every": "PT1H", "grace_period": "1h", "secret_id": "s"}}"#,
            400,
            "invalid_rotation_policy",
        ),
        case(
            "a created key's policy naming another environment's secret",
            "POST",
            keys,
            admin,
            r#"{"name": "x", "rotation_policy": {"every": "P30D", "grace_period": "24h", "secret_id": "keyward/staging/billing"}}"#,
            400,
            "invalid_rotation_policy",
        ),
        case(
            "a policy naming another environment's secret",
            "PUT",
            format!("/v1/keys/{reader_id}/rotation-policy"),
            admin,
            r#"{"rotation_policy": {"every": "P30D", "grace_period": "24h", "secret_id": "keyward/staging/billing"}}"#,
            400,
            "invalid_rotation_policy",
        ),
        case(
            "a created key's policy naming a secret outside the prefix",
            "POST",
            keys,
            admin,
            r#"{"name": "x", "rotation_policy": {"every": "P30D", "grace_period": "24h", "secret_id": "payments/development/billing"}}"#,
            400,
            "invalid_rotation_policy",
        ),
        case(
            "a policy naming a secret outside the prefix",
            "PUT",
            format!("/v1/keys/{reader_id}/rotation-policy"),
            admin,
            r#"{"rotation_policy": {"every": "P30D", "grace_period": "24h", "secret_id": "payments/development/billing"}}"#,
            400,
            "invalid_rotation_policy",
        ),
        case(
            "a created key's policy naming the ARN of another environment's secret",
            "POST",
            keys,
            admin,
            r#"{"name": "x", "rotation_policy": {"every": "P30D", "grace_period": "24h", "secret_id": "arn:aws:secretsmanager:us-east-1:123456789012:secret:keyward/staging/billing-AbCdEf"}}"#,
            400,
            "invalid_rotation_policy",
        ),
        case(
            "a policy naming the ARN of another environment's secret",
            "PUT",
            format!("/v1/keys/{reader_id}/rotation-policy"),
            admin,
            r#"{"rotation_policy": {"every": "P30D", "grace_period": "24h", "secret_id": "arn:aws:secretsmanager:us-east-1:123456789012:secret:keyward/staging/billing-AbCdEf"}}"#,
            400,
            "invalid_rotation_policy",
        ),
        case(
            "a created key's policy naming the ARN of a secret outside the prefix",
            "POST",
            keys,
            admin,
            r#"{"name": "x", "rotation_policy": {"every": "P30D", "grace_period": "24h", "secret_id": "arn:aws:secretsmanager:us-east-1:123456789012:secret:payments/development/billing-AbCdEf"}}"#,
            400,
            "invalid_rotation_policy",
        ),
        case(
            "a policy naming the ARN of a secret outside the prefix",
            "PUT",
            format!("/v1/keys/{reader_id}/rotation-policy"),
            admin,
            r#"{"rotation_policy": {"every": "P30D", "grace_period": "24h", "secret_id": "arn:aws:secretsmanager:us-east-1:123456789012:secret:payments/development/billing-AbCdEf"}}"#,
            400,
            "invalid_rotation_policy",
        ),
        case(
            "a created key's policy naming a secret directly under the prefix",
            "POST",
            keys,
            admin,
            r#"{"name": "x", "rotation_policy": {"every": "P30D", "grace_period": "24h", "secret_id": "keyward/billing"}}"#,
            400,
            "invalid_rotation_policy",
        ),
        case(
            "a policy naming a secret directly under the prefix",
            "PUT",
            format!("/v1/keys/{reader_id}/rotation-policy"),
            admin,
            r#"{"rotation_policy": {"every": "P30D", "grace_period": "24h", "secret_id": "keyward/billing"}}"#,
            400,
            "invalid_rotation_policy",
        ),
        case(
            "a created key's policy naming a grace under an hour",
            "POST",
            keys,
            admin,
            r#"{"name": "x", "rotation_policy": {"every": "P30D", "grace_period": "PT59M", "secret_id": "keyward/development/billing"}}"#,
            400,
            "invalid_rotation_policy",
        ),
        case(
            "a policy naming a grace under an hour",
            "PUT",
            format!("/v1/keys/{reader_id}/rotation-policy"),
            admin,
            r#"{"rotation_policy": {"every": "P30D", "grace_period": "PT59M", "secret_id": "keyward/development/billing"}}"#,
            400,
            "invalid_rotation_policy",
        ),
        case(
            "a created key's policy naming a grace of now",
            "POST",
            keys,
            admin,
            r#"{"name": "x", "rotation_policy": {"every": "P30D", "grace_period": "now", "secret_id": "keyward/development/billing"}}"#,
            400,
            "invalid_rotation_policy",
        ),
        case(
            "a policy naming a grace of now",
            "PUT",
            format!("/v1/keys/{reader_id}/rotation-policy"),
            admin,
            r#"{"rotation_policy": {"every": "P30D", "grace_period": "now", "secret_id": "keyward/development/billing"}}"#,
            400,
            "invalid_rotation_policy",
        ),
        case(
            "a rotation policy body without the policy",
            "PUT",
            format!("/v1/keys/{reader_id}/rotation-policy"),
            admin,
            r#"{"every": "P30D"}"#,
            400,
            "unknown_field",
        ),
        case(
            "setting a rotation policy with a read-only key",
            "PUT",
            format!("/v1/keys/{reader_id}/rotation-policy"),
            reader.as_str(),
            r#"{"rotation_policy": null}"#,
            403,
            "insufficient_scope",
        ),
        case(
            "allowed IPs with host bits set",
            "PUT",
            format!("/v1/keys/{reader_id}/allowed-ips"),
            admin,
            r#"{"allowed_ips": ["10.0.0.1/8"]}"#,
            400,
            "invalid_allowed_ips",
        ),
        case(
            "more than 100 allowed IPs",
            "PUT",
            format!("/v1/keys/{reader_id}/allowed-ips"),
            admin,
            too_many,
            400,
            "invalid_allowed_ips",
        ),
        case(
            "allowed IPs as one string",
            "PUT",
            format!("/v1/keys/{reader_id}/allowed-ips"),
            admin,
            r#"{"allowed_ips": "10.0.0.0/8"}"#,
            400,
            "invalid_field",
        ),
        case(
            "allowed IPs as numbers",
            "PUT",
            format!("/v1/keys/{reader_id}/allowed-ips"),
            admin,
            r#"{"allowed_ips": [1]}"#,
            400,
            "invalid_field",
        ),
        case(
            "an allowed IPs body without the list",
            "PUT",
            format!("/v1/keys/{reader_id}/allowed-ips"),
            admin,
            r#"{}"#,
            400,
            "missing_field",
        ),
        case(
            "allowed IPs for a revoked key",
            "PUT",
            format!("/v1/keys/{revoked_id}/allowed-ips"),
            admin,
            r#"{"allowed_ips": []}"#,
            409,
            "key_ended",
        ),
        case(
            "the caller's own key held away from where it calls",
            "PUT",
            format!("/v1/keys/{}/allowed-ips", server.default_key_id),
            admin,
            r#"{"allowed_ips": ["203.0.113.0/24"]}"#,
            409,
            "would_lock_out",
        ),
        case(
            "setting allowed IPs with a read-only key",
            "PUT",
            format!("/v1/keys/{reader_id}/allowed-ips"),
            reader.as_str(),
            r#"{"allowed_ips": []}"#,
            403,
            "insufficient_scope",
        ),
        case(
            "revoking the default key",
            "POST",
            format!("/v1/keys/{}/revoke", server.default_key_id),
            admin,
            "",
            409,
            "default_key_must_be_rotated",
        ),
        case(
            "a limit of zero",
            "GET",
            format!("{keys}?limit=0"),
            admin,
            "",
            400,
            "invalid_limit",
        ),
        case(
            "a limit that is not a number",
            "GET",
            format!("{keys}?limit=ten"),
            admin,
            "",
            400,
            "invalid_limit",
        ),
        case(
            "an empty cursor (found by schemathesis: the document took any string; it now takes a key id)",
            "GET",
            format!("{keys}?cursor="),
            admin,
            "",
            400,
            "invalid_cursor",
        ),
        case(
            "a made-up cursor",
            "GET",
            format!("{keys}?cursor=page2"),
            admin,
            "",
            400,
            "invalid_cursor",
        ),
        case(
            "an unknown action filter",
            "GET",
            "/v1/environments/development/activity?action=key.exploded",
            admin,
            "",
            400,
            "invalid_action",
        ),
        case(
            "a malformed key_id filter",
            "GET",
            "/v1/environments/development/activity?key_id=nope",
            admin,
            "",
            400,
            "invalid_key_id",
        ),
        case(
            "verify without a key",
            "POST",
            "/v1/verify",
            admin,
            r#"{"environment": "development"}"#,
            400,
            "missing_field",
        ),
        case(
            "verify with a malformed scope",
            "POST",
            "/v1/verify",
            admin,
            r#"{"key": "x", "scopes": ["A B"]}"#,
            400,
            "invalid_scope",
        ),
        case(
            "verify with a bad environment",
            "POST",
            "/v1/verify",
            admin,
            r#"{"key": "x", "environment": "NO"}"#,
            400,
            "invalid_environment",
        ),
        case(
            "an unknown route",
            "GET",
            "/v1/nothing",
            admin,
            "",
            404,
            "route_not_found",
        ),
        case(
            "a known route with the wrong method",
            "DELETE",
            keys,
            admin,
            "",
            405,
            "method_not_allowed",
        ),
    ];
    cases.push(Case {
        what: "no key at all",
        method: "GET",
        path: keys.into(),
        headers: vec![],
        body: vec![],
        status: 401,
        code: "missing_api_key",
    });
    cases.push(Case {
        what: "a Basic credential instead of a key",
        method: "GET",
        path: keys.into(),
        headers: vec![("Authorization", "Basic dXNlcjpwYXNz".into())],
        body: vec![],
        status: 401,
        code: "missing_api_key",
    });
    cases.push(Case {
        what: "a revoked key in x-api-key",
        method: "GET",
        path: keys.into(),
        headers: vec![("x-api-key", {
            let (id, secret) = create(json!({"name": "doomed", "scopes": ["*"]}));
            assert_eq!(
                server
                    .call("POST", &format!("/v1/keys/{id}/revoke"), admin, None)
                    .status,
                200
            );
            secret
        })],
        body: vec![],
        status: 401,
        code: "revoked_api_key",
    });

    let mut codes = std::collections::HashSet::new();
    for c in &cases {
        let headers: Vec<(&str, &str)> = c.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let reply = server.send(c.method, &c.path, &headers, &c.body);
        assert_ne!(reply.status, 500, "{}: a 500", c.what);
        assert_eq!(
            (reply.status, reply.code()),
            (c.status, c.code),
            "{}: {:?}",
            c.what,
            reply.json
        );
        let message = reply.json["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{}: no message", c.what);
        assert_eq!(
            reply.json.as_object().map(|o| o.len()),
            Some(1),
            "{}: only the error object",
            c.what
        );
        assert!(
            reply
                .headers
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{}",
            c.what
        );
        codes.insert(c.code);
    }
    assert!(
        cases.len() >= 40 && codes.len() >= 25,
        "{} cases, {} codes",
        cases.len(),
        codes.len()
    );
    assert_eq!(
        server
            .call("GET", "/v1/keys/key_0000000000000000000000", admin, None)
            .code(),
        "key_not_found"
    );
}
