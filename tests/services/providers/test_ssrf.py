"""RELIABILITY F8: a user's base_url must be public; checked at creation and again at connect."""

from __future__ import annotations

import ipaddress
import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver

from services.providers import ssrf
from services.providers.ssrf import UnsafeUrl, check_url, check_url_resolving, guarded_socket_factory
from services.config.load import load_config
from tests.support.fakes.ollama import run_fake_ollama
from tests.support.gateway import config, run_gateway

REFUSED = [
    # loopback, every spelling
    "http://127.0.0.1:11434", "http://127.0.0.1", "http://127.8.9.10/v1", "http://[::1]:8080/v1", "http://[::]/",
    "http://[0:0:0:0:0:0:0:1]/", "http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/", "http://[::127.0.0.1]/",
    "http://2130706433/", "http://0x7f000001/", "http://0x7F.0.0.1/", "http://0177.0.0.1/", "http://0177.1/",
    "http://127.1/", "http://127.0.1/", "http://017700000001/", "http://0/", "http://0.0.0.0/", "http://127.0.0.1./",
    "http://[64:ff9b::7f00:1]/", "http://[2002:7f00:1::]/",
    # private ranges
    "http://10.0.0.1/", "http://10.255.255.255/", "http://172.16.0.1/", "http://172.31.255.254/",
    "http://192.168.0.1/", "http://192.168.255.255/", "http://167772161/", "http://0xa.0.0.1/", "http://012.0.0.1/",
    "http://[::ffff:10.0.0.1]/", "http://[::ffff:192.168.1.1]/", "http://[fd00::1]/", "http://[fc00::1]/",
    "http://[fec0::1]/", "http://100.64.0.1/", "http://198.18.0.1/",
    # link-local, metadata
    "http://169.254.169.254/latest/meta-data/", "http://169.254.0.1/", "http://2852039166/", "http://0xa9fea9fe/",
    "http://0251.0376.0251.0376/", "http://[::ffff:169.254.169.254]/", "http://[::ffff:a9fe:a9fe]/", "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    # multicast, broadcast, reserved
    "http://224.0.0.1/", "http://255.255.255.255/", "http://240.0.0.1/", "http://[ff02::1]/",
    # local names
    "http://localhost/", "http://localhost:11434/v1", "http://LOCALHOST./", "http://api.localhost/",
    "http://metadata.google.internal/computeMetadata/v1/", "http://printer.local/", "http://redis:6379/",
    "http://metadata/", "http://ip6-localhost/",
    # malformed or ambiguous
    "http://1.2.3.4.5/", "http://08.8.8.8/", "http://8.8.8.08/", "http://example.123/", "http://[not-v6]/",
    "ftp://api.example.com/", "file:///etc/passwd", "gopher://api.example.com/", "http://user:pw@api.example.com/",
    "http://api.example.com@127.0.0.1/", "http://api.example.com/?x=1", "http://api.example.com/#f",
    "http://%31%32%37.0.0.1/", "http://１２７.0.0.1/", "http://api.example.com\\@127.0.0.1/", "http://a b.com/",
    "http://api.example.com\r\nX: y/", "http://api.example.com:0/", "http://api.example.com:99999/", "", "http://",
    "http://" + "a" * 3000 + ".com/",
]
ALLOWED = [
    "https://api.openai.com/v1", "https://openrouter.ai/api/v1", "https://api.anthropic.com",
    "http://8.8.8.8:11434", "https://1.1.1.1/v1/", "http://[2606:4700:4700::1111]/v1", "https://my-proxy.example.com:8443/openai/v1",
    "http://172.32.0.1/", "http://[2001:4860:4860::8888]/",
]


@pytest.mark.parametrize("url", REFUSED)
def test_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl) as e:
        check_url(url)
    assert e.value.reason in ("UNSAFE_BASE_URL", "INVALID_BASE_URL")
    if len(url) > 8:
        assert url not in e.value.message  # never echoed: it may carry a secret


@pytest.mark.parametrize("url", ALLOWED)
def test_allowed(url: str) -> None:
    checked = check_url(url)
    assert checked.url == url.rstrip("/")


def test_forbidden_reason_covers_embedded_ipv4() -> None:
    assert ssrf.forbidden_reason(ipaddress.ip_address("::ffff:8.8.8.8")) is None  # mapped public stays public
    assert ssrf.forbidden_reason(ipaddress.ip_address("::ffff:127.0.0.1")) == "a loopback address"
    assert ssrf.forbidden_reason(ipaddress.ip_address("2002:0a00:0001::")) == "a private address"
    assert ssrf.forbidden_reason(ipaddress.ip_address("169.254.169.254")) == "a link-local address"
    assert ssrf.forbidden_reason(ipaddress.ip_address("2606:4700::1")) is None


def _resolver(mapping: dict[str, list[str]]):
    async def getaddrinfo(host, port, type=0, **_):
        if host not in mapping:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out = []
        for a in mapping[host]:
            fam = socket.AF_INET6 if ":" in a else socket.AF_INET
            out.append((fam, socket.SOCK_STREAM, 6, "", (a, port) if fam == socket.AF_INET else (a, port, 0, 0)))
        return out
    return getaddrinfo


