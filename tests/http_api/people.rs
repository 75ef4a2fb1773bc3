//! People, not keys: `keyward serve` accepting tokens from a real OpenID provider on loopback,
//! with the roles its groups grant, on SQLite and on DynamoDB. Every token that fails a check
//! is refused with its reason; a person is held to the rules a key is held to, and named as
//! the actor of what they change.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::support::{Backend, Server};
use keyward::testing::Provider;

/// keyward's client id at the provider.
pub const CLIENT_ID: &str = "keyward-console";

/// The roles these tests configure.
pub const ROLES: &str = r#"{
    "platform-admins": {"*": ["*"]},
    "payments-devs": {"staging": ["keys:read", "keys:write", "activity:read"]},
    "order-writers": {"development": ["keys:write", "orders:read"]},
    "staging-readers": {"staging": ["keys:read"]}
}"#;

/// `serve` on a fresh store, taking people's tokens from `provider` with [`ROLES`].
pub fn serve_for(provider: &Provider, backend: Backend) -> Server {
    Server::start_with(
        backend,
        &[
            "--no-schedule",
            "--oidc-issuer",
            &provider.issuer,
            "--oidc-client-id",
            CLIENT_ID,
            "--oidc-roles",
            ROLES,
        ],
    )
}

/// A person's token from `provider`, in these groups.
pub fn person(provider: &Provider, sub: &str, groups: &[&str]) -> String {
    provider.token(
        CLIENT_ID,
        sub,
        &json!({"email": format!("{sub}@example.com"), "email_verified": true, "name": sub, "groups": groups}),
    )
}

/// The token with its claims replaced by `edit`'s, the header and signature kept.
fn with_claims(token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    edit(&mut claims);
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{}.{claims}.{}", parts[0], parts[2])
}

/// The token's claims under another header, signed by `sign` over `header.claims`.
fn resigned(token: &str, header: &Value, sign: impl FnOnce(&str) -> String) -> String {
    let claims = token.split('.').nth(1).unwrap();
    let signed = format!("{}.{claims}", URL_SAFE_NO_PAD.encode(header.to_string()));
    let signature = sign(&signed);
    format!("{signed}.{signature}")
}

fn a_token_that_fails_any_check_is_refused_with_its_reason(backend: Backend) {
    let provider = Provider::start(&[]);
    let elsewhere = Provider::start(&[]);
    let server = serve_for(&provider, backend);
    let keys = "/v1/environments/development/keys";
    let admin = person(&provider, "ada", &["platform-admins"]);
    assert_eq!(
        server.call("GET", keys, &admin, None).status,
        200,
        "a good token passes"
    );

    let other_issuer = person(&elsewhere, "ada", &["platform-admins"]);
    // Another provider's signature under this issuer's name: the claim is checked by the key.
    let forged_issuer = with_claims(&other_issuer, |c| c["iss"] = json!(provider.issuer));
    let other_audience = provider.token(
        "someone-else",
        "ada",
        &json!({"email": "ada@example.com", "groups": ["platform-admins"]}),
    );
    let reader = person(&provider, "rita", &["staging-readers"]);
    let tampered = with_claims(&reader, |c| c["groups"] = json!(["platform-admins"]));
    let unsigned = resigned(&admin, &json!({"alg": "none", "typ": "JWT"}), |_| {
        String::new()
    });
    // The key confusion attack: HMAC, keyed with what the issuer publishes as its public key.
    let published = provider.jwks();
    let hmac = resigned(&admin, &json!({"alg": "HS256", "typ": "JWT"}), |signed| {
        let key = jsonwebtoken::EncodingKey::from_secret(published.as_bytes());
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        let claims: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(signed.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        token.rsplit('.').next().unwrap().to_owned()
    });
    let nobody = person(&provider, "nora", &["marketing"]);
    let cases = [
        (other_issuer.as_str(), 401, "invalid_token_issuer"),
        (&forged_issuer, 401, "invalid_token_signature"),
        (&other_audience, 401, "invalid_token_audience"),
        (&tampered, 401, "invalid_token_signature"),
        (&unsigned, 401, "unsupported_token_algorithm"),
        (&hmac, 401, "unsupported_token_algorithm"),
        ("eyJub3QganNvbg.e30.c2ln", 401, "malformed_token"),
        (&nobody, 403, "no_role"),
    ];
    for (token, status, code) in cases {
        let reply = server.call("GET", keys, token, None);
        assert_eq!((reply.status, reply.code()), (status, code), "{code}");
    }
    let logs = server.logs();
    for token in [&admin, &reader, &nobody] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!logs.contains(signature), "a token is never logged");
    }

    let expiring = Provider::start(&["--token-max-age", "-120"]);
    let late = serve_for(&expiring, backend);
    let expired = person(&expiring, "ada", &["platform-admins"]);
    let reply = late.call("GET", keys, &expired, None);
    assert_eq!((reply.status, reply.code()), (401, "expired_token"));
}

