"""People, not keys, in the console: `keyward serve` with an identity provider (a real OpenID
provider on loopback, with PKCE enforced), and a person who signs in through it in Chromium,
switches environment, rotates a key, and finds their own name in the activity log."""

import json
import tempfile
import urllib.request
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from playwright.sync_api import expect

from conftest import SECRET, Keyward, Provider, Watched, no_serious_violations, screenshot

CLIENT_ID = "keyward-console"
ROLES = {"devs": {"development": ["*"], "staging": ["*"]}, "readers": {"staging": ["keys:read"]}}
PEOPLE = {
    "dana": {"email": "dana@example.com", "email_verified": True, "groups": ["devs"]},
    "mo": {"email": "mo@example.com", "email_verified": True, "groups": ["marketing"]},
}


@pytest.fixture
def provider():
    server = Provider(PEOPLE)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def keyward(provider):
    """`keyward serve` signing people in through `provider`, with `development` and `staging`."""
    with tempfile.TemporaryDirectory(prefix="keyward-console-") as folder:
        options = ["--oidc-issuer", provider.issuer, "--oidc-client-id", CLIENT_ID, "--oidc-roles", json.dumps(ROLES)]
        server = Keyward(folder, options=options)
        try:
            server.create_environment("staging")
            yield server
        finally:
            server.stop()


@pytest.fixture
def page(browser, keyward, provider):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    # Nothing leaves this machine: the provider's own pages ask a CDN for their style.
    context.route(
        lambda url: urlsplit(url).hostname not in ("127.0.0.1", "localhost"),
        lambda route: route.abort(),
    )
    page = context.new_page()
    watched = Watched(page, keyward.origin, provider.origin)
    page.goto(keyward.url)
    yield page
    context.close()
    assert watched.problems == [], watched.problems


def sign_in_as(page, sub):
    page.get_by_role("link", name="Sign in with your identity provider").click()
    page.get_by_role("button", name=sub, exact=True).click()


def session_cookie(page):
    return [c for c in page.context.cookies() if c["name"] == "__Host-keyward-session"]


