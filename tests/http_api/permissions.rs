//! The authorization model, end to end: the README's permission table is the expectation,
//! and every cell of it is one request to `keyward serve`, on SQLite and on DynamoDB, from a
//! key or from a person signed in through a real OpenID provider on loopback. Then
//! the oracle test: another environment's name or key id answers byte for byte like one
//! that does not exist.

use serde_json::{Value, json};

use crate::people::{person, serve_for};
use crate::support::{Backend, Server};
use keyward::testing::Provider;

const BEGIN: &str = "<!-- permission-matrix: begin -->";
const END: &str = "<!-- permission-matrix: end -->";
const ENV: &str = "development";
/// Where the policies of the table's cells deliver: under it, each target key its own
/// secret, since two active keys cannot deliver to one (`409 secret_in_use`).
const POLICY_SECRET: &str = "keyward/development/matrix";

/// The callers, in the README table's column order: keys, then people (by their groups'
/// roles, [`crate::people::ROLES`]).
const CALLERS: [&str; 11] = [
    "`*`",
    "`keys:write`",
    "`keys:read`",
    "`keys:write orders:read`",
    "publishable `orders:read`",
    "another environment's `*`",
    "another environment's `keys:read`",
    "person, `*` everywhere",
    "person, `keys:write orders:read` here",
    "person, `keys:read` in another environment",
    "person with no role",
];

/// What a target key carries: its scopes, or the environment's default key.
#[derive(Clone, Copy)]
enum Target {
    Scopes(&'static [&'static str]),
    Default,
    None,
}

/// The keys that an action on a key acts on, as the table names them.
const KEY_TARGETS: [(&str, Target); 4] = [
    ("`orders:read`", Target::Scopes(&["orders:read"])),
    (
        "`keys:read keys:write`",
        Target::Scopes(&["keys:read", "keys:write"]),
    ),
    ("`*`", Target::Scopes(&["*"])),
    ("the default key", Target::Default),
];

/// The rows, in the table's order: the action, the target as the table names it, the target.
fn rows() -> Vec<(&'static str, &'static str, Target)> {
    let mut rows = vec![("create", "no scopes", Target::Scopes(&[]))];
    rows.extend(
        KEY_TARGETS[..3]
            .iter()
            .map(|&(name, t)| ("create", name, t)),
    );
    for action in [
        "rotate",
        "change grace",
        "revoke",
        "set policy",
        "set allowed IPs",
        "get",
        "key usage",
        "key activity",
    ] {
        rows.extend(KEY_TARGETS.iter().map(|&(name, t)| (action, name, t)));
    }
    rows.push(("list keys", "the environment", Target::None));
    rows.push(("environment activity", "the environment", Target::None));
    rows.push(("leak policy", "the environment", Target::None));
    rows.push(("set leak policy", "the environment", Target::None));
    rows
}

/// The test's own view of the server: the admin key that sets things up, and the default.
struct World<'s> {
    server: &'s Server,
    admin: String,
    default_id: String,
}

