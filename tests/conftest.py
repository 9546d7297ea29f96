"""Shared fixtures: a fake OpenAI upstream and a whole gateway on loopback ports."""

from __future__ import annotations

import pytest

from tests.support.fakes.openai import run_fake_openai
from tests.support.gateway import config, provider, run_gateway


def pytest_configure(config: pytest.Config) -> None:
    from tests.support.client_matrix import ClientMatrix

    config.pluginmanager.register(ClientMatrix(), "tollgate-client-matrix")  # docs/clients.md


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


# --- no secret in any log line, over the whole suite (issue 7, RELIABILITY F3) -----------------

import logging  # noqa: E402

from services.auth.key_vault import KeyVault  # noqa: E402
from services.auth.provider_secrets import ProviderSecrets  # noqa: E402

_SECRETS: set[str] = set()


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    # The tests' own HTTP clients log the URLs the tests chose (F7 sends a key in a query on purpose).
    CLIENT_LOGGERS = ("httpx", "httpcore", "openai", "anthropic")

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(self.CLIENT_LOGGERS):
            return
        try:
            self.lines.append(self.format(record))
        except Exception:  # a record that cannot be formatted is not a leak
            pass


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log_line():
    """Captures every log line of the in-process gateways and, at the end, searches it for every API
    key, token and provider key the tests created (a spy on auth/'s create paths records them)."""
    from tests.support.gateway import ADMIN_KEY

    capture = _Capture()
    capture.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.INFO)
    logging.getLogger("peewee").setLevel(logging.INFO)
    create_key, add_pk = KeyVault.create, ProviderSecrets.add

    async def spy_create(self, *a, **kw):
        rec, plaintext = await create_key(self, *a, **kw)
        _SECRETS.add(plaintext)
        return rec, plaintext

    async def spy_add(self, *a, **kw):
        if kw.get("secret"):
            _SECRETS.add(kw["secret"])
        return await add_pk(self, *a, **kw)

    KeyVault.create, ProviderSecrets.add = spy_create, spy_add
    _SECRETS.update({ADMIN_KEY, "sk-test-upstream"})
    try:
        yield
    finally:
        KeyVault.create, ProviderSecrets.add = create_key, add_pk
        root.removeHandler(capture)
        root.setLevel(old_level)
    text = "\n".join(capture.lines)
    leaked = sorted(s for s in _SECRETS if len(s) >= 12 and s in text)
    where = [line[:160].replace(s, "<SECRET>") for s in leaked[:1] for line in capture.lines if s in line][:3]
    assert not leaked, f"{len(leaked)} secrets appeared in log lines, e.g.: {where}"
