"""The console in real headless Chromium (Debian's package, driven by Playwright's Python API):
first-user registration, tokens used by the openai SDK, admin pages closed to users, suspension,
the streaming playground, CSV export against the ledger, and every page free of console errors
and failed requests, with a 1440x900 screenshot of each into docs/screenshots/.

One gateway (its own thread and loop) and one browser serve the whole module; the tests run in
file order and build on each other's accounts (the first registers the admin).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import time
from urllib.parse import urlparse

import httpx
import openai
import pytest

from services.config.defaults import DEMO_PROVIDER
from tests.support.browser import PageWatch, chromium_path, has_route, screenshot, threaded_gateway
from tests.support.gateway import ADMIN_KEY, config

if os.environ.get("CI") == "true":
    import playwright.sync_api as playwright_api  # under CI a missing driver is a failure, never a skip
else:
    playwright_api = pytest.importorskip("playwright.sync_api")

ADMIN_EMAIL, USER_EMAIL, VICTIM_EMAIL = "root@example.com", "user@example.com", "victim@example.com"
PASSWORD = "correct horse battery"
WIDE = {"width": 1440, "height": 900}
NARROW = {"width": 360, "height": 780}
# Every console page, its screenshot name, and the REST routes it reads (for "is it there yet").
PAGES = [
    ("/", "usage", ["/api/usage/summary", "/api/quota"]),
    ("/tokens", "tokens", []),
    ("/keys", "provider-keys", []),
    ("/playground", "", []),  # its picture, with a streamed answer, comes from the playground test
    ("/models", "models", []),
    ("/statements", "statements", ["/api/statements"]),
    ("/account", "account", ["/api/auth/sessions"]),
    ("/admin/users", "admin-users", ["/api/admin/users", "/api/admin/plans"]),
    ("/admin/plans", "admin-plans", ["/api/admin/plans"]),
    ("/admin/settings", "admin-settings", ["/api/auth/registration"]),
    ("/admin/provider-keys", "admin-provider-keys", ["/api/admin/provider-keys"]),
    ("/admin/health", "admin-router-health", []),
    ("/admin/usage", "admin-usage-explorer", []),
    ("/admin/statements", "admin-statements", ["/api/admin/statements"]),
    ("/admin/alerts", "admin-alerts", ["/api/admin/alerts"]),
    ("/admin/audit", "admin-audit", ["/api/admin/audit"]),
    ("/admin/keys", "admin-keys-stats", []),
]


MISSING: set[str] | None = None
# Every accounts route (ACCOUNTS_API.md) a page reads, probed once: the console must work around
# the ones issue 16 has not landed yet, and says so on the page.
CONTRACT = sorted({r for _, _, routes in PAGES for r in routes} | {"/api/auth/me", "/api/auth/logout",
                                                                   "/api/auth/registration"})


def missing_routes(base: str) -> set[str]:
    out = set()
    for path in CONTRACT:
        method = "POST" if path.endswith("logout") else "GET"
        if not has_route(base, method, path, headers={"X-Admin-Key": ADMIN_KEY}):
            out.add(path)
    return out


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    # The built-in demo provider, plus demo-slow (a word every 50 ms, so streaming shows) and
    # demo-fail-503 (an upstream failure, so the ledger holds a row that is not ok).
    demo = dataclasses.replace(DEMO_PROVIDER, models=DEMO_PROVIDER.models + ("demo-slow", "demo-fail-503"))
    with threaded_gateway(config(tmp_path_factory.mktemp("console"), providers=(demo,), demo="on")) as g:
        yield g


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()


class Tab:
    """One browser context (its own cookies and storage) with one page and its problem watch."""

    def __init__(self, browser, base: str, viewport=WIDE) -> None:
        global MISSING
        if MISSING is None:
            MISSING = missing_routes(base)
        self.ctx = browser.new_context(viewport=viewport, accept_downloads=True)
        self.page = self.ctx.new_page()
        self.page.set_default_timeout(15_000)
        self.page.on("dialog", lambda d: d.accept())
        self.watch = PageWatch(self.page, MISSING)
        self.base = base

    def open(self, path: str = "/") -> None:
        self.page.goto(f"{self.base}/ui/#{path}")
        self.page.wait_for_selector("main h1")

    def go(self, path: str) -> None:
        """Navigates inside the console (no reload) and waits for the page's data."""
        self.page.evaluate("p => { location.hash = '#' + p; }", path)
        # The page marks itself drawn (data-ready) and api.js counts calls in flight (data-busy);
        # networkidle alone says nothing after a hash change.
        self.page.wait_for_function("p => document.querySelector(`main .page[data-ready='${p}']`)"
                                    " && document.body.dataset.busy === '0'", arg=path)

    def sign_in(self, email: str, password: str = PASSWORD) -> None:
        self.open("/")
        self.page.get_by_role("tab", name="Sign in").click()
        self.page.locator("#panel-login input[name=email]").fill(email)
        self.page.locator("#panel-login input[name=password]").fill(password)
        self.page.locator("#panel-login button[type=submit]").click()
        self.page.wait_for_selector("#nav:not([hidden])")

    def api_status(self, method: str, path: str, body: dict | None = None) -> int:
        """Calls the REST API with the console's own credentials (cookie + CSRF, or its bearer token)."""
        return self.page.evaluate("""async ([m, p, b]) => {
            const api = await import('/ui/js/api.js');
            try { await api.request(m, p, m === 'GET' ? undefined : b, {quiet401: true}); return 200; }
            catch (e) { return e.status; } }""", [method, path, body or {}])

    def close(self) -> None:
        self.ctx.close()


