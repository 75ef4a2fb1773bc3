//! The one test harness (feature `testing`): a store seeded with an environment, the key most
//! tests make and keys in every state, a fresh table on moto's server, an interceptor that
//! counts AWS operations, `on_both_stores!` to run a suite on SQLite and DynamoDB alike, and
//! real API Gateway event fixtures with placeholders filled in, and a real OpenID provider
//! on loopback ([`Provider`]) beside an ES256 issuer played in-process.

#[cfg(feature = "oidc")]
mod issuer;
mod provider;
#[cfg(feature = "oidc")]
pub use issuer::Es256Issuer;
pub use provider::{PROVIDER_VAR, Provider};

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use lambda_http::{Body, Request, Response};

use crate::domain::{
    Actor, EnvName, GracePeriod, Issued, Key, KeyName, Kind, Mint, NewKey, Revocation, Scopes,
    Secret, Timestamp, create_environment, create_key, revoke, rotate,
};
use crate::http::{Context, Settings};
use crate::secrets::{FileSink, PrefixedSink};
use crate::store::{KeyStore, SqliteStore};
use crate::usage::Usage;

/// An in-memory store holding one environment and its default key, with a secrets file of
/// its own.
pub struct Seeded {
    /// The store.
    pub store: SqliteStore,
    /// The environment.
    pub environment: EnvName,
    /// Its default key, with full access.
    pub key: Key,
    /// The default key's secret.
    pub secret: Secret,
    /// The default settings, as a function has them when no variable changes them.
    pub settings: Settings,
    /// Where rotations deliver secrets: [`Seeded::secrets_file`], under the default prefix.
    pub secrets: PrefixedSink,
    /// The secrets file, removed when this is dropped.
    pub secrets_file: PathBuf,
    /// The test's own mint, so that no other test's clock changes its ids.
    pub mint: Mint,
    /// The usage counter of `/v1/verify`, writing to the store.
    pub usage: Usage,
}

impl Drop for Seeded {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.secrets_file);
    }
}

impl Seeded {
    /// What a handler is called with: this store, the default settings and the secrets file.
    pub fn context(&self) -> Context<'_> {
        Context {
            store: &self.store,
            settings: &self.settings,
            secrets: &self.secrets,
            mint: &self.mint,
            usage: &self.usage,
            people: &crate::http::NoPeople,
        }
    }

    /// The same, on another store, such as one that wraps this one.
    pub fn context_on<'a>(&'a self, store: &'a dyn KeyStore) -> Context<'a> {
        Context {
            store,
            settings: &self.settings,
            secrets: &self.secrets,
            mint: &self.mint,
            usage: &self.usage,
            people: &crate::http::NoPeople,
        }
    }

    /// A stored `orders:read` key that expires two hours after `now`, so that an expiry
    /// notice is due on it at `now`.
    pub async fn expiring_key(&self, now: Timestamp) -> crate::domain::Issued {
        self.stored_orders_key(
            "expiring",
            Some(now + chrono::TimeDelta::hours(2)),
            None,
            now,
        )
        .await
    }

    /// A stored `orders:read` key whose policy rotates it every 30 days into `secret_id`,
    /// stored as it is: the prefix rule is not applied, as for a policy written before it.
    pub async fn policy_key(&self, secret_id: &str, now: Timestamp) -> crate::domain::Issued {
        let policy =
            serde_json::json!({"every": "P30D", "grace_period": "24h", "secret_id": secret_id});
        let policy = crate::domain::RotationPolicy::from_json(&policy).expect("a valid policy");
        self.stored_orders_key("billing", None, Some(policy), now)
            .await
    }

    /// A stored `orders:read` key named `worker`, with no expiry and no policy.
    pub async fn worker_key(&self, now: Timestamp) -> crate::domain::Issued {
        self.stored_orders_key("worker", None, None, now).await
    }

    async fn stored_orders_key(
        &self,
        name: &str,
        expires_at: Option<Timestamp>,
        rotation_policy: Option<crate::domain::RotationPolicy>,
        now: Timestamp,
    ) -> crate::domain::Issued {
        let input = NewKey {
            expires_at,
            rotation_policy,
            ..orders_key(name)
        };
        stored_key(&self.store, &self.environment, input, &self.mint, now).await
    }

    /// The actions in a key's activity, newest first.
    pub async fn actions(&self, id: &crate::domain::KeyId) -> Vec<&'static str> {
        let page = crate::store::PageRequest {
            limit: 100,
            after: None,
        };
        self.store
            .key_activity(id, &page)
            .await
            .expect("the activity is readable")
            .items
            .iter()
            .map(|e| e.event.action().as_str())
            .collect()
    }
}

