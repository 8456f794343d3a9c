"""The one factory that builds every KafkaBroker in Lapse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.security import BaseSecurity

from lapse_common.settings import KafkaSettings

logger = logging.getLogger(__name__)


def _security(settings: KafkaSettings) -> BaseSecurity | None:
    if settings.security_protocol != "SSL":
        return None
    context = ssl.create_default_context(
        cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None
    )
    return BaseSecurity(ssl_context=context, use_ssl=True)


def create_broker(settings: KafkaSettings, *, client_id: str) -> KafkaBroker:
    """A broker whose producer is idempotent with acks=all and whose messages carry
    OpenTelemetry trace context in their headers."""
    return KafkaBroker(
        settings.bootstrap_servers.split(","),
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        # Pattern subscriptions (audit) notice a new agent's command topic within this time.
        metadata_max_age_ms=5_000,
        security=_security(settings),
        middlewares=[KafkaTelemetryMiddleware()],
        logger=logging.getLogger(f"lapse.{client_id}.kafka"),
        log_level=logging.DEBUG,
    )


def consumer_options(*, group_id: str, instance_id: str = "") -> dict[str, Any]:
    """Subscriber options every Lapse consumer uses.

    The offset is committed only after the handler returned, and the handler returns only
    after its DB transaction committed; an exception seeks back so the message is redelivered
    (never FastStream's ack-first default).

    With an `instance_id` the consumer is a static group member (KIP-345): a process that
    crashed and restarts takes its partitions back at once instead of waiting out the
    session timeout and a rebalance, which is what keeps revocations flowing after a crash.
    """
    options: dict[str, Any] = {
        "group_id": group_id,
        "auto_offset_reset": "earliest",
        "ack_policy": AckPolicy.NACK_ON_ERROR,
        "max_poll_interval_ms": 300_000,
    }
    if instance_id:
        options["group_instance_id"] = f"{group_id}-{instance_id}"
    return options


async def ensure_topics(
    settings: KafkaSettings,
    topics: Iterable[str],
    *,
    partitions: int = 3,
    timeout: float = 60.0,
) -> None:
    """Create the topics if they do not exist yet; waits for the broker up to `timeout`."""
    wanted = list(dict.fromkeys(topics))
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers.split(","))
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in wanted if t not in existing]
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(
                        [
                            NewTopic(t, num_partitions=partitions, replication_factor=1)
                            for t in missing
                        ]
                    )
            return
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            logger.warning("Kafka at %s not reachable yet; retrying", settings.bootstrap_servers)
            await asyncio.sleep(1.0)
        finally:
            await admin.close()