@pytest.fixture(scope="module")
def first_admin(gw, browser):
    """The first account, created in the console's "Create account" tab."""
    tab = Tab(browser, gw.url)
    tab.page.goto(gw.url + "/")  # a browser at / gets the console
    tab.page.wait_for_selector("text=Sign in to Tollgate")
    tab.page.get_by_role("tab", name="Create account").click()
    tab.page.locator("#panel-register input[name=email]").fill(ADMIN_EMAIL)
    tab.page.locator("#panel-register input[name=password]").fill(PASSWORD)
    screenshot(tab.page, "sign-in")
    tab.page.locator("#panel-register button[type=submit]").click()
    tab.page.wait_for_selector("#nav:not([hidden])")
    cookies = {c["name"]: c for c in tab.ctx.cookies()}
    info = {"who": tab.page.inner_text("#who"), "nav": tab.page.text_content("#nav"), "problems": tab.watch.take(),
            "cookies": cookies, "page_cookie": tab.page.evaluate("() => document.cookie"),
            "storage": tab.page.evaluate("() => JSON.stringify({...sessionStorage, ...localStorage})")}
    tab.close()
    return info


def ledger(gw) -> list:
    return gw.call(lambda g: g.ledger())


def admin_http(gw) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"X-Admin-Key": ADMIN_KEY}, timeout=30)


def test_first_user_registered_in_the_console_is_admin(gw, first_admin) -> None:
    assert first_admin["who"] == f"{ADMIN_EMAIL} (admin)" and first_admin["problems"] == []
    # The session is the HttpOnly cookie: the page can read only the CSRF cookie and keeps no token.
    session, csrf = first_admin["cookies"]["tg_session"], first_admin["cookies"]["tg_csrf"]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and not csrf["httpOnly"]
    assert "tg_session" not in first_admin["page_cookie"] and f"tg_csrf={csrf['value']}" in first_admin["page_cookie"]
    assert first_admin["storage"] == "{}"
    assert "Administration" in first_admin["nav"] and "Users" in first_admin["nav"]
    with admin_http(gw) as http:
        r = http.post("/api/auth/login", json={"email": ADMIN_EMAIL, "password": PASSWORD})
        assert r.status_code == 200 and r.json()["user"]["role"] == "admin"
        # Registration closed behind the first user: a second sign-up is refused.
        r = http.post("/api/auth/register", json={"email": "late@example.com", "password": PASSWORD})
        assert r.status_code == 403


