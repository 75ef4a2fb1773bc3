//! Throughput of `POST /v1/verify` on a valid key against the real `keyward serve` binary on
//! 127.0.0.1: a fixed number of requests over a fixed number of keep-alive connections.
//!
//! `cargo bench -p keyward-cli --bench verify_load` (or `-- REQUESTS CONNECTIONS`).
//! It sends traffic only to loopback, and stops after the count or after 120 seconds.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

const TIME_CAP: Duration = Duration::from_secs(120);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn worker(addr: String, body: Bytes, count: usize, deadline: Instant) -> Vec<Duration> {
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("the server accepts");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1");
    tokio::spawn(conn);
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
    latencies
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let requests = args.first().copied().unwrap_or(20_000);
    let connections = args.get(1).copied().unwrap_or(16);
    let dir = std::env::temp_dir().join(format!("keyward-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a folder");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["serve", "--no-schedule", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.join("bench.db"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("keyward serve starts");
    let (mut key, mut addr) = (String::new(), String::new());
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.expect("a line");
        if line.starts_with("kw_") {
            key = line;
        } else if let Some(a) = line.strip_prefix("keyward is listening on http://") {
            addr = a.to_owned();
            break;
        }
    }
    let body =
        Bytes::from(serde_json::json!({"key": key, "environment": "development"}).to_string());
    let deadline = Instant::now() + TIME_CAP;
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|i| {
            let count = requests / connections + usize::from(i < requests % connections);
            tokio::spawn(worker(addr.clone(), body.clone(), count, deadline))
        })
        .collect();
    let mut latencies = Vec::with_capacity(requests);
    for w in workers {
        latencies.extend(w.await.expect("a worker"));
    }
    let elapsed = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    latencies.sort();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("POST /v1/verify, valid key, SQLite store, release build");
    println!(
        "requests: {} over {connections} keep-alive connections, {cores} cores (client and server share them)",
        latencies.len()
    );
    println!(
        "requests/s: {:.0}",
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "median: {:?}  p99: {:?}  max: {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );
}
