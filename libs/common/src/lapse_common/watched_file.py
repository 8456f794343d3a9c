"""A small config file that is read again when it changes, so an admin can edit it without
restarting the process. A broken edit is logged and the last good version stays in use: a
typo in a directory must not lock everyone out mid-incident."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

Parsed = TypeVar("Parsed")


class WatchedFileError(Exception):
    pass


class WatchedFile(Generic[Parsed]):
    """`parse(text, source=...)` raises an exception of type `errors` for a bad file; at
    start-up that error propagates (the process refuses to run on it), later it is logged."""

    def __init__(
        self,
        path: Path,
        *,
        parse: Callable[..., Parsed],
        errors: type[Exception],
        label: str = "file",
    ) -> None:
        self._path = path
        self._label = label
        self._parse = parse
        self._errors = errors
        self._stamp = self._modified()
        self._current = self._read()

    @property
    def path(self) -> Path:
        return self._path

    def _modified(self) -> int:
        try:
            return self._path.stat().st_mtime_ns
        except OSError as error:
            raise self._errors(f"cannot read {self._label} {self._path}: {error}") from error

    def _read(self) -> Parsed:
        try:
            text = self._path.read_text()
        except OSError as error:
            raise self._errors(f"cannot read {self._label} {self._path}: {error}") from error
        return self._parse(text, source=str(self._path))

    @property
    def current(self) -> Parsed:
        try:
            stamp = self._modified()
            if stamp != self._stamp:
                self._current = self._read()
                self._stamp = stamp
                logger.info("%s reloaded", self._path)
        except self._errors as error:
            logger.error("keeping the previous version of %s: %s", self._path, error)
        return self._current
