"""The soak's traffic: D4's fault mix at a steady rate (G2), fuzzed requests (G3), random cancels and
short connections (G4), slowloris sockets (E11). Each request reports what the caller saw.

Fault kinds (D4), each routed through its own provider key on the fake OpenAI upstream so one
kind's open circuit never turns another kind into a fast 503:
  5xx         the upstream answers 503 every time            -> 502/503 + a row
  cut         a stream cut after 2 tokens                    -> 200 + an in-band error event + a row
  disconnect  a stream that stalls; the caller leaves after 3 chunks -> a row `client_cancelled`
  deadline    first token after 10 s, gateway request timeout 4 s   -> 504 + a row
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import orjson

HI = [{"role": "user", "content": "hi"}]
FAULT_MODELS = {"5xx": "fault-503", "cut": "fault-cut-after-2", "disconnect": "fault-stall-after-5",
                "deadline": "fault-slow-first-10"}
NORMAL = (("chat", 45), ("stream", 30), ("embeddings", 10), ("messages", 10), ("models", 5))
ROUTED_NORMAL = tuple(kw for kw in NORMAL if kw[0] != "models")  # D4: every request is one ledger row
ROUTED = {"chat", "stream", "embeddings", "messages", "5xx", "cut", "disconnect", "deadline", "cancel"}
# A faulty key's breaker opens after five failures in a row: its next callers get our 503 (RELIABILITY A1/A7).
OK_STATUS = {"chat": {200}, "stream": {200}, "embeddings": {200}, "messages": {200}, "models": {200},
             "5xx": {502, 503}, "cut": {200, 503}, "disconnect": {200, 503}, "deadline": {504, 503}, "cancel": {200}}


@dataclass
class Result:
    kind: str
    status: int  # 0: no HTTP answer (connection refused or reset)
    request_id: str = ""
    latency_s: float = 0.0
    note: str = ""  # in-band error, transport error


@dataclass
class Tally:
    results: list[Result] = field(default_factory=list)

    def add(self, r: Result) -> None:
        self.results.append(r)

    def errors_by_kind(self) -> Counter:
        """(kind, what went wrong) for every answer the kind does not earn."""
        c: Counter = Counter()
        for r in self.results:
            if r.status not in OK_STATUS.get(r.kind, {200}):
                c[f"{r.kind}:{r.status or r.note}"] += 1
        return c

    def statuses(self) -> Counter:
        return Counter(f"{r.kind}:{r.status}" for r in self.results)

    def routed_ids(self) -> set[str]:
        """Ids of the routed requests the gateway answered (a drain's 503 carries no id: never admitted)."""
        return {r.request_id for r in self.results if r.kind in ROUTED and r.request_id}


def pick(rng: random.Random, fault_share: float) -> str:
    if rng.random() < fault_share:
        return rng.choice(list(FAULT_MODELS))
    names, weights = zip(*NORMAL)
    return rng.choices(names, weights)[0]


async def one(http: aiohttp.ClientSession, url: str, auth: dict, kind: str) -> Result:
    """One request of `kind`, read to its end (or left, for `disconnect`); what the caller saw."""
    t0 = time.monotonic()
    chat = url + "/v1/chat/completions"
    if kind == "chat":
        req = http.post(chat, json={"model": "tokens-3", "messages": HI}, headers=auth)
    elif kind in ("stream", "cut", "disconnect"):
        model = FAULT_MODELS.get(kind, "tokens-8")
        req = http.post(chat, headers=auth, json={"model": model, "messages": HI, "stream": True,
                                                  "stream_options": {"include_usage": True}})
    elif kind in ("5xx", "deadline"):
        req = http.post(chat, json={"model": FAULT_MODELS[kind], "messages": HI}, headers=auth)
    elif kind == "embeddings":
        req = http.post(url + "/v1/embeddings", json={"model": "tokens-3", "input": ["a b", "c"]}, headers=auth)
    elif kind == "messages":
        req = http.post(url + "/v1/messages", json={"model": "tokens-3", "max_tokens": 5, "messages": HI}, headers=auth)
    else:
        req = http.get(url + "/v1/models", headers=auth)
    note = ""
    try:
        async with req as r:
            rid = r.headers.get("X-Request-Id", "")
            if kind == "disconnect":
                n = 0
                async for line in r.content:
                    n += line.startswith(b"data: ")
                    if n >= 3:
                        break
                r.close()
            else:
                body = await r.read()
                if kind in ("stream", "cut") and b'"error"' in body:
                    note = "in-band error"
            return Result(kind, r.status, rid, time.monotonic() - t0, note)
    except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as e:
        return Result(kind, 0, "", time.monotonic() - t0, type(e).__name__)


async def steady(url: str, auth: dict, rps: float, seconds: float, fault_share: float, seed: int, tally: Tally,
                 latencies: list[tuple[float, float]] | None = None) -> None:
    """`rps` requests a second for `seconds`, each on its own task (an open-loop rate, not a closed loop)."""
    rng = random.Random(seed)
    conn = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as http:
        pending: set[asyncio.Task] = set()
        t0 = time.monotonic()
        i = 0
        while (now := time.monotonic()) - t0 < seconds:
            due = t0 + i / rps
            if due > now:
                await asyncio.sleep(due - now)
            kind = pick(rng, fault_share)

            async def go(kind=kind, start=time.monotonic()):
                r = await one(http, url, auth, kind)
                tally.add(r)
                if latencies is not None and kind in ("chat", "embeddings", "models"):
                    latencies.append((start, r.latency_s))

            t = asyncio.create_task(go())
            pending.add(t)
            t.add_done_callback(pending.discard)
            i += 1
        if pending:
            await asyncio.gather(*pending)


async def closed_loop(url: str, auth: dict, kinds: list[str], concurrency: int, tally: Tally,
                      stop_at: float = float("inf")) -> None:
    """Every kind in `kinds` once, `concurrency` at a time (stops starting new ones at `stop_at`)."""
    queue = list(reversed(kinds))
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as http:
        async def worker():
            while queue and time.monotonic() < stop_at:
                tally.add(await one(http, url, auth, queue.pop()))

        await asyncio.gather(*(worker() for _ in range(concurrency)))


# ---------------------------------------------------------------------------- G3: fuzzed requests

# Not /v1/responses: an OpenAI route gets its body as sent, and the fake upstream has no Responses API,
# so its 404 would come back as the gateway's 5xx for a fault that is the fake's, not the gateway's.
_PATHS = ("/v1/chat/completions", "/v1/messages", "/v1/embeddings", "/api/chat", "/api/v1/inference", "/api/quick",
          "/v1/completions")
_VALUES = (None, True, False, 0, -1, 1, 2**31, 2**63, 1e308, -1e-308, "", "x", "tokens-3", "a" * 5000, "\u2028\ud7ff",
           "\x00", "é", [], {}, [None], {"": None}, [[[]]], {"role": "user"}, 3.5)
_KEYS = ("model", "messages", "stream", "max_tokens", "temperature", "top_p", "n", "stop", "tools", "tool_choice",
         "stream_options", "input", "system", "prompt", "response_format", "seed", "user", "metadata", "logit_bias",
         "role", "content", "type", "text", "image_url", "")
_MODELS = ("tokens-3", "tokens-1", "no-such-model", "", "gpt-4o-mini")


def _value(rng: random.Random, depth: int = 0):
    r = rng.random()
    if depth < 3 and r < 0.15:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if depth < 3 and r < 0.3:
        return {rng.choice(_KEYS): _value(rng, depth + 1) for _ in range(rng.randrange(4))}
    return rng.choice(_VALUES)


def fuzzed(rng: random.Random) -> tuple[str, str, bytes, dict]:
    """(method, path, body, extra headers): a valid request bent one to three ways, or garbage."""
    path = rng.choice(_PATHS)
    body: dict = {"model": rng.choice(_MODELS), "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    if path == "/v1/embeddings":
        body = {"model": "tokens-3", "input": ["a"]}
    for _ in range(rng.randrange(1, 4)):
        op = rng.random()
        if op < 0.35:
            body[rng.choice(_KEYS)] = _value(rng)
        elif op < 0.5 and body:
            body.pop(rng.choice(list(body)))
        elif op < 0.7:
            body["messages"] = [{rng.choice(_KEYS): _value(rng) for _ in range(rng.randrange(3))}
                                for _ in range(rng.randrange(3))]
        else:
            body["stream"] = rng.random() < 0.5
    raw = orjson.dumps(body)
    r = rng.random()
    if r < 0.08:
        raw = raw[: rng.randrange(len(raw))]  # truncated JSON
    elif r < 0.12:
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))  # noise
    elif r < 0.14:
        raw = b"[" * 5000 + b"]" * 5000
    headers = {"Content-Type": rng.choice(("application/json", "text/plain", "application/x-www-form-urlencoded"))}
    method = "POST" if rng.random() < 0.95 else rng.choice(("GET", "PUT", "DELETE", "PATCH"))
    return method, path, raw, headers


