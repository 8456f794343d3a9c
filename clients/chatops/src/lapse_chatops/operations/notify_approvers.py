"""A filed request waits for people: tell the approvers in Slack and in Teams."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from lapse_common.pb.lapse.v1 import request_service_pb2

from lapse_chatops.delivery import ChatDeliveryFailed
from lapse_chatops.slack_blocks import approval_request_blocks, approval_request_text
from lapse_chatops.teams_cards import approval_card

logger = logging.getLogger(__name__)


class SlackPoster(Protocol):
    async def post_message(
        self, *, channel: str, text: str, blocks: list[dict[str, Any]]
    ) -> str: ...


class TeamsPoster(Protocol):
    async def post(self, message: dict[str, Any]) -> None: ...


async def notify_approvers(
    *,
    view: request_service_pb2.AccessRequestView,
    approval_mode: str | None,
    slack: SlackPoster | None,
    slack_channel: str,
    teams: TeamsPoster | None,
    console_url: str,
) -> list[str]:
    """Each configured channel is tried even if another fails; returns the failures."""
    failures: list[str] = []
    if slack is not None and slack_channel:
        try:
            await slack.post_message(
                channel=slack_channel,
                text=approval_request_text(view),
                blocks=approval_request_blocks(view, approval_mode=approval_mode),
            )
        except ChatDeliveryFailed as error:
            failures.append(str(error))
    if teams is not None:
        try:
            await teams.post(
                approval_card(view, console_url=console_url, approval_mode=approval_mode)
            )
        except ChatDeliveryFailed as error:
            failures.append(str(error))
    for failure in failures:
        logger.error("approvers of %s were not notified: %s", view.request_id, failure)
    return failures
