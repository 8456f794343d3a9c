"""`python -m lapse_common.access_events`: tools for access event producers.

keygen   create a producer's key pair and print its entry for the consumers' registry:
         keygen --producer NAME --out DIR
publish  sign one access event with a producer's key and publish it to Kafka (from the
         LAPSE_KAFKA_* environment), e.g.:
         publish --producer hr-offboarding --key keys/hr-offboarding.key \\
             user-offboarded --subject bob --reason "left the company"

Exit codes: 0 done, 2 bad input (nothing sent), 1 Kafka unreachable or did not confirm.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from aiokafka.errors import KafkaError
from pydantic import ValidationError

from lapse_common.access_events.keys import (
    generate_producer_keys,
    load_private_key,
    registry_snippet,
)
from lapse_common.access_events.kinds import (
    EVENT_KINDS,
    AccessEventPayload,
    AccessRequested,
    IncidentDeclared,
    IncidentResolved,
    UserOffboarded,
)
from lapse_common.access_events.producer_registry import validate_producer_name
from lapse_common.access_events.publisher import AccessEventPublisher
from lapse_common.access_events.signing import AccessEventSigner
from lapse_common.clock import SystemClock
from lapse_common.messaging.kafka_security import KafkaSecurityMisconfigured, broker_security
from lapse_common.pb.lapse.v1 import common_pb2
from lapse_common.settings import KafkaSettings
from lapse_common.topics import Topics

PROG = "python -m lapse_common.access_events"
PUBLISH_TIMEOUT_SECONDS = 15.0
# `--scope KEY=VALUE` keys -> lapse.v1.AccessScope fields.
SCOPE_FIELDS = {
    "integration": "integration_id",
    "resource": "resource",
    "permission": "permission",
    "user": "user",
    "group": "group",
    "flow": "flow",
}
_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


# --- parsing --------------------------------------------------------------------------


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return seconds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_keygen(commands)
    _add_publish(commands)
    return parser


def _add_keygen(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keygen = commands.add_parser(
        "keygen", help="create a producer's Ed25519 key pair (kept if it already exists)"
    )
    keygen.add_argument("--producer", required=True, help="producer name, also its key id")
    keygen.add_argument("--out", required=True, type=Path, help="directory for NAME.key/.pub")
    keygen.add_argument(
        "--event",
        action="append",
        default=[],
        choices=sorted(EVENT_KINDS),
        help="an event kind the producer may send (repeatable)",
    )
    keygen.add_argument(
        "--machine-identity",
        action="append",
        default=[],
        help="a machine identity it may request access as (repeatable; access_requested)",
    )


def _add_publish(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    publish = commands.add_parser(
        "publish",
        help="sign one access event and publish it to Kafka (LAPSE_KAFKA_* environment)",
        description="Sign one access event with a producer's key and publish it to "
        "<LAPSE_KAFKA_TOPIC_PREFIX>lapse.access-events.v1 on LAPSE_KAFKA_BOOTSTRAP_SERVERS "
        "(TLS: LAPSE_KAFKA_SECURITY_PROTOCOL=SSL, LAPSE_KAFKA_SSL_CAFILE). Prints the event "
        "id and topic. Exit 2: bad input, nothing sent; exit 1: Kafka did not confirm.",
    )
    publish.add_argument("--producer", required=True, help="producer name, also its key id")
    publish.add_argument(
        "--key", required=True, type=Path, help="the producer's private key (NAME.key)"
    )
    publish.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=PUBLISH_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help=f"give up if Kafka has not confirmed by then (default {PUBLISH_TIMEOUT_SECONDS:g})",
    )
    kinds = publish.add_subparsers(dest="kind_command", required=True, metavar="KIND")

    offboarded = kinds.add_parser(
        "user-offboarded", help="revoke every grant of a subject and cancel their requests"
    )
    offboarded.set_defaults(kind="user_offboarded")
    offboarded.add_argument("--subject", required=True, help="the user who left")
    offboarded.add_argument("--reason", default="")

    declared = kinds.add_parser(
        "incident-declared",
        help="revoke every grant in a scope and (unless --no-lockdown) refuse new requests",
    )
    declared.set_defaults(kind="incident_declared")
    declared.add_argument("--incident-id", required=True)
    declared.add_argument(
        "--scope",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"narrow the scope (repeatable; KEY: {', '.join(SCOPE_FIELDS)})",
    )
    declared.add_argument(
        "--everything", action="store_true", help="the scope is all access (instead of --scope)"
    )
    declared.add_argument(
        "--lockdown",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="refuse new requests in the scope until the incident is resolved (default: yes)",
    )
    declared.add_argument("--reason", default="")

    resolved = kinds.add_parser("incident-resolved", help="lift the incident's lockdown")
    resolved.set_defaults(kind="incident_resolved")
    resolved.add_argument("--incident-id", required=True)
    resolved.add_argument("--reason", default="")

    requested = kinds.add_parser(
        "access-requested", help="request access as a machine identity (CI pipeline)"
    )
    requested.set_defaults(kind="access_requested")
    requested.add_argument("--machine-identity", required=True)
    requested.add_argument("--integration", required=True, help="integration id")
    requested.add_argument("--resource", required=True)
    requested.add_argument("--permission", required=True)
    requested.add_argument("--principal", default="", help="the login that receives access")
    requested.add_argument(
        "--for",
        dest="duration",
        default="",
        metavar="DURATION",
        help="how long, e.g. 90s, 30m, 4h, 2d (default: the flow's default)",
    )
    requested.add_argument("--justification", default="")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; usage errors exit 2 with argparse's message."""
    return _parser().parse_args(argv)


