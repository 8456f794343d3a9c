"""Slack and Teams on the real system: `python -m lapse_chatops` in front of every Lapse
service on real Kafka and PostgreSQL, reading the stack's topics to notify requesters. Only
Slack's Web API and the Teams webhook are stood in for, by a local recorder (they are
external SaaS).

chatops' tokens name the subject only; the groups of its users come from the services'
directory file (tests/stack.py DIRECTORY_GROUPS). Which key it signs with depends on what the
stack's services trust (`chatops_token_env`)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import grpc
import pytest
from lapse_common.auth import ensure_keypair, mint_token
from lapse_common.pb.lapse.v1 import (
    approval_service_pb2,
    approval_service_pb2_grpc,
    common_pb2,
    request_service_pb2,
)

from tests.integration.chatops_recorder import ChatRecorder, RecordedCall
from tests.integration.clients import StackClients, bearer, has_role
from tests.integration.waiting import wait_for
from tests.stack import LapseStack, ServiceProcess, free_port

pytestmark = [pytest.mark.integration]

SIGNING_SECRET = "chatops-test-signing-secret"
BOT_TOKEN = "xoxb-chatops-test"
TEAMS_KEY = b"chatops test teams outgoing webhook key"
APPROVERS_CHANNEL = "C0APPROVERS"
CONSOLE = "https://lapse.example.test"
# Chat identities. No other test gives u03 or u02 anything on g-any; approver-a is one of
# flow-g-any's approvers.
REQUESTER = "U0CHATOPS03"
APPROVER = "U0APPROVERA"
STRANGER = "U0NOTLISTED"
TEAMS_REQUESTER = "aad-chatops-u02"
# The Slack requester (u03) is in Teams too, so their notifications reach both.
TEAMS_U03 = "aad-chatops-u03"


CHATOPS_ISSUER = "lapse-chatops"


def chatops_token_key(stack: LapseStack) -> tuple[Path, Path]:
    # The same pair the stack publishes to its services (ensure_keypair keeps an existing one).
    return ensure_keypair(stack.workdir / "keys", "chatops-token")


def chatops_token_env(stack: LapseStack) -> dict[str, str]:
    """chatops' own key and issuer, which the stack's services trust for the subject only."""
    key, _ = chatops_token_key(stack)
    return {"LAPSE_CHATOPS_TOKEN_KEY_FILE": str(key), "LAPSE_CHATOPS_TOKEN_ISSUER": CHATOPS_ISSUER}


@dataclass
class Chatops:
    url: str
    recorder: ChatRecorder
    http: aiohttp.ClientSession

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        async with self.http.post(self.url + path, data=body, headers=headers) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None


@pytest.fixture(scope="module")
async def chatops(stack: LapseStack) -> AsyncIterator[Chatops]:
    recorder = ChatRecorder(bot_token=BOT_TOKEN)
    await recorder.start()
    directory = stack.workdir / "chatops-directory.yaml"
    directory.write_text(
        f"""
slack:
  {REQUESTER}: {{subject: u03}}
  {APPROVER}: {{subject: approver-a}}
teams:
  {TEAMS_REQUESTER}: {{subject: u02}}
  {TEAMS_U03}: {{subject: u03}}