/// A fresh in-memory store with the environment `name` made at `now`.
pub async fn seeded(name: &str, now: Timestamp) -> Seeded {
    let store = SqliteStore::in_memory().expect("an in-memory database");
    let environment = EnvName::parse(name).expect("a valid environment name");
    let mint = crate::mint();
    let issued = create_environment(&environment, Actor::operator("test"), &mint, now);
    store
        .apply(&issued.change)
        .await
        .expect("a fresh store accepts the environment");
    static SEEDED: AtomicUsize = AtomicUsize::new(0);
    let secrets_file = std::env::temp_dir().join(format!(
        "keyward-seeded-{}-{}.json",
        std::process::id(),
        SEEDED.fetch_add(1, Ordering::Relaxed)
    ));
    let settings = Settings::default();
    let secrets = PrefixedSink::new(
        Box::new(FileSink::new(secrets_file.clone())),
        settings.secret_prefix.clone(),
    );
    let usage = Usage::new(
        std::sync::Arc::new(store.clone()),
        crate::usage::DEFAULT_WRITE_EVERY,
    );
    Seeded {
        usage,
        store,
        environment,
        key: issued.key,
        secret: issued.secret,
        settings,
        secrets,
        secrets_file,
        mint,
    }
}

/// The key most tests make: a secret key named `name` with `orders:read`, no expiry and no
/// policy. A test changes what it is about with struct update syntax, `..orders_key(name)`.
pub fn orders_key(name: &str) -> NewKey {
    NewKey {
        name: KeyName::parse(name).expect("a valid name"),
        kind: Kind::Secret,
        scopes: Scopes::parse(&["orders:read"]).expect("a valid scope"),
        expires_at: None,
        rotation_policy: None,
        allowed_ips: Default::default(),
    }
}

/// Creates `input` in `environment` at `now`, by an operator, and stores it.
pub async fn stored_key(
    store: &dyn KeyStore,
    environment: &EnvName,
    input: NewKey,
    mint: &Mint,
    now: Timestamp,
) -> Issued {
    let issued =
        create_key(environment, input, Actor::operator("t"), mint, now).expect("a valid key");
    store
        .apply(&issued.change)
        .await
        .expect("a fresh key is stored");
    issued
}

/// Makes the environment `name` on `store` unless it exists.
async fn environment_on(store: &dyn KeyStore, name: &EnvName, mint: &Mint, now: Timestamp) {
    if store
        .environment(name)
        .await
        .expect("the store answers")
        .is_some()
    {
        return;
    }
    let made = create_environment(name, Actor::operator("t"), mint, now);
    store
        .apply(&made.change)
        .await
        .expect("a fresh environment is stored");
}

/// Keys of `production` in every state a key check must tell apart, and a key of
/// `staging`, another environment: what [`keys_in_every_state`] makes.
pub struct KeysInEveryState {
    /// An active `orders:read` key.
    pub reader: Issued,
    /// A key rotated with no grace: expired.
    pub expired: Issued,
    /// A revoked key.
    pub revoked: Issued,
    /// An active key of `staging`.
    pub staging: Issued,
}

