"""Seed 004's multimodal promise on the OpenAI surface (issue 18 point 5), through the official
openai SDK: images, speech and transcription (multipart) reach a route that has them as sent and
come back unchanged, one ledger row each with the provider's usage where it reports one; a route
without them is a 400 naming the operation, before any upstream call."""

from __future__ import annotations

import openai
import pytest

from tests.support.fakes.anthropic import FAKE_ANTHROPIC_KEY, run_fake_anthropic
from tests.support.fakes.openai import run_fake_openai
from tests.support.gateway import config, provider, run_gateway


@pytest.mark.client("openai", "images.generate, audio.speech.create, audio.transcriptions.create (multipart)",
                    "OpenAI route: /v1/images/generations, /v1/audio/speech, /v1/audio/transcriptions as sent")
async def test_images_and_audio_reach_a_route_that_has_them(tmp_path):
    async with run_fake_openai() as oa, run_fake_anthropic() as anth:
        cfg = config(tmp_path, providers=(
            provider("openai", oa.base_url, models=("gpt-image-1", "gpt-4o-mini-tts", "gpt-4o-transcribe")),
            provider("anthropic", anth.base_url, kind="anthropic", keys=(FAKE_ANTHROPIC_KEY,), models=("claude-haiku-4-5",))))
        async with run_gateway(cfg) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=await gw.new_key(), max_retries=0)
            img = await client.images.generate(model="gpt-image-1", prompt="a red dot", n=2, size="1024x1024")
            assert len(img.data) == 2 and img.data[0].b64_json and img.usage.output_tokens == 544
            assert oa.requests[-1].body == {"model": "gpt-image-1", "prompt": "a red dot", "n": 2, "size": "1024x1024"}
            speech = await client.audio.speech.create(model="gpt-4o-mini-tts", voice="alloy", input="hello")
            assert speech.content == b"ID3fake-mp3-hello"
            text = await client.audio.transcriptions.create(model="gpt-4o-transcribe",
                                                            file=("hello.wav", b"RIFF" + b"\0" * 400, "audio/wav"))
            assert text.text == "hello from the audio"
            sent = oa.requests[-1].body
            assert (sent["model"], sent["file_name"], sent["file_size"]) == ("gpt-4o-transcribe", "hello.wav", 404)
            rows = await gw.ledger()
            assert len(rows) == 3 and all(r.provider == "openai" and r.status == "ok" for r in rows)
            img_row = [r for r in rows if r.surface == "openai_images"][0]
            assert (img_row.prompt_tokens, img_row.completion_tokens, img_row.estimated) == (10, 544, False)
            transcribed, spoken = [r for r in rows if r.surface == "openai_audio"]  # newest first
            assert (transcribed.prompt_tokens, transcribed.completion_tokens, transcribed.estimated) == (14, 5, False)
            assert spoken.estimated  # speech answers carry no usage: the row says it is an estimate
            with pytest.raises(openai.BadRequestError) as e:
                await client.images.generate(model="claude-haiku-4-5", prompt="x")
            assert "images/generations" in e.value.message and "anthropic" in e.value.message
            assert len(anth.requests) == 0


@pytest.mark.client("openai", "images.generate / audio.speech.create / audio.transcriptions.create: metered as billed",
                    "cost_usd per image (size, quality), per character (tts-1), per minute (whisper-1)")
