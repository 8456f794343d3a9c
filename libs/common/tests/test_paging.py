"""Page tokens: every item exactly once across pages, and tokens that are not ours refused."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from lapse_common.paging import (
    MAX_PAGE_SIZE,
    page_of,
    read_page_request,
    time_key,
)
from lapse_common.refusals import Refusal, Refused

ITEMS = [f"item-{n:03d}" for n in range(25)]


def _pages(query: tuple[str, ...], size: int) -> list[list[str]]:
    pages: list[list[str]] = []
    token = ""
    while True:
        page = read_page_request(page_size=size, page_token=token, query=query)
        served, token = page_of(ITEMS, page=page, key=lambda item: (item,))
        pages.append(served)
        if not token:
            return pages


@pytest.mark.parametrize("size", [1, 7, 24, 25, 26, 1000])
def test_pages_cover_every_item_exactly_once_in_order(size: int) -> None:
    pages = _pages(("alice",), size)
    assert [item for page in pages for item in page] == ITEMS
    assert all(len(page) == size for page in pages[:-1])
    assert len(pages) == -(-len(ITEMS) // size)


def test_a_zero_page_size_means_the_default() -> None:
    assert read_page_request(page_size=0, page_token="", query=()).size == 100
    assert read_page_request(page_size=0, page_token="", query=(), default_size=20).size == 20


@pytest.mark.parametrize("size", [-1, MAX_PAGE_SIZE + 1, 2**31 - 1])
def test_page_sizes_out_of_range_are_refused(size: int) -> None:
    with pytest.raises(
        Refused, match=f"page_size is {size}; it must be between 0 and 1000"
    ) as refused:
        read_page_request(page_size=size, page_token="", query=())
    assert refused.value.kind is Refusal.INVALID


def test_a_token_works_only_for_the_query_that_gave_it() -> None:
    first = read_page_request(page_size=5, page_token="", query=("alice", False))
    _, token = page_of(ITEMS, page=first, key=lambda item: (item,))
    assert read_page_request(page_size=5, page_token=token, query=("alice", False)).after
    with pytest.raises(Refused, match="belongs to another query"):
        read_page_request(page_size=5, page_token=token, query=("bob", False))
    with pytest.raises(Refused, match="belongs to another query"):
        read_page_request(page_size=5, page_token=token, query=("alice", True))


@pytest.mark.parametrize(
    "token",
    [
        "not base64 at all!",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        base64.urlsafe_b64encode(json.dumps({"v": 2, "q": "x", "after": []}).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps({"v": 1, "q": "x", "after": [1]}).encode()).decode(),
        "\x00" * 10,
    ],
)
def test_forged_or_damaged_tokens_are_refused_with_a_clear_message(token: str) -> None:
    with pytest.raises(Refused, match="not one this list gave out") as refused:
        read_page_request(page_size=5, page_token=token, query=("alice",))
    assert refused.value.kind is Refusal.INVALID


def test_a_time_cursor_round_trips_and_a_bad_one_is_refused() -> None:
    moment = datetime(2026, 12, 3, 6, 0, 0, 123456, tzinfo=UTC)
    page = read_page_request(page_size=2, page_token="", query=("q",))
    token = page.next_token(time_key(moment, "req-1"))
    assert read_page_request(page_size=2, page_token=token, query=("q",)).after_time() == (
        moment,
        "req-1",
    )
    bad = page.next_token(("yesterday", "req-1"))
    with pytest.raises(Refused, match="not one this list gave out"):
        read_page_request(page_size=2, page_token=bad, query=("q",)).after_time()
