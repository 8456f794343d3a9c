"""Where tests find Kafka and PostgreSQL.

KAFKA_BOOTSTRAP_SERVERS / LAPSE_TEST_DATABASE_URL always win. Otherwise a Docker engine,
when there is one, runs them with testcontainers; otherwise the repo's own scripts start
the real broker and a local PostgreSQL (deploy/local/).

The broker is authenticated and authorized like production: tests act on it as its super
user (the admin step, and an operator's tools reading topics) from the settings in
LAPSE_TEST_KAFKA_ADMIN_ENV (default: the file deploy/local/kafka.sh writes), and every
Lapse process gets a principal of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lapse_common.settings import KafkaSettings

REPO = Path(__file__).resolve().parent.parent
LOCAL_KAFKA = "127.0.0.1:9092"
LOCAL_DATABASE = "postgresql+asyncpg://lapse:lapse@127.0.0.1:55432/lapse_test"
LOCAL_TARGET_ADMIN = "postgresql://lapse_agent:lapse_agent@127.0.0.1:55432/demo_target"
LOCAL_KAFKA_ADMIN_ENV = REPO / ".lapse" / "kafka" / "admin.env"


@dataclass(frozen=True)
class Infrastructure:
    kafka_bootstrap: str
    database_url: str
    # A PostgreSQL database the connector targets, with a login that has CREATEROLE.
    target_admin_dsn: str

    @property
    def kafka_admin(self) -> KafkaSettings:
        """The broker's super user, for the admin step and for reading topics."""
        return kafka_admin_settings(self.kafka_bootstrap)


def kafka_admin_settings(bootstrap: str) -> KafkaSettings:
    env_file = Path(os.environ.get("LAPSE_TEST_KAFKA_ADMIN_ENV") or LOCAL_KAFKA_ADMIN_ENV)
    try:
        lines = env_file.read_text().splitlines()
    except OSError as error:
        raise RuntimeError(
            f"no Kafka admin settings at {env_file} ({error.strerror}): start the broker with "
            "deploy/local/kafka.sh start, or point LAPSE_TEST_KAFKA_ADMIN_ENV at the file "
            "with the super user's LAPSE_KAFKA_* settings"
        ) from error
    values = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    fields = {
        name.removeprefix("LAPSE_KAFKA_").lower(): value.strip().strip("'\"")
        for name, value in values.items()
        if name.startswith("LAPSE_KAFKA_")
    }
    fields["bootstrap_servers"] = bootstrap
    fields.pop("topic_prefix", None)
    return KafkaSettings(**fields)


def _docker_engine_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    return probe.returncode == 0


def _run_script(*args: str) -> None:
    completed = subprocess.run(
        [str(REPO / "deploy" / "local" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"deploy/local/{' '.join(args)} failed:\n"
            f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
        )


def provide_infrastructure() -> Infrastructure:
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    database = os.environ.get("LAPSE_TEST_DATABASE_URL")
    target = os.environ.get("LAPSE_TEST_TARGET_DSN")
    if kafka and database and target:
        return Infrastructure(kafka, database, target)
    if _docker_engine_available():  # pragma: no cover - no Docker engine on CI machines
        return _from_testcontainers(kafka, database, target)
    if not kafka:
        _run_script("kafka.sh", "start")
        kafka = LOCAL_KAFKA
    if not database or not target:
        _run_script("postgres.sh", "start")
    return Infrastructure(kafka, database or LOCAL_DATABASE, target or LOCAL_TARGET_ADMIN)


def _from_testcontainers(
    kafka: str | None, database: str | None, target: str | None
) -> Infrastructure:  # pragma: no cover - exercised only where Docker runs
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    if not kafka:
        kafka_container = KafkaContainer("apache/kafka:4.1.0").with_kraft()
        kafka_container.start()
        kafka = kafka_container.get_bootstrap_server()
    if not database or not target:
        pg = PostgresContainer(
            "postgres:16", username="lapse", password="lapse", dbname="lapse_test"
        )
        pg.start()
        host, port = pg.get_container_host_ip(), pg.get_exposed_port(5432)
        database = database or f"postgresql+asyncpg://lapse:lapse@{host}:{port}/lapse_test"
        # The container's superuser stands in for the agent's CREATEROLE login.
        target = target or f"postgresql://lapse:lapse@{host}:{port}/lapse_test"
    return Infrastructure(kafka, database, target)
