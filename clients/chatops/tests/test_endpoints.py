"""The HTTP endpoints with the Lapse services and Slack replaced by recorders: an unproven
call is refused before anything is filed; a proven one is filed as the mapped person."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from lapse_chatops.background import BackgroundWork
from lapse_chatops.directory import DirectoryFile, Person
from lapse_chatops.grammar import RequestCommand
from lapse_chatops.handlers import SlackEndpoints, TeamsEndpoint
from lapse_chatops.lapse_api import LapseRefused
from lapse_common.pb.lapse.v1 import common_pb2, request_service_pb2

SLACK_SECRET = "slack-signing-secret"
TEAMS_KEY = b"teams-key-0123456789"


class RecordingLapse:
    def __init__(self) -> None:
        self.submitted: list[tuple[Person, RequestCommand]] = []
        self.decided: list[tuple[Person, str, bool, str]] = []
        self.refuse_decision: LapseRefused | None = None

    async def submit(
        self, person: Person, command: RequestCommand
    ) -> request_service_pb2.AccessRequestView:
        self.submitted.append((person, command))
        return request_service_pb2.AccessRequestView(
            request_id=f"req-{len(self.submitted)}",
            requester=person.subject,
            flow="flow-g-any",
            status=common_pb2.REQUEST_STATUS_PENDING_APPROVAL,
            duration_seconds=command.duration_seconds,
            items=[
                common_pb2.GrantSpec(
                    integration_id=command.integration_id,
                    resource=command.resource,
                    permission=command.permission,
                    principal=command.principal,
                )
            ],
        )

    async def approval_mode(self, person: Person, flow: str) -> str | None:
        return "any_of"

    async def decide(self, person: Person, *, request_id: str, approve: bool, reason: str) -> str:
        if self.refuse_decision is not None:
            raise self.refuse_decision
        self.decided.append((person, request_id, approve, reason))
        return "APPROVED" if approve else "REJECTED"


class RecordingSlack:
    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []
        self.private: list[str] = []

    async def update_message(
        self, *, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]
    ) -> None:
        self.updates.append({"channel": channel, "ts": ts, "text": text, "blocks": blocks})

    async def respond_privately(self, *, response_url: str, text: str) -> None:
        self.private.append(text)


class Harness:
    def __init__(self, client: TestClient[web.Request, web.Application]) -> None:
        self.client = client
        self.lapse = RecordingLapse()
        self.slack = RecordingSlack()
        self.notified: list[str] = []
        self.background = BackgroundWork()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    directory_path = tmp_path / "directory.yaml"
    directory_path.write_text(
        "slack: {U1: {subject: alice, groups: [engineering]}, U2: {subject: approver-a}}\n"
        "teams: {aad-1: {subject: bob, groups: [engineering]}}\n"
    )
    directory = DirectoryFile(directory_path)
    app = web.Application()
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
    h = Harness(client)

    async def notify(view: request_service_pb2.AccessRequestView, mode: str | None) -> None:
        h.notified.append(view.request_id)

    slack = SlackEndpoints(
        signing_secret=SLACK_SECRET,
        directory=directory,
        lapse=h.lapse,
        slack=h.slack,
        notify=notify,
        background=h.background,
    )
    teams = TeamsEndpoint(
        hmac_key=TEAMS_KEY,
        directory=directory,
        lapse=h.lapse,
        notify=notify,
        background=h.background,
    )
    app.router.add_post("/slack/commands", slack.command)
    app.router.add_post("/slack/interactions", slack.interaction)
    app.router.add_post("/teams/messages", teams.message)
    await client.start_server()
    yield h
    await h.background.drain(timeout=5)
    await client.close()


def slack_headers(body: bytes, *, age: int = 0, secret: str = SLACK_SECRET) -> dict[str, str]:
    stamp = str(int(time.time()) - age)
    digest = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={digest.hexdigest()}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def command(user: str, text: str) -> bytes:
    return urlencode({"user_id": user, "command": "/lapse", "text": text}).encode()


REQUEST = "request demo-pg/g-any read as it_alice for 30m because INC-7"


async def test_signed_slash_command_files_as_the_mapped_person(harness: Harness) -> None:
    body = command("U1", REQUEST)
    response = await harness.client.post("/slack/commands", data=body, headers=slack_headers(body))
    assert response.status == 200
    reply = await response.json()
    assert reply["response_type"] == "ephemeral"
    assert reply["text"].startswith("req-1 PENDING_APPROVAL: demo-pg/g-any read as it_alice")
    [(person, filed)] = harness.lapse.submitted
    assert person == Person("alice", ("engineering",))
    assert (filed.duration_seconds, filed.justification) == (1800, "INC-7")
    await harness.background.drain(timeout=5)
    assert harness.notified == ["req-1"]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing"),
        (slack_headers(command("U1", REQUEST), secret="wrong"), "does not match"),
        (slack_headers(command("U1", REQUEST), age=600), "possible replay"),
        (slack_headers(command("U1", "help")), "does not match"),
    ],
)
async def test_unproven_slack_calls_are_refused(
    harness: Harness, headers: dict[str, str], reason: str
) -> None:
    for path in ("/slack/commands", "/slack/interactions"):
        response = await harness.client.post(path, data=command("U1", REQUEST), headers=headers)
        assert response.status == 401
        assert reason in (await response.json())["error"]
    assert harness.lapse.submitted == [] and harness.lapse.decided == []


async def test_unknown_slack_user_files_nothing(harness: Harness) -> None:
    body = command("U404", REQUEST)
    response = await harness.client.post("/slack/commands", data=body, headers=slack_headers(body))
    assert "you are not in the Lapse directory" in (await response.json())["text"]
    assert harness.lapse.submitted == []


async def test_bad_command_explains_itself(harness: Harness) -> None:
    body = command("U1", "request demo-pg/appdb read")
    response = await harness.client.post("/slack/commands", data=body, headers=slack_headers(body))
    text = (await response.json())["text"]
    assert "`as LOGIN`" in text and "usage: request" in text
    assert harness.lapse.submitted == []


def click(user: str, action: str) -> bytes:
    payload = {
        "type": "block_actions",
        "user": {"id": user},
        "container": {"type": "message", "message_ts": "1.2", "channel_id": "C1"},
        "message": {"ts": "1.2", "blocks": [{"type": "actions", "block_id": "lapse_decision"}]},
        "response_url": "http://127.0.0.1:1/response",
        "actions": [{"action_id": action, "value": "req-9", "type": "button"}],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


async def test_button_click_decides_as_the_clicker_and_updates_the_message(
    harness: Harness,
) -> None:
    body = click("U2", "lapse_reject")
    response = await harness.client.post(
        "/slack/interactions", data=body, headers=slack_headers(body)
    )
    assert response.status == 200
    await harness.background.drain(timeout=5)
    assert harness.lapse.decided == [
        (Person("approver-a"), "req-9", False, "rejected in Slack by approver-a")
    ]
    [update] = harness.slack.updates
    assert (update["channel"], update["ts"]) == ("C1", "1.2")
    assert [b["type"] for b in update["blocks"]] == ["context"]
    assert "request is now *REJECTED*" in json.dumps(update["blocks"])


async def test_refused_vote_is_explained_to_the_clicker_only(harness: Harness) -> None:
    harness.lapse.refuse_decision = LapseRefused(
        "PERMISSION_DENIED", "requester cannot approve self"
    )
    body = click("U1", "lapse_approve")
    await harness.client.post("/slack/interactions", data=body, headers=slack_headers(body))
    await harness.background.drain(timeout=5)
    assert harness.slack.private == [
        "Could not approve req-9: PERMISSION_DENIED: requester cannot approve self"
    ]
    assert harness.slack.updates == []


def teams_headers(body: bytes, key: bytes = TEAMS_KEY) -> dict[str, str]:
    signature = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()
    return {"Authorization": f"HMAC {signature}", "Content-Type": "application/json"}


def mention(text: str, aad: str = "aad-1", age: int = 0) -> bytes:
    sent = datetime.now(UTC) - timedelta(seconds=age)
    return json.dumps(
        {
            "type": "message",
            "timestamp": sent.isoformat().replace("+00:00", "Z"),
            "text": f"<at>Lapse</at> {text}",
            "from": {"aadObjectId": aad},
        }
    ).encode()


async def test_signed_teams_mention_files_and_replies(harness: Harness) -> None:
    body = mention(REQUEST)
    response = await harness.client.post("/teams/messages", data=body, headers=teams_headers(body))
    reply = await response.json()
    assert reply["type"] == "message" and reply["text"].startswith("req-1 PENDING_APPROVAL")
    assert harness.lapse.submitted[0][0] == Person("bob", ("engineering",))
    await asyncio.wait_for(harness.background.drain(timeout=5), 6)
    assert harness.notified == ["req-1"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "HMAC AAAA"}, teams_headers(mention(REQUEST), b"other key")],
)
async def test_unproven_teams_calls_are_refused(harness: Harness, headers: dict[str, str]) -> None:
    response = await harness.client.post("/teams/messages", data=mention(REQUEST), headers=headers)
    assert response.status == 401
    assert harness.lapse.submitted == []


async def test_replayed_teams_mention_is_refused(harness: Harness) -> None:
    body = mention(REQUEST, age=3600)
    response = await harness.client.post("/teams/messages", data=body, headers=teams_headers(body))
    assert response.status == 401
    assert "possible replay" in (await response.json())["error"]
    assert harness.lapse.submitted == []


async def test_unknown_teams_user_files_nothing(harness: Harness) -> None:
    body = mention(REQUEST, aad="aad-404")
    response = await harness.client.post("/teams/messages", data=body, headers=teams_headers(body))
    assert "you are not in the Lapse directory" in (await response.json())["text"]
    assert harness.lapse.submitted == []
