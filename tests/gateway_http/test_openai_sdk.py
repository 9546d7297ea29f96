"""The official openai SDK against the bridge: chat, streams with usage, models, errors."""

from __future__ import annotations

import openai
import pytest

from tests.support.gateway import config, provider, run_gateway


def sdk(gw, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


async def test_chat_returns_upstream_answer_and_usage(gateway, fake_openai):
    key = await gateway.new_key()
    client = sdk(gateway, key)
    resp = await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert resp.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 "
    assert resp.choices[0].finish_reason == "stop"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (fake_openai.prompt_tokens, 8)
    # The caller's Tollgate key never goes upstream; the provider key does.
    sent = fake_openai.requests[-1]
    assert sent.headers["Authorization"] == "Bearer sk-test-upstream"
    assert key not in str(sent.headers)


async def test_stream_with_usage_chunk_then_done(gateway, fake_openai):
    client = sdk(gateway, await gateway.new_key())
    stream = await client.chat.completions.create(
        model="tokens-5", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True})
    text, usage, finishes = "", None, []
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            if chunk.choices[0].finish_reason:
                finishes.append(chunk.choices[0].finish_reason)
        if chunk.usage:
            usage = chunk.usage
    assert text == "tok0 tok1 tok2 tok3 tok4 "
    assert finishes == ["stop"]
    assert usage is not None and usage.completion_tokens == 5


async def test_stream_without_include_usage_sends_no_usage_chunk(gateway):
    client = sdk(gateway, await gateway.new_key())
    raw = await client.chat.completions.with_raw_response.create(
        model="tokens-3", messages=[{"role": "user", "content": "hi"}], stream=True)
    chunks = [c async for c in raw.parse()]
    assert all(c.usage is None for c in chunks)
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-llm-provider"] == "primary"
    assert raw.headers["x-llm-key-id"] == "primary-k1"


async def test_models_list_and_get(tmp_path, fake_openai):
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url, models=("gpt-4o-mini", "my-model")),))
    async with run_gateway(cfg) as gw:
        client = sdk(gw, await gw.new_key())
        ids = [m.id async for m in client.models.list()]
        assert ids == ["gpt-4o-mini", "my-model"]
        m = await client.models.retrieve("gpt-4o-mini")
        assert (m.id, m.owned_by) == ("gpt-4o-mini", "openai")
        with pytest.raises(openai.NotFoundError) as e:
            await client.models.retrieve("no-such-model")
        assert e.value.status_code == 404
        with pytest.raises(openai.NotFoundError) as e:
            await client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
        assert e.value.body["code"] == "model_not_found"


async def test_bad_request_errors(gateway):
    client = sdk(gateway, await gateway.new_key())
    with pytest.raises(openai.BadRequestError) as e:
        await client.chat.completions.create(model="gpt-4o-mini", messages=[])
    assert e.value.status_code == 400 and e.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as e:
        await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], temperature=5)
    assert e.value.body["param"] == "temperature"
    # An upstream 400 stays a 400 with the upstream's message.
    with pytest.raises(openai.BadRequestError) as e:
        await client.chat.completions.create(model="fault-400", messages=[{"role": "user", "content": "x"}])
    assert "temperature" in e.value.message


async def test_authentication_errors(gateway):
    with pytest.raises(openai.AuthenticationError) as e:
        await sdk(gateway, "tg_not-a-real-key").chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 401
    r = await gateway.http.get("/v1/models")  # no key at all
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"
    assert r.headers["x-request-id"].startswith("req_")


async def test_embeddings_float_and_base64(gateway):
    client = sdk(gateway, await gateway.new_key())
    resp = await client.embeddings.create(model="text-embedding-3-small", input=["hello world", "x"], dimensions=4)
    assert [len(d.embedding) for d in resp.data] == [4, 4]
    assert resp.usage.prompt_tokens == 3
    plain = await client.embeddings.create(model="text-embedding-3-small", input="hello world", dimensions=4,
                                           encoding_format="float")
    assert plain.data[0].embedding == pytest.approx(resp.data[0].embedding)
