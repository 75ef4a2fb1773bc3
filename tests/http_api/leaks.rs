//! A leak report, on both stores: anyone holding a key reports it, and it fails its very next
//! check; the same key reported again changes nothing; a leaked default key is rotated with no
//! grace and its policy delivers the successor; and no reported secret is written anywhere.

use serde_json::{Value, json};

use crate::support::{Backend, Server};

#[test]
fn a_reported_key_fails_its_next_check_on_sqlite() {
    a_reported_key_fails_its_next_check(Backend::Sqlite);
}

#[test]
fn a_reported_key_fails_its_next_check_on_dynamodb() {
    a_reported_key_fails_its_next_check(Backend::DynamoDb);
}

/// Sends a leak report, which needs no key, and checks its answer, the same for any strings.
fn report(server: &Server, body: Value) {
    let reply = server.send(
        "POST",
        "/v1/leaks/report",
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(reply.status, 202, "{:?}", reply.json);
    assert_eq!(
        reply.json,
        json!({"received": body["secrets"].as_array().unwrap().len()})
    );
}

/// What `/v1/verify` says of `secret`.
fn verdict(server: &Server, secret: &str) -> Value {
    let reply = server.send(
        "POST",
        "/v1/verify",
        &[],
        json!({"key": secret}).to_string().as_bytes(),
    );
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    reply.json["code"].clone()
}

/// The actions of a key's activity, newest first, read with `key`.
fn actions(server: &Server, key: &str, id: &str) -> Vec<Value> {
    let reply = server.call("GET", &format!("/v1/keys/{id}/activity"), key, None);
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    reply.json["entries"].as_array().unwrap().clone()
}

/// A `serve` on `backend` with these variables, the environment `staging` made, and a
/// `keys:read` key in it: the server, the environment's default key, and the key's id and
/// secret.
fn serving_a_key(backend: Backend, env: &[(&str, &str)]) -> (Server, String, String, String) {
    let server = Server::start_with_env(backend, &["--no-schedule"], env);
    let admin = server.create_environment("staging");
    let made = server.call(
        "POST",
        "/v1/environments/staging/keys",
        &admin,
        Some(json!({"name": "pushed", "scopes": ["keys:read"]})),
    );
    assert_eq!(made.status, 201, "{:?}", made.json);
    let id = made.json["key"]["id"].as_str().unwrap().to_owned();
    let secret = made.json["secret"].as_str().unwrap().to_owned();
    (server, admin, id, secret)
}

/// The id of the default key in a list of keys.
fn default_of(keys: &Value) -> &str {
    let keys = keys["keys"].as_array().unwrap();
    let default = keys.iter().find(|k| k["default"] == true).unwrap();
    default["id"].as_str().unwrap()
}

fn a_reported_key_fails_its_next_check(backend: Backend) {
    let (server, admin, id, leaked) = serving_a_key(backend, &[]);
    let gitlab = server.send(
        "GET",
        "/v1/leaks/gitlab/revocable_token_types",
        &[("authorization", "anything")],
        b"",
    );
    assert_eq!(
        (gitlab.status, gitlab.code()),
        (401, "invalid_scanner_token"),
        "with no token shared with GitLab, no GitLab request is taken"
    );
    let listing = "/v1/environments/staging/keys";
    assert_eq!(server.call("GET", listing, &leaked, None).status, 200);

    let url = "https://github.com/acme/app/blob/0b1c/.env";
    report(
        &server,
        json!({"secrets": [leaked, "not a key", leaked, leaked], "url": url, "source": "commit"}),
    );
    let refused = server.call("GET", listing, &leaked, None);
    assert_eq!(
        refused.status, 401,
        "the very next request: {:?}",
        refused.json
    );
    assert_eq!(verdict(&server, &leaked), "revoked");
    report(&server, json!({"secrets": [leaked], "source": "npm"}));
    let entries = actions(&server, &admin, &id);
    let names: Vec<&Value> = entries.iter().map(|e| &e["action"]).collect();
    assert_eq!(
        names,
        ["key.revoked", "key.leaked", "key.created"],
        "three strings and a second report: one leak and one revocation"
    );
    for entry in &entries[..2] {
        assert_eq!(entry["actor"], json!({"type": "system", "id": "report"}));
    }
    assert_eq!(
        (&entries[1]["url"], &entries[1]["source"]),
        (&json!(url), &json!("commit"))
    );
    let key = server.call("GET", &format!("/v1/keys/{id}"), &admin, None);
    assert_eq!(key.json["key"]["status"], "revoked");
    assert!(key.json["key"]["leaked_at"].is_string(), "{:?}", key.json);
    let environment = server.call(
        "GET",
        "/v1/environments/staging/activity?action=key.leaked",
        &admin,
        None,
    );
    assert_eq!(environment.json["entries"].as_array().unwrap().len(), 1);

    // The default key cannot be revoked: it is rotated with no grace, and its policy delivers
    // the successor, which works.
    let keys = server.call("GET", listing, &admin, None);
    let admin_id = default_of(&keys.json).to_owned();
    let secret_id = format!(
        "keyward/staging/admin-{}",
        server.store().replace([':', '/', '.'], "-")
    );
    let policy = json!({"rotation_policy": {"every": "P30D", "grace_period": "24h", "secret_id": secret_id}});
    let set = server.call(
        "PUT",
        &format!("/v1/keys/{admin_id}/rotation-policy"),
        &admin,
        Some(policy),
    );
    assert_eq!(set.status, 200, "{:?}", set.json);
    report(&server, json!({"secrets": [admin]}));
    assert_eq!(server.call("GET", listing, &admin, None).status, 401);
    assert_eq!(verdict(&server, &admin), "expired");
    let delivered = server
        .current_secret(&secret_id)
        .expect("the successor is delivered before the report is answered");
    let successor = delivered["secret"].as_str().unwrap().to_owned();
    assert_ne!(delivered["key_id"], json!(admin_id));
    let keys = server.call("GET", listing, &successor, None);
    assert_eq!(keys.status, 200, "the successor works: {:?}", keys.json);
    assert_eq!(default_of(&keys.json), delivered["key_id"]);
    let entries = actions(&server, &successor, &admin_id);
    let names: Vec<&Value> = entries.iter().map(|e| &e["action"]).collect();
    assert_eq!(
        names[..3],
        ["key.rotated", "key.leaked", "key.rotation_policy_changed"]
    );
    assert_eq!(entries[0]["grace_period"], "now");

    let stored = server.stored_text();
    let logs = server.logs();
    for secret in [&leaked, &admin] {
        assert!(
            !stored.contains(secret.as_str()),
            "a reported secret is in the store"
        );
        assert!(
            !keyward::testing::log_holds(&logs, secret),
            "a reported secret is in the log"
        );
    }
}

#[test]
fn githubs_signed_report_ends_a_key_on_sqlite() {
    githubs_signed_report_ends_a_key(Backend::Sqlite);
}

#[test]
fn githubs_signed_report_ends_a_key_on_dynamodb() {
    githubs_signed_report_ends_a_key(Backend::DynamoDb);
}

/// GitHub's secret scanning, played by a key pair made here and published on loopback: a
/// signed report ends the key at once and is answered with GitHub's feedback, and the same
/// report with one byte changed is refused.
fn githubs_signed_report_ends_a_key(backend: Backend) {
    let github = keyward::testing::GithubSigner::start();
    let (server, admin, id, leaked) =
        serving_a_key(backend, &[("KEYWARD_GITHUB_KEYS_URL", &github.url)]);
    let body = json!([{"token": leaked, "type": "keyward_secret_key", "url": "https://github.com/acme/app/blob/0b1c/.env", "source": "commit"}])
        .to_string();
    let signature = github.sign(body.as_bytes());
    let headers = [
        ("content-type", "application/json"),
        (
            "Github-Public-Key-Identifier",
            keyward::testing::GithubSigner::IDENTIFIER,
        ),
        ("Github-Public-Key-Signature", signature.as_str()),
    ];
    let tampered = body.replace("commit", "commix");
    let refused = server.send("POST", "/v1/leaks/github", &headers, tampered.as_bytes());
    assert_eq!(refused.status, 401, "{:?}", refused.json);
    assert_eq!(
        verdict(&server, &leaked),
        "valid",
        "a refused report ends nothing"
    );

    let answered = server.send("POST", "/v1/leaks/github", &headers, body.as_bytes());
    assert_eq!(answered.status, 200, "{:?}", answered.json);
    assert_eq!(answered.json[0]["label"], "true_positive");
    assert_eq!(answered.json[0]["token_type"], "keyward_secret_key");
    let listing = "/v1/environments/staging/keys";
    assert_eq!(server.call("GET", listing, &leaked, None).status, 401);
    assert_eq!(verdict(&server, &leaked), "revoked");
    let entries = actions(&server, &admin, &id);
    assert_eq!(entries[1]["action"], "key.leaked");
    assert_eq!(
        entries[1]["actor"],
        json!({"type": "system", "id": "github"})
    );
    assert_eq!(
        entries[1]["url"],
        "https://github.com/acme/app/blob/0b1c/.env"
    );
    assert_eq!(github.fetches(), 1, "the keys were fetched once and kept");
    assert!(!server.stored_text().contains(&leaked));
    assert!(!keyward::testing::log_holds(&server.logs(), &leaked));
}

#[test]
fn gitlabs_findings_end_a_key_on_sqlite() {
    gitlabs_findings_end_a_key(Backend::Sqlite);
}

#[test]
fn gitlabs_findings_end_a_key_on_dynamodb() {
    gitlabs_findings_end_a_key(Backend::DynamoDb);
}

/// Where `serve` reads the token it shares with GitLab: a file on SQLite, as a laptop keeps
/// it, and a secret in Secrets Manager on DynamoDB, as the stack keeps it.
fn gitlab_token_at(backend: Backend, token: &str) -> String {
    let name = format!(
        "e2e-{}-{}-gitlab-revocation-token",
        std::process::id(),
        backend as u8
    );
    match backend {
        Backend::Sqlite => {
            let file = std::env::temp_dir().join(name);
            std::fs::write(&file, token).unwrap();
            format!("file:{}", file.display())
        }
        Backend::DynamoDb => {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let aws = aws_config::load_from_env().await;
                aws_sdk_secretsmanager::Client::new(&aws)
                    .create_secret()
                    .name(&name)
                    .secret_string(token)
                    .send()
                    .await
                    .unwrap();
            });
            format!("secretsmanager:{name}")
        }
    }
}

