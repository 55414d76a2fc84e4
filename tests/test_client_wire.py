"""What the clients put on the wire, read by a recording gRPC servicer on
loopback: ``accept_encodings`` on every request that carries a command (one
builder for both clients), and ``describe`` parsing, independent of which
bridge-side features are merged. The bridge's own answers are tested against
the real process elsewhere."""
from __future__ import annotations

from concurrent import futures

import grpc
import orjson
import pytest

from snakepit_bridge._proto import snakepit_pb2 as pb
from snakepit_bridge._proto import snakepit_pb2_grpc as pb_grpc
from snakepit_bridge.client import ACCEPT_ENCODINGS, AsyncClient, Client, ClientError, main

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


class Recorder(pb_grpc.SnakepitBridgeServicer):
    def __init__(self) -> None:
        self.requests: list = []

    def Execute(self, request, context):
        self.requests.append(request)
        return pb.ExecuteResponse(success=True)

    ExecuteInSession = Execute

    def ExecuteStream(self, request, context):
        self.requests.append(request)
        yield pb.StreamResponse(is_final=True)

    ExecuteInSessionStream = ExecuteStream

    def InitGenerator(self, request, context):
        self.requests.append(request)
        return pb.InitGeneratorResponse(generator_id="g1")

    def GetNextBatch(self, request, context):
        return pb.GetNextBatchResponse(chunks=[pb.StreamResponse(is_final=True)], has_more=False)

    def Describe(self, request, context):
        self.requests.append(request)
        if "nope" in request.commands:
            return pb.DescribeResponse(error="unknown command 'nope'")
        return pb.DescribeResponse(commands=[
            pb.CommandDescription(name="count", streaming=True, doc="Counts.", params_schema=orjson.dumps(SCHEMA).decode(),
                                  typed=True),
            pb.CommandDescription(name="echo", doc="Echoes.", params_schema=""),
        ])


@pytest.fixture(scope="module")
def recorder():
    rec = Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    pb_grpc.add_SnakepitBridgeServicer_to_server(rec, server)
    rec.port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield rec
    server.stop(None)


def every_kind(c: Client) -> None:
    c.execute("a")
    c.execute_in_session("s", "b")
    list(c.stream("c"))
    list(c.stream("d", session_id="s"))
    list(c.pull("e", session_id="s2", timeout_ms=1500))
    c.init_generator("f")


async def every_kind_async(c: AsyncClient) -> None:
    await c.execute("a")
    await c.execute_in_session("s", "b")
    [x async for x in c.stream("c")]
    [x async for x in c.stream("d", session_id="s")]
    [x async for x in c.pull("e", session_id="s2", timeout_ms=1500)]
    await c.init_generator("f")


KINDS = ["ExecuteRequest", "SessionRequest", "ExecuteRequest", "SessionRequest", "InitGeneratorRequest",
         "InitGeneratorRequest"]


@pytest.mark.parametrize(("options", "expected"), [
    ({}, list(ACCEPT_ENCODINGS)),
    ({"elixir_style": True}, []),
    ({"accept_encodings": ["npy"]}, ["npy"]),
])
def test_every_request_says_what_the_client_decodes(recorder, options, expected):
    assert ACCEPT_ENCODINGS == ("npy", "raw", "utf8", "msgpack")
    recorder.requests.clear()
    with Client(f"127.0.0.1:{recorder.port}", **options) as c:
        every_kind(c)
    assert [type(r).__name__ for r in recorder.requests] == KINDS
    assert [list(r.accept_encodings) for r in recorder.requests] == [expected] * len(KINDS)
    init = recorder.requests[4]
    assert (init.command, init.session_id, init.timeout_ms) == ("e", "s2", 1500)


@pytest.mark.parametrize(("options", "expected"), [({}, list(ACCEPT_ENCODINGS)), ({"elixir_style": True}, [])])
async def test_the_async_client_builds_the_same_requests(recorder, options, expected):
    recorder.requests.clear()
    async with AsyncClient(f"127.0.0.1:{recorder.port}", **options) as c:
        await every_kind_async(c)
    assert [type(r).__name__ for r in recorder.requests] == KINDS
    assert [list(r.accept_encodings) for r in recorder.requests] == [expected] * len(KINDS)
    session, init = recorder.requests[1], recorder.requests[4]
    assert (session.session_id, session.command) == ("s", "b")
    assert (init.command, init.session_id, init.timeout_ms) == ("e", "s2", 1500)


def test_describe_parses_the_descriptions(recorder):
    recorder.requests.clear()
    with Client(f"127.0.0.1:{recorder.port}") as c:
        count, echo = c.describe(["count", "echo"])
        with pytest.raises(ClientError, match="describe failed: unknown command 'nope'"):
            c.describe(["nope"])
        c.describe()
    assert (count.name, count.streaming, count.typed, count.doc) == ("count", True, True, "Counts.")
    assert count.params_schema == SCHEMA
    assert (echo.name, echo.streaming, echo.typed, echo.params_schema) == ("echo", False, False, {})
    assert [list(r.commands) for r in recorder.requests] == [["count", "echo"], ["nope"], []]


async def test_async_describe(recorder):
    async with AsyncClient(f"127.0.0.1:{recorder.port}") as c:
        names = [d.name for d in await c.describe()]
    assert names == ["count", "echo"]


def test_cli_describe(recorder, capsys):
    assert main(["--port", str(recorder.port), "describe", "count"]) == 0
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == {"name": "count", "streaming": True, "typed": True, "doc": "Counts.", "params_schema": SCHEMA}
    assert list(recorder.requests[-1].commands) == ["count"]
    assert main(["--port", str(recorder.port), "describe", "nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