"""
    )
    port = free_port()
    env = {
        **stack.environment(),
        **stack.kafka_env("lapse-chatops"),
        "LAPSE_CHATOPS_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "LAPSE_CHATOPS_REQUEST_ADDRESS": f"127.0.0.1:{stack.ports['request']}",
        "LAPSE_CHATOPS_APPROVAL_ADDRESS": f"127.0.0.1:{stack.ports['approval']}",
        **chatops_token_env(stack),
        "LAPSE_CHATOPS_DIRECTORY_FILE": str(directory),
        "LAPSE_CHATOPS_SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "LAPSE_CHATOPS_SLACK_BOT_TOKEN": BOT_TOKEN,
        "LAPSE_CHATOPS_SLACK_API_BASE_URL": f"{recorder.base_url}/api/",
        "LAPSE_CHATOPS_SLACK_APPROVERS_CHANNEL": APPROVERS_CHANNEL,
        "LAPSE_CHATOPS_TEAMS_HMAC_SECRET": base64.b64encode(TEAMS_KEY).decode(),
        "LAPSE_CHATOPS_TEAMS_WEBHOOK_URL": f"{recorder.base_url}/teams/webhook",
        "LAPSE_CHATOPS_CONSOLE_URL": CONSOLE,
    }
    process = ServiceProcess("chatops", "lapse_chatops", env, stack.log_dir)
    process.start()
    http = aiohttp.ClientSession()
    try:
        await asyncio.to_thread(process.wait_ready)
        yield Chatops(url=f"http://127.0.0.1:{port}", recorder=recorder, http=http)
    finally:
        process.stop()
        await http.close()
        await recorder.stop()


def slack_headers(body: bytes, *, age: int = 0, secret: str = SIGNING_SECRET) -> dict[str, str]:
    """Signed as Slack signs: v0 HMAC-SHA256 over `v0:{timestamp}:{body}`."""
    stamp = str(int(time.time()) - age)
    digest = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={digest.hexdigest()}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def teams_headers(body: bytes, key: bytes = TEAMS_KEY) -> dict[str, str]:
    """Signed as Teams signs an outgoing webhook: HMAC-SHA256 of the body, base64."""
    signature = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()
    return {"Authorization": f"HMAC {signature}", "Content-Type": "application/json"}


def slash_command(user: str, text: str) -> bytes:
    return urlencode(
        {
            "team_id": "T0LAPSE",
            "channel_id": "C0GENERAL",
            "user_id": user,
            "command": "/lapse",
            "text": text,
            "response_url": "https://hooks.slack.invalid/commands/1",
        }
    ).encode()


def teams_mention(
    aad_object_id: str | None, text: str, *, age: int = 0, name: str = "U Two", stamped: bool = True
) -> bytes:
    sent = datetime.now(UTC) - timedelta(seconds=age)
    activity: dict[str, Any] = {
        "type": "message",
        "id": uuid.uuid4().hex,
        "text": f"<at>Lapse</at>&nbsp;{text}\n",
        "from": {"id": f"29:{uuid.uuid4().hex}", "name": name},
        "channelData": {"teamsChannelId": "19:abc@thread.skype"},
    }
    if aad_object_id is not None:
        activity["from"]["aadObjectId"] = aad_object_id
    if stamped:
        activity["timestamp"] = sent.isoformat(timespec="microseconds").replace("+00:00", "Z")
    return json.dumps(activity).encode()


@dataclass(frozen=True)
class Click:
    body: bytes
    response_path: str


def button_click(
    chatops: Chatops, *, user: str, action: str, request_id: str, message: RecordedCall
) -> Click:
    """What Slack posts when `user` clicks a button on the message the bot posted."""
    response_path = f"/response/{uuid.uuid4().hex}"
    ts = message.answer["ts"]
    payload = {
        "type": "block_actions",
        "user": {"id": user},
        "container": {"type": "message", "message_ts": ts, "channel_id": APPROVERS_CHANNEL},
        "channel": {"id": APPROVERS_CHANNEL},
        "message": {"ts": ts, "blocks": message.body["blocks"]},
        "response_url": chatops.recorder.base_url + response_path,
        "actions": [{"action_id": action, "value": request_id, "type": "button"}],
    }
    return Click(urlencode({"payload": json.dumps(payload)}).encode(), response_path)


async def activity_ids(clients: StackClients, stack: LapseStack, user: str) -> set[str]:
    listed = await clients.requests.ListActivity(
        request_service_pb2.ListActivityRequest(limit=500), metadata=bearer(stack.token(user))
    )
    return {view.request_id for view in listed.requests}


def dm(to: str, request_id: str, text_starts: str) -> Callable[[RecordedCall], bool]:
    """A Slack direct message (chat.postMessage to a user id) about one request."""
    return lambda call: (
        call.body.get("channel") == to
        and str(call.body.get("text", "")).startswith(text_starts)
        and request_id in json.dumps(call.body)
    )


def teams_notice(
    requester: str, request_id: str, title_starts: str
) -> Callable[[RecordedCall], bool]:
    return lambda call: (
        str(call.body.get("summary", "")).startswith(f"Lapse, for {requester}: {title_starts}")
        and request_id in json.dumps(call.body)
    )


def request_id_in(text: str) -> str:
    match = re.search(r"\breq-[0-9a-f-]{36}\b", text)
    assert match, text
    return match.group()


async def pending_for(stack: LapseStack, approver: str) -> list[str]:
    async with stack.aio_channel("approval") as channel:
        response = await approval_service_pb2_grpc.ApprovalServiceStub(
            channel
        ).ListPendingApprovals(
            approval_service_pb2.ListPendingApprovalsRequest(),
            metadata=bearer(stack.token(approver, groups=())),
        )
    return [p.request_id for p in response.approvals]


async def test_slack_request_approved_with_a_button_reaches_the_target(
    stack: LapseStack, chatops: Chatops, capsys: pytest.CaptureFixture[str]
) -> None:
    clients = StackClients(stack)
    login = stack.login_for("u03")
    try:
        body = slash_command(
            REQUESTER, f"request demo-pg/g-any read as {login} for 30s because chatops: INC-42"
        )
        status, reply = await chatops.post("/slack/commands", body, slack_headers(body))
        assert status == 200, reply
        assert reply["response_type"] == "ephemeral"
        request_id = request_id_in(reply["text"])
        assert "PENDING_APPROVAL" in reply["text"] and "flow-g-any" in reply["text"], reply
        view = await clients.get_request(request_id, stack.token("u03"))
        assert (view.requester, view.justification) == ("u03", "chatops: INC-42")
        assert view.duration_seconds == 30

        # The approvers' channel gets the request with Approve / Reject buttons.
        message = await chatops.recorder.wait_for(
            "/api/chat.postMessage", lambda c: request_id in json.dumps(c.body)
        )
        assert message.body["channel"] == APPROVERS_CHANNEL and message.answer["ok"]
        buttons = next(b for b in message.body["blocks"] if b["type"] == "actions")["elements"]
        assert [(b["action_id"], b["value"]) for b in buttons] == [
            ("lapse_approve", request_id),
            ("lapse_reject", request_id),
        ]
        await wait_for(
            lambda: pending_for(stack, "approver-a"),
            lambda ids: request_id in ids,
            what="approver-a to be asked",
        )

        # The requester is no approver of this flow: told so privately, nothing changes.
        click = button_click(
            chatops, user=REQUESTER, action="lapse_approve", request_id=request_id, message=message
        )
        status, _ = await chatops.post("/slack/interactions", click.body, slack_headers(click.body))
        assert status == 200
        refusal = await chatops.recorder.wait_for(click.response_path, lambda c: True)
        assert refusal.body["response_type"] == "ephemeral"
        assert not refusal.body["replace_original"]
        assert refusal.body["text"].startswith(f"Could not approve {request_id}: NOT_FOUND"), (
            refusal.body
        )
        assert not chatops.recorder.matching("/api/chat.update", lambda c: True)

        # approver-a clicks Approve.
        click = button_click(
            chatops, user=APPROVER, action="lapse_approve", request_id=request_id, message=message
        )
        status, _ = await chatops.post("/slack/interactions", click.body, slack_headers(click.body))
        assert status == 200
        update = await chatops.recorder.wait_for(
            "/api/chat.update", lambda c: c.body.get("ts") == message.answer["ts"]
        )
        assert update.body["channel"] == APPROVERS_CHANNEL
        shown = json.dumps(update.body["blocks"])
        assert f"<@{APPROVER}> (approver-a) approved: request is now *APPROVED*" in shown
        assert "lapse_approve" not in shown, "the buttons should be gone once decided"

        await wait_for(
            lambda: has_role(
                stack.infra.target_admin_dsn, login=login, role=stack.gated_role("g-any")
            ),
            bool,
            what="the access approved in Slack to reach the target",
        )
        view = await wait_for(
            lambda: clients.get_request(request_id, stack.token("u03")),
            lambda v: bool(v.grants) and v.grants[0].status == common_pb2.GRANT_STATUS_ACTIVE,
            what="the grant ACTIVE in the Activity view",
        )
        assert view.status == common_pb2.REQUEST_STATUS_APPROVED
        assert "approver-a" in view.decided_by or "approver-a" in view.decision_detail

        # The requester is told, by Slack DM to their user id and on the Teams webhook:
        # approved, then active (with how to extend it), then that it ends soon.
        grant_id = view.grants[0].grant_id
        recorder = chatops.recorder
        approved = await recorder.wait_for(
            "/api/chat.postMessage",
            dm(REQUESTER, request_id, f"Your request {request_id} was approved by approver-a"),
        )
        assert approved.answer["ok"]
        active = await recorder.wait_for(
            "/api/chat.postMessage",
            dm(REQUESTER, request_id, "Your access is active: demo-pg/g-any"),
        )
        shown = json.dumps(active.body["blocks"])
        assert f"lapse extend {request_id} --grant {grant_id}" in shown, shown
        for title in (f"Your request {request_id} was approved", "Your access is active"):
            await recorder.wait_for("/teams/webhook", teams_notice("u03", request_id, title))

        # A 30 s grant is reminded a quarter of its life (7.5 s) before it ends, still active.
        soon = await recorder.wait_for(
            "/api/chat.postMessage",
            dm(REQUESTER, request_id, "Your access ends in"),
        )
        assert await has_role(
            stack.infra.target_admin_dsn, login=login, role=stack.gated_role("g-any")
        ), "the reminder should come before the access is taken away"
        assert f"lapse extend {request_id} --grant {grant_id}" in json.dumps(soon.body["blocks"])
        await recorder.wait_for(
            "/teams/webhook", teams_notice("u03", request_id, "Your access ends in")
        )
        await wait_for(
            lambda: clients.get_request(request_id, stack.token("u03")),
            lambda v: v.grants[0].status == common_pb2.GRANT_STATUS_REVOKED,
            what="the grant REVOKED at its expiry",
        )
        told = [
            c.body["text"]
            for c in recorder.matching("/api/chat.postMessage", dm(REQUESTER, request_id, ""))
        ]
        assert len(told) == 3, told
        with capsys.disabled():
            print(f"\n[chatops] DMs to {REQUESTER} about {request_id}:")
            for text in told:
                print(f"  {text}")
    finally:
        await clients.close()


async def test_unsigned_forged_or_stale_slack_calls_file_nothing(
    stack: LapseStack, chatops: Chatops
) -> None:
    clients = StackClients(stack)
    login = stack.login_for("u03")
    try:
        before = await activity_ids(clients, stack, "u03")
        messages_before = len(chatops.recorder.matching("/api/chat.postMessage", lambda c: True))
        body = slash_command(
            REQUESTER, f"request demo-pg/g-any read as {login} for 5m because forged"
        )
        attempts = {
            "unsigned": {"Content-Type": "application/x-www-form-urlencoded"},
            "bad signature": slack_headers(body, secret="not-the-signing-secret"),
            "stale timestamp": slack_headers(body, age=6 * 60),
            "signed for another body": slack_headers(slash_command(REQUESTER, "help")),
        }
        for case, headers in attempts.items():
            status, answer = await chatops.post("/slack/commands", body, headers)
            assert status == 401, (case, answer)
            status, _ = await chatops.post("/slack/interactions", body, headers)
            assert status == 401, case

        # A correctly signed command from someone not in the directory files nothing either.
        stranger = slash_command(STRANGER, f"request demo-pg/g-any read as {login}")
        status, reply = await chatops.post("/slack/commands", stranger, slack_headers(stranger))
        assert status == 200, reply
        assert reply["text"].startswith(
            "your chat account is not linked to a Lapse identity; "
            f"ask an admin to add {STRANGER} to the directory"
        ), reply

        # Over the body cap: 413, unread.
        huge = slash_command(REQUESTER, "help") + b"&pad=" + b"x" * (64 * 1024)
        async with chatops.http.post(
            chatops.url + "/slack/commands", data=huge, headers=slack_headers(huge)
        ) as response:
            assert response.status == 413, await response.text()

        await asyncio.sleep(1)
        assert await activity_ids(clients, stack, "u03") == before
        assert (
            len(chatops.recorder.matching("/api/chat.postMessage", lambda c: True))
            == messages_before
        )
    finally:
        await clients.close()


async def test_teams_mention_files_a_request_and_notifies_approvers(
    stack: LapseStack, chatops: Chatops
) -> None:
    clients = StackClients(stack)
    login = stack.login_for("u02")
    request_id = ""
    try:
        before = await activity_ids(clients, stack, "u02")
        forged = teams_mention(TEAMS_REQUESTER, f"request demo-pg/g-any read as {login}")
        for headers in (
            {"Content-Type": "application/json"},
            teams_headers(forged, key=b"some other key"),
            {"Authorization": "HMAC " + base64.b64encode(b"x" * 32).decode()},
        ):
            status, _ = await chatops.post("/teams/messages", forged, headers)
            assert status == 401
        # A genuinely signed message replayed an hour later, or a year later without a date.
        replayed = teams_mention(
            TEAMS_REQUESTER, f"request demo-pg/g-any read as {login}", age=3600
        )
        status, answer = await chatops.post("/teams/messages", replayed, teams_headers(replayed))
        assert status == 401 and "possible replay" in answer["error"], answer
        undated = teams_mention(
            TEAMS_REQUESTER, f"request demo-pg/g-any read as {login}", stamped=False
        )
        status, answer = await chatops.post("/teams/messages", undated, teams_headers(undated))
        assert status == 400 and "activity without a timestamp" in answer["error"], answer
        # Someone with no directory entry whose display name is a directory subject (the old
        # display-name match made "u02" the Lapse user u02).
        impostor = teams_mention(
            "aad-not-listed", f"request demo-pg/g-any read as {login}", name="u02"
        )
        status, reply = await chatops.post("/teams/messages", impostor, teams_headers(impostor))
        assert status == 200 and "not linked to a Lapse identity" in reply["text"], reply
        assert "aad-not-listed" in reply["text"], reply
        assert await activity_ids(clients, stack, "u02") == before

        body = teams_mention(
            TEAMS_REQUESTER, f"request demo-pg/g-any read as {login} for 10m because from Teams"
        )
        status, reply = await chatops.post("/teams/messages", body, teams_headers(body))
        assert status == 200, reply
        assert reply["type"] == "message" and "PENDING_APPROVAL" in reply["text"], reply
        request_id = request_id_in(reply["text"])
        # The same activity again, within its five minutes: refused, nothing filed twice.
        status, answer = await chatops.post("/teams/messages", body, teams_headers(body))
        assert status == 401 and "already accepted" in answer["error"], answer
        assert await activity_ids(clients, stack, "u02") == before | {request_id}
        view = await clients.get_request(request_id, stack.token("u02"))
        assert (view.requester, view.justification, view.duration_seconds) == (
            "u02",
            "from Teams",
            600,
        )

        card = await chatops.recorder.wait_for(
            "/teams/webhook", lambda c: request_id in json.dumps(c.body)
        )
        assert f"{CONSOLE}/requests/{request_id}" in json.dumps(card.body)
        content = card.body["attachments"][0]
        assert content["contentType"] == "application/vnd.microsoft.card.adaptive"
        assert content["content"]["actions"][0]["url"] == f"{CONSOLE}/requests/{request_id}"
    finally:
        if request_id:
            # Leave nothing pending for other tests' approvers.
            await clients.requests.CancelRequest(
                request_service_pb2.CancelRequestRequest(
                    request_id=request_id, reason="chatops test done"
                ),
                metadata=bearer(stack.token("u02")),
            )
        await clients.close()


async def test_slack_command_replayed_byte_for_byte_files_once(
    stack: LapseStack, chatops: Chatops
) -> None:
    clients = StackClients(stack)
    login = stack.login_for("u03")
    request_id = ""
    try:
        before = await activity_ids(clients, stack, "u03")
        body = slash_command(
            REQUESTER, f"request demo-pg/g-any read as {login} for 2m because replay test"
        )
        headers = slack_headers(body)
        status, reply = await chatops.post("/slack/commands", body, headers)
        assert status == 200, reply
        request_id = request_id_in(reply["text"])
        for path in ("/slack/commands", "/slack/interactions"):
            status, answer = await chatops.post(path, body, headers)
            assert status == 401 and "already accepted" in answer["error"], (path, answer)
        await asyncio.sleep(1)
        assert await activity_ids(clients, stack, "u03") == before | {request_id}
        # What the services saw: u03, in engineering from their own directory, although the
        # token chatops sent named the subject only.
        view = await clients.get_request(request_id, stack.token("u03"))
        assert (view.requester, view.flow) == ("u03", "flow-g-any")
    finally:
        if request_id:
            await clients.requests.CancelRequest(
                request_service_pb2.CancelRequestRequest(
                    request_id=request_id, reason="chatops replay test done"
                ),
                metadata=bearer(stack.token("u03")),
            )
        await clients.close()


async def test_services_take_no_roles_from_a_chatops_token(stack: LapseStack) -> None:
    """Whatever a token signed with chatops' key claims, the services give it no role: the
    check the whole subject-only design rests on, against the running services."""
    assert stack.environment()["LAPSE_AUTH_SUBJECT_ONLY_ISSUERS"].startswith(
        f"{CHATOPS_ISSUER}="
    ), "the stack's services must trust chatops' issuer for the subject only"
    key, _ = chatops_token_key(stack)
    forged_admin = mint_token(
        private_key_pem=key.read_bytes(),
        subject="u03",
        groups=["engineering"],
        roles=["admin", "sre", "auditor"],
        ttl_seconds=60,
        issuer=CHATOPS_ISSUER,
    )
    clients = StackClients(stack)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await clients.requests.ListActivity(
                request_service_pb2.ListActivityRequest(all_users=True, limit=1),
                metadata=bearer(forged_admin),
            )
        assert refused.value.code() in {
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.UNAUTHENTICATED,
        }, refused.value
    finally:
        await clients.close()
