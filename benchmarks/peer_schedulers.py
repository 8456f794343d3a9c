"""The peers doing Lapse's bare job on the same machine and target: at each grant's expiry,
REVOKE a throwaway PostgreSQL role from a throwaway user and read pg_auth_members back.

    uv sync --group bench
    deploy/local/postgres.sh start && deploy/local/redis.sh start
    uv run python benchmarks/peer_schedulers.py --scenario sustained --rate 100 --seconds 20
    uv run python benchmarks/peer_schedulers.py --scenario burst --due 1000
    uv run python benchmarks/peer_schedulers.py --scenario kill --due 200 --peer celery

Peers: APScheduler 3.x (SQLAlchemyJobStore on the same PostgreSQL) and Celery (`countdown`,
Redis broker), each with its defaults, each in its own OS processes (see benchmarks/peers/).
Scenarios: `sustained` (expiries at --rate per second for --seconds; several rates as
25,50,100), `burst` (--due grants in the same second), `kill` (kill -9 of the peer's timer
process --kill-at seconds from the due time, restart --down seconds later, count what is
revoked, lost, run twice or skipped as a misfire within --wait seconds). Prints tables;
asserts nothing. Every run creates its own database and roles and drops them.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

try:
    import psycopg
except ModuleNotFoundError as missing:  # the bench group is not installed by a plain uv sync
    raise SystemExit(f"{missing}: run `uv sync --group bench` first") from None

from benchmarks.peers.runners import PEERS, REDIS_URL_VARIABLE  # noqa: E402
from benchmarks.peers.scenarios import (  # noqa: E402
    BurstResult,
    KillResult,
    PeerEnvironment,
    SustainedResult,
    burst,
    kill9,
    sustained,
)
from benchmarks.peers.target import drop_everything  # noqa: E402

SCENARIOS = ("sustained", "burst", "kill")
ADMIN_DSN_VARIABLE = "LAPSE_PEER_ADMIN_DSN"
DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:55432/postgres"

Result = SustainedResult | BurstResult | KillResult


def local_redis_url() -> str | None:
    """The URL of deploy/local/redis.sh's Redis, when it has been started here."""
    state = Path(os.environ.get("LAPSE_STATE_DIR", REPO / ".lapse")) / "redis" / "password"
    if not state.is_file():
        return None
    port = os.environ.get("LAPSE_REDIS_PORT", "56379")
    return f"redis://default:{state.read_text().strip()}@127.0.0.1:{port}/0"


def choices(text: str, allowed: tuple[str, ...]) -> list[str]:
    picked = list(allowed) if text == "all" else [part.strip() for part in text.split(",")]
    unknown = [part for part in picked if part not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {', '.join(unknown)}; choose from {', '.join(allowed)} or all"
        )
    return picked


def machine(admin_dsn: str, redis_url: str | None) -> str:
    with psycopg.connect(admin_dsn) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    postgres = row[0] if row else "?"
    redis_server = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.split(" ")[2:3]
    load = " / ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; {platform.node()}, "
        f"{os.cpu_count()} cores, load average {load}; Python {platform.python_version()}, "
        f"PostgreSQL {postgres}, APScheduler {version('apscheduler')}, "
        f"Celery {version('celery')}"
        + (f", Redis {redis_server[0].removeprefix('v=')}" if redis_url and redis_server else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--peer", default="all", type=lambda s: choices(s, PEERS))
    parser.add_argument("--scenario", default="sustained", type=lambda s: choices(s, SCENARIOS))
    parser.add_argument(
        "--rate",
        default=[100.0],
        type=lambda s: [float(part) for part in s.split(",")],
        help="expiries per second (sustained); a comma list runs each",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="sustained: for how long")
    parser.add_argument("--due", type=int, default=1000, help="burst and kill: grants due at once")
    parser.add_argument(
        "--kill-at",
        type=float,
        default=-1.0,
        help="kill: seconds from the due time at which to kill -9 (negative: before)",
    )
    parser.add_argument("--down", type=float, default=5.0, help="kill: seconds before restarting")
    parser.add_argument(
        "--wait", type=float, default=60.0, help="kill: seconds after restart before counting"
    )
    parser.add_argument(
        "--admin-dsn",
        default=os.environ.get(ADMIN_DSN_VARIABLE, DEFAULT_ADMIN_DSN),
        help=f"PostgreSQL superuser DSN (${ADMIN_DSN_VARIABLE}; default {DEFAULT_ADMIN_DSN})",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get(REDIS_URL_VARIABLE) or local_redis_url(),
        help=f"Celery's broker (${REDIS_URL_VARIABLE}; default deploy/local/redis.sh's)",
    )
    parser.add_argument("--log-dir", type=Path, help="the peers' logs (default: a new temp dir)")
    parser.add_argument(
        "--cleanup",
        action="store_true",
        help="only drop what killed runs left (every peer_bench_* database and role)",
    )
    args = parser.parse_args()

    if args.cleanup:
        dropped = drop_everything(args.admin_dsn)
        print(f"dropped {len(dropped)} database(s) and their roles: {', '.join(dropped) or '-'}")
        return

    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="peer-bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    env = PeerEnvironment(admin_dsn=args.admin_dsn, redis_url=args.redis_url, log_dir=log_dir)
    print(f"peers, measured {machine(args.admin_dsn, args.redis_url)}; logs in {log_dir}")

    runs: list[tuple[str, Callable[[str], Result]]] = []
    for scenario in args.scenario:
        if scenario == "sustained":
            runs.extend(
                (scenario, partial(sustained, env=env, rate=rate, seconds=args.seconds))
                for rate in args.rate
            )
        elif scenario == "burst":
            runs.append((scenario, partial(burst, env=env, due=args.due)))
        else:
            kill = partial(
                kill9, env=env, due=args.due, kill_at=args.kill_at, down=args.down, wait=args.wait
            )
            runs.append((scenario, kill))

    tables: dict[str, list[Result]] = {}
    for scenario, run in runs:
        for peer in args.peer:
            result = run(peer)
            tables.setdefault(scenario, []).append(result)
            print(f"\n{result.HEADER}\n{result.row()}", flush=True)

    print(f"\nall runs, load average now {' / '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for results in tables.values():
        print(f"\n{results[0].HEADER}")
        for result in results:
            print(result.row())


if __name__ == "__main__":
    main()
