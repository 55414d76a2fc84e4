"""The asyncio client (grpc.aio): :class:`AsyncClient`, its stream and pull iterators.

The same surface as :class:`~snakepit_bridge.client.Client`, awaited; requests
and decoding are the shared ones of :mod:`._wire`. Create it inside a running
event loop (``async with AsyncClient(target) as c:``).
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import grpc.aio

from .._proto import snakepit_pb2 as pb
from .._proto import snakepit_pb2_grpc as pb_grpc
from ._sync import PULL_BATCH
from ._wire import (
    CLOSE_TIMEOUT,
    CommandDescription,
    PullState,
    Response,
    StreamChunk,
    build_request,
    channel_options,
    chunk,
    descriptions,
    response,
)

__all__ = ["AsyncClient", "AsyncPull", "AsyncStream"]


class AsyncClient:
    """Asyncio client over one grpc.aio channel; see :class:`~snakepit_bridge.client.Client`."""

    def __init__(self, target: str = "127.0.0.1:50051", *, token: str | None = None,
                 max_message_mb: int = 100, credentials: grpc.ChannelCredentials | None = None,
                 elixir_style: bool = False, accept_encodings: Sequence[str] | None = None) -> None:
        options = channel_options(max_message_mb)
        self.channel = (grpc.aio.secure_channel(target, credentials, options) if credentials
                        else grpc.aio.insecure_channel(target, options))
        self.stub = pb_grpc.SnakepitBridgeStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.elixir_style = elixir_style
        self.accept_encodings = accept_encodings
        self._loop = asyncio.get_running_loop()
        # Generator closes sent on behalf of cancelled or collected pulls; kept
        # so they are not collected mid-flight and close() can wait for them.
        self._closing: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel, after the generator closes still in flight (at most a few seconds)."""
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=CLOSE_TIMEOUT)
        await self.channel.close(None)

    async def wait_ready(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self.channel.channel_ready(), timeout)

    # -- calls -------------------------------------------------------------------------

    def _request(self, kind: str, command: str, args: Mapping[str, Any] | None, **kw: Any) -> Any:
        return build_request(kind, command, args, elixir_style=self.elixir_style, accept=self.accept_encodings, **kw)

    async def execute(self, command: str, args: Mapping[str, Any] | None = None, *, timeout_ms: int = 0,
                      request_id: str | None = None, timeout: float | None = None) -> Response:
        request = self._request("call", command, args, timeout_ms=timeout_ms, request_id=request_id)
        return response(await self.stub.Execute(request, timeout=timeout, metadata=self.metadata), self.elixir_style)

    async def execute_in_session(self, session_id: str, command: str, args: Mapping[str, Any] | None = None, *,
                                 timeout_ms: int = 0, request_id: str | None = None,
                                 timeout: float | None = None) -> Response:
        request = self._request("call", command, args, session_id=session_id, timeout_ms=timeout_ms,
                                request_id=request_id)
        return response(await self.stub.ExecuteInSession(request, timeout=timeout, metadata=self.metadata),
                        self.elixir_style)

    def stream(self, command: str, args: Mapping[str, Any] | None = None, *, timeout_ms: int = 0,
               request_id: str | None = None, timeout: float | None = None,
               session_id: str | None = None) -> AsyncStream:
        """``async for chunk in client.stream(...)``: chunks as they arrive. The
        call is cancelled when the iterating task is cancelled, when the
        ``async with`` block ends, on ``cancel()``, or when the iterator is dropped."""
        request = self._request("call", command, args, session_id=session_id, timeout_ms=timeout_ms,
                                request_id=request_id)
        rpc = self.stub.ExecuteStream if session_id is None else self.stub.ExecuteInSessionStream
        return AsyncStream(rpc(request, timeout=timeout, metadata=self.metadata), self.elixir_style)

    def pull(self, command: str, args: Mapping[str, Any] | None = None, *, batch_size: int = PULL_BATCH,
             session_id: str = "", timeout_ms: int = 0, prefetch: bool = True,
             timeout: float | None = None) -> AsyncPull:
        """``async for chunk in client.pull(...)``: see :class:`AsyncPull`."""
        return AsyncPull(self, command, args, batch_size=batch_size, session_id=session_id,
                         timeout_ms=timeout_ms, prefetch=prefetch, timeout=timeout)

    async def health(self, worker_id: str = "", timeout: float | None = None) -> pb.HealthResponse:
        return await self.stub.Health(pb.HealthRequest(worker_id=worker_id), timeout=timeout, metadata=self.metadata)

    async def info(self, capabilities: bool = True, stats: bool = True,
                   timeout: float | None = None) -> pb.InfoResponse:
        return await self.stub.GetInfo(pb.InfoRequest(include_capabilities=capabilities, include_stats=stats),
                                       timeout=timeout, metadata=self.metadata)

    async def describe(self, commands: Sequence[str] | None = None,
                       timeout: float | None = None) -> list[CommandDescription]:
        r = await self.stub.Describe(pb.DescribeRequest(commands=list(commands or ())), timeout=timeout,
                                     metadata=self.metadata)
        return descriptions(r)

    # -- pull-based generators, one call at a time ---------------------------------------

    async def init_generator(self, command: str, args: Mapping[str, Any] | None = None, *,
                             session_id: str = "", timeout_ms: int = 0) -> pb.InitGeneratorResponse:
        request = self._request("generator", command, args, session_id=session_id, timeout_ms=timeout_ms)
        return await self.stub.InitGenerator(request, metadata=self.metadata)

    async def next_batch(self, generator_id: str, batch_size: int = 10) -> tuple[list[StreamChunk], bool, str]:
        r = await self.stub.GetNextBatch(pb.GetNextBatchRequest(generator_id=generator_id, batch_size=batch_size),
                                         metadata=self.metadata)
        return [chunk(c, self.elixir_style) for c in r.chunks], r.has_more, r.error

    async def close_generator(self, generator_id: str) -> str:
        r = await self.stub.CloseGenerator(pb.CloseGeneratorRequest(generator_id=generator_id),
                                           metadata=self.metadata)
        return r.error

    async def _close_generator(self, request: pb.CloseGeneratorRequest) -> None:
        # Best effort (the channel may be closed already); the bridge's reaper is the backstop.
        with contextlib.suppress(Exception):
            await self.stub.CloseGenerator(request, timeout=CLOSE_TIMEOUT, metadata=self.metadata)

    def _close_task(self, request: pb.CloseGeneratorRequest) -> asyncio.Task[None]:
        """Close a generator in a task of its own, held until it is done (call on the loop)."""
        task = self._loop.create_task(self._close_generator(request))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return task

    def _close_later(self, request: pb.CloseGeneratorRequest) -> None:
        """:meth:`_close_task` from anywhere: a cancelled task, or a finalizer
        that may run on another thread."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._close_task(request)
        else:
            self._loop.call_soon_threadsafe(self._close_task, request)


class AsyncStream:
    """Async iterator over a server stream that cancels the call when left."""

    def __init__(self, call: grpc.aio.UnaryStreamCall, elixir_style: bool = False) -> None:
        self.call = call
        self.elixir_style = elixir_style

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> StreamChunk:
        try:
            r = await self.call.read()
        except asyncio.CancelledError:
            self.call.cancel()
            raise
        if r is grpc.aio.EOF:  # type: ignore[attr-defined]  # exported at run time, absent from grpc-stubs
            raise StopAsyncIteration
        assert isinstance(r, pb.StreamResponse)
        return chunk(r, self.elixir_style)

    def cancel(self) -> None:
        self.call.cancel()

    async def aclose(self) -> None:
        self.call.cancel()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.call.cancel()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.call.cancel()


class AsyncPull:
    """``async for chunk in client.pull(...)``: the asyncio twin of
    :class:`~snakepit_bridge.client.Pull`, with the same chunks, errors and
    prefetch (the next batch's call runs while the caller works on this one).

    The generator is opened by ``await p.open()``, ``async with``, or the first
    ``__anext__``; ``generator_id`` is ``""`` until then. It is closed (its
    ``finally`` runs) by ``await p.aclose()``, the end of the ``async with``
    block, the cancellation of the task waiting in ``__anext__`` (the close runs
    in a task of its own so the cancellation is not delayed), or dropping the
    unfinished iterator.
    """

    def __init__(self, client: AsyncClient, command: str, args: Mapping[str, Any] | None, *, batch_size: int,
                 session_id: str, timeout_ms: int, prefetch: bool, timeout: float | None) -> None:
        self._state = PullState(command, batch_size, client.elixir_style)
        self._client = client
        self._prefetch = prefetch
        self._timeout = timeout
        self._init = client._request("generator", command, args, session_id=session_id, timeout_ms=timeout_ms)
        self._pending: grpc.aio.UnaryUnaryCall | None = None  # the batch in flight (already running)

    @property
    def generator_id(self) -> str:
        return self._state.generator_id

    @property
    def command(self) -> str:
        return self._state.command

    async def open(self) -> AsyncPull:
        """Open the generator (once); :class:`GeneratorError` if the bridge refuses."""
        s = self._state
        if not s.generator_id and not s.closed:
            c = self._client
            s.opened(await c.stub.InitGenerator(self._init, timeout=self._timeout, metadata=c.metadata))
        return self

    def __aiter__(self) -> AsyncPull:
        return self

    async def __anext__(self) -> StreamChunk:
        s = self._state
        try:
            await self.open()
            while not s.buffer:
                if s.closed or not s.more:
                    raise StopAsyncIteration
                await self._fetch()
        except asyncio.CancelledError:
            self._abandon()
            raise
        return s.pop()

    def _ask(self) -> grpc.aio.UnaryUnaryCall:
        c = self._client
        return c.stub.GetNextBatch(self._state.batch_request(), timeout=self._timeout, metadata=c.metadata)

    async def _fetch(self) -> None:
        s = self._state
        call, self._pending = self._pending or self._ask(), None
        try:
            r = await call
        except grpc.aio.AioRpcError as exc:
            await self.aclose()
            raise s.error(f"GetNextBatch failed: {exc.code().name}: {exc.details()}") from exc
        s.accept(r)  # raises if the bridge refused the batch
        if s.more and self._prefetch:
            self._pending = self._ask()

    def _abandon(self) -> None:
        """End the iteration now and close the generator in the background."""
        if self._end():
            self._client._close_later(self._state.close_request())

    def _end(self) -> bool:
        """:meth:`PullState.end`, and the batch still asked for dropped."""
        need = self._state.end()
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        return need

    async def aclose(self) -> None:
        """Close the bridge-side generator now (its ``finally`` runs); idempotent, never raises."""
        if self._end():
            # Shielded: a second cancel of the caller must not cancel the close itself.
            await asyncio.shield(self._client._close_task(self._state.close_request()))

    async def __aenter__(self) -> AsyncPull:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        s = getattr(self, "_state", None)
        if s is None or s.closed:
            return
        with contextlib.suppress(Exception):  # a finalizer must not raise (the loop may be closed)
            self._abandon()

    def __repr__(self) -> str:
        return f"<AsyncPull {self.command!r} generator={self.generator_id} closed={self._state.closed}>"
