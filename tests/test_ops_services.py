"""Standard services: grpc.health.v1 and server reflection (what Kubernetes
probes, grpc_health_probe and grpcurl use)."""
from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

SERVICE = "snakepit.SnakepitBridge"


@pytest.fixture(scope="module")
def channel(bridge):
    with grpc.insecure_channel(bridge.target) as ch:
        yield ch


@pytest.mark.parametrize("service", ["", SERVICE])
def test_health_check_is_serving_once_ready(channel, service):
    stub = health_pb2_grpc.HealthStub(channel)
    reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_health_check_of_an_unknown_service_is_not_found(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(channel):
    db = ProtoReflectionDescriptorDatabase(channel)
    services = set(db.get_services())
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services


def test_reflection_resolves_every_listed_service_on_a_fresh_worker(spawn_bridge):
    """Before anything has called Health (its module is imported on first use),
    grpcurl's `describe grpc.health.v1.Health` must still resolve."""
    b = spawn_bridge()
    with grpc.insecure_channel(b.target) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        pool = descriptor_pool.DescriptorPool(db)
        for name in db.get_services():
            assert pool.FindServiceByName(name).full_name == name


def test_reflection_resolves_the_bridge_methods(channel):
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    service = pool.FindServiceByName(SERVICE)
    methods = {m.name: m for m in service.methods}
    assert {"Execute", "ExecuteStream", "ExecuteInSession", "ExecuteInSessionStream", "Health", "GetInfo"} <= set(methods)
    execute = methods["Execute"]
    assert execute.input_type.full_name == "snakepit.ExecuteRequest"
    assert execute.output_type.full_name == "snakepit.ExecuteResponse"
    assert methods["ExecuteStream"].server_streaming and not execute.server_streaming
    fields = {f.name: f.number for f in execute.input_type.fields}
    assert fields["command"] == 1 and fields["args"] == 2 and fields["timeout_ms"] == 3 and fields["request_id"] == 4


def test_a_call_built_from_reflection_alone_works(channel):
    """What grpcurl does: build the request from the reflected schema and call."""
    from google.protobuf import message_factory

    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    method = pool.FindServiceByName(SERVICE).methods_by_name["Execute"]
    request_cls = message_factory.GetMessageClass(method.input_type)
    response_cls = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(f"/{SERVICE}/Execute", request_serializer=request_cls.SerializeToString,
                               response_deserializer=response_cls.FromString)
    reply = call(request_cls(command="ping", request_id="r1"), timeout=5)
    assert reply.success and reply.request_id == "r1" and b"pong" in reply.result["message"]


def test_the_standard_services_are_imported_on_their_first_call_only():
    """Not before the ready line: a pool never calls them (start-up cost)."""
    import subprocess
    import sys

    code = ("import sys, grpc\n"
            "from snakepit_bridge import server\n"
            "from snakepit_bridge._services import StandardServices\n"
            "s = StandardServices(('snakepit.SnakepitBridge',), ('snakepit.SnakepitBridge',))\n"
            "class D(grpc.HandlerCallDetails):\n"
            "    def __init__(self, m): self.method, self.invocation_metadata = m, ()\n"
            "print(s.service(D('/snakepit.SnakepitBridge/Execute')) is None,\n"
            "      any(m.startswith(('grpc_health.', 'grpc_reflection.')) for m in sys.modules))\n"
            "print(s.service(D('/grpc.health.v1.Health/Check')) is not None, 'grpc_health.v1.health' in sys.modules,\n"
            "      'grpc_reflection.v1alpha.reflection_pb2_grpc' in sys.modules)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["True", "False", "True", "True", "False"], run.stdout + run.stderr