async def fuzz(url: str, auth: dict, count: int, seconds: float, concurrency: int, seed: int) -> tuple[int, Counter, list[str]]:
    """Up to `count` fuzzed requests within `seconds`; (sent, statuses, the first few 5xx seen)."""
    rng = random.Random(seed)
    statuses: Counter = Counter()
    fivexx: list[str] = []
    sent = 0
    end = time.monotonic() + seconds
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as http:
        async def worker():
            nonlocal sent
            while sent < count and time.monotonic() < end:
                sent += 1
                method, path, raw, headers = fuzzed(rng)
                try:
                    async with http.request(method, url + path, data=raw, headers={**auth, **headers}) as r:
                        await r.read()
                        statuses[r.status] += 1
                        if r.status >= 500 and len(fivexx) < 5:
                            fivexx.append(f"{r.status} {method} {path} {raw[:120]!r}")
                except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                    statuses[type(e).__name__] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sent, statuses, fivexx


# ---------------------------------------------------------------------------- G4: cancels, short connections

async def cancels(url: str, auth: dict, count: int, concurrency: int, seed: int, tally: Tally) -> None:
    """`count` streams each left by its caller after a random number (0–12) of events: one row each."""
    rng = random.Random(seed)
    plan = [rng.randrange(13) for _ in range(count)]
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as http:
        async def worker():
            while plan:
                after = plan.pop()
                t0 = time.monotonic()
                try:
                    async with http.post(url + "/v1/chat/completions", headers=auth, json={
                            "model": "tokens-40", "messages": HI, "stream": True}) as r:
                        rid = r.headers.get("X-Request-Id", "")
                        n = 0
                        if after:
                            async for line in r.content:
                                n += line.startswith(b"data: ")
                                if n >= after:
                                    break
                        r.close()
                        tally.add(Result("cancel", r.status, rid, time.monotonic() - t0))
                except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                    tally.add(Result("cancel", 0, "", time.monotonic() - t0, type(e).__name__))

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def short_connections(host: str, port: int, count: int, concurrency: int, seed: int) -> Counter:
    """`count` TCP connections that each do one of: connect and close; half a request and close; one
    `Connection: close` request read to the end."""
    rng = random.Random(seed)
    plan = [rng.randrange(3) for _ in range(count)]
    out: Counter = Counter()

    async def worker():
        while plan:
            what = plan.pop()
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError as e:
                out[f"connect:{type(e).__name__}"] += 1
                continue
            try:
                if what == 1:
                    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"mo")
                    await writer.drain()
                elif what == 2:
                    writer.write(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    await writer.drain()
                    data = await asyncio.wait_for(reader.read(), 10)
                    out["answered" if data.startswith(b"HTTP/1.1 200") else "bad-answer"] += 1
                    continue
                out[("closed", "half-request")[what]] += 1
            except (OSError, asyncio.TimeoutError) as e:
                out[type(e).__name__] += 1
            finally:
                writer.close()
                try:
                    await writer.wait_closed()
                except OSError:
                    pass

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


# ---------------------------------------------------------------------------- E11: slowloris

async def slowloris(host: str, port: int, sockets: int, hold_s: float) -> tuple[int, list[float]]:
    """Opens `sockets` connections that each send a request's headers a line every 2 s and never finish,
    for up to `hold_s`. Returns (opened, each socket's life until the gateway closed it, for those it did)."""
    lives: list[float] = []

    async def one() -> bool:
        try:
            r, w = await asyncio.open_connection(host, port)
        except OSError:
            return False
        t0 = time.monotonic()
        w.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")

        async def trickle():
            i = 0
            while True:
                await asyncio.sleep(2.0)
                w.write(f"X-Slow-{i}: a\r\n".encode())
                i += 1

        t = asyncio.create_task(trickle())
        try:
            async with asyncio.timeout(max(0.0, t0 + hold_s - time.monotonic())):
                while await r.read(4096):
                    pass
            lives.append(time.monotonic() - t0)
        except TimeoutError:
            pass
        except OSError:
            lives.append(time.monotonic() - t0)
        finally:
            t.cancel()
            w.close()
        return True

    opened = await asyncio.gather(*(one() for _ in range(sockets)))
    return sum(opened), lives
