"""Shared-token authentication for the gRPC server.

Every RPC must carry the metadata ``authorization: Bearer <token>``; one that
does not gets UNAUTHENTICATED before any handler runs. The token comes from
``--auth-token-file PATH`` or ``SNAKEPIT_BRIDGE_AUTH_TOKEN`` (see ``cli.py``)
and is compared in constant time.

One exemption: ``grpc.health.v1.Health/Check``. Kubernetes gRPC probes and
``grpc_health_probe`` carry no token, and the answer (SERVING or not) tells
nothing about the worker. ``Health/Watch`` (a long-lived stream), reflection,
and Snakepit's own ``Health`` RPC all need the token.
"""
from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from .logging import get_logger

__all__ = ["EXEMPT_METHODS", "TokenInterceptor"]

EXEMPT_METHODS = frozenset({"/grpc.health.v1.Health/Check"})

_log = get_logger("snakepit_bridge.auth")


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call whose ``authorization`` metadata is not ``Bearer <token>``."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the auth token is empty")
        self._expected = f"Bearer {token}".encode()

    def authorized(self, metadata: Any) -> bool:
        """True when ``metadata`` carries the right bearer token."""
        for key, value in metadata or ():
            if key == "authorization":
                got = value if isinstance(value, bytes) else str(value).encode()
                return hmac.compare_digest(got, self._expected)
        return False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method in EXEMPT_METHODS:
            return handler
        if self.authorized(handler_call_details.invocation_metadata):
            return handler
        return _refusal(handler, handler_call_details.method)


def _refusal(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that logs the refusal and
    answers UNAUTHENTICATED."""

    async def _abort(request: Any, context: grpc.aio.ServicerContext) -> None:
        _log.warning("unauthenticated call refused", method=method, peer=context.peer())
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

    async def _abort_stream(request: Any, context: grpc.aio.ServicerContext):
        await _abort(request, context)
        yield  # pragma: no cover - makes this an async generator; abort raises first

    codec = dict(request_deserializer=handler.request_deserializer,
                 response_serializer=handler.response_serializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(_abort, **codec)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(_abort_stream, **codec)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(_abort, **codec)
    return grpc.stream_stream_rpc_method_handler(_abort_stream, **codec)
