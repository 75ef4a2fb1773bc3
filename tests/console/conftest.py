"""The console's browser tests: `keyward serve` on a fresh SQLite store for each test, and
Debian's Chromium driven by Playwright. Every page a test opens is watched: a console error, an
uncaught exception or a request to any other origin fails the test when it ends.

scripts/console-tests installs what these need and runs them; KEYWARD_BIN names the binary.
"""

import json
import os
import re
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("KEYWARD_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = os.environ.get("KEYWARD_SCREENSHOTS", "target/console-screenshots")


class Keyward:
    """A running `keyward serve`, its default key, and a small client of its API."""

    def __init__(self, folder, prefix=None, options=()):
        self.folder = folder
        self.prefix = prefix or "kw"
        # The default prefix unless the test gives one, whatever the caller's shell says.
        base = {k: v for k, v in os.environ.items() if k != "KEYWARD_KEY_PREFIX"}
        extra = {"KEYWARD_KEY_PREFIX": prefix} if prefix else {}
        log = open(os.path.join(folder, "serve.log"), "w")
        self.process = subprocess.Popen(
            [
                os.environ.get("KEYWARD_BIN", "target/debug/keyward"),
                "serve",
                "--db",
                os.path.join(folder, "keyward.db"),
                "--secrets-file",
                os.path.join(folder, "secrets.json"),
                "--listen",
                "127.0.0.1:0",
                "--no-schedule",
                *options,
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            # Usage is written at most once a second, so that it shows within a test.
            env={**base, "KEYWARD_USAGE_WRITE_EVERY": "1", **extra},
        )
        self.admin = self.admin_id = self.url = None
        for line in self.process.stdout:
            if line.startswith(f"{self.prefix}_sk_development_"):
                self.admin = line.strip()
            elif "default key " in line:
                self.admin_id = line.split("default key ")[1].split()[0]
            elif line.startswith("keyward is listening on "):
                self.url = line.split(" on ")[1].strip() + "/"
                break
        assert self.admin and self.admin_id and self.url, "keyward serve did not start"
        self.origin = urlsplit(self.url).netloc

    def call(self, method, path, body=None, key=None):
        """One request to the API; answers (status, JSON)."""
        request = urllib.request.Request(
            self.url + path.lstrip("/"),
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {key or self.admin}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, json.load(answer)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    def create(self, name, scopes=None, key=None):
        status, answer = self.call("POST", "/v1/environments/development/keys", {"name": name, "scopes": scopes or []}, key)
        assert status == 201, answer
        return answer

    def verify(self, secret):
        """Checks a key through POST /v1/verify, which counts towards its usage."""
        request = urllib.request.Request(
            self.url + "v1/verify",
            method="POST",
            data=json.dumps({"key": secret}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)["code"]

    def key(self, key_id):
        status, answer = self.call("GET", f"/v1/keys/{key_id}")
        assert status == 200, answer
        return answer["key"]

    def create_environment(self, name):
        """Makes another environment in the same store, as `keyward env create` does."""
        subprocess.run(
            [os.environ.get("KEYWARD_BIN", "target/debug/keyward"), "env", "create", name, "--store", f"sqlite:{os.path.join(self.folder, 'keyward.db')}"],
            check=True,
            capture_output=True,
            env={k: v for k, v in os.environ.items() if k != "KEYWARD_KEY_PREFIX"},
        )

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


class Provider:
    """A real OpenID provider on loopback (oidc-provider-mock, with PKCE enforced; the test
    command names it in KEYWARD_TEST_OIDC_PROVIDER), with these people set up: each a
    button on its sign-in form."""

    def __init__(self, people):
        claims = [json.dumps({"sub": sub, **person}) for sub, person in people.items()]
        self.process = subprocess.Popen(
            [os.environ["KEYWARD_TEST_OIDC_PROVIDER"], "--host", "127.0.0.1", "--port", "0", "--require-nonce",
             *[arg for c in claims for arg in ("--user-claims", c)]],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.issuer = None
        for line in self.process.stderr:
            found = re.search(r"running on (http://[0-9.:]+)", line)
            if found:
                self.issuer = found.group(1)
                break
        assert self.issuer, "the OpenID provider did not start"
        # Its log is drained, so that a full pipe never stalls it.
        import threading

        threading.Thread(target=lambda: [None for _ in self.process.stderr], daemon=True).start()
        self.origin = urlsplit(self.issuer).netloc

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def keyward(request):
    """`keyward serve`; a test that parametrizes this fixture indirectly gives its key prefix."""
    with tempfile.TemporaryDirectory(prefix="keyward-console-") as folder:
        server = Keyward(folder, getattr(request, "param", None))
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


class Watched:
    """A page, and what it did that a test must not see: console errors, uncaught
    exceptions, and requests to another origin."""

    def __init__(self, page, origin, provider=None):
        self.page = page
        self.origin = origin
        self.provider = provider
        self.problems = []
        page.on("console", self.console)
        page.on("pageerror", lambda e: self.problems.append(f"uncaught: {e}"))
        page.on("request", self.request)

    def request(self, request):
        """keyward's pages ask their own origin only; a person's sign-in goes to the identity
        provider (a navigation), whose own pages are its business."""
        if urlsplit(request.url).netloc == self.origin or self.at_provider(request.frame.url):
            return
        if urlsplit(request.url).netloc == self.provider and request.is_navigation_request():
            return
        self.problems.append(f"request to another origin: {request.url}")

    def at_provider(self, url):
        return self.provider is not None and urlsplit(url).netloc == self.provider


    def console(self, message):
        """Chromium logs every answer of 400 or more as a console error. A refusal of the
        JSON API is one the console shows in words, which the tests check; any other error,
        such as a missing file, is a problem."""
        if message.type != "error" or self.at_provider(self.page.url):
            return
        url = urlsplit(message.location.get("url", ""))
        refused = re.match(r"Failed to load resource: the server responded with a status of 4\d\d", message.text)
        if refused and url.netloc == self.origin and url.path.startswith("/v1/"):
            return
        self.problems.append(f"console error: {message.text} ({message.location.get('url')})")


@pytest.fixture
def page(browser, keyward):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    watched = Watched(page, keyward.origin)
    page.goto(keyward.url)
    yield page
    context.close()
    assert watched.problems == [], watched.problems


def sign_in(page, key):
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def no_serious_violations(page, what):
    """axe-core finds no serious or critical accessibility violation in the page as it is."""
    results = Axe().run(page)
    serious = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert serious == [], f"{what}: {serious}"


def screenshot(page, name):
    os.makedirs(SCREENSHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SCREENSHOTS, name))


def at(iso):
    """Seconds since the epoch of an RFC 3339 time from the API."""
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def wait_until(condition, seconds=10):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


SECRET = re.compile(r"[a-z][a-z0-9]{1,9}_(sk|pk)_[a-z0-9_]+_[A-Za-z0-9]{38}")
