"""The web console: static files under /ui/, and / for a browser (Accept: text/html).

The console is plain ES modules and CSS shipped in this package (static/), read once when the
app is built and served from memory, gzipped when the browser accepts it. Its only back end is
the REST API beside it; nothing here decides anything about users, keys or quotas. Every
console response carries a strict CSP (no inline script or style), frame-ancestors 'none' and
the other browser hardening headers (issue 17, point 5).
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml",
         ".ico": "image/x-icon", ".png": "image/png", ".txt": "text/plain"}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gz: bytes | None
    content_type: str
    etag: str


def load_assets(root: Path = STATIC) -> dict[str, Asset]:
    out: dict[str, Asset] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        body = path.read_bytes()
        ctype = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        gz = gzip.compress(body, 9, mtime=0) if ctype.startswith(("text/", "image/svg")) and len(body) > 512 else None
        out[path.relative_to(root).as_posix()] = Asset(body, gz, ctype, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
    return out


ASSETS = web.AppKey("console_assets", dict)


def wants_html(request: web.Request) -> bool:
    """A browser navigating here asks for HTML first; API clients (curl, SDKs: */* or JSON) do not."""
    accept = request.headers.get("Accept", "")
    return "text/html" in accept and "application/json" not in accept.split(",")[0]


def _serve(request: web.Request, name: str) -> web.Response:
    asset = request.app[ASSETS].get(name)
    if asset is None:
        raise web.HTTPNotFound()
    headers = dict(SECURITY_HEADERS)
    headers["ETag"] = asset.etag
    # Revalidate every time: one tiny 304 per file, and a new release is never stale.
    headers["Cache-Control"] = "no-cache"
    headers["Vary"] = "Accept-Encoding"
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers=headers)
    body = asset.body
    if asset.gz is not None and "gzip" in request.headers.get("Accept-Encoding", ""):
        body, headers["Content-Encoding"] = asset.gz, "gzip"
    return web.Response(body=body, headers=headers, content_type=asset.content_type,
                        charset="utf-8" if asset.content_type.startswith("text/") else None)


async def index(request: web.Request) -> web.Response:
    return _serve(request, "index.html")


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"] or "index.html"
    return _serve(request, name)


async def to_ui(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


def add_routes(app: web.Application) -> None:
    app[ASSETS] = load_assets()
    app.router.add_get("/ui", to_ui)
    app.router.add_get("/ui/{name:.*}", static)
