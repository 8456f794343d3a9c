"""Calls to Slack: the Web API (chat.postMessage, chat.update) and interaction response
URLs (for answers only the clicking person sees)."""

from __future__ import annotations

from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from lapse_chatops.delivery import ChatDeliveryFailed

_TIMEOUT_SECONDS = 10


class SlackWebApi:
    def __init__(self, *, bot_token: str, base_url: str, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._client = AsyncWebClient(
            token=bot_token, base_url=base_url, session=session, timeout=_TIMEOUT_SECONDS
        )

    async def post_message(self, *, channel: str, text: str, blocks: list[dict[str, Any]]) -> str:
        """Posts and returns the message's ts."""
        try:
            response = await self._client.chat_postMessage(
                channel=channel, text=text, blocks=blocks
            )
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as error:
            raise ChatDeliveryFailed(f"chat.postMessage to {channel} failed: {error}") from error
        return str(response.get("ts", ""))

    async def update_message(
        self, *, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]
    ) -> None:
        try:
            await self._client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as error:
            raise ChatDeliveryFailed(f"chat.update of {channel}/{ts} failed: {error}") from error

    async def respond_privately(self, *, response_url: str, text: str) -> None:
        """An ephemeral answer to the person who clicked, leaving the message as it is."""
        webhook = AsyncWebhookClient(
            url=response_url, session=self._session, timeout=_TIMEOUT_SECONDS
        )
        try:
            response = await webhook.send(
                text=text, response_type="ephemeral", replace_original=False
            )
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ChatDeliveryFailed(f"response_url answer failed: {error}") from error
        if response.status_code >= 300:
            raise ChatDeliveryFailed(
                f"response_url answered {response.status_code}: {response.body[:200]}"
            )
