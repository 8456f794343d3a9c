"""The checkpoint directory: one file per signed chain head, written once, never replaced.

Files are `checkpoint-<sequence, 20 digits>.json`, so their names sort by sequence. Each
is written to a temporary name, flushed to disk and then hard-linked to its final name:
unlike a rename, a link never replaces an existing file, so a checkpoint once written
stays as it is, whoever else (another replica, a restarted process) writes the same one.
Checkpoints are public (they vouch for the log, they reveal nothing of it): mode 0644.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from lapse_common.audit_checkpoints import (
    MAX_CHECKPOINT_BYTES,
    Checkpoint,
    CheckpointInvalid,
    key_id_of,
    parse_checkpoint,
    verify_checkpoint,
)

PUBLIC_MODE = 0o644
_NAME = re.compile(r"^checkpoint-(\d{20})\.json$")
# VerifyChain compares the chain with at most this many of the newest checkpoints; the
# newest alone already covers everything before it.
MAX_CHECKPOINTS_COMPARED = 1000

logger = logging.getLogger(__name__)


def file_name(sequence: int) -> str:
    return f"checkpoint-{sequence:020d}.json"


class CheckpointStore:
    def __init__(self, directory: Path, *, public_key: Ed25519PublicKey, log: str) -> None:
        self.directory = directory
        self._public_key = public_key
        self._log = log

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._public_key

    def prepare(self) -> Path:
        """Create the directory and put the public key next to the checkpoints (for
        convenience: an outside verifier should pin its own copy)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        pem = self._public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        path = self.directory / f"checkpoint-key-{key_id_of(self._public_key)}.pub"
        if not path.exists():
            self._write_once(path, pem)
        return path

    def write(self, checkpoint: Checkpoint) -> Path | None:
        """The new file, or None when a checkpoint of that sequence exists already."""
        path = self.directory / file_name(checkpoint.sequence)
        if self._write_once(path, checkpoint.to_json().encode("ascii")):
            return path
        return None

    def latest(self) -> Checkpoint | None:
        found = self.newest(1)
        return found[0] if found else None

    def newest(self, limit: int = MAX_CHECKPOINTS_COMPARED) -> list[Checkpoint]:
        """Up to `limit` of the newest checkpoints signed by our key, oldest first. A file
        that is not one (planted, truncated, another key) is skipped with a warning."""
        if not self.directory.is_dir():
            return []
        names = sorted(
            (entry.name for entry in os.scandir(self.directory) if _NAME.match(entry.name)),
            reverse=True,
        )
        found: list[Checkpoint] = []
        for name in names:
            if len(found) >= limit:
                break
            checkpoint = self._read(self.directory / name)
            if checkpoint is not None:
                found.append(checkpoint)
        return found[::-1]

    def _read(self, path: Path) -> Checkpoint | None:
        try:
            with path.open("rb") as file:
                text = file.read(MAX_CHECKPOINT_BYTES + 1)
            checkpoint = parse_checkpoint(text)
            verify_checkpoint(checkpoint, self._public_key, log=self._log)
        except (OSError, CheckpointInvalid) as problem:
            logger.warning("ignoring %s: not a checkpoint of this log (%s)", path, problem)
            return None
        if file_name(checkpoint.sequence) != path.name:
            logger.warning("ignoring %s: it holds sequence %d", path, checkpoint.sequence)
            return None
        return checkpoint

    def _write_once(self, path: Path, data: bytes) -> bool:
        descriptor, staged = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        temporary = Path(staged)
        try:
            with os.fdopen(descriptor, "wb") as file:
                os.fchmod(file.fileno(), PUBLIC_MODE)
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            try:
                os.link(temporary, path)
            except FileExistsError:
                return False
            _sync_directory(path.parent)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()


def _sync_directory(directory: Path) -> None:
    # The new name must survive a crash as well as the bytes it points to.
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