#[test]
fn a_token_that_fails_any_check_is_refused_with_its_reason_on_sqlite() {
    a_token_that_fails_any_check_is_refused_with_its_reason(Backend::Sqlite);
}

#[test]
fn a_token_that_fails_any_check_is_refused_with_its_reason_on_dynamodb() {
    a_token_that_fails_any_check_is_refused_with_its_reason(Backend::DynamoDb);
}

fn a_person_acts_within_their_roles_and_is_named_as_the_actor(backend: Backend) {
    let provider = Provider::start(&[]);
    let server = serve_for(&provider, backend);
    server.create_environment("staging");
    let dana = person(&provider, "dana", &["payments-devs"]);
    let staging = "/v1/environments/staging/keys";
    assert_eq!(server.call("GET", staging, &dana, None).status, 200);
    let elsewhere = server.call("GET", "/v1/environments/development/keys", &dana, None);
    assert_eq!(
        (elsewhere.status, elsewhere.code()),
        (403, "wrong_environment")
    );

    let create = |scopes: Value| {
        server.call(
            "POST",
            staging,
            &dana,
            Some(json!({"name": "svc", "scopes": scopes})),
        )
    };
    for held_elsewhere_or_not_at_all in [json!(["*"]), json!(["orders:read"])] {
        let refused = create(held_elsewhere_or_not_at_all);
        assert_eq!((refused.status, refused.code()), (403, "scope_escalation"));
    }
    let rotate = |token: &str, id: &str| {
        server.call(
            "POST",
            &format!("/v1/keys/{id}/rotate"),
            token,
            Some(json!({"grace_period": "1h"})),
        )
    };
    let made = create(json!(["keys:read"]));
    assert_eq!(made.status, 201, "{:?}", made.json);
    let id = made.json["key"]["id"].as_str().unwrap().to_owned();
    let rotated = rotate(&dana, &id);
    assert_eq!(rotated.status, 201, "{:?}", rotated.json);

    let listed = server.call("GET", staging, &dana, None);
    let default_id = listed.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["default"] == true)
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .unwrap();
    let default_rotation = rotate(&dana, &default_id);
    assert_eq!(
        (default_rotation.status, default_rotation.code()),
        (403, "scope_escalation"),
        "the default key is changed only with *"
    );
    let outside = server.call(
        "GET",
        &format!("/v1/keys/{}", server.default_key_id),
        &dana,
        None,
    );
    assert_eq!(
        (outside.status, outside.code()),
        (404, "key_not_found"),
        "a key where the person has no role answers like one that does not exist"
    );

    let dana_actor = json!({"type": "user", "id": "dana", "name": "dana@example.com"});
    let activity = server.call("GET", &format!("/v1/keys/{id}/activity"), &dana, None);
    let actions: Vec<(&str, &Value)> = activity.json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), &e["actor"]))
        .collect();
    assert_eq!(
        actions,
        [("key.rotated", &dana_actor), ("key.created", &dana_actor)]
    );

    let ada = person(&provider, "ada", &["platform-admins"]);
    let nowhere = server.call("GET", "/v1/environments/nowhere/keys", &ada, None);
    assert_eq!(
        (nowhere.status, nowhere.code()),
        (404, "environment_not_found")
    );
    let default_rotation = rotate(&ada, &server.default_key_id);
    assert_eq!(default_rotation.status, 201, "{:?}", default_rotation.json);

    let table = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["activity", "--env", "staging", "--url", &server.url()])
        .env("KEYWARD_API_KEY", &dana)
        .env_remove("KEYWARD_KEY_PREFIX")
        .output()
        .expect("keyward runs");
    let printed = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    assert!(
        printed.contains("dana@example.com (dana)"),
        "the CLI's activity table names the person:\n{printed}"
    );
}