/// Self-managed GitLab, as its secret detection calls a token revocation API: it asks for the
/// types with the shared token, then sends its findings; a key among them fails its next
/// check, and a request without the token is refused.
fn gitlabs_findings_end_a_key(backend: Backend) {
    let token = "shared-with-gitlab-0123456789abcdef";
    let source = gitlab_token_at(backend, token);
    let (server, admin, id, leaked) = serving_a_key(backend, &[("KEYWARD_GITLAB_TOKEN", &source)]);
    let types = server.send(
        "GET",
        "/v1/leaks/gitlab/revocable_token_types",
        &[("authorization", token)],
        b"",
    );
    assert_eq!(types.status, 200, "{:?}", types.json);
    let kind = types.json["types"][0].as_str().unwrap().to_owned();
    let body = json!([{"type": kind, "token": leaked, "location": "https://gitlab.example.com/acme/app/-/blob/0b1c/.env"}])
        .to_string();
    let revoke = "/v1/leaks/gitlab/revoke_tokens";
    let refused = server.send(
        "POST",
        revoke,
        &[("authorization", "not-it")],
        body.as_bytes(),
    );
    assert_eq!(refused.status, 401, "{:?}", refused.json);
    assert_eq!(verdict(&server, &leaked), "valid");
    let taken = server.send("POST", revoke, &[("authorization", token)], body.as_bytes());
    assert_eq!(taken.status, 204, "{:?}", taken.json);
    assert_eq!(verdict(&server, &leaked), "revoked");
    let entries = actions(&server, &admin, &id);
    assert_eq!(
        entries[1]["actor"],
        json!({"type": "system", "id": "gitlab"})
    );
    assert!(!keyward::testing::log_holds(&server.logs(), token));
    assert!(!keyward::testing::log_holds(&server.logs(), &leaked));
}