async def test_images_and_audio_are_priced_as_the_provider_bills_them(tmp_path):
    from services.catalog.pricing import Catalog
    from tests.support.fakes.openai_media import wav

    cat = Catalog.builtin()
    async with run_fake_openai() as oa:
        cfg = config(tmp_path, providers=(provider("openai", oa.base_url, models=(
            "dall-e-3", "gpt-image-1", "tts-1", "whisper-1")),))
        async with run_gateway(cfg) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=await gw.new_key(), max_retries=0)

            async def last_row():
                return (await gw.ledger())[0]  # newest first

            # DALL·E: no usage in the answer; n images at the per-image price for size and quality.
            img = await client.images.generate(model="dall-e-3", prompt="a red dot", n=3, size="1792x1024", quality="hd")
            assert len(img.data) == 3
            row = await last_row()
            assert row.surface == "openai_images" and not row.estimated
            assert row.cost_usd == pytest.approx(3 * 0.12) == pytest.approx(3 * cat.image_price("dall-e-3", "1792x1024", "hd"))
            await client.images.generate(model="dall-e-3", prompt="x")  # defaults: 1 image, 1024x1024 standard
            assert (await last_row()).cost_usd == pytest.approx(0.04)
            # gpt-image-1 reports tokens: priced by token as OpenAI bills it (text in $5, image out $40 /1M).
            await client.images.generate(model="gpt-image-1", prompt="a red dot", n=2, size="1024x1024")
            row = await last_row()
            assert (row.prompt_tokens, row.completion_tokens, row.estimated) == (10, 544, False)
            assert row.cost_usd == pytest.approx((10 * 5.0 + 544 * 40.0) / 1e6)
            # tts-1: $15 per million characters of input, exact (the characters sent are what is billed).
            text = "hello, this is forty-two characters long.."
            await client.audio.speech.create(model="tts-1", voice="alloy", input=text)
            row = await last_row()
            assert row.surface == "openai_audio" and not row.estimated
            assert row.cost_usd == pytest.approx(len(text) * 15.0 / 1e6)
            # whisper-1: $0.006 per minute; the answer's usage.seconds (rounded up by OpenAI) is billed.
            await client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav(89.5), "audio/wav"))
            row = await last_row()
            assert not row.estimated and row.cost_usd == pytest.approx(90 / 60 * 0.006)
            # verbose_json: the answer's `duration`.
            await client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav(30), "audio/wav"),
                                                     response_format="verbose_json")
            row = await last_row()
            assert not row.estimated and row.cost_usd == pytest.approx(30 / 60 * 0.006)
            # response_format=text carries no duration: read from the uploaded WAV, recorded as an estimate.
            out = await client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav(120), "audio/wav"),
                                                           response_format="text")
            assert "hello from the audio" in str(out)
            row = await last_row()
            assert row.estimated and row.cost_usd == pytest.approx(120 / 60 * 0.006)
            assert oa.requests[-1].body["response_format"] == "text"


async def test_a_bad_transcription_upload_is_a_clear_400_in_openai_format(tmp_path):
    import httpx

    async with run_fake_openai() as oa:
        cfg = config(tmp_path, providers=(provider("openai", oa.base_url, models=("whisper-1",)),))
        async with run_gateway(cfg) as gw:
            key = await gw.new_key()
            url = gw.url + "/v1/audio/transcriptions"
            auth = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient() as http:
                cases = [
                    ({"Content-Type": "application/json"}, b'{"model": "whisper-1"}', "multipart/form-data"),
                    ({"Content-Type": "multipart/form-data"}, b"x", "no boundary"),
                    ({"Content-Type": "multipart/form-data; boundary=abc"}, b"--zzz\r\n\r\n", "boundary"),
                    ({"Content-Type": "multipart/form-data; boundary=abc"},
                     b'--abc\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n--abc--\r\n', "'file'"),
                ]
                for headers, content, says in cases:
                    r = await http.post(url, headers={**auth, **headers}, content=content)
                    assert r.status_code == 400, (says, r.text)
                    err = r.json()["error"]
                    assert says in err["message"] and err["type"] == "invalid_request_error" and err["param"] == "file"
                # a file but no model: OpenAI's own message for it
                r = await http.post(url, headers=auth, files={"file": ("a.wav", b"RIFF0000WAVE", "audio/wav")})
                assert r.status_code == 400 and r.json()["error"]["message"] == "Missing required parameter: 'model'."
            assert oa.requests == []  # none of them reached the provider
