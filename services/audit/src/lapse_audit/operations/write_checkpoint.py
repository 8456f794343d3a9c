"""Sign the chain head as a checkpoint and store it, when the head moved and the chain
since the previous checkpoint verifies."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lapse_common.audit_checkpoints import Checkpoint, sign_checkpoint
from lapse_common.clock import Clock
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lapse_audit.checkpoint_store import CheckpointStore, file_name
from lapse_audit.operations.verify_chain import verify_chain

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointOutcome:
    # The checkpoint written, else the newest one stored (None before the first event).
    checkpoint: Checkpoint | None
    written: bool
    # Why nothing was signed although the head moved; empty otherwise.
    refusal: str = ""

    @property
    def file_name(self) -> str:
        return file_name(self.checkpoint.sequence) if self.checkpoint else ""


class CheckpointWriter:
    """One writer per process; its lock keeps the timer and CreateCheckpoint calls from
    signing the same head twice."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        store: CheckpointStore,
        key: Ed25519PrivateKey,
        log: str,
        clock: Clock,
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._key = key
        self._log = log
        self._clock = clock
        self._lock = asyncio.Lock()

    async def write(self) -> CheckpointOutcome:
        async with self._lock:
            latest = self._store.latest()
            async with self._sessions() as session:
                # Never sign a head that does not extend the last signed one: signing a
                # rewritten chain would vouch for the rewrite.
                verification = await verify_chain(session, since=latest)
            if not verification.ok:
                logger.error(
                    "audit chain fails verification, not signing a checkpoint: %s",
                    verification.detail,
                )
                return CheckpointOutcome(
                    checkpoint=latest, written=False, refusal=verification.detail
                )
            signed_up_to = latest.sequence if latest else 0
            if verification.head_sequence == signed_up_to:
                return CheckpointOutcome(checkpoint=latest, written=False)
            checkpoint = sign_checkpoint(
                self._key,
                log=self._log,
                sequence=verification.head_sequence,
                head_hash=verification.head_hash,
                signed_at=self._clock.now(),
            )
            path = self._store.write(checkpoint)
            if path is None:
                # Another writer (a replica) stored this head first; its file stands.
                return CheckpointOutcome(checkpoint=self._store.latest(), written=False)
            logger.info(
                "audit checkpoint %s: sequence %d, head %s",
                path,
                checkpoint.sequence,
                checkpoint.head_hash,
            )
            return CheckpointOutcome(checkpoint=checkpoint, written=True)

    async def run_every(self, interval_seconds: float) -> None:
        while True:
            try:
                await self.write()
            except Exception:
                # A full disk or a database hiccup must not end checkpointing for good.
                logger.exception("writing an audit checkpoint failed; retrying next interval")
            await asyncio.sleep(interval_seconds)
