"""Who may do what on the bus: one Kafka principal per service, per agent, per access-event
producer and for the chat front end, each allowed exactly the topics it consumes (READ,
plus its consumer groups) and produces (WRITE). The README's table of principals is this
module written out; a test compares the broker's live ACLs with both."""

from __future__ import annotations

from dataclasses import dataclass

from lapse_common.topics import Topics, validate_agent_id

# Agent command topics all start with this; the scheduler and revoker send to every agent
# and audit reads every agent's commands, so theirs are prefix ACLs.
AGENT_COMMANDS_PREFIX = "lapse.agent."


@dataclass(frozen=True)
class Principal:
    """A principal's rights, with names before the installation's topic prefix.

    A name ending in `*` is a prefix: `lapse.agent.*` is every topic whose name starts
    with `lapse.agent.`.
    """

    name: str
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()


_T = Topics()
_AGENT_COMMANDS = AGENT_COMMANDS_PREFIX + "*"

SERVICES: tuple[Principal, ...] = (
    Principal(
        "lapse-approval",
        reads=(_T.requests, _T.grants),
        writes=(_T.decisions, _T.quarantine),
        groups=("approval*",),
    ),
    Principal(
        "lapse-request",
        reads=(_T.decisions, _T.grants, _T.agent_heartbeats, _T.agent_registry, _T.access_events),
        writes=(_T.requests, _T.end_requests, _T.quarantine),
        groups=("request-*",),
    ),
    Principal(
        "lapse-grant-scheduler",
        reads=(_T.decisions, _T.agent_results, _T.agent_registry, _T.end_requests),
        writes=(_T.grants, _T.revoke_requests, _T.quarantine, _AGENT_COMMANDS),
        groups=("grant-scheduler-*",),
    ),
    Principal(
        "lapse-revoker",
        reads=(_T.revoke_requests, _T.agent_results, _T.agent_heartbeats, _T.agent_registry),
        writes=(
            _T.grants,
            _T.revoking_dead_letter,
            _T.agent_registry,
            _T.quarantine,
            _AGENT_COMMANDS,
        ),
        groups=("revoker-*",),
    ),
    Principal(
        "lapse-audit",
        reads=(*_T.shared(), _AGENT_COMMANDS),
        writes=(_T.quarantine,),
        groups=("audit*",),
    ),
    Principal(
        "lapse-chatops",
        reads=(_T.decisions, _T.grants),
        groups=("lapse-chatops-notifier",),
    ),
)


def agent(agent_id: str) -> Principal:
    """An agent reads its own command topic, with its own group, and sends results and
    heartbeats; it can read nothing else."""
    validate_agent_id(agent_id)
    return Principal(
        f"lapse-agent-{agent_id}",
        reads=(_T.agent_commands(agent_id),),
        writes=(_T.agent_results, _T.agent_heartbeats),
        groups=(f"lapse-agent-{agent_id}",),
    )


def access_event_producer(name: str) -> Principal:
    """An internal producer of access events (HR offboarding, incident tooling, CI) may
    write lapse.access-events.v1 and nothing else."""
    validate_agent_id(name)  # the same rule: lowercase, digits, '-', at most 63
    return Principal(f"lapse-producer-{name}", writes=(_T.access_events,))


def service(name: str) -> Principal:
    for principal in SERVICES:
        if principal.name == f"lapse-{name}":
            return principal
    known = ", ".join(p.name.removeprefix("lapse-") for p in SERVICES)
    raise ValueError(f"no Kafka principal for service {name!r} (known: {known})")
