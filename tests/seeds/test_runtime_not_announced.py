"""Issue 19 point 7: the bridge does not announce its runtime; our gRPC channels name Tollgate."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.gateway import config, run_gateway


@pytest.fixture
async def gw(tmp_path):
    async with run_gateway(config(tmp_path, demo="on")) as g:
        yield g


async def test_no_python_or_aiohttp_in_the_server_header(gw):
    for method, path in (("GET", "/health"), ("GET", "/api/models"), ("GET", "/no/such/route"),
                         ("POST", "/v1/chat/completions")):
        r = await gw.http.request(method, path)
        server = r.headers.get("Server", "")
        assert "python" not in server.lower() and "aiohttp" not in server.lower(), (path, server)
        assert server == "tollgate"
    # A streamed answer is prepared inside its handler: the header is set there too.
    key = await gw.new_key()
    r = await gw.http.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                           json={"model": "demo", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.headers["Server"] == "tollgate"


async def test_a_malformed_request_line_gets_no_runtime_banner(gw):
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.read(4096), 5)
    writer.close()
    assert head.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")
    assert b"\r\nServer: tollgate\r\n" in head
    assert b"aiohttp" not in head.lower() and b"python/" not in head.lower()


async def test_the_typed_client_names_tollgate_in_its_user_agent():
    """grpc's own agent cannot be removed, but ours comes first (grpc.primary_user_agent)."""
    import grpc

    from tollgate.client import TollgateClient
    from tollgate.v1 import model_service_pb2 as mpb

    seen: list[str] = []

    def handler(request, context):
        seen.append(dict(context.invocation_metadata()).get("user-agent", ""))
        return b""

    class Capture(grpc.GenericRpcHandler):
        def service(self, details):
            return grpc.unary_unary_rpc_method_handler(lambda req, ctx: handler(req, ctx))

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((Capture(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        client = TollgateClient.connect(f"127.0.0.1:{port}")
        await client.models.ListModels(mpb.ListModelsRequest(), timeout=5)
        await client.close()
    finally:
        await server.stop(None)
    assert seen and seen[0].startswith("tollgate-client ")
