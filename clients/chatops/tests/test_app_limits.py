"""The application as `lapse-chatops` builds it: bodies over the cap are answered 413 before
anything is read into a payload, on every route."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from lapse_chatops.app import build_app
from lapse_chatops.background import BackgroundWork
from lapse_chatops.directory import DirectoryFile, Person
from lapse_chatops.grammar import RequestCommand
from lapse_chatops.payload_bounds import MAX_BODY_BYTES
from lapse_chatops.settings import ChatopsSettings
from lapse_common.pb.lapse.v1 import request_service_pb2

from clients.chatops.tests.signed_calls import command, slack_headers, teams_headers


class NoLapse:
    def __init__(self) -> None:
        self.calls = 0

    async def submit(
        self, person: Person, command: RequestCommand
    ) -> request_service_pb2.AccessRequestView:
        self.calls += 1
        return request_service_pb2.AccessRequestView(request_id="req-1")

    async def approval_mode(self, person: Person, flow: str) -> str | None:
        self.calls += 1
        return "auto"

    async def decide(self, person: Person, *, request_id: str, approve: bool, reason: str) -> str:
        self.calls += 1
        return "APPROVED"


@pytest.fixture
async def served(
    tmp_path: Path,
) -> AsyncIterator[tuple[TestClient[web.Request, web.Application], NoLapse]]:
    directory = tmp_path / "directory.yaml"
    directory.write_text("slack: {U1: {subject: alice}}\n")
    settings = ChatopsSettings(
        slack_signing_secret="slack-signing-secret",
        teams_hmac_secret="dGVhbXMta2V5LTAxMjM0NTY3ODk=",
        directory_file=directory,
    )
    lapse = NoLapse()
    async with aiohttp.ClientSession() as session:
        app = build_app(
            settings=settings,
            directory=DirectoryFile(directory),
            lapse=lapse,
            session=session,
            background=BackgroundWork(),
        )
        client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
        await client.start_server()
        yield client, lapse
        await client.close()


@pytest.mark.parametrize("path", ["/slack/commands", "/slack/interactions", "/teams/messages"])
async def test_oversized_body_gets_413_and_nothing_is_done(
    served: tuple[TestClient[web.Request, web.Application], NoLapse], path: str
) -> None:
    client, lapse = served
    body = command("U1", "help") + b"&padding=" + b"x" * MAX_BODY_BYTES
    headers = teams_headers(body) if path.startswith("/teams") else slack_headers(body)
    response = await client.post(path, data=body, headers=headers)
    assert response.status == 413
    assert lapse.calls == 0


async def test_a_body_under_the_cap_is_served(
    served: tuple[TestClient[web.Request, web.Application], NoLapse],
) -> None:
    client, _ = served
    body = command("U1", "help")
    response = await client.post("/slack/commands", data=body, headers=slack_headers(body))
    assert response.status == 200
    assert "usage: request" in (await response.json())["text"]
