"""What grpcurl and a Kubernetes probe see on every gRPC port of the running stack: TLS
only, reflection listing the port's Lapse service, health SERVING, all without a token;
and what a plaintext client gets: nothing."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from importlib.metadata import version

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from lapse_common.grpc_transport import GrpcTransportSettings, open_aio_channel
from lapse_common.pb.lapse.v1 import request_service_pb2, request_service_pb2_grpc

from tests.stack import LapseStack

pytestmark = [pytest.mark.integration]

LAPSE_SERVICE = {
    "request": "lapse.v1.RequestService",
    "approval": "lapse.v1.ApprovalService",
    "audit": "lapse.v1.AuditService",
    "revoker": "lapse.v1.RevokerService",
}
HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
PORTS = tuple(LAPSE_SERVICE)


@pytest.mark.parametrize("port", PORTS)
def test_reflection_lists_the_service_of_every_port_over_tls(stack: LapseStack, port: str) -> None:
    """`grpcurl -cacert ca.crt 127.0.0.1:PORT list` and `describe`, without a token."""
    with stack.channel(port) as channel:
        reflected = ProtoReflectionDescriptorDatabase(channel)
        assert sorted(reflected.get_services()) == sorted([LAPSE_SERVICE[port], HEALTH, REFLECTION])
        described = reflected.FindFileContainingSymbol(LAPSE_SERVICE[port])
        assert described.package == "lapse.v1"
        service = next(s for s in described.service if f"lapse.v1.{s.name}" == LAPSE_SERVICE[port])
        assert service.method, "the service's methods are described"
        # The process has other descriptors loaded; reflection serves none of them.
        for elsewhere in ("google.protobuf.Struct", "opentelemetry.proto.trace.v1.Span"):
            with pytest.raises(KeyError):
                reflected.FindFileContainingSymbol(elsewhere)


@pytest.mark.parametrize("port", PORTS)
async def test_health_is_serving_for_the_server_and_each_service(
    stack: LapseStack, port: str
) -> None:
    async with stack.aio_channel(port) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", LAPSE_SERVICE[port], HEALTH, REFLECTION):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, name
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await health.Check(health_pb2.HealthCheckRequest(service="lapse.v1.Nope"), timeout=10)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_only_the_probes_are_public(stack: LapseStack) -> None:
    async with stack.aio_channel("request") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await request_service_pb2_grpc.RequestServiceStub(channel).ListActivity(
                request_service_pb2.ListActivityRequest(), timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await watch.read()
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("port", PORTS)
async def test_a_plaintext_client_gets_no_answer(stack: LapseStack, port: str) -> None:
    address = f"127.0.0.1:{stack.ports[port]}"
    plaintext = GrpcTransportSettings(allow_plaintext=True)
    async with open_aio_channel(address, plaintext) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

    def raw_http2() -> bytes:
        """The HTTP/2 preface and an empty SETTINGS frame in the clear, as a plaintext
        gRPC client starts; a gRPC server in the clear would answer with SETTINGS."""
        with socket.create_connection(("127.0.0.1", stack.ports[port]), timeout=10) as sock:
            sock.sendall(
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
            )
            received = b""
            try:
                while chunk := sock.recv(4096):
                    received += chunk
            except (TimeoutError, ConnectionResetError):
                pass
            return received

    answer = await asyncio.to_thread(raw_http2)
    # Nothing, or a TLS alert record (content type 21): never an HTTP/2 frame.
    assert answer == b"" or answer[0] == 0x15, answer[:32]
    assert b"\x00\x00\x04" not in answer[:9]


def test_cli_version(stack: LapseStack) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lapse_cli", "--version"],
        env=stack.environment(),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"lapse {version('lapse-cli')}"
