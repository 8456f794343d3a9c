"""Wiring of the chat front end: settings, directory, token minting, the Lapse gRPC APIs,
Slack and Teams clients, the HTTP routes and the requester notifications fed from Kafka."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass
from datetime import timedelta

import aiohttp
from aiohttp import web
from lapse_common.clock import SystemClock
from lapse_common.grpc_transport import GrpcTransportSettings, TransportMisconfigured
from lapse_common.pb.lapse.v1 import request_service_pb2
from lapse_common.settings import KafkaSettings, TelemetrySettings
from lapse_common.telemetry import setup_telemetry
from pydantic import ValidationError

from lapse_chatops.background import BackgroundWork
from lapse_chatops.directory import DirectoryError, DirectoryFile
from lapse_chatops.handlers import LapseCalls, SlackEndpoints, TeamsEndpoint, health
from lapse_chatops.lapse_api import LapseApi
from lapse_chatops.operations.notify_approvers import notify_approvers
from lapse_chatops.operations.notify_requester import RequesterNotifier
from lapse_chatops.payload_bounds import MAX_BODY_BYTES
from lapse_chatops.replay_guard import ReplayGuard
from lapse_chatops.requester_feed import RequesterFeed
from lapse_chatops.settings import DEFAULT_TOKEN_ISSUER, ChatopsSettings
from lapse_chatops.signatures import decode_teams_secret
from lapse_chatops.slack_api import SlackWebApi
from lapse_chatops.subject_tokens import SubjectTokenMinter
from lapse_chatops.teams_webhook import TeamsWebhook

logger = logging.getLogger(__name__)


class ConfigurationError(Exception):
    pass


def configure_logging() -> None:
    # Same format as the services (lapse_common.runtime), without importing their Kafka and
    # database stack into a process that uses neither.
    logging.basicConfig(
        level=os.environ.get("LAPSE_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s chatops %(levelname)s %(name)s: %(message)s",
    )
    # aiokafka logs every rebalance at INFO; keep the log readable.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


@dataclass
class Chatops:
    """Everything the process owns, so shutdown can close it in order."""

    app: web.Application
    lapse: LapseApi
    session: aiohttp.ClientSession
    background: BackgroundWork
    feed: RequesterFeed | None = None
    _feed_task: asyncio.Task[None] | None = None

    def start_notifications(self) -> None:
        if self.feed is not None:
            self._feed_task = asyncio.create_task(self.feed.run(), name="requester-feed")

    async def close(self) -> None:
        # First, so no notification starts on a session about to close.
        if self._feed_task is not None:
            self._feed_task.cancel()
            await asyncio.gather(self._feed_task, return_exceptions=True)
        await self.background.drain(timeout=10)
        await self.lapse.close()
        await self.session.close()


def teams_key(settings: ChatopsSettings) -> bytes | None:
    if not settings.slack_enabled and not settings.teams_enabled:
        raise ConfigurationError(
            "neither Slack (LAPSE_CHATOPS_SLACK_SIGNING_SECRET) nor Teams "
            "(LAPSE_CHATOPS_TEAMS_HMAC_SECRET) is configured: nothing to serve"
        )
    if not settings.teams_enabled:
        return None
    try:
        return decode_teams_secret(settings.teams_hmac_secret.get_secret_value())
    except ValueError as error:
        raise ConfigurationError(f"LAPSE_CHATOPS_TEAMS_HMAC_SECRET: {error}") from error


def build_app(
    *,
    settings: ChatopsSettings,
    directory: DirectoryFile,
    lapse: LapseCalls,
    session: aiohttp.ClientSession,
    background: BackgroundWork,
) -> web.Application:
    key = teams_key(settings)
    # Slack and Teams payloads are a few KiB; a larger body is answered 413 unread.
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    # One memory for both platforms: keys are prefixed with the platform.
    replays = ReplayGuard(max_entries=settings.replay_memory_entries)
    app.router.add_get("/healthz", health)
    slack: SlackWebApi | None = None
    if settings.slack_enabled:
        slack = SlackWebApi(
            bot_token=settings.slack_bot_token.get_secret_value(),
            base_url=settings.slack_api_base_url,
            session=session,
        )
        if not settings.slack_bot_token.get_secret_value() or not settings.slack_approvers_channel:
            logger.warning(
                "Slack approvers will not be asked: set LAPSE_CHATOPS_SLACK_BOT_TOKEN and "
                "LAPSE_CHATOPS_SLACK_APPROVERS_CHANNEL"
            )
    teams: TeamsWebhook | None = None
    if settings.teams_webhook_url.get_secret_value():
        teams = TeamsWebhook(url=settings.teams_webhook_url.get_secret_value(), session=session)
    elif settings.teams_enabled:
        logger.warning("Teams approvers will not be asked: set LAPSE_CHATOPS_TEAMS_WEBHOOK_URL")

    async def notify(
        view: request_service_pb2.AccessRequestView, approval_mode: str | None
    ) -> list[str]:
        return await notify_approvers(
            view=view,
            approval_mode=approval_mode,
            slack=slack if settings.slack_bot_token.get_secret_value() else None,
            slack_channel=settings.slack_approvers_channel,
            teams=teams,
            console_url=settings.console_url,
        )

    if slack is not None:
        endpoints = SlackEndpoints(
            signing_secret=settings.slack_signing_secret.get_secret_value(),
            replays=replays,
            directory=directory,
            lapse=lapse,
            slack=slack,
            notify=notify,
            background=background,
        )
        app.router.add_post("/slack/commands", endpoints.command)
        app.router.add_post("/slack/interactions", endpoints.interaction)
    if key is not None:
        teams_endpoint = TeamsEndpoint(
            hmac_key=key,
            replays=replays,
            directory=directory,
            lapse=lapse,
            notify=notify,
            background=background,
        )
        app.router.add_post("/teams/messages", teams_endpoint.message)
    return app


def requester_feed(
    settings: ChatopsSettings,
    *,
    kafka: KafkaSettings,
    directory: DirectoryFile,
    session: aiohttp.ClientSession,
) -> RequesterFeed | None:
    """The Kafka consumer behind requester notifications, or None when they are off."""
    enabled = settings.notify_requesters
    if enabled is None:
        enabled = "bootstrap_servers" in kafka.model_fields_set
    if not enabled:
        logger.info(
            "requester notifications off: set LAPSE_KAFKA_BOOTSTRAP_SERVERS "
            "(or LAPSE_CHATOPS_NOTIFY_REQUESTERS=true) to tell people about their requests"
        )
        return None
    bot_token = settings.slack_bot_token.get_secret_value()
    webhook_url = settings.teams_webhook_url.get_secret_value()
    if not bot_token and not webhook_url:
        logger.warning(
            "requester notifications off: they need LAPSE_CHATOPS_SLACK_BOT_TOKEN or "
            "LAPSE_CHATOPS_TEAMS_WEBHOOK_URL"
        )
        return None
    notifier = RequesterNotifier(
        directory=directory,
        slack=(
            SlackWebApi(bot_token=bot_token, base_url=settings.slack_api_base_url, session=session)
            if bot_token
            else None
        ),
        teams=TeamsWebhook(url=webhook_url, session=session) if webhook_url else None,
        clock=SystemClock(),
        attempts=settings.notify_attempts,
        retry_seconds=settings.notify_retry_seconds,
        max_age=timedelta(seconds=settings.notify_max_age_seconds),
    )
    return RequesterFeed(kafka=kafka, handle=notifier.notify)


async def create(settings: ChatopsSettings) -> Chatops:
    """Everything checked first, so a bad setting stops the process before it opens anything."""
    try:
        teams_key(settings)
        settings.listen_host_port()
        directory = DirectoryFile(settings.directory_file)
        tokens = SubjectTokenMinter(
            key_file=settings.token_key_file,
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            ttl_seconds=settings.token_ttl_seconds,
            key_id=settings.token_key_id,
        )
        kafka = KafkaSettings()
        lapse = LapseApi(
            request_address=settings.request_address,
            approval_address=settings.approval_address,
            tokens=tokens,
            timeout_seconds=settings.call_timeout_seconds,
            transport=GrpcTransportSettings(),
        )
    except (ValueError, DirectoryError, TransportMisconfigured) as error:
        raise ConfigurationError(str(error)) from error
    if settings.token_issuer != DEFAULT_TOKEN_ISSUER:
        # Allowed for a deployment whose services know chatops under another name, or for
        # running against services that do not yet trust a subject-only issuer; said aloud
        # because under a full issuer the services would take any roles its tokens claimed.
        logger.warning(
            "chatops tokens are issued as %r, not %r: make sure the services trust that issuer "
            "for the subject only (LAPSE_AUTH_SUBJECT_ONLY_ISSUERS)",
            settings.token_issuer,
            DEFAULT_TOKEN_ISSUER,
        )
    session = aiohttp.ClientSession()
    background = BackgroundWork()
    app = build_app(
        settings=settings, directory=directory, lapse=lapse, session=session, background=background
    )
    feed = requester_feed(settings, kafka=kafka, directory=directory, session=session)
    return Chatops(app=app, lapse=lapse, session=session, background=background, feed=feed)


async def run() -> None:
    configure_logging()
    try:
        settings = ChatopsSettings()
    except ValidationError as error:
        raise ConfigurationError(str(error)) from error
    setup_telemetry("chatops", TelemetrySettings())
    chatops = await create(settings)
    host, port = settings.listen_host_port()
    runner = web.AppRunner(chatops.app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        served = [
            name
            for name, on in (("Slack", settings.slack_enabled), ("Teams", settings.teams_enabled))
            if on
        ]
        logger.info("serving %s on %s:%d", " and ".join(served), host, port)
        chatops.start_notifications()
        print("lapse-chatops ready", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
        await chatops.close()