/// Makes [`KeysInEveryState`] on `store` at `now`, and the environments `production` and
/// `staging` unless they exist.
pub async fn keys_in_every_state(
    store: &dyn KeyStore,
    mint: &Mint,
    now: Timestamp,
) -> KeysInEveryState {
    let production = EnvName::parse("production").expect("a valid environment name");
    let staging = EnvName::parse("staging").expect("a valid environment name");
    environment_on(store, &production, mint, now).await;
    environment_on(store, &staging, mint, now).await;
    let reader = stored_key(store, &production, orders_key("reader"), mint, now).await;
    let expired = stored_key(store, &production, orders_key("expiring"), mint, now).await;
    let rotated = rotate(
        &expired.key,
        GracePeriod::NOW,
        Actor::operator("t"),
        mint,
        now,
    )
    .expect("an active key rotates");
    store
        .apply(&rotated.change)
        .await
        .expect("the rotation is stored");
    let revoked = stored_key(store, &production, orders_key("doomed"), mint, now).await;
    let Revocation::Revoked { change, .. } =
        revoke(&revoked.key, Actor::operator("t"), mint, now).expect("an active key is revoked")
    else {
        panic!("an active key that is not the default is revoked")
    };
    store
        .apply(&change)
        .await
        .expect("the revocation is stored");
    let staging = stored_key(store, &staging, orders_key("staging"), mint, now).await;
    KeysInEveryState {
        reader,
        expired,
        revoked,
        staging,
    }
}

/// The operations an AWS client sends, in order, by the name in their `x-amz-target`
/// header (DynamoDB's and Secrets Manager's): an interceptor a test or benchmark adds to a
/// client to count what a run costs.
#[cfg(feature = "aws")]
#[derive(Debug, Default, Clone)]
pub struct Operations(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

#[cfg(feature = "aws")]
impl Operations {
    /// How many of `name` were sent.
    pub fn count(&self, name: &str) -> usize {
        self.sent().iter().filter(|o| *o == name).count()
    }

    /// How many operations were sent.
    pub fn total(&self) -> usize {
        self.sent().len()
    }

    /// Each operation sent, with how often.
    pub fn counts(&self) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for operation in self.sent().iter() {
            *counts.entry(operation.clone()).or_default() += 1;
        }
        counts
    }

    /// Forgets what was sent so far.
    pub fn clear(&self) {
        self.sent().clear();
    }

    fn sent(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.0.lock().expect("no test panicked while holding it")
    }
}

#[cfg(feature = "aws")]
impl aws_smithy_runtime_api::client::interceptors::Intercept for Operations {
    fn name(&self) -> &'static str {
        "operations"
    }

    fn read_before_transmit(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        _: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let target = context
            .request()
            .headers()
            .get("x-amz-target")
            .unwrap_or("?");
        let operation = target.rsplit('.').next().unwrap_or(target).to_owned();
        self.sent().push(operation);
        Ok(())
    }
}

/// A fresh table on the moto server that `./scripts/test` starts, and its name.
#[cfg(feature = "dynamodb")]
pub struct MotoTable {
    /// The store on it.
    pub store: crate::store::DynamoStore,
    /// The table's name, `<prefix>-<process>-<n>`, for a function's `KEYWARD_STORE`.
    pub name: String,
    /// The store's client, for what a test reads or writes past the store.
    pub client: aws_sdk_dynamodb::Client,
}

/// [`MotoTable`] with a client from the standard AWS configuration.
#[cfg(feature = "dynamodb")]
pub async fn moto_table(prefix: &str) -> MotoTable {
    let aws = moto_config().await;
    moto_table_with(prefix, aws_sdk_dynamodb::Client::new(&aws)).await
}

/// [`MotoTable`] on `client`, such as one that counts its calls.
#[cfg(feature = "dynamodb")]
pub async fn moto_table_with(prefix: &str, client: aws_sdk_dynamodb::Client) -> MotoTable {
    static TABLES: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        TABLES.fetch_add(1, Ordering::Relaxed)
    );
    let store = crate::store::DynamoStore::new(client.clone(), &name);
    store.create_table().await.expect("the table is created");
    MotoTable {
        store,
        name,
        client,
    }
}

