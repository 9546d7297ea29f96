"""Loading models (issue 19 point 1; seed 000's POST /api/models/load, ModelService.LoadModel /
StreamLoadModel / UnloadModel) against the fake Ollama's pull/create/blobs/show API and the
fake OpenAI-compatible server, through the REST bridge and over gRPC."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import socket

import grpc
import pytest

from services.providers import ssrf
from services.config.defaults import DEFAULT_TIERS
from tests.support.fakes.ollama import run_fake_ollama
from tests.support.fakes.openai import run_fake_openai
from tests.support.gateway import ADMIN_KEY, config, provider, run_gateway
from tests.support.postgres import postgres_url  # noqa: F401  (fixture)
from tollgate.v1 import model_service_pb2 as mpb
from tollgate.v1 import model_service_pb2_grpc as mpb_grpc

GGUF = b"GGUF" + bytes(range(256)) * 8
HI = [{"role": "user", "content": "Hello!"}]
TIERS = tuple(dataclasses.replace(t, load_models=True) if t.name == "pro" else t for t in DEFAULT_TIERS)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + key}


@pytest.fixture
async def ollama():
    async with run_fake_ollama() as fake:
        yield fake


@pytest.fixture
async def gw(tmp_path, ollama):
    # An allow-list, so that a name no one loaded is a 404 here rather than passed to Ollama.
    cfg = config(tmp_path, providers=(provider("ollama", ollama.base_url, kind="ollama", keys=("",), models=("llava",)),),
                 tiers=TIERS,
                 model_dir=str(tmp_path / "models"))
    (tmp_path / "models" / "path" / "to").mkdir(parents=True)
    (tmp_path / "models" / "path" / "to" / "model").write_bytes(GGUF)
    async with run_gateway(cfg) as g:
        g.key = await g.new_key(tier="pro")
        yield g


async def chat(g, model: str, key: str):
    return await g.http.post("/v1/chat/completions", headers=bearer(key), json={"model": model, "messages": HI})


async def test_gguf_file_is_uploaded_created_listed_and_routable(gw, ollama, tmp_path):
    r = await gw.http.post("/api/models/load", headers=bearer(gw.key),
                           json={"source": "path/to/model", "format": "gguf", "name": "My Custom Model"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["loaded"] is True and body["model"]["name"] == body["model"]["id"] == "My Custom Model"
    assert body["model"]["provider"] == "ollama" and body["model"]["contextLength"] == 131072
    digest = "sha256:" + hashlib.sha256(GGUF).hexdigest()
    statuses = [p["status"] for p in body["progress"]]
    assert statuses[:4] == ["hashing", "hashed", "uploading", "uploaded"] and statuses[-1] == "success"
    assert f"using existing layer {digest}" in statuses and "writing manifest" in statuses
    # The fake Ollama got the file as a blob, then a create naming it.
    assert ollama.blobs[digest] == GGUF
    assert ollama.created == {"my-custom-model": {"model": digest}}
    # Listed everywhere under its name.
    for path, pick in (("/v1/models", lambda j: [m["id"] for m in j["data"]]),
                       ("/api/models", lambda j: [m["id"] for m in j["models"]]),
                       ("/api/v1/models", lambda j: [m["id"] for m in j["data"]])):
        r = await gw.http.get(path, headers=bearer(gw.key))
        assert "My Custom Model" in pick(r.json()), path
    r = await gw.http.get("/v1/models/My Custom Model", headers=bearer(gw.key))
    assert r.status_code == 200 and r.json()["id"] == "My Custom Model"
    # Routable at once: the chat reaches Ollama with Ollama's name for it.
    r = await chat(gw, "My Custom Model", gw.key)
    assert r.status_code == 200, r.text
    assert ollama.requests[-1].path == "/api/chat" and ollama.requests[-1].body["model"] == "my-custom-model"
    # Loading the same file again reuses the blob (HEAD says Ollama has it).
    r = await gw.http.post("/api/models/load", headers=bearer(gw.key),
                           json={"source": "path/to/model", "format": "gguf", "name": "Second Copy"})
    assert r.status_code == 201 and "uploading" not in [p["status"] for p in r.json()["progress"]]
    # The same name twice is a conflict.
    r = await gw.http.post("/api/models/load", headers=bearer(gw.key),
                           json={"source": "path/to/model", "format": "gguf", "name": "My Custom Model"})
    assert r.status_code == 409 and r.json()["code"] == "CONFLICT"


async def test_ollama_pull_streams_progress_as_ndjson_and_sse(gw, ollama):
    async with gw.http.stream("POST", "/api/models/load", headers={**bearer(gw.key), "Accept": "application/x-ndjson"},
                              json={"source": "llama3.2", "format": "ollama", "name": "llama-local"}) as r:
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/x-ndjson")
        lines = [json.loads(line) async for line in r.aiter_lines() if line]
    assert lines[0] == {"status": "pulling manifest"}
    pulling = [x for x in lines if x["status"].startswith("pulling ") and "digest" in x]
    assert [x.get("completed", 0) for x in pulling] == [0, 1009696594, 2019393189] == [0, 1009696594, pulling[-1]["total"]]
    assert lines[-1]["status"] == "success" and lines[-1]["model"]["id"] == "llama-local"
    assert ollama.bodies("/api/pull")[-1] == {"model": "llama3.2", "stream": True}
    r = await chat(gw, "llama-local", gw.key)
    assert r.status_code == 200 and ollama.requests[-1].body["model"] == "llama3.2"

    r = await gw.http.post("/api/models/load", headers={**bearer(gw.key), "Accept": "text/event-stream"},
                           json={"source": "tinyllama", "format": "ollama", "name": "tiny"})
    events = [json.loads(line[6:]) for line in r.text.split("\n") if line.startswith("data: ")]
    assert r.headers["Content-Type"].startswith("text/event-stream")
    assert events[0]["status"] == "pulling manifest" and events[-1]["model"]["id"] == "tiny"


@pytest.mark.parametrize("body,status,field", [
    ({"source": "path/to/missing", "format": "gguf", "name": "x"}, 400, "source"),
    ({"source": "../../etc/passwd", "format": "gguf", "name": "x"}, 400, "source"),
    ({"source": "/etc/hostname", "format": "gguf", "name": "x"}, 400, "source"),
    ({"source": "notes.txt", "format": "gguf", "name": "x"}, 400, "source"),
    ({"source": "path/to/model", "format": "safetensors", "name": "x"}, 400, "format"),
    ({"source": "path/to/model", "format": "gguf", "name": ""}, 400, "name"),
    ({"source": "no-such-model", "format": "ollama", "name": "x"}, 404, "source"),
    ({"source": "http://127.0.0.1:9/v1", "format": "openai", "name": "x"}, 400, "source"),
    ({"source": "http://169.254.169.254/v1", "format": "openai", "name": "x"}, 400, "source"),
    ({"source": "https://unreachable.invalid/v1", "format": "openai", "name": "x"}, 400, "source"),
    ({"source": "path/to/model", "format": "gguf", "name": "demo-clash", "x": 1}, 201, None),
])
async def test_bad_sources_are_clear_4xx(gw, tmp_path, body, status, field):
    (tmp_path / "models" / "notes.txt").write_text("not a model")
    r = await gw.http.post("/api/models/load", headers=bearer(gw.key), json=body)
    assert r.status_code == status, r.text
    if field:
        err = r.json()
        assert err["details"][0]["field"] == field, err
        assert "127.0.0.1" not in err["message"] and "169.254" not in err["message"]


async def test_who_may_load(gw):
    r = await gw.http.post("/api/models/load", headers=bearer(await gw.new_key(tier="basic")),
                           json={"source": "llama3.2", "format": "ollama", "name": "by-basic"})
    assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN"
    r = await gw.http.post("/api/models/load", json={"source": "llama3.2", "format": "ollama", "name": "anon"})
    assert r.status_code == 401
    r = await gw.http.post("/api/models/load", headers={"X-Admin-Key": ADMIN_KEY},
                           json={"source": "llama3.2", "format": "ollama", "name": "by-admin"})
    assert r.status_code == 201, r.text


async def test_unload_takes_it_out_of_routing_and_listings(gw):
    r = await gw.http.post("/api/models/load", headers=bearer(gw.key),
                           json={"source": "llama3.2", "format": "ollama", "name": "Temp Model"})
    assert r.status_code == 201
    r = await gw.http.delete("/api/models/Temp Model", headers=bearer(gw.key))
    assert r.status_code == 200 and r.json()["unloaded"] is True
    r = await chat(gw, "Temp Model", gw.key)
    assert r.status_code == 404, r.text
    assert "Temp Model" not in [m["id"] for m in (await gw.http.get("/v1/models", headers=bearer(gw.key))).json()["data"]]
    r = await gw.http.delete("/api/models/Temp Model", headers=bearer(gw.key))
    assert r.status_code == 404


async def test_grpc_stream_and_persistence_across_a_restart(tmp_path, ollama):
    cfg = config(tmp_path, providers=(provider("ollama", ollama.base_url, kind="ollama", keys=("",)),))
    async with run_gateway(cfg) as g:
        async with grpc.aio.insecure_channel(g.rt.grpc_target) as ch:
            stub = mpb_grpc.ModelServiceStub(ch)
            call = stub.StreamLoadModel(mpb.StreamLoadModelRequest(source="qwen2.5:0.5b", format="ollama", name="qwen"),
                                        metadata=(("x-admin-key", ADMIN_KEY),))
            events = [m async for m in call]
            assert events[0].progress.status == "pulling manifest"
            assert events[-1].WhichOneof("event") == "model" and events[-1].model.id == "qwen" and events[-1].model.loaded
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.LoadModel(mpb.LoadModelRequest(source="x", format="zip", name="y"),
                                     metadata=(("x-admin-key", ADMIN_KEY),))
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    async with run_gateway(cfg) as g:  # a new gateway on the same store
        key = await g.new_key()
        r = await chat(g, "qwen", key)
        assert r.status_code == 200 and ollama.requests[-1].body["model"] == "qwen2.5:0.5b"


def admit_port(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    """The loopback fake stands in for a public server: the URL check and the guarded connector
    admit its one port (as tests/gateway_http/test_user_key_routing.py does)."""
    import services.loading.loader as loader
    import services.providers.upstreams as upstreams

    def factory(addr_info):
        if addr_info[4][:2] == ("127.0.0.1", port):
            return socket.socket(addr_info[0], addr_info[1], addr_info[2])
        return ssrf.guarded_socket_factory(addr_info)

    async def check(url, *a, **kw):
        if url.startswith(f"http://127.0.0.1:{port}/"):
            return ssrf.CheckedUrl(url.rstrip("/"), "127.0.0.1", port, None)
        return await ssrf.check_url_resolving(url, *a, **kw)

    monkeypatch.setattr(upstreams, "guarded_socket_factory", factory, raising=False)
    monkeypatch.setattr(loader.ssrf, "check_url_resolving", check)


async def test_openai_compatible_source_with_a_sealed_key(tmp_path, monkeypatch):
    async with run_fake_openai() as fake, run_gateway(config(tmp_path, demo="on")) as g:
        port = int(fake.base_url.rsplit(":", 1)[1].split("/")[0])
        admit_port(monkeypatch, port)
        fake.accepted_keys = {"sk-remote-0123"}
        fake.listed_models = ["remote-llm", "tokens-3"]
        admin = {"X-Admin-Key": ADMIN_KEY}
        r = await g.http.post("/api/models/load", headers=admin, json={
            "source": fake.base_url, "format": "openai", "name": "Remote", "model": "tokens-3", "api_key": "sk-wrong"})
        assert r.status_code == 400 and r.json()["details"][0]["field"] == "api_key"
        r = await g.http.post("/api/models/load", headers=admin, json={
            "source": fake.base_url, "format": "openai", "name": "Remote", "model": "absent", "api_key": "sk-remote-0123"})
        assert r.status_code == 404 and r.json()["details"][0]["field"] == "model"
        r = await g.http.post("/api/models/load", headers=admin, json={
            "source": fake.base_url, "format": "openai", "name": "Remote", "model": "tokens-3", "api_key": "sk-remote-0123"})
        assert r.status_code == 201, r.text
        assert "sk-remote-0123" not in r.text
        key = await g.new_key()
        r = await chat(g, "Remote", key)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "tok0 tok1 tok2 "
        assert fake.requests[-1].headers["Authorization"] == "Bearer sk-remote-0123"
        assert fake.requests[-1].body["model"] == "tokens-3"
        # Sealed at rest: the row holds no key in clear.
        rows = await g.app.store.run(lambda db: db.execute_sql("SELECT sealed FROM loaded_models").fetchall())
        assert rows and all("sk-remote" not in r[0] and r[0].startswith("v1:") for r in rows)


async def test_loaded_on_one_replica_is_routable_on_another_at_once(tmp_path, ollama, postgres_url):
    """Two gateways on one PostgreSQL: B routes a model A loaded a moment ago, without waiting for
    its periodic re-read (a name B does not know triggers one); an unload on A reaches B too."""
    shared = dict(providers=(provider("ollama", ollama.base_url, kind="ollama", keys=("",), models=("llava",)),),
                  database_url=postgres_url, secret_key="replicas-share-this-secret-0123456789")
    async with run_gateway(config(tmp_path / "a", **shared)) as a, run_gateway(config(tmp_path / "b", **shared)) as b:
        b.app.loaded.poller.every_s = 3600.0  # no help from B's poller: only the miss path may find it
        key = await a.new_key()
        r = await a.http.post("/api/models/load", headers=bearer(key),
                              json={"source": "llama3.2", "format": "ollama", "name": "Shared Model"})
        assert r.status_code == 201, r.text
        r = await chat(b, "Shared Model", key)
        assert r.status_code == 200, r.text
        assert ollama.requests[-1].body["model"] == "llama3.2"
        listed = (await b.http.get("/v1/models", headers=bearer(key))).json()["data"]
        assert "Shared Model" in [m["id"] for m in listed]
        assert (await a.http.delete("/api/models/Shared Model", headers=bearer(key))).status_code == 200
        await b.app.loaded.refresh()  # B's next periodic read (every second by default)
        assert (await chat(b, "Shared Model", key)).status_code == 404


async def test_unload_lets_a_request_under_way_finish(gw, ollama):
    r = await gw.http.post("/api/models/load", headers=bearer(gw.key),
                           json={"source": "llama3.2", "format": "ollama", "name": "Going Away"})
    assert r.status_code == 201
    ollama.token_delay_s = 0.05
    async with gw.http.stream("POST", "/v1/chat/completions", headers=bearer(gw.key),
                              json={"model": "Going Away", "stream": True,
                                    "messages": [{"role": "user", "content": "one two three four five six"}]}) as s:
        lines = s.aiter_lines()
        first = await anext(lines)
        assert first.startswith("data: ")
        assert (await gw.http.delete("/api/models/Going Away", headers=bearer(gw.key))).status_code == 200
        rest = [line async for line in lines]
    assert rest[-2:] == ["data: [DONE]", ""] or rest[-1] == "data: [DONE]"
    assert "error" not in "".join(rest)
    assert (await chat(gw, "Going Away", gw.key)).status_code == 404


async def test_unknown_names_cost_few_reads_of_the_loaded_models(gw):
    """A flood of unknown model names shares its re-reads of the table (at most one per miss_s)."""
    import asyncio

    reads = 0
    real = gw.app.store.list_loaded_models

    async def counting():
        nonlocal reads
        reads += 1
        return await real()

    gw.app.store.list_loaded_models = counting
    t0 = asyncio.get_running_loop().time()
    answers = await asyncio.gather(*(chat(gw, f"no-such-model-{i}", gw.key) for i in range(40)))
    elapsed = asyncio.get_running_loop().time() - t0
    assert {r.status_code for r in answers} == {404}
    assert reads <= 2 + elapsed / gw.app.loaded.miss_s, (reads, elapsed)