impl World<'_> {
    fn create(&self, scopes: &[&str], kind: &str) -> (String, String) {
        let reply = self.server.call(
            "POST",
            &format!("/v1/environments/{ENV}/keys"),
            &self.admin,
            Some(json!({"name": "matrix", "kind": kind, "scopes": scopes})),
        );
        assert_eq!(reply.status, 201, "setup: {:?}", reply.json);
        (
            reply.json["key"]["id"].as_str().unwrap().to_owned(),
            reply.json["secret"].as_str().unwrap().to_owned(),
        )
    }

    /// A fresh key to act on: a new key with these scopes (rotated first, for a grace
    /// change, so that it is in its grace period), or the environment's default key.
    fn target(&self, target: Target, action: &str) -> String {
        match target {
            Target::Default | Target::None => self.default_id.clone(),
            Target::Scopes(scopes) => {
                let (id, _) = self.create(scopes, "secret");
                if action == "change grace" {
                    let reply = self.server.call(
                        "POST",
                        &format!("/v1/keys/{id}/rotate"),
                        &self.admin,
                        Some(json!({"grace_period": "24h"})),
                    );
                    assert_eq!(reply.status, 201, "setup: {:?}", reply.json);
                }
                id
            }
        }
    }

    /// One cell: what `caller` gets for `action` on `target`, as the README writes it.
    fn cell(&mut self, caller: &str, action: &str, target: Target) -> String {
        let keys = format!("/v1/environments/{ENV}/keys");
        let (method, path, body) = match action {
            "create" => {
                let Target::Scopes(scopes) = target else {
                    unreachable!("create names scopes")
                };
                (
                    "POST",
                    keys,
                    Some(json!({"name": "made", "scopes": scopes})),
                )
            }
            "list keys" => ("GET", keys, None),
            "environment activity" => ("GET", format!("/v1/environments/{ENV}/activity"), None),
            "leak policy" => ("GET", format!("/v1/environments/{ENV}/leak-policy"), None),
            "set leak policy" => (
                "PUT",
                format!("/v1/environments/{ENV}/leak-policy"),
                Some(json!({"leak_policy": "revoke"})),
            ),
            _ => {
                let id = self.target(target, action);
                match action {
                    "rotate" => (
                        "POST",
                        format!("/v1/keys/{id}/rotate"),
                        Some(json!({"grace_period": "24h"})),
                    ),
                    "change grace" => (
                        "PUT",
                        format!("/v1/keys/{id}/grace-period"),
                        Some(json!({"grace_period": "1h"})),
                    ),
                    "revoke" => ("POST", format!("/v1/keys/{id}/revoke"), None),
                    "set policy" => (
                        "PUT",
                        format!("/v1/keys/{id}/rotation-policy"),
                        Some(
                            json!({"rotation_policy": {"every": "P30D", "grace_period": "24h", "secret_id": format!("{POLICY_SECRET}/{id}")}}),
                        ),
                    ),
                    // Loopback, where the test calls from, so a held caller keeps working.
                    "set allowed IPs" => (
                        "PUT",
                        format!("/v1/keys/{id}/allowed-ips"),
                        Some(json!({"allowed_ips": ["127.0.0.0/8", "::1"]})),
                    ),
                    "get" => ("GET", format!("/v1/keys/{id}"), None),
                    "key usage" => ("GET", format!("/v1/keys/{id}/usage"), None),
                    "key activity" => ("GET", format!("/v1/keys/{id}/activity"), None),
                    other => unreachable!("no action {other}"),
                }
            }
        };
        let reply = self.server.call(method, &path, caller, body);
        if action == "rotate" && matches!(target, Target::Default) && reply.status == 201 {
            self.default_id = reply.json["key"]["id"].as_str().unwrap().to_owned();
        }
        assert_ne!(reply.status, 500, "{method} {path}: {:?}", reply.json);
        if reply.status < 300 {
            reply.status.to_string()
        } else {
            format!("{} {}", reply.status, reply.code())
        }
    }
}

/// The table between the README's markers, cells trimmed, header and rule left out.
fn readme_table() -> Vec<Vec<String>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).expect("the README");
    let start = readme
        .find(BEGIN)
        .expect("the README has the permission table")
        + BEGIN.len();
    let end = readme.find(END).expect("the table's end marker");
    readme[start..end]
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

fn render(rows: &[Vec<String>]) -> String {
    rows.iter()
        .map(|r| format!("| {} |", r.join(" | ")))
        .collect::<Vec<_>>()
        .join("\n")
}

