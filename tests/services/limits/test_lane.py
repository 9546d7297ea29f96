"""Lane: the limiter's one pipelined Redis connection, against the real Redis (issue 20)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from services.limits.lane import Lane, pack
from services.limits.redis import connect
from tests.support.redis_server import TcpProxy, closed_port, redis_prefix, redis_url  # noqa: F401  (fixtures)


def lane_for(url: str, db: int | None = None) -> Lane:
    p = urlsplit(url)
    return Lane(p.hostname or "127.0.0.1", p.port or 6379, int(p.path.strip("/") or 0) if db is None else db,
                p.username, p.password)


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[TcpProxy]:  # noqa: F811
    proxy = TcpProxy(urlsplit(redis_url).port or 6379)
    await proxy.start()
    yield proxy
    await proxy.stop()


def test_pack_is_resp() -> None:
    assert pack(("SET", "k", 12, b"v")) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$1\r\nv\r\n"
    # hiredis packs these in C; what it refuses (a bool) is packed by hand, the same RESP.
    assert pack(("X", "é", -5, 1.5)) == b"*4\r\n$1\r\nX\r\n$2\r\n\xc3\xa9\r\n$2\r\n-5\r\n$3\r\n1.5\r\n"
    assert pack(("X", True, 7)) == b"*3\r\n$1\r\nX\r\n$1\r\n1\r\n$1\r\n7\r\n"


async def test_concurrent_calls_share_one_connection_and_get_their_own_replies(redis_url: str, redis_prefix: str) -> None:  # noqa: F811
    lane = lane_for(redis_url)
    try:
        key = redis_prefix + "n"
        replies = await asyncio.gather(*(lane.call("INCRBY", key, i) for i in range(1, 201)))
        assert sorted(replies) == sorted(set(replies)) and replies[-1] == sum(range(1, 201))  # each its own reply
        assert await lane.call("EVAL", "return {1, {2, 3}, 'x'}", 0) == [1, [2, 3], b"x"]
        futs = await lane.send([("SET", redis_prefix + "a", "1"), ("GET", redis_prefix + "a")])
        assert [await f for f in futs] == [b"OK", b"1"]
        assert lane._proto is not None  # one connection made, kept
        await lane.call("DEL", key, redis_prefix + "a")
    finally:
        await lane.close()


async def test_a_cancelled_call_leaves_the_order_intact(redis_url: str, redis_prefix: str) -> None:  # noqa: F811
    lane = lane_for(redis_url)
    try:
        slow = asyncio.ensure_future(lane.call("EVAL", "local t = redis.call('TIME') return 'slow'", 0))
        nxt = asyncio.ensure_future(lane.call("ECHO", "next"))
        await asyncio.sleep(0)
        slow.cancel()
        assert await nxt == b"next"  # the dropped reply was read and skipped, not handed to it
        assert await lane.call("ECHO", "after") == b"after"
    finally:
        await lane.close()


async def test_error_replies_raise_and_noscript_is_its_own(redis_url: str) -> None:  # noqa: F811
    lane = lane_for(redis_url)
    try:
        with pytest.raises(NoScriptError):
            await lane.call("EVALSHA", "0" * 40, 0)
        with pytest.raises(ResponseError) as caught:
            await lane.call("NOSUCHCOMMAND")
        assert not isinstance(caught.value, NoScriptError)
        assert await lane.call("PING") == b"PONG"  # the connection goes on
    finally:
        await lane.close()


async def test_select_picks_the_database(redis_url: str, redis_prefix: str) -> None:  # noqa: F811
    lane = lane_for(redis_url, db=3)
    p = urlsplit(redis_url)
    other = aioredis.Redis(host=p.hostname or "127.0.0.1", port=p.port or 6379, db=3, username=p.username,
                           password=p.password)
    try:
        await lane.call("SET", redis_prefix + "db", "three")
        assert await other.get(redis_prefix + "db") == b"three"
    finally:
        await other.delete(redis_prefix + "db")
        await other.aclose()
        await lane.close()


async def test_a_refused_connection_is_a_connection_error() -> None:
    lane = Lane("127.0.0.1", closed_port())
    with pytest.raises(RedisConnectionError):
        await lane.call("PING")
    await lane.close()


async def test_a_cut_connection_fails_its_waiting_calls_and_the_next_call_connects_again(proxy: TcpProxy) -> None:
    lane = lane_for(proxy.url)
    try:
        assert await lane.call("PING") == b"PONG"
        proxy.paused = True
        waiting = asyncio.ensure_future(lane.call("PING"))
        await asyncio.sleep(0.05)
        await proxy.stop()  # every connection through it closed
        with pytest.raises(RedisConnectionError):
            await waiting
        proxy.paused = False
        await proxy.start()
        assert await lane.call("PING") == b"PONG"
    finally:
        await lane.close()


async def test_drop_fails_waiting_calls(proxy: TcpProxy) -> None:
    lane = lane_for(proxy.url)
    try:
        await lane.call("PING")
        proxy.paused = True  # a hung Redis: nothing answers
        waiting = asyncio.ensure_future(lane.call("PING"))
        await asyncio.sleep(0.05)
        lane.drop()
        with pytest.raises(RedisConnectionError):
            await waiting
        proxy.paused = False
        assert await lane.call("PING") == b"PONG"  # a fresh connection
    finally:
        await lane.close()


def test_only_plain_tcp_clients_get_a_lane(redis_url: str) -> None:  # noqa: F811
    assert isinstance(Lane.for_client(connect(redis_url)), Lane)
    assert Lane.for_client(aioredis.Redis(unix_socket_path="/nonexistent.sock")) is None


async def test_commands_sent_while_others_are_in_flight_go_out_together_in_order(redis_url: str, redis_prefix: str) -> None:  # noqa: F811
    lane = lane_for(redis_url)
    try:
        key = redis_prefix + "order"
        first = asyncio.ensure_future(lane.call("RPUSH", key, "a"))
        await asyncio.sleep(0)  # written at once: nothing was in flight
        rest = [asyncio.ensure_future(lane.call("RPUSH", key, v)) for v in "bcd"]
        await asyncio.sleep(0)
        assert await first == 1 and [await f for f in rest] == [2, 3, 4]
        assert await lane.call("LRANGE", key, 0, -1) == [b"a", b"b", b"c", b"d"]
        await lane.call("DEL", key)
    finally:
        await lane.close()
