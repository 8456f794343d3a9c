"""Page tokens for every list API: keyset paging, so a page costs the same however deep it is
and rows added meanwhile neither repeat nor vanish from the pages still to come.

A token carries the sort key of the last item served and a digest of the query it belongs
to (filters and caller). It positions a cursor only: every page is still filtered by what
the caller may see, so a forged token can reorder nothing and reveal nothing; it is checked
all the same, so a mistake gets a clear INVALID_ARGUMENT instead of a wrong page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import grpc

from lapse_common.refusals import Refusal, Refused
from lapse_common.unit_of_work import abort_refused

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_VERSION = 1

Item = TypeVar("Item")


@dataclass(frozen=True)
class PageRequest:
    size: int
    # The sort key of the last item of the previous page; None: the first page.
    after: tuple[str, ...] | None
    query: str

    def next_token(self, last_key: Sequence[str]) -> str:
        body = json.dumps({"v": _VERSION, "q": self.query, "after": list(last_key)})
        return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")

    def after_time(self) -> tuple[datetime, str] | None:
        """The cursor of a list sorted by (time, id)."""
        if self.after is None:
            return None
        if len(self.after) != 2:
            raise Refused(Refusal.INVALID, _NOT_OURS)
        try:
            return datetime.fromisoformat(self.after[0]), self.after[1]
        except ValueError as error:
            raise Refused(Refusal.INVALID, _NOT_OURS) from error


_NOT_OURS = "page_token is not one this list gave out; start again without it"


def read_page_request(
    *,
    page_size: int,
    page_token: str,
    query: Sequence[object],
    default_size: int = DEFAULT_PAGE_SIZE,
) -> PageRequest:
    """The page asked for. `query` is everything the result depends on (caller, filters):
    a token is valid only for the query that produced it. A page_size or page_token the
    list cannot serve is Refused (INVALID), the message saying which and why."""
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise Refused(
            Refusal.INVALID, f"page_size is {page_size}; it must be between 0 and {MAX_PAGE_SIZE}"
        )
    digest = hashlib.sha256(json.dumps([str(q) for q in query]).encode()).hexdigest()[:24]
    size = page_size or min(default_size, MAX_PAGE_SIZE)
    if not page_token:
        return PageRequest(size=size, after=None, query=digest)
    try:
        padded = page_token + "=" * (-len(page_token) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as error:
        raise Refused(Refusal.INVALID, _NOT_OURS) from error
    if (
        not isinstance(body, dict)
        or body.get("v") != _VERSION
        or not isinstance(body.get("after"), list)
        or not all(isinstance(part, str) for part in body["after"])
    ):
        raise Refused(Refusal.INVALID, _NOT_OURS)
    if body.get("q") != digest:
        raise Refused(
            Refusal.INVALID,
            "page_token belongs to another query (different filters or caller); "
            "start again without it",
        )
    return PageRequest(size=size, after=tuple(body["after"]), query=digest)


async def page_request_or_abort(
    context: grpc.aio.ServicerContext,
    *,
    page_size: int,
    page_token: str,
    query: Sequence[object],
    default_size: int = DEFAULT_PAGE_SIZE,
) -> PageRequest:
    """read_page_request for a gRPC handler: a refusal ends the call with INVALID_ARGUMENT."""
    try:
        return read_page_request(
            page_size=page_size, page_token=page_token, query=query, default_size=default_size
        )
    except Refused as refusal:
        await abort_refused(context, refusal)


def page_of(
    items: Sequence[Item], *, page: PageRequest, key: Callable[[Item], tuple[str, ...]]
) -> tuple[list[Item], str]:
    """One page of a list already sorted by `key` (small lists held in memory), and the
    token for the next page ("" on the last)."""
    start = 0
    if page.after is not None:
        start = next((i for i, item in enumerate(items) if key(item) > page.after), len(items))
    served = list(items[start : start + page.size])
    more = start + page.size < len(items)
    return served, page.next_token(key(served[-1])) if more and served else ""


def time_key(moment: datetime, identifier: str) -> tuple[str, str]:
    return moment.isoformat(), identifier
