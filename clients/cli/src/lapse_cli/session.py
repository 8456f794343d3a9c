"""The caller's token and how the CLI reports failures."""

from __future__ import annotations

import os

import typer

from lapse_cli.config import CliSettings


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def token(settings: CliSettings) -> str:
    value = os.environ.get("LAPSE_TOKEN") or (
        settings.token_file.read_text().strip() if settings.token_file.exists() else ""
    )
    if not value:
        raise fail("not logged in: run `lapse login --dev` (or set LAPSE_TOKEN)")
    return value


def metadata(settings: CliSettings) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token(settings)}"),)
