"""Shared fixtures: a fake OpenAI upstream and a whole gateway on loopback ports."""

from __future__ import annotations

import pytest

from tests.support.fakes.openai import run_fake_openai
from tests.support.gateway import config, provider, run_gateway


@pytest.fixture
async def fake_openai():
    async with run_fake_openai() as fake:
        yield fake


@pytest.fixture
async def gateway(tmp_path, fake_openai):
    """A gateway routing every model to the fake OpenAI upstream (plus the demo models)."""
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url),))
    async with run_gateway(cfg) as gw:
        yield gw
