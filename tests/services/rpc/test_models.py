"""services/rpc/models.py: ModelService over a real port: the catalogue in pages and by search,
a model by id or NOT_FOUND naming it, providers shown without anything secret in their URLs, and
loading a model (who may, what a bad source gets, listed and routable once loaded, unloaded)."""

from __future__ import annotations

import dataclasses

import grpc
import pytest

from services.config.defaults import DEFAULT_TIERS
from tests.services.rpc.conftest import ADMIN, bearer, refused, refused_stream
from tests.support.fakes.ollama import run_fake_ollama
from tests.support.gateway import config, provider, run_gateway
from services.rpc.models import public_url
from tollgate.v1 import model_service_pb2 as mpb
from tollgate.v1 import model_service_pb2_grpc as mpb_grpc

TIERS = tuple(dataclasses.replace(t, load_models=True) if t.name == "pro" else t for t in DEFAULT_TIERS)
ALLOWED = ("gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini")


@pytest.fixture
async def models(tmp_path, fake_openai):
    """A gateway with an allow-listed OpenAI provider whose URL carries credentials, and an Ollama."""
    async with run_fake_ollama() as ollama:
        url = fake_openai.base_url.replace("http://", "http://user:pw@") + "?key=sk-in-the-url"
        cfg = config(tmp_path, tiers=TIERS, providers=(
            provider("primary", url, models=ALLOWED),
            provider("local", ollama.base_url, kind="ollama", keys=("",), models=("llava",))))
        async with run_gateway(cfg) as gw, grpc.aio.insecure_channel(gw.rt.grpc_target) as ch:
            yield mpb_grpc.ModelServiceStub(ch), gw


async def test_list_models_pages_through_the_routable_catalogue(models):
    stub, gw = models
    key = await gw.new_key()
    first = await stub.ListModels(mpb.ListModelsRequest(page_size=2), metadata=bearer(key))
    assert first.total_size == 4 and len(first.models) == 2 and first.next_page_token
    rest = await stub.ListModels(mpb.ListModelsRequest(page_size=2, page_token=first.next_page_token), metadata=bearer(key))
    assert rest.next_page_token == ""
    ids = [m.id for m in first.models] + [m.id for m in rest.models]
    assert sorted(ids) == sorted(ALLOWED + ("llava",))
    only = await stub.ListModels(mpb.ListModelsRequest(search="4.1-mini"), metadata=bearer(key))
    assert [(m.id, list(m.providers)) for m in only.models] == [("gpt-4.1-mini", ["primary"])]
    err = await refused(stub.ListModels(mpb.ListModelsRequest(page_size=-1), metadata=bearer(key)))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.reason == "INVALID_PAGE_SIZE"


async def test_get_model_gives_its_prices_or_not_found_naming_it(models):
    stub, gw = models
    key = await gw.new_key()
    got = (await stub.GetModel(mpb.GetModelRequest(id="gpt-4o-mini"), metadata=bearer(key))).model
    assert got.id == "gpt-4o-mini" and got.pricing.prompt_per_mtok > 0 and got.max_completion_tokens == 16384
    assert not got.loaded and list(got.providers) == ["primary"]
    err = await refused(stub.GetModel(mpb.GetModelRequest(id="gpt-nope"), metadata=bearer(key)))
    assert err.code == grpc.StatusCode.NOT_FOUND and err.reason == "MODEL_NOT_FOUND" and err.metadata["model"] == "gpt-nope"


async def test_list_providers_needs_no_key_and_shows_no_secret(models):
    stub, _ = models
    resp = await stub.ListProviders(mpb.ListProvidersRequest())
    by_name = {p.name: p for p in resp.providers}
    primary = by_name["primary"]
    assert primary.kind == "openai" and list(primary.models) == list(ALLOWED) and primary.key_count == 1
    assert "user" not in primary.base_url and "pw" not in primary.base_url and "sk-in-the-url" not in primary.base_url
    assert primary.base_url.startswith("http://127.0.0.1:")
    assert by_name["local"].kind == "ollama" and resp.strategy


@pytest.mark.parametrize("url, public", [
    ("https://user:secret@api.example.com:8443/v1?key=abc#frag", "https://api.example.com:8443/v1"),
    ("http://[::1]:11434/", "http://[::1]:11434/"),
    ("", ""),
])
def test_public_url_keeps_scheme_host_port_and_path_only(url, public):
    assert public_url(url) == public


async def test_loading_needs_a_tier_that_may_load(models):
    stub, gw = models
    basic = await gw.new_key(tier="basic")
    err = await refused(stub.LoadModel(mpb.LoadModelRequest(source="qwen2.5:0.5b", format="ollama", name="qwen"),
                                       metadata=bearer(basic)))
    assert err.code == grpc.StatusCode.PERMISSION_DENIED and err.reason == "MODEL_LOAD_NOT_ALLOWED"
    assert err.metadata["tier"] == "basic"


async def test_a_loopback_openai_source_is_refused_naming_the_source(models):
    stub, gw = models
    _, err = await refused_stream(stub.StreamLoadModel(
        mpb.StreamLoadModelRequest(source="http://127.0.0.1:1/v1", format="openai", name="sneaky"), metadata=ADMIN))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and [f for f, _ in err.field_violations] == ["source"]


async def test_a_loaded_model_is_listed_got_and_unloaded(models):
    stub, gw = models
    key = await gw.new_key(tier="pro")
    resp = await stub.LoadModel(mpb.LoadModelRequest(source="qwen2.5:0.5b", format="ollama", name="Qwen Small"),
                                metadata=bearer(key))
    assert resp.model.id == "Qwen Small" and resp.model.loaded and list(resp.model.providers) == ["local"]
    assert resp.progress[0].status == "pulling manifest" and resp.progress[-1].status == "success"
    listed = await stub.ListModels(mpb.ListModelsRequest(search="qwen"), metadata=bearer(key))
    assert [(m.id, m.loaded) for m in listed.models] == [("Qwen Small", True)]
    got = await stub.GetModel(mpb.GetModelRequest(id="Qwen Small"), metadata=bearer(key))
    assert got.model.loaded and got.model.created > 0
    gone = await stub.UnloadModel(mpb.UnloadModelRequest(name="Qwen Small"), metadata=bearer(key))
    assert gone.model.id == "Qwen Small"
    err = await refused(stub.UnloadModel(mpb.UnloadModelRequest(name="Qwen Small"), metadata=bearer(key)))
    assert err.code == grpc.StatusCode.NOT_FOUND and err.reason == "MODEL_NOT_FOUND"
    err = await refused(stub.GetModel(mpb.GetModelRequest(id="Qwen Small"), metadata=bearer(key)))
    assert err.code == grpc.StatusCode.NOT_FOUND