def test_token_created_in_the_console_works_with_the_openai_sdk(gw, browser, first_admin) -> None:
    tab = Tab(browser, gw.url)
    tab.sign_in(ADMIN_EMAIL)
    tab.go("/tokens")
    tab.page.get_by_label("Token name").fill("sdk-app")
    with tab.page.expect_request(lambda r: r.url.endswith("/api/tokens") and r.method == "POST") as req_info:
        tab.page.get_by_role("button", name="Generate token").click()
    csrf = next(c["value"] for c in tab.ctx.cookies() if c["name"] == "tg_csrf")
    assert req_info.value.headers.get("x-csrf-token") == csrf and "authorization" not in req_info.value.headers
    secret = tab.page.locator("#new-token").inner_text()
    assert secret and tab.page.get_by_role("button", name="Copy").is_visible()
    assert tab.page.get_by_text("it will not be shown again").is_visible()
    row = tab.page.locator("table tr", has_text="sdk-app")
    row.wait_for()  # the list reloads after the reveal
    assert row.count() == 1 and secret not in row.inner_text()

    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)
    resp = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hello from the sdk"}])
    assert "hello from the sdk" in resp.choices[0].message.content
    assert resp.usage.completion_tokens > 0

    screenshot(tab.page, "token-reveal")
    # Shown once: after a reload the secret is nowhere on the page.
    tab.page.reload()
    tab.page.wait_for_selector("table tr >> text=sdk-app")
    assert secret not in tab.page.content()
    # Revoke in the console: the SDK is refused from then on (within the auth cache's second).
    tab.page.get_by_label("Token name").fill("to-revoke")
    tab.page.get_by_text("Limits for this token (optional)").click()
    tab.page.get_by_label("Requests / minute").fill("7")
    tab.page.get_by_role("button", name="Generate token").click()
    doomed = tab.page.locator("#new-token").inner_text()
    assert "requests / minute: 7" in tab.page.locator("table tr", has_text="to-revoke").inner_text()
    tab.page.get_by_role("button", name="Revoke token to-revoke").click()
    tab.page.wait_for_selector("table tr >> text=to-revoke", state="detached")
    doomed_client = openai.OpenAI(base_url=gw.url + "/v1", api_key=doomed, max_retries=0)
    deadline = time.monotonic() + 5
    while True:
        try:
            doomed_client.models.list()
        except openai.AuthenticationError:
            break
        assert time.monotonic() < deadline, "a revoked token still works after 5 s"
        time.sleep(0.2)
    assert tab.watch.take() == []
    tab.close()


def test_the_playground_streams_an_answer(gw, browser, first_admin) -> None:
    tab = Tab(browser, gw.url)
    tab.sign_in(ADMIN_EMAIL)
    tab.go("/playground")
    assert tab.page.locator("#model-list option").count() >= 1  # the models this user may use
    tab.page.get_by_label("Model").fill("demo-slow")
    tab.page.get_by_label("Message").fill("stream these words one at a time please")
    # Record the answer's length at every change: a streamed answer grows in several steps.
    tab.page.evaluate("""() => { window.__growth = [];
        new MutationObserver(() => window.__growth.push(document.getElementById('answer').textContent.length))
          .observe(document.getElementById('answer'), {childList: true, characterData: true, subtree: true}); }""")
    with tab.page.expect_response(lambda r: r.url.endswith("/v1/chat/completions")) as resp_info:
        tab.page.get_by_role("button", name="Send").click()
    resp = resp_info.value
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/event-stream")
    tab.page.wait_for_function("() => document.getElementById('answer-meta').textContent.includes('done in')", timeout=30_000)
    answer = tab.page.locator("#answer").inner_text()
    assert "stream these words one at a time please" in answer and answer.startswith("[tollgate demo model")
    growth = [n for n in tab.page.evaluate("window.__growth") if n]
    assert len(growth) >= 4 and growth == sorted(growth), growth
    assert "completion tokens" in tab.page.locator("#answer-meta").inner_text()
    rid = resp.headers.get("x-request-id")
    rows = [r for r in ledger(gw) if r.request_id == rid]
    assert len(rows) == 1 and rows[0].model == "demo-slow" and rows[0].status == "ok", rows
    screenshot(tab.page, "playground")
    assert tab.watch.take() == []
    tab.close()


def test_quota_bars_follow_the_limiter_without_a_reload(gw, browser, first_admin) -> None:
    tab = Tab(browser, gw.url)
    tab.sign_in(ADMIN_EMAIL)
    tab.go("/")
    bar = tab.page.get_by_role("progressbar", name="Requests per day")
    before = int(bar.get_attribute("aria-valuenow"))
    secret = tab.page.evaluate("""async () => { const a = await import('/ui/js/api.js');
        return (await a.post('/api/tokens', {name: 'quota-probe'})).key; }""")
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)
    for _ in range(2):
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "count me"}])
    # The page polls /api/quota (every 5 s): the same bar moves by the two requests, no reload.
    tab.page.wait_for_function("""n => { const b = document.querySelector('[role=progressbar][aria-label="Requests per day"]');
        return b && Number(b.getAttribute('aria-valuenow')) >= n; }""", arg=before + 2, timeout=12_000)
    assert tab.watch.take() == []
    tab.close()


