"""Which handler a consumed payload goes to, declared once where the subscription is made.

`on(events_pb2.RevokeRequested, handler=handlers.on_revoke_requested)` pairs a payload type
with a handler of `DecodedEvent[events_pb2.RevokeRequested]`, and the type checker holds the
two to each other, so the handler reads `event.payload` as that type without checking it
again. `on(events_pb2.SignedAgentReport, events_pb2.AgentHeartbeat, handler=...)` sends a
signed report and its legacy bare type to one handler (which refuses the bare one by name);
`on(Message, handler=...)` takes every payload type (audit records everything).

A payload type no route of a subscription takes is acknowledged and skipped: topics carry
several types, and each consumer acts on its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Protocol, TypeVar, overload

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_common.messaging.codec import DecodedEvent

# Contravariant: a handler of any Message serves for a RequestDecided too.
Handled_contra = TypeVar("Handled_contra", bound=Message, contravariant=True)
P = TypeVar("P", bound=Message)
Also = TypeVar("Also", bound=Message)


class EventHandler(Protocol[Handled_contra]):
    """Runs in the consumer's transaction, which also records the event in the inbox."""

    def __call__(
        self, *, session: AsyncSession, event: DecodedEvent[Handled_contra]
    ) -> Awaitable[None]: ...


@dataclass(frozen=True)
class Route:
    payload_types: tuple[type[Message], ...]
    # Checked against payload_types by on(); erased here so routes of several types can be
    # listed together.
    handler: EventHandler[Any]


@overload
def on(payload_type: type[P], /, *, handler: EventHandler[P]) -> Route: ...


@overload
def on(payload_type: type[P], also: type[Also], /, *, handler: EventHandler[P | Also]) -> Route: ...


def on(*payload_types: type[Message], handler: EventHandler[Any]) -> Route:
    return Route(payload_types=payload_types, handler=handler)


def check_routes(routes: Sequence[Route], *, consumer: str) -> None:
    """Refuses routes that would hand one payload type to two handlers: which one ran
    would depend on the order they were listed in."""
    if not routes:
        raise ValueError(f"{consumer}: a subscription needs at least one route")
    for first, second in combinations(routes, 2):
        for one in first.payload_types:
            for other in second.payload_types:
                if issubclass(one, other) or issubclass(other, one):
                    raise ValueError(
                        f"{consumer}: {_name(one)} and {_name(other)} are routed to two "
                        "handlers; route each payload type once"
                    )


def handler_for(routes: Sequence[Route], payload: Message) -> EventHandler[Any] | None:
    """The handler the payload is routed to, or None when the subscription skips it."""
    for route in routes:
        if isinstance(payload, route.payload_types):
            return route.handler
    return None


def _name(payload_type: type[Message]) -> str:
    return "every payload" if payload_type is Message else payload_type.DESCRIPTOR.full_name
