"""`lapse login --dev` mints no token the services would refuse for its lifetime."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from lapse_cli.main import app
from lapse_common.auth import ensure_keypair
from typer.testing import CliRunner


@pytest.fixture
def dev_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    private, _ = ensure_keypair(tmp_path / "keys", "dev-token")
    monkeypatch.setenv("LAPSE_DEV_TOKEN_KEY_FILE", str(private))
    monkeypatch.setenv("LAPSE_CLI_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LAPSE_AUTH_MAX_TOKEN_LIFETIME_SECONDS", raising=False)
    return tmp_path / "home" / "token"


def test_a_ten_year_dev_token_is_a_usage_error(dev_env: Path) -> None:
    result = CliRunner().invoke(app, ["login", "--dev", "--roles", "admin", "--ttl", "3650d"])
    assert result.exit_code == 2
    assert "--ttl 3650d is longer than the services accept: at most 43200 s" in result.output
    assert not dev_env.exists()


def test_the_limit_follows_the_services_setting(
    dev_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAPSE_AUTH_MAX_TOKEN_LIFETIME_SECONDS", "600")
    assert CliRunner().invoke(app, ["login", "--dev", "--ttl", "11m"]).exit_code == 2
    result = CliRunner().invoke(app, ["login", "--dev", "--ttl", "10m"])
    assert result.exit_code == 0, result.output
    claims = jwt.decode(dev_env.read_text(), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 600


def test_a_zero_ttl_is_a_usage_error(dev_env: Path) -> None:
    result = CliRunner().invoke(app, ["login", "--dev", "--ttl", "0s"])
    assert result.exit_code == 2
    assert "--ttl must be longer than 0s" in result.output