def test_a_user_cannot_reach_the_admin_pages_or_routes(gw, browser, first_admin) -> None:
    admin = Tab(browser, gw.url)
    admin.sign_in(ADMIN_EMAIL)
    admin.go("/admin/settings")
    box = admin.page.get_by_label("Allow new users to register")
    box.check()
    admin.page.get_by_role("button", name="Save").click()
    admin.page.wait_for_selector("text=Registration is open.")
    admin_token_ids = [t["id"] for t in admin.page.evaluate(
        "async () => { const a = await import('/ui/js/api.js'); const r = await a.get('/api/tokens'); return r.items || r.tokens; }")]
    assert admin_token_ids

    user = Tab(browser, gw.url)
    user.open("/")
    user.page.get_by_role("tab", name="Create account").click()
    user.page.locator("#panel-register input[name=email]").fill(USER_EMAIL)
    user.page.locator("#panel-register input[name=password]").fill(PASSWORD)
    user.page.locator("#panel-register button[type=submit]").click()
    user.page.wait_for_selector("#nav:not([hidden])")
    assert user.page.inner_text("#who") == USER_EMAIL
    assert "Administration" not in user.page.text_content("#nav")
    for path in ("/admin/users", "/admin/usage", "/admin/keys", "/admin/health"):
        user.page.evaluate("p => { location.hash = '#' + p; }", path)
        user.page.wait_for_selector("main [role=alert] >> text=administrators only")
    assert user.watch.take() == [] and admin.watch.take() == []
    # The server decides, not the page: every admin route refuses this user's session.
    # (/router/health is seed 002's status route, readable by any valid key there: not in this list.)
    checks = [("GET", "/api/admin/usage", None), ("GET", "/api/admin/keys", None), ("GET", "/api/admin/stats", None),
              ("POST", "/api/admin/keys", {"name": "x", "tier": "pro"}),
              ("PUT", "/api/admin/registration", {"open": True, "enabled": True})]
    # Issue 16's admin routes, each once it is on this gateway.
    checks += [(m, p, b) for m, p, b in (("GET", "/api/admin/users", None), ("GET", "/api/admin/plans", None),
                                         ("GET", "/api/admin/statements", None), ("GET", "/api/admin/audit", None),
                                         ("GET", "/api/admin/alerts", None), ("GET", "/api/admin/provider-keys", None))
               if p not in MISSING]
    for method, path, body in checks:
        assert user.api_status(method, path, body) == 403, path
    # Another user's token is not this user's to revoke, even with its id in the URL.
    for tid in admin_token_ids:
        assert user.api_status("DELETE", f"/api/tokens/{tid}") == 404
    user.close()
    admin.close()

    # The admin closes registration again (seed 001: Settings).
    with admin_http(gw) as http:
        assert http.put("/api/admin/registration", json={"open": False}).status_code == 200


def test_suspending_a_user_in_the_console_gets_their_token_a_403(gw, browser, first_admin) -> None:
    with admin_http(gw) as http:
        assert http.put("/api/admin/registration", json={"open": True}).status_code == 200
        r = http.post("/api/auth/register", json={"email": VICTIM_EMAIL, "password": PASSWORD})
        assert r.status_code == 201, r.text
        session = r.json()["token"]
        assert http.put("/api/admin/registration", json={"open": False}).status_code == 200
        r = http.post("/api/tokens", headers={"Authorization": f"Bearer {session}", "X-Admin-Key": ""}, json={"name": "victim-app"})
    token = r.json().get("key") or r.json()["token"]
    victim = openai.OpenAI(base_url=gw.url + "/v1", api_key=token, max_retries=0)
    assert victim.models.list().data

    tab = Tab(browser, gw.url)
    tab.sign_in(ADMIN_EMAIL)
    tab.go("/admin/users")
    tab.page.get_by_label("Search").fill("victim")
    tab.page.get_by_role("button", name="Search").click()
    tab.page.get_by_role("button", name=f"Suspend {VICTIM_EMAIL}").click()
    tab.page.wait_for_selector(f"table tr:has-text('{VICTIM_EMAIL}') .badge.suspended")
    deadline = time.monotonic() + 5
    while True:
        try:
            victim.models.list()
        except openai.PermissionDeniedError:
            break
        assert time.monotonic() < deadline, "a suspended user's token still works after 5 s"
        time.sleep(0.2)
    # Details: the user's tokens (names and prefixes, never secrets) and month's usage.
    tab.page.get_by_role("button", name=f"Details of {VICTIM_EMAIL}").click()
    tab.page.wait_for_selector(f"text={VICTIM_EMAIL}: details")
    assert tab.page.locator("table tr", has_text="victim-app").count() == 1 and token not in tab.page.content()
    assert tab.watch.take() == []
    # A refused action says why in words: the last admin cannot demote themselves (409).
    tab.page.get_by_label("Search").fill("root@")
    tab.page.get_by_role("button", name="Search").click()
    role = tab.page.get_by_label(f"Role of {ADMIN_EMAIL}")
    role.wait_for()
    with tab.page.expect_response(lambda r: "/api/admin/users/" in r.url and r.request.method == "PATCH") as refused:
        role.select_option("user")
    assert refused.value.status == 409
    alert = tab.page.locator("main [role=alert]").first
    alert.wait_for()
    assert len(alert.inner_text()) > 10 and "409" not in alert.inner_text()
    assert role.input_value() == "admin"
    tab.watch.take()  # that 409 was the point
    tab.close()