async def test_names_are_resolved_and_every_address_checked() -> None:
    res = _resolver({"good.example.com": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
                     "evil.example.com": ["127.0.0.1"], "sneaky.example.com": ["93.184.215.14", "10.0.0.7"],
                     "meta.example.com": ["169.254.169.254"], "v6.example.com": ["::1"],
                     "mapped.example.com": ["::ffff:127.0.0.1"]})
    assert (await check_url_resolving("https://good.example.com/v1", res)).host == "good.example.com"
    for host in ("evil", "sneaky", "meta", "v6", "mapped"):
        with pytest.raises(UnsafeUrl) as e:
            await check_url_resolving(f"https://{host}.example.com/v1", res)
        assert e.value.reason == "UNSAFE_BASE_URL" and "resolves to" in e.value.message
    with pytest.raises(UnsafeUrl) as e:
        await check_url_resolving("https://nowhere.example.com/v1", res)
    assert e.value.reason == "UNRESOLVABLE_BASE_URL"
    # A literal never reaches the resolver; a literal private address is refused before it.
    assert (await check_url_resolving("https://8.8.8.8/v1", res)).address == ipaddress.ip_address("8.8.8.8")
    with pytest.raises(UnsafeUrl):
        await check_url_resolving("http://127.0.0.1/", res)


async def test_slow_resolution_is_refused() -> None:
    import asyncio

    async def slow(*a, **k):
        await asyncio.sleep(10)

    with pytest.raises(UnsafeUrl) as e:
        await check_url_resolving("https://slow.example.com/", slow, timeout_s=0.05)
    assert e.value.reason == "UNRESOLVABLE_BASE_URL"


def test_socket_factory_refuses_private_addresses() -> None:
    for addr in (("127.0.0.1", 80), ("10.1.2.3", 443), ("169.254.169.254", 80)):
        with pytest.raises(OSError):
            guarded_socket_factory((socket.AF_INET, socket.SOCK_STREAM, 6, "", addr))
    for addr in (("::1", 80, 0, 0), ("::ffff:127.0.0.1", 80, 0, 0), ("fe80::1", 80, 0, 2)):
        with pytest.raises(OSError):
            guarded_socket_factory((socket.AF_INET6, socket.SOCK_STREAM, 6, "", addr))
    s = guarded_socket_factory((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443)))
    s.close()


class _Rebind(AbstractResolver):
    """A name that resolved to a public address at creation and now points at loopback."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [{"hostname": host, "host": "127.0.0.1", "port": self.port, "family": socket.AF_INET, "proto": 0,
                 "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        pass


async def test_connect_time_guard_stops_rebinding_and_redirects() -> None:
    async with run_fake_ollama() as victim:
        port = int(victim.base_url.rsplit(":", 1)[1].split("/")[0])
        # DNS rebinding: the name now resolves to loopback; no socket is opened, nothing is sent.
        conn = aiohttp.TCPConnector(resolver=_Rebind(port), socket_factory=guarded_socket_factory, use_dns_cache=False)
        async with aiohttp.ClientSession(connector=conn) as s:
            with pytest.raises(aiohttp.ClientConnectorError):
                await s.get(f"http://rebind.example.com:{port}/api/tags", headers={"Authorization": "Bearer sk-canary"})
        assert victim.requests == []

        # A "public" upstream (allowed by the test's factory) that redirects to metadata and to loopback.
        async def bounce(request: web.Request) -> web.Response:
            raise web.HTTPFound(request.query["to"])

        app = web.Application()
        app.router.add_get("/bounce", bounce)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        bport = site._server.sockets[0].getsockname()[1]

        def factory(addr_info):
            if addr_info[4][:2] == ("127.0.0.1", bport):  # stands in for a public address
                return socket.socket(addr_info[0], addr_info[1], addr_info[2])
            return guarded_socket_factory(addr_info)

        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=factory)) as s:
                for to in ("http://169.254.169.254/latest/meta-data/", f"http://127.0.0.1:{port}/api/tags",
                           f"http://[::1]:{port}/api/tags"):
                    with pytest.raises(aiohttp.ClientConnectorError):
                        await s.get(f"http://127.0.0.1:{bport}/bounce", params={"to": to})
        finally:
            await runner.cleanup()
        assert victim.requests == []


def test_operator_loopback_config_is_trusted_but_a_user_url_is_not() -> None:
    cfg = load_config(env={"OLLAMA_BASE_URL": "http://127.0.0.1:11434"})
    ollama = [p for p in cfg.providers if p.kind == "ollama"]
    assert ollama and ollama[0].base_url.startswith("http://127.0.0.1:11434")
    with pytest.raises(UnsafeUrl):
        check_url("http://127.0.0.1:11434")


async def test_operator_ollama_on_loopback_serves_while_user_keys_there_are_refused(tmp_path) -> None:
    async with run_fake_ollama() as fake:
        cfg = load_config(env={"OLLAMA_BASE_URL": fake.base_url})
        assert [p.base_url for p in cfg.providers if p.kind == "ollama"] == [fake.base_url]
        async with run_gateway(config(tmp_path, providers=cfg.providers, demo="on")) as gw:
            key = await gw.new_key()
            r = await gw.http.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                   json={"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200, r.text
            assert len(fake.requests) == 1
            r = await gw.http.post("/api/auth/register", json={"email": "u@example.com", "password": "correct horse"})
            session = r.json()["token"]
            for kind, url in (("ollama", fake.base_url), ("ollama", ""), ("openai", "http://169.254.169.254/v1"),
                              ("openai_compatible", "http://2130706433:11434/v1"), ("openai", "http://[::1]:80/v1")):
                r = await gw.http.post("/api/keys", headers={"Authorization": f"Bearer {session}"},
                                       json={"provider": kind, "key": "sk-user-canary-0123456789", "baseUrl": url})
                assert r.status_code == 400, (kind, url, r.text)
                err = r.json()["error"]
                assert err["code"] == "VALIDATION_ERROR"
                assert any(d["field"] == "base_url" for d in err["details"])
                assert "sk-user-canary" not in r.text
            r = await gw.http.get("/api/keys", headers={"Authorization": f"Bearer {session}"})
            assert r.json()["keys"] == []
        assert len(fake.requests) == 1