# --- building the payload -------------------------------------------------------------


def parse_duration(text: str) -> int:
    """'90s', '30m', '4h', '2d' or plain seconds, as a positive number of seconds."""
    match = _DURATION.match(text.strip())
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match else 0
    if seconds <= 0:
        raise ValueError(f"--for {text!r} is not a positive duration like 90s, 30m, 4h or 2d")
    return seconds


def build_scope(items: Sequence[str], *, everything: bool) -> common_pb2.AccessScope:
    scope = common_pb2.AccessScope(everything=everything)
    for item in items:
        key, equals, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if key not in SCOPE_FIELDS:
            raise ValueError(
                f"unknown --scope key {key!r} in {item!r}; use one of {', '.join(SCOPE_FIELDS)}"
            )
        if not equals or not value:
            raise ValueError(f"--scope {item!r} needs a value: {key}=VALUE")
        field = SCOPE_FIELDS[key]
        if getattr(scope, field):
            raise ValueError(f"--scope {key} is given twice; a scope has one {key}")
        setattr(scope, field, value)
    if everything and items:
        # Consumers refuse a scope that is both; say so before anything is sent.
        raise ValueError("--everything means all access: do not combine it with --scope")
    return scope


def build_payload(args: argparse.Namespace) -> AccessEventPayload:
    """The event `publish` sends; ValueError for input that cannot make one."""
    kind: str = args.kind
    # Identifiers are stripped so a blank one is refused as missing, not sent as " ".
    if kind == "user_offboarded":
        return UserOffboarded(subject=args.subject.strip(), reason=args.reason)
    if kind == "incident_declared":
        return IncidentDeclared(
            incident_id=args.incident_id.strip(),
            scope=build_scope(args.scope, everything=args.everything),
            reason=args.reason,
            lockdown=args.lockdown,
        )
    if kind == "incident_resolved":
        return IncidentResolved(incident_id=args.incident_id.strip(), reason=args.reason)
    if kind == "access_requested":
        return AccessRequested(
            machine_identity=args.machine_identity.strip(),
            integration_id=args.integration.strip(),
            resource=args.resource.strip(),
            permission=args.permission.strip(),
            principal=args.principal.strip(),
            duration_seconds=parse_duration(args.duration) if args.duration else 0,
            justification=args.justification,
        )
    raise ValueError(f"unknown event kind {kind!r}")


