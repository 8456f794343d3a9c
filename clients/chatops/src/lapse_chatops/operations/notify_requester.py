"""Something happened to a person's request or access: tell them, by Slack DM and on the
Teams webhook, whichever of the two they can be reached on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, timedelta
from typing import Protocol

from google.protobuf.message import Message
from lapse_common.clock import Clock
from lapse_common.messaging.codec import DecodedEvent
from lapse_common.pb.lapse.v1 import events_pb2

from lapse_chatops.delivery import ChatDeliveryFailed
from lapse_chatops.directory import Directory
from lapse_chatops.operations.notify_approvers import SlackPoster, TeamsPoster
from lapse_chatops.requester_notices import (
    Notice,
    decision_notice,
    expiring_soon_notice,
    extension_approved_notice,
    extension_refused_notice,
    grant_notice,
    slack_blocks,
    teams_message,
)

logger = logging.getLogger(__name__)

_CARRY_REQUESTER = (
    events_pb2.RequestDecided,
    events_pb2.GrantStatusChanged,
    events_pb2.GrantExpiringSoon,
    events_pb2.ExtensionApproved,
    events_pb2.ExtensionRefused,
)


class DirectorySource(Protocol):
    @property
    def current(self) -> Directory: ...


class RequesterNotifier:
    def __init__(
        self,
        *,
        directory: DirectorySource,
        slack: SlackPoster | None,
        teams: TeamsPoster | None,
        clock: Clock,
        attempts: int,
        retry_seconds: float,
        max_age: timedelta,
    ) -> None:
        self._directory = directory
        self._slack = slack
        self._teams = teams
        self._clock = clock
        self._attempts = attempts
        self._retry_seconds = retry_seconds
        self._max_age = max_age

    async def notify(self, event: DecodedEvent[Message]) -> bool:
        """True when at least one message reached the requester. Never raises for a failed
        delivery: the caller's partition must keep moving."""
        payload = event.payload
        requester = self._requester_of(payload)
        notice = self._notice_for(payload)
        if notice is None:
            return False
        age = self._clock.now() - event.envelope.occurred_at.ToDatetime(tzinfo=UTC)
        if age > self._max_age:
            logger.info("%s %s is %s old: not announced", event.type, event.event_id, age)
            return False
        if not requester:
            logger.info("%s %s names no requester: not announced", event.type, event.event_id)
            return False
        return await self._deliver(requester, notice)

    def _requester_of(self, payload: Message) -> str:
        return payload.requester if isinstance(payload, _CARRY_REQUESTER) else ""

    def _notice_for(self, payload: Message) -> Notice | None:
        if isinstance(payload, events_pb2.RequestDecided):
            return decision_notice(payload)
        if isinstance(payload, events_pb2.GrantStatusChanged):
            return grant_notice(payload)
        if isinstance(payload, events_pb2.GrantExpiringSoon):
            return expiring_soon_notice(payload, now=self._clock.now())
        if isinstance(payload, events_pb2.ExtensionApproved):
            return extension_approved_notice(payload)
        if isinstance(payload, events_pb2.ExtensionRefused):
            return extension_refused_notice(payload)
        return None

    async def _deliver(self, requester: str, notice: Notice) -> bool:
        directory = self._directory.current
        sends: list[Awaitable[bool]] = []
        slack_user = directory.slack_user_of(requester)
        if self._slack is not None and slack_user:
            slack = self._slack

            async def dm() -> None:
                await slack.post_message(
                    channel=slack_user, text=notice.title, blocks=slack_blocks(notice)
                )

            sends.append(self._with_retries(f"Slack DM to {requester} ({slack_user})", dm))
        if self._teams is not None and directory.teams_user_of(requester):
            teams = self._teams
            message = teams_message(notice, requester=requester)

            async def post() -> None:
                await teams.post(message)

            sends.append(self._with_retries(f"Teams message for {requester}", post))
        if not sends:
            logger.debug("%s has no Slack or Teams identity here: %r not sent", requester, notice)
            return False
        # Each channel retries on its own, so a slow one does not delay the other.
        delivered = await asyncio.gather(*sends)
        if any(delivered):
            logger.info("told %s: %s", requester, notice.title)
        return any(delivered)

    async def _with_retries(self, what: str, send: Callable[[], Awaitable[None]]) -> bool:
        for attempt in range(1, self._attempts + 1):
            try:
                await send()
            except ChatDeliveryFailed as error:
                if attempt == self._attempts:
                    logger.error("%s failed %d time(s), dropped: %s", what, attempt, error)
                    return False
                pause = self._retry_seconds * 2 ** (attempt - 1)
                logger.warning("%s failed, retrying in %.1fs: %s", what, pause, error)
                await asyncio.sleep(pause)
            else:
                return True
        return False
