//! Throughput of `POST /v1/verify` on a valid key against the real `keyward serve` binary on
//! 127.0.0.1, beside a bare hyper server that reads the body and answers a constant JSON: the
//! floor that any HTTP service on this machine stands on. Both get the same fixed number of
//! requests over the same number of keep-alive connections, in interleaved rounds (the order
//! alternating), and the bench prints each one's rate and the ratio between them.
//!
//! `cargo bench -p keyward-cli --bench verify_load` (or `-- REQUESTS CONNECTIONS ROUNDS`).
//! It sends traffic only to loopback, and stops after the count or after 120 seconds. The
//! server runs as a user runs it, logging at `info`, and is asked what `wrk` asked in
//! BENCHMARKS.md: a valid key with a scope.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

const TIME_CAP: Duration = Duration::from_secs(120);

/// The argument that makes this bench's own binary the bare server.
const BARE: &str = "--bare-server";

/// The bare server's answer: the shape and about the size of keyward's.
const BARE_ANSWER: &[u8] = br#"{"valid":true,"code":"valid","key_id":"key_0000000000000000000000","environment":"development","kind":"secret","scopes":["*"]}"#;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Serves every request on 127.0.0.1 with [`BARE_ANSWER`], after reading its whole body.
async fn bare_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    println!(
        "listening on http://{}",
        listener.local_addr().expect("an address")
    );
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    let _body = req.into_body().collect().await?.to_bytes();
                    let response = hyper::Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(BARE_ANSWER)))
                        .expect("a response");
                    Ok::<_, hyper::Error>(response)
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// One server under load: its process, address, connections and what they measured.
struct Target {
    name: &'static str,
    child: Child,
    addr: String,
    senders: Vec<SendRequest<Full<Bytes>>>,
    latencies: Vec<Duration>,
    busy: Duration,
}

impl Target {
    /// Starts `command`, reads its address (and a printed key, if any) from its output, and
    /// opens `connections` keep-alive connections to it.
    async fn start(
        name: &'static str,
        mut command: Command,
        log: &Path,
        connections: usize,
    ) -> (Self, String) {
        // The server logs as it does for a user, a line per request, into a file as wrk's
        // measurement in BENCHMARKS.md had it: a reader of a pipe here would be a third
        // process on the two cores, charged to whichever server logs more.
        let log = std::fs::File::create(log).expect("a log file");
        let mut child = command
            .env_remove("KEYWARD_KEY_PREFIX")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("the server starts");
        let (mut key, mut addr) = (String::new(), String::new());
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        for line in lines.by_ref() {
            let line = line.expect("a line");
            if line.starts_with("kw_") {
                key = line;
            } else if let Some(a) = line.split_once("listening on http://") {
                addr = a.1.to_owned();
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        let mut senders = Vec::with_capacity(connections);
        for _ in 0..connections {
            let stream = tokio::net::TcpStream::connect(&addr)
                .await
                .expect("the server accepts");
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("HTTP/1.1");
            tokio::spawn(conn);
            senders.push(sender);
        }
        let target = Self {
            name,
            child,
            addr,
            senders,
            latencies: Vec::new(),
            busy: Duration::ZERO,
        };
        (target, key)
    }

    /// Sends `requests` requests with `body`, spread over every connection at once.
    async fn round(&mut self, body: &Bytes, requests: usize, deadline: Instant) {
        let connections = self.senders.len();
        let started = Instant::now();
        let workers: Vec<_> = self
            .senders
            .drain(..)
            .enumerate()
            .map(|(i, sender)| {
                let count = requests / connections + usize::from(i < requests % connections);
                tokio::spawn(send(
                    sender,
                    self.addr.clone(),
                    body.clone(),
                    count,
                    deadline,
                ))
            })
            .collect();
        for worker in workers {
            let (sender, latencies) = worker.await.expect("a worker");
            self.senders.push(sender);
            self.latencies.extend(latencies);
        }
        self.busy += started.elapsed();
    }

    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.busy.as_secs_f64()
    }

    fn report(&mut self) {
        self.latencies.sort();
        println!(
            "{:<40} {:>7.0} requests/s  median {:>9.3?}  p99 {:>9.3?}  ({} requests)",
            self.name,
            self.rate(),
            percentile(&self.latencies, 0.5),
            percentile(&self.latencies, 0.99),
            self.latencies.len()
        );
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn send(
    mut sender: SendRequest<Full<Bytes>>,
    addr: String,
    body: Bytes,
    count: usize,
    deadline: Instant,
) -> (SendRequest<Full<Bytes>>, Vec<Duration>) {
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        if Instant::now() > deadline {
            break;
        }
        let request = hyper::Request::post("/v1/verify")
            .header("host", &addr)
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .expect("a request");
        let started = Instant::now();
        let response = sender.send_request(request).await.expect("an answer");
        let status = response.status();
        let answer = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        latencies.push(started.elapsed());
        assert_eq!(status, 200);
        assert!(
            answer.starts_with(br#"{"valid":true"#),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    (sender, latencies)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == BARE) {
        return bare_server().await;
    }
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let requests = args.first().copied().unwrap_or(20_000);
    let connections = args.get(1).copied().unwrap_or(16);
    let rounds = args.get(2).copied().unwrap_or(10).max(1);
    let dir = std::env::temp_dir().join(format!("keyward-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a folder");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_keyward"));
    serve
        .args(["serve", "--no-schedule", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.join("bench.db"));
    let (mut keyward, key) = Target::start(
        "keyward serve, SQLite store",
        serve,
        &dir.join("serve.log"),
        connections,
    )
    .await;
    let mut bare = Command::new(std::env::current_exe().expect("this bench"));
    bare.arg(BARE);
    let (mut floor, _) = Target::start(
        "bare hyper 1 server",
        bare,
        &dir.join("bare.log"),
        connections,
    )
    .await;
    let body = Bytes::from(
        serde_json::json!({"key": key, "environment": "development", "scopes": ["keys:read"]})
            .to_string(),
    );
    let deadline = Instant::now() + TIME_CAP;
    for round in 0..rounds {
        let share = requests / rounds + usize::from(round < requests % rounds);
        let (first, second) = if round % 2 == 0 {
            (&mut keyward, &mut floor)
        } else {
            (&mut floor, &mut keyward)
        };
        first.round(&body, share, deadline).await;
        second.round(&body, share, deadline).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "POST /v1/verify, valid key, bench profile; {connections} keep-alive connections, {rounds} interleaved rounds, {cores} cores shared by client and servers"
    );
    keyward.report();
    floor.report();
    println!(
        "ratio: the bare server answers {:.2}x as many requests per second as keyward serve",
        floor.rate() / keyward.rate()
    );
}
