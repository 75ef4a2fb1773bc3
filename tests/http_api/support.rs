//! The harness: `keyward serve` as a child process on a free port with a fresh database, and a
//! small blocking HTTP/1.1 client that records every exchange so tests can scan them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

/// One request and its answer, as sent and received.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub body: String,
}

/// An answer, with its body parsed as JSON (`Null` when it is not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub json: Value,
}

impl Reply {
    /// The error code of an error answer.
    pub fn code(&self) -> &str {
        self.json["error"]["code"]
            .as_str()
            .unwrap_or("<no error code>")
    }
}

/// Which store `keyward serve` runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file.
    Sqlite,
    /// A fresh DynamoDB table on the endpoint that `./scripts/test` starts (moto's server).
    DynamoDb,
}

/// A running `keyward serve` with its own store, and its own folder for logs.
pub struct Server {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    store: String,
    backend: Backend,
    options: Vec<String>,
    env: Vec<(String, String)>,
    /// The default key of `development`, printed once at start.
    pub default_key: String,
    /// Its id.
    pub default_key_id: String,
    /// What serve printed before it listened, secrets aside.
    pub banner: Vec<String>,
    exchanges: Mutex<Vec<Exchange>>,
}

fn fresh_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("keyward-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    dir
}

/// A `serve` process just started, and what it printed before it listened.
struct Started {
    child: Child,
    addr: SocketAddr,
    default_key: Option<String>,
    default_key_id: Option<String>,
    banner: Vec<String>,
}

/// Starts `keyward serve` on `store`, logging at debug level to `serve.log` in `dir` (appended
/// to, so that a restart keeps the earlier log), and reads what it prints until it listens.
fn spawn(
    dir: &std::path::Path,
    store: &str,
    backend: Backend,
    options: &[String],
    env: &[(String, String)],
) -> Started {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("serve.log"))
        .expect("a log file");
    let secrets_file = dir.join("secrets.json").display().to_string();
    let file_option = match backend {
        Backend::Sqlite => vec!["--secrets-file", &secrets_file],
        Backend::DynamoDb => Vec::new(),
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["serve", "--listen", "127.0.0.1:0", "--store", store])
        .args(file_option)
        .args(options)
        .env_remove("KEYWARD_KEY_PREFIX")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "debug")
        .env("USER", "test-operator")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("keyward serve starts");
    let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let (mut default_key, mut default_key_id, mut addr) = (None, None, None);
    let mut banner = Vec::new();
    for line in stdout.lines() {
        let line = line.expect("serve prints lines");
        // The default key is the line that is one word, of the deployment's prefix.
        if line.contains("_sk_development_") && !line.contains(' ') {
            default_key = Some(line);
            continue;
        }
        if let Some(rest) = line.split("default key ").nth(1) {
            default_key_id = rest.split_whitespace().next().map(str::to_owned);
        } else if let Some(a) = line.strip_prefix("keyward is listening on http://") {
            addr = Some(a.parse().expect("a socket address"));
            break;
        }
        banner.push(line);
    }
    Started {
        child,
        addr: addr.expect("serve says where it listens"),
        default_key,
        default_key_id,
        banner,
    }
}

fn table_name(dir: &std::path::Path) -> String {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a folder name");
    name.replace("keyward-test", "e2e")
}

impl Server {
    /// Starts `keyward serve --listen 127.0.0.1:0` on a fresh store, logging at debug level,
    /// with its scheduled rotation off, so that only the test changes keys.
    pub fn start(backend: Backend) -> Self {
        Self::start_with(backend, &["--no-schedule"])
    }

    /// Starts `serve` on a fresh store with these options, its scheduled rotation on unless
    /// they turn it off. On SQLite, rotations deliver secrets to a file in the server's
    /// folder; on DynamoDB, to Secrets Manager on the same endpoint.
    pub fn start_with(backend: Backend, options: &[&str]) -> Self {
        Self::start_with_env(backend, options, &[])
    }

