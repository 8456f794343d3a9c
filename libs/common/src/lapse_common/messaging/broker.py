"""The one factory that builds every KafkaBroker in Lapse."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware

from lapse_common.messaging.kafka_security import aiokafka_security_options, broker_security
from lapse_common.settings import KafkaSettings

logger = logging.getLogger(__name__)


def create_broker(
    settings: KafkaSettings, *, client_id: str, produces: bool = True
) -> KafkaBroker:
    """A broker whose producer is idempotent with acks=all and whose messages carry
    OpenTelemetry trace context in their headers.

    `produces=False` for a process that only consumes (the chat front end): its principal
    may write no topic, so the broker would refuse the idempotent producer FastStream
    starts anyway (InitProducerId needs a WRITE right)."""
    return KafkaBroker(
        settings.bootstrap_servers.split(","),
        client_id=client_id,
        enable_idempotence=produces,
        acks="all",
        # Pattern subscriptions (audit) notice a new agent's command topic within this time.
        metadata_max_age_ms=5_000,
        security=broker_security(settings),
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


# How long an idle consumer waits for records before asking again.
_BATCH_WAIT_MS = 100


def batch_consumer_options(*, group_id: str, instance_id: str, batch_size: int) -> dict[str, Any]:
    """Options for a consumer that takes records in batches and commits their offsets
    itself, per partition, once the batch's transaction committed (`batch_handling`).

    aiokafka hands over what it has fetched at once, up to `batch_size`: a quiet topic gives
    batches of one and costs no latency; under load a batch shares one transaction, one
    inbox statement and one offset commit."""
    options = consumer_options(group_id=group_id, instance_id=instance_id)
    options.update(
        batch=True,
        max_records=batch_size,
        batch_timeout_ms=_BATCH_WAIT_MS,
        # Nothing is committed for the consumer: the batch handler commits exactly the
        # offsets it handled, or reads a partition again from the record that failed.
        ack_policy=AckPolicy.MANUAL,
    )
    return options


class MissingTopics(RuntimeError):
    """Topics this process needs do not exist (or its principal may not see them)."""


async def require_topics(
    settings: KafkaSettings, topics: Iterable[str], *, timeout: float = 60.0
) -> None:
    """Fail at start, naming them, if topics this process needs are missing: no service
    creates topics (the broker refuses it and auto-creation is off), so without this a
    consumer would wait on a topic that never comes. Waits up to `timeout` for the broker."""
    wanted = list(dict.fromkeys(topics))
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.bootstrap_servers.split(","),
            **aiokafka_security_options(settings),
        )
        try:
            await admin.start()
            # A topic that is missing, or that this principal may not see, has an error.
            found = await admin.describe_topics(wanted)
            visible = {t["topic"] for t in found if t["error_code"] == 0}
            missing = [t for t in wanted if t not in visible]
            if missing:
                raise MissingTopics(
                    f"Kafka topics missing or not readable by {settings.username or 'this client'}"
                    f": {', '.join(missing)}. Topics and ACLs are made by the admin step "
                    "(python -m lapse_common.kafka_admin setup), never by services"
                )
            return
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            logger.warning("Kafka at %s not reachable yet; retrying", settings.bootstrap_servers)
            await asyncio.sleep(1.0)
        finally:
            await admin.close()
