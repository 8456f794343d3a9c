"""Why an operation refused. Operations know why they refuse and say so in words a person can
act on; the transport decides what that means on the wire, for every service in one place
(`lapse_common.unit_of_work`), so the same refusal never gets two status codes.

A refusal is an answer, not a failure: nothing the operation wrote is kept, and the message
goes back to the caller unchanged (the CLI and the console show it as it is).
"""

from __future__ import annotations

from enum import Enum


class Refusal(Enum):
    # The input is wrong whatever the state: a bad field, a duration over the flow's limit.
    INVALID = "invalid"
    # The caller may not do this.
    FORBIDDEN = "forbidden"
    # No such thing, or none the caller may know about.
    NOT_FOUND = "not_found"
    # Valid and allowed, but not in the current state: already decided, the time window
    # closed, locked down, changed since the preview.
    CONFLICT = "conflict"
    # What the caller asks to create is there already (an agent enrolled with another key).
    ALREADY_EXISTS = "already_exists"
    # A quota is used up (a flow's auto-approval budget); asking again later may work.
    EXHAUSTED = "exhausted"


class Refused(Exception):
    """An operation refused; `kind` says why in general, `message` in particular."""

    def __init__(self, kind: Refusal, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