/// A fresh table on moto, as [`moto_table`] makes it, whose client counts every operation it
/// sends: for a test or a benchmark of what a run costs.
#[cfg(feature = "dynamodb")]
pub async fn counted_moto_table(prefix: &str) -> (MotoTable, Operations) {
    let operations = Operations::default();
    let aws = moto_config().await;
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&aws)
            .interceptor(operations.clone())
            .build(),
    );
    (moto_table_with(prefix, client).await, operations)
}

/// The AWS configuration of the moto server that `./scripts/test` starts, from the
/// environment; a test run without it stops here and says how to run it.
#[cfg(feature = "aws")]
pub async fn moto_config() -> aws_config::SdkConfig {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run ./scripts/test, which starts moto's server for these tests"
    );
    crate::aws::config()
        .await
        .expect("the AWS configuration loads")
}

/// Runs each case on every store named: one module per store, one test per case in it, each
/// case called with a fresh store from that store's expression. Written once, so that a case
/// added to a suite runs on SQLite and DynamoDB alike:
/// `on_both_stores!(sqlite => fresh_sqlite(), dynamodb => fresh_table().await; case_a, case_b);`
/// Cases run on four worker threads; `on_both_stores!(one_thread: ...)` runs them on the
/// test's own thread, for a case that captures what every task logs.
#[macro_export]
macro_rules! on_both_stores {
    (@with [$test:meta] $($store:ident => $fresh:expr),+ ; $($case:ident),+ $(,)?) => {
        $crate::on_both_stores!(@stores [$test] [$($case),+] $($store => $fresh),+);
    };
    (@stores [$test:meta] [$($case:ident),+] $store:ident => $fresh:expr $(, $rest:ident => $rest_fresh:expr)*) => {
        mod $store {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[$test]
                async fn $case() {
                    super::$case($fresh).await
                }
            )+
        }
        $crate::on_both_stores!(@stores [$test] [$($case),+] $($rest => $rest_fresh),*);
    };
    (@stores [$test:meta] [$($case:ident),+]) => {};
    (one_thread: $($rest:tt)+) => {
        $crate::on_both_stores!(@with [tokio::test] $($rest)+);
    };
    ($($rest:tt)+) => {
        $crate::on_both_stores!(@with [tokio::test(flavor = "multi_thread", worker_threads = 4)] $($rest)+);
    };
}

/// Parses an API Gateway event (REST v1 or HTTP API v2) after replacing each `{{NAME}}`.
pub fn event(fixture: &str, vars: &[(&str, &str)]) -> Request {
    let json = vars.iter().fold(fixture.to_owned(), |json, (name, value)| {
        json.replace(&format!("{{{{{name}}}}}"), value)
    });
    lambda_http::request::from_str(&json).expect("the fixture is a valid API Gateway event")
}

/// The request that `keyward serve` (or API Gateway) would hand a handler: `method`, the
/// path parameters, the query, `Authorization: Bearer <key>` and a JSON body.
pub fn api_request(
    method: &str,
    params: &[(&str, &str)],
    query: &[(&str, &str)],
    key: &str,
    body: serde_json::Value,
) -> Request {
    use lambda_http::RequestExt;
    let map = |pairs: &[(&str, &str)]| -> std::collections::HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    lambda_http::http::Request::builder()
        .method(method)
        .uri("/")
        .header("authorization", format!("Bearer {key}"))
        .body(Body::from(body.to_string()))
        .expect("a request")
        .with_path_parameters(map(params))
        .with_query_string_parameters(map(query))
}

/// A response body as JSON.
pub fn body_json(response: &Response<Body>) -> serde_json::Value {
    serde_json::from_slice(response.body().as_ref()).expect("the response body is JSON")
}

/// What one invocation of a Lambda binary gave: its answer, and everything it logged.
#[derive(Debug)]
pub struct Invocation {
    /// The body the function posted as its response (or as its error).
    pub answer: String,
    /// Its standard output and standard error, where Lambda collects logs.
    pub log: String,
}

