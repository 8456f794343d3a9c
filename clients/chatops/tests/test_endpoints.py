"""The HTTP endpoints with the Lapse services and Slack replaced by recorders: an unproven
call is refused before anything is filed; a proven one is filed as the mapped person."""

from __future__ import annotations

import asyncio
import json
import uuid
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
from lapse_chatops.replay_guard import ReplayGuard
from lapse_common.pb.lapse.v1 import common_pb2, request_service_pb2

from clients.chatops.tests.signed_calls import (
    SLACK_SECRET,
    TEAMS_KEY,
    command,
    slack_headers,
    teams_headers,
)


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
        "slack: {U1: {subject: alice}, U2: {subject: approver-a}}\n"
        "teams: {aad-1: {subject: bob}, '29:teams-user-7': {subject: carol}}\n"
    )
    directory = DirectoryFile(directory_path)
    app = web.Application()
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
    h = Harness(client)

    async def notify(view: request_service_pb2.AccessRequestView, mode: str | None) -> None:
        h.notified.append(view.request_id)

    replays = ReplayGuard(max_entries=1000)
    slack = SlackEndpoints(
        signing_secret=SLACK_SECRET,
        replays=replays,
        directory=directory,
        lapse=h.lapse,
        slack=h.slack,
        notify=notify,
        background=h.background,
    )
    teams = TeamsEndpoint(
        hmac_key=TEAMS_KEY,
        replays=replays,
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


REQUEST = "request demo-pg/g-any read as it_alice for 30m because INC-7"


async def test_signed_slash_command_files_as_the_mapped_person(harness: Harness) -> None:
    body = command("U1", REQUEST)
    response = await harness.client.post("/slack/commands", data=body, headers=slack_headers(body))
    assert response.status == 200
    reply = await response.json()
    assert reply["response_type"] == "ephemeral"
    assert reply["text"].startswith("req-1 PENDING_APPROVAL: demo-pg/g-any read as it_alice")
    [(person, filed)] = harness.lapse.submitted
    assert person == Person("alice")
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
    text = (await response.json())["text"]
    assert text.startswith("your chat account is not linked to a Lapse identity; ask an admin")
    assert "U404" in text
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


def mention(
    text: str,
    aad: str | None = "aad-1",
    age: int = 0,
    *,
    activity_id: str | None = None,
    timestamp: str | None = "now",
    sender: dict[str, Any] | None = None,
) -> bytes:
    activity: dict[str, Any] = {
        "type": "message",
        "id": activity_id or uuid.uuid4().hex,
        "text": f"<at>Lapse</at> {text}",
        "from": sender if sender is not None else {"aadObjectId": aad, "name": "Bob Example"},
    }
    if timestamp == "now":
        sent = datetime.now(UTC) - timedelta(seconds=age)
        activity["timestamp"] = sent.isoformat().replace("+00:00", "Z")
    elif timestamp is not None:
        activity["timestamp"] = timestamp
    return json.dumps(activity).encode()


async def test_signed_teams_mention_files_and_replies(harness: Harness) -> None:
    body = mention(REQUEST)
    response = await harness.client.post("/teams/messages", data=body, headers=teams_headers(body))
    reply = await response.json()
    assert reply["type"] == "message" and reply["text"].startswith("req-1 PENDING_APPROVAL")
    assert harness.lapse.submitted[0][0] == Person("bob")
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


@pytest.mark.parametrize("age", [3600, 365 * 86400, 301, -301, -86400])
async def test_old_or_future_teams_mention_is_refused(harness: Harness, age: int) -> None:
    body = mention(REQUEST, age=age)
    response = await harness.client.post("/teams/messages", data=body, headers=teams_headers(body))
    assert response.status == 401
    assert "possible replay" in (await response.json())["error"]
    assert harness.lapse.submitted == []


@pytest.mark.parametrize(
    ("timestamp", "problem"),
    [
        (None, "activity without a timestamp"),
        ("", "activity without a timestamp"),
        ("last year", "is not ISO 8601"),
    ],
)
async def test_teams_mention_without_a_usable_timestamp_is_refused(
    harness: Harness, timestamp: str | None, problem: str
) -> None:
    # Signed with the right key: only the missing or unreadable timestamp is wrong.
    body = mention(REQUEST, timestamp=timestamp)
    response = await harness.client.post("/teams/messages", data=body, headers=teams_headers(body))
    assert response.status == 400
    assert problem in (await response.json())["error"]
    assert harness.lapse.submitted == []


async def test_teams_mention_replayed_byte_for_byte_is_refused(harness: Harness) -> None:
    body = mention(REQUEST)
    first = await harness.client.post("/teams/messages", data=body, headers=teams_headers(body))
    assert first.status == 200
    again = await harness.client.post("/teams/messages", data=body, headers=teams_headers(body))
    assert again.status == 401
    assert "already accepted" in (await again.json())["error"]
    assert len(harness.lapse.submitted) == 1


async def test_teams_activity_without_an_id_is_refused(harness: Harness) -> None:
    activity = json.loads(mention(REQUEST))
    del activity["id"]
    body = json.dumps(activity).encode()
    response = await harness.client.post("/teams/messages", data=body, headers=teams_headers(body))
    assert response.status == 400
    assert "activity without an id" in (await response.json())["error"]
    assert harness.lapse.submitted == []


async def test_unknown_teams_user_files_nothing(harness: Harness) -> None:
    body = mention(REQUEST, aad="aad-404")
    response = await harness.client.post("/teams/messages", data=body, headers=teams_headers(body))
    text = (await response.json())["text"]
    assert text.startswith("your chat account is not linked to a Lapse identity; ask an admin")
    assert "aad-404" in text
    assert harness.lapse.submitted == []


@pytest.mark.parametrize(
    "sender",
    [
        # What the old directory matched on: the display name (and "bob" is in the directory).
        {"name": "bob"},
        {"name": "Bob Example", "aadObjectId": "aad-unknown"},
        # A directory key presented as a display name, not as an id.
        {"name": "aad-1"},
        {"name": "29:teams-user-7"},
    ],
)
async def test_teams_user_known_only_by_display_name_is_refused(
    harness: Harness, sender: dict[str, Any]
) -> None:
    body = mention(REQUEST, sender=sender)
    response = await harness.client.post("/teams/messages", data=body, headers=teams_headers(body))
    assert response.status == 200
    assert "not linked to a Lapse identity" in (await response.json())["text"]
    await harness.background.drain(timeout=5)
    assert harness.lapse.submitted == [] and harness.notified == []


async def test_teams_user_id_is_a_stable_id_too(harness: Harness) -> None:
    body = mention(REQUEST, sender={"id": "29:teams-user-7", "name": "bob"})
    response = await harness.client.post("/teams/messages", data=body, headers=teams_headers(body))
    assert (await response.json())["text"].startswith("req-1 PENDING_APPROVAL")
    assert harness.lapse.submitted[0][0] == Person("carol")


async def test_slack_command_replayed_byte_for_byte_is_refused(harness: Harness) -> None:
    body = command("U1", REQUEST)
    headers = slack_headers(body)
    first = await harness.client.post("/slack/commands", data=body, headers=headers)
    assert first.status == 200
    for path in ("/slack/commands", "/slack/interactions"):
        again = await harness.client.post(path, data=body, headers=headers)
        assert again.status == 401
        assert "already accepted" in (await again.json())["error"]
    assert len(harness.lapse.submitted) == 1


async def test_slack_click_replayed_is_refused_and_votes_once(harness: Harness) -> None:
    body = click("U2", "lapse_approve")
    headers = slack_headers(body)
    first = await harness.client.post("/slack/interactions", data=body, headers=headers)
    assert first.status == 200
    again = await harness.client.post("/slack/interactions", data=body, headers=headers)
    assert again.status == 401
    await harness.background.drain(timeout=5)
    assert len(harness.lapse.decided) == 1


async def test_same_slack_body_signed_again_later_is_a_new_call(harness: Harness) -> None:
    # Slack signs each delivery with its own timestamp; only the identical call is a replay.
    body = command("U1", REQUEST)
    for age in (10, 0):
        response = await harness.client.post(
            "/slack/commands", data=body, headers=slack_headers(body, age=age)
        )
        assert response.status == 200
    assert len(harness.lapse.submitted) == 2


async def test_forged_slack_signature_is_not_remembered(harness: Harness) -> None:
    # A forged call must not take the place of the genuine one in the replay memory.
    body = command("U1", REQUEST)
    genuine = slack_headers(body)
    forged = {**genuine, "X-Slack-Signature": "v0=" + "0" * 64}
    refused = await harness.client.post("/slack/commands", data=body, headers=forged)
    assert refused.status == 401
    assert "does not match" in (await refused.json())["error"]
    accepted = await harness.client.post("/slack/commands", data=body, headers=genuine)
    assert accepted.status == 200
    assert len(harness.lapse.submitted) == 1


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (command("U1", "x" * 5000), "text is 5000 characters long (at most 4096)"),
        (command("U" * 300, REQUEST), "user_id is 300 characters long (at most 256)"),
        ("&".join(f"f{i}=1" for i in range(100)).encode(), "more than 64 form fields"),
    ],
)
async def test_oversized_slack_fields_are_refused_before_any_work(
    harness: Harness, body: bytes, problem: str
) -> None:
    response = await harness.client.post("/slack/commands", data=body, headers=slack_headers(body))
    assert response.status == 400
    assert problem in (await response.json())["error"]
    assert harness.lapse.submitted == []


async def test_deeply_nested_slack_payload_is_refused(harness: Harness) -> None:
    body = urlencode({"payload": "[" * 30_000 + "]" * 30_000}).encode()
    response = await harness.client.post(
        "/slack/interactions", data=body, headers=slack_headers(body)
    )
    assert response.status == 400
    assert "nested too deeply" in (await response.json())["error"]


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("text", "<at>" * 2000, "text is 8000 characters long (at most 4096)"),
        ("id", "i" * 300, "id is 300 characters long (at most 256)"),
        ("timestamp", "2" * 300, "timestamp is 300 characters long"),
        ("from", "someone", "`from` is not an object"),
    ],
)
async def test_oversized_teams_fields_are_refused_before_any_work(
    harness: Harness, field: str, value: str, problem: str
) -> None:
    activity = json.loads(mention(REQUEST))
    activity[field] = value
    body = json.dumps(activity).encode()
    response = await harness.client.post("/teams/messages", data=body, headers=teams_headers(body))
    assert response.status == 400
    assert problem in (await response.json())["error"]
    assert harness.lapse.submitted == []
