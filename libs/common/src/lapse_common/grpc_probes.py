"""grpc.health.v1 health and server reflection on every service's gRPC port, so Kubernetes
probes, load balancers and grpcurl work.

Both answer without a bearer token (probes carry none) but only on the port's TLS, and
give away nothing a published proto file does not: health says SERVING or NOT_SERVING per
service, and reflection serves the descriptors of the services on the port (and of the
files they import) from a pool of their own, not the process's whole descriptor pool.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
REFLECTION_SERVICE: str = reflection.SERVICE_NAME
# Watch is left to authenticated callers: an anonymous stream per connection is cheap to
# open and costly to hold, and probes use Check.
PUBLIC_PROBE_METHODS = frozenset(
    {
        f"/{HEALTH_SERVICE}/Check",
        f"/{REFLECTION_SERVICE}/ServerReflectionInfo",
    }
)


def descriptor_pool_of(service_names: Iterable[str]) -> descriptor_pool.DescriptorPool:
    """A pool with the files defining `service_names` and what those files import, only."""
    source = descriptor_pool.Default()
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pool.Add(proto)
        added.add(file.name)

    for name in service_names:
        add(source.FindServiceByName(name).file)
    return pool


class Probes:
    """The health and reflection services of one server, and its serving status."""

    def __init__(self) -> None:
        self._health = health.aio.HealthServicer()
        self._services: tuple[str, ...] = ()

    @property
    def services(self) -> tuple[str, ...]:
        return self._services

    async def register(self, server: grpc.aio.Server, service_names: Iterable[str]) -> None:
        """Adds health and reflection for `service_names`; every status NOT_SERVING until
        `serving()` (a probe must not pass before the consumers and relay are up)."""
        self._services = (*service_names, HEALTH_SERVICE, REFLECTION_SERVICE)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            self._services, server, pool=descriptor_pool_of(self._services)
        )
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)

    async def serving(self) -> None:
        await self._set_all(health_pb2.HealthCheckResponse.SERVING)

    async def shutting_down(self) -> None:
        """NOT_SERVING for good, so balancers stop sending calls during the grace period."""
        await self._health.enter_graceful_shutdown()

    async def _set_all(self, status: Any) -> None:
        for name in ("", *self._services):
            await self._health.set(name, status)


class ExceptForProbes(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Runs `inner` (authentication, request screening) on every call but the public
    probe methods, which are served as they are."""

    def __init__(self, inner: grpc.aio.ServerInterceptor) -> None:
        self._inner = inner

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method in PUBLIC_PROBE_METHODS:
            return await continuation(details)
        return await self._inner.intercept_service(continuation, details)


class ServiceNameRecorder:
    """Handed to the services' register functions in place of the server: the generated
    add_*Servicer_to_server functions name each service they add, so health and reflection
    list exactly what is served without any service repeating its own names."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server
        self.names: list[str] = []

    def add_generic_rpc_handlers(self, handlers: Iterable[Any]) -> None:
        handlers = tuple(handlers)
        for handler in handlers:
            name = getattr(handler, "service_name", None)
            if callable(name):
                self.names.append(str(name()))
        self._server.add_generic_rpc_handlers(handlers)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._server, attribute)