/// Reads one HTTP/1.1 request from `reader`: its request line and its body, whether sent
/// with a length or in chunks. `None` when the connection closes first.
fn read_request(reader: &mut impl std::io::BufRead) -> Option<(String, Vec<u8>)> {
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|n| *n > 0)?;
    let (mut length, mut chunked) = (0usize, false);
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "transfer-encoding" => chunked = value.trim().eq_ignore_ascii_case("chunked"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(length, 0);
        reader.read_exact(&mut body).ok()?;
    }
    Some((line.trim_end().to_owned(), body))
}

/// Runs a Lambda function's binary as the template's `function` against a stand-in for
/// Lambda's Runtime API on loopback, hands it `event` once, and returns its answer and its
/// whole log. The process gets this process's environment, the variables Lambda sets, and
/// `vars`.
pub fn invoke_lambda(
    function: &str,
    binary: &str,
    vars: &[(&str, &str)],
    event: &str,
) -> Invocation {
    invoke_lambda_with(
        function,
        binary,
        |command| {
            command.envs(vars.iter().copied());
        },
        event,
    )
}

/// [`invoke_lambda`], with the process's environment set by `environment` instead, which can
/// also remove variables that this process has.
pub fn invoke_lambda_with(
    function: &str,
    binary: &str,
    environment: impl FnOnce(&mut std::process::Command),
    event: &str,
) -> Invocation {
    let lambda = LambdaProcess::start(function, binary, environment);
    let answer = lambda.invoke(event);
    // Lambda freezes a function once it answers; here the process is simply ended.
    let log = lambda.stop();
    Invocation {
        answer: answer.unwrap_or_else(|| panic!("the function never answered; its log:\n{log}")),
        log,
    }
}

/// A Lambda function's binary running against a stand-in for Lambda's Runtime and Extensions
/// APIs on loopback: it is handed one event per [`LambdaProcess::invoke`], and it can be
/// frozen, thawed and shut down with the signals Lambda uses. An extension that registers is
/// answered, and its wait for events never ends, as Lambda's does for an internal extension
/// that asks for none.
pub struct LambdaProcess {
    child: std::process::Child,
    events: std::sync::mpsc::Sender<String>,
    answers: std::sync::mpsc::Receiver<String>,
    logs: PathBuf,
    /// Set when a registered extension has asked for its next event, which Lambda's init
    /// waits for as it waits for the runtime's.
    extension_waits: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl LambdaProcess {
    /// Starts `binary` as the template's function named `function` (its
    /// `AWS_LAMBDA_FUNCTION_NAME`, under which its AWS calls are recorded), with this process's
    /// environment as `environment` changes it (it may clear it), then the variables Lambda
    /// sets.
    pub fn start(
        function: &str,
        binary: &str,
        environment: impl FnOnce(&mut std::process::Command),
    ) -> Self {
        use std::net::TcpListener;
        use std::process::{Command, Stdio};
        use std::sync::{Arc, Mutex, mpsc};

        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let address = listener.local_addr().expect("an address");
        let logs = std::env::temp_dir().join(format!(
            "keyward-lambda-{}-{}.log",
            std::process::id(),
            address.port()
        ));
        let log_file = std::fs::File::create(&logs).expect("a log file");
        let mut command = Command::new(binary);
        command.env_remove("KEYWARD_KEY_PREFIX");
        environment(&mut command);
        command
            .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", function)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1");
        let child = command
            .stdout(log_file.try_clone().expect("a second handle"))
            .stderr(log_file)
            .stdin(Stdio::null())
            .spawn()
            .expect("the function starts");
        let (events, queued) = mpsc::channel::<String>();
        let (answer, answers) = mpsc::channel::<String>();
        let queued = Arc::new(Mutex::new(queued));
        let name: Arc<str> = Arc::from(function);
        let extension_waits = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let waits = Arc::clone(&extension_waits);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (answer, queued, name, waits) = (
                    answer.clone(),
                    Arc::clone(&queued),
                    Arc::clone(&name),
                    Arc::clone(&waits),
                );
                std::thread::spawn(move || {
                    serve_runtime_api(stream, &name, &queued, &answer, &waits)
                });
            }
        });
        Self {
            child,
            events,
            answers,
            logs,
            extension_waits,
        }
    }

    /// Hands the function `event` and waits up to a minute for its answer (or its error).
    pub fn invoke(&self, event: &str) -> Option<String> {
        self.events.send(event.to_owned()).ok()?;
        self.answers
            .recv_timeout(std::time::Duration::from_secs(60))
            .ok()
    }

    /// Sends the process a signal by name (`STOP`, `CONT`, `TERM`, `KILL`), as Lambda freezes,
    /// thaws and shuts down an execution environment.
    pub fn signal(&self, name: &str) {
        let sent = std::process::Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -s {name}");
    }

    /// Waits up to `within` for the process to end; `None` if it is still running.
    pub fn wait(&mut self, within: std::time::Duration) -> Option<std::process::ExitStatus> {
        let until = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("the process can be waited on") {
                return Some(status);
            }
            if std::time::Instant::now() >= until {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Whether an extension the function registered now waits for its next event, as
    /// Lambda needs before the function's init is over.
    pub fn extension_waits(&self) -> bool {
        self.extension_waits
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Everything the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.logs).unwrap_or_default()
    }

    /// Ends the process if it still runs and returns its whole log.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for LambdaProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.logs);
    }
}