#[test]
fn the_environments_leak_policy_decides_what_a_leak_does_on_sqlite() {
    the_environments_leak_policy_decides_what_a_leak_does(Backend::Sqlite);
}

#[test]
fn the_environments_leak_policy_decides_what_a_leak_does_on_dynamodb() {
    the_environments_leak_policy_decides_what_a_leak_does(Backend::DynamoDb);
}

/// `notify` records a leak and leaves the key working; `rotate` replaces it with no grace;
/// only a `*` key sets the policy, and a `keys:read` key reads it.
fn the_environments_leak_policy_decides_what_a_leak_does(backend: Backend) {
    let (server, admin, id, leaked) = serving_a_key(backend, &[]);
    let policy = "/v1/environments/staging/leak-policy";
    let read = server.call("GET", policy, &leaked, None);
    assert_eq!(
        read.json,
        json!({"environment": "staging", "leak_policy": "revoke"})
    );
    let refused = server.call(
        "PUT",
        policy,
        &leaked,
        Some(json!({"leak_policy": "notify"})),
    );
    assert_eq!(
        (refused.status, refused.code()),
        (403, "insufficient_scope")
    );
    let bad = server.call(
        "PUT",
        policy,
        &admin,
        Some(json!({"leak_policy": "ignore"})),
    );
    assert_eq!((bad.status, bad.code()), (400, "invalid_leak_policy"));
    let set = server.call(
        "PUT",
        policy,
        &admin,
        Some(json!({"leak_policy": "notify"})),
    );
    assert_eq!(
        set.json,
        json!({"environment": "staging", "leak_policy": "notify"})
    );

    report(&server, json!({"secrets": [leaked], "source": "commit"}));
    assert_eq!(
        verdict(&server, &leaked),
        "valid",
        "notify leaves the key working"
    );
    let entries = actions(&server, &admin, &id);
    assert_eq!(entries[0]["action"], "key.leaked");
    assert_eq!(entries[0]["leak_policy"], "notify");
    let key = server.call("GET", &format!("/v1/keys/{id}"), &admin, None);
    assert_eq!(key.json["key"]["leak_policy"], "notify");

    server.call(
        "PUT",
        policy,
        &admin,
        Some(json!({"leak_policy": "rotate"})),
    );
    report(&server, json!({"secrets": [leaked]}));
    assert_eq!(
        verdict(&server, &leaked),
        "revoked",
        "no rotation policy: no successor to make"
    );
    let entries = actions(&server, &admin, &id);
    let names: Vec<&Value> = entries.iter().map(|e| &e["action"]).collect();
    assert_eq!(
        names[..3],
        ["key.revoked", "key.leaked", "key.leaked"],
        "reported again under a stricter policy: recorded again, under it, then ended"
    );
    assert_eq!(entries[1]["leak_policy"], "rotate");

    let secret_id = format!(
        "keyward/staging/rotated-{}",
        server.store().replace([':', '/', '.'], "-")
    );
    let made = server.call(
        "POST",
        "/v1/environments/staging/keys",
        &admin,
        Some(json!({"name": "rotated", "scopes": ["keys:read"],
            "rotation_policy": {"every": "P30D", "grace_period": "24h", "secret_id": secret_id}})),
    );
    assert_eq!(made.status, 201, "{:?}", made.json);
    let second = made.json["secret"].as_str().unwrap().to_owned();
    let second_id = made.json["key"]["id"].as_str().unwrap().to_owned();
    report(&server, json!({"secrets": [second]}));
    assert_eq!(
        verdict(&server, &second),
        "expired",
        "rotated with no grace"
    );
    let rotated = server.call("GET", &format!("/v1/keys/{second_id}"), &admin, None);
    assert_eq!(
        rotated.json["key"]["status"], "expired",
        "{:?}",
        rotated.json
    );
    assert!(rotated.json["key"]["rotated_to"].is_string());
    let entries = actions(&server, &admin, &second_id);
    assert_eq!(entries[0]["action"], "key.rotated");
    assert_eq!(entries[0]["grace_period"], "now");
    let delivered = server
        .current_secret(&secret_id)
        .expect("the successor is delivered");
    assert_eq!(delivered["key_id"], rotated.json["key"]["rotated_to"]);
    let changes = server.call(
        "GET",
        "/v1/environments/staging/activity?action=environment.leak_policy_changed",
        &admin,
        None,
    );
    let changes = changes.json["entries"].as_array().unwrap().clone();
    assert_eq!(changes.len(), 2);
    assert_eq!(
        (&changes[0]["previous"], &changes[0]["leak_policy"]),
        (&json!("notify"), &json!("rotate"))
    );
}