def test_a_person_signs_in_switches_environment_rotates_and_finds_their_name(page, keyward, provider):
    status, made = keyward.call("POST", "/v1/environments/development/keys", {"name": "payments", "scopes": ["orders:read"]})
    assert status == 201, made
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_label("API key")).to_have_count(0)
    screenshot(page, "console-sign-in.png")
    no_serious_violations(page, "the sign-in page for people")

    sign_in_as(page, "dana")
    expect(page.get_by_role("caption")).to_have_text("Keys of development, newest first")
    expect(page.locator(".who")).to_contain_text("Signed in as dana@example.com")
    cookie = session_cookie(page)
    assert len(cookie) == 1 and cookie[0]["httpOnly"] and cookie[0]["secure"] and cookie[0]["sameSite"] == "Strict", cookie
    # The page holds no token: none in its storage, none that its script can read.
    stored = page.evaluate("() => JSON.stringify([document.cookie, {...localStorage}, {...sessionStorage}])")
    assert cookie[0]["value"] not in stored and "eyJ" not in stored, stored

    switch = page.get_by_label("Environment")
    expect(switch.locator("option")).to_have_text(["development", "staging"])
    no_serious_violations(page, "the keys of a signed-in person, with the environment switcher")
    switch.select_option("staging")
    page.get_by_role("button", name="Switch").click()
    expect(page.get_by_role("caption")).to_have_text("Keys of staging, newest first")
    default = page.locator("tbody tr").filter(has_text="Default")
    expect(default).to_have_count(1)
    key_id = default.get_attribute("data-key-id")

    default.get_by_role("button", name="Actions for default").click()
    default.get_by_role("menuitem", name="Rotate key").click()
    dialog = page.get_by_role("dialog", name="Rotate key “default”")
    dialog.get_by_role("radiogroup", name="Grace period").get_by_role("radio", name="In 1 hour", exact=True).check()
    dialog.get_by_role("button", name="Rotate key").click()
    expect(page.get_by_label("The new key's secret")).to_have_value(SECRET)
    page.get_by_role("button", name="Done").click()
    expect(page.locator(f'tr[data-key-id="{key_id}"]')).to_contain_text("In grace, ends in")
    screenshot(page, "console-person.png")

    page.locator(f'tr[data-key-id="{key_id}"]').get_by_role("link", name="default").click()
    page.get_by_role("tab", name="Activity").click()
    rotated = page.get_by_role("tabpanel").locator('tbody tr[data-action="key.rotated"]')
    expect(rotated).to_contain_text("dana@example.com (dana)")

    page.get_by_role("link", name="Activity", exact=True).click()
    expect(page.get_by_role("heading", name="Activity")).to_be_visible()
    rotated = page.locator('tbody tr[data-action="key.rotated"]')
    expect(rotated).to_have_count(1)
    expect(rotated).to_contain_text("dana@example.com (dana)")
    screenshot(page, "console-person-activity.png")
    no_serious_violations(page, "a person's Logs › Activity")

    # The switch outlives a reload, and so does the session; signing out ends it here and at
    # the provider, whose confirmation sends the browser back to the console.
    page.reload()
    expect(page.get_by_role("caption")).to_have_text("Activity of staging, newest first")
    page.get_by_role("link", name="Sign out").click()
    page.get_by_role("button", name="End session").click()
    expect(page.get_by_role("link", name="Sign in with your identity provider")).to_be_visible()
    assert session_cookie(page) == []
    page.goto(keyward.url + "#/keys")
    expect(page.get_by_role("link", name="Sign in with your identity provider")).to_be_visible()
    request = urllib.request.Request(keyward.url + "v1/session", headers={"x-keyward-console": "1", "Cookie": f"__Host-keyward-session={cookie[0]['value']}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        # The browser no longer has it; the ID token itself, which keyward keeps nowhere,
        # stays valid at the identity provider's word until its `exp` (README: "Signing out").
        assert json.load(answer)["person"]["id"] == "dana"


def test_a_person_without_a_role_is_told_so_and_can_sign_out(page):
    sign_in_as(page, "mo")
    expect(page.get_by_role("alert")).to_contain_text("your groups grant no role in keyward (no_role)")
    expect(page.get_by_role("link", name="Sign in with your identity provider")).to_have_count(0)
    no_serious_violations(page, "a person without a role")
    page.get_by_role("link", name="Sign out").click()
    page.get_by_role("button", name="End session").click()
    expect(page.get_by_role("link", name="Sign in with your identity provider")).to_be_visible()


def test_a_callback_that_is_not_this_browsers_sign_in_signs_no_one_in(page, keyward, provider):
    page.goto(keyward.url + "console/callback?code=made-up&state=made-up")
    expect(page.get_by_role("alert")).to_contain_text("The sign-in did not complete")
    assert session_cookie(page) == []
    # A sign-in started here, and the provider's real code sent back with another state: the
    # provider's redirect to the callback is rewritten on its way to the browser.
    def another_state(route):
        if route.request.method != "POST":
            return route.continue_()
        answer = route.fetch(max_redirects=0)
        back = urlsplit(answer.headers["location"])
        query = parse_qs(back.query)
        assert query["code"][0]
        query["state"] = ["another"]
        location = back._replace(query=urlencode(query, doseq=True)).geturl()
        route.fulfill(response=answer, headers={**answer.headers, "location": location})

    authorize = f"{provider.issuer}/oauth2/authorize?"

    def at_authorize(url):
        return url.startswith(authorize)

    page.route(at_authorize, another_state)
    sign_in_as(page, "dana")
    expect(page.get_by_role("alert")).to_contain_text("unlike it left. Try again (sign_in_failed).")
    assert session_cookie(page) == []
    # The same, untouched, signs Dana in: the refusal was the state's.
    page.unroute(at_authorize)
    sign_in_as(page, "dana")
    expect(page.locator(".who")).to_contain_text("Signed in as dana@example.com")
