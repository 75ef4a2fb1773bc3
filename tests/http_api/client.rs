//! The `keyward` client end to end: the real binary against `keyward serve` on SQLite and on
//! DynamoDB, each command in table and in `--json` form, its exit statuses, and what it does
//! with secrets.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::support::{Backend, Server};

/// What one run of the client did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// The client, pointed at one server and acting with one key. It keeps every stderr it
/// saw, and every secret it was given, for the hygiene check.
struct Client<'a> {
    url: String,
    key: String,
    stderr: RefCell<Vec<String>>,
    secrets: RefCell<Vec<String>>,
    _server: &'a Server,
}

fn keyward() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyward"));
    command
        .env_remove("KEYWARD_URL")
        .env_remove("KEYWARD_API_KEY")
        .env_remove("KEYWARD_KEY_PREFIX");
    command
}

impl<'a> Client<'a> {
    fn new(server: &'a Server, key: &str) -> Self {
        Self {
            url: server.url(),
            key: key.to_owned(),
            stderr: RefCell::new(Vec::new()),
            secrets: RefCell::new(vec![key.to_owned()]),
            _server: server,
        }
    }

    fn run_with(&self, args: &[&str], stdin: &str) -> Run {
        let mut child = keyward()
            .args(args)
            .env("KEYWARD_URL", &self.url)
            .env("KEYWARD_API_KEY", &self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("keyward runs");
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(stdin.as_bytes())
            .expect("stdin is written");
        let out = child.wait_with_output().expect("keyward ends");
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
        };
        self.stderr.borrow_mut().push(run.stderr.clone());
        run
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, "")
    }

    /// Runs a command that must succeed, and answers its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        run.stdout
    }

    /// Runs a command with `--json` that must succeed, and answers its JSON, noting any secret.
    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(&[args, &["--json"]].concat());
        let json: Value = serde_json::from_str(&out).expect("--json prints JSON");
        if let Some(secret) = json["secret"].as_str() {
            self.secrets.borrow_mut().push(secret.to_owned());
        }
        json
    }

    /// Fails if any stderr so far holds a secret: the caller's key, an issued secret, or
    /// anything shaped like a key.
    fn assert_no_secret_on_stderr(&self) {
        let stderr = self.stderr.borrow();
        assert!(stderr.len() > 10, "the check saw too few runs to mean much");
        for text in stderr.iter() {
            for secret in self.secrets.borrow().iter() {
                assert!(
                    !text.contains(secret.as_str()),
                    "a secret on stderr: {text}"
                );
            }
            assert!(
                !text.contains("kw_sk_") && !text.contains("kw_pk_"),
                "a key on stderr: {text}"
            );
        }
    }
}

/// An answer without the keys' last use, which moves between two reads of the same key while
/// checks are counted (on DynamoDB, as the table's stream carries them), so that two answers
/// read a moment apart can be compared.
fn settled(mut answer: Value) -> Value {
    let strip = |key: &mut Value| {
        let fields = key.as_object_mut().expect("a key is an object");
        for field in ["last_used_at", "last_refused_at"] {
            assert!(fields.remove(field).is_some(), "every key shows {field}");
        }
    };
    if let Some(list) = answer.get_mut("keys").and_then(Value::as_array_mut) {
        list.iter_mut().for_each(strip);
    }
    if let Some(key) = answer.get_mut("key") {
        strip(key);
    }
    answer
}

/// The value after `label` on its line of a key's or a verdict's fields.
fn field(stdout: &str, label: &str) -> String {
    stdout
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(label)?;
            rest.starts_with("  ").then(|| rest.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no {label} in {stdout}"))
}

fn time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().expect("a time"))
        .expect("an RFC 3339 time")
        .into()
}

/// Asserts that `at` is `grace` after a moment between `before` and `after`.
fn assert_grace(at: &Value, before: DateTime<Utc>, after: DateTime<Utc>, grace: TimeDelta) {
    let at = time(at);
    let slack = TimeDelta::seconds(1);
    assert!(
        at >= before + grace - slack && at <= after + grace + slack,
        "{at} is not {grace} after [{before}, {after}]"
    );
}