fn every_cell_of_the_readme_table_holds(backend: Backend) {
    let provider = Provider::start(&[]);
    let server = serve_for(&provider, backend);
    let staging = server.create_environment("staging");
    let mut world = World {
        server: &server,
        admin: server.default_key.clone(),
        default_id: server.default_key_id.clone(),
    };
    let star = world.create(&["*"], "secret").1;
    let writer = world.create(&["keys:write"], "secret").1;
    let reader = world.create(&["keys:read"], "secret").1;
    let custom_writer = world.create(&["keys:write", "orders:read"], "secret").1;
    let publishable = world.create(&["orders:read"], "publishable").1;
    let staging_reader = server.call(
        "POST",
        "/v1/environments/staging/keys",
        &staging,
        Some(json!({"name": "staging reader", "scopes": ["keys:read"]})),
    );
    assert_eq!(staging_reader.status, 201);
    let callers = [
        star,
        writer,
        reader,
        custom_writer,
        publishable,
        staging.clone(),
        staging_reader.json["secret"].as_str().unwrap().to_owned(),
        person(&provider, "ada", &["platform-admins"]),
        person(&provider, "otto", &["order-writers"]),
        person(&provider, "rita", &["staging-readers"]),
        person(&provider, "nora", &["marketing"]),
    ];

    let expected = readme_table();
    let mut header = vec!["action".to_owned(), "target".to_owned()];
    header.extend(CALLERS.iter().map(|c| (*c).to_owned()));
    let mut actual = vec![header, vec!["---".to_owned(); 2 + CALLERS.len()]];
    for (action, target_name, target) in rows() {
        let mut row = vec![action.to_owned(), target_name.to_owned()];
        for caller in &callers {
            row.push(world.cell(caller, action, target));
        }
        actual.push(row);
    }
    assert_eq!(
        render(&expected),
        render(&actual),
        "the README's permission table (left) and what {backend:?} answers (right)"
    );
    for (person, key) in SAME_AS_KEY {
        let column = |c: &str| 2 + CALLERS.iter().position(|&x| x == c).unwrap();
        for row in &actual[2..] {
            assert_eq!(
                row[column(person)],
                row[column(key)],
                "{person} as {key}: {row:?}"
            );
        }
    }
}

/// The people that hold what a key column's key holds: their columns match it cell for cell.
const SAME_AS_KEY: [(&str, &str); 3] = [
    ("person, `*` everywhere", "`*`"),
    (
        "person, `keys:write orders:read` here",
        "`keys:write orders:read`",
    ),
    (
        "person, `keys:read` in another environment",
        "another environment's `keys:read`",
    ),
];

#[test]
fn every_cell_of_the_readme_permission_table_holds_on_sqlite() {
    every_cell_of_the_readme_table_holds(Backend::Sqlite);
}

#[test]
fn every_cell_of_the_readme_permission_table_holds_on_dynamodb() {
    every_cell_of_the_readme_table_holds(Backend::DynamoDb);
}