# --- the commands ---------------------------------------------------------------------


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _keygen(args: argparse.Namespace) -> int:
    try:
        producer = validate_producer_name(args.producer)
        keys = generate_producer_keys(producer, args.out)
    except (ValueError, OSError) as error:
        _error(str(error))
        return 2
    state = "wrote" if keys.created else "kept existing"
    # Status goes to stderr so stdout is exactly the YAML to paste or append.
    print(
        f"{state} {keys.private_key_file} (private: give it only to {producer}) "
        f"and {keys.public_key_file}",
        file=sys.stderr,
    )
    print(
        registry_snippet(
            producer,
            keys.public_key_file.resolve(),
            events=args.event,
            machine_identities=args.machine_identity,
        ),
        end="",
    )
    return 0


def read_private_key(producer: str, key_file: Path) -> bytes:
    """The producer's PEM, checked to be usable; ValueError naming the file if not."""
    validate_producer_name(producer)
    try:
        pem = key_file.read_bytes()
    except OSError as error:
        raise ValueError(
            f"cannot read the private key {key_file}: {error.strerror or error}"
        ) from error
    try:
        load_private_key(pem)
    except ValueError as error:
        raise ValueError(f"{key_file}: {error}") from error
    return pem


def kafka_settings() -> KafkaSettings:
    try:
        settings = KafkaSettings()
    except ValidationError as error:
        problems = "; ".join(
            f"LAPSE_KAFKA_{'_'.join(str(part) for part in detail['loc']).upper()}: "
            f"{detail['msg'].removeprefix('Value error, ')}"
            for detail in error.errors()
        )
        raise ValueError(f"invalid Kafka settings: {problems}") from error
    try:
        broker_security(settings)  # a missing credential is a usage error, said up front
    except KafkaSecurityMisconfigured as error:
        raise ValueError(str(error)) from error
    return settings


async def publish_event(
    *,
    kafka: KafkaSettings,
    producer: str,
    private_key_pem: bytes,
    payload: AccessEventPayload,
    timeout: float,
) -> str:
    """Publish and return the event id; TimeoutError if Kafka has not confirmed in time
    (connecting to a silent broker would otherwise wait out aiokafka's own timeouts)."""

    async def publish() -> str:
        async with AccessEventPublisher.connect(
            kafka=kafka, producer=producer, private_key_pem=private_key_pem
        ) as publisher:
            return await publisher.publish(payload)

    return await asyncio.wait_for(publish(), timeout=timeout)


def _publish(args: argparse.Namespace) -> int:
    try:
        payload = build_payload(args)
        pem = read_private_key(args.producer, args.key)
        # Refuse what every consumer would refuse before connecting to Kafka at all.
        AccessEventSigner(producer=args.producer, private_key_pem=pem, clock=SystemClock()).event(
            payload
        )
        kafka = kafka_settings()
    except ValueError as error:
        _error(str(error))
        return 2
    topic = Topics(prefix=kafka.topic_prefix).access_events
    where = f"Kafka at {kafka.bootstrap_servers}"
    try:
        event_id = asyncio.run(
            publish_event(
                kafka=kafka,
                producer=args.producer,
                private_key_pem=pem,
                payload=payload,
                timeout=args.timeout,
            )
        )
    except TimeoutError:
        _error(
            f"{where} did not confirm the event on {topic} within {args.timeout:g}s "
            "(unreachable, or the topic does not exist?); it may or may not have been published"
        )
        return 1
    except (KafkaError, OSError) as error:
        _error(f"cannot publish to {topic} on {where}: {error}")
        return 1
    print(f"event_id={event_id} topic={topic}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "keygen":
        return _keygen(args)
    return _publish(args)


if __name__ == "__main__":
    sys.exit(main())
