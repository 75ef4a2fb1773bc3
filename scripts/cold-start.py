"""Measures Lambda initialisation: from process start to the end of init, which is the first
call to the Runtime API's `next` endpoint, or, for a function that registers an extension, the
later of that and the extension's own `next`, against a minimal Runtime API stand-in on
127.0.0.1.

usage (no AWS endpoint is needed: nothing calls AWS before the first event):
    cargo build --release -p authorizer --example hello_bare --example hello_runtime
    cargo build --profile fast-start -p authorizer --bin authorizer
    python3 scripts/cold-start.py [RUNS] [--profile PROFILE] [--also PATH]...

The authorizer is measured as scripts/package builds it, with the fast-start profile
(Cargo.toml); `--also target/release/authorizer` adds it as the release profile builds it.
`--profile debug` measures the binaries of `cargo build` instead, the authorizer's too: what
./scripts/test does, with 3 runs, to show that the script and the binaries still work
together; its figures are a debug build's and measure nothing. `--also PATH` adds another authorizer binary (such as one
built from an earlier commit) to the same interleaved runs, with Amazon's roots.

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

PROFILE = sys.argv[sys.argv.index("--profile") + 1] if "--profile" in sys.argv else "release"
TARGET = os.path.join(os.path.dirname(__file__), "..", "target")
BUILT = os.path.join(TARGET, PROFILE)
AUTHORIZER = os.path.join(TARGET, "debug" if PROFILE == "debug" else "fast-start", "authorizer")
HELLO = os.path.join(BUILT, "examples", "hello_runtime")
BARE = os.path.join(BUILT, "examples", "hello_bare")
# The operator's switch back to the system's roots (shared/src/aws.rs).
SYSTEM_ROOTS = {"KEYWARD_TLS_ROOTS": "system"}
# Without these, keyward's client builds the SDK's whole default credential chain.
NO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None}


class RuntimeApi(http.server.BaseHTTPRequestHandler):
    """The Runtime API and, as Lambda answers them, the Extensions API's two calls: the
    counting functions register an internal extension for the shutdown signal before they
    ask for their first event, and that extension then waits on its own `next`."""

    # Lambda's Runtime API keeps connections open, as HTTP/1.1 does.
    protocol_version = "HTTP/1.1"
    first_next = None
    seen = threading.Event()
    # An extension's registration, and its own `next`: Lambda's init ends when the runtime and
    # every registered extension have asked for their next event.
    registered = threading.Event()
    extension_next = None
    extension_waits = threading.Event()

    def do_GET(self):
        if self.path.endswith("/runtime/invocation/next"):
            RuntimeApi.first_next = time.perf_counter()
            RuntimeApi.seen.set()
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path.endswith("/extension/event/next"):
            RuntimeApi.extension_next = time.perf_counter()
            RuntimeApi.extension_waits.set()
            # Lambda holds this until an invoke or the shutdown; the process is killed first.
            time.sleep(10)
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path.endswith("/extension/register"):
            RuntimeApi.registered.set()
            body = b'{"functionName": "cold-start", "functionVersion": "1", "handler": "bootstrap"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Lambda-Extension-Identifier", "cold-start-extension")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def log_message(self, *args):
        pass


class StandIn(http.server.ThreadingHTTPServer):
    """The server: a process killed at its first `next` resets its connections, which is
    expected, not an error to print."""

    def handle_error(self, request, client_address):
        pass


def measure(command, env):
    """Milliseconds from process start to the end of init: the runtime's first `next`, or the
    extension's `next` if it registered one and that came later."""
    for event in (RuntimeApi.seen, RuntimeApi.registered, RuntimeApi.extension_waits):
        event.clear()
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ok = RuntimeApi.seen.wait(timeout=10)
    waited = not RuntimeApi.registered.is_set() or RuntimeApi.extension_waits.wait(timeout=10)
    process.kill()
    process.wait()
    if not ok:
        raise SystemExit(f"{command[0]} never asked for an event")
    if not waited:
        raise SystemExit(f"{command[0]} registered an extension that never asked for an event")
    end = RuntimeApi.first_next
    if RuntimeApi.registered.is_set():
        end = max(end, RuntimeApi.extension_next)
    return (end - started) * 1000


def main():
    numbers = [a for a in sys.argv[1:2] if a.isdigit()]
    runs = int(numbers[0]) if numbers else 30
    server = StandIn(("127.0.0.1", 0), RuntimeApi)
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
    for i, arg in enumerate(sys.argv):
        if arg == "--also":
            path = sys.argv[i + 1]
            variants[f"authorizer at {path}"] = ([path], {"KEYWARD_STORE": "dynamodb:keyward"})

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
    authorizer_profile = os.path.basename(os.path.dirname(AUTHORIZER))
    print(f"{runs} runs each, interleaved, {os.cpu_count()} cores, {PROFILE} profile, the authorizer's {authorizer_profile}")
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