    /// [`Server::start_with`], with these variables set for `serve` too.
    pub fn start_with_env(backend: Backend, options: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = fresh_dir();
        let store = match backend {
            Backend::Sqlite => format!("sqlite:{}", dir.join("keyward.db").display()),
            Backend::DynamoDb => {
                assert!(
                    std::env::var_os("AWS_ENDPOINT_URL").is_some(),
                    "AWS_ENDPOINT_URL is not set: run ./scripts/test, which starts moto's server for these tests"
                );
                let table = table_name(&dir);
                let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
                    .args(["table", "create", &table])
                    .output()
                    .expect("keyward runs");
                assert!(
                    out.status.success(),
                    "table create: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                format!("dynamodb:{table}")
            }
        };
        let options: Vec<String> = options.iter().map(|o| (*o).to_owned()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let started = spawn(&dir, &store, backend, &options, &env);
        Self {
            child: started.child,
            addr: started.addr,
            dir,
            store,
            backend,
            options,
            env,
            default_key: started
                .default_key
                .expect("serve prints the first default key"),
            default_key_id: started
                .default_key_id
                .expect("serve names the first default key"),
            banner: started.banner,
            exchanges: Mutex::new(Vec::new()),
        }
    }

    /// Stops `serve` with SIGTERM, as a service manager does, waits for it to end (it must end
    /// well), and starts it again on the same store with the same options.
    pub fn restart(&mut self) {
        let sent = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let status = self.child.wait().expect("serve ends");
        assert!(
            status.success(),
            "serve ended with {status}:\n{}",
            self.logs()
        );
        let started = spawn(
            &self.dir,
            &self.store,
            self.backend,
            &self.options,
            &self.env,
        );
        self.child = started.child;
        self.addr = started.addr;
    }

    /// Sends a request with the given headers and raw body.
    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut stream = TcpStream::connect(self.addr).expect("the server accepts");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .expect("the request is sent");
        // A server may refuse an oversized body before reading it all; that is not an error here.
        let _ = stream.write_all(body);
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("the answer is read");
        let raw = String::from_utf8(raw).expect("the answer is UTF-8");
        let (headers, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
        let status = headers
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        crate::contract::check(method, path, status, body);
        self.exchanges.lock().unwrap().push(Exchange {
            method: method.to_owned(),
            path: path.to_owned(),
            status,
            body: body.to_owned(),
        });
        Reply {
            status,
            headers: headers.to_owned(),
            json: serde_json::from_str(body).unwrap_or(Value::Null),
        }
    }

    /// Sends a request with `Authorization: Bearer <key>` and a JSON body.
    pub fn call(&self, method: &str, path: &str, key: &str, body: Option<Value>) -> Reply {
        let bearer = format!("Bearer {key}");
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        self.send(
            method,
            path,
            &[
                ("Authorization", &bearer),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
    }

    /// Every exchange so far.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.exchanges.lock().unwrap().clone()
    }

    /// Everything the server has logged.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).expect("the log is readable")
    }

    /// Everything the store holds, as text: the SQLite file with its write-ahead log, or
    /// every item of the DynamoDB table, read with a full scan.
    pub fn stored_text(&self) -> String {
        match self.store.split_once(':') {
            Some(("dynamodb", table)) => {
                let runtime = tokio::runtime::Runtime::new().expect("a runtime");
                runtime.block_on(async {
                    let config = aws_config::load_from_env().await;
                    let client = aws_sdk_dynamodb::Client::new(&config);
                    let mut text = String::new();
                    let mut start = None;
                    loop {
                        let out = client
                            .scan()
                            .table_name(table)
                            .set_exclusive_start_key(start)
                            .send()
                            .await
                            .expect("a scan");
                        for item in out.items() {
                            text.push_str(&format!("{item:?}\n"));
                        }
                        match out.last_evaluated_key {
                            Some(last) => start = Some(last),
                            None => return text,
                        }
                    }
                })
            }
            _ => ["keyward.db", "keyward.db-wal"]
                .iter()
                .filter_map(|f| std::fs::read(self.dir.join(f)).ok())
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .collect(),
        }
    }

    /// The base URL the server listens on, for the `keyward` client's `--url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The store, as `--store` names it.
    pub fn store(&self) -> &str {
        &self.store
    }

    /// The current value of the secret `secret_id` that rotations deliver to: in the secrets
    /// file on SQLite, in Secrets Manager on the same endpoint on DynamoDB; `None` while there
    /// is none.
    pub fn current_secret(&self, secret_id: &str) -> Option<Value> {
        match self.backend {
            Backend::Sqlite => std::fs::read(self.secrets_file())
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
                .map(|file| file[secret_id]["current"]["value"].clone())
                .filter(|v| !v.is_null()),
            Backend::DynamoDb => {
                let runtime = tokio::runtime::Runtime::new().expect("a runtime");
                runtime.block_on(async {
                    let config = aws_config::load_from_env().await;
                    let client = aws_sdk_secretsmanager::Client::new(&config);
                    let out = client
                        .get_secret_value()
                        .secret_id(secret_id)
                        .version_stage("AWSCURRENT")
                        .send()
                        .await
                        .ok()?;
                    serde_json::from_str(out.secret_string()?).ok()
                })
            }
        }
    }

    /// The file that scheduled rotation delivers secrets to on SQLite.
    pub fn secrets_file(&self) -> PathBuf {
        self.dir.join("secrets.json")
    }

    /// Runs another `keyward` command on the same store.
    pub fn keyward(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_keyward"))
            .env_remove("KEYWARD_KEY_PREFIX")
            .args(args)
            .args(["--store", &self.store])
            .output()
            .expect("keyward runs")
    }

    /// Makes an environment with the CLI and returns its default key.
    pub fn create_environment(&self, name: &str) -> String {
        let out = self.keyward(&["env", "create", name, "--json"]);
        assert!(
            out.status.success(),
            "env create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: Value =
            serde_json::from_slice(&out.stdout).expect("env create --json prints JSON");
        assert_eq!(json["environment"], name);
        json["secret"].as_str().expect("a secret").to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
