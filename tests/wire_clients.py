"""Two independent clients for the same conformance suite: grpcio (the C-core
HTTP/2 stack) and grpclib (a pure-Python HTTP/2 stack). Each speaks raw
protobuf messages, so the suite checks the wire, not our client library."""
from __future__ import annotations

import asyncio

import grpc
from grpclib.client import Channel, UnaryStreamMethod, UnaryUnaryMethod

from snakepit_bridge._proto import snakepit_pb2 as pb
from snakepit_bridge._proto import snakepit_pb2_grpc as pb_grpc

SERVICE = "/snakepit.SnakepitBridge/"


class GrpcioClient:
    name = "grpcio"

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.SnakepitBridgeStub(self.channel)

    def execute(self, req):
        return self.stub.Execute(req, timeout=30)

    def execute_in_session(self, req):
        return self.stub.ExecuteInSession(req, timeout=30)

    def stream(self, req):
        return list(self.stub.ExecuteStream(req, timeout=30))

    def stream_in_session(self, req):
        return list(self.stub.ExecuteInSessionStream(req, timeout=30))

    def health(self, req):
        return self.stub.Health(req, timeout=30)

    def info(self, req):
        return self.stub.GetInfo(req, timeout=30)

    def close(self) -> None:
        self.channel.close()


class GrpclibClient:
    name = "grpclib"

    def __init__(self, port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.channel = self._make(port)
        ch = self.channel
        self._execute = UnaryUnaryMethod(ch, SERVICE + "Execute", pb.ExecuteRequest, pb.ExecuteResponse)
        self._execute_s = UnaryUnaryMethod(ch, SERVICE + "ExecuteInSession", pb.SessionRequest, pb.ExecuteResponse)
        self._stream = UnaryStreamMethod(ch, SERVICE + "ExecuteStream", pb.ExecuteRequest, pb.StreamResponse)
        self._stream_s = UnaryStreamMethod(ch, SERVICE + "ExecuteInSessionStream", pb.SessionRequest, pb.StreamResponse)
        self._health = UnaryUnaryMethod(ch, SERVICE + "Health", pb.HealthRequest, pb.HealthResponse)
        self._info = UnaryUnaryMethod(ch, SERVICE + "GetInfo", pb.InfoRequest, pb.InfoResponse)

    def _make(self, port: int) -> Channel:
        # grpclib binds a channel to the running loop: create it inside ours.
        async def make() -> Channel:
            return Channel("127.0.0.1", port)

        return self.loop.run_until_complete(make())

    def _run(self, coro):
        return self.loop.run_until_complete(asyncio.wait_for(coro, 30))

    def execute(self, req):
        return self._run(self._execute(req))

    def execute_in_session(self, req):
        return self._run(self._execute_s(req))

    def stream(self, req):
        return self._run(self._stream(req))

    def stream_in_session(self, req):
        return self._run(self._stream_s(req))

    def health(self, req):
        return self._run(self._health(req))

    def info(self, req):
        return self._run(self._info(req))

    def close(self) -> None:
        self.channel.close()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()


CLIENTS = {"grpcio": GrpcioClient, "grpclib": GrpclibClient}
