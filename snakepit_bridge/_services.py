"""The standard services beside the bridge's own: grpc.health.v1 (what
Kubernetes probes and grpc_health_probe call) and server reflection (what
grpcurl uses). A Snakepit pool calls neither (it uses the bridge's own Health
RPC), so neither is imported before the ready line: one generic handler
answers for both and imports, builds and registers the real servicers on the
first call to either (grpcio's own health servicer and reflection servicer,
unchanged). What that saves at start-up: docs/performance.md, "Small calls,
third round".
"""
from __future__ import annotations

from typing import Any

import grpc

__all__ = ["StandardServices"]

_HEALTH = "/grpc.health.v1.Health/"
_REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"


class _Collect:
    """Stands in for the server while a servicer registers itself: keeps its handlers."""

    def __init__(self) -> None:
        self.handlers: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.handlers.extend(handlers)

    def add_registered_method_handlers(self, service: str, methods: dict[str, grpc.RpcMethodHandler]) -> None:
        self.handlers.append(grpc.method_handlers_generic_handler(service, methods))

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        for handler in self.handlers:
            found = handler.service(details)
            if found is not None:
                return found
        return None


class StandardServices(grpc.GenericRpcHandler):
    """grpc.health.v1 and reflection for ``services`` (the names reflection
    lists; health answers for ``""`` and ``health_names``), loaded on first use.
    Registered with ``server.add_generic_rpc_handlers`` before the server
    starts; the bridge's own methods are registered ones, which gRPC looks up
    first, so their calls never come here."""

    def __init__(self, services: tuple[str, ...], health_names: tuple[str, ...]) -> None:
        self._services = (*services, HEALTH_SERVICE, REFLECTION_SERVICE)
        self._health_names = ("", *health_names)
        self._serving = True
        self._health: Any = None  # the real health servicer, once loaded
        self._loaded: dict[str, _Collect] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        prefix = _HEALTH if method.startswith(_HEALTH) else _REFLECTION if method.startswith(_REFLECTION) else None
        if prefix is None:
            return None
        handlers = self._loaded.get(prefix) or self._load(prefix)
        return handlers.service(handler_call_details)

    def _load(self, prefix: str) -> _Collect:
        handlers = self._loaded[prefix] = _Collect()
        if prefix == _HEALTH:
            from grpc_health.v1 import health, health_pb2_grpc

            # grpc_health re-exports its asyncio servicer module as `aio` by a plain import, which
            # type checkers do not count as public; it is the documented way to reach it.
            servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
            # New, so nobody watches it yet: its status map can be set directly.
            servicer._server_status.update(dict.fromkeys(self._health_names, _status(self._serving)))
            health_pb2_grpc.add_HealthServicer_to_server(servicer, handlers)
            self._health = servicer
        else:
            from grpc_health.v1 import health_pb2  # noqa: F401 - puts Health's descriptors in the pool it reflects
            from grpc_reflection.v1alpha import _async, reflection_pb2_grpc

            # grpc_reflection's asyncio servicer (reflection.aio is this module).
            reflection_pb2_grpc.add_ServerReflectionServicer_to_server(_async.ReflectionServicer(self._services),
                                                                       handlers)
        return handlers

    async def set_serving(self, serving: bool) -> None:
        """Health reports SERVING or NOT_SERVING (watchers are told, if any)."""
        self._serving = serving
        if self._health is not None:
            for name in self._health_names:
                await self._health.set(name, _status(serving))


def _status(serving: bool) -> Any:
    from grpc_health.v1 import health_pb2  # loaded by then: only the health branch calls this

    return health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