/// Answers one connection to the stand-in Runtime API: each `next` takes the next queued
/// event (waiting for one), each answer goes to `answer`, an extension's registration is
/// accepted, and its wait for an event never returns.
fn serve_runtime_api(
    stream: std::net::TcpStream,
    function: &str,
    queued: &std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
    answer: &std::sync::mpsc::Sender<String>,
    extension_waits: &std::sync::atomic::AtomicBool,
) {
    use std::io::{BufReader, Write};

    let mut writer = stream.try_clone().expect("a second handle");
    let mut reader = BufReader::new(stream);
    while let Some((line, body)) = read_request(&mut reader) {
        let reply = if line.contains("/invocation/next") {
            let event = queued.lock().map(|q| q.recv());
            let Ok(Ok(event)) = event else { return };
            let deadline = chrono::Utc::now().timestamp_millis() + 60_000;
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: test-request\r\nLambda-Runtime-Deadline-Ms: {deadline}\r\nLambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:{function}\r\nLambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000\r\nContent-Length: {}\r\n\r\n{event}",
                event.len()
            )
        } else if line.contains("/extension/register") {
            let registered = serde_json::json!({"functionName": function, "functionVersion": "1", "handler": "bootstrap"}).to_string();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Extension-Identifier: test-extension\r\nContent-Length: {}\r\n\r\n{registered}",
                registered.len()
            )
        } else if line.contains("/extension/event/next") {
            extension_waits.store(true, std::sync::atomic::Ordering::SeqCst);
            loop {
                std::thread::park();
            }
        } else {
            let _ = answer.send(String::from_utf8_lossy(&body).into_owned());
            "HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}".to_owned()
        };
        let _ = writer.write_all(reply.as_bytes());
    }
}

/// A server on a loopback port, until the process ends, that answers every request with
/// `200` and the JSON that `answer` gives for its request line (`GET /path HTTP/1.1`): how
/// tests publish keys, as GitHub and an identity provider do. Answers its address.
#[cfg(any(feature = "github", feature = "oidc"))]
pub(crate) fn publish_on_loopback(
    answer: impl Fn(&str) -> String + Send + 'static,
) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let addr = listener.local_addr().expect("an address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let read = stream.read(&mut request).unwrap_or(0);
            let request = String::from_utf8_lossy(&request[..read]);
            let body = answer(request.lines().next().unwrap_or_default());
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    addr
}

