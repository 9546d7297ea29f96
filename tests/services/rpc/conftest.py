"""The servicers on a real port: a whole gateway (tests/conftest.py's `gateway`, routing every
model to the fake OpenAI upstream) and a grpc.aio channel to it, called through the generated stubs."""

from __future__ import annotations

from typing import Any, Awaitable

import grpc
import pytest

from tests.support.gateway import ADMIN_KEY
from tollgate.client import RpcErrorInfo, error_info

ADMIN = (("x-admin-key", ADMIN_KEY),)


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", "Bearer " + key),)


async def refused(call: Awaitable[Any]) -> RpcErrorInfo:
    """The error a unary call ends with (it must end with one), with its google.rpc details."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return error_info(caught.value)


async def refused_stream(call: Any) -> tuple[list[Any], RpcErrorInfo]:
    """The messages a server-streaming call sent before its error, and the error."""
    got: list[Any] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for msg in call:
            got.append(msg)
    return got, error_info(caught.value)


@pytest.fixture
async def channel(gateway):
    async with grpc.aio.insecure_channel(gateway.rt.grpc_target) as ch:
        yield ch


@pytest.fixture
async def api_key(gateway) -> str:
    return await gateway.new_key()
