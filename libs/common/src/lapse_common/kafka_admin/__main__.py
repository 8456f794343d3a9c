"""`python -m lapse_common.kafka_admin`: the admin step, run with the super user's
LAPSE_KAFKA_* settings (deploy/local/kafka.sh env prints them for the local broker).

  setup --credentials-dir DIR [--agent ID]... [--producer NAME]... [--partitions N]
      create the topics, one SCRAM credential per principal (password in DIR, 0600)
      and exactly the ACLs of docs/architecture.md's table
  acls  print the broker's ACLs
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from pydantic import ValidationError

from lapse_common.kafka_admin.admin_requests import KafkaAdminRefused, describe_acls
from lapse_common.kafka_admin.provisioning import Installation, admin_client, provision
from lapse_common.messaging.kafka_security import KafkaSecurityMisconfigured
from lapse_common.settings import KafkaSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lapse_common.kafka_admin")
    commands = parser.add_subparsers(dest="command", required=True)
    setup = commands.add_parser("setup", help="topics, credentials and ACLs")
    setup.add_argument("--credentials-dir", type=Path, required=True)
    setup.add_argument("--agent", action="append", default=[], metavar="AGENT_ID")
    setup.add_argument("--producer", action="append", default=[], metavar="NAME")
    setup.add_argument("--partitions", type=int, default=3)
    commands.add_parser("acls", help="print the broker's ACLs")
    return parser


async def _run(arguments: argparse.Namespace, settings: KafkaSettings) -> None:
    if arguments.command == "acls":
        async with admin_client(settings) as admin:
            for acl in await describe_acls(admin):
                print(acl.describe())
        return
    if not 1 <= arguments.partitions <= 1000:
        raise ValueError(f"--partitions must be 1-1000, not {arguments.partitions}")
    installation = Installation(
        topic_prefix=settings.topic_prefix,
        agents=tuple(arguments.agent),
        producers=tuple(arguments.producer),
        partitions=arguments.partitions,
    )
    report = await provision(settings, installation, credentials_dir=arguments.credentials_dir)
    for line in report.lines():
        print(f"[kafka-admin] {line}")


def main() -> int:
    arguments = _parser().parse_args()
    try:
        settings = KafkaSettings()
        asyncio.run(_run(arguments, settings))
    except (ValidationError, ValueError, KafkaSecurityMisconfigured, KafkaAdminRefused) as error:
        print(f"[kafka-admin] error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"[kafka-admin] error: cannot reach Kafka: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
