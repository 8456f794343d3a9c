"""Apply a new set of flow files: all valid or nothing changes; then bring what exists in
line with them."""

from __future__ import annotations

import json
from pathlib import Path

from lapse_common.clock import Clock
from lapse_common.refusals import Refusal, Refused
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_approval.flows import Catalog, FlowFileError, parse_catalog
from lapse_approval.models import FlowDocument
from lapse_approval.operations.review_existing_access import ReviewResult, review_existing_access


def validate_flows(files: list[tuple[str, str]]) -> Catalog:
    """Refused (INVALID) with every problem, one a line, each naming file, flow and field."""
    try:
        return parse_catalog([(Path(name), content) for name, content in files])
    except FlowFileError as error:
        raise Refused(Refusal.INVALID, "\n".join(error.problems)) from error


async def apply_flows(
    *,
    session: AsyncSession,
    files: list[tuple[str, str]],
    applied_by: str,
    topics: Topics,
    clock: Clock,
) -> tuple[Catalog, ReviewResult]:
    catalog = validate_flows(files)
    session.add(
        FlowDocument(
            applied_at=clock.now(),
            applied_by=applied_by,
            files_json=json.dumps([{"name": n, "content": c} for n, c in files]),
        )
    )
    review = await review_existing_access(
        session=session, catalog=catalog, applied_by=applied_by, topics=topics, clock=clock
    )
    return catalog, review
