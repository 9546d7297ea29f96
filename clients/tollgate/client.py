"""TollgateClient: typed async access to the four services, over a real or in-process channel.

    client = TollgateClient.connect("127.0.0.1:50051", api_key="tg_…")
    resp = await client.chat(chat_pb2.ChatInput(model="demo", messages=[...]))

Every failure surfaces as grpc.aio.AioRpcError; `error_info(err)` reads its google.rpc.Status
details (ErrorInfo reason and metadata, RetryInfo, QuotaFailure, BadRequest) into a plain
RpcErrorInfo, so callers never parse trailing metadata themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import grpc
from google.rpc import error_details_pb2, status_pb2

from tollgate.v1 import admin_service_pb2 as apb
from tollgate.v1 import admin_service_pb2_grpc as apb_grpc
from tollgate.v1 import user_service_pb2_grpc as upb_grpc
from tollgate.v1 import chat_pb2
from tollgate.v1 import inference_service_pb2 as ipb
from tollgate.v1 import inference_service_pb2_grpc as ipb_grpc
from tollgate.v1 import responses_service_pb2_grpc as rpb_grpc
from tollgate.v1 import key_service_pb2_grpc as kpb_grpc
from tollgate.v1 import model_service_pb2 as mpb
from tollgate.v1 import model_service_pb2_grpc as mpb_grpc

DETAILS_KEY = "grpc-status-details-bin"


@dataclass(slots=True)
class RpcErrorInfo:
    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    retry_after_s: float | None = None
    quota_violations: list[tuple[str, str]] = field(default_factory=list)
    field_violations: list[tuple[str, str]] = field(default_factory=list)
    request_id: str = ""


def error_info(err: grpc.aio.AioRpcError) -> RpcErrorInfo:
    info = RpcErrorInfo(err.code(), err.details() or "")
    for key, value in err.trailing_metadata() or ():
        if key == DETAILS_KEY and isinstance(value, bytes):
            st = status_pb2.Status.FromString(value)
            info.message = st.message or info.message
            for any_ in st.details:
                if any_.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    ei = error_details_pb2.ErrorInfo()
                    any_.Unpack(ei)
                    info.reason, info.metadata = ei.reason, dict(ei.metadata)
                elif any_.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    ri = error_details_pb2.RetryInfo()
                    any_.Unpack(ri)
                    info.retry_after_s = ri.retry_delay.seconds + ri.retry_delay.nanos / 1e9
                elif any_.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
                    qf = error_details_pb2.QuotaFailure()
                    any_.Unpack(qf)
                    info.quota_violations = [(v.subject, v.description) for v in qf.violations]
                elif any_.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    br = error_details_pb2.BadRequest()
                    any_.Unpack(br)
                    info.field_violations = [(v.field, v.description) for v in br.field_violations]
        elif key == "x-request-id" and isinstance(value, str):
            info.request_id = value
    info.request_id = info.request_id or info.metadata.get("request_id", "")
    return info


class TollgateClient:
    def __init__(self, channel: Any, api_key: str = "", admin_key: str = "") -> None:
        self.channel = channel
        self.inference = ipb_grpc.InferenceServiceStub(channel)
        self.models = mpb_grpc.ModelServiceStub(channel)
        self.keys = kpb_grpc.KeyServiceStub(channel)
        self.admin = apb_grpc.AdminServiceStub(channel)
        self.users = upb_grpc.UserServiceStub(channel)
        self.responses = rpb_grpc.ResponsesServiceStub(channel)
        # Inference calls carry the API key (metered as that key), admin calls the admin key.
        self._admin_md: tuple[tuple[str, str], ...] = (("x-admin-key", admin_key),) if admin_key else ()
        self._md: tuple[tuple[str, str], ...] = (("authorization", "Bearer " + api_key),) if api_key else self._admin_md

    @classmethod
    def connect(cls, address: str, api_key: str = "", admin_key: str = "") -> "TollgateClient":
        # Issue 19 point 7: our own user agent first; grpc appends its own (it cannot be removed).
        options = [("grpc.keepalive_time_ms", 30_000), ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                   ("grpc.primary_user_agent", "tollgate-client")]
        return cls(grpc.aio.insecure_channel(address, options=options), api_key, admin_key)

    async def close(self) -> None:
        await self.channel.close()

    async def chat(self, inp: chat_pb2.ChatInput, timeout: float | None = None) -> ipb.ChatResponse:
        return await self.inference.Chat(ipb.ChatRequest(input=inp), metadata=self._md, timeout=timeout)

    async def stream_chat(self, inp: chat_pb2.ChatInput, include_usage: bool = False,
                          timeout: float | None = None) -> AsyncIterator[ipb.StreamChatResponse]:
        call = self.inference.StreamChat(ipb.StreamChatRequest(input=inp, include_usage=include_usage),
                                         metadata=self._md, timeout=timeout)
        try:
            async for msg in call:
                yield msg
        finally:
            call.cancel()

    async def list_models(self, provider: str = "", search: str = "", page_size: int = 0) -> mpb.ListModelsResponse:
        return await self.models.ListModels(mpb.ListModelsRequest(provider=provider, search=search, page_size=page_size),
                                            metadata=self._md)

    async def create_api_key(self, name: str, email: str = "", tier: str = "") -> apb.CreateApiKeyResponse:
        return await self.admin.CreateApiKey(apb.CreateApiKeyRequest(name=name, email=email, tier=tier), metadata=self._admin_md)

    async def list_api_keys(self, include_revoked: bool = False) -> apb.ListApiKeysResponse:
        return await self.admin.ListApiKeys(apb.ListApiKeysRequest(include_revoked=include_revoked), metadata=self._admin_md)

    async def revoke_api_key(self, key_id: str) -> None:
        await self.admin.RevokeApiKey(apb.RevokeApiKeyRequest(id=key_id), metadata=self._admin_md)

    async def list_usage(self, **filters: Any) -> apb.ListUsageResponse:
        return await self.admin.ListUsage(apb.ListUsageRequest(**filters), metadata=self._admin_md)
