"""A local HTTP server that stands in for the Slack Web API, Slack interaction response
URLs and a Teams incoming webhook: Slack and Teams are external SaaS, so this is the one
thing the chat tests fake. It records every call and answers as the real ones do."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.integration.waiting import wait_for
from tests.stack import free_port


@dataclass
class RecordedCall:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    # What the stand-in answered (for the Web API: includes the message `ts`).
    answer: dict[str, Any] = field(default_factory=dict)


class ChatRecorder:
    def __init__(self, *, bot_token: str) -> None:
        self.bot_token = bot_token
        self.port = free_port()
        self.calls: list[RecordedCall] = []
        self._runner: web.AppRunner | None = None
        self._messages = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self._slack_api)
        app.router.add_post("/response/{id}", self._plain)
        app.router.add_post("/teams/webhook", self._plain)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _record(self, request: web.Request) -> RecordedCall:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            body = {"_raw": raw.decode(errors="replace")}
        call = RecordedCall(path=request.path, headers=dict(request.headers), body=body)
        self.calls.append(call)
        return call

    async def _slack_api(self, request: web.Request) -> web.Response:
        call = await self._record(request)
        method = request.match_info["method"]
        if request.headers.get("Authorization") != f"Bearer {self.bot_token}":
            call.answer = {"ok": False, "error": "invalid_auth"}
        elif method == "chat.postMessage":
            self._messages += 1
            ts = f"1700000000.{self._messages:06d}"
            call.answer = {"ok": True, "channel": call.body.get("channel"), "ts": ts}
        elif method == "chat.update":
            call.answer = {
                "ok": True,
                "channel": call.body.get("channel"),
                "ts": call.body.get("ts"),
            }
        else:
            call.answer = {"ok": False, "error": "unknown_method"}
        return web.json_response(call.answer)

    async def _plain(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(text="ok")

    def matching(self, path: str, accept: Callable[[RecordedCall], bool]) -> list[RecordedCall]:
        return [c for c in self.calls if c.path == path and accept(c)]

    async def wait_for(self, path: str, accept: Callable[[RecordedCall], bool]) -> RecordedCall:
        """The first call to `path` that `accept` likes; waits while calls keep coming in."""

        async def matches() -> list[RecordedCall]:
            return self.matching(path, accept)

        found = await wait_for(
            matches,
            bool,
            what=f"a call to {path} as expected",
            progress=lambda _: len(self.calls),
            describe=lambda _: (
                "saw:\n" + "\n".join(f"{c.path} {json.dumps(c.body)[:300]}" for c in self.calls)
            ),
        )
        return found[0]