fn actions(entries: &Value) -> Vec<&str> {
    entries["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["action"].as_str().expect("an action"))
        .collect()
}

#[test]
fn a_whole_rotation_from_the_command_line_on_sqlite() {
    a_whole_rotation_from_the_command_line(Backend::Sqlite);
}

#[test]
fn a_whole_rotation_from_the_command_line_on_dynamodb() {
    a_whole_rotation_from_the_command_line(Backend::DynamoDb);
}

/// Every command, in both forms: create, rotate with a preset, extend, cut to now, revoke.
fn a_whole_rotation_from_the_command_line(backend: Backend) {
    let server = Server::start(backend);
    let admin = server.default_key.clone();
    let cli = Client::new(&server, &admin);

    let created = cli.run(&[
        "keys",
        "create",
        "--name",
        "billing worker",
        "--scope",
        "orders:read",
    ]);
    assert_eq!(created.code, 0, "{created:?}");
    let (id, secret) = (
        field(&created.stdout, "id"),
        field(&created.stdout, "secret"),
    );
    cli.secrets.borrow_mut().push(secret.clone());
    assert_eq!(field(&created.stdout, "name"), "billing worker");
    assert_eq!(field(&created.stdout, "status"), "active");
    assert_eq!(field(&created.stdout, "scopes"), "orders:read");
    assert_eq!(field(&created.stdout, "expires"), "never");
    assert!(created.stdout.ends_with(&format!("secret  {secret}\n")));
    assert!(
        created
            .stderr
            .starts_with("warning: the secret is shown only this once"),
        "{}",
        created.stderr
    );

    let valid = cli.run_with(
        &["verify", "--scope", "orders:read"],
        &format!("{secret}\n"),
    );
    assert_eq!(
        (valid.code, field(&valid.stdout, "valid")),
        (0, "true".into())
    );
    assert_eq!(field(&valid.stdout, "key id"), id);
    let verdict = cli.run_with(&["verify", "--json", "--scope", "keys:read"], &secret);
    assert_eq!(verdict.code, 1);
    let verdict: Value = serde_json::from_str(&verdict.stdout).expect("--json prints JSON");
    assert_eq!(verdict["code"], "insufficient_scope");

    let shown = cli.ok(&["keys", "get", &id]);
    assert_eq!(
        field(&shown, "hint"),
        format!("{}...{}", &secret[..18], &secret[secret.len() - 4..])
    );
    let got = cli.json(&["keys", "get", &id]);
    let api = server.call("GET", &format!("/v1/keys/{id}"), &admin, None);
    assert_eq!(
        settled(got),
        settled(api.json),
        "--json is the API's own answer"
    );

    let before = Utc::now();
    let rotated = cli.json(&["keys", "rotate", &id, "--grace", "24h"]);
    let after = Utc::now();
    assert_eq!(rotated["previous"]["status"], "in_grace");
    assert_grace(
        &rotated["previous"]["expires_at"],
        before,
        after,
        TimeDelta::hours(24),
    );
    let new_id = rotated["key"]["id"].as_str().expect("a new id").to_owned();
    let new_secret = rotated["secret"].as_str().expect("a secret").to_owned();
    assert_eq!(rotated["key"]["rotated_from"], id.as_str());
    let old = cli.ok(&["keys", "get", &id]);
    assert_eq!(field(&old, "status"), "in grace, ends in 24h");
    assert_eq!(field(&old, "rotated to"), new_id);

    let before = Utc::now();
    let extended = cli.ok(&["keys", "grace", &id, "--grace", "3d"]);
    let after = Utc::now();
    assert_eq!(field(&extended, "status"), "in grace, ends in 3d");
    let extended = cli.json(&["keys", "get", &id]);
    assert_grace(
        &extended["key"]["expires_at"],
        before,
        after,
        TimeDelta::days(3),
    );

    let cut = cli.json(&["keys", "grace", &id, "--grace", "now"]);
    assert_eq!(cut["key"]["status"], "expired");
    let refused = cli.run_with(&["verify"], &secret);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert_eq!(refused.stderr, "error: expired: the key has expired\n");
    assert_eq!(field(&refused.stdout, "code"), "expired");
    assert_eq!(cli.run_with(&["verify"], &new_secret).code, 0);

    let policy = cli.ok(&[
        "keys",
        "policy",
        &new_id,
        "--every",
        "P30D",
        "--grace",
        "24h",
        "--secret",
        "keyward/development/billing",
    ]);
    assert_eq!(
        field(&policy, "rotation policy"),
        "every P30D, grace 24h, to keyward/development/billing"
    );
    let cleared = cli.json(&["keys", "policy", &new_id, "--clear"]);
    assert_eq!(cleared["key"]["rotation_policy"], Value::Null);

    let default = cli.run(&["keys", "revoke", &server.default_key_id, "--yes"]);
    assert_eq!(default.code, 1, "{default:?}");
    let api = server.call(
        "POST",
        &format!("/v1/keys/{}/revoke", server.default_key_id),
        &admin,
        None,
    );
    assert_eq!(
        default.stderr,
        format!(
            "error: default_key_must_be_rotated: {}\n",
            api.json["error"]["message"].as_str().unwrap()
        )
    );
    let revoked = cli.ok(&["keys", "revoke", &new_id, "--yes"]);
    assert_eq!(field(&revoked, "status"), "revoked");
    let again = cli.json(&["keys", "revoke", &new_id, "--yes"]);
    assert_eq!(again["key"]["status"], "revoked");
    let refused = cli.run_with(&["verify"], &new_secret);
    assert_eq!(
        (refused.code, refused.stderr.as_str()),
        (1, "error: revoked: the key was revoked\n")
    );

    let listed = cli.ok(&["keys", "list"]);
    let lines: Vec<&str> = listed.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATUS"),
        "{listed}"
    );
    assert_eq!(lines.len(), 4, "a header and three keys: {listed}");
    assert!(
        lines[1].starts_with(&new_id) && lines[1].contains("revoked"),
        "{listed}"
    );
    assert!(
        lines[2].starts_with(&id) && lines[2].contains("expired"),
        "{listed}"
    );
    assert!(
        lines[3].contains("yes"),
        "the default key is marked: {listed}"
    );
    let api = server.call(
        "GET",
        "/v1/environments/development/keys?limit=20",
        &admin,
        None,
    );
    assert_eq!(
        settled(cli.json(&["keys", "list"])),
        settled(api.json.clone())
    );
    assert_eq!(
        settled(cli.json(&["keys", "list", "--env", "development", "--all"])),
        settled(api.json)
    );

    let history = cli.ok(&["activity", "--key", &id]);
    let rows: Vec<&str> = history.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{history}");
    assert!(
        rows[2].contains("key.rotated")
            && rows[2].contains(&format!("new key {new_id}, grace 24h")),
        "{history}"
    );
    assert!(
        rows[2].contains(&format!("api_key {}", server.default_key_id)),
        "{history}"
    );
    assert_eq!(
        actions(&cli.json(&["activity", "--key", &id])),
        [
            "key.grace_period_changed",
            "key.grace_period_changed",
            "key.rotated",
            "key.created"
        ]
    );
    let rotations = cli.json(&["activity", "--action", "key.rotated"]);
    assert_eq!(actions(&rotations), ["key.rotated"]);
    let api = server.call(
        "GET",
        "/v1/environments/development/activity?action=key.rotated&limit=20",
        &admin,
        None,
    );
    assert_eq!(rotations, api.json);
    let everything = cli.ok(&["activity", "--limit", "3"]);
    assert_eq!(everything.lines().count(), 4, "{everything}");

    cli.assert_no_secret_on_stderr();
}

