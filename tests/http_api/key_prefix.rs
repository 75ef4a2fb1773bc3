//! A deployment with its own key prefix (`KEYWARD_KEY_PREFIX`): it issues keys with it,
//! publishes their format for secret scanners, and takes no key with any other prefix, on
//! the API and on `/v1/verify`; the CLI follows the key it acts with.

use std::process::Command;

use keyward::domain::{EnvName, Kind, Secret};
use serde_json::{Value, json};

use crate::support::{Backend, Server};

/// A key in the default format (`kw_`), well formed and with a good checksum.
fn default_prefix_key() -> String {
    let env = EnvName::parse("development").unwrap();
    Secret::generate(&keyward::mint(), Kind::Secret, &env)
        .expose()
        .to_owned()
}

/// `keyward` acting with `key`, told nothing of the prefix.
fn keyward(url: &str, key: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyward"));
    command
        .env("KEYWARD_URL", url)
        .env("KEYWARD_API_KEY", key)
        .env_remove("KEYWARD_KEY_PREFIX");
    command
}

#[test]
fn a_deployment_with_its_own_prefix_issues_publishes_and_takes_only_its_own_keys() {
    let server = Server::start_with_env(
        Backend::Sqlite,
        &["--no-schedule"],
        &[("KEYWARD_KEY_PREFIX", "acme")],
    );
    let admin = server.default_key.clone();
    assert!(admin.starts_with("acme_sk_development_"), "{admin}");

    let format = server.call("GET", "/v1/token-format", "", None);
    assert_eq!(format.status, 200);
    assert_eq!(
        format.json,
        json!({
            "prefix": "acme",
            "regex": r"acme_sk_[a-z0-9_]{1,32}_[A-Za-z0-9]{38}\b",
            "checksum": "crc32",
        })
    );
    let scanner = regex::Regex::new(format.json["regex"].as_str().unwrap()).unwrap();

    let created = server.call(
        "POST",
        "/v1/environments/development/keys",
        &admin,
        Some(json!({"name": "billing", "scopes": ["orders:read"]})),
    );
    assert_eq!(created.status, 201);
    let secret = created.json["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("acme_sk_development_"), "{secret}");
    let publishable = server.call(
        "POST",
        "/v1/environments/development/keys",
        &admin,
        Some(json!({"name": "web", "kind": "publishable", "scopes": ["checkout"]})),
    );
    assert_eq!(publishable.status, 201);
    let public = publishable.json["secret"].as_str().unwrap();
    assert!(public.starts_with("acme_pk_development_"), "{public}");
    assert!(scanner.is_match(&secret) && scanner.is_match(&admin));
    assert!(
        !scanner.is_match(public),
        "a publishable key is meant to be public"
    );
    let quoted = format!("token = \"{secret}\"\n");
    assert_eq!(
        scanner.find(&quoted).map(|m| m.as_str()),
        Some(secret.as_str()),
        "found whole where it is pasted"
    );
    assert_eq!(
        scanner
            .find(&format!("key%3D{secret}&x=1"))
            .map(|m| m.as_str()),
        Some(secret.as_str()),
        "found right after a word character"
    );
    assert!(
        !scanner.is_match(&format!("{secret}x")),
        "the start of a longer word is no key"
    );

    let verify = |key: &str| {
        let reply = server.call("POST", "/v1/verify", "", Some(json!({"key": key})));
        assert_eq!(reply.status, 200);
        reply.json["code"].as_str().unwrap().to_owned()
    };
    assert_eq!(verify(&secret), "valid");
    let other = default_prefix_key();
    assert!(!scanner.is_match(&other));
    assert_eq!(verify(&other), "malformed", "another deployment's key");
    let refused = server.call("GET", "/v1/environments/development/keys", &other, None);
    assert_eq!((refused.status, refused.code()), (401, "invalid_api_key"));

    // The CLI needs no setting: the key it acts with names the prefix, so it finds the
    // environment in it and takes the new secret a create answers with for a key.
    let cli = |args: &[&str]| -> Value {
        let out = keyward(&server.url(), &admin).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let made = cli(&["keys", "create", "--name", "cli", "--json"]);
    assert!(scanner.is_match(made["secret"].as_str().unwrap()), "{made}");
    let keys = cli(&["keys", "list", "--json"]);
    assert_eq!(keys["keys"].as_array().unwrap().len(), 4, "{keys}");
}

#[test]
fn a_bad_key_prefix_stops_serve_and_env_create_with_the_variables_name() {
    let dir = std::env::temp_dir().join(format!("keyward-prefix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("keyward.db").display().to_string();
    for args in [
        vec![
            "serve",
            "--no-schedule",
            "--listen",
            "127.0.0.1:0",
            "--db",
            &db,
        ],
        vec!["env", "create", "staging", "--db", &db],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(&args)
            .env("KEYWARD_KEY_PREFIX", "kw_")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("KEYWARD_KEY_PREFIX: a key prefix is a lowercase letter"),
            "{args:?}: {said}"
        );
    }
    let made = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["env", "create", "staging", "--json", "--db", &db])
        .env("KEYWARD_KEY_PREFIX", "acme")
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let made: Value = serde_json::from_slice(&made.stdout).unwrap();
    assert!(
        made["secret"]
            .as_str()
            .unwrap()
            .starts_with("acme_sk_staging_"),
        "{made}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
