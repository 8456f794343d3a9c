"""HTTP endpoints Slack and Teams call. Thin: prove the caller and that the call is new, read
the payload, run the use case, answer. Nothing is parsed or filed for a call whose signature
does not hold, and nothing is done twice for a call sent again."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web
from lapse_common.pb.lapse.v1 import request_service_pb2

from lapse_chatops.background import BackgroundWork
from lapse_chatops.directory import DirectoryFile
from lapse_chatops.operations.decide_from_button import Decider, SlackMessages, decide_from_button
from lapse_chatops.operations.file_request import RequestSubmitter, file_request
from lapse_chatops.payload_bounds import MalformedPayload
from lapse_chatops.replay_guard import Replayed, ReplayGuard, ReplayMemoryFull
from lapse_chatops.signatures import (
    SLACK_MAX_AGE_SECONDS,
    TEAMS_MAX_AGE_SECONDS,
    SignatureRejected,
    SlackSignatures,
    verify_teams_freshness,
    verify_teams_hmac,
)
from lapse_chatops.slack_payloads import read_button_click, read_slash_command
from lapse_chatops.teams_activity import read_activity

logger = logging.getLogger(__name__)

# Tells the approvers about a request that waits for them (in the background).
NotifyApprovers = Callable[
    [request_service_pb2.AccessRequestView, str | None], Coroutine[Any, Any, object]
]


class LapseCalls(RequestSubmitter, Decider, Protocol):
    """What the endpoints need of the Lapse services (`LapseApi`)."""


# Calls not proven to come from the platform, or not for the first time.
_UNPROVEN = (SignatureRejected, Replayed, ReplayMemoryFull)


def _unauthorized(platform: str, request: web.Request, problem: Exception) -> web.Response:
    logger.warning(
        "refused %s call to %s from %s: %s", platform, request.path, request.remote, problem
    )
    if isinstance(problem, ReplayMemoryFull):
        return web.json_response({"error": f"unavailable: {problem}"}, status=503)
    return web.json_response({"error": f"unauthorized: {problem}"}, status=401)


def _bad_request(platform: str, problem: Exception) -> web.Response:
    logger.warning("malformed %s call: %s", platform, problem)
    return web.json_response({"error": f"bad request: {problem}"}, status=400)


class SlackEndpoints:
    def __init__(
        self,
        *,
        signing_secret: str,
        replays: ReplayGuard,
        directory: DirectoryFile,
        lapse: LapseCalls,
        slack: SlackMessages,
        notify: NotifyApprovers,
        background: BackgroundWork,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._signatures = SlackSignatures(signing_secret=signing_secret, now=now)
        self._replays = replays
        self._directory = directory
        self._lapse = lapse
        self._slack = slack
        self._notify = notify
        self._background = background

    async def _verified_body(self, request: web.Request) -> bytes:
        # Over MAX_BODY_BYTES, read() answers 413 (the application's client_max_size).
        body = await request.read()
        signature = request.headers.get("X-Slack-Signature")
        sent_at = self._signatures.verify(
            body=body,
            timestamp=request.headers.get("X-Slack-Request-Timestamp"),
            signature=signature,
        )
        # The signature is an HMAC of timestamp and body: the same call, byte for byte, has
        # the same one. Remembered until its timestamp is out of the window the SDK accepts.
        self._replays.admit(
            f"slack:{signature}", remember_until=sent_at + SLACK_MAX_AGE_SECONDS + 1
        )
        return body

    async def command(self, request: web.Request) -> web.Response:
        try:
            body = await self._verified_body(request)
        except _UNPROVEN as problem:
            return _unauthorized("Slack", request, problem)
        try:
            command = read_slash_command(body)
        except MalformedPayload as problem:
            return _bad_request("Slack", problem)
        if command.ssl_check:
            return web.Response(status=200)
        filing = await file_request(
            text=command.text,
            person=self._directory.current.slack_person(command.user_id),
            platform="Slack",
            chat_user=command.user_id,
            lapse=self._lapse,
        )
        if filing.needs_approvers is not None:
            self._background.start(
                self._notify(filing.needs_approvers, filing.approval_mode),
                what=f"notify approvers of {filing.needs_approvers.request_id}",
            )
        return web.json_response({"response_type": "ephemeral", "text": filing.reply})

    async def interaction(self, request: web.Request) -> web.Response:
        try:
            body = await self._verified_body(request)
        except _UNPROVEN as problem:
            return _unauthorized("Slack", request, problem)
        try:
            click = read_button_click(body)
        except MalformedPayload as problem:
            return _bad_request("Slack", problem)
        if click is not None:
            # Acknowledge at once; the vote and the message update follow.
            self._background.start(
                decide_from_button(
                    click=click,
                    person=self._directory.current.slack_person(click.user_id),
                    lapse=self._lapse,
                    slack=self._slack,
                ),
                what=f"decide {click.request_id} for {click.user_id}",
            )
        return web.Response(status=200)


class TeamsEndpoint:
    def __init__(
        self,
        *,
        hmac_key: bytes,
        replays: ReplayGuard,
        directory: DirectoryFile,
        lapse: LapseCalls,
        notify: NotifyApprovers,
        background: BackgroundWork,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._key = hmac_key
        self._replays = replays
        self._now = now
        self._directory = directory
        self._lapse = lapse
        self._notify = notify
        self._background = background

    async def message(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify_teams_hmac(
                key=self._key, body=body, authorization=request.headers.get("Authorization")
            )
        except SignatureRejected as problem:
            return _unauthorized("Teams", request, problem)
        try:
            message = read_activity(body)
        except MalformedPayload as problem:
            return _bad_request("Teams", problem)
        try:
            verify_teams_freshness(
                sent_at=message.sent_at, now=datetime.fromtimestamp(self._now(), UTC)
            )
            # The id is inside the signed body, so a replay cannot change it.
            self._replays.admit(
                f"teams:{message.activity_id}",
                remember_until=message.sent_at.timestamp() + TEAMS_MAX_AGE_SECONDS + 1,
            )
        except _UNPROVEN as problem:
            return _unauthorized("Teams", request, problem)
        filing = await file_request(
            text=message.text,
            person=self._directory.current.teams_person(
                aad_object_id=message.aad_object_id, user_id=message.user_id
            ),
            platform="Teams",
            chat_user=message.aad_object_id or message.user_id,
            lapse=self._lapse,
        )
        if filing.needs_approvers is not None:
            self._background.start(
                self._notify(filing.needs_approvers, filing.approval_mode),
                what=f"notify approvers of {filing.needs_approvers.request_id}",
            )
        # Teams renders the reply as markdown, where a single line break disappears.
        return web.json_response({"type": "message", "text": filing.reply.replace("\n", "\n\n")})


async def health(_: web.Request) -> web.Response:
    return web.Response(text="ok")