/// GitHub, as a test plays it: a P-256 key pair made in the test, whose public key a loopback
/// server publishes in GitHub's shape under [`GithubSigner::IDENTIFIER`], and which signs
/// reports as GitHub does. The server counts how often the keys were fetched.
#[cfg(feature = "github")]
pub struct GithubSigner {
    key_pair: aws_lc_rs::signature::EcdsaKeyPair,
    /// Where the keys are published, for `KEYWARD_GITHUB_KEYS_URL`.
    pub url: String,
    fetches: std::sync::Arc<AtomicUsize>,
}

#[cfg(feature = "github")]
impl GithubSigner {
    /// The identifier the key is published under.
    pub const IDENTIFIER: &'static str = "keyward-test-key";

    /// A new key pair, published on a loopback port until the process ends.
    pub fn start() -> Self {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
        use base64::Engine;
        let key_pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).expect("a key pair");
        let der = key_pair.public_key().as_der().expect("a public key in DER");
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(der.as_ref())
        );
        let keys = serde_json::json!({"public_keys": [
            {"key_identifier": Self::IDENTIFIER, "key": pem, "is_current": true}
        ]})
        .to_string();
        let fetches = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = fetches.clone();
        let addr = publish_on_loopback(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            keys.clone()
        });
        let url = format!("http://{addr}/meta/public_keys/secret_scanning");
        Self {
            key_pair,
            url,
            fetches,
        }
    }

    /// The `Github-Public-Key-Signature` of `body`: base64 of an ECDSA P-256 SHA-256
    /// signature in DER.
    pub fn sign(&self, body: &[u8]) -> String {
        use base64::Engine;
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let signature = self.key_pair.sign(&rng, body).expect("a signature");
        base64::engine::general_purpose::STANDARD.encode(signature.as_ref())
    }

    /// How often the keys were fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// Whether `secret` is in `log`: as text, or as the list of byte values that the AWS SDK
/// writes when it logs a request body (`Bytes([107, 119, ...])`).
pub fn log_holds(log: &str, secret: &str) -> bool {
    let bytes: Vec<String> = secret.bytes().map(|b| b.to_string()).collect();
    log.contains(secret) || log.contains(&bytes.join(", "))
}

/// A store where a background write lands first: just before the first change is applied,
/// the expiry notice due on the key it updates is recorded, as a scheduled run would record
/// it between the handler's read and its write. Or, [`Interfering::failing_after`], a store
/// that goes down midway.
pub struct Interfering<'a> {
    inner: &'a dyn KeyStore,
    interfered: std::sync::atomic::AtomicBool,
    mint: &'a Mint,
    /// If set, the changes after this many fail as a store that went down, and nothing
    /// interferes.
    fails_after: Option<usize>,
    applied: AtomicUsize,
}

impl<'a> Interfering<'a> {
    /// Wraps the store of `seeded`, and makes the notice with its mint, so that the notice's
    /// id sorts among the test's own.
    pub fn new(seeded: &'a Seeded) -> Self {
        Self {
            inner: &seeded.store,
            interfered: std::sync::atomic::AtomicBool::new(false),
            mint: &seeded.mint,
            fails_after: None,
            applied: AtomicUsize::new(0),
        }
    }

    /// The store of `seeded` going down after `changes` changes: the next ones fail, as a
    /// store or a function that died between two writes.
    pub fn failing_after(seeded: &'a Seeded, changes: usize) -> Self {
        Self {
            fails_after: Some(changes),
            ..Self::new(seeded)
        }
    }
}

#[async_trait::async_trait]
impl crate::store::KeyLookup for Interfering<'_> {
    async fn key_by_hash(
        &self,
        hash: &crate::domain::KeyHash,
    ) -> Result<Option<Key>, crate::store::StoreError> {
        self.inner.key_by_hash(hash).await
    }
}

