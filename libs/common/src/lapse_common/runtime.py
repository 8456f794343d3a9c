"""Process wiring shared by the services: DB, Kafka, outbox relay, gRPC server, shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import grpc
from faststream.kafka import KafkaBroker
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from lapse_common.agent_reports import AgentRegistry
from lapse_common.clock import Clock, SystemClock
from lapse_common.db import Base, create_engine_for_service, create_schema, session_factory
from lapse_common.grpc_probes import ExceptForProbes, Probes, ServiceNameRecorder
from lapse_common.grpc_transport import (
    GrpcTransportSettings,
    TransportMisconfigured,
    bind_server_port,
    message_size_options,
)
from lapse_common.kafka_admin import principals
from lapse_common.messaging.broker import create_broker, require_topics
from lapse_common.messaging.consumer import subscribe_events
from lapse_common.messaging.housekeeping import Housekeeping
from lapse_common.messaging.outbox import OutboxRelay
from lapse_common.messaging.payload_routes import Route
from lapse_common.messaging.publishing import BrokerPublisher
from lapse_common.messaging.quarantine import Quarantine
from lapse_common.migrations import upgrade_to_head
from lapse_common.request_screening import RequestScreeningInterceptor
from lapse_common.settings import HousekeepingSettings, KafkaSettings, TelemetrySettings
from lapse_common.telemetry import setup_telemetry
from lapse_common.topics import Topics

logger = logging.getLogger(__name__)


def configure_logging(service: str) -> None:
    logging.basicConfig(
        level=os.environ.get("LAPSE_LOG_LEVEL", "INFO").upper(),
        format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s",
    )
    # aiokafka logs every rebalance at INFO; keep service logs readable.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


@dataclass
class Service:
    """Everything one service process owns. Built by `Service.start`."""

    name: str
    clock: Clock
    topics: Topics
    kafka: KafkaSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    broker: KafkaBroker
    relay: OutboxRelay
    quarantine: Quarantine
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)

    @classmethod
    async def create(
        cls,
        *,
        name: str,
        database_url: str,
        metadatas: Sequence[MetaData],
        migrations_dir: Path | None = None,
        kafka: KafkaSettings | None = None,
        telemetry: TelemetrySettings | None = None,
        clock: Clock | None = None,
    ) -> Service:
        configure_logging(name)
        kafka = kafka or KafkaSettings()
        setup_telemetry(name, telemetry or TelemetrySettings())
        clock = clock or SystemClock()
        schema = name.replace("-", "_")
        engine = create_engine_for_service(database_url, schema=schema)
        if migrations_dir is not None:
            await upgrade_to_head(
                engine, schema=schema, migrations_dir=migrations_dir, metadatas=metadatas
            )
        else:
            # Only for tests of one service's wiring: real processes always migrate.
            await create_schema(engine, schema=schema, metadatas=[Base.metadata, *metadatas])
        sessions = session_factory(engine)
        broker = create_broker(kafka, client_id=f"lapse-{name}")
        publisher = BrokerPublisher(broker)
        topics = Topics(prefix=kafka.topic_prefix)
        return cls(
            name=name,
            clock=clock,
            topics=topics,
            kafka=kafka,
            engine=engine,
            sessions=sessions,
            broker=broker,
            relay=OutboxRelay(sessions=sessions, publisher=publisher, clock=clock),
            quarantine=Quarantine(
                publisher=publisher, topic=topics.quarantine, producer=name, clock=clock
            ),
        )

    def subscribe(
        self,
        *,
        consumer: str,
        routes: Sequence[Route],
        topic: str | Sequence[str] | None = None,
        pattern: str | None = None,
        group_id: str | None = None,
        deduplicate: bool = True,
    ) -> None:
        """A transactional, idempotent consumer on this service's DB, outbox and quarantine."""
        subscribe_events(
            self.broker,
            topic=topic,
            pattern=pattern,
            consumer=consumer,
            group_id=group_id,
            group_prefix=self.topics.prefix,
            instance_id=self.kafka.instance_id,
            routes=routes,
            sessions=self.sessions,
            relay=self.relay,
            quarantine=self.quarantine,
            clock=self.clock,
            batch_size=self.kafka.consumer_batch_size,
            deduplicate=deduplicate,
        )

    def follow_agent_registry(self) -> AgentRegistry:
        """The agents' enrolled keys, read from lapse.agent-registry.v1 for as long as the
        service runs; its verify() checks what an agent sent before any handler acts on it."""
        registry = AgentRegistry(
            kafka=self.kafka, topic=self.topics.agent_registry, clock=self.clock
        )
        self.background.append(registry.follow)
        return registry

    def _topics_of_principal(self) -> list[str]:
        """The topics this service's Kafka principal reads or writes (prefix rights, such as
        every agent's command topic, are checked by use)."""
        rights = principals.service(self.name)
        return [
            self.topics.prefix + name
            for name in (*rights.reads, *rights.writes)
            if not name.endswith("*")
        ]

    async def _grpc_server(
        self,
        probes: Probes,
        servicers: Sequence[Callable[[grpc.aio.Server], None]],
        address: str,
        interceptors: Sequence[grpc.aio.ServerInterceptor],
    ) -> grpc.aio.Server:
        """The gRPC server, bound but not started: TLS, message size limits, the services,
        health and reflection."""
        transport = GrpcTransportSettings()
        tracing = aio_server_interceptor()  # type: ignore[no-untyped-call]
        # Screening runs inside authentication: an anonymous caller learns nothing about
        # the limits, and no handler sees a request that breaks them. Neither applies to
        # the probes, which are public (and streamed, in reflection's case).
        server = grpc.aio.server(
            interceptors=[
                tracing,
                *(ExceptForProbes(interceptor) for interceptor in interceptors),
                ExceptForProbes(RequestScreeningInterceptor()),
            ],
            options=message_size_options(transport),
        )
        recorder = ServiceNameRecorder(server)
        for register in servicers:
            register(cast(grpc.aio.Server, recorder))
        await probes.register(server, recorder.names)
        bind_server_port(server, address, transport)
        return server

    async def run(
        self,
        *,
        grpc_servicers: Sequence[Callable[[grpc.aio.Server], None]] = (),
        grpc_address: str | None = None,
        grpc_interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ) -> None:
        """Run until SIGTERM/SIGINT: consumers, relay, housekeeping, background loops and gRPC."""
        server: grpc.aio.Server | None = None
        probes = Probes()
        housekeeping = Housekeeping(
            sessions=self.sessions, clock=self.clock, settings=HousekeepingSettings()
        )
        if grpc_address:
            # Before anything else starts: a port that would serve in the clear stops the
            # process with the setting to fix.
            try:
                server = await self._grpc_server(
                    probes, grpc_servicers, grpc_address, grpc_interceptors
                )
            except TransportMisconfigured as error:
                raise SystemExit(f"lapse-{self.name}: refusing to start: {error}") from error
        await require_topics(self.kafka, self._topics_of_principal())
        await self.broker.start()
        if server is not None:
            await server.start()
            logger.info(
                "%s gRPC listening on %s: %s", self.name, grpc_address, ", ".join(probes.services)
            )
        tasks = [asyncio.create_task(self.relay.run(), name="outbox-relay")]
        tasks += [asyncio.create_task(loop(), name=loop.__name__) for loop in self.background]
        tasks.append(asyncio.create_task(housekeeping.run(), name="housekeeping"))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await probes.serving()
        logger.info("%s ready", self.name)
        print(f"lapse-{self.name} ready", flush=True)
        stop_waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stop_waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stop_waiter and task.exception() is not None:
                logger.error(
                    "%s: %s crashed", self.name, task.get_name(), exc_info=task.exception()
                )
        logger.info("%s stopping", self.name)
        self.relay.stop()
        if server is not None:
            await probes.shutting_down()
            await server.stop(grace=5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.broker.stop()
        await self.engine.dispose()
