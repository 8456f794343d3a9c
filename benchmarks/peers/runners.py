"""Each peer as the benchmark drives it: start its processes, hand it grants, kill -9 the
process that holds its timers, restart it, read its CPU, stop it.

APScheduler is one process: the scheduler both takes the grants and runs the jobs.
Celery is a worker (master and prefork pool, the process killed) and a producer process
that sends the tasks (the application's side); Redis is the broker, its CPU read apart.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import redis

from benchmarks.peers.processes import PeerProcess, process_cpu_seconds
from benchmarks.peers.revoke_job import TARGET_DSN_VARIABLE
from benchmarks.peers.schedule_lines import encode
from benchmarks.peers.target import Grant, Target

PEERS = ("apscheduler", "celery")
# Run as modules in the peers' own processes (the benchmark imports neither library).
APSCHEDULER_MODULE = "benchmarks.peers.apscheduler_peer"
CELERY_MODULE = "benchmarks.peers.celery_peer"
REDIS_URL_VARIABLE = "LAPSE_REDIS_URL"
# SQLAlchemy URL of APScheduler's job store, password included: in the environment, not on
# a command line that ps shows.
JOBSTORE_URL_VARIABLE = "LAPSE_PEER_JOBSTORE_URL"
_READY_TIMEOUT = 120.0
_CHUNK = 500


class PeerRunner(Protocol):
    name: str

    def start(self) -> None: ...
    def schedule(self, grants: Sequence[Grant]) -> float: ...
    def kill9(self) -> None: ...
    def restart(self) -> float: ...
    def cpu_seconds(self) -> float: ...
    def broker_cpu_seconds(self) -> float | None: ...
    def stop(self) -> None: ...


def _schedule(process: PeerProcess, grants: Sequence[Grant]) -> float:
    """Stream the grants, then wait for the peer to confirm it holds every one of them."""
    started = time.perf_counter()
    for low in range(0, len(grants), _CHUNK):
        process.send([encode(grant) for grant in grants[low : low + _CHUNK]])
    process.send(["sync"])
    answer = process.expect("ok ", timeout=60 + 0.05 * len(grants))
    if int(answer.split()[1]) != len(grants):
        raise RuntimeError(f"{process.name} scheduled {answer.split()[1]} of {len(grants)}")
    return time.perf_counter() - started


class ApschedulerRunner:
    name = "apscheduler"

    def __init__(self, target: Target, *, log_dir: Path) -> None:
        self._target = target
        self._log_dir = log_dir
        self._process: PeerProcess | None = None
        self._starts = 0

    def _spawn(self) -> float:
        started = time.perf_counter()
        self._starts += 1
        self._process = PeerProcess(
            f"{self._target.run_id}-apscheduler-{self._starts}",
            ["-m", APSCHEDULER_MODULE],
            env={
                TARGET_DSN_VARIABLE: self._target.dsn,
                JOBSTORE_URL_VARIABLE: self._target.sqlalchemy_url,
            },
            log_dir=self._log_dir,
            stdin=True,
        )
        self._process.expect("ready", timeout=_READY_TIMEOUT)
        return time.perf_counter() - started

    def start(self) -> None:
        self._spawn()

    def schedule(self, grants: Sequence[Grant]) -> float:
        assert self._process is not None
        return _schedule(self._process, grants)

    def kill9(self) -> None:
        assert self._process is not None
        self._process.kill9()

    def restart(self) -> float:
        return self._spawn()

    def cpu_seconds(self) -> float:
        return 0.0 if self._process is None else self._process.cpu_seconds()

    def broker_cpu_seconds(self) -> float | None:
        return None  # no broker: its job store is in PostgreSQL, counted with the backends

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()


class CeleryRunner:
    name = "celery"

    def __init__(self, target: Target, *, log_dir: Path, redis_url: str) -> None:
        self._target = target
        self._log_dir = log_dir
        self._redis_url = redis_url
        self._redis = redis.Redis.from_url(redis_url)
        self._worker: PeerProcess | None = None
        self._producer: PeerProcess | None = None
        self._starts = 0

    @property
    def _env(self) -> dict[str, str]:
        return {TARGET_DSN_VARIABLE: self._target.dsn, REDIS_URL_VARIABLE: self._redis_url}

    def _spawn_worker(self) -> float:
        started = time.perf_counter()
        self._starts += 1
        self._worker = PeerProcess(
            f"{self._target.run_id}-celery-worker-{self._starts}",
            [
                "-m",
                "celery",
                "-A",
                CELERY_MODULE,
                "worker",
                f"--hostname=peer_bench_{self._target.run_id}_{self._starts}@%h",
            ],
            env=self._env,
            log_dir=self._log_dir,
        )
        self._worker.expect("ready", timeout=_READY_TIMEOUT)
        return time.perf_counter() - started

    def start(self) -> None:
        # The URL's database is the benchmark's own: no queue or unacknowledged message of
        # an earlier run may reach this one.
        self._redis.flushdb()
        self._spawn_worker()
        self._producer = PeerProcess(
            f"{self._target.run_id}-celery-producer",
            ["-m", CELERY_MODULE],
            env=self._env,
            log_dir=self._log_dir,
            stdin=True,
        )
        self._producer.expect("ready", timeout=_READY_TIMEOUT)

    def schedule(self, grants: Sequence[Grant]) -> float:
        assert self._producer is not None
        return _schedule(self._producer, grants)

    def kill9(self) -> None:
        assert self._worker is not None
        self._worker.kill9()

    def restart(self) -> float:
        return self._spawn_worker()

    def cpu_seconds(self) -> float:
        return sum(p.cpu_seconds() for p in (self._worker, self._producer) if p is not None)

    def broker_cpu_seconds(self) -> float | None:
        info = self._redis.info("server")
        return process_cpu_seconds(int(info["process_id"]))

    def stop(self) -> None:
        for process in (self._producer, self._worker):
            if process is not None:
                process.stop()
        self._redis.flushdb()
        self._redis.close()


def runner_for(name: str, target: Target, *, log_dir: Path, redis_url: str | None) -> PeerRunner:
    if name == "apscheduler":
        return ApschedulerRunner(target, log_dir=log_dir)
    if name == "celery":
        if not redis_url:
            raise SystemExit(
                "celery needs a Redis: deploy/local/redis.sh start, then "
                'eval "$(deploy/local/redis.sh env)" (or pass --redis-url)'
            )
        return CeleryRunner(target, log_dir=log_dir, redis_url=redis_url)
    raise ValueError(f"unknown peer {name!r}; choose from {', '.join(PEERS)}")