fn another_environment_answers_like_a_missing_one(backend: Backend) {
    let server = Server::start(backend);
    let admin = server.default_key.as_str();
    let staging = server.create_environment("staging");
    let staging_key = server.call(
        "POST",
        "/v1/environments/staging/keys",
        &staging,
        Some(json!({"name": "theirs", "scopes": ["orders:read"]})),
    );
    assert_eq!(staging_key.status, 201);
    let theirs = staging_key.json["key"]["id"].as_str().unwrap().to_owned();
    let missing = format!("key_{}", "0".repeat(22));
    let bodies: [(&str, &str, Option<Value>); 8] = [
        ("GET", "", None),
        ("POST", "/rotate", Some(json!({"grace_period": "1h"}))),
        ("PUT", "/grace-period", Some(json!({"grace_period": "1h"}))),
        (
            "PUT",
            "/rotation-policy",
            Some(json!({"rotation_policy": null})),
        ),
        ("PUT", "/allowed-ips", Some(json!({"allowed_ips": []}))),
        ("POST", "/revoke", None),
        ("GET", "/activity", None),
        ("GET", "/activity?limit=5", None),
    ];
    let mut compared = 0;
    for (method, suffix, body) in &bodies {
        let ask = |id: &str| {
            server.call(
                method,
                &format!("/v1/keys/{id}{suffix}"),
                admin,
                body.clone(),
            )
        };
        let (existing, absent) = (ask(&theirs), ask(&missing));
        assert_eq!(existing.status, 404, "{method} {suffix}");
        assert_eq!(
            (existing.status, existing.json.to_string()),
            (absent.status, absent.json.to_string()),
            "{method} /v1/keys/{{id}}{suffix}"
        );
        compared += 1;
    }
    let filtered = |id: &str| {
        server.call(
            "GET",
            &format!("/v1/environments/{ENV}/activity?key_id={id}"),
            admin,
            None,
        )
    };
    let (existing, absent) = (filtered(&theirs), filtered(&missing));
    assert_eq!(existing.status, 200);
    assert_eq!(existing.json, json!({"entries": [], "next_cursor": null}));
    assert_eq!(existing.json.to_string(), absent.json.to_string());
    let environment_routes: [(&str, &str, Option<Value>); 4] = [
        ("GET", "/keys", None),
        ("POST", "/keys", Some(json!({"name": "x"}))),
        ("GET", "/activity", None),
        ("GET", "/activity?action=key.created", None),
    ];
    for (method, suffix, body) in &environment_routes {
        let ask = |env: &str| {
            server.call(
                method,
                &format!("/v1/environments/{env}{suffix}"),
                admin,
                body.clone(),
            )
        };
        let (existing, absent) = (ask("staging"), ask("no-such-environment"));
        assert_eq!(
            (existing.status, existing.code()),
            (403, "wrong_environment")
        );
        assert_eq!(
            (existing.status, existing.json.to_string()),
            (absent.status, absent.json.to_string()),
            "{method} /v1/environments/{{env}}{suffix}"
        );
        compared += 1;
    }
    let raw: Vec<_> = server
        .exchanges()
        .into_iter()
        .filter(|e| (e.status == 404 || e.status == 403) && !e.path.contains("key_id="))
        .collect();
    for pair in raw.chunks(2) {
        assert_eq!(pair[0].body, pair[1].body, "byte for byte: {pair:?}");
    }
    assert_eq!(compared, 12);
    assert_eq!(
        raw.len(),
        2 * compared,
        "every answer compared was a refusal"
    );
}

#[test]
fn another_environment_answers_like_a_missing_one_on_sqlite() {
    another_environment_answers_like_a_missing_one(Backend::Sqlite);
}

#[test]
fn another_environment_answers_like_a_missing_one_on_dynamodb() {
    another_environment_answers_like_a_missing_one(Backend::DynamoDb);
}

