"""The console's static serving: / for a browser and /ui/ with strict security headers; API
clients keep seed 002's JSON at /; the shipped files hold no inline script or style."""

from __future__ import annotations

import gzip
import re

import pytest

from gateway_http.console.routes import STATIC
from tests.support.gateway import ADMIN_KEY, config, run_gateway

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


@pytest.fixture
async def gw(tmp_path):
    async with run_gateway(config(tmp_path, demo="on")) as g:
        yield g


def assert_hardened(r) -> None:
    csp = r.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["default-src"] == "'none'"
    assert "unsafe" not in csp
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "no-referrer"


async def test_a_browser_at_root_gets_the_console_and_api_clients_keep_the_json(gw) -> None:
    r = await gw.http.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert '<script type="module" src="/ui/js/main.js">' in r.text
    assert_hardened(r)
    for accept in (None, "*/*", "application/json", "application/json, text/html"):
        headers = {"X-Admin-Key": ADMIN_KEY, **({"Accept": accept} if accept else {})}
        r = await gw.http.get("/", headers=headers)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json"), accept
        assert r.json()["service"] == "tollgate" and "links" in r.json()


async def test_ui_serves_every_file_with_type_etag_and_gzip(gw) -> None:
    r = await gw.http.get("/ui", follow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"] == "/ui/"
    r = await gw.http.get("/ui/")
    assert r.status_code == 200 and "<title>Tollgate console</title>" in r.text
    assert_hardened(r)
    for path in sorted(p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*") if p.is_file()):
        r = await gw.http.get(f"/ui/{path}", headers={"Accept-Encoding": "identity"})
        assert r.status_code == 200, path
        assert r.content == (STATIC / path).read_bytes()
        want = {"js": "text/javascript", "css": "text/css", "html": "text/html", "svg": "image/svg+xml"}[path.rsplit(".", 1)[1]]
        assert r.headers["Content-Type"].startswith(want), path
        assert_hardened(r)
        etag = r.headers["ETag"]
        again = await gw.http.get(f"/ui/{path}", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
    raw = await gw.http.get("/ui/js/main.js", headers={"Accept-Encoding": "gzip"})
    assert raw.headers["Content-Encoding"] == "gzip"
    assert raw.content == (STATIC / "js/main.js").read_bytes()  # httpx decoded it
    assert len(gzip.compress((STATIC / "js/main.js").read_bytes())) < len((STATIC / "js/main.js").read_bytes())


async def test_unknown_and_escaping_paths_are_404(gw) -> None:
    for path in ("/ui/nope.js", "/ui/../pyproject.toml", "/ui/%2e%2e/gateway_http/app.py", "/ui/js/../../routes.py",
                 "/ui/.hidden"):
        r = await gw.http.get(path)
        assert r.status_code == 404, path
        assert "import" not in r.text


def test_no_inline_script_style_or_markup_injection_in_the_shipped_files() -> None:
    html = (STATIC / "index.html").read_text()
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert 'src="' in tag, tag
    assert not re.search(r"<script\b[^>]*>\s*\S", html.replace('<script type="module" src="/ui/js/main.js"></script>', ""))
    assert not re.search(r"\son[a-z]+\s*=", html) and "<style" not in html and "style=" not in html
    for js in STATIC.rglob("*.js"):
        src = js.read_text()
        # Markup is built with textContent only: no server string is ever parsed as HTML.
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in src, (js.name, sink)
        assert "setAttribute(\"style\"" not in src and "localStorage" not in src, js.name
