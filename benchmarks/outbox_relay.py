"""How fast does a service's outbox reach Kafka?

Every event a Lapse service emits (grant facts, revoke requests, signed commands) leaves
through its outbox relay, so the relay's rate bounds every stage of a revocation. This stages
rows in an outbox on the test PostgreSQL (a throwaway schema), relays them with the real
OutboxRelay and BrokerPublisher to the real local Kafka broker (acks=all, idempotent, as
a service's own principal) and prints rows per second and the time per relay pass.

    uv run python benchmarks/outbox_relay.py [--rows 5000] [--keys 100] [--rounds 3]

Prints figures; asserts nothing. Needs the Kafka and PostgreSQL that deploy/local/ starts
(or KAFKA_BOOTSTRAP_SERVERS / LAPSE_TEST_DATABASE_URL), like the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lapse_common.clock import SystemClock  # noqa: E402
from lapse_common.db import Base, create_engine_for_service, create_schema, session_factory  # noqa: E402
from lapse_common.kafka_admin.provisioning import Installation  # noqa: E402
from lapse_common.messaging.broker import create_broker  # noqa: E402
from lapse_common.messaging.outbox import OutboxRelay, enqueue  # noqa: E402
from lapse_common.messaging.publishing import BrokerPublisher  # noqa: E402
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2  # noqa: E402
from lapse_common.settings import KafkaSettings  # noqa: E402
from lapse_common.topics import Topics  # noqa: E402
from sqlalchemy import text  # noqa: E402

from tests.infrastructure import provide_infrastructure  # noqa: E402
from tests.kafka_principals import provisioned  # noqa: E402

STAGE_CHUNK = 1000


async def relay_round(
    *, database_url: str, settings: KafkaSettings, topic: str, rows: int, keys: int
) -> tuple[float, list[float]]:
    """Stage `rows` grant facts over `keys` grants, relay them all; returns the seconds the
    relay took and each pass's seconds."""
    schema = f"bench_relay_{uuid.uuid4().hex[:8]}"
    engine = create_engine_for_service(database_url, schema=schema)
    await create_schema(engine, schema=schema, metadatas=[Base.metadata])
    sessions = session_factory(engine)
    clock = SystemClock()
    for start in range(0, rows, STAGE_CHUNK):
        async with sessions() as session, session.begin():
            for index in range(start, min(rows, start + STAGE_CHUNK)):
                grant_id = f"grant-bench-{index % keys:05d}"
                enqueue(
                    session,
                    topic=topic,
                    key=grant_id,
                    payload=events_pb2.GrantStatusChanged(
                        grant_id=grant_id, status=common_pb2.GRANT_STATUS_ACTIVE, epoch=index
                    ),
                    producer="bench-relay",
                    clock=clock,
                    grant_id=grant_id,
                )
    broker = create_broker(settings, client_id="bench-relay")
    await broker.connect()
    passes: list[float] = []
    try:
        relay = OutboxRelay(sessions=sessions, publisher=BrokerPublisher(broker), clock=clock)
        relayed = 0
        started = time.perf_counter()
        while relayed < rows:
            began = time.perf_counter()
            handled = await relay.relay_once()
            passes.append(time.perf_counter() - began)
            if handled == 0:
                raise RuntimeError(f"relay stopped after {relayed} of {rows} rows")
            relayed += handled
        took = time.perf_counter() - started
    finally:
        await broker.stop()
        async with engine.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await engine.dispose()
    return took, passes


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    infra = provide_infrastructure()
    with tempfile.TemporaryDirectory() as scratch:
        kafka = await provisioned(
            Installation(topic_prefix=f"bench-relay-{uuid.uuid4().hex[:8]}."), Path(scratch)
        )
        topic = Topics(prefix=kafka.installation.topic_prefix).grants
        try:
            for round_number in range(1, args.rounds + 1):
                took, passes = await relay_round(
                    database_url=infra.database_url,
                    settings=kafka.settings("lapse-grant-scheduler"),
                    topic=topic,
                    rows=args.rows,
                    keys=args.keys,
                )
                print(
                    f"round {round_number}: {args.rows} rows in {took:6.2f} s = "
                    f"{args.rows / took:7.0f} rows/s; {len(passes)} passes, "
                    f"median {statistics.median(passes) * 1000:6.1f} ms per pass",
                    flush=True,
                )
        finally:
            await kafka.delete_topics()


if __name__ == "__main__":
    asyncio.run(main())
