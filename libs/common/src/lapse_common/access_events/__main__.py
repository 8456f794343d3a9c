"""`python -m lapse_common.access_events keygen --producer NAME --out DIR`: create a
producer's key pair and print its entry for the consumers' registry."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lapse_common.access_events.keys import generate_producer_keys, registry_snippet
from lapse_common.access_events.kinds import EVENT_KINDS
from lapse_common.access_events.producer_registry import validate_producer_name


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lapse_common.access_events")
    commands = parser.add_subparsers(dest="command", required=True)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        producer = validate_producer_name(args.producer)
        keys = generate_producer_keys(producer, args.out)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
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


if __name__ == "__main__":
    sys.exit(main())
