"""The blocking client: :class:`Client`, its stream iterator and its pull iterator."""
from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from .._proto import snakepit_pb2 as pb
from .._proto import snakepit_pb2_grpc as pb_grpc
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

__all__ = ["Client", "Pull", "Stream"]

#: Chunks per GetNextBatch when ``pull()`` is not told otherwise.
PULL_BATCH = 64


class Client:
    """Blocking client over one channel. Thread-safe like a grpc channel.

    ``accept_encodings`` overrides what requests say this client decodes
    (default: every binary encoding; none with ``elixir_style=True``).
    """

    def __init__(self, target: str = "127.0.0.1:50051", *, token: str | None = None,
                 max_message_mb: int = 100, credentials: grpc.ChannelCredentials | None = None,
                 elixir_style: bool = False, accept_encodings: Sequence[str] | None = None) -> None:
        options = channel_options(max_message_mb)
        self.channel = (grpc.secure_channel(target, credentials, options) if credentials
                        else grpc.insecure_channel(target, options))
        self.stub = pb_grpc.SnakepitBridgeStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.elixir_style = elixir_style
        self.accept_encodings = accept_encodings
        # CloseGenerator calls sent by garbage-collected pulls: a dropped grpc
        # future cancels its call, so they are held here until they finish.
        self._closing: set[grpc.Future] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel, after the generator closes still in flight (at most a few seconds)."""
        with self._lock:
            pending = list(self._closing)
        for fut in pending:
            try:
                fut.result(timeout=CLOSE_TIMEOUT)
            except Exception:  # noqa: BLE001 - best effort: the bridge's reaper is the backstop
                pass
        self.channel.close()

    def wait_ready(self, timeout: float = 5.0) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    # -- calls -------------------------------------------------------------------------

    def _request(self, kind: str, command: str, args: Mapping[str, Any] | None, **kw: Any) -> Any:
        return build_request(kind, command, args, elixir_style=self.elixir_style, accept=self.accept_encodings, **kw)

    def execute(self, command: str, args: Mapping[str, Any] | None = None, *, timeout_ms: int = 0,
                request_id: str | None = None, timeout: float | None = None) -> Response:
        request = self._request("call", command, args, timeout_ms=timeout_ms, request_id=request_id)
        return response(self.stub.Execute(request, timeout=timeout, metadata=self.metadata), self.elixir_style)

    def execute_in_session(self, session_id: str, command: str, args: Mapping[str, Any] | None = None, *,
                           timeout_ms: int = 0, request_id: str | None = None,
                           timeout: float | None = None) -> Response:
        request = self._request("call", command, args, session_id=session_id, timeout_ms=timeout_ms,
                                request_id=request_id)
        return response(self.stub.ExecuteInSession(request, timeout=timeout, metadata=self.metadata),
                        self.elixir_style)

    def stream(self, command: str, args: Mapping[str, Any] | None = None, *, timeout_ms: int = 0,
               request_id: str | None = None, timeout: float | None = None,
               session_id: str | None = None) -> Stream:
        """Chunks as they arrive. Closing the iterator (or leaving a ``for``
        loop early and dropping it) cancels the call."""
        request = self._request("call", command, args, session_id=session_id, timeout_ms=timeout_ms,
                                request_id=request_id)
        rpc = self.stub.ExecuteStream if session_id is None else self.stub.ExecuteInSessionStream
        return Stream(rpc(request, timeout=timeout, metadata=self.metadata), self.elixir_style)

    def pull(self, command: str, args: Mapping[str, Any] | None = None, *, batch_size: int = PULL_BATCH,
             session_id: str = "", timeout_ms: int = 0, prefetch: bool = True,
             timeout: float | None = None) -> Pull:
        """Open a pull generator for ``command`` and iterate its chunks (see :class:`Pull`).

        Raises :class:`~snakepit_bridge.client.GeneratorError` at once if the
        bridge refuses to open it. ``timeout_ms`` bounds the generator's whole
        life (bridge side); ``timeout`` is the deadline of each RPC.
        """
        return Pull(self, command, args, batch_size=batch_size, session_id=session_id, timeout_ms=timeout_ms,
                    prefetch=prefetch, timeout=timeout)

    def health(self, worker_id: str = "", timeout: float | None = None) -> pb.HealthResponse:
        return self.stub.Health(pb.HealthRequest(worker_id=worker_id), timeout=timeout, metadata=self.metadata)

    def info(self, capabilities: bool = True, stats: bool = True, timeout: float | None = None) -> pb.InfoResponse:
        return self.stub.GetInfo(pb.InfoRequest(include_capabilities=capabilities, include_stats=stats),
                                 timeout=timeout, metadata=self.metadata)

    def describe(self, commands: Sequence[str] | None = None,
                 timeout: float | None = None) -> list[CommandDescription]:
        """Descriptions of ``commands`` (every command when None); raises
        :class:`~snakepit_bridge.client.ClientError` if the bridge refuses."""
        r = self.stub.Describe(pb.DescribeRequest(commands=list(commands or ())), timeout=timeout,
                               metadata=self.metadata)
        return descriptions(r)

    # -- pull-based generators, one call at a time ---------------------------------------

    def init_generator(self, command: str, args: Mapping[str, Any] | None = None, *,
                       session_id: str = "", timeout_ms: int = 0) -> pb.InitGeneratorResponse:
        request = self._request("generator", command, args, session_id=session_id, timeout_ms=timeout_ms)
        return self.stub.InitGenerator(request, metadata=self.metadata)

    def next_batch(self, generator_id: str, batch_size: int = 10) -> tuple[list[StreamChunk], bool, str]:
        r = self.stub.GetNextBatch(pb.GetNextBatchRequest(generator_id=generator_id, batch_size=batch_size),
                                   metadata=self.metadata)
        return [chunk(c, self.elixir_style) for c in r.chunks], r.has_more, r.error

    def close_generator(self, generator_id: str) -> str:
        return self.stub.CloseGenerator(pb.CloseGeneratorRequest(generator_id=generator_id),
                                        metadata=self.metadata).error

    def _close_later(self, request: pb.CloseGeneratorRequest) -> None:
        """Send CloseGenerator without waiting for it (from a finalizer)."""
        fut = self.stub.CloseGenerator.future(request, timeout=CLOSE_TIMEOUT, metadata=self.metadata)
        with self._lock:
            self._closing.add(fut)
        fut.add_done_callback(self._closed)

    def _closed(self, fut: grpc.Future) -> None:
        with self._lock:
            self._closing.discard(fut)


class Stream:
    """Iterator over a server stream that cancels the call when closed."""

    def __init__(self, call: Any, elixir_style: bool = False) -> None:
        self.call = call
        self.elixir_style = elixir_style

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> StreamChunk:
        return chunk(next(self.call), self.elixir_style)

    def cancel(self) -> None:
        self.call.cancel()

    close = cancel

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def __del__(self) -> None:
        self.call.cancel()


class Pull:
    """Chunks of a generator pulled batch by batch: ``for chunk in client.pull(...)``.

    * ``generator_id`` names the bridge-side generator (open from the moment
      ``pull()`` returns).
    * Leaving early closes the generator at once, so its ``finally`` runs:
      ``close()``, the ``with`` block's end, or dropping the iterator (a
      ``break`` or an exception out of a ``for`` loop over it). Exhausting it
      needs no close: the bridge forgets a generator once its final chunk is out.
    * Chunks are exactly what :meth:`Client.stream` yields, the final one
      included; a per-item error is a chunk with ``error`` set and the
      iteration goes on.
    * A batch the bridge refuses (unknown, expired or closed generator) or a
      failed GetNextBatch call raises :class:`GeneratorError` naming the
      generator; the iterator is finished after it.
    * With ``prefetch`` the next batch is requested as soon as one arrives, so
      it travels while the caller works on the current one: at most one batch
      ahead. Not thread-safe: one consumer at a time.
    """

    def __init__(self, client: Client, command: str, args: Mapping[str, Any] | None, *, batch_size: int,
                 session_id: str, timeout_ms: int, prefetch: bool, timeout: float | None) -> None:
        self._state = PullState(command, batch_size, client.elixir_style)
        self._client = client
        self._prefetch = prefetch
        self._timeout = timeout
        self._pending: grpc.Future | None = None  # the batch in flight, if any
        request = client._request("generator", command, args, session_id=session_id, timeout_ms=timeout_ms)
        self._state.opened(client.stub.InitGenerator(request, timeout=timeout, metadata=client.metadata))

    @property
    def generator_id(self) -> str:
        return self._state.generator_id

    @property
    def command(self) -> str:
        return self._state.command

    def __iter__(self) -> Pull:
        return self

    def __next__(self) -> StreamChunk:
        s = self._state
        while not s.buffer:
            if s.closed or not s.more:
                raise StopIteration
            self._fetch()
        return s.pop()

    def _ask(self) -> grpc.Future:
        c = self._client
        return c.stub.GetNextBatch.future(self._state.batch_request(), timeout=self._timeout, metadata=c.metadata)

    def _fetch(self) -> None:
        s = self._state
        pending, self._pending = self._pending, None
        try:
            r = (pending or self._ask()).result()
        except grpc.RpcError as exc:
            self.close()
            raise s.error(f"GetNextBatch failed: {exc.code().name}: {exc.details()}") from exc
        except grpc.FutureCancelledError as exc:
            self.close()
            raise s.error("GetNextBatch was cancelled") from exc
        s.accept(r)  # raises if the bridge refused the batch
        if s.more and self._prefetch:
            self._pending = self._ask()

    def close(self) -> None:
        """Close the bridge-side generator now (its ``finally`` runs) and end the
        iteration. Idempotent; never raises."""
        s = self._state
        need = s.end()
        self._cancel_pending()
        if need:
            c = self._client
            try:
                c.stub.CloseGenerator(s.close_request(), timeout=CLOSE_TIMEOUT, metadata=c.metadata)
            except grpc.RpcError:
                pass  # the channel is gone or the bridge is: its reaper closes the generator

    def _cancel_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()

    def __enter__(self) -> Pull:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Dropped unfinished (a break, an exception, a forgotten iterator): close
        # it without blocking the collector.
        s = getattr(self, "_state", None)
        if s is None or s.closed:
            return
        need = s.end()
        try:
            self._cancel_pending()
            if need:
                self._client._close_later(s.close_request())
        except Exception:  # noqa: BLE001 - a finalizer must not raise (the channel may be closed)
            pass

    def __repr__(self) -> str:
        return f"<Pull {self.command!r} generator={self.generator_id} closed={self._state.closed}>"
