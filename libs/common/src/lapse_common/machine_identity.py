"""How a machine identity (a CI pipeline asking through an AccessRequested access event)
appears as a requester: `machine:<name>`. The request service files its requests under that
subject and refuses tokens claiming it; the approval service lets it match only a flow's
`requestors.machines`, never users or groups."""

from __future__ import annotations

MACHINE_PREFIX = "machine:"


def machine_subject(name: str) -> str:
    return MACHINE_PREFIX + name


def machine_name(subject: str) -> str | None:
    """The machine's name, or None when the subject is a person."""
    return subject.removeprefix(MACHINE_PREFIX) if subject.startswith(MACHINE_PREFIX) else None
