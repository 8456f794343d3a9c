"""Shared fixtures for the agent's tests: a platform signing key, a movable clock, command
factories and a throwaway ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lapse_agent.ledger import CommandLedger
from lapse_common.clock import ManualClock
from lapse_common.command_signing import CommandSigner, CommandVerifier

from services.agent.tests.agent_commands import CommandFactory, build_command


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2030, 1, 1, 12, 0, tzinfo=UTC))


@pytest.fixture(scope="session")
def platform_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def platform_private_pem(platform_key: Ed25519PrivateKey) -> bytes:
    return platform_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="session")
def platform_public_pem(platform_key: Ed25519PrivateKey) -> bytes:
    return platform_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def signer(platform_private_pem: bytes, clock: ManualClock) -> CommandSigner:
    return CommandSigner(
        private_key_pem=platform_private_pem,
        clock=clock,
        ttl=timedelta(minutes=5),
    )


@pytest.fixture
def verifier(platform_public_pem: bytes, clock: ManualClock) -> CommandVerifier:
    return CommandVerifier.from_pem(platform_public_pem, clock=clock)


@pytest.fixture
def make_command() -> CommandFactory:
    return build_command


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[CommandLedger]:
    opened = await CommandLedger.open(tmp_path / "state" / "agent.db")
    yield opened
    await opened.close()
