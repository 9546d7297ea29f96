"""The grpc.aio server: the servicers, health, reflection, and graceful stop.

The same servicer instances are also registered on an InProcessChannel, which the bridge
uses by default; both paths run identical servicer code.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from services.rpc.admin import AdminServicer
from services.rpc.inference import InferenceServicer
from services.rpc.keys import KeyServicer
from services.rpc.malformed import MalformedRequests
from services.rpc.interceptors import Guard
from services.rpc.models import ModelServicer
from services.rpc.responses import ResponsesServicer
from services.rpc.users import UserServicer
from tollgate.inprocess import InProcessChannel
from tollgate.v1 import admin_service_pb2, admin_service_pb2_grpc, inference_service_pb2, inference_service_pb2_grpc
from tollgate.v1 import key_service_pb2, key_service_pb2_grpc, model_service_pb2, model_service_pb2_grpc
from tollgate.v1 import responses_service_pb2, responses_service_pb2_grpc
from tollgate.v1 import user_service_pb2, user_service_pb2_grpc

if TYPE_CHECKING:
    from services.app import App

log = logging.getLogger("tollgate.server")

SERVICE_NAMES = (
    inference_service_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name,
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
    key_service_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name,
    admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    user_service_pb2.DESCRIPTOR.services_by_name["UserService"].full_name,
    responses_service_pb2.DESCRIPTOR.services_by_name["ResponsesService"].full_name,
)
MAX_MESSAGE = 16 * 1024 * 1024


def register_servicers(app: App, target: grpc.aio.Server | InProcessChannel) -> None:
    """Builds the servicers from the App's parts (the one place that does) and adds them to a
    grpc.aio.Server or an InProcessChannel."""
    guard = Guard(app.auth, app.quotas, app.limiter, app.scrubber, app.open_gate, app.auth_throttle, app.tracing,
                  lambda: app.draining)
    inference_service_pb2_grpc.add_InferenceServiceServicer_to_server(
        InferenceServicer(guard, app.pipeline, app.catalog, app.fidelity, app.media, app.passthrough,
                          app.config.max_messages), target)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(guard, app.config, app.models, app.loaded, app.router, app.loader), target)
    key_service_pb2_grpc.add_KeyServiceServicer_to_server(
        KeyServicer(guard, app.config, app.store, app.credentials, app.tokens, app.provider_secrets,
                    app.login_throttle, app.quotas, app.limiter, app.signin, app.auth, app.accounts,
                    app.statements, app.budgets, app.ledger, app.clock, app.user_keys), target)
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminServicer(guard, app.config, app.store, app.key_vault, app.quotas, app.ledger, app.auth, app.audit, app.router, app.limiter,
                      app.uptime_s, app.reload_static_keys, app.aliases), target)
    user_service_pb2_grpc.add_UserServiceServicer_to_server(
        UserServicer(guard, app.store, app.provider_secrets, app.accounts, app.plans, app.quotas, app.audit, app.alerts, app.config, app.ledger,
                     app.router, app.signin, app.statements, app.user_keys), target)
    responses_service_pb2_grpc.add_ResponsesServiceServicer_to_server(ResponsesServicer(guard, app.responses), target)


def local_channel(app: App) -> InProcessChannel:
    channel = InProcessChannel()
    register_servicers(app, channel)
    return channel


class GrpcServer:
    def __init__(self, app: App, address: str, reuse_port: bool = False) -> None:
        self.address = address
        self.server = grpc.aio.server(interceptors=[MalformedRequests()], options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            # Off for a lone process (a second one on a taken port must fail, not share it); on
            # for a supervisor's workers, which share the port on purpose (services/supervisor.py).
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ])
        register_servicers(app, self.server)
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(SERVICE_NAMES + (reflection.SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), self.server)
        self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen on {address}")

    async def start(self) -> None:
        await self.server.start()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        for name in SERVICE_NAMES:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def enter_drain(self) -> None:
        """NOT_SERVING everywhere at once, so balancers stop sending (RELIABILITY B6)."""
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace: float) -> None:
        await self.server.stop(grace)