def test_a_user_added_in_the_console_accepts_the_invite_and_signs_in(gw, browser, first_admin) -> None:
    admin = Tab(browser, gw.url)
    admin.sign_in(ADMIN_EMAIL)
    admin.go("/admin/users")
    admin.page.get_by_role("textbox", name="Email").fill("invited@example.com")
    plan = admin.page.get_by_label("Plan", exact=True)
    if plan.evaluate("el => el.tagName") == "INPUT":
        plan.fill("basic")
    admin.page.get_by_role("button", name="Add user").click()
    admin.page.wait_for_selector("text=One-time invite token")
    invite = admin.page.locator(".reveal code.secret").inner_text()
    admin.page.locator("table tr", has_text="invited@example.com").wait_for()  # the list reloads after the reveal
    assert invite and admin.page.locator("table tr", has_text="invited@example.com").count() == 1
    assert admin.watch.take() == []
    admin.close()

    user = Tab(browser, gw.url)
    user.open("/")
    user.page.get_by_role("tab", name="Invite").click()
    user.page.get_by_role("textbox", name="Invite token").fill(invite)
    user.page.locator("#panel-invite input[name=password]").fill(PASSWORD)
    user.page.get_by_role("button", name="Set password and sign in").click()
    user.page.wait_for_selector("#nav:not([hidden])")
    assert user.page.inner_text("#who") == "invited@example.com"
    assert user.watch.take() == []
    user.close()
    # Used once: the same token no longer signs anyone in.
    r = httpx.post(gw.url + "/api/auth/invite/accept", json={"invite_token": invite, "password": PASSWORD})
    assert r.status_code in (400, 401, 404), r.text


def test_own_provider_keys_are_added_masked_and_removed(gw, browser, first_admin) -> None:
    secret = "sk-own-console-" + "y" * 30
    tab = Tab(browser, gw.url)
    tab.sign_in(ADMIN_EMAIL)
    tab.go("/keys")
    tab.page.get_by_label("Provider").select_option("openai")
    tab.page.get_by_role("textbox", name="Name", exact=True).fill("my-openai")
    tab.page.get_by_label("API key").fill(secret)
    tab.page.get_by_role("button", name="Add key").click()
    row = tab.page.locator("table tr", has_text="my-openai")
    row.wait_for()
    html = tab.page.content()
    i = html.find(secret)
    assert i < 0, html[max(0, i - 300):i + 100]
    assert secret[:12] not in row.inner_text()  # the list shows the provider's mask only
    assert tab.page.get_by_label("API key").input_value() == ""  # the secret leaves the form once sent
    tab.page.get_by_role("button", name="Remove key my-openai").click()
    row.wait_for(state="detached")
    tab.page.get_by_text("You have no provider keys").wait_for()
    assert tab.watch.take() == []
    tab.close()