#[async_trait::async_trait]
impl crate::store::UsageStore for Interfering<'_> {
    async fn add_usage(
        &self,
        tally: &crate::domain::UsageTally,
    ) -> Result<(), crate::store::StoreError> {
        self.inner.add_usage(tally).await
    }
    async fn hourly_usage(
        &self,
        environment: &EnvName,
        id: &crate::domain::KeyId,
        since: Timestamp,
    ) -> Result<Vec<crate::domain::HourlyUsage>, crate::store::StoreError> {
        self.inner.hourly_usage(environment, id, since).await
    }
    async fn seen_addresses(
        &self,
        environment: &EnvName,
        id: &crate::domain::KeyId,
        since: Timestamp,
    ) -> Result<Vec<(Timestamp, std::net::IpAddr)>, crate::store::StoreError> {
        self.inner.seen_addresses(environment, id, since).await
    }
    async fn last_use(
        &self,
        environment: &EnvName,
        ids: &[&crate::domain::KeyId],
    ) -> Result<
        std::collections::HashMap<crate::domain::KeyId, crate::domain::LastUse>,
        crate::store::StoreError,
    > {
        self.inner.last_use(environment, ids).await
    }
    async fn record_last_use(
        &self,
        owner: &crate::store::UsageOwner,
        last: crate::domain::LastUse,
    ) -> Result<(), crate::store::StoreError> {
        self.inner.record_last_use(owner, last).await
    }
}

#[async_trait::async_trait]
impl KeyStore for Interfering<'_> {
    async fn key(
        &self,
        id: &crate::domain::KeyId,
    ) -> Result<Option<Key>, crate::store::StoreError> {
        self.inner.key(id).await
    }
    async fn environment(
        &self,
        name: &EnvName,
    ) -> Result<Option<crate::domain::Environment>, crate::store::StoreError> {
        self.inner.environment(name).await
    }
    async fn is_empty(&self) -> Result<bool, crate::store::StoreError> {
        self.inner.is_empty().await
    }
    async fn keys(
        &self,
        environment: &EnvName,
        page: &crate::store::PageRequest,
    ) -> Result<crate::store::Page<Key>, crate::store::StoreError> {
        self.inner.keys(environment, page).await
    }
    async fn key_activity(
        &self,
        id: &crate::domain::KeyId,
        page: &crate::store::PageRequest,
    ) -> Result<crate::store::Page<crate::domain::ActivityEntry>, crate::store::StoreError> {
        self.inner.key_activity(id, page).await
    }
    async fn environment_activity(
        &self,
        environment: &EnvName,
        filter: &crate::store::ActivityFilter,
        page: &crate::store::PageRequest,
    ) -> Result<crate::store::Page<crate::domain::ActivityEntry>, crate::store::StoreError> {
        self.inner
            .environment_activity(environment, filter, page)
            .await
    }
    async fn due_keys(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Key>, crate::store::StoreError> {
        self.inner.due_keys(now, limit).await
    }
    async fn postpone(&self, key: &Key, until: Timestamp) -> Result<(), crate::store::StoreError> {
        self.inner.postpone(key, until).await
    }
    async fn apply(&self, change: &crate::domain::Change) -> Result<(), crate::store::StoreError> {
        if let Some(changes) = self.fails_after {
            if self.applied.fetch_add(1, Ordering::SeqCst) >= changes {
                return Err(crate::store::StoreError::Backend(
                    "the store went down".into(),
                ));
            }
            return self.inner.apply(change).await;
        }
        let first = !self
            .interfered
            .swap(true, std::sync::atomic::Ordering::SeqCst);
        let updated = change.keys.iter().find_map(|write| match write {
            crate::domain::KeyWrite::Update { key, .. } => Some(key.id.clone()),
            crate::domain::KeyWrite::Insert(_) => None,
        });
        if let (true, Some(id)) = (first, updated) {
            let stored = self.inner.key(&id).await?.expect("the updated key exists");
            let notice = crate::domain::expiry_notice(
                &stored,
                Actor::schedule("interfering"),
                self.mint,
                change.activity.at,
            )
            .expect("the key has an expiry notice due");
            self.inner.apply(&notice).await?;
        }
        self.inner.apply(change).await
    }
}
