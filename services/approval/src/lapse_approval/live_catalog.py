"""The flows in force: the newest applied flow document, kept in memory for every check."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lapse_common.clock import Clock
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lapse_approval.flows import Catalog, parse_catalog
from lapse_approval.models import FlowDocument

logger = logging.getLogger(__name__)


class LiveCatalog:
    def __init__(self, current: Catalog) -> None:
        self.current = current

    @classmethod
    async def load(
        cls, *, sessions: async_sessionmaker[AsyncSession], bootstrap: list[Path], clock: Clock
    ) -> LiveCatalog:
        """The newest applied document; on a fresh database, the bootstrap files (stored as
        the first document). After that, flows change only through ApplyFlows."""
        async with sessions() as session, session.begin():
            newest = await session.scalar(
                select(FlowDocument).order_by(FlowDocument.id.desc()).limit(1)
            )
            if newest is not None:
                files = [(Path(f["name"]), f["content"]) for f in json.loads(newest.files_json)]
                logger.info(
                    "flows in force: document %d applied by %s at %s (flow files on disk are "
                    "only read on a fresh database; change flows with `lapse flows apply`)",
                    newest.id,
                    newest.applied_by,
                    newest.applied_at.isoformat(),
                )
                return cls(parse_catalog(files))
            texts = [(path, path.read_text()) for path in bootstrap]
            catalog = parse_catalog(texts)
            session.add(
                FlowDocument(
                    applied_at=clock.now(),
                    applied_by="bootstrap",
                    files_json=json.dumps([{"name": str(p), "content": t} for p, t in texts]),
                )
            )
            return cls(catalog)