def test_gateway_provider_keys_are_added_masked_disabled_and_removed(gw, browser, first_admin) -> None:
    if "/api/admin/provider-keys" in MISSING:
        pytest.xfail("waits for issue 16's /api/admin/provider-keys")
    secret = "sk-console-test-" + "x" * 24
    tab = Tab(browser, gw.url)
    tab.sign_in(ADMIN_EMAIL)
    tab.go("/admin/provider-keys")
    assert tab.page.locator("table tr", has_text="config file").count() >= 1  # the demo key, read-only
    tab.page.get_by_label("Provider").select_option("openai_compatible")
    tab.page.get_by_role("textbox", name="Name", exact=True).fill("console-key")
    tab.page.get_by_label("API key").fill(secret)
    tab.page.get_by_label("Base URL (optional)").fill("http://127.0.0.1:9/v1")
    tab.page.get_by_role("button", name="Add key").click()
    row = tab.page.locator("table tr", has_text="console-key")
    row.wait_for()
    assert secret not in tab.page.content() and "added here" in row.inner_text()
    tab.page.get_by_role("button", name="Disable console-key").click()
    tab.page.locator("table tr", has_text="console-key").locator("text=disabled").wait_for()
    tab.page.get_by_role("button", name="Remove console-key").click()
    tab.page.locator("table tr", has_text="console-key").wait_for(state="detached")
    assert tab.watch.take() == []
    tab.close()


def test_a_plan_is_created_edited_and_deleted_in_the_console(gw, browser, first_admin) -> None:
    def stored() -> dict:
        with admin_http(gw) as http:
            return {p["name"]: p for p in http.get("/api/admin/plans").json()}

    tab = Tab(browser, gw.url)
    tab.sign_in(ADMIN_EMAIL)
    tab.go("/admin/plans")
    tab.page.get_by_label("Name", exact=True).fill("console-plan")
    tab.page.get_by_label("Description", exact=True).fill("made in the console")
    tab.page.get_by_label("Requests / minute").fill("2")
    tab.page.get_by_label("Price USD / month").fill("9")
    tab.page.get_by_label("Budget USD / month").fill("4.5")
    with tab.page.expect_response(lambda r: r.url.endswith("/api/admin/plans") and r.request.method == "POST") as made:
        tab.page.get_by_role("button", name="Save plan").click()
    assert made.value.status == 201
    tab.page.locator("table tr", has_text="console-plan").wait_for()
    plan = stored()["console-plan"]
    assert (plan["rpm"], plan["price_usd_month"], plan["budget_usd_month"], plan["rpd"]) == (2, 9.0, 4.5, 0)

    tab.page.get_by_role("button", name="Edit plan console-plan").click()
    tab.page.get_by_label("Requests / minute").fill("5")
    tab.page.get_by_label("Price USD / month").fill("")
    with tab.page.expect_response(lambda r: "/api/admin/plans/console-plan" in r.url and r.request.method == "PUT") as saved:
        tab.page.get_by_role("button", name="Save plan").click()
    assert saved.value.status == 200
    tab.page.locator("table tr", has_text="console-plan").locator("text=custom").wait_for()
    plan = stored()["console-plan"]
    assert plan["rpm"] == 5 and plan["price_usd_month"] is None and plan["budget_usd_month"] == 4.5

    # A bad number is refused by the gateway, said in words, and nothing changes.
    tab.page.get_by_role("button", name="Edit plan console-plan").click()
    tab.page.get_by_label("Requests / day").fill("-4")
    with tab.page.expect_response(lambda r: "/api/admin/plans/console-plan" in r.url and r.request.method == "PUT") as refused:
        tab.page.get_by_role("button", name="Save plan").click()
    assert refused.value.status == 400
    assert stored()["console-plan"]["rpd"] == 0
    # That 400 was the point. Chromium also logs it as a console error, a moment after the
    # response event: wait for that line (bounded) before clearing, or it lands in the next check.
    for _ in range(50):
        if any(p.startswith("console error") and "console-plan" in p for p in tab.watch.problems):
            break
        tab.page.wait_for_timeout(100)
    tab.watch.take()

    tab.page.get_by_role("button", name="Delete plan console-plan").click()
    tab.page.locator("table tr", has_text="console-plan").wait_for(state="detached")
    assert "console-plan" not in stored()
    assert tab.watch.take() == []
    tab.close()


