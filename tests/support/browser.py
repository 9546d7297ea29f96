"""Browser tests' support: a whole gateway on its own thread and event loop, and headless Chromium.

The console tests drive Debian's chromium (scripts/browser-up installs it; `make test` runs that)
with Playwright's sync API, so the gateway cannot share the test's thread: it runs in a thread
of its own with its own loop, on real loopback ports, stopped by its owner at the end. Under
CI=true a missing browser fails the test; elsewhere it skips with the command that installs it.
"""

from __future__ import annotations

import asyncio
import re
import os
import subprocess
import tempfile
import threading
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Coroutine, Iterator

import pytest

from tests.support.gateway import Gateway, run_gateway

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "screenshots"


def chromium_path() -> str:
    """Debian's chromium, installed by scripts/browser-up when missing (never `playwright install`)."""
    path = os.environ.get("TOLLGATE_CHROMIUM") or "/usr/bin/chromium"
    if not (os.path.exists(path) and os.access(path, os.X_OK)):
        try:
            subprocess.run(["bash", str(REPO / "scripts" / "browser-up")], check=True, capture_output=True, timeout=600)
        except (subprocess.SubprocessError, OSError) as e:
            if os.environ.get("CI") == "true":
                pytest.fail(f"chromium is missing and scripts/browser-up could not install it: {e}")
        if not os.path.exists(path):
            if os.environ.get("CI") == "true":
                pytest.fail(f"chromium is missing at {path}: run scripts/browser-up")
            pytest.skip(f"chromium is missing at {path}: run `bash scripts/browser-up` (apt-get install chromium)")
    return path


class ThreadedGateway:
    """run_gateway() on a private loop in a daemon thread; call(coro_fn) runs work on that loop."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.loop = asyncio.new_event_loop()
        self.gw: Gateway | None = None
        self._stop: asyncio.Event | None = None
        self._ready: Future = Future()
        self._done: Future = Future()
        self._thread = threading.Thread(target=self._run, name="console-gateway", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as e:  # surfaced to the starter
            if not self._ready.done():
                self._ready.set_exception(e)
        finally:
            self.loop.close()
            self._done.set_result(None)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with run_gateway(self.cfg) as gw:
            self.gw = gw
            self._ready.set_result(gw)
            await self._stop.wait()

    def start(self) -> "ThreadedGateway":
        self._thread.start()
        self._ready.result(timeout=60)
        return self

    @property
    def url(self) -> str:
        assert self.gw is not None
        return self.gw.url

    def call(self, fn: Callable[[Gateway], Coroutine[Any, Any, Any]], timeout: float = 60) -> Any:
        """Runs `await fn(gateway)` on the gateway's loop and returns its result."""
        return asyncio.run_coroutine_threadsafe(fn(self.gw), self.loop).result(timeout)

    def stop(self) -> None:
        if self._stop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._done.result(timeout=60)
        self._thread.join(timeout=10)


@contextmanager
def threaded_gateway(cfg) -> Iterator[ThreadedGateway]:
    tg = ThreadedGateway(cfg).start()
    try:
        yield tg
    finally:
        tg.stop()


class PageWatch:
    """Collects what a page should never show: console errors, uncaught exceptions, failed requests
    (network failures and HTTP status >= 400), each with its URL, until cleared."""

    def __init__(self, page, missing: set[str] = frozenset()) -> None:
        self.problems: list[str] = []
        self.missing = missing  # paths of contract routes the gateway does not serve yet
        page.on("console", lambda m: m.type == "error" and self.problems.append(f"console error: {m.text} @ {m.location.get('url', '')}"))
        page.on("pageerror", lambda e: self.problems.append(f"uncaught: {e}"))
        page.on("requestfailed", lambda r: self._failed(r))
        page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status} {r.request.method} {r.url}"))

    def _failed(self, r) -> None:
        err = r.failure or ""
        if "ERR_ABORTED" in err and r.resource_type == "fetch":
            return  # a page's own AbortController (leaving the page) or a finished download
        self.problems.append(f"request failed: {r.method} {r.url} {err}")

    def take(self) -> list[str]:
        """The problems so far, less the 404s of routes in `missing` (a page says those in words)."""
        out, self.problems = self.problems, []
        return [p for p in out if not any(re.search(re.escape(m) + r"(\?|$|\s)", p) for m in self.missing)]


def screenshot(page, name: str) -> Path:
    """A 1440x900 picture of the page. `make screenshots` (TOLLGATE_SCREENSHOTS=1) writes them into
    docs/screenshots/ to be committed; other runs write them to a temporary folder, so eight people
    running the suite do not each rewrite (and conflict on) the committed PNGs."""
    folder = SCREENSHOTS if os.environ.get("TOLLGATE_SCREENSHOTS") == "1" else Path(tempfile.gettempdir()) / "tollgate-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, f"screenshot {name} is empty"
    return path


def has_route(base_url: str, method: str, path: str, **kw) -> bool:
    """Whether the gateway serves `method path` at all (not aiohttp's route-missing 404 / 405)."""
    import httpx

    r = httpx.request(method, base_url + path, timeout=10, **kw)
    if r.status_code not in (404, 405):
        return True
    try:
        err = r.json().get("error")
    except ValueError:
        return True
    return not (isinstance(err, dict) and err.get("message") in ("Not found", "Method not allowed"))