#[test]
fn a_key_made_with_allowed_ips_shows_them_and_a_bad_one_is_refused_by_the_server() {
    let server = Server::start(Backend::Sqlite);
    let cli = Client::new(&server, &server.default_key);
    let made = cli.json(&[
        "keys",
        "create",
        "--name",
        "runner",
        "--scope",
        "orders:read",
        "--allowed-ip",
        "198.51.100.0/24",
        "--allowed-ip",
        "::ffff:192.0.2.1",
    ]);
    assert_eq!(
        made["key"]["allowed_ips"],
        json!(["198.51.100.0/24", "192.0.2.1"])
    );
    let id = made["key"]["id"].as_str().unwrap();
    let shown = cli.ok(&["keys", "get", id]);
    assert_eq!(field(&shown, "allowed IPs"), "198.51.100.0/24,192.0.2.1");
    assert_eq!(
        field(&shown, "seen from"),
        "no accepted check this week came with an address"
    );
    let secret = made["secret"].as_str().unwrap();
    let verified = server.call(
        "POST",
        "/v1/verify",
        "",
        Some(json!({"key": secret, "source_ip": "198.51.100.20"})),
    );
    assert_eq!(verified.json["valid"], true, "{:?}", verified.json);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let seen = loop {
        let seen = field(&cli.ok(&["keys", "get", id]), "seen from");
        if seen.starts_with("198.51.100.20 ") || std::time::Instant::now() > until {
            break seen;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(
        seen.starts_with("198.51.100.20 (last in ") && seen.ends_with(" UTC)"),
        "{seen}"
    );
    let changed = cli.ok(&[
        "keys",
        "ips",
        id,
        "--set",
        "203.0.113.0/24, 2001:db8::7",
        "--set",
        "::ffff:203.0.113.0/120",
    ]);
    assert_eq!(field(&changed, "allowed IPs"), "203.0.113.0/24,2001:db8::7");
    let cleared = cli.json(&["keys", "ips", id, "--clear"]);
    assert_eq!(cleared["key"]["allowed_ips"], json!([]));
    let activity = cli.ok(&[
        "activity",
        "--key",
        id,
        "--action",
        "key.allowed_ips_changed",
    ]);
    assert!(
        activity.contains("allowed IPs any address; was 203.0.113.0/24,2001:db8::7"),
        "{activity}"
    );
    let refused = cli.run(&["keys", "ips", id, "--set", "192.0.2.1/16"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("invalid_allowed_ips"),
        "{}",
        refused.stderr
    );
    let refused = cli.run(&[
        "keys",
        "create",
        "--name",
        "bad",
        "--allowed-ip",
        "10.0.0.1/8",
    ]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("host bits set: the network is 10.0.0.0/8"),
        "{}",
        refused.stderr
    );
}

#[test]
fn secret_only_prints_exactly_the_secret_and_a_newline() {
    let server = Server::start(Backend::Sqlite);
    let cli = Client::new(&server, &server.default_key);
    let created = cli.run(&[
        "keys",
        "create",
        "--name",
        "ci",
        "--scope",
        "orders:read",
        "--secret-only",
    ]);
    assert_eq!((created.code, created.stderr.as_str()), (0, ""));
    let secret = created
        .stdout
        .strip_suffix('\n')
        .expect("a newline at the end");
    assert!(
        !secret.contains(char::is_whitespace),
        "{:?}",
        created.stdout
    );
    let checked = cli.run_with(&["verify", "--json"], secret);
    let verdict: Value = serde_json::from_str(&checked.stdout).unwrap();
    let id = verdict["key_id"]
        .as_str()
        .expect("a valid key names its id");

    let rotated = cli.run(&["keys", "rotate", id, "--grace", "1h", "--secret-only"]);
    assert_eq!((rotated.code, rotated.stderr.as_str()), (0, ""));
    let new_secret = rotated
        .stdout
        .strip_suffix('\n')
        .expect("a newline at the end");
    assert_ne!(new_secret, secret);
    assert_eq!(cli.run_with(&["verify"], new_secret).code, 0);
    assert_eq!(
        cli.run_with(&["verify"], secret).code,
        0,
        "the old key is in its grace"
    );

    let conflict = cli.run(&["keys", "create", "--name", "x", "--json", "--secret-only"]);
    assert_eq!(conflict.code, 2, "{conflict:?}");
}

/// `--secret-file` keeps a new secret where no other user can read it (a shell's `> file`
/// makes a file of mode 0644), and never overwrites a file: it refuses one that exists
/// before it makes the key, so no key is made whose secret has nowhere to go.
#[test]
fn a_secret_file_is_the_owners_alone_and_never_overwritten() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start(Backend::Sqlite);
    let cli = Client::new(&server, &server.default_key);
    let dir = std::env::temp_dir().join(format!("keyward-secret-file-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("billing.key");
    let path = path.to_str().unwrap();
    let created = cli.run(&["keys", "create", "--name", "billing", "--secret-file", path]);
    assert_eq!(created.code, 0, "{created:?}");
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let secret = std::fs::read_to_string(path).unwrap();
    let secret = secret.strip_suffix('\n').expect("the secret and a newline");
    assert!(!created.stdout.contains(secret) && !created.stderr.contains(secret));
    assert!(
        created.stdout.contains(&format!("written to {path}")),
        "{}",
        created.stdout
    );
    assert_eq!(cli.run_with(&["verify"], secret).code, 0);

    let listed = |cli: &Client| {
        let run = cli.run(&["keys", "list", "--all", "--json"]);
        serde_json::from_str::<Value>(&run.stdout).unwrap()["keys"]
            .as_array()
            .unwrap()
            .len()
    };
    let before = listed(&cli);
    let again = cli.run(&["keys", "create", "--name", "second", "--secret-file", path]);
    assert_eq!(again.code, 2, "{again:?}");
    assert!(again.stderr.contains("no key was made"), "{}", again.stderr);
    assert_eq!(listed(&cli), before, "no key was made");
    assert_eq!(
        std::fs::read_to_string(path).unwrap(),
        format!("{secret}\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A create or a rotation whose stdout is closed (a pipe whose reader left) has made its key:
/// it exits 1 and names the key, so that a script knows to revoke it, and shows no secret.
#[test]
fn a_closed_stdout_after_a_create_names_the_key_that_was_made() {
    let server = Server::start(Backend::Sqlite);
    let mut child = keyward()
        .args(["keys", "create", "--name", "orphan"])
        .env("KEYWARD_URL", server.url())
        .env("KEYWARD_API_KEY", &server.default_key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader leaves before the answer comes back: the client's request takes a round trip.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the key key_") && stderr.contains("was made"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("kw_sk_development_"),
        "no secret: {stderr}"
    );
}

/// A server that answers a create with a "secret" that is no key (here, terminal controls)
/// has made a key by its own account: the client prints nothing of it, exits 1 (not a
/// failure to retry) naming the key to revoke, and leaves no secret file behind.
#[test]
fn a_secret_that_is_no_key_is_refused_and_the_key_named() {
    let answer =
        r#"{"key": {"id": "key_08EAAAAAAAAAAAAAAAAAAA"}, "secret": "\u001b]0;pwned\u0007"}"#;
    let url = answering("201 Created", "application/json", answer);
    let dir = std::env::temp_dir().join(format!("keyward-bad-secret-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("new.key");
    let key = keyward::domain::Secret::generate(
        &keyward::mint(),
        keyward::domain::Kind::Secret,
        &keyward::domain::EnvName::parse("development").unwrap(),
    );
    for extra in [vec![], vec!["--secret-file", file.to_str().unwrap()]] {
        let out = keyward()
            .args(["keys", "create", "--name", "x"])
            .args(&extra)
            .env("KEYWARD_URL", &url)
            .env("KEYWARD_API_KEY", key.expose())
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {stderr}");
        assert!(stderr.contains("key_08EAAAAAAAAAAAAAAAAAAA"), "{stderr}");
        assert!(
            !stdout.contains('\u{1b}') && !stderr.contains('\u{1b}'),
            "{stdout}{stderr}"
        );
        assert!(!file.exists(), "no secret file is left behind");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `keyward leaks report` finds every key in a leaked file, whatever is around it, and ends
/// those of this keyward without printing any; a file with none is a usage error.
#[test]
fn leaks_report_ends_every_key_found_in_a_leaked_file() {
    let server = Server::start(Backend::Sqlite);
    let admin = Client::new(&server, &server.default_key);
    let made = admin.json(&["keys", "create", "--name", "ci", "--scope", "orders:read"]);
    let (id, leaked) = (
        made["key"]["id"].as_str().unwrap().to_owned(),
        made["secret"].as_str().unwrap().to_owned(),
    );
    let file = format!(
        "# .env\nORDERS_KEY={leaked}\nURL=https://x.example/?key%3D{leaked}&a=1\nOTHER=acme_sk_prod_Ab9\nTYPO=kw_sk_development_Ab9\n"
    );
    let run = admin.run_with(
        &[
            "leaks",
            "report",
            "--source",
            "commit",
            "--found-at",
            "https://github.com/acme/app/commit/1",
        ],
        &file,
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("Reported 2 words"), "{run:?}");
    assert!(!run.stdout.contains(&leaked) && !run.stderr.contains(&leaked));
    let key = admin.json(&["keys", "get", &id]);
    assert_eq!(key["key"]["status"], "revoked", "{key}");
    let entries = admin.json(&["activity", "--key", &id]);
    assert_eq!(
        actions(&entries),
        ["key.revoked", "key.leaked", "key.created"]
    );
    assert_eq!(
        entries["entries"][1]["url"],
        "https://github.com/acme/app/commit/1"
    );
    let none = admin.run_with(&["leaks", "report"], "nothing to see\n");
    assert_eq!(none.code, 2, "{none:?}");
    assert!(none.stderr.contains("shaped like a secret key"), "{none:?}");
}

/// `keyward env leak-policy` shows the environment's leak policy to a reader and sets it
/// with a `*` key only.
#[test]
fn env_leak_policy_shows_and_sets_what_a_leak_does() {
    let server = Server::start(Backend::Sqlite);
    let admin = Client::new(&server, &server.default_key);
    assert_eq!(
        admin.ok(&["env", "leak-policy"]),
        "development: revoke. A key reported leaked is revoked at once (a default key is rotated with no grace).\n"
    );
    let made = admin.json(&["keys", "create", "--name", "reader", "--scope", "keys:read"]);
    let reader = Client::new(&server, made["secret"].as_str().unwrap());
    let refused = reader.run(&["env", "leak-policy", "notify"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("insufficient_scope"), "{refused:?}");
    let set = admin.json(&["env", "leak-policy", "notify"]);
    assert_eq!(
        set,
        json!({"environment": "development", "leak_policy": "notify"})
    );
    assert!(
        reader
            .ok(&["env", "leak-policy"])
            .starts_with("development: notify.")
    );
    let bad = admin.run(&["env", "leak-policy", "ignore"]);
    assert_eq!(
        bad.code, 2,
        "clap refuses a policy that does not exist: {bad:?}"
    );
}

/// Plain `http://` to a host that is not this machine's loopback would send the key in clear:
/// refused with exit 2 before anything is sent, and the message says how to proceed. (The
/// address is 0.0.0.0, which Linux routes to this machine, so that the test could send
/// nothing elsewhere even if the check were gone.)
#[test]
fn plain_http_to_another_host_is_refused_before_anything_is_sent() {
    let run = keyward()
        .args(["keys", "list", "--url", "http://0.0.0.0:9"])
        .env(
            "KEYWARD_API_KEY",
            "kw_sk_development_0000000000000000000000000000000000000000",
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--insecure-http") && stderr.contains("https://"),
        "{stderr}"
    );
}

/// Every other command, with the caller's key in `KEYWARD_API_KEY`, puts no secret on
/// stderr: not that key, not a secret it was shown, nothing shaped like a key.
#[test]
fn no_command_puts_a_secret_on_stderr() {
    let server = Server::start(Backend::Sqlite);
    let cli = Client::new(&server, &server.default_key);
    let made = cli.json(&[
        "keys",
        "create",
        "--name",
        "hygiene",
        "--scope",
        "orders:read",
    ]);
    let id = made["key"]["id"].as_str().unwrap().to_owned();
    let secret = made["secret"].as_str().unwrap().to_owned();
    let made = cli.ok(&[
        "keys",
        "create",
        "--name",
        "table",
        "--kind",
        "publishable",
        "--scope",
        "orders:read",
    ]);
    cli.secrets.borrow_mut().push(field(&made, "secret"));
    let rotated = cli.ok(&["keys", "rotate", &id, "--grace", "1h"]);
    cli.secrets.borrow_mut().push(field(&rotated, "secret"));
    let commands: Vec<Vec<&str>> = vec![
        vec!["keys", "list"],
        vec!["keys", "list", "--limit", "1"],
        vec!["keys", "get", &id],
        vec!["keys", "grace", &id, "--grace", "2h"],
        vec!["keys", "policy", &id, "--clear"],
        vec!["keys", "revoke", &id],
        vec!["keys", "revoke", &server.default_key_id, "--yes"],
        vec!["keys", "rotate", &id, "--grace", "1h"],
        vec!["keys", "get", "key_0000000000000000000000"],
        vec!["activity"],
        vec!["activity", "--limit", "1"],
        vec!["activity", "--action", "key.nothing"],
        vec!["keys", "list", "--env", "production"],
    ];
    for command in &commands {
        cli.run(command);
        cli.run(&[command.as_slice(), &["--json"]].concat());
    }
    cli.run_with(&["verify"], &secret);
    cli.run_with(&["verify"], &format!("{}x", &secret));
    cli.run_with(&["keys", "list", "--api-key-stdin"], &secret);
    cli.run(&["keys", "revoke", &secret]);
    cli.run(&["verify", &secret]);
    cli.run(&["keys", "create", "--name", &secret, "--kind", &secret]);
    let echo = format!(
        r#"{{"message": "'{secret}' not a valid key=value pair in Authorization header: 'Bearer {}'"}}"#,
        server.default_key
    );
    let gateway = answering("403 Forbidden", "application/json", &echo);
    let echoed = cli.run(&["keys", "list", "--url", &gateway]);
    assert_eq!(echoed.code, 1, "{echoed:?}");
    assert!(echoed.stderr.contains("[a key]"), "{echoed:?}");
    cli.assert_no_secret_on_stderr();
}

#[test]
fn list_and_activity_read_every_page_with_all_on_sqlite() {
    every_page(Backend::Sqlite);
}

#[test]
fn list_and_activity_read_every_page_with_all_on_dynamodb() {
    every_page(Backend::DynamoDb);
}

/// 121 keys: more than one page of the API's largest (100).
fn every_page(backend: Backend) {
    let server = Server::start(backend);
    let admin = server.default_key.clone();
    for n in 0..120 {
        let made = server.call(
            "POST",
            "/v1/environments/development/keys",
            &admin,
            Some(json!({"name": format!("worker {n}")})),
        );
        assert_eq!(made.status, 201);
    }
    let cli = Client::new(&server, &admin);
    let all = cli.json(&["keys", "list", "--all"]);
    let ids: Vec<&str> = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 121);
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "newest first, none twice"
    );
    assert_eq!(all["next_cursor"], Value::Null);

    let some = cli.json(&["keys", "list", "--limit", "101"]);
    let first: Vec<&str> = some["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(first, ids[..101]);
    assert!(some["next_cursor"].is_string());

    let table = cli.run(&["keys", "list"]);
    assert_eq!(table.stdout.lines().count(), 21, "a header and 20 keys");
    assert!(table.stderr.contains("--all"), "{}", table.stderr);

    let activity = cli.json(&["activity", "--all"]);
    assert_eq!(activity["entries"].as_array().unwrap().len(), 121);
    let created = cli.json(&["activity", "--all", "--action", "key.created"]);
    assert_eq!(created["entries"].as_array().unwrap().len(), 121);
}

#[test]
fn follow_prints_an_entry_written_after_it_started_on_sqlite() {
    follow(Backend::Sqlite);
}

#[test]
fn follow_prints_an_entry_written_after_it_started_on_dynamodb() {
    follow(Backend::DynamoDb);
}

/// `activity --follow` prints what exists, then picks up a key made after it started, each
/// entry once; the test stops it.
fn follow(backend: Backend) {
    let server = Server::start(backend);
    let mut earlier = Vec::new();
    for name in ["older", "newer"] {
        let made = server.call(
            "POST",
            "/v1/environments/development/keys",
            &server.default_key,
            Some(json!({"name": name})),
        );
        earlier.push(made.json["key"]["id"].as_str().unwrap().to_owned());
    }
    let mut child = keyward()
        .args([
            "activity",
            "--follow",
            "--interval",
            "1",
            "--json",
            "--limit",
            "2",
        ])
        .env("KEYWARD_URL", server.url())
        .env("KEYWARD_API_KEY", &server.default_key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keyward runs");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let next = || {
        let line = received
            .recv_timeout(Duration::from_secs(30))
            .expect("--follow prints within 30 seconds");
        serde_json::from_str::<Value>(&line).expect("one JSON entry per line")
    };
    for id in &earlier {
        let shown = next();
        assert_eq!(
            (shown["action"].as_str(), shown["key_id"].as_str()),
            (Some("key.created"), Some(id.as_str())),
            "the newest two, oldest first; the default key's entry is left out by --limit"
        );
    }
    let made = server.call(
        "POST",
        "/v1/environments/development/keys",
        &server.default_key,
        Some(json!({"name": "late"})),
    );
    let late = made.json["key"]["id"].as_str().unwrap().to_owned();
    let second = next();
    assert_eq!(
        (second["action"].as_str(), second["key_id"].as_str()),
        (Some("key.created"), Some(late.as_str()))
    );
    std::thread::sleep(Duration::from_millis(2_500));
    assert!(
        received.try_recv().is_err(),
        "two more polls print nothing new, and nothing twice"
    );
    child.kill().expect("the test stops --follow");
    let _ = child.wait();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(stderr, "");
}

/// A server on loopback that answers every request with `status` and `body`.
fn answering(status: &str, content_type: &str, body: &str) -> String {
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    url
}

#[test]
fn each_class_of_failure_has_its_exit_status() {
    let server = Server::start(Backend::Sqlite);
    let cli = Client::new(&server, &server.default_key);
    let id = cli.json(&["keys", "create", "--name", "x"])["key"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let reader = cli.json(&["keys", "create", "--name", "reader", "--scope", "keys:read"]);
    let reader = Client::new(&server, reader["secret"].as_str().unwrap());
    let refused = reader.run(&["keys", "revoke", &id, "--yes"]);
    let api = server.call("POST", &format!("/v1/keys/{id}/revoke"), &reader.key, None);
    assert_eq!(api.status, 403);
    assert_eq!(
        (refused.code, refused.stderr),
        (
            1,
            format!(
                "error: {}: {}\n",
                api.code(),
                api.json["error"]["message"].as_str().unwrap()
            )
        )
    );
    assert_eq!(refused.stdout, "");
    let unknown = keyward::domain::Secret::generate(
        &keyward::mint(),
        keyward::domain::Kind::Secret,
        &keyward::domain::EnvName::parse("development").unwrap(),
    );
    let stranger = Client::new(&server, unknown.expose());
    let refused = stranger.run(&["keys", "list"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.starts_with("error: "), "{refused:?}");

    let key_file = std::env::temp_dir().join(format!("keyward-client-key-{}", std::process::id()));
    std::fs::write(&key_file, format!("{}\n", server.default_key)).unwrap();
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let key_file = key_file.display().to_string();
    let bare = cli.run(&["keys"]);
    assert_eq!((bare.code, bare.stdout.as_str()), (2, ""), "{bare:?}");
    assert!(
        bare.stderr.contains("Usage: keyward keys <COMMAND>"),
        "{bare:?}"
    );
    for usage in [
        &["keys", "rotate", &id][..],
        &["keys", "rotate", &id, "--grace", "forever"],
        &["keys", "rotate", &id, "--grace", "P400D"],
        &["keys", "rotate", "nope", "--grace", "1h"],
        &["keys", "get", "../environments"],
        &["keys", "create"],
        &["keys", "create", "--name", "x", "--kind", "public"],
        &["keys", "create", "--name", "x", "--rotate-every", "P30D"],
        &["keys", "policy", &id],
        &["keys", "policy", &id, "--every", "P30D"],
        &[
            "keys", "policy", &id, "--clear", "--every", "P30D", "--grace", "1h", "--secret", "s",
        ],
        &["keys", "ips", &id],
        &["keys", "ips", &id, "--set"],
        &["keys", "ips", &id, "--set", "10.0.0.0/8", "--clear"],
        &["keys", "list", "--limit", "0"],
        &["keys", "list", "--all", "--limit", "5"],
        &["keys", "list", "--env", "Prod"],
        &["keys", "list", "--url", "ftp://127.0.0.1"],
        &["keys", "list", "--api-key-file", "/nonexistent/key"],
        &[
            "keys",
            "list",
            "--api-key-file",
            &key_file,
            "--api-key-stdin",
        ],
        &["keys", "list", "--api-key", "kw_sk_development_x"],
        &["keys", "revoke", &id],
        &["activity", "--interval", "5"],
        &["activity", "--all", "--follow"],
        &["verify"],
        &["verify", "--api-key-stdin"],
    ] {
        let run = cli.run(usage);
        assert_eq!(run.code, 2, "{usage:?}: {run:?}");
        assert!(run.stderr.starts_with("error: "), "{usage:?}: {run:?}");
        assert_eq!(run.stdout, "", "{usage:?}");
    }
    let no_key = keyward()
        .args(["keys", "list", "--url", &server.url()])
        .output()
        .unwrap();
    assert_eq!(no_key.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_key.stderr).contains("KEYWARD_API_KEY"));
    let from_file = keyward()
        .args([
            "keys",
            "list",
            "--url",
            &server.url(),
            "--api-key-file",
            &key_file,
        ])
        .output()
        .unwrap();
    assert_eq!(from_file.status.code(), Some(0), "{from_file:?}");
    let _ = std::fs::remove_file(&key_file);
    let from_stdin = cli.run_with(
        &["keys", "get", &id, "--api-key-stdin"],
        &format!("{}\n", server.default_key),
    );
    assert_eq!(from_stdin.code, 0, "{from_stdin:?}");

    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let unreachable = cli.run(&["keys", "list", "--url", &nowhere]);
    assert_eq!(unreachable.code, 3, "{unreachable:?}");
    assert!(
        unreachable
            .stderr
            .starts_with(&format!("error: cannot reach {nowhere}")),
        "{unreachable:?}"
    );
    let unreachable = cli.run_with(&["verify", "--url", &nowhere], "kw_sk_x");
    assert_eq!(unreachable.code, 3, "{unreachable:?}");

    let failing = answering(
        "503 Service Unavailable",
        "application/json",
        r#"{"error": {"code": "unavailable", "message": "the store is down"}}"#,
    );
    let failed = cli.run(&["keys", "get", &id, "--url", &failing]);
    assert_eq!(failed.code, 3, "{failed:?}");
    assert_eq!(
        failed.stderr,
        format!("error: {failing} answered 503: unavailable: the store is down\n")
    );
    let gateway = answering("502 Bad Gateway", "text/html", "<html>");
    let failed = cli.run(&["activity", "--url", &gateway]);
    assert_eq!(failed.code, 3, "{failed:?}");
    let not_keyward = answering("200 OK", "application/json", "{}");
    let failed = cli.run(&["keys", "list", "--url", &not_keyward]);
    assert_eq!(failed.code, 3, "{failed:?}");
    assert!(failed.stderr.contains("not lead to keyward"), "{failed:?}");
}

/// On a terminal, revoke asks first, and only `yes` revokes. `script` gives the command a
/// terminal, with the test's input typed into it.
#[test]
fn revoke_asks_on_a_terminal() {
    let server = Server::start(Backend::Sqlite);
    let cli = Client::new(&server, &server.default_key);
    for (typed, revoked) in [("no", false), ("yes", true)] {
        let id = cli.json(&["keys", "create", "--name", typed])["key"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let line = format!("{} keys revoke {id}", env!("CARGO_BIN_EXE_keyward"));
        let mut child = Command::new("script")
            .args(["--quiet", "--return", "--command", &line, "/dev/null"])
            .env("KEYWARD_URL", server.url())
            .env("KEYWARD_API_KEY", &server.default_key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("script (util-linux) runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{typed}\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(
            shown.contains(&format!(
                "Revoke {id} ({typed})? It fails on its very next request. [y/N]"
            )),
            "{shown}"
        );
        assert_eq!(out.status.success(), revoked, "{shown}");
        let key = server.call("GET", &format!("/v1/keys/{id}"), &server.default_key, None);
        assert_eq!(key.json["key"]["status"] == "revoked", revoked, "{shown}");
    }
}

/// HTTPS, as to an API Gateway URL: the system's roots decide, and `SSL_CERT_FILE` replaces
/// them. `scripts/tls_proxy.py` is the HTTPS front, with its own authority.
#[test]
fn https_trusts_the_systems_roots() {
    let server = Server::start(Backend::Sqlite);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ./scripts/test, which installs it",
        python.display()
    );
    let folder = std::env::temp_dir().join(format!("keyward-https-front-{}", std::process::id()));
    std::fs::create_dir_all(folder.join("no-roots")).unwrap();
    let port = server.url().rsplit(':').next().unwrap().to_owned();
    let mut front = Command::new(python)
        .arg(root.join("scripts/tls_proxy.py"))
        .arg(&folder)
        .arg(&port)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the HTTPS front starts");
    let mut said = BufReader::new(front.stdout.take().unwrap());
    let mut first = String::new();
    said.read_line(&mut first).unwrap();
    let front_port = first
        .trim()
        .strip_prefix("listening ")
        .expect("the front listens")
        .to_owned();
    std::thread::spawn(move || said.lines().map_while(Result::ok).for_each(drop));
    let url = format!("https://localhost:{front_port}");
    let list = |ca: &Path| {
        keyward()
            .args(["keys", "list", "--url", &url])
            .env("KEYWARD_API_KEY", &server.default_key)
            .env("SSL_CERT_FILE", ca)
            .env("SSL_CERT_DIR", folder.join("no-roots"))
            .output()
            .expect("keyward runs")
    };
    let trusted = list(&folder.join("ca.pem"));
    let untrusted = list(&root.join("shared/src/amazon-roots.pem"));
    let _ = front.kill();
    let _ = front.wait();
    let _ = std::fs::remove_dir_all(&folder);
    assert_eq!(trusted.status.code(), Some(0), "{trusted:?}");
    assert!(String::from_utf8_lossy(&trusted.stdout).contains(&server.default_key_id));
    assert_eq!(untrusted.status.code(), Some(3), "{untrusted:?}");
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");
}

#[test]
fn help_says_where_the_key_comes_from_and_what_each_exit_status_means() {
    let out = keyward().args(["keys", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for command in [
        "list", "create", "get", "rotate", "grace", "revoke", "policy",
    ] {
        assert!(text.contains(&format!("  {command} ")), "{command}: {text}");
    }
    for command in [
        &["keys", "list", "--help"][..],
        &["keys", "create", "--help"],
        &["keys", "rotate", "--help"],
        &["keys", "revoke", "--help"],
        &["activity", "--help"],
    ] {
        let out = keyward().args(command).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0));
        for needed in [
            "KEYWARD_API_KEY",
            "No option takes a key as its value",
            "--api-key-file",
            "KEYWARD_URL",
            "2  a usage error",
            "3  keyward could not be reached",
        ] {
            assert!(text.contains(needed), "{command:?} {needed}: {text}");
        }
    }
    let out = keyward().args(["verify", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("stdin") && text.contains("0 only when the key is valid"),
        "{text}"
    );
}

/// `keys usage` shows a rotated key beside its successor, `--json` is the API's answer, and
/// `keys list` and `keys get` show last use.
#[test]
fn usage_shows_a_rotated_key_beside_its_successor() {
    let server = Server::start_with_env(
        Backend::Sqlite,
        &["--no-schedule"],
        &[("KEYWARD_USAGE_WRITE_EVERY", "1")],
    );
    let cli = Client::new(&server, &server.default_key);
    let created = cli.json(&[
        "keys",
        "create",
        "--name",
        "billing",
        "--scope",
        "orders:read",
    ]);
    let (id, secret) = (
        created["key"]["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    );
    assert_eq!(field(&cli.ok(&["keys", "get", &id]), "last used"), "never");
    for _ in 0..3 {
        assert_eq!(cli.run_with(&["verify"], &secret).code, 0);
    }
    let rotated = cli.json(&["keys", "rotate", &id, "--grace", "24h"]);
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        assert_eq!(cli.run_with(&["verify"], &new_secret).code, 0);
    }
    let total = |answer: &Value| -> u64 {
        answer["hours"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["accepted"].as_u64().unwrap())
            .sum()
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut answer = cli.json(&["keys", "usage", &id]);
    while total(&answer) < 3 && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(200));
        answer = cli.json(&["keys", "usage", &id]);
    }
    let direct = server.call(
        "GET",
        &format!("/v1/keys/{id}/usage"),
        &server.default_key,
        None,
    );
    assert_eq!(answer, direct.json, "--json is the API's answer");
    assert_eq!(total(&answer), 3);

    let new_id = rotated["key"]["id"].as_str().unwrap();
    let mut shown = cli.ok(&["keys", "usage", &id, "--hours", "2"]);
    while !shown.contains("  2  ") && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(200));
        shown = cli.ok(&["keys", "usage", &id, "--hours", "2"]);
    }
    let lines: Vec<&str> = shown.lines().collect();
    assert!(
        lines[1].starts_with(&format!("key        {id}  billing  in grace, ends in 24h")),
        "{shown}"
    );
    assert!(
        lines[2].starts_with(&format!("successor  {new_id}  billing  active")),
        "{shown}"
    );
    assert!(
        lines[4].starts_with(
            "HOUR (UTC)        ACCEPTED  REFUSED  SUCCESSOR ACCEPTED  SUCCESSOR REFUSED"
        ),
        "{shown}"
    );
    assert_eq!(lines.len(), 7, "two hours: {shown}");
    let current = lines[6].split_whitespace().collect::<Vec<_>>();
    assert_eq!(current[2..], ["3", "0", "2", "0"], "{shown}");

    let listed = cli.ok(&["keys", "list"]);
    assert!(
        listed.lines().next().unwrap().contains("  LAST USED  "),
        "{listed}"
    );
    assert_ne!(field(&cli.ok(&["keys", "get", &id]), "last used"), "never");
    for hours in ["0", "169", "a day"] {
        let refused = cli.run(&["keys", "usage", &id, "--hours", hours]);
        assert_eq!(refused.code, 2, "{hours}: {refused:?}");
    }
}