def test_csv_export_equals_the_ledger(gw, browser, first_admin) -> None:
    with admin_http(gw) as http:
        key = http.post("/api/admin/keys", json={"name": "csv", "email": "csv@example.com", "tier": "pro"}).json()["key"]
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    for i in range(3):
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": f"row {i}, with a comma"}])
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="demo-fail-503", messages=[{"role": "user", "content": "fail"}])
    tab = Tab(browser, gw.url)
    tab.sign_in(ADMIN_EMAIL)
    tab.go("/admin/usage")
    with tab.page.expect_download() as dl:
        tab.page.get_by_role("button", name="Export CSV").click()
    text = open(dl.value.path(), encoding="utf-8").read()
    rows = list(csv.DictReader(io.StringIO(text)))
    want = {r.request_id: r for r in ledger(gw)}
    assert len(rows) == len(want) >= 4
    for row in rows:
        rec = want[row["request_id"]]
        assert row["model"] == rec.model and row["status"] == rec.status and row["provider"] == rec.provider
        assert int(row["prompt_tokens"]) == rec.prompt_tokens and int(row["completion_tokens"]) == rec.completion_tokens
        assert abs(float(row["cost_usd"]) - rec.cost_usd) < 1e-9 and row["key_id"] == rec.key_id
    tab.page.get_by_text(f"CSV downloaded ({len(rows)} rows).").wait_for()
    # Filtered by status in the console: the export holds exactly the ledger's rows with it.
    refused = {r.request_id for r in want.values() if r.status != "ok"}
    assert refused
    status = next(iter({want[r].status for r in refused}))
    tab.page.get_by_label("Status").select_option(status)
    tab.page.get_by_role("button", name="Apply filters").click()
    tab.page.wait_for_function("() => document.body.dataset.busy === '0'")
    with tab.page.expect_download() as dl:
        tab.page.get_by_role("button", name="Export CSV").click()
    only = list(csv.DictReader(io.StringIO(open(dl.value.path(), encoding="utf-8").read())))
    assert {r["request_id"] for r in only} == {r.request_id for r in want.values() if r.status == status}
    assert tab.watch.take() == []
    tab.close()


def test_the_admin_key_signs_in_as_operator_and_sign_out_ends_the_session(gw, browser) -> None:
    tab = Tab(browser, gw.url)
    tab.open("/")
    tab.page.get_by_role("tab", name="Admin key").click()
    tab.page.get_by_role("textbox", name="Admin key").fill(ADMIN_KEY)
    tab.page.get_by_role("button", name="Sign in as operator").click()
    tab.page.wait_for_selector("#nav:not([hidden])")
    assert tab.page.inner_text("#who") == "operator (admin)"
    tab.page.wait_for_function("() => location.hash === '#/admin/keys'")  # seed 000's panel: keys and stats
    tab.page.wait_for_selector("text=Gateway statistics")
    assert ADMIN_KEY not in tab.page.content()
    assert tab.page.evaluate("() => JSON.stringify({...sessionStorage, ...localStorage})") == "{}"
    # A cookie-authenticated write without the CSRF header is refused, and the words say why.
    refused = tab.page.evaluate("""async () => {
        const r = await fetch('/api/admin/keys', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                  body: JSON.stringify({name: 'no-csrf', tier: 'basic'})});
        const api = await import('/ui/js/api.js');
        return [r.status, api.errorMessage(r.status, await r.json())]; }""")
    assert refused[0] == 403 and "CSRF" in refused[1]
    tab.watch.take()  # that refusal was the point
    session = next(c["value"] for c in tab.ctx.cookies() if c["name"] == "tg_session")
    tab.page.get_by_role("button", name="Sign out").click()
    tab.page.wait_for_selector("text=Sign in to Tollgate")
    assert "tg_session" not in {c["name"] for c in tab.ctx.cookies()}
    r = httpx.get(gw.url + "/api/auth/me", cookies={"tg_session": session})
    assert r.status_code == 401  # revoked on the server, not just forgotten by the browser
    assert tab.watch.take() == []
    tab.close()


def test_the_statement_downloaded_in_the_console_equals_the_ledger(gw, browser, first_admin) -> None:
    if "/api/statements" in MISSING:
        pytest.xfail("waits for issue 16's /api/statements")
    tab = Tab(browser, gw.url)
    tab.sign_in(ADMIN_EMAIL)
    me = tab.page.evaluate("async () => (await import('/ui/js/api.js')).get('/api/auth/me')")
    tab.go("/statements")
    with tab.page.expect_download() as dl:
        tab.page.get_by_role("button", name="Download CSV").click()
    rows = list(csv.DictReader(io.StringIO(open(dl.value.path(), encoding="utf-8").read())))
    total = next(r for r in rows if r["line"] == "total")
    month = time.strftime("%Y-%m", time.gmtime())
    mine = [r for r in ledger(gw) if r.user_id == me["id"] and time.strftime("%Y-%m", time.gmtime(r.created_at)) == month
            and r.status != "rate_limited"]
    assert int(total["requests"]) == len(mine) > 0, (total, len(mine))
    assert int(total["prompt_tokens"]) == sum(r.prompt_tokens for r in mine)
    assert int(total["completion_tokens"]) == sum(r.completion_tokens for r in mine)
    assert tab.watch.take() == []
    tab.close()


