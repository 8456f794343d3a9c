"""A real service process refuses to start, before it touches Kafka, when it would serve in
the clear or trust the dev key in production mode, and says which setting to give."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lapse_common.auth import ensure_keypair


def _start_audit(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    _, public_key = ensure_keypair(tmp_path / "keys", "dev-token")
    checkpoint_key, _ = ensure_keypair(tmp_path / "keys", "audit-checkpoint")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAPSE_")}
    env.update(
        {
            "LAPSE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/audit.db",
            "LAPSE_AUTH_PUBLIC_KEY_FILE": str(public_key),
            "LAPSE_AUDIT_CHECKPOINT_KEY_FILE": str(checkpoint_key),
            "LAPSE_AUDIT_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
            "LAPSE_AUDIT_GRPC_ADDRESS": "127.0.0.1:0",
            # No broker runs here: the refusal must come before any Kafka connection.
            "LAPSE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            "LAPSE_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
            "LAPSE_KAFKA_ALLOW_PLAINTEXT": "true",
            **settings,
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "lapse_audit"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_service_without_a_certificate_refuses_to_start(tmp_path: Path) -> None:
    done = _start_audit(tmp_path, LAPSE_AUTH_DEV_MODE="true")
    assert done.returncode == 1, done.stderr
    assert "lapse-audit: refusing to start: no TLS certificate" in done.stderr
    assert "LAPSE_GRPC_TLS_CERTFILE" in done.stderr
    assert "Traceback" not in done.stderr
    assert "ready" not in done.stdout


def test_a_service_in_production_mode_refuses_the_dev_key(tmp_path: Path) -> None:
    done = _start_audit(tmp_path)
    assert done.returncode == 1, done.stderr
    assert "lapse-audit: refusing to start: LAPSE_AUTH_PUBLIC_KEY_FILE" in done.stderr
    assert "is a dev key" in done.stderr and "LAPSE_AUTH_DEV_MODE" in done.stderr
    assert "Traceback" not in done.stderr
