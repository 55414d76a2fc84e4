"""Expected failures.

A handler (or the bridge itself) raises a :class:`BridgeError` when the caller
did something wrong or asked for something that cannot be done. Its ``code`` is
a gRPC status name; transports map it to the wire in one place
(``dispatch.failure``). Any other exception is unexpected: it is logged with its
traceback and reaches the caller as ``"<Type>: <message>"``.
"""
from __future__ import annotations

from typing import Any

__all__ = [
    "BridgeError",
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "ResourceExhausted",
    "ShuttingDown",
    "UnknownCommand",
]


class BridgeError(Exception):
    """An expected failure with a status code and a message for the caller."""

    code = "INTERNAL"

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}

    def __str__(self) -> str:
        return self.message


class UnknownCommand(BridgeError):
    code = "UNIMPLEMENTED"

    def __init__(self, name: str):
        super().__init__(f"unknown command {name!r}")
        self.name = name


class InvalidArgument(BridgeError):
    code = "INVALID_ARGUMENT"


class NotFound(BridgeError):
    code = "NOT_FOUND"


class FailedPrecondition(BridgeError):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(BridgeError):
    code = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(BridgeError):
    code = "DEADLINE_EXCEEDED"


class Cancelled(BridgeError):
    code = "CANCELLED"


class ShuttingDown(BridgeError):
    code = "UNAVAILABLE"

    def __init__(self, message: str = "worker is shutting down"):
        super().__init__(message)