def test_first_load_weighs_under_150_kb(gw, browser) -> None:
    tab = Tab(browser, gw.url)
    tab.page.goto(gw.url + "/ui/")
    tab.page.wait_for_selector("text=Sign in to Tollgate")
    tab.page.wait_for_load_state("networkidle")
    sizes = tab.page.evaluate("""() => [performance.getEntriesByType('navigation')[0],
        ...performance.getEntriesByType('resource')].map(e => [e.name, e.transferSize, e.decodedBodySize])""")
    transferred = sum(s[1] for s in sizes)
    assert all(urlparse(s[0]).netloc == urlparse(gw.url).netloc for s in sizes)  # nothing fetched elsewhere
    assert 0 < transferred < 150_000, sizes
    tab.close()


def test_every_page_renders_without_errors_and_is_screenshotted(gw, browser, first_admin) -> None:
    tab = Tab(browser, gw.url)
    missing = MISSING
    tab.sign_in(ADMIN_EMAIL)
    tab.watch.take()
    seen: dict[str, list[str]] = {}
    for path, name, routes in PAGES:
        tab.go(path)
        tab.page.wait_for_timeout(150)  # let bars and charts lay out before the picture
        if name:
            screenshot(tab.page, name)
        # Usable: every input has a label, every button and link a name.
        unnamed = tab.page.evaluate("""() => [
            ...[...document.querySelectorAll('main input, main select, main textarea')]
                .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')).map(el => el.name || el.outerHTML),
            ...[...document.querySelectorAll('main button, main a, nav a')]
                .filter(el => !(el.getAttribute('aria-label') || el.textContent.trim())).map(el => el.outerHTML)]""")
        if unnamed:
            seen[path + " unnamed"] = unnamed
        problems = tab.watch.take()
        if problems:
            seen[path] = problems
        if path == "/admin/audit" and "/api/admin/audit" not in missing:
            # The suspension done in the console earlier is in the log, as the change it made.
            assert tab.page.get_by_text("state: active → suspended").count() >= 1
        if routes and set(routes) <= missing:
            # A page whose routes have not landed says so in words, instead of failing silently.
            assert tab.page.get_by_text("not available on this gateway yet").count() >= 1, path
    assert seen == {}
    # Router health refreshes itself without a reload.
    tab.go("/admin/health")
    first = tab.page.locator("text=/^Updated /").inner_text()
    tab.page.wait_for_function("t => { const el = [...document.querySelectorAll('main p')].find(p => p.textContent.startsWith('Updated '));"
                               " return el && el.textContent !== t; }", arg=first, timeout=10_000)
    # Readable at 360 px: no page scrolls sideways.
    narrow = Tab(browser, gw.url, NARROW)
    narrow.sign_in(ADMIN_EMAIL)
    for path, name, _ in PAGES:
        narrow.go(path)
        width = narrow.page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= NARROW["width"], (path, width)
        if path in ("/", "/admin/users"):
            screenshot(narrow.page, "narrow-360-" + (name or "page"))
    narrow.close()
    tab.close()


def test_sign_in_is_keyboard_reachable_and_says_why_it_failed(gw, browser, first_admin) -> None:
    tab = Tab(browser, gw.url)
    tab.open("/")
    page = tab.page
    page.keyboard.press("Tab")  # skip link
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.get_by_role("tab", name="Sign in").focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.name") == "email"
    page.keyboard.type(ADMIN_EMAIL)
    page.keyboard.press("Tab")
    page.keyboard.type("wrong password!")
    page.keyboard.press("Enter")
    alert = page.locator("#panel-login [role=alert]")
    alert.wait_for()
    assert "wrong" in alert.inner_text()
    # Every input on the sign-in page has a label.
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')).map(el => el.name)""")
    assert unlabelled == []
    tab.close()