#[test]
fn a_person_acts_within_their_roles_and_is_named_as_the_actor_on_sqlite() {
    a_person_acts_within_their_roles_and_is_named_as_the_actor(Backend::Sqlite);
}

#[test]
fn a_person_acts_within_their_roles_and_is_named_as_the_actor_on_dynamodb() {
    a_person_acts_within_their_roles_and_is_named_as_the_actor(Backend::DynamoDb);
}

#[test]
fn the_consoles_session_cookie_is_taken_only_with_the_consoles_header() {
    let provider = Provider::start(&[]);
    let server = serve_for(&provider, Backend::Sqlite);
    let keys = "/v1/environments/development/keys";
    let admin = person(&provider, "ada", &["platform-admins"]);
    let cookie = format!("__Host-keyward-session={admin}");
    let console = [("cookie", cookie.as_str()), ("x-keyward-console", "1")];
    assert_eq!(server.send("GET", keys, &console, b"").status, 200);
    let session = server.send("GET", "/v1/session", &console, b"");
    assert_eq!(session.status, 200);
    assert_eq!(session.json["person"]["name"], "ada@example.com");
    assert_eq!(session.json["grants"], json!({"*": ["*"]}));
    // Another site's page can send the cookie's value only by a form or a link, never with
    // the header: the cookie alone is no credential.
    let alone = server.send("GET", keys, &[("cookie", cookie.as_str())], b"");
    assert_eq!(alone.code(), "missing_api_key");
    let session = server.send("GET", "/v1/session", &[("cookie", cookie.as_str())], b"");
    assert_eq!(session.code(), "not_signed_in");
    // A request's own credential comes first: a key beside the cookie acts as the key, and
    // any Authorization header, even one that is no bearer, keeps the cookie out.
    let nobody = person(&provider, "nobody", &["marketing"]);
    let nobodys = format!("__Host-keyward-session={nobody}");
    let bearer = format!("Bearer {}", server.default_key);
    let with_key = [
        ("cookie", nobodys.as_str()),
        ("x-keyward-console", "1"),
        ("authorization", bearer.as_str()),
    ];
    assert_eq!(server.send("GET", keys, &with_key, b"").status, 200);
    let basic = [
        ("cookie", cookie.as_str()),
        ("x-keyward-console", "1"),
        ("authorization", "Basic YWRhOnNlY3JldA=="),
    ];
    assert_eq!(
        server.send("GET", keys, &basic, b"").code(),
        "missing_api_key"
    );
    // A key is never taken from the cookie.
    let key_cookie = format!("__Host-keyward-session={}", server.default_key);
    let with_key = [("cookie", key_cookie.as_str()), ("x-keyward-console", "1")];
    assert_eq!(
        server.send("GET", keys, &with_key, b"").code(),
        "missing_api_key"
    );
    // The cookie's token is checked as any person's token is.
    let reader = person(&provider, "rosa", &["staging-readers"]);
    let raised = with_claims(&reader, |claims| {
        claims["groups"] = json!(["platform-admins"])
    });
    let raised = format!("__Host-keyward-session={raised}");
    let raised = [("cookie", raised.as_str()), ("x-keyward-console", "1")];
    assert_eq!(
        server.send("GET", keys, &raised, b"").code(),
        "invalid_token_signature"
    );
}