/// A key that expires, as a leaked key that was rotated does during its grace, cannot make
/// anything that outlives it; a `*` key is not limited.
#[test]
fn a_key_that_expires_makes_nothing_that_outlives_it() {
    let server = Server::start(Backend::Sqlite);
    let admin = server.default_key.as_str();
    let keys = format!("/v1/environments/{ENV}/keys");
    let in_days = |days: i64| (chrono::Utc::now() + chrono::TimeDelta::days(days)).to_rfc3339();
    let create = |caller: &str, body: Value| server.call("POST", &keys, caller, Some(body));
    let made = create(
        admin,
        json!({"name": "temporary", "scopes": ["keys:write", "orders:read"], "expires_at": in_days(2)}),
    );
    assert_eq!(made.status, 201);
    let (temporary_id, temporary) = (
        made.json["key"]["id"].as_str().unwrap().to_owned(),
        made.json["secret"].as_str().unwrap().to_owned(),
    );
    let target = create(admin, json!({"name": "target", "scopes": ["orders:read"]}));
    let target_id = target.json["key"]["id"].as_str().unwrap().to_owned();
    let policy = json!({"rotation_policy": {"every": "P30D", "grace_period": "24h", "secret_id": POLICY_SECRET}});
    let outcome = |reply: crate::support::Reply| match reply.status {
        status @ 200..=299 => status.to_string(),
        status => format!("{status} {}", reply.code()),
    };
    let path = |id: &str, action: &str| format!("/v1/keys/{id}/{action}");
    let cases = [
        (
            "create with no expiry",
            outcome(create(
                &temporary,
                json!({"name": "a", "scopes": ["orders:read"]}),
            )),
            "403 lifetime_escalation",
        ),
        (
            "create expiring after it",
            outcome(create(
                &temporary,
                json!({"name": "b", "expires_at": in_days(3)}),
            )),
            "403 lifetime_escalation",
        ),
        (
            "create expiring before it",
            outcome(create(
                &temporary,
                json!({"name": "c", "expires_at": in_days(1)}),
            )),
            "201",
        ),
        (
            // Its scheduled rotation would make a successor that never expires.
            "create expiring before it, with a rotation policy",
            outcome(create(
                &temporary,
                json!({"name": "d", "scopes": ["orders:read"], "expires_at": in_days(1), "rotation_policy": policy["rotation_policy"]}),
            )),
            "403 lifetime_escalation",
        ),
        (
            "rotate, which makes a key that never expires",
            outcome(server.call(
                "POST",
                &path(&target_id, "rotate"),
                &temporary,
                Some(json!({"grace_period": "1h"})),
            )),
            "403 lifetime_escalation",
        ),
        (
            "set a rotation policy",
            outcome(server.call(
                "PUT",
                &path(&target_id, "rotation-policy"),
                &temporary,
                Some(policy.clone()),
            )),
            "403 lifetime_escalation",
        ),
        (
            "clear a rotation policy",
            outcome(server.call(
                "PUT",
                &path(&target_id, "rotation-policy"),
                &temporary,
                Some(json!({"rotation_policy": null})),
            )),
            "200",
        ),
    ];
    for (what, got, expected) in &cases {
        assert_eq!(got, expected, "{what}");
    }
    // Rotated, as a leaked key would be: in its grace it cannot stretch its own life.
    let rotated = server.call(
        "POST",
        &path(&temporary_id, "rotate"),
        admin,
        Some(json!({"grace_period": "24h"})),
    );
    assert_eq!(rotated.status, 201);
    let grace = |days: &str| {
        outcome(server.call(
            "PUT",
            &path(&temporary_id, "grace-period"),
            &temporary,
            Some(json!({"grace_period": days})),
        ))
    };
    assert_eq!(grace("P365D"), "403 lifetime_escalation");
    assert_eq!(grace("1h"), "200", "shortening its own grace is fine");
    let star = create(
        admin,
        json!({"name": "temporary root", "scopes": ["*"], "expires_at": in_days(1)}),
    );
    let star = star.json["secret"].as_str().unwrap().to_owned();
    assert_eq!(
        outcome(create(&star, json!({"name": "lasting"}))),
        "201",
        "a * key is full access"
    );
}

/// A key of the environment with no scopes at all is refused for the scope a route needs, not
/// as a stranger to its own environment.
fn a_key_without_scopes_lacks_the_scope_and_is_no_stranger(backend: Backend) {
    let server = Server::start(backend);
    let made = server.call(
        "POST",
        &format!("/v1/environments/{ENV}/keys"),
        &server.default_key,
        Some(json!({"name": "no scopes", "scopes": []})),
    );
    assert_eq!(made.status, 201, "{:?}", made.json);
    let secret = made.json["secret"].as_str().unwrap();
    for path in ["keys", "activity", "leak-policy"] {
        let reply = server.call(
            "GET",
            &format!("/v1/environments/{ENV}/{path}"),
            secret,
            None,
        );
        assert_eq!(
            (reply.status, reply.code()),
            (403, "insufficient_scope"),
            "{path}"
        );
    }
}

#[test]
fn a_key_without_scopes_lacks_the_scope_and_is_no_stranger_on_sqlite() {
    a_key_without_scopes_lacks_the_scope_and_is_no_stranger(Backend::Sqlite);
}

#[test]
fn a_key_without_scopes_lacks_the_scope_and_is_no_stranger_on_dynamodb() {
    a_key_without_scopes_lacks_the_scope_and_is_no_stranger(Backend::DynamoDb);
}
