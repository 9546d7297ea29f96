"""Model aliases at run time (issue 18 point 6): GET /api/admin/aliases, PUT|DELETE
/api/admin/aliases/{name}. Admin key in X-Admin-Key; each route is one AdminService call
(SetModelAlias / DeleteModelAlias / ListModelAliases); errors in the admin routes' shape."""

from __future__ import annotations

import orjson
from aiohttp import web

from gateway_http import calls
from gateway_http.body import read_body
from gateway_http.errors import BridgeError
from gateway_http.seeds.admin import _call, bad_request
from tollgate.v1 import admin_service_pb2 as apb


def alias_json(a: apb.ModelAlias) -> dict:
    return {"name": a.name, "models": list(a.models), "source": a.source}


def _ok(body: dict, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


async def list_aliases(request: web.Request) -> web.Response:
    resp, err = await _call(request, calls.client(request).admin.ListModelAliases, apb.ListModelAliasesRequest())
    if err:
        return err
    return _ok({"aliases": [alias_json(a) for a in resp.aliases]})


async def put_alias(request: web.Request) -> web.Response:
    try:
        raw = await read_body(request)
        body = orjson.loads(raw) if raw.strip() else {}
    except BridgeError as e:
        return bad_request(e.message)
    except orjson.JSONDecodeError:
        return bad_request("The body must be a JSON object.")
    models = body.get("models") if isinstance(body, dict) else None
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        return bad_request("'models' must be a list of model names, in the order they are tried.")
    msg = apb.SetModelAliasRequest(name=request.match_info["name"], models=models)
    resp, err = await _call(request, calls.client(request).admin.SetModelAlias, msg)
    if err:
        return err
    return _ok(alias_json(resp.alias))


async def delete_alias(request: web.Request) -> web.Response:
    msg = apb.DeleteModelAliasRequest(name=request.match_info["name"])
    resp, err = await _call(request, calls.client(request).admin.DeleteModelAlias, msg)
    if err:
        return err
    return _ok(alias_json(resp.alias))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/admin/aliases", list_aliases)
    app.router.add_put("/api/admin/aliases/{name}", put_alias)
    app.router.add_delete("/api/admin/aliases/{name}", delete_alias)
