#!/usr/bin/env python3
"""The web console's first load in headless Chromium: page weight and time to first render.

Starts one gateway in-process on 127.0.0.1 (demo provider, SQLite in a temp dir), then loads
/ui/ N times in fresh browser contexts (cold cache, signed out: the sign-in page), and N times
the signed-in start page (usage & quota). Debian's chromium (scripts/browser-up) is driven by
Playwright's Python package; nothing is downloaded.

  .venv/bin/python bench/console_load.py            # 10 loads each
  .venv/bin/python bench/console_load.py --loads 30

Reported (median, min, max over the loads), from the Navigation Timing and Paint Timing APIs:
  ttfb     responseStart of the document
  dcl      domContentLoadedEventEnd
  fcp      first-contentful-paint (the sign-in page's text: the time to first render)
  ready    the page's <h1> rendered by the console's modules (performance.now() when seen)
and bytes over the wire (transferSize, gzip) and decoded, of the document and every resource.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.support.browser import chromium_path, threaded_gateway  # noqa: E402
from tests.support.gateway import config  # noqa: E402

TIMING = """() => {
  const n = performance.getEntriesByType('navigation')[0];
  const fcp = performance.getEntriesByName('first-contentful-paint')[0];
  const res = performance.getEntriesByType('resource');
  return {ttfb: n.responseStart, dcl: n.domContentLoadedEventEnd, fcp: fcp ? fcp.startTime : null, ready: performance.now(),
          transfer: n.transferSize + res.reduce((a, r) => a + r.transferSize, 0),
          decoded: n.decodedBodySize + res.reduce((a, r) => a + r.decodedBodySize, 0), files: 1 + res.length};
}"""


def load(browser, url: str, wait: str, signin=None) -> dict:
    ctx = browser.new_context(viewport={"width": 1440, "height": 900})
    page = ctx.new_page()
    if signin:
        signin(page)
        page.goto("about:blank")
    page.goto(url)
    page.wait_for_selector(wait)
    out = page.evaluate(TIMING)
    page.wait_for_load_state("networkidle")
    after = page.evaluate(TIMING)
    out["transfer"], out["decoded"], out["files"] = after["transfer"], after["decoded"], after["files"]
    ctx.close()
    return out


def report(name: str, runs: list[dict]) -> None:
    print(f"\n{name} ({len(runs)} cold loads)")
    for k in ("ttfb", "dcl", "fcp", "ready"):
        xs = [r[k] for r in runs if r[k] is not None]
        print(f"  {k:6} median {statistics.median(xs):7.1f} ms   min {min(xs):7.1f}   max {max(xs):7.1f}")
    r = runs[-1]
    print(f"  weight {r['transfer'] / 1024:.1f} KB over the wire (gzip), {r['decoded'] / 1024:.1f} KB decoded, {r['files']} files")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--loads", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, threaded_gateway(config(Path(tmp), demo="on")) as gw, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-dev-shm-usage"])
        import httpx

        httpx.post(gw.url + "/api/auth/register", json={"email": "bench@example.com", "password": "bench-password-1"})

        def signin(page):
            page.goto(gw.url + "/ui/")
            page.get_by_role("tab", name="Sign in").click()
            page.locator("#panel-login input[name=email]").fill("bench@example.com")
            page.locator("#panel-login input[name=password]").fill("bench-password-1")
            page.locator("#panel-login button[type=submit]").click()
            page.wait_for_selector("#nav:not([hidden])")

        load(browser, gw.url + "/ui/", "text=Sign in to Tollgate")  # warm the server once
        cold = [load(browser, gw.url + "/ui/", "text=Sign in to Tollgate") for _ in range(args.loads)]
        report("sign-in page /ui/", cold)
        # Signed in: the tab remembers its session (sessionStorage / cookie) across the reload.
        runs = []
        for _ in range(args.loads):
            ctx = browser.new_context(viewport={"width": 1440, "height": 900})
            page = ctx.new_page()
            signin(page)
            page.reload()
            page.wait_for_selector("text=Requests")  # the month's totals, drawn from the REST API
            out = page.evaluate(TIMING)
            page.wait_for_load_state("networkidle")
            after = page.evaluate(TIMING)
            out["transfer"], out["decoded"], out["files"] = after["transfer"], after["decoded"], after["files"]
            runs.append(out)
            ctx.close()
        report("start page signed in (usage & quota; a reload, so files revalidate with 304s)", runs)
        print(f"\nchromium {browser.version}, {os.cpu_count()} cores shared; gateway in-process on 127.0.0.1")
        browser.close()


if __name__ == "__main__":
    main()
