"""Posting to a Teams incoming webhook (or a Workflows webhook trigger)."""

from __future__ import annotations

from typing import Any

import aiohttp

from lapse_chatops.delivery import ChatDeliveryFailed

_TIMEOUT = aiohttp.ClientTimeout(total=10)


class TeamsWebhook:
    def __init__(self, *, url: str, session: aiohttp.ClientSession) -> None:
        self._url = url
        self._session = session

    async def post(self, message: dict[str, Any]) -> None:
        try:
            async with self._session.post(self._url, json=message, timeout=_TIMEOUT) as response:
                if response.status >= 300:
                    body = (await response.text())[:200]
                    raise ChatDeliveryFailed(
                        f"Teams webhook answered HTTP {response.status}: {body}"
                    )
        except (aiohttp.ClientError, TimeoutError) as error:
            # The URL holds a secret: never let it into a log line.
            problem = str(error).replace(self._url, "<webhook url>")
            raise ChatDeliveryFailed(f"Teams webhook post failed: {problem}") from error
