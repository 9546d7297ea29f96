"""KeyService: users' sign-up, login, provider keys and API tokens (tenancy, issue 7).

Designed in the protos now; until tenancy lands every RPC answers UNIMPLEMENTED, declared.
"""

from __future__ import annotations

from typing import Any

from services.core.errors import Unimplemented
from services.rpc.interceptors import Ctx, Guard
from tollgate.v1 import key_service_pb2_grpc as kpb_grpc

NOT_YET = "user accounts, provider keys and API tokens arrive with tenancy"


def make_key_servicer(app: Any) -> kpb_grpc.KeyServiceServicer:
    guard = Guard(app)

    def unimplemented(name: str, public: bool = False):
        @guard.unary(public=public, peek_limits=False)
        async def method(self, request: Any, ctx: Ctx) -> Any:
            raise Unimplemented(f"KeyService.{name}: {NOT_YET}")
        method.__name__ = name
        return method

    attrs = {n: unimplemented(n, public=n in ("Register", "Login")) for n in (
        "Register", "Login", "ListProviderKeys", "CreateProviderKey", "DeleteProviderKey",
        "ListTokens", "CreateToken", "RevokeToken", "GetUsage")}
    return type("KeyServicer", (kpb_grpc.KeyServiceServicer,), attrs)()
