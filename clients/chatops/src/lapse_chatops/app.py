"""Wiring of the chat front end: settings, directory, token minting, the Lapse gRPC APIs,
Slack and Teams clients, and the HTTP routes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from lapse_common.pb.lapse.v1 import request_service_pb2
from lapse_common.settings import TelemetrySettings
from lapse_common.telemetry import setup_telemetry
from pydantic import ValidationError

from lapse_chatops.background import BackgroundWork
from lapse_chatops.directory import DirectoryError, DirectoryFile
from lapse_chatops.handlers import LapseCalls, SlackEndpoints, TeamsEndpoint, health
from lapse_chatops.lapse_api import LapseApi, TokenMinter
from lapse_chatops.operations.notify_approvers import notify_approvers
from lapse_chatops.settings import ChatopsSettings
from lapse_chatops.signatures import decode_teams_secret
from lapse_chatops.slack_api import SlackWebApi
from lapse_chatops.teams_webhook import TeamsWebhook

logger = logging.getLogger(__name__)
# Slack and Teams payloads are a few KiB; anything near this is not from them.
MAX_BODY_BYTES = 256 * 1024


class ConfigurationError(Exception):
    pass


def configure_logging() -> None:
    # Same format as the services (lapse_common.runtime), without importing their Kafka and
    # database stack into a process that uses neither.
    logging.basicConfig(
        level=os.environ.get("LAPSE_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s chatops %(levelname)s %(name)s: %(message)s",
    )


@dataclass
class Chatops:
    """Everything the process owns, so shutdown can close it in order."""

    app: web.Application
    lapse: LapseApi
    session: aiohttp.ClientSession
    background: BackgroundWork

    async def close(self) -> None:
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
    app = web.Application(client_max_size=MAX_BODY_BYTES)
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
            hmac_key=key, directory=directory, lapse=lapse, notify=notify, background=background
        )
        app.router.add_post("/teams/messages", teams_endpoint.message)
    return app


async def create(settings: ChatopsSettings) -> Chatops:
    """Everything checked first, so a bad setting stops the process before it opens anything."""
    try:
        teams_key(settings)
        settings.listen_host_port()
        directory = DirectoryFile(settings.directory_file)
        tokens = TokenMinter(
            key_file=settings.token_key_file,
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            ttl_seconds=settings.token_ttl_seconds,
        )
    except (ValueError, DirectoryError) as error:
        raise ConfigurationError(str(error)) from error
    lapse = LapseApi(
        request_address=settings.request_address,
        approval_address=settings.approval_address,
        tokens=tokens,
        timeout_seconds=settings.call_timeout_seconds,
    )
    session = aiohttp.ClientSession()
    background = BackgroundWork()
    app = build_app(
        settings=settings, directory=directory, lapse=lapse, session=session, background=background
    )
    return Chatops(app=app, lapse=lapse, session=session, background=background)


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
        print("lapse-chatops ready", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
        await chatops.close()
