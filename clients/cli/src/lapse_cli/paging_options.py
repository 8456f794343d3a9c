"""--limit and --page-token for every listing: the CLI follows the services' page tokens
until it has shown --limit items, and says how to go on when there are more."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, TypeVar

import typer

# What one call may ask for; the services refuse more.
MAX_PAGE_SIZE = 1000

Item = TypeVar("Item")

LimitOption = Annotated[
    int, typer.Option("--limit", min=1, max=100_000, help="show at most this many")
]
PageTokenOption = Annotated[
    str,
    typer.Option("--page-token", help="go on where an earlier listing stopped (it prints one)"),
]


def collect_pages(
    fetch: Callable[[str, int], tuple[Sequence[Item], str]], *, limit: int, page_token: str
) -> tuple[list[Item], str]:
    """Pages from `fetch(page_token, page_size)` until `limit` items or the last page; the
    token to go on from ("" when nothing is left)."""
    items: list[Item] = []
    token = page_token
    while True:
        page, token = fetch(token, min(limit - len(items), MAX_PAGE_SIZE))
        items.extend(page)
        if not token or len(items) >= limit:
            return items, token


def tell_how_to_go_on(next_token: str) -> None:
    # On stderr, so that --json output stays one JSON document.
    if next_token:
        typer.echo(f"(more: run again with --page-token {next_token})", err=True)
