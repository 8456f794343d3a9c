"""`make up` from a clone in a private home directory (Debian creates every home 0700): the
PostgreSQL the set-up starts runs as its own OS user, which cannot enter such a directory.
The script must find a place it can reach by itself, with no setting from the user."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from pathlib import Path

import asyncpg
import pytest

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _login_works(port: int) -> str:
    connection = await asyncpg.connect(
        f"postgresql://lapse_agent:lapse_agent@127.0.0.1:{port}/demo_target"
    )
    try:
        return str(await connection.fetchval("SELECT current_user"))
    finally:
        await connection.close()


def test_postgres_starts_from_a_clone_in_a_0700_home(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root, as the set-up scripts run on Debian: run it as root")
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    clone = home / "lapse"
    shutil.copytree(REPO / "deploy" / "local", clone / "deploy" / "local")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAPSE_")}
    env["LAPSE_PG_PORT"] = str(port)
    script = clone / "deploy" / "local" / "postgres.sh"
    state = clone / ".lapse" / "postgres"
    try:
        started = subprocess.run(
            ["bash", str(script), "start"],
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert started.returncode == 0, started.stdout + started.stderr
        assert "cannot enter" in started.stdout and "/var/lib/lapse/postgres-" in started.stdout
        assert state.is_symlink() and str(state.resolve()).startswith("/var/lib/lapse/")
        assert asyncio.run(_login_works(port)) == "lapse_agent"
        status = subprocess.run(
            ["bash", str(script), "status"],
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0 and "running" in status.stdout, status.stdout
    finally:
        subprocess.run(
            ["bash", str(script), "stop"], env=env, check=False, capture_output=True, timeout=120
        )
        if state.is_symlink():
            shutil.rmtree(state.resolve(), ignore_errors=True)
