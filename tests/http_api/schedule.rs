//! `keyward serve` runs the scheduled rotation itself: a key whose policy is overdue rotates
//! within a schedule period, and its new secret lands where services read it.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use keyward::domain::{Actor, EnvName, NewKey, RotationPolicy, create_key};
use keyward::store::StoreConfig;
use keyward::testing::orders_key;
use serde_json::{Value, json};

use crate::support::{Backend, Server};

#[test]
fn serve_rotates_an_overdue_key_and_delivers_its_secret_to_a_private_file() {
    serve_rotates_an_overdue_key_and_delivers_its_secret(Backend::Sqlite);
}

#[test]
fn serve_rotates_an_overdue_key_and_delivers_its_secret_to_secrets_manager() {
    serve_rotates_an_overdue_key_and_delivers_its_secret(Backend::DynamoDb);
}

fn serve_rotates_an_overdue_key_and_delivers_its_secret(backend: Backend) {
    let mint = keyward::mint();
    let server = Server::start_with(backend, &["--schedule-every", "1"]);
    let secret_id = format!(
        "keyward/development/serve-{}",
        server.store().replace([':', '/', '.'], "-")
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // A key made two days ago with a daily policy, written straight into the store that serve
    // is running on: the API can only make keys now.
    let key = runtime.block_on(async {
        let store = StoreConfig::parse(server.store())
            .unwrap()
            .open()
            .await
            .unwrap();
        let input = NewKey {
            rotation_policy: Some(
                RotationPolicy::from_json(
                    &json!({"every": "P1D", "grace_period": "1h", "secret_id": secret_id}),
                )
                .unwrap(),
            ),
            ..orders_key("nightly-export")
        };
        let made = keyward::now() - TimeDelta::days(2);
        let environment = EnvName::parse("development").unwrap();
        let issued = create_key(&environment, input, Actor::operator("test"), &mint, made).unwrap();
        store.apply(&issued.change).await.unwrap();
        issued.key
    });

    let path = format!("/v1/keys/{}", key.id);
    let deadline = Instant::now() + Duration::from_secs(60);
    let rotated = loop {
        let reply = server.call("GET", &path, &server.default_key, None);
        if reply.json["key"]["status"] == "in_grace" {
            break reply.json["key"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "not rotated within a minute: {}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let new_id = rotated["rotated_to"].as_str().unwrap();

    let value: Value = loop {
        let current = server.current_secret(&secret_id);
        if let Some(value) = current.filter(|v: &Value| v["key_id"] == new_id) {
            break value;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered within a minute: {}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    if backend == Backend::Sqlite {
        let mode = std::fs::metadata(server.secrets_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the secrets file is its owner's only");
    }

    let secret = value["secret"].as_str().unwrap();
    let verdict = server.call("POST", "/v1/verify", secret, Some(json!({"key": secret})));
    assert_eq!(verdict.json["valid"], true, "{:?}", verdict.json);
    assert_eq!(verdict.json["key_id"], new_id);

    let activity = server.call(
        "GET",
        &format!("/v1/keys/{}/activity", key.id),
        &server.default_key,
        None,
    );
    let rotation = activity.json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "key.rotated")
        .cloned()
        .expect("a rotation entry");
    assert_eq!(
        rotation["actor"],
        json!({"type": "schedule", "id": "keyward serve"})
    );
    assert!(
        !server.logs().contains(secret),
        "the secret is never logged"
    );
}

#[test]
fn serve_says_where_secrets_go_and_whether_its_schedule_is_on() {
    let on = Server::start_with(Backend::Sqlite, &["--schedule-every", "60"]);
    let off = Server::start(Backend::Sqlite);
    for server in [&on, &off] {
        let delivery = format!(
            "Rotations of keys with a policy deliver secrets to {} (mode 0600).",
            server.secrets_file().display()
        );
        assert!(server.banner.contains(&delivery), "{:?}", server.banner);
    }
    let says_off = |s: &Server| s.banner.iter().any(|l| l == "Scheduled rotation is off.");
    assert!(says_off(&off), "{:?}", off.banner);
    assert!(!says_off(&on), "{:?}", on.banner);
}
