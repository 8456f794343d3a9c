"""Wiring: config, ledger, connectors, Kafka consumer, heartbeats, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from lapse_common.agent_reports import ReportSigner
from lapse_common.clock import Clock, SystemClock
from lapse_common.command_signing import CommandVerifier
from lapse_common.messaging.broker import create_broker, require_topics
from lapse_common.messaging.publishing import BrokerPublisher, Publisher
from lapse_common.settings import KafkaSettings
from lapse_common.topics import Topics

from lapse_agent.config import load_config
from lapse_agent.connectors.registry import build_connectors
from lapse_agent.handlers import CommandHandling, subscribe_commands
from lapse_agent.ledger import CommandLedger
from lapse_agent.operations.send_heartbeat import send_heartbeat
from lapse_agent.platform_keys import PlatformKeyError, load_platform_keys
from lapse_agent.settings import AgentSettings

logger = logging.getLogger(__name__)

READY_LINE = "lapse-agent ready"


class StartupError(Exception):
    """The agent cannot start; the message says what to fix."""


def agent_version() -> str:
    try:
        return version("lapse-agent")
    except PackageNotFoundError:
        return "unknown"


def load_verifier(settings: AgentSettings, *, clock: Clock) -> CommandVerifier:
    try:
        keys = load_platform_keys(
            key_file=settings.command_public_key_file, keys_dir=settings.command_public_keys_dir
        )
    except PlatformKeyError as error:
        raise StartupError(str(error)) from None
    for key in keys:
        logger.info("trusting platform command key %s (%s)", key.key_id, key.source)
    return CommandVerifier(
        public_keys=[key.key for key in keys],
        clock=clock,
        max_validity=timedelta(seconds=settings.command_max_validity_seconds),
        clock_skew=timedelta(seconds=settings.command_clock_skew_seconds),
    )


def load_signer(path: Path, *, agent_id: str) -> ReportSigner:
    try:
        pem = path.read_bytes()
    except OSError as error:
        raise StartupError(
            f"LAPSE_AGENT_SIGNING_KEY_FILE {path}: cannot read: {error.strerror} "
            "(`lapse agents enroll` writes this agent's key)"
        ) from None
    try:
        return ReportSigner(agent_id=agent_id, private_key_pem=pem)
    except ValueError as error:
        raise StartupError(f"LAPSE_AGENT_SIGNING_KEY_FILE {path}: {error}") from None


async def heartbeat_forever(
    *,
    publisher: Publisher,
    topic: str,
    signer: ReportSigner,
    integrations: list[str],
    interval_seconds: float,
    clock: Clock,
) -> None:
    agent_release = agent_version()
    while True:
        try:
            await send_heartbeat(
                publisher=publisher,
                topic=topic,
                signer=signer,
                integrations=integrations,
                version=agent_release,
                clock=clock,
            )
        except Exception:
            # A missed heartbeat is what the platform watches for; keep trying.
            logger.warning("heartbeat for agent %s not published", signer.agent_id, exc_info=True)
        await asyncio.sleep(interval_seconds)


async def run_agent(
    settings: AgentSettings, *, kafka: KafkaSettings, clock: Clock | None = None
) -> None:
    """Run until SIGTERM/SIGINT."""
    clock = clock or SystemClock()
    config = load_config(settings.config_file)
    verifier = load_verifier(settings, clock=clock)
    agent_id = settings.agent_id
    signer = load_signer(settings.signing_key_file, agent_id=agent_id)
    topics = Topics(prefix=kafka.topic_prefix)
    commands_topic = topics.agent_commands(agent_id)

    ledger = await CommandLedger.open(settings.resolved_state_path)
    pruned = await ledger.prune(
        older_than=clock.now() - timedelta(days=settings.state_retention_days)
    )
    if pruned:
        logger.info(
            "forgot %d ledger rows older than %d days", pruned, settings.state_retention_days
        )
    connectors = build_connectors(config)
    broker = create_broker(kafka, client_id=f"lapse-agent-{agent_id}")
    publisher = BrokerPublisher(broker)
    subscribe_commands(
        broker,
        CommandHandling(
            agent_id=agent_id,
            topics=topics,
            verifier=verifier,
            connectors=connectors,
            principal_rules=config.principal_rules(),
            limits={
                integration.id: asyncio.Semaphore(integration.max_concurrent_commands)
                for integration in config.integrations
            },
            ledger=ledger,
            publisher=publisher,
            signer=signer,
            clock=clock,
            batch_size=kafka.consumer_batch_size,
            instance_id=kafka.instance_id,
        ),
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    heartbeats: asyncio.Task[None] | None = None
    try:
        await require_topics(kafka, [commands_topic, topics.agent_results, topics.agent_heartbeats])
        await broker.start()
        heartbeats = asyncio.create_task(
            heartbeat_forever(
                publisher=publisher,
                topic=topics.agent_heartbeats,
                signer=signer,
                integrations=config.integration_ids(),
                interval_seconds=settings.heartbeat_interval_seconds,
                clock=clock,
            ),
            name="heartbeats",
        )
        logger.info(
            "agent %s consuming %s for integrations %s",
            agent_id,
            commands_topic,
            ", ".join(config.integration_ids()),
        )
        if not stop.is_set():  # a signal during startup means: do not claim readiness
            print(READY_LINE, flush=True)
            await stop.wait()
        logger.info("agent %s stopping", agent_id)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if heartbeats is not None:
            heartbeats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeats
        # Stop consuming first: an in-flight command finishes and publishes its result
        # before the connectors and the ledger close underneath it.
        await broker.stop()
        for connector in connectors.values():
            await connector.close()
        await ledger.close()
