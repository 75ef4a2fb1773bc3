//! Concurrent rotations of one key: exactly one wins.

use std::sync::Barrier;

use serde_json::json;

use crate::support::{Backend, Server};

#[test]
fn of_sixteen_concurrent_rotations_on_sqlite_exactly_one_succeeds() {
    of_sixteen_concurrent_rotations_exactly_one_succeeds(Backend::Sqlite);
}

#[test]
fn of_sixteen_concurrent_rotations_on_dynamodb_exactly_one_succeeds() {
    of_sixteen_concurrent_rotations_exactly_one_succeeds(Backend::DynamoDb);
}

fn of_sixteen_concurrent_rotations_exactly_one_succeeds(backend: Backend) {
    const RACERS: usize = 16;
    let server = Server::start(backend);
    let admin = server.default_key.as_str();
    let created = server.call(
        "POST",
        "/v1/environments/development/keys",
        admin,
        Some(json!({"name": "contested"})),
    );
    let id = created.json["key"]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/keys/{id}/rotate");
    let barrier = Barrier::new(RACERS);
    let replies: Vec<_> = std::thread::scope(|s| {
        let racers: Vec<_> = (0..RACERS)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    server.call("POST", &path, admin, Some(json!({"grace_period": "1h"})))
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let wins: Vec<_> = replies.iter().filter(|r| r.status == 201).collect();
    let losses = replies.iter().filter(|r| r.status == 409).count();
    assert_eq!(
        (wins.len(), losses),
        (1, RACERS - 1),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        replies
            .iter()
            .filter(|r| r.status == 409)
            .all(|r| ["key_not_active", "conflict"].contains(&r.code()))
    );

    let listed = server.call(
        "GET",
        "/v1/environments/development/keys?limit=100",
        admin,
        None,
    );
    let successors: Vec<_> = listed.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["rotated_from"] == id.as_str())
        .collect();
    assert_eq!(successors.len(), 1, "exactly one successor exists");
    assert_eq!(successors[0]["id"], wins[0].json["key"]["id"]);
    let old = server.call("GET", &format!("/v1/keys/{id}"), admin, None);
    assert_eq!(old.json["key"]["rotated_to"], successors[0]["id"]);
    let entries = server.call("GET", &format!("/v1/keys/{id}/activity"), admin, None);
    let rotations = entries.json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "key.rotated")
        .count();
    assert_eq!(rotations, 1, "one rotation entry");
}
