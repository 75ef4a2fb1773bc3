//! Behind an egress proxy that inspects TLS, AWS endpoints present the proxy's certificates.
//! The authorizer trusts only Amazon's roots by default, so there it cannot read its table;
//! with `KEYWARD_TLS_ROOTS=system` and the proxy's authority in `SSL_CERT_FILE`, it can. The
//! real binary runs against a stand-in for Lambda's Runtime API, with `HTTPS_PROXY` naming
//! `scripts/tls_proxy.py` on loopback, which answers each DynamoDB call it decrypts with `{}`
//! (no such item), so a key that reaches the table is refused as unknown.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use keyward::domain::{EnvName, Kind, Secret};
use keyward::testing::{Invocation, invoke_lambda_with};

const DYNAMODB: &str = "dynamodb.us-east-1.amazonaws.com";

/// The proxy, and every line it has printed since it started listening.
struct Proxy {
    child: Child,
    port: u16,
    folder: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

impl Proxy {
    fn start() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let python = root.join(".venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run ./scripts/test, which installs it",
            python.display()
        );
        let folder = std::env::temp_dir().join(format!("keyward-tls-proxy-{}", std::process::id()));
        std::fs::create_dir_all(folder.join("no-other-roots")).unwrap();
        let mut child = Command::new(python)
            .arg(root.join("scripts/tls_proxy.py"))
            .arg(&folder)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the proxy starts");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        let port = first
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the proxy did not start: {first:?}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let collected = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                collected.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            port,
            folder,
            lines,
        }
    }

    /// Takes the lines printed so far, waiting up to ten seconds for one that is `last`:
    /// the proxy prints from its own process, so its lines can come after the function has
    /// answered.
    fn take_until(&self, last: &str) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut seen = Vec::new();
        loop {
            seen.append(&mut self.lines.lock().unwrap());
            if seen.iter().any(|l| l == last) || std::time::Instant::now() > deadline {
                return seen;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// One check of a well-formed key that no table holds, through the proxy, with `roots` and
/// `ca` as `SSL_CERT_FILE`.
fn check(proxy: &Proxy, roots: Option<&str>, ca: &Path) -> Invocation {
    let production = EnvName::parse("production").unwrap();
    let key = Secret::generate(&keyward::mint(), Kind::Secret, &production);
    let event = include_str!("../fixtures/token.json")
        .replace("{{TOKEN}}", key.expose())
        .replace("{{METHOD}}", "GET")
        .replace("{{PATH}}", "/orders");
    let environment = |command: &mut Command| {
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let aws = name.starts_with("AWS_") && !name.starts_with("AWS_LAMBDA_");
            if aws || name.eq_ignore_ascii_case("no_proxy") {
                command.env_remove(name.as_ref());
            }
        }
        command
            .env("KEYWARD_STORE", "dynamodb:keyward")
            .env("KEYWARD_ENVIRONMENT", "production")
            .env("KEYWARD_ROUTE_SCOPES", "{}")
            .env("KEYWARD_UNLISTED_ROUTES", "allow")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "ASIAEXAMPLEEXAMPLE00")
            .env("AWS_SECRET_ACCESS_KEY", "tls-roots-example")
            .env("AWS_MAX_ATTEMPTS", "1")
            .env("HTTPS_PROXY", format!("http://127.0.0.1:{}", proxy.port))
            .env("SSL_CERT_FILE", ca)
            .env("SSL_CERT_DIR", proxy.folder.join("no-other-roots"));
        match roots {
            Some(roots) => command.env("KEYWARD_TLS_ROOTS", roots),
            None => command.env_remove("KEYWARD_TLS_ROOTS"),
        };
    };
    invoke_lambda_with(
        "Authorizer",
        env!("CARGO_BIN_EXE_authorizer"),
        environment,
        &event,
    )
}

#[test]
fn behind_a_tls_inspecting_proxy_only_the_systems_roots_reach_the_table() {
    let proxy = Proxy::start();
    let proxy_ca = proxy.folder.join("ca.pem");
    let refused = format!("refused {DYNAMODB}");
    let read = format!("request {DYNAMODB} DynamoDB_20120810.GetItem");

    let amazon = check(&proxy, None, &proxy_ca);
    let seen = proxy.take_until(&refused);
    assert!(
        seen.contains(&refused) && !seen.iter().any(|l| l.starts_with("request")),
        "with Amazon's roots the client refuses the proxy's certificate: {seen:?}"
    );
    assert!(
        !amazon.answer.contains(r#""errorMessage":"Unauthorized""#),
        "a table that cannot be read is an error, never a 401: {}",
        amazon.answer
    );

    let other_ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/src/amazon-roots.pem");
    let elsewhere = check(&proxy, Some("system"), &other_ca);
    let seen = proxy.take_until(&refused);
    assert!(
        seen.contains(&refused) && !seen.iter().any(|l| l.starts_with("request")),
        "the system's roots still verify: without the proxy's authority its certificate is refused: {seen:?}"
    );
    assert!(
        !elsewhere
            .answer
            .contains(r#""errorMessage":"Unauthorized""#)
    );

    let system = check(&proxy, Some("system"), &proxy_ca);
    let seen = proxy.take_until(&read);
    assert!(
        seen.contains(&format!("handshake {DYNAMODB}")) && seen.contains(&read),
        "with the system's roots the client trusts the proxy's authority: {seen:?}\n{}",
        system.log
    );
    assert!(
        system.answer.contains(r#""errorMessage":"Unauthorized""#),
        "the key reached the table, which does not hold it: {}\n{}",
        system.answer,
        system.log
    );
}
