"""Why an operation refused, so the gRPC layer maps every refusal to a status code in one
place instead of each call site deciding."""

from __future__ import annotations

from enum import Enum


class Refusal(Enum):
    INVALID = "invalid"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    # Valid, allowed, but not in the current state (already decided, locked down, changed).
    CONFLICT = "conflict"


class Refused(Exception):
    default_kind = Refusal.CONFLICT

    def __init__(self, message: str, *, kind: Refusal | None = None) -> None:
        super().__init__(message)
        self.kind = kind or self.default_kind

    @property
    def forbidden(self) -> bool:
        return self.kind is Refusal.FORBIDDEN
