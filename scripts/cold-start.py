"""Measures Lambda initialisation: from process start to the first call to the Runtime API's
`next` endpoint, against a minimal Runtime API stand-in on 127.0.0.1.

usage (no AWS endpoint is needed: nothing calls AWS before the first event):
    cargo build --release -p authorizer --example hello_bare --example hello_runtime
    cargo build --release -p authorizer --bin authorizer
    python3 scripts/cold-start.py [RUNS]

The examples build with the crate's dev-dependencies, whose features (SQLite among them) a
build of examples and binary together would give the authorizer too; building the binary by
itself, last, gives it only its own, as scripts/package does.

It runs each variant RUNS times (default 30), interleaved, and prints the median and the
spread of each, their ratios to the bare hello world (no logging set-up) and to the hello
world with keyward's logging set-up, and the binaries' sizes. Each process is killed as soon
as it asks for its first event.
"""

import http.server
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

RELEASE = os.path.join(os.path.dirname(__file__), "..", "target", "release")
AUTHORIZER = os.path.join(RELEASE, "authorizer")
HELLO = os.path.join(RELEASE, "examples", "hello_runtime")
BARE = os.path.join(RELEASE, "examples", "hello_bare")
# The operator's switch back to the system's roots (shared/src/aws.rs).
SYSTEM_ROOTS = {"KEYWARD_TLS_ROOTS": "system"}
# Without these, keyward's client builds the SDK's whole default credential chain.
NO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None}


class RuntimeApi(http.server.BaseHTTPRequestHandler):
    first_next = None
    seen = threading.Event()

    def do_GET(self):
        if self.path.endswith("/runtime/invocation/next"):
            RuntimeApi.first_next = time.perf_counter()
            RuntimeApi.seen.set()
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args):
        pass


def measure(command, env):
    RuntimeApi.seen.clear()
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ok = RuntimeApi.seen.wait(timeout=10)
    process.kill()
    process.wait()
    if not ok:
        raise SystemExit(f"{command[0]} never asked for an event")
    return (RuntimeApi.first_next - started) * 1000


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    base.update(
        AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{server.server_address[1]}",
        AWS_LAMBDA_FUNCTION_NAME="cold-start",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="128",
        AWS_LAMBDA_FUNCTION_VERSION="1",
        KEYWARD_ENVIRONMENT="production",
        KEYWARD_ROUTE_SCOPES='{"GET /orders": "orders:read"}',
        AWS_REGION=base.get("AWS_REGION", "us-east-1"),
        # Lambda gives every function its role's credentials in these three variables.
        AWS_ACCESS_KEY_ID="ASIAEXAMPLEEXAMPLE00",
        AWS_SECRET_ACCESS_KEY="cold-start-example-secret",
        AWS_SESSION_TOKEN="cold-start-example-token",
    )
    variants = {
        "bare hello world (lambda_runtime, no logging set-up)": ([BARE], {}),
        "hello world with keyward's logging set-up": ([HELLO], {}),
        "authorizer, DynamoDB client (Amazon's roots, as on Lambda)": (
            [AUTHORIZER],
            {"KEYWARD_STORE": "dynamodb:keyward"},
        ),
        "authorizer, DynamoDB client, no credentials in the environment (the whole default chain)": (
            [AUTHORIZER],
            {"KEYWARD_STORE": "dynamodb:keyward", **NO_CREDENTIALS},
        ),
        "authorizer, DynamoDB client, the system's roots (KEYWARD_TLS_ROOTS=system)": (
            [AUTHORIZER],
            {"KEYWARD_STORE": "dynamodb:keyward", **SYSTEM_ROOTS},
        ),
        # provided.al2023 keeps its roots in one bundle file; Debian adds a folder of ~150 files.
        "authorizer, DynamoDB client, the system's roots from one bundle file": (
            [AUTHORIZER],
            {
                "KEYWARD_STORE": "dynamodb:keyward",
                "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
                "SSL_CERT_DIR": "/nonexistent",
                **SYSTEM_ROOTS,
            },
        ),
    }
    def environment(extra):
        env = {**base, **extra}
        return {k: v for k, v in env.items() if v is not None}

    times = {name: [] for name in variants}
    for name, (command, extra) in variants.items():
        measure(command, environment(extra))
    for _ in range(runs):
        for name, (command, extra) in variants.items():
            times[name].append(measure(command, environment(extra)))
    bare = statistics.median(times["bare hello world (lambda_runtime, no logging set-up)"])
    hello = statistics.median(times["hello world with keyward's logging set-up"])
    print(f"{runs} runs each, interleaved, {os.cpu_count()} cores")
    print("| binary | median init | p10 to p90 | ratio to the bare hello world | ratio to the hello world with logging |")
    print("|---|---|---|---|---|")
    for name, values in times.items():
        deciles = statistics.quantiles(values, n=10)
        median = statistics.median(values)
        print(
            f"| {name} | {median:.2f} ms | {deciles[0]:.2f} to {deciles[-1]:.2f} ms"
            f" | {median / bare:.2f}x | {median / hello:.2f}x |"
        )
    for path in (BARE, HELLO, AUTHORIZER):
        print(f"size of {os.path.basename(path)}: {os.path.getsize(path) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
