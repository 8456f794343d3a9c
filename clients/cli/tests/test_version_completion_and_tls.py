"""`lapse --version`, shell completion, and how the CLI treats the services' TLS."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from importlib.metadata import version
from pathlib import Path

from lapse_common.local_ca import ensure_local_certificates


def lapse(*arguments: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LAPSE_", "_LAPSE"))}
    return subprocess.run(
        [sys.executable, "-m", "lapse_cli", *arguments],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version_prints_the_installed_version() -> None:
    done = lapse("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"lapse {version('lapse-cli')}"


def test_bash_completion_completes_commands_and_subcommands() -> None:
    commands = lapse(_LAPSE_COMPLETE="complete_bash", COMP_WORDS="lapse req", COMP_CWORD="1")
    assert commands.stdout.split() == ["request", "requests"]
    sub = lapse(_LAPSE_COMPLETE="complete_bash", COMP_WORDS="lapse revocations re", COMP_CWORD="2")
    assert sub.stdout.split() == ["replay"]


def test_zsh_completion_describes_the_subcommands() -> None:
    done = lapse(_LAPSE_COMPLETE="complete_zsh", _TYPER_COMPLETE_ARGS="lapse revocations ")
    for subcommand in ("stuck", "show", "replay", "cancel"):
        assert f'"{subcommand}":' in done.stdout


def test_the_completion_script_is_for_lapse_whichever_way_it_is_started() -> None:
    # The shell is detected from the parent processes (bash when run from bash).
    shown = lapse("--show-completion")
    assert shown.returncode == 0, shown.stderr
    assert "_LAPSE_COMPLETE=" in shown.stdout
    assert "python -m" not in shown.stdout


def test_an_unreadable_ca_file_is_named_not_a_traceback(tmp_path: Path) -> None:
    done = lapse(
        "activity",
        LAPSE_TOKEN="x",
        LAPSE_GRPC_TLS_CAFILE=str(tmp_path / "missing-ca.crt"),
        LAPSE_REQUEST_ADDRESS="127.0.0.1:1",
    )
    assert done.returncode == 2
    assert "LAPSE_GRPC_TLS_CAFILE=" in done.stderr and "missing-ca.crt" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_server_the_ca_did_not_sign_is_not_talked_to(tmp_path: Path) -> None:
    """A listener that is not a Lapse service with our CA's certificate: the CLI's TLS
    handshake fails and it says so, having sent nothing (the token stays on this machine)."""
    trusted = ensure_local_certificates(tmp_path / "ours")
    received: list[bytes] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def accept() -> None:
            listener.settimeout(30)
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(5)
                try:
                    while chunk := connection.recv(65536):
                        received.append(chunk)
                        # An impostor answering in plaintext HTTP/2 would not fool TLS either.
                        connection.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                except OSError:
                    return

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        done = lapse(
            "activity",
            LAPSE_TOKEN="secret-bearer-token",
            LAPSE_GRPC_TLS_CAFILE=str(trusted.cafile),
            LAPSE_REQUEST_ADDRESS=f"127.0.0.1:{port}",
        )
        thread.join(timeout=10)
    assert done.returncode == 1, done.stderr
    assert "cannot reach the request service" in done.stderr
    sent = b"".join(received)
    assert sent.startswith(b"\x16\x03")  # a TLS handshake record, not HTTP/2 in the clear
    assert b"secret-bearer-token" not in sent
